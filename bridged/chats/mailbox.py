"""A bounded mailbox with ``close()``: the one buffer type between tasks in bridged.

Python 3.11 has no ``asyncio.Queue.shutdown()`` (3.13), so this is written along the lines
of websockets' ``SimpleQueue``: a list and at most one waiting reader. Every mailbox is
bounded; ``put_nowait`` refuses rather than grows (trio: "a full buffer slows the producer
down"), and ``put`` waits for room.

Lists, not deques: every chat has a mailbox, usually empty, and an empty deque takes 760
bytes (a block of 64 slots) where an empty list takes 56; a mailbox holds a few dozen items
at most, so taking the oldest (a move of the rest) costs less than the memory.
"""

from __future__ import annotations

__all__ = ["LoadMeter", "Mailbox", "MailboxStatistics"]

import asyncio
import inspect
import weakref
from collections.abc import Callable
from typing import Any, Generic, NamedTuple, TypeVar

from bridged._lists import appended
from bridged.errors import MailboxClosed, MailboxFull

T = TypeVar("T")


class MailboxStatistics(NamedTuple):
    """A snapshot of a mailbox, for metrics (trio and anyio's ``statistics()``)."""

    size: int
    maxsize: int
    waiting_readers: int
    waiting_writers: int
    closed: bool


class Mailbox(Generic[T]):
    """A bounded FIFO between producers and one consumer.

    Args:
        maxsize: how many items it holds at most (>= 1).
        on_put: called after every accepted item; lets a consumer that waits on several
            sources at once be woken without a task per source. A bound method is held
            weakly: its object usually holds the mailbox, and a reference cycle between the
            two would outlive them until a full collection of the garbage collector (a
            pause of its own with thousands of chats), where reference counting frees them
            at once.
    """

    # Slots: one mailbox per chat, and an instance dict costs it ~100 bytes more.
    __slots__ = ("_closed", "_items", "_on_put", "_on_put_self", "_reader", "_writers",
                 "maxsize")

    def __init__(self, maxsize: int, on_put: Callable[[], None] | None = None) -> None:
        if maxsize < 1:
            raise ValueError("a mailbox holds at least one item")
        self.maxsize = maxsize
        # () while empty (bridged._lists): most chats' inboxes are empty most of the time.
        self._items: list[T] | tuple[()] = ()
        # A method as its function and a weak reference to its object: a WeakMethod holds
        # the same, plus a second weak reference and a closure (450 bytes a chat, against 80).
        self._on_put: Callable[..., None] | None = on_put
        self._on_put_self: weakref.ref[Any] | None = None
        if inspect.ismethod(on_put):
            self._on_put, self._on_put_self = on_put.__func__, weakref.ref(on_put.__self__)
        self._reader: asyncio.Future[None] | None = None
        # Made for the first writer that waits (rare: a full inbox), not for every chat.
        self._writers: list[asyncio.Future[None]] | tuple[()] = ()
        self._closed = False

    def __len__(self) -> int:
        return len(self._items)

    @property
    def closed(self) -> bool:
        return self._closed

    def full(self) -> bool:
        return len(self._items) >= self.maxsize

    def put_nowait(self, item: T) -> None:
        """Add ``item`` now.

        Raises:
            MailboxFull: no room; the item was not accepted.
            MailboxClosed: the mailbox is closed.
        """
        if self._closed:
            raise MailboxClosed("the mailbox is closed")
        if self.full():
            raise MailboxFull(f"the mailbox holds {self.maxsize} items already")
        self._items = appended(self._items, item)
        if self._reader is not None and not self._reader.done():
            self._reader.set_result(None)
        if self._on_put is not None:
            if self._on_put_self is None:
                self._on_put()
            elif (owner := self._on_put_self()) is not None:
                self._on_put(owner)

    async def put(self, item: T) -> None:
        """Add ``item``, waiting for room.

        Raises:
            MailboxClosed: the mailbox is or becomes closed.
        """
        while self.full() and not self._closed:
            waiter = asyncio.get_running_loop().create_future()
            self._writers = appended(self._writers, waiter)
            try:
                await waiter
            finally:
                if self._writers and waiter in self._writers:
                    self._writers.remove(waiter)
        self.put_nowait(item)

    def get_nowait(self) -> T:
        """Take the oldest item.

        Raises:
            IndexError: the mailbox is empty.
        """
        items = self._items
        if not items:
            raise IndexError("the mailbox is empty")
        item = items.pop(0)
        if not items:
            self._items = ()
        self._wake_writer()
        return item

    def peek(self) -> list[T]:
        """The items, oldest first, without taking them."""
        return list(self._items)

    def newest(self, count: int) -> list[T]:
        """The ``count`` newest items, oldest first, without taking them (cost: ``count``)."""
        count = min(count, len(self._items))
        return [self._items[i] for i in range(-count, 0)]

    def drain(self, limit: int | None = None) -> list[T]:
        """Take up to ``limit`` items (all when ``None``), oldest first."""
        count = len(self._items) if limit is None else min(limit, len(self._items))
        items = self._items
        if not items:
            return []
        if count == len(items):
            out, self._items = items, ()
        else:
            out = items[:count]
            del items[:count]
        for _ in range(count):
            self._wake_writer()
        return out

    async def get(self) -> T:
        """Take the oldest item, waiting for one.

        Raises:
            MailboxClosed: the mailbox is closed and empty.
        """
        while not self._items:
            if self._closed:
                raise MailboxClosed("the mailbox is closed")
            if self._reader is not None:
                raise RuntimeError("a mailbox has one reader")
            self._reader = asyncio.get_running_loop().create_future()
            try:
                await self._reader
            finally:
                self._reader = None
        return self.get_nowait()

    def close(self) -> None:
        """Accept nothing more; wake the reader and the writers. Idempotent."""
        if self._closed:
            return
        self._closed = True
        if self._reader is not None and not self._reader.done():
            self._reader.set_result(None)
        writers, self._writers = self._writers, ()
        for waiter in writers:
            if not waiter.done():
                waiter.set_result(None)

    def statistics(self) -> MailboxStatistics:
        return MailboxStatistics(
            size=len(self._items),
            maxsize=self.maxsize,
            waiting_readers=int(self._reader is not None),
            waiting_writers=len(self._writers),
            closed=self._closed,
        )

    def _wake_writer(self) -> None:
        while self._writers:
            waiter = self._writers.pop(0)
            if not self._writers:
                self._writers = ()
            if not waiter.done():
                waiter.set_result(None)
                return


