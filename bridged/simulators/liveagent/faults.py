"""Fault injection: what the simulator was told to do wrong, and what it did. Pure.

The shell (``app.py``) asks :class:`FaultPlan` once per request, after the request passed
its header checks (so a fault never hides a header error), whether a fault is due for this
``(session, resource)``. Faults wait in a FIFO per key; a key is a session id or ``None``
("any session"), and a session's own faults come before the any-session ones. Each fault
serves ``count`` requests, then it is gone. Nothing here holds a timer or a task: the plan
is a small dict looked up per request, and it is empty (one falsy check) when no test uses
it, so 10,000 sessions cost nothing extra.

Fault kinds and what the shell does with each:

=========  ========  ==========================================================================
kind       when      effect
=========  ========  ==========================================================================
``fail``   before    answer ``status`` (and ``body``) at once; the request is not applied
``fail``   after     a proxy's answer: the request goes on to the session and is applied (a
                     poll is opened and stays held there, outstanding until the server answers
                     it into the void; a batch it takes is handed out and lost), and the
                     client gets ``status`` at once, as from a gateway that gave up (502/504)
``reset``  before    close the TCP connection without an answer; the request is not applied
``reset``  after     apply the request (a ChatMessage is received, its sequence number used
                     up; a poll hands out its batch), then close the connection unanswered
``delay``  before    wait ``seconds``, then handle the request as if it just arrived
``delay``  after     apply the request, then wait ``seconds`` before the answer goes out
``delay``  (poll)    a Messages poll is held at once (it is outstanding, so a second poll is
                     the 409 duplicate) but not answered before ``seconds``; a server switch
                     or the end of the session still answers it at once
=========  ========  ==========================================================================

An :class:`Outage` is the other fault: for a time window every Live Agent request of every
session fails the same way (``reset``, ``503``, ``500``, or ``refuse``: nothing listens).

Every fault that hit a request is remembered as an :class:`InjectedFault`, and the
request's own :class:`~.model.RequestRecord` carries the fault's :attr:`Fault.label`.
"""

from __future__ import annotations

from collections import deque
from typing import Any

import msgspec

from ..common import AFTER, BEFORE, DELAY, FAIL, RESET, check_fault
from .wire import Reply, text_reply

__all__ = [
    "AFTER",
    "BEFORE",
    "DELAY",
    "FAIL",
    "FAULT_RESOURCES",
    "OUTAGE_MODES",
    "RESET",
    "RESET_REPLY",
    "SESSIONLESS_RESOURCES",
    "Fault",
    "FaultPlan",
    "InjectedFault",
    "Outage",
]


# "reset" and "refuse" have no answer; "503" and "500" answer every request with that status.
OUTAGE_MODES = ("reset", "503", "500", "refuse")

# The reply that is not one: the shell closes the connection instead of answering. It is
# also what a request record shows as the status of a reset request.
RESET_REPLY = Reply(status=0)

# Resources a fault may target (names as in SALESFORCE.md 4; DELETE System/SessionId is
# "DeleteSession").
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
        "Availability",
    }
)

# Resources asked before there is a session: only any-session faults can reach them.
SESSIONLESS_RESOURCES = frozenset({"SessionId", "Availability"})


class Fault(msgspec.Struct, frozen=True, kw_only=True):
    """One kind of misbehaviour, applied to one request.

    Attributes:
        kind: ``fail``, ``reset`` or ``delay``.
        when: ``before`` (the request is not applied first) or ``after`` (it is; for a
            ``fail``, the answer comes from a "proxy" while the request went on).
        seconds: For ``delay``: how long.
        status: For ``fail``: the HTTP status answered.
        body: For ``fail``: the plain-text body answered (may be empty).
    """

    kind: str
    when: str = BEFORE
    seconds: float = 0.0
    status: int = 0
    body: str = ""

    def __post_init__(self) -> None:
        check_fault(self.kind, self.when, self.status, self.seconds)

    @property
    def label(self) -> str:
        """What request records show: ``fail_500``, ``fail_502_after``, ``reset_after``..."""
        if self.kind == FAIL:
            return f"fail_{self.status}" + ("_after" if self.when == AFTER else "")
        return f"{self.kind}_{self.when}"

    @property
    def after(self) -> bool:
        """True if the request is applied first."""
        return self.when == AFTER

    @property
    def reply(self) -> Reply:
        """The answer of a ``fail``, or :data:`RESET_REPLY` for a ``reset``."""
        if self.kind == FAIL:
            return text_reply(self.status, self.body) if self.body else Reply(status=self.status)
        return RESET_REPLY


