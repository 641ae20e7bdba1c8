"""The Enhanced Chat actor with the real aiohttp transport, Salesforce mocked by aioresponses.

What OCP would receive (through a recording link) and what went over HTTP (method, URL,
headers, body), for one chat; the end-to-end tests over the product's simulator are in
tests/test_messaging_e2e.py.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from pathlib import Path
from typing import Any

import msgspec
import pytest
from aioresponses import CallbackResult, aioresponses

from bridged.chats.chat import Chat
from bridged.chats.policy import RetryPolicy
from bridged.config.file import SalesforceConfig
from bridged.config.webchat import WebchatFields, resolve_webchat
from bridged.ocp import envelopes as env
from bridged.salesforce.messaging import actor as actor_module
from bridged.salesforce.messaging.actor import MessagingBackend
from bridged.salesforce.messaging.protocol import MessagingSession
from bridged.salesforce.messaging.transport import AiohttpMessagingTransport
from bridged.state.sqlite import StateStore
from tests.salesforce.liveagent.test_actor import RecordingLink
from tests.salesforce.messaging import payloads as p

SCRT = "https://acme.my.salesforce-scrt.com"
API = SCRT + "/iamessage/api/v2"
SSE = re.compile(re.escape(SCRT + "/eventrouter/v1/sse") + r".*")
# A token that lives 6 hours from now (the payloads' real one expired in 2025).
TOKEN = p.jwt(exp=time.time() + 21_600)
TOKEN_BODY = p.token_body(TOKEN)


class FixedSession(MessagingSession):
    """A session whose conversation id is the payloads' one, so the stream can name it."""

    def __init__(self, params: Any, *, conversation_id: str | None = None) -> None:
        super().__init__(params, conversation_id=conversation_id or p.CONV)


