"""Enhanced Chat JSON bodies as msgspec Structs (MESSAGING.md sections 2 and 3).

Field names on the wire are camelCase (``rename="camel"``); here they are snake_case.
Decoding is tolerant: unknown fields are ignored (Salesforce adds fields, and "your
implementation must ignore unrecognized event types, rather than throwing errors or failing",
D-SSES), and a missing optional field takes its most plausible meaning (a missing
``failureType`` is ``None``, a missing ``estimatedWaitTime`` is "no estimate"). Only what
bridged cannot do without is required; a body without it raises
:class:`~bridged.errors.RemoteProtocolError` naming the field, and fails that chat only.

Two shapes need a second step:

* ``entryPayload`` is "a JSON string; parse it again" on the stream, and "a JSON object, not
  a string" in the entries list (2.9). It is read as ``msgspec.Raw`` and decoded by the typed
  decoder registered for its ``entryType``, whichever of the two forms it comes in.
* The access token is a JWT whose payload bridged reads for ``exp`` and ``orgId``
  (:func:`read_jwt`, "base64url JSON; no need to verify the signature client-side", 4.1).

Every decoder and encoder is built once, at module level.
"""

from __future__ import annotations

__all__ = [
    "ROLE_AGENT",
    "ROLE_CHATBOT",
    "ROLE_END_USER",
    "ROLE_SUPERVISOR",
    "ROLE_SYSTEM",
    "AbstractMessage",
    "AccessTokenRequest",
    "AccessTokenResponse",
    "AcknowledgementPayload",
    "Attachment",
    "Choices",
    "ClientContext",
    "Configuration",
    "ConversationEntry",
    "ConversationStatus",
    "CreateConversation",
    "EmbeddedServiceConfig",
    "EndUser",
    "EntriesList",
    "EntryPayload",
    "ErrorBody",
    "EstimatedWaitTime",
    "Form",
    "FormField",
    "JwtClaims",
    "MessagePayload",
    "MessagingChannel",
    "OptionItem",
    "OutgoingMessage",
    "Participant",
    "ParticipantChange",
    "ParticipantChangedPayload",
    "QueuePositionPayload",
    "RoutingResultPayload",
    "SendMessage",
    "SendMessageResponse",
    "SentEntry",
    "SessionStatusChangedPayload",
    "SseData",
    "StaticContent",
    "TextContent",
    "TokenContext",
    "TypingIndicator",
    "TypingPayload",
    "UnknownPayload",
    "decode_access_token",
    "decode_conversation_status",
    "decode_entries",
    "decode_error",
    "decode_queue_position",
    "decode_sent_entries",
    "decode_sse_data",
    "encode_body",
    "org_id_15",
    "read_jwt",
]

import base64
import binascii
from typing import Any, TypeAlias

import msgspec

from bridged.errors import ConfigError, RemoteProtocolError

# sender.role values (SF-APP constants, CONFIRMED); others may come and are kept as strings.
ROLE_END_USER = "EndUser"
ROLE_AGENT = "Agent"
ROLE_CHATBOT = "Chatbot"
ROLE_SUPERVISOR = "Supervisor"
ROLE_SYSTEM = "System"


class _Payload(msgspec.Struct, frozen=True, kw_only=True, rename="camel", gc=False):
    """Base of every Enhanced Chat body: camelCase on the wire."""


# --- requests ---------------------------------------------------------------------------


class ClientContext(_Payload, frozen=True, kw_only=True):
    """The optional ``context`` of the token request: who the client is (BP, STORM)."""

    app_name: str
    client_version: str


class AccessTokenRequest(_Payload, frozen=True, kw_only=True, omit_defaults=True):
    """The body of ``POST .../authorization/unauthenticated/access-token`` (2.1)."""

    org_id: str
    es_developer_name: str
    capabilities_version: str
    platform: str
    context: ClientContext | None = None


class CreateConversation(_Payload, frozen=True, kw_only=True, omit_defaults=True):
    """The body of ``POST .../conversation`` (2.4), keys in the order the sample builds them.

    ``routingAttributes`` "is omitted when there is no pre-chat data".
    """

    routing_attributes: dict[str, str] | None = None
    es_developer_name: str
    conversation_id: str


