"""The dispatcher: routes OCP's envelopes from connections to chats, and back.

Everything here is synchronous: a decoded envelope is applied in one step, so no other
task can see a half-done ``start`` or ``attach``. Commands that must reach Salesforce
(``message``, ``typing``) go into the chat's bounded inbox with ``put_nowait``: many chats
share one connection, and waiting on one chat's full inbox would stall them all, so a
full inbox answers ``busy`` instead. ``end``, ``attach`` and ``ack`` only change state and
never wait.

A chat is *live* from ``start`` until its ``ended`` event; then its id is free again, but
the chat is kept as *finished* until OCP has acknowledged the ``ended`` event (or the
detach grace runs out), so that an ``attach`` after a reconnect can still replay it.
"""

from __future__ import annotations

__all__ = ["Dispatcher"]

import asyncio
import logging
from collections.abc import Callable

from bridged._log import log_event
from bridged.chats import facts
from bridged.chats.chat import Chat, Link
from bridged.chats.mailbox import LoadMeter
from bridged.chats.supervisor import ChatSupervisor
from bridged.config.file import Config
from bridged.config.webchat import resolve_webchat
from bridged.errors import (
    AtCapacity,
    BadWebchatConfig,
    Busy,
    ChatExists,
    MailboxFull,
    NotAttached,
    Refused,
    UnknownChat,
)
from bridged.ocp import envelopes as env

log = logging.getLogger("bridged.chats.dispatcher")


