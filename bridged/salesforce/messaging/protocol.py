"""The visitor side of one Enhanced Chat hand-over, as a sans-I/O state machine.

Theory of operation
-------------------
``MessagingSession`` holds everything that decides *what to send next* and *what a
Salesforce answer or event means* for one hand-over, which is "one guest token = one
conversation" (MESSAGING.md 7). It does no I/O and reads no clock: every input carries
``now`` (epoch seconds, ``time.time()``: the token's ``exp`` and a snapshot that outlives
the process are both wall-clock). The shell (transport and actor, written apart) makes the
HTTP exchanges, holds the event stream, sleeps and retries.

Inputs are commands (:meth:`~MessagingSession.start`, :meth:`~MessagingSession.send_text`,
:meth:`~MessagingSession.send_history`, :meth:`~MessagingSession.set_typing`,
:meth:`~MessagingSession.end`), answers (:meth:`~MessagingSession.receive_response`,
:meth:`~MessagingSession.receive_failure`), the stream (:meth:`~MessagingSession.stream_opened`,
:meth:`~MessagingSession.receive_event`, :meth:`~MessagingSession.stream_lost`) and the
passing of time (:meth:`~MessagingSession.wake`). Outputs are drained:
:meth:`~MessagingSession.requests_to_send` (REST requests),
:meth:`~MessagingSession.stream_to_open` (the event stream, kept apart: it is one long
response, not an exchange), :meth:`~MessagingSession.facts_received` (for OCP) and
:meth:`~MessagingSession.notices_received` (log lines); and read as predicates:
``wants_stream``, ``is_finished``, ``next_wake_at`` and its parts.

The order of a hand-over (7.2): "POST token ... → decode ``exp`` → open SSE (``Accept``,
``Authorization``, ``X-Org-Id`` 15, ``Last-Event-Id`` = token's ``lastEventId``) → POST
conversation with a fresh lowercase UUID and ``routingAttributes`` → then optionally send
the bot transcript as visitor messages, paced under 22 per minute, each with its own UUID."
The stream is opened *before* the conversation is created ("SSE first removes the doubt",
2.4), so the create waits for :meth:`~MessagingSession.stream_opened`.

States (every transition happens inside one method call)::

    IDLE --start()--> AUTHORIZING --token 200--> CONNECTING --stream_opened--> CREATING
    CREATING --create 2xx (or 409: it exists)--> WAITING
    WAITING --ParticipantChanged add Agent--> CHATTING          (AgentJoined)
    CHATTING --remove of the last Agent--> TRANSFERRING        (GET conversation asked)
    TRANSFERRING --add Agent--> CHATTING                       (Transferred)
    TRANSFERRING --routingStatus NEEDS_ROUTING--> ENDING       (Ended "agent", then DELETE)
    any live state --session Ended | 417--> ENDING             (Ended "agent", then DELETE)
    any live state --end() | token about to expire | no agent in time--> ENDING
                                                               (DELETE, then Ended)
    ENDING --DELETE answered--> ENDED
    any state --401 | refused | bad body--> ENDED | ERROR      (Ended "failed")

Requests. REST requests are returned by :meth:`~MessagingSession.requests_to_send`; each is
*in flight* from then until the shell answers it, and several may be in flight at once. The
core keeps at most one of a kind in flight, so that order holds where it matters: visitor
messages go one at a time, in order ("faster messages are held and sent in order, never
dropped", PROTOCOL.md 6); the DELETE waits for a message or create in flight.

Message ids. "Treat ``message.id`` as an idempotency key: on a timeout or 5xx, resend the
same id" (7.3). The id is ``uuid5(conversation id, "ocp:" + OCP id)``: the same OCP message
is the same Salesforce message in every attempt and in every process, without storage. The
bot history lines are ``uuid5(conversation id, "history:" + n)``. An OCP id already
delivered is answered ``Delivered`` again without a request.

Pacing. "22 inbound (end-user) messages per conversation per minute" (H-RATE, 2.5). A send
counts from the moment its answer came (a conservative stand-in for when Salesforce
counted it), unless the answer was a 429 or another refusal; the history counts too. When
22 counted in the last 60 s, the next message waits until :attr:`next_send_at`.

Events. "parse ``entryPayload`` a second time, drop events for other conversation ids,
drop ``sender.role == "EndUser"`` echoes, ignore unknown event types, ignore Supervisor
participants" (7.4). "Agent joined = ParticipantChanged ``add`` with role Agent (display
name from ``entries[].displayName``). Agent left = ``remove`` with role Agent → check ``GET
/conversation/{id}`` (``TRANSFER`` → keep waiting for the next ``add``; ``NEEDS_ROUTING`` →
agent ended) and/or SESSION_STATUS_CHANGED ended → end the hand-over" (7.5).

Reconciliation. "after every reconnect, also call *list entries* (2.9) with
``startTimestamp`` = last seen ``transcriptedTimestamp`` and merge by ``identifier``,
de-duplicating" (4.3). While that runs, live events are held (bounded) and visitor messages
wait, so that what was missed reaches OCP before what came after it, and a message whose
fate a restart left unknown is recognised by its echo instead of being sent twice. Entry ids
already processed are kept in a bounded set (and below it a timestamp floor); both are in
the snapshot, so neither a stream replay nor a reconciliation shows an agent event twice.

Faults. Stream: "Reconnect SSE with backoff (1 s × 1.5, cap 30 s, about 10 tries)" (7.7):
:meth:`~MessagingSession.stream_lost` makes a new stream request whose ``attempt`` counts the
failures since the last good open; the shell waits ``retry_delay(STREAM_RETRY, attempt)``
first; after :data:`MAX_STREAM_ATTEMPTS` the chat fails. REST: 429 and 5xx (and no answer)
send the same request again with ``attempt`` + 1 (the shell waits
``retry_delay(its policy, attempt)``); 5xx and no answer count toward
:data:`MAX_FAILURES`, 429 never does ("a burst of ``start``\\ s waits its turn, it never fails
for that reason", PROTOCOL.md 6). 401 ("Jwt is expired") and 403 end the chat ``failed``;
417 ("no messaging session exists") means the agent ended it. "on 401 or after ``exp``, end
the hand-over (no renewal for guests)"; the core ends it :data:`TOKEN_MARGIN_S` before
``exp`` ("schedule a graceful end ... a few minutes before exp", 4.1). A body not as
documented raises :class:`~bridged.errors.RemoteProtocolError` inside the core, which fails
that chat (state ERROR) with a detail naming the field.

Ending. "Bot side ends → DELETE ``/conversation/{id}?esDeveloperName=`` (expect 204)"
(7.6). Whoever ends the chat, the DELETE is sent exactly once, when a conversation may exist
and the token is still good (after a 401 or past ``exp`` it could not succeed; after
CLOSE_CONVERSATION the conversation is closed already). ``Ended`` is emitted once: at once
when Salesforce ended the chat (the agent is gone; the DELETE is clean-up), after the
DELETE's answer when bridged ends it (OCP asked, the token runs out, no agent came). Visitor
messages not yet delivered are reported ``Undelivered`` just before it.

How a shell drives it
---------------------
1. Make a session (``MessagingSession(params)``, or ``MessagingSession.restore(params,
   snapshot, now=...)`` after a restart) and call ``start(now=...)`` once for a new one.
   Drain the outputs (step 2) at once: a restored session may already have a stream to
   open, a DELETE to send or an ``Ended`` to report.
2. After every input, drain the outputs:

   * ``requests_to_send()``: send each one (concurrently is fine). If ``request.attempt`` is
     not 0, wait ``retry_delay(policy, request.attempt)`` first. The URL is the profile's
     ``scrt_url`` + ``request.path`` + ``request.query``. Answer each exactly once: with
     ``receive_response(request, status, body, now=...)`` when an HTTP answer came, or
     ``receive_failure(request, kind, now=...)`` when none did (timeout, connection).
     Never log ``request.headers``: they hold the bearer token.
   * ``stream_to_open()``: when it gives a request, (re)open the event stream with it, after
     ``retry_delay(STREAM_RETRY, request.attempt)`` when ``attempt`` is not 0. On a 200
     ``text/event-stream`` answer call ``stream_opened(now=...)`` and feed the body to an
     :class:`~bridged.salesforce.messaging.sse.SseParser` (``reset()`` it per connection),
     passing each event to ``receive_event(event, now=...)`` (a batch for which
     :func:`only_keepalives` holds may be skipped: it changes nothing). When the open is
     refused, or the stream ends, breaks or is silent longer than a read timeout (the sample
     app uses 90 s), call ``stream_lost(now=..., status=..., body=...)`` (``status`` ``None`` when
     there was no HTTP answer).
   * While ``wants_stream`` is false, close the stream if one is open.
   * ``facts_received()``: relay to the chat (``chat.emit``), in order.
   * ``notices_received()``: log them.
3. Sleep until the next input or ``next_wake_at`` (if not ``None``), then call
   ``wake(now=...)``.
4. Save ``snapshot()`` whenever it may have changed (after any input); restore with it.
5. Stop once ``is_finished``: every request answered, ``Ended`` emitted.

UNCONFIRMED points and the readings chosen (MESSAGING.md 8)
-----------------------------------------------------------
* Success codes: any 2xx is success for create, send, typing and DELETE; 409 on create (the
  conversation exists) is taken as success, since only a retry of bridged's own create
  makes that id.
* ``isNewMessagingSession`` and ``routingAttributes`` are never sent on a message (the
  sample's default); a 417 ends the hand-over as ``agent`` (7.3's "simpler" choice).
* ``language`` goes on each message (2.5), not on create (the sample does not send it).
* The token lives until its ``exp``; without one, :data:`DEFAULT_TOKEN_LIFETIME_S` (the 6 h
  seen once). No renewal.
* Replay after ``Last-Event-Id`` is not relied on: every reopen reconciles with *list
  entries* (``direction=FromStart``, ``startTimestamp`` one millisecond before the newest
  entry seen, pages of 50, at most :data:`MAX_RECONCILE_PAGES`). If the list cannot be had
  after :data:`MAX_FAILURES` tries, the chat goes on with a notice.
* ``CONVERSATION_SESSION_STATUS_CHANGED``: the status is read from ``sessionStatus``; the
  value ``Ended`` (any case) ends the hand-over; ``sessionEndedByRole`` is not trusted.
  Ended before any Agent or Chatbot joined reads as ``no_agent``, after as ``agent``.
* ``CONVERSATION_CLOSE_CONVERSATION`` not caused by bridged's DELETE ends the hand-over as
  ``agent`` (Session-Based Chat closes the conversation with the session, H-SBC).
* ``CONVERSATION_QUEUE_POSITION``: position and estimate read wherever they may be
  (``queuePosition`` or ``position``; ``estimatedWaitTime``); an event with neither is
  ignored.
* ``routingStatus`` after an Agent ``remove``: only ``NEEDS_ROUTING`` ends; ``TRANSFER``,
  ``INITIAL``, ``ROUTED`` and anything else keep waiting for the next Agent.
* A failed ``Transfer`` routing result is only logged (the sample ignores those too); a
  failed ``Initial`` one (any ``failureType`` but ``None``) ends the chat ``failed``.
* Server de-duplication of a repeated ``message.id`` is not relied on: a message whose
  fate is unknown after a restart is resent only if reconciliation shows no echo of it.
* 400 and other refusals of one message (413, ...) make that message ``Undelivered`` and
  the chat goes on; 404 means the conversation is gone (``failed``).
* A second concurrent stream per token: bridged never opens one, but after a drop the server
  may not have noticed the old one gone; a 409 on opening the stream is retried with backoff
  like a 5xx (any other 4xx fails the chat).
* A routing attribute longer than its pre-chat field's ``maxLength`` (from the token
  answer's deployment configuration) is cut to it before the create, the history's field
  keeping its newest lines; without that configuration the value goes as it is.
"""