class TextContent(_Payload, frozen=True, kw_only=True):
    """``staticContent`` of a text message: ``{"formatType": "Text", "text": ...}``."""

    format_type: str = "Text"
    text: str


class OutgoingMessage(_Payload, frozen=True, kw_only=True, omit_defaults=True):
    """``message`` of a send: a client-made lowercase UUID and the text.

    ``messageType`` has no default, so that ``omit_defaults`` (which leaves out an absent
    ``inReplyToMessageId``) cannot leave it out.
    """

    in_reply_to_message_id: str | None = None
    id: str
    message_type: str
    static_content: TextContent


class SendMessage(_Payload, frozen=True, kw_only=True, omit_defaults=True):
    """The body of ``POST .../conversation/{id}/message`` (2.5).

    ``routingAttributes`` and ``isNewMessagingSession`` are "optional: only when starting a
    new session", which bridged never does (a 417 ends the hand-over), so they are left out.
    """

    message: OutgoingMessage
    routing_attributes: dict[str, str] | None = None
    is_new_messaging_session: bool | None = None
    es_developer_name: str
    language: str | None = None


class TypingIndicator(_Payload, frozen=True, kw_only=True):
    """The body of ``POST .../conversation/{id}/entry`` (2.6)."""

    entry_type: str  # TypingStartedIndicator | TypingStoppedIndicator
    id: str


# --- the access token response ----------------------------------------------------------


class FormField(_Payload, frozen=True, kw_only=True):
    """A pre-chat form field; ``isHidden`` fields carry bot context into routing."""

    name: str = ""
    order: int | None = None
    type: str = ""
    required: bool = False
    max_length: int | None = None
    is_hidden: bool = False
    choice_list_id: str | None = None


class Form(_Payload, frozen=True, kw_only=True):
    """A pre-chat form: ``displayContext`` is ``Conversation`` or ``Session``."""

    display_context: str = ""
    form_fields: list[FormField] = []


class MessagingChannel(_Payload, frozen=True, kw_only=True):
    """``embeddedServiceMessagingChannel``: the channel and whether it wants user auth."""

    channel_address_identifier: str = ""
    auth_mode: str = ""


class EmbeddedServiceConfig(_Payload, frozen=True, kw_only=True):
    """The deployment's configuration, as the token response carries it."""

    name: str = ""
    deployment_type: str = ""
    embedded_service_messaging_channel: MessagingChannel | None = None
    forms: list[Form] = []


class Configuration(_Payload, frozen=True, kw_only=True):
    """``context.configuration`` of the token response."""

    embedded_service_config: EmbeddedServiceConfig | None = None
    timestamp: int | None = None


class EndUser(_Payload, frozen=True, kw_only=True):
    """``context.endUser``: the guest's own participant."""

    app_type: str = ""
    role: str = ""
    subject: str = ""


class TokenContext(_Payload, frozen=True, kw_only=True):
    """``context`` of the token response."""

    configuration: Configuration | None = None
    device_id: str = ""
    end_user: EndUser | None = None


class AccessTokenResponse(_Payload, frozen=True, kw_only=True):
    """The 200 body of the token request (2.1).

    Attributes:
        access_token: the JWT (required).
        last_event_id: "first Last-Event-ID for the SSE connection" (a string; a number is
            taken as its decimal form), ``None`` when absent.
        context: the deployment's configuration; ``None`` when absent or not readable (it
            only informs, so a surprise in it never fails the chat).
    """

    access_token: str
    last_event_id: str | None = None
    context: TokenContext | None = None


class _TokenCore(_Payload, frozen=True, kw_only=True):
    access_token: str
    last_event_id: str | int | None = None


class _TokenFull(_TokenCore, frozen=True, kw_only=True):
    context: TokenContext | None = None


# --- REST answers -----------------------------------------------------------------------


class SentEntry(_Payload, frozen=True, kw_only=True):
    """An item of the send answer's ``conversationEntries`` (202, OBSERVED)."""

    id: str = ""
    client_timestamp: int | None = None


