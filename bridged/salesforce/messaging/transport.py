"""HTTP for the Enhanced Chat session: REST exchanges and the event stream.

:class:`MessagingTransport` is the small interface the actor talks to; tests may replace it.
:class:`AiohttpMessagingTransport` is the real one, over one shared ``aiohttp.ClientSession``.
This module is the only place of the Enhanced Chat shell that catches aiohttp's and the
OS's exceptions: it turns them into the bridged tree (``TransportTimeout``,
``TransportConnectError``), chaining the original.

The event stream is one long ``GET`` whose body is read in whatever chunks the network
delivers (the actor feeds them to the sans-I/O SSE parser). A stream that stays silent
longer than its read timeout raises ``TransportTimeout``: "if a connection fails due to
timeout or network issues, a custom client needs defined behavior to attempt to reconnect"
(MESSAGING.md 4.3), and Salesforce's own sample treats 90 s of silence as a dead connection.
"""

from __future__ import annotations

__all__ = ["AiohttpMessagingTransport", "Answer", "EventStream", "MessagingTransport"]

import contextlib
import functools
from collections.abc import Awaitable, Callable
from typing import NamedTuple, Protocol

import aiohttp

from bridged.errors import TransportError
from bridged.salesforce.http import CLIENT_ERRORS, Pool, as_transport_error, total_timeout
from bridged.salesforce.messaging.protocol import HttpRequest

# An error body (or a stream refused) is read at most this far: Salesforce's are small JSON.
MAX_ERROR_BODY = 64 * 1024
# A REST answer is at most one page of entries (50): a generous bound all the same.
MAX_BODY = 8 * 1024 * 1024
_CHUNK = 64 * 1024


class Answer(NamedTuple):
    """An HTTP answer to a REST request: its status and body."""

    status: int
    body: bytes


class EventStream(Protocol):
    """An open answer to the stream request."""

    status: int

    @property
    def is_event_stream(self) -> bool:
        """Whether the answer is ``text/event-stream`` (the stream proper)."""
        ...

    async def read_body(self, limit: int = MAX_ERROR_BODY) -> bytes:
        """The answer's body, at most ``limit`` bytes (for a refusal's message)."""
        ...

    def read_chunk(self) -> Awaitable[bytes]:
        """The stream's next bytes, as they come; ``b""`` once the server ended the stream.

        An awaitable, not an async iterator: an async generator held by each chat for its
        stream's whole life costs it a frame and an entry in the loop's set of them. And
        the transport's own awaitable where it can: a coroutine of ours around it would be
        one more frame held by every chat (its errors are told on leaving the stream's
        context instead).

        Raises:
            TransportTimeout: nothing came within the read timeout (when awaited, or on
                leaving the stream's context).
            TransportConnectError: the connection broke (likewise).
        """
        ...


class MessagingTransport(Protocol):
    """Makes the HTTP exchanges of Enhanced Chat sessions."""

    async def exchange(self, base_url: str, request: HttpRequest, timeout: float) -> Answer:
        """Send ``request`` to ``base_url`` + its path and query; return the answer.

        Raises:
            TransportTimeout: no complete answer within ``timeout`` seconds.
            TransportConnectError: the connection failed or broke.
        """
        ...

    def stream(self, base_url: str, request: HttpRequest, connect_timeout: float,
               read_timeout: float) -> contextlib.AbstractAsyncContextManager[EventStream]:
        """Open the event stream; the context closes it (the connection is not reused).

        Raises (on entering):
            TransportTimeout: no answer within ``connect_timeout``.
            TransportConnectError: the connection failed.
        """
        ...

    async def aclose(self) -> None:
        """Release the connections. Idempotent."""
        ...


async def _read_upto(content: aiohttp.StreamReader, limit: int) -> bytes:
    """The body until its end, or its first ``limit`` bytes."""
    parts: list[bytes] = []
    size = 0
    while size < limit:
        chunk = await content.read(limit - size)
        if not chunk:
            break
        parts.append(chunk)
        size += len(chunk)
    return b"".join(parts)


@functools.lru_cache(maxsize=16)
def _stream_timeout(connect: float, read: float) -> aiohttp.ClientTimeout:
    """A stream's timeouts, made once per value (immutable; each open stream holds one)."""
    return aiohttp.ClientTimeout(total=None, connect=connect, sock_connect=connect,
                                 sock_read=read)