from __future__ import annotations

__all__ = [
    "API",
    "DEFAULT_TOKEN_LIFETIME_S",
    "DELIVERED_IDS_MAX",
    "ENTRIES_PAGE",
    "MAX_FAILURES",
    "MAX_HELD_EVENTS",
    "MAX_MESSAGES_PER_MINUTE",
    "MAX_RECONCILE_PAGES",
    "MAX_STREAM_ATTEMPTS",
    "PACING_WINDOW_S",
    "SEEN_IDS_MAX",
    "SSE_PATH",
    "STREAM_RETRY",
    "TOKEN_MARGIN_S",
    "FailureKind",
    "HttpRequest",
    "MessagingParams",
    "MessagingSession",
    "MessagingSnapshot",
    "PendingMessage",
    "Purpose",
    "State",
    "message_id",
    "only_keepalives",
]

import enum
import hashlib
import uuid
from collections.abc import Iterable, Sequence

import msgspec

from bridged._lists import appended
from bridged.chats import facts
from bridged.chats.policy import RetryPolicy
from bridged.errors import LocalProtocolError, RemoteProtocolError
from bridged.history.decoder import OMITTED_MARKER, prechat_value
from bridged.salesforce.messaging import wire
from bridged.salesforce.messaging.sse import SseEvent

API = "/iamessage/api/v2"
SSE_PATH = "/eventrouter/v1/sse"

# "22 inbound messages per conversation per minute" (H-RATE).
MAX_MESSAGES_PER_MINUTE = 22
PACING_WINDOW_S = 60.0
# "schedule a graceful end (bot-side notice + DELETE) a few minutes before exp" (4.1).
TOKEN_MARGIN_S = 300.0
# "exp - iat = 21,600 s = 6 hours" in the one real token seen (2.2).
DEFAULT_TOKEN_LIFETIME_S = 21_600.0
# "wait 1000 ms × 1.5^(attempt-1) capped at 30 s, at most 10 attempts" (4.3).
STREAM_RETRY = RetryPolicy(initial_s=1.0, factor=1.5, max_delay_s=30.0)
MAX_STREAM_ATTEMPTS = 10
# A REST request that gets no answer (or a 5xx) this many times fails the chat.
MAX_FAILURES = 6
# "limit default 20, max 50" (2.9).
ENTRIES_PAGE = 50
MAX_RECONCILE_PAGES = 10
# Live events held while a reconciliation runs; past this they are processed at once.
MAX_HELD_EVENTS = 500
# Entry ids kept for de-duplication (and persisted); older entries fall under a floor.
SEEN_IDS_MAX = 128
DELIVERED_IDS_MAX = 64
_TYPING_IDS_MAX = 32
_ENTRY_FILTER = "Message,ParticipantChanged,RoutingResult,SessionStatusChanged"

# The event types of MESSAGING.md 3.5 that carry nothing for OCP: ignored on purpose.
_IGNORED_EVENTS = frozenset({
    "CONVERSATION_DELIVERY_ACKNOWLEDGEMENT",
    "CONVERSATION_READ_ACKNOWLEDGEMENT",
    "CONVERSATION_PROGRESS_INDICATOR",
    "CONVERSATION_STREAMING_TOKEN",
    "CONVERSATION_CLIENT_ACTION",
    "CONVERSATION_CLIENT_MENU",
    "CONVERSATION_ROUTING_WORK_RESULT",
    "CONVERSATION_END_USER_CONSENT_UPDATED",
    "CONVERSATION_TYPING_INDICATOR",
    "CHOICES_RESPONSE_MESSAGE",
})
_ENTRY_EVENTS = frozenset({
    "CONVERSATION_MESSAGE",
    "CONVERSATION_PARTICIPANT_CHANGED",
    "CONVERSATION_ROUTING_RESULT",
    "CONVERSATION_TYPING_STARTED_INDICATOR",
    "CONVERSATION_TYPING_STOPPED_INDICATOR",
    "CONVERSATION_SESSION_STATUS_CHANGED",
    "CONVERSATION_QUEUE_POSITION",
})
_CLOSE_EVENT = "CONVERSATION_CLOSE_CONVERSATION"
_TYPING_STARTED = "TypingStartedIndicator"
_TYPING_STOPPED = "TypingStoppedIndicator"
_PING = "ping"
_JSON_HEADERS = (("Content-Type", "application/json"),)

_TOKEN_EXPIRED = "the Salesforce access token expired"
_TOKEN_EXPIRED_WHILE_DOWN = "the Salesforce access token expired while bridged was restarting"
_UNDELIVERED = "the chat ended before Salesforce confirmed the message"


class State(enum.Enum):
    """Where the hand-over is (see the module docstring for the transitions)."""

    IDLE = "idle"
    AUTHORIZING = "authorizing"
    CONNECTING = "connecting"
    CREATING = "creating"
    WAITING = "waiting"
    CHATTING = "chatting"
    TRANSFERRING = "transferring"
    ENDING = "ending"
    ENDED = "ended"
    ERROR = "error"


# A tuple, not a set: ``in`` compares members by identity in C, where a set would call the
# Enum's __hash__ (Python code) at every test, and the session tests its state dozens of
# times per message.
_LIVE = (State.CHATTING, State.WAITING, State.TRANSFERRING, State.CREATING, State.CONNECTING,
         State.AUTHORIZING)


class Purpose(enum.Enum):
    """What a request is for; the value names it in logs and metrics."""

    ACCESS_TOKEN = "access-token"
    EVENTS = "sse"
    CREATE_CONVERSATION = "create-conversation"
    SEND_MESSAGE = "message"
    TYPING = "typing"
    LIST_ENTRIES = "entries"
    GET_CONVERSATION = "routing-status"
    CLOSE_CONVERSATION = "close-conversation"


class FailureKind(enum.Enum):
    """Why a request got no HTTP answer (both are retried alike; the kind is for logs)."""

    TIMEOUT = "timeout"
    CONNECTION = "connection"


class HttpRequest(msgspec.Struct, frozen=True, kw_only=True, gc=False):
    """One HTTP request the session wants made.

    Attributes:
        method: ``GET``, ``POST`` or ``DELETE``.
        path: the path on the SCRT host, from ``/`` (``/iamessage/api/v2/...``).
        purpose: what it is for.
        headers: the headers to send (they hold the bearer token: never log them).
        query: query parameters, in order.
        body: the JSON body, if any.
        attempt: 0 for a first attempt; n for the n-th retry of the same request, which
            the shell sends after its backoff delay for attempt n.
        failures: how many attempts of it got a 5xx or no answer (the core's count).
        ref: the Salesforce message id of a send; the entries page of a list.
    """

    method: str
    path: str
    purpose: Purpose
    headers: tuple[tuple[str, str], ...]
    query: tuple[tuple[str, str], ...] = ()
    body: bytes | None = None
    attempt: int = 0
    failures: int = 0
    ref: str | None = None


