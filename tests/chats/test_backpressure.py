"""Backpressure end to end: a client that does not keep up makes Salesforce keep the messages."""

from __future__ import annotations

import asyncio
from pathlib import Path

import aiohttp
import pytest

from bridged.simulators.liveagent import Simulator
from tests.conftest import TOKEN, bridged_config, running_bridged
from tests.ocp_client import connect


async def test_a_client_that_does_not_ack_stops_the_chat_at_its_bound_and_loses_nothing(
        sim: Simulator, tmp_path: Path, http: aiohttp.ClientSession) -> None:
    config = bridged_config(sim, tmp_path, max_held_events=16)
    async with running_bridged(config) as daemon:
        client = await connect(http, daemon.url, TOKEN)
        await client.start("slow-1", profile="manual")
        await client.expect("agent_joined")
        other = await connect(http, daemon.url, TOKEN)
        await other.start("fast-1", profile="echo")
        await other.expect("agent_joined")
        chat = daemon.dispatcher.live["slow-1"]
        (session,) = [s for s in sim.sessions.values() if s.init["buttonId"].startswith("573MAN")]
        for wave in range(6):  # the agent types in bursts of 10
            for i in range(10):
                sim.agent_says(session.id, f"agent {wave * 10 + i}")
            await asyncio.sleep(0.2)
        # bridged takes events up to its bound (a batch may overshoot it once), then leaves
        # the rest with Salesforce; what a keep-alive poll brings is kept aside, not
        # acknowledged, and not held for OCP.
        await asyncio.sleep(1.0)
        assert 16 <= len(chat.held) <= 16 + 10
        assert session.record()["queued"] > 0  # Salesforce keeps what bridged did not take
        # Another chat on the same bridged (and connection kind) goes on meanwhile.
        await other.send({"type": "message", "chat": "fast-1", "id": "m", "text": "hi"})
        await other.expect("agent_message", text="Echo: hi")
        # The client catches up: every message arrives once, in order.
        texts: list[str] = []
        seen_seqs: list[int] = []
        async with asyncio.timeout(20):
            while len(texts) < 60:
                frame = await client.next()
                if frame.get("chat") != "slow-1":
                    continue
                seen_seqs.append(frame["seq"])
                if frame["type"] == "agent_message":
                    texts.append(frame["text"])
                await client.send({"type": "ack", "chat": "slow-1", "seq": frame["seq"]})
        assert texts == [f"agent {i}" for i in range(60)]
        assert seen_seqs == sorted(set(seen_seqs))


async def test_a_stalled_connection_holds_its_chat_at_the_bound_and_others_flow(
        sim: Simulator, tmp_path: Path, http: aiohttp.ClientSession) -> None:
    config = bridged_config(sim, tmp_path, max_held_events=32)
    async with running_bridged(config) as daemon:
        stalled = await connect(http, daemon.url, TOKEN)
        await stalled.start("stall-1", profile="manual")
        await stalled.expect("agent_joined")
        session = list(sim.sessions.values())[-1]
        # From now on the client reads nothing: its socket buffers fill, bridged's writer
        # blocks, the chat's events pile up to the bound, and then Salesforce keeps the rest.
        big = "x" * 4000
        for i in range(200):
            sim.agent_says(session.id, f"{i} {big}")
            if i % 20 == 19:
                await asyncio.sleep(0.1)
        await asyncio.sleep(1.0)
        chat = daemon.dispatcher.live["stall-1"]
        assert len(chat.held) <= 32 + 20  # the bound, plus at most one batch
        assert session.record()["queued"] > 0
        # Another connection is not affected.
        other = await connect(http, daemon.url, TOKEN)
        await other.start("free-1", profile="echo")
        await other.send({"type": "message", "chat": "free-1", "id": "m", "text": "hi"})
        await other.expect("agent_message", text="Echo: hi")
        # The stalled client wakes up: all 200, once, in order.
        texts: list[str] = []
        async with asyncio.timeout(30):
            while len(texts) < 200:
                frame = await stalled.next()
                if frame.get("chat") == "stall-1" and "seq" in frame:
                    if frame["type"] == "agent_message":
                        texts.append(frame["text"].split(" ")[0])
                    await stalled.send({"type": "ack", "chat": "stall-1", "seq": frame["seq"]})
        assert texts == [str(i) for i in range(200)]


async def test_global_overload_pauses_reading_until_the_load_falls(
        tmp_path: Path, http: aiohttp.ClientSession) -> None:
    from bridged.simulators.liveagent import SimulatorOptions, running_simulator
    slow_join = SimulatorOptions(hold_s=0.5, client_poll_timeout=5, join_delay_s=1.0,
                                 reply_delay_s=0.02)
    async with running_simulator(slow_join) as sim, running_bridged(bridged_config(
            sim, tmp_path, overload_high=5, overload_low=2)) as daemon:
        client = await connect(http, daemon.url, TOKEN)
        await client.start("load-1", profile="echo")
        await client.expect("queued")
        for i in range(6):  # held until the agent joins, about a second from now
            await client.send({"type": "message", "chat": "load-1", "id": f"m{i}",
                               "text": f"{i}"})
        await asyncio.sleep(0.2)
        assert daemon.dispatcher.load.overloaded
        other = await connect(http, daemon.url, TOKEN)  # the upgrade is not an envelope
        await other.start("load-2", profile="echo")
        with pytest.raises(TimeoutError):
            await other.expect("queued", timeout=0.4)  # not read while overloaded
        # The agent joins, the messages go out, the load falls: reading resumes.
        await other.expect("queued", chat="load-2", timeout=10)
        assert not daemon.dispatcher.load.overloaded
        delivered = [f["id"] for f in client.received if f.get("type") == "delivered"]
        delivered += [(await client.expect("delivered"))["id"] for _ in range(6 - len(delivered))]
        assert sorted(delivered) == [f"m{i}" for i in range(6)]
