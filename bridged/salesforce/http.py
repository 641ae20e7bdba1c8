"""What both backends' HTTP clients share: a pool of connections and the queue in front of it.

bridged, not aiohttp, queues the requests waiting for a connection of a capped pool
(:class:`Pool`), for two reasons. A request's timeout is then Salesforce's time to answer
it, not its wait in the queue: counted from the wait, a burst at 10,000 chats times out
requests that never left, their retries queue again, and the queue never drains. And
whether this node may still send (several nodes: its lease) is asked when the request
leaves the queue, right before it goes, not when it joined it.
"""

from __future__ import annotations

__all__ = ["CLIENT_ERRORS", "HELD_KEEPALIVE_S", "Pool", "as_transport_error", "total_timeout"]

import asyncio
import functools
from collections.abc import Callable

import aiohttp

from bridged.errors import TransportConnectError, TransportError, TransportTimeout

# How long an idle connection of the Live Agent polls' pool is kept: longer than
# salesforce.keepalive_s, because such a connection is wanted again as soon as the number
# of chats with a poll out rises (an event stream's connection is never reused). Kept for
# only 5 s, every dip in that number closed connections that a rise opened again: at
# 19,000 chats, 37 a second at saturation, each new one 3 ms of the event loop in
# connect() (the kernel searches a local port range that the chats' own connections
# nearly fill). aiohttp sends a GET (a poll) again, once, over a new connection when a
# kept one turns out closed.
HELD_KEEPALIVE_S = 60.0


def _client_session(limit: int, keepalive_s: float) -> aiohttp.ClientSession:
    # No automatic redirects (each request says so too): a redirect could lead a session
    # key or a bearer token to a host that salesforce.allowed_hosts never allowed.
    # No cookies: the session is every chat's, and bridged is a visitor of its own per
    # chat. A cookie one chat's answer sets (Salesforce's, or a proxy's or load balancer's
    # in front of it) would go out with every other chat's requests to that host; neither
    # backend needs one (Live Agent: the session key and affinity headers; Enhanced Chat:
    # the bearer token).
    connector = aiohttp.TCPConnector(limit=limit, limit_per_host=0, ttl_dns_cache=300,
                                     keepalive_timeout=keepalive_s)
    return aiohttp.ClientSession(connector=connector, auto_decompress=True,
                                 raise_for_status=False, skip_auto_headers=("User-Agent",),
                                 cookie_jar=aiohttp.DummyCookieJar())


# What aiohttp and the OS raise for a request or a read that failed on the network.
CLIENT_ERRORS = (TimeoutError, aiohttp.ClientError, OSError)


def as_transport_error(what: str, exc: BaseException, timed_out: str) -> TransportError:
    """One of :data:`CLIENT_ERRORS` as the bridged tree's error, for the caller to raise
    ``from exc``: ``"{what}: {timed_out}"`` for a timeout, else the error's type and
    text."""
    if isinstance(exc, TimeoutError):
        return TransportTimeout(f"{what}: {timed_out}")
    return TransportConnectError(f"{what}: {type(exc).__name__}: {exc}")


@functools.lru_cache(maxsize=64)
def total_timeout(seconds: float) -> aiohttp.ClientTimeout:
    """``aiohttp.ClientTimeout(total=seconds)``, made once per value (it is immutable)."""
    return aiohttp.ClientTimeout(total=seconds)


class Pool:
    """At most ``limit`` requests going at once over one session, the others waiting in
    turn (first come); the session is made with the first request.

    A request holds its slot from :meth:`acquire` to :meth:`release` (or for the block of
    :meth:`going`). The two methods are the per-request path: no generator, no context
    manager object, per request.

    Args:
        limit: the pool's connections (its session has the same limit, so aiohttp never
            queues a request itself).
        keepalive_s: how long an idle connection is kept for the next request.
        may_send: asked as a request leaves the queue; ``False`` fails it unsent.
    """

    def __init__(self, limit: int, keepalive_s: float,
                 may_send: Callable[[], bool] | None = None) -> None:
        self._limit = limit
        self._keepalive_s = keepalive_s
        self._slots = asyncio.Semaphore(limit)
        self._may_send = may_send
        self._session: aiohttp.ClientSession | None = None

    async def acquire(self, what: str) -> aiohttp.ClientSession:
        """Wait for a slot in turn and hold it for the request ``what``; its session.

        The caller gives the slot back with :meth:`release` once the answer is read (or
        the request failed), and only if this returned.

        Raises:
            TransportConnectError: this node may not send now; the request did not go
                (and holds no slot).
        """
        await self._slots.acquire()
        try:
            if self._may_send is not None and not self._may_send():
                raise TransportConnectError(
                    f"{what}: not sent: this node may not send to Salesforce now")
            session = self._session
            if session is None:
                session = self._session = _client_session(self._limit, self._keepalive_s)
        except BaseException:
            self._slots.release()
            raise
        return session

    def release(self) -> None:
        """Give back the slot an :meth:`acquire` took."""
        self._slots.release()

    def going(self, what: str) -> _Going:
        """Hold a slot while the request ``what`` goes and is answered; its session.

        Raises (on entering):
            TransportConnectError: this node may not send now; the request did not go.
        """
        return _Going(self, what)

    async def aclose(self) -> None:
        """Close the session (a later request makes a new one)."""
        if self._session is not None:
            session, self._session = self._session, None
            await session.close()


class _Going:
    """:meth:`Pool.going`'s context: :meth:`Pool.acquire` on entering, release on leaving."""

    __slots__ = ("_pool", "_what")

    def __init__(self, pool: Pool, what: str) -> None:
        self._pool = pool
        self._what = what

    async def __aenter__(self) -> aiohttp.ClientSession:
        return await self._pool.acquire(self._what)

    async def __aexit__(self, *exc: object) -> None:
        self._pool.release()
