"""A flag one task waits on, set by whatever has news for it: an actor's ``asyncio.Event``.

Every chat's actor sleeps on one. ``asyncio.Event`` keeps its waiters in a deque, which takes
760 bytes even when empty (a block of 64 slots), and an instance dictionary besides: with
thousands of chats that is kilobytes per chat for a flag with at most one waiter. This one
holds a bool and, only while its task waits, one future; and ``wait`` hands out that future
itself, not a coroutine awaiting it, which would be one more frame held by every idle chat.
"""

from __future__ import annotations

__all__ = ["Wakeup"]

import asyncio
from collections.abc import Awaitable, Generator
from typing import Any


class _AlreadySet:
    """What ``wait`` hands out when the flag is set: awaiting it returns at once."""

    __slots__ = ()

    def __await__(self) -> Generator[Any, None, None]:
        return
        yield  # a generator: awaiting it suspends nothing


_ALREADY_SET = _AlreadySet()


class Wakeup:
    """``set``/``clear``/``is_set``/``wait`` as ``asyncio.Event``'s, for one waiting task."""

    __slots__ = ("_flag", "_waiter")

    def __init__(self) -> None:
        self._flag = False
        self._waiter: asyncio.Future[None] | None = None

    def is_set(self) -> bool:
        return self._flag

    def set(self) -> None:
        """Set the flag; wake the task waiting, if one is."""
        if self._flag:
            return
        self._flag = True
        waiter, self._waiter = self._waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def clear(self) -> None:
        self._flag = False

    def wait(self) -> Awaitable[None]:
        """What to await until the flag is set (done at once if it is).

        Raises:
            RuntimeError: another task is waiting already.
        """
        if self._flag:
            return _ALREADY_SET
        waiter = self._waiter
        if waiter is not None and not waiter.done():  # one cancelled is no one waiting
            raise RuntimeError("a Wakeup has one waiting task")
        waiter = self._waiter = asyncio.get_running_loop().create_future()
        return waiter
