"""The wire between OCP and bridged (PROTOCOL.md section 2): envelopes as msgspec Structs.

Every frame is one envelope, a tagged union on ``type``. The tag values are written out
explicitly so that renaming a class can never change the wire. Inbound envelopes are
*commands* from OCP; outbound ones are *facts* about a chat (plus ``hello`` and ``error``).

Two encodings share these types: ``bridged.v1+json`` (text frames) and
``bridged.v1+msgpack`` (binary frames). One decoder and one encoder of each are built here,
once, and reused.
"""

from __future__ import annotations

__all__ = [
    "JSON",
    "MSGPACK",
    "SUBPROTOCOLS",
    "UNSET",
    "Ack",
    "AgentJoined",
    "AgentMessage",
    "AgentTyping",
    "Attach",
    "ChatEvent",
    "Delivered",
    "End",
    "Ended",
    "Error",
    "Hello",
    "Inbound",
    "Message",
    "Outbound",
    "Queued",
    "Start",
    "Transferred",
    "Typing",
    "decode_inbound",
    "encode",
]

from typing import Annotated, Any, Literal, TypeAlias

import msgspec

from bridged.config.webchat import WebchatFields
from bridged.errors import BadEnvelope, TooLarge, describe_validation_error

UNSET = msgspec.UNSET
Format: TypeAlias = Literal["bridged.v1+json", "bridged.v1+msgpack"]
JSON: Format = "bridged.v1+json"
MSGPACK: Format = "bridged.v1+msgpack"
SUBPROTOCOLS = (JSON, MSGPACK)

MAX_TEXT = 10000
CHAT_ID_PATTERN = r"^[A-Za-z0-9._:-]{1,128}$"
ChatId = Annotated[str, msgspec.Meta(pattern=CHAT_ID_PATTERN)]
MessageId = Annotated[str, msgspec.Meta(min_length=1, max_length=64)]
# The upper bound of 10000 is checked after decoding, so that it earns ``too_large``.
Text = Annotated[str, msgspec.Meta(min_length=1)]
Seq = Annotated[int, msgspec.Meta(ge=0)]


class _Envelope(msgspec.Struct, frozen=True, kw_only=True, tag_field="type", gc=False):
    """Base of every envelope; unknown fields are ignored (PROTOCOL.md section 2)."""


class _ChatCommand(_Envelope, frozen=True, kw_only=True):
    """Base of every command about one chat: ``chat`` is OCP's id for it."""

    chat: ChatId


class _ChatEvent(_Envelope, frozen=True, kw_only=True):
    """Base of every event about one chat: numbered by ``seq`` (1, 2, ...) per chat."""

    chat: str
    seq: int


# --- OCP -> bridged: commands ---------------------------------------------------------


class Start(_ChatCommand, tag="start", frozen=True, kw_only=True):
    """Hand this chat over to a Salesforce agent."""

    profile: str | None = None
    config: WebchatFields | None = None
    ocpvars: dict[str, str] = {}
    visitor_name: str | None = None
    history_session: str | None = None
    history_token: str | None = None


class Message(_ChatCommand, tag="message", frozen=True, kw_only=True):
    """The visitor says something."""

    id: MessageId
    text: Text


class Typing(_ChatCommand, tag="typing", frozen=True, kw_only=True):
    """The visitor's typing indicator, with the draft for sneak peek."""

    active: bool
    text: str | None = None


class End(_ChatCommand, tag="end", frozen=True, kw_only=True):
    """The visitor or OCP ends the chat."""


class Attach(_ChatCommand, tag="attach", frozen=True, kw_only=True):
    """Bind the chat to this connection and replay the held events after ``after``."""

    after: Seq


class Ack(_ChatCommand, tag="ack", frozen=True, kw_only=True):
    """The client has processed every event up to ``seq``."""

    seq: Seq


Inbound: TypeAlias = Start | Message | Typing | End | Attach | Ack

# --- bridged -> OCP: facts --------------------------------------------------------------


class Hello(_Envelope, tag="hello", frozen=True, kw_only=True):
    """Sent right after the upgrade."""

    version: int = 1
    node: str
    max_frame_bytes: int


class Queued(_ChatEvent, tag="queued", frozen=True, kw_only=True):
    """The chat request waits in the queue (again at every queue update)."""

    position: int | None
    wait_s: int | None
    text: str


