"""The actor against a state store whose commits the test makes, one by one.

What must wait for a commit waits for it, and goes once it is there without anything else
happening: a sequenced POST after the commit of the snapshot that records it; the poll that
acknowledges a batch after the commit of the state that holds it; events to OCP once
durable; the chat let go at a safe point. Every poll goes at most POLL_TIME_SLACK_S after
the poll time the store holds. Salesforce is a scripted transport; the store keeps
everything in memory.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

import msgspec
import pytest

from bridged.chats.chat import Chat, ChatRecord, HeldError
from bridged.chats.gate import Gate
from bridged.chats.policy import RetryPolicy
from bridged.config.file import SalesforceConfig
from bridged.config.webchat import WebchatConfig, WebchatFields, resolve_webchat
from bridged.ocp import envelopes as env
from bridged.salesforce.liveagent.actor import (
    POLL_TIME_SLACK_S,
    ChatActor,
    LiveAgentState,
    session_params,
)
from bridged.salesforce.liveagent.protocol import (
    HttpRequest,
    HttpResponse,
    Lane,
    LiveAgentSession,
)
from bridged.state.store import KeptChat, PendingChange, StoreStatistics

BASE = "https://d.la1-c1-fra.salesforceliveagent.com/chat/rest/"


class HeldStore:
    """Keeps what is saved pending until :meth:`commit` (or at once, while ``auto``)."""

    def __init__(self) -> None:
        self.auto = True
        self.pending = PendingChange()
        self.pending_poll: float | None = None
        self.snapshot: bytes | None = None  # as committed
        self.poll_sent: float | None = None  # as committed
        self._scheduled = False

    def state(self, committed: bool = False) -> LiveAgentState | None:
        """The session's part of the latest snapshot, committed or pending."""
        data = self.snapshot if committed else (self.pending.snapshot or self.snapshot)
        if data is None:
            return None
        return msgspec.msgpack.decode(ChatRecord.decode(data).state, type=LiveAgentState)

    def commit(self) -> None:
        """Commit everything pending, then run its callbacks."""
        self._scheduled = False
        change, self.pending = self.pending, PendingChange()
        if change.snapshot is not None:
            self.snapshot = change.snapshot
        if self.pending_poll is not None:
            self.poll_sent, self.pending_poll = self.pending_poll, None
        for callback in change.callbacks:
            callback()

    def _changed(self) -> None:
        if self.auto and not self._scheduled:
            self._scheduled = True
            asyncio.get_running_loop().call_soon(self.commit)

    async def load(self) -> dict[str, KeptChat]:
        return {}

    def save(self, chat_id: str, snapshot: bytes, on_durable: Callable[[], None] | None = None,
             *, static: bytes | None = None, delivered: Sequence[str] = (),
             items: Sequence[tuple[int, int, bytes]] = (),
             drops: Sequence[tuple[int, int, int]] = ()) -> None:
        self.pending.keep(snapshot, on_durable, static, delivered, items, drops)
        self._changed()

    def touch(self, chat_id: str, poll_sent: float,
              on_durable: Callable[[], None] | None = None) -> None:
        self.pending_poll = poll_sent
        if on_durable is not None:
            self.pending.callbacks.append(on_durable)
        self._changed()

    def delete(self, chat_id: str) -> None:
        pass

    def may_send(self) -> bool:
        return True

    def statistics(self) -> StoreStatistics:
        return StoreStatistics(0, 0, 0, 0.0, 0)

    async def flush(self, timeout: float) -> bool:
        return True

    async def aclose(self, timeout: float = 5.0) -> None:
        pass


class Salesforce:
    """Answers at once; a poll waits for the next batch the test gives."""

    def __init__(self, store: HeldStore) -> None:
        self.store = store
        self.sent: list[HttpRequest] = []
        self.batches: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue()  # None: 204
        self.poll_times: list[tuple[float, float | None]] = []  # sent, kept time committed

    def sent_as(self, purpose: str) -> list[HttpRequest]:
        return [r for r in self.sent if r.purpose.value == purpose]

    def acks(self) -> list[str]:
        return [dict(r.query)["ack"] for r in self.sent_as("Messages")]

    async def exchange(self, base_url: str, request: HttpRequest, timeout: float) -> HttpResponse:
        self.sent.append(request)
        if request.purpose.value == "SessionId":
            return HttpResponse(200, json.dumps({"id": "s1", "key": "s1!k", "affinityToken": "a1",
                                                 "clientPollTimeout": 40}).encode())
        if request.purpose.value == "Messages":
            self.poll_times.append((time.time(), self.store.poll_sent))
            body = await self.batches.get()
            if body is None:
                return HttpResponse(204)
            return HttpResponse(200, json.dumps(body).encode())
        return HttpResponse(200)

    async def aclose(self) -> None:
        pass