class SendMessageResponse(_Payload, frozen=True, kw_only=True):
    """The 202 body of a send; no client reads it, so every field is optional."""

    conversation_entries: list[SentEntry] = []


class ConversationStatus(_Payload, frozen=True, kw_only=True):
    """The 200 body of ``GET .../conversation/{id}`` (2.10).

    ``routingStatus`` is ``TRANSFER``, ``INITIAL``, ``NEEDS_ROUTING`` or ``ROUTED``
    (CONFIRMED values); ``""`` when absent.
    """

    routing_status: str = ""


class ErrorBody(_Payload, frozen=True, kw_only=True):
    """An error answer: "JSON with at least ``message``; ``errorCode`` seen" (4.5)."""

    message: str = ""
    error_code: str = ""


# --- conversation entries ---------------------------------------------------------------


class Participant(_Payload, frozen=True, kw_only=True):
    """``sender`` of an entry, or ``participant`` of a ParticipantChanged item.

    ``role`` is EndUser, Agent, Chatbot, System, Router or Supervisor; ``""`` when absent.
    """

    role: str = ""
    app_type: str = ""
    subject: str = ""
    client_identifier: str = ""


class Attachment(_Payload, frozen=True, kw_only=True):
    """An item of ``staticContent.attachments`` (agent-to-visitor files, BP)."""

    id: str = ""
    name: str = ""
    mime_type: str = ""
    url: str = ""


class StaticContent(_Payload, frozen=True, kw_only=True):
    """``staticContent`` of a received message: ``Text`` or ``Attachments``."""

    format_type: str = ""
    text: str = ""
    attachments: list[Attachment] = []


class _Title(_Payload, frozen=True, kw_only=True):
    title: str = ""


class OptionItem(_Payload, frozen=True, kw_only=True):
    """A choice of a ``ChoicesMessage``; its label is ``titleItem.title`` (or ``title``)."""

    title_item: _Title | None = None
    title: str = ""
    option_identifier: str = ""

    @property
    def label(self) -> str:
        """The text a person reads for this choice."""
        return self.title_item.title if self.title_item and self.title_item.title else self.title


class Choices(_Payload, frozen=True, kw_only=True):
    """``choices`` of a ``ChoicesMessage`` (QuickReplies, Buttons, Selections)."""

    format_type: str = ""
    text: str = ""
    option_items: list[OptionItem] = []


class AbstractMessage(_Payload, frozen=True, kw_only=True):
    """``abstractMessage``: the message itself."""

    message_type: str = ""
    id: str = ""
    in_reply_to_message_id: str | None = None
    static_content: StaticContent | None = None
    choices: Choices | None = None

    @property
    def text(self) -> str:
        """What a person reads: the text, the files' names and links, or the choices."""
        lines: list[str] = []
        if self.static_content is not None:
            if self.static_content.text:
                lines.append(self.static_content.text)
            for file in self.static_content.attachments:
                lines.append(" ".join(part for part in (file.name, file.url) if part))
        if self.choices is not None:
            if self.choices.text:
                lines.append(self.choices.text)
            lines.extend(f"- {item.label}" for item in self.choices.option_items if item.label)
        return "\n".join(line for line in lines if line)


class MessagePayload(_Payload, frozen=True, kw_only=True):
    """``entryPayload`` of a ``Message`` entry; ``abstractMessage`` is required."""

    id: str = ""
    abstract_message: AbstractMessage
    message_reason: str | None = None


class ParticipantChange(_Payload, frozen=True, kw_only=True):
    """An item of a ParticipantChanged ``entries``: ``operation`` is ``add`` or ``remove``."""

    operation: str
    participant: Participant
    display_name: str = ""


class ParticipantChangedPayload(_Payload, frozen=True, kw_only=True):
    """``entryPayload`` of a ``ParticipantChanged`` entry."""

    id: str = ""
    entries: list[ParticipantChange] = []


