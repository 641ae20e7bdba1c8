"""One simulated conversation and its messaging sessions, as plain state. Pure.

A :class:`Conversation` is made by create conversation and lives until the visitor closes
it (DELETE), which is the only way a conversation ends for an unverified web user
(MESSAGING.md 4.4: an agent ends the *session*, not the conversation). Inside it, one
messaging session at a time::

    create --> session 1: Waiting --agent add--> Active --end--> Ended
                                                                  |
          send with isNewMessagingSession: true  <----------------+  (else 417)
                 --> session 2: Waiting ...

``routingStatus`` (what GET conversation answers, MESSAGING.md 2.10): INITIAL from create
(and from a new session) until an agent is added (ROUTED); TRANSFER between a transfer's
``remove`` and the next ``add``; NEEDS_ROUTING after the session ended or routing failed.

``generation`` changes whenever the session changes (ends, restarts) or the conversation
closes: a script step of an older generation is dropped.
"""

from __future__ import annotations

import itertools
from collections import deque
from typing import Any

import msgspec

from .entries import TRANSCRIPT_TYPES, Entry

__all__ = [
    "ACTIVE",
    "ENDED",
    "INITIAL",
    "NEEDS_ROUTING",
    "ROUTED",
    "TRANSFER",
    "WAITING",
    "Agent",
    "Conversation",
    "SessionOver",
    "SimulatorError",
    "UnknownConversation",
]

INITIAL = "INITIAL"
ROUTED = "ROUTED"
TRANSFER = "TRANSFER"
NEEDS_ROUTING = "NEEDS_ROUTING"

WAITING = "Waiting"
ACTIVE = "Active"
ENDED = "Ended"

# Message ids remembered per conversation for de-duplication and ack checks.
_IDS_MAX = 10_000

_session_numbers = itertools.count(1)


class SimulatorError(Exception):
    """Root of the errors the simulator's control API raises."""


class UnknownConversation(SimulatorError, KeyError):
    """No conversation with that id (never created, or already reaped)."""

    def __str__(self) -> str:
        return f"no conversation {self.args[0]!r}"


class SessionOver(SimulatorError):
    """The conversation is closed, or its session ended, or no agent is on it."""


class Agent(msgspec.Struct, frozen=True, kw_only=True):
    """The agent on a conversation: display name and user id (``005...``)."""

    name: str
    subject: str


def _salesforce_id(prefix: str, number: int) -> str:
    return f"{prefix}{number:012d}"


