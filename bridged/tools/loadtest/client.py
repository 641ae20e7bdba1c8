"""The load generator: N simulated OCP chats over M WebSocket connections.

It speaks PROTOCOL.md as OCP would: ``start`` per chat, ``message`` with a unique ``id``,
``ack`` of what it has processed (cumulative: at ``agent_joined``, every ``agent_message``
and ``ended``, which covers the events before them), ``end`` at the close.

Every check is per chat and exact:

* ``seq`` must go 1, 2, 3, ...: a ``seq`` seen again is a duplicate (the frame is counted
  and otherwise ignored), a jump is a gap (events lost);
* a message is *sent* when its frame is written, *delivered* at its ``delivered`` and
  *echoed* when the scripted agent's ``"Echo: <text>"`` comes back; a second ``delivered``
  or echo of the same message is a duplicate; what is sent and never echoed is lost;
* ``ended`` before the generator sent ``end`` is unexpected.

Message texts carry what the latency needs: ``<phase>:<chat index>:<n>:<send time in
monotonic ns>:<padding>``; ``phase`` is ``lt`` (latency phase: the simulator notes when it
got it, see :mod:`.simproc`) or ``sa`` (saturation). Times are ``time.monotonic_ns()``,
the one CLOCK_MONOTONIC of the machine that the simulator reads too.

Sending modes: *open loop* (a fixed total rate, chats in turn) and *closed loop* (each chat
keeps ``window`` messages in flight and sends the next when an echo comes back: the
saturation throughput). Every wait is bounded by a deadline.
"""

from __future__ import annotations

__all__ = ["ChatState", "Counters", "LoadGenerator", "Samples"]

import asyncio
import time
from array import array
from collections import Counter
from collections.abc import Sequence
from typing import Any

import aiohttp
import msgspec
from aiohttp import WSMsgType

from bridged.tools.loadtest.options import node_of

JSON = "bridged.v1+json"
MSGPACK = "bridged.v1+msgpack"
ECHO = "Echo: "
_CONNECT_TIMEOUT = 30.0


class _Event(msgspec.Struct, kw_only=True):
    """Any frame from the server: one flat Struct, decoded in one pass."""

    type: str
    chat: str = ""
    seq: int = 0
    id: str = ""
    text: str = ""
    reason: str = ""
    code: str = ""
    ref: str = ""
    detail: str = ""


class ChatState:
    """What the generator knows of one chat."""

    __slots__ = ("conn", "end_sent", "ended", "ended_reason", "id", "idx", "joined",
                 "joined_ns", "last_seq", "next_n", "outstanding", "started_ns",
                 "undelivered")

    def __init__(self, idx: int, chat_id: str, conn: _Conn) -> None:
        self.idx = idx
        self.id = chat_id
        self.conn = conn
        self.last_seq = 0
        self.joined = False
        self.ended = False
        self.ended_reason = ""
        self.end_sent = False
        self.started_ns = 0
        self.joined_ns = 0
        self.next_n = 1
        self.outstanding: dict[int, int] = {}  # n -> send time (ns), until echoed
        self.undelivered: set[int] = set()


class _Conn:
    __slots__ = ("closed", "idx", "reader", "ws")

    def __init__(self, idx: int, ws: aiohttp.ClientWebSocketResponse[Any]) -> None:
        self.idx = idx
        self.ws = ws
        self.closed = False
        self.reader: asyncio.Task[None] | None = None


class Counters:
    """Everything counted, across all chats."""

    def __init__(self) -> None:
        self.connections = 0
        self.started = 0
        self.joined = 0
        self.queued = 0
        self.ended_unexpected = 0
        self.ended_reasons: Counter[str] = Counter()
        # Why chats ended unexpectedly: "reason: text" (cut), counted.
        self.ended_details: Counter[str] = Counter()
        self.ended_client = 0
        self.errors: Counter[str] = Counter()
        self.sent = 0
        self.delivered = 0
        self.echoed = 0
        self.busy = 0
        self.dup_seq = 0
        self.dup_echo = 0
        self.dup_delivered = 0
        self.seq_gaps = 0
        self.unknown = 0
        self.frames_in = 0
        self.acks = 0
        self.connection_errors = 0
        self.closed_connections = 0

    @property
    def duplicated(self) -> int:
        """Events seen more than once (seq, echoes, delivered)."""
        return self.dup_seq + self.dup_echo + self.dup_delivered

    @property
    def errors_total(self) -> int:
        """Every ``error`` envelope received, whatever its code."""
        return sum(self.errors.values())


