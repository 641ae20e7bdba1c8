"""HTTP for the Live Agent session: the seam between the sans-I/O core and the network.

:class:`Transport` is the small interface the actor talks to; tests replace it with a
scripted one. :class:`AiohttpTransport` is the real one. This module is the only place
that catches aiohttp's and the OS's exceptions: it turns them into the bridged tree
(``TransportTimeout``, ``TransportConnectError``), chaining the original.
"""

from __future__ import annotations

__all__ = ["AiohttpTransport", "Transport"]

from collections.abc import Callable
from typing import Protocol

from bridged.salesforce.http import (
    CLIENT_ERRORS,
    HELD_KEEPALIVE_S,
    Pool,
    as_transport_error,
    total_timeout,
)
from bridged.salesforce.liveagent.protocol import HttpRequest, HttpResponse, Lane


class Transport(Protocol):
    """Makes one HTTP exchange for a Live Agent session."""

    async def exchange(self, base_url: str, request: HttpRequest, timeout: float) -> HttpResponse:
        """Send ``request`` to ``base_url`` + ``request.path`` and return the answer.

        Raises:
            TransportTimeout: no complete answer within ``timeout`` seconds.
            TransportConnectError: the connection failed or broke.
        """
        ...

    async def aclose(self) -> None:
        """Release the connections. Idempotent."""
        ...


class AiohttpTransport:
    """The real transport: two shared ``aiohttp.ClientSession`` pools for every chat.

    A chat's long poll holds a connection of its own for as long as Salesforce holds the
    poll, so polls go over a pool sized for the scale target (``max_connections``). Every
    other request (the POSTs, SessionId) is short and goes over a second pool of at most
    ``max_request_connections`` kept-alive connections shared by every chat, in turn: one
    connection per request in flight would cost a descriptor per chat at saturation (a
    chat sends now and then, thousands of chats send all the time) and a TCP (and TLS)
    handshake per message.

    Args:
        max_connections: the polls' limit. aiohttp's default of 100 would serialise
            thousands of outstanding long polls, so it is sized for the scale target.
        keepalive_s: how long an idle connection is kept for the next POST (a poll's, at
            least ``HELD_KEEPALIVE_S``).
        max_request_connections: the other requests' limit. A request's timeout starts
            once it has one of them (:class:`~bridged.salesforce.http.Pool`).
        may_send: asked right before each request goes (several nodes: the lease).
    """

    def __init__(self, max_connections: int, keepalive_s: float = 5.0,
                 max_request_connections: int = 256,
                 may_send: Callable[[], bool] | None = None) -> None:
        self._polls = Pool(max_connections, max(keepalive_s, HELD_KEEPALIVE_S), may_send)
        self._posts = Pool(max_request_connections, keepalive_s, may_send)

    async def exchange(self, base_url: str, request: HttpRequest, timeout: float) -> HttpResponse:
        # The cheapest path aiohttp allows (issue 12): the slot taken and given back without
        # a context manager object, the answer read and released without one either (what
        # ``async with`` on the request and on its response would do), the headers handed
        # over as the pairs they are (aiohttp copies them into its own multidict anyway),
        # a ClientTimeout per value, not per request.
        pool = self._polls if request.lane is Lane.POLL else self._posts
        try:
            session = await pool.acquire(request.purpose.value)
            try:
                response = await session.request(
                    request.method, base_url + request.path, params=request.query,
                    headers=request.headers, data=request.body,
                    timeout=total_timeout(timeout), allow_redirects=False)
                try:
                    body = await response.read()
                except BaseException:  # what leaving ``async with response`` does
                    response.release()
                    await response.wait_for_close()
                    raise
                # read() waited for the request's writer: release() is all that is left.
                response.release()
            finally:
                pool.release()
            return HttpResponse(status=response.status, body=body)
        except CLIENT_ERRORS as exc:
            raise as_transport_error(
                request.purpose.value, exc, f"no answer within {timeout:g} s") from exc

    async def aclose(self) -> None:
        await self._polls.aclose()
        await self._posts.aclose()
