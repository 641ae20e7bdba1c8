"""Open event streams and the replay buffers behind them.

The stream belongs to the token's **subject**, not to a conversation (MESSAGING.md 3.1):
every event of any conversation of the subject goes to every open stream of the subject,
and into the subject's replay buffer (the last ``replay_depth`` events), from which a
stream opened with ``Last-Event-Id: n`` first gets every buffered event after ``n``.

An :class:`EventStream` is a bounded mailbox between the emitter (synchronous, in the
simulator) and the handler that writes to the socket (``app.py``): frames wait in a deque
of at most ``max_pending``; a stream that falls further behind is cut as ``too_slow``
instead of buffering without bound. One ``asyncio.Event`` wakes the writer; no task or
queue per stream.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque

from .records import StreamRecord

__all__ = ["EventStream", "ReplayBuffer", "StreamHub"]


class ReplayBuffer:
    """The last ``depth`` events of one subject: ``(number, id, frame)``, oldest first."""

    __slots__ = ("_events", "last_id")

    def __init__(self, depth: int) -> None:
        self._events: deque[tuple[int, str, bytes]] = deque(maxlen=depth)
        self.last_id: str | None = None

    def add(self, number: int, event_id: str, frame: bytes) -> None:
        """Keep one event (the oldest falls out at ``depth``)."""
        if self._events.maxlen:
            self._events.append((number, event_id, frame))
        self.last_id = event_id

    def after(self, number: int) -> list[tuple[str, bytes]]:
        """The buffered events numbered above ``number``, oldest first."""
        return [(eid, frame) for num, eid, frame in self._events if num > number]


class EventStream:
    """One open SSE connection's mailbox.

    Attributes:
        record: Its :class:`~.records.StreamRecord`.
        jwt_id: The token it was opened with.
        closing: Why it is to close (None while it lives); the writer ends on it.
        abort: Cut the connection in the middle of the body instead of ending it.
        drain: Write what is pending before closing (a clean close after the last event).
        drop_after: Cut the stream after this many events (an injected drop), or None.
    """

    __slots__ = (
        "_pending",
        "_wakeup",
        "abort",
        "closing",
        "drain",
        "drop_abort",
        "drop_after",
        "jwt_id",
        "max_pending",
        "record",
        "timer",
        "written",
    )

    def __init__(
        self,
        record: StreamRecord,
        jwt_id: str,
        max_pending: int,
        *,
        drop_after: int | None = None,
        drop_abort: bool = True,
    ) -> None:
        self.record = record
        self.jwt_id = jwt_id
        self.max_pending = max_pending
        self.closing: str | None = None
        self.abort = False
        self.drain = False
        self.drop_after = drop_after
        self.drop_abort = drop_abort
        self.written = 0
        self.timer: asyncio.TimerHandle | None = None
        self._pending: deque[tuple[str, bytes]] = deque()
        self._wakeup = asyncio.Event()

    def preload(self, events: list[tuple[str, bytes]]) -> None:
        """Queue the replayed events before any live one (not counted against the bound)."""
        self._pending.extend(events)
        if events:
            self._wakeup.set()

    def offer(self, event_id: str, frame: bytes) -> None:
        """Queue one event for the writer; a stream too far behind is cut instead."""
        if self.closing is not None:
            return
        if len(self._pending) >= self.max_pending:
            self.close("too_slow", abort=True)
            return
        self._pending.append((event_id, frame))
        self._wakeup.set()

    def close(self, reason: str, *, abort: bool = False, drain: bool = False) -> None:
        """Ask the writer to end the stream (the first reason given wins)."""
        if self.closing is None:
            self.closing = reason
            self.abort = abort
            self.drain = drain
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        self._wakeup.set()

    async def next(self, timeout: float) -> tuple[str, bytes] | None:
        """The next event to write, or None after ``timeout`` seconds of nothing (a ping).

        Raises:
            StreamClosing: The stream is to close now (after draining, if asked).
        """
        while True:
            if self.closing is not None and not (self.drain and self._pending):
                raise StreamClosing(self.closing)
            if self._pending:
                return self._pending.popleft()
            self._wakeup.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout):
                    await self._wakeup.wait()
                    continue
            return None


class StreamClosing(Exception):
    """Raised by :meth:`EventStream.next` when the stream is to close."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class StreamHub:
    """Every open stream by subject, and every subject's replay buffer.

    Args:
        replay_depth: Events kept per subject (0 keeps none).
    """

    def __init__(self, replay_depth: int) -> None:
        self.replay_depth = replay_depth
        self.replay_enabled = True
        self._buffers: dict[str, ReplayBuffer] = {}
        self._open: dict[str, list[EventStream]] = {}
        # The same streams by token, so that opening one is not a scan of all of them (a
        # load test holds 10,000).
        self._by_token: dict[str, list[EventStream]] = {}

    def publish(self, subject: str, number: int, event_id: str, frame: bytes) -> None:
        """One event of ``subject``: into its buffer and to its open streams."""
        buffer = self._buffers.get(subject)
        if buffer is None:
            buffer = self._buffers[subject] = ReplayBuffer(self.replay_depth)
        buffer.add(number, event_id, frame)
        for stream in self._open.get(subject, ()):
            stream.offer(event_id, frame)

    def last_id(self, subject: str) -> str | None:
        """The id of the subject's latest event, None before its first."""
        buffer = self._buffers.get(subject)
        return None if buffer is None else buffer.last_id

    def replay(self, subject: str, after: int) -> list[tuple[str, bytes]]:
        """The buffered events of ``subject`` after event number ``after`` (none if off)."""
        buffer = self._buffers.get(subject)
        if buffer is None or not self.replay_enabled:
            return []
        return buffer.after(after)

    def attach(self, subject: str, stream: EventStream) -> None:
        """Register an open stream of ``subject``."""
        self._open.setdefault(subject, []).append(stream)
        self._by_token.setdefault(stream.jwt_id, []).append(stream)

    def detach(self, subject: str, stream: EventStream) -> None:
        """Forget a stream that closed."""
        for index, key in ((self._open, subject), (self._by_token, stream.jwt_id)):
            streams = index.get(key)
            if streams is not None and stream in streams:
                streams.remove(stream)
                if not streams:
                    del index[key]

    def of_subject(self, subject: str) -> list[EventStream]:
        """The open streams of ``subject``."""
        return list(self._open.get(subject, ()))

    def of_token(self, jwt_id: str) -> list[EventStream]:
        """The open streams opened with token ``jwt_id``."""
        return list(self._by_token.get(jwt_id, ()))

    def all(self) -> list[EventStream]:
        """Every open stream."""
        return [s for streams in self._open.values() for s in streams]

    def forget_subject(self, subject: str) -> None:
        """Drop the replay buffer of a subject that is gone (its tokens reaped)."""
        if subject not in self._open:
            self._buffers.pop(subject, None)
