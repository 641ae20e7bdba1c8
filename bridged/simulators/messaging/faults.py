"""Fault injection: what the simulator was told to do wrong, and what it did. Pure.

The shell (``app.py``) asks :class:`FaultPlan` once per request, after the request passed
its checks (so a fault never hides a strictness error), whether a fault is due for this
``(conversation id or None, resource)``. Faults wait in a FIFO per key; a conversation's
own faults come before the any-conversation ones. Each fault serves ``count`` requests and
is then gone. Nothing here holds a timer or a task.

=========  ========  ==========================================================================
kind       when      effect
=========  ========  ==========================================================================
``fail``   (before)  answer ``status`` with a JSON error body at once; not applied. On
                     ``Stream`` this is "the stream answers 5xx".
``reset``  before    close the TCP connection (RST) without an answer; not applied
``reset``  after     apply the request (a message is accepted and echoed), then close the
                     connection unanswered, so the client cannot know
``delay``  before    wait ``seconds``, then handle the request as if it just arrived
``delay``  after     apply the request, then wait ``seconds`` before answering
=========  ========  ==========================================================================

Stream faults besides those: :class:`StreamDrop` (the next ``count`` streams opened are cut
after ``after_events`` events, or end cleanly there), and in the engine "drop the open
streams now", "expire tokens now" and "replay off". A cut stream's connection closes in the
middle of the body, after the events written (the client reads them, then an incomplete
response); a RST would lose them in the client's kernel.

Every fault that hit a request is remembered as an :class:`InjectedFault`, and the
request's :class:`~.records.RequestRecord` carries the fault's label.
"""

from __future__ import annotations

from collections import deque
from typing import Any

import msgspec

from ..common import AFTER, BEFORE, DELAY, FAIL, RESET, check_fault
from .wire import Reply, error_reply

__all__ = [
    "AFTER",
    "BEFORE",
    "CONVERSATIONLESS",
    "DELAY",
    "FAIL",
    "RESET",
    "RESET_REPLY",
    "RESOURCES",
    "Fault",
    "FaultPlan",
    "InjectedFault",
    "StreamDrop",
]


# The reply that is not one: the shell resets the connection instead.
RESET_REPLY = Reply(status=0)

# The endpoints of MESSAGING.md 2.15, by the simulator's names.
RESOURCES = frozenset(
    {
        "AccessToken",
        "ContinuationToken",
        "CreateConversation",
        "SendMessage",
        "Typing",
        "Acknowledge",
        "ListConversations",
        "ListEntries",
        "GetConversation",
        "CloseConversation",
        "EndSession",
        "SendFile",
        "Stream",
    }
)

# Resources whose requests name no conversation: only any-conversation faults reach them.
CONVERSATIONLESS = frozenset({"AccessToken", "ContinuationToken", "ListConversations",
                              "Stream"})


class Fault(msgspec.Struct, frozen=True, kw_only=True):
    """One kind of misbehaviour, applied to one request.

    Attributes:
        kind: ``fail``, ``reset`` or ``delay``.
        when: ``before`` (the request is not applied first) or ``after`` (it is).
        seconds: For ``delay``: how long.
        status: For ``fail``: the HTTP status answered.
        message: For ``fail``: the ``message`` of the JSON error body.
    """

    kind: str
    when: str = BEFORE
    seconds: float = 0.0
    status: int = 0
    message: str = "Simulated failure"

    def __post_init__(self) -> None:
        check_fault(self.kind, self.when, self.status, self.seconds)

    @property
    def label(self) -> str:
        """What request records show: ``fail_503``, ``reset_after``, ``delay_before``..."""
        if self.kind == FAIL:
            return f"fail_{self.status}"
        return f"{self.kind}_{self.when}"

    @property
    def after(self) -> bool:
        """True if the request is applied first (a ``fail`` never is)."""
        return self.kind != FAIL and self.when == AFTER

    @property
    def reply(self) -> Reply:
        """The answer of a ``fail``, or :data:`RESET_REPLY` for a ``reset``."""
        if self.kind == FAIL:
            return error_reply(self.status, self.message)
        return RESET_REPLY


