"""Pure retry policy: how long to wait before sending again, and when to stop trying.

Kept free of clocks and sleeps so that tests can replace the delays (websockets' ``backoff``
idea): the actor asks :func:`retry_delay` and does the waiting itself.
"""

from __future__ import annotations

__all__ = ["RateLimit", "RetryPolicy", "retry_delay"]

import random

import msgspec


class RetryPolicy(msgspec.Struct, frozen=True, kw_only=True):
    """Exponential backoff with full jitter, bounded in time.

    Attributes:
        initial_s: the first delay's upper bound.
        factor: growth per attempt.
        max_delay_s: cap of one delay.
        budget_s: how long a request may keep failing before the chat gives up, when the
            session itself does not say (``connectionTimeout`` does, when it is known).
    """

    initial_s: float = 0.5
    factor: float = 2.0
    max_delay_s: float = 8.0
    budget_s: float = 60.0


def retry_delay(policy: RetryPolicy, attempt: int, rand: random.Random | None = None) -> float:
    """The delay before attempt number ``attempt`` (1 for the first retry).

    Jitter (a uniform draw in the upper half of the exponential bound) spreads the retries of
    thousands of chats hit by one outage, so that they do not return in lockstep.
    """
    bound = min(policy.max_delay_s, policy.initial_s * policy.factor ** max(0, attempt - 1))
    draw = (rand or random).random()
    return bound * (0.5 + draw / 2)


class RateLimit:
    """A token bucket: ``rate`` events per second on average, bursts up to ``burst``.

    Pure: the caller passes the time, so tests need no clock.
    """

    def __init__(self, rate: float, burst: float) -> None:
        self.rate = rate
        self.burst = burst
        self._tokens = burst
        self._last: float | None = None

    def allow(self, now: float) -> bool:
        """Whether one more event may pass at ``now`` (and take its token if so)."""
        if self._last is not None:
            self._tokens = min(self.burst, self._tokens + (now - self._last) * self.rate)
        self._last = now
        if self._tokens >= 1:
            self._tokens -= 1
            return True
        return False
