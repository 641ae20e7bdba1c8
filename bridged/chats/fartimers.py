"""Far-off wake-ups of many chats on one timer of the event loop.

A live Enhanced Chat conversation waits for a deadline hours away (its access token's end),
and a loop timer costs about 0.5 KB a chat (uvloop's handle, its libuv timer, the context it
copies, its place in the loop's set of timers): 5 MB with 10,000 chats, for timers that
almost never fire. Here each far-off deadline is one small entry in a heap, and the loop holds
one timer, for the earliest entry. A deadline fires when the loop's clock has reached it, as
a loop timer does (to the clock's millisecond); a cancelled entry stays in the heap until it
comes to the top or cancelled entries are the majority, then the heap is rebuilt without them
(asyncio does the same with its own timers).
"""

from __future__ import annotations

__all__ = ["FarTimer", "FarTimers"]

import asyncio
import heapq
from collections.abc import Callable

# Fewer cancelled entries than this are never worth a rebuild of the heap.
_COMPACT_MIN = 64
# uvloop's timers count milliseconds.
_RESOLUTION_S = 0.001


class FarTimer:
    """One deadline: :meth:`cancel` it as a loop timer's handle."""

    __slots__ = ("_owner", "callback", "when")

    def __init__(self, owner: FarTimers, when: float, callback: Callable[[], None]) -> None:
        self._owner = owner
        self.when = when
        self.callback: Callable[[], None] | None = callback

    def __lt__(self, other: FarTimer) -> bool:
        return self.when < other.when

    def cancel(self) -> None:
        """Never call back (harmless once fired or cancelled)."""
        if self.callback is not None:
            self.callback = None
            self._owner._cancelled_one()


class FarTimers:
    """Deadlines of many chats on one loop timer (see the module's docstring)."""

    def __init__(self) -> None:
        self._heap: list[FarTimer] = []
        self._cancelled = 0
        self._armed: asyncio.TimerHandle | None = None
        self._armed_at = 0.0

    def __len__(self) -> int:
        """Entries held, cancelled ones not yet dropped included."""
        return len(self._heap)

    def call_later(self, delay: float, callback: Callable[[], None]) -> FarTimer:
        """Call ``callback`` once ``delay`` seconds of the running loop's clock have passed."""
        loop = asyncio.get_running_loop()
        timer = FarTimer(self, loop.time() + max(0.0, delay), callback)
        heapq.heappush(self._heap, timer)
        if self._heap[0] is timer:
            self._arm(loop)
        return timer

    def close(self) -> None:
        """Drop every deadline and the loop's timer."""
        if self._armed is not None:
            self._armed.cancel()
            self._armed = None
        for timer in self._heap:
            timer.callback = None
        self._heap.clear()
        self._cancelled = 0

    def _cancelled_one(self) -> None:
        self._cancelled += 1
        if self._cancelled >= _COMPACT_MIN and 2 * self._cancelled > len(self._heap):
            self._heap = [t for t in self._heap if t.callback is not None]
            heapq.heapify(self._heap)
            self._cancelled = 0

    def _arm(self, loop: asyncio.AbstractEventLoop) -> None:
        """The loop's one timer at the earliest live entry (cancelled tops dropped first)."""
        heap = self._heap
        while heap and heap[0].callback is None:
            heapq.heappop(heap)
            self._cancelled -= 1
        if not heap:
            if self._armed is not None:
                self._armed.cancel()
                self._armed = None
            return
        when = heap[0].when
        if self._armed is not None:
            if self._armed_at <= when:
                return  # it fires first, and re-arms then
            self._armed.cancel()
        self._armed_at = when
        self._armed = loop.call_at(when, self._fire)

    def _fire(self) -> None:
        self._armed = None
        loop = asyncio.get_running_loop()
        # As asyncio's own loop does: what is due within the clock's resolution is due (a
        # millisecond timer may wake a little before its time).
        due_by = loop.time() + _RESOLUTION_S
        # self._heap each time, not a local: a callback's cancel() may rebuild it.
        while self._heap and self._heap[0].when <= due_by:
            timer = heapq.heappop(self._heap)
            callback, timer.callback = timer.callback, None
            if callback is None:
                self._cancelled -= 1
                continue
            try:
                callback()
            except Exception as exc:  # one chat's callback must not stop the others'
                loop.call_exception_handler({"message": "far timer callback failed",
                                             "exception": exc})
        self._arm(loop)
