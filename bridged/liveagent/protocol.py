"""The visitor side of one Live Agent chat, as a sans-I/O state machine.

Theory of operation
-------------------
``LiveAgentSession`` holds everything that decides *what to send next* and *what a
Salesforce answer means*, and nothing that waits: no sockets, clocks, sleeps or tasks.
The actor (``bridged.liveagent.actor``) is the shell around it.

Inputs are commands (:meth:`start`, :meth:`send_text`, :meth:`set_typing`, :meth:`end`)
and answers (:meth:`receive_response`, :meth:`receive_failure`). Outputs are drained:
:meth:`next_request` gives the next HTTP request of a lane, :meth:`facts_received` the
facts for OCP, :meth:`notices_received` things worth a log line.

Requests travel in two lanes, because Live Agent has two kinds of traffic:

* the **poll lane** holds the one ``GET System/Messages`` long poll. "Keep exactly one
  Messages request outstanding per session" (SALESFORCE.md 7.1): the lane is either empty
  or holds one request.
* the **post lane** carries everything else, one request at a time, in order: SessionId,
  ChasitorInit, then the visitor's activity and finally ChatEnd. They go one by one
  because each sequenced POST carries ``X-LIVEAGENT-SEQUENCE`` = previous + 1, and two in
  flight could arrive swapped and be refused as "Out of sync".

States and their transitions (every transition happens inside one method call, so no
other task can see a half-done one)::

    IDLE --start()--> CREATING --SessionId 200--> INITIATING --ChasitorInit 2xx--> WAITING
    WAITING --ChatEstablished--> CHATTING
    WAITING | CHATTING --ChatRequestFail | ChatEnded | 403 | 409--> ENDED
    any live state --end()--> ENDING (after the post in flight) --answer--> ENDED
    any state --protocol violation--> ERROR (poisoned; the supervisor decides)

Sequencing rules, quoted from SALESFORCE.md:

* ack: "``-1`` on the first poll. After each **200**, send the ``sequence`` from that
  response. After a **204** (no body, no sequence), send the same ``ack`` again."
* ``X-LIVEAGENT-SEQUENCE``: "Clients start at 1 on ChasitorInit and add 1 per POST." A
  number is *used up* only when Salesforce accepts the POST; an answer of 500 (visitor
  activity before the agent joined) does not use it up (section 11.3), and a POST re-sent
  after a network failure keeps its number so that the server drops a duplicate (11.4).
* "before sending further requests, wait for ``ChatRequestSuccess`` **and**
  ``ChatEstablished``" (D-GS): visitor activity is held until an agent joins.
"""

from __future__ import annotations

__all__ = [
    "HttpRequest",
    "HttpResponse",
    "Lane",
    "LiveAgentSession",
    "Purpose",
    "SessionParams",
    "State",
    "map_chat_ended",
    "map_request_fail",
]

import enum
import re
from collections import deque
from typing import Any

import msgspec

from bridged import facts
from bridged.errors import LocalProtocolError, RemoteProtocolError
from bridged.liveagent import wire


class State(enum.Enum):
    IDLE = "idle"
    CREATING = "creating"
    INITIATING = "initiating"
    WAITING = "waiting"
    CHATTING = "chatting"
    ENDING = "ending"
    ENDED = "ended"
    ERROR = "error"


class Lane(enum.Enum):
    POLL = "poll"
    POST = "post"


class Purpose(enum.Enum):
    """What a request is for; the value is the resource name, for logs and metrics."""

    SESSION_ID = "SessionId"
    CHASITOR_INIT = "ChasitorInit"
    MESSAGES = "Messages"
    CHAT_MESSAGE = "ChatMessage"
    TYPING = "ChasitorTyping"
    NOT_TYPING = "ChasitorNotTyping"
    SNEAK_PEEK = "ChasitorSneakPeek"
    CHAT_END = "ChatEnd"
    DELETE_SESSION = "DeleteSession"


