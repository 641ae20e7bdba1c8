"""``python -m bridged.tools.actorbench``: what the Live Agent actor itself costs per message.

Many chats, each driven by a real :class:`~bridged.salesforce.liveagent.actor.ChatActor`,
relay messages in a closed loop (one outstanding per chat): OCP's message goes into the
chat's inbox, the actor POSTs it, Salesforce's answer makes a ``delivered``, the agent's
echo comes back on the long poll and goes to OCP, which acknowledges it and sends the next.
Salesforce is a scripted in-process transport (no sockets, no JSON parsing of requests) and
the state store is an in-memory one that commits once per turn of the event loop, as SQLite
does (``--store sqlite``: the real :class:`~bridged.state.sqlite.StateStore` in a temporary
directory): what the process spends is the actor's shell, the session, the chat and the
encodes of what is kept, plus a small scaffold that is the same for every version.

It prints, per relayed message: CPU time, turns of the actors' loops, saves handed to the
store and the bytes they carried. With ``--baseline REV`` (default ``HEAD``; ``none``: no
baseline) the same workload also runs against the ``bridged`` package of git revision
``REV`` (exported to a temporary directory), alternating runs of both in fresh processes,
so that before and after come from one run on one machine; the table shows the median of
``--repeat`` runs of each.
"""

from __future__ import annotations

__all__ = ["main", "measure"]

import argparse
import asyncio
import io
import json
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal

import msgspec

from bridged.chats.chat import Chat
from bridged.chats.gate import Gate
from bridged.chats.policy import RetryPolicy
from bridged.config.file import SalesforceConfig
from bridged.config.webchat import WebchatConfig, WebchatFields, resolve_webchat
from bridged.ocp import envelopes as env
from bridged.salesforce.liveagent.actor import ChatActor, session_params
from bridged.salesforce.liveagent.protocol import HttpRequest, HttpResponse, LiveAgentSession
from bridged.state.store import PendingChange, StoreStatistics

_BASE = "https://d.la1-c1-fra.salesforceliveagent.com/chat/rest/"
_FIGURES = ("cpu_us_per_message", "turn_cpu_us_per_message", "turns_per_message",
            "saves_per_message", "bytes_per_message")


class _Visitor:
    """One scripted Salesforce session: what its next poll brings."""

    __slots__ = ("batch", "sequence", "waiting")

    def __init__(self) -> None:
        self.batch: list[dict[str, Any]] = []
        self.sequence = 0
        self.waiting: asyncio.Future[None] | None = None

    def add(self, kind: str, message: dict[str, Any]) -> None:
        self.batch.append({"type": kind, "message": message})
        if self.waiting is not None and not self.waiting.done():
            self.waiting.set_result(None)


class ScriptedSalesforce:
    """A Live Agent server in the process: an agent joins at once and echoes each message."""

    def __init__(self, latency: float) -> None:
        self._sessions: dict[str, _Visitor] = {}
        self._made = 0
        self._latency = latency

    async def exchange(self, base_url: str, request: HttpRequest, timeout: float) -> HttpResponse:
        """Answer ``request`` as Salesforce would, after the latency (a poll waits until there
        is news; the agent's echo comes twice the latency after the message)."""
        purpose = request.purpose.value
        if purpose != "Messages":
            await asyncio.sleep(self._latency)
        if purpose == "SessionId":
            self._made += 1
            key = f"s{self._made}!k"
            self._sessions[key] = _Visitor()
            return HttpResponse(200, msgspec.json.encode(
                {"id": f"s{self._made}", "key": key, "affinityToken": "a1",
                 "clientPollTimeout": 40}))
        visitor = self._sessions[dict(request.headers)["X-LIVEAGENT-SESSION-KEY"]]
        if purpose == "ChasitorInit":
            visitor.add("ChatRequestSuccess", {"queuePosition": 1})
            visitor.add("ChatEstablished", {"name": "Ada", "userId": "u1"})
        elif purpose == "ChatMessage":
            assert request.body is not None
            text = msgspec.json.decode(request.body)["text"]
            asyncio.get_running_loop().call_later(
                self._latency, visitor.add, "ChatMessage", {"name": "Ada", "text": f"Echo: {text}"})
        elif purpose == "Messages":
            while not visitor.batch:
                visitor.waiting = asyncio.get_running_loop().create_future()
                await visitor.waiting
            visitor.sequence += 1
            body = {"messages": visitor.batch, "sequence": visitor.sequence,
                    "offset": visitor.sequence}
            visitor.batch = []
            return HttpResponse(200, msgspec.json.encode(body))
        return HttpResponse(200)

    async def aclose(self) -> None:
        """Nothing to release."""


