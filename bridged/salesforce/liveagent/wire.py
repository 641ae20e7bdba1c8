"""Salesforce Live Agent JSON payloads as msgspec Structs (SALESFORCE.md sections 4 and 5).

Field names on the wire are camelCase (``rename="camel"``); here they are snake_case.
Decoders are lenient about what Salesforce adds (unknown fields are ignored, since real
payloads carry undocumented extras such as ``connectionTimeout``) and strict about the
types of the fields bridged relies on.

A Messages body nests each item as ``{"type": NAME, "message": {...}}``, which a flat
tagged union cannot express, so the outer list is decoded with the inner object kept as
``msgspec.Raw`` and then decoded by the typed decoder registered for its name.
"""

from __future__ import annotations

__all__ = [
    "AgentDisconnect",
    "AgentNotTyping",
    "AgentTyping",
    "Availability",
    "AvailabilityResult",
    "ChasitorInit",
    "ChasitorSessionData",
    "ChatEnded",
    "ChatEstablished",
    "ChatMessage",
    "ChatRequestFail",
    "ChatRequestSuccess",
    "ChatTransferred",
    "CustomDetail",
    "CustomEvent",
    "Entity",
    "EntityFieldsMap",
    "FileTransfer",
    "MessagesBody",
    "NewVisitorBreadcrumb",
    "QueueUpdate",
    "ReconnectSession",
    "SensitiveDataRule",
    "SensitiveDataRules",
    "ServerMessage",
    "SessionIdBody",
    "SwitchServer",
    "TranscriptEntry",
    "TransferToButtonInitiated",
    "UnknownMessage",
    "decode_messages",
    "decode_session_id",
    "encode_body",
]

from typing import Any, TypeAlias

import msgspec

from bridged.errors import RemoteProtocolError


class _Payload(msgspec.Struct, frozen=True, kw_only=True, rename="camel", gc=False):
    """Base of every Salesforce payload: camelCase on the wire."""


# --- requests ---------------------------------------------------------------------------


class CustomDetail(_Payload, frozen=True, kw_only=True):
    """An item of ``prechatDetails`` (docs: ``transcriptFields`` is required)."""

    label: str
    value: str
    transcript_fields: list[str]
    display_to_agent: bool


class EntityFieldsMap(_Payload, frozen=True, kw_only=True):
    """An item of an Entity's ``entityFieldsMaps`` (all five fields required, D-TYPES)."""

    field_name: str
    label: str
    do_find: bool
    is_exact_match: bool
    do_create: bool


class Entity(_Payload, frozen=True, kw_only=True, omit_defaults=True):
    """An item of ``prechatEntities``: a record to find or create (D-TYPES)."""

    entity_name: str
    show_on_create: bool = False
    link_to_entity_name: str = ""
    link_to_entity_field: str = ""
    save_to_transcript: str = ""
    # Note the docs' spelling: plural "Fields".
    entity_fields_maps: list[EntityFieldsMap]


class ChasitorInit(_Payload, frozen=True, kw_only=True):
    """The body of ``POST Chasitor/ChasitorInit`` (SALESFORCE.md 4.3)."""

    organization_id: str
    deployment_id: str
    button_id: str
    session_id: str
    user_agent: str
    language: str
    screen_resolution: str
    visitor_name: str
    prechat_details: list[CustomDetail]
    prechat_entities: list[Entity]
    receive_queue_updates: bool = True
    is_post: bool = True


# --- responses --------------------------------------------------------------------------


class SessionIdBody(_Payload, frozen=True, kw_only=True):
    """The 200 body of ``GET System/SessionId``.

    ``clientPollTimeout`` is a number in real answers and a string in the docs' example.
    """

    id: str
    key: str
    affinity_token: str
    client_poll_timeout: int | str = 40


class _RawItem(msgspec.Struct, frozen=True, gc=False):
    type: str
    message: msgspec.Raw = msgspec.Raw(b"{}")


class _RawMessages(msgspec.Struct, frozen=True, gc=False):
    messages: list[_RawItem]
    sequence: int | None = None
    offset: int | None = None


class ChatRequestSuccess(_Payload, frozen=True, kw_only=True):
    """Queued and routed; not accepted yet."""

    queue_position: int | None = None
    estimated_wait_time: float | None = None
    connection_timeout: int | None = None
    visitor_id: str | None = None


class ChatRequestFail(_Payload, frozen=True, kw_only=True):
    """The chat request failed; ``reason`` is Unavailable, InternalFailure, NoPost, ..."""

    reason: str = "Unknown"


class QueueUpdate(_Payload, frozen=True, kw_only=True):
    """A new queue position (only with ``receiveQueueUpdates``)."""

    position: int | None = None
    estimated_wait_time: float | None = None


class ChatEstablished(_Payload, frozen=True, kw_only=True):
    """An agent accepted the chat."""

    name: str = ""
    user_id: str = ""
    sneak_peek_enabled: bool = False


class ChatMessage(_Payload, frozen=True, kw_only=True):
    """The agent said something."""

    name: str = ""
    text: str


class AgentTyping(_Payload, frozen=True, kw_only=True):
    """The agent is typing."""


class AgentNotTyping(_Payload, frozen=True, kw_only=True):
    """The agent stopped typing."""


class AgentDisconnect(_Payload, frozen=True, kw_only=True):
    """The agent dropped; the session stays alive and another agent may pick it up."""


class ChatTransferred(_Payload, frozen=True, kw_only=True):
    """The chat moved to another agent."""

    name: str = ""
    user_id: str = ""
    sneak_peek_enabled: bool = False


class ChatEnded(_Payload, frozen=True, kw_only=True):
    """The chat is over; ``reason`` is agent, client, agentsUnavailable, ..."""

    reason: str = "unknown"


