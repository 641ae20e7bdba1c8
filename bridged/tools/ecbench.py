"""CPU per relayed message of bridged's Enhanced Chat path, in one process, without sockets.

``python -m bridged.tools.ecbench`` runs N chats through the real
:class:`~bridged.salesforce.messaging.actor.MessagingActor` (its session, SSE parser and wire
decoders, and the state store) against an in-process Salesforce that answers like the
simulator's echoing deployment: per visitor message, the EndUser echo of it, then a delivery
and a read acknowledgement, typing on, ``Echo: <text>`` from the agent and typing off, each
event a chunk of the stream built with the simulator's own entry and frame functions. Each
chat sends its next message once the echo reached it (a closed loop, one in flight per
chat), so the figure is the CPU the actor, the session and the store spend per relayed
message; no HTTP client, WebSocket or event loop I/O is in it.

Run it against two trees in turn (``PYTHONPATH=<old tree> python -m bridged.tools.ecbench``)
to compare them in one sitting on a loaded machine; ``--rounds`` repeats and keeps the best.
"""

from __future__ import annotations

__all__ = ["BenchError", "BenchResult", "main", "run_bench"]

import argparse
import asyncio
import base64
import contextlib
import gc
import json
import logging
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import msgspec

from bridged.chats.chat import Chat
from bridged.chats.policy import RetryPolicy
from bridged.config.file import SalesforceConfig
from bridged.config.webchat import WebchatFields, resolve_webchat
from bridged.ocp import envelopes as env
from bridged.salesforce.messaging.actor import MessagingBackend
from bridged.salesforce.messaging.protocol import HttpRequest
from bridged.salesforce.messaging.transport import MAX_ERROR_BODY, Answer
from bridged.simulators.messaging import entries
from bridged.simulators.messaging.sse import envelope, event_frame, format_event_id
from bridged.state.sqlite import StateStore

SCRT = "https://bench.my.salesforce-scrt.com"
ORG = "00D000000000001"
CHANNEL = "bench-channel"
AGENT = "005000000000001"
# --apart: turns of the loop between the send's answer and each event after it.
_APART_HOPS = 8
# Every chat joins within this (an in-process Salesforce: a second or two for thousands).
JOIN_TIMEOUT_S = 120.0


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _token(n: int) -> str:
    claims = {"sub": f"v2/iamessage/UNAUTH/NA/uid:{n}", "orgId": ORG, "iat": int(time.time()),
              "exp": int(time.time()) + 21_600}
    return ".".join([_b64(b'{"alg":"RS256"}'), _b64(json.dumps(claims).encode()), _b64(b"x")])


class _Conversation:
    """One guest's stream and conversation at the in-process Salesforce."""

    def __init__(self, subject: str) -> None:
        self.subject = subject
        self.conversation_id = ""
        # Bounded: a chat has one message in flight, so at most its 6 events (and the 2 of
        # the start) wait here.
        self.chunks: asyncio.Queue[bytes] = asyncio.Queue(maxsize=64)
        self.echo: bytes | None = None
        self.ms = int(time.time() * 1000)

    def now_ms(self) -> int:
        self.ms += 1
        return self.ms


class _Stream:
    """An open event stream of the in-process Salesforce."""

    status = 200
    is_event_stream = True

    def __init__(self, conv: _Conversation) -> None:
        self._conv = conv

    async def read_body(self, limit: int = MAX_ERROR_BODY) -> bytes:
        return b""

    async def read_chunk(self) -> bytes:
        return await self._conv.chunks.get()


