"""What the cluster's shared store says about its chats, for the admin view (read only).

Every chat of the cluster is in the owned set of the incarnation that holds it
(``b:owned:<node>/<inc>``), and every incarnation with chats is in ``b:nodes``; so a page
of chats is read with bounded work: one ``SMEMBERS b:nodes`` (one member per incarnation
that still holds chats), ``SSCAN`` of owned sets until the page is full, then one pipelined
``HMGET`` per chat of the page and one ``GET b:node:<node>`` per holder. The cursor says
where the next page starts (incarnation, ``SSCAN`` cursor, items of that batch already
shown). As with Redis' own ``SCAN``, a chat that moves while the pages are read may be shown
twice or not at all; nothing is locked, nothing is written.
"""

from __future__ import annotations

__all__ = ["ClusterChat", "ClusterNode", "ClusterPage", "read_chat", "read_page"]

from typing import Any, NamedTuple

import redis.asyncio as aioredis


class ClusterChat(NamedTuple):
    """One chat as the store has it: its holder, and its kept parts (opaque here)."""

    id: str
    node: str
    incarnation: str
    holder_live: bool  # the holder's lease is still its incarnation's
    gen: int  # how many times the chat changed hands, plus one
    last_poll_age_s: float | None  # on the store's clock; None: no poll recorded
    released: bool
    static: bytes
    snapshot: bytes


class ClusterNode(NamedTuple):
    """One incarnation of a node that holds chats (or did, and its lease is gone)."""

    node: str
    incarnation: str
    live: bool
    chats: int


class ClusterPage(NamedTuple):
    """A page of the cluster's chats, the incarnations, and where the next page starts."""

    chats: list[ClusterChat]
    nodes: list[ClusterNode]
    next: str | None


_FIELDS = ("owner", "inc", "gen", "poll_ms", "released", "static", "snap")


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _cursor(after: str | None) -> tuple[str, int, int]:
    """``member|sscan-cursor|skip`` (the member may itself hold no ``|``: node names do not)."""
    if not after:
        return "", 0, 0
    member, _, rest = after.rpartition("|")
    member, _, cursor = member.rpartition("|")
    try:
        return member, int(cursor), int(rest)
    except ValueError:
        raise ValueError("after: not a cursor this view gave") from None


async def read_page(client: aioredis.Redis, after: str | None, limit: int) -> ClusterPage:
    """Up to ``limit`` chats of the cluster, from the cursor ``after`` (``None``: the start).

    Raises:
        ValueError: ``after`` is not a cursor this view gave.
        redis.exceptions.RedisError: the store did not answer.
    """
    start, cursor, skip = _cursor(after)
    members = sorted(_text(m) for m in await client.smembers("b:nodes"))
    found: list[str] = []
    seen: set[str] = set()
    following: str | None = None
    for member in [m for m in members if m >= start]:
        if member != start:
            cursor, skip = 0, 0
        while following is None:
            next_cursor, batch = await client.sscan(f"b:owned:{member}", cursor,
                                                    count=max(limit, 10))
            for index, chat in enumerate(sorted(_text(b) for b in batch)[skip:], skip):
                if len(found) == limit:  # full inside this batch: the next page resumes it
                    following = f"{member}|{cursor}|{index}"
                    break
                if chat not in seen:
                    seen.add(chat)
                    found.append(chat)
            cursor, skip = int(next_cursor), 0
            if cursor == 0:
                break
        if following is not None:
            break
    chats = await _read_chats(client, found)
    async with client.pipeline(transaction=False) as pipe:
        for member in members:
            node = member.partition("/")[0]
            pipe.get(f"b:node:{node}")
            pipe.scard(f"b:owned:{member}")
        answers = await pipe.execute()
    nodes = []
    for index, member in enumerate(members):
        node, _, incarnation = member.partition("/")
        lease, count = answers[2 * index], answers[2 * index + 1]
        nodes.append(ClusterNode(node, incarnation,
                                 lease is not None and _text(lease) == incarnation, int(count)))
    return ClusterPage(chats, nodes, following)


async def read_chat(client: aioredis.Redis, chat_id: str) -> ClusterChat | None:
    """One chat of the cluster, or ``None`` if the store has no such chat."""
    chats = await _read_chats(client, [chat_id])
    return chats[0] if chats else None


async def _read_chats(client: aioredis.Redis, chat_ids: list[str]) -> list[ClusterChat]:
    """The chats' holders and kept parts (one pipelined round trip, then one more)."""
    if not chat_ids:
        return []
    async with client.pipeline(transaction=False) as pipe:
        pipe.time()
        for chat_id in chat_ids:
            pipe.hmget(f"b:chat:{chat_id}", _FIELDS)
        now_pair, *rows = await pipe.execute()
    now_ms = int(now_pair[0]) * 1000 + int(now_pair[1]) // 1000
    owners = sorted({_text(row[0]) for row in rows if row[0] is not None})
    leases = dict(zip(owners, await client.mget([f"b:node:{o}" for o in owners]) if owners
                      else [], strict=True))
    chats = []
    for chat_id, row in zip(chat_ids, rows, strict=True):
        owner, inc, gen, poll_ms, released, static, snap = row
        if owner is None or inc is None:
            continue  # deleted meanwhile
        node, incarnation = _text(owner), _text(inc)
        lease = leases.get(node)
        chats.append(ClusterChat(
            chat_id, node, incarnation, lease is not None and _text(lease) == incarnation,
            int(gen or 0),
            None if poll_ms is None else round((now_ms - int(poll_ms)) / 1000, 1),
            released is not None, bytes(static or b""), bytes(snap or b"")))
    return chats
