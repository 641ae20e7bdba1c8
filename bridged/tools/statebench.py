"""``bridged bench-state``: what keeping chats across restarts costs.

Many chats change at a given total rate (rate times seconds changes, paced, so that every
run makes the same changes); each change saves the chat's whole snapshot (of a realistic
size) to the state store, as the actors do. It prints how many commits (and so,
with ``synchronous = "full"``, fsyncs) that became, the rows written, the mean commit time,
the share of one core the writer thread used, and how long a change waited to be durable
(the latency it adds before an event goes to OCP).

Then one real chat (a Live Agent actor's save, as it runs) that holds many events OCP has not
acknowledged and many visitor messages waiting for an agent: what one save costs on the
event loop (building and encoding what is handed to the store), how many bytes it hands
over, and its commit, as one more event arrives, for a few sizes of what the chat holds.

With ``--store redis`` the same workload runs, in the same run, on SQLite
(``synchronous = "normal"``) and on the shared store of a cluster (``RedisStore``, against a
redis-server this starts on 127.0.0.1, its data in an append-only file fsynced every
second), and the table gives Redis's figures as ratios to SQLite's: what a commit costs this
process (it runs on the event loop for both) and, for Redis, the server's CPU besides.

Last, a commit of one chat (and of ten) of the usual shape, as a relayed message makes it
(its acknowledged event dropped, the new one added, its snapshot, its poll time, a delivered
id), in a database of a few thousand chats: the CPU it takes on the event loop and the WAL
bytes it appends, for the statements and schema as they were before (the kept lists'
table with a rowid), for today's statements on a database of that schema (one made before
keeps its form), and for today's, their commits interleaved in one run, as ratios to the
first. That table alone: ``python -m bridged.tools.statebench``.
"""

from __future__ import annotations

__all__ = ["run_commit_benchmark", "run_state_benchmark", "run_store_comparison"]

import asyncio
import functools
import os
import random
import sqlite3
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Literal

from bridged.chats import facts
from bridged.chats.chat import Chat
from bridged.chats.gate import Gate
from bridged.chats.policy import RetryPolicy
from bridged.config.file import ClusterConfig, SalesforceConfig
from bridged.config.webchat import WebchatConfig, WebchatFields, resolve_webchat
from bridged.ocp import envelopes as env
from bridged.salesforce.liveagent.actor import ChatActor, session_params
from bridged.salesforce.liveagent.protocol import LiveAgentSession
from bridged.state.redisstore import RedisStore
from bridged.state.sqlite import StateStore, _Change
from bridged.state.store import Store
from bridged.tools.loadtest.procs import cpu_seconds, free_port
from bridged.tools.redisproc import find_redis_server, start_redis, stop_redis

_BASE = "https://d.la1-c1-fra.salesforceliveagent.com/chat/rest/"


def _note_wait(waits: list[float], loop: asyncio.AbstractEventLoop, sent: float) -> None:
    waits.append(loop.time() - sent)


