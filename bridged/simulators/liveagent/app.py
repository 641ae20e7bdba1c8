"""The simulator's I/O shell: an aiohttp app around the pure :mod:`.model`.

Routes (a client's base URL is ``http://HOST:PORT/chat/rest/``)::

    GET    /chat/rest/System/SessionId
    DELETE /chat/rest/System/SessionId/{key}
    GET    /chat/rest/System/Messages?ack=N
    GET    /chat/rest/System/ReconnectSession?ReconnectSession.offset=N
    POST   /chat/rest/Chasitor/{ChasitorInit,ChatMessage,ChasitorTyping,ChasitorNotTyping,
                                ChasitorSneakPeek,ChatEnd,CustomEvent,ChasitorResyncState}
    GET    /chat/rest/Visitor/Availability?org_id=&deployment_id=&Availability.ids=

The control API under ``/_sim/`` is in :mod:`.control`; it calls the public methods of
:class:`Simulator`, which tests in the same process call directly.

Cost per session: the model object, and while a poll is held one future and one timer
handle. Scripted delays are ``loop.call_later`` chains; one reaper task ends the sessions
nobody polls and forgets ended ones after ``ended_retention_s``.

Fault injection (table in :mod:`.faults`): every Live Agent request first passes the outage
gate (:meth:`Simulator._gate`), then its header checks, then asks the :class:`FaultPlan`
once whether a fault is due. A ``fail`` after is a proxy's answer: the request is applied
(a poll is held, and its answer later goes nowhere) while the client gets the status. A
``reset`` is a TCP RST: ``SO_LINGER`` with a zero timeout, then ``transport.abort()``;
aiohttp's attempt to write the (never sent) response then meets a closing transport, which
it treats as a client disconnect, quietly. A ``delay`` before
the request sleeps and then handles the request again from the top; after, it sleeps
between applying and answering. A delayed Messages poll is an ordinary held poll with a
"not before" time. None of this adds a task or a timer per session.

One simulator can listen on several ports (``running_simulator(extra_ports=N)``), all
serving the same sessions, so a ``SwitchServer`` message can send the visitor to "another
host"; every request record says which port it came in on.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import socket
import struct
import time
import zlib
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import msgspec
from aiohttp import web

from ..common import url_host
from . import behaviours
from .behaviours import AgentView, Step
from .control import ControlApi
from .faults import (
    AFTER,
    BEFORE,
    DELAY,
    FAIL,
    FAULT_RESOURCES,
    OUTAGE_MODES,
    RESET,
    RESET_REPLY,
    Fault,
    FaultPlan,
    InjectedFault,
    Outage,
)
from .model import (
    SEQUENCED_RESOURCES,
    InitAccepted,
    OutboxFull,
    RequestRecord,
    Session,
    SessionOver,
    SimulatorError,
    UnknownSession,
    VisitorSaid,
)
from .options import SimulatorOptions
from .wire import (
    AFFINITY,
    API_VERSION,
    CONTENT_TYPE,
    RECORDED_HEADERS,
    SEQUENCE,
    SESSION_KEY,
    Reply,
    is_affinity_token,
    is_sf_id,
    json_reply,
    parse_api_version,
    text_reply,
)

__all__ = [
    "BASE_PATH",
    "CONTROL_PATH",
    "FAULT_RESOURCES",
    "Simulator",
    "running_simulator",
    "serve_forever",
]

logger = logging.getLogger("bridged.simulators.liveagent")

BASE_PATH = "/chat/rest/"
CONTROL_PATH = "/_sim/"

_RECONNECT_MIN_VERSION = 37  # "ReconnectSession needs >= 37" (SALESFORCE.md 2.2)

# SO_LINGER {on, 0 s}: close() discards the socket with a RST instead of a FIN handshake.
_LINGER_RST = struct.pack("ii", 1, 0)

# Most injected faults remembered (oldest dropped).
_INJECTED_MAX = 10_000

# Re-listening after a "refuse" outage: attempts and the pause between them.
_RELISTEN_ATTEMPTS = 100
_RELISTEN_PAUSE_S = 0.02
# Where a request keeps the time it arrived (aiohttp request storage), for the record.
_RECEIVED = web.RequestKey("bridged_simulator_received", float)

# Applies a request that passed its checks and no fault stopped; gives the reply and the
# session whose log records it (a SessionId request creates that session).
_Apply = Callable[[], tuple[Session | None, Reply]]

# What a resource's checks, made before any fault is due, find: the session the request
# names (None if none) and either the rejection or the _Apply that carries it out.
_Checked = tuple[Session | None, Reply | _Apply]
_Check = Callable[[web.Request], Awaitable[_Checked]]

# What an accepted request of a session resource does: (session, API version, JSON body,
# b"" for a resource without one) -> reply.
_Change = Callable[[Session, int, bytes], Reply]


class _Held:
    """The one held Messages poll of a session.

    ``not_before`` is the loop time before which it gets no batch (an injected delay; 0
    for none), ``arrived`` when it came in (the hold counts from then), ``label`` the
    fault that answered it instead of the model (an outage), if any.
    """

    __slots__ = ("arrived", "future", "label", "not_before", "request", "timer")

    def __init__(
        self,
        future: asyncio.Future[Reply],
        timer: asyncio.TimerHandle,
        request: web.Request,
        *,
        arrived: float = 0.0,
        not_before: float = 0.0,
    ) -> None:
        self.future = future
        self.timer = timer
        self.request = request
        self.arrived = arrived
        self.not_before = not_before
        self.label: str | None = None


class _Listener:
    """One listening socket of a served simulator, which an outage can close and reopen."""

    __slots__ = ("factory", "host", "port", "server")

    def __init__(self, factory: Callable[[], asyncio.Protocol], host: str, port: int) -> None:
        self.factory = factory
        self.host = host
        self.port = port
        self.server: asyncio.Server | None = None

    @property
    def listening(self) -> bool:
        return self.server is not None

    async def start(self) -> None:
        """Listen (again) on ``host:port``; port 0 picks a free one, kept for later."""
        if self.server is not None:
            return
        loop = asyncio.get_running_loop()
        # A large backlog: a load test opens thousands of connections at once. asyncio sets
        # SO_REUSEADDR on POSIX, so the port can be bound again while the connections it
        # accepted before an outage are still open.
        self.server = await loop.create_server(self.factory, self.host, self.port, backlog=4096)
        self.port = self.server.sockets[0].getsockname()[1]

    def stop(self) -> None:
        """Stop listening at once: new connections are refused; accepted ones stay."""
        if self.server is not None:
            self.server.close()
            self.server = None


def _local_port(request: web.Request) -> int | None:
    """The local port the request came in on (None once its connection is gone)."""
    transport = request.transport
    if transport is None:
        return None
    sockname = transport.get_extra_info("sockname")
    if isinstance(sockname, tuple) and len(sockname) >= 2:
        return int(sockname[1])
    return None


def _abort(request: web.Request) -> None:
    """Drop the request's connection with a TCP RST and no HTTP answer."""
    transport = request.transport
    if transport is None or transport.is_closing():
        return
    sock = transport.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_RST)
    transport.abort()