class EstimatedWaitTime(_Payload, frozen=True, kw_only=True):
    """"EWT is usable only when ``isEWTRequested`` is true and ``estimatedWaitTimeInSeconds
    >= 0``; ``-1`` means none" (3.5)."""

    estimated_wait_time_in_seconds: int | float = -1
    is_ewt_requested: bool = msgspec.field(default=False, name="isEWTRequested")

    @property
    def seconds(self) -> int | None:
        """The estimate in whole seconds, or ``None`` when there is none."""
        if not self.is_ewt_requested or self.estimated_wait_time_in_seconds < 0:
            return None
        return round(self.estimated_wait_time_in_seconds)


class RoutingResultPayload(_Payload, frozen=True, kw_only=True):
    """``entryPayload`` of a ``RoutingResult`` entry.

    ``routingType`` is ``Initial``, ``Transfer`` (CONFIRMED) or ``Conference``;
    ``failureType`` is ``None``, ``Unknown``, ``SubmissionError`` or ``RoutingError``.
    """

    id: str = ""
    record_id: str = ""
    routing_type: str = "Initial"
    failure_type: str = "None"
    failure_reason: str = ""
    error_messages: list[Any] = []
    estimated_wait_time: EstimatedWaitTime | None = None
    queue_position: int | None = None

    @property
    def failed(self) -> bool:
        """Whether routing failed: any ``failureType`` but ``None`` (or an empty one)."""
        return self.failure_type not in ("None", "")

    @property
    def failure_detail(self) -> str:
        """Salesforce's reason for a failure: ``failureReason``, the messages, or the type."""
        if self.failure_reason:
            return self.failure_reason
        texts = [_error_text(message) for message in self.error_messages]
        return "; ".join(text for text in texts if text) or self.failure_type


def _error_text(message: Any) -> str:
    """An item of ``errorMessages`` (shape UNCONFIRMED): a string, or an object's ``message``."""
    if isinstance(message, dict):
        return str(message.get("message") or message)
    return str(message)


class SessionStatusChangedPayload(_Payload, frozen=True, kw_only=True):
    """``entryPayload`` of ``SessionStatusChanged``; field names OBSERVED only (8.4)."""

    id: str = ""
    session_status: str = ""
    previous_session_status: str = ""
    session_ended_by_role: str = ""


class TypingPayload(_Payload, frozen=True, kw_only=True):
    """``entryPayload`` of a typing indicator (content UNCONFIRMED; nothing is read)."""

    id: str = ""


class AcknowledgementPayload(_Payload, frozen=True, kw_only=True):
    """``entryPayload`` of a delivery or read acknowledgement."""

    id: str = ""
    acknowledgement_timestamp: int | None = None


class QueuePositionPayload(_Payload, frozen=True, kw_only=True):
    """``CONVERSATION_QUEUE_POSITION``: name OBSERVED, shape UNCONFIRMED (8.5).

    Read tolerantly wherever a position or an estimate could be: the entry payload, or the
    data envelope itself when the event carries no entry.
    """

    queue_position: int | None = None
    position: int | None = None
    estimated_wait_time: EstimatedWaitTime | int | None = None
    estimated_wait_time_in_seconds: int | None = None

    @property
    def value(self) -> int | None:
        """The position, if one was given (a position of 0 or less means none)."""
        given = self.queue_position if self.queue_position is not None else self.position
        return given if given is not None and given > 0 else None

    @property
    def wait_s(self) -> int | None:
        """The estimated wait in seconds, if one was given."""
        ewt = self.estimated_wait_time
        if isinstance(ewt, EstimatedWaitTime):
            return ewt.seconds
        seconds = ewt if ewt is not None else self.estimated_wait_time_in_seconds
        return seconds if seconds is not None and seconds >= 0 else None


class UnknownPayload(msgspec.Struct, frozen=True, gc=False):
    """An entry type bridged does not read (ClientAction, Note, ...): kept by name only."""

    entry_type: str


EntryPayload: TypeAlias = (
    MessagePayload
    | ParticipantChangedPayload
    | RoutingResultPayload
    | SessionStatusChangedPayload
    | TypingPayload
    | AcknowledgementPayload
    | QueuePositionPayload
    | UnknownPayload
)


