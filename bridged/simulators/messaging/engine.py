"""The simulator's state and everything that changes it, without the HTTP around it.

:class:`Engine` holds the conversations, tokens, streams, records and faults, and carries out
what the endpoints (``rest.py``, ``events.py``) and the control API (``control.py``) ask:
it emits events, runs the scripted agents and applies the agent actions. ``app.py``
subclasses it with the aiohttp application (:class:`~.app.Simulator`); the endpoint modules
depend on this module only, so nothing imports ``app.py`` back.

Everything happens on the event loop, synchronously between awaits: an accepted request
changes a :class:`~.model.Conversation` and emits its events (:meth:`Engine.emit`) to the
subject's replay buffer and open streams in the same step, so events are never reordered.
Scripted agents are ``loop.call_later`` chains (one timer per running script), tracked so
that shutting down cancels them; the reaper (:meth:`Engine.reap`) forgets expired tokens and
closed conversations after ``closed_retention_s``.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import time
import uuid
from collections import deque
from collections.abc import Callable
from typing import Any

import msgspec

from . import entries, scripts
from .entries import CLOSE_EVENT, Entry
from .faults import AFTER, BEFORE, DELAY, FAIL, RESET, Fault, FaultPlan, InjectedFault, StreamDrop
from .limits import SlidingWindow
from .model import (
    ACTIVE,
    ENDED,
    NEEDS_ROUTING,
    ROUTED,
    TRANSFER,
    WAITING,
    Agent,
    Conversation,
    SessionOver,
    SimulatorError,
    UnknownConversation,
)
from .options import MessagingOptions
from .records import RequestRecord, StreamRecord
from .scripts import Action, Step
from .sse import envelope, event_frame, format_event_id
from .streams import EventStream, StreamHub
from .tokens import TokenBook

__all__ = ["Engine"]

logger = logging.getLogger("bridged.simulators.messaging")

# Most injected faults remembered (oldest dropped).
_INJECTED_MAX = 10_000
# The queue every routing result names (a Group id, prefix 00G).
_QUEUE_ID = "00G000000000SIM"


def _wall_ms() -> int:
    return int(time.time() * 1000)


class Engine:
    """The simulator's state and behaviour; the Python control API for tests.

    Attributes:
        options: The configuration.
        conversations: Every conversation held (open, and closed until reaped), by id.
        tokens: The :class:`~.tokens.TokenBook` of issued tokens.
        hub: Open streams and replay buffers (:class:`~.streams.StreamHub`).
        requests: Every request, oldest first, bounded (:class:`~.records.RequestRecord`).
        streams: Every stream opened, oldest first, bounded (:class:`~.records.StreamRecord`).
        injected: Every fault that hit, oldest first, bounded.
        plan: The faults waiting for their requests.
        token_limit: Access-token requests per org (MESSAGING.md 4.2).
        start_limit: Conversation starts per subject.
        message_limit: Visitor messages per conversation.
        watchers: Called as ``watcher(conversation_id, entry)`` right after each event of a
            conversation went out (``entry`` None for an event without one: the close, a raw
            push), and with ``entry`` None once the conversation is created and once it is
            forgotten (no longer in :attr:`conversations`). Synchronous and unbuffered:
            they must return at once and never raise (the agent console watches this way).
    """

    def __init__(self, options: MessagingOptions | None = None) -> None:
        self.options = options if options is not None else MessagingOptions()
        opts = self.options
        self.conversations: dict[str, Conversation] = {}
        self.tokens = TokenBook(opts.org_id, opts.channel_address_id, opts.max_tokens)
        self.hub = StreamHub(opts.replay_depth)
        self.requests: deque[RequestRecord] = deque(maxlen=opts.request_log_max)
        self.streams: deque[StreamRecord] = deque(maxlen=opts.record_max)
        self.injected: deque[InjectedFault] = deque(maxlen=_INJECTED_MAX)
        self.plan = FaultPlan()
        self.token_limit = SlidingWindow(opts.tokens_per_window, opts.token_window_s)
        self.start_limit = SlidingWindow(opts.starts_per_window, opts.starts_window_s)
        self.message_limit = SlidingWindow(opts.messages_per_window, opts.message_window_s)
        self.watchers: list[Callable[[str, Entry | None], None]] = []
        self._by_subject: dict[str, list[str]] = {}
        self._event_number = 0
        self._stream_number = 0
        self._timers: set[asyncio.TimerHandle] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._closed = False
        self._stopping = asyncio.Event()

    def bind(self, loop: asyncio.AbstractEventLoop) -> None:
        """Run on ``loop`` from now on (the app's startup calls this)."""
        self._loop = loop
        self._closed = False
        self._stopping = asyncio.Event()

    def shut(self) -> None:
        """Stop the agents, cut injected delays short and end every open stream."""
        self._closed = True
        self._stopping.set()
        for handle in self._timers:
            handle.cancel()
        self._timers.clear()
        for stream in self.hub.all():
            stream.close("shutdown")

    def reap(self, now: float | None = None) -> None:
        """Forget expired tokens, and the conversations nobody can reach any more."""
        now = time.time() if now is None else now
        retention = self.options.closed_retention_s
        for token in self.tokens.reap(now, retention):
            if not self.tokens.of_subject(token.subject):
                for cid in self._by_subject.pop(token.subject, []):
                    self._forget(cid)
                self.hub.forget_subject(token.subject)
        now_ms = int(now * 1000)
        for conv in list(self.conversations.values()):
            if conv.ended_ms is not None and now_ms - conv.ended_ms > retention * 1000:
                self._forget(conv.id)
                ids = self._by_subject.get(conv.subject)
                if ids is not None and conv.id in ids:
                    ids.remove(conv.id)
        mono = self.mono()
        for window in (self.token_limit, self.start_limit, self.message_limit):
            window.reap(mono)

    def _forget(self, conversation_id: str) -> None:
        if self.conversations.pop(conversation_id, None) is not None:
            self._tell_watchers(conversation_id, None)
        self.plan.forget_conversation(conversation_id)

    def _tell_watchers(self, conversation_id: str, entry: Entry | None) -> None:
        for watcher in self.watchers:
            watcher(conversation_id, entry)

    def mono(self) -> float:
        """Monotonic loop time (rate limits count in it)."""
        loop = self._loop
        if loop is None or loop.is_closed():
            loop = asyncio.get_running_loop()
        return loop.time()

    async def pause(self, seconds: float) -> None:
        """An injected delay; shutdown cuts it short."""
        if seconds <= 0 or self._stopping.is_set():
            return
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                await self._stopping.wait()

    @property
    def closed(self) -> bool:
        """True once the simulator shuts down."""
        return self._closed

    # ------------------------------------------------------------------------------------
    # Conversations and events (used by rest.py and the control API)

    def add_conversation(self, conv: Conversation) -> None:
        """Hold a new conversation and start its first session's script."""
        self.conversations[conv.id] = conv
        self._by_subject.setdefault(conv.subject, []).append(conv.id)
        logger.debug("conversation %s created (%s)", conv.id, conv.kind)
        self._tell_watchers(conv.id, None)
        self.start_session_script(conv)

    def of_subject(self, subject: str) -> list[Conversation]:
        """The conversations of ``subject``, oldest first."""
        ids = self._by_subject.get(subject, ())
        return [self.conversations[cid] for cid in ids if cid in self.conversations]

    def next_event_id(self) -> str:
        """An id naming "now": the latest event so far. A new token's ``lastEventId``, from
        which a replay gives every event of the new subject."""
        return format_event_id(self._event_number, _wall_ms())

    def platform_key(self, subject: str) -> str:
        """``channelPlatformKey`` of a subject's events: opaque and stable."""
        return hashlib.sha256(subject.encode()).hexdigest()[:32]

    def emit(self, conv: Conversation, event: str, entry: Entry | None) -> str:
        """Emit one event of ``conv``: transcript, replay buffer, open streams. Its id."""
        if entry is not None:
            conv.remember(entry)
        event_id = self._publish(conv, event, entry.as_event() if entry is not None else None)
        self._tell_watchers(conv.id, entry)
        return event_id

    def _publish(self, conv: Conversation, event: str, entry: dict[str, Any] | None) -> str:
        self._event_number += 1
        event_id = format_event_id(self._event_number, _wall_ms())
        data = envelope(
            conversation_id=conv.id,
            entry=entry,
            channel_address_id=self.options.channel_address_id,
            platform_key=self.platform_key(conv.subject),
        )
        conv.events.append((event_id, event))
        self.hub.publish(conv.subject, self._event_number, event_id,
                         event_frame(event_id, event, data))
        return event_id

    def emit_entry(self, conv: Conversation, entry: Entry) -> str:
        """:meth:`emit` under the entry's own event name."""
        return self.emit(conv, entry.event, entry)

    def close_conversation(self, conv: Conversation) -> None:
        """The visitor closed ``conv``: (SESSION_STATUS_CHANGED,) CLOSE_CONVERSATION, and the
        subject's streams end after it if it has no open conversation left."""
        opts = self.options
        if opts.session_status_on_close and conv.session_status != ENDED:
            self.emit_entry(conv, entries.session_status_changed(
                status=ENDED, previous=conv.session_status, ended_by_role="EndUser",
                session_record_id=conv.session_record_id, now_ms=_wall_ms()))
        conv.close(_wall_ms())
        self.emit(conv, CLOSE_EVENT, None)
        logger.debug("conversation %s closed by the visitor", conv.id)
        if opts.close_stream_on_close and not any(
            c.is_open for c in self.of_subject(conv.subject)
        ):
            for stream in self.hub.of_subject(conv.subject):
                stream.close("conversation_closed", drain=True)

    def visitor_ends_session(self, conv: Conversation) -> None:
        """The visitor ended the session only (MESSAGING.md 2.12)."""
        self.act(conv, scripts.EndSession(by_role="EndUser"))

    # ------------------------------------------------------------------------------------
    # Agents: actions (scripted or by the control API) and the script runner

    def act(self, conv: Conversation, action: Action) -> list[str]:
        """Apply one agent-side action (table in :mod:`.scripts`); the event ids emitted.

        Raises:
            SessionOver: The action needs an agent and none is on, or another is on
                already (``Join``).
        """
        now = _wall_ms()
        ids: list[str] = []
        match action:
            case scripts.Route():
                ids.append(self.emit_entry(conv, entries.routing_result(
                    routing_type=action.routing_type, failure_type=action.failure_type,
                    failure_reason=action.failure_reason,
                    session_record_id=conv.session_record_id,
                    routing_record_id=conv.routing_record_id, queue_id=_QUEUE_ID,
                    wait_s=action.wait_s, now_ms=now)))
                if action.failure_type != "None":
                    conv.routing_status = NEEDS_ROUTING
            case scripts.QueueUpdate():
                ids.append(self.emit_entry(conv, entries.queue_position(
                    position=action.position, wait_s=action.wait_s, now_ms=now)))
            case scripts.Join():
                if conv.agent is not None:
                    raise SessionOver(f"{conv.agent.name} is already on the conversation")
                conv.agent = Agent(name=action.name, subject=action.subject)
                conv.routing_status = ROUTED
                ids.append(self.emit_entry(conv, entries.participant_changed(
                    operation="add", participant=entries.agent_sender(action.subject),
                    display_name=action.name, now_ms=now)))
                if conv.session_status == WAITING:
                    conv.session_status = ACTIVE
                    ids.append(self.emit_entry(conv, entries.session_status_changed(
                        status=ACTIVE, previous=WAITING, ended_by_role=None,
                        session_record_id=conv.session_record_id, now_ms=now)))
            case scripts.Leave():
                agent = self._agent(conv)
                ids.append(self._remove(conv, agent, now))
                if action.transfer:
                    conv.routing_status = TRANSFER
            case scripts.Say():
                agent = self._agent(conv)
                ids.append(self.emit_entry(conv, entries.text_message(
                    sender=entries.agent_sender(agent.subject), display_name=agent.name,
                    message_id=str(uuid.uuid4()), text=action.text, now_ms=now)))
            case scripts.Typing():
                agent = self._agent(conv)
                ids.append(self.emit_entry(conv, entries.typing(
                    started=action.active, sender=entries.agent_sender(agent.subject),
                    display_name=agent.name, now_ms=now)))
            case scripts.Acknowledge():
                agent = self._agent(conv)
                ids.append(self.emit_entry(conv, entries.acknowledgement(
                    read=action.read, message_id=action.message_id,
                    sender=entries.agent_sender(agent.subject), display_name=agent.name,
                    now_ms=now)))
            case scripts.EndSession():
                if conv.agent is not None:
                    ids.append(self._remove(conv, conv.agent, now))
                previous = conv.end_session()
                ids.append(self.emit_entry(conv, entries.session_status_changed(
                    status=ENDED, previous=previous, ended_by_role=action.by_role,
                    session_record_id=conv.session_record_id, now_ms=now)))
        return ids

    def _agent(self, conv: Conversation) -> Agent:
        if conv.agent is None:
            raise SessionOver(f"no agent is on conversation {conv.id}")
        return conv.agent

    def _remove(self, conv: Conversation, agent: Agent, now: int) -> str:
        conv.agent = None
        return self.emit_entry(conv, entries.participant_changed(
            operation="remove", participant=entries.agent_sender(agent.subject),
            display_name=agent.name, now_ms=now))

    def start_session_script(self, conv: Conversation) -> None:
        """Run the deployment's script for the session that just started."""
        self._run_script(conv, scripts.on_session_start(conv.kind, self.options), 0,
                         conv.generation)

    def react_to_message(self, conv: Conversation, message_id: str, text: str) -> None:
        """Let the script answer a visitor message."""
        view = scripts.ScriptView(
            kind=conv.kind,
            agent_subject=conv.agent.subject if conv.agent is not None else None,
            answered=conv.answered,
        )
        steps = scripts.on_visitor_message(view, self.options, message_id, text)
        if steps:
            conv.answered += 1
            self._run_script(conv, steps, 0, conv.generation)

    def _run_script(self, conv: Conversation, steps: list[Step], index: int,
                    generation: int) -> None:
        if index >= len(steps) or self._closed:
            return
        loop = self._loop or asyncio.get_running_loop()
        holder: list[asyncio.TimerHandle] = []
        handle = loop.call_later(steps[index].delay_s, self._run_step, conv, steps, index,
                                 generation, holder)
        holder.append(handle)
        self._timers.add(handle)

    def _run_step(self, conv: Conversation, steps: list[Step], index: int, generation: int,
                  holder: list[asyncio.TimerHandle]) -> None:
        self._timers.discard(holder[0])
        if self._closed or conv.generation != generation or not conv.is_open:
            return
        for action in steps[index].actions:
            try:
                self.act(conv, action)
            except SimulatorError:
                return  # the control API changed the conversation under the script
            if conv.generation != generation:
                return
        self._run_script(conv, steps, index + 1, generation)

    # ------------------------------------------------------------------------------------
    # Control API: the agent, by hand

    def conversation(self, conversation_id: str) -> Conversation:
        """The conversation with that id.

        Raises:
            UnknownConversation: No such conversation.
        """
        try:
            return self.conversations[conversation_id]
        except KeyError:
            raise UnknownConversation(conversation_id) from None

    def _live(self, conversation_id: str) -> Conversation:
        conv = self.conversation(conversation_id)
        if not conv.is_open:
            raise SessionOver(f"conversation {conversation_id} is closed")
        if not conv.has_session:
            raise SessionOver(f"the messaging session of {conversation_id} has ended")
        return conv

    def agent_joins(self, conversation_id: str, name: str | None = None,
                    subject: str | None = None) -> list[str]:
        """An agent (default: the first scripted one) is added: PARTICIPANT_CHANGED add."""
        conv = self._live(conversation_id)
        action = scripts.Join(name=name or self.options.agent_name,
                              subject=subject or self.options.agent_subject)
        return self.act(conv, action)

    def agent_says(self, conversation_id: str, text: str) -> list[str]:
        """The agent on the conversation sends a text message."""
        return self.act(self._live(conversation_id), scripts.Say(text=text))

    def agent_typing(self, conversation_id: str, active: bool = True) -> list[str]:
        """The agent starts or stops typing."""
        return self.act(self._live(conversation_id), scripts.Typing(active=active))

    def agent_acknowledges(self, conversation_id: str, message_id: str,
                           read: bool = False) -> list[str]:
        """The agent's side acknowledges a visitor message (delivered, or ``read``)."""
        return self.act(self._live(conversation_id),
                        scripts.Acknowledge(message_id=message_id, read=read))

    def agent_leaves(self, conversation_id: str) -> list[str]:
        """The agent is removed (no transfer, the session goes on without an agent)."""
        return self.act(self._live(conversation_id), scripts.Leave())

    def agent_transfers(self, conversation_id: str, name: str | None = None,
                        subject: str | None = None) -> list[str]:
        """A transfer, at once: remove (routingStatus TRANSFER), RoutingResult Transfer,
        add of the new agent (default: the second scripted agent)."""
        conv = self._live(conversation_id)
        new = scripts.Join(name=name or self.options.second_agent_name,
                           subject=subject or self.options.second_agent_subject)
        ids = self.act(conv, scripts.Leave(transfer=True))
        ids += self.act(conv, scripts.Route(routing_type="Transfer"))
        ids += self.act(conv, new)
        return ids

    def agent_ends(self, conversation_id: str) -> list[str]:
        """The agent ends the session: remove, SESSION_STATUS_CHANGED Ended, NEEDS_ROUTING;
        the conversation stays open and later sends get 417."""
        return self.act(self._live(conversation_id), scripts.EndSession(by_role="Agent"))

    def routing_result(self, conversation_id: str, *, routing_type: str = "Initial",
                       failure_type: str = "None", failure_reason: str = "",
                       wait_s: int = -1) -> list[str]:
        """A RoutingResult (a failure sets routingStatus NEEDS_ROUTING)."""
        action = scripts.Route(routing_type=routing_type, failure_type=failure_type,
                               failure_reason=failure_reason, wait_s=wait_s)
        return self.act(self._live(conversation_id), action)

    def queue_update(self, conversation_id: str, position: int, wait_s: int) -> list[str]:
        """A CONVERSATION_QUEUE_POSITION update (SYNTHETIC payload)."""
        return self.act(self._live(conversation_id),
                        scripts.QueueUpdate(position=position, wait_s=wait_s))

    def push_event(self, conversation_id: str, event: str,
                   entry: dict[str, Any] | None = None) -> str:
        """Emit any event, documented or not (a client must ignore unknown types).

        ``entry`` becomes ``conversationEntry`` as given (no ``entryPayload`` rewriting).
        """
        event_id = self._publish(self.conversation(conversation_id), event, entry)
        self._tell_watchers(conversation_id, None)
        return event_id

    # ------------------------------------------------------------------------------------
    # Control API: faults

    def note_fault(self, conversation_id: str | None, resource: str, label: str) -> None:
        """Remember that a fault hit."""
        self.injected.append(InjectedFault(at=time.time(), conversation_id=conversation_id,
                                           resource=resource, fault=label))

    def _scope(self, conversation_id: str | None) -> str | None:
        if conversation_id is not None:
            self.conversation(conversation_id)
        return conversation_id

    def fail_next(self, resource: str, status: int, message: str = "Simulated failure", *,
                  count: int = 1, conversation_id: str | None = None) -> None:
        """Answer the next ``count`` requests for ``resource`` with ``status`` (JSON error
        body with ``message``), unapplied. ``Stream`` with a 5xx is "the stream answers
        5xx"; a conversation id limits it to that conversation's requests."""
        fault = Fault(kind=FAIL, status=status, message=message)
        self.plan.add(self._scope(conversation_id), resource, fault, count)

    def reset_next(self, resource: str, count: int = 1, when: str = BEFORE, *,
                   conversation_id: str | None = None) -> None:
        """Reset the connection of the next ``count`` requests for ``resource``.

        ``when="after"``: the request is applied first (a message accepted and echoed),
        so the client cannot know whether it was. aiohttp's client resends an idempotent
        request (GET, DELETE) once by itself after a reset.
        """
        fault = Fault(kind=RESET, when=when)
        self.plan.add(self._scope(conversation_id), resource, fault, count)

    def delay_next(self, resource: str, seconds: float, count: int = 1, when: str = AFTER, *,
                   conversation_id: str | None = None) -> None:
        """Answer the next ``count`` requests for ``resource`` ``seconds`` late (``after``:
        applied at once; ``before``: handled after the wait). On ``Stream`` the headers
        come late."""
        fault = Fault(kind=DELAY, when=when, seconds=seconds)
        self.plan.add(self._scope(conversation_id), resource, fault, count)

    def drop_next_streams(self, after_events: int, count: int = 1, *, abort: bool = True) -> None:
        """Cut each of the next ``count`` streams opened after ``after_events`` events
        (replayed ones count): mid-body (``abort``, an error) or by a clean end."""
        self.plan.add_drop(StreamDrop(after_events=after_events, abort=abort), count)

    def drop_streams(self, subject: str | None = None, *, abort: bool = True) -> int:
        """Cut every open stream (of ``subject``) now, mid-body (``abort``) or by a clean
        end; events not yet written are lost. Returns how many."""
        streams = self.hub.all() if subject is None else self.hub.of_subject(subject)
        for stream in streams:
            stream.close("dropped", abort=abort)
            self.note_fault(None, "Stream", "drop_now" if abort else "end_now")
        return len(streams)

    def expire_tokens(self, subject: str | None = None) -> int:
        """Expire every token (of ``subject``) now: REST and stream get 401 ``Jwt is
        expired``, and their open streams end. Returns how many tokens."""
        now = time.time()
        tokens = (list(self.tokens.tokens.values()) if subject is None
                  else self.tokens.of_subject(subject))
        for token in tokens:
            self.tokens.expire(token, now)
            for stream in self.hub.of_token(token.jwt_id):
                stream.close("token_expired")
        if tokens:
            self.note_fault(None, "Token", "expire_now")
        return len(tokens)

    def set_replay(self, enabled: bool) -> None:
        """Turn ``Last-Event-Id`` replay off (as if the buffer were empty) or back on."""
        self.hub.replay_enabled = enabled

    def clear_faults(self) -> None:
        """Drop every fault still waiting, and turn replay back on."""
        self.plan.clear()
        self.hub.replay_enabled = True

    def open_streams(self) -> list[EventStream]:
        """Every open stream."""
        return self.hub.all()

    # ------------------------------------------------------------------------------------
    # Records

    def faults(self) -> dict[str, Any]:
        """The fault state, as JSON-able builtins: ``{"pending", "injected", "replay"}``."""
        return {
            "pending": self.plan.pending(),
            "injected": msgspec.to_builtins(list(self.injected)),
            "replay": self.hub.replay_enabled,
        }

    def summaries(self) -> list[dict[str, Any]]:
        """One short line per conversation."""
        return [conv.summary() for conv in self.conversations.values()]

    def request_records(self, resource: str | None = None,
                        conversation_id: str | None = None) -> list[RequestRecord]:
        """The recorded requests, optionally only of one resource and/or conversation."""
        return [
            r for r in self.requests
            if (resource is None or r.resource == resource)
            and (conversation_id is None or r.conversation_id == conversation_id)
        ]

    def record(self) -> dict[str, Any]:
        """Everything recorded, as JSON-able builtins: options, conversations, requests,
        streams, faults."""
        return {
            "options": msgspec.to_builtins(self.options),
            "conversations": {cid: c.record() for cid, c in self.conversations.items()},
            "requests": msgspec.to_builtins(list(self.requests)),
            "streams": [s.as_dict() for s in self.streams],
            "faults": self.faults(),
        }

    # Used by events.py -----------------------------------------------------------------

    def next_stream_number(self) -> int:
        """Number the next stream opening."""
        self._stream_number += 1
        return self._stream_number

    def schedule(self, delay: float, callback: Callable[[], None]) -> asyncio.TimerHandle:
        """``loop.call_later`` on the simulator's loop."""
        loop = self._loop or asyncio.get_running_loop()
        return loop.call_later(max(0.0, delay), callback)