class Simulator:
    """A strict simulator of Salesforce's legacy Live Agent Chat REST API (visitor side).

    Serve :attr:`app` with any aiohttp runner, or use :func:`running_simulator`.

    Attributes:
        options: The configuration.
        app: The ``aiohttp.web.Application``.
        sessions: Live and ended (not yet reaped) sessions by session id.
        unattributed_requests: Requests that belong to no session (unknown key, SessionId
            refused, Availability), most recent last, bounded.
        injected: Every fault that hit a request (:class:`~.faults.InjectedFault`), oldest
            first, bounded.
        base_url: ``http://HOST:PORT/chat/rest/`` once served by :func:`running_simulator`.
        port: The bound port once served by :func:`running_simulator`.
        ports: Every bound port, ``port`` first, then the aliases.
        alias_base_urls: The base URLs of the extra ports (same sessions, other "host").
        watchers: Called with a session's id after anything about it changed (a request, an
            agent action, a script step, its end) and when it is forgotten; they must return
            at once and never raise (the agent console watches this way).
    """

    def __init__(self, options: SimulatorOptions | None = None) -> None:
        self.options = options if options is not None else SimulatorOptions()
        self.sessions: dict[str, Session] = {}
        self.unattributed_requests: deque[RequestRecord] = deque(maxlen=1000)
        self.injected: deque[InjectedFault] = deque(maxlen=_INJECTED_MAX)
        self.base_url: str | None = None
        self.port: int | None = None
        self.ports: list[int] = []
        self.alias_base_urls: list[str] = []
        self.watchers: list[Callable[[str], None]] = []
        self._by_key: dict[str, Session] = {}
        self._held: dict[str, _Held] = {}
        self._plan = FaultPlan()
        self._outage: Outage | None = None
        self._outage_timer: asyncio.TimerHandle | None = None
        self._availability: dict[str, bool] = {}
        self._listeners: list[_Listener] = []
        self._relisten_task: asyncio.Task[None] | None = None
        self._stopping = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._closed = False
        self._control = ControlApi(self)
        self.app = self._build_app()

    # --------------------------------------------------------------------------------------
    # Application and lifecycle

    def _build_app(self) -> web.Application:
        app = web.Application()
        b = BASE_PATH
        app.router.add_get(b + "System/SessionId", self._handle_session_id)
        app.router.add_delete(b + "System/SessionId/{key}", self._handle_delete)
        app.router.add_get(b + "System/Messages", self._handle_messages)
        app.router.add_get(b + "System/ReconnectSession", self._handle_reconnect)
        app.router.add_post(b + "Chasitor/ChasitorResyncState", self._handle_resync)
        app.router.add_post(b + "Chasitor/{resource}", self._handle_post)
        app.router.add_get(b + "Visitor/Availability", self._handle_availability)
        self._control.add_routes(app.router, CONTROL_PATH)
        app.cleanup_ctx.append(self._lifecycle)
        app.on_shutdown.append(self._on_shutdown)
        return app

    async def _lifecycle(self, app: web.Application) -> AsyncIterator[None]:
        self._loop = asyncio.get_running_loop()
        self._closed = False
        self._stopping = asyncio.Event()
        reaper = asyncio.create_task(self._reap_forever(), name="simulator-reaper")
        yield
        self._closed = True
        self._stopping.set()
        self._cancel_outage_timer()
        self._outage = None
        self._release_all_polls()
        reaper.cancel()
        try:
            await reaper
        except asyncio.CancelledError:
            # Re-raise only if we were cancelled ourselves, not because we cancelled the reaper.
            task = asyncio.current_task()
            if task is not None and task.cancelling():
                raise

    async def _on_shutdown(self, app: web.Application) -> None:
        # Answer every held poll so the runner's graceful shutdown does not wait hold_s, and
        # cut injected delays short.
        self._closed = True
        self._stopping.set()
        self._release_all_polls()

    def _release_all_polls(self) -> None:
        now = self._now()
        for session_id in list(self._held):
            held = self._held.pop(session_id)
            held.timer.cancel()
            session = self.sessions.get(session_id)
            reply = session.expire_poll(now) if session is not None else Reply(status=204)
            if not held.future.done():
                held.future.set_result(reply)

    async def _reap_forever(self) -> None:
        interval = self.options.reap_interval
        while True:
            await asyncio.sleep(interval)
            self.reap()

    def reap(self, now: float | None = None) -> None:
        """End the sessions nobody polls, forget long-ended ones. The reaper task calls this.

        During an outage nobody can poll, so nobody times out (the clock restarts when the
        outage ends).
        """
        now = self._now() if now is None else now
        retention = self.options.ended_retention_s
        in_outage = self._outage is not None
        for session in list(self.sessions.values()):
            if session.is_over:
                if session.ended_at is not None and now - session.ended_at > retention:
                    self._forget(session)
            elif not in_outage and session.is_expired(now):
                logger.info("session %s: not polled within clientPollTimeout, ended", session.id)
                session.end("timeout", now)
                self._after_change(session)

    def _forget(self, session: Session) -> None:
        self.sessions.pop(session.id, None)
        self._by_key.pop(session.key, None)
        self._plan.forget_session(session.id)
        self._tell_watchers(session.id)

    def _tell_watchers(self, session_id: str) -> None:
        for watcher in self.watchers:
            watcher(session_id)

    def _now(self) -> float:
        loop = self._loop
        if loop is None or loop.is_closed():
            loop = asyncio.get_running_loop()
        return loop.time()

    # --------------------------------------------------------------------------------------
    # Listening (used by running_simulator)

    async def _listen(self, factory: Callable[[], asyncio.Protocol], host: str,
                      ports: list[int]) -> None:
        for port in ports:
            listener = _Listener(factory, host, port)
            await listener.start()
            self._listeners.append(listener)
        self.ports = [listener.port for listener in self._listeners]
        self.port = self.ports[0]
        urls = [f"http://{url_host(host)}:{port}{BASE_PATH}" for port in self.ports]
        self.base_url = urls[0]
        self.alias_base_urls = urls[1:]

    async def _stop_listening(self) -> None:
        # Shutting down: no outage may end (and listen again) from here on.
        self._closed = True
        self._cancel_outage_timer()
        task, self._relisten_task = self._relisten_task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        for listener in self._listeners:
            listener.stop()

    async def _relisten(self) -> None:
        """Listen again on every port after a "refuse" outage (retrying a busy port)."""
        try:
            for listener in self._listeners:
                for attempt in range(_RELISTEN_ATTEMPTS):
                    if self._refusing():
                        return
                    try:
                        await listener.start()
                    except OSError as exc:
                        if attempt == _RELISTEN_ATTEMPTS - 1:
                            logger.error(
                                "could not listen on port %d again: %s", listener.port, exc
                            )
                        else:
                            await asyncio.sleep(_RELISTEN_PAUSE_S)
                        continue
                    if self._refusing():  # a new "refuse" outage began meanwhile
                        listener.stop()
                        return
                    break
        finally:
            if asyncio.current_task() is self._relisten_task:
                self._relisten_task = None

    def _refusing(self) -> bool:
        return self._closed or (self._outage is not None and self._outage.mode == "refuse")

    # --------------------------------------------------------------------------------------
    # Common request handling

    def _respond(
        self,
        request: web.Request,
        session: Session | None,
        reply: Reply,
        port: int | None = None,
        label: str | None = None,
    ) -> web.Response:
        """Record the request and answer it, or reset its connection for ``RESET_REPLY``."""
        if session is None or self.options.request_log_max:
            record = RequestRecord(
                method=request.method,
                path=request.path,
                query=request.query_string,
                headers={h: request.headers[h] for h in RECORDED_HEADERS if h in request.headers},
                status=reply.status,
                port=port if port is not None else _local_port(request),
                fault=label,
                received=request.get(_RECEIVED),
                answered=time.time(),
            )
            if session is not None:
                session.log_request(record)
            else:
                self.unattributed_requests.append(record)
        if reply.status == RESET_REPLY.status:
            _abort(request)
            # Never sent: aiohttp finds the transport closing and drops it as a disconnect.
            return web.Response(status=204)
        if reply.status >= 500 and reply.status != 503:
            logger.debug("%s %s -> %d", request.method, request.path, reply.status)
        response = web.Response(status=reply.status, body=reply.body or None)
        if reply.content_type is not None:
            response.content_type = reply.content_type
        return response

    def _authenticate(
        self,
        request: web.Request,
        *,
        null_affinity_ok: bool = False,
        min_version: int = 0,
        key: str | None = None,
    ) -> tuple[Session | None, int, Reply | None]:
        """Check the headers of a session resource (SALESFORCE.md 2.2 table).

        Order: API version (400), affinity present and well formed (400), session key
        present (400) and live (403), affinity matching the session (400, or 503 for a token
        from before a server switch).
        """
        headers = request.headers
        version = parse_api_version(headers.get(API_VERSION))
        if isinstance(version, Reply):
            return None, 0, version
        if version < min_version:
            return None, version, text_reply(
                400, f"Invalid header {API_VERSION}: this resource needs {min_version} or later"
            )
        affinity = headers.get(AFFINITY)
        if affinity is None:
            return None, version, text_reply(400, f"Missing header {AFFINITY}")
        if not (is_affinity_token(affinity) or (null_affinity_ok and affinity == "null")):
            return None, version, text_reply(400, f"Invalid header {AFFINITY}: {affinity!r}")
        header_key = headers.get(SESSION_KEY)
        if key is None:
            if header_key is None:
                return None, version, text_reply(400, f"Missing header {SESSION_KEY}")
            key = header_key
        elif header_key is not None and header_key != key:
            # DELETE carries the key in its path; the Android SDK also sends the header.
            return None, version, text_reply(
                400, f"Invalid header {SESSION_KEY}: it is not the key in the path"
            )
        session = self._by_key.get(key)
        if session is None or session.is_over:
            return session, version, text_reply(
                403, "Session not valid: unknown, ended or expired session key"
            )
        problem = session.check_affinity(affinity, null_ok=null_affinity_ok)
        if problem is not None:
            return session, version, problem
        return session, version, None

    async def _read_json_body(self, request: web.Request) -> bytes | Reply:
        body = await request.read()
        # "POST bodies are JSON (Content-Type: application/json)" (SALESFORCE.md 2.2).
        if body and request.content_type != "application/json":
            return text_reply(
                400,
                f"Invalid header {CONTENT_TYPE}: {request.headers.get(CONTENT_TYPE, '')!r} "
                "(expected application/json)",
            )
        return body

    # --------------------------------------------------------------------------------------
    # Faults in the request path

    def _gate(self, request: web.Request, resource: str) -> web.Response | None:
        """During an outage, fail the request the outage's way (before any check)."""
        outage = self._outage
        if outage is None or self._now() >= outage.until:
            return None
        key = request.headers.get(SESSION_KEY) or request.match_info.get("key")
        session = self._by_key.get(key) if key else None
        port = _local_port(request)
        self._note(session.id if session is not None else None, resource, outage.label, port)
        return self._respond(request, session, outage.reply, port, outage.label)

    def _note(self, session_id: str | None, resource: str, label: str, port: int | None) -> None:
        self.injected.append(
            InjectedFault(
                at=self._now(), session_id=session_id, resource=resource, fault=label, port=port
            )
        )

    def _due(
        self, session_id: str | None, resource: str, port: int | None, served: Fault | None
    ) -> Fault | None:
        """The fault of this request: the delay it already served, or the plan's next one."""
        if served is not None:
            return served
        if not self._plan:
            return None
        fault = self._plan.take(session_id, resource)
        if fault is not None:
            self._note(session_id, resource, fault.label, port)
        return fault

    async def _finish(
        self,
        request: web.Request,
        session: Session | None,
        reply: Reply,
        fault: Fault | None,
        port: int | None,
    ) -> web.StreamResponse:
        """Answer an applied request, after the fault that strikes after it, if any."""
        if fault is not None and fault.after:
            if fault.kind == RESET:
                reply = RESET_REPLY
            elif fault.kind == FAIL:
                reply = fault.reply  # a proxy's answer; the server's own is lost
            else:
                await self._pause(fault.seconds)
        return self._respond(request, session, reply, port, fault.label if fault else None)

    async def _pause(self, seconds: float) -> None:
        """An injected delay; shutdown cuts it short."""
        if seconds <= 0 or self._stopping.is_set():
            return
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                await self._stopping.wait()

    # --------------------------------------------------------------------------------------
    # Live Agent resources

    async def _serve(
        self,
        request: web.Request,
        resource: str,
        check: _Check,
        served: Fault | None = None,
    ) -> web.StreamResponse:
        """Serve a request of any resource but Messages (a delayed poll is held at once).

        In order: the outage gate; ``check``, whose rejection is answered before any fault
        is due; a fault that strikes before the request is applied (``fail`` and ``reset``
        answer instead; ``delay`` waits, then serves the request again from the top,
        carrying it as ``served`` so that it strikes once); applying the request; the fault
        that strikes after, if any; the answer.
        """
        if (gate := self._gate(request, resource)) is not None:
            return gate
        port = _local_port(request)
        session, checked = await check(request)
        if isinstance(checked, Reply):
            return self._respond(request, session, checked, port)
        fault = self._due(session.id if session is not None else None, resource, port, served)
        if fault is not None and fault is not served and not fault.after:
            if fault.kind == DELAY:
                await self._pause(fault.seconds)
                return await self._serve(request, resource, check, fault)
            return self._respond(request, session, fault.reply, port, fault.label)
        session, reply = checked()
        return await self._finish(request, session, reply, fault, port)

    def _session_check(
        self,
        change: _Change,
        *,
        key: str | None = None,
        body: bool = False,
        null_affinity_ok: bool = False,
        min_version: int = 0,
    ) -> _Check:
        """The checks of a session resource whose accepted requests ``change`` applies.

        First the headers (:meth:`_authenticate`, given ``key``, ``null_affinity_ok`` and
        ``min_version``), then the JSON body if the resource takes one (``body``).
        """

        async def check(request: web.Request) -> _Checked:
            session, version, reply = self._authenticate(
                request, key=key, null_affinity_ok=null_affinity_ok, min_version=min_version
            )
            if reply is not None:
                return session, reply
            assert session is not None
            data = b""
            if body:
                read = await self._read_json_body(request)
                if isinstance(read, Reply):
                    return session, read
                data = read

            def apply() -> tuple[Session | None, Reply]:
                return session, change(session, version, data)

            return session, apply

        return check

    async def _handle_session_id(self, request: web.Request) -> web.StreamResponse:
        return await self._serve(request, "SessionId", self._check_session_id)

    async def _check_session_id(self, request: web.Request) -> _Checked:
        # No session yet, so not _authenticate: only the version and the null affinity.
        version = parse_api_version(request.headers.get(API_VERSION))
        if isinstance(version, Reply):
            return None, version
        affinity = request.headers.get(AFFINITY)
        if affinity is None:
            return None, text_reply(400, f"Missing header {AFFINITY}")
        if affinity != "null":
            # "Before any token exists, send the literal string null" (SALESFORCE.md 2.2).
            return None, text_reply(
                400, f"Invalid header {AFFINITY}: {affinity!r} (expected null)"
            )
        return None, self._create_session

    def _create_session(self) -> tuple[Session | None, Reply]:
        if len(self.sessions) >= self.options.max_sessions:
            logger.warning("session limit (%d) reached: SessionId refused", len(self.sessions))
            return None, text_reply(500, "Simulator session limit reached (max_sessions)")
        session = Session(self.options, now=self._now(), wall_ms=int(time.time() * 1000))
        self.sessions[session.id] = session
        self._by_key[session.key] = session
        timeout = self.options.client_poll_timeout
        reply = json_reply(
            {
                "clientPollTimeout": int(timeout) if float(timeout).is_integer() else timeout,
                "key": session.key,
                "affinityToken": session.affinity_token,
                "id": session.id,
            }
        )
        return session, reply

    async def _handle_delete(self, request: web.Request) -> web.StreamResponse:
        def delete(session: Session, version: int, body: bytes) -> Reply:
            reply = session.receive_delete(self._now())
            self._after_change(session)
            return reply

        # DELETE names its session in the path, not (only) in a header.
        check = self._session_check(delete, key=request.match_info["key"])
        return await self._serve(request, "DeleteSession", check)

    async def _handle_post(self, request: web.Request) -> web.StreamResponse:
        resource = request.match_info["resource"]
        if resource not in SEQUENCED_RESOURCES:
            raise web.HTTPNotFound(text=f"Unknown resource Chasitor/{resource}")

        def post(session: Session, version: int, body: bytes) -> Reply:
            reply, fact = session.receive_post(
                resource,
                sequence=request.headers.get(SEQUENCE),
                body=body,
                now=self._now(),
                api_version=version,
            )
            if fact is not None:
                self._react(session, fact)
            self._after_change(session)
            return reply

        return await self._serve(request, resource, self._session_check(post, body=True))

    async def _handle_resync(self, request: web.Request) -> web.StreamResponse:
        def resync(session: Session, version: int, body: bytes) -> Reply:
            # A resync changes nothing a held poll waits for: no _after_change.
            return session.receive_resync(body, sequenced=SEQUENCE in request.headers)

        check = self._session_check(resync, body=True)
        return await self._serve(request, "ChasitorResyncState", check)

    async def _handle_reconnect(self, request: web.Request) -> web.StreamResponse:
        def reconnect(session: Session, version: int, body: bytes) -> Reply:
            reply = session.receive_reconnect(
                request.query.get("ReconnectSession.offset"), self._now()
            )
            self._after_change(session)
            return reply

        # Besides the current token, an old one (from before a server switch) or the docs'
        # "null" may call it: that is how a visitor finds its session again.
        check = self._session_check(
            reconnect, null_affinity_ok=True, min_version=_RECONNECT_MIN_VERSION
        )
        return await self._serve(request, "ReconnectSession", check)

    async def _handle_messages(self, request: web.Request) -> web.StreamResponse:
        request[_RECEIVED] = time.time()  # for the record: polls in time order
        if (gate := self._gate(request, "Messages")) is not None:
            return gate
        port = _local_port(request)
        session, _, reply = self._authenticate(request)
        if reply is not None:
            return self._respond(request, session, reply, port)
        assert session is not None
        fault = self._due(session.id, "Messages", port, None)
        if fault is not None and fault.kind != DELAY and not fault.after:
            # fail, or reset before: the poll is not opened at all.
            return self._respond(request, session, fault.reply, port, fault.label)
        # A delayed poll is held at once, so it is outstanding (a second one is the 409
        # duplicate, SALESFORCE.md 11.8), but gets no batch before the delay is over.
        delay = fault.seconds if fault is not None and fault.kind == DELAY else None
        now = self._now()
        self._release_if_abandoned(session, now)
        reply = session.open_poll(request.query.get("ack"), now, hold=delay is not None)
        if reply is not None:
            # Answered at once: a batch, an ack error, or the 409 of a duplicate poll, which
            # ended the session (its held twin is answered by _after_change).
            self._after_change(session)
            if delay is not None:
                await self._pause(delay)
            return await self._finish(request, session, reply, fault, port)

        loop = asyncio.get_running_loop()
        future: asyncio.Future[Reply] = loop.create_future()
        if delay is not None:
            timer = loop.call_later(delay, self._delay_over, session, future)
            held = _Held(future, timer, request, arrived=now, not_before=now + delay)
        else:
            timer = loop.call_later(self.options.hold_s, self._expire_poll, session, future)
            held = _Held(future, timer, request, arrived=now)
        self._held[session.id] = held
        if fault is not None and fault.kind == FAIL:
            # A proxy answered: the poll stays held here, outstanding (a second poll is the
            # 409 duplicate), and its answer, when the server gives it, reaches nobody.
            return self._respond(request, session, fault.reply, port, fault.label)
        try:
            reply = await future
        except asyncio.CancelledError:
            # The client hung up (only with handler cancellation on). Strict: the poll stays
            # outstanding until the server answers it, so a quick re-poll is a duplicate.
            if self.options.release_abandoned_polls:
                self._drop_held(session, future)
                session.abandon_poll(self._now())
            raise
        if held.label is not None:  # an outage answered it, not the model
            return self._respond(request, session, reply, port, held.label)
        if fault is not None and fault.kind == RESET:  # reset after: handed out, then dropped
            reply = RESET_REPLY
        return self._respond(request, session, reply, port, fault.label if fault else None)

    def _release_if_abandoned(self, session: Session, now: float) -> None:
        if not self.options.release_abandoned_polls:
            return
        held = self._held.get(session.id)
        if held is None:
            return
        transport = held.request.transport
        if transport is None or transport.is_closing():
            self._drop_held(session, held.future)
            session.abandon_poll(now)
            if not held.future.done():
                held.future.set_result(Reply(status=204))

    def _drop_held(self, session: Session, future: asyncio.Future[Reply]) -> None:
        held = self._held.get(session.id)
        if held is not None and held.future is future:
            del self._held[session.id]
            held.timer.cancel()

    def _expire_poll(self, session: Session, future: asyncio.Future[Reply]) -> None:
        held = self._held.get(session.id)
        if held is None or held.future is not future:
            return
        del self._held[session.id]
        reply = session.expire_poll(self._now())
        if not future.done():
            future.set_result(reply)
        self._after_change(session)

    def _delay_over(self, session: Session, future: asyncio.Future[Reply]) -> None:
        """The injected delay of a held poll is over: deliver, or hold on until hold_s."""
        held = self._held.get(session.id)
        if held is None or held.future is not future:
            return
        # Set explicitly: the loop may run a timer a clock tick early.
        held.not_before = 0.0
        remaining = held.arrived + self.options.hold_s - self._now()
        if remaining <= 0:
            self._expire_poll(session, future)
            return
        loop = self._loop or asyncio.get_running_loop()
        held.timer = loop.call_later(remaining, self._expire_poll, session, future)
        self._after_change(session)

    def _after_change(self, session: Session) -> None:
        """Answer the held poll if the change calls for it; the one place that does."""
        self._tell_watchers(session.id)
        held = self._held.get(session.id)
        if held is None:
            return
        now = self._now()
        reply = session.settle_poll(now, deliver=now >= held.not_before)
        if reply is None:
            return
        del self._held[session.id]
        held.timer.cancel()
        if not held.future.done():
            held.future.set_result(reply)

    async def _handle_availability(self, request: web.Request) -> web.StreamResponse:
        return await self._serve(request, "Availability", self._check_availability)

    async def _check_availability(self, request: web.Request) -> _Checked:
        # A visitor resource: it belongs to no session.
        checked = self._check_availability_request(request)
        if isinstance(checked, Reply):
            return None, checked
        version, ids, need_wait = checked

        def answer() -> tuple[Session | None, Reply]:
            payload = behaviours.availability(
                ids, api_version=version, need_wait=need_wait, overrides=self._availability
            )
            return None, json_reply(payload)

        return None, answer

    def _check_availability_request(
        self, request: web.Request
    ) -> Reply | tuple[int, list[str], bool]:
        # "Visitor resources (only X-LIVEAGENT-API-VERSION needed)" (SALESFORCE.md 4.12).
        version = parse_api_version(request.headers.get(API_VERSION))
        if isinstance(version, Reply):
            return version
        query = request.query
        for name in ("org_id", "deployment_id", "Availability.ids"):
            if name not in query:
                return text_reply(400, f"Missing query parameter {name}")
        org_id, deployment_id = query["org_id"], query["deployment_id"]
        opts = self.options
        if not (org_id == opts.org_id if opts.org_id is not None else is_sf_id(org_id, "00D")):
            return text_reply(400, f"Invalid query parameter org_id: {org_id!r}")
        if not (
            deployment_id == opts.deployment_id
            if opts.deployment_id is not None
            else is_sf_id(deployment_id, "572")
        ):
            return text_reply(400, f"Invalid query parameter deployment_id: {deployment_id!r}")
        ids = _parse_ids(query["Availability.ids"])
        if ids is None:
            return text_reply(
                400,
                "Invalid query parameter Availability.ids: "
                f"{query['Availability.ids']!r} (expected [id1,id2] or id1,id2)",
            )
        need_wait = query.get("Availability.needEstimatedWaitTime") in ("1", "true")
        return version, ids, need_wait

    # --------------------------------------------------------------------------------------
    # Scripted agents

    def _view(self, session: Session) -> AgentView:
        init = session.init_body
        return AgentView(
            session_id=session.id,
            api_version=session.api_version or 0,
            receive_queue_updates=bool(init and init.receive_queue_updates),
            agent_name=session.agent_name or self.options.agent_name,
            agent_user_id=session.agent_user_id or self.options.agent_user_id,
        )

    def _react(self, session: Session, fact: InitAccepted | VisitorSaid) -> None:
        view = self._view(session)
        if isinstance(fact, InitAccepted):
            steps = behaviours.script_for_init(
                view, self.options, fact.init.button_id, fact.init.is_post
            )
        else:
            steps = behaviours.behaviour_for(session.button_id).on_visitor_message(
                view, self.options, fact.text, fact.count
            )
        self._run_script(session, steps, 0)

    def _run_script(self, session: Session, steps: list[Step], index: int) -> None:
        if index >= len(steps) or self._closed:
            return
        loop = self._loop or asyncio.get_running_loop()
        # One timer per running script, chained, so the steps keep their order.
        loop.call_later(steps[index].delay_s, self._run_step, session, steps, index)

    def _run_step(self, session: Session, steps: list[Step], index: int) -> None:
        if self._closed or session.is_over or session.closing:
            return
        now = self._now()
        for type_, message in steps[index].messages:
            try:
                session.queue(type_, message, now)
            except SessionOver:
                return
            except OutboxFull as exc:
                logger.warning("%s", exc)
        self._after_change(session)
        self._run_script(session, steps, index + 1)

    # --------------------------------------------------------------------------------------
    # Control API: agents

    def _get(self, session_id: str) -> Session:
        try:
            return self.sessions[session_id]
        except KeyError:
            raise UnknownSession(session_id) from None

    def push(self, session_id: str, type: str, message: Any = None) -> int:
        """Queue any raw message ``{"type": type, "message": message}`` for the visitor.

        Any type goes, documented or not (SALESFORCE.md 5: "Clients must ignore types they
        don't know"). ``ChatEstablished`` lets the chat start; ``ChatEnded`` and
        ``ChatRequestFail`` end it once delivered.

        Returns:
            The message's number.

        Raises:
            UnknownSession: No such session.
            SessionOver: The session ended or its final message is queued.
            OutboxFull: ``max_queued`` messages already wait.
        """
        session = self._get(session_id)
        number = session.queue(type, {} if message is None else message, self._now())
        self._after_change(session)
        return number

    def _agent(self, session_id: str) -> tuple[str, str]:
        session = self._get(session_id)
        return (
            session.agent_name or self.options.agent_name,
            session.agent_user_id or self.options.agent_user_id,
        )

    def agent_joins(
        self,
        session_id: str,
        name: str | None = None,
        user_id: str | None = None,
        *,
        sneak_peek: bool = False,
    ) -> int:
        """ChatEstablished from agent ``name`` (default: the current or scripted agent).

        ``sneak_peek`` sets ``sneakPeekEnabled``: the visitor may then send
        ChasitorSneakPeek. The ``573PEEK00000000`` button's scripted agent joins that way.
        """
        current_name, current_id = self._agent(session_id)
        return self.push(
            session_id,
            *behaviours.chat_established(
                name or current_name, user_id or current_id, sneak_peek=sneak_peek
            ),
        )

    def agent_says(self, session_id: str, text: str) -> int:
        """The current agent sends a ChatMessage."""
        name, user_id = self._agent(session_id)
        return self.push(session_id, *behaviours.agent_message(name, user_id, text))

    def agent_typing(self, session_id: str, active: bool = True) -> int:
        """The current agent starts (AgentTyping) or stops (AgentNotTyping) typing."""
        name, user_id = self._agent(session_id)
        return self.push(session_id, *behaviours.agent_typing(name, user_id, active))

    def agent_transfers(
        self, session_id: str, name: str, user_id: str | None = None, *, sneak_peek: bool = False
    ) -> int:
        """ChatTransferred to agent ``name``; later scripted replies come from them."""
        # A stable made-up user id per name (prefix 005, 15 characters).
        user_id = user_id or f"005{zlib.crc32(name.encode()):012d}"
        return self.push(
            session_id, *behaviours.chat_transferred(name, user_id, sneak_peek=sneak_peek)
        )

    def agent_ends(self, session_id: str, reason: str = "agent") -> int:
        """ChatEnded; the session is over once a poll delivered it."""
        return self.push(session_id, *behaviours.chat_ended(reason))

    def agent_disconnects(self, session_id: str) -> int:
        """AgentDisconnect: the agent dropped, the session stays alive (D-PDF p.20)."""
        return self.push(session_id, "AgentDisconnect", {})

    def queue_update(
        self, session_id: str, position: int, estimated_wait_time: int | None = None
    ) -> int | None:
        """QueueUpdate, only if the visitor asked for them (``receiveQueueUpdates``).

        Returns:
            The message's number, or None when the visitor did not ask for queue updates
            (use :meth:`push` to send one anyway).
        """
        session = self._get(session_id)
        view = self._view(session)
        if not view.receive_queue_updates:
            return None
        message: dict[str, Any] = {"position": position}
        if estimated_wait_time is not None and view.api_version >= 47:
            message["estimatedWaitTime"] = estimated_wait_time
        return self.push(session_id, "QueueUpdate", message)

    def set_available(self, button_id: str, available: bool | None) -> None:
        """What ``Visitor/Availability`` reports for ``button_id`` from now on.

        Only the report changes, not the scripted agent behind the button, so a test can
        make the two disagree (as a race with a real org does). None restores the default
        (every scripted button available but ``573NOAGENT00000``; unknown ids unavailable).
        """
        if available is None:
            self._availability.pop(button_id, None)
        else:
            self._availability[button_id] = bool(available)

    # --------------------------------------------------------------------------------------
    # Control API: server-side events and faults

    def switch_server(self, session_id: str) -> str:
        """Move the session to another server (SALESFORCE.md 6, 11.5-11.7).

        The affinity token changes; the held poll and every later request with the old
        token get 503 until the visitor calls ReconnectSession. Then ChasitorSessionData
        comes first, ChasitorResyncState is required before visitor activity, and the next
        sequenced POST carries 1.

        Returns:
            The new affinity token.
        """
        session = self._get(session_id)
        token = session.switch_server(self._now())
        self._after_change(session)
        return token

    def switch_server_all(self) -> dict[str, str]:
        """:meth:`switch_server` for every live session.

        Returns:
            The new affinity token of each session switched, by session id.
        """
        return {
            session.id: self.switch_server(session.id)
            for session in list(self.sessions.values())
            if not session.is_over
        }

    def switch_server_url(self, session_id: str, new_url: str | None = None) -> int:
        """Queue a ``SwitchServer`` message ``{"newUrl": new_url}`` (SALESFORCE.md 4.12).

        The documented shape is ``https://<pod>/chat``. Without ``new_url`` it names the
        first alias port (``http://HOST:ALIAS_PORT/chat``), which serves the same sessions.

        Raises:
            SimulatorError: No ``new_url`` and no alias port.
        """
        if new_url is None:
            if not self.alias_base_urls:
                raise SimulatorError(
                    "no alias port to switch to: serve with running_simulator(extra_ports=1)"
                )
            new_url = self.alias_base_urls[0].removesuffix(BASE_PATH) + "/chat"
        return self.push(session_id, "SwitchServer", {"newUrl": new_url})

    def expire(self, session_id: str) -> None:
        """End the session now as if it had not been polled in time (later requests: 403)."""
        session = self._get(session_id)
        if session.is_over:
            raise SessionOver(f"session {session_id} is already over")
        logger.info("session %s: expired by the control API", session.id)
        session.end("timeout", self._now())
        self._after_change(session)

    def _check_session(self, session_id: str | None) -> str | None:
        if session_id is not None:
            self._get(session_id)
        return session_id

    def fail_next(
        self,
        session_id: str | None,
        resource: str,
        status: int,
        body: str = "",
        *,
        count: int = 1,
        when: str = BEFORE,
    ) -> None:
        """Answer the next ``count`` requests for ``resource`` with ``status``.

        ``session_id`` None means the requests of any session (and is the only choice for
        ``SessionId`` and ``Availability``). ``resource`` is a Chasitor resource name,
        ``SessionId``, ``Messages``, ``ReconnectSession``, ``ChasitorResyncState``,
        ``DeleteSession`` or ``Availability``. Requests are checked for their headers first,
        so a fault never hides a header error. Faults for the same target queue up in order.

        ``when="before"`` (default): the request is not applied; a sequenced POST answered
        this way does not use its sequence number up. ``when="after"``: the answer of a
        proxy whose request went on to Salesforce (a 502 or 504 from a gateway that gave
        up): the request is applied (a ChatMessage is received; a poll is opened and stays
        held, so a second poll meanwhile is the 409 duplicate, and whatever the server
        answers it later reaches nobody), and the client gets ``status`` at once.
        """
        fault = Fault(kind=FAIL, status=status, body=body, when=when)
        self._plan.add(self._check_session(session_id), resource, fault, count)

    def reset_next(
        self, session_id: str | None, resource: str, count: int = 1, when: str = BEFORE
    ) -> None:
        """Drop the connection of the next ``count`` requests for ``resource``, unanswered.

        ``when="before"``: the request is not applied. ``when="after"``: it is applied (a
        ChatMessage is received and its sequence number used up; a poll hands out its batch,
        waiting for one like any poll), and only then is the connection dropped, so the
        client cannot know. The connection gets a TCP RST: an aiohttp client sees
        ``ClientOSError`` (ECONNRESET), a ``ClientConnectionError``. Each request counts,
        and aiohttp resends a GET or DELETE once by itself after a reset, so ``count=2``
        is what makes a reset of Messages, SessionId, ReconnectSession or DELETE visible.
        """
        fault = Fault(kind=RESET, when=when)
        self._plan.add(self._check_session(session_id), resource, fault, count)

    def delay_next(
        self,
        session_id: str | None,
        resource: str,
        seconds: float,
        count: int = 1,
        when: str = AFTER,
    ) -> None:
        """Answer the next ``count`` requests for ``resource`` ``seconds`` late.

        ``when="after"`` (default): the request is applied at once and answered late.
        ``when="before"``: it waits, then is handled as if it had just arrived. A Messages
        poll (either way) is outstanding from its arrival, so a second poll meanwhile is the
        409 duplicate; it gets no batch before ``seconds``, but a server switch (503) or the
        end of the session (403/409) still answers it at once.
        """
        fault = Fault(kind=DELAY, when=when, seconds=seconds)
        self._plan.add(self._check_session(session_id), resource, fault, count)

    def clear_faults(self) -> None:
        """Drop every fault still waiting (an outage in progress goes on)."""
        self._plan.clear()

    def outage(self, seconds: float, mode: str = "reset") -> None:
        """For ``seconds``, every Live Agent request of every session fails ``mode``'s way.

        Modes: ``reset`` (connection dropped, no answer), ``503``, ``500`` (that status,
        unapplied), ``refuse`` (the listening sockets close, so new connections are refused,
        and requests on connections already open are reset; the same ports listen again
        afterwards). Held polls are answered (or reset) at once and stop being outstanding.
        The control API keeps working (except over new connections while refusing). The
        outage ends by itself; sessions cannot time out during it, and their
        clientPollTimeout restarts when it ends. A new call replaces a running outage.

        Raises:
            ValueError: Unknown mode, or ``seconds`` not a positive finite number.
            SimulatorError: ``refuse`` on a simulator not served by :func:`running_simulator`
                (it does not own the listening socket then).
        """
        if mode not in OUTAGE_MODES:
            raise ValueError(f"unknown outage mode {mode!r} (one of {', '.join(OUTAGE_MODES)})")
        if not (isinstance(seconds, (int, float)) and math.isfinite(seconds) and seconds > 0):
            raise ValueError(f"seconds must be a positive number, got {seconds!r}")
        if mode == "refuse" and not self._listeners:
            raise SimulatorError(
                'outage mode "refuse" needs running_simulator: the simulator does not own '
                "the listening socket of another runner"
            )
        loop = self._loop or asyncio.get_running_loop()
        now = self._now()
        self._cancel_outage_timer()
        outage = Outage(mode=mode, started_at=now, until=now + seconds)
        self._outage = outage
        self._outage_timer = loop.call_later(seconds, self._end_outage, outage)
        if mode == "refuse":
            for listener in self._listeners:
                listener.stop()
        else:
            self._resume_listening()
        logger.info("outage (%s) for %.3f s", mode, seconds)
        for session_id in list(self._held):
            held = self._held.pop(session_id)
            held.timer.cancel()
            held.label = outage.label
            session = self.sessions.get(session_id)
            if session is not None:
                session.abandon_poll(now)
            self._note(session_id, "Messages", outage.label, _local_port(held.request))
            if not held.future.done():
                held.future.set_result(outage.reply)

    def end_outage(self) -> None:
        """End the running outage now (it also ends by itself)."""
        if self._outage is not None:
            self._end_outage(self._outage)

    @property
    def in_outage(self) -> bool:
        """True from :meth:`outage` until requests are served again (after a ``refuse``,
        until every port listens again)."""
        return self._outage is not None or self._relisten_task is not None

    def _end_outage(self, outage: Outage) -> None:
        if self._outage is not outage:
            return
        self._cancel_outage_timer()
        self._outage = None
        now = self._now()
        for session in self.sessions.values():
            session.restart_poll_clock(now)
        self._resume_listening()
        logger.info("outage (%s) over", outage.mode)

    def _resume_listening(self) -> None:
        if self._closed or self._relisten_task is not None:
            return
        if all(listener.listening for listener in self._listeners):
            return
        loop = self._loop or asyncio.get_running_loop()
        self._relisten_task = loop.create_task(self._relisten(), name="simulator-relisten")

    def _cancel_outage_timer(self) -> None:
        if self._outage_timer is not None:
            self._outage_timer.cancel()
            self._outage_timer = None

    # --------------------------------------------------------------------------------------
    # Records

    def faults(self) -> dict[str, Any]:
        """The fault state, as JSON-able builtins: ``{"pending", "injected", "outage"}``."""
        outage = self._outage
        return {
            "pending": self._plan.pending(),
            "injected": msgspec.to_builtins(list(self.injected)),
            "outage": (
                None
                if outage is None
                else {
                    "mode": outage.mode,
                    "remaining_s": max(0.0, outage.until - self._now()),
                }
            ),
            "availability": dict(self._availability),
        }

    def record(self) -> dict[str, Any]:
        """Everything recorded, as JSON-able builtins.

        Shape: ``{"options": {...}, "sessions": {id: Session.record()}, "requests": [...],
        "faults": faults()}``, where ``requests`` holds the requests of no session (see
        :attr:`unattributed_requests`) as ``{method, path, query, headers, status, port,
        fault}``.
        """
        return {
            "options": msgspec.to_builtins(self.options),
            "sessions": {sid: session.record() for sid, session in self.sessions.items()},
            "requests": msgspec.to_builtins(list(self.unattributed_requests)),
            "faults": self.faults(),
        }

    def summaries(self) -> list[dict[str, Any]]:
        """One short line per session, for ``GET /_sim/sessions``."""
        return [
            {
                "id": s.id,
                "phase": s.phase.value,
                "button_id": s.button_id,
                "ended": s.is_over,
                "end_reason": s.end_reason,
                "visitor_messages": len(s.visitor_messages),
                "queued": s.queued,
                "poll_held": s.poll_held,
            }
            for s in self.sessions.values()
        ]


