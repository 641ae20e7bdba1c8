"""The open-file limit: raised to the hard limit at start-up, and checked against max_chats.

Each live chat holds one socket to Salesforce (its long poll, or its Enhanced Chat event
stream), plus its share of an OCP connection (a whole one when OCP opens a connection per
chat). Its other requests (the POSTs) share a capped pool of kept-alive connections
(``salesforce.max_request_connections`` per backend), so they add at most that many. A
process that runs out of descriptors fails in ways far from the cause, so bridged raises its
soft limit as far as it may, says at start-up when ``server.max_chats`` cannot fit, and
answers ``capacity`` before it runs out.
"""

from __future__ import annotations

__all__ = ["RESERVED_FDS", "chats_that_fit", "fds_needed", "raise_nofile_limit"]

import resource

# Descriptors kept back for the listener, the state store, logs, DNS and the like.
RESERVED_FDS = 256


def raise_nofile_limit() -> int:
    """Raise the soft RLIMIT_NOFILE to the hard limit; return the soft limit now in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or hard > soft:
        target = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError):
            pass
    return soft


# Request connections of both backends' pools at the default salesforce.max_request_connections.
DEFAULT_REQUEST_CONNECTIONS = 2 * 256


def fds_needed(chats: int, connections: int,
               request_connections: int = DEFAULT_REQUEST_CONNECTIONS) -> int:
    """Descriptors that ``chats`` live chats over ``connections`` OCP connections need.

    One per chat for its long poll or event stream, and for the other requests a quarter
    more (a chat sends now and then, not always), but never more than the request pools
    hold (``request_connections``, both backends together).
    """
    return chats + min(chats // 4, request_connections) + connections + RESERVED_FDS


def chats_that_fit(limit: int, connections: int,
                   request_connections: int = DEFAULT_REQUEST_CONNECTIONS) -> int:
    """The most chats whose :func:`fds_needed` stays within ``limit``."""
    low, high = 0, max(0, limit)
    while low < high:
        middle = (low + high + 1) // 2
        if fds_needed(middle, connections, request_connections) <= limit:
            low = middle
        else:
            high = middle - 1
    return low
