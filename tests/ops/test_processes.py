"""Break things on purpose, with real processes on 127.0.0.1.

bridged is killed (-9) or stopped (SIGTERM) in the middle of a conversation while the agent
goes on talking; OCP's connection is cut; Salesforce answers 503 and resets connections.
Every test asserts on the simulator's record and on what OCP received: every agent message
once and in order, every visitor message at the simulator once.
"""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.ocp_client import OcpClient, connect
from tests.processes import BridgedProcess, SimulatorProcess


class Conversation:
    """One OCP chat that tracks what it saw, across reconnects."""

    def __init__(self, chat: str) -> None:
        self.chat = chat
        self.agent_texts: list[str] = []
        self.delivered: list[str] = []
        self.last_seq = 0
        self.client: OcpClient | None = None
        self.session_id = ""

    async def pump(self, until: Any, timeout: float = 30) -> None:
        """Read (and ack) events until ``until(self)`` is true."""
        assert self.client is not None
        async with asyncio.timeout(timeout):
            while not until(self):
                await self.take(await self.client.next(timeout=timeout))

    async def take(self, frame: dict[str, Any]) -> None:
        """Note one of the chat's numbered events (in order, each once) and ack it."""
        assert self.client is not None
        if frame.get("chat") != self.chat or "seq" not in frame:
            return
        assert frame["seq"] == self.last_seq + 1, (frame, self.last_seq)
        self.last_seq = frame["seq"]
        if frame["type"] == "agent_message":
            self.agent_texts.append(frame["text"])
        elif frame["type"] == "delivered":
            self.delivered.append(frame["id"])
        elif frame["type"] == "ended":
            raise AssertionError(f"the chat ended: {frame}")
        await self.client.send({"type": "ack", "chat": self.chat, "seq": frame["seq"]})


async def start(bridged: BridgedProcess, http: aiohttp.ClientSession,
                simulator: SimulatorProcess, chat: str) -> Conversation:
    conversation = Conversation(chat)
    conversation.client = await connect(http, bridged.url, BridgedProcess.TOKEN)
    await conversation.client.start(chat, profile="manual")
    joined = await conversation.client.expect("agent_joined")
    conversation.last_seq = joined["seq"]
    (summary,) = await asyncio.to_thread(simulator.sessions)
    conversation.session_id = summary["id"]
    return conversation


async def reattach(conversation: Conversation, bridged: BridgedProcess,
                   http: aiohttp.ClientSession) -> None:
    conversation.client = await connect(http, bridged.url, BridgedProcess.TOKEN)
    await conversation.client.send({"type": "attach", "chat": conversation.chat,
                                    "after": conversation.last_seq})


async def say(simulator: SimulatorProcess, conversation: Conversation, text: str) -> None:
    await asyncio.to_thread(simulator.action, conversation.session_id, "say", {"text": text})


async def visitor(conversation: Conversation, message_id: str, text: str) -> None:
    assert conversation.client is not None
    await conversation.client.send({"type": "message", "chat": conversation.chat,
                                    "id": message_id, "text": text})