# Visitor activity: held until an agent has joined (D-GS), dropped when the chat ends.
_ACTIVITY = {Purpose.CHAT_MESSAGE, Purpose.TYPING, Purpose.NOT_TYPING, Purpose.SNEAK_PEEK}
_TYPING = {Purpose.TYPING, Purpose.NOT_TYPING, Purpose.SNEAK_PEEK}
_OUT_OF_SYNC = re.compile(r"Actual\s+(-?\d+)")
_EXPIRED = facts.Ended(reason="failed", detail="the Salesforce session expired")
# The 503 server switch (ReconnectSession) is not spoken yet: the chat fails clearly.
_MOVED = facts.Ended(reason="failed", detail="Salesforce moved the session to another server")


class HttpRequest(msgspec.Struct, frozen=True, kw_only=True):
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


class HttpResponse(msgspec.Struct, frozen=True):
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
    prechat_entities: list[dict[str, Any]] = []


class _Activity(msgspec.Struct, kw_only=True):
    purpose: Purpose
    body: bytes | None = None
    ref: str | None = None


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
    """ChatEnded: by the agent, by the visitor, no agent, or a failure with its reason."""
    mapped = _CHAT_ENDED.get(reason)
    if mapped is not None:
        return facts.Ended(reason=mapped)
    return facts.Ended(reason="failed", detail=reason or "unknown")


def _position(value: int | None) -> int | None:
    # A position of 0 means "this routing type has no positions" (IBM's observation).
    return value if value is not None and value > 0 else None


def _wait(value: float | None) -> int | None:
    # "-1 if unknown" (D-TYPES); only sent at API version 47 and later.
    return round(value) if value is not None and value >= 0 else None


