"""The Live Agent backend: one actor per chat drives a sans-I/O session over a transport.

The actor is the shell around :class:`LiveAgentSession`. It owns what the session must
not: the clock, the tasks that wait for HTTP answers, retries with backoff, and the link to
the rest of bridged (the chat's inbox and :meth:`Chat.emit`).

One task runs the actor's loop; at most one more waits for the long poll and one for the
POST in flight (the session's two lanes). The loop sleeps on a single event that is set
by whatever can change its mind: a command in the inbox, an answer, an ack that makes
room, a backoff timer, a commit of the state store that something waits for (a poll held
back, a release; the commit that releases a prepared POST, or the poll that acknowledges
a batch, starts that request itself, with no turn between). Each turn it takes answers,
takes commands, reports facts, starts the requests the session wants and saves what
changed, once, all synchronously.

Durability, with a state store: nothing leaves that the store could not account for after
a ``kill -9``. A poll (which acknowledges the batch just processed) waits until the state
that holds that batch is committed, and so does every sequenced POST: it is taken from the
session, the snapshot that records it as unconfirmed (number and all) is saved, and only
once that is committed does it go. The next process then knows every number Salesforce may
have accepted, and sends an unconfirmed POST again with its own number (a duplicate is
dropped by Salesforce), whatever the durability mode, commit window or failing disk.

After a restart, a kept chat polls again once the poll the previous process left behind
cannot be held any more: the server holds an idle poll for its hold time, which the actor
observes on every idle poll (a 204), keeps per host with the chat's state, and waits that
long (plus a margin) from the kept time of the last poll; before any was observed it falls
back to 0.9 x ``clientPollTimeout``.
"""

from __future__ import annotations

__all__ = ["HOLD_MARGIN_S", "POLL_TIME_SLACK_S", "ChatActor", "LiveAgentBackend", "LiveAgentState",
           "Resume", "poll_held_for", "session_params"]

import asyncio
import functools
import logging
import math
import time
from typing import Any

import msgspec

from bridged._log import log_event
from bridged.chats import facts
from bridged.chats.chat import BACKEND_LISTS, Chat, ChatRecord, KeptLists, released
from bridged.chats.gate import Gate
from bridged.chats.policy import RetryPolicy, retry_delay
from bridged.chats.wakeup import Wakeup
from bridged.config.file import SalesforceConfig
from bridged.config.webchat import PrechatDetail, WebchatConfig, host_allowed, parse_endpoint
from bridged.errors import (
    BadWebchatConfig,
    HostNotAllowed,
    LocalProtocolError,
    TransportError,
)
from bridged.history.handover import Handover, HistoryHandover
from bridged.ocp import envelopes as env
from bridged.ops.metrics import Metrics
from bridged.salesforce.liveagent import wire
from bridged.salesforce.liveagent.protocol import (
    HttpRequest,
    HttpResponse,
    Lane,
    LiveAgentSession,
    SessionParams,
    SessionSnapshot,
    State,
)
from bridged.salesforce.liveagent.transport import Transport
from bridged.state.store import MAY_SEND_RECHECK_S, Drop, Item, Store

log = logging.getLogger("bridged.salesforce.liveagent")

_Result = HttpResponse | TransportError


class LiveAgentState(msgspec.Struct, frozen=True, kw_only=True, gc=False):
    """The changing Live Agent part of a kept chat: the session, and where it lives."""

    session: SessionSnapshot
    base_url: str
    # The longest hold of an idle poll observed (a 204), in seconds, by base URL.
    holds: dict[str, float] = {}


class Resume(msgspec.Struct, frozen=True, kw_only=True):
    """What a kept chat's actor goes on from after a restart."""

    state: LiveAgentState
    poll_sent_at: float  # wall clock, so that another process can read it
    session: LiveAgentSession  # restored from the kept snapshot and activity


# The session's kept lists (see bridged.chats.chat.KeptLists): its visitor activity, and the
# batch a keep-alive poll parked (one item, key 0).
_ACTIVITY_LIST = BACKEND_LISTS
_PARKED_LIST = BACKEND_LISTS + 1
# The kept time of a poll is at most this old when the poll goes (else it is kept anew).
POLL_TIME_SLACK_S = 1.0
# Added to an observed hold: the way to the server, and the hold's own jitter.
HOLD_MARGIN_S = 1.0


