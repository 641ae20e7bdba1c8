"""The event stream endpoint, ``GET /eventrouter/v1/sse`` (MESSAGING.md 3).

Checks, in order: ``Authorization: Bearer`` with a live token (401, with the Spring-style
JSON body seen in the field: ``{"timestamp", "status": 401, "error": "Unauthorized",
"message": "Jwt is expired", "path"}``); ``Accept: text/event-stream`` (400); ``X-Org-Id``
equal to the token's 15-character ``orgId`` (400 ``OrgId in the header and token must
match``; switch: ``require_org_id_header``); ``Last-Event-Id`` present (switch:
``require_last_event_id``) and one of ours (400); a second stream of the same token
(``second_stream``: 409, or the old one is replaced, or both live). Unknown query
parameters (the sample's ``?_ts=`` cache buster) are ignored. Then the fault due, if any
(``fail``: the stream answers that status; ``reset``: no answer; ``delay``: the headers come
late).

An opened stream first gets the subject's buffered events after ``Last-Event-Id`` (none
with ``replay_depth`` 0 or replay turned off), then every new event of the subject, and a
``ping`` after each ``ping_interval_s`` of silence. It ends (cleanly) when the visitor
closed the subject's last open conversation (``close_stream_on_close``), when the token
expires, when a newer stream replaces it, or on shutdown; it is cut (the connection closes
in the middle of the body, after the events written: an incomplete response) by an injected
drop or when it falls ``stream_pending_max`` events behind.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import time

from aiohttp import web

from .engine import Engine
from .faults import DELAY, Fault
from .pipeline import CLIENT_GONE, Pipeline, cut_connection
from .records import StreamRecord
from .sse import PING_FRAME, parse_event_id
from .streams import EventStream, StreamClosing
from .tokens import Token
from .wire import ORG_MISMATCH_TEXT, STREAM_PATH, Reply, encode, error_reply

__all__ = ["StreamApi"]

_RESOURCE = "Stream"


def _unauthorized(message: str) -> Reply:
    """The stream's 401: Spring Security's JSON shape, with the message in it."""
    now = datetime.datetime.now(datetime.UTC).isoformat(timespec="milliseconds")
    body = {"timestamp": now, "status": 401, "error": "Unauthorized", "message": message,
            "path": STREAM_PATH}
    return Reply(status=401, body=encode(body), content_type="application/json")


class StreamApi:
    """The stream endpoint of one simulator (its :class:`~.engine.Engine` and pipeline)."""

    def __init__(self, engine: Engine, pipeline: Pipeline) -> None:
        self.sim = engine
        self.pipeline = pipeline
        self._requests: dict[EventStream, web.Request] = {}

    def add_routes(self, router: web.UrlDispatcher) -> None:
        """Register ``GET /eventrouter/v1/sse``."""
        router.add_get(STREAM_PATH, self._handle)

    def _gone(self, stream: EventStream) -> bool:
        request = self._requests.get(stream)
        transport = request.transport if request is not None else None
        return transport is None or transport.is_closing()

    def _live_streams(self, token: Token) -> list[EventStream]:
        """The token's streams still open; ones whose client went away are closed first."""
        live = []
        for stream in self.sim.hub.of_token(token.jwt_id):
            if stream.closing is not None:
                continue
            if self._gone(stream):
                stream.close("client_gone")
                continue
            live.append(stream)
        return live

    def _check(self, request: web.Request) -> tuple[Token, int | None] | Reply:
        opts = self.sim.options
        token = self.pipeline.authenticate(request)
        if isinstance(token, str):
            return _unauthorized(token)
        if "text/event-stream" not in request.headers.get("Accept", ""):
            return error_reply(400, "The Accept header must be text/event-stream")
        if opts.require_org_id_header:
            org = request.headers.get("X-Org-Id")
            if org is None:
                return error_reply(400, "Specify the X-Org-Id header")
            if org != token.org_id:
                return error_reply(400, ORG_MISMATCH_TEXT)
        raw = request.headers.get("Last-Event-Id")
        after: int | None = None
        if raw is None:
            if opts.require_last_event_id:
                return error_reply(400, "Specify the Last-Event-Id header")
        else:
            after = parse_event_id(raw)
            if after is None:
                return error_reply(400, "Invalid Last-Event-Id")
        if opts.second_stream == "refuse" and self._live_streams(token):
            return error_reply(409, "An event stream is already open for this access token")
        return token, after

    async def _handle(
        self, request: web.Request, served: Fault | None = None, arrived: float | None = None
    ) -> web.StreamResponse:
        arrived = time.time() if arrived is None else arrived
        pipeline = self.pipeline
        body = await request.read()
        checked = self._check(request)
        if isinstance(checked, Reply):
            return pipeline.respond(request, _RESOURCE, body, checked, None, arrived)
        fault = pipeline.due(None, _RESOURCE, served)
        if fault is not None and fault is not served:
            if fault.kind == DELAY:
                try:
                    await self.sim.pause(fault.seconds)
                except asyncio.CancelledError:  # the client hung up meanwhile
                    pipeline.record(request, _RESOURCE, body, CLIENT_GONE, None, fault.label,
                                    arrived)
                    raise
                return await self._handle(request, fault, arrived)
            return pipeline.respond(request, _RESOURCE, body, fault.reply, None, arrived,
                                    fault.label)
        token, after = checked
        label = fault.label if fault is not None else None
        return await self._open(request, token, after, body, arrived, label)

    async def _open(
        self,
        request: web.Request,
        token: Token,
        after: int | None,
        body: bytes,
        arrived: float,
        label: str | None,
    ) -> web.StreamResponse:
        sim, opts = self.sim, self.sim.options
        live = self._live_streams(token)
        if opts.second_stream == "replace":
            for old in live:
                old.close("replaced")
        record = StreamRecord(
            number=sim.next_stream_number(), opened_at=time.time(), jwt_id=token.jwt_id,
            subject=token.subject, headers=dict(request.headers),
            last_event_id=request.headers.get("Last-Event-Id"), concurrent=len(live),
            record_max=opts.record_max)
        drop = sim.plan.take_drop()
        if drop is not None:
            sim.note_fault(None, _RESOURCE, drop.label)
            label = drop.label
        stream = EventStream(
            record, token.jwt_id, opts.stream_pending_max,
            drop_after=drop.after_events if drop is not None else None,
            drop_abort=drop.abort if drop is not None else True)
        # Replay and attach in one step: no event can fall between the two.
        replay = sim.hub.replay(token.subject, after) if after is not None else []
        stream.preload(replay)
        record.replayed = [event_id for event_id, _ in replay]
        sim.hub.attach(token.subject, stream)
        self._requests[stream] = request
        sim.streams.append(record)
        self.pipeline.record(request, _RESOURCE, body, 200, None, label, arrived)
        stream.timer = sim.schedule(token.expires_at - time.time(),
                                    lambda: stream.close("token_expired"))
        if sim.closed:
            stream.close("shutdown")
        if stream.drop_after == 0:
            stream.close("dropped", abort=stream.drop_abort)
        response = web.StreamResponse(
            status=200, headers={"Content-Type": "text/event-stream",
                                 "Cache-Control": "no-cache"})
        reason = "client_gone"
        try:
            await response.prepare(request)
            reason = await self._pump(request, stream, response)
        except ConnectionError:
            reason = "client_gone"
        finally:
            stream.close(reason)
            sim.hub.detach(token.subject, stream)
            self._requests.pop(stream, None)
            record.closed_at = time.time()
            record.close_reason = stream.closing
        return response

    async def _pump(
        self, request: web.Request, stream: EventStream, response: web.StreamResponse
    ) -> str:
        """Write events and pings until the stream is to close; the reason it closed."""
        record = stream.record
        interval = self.sim.options.ping_interval_s
        while True:
            try:
                item = await stream.next(interval)
            except StreamClosing as closing:
                if stream.abort:
                    cut_connection(request)
                else:
                    with contextlib.suppress(ConnectionError):
                        await response.write_eof()
                return closing.reason
            if item is None:
                await response.write(PING_FRAME)
                record.pings += 1
                continue
            event_id, frame = item
            await response.write(frame)
            record.delivered.append(event_id)
            stream.written += 1
            if stream.drop_after is not None and stream.written >= stream.drop_after:
                # Let the client read what it got: aiohttp's client, for one, drops what
                # it has not read yet once the connection breaks.
                await self.sim.pause(self.sim.options.stream_drop_grace_s)
                stream.close("dropped", abort=stream.drop_abort)