class Dispatcher:
    """Applies envelopes from OCP to the chats.

    Args:
        config: the daemon's config (server limits, allowed hosts, profiles).
        supervisor: starts each chat's actor.
        on_chat_event: called for every event a chat emits (metrics).
    """

    def __init__(self, config: Config, supervisor: ChatSupervisor,
                 on_chat_event: Callable[[env.ChatEvent], None] | None = None) -> None:
        self.config = config
        self._supervisor = supervisor
        self._on_chat_event = on_chat_event
        self.live: dict[str, Chat] = {}
        self.finished: dict[str, Chat] = {}
        self._detach_timers: dict[int, asyncio.TimerHandle] = {}
        self.draining = False
        self.on_chat_started: Callable[[], None] | None = None
        self.on_forget: Callable[[str], None] | None = None
        # Whether one more chat fits in the open-file limit (set by the daemon).
        self.fds_left: Callable[[], bool] | None = None
        # Several nodes: whether this node may take new chats now (it holds its lease), and
        # who serves an ``attach`` for a chat this node does not hold (True: it does).
        self.accepting: Callable[[], bool] | None = None
        self.on_unknown_attach: Callable[[Link, env.Attach], bool] | None = None
        # Several nodes: who checks a ``start`` against the cluster's chats first (True: it
        # does, and calls start_checked), and who hears of what a link sends for a chat
        # whose attach is being settled (it forwards it to the chat's holder).
        self.on_start: Callable[[Link, env.Start], bool] | None = None
        self.on_awaiting: Callable[[Link, env.Inbound], None] | None = None
        # (link id, chat) → what that link sent for the chat while its attach is settled
        # elsewhere; applied, in order, once it is (see settle_attach).
        self._awaiting: dict[tuple[str, str], list[env.Inbound]] = {}
        server = config.server
        self.load = LoadMeter(server.overload_high, server.overload_low)

    # --- entry points -------------------------------------------------------------------

    def handle(self, link: Link, envelope: env.Inbound) -> None:
        """Apply one envelope from ``link``.

        Raises:
            Refused: the envelope is refused; the subclass names the wire error code.
        """
        if self._awaiting and not isinstance(envelope, env.Start | env.Attach):
            waiting = self._awaiting.get((link.id, envelope.chat))
            if waiting is not None:
                if len(waiting) >= self.config.server.mailbox_size:
                    raise Busy("the chat is being attached and its queue is full; send this"
                               " again later", chat=envelope.chat, ref=_ref(envelope))
                waiting.append(envelope)
                if self.on_awaiting is not None:
                    self.on_awaiting(link, envelope)
                return
        match envelope:
            case env.Start():
                self._start(link, envelope)
            case env.Message():
                self._message(link, envelope)
            case env.Typing():
                chat = self._bound_live(link, envelope.chat, "typing")
                try:
                    chat.inbox.put_nowait(envelope)
                except MailboxFull:
                    raise Busy("the chat's queue is full; send the typing state again later",
                               chat=chat.id, ref="typing") from None
            case env.End():
                chat = self._bound_live(link, envelope.chat, "end")
                chat.request_end("client")
            case env.Attach():
                self._attach(link, envelope)
            case env.Ack():
                chat = self._any(envelope.chat, "ack")
                if chat.link is not link:
                    raise NotAttached("the chat is bound to another connection: attach first",
                                      chat=chat.id, ref="ack")
                chat.ack(envelope.seq)
                if chat.finished and not chat.held:
                    self._forget(chat)

    def link_lost(self, link: Link) -> None:
        """A connection closed: its chats go on, detached, for ``detach_grace_s``."""
        grace = self.config.server.detach_grace_s
        loop = asyncio.get_running_loop()
        for chat_id in list(link.chats):
            chat = self.live.get(chat_id) or self.finished.get(chat_id)
            if chat is None or not chat.unbind(link):
                continue
            log_event(log, logging.INFO, "chat_detached", chat=chat.id, link=link.id)
            self._detach_timers[id(chat)] = loop.call_later(grace, self._detach_expired, chat)
        link.chats.clear()

    def reconfigure(self, config: Config) -> None:
        """Use a new config for chats started from now on (SIGHUP)."""
        self.config = config

    # --- envelopes ----------------------------------------------------------------------

    def _start(self, link: Link, start: env.Start, checked: bool = False) -> None:
        server = self.config.server
        if self.draining:
            raise AtCapacity("bridged is shutting down; start the chat on another node",
                             chat=start.chat, ref="start")
        if self.accepting is not None and not self.accepting():
            raise AtCapacity("this node cannot reach the shared store; start the chat on"
                             " another node", chat=start.chat, ref="start")
        if start.chat in self.live:
            raise ChatExists("a live chat has this id", chat=start.chat, ref="start")
        if not checked and self.on_start is not None and self.on_start(link, start):
            # The cluster looks for a live chat of this id on another node first; what
            # this link sends for the chat meanwhile waits, in order (see settle_attach).
            self._awaiting.setdefault((link.id, start.chat), [])
            return
        if len(self.live) >= server.max_chats:
            raise AtCapacity(f"bridged holds server.max_chats ({server.max_chats}) chats",
                             chat=start.chat, ref="start")
        if self.fds_left is not None and not self.fds_left():
            raise AtCapacity("bridged is near its open-file limit (LimitNOFILE)",
                             chat=start.chat, ref="start")
        if len(link.chats) >= server.max_chats_per_connection:
            raise Busy(f"this connection holds server.max_chats_per_connection"
                       f" ({server.max_chats_per_connection}) chats; use another connection",
                       chat=start.chat, ref="start")
        profile = None
        if start.profile is not None:
            profile = self.config.profiles.get(start.profile)
            if profile is None:
                raise BadWebchatConfig(f"profile: no profile named {start.profile!r}",
                                       chat=start.chat, ref="start")
        try:
            webchat = resolve_webchat(profile, start.config, start.ocpvars,
                                      self.config.salesforce.allowed_hosts, start.visitor_name)
        except Refused as exc:
            exc.chat, exc.ref = start.chat, "start"
            raise
        chat = Chat(start.chat, webchat, start, inbox_size=server.mailbox_size,
                    max_held=server.max_held_events)
        try:
            # First, so that a chat is live only with an actor. Its task runs once this
            # envelope is applied: the chat is fully set up by then.
            self._supervisor.spawn(chat)
        except RuntimeError:
            raise AtCapacity("bridged is shutting down; start the chat on another node",
                             chat=start.chat, ref="start") from None
        # A finished chat with the same id is superseded: the id is free again (its actor
        # may still be winding down; it is a task of its own).
        old = self.finished.get(start.chat)
        if old is not None:
            self._forget(old)
        chat.on_finished = self._finished
        chat.on_event = self._on_chat_event
        chat.load = self.load
        self.live[chat.id] = chat
        if self.on_chat_started is not None:
            self.on_chat_started()
        link.chats.add(chat.id)
        chat.bind(link, after=0)
        log_event(log, logging.INFO, "chat_started", chat=chat.id, link=link.id,
                  profile=start.profile or "")

    def _message(self, link: Link, message: env.Message) -> None:
        chat = self._bound_live(link, message.chat, message.id)
        if message.id in chat.delivered_ids:
            # Already accepted by Salesforce: confirm again, never send twice.
            chat.emit(facts.Delivered(id=message.id))
            return
        if message.id in chat.pending_ids:
            return  # the first copy is on its way; its ``delivered`` answers both
        if not self.load.admits(link.id):
            load = self.load
            raise Busy(f"bridged is overloaded (server.overload_high: {load.high} messages not"
                       f" yet answered) and this connection holds {load.held_by(link.id)} of"
                       " them; the message was NOT accepted, send it again later",
                       chat=chat.id, ref=message.id)
        try:
            chat.inbox.put_nowait(message)
        except MailboxFull:
            raise Busy("the chat's queue is full; the message was NOT accepted, send it again"
                       " later", chat=chat.id, ref=message.id) from None
        chat.accept(message.id)

    def _attach(self, link: Link, attach: env.Attach) -> None:
        if (attach.chat not in self.live and attach.chat not in self.finished
                and self.on_unknown_attach is not None
                and self.on_unknown_attach(link, attach)):
            # Another node holds it: the cluster settles it (see ops.cluster); what this
            # link sends for the chat meanwhile waits, in order.
            self._awaiting.setdefault((link.id, attach.chat), [])
            return
        chat = self._any(attach.chat, "attach")
        old = chat.link
        if old is not None and old is not link:
            old.chats.discard(chat.id)
        self._cancel_detach(chat)
        link.chats.add(chat.id)
        chat.bind(link, attach.after)
        log_event(log, logging.INFO, "chat_attached", chat=chat.id, link=link.id,
                  after=attach.after)

    # --- helpers ------------------------------------------------------------------------

    def _any(self, chat_id: str, ref: str) -> Chat:
        chat = self.live.get(chat_id) or self.finished.get(chat_id)
        if chat is None:
            raise UnknownChat("no such live chat", chat=chat_id, ref=ref)
        return chat

    def _bound_live(self, link: Link, chat_id: str, ref: str) -> Chat:
        chat = self.live.get(chat_id)
        if chat is None:
            raise UnknownChat("no such live chat", chat=chat_id, ref=ref)
        if chat.link is not link:
            raise NotAttached("the chat is bound to another connection: attach first",
                              chat=chat_id, ref=ref)
        if chat.end_requested is not None:
            raise UnknownChat("the chat is ending", chat=chat_id, ref=ref)
        return chat

    def _finished(self, chat: Chat, ended: facts.Ended) -> None:
        """A chat emitted ``ended``: free its id, keep its events until acknowledged."""
        if self.live.get(chat.id) is chat:
            del self.live[chat.id]
        chat.release_load()
        if not chat.held:
            self._forget(chat)
            return
        self.finished[chat.id] = chat
        if chat.link is None and id(chat) not in self._detach_timers:
            loop = asyncio.get_running_loop()
            self._detach_timers[id(chat)] = loop.call_later(
                self.config.server.detach_grace_s, self._detach_expired, chat)

    def adopt(self, chat: Chat) -> None:
        """Take in a chat kept across a restart: unbound, waiting for an ``attach``."""
        chat.on_finished = self._finished
        chat.on_event = self._on_chat_event
        if not chat.finished:
            pending, chat.pending_ids = chat.pending_ids, {}
            chat.load = self.load
            for message_id in pending:
                chat.accept(message_id)
        (self.finished if chat.finished else self.live)[chat.id] = chat
        loop = asyncio.get_running_loop()
        self._detach_timers[id(chat)] = loop.call_later(
            self.config.server.detach_grace_s, self._detach_expired, chat)

    def start_checked(self, link: Link, start: env.Start) -> None:
        """Start a chat the cluster found no live chat of (see ``on_start``).

        Raises:
            Refused: as for a ``start`` from a connection.
        """
        self._start(link, start, checked=True)

    def awaiting(self, link: Link, chat_id: str) -> list[env.Inbound]:
        """What ``link`` sent for ``chat_id`` while its attach is settled, in order."""
        return list(self._awaiting.get((link.id, chat_id), ()))

    def forget_awaiting(self, link: Link, chat_id: str, message_id: str) -> None:
        """The chat's holder refused message ``message_id`` (OCP was told): not again."""
        waiting = self._awaiting.get((link.id, chat_id))
        if waiting is not None:
            waiting[:] = [e for e in waiting
                          if not (isinstance(e, env.Message) and e.id == message_id)]

    def apply_forwarded(self, envelope: env.Inbound) -> Refused | None:
        """Apply a command another node forwarded for a chat held here, as from its
        connection; the refusal to send back, if any.

        What cannot be applied here (the chat is not live here, or ending) is left alone:
        the node that forwarded it applies it again once the chat has moved to it, and
        answers it then. Idempotent: a message already taken in is not taken again.
        """
        chat = self.live.get(envelope.chat)
        if isinstance(envelope, env.Ack):
            chat = chat or self.finished.get(envelope.chat)
            if chat is not None:
                chat.ack(envelope.seq)
            return None
        if chat is None or chat.end_requested is not None or chat.finished:
            return None
        match envelope:
            case env.Message():
                if envelope.id in chat.delivered_ids or envelope.id in chat.pending_ids:
                    return None
                try:
                    chat.inbox.put_nowait(envelope)
                except MailboxFull:
                    return Busy("the chat's queue is full; the message was NOT accepted,"
                                " send it again later", chat=chat.id, ref=envelope.id)
                chat.accept(envelope.id)
            case env.Typing():
                try:
                    chat.inbox.put_nowait(envelope)
                except MailboxFull:
                    return Busy("the chat's queue is full; send the typing state again"
                                " later", chat=chat.id, ref="typing")
            case env.End():
                chat.request_end("client")
        return None

    def settle_attach(self, link: Link, chat_id: str) -> list[env.Inbound]:
        """The attach of ``chat_id`` on ``link`` is settled: what the link sent meanwhile."""
        return self._awaiting.pop((link.id, chat_id), [])

    def drop(self, chat_id: str) -> Chat | None:
        """Let go of a chat another node now holds: no end, nothing forgotten in the store."""
        chat = self.live.pop(chat_id, None) or self.finished.pop(chat_id, None)
        if chat is None:
            return None
        chat.release_load()
        self._cancel_detach(chat)
        if chat.link is not None:
            chat.link.chats.discard(chat.id)
        return chat

    def _forget(self, chat: Chat) -> None:
        if self.finished.get(chat.id) is chat:
            del self.finished[chat.id]
        if self.on_forget is not None and chat.id not in self.live:
            self.on_forget(chat.id)
        self._cancel_detach(chat)
        if chat.link is not None:
            chat.link.chats.discard(chat.id)

    def _cancel_detach(self, chat: Chat) -> None:
        timer = self._detach_timers.pop(id(chat), None)
        if timer is not None:
            timer.cancel()

    def _detach_expired(self, chat: Chat) -> None:
        self._detach_timers.pop(id(chat), None)
        if chat.link is not None:
            return
        if chat.finished:
            self._forget(chat)
            return
        log_event(log, logging.INFO, "chat_detach_expired", chat=chat.id)
        chat.request_end("detached")


def _ref(envelope: env.Inbound) -> str:
    """What an ``error`` about ``envelope`` names as its ``ref``."""
    return envelope.id if isinstance(envelope, env.Message) else str(
        envelope.__struct_config__.tag)
