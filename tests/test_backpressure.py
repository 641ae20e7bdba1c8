"""Backpressure end to end: a client that does not keep up makes Salesforce keep the messages."""

from __future__ import annotations

import asyncio
from pathlib import Path

import aiohttp

from bridged.simulator import Simulator
from tests.conftest import TOKEN, bridged_config, running_bridged
from tests.ocp import connect


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
        # the rest with Salesforce; keep-alive polls take nothing more.
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