class ConversationEntry(msgspec.Struct, frozen=True, kw_only=True, gc=False):
    """A ``conversationEntry`` with its ``entryPayload`` decoded (3.4).

    Attributes:
        identifier: the entry id; for a message, the message id ("" if absent: such an
            entry cannot be recognised again, so it is never de-duplicated).
        entry_type: ``Message``, ``ParticipantChanged``, ``RoutingResult``, ...
        sender: who made the entry (a blank participant when absent).
        sender_display_name: their display name.
        transcripted_timestamp: server time, epoch milliseconds (0 when absent).
        payload: the decoded ``entryPayload``.
    """

    identifier: str
    entry_type: str
    sender: Participant
    sender_display_name: str
    transcripted_timestamp: int
    payload: EntryPayload


class SseData(msgspec.Struct, frozen=True, kw_only=True, gc=False):
    """The ``data`` of a stream event (3.3), its entry decoded.

    Attributes:
        conversation_id: "lowercase UUID of the conversation" (required).
        entry: the entry, or ``None`` for an event that carries none.
        raw: the data as it came, for readers of an UNCONFIRMED shape (queue position).
    """

    conversation_id: str
    channel_address_identifier: str
    entry: ConversationEntry | None
    raw: bytes


class _RawEntry(_Payload, frozen=True, kw_only=True):
    sender_display_name: str = ""
    identifier: str = ""
    entry_type: str = ""
    entry_payload: msgspec.Raw = msgspec.Raw(b"null")
    sender: Participant | None = None
    transcripted_timestamp: int | float = 0
    client_timestamp: int | float | None = None
    related_records: list[Any] = []


class _RawEnvelope(_Payload, frozen=True, kw_only=True):
    channel_platform_key: str = ""
    channel_type: str = ""
    channel_address_identifier: str = ""
    conversation_id: str
    conversation_entry: _RawEntry | None = None


class _RawEntries(_Payload, frozen=True, kw_only=True):
    conversation_entries: list[_RawEntry] = []


class EntriesList(msgspec.Struct, frozen=True, kw_only=True, gc=False):
    """The 200 body of ``GET .../conversation/{id}/entries`` (2.9), entries decoded.

    ``entries`` are in the order Salesforce gave them (newest first by default).
    """

    entries: list[ConversationEntry]


class _EntryTypeOnly(_Payload, frozen=True, kw_only=True):
    entry_type: str = ""


_PAYLOAD_DECODERS: dict[str, msgspec.json.Decoder[Any]] = {
    "Message": msgspec.json.Decoder(MessagePayload),
    "ParticipantChanged": msgspec.json.Decoder(ParticipantChangedPayload),
    "RoutingResult": msgspec.json.Decoder(RoutingResultPayload),
    "SessionStatusChanged": msgspec.json.Decoder(SessionStatusChangedPayload),
    "TypingStartedIndicator": msgspec.json.Decoder(TypingPayload),
    "TypingStoppedIndicator": msgspec.json.Decoder(TypingPayload),
    "DeliveryAcknowledgement": msgspec.json.Decoder(AcknowledgementPayload),
    "ReadAcknowledgement": msgspec.json.Decoder(AcknowledgementPayload),
    "QueuePosition": msgspec.json.Decoder(QueuePositionPayload),
}
_string_decoder = msgspec.json.Decoder(str)
_entry_type_decoder = msgspec.json.Decoder(_EntryTypeOnly)
_envelope_decoder = msgspec.json.Decoder(_RawEnvelope)
_entries_decoder = msgspec.json.Decoder(_RawEntries)
_token_full_decoder = msgspec.json.Decoder(_TokenFull)
_token_core_decoder = msgspec.json.Decoder(_TokenCore)
_sent_decoder = msgspec.json.Decoder(SendMessageResponse)
_status_decoder = msgspec.json.Decoder(ConversationStatus)
_error_decoder = msgspec.json.Decoder(ErrorBody)
_queue_decoder = msgspec.json.Decoder(QueuePositionPayload)
_encoder = msgspec.json.Encoder()