@pytest.mark.parametrize("store", ["sqlite", "redis"])
@pytest.mark.parametrize("how", [signal.SIGKILL, signal.SIGTERM], ids=["kill-9", "sigterm"])
async def test_bridged_dies_mid_conversation_and_the_chat_goes_on(
        tmp_path: Path, simulator: SimulatorProcess, how: signal.Signals, store: str,
        request: pytest.FixtureRequest) -> None:
    # One node on Redis ([cluster]) behaves exactly as one node on SQLite.
    redis_url = request.getfixturevalue("redis_server").url if store == "redis" else None
    async with aiohttp.ClientSession() as http:
        bridged = await asyncio.to_thread(BridgedProcess, tmp_path, simulator,
                                          redis_url=redis_url)
        try:
            talk = await start(bridged, http, simulator, "proc-1")
            for i in range(3):
                await visitor(talk, f"v{i}", f"visitor {i}")
                await say(simulator, talk, f"agent {i}")
            await talk.pump(lambda c: len(c.agent_texts) == 3 and len(c.delivered) == 3)
            # Messages on their way when bridged dies: a visitor one, and the agent's.
            await visitor(talk, "v3", "visitor 3")
            await say(simulator, talk, "agent 3")
            bridged.signal(how)
            assert bridged.wait() in (0, -signal.SIGKILL)
        finally:
            bridged.stop()
        # The agent goes on talking while bridged is down.
        for i in range(4, 7):
            await say(simulator, talk, f"agent {i}")
        restarted = await asyncio.to_thread(BridgedProcess, tmp_path, simulator,
                                            port=bridged.port, name="bridged-2",
                                            redis_url=redis_url)
        try:
            await reattach(talk, restarted, http)
            # v3 may or may not have reached bridged before it died: OCP sends it again
            # (same id), as a client does when it got no answer.
            await visitor(talk, "v3", "visitor 3")
            await visitor(talk, "v7", "visitor 7")
            await talk.pump(lambda c: len(c.agent_texts) == 7 and "v7" in c.delivered)
        finally:
            restarted.stop()
    assert talk.agent_texts == [f"agent {i}" for i in range(7)]
    assert talk.delivered[:3] == ["v0", "v1", "v2"] and "v3" in talk.delivered
    record = await asyncio.to_thread(simulator.session, talk.session_id)
    assert record["visitor_messages"] == [f"visitor {i}" for i in (0, 1, 2, 3, 7)]
    assert not record["ended"]


async def test_ocp_connection_cut_mid_stream_then_attach(
        tmp_path: Path, simulator: SimulatorProcess) -> None:
    async with aiohttp.ClientSession() as http:
        bridged = await asyncio.to_thread(BridgedProcess, tmp_path, simulator)
        try:
            talk = await start(bridged, http, simulator, "cut-1")
            for i in range(5):
                await say(simulator, talk, f"agent {i}")
            await talk.pump(lambda c: len(c.agent_texts) >= 2)
            assert talk.client is not None
            await talk.client.ws.close()  # cut, with events in flight
            for i in range(5, 10):
                await say(simulator, talk, f"agent {i}")
            await reattach(talk, bridged, http)
            await talk.pump(lambda c: len(c.agent_texts) == 10)
        finally:
            bridged.stop()
    assert talk.agent_texts == [f"agent {i}" for i in range(10)]


async def test_salesforce_switches_and_resets_while_ocp_reconnects(
        tmp_path: Path, simulator: SimulatorProcess) -> None:
    async with aiohttp.ClientSession() as http:
        bridged = await asyncio.to_thread(BridgedProcess, tmp_path, simulator)
        try:
            talk = await start(bridged, http, simulator, "storm-1")
            sid = talk.session_id
            await asyncio.to_thread(simulator.action, sid, "reset-next",
                                    {"resource": "ChatMessage", "when": "after"})
            await visitor(talk, "v0", "visitor 0")
            await say(simulator, talk, "agent 0")
            assert talk.client is not None
            await talk.client.ws.close()
            await asyncio.to_thread(simulator.action, sid, "switch-server")
            await say(simulator, talk, "agent 1")
            await asyncio.to_thread(simulator.action, sid, "reset-next",
                                    {"resource": "Messages", "count": 2, "when": "after"})
            await say(simulator, talk, "agent 2")
            await reattach(talk, bridged, http)
            await visitor(talk, "v1", "visitor 1")
            await talk.pump(lambda c: len(c.agent_texts) == 3 and "v1" in c.delivered)
        finally:
            bridged.stop()
    assert talk.agent_texts == ["agent 0", "agent 1", "agent 2"]
    record = await asyncio.to_thread(simulator.session, talk.session_id)
    assert record["visitor_messages"] == ["visitor 0", "visitor 1"]
    assert record["switches"] == 1
