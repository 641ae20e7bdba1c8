"""Chats moved between live nodes: any node serves any chat, SIGTERM hands chats over.

Real processes on 127.0.0.1: two ``bridged run`` nodes on one real redis-server, the Live
Agent and Enhanced Chat simulators; the test client plays OCP and the load balancer. The
oracles are the simulators' records (a second concurrent poll ends a Live Agent session with
409, so "not ended" proves no two polls at once; every visitor message they accepted; the
time each poll arrived and was answered) and what OCP received (every agent event once, in
order: ``seq`` contiguous across nodes).

The simulator here holds an idle poll for 3 s, so a node that waited out a poll would leave
a gap of more than that between two polls; a move at a safe point leaves none.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import signal
import time
import urllib.request
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import msgspec
import pytest

from tests.ocp_client import connect
from tests.ops.test_processes import reattach, say
from tests.processes import BridgedProcess, SimulatorProcess
from tests.redis_server import RedisServer
from tests.salesforce.messaging import test_restart_e2e as messaging
from tests.test_cluster_e2e import Followed, nodes, start, visitor

HOLD_S = 3.0


@pytest.fixture
async def slow_simulator(tmp_path: Path) -> AsyncIterator[SimulatorProcess]:
    """The simulators, holding an idle Live Agent poll for HOLD_S seconds."""
    simulator = await asyncio.to_thread(SimulatorProcess, tmp_path, hold_s=HOLD_S,
                                        client_poll_timeout=10.0)
    try:
        yield simulator
    finally:
        simulator.stop()


def metric(node: BridgedProcess, name: str) -> float:
    """The sum of a metric's samples on ``node``'s /metrics (0 if it has none)."""
    with urllib.request.urlopen(f"{node.health}/metrics", timeout=5) as response:
        text = response.read().decode()
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name) and line[len(name)] in " {":
            total += float(line.rsplit(" ", 1)[1])
    return total


def polls(record: dict[str, Any]) -> list[dict[str, Any]]:
    """The session's Messages polls, in the order they arrived."""
    found = [r for r in record["requests"] if r["path"].endswith("/Messages")]
    return sorted(found, key=lambda r: r["received"])


@contextlib.asynccontextmanager
async def agent_talking(simulator: SimulatorProcess, talk: Followed, first: int,
                        count: int) -> AsyncIterator[None]:
    """The agent says ``agent first`` .. ``agent first+count-1``, one every 0.2 s."""
    async def speak() -> None:
        for i in range(first, first + count):
            await say(simulator, talk, f"agent {i}")
            await asyncio.sleep(0.2)
    task = asyncio.create_task(speak())
    try:
        yield
        await task
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def read_until_closed(talk: Followed) -> int | None:
    """Take the events that still come until the node closes the connection; its code."""
    assert talk.client is not None
    ws = talk.client.ws
    while True:
        msg = await ws.receive(timeout=10)
        if msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSING,
                        aiohttp.WSMsgType.CLOSED):
            return ws.close_code
        frame = msgspec.json.decode(msg.data)
        if frame.get("chat") != talk.chat or "seq" not in frame:
            continue
        assert frame["seq"] == talk.last_seq + 1, (frame, talk.last_seq)
        talk.last_seq = frame["seq"]
        if frame["type"] == "agent_message":
            talk.agent_texts.append(frame["text"])
        elif frame["type"] == "delivered":
            talk.delivered.append(frame["id"])


async def check_once(talk: Followed, simulator: SimulatorProcess, agent: int,
                     visitors: list[int]) -> dict[str, Any]:
    assert talk.agent_texts == [f"agent {i}" for i in range(agent)]
    for i in visitors:
        assert f"v{i}" in talk.delivered
    record = await asyncio.to_thread(simulator.session, talk.session_id)
    assert record["visitor_messages"] == [f"visitor {i}" for i in visitors]
    assert not record["ended"], record["end_reason"]  # no second concurrent poll, ever
    assert len(await asyncio.to_thread(simulator.sessions)) == 1  # no new session
    return record