def _fail(what: str, exc: msgspec.DecodeError) -> RemoteProtocolError:
    return RemoteProtocolError(f"{what} is not the documented shape: {exc}")


# The entry type an event implies when its entry names none bridged knows.
_EVENT_ENTRY_TYPES = {"CONVERSATION_QUEUE_POSITION": "QueuePosition"}


def _entry(raw: _RawEntry, where: str, event: str = "") -> ConversationEntry:
    """Decode ``raw.entry_payload`` (a JSON string on the stream, an object in the list)."""
    # The JSON text of the payload; msgspec decodes a str as it does bytes, so the string
    # form of the stream is decoded once, not re-encoded first.
    payload_bytes: bytes | str = bytes(raw.entry_payload)
    try:
        first = payload_bytes[:1]
        if first != b"{" and first != b'"':
            first = payload_bytes.lstrip()[:1]
        if first == b'"':
            payload_bytes = _string_decoder.decode(payload_bytes)
        entry_type = raw.entry_type
        if not entry_type and payload_bytes.lstrip()[:1] in (b"{", "{"):
            entry_type = _entry_type_decoder.decode(payload_bytes).entry_type
        decoder = _PAYLOAD_DECODERS.get(entry_type)
        if decoder is None and event in _EVENT_ENTRY_TYPES:
            decoder = _PAYLOAD_DECODERS[_EVENT_ENTRY_TYPES[event]]
        payload: EntryPayload
        if decoder is None:
            payload = UnknownPayload(entry_type=entry_type)
        elif payload_bytes.strip() in (b"", b"null", "", "null"):
            # Typing and acknowledgement entries are read for their envelope only; any
            # other type without a payload is not what the docs describe.
            if decoder.type not in (TypingPayload, AcknowledgementPayload,
                                    QueuePositionPayload):
                raise RemoteProtocolError(f"{where}.entryPayload is missing ({entry_type})")
            payload = decoder.type()
        else:
            payload = decoder.decode(payload_bytes)
    except msgspec.DecodeError as exc:
        raise _fail(f"{where}.entryPayload ({raw.entry_type or 'no entryType'})", exc) from None
    return ConversationEntry(
        identifier=raw.identifier or getattr(payload, "id", ""),
        entry_type=entry_type,
        sender=raw.sender or Participant(),
        sender_display_name=raw.sender_display_name,
        transcripted_timestamp=int(raw.transcripted_timestamp),
        payload=payload,
    )


def decode_sse_data(data: str | bytes, event: str = "") -> SseData:
    """Decode the ``data`` of a stream event, and its entry's payload.

    ``event`` (the SSE event type) only names the event in an error message.

    Raises:
        RemoteProtocolError: the data is not JSON of the documented shape (for example
            without ``conversationId``), naming the field.
    """
    raw_bytes = data.encode() if isinstance(data, str) else data
    try:
        envelope = _envelope_decoder.decode(raw_bytes)
    except msgspec.DecodeError as exc:
        raise _fail(f"{event or 'event'} data", exc) from None
    entry = None
    if envelope.conversation_entry is not None:
        entry = _entry(envelope.conversation_entry,
                       f"{event or 'event'} data: conversationEntry", event)
    return SseData(conversation_id=envelope.conversation_id,
                   channel_address_identifier=envelope.channel_address_identifier,
                   entry=entry, raw=raw_bytes)


def decode_queue_position(raw: bytes) -> QueuePositionPayload:
    """Read a queue position event's figures from its data envelope (shape UNCONFIRMED).

    Never fails: an unreadable figure is no figure.
    """
    try:
        return _queue_decoder.decode(raw)
    except msgspec.DecodeError:
        return QueuePositionPayload()


def decode_entries(body: bytes) -> EntriesList:
    """Decode the 200 body of *list entries* (2.9).

    Raises:
        RemoteProtocolError: the body is not the documented shape, naming the field.
    """
    try:
        raw = _entries_decoder.decode(body)
    except msgspec.DecodeError as exc:
        raise _fail("entries body", exc) from None
    return EntriesList(entries=[_entry(item, f"entries body: conversationEntries[{i}]")
                                for i, item in enumerate(raw.conversation_entries)])


