"""The Live Agent actor with the real aiohttp transport, Salesforce mocked by aioresponses."""

from __future__ import annotations

import asyncio
import json
import re
from typing import Any

import aiohttp
import pytest
from aioresponses import CallbackResult, aioresponses

from bridged.chats.chat import Chat
from bridged.chats.policy import RetryPolicy
from bridged.config.file import SalesforceConfig
from bridged.config.webchat import WebchatFields, resolve_webchat
from bridged.ocp import envelopes as env
from bridged.salesforce.liveagent.actor import LiveAgentBackend
from bridged.salesforce.liveagent.transport import AiohttpTransport

BASE = "https://d.la1-c1-fra.salesforceliveagent.com/chat/rest/"
SESSION = {"id": "sid-1", "key": "sid-1!k", "affinityToken": "2c931fa0", "clientPollTimeout": 40}


class RecordingLink:
    """Collects what a chat would send to OCP."""

    def __init__(self) -> None:
        self.id = "L-test"
        self.chats: set[str] = set()
        self.events: list[env.ChatEvent] = []
        self.errors: list[env.Error] = []
        self.chat: Chat | None = None

    def schedule(self, chat: Chat) -> None:
        for event in chat.unsent(1000):
            self.events.append(event)
            chat.sent_upto = event.seq

    def post_error(self, error: env.Error) -> None:
        self.errors.append(error)


def make_chat() -> tuple[Chat, RecordingLink]:
    webchat = resolve_webchat(WebchatFields(
        live_agent_base_url=BASE, organization_id="00D000000000001",
        deployment_id="572000000000001", button_id="573000000000001"), None, {},
        ["*.salesforceliveagent.com"])
    chat = Chat("c1", webchat, env.Start(chat="c1"), inbox_size=8, max_held=100)
    link = RecordingLink()
    chat.bind(link, 0)
    return chat, link


def backend(retry: RetryPolicy | None = None) -> LiveAgentBackend:
    return LiveAgentBackend(AiohttpTransport(10), SalesforceConfig(), max_pending=10,
                            retry=retry or RetryPolicy(initial_s=0.01, max_delay_s=0.02))


def messages(*items: tuple[str, dict[str, Any]], sequence: int) -> dict[str, Any]:
    return {"messages": [{"type": t, "message": m} for t, m in items], "sequence": sequence,
            "offset": 5}


async def test_lifecycle_headers_and_acks_over_http() -> None:
    chat, link = make_chat()
    seen: list[tuple[str, str, dict[str, str]]] = []
    polls = iter([
        messages(("ChatRequestSuccess", {"queuePosition": 1}), sequence=1),
        messages(("ChatEstablished", {"name": "Ada"}), sequence=2),
        messages(("ChatMessage", {"name": "Ada", "text": "hi"}),
                 ("ChatEnded", {"reason": "agent"}), sequence=3),
    ])

    def record(url: Any, **kwargs: Any) -> None:
        seen.append((kwargs.get("method", ""), str(url), dict(kwargs.get("headers") or {})))

    def poll(url: Any, **kwargs: Any) -> CallbackResult:
        record(url, method="GET", **kwargs)
        return CallbackResult(status=200, body=json.dumps(next(polls)))

    with aioresponses() as mocked:
        mocked.get(BASE + "System/SessionId", payload=SESSION,
                   callback=lambda url, **kw: record(url, method="GET", **kw))
        mocked.post(BASE + "Chasitor/ChasitorInit", status=200,
                    callback=lambda url, **kw: record(url, method="POST", **kw))
        mocked.get(re.compile(r".*/System/Messages\?ack=.*"), callback=poll, repeat=True)
        be = backend()
        await asyncio.wait_for(be.run_chat(chat), 5)
        await be.aclose()
    assert [type(e).__name__ for e in link.events] == [
        "Queued", "AgentJoined", "AgentMessage", "Ended"]
    assert [e.seq for e in link.events] == [1, 2, 3, 4]
    session_id, init, *polls_seen = seen
    assert session_id[2]["X-LIVEAGENT-AFFINITY"] == "null"
    assert init[2]["X-LIVEAGENT-SEQUENCE"] == "1"
    assert init[2]["X-LIVEAGENT-SESSION-KEY"] == "sid-1!k"
    assert [url.split("ack=")[1] for _, url, _ in polls_seen] == ["-1", "1", "2"]
    assert all("X-LIVEAGENT-SEQUENCE" not in h for _, _, h in polls_seen)


async def test_a_post_without_answer_is_retried_with_the_same_sequence() -> None:
    chat, link = make_chat()
    sequences: list[str] = []
    attempts = {"n": 0}

    def chat_message(url: Any, **kwargs: Any) -> CallbackResult:
        sequences.append(dict(kwargs["headers"])["X-LIVEAGENT-SEQUENCE"])
        attempts["n"] += 1
        if attempts["n"] == 1:
            raise aiohttp.ServerDisconnectedError()
        return CallbackResult(status=200)

    polls = iter([messages(("ChatEstablished", {"name": "Ada"}), sequence=1)])

    def poll(url: Any, **kwargs: Any) -> CallbackResult:
        try:
            return CallbackResult(status=200, body=json.dumps(next(polls)))
        except StopIteration:
            return CallbackResult(status=204)

    with aioresponses() as mocked:
        mocked.get(BASE + "System/SessionId", payload=SESSION)
        mocked.post(BASE + "Chasitor/ChasitorInit", status=200)
        mocked.get(re.compile(r".*/System/Messages\?ack=.*"), callback=poll, repeat=True)
        mocked.post(BASE + "Chasitor/ChatMessage", callback=chat_message, repeat=True)
        mocked.post(BASE + "Chasitor/ChatEnd", status=200)
        be = backend()
        task = asyncio.create_task(be.run_chat(chat))
        chat.inbox.put_nowait(env.Message(chat="c1", id="m1", text="hello"))
        async with asyncio.timeout(5):
            while not any(isinstance(e, env.Delivered) for e in link.events):
                await asyncio.sleep(0.01)
        chat.request_end("client")
        await asyncio.wait_for(task, 5)
        await be.aclose()
    assert sequences == ["2", "2"]
    assert [type(e).__name__ for e in link.events][-2:] == ["Delivered", "Ended"]


async def test_salesforce_unreachable_fails_the_chat_once_the_budget_is_spent() -> None:
    chat, link = make_chat()
    with aioresponses() as mocked:
        mocked.get(BASE + "System/SessionId", exception=aiohttp.ClientConnectionError("refused"),
                   repeat=True)
        be = backend(RetryPolicy(initial_s=0.01, max_delay_s=0.02, budget_s=0.2))
        await asyncio.wait_for(be.run_chat(chat), 5)
        await be.aclose()
    (ended,) = link.events
    assert isinstance(ended, env.Ended)
    assert ended.reason == "failed"
    assert ended.text.startswith("Chat request failed to Salesforce. Reason: no answer from"
                                 " Salesforce for 0.2 s (SessionId: ")


@pytest.mark.parametrize("status", [400, 404])
async def test_an_unexpected_status_fails_only_with_a_clear_reason(status: int) -> None:
    chat, link = make_chat()
    with aioresponses() as mocked:
        mocked.get(BASE + "System/SessionId", payload=SESSION)
        mocked.post(BASE + "Chasitor/ChasitorInit", status=status)
        be = backend()
        await asyncio.wait_for(be.run_chat(chat), 5)
        await be.aclose()
    (ended,) = link.events
    assert isinstance(ended, env.Ended)
    assert ended.detail == f"ChasitorInit answered HTTP {status}"
