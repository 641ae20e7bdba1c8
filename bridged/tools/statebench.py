"""``bridged bench-state``: what keeping chats across restarts costs.

Many chats change at a given total rate; each change saves the chat's whole snapshot (of a
realistic size) to the state store, as the actors do. It prints how many commits (and so,
with ``synchronous = "full"``, fsyncs) that became, the rows written, the mean commit time,
the share of one core the writer thread used, and how long a change waited to be durable
(the latency it adds before an event goes to OCP).
"""

from __future__ import annotations

__all__ = ["run_state_benchmark"]

import asyncio
import functools
import os
import statistics
import tempfile
import time
from typing import Literal

from bridged.state.sqlite import StateStore


def _note_wait(waits: list[float], loop: asyncio.AbstractEventLoop, sent: float) -> None:
    waits.append(loop.time() - sent)


async def _run(chats: int, rate: float, seconds: float, size: int,
               synchronous: Literal["normal", "full"], directory: str) -> dict[str, float]:
    store = StateStore(directory, synchronous)
    store.open()
    loop = asyncio.get_running_loop()
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
    stats = store.statistics()
    await store.aclose()
    return {
        "changes": count,
        "changes_per_s": count / elapsed,
        "commits": stats.commits,
        "commits_per_s": stats.commits / elapsed,
        "rows_written": stats.rows_written,
        "mean_commit_ms": 1000 * stats.commit_seconds / max(1, stats.commits),
        "writer_core_share": stats.commit_seconds / elapsed,
        "process_core_share": (time.process_time() - process_cpu) / elapsed,
        "durable_wait_p50_ms": 1000 * statistics.median(waits) if waits else 0.0,
        "durable_wait_p99_ms": (1000 * statistics.quantiles(waits, n=100)[98]
                                if len(waits) >= 100 else 0.0),
    }


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
    return 0