class BenchSalesforce:
    """The echoing deployment, answering the actor's requests in process (no sockets)."""

    def __init__(self, apart: bool = False) -> None:
        # apart: the visitor's echo and the agent's events come one by one (each in a turn
        # of its own, the echo after the send's answer, as Salesforce publishes it and as a
        # real console's acknowledgements and replies come), not all in the send's turn.
        self._apart = apart
        self._by_token: dict[str, _Conversation] = {}
        self._by_id: dict[str, _Conversation] = {}
        self._tokens = 0
        self._events = 0

    def _emit(self, conv: _Conversation, entry: entries.Entry) -> None:
        self._events += 1
        event_id = format_event_id(self._events, conv.ms)
        data = envelope(conversation_id=conv.conversation_id, entry=entry.as_event(),
                        channel_address_id=CHANNEL, platform_key="bench")
        conv.chunks.put_nowait(event_frame(event_id, entry.event, data))

    def _conv(self, request: HttpRequest) -> _Conversation:
        auth = dict(request.headers)["Authorization"]
        return self._by_token[auth.removeprefix("Bearer ")]

    async def exchange(self, base_url: str, request: HttpRequest, timeout: float) -> Answer:
        await asyncio.sleep(0)  # an answer comes in a later turn, as over the network
        path = request.path
        if path.endswith("/access-token"):
            self._tokens += 1
            token = _token(self._tokens)
            self._by_token[token] = _Conversation(f"uid:{self._tokens}")
            body = json.dumps({"accessToken": token, "lastEventId": "0"}).encode()
            return Answer(200, body)
        conv = self._conv(request)
        if request.method == "POST" and path.endswith("/conversation"):
            conv.conversation_id = msgspec.json.decode(request.body or b"{}")["conversationId"]
            self._by_id[conv.conversation_id] = conv
            agent = entries.agent_sender(AGENT)
            self._emit(conv, entries.routing_result(
                routing_type="Initial", failure_type="None", failure_reason="",
                session_record_id="0Mw000000000001", routing_record_id="0JR000000000001",
                queue_id="00G000000000001", wait_s=-1, now_ms=conv.now_ms()))
            self._emit(conv, entries.participant_changed(
                operation="add", participant=agent, display_name="Ada", now_ms=conv.now_ms()))
            return Answer(201, b"{}")
        if path.endswith("/message"):
            message = msgspec.json.decode(request.body or b"{}")["message"]
            self._echo(conv, message["id"], message["staticContent"]["text"])
            return Answer(202, b'{"conversationEntries":[]}')
        if request.method == "DELETE":
            return Answer(204, b"")
        if path.endswith("/entries"):
            return Answer(200, b'{"conversationEntries":[]}')
        return Answer(200, b"{}")

    def _echo(self, conv: _Conversation, message_id: str, text: str) -> None:
        # The simulator's frames, made once per conversation with placeholders and filled in
        # per message: the benchmark's own share of the CPU stays small.
        if conv.echo is None:
            conv.echo = self._echo_template(conv)
        n = str(self._events).encode()
        self._events += 1
        filled = (conv.echo.replace(b"@MID@", message_id.encode())
                  .replace(b"@TEXT@", text.encode()).replace(b"@N@", n))
        frames = [frame + b"\n\n" for frame in filled.split(b"\n\n")[:-1]]
        if not self._apart:
            for frame in frames:
                conv.chunks.put_nowait(frame)
            return
        # The visitor's echo too: Salesforce publishes the entry after its answer (202).
        self._put_apart(conv, frames, 0, _APART_HOPS)

    def _put_apart(self, conv: _Conversation, frames: list[bytes], index: int,
                   hops: int) -> None:
        # A few turns of the loop between two frames (the reader's, the actor's, its
        # commit's): each event is taken in a turn of its own, the same in every run (no
        # clock in it, so that instruction counts repeat).
        if index >= len(frames):
            return
        loop = asyncio.get_running_loop()
        if hops:
            loop.call_soon(self._put_apart, conv, frames, index, hops - 1)
            return
        conv.chunks.put_nowait(frames[index])
        loop.call_soon(self._put_apart, conv, frames, index + 1, _APART_HOPS)

    def _echo_template(self, conv: _Conversation) -> bytes:
        agent = entries.agent_sender(AGENT)
        made = [entries.text_message(
            sender=entries.end_user_sender(conv.subject), display_name="Guest",
            message_id="@MID@", text="@TEXT@", now_ms=conv.now_ms())]
        for read in (False, True):
            ack = entries.acknowledgement(read=read, message_id="@MID@", sender=agent,
                                          display_name="Ada", now_ms=conv.now_ms())
            made.append(msgspec.structs.replace(ack, identifier=f"ack{read:d}-@N@"))
        made.append(entries.typing(started=True, sender=agent, display_name="Ada",
                                   now_ms=conv.now_ms(), entry_id="on-@N@"))
        made.append(entries.text_message(
            sender=agent, display_name="Ada", message_id="echo-@N@", text="Echo: @TEXT@",
            now_ms=conv.now_ms()))
        made.append(entries.typing(started=False, sender=agent, display_name="Ada",
                                   now_ms=conv.now_ms(), entry_id="off-@N@"))
        frames = []
        for k, entry in enumerate(made):
            data = envelope(conversation_id=conv.conversation_id, entry=entry.as_event(),
                            channel_address_id=CHANNEL, platform_key="bench")
            frames.append(event_frame(f"{conv.ms}-@N@{k}", entry.event, data))
        return b"".join(frames)

    @contextlib.asynccontextmanager
    async def stream(self, base_url: str, request: HttpRequest, connect_timeout: float,
                     read_timeout: float) -> AsyncIterator[_Stream]:
        yield _Stream(self._conv(request))

    async def aclose(self) -> None:
        pass


