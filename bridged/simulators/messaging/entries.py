"""Conversation entries the simulator makes, and the SSE event name of each. Pure.

Shapes follow MESSAGING.md 3.4 and 3.5: the fields marked CONFIRMED or OBSERVED there are
reproduced; the payloads marked UNCONFIRMED there (typing, acknowledgements, session status,
queue position, the Agent sender's ``appType``) are SYNTHETIC here and say so below, so a
client that reads more than the confirmed fields fails against the simulator first.

An :class:`Entry` is stored once and shown two ways: on the stream ``entryPayload`` is a JSON
*string* (:meth:`Entry.as_event`), in the REST entries list it is an object
(:meth:`Entry.as_listed`).
"""

from __future__ import annotations

import uuid
from typing import Any

import msgspec

__all__ = [
    "AGENT_APP_TYPE",
    "CLOSE_EVENT",
    "ENTRY_TYPES",
    "EVENT_OF_ENTRY",
    "QUEUE_POSITION_EVENT",
    "TRANSCRIPT_TYPES",
    "Entry",
    "acknowledgement",
    "agent_sender",
    "attachment_message",
    "end_user_sender",
    "participant_changed",
    "queue_position",
    "routing_result",
    "session_status_changed",
    "system_sender",
    "text_message",
    "typing",
]

# UNCONFIRMED (MESSAGING.md 3.4, 8.6): no real Agent sender was seen.
AGENT_APP_TYPE = "agent"

SYSTEM_NAME = "Platform Integration User"
SYSTEM_SUBJECT = "005000000000SYS"
GUEST_NAME = "Guest"

CLOSE_EVENT = "CONVERSATION_CLOSE_CONVERSATION"
# OBSERVED name only (MESSAGING.md 3.5, 8.5): the payload is SYNTHETIC.
QUEUE_POSITION_EVENT = "CONVERSATION_QUEUE_POSITION"

EVENT_OF_ENTRY = {
    "Message": "CONVERSATION_MESSAGE",
    "ParticipantChanged": "CONVERSATION_PARTICIPANT_CHANGED",
    "RoutingResult": "CONVERSATION_ROUTING_RESULT",
    "TypingStartedIndicator": "CONVERSATION_TYPING_STARTED_INDICATOR",
    "TypingStoppedIndicator": "CONVERSATION_TYPING_STOPPED_INDICATOR",
    "DeliveryAcknowledgement": "CONVERSATION_DELIVERY_ACKNOWLEDGEMENT",
    "ReadAcknowledgement": "CONVERSATION_READ_ACKNOWLEDGEMENT",
    "SessionStatusChanged": "CONVERSATION_SESSION_STATUS_CHANGED",
    "QueuePosition": QUEUE_POSITION_EVENT,
}

# Entry types a client may name in ``entryTypeFilter`` (MESSAGING.md 2.9, 3.4).
ENTRY_TYPES = frozenset(
    {
        "Message",
        "ParticipantChanged",
        "RoutingResult",
        "DeliveryAcknowledgement",
        "ReadAcknowledgement",
        "TypingStartedIndicator",
        "TypingStoppedIndicator",
        "SessionStatusChanged",
        "ClientAction",
        "ClientMenu",
    }
)

# Entries kept in the transcript that "list entries" answers; typing indicators, acks and
# queue updates are events only.
TRANSCRIPT_TYPES = frozenset({"Message", "ParticipantChanged", "RoutingResult",
                              "SessionStatusChanged"})

_json = msgspec.json.Encoder()


