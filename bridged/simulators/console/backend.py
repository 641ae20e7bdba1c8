"""What the agent console needs from a simulator: the backend-neutral interface. Pure.

The console (:mod:`.server`) knows conversations only as :class:`Conversation` values and
acts on them only through a :class:`ConsoleBackend`; it checks every action against the
conversation's state before it calls the backend, so an adapter only translates.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Iterable
from typing import Literal, Protocol

import msgspec

__all__ = [
    "ACTIVE",
    "ENDED",
    "WAITING",
    "ActionRefused",
    "ConsoleBackend",
    "Conversation",
    "Line",
    "State",
    "agent_user_id",
]

State = Literal["waiting", "active", "ended"]
WAITING: State = "waiting"  # the visitor waits for an agent to accept the chat
ACTIVE: State = "active"  # an agent accepted it; the console can answer, transfer, end
ENDED: State = "ended"  # over (or its end is on the way to the visitor)


class Line(msgspec.Struct, frozen=True, kw_only=True):
    """One message of a conversation: ``side`` is ``visitor`` or ``agent``."""

    side: Literal["visitor", "agent"]
    name: str
    text: str


class Conversation(msgspec.Struct, frozen=True, kw_only=True):
    """One chat as the console shows it.

    Attributes:
        id: The simulator's id of the chat (unique within its backend).
        state: :data:`WAITING`, :data:`ACTIVE` or :data:`ENDED`.
        visitor: The visitor's display name.
        since: When the visitor asked for an agent (Unix time, seconds).
        agent: The agent on the chat now (None while waiting).
        lines: The messages both ways, oldest first (the latest ones only, bounded).
        visitor_typing: The visitor is typing now.
        agent_typing: The agent's typing indicator is on (the console set it).
        ended: Why it ended, in words, once ``state`` is :data:`ENDED`.
        details: What the visitor gave before the chat (pre-chat fields: label, value).
    """

    id: str
    state: State
    visitor: str
    since: float
    agent: str | None = None
    lines: tuple[Line, ...] = ()
    visitor_typing: bool = False
    agent_typing: bool = False
    ended: str | None = None
    details: tuple[tuple[str, str], ...] = ()


class ActionRefused(Exception):
    """A backend could not carry an action out; ``status`` is the HTTP status to answer."""

    def __init__(self, message: str, status: int = 409) -> None:
        super().__init__(message)
        self.status = status


class ConsoleBackend(Protocol):
    """One simulator as the agent console drives it (see the package docstring)."""

    key: str
    """A short name, unique within a console, used in URLs (``liveagent``, ``messaging``)."""

    title: str
    """What the page calls it (``Live Agent``, ``Enhanced Chat``)."""

    def conversations(self) -> Iterable[Conversation]:
        """Every chat the console may show: waiting, active, and ended ones still kept."""
        ...

    def conversation(self, id: str) -> Conversation | None:
        """One chat, or None when the simulator does not know it (any more)."""
        ...

    def accept(self, id: str, agent: str) -> None:
        """Agent ``agent`` accepts the waiting chat: the visitor is told that they joined."""
        ...

    def say(self, id: str, text: str) -> None:
        """The agent says ``text`` (and stops typing, if they were)."""
        ...

    def typing(self, id: str, active: bool) -> None:
        """The agent's typing indicator goes on or off."""
        ...

    def transfer(self, id: str, agent: str) -> None:
        """The chat moves to agent ``agent``: the visitor is told so."""
        ...

    def end(self, id: str) -> None:
        """The agent ends the chat."""
        ...

    def watch(self, changed: Callable[[str], None]) -> None:
        """From now on, call ``changed(id)`` after anything about a chat changed (or it was
        forgotten); at once, from the simulator's own loop, without raising."""
        ...


def agent_user_id(name: str) -> str:
    """A stable made-up Salesforce user id for an agent name (prefix 005, 15 characters)."""
    return f"005{zlib.crc32(name.encode()):012d}"