def poll_held_for(holds: dict[str, float], base_url: str, client_poll_timeout: float,
                  slack: float = 0.0) -> float:
    """How long after the time ``slack`` before it was sent a poll may still be held by the
    server at ``base_url``.

    The longest hold observed there, plus ``slack`` and :data:`HOLD_MARGIN_S`; before any
    was observed, 0.9 x ``clientPollTimeout`` (the server answers an idle poll within its
    hold time, which is below ``clientPollTimeout``).
    """
    hold = holds.get(base_url)
    if hold is None:
        return 0.9 * client_poll_timeout
    return hold + slack + HOLD_MARGIN_S


_LANES = (Lane.POST, Lane.POLL)  # the POST first: the poll lane saves (see _send)
_SWITCH_OUTCOMES = {"server_switch": "started", "server_switch_done": "completed",
                    "switch_server": "host_moved"}
_state_encoder = msgspec.msgpack.Encoder()
_state_decoder = msgspec.msgpack.Decoder(LiveAgentState)
_params_decoder = msgspec.msgpack.Decoder(SessionParams)


def live_agent_config(chat: Chat) -> WebchatConfig:
    """The chat's configuration, which is a Live Agent one (the daemon routes by type)."""
    if not isinstance(chat.webchat, WebchatConfig):
        raise LocalProtocolError(f"chat {chat.id} is not a Live Agent chat")
    return chat.webchat


def session_params(webchat: WebchatConfig, salesforce: SalesforceConfig,
                   extra_details: list[PrechatDetail] | None = None) -> SessionParams:
    """What a Live Agent session asks for, from a chat's webchat configuration."""
    return SessionParams(
        api_version=salesforce.api_version.removesuffix(".0"),
        organization_id=webchat.organization_id,
        deployment_id=webchat.deployment_id,
        button_id=webchat.button_id,
        language=webchat.language,
        visitor_name=webchat.displayed_username,
        user_agent=salesforce.user_agent,
        screen_resolution=salesforce.screen_resolution,
        prechat_details=[
            wire.CustomDetail(
                label=d.label,
                value=d.value,
                # Required by the docs' type table: an empty list when none is configured.
                transcript_fields=d.transcript_fields,
                display_to_agent=d.display_to_agent,
            )
            for d in [*webchat.prechat_details, *(extra_details or [])]
        ],
        prechat_entities=[
            wire.Entity(
                entity_name=e.entity_name,
                show_on_create=e.show_on_create,
                link_to_entity_name=e.link_to_entity_name,
                link_to_entity_field=e.link_to_entity_field,
                save_to_transcript=e.save_to_transcript,
                entity_fields_maps=[
                    wire.EntityFieldsMap(field_name=m.field_name, label=m.label,
                                         do_find=m.do_find, is_exact_match=m.is_exact_match,
                                         do_create=m.do_create)
                    for m in e.entity_fields_maps
                ],
            )
            for e in webchat.prechat_entities
        ],
        check_availability=webchat.check_availability,
    )