class Samples:
    """Latency samples of the latency phase, in nanoseconds."""

    def __init__(self) -> None:
        self.t0_ns = 0
        self.send_t = array("d")  # seconds since the phase began, per round trip sample
        self.rtt = array("q")
        self.delivered = array("q")
        self.ocp_to_agent = array("q")
        self.agent_to_ocp = array("q")
        self.pending_echo: dict[str, int] = {}  # text -> echo time, until its mark comes
        self.pending_mark: dict[str, int] = {}  # text -> simulator time, until its echo
        self.marks_dropped = 0
        self.reply_delay_ns = 0

    def echo(self, text: str, t_echo: int) -> None:
        """An echo reached OCP at ``t_echo``: pair it with the simulator's mark."""
        t_sim = self.pending_mark.pop(text, None)
        if t_sim is None:
            self.pending_echo[text] = t_echo
        else:
            self.agent_to_ocp.append(t_echo - t_sim - self.reply_delay_ns)

    def mark(self, text: str, t_sim: int) -> None:
        """The simulator saw ``text`` at ``t_sim``: the OCP-to-agent latency, and the pair."""
        parts = text.split(":", 4)
        if len(parts) < 4:
            return
        self.ocp_to_agent.append(t_sim - int(parts[3]))
        t_echo = self.pending_echo.pop(text, None)
        if t_echo is None:
            self.pending_mark[text] = t_sim
        else:
            self.agent_to_ocp.append(t_echo - t_sim - self.reply_delay_ns)


_decode_json = msgspec.json.Decoder(_Event).decode
_decode_msgpack = msgspec.msgpack.Decoder(_Event).decode
_encode_json = msgspec.json.Encoder().encode
_encode_msgpack = msgspec.msgpack.Encoder().encode


