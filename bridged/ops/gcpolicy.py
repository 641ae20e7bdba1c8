"""When the garbage collector runs: only when the heap it tracks has grown, never on a count.

CPython's collector runs a young collection every few thousand allocations and scans every
young object's references. With thousands of chats the young objects point into a heap of
hundreds of megabytes, so each reference is a cache miss: measured here, a generation-0
collection of some 60,000 objects took 35 to 65 ms, and a full one at 10,000 chats up to a
second, while a chat's message makes no reference cycle at all for a collector to find
(tests/ops/test_gcpolicy.py checks that a chat's whole life leaves nothing to collect).
Reference counting frees everything bridged drops.

So with the ``"growth"`` policy the automatic collections are off, and a full collection
runs only once the heap has grown by ``growth`` times what the last one left (1.0: the heap
doubled): a safety net for cycles made on a rare path (an error's traceback, a library's
internals), whose cost amortises like a growing list's. In a steady state (chats start as
others end, messages come and go) the heap does not grow and no collection runs.
``"thresholds"`` is CPython's own scheme, with ``server.gc_thresholds``.

More chats make a larger heap with nothing more to collect, so the heap is compared per
live chat: with ``population`` (the daemon gives its count of live chats), the heap the
last collection left is scaled by how many more chats are live now. A process whose chats
went from 9,500 to 19,000 has not "grown" (measured before this rule: the fourth doubling
of the heap fell on the load test's saturation at 19,000 chats, and its full collection of
4.9 million blocks held the event loop for 3.2 s); one whose heap per chat doubled has.

The heap is measured as the memory blocks Python has allocated (``sys.getallocatedblocks``,
one read of a counter), not by the collector's generation-0 count: that count never falls
below zero, so every object that dies while it is zero is forgotten and the count drifts
up in a steady state (measured: a collection during a load test's saturation with no
growth at all).
"""

from __future__ import annotations

__all__ = ["GrowthCollector"]

import asyncio
import gc
import logging
import sys
import time
from collections.abc import Callable

from bridged._log import log_event

log = logging.getLogger("bridged.ops.gc")


class GrowthCollector:
    """Runs a full collection when the heap has grown by ``growth`` since the last one.

    Args:
        growth: how much the heap grows (as a fraction of what the last collection left)
            before the next full collection.
        floor: the least growth, in memory blocks, that makes a collection worth it (a
            small heap would otherwise be collected for a few thousand objects).
        interval: how often the growth is looked at, in seconds.
        population: how many chats are live now; the heap the last collection left then
            counts per chat (more chats than then: a larger heap is no growth).
        least_population: the fewest chats the heap is counted per (a heap that a handful
            of chats left says nothing of what each costs).
    """

    def __init__(self, growth: float, floor: int = 200_000, interval: float = 1.0,
                 population: Callable[[], int] | None = None,
                 least_population: int = 1000) -> None:
        self.growth = growth
        self.floor = floor
        self.interval = interval
        self.collections = 0
        self._base = 0
        self._population = population
        self._least_population = least_population
        self._base_population = least_population

    def start(self) -> None:
        """Turn the automatic collections off; the heap now is the base."""
        gc.disable()
        self._set_base()

    def _set_base(self) -> None:
        self._base = sys.getallocatedblocks()
        if self._population is not None:
            self._base_population = max(self._least_population, self._population())

    def stop(self) -> None:
        """Give the collector back its automatic collections."""
        gc.enable()

    @property
    def limit(self) -> int:
        """The heap, in memory blocks, beyond which a collection is due."""
        base = self._base
        if self._population is not None:
            live = max(self._least_population, self._population())
            if live > self._base_population:
                base = base * live // self._base_population
        return base + max(self.floor, int(self.growth * base))

    def due(self) -> bool:
        """Whether the heap grew enough since the last collection."""
        return sys.getallocatedblocks() > self.limit

    def collect(self) -> int:
        """A full collection now; the objects it freed."""
        started = time.perf_counter()
        freed = gc.collect()
        self._set_base()
        self.collections += 1
        log_event(log, logging.INFO, "gc_collected", freed=freed, blocks=self._base,
                  ms=round((time.perf_counter() - started) * 1000, 1))
        return freed

    async def run(self) -> None:
        """Look at the growth every ``interval`` seconds, collect when due; until cancelled."""
        while True:
            await asyncio.sleep(self.interval)
            if self.due():
                self.collect()
