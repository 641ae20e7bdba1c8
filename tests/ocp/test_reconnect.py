"""Connections come and go; chats stay: attach, replay, ack, detach grace, crash isolation."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path

import aiohttp

from bridged.ops.daemon import Daemon
from bridged.salesforce.liveagent.protocol import HttpRequest, HttpResponse
from bridged.salesforce.liveagent.transport import AiohttpTransport
from bridged.simulators.liveagent import Simulator
from tests.conftest import TOKEN, bridged_config, running_bridged
from tests.ocp_client import OcpClient, connect

Connect = Callable[..., Awaitable[OcpClient]]


async def wait_for(predicate: Callable[[], bool], timeout: float = 5.0) -> None:
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(0.01)


async def test_lost_connection_keeps_the_chat_and_attach_replays_after(
        ocp: Connect, sim: Simulator, bridged: Daemon) -> None:
    first = await ocp()
    await first.start("r-1", profile="manual")
    joined = await first.expect("agent_joined")
    await first.close()
    chat = bridged.dispatcher.live["r-1"]
    await wait_for(lambda: chat.link is None)
    (session,) = sim.sessions.values()
    sim.agent_says(session.id, "are you there?")
    sim.agent_says(session.id, "hello?")
    await wait_for(lambda: chat.next_seq == joined["seq"] + 3)
    second = await ocp()
    await second.send({"type": "attach", "chat": "r-1", "after": joined["seq"]})
    replayed = [await second.expect("agent_message"), await second.expect("agent_message")]
    assert [e["text"] for e in replayed] == ["are you there?", "hello?"]
    assert [e["seq"] for e in replayed] == [joined["seq"] + 1, joined["seq"] + 2]
    # The chat goes on over the new connection.
    await second.send({"type": "message", "chat": "r-1", "id": "m1", "text": "yes"})
    assert (await second.expect("delivered"))["id"] == "m1"
    assert session.visitor_messages == ["yes"]


async def test_attach_with_after_zero_replays_everything_still_held_and_ack_frees(
        ocp: Connect, bridged: Daemon) -> None:
    client = await ocp()
    await client.start("r-2", profile="echo")
    joined = await client.expect("agent_joined")
    chat = bridged.dispatcher.live["r-2"]
    assert len(chat.held) == joined["seq"]
    await client.send({"type": "ack", "chat": "r-2", "seq": 1})
    await wait_for(lambda: len(chat.held) == joined["seq"] - 1)
    other = await ocp()
    await other.send({"type": "attach", "chat": "r-2", "after": 0})
    replayed = await other.expect("agent_joined")
    assert replayed == joined
    assert [f["seq"] for f in other.received if f.get("chat") == "r-2"] == list(
        range(2, joined["seq"] + 1))


async def test_nobody_attaches_in_time_ends_detached_and_ends_salesforce_too(
        sim: Simulator, tmp_path: Path, http: aiohttp.ClientSession) -> None:
    async with running_bridged(bridged_config(sim, tmp_path, detach_grace_s=0.3)) as daemon:
        client = await connect(http, daemon.url, TOKEN)
        await client.start("gone-1", profile="echo")
        await client.expect("agent_joined")
        await client.close()
        (session,) = sim.sessions.values()
        await wait_for(lambda: session.end_reason is not None)
        await wait_for(lambda: "gone-1" not in daemon.dispatcher.live)
        # The ended event is still held for a late attach, within a new grace.
        late = await connect(http, daemon.url, TOKEN)
        await late.send({"type": "attach", "chat": "gone-1", "after": 2})
        ended = await late.expect("ended")
        assert (ended["reason"], ended["text"]) == ("detached", "The agent has ended the chat.")
        await late.send({"type": "ack", "chat": "gone-1", "seq": ended["seq"]})
        await wait_for(lambda: "gone-1" not in daemon.dispatcher.finished)


class CrashingTransport(AiohttpTransport):
    """Raises a bug-like error for one button's ChasitorInit."""

    async def exchange(self, base_url: str, request: HttpRequest, timeout: float) -> HttpResponse:
        if request.path == "Chasitor/ChasitorInit" and b"573FAIL" in (request.body or b""):
            raise RuntimeError("boom")
        return await super().exchange(base_url, request, timeout)


async def test_a_crash_in_one_chat_ends_only_that_chat(
        sim: Simulator, tmp_path: Path, http: aiohttp.ClientSession) -> None:
    daemon = Daemon(bridged_config(sim, tmp_path), transport=CrashingTransport(100))
    await daemon.start()
    try:
        client = await connect(http, daemon.url, TOKEN)
        await client.start("fine", profile="echo")
        await client.expect("agent_joined", chat="fine")
        await client.start("doomed", profile="fail")
        ended = await client.expect("ended", chat="doomed")
        assert ended["reason"] == "failed"
        assert ended["text"] == (
            "Chat request failed to Salesforce. Reason: internal error in bridged (RuntimeError)")
        await client.send({"type": "message", "chat": "fine", "id": "m1", "text": "still ok"})
        assert (await client.expect("agent_message", chat="fine"))["text"] == "Echo: still ok"
    finally:
        await daemon.stop()
