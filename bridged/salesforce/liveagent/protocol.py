"""The visitor side of one Live Agent chat, as a sans-I/O state machine.

Theory of operation
-------------------
``LiveAgentSession`` holds everything that decides *what to send next* and *what a
Salesforce answer means*, and nothing that waits: no sockets, clocks, sleeps or tasks.
The actor (``bridged.salesforce.liveagent.actor``) is the shell around it.

Inputs are commands (:meth:`start`, :meth:`send_text`, :meth:`set_typing`,
:meth:`send_history`, :meth:`end`, :meth:`release_parked`) and answers
(:meth:`receive_response`, :meth:`receive_failure`). Outputs are drained:
:meth:`next_request` gives the next HTTP request of a lane, :meth:`facts_received` the facts
for OCP, :meth:`notices_received` things worth a log line, :meth:`abandoned_lanes` the
requests the shell must cancel, :meth:`take_unsettled_poll` whether the last poll may still
be held by Salesforce, and :attr:`switch_url` a host Salesforce asked to move to.

Requests travel in two lanes, because Live Agent has two kinds of traffic:

* the **poll lane** holds the one ``GET System/Messages`` long poll. "Keep exactly one
  Messages request outstanding per session" (SALESFORCE.md 7.1): the lane is either empty
  or holds one request.
* the **post lane** carries everything else, one request at a time, in order: the
  availability check, SessionId, ChasitorInit, the visitor's activity, the requests of a
  server switch, and finally ChatEnd. They go one by one because each sequenced POST carries
  ``X-LIVEAGENT-SEQUENCE`` = previous + 1, and two in flight could arrive swapped and be
  refused as "Out of sync".

States and their transitions (every transition happens inside one method call, so no
other task can see a half-done one)::

    IDLE --start()--> CHECKING --available--> CREATING      (CHECKING only when configured)
    CHECKING --no agent available--> ENDED (no_agent)
    IDLE --start()--> CREATING --SessionId 200--> INITIATING --ChasitorInit 2xx--> WAITING
    WAITING --ChatEstablished--> CHATTING
    WAITING | CHATTING | ENDING --503--> RECONNECTING --resynced--> (the state before)
    WAITING | CHATTING --ChatRequestFail | ChatEnded | 403 | 409--> ENDED
    any live state --end()--> ENDING (after the post in flight) --answer--> ENDED
    any state --protocol violation--> ERROR (poisoned; the supervisor decides)

The server switch (RECONNECTING), as SALESFORCE.md section 6 prescribes it: "Cancel every
in-flight inbound and outbound request, keep unsent outbound data, call ReconnectSession,
store the new affinityToken, reset the sequence, poll Messages, process ChasitorSessionData,
POST ChasitorResyncState, then resend the held outbound data." One deliberate deviation: a
POST already on the wire is not cancelled but answered, because only its answer tells
whether Salesforce applied it; cancelling it and sending it again could show the agent a
message twice. Its answer comes before ReconnectSession, since the post lane is serial.

Sequencing rules, quoted from SALESFORCE.md:

* ack: "``-1`` on the first poll. After each **200**, send the ``sequence`` from that
  response. After a **204** (no body, no sequence), send the same ``ack`` again."
* ``X-LIVEAGENT-SEQUENCE``: "Clients start at 1 on ChasitorInit and add 1 per POST." A
  number is *used up* only when Salesforce accepts the POST; an answer of 500 (visitor
  activity before the agent joined) does not use it up (section 11.3), and a POST re-sent
  after a network failure keeps its number so that the server drops a duplicate (11.4).
* "before sending further requests, wait for ``ChatRequestSuccess`` **and**
  ``ChatEstablished``" (D-GS): visitor activity is held until an agent joins. A ``ChatEnd``
  refused that way (a 5xx) would leave the chat request waiting for an agent: the session is
  deleted instead (``DELETE System/SessionId``, which carries no sequence).

A batch is never thrown away. When the shell holds all the events it may (OCP does not
acknowledge), it asks for *keep-alive* polls, which only keep the session alive. Whatever
such a poll brings is *parked*: kept here (and in the snapshot), neither processed nor
acknowledged. Later keep-alives repeat the old ``ack``, so Salesforce delivers the same
messages again, with what came since: they replace the parked batch (a batch that does not
start with the parked messages is added to it, so that a server which does not deliver
again loses nothing either). A parked ``ChatEnded`` or ``ChatRequestFail`` means the session
is over at Salesforce ("later requests get 403"): nothing is polled any more. When the shell
has room again it calls :meth:`release_parked`, and the batch is processed as if it had just
arrived; a server switch or the end of the chat processes it first as well, since nothing
that came after it may overtake it.

A poll that got no answer from Salesforce itself (no answer at all, a gateway's 502 or 504,
a 503 that ``ReconnectSession`` shows was no switch) may still be held by Salesforce, and a
second poll meanwhile ends the session (409): :meth:`take_unsettled_poll` tells the shell to
wait until Salesforce must have answered it.
"""

from __future__ import annotations

__all__ = [
    "MAX_SWITCHES",
    "HttpRequest",
    "HttpResponse",
    "Lane",
    "LiveAgentSession",
    "Purpose",
    "SessionParams",
    "SessionSnapshot",
    "State",
    "SwitchPhase",
    "map_chat_ended",
    "map_request_fail",
]

import enum
import re
from collections.abc import Iterable, Iterator

import msgspec

from bridged.chats import facts
from bridged.errors import LocalProtocolError, RemoteProtocolError
from bridged.salesforce.liveagent import wire

# A session that Salesforce keeps moving is given up after this many switches.
MAX_SWITCHES = 5


class State(enum.Enum):
    __hash__ = object.__hash__  # see Purpose

    IDLE = "idle"
    CHECKING = "checking"
    CREATING = "creating"
    INITIATING = "initiating"
    WAITING = "waiting"
    CHATTING = "chatting"
    RECONNECTING = "reconnecting"
    ENDING = "ending"
    ENDED = "ended"
    ERROR = "error"


class SwitchPhase(enum.Enum):
    """The steps of a server switch, in order."""

    __hash__ = object.__hash__  # see Purpose

    RECONNECT = "reconnect"  # GET System/ReconnectSession
    SESSION_DATA = "session_data"  # poll until ChasitorSessionData
    RESYNC = "resync"  # POST Chasitor/ChasitorResyncState


class Lane(enum.Enum):
    __hash__ = object.__hash__  # see Purpose

    POLL = "poll"
    POST = "post"


class Purpose(enum.Enum):
    """What a request is for; the value is the resource name, for logs and metrics."""

    # A member is its only instance: hashed by identity, in C (Enum's own hash runs Python
    # code at every lookup of a dict the shell keys by lane, state or purpose).
    __hash__ = object.__hash__

    AVAILABILITY = "Availability"
    SESSION_ID = "SessionId"
    CHASITOR_INIT = "ChasitorInit"
    MESSAGES = "Messages"
    CHAT_MESSAGE = "ChatMessage"
    TYPING = "ChasitorTyping"
    NOT_TYPING = "ChasitorNotTyping"
    SNEAK_PEEK = "ChasitorSneakPeek"
    RECONNECT = "ReconnectSession"
    RESYNC = "ChasitorResyncState"
    CHAT_END = "ChatEnd"
    DELETE_SESSION = "DeleteSession"


