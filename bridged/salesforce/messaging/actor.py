"""The Enhanced Chat backend: one actor per chat drives a sans-I/O session over HTTP.

The actor is the shell around :class:`~bridged.salesforce.messaging.protocol.MessagingSession`
("How a shell drives it", in that module's docstring). It owns what the session must not: the
clock, the tasks that wait for HTTP answers, the event stream's reader, backoff timers, and the
link to the rest of bridged (the chat's inbox, :meth:`Chat.emit`, the state store).

Tasks: one runs the actor's loop; one reads the event stream while the session wants it (never
two at once: a new one first waits for the old one to be gone); one per REST request on the
wire. The loop sleeps on a single event set by whatever can change its mind (a command, an
answer, events of the stream, a commit that a request or a release waits for, a timer); each
turn it hands everything that came to the session, synchronously, then reports, saves and
sends. The stream's reader parses the bytes it reads (the parser is the actor's, fed by one
reader at a time) and wakes the actor only for events: Salesforce's keep-alive, a ping every
15 s of silence in every conversation, costs no turn.

Durability. Every turn that changed the session saves its snapshot (and the chat's) to the
state store before anything the turn produced goes out: a request made in turn *n* waits
until the save of turn *n* is committed. So no visitor message reaches Salesforce before the
state that records it as sent (its id, its attempt) is durable, nor a create before the
conversation id and the token are: after ``kill -9`` at any instant the next process knows
every conversation and every message that may have reached Salesforce, and reconciles
instead of sending twice. Events reach OCP only once durable too (:meth:`Chat.mark_durable`).
A turn whose stream events only moved the last event id (pings with an id, acknowledgements,
the types ignored, entries seen already, the visitor's own message coming back after its
send was answered: nothing for OCP, nothing to send) saves nothing: the next save carries the
id, and a release saves it first (the next holder reads on from the id committed). After
``kill -9`` the stream reopens from an id at most those few events older; replayed, they
change nothing again, and entries are de-duplicated by the ids kept, as after any reopen.

Limits. The token request of a new hand-over first waits its turn in the
:class:`~bridged.salesforce.messaging.tokenqueue.TokenQueue` of its org (200 a minute); the
session paces visitor messages itself (22 a minute per conversation), and the actor takes
commands from the inbox only while the session holds fewer than ``max_pending``, so OCP
gets ``busy`` only when the inbox is full.
"""

from __future__ import annotations

__all__ = ["MessagingActor", "MessagingBackend", "MessagingResume", "messaging_params"]

import asyncio
import functools
import logging
import time
from collections.abc import Coroutine, Iterable
from typing import Any

import msgspec
from prometheus_client.core import GaugeMetricFamily, Metric

from bridged._lists import appended
from bridged._log import log_event
from bridged.chats import facts
from bridged.chats.chat import Chat, ChatRecord, KeptLists, released
from bridged.chats.fartimers import FarTimer, FarTimers
from bridged.chats.policy import RetryPolicy, retry_delay
from bridged.chats.wakeup import Wakeup
from bridged.config.file import SalesforceConfig
from bridged.config.webchat import MessagingConfig
from bridged.errors import (
    LocalProtocolError,
    RemoteProtocolError,
    TransportError,
    TransportTimeout,
)
from bridged.history.handover import Handover, HistoryHandover
from bridged.ocp import envelopes as env
from bridged.ops.metrics import Metrics
from bridged.salesforce.messaging.protocol import (
    STREAM_RETRY,
    FailureKind,
    HttpRequest,
    MessagingParams,
    MessagingSession,
    MessagingSnapshot,
    Purpose,
    State,
    only_keepalives,
)
from bridged.salesforce.messaging.sse import SseParser
from bridged.salesforce.messaging.tokenqueue import TokenQueue
from bridged.salesforce.messaging.transport import Answer, MessagingTransport
from bridged.state.store import MAY_SEND_RECHECK_S, Drop, Item, Store

log = logging.getLogger("bridged.salesforce.messaging")

