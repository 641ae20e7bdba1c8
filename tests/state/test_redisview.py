"""The cluster's chats read from a real redis-server a page at a time: each once, holders named."""

from __future__ import annotations

import redis.asyncio as aioredis

from bridged.state.redisview import read_chat, read_page
from tests.redis_server import RedisServer


async def fill(client: aioredis.Redis, holders: dict[str, tuple[bool, list[str]]]) -> None:
    """Incarnations ``node/inc`` (live or not) holding chats, as the store's scripts keep them."""
    async with client.pipeline(transaction=False) as pipe:
        for member, (live, chats) in holders.items():
            node, _, inc = member.partition("/")
            pipe.sadd("b:nodes", member)
            if live:
                pipe.set(f"b:node:{node}", inc)
            for chat in chats:
                pipe.sadd(f"b:owned:{member}", chat)
                pipe.hset(f"b:chat:{chat}", mapping={
                    "owner": node, "inc": inc, "token": "t", "gen": 2, "static": b"s",
                    "snap": b"p"})
        await pipe.execute()


async def test_every_chat_of_the_cluster_comes_once_page_after_page(
        redis_server: RedisServer) -> None:
    client = aioredis.Redis.from_url(redis_server.url)
    try:
        holders = {"a/1": (True, [f"a-{i}" for i in range(300)]),  # a big set: SSCAN steps
                   "b/2": (False, [f"b-{i}" for i in range(5)]),  # b is gone
                   "c/3": (True, []),
                   "d/4": (True, [f"d-{i}" for i in range(13)])}
        await fill(client, holders)
        await client.hset("b:chat:d-0", "poll_ms", 0)  # type: ignore[misc]
        seen: list[str] = []
        after = None
        pages = 0
        while True:
            page = await read_page(client, after, 7)
            pages += 1
            assert len(page.chats) <= 7
            seen += [chat.id for chat in page.chats]
            for chat in page.chats:
                node = chat.id.partition("-")[0]
                assert (chat.node, chat.holder_live, chat.gen) == (node, node != "b", 2)
            after = page.next
            if after is None:
                break
            assert pages < 100
        assert sorted(seen) == sorted(c for _, chats in holders.values() for c in chats)
        assert pages == -(-318 // 7)  # no empty page at the end
        assert [(n.node, n.live, n.chats) for n in page.nodes] == [
            ("a", True, 300), ("b", False, 5), ("c", True, 0), ("d", True, 13)]
        one = await read_chat(client, "d-0")
        assert one is not None and one.last_poll_age_s is not None and one.last_poll_age_s > 0
        assert await read_chat(client, "none") is None
    finally:
        await client.aclose()