def decode_access_token(body: bytes) -> tuple[AccessTokenResponse, str | None]:
    """Decode the 200 body of the token request.

    Returns:
        The response, and ``None`` or a sentence saying why ``context`` could not be read
        (the token is still used: the context only informs).

    Raises:
        RemoteProtocolError: no ``accessToken`` string (or not JSON at all).
    """
    problem = None
    context: TokenContext | None = None
    try:
        full: _TokenCore = _token_full_decoder.decode(body)
        context = full.context if isinstance(full, _TokenFull) else None
    except msgspec.DecodeError as exc:
        try:
            full = _token_core_decoder.decode(body)
        except msgspec.DecodeError as core_exc:
            raise _fail("access token body", core_exc) from None
        problem = f"access token context ignored: {exc}"
    last = full.last_event_id
    return AccessTokenResponse(access_token=full.access_token,
                               last_event_id=None if last is None else str(last),
                               context=context), problem


def decode_sent_entries(body: bytes) -> SendMessageResponse:
    """Decode a send's 202 body; an unreadable or empty body is an empty answer."""
    try:
        return _sent_decoder.decode(body) if body.strip() else SendMessageResponse()
    except msgspec.DecodeError:
        return SendMessageResponse()  # no client reads it (2.5): nothing to fail for


def decode_conversation_status(body: bytes) -> ConversationStatus:
    """Decode the 200 body of *get conversation* (2.10).

    Raises:
        RemoteProtocolError: the body is not a JSON object of the documented shape.
    """
    try:
        return _status_decoder.decode(body)
    except msgspec.DecodeError as exc:
        raise _fail("conversation body", exc) from None


def decode_error(body: bytes) -> ErrorBody:
    """Decode an error answer's body; never fails (a non-JSON body becomes its text)."""
    try:
        return _error_decoder.decode(body)
    except msgspec.DecodeError:
        return ErrorBody(message=body[:200].decode("utf-8", "replace").strip())


def encode_body(payload: Any) -> bytes:
    """Encode a request body as JSON."""
    return _encoder.encode(payload)


# --- the JWT and the org id -------------------------------------------------------------


class JwtClaims(_Payload, frozen=True, kw_only=True):
    """The claims of the access token that bridged reads (2.2).

    ``exp`` and ``iat`` are epoch seconds; ``orgId`` is the 15-character org id; ``sub`` is
    the end-user subject (``v2/iamessage/UNAUTH/NA/uid:<uuid>``). Each is ``None`` when
    absent.
    """

    exp: int | float | None = None
    iat: int | float | None = None
    org_id: str | None = None
    sub: str | None = None


_claims_decoder = msgspec.json.Decoder(JwtClaims)


def read_jwt(token: str) -> JwtClaims:
    """Read a JWT's payload without checking its signature ("no need to verify", 4.1).

    Raises:
        RemoteProtocolError: ``token`` is not three base64url parts with a JSON payload.
    """
    parts = token.split(".")
    if len(parts) != 3:
        raise RemoteProtocolError("accessToken is not a JWT (expected three dot-separated parts)")
    segment = parts[1]
    try:
        payload = base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))
        return _claims_decoder.decode(payload)
    except (binascii.Error, ValueError, msgspec.DecodeError) as exc:
        raise RemoteProtocolError(f"accessToken payload is not readable: {exc}") from None


def org_id_15(org_id: str) -> str:
    """The 15-character form of a Salesforce org id given in 15 or 18 characters.

    "The 15-character org ID" is what ``X-Org-Id`` wants (3.1): "an 18-character Salesforce
    id is the 15-character id plus a 3-character case-checksum suffix".

    Raises:
        ConfigError: ``org_id`` is not 15 or 18 characters starting with ``00D`` (the sample
            app's check).
    """
    if len(org_id) not in (15, 18) or not org_id.startswith("00D"):
        raise ConfigError("organization_id",
                          "must be an org id of 15 or 18 characters starting with 00D")
    return org_id[:15]