class MemoryStore:
    """A state store in memory that commits what was saved once per turn of the event loop
    (as the SQLite store does with ``synchronous = "normal"``), then runs the callbacks."""

    def __init__(self) -> None:
        self.snapshots: dict[str, bytes] = {}
        self.lists: dict[str, dict[tuple[int, int], bytes]] = {}
        self._pending: dict[str, PendingChange] = {}
        self._touches: list[Callable[[], None]] = []
        self._scheduled = False
        self._commits = 0
        self._rows = 0

    async def load(self) -> dict[str, Any]:
        """Nothing is kept from before."""
        return {}

    def save(self, chat_id: str, snapshot: bytes, on_durable: Callable[[], None] | None = None,
             *, static: bytes | None = None, delivered: Sequence[str] = (),
             items: Sequence[tuple[int, int, bytes]] = (),
             drops: Sequence[tuple[int, int, int]] = ()) -> None:
        """Keep ``snapshot`` and the list changes; ``on_durable`` runs at the commit."""
        change = self._pending.get(chat_id)
        if change is None:
            change = self._pending[chat_id] = PendingChange()
        change.keep(snapshot, on_durable, static, delivered, items, drops)
        self._schedule()

    def touch(self, chat_id: str, poll_sent: float,
              on_durable: Callable[[], None] | None = None) -> None:
        """The poll time is kept with the next commit."""
        if on_durable is not None:
            self._touches.append(on_durable)
        self._schedule()

    def delete(self, chat_id: str) -> None:
        """Forget the chat."""
        self.snapshots.pop(chat_id, None)
        self.lists.pop(chat_id, None)

    def may_send(self) -> bool:
        """One node: always."""
        return True

    def statistics(self) -> StoreStatistics:
        """The commits and rows so far."""
        return StoreStatistics(commits=self._commits, rows_written=self._rows,
                               rows_deleted=0, commit_seconds=0.0, pending=len(self._pending))

    async def flush(self, timeout: float) -> bool:
        """Wait for the next commit."""
        while self._pending or self._touches:
            await asyncio.sleep(0)
        return True

    async def aclose(self, timeout: float = 5.0) -> None:
        """Commit what is pending."""
        await self.flush(timeout)

    def _schedule(self) -> None:
        if not self._scheduled:
            self._scheduled = True
            asyncio.get_running_loop().call_soon(self._commit)

    def _commit(self) -> None:
        self._scheduled = False
        pending, self._pending = self._pending, {}
        touches, self._touches = self._touches, []
        self._commits += 1
        callbacks: list[Callable[[], None]] = []
        for chat_id, change in pending.items():
            if change.snapshot is not None:
                self.snapshots[chat_id] = change.snapshot
            kept = self.lists.setdefault(chat_id, {})
            for list_id, first, last in change.drops:
                for key in range(first, min(last, first + 64) + 1):
                    kept.pop((list_id, key), None)
            kept.update(change.items)
            self._rows += 1 + len(change.items)
            callbacks.extend(change.callbacks)
        for callback in [*callbacks, *touches]:
            callback()


class _Ocp:
    """OCP for every chat: takes durable events, acknowledges them, sends the next message
    when the echo of the last one comes back (as a connection's writer would, later in the
    same turn of the loop)."""

    def __init__(self, messages: int, text: str, latency: float) -> None:
        self.id = "L-bench"
        self._latency = latency
        self.chats: set[str] = set()
        self._messages = messages
        self._text = text
        self._due: dict[str, Chat] = {}
        self._scheduled = False
        self.sent: dict[str, int] = {}
        self.echoed: dict[str, int] = {}
        self.joined: set[str] = set()
        self.all_joined = asyncio.Event()
        self.all_echoed = asyncio.Event()
        self.chat_count = 0
        self.started = False

    def schedule(self, chat: Chat) -> None:
        """The chat has events to send: they are taken soon."""
        self._due[chat.id] = chat
        if not self._scheduled:
            self._scheduled = True
            asyncio.get_running_loop().call_soon(self._write)

    def _write(self) -> None:
        self._scheduled = False
        due, self._due = self._due, {}
        loop = asyncio.get_running_loop()
        for chat in due.values():
            events = chat.unsent(1000)
            if not events:
                continue
            chat.sent_upto = events[-1].seq
            echoed = False
            for event in events:
                if isinstance(event, env.AgentJoined):
                    self.joined.add(chat.id)
                    if len(self.joined) == self.chat_count:
                        self.all_joined.set()
                elif isinstance(event, env.AgentMessage) and event.text.startswith("Echo"):
                    self.echoed[chat.id] = self.echoed.get(chat.id, 0) + 1
                    echoed = True
            # OCP's answer (its ack, with the next message after an echo) comes a bit later.
            loop.call_later(self._latency, self._answer, chat, events[-1].seq,
                            echoed and self.started)

    def _answer(self, chat: Chat, seq: int, send: bool) -> None:
        chat.ack(seq)
        if send:
            self.send_next(chat)

    def send_next(self, chat: Chat) -> None:
        """Put the chat's next message in its inbox, as the dispatcher does."""
        sent = self.sent.get(chat.id, 0)
        if sent >= self._messages:
            if sum(self.echoed.values()) >= self._messages * self.chat_count:
                self.all_echoed.set()
            return
        self.sent[chat.id] = sent + 1
        message_id = f"{chat.id}-m{sent}"
        chat.inbox.put_nowait(env.Message(chat=chat.id, id=message_id, text=self._text))
        chat.accept(message_id)


