"""The garbage collector's policy: a full collection scans only what is new since the last one.

Thousands of chats make a large heap of long-lived objects (about 120 tracked objects a Live
Agent chat: its actor's coroutines, its parked poll's request and response, their buffers).
CPython's full collection scans every one of them, so at 10,000 chats a full collection
pauses the loop for most of a second, and the tail latency of every chat is the collector's.

The ``freeze`` policy (``server.gc_policy``, the default) keeps the old heap frozen
(:func:`gc.freeze`: out of the collector's generations) and collects the rest often:

* at start-up, what start-up made is collected once and frozen;
* every tick of the loop (``tick_s``, a second) in which objects were promoted to the oldest
  generation (or CPython ran a full collection), a full collection runs, scanning only what
  is not frozen, i.e. what was promoted since the last tick, and what survives it is frozen.
  Young collections are CPython's (``server.gc_thresholds``). A pause is then the size of a
  second's promotions, not of the heap.
* what a freeze keeps: a reference cycle whose objects were alive at a freeze and became
  garbage since is not collected while frozen. bridged's own structures are freed by
  reference counting (``tests/chats/test_chat_cycles.py``); what libraries leave in cycles
  is *reclaimed*: everything is unfrozen, collected once and frozen again, when the live
  chats fall to a quarter of their peak since the last reclaim (the pause is then that of
  the small heap that is left), or when the frozen heap per live chat has grown to twice
  what it was after the last reclaim (at least ``PER_CHAT_FLOOR`` objects a chat): growth
  that the number of chats does not explain is what cycles left, and memory stays within
  about twice the live heap. Chats that are merely more do not trigger it.

``python`` leaves CPython's own policy (with ``server.gc_thresholds``).
"""

from __future__ import annotations

__all__ = ["GcPolicy"]

import asyncio
import gc
import logging
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from bridged._log import log_event

log = logging.getLogger("bridged.ops.gcpolicy")

# Objects a live chat keeps on the heap, before a reclaim has measured it (about 120 for a
# Live Agent chat, more for Enhanced Chat): the frozen heap may grow to twice this a chat.
PER_CHAT_FLOOR = 200


class GcPolicy:
    """Applies ``server.gc_policy`` to this process's garbage collector.

    Args:
        policy: ``"freeze"`` or ``"python"``.
        thresholds: the collector's thresholds (generations 0, 1, 2).
        live_chats: how many chats are live now (for the reclaim).
        tick_s: how often the loop looks whether a freeze or a reclaim is due.
    """

    def __init__(self, policy: str, thresholds: tuple[int, int, int] | list[int],
                 live_chats: Callable[[], int], *, tick_s: float = 1.0) -> None:
        self.policy = policy
        self._thresholds = (int(thresholds[0]), int(thresholds[1]), int(thresholds[2]))
        self._live_chats = live_chats
        self._tick_s = tick_s
        self._full_done = threading.Event()  # set from the collector's callback, any thread
        self._peak = 0
        self.freezes = 0
        self.reclaims = 0
        self.reclaimed_objects = 0
        self._base = 0
        self._ticks_done = 0
        self._per_chat = 0.0  # frozen objects a live chat, as of the last reclaim
        self._task: asyncio.Task[None] | None = None

    def install(self) -> None:
        """Set the thresholds and freeze what start-up made; start the policy's ticks."""
        gc.set_threshold(*self._thresholds)
        gc.collect()
        gc.freeze()
        self._base = gc.get_freeze_count()  # what start-up made: no chat's
        if self.policy != "freeze":
            return
        if self._on_collection not in gc.callbacks:
            gc.callbacks.append(self._on_collection)
        self._peak = self._live_chats()
        self._task = asyncio.create_task(self._ticks(), name="gc-policy")

    async def aclose(self) -> None:
        """Stop the policy (the collector keeps its thresholds). Idempotent."""
        if self._on_collection in gc.callbacks:
            gc.callbacks.remove(self._on_collection)
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    def _on_collection(self, phase: str, info: dict[str, Any]) -> None:
        # Runs inside the collector, in whatever thread triggered it: only note it.
        if phase == "stop" and info.get("generation") == 2:
            self._full_done.set()

    async def _ticks(self) -> None:
        while True:
            await asyncio.sleep(self._tick_s)
            self.tick()

    def tick(self) -> None:
        """Collect and freeze what was promoted since the last tick; reclaim when due."""
        live = self._live_chats()
        self._peak = max(self._peak, live)
        self._ticks_done += 1
        grown = False
        if self._ticks_done % 10 == 0:  # counting the frozen objects walks their list
            per_chat = max(self._per_chat, PER_CHAT_FLOOR)
            grown = gc.get_freeze_count() - self._base > 2 * per_chat * max(live, 1)
        if grown or (self._peak >= 4 and live <= self._peak // 4):
            self.reclaim()
            return
        if gc.get_count()[2] > 0 or self._full_done.is_set():
            self._full_done.clear()
            gc.collect(2)  # frozen objects are not scanned: only the last tick's promotions
            gc.freeze()
            self.freezes += 1

    def reclaim(self) -> None:
        """Unfreeze everything, collect it once, and freeze the survivors again."""
        started = time.perf_counter()
        frozen = gc.get_freeze_count()
        gc.unfreeze()
        collected = gc.collect()
        gc.freeze()
        self._full_done.clear()
        self.reclaims += 1
        self.reclaimed_objects += collected
        live = self._live_chats()
        if live:
            self._per_chat = (gc.get_freeze_count() - self._base) / live
        log_event(log, logging.INFO, "gc_reclaimed", live_chats=live, peak_chats=self._peak,
                  frozen_before=frozen, collected=collected,
                  pause_ms=round((time.perf_counter() - started) * 1000, 1))
        self._peak = live

    def metrics(self) -> Iterable[Metric]:
        """The policy's figures, read at scrape time."""
        yield GaugeMetricFamily("bridged_gc_frozen_objects",
                                "Objects kept out of the garbage collector's scans (frozen)",
                                value=gc.get_freeze_count())
        yield CounterMetricFamily("bridged_gc_reclaims",
                                  "Times every frozen object was collected once (gc_policy)",
                                  value=self.reclaims)
