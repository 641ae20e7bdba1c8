"""The simulator's I/O shell: an aiohttp app around the pure :mod:`.model`.

Routes (a client's base URL is ``http://HOST:PORT/chat/rest/``)::

    GET    /chat/rest/System/SessionId
    DELETE /chat/rest/System/SessionId/{key}
    GET    /chat/rest/System/Messages?ack=N
    GET    /chat/rest/System/ReconnectSession?ReconnectSession.offset=N
    POST   /chat/rest/Chasitor/{ChasitorInit,ChatMessage,ChasitorTyping,ChasitorNotTyping,
                                ChasitorSneakPeek,ChatEnd,CustomEvent,ChasitorResyncState}
    GET    /chat/rest/Visitor/Availability?org_id=&deployment_id=&Availability.ids=

    GET    /_sim/record                      everything recorded (Simulator.record())
    GET    /_sim/sessions                    one summary per session
    GET    /_sim/sessions/{id}               one session's record
    POST   /_sim/sessions/{id}/push          {"type", "message"}: any raw message
    POST   /_sim/sessions/{id}/say           {"text"}
    POST   /_sim/sessions/{id}/typing        {"active": true|false}
    POST   /_sim/sessions/{id}/transfer      {"name", "userId"?}
    POST   /_sim/sessions/{id}/end           {"reason"?}            ChatEnded
    POST   /_sim/sessions/{id}/disconnect                            AgentDisconnect
    POST   /_sim/sessions/{id}/queue         {"position", "estimatedWaitTime"?}
    POST   /_sim/sessions/{id}/switch-server                         503 server switch
    POST   /_sim/sessions/{id}/switch-url    {"newUrl"}              SwitchServer message
    POST   /_sim/sessions/{id}/fail-next     {"resource", "status", "body"?}

Cost per session: the model object, and while a poll is held one future and one timer
handle. Scripted delays are ``loop.call_later`` chains; one reaper task ends the sessions
nobody polls and forgets ended ones after ``ended_retention_s``.

Fault injection: :meth:`Simulator.switch_server` (the 503 hand-over of SALESFORCE.md 6) and
:meth:`Simulator.fail_next` (a canned answer to the next request for a resource, not
applied) are the seams; connection resets and delays are meant to be added next to
``fail_next`` in :meth:`Simulator._take_fault`.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import time
import zlib
from collections import deque
from collections.abc import AsyncIterator
from typing import Any

import msgspec
from aiohttp import web

from . import behaviours
from .behaviours import AgentView, Step
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

logger = logging.getLogger("bridged.simulator")

BASE_PATH = "/chat/rest/"
CONTROL_PATH = "/_sim/"

_RECONNECT_MIN_VERSION = 37  # "ReconnectSession needs >= 37" (SALESFORCE.md 2.2)

# Resources fail_next() may target.
FAULT_RESOURCES = frozenset(
    {
        "SessionId",
        "Messages",
        "ReconnectSession",
        "ChasitorResyncState",
        "DeleteSession",
        "ChasitorInit",
        "ChatMessage",
        "ChasitorTyping",
        "ChasitorNotTyping",
        "ChasitorSneakPeek",
        "ChatEnd",
        "CustomEvent",
    }
)


class _Held:
    """The one held Messages poll of a session."""

    __slots__ = ("future", "request", "timer")

    def __init__(
        self, future: asyncio.Future[Reply], timer: asyncio.TimerHandle, request: web.Request
    ) -> None:
        self.future = future
        self.timer = timer
        self.request = request


# Bodies of the control API.
class _Push(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    type: str
    message: dict[str, Any] = {}


class _Say(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    text: str


class _Typing(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    active: bool = True


class _Transfer(
    msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True, rename="camel"
):
    name: str
    user_id: str | None = None


class _End(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    reason: str = "agent"


class _Nothing(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    pass


class _Queue(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True,
             rename="camel"):
    position: int
    estimated_wait_time: int | None = None


class _SwitchUrl(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True,
                 rename="camel"):
    new_url: str


class _FailNext(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    resource: str
    status: int
    body: str = ""


class Simulator:
    """A strict simulator of Salesforce's legacy Live Agent Chat REST API (visitor side).

    Serve :attr:`app` with any aiohttp runner, or use :func:`running_simulator`.

    Attributes:
        options: The configuration.
        app: The ``aiohttp.web.Application``.
        sessions: Live and ended (not yet reaped) sessions by session id.
        unattributed_requests: Requests that belong to no session (unknown key, SessionId
            refused, Availability), most recent last, bounded.
        base_url: ``http://HOST:PORT/chat/rest/`` once served by :func:`running_simulator`.
        port: The bound port once served by :func:`running_simulator`.
    """

    def __init__(self, options: SimulatorOptions | None = None) -> None:
        self.options = options if options is not None else SimulatorOptions()
        self.sessions: dict[str, Session] = {}
        self.unattributed_requests: deque[RequestRecord] = deque(maxlen=1000)
        self.base_url: str | None = None
        self.port: int | None = None
        self._by_key: dict[str, Session] = {}
        self._held: dict[str, _Held] = {}
        self._faults: dict[str, dict[str, deque[Reply]]] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._closed = False
        self.app = self._build_app()

    # --------------------------------------------------------------------------------------
    # Application and lifecycle

    def _build_app(self) -> web.Application:
        app = web.Application()
        b, c = BASE_PATH, CONTROL_PATH
        app.router.add_get(b + "System/SessionId", self._handle_session_id)
        app.router.add_delete(b + "System/SessionId/{key}", self._handle_delete)
        app.router.add_get(b + "System/Messages", self._handle_messages)
        app.router.add_get(b + "System/ReconnectSession", self._handle_reconnect)
        app.router.add_post(b + "Chasitor/ChasitorResyncState", self._handle_resync)
        app.router.add_post(b + "Chasitor/{resource}", self._handle_post)
        app.router.add_get(b + "Visitor/Availability", self._handle_availability)
        app.router.add_get(c + "record", self._control_record)
        app.router.add_get(c + "sessions", self._control_sessions)
        app.router.add_get(c + "sessions/{id}", self._control_session)
        app.router.add_post(c + "sessions/{id}/{action}", self._control_action)
        app.cleanup_ctx.append(self._lifecycle)
        app.on_shutdown.append(self._on_shutdown)
        return app

    async def _lifecycle(self, app: web.Application) -> AsyncIterator[None]:
        self._loop = asyncio.get_running_loop()
        self._closed = False
        reaper = asyncio.create_task(self._reap_forever(), name="simulator-reaper")
        yield
        self._closed = True
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
        # Answer every held poll so the runner's graceful shutdown does not wait hold_s.
        self._closed = True
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
        """End the sessions nobody polls, forget long-ended ones. The reaper task calls this."""
        now = self._now() if now is None else now
        retention = self.options.ended_retention_s
        for session in list(self.sessions.values()):
            if session.is_over:
                if session.ended_at is not None and now - session.ended_at > retention:
                    self._forget(session)
            elif session.is_expired(now):
                logger.info("session %s: not polled within clientPollTimeout, ended", session.id)
                session.end("timeout", now)
                self._after_change(session)

    def _forget(self, session: Session) -> None:
        self.sessions.pop(session.id, None)
        self._by_key.pop(session.key, None)
        self._faults.pop(session.id, None)

    def _now(self) -> float:
        loop = self._loop
        if loop is None or loop.is_closed():
            loop = asyncio.get_running_loop()
        return loop.time()

    # --------------------------------------------------------------------------------------
    # Common request handling

    def _respond(self, request: web.Request, session: Session | None, reply: Reply) -> web.Response:
        if session is None or self.options.request_log_max:
            record = RequestRecord(
                method=request.method,
                path=request.path,
                query=request.query_string,
                headers={h: request.headers[h] for h in RECORDED_HEADERS if h in request.headers},
                status=reply.status,
            )
            if session is not None:
                session.log_request(record)
            else:
                self.unattributed_requests.append(record)
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

    def _take_fault(self, session: Session, resource: str) -> Reply | None:
        faults = self._faults.get(session.id)
        if not faults:
            return None
        pending = faults.get(resource)
        if not pending:
            return None
        reply = pending.popleft()
        if not pending:
            del faults[resource]
        return reply

    # --------------------------------------------------------------------------------------
    # Live Agent resources

    async def _handle_session_id(self, request: web.Request) -> web.Response:
        version = parse_api_version(request.headers.get(API_VERSION))
        if isinstance(version, Reply):
            return self._respond(request, None, version)
        affinity = request.headers.get(AFFINITY)
        if affinity is None:
            return self._respond(request, None, text_reply(400, f"Missing header {AFFINITY}"))
        if affinity != "null":
            # "Before any token exists, send the literal string null" (SALESFORCE.md 2.2).
            return self._respond(
                request,
                None,
                text_reply(400, f"Invalid header {AFFINITY}: {affinity!r} (expected null)"),
            )
        if len(self.sessions) >= self.options.max_sessions:
            logger.warning("session limit (%d) reached: SessionId refused", len(self.sessions))
            return self._respond(
                request, None, text_reply(500, "Simulator session limit reached (max_sessions)")
            )
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
        return self._respond(request, session, reply)

    async def _handle_delete(self, request: web.Request) -> web.Response:
        session, _, reply = self._authenticate(request, key=request.match_info["key"])
        if reply is None:
            assert session is not None
            reply = self._take_fault(session, "DeleteSession") or session.receive_delete(
                self._now()
            )
            self._after_change(session)
        return self._respond(request, session, reply)

    async def _handle_post(self, request: web.Request) -> web.Response:
        resource = request.match_info["resource"]
        if resource not in SEQUENCED_RESOURCES:
            raise web.HTTPNotFound(text=f"Unknown resource Chasitor/{resource}")
        session, version, reply = self._authenticate(request)
        if reply is None:
            assert session is not None
            body = await self._read_json_body(request)
            if isinstance(body, Reply):
                reply = body
            else:
                reply = self._take_fault(session, resource)
                if reply is None:
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
        return self._respond(request, session, reply)

    async def _handle_resync(self, request: web.Request) -> web.Response:
        session, _, reply = self._authenticate(request)
        if reply is None:
            assert session is not None
            body = await self._read_json_body(request)
            if isinstance(body, Reply):
                reply = body
            else:
                reply = self._take_fault(session, "ChasitorResyncState") or (
                    session.receive_resync(body, sequenced=SEQUENCE in request.headers)
                )
        return self._respond(request, session, reply)

    async def _handle_reconnect(self, request: web.Request) -> web.Response:
        session, _, reply = self._authenticate(
            request, null_affinity_ok=True, min_version=_RECONNECT_MIN_VERSION
        )
        if reply is None:
            assert session is not None
            reply = self._take_fault(session, "ReconnectSession") or session.receive_reconnect(
                request.query.get("ReconnectSession.offset"), self._now()
            )
            self._after_change(session)
        return self._respond(request, session, reply)

    async def _handle_messages(self, request: web.Request) -> web.Response:
        session, _, reply = self._authenticate(request)
        if reply is not None:
            return self._respond(request, session, reply)
        assert session is not None
        now = self._now()
        fault = self._take_fault(session, "Messages")
        if fault is not None:
            return self._respond(request, session, fault)
        self._release_if_abandoned(session, now)
        reply = session.open_poll(request.query.get("ack"), now)
        if reply is not None:
            # Answered at once: a batch, an ack error, or the 409 of a duplicate poll, which
            # ended the session (its held twin is answered by _after_change).
            self._after_change(session)
            return self._respond(request, session, reply)

        loop = asyncio.get_running_loop()
        future: asyncio.Future[Reply] = loop.create_future()
        timer = loop.call_later(self.options.hold_s, self._expire_poll, session, future)
        self._held[session.id] = _Held(future, timer, request)
        try:
            reply = await future
        except asyncio.CancelledError:
            # The client hung up (only with handler cancellation on). Strict: the poll stays
            # outstanding until the server answers it, so a quick re-poll is a duplicate.
            if self.options.release_abandoned_polls:
                self._drop_held(session, future)
                session.abandon_poll(self._now())
            raise
        return self._respond(request, session, reply)

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

    def _after_change(self, session: Session) -> None:
        """Answer the held poll if the change calls for it; the one place that does."""
        held = self._held.get(session.id)
        if held is None:
            return
        reply = session.settle_poll(self._now())
        if reply is None:
            return
        del self._held[session.id]
        held.timer.cancel()
        if not held.future.done():
            held.future.set_result(reply)

    async def _handle_availability(self, request: web.Request) -> web.Response:
        # "Visitor resources (only X-LIVEAGENT-API-VERSION needed)" (SALESFORCE.md 4.12).
        version = parse_api_version(request.headers.get(API_VERSION))
        if isinstance(version, Reply):
            return self._respond(request, None, version)
        query = request.query
        for name in ("org_id", "deployment_id", "Availability.ids"):
            if name not in query:
                return self._respond(
                    request, None, text_reply(400, f"Missing query parameter {name}")
                )
        org_id, deployment_id = query["org_id"], query["deployment_id"]
        opts = self.options
        if not (org_id == opts.org_id if opts.org_id is not None else is_sf_id(org_id, "00D")):
            return self._respond(
                request, None, text_reply(400, f"Invalid query parameter org_id: {org_id!r}")
            )
        if not (
            deployment_id == opts.deployment_id
            if opts.deployment_id is not None
            else is_sf_id(deployment_id, "572")
        ):
            return self._respond(
                request,
                None,
                text_reply(400, f"Invalid query parameter deployment_id: {deployment_id!r}"),
            )
        ids = _parse_ids(query["Availability.ids"])
        if ids is None:
            return self._respond(
                request,
                None,
                text_reply(
                    400,
                    "Invalid query parameter Availability.ids: "
                    f"{query['Availability.ids']!r} (expected [id1,id2] or id1,id2)",
                ),
            )
        need_wait = query.get("Availability.needEstimatedWaitTime") in ("1", "true")
        payload = behaviours.availability(ids, api_version=version, need_wait=need_wait)
        return self._respond(request, None, json_reply(payload))

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
    # Control API (Python)

    def _get(self, session_id: str) -> Session:
        try:
            return self.sessions[session_id]
        except KeyError:
            raise UnknownSession(session_id) from None

    def push(self, session_id: str, type: str, message: Any = None) -> int:
        """Queue any raw message ``{"type": type, "message": message}`` for the visitor.

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

    def agent_says(self, session_id: str, text: str) -> int:
        """The current agent sends a ChatMessage."""
        name, user_id = self._agent(session_id)
        return self.push(session_id, *behaviours.agent_message(name, user_id, text))

    def agent_typing(self, session_id: str, active: bool = True) -> int:
        """The current agent starts (AgentTyping) or stops (AgentNotTyping) typing."""
        name, user_id = self._agent(session_id)
        return self.push(session_id, *behaviours.agent_typing(name, user_id, active))

    def agent_transfers(self, session_id: str, name: str, user_id: str | None = None) -> int:
        """ChatTransferred to agent ``name``; later scripted replies come from them."""
        # A stable made-up user id per name (prefix 005, 15 characters).
        user_id = user_id or f"005{zlib.crc32(name.encode()):012d}"
        return self.push(session_id, *behaviours.chat_transferred(name, user_id))

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

    def switch_server_url(self, session_id: str, new_url: str) -> int:
        """Queue a ``SwitchServer`` message ``{"newUrl": new_url}`` (SALESFORCE.md 4.12)."""
        return self.push(session_id, "SwitchServer", {"newUrl": new_url})

    def fail_next(self, session_id: str, resource: str, status: int, body: str = "") -> None:
        """Answer the next request for ``resource`` of this session with ``status``, unapplied.

        ``resource`` is a Chasitor resource name, ``Messages``, ``ReconnectSession``,
        ``ChasitorResyncState`` or ``DeleteSession``. Requests are checked for their headers
        first, so a fault never hides a header error. A sequenced POST answered this way does
        not use its sequence number up. Several calls queue several faults.
        """
        session = self._get(session_id)
        if resource not in FAULT_RESOURCES:
            raise ValueError(f"unknown resource {resource!r}")
        if not 100 <= status <= 599:
            raise ValueError(f"not an HTTP status: {status!r}")
        reply = text_reply(status, body) if body else Reply(status=status)
        self._faults.setdefault(session.id, {}).setdefault(resource, deque()).append(reply)

    def record(self) -> dict[str, Any]:
        """Everything recorded, as JSON-able builtins.

        Shape: ``{"options": {...}, "sessions": {id: Session.record()}, "requests": [...]}``,
        where ``requests`` holds the requests of no session (see
        :attr:`unattributed_requests`) as ``{method, path, query, headers, status}``.
        """
        return {
            "options": msgspec.to_builtins(self.options),
            "sessions": {sid: session.record() for sid, session in self.sessions.items()},
            "requests": msgspec.to_builtins(list(self.unattributed_requests)),
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

    # --------------------------------------------------------------------------------------
    # Control API (HTTP)

    async def _control_record(self, request: web.Request) -> web.Response:
        return _json_response(self.record())

    async def _control_sessions(self, request: web.Request) -> web.Response:
        return _json_response({"sessions": self.summaries()})

    async def _control_session(self, request: web.Request) -> web.Response:
        session = self.sessions.get(request.match_info["id"])
        if session is None:
            return _json_response({"error": "unknown session"}, status=404)
        return _json_response(session.record())

    async def _control_action(self, request: web.Request) -> web.Response:
        session_id, action = request.match_info["id"], request.match_info["action"]
        raw = await request.read()
        try:
            result = self._run_action(action, session_id, raw)
        except msgspec.DecodeError as exc:
            return _json_response({"error": str(exc)}, status=400)
        except UnknownSession:
            return _json_response({"error": "unknown session"}, status=404)
        except SessionOver as exc:
            return _json_response({"error": str(exc)}, status=409)
        except OutboxFull as exc:
            return _json_response({"error": str(exc)}, status=429)
        except (SimulatorError, ValueError) as exc:
            return _json_response({"error": str(exc)}, status=400)
        if result is None:
            return _json_response({"error": f"unknown action {action!r}"}, status=404)
        return _json_response(result)

    def _run_action(self, action: str, session_id: str, raw: bytes) -> dict[str, Any] | None:
        """Decode the body of one control action and run it; None for an unknown action."""

        def body(cls: type[Any]) -> Any:
            return msgspec.json.decode(raw or b"{}", type=cls)

        match action:
            case "push":
                push = body(_Push)
                return {"number": self.push(session_id, push.type, push.message)}
            case "say":
                return {"number": self.agent_says(session_id, body(_Say).text)}
            case "typing":
                return {"number": self.agent_typing(session_id, body(_Typing).active)}
            case "transfer":
                transfer = body(_Transfer)
                return {"number": self.agent_transfers(session_id, transfer.name, transfer.user_id)}
            case "end":
                return {"number": self.agent_ends(session_id, body(_End).reason)}
            case "disconnect":
                body(_Nothing)
                return {"number": self.agent_disconnects(session_id)}
            case "queue":
                queue = body(_Queue)
                number = self.queue_update(session_id, queue.position, queue.estimated_wait_time)
                return {"number": number}
            case "switch-server":
                body(_Nothing)
                return {"affinity_token": self.switch_server(session_id)}
            case "switch-url":
                return {"number": self.switch_server_url(session_id, body(_SwitchUrl).new_url)}
            case "fail-next":
                fault = body(_FailNext)
                self.fail_next(session_id, fault.resource, fault.status, fault.body)
                return {"ok": True}
        return None


def _json_response(payload: Any, status: int = 200) -> web.Response:
    return web.Response(
        status=status, body=msgspec.json.encode(payload), content_type="application/json"
    )


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


def _url_host(host: str) -> str:
    try:
        if ipaddress.ip_address(host).version == 6:
            return f"[{host}]"
    except ValueError:
        pass
    return host


@contextlib.asynccontextmanager
async def running_simulator(
    options: SimulatorOptions | None = None, host: str = "127.0.0.1", port: int = 0
) -> AsyncIterator[Simulator]:
    """Serve a simulator on ``host:port`` (port 0 picks a free one) for the block's duration.

    Yields:
        The :class:`Simulator`, with ``base_url`` and ``port`` set.
    """
    simulator = Simulator(options)
    # No access log: 10,000 sessions polling would drown everything else. The shutdown
    # budget is short because held polls are answered on shutdown.
    runner = web.AppRunner(simulator.app, access_log=None, shutdown_timeout=5.0)
    await runner.setup()
    try:
        # A large backlog: a load test opens thousands of connections at once.
        site = web.TCPSite(runner, host, port, backlog=4096)
        await site.start()
        bound_port = runner.addresses[0][1]
        simulator.port = bound_port
        simulator.base_url = f"http://{_url_host(host)}:{bound_port}{BASE_PATH}"
        yield simulator
    finally:
        await runner.cleanup()


async def serve_forever(
    options: SimulatorOptions | None = None, host: str = "127.0.0.1", port: int = 8080
) -> None:
    """Serve the simulator until cancelled (for the ``bridged simulator`` command).

    Cancellation is the way to stop it; the server is cleaned up and the
    ``CancelledError`` propagates.
    """
    async with running_simulator(options, host, port) as simulator:
        logger.info("Live Agent simulator listening on %s", simulator.base_url)
        if host not in ("127.0.0.1", "::1", "localhost"):
            logger.warning("the simulator's control API (/_sim/) has no authentication")
        await asyncio.Event().wait()