class _OpenStream:
    """:meth:`AiohttpMessagingTransport.stream`'s context: a slot of the streams' pool and
    the response, opened on entering and closed on leaving. A class, not a generator-based
    context manager: each chat holds one for its stream's whole life, and an async
    generator costs it a frame and an entry in the loop's set of them. It is the
    :class:`EventStream` as well: one object a chat, not two."""

    __slots__ = ("_going", "_request", "_response", "_timeout", "_url", "_what", "status")

    def __init__(self, pool: Pool, url: str, request: HttpRequest,
                 timeout: aiohttp.ClientTimeout) -> None:
        self._what = what = request.purpose.value
        self._going = pool.going(what)
        self._url = url
        self._request = request
        self._timeout = timeout
        self._response: aiohttp.ClientResponse | None = None
        self.status = 0

    async def __aenter__(self) -> _OpenStream:
        request, what = self._request, self._what
        headers = dict(request.headers)
        # The Android SDK's choices (3.1): no caching, no compression (a compressed stream
        # may hold events back in the decompressor's buffer).
        headers.setdefault("Cache-Control", "no-cache")
        headers.setdefault("Accept-Encoding", "identity")
        session = await self._going.__aenter__()
        try:
            self._response = await session.request(
                request.method, self._url, params=request.query or None, headers=headers,
                timeout=self._timeout, allow_redirects=False, read_bufsize=_CHUNK)
        except BaseException as exc:
            # Any failure, a cancellation too, gives the pool's slot back.
            await self._going.__aexit__(type(exc), exc, exc.__traceback__)
            if isinstance(exc, CLIENT_ERRORS):
                raise as_transport_error(
                    what, exc, f"no answer within {self._timeout.connect:g} s") from exc
            raise
        self.status = self._response.status
        return self

    @property
    def is_event_stream(self) -> bool:
        assert self._response is not None, "entered"
        # The media type read here, not through response.content_type: that parses the
        # header's parameters into a dict the response then keeps, 1.6 KB a chat for the
        # stream's whole life (issue 12, memory per chat).
        media_type = self._response.headers.get("Content-Type", "").partition(";")[0]
        return media_type.strip().lower() == "text/event-stream"

    async def read_body(self, limit: int = MAX_ERROR_BODY) -> bytes:
        assert self._response is not None, "entered"
        try:
            return await _read_upto(self._response.content, limit)
        except CLIENT_ERRORS as exc:
            raise as_transport_error(self._what, exc, "the body did not come in time") from exc

    def read_chunk(self) -> Awaitable[bytes]:
        assert self._response is not None, "entered"
        # aiohttp's errors while it is awaited become ours in __aexit__.
        return self._response.content.readany()

    async def __aexit__(self, exc_type: object, exc: BaseException | None,
                        traceback: object) -> None:
        try:
            if self._response is not None:
                # Never back to the pool: the server may still be writing into it.
                self._response.close()
        finally:
            await self._going.__aexit__(None, None, None)
        # What reading the stream raised (read_chunk hands out aiohttp's own awaitable);
        # ours (read_body's) are told already.
        if isinstance(exc, CLIENT_ERRORS) and not isinstance(exc, TransportError):
            raise as_transport_error(self._what, exc, "silent past the read timeout") from exc


class AiohttpMessagingTransport:
    """The real transport: two shared ``aiohttp.ClientSession`` pools for every chat.

    Each chat holds its event stream's connection for good, so streams go over a pool sized
    for the scale target (``max_connections``). The REST requests are short and go over a
    second pool of at most ``max_request_connections`` kept-alive connections shared by
    every chat, in turn: one connection per request in flight would cost a descriptor per
    chat at saturation and a TCP (and TLS) handshake per message.

    Args:
        max_connections: the streams' limit.
        keepalive_s: how long an idle REST connection is kept for the next request.
        max_request_connections: the REST requests' limit. A request's timeout starts
            once it has one of them (:class:`~bridged.salesforce.http.Pool`).
        may_send: asked right before each request goes and each stream opens (several
            nodes: the lease).
    """

    def __init__(self, max_connections: int, keepalive_s: float = 5.0,
                 max_request_connections: int = 256,
                 may_send: Callable[[], bool] | None = None) -> None:
        self._requests = Pool(max_request_connections, keepalive_s, may_send)
        self._streams = Pool(max_connections, keepalive_s, may_send)

    async def exchange(self, base_url: str, request: HttpRequest, timeout: float) -> Answer:
        # The cheapest path aiohttp allows, as the Live Agent transport's (issue 12): no
        # context manager object per request, the headers as their pairs, a ClientTimeout
        # per value.
        what = request.purpose.value
        pool = self._requests
        try:
            session = await pool.acquire(what)
            try:
                response = await session.request(
                    request.method, base_url + request.path, params=request.query,
                    headers=request.headers, data=request.body,
                    timeout=total_timeout(timeout), allow_redirects=False)
                try:
                    body = await _read_upto(response.content, MAX_BODY)
                finally:  # what leaving ``async with response`` does
                    response.release()
                    await response.wait_for_close()
            finally:
                pool.release()
            return Answer(response.status, body)
        except CLIENT_ERRORS as exc:
            raise as_transport_error(what, exc, f"no answer within {timeout:g} s") from exc

    def stream(self, base_url: str, request: HttpRequest, connect_timeout: float,
               read_timeout: float) -> contextlib.AbstractAsyncContextManager[EventStream]:
        return _OpenStream(self._streams, base_url + request.path, request,
                           _stream_timeout(connect_timeout, read_timeout))

    async def aclose(self) -> None:
        await self._streams.aclose()
        await self._requests.aclose()