class TranscriptEntry(_Payload, frozen=True, kw_only=True):
    """A line of the chat so far: ``type`` is Agent, Chasitor or OperatorTransferred."""

    type: str = ""
    name: str = ""
    content: str = ""


class ChasitorSessionData(_Payload, frozen=True, kw_only=True):
    """First message after ReconnectSession, with the transcript the new server holds."""

    queue_position: int | None = None
    sneak_peek_enabled: bool | None = None
    chat_messages: list[TranscriptEntry] = []


class ReconnectSession(_Payload, frozen=True, kw_only=True):
    """The answer of ``GET System/ReconnectSession``: the new server's affinity token.

    ``resetSequence`` "may be undefined"; the docs say it is always true.
    """

    reset_sequence: bool | None = None
    affinity_token: str


class AvailabilityResult(_Payload, frozen=True, kw_only=True):
    """One button's availability; ``isAvailable`` is left out when false (D-TYPES)."""

    id: str
    is_available: bool = False
    estimated_wait_time: float | None = None


class Availability(_Payload, frozen=True, kw_only=True):
    """The answer of ``GET Visitor/Availability``, inside the messages envelope."""

    results: list[AvailabilityResult] = []


class CustomEvent(_Payload, frozen=True, kw_only=True):
    """A custom event from the agent's console."""

    type: str = ""
    data: str = ""


class SensitiveDataRule(_Payload, frozen=True, kw_only=True):
    """A rule of the agent console for visitor text (e.g. mask card numbers)."""

    name: str = ""
    pattern: str = ""
    replacement: str = ""
    action_type: str = ""


class SensitiveDataRules(_Payload, frozen=True, kw_only=True):
    """Rules to apply to visitor text before it is sent."""

    sensitive_data_rules: list[SensitiveDataRule] = []


class SwitchServer(_Payload, frozen=True, kw_only=True):
    """The org moved: send later requests to ``newUrl``."""

    new_url: str


class TransferToButtonInitiated(_Payload, frozen=True, kw_only=True):
    """A transfer to another button has begun (fields undocumented)."""


class FileTransfer(_Payload, frozen=True, kw_only=True):
    """The agent asks the visitor for a file (bridged cannot upload one)."""

    type: str = ""


class NewVisitorBreadcrumb(_Payload, frozen=True, kw_only=True):
    """The visitor's page changed (not relevant to a bot visitor)."""

    location: str = ""


class UnknownMessage(msgspec.Struct, frozen=True, gc=False):
    """A message type bridged does not know; clients must ignore those."""

    type: str


ServerMessage: TypeAlias = (
    ChatRequestSuccess
    | ChatRequestFail
    | QueueUpdate
    | ChatEstablished
    | ChatMessage
    | AgentTyping
    | AgentNotTyping
    | AgentDisconnect
    | ChatTransferred
    | ChatEnded
    | ChasitorSessionData
    | CustomEvent
    | SensitiveDataRules
    | SwitchServer
    | TransferToButtonInitiated
    | FileTransfer
    | NewVisitorBreadcrumb
    | ReconnectSession
    | Availability
    | UnknownMessage
)

# One typed decoder per Salesforce message type, built once: the type name is the class name.
_DECODERS: dict[str, msgspec.json.Decoder[Any]] = {
    cls.__name__: msgspec.json.Decoder(cls)
    for cls in (
        ChatRequestSuccess,
        ChatRequestFail,
        QueueUpdate,
        ChatEstablished,
        ChatMessage,
        AgentTyping,
        AgentNotTyping,
        AgentDisconnect,
        ChatTransferred,
        ChatEnded,
        ChasitorSessionData,
        CustomEvent,
        SensitiveDataRules,
        SwitchServer,
        TransferToButtonInitiated,
        FileTransfer,
        NewVisitorBreadcrumb,
        ReconnectSession,
        Availability,
    )
}
_messages_decoder = msgspec.json.Decoder(_RawMessages)
_session_id_decoder = msgspec.json.Decoder(SessionIdBody)
_encoder = msgspec.json.Encoder()


class MessagesBody(msgspec.Struct, frozen=True):
    """A decoded 200 body of ``GET System/Messages``."""

    messages: list[ServerMessage]
    sequence: int | None
    offset: int | None


def decode_messages(body: bytes) -> MessagesBody:
    """Decode a Messages (or ReconnectSession) 200 body.

    Raises:
        RemoteProtocolError: the body is not the documented shape, naming what is wrong.
    """
    try:
        raw = _messages_decoder.decode(body)
    except msgspec.DecodeError as exc:
        raise RemoteProtocolError(f"Messages body is not the documented shape: {exc}") from None
    items: list[ServerMessage] = []
    for index, item in enumerate(raw.messages):
        decoder = _DECODERS.get(item.type)
        if decoder is None:
            items.append(UnknownMessage(type=item.type))
            continue
        try:
            items.append(decoder.decode(item.message))
        except msgspec.DecodeError as exc:
            raise RemoteProtocolError(
                f"Messages item {index} ({item.type}) is not the documented shape: {exc}"
            ) from None
    return MessagesBody(messages=items, sequence=raw.sequence, offset=raw.offset)


def decode_session_id(body: bytes) -> SessionIdBody:
    """Decode the 200 body of ``GET System/SessionId``.

    Raises:
        RemoteProtocolError: the body lacks ``id``, ``key`` or ``affinityToken``.
    """
    try:
        return _session_id_decoder.decode(body)
    except msgspec.DecodeError as exc:
        raise RemoteProtocolError(f"SessionId body is not the documented shape: {exc}") from None


def encode_body(payload: Any) -> bytes:
    """Encode a request body as JSON."""
    return _encoder.encode(payload)