BACKEND = "salesforce_messaging"
# Stream inputs not yet handed to the session; past this the reader waits.
_STREAM_BACKLOG = 32
_TOKEN_QUEUED = "token_queued"
# Wake-ups at least this far off share one loop timer (FarTimers): about 0.4 KB a chat less.
FAR_TIMER_S = 30.0

_Result = Answer | TransportError
_snapshot_encoder = msgspec.msgpack.Encoder()
_snapshot_decoder = msgspec.msgpack.Decoder(MessagingSnapshot)
_params_decoder = msgspec.msgpack.Decoder(MessagingParams)


class MessagingResume(msgspec.Struct, frozen=True, kw_only=True):
    """What a kept Enhanced Chat chat goes on from after a restart."""

    params: MessagingParams
    snapshot: MessagingSnapshot


def messaging_config(chat: Chat) -> MessagingConfig:
    """The chat's configuration, which is an Enhanced Chat one (the daemon routes by type)."""
    if not isinstance(chat.webchat, MessagingConfig):
        raise LocalProtocolError(f"chat {chat.id} is not an Enhanced Chat chat")
    return chat.webchat


def messaging_params(webchat: MessagingConfig, salesforce: SalesforceConfig,
                     history_summary: str | None = None) -> MessagingParams:
    """What an Enhanced Chat session asks for, from a chat's webchat configuration.

    Args:
        webchat: the chat's effective configuration.
        salesforce: the ``[salesforce]`` section (the limits).
        history_summary: the bot history for ``history_routing_attribute``, if any.
    """
    attributes = dict(webchat.routing_attributes)
    hidden = webchat.history_routing_attribute
    if hidden and history_summary:
        # "merge it into the routing attributes at create": the profile's value, if it
        # names the same field, gives way to the history.
        attributes[hidden] = history_summary
    return MessagingParams(
        organization_id=webchat.organization_id,
        es_developer_name=webchat.es_developer_name,
        language=webchat.language,
        routing_attributes=attributes,
        agent_wait_timeout_s=webchat.agent_wait_timeout_s,
        history_attribute=hidden,
        messages_per_window=salesforce.messaging_message_limit,
        pacing_window_s=salesforce.messaging_limit_window_s,
    )


class _Outgoing:
    """A REST request the session wants sent, waiting for its commit, backoff or turn."""

    __slots__ = ("gen", "not_before", "request")

    def __init__(self, request: HttpRequest, gen: int, not_before: float) -> None:
        self.request = request
        self.gen = gen
        self.not_before = not_before