async def _run(chats: int, rate: float, seconds: float, size: int,
               synchronous: Literal["normal", "full"], directory: str,
               redis_url: str | None = None, redis_pid: int | None = None,
               ) -> dict[str, float]:
    """The workload on SQLite in ``directory``, or with ``redis_url`` on a RedisStore (the
    server's CPU read from ``redis_pid``)."""
    store: Store
    if redis_url is None:
        sqlite = StateStore(directory, synchronous)
        sqlite.open()
        store = sqlite
    else:
        redis_store = RedisStore(ClusterConfig(node="bench-state", redis_url=redis_url))
        await redis_store.load()
        store = redis_store
    loop = asyncio.get_running_loop()
    server_cpu = cpu_seconds(redis_pid) if redis_pid else None
    waits: list[float] = []
    blob = os.urandom(size)
    interval = 1.0 / rate
    started = loop.time()
    process_cpu = time.process_time()
    # A fixed count, paced at the rate, not as many as fit in the time: both stores of a
    # comparison then run the same workload, however fast the machine is.
    count = max(1, round(rate * seconds))
    for n in range(count):
        due = started + n * interval
        if due > loop.time():
            await asyncio.sleep(due - loop.time())
        store.save(f"chat-{n % chats}", blob,
                   functools.partial(_note_wait, waits, loop, loop.time()))
    await store.flush(30)
    elapsed = loop.time() - started
    process_used = time.process_time() - process_cpu
    stats = store.statistics()
    server_used = 0.0
    if redis_pid and server_cpu is not None:
        server_used = (cpu_seconds(redis_pid) or server_cpu) - server_cpu
    await store.aclose()
    return {
        "changes": count,
        "changes_per_s": count / elapsed,
        "commits": stats.commits,
        "commits_per_s": stats.commits / elapsed,
        "rows_written": stats.rows_written,
        "mean_commit_ms": 1000 * stats.commit_seconds / max(1, stats.commits),
        "writer_core_share": stats.commit_seconds / elapsed,
        "process_core_share": process_used / elapsed,
        "process_cpu_ms_per_change": 1000 * process_used / max(1, count),
        "server_cpu_ms_per_change": 1000 * server_used / max(1, count),
        "cpu_ms_per_change": 1000 * (process_used + server_used) / max(1, count),
        "commit_ms_per_change": 1000 * stats.commit_seconds / max(1, count),
        "durable_wait_p50_ms": 1000 * statistics.median(waits) if waits else 0.0,
        "durable_wait_p99_ms": (1000 * statistics.quantiles(waits, n=100)[98]
                                if len(waits) >= 100 else 0.0),
    }


async def _chat_save(held: int, pending: int, directory: str,
                     saves: int = 200, redis_url: str | None = None) -> dict[str, float]:
    """One chat holding ``held`` events (at least 1) and ``pending`` visitor messages:
    ``saves`` saves, each after one more event (and OCP's ack of the oldest); on SQLite in
    ``directory``, or on a RedisStore at ``redis_url``."""
    store: StateStore | RedisStore
    if redis_url is None:
        store = StateStore(directory, commit_interval=0)  # the commit itself, as waited
        store.open()
    else:
        store = RedisStore(ClusterConfig(node="bench-state", redis_url=redis_url))
        await store.load()
    handed: list[int] = []
    save = store.save

    def counting(chat_id: str, snapshot: bytes, *args: object, **kwargs: object) -> None:
        size = len(snapshot)
        for _, _, data in kwargs.get("items", ()):  # type: ignore[attr-defined]
            size += len(data)
        handed.append(size)
        save(chat_id, snapshot, *args, **kwargs)  # type: ignore[arg-type]

    store.save = counting  # type: ignore[method-assign]
    webchat = resolve_webchat(WebchatFields(
        live_agent_base_url=_BASE, organization_id="00D000000000001",
        deployment_id="572000000000001", button_id="573000000000001"), None, {},
        ["*.salesforceliveagent.com"])
    assert isinstance(webchat, WebchatConfig)
    chat = Chat("bench-1", webchat, env.Start(chat="bench-1"), inbox_size=64,
                max_held=held + 1)
    session = LiveAgentSession(session_params(webchat, SalesforceConfig()))
    session.start()
    actor = ChatActor(chat, session, None, request_timeout=30,  # type: ignore[arg-type]
                      max_pending=pending + 1, retry=RetryPolicy(), start_gate=Gate(1),
                      allowed_hosts=[], store=store)
    for i in range(pending):
        session.send_text(f"m{i}", f"visitor message {i} " + "v" * 500)
    for i in range(held):
        chat.emit(facts.AgentMessage(agent="Ada", text=f"agent message {i} " + "a" * 200))
    actor._save()
    await store.flush(30)
    before = store.statistics()
    handed.clear()
    spent = 0.0
    for i in range(saves):
        chat.emit(facts.AgentMessage(agent="Ada", text=f"one more {i} " + "a" * 200))
        if len(chat.held) > held:
            chat.ack(chat.held[0].seq)  # OCP acknowledges the oldest: the chat holds as many
        started = time.perf_counter()
        actor._save()
        spent += time.perf_counter() - started
        await store.flush(30)
        await asyncio.sleep(0)
    after = store.statistics()
    await store.aclose()
    commits = max(1, after.commits - before.commits)
    return {
        "save_on_loop_ms": 1000 * spent / saves,
        "bytes_per_save": statistics.mean(handed) if handed else 0.0,
        "commit_ms": 1000 * (after.commit_seconds - before.commit_seconds) / commits,
    }


