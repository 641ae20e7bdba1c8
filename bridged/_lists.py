"""Queues that are empty most of their life: the shared ``()`` until their first item.

A chat holds a dozen queues (requests, answers, stream items, facts, its inbox...) that are
empty between two messages, which is most of its life; an empty list takes 64 bytes, so
each of those is typed ``list[T] | tuple[()]`` and is ``()`` while empty (issue 12, memory
per chat). Drain one with ``out, self._q = self._q, ()``; add to one with :func:`appended`.
"""

from __future__ import annotations

__all__ = ["appended"]

from typing import TypeVar

T = TypeVar("T")


def appended(items: list[T] | tuple[()], item: T) -> list[T]:
    """``items`` with ``item`` at its end: the same list, or a new one in place of ``()``."""
    if items:
        items.append(item)
        return items
    return [item]
