"""Salesforce Live Agent JSON payloads as msgspec Structs (SALESFORCE.md sections 4 and 5).

Field names on the wire are camelCase (``rename="camel"``); here they are snake_case.

Real payloads carry fields the docs do not mention (``connectionTimeout``, ``agentId``,
``schedule``, ``items``...) and leave out, or send as ``null``, fields the docs list. So the
decoders read what they can and give every field they can do without its most plausible
meaning, rather than fail the chat over it:

* unknown fields are ignored;
* a field that is missing or ``null`` takes its default (each default says what it means);
* an optional field of the wrong type is coerced where that is unambiguous (``"30"`` for
  30), else read as missing, and named in :attr:`MessagesBody.unread` for a log line;
* only a field bridged cannot do without (``SessionId.key``, ``ReconnectSession.
  affinityToken``) or a body that is not the documented shape at all (``messages`` not a
  list) is an error, naming what is wrong.

Every message is first decoded strictly, which is the fast path; only a message that fails
it is read again the lenient way.

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
    "merge_batches",
]

import math
import re
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

    ``clientPollTimeout`` is a number in real answers and a string in the docs' example; it
    is 40 (the real value in H-386079) when missing or unreadable. A missing ``id`` is the
    part of the key before the first ``!``, as in every example.
    """

    id: str = ""
    key: str
    affinity_token: str
    client_poll_timeout: float = 40.0


class _RawItem(msgspec.Struct, frozen=True, gc=False):
    type: str = ""
    message: msgspec.Raw = msgspec.Raw(b"{}")


class _RawMessages(msgspec.Struct, frozen=True, gc=False):
    messages: list[_RawItem] = []
    sequence: int | None = None
    offset: int | None = None


class ChatRequestSuccess(_Payload, frozen=True, kw_only=True):
    """Queued and routed; not accepted yet. Every field may be missing."""

    queue_position: int | None = None
    estimated_wait_time: float | None = None
    connection_timeout: float | None = None  # ms; the YALO capture has 150000


class ChatRequestFail(_Payload, frozen=True, kw_only=True):
    """The chat request failed; ``reason`` is Unavailable, InternalFailure, NoPost, ..."""

    reason: str = "Unknown"


class QueueUpdate(_Payload, frozen=True, kw_only=True):
    """A new queue position (only with ``receiveQueueUpdates``)."""

    position: int | None = None
    estimated_wait_time: float | None = None


class ChatEstablished(_Payload, frozen=True, kw_only=True):
    """An agent accepted the chat (a missing name: the session's agent so far, if any)."""

    name: str = ""
    sneak_peek_enabled: bool = False


class ChatMessage(_Payload, frozen=True, kw_only=True):
    """The agent said something. ``text`` is None when the message carries none."""

    name: str = ""
    text: str | None = None


class AgentTyping(_Payload, frozen=True, kw_only=True):
    """The agent is typing."""


class AgentNotTyping(_Payload, frozen=True, kw_only=True):
    """The agent stopped typing."""


class AgentDisconnect(_Payload, frozen=True, kw_only=True):
    """The agent dropped; the session stays alive and another agent may pick it up."""


class ChatTransferred(_Payload, frozen=True, kw_only=True):
    """The chat moved to another agent."""

    name: str = ""
    sneak_peek_enabled: bool = False


class ChatEnded(_Payload, frozen=True, kw_only=True):
    """The chat is over; ``reason`` is agent, client, agentsUnavailable, ...

    Without a reason ("" here), the agent ended it: the visitor's own end is a ChatEnd
    bridged sent, and every other cause names itself.
    """

    reason: str = ""


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

    id: str = ""
    is_available: bool = False
    estimated_wait_time: float | None = None


class Availability(_Payload, frozen=True, kw_only=True):
    """The answer of ``GET Visitor/Availability``, inside the messages envelope."""

    results: list[AvailabilityResult] = []


class CustomEvent(_Payload, frozen=True, kw_only=True):
    """A custom event from the agent's console (bridged has no use for its fields)."""


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
    """The org moved: send later requests to ``newUrl`` ("" when it names none)."""

    new_url: str = ""


