"""Enhanced Chat across restarts of bridged, with real processes on 127.0.0.1.

bridged is killed (-9) or stopped (SIGTERM) mid-conversation while the agent goes on
talking; the next process resumes the chat's event stream from its last event id and
reconciles. Asserted: what OCP received (every agent message once, in order, seq unbroken)
and what the Enhanced Chat simulator recorded (every visitor message once, one stream at a
time, the same token and conversation).
"""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.ocp_client import connect
from tests.ops.test_processes import Conversation, reattach, visitor
from tests.processes import BridgedProcess, SimulatorProcess


async def start(bridged: BridgedProcess, http: aiohttp.ClientSession,
                simulator: SimulatorProcess, chat: str) -> Conversation:
    talk = Conversation(chat)
    talk.client = await connect(http, bridged.url, BridgedProcess.TOKEN)
    await talk.client.start(chat, profile="m_manual")
    queued = await talk.client.expect("queued")
    talk.last_seq = queued["seq"]
    listed = await asyncio.to_thread(simulator.messaging, "GET", "conversations")
    (summary,) = listed["conversations"]
    talk.session_id = summary["id"]
    await asyncio.to_thread(simulator.messaging, "POST",
                            f"conversations/{talk.session_id}/join", {})
    joined = await talk.client.expect("agent_joined")
    talk.last_seq = joined["seq"]
    return talk


async def say(simulator: SimulatorProcess, talk: Conversation, text: str) -> None:
    await asyncio.to_thread(simulator.messaging, "POST",
                            f"conversations/{talk.session_id}/say", {"text": text})


def record(simulator: SimulatorProcess, talk: Conversation) -> dict[str, Any]:
    result: dict[str, Any] = simulator.messaging("GET", f"conversations/{talk.session_id}")
    return result


@pytest.mark.parametrize("how", [signal.SIGKILL, signal.SIGTERM], ids=["kill-9", "sigterm"])
async def test_bridged_dies_mid_conversation_and_the_enhanced_chat_goes_on(
        tmp_path: Path, simulator: SimulatorProcess, how: signal.Signals) -> None:
    async with aiohttp.ClientSession() as http:
        bridged = await asyncio.to_thread(BridgedProcess, tmp_path, simulator)
        try:
            talk = await start(bridged, http, simulator, "proc-m")
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
        # The agent goes on talking while bridged is down, and the replay buffer is off:
        # only reconciliation from the entries can bring these back.
        await asyncio.to_thread(simulator.messaging, "POST", "replay", {"enabled": False})
        for i in range(4, 7):
            await say(simulator, talk, f"agent {i}")
        restarted = await asyncio.to_thread(BridgedProcess, tmp_path, simulator,
                                            port=bridged.port, name="bridged-2")
        try:
            await reattach(talk, restarted, http)
            # v3 may or may not have reached bridged before it died: OCP sends it again
            # (same id), as a client does when it got no answer.
            await visitor(talk, "v3", "visitor 3")
            await visitor(talk, "v7", "visitor 7")
            await talk.pump(lambda c: len(c.agent_texts) == 7 and "v7" in c.delivered)
            await say(simulator, talk, "agent 7")
            await talk.pump(lambda c: len(c.agent_texts) == 8)
        finally:
            restarted.stop()
    assert talk.agent_texts == [f"agent {i}" for i in range(8)]
    assert talk.delivered[:3] == ["v0", "v1", "v2"] and "v3" in talk.delivered
    kept = await asyncio.to_thread(record, simulator, talk)
    assert kept["open"] and kept["visitor_messages"] == 5
    assert kept["duplicates"] == []
    texts = [e for e in kept["entries"] if e.get("sender", {}).get("role") == "EndUser"]
    assert len(texts) == 5
    streams = (await asyncio.to_thread(simulator.messaging, "GET", "streams"))["streams"]
    assert [s["concurrent"] for s in streams] == [0] * len(streams)
    assert len({s["jwt_id"] for s in streams}) == 1  # one token for the whole hand-over
    tokens = await asyncio.to_thread(simulator.messaging, "GET",
                                     "requests?resource=AccessToken")
    assert len(tokens["requests"]) == 1


async def test_a_chat_whose_token_expired_while_bridged_was_down_ends_saying_so(
        tmp_path: Path, simulator: SimulatorProcess) -> None:
    async with aiohttp.ClientSession() as http:
        bridged = await asyncio.to_thread(BridgedProcess, tmp_path, simulator)
        try:
            talk = await start(bridged, http, simulator, "proc-x")
            bridged.signal(signal.SIGKILL)
            bridged.wait()
        finally:
            bridged.stop()
        await asyncio.to_thread(simulator.messaging, "POST", "expire-tokens", {})
        restarted = await asyncio.to_thread(BridgedProcess, tmp_path, simulator,
                                            port=bridged.port, name="bridged-2")
        try:
            await reattach(talk, restarted, http)
            assert talk.client is not None
            ended = await talk.client.expect("ended")
        finally:
            restarted.stop()
    assert ended["reason"] == "failed"
    assert "access token expired" in ended["detail"]
