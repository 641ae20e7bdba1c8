"""A strict, built-in simulator of Salesforce's legacy Live Agent Chat REST API.

It plays the Salesforce side of the visitor ("chasitor") API described in SALESFORCE.md, so
that operators can try bridged without an org and bridged's tests can run over real
loopback. It is an independent implementation: it imports nothing from the rest of bridged,
so a misreading in bridged's client is not mirrored here. Where the docs leave a point open
it takes the strict reading (SALESFORCE.md 11).

Modules, one concern each:

* :mod:`.options`: :class:`SimulatorOptions`, the frozen configuration.
* :mod:`.wire`: header names, request bodies (msgspec Structs), :class:`~.wire.Reply`. Pure.
* :mod:`.model`: :class:`Session`, the per-session state machine. Pure (no asyncio).
* :mod:`.behaviours`: the scripted agents, chosen by button id (table in its docstring). Pure.
* :mod:`.faults`: fault injection, what is planned and what was injected (table in its
  docstring). Pure.
* :mod:`.app`: :class:`Simulator` (the aiohttp app and the Python control API),
  :func:`running_simulator` and :func:`serve_forever`.
* :mod:`.control`: the same control API over HTTP under ``/_sim/``, for other processes.

Typical use in a test::

    async with running_simulator(SimulatorOptions(hold_s=0.2, client_poll_timeout=2)) as sim:
        ...  # point the client at sim.base_url; drive the agent with sim.agent_says(...)

Faults bridged must survive, each one call (and one ``/_sim/`` action)::

    sim.reset_next(session_id, "ChatMessage", when="after")  # applied, then TCP RST
    sim.delay_next(None, "Messages", 1.5)                    # any session's next poll
    sim.fail_next(None, "SessionId", 500, count=2)
    sim.fail_next(session_id, "Messages", 504, when="after")  # a proxy gave up; still held
    sim.outage(0.5, mode="refuse")                           # nothing listens for 0.5 s
    sim.switch_server_all()                                  # 503 hand-over everywhere
    sim.switch_server_url(session_id)                        # SwitchServer to the alias port
    sim.expire(session_id)                                   # as if not polled in time

A fault counts HTTP requests, and aiohttp's client resends an idempotent request (GET,
DELETE) once by itself when its connection drops: a reset of Messages, SessionId,
ReconnectSession or DELETE reaches the caller only with ``count=2``.
"""

from __future__ import annotations

from .app import Simulator, running_simulator, serve_forever
from .behaviours import (
    CONSOLE_BUTTON,
    ECHO_BUTTON,
    ENDS_BUTTON,
    ENDS_GREETING,
    FAIL_BUTTON,
    MANUAL_BUTTON,
    NOAGENT_BUTTON,
    PEEK_BUTTON,
    QUEUE_BUTTON,
)
from .faults import FAULT_RESOURCES, OUTAGE_MODES, InjectedFault
from .model import (
    OutboxFull,
    Phase,
    RequestRecord,
    Session,
    SessionOver,
    SimulatorError,
    UnknownSession,
)
from .options import SimulatorOptions

__all__ = [
    "CONSOLE_BUTTON",
    "ECHO_BUTTON",
    "ENDS_BUTTON",
    "ENDS_GREETING",
    "FAIL_BUTTON",
    "FAULT_RESOURCES",
    "MANUAL_BUTTON",
    "NOAGENT_BUTTON",
    "OUTAGE_MODES",
    "PEEK_BUTTON",
    "QUEUE_BUTTON",
    "InjectedFault",
    "OutboxFull",
    "Phase",
    "RequestRecord",
    "Session",
    "SessionOver",
    "Simulator",
    "SimulatorError",
    "SimulatorOptions",
    "UnknownSession",
    "running_simulator",
    "serve_forever",
]