class ChatActor:
    """Drives one chat's Live Agent session until it is over.

    Args:
        chat: the chat it serves.
        session: the sans-I/O session.
        transport: how requests are made.
        request_timeout: the timeout of a POST (a poll's comes from the session).
        max_pending: how many visitor commands the session may hold unsent.
        retry: backoff and retry budget.
    """

    # Slots, not an instance dict: one per chat, and a class of more than 30 attributes
    # gets no key-sharing dict (about 1.6 KiB each here).
    __slots__ = ("__weakref__", "_abandoned", "_allowed_hosts", "_base_url", "_durable_gen",
                 "_end_passed", "_failed_at_commit", "_failing_since", "_failures",
                 "_give_up_reason", "_holds", "_kept_parked", "_last_poll_answer",
                 "_max_pending", "_metrics", "_not_before",
                 "_poll_gen", "_poll_touched", "_prepared", "_reported_state",
                 "_request_timeout", "_retry", "_save_gen", "_saved", "_sent_at", "_start_gate",
                 "_static_saved", "_store", "_tasks", "_timer", "_timer_due", "_touching",
                 "_transport", "_waiting", "_wake", "chat", "session")

    def __init__(self, chat: Chat, session: LiveAgentSession, transport: Transport, *,
                 request_timeout: float, max_pending: int, retry: RetryPolicy,
                 start_gate: Gate, allowed_hosts: list[str],
                 store: Store | None = None, metrics: Metrics | None = None) -> None:
        self.chat = chat
        self.session = session
        self._transport = transport
        self._base_url = chat.webchat.endpoint.base_url
        self._start_gate = start_gate
        self._allowed_hosts = allowed_hosts
        self._sent_at = {Lane.POLL: 0.0, Lane.POST: 0.0}
        self._abandoned: set[asyncio.Task[_Result]] = set()
        self._store = store
        self._metrics = metrics
        self._saved: tuple[tuple[Any, ...], tuple[Any, ...]] | None = None
        # Snapshots are numbered as they are handed to the store; the highest committed:
        self._save_gen = 0
        self._durable_gen = 0
        # The last that holds anything the session did (or the events it made): a poll
        # waits for its commit, not for one that only drops what OCP acknowledged.
        self._poll_gen = 0
        # A sequenced POST taken from the session, waiting for the commit of its snapshot.
        self._prepared: tuple[HttpRequest, int] | None = None
        self._holds: dict[str, float] = {}  # longest idle poll hold observed, by base URL
        self._kept_parked: bytes | None = None  # the parked batch as the store has it
        self._poll_touched: float | None = None  # the kept time of the next poll
        self._touching = False
        self._static_saved = False
        self._last_poll_answer = time.monotonic()
        chat.persistent = store is not None
        self._request_timeout = request_timeout
        self._max_pending = max_pending
        self._retry = retry
        self._wake = Wakeup()
        self._tasks: dict[Lane, asyncio.Task[_Result] | None] = {Lane.POLL: None, Lane.POST: None}
        self._not_before = {Lane.POLL: 0.0, Lane.POST: 0.0}
        self._failures = {Lane.POLL: 0, Lane.POST: 0}
        self._failing_since: dict[Lane, float | None] = {Lane.POLL: None, Lane.POST: None}
        # uvloop's call_at returns a Handle without when(): the due time is kept here.
        self._timer: asyncio.Handle | None = None
        self._timer_due = 0.0
        self._end_passed = False
        # A bug met while a commit started a request (see _durable): raised in the next turn.
        self._failed_at_commit: Exception | None = None
        self._give_up_reason: str | None = None  # set once a lane has failed too long
        # Suspended between two turns of the loop: news from outside wakes it then (during
        # a turn the news is its own; before or after the loop there is no one to wake).
        self._waiting = False
        self._reported_state: State | None = None  # the session's, as the chat shows it
        chat.waker = self._chat_woke

    async def run(self, handover: Handover | None = None,
                  resumed: Resume | None = None) -> None:
        """Run the chat until its session is over; the last fact reported is ``Ended``.

        Args:
            handover: the bot history for the agent (a new chat).
            resumed: the kept state of a chat that goes on after a restart of bridged.
        """
        if resumed is not None:
            self._base_url = resumed.state.base_url
            self._holds = dict(resumed.state.holds)
            self._static_saved = True
            # The previous process's last poll may still be held by Salesforce, and a second
            # poll would end the session (409): wait until the server must have answered it.
            # It went at most POLL_TIME_SLACK_S after its kept time.
            held_until = resumed.poll_sent_at + poll_held_for(
                self._holds, self._base_url, self.session.client_poll_timeout,
                POLL_TIME_SLACK_S)
            wait = max(0.0, held_until - time.time())
            self._not_before[Lane.POLL] = time.monotonic() + wait
            log_event(log, logging.INFO, "chat_resumed", chat=self.chat.id,
                      state=self.session.state.value, poll_in_s=round(wait, 1))
        else:
            self.session.start()
            if handover is not None and handover.messages:
                self.session.send_history(handover.messages)
            log_event(log, logging.INFO, "chat_requested", chat=self.chat.id,
                      host=self.chat.webchat.endpoint.host,
                      button=live_agent_config(self.chat).button_id)
        crashed = False
        try:
            while True:
                self._wake.clear()
                self._collect()
                self._release_parked()
                self._move_host()
                self._take_commands()
                self._report()
                if self.session.is_finished:
                    self._save()
                    return
                if self.chat.release_wanted:
                    self._save()
                    if self._at_safe_point():
                        released(self.chat)
                        return
                # What changed is saved once, after what may go has gone (_send saves
                # first whatever a request must wait for); nothing goes before this turn
                # ends, so the order within it changes nothing of what the store holds.
                if not self._send():
                    self._save()
                self._waiting = True
                await self._wake.wait()
                self._waiting = False
                if self._failed_at_commit is not None:
                    raise self._failed_at_commit
        except Exception:
            crashed = True  # a bug: the supervisor ends the chat toward OCP
            raise
        finally:
            self._waiting = False
            self._start_gate.leave(self.chat.id)
            await self._cancel_requests()
            if crashed:
                await self._farewell()

    def _chat_woke(self) -> None:
        """The chat has news (a command, an ack that makes room, an end, a new event).

        During a turn the news is the actor's own (the facts it reports), and the turn
        itself saves it: no other turn is needed.
        """
        if self._waiting:
            self._wake.set()

    # --- one turn -----------------------------------------------------------------------

    def _collect(self) -> None:
        """Hand the answers that came to the session."""
        now = 0.0
        for lane in _LANES:
            task = self._tasks[lane]
            if task is None or not task.done():
                continue
            now = now or time.monotonic()
            self._tasks[lane] = None
            request = self.session.in_flight(lane)
            assert request is not None
            result = task.result()
            if lane is Lane.POLL:
                self._last_poll_answer = now
                if isinstance(result, HttpResponse) and result.status == 204:
                    self._observe_hold(now - self._sent_at[lane])
            if self._metrics is not None:
                status = "error" if isinstance(result, TransportError) else str(result.status)
                self._metrics.salesforce_answered(LiveAgentBackend.name,
                                                  request.purpose.value, status,
                                                  now - self._sent_at[lane])
            # Every 5xx backs the lane off, the 503 of a server switch included: the
            # requests that follow it (ReconnectSession) meet the same server trouble.
            if isinstance(result, TransportError) or result.status >= 500:
                self._failed(lane, request, result, now)
            else:
                self._failures[lane] = 0
                self._failing_since[lane] = None
            if isinstance(result, TransportError):
                self.session.receive_failure(request)
            else:
                self.session.receive_response(request, result)
            if self.session.take_unsettled_poll():
                # That poll may still be held by Salesforce, and a second poll while one is
                # outstanding ends the session (409). The server answers a held poll within
                # its hold time, which is below clientPollTimeout: wait until then, but not
                # so long that the session, which lives clientPollTimeout past that answer,
                # runs out.
                held_until = self._sent_at[Lane.POLL] + poll_held_for(
                    self._holds, self._base_url, self.session.client_poll_timeout)
                self._not_before[Lane.POLL] = max(self._not_before[Lane.POLL], held_until)
            if self._give_up_reason is not None:
                self.session.give_up(self._give_up_reason)
            self._cancel_abandoned()
        if not self.session.creating:
            self._start_gate.leave(self.chat.id)

    def _at_safe_point(self) -> bool:
        """Whether another node may take the chat and poll at once: no poll and no POST in
        flight (nor one Salesforce may still hold: an unsettled or abandoned poll, or the
        previous holder's, waited out), and everything the session did committed."""
        return (self._tasks[Lane.POLL] is None and self._tasks[Lane.POST] is None
                and not self._abandoned and not self._touching
                and time.monotonic() >= self._not_before[Lane.POLL]
                and self._save_gen == self._durable_gen)

    def _release_parked(self) -> None:
        """Room again: the batch a keep-alive poll brought is processed now (see protocol)."""
        if self.session.parked and self.chat.has_room():
            self.session.release_parked()

    def _cancel_abandoned(self) -> None:
        """Cancel the requests the session gave up on (the held poll, at a server switch)."""
        for lane in self.session.abandoned_lanes():
            task = self._tasks[lane]
            self._tasks[lane] = None
            if task is not None:
                task.cancel()
                self._abandoned.add(task)
                task.add_done_callback(self._abandoned.discard)

    def _move_host(self) -> None:
        """``SwitchServer``: follow Salesforce to its new host, if the allowlist allows it."""
        url = self.session.take_switch_url()
        if url is None:
            return
        try:
            endpoint = parse_endpoint(url)
            allowed = host_allowed(endpoint, self._allowed_hosts)
        except (BadWebchatConfig, HostNotAllowed):
            allowed = False
        if not allowed:
            self.session.give_up(f"Salesforce moved the chat to {url}, which"
                                 " salesforce.allowed_hosts does not allow")
            return
        log_event(log, logging.INFO, "salesforce_host_moved", chat=self.chat.id,
                  host=endpoint.host)
        self._base_url = endpoint.base_url

    def _failed(self, lane: Lane, request: HttpRequest, result: _Result, now: float) -> None:
        """Count a failure of ``lane``; back off, or give up once the session cannot live."""
        detail = str(result) if isinstance(result, TransportError) else f"HTTP {result.status}"
        self._failures[lane] += 1
        since = self._failing_since[lane]
        if since is None:
            since = self._failing_since[lane] = now
        # A session outlives a silent client for connectionTimeout (ChatRequestSuccess);
        # before that is known, the policy's budget stands in.
        budget = self.session.connection_timeout or self._retry.budget_s
        log_event(log, logging.WARNING, "salesforce_request_failed", chat=self.chat.id,
                  resource=request.purpose.value, attempt=self._failures[lane], detail=detail)
        if now - since >= budget:
            self._give_up_reason = (
                f"no answer from Salesforce for {budget:g} s ({request.purpose.value}: {detail})"
            )
            return
        self._not_before[lane] = now + retry_delay(self._retry, self._failures[lane])

    def _observe_hold(self, seconds: float) -> None:
        """An idle poll was answered (204) after ``seconds``: the server's hold, at most."""
        seconds = math.ceil(seconds * 10) / 10  # a tenth of a second: fewer saves
        if seconds > self._holds.get(self._base_url, 0.0):
            self._holds[self._base_url] = seconds

    def _take_commands(self) -> None:
        """Move the visitor's commands from the inbox into the session, within its bound."""
        session, inbox = self.session, self.chat.inbox
        if session.is_finished:
            return
        ending = self.chat.end_requested is not None
        # While ending, take everything: what was sent before ``end`` goes out before it.
        while inbox and (ending or session.pending_activity < self._max_pending):
            command = inbox.get_nowait()
            if isinstance(command, env.Message):
                session.send_text(command.id, command.text)
            else:
                session.set_typing(command.active, command.text)
        if ending and not self._end_passed:
            self._end_passed = True
            assert self.chat.end_requested is not None
            session.end(self.chat.end_requested.reason, self.chat.end_requested.detail)

    def _report(self) -> None:
        """Pass the session's facts to the chat, and its notices to the log."""
        for event, detail in self.session.notices_received():
            log_event(log, logging.INFO, event, chat=self.chat.id, detail=detail)
            if self._metrics is not None and event in _SWITCH_OUTCOMES:
                self._metrics.server_switches.inc(_SWITCH_OUTCOMES[event])
        for fact in self.session.facts_received():
            if isinstance(fact, facts.Ended):
                self._refuse_inbox()
            self.chat.emit(fact)
        state = self.session.state
        if state is not self._reported_state:  # (an enum's value is a Python property)
            self._reported_state = state
            self.chat.state = state.value

    def _refuse_inbox(self) -> None:
        """Messages still in the inbox when the chat ends will never be sent."""
        for command in self.chat.inbox.drain():
            if isinstance(command, env.Message):
                self.chat.emit(facts.Undelivered(
                    id=command.id, detail="the chat ended before the message was sent"))

    def _send(self) -> bool:
        """Start the requests the session wants, lane by lane, when the lane may go.

        Returns whether it saved the chat after the last change of what is kept (the poll
        lane saves before it looks whether the poll may go; what follows keeps nothing).
        """
        tasks = self._tasks
        if tasks[Lane.POST] is not None and tasks[Lane.POLL] is not None:
            return False  # both lanes busy: an answer wakes the actor
        now = time.monotonic()
        if self._store is not None and not self._store.may_send():
            # Several nodes: this node's lease is not surely its own (the store is out of
            # reach), so it sends nothing; it goes on once renewed, or the chat is dropped.
            self._wake_at(now + MAY_SEND_RECHECK_S)
            return False
        saved = False
        for lane in _LANES:
            if self._tasks[lane] is not None:
                continue
            if lane is Lane.POST and self._prepared is not None:
                prepared, generation = self._prepared
                if generation <= self._durable_gen:  # its snapshot is committed: it goes
                    self._prepared = None
                    self._start(prepared, now)
                continue
            if now < self._not_before[lane]:
                self._wake_at(self._not_before[lane])
                continue
            # Letting go of the chat: no new poll; a POST only beside the poll still out
            # (it goes on until that poll returns, then the chat stops at a safe point).
            if self.chat.release_wanted and (lane is Lane.POLL
                                             or self._tasks[Lane.POLL] is None):
                continue
            # No poll acknowledges a batch before the events it made are durable: the
            # state that holds them is saved now, and the poll waits for its commit.
            if lane is Lane.POLL:
                self._save()
                saved = True
                if self._poll_gen > self._durable_gen:
                    continue
            # A full outbox stops acknowledging: Salesforce keeps the agent's messages, and
            # a poll now and then (whose batch the session parks) keeps the session alive.
            keepalive = False
            if lane is Lane.POLL and not self.chat.has_room():
                due = self._last_poll_answer + 0.5 * self.session.client_poll_timeout
                if now < due:
                    self._wake_at(due)
                    continue
                keepalive = True
            # The time of a poll is kept before the poll goes: after a crash, the next process
            # must know how long the server may still hold it (see run()).
            if lane is Lane.POLL and self._poll_touched is not None and (
                    time.time() - self._poll_touched > POLL_TIME_SLACK_S):
                self._poll_touched = None  # kept too long ago: keep a fresh time
            if lane is Lane.POLL and self._store is not None and self._poll_touched is None:
                if not self._touching:
                    self._touching = True
                    touched = time.time()
                    self._store.touch(self.chat.id, touched,
                                      functools.partial(self._touch_durable, touched))
                continue
            # A burst of new chats is admitted to Salesforce a few at a time.
            if lane is Lane.POST and self.session.creating and not self._start_gate.try_enter(
                    self.chat.id, self._wake.set):
                continue
            request = self.session.next_request(lane, keepalive=keepalive)
            if request is None:
                continue
            if request.sequence is not None and self._store is not None:
                # A sequenced POST goes only once the state that records it is committed:
                # otherwise a kill -9 would leave the next process a number behind what
                # Salesforce accepted (a new message dropped as a duplicate, or a message
                # sent again under a new number, twice at the agent).
                self._save(force=True)
                saved = True  # the poll lane, if it looks, saves again
                self._prepared = (request, self._save_gen)
                continue
            self._start(request, now)
        return saved

    def _start(self, request: HttpRequest, now: float) -> None:
        """Put ``request`` on the wire, in a task of its own."""
        lane = request.lane
        timeout = self.session.poll_timeout if lane is Lane.POLL else self._request_timeout
        task = asyncio.create_task(self._exchange(request, timeout),
                                   name=f"chat:{self.chat.id}:{lane.value}")
        task.add_done_callback(self._on_answer)
        self._tasks[lane] = task
        self._sent_at[lane] = now
        if lane is Lane.POLL:
            self._poll_touched = None

    def _on_answer(self, _task: asyncio.Task[_Result]) -> None:
        self._wake.set()

    # --- keeping the chat -------------------------------------------------------------------

    def _fingerprint(self) -> tuple[tuple[Any, ...], tuple[Any, ...]]:
        """What, if changed, must reach the store (cheap to compute every turn): what the
        session did and the events it made, then what only OCP changed (its acks, its
        commands not yet taken)."""
        s, chat = self.session, self.chat
        return ((s.state, s.ack, s.sequence, s.affinity, s.switch_phase, s.activity_version,
                 s.parked_batch, id(s.in_flight(Lane.POST)), chat.next_seq,
                 chat.end_requested is not None, self._base_url, len(self._holds),
                 self._holds.get(self._base_url)),
                (chat.held[0].seq if chat.held else 0, len(chat.inbox)))

    def _save(self, force: bool = False) -> None:
        """Hand the chat's snapshot to the store when it changed; events go out once durable.

        What the chat and the session hold in numbers (events, inbox, visitor activity) is
        kept item by item: only what was added or went since the last save is written.
        """
        if self._store is None:
            return
        fingerprint = self._fingerprint()
        saved = self._saved
        if fingerprint == saved and not force:
            return
        self._saved = fingerprint
        # The next poll waits for this save unless all it holds is OCP's (see _send).
        polled = force or saved is None or fingerprint[0] != saved[0]
        snapshot = self.session.snapshot()
        parked = snapshot.parked
        if parked is not None:  # kept as an item of its own, written when it changes
            snapshot = msgspec.structs.replace(snapshot, parked=None)
        state = LiveAgentState(session=snapshot, base_url=self._base_url, holds=self._holds)
        record = ChatRecord(chat=self.chat.snapshot(),
                            state=msgspec.Raw(_state_encoder.encode(state)))
        static = None
        if not self._static_saved:
            # The chat's unchanging part (and the session's parameters) go once.
            self._static_saved = True
            params = msgspec.Raw(_state_encoder.encode(self.session.params))
            static = self.chat.static(LiveAgentBackend.name, params).encode()
        items: list[Item] = []
        drops: list[Drop] = []
        self.chat.kept_changes(items, drops)
        added, gone = self.session.take_activity_changes()
        if gone:
            drops.extend((_ACTIVITY_LIST, first, last) for first, last in gone)
        if added:
            items.extend((_ACTIVITY_LIST, key, data) for key, data in added)
        if parked is not self._kept_parked:
            self._kept_parked = parked
            if parked is None:
                drops.append((_PARKED_LIST, 0, 0))
            else:
                items.append((_PARKED_LIST, 0, parked))
        self._save_gen += 1
        if polled:
            self._poll_gen = self._save_gen
        # The next poll usually follows this save: keep its time in the same commit. Not
        # while a poll is out: the kept time must stay that poll's (see run()).
        touched = time.time() if self._tasks[Lane.POLL] is None else None
        self._store.save(self.chat.id, record.encode(),
                         functools.partial(self._durable, self._save_gen,
                                           self.chat.next_seq - 1, touched),
                         static=static, delivered=self.chat.take_new_delivered(),
                         items=items, drops=drops)
        if touched is not None:
            self._store.touch(self.chat.id, touched)

    def _touch_durable(self, touched: float) -> None:
        self._touching = False
        self._poll_touched = max(self._poll_touched or 0.0, touched)
        self._wake.set()

    def _durable(self, generation: int, upto: int, touched: float | None) -> None:
        self._durable_gen = max(self._durable_gen, generation)
        if touched is not None:
            self._poll_touched = max(self._poll_touched or 0.0, touched)
        self.chat.mark_durable(upto)  # the events go to OCP from here, not from the actor
        prepared = self._prepared
        if (self._waiting and prepared is not None and prepared[1] <= self._durable_gen
                and self._store is not None and self._store.may_send()):
            # The POST this commit records goes now, as the next turn's _send would send it
            # (that turn would have nothing else to do).
            self._prepared = None
            self._start(prepared[0], time.monotonic())
            prepared = None
        if self._waiting:
            try:
                if self._poll_at_commit():
                    return
            except Exception as exc:
                # A bug: it ends this chat in its own turn (the supervisor's way), not the
                # store's loop over the callbacks of every chat in the commit.
                self._failed_at_commit = exc
                self._wake.set()
                return
        # A turn only if something waits for this commit: the POST it records, a poll held
        # back until it (no poll out), the chat's release at a safe point.
        if (not self._waiting or self._tasks[Lane.POLL] is None or self.chat.release_wanted
                or (prepared is not None and prepared[1] <= self._durable_gen)):
            self._wake.set()

    def _poll_at_commit(self) -> bool:
        """The commit a poll waited for came while the actor sleeps: start that poll now,
        as the next turn's :meth:`_send` would (a turn that would do nothing else).

        Only the usual case, where the poll needs nothing but the commit (room for its
        events, a fresh kept poll time, no backoff, no release asked) and the turn would
        save nothing the poll waits for: what only OCP changed since (its acks) is saved
        with the next change, as a turn would save it without waiting. Anything else is left
        to a turn. Returns whether the poll went and no turn is needed.
        """
        saved = self._saved
        if (self._tasks[Lane.POLL] is not None or self.session.in_flight(Lane.POLL) is not None
                or self._prepared is not None
                or self._poll_gen > self._durable_gen or self.chat.release_wanted
                or not self.chat.has_room() or self._store is None or saved is None
                or not self._store.may_send() or self._fingerprint()[0] != saved[0]):
            return False
        now = time.monotonic()
        touched = self._poll_touched
        if (now < self._not_before[Lane.POLL] or touched is None
                or time.time() - touched > POLL_TIME_SLACK_S):
            return False
        request = self.session.next_request(Lane.POLL)
        if request is None:
            return False
        self._start(request, now)
        return True

    def _wake_at(self, when: float) -> None:
        if self._timer is not None and self._timer_due <= when:
            return
        if self._timer is not None:
            self._timer.cancel()
        self._timer_due = when
        self._timer = asyncio.get_running_loop().call_later(
            max(0.0, when - time.monotonic()), self._timer_fired)

    def _timer_fired(self) -> None:
        self._timer = None
        self._wake.set()

    async def _exchange(self, request: HttpRequest, timeout: float) -> _Result:
        try:
            return await self._transport.exchange(self._base_url, request, timeout)
        except TransportError as exc:
            return exc

    async def _farewell(self) -> None:
        """After a crash: end the chat at Salesforce too, so that no agent keeps a ghost."""
        if self._store is not None and not self._store.may_send():
            return  # another node may hold the chat now: it ends the chat
        answer: HttpResponse | None = None
        for _ in range(2):  # a 409 "Out of sync" gets one more try, numbered as asked
            try:
                request = self.session.farewell(answer)
                if request is None:
                    return
                answer = await self._transport.exchange(self._base_url, request,
                                                        self._request_timeout)
            except Exception as exc:  # whatever broke the actor may break this too
                log_event(log, logging.WARNING, "farewell_failed", chat=self.chat.id,
                          detail=f"{type(exc).__name__}: {exc}")
                return
            log_event(log, logging.INFO, "farewell_sent", chat=self.chat.id,
                      resource=request.purpose.value, status=answer.status)

    async def _cancel_requests(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        pending = [t for t in self._tasks.values() if t is not None and not t.done()]
        pending += [t for t in self._abandoned if not t.done()]
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.gather(*pending, return_exceptions=True)
        self.chat.waker = None


class LiveAgentBackend:
    """The legacy Live Agent (Chat REST API) backend.

    Args:
        transport: shared by every chat.
        salesforce: the ``[salesforce]`` section.
        max_pending: how many visitor commands one chat may hold unsent.
        retry: backoff and retry budget for requests that get no answer.
    """

    name = "salesforce"

    def __init__(self, transport: Transport, salesforce: SalesforceConfig, *,
                 max_pending: int, retry: RetryPolicy | None = None,
                 history: HistoryHandover | None = None,
                 store: Store | None = None, metrics: Metrics | None = None) -> None:
        self._transport = transport
        self._history = history
        self._store = store
        self._metrics = metrics
        self._salesforce = salesforce
        self._max_pending = max_pending
        self._retry = retry or RetryPolicy()
        self.start_gate = Gate(salesforce.max_concurrent_starts)

    def reconfigure(self, salesforce: SalesforceConfig) -> None:
        """Use new ``[salesforce]`` settings for chats started from now on (SIGHUP)."""
        self._salesforce = salesforce

    @staticmethod
    def resume_from(backend_static: bytes, state: bytes, poll_sent_at: float,
                    lists: KeptLists | None = None) -> Resume:
        """Decode a kept chat's Live Agent parts.

        Raises:
            msgspec.DecodeError: a damaged record.
        """
        kept = _state_decoder.decode(state)
        lists = lists or {}
        snapshot = kept.session
        parked = lists.get(_PARKED_LIST)
        if parked:
            snapshot = msgspec.structs.replace(snapshot, parked=parked[0][1])
        session = LiveAgentSession.restore(_params_decoder.decode(backend_static), snapshot,
                                           lists.get(_ACTIVITY_LIST, []))
        return Resume(state=kept, poll_sent_at=poll_sent_at, session=session)

    async def run_chat(self, chat: Chat, resume: Resume | None = None) -> None:
        """Serve ``chat`` until it ends; the last fact it emits is ``Ended``.

        Args:
            chat: the chat.
            resume: its kept Live Agent state, when it goes on after a restart.
        """
        resumed = resume
        handover = Handover()
        if resumed is not None:
            session = resumed.session
        else:
            # "before asking for an agent" (PROTOCOL.md 4): the history rides on
            # ChasitorInit.
            if self._history is not None:
                chat.state = "fetching_history"
                handover = await self._history.prepare(chat)
            extra = [handover.prechat] if handover.prechat is not None else []
            session = LiveAgentSession(session_params(live_agent_config(chat), self._salesforce,
                                                      extra))
        actor = ChatActor(chat, session, self._transport,
                          request_timeout=self._salesforce.request_timeout_s,
                          max_pending=self._max_pending, retry=self._retry,
                          start_gate=self.start_gate,
                          allowed_hosts=self._salesforce.allowed_hosts, store=self._store,
                          metrics=self._metrics)
        await actor.run(handover, resumed)

    async def aclose(self) -> None:
        if self._history is not None:
            await self._history.aclose()
        await self._transport.aclose()
