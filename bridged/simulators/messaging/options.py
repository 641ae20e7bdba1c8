"""Configuration of the Enhanced Chat simulator.

One frozen value, built once and handed to :class:`~.app.Simulator`. The defaults are the
production-like ones (MESSAGING.md 2.2, 4.2); tests shrink the timings and the limits,
never the strictness. Every point MESSAGING.md 8 leaves open has an option here whose
default is the strict reading (the table in the package docstring lists them).
"""

from __future__ import annotations

import math
import re

import msgspec

from .deployments import SCRIPTS, WEB_DEPLOYMENT_KIND, default_deployments

__all__ = [
    "DUPLICATE_POLICIES",
    "SECOND_STREAM_POLICIES",
    "MessagingOptions",
]

# What a repeated message.id does (MESSAGING.md 8.8): answered 202 and dropped (the safe
# reading, 2.5), refused with 409, or accepted as a new message (echoed again).
DUPLICATE_POLICIES = ("ignore", "reject", "accept")

# A second stream for a token while one is open (8.3): refused with 409, the old one closed
# for the new one, or both kept (each gets every event).
SECOND_STREAM_POLICIES = ("refuse", "replace", "allow")

_ORG_RE = re.compile(r"00D[A-Za-z0-9]{12}")
_NAME_RE = re.compile(r"[A-Za-z][A-Za-z0-9_]{0,79}")


