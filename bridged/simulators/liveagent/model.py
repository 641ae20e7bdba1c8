"""One simulated Live Agent session, as a pure state machine (no asyncio, no aiohttp).

Theory of operation
-------------------
A :class:`Session` is created by ``GET System/SessionId`` and is then driven by two kinds of
input, each a plain method call that returns what to answer:

* visitor requests: :meth:`Session.receive_post` (the sequenced ``Chasitor/*`` POSTs),
  :meth:`Session.open_poll` (``System/Messages``), :meth:`Session.receive_resync`,
  :meth:`Session.receive_reconnect`, :meth:`Session.receive_delete`;
* server-side facts: :meth:`Session.queue` (an agent message or event),
  :meth:`Session.switch_server`, :meth:`Session.end`, and the clock
  (:meth:`Session.expire_poll`, :meth:`Session.is_expired`).

The time is always passed in (``now``, monotonic seconds), so every rule can be tested
without a loop or a socket. The I/O shell (``app.py``) owns the futures of held polls; after
any input it calls :meth:`Session.settle_poll`, which says whether the held poll must be
answered now and with what. That is the only place a held poll is answered, so no input can
leave one hanging.

Phases::

    CREATED --ChasitorInit--> ROUTING --ChatEstablished delivered--> CHATTING
       |                         |                                      |
       +-------------------------+------------- end ------------------->+--> ENDED

``ENDED`` is reached by ChatEnd, DELETE, a duplicate poll (409), a poll timeout, or by
*delivering* a final message (ChatEnded, ChatRequestFail) in a poll answer. Between queueing
a final message and delivering it the session is ``closing``: polls still work (to deliver
it) but visitor POSTs get 403. After ENDED every request with the key gets 403.

Outbound numbering: every queued message gets the next integer; a 200 carries one batch
(the oldest undelivered messages, at most ``max_batch``), and its ``sequence`` is the number
of the last message in it. ``ack=N`` confirms everything up to N; what is above N is
(re)delivered, which makes a stale ack an at-least-once redelivery (SALESFORCE.md 7.3,
10.3: the server's policy is UNCONFIRMED, this is the one chosen).

Inbound numbering: ``X-LIVEAGENT-SEQUENCE`` must be the last accepted + 1; the last accepted
again is a duplicate, answered 200 and not applied (SALESFORCE.md 11.4); anything else is the
409 "Out of sync Ack". Refused requests (400, 500) never use a number up (11.3).
"""

from __future__ import annotations

import enum
import itertools
import secrets
import uuid
from collections import deque
from typing import Any

import msgspec

from .options import SimulatorOptions
from .wire import (
    AFFINITY,
    DUPLICATE_POLL_TEXT,
    SEQUENCE,
    ChasitorInit,
    ChasitorResyncState,
    ChatEnd,
    ChatMessage,
    CustomEvent,
    EmptyBody,
    Reply,
    SneakPeek,
    decode_body,
    encode,
    is_sf_id,
    json_reply,
    out_of_sync,
    parse_int,
    text_reply,
)

__all__ = [
    "ACTIVITY_RESOURCES",
    "FINAL_TYPES",
    "SEQUENCED_RESOURCES",
    "InitAccepted",
    "OutboxFull",
    "Phase",
    "RequestRecord",
    "Session",
    "SessionOver",
    "SimulatorError",
    "UnknownSession",
    "VisitorSaid",
]


class SimulatorError(Exception):
    """Root of the errors the simulator's control API raises."""


class UnknownSession(SimulatorError, KeyError):
    """No session with that id (never created, or already reaped)."""

    def __str__(self) -> str:
        return f"no session {self.args[0]!r}"


class SessionOver(SimulatorError):
    """The session has ended, or its final message is queued: the agent can't act any more."""


class OutboxFull(SimulatorError):
    """The session already holds ``max_queued`` undelivered messages; this one is refused."""


class Phase(enum.Enum):
    """Where a session stands; see the module docstring for the transitions."""

    CREATED = "created"
    ROUTING = "routing"
    CHATTING = "chatting"
    ENDED = "ended"


# Messages that end the session once delivered (SALESFORCE.md 3, 5).
FINAL_TYPES = frozenset({"ChatEnded", "ChatRequestFail"})