class Conversation:
    """A conversation seen from the server side.

    Attributes:
        id: The client-made lowercase UUID.
        subject: The ``sub`` of the token that created it; only that subject may use it.
        deployment: The deployment it was created for.
        kind: The script behind that deployment.
        started_ms: ``startTimestamp`` (epoch ms).
        ended_ms: ``endTimestamp`` once closed.
        routing_attributes: As sent on create (or with the last new session).
        routing_status: See the module docstring.
        session_status: ``Waiting``, ``Active`` or ``Ended``.
        session_number: Messaging sessions so far (1 after create).
        session_record_id: The MessagingSession id (``0Mw...``) of the current session.
        agent: The agent on the conversation, None if none.
        is_open: False once the visitor closed it.
        close_reason: ``visitor`` once closed (by DELETE).
        generation: See the module docstring.
        answered: Visitor messages the agents answered in this session (scripts' counter).
        entries: The transcript (Message, ParticipantChanged, RoutingResult,
            SessionStatusChanged), oldest first, bounded by ``record_max``.
        events: ``(event id, event name)`` of every event emitted for it, bounded.
        message_ids: Accepted visitor message ids -> their ``clientTimestamp``.
        acks: The acknowledgements the visitor sent, as received (decoded JSON).
        files: ``{"fileId", "name", "size", "mimeType"}`` of the files the visitor sent.
        duplicates: Message ids received again (whatever the duplicate policy did).
        visitor_messages: Visitor messages accepted (text and files), in all sessions.
    """

    def __init__(
        self,
        *,
        conversation_id: str,
        subject: str,
        deployment: str,
        kind: str,
        now_ms: int,
        routing_attributes: dict[str, str] | None,
        record_max: int,
    ) -> None:
        self.id = conversation_id
        self.subject = subject
        self.deployment = deployment
        self.kind = kind
        self.started_ms = now_ms
        self.ended_ms: int | None = None
        self.routing_attributes = routing_attributes
        self.routing_status = INITIAL
        self.session_status = WAITING
        self.session_number = 1
        self.session_record_id = _salesforce_id("0Mw", next(_session_numbers))
        self.routing_record_id = _salesforce_id("0JR", next(_session_numbers))
        self.agent: Agent | None = None
        self.is_open = True
        self.close_reason: str | None = None
        self.generation = 0
        self.answered = 0
        self.entries: deque[Entry] = deque(maxlen=record_max)
        self.events: deque[tuple[str, str]] = deque(maxlen=record_max)
        self.message_ids: dict[str, int] = {}
        self.acks: deque[dict[str, Any]] = deque(maxlen=record_max)
        self.files: deque[dict[str, Any]] = deque(maxlen=record_max)
        self.duplicates: deque[str] = deque(maxlen=record_max)
        self.visitor_messages = 0
        self._entry_ids: dict[str, None] = {}

    @property
    def has_session(self) -> bool:
        """True while a messaging session is live (a send needs no new session)."""
        return self.is_open and self.session_status != ENDED

    def remember(self, entry: Entry) -> None:
        """Keep ``entry`` in the transcript (if it belongs there) and its id for acks."""
        if entry.entry_type in TRANSCRIPT_TYPES:
            self.entries.append(entry)
        if entry.entry_type == "Message":
            self._entry_ids[entry.identifier] = None
            if len(self._entry_ids) > _IDS_MAX:
                del self._entry_ids[next(iter(self._entry_ids))]

    def knows_entry(self, identifier: str) -> bool:
        """True if ``identifier`` is a message of this conversation (recent ones)."""
        return identifier in self._entry_ids

    def accept_message_id(self, message_id: str, client_ms: int) -> None:
        """Remember an accepted visitor message id (bounded, oldest forgotten)."""
        self.message_ids[message_id] = client_ms
        if len(self.message_ids) > _IDS_MAX:
            del self.message_ids[next(iter(self.message_ids))]
        self.visitor_messages += 1

    def new_session(self, routing_attributes: dict[str, str] | None) -> None:
        """Start the next messaging session (a send with ``isNewMessagingSession``)."""
        self.session_number += 1
        self.session_record_id = _salesforce_id("0Mw", next(_session_numbers))
        self.routing_record_id = _salesforce_id("0JR", next(_session_numbers))
        self.session_status = WAITING
        self.routing_status = INITIAL
        self.agent = None
        self.answered = 0
        self.generation += 1
        if routing_attributes is not None:
            self.routing_attributes = routing_attributes

    def end_session(self) -> str:
        """End the session: returns the status it had. The agent must be removed first."""
        previous = self.session_status
        self.session_status = ENDED
        self.routing_status = NEEDS_ROUTING
        self.agent = None
        self.generation += 1
        return previous

    def close(self, now_ms: int, reason: str = "visitor") -> None:
        """The conversation ends (and its session with it)."""
        self.is_open = False
        self.ended_ms = now_ms
        self.close_reason = reason
        self.session_status = ENDED
        self.agent = None
        self.generation += 1

    def listed(self) -> dict[str, Any]:
        """An item of list conversations (MESSAGING.md 2.8)."""
        return {
            "conversationId": self.id,
            "startTimestamp": self.started_ms,
            "endTimestamp": self.ended_ms,
        }

    def summary(self) -> dict[str, Any]:
        """One short line for ``GET /_sim/conversations``."""
        return {
            "id": self.id,
            "deployment": self.deployment,
            "script": self.kind,
            "subject": self.subject,
            "open": self.is_open,
            "routing_status": self.routing_status,
            "session_status": self.session_status,
            "session_number": self.session_number,
            "agent": None if self.agent is None else self.agent.name,
            "visitor_messages": self.visitor_messages,
        }

    def record(self) -> dict[str, Any]:
        """Everything recorded about this conversation, as JSON-able builtins."""
        return {
            **self.summary(),
            "started_ms": self.started_ms,
            "ended_ms": self.ended_ms,
            "close_reason": self.close_reason,
            "session_record_id": self.session_record_id,
            "routing_attributes": self.routing_attributes,
            "entries": [entry.as_listed() for entry in self.entries],
            "events": [{"id": eid, "event": name} for eid, name in self.events],
            "message_ids": list(self.message_ids),
            "duplicates": list(self.duplicates),
            "acks": list(self.acks),
            "files": list(self.files),
        }
