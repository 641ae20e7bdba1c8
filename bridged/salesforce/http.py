"""What both backends' HTTP clients share: how a session is made, and the slots requests go in.

bridged, not aiohttp, queues the requests waiting for a connection of a capped pool
(:class:`Slots`), for two reasons. A request's timeout is then Salesforce's time to answer
it, not its wait in the queue: counted from the wait, a burst at 10,000 chats times out
requests that never left, their retries queue again, and the queue never drains. And
whether this node may still send (several nodes: its lease) is asked when the request
leaves the queue, right before it goes, not when it joined it.
"""

from __future__ import annotations

__all__ = ["Slots", "client_session"]

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable

import aiohttp

from bridged.errors import TransportConnectError


def client_session(limit: int, keepalive_s: float) -> aiohttp.ClientSession:
    """A client session of at most ``limit`` connections, idle ones kept ``keepalive_s``.

    No automatic redirects (each request says so too): a redirect could lead a session key
    or a bearer token to a host that ``salesforce.allowed_hosts`` never allowed.
    """
    connector = aiohttp.TCPConnector(limit=limit, limit_per_host=0, ttl_dns_cache=300,
                                     keepalive_timeout=keepalive_s)
    return aiohttp.ClientSession(connector=connector, auto_decompress=True,
                                 raise_for_status=False, skip_auto_headers=("User-Agent",))


class Slots:
    """At most ``limit`` requests going at once, the others waiting in turn (first come).

    Args:
        limit: the pool's connections (its session is made with the same limit, so aiohttp
            never queues a request itself).
        may_send: asked as a request leaves the queue; ``False`` fails it unsent.
    """

    def __init__(self, limit: int, may_send: Callable[[], bool] | None = None) -> None:
        self._slots = asyncio.Semaphore(limit)
        self._may_send = may_send

    @contextlib.asynccontextmanager
    async def going(self, what: str) -> AsyncIterator[None]:
        """Hold a slot while the request ``what`` goes and is answered.

        Raises:
            TransportConnectError: this node may not send now; the request did not go.
        """
        async with self._slots:
            if self._may_send is not None and not self._may_send():
                raise TransportConnectError(
                    f"{what}: not sent: this node may not send to Salesforce now")
            yield
