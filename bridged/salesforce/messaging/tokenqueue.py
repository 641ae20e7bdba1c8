"""Salesforce's access-token limit, kept: at most N tokens per window per org, in turn.

"Access token requests: 200 per minute per org" (MESSAGING.md 4.2), and every new guest
hand-over costs one. A burst of ``start`` envelopes beyond that must wait its turn and never
fail for that reason (PROTOCOL.md 6), so each chat asks :class:`TokenQueue` before its token
request goes out. The queue is a sliding window per org (15-character id) with a FIFO of
waiters: a chat that finds the window full, or others already waiting, leaves a wake-up
callback and is admitted, in arrival order, when the oldest grant of the window has aged
out. Waiting costs no task and no future; one timer per org with waiters does the
admitting.

A grant counts from the moment the token request is answered (or given up), not from when
it was given: Salesforce counts a request when it arrives, which is later than bridged's
grant, so a window measured from the grants could let a request arrive inside Salesforce's
window of the one before. A request on the wire counts as one of the window until then. A
chat that leaves (ended, cancelled) with its grant unused or unanswered has it counted from
then: the count stays conservative.
"""

from __future__ import annotations

__all__ = ["TokenQueue"]

import asyncio
import time
from collections import deque
from collections.abc import Callable, Hashable


class _Org:
    """The window and the waiters of one org."""

    __slots__ = ("admitted", "grants", "in_flight", "timer", "waiting")

    def __init__(self) -> None:
        self.grants: deque[float] = deque()  # when each answered request was answered
        self.in_flight: set[Hashable] = set()  # granted, not answered yet (admitted too)
        self.waiting: dict[Hashable, Callable[[], None]] = {}  # in arrival order
        self.admitted: set[Hashable] = set()  # admitted, not yet back to take it
        self.timer: asyncio.TimerHandle | None = None

    @property
    def used(self) -> int:
        return len(self.grants) + len(self.in_flight)


class TokenQueue:
    """At most ``limit`` grants per ``window_s`` per org; the rest wait in order.

    Args:
        limit: grants per window (Salesforce's is 200 a minute).
        window_s: the window (60 s; tests shorten it).
        clock: monotonic seconds.
    """

    def __init__(self, limit: int, window_s: float,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if limit < 1 or window_s <= 0:
            raise ValueError("a token queue needs a limit >= 1 and a positive window")
        self.limit = limit
        self.window_s = window_s
        self._clock = clock
        self._orgs: dict[str, _Org] = {}
        self._where: dict[Hashable, str] = {}  # waiter or admitted key -> its org

    @property
    def depth(self) -> int:
        """How many chats wait for a token now, over every org."""
        return sum(len(o.waiting) for o in self._orgs.values())

    def depths(self) -> dict[str, int]:
        """How many chats wait, by org (orgs with nobody waiting are left out)."""
        return {org: len(o.waiting) for org, o in self._orgs.items() if o.waiting}

    def position(self, key: Hashable) -> int | None:
        """``key``'s place in its org's queue (1 is next), ``None`` if it does not wait."""
        org = self._where.get(key)
        if org is None:
            return None
        for index, waiter in enumerate(self._orgs[org].waiting, start=1):
            if waiter == key:
                return index
        return None

    def try_acquire(self, org: str, key: Hashable, wake: Callable[[], None]) -> bool:
        """Take a grant for ``key`` now if it is its turn; else queue ``wake`` and say ``False``.

        ``wake`` is called once ``key`` has been admitted; ``try_acquire`` then says ``True``.
        """
        o = self._orgs.get(org)
        if o is None:
            o = self._orgs[org] = _Org()
        if key in o.admitted:
            o.admitted.discard(key)
            return True
        if key in o.in_flight:
            return True
        self._expire(o, self._clock())
        if not o.waiting and o.used < self.limit:
            o.in_flight.add(key)
            self._where[key] = org
            return True
        if key not in o.waiting:
            o.waiting[key] = wake
            self._where[key] = org
        self._arm(org, o)
        return False

    def answered(self, key: Hashable) -> None:
        """``key``'s token request got its answer (or none, for good): it counts from now."""
        org = self._where.pop(key, None)
        if org is None:
            return
        o = self._orgs[org]
        if key in o.in_flight:
            o.in_flight.discard(key)
            o.admitted.discard(key)
            o.grants.append(self._clock())
        o.waiting.pop(key, None)
        self._admit(org)

    def leave(self, key: Hashable) -> None:
        """``key`` no longer wants a grant (its chat ended). Idempotent."""
        self.answered(key)

    def close(self) -> None:
        """Cancel the timers (the daemon stops)."""
        for o in self._orgs.values():
            if o.timer is not None:
                o.timer.cancel()
                o.timer = None

    def _expire(self, o: _Org, now: float) -> None:
        while o.grants and o.grants[0] <= now - self.window_s:
            o.grants.popleft()

    def _admit(self, org: str) -> None:
        o = self._orgs.get(org)
        if o is None:
            return
        if o.timer is not None:
            o.timer.cancel()
            o.timer = None
        self._expire(o, self._clock())
        while o.waiting and o.used < self.limit:
            key = next(iter(o.waiting))
            wake = o.waiting.pop(key)
            o.in_flight.add(key)
            o.admitted.add(key)
            wake()
        if o.waiting:
            self._arm(org, o)
        elif not o.grants and not o.in_flight:
            del self._orgs[org]

    def _arm(self, org: str, o: _Org) -> None:
        """Admit again when the oldest answered grant leaves the window (the requests on
        the wire admit the next ones themselves, when answered)."""
        if o.timer is not None or not o.waiting or not o.grants:
            return
        due = o.grants[0] + self.window_s - self._clock()
        o.timer = asyncio.get_running_loop().call_later(max(0.0, due), self._admit, org)
