"""The open-file limit: raised to the hard limit at start-up, and checked against max_chats.

Each live chat holds one socket to Salesforce (its long poll; a POST may briefly need a
second), plus its share of an OCP connection (a whole one when OCP opens a connection per
chat). A process that runs out of descriptors fails in ways far from the cause, so bridged
raises its soft limit as far as it may, says at start-up when ``server.max_chats`` cannot
fit, and answers ``capacity`` before it runs out.
"""

from __future__ import annotations

__all__ = ["RESERVED_FDS", "fds_needed", "raise_nofile_limit"]

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


def fds_needed(chats: int, connections: int) -> int:
    """Descriptors that ``chats`` live chats over ``connections`` OCP connections need.

    One per chat for its long poll, and a quarter more for POSTs in flight or kept alive
    for a few seconds (``salesforce.keepalive_s``): a chat sends now and then, not always.
    """
    return chats + chats // 4 + connections + RESERVED_FDS
