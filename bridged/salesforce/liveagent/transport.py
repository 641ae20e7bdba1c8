"""HTTP for the Live Agent session: the seam between the sans-I/O core and the network.

:class:`Transport` is the small interface the actor talks to; tests replace it with a
scripted one. :class:`AiohttpTransport` is the real one. This module is the only place
that catches aiohttp's and the OS's exceptions: it turns them into the bridged tree
(``TransportTimeout``, ``TransportConnectError``), chaining the original.
"""

from __future__ import annotations

__all__ = ["AiohttpTransport", "Transport"]

from typing import Protocol

import aiohttp

from bridged.errors import TransportConnectError, TransportTimeout
from bridged.salesforce.liveagent.protocol import HttpRequest, HttpResponse


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
    """The real transport: one shared ``aiohttp.ClientSession`` for every chat.

    Args:
        max_connections: the connector's limit. aiohttp's default of 100 would serialise
            thousands of outstanding long polls, so it is sized for the scale target.
    """

    def __init__(self, max_connections: int, keepalive_s: float = 5.0) -> None:
        self._max_connections = max_connections
        self._keepalive_s = keepalive_s
        self._session: aiohttp.ClientSession | None = None

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None:
            # An idle connection is kept a few seconds only: a chat's long poll holds one
            # connection for good, and a POST connection per chat kept for long would
            # double the descriptors thousands of chats need.
            connector = aiohttp.TCPConnector(
                limit=self._max_connections,
                limit_per_host=0,
                ttl_dns_cache=300,
                keepalive_timeout=self._keepalive_s,
            )
            # No automatic redirects: a redirect could lead a session key to a host that
            # salesforce.allowed_hosts never allowed.
            self._session = aiohttp.ClientSession(
                connector=connector, auto_decompress=True, raise_for_status=False,
                skip_auto_headers=("User-Agent",),
            )
        return self._session

    async def exchange(self, base_url: str, request: HttpRequest, timeout: float) -> HttpResponse:
        session = self._client()
        try:
            async with session.request(
                request.method,
                base_url + request.path,
                params=request.query or None,
                headers=dict(request.headers),
                data=request.body,
                timeout=aiohttp.ClientTimeout(total=timeout),
                allow_redirects=False,
            ) as response:
                body = await response.read()
                return HttpResponse(status=response.status, body=body)
        except TimeoutError as exc:
            raise TransportTimeout(
                f"{request.purpose.value}: no answer within {timeout:g} s") from exc
        except (aiohttp.ClientError, OSError) as exc:
            raise TransportConnectError(
                f"{request.purpose.value}: {type(exc).__name__}: {exc}") from exc

    async def aclose(self) -> None:
        if self._session is not None:
            session, self._session = self._session, None
            await session.close()