class LoadMeter:
    """Work taken in and not yet done (visitor messages not yet answered), in all and per
    owner (the connection a chat is bound to; ``None`` for a chat bound to none), with
    high/low watermarks.

    At ``high`` the process is overloaded, until the load falls to ``low``. While it is, an
    owner may add more only while it holds less than its fair share: ``high`` divided among
    the owners that hold some, itself included. So the connection that causes the backlog
    is the one refused, the others are not, and no connection stops being read (its acks
    and ends, which bring the load down, always get through).
    """

    def __init__(self, high: int, low: int) -> None:
        if not 0 <= low < high:
            raise ValueError("the low watermark must be below the high one")
        self.high, self.low = high, low
        self.total = 0
        self._by_owner: dict[str, int] = {}  # only owners holding some
        self._overloaded = False

    @property
    def overloaded(self) -> bool:
        return self._overloaded

    def held_by(self, owner: str) -> int:
        """How much of the load ``owner`` holds."""
        return self._by_owner.get(owner, 0)

    def admits(self, owner: str) -> bool:
        """Whether ``owner`` may add to the load now."""
        if not self._overloaded:
            return True
        held = self._by_owner.get(owner, 0)
        owners = len(self._by_owner) + (0 if held else 1)
        return held < self.high // owners

    def add(self, owner: str | None, amount: int = 1) -> None:
        """``owner`` took in ``amount`` more."""
        self.total += amount
        self._credit(owner, amount)
        if self.total >= self.high:
            self._overloaded = True

    def remove(self, owner: str | None, amount: int = 1) -> None:
        """``amount`` of ``owner``'s load is done."""
        self.total = max(0, self.total - amount)
        self._credit(owner, -amount)
        if self.total <= self.low:
            self._overloaded = False

    def move(self, old: str | None, new: str | None, amount: int) -> None:
        """``amount`` of ``old``'s load is ``new``'s from now on (a chat changed connection)."""
        if old != new:
            self._credit(old, -amount)
            self._credit(new, amount)

    def _credit(self, owner: str | None, amount: int) -> None:
        if owner is None or not amount:
            return
        held = self._by_owner.get(owner, 0) + amount
        if held > 0:
            self._by_owner[owner] = held
        else:
            self._by_owner.pop(owner, None)
