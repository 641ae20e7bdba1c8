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

More chats make a larger heap with nothing more to collect, so the heap is modelled as a
fixed part (the code, the caches, what start-up made) and a part per live chat (with
``population``, the daemon's count of live chats): a collection is due once the heap is
``growth`` times more than that model expects for the chats live now. A process whose chats
went from 9,500 to 19,000 has not "grown" (measured before this rule: the fourth doubling
of the heap fell on the load test's saturation at 19,000 chats, and its full collection of
4.9 million blocks held the event loop for 3.2 s); one whose heap per chat doubled has.

Until a collection has measured what a chat holds, each is assumed to hold
``chat_blocks``, somewhat more than a live chat of either backend does. An earlier rule
counted the start-up heap as if 1,000 chats had left it, which made a chat worth a
thousandth of the code's own heap: an Enhanced Chat conversation holds more than that, and
2,000 of them at saturation passed that limit (measured: a full collection of 914,000
blocks held the loop for 283 ms during the load test's saturation). A collection with fewer
than ``least_population`` chats live measures nothing per chat (a heap left by 3 chats,
divided by 3, would make each seem to cost a share of the fixed part and postpone every
later collection); one with none live measures the fixed part exactly.

The chats counted are the most live at once since the last collection, not those live now:
chats that end give their memory back by reference counting, and what stays after them
(their OCP connections, still open; the HTTP pools) is no garbage. Counting only the chats
live now made the heap look grown as many chats ended together (measured: a full collection
of 1.4 million blocks that freed 9 objects held the loop for 409 ms while the last 507 of
5,000 chats ended, their 5,000 connections open). So the heap may hold, at most, ``growth``
times what the busiest moment since the last collection explains before one runs.

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


# What a live chat holds, in memory blocks, with room to spare: an idle Enhanced Chat
# conversation about 290 (python -m bridged.tools.chatmem), more with messages in flight.
CHAT_BLOCKS = 500


class GrowthCollector:
    """Runs a full collection when the heap has grown by ``growth`` over what it should be.

    Args:
        growth: how much the heap grows (as a fraction of what the chats live and the fixed
            part explain) before the next full collection.
        floor: the least growth, in memory blocks, that makes a collection worth it (a
            small heap would otherwise be collected for a few thousand objects).
        interval: how often the growth is looked at, in seconds.
        population: how many chats are live now; the most live since the last collection
            each explain ``chat_blocks`` of the heap (or what it measured per chat).
        chat_blocks: the memory blocks a live chat is assumed to hold until a collection
            measures it.
        least_population: the fewest chats live for a collection to measure what one holds.
    """

    def __init__(self, growth: float, floor: int = 200_000, interval: float = 1.0,
                 population: Callable[[], int] | None = None,
                 chat_blocks: int = CHAT_BLOCKS, least_population: int = 1000) -> None:
        self.growth = growth
        self.floor = floor
        self.interval = interval
        self.collections = 0
        self._population = population
        self._prior = chat_blocks
        self._least_population = least_population
        self._per_chat = chat_blocks
        self._fixed = 0
        self._peak = 0  # the most chats live at once since the last collection

    def start(self) -> None:
        """Turn the automatic collections off; the heap now is the base."""
        gc.disable()
        self._peak = self._live()
        self._fixed = max(0, sys.getallocatedblocks() - self._peak * self._per_chat)
        log_event(log, logging.INFO, "gc_policy_started", blocks=sys.getallocatedblocks(),
                  fixed=self._fixed, chats=self._live())

    def _live(self) -> int:
        return 0 if self._population is None else self._population()

    def _measure(self) -> None:
        """What the heap a collection left says of the fixed part and of a chat."""
        heap, live = sys.getallocatedblocks(), self._live()
        if live >= self._least_population:
            self._per_chat = max(self._prior, (heap - self._fixed) // live)
        self._fixed = max(0, heap - live * self._per_chat)
        self._peak = live

    def stop(self) -> None:
        """Give the collector back its automatic collections."""
        gc.enable()

    @property
    def limit(self) -> int:
        """The heap, in memory blocks, beyond which a collection is due."""
        chats = max(self._peak, self._live())
        expected = self._fixed + chats * self._per_chat
        return expected + max(self.floor, int(self.growth * expected))

    def due(self) -> bool:
        """Whether the heap grew enough since the last collection."""
        self._peak = max(self._peak, self._live())
        return sys.getallocatedblocks() > self.limit

    def collect(self) -> int:
        """A full collection now; the objects it freed."""
        started = time.perf_counter()
        freed = gc.collect()
        self._measure()
        self.collections += 1
        log_event(log, logging.INFO, "gc_collected", freed=freed,
                  blocks=sys.getallocatedblocks(), fixed=self._fixed,
                  per_chat=self._per_chat, chats=self._live(),
                  ms=round((time.perf_counter() - started) * 1000, 1))
        return freed

    async def run(self) -> None:
        """Look at the growth every ``interval`` seconds, collect when due; until cancelled."""
        while True:
            await asyncio.sleep(self.interval)
            if self.due():
                self.collect()
