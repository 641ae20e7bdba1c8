"""One chat as OCP sees it: its numbered events, its binding to a connection, its inbox.

A :class:`Chat` is what every side of bridged shares about a chat:

* the backend's actor reads the visitor's commands from :attr:`Chat.inbox` and reports
  facts with :meth:`Chat.emit`;
* :meth:`Chat.emit` numbers each event (``seq`` 1, 2, ...) and holds it in the outbox
  until OCP acknowledges it, so that an ``attach`` can replay it;
* the connection the chat is bound to (a :class:`Link`) is asked to flush the chat; the
  link's single writer pulls the events it has not sent yet, in ``seq`` order. Pulling
  (rather than pushing events into the link) is what makes a rebind atomic: ``attach``
  moves the binding and the replay point in one synchronous step, and the old link's
  writer sees that the chat is no longer its own.

Backpressure: the outbox is bounded (``max_held``). While it is full the actor does not
poll Salesforce for more, so Salesforce keeps the agent's messages instead of bridged.

Durability: an event is sent to OCP only once it is *durable*, i.e. once the chat's
snapshot that holds it has been committed to the state store (``durable_seq``). A restart
then never has to invent again an event that OCP has already seen: whatever OCP saw, the
next process holds, with the same ``seq``.

What a chat holds in numbers (its events, its inbox, the ids of its messages not yet
answered) is kept item by item (the store's *kept lists*): :meth:`Chat.kept_changes` gives
what was added and what is gone since the last save, so a save costs what changed, not
what the chat holds.
"""

from __future__ import annotations

__all__ = ["BACKEND_LISTS", "Chat", "ChatRecord", "ChatSnapshot", "ChatStatic", "Command",
           "KeptLists", "Link"]

import itertools
import time
from collections import deque
from collections.abc import Callable
from typing import Protocol, TypeAlias

import msgspec

from bridged.chats import facts
from bridged.chats.mailbox import LoadMeter, Mailbox
from bridged.chats.texts import render
from bridged.config.webchat import WebchatConfig
from bridged.ocp import envelopes as env

Command: TypeAlias = env.Message | env.Typing
# The chat's kept lists (see bridged.state.sqlite); a backend numbers its own from
# BACKEND_LISTS up. Keys: an event's seq; the n-th command put in the inbox; the n-th
# message id taken in.
_EVENTS, _INBOX, _PENDING = 1, 2, 3
BACKEND_LISTS = 16
KeptLists: TypeAlias = dict[int, list[tuple[int, bytes]]]  # list -> [(key, data)] by key


class ChatStatic(msgspec.Struct, frozen=True, kw_only=True):
    """What never changes about a kept chat: written once, with its first snapshot."""

    version: int = 1
    id: str
    webchat: WebchatConfig
    start: env.Start
    created: float
    backend: str
    # The backend's unchanging part; msgspec cannot put Raw in a union, so "none" is
    # MessagePack's nil.
    backend_static: msgspec.Raw = msgspec.Raw(b"\xc0")

    def encode(self) -> bytes:
        return _static_encoder.encode(self)

    @staticmethod
    def decode(data: bytes) -> ChatStatic:
        """Raises ``msgspec.DecodeError`` (with the field at fault) on a damaged record."""
        return _static_decoder.decode(data)


class ChatSnapshot(msgspec.Struct, frozen=True, kw_only=True, gc=False):
    """What changes about a chat, as of one instant (the delivered ids are kept apart).

    The events, the inbox and the pending ids are kept lists of their own; the fields of
    that name hold them only in records written before (version 1), read on an upgrade.
    """

    next_seq: int
    held: list[env.ChatEvent] = []
    pending_ids: list[str] = []
    inbox: list[Command] = []
    end_requested: facts.Ended | None
    finished: bool
    state: str
    agent: str | None
    queue_position: int | None = None


class ChatRecord(msgspec.Struct, frozen=True, kw_only=True, gc=False):
    """A kept chat's changing part: the shared snapshot and the backend's (opaque here)."""

    version: int = 2  # 1: the events, inbox and pending ids inline in ``chat``
    chat: ChatSnapshot
    state: msgspec.Raw = msgspec.Raw(b"\xc0")

    def encode(self) -> bytes:
        return _record_encoder.encode(self)

    @staticmethod
    def decode(data: bytes) -> ChatRecord:
        """Raises ``msgspec.DecodeError`` (with the field at fault) on a damaged record."""
        return _record_decoder.decode(data)