class LoadGenerator:
    """N chats over M connections to one server.

    Args:
        url: the server's ``ws://HOST:PORT/v1/chat``; or several servers' (the nodes of a
            cluster), connection ``j`` going to ``url[j % len(url)]``.
        token: a bearer token it accepts.
        chats: N.
        connections: M (chat ``i`` goes over connection ``i % M``).
        fmt: the subprotocol.
        profile: the ``profile`` named in ``start`` (None: none).
        msg_bytes: the length of each message text (at least what the markers need).
        run_id: a prefix that makes the chat ids unique to this run.
    """

    def __init__(self, url: str | Sequence[str], token: str, *, chats: int, connections: int,
                 fmt: str = JSON, profile: str | None = "echo", msg_bytes: int = 64,
                 run_id: str = "lt") -> None:
        if chats < 1 or connections < 1:
            raise ValueError("chats and connections must be at least 1")
        self.urls = [url] if isinstance(url, str) else list(url)
        if not self.urls:
            raise ValueError("at least one server URL is needed")
        self.url = self.urls[0]
        self.token = token
        self.n_chats = chats
        self.n_connections = min(connections, chats)
        self.fmt = fmt
        self.profile = profile
        self.msg_bytes = msg_bytes
        self.run_id = run_id
        self.counters = Counters()
        self.samples = Samples()
        self.chats: dict[str, ChatState] = {}
        self.by_idx: list[ChatState] = []
        self.conns: list[_Conn | None] = [None] * self.n_connections
        self.mode = "idle"  # idle | closed | open | drain | ending
        self.window = 1
        self.first_start_ns = 0
        self.last_join_ns = 0
        self._binary = fmt == MSGPACK
        self._opcode = WSMsgType.BINARY if self._binary else WSMsgType.TEXT
        self._encode = _encode_msgpack if self._binary else _encode_json
        self._decode = _decode_msgpack if self._binary else _decode_json
        self._http: aiohttp.ClientSession | None = None
        self._pad = "x" * msg_bytes

    # --- lifecycle ------------------------------------------------------------------------

    async def __aenter__(self) -> LoadGenerator:
        self._http = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=0, force_close=False))
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        """Close every connection and wait for the readers. Idempotent."""
        conns = [c for c in self.conns if c is not None]
        await asyncio.gather(*(c.ws.close() for c in conns if not c.ws.closed),
                             return_exceptions=True)
        readers = [c.reader for c in conns if c.reader is not None]
        for task in readers:
            if not task.done():
                task.cancel()
        if readers:
            await asyncio.gather(*readers, return_exceptions=True)
        if self._http is not None:
            await self._http.close()
            self._http = None

    # --- starting -------------------------------------------------------------------------

    async def _connection(self, idx: int) -> _Conn:
        conn = self.conns[idx]
        if conn is not None:
            return conn
        assert self._http is not None
        async with asyncio.timeout(_CONNECT_TIMEOUT):
            ws = await self._http.ws_connect(
                self.url_of(idx), headers={"Authorization": f"Bearer {self.token}"},
                protocols=(self.fmt,), heartbeat=None, max_msg_size=0, autoclose=True,
                decode_text=False, timeout=aiohttp.ClientWSTimeout(ws_close=5.0))
        conn = _Conn(idx, ws)
        conn.reader = asyncio.create_task(self._read(conn), name=f"loadgen:conn{idx}")
        self.conns[idx] = conn
        self.counters.connections += 1
        return conn

    def url_of(self, connection: int) -> str:
        """The server that connection ``connection`` goes to (round-robin over the URLs)."""
        return self.urls[node_of(connection, len(self.urls))]

    def chats_per_server(self) -> list[int]:
        """How many of the started chats went to each server, in the order of the URLs."""
        counts = [0] * len(self.urls)
        for chat in self.by_idx:
            counts[node_of(chat.conn.idx, len(self.urls))] += 1
        return counts

    async def start_chats(self, rate: float, deadline: float) -> None:
        """Open the connections and start every chat, ``rate`` chats/s, until ``deadline``
        (``time.monotonic()``)."""
        t0 = time.monotonic()
        self.first_start_ns = time.monotonic_ns()
        for i in range(self.n_chats):
            now = time.monotonic()
            if now > deadline:
                return
            due = t0 + i / rate
            if due > now:
                await asyncio.sleep(due - now)
            try:
                conn = await self._connection(i % self.n_connections)
            except (TimeoutError, aiohttp.ClientError, OSError):
                self.counters.connection_errors += 1
                continue
            chat_id = f"{self.run_id}-{i}"
            chat = ChatState(i, chat_id, conn)
            self.chats[chat_id] = chat
            self.by_idx.append(chat)
            start: dict[str, Any] = {"type": "start", "chat": chat_id}
            if self.profile:
                start["profile"] = self.profile
            chat.started_ns = time.monotonic_ns()
            if await self._send(conn, start):
                self.counters.started += 1

    async def wait_joined(self, deadline: float) -> bool:
        """Wait until every started chat has joined (or ended); False at the deadline."""
        while time.monotonic() < deadline:
            settled = self.counters.joined + self.counters.ended_unexpected
            if settled >= self.counters.started:
                return True
            await asyncio.sleep(0.05)
        return False

    # --- sending --------------------------------------------------------------------------

    async def _send(self, conn: _Conn, envelope: dict[str, Any]) -> bool:
        if conn.closed or conn.ws.closed:
            return False
        try:
            await conn.ws.send_frame(self._encode(envelope), self._opcode)
        except (ConnectionError, RuntimeError, aiohttp.ClientError):
            return False
        return True

    def _message_frame(self, chat: ChatState, phase: str) -> tuple[bytes, int, int]:
        n = chat.next_n
        chat.next_n += 1
        t = time.monotonic_ns()
        text = f"{phase}:{chat.idx}:{n}:{t}:"
        if len(text) < self.msg_bytes:
            text += self._pad[: self.msg_bytes - len(text)]
        frame = self._encode({"type": "message", "chat": chat.id, "id": f"m{n}", "text": text})
        return frame, n, t

    async def send_message(self, chat: ChatState, phase: str) -> bool:
        """Send one message of ``chat``; False if the connection is gone."""
        conn = chat.conn
        if conn.closed or conn.ws.closed or chat.ended:
            return False
        frame, n, t = self._message_frame(chat, phase)
        chat.outstanding[n] = t
        chat.undelivered.add(n)
        self.counters.sent += 1
        try:
            await conn.ws.send_frame(frame, self._opcode)
        except (ConnectionError, RuntimeError, aiohttp.ClientError):
            # Not written: not sent.
            del chat.outstanding[n]
            chat.undelivered.discard(n)
            self.counters.sent -= 1
            return False
        return True

    def live_chats(self) -> list[ChatState]:
        """The chats an agent joined that have not ended."""
        return [c for c in self.by_idx if c.joined and not c.ended]

    async def set_window(self, window: int) -> None:
        """Closed loop: from now on every chat keeps ``window`` messages in flight (the
        reader sends the next one as each echo comes back)."""
        self.window = window
        self.mode = "closed"
        for chat in self.live_chats():
            while len(chat.outstanding) < window:
                if not await self.send_message(chat, "sa"):
                    break

    async def run_open(self, rate: float, seconds: float, phase: str = "lt") -> tuple[int, float]:
        """Open loop: ``rate`` messages/s in total, chats in turn, for ``seconds``.

        Returns:
            (messages sent, seconds spent).
        """
        self.mode = "open"
        chats = self.live_chats()
        if not chats or rate <= 0:
            await asyncio.sleep(seconds)
            self.mode = "drain"
            return 0, seconds
        self.samples.t0_ns = time.monotonic_ns()
        t0 = time.monotonic()
        sent = i = 0
        # Never burst more than 50 ms worth of messages if the generator falls behind.
        burst = max(1, int(rate * 0.05))
        while True:
            now = time.monotonic()
            if now - t0 >= seconds:
                break
            due = min(int(rate * (now - t0)) - sent, burst)
            for _ in range(due):
                chat = chats[i % len(chats)]
                i += 1
                if await self.send_message(chat, phase):
                    sent += 1
                else:
                    sent += 1  # keep the schedule; the failure is counted elsewhere
            await asyncio.sleep(0.004)
        self.mode = "drain"
        return sent, time.monotonic() - t0

    def in_flight(self) -> int:
        """Messages sent and not yet echoed, over every live chat."""
        return sum(len(c.outstanding) for c in self.by_idx if not c.ended)

    async def drain(self, deadline: float) -> bool:
        """Wait until every message sent is echoed (or its chat ended); False at deadline."""
        self.mode = "drain"
        while time.monotonic() < deadline:
            if self.in_flight() == 0 and not any(
                    c.undelivered for c in self.by_idx if not c.ended):
                return True
            await asyncio.sleep(0.05)
        return False

    async def end_chats(self, rate: float, deadline: float) -> bool:
        """Send ``end`` for every live chat (``rate``/s) and wait for their ``ended``."""
        self.mode = "ending"
        t0 = time.monotonic()
        for i, chat in enumerate(self.live_chats()):
            due = t0 + i / rate
            now = time.monotonic()
            if now > deadline:
                break
            if due > now:
                await asyncio.sleep(due - now)
            chat.end_sent = True
            await self._send(chat.conn, {"type": "end", "chat": chat.id})
        while time.monotonic() < deadline:
            if all(c.ended for c in self.by_idx if c.end_sent):
                return True
            await asyncio.sleep(0.05)
        return False

    # --- receiving ------------------------------------------------------------------------

    async def _read(self, conn: _Conn) -> None:
        ws = conn.ws
        try:
            while True:
                msg = await ws.receive()
                if msg.type is WSMsgType.TEXT or msg.type is WSMsgType.BINARY:
                    replies = self._on_frame(msg.data)
                    if replies:
                        for frame in replies:
                            if not ws.closed:
                                await ws.send_frame(frame, self._opcode)
                elif msg.type in (WSMsgType.CLOSE, WSMsgType.CLOSING, WSMsgType.CLOSED,
                                  WSMsgType.ERROR):
                    break
        except (ConnectionError, RuntimeError, aiohttp.ClientError):
            pass
        finally:
            conn.closed = True
            if self.mode not in ("closing",):
                self.counters.closed_connections += 1

    def _on_frame(self, data: bytes) -> list[bytes] | None:
        t = time.monotonic_ns()
        counters = self.counters
        counters.frames_in += 1
        try:
            ev = self._decode(data)
        except msgspec.DecodeError:
            counters.unknown += 1
            return None
        kind = ev.type
        if kind == "hello":
            return None
        if kind == "error":
            counters.errors[ev.code] += 1
            if ev.code == "busy":
                chat = self.chats.get(ev.chat)
                if chat is not None and ev.ref.startswith("m"):
                    # Refused, not accepted: not sent after all.
                    n = int(ev.ref[1:])
                    if chat.outstanding.pop(n, None) is not None:
                        chat.undelivered.discard(n)
                        counters.busy += 1
            return None
        chat = self.chats.get(ev.chat)
        if chat is None:
            counters.unknown += 1
            return None
        seq = ev.seq
        if seq <= chat.last_seq:
            counters.dup_seq += 1
            return None
        if seq != chat.last_seq + 1:
            counters.seq_gaps += seq - chat.last_seq - 1
        chat.last_seq = seq
        if kind == "agent_message":
            replies = [self._encode({"type": "ack", "chat": chat.id, "seq": seq})]
            counters.acks += 1
            text = ev.text
            if not text.startswith(ECHO):
                return replies
            body = text[len(ECHO):]
            parts = body.split(":", 4)
            try:
                n = int(parts[2])
            except (IndexError, ValueError):
                return replies
            t_send = chat.outstanding.pop(n, None)
            if t_send is None:
                if n < chat.next_n:
                    counters.dup_echo += 1
                else:
                    counters.unknown += 1
                return replies
            counters.echoed += 1
            if parts[0] == "lt":
                samples = self.samples
                samples.send_t.append((t_send - samples.t0_ns) / 1e9)
                samples.rtt.append(t - t_send)
                samples.echo(body, t)
            elif self.mode == "closed" and parts[0] == "sa" and not chat.ended:
                while len(chat.outstanding) < self.window:
                    frame, n2, t2 = self._message_frame(chat, "sa")
                    chat.outstanding[n2] = t2
                    chat.undelivered.add(n2)
                    counters.sent += 1
                    replies.append(frame)
            return replies
        if kind == "delivered":
            try:
                n = int(ev.id[1:])
            except ValueError:
                counters.unknown += 1
                return None
            if n in chat.undelivered:
                chat.undelivered.discard(n)
                counters.delivered += 1
                t_send = chat.outstanding.get(n)
                if t_send is not None and self.mode == "open":
                    self.samples.delivered.append(t - t_send)
            else:
                counters.dup_delivered += 1
            return None
        if kind == "agent_typing":
            return None
        if kind == "agent_joined":
            if not chat.joined:
                chat.joined = True
                chat.joined_ns = t
                self.last_join_ns = max(self.last_join_ns, t)
                counters.joined += 1
            counters.acks += 1
            return [self._encode({"type": "ack", "chat": chat.id, "seq": seq})]
        if kind == "queued":
            counters.queued += 1
            return None
        if kind == "ended":
            if not chat.ended:
                chat.ended = True
                chat.ended_reason = ev.reason
                counters.ended_reasons[ev.reason] += 1
                if chat.end_sent and ev.reason == "client":
                    counters.ended_client += 1
                else:
                    counters.ended_unexpected += 1
                    detail = f"{ev.reason}: {ev.text[:120]}"
                    if detail in counters.ended_details or len(counters.ended_details) < 50:
                        counters.ended_details[detail] += 1
            counters.acks += 1
            return [self._encode({"type": "ack", "chat": chat.id, "seq": seq})]
        return None