class MessagingParams(msgspec.Struct, frozen=True, kw_only=True):
    """What one hand-over needs, from the effective (templated) webchat configuration.

    Attributes:
        organization_id: the org id, 15 or 18 characters (``X-Org-Id`` gets the first 15).
        es_developer_name: the Embedded Service deployment's API name (Custom Client).
        language: sent with each message (``""``: not sent).
        routing_attributes: the pre-chat fields by API name, values already rendered
            (the history field included, if the profile names one).
        agent_wait_timeout_s: no agent within this many seconds of the request ends the
            chat ``no_agent``; 0 is no limit.
        capabilities_version: "The sample's PR #9 ... settled on ``"1"``" (2.1).
        app_name: ``context.appName`` of the token request.
        client_version: ``context.clientVersion`` of the token request.
        history_attribute: the routing attribute that holds the bot history, if any: cut
            to its field's ``maxLength`` it keeps its newest lines (the others keep their
            beginning).
        messages_per_window: visitor messages Salesforce takes per conversation per
            ``pacing_window_s`` ("22 inbound messages per conversation per minute").
        pacing_window_s: the window of that limit (a minute; tests shorten it).
    """

    organization_id: str
    es_developer_name: str
    language: str = ""
    routing_attributes: dict[str, str] = {}
    agent_wait_timeout_s: float = 0.0
    capabilities_version: str = "1"
    app_name: str = "bridged"
    client_version: str = "0.1.0"
    history_attribute: str = ""
    messages_per_window: int = MAX_MESSAGES_PER_MINUTE
    pacing_window_s: float = PACING_WINDOW_S


class PendingMessage(msgspec.Struct, kw_only=True, gc=False):
    """A visitor (or history) message not yet known delivered.

    Attributes:
        sf_id: its Salesforce ``message.id``.
        ocp_id: OCP's id, or ``None`` for a history line.
        text: the text.
        attempts: how many times it was sent (its fate is unknown once it is not 0).
        failures: how many of those got a 5xx or no answer.
    """

    sf_id: str
    ocp_id: str | None
    text: str
    attempts: int = 0
    failures: int = 0


class MessagingSnapshot(msgspec.Struct, frozen=True, kw_only=True, gc=False):
    """Everything a hand-over needs to go on in another process (see ``snapshot()``).

    Bounded: ``seen_ids`` by :data:`SEEN_IDS_MAX`, ``delivered`` by 64 ids, ``sent_at`` by
    22 times, ``agents`` by the agents present; ``pending`` by what the chat's mailbox let
    in (and the history).
    """

    state: State
    conversation_id: str
    access_token: str | None
    token_exp: float | None
    last_event_id: str
    last_entry_ms: int
    seen_ids: list[str]
    seen_floor_ms: int
    agent: str | None
    agents: dict[str, str]
    agent_ever_joined: bool
    bot_seen: bool
    pending: list[PendingMessage]
    delivered: list[str]
    sent_at: list[float]
    history_count: int
    created: bool
    requested_at: float | None
    end: facts.Ended | None
    end_after_delete: bool
    delete_sent: bool
    ended_emitted: bool
    routing_check: bool
    poisoned: bool
    # The routing attributes as sent at create (cut to the deployment's field lengths); None
    # before the token answer told those lengths.
    routing_attributes: dict[str, str] | None = None
    routing_status: str | None = None


def message_id(conversation_id: str, name: str) -> str:
    """The Salesforce message id for ``name`` in a conversation: a lowercase UUID (uuid5).

    Args:
        conversation_id: the conversation's lowercase UUID (the uuid5 namespace).
        name: ``"ocp:" + OCP message id``, or ``"history:" + line number``.
    """
    return _uuid5(uuid.UUID(conversation_id).bytes, name)


def only_keepalives(events: Iterable[SseEvent], last_event_id: str) -> bool:
    """Whether ``events`` tell the session nothing: none, or only pings under the last event
    id already read (``last_event_id``), for which :meth:`MessagingSession.receive_event`
    changes nothing. The shell hands such a batch to no one (no turn for a keep-alive)."""
    return all(event.event == _PING and event.id == last_event_id for event in events)


def _uuid5(namespace: bytes, name: str) -> str:
    """``str(uuid.uuid5(UUID(bytes=namespace), name))``, without the UUID objects: RFC 4122
    section 4.3, the SHA-1 of namespace and name with the version (5) and variant set."""
    digest = bytearray(hashlib.sha1(namespace + name.encode()).digest()[:16])
    digest[6] = (digest[6] & 0x0F) | 0x50
    digest[8] = (digest[8] & 0x3F) | 0x80
    h = digest.hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def _check_conversation_id(value: str) -> str:
    """"The UUID must be in lowercase" (D-SSE): refuse anything else early."""
    try:
        canonical = str(uuid.UUID(value))
    except ValueError:
        raise LocalProtocolError(f"conversation id {value!r} is not a UUID") from None
    if canonical != value:
        raise LocalProtocolError(f"conversation id {value!r} is not a lowercase UUID")
    return value


class _Seen:
    """A bounded set of entry ids in arrival order, with a timestamp floor below it.

    An entry older than every id the set still holds (its ``transcriptedTimestamp`` below the
    newest evicted one) was processed long ago: the floor covers what the set forgot.

    One dict, id to timestamp, in insertion order: membership, eviction of the oldest and the
    list of ids for a snapshot (taken at every save) are each one C-level operation.
    """

    __slots__ = ("_ids", "floor_ms")

    def __init__(self, ids: Iterable[str] = (), floor_ms: int = 0) -> None:
        self._ids: dict[str, int] = dict.fromkeys(ids, floor_ms)
        self.floor_ms = floor_ms

    def __contains__(self, item: tuple[str, int]) -> bool:
        entry_id, ts = item
        return entry_id in self._ids or 0 < ts < self.floor_ms

    def add(self, entry_id: str, ts: int) -> None:
        ids = self._ids
        if entry_id in ids:
            return
        ids[entry_id] = ts
        while len(ids) > SEEN_IDS_MAX:
            old = next(iter(ids))
            old_ts = ids.pop(old)
            if old_ts > self.floor_ms:
                self.floor_ms = old_ts

    def ids(self) -> list[str]:
        return list(self._ids)


def _keep_newest(ids: list[str], new: str, most: int) -> None:
    """Append ``new``; forget the oldest beyond ``most`` (what ``deque(maxlen=most)`` does)."""
    ids.append(new)
    if len(ids) > most:
        del ids[0]

