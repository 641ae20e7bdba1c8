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
* :mod:`.app`: :class:`Simulator` (the aiohttp app and the control API),
  :func:`running_simulator` and :func:`serve_forever`.

Typical use in a test::

    async with running_simulator(SimulatorOptions(hold_s=0.2, client_poll_timeout=2)) as sim:
        ...  # point the client at sim.base_url; drive the agent with sim.agent_says(...)
"""

from __future__ import annotations

from .app import Simulator, running_simulator, serve_forever
from .behaviours import (
    ECHO_BUTTON,
    ENDS_BUTTON,
    ENDS_GREETING,
    FAIL_BUTTON,
    MANUAL_BUTTON,
    NOAGENT_BUTTON,
    QUEUE_BUTTON,
)
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
    "ECHO_BUTTON",
    "ENDS_BUTTON",
    "ENDS_GREETING",
    "FAIL_BUTTON",
    "MANUAL_BUTTON",
    "NOAGENT_BUTTON",
    "QUEUE_BUTTON",
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
