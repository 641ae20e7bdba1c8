"""The simulator's HTTP control API under ``/_sim/``, for tests in another process.

Every action calls the public method of :class:`~.engine.Engine` with the same meaning, so
the Python and HTTP APIs cannot drift apart. It answers loopback peers only (403 for any
other). Bodies are JSON, decoded strictly (unknown fields are a 400); answers are JSON.

Reading::

    GET    /_sim/record                       everything recorded (Simulator.record())
    GET    /_sim/conversations                one summary per conversation
    GET    /_sim/conversations/{id}           one conversation's record
    GET    /_sim/requests?resource=&conversation=   recorded requests
    GET    /_sim/streams                      every stream opened (ids, pings, close reason)
    GET    /_sim/faults                       pending and injected faults, replay on/off

One conversation, the agent side (``POST /_sim/conversations/{id}/<action>``), each
answering ``{"event_ids": [...]}``::

    join        {"name"?, "subject"?}          PARTICIPANT_CHANGED add (+ status Active)
    say         {"text"}                       agent CONVERSATION_MESSAGE
    typing      {"active"?}                    typing started / stopped
    ack         {"messageId", "read"?}         delivery / read acknowledgement
    leave                                      PARTICIPANT_CHANGED remove
    transfer    {"name"?, "subject"?}          remove, TRANSFER, RoutingResult Transfer, add
    end                                        the agent ends the session
    route       {"routingType"?, "failureType"?, "failureReason"?, "waitSeconds"?}
    queue       {"position", "waitSeconds"}    CONVERSATION_QUEUE_POSITION
    push        {"event", "entry"?}            any raw event
    fail-next, reset-next, delay-next          as below, for this conversation's requests

Every conversation (``POST /_sim/<action>``)::

    fail-next        {"resource", "status", "message"?, "count"?}
    reset-next       {"resource", "count"?, "when"?}
    delay-next       {"resource", "seconds", "count"?, "when"?}
    drop-next-stream {"afterEvents", "count"?, "abort"?}
    drop-streams     {"subject"?, "abort"?}      -> {"dropped": n}
    expire-tokens    {"subject"?}                -> {"expired": n}
    replay           {"enabled"}
    clear-faults

Errors: 400 bad body or value, 403 not loopback, 404 unknown conversation or action,
409 the conversation is closed, its session ended, or the agent cannot do that now.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable
from typing import Any

import msgspec
from aiohttp import web

from .engine import Engine
from .model import SessionOver, SimulatorError, UnknownConversation

__all__ = ["ControlApi"]


class _Body(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True,
            rename="camel"):
    """Base of the control bodies: strict, camelCase."""


class _Nothing(_Body, frozen=True, kw_only=True, forbid_unknown_fields=True, rename="camel"):
    pass


class _Agent(_Body, frozen=True, kw_only=True, forbid_unknown_fields=True, rename="camel"):
    name: str | None = None
    subject: str | None = None


class _Say(_Body, frozen=True, kw_only=True, forbid_unknown_fields=True, rename="camel"):
    text: str


class _Typing(_Body, frozen=True, kw_only=True, forbid_unknown_fields=True, rename="camel"):
    active: bool = True


class _Ack(_Body, frozen=True, kw_only=True, forbid_unknown_fields=True, rename="camel"):
    message_id: str
    read: bool = False


class _Route(_Body, frozen=True, kw_only=True, forbid_unknown_fields=True, rename="camel"):
    routing_type: str = "Initial"
    failure_type: str = "None"
    failure_reason: str = ""
    wait_seconds: int = -1


class _Queue(_Body, frozen=True, kw_only=True, forbid_unknown_fields=True, rename="camel"):
    position: int
    wait_seconds: int


class _Push(_Body, frozen=True, kw_only=True, forbid_unknown_fields=True, rename="camel"):
    event: str
    entry: dict[str, Any] | None = None


class _FailNext(_Body, frozen=True, kw_only=True, forbid_unknown_fields=True, rename="camel"):
    resource: str
    status: int
    message: str = "Simulated failure"
    count: int = 1


class _ResetNext(_Body, frozen=True, kw_only=True, forbid_unknown_fields=True,
                 rename="camel"):
    resource: str
    count: int = 1
    when: str = "before"


class _DelayNext(_Body, frozen=True, kw_only=True, forbid_unknown_fields=True,
                 rename="camel"):
    resource: str
    seconds: float
    count: int = 1
    when: str = "after"


class _DropNext(_Body, frozen=True, kw_only=True, forbid_unknown_fields=True, rename="camel"):
    after_events: int
    count: int = 1
    abort: bool = True


class _DropNow(_Body, frozen=True, kw_only=True, forbid_unknown_fields=True, rename="camel"):
    subject: str | None = None
    abort: bool = True


class _Subject(_Body, frozen=True, kw_only=True, forbid_unknown_fields=True, rename="camel"):
    subject: str | None = None


class _Replay(_Body, frozen=True, kw_only=True, forbid_unknown_fields=True, rename="camel"):
    enabled: bool


def _is_loopback(request: web.Request) -> bool:
    remote = request.remote
    if remote is None:
        return False
    try:
        return ipaddress.ip_address(remote).is_loopback
    except ValueError:
        return False


class ControlApi:
    """The ``/_sim/`` routes of one simulator (its :class:`~.engine.Engine`)."""

    def __init__(self, simulator: Engine) -> None:
        self.simulator = simulator

    def add_routes(self, router: web.UrlDispatcher, prefix: str) -> None:
        """Register the routes under ``prefix`` (``/_sim/``)."""
        router.add_get(prefix + "record", self._guard(self._record))
        router.add_get(prefix + "conversations", self._guard(self._conversations))
        router.add_get(prefix + "conversations/{id}", self._guard(self._conversation))
        router.add_get(prefix + "requests", self._guard(self._requests))
        router.add_get(prefix + "streams", self._guard(self._streams))
        router.add_get(prefix + "faults", self._guard(self._faults))
        router.add_post(prefix + "conversations/{id}/{action}",
                        self._guard(self._conversation_action))
        router.add_post(prefix + "{action}", self._guard(self._global_action))

    def _guard(
        self, handler: Callable[[web.Request], Any]
    ) -> Callable[[web.Request], Any]:
        async def guarded(request: web.Request) -> web.StreamResponse:
            if not _is_loopback(request):
                return _json_response({"error": "the control API answers loopback only"},
                                      status=403)
            response: web.StreamResponse = await handler(request)
            return response

        return guarded

    async def _record(self, request: web.Request) -> web.Response:
        return _json_response(self.simulator.record())

    async def _conversations(self, request: web.Request) -> web.Response:
        return _json_response({"conversations": self.simulator.summaries()})

    async def _conversation(self, request: web.Request) -> web.Response:
        conv = self.simulator.conversations.get(request.match_info["id"])
        if conv is None:
            return _json_response({"error": "unknown conversation"}, status=404)
        return _json_response(conv.record())

    async def _requests(self, request: web.Request) -> web.Response:
        records = self.simulator.request_records(
            resource=request.query.get("resource"),
            conversation_id=request.query.get("conversation"))
        return _json_response({"requests": msgspec.to_builtins(records)})

    async def _streams(self, request: web.Request) -> web.Response:
        return _json_response({"streams": [s.as_dict() for s in self.simulator.streams]})

    async def _faults(self, request: web.Request) -> web.Response:
        return _json_response(self.simulator.faults())

    async def _conversation_action(self, request: web.Request) -> web.Response:
        cid, action = request.match_info["id"], request.match_info["action"]
        raw = await request.read()
        return _run(lambda: self._run_conversation_action(action, cid, raw), action)

    async def _global_action(self, request: web.Request) -> web.Response:
        action = request.match_info["action"]
        raw = await request.read()
        return _run(lambda: self._run_global_action(action, raw), action)

    def _run_conversation_action(
        self, action: str, cid: str, raw: bytes
    ) -> dict[str, Any] | None:
        """Decode the body of one agent action and run it; None for an unknown action."""
        sim = self.simulator

        def body(cls: type[Any]) -> Any:
            return msgspec.json.decode(raw or b"{}", type=cls)

        ids: list[str] | None = None
        match action:
            case "join":
                agent = body(_Agent)
                ids = sim.agent_joins(cid, agent.name, agent.subject)
            case "say":
                ids = sim.agent_says(cid, body(_Say).text)
            case "typing":
                ids = sim.agent_typing(cid, body(_Typing).active)
            case "ack":
                ack = body(_Ack)
                ids = sim.agent_acknowledges(cid, ack.message_id, ack.read)
            case "leave":
                body(_Nothing)
                ids = sim.agent_leaves(cid)
            case "transfer":
                agent = body(_Agent)
                ids = sim.agent_transfers(cid, agent.name, agent.subject)
            case "end":
                body(_Nothing)
                ids = sim.agent_ends(cid)
            case "route":
                route = body(_Route)
                ids = sim.routing_result(cid, routing_type=route.routing_type,
                                         failure_type=route.failure_type,
                                         failure_reason=route.failure_reason,
                                         wait_s=route.wait_seconds)
            case "queue":
                queue = body(_Queue)
                ids = sim.queue_update(cid, queue.position, queue.wait_seconds)
            case "push":
                push = body(_Push)
                ids = [sim.push_event(cid, push.event, push.entry)]
        if ids is not None:
            return {"event_ids": ids}
        sim.conversation(cid)
        return self._run_fault_action(action, cid, raw)

    def _run_global_action(self, action: str, raw: bytes) -> dict[str, Any] | None:
        """Decode the body of one simulator-wide action and run it; None if unknown."""
        sim = self.simulator

        def body(cls: type[Any]) -> Any:
            return msgspec.json.decode(raw or b"{}", type=cls)

        match action:
            case "drop-next-stream":
                drop = body(_DropNext)
                sim.drop_next_streams(drop.after_events, drop.count, abort=drop.abort)
                return {"ok": True}
            case "drop-streams":
                now = body(_DropNow)
                return {"dropped": sim.drop_streams(now.subject, abort=now.abort)}
            case "expire-tokens":
                return {"expired": sim.expire_tokens(body(_Subject).subject)}
            case "replay":
                sim.set_replay(body(_Replay).enabled)
                return {"ok": True}
            case "clear-faults":
                body(_Nothing)
                sim.clear_faults()
                return {"ok": True}
        return self._run_fault_action(action, None, raw)

    def _run_fault_action(
        self, action: str, cid: str | None, raw: bytes
    ) -> dict[str, Any] | None:
        sim = self.simulator

        def body(cls: type[Any]) -> Any:
            return msgspec.json.decode(raw or b"{}", type=cls)

        match action:
            case "fail-next":
                fail = body(_FailNext)
                sim.fail_next(fail.resource, fail.status, fail.message, count=fail.count,
                              conversation_id=cid)
                return {"ok": True}
            case "reset-next":
                reset = body(_ResetNext)
                sim.reset_next(reset.resource, reset.count, reset.when, conversation_id=cid)
                return {"ok": True}
            case "delay-next":
                delay = body(_DelayNext)
                sim.delay_next(delay.resource, delay.seconds, delay.count, delay.when,
                               conversation_id=cid)
                return {"ok": True}
        return None


def _run(action: Callable[[], dict[str, Any] | None], name: str) -> web.Response:
    """Run one control action, mapping the simulator's errors to statuses."""
    try:
        result = action()
    except msgspec.DecodeError as exc:
        return _json_response({"error": str(exc)}, status=400)
    except UnknownConversation:
        return _json_response({"error": "unknown conversation"}, status=404)
    except SessionOver as exc:
        return _json_response({"error": str(exc)}, status=409)
    except (SimulatorError, ValueError) as exc:
        return _json_response({"error": str(exc)}, status=400)
    if result is None:
        return _json_response({"error": f"unknown action {name!r}"}, status=404)
    return _json_response(result)


def _json_response(payload: Any, status: int = 200) -> web.Response:
    return web.Response(
        status=status, body=msgspec.json.encode(payload), content_type="application/json"
    )
