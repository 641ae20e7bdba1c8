"""The state store's interface: what the daemon and the actors need of it, whatever keeps it.

Two implementations: :class:`bridged.state.sqlite.StateStore` (one node, ``state.dir``) and
:class:`bridged.state.redisstore.RedisStore` (several nodes, ``[cluster]``). The daemon picks
one from the config; nothing else knows which.
"""

from __future__ import annotations

__all__ = ["MAY_SEND_RECHECK_S", "Callback", "Drop", "Item", "KeptChat", "PendingChange",
           "Store", "StoreStatistics", "run_callbacks"]

import logging
from collections.abc import Callable, Iterable, Sequence
from typing import NamedTuple, Protocol

from bridged._log import log_event

log = logging.getLogger("bridged.state")

Callback = Callable[[], None]
# An item of a kept list: (list, key, data); a range of keys that is gone: (list, first, last).
Item = tuple[int, int, bytes]
Drop = tuple[int, int, int]


# How soon an actor whose node may not send (its lease unconfirmed) looks again.
MAY_SEND_RECHECK_S = 0.25


def run_callbacks(callbacks: Iterable[tuple[str, Callback]]) -> None:
    """Run the ``on_durable`` callbacks of a commit, ``(chat id, callback)`` each.

    One that raises (a bug in that chat's actor) is logged and keeps none of the others from
    running: the other chats of the commit still learn that their changes are durable.
    """
    for chat_id, callback in callbacks:
        try:
            callback()
        except Exception as exc:
            log_event(log, logging.ERROR, "commit_callback_failed", chat=chat_id,
                      detail=f"{type(exc).__name__}: {exc}")


class PendingChange:
    """What is saved for one chat and not yet committed; each store adds what it needs.

    ``snapshot`` and ``static`` are ``None`` until a save gives them; the kept lists' drops
    are written before the items (a later drop has already removed the earlier items it
    covers).
    """

    __slots__ = ("callbacks", "delivered", "drops", "items", "snapshot", "static")

    def __init__(self) -> None:
        self.snapshot: bytes | None = None
        self.static: bytes | None = None
        self.delivered: list[str] = []
        self.drops: list[Drop] = []
        self.items: dict[tuple[int, int], bytes] = {}  # (list, key) -> data
        self.callbacks: list[Callback] = []

    def keep(self, snapshot: bytes, on_durable: Callback | None, static: bytes | None,
             delivered: Sequence[str], items: Sequence[Item], drops: Sequence[Drop]) -> None:
        """Take one :meth:`Store.save` in."""
        self.snapshot = snapshot
        if static is not None:
            self.static = static
        self.delivered.extend(delivered)
        if items or drops:
            self.change_items(items, drops)
        if on_durable is not None:
            self.callbacks.append(on_durable)

    def forget(self) -> None:
        """Everything of the chat goes (it is deleted)."""
        self.snapshot, self.static, self.delivered = None, None, []
        self.drops, self.items = [], {}

    def change_items(self, items: Sequence[Item], drops: Sequence[Drop]) -> None:
        """Drop ``drops`` (also from the items not yet written), then add ``items``."""
        for list_id, first, last in drops:
            if self.items:
                if last - first < len(self.items):
                    # A short range (the usual: the events an ack released): by key.
                    for key in range(first, last + 1):
                        self.items.pop((list_id, key), None)
                else:
                    for gone in [k for k in self.items
                                 if k[0] == list_id and first <= k[1] <= last]:
                        del self.items[gone]
            self.drops.append((list_id, first, last))
        for list_id, key, data in items:
            self.items[(list_id, key)] = data

    def merge_saves(self, newer: PendingChange) -> None:
        """Take in the saves of a newer pending change (after any delete it carries)."""
        self.static = newer.static or self.static
        if newer.snapshot is not None:
            self.snapshot = newer.snapshot
        self.delivered.extend(newer.delivered)
        self.change_items([(lst, key, data) for (lst, key), data in newer.items.items()],
                          newer.drops)
        self.callbacks.extend(newer.callbacks)


class KeptChat(NamedTuple):
    """One chat as kept: its unchanging part, its latest snapshot, its delivered ids.

    ``poll_sent`` is when its last poll may have been sent, on this node's wall clock (0:
    no poll can be outstanding).
    """

    static: bytes
    snapshot: bytes
    delivered: list[str]
    poll_sent: float
    lists: dict[int, list[tuple[int, bytes]]]  # list -> [(key, data)], by key


class StoreStatistics(NamedTuple):
    """Counters of the writer, for metrics and the benchmark."""

    commits: int
    rows_written: int
    rows_deleted: int
    commit_seconds: float
    pending: int
    commit_failures: int = 0
    bytes_written: int = 0  # snapshots, unchanging parts and list items written


class Store(Protocol):
    """Where chats are kept; every change is confirmed through a callback on the loop."""

    async def load(self) -> dict[str, KeptChat]:
        """Open the store; return the chats this process goes on with, by chat id.

        Raises:
            OSError: the store cannot be opened or read.
        """
        ...

    def save(self, chat_id: str, snapshot: bytes, on_durable: Callback | None = None, *,
             static: bytes | None = None, delivered: Sequence[str] = (),
             items: Sequence[Item] = (), drops: Sequence[Drop] = ()) -> None:
        """Keep ``snapshot`` as the chat's; ``on_durable`` runs once it is committed.

        ``items`` are added to (or replace keys of) the chat's kept lists; each drop
        ``(list, first, last)`` removes that list's keys ``first..last`` (inclusive), applied
        before the items.
        """
        ...

    def touch(self, chat_id: str, poll_sent: float, on_durable: Callback | None = None) -> None:
        """Record that the chat is about to poll Salesforce (before the poll goes)."""
        ...

    def delete(self, chat_id: str) -> None:
        """Forget the chat (it ended, and OCP knows)."""
        ...

    def may_send(self) -> bool:
        """Whether this process may send to Salesforce now (it holds its lease, if any)."""
        ...

    def statistics(self) -> StoreStatistics:
        """The writer's counters."""
        ...

    async def flush(self, timeout: float) -> bool:
        """Wait until everything saved so far is committed; ``False`` on timeout."""
        ...

    async def aclose(self, timeout: float = 5.0) -> None:
        """Write what is pending, then close. Idempotent."""
        ...