async def test_attach_on_another_live_node_moves_the_chat_there(
        tmp_path: Path, slow_simulator: SimulatorProcess, redis_server: RedisServer) -> None:
    simulator = slow_simulator
    async with aiohttp.ClientSession() as http, nodes(
            tmp_path, simulator, redis_server.url, redis_server.url) as (a, b):
        talk = await start(a, http, simulator, "move-1")
        for i in range(2):
            await visitor(talk, f"v{i}", f"visitor {i}")
            await say(simulator, talk, f"agent {i}")
        await talk.pump(lambda c: len(c.agent_texts) == 2 and len(c.delivered) == 2)
        # The agent is silent: a's poll is held. OCP's connection moves to b (a stays up),
        # and sends at once: b forwards to a until a lets go, at its poll's return (which
        # brings agent 2: an event made on a in the move window, which OCP gets from b).
        await reattach(talk, b, http)
        await visitor(talk, "v2", "visitor 2")
        await visitor(talk, "v3", "visitor 3")
        await say(simulator, talk, "agent 2")
        await say(simulator, talk, "agent 3")
        await talk.pump(lambda c: len(c.agent_texts) == 4 and {"v2", "v3"} <= set(c.delivered))
        # The chat is b's now: it goes on there.
        await visitor(talk, "v4", "visitor 4")
        await say(simulator, talk, "agent 4")
        await talk.pump(lambda c: len(c.agent_texts) == 5 and "v4" in c.delivered)
        assert a.process.poll() is None  # a live node let go of it
        moves = await asyncio.to_thread(metric, a, "bridged_cluster_moves_total")
        forwarded = await asyncio.to_thread(
            metric, b, "bridged_cluster_forwarded_commands_total")
        taken = await asyncio.to_thread(metric, b, "bridged_cluster_takeovers_total")
    assert talk.reattaches == 0  # no not_attached: the attach on b was served there
    assert (moves, taken) == (1, 1)
    assert forwarded >= 1
    await check_once(talk, simulator, 5, [0, 1, 2, 3, 4])
    log = (tmp_path / "node-a.log").read_text()
    assert '"chat_moved"' in log and '"visitor 2"' not in log  # no texts in the logs


async def test_a_refusal_by_the_holder_reaches_ocp_through_the_attach_node(
        tmp_path: Path, slow_simulator: SimulatorProcess, redis_server: RedisServer) -> None:
    simulator = slow_simulator
    # a takes one command in at a time: a burst forwarded to it is mostly refused (busy).
    a = await asyncio.to_thread(BridgedProcess, tmp_path, simulator, name="node-a", node="a",
                                redis_url=redis_server.url,
                                server_options={"mailbox_size": 1, "max_pending_messages": 1})
    try:
        b = await asyncio.to_thread(BridgedProcess, tmp_path, simulator, name="node-b",
                                    node="b", redis_url=redis_server.url)
    except BaseException:
        a.stop()
        raise
    ids = [f"v{i}" for i in range(10)]
    busy: list[str] = []
    try:
        async with aiohttp.ClientSession() as http:
            talk = await start(a, http, simulator, "busy-1")
            await reattach(talk, b, http)  # a's poll is held: the move waits for it
            for message_id in ids:
                await visitor(talk, message_id, f"visitor {message_id}")
            assert talk.client is not None
            async with asyncio.timeout(30):
                while set(talk.delivered) | set(busy) != set(ids):
                    frame = await talk.client.next()
                    if frame["type"] == "error":
                        assert frame["code"] == "busy", frame
                        busy.append(frame["ref"])
                        continue
                    if frame.get("chat") == talk.chat and "seq" in frame:
                        assert frame["seq"] == talk.last_seq + 1
                        talk.last_seq = frame["seq"]
                        if frame["type"] == "delivered":
                            talk.delivered.append(frame["id"])
    finally:
        a.stop()
        b.stop()
    assert busy  # refused on a (b's own queue is far from full), told to OCP by b
    assert not set(busy) & set(talk.delivered)  # a refused message is never sent
    record = await asyncio.to_thread(simulator.session, talk.session_id)
    assert record["visitor_messages"] == [f"visitor {m}" for m in ids if m in talk.delivered]
    assert not record["ended"]


async def test_the_holder_killed_mid_move_and_the_attach_takes_the_chat_over(
        tmp_path: Path, slow_simulator: SimulatorProcess, redis_server: RedisServer) -> None:
    simulator = slow_simulator
    async with aiohttp.ClientSession() as http, nodes(
            tmp_path, simulator, redis_server.url, redis_server.url) as (a, b):
        talk = await start(a, http, simulator, "move-2")
        await visitor(talk, "v0", "visitor 0")
        await say(simulator, talk, "agent 0")
        await talk.pump(lambda c: c.agent_texts == ["agent 0"] and c.delivered == ["v0"])
        await reattach(talk, b, http)  # b asks a to move the chat; a's poll is held
        await visitor(talk, "v1", "visitor 1")
        await asyncio.to_thread(wait_for_log, tmp_path / "node-b.log", "chat_move_asked")
        a.signal(signal.SIGKILL)  # mid-move: a never lets go
        assert a.wait() == -signal.SIGKILL
        await say(simulator, talk, "agent 1")
        # b takes the chat over once a's lease is gone (the poll a left waited out), and
        # applies what it forwarded: v1 reaches Salesforce once.
        await talk.pump(lambda c: len(c.agent_texts) == 2 and "v1" in c.delivered)
    await check_once(talk, simulator, 2, [0, 1])


