"""No sequenced POST leaves before the state that records it is committed.

Otherwise a crash in between leaves the next process a sequence number behind what
Salesforce accepted (see tests/ops/test_kill_durability.py for the kills themselves).
"""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path
from typing import Any

import aiohttp

from bridged.simulators.liveagent import Simulator
from tests.conftest import TOKEN, bridged_config, running_bridged
from tests.ocp_client import connect


class FailingCommits:
    """The store's connection, whose transactions fail while ``failing`` (a full disk)."""

    def __init__(self, connection: Any) -> None:
        self.connection = connection
        self.failing = True
        self.failures = 0

    def execute(self, sql: str, *args: Any) -> Any:
        if sql == "BEGIN IMMEDIATE" and self.failing:
            self.failures += 1
            raise sqlite3.OperationalError("database or disk is full")
        return self.connection.execute(sql, *args)

    def executemany(self, sql: str, rows: Any) -> Any:
        return self.connection.executemany(sql, rows)

    def close(self) -> None:
        self.connection.close()


async def test_no_visitor_message_reaches_salesforce_while_commits_fail(
        sim: Simulator, tmp_path: Path, http: aiohttp.ClientSession) -> None:
    async with running_bridged(bridged_config(sim, tmp_path)) as daemon:
        client = await connect(http, daemon.url, TOKEN)
        await client.start("disk-1", profile="manual")
        await client.expect("agent_joined")
        (session,) = sim.sessions.values()
        failing = FailingCommits(daemon.store._connection)
        daemon.store._connection = failing  # type: ignore[assignment]
        await client.send({"type": "message", "chat": "disk-1", "id": "m1", "text": "full"})
        async with asyncio.timeout(10):  # the commit, and its retry a second later, failed
            while failing.failures < 2:
                await asyncio.sleep(0.01)
        assert session.visitor_messages == []
        failing.failing = False  # the disk has room again
        await client.expect("delivered", id="m1")
        assert session.visitor_messages == ["full"]
        assert session.record()["sequences_accepted"] == [1, 2]  # ChasitorInit, then m1