def run_chat_save_benchmark() -> None:
    """Print what one chat's save costs for a few sizes of what it holds."""
    print("one chat's save as one more event arrives (Live Agent actor, synchronous=normal)",
          flush=True)
    print(f"{'held events':>12} {'waiting msgs':>13} {'on the loop':>12} {'bytes':>9} "
          f"{'commit':>9}")
    for held, pending in ((1, 0), (100, 0), (1000, 0), (1, 200), (1000, 200)):
        with tempfile.TemporaryDirectory(prefix="bridged-bench-") as directory:
            figures = asyncio.run(_chat_save(held, pending, directory))
        print(f"{held:>12} {pending:>13} {figures['save_on_loop_ms']:>9.3f} ms "
              f"{figures['bytes_per_save']:>9.0f} {figures['commit_ms']:>6.3f} ms", flush=True)


def run_state_benchmark(chats: int, rate: float, seconds: float, size: int) -> int:
    """Run both durability settings and print a table; returns an exit code."""
    print(f"state store: {chats} chats, {rate:g} changes/s, {seconds:g} s, "
          f"{size} B snapshots", flush=True)
    rows = []
    for synchronous in ("normal", "full"):
        with tempfile.TemporaryDirectory(prefix="bridged-bench-") as directory:
            figures = asyncio.run(_run(chats, rate, seconds, size, synchronous, directory))
        rows.append((synchronous, figures))
    keys = list(rows[0][1])
    width = max(len(k) for k in keys)
    print(f"{'':{width}}  " + "  ".join(f"{name:>12}" for name, _ in rows))
    for key in keys:
        print(f"{key:{width}}  " + "  ".join(f"{figures[key]:12.2f}" for _, figures in rows))
    print()
    run_chat_save_benchmark()
    print()
    run_commit_benchmark()
    return 0


def run_store_comparison(chats: int, rate: float, seconds: float, size: int,
                         redis_server: str | None = None) -> int:
    """The same workload on SQLite (normal) and on the cluster's Redis store, in one run;
    prints both and Redis's ratios to SQLite; returns an exit code (2: no redis-server)."""
    from bridged.tools.redisproc import RedisNotFound

    try:
        executable = find_redis_server(redis_server)
    except RedisNotFound as exc:
        print(f"bridged bench-state: {exc}", file=sys.stderr)
        return 2
    print(f"state store, SQLite against Redis ({executable}): {chats} chats, {rate:g} "
          f"changes/s, {seconds:g} s, {size} B snapshots", flush=True)
    with tempfile.TemporaryDirectory(prefix="bridged-bench-") as directory:
        sqlite = asyncio.run(_run(chats, rate, seconds, size, "normal",
                                  str(Path(directory) / "sqlite")))
        port = free_port()
        proc = start_redis(executable, port, Path(directory) / "redis")
        try:
            redis = asyncio.run(_run(chats, rate, seconds, size, "normal", directory,
                                     redis_url=f"redis://127.0.0.1:{port}/0",
                                     redis_pid=proc.pid))
            saves = []
            for db, (held, pending) in enumerate(((1, 0), (1000, 0), (1000, 200)), 1):
                one = asyncio.run(_chat_save(held, pending, str(Path(directory) / f"s{db}"),
                                             saves=100))
                # A database of its own each: the same chat id, created afresh.
                other = asyncio.run(_chat_save(held, pending, directory, saves=100,
                                               redis_url=f"redis://127.0.0.1:{port}/{db}"))
                saves.append((held, pending, one, other))
        finally:
            stop_redis(proc)
    keys = list(sqlite)
    width = max(len(k) for k in keys)
    print(f"{'':{width}}  {'sqlite':>12}  {'redis':>12}  {'redis/sqlite':>12}")
    for key in keys:
        a, b = sqlite[key], redis[key]
        shown = f"{b / a:12.2f}" if a else f"{'':12}"
        print(f"{key:{width}}  {a:12.3f}  {b:12.3f}  {shown}")
    print("(cpu_ms_per_change: this process's CPU (the store's client, on the event loop, "
          "and the benchmark's own loop) plus, for Redis, redis-server's)")
    print()
    print("one chat's save as one more event arrives (Live Agent actor): commit, as waited")
    print(f"{'held events':>12} {'waiting msgs':>13} {'sqlite':>9} {'redis':>9} {'ratio':>6}")
    for held, pending, one, other in saves:
        ratio = other["commit_ms"] / one["commit_ms"] if one["commit_ms"] else 0.0
        print(f"{held:>12} {pending:>13} {one['commit_ms']:>6.3f} ms {other['commit_ms']:>6.3f}"
              f" ms {ratio:>6.2f}", flush=True)
    return 0


