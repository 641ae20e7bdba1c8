"""When the garbage collector runs: only when the heap it tracks has grown, never on a count.

CPython's collector runs a young collection every few thousand allocations and scans every
young object's references. With thousands of chats the young objects point into a heap of
hundreds of megabytes, so each reference is a cache miss: measured here, a generation-0
collection of some 60,000 objects took 35 to 65 ms, and a full one at 10,000 chats up to a
second, while a chat's message makes no reference cycle at all for a collector to find
(tests/ops/test_gcpolicy.py checks that a chat's whole life leaves nothing to collect).
Reference counting frees everything bridged drops.

So with the ``"growth"`` policy the automatic collections are off, and a full collection
runs only once the objects the collector tracks have grown by ``growth`` times what there
was after the last one (1.0: the heap doubled): a safety net for cycles made on a rare
path (an error's traceback, a library's internals), whose cost amortises like a growing
list's. In a steady state (chats start as others end, messages come and go) the heap does
not grow and no collection runs. ``"thresholds"`` is CPython's own scheme, with
``server.gc_thresholds``.
"""

from __future__ import annotations

__all__ = ["GrowthCollector"]

import asyncio
import gc
import logging
import time

from bridged._log import log_event

log = logging.getLogger("bridged.ops.gc")


class GrowthCollector:
    """Runs a full collection when the tracked heap has grown by ``growth`` since the last.

    Args:
        growth: how much the heap grows (as a fraction of the last collection's survivors)
            before the next full collection.
        floor: the least growth, in objects, that makes a collection worth it (a small
            heap would otherwise be collected for a few thousand objects).
        interval: how often the growth is looked at, in seconds.
    """

    def __init__(self, growth: float, floor: int = 100_000, interval: float = 1.0) -> None:
        self.growth = growth
        self.floor = floor
        self.interval = interval
        self.collections = 0
        self._base = 0

    def start(self) -> None:
        """Turn the automatic collections off; what is alive now is the base."""
        gc.disable()
        self._base = self._tracked()

    def stop(self) -> None:
        """Give the collector back its automatic collections."""
        gc.enable()

    def due(self) -> bool:
        """Whether the heap grew enough since the last collection.

        With the automatic collections off, generation 0's count is the objects allocated
        since the last collection less those freed (never below zero).
        """
        return gc.get_count()[0] > max(self.floor, self.growth * self._base)

    def collect(self) -> int:
        """A full collection now; the objects it freed."""
        started = time.perf_counter()
        freed = gc.collect()
        self._base = self._tracked()
        self.collections += 1
        log_event(log, logging.INFO, "gc_collected", freed=freed, tracked=self._base,
                  ms=round((time.perf_counter() - started) * 1000, 1))
        return freed

    async def run(self) -> None:
        """Look at the growth every ``interval`` seconds, collect when due; until cancelled."""
        while True:
            await asyncio.sleep(self.interval)
            if self.due():
                self.collect()

    @staticmethod
    def _tracked() -> int:
        # Objects frozen at start-up count: they are the heap the growth is measured against.
        return gc.get_freeze_count() + sum(len(gc.get_objects(g)) for g in range(3))
