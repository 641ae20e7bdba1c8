"""The Redis store's rules, against a real redis-server: leases, fencing, one winner per claim."""

from __future__ import annotations

import asyncio

from bridged.config.file import ClusterConfig
from bridged.state.redisstore import RedisStore
from tests.redis_server import RedisServer


def config(node: str, url: str) -> ClusterConfig:
    return ClusterConfig(node=node, redis_url=url, lease_ttl_ms=600, renew_interval_ms=100,
                         lease_margin_ms=100, scan_interval_ms=50, socket_timeout_s=0.5)


async def test_a_node_that_lost_its_chat_gets_no_write_through(
        redis_server: RedisServer) -> None:
    a, b = RedisStore(config("a", redis_server.url)), RedisStore(config("b", redis_server.url))
    await a.load()
    await b.load()
    try:
        durable: list[str] = []
        a.save("c1", b"snap-1", lambda: durable.append("a1"), static=b"static",
               delivered=["m1"])
        a.touch("c1", 0.0)
        assert await a.flush(2)
        assert durable == ["a1"]
        assert await b.claim("c1") is None  # a's lease is alive: no takeover
        for task in a._tasks:  # a freezes: no renewal from now on
            task.cancel()
        await asyncio.sleep(0.8)  # past a's lease
        assert not a.may_send()  # a itself knows it may not send
        claimed = await b.claim("c1")
        assert claimed is not None
        assert claimed.kept.snapshot == b"snap-1" and claimed.kept.delivered == ["m1"]
        assert claimed.kept.poll_sent > 0  # a poll may be outstanding: the new holder waits
        assert await a.claim("c1") is None  # one winner
    finally:
        await a.aclose()
        await b.aclose()


async def test_the_store_losing_its_data_is_seen(redis_server: RedisServer) -> None:
    a = RedisStore(config("a", redis_server.url))
    lost: list[bool] = []
    a.on_store_lost = lambda: lost.append(True)
    await a.load()
    try:
        a.save("c1", b"snap", static=b"static")
        assert await a.flush(2)
        redis_server.wipe()
        await asyncio.to_thread(redis_server.start)
        async with asyncio.timeout(5):
            while not lost:
                await asyncio.sleep(0.05)
        assert not a.holds("c1")
    finally:
        await a.aclose()