class AgentJoined(_ChatEvent, tag="agent_joined", frozen=True, kw_only=True):
    """An agent accepted the chat."""

    agent: str


class AgentMessage(_ChatEvent, tag="agent_message", frozen=True, kw_only=True):
    """The agent said something."""

    agent: str
    text: str


class AgentTyping(_ChatEvent, tag="agent_typing", frozen=True, kw_only=True):
    """The agent's typing indicator."""

    active: bool


class Transferred(_ChatEvent, tag="transferred", frozen=True, kw_only=True):
    """The chat moved to another agent."""

    agent: str


class Delivered(_ChatEvent, tag="delivered", frozen=True, kw_only=True):
    """Salesforce accepted the visitor's message ``id``."""

    id: str


class Ended(_ChatEvent, tag="ended", frozen=True, kw_only=True):
    """The chat is over; its id is free again."""

    reason: Literal["agent", "client", "no_agent", "failed", "detached"]
    text: str
    detail: str | msgspec.UnsetType = msgspec.UNSET


class Error(_Envelope, tag="error", frozen=True, kw_only=True):
    """An envelope was refused."""

    code: str
    detail: str
    chat: str | msgspec.UnsetType = msgspec.UNSET
    ref: str | msgspec.UnsetType = msgspec.UNSET


ChatEvent: TypeAlias = (
    Queued | AgentJoined | AgentMessage | AgentTyping | Transferred | Delivered | Ended
)
Outbound: TypeAlias = Hello | Error | ChatEvent

_json_decoder = msgspec.json.Decoder(Inbound)
_msgpack_decoder = msgspec.msgpack.Decoder(Inbound)
_json_loose = msgspec.json.Decoder()
_msgpack_loose = msgspec.msgpack.Decoder()
_json_encoder = msgspec.json.Encoder()
_msgpack_encoder = msgspec.msgpack.Encoder()


def encode(envelope: Outbound, fmt: Format) -> bytes:
    """Encode an outbound envelope for a connection's subprotocol."""
    if fmt == MSGPACK:
        return _msgpack_encoder.encode(envelope)
    return _json_encoder.encode(envelope)


def _context(data: bytes, fmt: Format) -> tuple[str | None, str | None]:
    """Best effort ``(chat, ref)`` of an envelope that failed to decode, for the error."""
    try:
        loose: Any = (_msgpack_loose if fmt == MSGPACK else _json_loose).decode(data)
    except (msgspec.DecodeError, ValueError):
        return None, None
    if not isinstance(loose, dict):
        return None, None
    chat = loose.get("chat")
    if not _valid_chat(chat):
        chat = None
    ref = loose.get("id")
    if not (isinstance(ref, str) and ref):
        ref = loose.get("type")
    return chat, ref[:64] if isinstance(ref, str) else None


def _valid_chat(chat: object) -> bool:
    try:
        msgspec.convert(chat, ChatId)
    except msgspec.ValidationError:
        return False
    return True


def decode_inbound(data: bytes, fmt: Format) -> Inbound:
    """Decode one frame from OCP into a command envelope.

    Args:
        data: the frame's payload.
        fmt: the connection's subprotocol.

    Raises:
        BadEnvelope: not decodable, an unknown ``type``, or a missing or wrong field; the
            detail names the field.
        TooLarge: a ``text`` over 10000 characters.
    """
    try:
        envelope: Inbound = (_msgpack_decoder if fmt == MSGPACK else _json_decoder).decode(data)
    except msgspec.ValidationError as exc:
        chat, ref = _context(data, fmt)
        field, reason = describe_validation_error(str(exc))
        if field == "type" and "Invalid value" in reason:
            reason = "unknown envelope type"
        detail = f"{field}: {reason}" if field else reason
        raise BadEnvelope(detail, chat=chat, ref=ref) from None
    except msgspec.DecodeError as exc:
        kind = "MessagePack" if fmt == MSGPACK else "JSON"
        raise BadEnvelope(f"frame: not valid {kind} ({exc})") from None
    text = getattr(envelope, "text", None)
    if text is not None and len(text) > MAX_TEXT:
        too_large_ref = envelope.id if isinstance(envelope, Message) else "typing"
        raise TooLarge(
            f"text: {len(text)} characters, at most {MAX_TEXT}",
            chat=envelope.chat,
            ref=too_large_ref,
        )
    return envelope