def _parse_ids(raw: str) -> list[str] | None:
    # "IBM sends [id1,id2] (brackets, comma-separated); PYLA uses a plain comma-separated
    # list ... accept both" (SALESFORCE.md 4.12).
    text = raw.strip()
    if text.startswith("[") and text.endswith("]"):
        text = text[1:-1]
    ids = [part.strip() for part in text.split(",")]
    if not ids or any(not part for part in ids):
        return None
    return ids



@contextlib.asynccontextmanager
async def running_simulator(
    options: SimulatorOptions | None = None,
    host: str = "127.0.0.1",
    port: int = 0,
    *,
    extra_ports: int = 0,
    setup: Callable[[Simulator], None] | None = None,
) -> AsyncIterator[Simulator]:
    """Serve a simulator on ``host:port`` (port 0 picks a free one) for the block's duration.

    Args:
        options: The configuration (defaults if None).
        host: Address to listen on.
        port: Port to listen on; 0 picks a free one.
        extra_ports: How many more free ports serve the same sessions (``alias_base_urls``),
            e.g. as the target of a ``SwitchServer`` message.
        setup: Called with the simulator before it serves, while routes can still be added
            to its ``app`` (the agent console mounts itself this way).

    Yields:
        The :class:`Simulator`, with ``base_url``, ``port``, ``ports`` and
        ``alias_base_urls`` set.
    """
    if extra_ports < 0:
        raise ValueError(f"extra_ports must be >= 0, got {extra_ports!r}")
    simulator = Simulator(options)
    if setup is not None:
        setup(simulator)
    # No access log: 10,000 sessions polling would drown everything else. The shutdown
    # budget is short because held polls are answered on shutdown.
    runner = web.AppRunner(simulator.app, access_log=None, shutdown_timeout=5.0)
    await runner.setup()
    try:
        # The simulator owns its listening sockets (not a TCPSite) so that an outage can
        # close and reopen them; runner.server is the aiohttp protocol factory.
        factory = runner.server
        assert factory is not None
        await simulator._listen(factory, host, [port] + [0] * extra_ports)
        yield simulator
    finally:
        await simulator._stop_listening()
        await runner.cleanup()


async def serve_forever(
    options: SimulatorOptions | None = None,
    host: str = "127.0.0.1",
    port: int = 8080,
    *,
    extra_ports: int = 0,
) -> None:
    """Serve the simulator alone until cancelled (``bridged simulator`` adds the console).

    Cancellation is the way to stop it; the server is cleaned up and the
    ``CancelledError`` propagates.
    """
    async with running_simulator(options, host, port, extra_ports=extra_ports) as simulator:
        logger.info("Live Agent simulator listening on %s", simulator.base_url)
        for url in simulator.alias_base_urls:
            logger.info("Live Agent simulator also listening on %s (same sessions)", url)
        if host not in ("127.0.0.1", "::1", "localhost"):
            logger.warning("the simulator's control API (/_sim/) has no authentication")
        await asyncio.Event().wait()
