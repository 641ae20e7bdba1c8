"""What the simulators share: fault kinds and their checks, and URL host formatting.

The simulators are independent of the daemon (they keep their own Salesforce wire
definitions, so that they catch the client's mistakes instead of mirroring them); what they
have in common with each other lives here, written once.
"""

from __future__ import annotations

__all__ = ["AFTER", "BEFORE", "DELAY", "FAIL", "RESET", "check_fault", "url_host"]

import ipaddress
import math

# What an injected fault does to the next request of a resource, and when.
FAIL = "fail"
RESET = "reset"
DELAY = "delay"
BEFORE = "before"
AFTER = "after"


def check_fault(kind: str, when: str, status: int, seconds: float) -> None:
    """Refuse a fault that cannot be injected (``ValueError`` naming what is wrong)."""
    if kind not in (FAIL, RESET, DELAY):
        raise ValueError(f"unknown fault kind {kind!r}")
    if when not in (BEFORE, AFTER):
        raise ValueError(f'when must be "before" or "after", got {when!r}')
    if kind == FAIL and not 100 <= status <= 599:
        raise ValueError(f"not an HTTP status: {status!r}")
    if kind == DELAY and not (
        isinstance(seconds, (int, float)) and math.isfinite(seconds) and seconds >= 0
    ):
        raise ValueError(f"seconds must be a number >= 0, got {seconds!r}")


def url_host(host: str) -> str:
    """``host`` as it stands in a URL: an IPv6 address in brackets."""
    try:
        if ipaddress.ip_address(host).version == 6:
            return f"[{host}]"
    except ValueError:
        pass
    return host
