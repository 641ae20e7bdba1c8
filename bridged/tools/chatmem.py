"""Memory per live Enhanced Chat conversation: bridged's backend against the null bridge's.

``python -m bridged.tools.chatmem`` starts the Enhanced Chat simulator (its own process, on
127.0.0.1, rate limits lifted as in the load test) and, each in a process of its own, N
chats of one side, with :mod:`tracemalloc` on:

* ``bridged``: the real :class:`~bridged.salesforce.messaging.actor.MessagingBackend` (actor,
  session, SSE parser, aiohttp transport, the SQLite state store), each chat a
  :class:`~bridged.chats.chat.Chat` bound to a link that takes its events at once and
  acknowledges them (OCP's WebSocket is not in it);
* ``null``: the null bridge's Enhanced Chat path (:mod:`bridged.tools.nullbridge`), each chat
  on a connection that only counts the frames.

Each chat is started, its agent joins, it relays one message and its echo, and stays live
(its stream open). What the N chats hold then, beyond what the process held before them (one
chat warmed the caches), is reported per chat: in all, and by the lines (or files, or
tracebacks) that allocated it. A collection runs before each snapshot: what is counted is
what the live chats keep. The daemon's own per-chat parts (dispatcher, supervisor, OCP's
connection) are not in either side.
"""

from __future__ import annotations

__all__ = ["main"]

import argparse
import asyncio
import contextlib
import gc
import json
import logging
import subprocess
import sys
import tempfile
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path
from typing import Any

ORG = "00D000000000001"
DEPLOYMENT = "Sim_Echo"
_LIFTED = 1_000_000_000


def _simulator_options(chats: int) -> dict[str, Any]:
    return {"org_id": ORG, "routing_delay_s": 0.01, "join_delay_s": 0.01,
            "reply_delay_s": 0.01, "request_log_max": 0, "record_max": 0,
            "replay_depth": 20, "tokens_per_window": _LIFTED, "starts_per_window": _LIFTED,
            "messages_per_window": _LIFTED, "max_conversations": 2 * chats + 1000,
            "max_tokens": 2 * chats + 1000}


async def _until(what: Callable[[], bool], timeout: float, detail: str) -> None:
    deadline = time.monotonic() + timeout
    while not what():
        if time.monotonic() > deadline:
            raise RuntimeError(f"not within {timeout:g} s: {detail}")
        await asyncio.sleep(0.05)


# --- bridged's side ----------------------------------------------------------------------------


class _Link:
    """OCP's side of the chats: takes every event at once and acknowledges it."""

    def __init__(self) -> None:
        self.id = "chatmem"
        self.chats: set[str] = set()
        self.joined = 0
        self.echoed = 0

    def schedule(self, chat: Any) -> None:
        from bridged.ocp import envelopes as env

        loop = asyncio.get_running_loop()
        for event in chat.unsent(1000):
            chat.sent_upto = event.seq
            loop.call_soon(chat.ack, event.seq)
            if isinstance(event, env.AgentJoined):
                self.joined += 1
            elif isinstance(event, env.AgentMessage):
                self.echoed += 1

    def post_error(self, error: Any) -> None:
        pass


async def _bridged_side(scrt_url: str, chats: int, state_dir: Path) -> dict[str, Any]:
    from bridged.chats.chat import Chat
    from bridged.config.file import SalesforceConfig
    from bridged.config.webchat import WebchatFields, resolve_webchat
    from bridged.ocp import envelopes as env
    from bridged.salesforce.messaging.actor import MessagingBackend
    from bridged.salesforce.messaging.transport import AiohttpMessagingTransport
    from bridged.state.sqlite import StateStore
    from bridged.tools.ecbench import stop_chats

    store = StateStore(state_dir)
    store.open()
    salesforce = SalesforceConfig(messaging_token_limit=_LIFTED,
                                  messaging_message_limit=_LIFTED)
    transport = AiohttpMessagingTransport(salesforce.max_connections, salesforce.keepalive_s,
                                          salesforce.max_request_connections,
                                          may_send=store.may_send)
    backend = MessagingBackend(transport, salesforce, max_pending=10, store=store)
    webchat = resolve_webchat(WebchatFields(
        type="salesforce_messaging", scrt_url=scrt_url, organization_id=ORG,
        es_developer_name=DEPLOYMENT), None, {}, ["127.0.0.1:*"])
    link = _Link()
    tasks: list[asyncio.Task[None]] = []

    def start(chat_id: str) -> Chat:
        chat = Chat(chat_id, webchat, env.Start(chat=chat_id), inbox_size=16, max_held=1000)
        chat.bind(link, 0)
        tasks.append(asyncio.create_task(backend.run_chat(chat), name=f"chatmem:{chat_id}"))
        return chat

    async def batch(prefix: str, n: int) -> list[Chat]:
        joined, echoed = link.joined, link.echoed
        made = [start(f"{prefix}{i}") for i in range(n)]
        await _until(lambda: link.joined >= joined + n, 120, "every agent joined")
        for chat in made:
            chat.inbox.put_nowait(env.Message(chat=chat.id, id=f"{chat.id}-1",
                                              text="one visitor message"))
            chat.accept(f"{chat.id}-1")
            chat.wake()
        await _until(lambda: link.echoed >= echoed + n, 120, "every echo relayed")
        await store.flush(30)
        await asyncio.sleep(0.5)  # the acknowledgements' turns, the last commits
        return made

    try:
        return await _measure(lambda n: batch("warm", n), lambda n: batch("c", n), chats)
    finally:
        await stop_chats(tasks, backend, store)


