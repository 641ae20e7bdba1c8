"""Rate limits (MESSAGING.md 4.2): sliding windows, one per key. Pure.

A window remembers the times of the last ``limit`` accepted hits of a key (a bounded
deque), so a key costs at most ``limit`` floats and the whole thing no timer. A caller asks
:meth:`SlidingWindow.allows` first and counts a hit with :meth:`SlidingWindow.hit` only
when the request is carried out: refused requests (429, 417, a dropped duplicate) do not use
the budget up.
"""

from __future__ import annotations

from collections import deque

__all__ = ["SlidingWindow"]


class SlidingWindow:
    """At most ``limit`` hits per key within any ``window_s`` seconds."""

    def __init__(self, limit: int, window_s: float) -> None:
        if limit < 1 or not window_s > 0:
            raise ValueError("a window needs limit >= 1 and window_s > 0")
        self.limit = limit
        self.window_s = window_s
        self._hits: dict[str, deque[float]] = {}

    def allows(self, key: str, now: float) -> bool:
        """True if one more hit of ``key`` at ``now`` stays within the limit."""
        hits = self._hits.get(key)
        if hits is None:
            return True
        while hits and now - hits[0] >= self.window_s:
            hits.popleft()
        return len(hits) < self.limit

    def hit(self, key: str, now: float) -> None:
        """Count one hit of ``key`` at ``now``."""
        hits = self._hits.get(key)
        if hits is None:
            hits = self._hits[key] = deque(maxlen=self.limit)
        hits.append(now)

    def retry_after(self, key: str, now: float) -> float:
        """Seconds until ``key`` may hit again (0 if it may now)."""
        hits = self._hits.get(key)
        if hits is None or len(hits) < self.limit:
            return 0.0
        return max(0.0, hits[0] + self.window_s - now)

    def reap(self, now: float) -> None:
        """Forget keys with no hit in the window (called by the reaper)."""
        for key in [k for k, hits in self._hits.items() if not hits or
                    now - hits[-1] >= self.window_s]:
            del self._hits[key]