class LiveAgentSession:
    """The visitor side of one Live Agent chat session (sans-I/O).

    Args:
        params: what to ask for.
    """

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
        self.sneak_peek = False
        self._activity: deque[_Activity] = deque()
        self._in_flight: dict[Lane, HttpRequest | None] = {Lane.POLL: None, Lane.POST: None}
        self._retry: HttpRequest | None = None
        self._end: facts.Ended | None = None
        self._ended = False
        self._facts: list[facts.Fact] = []
        self._notices: list[tuple[str, str]] = []
        self._unknown_types: set[str] = set()

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

    def in_flight(self, lane: Lane) -> HttpRequest | None:
        """The request outstanding on ``lane``, if any."""
        return self._in_flight[lane]

    # --- commands ---------------------------------------------------------------------

    def start(self) -> None:
        """Ask for a chat: create a Live Agent session, then request a chat on the button."""
        if self.state is not State.IDLE:
            raise LocalProtocolError(f"start() in state {self.state.value}")
        self.state = State.CREATING

    def send_text(self, message_id: str, text: str) -> None:
        """Queue a visitor message; it goes out once an agent has joined."""
        self._check_live("send_text")
        body = wire.encode_body({"text": text})
        self._activity.append(_Activity(purpose=Purpose.CHAT_MESSAGE, body=body, ref=message_id))

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
        if self.session_key is None and self._in_flight[Lane.POST] is None:
            # No Salesforce session exists (nor is one being created): nothing to end there.
            self._finish(self._end)
        elif self.state is not State.CREATING:
            self.state = State.ENDING

    def give_up(self, detail: str) -> None:
        """The shell cannot reach Salesforce any more: the chat fails with ``detail``."""
        self._finish(facts.Ended(reason="failed", detail=detail))

    # --- outputs ----------------------------------------------------------------------

    def next_request(self, lane: Lane) -> HttpRequest | None:
        """The next request of ``lane``, now in flight; ``None`` if the lane has nothing to do.

        Raises:
            LocalProtocolError: a request is already in flight on ``lane``.
        """
        if self._in_flight[lane] is not None:
            raise LocalProtocolError(f"a {lane.value} request is already in flight")
        if self.is_finished:
            return None
        request = self._next_poll() if lane is Lane.POLL else self._next_post()
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

    # --- answers ----------------------------------------------------------------------

    def receive_response(self, request: HttpRequest, response: HttpResponse) -> None:
        """Take Salesforce's answer to ``request``."""
        if not self._release(request):
            return
        try:
            if request.lane is Lane.POLL:
                self._receive_poll(response)
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
        if request.lane is Lane.POST:
            self._retry = request

    # --- internals: requests ----------------------------------------------------------

    def _headers(self, *, affinity: bool = True, key: bool = True, sequence: int | None = None,
                 body: bool = False) -> tuple[tuple[str, str], ...]:
        headers = [("X-LIVEAGENT-API-VERSION", self.params.api_version)]
        if affinity:
            headers.append(("X-LIVEAGENT-AFFINITY", self.affinity))
        if key and self.session_key is not None:
            headers.append(("X-LIVEAGENT-SESSION-KEY", self.session_key))
        if sequence is not None:
            headers.append(("X-LIVEAGENT-SEQUENCE", str(sequence)))
        headers.append(("Accept", "application/json"))
        if body:
            headers.append(("Content-Type", "application/json"))
        return tuple(headers)

    def _next_poll(self) -> HttpRequest | None:
        if self.state not in (State.WAITING, State.CHATTING, State.ENDING):
            return None
        if self.state is State.ENDING and self.sequence == 0:
            return None  # ChasitorInit never went through: nothing to poll
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
        if self.state is State.CREATING:
            # SessionId: "X-LIVEAGENT-AFFINITY: null" (the literal string) and no key yet.
            return HttpRequest(
                method="GET",
                path="System/SessionId",
                headers=self._headers(key=False),
                purpose=Purpose.SESSION_ID,
                lane=Lane.POST,
            )
        if self.state is State.INITIATING:
            return self._sequenced(Purpose.CHASITOR_INIT, "Chasitor/ChasitorInit",
                                   wire.encode_body(self._chasitor_init()))
        if self.state is State.ENDING:
            # Messages the visitor sent before ending still reach a joined agent first.
            while self.agent_joined and self._activity:
                head = self._activity.popleft()
                if head.purpose is Purpose.CHAT_MESSAGE:
                    return self._sequenced(head.purpose, "Chasitor/ChatMessage", head.body,
                                           head.ref)
            return self._end_request()
        if self.state is State.CHATTING and self._activity:
            head = self._activity.popleft()
            return self._sequenced(head.purpose, f"Chasitor/{head.purpose.value}", head.body,
                                   head.ref)
        return None

    def _end_request(self) -> HttpRequest:
        if self.sequence == 0:
            # ChasitorInit was never accepted: delete the bare session instead (D-GS).
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

    def _receive_poll(self, response: HttpResponse) -> None:
        status = response.status
        if status == 200:
            body = wire.decode_messages(response.body)
            if body.messages and body.offset is not None:
                self.offset = body.offset  # for ReconnectSession.offset
            self._process(body.messages)
            if body.sequence is not None:
                self.ack = body.sequence
        elif status == 204:
            pass  # "Poll again at once with the **same** ack."
        elif status == 403:
            self._finish(_EXPIRED)
        elif status == 409:
            self._finish(facts.Ended(
                reason="failed", detail="Salesforce ended the session (duplicate long poll)"))
        elif status == 503:
            self._finish(_MOVED)
        elif status >= 500:
            pass  # a server hiccup: poll again, with the same ack
        else:
            raise RemoteProtocolError(f"Messages answered HTTP {status}", status)

    def _receive_post(self, request: HttpRequest, response: HttpResponse) -> None:
        status = response.status
        purpose = request.purpose
        if purpose in (Purpose.CHAT_END, Purpose.DELETE_SESSION):
            # Whatever the answer (403 included: already over), the session is ended.
            assert self._end is not None
            self._finish(self._end)
            return
        if 200 <= status < 300:
            if request.sequence is not None:
                self.sequence = request.sequence
            self._accepted(request, response)
        elif status == 409 and request.sequence is not None:
            # "Out of sync Ack. Expected 498. Actual 4": Actual is the last sequence the
            # server accepted; the next one is Actual + 1 (IBM, LINE).
            match = _OUT_OF_SYNC.search(response.body.decode("utf-8", "replace"))
            if match is None or int(match[1]) == self.sequence:
                raise RemoteProtocolError(f"{purpose.value} answered HTTP 409", status)
            self.sequence = int(match[1])
            self._notices.append(("sequence_realigned", f"now {self.sequence}"))
            self._retry = self._sequenced(purpose, request.path, request.body, request.ref)
        elif status == 403:
            self._finish(_EXPIRED, request)
        elif status == 503:
            self._finish(_MOVED, request)
        elif status >= 500:
            # Includes D-GS's 500 for activity the server thinks came before the agent
            # joined; that answer does not use up the number (11.3), so the very same
            # request, number and all, is sent again after a pause.
            self._retry = request
        else:
            raise RemoteProtocolError(f"{purpose.value} answered HTTP {status}", status)

    def _accepted(self, request: HttpRequest, response: HttpResponse) -> None:
        purpose = request.purpose
        if purpose is Purpose.SESSION_ID:
            body = wire.decode_session_id(response.body)
            self.session_id, self.session_key = body.id, body.key
            self.affinity = body.affinity_token
            try:
                self.client_poll_timeout = float(body.client_poll_timeout)
            except ValueError:
                raise RemoteProtocolError(
                    f"SessionId clientPollTimeout is not a number: {body.client_poll_timeout!r}"
                ) from None
            # An end() that came while SessionId was in flight is served next.
            self.state = State.ENDING if self._end is not None else State.INITIATING
        elif purpose is Purpose.CHASITOR_INIT:
            if self._end is None:
                self.state = State.WAITING
        elif purpose is Purpose.CHAT_MESSAGE and request.ref is not None:
            self._facts.append(facts.Delivered(id=request.ref))

    def _process(self, messages: list[wire.ServerMessage]) -> None:
        # IBM saw AgentTyping and AgentNotTyping swapped within one batch: when both are
        # present, the agent is not typing.
        stopped = any(isinstance(m, wire.AgentNotTyping) for m in messages)
        for message in messages:
            if self.is_finished:
                return
            self._process_one(message, stopped)

    def _process_one(self, message: wire.ServerMessage, typing_stopped: bool) -> None:
        match message:
            case wire.ChatRequestSuccess():
                if message.connection_timeout:
                    self.connection_timeout = message.connection_timeout / 1000
                self._facts.append(facts.Queued(position=_position(message.queue_position),
                                                wait_s=_wait(message.estimated_wait_time)))
            case wire.QueueUpdate():
                if self.state is State.WAITING:
                    self._facts.append(facts.Queued(position=_position(message.position),
                                                    wait_s=_wait(message.estimated_wait_time)))
            case wire.ChatEstablished():
                self.agent = message.name
                self.agent_joined = True
                self.sneak_peek = message.sneak_peek_enabled
                if self.state is State.WAITING:
                    self.state = State.CHATTING
                self._facts.append(facts.AgentJoined(agent=message.name))
            case wire.ChatMessage():
                self._facts.append(facts.AgentMessage(agent=message.name or self.agent or "",
                                                      text=message.text))
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
                self._finish(map_request_fail(message.reason))
            case wire.ChatEnded():
                self._finish(map_chat_ended(message.reason))
            case wire.AgentDisconnect():
                # "the chat session stays alive on the server; another agent may pick it up"
                self._notices.append(("agent_disconnected", self.agent or ""))
            case wire.UnknownMessage():
                if message.type not in self._unknown_types:
                    self._unknown_types.add(message.type)
                    self._notices.append(("unknown_message_type", message.type))
            case _:
                self._notices.append(("message_ignored", type(message).__name__))

    def _check_live(self, what: str) -> None:
        if self.state is State.IDLE or self.is_finished or self._end is not None:
            raise LocalProtocolError(f"{what}() in state {self.state.value}")

    def _finish(self, ended: facts.Ended, lost: HttpRequest | None = None) -> None:
        """Enter ENDED once: report every visitor message not known delivered, then the end.

        Once OCP asked to end, its reason stands whatever Salesforce answers to the ChatEnd.
        """
        if self._ended:
            return
        self._ended = True
        self.state = State.ENDED
        unconfirmed = [lost, self._in_flight[Lane.POST], self._retry]
        refs = [r.ref for r in unconfirmed if r is not None and r.purpose is Purpose.CHAT_MESSAGE]
        refs += [item.ref for item in self._activity if item.ref is not None]
        for ref in refs:
            assert ref is not None
            self._facts.append(facts.Undelivered(
                id=ref, detail="the chat ended before Salesforce confirmed the message"))
        self._activity.clear()
        self._retry = None
        self._facts.append(self._end if self._end is not None else ended)

    def _poison(self, detail: str, lost: HttpRequest | None = None) -> None:
        self._finish(facts.Ended(reason="failed", detail=detail), lost)
        self.state = State.ERROR
        self._notices.append(("protocol_error", detail))
