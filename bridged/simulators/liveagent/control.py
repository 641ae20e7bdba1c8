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
# JSON. msgspec passes the base's options on; type checkers want frozen and kw_only spelled
# out on each class.


class _Body(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True,
            rename="camel"):
    """Base of every action's body."""


class _Push(_Body, frozen=True, kw_only=True):
    type: str
    message: dict[str, Any] = {}


class _Say(_Body, frozen=True, kw_only=True):
    text: str


class _Typing(_Body, frozen=True, kw_only=True):
    active: bool = True


class _Join(_Body, frozen=True, kw_only=True):
    name: str | None = None
    user_id: str | None = None
    sneak_peek_enabled: bool = False


class _Transfer(_Body, frozen=True, kw_only=True):
    name: str
    user_id: str | None = None
    sneak_peek_enabled: bool = False


class _End(_Body, frozen=True, kw_only=True):
    reason: str = "agent"


class _Nothing(_Body, frozen=True, kw_only=True):
    pass


class _Queue(_Body, frozen=True, kw_only=True):
    position: int
    estimated_wait_time: int | None = None


class _SwitchUrl(_Body, frozen=True, kw_only=True):
    new_url: str | None = None


class _FailNext(_Body, frozen=True, kw_only=True):
    resource: str
    status: int
    body: str = ""
    count: int = 1
    when: str = "before"


class _ResetNext(_Body, frozen=True, kw_only=True):
    resource: str
    count: int = 1
    when: str = "before"


class _DelayNext(_Body, frozen=True, kw_only=True):
    resource: str
    seconds: float
    count: int = 1
    when: str = "after"


class _Outage(_Body, frozen=True, kw_only=True):
    seconds: float
    mode: str = "reset"


class _Availability(_Body, frozen=True, kw_only=True):
    button_id: str
    available: bool | None


# An action: its body's type, and what it does given the simulator, the session id (None
# for the simulator-wide actions) and the decoded body. One table per scope; the fault
# actions serve both.
_Run = Callable[[Any, Any, Any], dict[str, Any]]
_OK: dict[str, Any] = {"ok": True}


def _ok(effect: Callable[[Any, Any, Any], object]) -> _Run:
    """An action whose answer is ``{"ok": true}`` once ``effect`` ran."""
    return lambda sim, sid, b: (effect(sim, sid, b), _OK)[1]


def _number(effect: Callable[[Any, Any, Any], object]) -> _Run:
    """An action that answers with the number of the message it queued."""
    return lambda sim, sid, b: {"number": effect(sim, sid, b)}


_SESSION_ACTIONS: dict[str, tuple[type[_Body], _Run]] = {
    "push": (_Push, _number(lambda sim, sid, b: sim.push(sid, b.type, b.message))),
    "say": (_Say, _number(lambda sim, sid, b: sim.agent_says(sid, b.text))),
    "typing": (_Typing, _number(lambda sim, sid, b: sim.agent_typing(sid, b.active))),
    "join": (_Join, _number(lambda sim, sid, b: sim.agent_joins(
        sid, b.name, b.user_id, sneak_peek=b.sneak_peek_enabled))),
    "transfer": (_Transfer, _number(lambda sim, sid, b: sim.agent_transfers(
        sid, b.name, b.user_id, sneak_peek=b.sneak_peek_enabled))),
    "end": (_End, _number(lambda sim, sid, b: sim.agent_ends(sid, b.reason))),
    "disconnect": (_Nothing, _number(lambda sim, sid, b: sim.agent_disconnects(sid))),
    "queue": (_Queue, _number(lambda sim, sid, b: sim.queue_update(
        sid, b.position, b.estimated_wait_time))),
    "switch-server": (_Nothing, lambda sim, sid, b: {"affinity_token": sim.switch_server(sid)}),
    "switch-url": (_SwitchUrl, _number(lambda sim, sid, b: sim.switch_server_url(sid, b.new_url))),
    "expire": (_Nothing, _ok(lambda sim, sid, b: sim.expire(sid))),
}
_GLOBAL_ACTIONS: dict[str, tuple[type[_Body], _Run]] = {
    "outage": (_Outage, _ok(lambda sim, sid, b: sim.outage(b.seconds, b.mode))),
    "end-outage": (_Nothing, _ok(lambda sim, sid, b: sim.end_outage())),
    "switch-server-all": (_Nothing,
                          lambda sim, sid, b: {"affinity_tokens": sim.switch_server_all()}),
    "availability": (_Availability, _ok(lambda sim, sid, b: sim.set_available(
        b.button_id, b.available))),
    "clear-faults": (_Nothing, _ok(lambda sim, sid, b: sim.clear_faults())),
}
_FAULT_ACTIONS: dict[str, tuple[type[_Body], _Run]] = {
    "fail-next": (_FailNext, _ok(lambda sim, sid, b: sim.fail_next(
        sid, b.resource, b.status, b.body, count=b.count, when=b.when))),
    "reset-next": (_ResetNext, _ok(lambda sim, sid, b: sim.reset_next(
        sid, b.resource, b.count, b.when))),
    "delay-next": (_DelayNext, _ok(lambda sim, sid, b: sim.delay_next(
        sid, b.resource, b.seconds, b.count, b.when))),
}


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
        return await self._act(request, request.match_info["id"], _SESSION_ACTIONS)

    async def _global_action(self, request: web.Request) -> web.Response:
        return await self._act(request, None, _GLOBAL_ACTIONS)

    async def _act(self, request: web.Request, session_id: str | None,
                   table: dict[str, tuple[type[_Body], _Run]]) -> web.Response:
        """Decode the body of the action the path names, run it, answer its result."""
        name = request.match_info["action"]
        raw = await request.read()
        entry = table.get(name) or _FAULT_ACTIONS.get(name)
        if entry is None:
            return _json_response({"error": f"unknown action {name!r}"}, status=404)
        body_type, run = entry
        return _run(lambda: run(self.simulator, session_id,
                                msgspec.json.decode(raw or b"{}", type=body_type)))


def _run(action: Callable[[], dict[str, Any]]) -> web.Response:
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
    return _json_response(result)


def _json_response(payload: Any, status: int = 200) -> web.Response:
    return web.Response(
        status=status, body=msgspec.json.encode(payload), content_type="application/json"
    )
