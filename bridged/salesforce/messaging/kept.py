"""The parts of an Enhanced Chat session kept apart from its snapshot, item by item (sans-I/O).

Every save writes the session's snapshot whole. Its large parts change seldom (the guest
token, about 1 KiB; the routing attributes as sent) or grow by one id at a time (the entry
ids seen, up to ``SEEN_IDS_MAX``; the OCP ids delivered, up to ``DELIVERED_IDS_MAX``): inline
they were most of each save's bytes (about 7 KB in a long chat, for a change of one id). They
go as items of the chat's kept lists instead (see :mod:`bridged.chats.chat`), each written
once, when it is new, and dropped as a range of keys when it falls out of its window.

The lists, numbered from the ``first`` list the shell gives: :data:`SEEN`, :data:`DELIVERED`,
:data:`TOKEN`, :data:`ROUTING` (relative numbers).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Self

__all__ = ["DELIVERED", "KEPT_LISTS", "ROUTING", "SEEN", "TOKEN", "IdWindow", "KeptItems"]

SEEN, DELIVERED, TOKEN, ROUTING = 0, 1, 2, 3
KEPT_LISTS = 4  # how many list numbers the session takes, from the shell's first
KeptItems = Mapping[int, Sequence[tuple[int, bytes]]]  # list number -> [(key, data)] by key


class IdWindow:
    """The newest ``most`` ids in arrival order, each with a number, and what changed in them
    since the last :meth:`take_changes`.

    The n-th id added has key ``n``: the ids held have consecutive keys, so the window's
    changes are a range of keys gone (the oldest) and the newest ids added. One dict, id to
    number, in insertion order: membership and eviction of the oldest are C-level operations.
    """

    __slots__ = ("_gone_key", "_ids", "_most", "_next_key", "_taken_key")

    def __init__(self, most: int, ids: Iterable[tuple[str, int]] = ()) -> None:
        self._most = most
        self._ids: dict[str, int] = {}
        self._next_key = self._taken_key = self._gone_key = 0
        for entry_id, number in ids:
            self.add(entry_id, number)

    @classmethod
    def restore(cls, most: int, kept: Sequence[tuple[int, bytes]],
                decode: Callable[[bytes], tuple[str, int]],
                inline: Iterable[tuple[str, int]] = ()) -> Self:
        """The window of kept items (``(key, data)`` by key) after ``inline`` ids (those of a
        snapshot of an earlier version, which kept them inside it).

        The ids get new keys, after the kept ones: the first :meth:`take_changes` drops the
        old keys and writes the ids anew (once per restore), so a restored window never
        relies on the old keys being consecutive.
        """
        window = cls(most)
        if kept:
            window._gone_key = kept[0][0]
            window._next_key = window._taken_key = kept[-1][0] + 1
        for entry_id, number in itertools.chain(inline, (decode(data) for _, data in kept)):
            window.add(entry_id, number)
        return window

    def __contains__(self, entry_id: object) -> bool:
        return entry_id in self._ids

    def __len__(self) -> int:
        return len(self._ids)

    def ids(self) -> list[str]:
        """The ids held, oldest first."""
        return list(self._ids)

    def add(self, entry_id: str, number: int = 0) -> int | None:
        """Hold ``entry_id`` (unless held already); the number of the id it evicted, if any."""
        ids = self._ids
        if entry_id in ids:
            return None
        ids[entry_id] = number
        self._next_key += 1
        if len(ids) > self._most:
            return ids.pop(next(iter(ids)))
        return None

    @property
    def changed(self) -> bool:
        """Whether :meth:`take_changes` would append anything."""
        return self._taken_key != self._next_key or (
            self._gone_key != self._next_key - len(self._ids))

    def take_changes(self, list_number: int, items: list[tuple[int, int, bytes]],
                     drops: list[tuple[int, int, int]],
                     encode: Callable[[str, int], bytes]) -> None:
        """Append the ids added since the last call as items of ``list_number`` (encoded by
        ``encode(id, number)``), and the range of keys gone, for a save."""
        first_held = self._next_key - len(self._ids)
        if self._gone_key < first_held:
            # Keys below _taken_key were written; later ones evicted before any save were not.
            last_written = min(first_held, self._taken_key) - 1
            if last_written >= self._gone_key:
                drops.append((list_number, self._gone_key, last_written))
            self._gone_key = first_held
        new = self._next_key - max(self._taken_key, first_held)
        if new > 0:
            newest = list(itertools.islice(reversed(self._ids.items()), new))
            key = self._next_key - new
            for entry_id, number in reversed(newest):
                items.append((list_number, key, encode(entry_id, number)))
                key += 1
        self._taken_key = self._next_key