_static_encoder = msgspec.msgpack.Encoder()
_static_decoder = msgspec.msgpack.Decoder(ChatStatic)
_record_encoder = msgspec.msgpack.Encoder()
_record_decoder = msgspec.msgpack.Decoder(ChatRecord)
_item_encoder = msgspec.msgpack.Encoder()
_event_decoder = msgspec.msgpack.Decoder(env.ChatEvent)
_command_decoder = msgspec.msgpack.Decoder(Command)


class Link(Protocol):
    """What a chat (and the dispatcher) needs of the connection it is bound to."""

    id: str
    chats: set[str]  # ids of the chats bound to this link

    def schedule(self, chat: Chat) -> None:
        """The chat has events this link has not sent yet."""

    def post_error(self, error: env.Error) -> None:
        """Send an ``error`` (not numbered, not held for replay)."""


class Chat:
    """The shared state of one live (or just ended) chat.

    Args:
        chat_id: OCP's id of the chat.
        webchat: the effective webchat configuration.
        start: the ``start`` envelope that began it.
        inbox_size: bound of the visitor's command inbox.
        max_held: bound of the events held for replay.
    """

    def __init__(self, chat_id: str, webchat: WebchatConfig, start: env.Start, *,
                 inbox_size: int, max_held: int) -> None:
        self.id = chat_id
        self.webchat = webchat
        self.start = start
        self.created = time.time()
        self.last_activity = self.created
        self.inbox: Mailbox[Command] = Mailbox(inbox_size, on_put=self._put)
        self._inbox_puts = 0  # commands ever put in the inbox: the next one's key
        self.max_held = max_held
        self.held: deque[env.ChatEvent] = deque()
        self.next_seq = 1
        self.durable_seq = 0  # events up to here are in the state store
        self.persistent = True  # False: no store, every event is durable at once
        self.link: Link | None = None
        self.sent_upto = 0  # the highest seq the bound link has written
        self.bind_epoch = 0  # +1 at every bind, so a writer can tell it was rebound
        self.end_requested: facts.Ended | None = None
        self.finished = False
        self.state = "starting"  # for the admin view and metrics; set by the actor
        self.agent: str | None = None
        self.queue_position: int | None = None
        self.delivered_ids: set[str] = set()
        self.new_delivered: list[str] = []  # delivered since the last save
        self.pending_ids: set[str] = set()
        self.waker: Callable[[], None] | None = None
        self.on_finished: Callable[[Chat, facts.Ended], None] | None = None
        self.on_event: Callable[[env.ChatEvent], None] | None = None
        self.load: LoadMeter | None = None  # counts this chat's messages not yet answered
        # What the store holds of the kept lists (see kept_changes): events from
        # _kept_from to _kept_seq, inbox keys from _kept_inbox_from below _kept_inbox, and
        # a key per pending id, with the ones added and dropped since the last save.
        self._kept_from, self._kept_seq = 1, 0
        self._kept_inbox_from = self._kept_inbox = 0
        self._pending_keys: dict[str, int] = {}
        self._pending_next = 0
        self._pending_added: dict[int, str] = {}
        self._pending_dropped: list[int] = []

    # --- the actor's side -------------------------------------------------------------

    def wake(self) -> None:
        """Tell the actor that something changed (a command, an ack, an end)."""
        if self.waker is not None:
            self.waker()

    def _put(self) -> None:
        self._inbox_puts += 1
        self.wake()

    def has_room(self) -> bool:
        """Whether more events can be held; the actor polls Salesforce only while true."""
        return len(self.held) < self.max_held

    def emit(self, fact: facts.Fact) -> None:
        """Report a fact: number it, hold it, have the bound link send it."""
        if self.finished:
            return
        if isinstance(fact, facts.Undelivered):
            self._settle(fact.id)
            if self.link is not None:
                self.link.post_error(env.Error(code="unknown_chat", detail=fact.detail,
                                               chat=self.id, ref=fact.id))
            return
        if isinstance(fact, facts.Delivered):
            self._settle(fact.id)
            if fact.id not in self.delivered_ids:
                self.delivered_ids.add(fact.id)
                self.new_delivered.append(fact.id)
        elif isinstance(fact, (facts.AgentJoined, facts.Transferred)):
            self.agent = fact.agent
            self.queue_position = None
        elif isinstance(fact, facts.Queued):
            self.queue_position = fact.position
        event = render(fact, self.id, self.next_seq, self.webchat)
        self.next_seq += 1
        self.held.append(event)
        if not self.persistent:
            self.durable_seq = event.seq
        self.last_activity = time.time()
        if self.on_event is not None:
            self.on_event(event)
        if self.link is not None:
            self.link.schedule(self)
        if isinstance(fact, facts.Ended):
            self.finished = True
            self.inbox.close()
            if self.on_finished is not None:
                self.on_finished(self, fact)
        self.wake()  # the actor saves the new event, which makes it durable

    def accept(self, message_id: str) -> None:
        """A visitor message was taken in; it counts as load until answered."""
        if message_id not in self.pending_ids:
            self.pending_ids.add(message_id)
            if message_id not in self._pending_keys:  # else kept already (adopted)
                key = self._pending_keys[message_id] = self._pending_next
                self._pending_next += 1
                self._pending_added[key] = message_id
            if self.load is not None:
                self.load.add()

    def _settle(self, message_id: str) -> None:
        if message_id in self.pending_ids:
            self.pending_ids.discard(message_id)
            key = self._pending_keys.pop(message_id, None)
            if key is not None and self._pending_added.pop(key, None) is None:
                self._pending_dropped.append(key)
            if self.load is not None:
                self.load.remove()

    def release_load(self) -> None:
        """The chat is gone from this process: its unanswered messages stop counting."""
        if self.load is not None and self.pending_ids:
            self.load.remove(len(self.pending_ids))
        self.load = None

    def mark_durable(self, upto: int) -> None:
        """Events up to ``upto`` are committed: the bound link may send them now."""
        if upto > self.durable_seq:
            self.durable_seq = upto
            if self.link is not None:
                self.link.schedule(self)

    # --- keeping across restarts --------------------------------------------------------

    def static(self, backend: str, backend_static: msgspec.Raw | None = None) -> ChatStatic:
        """The chat's unchanging part, for the store.

        Without ``start.history_token``: OCP's bearer token for the bot history is used once,
        before the session exists, and is never written down.
        """
        start = self.start
        if start.history_token is not None:
            start = msgspec.structs.replace(start, history_token=None)
        return ChatStatic(id=self.id, webchat=self.webchat, start=start,
                          created=self.created, backend=backend,
                          backend_static=backend_static or msgspec.Raw(b"\xc0"))

    def snapshot(self) -> ChatSnapshot:
        """The chat's changing scalars, for the store (its lists: :meth:`kept_changes`)."""
        return ChatSnapshot(
            next_seq=self.next_seq, end_requested=self.end_requested, finished=self.finished,
            state=self.state, agent=self.agent, queue_position=self.queue_position,
        )

    def kept_changes(self, items: list[tuple[int, int, bytes]],
                     drops: list[tuple[int, int, int]]) -> None:
        """Append what changed in the chat's kept lists since the last call, for a save.

        Events acknowledged and commands taken since are dropped (as ranges of keys), new
        ones added; each item is encoded once, when it is new.
        """
        # Events: held from held[0].seq (or none) to next_seq - 1, consecutively. Only keys
        # up to _kept_seq were ever written: one acknowledged before its save costs nothing.
        first = self.held[0].seq if self.held else self.next_seq
        if first > self._kept_from:
            if self._kept_seq >= self._kept_from:
                drops.append((_EVENTS, self._kept_from, min(first - 1, self._kept_seq)))
            self._kept_from = first
        last = self.next_seq - 1
        if last > self._kept_seq:
            new = last - max(self._kept_seq + 1, first) + 1
            for index in range(-new, 0):
                event = self.held[index]
                items.append((_EVENTS, event.seq, _item_encoder.encode(event)))
            self._kept_seq = last
        # The inbox: keys from (puts - len) to puts - 1.
        oldest = self._inbox_puts - len(self.inbox)
        if oldest > self._kept_inbox_from:
            if self._kept_inbox > self._kept_inbox_from:
                drops.append((_INBOX, self._kept_inbox_from,
                              min(oldest, self._kept_inbox) - 1))
            self._kept_inbox_from = oldest
        if self._inbox_puts > self._kept_inbox:
            start = max(self._kept_inbox, oldest)
            for key, command in enumerate(self.inbox.newest(self._inbox_puts - start), start):
                items.append((_INBOX, key, _item_encoder.encode(command)))
            self._kept_inbox = self._inbox_puts
        # The ids of messages taken in and not yet answered.
        if self._pending_dropped:
            drops.extend((_PENDING, key, key) for key in self._pending_dropped)
            self._pending_dropped = []
        if self._pending_added:
            items.extend((_PENDING, key, message_id.encode())
                         for key, message_id in self._pending_added.items())
            self._pending_added = {}

    def take_new_delivered(self) -> list[str]:
        """The ids delivered since the last call (appended to the store with a save)."""
        new, self.new_delivered = self.new_delivered, []
        return new

    @classmethod
    def restore(cls, static: ChatStatic, snapshot: ChatSnapshot, delivered: list[str],
                lists: KeptLists | None = None, *, inbox_size: int, max_held: int) -> Chat:
        """The chat kept as ``static`` + ``snapshot`` + its kept lists, unbound, its events
        durable.

        Raises:
            msgspec.DecodeError: a damaged item.
        """
        lists = lists or {}
        kept_events = lists.get(_EVENTS, [])
        kept_inbox = lists.get(_INBOX, [])
        kept_pending = lists.get(_PENDING, [])
        inbox = [*snapshot.inbox, *(_command_decoder.decode(data) for _, data in kept_inbox)]
        chat = cls(static.id, static.webchat, static.start,
                   inbox_size=max(inbox_size, len(inbox)), max_held=max_held)
        chat.created = static.created
        chat.next_seq = snapshot.next_seq
        chat.durable_seq = snapshot.next_seq - 1
        events = {event.seq: event for event in snapshot.held}  # version 1: inline
        events.update((key, _event_decoder.decode(data)) for key, data in kept_events)
        chat.held.extend(events[seq] for seq in sorted(events))
        # What came from the kept lists is in the store; what came inline is written anew.
        if kept_events:
            chat._kept_from, chat._kept_seq = kept_events[0][0], kept_events[-1][0]
        else:
            chat._kept_from = chat.next_seq - len(chat.held)
            chat._kept_seq = chat._kept_from - 1
        chat.delivered_ids.update(delivered)
        for key, data in kept_pending:
            message_id = data.decode()
            chat.pending_ids.add(message_id)
            chat._pending_keys[message_id] = key
            chat._pending_next = key + 1
        for message_id in snapshot.pending_ids:
            chat.accept(message_id)
        chat.queue_position = snapshot.queue_position
        for command in inbox:
            chat.inbox.put_nowait(command)
        if kept_inbox:
            chat._kept_inbox_from = kept_inbox[0][0]
            chat._kept_inbox = chat._inbox_puts = kept_inbox[-1][0] + 1
        chat.end_requested = snapshot.end_requested
        chat.finished = snapshot.finished
        chat.state = snapshot.state
        chat.agent = snapshot.agent
        if chat.finished:
            chat.inbox.close()
        return chat

    # --- the connections' side --------------------------------------------------------

    def bind(self, link: Link, after: int) -> None:
        """Bind to ``link`` and have it send every held event with ``seq > after``."""
        self.link = link
        self.bind_epoch += 1
        self.sent_upto = min(after, self.next_seq - 1)
        link.schedule(self)

    def unbind(self, link: Link) -> bool:
        """Forget ``link`` if it is the bound one; ``True`` if it was."""
        if self.link is not link:
            return False
        self.link = None
        return True

    def unsent(self, limit: int) -> list[env.ChatEvent]:
        """Up to ``limit`` held events the bound link has not written yet, in order."""
        if not self.held:
            return []
        # Held events have consecutive numbers, so the first unsent one is found by offset;
        # only durable events go out.
        first = self.held[0].seq
        start = max(0, self.sent_upto + 1 - first)
        stop = min(start + limit, self.durable_seq + 1 - first)
        if stop <= start:
            return []
        return list(itertools.islice(self.held, start, stop))

    def ack(self, seq: int) -> None:
        """OCP has processed every event up to ``seq``: forget them, and make room."""
        was_full = not self.has_room()
        while self.held and self.held[0].seq <= seq:
            self.held.popleft()
        if was_full and self.has_room():
            self.wake()

    def request_end(self, reason: facts.EndReason, detail: str = "") -> None:
        """Ask the actor to end the chat toward Salesforce, then report ``reason``."""
        if self.end_requested is None and not self.finished:
            self.end_requested = facts.Ended(reason=reason, detail=detail)
            self.wake()