class InjectedFault(msgspec.Struct, frozen=True, kw_only=True, gc=False):
    """Fact: a fault hit a request.

    Attributes:
        at: Loop time (monotonic seconds) when it hit.
        session_id: The request's session, None for SessionId/Availability or an unknown key.
        resource: The resource the request was for.
        fault: The fault's label (``reset_after``, ``outage_503``...).
        port: The local port the request arrived on, when known.
    """

    at: float
    session_id: str | None
    resource: str
    fault: str
    port: int | None = None


class Outage(msgspec.Struct, frozen=True, kw_only=True):
    """Every Live Agent request fails from ``started_at`` to ``until`` (loop time)."""

    mode: str
    started_at: float
    until: float

    @property
    def label(self) -> str:
        """``outage_reset``, ``outage_503``, ``outage_500`` or ``outage_refuse``."""
        return f"outage_{self.mode}"

    @property
    def reply(self) -> Reply:
        """What a request gets during the outage (:data:`RESET_REPLY`: no answer)."""
        if self.mode in ("503", "500"):
            return text_reply(int(self.mode), f"Simulated outage ({self.mode})")
        return RESET_REPLY


class _Pending:
    """A queued fault and how many more requests it will hit."""

    __slots__ = ("fault", "remaining")

    def __init__(self, fault: Fault, remaining: int) -> None:
        self.fault = fault
        self.remaining = remaining


class FaultPlan:
    """The faults waiting for their requests: FIFO per ``(session id or None, resource)``."""

    def __init__(self) -> None:
        self._pending: dict[tuple[str | None, str], deque[_Pending]] = {}

    def __bool__(self) -> bool:
        return bool(self._pending)

    def add(self, session_id: str | None, resource: str, fault: Fault, count: int = 1) -> None:
        """Queue ``fault`` for the next ``count`` requests for ``resource``.

        Raises:
            ValueError: Unknown resource, a session id for a resource that has no session,
                or a count below 1.
        """
        if resource not in FAULT_RESOURCES:
            raise ValueError(
                f"unknown resource {resource!r} (one of {', '.join(sorted(FAULT_RESOURCES))})"
            )
        if session_id is not None and resource in SESSIONLESS_RESOURCES:
            raise ValueError(f"{resource} requests have no session: use session_id=None")
        if not (isinstance(count, int) and count >= 1):
            raise ValueError(f"count must be an integer >= 1, got {count!r}")
        self._pending.setdefault((session_id, resource), deque()).append(_Pending(fault, count))

    def take(self, session_id: str | None, resource: str) -> Fault | None:
        """The fault due for this request, if any; it counts as used."""
        if not self._pending:
            return None
        key: tuple[str | None, str] = (session_id, resource)
        queue = self._pending.get(key) if session_id is not None else None
        if not queue:
            key = (None, resource)
            queue = self._pending.get(key)
            if not queue:
                return None
        head = queue[0]
        head.remaining -= 1
        if head.remaining <= 0:
            queue.popleft()
            if not queue:
                del self._pending[key]
        return head.fault

    def forget_session(self, session_id: str) -> None:
        """Drop the faults still waiting for a session that is gone."""
        if self._pending:
            for key in [k for k in self._pending if k[0] == session_id]:
                del self._pending[key]

    def clear(self) -> None:
        """Drop every waiting fault."""
        self._pending.clear()

    def pending(self) -> list[dict[str, Any]]:
        """The waiting faults, as JSON-able builtins, in the order they will hit."""
        return [
            {
                "session_id": session_id,
                "resource": resource,
                "fault": item.fault.label,
                "remaining": item.remaining,
                **msgspec.to_builtins(item.fault),
            }
            for (session_id, resource), queue in self._pending.items()
            for item in queue
        ]
