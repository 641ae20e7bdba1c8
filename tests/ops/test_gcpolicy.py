"""The garbage collector's policy: the old heap frozen out of full collections, nothing kept.

These tests change the whole process's collector (as bridged does); each puts it back.
"""

from __future__ import annotations

import gc
import weakref
from collections.abc import Iterator

import pytest

from bridged.config.file import parse_config
from bridged.errors import ConfigError
from bridged.ops.gcpolicy import PER_CHAT_FLOOR, GcPolicy


class Node:
    """An object that can be put in a reference cycle and watched."""

    def __init__(self) -> None:
        self.other: Node | None = None


def cycle() -> tuple[Node, weakref.ref[Node]]:
    a, b = Node(), Node()
    a.other, b.other = b, a
    return a, weakref.ref(b)


@pytest.fixture
def collector() -> Iterator[None]:
    thresholds = gc.get_threshold()
    yield
    gc.unfreeze()
    gc.set_threshold(*thresholds)
    gc.collect()


def make(live: list[int], policy: str = "freeze") -> GcPolicy:
    return GcPolicy(policy, [50_000, 20, 100], lambda: live[0])


async def test_what_survives_a_full_collection_is_frozen_and_garbage_is_not(
        collector: None) -> None:
    live = [100]
    policy = make(live)
    policy.install()
    try:
        kept, kept_ref = cycle()
        gone, gone_ref = cycle()
        gc.collect(1)  # both promoted to the oldest generation, as a long poll's objects are
        del gone
        frozen = gc.get_freeze_count()
        policy.tick()
        assert gone_ref() is None  # garbage made before the tick was collected, not frozen
        assert kept_ref() is kept.other
        assert gc.get_freeze_count() > frozen
        # The next full collection scans none of it: the oldest generation is empty.
        assert not [o for o in gc.get_objects(generation=2) if isinstance(o, Node)]
    finally:
        await policy.aclose()


async def test_a_cycle_that_dies_frozen_is_reclaimed_when_most_chats_are_gone(
        collector: None) -> None:
    live = [100]
    policy = make(live)
    policy.install()
    try:
        kept, kept_ref = cycle()
        gc.collect(1)
        policy.tick()  # frozen
        del kept
        gc.collect()
        assert kept_ref() is not None  # frozen garbage: no collection sees it
        live[0] = 30
        policy.tick()
        assert kept_ref() is not None  # 30 of a peak of 100: not yet
        live[0] = 25
        policy.tick()
        assert kept_ref() is None
        assert policy.reclaims == 1
    finally:
        await policy.aclose()


async def test_a_frozen_heap_grown_beyond_its_chats_is_reclaimed_with_chats_still_live(
        collector: None) -> None:
    live = [10]
    policy = make(live)
    policy.install()
    try:
        leaked = [cycle() for _ in range(10)]
        refs = [ref for _, ref in leaked]
        gc.collect(1)
        policy.tick()
        del leaked
        # A heap the chats explain (fewer than twice PER_CHAT_FLOOR objects a chat): kept.
        some = [Node() for _ in range(2 * PER_CHAT_FLOOR * 10 // 2)]
        gc.collect(1)
        for _ in range(10):
            policy.tick()
        assert policy.reclaims == 0
        # More than the chats explain: reclaimed, and the live objects frozen again.
        more = [Node() for _ in range(2 * PER_CHAT_FLOOR * 10)]
        gc.collect(1)
        for _ in range(10):
            policy.tick()
        assert policy.reclaims == 1
        assert all(ref() is None for ref in refs)
        assert gc.get_freeze_count() > len(some) + len(more)
    finally:
        await policy.aclose()


async def test_the_python_policy_leaves_cpython_collecting(collector: None) -> None:
    policy = make([0], policy="python")
    policy.install()
    try:
        assert gc.get_threshold() == (50_000, 20, 100)
        assert policy._on_collection not in gc.callbacks
        gone, gone_ref = cycle()
        gc.collect(1)
        del gone
        gc.collect()
        assert gone_ref() is None
    finally:
        await policy.aclose()


async def test_its_figures_are_exported(collector: None) -> None:
    policy = make([1])
    policy.install()
    try:
        names = {metric.name for metric in policy.metrics()}
        assert names == {"bridged_gc_frozen_objects", "bridged_gc_reclaims"}
    finally:
        await policy.aclose()


def test_an_unknown_policy_is_refused_naming_the_key() -> None:
    with pytest.raises(ConfigError, match="gc_policy"):
        parse_config('[server]\ngc_policy = "never"\n')
