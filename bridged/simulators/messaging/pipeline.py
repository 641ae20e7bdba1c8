"""The path every Salesforce-side request takes: record, check, fault, apply, answer.

:meth:`Pipeline.serve` runs, in order: the endpoint's *check* (authentication, headers,
body, state; a refusal is answered at once, so a fault never hides a strictness error);
the fault due for the request, if any (:mod:`.faults`: ``fail`` and ``reset`` answer
instead, ``delay`` waits and then serves the request again from the top, once); the
*apply* the check returned; a fault that strikes after it; the answer. Every request is
recorded (:class:`~.records.RequestRecord`) with the status it got.

A ``reset`` is a TCP RST: ``SO_LINGER`` with a zero timeout, then ``transport.abort()``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import struct
import time
from collections.abc import Callable
from typing import Any

from aiohttp import web

from .engine import Engine
from .faults import DELAY, RESET, RESET_REPLY, Fault
from .records import RequestRecord
from .tokens import Token, TokenProblem
from .wire import Reply, decode_json, error_reply

__all__ = [
    "CLIENT_GONE",
    "Apply",
    "Check",
    "Checked",
    "Pipeline",
    "abort_connection",
    "cut_connection",
]

logger = logging.getLogger("bridged.simulators.messaging")

# Applies a request that passed its checks and that no fault stopped.
Apply = Callable[[], Reply]
# What a check finds: the conversation the request names (None if none) and either the
# refusal or the Apply that carries the request out.
Checked = tuple[str | None, Reply | Apply]
Check = Callable[[web.Request, bytes], Checked]

# The status recorded for a request whose client hung up before it was answered (nginx's
# "client closed request"); nothing is sent.
CLIENT_GONE = 499

# SO_LINGER {on, 0 s}: close() discards the socket with a RST instead of a FIN handshake.
_LINGER_RST = struct.pack("ii", 1, 0)


def abort_connection(request: web.Request) -> None:
    """Drop the request's connection with a TCP RST and no (further) HTTP answer."""
    transport = request.transport
    if transport is None or transport.is_closing():
        return
    sock = transport.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_RST)
    transport.abort()


def cut_connection(request: web.Request) -> None:
    """Close the connection in the middle of a response body, after what was written.

    The client gets every byte written so far, then the end of the connection without the
    end of the (chunked) body: an incomplete response, an error. A RST would make the
    client's kernel discard data it had not read yet.
    """
    transport = request.transport
    if transport is not None and not transport.is_closing():
        transport.close()


class Pipeline:
    """The request machinery the REST and stream endpoints share."""

    def __init__(self, engine: Engine) -> None:
        self.sim = engine

    # ---------------------------------------------------------------------------------
    # Recording and answering

    def record(
        self,
        request: web.Request,
        resource: str,
        body: bytes,
        status: int,
        conversation_id: str | None,
        label: str | None,
        arrived: float,
    ) -> None:
        """Remember one request (bounded; nothing when ``request_log_max`` is 0)."""
        options = self.sim.options
        if not options.request_log_max:
            return
        text = body[: options.body_record_max].decode("utf-8", "replace")
        self.sim.requests.append(
            RequestRecord(
                at=arrived,
                method=request.method,
                path=request.path,
                query=request.query_string,
                headers=dict(request.headers),
                body=text[: options.body_record_max],
                resource=resource,
                status=status,
                conversation_id=conversation_id,
                fault=label,
            )
        )

    def respond(
        self,
        request: web.Request,
        resource: str,
        body: bytes,
        reply: Reply,
        conversation_id: str | None,
        arrived: float,
        label: str | None = None,
    ) -> web.Response:
        """Record the request and answer it, or reset its connection for ``RESET_REPLY``."""
        self.record(request, resource, body, reply.status, conversation_id, label, arrived)
        if reply.status == RESET_REPLY.status:
            abort_connection(request)
            # Never sent: aiohttp finds the transport closing and drops it as a disconnect.
            return web.Response(status=204)
        if reply.status >= 500:
            logger.debug("%s %s -> %d", request.method, request.path, reply.status)
        response = web.Response(status=reply.status, body=reply.body or None,
                                headers=dict(reply.headers) or None)
        if reply.content_type is not None:
            response.content_type = reply.content_type
        return response

    # ---------------------------------------------------------------------------------
    # Faults

    def due(self, conversation_id: str | None, resource: str,
            served: Fault | None) -> Fault | None:
        """The fault of this request: the delay it already served, or the plan's next one."""
        if served is not None:
            return served
        fault = self.sim.plan.take(conversation_id, resource)
        if fault is not None:
            self.sim.note_fault(conversation_id, resource, fault.label)
        return fault

    async def serve(
        self, request: web.Request, resource: str, check: Check
    ) -> web.StreamResponse:
        """Serve one REST request (see the module docstring for the order).

        A client that hangs up during an injected delay (the shell cancels the handler) is
        recorded with status :data:`CLIENT_GONE`.
        """
        arrived = time.time()
        body = await request.read()
        seen: list[tuple[str | None, str | None]] = [(None, None)]
        try:
            return await self._serve(request, resource, check, body, arrived, None, seen)
        except asyncio.CancelledError:
            conversation_id, label = seen[-1]
            self.record(request, resource, body, CLIENT_GONE, conversation_id, label, arrived)
            raise

    async def _serve(
        self,
        request: web.Request,
        resource: str,
        check: Check,
        body: bytes,
        arrived: float,
        served: Fault | None,
        seen: list[tuple[str | None, str | None]],
    ) -> web.StreamResponse:
        conversation_id, checked = check(request, body)
        if isinstance(checked, Reply):
            return self.respond(request, resource, body, checked, conversation_id, arrived)
        fault = self.due(conversation_id, resource, served)
        label = fault.label if fault is not None else None
        seen.append((conversation_id, label))
        if fault is not None and fault is not served and not fault.after:
            if fault.kind == DELAY:
                await self.sim.pause(fault.seconds)
                return await self._serve(request, resource, check, body, arrived, fault, seen)
            return self.respond(request, resource, body, fault.reply, conversation_id,
                                arrived, label)
        reply = checked()
        if fault is not None and fault.after:
            if fault.kind == RESET:
                reply = RESET_REPLY
            else:
                await self.sim.pause(fault.seconds)
        return self.respond(request, resource, body, reply, conversation_id, arrived, label)

    # ---------------------------------------------------------------------------------
    # Checks every endpoint shares

    def authenticate(self, request: web.Request) -> Token | str:
        """The bearer token of the request, or why it is refused (the 401's message)."""
        header = request.headers.get("Authorization")
        if not header:
            return "Missing Authorization header"
        scheme, _, raw = header.partition(" ")
        if scheme.lower() != "bearer" or not raw.strip():
            return "The Authorization header must be 'Bearer <accessToken>'"
        checked = self.sim.tokens.check(raw.strip(), time.time())
        if isinstance(checked, TokenProblem):
            return checked.message
        return checked

    def token(self, request: web.Request) -> Token | Reply:
        """The bearer token of a REST request, or its 401 (MESSAGING.md 2.0, 4.5)."""
        checked = self.authenticate(request)
        if isinstance(checked, str):
            return error_reply(401, checked)
        return checked

    def json_body(self, request: web.Request, body: bytes) -> Any | Reply:
        """The parsed JSON body of a POST, or 400 (wrong Content-Type, malformed JSON)."""
        if request.content_type != "application/json":
            return error_reply(400, "Content-Type must be application/json")
        return decode_json(body)