async def test_a_chat_id_moved_away_and_ended_can_be_started_again_on_its_first_node(
        tmp_path: Path, simulator: SimulatorProcess, redis_server: RedisServer) -> None:
    async with aiohttp.ClientSession() as http, nodes(
            tmp_path, simulator, redis_server.url, redis_server.url) as (a, b):
        talk = await start(a, http, simulator, "again-1")
        await reattach(talk, b, http)
        await visitor(talk, "v0", "visitor 0")
        await talk.pump(lambda c: c.delivered == ["v0"])  # moved to b
        await asyncio.to_thread(simulator.action, talk.session_id, "end")
        assert talk.client is not None
        ended = await talk.client.expect("ended")
        await talk.client.send({"type": "ack", "chat": "again-1", "seq": ended["seq"]})
        # The id is free again: a new chat of it on a (which let go of the old one).
        client = await connect(http, a.url, BridgedProcess.TOKEN)
        async with asyncio.timeout(20):
            while True:
                await client.start("again-1", profile="manual")
                frame = await client.next()
                if frame["type"] != "error":
                    break
                assert frame["code"] == "chat_exists"  # until b has forgotten the old one
                await asyncio.sleep(0.1)
        assert frame["type"] == "queued" and frame["seq"] == 1
        assert (await client.expect("agent_joined"))["seq"] == 2
    assert len(await asyncio.to_thread(simulator.sessions)) == 2


def wait_for_log(path: Path, event: str) -> None:
    """Wait (bounded) until a node's log has ``event``."""
    deadline = time.monotonic() + 20
    while f'"event":"{event}"' not in path.read_text():
        assert time.monotonic() < deadline, f"no {event} in {path.name}"
        time.sleep(0.05)


@pytest.mark.parametrize("reconnect", ["at-once", "after-exit"])
async def test_sigterm_hands_the_chats_over_with_no_poll_gap(
        tmp_path: Path, slow_simulator: SimulatorProcess, redis_server: RedisServer,
        reconnect: str) -> None:
    # at-once: OCP's attach on b asks for the chat; after-exit: b's scan finds it released
    # (a gave its lease up), before OCP comes back.
    simulator = slow_simulator
    async with aiohttp.ClientSession() as http, nodes(
            tmp_path, simulator, redis_server.url, redis_server.url) as (a, b):
        talk = await start(a, http, simulator, "term-1")
        for i in range(2):
            await visitor(talk, f"v{i}", f"visitor {i}")
            await say(simulator, talk, f"agent {i}")
        await talk.pump(lambda c: len(c.agent_texts) == 2 and len(c.delivered) == 2)
        async with agent_talking(simulator, talk, 2, 10):
            await talk.pump(lambda c: len(c.agent_texts) >= 4)
            a.signal(signal.SIGTERM)
            assert await read_until_closed(talk) == 1001  # OCP reconnects to another node
            if reconnect == "after-exit":
                assert await asyncio.to_thread(a.wait) == 0
                await asyncio.to_thread(wait_for_log, tmp_path / "node-b.log",
                                        "chat_taken_over")
            await reattach(talk, b, http)
            await visitor(talk, "v2", "visitor 2")
            await visitor(talk, "v3", "visitor 3")
            await talk.pump(lambda c: len(c.agent_texts) == 12
                            and {"v2", "v3"} <= set(c.delivered))
        assert a.wait() == 0
    assert talk.reattaches == 0
    record = await check_once(talk, simulator, 12, [0, 1, 2, 3])
    # Never two polls at once, and the longest time without a poll out (the hand-over's)
    # is shorter than one idle poll's hold: b did not wait out a's last poll.
    seen = polls(record)
    gaps = [later["received"] - earlier["answered"]
            for earlier, later in itertools.pairwise(seen)]
    assert min(gaps) >= 0
    assert max(gaps) < HOLD_S, gaps
    assert '"event":"chats_handed_over"' in (tmp_path / "node-a.log").read_text()


