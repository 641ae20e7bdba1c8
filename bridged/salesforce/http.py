"""What both backends' HTTP clients share: how a session is made, how long an answer may take."""

from __future__ import annotations

__all__ = ["answer_within", "client_session"]

import aiohttp


def client_session(limit: int, keepalive_s: float) -> aiohttp.ClientSession:
    """A client session of at most ``limit`` connections, idle ones kept ``keepalive_s``.

    No automatic redirects (each request says so too): a redirect could lead a session key
    or a bearer token to a host that ``salesforce.allowed_hosts`` never allowed.
    """
    connector = aiohttp.TCPConnector(limit=limit, limit_per_host=0, ttl_dns_cache=300,
                                     keepalive_timeout=keepalive_s)
    return aiohttp.ClientSession(connector=connector, auto_decompress=True,
                                 raise_for_status=False, skip_auto_headers=("User-Agent",))


def answer_within(timeout: float) -> aiohttp.ClientTimeout:
    """``timeout`` for Salesforce to answer, counted once the request goes (connected).

    The wait for a connection of the capped pool is not counted: with thousands of chats
    sending at once, a request queued behind the others would time out unsent, be retried,
    queue again, and keep the queue full (each gap in an answer is held to ``timeout``).
    """
    return aiohttp.ClientTimeout(total=None, connect=None, sock_connect=timeout,
                                 sock_read=timeout)