class Link:
    """OCP's connection: what reached it (durable events only, and held errors)."""

    def __init__(self) -> None:
        self.id = "L-test"
        self.chats: set[str] = set()
        self.seen: list[str] = []

    def schedule(self, chat: Chat) -> None:
        for item in chat.outgoing(100):
            if isinstance(item, HeldError):
                self.seen.append(f"error:{item.error.ref}")
                chat.errors_sent = item.serial
            else:
                self.seen.append(type(item).__name__)
                chat.sent_upto = item.seq


def batch(*messages: tuple[str, dict[str, Any]], sequence: int) -> dict[str, Any]:
    return {"messages": [{"type": t, "message": m} for t, m in messages],
            "sequence": sequence, "offset": sequence}


async def until(check: Callable[[], bool], what: str) -> None:
    for _ in range(2000):
        if check():
            return
        await asyncio.sleep(0.002)
    raise AssertionError(f"never: {what}")


async def settle() -> None:
    """Let the actor do whatever it can without a commit."""
    for _ in range(50):
        await asyncio.sleep(0)


class Rig:
    def __init__(self) -> None:
        webchat = resolve_webchat(WebchatFields(
            live_agent_base_url=BASE, organization_id="00D000000000001",
            deployment_id="572000000000001", button_id="573000000000001"), None, {},
            ["*.salesforceliveagent.com"])
        assert isinstance(webchat, WebchatConfig)
        self.store = HeldStore()
        self.salesforce = Salesforce(self.store)
        self.chat = Chat("c1", webchat, env.Start(chat="c1"), inbox_size=8, max_held=100)
        self.link = Link()
        self.chat.bind(self.link, 0)
        self.actor = ChatActor(
            self.chat, LiveAgentSession(session_params(webchat, SalesforceConfig())),
            self.salesforce, request_timeout=5, max_pending=8, retry=RetryPolicy(),
            start_gate=Gate(4), allowed_hosts=["*.salesforceliveagent.com"], store=self.store)
        self.task = asyncio.create_task(self.actor.run())

    async def chatting(self) -> None:
        """The agent joined and the next poll is out; from now on the test commits."""
        await self.salesforce.batches.put(batch(("ChatRequestSuccess", {"queuePosition": 1}),
                                                ("ChatEstablished", {"name": "Ada"}), sequence=1))
        await until(lambda: self.salesforce.acks()[-1:] == ["1"], "the poll after the join")
        assert self.link.seen == ["Queued", "AgentJoined"]
        self.store.auto = False

    async def agent_says_hi(self) -> None:
        """The agent's message (batch 2) is processed; the state that holds it is not committed."""
        await self.salesforce.batches.put(batch(("ChatMessage", {"name": "Ada", "text": "hi"}),
                                                sequence=2))
        await until(lambda: (state := self.store.state()) is not None and state.session.ack == 2,
                    "the batch processed")
        await settle()

    def message(self, message_id: str, text: str) -> None:
        self.chat.inbox.put_nowait(env.Message(chat="c1", id=message_id, text=text))
        self.chat.accept(message_id)

    def check_poll_times(self) -> None:
        assert self.salesforce.poll_times
        for sent, kept in self.salesforce.poll_times:
            assert kept is not None and kept <= sent <= kept + POLL_TIME_SLACK_S

    async def stop(self) -> None:
        self.task.cancel()
        await asyncio.gather(self.task, return_exceptions=True)


@pytest.fixture
async def rig() -> AsyncIterator[Rig]:
    made = Rig()
    yield made
    await made.stop()


def unconfirmed_sequence(state: LiveAgentState | None) -> int | None:
    post = state.session.unconfirmed_post if state is not None else None
    return post.sequence if post is not None else None


async def test_a_visitor_message_goes_once_the_snapshot_that_records_it_is_committed(
        rig: Rig) -> None:
    await rig.chatting()
    rig.message("m1", "hello")
    await until(lambda: unconfirmed_sequence(rig.store.state()) == 2, "m1 prepared")
    rig.chat.inbox.put_nowait(env.Typing(chat="c1", active=True))  # a turn meanwhile
    await until(lambda: len(rig.chat.inbox) == 0, "the typing taken")
    await settle()
    assert rig.salesforce.sent_as("ChatMessage") == []  # not before its commit
    rig.store.commit()
    await until(lambda: bool(rig.salesforce.sent_as("ChatMessage")), "m1 sent after the commit")
    (sent,) = rig.salesforce.sent_as("ChatMessage")
    assert sent.sequence == 2 == unconfirmed_sequence(rig.store.state(committed=True))
    # Its delivered reaches OCP once the state that holds it is committed.
    await until(lambda: (state := rig.store.state()) is not None and state.session.sequence == 2,
                "m1 answered")
    await settle()
    assert "Delivered" not in rig.link.seen
    rig.store.commit()
    assert rig.link.seen[-1] == "Delivered"
    rig.check_poll_times()


