"""The simulator's HTTP control API under ``/_sim/``, for tests in another process.

Every action calls the public method of :class:`~.app.Simulator` with the same name, so
the Python and HTTP APIs cannot drift apart. Bodies are JSON, decoded strictly (unknown
fields are a 400); answers are JSON.

Reading::

    GET    /_sim/record                      everything recorded (Simulator.record())
    GET    /_sim/sessions                    one summary per session
    GET    /_sim/sessions/{id}               one session's record
    GET    /_sim/faults                      pending faults, injected faults, outage

One session (``/_sim/sessions/{id}/<action>``)::

    push            {"type", "message"?}                    any raw message
    say             {"text"}                                agent ChatMessage
    typing          {"active"?}                             AgentTyping / AgentNotTyping
    join            {"name"?, "userId"?, "sneakPeekEnabled"?}   ChatEstablished
    transfer        {"name", "userId"?, "sneakPeekEnabled"?}    ChatTransferred
    end             {"reason"?}                             ChatEnded
    disconnect                                              AgentDisconnect
    queue           {"position", "estimatedWaitTime"?}      QueueUpdate
    switch-server                                           503 server switch
    switch-url      {"newUrl"?}                             SwitchServer message
    expire                                                  ends as if not polled in time
    fail-next       {"resource", "status", "body"?, "count"?, "when"?}
    reset-next      {"resource", "count"?, "when"?}
    delay-next      {"resource", "seconds", "count"?, "when"?}

Every session (``/_sim/<action>``)::

    fail-next, reset-next, delay-next   as above, for the requests of any session
    outage          {"seconds", "mode"?}        mode: reset (default), 503, 500, refuse
    end-outage
    switch-server-all                           {"affinity_tokens": {id: token}}
    availability    {"buttonId", "available"}   available: true, false or null (default)
    clear-faults

Errors: 400 bad body or value, 404 unknown session or action, 409 session over, 429
outbox full.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import msgspec
from aiohttp import web

from .model import OutboxFull, SessionOver, SimulatorError, UnknownSession

__all__ = ["ControlApi"]


# Bodies: frozen, keyword-only, strict about unknown fields, camelCase like the Live Agent
# JSON. Each class spells the options out: type checkers do not inherit them.


class _Push(
    msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True, rename="camel"
):
    type: str
    message: dict[str, Any] = {}


class _Say(
    msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True, rename="camel"
):
    text: str


class _Typing(
    msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True, rename="camel"
):
    active: bool = True


class _Join(
    msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True, rename="camel"
):
    name: str | None = None
    user_id: str | None = None
    sneak_peek_enabled: bool = False


class _Transfer(
    msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True, rename="camel"
):
    name: str
    user_id: str | None = None
    sneak_peek_enabled: bool = False


class _End(
    msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True, rename="camel"
):
    reason: str = "agent"


class _Nothing(
    msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True, rename="camel"
):
    pass


class _Queue(
    msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True, rename="camel"
):
    position: int
    estimated_wait_time: int | None = None


class _SwitchUrl(
    msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True, rename="camel"
):
    new_url: str | None = None


class _FailNext(
    msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True, rename="camel"
):
    resource: str
    status: int
    body: str = ""
    count: int = 1
    when: str = "before"


class _ResetNext(
    msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True, rename="camel"
):
    resource: str
    count: int = 1
    when: str = "before"


class _DelayNext(
    msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True, rename="camel"
):
    resource: str
    seconds: float
    count: int = 1
    when: str = "after"


class _Outage(
    msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True, rename="camel"
):
    seconds: float
    mode: str = "reset"


class _Availability(
    msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True, rename="camel"
):
    button_id: str
    available: bool | None


class ControlApi:
    """The ``/_sim/`` routes of one :class:`~.app.Simulator`."""

    def __init__(self, simulator: Any) -> None:
        # The Simulator of app.py, which builds this object: typed loosely so that this
        # module does not import app.py back (each action names its public method).
        self.simulator = simulator

    def add_routes(self, router: web.UrlDispatcher, prefix: str) -> None:
        """Register the routes under ``prefix`` (``/_sim/``)."""
        router.add_get(prefix + "record", self._record)
        router.add_get(prefix + "sessions", self._sessions)
        router.add_get(prefix + "faults", self._faults)
        router.add_get(prefix + "sessions/{id}", self._session)
        router.add_post(prefix + "sessions/{id}/{action}", self._session_action)
        router.add_post(prefix + "{action}", self._global_action)

    async def _record(self, request: web.Request) -> web.Response:
        return _json_response(self.simulator.record())

    async def _sessions(self, request: web.Request) -> web.Response:
        return _json_response({"sessions": self.simulator.summaries()})

    async def _faults(self, request: web.Request) -> web.Response:
        return _json_response(self.simulator.faults())

    async def _session(self, request: web.Request) -> web.Response:
        session = self.simulator.sessions.get(request.match_info["id"])
        if session is None:
            return _json_response({"error": "unknown session"}, status=404)
        return _json_response(session.record())

    async def _session_action(self, request: web.Request) -> web.Response:
        session_id, action = request.match_info["id"], request.match_info["action"]
        raw = await request.read()
        return _run(lambda: self._run_session_action(action, session_id, raw), action)

    async def _global_action(self, request: web.Request) -> web.Response:
        action = request.match_info["action"]
        raw = await request.read()
        return _run(lambda: self._run_global_action(action, raw), action)

    def _run_session_action(
        self, action: str, session_id: str, raw: bytes
    ) -> dict[str, Any] | None:
        """Decode the body of one session action and run it; None for an unknown action."""
        sim = self.simulator

        def body(cls: type[Any]) -> Any:
            return msgspec.json.decode(raw or b"{}", type=cls)

        match action:
            case "push":
                push = body(_Push)
                return {"number": sim.push(session_id, push.type, push.message)}
            case "say":
                return {"number": sim.agent_says(session_id, body(_Say).text)}
            case "typing":
                return {"number": sim.agent_typing(session_id, body(_Typing).active)}
            case "join":
                join = body(_Join)
                number = sim.agent_joins(
                    session_id, join.name, join.user_id, sneak_peek=join.sneak_peek_enabled
                )
                return {"number": number}
            case "transfer":
                transfer = body(_Transfer)
                number = sim.agent_transfers(
                    session_id,
                    transfer.name,
                    transfer.user_id,
                    sneak_peek=transfer.sneak_peek_enabled,
                )
                return {"number": number}
            case "end":
                return {"number": sim.agent_ends(session_id, body(_End).reason)}
            case "disconnect":
                body(_Nothing)
                return {"number": sim.agent_disconnects(session_id)}
            case "queue":
                queue = body(_Queue)
                update = sim.queue_update(session_id, queue.position, queue.estimated_wait_time)
                return {"number": update}
            case "switch-server":
                body(_Nothing)
                return {"affinity_token": sim.switch_server(session_id)}
            case "switch-url":
                return {"number": sim.switch_server_url(session_id, body(_SwitchUrl).new_url)}
            case "expire":
                body(_Nothing)
                sim.expire(session_id)
                return {"ok": True}
        return self._run_fault_action(action, session_id, raw)

    def _run_global_action(self, action: str, raw: bytes) -> dict[str, Any] | None:
        """Decode the body of one simulator-wide action and run it; None if unknown."""
        sim = self.simulator

        def body(cls: type[Any]) -> Any:
            return msgspec.json.decode(raw or b"{}", type=cls)

        match action:
            case "outage":
                outage = body(_Outage)
                sim.outage(outage.seconds, outage.mode)
                return {"ok": True}
            case "end-outage":
                body(_Nothing)
                sim.end_outage()
                return {"ok": True}
            case "switch-server-all":
                body(_Nothing)
                return {"affinity_tokens": sim.switch_server_all()}
            case "availability":
                availability = body(_Availability)
                sim.set_available(availability.button_id, availability.available)
                return {"ok": True}
            case "clear-faults":
                body(_Nothing)
                sim.clear_faults()
                return {"ok": True}
        return self._run_fault_action(action, None, raw)

    def _run_fault_action(
        self, action: str, session_id: str | None, raw: bytes
    ) -> dict[str, Any] | None:
        sim = self.simulator

        def body(cls: type[Any]) -> Any:
            return msgspec.json.decode(raw or b"{}", type=cls)

        match action:
            case "fail-next":
                fail = body(_FailNext)
                sim.fail_next(session_id, fail.resource, fail.status, fail.body, count=fail.count,
                              when=fail.when)
                return {"ok": True}
            case "reset-next":
                reset = body(_ResetNext)
                sim.reset_next(session_id, reset.resource, reset.count, reset.when)
                return {"ok": True}
            case "delay-next":
                delay = body(_DelayNext)
                sim.delay_next(session_id, delay.resource, delay.seconds, delay.count, delay.when)
                return {"ok": True}
        return None


def _run(action: Callable[[], dict[str, Any] | None], name: str) -> web.Response:
    """Run one control action, mapping the simulator's errors to statuses."""
    try:
        result = action()
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
        return _json_response({"error": f"unknown action {name!r}"}, status=404)
    return _json_response(result)


def _json_response(payload: Any, status: int = 200) -> web.Response:
    return web.Response(
        status=status, body=msgspec.json.encode(payload), content_type="application/json"
    )