# Sequenced POSTs (SALESFORCE.md 2.2 table), by resource name under Chasitor/.
SEQUENCED_RESOURCES = frozenset(
    {
        "ChasitorInit",
        "ChatMessage",
        "ChasitorTyping",
        "ChasitorNotTyping",
        "ChasitorSneakPeek",
        "ChatEnd",
        "CustomEvent",
    }
)

# "wait for ChatRequestSuccess and ChatEstablished. Otherwise the server throws a
# NullPointerException and answers HTTP 500" (D-GS): these are the visitor's activity.
ACTIVITY_RESOURCES = frozenset(
    {"ChatMessage", "ChasitorTyping", "ChasitorNotTyping", "ChasitorSneakPeek", "CustomEvent"}
)

_BODY_TYPES: dict[str, type] = {
    "ChasitorInit": ChasitorInit,
    "ChatMessage": ChatMessage,
    "ChasitorTyping": EmptyBody,
    "ChasitorNotTyping": EmptyBody,
    "ChasitorSneakPeek": SneakPeek,
    "ChatEnd": ChatEnd,
    "CustomEvent": CustomEvent,
}

_OK = Reply(status=200)
_NO_CONTENT = Reply(status=204)
_FORBIDDEN = text_reply(403, "Session not valid: unknown, ended or expired session key")
_CLOSING = text_reply(403, "Session not valid: the chat has ended")

# Item kinds: what delivering an item does to the session.
_PLAIN, _ESTABLISHED, _FINAL, _SESSION_DATA = range(4)


class RequestRecord(msgspec.Struct, frozen=True, kw_only=True, gc=False):
    """One request as the simulator saw it, with the status it answered.

    Attributes:
        method: HTTP method.
        path: Request path.
        query: Raw query string.
        headers: The Live Agent headers and Content-Type, as sent.
        status: The status answered; 0 when the connection was reset instead (a fault).
        port: The local port the request arrived on (one simulator may listen on several).
        fault: The label of the fault injected into this request (``reset_after``,
            ``delay_before``, ``fail_500``, ``outage_503``...), None for a normal one.
        received: When a Messages poll arrived (the simulator's wall clock), else None.
        answered: When it was answered (the simulator's wall clock).
    """

    method: str
    path: str
    query: str
    headers: dict[str, str]
    status: int
    port: int | None = None
    fault: str | None = None
    received: float | None = None
    answered: float | None = None


class InitAccepted(msgspec.Struct, frozen=True, kw_only=True):
    """Fact: ChasitorInit was applied; the routing (a scripted agent) starts now."""

    init: ChasitorInit


class VisitorSaid(msgspec.Struct, frozen=True, kw_only=True):
    """Fact: a visitor ChatMessage was applied (not a dropped duplicate)."""

    text: str
    count: int


class _Item:
    """One queued message, encoded once."""

    __slots__ = ("kind", "num", "raw", "type")

    def __init__(self, num: int, type_: str, raw: bytes, kind: int) -> None:
        self.num = num
        self.type = type_
        self.raw = raw
        self.kind = kind


class _Duplicate:
    """Marker: the POST re-sent the last accepted sequence number."""


_DUPLICATE = _Duplicate()