class Entry(msgspec.Struct, frozen=True, kw_only=True):
    """One conversation entry (MESSAGING.md 3.4).

    Attributes:
        entry_type: ``Message``, ``ParticipantChanged``...
        identifier: The entry id; for a message the message id (the client's own for an
            echo).
        payload: ``entryPayload`` as an object (it repeats ``entryType`` and ``id``).
        sender: ``{"role", "appType", "subject", "clientIdentifier"}``.
        sender_display_name: ``senderDisplayName``.
        transcripted_ms: ``transcriptedTimestamp``, server time in epoch milliseconds.
        client_ms: ``clientTimestamp`` (ms).
        related_records: ``relatedRecords``; for an acknowledgement the acknowledged id.
    """

    entry_type: str
    identifier: str
    payload: dict[str, Any]
    sender: dict[str, str]
    sender_display_name: str
    transcripted_ms: int
    client_ms: int
    related_records: tuple[str, ...] = ()

    @property
    def event(self) -> str:
        """The SSE ``event:`` name of this entry."""
        return EVENT_OF_ENTRY[self.entry_type]

    def _fields(self, payload: Any) -> dict[str, Any]:
        return {
            "senderDisplayName": self.sender_display_name,
            "identifier": self.identifier,
            "entryType": self.entry_type,
            "entryPayload": payload,
            "sender": self.sender,
            "transcriptedTimestamp": self.transcripted_ms,
            "clientTimestamp": self.client_ms,
            "relatedRecords": list(self.related_records),
        }

    def as_event(self) -> dict[str, Any]:
        """``conversationEntry`` of an SSE event: ``entryPayload`` as a JSON string."""
        return self._fields(_json.encode(self.payload).decode())

    def as_listed(self) -> dict[str, Any]:
        """An item of the REST entries list: ``entryPayload`` as an object."""
        return self._fields(self.payload)


def end_user_sender(subject: str) -> dict[str, str]:
    """The sender of the visitor's entries (as observed, MESSAGING.md 3.4)."""
    return {"role": "EndUser", "appType": "iamessage", "subject": subject,
            "clientIdentifier": ""}


def agent_sender(subject: str) -> dict[str, str]:
    """An Agent sender; ``appType`` and the ``005`` user id as subject are UNCONFIRMED."""
    return {"role": "Agent", "appType": AGENT_APP_TYPE, "subject": subject,
            "clientIdentifier": ""}


def system_sender() -> dict[str, str]:
    """The System sender of routing and session entries (as observed)."""
    return {"role": "System", "appType": "conversation", "subject": SYSTEM_SUBJECT,
            "clientIdentifier": ""}


def _new_id() -> str:
    return str(uuid.uuid4())


def text_message(
    *,
    sender: dict[str, str],
    display_name: str,
    message_id: str,
    text: str,
    now_ms: int,
    client_ms: int | None = None,
    in_reply_to: str | None = None,
) -> Entry:
    """A ``Message`` entry with a ``StaticContentMessage`` of format ``Text``."""
    payload = {
        "entryType": "Message",
        "id": message_id,
        "abstractMessage": {
            "messageType": "StaticContentMessage",
            "inReplyToMessageId": in_reply_to,
            "id": message_id,
            "references": None,
            "staticContent": {"formatType": "Text", "text": text},
        },
        "messageReason": None,
    }
    return Entry(entry_type="Message", identifier=message_id, payload=payload, sender=sender,
                 sender_display_name=display_name, transcripted_ms=now_ms,
                 client_ms=now_ms if client_ms is None else client_ms)


def attachment_message(
    *,
    sender: dict[str, str],
    display_name: str,
    message_id: str,
    file_id: str,
    file_name: str,
    mime_type: str,
    text: str,
    now_ms: int,
) -> Entry:
    """A ``Message`` entry with ``staticContent.formatType: Attachments`` (as Botpress reads)."""
    payload = {
        "entryType": "Message",
        "id": message_id,
        "abstractMessage": {
            "messageType": "StaticContentMessage",
            "inReplyToMessageId": None,
            "id": message_id,
            "references": None,
            "staticContent": {
                "formatType": "Attachments",
                "text": text,
                "attachments": [
                    {
                        "name": file_name,
                        "attachmentUploadResult": "Success",
                        "id": file_id,
                        "mimeType": mime_type,
                        "url": "",
                        "referenceId": file_id,
                    }
                ],
            },
        },
        "messageReason": None,
    }
    return Entry(entry_type="Message", identifier=message_id, payload=payload, sender=sender,
                 sender_display_name=display_name, transcripted_ms=now_ms, client_ms=now_ms)


def participant_changed(
    *, operation: str, participant: dict[str, str], display_name: str, now_ms: int
) -> Entry:
    """``ParticipantChanged`` with one ``add`` or ``remove`` (shape of the observed entry)."""
    entry_id = _new_id()
    payload = {
        "entryType": "ParticipantChanged",
        "id": entry_id,
        "entries": [
            {"operation": operation, "participant": participant, "displayName": display_name}
        ],
    }
    return Entry(entry_type="ParticipantChanged", identifier=entry_id, payload=payload,
                 sender=system_sender(), sender_display_name=SYSTEM_NAME,
                 transcripted_ms=now_ms, client_ms=now_ms)