class _TimedWake:
    """The actor's wake-up flag, which counts its turns and the CPU they take (from the
    return of one wait to the next wait: the synchronous body of the turn). It wraps the
    actor's own flag, whichever kind its version has (an ``asyncio.Event``, a ``Wakeup``)."""

    def __init__(self, inner: Any, meter: list[float]) -> None:
        self._inner = inner
        self._meter = meter  # [turns, CPU seconds]
        self._began: float | None = None

    def set(self) -> None:
        self._inner.set()

    def clear(self) -> None:
        self._inner.clear()

    def is_set(self) -> bool:
        return bool(self._inner.is_set())

    async def wait(self) -> Literal[True]:
        if self._began is not None:
            self._meter[1] += time.thread_time() - self._began
        await self._inner.wait()
        self._meter[0] += 1
        self._began = time.thread_time()
        return True


def _time_turns(actor: ChatActor, meter: list[float]) -> None:
    """Put a :class:`_TimedWake` around the actor's flag (whichever version it is)."""
    old = actor._wake
    timed = _TimedWake(old, meter)
    setattr(actor, "_wake", timed)  # noqa: B010 (the attribute's type is the flag's)
    waker = actor.chat.waker
    if getattr(waker, "__self__", None) is old:  # the chat wakes the flag itself
        actor.chat.waker = timed.set


async def _workload(chats: int, messages: int, store_kind: str, directory: str,
                    text: str, latency: float) -> dict[str, float]:
    if store_kind == "sqlite":
        from bridged.state.sqlite import StateStore

        sqlite = StateStore(directory)
        sqlite.open()
        store: Any = sqlite
    else:
        store = MemoryStore()
    saves = [0, 0]  # saves, bytes
    save = store.save

    def counting_save(chat_id: str, snapshot: bytes, *args: Any, **kwargs: Any) -> None:
        saves[0] += 1
        saves[1] += len(snapshot) + sum(len(data) for _, _, data in kwargs.get("items", ()))
        save(chat_id, snapshot, *args, **kwargs)

    store.save = counting_save
    webchat = resolve_webchat(WebchatFields(
        live_agent_base_url=_BASE, organization_id="00D000000000001",
        deployment_id="572000000000001", button_id="573000000000001"), None, {},
        ["*.salesforceliveagent.com"])
    assert isinstance(webchat, WebchatConfig)
    salesforce = ScriptedSalesforce(latency)
    ocp = _Ocp(messages, text, latency)
    ocp.chat_count = chats
    gate = Gate(chats)
    meter = [0.0, 0.0]  # turns, their CPU seconds
    runs = []
    chat_list = []
    for n in range(chats):
        chat_id = f"bench-{n}"
        chat = Chat(chat_id, webchat, env.Start(chat=chat_id), inbox_size=16, max_held=1000)
        chat.bind(ocp, 0)
        session = LiveAgentSession(session_params(webchat, SalesforceConfig()))
        actor = ChatActor(chat, session, salesforce, request_timeout=30, max_pending=16,
                          retry=RetryPolicy(), start_gate=gate, allowed_hosts=[], store=store)
        _time_turns(actor, meter)
        chat_list.append(chat)
        runs.append(asyncio.create_task(actor.run()))
    await asyncio.wait_for(ocp.all_joined.wait(), 60)
    await asyncio.sleep(0.01)  # the polls after ChatEstablished are out
    ocp.started = True
    meter_before, saves_before = list(meter), list(saves)
    cpu = time.process_time()
    wall = time.perf_counter()
    for chat in chat_list:
        ocp.send_next(chat)
    await asyncio.wait_for(ocp.all_echoed.wait(), 300)
    cpu = time.process_time() - cpu
    wall = time.perf_counter() - wall
    relayed = chats * messages
    figures = {
        "messages": float(relayed),
        "cpu_us_per_message": 1e6 * cpu / relayed,
        "turn_cpu_us_per_message": 1e6 * (meter[1] - meter_before[1]) / relayed,
        "turns_per_message": (meter[0] - meter_before[0]) / relayed,
        "saves_per_message": (saves[0] - saves_before[0]) / relayed,
        "bytes_per_message": (saves[1] - saves_before[1]) / relayed,
        "messages_per_s": relayed / wall,
    }
    for chat in chat_list:
        chat.request_end("client")
    await asyncio.wait_for(asyncio.gather(*runs), 60)
    await store.aclose()
    return figures