# --- one chat's commit, before and now ------------------------------------------------------

# The kept lists' table as databases made before WITHOUT ROWID have it.
_OLD_ITEMS_SCHEMA = """CREATE TABLE items (
    chat TEXT NOT NULL,
    list INTEGER NOT NULL,
    key INTEGER NOT NULL,
    data BLOB NOT NULL,
    PRIMARY KEY (chat, list, key)
)"""

# A Live Agent chat's sizes, as the actor's save above hands them over: its snapshot, its
# unchanging part (written once) and a held event.
_SNAPSHOT_BYTES, _STATIC_BYTES, _ITEM_BYTES = 540, 1330, 270


class _MeasuredStore(StateStore):
    """The store, with the CPU time its commits take on the loop's thread, one by one."""

    def __init__(self, directory: str | Path) -> None:
        super().__init__(directory, commit_interval=0)  # a commit per turn: each measured
        self.commit_cpu: list[float] = []

    def _write(self, connection: sqlite3.Connection, batch: dict[str, _Change],
               inline: bool = False) -> None:
        started = time.thread_time()
        super()._write(connection, batch, inline)
        self.commit_cpu.append(time.thread_time() - started)


class _PreviousStatements(_MeasuredStore):
    """The store with the statements of its commits as they were before: one list of
    parameters per statement, each run by ``executemany``, and the poll time and the
    unchanging part each an UPDATE of their own after the snapshot's upsert."""

    def _statements(self, connection: sqlite3.Connection,
                    batch: dict[str, _Change]) -> tuple[int, int, int]:
        now = time.time()
        deletes: list[tuple[str]] = []
        upserts: list[tuple[str, bytes, float]] = []
        statics: list[tuple[bytes, str]] = []
        touches: list[tuple[float, str]] = []
        delivered: list[tuple[str, str]] = []
        drops: list[tuple[str, int, int, int]] = []
        items: list[tuple[str, int, int, bytes]] = []
        written = 0
        for chat_id, change in batch.items():
            if change.delete:
                deletes.append((chat_id,))
            if change.snapshot is not None:
                upserts.append((chat_id, change.snapshot, now))
                written += len(change.snapshot)
            if change.static is not None:
                statics.append((change.static, chat_id))
                written += len(change.static)
            if change.poll_sent is not None:
                touches.append((change.poll_sent, chat_id))
            delivered.extend((chat_id, message) for message in change.delivered)
            drops.extend((chat_id, *drop) for drop in change.drops)
            for (list_id, key), data in change.items.items():
                items.append((chat_id, list_id, key, data))
                written += len(data)
        if deletes:
            connection.executemany("DELETE FROM chats WHERE id = ?", deletes)
            connection.executemany("DELETE FROM delivered WHERE chat = ?", deletes)
            connection.executemany("DELETE FROM items WHERE chat = ?", deletes)
        if drops:
            connection.executemany(
                "DELETE FROM items WHERE chat = ? AND list = ? AND key BETWEEN ? AND ?", drops)
        if items:
            connection.executemany(
                "INSERT OR REPLACE INTO items (chat, list, key, data) VALUES (?, ?, ?, ?)",
                items)
        if upserts:
            connection.executemany(
                "INSERT INTO chats (id, snapshot, updated) VALUES (?, ?, ?) "
                "ON CONFLICT(id) DO UPDATE SET snapshot = excluded.snapshot, "
                "updated = excluded.updated", upserts)
        if statics:
            connection.executemany("UPDATE chats SET static = ? WHERE id = ?", statics)
        if touches:
            connection.executemany("UPDATE chats SET poll_sent = ? WHERE id = ?", touches)
        if delivered:
            connection.executemany(
                "INSERT OR IGNORE INTO delivered (chat, id) VALUES (?, ?)", delivered)
        return len(upserts), len(deletes), written