# --- the null bridge's side --------------------------------------------------------------------


class _Connection:
    """Stands for OCP's WebSocket: counts the frames."""

    closed = False

    def __init__(self) -> None:
        self.frames: list[bytes] = []

    async def send_frame(self, data: bytes, kind: Any) -> None:
        self.frames.append(data)

    async def send_bytes(self, data: bytes) -> None:
        self.frames.append(data)


async def _null_side(scrt_url: str, chats: int) -> dict[str, Any]:
    from bridged.tools import nullbridge

    bridge = nullbridge.NullBridge(["chatmem"]).messaging(
        scrt_url, organization_id=ORG, es_developer_name=DEPLOYMENT)
    lifecycle = bridge._lifecycle(bridge.app)
    await lifecycle.__anext__()
    ws = _Connection()

    def frames(kind: bytes) -> int:
        return sum(1 for f in ws.frames if kind in f)

    async def batch(prefix: str, n: int) -> list[Any]:
        joined, echoed = frames(b'"agent_joined"'), frames(b'"agent_message"')
        made = []
        for i in range(n):
            chat = nullbridge._Chat(f"{prefix}{i}", ws, False)  # type: ignore[arg-type]
            bridge._chats[chat.id] = chat
            chat.poller = bridge.spawn(bridge._run_chat(chat), "chat")
            made.append(chat)
        await _until(lambda: frames(b'"agent_joined"') >= joined + n, 120,
                     "every agent joined")
        for chat in made:
            bridge.spawn(bridge._send_message(chat, f"{chat.id}-1", "one visitor message"),
                         "message")
        await _until(lambda: frames(b'"agent_message"') >= echoed + n, 120,
                     "every echo relayed")
        await asyncio.sleep(0.5)
        ws.frames.clear()  # what OCP's socket would have written: not the bridge's
        return made

    try:
        return await _measure(lambda n: batch("warm", n), lambda n: batch("c", n), chats)
    finally:
        with contextlib.suppress(StopAsyncIteration):
            await lifecycle.__anext__()


# --- measuring ---------------------------------------------------------------------------------


async def _measure(warm: Callable[[int], Any], run: Callable[[int], Any],
                   chats: int) -> dict[str, Any]:
    kept = await warm(1)
    gc.collect()
    before = tracemalloc.take_snapshot()
    blocks_before = sys.getallocatedblocks()
    live = await run(chats)
    gc.collect()
    blocks_after = sys.getallocatedblocks()
    after = tracemalloc.take_snapshot()
    del kept, live
    filters = [tracemalloc.Filter(False, tracemalloc.__file__)]
    before, after = before.filter_traces(filters), after.filter_traces(filters)
    out: dict[str, Any] = {"chats": chats}
    total = sum(s.size_diff for s in after.compare_to(before, "filename"))
    out["bytes_per_chat"] = total / chats
    # What bridged's garbage-collector policy counts (bridged/ops/gcpolicy.py).
    out["blocks_per_chat"] = (blocks_after - blocks_before) / chats
    for key in ("lineno", "filename", "traceback"):
        out[key] = [(_where(stat), stat.size_diff / chats, stat.count_diff / chats)
                    for stat in after.compare_to(before, key)[:40]]
    return out


