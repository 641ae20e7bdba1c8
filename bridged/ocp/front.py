"""The WebSocket front that OCP connects to, and the HTTP endpoints beside it.

``GET /v1/chat`` upgrades to a WebSocket after checking the bearer token; each connection
becomes a :class:`BotLink`, with one reader (this module's handler, which decodes frames
and hands envelopes to the dispatcher) and one writer task. The writer sends control frames
(``hello``, and the ``error`` answering a refused envelope) first, then the chats that have
unsent events (and the errors held with them), a few events per chat in turn, so that one
busy chat cannot starve the others on the same connection. Writing waits for the socket to
drain, so a slow client slows its own writer, its chats' outboxes fill, and their actors
stop polling Salesforce: backpressure reaches Salesforce, not memory.

``/healthz``, ``/readyz`` and ``/metrics`` share the listener.
"""

from __future__ import annotations

__all__ = ["BotLink", "Front"]

import asyncio
import hmac
import itertools
import logging
from collections import deque

from aiohttp import WSCloseCode, WSMsgType, web

from bridged._log import log_event
from bridged.chats.chat import Chat, HeldError
from bridged.chats.dispatcher import Dispatcher
from bridged.chats.policy import RateLimit
from bridged.config.file import ServerConfig
from bridged.errors import BadEnvelope, Busy, Refused
from bridged.ocp import envelopes as env
from bridged.ocp.admin import admin_routes
from bridged.ops.metrics import CONTENT_TYPE, Metrics
from bridged.state.redisstore import RedisStore

log = logging.getLogger("bridged.ocp.front")

# Events of one chat written before the writer moves on to the next chat.
_BATCH = 16
_link_ids = itertools.count(1)
_GOING_AWAY = b"bridged is shutting down"


class BotLink:
    """One WebSocket connection from OCP.

    Args:
        ws: the prepared WebSocket.
        fmt: the negotiated subprotocol.
        control_size: bound of the queue of control frames (``hello``, ``error``).
        metrics: where sent envelopes are counted.
    """

    def __init__(self, ws: web.WebSocketResponse, fmt: env.Format, *, control_size: int,
                 metrics: Metrics) -> None:
        self.id = f"L{next(_link_ids)}"
        self.chats: set[str] = set()
        self.fmt = fmt
        self._ws = ws
        self._opcode = WSMsgType.BINARY if fmt == env.MSGPACK else WSMsgType.TEXT
        self._metrics = metrics
        self._ready: deque[Chat] = deque()
        self._scheduled: set[int] = set()
        self._control: deque[tuple[str, bytes]] = deque()
        self._control_size = control_size
        self._control_room = asyncio.Event()
        self._wake = asyncio.Event()
        self._closed = False

    # --- Link (what chats call) ---------------------------------------------------------

    def schedule(self, chat: Chat) -> None:
        if self._closed or id(chat) in self._scheduled:
            return
        self._scheduled.add(id(chat))
        self._ready.append(chat)
        self._wake.set()

    # --- the reader's side --------------------------------------------------------------

    async def send_control(self, envelope: env.Hello | env.Error) -> None:
        """Queue a control frame, waiting for room (this slows only this link's reader)."""
        while len(self._control) >= self._control_size and not self._closed:
            self._control_room.clear()
            await self._control_room.wait()
        self._queue_control(envelope)

    def _queue_control(self, envelope: env.Hello | env.Error) -> None:
        if self._closed:
            return
        if isinstance(envelope, env.Error):
            self._metrics.errors.inc(envelope.code)
        kind = envelope.__struct_config__.tag
        self._control.append((str(kind), env.encode(envelope, self.fmt)))
        self._wake.set()

    # --- the writer ---------------------------------------------------------------------

    async def run_writer(self) -> None:
        """Write control frames and chat events until the link closes."""
        try:
            while not self._closed:
                await self._wake.wait()
                self._wake.clear()
                while (self._control or self._ready) and not self._closed:
                    while self._control:
                        kind, frame = self._control.popleft()
                        self._control_room.set()
                        await self._write(kind, frame)
                    if self._ready:
                        await self._write_chat(self._ready.popleft())
        except (ConnectionError, RuntimeError) as exc:
            # The peer went away mid-write; the reader sees the close and cleans up.
            log_event(log, logging.INFO, "link_write_failed", link=self.id, detail=str(exc))
        finally:
            self._closed = True
            self._control_room.set()

    async def _write_chat(self, chat: Chat) -> None:
        self._scheduled.discard(id(chat))
        if chat.link is not self:
            return  # moved to another connection meanwhile
        epoch = chat.bind_epoch
        for item in chat.outgoing(_BATCH):
            if isinstance(item, HeldError):
                self._metrics.errors.inc(item.error.code)
                await self._write("error", env.encode(item.error, self.fmt))
            else:
                await self._write(item.__struct_config__.tag, env.encode(item, self.fmt))
            if chat.link is not self or chat.bind_epoch != epoch:
                return  # rebound while writing: the new binding has its own replay point
            if isinstance(item, HeldError):
                chat.errors_sent = item.serial
            else:
                chat.sent_upto = item.seq
        if chat.outgoing(1):
            self.schedule(chat)  # more to send: take turns with the other chats

    async def _write(self, kind: object, frame: bytes) -> None:
        await self._ws.send_frame(frame, self._opcode)
        self._metrics.envelopes_out.inc(str(kind))

    @property
    def depths(self) -> tuple[int, int]:
        """Control frames queued, and chats waiting for this writer."""
        return len(self._control), len(self._ready)

    def close(self) -> None:
        """Stop writing. Idempotent."""
        self._closed = True
        self._wake.set()
        self._control_room.set()