def _make_old_schema(directory: str | Path) -> None:
    """Create, in ``directory``, a state database whose kept lists' table has a rowid, as
    bridged made them before."""
    path = Path(directory)
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    connection = sqlite3.connect(path / "chats.sqlite3")
    try:
        connection.execute("PRAGMA journal_mode=WAL")
        connection.execute(_OLD_ITEMS_SCHEMA)
    finally:
        connection.close()


class _Workload:
    """``chats`` chats kept in one store, changed as a relayed message changes them.

    With ``item_bytes``: the acknowledged event dropped, the new one (of that size) added,
    the snapshot, the poll time, an OCP message's id delivered; with 0, only the snapshot
    and the poll time.
    """

    def __init__(self, store: _MeasuredStore, chats: int, item_bytes: int) -> None:
        self.store = store
        self.full = item_bytes > 0
        self.next_key = [3] * chats  # each chat holds keys next-3 .. next-1
        self.snapshot = os.urandom(_SNAPSHOT_BYTES)
        self.item = os.urandom(item_bytes or _ITEM_BYTES)
        self.durable = 0

    def _durable(self) -> None:
        self.durable += 1

    def fill(self) -> None:
        """Every chat as it stands after a few messages: three events held, five ids."""
        static = os.urandom(_STATIC_BYTES)
        for n in range(len(self.next_key)):
            self.store.save(f"chat-{n:06d}", self.snapshot, static=static,
                            items=[(1, key, self.item) for key in range(3)],
                            delivered=[f"ocp-{n}-{i}" for i in range(5)])

    def change(self, n: int, now: float) -> None:
        """Chat ``n`` changes once."""
        chat_id = f"chat-{n:06d}"
        if self.full:
            key = self.next_key[n]
            self.next_key[n] = key + 1
            self.store.save(chat_id, self.snapshot, self._durable,
                            items=[(1, key, self.item)], drops=[(1, key - 3, key - 3)],
                            delivered=[f"ocp-{n}-m{key}"])
        else:
            self.store.save(chat_id, self.snapshot, self._durable)
        self.store.touch(chat_id, now)


async def _turns(works: list[_Workload], chats: int, per_commit: int, count: int,
                 pick: random.Random) -> None:
    """``count`` turns of the loop; in each, the same ``per_commit`` chats change in every
    store, which then commits (the stores take turns at going first)."""
    loop = asyncio.get_running_loop()
    for turn in range(count):
        picked = pick.sample(range(chats), per_commit)
        first = turn % len(works)
        for work in works[first:] + works[:first]:
            for n in picked:
                work.change(n, loop.time())
        await asyncio.sleep(0)  # the loop's turn ends: each store commits


def _wal_bytes(path: Path) -> int:
    return os.path.getsize(f"{path}-wal") if os.path.exists(f"{path}-wal") else 0


async def _wal_per_commit(works: list[_Workload], chats: int, per_commit: int, count: int,
                          pick: random.Random) -> list[float]:
    """WAL bytes each store appends per commit: each WAL emptied, then held by a reader's
    snapshot so that no checkpoint can reuse it (it only grows, by what is written)."""
    readers = []
    try:
        for work in works:
            reader = sqlite3.connect(work.store.path, isolation_level=None, timeout=5)
            readers.append(reader)
            for _ in range(100):
                if reader.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()[0] == 0:
                    break
                await asyncio.sleep(0.01)
        await _turns(works, chats, per_commit, 1, pick)
        for reader in readers:
            reader.execute("BEGIN")
            reader.execute("SELECT count(*) FROM chats").fetchone()
        start = [_wal_bytes(work.store.path) for work in works]
        await _turns(works, chats, per_commit, count, pick)
        return [(_wal_bytes(work.store.path) - begun) / count
                for work, begun in zip(works, start, strict=True)]
    finally:
        for reader in readers:
            reader.close()