def measure(chats: int, messages: int, store_kind: str = "memory", latency_ms: float = 1.0,
            text: str = "hello from the visitor") -> dict[str, float]:
    """Run the workload once in this process; the figures per relayed message."""
    with tempfile.TemporaryDirectory(prefix="bridged-actorbench-") as directory:
        return asyncio.run(_workload(chats, messages, store_kind, directory, text,
                                     latency_ms / 1000))


# Run in a fresh process: put ``root`` first on the path, run this file, print its figures.
_WORKER = ("import json, runpy, sys; sys.path.insert(0, sys.argv[1]); "
           "ns = runpy.run_path(sys.argv[2]); import bridged; "
           "figures = ns['measure'](*json.loads(sys.argv[3])); "
           "figures['root'] = bridged.__file__; print(json.dumps(figures))")


def _in_process(root: Path, args: list[Any]) -> dict[str, Any]:
    done = subprocess.run([sys.executable, "-c", _WORKER, str(root), __file__, json.dumps(args)],
                          capture_output=True, text=True, check=False, timeout=900)
    if done.returncode != 0:
        raise RuntimeError(f"the benchmark failed under {root}:\n{done.stderr[-2000:]}")
    figures: dict[str, Any] = json.loads(done.stdout.splitlines()[-1])
    if not str(figures["root"]).startswith(str(root)):
        raise RuntimeError(f"the benchmark ran {figures['root']}, not the package in {root}")
    return figures


def _export(repo: Path, revision: str, into: Path) -> None:
    """The ``bridged`` package of git ``revision`` of ``repo``, under ``into``."""
    archive = subprocess.run(["git", "-C", str(repo), "archive", "--format=tar", revision,
                              "bridged"], capture_output=True, check=False, timeout=120)
    if archive.returncode != 0:
        raise RuntimeError(f"git archive {revision}: {archive.stderr.decode(errors='replace')}")
    with tarfile.open(fileobj=io.BytesIO(archive.stdout)) as tar:
        if hasattr(tarfile, "data_filter"):  # Python 3.11.4 and later
            tar.extractall(into, filter="data")
        else:  # pragma: no cover - git's own archive of the repository
            tar.extractall(into)


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; print one table; return an exit code."""
    parser = argparse.ArgumentParser(prog="python -m bridged.tools.actorbench",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--chats", type=int, default=200)
    parser.add_argument("--messages", type=int, default=50, help="per chat")
    parser.add_argument("--store", choices=("memory", "sqlite"), default="memory")
    parser.add_argument("--latency-ms", type=float, default=1.0,
                        help="of each answer of Salesforce and of OCP")
    parser.add_argument("--baseline", default="HEAD",
                        help="a git revision to compare with, or 'none'")
    parser.add_argument("--repeat", type=int, default=3, help="runs of each version")
    options = parser.parse_args(argv)
    if options.chats < 1 or options.messages < 1 or options.repeat < 1:
        parser.error("--chats, --messages and --repeat must be at least 1")
    here = Path(__file__).resolve().parents[2]
    args = [options.chats, options.messages, options.store, options.latency_ms]
    versions: dict[str, list[dict[str, Any]]] = {}
    with tempfile.TemporaryDirectory(prefix="bridged-actorbench-") as directory:
        roots = {"this tree": here}
        if options.baseline != "none":
            try:
                _export(here, options.baseline, Path(directory))
            except (RuntimeError, OSError) as exc:
                print(f"actorbench: no baseline: {exc}", file=sys.stderr)
                return 2
            roots = {options.baseline: Path(directory), "this tree": here}
        print(f"actor benchmark: {options.chats} chats x {options.messages} messages, "
              f"store {options.store}, latency {options.latency_ms:g} ms, median of "
              f"{options.repeat} runs", flush=True)
        for _ in range(options.repeat):
            for name, root in roots.items():
                versions.setdefault(name, []).append(_in_process(root, args))
    width = max(len(k) for k in _FIGURES)
    names = list(versions)
    print(f"{'':{width}}  " + "  ".join(f"{name:>12}" for name in names)
          + ("  " + f"{'ratio':>8}" if len(names) == 2 else ""))
    for key in (*_FIGURES, "messages_per_s"):
        values = [statistics.median(run[key] for run in versions[name]) for name in names]
        line = f"{key:{width}}  " + "  ".join(f"{v:12.2f}" for v in values)
        if len(values) == 2 and values[0]:
            line += f"  {values[1] / values[0]:8.2f}"
        print(line, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