# Visitor activity: held until an agent has joined (D-GS), dropped when the chat ends.
_ACTIVITY = {Purpose.CHAT_MESSAGE, Purpose.TYPING, Purpose.NOT_TYPING, Purpose.SNEAK_PEEK}
_TYPING = {Purpose.TYPING, Purpose.NOT_TYPING, Purpose.SNEAK_PEEK}
_OUT_OF_SYNC = re.compile(r"Actual\s+(-?\d+)")
_EXPIRED = facts.Ended(reason="failed", detail="the Salesforce session expired")
_EXPIRED_WHILE_DOWN = facts.Ended(
    reason="failed", detail="the Salesforce session expired while bridged was restarting")
# What Salesforce itself answers to a poll (its 503 starts a switch and never gets here);
# any other status came from something in between, or left the poll held.
_SALESFORCE_POLL_ANSWERS = frozenset({200, 204, 403, 409})
# "estimatedWaitTime ... (>= 47)" (D-TYPES): older API versions have no estimate.
_ESTIMATE_SINCE = 47


class HttpRequest(msgspec.Struct, frozen=True, kw_only=True, gc=False):
    """One HTTP exchange the session wants made. ``path`` is relative to ``/chat/rest/``."""

    method: str
    path: str
    purpose: Purpose
    lane: Lane
    headers: tuple[tuple[str, str], ...]
    query: tuple[tuple[str, str], ...] = ()
    body: bytes | None = None
    sequence: int | None = None
    ref: str | None = None
    # A poll made only to keep the session alive while bridged holds all the events it
    # may: its batch is parked (kept, not processed, not acknowledged).
    keepalive: bool = False
    # A POST sent again after an attempt that got no answer: Salesforce may have applied
    # that attempt.
    unanswered: bool = False


class HttpResponse(msgspec.Struct, frozen=True, gc=False):
    """The part of an HTTP answer the session looks at."""

    status: int
    body: bytes = b""


class SessionParams(msgspec.Struct, frozen=True, kw_only=True):
    """What a session needs to ask for a chat (from the effective webchat configuration)."""

    api_version: str
    organization_id: str
    deployment_id: str
    button_id: str
    language: str
    visitor_name: str
    user_agent: str
    screen_resolution: str
    prechat_details: list[wire.CustomDetail] = []
    prechat_entities: list[wire.Entity] = []
    check_availability: bool = False


class _Activity(msgspec.Struct, kw_only=True, gc=False):
    purpose: Purpose
    body: bytes | None = None
    ref: str | None = None


_activity_encoder = msgspec.msgpack.Encoder()
_activity_decoder = msgspec.msgpack.Decoder(_Activity)


class _ActivityQueue:
    """The visitor activity waiting to be sent, oldest first: a list that keeps a journal.

    Each item gets a key that orders it (one appended: above every key so far; one put at
    the head: below), and the queue notes which items were added and which keys went since
    :meth:`take_changes`, so that the shell keeps the queue item by item rather than whole
    at every change (it may hold a large bot history, or hundreds of held messages).
    """

    __slots__ = ("_added", "_gone", "_high", "_items", "_keys", "_low", "version")

    def __init__(self, kept: Iterable[tuple[int, _Activity]] = ()) -> None:
        # Lists, not deques: the queue is short and most chats' is empty, and an empty
        # deque takes 760 bytes.
        self._items: list[_Activity] = []
        self._keys: list[int] = []
        for key, item in kept:  # by key
            self._items.append(item)
            self._keys.append(key)
        self._low = self._keys[0] if self._keys else 1
        self._high = self._keys[-1] if self._keys else 0
        self._added: dict[int, _Activity] = {}
        self._gone: list[tuple[int, int]] = []
        self.version = 0  # +1 at every change of what is queued

    def __len__(self) -> int:
        return len(self._items)

    def __iter__(self) -> Iterator[_Activity]:
        return iter(self._items)

    def __contains__(self, item: object) -> bool:
        return item in self._items

    def __getitem__(self, index: int) -> _Activity:
        return self._items[index]

    @property
    def changed(self) -> bool:
        """Whether anything was added or removed since :meth:`take_changes`."""
        return bool(self._added or self._gone)

    def append(self, item: _Activity) -> None:
        self._high += 1
        self.version += 1
        self._items.append(item)
        self._keys.append(self._high)
        self._added[self._high] = item

    def appendleft(self, item: _Activity) -> None:
        self._low -= 1
        self.version += 1
        self._items.insert(0, item)
        self._keys.insert(0, self._low)
        self._added[self._low] = item

    def popleft(self) -> _Activity:
        self._forget(self._keys.pop(0))
        return self._items.pop(0)

    def pop(self) -> _Activity:
        self._forget(self._keys.pop())
        return self._items.pop()

    def remove(self, item: _Activity) -> None:
        """Remove ``item`` itself (not an equal one: two messages may read the same)."""
        index = self._index(item)
        self._forget(self._keys[index])
        del self._items[index], self._keys[index]

    def key_of(self, item: _Activity) -> int | None:
        """The key of ``item`` itself, if it is queued."""
        try:
            return self._keys[self._index(item)]
        except ValueError:
            return None

    def item_with_key(self, key: int) -> _Activity | None:
        """The item kept under ``key``, if any."""
        for item, item_key in zip(self._items, self._keys, strict=True):
            if item_key == key:
                return item
        return None

    def _index(self, item: _Activity) -> int:
        for index, queued in enumerate(self._items):  # usually at the head
            if queued is item:
                return index
        raise ValueError("not queued")

    def clear(self) -> None:
        if self._items:
            self._gone.append((self._low, self._high))
            self.version += 1
        self._added.clear()
        self._items.clear()
        self._keys.clear()

    def take_changes(self) -> tuple[list[tuple[int, _Activity]], list[tuple[int, int]]]:
        """The items added (with their keys, by key) and the ranges of keys gone, since last
        asked."""
        added, gone = sorted(self._added.items()), self._gone
        self._added, self._gone = {}, []
        return added, gone

    def _forget(self, key: int) -> None:
        self.version += 1
        if self._added.pop(key, None) is None:  # it was kept: it must go from the store
            self._gone.append((key, key))


class SessionSnapshot(msgspec.Struct, frozen=True, kw_only=True, gc=False):
    """Everything a session needs to go on in another process (see :meth:`snapshot`)."""

    state: State
    session_id: str | None
    session_key: str | None
    affinity: str
    client_poll_timeout: float
    connection_timeout: float | None
    ack: int
    sequence: int
    offset: int | None
    agent: str | None
    agent_joined: bool
    requested: bool
    sneak_peek: bool
    switches: int
    switch_phase: SwitchPhase | None
    resume: State
    # The activity waiting to be sent is kept apart, item by item (take_activity_changes);
    # what is here goes before it: a visitor message whose POST was out when a server switch
    # came, or (in snapshots of earlier versions, read on an upgrade) the whole of it.
    activity: list[_Activity] = []
    unconfirmed_post: HttpRequest | None
    end: facts.Ended | None
    masks: list[tuple[str, str]]
    # The switch bookkeeping: how many visitor messages Salesforce accepted, and which held
    # message may have arrived although its POST got no answer: an index into ``activity``,
    # or the key of a kept item.
    visitor_messages_accepted: int = 0
    unconfirmed: int | None = None
    unconfirmed_key: int | None = None
    parked: bytes | None = None  # a keep-alive's batch, as received (JSON)
    cleanup: facts.Ended | None = None  # the end to report once the session is deleted


def map_request_fail(reason: str) -> facts.Ended:
    """ChatRequestFail: "Unavailable" means no agent; every other reason is a failure."""
    if reason == "Unavailable":
        return facts.Ended(reason="no_agent")
    return facts.Ended(reason="failed", detail=reason or "Unknown")