_VARIANTS: tuple[tuple[str, type[_MeasuredStore], bool], ...] = (
    ("before", _PreviousStatements, True),
    ("now, old-schema db", _MeasuredStore, True),
    ("now", _MeasuredStore, False),
)


async def _commit_figures(directory: str, chats: int, commits: int, per_commit: int,
                          item_bytes: int) -> list[dict[str, float]]:
    """Each variant's CPU per commit (the median of ``commits``, the variants' commits
    interleaved: a noisy moment falls on all alike) and WAL bytes per commit."""
    works = []
    for n, (_, kind, old_schema) in enumerate(_VARIANTS):
        sub = Path(directory) / f"db{n}"
        if old_schema:
            _make_old_schema(sub)
        store = kind(sub)
        store.open()
        work = _Workload(store, chats, item_bytes)
        work.fill()
        works.append(work)
    pick = random.Random(7)
    short = max(10, commits // 5)  # the warming pass, and the WAL's
    try:
        for work in works:
            await work.store.flush(30)
        await _turns(works, chats, per_commit, short, pick)
        for work in works:
            work.store.commit_cpu.clear()
        await _turns(works, chats, per_commit, commits, pick)
        assert all(len(work.store.commit_cpu) == commits for work in works), (
            "one commit per turn of the loop")
        cpu = [statistics.median(work.store.commit_cpu) for work in works]
        wal = await _wal_per_commit(works, chats, per_commit, short, pick)
    finally:
        for work in works:
            await work.store.aclose()
    changes = per_commit * (short + commits + 1 + short)
    assert all(work.durable == changes for work in works), "every change became durable"
    connection = sqlite3.connect(works[0].store.path)
    try:
        page = connection.execute("PRAGMA page_size").fetchone()[0]
    finally:
        connection.close()
    return [{"cpu_us": 1e6 * c, "wal_bytes": w, "pages": w / (page + 24)}
            for c, w in zip(cpu, wal, strict=True)]


def run_commit_benchmark(chats: int = 2000, commits: int = 2000) -> None:
    """Print what a commit of one chat (and of ten) costs, before and now, in one run."""
    print(f"a commit on the event loop, {chats} chats kept, {commits} commits each, the "
          "variants' commits interleaved; ratios to before", flush=True)
    print(f"{'each chat changed by':22} {'chats':>5}  {'':18} {'CPU/commit':>10} "
          f"{'WAL bytes':>9} {'pages':>5}  ratios: {'CPU':>4} {'WAL':>5}")
    for shape, item_bytes, per_commit in (("a relayed message", _ITEM_BYTES, 1),
                                          ("a relayed message", _ITEM_BYTES, 10),
                                          ("a message of 1.2 KB", 1200, 1),
                                          ("snapshot, poll time", 0, 1)):
        count = commits // per_commit
        with tempfile.TemporaryDirectory(prefix="bridged-bench-") as directory:
            figures = asyncio.run(_commit_figures(directory, chats, count, per_commit,
                                                  item_bytes))
        base = figures[0]
        for (name, _, _), row in zip(_VARIANTS, figures, strict=True):
            print(f"{shape:22} {per_commit:>5}  {name:18} {row['cpu_us']:>7.1f} us "
                  f"{row['wal_bytes']:>9.0f} {row['pages']:>5.2f}  {'':7} "
                  f"{row['cpu_us'] / base['cpu_us']:>4.2f} "
                  f"{row['wal_bytes'] / base['wal_bytes']:>5.2f}", flush=True)
    print("(CPU: the loop thread's, median per commit; WAL: bytes appended per commit, in "
          "pages of 4 KiB with a frame header each; a message of 1.2 KB: an event longer "
          "than the kept lists hold in their b-tree's page (1 KB without a rowid) keeps its "
          "rest in a page of its own)")


if __name__ == "__main__":
    run_commit_benchmark()