async def test_the_poll_that_acknowledges_a_batch_waits_for_the_commit_that_holds_it(
        rig: Rig) -> None:
    await rig.chatting()
    await rig.agent_says_hi()
    assert rig.salesforce.acks() == ["-1", "1"]
    # OCP acknowledges what it has, a visitor types: saves of their own, the batch's still
    # not committed.
    rig.chat.ack(2)
    rig.chat.inbox.put_nowait(env.Typing(chat="c1", active=True))
    await settle()
    assert rig.salesforce.acks() == ["-1", "1"]
    assert rig.link.seen == ["Queued", "AgentJoined"]  # the agent's message is not durable
    rig.store.commit()
    await until(lambda: rig.salesforce.acks()[-1:] == ["2"], "the poll after the commit")
    assert rig.link.seen[-1] == "AgentMessage"
    rig.check_poll_times()


async def test_the_commit_a_poll_waits_for_starts_that_poll_itself(rig: Rig) -> None:
    """No turn of the actor between the commit and the poll (a turn less per agent
    message); an ack OCP made while the poll waited is kept with the chat's next change."""
    await rig.chatting()
    await rig.agent_says_hi()
    rig.chat.ack(2)  # OCP has the join: a change of OCP's only, which wakes no one
    await settle()
    assert rig.actor.session.in_flight(Lane.POLL) is None
    rig.store.commit()
    poll = rig.actor.session.in_flight(Lane.POLL)  # within the commit, before any turn
    assert poll is not None and dict(poll.query)["ack"] == "2"
    await until(lambda: rig.salesforce.acks()[-1:] == ["2"], "the poll after the commit")
    assert rig.link.seen[-1] == "AgentMessage"
    assert rig.store.pending.drops == []  # the ack needs no commit of its own
    rig.message("m1", "hello")
    await until(lambda: unconfirmed_sequence(rig.store.state()) == 2, "m1 prepared")
    assert (1, 1, 2) in rig.store.pending.drops  # events 1 and 2, which OCP acknowledged
    rig.check_poll_times()


async def test_a_commit_after_the_chat_ended_sends_the_message_it_records_nowhere(
        rig: Rig) -> None:
    await rig.chatting()
    rig.message("m1", "too late")
    await until(lambda: unconfirmed_sequence(rig.store.state()) == 2, "m1 prepared")
    await rig.salesforce.batches.put(batch(("ChatEnded", {"reason": "agent"}), sequence=2))
    await asyncio.wait_for(rig.task, 5)  # the chat is over: the actor stopped
    rig.store.commit()
    await settle()
    assert rig.salesforce.sent_as("ChatMessage") == []
    assert rig.link.seen[2:] == ["error:m1", "Ended"]


async def test_a_chat_let_go_stops_once_what_it_did_is_committed(rig: Rig) -> None:
    await rig.chatting()
    rig.chat.request_release()
    await rig.agent_says_hi()
    assert not rig.chat.released and not rig.task.done()
    rig.store.commit()
    await asyncio.wait_for(rig.task, 5)
    assert rig.chat.released
    assert rig.salesforce.acks() == ["-1", "1"]  # no poll after the release was asked


async def test_a_poll_after_an_idle_one_waits_for_its_time_to_be_kept(rig: Rig) -> None:
    await rig.chatting()
    # The first idle poll tells the server's hold (a save); the next one nothing: no save,
    # but the time of the poll after it is kept before that poll goes.
    for polls in (3, 4):
        await rig.salesforce.batches.put(None)
        await until(lambda: rig.store.pending_poll is not None, "the poll time kept")
        await settle()
        assert len(rig.salesforce.acks()) == polls - 1
        rig.store.commit()
        await until(lambda: rig.salesforce.acks() == ["-1"] + ["1"] * (polls - 1),  # noqa: B023
                    "the poll after the commit")
    rig.check_poll_times()


async def test_a_bug_met_as_a_commit_starts_the_poll_ends_that_chat_alone(
        rig: Rig, monkeypatch: pytest.MonkeyPatch) -> None:
    """The commit's other callbacks (other chats') still run; the chat's actor fails in its
    own task, where its supervisor ends it toward OCP."""
    await rig.chatting()
    await rig.agent_says_hi()

    def broken(self: LiveAgentSession, lane: Lane, *, keepalive: bool = False) -> None:
        raise RuntimeError("a bug")

    monkeypatch.setattr(LiveAgentSession, "next_request", broken)
    others: list[str] = []
    rig.store.pending.callbacks.append(lambda: others.append("another chat's commit"))
    rig.store.commit()
    assert others == ["another chat's commit"]
    with pytest.raises(RuntimeError, match="a bug"):
        await asyncio.wait_for(rig.task, 5)
