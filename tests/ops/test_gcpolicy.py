"""The "growth" garbage-collector policy, and the promise it rests on: a chat makes no cycles."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import gc
import sys
import types
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from bridged.ops.daemon import Daemon
from bridged.ops.gcpolicy import GrowthCollector
from tests.conftest import running_bridged
from tests.ocp_client import OcpClient, connect
from tests.salesforce.messaging.e2e import TOKEN as MESSAGING_TOKEN
from tests.salesforce.messaging.e2e import config as messaging_config
from tests.salesforce.messaging.e2e import messaging_simulator

Connect = Callable[..., Awaitable[OcpClient]]


@pytest.fixture
def collector() -> Iterator[GrowthCollector]:
    policy = GrowthCollector(growth=1.0, floor=20_000)
    policy.start()
    try:
        yield policy
    finally:
        policy.stop()


class _Node:
    def __init__(self) -> None:
        self.me = self  # a reference cycle: only the collector frees it


def test_the_automatic_collections_are_off_and_come_back(collector: GrowthCollector) -> None:
    assert not gc.isenabled()
    collector.stop()
    assert gc.isenabled()


def test_a_steady_heap_is_never_collected(collector: GrowthCollector) -> None:
    collector.collect()
    for _ in range(50):  # objects come and go: the heap does not grow
        garbage = [{"n": n} for n in range(5_000)]
        del garbage
        assert not collector.due()


def test_cycles_are_freed_once_the_heap_grew_by_the_growth(collector: GrowthCollector) -> None:
    collector.collect()
    grown_by = collector.limit - sys.getallocatedblocks()
    leaked = 0
    while not collector.due():
        _Node()  # each one leaks (an object and its dict) until a collection
        leaked += 1
        assert leaked <= 2 * grown_by, "never due"
    assert 2 * leaked >= grown_by * 0.9  # not before the heap grew by that much
    assert collector.collect() >= leaked * 0.9
    assert not collector.due()


async def test_it_collects_on_its_own_when_due() -> None:
    policy = GrowthCollector(growth=1.0, floor=1_000, interval=0.01)
    policy.start()
    runner = asyncio.create_task(policy.run())
    try:
        for _ in range(policy.limit - sys.getallocatedblocks()):
            _Node()
        for _ in range(500):
            if policy.collections:
                break
            await asyncio.sleep(0.01)
        assert policy.collections >= 1
        assert not policy.due()
    finally:
        runner.cancel()
        await asyncio.gather(runner, return_exceptions=True)
        policy.stop()


def _where(obj: Any) -> str:
    """Where a garbage object comes from: its code's file, or its type's module."""
    if isinstance(obj, types.FrameType):
        return obj.f_code.co_filename
    if isinstance(obj, types.CoroutineType):
        return obj.cr_code.co_filename
    if isinstance(obj, types.FunctionType):
        return obj.__code__.co_filename
    if isinstance(obj, types.MethodType):
        return type(obj.__self__).__module__
    return type(obj).__module__


def _bridged_garbage() -> collections.Counter[str]:
    """What the collector finds that bridged's daemon made (not its simulator, not tests)."""
    gc.collect()
    found: collections.Counter[str] = collections.Counter()
    for obj in gc.garbage:
        where = _where(obj).replace("/", ".")
        if "bridged" in where and "simulators" not in where and "tests" not in where:
            found[f"{type(obj).__qualname__} from {_where(obj)}"] += 1
    gc.garbage.clear()
    return found


async def _whole_lives_leave_no_cycles(client: OcpClient, daemon: Daemon, profile: str,
                                       agent_text: str = "agent_message") -> None:
    """Chats start, relay messages both ways and end with the collector off; whatever it
    then finds of bridged's would only be freed by a full collection."""
    chats = [f"cyc-{i}" for i in range(4)]
    was_enabled = gc.isenabled()
    gc.collect()
    gc.disable()
    gc.set_debug(gc.DEBUG_SAVEALL)
    try:
        for chat in chats:
            await client.start(chat, profile=profile)
        for chat in chats:
            await client.expect("agent_joined", chat=chat)
        for n in range(10):
            for chat in chats:
                await client.send({"type": "message", "chat": chat, "id": f"m{n}",
                                   "text": "hello"})
            for chat in chats:
                await client.expect(agent_text, chat=chat)
        for chat in chats:
            await client.send({"type": "end", "chat": chat})
        for chat in chats:
            ended = await client.expect("ended", chat=chat)
            await client.send({"type": "ack", "chat": chat, "seq": ended["seq"]})
        for _ in range(100):  # every chat is forgotten once its last event is acknowledged
            if not any(chat in daemon.dispatcher.live for chat in chats):
                break
            await asyncio.sleep(0.05)
        assert not any(chat in daemon.dispatcher.live for chat in chats)
        await asyncio.sleep(0.2)  # the actors' tasks finish
        assert _bridged_garbage() == {}
    finally:
        gc.set_debug(0)
        gc.garbage.clear()
        if was_enabled:
            gc.enable()


