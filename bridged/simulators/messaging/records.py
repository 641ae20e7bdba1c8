"""What the simulator remembers for tests to assert on: requests and stream openings. Pure.

Both are bounded (``request_log_max``, ``record_max``). A :class:`RequestRecord` is written
for every request that reached a handler, including the refused ones and the stream
openings; a :class:`StreamRecord` for every stream that was opened (status 200), updated
while it lives: the ids it replayed and delivered, in order, so a test can check the
order, gaps and duplicates, and how many streams of the same token were open at once.
"""

from __future__ import annotations

from collections import deque
from typing import Any

import msgspec

__all__ = ["RequestRecord", "StreamRecord"]


class RequestRecord(msgspec.Struct, frozen=True, kw_only=True, gc=False):
    """One request as the simulator saw it, with the status it answered.

    Attributes:
        at: Wall-clock time of arrival (epoch seconds).
        method: HTTP method.
        path: Request path.
        query: Raw query string.
        headers: Every request header (the last value of a repeated one).
        body: The body as text (UTF-8, undecodable bytes replaced), cut to
            ``body_record_max`` characters.
        resource: The simulator's name of the endpoint (``SendMessage``, ``Stream``...).
        status: The status answered; 0 when the connection was reset instead (a fault);
            499 when the client hung up before the answer (during an injected delay).
        conversation_id: The conversation the path names, if any.
        fault: The label of the fault injected into this request, None for a normal one.
    """

    at: float
    method: str
    path: str
    query: str
    headers: dict[str, str]
    body: str
    resource: str
    status: int
    conversation_id: str | None = None
    fault: str | None = None


class StreamRecord:
    """One opened event stream, updated while it lives.

    Attributes:
        number: Openings counted from 1.
        opened_at: Wall-clock time it opened.
        closed_at: Wall-clock time it closed, None while open.
        close_reason: ``client_gone``, ``conversation_closed``, ``token_expired``,
            ``replaced``, ``dropped``, ``too_slow``, ``shutdown``; None while open.
        jwt_id: The token's ``jwtId``.
        subject: The token's ``sub``.
        headers: The request headers.
        last_event_id: The ``Last-Event-Id`` header as sent (None if absent).
        replayed: Ids replayed from the buffer, in order.
        delivered: Every id written (replayed first), in order, bounded.
        pings: Keep-alives written.
        concurrent: Other open streams of the same token when it opened.
    """

    __slots__ = (
        "close_reason",
        "closed_at",
        "concurrent",
        "delivered",
        "headers",
        "jwt_id",
        "last_event_id",
        "number",
        "opened_at",
        "pings",
        "replayed",
        "subject",
    )

    def __init__(
        self,
        *,
        number: int,
        opened_at: float,
        jwt_id: str,
        subject: str,
        headers: dict[str, str],
        last_event_id: str | None,
        concurrent: int,
        record_max: int,
    ) -> None:
        self.number = number
        self.opened_at = opened_at
        self.closed_at: float | None = None
        self.close_reason: str | None = None
        self.jwt_id = jwt_id
        self.subject = subject
        self.headers = headers
        self.last_event_id = last_event_id
        self.replayed: list[str] = []
        self.delivered: deque[str] = deque(maxlen=record_max)
        self.pings = 0
        self.concurrent = concurrent

    @property
    def is_open(self) -> bool:
        """True until the stream closed."""
        return self.closed_at is None

    def as_dict(self) -> dict[str, Any]:
        """The record as JSON-able builtins."""
        return {
            "number": self.number,
            "opened_at": self.opened_at,
            "closed_at": self.closed_at,
            "close_reason": self.close_reason,
            "jwt_id": self.jwt_id,
            "subject": self.subject,
            "headers": dict(self.headers),
            "last_event_id": self.last_event_id,
            "replayed": list(self.replayed),
            "delivered": list(self.delivered),
            "pings": self.pings,
            "concurrent": self.concurrent,
        }
