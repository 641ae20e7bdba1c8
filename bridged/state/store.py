"""The state store's interface: what the daemon and the actors need of it, whatever keeps it.

Two implementations: :class:`bridged.state.sqlite.StateStore` (one node, ``state.dir``) and
:class:`bridged.state.redisstore.RedisStore` (several nodes, ``[cluster]``). The daemon picks
one from the config; nothing else knows which.
"""

from __future__ import annotations

__all__ = ["Callback", "Drop", "Item", "KeptChat", "Store", "StoreStatistics"]

from collections.abc import Callable, Sequence
from typing import NamedTuple, Protocol

Callback = Callable[[], None]
# An item of a kept list: (list, key, data); a range of keys that is gone: (list, first, last).
Item = tuple[int, int, bytes]
Drop = tuple[int, int, int]


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