# ChatEnded reasons (SALESFORCE.md 5, from the Android SDK's EndReasonUtil).
_CHAT_ENDED: dict[str, facts.EndReason] = {
    "agent": "agent",
    "client": "client",
    "agentsUnavailable": "no_agent",
    "agentPushTimeout": "no_agent",
}


def map_chat_ended(reason: str) -> facts.Ended:
    """ChatEnded: by the agent, by the visitor, no agent, or a failure with its reason.

    Without a reason the agent ended it: the visitor's end is a ChatEnd bridged sent, and
    every other cause names itself (see ``wire.ChatEnded``).
    """
    mapped = _CHAT_ENDED.get(reason or "agent")
    if mapped is not None:
        return facts.Ended(reason=mapped)
    return facts.Ended(reason="failed", detail=reason)


def _position(value: int | None) -> int | None:
    # A position of 0 means "this routing type has no positions" (IBM's observation).
    return value if value is not None and value > 0 else None


def _same_id(a: str, b: str) -> bool:
    """Salesforce ids compare on their first 15 characters (the 18-char form adds a suffix)."""
    return a[:15] == b[:15]


class LiveAgentSession:
    """The visitor side of one Live Agent chat session (sans-I/O).

    Args:
        params: what to ask for.
    """

    # Slots, not an instance dict: one per chat, and a class of more than 30 attributes
    # gets no key-sharing dict (about 1.6 KiB each here).
    __slots__ = ("__weakref__", "_abandoned", "_activity", "_cleanup", "_drained_end",
                 "_draining", "_end", "_end_by_delete", "_ended", "_estimates", "_facts",
                 "_in_flight", "_masks", "_notices", "_parked", "_parked_final",
                 "_poll_unsettled", "_realigns", "_resume", "_retry", "_unconfirmed",
                 "_unknown_types", "_unread", "ack", "affinity", "agent", "agent_joined",
                 "client_poll_timeout", "connection_timeout", "offset", "params", "requested",
                 "restored", "sequence", "session_id", "session_key", "sneak_peek", "state",
                 "switch_phase", "switch_url", "switches", "visitor_messages_accepted")

    def __init__(self, params: SessionParams) -> None:
        self.params = params
        self.state = State.IDLE
        self.session_id: str | None = None
        self.session_key: str | None = None
        self.affinity = "null"
        self.client_poll_timeout = 40.0
        self.connection_timeout: float | None = None
        self.ack = -1
        self.sequence = 0  # the last X-LIVEAGENT-SEQUENCE Salesforce accepted
        self.offset: int | None = None
        self.agent: str | None = None
        self.agent_joined = False
        self.requested = False  # ChasitorInit was accepted: there is a chat to end
        self.sneak_peek = False
        self.switches = 0
        self.switch_phase: SwitchPhase | None = None
        self.switch_url: str | None = None
        self._estimates = int(params.api_version.split(".")[0]) >= _ESTIMATE_SINCE
        self._resume = State.WAITING
        self._activity = _ActivityQueue()
        self._in_flight: dict[Lane, HttpRequest | None] = {Lane.POLL: None, Lane.POST: None}
        self._abandoned: list[Lane] = []
        self._retry: HttpRequest | None = None
        self._end: facts.Ended | None = None
        self._ended = False
        self._facts: list[facts.Fact] = []
        self._notices: list[tuple[str, str]] = []
        self._unknown_types: set[str] = set()
        self._masks: list[tuple[re.Pattern[str], str]] = []
        self._realigns = 0  # 409 "Out of sync" answers in a row
        self.visitor_messages_accepted = 0  # ChatMessage POSTs Salesforce said it took
        # A visitor message whose POST got no answer when a server switch came: only the
        # new server's transcript can tell whether it arrived (see _begin_switch).
        self._unconfirmed: _Activity | None = None
        self.restored = False  # made by restore(), and no poll answered since
        self._parked: bytes | None = None  # see the module doc
        self._parked_final = False  # the parked batch ends the session
        self._poll_unsettled = False  # the last poll may still be held by Salesforce
        self._end_by_delete = False  # ChatEnd was refused: DELETE the session instead
        # A failure to report once the session Salesforce made is deleted (a 503 to
        # ChasitorInit), unlike _end, which is OCP's.
        self._cleanup: facts.Ended | None = None
        self._unread: set[str] = set()  # fields already logged as unreadable
        self._draining = False  # _finish is reporting the parked batch
        self._drained_end: facts.Ended | None = None

    # --- predicates -------------------------------------------------------------------

    @property
    def is_finished(self) -> bool:
        """The session is over (ended or poisoned); nothing more will be sent."""
        return self.state in (State.ENDED, State.ERROR)

    @property
    def poll_timeout(self) -> float:
        """HTTP read timeout for a Messages request: ``clientPollTimeout`` and a margin."""
        return self.client_poll_timeout + 5.0

    @property
    def pending_activity(self) -> int:
        """How many visitor messages and typing changes wait to be sent."""
        return len(self._activity)

    @property
    def creating(self) -> bool:
        """Whether the session is still being created (SessionId or ChasitorInit to come)."""
        return self.state in (State.IDLE, State.CHECKING, State.CREATING, State.INITIATING)

    def in_flight(self, lane: Lane) -> HttpRequest | None:
        """The request outstanding on ``lane``, if any."""
        return self._in_flight[lane]

    @property
    def parked(self) -> bool:
        """A keep-alive poll's batch is kept, unprocessed (see :meth:`release_parked`)."""
        return self._parked is not None

    @property
    def parked_batch(self) -> bytes | None:
        """The parked batch as kept (JSON), for the shell to notice that it changed."""
        return self._parked

    # --- keeping across restarts --------------------------------------------------------

    def snapshot(self) -> SessionSnapshot:
        """The session's state, to go on after a restart of bridged (the visitor activity
        waiting to be sent is kept apart: :meth:`take_activity_changes`).

        A POST on the wire (or waiting to be retried) is kept as *unconfirmed*: after the
        restart it is sent again, number and all, and Salesforce drops it if the first
        attempt arrived (11.4). During a server switch its number belongs to the old server,
        so a visitor message is kept instead as receive_failure() would keep it: held, for
        the new server's transcript to settle. A poll on the wire is not kept: the next
        process polls again with the same ``ack``.
        """
        post = self._in_flight[Lane.POST] or self._retry
        activity: list[_Activity] = []
        unconfirmed = None
        unconfirmed_key = (self._activity.key_of(self._unconfirmed)
                           if self._unconfirmed is not None else None)
        if (post is not None and post.purpose is Purpose.CHAT_MESSAGE
                and self.state is State.RECONNECTING):
            activity.append(_Activity(purpose=post.purpose, body=post.body, ref=post.ref))
            unconfirmed, unconfirmed_key, post = 0, None, None
        return SessionSnapshot(
            state=self.state, session_id=self.session_id, session_key=self.session_key,
            affinity=self.affinity, client_poll_timeout=self.client_poll_timeout,
            connection_timeout=self.connection_timeout, ack=self.ack, sequence=self.sequence,
            offset=self.offset, agent=self.agent, agent_joined=self.agent_joined,
            requested=self.requested, sneak_peek=self.sneak_peek, switches=self.switches,
            switch_phase=self.switch_phase, resume=self._resume,
            activity=activity, unconfirmed_post=post, end=self._end,
            masks=[(pattern.pattern, replacement) for pattern, replacement in self._masks],
            visitor_messages_accepted=self.visitor_messages_accepted,
            unconfirmed=unconfirmed, unconfirmed_key=unconfirmed_key, parked=self._parked,
            cleanup=self._cleanup,
        )

    @property
    def activity_version(self) -> int:
        """Counts the changes of the activity waiting to be sent (for the shell to notice
        one cheaply, whether or not it was taken since)."""
        return self._activity.version

    @property
    def activity_changed(self) -> bool:
        """Whether the activity waiting to be sent changed since it was last taken."""
        return self._activity.changed

    def take_activity_changes(self) -> tuple[list[tuple[int, bytes]], list[tuple[int, int]]]:
        """The visitor activity added since the last call, as ``(key, bytes)`` ordered by
        key, and the ranges of keys gone: what to keep, item by item, with a snapshot."""
        if not self._activity.changed:
            return [], []
        added, gone = self._activity.take_changes()
        return [(key, _activity_encoder.encode(item)) for key, item in added], gone

    @classmethod
    def restore(cls, params: SessionParams, snapshot: SessionSnapshot,
                activity: Iterable[tuple[int, bytes]] = ()) -> LiveAgentSession:
        """A session that goes on from ``snapshot`` and its kept ``activity`` (``(key,
        bytes)`` by key, as :meth:`take_activity_changes` gave them), nothing in flight.

        Raises:
            msgspec.DecodeError: a damaged activity item.
        """
        session = cls(params)
        for name in ("state", "session_id", "session_key", "affinity", "client_poll_timeout",
                     "connection_timeout", "ack", "sequence", "offset", "agent",
                     "agent_joined", "requested", "sneak_peek", "switches", "switch_phase"):
            setattr(session, name, getattr(snapshot, name))
        session._resume = snapshot.resume
        queue = session._activity = _ActivityQueue(
            (key, _activity_decoder.decode(data)) for key, data in activity)
        if snapshot.unconfirmed_key is not None:
            session._unconfirmed = queue.item_with_key(snapshot.unconfirmed_key)
        for item in reversed(snapshot.activity):  # before the kept items, and kept anew
            queue.appendleft(item)
        if snapshot.unconfirmed is not None and 0 <= snapshot.unconfirmed < len(snapshot.activity):
            session._unconfirmed = snapshot.activity[snapshot.unconfirmed]
        session.visitor_messages_accepted = snapshot.visitor_messages_accepted
        retry = snapshot.unconfirmed_post
        if retry is not None and retry.purpose is Purpose.CHAT_MESSAGE:
            retry = msgspec.structs.replace(retry, unanswered=True)  # its answer was lost
        session._retry = retry
        session._end = snapshot.end
        session._cleanup = snapshot.cleanup
        session._masks = [(re.compile(p), r) for p, r in snapshot.masks]
        if snapshot.parked is not None:
            session._set_parked(snapshot.parked)
        session.restored = True
        return session

    # --- commands ---------------------------------------------------------------------

    def start(self) -> None:
        """Ask for a chat: check availability (if configured), create a session, request."""
        if self.state is not State.IDLE:
            raise LocalProtocolError(f"start() in state {self.state.value}")
        self.state = State.CHECKING if self.params.check_availability else State.CREATING

    def send_text(self, message_id: str | None, text: str) -> None:
        """Queue a visitor message; it goes out once an agent has joined.

        The agent console's sensitive-data rules (``SensitiveDataRules``) are applied first.
        ``message_id`` is ``None`` for text bridged sends on its own (the bot history).
        """
        self._check_live("send_text")
        for pattern, replacement in self._masks:
            text = pattern.sub(replacement, text)
        body = wire.encode_body({"text": text})
        self._activity.append(_Activity(purpose=Purpose.CHAT_MESSAGE, body=body, ref=message_id))

    def send_history(self, texts: list[str]) -> None:
        """Queue the bot's conversation for the agent, ahead of the visitor's messages."""
        self._check_live("send_history")
        for text in reversed(texts):
            body = wire.encode_body({"text": text})
            self._activity.appendleft(_Activity(purpose=Purpose.CHAT_MESSAGE, body=body))

    def set_typing(self, active: bool, text: str | None = None) -> None:
        """Queue a typing change. With sneak peek enabled, a draft goes out as SneakPeek.

        Typing is a state, not a message: a newer change replaces an older one that has not
        been sent yet, and typing before an agent joined is dropped (nobody is there to see).
        """
        self._check_live("set_typing")
        if self.state is not State.CHATTING:
            return
        if active and text is not None and self.sneak_peek:
            body = wire.encode_body({"position": len(text), "text": text})
            item = _Activity(purpose=Purpose.SNEAK_PEEK, body=body)
        elif active:
            item = _Activity(purpose=Purpose.TYPING, body=b"{}")
        else:
            item = _Activity(purpose=Purpose.NOT_TYPING, body=b"{}")
        while self._activity and self._activity[-1].purpose in _TYPING:
            self._activity.pop()
        self._activity.append(item)

    def end(self, reason: facts.EndReason = "client", detail: str = "") -> None:
        """End the chat toward Salesforce; ``reason`` is what OCP is told afterwards."""
        if self.is_finished or self._end is not None:
            return
        self._end = facts.Ended(reason=reason, detail=detail)
        if self._parked_final:
            # Salesforce ended the session when it handed over the parked batch: there is
            # nothing to end there, only the batch to report (see _finish).
            self._finish(self._end)
        elif self.session_key is None and self._in_flight[Lane.POST] is None:
            # No Salesforce session exists (nor is one being created): nothing to end there.
            self._finish(self._end)
        elif self.state is State.RECONNECTING:
            self._resume = State.ENDING  # after the switch
        elif self.state is not State.CREATING:
            self.state = State.ENDING

    def give_up(self, detail: str) -> None:
        """The shell cannot go on (no answer, a forbidden host): the chat fails with ``detail``."""
        self._finish(facts.Ended(reason="failed", detail=detail))

    def farewell(self, answer: HttpResponse | None = None) -> HttpRequest | None:
        """The request that ends the chat at Salesforce when the shell crashed (a bug).

        Not a step of the state machine, which may be anywhere: the ChatEnd (or, before
        ChasitorInit was accepted, the bare session's DELETE) under the session's key and
        affinity, numbered above every POST sent (one whose fate is unknown included, so
        that Salesforce cannot drop it as a duplicate); given the 409 "Out of sync"
        ``answer`` to that, numbered as Salesforce expects. ``None``: nothing (more) to do,
        no session, or one that is over.
        """
        if self.session_key is None or self.state is State.ENDED:
            return None
        if not self.requested:
            if answer is not None:
                return None
            return HttpRequest(method="DELETE", path=f"System/SessionId/{self.session_key}",
                               headers=self._headers(), purpose=Purpose.DELETE_SESSION,
                               lane=Lane.POST)
        if answer is None:
            sent = [r.sequence for r in (self._in_flight[Lane.POST], self._retry)
                    if r is not None and r.sequence is not None]
            sequence = max([self.sequence, *sent]) + 1
        else:
            match = (_OUT_OF_SYNC.search(answer.body.decode("utf-8", "replace"))
                     if answer.status == 409 else None)
            if match is None:
                return None
            sequence = int(match[1]) + 1
        body = wire.encode_body({"reason": "client"})
        return HttpRequest(method="POST", path="Chasitor/ChatEnd",
                           headers=self._headers(sequence=sequence, body=True), body=body,
                           purpose=Purpose.CHAT_END, lane=Lane.POST, sequence=sequence)

    # --- outputs ----------------------------------------------------------------------

    def next_request(self, lane: Lane, *, keepalive: bool = False) -> HttpRequest | None:
        """The next request of ``lane``, now in flight; ``None`` if the lane has nothing to do.

        Args:
            lane: which lane.
            keepalive: for a poll: the shell holds all the events it may, so whatever this
                poll brings is parked (see the module doc): kept, neither processed nor
                acknowledged. The session stays alive meanwhile, which a session that is
                not polled would not (11.10). While a batch is parked every poll is a
                keep-alive; the polls of a server switch that wait for
                ChasitorSessionData never are (the switch cannot finish without it).

        Raises:
            LocalProtocolError: a request is already in flight on ``lane``.
        """
        if self._in_flight[lane] is not None:
            raise LocalProtocolError(f"a {lane.value} request is already in flight")
        if self.is_finished:
            return None
        request = self._next_poll() if lane is Lane.POLL else self._next_post()
        if (lane is Lane.POLL and request is not None and (keepalive or self.parked)
                and self.switch_phase is not SwitchPhase.SESSION_DATA):
            request = msgspec.structs.replace(request, keepalive=True)
        self._in_flight[lane] = request
        return request

    def facts_received(self) -> list[facts.Fact]:
        """Drain the facts for OCP, in the order they happened."""
        out, self._facts = self._facts, []
        return out

    def notices_received(self) -> list[tuple[str, str]]:
        """Drain ``(event, detail)`` pairs worth a log line (unknown types, ignored ones)."""
        out, self._notices = self._notices, []
        return out

    def abandoned_lanes(self) -> list[Lane]:
        """Drain the lanes whose request the shell must cancel (and never answer)."""
        out, self._abandoned = self._abandoned, []
        return out

    def release_parked(self) -> bool:
        """The shell has room again: process the parked batch as if it had just arrived.

        Only while no poll is in flight (its answer could bring the same messages again,
        and would then be taken for new ones): ``False`` if nothing was released.
        """
        if self._parked is None or self._in_flight[Lane.POLL] is not None or self.is_finished:
            return False
        self._take_batch(self._take_parked())
        return True

    def take_unsettled_poll(self) -> bool:
        """Whether the last poll may still be held by Salesforce (once per such poll).

        True after a poll got no answer from Salesforce itself: none at all, a status that
        is not one of Salesforce's answers to a poll (a gateway's 502 or 504), or a 503 that
        turned out to be no server switch. A second poll while Salesforce holds one ends the
        session (409), so the shell waits before it polls again until Salesforce, which
        answers a held poll within its hold time, must have answered that one.
        """
        unsettled, self._poll_unsettled = self._poll_unsettled, False
        return unsettled

    def take_switch_url(self) -> str | None:
        """The ``newUrl`` of a ``SwitchServer`` message, once; the shell moves there."""
        url, self.switch_url = self.switch_url, None
        return url

    # --- answers ----------------------------------------------------------------------

    def receive_response(self, request: HttpRequest, response: HttpResponse) -> None:
        """Take Salesforce's answer to ``request``."""
        if not self._release(request):
            return
        try:
            if response.status == 503 and request.purpose is Purpose.RECONNECT:
                self._retry = request  # the new server is not ready yet: ask again, later
            elif response.status == 503 and request.purpose not in (Purpose.AVAILABILITY,
                                                                    Purpose.DELETE_SESSION):
                # "affinity token changed (server hand-over)"; "Any request type can get
                # the 503" (D-RECON).
                self._begin_switch(request)
            elif request.lane is Lane.POLL:
                self._receive_poll(request, response)
            else:
                self._receive_post(request, response)
        except RemoteProtocolError as exc:
            self._poison(str(exc), request)

    def receive_failure(self, request: HttpRequest) -> None:
        """``request`` got no answer (network error or timeout). It will be sent again.

        A POST keeps its ``X-LIVEAGENT-SEQUENCE``, so that Salesforce drops it if the lost
        attempt did arrive; a poll keeps its ``ack`` (D-MSG: "if a request gets no HTTP
        response, retry it").
        """
        if not self._release(request):
            return
        if request.lane is Lane.POLL:
            self._poll_unsettled = True  # it may have reached Salesforce, and be held there
        elif self.state is State.RECONNECTING:
            # Its number and affinity belong to the old server: keep it for after the
            # switch, as a message whose fate the transcript will tell.
            self._keep_unconfirmed(request)
        else:
            self._retry = msgspec.structs.replace(request, unanswered=True)

    # --- internals: requests ----------------------------------------------------------

    def _headers(self, *, affinity: str | None = None, key: bool = True,
                 sequence: int | None = None, body: bool = False) -> tuple[tuple[str, str], ...]:
        headers = [
            ("X-LIVEAGENT-API-VERSION", self.params.api_version),
            ("X-LIVEAGENT-AFFINITY", self.affinity if affinity is None else affinity),
        ]
        if key and self.session_key is not None:
            headers.append(("X-LIVEAGENT-SESSION-KEY", self.session_key))
        if sequence is not None:
            headers.append(("X-LIVEAGENT-SEQUENCE", str(sequence)))
        headers.append(("Accept", "application/json"))
        if body:
            headers.append(("Content-Type", "application/json"))
        return tuple(headers)

    def _next_poll(self) -> HttpRequest | None:
        if self.state is State.RECONNECTING:
            if self.switch_phase is SwitchPhase.RECONNECT:
                return None  # the new server is not known yet
        elif self.state not in (State.WAITING, State.CHATTING, State.ENDING):
            return None
        if not self.requested and self.state is State.ENDING:
            return None  # ChasitorInit never went through: nothing to poll
        if self._parked_final:
            return None  # Salesforce ended the session when it handed the batch over
        return HttpRequest(
            method="GET",
            path="System/Messages",
            query=(("ack", str(self.ack)),),
            headers=self._headers(),
            purpose=Purpose.MESSAGES,
            lane=Lane.POLL,
        )

    def _sequenced(self, purpose: Purpose, path: str, body: bytes | None,
                   ref: str | None = None) -> HttpRequest:
        sequence = self.sequence + 1
        return HttpRequest(
            method="POST",
            path=path,
            headers=self._headers(sequence=sequence, body=body is not None),
            body=body,
            purpose=purpose,
            lane=Lane.POST,
            sequence=sequence,
            ref=ref,
        )

    def _next_post(self) -> HttpRequest | None:
        if self._retry is not None:
            retry, self._retry = self._retry, None
            return retry
        match self.state:
            case State.CHECKING:
                return self._availability_request()
            case State.CREATING:
                # SessionId: "X-LIVEAGENT-AFFINITY: null" (the literal string), no key yet.
                return HttpRequest(method="GET", path="System/SessionId",
                                   headers=self._headers(affinity="null", key=False),
                                   purpose=Purpose.SESSION_ID, lane=Lane.POST)
            case State.INITIATING:
                return self._sequenced(Purpose.CHASITOR_INIT, "Chasitor/ChasitorInit",
                                       wire.encode_body(self._chasitor_init()))
            case State.RECONNECTING:
                return self._switch_request()
            case State.ENDING:
                # Messages the visitor sent before ending still reach a joined agent first.
                while self.agent_joined and self._activity:
                    head = self._activity.popleft()
                    if head.purpose is Purpose.CHAT_MESSAGE:
                        return self._sequenced(head.purpose, "Chasitor/ChatMessage", head.body,
                                               head.ref)
                return self._end_request()
            case State.CHATTING if self._activity:
                head = self._activity.popleft()
                return self._sequenced(head.purpose, f"Chasitor/{head.purpose.value}",
                                       head.body, head.ref)
        return None

    def _availability_request(self) -> HttpRequest:
        p = self.params
        query = [
            ("org_id", p.organization_id),
            # "deployment_id=<15-char deployment>" (SALESFORCE.md 4.12)
            ("deployment_id", p.deployment_id[:15]),
            ("Availability.ids", f"[{p.button_id}]"),
        ]
        if self._estimates:
            query.append(("Availability.needEstimatedWaitTime", "1"))
        # Visitor resources take only X-LIVEAGENT-API-VERSION (SALESFORCE.md 2.2).
        return HttpRequest(
            method="GET", path="Visitor/Availability", query=tuple(query),
            headers=(("X-LIVEAGENT-API-VERSION", p.api_version), ("Accept", "application/json")),
            purpose=Purpose.AVAILABILITY, lane=Lane.POST,
        )

    def _switch_request(self) -> HttpRequest | None:
        if self.switch_phase is SwitchPhase.RECONNECT:
            # "ReconnectSession.offset=<offset of the most recent poll response that carried
            # messages>"; the docs example sends the affinity as the literal null.
            return HttpRequest(
                method="GET", path="System/ReconnectSession",
                query=(("ReconnectSession.offset", str(self.offset or 0)),),
                headers=self._headers(affinity="null"),
                purpose=Purpose.RECONNECT, lane=Lane.POST,
            )
        if self.switch_phase is SwitchPhase.RESYNC:
            # IBM: "do not send sequence header for this call".
            body = wire.encode_body({"organizationId": self.params.organization_id})
            return HttpRequest(method="POST", path="Chasitor/ChasitorResyncState",
                               headers=self._headers(body=True), body=body,
                               purpose=Purpose.RESYNC, lane=Lane.POST)
        return None  # SESSION_DATA: the poll brings ChasitorSessionData first

    def _end_request(self) -> HttpRequest:
        if not self.requested or self._end_by_delete:
            # ChasitorInit was never accepted, or ChatEnd was refused: delete the session
            # instead ("Either one ends the session", D-GS).
            assert self.session_key is not None
            return HttpRequest(
                method="DELETE",
                path=f"System/SessionId/{self.session_key}",
                headers=self._headers(),
                purpose=Purpose.DELETE_SESSION,
                lane=Lane.POST,
            )
        return self._sequenced(Purpose.CHAT_END, "Chasitor/ChatEnd",
                               wire.encode_body({"reason": "client"}))

    def _chasitor_init(self) -> wire.ChasitorInit:
        p = self.params
        assert self.session_id is not None
        return wire.ChasitorInit(
            organization_id=p.organization_id,
            deployment_id=p.deployment_id,
            button_id=p.button_id,
            session_id=self.session_id,
            user_agent=p.user_agent,
            language=p.language,
            screen_resolution=p.screen_resolution,
            visitor_name=p.visitor_name,
            prechat_details=p.prechat_details,
            prechat_entities=p.prechat_entities,
            receive_queue_updates=True,
            is_post=True,
        )

    # --- internals: answers -----------------------------------------------------------

    def _release(self, request: HttpRequest) -> bool:
        """Free the lane of ``request``; ``False`` if the answer comes too late to matter."""
        if self._in_flight[request.lane] is not request:
            raise LocalProtocolError(f"an answer to {request.purpose.value} that is not in flight")
        self._in_flight[request.lane] = None
        return not self.is_finished

    def _receive_poll(self, request: HttpRequest, response: HttpResponse) -> None:
        status = response.status
        if status in (200, 204):
            self.restored = False
        if status not in _SALESFORCE_POLL_ANSWERS:
            # Not Salesforce's own answer to the poll (a gateway's 502 or 504, say): the poll
            # may have reached Salesforce and still be held there.
            self._poll_unsettled = True
        if status == 200 and request.keepalive:
            self._park(response.body)
        elif status == 200:
            body = wire.decode_messages(response.body)
            if self._parked is not None:  # it came first
                self._take_batch(self._take_parked())
            self._take_batch(body)
        elif status == 204:
            pass  # "Poll again at once with the **same** ack."
        elif status == 403:
            self._finish(_EXPIRED_WHILE_DOWN if self.restored else _EXPIRED)
        elif status == 409:
            self._finish(facts.Ended(
                reason="failed", detail="Salesforce ended the session (duplicate long poll)"))
        elif status >= 500:
            pass  # a server hiccup: poll again, with the same ack
        else:
            raise RemoteProtocolError(f"Messages answered HTTP {status}", status)

    def _take_batch(self, body: wire.MessagesBody) -> None:
        """Process a batch that arrived (or was parked), and acknowledge it from now on."""
        if body.sequence is not None and 0 <= body.sequence <= self.ack:
            # Already processed: a batch Salesforce delivered again (11.7).
            self._notices.append(("redelivered_batch_skipped", str(body.sequence)))
            return
        if body.messages and body.offset is not None:
            self.offset = body.offset  # for ReconnectSession.offset
        for name in body.unread:
            if name not in self._unread:
                self._unread.add(name)
                self._notices.append(("field_unreadable", name))
        self._process(body.messages)
        if body.sequence is not None:
            self.ack = body.sequence

    def _park(self, raw: bytes) -> None:
        """Keep a keep-alive poll's batch, with what earlier keep-alives brought."""
        body = wire.decode_messages(raw)  # a batch that cannot be read fails now
        if body.sequence is not None and 0 <= body.sequence <= self.ack:
            self._notices.append(("redelivered_batch_skipped", str(body.sequence)))
            return
        if not body.messages and body.sequence is None:
            return
        merged = raw if self._parked is None else wire.merge_batches(self._parked, raw)
        self._set_parked(merged)
        self._notices.append(("batch_parked", f"ack stays {self.ack}"))

    def _set_parked(self, raw: bytes) -> None:
        self._parked = raw
        self._parked_final = any(isinstance(m, (wire.ChatEnded, wire.ChatRequestFail))
                                 for m in wire.decode_messages(raw).messages)

    def _take_parked(self) -> wire.MessagesBody:
        raw, self._parked, self._parked_final = self._parked, None, False
        assert raw is not None
        return wire.decode_messages(raw)

    def _receive_post(self, request: HttpRequest, response: HttpResponse) -> None:
        status = response.status
        purpose = request.purpose
        if purpose is Purpose.CHAT_END and status >= 500 and not self._end_by_delete:
            # D-GS's 500 for activity before an agent joined, or a server's trouble: the
            # chat request may still be waiting for an agent. DELETE ends it for sure, and
            # needs no sequence number.
            self._end_by_delete = True
            self._notices.append(("chat_end_refused", f"HTTP {status}: deleting the session"))
            return
        if purpose in (Purpose.CHAT_END, Purpose.DELETE_SESSION):
            # Whatever the answer (403 included: already over), the session is ended.
            ended = self._end or self._cleanup
            assert ended is not None
            self._finish(ended)
            return
        if purpose is Purpose.AVAILABILITY:
            self._receive_availability(response)
            return
        if 200 <= status < 300:
            self._realigns = 0
            if request.sequence is not None:
                self.sequence = request.sequence
            self._accepted(request, response)
        elif status == 409 and request.sequence is not None:
            # "Out of sync Ack. Expected 498. Actual 4": Actual is the last sequence the
            # server accepted; the next one is Actual + 1 (IBM, LINE).
            match = _OUT_OF_SYNC.search(response.body.decode("utf-8", "replace"))
            self._realigns += 1
            if match is None or int(match[1]) == self.sequence or self._realigns > 3:
                raise RemoteProtocolError(f"{purpose.value} answered HTTP 409: "
                                          f"{response.body[:200].decode('utf-8', 'replace')}",
                                          status)
            self.sequence = int(match[1])
            self._notices.append(("sequence_realigned", f"now {self.sequence}"))
            self._retry = self._sequenced(purpose, request.path, request.body, request.ref)
        elif status == 403:
            self._finish(_EXPIRED, request)
        elif status >= 500 and self.state is State.RECONNECTING:
            # Not applied (a 5xx does not use up the number), and its number belongs to
            # the old server: it goes out again after the switch.
            if purpose is Purpose.CHAT_MESSAGE:
                self._activity.appendleft(_Activity(purpose=purpose, body=request.body,
                                                    ref=request.ref))
        elif status >= 500:
            # Includes D-GS's 500 for activity the server thinks came before the agent
            # joined; that answer does not use up the number (11.3), so the very same
            # request, number and all, is sent again after a pause.
            self._retry = request
        elif purpose is Purpose.RECONNECT and status == 405:
            # "405 ... on ReconnectSession sent without a hand-over" (IBM): the 503 was not
            # a switch (an overloaded server says 503 too). Carry on where the session was;
            # MAX_SWITCHES bounds how often this can repeat.
            self._notices.append(("reconnect_not_needed", f"switch {self.switches}"))
            self.state = self._resume
            self.switch_phase = None
            # Then the 503 did not come from the server that holds the poll, which may be
            # holding it still (the 503 answered it, or the switch abandoned it).
            self._poll_unsettled = True
        elif purpose is Purpose.RECONNECT:
            self._finish(facts.Ended(
                reason="failed",
                detail=f"Salesforce refused to reconnect the session (HTTP {status})"))
        else:
            raise RemoteProtocolError(f"{purpose.value} answered HTTP {status}", status)

    def _receive_availability(self, response: HttpResponse) -> None:
        """No agent for the button: end without creating a session. Otherwise go on.

        The check only saves Salesforce a session that would fail; when it cannot be read,
        the chat is requested anyway (the request itself will tell).
        """
        if response.status != 200:
            self._notices.append(("availability_unknown", f"HTTP {response.status}"))
            self.state = State.CREATING
            return
        try:
            body = wire.decode_messages(response.body)
        except RemoteProtocolError as exc:
            self._notices.append(("availability_unknown", str(exc)))
            self.state = State.CREATING
            return
        for message in body.messages:
            if isinstance(message, wire.SwitchServer):
                self._take_switch(message)
                return  # ask again, at the new host
            if isinstance(message, wire.Availability):
                for result in message.results:
                    if _same_id(result.id, self.params.button_id):
                        if result.is_available:
                            self.state = State.CREATING
                        else:
                            self._finish(facts.Ended(reason="no_agent"))
                        return
        self._notices.append(("availability_unknown", "the button is not in the answer"))
        self.state = State.CREATING

    def _accepted(self, request: HttpRequest, response: HttpResponse) -> None:
        purpose = request.purpose
        if purpose is Purpose.SESSION_ID:
            body = wire.decode_session_id(response.body)
            self.session_id, self.session_key = body.id, body.key
            self.affinity = body.affinity_token
            self.client_poll_timeout = body.client_poll_timeout
            # An end() that came while SessionId was in flight is served next.
            self.state = State.ENDING if self._end is not None else State.INITIATING
        elif purpose is Purpose.CHASITOR_INIT:
            self.requested = True
            if self._end is None:
                self.state = State.WAITING
        elif purpose is Purpose.CHAT_MESSAGE:
            self.visitor_messages_accepted += 1
            if request.ref is not None:
                self._facts.append(facts.Delivered(id=request.ref))
        elif purpose is Purpose.RECONNECT:
            self._receive_reconnect(response)
        elif purpose is Purpose.RESYNC:
            self.state = self._resume
            self.switch_phase = None
            self._notices.append(("server_switch_done", f"switch {self.switches}"))

    def _begin_switch(self, request: HttpRequest) -> None:
        """A 503: Salesforce moved the session to another server (SALESFORCE.md 6)."""
        if self.state in (State.CHECKING, State.CREATING, State.INITIATING):
            # There is no chat to carry over yet: requests at this stage cannot be resumed.
            failed = facts.Ended(reason="failed",
                                 detail="Salesforce moved the session before the chat began")
            if self.state is State.INITIATING and self._end is None:
                # SessionId made a session (and ChasitorInit may have reached it, a chat
                # request waiting for an agent): delete it before the chat fails.
                self._cleanup = failed
                self.state = State.ENDING
                return
            self._finish(failed, request)
            return
        if self._parked is not None:
            # Before anything the new server sends: ReconnectSession's offset and the ack
            # then follow the parked batch, which is really received.
            self._take_batch(self._take_parked())
            if self.is_finished:
                return
        self.switches += 1
        if self.switches > MAX_SWITCHES:
            self._finish(facts.Ended(
                reason="failed",
                detail=f"Salesforce moved the session {MAX_SWITCHES} times; giving up"), request)
            return
        if self.state is not State.RECONNECTING:
            self._resume = self.state
        self.state = State.RECONNECTING
        self.switch_phase = SwitchPhase.RECONNECT
        self._notices.append(("server_switch", f"switch {self.switches}"))
        # "keep unsent outbound data": the POST the 503 refused goes back to the head of the
        # queue (a typing change is not worth keeping). One that got no answer at all may
        # have arrived: after the switch the sequence starts again at 1, so Salesforce could
        # not drop it as a duplicate; the new server's transcript decides. That holds for a
        # re-send the 503 refused too: its first attempt may have arrived.
        if request.unanswered:
            self._keep_unconfirmed(request)
        elif request.purpose is Purpose.CHAT_MESSAGE:
            self._activity.appendleft(_Activity(purpose=request.purpose, body=request.body,
                                                ref=request.ref))
        if self._retry is not None:
            self._keep_unconfirmed(self._retry)
        self._retry = None
        # "Cancel every in-flight inbound ... request": the held poll will never be answered
        # by the old server. A POST in flight is left to be answered (see the module doc).
        if self._in_flight[Lane.POLL] is not None:
            self._in_flight[Lane.POLL] = None
            self._abandoned.append(Lane.POLL)

    def _keep_unconfirmed(self, request: HttpRequest) -> None:
        if request.purpose is not Purpose.CHAT_MESSAGE:
            return  # typing is not worth keeping; ChatEnd and the like are made again
        item = _Activity(purpose=request.purpose, body=request.body, ref=request.ref)
        self._activity.appendleft(item)
        self._unconfirmed = item

    def _settle_unconfirmed(self, transcript: list[wire.TranscriptEntry]) -> None:
        """Drop the unconfirmed message if the transcript shows it arrived.

        It arrived if the transcript holds more visitor lines than Salesforce confirmed,
        and the last of them is its text (so that two identical texts in a row are told
        apart by the count).
        """
        item, self._unconfirmed = self._unconfirmed, None
        if item is None or item.body is None or not any(a is item for a in self._activity):
            return
        visitor = [entry.content for entry in transcript if entry.type == "Chasitor"]
        text = msgspec.json.decode(item.body)["text"]
        if len(visitor) > self.visitor_messages_accepted and visitor[-1] == text:
            self._activity.remove(item)
            self.visitor_messages_accepted += 1
            self._notices.append(("unconfirmed_message_arrived", item.ref or ""))
            if item.ref is not None:
                self._facts.append(facts.Delivered(id=item.ref))

    def _receive_reconnect(self, response: HttpResponse) -> None:
        body = wire.decode_messages(response.body)
        for message in body.messages:
            if isinstance(message, wire.ReconnectSession):
                self.affinity = message.affinity_token
                # "resetSequence ... Reset the outgoing X-LIVEAGENT-SEQUENCE" (D-RECON); the
                # next sequenced POST carries 1 (strict reading 11.2).
                if message.reset_sequence is not False:
                    self.sequence = 0
                self.switch_phase = SwitchPhase.SESSION_DATA
                return
        raise RemoteProtocolError("ReconnectSession answer carries no ReconnectSession message")

    def _take_switch(self, message: wire.SwitchServer) -> None:
        if not message.new_url:
            self._notices.append(("message_ignored", "SwitchServer without newUrl"))
            return
        self.switches += 1
        if self.switches > MAX_SWITCHES:
            self.give_up(f"Salesforce moved the session {MAX_SWITCHES} times; giving up")
            return
        self.switch_url = message.new_url
        self._notices.append(("switch_server", message.new_url))

    def _process(self, messages: list[wire.ServerMessage]) -> None:
        # IBM saw AgentTyping and AgentNotTyping swapped within one batch: when both are
        # present, the agent is not typing.
        stopped = any(isinstance(m, wire.AgentNotTyping) for m in messages)
        for message in messages:
            if self.is_finished:
                return
            self._process_one(message, stopped)

    def _queued(self, position: int | None, wait: float | None) -> None:
        wait_s = None
        if self._estimates and wait is not None and wait >= 0:  # "-1 if unknown" (D-TYPES)
            wait_s = round(wait)
        self._facts.append(facts.Queued(position=_position(position), wait_s=wait_s))

    def _process_one(self, message: wire.ServerMessage, typing_stopped: bool) -> None:
        match message:
            case wire.ChatRequestSuccess():
                if message.connection_timeout:
                    self.connection_timeout = message.connection_timeout / 1000
                self._queued(message.queue_position, message.estimated_wait_time)
            case wire.QueueUpdate():
                if not self.agent_joined:
                    self._queued(message.position, message.estimated_wait_time)
            case wire.ChatEstablished():
                self.agent = message.name or self.agent or ""
                self.agent_joined = True
                self.sneak_peek = message.sneak_peek_enabled
                if self.state is State.WAITING:
                    self.state = State.CHATTING
                elif self.state is State.RECONNECTING and self._resume is State.WAITING:
                    self._resume = State.CHATTING
                self._facts.append(facts.AgentJoined(agent=self.agent))
            case wire.ChatMessage() if message.text is None:
                self._notices.append(("message_ignored", "ChatMessage without text"))
            case wire.ChatMessage():
                self._facts.append(facts.AgentMessage(agent=message.name or self.agent or "",
                                                      text=message.text or ""))
            case wire.AgentTyping():
                if not typing_stopped:
                    self._facts.append(facts.AgentTyping(active=True))
            case wire.AgentNotTyping():
                self._facts.append(facts.AgentTyping(active=False))
            case wire.ChatTransferred():
                self.agent = message.name
                self.sneak_peek = message.sneak_peek_enabled
                self._facts.append(facts.Transferred(agent=message.name))
            case wire.ChatRequestFail():
                self._final(map_request_fail(message.reason))
            case wire.ChatEnded():
                self._final(map_chat_ended(message.reason))
            case wire.ChasitorSessionData():
                if message.sneak_peek_enabled is not None:
                    self.sneak_peek = message.sneak_peek_enabled
                self._settle_unconfirmed(message.chat_messages)
                if self.switch_phase is SwitchPhase.SESSION_DATA:
                    # "Until you have processed it, send nothing after a 503"; now resync.
                    self.switch_phase = SwitchPhase.RESYNC
                else:
                    self._notices.append(("message_ignored", "ChasitorSessionData"))
            case wire.SwitchServer():
                self._take_switch(message)
            case wire.SensitiveDataRules():
                self._take_rules(message.sensitive_data_rules)
            case wire.AgentDisconnect():
                # "the chat session stays alive on the server; another agent may pick it up"
                self._notices.append(("agent_disconnected", self.agent or ""))
            case wire.FileTransfer():
                # bridged's visitor is a bot platform's chat: it has no file to upload.
                self._notices.append(("file_transfer_not_supported", message.type))
            case wire.UnknownMessage():
                if message.type not in self._unknown_types:
                    self._unknown_types.add(message.type)
                    self._notices.append(("unknown_message_type", message.type))
            case _:
                # CustomEvent, TransferToButtonInitiated, NewVisitorBreadcrumb: nothing for
                # OCP; Availability and ReconnectSession do not belong in Messages.
                self._notices.append(("message_ignored", type(message).__name__))

    def _take_rules(self, rules: list[wire.SensitiveDataRule]) -> None:
        """Mask what the agent console wants masked in visitor text, from now on."""
        masks = []
        for rule in rules:
            if rule.action_type.lower() != "replace" or not rule.pattern:
                continue
            try:
                masks.append((re.compile(rule.pattern), rule.replacement))
            except re.error as exc:  # a Java pattern Python cannot read
                self._notices.append(("sensitive_data_rule_skipped", f"{rule.name}: {exc}"))
        self._masks = masks

    def _check_live(self, what: str) -> None:
        if self.state is State.IDLE or self.is_finished or self._end is not None:
            raise LocalProtocolError(f"{what}() in state {self.state.value}")

    def _final(self, ended: facts.Ended) -> None:
        """A ChatEnded or ChatRequestFail: the end, or (while draining) the end to report."""
        if self._draining:
            self._drained_end = self._drained_end or ended
        else:
            self._finish(ended)

    def _finish(self, ended: facts.Ended, lost: HttpRequest | None = None) -> None:
        """Enter ENDED once: report every visitor message not known delivered, then the end.

        A parked batch is reported first (Salesforce handed it over before), and an end it
        holds is the end. Once OCP asked to end, its reason stands whatever Salesforce
        answers to the ChatEnd.
        """
        if self._ended:
            return
        if self._parked is not None:
            self._draining = True
            try:
                self._process(self._take_parked().messages)
            except RemoteProtocolError:
                pass  # decoded once already
            finally:
                self._draining = False
            if self._ended:  # the batch itself gave up (too many SwitchServer messages)
                return
            ended = self._drained_end or ended
        self._ended = True
        self.state = State.ENDED
        self.switch_phase = None
        unconfirmed = [lost, self._in_flight[Lane.POST], self._retry]
        refs = [r.ref for r in unconfirmed if r is not None and r.purpose is Purpose.CHAT_MESSAGE]
        refs += [item.ref for item in self._activity if item.ref is not None]
        for ref in dict.fromkeys(refs):  # once each, in order
            if ref is not None:
                self._facts.append(facts.Undelivered(
                    id=ref, detail="the chat ended before Salesforce confirmed the message"))
        self._activity.clear()
        self._retry = None
        self._facts.append(self._end if self._end is not None else ended)

    def _poison(self, detail: str, lost: HttpRequest | None = None) -> None:
        self._finish(facts.Ended(reason="failed", detail=detail), lost)
        self.state = State.ERROR
        self._notices.append(("protocol_error", detail))
