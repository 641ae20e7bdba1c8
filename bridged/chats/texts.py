"""Facts about a chat, rendered as the events OCP receives, with the webchat's texts.

PROTOCOL.md section 2 fixes the texts: ``queued.text`` is ``position_message`` followed by
the position, then, when an estimate is known, a line with ``estimated_time_message``
followed by the estimate; ``ended.text`` depends on the reason.
"""

from __future__ import annotations

__all__ = ["format_wait", "queue_text", "render"]

import math

import msgspec

from bridged.chats import facts
from bridged.config.webchat import AnyWebchat
from bridged.ocp import envelopes as env


def format_wait(seconds: int) -> str:
    """An estimated wait in whole minutes, rounded up ("3 min").

    Minutes and the unit "min" read the same in most languages a contact centre serves,
    which an English "3 minutes" would not.
    """
    return f"{max(1, math.ceil(seconds / 60))} min"


def queue_text(webchat: AnyWebchat, position: int | None, wait_s: int | None) -> str:
    """The text of a ``queued`` event. Parts whose figure Salesforce did not give are left out."""
    lines = []
    if position is not None:
        lines.append(f"{webchat.position_message} {position}")
    if wait_s is not None:
        lines.append(f"{webchat.estimated_time_message} {format_wait(wait_s)}")
    return "\n".join(lines)


def _ended_text(webchat: AnyWebchat, ended: facts.Ended) -> str:
    if ended.reason == "no_agent":
        return webchat.no_agent_available_message
    if ended.reason == "failed":
        return f"{webchat.chat_request_failed_message} {ended.detail}".rstrip()
    return webchat.agent_session_ended_message


def render(fact: facts.Fact, chat: str, seq: int, webchat: AnyWebchat) -> env.ChatEvent:
    """The event for ``fact``, numbered ``seq``.

    Raises:
        TypeError: ``fact`` is not a chat event (``Undelivered`` becomes an ``error``).
    """
    match fact:
        case facts.Queued():
            return env.Queued(chat=chat, seq=seq, position=fact.position, wait_s=fact.wait_s,
                              text=queue_text(webchat, fact.position, fact.wait_s))
        case facts.AgentJoined():
            return env.AgentJoined(chat=chat, seq=seq, agent=fact.agent)
        case facts.AgentMessage():
            return env.AgentMessage(chat=chat, seq=seq, agent=fact.agent, text=fact.text)
        case facts.AgentTyping():
            return env.AgentTyping(chat=chat, seq=seq, active=fact.active)
        case facts.Transferred():
            return env.Transferred(chat=chat, seq=seq, agent=fact.agent)
        case facts.Delivered():
            return env.Delivered(chat=chat, seq=seq, id=fact.id)
        case facts.Ended():
            return env.Ended(chat=chat, seq=seq, reason=fact.reason,
                             text=_ended_text(webchat, fact), detail=fact.detail or msgspec.UNSET)
    raise TypeError(f"{type(fact).__name__} is not a chat event")