class _Link:
    """OCP's side: takes every event at once, acknowledges it and sends the next message."""

    def __init__(self, bench: _Bench, ack_each: bool = True) -> None:
        self.id = "bench"
        self.chats: set[str] = set()
        self._bench = bench
        # Every event acknowledged, or (as the load test's client does) only the agent's
        # messages and its joining, each acknowledging everything before it.
        self._ack_each = ack_each

    def schedule(self, chat: Chat) -> None:
        # Written now; OCP's ack and its next message come in a later turn of the loop.
        loop = asyncio.get_running_loop()
        for event in chat.unsent(1000):
            chat.sent_upto = event.seq
            if self._ack_each or isinstance(event, env.AgentMessage | env.AgentJoined):
                loop.call_soon(chat.ack, event.seq)
            if isinstance(event, env.AgentMessage):
                loop.call_soon(self._bench.echoed, chat)
            elif isinstance(event, env.AgentJoined):
                self._bench.joined(chat)

    def post_error(self, error: env.Error) -> None:
        self._bench.errors += 1


class _Bench:
    def __init__(self, messages: int) -> None:
        self.messages = messages
        self.sent: dict[str, int] = {}
        self.echoes = 0
        self.errors = 0
        self.joined_all = asyncio.Event()
        self.done = asyncio.Event()
        self.chats = 0
        self.joined_count = 0
        self.started_at = 0.0

    def _send(self, chat: Chat) -> None:
        n = self.sent[chat.id] = self.sent.get(chat.id, 0) + 1
        message_id = f"{chat.id}-{n}"
        chat.inbox.put_nowait(env.Message(chat=chat.id, id=message_id,
                                          text=f"visitor message {n} of the benchmark"))
        chat.accept(message_id)

    def joined(self, chat: Chat) -> None:
        self.joined_count += 1
        if self.joined_count == self.chats:
            self.joined_all.set()

    def go(self, chats: list[Chat]) -> None:
        for chat in chats:
            self._send(chat)

    def echoed(self, chat: Chat) -> None:
        self.echoes += 1
        if self.sent[chat.id] < self.messages:
            self._send(chat)
        elif chat.end_requested is None:
            chat.request_end("client")
        if self.echoes == self.chats * self.messages:
            self.done.set()


class BenchError(Exception):
    """The benchmark could not measure: its chats did not all join, or one failed."""


class BenchResult(msgspec.Struct, frozen=True, kw_only=True):
    """What one run measured."""

    chats: int
    messages: int
    cpu_s: float
    loop_cpu_s: float
    wall_s: float
    saves: int

    @property
    def cpu_ms_per_message(self) -> float:
        """CPU (the whole process: the loop and the store's writer) per relayed message."""
        return 1000 * self.cpu_s / self.messages

    @property
    def loop_cpu_ms_per_message(self) -> float:
        """CPU of the event loop's thread alone (without the store's writer) per message."""
        return 1000 * self.loop_cpu_s / self.messages

    @property
    def saves_per_message(self) -> float:
        """Snapshots handed to the store per relayed message."""
        return self.saves / self.messages


class _CountingStore(StateStore):
    saves = 0

    def save(self, *args: Any, **kwargs: Any) -> None:
        self.saves += 1
        super().save(*args, **kwargs)


class _NullStore:
    """Commits nothing: each save is durable in the next turn (the actor's own share)."""

    saves = 0

    def save(self, chat_id: str, snapshot: bytes, on_durable: Any = None,
             **kwargs: Any) -> None:
        self.saves += 1
        if on_durable is not None:
            asyncio.get_running_loop().call_soon(on_durable)

    def may_send(self) -> bool:
        return True

    async def flush(self, timeout: float) -> bool:
        await asyncio.sleep(0)
        return True

    async def aclose(self, timeout: float = 5.0) -> None:
        pass


async def stop_chats(tasks: list[asyncio.Task[Any]], backend: Any, store: Any) -> None:
    """End a bench's chats: cancel their actors, then close the backend and the store."""
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    await backend.aclose()
    await store.aclose(5)


