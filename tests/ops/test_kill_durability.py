"""kill -9 at many instants, in every durability mode: each visitor message reaches the agent once.

Real processes (tests/processes.py): the simulator outlives a bridged that is killed again and
again while OCP sends messages. After each kill a new bridged takes the chat over from the
state directory, OCP attaches, sends again every message it has no ``delivered`` for (same id,
as a client does that got no answer), and sends new ones. The kills land at a different instant
each time: right after the messages were sent, a few milliseconds later, while the simulator
holds back the answer to a POST it has applied, and while commits fail (the bridged process may
not write its files, as on a full disk). The verdict is the simulator's record of what reached
the agent: every text exactly once, and ``delivered`` only for texts the agent has.
"""

from __future__ import annotations

import asyncio
import contextlib
import resource
import signal
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.ocp_client import OcpClient, connect
from tests.processes import BridgedProcess, SimulatorProcess

# [state] options of each durability mode, and whether commits fail in it.
MODES: dict[str, tuple[dict[str, Any], bool]] = {
    "normal": ({}, False),
    "full": ({"synchronous": "full"}, False),
    "normal-commit-window": ({"commit_interval_ms": 100}, False),
    "full-commit-window": ({"synchronous": "full", "commit_interval_ms": 100}, False),
    "failing-commits": ({}, True),
}
# When each cycle kills bridged, after sending its new messages: a different instant each time.
KILL_AFTER_S = (0.0, 0.005, 0.02, 0.06, 0.25)
NEW_PER_CYCLE = 4


class Visitor:
    """The OCP side of one chat across bridged processes: what it sent, what it was told."""

    def __init__(self, chat: str) -> None:
        self.chat = chat
        self.sent: dict[str, str] = {}  # id -> text, in the order first sent
        self.delivered: set[str] = set()
        self.last_seq = 0
        self.client: OcpClient | None = None
        self.session_id = ""

    async def read(self) -> None:
        """Take events (and ack them) until the connection goes."""
        assert self.client is not None
        with contextlib.suppress(AssertionError, aiohttp.ClientError, ConnectionError):
            while True:
                frame = await self.client.next(timeout=60)
                if frame.get("chat") != self.chat or "seq" not in frame:
                    continue
                assert frame["seq"] == self.last_seq + 1, (frame, self.last_seq)
                self.last_seq = frame["seq"]
                if frame["type"] == "delivered":
                    self.delivered.add(frame["id"])
                elif frame["type"] == "ended":
                    raise RuntimeError(f"the chat ended: {frame}")
                await self.client.send({"type": "ack", "chat": self.chat, "seq": frame["seq"]})

    async def send(self, message_id: str, text: str) -> None:
        assert self.client is not None
        self.sent.setdefault(message_id, text)
        with contextlib.suppress(ConnectionError, aiohttp.ClientError):
            await self.client.send({"type": "message", "chat": self.chat, "id": message_id,
                                    "text": text})

    async def send_again_what_is_unconfirmed(self) -> None:
        for message_id, text in list(self.sent.items()):
            if message_id not in self.delivered:
                await self.send(message_id, text)


async def run_cycles(tmp_path: Path, simulator: SimulatorProcess, http: aiohttp.ClientSession,
                     options: dict[str, Any], failing: bool) -> Visitor:
    visitor = Visitor("kill-1")
    for cycle in range(len(KILL_AFTER_S) + 1):
        final = cycle == len(KILL_AFTER_S)
        bridged = await asyncio.to_thread(BridgedProcess, tmp_path, simulator,
                                          name=f"bridged-{cycle}", state_options=options)
        reader: asyncio.Task[None] | None = None
        try:
            visitor.client = await connect(http, bridged.url, BridgedProcess.TOKEN)
            if cycle == 0:
                await visitor.client.start(visitor.chat, profile="manual")
                joined = await visitor.client.expect("agent_joined")
                visitor.last_seq = joined["seq"]
                (summary,) = await asyncio.to_thread(simulator.sessions)
                visitor.session_id = summary["id"]
            else:
                await visitor.client.send({"type": "attach", "chat": visitor.chat,
                                           "after": visitor.last_seq})
            reader = asyncio.create_task(visitor.read())
            await visitor.send_again_what_is_unconfirmed()
            if final:
                async with asyncio.timeout(30):
                    while visitor.delivered != set(visitor.sent):
                        await asyncio.sleep(0.02)
                break
            if failing:
                # From now on no write of the bridged process succeeds (commits fail), as on
                # a full disk; in the last cycle the disk comes back before the kill.
                await asyncio.to_thread(resource.prlimit, bridged.pid, resource.RLIMIT_FSIZE,
                                        (1, resource.RLIM_INFINITY))
            if cycle % 2 == 1:
                # The next POST is applied by Salesforce, its answer held back past the kill.
                await asyncio.to_thread(simulator.action, visitor.session_id, "delay-next",
                                        {"resource": "ChatMessage", "seconds": 0.5,
                                         "when": "after"})
            for i in range(NEW_PER_CYCLE):
                await visitor.send(f"c{cycle}-{i}", f"cycle {cycle} message {i}")
            await asyncio.sleep(KILL_AFTER_S[cycle])
            if failing and cycle == len(KILL_AFTER_S) - 1:
                await asyncio.to_thread(resource.prlimit, bridged.pid, resource.RLIMIT_FSIZE,
                                        (resource.RLIM_INFINITY, resource.RLIM_INFINITY))
                await asyncio.sleep(1.2)  # a failed commit is tried again a second later
            bridged.signal(signal.SIGKILL)
            assert bridged.wait() == -signal.SIGKILL
        finally:
            bridged.stop()
            if reader is not None:
                reader.cancel()
                await asyncio.gather(reader, return_exceptions=True)
            if visitor.client is not None:
                await visitor.client.close()
    return visitor


@pytest.fixture
async def simulator(tmp_path: Path) -> AsyncIterator[SimulatorProcess]:
    """The simulator, with a session that outlives a few restarts without a poll (a resumed
    chat waits for the poll the killed process left behind before it polls again)."""
    process = await asyncio.to_thread(SimulatorProcess, tmp_path, client_poll_timeout=30)
    try:
        yield process
    finally:
        process.stop()


@pytest.mark.parametrize("mode", list(MODES))
async def test_kill_9_at_any_instant_leaves_each_message_at_the_agent_once(
        tmp_path: Path, simulator: SimulatorProcess, mode: str) -> None:
    options, failing = MODES[mode]
    async with aiohttp.ClientSession() as http:
        visitor = await run_cycles(tmp_path, simulator, http, options, failing)
    record = await asyncio.to_thread(simulator.session, visitor.session_id)
    at_agent = Counter(record["visitor_messages"])
    assert at_agent == Counter(visitor.sent.values()), "each message at the agent exactly once"
    assert {visitor.sent[i] for i in visitor.delivered} <= set(at_agent)
    assert not record["ended"]