async def test_sigterm_with_a_poll_held_past_the_budget_falls_back_to_waiting_it_out(
        tmp_path: Path, slow_simulator: SimulatorProcess, redis_server: RedisServer) -> None:
    simulator = slow_simulator
    async with aiohttp.ClientSession() as http, nodes(
            tmp_path, simulator, redis_server.url, redis_server.url) as (a, b):
        talk = await start(a, http, simulator, "term-2")
        await visitor(talk, "v0", "visitor 0")
        await talk.pump(lambda c: c.delivered == ["v0"])
        # The agent is silent: a's poll is held for HOLD_S, past a's drain (2 s of 8).
        a.signal(signal.SIGTERM)
        assert await read_until_closed(talk) == 1001
        assert a.wait() == 0
        await reattach(talk, b, http)
        await say(simulator, talk, "agent 0")
        await visitor(talk, "v1", "visitor 1")
        await talk.pump(lambda c: c.agent_texts == ["agent 0"] and "v1" in c.delivered)
    await check_once(talk, simulator, 1, [0, 1])  # b waited out a's last poll: no 409
    log = (tmp_path / "node-a.log").read_text()
    assert '"event":"chats_handed_over","logger":"bridged.ops.cluster","released":0,"left":1' in log


async def test_start_of_a_chat_live_on_another_node_is_chat_exists(
        tmp_path: Path, simulator: SimulatorProcess, redis_server: RedisServer) -> None:
    async with aiohttp.ClientSession() as http, nodes(
            tmp_path, simulator, redis_server.url, redis_server.url) as (a, b):
        talk = await start(a, http, simulator, "dup-1")
        other = await connect(http, b.url, BridgedProcess.TOKEN)
        await other.start("dup-1", profile="manual")
        error = await other.expect("error")
        assert (error["code"], error["chat"], error["ref"]) == ("chat_exists", "dup-1", "start")
        # The chat goes on on a, untouched.
        await visitor(talk, "v0", "visitor 0")
        await say(simulator, talk, "agent 0")
        await talk.pump(lambda c: c.agent_texts == ["agent 0"] and c.delivered == ["v0"])
    assert len(await asyncio.to_thread(simulator.sessions)) == 1


async def test_an_enhanced_chat_across_two_nodes_killed_then_moved(
        tmp_path: Path, simulator: SimulatorProcess, redis_server: RedisServer) -> None:
    async with aiohttp.ClientSession() as http, nodes(
            tmp_path, simulator, redis_server.url, redis_server.url) as (a, b):
        started = await messaging.start(a, http, simulator, "m-cluster-1")
        talk = Followed("m-cluster-1")
        talk.client, talk.session_id = started.client, started.session_id
        talk.last_seq = started.last_seq
        for i in range(2):
            await visitor(talk, f"v{i}", f"visitor {i}")
            await messaging.say(simulator, talk, f"agent {i}")
        await talk.pump(lambda c: len(c.agent_texts) == 2 and len(c.delivered) == 2)
        await visitor(talk, "v2", "visitor 2")
        await messaging.say(simulator, talk, "agent 2")
        a.signal(signal.SIGKILL)
        assert a.wait() == -signal.SIGKILL
        await messaging.say(simulator, talk, "agent 3")
        # b takes the chat over; OCP sends v2 again (it got no answer), same id.
        await reattach(talk, b, http)
        await visitor(talk, "v2", "visitor 2")
        await visitor(talk, "v3", "visitor 3")
        await talk.pump(lambda c: len(c.agent_texts) == 4 and {"v2", "v3"} <= set(c.delivered))
        # a comes back (a new process, the same name); OCP's connection goes there: the
        # chat moves from b to a, live.
        a2 = await asyncio.to_thread(BridgedProcess, tmp_path, simulator, name="node-a2",
                                     node="a", redis_url=redis_server.url)
        try:
            await reattach(talk, a2, http)
            await visitor(talk, "v4", "visitor 4")
            await messaging.say(simulator, talk, "agent 4")
            await talk.pump(lambda c: len(c.agent_texts) == 5 and "v4" in c.delivered)
            moves = await asyncio.to_thread(metric, b, "bridged_cluster_moves_total")
        finally:
            a2.stop()
    assert moves == 1
    assert talk.reattaches == 0
    assert talk.agent_texts == [f"agent {i}" for i in range(5)]
    kept = await asyncio.to_thread(messaging.record, simulator, talk)
    assert kept["open"] and kept["visitor_messages"] == 5
    assert kept["duplicates"] == []
    streams = (await asyncio.to_thread(simulator.messaging, "GET", "streams"))["streams"]
    assert [s["concurrent"] for s in streams] == [0] * len(streams)