class Session:
    """A simulated Live Agent chat session seen from the server side.

    Attributes:
        id: The session id (a UUID), the part of the key before ``!``.
        key: The session key (``X-LIVEAGENT-SESSION-KEY``).
        affinity_token: The current affinity token (8 hex digits).
        old_affinity_tokens: Tokens valid before a server switch; they now get 503.
        phase: See :class:`Phase`.
        closing: A final message is queued but not yet delivered.
        end_reason: Why the session ended (``client``, ``deleted``, ``agent``,
            ``request_failed:<reason>``, ``duplicate_poll``, ``timeout``, ``shutdown``), or
            None while it is live.
        init: The ChasitorInit body as received (decoded JSON), once accepted.
        visitor_messages: Texts of the visitor ChatMessages applied, in order.
        visitor_events: Other visitor activity applied, and duplicates dropped, in order.
        sequence_log: Every sequenced POST that passed the sequence check, in order, as
            ``(resource, sequence, applied)``; ``applied`` is False for a duplicate that was
            dropped (SALESFORCE.md 11.4). Numbers restart at 1 after ReconnectSession.
        agent_messages: Every message queued for the visitor, with its number.
        requests: The most recent requests (``options.request_log_max`` of them).
        agent_name: Display name of the agent currently on the chat (from the last
            ChatEstablished or ChatTransferred queued).
        agent_user_id: User id of that agent.
    """

    def __init__(
        self,
        options: SimulatorOptions,
        *,
        now: float,
        wall_ms: int,
        session_id: str | None = None,
        affinity_token: str | None = None,
    ) -> None:
        self.options = options
        self.id = session_id or str(uuid.uuid4())
        self.key = f"{self.id}!{uuid.uuid4()}"
        self.affinity_token = affinity_token or secrets.token_hex(4)
        self.old_affinity_tokens: list[str] = []
        self.created_at = now
        self._wall_base_ms = wall_ms
        self.phase = Phase.CREATED
        self.closing = False
        self.end_reason: str | None = None
        self.ended_at: float | None = None
        self._final_reply = _FORBIDDEN

        self.init: dict[str, Any] | None = None
        self.init_body: ChasitorInit | None = None
        self.api_version: int | None = None
        self.agent_name: str | None = None
        self.agent_user_id: str | None = None

        # Inbound (visitor -> server) sequence: "last accepted"; ChasitorInit must be 1.
        self.last_accepted = 0
        # Outbound (server -> visitor) numbering, acks and the batches handed out.
        self._next_num = 1
        self._outbox: deque[_Item] = deque()
        self.acked = -1
        self._given: deque[int] = deque()
        self._given_set: set[int] = set()
        self._offset_base = 1_000_000_000 + secrets.randbelow(1_000_000_000)

        self.poll_held = False
        self.last_poll_answer_at = now
        self.polls = 0

        # Server switch (SALESFORCE.md 6, 4.10, 11.5-11.7).
        self.switch_pending = False
        self.resync_pending = False
        self._session_data_delivered = False
        self.switches = 0

        # Records: lists stop growing at record_max (and count what they drop), so memory
        # stays bounded while tests can still compare them with plain lists.
        self.visitor_messages: list[str] = []
        self.visitor_events: list[dict[str, Any]] = []
        self.sequence_log: list[tuple[str, int, bool]] = []
        self.agent_messages: list[tuple[int, str, Any]] = []
        self._transcript: deque[dict[str, Any]] = deque(maxlen=options.record_max)
        self.records_dropped = 0
        self._requests: deque[RequestRecord] = deque(maxlen=options.request_log_max or 1)

    # ----------------------------------------------------------------------------------
    # Status

    @property
    def is_over(self) -> bool:
        """True once the session has ended: every request with its key gets 403."""
        return self.phase is Phase.ENDED

    @property
    def button_id(self) -> str | None:
        """The buttonId of the accepted ChasitorInit."""
        return self.init_body.button_id if self.init_body is not None else None

    @property
    def last_given(self) -> int:
        """The ``sequence`` of the last batch handed out (-1 before any)."""
        return self._given[-1] if self._given else self.acked

    @property
    def queued(self) -> int:
        """Messages queued and not yet acknowledged by the visitor."""
        return len(self._outbox)

    @property
    def sequences_accepted(self) -> list[int]:
        """The ``X-LIVEAGENT-SEQUENCE`` numbers applied, in order (from :attr:`sequence_log`)."""
        return [seq for _, seq, applied in self.sequence_log if applied]

    @property
    def duplicates_dropped(self) -> list[tuple[str, int]]:
        """``(resource, sequence)`` of each re-sent POST that was dropped, in order."""
        return [(res, seq) for res, seq, applied in self.sequence_log if not applied]

    @property
    def transcript(self) -> list[dict[str, Any]]:
        """The chat's messages both ways, oldest first (the latest ``record_max``), as
        ChasitorSessionData carries them: ``{type: Agent/Chasitor, name, content, timestamp,
        sequence}``."""
        return list(self._transcript)

    @property
    def requests(self) -> list[RequestRecord]:
        """The requests logged for this session, oldest first."""
        return list(self._requests) if self.options.request_log_max else []

    def log_request(self, record: RequestRecord) -> None:
        """Remember one request (bounded: the oldest are dropped)."""
        if self.options.request_log_max:
            self._requests.append(record)

    def is_expired(self, now: float) -> bool:
        """True if the visitor stopped polling: "the server ends the session after a system
        timeout" (D-POLL). Strict reading 11.10: not polled within clientPollTimeout seconds
        of the last poll answer. A held poll keeps the session alive."""
        return (
            self.phase is not Phase.ENDED
            and not self.poll_held
            and now - self.last_poll_answer_at > self.options.client_poll_timeout
        )

    # ----------------------------------------------------------------------------------
    # Headers that depend on the session

    def check_affinity(self, raw: str, *, null_ok: bool = False) -> Reply | None:
        """Check ``X-LIVEAGENT-AFFINITY`` against this session.

        The issued token is required; a token that was valid before a server switch gets the
        503 that starts the ReconnectSession procedure ("Any request type can get the 503",
        D-RECON). ``null_ok`` is for ReconnectSession, whose docs example sends ``null``.

        Returns:
            None if the token is acceptable, else the reply.
        """
        if raw == self.affinity_token:
            return None
        if null_ok and (raw == "null" or raw in self.old_affinity_tokens):
            return None
        if raw in self.old_affinity_tokens:
            return text_reply(503, "Affinity token changed: the session moved to another server")
        return text_reply(400, f"Invalid header {AFFINITY}: {raw!r} is not this session's token")

    # ----------------------------------------------------------------------------------
    # Visitor POSTs

    def receive_post(
        self, resource: str, *, sequence: str | None, body: bytes, now: float, api_version: int
    ) -> tuple[Reply, InitAccepted | VisitorSaid | None]:
        """Apply one sequenced ``Chasitor/<resource>`` POST.

        Order of the checks: session state (403), sequence header (400/409, or the silent
        duplicate drop), body (400), phase (500). Only a request that passes all of them
        uses its sequence number up.

        Returns:
            The reply, and the fact the scripted agent must react to, if any.
        """
        if resource not in SEQUENCED_RESOURCES:
            raise ValueError(f"not a sequenced resource: {resource}")
        if self.phase is Phase.ENDED:
            return _FORBIDDEN, None
        if self.closing:
            # The agent's ChatEnded (or a ChatRequestFail) waits for the next poll: the chat
            # is over on the server, only that poll is still served.
            return _CLOSING, None

        seq = self._check_sequence(sequence)
        if isinstance(seq, Reply):
            return seq, None
        if seq is _DUPLICATE:
            # "the server can drop duplicates" (D-HDR); strict reading 11.4: 200, not applied.
            self._record(
                self.visitor_events,
                {"type": "duplicate", "resource": resource, "sequence": self.last_accepted},
            )
            self._record(self.sequence_log, (resource, self.last_accepted, False))
            return _OK, None
        assert isinstance(seq, int)

        decoded = decode_body(_BODY_TYPES[resource], body, resource)
        if isinstance(decoded, Reply):
            return decoded, None

        if resource == "ChasitorInit":
            return self._receive_init(decoded, seq, body, api_version)
        if resource == "ChatEnd":
            if decoded.reason != "client":
                return text_reply(
                    400, f'Invalid ChatEnd body: reason must be "client", got {decoded.reason!r}'
                ), None
            self._accept(resource, seq)
            self.end("client", now)
            return _OK, None

        assert resource in ACTIVITY_RESOURCES
        # Visitor activity: refused with 500 before the visitor has been told that the agent
        # joined, and (11.6) after a server switch until ChasitorResyncState. Strict reading
        # 11.3: the 500 does not use up the sequence number.
        if self.phase is not Phase.CHATTING:
            return text_reply(
                500,
                f"{resource} refused: the chat is not established "
                "(no ChatEstablished delivered yet)",
            ), None
        if self.resync_pending:
            return text_reply(
                500, f"{resource} refused: ChasitorResyncState is required after a server switch"
            ), None

        self._accept(resource, seq)
        if resource == "ChatMessage":
            self._record(self.visitor_messages, decoded.text)
            self._transcribe("Chasitor", self.init_body.visitor_name if self.init_body else "",
                             decoded.text, now)
            return _OK, VisitorSaid(text=decoded.text, count=len(self.visitor_messages))
        if resource == "ChasitorSneakPeek":
            event = {"type": resource, "position": decoded.position, "text": decoded.text}
        elif resource == "CustomEvent":
            event = {"type": resource, "event_type": decoded.type, "data": decoded.data}
        else:
            event = {"type": resource}
        self._record(self.visitor_events, event)
        return _OK, None

    def _accept(self, resource: str, seq: int) -> None:
        self.last_accepted = seq
        self._record(self.sequence_log, (resource, seq, True))

    def _check_sequence(self, raw: str | None) -> int | Reply | _Duplicate:
        if raw is None:
            if self.options.require_sequence:
                return text_reply(400, f"Missing header {SEQUENCE}")
            # Leniency switch: RC and BP sent no sequence; take it as the next number.
            return self.last_accepted + 1
        seq = parse_int(raw.strip())
        if seq is None:
            return text_reply(400, f"Invalid header {SEQUENCE}: {raw!r}")
        if seq == self.last_accepted + 1:
            return seq
        if seq == self.last_accepted and seq >= 1:
            return _DUPLICATE
        return out_of_sync(seq, self.last_accepted)

    def _receive_init(
        self, init: ChasitorInit, seq: int, body: bytes, api_version: int
    ) -> tuple[Reply, InitAccepted | None]:
        if self.phase is not Phase.CREATED:
            return text_reply(400, "ChasitorInit was already accepted for this session"), None
        problem = self._init_problem(init)
        if problem is not None:
            return text_reply(400, f"Invalid ChasitorInit body: {problem}"), None
        self._accept("ChasitorInit", seq)
        self.init = msgspec.json.decode(body)
        self.init_body = init
        # The version the chat was started with decides optional fields such as
        # estimatedWaitTime ("needs >= 47", SALESFORCE.md 2.2).
        self.api_version = api_version
        self.phase = Phase.ROUTING
        return _OK, InitAccepted(init=init)

    def _init_problem(self, init: ChasitorInit) -> str | None:
        opts = self.options
        if init.session_id != self.id:
            return f"sessionId {init.session_id!r} is not the id of this session"
        if opts.org_id is not None:
            if init.organization_id != opts.org_id:
                return f"organizationId {init.organization_id!r} is not {opts.org_id!r}"
        elif not is_sf_id(init.organization_id, "00D"):
            return f"organizationId {init.organization_id!r} is not an org id (00D...)"
        if opts.deployment_id is not None:
            if init.deployment_id != opts.deployment_id:
                return f"deploymentId {init.deployment_id!r} is not {opts.deployment_id!r}"
        elif not is_sf_id(init.deployment_id, "572"):
            return f"deploymentId {init.deployment_id!r} is not a deployment id (572...)"
        # "label (String, must equal the label of a prechatDetails item)" (D-TYPES).
        labels = {detail.label for detail in init.prechat_details}
        for i, entity in enumerate(init.prechat_entities):
            for j, field_map in enumerate(entity.entity_fields_maps):
                if field_map.label not in labels:
                    return (
                        f"label {field_map.label!r} matches no prechatDetails label"
                        f" - at `$.prechatEntities[{i}].entityFieldsMaps[{j}].label`"
                    )
        return None

    def receive_resync(self, body: bytes, *, sequenced: bool) -> Reply:
        """Apply ``POST Chasitor/ChasitorResyncState`` (SALESFORCE.md 4.11).

        "do not send sequence header for this call" (IBM), so one that carries it is refused.
        Strict reading 11.6: it comes after the poll that delivered ChasitorSessionData.
        """
        if self.phase is Phase.ENDED:
            return _FORBIDDEN
        if self.closing:
            return _CLOSING
        if sequenced:
            return text_reply(400, f"Unexpected header {SEQUENCE} on ChasitorResyncState")
        decoded = decode_body(ChasitorResyncState, body, "ChasitorResyncState")
        if isinstance(decoded, Reply):
            return decoded
        if self.init_body is None:
            return text_reply(500, "ChasitorResyncState refused: no ChasitorInit for this session")
        if decoded.organization_id != self.init_body.organization_id:
            return text_reply(
                400,
                f"Invalid ChasitorResyncState body: organizationId "
                f"{decoded.organization_id!r} is not the chat's organizationId",
            )
        if self.resync_pending and not self._session_data_delivered:
            return text_reply(
                500, "ChasitorResyncState refused: poll Messages for ChasitorSessionData first"
            )
        self.resync_pending = False
        self._record(self.visitor_events, {"type": "ChasitorResyncState"})
        return _OK

    def receive_delete(self, now: float) -> Reply:
        """Apply ``DELETE System/SessionId/{key}``: "Either one ends the session" (D-GS)."""
        self.end("deleted", now)
        return _OK

    # ----------------------------------------------------------------------------------
    # Messages long poll

    def open_poll(self, ack: str | None, now: float, *, hold: bool = False) -> Reply | None:
        """Start a ``GET System/Messages``.

        Args:
            ack: The ``ack`` query parameter, as sent.
            now: Loop time.
            hold: Hold the poll even if messages are waiting (an injected delay: the shell
                answers it later through :meth:`settle_poll`). Ack errors and the duplicate
                poll are still answered at once.

        Returns:
            The immediate reply, or None when the poll is now held (the shell waits for
            :meth:`settle_poll` or :meth:`expire_poll`).
        """
        self.polls += 1
        if self.poll_held:
            # "A duplicate long poll using the same session ID has caused the chat to
            # terminate" (D-ERR); strict reading 11.8. The held poll gets the 409 too.
            self.end("duplicate_poll", now, final_reply=text_reply(409, DUPLICATE_POLL_TEXT))
            return text_reply(409, DUPLICATE_POLL_TEXT)
        value = self._parse_ack(ack)
        if isinstance(value, Reply):
            self.last_poll_answer_at = now
            return value
        self._acknowledge(value)
        if self._outbox and not hold:
            return self._answer_with_batch(now)
        self.poll_held = True
        return None

    def _parse_ack(self, raw: str | None) -> int | Reply:
        if raw is None:
            if self.options.require_ack:
                return text_reply(400, "Missing query parameter ack")
            # Leniency switch (RC polled without ack): everything handed out is confirmed.
            return self.last_given
        value = parse_int(raw.strip())
        if value is None:
            return text_reply(400, f"Invalid query parameter ack: {raw!r}")
        # "ack starts at -1. Then ack = sequence of the last 200; repeat it after a 204"
        # (D-MSG). Valid: -1 while nothing is confirmed, or a sequence handed out that is not
        # older than the last one confirmed (acks never go backwards).
        if value == -1 and self.acked == -1:
            return value
        if value in self._given_set and value >= self.acked:
            return value
        return text_reply(
            409,
            f"Invalid ack {value}. Last sequence sent {self.last_given}, "
            f"last acknowledged {self.acked}",
        )

    def _acknowledge(self, ack: int) -> None:
        if ack <= self.acked:
            return
        self.acked = ack
        while self._outbox and self._outbox[0].num <= ack:
            self._outbox.popleft()
        while self._given and self._given[0] < ack:
            self._given_set.discard(self._given.popleft())

    def settle_poll(self, now: float, *, deliver: bool = True) -> Reply | None:
        """Whether the held poll must be answered now, and with what.

        The shell calls this after every input. Messages queued → 200 with a batch
        ("returns one batch as soon as messages exist", D-POLL); session over → 403 (or the
        409 of a duplicate poll); server switch → 503. ``deliver=False`` (a poll whose
        injected delay is still running) gives only the last two.
        """
        if not self.poll_held:
            return None
        if self.phase is Phase.ENDED:
            self.poll_held = False
            return self._final_reply
        if self.switch_pending:
            self.poll_held = False
            self.last_poll_answer_at = now
            return text_reply(503, "Affinity token changed: the session moved to another server")
        if self._outbox and deliver:
            return self._answer_with_batch(now)
        return None

    def expire_poll(self, now: float) -> Reply:
        """The hold time of the held poll ran out: 204 (SALESFORCE.md 11.9)."""
        reply = self.settle_poll(now)
        if reply is not None:
            return reply
        self.poll_held = False
        self.last_poll_answer_at = now
        return _NO_CONTENT

    def abandon_poll(self, now: float) -> None:
        """Forget the held poll: its client hung up (only with ``release_abandoned_polls``),
        or the server dropped or failed it itself (an outage), so it is no longer
        outstanding."""
        if self.poll_held:
            self.poll_held = False
            self.last_poll_answer_at = now

    def restart_poll_clock(self, now: float) -> None:
        """Count the clientPollTimeout from ``now``: the server could not be polled before
        (an outage just ended), so that time is not held against the visitor."""
        if self.phase is not Phase.ENDED and not self.poll_held:
            self.last_poll_answer_at = max(self.last_poll_answer_at, now)

    def _answer_with_batch(self, now: float) -> Reply:
        items = list(itertools.islice(self._outbox, self.options.max_batch))
        sequence = items[-1].num
        offset = self._offset_base + sequence
        if sequence not in self._given_set:
            self._given.append(sequence)
            self._given_set.add(sequence)
        self.poll_held = False
        self.last_poll_answer_at = now
        body = b'{"messages":[%s],"sequence":%d,"offset":%d}' % (
            b",".join(item.raw for item in items),
            sequence,
            offset,
        )
        for item in items:
            if item.kind == _ESTABLISHED and self.phase is Phase.ROUTING:
                self.phase = Phase.CHATTING
            elif item.kind == _SESSION_DATA:
                self._session_data_delivered = True
            elif item.kind == _FINAL:
                # "If the agent ends it, a ChatEnded message arrives and later requests get
                # 403" (SALESFORCE.md 3): the session is over once the visitor was told.
                reason = "agent" if item.type == "ChatEnded" else "request_failed"
                self.end(reason, now)
        return Reply(status=200, body=body, content_type="application/json")

    # ----------------------------------------------------------------------------------
    # Server side: agent messages, switches, ending

    def queue(self, type_: str, message: Any, now: float) -> int:
        """Queue a message for the visitor; it goes out with the next poll answer.

        Returns:
            The message's number (a batch's ``sequence`` is the number of its last message).

        Raises:
            SessionOver: The session ended, or a final message is already queued.
            OutboxFull: ``max_queued`` messages are already waiting.
        """
        if self.phase is Phase.ENDED or self.closing:
            raise SessionOver(f"session {self.id} is over; {type_} not queued")
        if len(self._outbox) >= self.options.max_queued:
            raise OutboxFull(
                f"session {self.id} already holds {len(self._outbox)} undelivered messages "
                f"(max_queued); {type_} refused"
            )
        kind = _PLAIN
        if type_ == "ChatEstablished":
            kind = _ESTABLISHED
        elif type_ in FINAL_TYPES:
            kind = _FINAL
            self.closing = True
        if type_ in ("ChatEstablished", "ChatTransferred") and isinstance(message, dict):
            self.agent_name = message.get("name", self.agent_name)
            self.agent_user_id = message.get("userId", self.agent_user_id)
        elif type_ == "ChatMessage" and isinstance(message, dict):
            self._transcribe("Agent", str(message.get("name", "")), str(message.get("text", "")),
                             now)
        num = self._next_num
        self._next_num += 1
        self._outbox.append(_Item(num, type_, encode({"type": type_, "message": message}), kind))
        self._record(self.agent_messages, (num, type_, message))
        return num

    def switch_server(self, now: float, new_token: str | None = None) -> str:
        """Move the session to "another server": new affinity token, old one gets 503.

        Until the visitor calls ReconnectSession, every request with the old token is
        answered 503 and the held poll too ("Cancel every in-flight inbound and outbound
        request ... call ReconnectSession", SALESFORCE.md 6).

        Returns:
            The new token (the visitor learns it from ReconnectSession).
        """
        if self.phase is Phase.ENDED:
            raise SessionOver(f"session {self.id} is over; no server switch")
        token = new_token or secrets.token_hex(4)
        while token == self.affinity_token or token in self.old_affinity_tokens:
            token = secrets.token_hex(4)
        self.old_affinity_tokens.append(self.affinity_token)
        del self.old_affinity_tokens[:-8]
        self.affinity_token = token
        self.switch_pending = True
        self.switches += 1
        return token

    def receive_reconnect(self, offset: str | None, now: float) -> Reply:
        """Apply ``GET System/ReconnectSession?ReconnectSession.offset=N`` (SALESFORCE.md 4.10).

        405 without a pending switch (observed by IBM). The offset must be that of a Messages
        answer the visitor really received, not older than its last ack (strict reading
        11.5); it confirms that answer like an ack. What the visitor has not received is
        delivered again after ChasitorSessionData, which comes first (11.6), with numbers
        that continue (11.7).
        """
        if not self.switch_pending:
            return text_reply(405, "ReconnectSession is not allowed: no server switch pending")
        if offset is None:
            return text_reply(400, "Missing query parameter ReconnectSession.offset")
        value = parse_int(offset.strip())
        if value is None:
            return text_reply(400, f"Invalid query parameter ReconnectSession.offset: {offset!r}")
        if self._given:
            sequence = value - self._offset_base
            if sequence not in self._given_set or sequence < self.acked:
                return text_reply(
                    400,
                    f"Invalid query parameter ReconnectSession.offset: {value} is not the "
                    "offset of a Messages answer at or after the last ack",
                )
            self._acknowledge(sequence)
            # Batches handed out after that one never reached the visitor: forget them,
            # their messages are renumbered below.
            while self._given and self._given[-1] > sequence:
                self._given_set.discard(self._given.pop())
        undelivered = list(self._outbox)
        self._outbox.clear()
        self._queue_session_data()
        for item in undelivered:
            item.num = self._next_num
            self._next_num += 1
            self._outbox.append(item)
        self.switch_pending = False
        self.resync_pending = True
        self._session_data_delivered = False
        # "resetSequence ... Reset the outgoing X-LIVEAGENT-SEQUENCE" (D-RECON); strict
        # reading 11.2: the next sequenced POST carries 1.
        self.last_accepted = 0
        self.last_poll_answer_at = now
        self._record(self.visitor_events, {"type": "ReconnectSession", "offset": value})
        return json_reply(
            {
                "messages": [
                    {
                        "type": "ReconnectSession",
                        "message": {"resetSequence": True, "affinityToken": self.affinity_token},
                    }
                ]
            }
        )

    def _queue_session_data(self) -> None:
        message = {
            "queuePosition": 0,
            "geoLocation": {"countryCode": "DE", "countryName": "Germany"},
            "url": "",
            "oref": "",
            "postChatUrl": "",
            "sneakPeekEnabled": False,
            "chatMessages": list(self._transcript),
        }
        num = self._next_num
        self._next_num += 1
        raw = encode({"type": "ChasitorSessionData", "message": message})
        self._outbox.append(_Item(num, "ChasitorSessionData", raw, _SESSION_DATA))
        self._record(self.agent_messages, (num, "ChasitorSessionData", message))

    def end(self, reason: str, now: float, *, final_reply: Reply | None = None) -> None:
        """End the session (idempotent): from now on every request gets 403."""
        if self.phase is Phase.ENDED:
            return
        self.phase = Phase.ENDED
        self.closing = False
        self.end_reason = reason
        self.ended_at = now
        self._outbox.clear()
        if final_reply is not None:
            self._final_reply = final_reply

    # ----------------------------------------------------------------------------------
    # Records

    def _record(self, target: list[Any], item: Any) -> None:
        if len(target) < self.options.record_max:
            target.append(item)
        else:
            self.records_dropped += 1

    def _transcribe(self, kind: str, name: str, content: str, now: float) -> None:
        # TranscriptEntry = {type: Agent/Chasitor/OperatorTransferred, name, content,
        # timestamp (ms), sequence} (D-PDF), for ChasitorSessionData after a switch.
        self._transcript.append(
            {
                "type": kind,
                "name": name,
                "content": content,
                "timestamp": self._wall_base_ms + int((now - self.created_at) * 1000),
                "sequence": len(self._transcript) + 1,
            }
        )

    def record(self) -> dict[str, Any]:
        """Everything recorded about this session, as JSON-able builtins."""
        record: dict[str, Any] = msgspec.to_builtins(
            {
                "id": self.id,
                "key": self.key,
                "affinity_token": self.affinity_token,
                "phase": self.phase.value,
                "ended": self.is_over,
                "end_reason": self.end_reason,
                "button_id": self.button_id,
                "api_version": self.api_version,
                "init": self.init,
                "visitor_messages": self.visitor_messages,
                "visitor_events": self.visitor_events,
                "agent_messages": [
                    {"number": num, "type": type_, "message": message}
                    for num, type_, message in self.agent_messages
                ],
                "requests": self.requests,
                "sequence_log": [
                    {"resource": res, "sequence": seq, "applied": applied}
                    for res, seq, applied in self.sequence_log
                ],
                "sequences_accepted": self.sequences_accepted,
                "duplicates_dropped": [
                    {"resource": res, "sequence": seq} for res, seq in self.duplicates_dropped
                ],
                "last_sequence_accepted": self.last_accepted,
                "last_sequence_sent": self.last_given,
                "acked": self.acked,
                "queued": self.queued,
                "polls": self.polls,
                "switches": self.switches,
                "records_dropped": self.records_dropped,
            }
        )
        return record