async def test_a_live_agent_chats_whole_life_leaves_no_cycles(ocp: Connect,
                                                             bridged: Daemon) -> None:
    # The policy's premise: what bridged drops, reference counting frees.
    await _whole_lives_leave_no_cycles(await ocp(), bridged, "echo")


async def test_an_enhanced_chat_conversations_whole_life_leaves_no_cycles(
        tmp_path: Path) -> None:
    async with messaging_simulator() as sim, \
            running_bridged(messaging_config(sim, tmp_path)) as daemon, \
            aiohttp.ClientSession() as http:
        client = await connect(http, daemon.url, MESSAGING_TOKEN)
        await _whole_lives_leave_no_cycles(client, daemon, "m_echo")


@contextlib.contextmanager
def _policy(live: list[int], **kwargs: int) -> Iterator[GrowthCollector]:
    """A started "growth" policy (growth 1.0, floor 20,000) over ``live[0]`` chats; after
    the block, the automatic collections back and the heap collected."""
    policy = GrowthCollector(growth=1.0, floor=20_000, population=lambda: live[0], **kwargs)
    policy.start()
    try:
        yield policy
    finally:
        policy.stop()
        gc.collect()


def test_more_chats_on_a_larger_heap_are_no_growth() -> None:
    # The heap per live chat is what must grow: the same chats on a heap grown past the
    # limit are due, while twice the chats on that heap are not.
    live = [2_000]
    with _policy(live) as policy:
        policy.collect()
        alone = policy.limit
        kept = [_Node() for _ in range(alone - sys.getallocatedblocks() + 1_000)]
        assert policy.due()  # the same chats: due
        live[0] = 4_000
        assert policy.limit >= 2 * alone - 2 * 20_000  # the base scaled with the chats
        assert not policy.due()  # grown as far as doubled chats explain
        del kept


def test_a_handful_of_chats_measures_nothing_per_chat() -> None:
    # At start-up, a heap left by 3 chats is not divided by 3 (each would seem to cost a
    # third of the fixed heap, and any later chat count would postpone every collection).
    live = [3]
    with _policy(live, chat_blocks=500, least_population=1_000) as policy:
        policy.collect()
        alone = policy.limit
        live[0] = 2_003
        assert policy.limit == alone + 2 * 2_000 * 500  # each more chat: 500 blocks, doubled


def _grown_by(blocks: int) -> list[object]:
    """Objects that grow the heap by ``blocks`` memory blocks (kept while the list is)."""
    kept: list[object] = []
    target = sys.getallocatedblocks() + blocks
    while sys.getallocatedblocks() < target:
        kept.extend(object() for _ in range(1_000))
    return kept


def test_chats_that_start_after_start_up_are_no_growth() -> None:
    # The fixed heap of start-up is not counted as chats: 2,000 chats started since, each
    # holding a little more than the fixed heap's thousandth, make no collection due (they
    # did: a full collection during a load test's saturation).
    live = [0]
    with _policy(live, chat_blocks=500) as policy:
        fixed = sys.getallocatedblocks()
        per_chat = max(400, fixed // 1_000 + 50)
        assert per_chat < 2 * 500
        live[0] = 2_000
        kept = _grown_by(2_000 * per_chat)
        assert not policy.due()
        # Past double the fixed heap and what 2,000 chats of 500 blocks explain: due.
        more = _grown_by(fixed + 2_000 * (2 * 500 - per_chat) + 40_000)
        assert policy.due()
        del kept, more


def test_a_collection_measures_what_a_chat_holds() -> None:
    # Chats heavier than assumed: the collection that finds them live measures them, and
    # the next one is due only once that heap per chat has grown by the growth.
    live = [0]
    with _policy(live, chat_blocks=100, least_population=1_000) as policy:
        live[0] = 1_000
        kept = _grown_by(1_000 * 1_500)
        assert policy.due()
        policy.collect()
        assert not policy.due()
        live[0] = 2_000  # twice the chats, each as heavy: no growth
        more = _grown_by(1_000 * 1_500)
        assert not policy.due()
        heavier = _grown_by(policy.limit - sys.getallocatedblocks() + 1_000)
        assert policy.due()  # each of as many chats holds twice as much
        del kept, more, heavier


def test_chats_that_end_leave_no_growth_behind() -> None:
    # Three quarters of the chats end and what they made stays (in a load test their OCP
    # connections stayed open): no collection is due, as the busiest moment since the last
    # collection explains that heap (counting only the chats live then, a full collection
    # held the loop for 409 ms and freed 9 objects). Past double that: due.
    live = [0]
    with _policy(live, chat_blocks=500) as policy:
        fixed = sys.getallocatedblocks()
        chats = (2 * fixed + 200_000) // 500  # their heap: twice the fixed part and more
        live[0] = chats
        kept = _grown_by(chats * 500)
        assert not policy.due()
        live[0] = chats // 4
        assert not policy.due()
        more = _grown_by(fixed + chats * 500 + 40_000)
        assert policy.due()
        policy.collect()
        assert not policy.due()  # counted from the chats live at the collection
        del kept, more