class TransferToButtonInitiated(_Payload, frozen=True, kw_only=True):
    """A transfer to another button has begun (fields undocumented)."""


class FileTransfer(_Payload, frozen=True, kw_only=True):
    """The agent asks the visitor for a file (bridged cannot upload one)."""

    type: str = ""


class NewVisitorBreadcrumb(_Payload, frozen=True, kw_only=True):
    """The visitor's page changed (not relevant to a bot visitor)."""


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

# The typed class of each Salesforce message type: the type name is the class name.
_TYPES: dict[str, type[Any]] = {
    cls.__name__: cls
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
# The strict decoders of the fast path, built once.
_DECODERS: dict[str, msgspec.json.Decoder[Any]] = {
    name: msgspec.json.Decoder(cls) for name, cls in _TYPES.items()
}
_messages_decoder = msgspec.json.Decoder(_RawMessages)
_session_id_decoder = msgspec.json.Decoder(SessionIdBody)
_encoder = msgspec.json.Encoder()
# msgspec names the field that failed: "Expected `str`, got `int` - at `$.text`".
_FAILED_FIELD = re.compile(r"at `\$\.([^.\[`]+)")


class MessagesBody(msgspec.Struct, frozen=True):
    """A decoded 200 body of ``GET System/Messages``.

    ``unread`` names the optional fields that could not be read and were taken as missing
    (``"ChatMessage.name"``), for a log line.
    """

    messages: list[ServerMessage]
    sequence: int | None
    offset: int | None
    unread: list[str] = []


def _without_nulls(value: Any) -> Any:
    """``null`` means "not given": drop it from objects, at every depth."""
    if isinstance(value, dict):
        return {k: _without_nulls(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_without_nulls(v) for v in value if v is not None]
    return value


def _lenient(cls: type[Any], data: Any, unread: list[str], what: str) -> Any:
    """Convert ``data`` to ``cls``, reading each optional field it cannot read as missing.

    Raises:
        msgspec.ValidationError: ``data`` is not an object, or a required field is missing
            or unreadable.
    """
    if data is None:
        data = {}
    data = _without_nulls(data)
    required = {f.encode_name for f in msgspec.structs.fields(cls) if f.required}
    while True:
        try:
            return msgspec.convert(data, cls, strict=False)
        except msgspec.ValidationError as exc:
            match = _FAILED_FIELD.search(str(exc))
            name = match[1] if match is not None else None
            if (not isinstance(data, dict) or name is None or name in required
                    or name not in data):
                raise
            del data[name]  # bounded: one field fewer each time
            unread.append(f"{what}.{name}")


def _read_item(type_: str, message: msgspec.Raw | Any, unread: list[str]) -> ServerMessage:
    """One item of ``messages``: its typed message, or :class:`UnknownMessage`."""
    cls = _TYPES.get(type_)
    if cls is None:
        return UnknownMessage(type=type_)
    if isinstance(message, msgspec.Raw):
        try:
            return _DECODERS[type_].decode(message)  # type: ignore[no-any-return]
        except msgspec.ValidationError:
            message = msgspec.json.decode(message)
    return _lenient(cls, message, unread, type_)  # type: ignore[no-any-return]


def _int_or_none(value: Any, what: str, unread: list[str]) -> int | None:
    if value is None:
        return None
    try:
        return msgspec.convert(value, int, strict=False)
    except msgspec.ValidationError:
        unread.append(what)
        return None


def _raw_items(body: bytes, unread: list[str]) -> tuple[list[tuple[str, Any]], int | None,
                                                        int | None]:
    """The envelope: ``(type, message)`` pairs, ``sequence`` and ``offset``.

    Raises:
        RemoteProtocolError: not JSON, not an object, or ``messages`` not a list of objects.
    """
    try:
        raw = _messages_decoder.decode(body)
        return [(item.type, item.message) for item in raw.messages], raw.sequence, raw.offset
    except msgspec.ValidationError:
        pass  # not the strict shape: read it again, leniently
    except msgspec.DecodeError as exc:
        raise RemoteProtocolError(f"Messages body is not the documented shape: {exc}") from None
    data = msgspec.json.decode(body)
    if not isinstance(data, dict):
        raise RemoteProtocolError(
            "Messages body is not the documented shape: Expected `object`, got "
            f"`{type(data).__name__}`")
    messages = data.get("messages")
    if messages is None:
        messages = []
    if not isinstance(messages, list):
        raise RemoteProtocolError(
            "Messages body is not the documented shape: Expected `array`, got "
            f"`{type(messages).__name__}` - at `$.messages`")
    items: list[tuple[str, Any]] = []
    for index, item in enumerate(messages):
        if item is None:
            continue
        if not isinstance(item, dict):
            raise RemoteProtocolError(
                "Messages body is not the documented shape: Expected `object`, got "
                f"`{type(item).__name__}` - at `$.messages[{index}]`")
        type_ = item.get("type")
        items.append((type_ if isinstance(type_, str) else "", item.get("message")))
    return (items, _int_or_none(data.get("sequence"), "Messages.sequence", unread),
            _int_or_none(data.get("offset"), "Messages.offset", unread))


def decode_messages(body: bytes) -> MessagesBody:
    """Decode a Messages (or ReconnectSession) 200 body.

    Raises:
        RemoteProtocolError: the body is not the documented shape, naming what is wrong.
    """
    unread: list[str] = []
    pairs, sequence, offset = _raw_items(body, unread)
    items: list[ServerMessage] = []
    for index, (type_, message) in enumerate(pairs):
        try:
            items.append(_read_item(type_, message, unread))
        except msgspec.ValidationError as exc:
            raise RemoteProtocolError(
                f"Messages item {index} ({type_}) is not the documented shape: {exc}"
            ) from None
    return MessagesBody(messages=items, sequence=sequence, offset=offset, unread=unread)


def decode_session_id(body: bytes) -> SessionIdBody:
    """Decode the 200 body of ``GET System/SessionId``.

    Raises:
        RemoteProtocolError: the body lacks ``key`` or ``affinityToken``.
    """
    try:
        try:
            decoded = _session_id_decoder.decode(body)
        except msgspec.ValidationError:
            decoded = _lenient(SessionIdBody, msgspec.json.decode(body), [], "SessionId")
    except msgspec.DecodeError as exc:  # ValidationError included
        raise RemoteProtocolError(f"SessionId body is not the documented shape: {exc}") from None
    if not decoded.id:
        decoded = msgspec.structs.replace(decoded, id=decoded.key.split("!", 1)[0])
    if not (math.isfinite(decoded.client_poll_timeout) and decoded.client_poll_timeout > 0):
        decoded = msgspec.structs.replace(decoded, client_poll_timeout=40.0)
    return decoded


def merge_batches(kept: bytes, new: bytes) -> bytes:
    """One Messages body with what two answers to polls with the same ``ack`` brought.

    Salesforce delivers again what was not acknowledged ("send the same ack again"), so
    ``new`` normally starts with the messages of ``kept`` and adds what came since: then it
    replaces ``kept``. A ``new`` that does not (a server that does not deliver again, or
    the same messages under a new ``sequence``) holds only new messages: they are added.
    Both bodies must have been read by :func:`decode_messages` already.
    """
    a, b = msgspec.json.decode(kept), msgspec.json.decode(new)
    old_items, new_items = a.get("messages") or [], b.get("messages") or []
    again = new_items[:len(old_items)] == old_items and (
        len(new_items) > len(old_items) or b.get("sequence") == a.get("sequence"))
    merged = {
        "messages": new_items if again else old_items + new_items,
        "sequence": b.get("sequence") if b.get("sequence") is not None else a.get("sequence"),
        "offset": b.get("offset") if b.get("offset") is not None else a.get("offset"),
    }
    return _encoder.encode(merged)


def encode_body(payload: Any) -> bytes:
    """Encode a request body as JSON."""
    return _encoder.encode(payload)