class Front:
    """The aiohttp application: ``/v1/chat``, ``/healthz``, ``/readyz``, ``/metrics``.

    Args:
        server: the ``[server]`` section (tokens, limits).
        dispatcher: where envelopes go.
        metrics: what ``/metrics`` shows.
        node: this instance's name, sent in ``hello``.
    """

    def __init__(self, server: ServerConfig, dispatcher: Dispatcher, metrics: Metrics,
                 node: str) -> None:
        self.server = server
        self._dispatcher = dispatcher
        self._metrics = metrics
        self._node = node
        self._tokens = [t.encode() for t in server.tokens]
        self._sockets: set[web.WebSocketResponse] = set()
        self._links: set[BotLink] = set()
        self._going_away = False  # set by close_connections: the process is shutting down
        # [cluster]: the shared store (the admin view lists the cluster's chats from it).
        self.cluster_store: RedisStore | None = None
        self.app = web.Application()
        self.app.router.add_get("/v1/chat", self._chat)
        self.app.router.add_get("/healthz", self._healthz)
        self.app.router.add_get("/readyz", self._readyz)
        self.app.router.add_get("/metrics", self._metrics_page)
        admin_routes(self.app, dispatcher, lambda: self.server.admin_tokens,
                     lambda: self.cluster_store)
        metrics.ready.set_function(lambda: 1.0 if self.ready() else 0.0)

    def reconfigure(self, server: ServerConfig) -> None:
        """Take new tokens (SIGHUP); connections already open stay open."""
        self.server = server
        self._tokens = [t.encode() for t in server.tokens]

    def _authorised(self, request: web.Request) -> bool:
        header = request.headers.get("Authorization", "")
        scheme, _, presented = header.partition(" ")
        if scheme.lower() != "bearer" or not presented:
            return False
        given = presented.strip().encode()
        # Compare with every token, in constant time, without stopping at a match.
        matches = [hmac.compare_digest(given, token) for token in self._tokens]
        return any(matches)

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        if not self._authorised(request):
            log_event(log, logging.WARNING, "unauthorised", peer=request.remote or "")
            return web.Response(status=401, text="missing or wrong bearer token\n",
                                headers={"WWW-Authenticate": 'Bearer realm="bridged"'})
        ws = web.WebSocketResponse(
            protocols=env.SUBPROTOCOLS,
            heartbeat=self.server.heartbeat_s,
            max_msg_size=self.server.max_frame_bytes,
            compress=False,  # thousands of small frames: CPU matters more than bytes
            decode_text=False,  # msgspec decodes the UTF-8 bytes directly
        )
        if not ws.can_prepare(request).ok:
            return web.Response(status=400, text="expected a WebSocket upgrade\n")
        await ws.prepare(request)
        if self._going_away:
            # Upgraded while the drain was under way: told "going away" like every other.
            await ws.close(code=WSCloseCode.GOING_AWAY, message=_GOING_AWAY)
            return ws
        fmt: env.Format = env.MSGPACK if ws.ws_protocol == env.MSGPACK else env.JSON
        link = BotLink(ws, fmt, control_size=self.server.outbound_queue_size,
                       metrics=self._metrics)
        self._sockets.add(ws)
        self._links.add(link)
        self._metrics.connections.inc()
        log_event(log, logging.INFO, "link_opened", link=link.id, format=fmt,
                  peer=request.remote or "")
        writer = asyncio.create_task(link.run_writer(), name=f"link:{link.id}:writer")
        try:
            await link.send_control(env.Hello(node=self._node,
                                              max_frame_bytes=self.server.max_frame_bytes))
            await self._read(ws, link)
        finally:
            self._dispatcher.link_lost(link)
            link.close()
            await writer
            self._sockets.discard(ws)
            self._links.discard(link)
            self._metrics.connections.dec()
            log_event(log, logging.INFO, "link_closed", link=link.id,
                      code=ws.close_code or 0)
        return ws

    async def _read(self, ws: web.WebSocketResponse, link: BotLink) -> None:
        expected = WSMsgType.BINARY if link.fmt == env.MSGPACK else WSMsgType.TEXT
        rate = self.server.max_envelopes_per_s
        limit = RateLimit(rate, burst=2 * rate)
        refused_in_a_row = 0
        loop = asyncio.get_running_loop()
        # Never paused for the process's load: the dispatcher refuses (busy) the messages of
        # the connection that causes it, and everything else, acks and ends included, is
        # read and applied as usual.
        async for msg in ws:
            if msg.type not in (WSMsgType.TEXT, WSMsgType.BINARY):
                if msg.type is WSMsgType.ERROR:
                    log_event(log, logging.INFO, "link_error", link=link.id,
                              detail=str(ws.exception()))
                break
            try:
                if not limit.allow(loop.time()):
                    refused_in_a_row += 1
                    if refused_in_a_row > 2 * rate:  # a whole burst ignored the busy answers
                        log_event(log, logging.WARNING, "link_rate_exceeded", link=link.id)
                        await ws.close(code=WSCloseCode.POLICY_VIOLATION,
                                       message=b"too many envelopes per second")
                        break
                    raise Busy(f"more than server.max_envelopes_per_s ({rate:g}) envelopes"
                               " per second on this connection; this one was NOT accepted")
                refused_in_a_row = 0
                if msg.type is not expected:
                    kind = "binary" if expected is WSMsgType.BINARY else "text"
                    raise BadEnvelope(f"frame: {link.fmt} takes {kind} frames")
                envelope = env.decode_inbound(msg.data, link.fmt)
                self._metrics.envelopes_in.inc(envelope.__struct_config__.tag)  # type: ignore[arg-type]
                self._dispatcher.handle(link, envelope)
            except Refused as exc:
                await link.send_control(env.Error(
                    code=exc.code, detail=exc.detail,
                    chat=exc.chat if exc.chat is not None else env.UNSET,
                    ref=exc.ref if exc.ref is not None else env.UNSET,
                ))

    @property
    def connection_count(self) -> int:
        return len(self._links)

    def queue_depths(self) -> tuple[int, int]:
        """Control frames queued, and chats waiting for a writer, over every connection."""
        control = ready = 0
        for link in self._links:
            c, r = link.depths
            control, ready = control + c, ready + r
        return control, ready

    async def close_connections(self) -> None:
        """Close every connection with 1001 (going away), and any accepted from now on.

        Idempotent.
        """
        self._going_away = True
        sockets = list(self._sockets)
        await asyncio.gather(
            *(ws.close(code=WSCloseCode.GOING_AWAY, message=_GOING_AWAY) for ws in sockets),
            return_exceptions=True,
        )

    async def _healthz(self, _request: web.Request) -> web.Response:
        return web.Response(text="ok\n")

    def ready(self) -> bool:
        """Whether bridged takes new chats: what ``/readyz`` and ``bridged_ready`` say."""
        accepting = self._dispatcher.accepting
        return not self._dispatcher.draining and (accepting is None or accepting())

    async def _readyz(self, _request: web.Request) -> web.Response:
        if not self.ready():
            text = "draining\n" if self._dispatcher.draining else "no shared store\n"
            return web.Response(status=503, text=text)
        return web.Response(text="ready\n")

    async def _metrics_page(self, _request: web.Request) -> web.Response:
        return web.Response(body=self._metrics.render(), headers={"Content-Type": CONTENT_TYPE})