class MessagingActor:
    """Drives one chat's Enhanced Chat session until it is over.

    Args:
        chat: the chat it serves.
        session: the sans-I/O session (new, or restored).
        transport: how requests are made.
        salesforce: the ``[salesforce]`` section (timeouts).
        max_pending: how many visitor messages the session may hold unsent.
        retry: backoff of REST requests sent again.
        tokens: the org-wide access-token queue.
    """

    # Slots, not an instance dict: one per chat, and a class of more than 30 attributes
    # gets no key-sharing dict (about 1.6 KiB each here).
    __slots__ = ("__weakref__", "_answers", "_base_url", "_dirty", "_durable_gen", "_end_passed",
                 "_event_id_unsaved", "_far_timers", "_max_pending", "_metrics", "_outgoing",
                 "_paced", "_parser", "_registry", "_requests", "_retry", "_salesforce",
                 "_save_gen", "_saved_chat", "_static_saved", "_store", "_stream_items",
                 "_stream_next", "_stream_number", "_stream_room", "_stream_sent_at",
                 "_stream_task", "_streams_opened", "_timer", "_timer_due", "_tokens",
                 "_transport", "_waiting", "_wake", "chat", "session", "stream_open")

    def __init__(self, chat: Chat, session: MessagingSession, transport: MessagingTransport,
                 *, salesforce: SalesforceConfig, max_pending: int, retry: RetryPolicy,
                 tokens: TokenQueue, store: Store | None = None,
                 metrics: Metrics | None = None, far_timers: FarTimers | None = None,
                 registry: dict[str, MessagingActor] | None = None) -> None:
        self.chat = chat
        self.session = session
        self._transport = transport
        self._base_url = messaging_config(chat).scrt_url
        self._salesforce = salesforce
        self._max_pending = max_pending
        self._retry = retry
        self._tokens = tokens
        self._store = store
        self._metrics = metrics
        chat.persistent = store is not None
        self._wake = Wakeup()
        # Suspended between two turns of the loop: news from the chat wakes it then (during
        # a turn the news is its own, the facts it emits, and the turn saves them).
        self._waiting = False
        chat.waker = self._chat_woke
        # REST: waiting to go, and answered (by the tasks' callbacks).
        # Lists, not deques: a chat's queues are short, and an empty deque takes 760 bytes.
        # () while empty (bridged._lists): a chat holds them empty between two messages.
        self._outgoing: list[_Outgoing] | tuple[()] = ()
        self._requests: dict[asyncio.Task[_Result], tuple[HttpRequest, float]] = {}
        self._answers: list[tuple[HttpRequest, _Result, float]] | tuple[()] = ()
        # The event stream: its reader, what it read, and the request to open next.
        self._parser = SseParser(last_event_id=session.last_event_id)
        self._stream_task: asyncio.Task[None] | None = None
        self._stream_number = 0
        self._stream_items: list[tuple[int, str, Any]] | tuple[()] = ()
        self._stream_room = Wakeup()
        self._stream_room.set()
        self._stream_next: tuple[HttpRequest, float] | None = None
        self._stream_sent_at = 0.0
        self.stream_open = False
        self._streams_opened = 0
        # Saving: a generation per save; requests wait for theirs to be committed.
        self._dirty = True
        self._event_id_unsaved = False
        self._saved_chat: tuple[Any, ...] | None = None
        self._save_gen = 0
        self._durable_gen = 0
        self._static_saved = False
        self._end_passed = False
        self._paced = False
        # uvloop's call_later returns a Handle without when(): the due time is kept here.
        self._timer: asyncio.Handle | FarTimer | None = None
        self._timer_due = 0.0
        self._far_timers = far_timers if far_timers is not None else FarTimers()
        self._registry = registry  # the backend's live actors, while run() runs

    @property
    def paced_messages(self) -> int:
        """Messages held now because the conversation's per-minute limit is reached."""
        return self.session.pending_messages if self.session.next_send_at is not None else 0

    async def run(self, handover: Handover | None = None, resumed: bool = False) -> None:
        """Run the chat until its session is over; the last fact reported is ``Ended``.

        Args:
            handover: the bot history for the agent (a new chat).
            resumed: the session was restored from the state store (a restart of bridged).
        """
        now = time.time()
        if resumed:
            self._static_saved = True
            self._streams_opened = 1  # the next open is a reconnection
            log_event(log, logging.INFO, "chat_resumed", chat=self.chat.id,
                      state=self.session.state.value,
                      conversation=self.session.conversation_id)
        else:
            self.session.start(now=now)
            if handover is not None and handover.messages:
                self.session.send_history(handover.messages, now=now)
            log_event(log, logging.INFO, "chat_requested", chat=self.chat.id,
                      host=self.chat.webchat.endpoint.host,
                      deployment=self.session.params.es_developer_name,
                      conversation=self.session.conversation_id)
        if self._registry is not None:
            self._registry[self.chat.id] = self
        crashed = False
        try:
            while True:
                self._wake.clear()
                self._collect()
                self._take_stream()
                self._take_commands()
                self._wake_if_due()
                self._drop_unneeded()
                self._report()
                self._save()
                if self.session.is_finished:
                    return
                if self.chat.release_wanted and not self._requests and (
                        self._save_gen == self._durable_gen):
                    # A safe point: no REST request in flight, the last event id taken from
                    # the stream committed; the stream closes as the actor stops.
                    released(self.chat)
                    return
                self._send()
                self._waiting = True
                await self._wake.wait()
                self._waiting = False
        except Exception:
            crashed = True  # a bug: the supervisor ends the chat toward OCP
            raise
        finally:
            self._waiting = False
            if self._registry is not None and self._registry.get(self.chat.id) is self:
                del self._registry[self.chat.id]
            self._tokens.leave(self.chat.id)
            await self._cancel_tasks()
            if crashed:
                await self._farewell()

    async def _farewell(self) -> None:
        """After a crash: close the conversation at Salesforce too (no ghost for the agent)."""
        if self._store is not None and not self._store.may_send():
            return  # another node may hold the chat now: it closes the conversation
        try:
            request = self.session.farewell(now=time.time())
            if request is None:
                return
            answer = await self._transport.exchange(self._base_url, request,
                                                    self._salesforce.request_timeout_s)
        except Exception as exc:  # whatever broke the actor may break this too
            log_event(log, logging.WARNING, "farewell_failed", chat=self.chat.id,
                      detail=f"{type(exc).__name__}: {exc}")
            return
        log_event(log, logging.INFO, "farewell_sent", chat=self.chat.id,
                  resource=request.purpose.value, status=answer.status)

    def _chat_woke(self) -> None:
        """The chat has news (a command, an ack that makes room, an end): a turn, unless
        one is running (then the news is the turn's own, which it saves anyway)."""
        if self._waiting:
            self._wake.set()

    # --- one turn -----------------------------------------------------------------------

    def _collect(self) -> None:
        """Hand the REST answers that came to the session."""
        answers, self._answers = self._answers, ()
        # Answers come from done callbacks: none can come while these are handed over.
        for request, result, sent_at in answers:
            now = time.time()
            if self._metrics is not None:
                status = "error" if isinstance(result, TransportError) else str(result.status)
                self._metrics.salesforce_answered(BACKEND, request.purpose.value, status,
                                                  time.monotonic() - sent_at)
            self._dirty = True
            if request.purpose is Purpose.ACCESS_TOKEN:
                self._tokens.answered(self.chat.id)  # it counts toward the limit from now
            if isinstance(result, TransportError):
                log_event(log, logging.WARNING, "salesforce_request_failed", chat=self.chat.id,
                          resource=request.purpose.value, attempt=request.attempt + 1,
                          detail=str(result))
                kind = (FailureKind.TIMEOUT if isinstance(result, TransportTimeout)
                        else FailureKind.CONNECTION)
                self.session.receive_failure(request, kind, now=now)
            else:
                self.session.receive_response(request, result.status, result.body, now=now)

    def _take_stream(self) -> None:
        """Hand the events the stream reader parsed to the session, in order."""
        if self.chat.release_wanted:
            # Letting go of the chat: what the stream brings from now on is left for the next
            # holder, which reads it again after the last event id committed here.
            return
        # All of them, at once: nothing can add to the list while this turn runs.
        items, self._stream_items = self._stream_items, ()
        for number, kind, value in items:
            if number != self._stream_number:
                continue  # from a stream given up already
            now = time.time()
            if kind == "invalid":
                self._dirty = True
                self.session.give_up(f"Salesforce's event stream is not as documented:"
                                     f" {value}", now=now)
                self._drop_stream()
                continue
            if kind == "events":
                for event in value:
                    if self.session.receive_event(event, now=now):
                        self._dirty = True
                    elif event.id:
                        # Only the stream's position moved (see "Durability"): the next save
                        # that matters carries it.
                        self._event_id_unsaved = True
                continue
            self._dirty = True
            if kind == "opened":
                self._stream_answered("200")
                self.stream_open = True
                self.session.stream_opened(now=now)
            else:  # "lost"
                status, body, detail = value
                if not self.stream_open:
                    self._stream_answered("error" if status is None else str(status))
                self.stream_open = False
                log_event(log, logging.INFO, "stream_lost", chat=self.chat.id,
                          status=status, detail=detail)
                self.session.stream_lost(now=now, status=status, body=body)
        if self.chat.has_room():
            self._stream_room.set()
        else:
            self._stream_room.clear()

    def _stream_answered(self, status: str) -> None:
        if self._metrics is not None:
            self._metrics.salesforce_answered(BACKEND, Purpose.EVENTS.value, status,
                                              time.monotonic() - self._stream_sent_at)

    def _take_commands(self) -> None:
        """Move the visitor's commands from the inbox into the session, within its bound."""
        session, inbox = self.session, self.chat.inbox
        now = time.time()
        ending = self.chat.end_requested is not None
        # While ending, take everything: what was sent before ``end`` goes out before it.
        while inbox and session.accepts_commands and (
                ending or session.pending_messages < self._max_pending):
            command = inbox.get_nowait()
            self._dirty = True
            if isinstance(command, env.Message):
                session.send_text(command.id, command.text, now=now)
            else:
                session.set_typing(command.active, now=now)
        if ending and not self._end_passed:
            self._end_passed = True
            self._dirty = True
            end = self.chat.end_requested
            assert end is not None
            session.end(now=now, reason=end.reason, detail=end.detail)

    def _wake_if_due(self) -> None:
        due = self.session.next_wake_at
        now = time.time()
        if due is not None and now >= due:
            self._dirty = True
            self.session.wake(now=now)

    def _drop_unneeded(self) -> None:
        """Once the session has ended, requests still waiting to go will never be made.

        A chat ended while its token request waited its turn must not wait on: the request
        is answered as lost, which an ended session ignores (the DELETE still goes).
        """
        if self.session.state not in (State.ENDED, State.ERROR):
            return
        keep = []
        for item in self._outgoing:
            if item.request.purpose is Purpose.CLOSE_CONVERSATION:
                keep.append(item)
            else:
                self.session.receive_failure(item.request, FailureKind.CONNECTION,
                                             now=time.time())
        self._outgoing = keep or ()
        self._tokens.leave(self.chat.id)

    def _report(self) -> None:
        """Pass the session's facts to the chat, and its notices to the log."""
        for event, detail in self.session.notices_received():
            log_event(log, logging.INFO, event, chat=self.chat.id, detail=detail)
        for fact in self.session.facts_received():
            if isinstance(fact, facts.Ended):
                self._refuse_inbox()
            self.chat.emit(fact)  # wakes no one: see _chat_woke
        if self.chat.state != _TOKEN_QUEUED or self.session.state is not State.AUTHORIZING:
            self.chat.state = self.session.state.value
        self.chat.salesforce_id = self.session.conversation_id
        self.chat.routing_status = self.session.routing_status
        paced = self.session.next_send_at is not None
        if paced and not self._paced and self._metrics is not None:
            self._metrics.messaging_pacing_waits.inc()
        self._paced = paced

    def _refuse_inbox(self) -> None:
        """Messages still in the inbox when the chat ends will never be sent."""
        for command in self.chat.inbox.drain():
            if isinstance(command, env.Message):
                self.chat.emit(facts.Undelivered(
                    id=command.id, detail="the chat ended before the message was sent"))

    def _send(self) -> None:
        """Start the requests that may go now; arm a timer for the others."""
        now = time.time()
        if sending := self.session.requests_to_send():
            outgoing = self._outgoing if self._outgoing else []
            for request in sending:
                delay = retry_delay(self._retry, request.attempt) if request.attempt else 0.0
                outgoing.append(_Outgoing(request, self._save_gen, now + delay))
            self._outgoing = outgoing
        due: float | None = self.session.next_wake_at
        if self.chat.release_wanted:
            # Letting go of the chat: nothing new goes (what waits is in the committed
            # session, for the next holder); the actor stops once nothing is in flight.
            return
        if self._store is not None and not self._store.may_send():
            # Several nodes: this node's lease is not surely its own (the store is out of
            # reach), so it sends nothing; it goes on once renewed, or the chat is dropped.
            self._wake_at(now + MAY_SEND_RECHECK_S)
            return
        waiting: list[_Outgoing] = []
        for item in self._outgoing:
            if item.gen > self._durable_gen:
                waiting.append(item)  # its commit wakes the actor
                continue
            if item.not_before > now:
                waiting.append(item)
                due = item.not_before if due is None else min(due, item.not_before)
                continue
            if item.request.purpose is Purpose.ACCESS_TOKEN and not self._tokens.try_acquire(
                    self.session.org_id, self.chat.id, self._wake.set):
                waiting.append(item)
                self.chat.state = _TOKEN_QUEUED
                continue
            self._start_request(item.request)
        self._outgoing = waiting or ()
        due = self._send_stream(now, due)
        if due is not None:
            self._wake_at(due)

    def _start_request(self, request: HttpRequest) -> None:
        if request.purpose is Purpose.ACCESS_TOKEN and self.chat.state == _TOKEN_QUEUED:
            self.chat.state = self.session.state.value
        timeout = self._salesforce.request_timeout_s
        task = asyncio.create_task(self._exchange(request, timeout),
                                   name=f"chat:{self.chat.id}:{request.purpose.value}")
        self._requests[task] = (request, time.monotonic())
        task.add_done_callback(self._on_answer)

    def _on_answer(self, task: asyncio.Task[_Result]) -> None:
        request, sent_at = self._requests.pop(task)
        if not self._requests:
            # An emptied dict keeps its table (160 bytes), held by every idle chat.
            self._requests = {}
        if task.cancelled():
            return
        self._answers = appended(self._answers, (request, task.result(), sent_at))
        self._wake.set()

    async def _exchange(self, request: HttpRequest, timeout: float) -> _Result:
        try:
            return await self._transport.exchange(self._base_url, request, timeout)
        except TransportError as exc:
            return exc

    # --- the event stream ---------------------------------------------------------------

    def _send_stream(self, now: float, due: float | None) -> float | None:
        """Open, reopen or close the event stream as the session wants it."""
        if not self.session.wants_stream:
            self._stream_next = None
            if self._stream_task is not None:
                self._drop_stream()
            return due
        request = self.session.stream_to_open()
        if request is not None:
            delay = retry_delay(STREAM_RETRY, request.attempt) if request.attempt else 0.0
            self._stream_next = (request, now + delay)
        if self._stream_next is None:
            return due
        request, not_before = self._stream_next
        if not_before > now:
            return not_before if due is None else min(due, not_before)
        self._stream_next = None
        previous = self._stream_task
        self._stream_number += 1
        # The parser reports an event without ``id`` under the last id it knows: the one this
        # connection sends as Last-Event-Id (the token's, at first), never an older one.
        self._parser.last_event_id = self.session.last_event_id
        self._parser.reset()
        self._stream_sent_at = time.monotonic()
        if self._streams_opened and self._metrics is not None:
            self._metrics.messaging_stream_reconnects.inc()
        self._streams_opened += 1
        self._stream_task = asyncio.create_task(
            self._read_stream(self._stream_number, request, previous),
            name=f"chat:{self.chat.id}:sse")
        return due

    def _drop_stream(self) -> None:
        """Close the stream: its reader is cancelled, what it still reports is ignored."""
        self._stream_number += 1
        self.stream_open = False
        task, self._stream_task = self._stream_task, None
        if task is not None:
            task.cancel()

    def _push(self, number: int, kind: str, value: Any = None) -> None:
        self._stream_items = appended(self._stream_items, (number, kind, value))
        self._wake.set()

    async def _read_stream(self, number: int, request: HttpRequest,
                           previous: asyncio.Task[None] | None) -> None:
        """Read one connection of the event stream, reporting to the actor's loop."""
        if previous is not None:
            # Never two streams at once: the old connection is closed before the new one.
            previous.cancel()
            await asyncio.gather(previous, return_exceptions=True)
            previous = None  # not held for this stream's whole life
        sf = self._salesforce
        try:
            async with self._transport.stream(self._base_url, request, sf.request_timeout_s,
                                              sf.messaging_stream_timeout_s) as stream:
                if stream.status != 200 or not stream.is_event_stream:
                    body = await stream.read_body()
                    self._push(number, "lost", (stream.status, body, "refused"))
                    return
                self._push(number, "opened")
                # Read here, not in a coroutine of its own: one frame less per chat, held
                # for the stream's whole life.
                while chunk := await stream.read_chunk():
                    if not self._parse_chunk(number, chunk):
                        return
                    del chunk  # not held while the next one is awaited
                    # A chat whose events OCP does not take stops reading: Salesforce keeps
                    # them, and what it drops meanwhile is reconciled from the entries after
                    # a reopen.
                    if len(self._stream_items) >= _STREAM_BACKLOG or (
                            not self._stream_room.is_set()):
                        self._stream_room.clear()
                        await self._stream_room.wait()
        except TransportError as exc:
            self._push(number, "lost", (None, b"", str(exc)))
            return
        self._push(number, "lost", (None, b"", "the server ended the stream"))

    def _parse_chunk(self, number: int, chunk: bytes) -> bool:
        """Parse what stream ``number`` read; the events, unless only keep-alives, go to
        the actor. ``False``: the reader stops (the stream was given up, or is invalid).

        Parsed by the reader, so that Salesforce's keep-alives (a ping every 15 s of silence,
        in every conversation) wake no turn; in a method of its own, so that the reader's
        frame holds no parsed event while it waits for the next chunk.
        """
        if number != self._stream_number:
            return False  # given up meanwhile: the parser is the next stream's now
        last_id = self._parser.last_event_id
        try:
            events = self._parser.feed(chunk)
        except RemoteProtocolError as exc:
            self._push(number, "invalid", str(exc))
            return False
        if not only_keepalives(events, last_id):
            self._push(number, "events", events)
        return True

    # --- keeping the chat ---------------------------------------------------------------

    def _chat_fingerprint(self) -> tuple[Any, ...]:
        chat = self.chat
        return (chat.next_seq, chat.held[0].seq if chat.held else 0, len(chat.inbox),
                chat.end_requested is not None)

    def _save(self) -> None:
        """Hand the chat's snapshot to the store when it changed (see "Durability")."""
        fingerprint = self._chat_fingerprint()
        if not self._dirty and fingerprint == self._saved_chat and not (
                self._event_id_unsaved and self.chat.release_wanted):
            return
        self._dirty = False
        self._event_id_unsaved = False
        self._saved_chat = fingerprint
        self._save_gen += 1
        if self._store is None:
            self._durable_gen = self._save_gen
            return
        state = msgspec.Raw(_snapshot_encoder.encode(self.session.snapshot()))
        record = ChatRecord(chat=self.chat.snapshot(), state=state)
        static = None
        if not self._static_saved:
            self._static_saved = True
            params = msgspec.Raw(_snapshot_encoder.encode(self.session.params))
            static = self.chat.static(BACKEND, params).encode()
        # The chat's lists (its held events, inbox, pending ids) are kept item by item:
        # only what changed since the last save is written.
        items: list[Item] = []
        drops: list[Drop] = []
        self.chat.kept_changes(items, drops)
        self._store.save(self.chat.id, record.encode(),
                         functools.partial(self._durable, self._save_gen,
                                           self.chat.next_seq - 1),
                         static=static, delivered=self.chat.take_new_delivered(),
                         items=items, drops=drops)

    def _durable(self, gen: int, upto: int) -> None:
        before, self._durable_gen = self._durable_gen, max(self._durable_gen, gen)
        self.chat.mark_durable(upto)  # the events go to OCP from here, not from the actor
        # A turn only if something waits for this commit: a request the session made since
        # the previous one, the chat's release at a safe point.
        if (not self._waiting or self.chat.release_wanted
                or any(before < item.gen <= self._durable_gen for item in self._outgoing)):
            self._wake.set()

    def _wake_at(self, when: float) -> None:
        """Wake the loop at wall-clock time ``when`` (the session's clock)."""
        if self._timer is not None and self._timer_due <= when:
            return
        if self._timer is not None:
            self._timer.cancel()
        self._timer_due = when
        delay = max(0.0, when - time.time())
        # The token's end, hours away, in every live chat: one shared timer for those.
        timers = self._far_timers if delay >= FAR_TIMER_S else asyncio.get_running_loop()
        self._timer = timers.call_later(delay, self._timer_fired)

    def _timer_fired(self) -> None:
        self._timer = None
        self._wake.set()

    async def _cancel_tasks(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        pending: list[asyncio.Task[Any]] = [t for t in self._requests if not t.done()]
        if self._stream_task is not None:
            pending.append(self._stream_task)
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.gather(*pending, return_exceptions=True)
        self.chat.waker = None


class MessagingBackend:
    """The Enhanced Chat (Messaging for In-App and Web) backend.

    Args:
        transport: shared by every chat.
        salesforce: the ``[salesforce]`` section.
        max_pending: how many visitor messages one chat may hold unsent.
        retry: backoff of REST requests sent again (429, 5xx, no answer).
    """

    name = BACKEND

    def __init__(self, transport: MessagingTransport, salesforce: SalesforceConfig, *,
                 max_pending: int, retry: RetryPolicy | None = None,
                 history: HistoryHandover | None = None,
                 store: Store | None = None, metrics: Metrics | None = None) -> None:
        self._transport = transport
        self._salesforce = salesforce
        self._max_pending = max_pending
        self._retry = retry or RetryPolicy()
        self._history = history
        self._store = store
        self._metrics = metrics
        self.tokens = TokenQueue(salesforce.messaging_token_limit,
                                 salesforce.messaging_limit_window_s)
        self._far_timers = FarTimers()
        self._actors: dict[str, MessagingActor] = {}
        if metrics is not None:
            metrics.read_more(self._scrape)

    def reconfigure(self, salesforce: SalesforceConfig) -> None:
        """Use new ``[salesforce]`` settings for chats started from now on (SIGHUP)."""
        self._salesforce = salesforce

    @staticmethod
    def resume_from(backend_static: bytes, state: bytes, poll_sent_at: float,
                    lists: KeptLists | None = None) -> MessagingResume:
        """Decode a kept chat's Enhanced Chat parts (``poll_sent_at`` and ``lists`` are
        Live Agent's: the session's own state is small and kept whole).

        Raises:
            msgspec.DecodeError: a damaged record.
        """
        return MessagingResume(params=_params_decoder.decode(backend_static),
                               snapshot=_snapshot_decoder.decode(state))

    def run_chat(self, chat: Chat, resume: MessagingResume | None = None
                 ) -> Coroutine[Any, Any, None]:
        """Serve ``chat`` until it ends; the last fact it emits is ``Ended``.

        The actor's own ``run`` where nothing is to be awaited first: a coroutine around it
        would be one more frame held by every live chat.

        Args:
            chat: the chat.
            resume: its kept Enhanced Chat state, when it goes on after a restart.
        """
        if resume is not None:
            session = MessagingSession.restore(resume.params, resume.snapshot, now=time.time())
            return self._actor(chat, session).run(resumed=True)
        if self._history is not None:
            return self._run_after_history(chat)
        session = MessagingSession(messaging_params(messaging_config(chat), self._salesforce,
                                                    None))
        return self._actor(chat, session).run()

    async def _run_after_history(self, chat: Chat) -> None:
        # "before asking for an agent" (PROTOCOL.md 4): the history goes in the create
        # (a hidden pre-chat field) and as the first visitor messages.
        chat.state = "fetching_history"
        assert self._history is not None
        handover = await self._history.prepare(chat)
        session = MessagingSession(messaging_params(messaging_config(chat), self._salesforce,
                                                    handover.summary))
        await self._actor(chat, session).run(handover)

    def _actor(self, chat: Chat, session: MessagingSession) -> MessagingActor:
        return MessagingActor(chat, session, self._transport, salesforce=self._salesforce,
                              max_pending=self._max_pending, retry=self._retry,
                              tokens=self.tokens, store=self._store, metrics=self._metrics,
                              far_timers=self._far_timers, registry=self._actors)

    def _scrape(self) -> Iterable[Metric]:
        """The Enhanced Chat figures read at scrape time."""
        yield GaugeMetricFamily("bridged_messaging_token_queue_depth",
                                "Enhanced Chat hand-overs waiting for an access token"
                                " (Salesforce's per-org limit)", value=self.tokens.depth)
        streams = sum(1 for a in self._actors.values() if a.stream_open)
        yield GaugeMetricFamily("bridged_messaging_streams_open",
                                "Enhanced Chat event streams open now", value=streams)
        paced = sum(a.paced_messages for a in self._actors.values())
        yield GaugeMetricFamily("bridged_messaging_paced_messages",
                                "Visitor messages held now by Salesforce's per-conversation"
                                " limit", value=paced)

    async def aclose(self) -> None:
        self.tokens.close()
        self._far_timers.close()
        if self._history is not None:
            await self._history.aclose()
        await self._transport.aclose()