def _where(stat: tracemalloc.StatisticDiff) -> str:
    frames = list(stat.traceback)[::-1]  # the most recent first
    return " <- ".join(f"{_short(f.filename)}:{f.lineno}" for f in frames[:6])


def _short(filename: str) -> str:
    for marker in ("/site-packages/", "/bridged/", "/lib/python"):
        cut = filename.find(marker)
        if cut >= 0:
            return filename[cut + 1:]
    return filename


def _child(side: str, scrt_url: str, chats: int, frames: int) -> int:
    logging.disable(logging.INFO)
    tracemalloc.start(frames)
    with tempfile.TemporaryDirectory(prefix="chatmem-") as tmp:
        if side == "bridged":
            result = asyncio.run(_bridged_side(scrt_url, chats, Path(tmp) / "state"))
        else:
            result = asyncio.run(_null_side(scrt_url, chats))
    print(json.dumps(result))
    return 0


def _report(side: str, result: dict[str, Any], group: str, top: int) -> None:
    print(f"{side}: {result['bytes_per_chat']:,.0f} bytes per live chat"
          f" ({result['chats']} chats; {result['blocks_per_chat']:,.0f} memory blocks),"
          f" by {group}:")
    for where, size, count in result[group][:top]:
        print(f"  {size:9,.0f} B {count:6.1f} blocks  {where}")


def main(argv: list[str] | None = None) -> int:
    """The command line: start the simulator, measure each side in a process, print."""
    parser = argparse.ArgumentParser(prog="python -m bridged.tools.chatmem", description=(
        "memory per live Enhanced Chat conversation (tracemalloc), bridged against the null"
        " bridge, over the simulator on 127.0.0.1"))
    parser.add_argument("--chats", type=int, default=300)
    parser.add_argument("--side", choices=["both", "bridged", "null"], default="both")
    parser.add_argument("--group", choices=["lineno", "filename", "traceback"],
                        default="lineno", help="how the allocations are grouped")
    parser.add_argument("--top", type=int, default=15)
    parser.add_argument("--frames", type=int, default=8, help="traceback depth kept")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--json", action="store_true", help="the results as one JSON line")
    args = parser.parse_args(argv)
    if args.child:
        side, url = args.child.split("@", 1)
        return _child(side, url, args.chats, args.frames)
    from bridged.tools.loadtest.procs import free_port

    port = free_port()
    url = f"http://127.0.0.1:{port}"
    sim = subprocess.Popen(
        [sys.executable, "-m", "bridged.tools.loadtest.simproc", "--listen",
         f"127.0.0.1:{port}", "--backend", "messaging", "--options",
         json.dumps(_simulator_options(args.chats + 10))],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    results: dict[str, Any] = {}
    try:
        _wait_ready(url + "/_loadtest/ping", sim)
        sides = ["bridged", "null"] if args.side == "both" else [args.side]
        for side in sides:
            out = subprocess.run(
                [sys.executable, "-m", "bridged.tools.chatmem", "--chats", str(args.chats),
                 "--frames", str(args.frames), "--child", f"{side}@{url}"],
                capture_output=True, text=True, timeout=600, check=False)
            if out.returncode != 0:
                print(f"{side} failed:\n{out.stderr[-3000:]}", file=sys.stderr)
                return 1
            results[side] = json.loads(out.stdout.strip().splitlines()[-1])
    finally:
        sim.terminate()
        try:
            sim.wait(10)
        except subprocess.TimeoutExpired:
            sim.kill()
            sim.wait()
    if args.json:
        print(json.dumps(results))
        return 0
    for side, result in results.items():
        _report(side, result, args.group, args.top)
    if len(results) == 2:
        ratio = results["bridged"]["bytes_per_chat"] / results["null"]["bytes_per_chat"]
        print(f"bridged / null: {ratio:.2f}")
    return 0


def _wait_ready(url: str, sim: subprocess.Popen[bytes]) -> None:
    import urllib.request

    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if sim.poll() is not None:
            raise RuntimeError(f"the simulator exited with {sim.returncode}")
        with contextlib.suppress(OSError), urllib.request.urlopen(url, timeout=2) as answer:
            if answer.status == 200:
                return
        time.sleep(0.1)
    raise RuntimeError("the simulator did not answer within 30 s")


if __name__ == "__main__":
    sys.exit(main())