def routing_result(
    *,
    routing_type: str,
    failure_type: str,
    failure_reason: str,
    session_record_id: str,
    routing_record_id: str,
    queue_id: str,
    wait_s: int,
    now_ms: int,
) -> Entry:
    """``RoutingResult`` with the fields of the real entry of MESSAGING.md 3.5.

    ``wait_s`` -1 means no estimated wait (``isEWTRequested`` stays true, as observed).
    """
    entry_id = _new_id()
    errors = [] if failure_type == "None" else [failure_reason]
    payload = {
        "entryType": "RoutingResult",
        "id": entry_id,
        "recordId": session_record_id,
        "errorMessages": errors,
        "pendingServiceRoutingId": routing_record_id,
        "routingType": routing_type,
        "estimatedWaitTime": {"estimatedWaitTimeInSeconds": wait_s, "isEWTRequested": True},
        "failureReason": failure_reason,
        "failureType": failure_type,
        "isExternallyRouted": False,
        "routingConfigurationDetails": {
            "routingConfigurationType": "QueueRoutingType",
            "queueId": queue_id,
        },
    }
    return Entry(entry_type="RoutingResult", identifier=entry_id, payload=payload,
                 sender=system_sender(), sender_display_name=SYSTEM_NAME,
                 transcripted_ms=now_ms, client_ms=now_ms)


def typing(
    *, started: bool, sender: dict[str, str], display_name: str, now_ms: int,
    entry_id: str | None = None
) -> Entry:
    """A typing indicator. SYNTHETIC payload: only ``entryType`` and ``id``."""
    entry_type = "TypingStartedIndicator" if started else "TypingStoppedIndicator"
    identifier = entry_id or _new_id()
    payload = {"entryType": entry_type, "id": identifier}
    return Entry(entry_type=entry_type, identifier=identifier, payload=payload, sender=sender,
                 sender_display_name=display_name, transcripted_ms=now_ms, client_ms=now_ms)


def acknowledgement(
    *, read: bool, message_id: str, sender: dict[str, str], display_name: str, now_ms: int
) -> Entry:
    """A delivery or read acknowledgement of ``message_id`` (in ``relatedRecords[0]``).

    SYNTHETIC payload beyond ``acknowledgementTimestamp`` (MESSAGING.md 3.5).
    """
    entry_type = "ReadAcknowledgement" if read else "DeliveryAcknowledgement"
    entry_id = _new_id()
    payload = {"entryType": entry_type, "id": entry_id, "acknowledgementTimestamp": now_ms,
               "acknowledgedConversationEntryIdentifier": message_id}
    return Entry(entry_type=entry_type, identifier=entry_id, payload=payload, sender=sender,
                 sender_display_name=display_name, transcripted_ms=now_ms, client_ms=now_ms,
                 related_records=(message_id,))


def session_status_changed(
    *, status: str, previous: str, ended_by_role: str | None, session_record_id: str,
    now_ms: int
) -> Entry:
    """``SessionStatusChanged``. SYNTHETIC field names (MESSAGING.md 3.5, 8.4)."""
    entry_id = _new_id()
    payload: dict[str, Any] = {
        "entryType": "SessionStatusChanged",
        "id": entry_id,
        "sessionId": session_record_id,
        "sessionStatus": status,
        "previousSessionStatus": previous,
    }
    if ended_by_role is not None:
        payload["sessionEndedByRole"] = ended_by_role
    return Entry(entry_type="SessionStatusChanged", identifier=entry_id, payload=payload,
                 sender=system_sender(), sender_display_name=SYSTEM_NAME,
                 transcripted_ms=now_ms, client_ms=now_ms)


def queue_position(*, position: int, wait_s: int, now_ms: int) -> Entry:
    """A queue update. SYNTHETIC (the event name is OBSERVED, no payload ever was)."""
    entry_id = _new_id()
    payload = {
        "entryType": "QueuePosition",
        "id": entry_id,
        "queuePosition": position,
        "estimatedWaitTime": {"estimatedWaitTimeInSeconds": wait_s, "isEWTRequested": True},
    }
    return Entry(entry_type="QueuePosition", identifier=entry_id, payload=payload,
                 sender=system_sender(), sender_display_name=SYSTEM_NAME,
                 transcripted_ms=now_ms, client_ms=now_ms)