class MessagingOptions(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Everything the simulator can be told.

    Identity:
        org_id: The org's 15-character id (``00D...``). The token request accepts it or its
            18-character form (with its case-checksum suffix); the token's ``orgId`` claim,
            and so the stream's ``X-Org-Id``, is always the 15-character one.
        deployments: Deployment API name (``esDeveloperName``) -> the scripted agent behind
            it (:data:`~.deployments.SCRIPTS`), or ``"web"`` for a deployment that is not a
            Custom Client one (every call naming it is 400 BAD_REQUEST). Unknown names are
            400 as well.
        channel_address_id: The messaging channel's id in every event (a UUID).

    Tokens:
        token_lifetime_s: ``exp - iat`` (21,600 s = 6 h in the one real token seen). The
            ``exp`` claim is whole seconds (rounded up); the simulator checks the exact time.

    Event stream (MESSAGING.md 3):
        ping_interval_s: Seconds of silence after which a ``ping`` goes out.
        replay_depth: Events kept per subject for ``Last-Event-Id`` replay; 0 replays nothing.
        second_stream: One of :data:`SECOND_STREAM_POLICIES`.
        require_org_id_header: Strict: 400 unless ``X-Org-Id`` equals the token's orgId.
        require_last_event_id: Strict: 400 without a ``Last-Event-Id`` header (one note says
            so; Botpress connects without one).
        close_stream_on_close: After CLOSE_CONVERSATION, end the subject's streams when it has
            no open conversation left.
        stream_pending_max: Frames waiting for a slow stream; beyond it the stream is cut
            (no unbounded buffer).
        stream_drop_grace_s: An injected "drop after N events" waits this long after the
            N-th event before it cuts, so the client has read it (a client that breaks on
            the cut may discard what it had not read).

    Rate limits (MESSAGING.md 4.2; 429 when exceeded):
        tokens_per_window / token_window_s: access-token requests per org (continuation
            tokens count too).
        starts_per_window / starts_window_s: conversations created per subject.
        messages_per_window / message_window_s: visitor messages (text and files) per
            conversation.
        retry_after_s: A ``Retry-After`` header on a 429; None (strict: not documented)
            sends none.

    REST strictness (MESSAGING.md 8; the default is the strict reading):
        duplicate_messages: One of :data:`DUPLICATE_POLICIES`.
        create_status: The success status of create conversation (201; 200 also seen).
        create_accepts_language: Strict False: ``language`` on create is a 400.
        reject_unknown_fields: Strict True: a body field the docs do not show is a 400.
        max_text_chars: Longest message text (Cognigy splits above 3000).
        closed_conversation_status: Status of a call on a closed conversation (403 or 404
            are plausible).
        session_status_on_close: The visitor's close also sends SESSION_STATUS_CHANGED
            ``Ended`` before CLOSE_CONVERSATION.
        accept_files: Whether the deployments allow end-user attachments; False refuses
            every upload with 400 (attachments disabled).
        max_file_bytes: Larger uploads get 413 (5 MB documented).
        file_extensions: Accepted file name extensions; others get 415.
        list_limit_max: Largest ``limit`` of the list calls (50).

    Scripted agents (:mod:`.scripts`):
        routing_delay_s: From create (or a new session) to the RoutingResult.
        join_delay_s: From the RoutingResult (or the last queue update) to the agent's add.
        reply_delay_s: From a visitor message to the agent's answer.
        queue_step_s: Time between queue updates of the ``queue`` agent.
        agent_name / agent_subject: The first agent's display name and user id.
        second_agent_name / second_agent_subject: The agent a transfer brings in.
        agent_acks: Scripted agents send a delivery and a read acknowledgement of each
            visitor message they answer.

    Bounds:
        request_log_max: Requests remembered (oldest dropped); 0 records none.
        record_max: Cap of every other record list (entries per conversation, events, ids
            of a stream); what does not fit is dropped, oldest first.
        body_record_max: Characters of a request body kept in its record.
        max_conversations: Most conversations held; create beyond it is a 500.
        max_tokens: Most live tokens held; a token request beyond it is a 500.
        closed_retention_s: How long closed conversations and expired tokens are kept.
        reap_interval_s: Period of the reaper task.
    """

    org_id: str = "00D000000000001"
    deployments: dict[str, str] = msgspec.field(default_factory=default_deployments)
    channel_address_id: str = "e6dd2827-dada-49a1-ab44-44652af0cce0"
    token_lifetime_s: float = 21_600.0
    ping_interval_s: float = 15.0
    replay_depth: int = 100
    second_stream: str = "refuse"
    require_org_id_header: bool = True
    require_last_event_id: bool = True
    close_stream_on_close: bool = True
    stream_pending_max: int = 1_000
    stream_drop_grace_s: float = 0.05
    tokens_per_window: int = 200
    token_window_s: float = 60.0
    starts_per_window: int = 3
    starts_window_s: float = 30.0
    messages_per_window: int = 22
    message_window_s: float = 60.0
    retry_after_s: int | None = None
    duplicate_messages: str = "ignore"
    create_status: int = 201
    create_accepts_language: bool = False
    reject_unknown_fields: bool = True
    max_text_chars: int = 3_000
    closed_conversation_status: int = 403
    session_status_on_close: bool = True
    accept_files: bool = False
    max_file_bytes: int = 5 * 1024 * 1024
    file_extensions: tuple[str, ...] = ("png", "jpg", "jpeg", "gif", "pdf", "txt")
    list_limit_max: int = 50
    routing_delay_s: float = 0.3
    join_delay_s: float = 0.5
    reply_delay_s: float = 0.2
    queue_step_s: float = 1.0
    agent_name: str = "Ada Agent"
    agent_subject: str = "005000000000ADA"
    second_agent_name: str = "Bo Backup"
    second_agent_subject: str = "005000000000BOB"
    agent_acks: bool = True
    request_log_max: int = 2_000
    record_max: int = 1_000
    body_record_max: int = 65_536
    max_conversations: int = 50_000
    max_tokens: int = 100_000
    closed_retention_s: float = 300.0
    reap_interval_s: float = 1.0

    def __post_init__(self) -> None:
        # msgspec checks constraints only when decoding: a value built in Python is checked
        # here, because a bad value would make the simulator quietly lenient.
        if not _ORG_RE.fullmatch(self.org_id):
            raise ValueError(f"org_id must be a 15-character 00D id, got {self.org_id!r}")
        for name, kind in self.deployments.items():
            if not _NAME_RE.fullmatch(name):
                raise ValueError(f"not a deployment API name: {name!r}")
            if kind != WEB_DEPLOYMENT_KIND and kind not in SCRIPTS:
                known = ", ".join((*sorted(SCRIPTS), WEB_DEPLOYMENT_KIND))
                raise ValueError(f"deployment {name!r}: unknown kind {kind!r} (one of {known})")
        if self.second_stream not in SECOND_STREAM_POLICIES:
            raise ValueError(f"second_stream must be one of {SECOND_STREAM_POLICIES}")
        if self.duplicate_messages not in DUPLICATE_POLICIES:
            raise ValueError(f"duplicate_messages must be one of {DUPLICATE_POLICIES}")
        for name in (
            "token_lifetime_s",
            "ping_interval_s",
            "token_window_s",
            "starts_window_s",
            "message_window_s",
            "closed_retention_s",
            "reap_interval_s",
        ):
            _check_number(name, getattr(self, name), positive=True)
        for name in ("routing_delay_s", "join_delay_s", "reply_delay_s", "queue_step_s",
                     "stream_drop_grace_s"):
            _check_number(name, getattr(self, name), positive=False)
        for name in (
            "tokens_per_window",
            "starts_per_window",
            "messages_per_window",
            "max_text_chars",
            "list_limit_max",
            "stream_pending_max",
            "max_conversations",
            "max_tokens",
            "max_file_bytes",
        ):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)!r}")
        for name in ("replay_depth", "request_log_max", "record_max", "body_record_max"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)!r}")
        if not 200 <= self.create_status <= 299:
            raise ValueError(f"create_status must be a 2xx status, got {self.create_status!r}")
        if not 400 <= self.closed_conversation_status <= 499:
            raise ValueError("closed_conversation_status must be a 4xx status")
        if self.retry_after_s is not None and self.retry_after_s < 0:
            raise ValueError("retry_after_s must be >= 0 or None")

    def kind_of(self, deployment: str) -> str | None:
        """The script (or ``"web"``) behind a deployment name; None for an unknown name."""
        return self.deployments.get(deployment)


def _check_number(name: str, value: object, *, positive: bool) -> None:
    ok = isinstance(value, (int, float)) and math.isfinite(value)
    if ok and isinstance(value, (int, float)):
        ok = value > 0 if positive else value >= 0
    if not ok:
        bound = "a positive number" if positive else "a number >= 0"
        raise ValueError(f"{name} must be {bound}, got {value!r}")