class StreamDrop(msgspec.Struct, frozen=True, kw_only=True):
    """Cut a stream after ``after_events`` events (0: right after it opened).

    ``abort`` True cuts the connection mid-body (the client sees an error after the events);
    False ends the body cleanly (the client sees the stream end).
    """

    after_events: int
    abort: bool = True

    def __post_init__(self) -> None:
        if not (isinstance(self.after_events, int) and self.after_events >= 0):
            raise ValueError(f"after_events must be an integer >= 0, got {self.after_events!r}")

    @property
    def label(self) -> str:
        """``drop_after_<n>`` (cut) or ``end_after_<n>`` (clean end)."""
        return f"{'drop' if self.abort else 'end'}_after_{self.after_events}"


class InjectedFault(msgspec.Struct, frozen=True, kw_only=True, gc=False):
    """Fact: a fault hit a request or a stream.

    Attributes:
        at: Wall-clock time (epoch seconds) when it hit.
        conversation_id: The request's conversation, None when it names none.
        resource: The resource the request was for.
        fault: The fault's label (``reset_after``, ``drop_after_3``, ``drop_now``...).
    """

    at: float
    conversation_id: str | None
    resource: str
    fault: str


class _Pending:
    """A queued fault and how many more requests it will hit."""

    __slots__ = ("fault", "remaining")

    def __init__(self, fault: Fault | StreamDrop, remaining: int) -> None:
        self.fault = fault
        self.remaining = remaining


def _check_count(count: int) -> None:
    if not (isinstance(count, int) and count >= 1):
        raise ValueError(f"count must be an integer >= 1, got {count!r}")


class FaultPlan:
    """The faults waiting for their requests: FIFO per ``(conversation or None, resource)``,
    and the stream drops waiting for the next streams."""

    def __init__(self) -> None:
        self._pending: dict[tuple[str | None, str], deque[_Pending]] = {}
        self._drops: deque[_Pending] = deque()

    def __bool__(self) -> bool:
        return bool(self._pending)

    def add(
        self, conversation_id: str | None, resource: str, fault: Fault, count: int = 1
    ) -> None:
        """Queue ``fault`` for the next ``count`` requests for ``resource``.

        Raises:
            ValueError: Unknown resource, a conversation for a resource that names none,
                or a count below 1.
        """
        if resource not in RESOURCES:
            raise ValueError(
                f"unknown resource {resource!r} (one of {', '.join(sorted(RESOURCES))})"
            )
        if conversation_id is not None and resource in CONVERSATIONLESS:
            raise ValueError(f"{resource} requests name no conversation: use None")
        _check_count(count)
        key = (conversation_id, resource)
        self._pending.setdefault(key, deque()).append(_Pending(fault, count))

    def take(self, conversation_id: str | None, resource: str) -> Fault | None:
        """The fault due for this request, if any; it counts as used."""
        if not self._pending:
            return None
        key: tuple[str | None, str] = (conversation_id, resource)
        queue = self._pending.get(key) if conversation_id is not None else None
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
        assert isinstance(head.fault, Fault)
        return head.fault

    def add_drop(self, drop: StreamDrop, count: int = 1) -> None:
        """Cut the next ``count`` streams opened as ``drop`` says."""
        _check_count(count)
        self._drops.append(_Pending(drop, count))

    def take_drop(self) -> StreamDrop | None:
        """The drop due for the stream opening now, if any; it counts as used."""
        if not self._drops:
            return None
        head = self._drops[0]
        head.remaining -= 1
        if head.remaining <= 0:
            self._drops.popleft()
        assert isinstance(head.fault, StreamDrop)
        return head.fault

    def forget_conversation(self, conversation_id: str) -> None:
        """Drop the faults still waiting for a conversation that is gone."""
        for key in [k for k in self._pending if k[0] == conversation_id]:
            del self._pending[key]

    def clear(self) -> None:
        """Drop every waiting fault."""
        self._pending.clear()
        self._drops.clear()

    def pending(self) -> list[dict[str, Any]]:
        """The waiting faults, as JSON-able builtins, in the order they will hit."""
        out: list[dict[str, Any]] = [
            {
                "conversation_id": conversation_id,
                "resource": resource,
                "fault": item.fault.label,
                "remaining": item.remaining,
                **msgspec.to_builtins(item.fault),
            }
            for (conversation_id, resource), queue in self._pending.items()
            for item in queue
        ]
        out.extend(
            {"conversation_id": None, "resource": "Stream", "fault": item.fault.label,
             "remaining": item.remaining, **msgspec.to_builtins(item.fault)}
            for item in self._drops
        )
        return out
