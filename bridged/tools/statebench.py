"""``bridged bench-state``: what keeping chats across restarts costs.

Many chats change at a given total rate; each change saves the chat's whole snapshot (of a
realistic size) to the state store, as the actors do. It prints how many commits (and so,
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
"""

from __future__ import annotations

__all__ = ["run_state_benchmark", "run_store_comparison"]

import asyncio
import functools
import os
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
from bridged.state.sqlite import StateStore
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
    count = 0
    deadline = started + seconds
    while loop.time() < deadline:
        due = started + count * interval
        if due > loop.time():
            await asyncio.sleep(due - loop.time())
        store.save(f"chat-{count % chats}", blob,
                   functools.partial(_note_wait, waits, loop, loop.time()))
        count += 1
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
        store = StateStore(directory)
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
