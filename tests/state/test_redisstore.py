"""The Redis store's rules, against a real redis-server: leases, fencing, one winner per claim."""

from __future__ import annotations

import asyncio
from pathlib import Path

import msgspec

from bridged.config.file import ClusterConfig
from bridged.state.redisstore import FORWARD_MAXLEN, Held, RedisStore
from tests.redis_server import RedisServer, until


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
        assert await b.claim("c1") == Held("a")  # a's lease is alive: no takeover
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


async def test_a_chat_released_at_a_safe_point_is_claimed_with_no_wait(
        redis_server: RedisServer) -> None:
    a, b = RedisStore(config("a", redis_server.url)), RedisStore(config("b", redis_server.url))
    await a.load()
    await b.load()
    try:
        a.save("c1", b"snap-1", static=b"static")
        a.touch("c1", 0.0)  # a poll went: a claimer would have to wait it out
        a.save("c2", b"snap-2", static=b"static")
        a.touch("c2", 0.0)
        assert await a.flush(2)
        assert await b.release(["c1"]) == []  # not b's to release
        assert await a.release(["c1", "c2"]) == ["c1", "c2"]
        assert not a.holds("c1")
        claimed = await b.claim("c1")  # a is alive, but it let go of c1
        assert claimed is not None and not isinstance(claimed, Held)
        assert claimed.kept.poll_sent == 0  # no poll outstanding: b polls at once
        a.save("c1", b"late")  # nothing of a's goes through any more
        assert await a.flush(2)
        claimed_back = await a.claim("c2")  # a move nobody took: a takes it back
        assert claimed_back is not None and not isinstance(claimed_back, Held)
        assert claimed_back.kept.snapshot == b"snap-2" and a.holds("c2")
        assert await b.claim("c2") == Held("a")
        again = await b.claim("c1")
        assert again is None  # b's own
    finally:
        await a.aclose()
        await b.aclose()


async def test_forward_streams_are_read_in_order_and_bounded(
        redis_server: RedisServer) -> None:
    a, b = RedisStore(config("a", redis_server.url)), RedisStore(config("b", redis_server.url))
    await a.load()
    await b.load()
    try:
        await b.forward("a", {"kind": "old", "chat": "c0"})  # before a reads: not for it
        after, entries = await a.forwarded(None, 10)
        assert entries == []
        for i in range(FORWARD_MAXLEN * 3):
            await b.forward("a", {"kind": "command", "chat": f"c{i}"})
        # Trimmed as it grows: a reader that far behind finds the newest, in order.
        assert a._redis is not None
        assert await a._redis.xlen("b:fwd:a") < FORWARD_MAXLEN * 2
        seen: list[str] = []
        while True:
            after, entries = await a.forwarded(after, 10)
            if not entries:
                break
            seen += [e["chat"] for e in entries]
        first = int(seen[0][1:])
        assert seen == [f"c{i}" for i in range(first, FORWARD_MAXLEN * 3)]
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


async def test_kept_lists_change_item_by_item_and_a_takeover_gets_them_by_key(
        redis_server: RedisServer) -> None:
    a, b = RedisStore(config("a", redis_server.url)), RedisStore(config("b", redis_server.url))
    await a.load()
    await b.load()
    try:
        a.save("c1", b"s1", static=b"static",
               items=[(1, k, f"e{k}".encode()) for k in (3, 1, 2)] + [(2, -1, b"x")])
        a.save("c2", b"t1", static=b"static", items=[(1, 1, b"other chat")])
        a.save("c3", b"u1", static=b"static", items=[(3, k, b"gone") for k in (10, 11, 12)])
        assert await a.flush(2)
        # Dropped before added: a range that covers an item not yet written removes it too.
        a.save("c1", b"s2", drops=[(1, 1, 2)], items=[(1, 4, b"e4"), (1, 5, b"e5")])
        a.save("c1", b"s3", drops=[(1, 5, 5), (2, -1, -1)], items=[(2, 7, b"y")])
        # A range far wider than the list (found among its items, not named key by key).
        a.save("c3", b"u2", drops=[(3, 0, 10**12)], items=[(3, 13, b"kept")])
        a.delete("c2")  # a chat's lists go with it
        assert await a.flush(2)
        assert a.statistics().bytes_written > 0
        await a.aclose()  # gives the lease up: its chats are orphans at once
        claimed = await b.claim("c1")
        assert claimed is not None
        assert claimed.kept.snapshot == b"s3"
        assert claimed.kept.lists == {1: [(3, b"e3"), (4, b"e4")], 2: [(7, b"y")]}
        third = await b.claim("c3")
        assert third is not None and third.kept.lists == {3: [(13, b"kept")]}
        assert await b.claim("c2") is None  # deleted, with its lists
        # The new holder goes on keeping them, fenced by its own token.
        b.save("c1", b"s4", drops=[(1, 3, 3)], items=[(1, 6, b"e6")])
        assert await b.flush(2)
        async with b._redis.pipeline() as pipe:  # type: ignore[union-attr]
            pipe.hgetall("b:it:c1").exists("b:it:c2")
            fields, c2_left = await pipe.execute()
        assert fields == {b"1:4": b"e4", b"1:6": b"e6", b"2:7": b"y"}
        assert c2_left == 0
    finally:
        await a.aclose()
        await b.aclose()