class MessagingSession:
    """The visitor side of one Enhanced Chat hand-over (sans-I/O).

    Args:
        params: what to ask for.
        conversation_id: the conversation's id (a lowercase UUID); a fresh ``uuid4`` when
            not given. Tests pass one to get known ids.
    """

    # Slots, not an instance dict: one per chat, and a class of more than 30 attributes
    # gets no key-sharing dict (about 1.6 KiB each here).
    __slots__ = ("__weakref__", "_agents", "_bearer", "_bot_seen", "_created", "_delete_sent",
                 "_delivered", "_end", "_end_after_delete", "_ended_emitted", "_facts", "_held",
                 "_history_count", "_in_flight", "_namespace", "_notices", "_outbox", "_pending",
                 "_poisoned", "_reconcile_entries", "_reconcile_pages", "_reconcile_wanted",
                 "_rest_auth", "_routing_attributes", "_routing_check", "_seen", "_sent_at",
                 "_stream_ever_opened", "_stream_failures", "_stream_request", "_stream_state",
                 "_typing_ids", "_typing_sent", "_typing_wanted", "_unknown_events", "agent",
                 "agent_ever_joined", "conversation_id", "last_entry_ms", "last_event_id",
                 "org_id", "params", "requested_at", "routing_status", "state", "token_exp")

    def __init__(self, params: MessagingParams, *, conversation_id: str | None = None) -> None:
        self.params = params
        self.org_id = wire.org_id_15(params.organization_id)
        self.conversation_id = _check_conversation_id(conversation_id or str(uuid.uuid4()))
        self._namespace = uuid.UUID(self.conversation_id).bytes  # of the message ids (uuid5)
        self.state = State.IDLE
        # The guest token is kept once, inside its Authorization value (it is ~1 KiB).
        self._bearer: str | None = None
        self._rest_auth: tuple[tuple[str, str], ...] | None = None
        self.token_exp: float | None = None
        self.last_event_id = "0"
        self.last_entry_ms = 0
        self.agent: str | None = None  # the agent OCP knows, by display name
        self._agents: dict[str, str] = {}  # Agents present: subject (or name) → display name
        self.agent_ever_joined = False
        self._bot_seen = False
        self._seen = _Seen()
        # The newest ids, at most _TYPING_IDS_MAX and DELIVERED_IDS_MAX: short lists, not
        # bounded deques (an empty deque takes 760 bytes, per chat).
        self._typing_ids: list[str] = []
        # Lists, not deques: both are short, and an empty deque takes 760 bytes (per chat).
        self._pending: list[PendingMessage] = []
        self._delivered: list[str] = []
        self._sent_at: list[float] = []
        self._history_count = 0
        self.requested_at: float | None = None
        self._created = False
        self._end: facts.Ended | None = None
        self._end_after_delete = False
        self._delete_sent = False
        self._ended_emitted = False
        self._poisoned = False
        self._routing_check = False  # a GET conversation is wanted (an Agent left)
        self._typing_wanted = False
        self._typing_sent = False
        # The stream: wanted → a request to drain → opening → open.
        self._stream_request: HttpRequest | None = None
        self._stream_state = "closed"  # closed | requested | opening | open
        self._stream_ever_opened = False
        self._stream_failures = 0
        # Reconciliation: wanted after a reopen; pages collected; live events held.
        self._reconcile_wanted = False
        # () while empty, these and the REST ones below (bridged._lists): a chat holds them
        # empty nearly all its life.
        self._reconcile_entries: list[wire.ConversationEntry] | tuple[()] = ()
        self._reconcile_pages = 0
        self._held: list[tuple[str, wire.SseData]] | tuple[()] = ()
        # The routing attributes to send at create, once the token answer gave the fields.
        self._routing_attributes: dict[str, str] | None = None
        # The last routing news, for the admin view: a routing result's type, or the
        # conversation's routingStatus.
        self.routing_status: str | None = None
        self._outbox: list[HttpRequest] | tuple[()] = ()
        self._in_flight: list[HttpRequest] | tuple[()] = ()
        self._facts: list[facts.Fact] | tuple[()] = ()
        self._notices: list[tuple[str, str]] | tuple[()] = ()
        self._unknown_events: set[str] | None = None  # made at the first one (216 bytes)

    # --- predicates -------------------------------------------------------------------

    @property
    def access_token(self) -> str | None:
        """The guest access token, once the token answer came."""
        bearer = self._bearer
        return None if bearer is None else bearer[7:]

    @access_token.setter
    def access_token(self, value: str | None) -> None:
        self._bearer = None if value is None else f"Bearer {value}"
        self._rest_auth = None

    @property
    def is_finished(self) -> bool:
        """The hand-over is over: ``Ended`` was emitted and no request is outstanding."""
        return self.state in (State.ENDED, State.ERROR) and not self._in_flight

    @property
    def wants_stream(self) -> bool:
        """Whether the event stream should be open (the shell closes it when false)."""
        return self.state in _LIVE and self.state is not State.AUTHORIZING

    @property
    def accepts_commands(self) -> bool:
        """Whether ``send_text``, ``send_history`` and ``set_typing`` may be called."""
        return self.state in _LIVE and self._end is None

    @property
    def pending_messages(self) -> int:
        """How many visitor and history messages are not yet known delivered."""
        return len(self._pending)

    @property
    def token_expires_at(self) -> float | None:
        """The access token's ``exp`` (epoch seconds), once known."""
        return self.token_exp

    @property
    def end_by(self) -> float | None:
        """When the core ends the hand-over because the token runs out (``exp`` - margin)."""
        if self.token_exp is None or self.state not in _LIVE:
            return None
        return self.token_exp - TOKEN_MARGIN_S

    @property
    def agent_wait_deadline(self) -> float | None:
        """When the wait for a first agent ends the chat ``no_agent`` (``None``: no limit)."""
        timeout = self.params.agent_wait_timeout_s
        if (timeout <= 0 or self.requested_at is None or self.agent_ever_joined
                or self.state not in _LIVE):
            return None
        return self.requested_at + timeout

    @property
    def next_send_at(self) -> float | None:
        """When the next message held by pacing may go (``None``: none is held by pacing)."""
        if (not self._pending or len(self._sent_at) < self.params.messages_per_window
                or self.state not in _LIVE):
            return None
        return self._sent_at[0] + self.params.pacing_window_s

    @property
    def next_wake_at(self) -> float | None:
        """The earliest time the shell must call :meth:`wake` (``None``: only on input)."""
        if self.state not in _LIVE:
            return None  # each of the three is None then
        due = self.next_send_at
        for t in (self.end_by, self.agent_wait_deadline):
            if t is not None and (due is None or t < due):
                due = t
        return due

    @property
    def reconciling(self) -> bool:
        """Whether missed entries are being fetched (live events are held meanwhile)."""
        return self._reconcile_wanted and self._created and self.state in _LIVE

    # --- keeping across restarts ------------------------------------------------------

    def snapshot(self) -> MessagingSnapshot:
        """The hand-over's state, to go on after a restart of bridged.

        Requests in flight are not kept: after the restart each is made again (a message
        with its same id, once reconciliation has shown that it did not arrive).
        """
        return MessagingSnapshot(
            state=self.state, conversation_id=self.conversation_id,
            access_token=self.access_token, token_exp=self.token_exp,
            last_event_id=self.last_event_id, last_entry_ms=self.last_entry_ms,
            seen_ids=self._seen.ids(), seen_floor_ms=self._seen.floor_ms, agent=self.agent,
            agents=dict(self._agents), agent_ever_joined=self.agent_ever_joined,
            bot_seen=self._bot_seen,
            pending=[msgspec.structs.replace(p) for p in self._pending],
            delivered=list(self._delivered), sent_at=list(self._sent_at),
            history_count=self._history_count, created=self._created,
            requested_at=self.requested_at,
            end=self._end, end_after_delete=self._end_after_delete,
            delete_sent=self._delete_sent and not self._delete_in_flight(),
            ended_emitted=self._ended_emitted,
            # A routing-status check on the wire is asked again after a restart.
            routing_check=self._routing_check or self._busy(Purpose.GET_CONVERSATION),
            poisoned=self._poisoned,
            routing_attributes=self._routing_attributes,
            routing_status=self.routing_status,
        )

    @classmethod
    def restore(cls, params: MessagingParams, snapshot: MessagingSnapshot, *,
                now: float) -> MessagingSession:
        """A session that goes on from ``snapshot``, with nothing in flight.

        It reopens the stream from the last event id and reconciles before sending again.
        A token past its ``exp`` ends the chat ``failed`` at once, saying so; one about to
        expire ends it gracefully (DELETE, then ``Ended``).
        """
        s = cls(params, conversation_id=snapshot.conversation_id)
        s.state = snapshot.state
        s.access_token, s.token_exp = snapshot.access_token, snapshot.token_exp
        s.last_event_id, s.last_entry_ms = snapshot.last_event_id, snapshot.last_entry_ms
        s._seen = _Seen(snapshot.seen_ids, snapshot.seen_floor_ms)
        s.agent, s._agents = snapshot.agent, dict(snapshot.agents)
        s.agent_ever_joined, s._bot_seen = snapshot.agent_ever_joined, snapshot.bot_seen
        s._pending = [msgspec.structs.replace(p) for p in snapshot.pending]
        s._delivered = list(snapshot.delivered)[-DELIVERED_IDS_MAX:]
        s._sent_at = list(snapshot.sent_at)
        s._history_count, s.requested_at = snapshot.history_count, snapshot.requested_at
        s._end, s._end_after_delete = snapshot.end, snapshot.end_after_delete
        s._delete_sent, s._ended_emitted = snapshot.delete_sent, snapshot.ended_emitted
        s._routing_check, s._poisoned = snapshot.routing_check, snapshot.poisoned
        s._created = snapshot.created
        s._routing_attributes = snapshot.routing_attributes
        s.routing_status = snapshot.routing_status
        s._restart(now)
        return s

    def _restart(self, now: float) -> None:
        if self.state in (State.ENDED, State.ERROR):
            return
        if self.state is State.IDLE:
            return
        if self.state is State.AUTHORIZING or self._bearer is None:
            self.state = State.AUTHORIZING  # the token answer was lost: ask again
            self._pump(now)
            return
        if self.token_exp is not None and now >= self.token_exp:
            # A DELETE with a dead token could not succeed: none is sent.
            self._delete_sent = True
            self._conclude(facts.Ended(reason="failed", detail=_TOKEN_EXPIRED_WHILE_DOWN))
            return
        if self.state in _LIVE:
            if self.state is State.CREATING:
                self._created = False  # its answer was lost: create again (409 = it exists)
            self._stream_ever_opened = self.state is not State.CONNECTING
            self._reconcile_wanted = self._created
            self._want_stream()
        self._pump(now)

    # --- commands ---------------------------------------------------------------------

    def start(self, *, now: float) -> None:
        """Begin the hand-over: ask for a guest access token first."""
        if self.state is not State.IDLE:
            raise LocalProtocolError(f"start() in state {self.state.value}")
        self.state = State.AUTHORIZING
        self._pump(now)

    def send_text(self, ocp_id: str, text: str, *, now: float) -> None:
        """Queue a visitor message; it goes out in order, paced, once the conversation exists.

        A message whose ``ocp_id`` was delivered already is answered ``Delivered`` again
        without a request; one already waiting is not queued twice.
        """
        self._check_live("send_text")
        if ocp_id in self._delivered:
            self._fact(facts.Delivered(id=ocp_id))
            return
        if any(p.ocp_id == ocp_id for p in self._pending):
            self._notice(("message_already_queued", ocp_id))
            return
        sf_id = _uuid5(self._namespace, f"ocp:{ocp_id}")
        self._pending.append(PendingMessage(sf_id=sf_id, ocp_id=ocp_id, text=text))
        self._pump(now)

    def send_history(self, lines: list[str], *, now: float) -> None:
        """Queue the bot history as the conversation's first visitor messages.

        The lines go ahead of every visitor message not sent yet (the one on the wire, if
        any, stays first).
        """
        self._check_live("send_history")
        items = []
        for text in lines:
            name = f"history:{self._history_count}"
            self._history_count += 1
            items.append(PendingMessage(sf_id=_uuid5(self._namespace, name),
                                        ocp_id=None, text=text))
        at = 1 if self._pending and self._pending[0].attempts else 0
        for offset, item in enumerate(items):
            self._pending.insert(at + offset, item)
        self._pump(now)

    def set_typing(self, active: bool, *, now: float) -> None:
        """The visitor is typing or stopped; only the latest state is sent, to an agent.

        Typing is a state, not a message: before an agent is there nobody sees it, and a
        change not sent yet is replaced by a newer one.
        """
        self._check_live("set_typing")
        self._typing_wanted = active
        self._pump(now)

    def end(self, *, now: float, reason: facts.EndReason = "client", detail: str = "") -> None:
        """End the hand-over from bridged's side: DELETE the conversation, then ``Ended``.

        Idempotent; an end already under way keeps its reason.
        """
        if self.state not in _LIVE:
            return
        self._end_from_bridged(facts.Ended(reason=reason, detail=detail), now)

    def give_up(self, detail: str, *, now: float) -> None:
        """The shell cannot go on (for example a host not allowed): end ``failed``."""
        if self.state in _LIVE:
            self._end_from_bridged(facts.Ended(reason="failed", detail=detail), now)

    def farewell(self, *, now: float) -> HttpRequest | None:
        """The DELETE that ends the conversation at Salesforce after the shell broke down.

        For a shell whose actor crashed (a bug): whatever state the session is in, the agent
        must not keep a ghost chat. ``None`` when there is nothing to close, or it cannot be
        closed (no token, or past ``exp``), or it was closed already. The answer, if any,
        need not be given back: the session is not used after this.
        """
        if (self._delete_sent and not self._delete_in_flight()) or self._bearer is None:
            return None
        if not (self._created or self._busy(Purpose.CREATE_CONVERSATION)):
            return None
        if self.token_exp is not None and now >= self.token_exp:
            return None
        self._delete_sent = True
        return HttpRequest(
            method="DELETE", path=self._conversation_path(),
            query=(("esDeveloperName", self.params.es_developer_name),),
            purpose=Purpose.CLOSE_CONVERSATION, headers=self._rest_headers())

    def wake(self, *, now: float) -> None:
        """Time passed: release paced messages, and end at a deadline that has come."""
        self._pump(now)

    # --- outputs ----------------------------------------------------------------------

    def requests_to_send(self) -> Sequence[HttpRequest]:
        """Drain the REST requests to make now (each is in flight until answered)."""
        out, self._outbox = self._outbox, ()
        return out

    def stream_to_open(self) -> HttpRequest | None:
        """The event stream request to (re)open, once; ``None`` when there is none to open."""
        request, self._stream_request = self._stream_request, None
        if request is not None:
            self._stream_state = "opening"
        return request

    def facts_received(self) -> Sequence[facts.Fact]:
        """Drain the facts for OCP, in the order they happened."""
        out, self._facts = self._facts, ()
        return out

    def notices_received(self) -> Sequence[tuple[str, str]]:
        """Drain ``(event, detail)`` pairs worth a log line."""
        out, self._notices = self._notices, ()
        return out

    # --- the stream ---------------------------------------------------------------------

    def stream_opened(self, *, now: float) -> None:
        """The stream answered 200 ``text/event-stream``: events will follow.

        "reset the count on a successful open" (4.3). The first open lets the conversation
        be created; every later one is a reconnection, after which missed entries are
        fetched.
        """
        if self._stream_state != "opening":
            raise LocalProtocolError(f"stream_opened() with the stream {self._stream_state}")
        self._stream_state = "open"
        self._stream_failures = 0
        if self._stream_ever_opened:
            self._reconcile_wanted = True
            self._reconcile_entries, self._reconcile_pages = (), 0
        self._stream_ever_opened = True
        if self.state is State.CONNECTING:
            self.state = State.CREATING
        self._pump(now)

    def stream_lost(self, *, now: float, status: int | None = None, body: bytes = b"") -> None:
        """The stream could not be opened (``status``: its HTTP answer), or it ended.

        No answer, a 5xx, a 429 or a 409 (a stream of this token is still open there: the
        one just lost, not yet noticed gone): reopen from the last event id, with backoff,
        at most :data:`MAX_STREAM_ATTEMPTS` times in a row. 401 ("Jwt is expired"): the token is
        dead. Any other refusal (400 "OrgId in the header and token must match", 403):
        the chat fails, naming Salesforce's message.
        """
        if self._stream_state not in ("opening", "open"):
            return
        self._stream_state = "closed"
        if self.state not in _LIVE:
            return
        if status == 401:
            self._token_refused("event stream", status, body)
        elif status is not None and status not in (409, 429) and status < 500:
            self._fail_from_salesforce(f"Salesforce refused the event stream "
                                       f"({_status_text(status, body)})", now)
        else:
            self._stream_failures += 1
            self._notice(("stream_lost", _status_text(status, body) if status
                          else "no answer"))
            if self._stream_failures >= MAX_STREAM_ATTEMPTS:
                self._fail_from_salesforce(
                    f"the Salesforce event stream could not be reopened "
                    f"({MAX_STREAM_ATTEMPTS} attempts)", now)
            else:
                self._want_stream()
        self._pump(now)

    def receive_event(self, event: SseEvent, *, now: float) -> bool:
        """Take one event of the stream (a ping, an entry, or anything else).

        Returns whether it changed the session beyond the stream's positions
        (:attr:`last_event_id`, :attr:`last_entry_ms`). ``False`` (a ping, an acknowledgement,
        any type ignored, another conversation's, an entry seen already, the visitor's own
        message coming back once its send was answered) means that saving the new positions
        may wait for the next save that matters: an older ``Last-Event-Id`` only replays such
        events again, which change nothing, and entries are de-duplicated by their ids (kept
        in the snapshot) whatever the stream replays.
        """
        if self.state not in _LIVE:
            return False
        if event.id:
            self.last_event_id = event.id
        if event.event == _PING or event.event in _IGNORED_EVENTS:
            return False
        if event.event not in _ENTRY_EVENTS and event.event != _CLOSE_EVENT:
            # "your implementation must ignore unrecognized event types" (D-SSES).
            if self._unknown_events is None:
                self._unknown_events = set()
            if event.event not in self._unknown_events:
                self._unknown_events.add(event.event)
                self._notice(("unknown_event_type", event.event))
            return False
        try:
            data = wire.decode_sse_data(event.data, event.event)
        except RemoteProtocolError as exc:
            self._poison(str(exc), now)
            return True
        if data.conversation_id != self.conversation_id:
            self._notice(("other_conversation_event", event.event))
            return False
        if self.reconciling:
            if len(self._held) < MAX_HELD_EVENTS:
                self._held = appended(self._held, (event.event, data))
                return True
            self._notice(("held_events_overflow", event.event))
        if not self._process_event(event.event, data, now):
            return False  # nothing new to act on: the next pump (a wake, an answer) will do
        self._pump(now)
        return True

    # --- answers ----------------------------------------------------------------------

    def receive_response(self, request: HttpRequest, status: int, body: bytes = b"", *,
                         now: float) -> None:
        """Take Salesforce's HTTP answer to ``request``."""
        if not self._release(request):
            return
        try:
            self._receive(request, status, body, now)
        except RemoteProtocolError as exc:
            self._poison(str(exc), now)
            return
        self._pump(now)

    def receive_failure(self, request: HttpRequest, kind: FailureKind, *, now: float) -> None:
        """``request`` got no HTTP answer (``kind``): it is sent again, the same, with backoff."""
        if not self._release(request):
            return
        self._notice(("no_answer", f"{request.purpose.value}: {kind.value}"))
        self._retry_failed(request, f"no answer ({kind.value})", now)
        self._pump(now)

    # --- internals: answers -----------------------------------------------------------

    def _release(self, request: HttpRequest) -> bool:
        """Take ``request`` off the wire; ``False`` if its answer no longer matters."""
        in_flight = self._in_flight
        for index, item in enumerate(in_flight):
            if item is request:
                if len(in_flight) == 1:
                    self._in_flight = ()
                elif in_flight:  # a list, then
                    del in_flight[index]
                break
        else:
            raise LocalProtocolError(f"an answer to {request.purpose.value} that is not in flight")
        if request.purpose is Purpose.CLOSE_CONVERSATION:
            return True
        return self.state in _LIVE or (self.state is State.ENDING
                                       and request.purpose is not Purpose.TYPING)

    def _receive(self, request: HttpRequest, status: int, body: bytes, now: float) -> None:
        purpose = request.purpose
        if purpose is Purpose.CLOSE_CONVERSATION:
            self._receive_close(request, status, body, now)
        elif status == 401:
            self._token_refused(_WHAT[purpose], status, body)
        elif purpose is Purpose.TYPING:
            self._receive_typing(request, status, body)
        elif status == 429 or status >= 500:
            self._retry_later(request, status, body, now)
        elif purpose is Purpose.ACCESS_TOKEN:
            self._receive_token(status, body, now)
        elif purpose is Purpose.CREATE_CONVERSATION:
            self._receive_create(status, body, now)
        elif purpose is Purpose.SEND_MESSAGE:
            self._receive_send(request, status, body, now)
        elif purpose is Purpose.LIST_ENTRIES:
            self._receive_entries(request, status, body, now)
        elif purpose is Purpose.GET_CONVERSATION:
            self._receive_routing_status(status, body, now)

    def _retry_later(self, request: HttpRequest, status: int, body: bytes, now: float) -> None:
        """429 ("Too many requests") or 5xx: the same request again, after a backoff."""
        self._notice(("retry", f"{request.purpose.value}: {_status_text(status, body)}"))
        if status == 429:
            self._retry(request, failures=request.failures, now=now)
        else:
            self._retry_failed(request, _status_text(status, body), now)

    def _retry_failed(self, request: HttpRequest, why: str, now: float) -> None:
        """A 5xx or no answer: again, unless it failed :data:`MAX_FAILURES` times."""
        failures = request.failures + 1
        if request.purpose is Purpose.TYPING:
            self._typing_given_up(request)
            return
        if request.purpose is Purpose.SEND_MESSAGE:
            self._count_send(now)  # it may have arrived: Salesforce may have counted it
        if failures < MAX_FAILURES:
            self._retry(request, failures=failures, now=now)
        elif request.purpose is Purpose.LIST_ENTRIES:
            self._notice(("reconcile_abandoned", why))
            self._finish_reconcile(now)
        elif request.purpose is Purpose.GET_CONVERSATION:
            self._notice(("routing_status_unknown", why))
        elif request.purpose is Purpose.CLOSE_CONVERSATION:
            self._notice(("close_abandoned", why))
            self._after_delete()
        else:
            self._fail_from_salesforce(
                f"Salesforce did not answer the {_WHAT[request.purpose]} ({why})", now)

    def _retry(self, request: HttpRequest, *, failures: int, now: float) -> None:
        if self.state is State.ENDING and request.purpose is not Purpose.CLOSE_CONVERSATION:
            # Ending: only the DELETE matters now. A create whose fate is unknown may have
            # made the conversation, so it is closed all the same (a 404 then is harmless).
            if request.purpose is Purpose.CREATE_CONVERSATION:
                self._created = True
            return
        if request.purpose is Purpose.SEND_MESSAGE:
            # Back to the queue head, so that pacing decides when it goes again.
            head = self._pending[0] if self._pending else None
            if head is not None and head.sf_id == request.ref:
                head.failures = failures
            return
        again = msgspec.structs.replace(request, attempt=request.attempt + 1, failures=failures)
        self._issue(again)

    def _receive_token(self, status: int, body: bytes, now: float) -> None:
        if status != 200:
            self._fail_from_salesforce(
                f"Salesforce refused the access token ({_status_text(status, body)})", now)
            return
        token, problem = wire.decode_access_token(body)
        if problem is not None:
            self._notice(("token_context_ignored", problem))
        claims = wire.read_jwt(token.access_token)
        self.access_token = token.access_token
        if claims.exp is None:
            self.token_exp = now + DEFAULT_TOKEN_LIFETIME_S
            self._notice(("token_without_exp", f"assumed {DEFAULT_TOKEN_LIFETIME_S:.0f} s"))
        else:
            self.token_exp = float(claims.exp)
        if claims.org_id is not None and claims.org_id[:15] != self.org_id:
            self._notice(("token_org_mismatch", f"{claims.org_id} != {self.org_id}"))
        # "Last-Event-Id = token's lastEventId" (7.2), "else 0" (3.1).
        self.last_event_id = token.last_event_id or "0"
        self._routing_attributes = self._fit_attributes(token.context)
        self.state = State.CONNECTING
        self._want_stream()

    def _fit_attributes(self, context: wire.TokenContext | None) -> dict[str, str]:
        """The routing attributes cut to their pre-chat fields' ``maxLength``, when known.

        The deployment's configuration in the token answer names its pre-chat fields
        (2.1); a value longer than its field is cut here rather than refused there. The
        history's field keeps its newest lines, as a Live Agent prechat detail does.
        """
        limits: dict[str, int] = {}
        config = context.configuration if context is not None else None
        service = config.embedded_service_config if config is not None else None
        for form in service.forms if service is not None else ():
            for field in form.form_fields:
                if field.max_length is not None and field.max_length > 0:
                    limits[field.name] = min(limits.get(field.name, field.max_length),
                                             field.max_length)
        out = {}
        for name, value in self.params.routing_attributes.items():
            limit = limits.get(name)
            if limit is not None and len(value) > limit:
                self._notice(("routing_attribute_cut",
                              f"{name}: {len(value)} to {limit} characters"))
                if name == self.params.history_attribute:
                    lines = value.split("\n")
                    if lines and lines[0] == OMITTED_MARKER:
                        lines = lines[1:]
                    value = prechat_value(lines, limit)
                else:
                    value = value[:limit]
            out[name] = value
        return out

    def _receive_create(self, status: int, body: bytes, now: float) -> None:
        if 200 <= status < 300 or status == 409:
            if status == 409:
                self._notice(("conversation_exists", self.conversation_id))
            self._created = True
            if self.requested_at is None:
                self.requested_at = now
            if self.state is State.CREATING:
                self.state = State.WAITING
            return
        self._fail_from_salesforce(
            f"Salesforce refused the conversation ({_status_text(status, body)})", now)

    def _receive_send(self, request: HttpRequest, status: int, body: bytes, now: float) -> None:
        if 200 <= status < 300:
            self._count_send(now)
            self._delivered_now(request.ref)
        elif status == 417:
            # "no messaging session exists": the agent (or an inactivity timeout) ended it.
            self._end_from_salesforce(facts.Ended(reason="agent"), now)
        elif status == 403:
            self._fail_from_salesforce(
                f"Salesforce refused the message ({_status_text(status, body)})", now)
        elif status == 404:
            self._fail_from_salesforce(
                f"Salesforce no longer knows the conversation ({_status_text(status, body)})",
                now)
        else:
            # 400, 413, ...: this message cannot go; the next ones may.
            head = self._pending[0] if self._pending else None
            if head is not None and head.sf_id == request.ref:
                self._pending.pop(0)
                if head.ocp_id is not None:
                    self._fact(facts.Undelivered(
                        id=head.ocp_id,
                        detail=f"Salesforce refused the message ({_status_text(status, body)})"))

    def _receive_typing(self, request: HttpRequest, status: int, body: bytes) -> None:
        if 200 <= status < 300:
            self._typing_sent = request.ref == _TYPING_STARTED
        else:
            self._notice(("typing_refused", _status_text(status, body)))
            self._typing_given_up(request)

    def _typing_given_up(self, request: HttpRequest) -> None:
        """Typing is not worth a retry: take that state as shown (the next change goes out)."""
        self._typing_sent = request.ref == _TYPING_STARTED

    def _receive_entries(self, request: HttpRequest, status: int, body: bytes,
                         now: float) -> None:
        if status != 200:
            self._notice(("reconcile_abandoned", _status_text(status, body)))
            self._finish_reconcile(now)
            return
        page = wire.decode_entries(body).entries
        if self._reconcile_entries:
            self._reconcile_entries.extend(page)
        elif page:
            self._reconcile_entries = list(page)
        self._reconcile_pages += 1
        newest = max((e.transcripted_timestamp for e in page), default=0)
        if (len(page) >= ENTRIES_PAGE and self._reconcile_pages < MAX_RECONCILE_PAGES
                and newest > int(request.ref or 0)):
            self._issue(self._entries_request(newest))
            return
        self._finish_reconcile(now)

    def _receive_routing_status(self, status: int, body: bytes, now: float) -> None:
        if status != 200:
            self._notice(("routing_status_unknown", _status_text(status, body)))
            return
        routing = wire.decode_conversation_status(body).routing_status
        self._notice(("routing_status", routing or "(none)"))
        if routing:
            self.routing_status = routing
        if self.state is not State.TRANSFERRING:
            return  # another agent joined meanwhile
        if routing == "NEEDS_ROUTING":
            # "NEEDS_ROUTING → the agent ended the chat (close)" (2.10).
            self._end_from_salesforce(facts.Ended(reason="agent"), now)
        # TRANSFER → "keep waiting for the next add"; INITIAL, ROUTED, ...: keep waiting too.

    def _receive_close(self, request: HttpRequest, status: int, body: bytes, now: float) -> None:
        if status == 429 or status >= 500:
            self._retry_later(request, status, body, now)
            return
        if status != 204:
            # 404/403: already closed; "Botpress ignores errors from a close on an already
            # closed conversation" (2.11).
            self._notice(("close_answered", _status_text(status, body)))
        self._after_delete()

    # --- internals: events --------------------------------------------------------------

    def _process_event(self, name: str, data: wire.SseData, now: float) -> bool:
        """Act on one event; whether the session changed beyond the stream's positions."""
        if name == _CLOSE_EVENT:
            # "only triggers when the end user closes the conversation": not bridged here.
            self._delete_sent = True  # closed already: nothing to DELETE
            self._end_from_salesforce(facts.Ended(reason="agent"), now)
            return True
        entry = data.entry
        if entry is None and name == "CONVERSATION_QUEUE_POSITION":
            self._queue_position(wire.decode_queue_position(data.raw))
            return True
        if entry is None:
            self._notice(("event_without_entry", name))
            return False
        return self._process_entry(entry, now)

    def _process_entry(self, entry: wire.ConversationEntry, now: float) -> bool:
        """Act on one entry; whether the session changed beyond the stream's positions."""
        if self.state not in _LIVE:
            return False
        ts = entry.transcripted_timestamp
        self.last_entry_ms = max(self.last_entry_ms, ts)
        role = entry.sender.role
        payload = entry.payload
        if isinstance(payload, wire.TypingPayload):
            return self._typing_entry(entry, entry.entry_type == _TYPING_STARTED)
        if role == wire.ROLE_END_USER:
            # "drop sender.role == "EndUser" echoes" (7.4); an echo proves a send arrived,
            # which changes nothing once its answer said so (the usual order).
            return isinstance(payload, wire.MessagePayload) and self._echo(entry.identifier)
        if entry.identifier:
            if (entry.identifier, ts) in self._seen:
                self._notice(("duplicate_entry", entry.identifier))
                return False
            self._seen.add(entry.identifier, ts)
        match payload:
            case wire.MessagePayload():
                self._message(entry, payload)
            case wire.ParticipantChangedPayload():
                for change in payload.entries:
                    self._participant(change, now)
            case wire.RoutingResultPayload():
                self._routing_result(payload, now)
            case wire.SessionStatusChangedPayload():
                self._session_status(payload, now)
            case wire.QueuePositionPayload():
                self._queue_position(payload)
            case _:
                pass  # acknowledgements and entry types bridged does not read
        return True

    def _message(self, entry: wire.ConversationEntry, payload: wire.MessagePayload) -> None:
        text = payload.abstract_message.text
        if not text:
            self._notice(("message_without_text", payload.abstract_message.message_type))
            return
        if entry.sender.role == wire.ROLE_CHATBOT:
            self._bot_seen = True
        name = entry.sender_display_name or self.agent or ""
        self._fact(facts.AgentMessage(agent=name, text=text))

    def _typing_entry(self, entry: wire.ConversationEntry, active: bool) -> bool:
        if entry.sender.role == wire.ROLE_END_USER:
            return False  # "ignores role EndUser (the visitor's own typing comes back too)"
        if entry.identifier:
            if entry.identifier in self._typing_ids:
                return False
            _keep_newest(self._typing_ids, entry.identifier, _TYPING_IDS_MAX)
        self._fact(facts.AgentTyping(active=active))
        return True

    def _participant(self, change: wire.ParticipantChange, now: float) -> None:
        role = change.participant.role
        if role == wire.ROLE_CHATBOT:
            self._bot_seen = True
        if role != wire.ROLE_AGENT:
            # "Ignore Supervisor (a supervisor joining must not count as the agent)".
            self._notice(("participant_ignored", f"{role} {change.operation}"))
            return
        key = change.participant.subject or change.display_name
        if change.operation == "add":
            self._agent_added(key, change.display_name)
        elif change.operation == "remove":
            self._agent_removed(key, change.display_name, now)
        else:
            self._notice(("participant_operation_unknown", change.operation))

    def _agent_added(self, key: str, name: str) -> None:
        if key in self._agents:
            return
        self._agents[key] = name
        if not self.agent_ever_joined:
            self.agent_ever_joined = True
            self.agent = name
            self.state = State.CHATTING
            self._fact(facts.AgentJoined(agent=name))
        elif self.state is State.TRANSFERRING:
            self.agent = name
            self.state = State.CHATTING
            self._routing_check = False
            self._fact(facts.Transferred(agent=name))
        else:
            # A second agent while one is there (a consult or conference): OCP keeps its agent.
            self._notice(("second_agent_joined", name))

    def _agent_removed(self, key: str, name: str, now: float) -> None:
        removed = self._agents.pop(key, None)
        if removed is None:
            match = [k for k, v in self._agents.items() if v == name]
            removed = self._agents.pop(match[0]) if match else None
        if removed is None:
            self._notice(("unknown_agent_removed", name))
            return
        # The same log line as Live Agent's AgentDisconnect: a step of the chat's life.
        self._notice(("agent_disconnected", removed))
        if self._agents:
            if removed == self.agent:
                # The other agent stays: the chat moved to them.
                self.agent = next(iter(self._agents.values()))
                self._fact(facts.Transferred(agent=self.agent))
            return
        # "Agent left = remove with role Agent → check GET /conversation/{id}" (7.5).
        if self.state is State.CHATTING:
            self.state = State.TRANSFERRING
            self._routing_check = True

    def _routing_result(self, payload: wire.RoutingResultPayload, now: float) -> None:
        self.routing_status = payload.routing_type + (" failed" if payload.failed else "")
        if payload.failed:
            if payload.routing_type == "Transfer" or self._agents:
                # "silently ignores failed Transfers" (SF-APP): logged, nothing ends.
                self._notice(("routing_failed_ignored", payload.failure_detail))
                return
            self._fail_from_salesforce(f"routing failed: {payload.failure_detail}", now)
            return
        if not self.agent_ever_joined and self.state is State.WAITING:
            wait_s = payload.estimated_wait_time.seconds if payload.estimated_wait_time else None
            position = payload.queue_position if (payload.queue_position or 0) > 0 else None
            self._fact(facts.Queued(position=position, wait_s=wait_s))

    def _queue_position(self, payload: wire.QueuePositionPayload) -> None:
        if self.agent_ever_joined or self.state is not State.WAITING:
            return
        if payload.value is None and payload.wait_s is None:
            self._notice(("queue_position_unreadable", ""))
            return
        self._fact(facts.Queued(position=payload.value, wait_s=payload.wait_s))

    def _session_status(self, payload: wire.SessionStatusChangedPayload, now: float) -> None:
        status = payload.session_status
        self._notice(("session_status", status or "(none)"))
        if status.casefold() != "ended":
            return
        # "use it to handle when sessions end regardless of who initiated it" (D-SSES).
        reason: facts.EndReason = "agent" if self.agent_ever_joined or self._bot_seen \
            else "no_agent"
        self._end_from_salesforce(facts.Ended(reason=reason), now)

    def _echo(self, identifier: str) -> bool:
        """The visitor's own message came back: the message with that id arrived (whether
        that is news: it was still waiting for its answer)."""
        for item in self._pending:
            if item.sf_id == identifier and item.attempts:
                self._delivered_now(identifier)
                return True
        return False

    def _delivered_now(self, sf_id: str | None) -> None:
        for item in self._pending:
            if item.sf_id == sf_id:
                self._pending.remove(item)
                if item.ocp_id is not None:
                    _keep_newest(self._delivered, item.ocp_id, DELIVERED_IDS_MAX)
                    self._fact(facts.Delivered(id=item.ocp_id))
                return

    def _finish_reconcile(self, now: float) -> None:
        """Process what was missed, oldest first, then the events held meanwhile."""
        entries = sorted(self._reconcile_entries, key=lambda e: e.transcripted_timestamp)
        held, self._held = self._held, ()
        self._reconcile_entries, self._reconcile_pages = (), 0
        self._reconcile_wanted = False
        self._notice(("reconciled", f"{len(entries)} entries, {len(held)} held events"))
        for entry in entries:
            self._process_entry(entry, now)
        for name, data in held:
            if self.state in _LIVE:
                self._process_event(name, data, now)

    # --- internals: requests ------------------------------------------------------------

    def _fact(self, fact: facts.Fact) -> None:
        self._facts = appended(self._facts, fact)

    def _notice(self, notice: tuple[str, str]) -> None:
        self._notices = appended(self._notices, notice)

    def _rest_headers(self, *, auth: bool = True) -> tuple[tuple[str, str], ...]:
        # "Content-Type: application/json on every call; Authorization: Bearer <accessToken>
        # on every call except the token request" (2.0).
        if not auth:
            return _JSON_HEADERS
        # Built once per token: every request of the chat, and its stream, share them
        # (Authorization last: _want_stream takes that pair).
        cached = self._rest_auth
        if cached is None:
            assert self._bearer is not None
            cached = self._rest_auth = (*_JSON_HEADERS, ("Authorization", self._bearer))
        return cached

    def _conversation_path(self, tail: str = "") -> str:
        return f"{API}/conversation/{self.conversation_id}{tail}"

    def _issue(self, request: HttpRequest) -> None:
        self._outbox = appended(self._outbox, request)
        self._in_flight = appended(self._in_flight, request)

    def _busy(self, purpose: Purpose) -> bool:
        for request in self._in_flight:  # noqa: SIM110 (any() over a generator costs more)
            if request.purpose is purpose:
                return True
        return False

    def _delete_in_flight(self) -> bool:
        return self._busy(Purpose.CLOSE_CONVERSATION)

    def _want_stream(self) -> None:
        # "Accept, Authorization, X-Org-Id 15, Last-Event-Id" (7.2); "always send the first
        # 15 characters of the configured id" (3.1).
        bearer = self._rest_headers()[-1]  # the pair itself, shared: the token is ~1 KiB
        assert bearer[0] == "Authorization", "_rest_headers puts Authorization last"
        self._stream_request = HttpRequest(
            method="GET", path=SSE_PATH, purpose=Purpose.EVENTS,
            headers=(("Accept", "text/event-stream"), bearer,
                     ("X-Org-Id", self.org_id),
                     ("Last-Event-Id", self.last_event_id)),
            attempt=self._stream_failures,
        )
        self._stream_state = "requested"

    def _pump(self, now: float) -> None:
        """Issue whatever may go now, and act on deadlines that have come."""
        if self.state in _LIVE:
            self._check_deadlines(now)
        if self.state is State.ENDING:
            self._pump_ending()
            return
        if self.state not in _LIVE:
            return
        if self.state is State.AUTHORIZING and not self._busy(Purpose.ACCESS_TOKEN):
            self._issue(self._token_request())
        if (self.state is State.CREATING and self._stream_state == "open" and not self._created
                and not self._busy(Purpose.CREATE_CONVERSATION)):
            self._issue(self._create_request())
        if not self._created:
            return
        if self.reconciling and self._stream_state == "open" \
                and not self._busy(Purpose.LIST_ENTRIES) and not self._reconcile_entries:
            start = self.last_entry_ms - 1 if self.last_entry_ms else None
            self._issue(self._entries_request(start))
        if self._routing_check and not self._busy(Purpose.GET_CONVERSATION):
            self._routing_check = False
            self._issue(HttpRequest(method="GET", path=self._conversation_path(),
                                    purpose=Purpose.GET_CONVERSATION,
                                    headers=self._rest_headers()))
        self._pump_typing()
        self._pump_messages(now)

    def _pump_messages(self, now: float) -> None:
        if not self._pending or self.reconciling or self._busy(Purpose.SEND_MESSAGE):
            return
        while self._sent_at and self._sent_at[0] <= now - self.params.pacing_window_s:
            self._sent_at.pop(0)
        if len(self._sent_at) >= self.params.messages_per_window:
            return  # "faster messages are held and sent in order, never dropped"
        head = self._pending[0]
        attempt = head.attempts
        head.attempts += 1
        self._issue(HttpRequest(
            method="POST", path=self._conversation_path("/message"),
            purpose=Purpose.SEND_MESSAGE, headers=self._rest_headers(),
            body=wire.encode_body(wire.SendMessage(
                message=wire.OutgoingMessage(
                    id=head.sf_id, message_type="StaticContentMessage",
                    static_content=wire.TextContent(text=head.text)),
                es_developer_name=self.params.es_developer_name,
                language=self.params.language or None)),
            attempt=attempt, failures=head.failures, ref=head.sf_id,
        ))

    def _pump_typing(self) -> None:
        if self._typing_wanted == self._typing_sent or self._busy(Purpose.TYPING):
            return
        if self.state is not State.CHATTING:
            return  # nobody to see it
        entry_type = _TYPING_STARTED if self._typing_wanted else _TYPING_STOPPED
        self._issue(HttpRequest(
            method="POST", path=self._conversation_path("/entry"), purpose=Purpose.TYPING,
            headers=self._rest_headers(),
            body=wire.encode_body(wire.TypingIndicator(entry_type=entry_type,
                                                       id=str(uuid.uuid4()))),
            ref=entry_type,
        ))

    def _pump_ending(self) -> None:
        if self._delete_sent:
            if not self._delete_in_flight():
                self._after_delete()
            return
        if self._busy(Purpose.CREATE_CONVERSATION) or self._busy(Purpose.SEND_MESSAGE):
            return  # their answers decide what exists and what was delivered
        if not self._created:
            self._delete_sent = True
            self._after_delete()
            return
        self._delete_sent = True
        self._issue(HttpRequest(
            method="DELETE", path=self._conversation_path(),
            query=(("esDeveloperName", self.params.es_developer_name),),
            purpose=Purpose.CLOSE_CONVERSATION, headers=self._rest_headers()))

    def _token_request(self) -> HttpRequest:
        p = self.params
        body = wire.AccessTokenRequest(
            org_id=p.organization_id, es_developer_name=p.es_developer_name,
            capabilities_version=p.capabilities_version, platform="Web",
            context=wire.ClientContext(app_name=p.app_name, client_version=p.client_version))
        return HttpRequest(method="POST", path=f"{API}/authorization/unauthenticated/access-token",
                           purpose=Purpose.ACCESS_TOKEN, headers=self._rest_headers(auth=False),
                           body=wire.encode_body(body))

    def _create_request(self) -> HttpRequest:
        p = self.params
        attributes = self._routing_attributes
        if attributes is None:
            attributes = dict(p.routing_attributes)
        body = wire.CreateConversation(routing_attributes=attributes or None,
                                       es_developer_name=p.es_developer_name,
                                       conversation_id=self.conversation_id)
        return HttpRequest(method="POST", path=f"{API}/conversation",
                           purpose=Purpose.CREATE_CONVERSATION, headers=self._rest_headers(),
                           body=wire.encode_body(body))

    def _entries_request(self, start_ms: int | None) -> HttpRequest:
        query = [("limit", str(ENTRIES_PAGE)), ("direction", "FromStart")]
        if start_ms is not None and start_ms > 0:
            query.append(("startTimestamp", str(start_ms)))
        query.append(("entryTypeFilter", _ENTRY_FILTER))
        return HttpRequest(method="GET", path=self._conversation_path("/entries"),
                           query=tuple(query), purpose=Purpose.LIST_ENTRIES,
                           headers=self._rest_headers(), ref=str(start_ms or 0))

    # --- internals: ending ----------------------------------------------------------------

    def _check_deadlines(self, now: float) -> None:
        end_by = self.end_by
        if end_by is not None and now >= end_by:
            self._end_from_bridged(facts.Ended(reason="failed", detail=_TOKEN_EXPIRED), now)
            return
        deadline = self.agent_wait_deadline
        if deadline is not None and now >= deadline:
            self._notice(("agent_wait_timeout", f"{self.params.agent_wait_timeout_s} s"))
            self._end_from_bridged(facts.Ended(reason="no_agent"), now)

    def _end_from_bridged(self, ended: facts.Ended, now: float) -> None:
        """bridged ends it: DELETE first, ``Ended`` after the answer."""
        if self._end is not None:
            return
        self._end, self._end_after_delete = ended, True
        self._enter_ending(now)

    def _end_from_salesforce(self, ended: facts.Ended, now: float) -> None:
        """Salesforce ended it: ``Ended`` now, the DELETE as clean-up."""
        if self._end is not None:
            return
        self._end = ended
        self._emit_ended()
        self._enter_ending(now)

    def _fail_from_salesforce(self, detail: str, now: float) -> None:
        self._end_from_salesforce(facts.Ended(reason="failed", detail=detail), now)

    def _token_refused(self, what: str, status: int, body: bytes) -> None:
        """401: "token missing, bad or expired" (4.5). No DELETE: it would be refused too."""
        message = wire.decode_error(body).message
        if "expired" in message.lower():  # "Jwt is expired" (3.1)
            detail = f"{_TOKEN_EXPIRED} (HTTP 401 on the {what})"
        else:
            detail = f"Salesforce refused the access token (HTTP 401 on the {what}" + (
                f": {message})" if message else ")")
        self._conclude(facts.Ended(reason="failed", detail=detail))

    def _enter_ending(self, now: float) -> None:
        self.state = State.ENDING
        self._stream_request = None
        self._held = ()
        self._pump(now)

    def _after_delete(self) -> None:
        if self._end is None:
            self._end = facts.Ended(reason="failed", detail="the chat ended")
        self._conclude(self._end)

    def _conclude(self, ended: facts.Ended) -> None:
        """Enter ENDED (or ERROR), with ``Ended`` emitted once."""
        if self._end is None:
            self._end = ended
        self._emit_ended()
        self.state = State.ERROR if self._poisoned else State.ENDED
        self._stream_request = None
        # Requests not drained yet will never be made: they are not in flight either.
        dropped = [r for r in self._outbox if r.purpose is not Purpose.CLOSE_CONVERSATION]
        self._outbox = [r for r in self._outbox if r.purpose is Purpose.CLOSE_CONVERSATION]
        self._in_flight = [r for r in self._in_flight if not any(r is d for d in dropped)]

    def _emit_ended(self) -> None:
        if self._ended_emitted:
            return
        self._ended_emitted = True
        for item in self._pending:
            if item.ocp_id is not None:
                self._fact(facts.Undelivered(id=item.ocp_id, detail=_UNDELIVERED))
        self._pending.clear()
        assert self._end is not None
        self._fact(self._end)

    def _poison(self, detail: str, now: float) -> None:
        """Salesforce sent what the protocol does not allow: this chat fails (ERROR)."""
        self._notice(("remote_protocol_error", detail))
        self._poisoned = True
        if self.state in _LIVE:
            self._fail_from_salesforce(detail, now)
        if self.state is State.ENDED:
            self.state = State.ERROR

    def _check_live(self, what: str) -> None:
        if not self.accepts_commands:
            raise LocalProtocolError(f"{what}() in state {self.state.value}")

    def _count_send(self, now: float) -> None:
        """A send Salesforce may have counted toward "22 ... per minute", as of ``now``."""
        self._sent_at.append(now)
        while len(self._sent_at) > self.params.messages_per_window:
            self._sent_at.pop(0)


_WHAT = {
    Purpose.ACCESS_TOKEN: "access token request",
    Purpose.EVENTS: "event stream",
    Purpose.CREATE_CONVERSATION: "conversation request",
    Purpose.SEND_MESSAGE: "message",
    Purpose.TYPING: "typing indicator",
    Purpose.LIST_ENTRIES: "entries request",
    Purpose.GET_CONVERSATION: "routing status request",
    Purpose.CLOSE_CONVERSATION: "close request",
}


def _status_text(status: int | None, body: bytes) -> str:
    """``HTTP 400: <message>``, with Salesforce's ``message`` when the body has one."""
    if status is None:
        return "no answer"
    message = wire.decode_error(body).message if body else ""
    return f"HTTP {status}: {message}" if message else f"HTTP {status}"
