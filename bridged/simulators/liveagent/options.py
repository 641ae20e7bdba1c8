"""Configuration of the Live Agent simulator.

One frozen value, built once and handed to :class:`~bridged.simulators.liveagent.app.Simulator`. The
defaults are the production-like ones (a poll is held about 30 s, SALESFORCE.md 7.2 and
11.9); tests shrink the timings, never the strictness.
"""

from __future__ import annotations

import math

import msgspec

__all__ = ["SimulatorOptions"]


class SimulatorOptions(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Everything the simulator can be told.

    Attributes:
        hold_s: How long an idle Messages poll is held before the 204 (SALESFORCE.md 11.9).
        client_poll_timeout: ``clientPollTimeout`` handed out by SessionId, in seconds. A
            session not polled within this long after its last poll answer is over (11.10).
            Sent as a JSON integer when it is whole, else as a number (tests use fractions).
        join_delay_s: Scripted agents: from ChatRequestSuccess to ChatEstablished.
        reply_delay_s: Scripted agents: from a visitor ChatMessage to the echo.
        queue_step_s: ``573QUEUE0000000``: time between queue positions.
        org_id: The only organizationId accepted; None accepts any well-formed ``00D`` id.
        deployment_id: The only deploymentId accepted; None accepts any well-formed ``572`` id.
        require_ack: Strict by default; False lets a poll without ``ack`` through, as RC's
            client did (SALESFORCE.md 2.2, "Real-world leniency").
        require_sequence: Strict by default; False lets a POST without
            ``X-LIVEAGENT-SEQUENCE`` through as the next number (RC and BP did that).
        release_abandoned_polls: Strict by default: a held poll stays outstanding until the
            server answers it, even if the client hung up, so a re-poll is a duplicate (409).
            True forgets a held poll whose connection closed.
        connection_timeout_ms: ``ChatRequestSuccess.connectionTimeout`` (YALO capture: 150000).
        agent_name: Display name of the scripted agent.
        agent_user_id: User id of the scripted agent (prefix 005).
        max_batch: Most messages in one Messages answer; the rest wait for the next poll.
        max_queued: Most undelivered agent messages per session; more are refused and logged.
        max_sessions: Most sessions (live and ended but not yet reaped); SessionId beyond is 500.
        ended_retention_s: How long an ended session stays in ``Simulator.sessions`` (and keeps
            answering 403 by name) before the reaper drops it.
        reap_interval_s: Period of the one reaper task; None picks ``client_poll_timeout / 4``
            capped to 1 s.
        request_log_max: Requests remembered per session (oldest dropped); 0 turns the request
            log off, which a load test wants.
        record_max: Cap of every other per-session record list (visitor messages, events,
            queued agent messages, transcript); 0 records nothing (for a long load test).
            What does not fit is counted in ``records_dropped``.
    """

    hold_s: float = 30.0
    client_poll_timeout: float = 40
    join_delay_s: float = 0.5
    reply_delay_s: float = 0.2
    queue_step_s: float = 1.0
    org_id: str | None = None
    deployment_id: str | None = None
    require_ack: bool = True
    require_sequence: bool = True
    release_abandoned_polls: bool = False
    connection_timeout_ms: int = 150_000
    agent_name: str = "Ada Agent"
    agent_user_id: str = "005000000000ADA"
    max_batch: int = 100
    max_queued: int = 10_000
    max_sessions: int = 50_000
    ended_retention_s: float = 300.0
    reap_interval_s: float | None = None
    request_log_max: int = 200
    record_max: int = 1_000

    def __post_init__(self) -> None:
        # msgspec checks constraints only when decoding, so a value built in Python is
        # checked here: a bad timing would make the simulator quietly lenient.
        for name in ("hold_s", "client_poll_timeout", "queue_step_s", "ended_retention_s"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
                raise ValueError(f"{name} must be a positive number, got {value!r}")
        for name in ("join_delay_s", "reply_delay_s"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value >= 0):
                raise ValueError(f"{name} must be a number >= 0, got {value!r}")
        # "Set clientPollTimeout (30 or 40) larger than the hold time" (SALESFORCE.md 8):
        # otherwise a client obeying the read timeout would abort every idle poll.
        if self.client_poll_timeout <= self.hold_s:
            raise ValueError(
                f"client_poll_timeout ({self.client_poll_timeout}) must be larger than "
                f"hold_s ({self.hold_s})"
            )
        if self.reap_interval_s is not None and not self.reap_interval_s > 0:
            raise ValueError(f"reap_interval_s must be positive, got {self.reap_interval_s!r}")
        for name in ("max_batch", "max_queued", "max_sessions"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)!r}")
        for name in ("request_log_max", "record_max", "connection_timeout_ms"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)!r}")

    @property
    def reap_interval(self) -> float:
        """The reaper's period in seconds."""
        if self.reap_interval_s is not None:
            return self.reap_interval_s
        return min(1.0, self.client_poll_timeout / 4)
