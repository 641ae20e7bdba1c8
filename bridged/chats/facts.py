"""What a Salesforce backend reports about a chat, in backend-neutral terms.

A backend (legacy Live Agent today, Enhanced Chat later) turns its own protocol into these
facts; the chat layer numbers them, renders them with the webchat texts and relays them to
OCP. Nothing here knows about Live Agent or about the wire to OCP.
"""

from __future__ import annotations

__all__ = [
    "AgentJoined",
    "AgentMessage",
    "AgentTyping",
    "Delivered",
    "EndReason",
    "Ended",
    "Fact",
    "Queued",
    "Transferred",
    "Undelivered",
]

from typing import Literal, TypeAlias

import msgspec

EndReason: TypeAlias = Literal["agent", "client", "no_agent", "failed", "detached"]


class Queued(msgspec.Struct, frozen=True, kw_only=True, gc=False):
    """The request waits for an agent; ``None`` where Salesforce gave no figure."""

    position: int | None
    wait_s: int | None


class AgentJoined(msgspec.Struct, frozen=True, kw_only=True, gc=False):
    agent: str


class AgentMessage(msgspec.Struct, frozen=True, kw_only=True, gc=False):
    agent: str
    text: str


class AgentTyping(msgspec.Struct, frozen=True, kw_only=True, gc=False):
    active: bool


class Transferred(msgspec.Struct, frozen=True, kw_only=True, gc=False):
    agent: str


class Delivered(msgspec.Struct, frozen=True, kw_only=True, gc=False):
    """Salesforce accepted the visitor's message ``id``."""

    id: str


class Undelivered(msgspec.Struct, frozen=True, kw_only=True, gc=False):
    """The visitor's message ``id`` will never reach Salesforce (the chat ended first)."""

    id: str
    detail: str


class Ended(msgspec.Struct, frozen=True, kw_only=True, gc=False):
    """The chat is over. ``detail`` says why, for ``failed`` (shown to the visitor)."""

    reason: EndReason
    detail: str = ""


Fact: TypeAlias = (
    Queued
    | AgentJoined
    | AgentMessage
    | AgentTyping
    | Transferred
    | Delivered
    | Undelivered
    | Ended
)
