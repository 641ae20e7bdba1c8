"""A concurrency gate without tasks: at most ``limit`` holders, the rest wait in order.

Used to keep a burst of thousands of ``start`` envelopes from firing thousands of
session-creating calls at Salesforce at once: each chat holds the gate from its first
request (SessionId, or the availability check) until ChasitorInit is answered. Waiting costs
no task and no future: a waiter leaves a wake-up callback and is admitted, in arrival order,
when a holder leaves.
"""

from __future__ import annotations

__all__ = ["Gate"]

from collections.abc import Callable, Hashable


class Gate:
    """At most ``limit`` holders at a time.

    Args:
        limit: how many may hold the gate at once (>= 1).
    """

    def __init__(self, limit: int) -> None:
        if limit < 1:
            raise ValueError("a gate admits at least one holder")
        self.limit = limit
        self._inside: set[Hashable] = set()
        # Ordered by arrival; one entry per waiter, so bounded by the number of chats.
        self._waiting: dict[Hashable, Callable[[], None]] = {}

    @property
    def holders(self) -> int:
        """How many are inside the gate now."""
        return len(self._inside)

    @property
    def waiting(self) -> int:
        """How many wait to enter."""
        return len(self._waiting)

    def try_enter(self, key: Hashable, wake: Callable[[], None]) -> bool:
        """Hold the gate if there is room; otherwise queue ``wake`` and return ``False``.

        ``wake`` is called once ``key`` has been admitted; ``try_enter`` then returns ``True``.
        """
        if key in self._inside:
            return True
        if len(self._inside) < self.limit and not self._waiting:
            self._inside.add(key)
            return True
        self._waiting.setdefault(key, wake)
        return False

    def leave(self, key: Hashable) -> None:
        """Stop holding (or waiting for) the gate; admit the next waiters. Idempotent."""
        self._waiting.pop(key, None)
        self._inside.discard(key)
        while self._waiting and len(self._inside) < self.limit:
            admitted = next(iter(self._waiting))
            wake = self._waiting.pop(admitted)
            self._inside.add(admitted)
            wake()
