"""The agent console's adapter for the Enhanced Chat simulator (:mod:`..messaging`).

The console shows the conversations of the deployments whose script is ``manual``
(``Sim_Manual``, and any name ``MessagingOptions.deployments`` maps to that kind): routed to
the queue, and then nobody joins until a person does, here or over the control API. Every
other deployment has a scripted agent of its own. So the Enhanced Chat side needs no
deployment of its own for the console, as the Live Agent side needs its console button
(its manual button has an agent that joins by itself).

The actions are the simulator's agent actions (``agent_joins``, ``agent_says``,
``agent_typing``, ``agent_transfers``, ``agent_ends``), so the visitor's stream gets exactly
what the control API would send: accepting is the ``PARTICIPANT_CHANGED`` add (and the
session goes Active), a transfer is remove, ``RoutingResult`` Transfer, add, and ending is
what the strict simulator does when an agent ends the session (remove, session Ended; the
conversation stays open, and the visitor may start a new session, which waits here again).

The messages are read from the conversation's transcript; the typing indicators, which are
events only, are tracked here from the simulator's watcher hook (``Engine.watchers``,
called with each entry as it goes out).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

from ..messaging import Engine, SimulatorError, UnknownConversation
from ..messaging.deployments import MANUAL
from ..messaging.entries import GUEST_NAME, Entry
from ..messaging.model import Conversation as Chat
from .backend import ACTIVE, ENDED, WAITING, ActionRefused, Conversation, Line, agent_user_id

__all__ = ["LINES_MAX", "MessagingConsole"]

# Most messages a conversation shows (the latest).
LINES_MAX = 500

# The pre-chat fields (routingAttributes) that name the visitor, first match wins
# (MESSAGING.md 2.4: Salesforce's standard fields, as Botpress sends them, then plain ones).
_NAME_FIELDS = (("_firstName", "_lastName"), ("firstName", "lastName"), ("Name", ""))

# sessionEndedByRole -> what the console says.
_ENDED_BY = {
    "Agent": "the agent ended the chat",
    "EndUser": "the visitor ended the chat",
    "System": "Salesforce ended the chat",
}

_TYPING = {"TypingStartedIndicator": True, "TypingStoppedIndicator": False}


class _Tracked:
    """What the adapter knows of one conversation beyond its records (typing is events
    only), for its current messaging session."""

    __slots__ = ("agent_typing", "session", "since", "visitor_typing")

    def __init__(self, session: int, since: float) -> None:
        self.session = session
        self.since = since
        self.visitor_typing = False
        self.agent_typing = False


class MessagingConsole:
    """The Enhanced Chat simulator as a :class:`~.backend.ConsoleBackend`."""

    key = "messaging"
    title = "Enhanced Chat"

    def __init__(self, simulator: Engine) -> None:
        self.simulator = simulator
        self._tracked: dict[str, _Tracked] = {}
        self._listeners: list[Callable[[str], None]] = []
        simulator.watchers.append(self._changed)

    # ----------------------------------------------------------------------------------
    # Reading

    def conversations(self) -> Iterator[Conversation]:
        """Every conversation of a manual deployment the simulator still keeps."""
        for chat in list(self.simulator.conversations.values()):
            if chat.kind == MANUAL:
                yield self._view(chat)

    def conversation(self, id: str) -> Conversation | None:
        """One conversation of a manual deployment, or None."""
        chat = self.simulator.conversations.get(id)
        if chat is None or chat.kind != MANUAL:
            return None
        return self._view(chat)

    def _view(self, chat: Chat) -> Conversation:
        tracked = self._track(chat)
        if not chat.has_session:
            state, ended = ENDED, self._ended(chat)
        elif chat.agent is None:  # not accepted yet, or the agent left (control API)
            state, ended = WAITING, None
        else:
            state, ended = ACTIVE, None
        visitor = _visitor_name(chat.routing_attributes)
        lines = [
            _line(entry, visitor) for entry in chat.entries if entry.entry_type == "Message"
        ]
        return Conversation(
            id=chat.id,
            state=state,
            visitor=visitor,
            since=tracked.since,
            agent=chat.agent.name if state == ACTIVE and chat.agent is not None else None,
            lines=tuple(lines[-LINES_MAX:]),
            visitor_typing=tracked.visitor_typing and state == ACTIVE,
            agent_typing=tracked.agent_typing and state == ACTIVE,
            ended=ended,
            details=tuple((str(k), str(v)) for k, v in (chat.routing_attributes or {}).items()),
        )

    @staticmethod
    def _ended(chat: Chat) -> str:
        if not chat.is_open:
            return "the visitor closed the conversation"
        for entry in reversed(chat.entries):
            if entry.entry_type == "SessionStatusChanged":
                role = str(entry.payload.get("sessionEndedByRole", ""))
                return _ENDED_BY.get(role, "the messaging session ended")
        return "the messaging session ended"

    # ----------------------------------------------------------------------------------
    # Watching

    def watch(self, changed: Callable[[str], None]) -> None:
        """Call ``changed(conversation_id)`` after each change to a console conversation."""
        self._listeners.append(changed)

    def _track(self, chat: Chat) -> _Tracked:
        tracked = self._tracked.get(chat.id)
        if tracked is None or tracked.session != chat.session_number:
            # Seen first at create (the first session) or at a new session's first message:
            # the visitor asks for an agent now.
            since = chat.started_ms / 1000 if chat.session_number == 1 else time.time()
            tracked = self._tracked[chat.id] = _Tracked(chat.session_number, since)
        return tracked

    def _changed(self, conversation_id: str, entry: Entry | None) -> None:
        chat = self.simulator.conversations.get(conversation_id)
        if chat is None:  # forgotten by the simulator
            if self._tracked.pop(conversation_id, None) is not None:
                self._tell(conversation_id)
            return
        if chat.kind != MANUAL:
            return
        tracked = self._track(chat)
        if entry is not None:
            role = entry.sender.get("role")
            if entry.entry_type in _TYPING:
                if role == "EndUser":
                    tracked.visitor_typing = _TYPING[entry.entry_type]
                elif role == "Agent":
                    tracked.agent_typing = _TYPING[entry.entry_type]
            elif entry.entry_type == "Message" and role == "EndUser":
                tracked.visitor_typing = False  # a message ends the visitor's typing
            elif entry.entry_type in ("ParticipantChanged", "SessionStatusChanged"):
                tracked.agent_typing = False  # the agent who typed is gone
        self._tell(conversation_id)

    def _tell(self, conversation_id: str) -> None:
        for listener in self._listeners:
            listener(conversation_id)

    # ----------------------------------------------------------------------------------
    # Acting (the console checked the conversation's state first)

    def accept(self, id: str, agent: str) -> None:
        """PARTICIPANT_CHANGED add of ``agent`` (and the session goes Active)."""
        self._act(lambda: self.simulator.agent_joins(id, agent, agent_user_id(agent)))

    def say(self, id: str, text: str) -> None:
        """An agent CONVERSATION_MESSAGE, then typing stopped if the agent was typing."""
        self._act(lambda: self.simulator.agent_says(id, text))
        tracked = self._tracked.get(id)
        if tracked is not None and tracked.agent_typing:
            self.typing(id, False)

    def typing(self, id: str, active: bool) -> None:
        """The agent's typing started or stopped indicator."""
        self._act(lambda: self.simulator.agent_typing(id, active))

    def transfer(self, id: str, agent: str) -> None:
        """Remove, RoutingResult Transfer, add of ``agent``."""
        tracked = self._tracked.get(id)
        if tracked is not None and tracked.agent_typing:
            self.typing(id, False)  # the agent who leaves stops typing
        self._act(lambda: self.simulator.agent_transfers(id, agent, agent_user_id(agent)))

    def end(self, id: str) -> None:
        """The agent ends the session: remove, SESSION_STATUS_CHANGED Ended."""
        self._act(lambda: self.simulator.agent_ends(id))

    @staticmethod
    def _act(action: Callable[[], object]) -> None:
        try:
            action()
        except UnknownConversation as exc:
            raise ActionRefused(str(exc), 404) from None
        except SimulatorError as exc:  # closed, session over, no agent / one already on
            raise ActionRefused(str(exc), 409) from None


def _visitor_name(attributes: dict[str, Any] | None) -> str:
    """The visitor's name from the pre-chat fields, else what the service calls them."""
    attributes = attributes or {}
    for first, last in _NAME_FIELDS:
        parts = [str(attributes.get(name, "")).strip() for name in (first, last) if name]
        name = " ".join(part for part in parts if part)
        if name:
            return name
    return GUEST_NAME


def _line(entry: Entry, visitor: str) -> Line:
    """One Message entry as a console line (the file names of an attachment in brackets)."""
    content: dict[str, Any] = entry.payload.get("abstractMessage", {}).get("staticContent", {})
    text = str(content.get("text", ""))
    files = " ".join(f"[{a.get('name', 'file')}]" for a in content.get("attachments", ()))
    text = f"{text} {files}".strip() if files else text
    if entry.sender.get("role") == "EndUser":
        return Line(side="visitor", name=visitor, text=text)
    return Line(side="agent", name=entry.sender_display_name, text=text)