async def run_bench(chats: int, messages: int, directory: Path,
                    store_kind: str = "sqlite", apart: bool = False) -> BenchResult:
    """Relay ``messages`` visitor messages (and their echoes) in each of ``chats`` chats.

    ``store_kind``: ``sqlite`` (the real state store in ``directory``) or ``none`` (saves
    are handed over and taken as committed at once: the actor and session alone).
    ``apart``: each of the agent's events in a turn of its own (see :class:`BenchSalesforce`),
    and OCP acknowledging as the load test's client does (at each agent message).
    """
    store: Any
    if store_kind == "none":
        store = _NullStore()
    else:
        store = _CountingStore(directory)
        store.open()
    # Salesforce's pacing lifted, as the load test lifts it: 22 messages a minute, so that a
    # chat may be long (the entry ids it keeps reach their bound, SEEN_IDS_MAX, past 64
    # messages), and 200 access tokens a minute, so that more chats than that start at once
    # instead of waiting a minute for the token window (and being measured idle).
    salesforce = SalesforceConfig(messaging_message_limit=max(22, messages + 1),
                                  messaging_token_limit=max(200, chats))
    backend = MessagingBackend(BenchSalesforce(apart), salesforce, max_pending=10,
                               store=store, retry=RetryPolicy(initial_s=0.01, max_delay_s=0.02))
    bench = _Bench(messages)
    bench.chats = chats
    link = _Link(bench, ack_each=not apart)
    webchat = resolve_webchat(WebchatFields(
        type="salesforce_messaging", scrt_url=SCRT, organization_id=ORG,
        es_developer_name="Sim_Echo"), None, {}, ["*.my.salesforce-scrt.com"])
    made = []
    for i in range(chats):
        chat = Chat(f"c{i}", webchat, env.Start(chat=f"c{i}"), inbox_size=16, max_held=1000)
        chat.bind(link, 0)
        made.append(chat)
    tasks = [asyncio.create_task(backend.run_chat(chat)) for chat in made]
    try:
        try:
            await asyncio.wait_for(bench.joined_all.wait(), JOIN_TIMEOUT_S)
        except TimeoutError:
            raise BenchError(f"{bench.joined_count} of {chats} chats joined within "
                             f"{JOIN_TIMEOUT_S:g} s") from None
        await store.flush(30)
        saves0 = store.saves
        gc.collect()
        cpu0, loop0, wall0 = time.process_time(), time.thread_time(), time.perf_counter()
        bench.go(made)
        await asyncio.wait_for(bench.done.wait(), 600)
        await store.flush(30)
        loop_cpu = time.thread_time() - loop0
        cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
        saves = store.saves - saves0
        await asyncio.wait_for(asyncio.gather(*tasks), 60)
    finally:
        await stop_chats(tasks, backend, store)
    if bench.errors:
        raise BenchError(f"{bench.errors} error envelopes during the benchmark")
    return BenchResult(chats=chats, messages=chats * messages, cpu_s=cpu, loop_cpu_s=loop_cpu,
                       wall_s=wall, saves=saves)


def main(argv: list[str] | None = None) -> int:
    """The command line: print CPU per relayed message (the best of ``--rounds``)."""
    parser = argparse.ArgumentParser(prog="python -m bridged.tools.ecbench", description=(
        "CPU per relayed message of the Enhanced Chat actor, session and store, in process"))
    parser.add_argument("--chats", type=int, default=200)
    parser.add_argument("--messages", type=int, default=20, help="per chat")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--store", choices=["sqlite", "none"], default="sqlite",
                        help="the real state store, or none (the actor and session alone)")
    parser.add_argument("--apart", action="store_true",
                        help="the visitor's echo and the agent's events one by one, each in a"
                             " turn of its own (the echo after the send's answer, as"
                             " Salesforce publishes it), not all at once; OCP"
                             " acknowledges at each agent message (as the load test's"
                             " client), not each event")
    parser.add_argument("--json", action="store_true", help="one JSON line per round")
    args = parser.parse_args(argv)
    logging.disable(logging.INFO)  # as with level = "warning"; the log is not measured
    best: BenchResult | None = None
    loop_best = float("inf")
    for _ in range(args.rounds):
        with tempfile.TemporaryDirectory(prefix="ecbench-") as tmp:
            try:
                result = asyncio.run(run_bench(args.chats, args.messages, Path(tmp) / "state",
                                                 args.store, args.apart))
            except BenchError as exc:
                print(f"ecbench: {exc}", file=sys.stderr)
                return 1
        if args.json:
            print(json.dumps({"cpu_ms_per_message": result.cpu_ms_per_message,
                              "loop_cpu_ms_per_message": result.loop_cpu_ms_per_message,
                              "saves_per_message": result.saves_per_message,
                              "messages": result.messages, "wall_s": result.wall_s}))
        if best is None or result.cpu_ms_per_message < best.cpu_ms_per_message:
            best = result
        loop_best = min(loop_best, result.loop_cpu_ms_per_message)
    assert best is not None
    print(f"{best.messages} messages in {best.chats} chats, best of {args.rounds}: "
          f"{best.cpu_ms_per_message:.3f} ms CPU per relayed message, "
          f"{loop_best:.3f} ms of it in the loop's thread, "
          f"{best.saves_per_message:.2f} saves per message")
    return 0


if __name__ == "__main__":
    sys.exit(main())