@pytest.fixture(autouse=True)
def fixed_conversation(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(actor_module, "MessagingSession", FixedSession)


def make_chat(**fields: Any) -> tuple[Chat, RecordingLink]:
    webchat = resolve_webchat(WebchatFields(
        type="salesforce_messaging", scrt_url=SCRT, organization_id=p.ORG_18,
        es_developer_name="Bridged_API", **fields), None, {}, ["*.my.salesforce-scrt.com"])
    chat = Chat("m1", webchat, env.Start(chat="m1"), inbox_size=8, max_held=100)
    link = RecordingLink()
    chat.bind(link, 0)
    return chat, link


def backend(store: StateStore | None = None, **salesforce: Any) -> MessagingBackend:
    return MessagingBackend(AiohttpMessagingTransport(10), SalesforceConfig(**salesforce),
                            max_pending=10, store=store,
                            retry=RetryPolicy(initial_s=0.01, max_delay_s=0.02))


def stream_body(*events: tuple[str, dict[str, Any] | None, str]) -> bytes:
    """The bytes of a stream: a ping, then each ``(event, entry, id)``."""
    out = ["event: ping\ndata: 0\n\n"]
    for name, conversation_entry, event_id in events:
        out.append(f"id: {event_id}\nevent: {name}\ndata: {p.sse_data(conversation_entry)}\n\n")
    return "".join(out).encode()


AGENT = p.agent()


def agent_joins(ts: int) -> tuple[str, dict[str, Any], str]:
    return ("CONVERSATION_PARTICIPANT_CHANGED",
            p.entry(p.participant_changed("add", AGENT, "Ada", f"pc-{ts}"), sender=p.SYSTEM,
                    display="System", entry_id=f"pc-{ts}", ts=ts), f"{ts}-1")


def agent_says(text: str, ts: int) -> tuple[str, dict[str, Any], str]:
    return ("CONVERSATION_MESSAGE",
            p.entry(p.text_message(text, f"m-{ts}"), sender=AGENT, display="Ada",
                    entry_id=f"m-{ts}", ts=ts), f"{ts}-2")


def session_ends(ts: int) -> tuple[str, dict[str, Any], str]:
    return ("CONVERSATION_SESSION_STATUS_CHANGED",
            p.entry(p.session_status("Ended", f"ss-{ts}"), sender=p.SYSTEM, display="System",
                    entry_id=f"ss-{ts}", ts=ts), f"{ts}-3")


class Recorder:
    """Every request aioresponses answered: (method, url, headers, body)."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, str, dict[str, str], Any]] = []

    def __call__(self, method: str) -> Any:
        def record(url: Any, **kwargs: Any) -> None:
            body = kwargs.get("data")
            self.seen.append((method, str(url), dict(kwargs.get("headers") or {}),
                              json.loads(body) if body else None))
        return record

    def of(self, method: str, fragment: str) -> list[tuple[str, str, dict[str, str], Any]]:
        return [s for s in self.seen if s[0] == method and fragment in s[1]]


async def test_a_whole_hand_over_over_http(tmp_path: Path) -> None:
    chat, link = make_chat()
    rec = Recorder()
    created = asyncio.Event()
    streams = iter([
        stream_body(),  # before the create: nothing yet
        stream_body(("CONVERSATION_ROUTING_RESULT",
                     p.entry(p.routing_result("rr-1", ewt=30), sender=p.SYSTEM,
                             display="System", entry_id="rr-1", ts=1000), "1000-0"),
                    agent_joins(1001), agent_says("Hello, I am Ada", 1002)),
        stream_body(session_ends(1003)),
    ])

    async def stream(url: Any, **kwargs: Any) -> CallbackResult:
        rec("GET")(url, **kwargs)
        if len(rec.of("GET", "/sse")) > 1:
            await asyncio.wait_for(created.wait(), 5)
        return CallbackResult(status=200, body=next(streams),
                              content_type="text/event-stream")

    def create(url: Any, **kwargs: Any) -> CallbackResult:
        rec("POST")(url, **kwargs)
        created.set()
        return CallbackResult(status=201, payload={})

    def send(url: Any, **kwargs: Any) -> CallbackResult:
        rec("POST")(url, **kwargs)
        return CallbackResult(status=202, payload={"conversationEntries": [
            {"id": json.loads(kwargs["data"])["message"]["id"], "clientTimestamp": 1}]})

    store = StateStore(tmp_path / "state")
    store.open()
    with aioresponses() as mock:
        mock.post(API + "/authorization/unauthenticated/access-token",
                  callback=rec("POST"), body=TOKEN_BODY, repeat=True)
        mock.get(SSE, callback=stream, repeat=True)
        mock.post(API + "/conversation", callback=create)
        mock.get(re.compile(re.escape(f"{API}/conversation/{p.CONV}/entries") + r".*"),
                 callback=rec("GET"), body=p.entries_body(), repeat=True)
        mock.post(f"{API}/conversation/{p.CONV}/message", callback=send, repeat=True)
        mock.delete(re.compile(re.escape(f"{API}/conversation/{p.CONV}") + r"\?.*"),
                    callback=rec("DELETE"), status=204)
        chat.inbox.put_nowait(env.Message(chat="m1", id="v1", text="my card is lost"))
        b = backend(store)
        try:
            await asyncio.wait_for(b.run_chat(chat), 15)
        finally:
            await b.aclose()
            await store.aclose(2)

    kinds = [(type(e).__name__, getattr(e, "reason", None)) for e in link.events]
    assert kinds == [("Delivered", None), ("Queued", None), ("AgentJoined", None),
                     ("AgentMessage", None), ("Ended", "agent")], kinds
    queued = link.events[1]
    assert isinstance(queued, env.Queued) and queued.wait_s == 30
    # The order of a hand-over: token, stream, create (MESSAGING.md 7.2).
    order = [(m, u.split("?")[0].rsplit("/", 1)[-1]) for m, u, _, _ in rec.seen]
    assert order[:3] == [("POST", "access-token"), ("GET", "sse"), ("POST", "conversation")]
    token_req = rec.of("POST", "access-token")[0]
    assert "Authorization" not in token_req[2]
    assert token_req[3]["orgId"] == p.ORG_18 and token_req[3]["esDeveloperName"] == "Bridged_API"
    first, *again = rec.of("GET", "/sse")
    assert first[2]["X-Org-Id"] == p.ORG_15  # always 15 characters, from an 18 in the config
    assert first[2]["Last-Event-Id"] == "1739971138000-0000"  # the token's lastEventId
    assert first[2]["Authorization"] == f"Bearer {TOKEN}"
    assert first[2]["Accept"] == "text/event-stream"
    assert [h["Last-Event-Id"] for _, _, h, _ in again] == ["1739971138000-0000", "1002-2"]
    create_req = rec.of("POST", "/conversation")[0]
    assert create_req[3]["conversationId"] == p.CONV
    sent = rec.of("POST", "/message")
    assert [s[3]["message"]["staticContent"]["text"] for s in sent] == ["my card is lost"]
    deletes = rec.of("DELETE", p.CONV)
    assert len(deletes) == 1 and "esDeveloperName=Bridged_API" in deletes[0][1]
    assert store.path.stat().st_mode & 0o777 == 0o600


async def test_a_message_goes_to_salesforce_only_once_its_state_is_durable(
        tmp_path: Path) -> None:
    """The snapshot that records a message as sent is committed before the POST goes."""
    chat, _link = make_chat()
    store = StateStore(tmp_path / "state")
    kept = store.open()
    assert kept == {}
    seen_at_send: list[bytes] = []
    created = asyncio.Event()

    async def stream(url: Any, **kwargs: Any) -> CallbackResult:
        await asyncio.sleep(0.05)
        return CallbackResult(status=200, body=stream_body(), content_type="text/event-stream")

    def create(url: Any, **kwargs: Any) -> CallbackResult:
        created.set()
        return CallbackResult(status=201, payload={})

    def send(url: Any, **kwargs: Any) -> CallbackResult:
        # What a process started now would read: the message is recorded as sent.
        import sqlite3
        with sqlite3.connect(store.path) as db:
            (row,) = db.execute("SELECT snapshot FROM chats WHERE id='m1'").fetchall()
        seen_at_send.append(row[0])
        chat.request_end("client")
        return CallbackResult(status=202, payload={})

    with aioresponses() as mock:
        mock.post(API + "/authorization/unauthenticated/access-token", body=TOKEN_BODY)
        mock.get(SSE, callback=stream, repeat=True)
        mock.post(API + "/conversation", callback=create)
        mock.get(re.compile(re.escape(f"{API}/conversation/{p.CONV}/entries") + r".*"),
                 body=p.entries_body(), repeat=True)
        mock.post(f"{API}/conversation/{p.CONV}/message", callback=send)
        mock.delete(re.compile(re.escape(f"{API}/conversation/{p.CONV}") + r"\?.*"), status=204)
        chat.inbox.put_nowait(env.Message(chat="m1", id="v1", text="hello"))
        b = backend(store)
        try:
            await asyncio.wait_for(b.run_chat(chat), 15)
        finally:
            await b.aclose()
            await store.aclose(2)
    from bridged.chats.chat import ChatRecord
    from bridged.salesforce.messaging.protocol import MessagingSnapshot
    (raw,) = seen_at_send
    snapshot = msgspec.msgpack.decode(ChatRecord.decode(raw).state, type=MessagingSnapshot)
    assert [(m.ocp_id, m.attempts) for m in snapshot.pending] == [("v1", 1)]
    assert snapshot.conversation_id == p.CONV and snapshot.access_token == TOKEN


async def test_the_history_field_is_cut_to_the_deployments_length_keeping_the_newest() -> None:
    chat, link = make_chat(history_routing_attribute="BotHistory",
                           routing_attributes={"_firstName": "Ann"})
    lines = [f"Visitor: line {i:03d}" for i in range(100)]
    bodies: list[Any] = []
    small = json.loads(TOKEN_BODY)
    small["context"]["configuration"]["embeddedServiceConfig"]["forms"][0]["formFields"][1][
        "maxLength"] = 200

    def create(url: Any, **kwargs: Any) -> CallbackResult:
        bodies.append(json.loads(kwargs["data"]))
        chat.request_end("client")
        return CallbackResult(status=201, payload={})

    class History:
        async def prepare(self, _chat: Chat) -> Any:
            from bridged.history.handover import Handover
            return Handover(summary="\n".join(lines), messages=[])

        async def aclose(self) -> None:
            pass

    with aioresponses() as mock:
        mock.post(API + "/authorization/unauthenticated/access-token",
                  body=json.dumps(small).encode())
        mock.get(SSE, body=stream_body(), content_type="text/event-stream", repeat=True)
        mock.post(API + "/conversation", callback=create)
        mock.delete(re.compile(re.escape(f"{API}/conversation/{p.CONV}") + r"\?.*"), status=204)
        b = MessagingBackend(AiohttpMessagingTransport(10), SalesforceConfig(), max_pending=10,
                             history=History())  # type: ignore[arg-type]
        try:
            await asyncio.wait_for(b.run_chat(chat), 15)
        finally:
            await b.aclose()
    (body,) = bodies
    value = body["routingAttributes"]["BotHistory"]
    assert len(value) <= 200
    assert value.startswith("[earlier turns omitted]\n")
    assert value.endswith("Visitor: line 099")
    assert body["routingAttributes"]["_firstName"] == "Ann"
    assert [type(e).__name__ for e in link.events] == ["Ended"]


async def test_a_token_refused_by_the_stream_ends_the_chat_saying_so() -> None:
    chat, link = make_chat()
    with aioresponses() as mock:
        mock.post(API + "/authorization/unauthenticated/access-token", body=TOKEN_BODY)
        mock.get(SSE, status=401, payload={"message": "Jwt is expired", "status": 401})
        b = backend()
        try:
            await asyncio.wait_for(b.run_chat(chat), 15)
        finally:
            await b.aclose()
    (ended,) = link.events
    assert isinstance(ended, env.Ended) and ended.reason == "failed"
    assert "access token expired" in ended.text


class GatedStore(StateStore):
    """A store whose node may not send until ``allowed`` (a lease not confirmed, as on Redis)."""

    def __init__(self, directory: Path) -> None:
        super().__init__(directory)
        self.allowed = False
        self.refused = 0
        self.asked_thrice = asyncio.Event()

    def may_send(self) -> bool:
        if not self.allowed:
            self.refused += 1
            if self.refused >= 3:
                self.asked_thrice.set()
        return self.allowed


async def test_nothing_goes_to_salesforce_while_the_node_may_not_send(tmp_path: Path) -> None:
    """Several nodes: while the lease is not surely this node's, no request and no stream."""
    chat, link = make_chat()
    rec = Recorder()
    store = GatedStore(tmp_path / "state")
    store.open()

    async def stream(url: Any, **kwargs: Any) -> CallbackResult:
        rec("GET")(url, **kwargs)
        await asyncio.sleep(0.05)
        return CallbackResult(status=200, body=stream_body(), content_type="text/event-stream")

    def send(url: Any, **kwargs: Any) -> CallbackResult:
        rec("POST")(url, **kwargs)
        chat.request_end("client")
        return CallbackResult(status=202, payload={})

    with aioresponses() as mock:
        mock.post(API + "/authorization/unauthenticated/access-token",
                  callback=rec("POST"), body=TOKEN_BODY)
        mock.get(SSE, callback=stream, repeat=True)
        mock.post(API + "/conversation", callback=rec("POST"), status=201, payload={})
        mock.get(re.compile(re.escape(f"{API}/conversation/{p.CONV}/entries") + r".*"),
                 body=p.entries_body(), repeat=True)
        mock.post(f"{API}/conversation/{p.CONV}/message", callback=send)
        mock.delete(re.compile(re.escape(f"{API}/conversation/{p.CONV}") + r"\?.*"), status=204)
        chat.inbox.put_nowait(env.Message(chat="m1", id="v1", text="hello"))
        b = backend(store)
        run = asyncio.create_task(b.run_chat(chat))
        try:
            await asyncio.wait_for(store.asked_thrice.wait(), 10)
            assert rec.seen == []  # asked, refused, and nothing went
            store.allowed = True  # the lease is renewed: the chat goes on
            await asyncio.wait_for(run, 15)
        finally:
            run.cancel()
            await asyncio.gather(run, return_exceptions=True)
            await b.aclose()
            await store.aclose(2)
    order = [(m, u.split("?")[0].rsplit("/", 1)[-1]) for m, u, _, _ in rec.seen]
    assert order[:3] == [("POST", "access-token"), ("GET", "sse"), ("POST", "conversation")]
    assert [type(e).__name__ for e in link.events][-1] == "Ended"
