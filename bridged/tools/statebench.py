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

from bridged.chats import facts
from bridged.chats.chat import Chat
from bridged.chats.gate import Gate
from bridged.chats.policy import RetryPolicy
from bridged.config.file import SalesforceConfig
from bridged.config.webchat import WebchatConfig, WebchatFields, resolve_webchat
from bridged.ocp import envelopes as env
from bridged.salesforce.liveagent.actor import ChatActor, session_params
from bridged.salesforce.liveagent.protocol import LiveAgentSession
from bridged.state.sqlite import StateStore

_BASE = "https://d.la1-c1-fra.salesforceliveagent.com/chat/rest/"


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


async def _chat_save(held: int, pending: int, directory: str,
                     saves: int = 200) -> dict[str, float]:
    """One chat holding ``held`` events (at least 1) and ``pending`` visitor messages:
    ``saves`` saves, each after one more event (and OCP's ack of the oldest)."""
    store = StateStore(directory)
    store.open()
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
