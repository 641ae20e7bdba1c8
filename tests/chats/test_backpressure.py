"""Backpressure end to end: a client that does not keep up makes Salesforce keep the messages."""

from __future__ import annotations

import asyncio
from pathlib import Path

import aiohttp

from bridged.simulators.liveagent import Simulator, SimulatorOptions, running_simulator
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


async def test_overload_slows_the_connection_that_causes_it_and_no_other(
        tmp_path: Path, http: aiohttp.ClientSession) -> None:
    # No agent joins by himself: visitor messages stay unanswered until the test says so.
    no_agent_yet = SimulatorOptions(hold_s=0.5, client_poll_timeout=5, join_delay_s=600,
                                    reply_delay_s=0.02)
    async with running_simulator(no_agent_yet) as sim, running_bridged(bridged_config(
            sim, tmp_path, overload_high=10, overload_low=5)) as daemon:
        flooder = await connect(http, daemon.url, TOKEN)
        for chat in ("a-1", "a-2"):
            await flooder.start(chat, profile="echo")
            await flooder.expect("queued", chat=chat)
        # 20 messages, held for agents who have not joined: the process's backlog passes
        # overload_high, and all of it is this connection's.
        for i in range(20):
            await flooder.send({"type": "message", "chat": f"a-{i % 2 + 1}", "id": f"m{i}",
                                "text": f"{i}"})
        async with asyncio.timeout(10):
            while not daemon.dispatcher.load.overloaded:
                await asyncio.sleep(0.01)

        # Another connection is read, and served, as if nothing were happening: its start,
        # its messages, its acks and its end.
        other = await connect(http, daemon.url, TOKEN)
        await other.start("b-1", profile="echo")
        await other.expect("queued", chat="b-1")
        a1_session, a2_session, b_session = sim.sessions.values()  # in order of start
        sim.agent_joins(b_session.id)
        await other.expect("agent_joined", chat="b-1")
        for i in range(3):
            await other.send({"type": "message", "chat": "b-1", "id": f"b{i}", "text": f"b{i}"})
            assert (await other.expect("delivered"))["id"] == f"b{i}"
            echo = await other.expect("agent_message", text=f"Echo: b{i}")
            await other.send({"type": "ack", "chat": "b-1", "seq": echo["seq"]})
        await other.send({"type": "end", "chat": "b-1"})
        ended = await other.expect("ended", chat="b-1")
        await other.send({"type": "ack", "chat": "b-1", "seq": ended["seq"]})
        await other.send({"type": "attach", "chat": "b-1", "after": 0})
        error = await other.expect("error", chat="b-1")
        assert error["code"] == "unknown_chat"  # acknowledged to the end: forgotten
        assert daemon.dispatcher.load.overloaded  # the flooder's backlog is still there

        # The flooder was the one slowed: what it sent past the mark was refused.
        busy = [await flooder.expect("error", code="busy") for _ in range(10)]
        assert [e["ref"] for e in busy] == [f"m{i}" for i in range(10, 20)]
        assert "NOT accepted" in busy[0]["detail"]

        # The flooder's own acks and ends are read too: ending a-1 answers its messages
        # and brings the load down to the low mark, and then it may send again.
        await flooder.send({"type": "ack", "chat": "a-1", "seq": 1})
        await flooder.send({"type": "end", "chat": "a-1"})
        frames = await flooder.events("a-1", until="ended")
        assert [f.get("ref") for f in frames if f["type"] == "error"] == [
            f"m{i}" for i in range(0, 10, 2)]
        assert not daemon.dispatcher.load.overloaded
        await flooder.send({"type": "message", "chat": "a-2", "id": "m20", "text": "20"})
        assert a1_session.end_reason == "client"
        sim.agent_joins(a2_session.id)
        delivered = [(await flooder.expect("delivered", chat="a-2"))["id"] for _ in range(6)]
        assert delivered == ["m1", "m3", "m5", "m7", "m9", "m20"]
