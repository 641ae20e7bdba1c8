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

An ``error`` about one of the visitor's messages that will never be sent (the chat ended
first) is part of that stream too, though ``error`` carries no ``seq``: it is held (as a
:class:`HeldError`) *before* the event that follows it, goes out just before that event,
is replayed by an ``attach`` whose ``after`` is below that event, and is forgotten with the
``ack`` of that event. So it reaches OCP whether or not a connection is bound, and however
far behind that connection is.

Backpressure: the outbox is bounded (``max_held``). While it is full the actor does not
poll Salesforce for more, so Salesforce keeps the agent's messages instead of bridged.

The log: each step of the chat's life that a fact reports (queued, agent joined, transferred,
ended) is one info line from :meth:`Chat.emit`, with the chat id and never a message text,
so every backend logs the same steps the same way.

Durability: an event is sent to OCP only once it is *durable*, i.e. once the chat's
snapshot that holds it has been committed to the state store (``durable_seq``). A restart
then never has to invent again an event that OCP has already seen: whatever OCP saw, the
next process holds, with the same ``seq``.

What a chat holds in numbers (its events, its held errors, its inbox, the ids of its messages
not yet answered) is kept item by item (the store's *kept lists*): :meth:`Chat.kept_changes`
gives what was added and what is gone since the last save, so a save costs what changed, not
what the chat holds.
"""

from __future__ import annotations

__all__ = ["BACKEND_LISTS", "Chat", "ChatRecord", "ChatSnapshot", "ChatStatic", "Command",
           "HeldError", "KeptLists", "Link", "released"]

import logging
import time
from collections.abc import Callable, Sequence
from typing import Protocol, TypeAlias

import msgspec

from bridged._lists import appended
from bridged._log import log_event
from bridged.chats import facts
from bridged.chats.mailbox import LoadMeter, Mailbox
from bridged.chats.texts import render
from bridged.config.webchat import AnyWebchat
from bridged.ocp import envelopes as env

Command: TypeAlias = env.Message | env.Typing
# The chat's kept lists (see bridged.state.sqlite); a backend numbers its own from
# BACKEND_LISTS up. Keys: an event's seq; the n-th command put in the inbox; the n-th
# message id taken in; a held error's serial.
_EVENTS, _INBOX, _PENDING, _ERRORS = 1, 2, 3, 4
BACKEND_LISTS = 16
KeptLists: TypeAlias = dict[int, list[tuple[int, bytes]]]  # list -> [(key, data)] by key

log = logging.getLogger("bridged.chats.chat")


class ChatStatic(msgspec.Struct, frozen=True, kw_only=True):
    """What never changes about a kept chat: written once, with its first snapshot."""

    version: int = 1
    id: str
    webchat: AnyWebchat
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


class HeldError(msgspec.Struct, frozen=True, kw_only=True, gc=False):
    """An ``error`` held with a chat's events: it goes out right before event ``before``.

    ``serial`` numbers the chat's held errors (1, 2, ...) for the writer's cursor; it never
    goes on the wire.
    """

    serial: int
    before: int
    error: env.Error


class ChatSnapshot(msgspec.Struct, frozen=True, kw_only=True, gc=False):
    """What changes about a chat, as of one instant (the delivered ids are kept apart).

    The events, held errors, inbox and pending ids are kept lists of their own; the fields of
    those names hold them only in records written before (version 1), read on an upgrade.
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
    errors: list[HeldError] = []


class ChatRecord(msgspec.Struct, frozen=True, kw_only=True, gc=False):
    """A kept chat's changing part: the shared snapshot and the backend's (opaque here)."""

    version: int = 2  # 1: the events, errors, inbox and pending ids inline in ``chat``
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
_error_decoder = msgspec.msgpack.Decoder(HeldError)


class Link(Protocol):
    """What a chat (and the dispatcher) needs of the connection it is bound to."""

    id: str
    chats: set[str]  # ids of the chats bound to this link

    def schedule(self, chat: Chat) -> None:
        """The chat has events (or held errors) this link has not sent yet."""


class Chat:
    """The shared state of one live (or just ended) chat.

    Args:
        chat_id: OCP's id of the chat.
        webchat: the effective webchat configuration.
        start: the ``start`` envelope that began it.
        inbox_size: bound of the visitor's command inbox.
        max_held: bound of the events held for replay.
    """

    # Slots, not an instance dict: one per chat, and a class of more than 30 attributes
    # gets no key-sharing dict (about 1.6 KiB each here).
    __slots__ = ("__weakref__", "_inbox_puts", "_kept_error", "_kept_error_from", "_kept_from",
                 "_kept_inbox", "_kept_inbox_from", "_kept_seq", "_pending_added",
                 "_pending_dropped", "_pending_keys", "_pending_next", "agent", "bind_epoch",
                 "created", "delivered_ids", "durable_seq", "end_requested", "errors_sent",
                 "finished", "held", "held_errors", "id", "inbox", "last_activity", "link",
                 "load", "max_held", "new_delivered", "next_error", "next_seq", "on_event",
                 "on_finished", "pending_ids", "persistent", "queue_position", "release_wanted",
                 "released", "routing_status", "salesforce_id", "sent_upto", "start", "state",
                 "waker", "webchat")

    def __init__(self, chat_id: str, webchat: AnyWebchat, start: env.Start, *,
                 inbox_size: int, max_held: int) -> None:
        self.id = chat_id
        self.webchat = webchat
        self.start = start
        self.created = time.time()
        self.last_activity = self.created
        self.inbox: Mailbox[Command] = Mailbox(inbox_size, on_put=self._put)
        self._inbox_puts = 0  # commands ever put in the inbox: the next one's key
        self.max_held = max_held
        # Lists, not deques: most chats hold nothing, and an empty deque takes 760 bytes.
        self.held: list[env.ChatEvent] = []
        self.next_seq = 1
        self.durable_seq = 0  # events up to here are in the state store
        self.persistent = True  # False: no store, every event is durable at once
        self.link: Link | None = None
        self.sent_upto = 0  # the highest seq the bound link has written
        self.held_errors: list[HeldError] = []
        self.next_error = 1  # serial of the next held error
        self.errors_sent = 0  # the highest serial of a held error the bound link has written
        self.bind_epoch = 0  # +1 at every bind, so a writer can tell it was rebound
        self.end_requested: facts.Ended | None = None
        self.finished = False
        # Several nodes: the node asks the actor to let go of the chat at its next safe
        # point (nothing in flight to Salesforce, everything committed); the actor then stops
        # and says so with ``released``, and another node goes on with the chat.
        self.release_wanted = False
        self.released = False
        self.state = "starting"  # for the admin view and metrics; set by the actor
        self.agent: str | None = None
        self.queue_position: int | None = None
        # For the admin view, set by the actor: Salesforce's id of the chat (Enhanced Chat's
        # conversation id) and its last routing news; never a secret.
        self.salesforce_id: str | None = None
        self.routing_status: str | None = None
        # A dict, not a set: an empty set takes 216 bytes, an empty dict 64, and a dict of
        # many ids is smaller than a set of them too.
        self.delivered_ids: dict[str, None] = {}
        # Delivered since the last save (bridged._lists: () while empty).
        self.new_delivered: list[str] | tuple[()] = ()
        self.pending_ids: dict[str, None] = {}  # taken in, not yet answered; in order
        self.waker: Callable[[], None] | None = None
        self.on_finished: Callable[[Chat, facts.Ended], None] | None = None
        self.on_event: Callable[[env.ChatEvent], None] | None = None
        # Counts this chat's messages not yet answered, as its bound link's.
        self.load: LoadMeter | None = None
        # What the store holds of the kept lists (see kept_changes): events from _kept_from
        # to _kept_seq, errors from _kept_error_from to _kept_error, inbox keys from
        # _kept_inbox_from below _kept_inbox, and a key per pending id, with the ones added
        # and dropped since the last save.
        self._kept_from, self._kept_seq = 1, 0
        self._kept_error_from, self._kept_error = 1, 0
        self._kept_inbox_from = self._kept_inbox = 0
        self._pending_keys: dict[str, int] = {}
        self._pending_next = 0
        self._pending_added: dict[int, str] = {}
        self._pending_dropped: list[int] | tuple[()] = ()  # bridged._lists

    # --- the actor's side -------------------------------------------------------------

    def wake(self) -> None:
        """Tell the actor that something changed (a command, an ack, an end)."""
        if self.waker is not None:
            self.waker()

    def _put(self) -> None:
        self._inbox_puts += 1
        self.wake()

    def request_release(self) -> None:
        """Ask the actor to stop at its next safe point, sending Salesforce nothing more."""
        if not self.finished:
            self.release_wanted = True
            self.wake()

    def cancel_release(self) -> None:
        """The chat stays here after all: the actor goes on as before."""
        if not self.released:
            self.release_wanted = False
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
            self._hold_error(env.Error(code="unknown_chat", detail=fact.detail, chat=self.id,
                                       ref=fact.id))
            return
        if isinstance(fact, facts.Delivered):
            self._settle(fact.id)
            if fact.id not in self.delivered_ids:
                self.delivered_ids[fact.id] = None
                self.new_delivered = appended(self.new_delivered, fact.id)
        elif isinstance(fact, (facts.AgentJoined, facts.Transferred)):
            self.agent = fact.agent
            self.queue_position = None
        elif isinstance(fact, facts.Queued):
            self.queue_position = fact.position
        event = render(fact, self.id, self.next_seq, self.webchat)
        self._log_step(fact, event.seq)
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

    def _log_step(self, fact: facts.Fact, seq: int) -> None:
        """One info line for a step of the chat's life; texts (agent's or ours) never."""
        match fact:
            case facts.Queued():
                log_event(log, logging.INFO, "chat_queued", chat=self.id, seq=seq,
                          position=fact.position, wait_s=fact.wait_s)
            case facts.AgentJoined():
                log_event(log, logging.INFO, "agent_joined", chat=self.id, seq=seq,
                          agent=fact.agent)
            case facts.Transferred():
                log_event(log, logging.INFO, "chat_transferred", chat=self.id, seq=seq,
                          agent=fact.agent)
            case facts.Ended():
                log_event(log, logging.INFO, "chat_ended", chat=self.id, seq=seq,
                          reason=fact.reason, detail=fact.detail)

    def _hold_error(self, error: env.Error) -> None:
        """Hold ``error`` before the next event, for the bound link and later attaches."""
        self.held_errors.append(HeldError(serial=self.next_error, before=self.next_seq,
                                          error=error))
        self.next_error += 1
        if self.link is not None:
            self.link.schedule(self)
        self.wake()  # the actor saves it with the chat

    def accept(self, message_id: str) -> None:
        """A visitor message was taken in; it counts as load until answered."""
        if message_id not in self.pending_ids:
            self.pending_ids[message_id] = None
            if message_id not in self._pending_keys:  # else kept already (adopted)
                key = self._pending_keys[message_id] = self._pending_next
                self._pending_next += 1
                self._pending_added[key] = message_id
            if self.load is not None:
                self.load.add(self._owner())

    def _settle(self, message_id: str) -> None:
        if message_id in self.pending_ids:
            del self.pending_ids[message_id]
            key = self._pending_keys.pop(message_id, None)
            if key is not None and self._pending_added.pop(key, None) is None:
                self._pending_dropped = appended(self._pending_dropped, key)
            if not self.pending_ids:
                # Emptied dicts keep their tables (a few hundred bytes), held by every chat
                # between two messages: new ones instead.
                self.pending_ids = {}
                if not self._pending_keys:
                    self._pending_keys = {}
            if self.load is not None:
                self.load.remove(self._owner())

    def _owner(self) -> str | None:
        """Whose load this chat's unanswered messages are: its connection's, if bound."""
        return self.link.id if self.link is not None else None

    def release_load(self) -> None:
        """The chat is gone from this process: its unanswered messages stop counting."""
        if self.load is not None and self.pending_ids:
            self.load.remove(self._owner(), len(self.pending_ids))
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

        Events and errors acknowledged and commands taken since are dropped (as ranges of
        keys), new ones added; each item is encoded once, when it is new.
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
        # Held errors: serials from held_errors[0].serial to next_error - 1, the same way.
        first = self.held_errors[0].serial if self.held_errors else self.next_error
        if first > self._kept_error_from:
            if self._kept_error >= self._kept_error_from:
                drops.append((_ERRORS, self._kept_error_from, min(first - 1, self._kept_error)))
            self._kept_error_from = first
        last = self.next_error - 1
        if last > self._kept_error:
            new = last - max(self._kept_error + 1, first) + 1
            for index in range(-new, 0):
                held = self.held_errors[index]
                items.append((_ERRORS, held.serial, _item_encoder.encode(held)))
            self._kept_error = last
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
            self._pending_dropped = ()
        if self._pending_added:
            items.extend((_PENDING, key, message_id.encode())
                         for key, message_id in self._pending_added.items())
            self._pending_added = {}

    def take_new_delivered(self) -> Sequence[str]:
        """The ids delivered since the last call (appended to the store with a save)."""
        new, self.new_delivered = self.new_delivered, ()
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
        kept_errors = lists.get(_ERRORS, [])
        kept_inbox = lists.get(_INBOX, [])
        kept_pending = lists.get(_PENDING, [])
        inbox = [*snapshot.inbox, *(_command_decoder.decode(data) for _, data in kept_inbox)]
        chat = cls(static.id, static.webchat, static.start,
                   inbox_size=max(inbox_size, len(inbox)), max_held=max_held)
        chat.created = static.created
        chat.next_seq = snapshot.next_seq
        chat.durable_seq = snapshot.next_seq - 1
        # What came from the kept lists is in the store; what came inline (version 1) is
        # written anew with the next save.
        events = {event.seq: event for event in snapshot.held}
        events.update((key, _event_decoder.decode(data)) for key, data in kept_events)
        chat.held.extend(events[seq] for seq in sorted(events))
        if kept_events:
            chat._kept_from, chat._kept_seq = kept_events[0][0], kept_events[-1][0]
        else:
            chat._kept_from = chat.next_seq - len(chat.held)
            chat._kept_seq = chat._kept_from - 1
        errors = {held.serial: held for held in snapshot.errors}
        errors.update((key, _error_decoder.decode(data)) for key, data in kept_errors)
        chat.held_errors.extend(errors[serial] for serial in sorted(errors))
        if chat.held_errors:
            chat.next_error = chat.held_errors[-1].serial + 1
        if kept_errors:
            chat._kept_error_from, chat._kept_error = kept_errors[0][0], kept_errors[-1][0]
        else:
            chat._kept_error_from = chat.next_error - len(chat.held_errors)
            chat._kept_error = chat._kept_error_from - 1
        chat.delivered_ids.update(dict.fromkeys(delivered))
        for key, data in kept_pending:
            message_id = data.decode()
            chat.pending_ids[message_id] = None
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
        """Bind to ``link`` and have it send every held event with ``seq > after``.

        And every held error that comes before such an event: OCP, having seen event
        ``after``, has seen what came before it.
        """
        if self.load is not None:
            self.load.move(self._owner(), link.id, len(self.pending_ids))
        self.link = link
        self.bind_epoch += 1
        self.sent_upto = min(after, self.next_seq - 1)
        seen = self.held_errors[0].serial - 1 if self.held_errors else self.next_error - 1
        for held in self.held_errors:
            if held.before > self.sent_upto:
                break
            seen = held.serial
        self.errors_sent = seen
        link.schedule(self)

    def unbind(self, link: Link) -> bool:
        """Forget ``link`` if it is the bound one; ``True`` if it was."""
        if self.link is not link:
            return False
        if self.load is not None:
            self.load.move(link.id, None, len(self.pending_ids))
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
        return self.held[start:stop]

    def outgoing(self, limit: int) -> list[env.ChatEvent | HeldError]:
        """What the bound link writes next, in order: up to ``limit`` events (see
        :meth:`unsent`), each held error just before the event it precedes.

        An error before an event that does not exist yet goes out once every event before
        it has: it does not wait for an event that may never come.
        """
        events = self.unsent(limit)
        errors = [e for e in self.held_errors if e.serial > self.errors_sent]
        if not errors:
            return list(events)
        out: list[env.ChatEvent | HeldError] = []
        position = 0
        for event in events:
            while position < len(errors) and errors[position].before <= event.seq:
                out.append(errors[position])
                position += 1
            out.append(event)
        written = events[-1].seq if events else self.sent_upto
        for held in errors[position:]:
            if held.before > written and not held.before == written + 1 == self.next_seq:
                break
            out.append(held)
        return out

    def ack(self, seq: int) -> None:
        """OCP has processed every event up to ``seq``: forget them, and make room."""
        was_full = not self.has_room()
        gone = 0
        while gone < len(self.held) and self.held[gone].seq <= seq:
            gone += 1
        del self.held[:gone]  # one move of what is left, however many went
        gone = 0
        while gone < len(self.held_errors) and self.held_errors[gone].before <= seq:
            gone += 1
        del self.held_errors[:gone]
        if was_full and self.has_room():
            self.wake()

    def request_end(self, reason: facts.EndReason, detail: str = "") -> None:
        """Ask the actor to end the chat toward Salesforce, then report ``reason``."""
        if self.end_requested is None and not self.finished:
            self.end_requested = facts.Ended(reason=reason, detail=detail)
            self.wake()


def released(chat: Chat) -> None:
    """An actor stops at a safe point, as asked (:meth:`Chat.request_release`): say so.

    The one hook both backends' actors share: each calls it, then returns, once nothing is
    in flight to Salesforce and everything its session did is committed.
    """
    chat.released = True
    log_event(log, logging.INFO, "chat_released", chat=chat.id, state=chat.state,
              next_seq=chat.next_seq)