async def test_with_min_replicas_a_commit_counts_once_a_replica_has_it_scripts_flushed_or_not(
        tmp_path: Path, redis_server: RedisServer) -> None:
    replica = RedisServer(tmp_path / "replica", replica_of=redis_server.port)
    store = RedisStore(msgspec.structs.replace(
        config("a", redis_server.url), min_replicas=1, wait_timeout_ms=100))
    try:
        until(lambda: replica.info("replication").get("master_link_status") == "up",
              "the replica did not sync")
        await store.load()
        durable: list[str] = []
        store.save("c1", b"s1", lambda: durable.append("s1"), static=b"static")
        assert await store.flush(2) and durable == ["s1"]
        # A server that never saw the scripts (a promoted replica of Redis 7, or a restart
        # without them): the pipeline loads them again.
        assert redis_server.command("SCRIPT", "FLUSH") == "OK"
        store.save("c1", b"s2", lambda: durable.append("s2"))
        assert await store.flush(2) and durable == ["s1", "s2"]
        replica.stop()  # no replica: nothing is confirmed, nothing acts on it
        store.save("c1", b"s3", lambda: durable.append("s3"))
        assert not await store.flush(1)
        assert durable == ["s1", "s2"]
        replica.start()  # back and in sync: the same commit, tried again, counts
        assert await store.flush(10)
        assert durable == ["s1", "s2", "s3"]
        assert replica.command("HGET", "b:chat:c1", "snap") == "s3"
    finally:
        await store.aclose()
        replica.stop()


async def test_with_min_replicas_a_commit_is_one_round_trip_not_a_script_check_each_time(
        tmp_path: Path, redis_server: RedisServer) -> None:
    replica = RedisServer(tmp_path / "replica", replica_of=redis_server.port)
    store = RedisStore(msgspec.structs.replace(
        config("a", redis_server.url), min_replicas=1, wait_timeout_ms=100))
    try:
        until(lambda: replica.info("replication").get("master_link_status") == "up",
              "the replica did not sync")
        await store.load()
        store.save("c1", b"s0", static=b"static")
        assert await store.flush(2)  # the script is loaded now
        assert redis_server.command("CONFIG", "RESETSTAT") == "OK"
        for i in range(1, 21):
            store.save("c1", f"s{i}".encode())
            assert await store.flush(2)
        calls = {name.removeprefix("cmdstat_"): int(stats.split(",")[0].partition("=")[2])
                 for name, stats in redis_server.info("commandstats").items()}
        # Each commit: the script and WAIT, pipelined; no SCRIPT EXISTS before each one.
        assert calls["wait"] == 20 and calls["evalsha"] >= 20  # (lease renewals too)
        assert "script" not in calls
        assert replica.command("HGET", "b:chat:c1", "snap") == "s20"
    finally:
        await store.aclose()
        replica.stop()


async def test_a_chat_ended_and_started_again_under_its_id_is_kept_whole(
        redis_server: RedisServer) -> None:
    # OCP may start a chat id again the moment its `ended` went out (the old one is deleted
    # once acknowledged): the new chat's first save can meet the old one's delete in one
    # pending change, or follow it while that delete is being committed. Either way the new
    # chat is kept whole: a node that takes it over finds its snapshot, unchanging part and
    # kept lists, not the old chat's and not nothing.
    a, b = RedisStore(config("a", redis_server.url)), RedisStore(config("b", redis_server.url))
    await a.load()
    await b.load()
    try:
        for chat, in_flight in (("c1", False), ("c2", True)):
            a.save(chat, b"old", static=b"old-static", delivered=["m-old"],
                   items=[(0, 1, b"old-item")])
            assert await a.flush(2)
            a.delete(chat)
            if in_flight:
                await asyncio.sleep(0)  # the writer takes the delete's batch
                await asyncio.sleep(0)
            a.save(chat, b"new", static=b"new-static", delivered=["m-new"],
                   items=[(0, 1, b"new-item")])
            assert await a.flush(2)
            a.save(chat, b"newer")  # and it goes on being written
            assert await a.flush(2)
        for task in a._tasks:  # a freezes: b takes its chats over
            task.cancel()
        await asyncio.sleep(0.8)
        for chat in ("c1", "c2"):
            claimed = await b.claim(chat)
            assert claimed is not None and not isinstance(claimed, Held), chat
            assert claimed.kept.snapshot == b"newer", chat
            assert claimed.kept.static == b"new-static", chat
            assert claimed.kept.delivered == ["m-new"], chat
            assert claimed.kept.lists == {0: [(1, b"new-item")]}, chat
    finally:
        await a.aclose()
        await b.aclose()


async def test_a_callback_that_fails_keeps_no_other_chat_from_learning_its_commit(
        redis_server: RedisServer) -> None:
    store = RedisStore(config("a", redis_server.url))
    await store.load()
    try:
        durable: list[str] = []

        def broken() -> None:
            raise RuntimeError("a bug in that chat's actor")

        store.save("c1", b"one", broken, static=b"static")
        store.save("c2", b"two", lambda: durable.append("c2"), static=b"static")
        assert await store.flush(2)
        assert durable == ["c2"]
    finally:
        await store.aclose()
