"""The simulator's view of the wire: header names, request bodies, replies. Pure.

Request bodies are decoded into frozen msgspec Structs that mirror the Chat REST API
Developer Guide's data types (SALESFORCE.md 4.3-4.11). Decoding is strict (no coercion of
``"true"`` into ``true``), unknown fields are ignored, and a failure names the field by its
JSON path, e.g. ``Object missing required field `transcriptFields` - at `$.prechatDetails[0]```.

Nothing here is an independent re-export of bridged's own wire module: the simulator is a
separate implementation of the Salesforce side, so a misreading in one is not mirrored in the
other.
"""

from __future__ import annotations

import re
from typing import Any

import msgspec
from msgspec import UNSET, UnsetType

__all__ = [
    "AFFINITY",
    "API_VERSION",
    "CONTENT_TYPE",
    "DUPLICATE_POLL_TEXT",
    "MAX_API_VERSION",
    "MIN_API_VERSION",
    "RECORDED_HEADERS",
    "SEQUENCE",
    "SESSION_KEY",
    "ChasitorInit",
    "ChasitorResyncState",
    "ChatEnd",
    "ChatMessage",
    "CustomDetail",
    "CustomEvent",
    "EmptyBody",
    "Entity",
    "EntityFieldsMap",
    "Reply",
    "SneakPeek",
    "decode_body",
    "encode",
    "is_affinity_token",
    "is_sf_id",
    "json_reply",
    "out_of_sync",
    "parse_api_version",
    "parse_int",
    "text_reply",
]

API_VERSION = "X-LIVEAGENT-API-VERSION"
AFFINITY = "X-LIVEAGENT-AFFINITY"
SESSION_KEY = "X-LIVEAGENT-SESSION-KEY"
SEQUENCE = "X-LIVEAGENT-SEQUENCE"
CONTENT_TYPE = "Content-Type"
RECORDED_HEADERS = (API_VERSION, AFFINITY, SESSION_KEY, SEQUENCE, CONTENT_TYPE)

# "The docs cover versions 29.0 to 67.0" (SALESFORCE.md 2.2).
MIN_API_VERSION = 29
MAX_API_VERSION = 67

# D-ERR, verbatim: the 409 for a second long poll.
DUPLICATE_POLL_TEXT = (
    "A duplicate long poll using the same session ID has caused the chat to terminate. "
    "Reestablish the chat in a new session."
)

_encoder = msgspec.json.Encoder()
encode = _encoder.encode

_AFFINITY_RE = re.compile(r"[0-9a-f]{8}")
_ID_RE = re.compile(r"[A-Za-z0-9]{15}(?:[A-Za-z0-9]{3})?")
_INT_RE = re.compile(r"-?[0-9]{1,18}")


class Reply(msgspec.Struct, frozen=True, kw_only=True):
    """What the simulator answers to one request, before it becomes an HTTP response.

    Attributes:
        status: HTTP status code.
        body: Response body bytes (empty for the bare 200 of a POST, and for 204).
        content_type: ``Content-Type`` of the body, None when there is no body.
    """

    status: int
    body: bytes = b""
    content_type: str | None = None


def text_reply(status: int, text: str) -> Reply:
    """A plain-text reply: every error body of the simulator is one of these."""
    return Reply(status=status, body=text.encode(), content_type="text/plain")


def json_reply(payload: Any, status: int = 200) -> Reply:
    """A JSON reply, encoded with msgspec."""
    return Reply(status=status, body=encode(payload), content_type="application/json")


def out_of_sync(sent: int, last_accepted: int) -> Reply:
    """The 409 for a wrong ``X-LIVEAGENT-SEQUENCE``.

    Observed text (SALESFORCE.md 6): "Out of sync Ack. Expected 498. Actual 4", where
    "Expected" only echoes what was sent and "Actual" is the last sequence accepted.
    """
    return text_reply(409, f"Out of sync Ack. Expected {sent}. Actual {last_accepted}")


def parse_int(raw: str) -> int | None:
    """A decimal integer string (optional minus sign), or None if it is anything else."""
    return int(raw) if _INT_RE.fullmatch(raw) else None


def parse_api_version(raw: str | None) -> int | Reply:
    """Check ``X-LIVEAGENT-API-VERSION``: "Every resource takes it" (D-HDR).

    Returns:
        The version as an int, or the 400 reply that names the header.
    """
    if raw is None:
        return text_reply(400, f"Missing header {API_VERSION}")
    value = parse_int(raw.strip())
    if value is None or not MIN_API_VERSION <= value <= MAX_API_VERSION:
        return text_reply(
            400,
            f"Invalid header {API_VERSION}: {raw!r} "
            f"(expected an integer from {MIN_API_VERSION} to {MAX_API_VERSION})",
        )
    return value


def is_affinity_token(raw: str) -> bool:
    """True for an 8-hex-digit token, the only shape any example shows (SALESFORCE.md 2.2)."""
    return _AFFINITY_RE.fullmatch(raw) is not None


def is_sf_id(raw: str, prefix: str) -> bool:
    """True for a 15- or 18-character Salesforce id with the given key prefix."""
    return raw.startswith(prefix) and _ID_RE.fullmatch(raw) is not None


# ---------------------------------------------------------------------------------------
# Request bodies (D-REQ / D-TYPES). Optional fields are UNSET when absent so that a
# present-but-wrongly-typed value is still refused.


class EntityFieldsMap(msgspec.Struct, frozen=True, kw_only=True, rename="camel"):
    """An item of ``Entity.entityFieldsMaps``: "all required" (D-TYPES)."""

    field_name: str
    label: str
    do_find: bool
    is_exact_match: bool
    do_create: bool


class Entity(msgspec.Struct, frozen=True, kw_only=True, rename="camel"):
    """An item of ``prechatEntities`` (D-TYPES; note the plural "Fields")."""

    entity_name: str
    entity_fields_maps: list[EntityFieldsMap]
    show_on_create: bool | UnsetType = UNSET
    link_to_entity_name: str | UnsetType = UNSET
    link_to_entity_field: str | UnsetType = UNSET
    save_to_transcript: str | UnsetType = UNSET


class CustomDetail(msgspec.Struct, frozen=True, kw_only=True, rename="camel"):
    """An item of ``prechatDetails``.

    ``transcriptFields`` is required (SALESFORCE.md 11.1). Both ``entityFieldMaps`` (docs
    example) and ``entityMaps`` (LINE) are accepted as lists; anything else is ignored.
    """

    label: str
    value: str
    transcript_fields: list[str]
    display_to_agent: bool | UnsetType = UNSET
    entity_field_maps: list[dict[str, Any]] | UnsetType = UNSET
    entity_maps: list[Any] | UnsetType = UNSET


class ChasitorInit(msgspec.Struct, frozen=True, kw_only=True, rename="camel"):
    """Body of ``POST Chasitor/ChasitorInit`` (SALESFORCE.md 4.3)."""

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
    receive_queue_updates: bool
    is_post: bool
    agent_id: str | UnsetType = UNSET
    do_fallback: bool | UnsetType = UNSET
    button_overrides: list[str] | UnsetType = UNSET


class ChatMessage(msgspec.Struct, frozen=True, kw_only=True):
    """Body of ``POST Chasitor/ChatMessage``."""

    text: str


class SneakPeek(msgspec.Struct, frozen=True, kw_only=True):
    """Body of ``POST Chasitor/ChasitorSneakPeek``."""

    position: int
    text: str


class ChatEnd(msgspec.Struct, frozen=True, kw_only=True):
    """Body of ``POST Chasitor/ChatEnd``: a ChatEndReason, "required" (D-PDF p.15)."""

    reason: str


class CustomEvent(msgspec.Struct, frozen=True, kw_only=True):
    """Body of ``POST Chasitor/CustomEvent``."""

    type: str
    data: str


class ChasitorResyncState(msgspec.Struct, frozen=True, kw_only=True, rename="camel"):
    """Body of ``POST Chasitor/ChasitorResyncState``."""

    organization_id: str


class EmptyBody(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """No body, or the ``{}`` that IBM sends for typing notifications (SALESFORCE.md 4.6)."""


_decoders: dict[type, msgspec.json.Decoder[Any]] = {
    cls: msgspec.json.Decoder(cls)
    for cls in (
        ChasitorInit,
        ChatMessage,
        SneakPeek,
        ChatEnd,
        CustomEvent,
        ChasitorResyncState,
        EmptyBody,
    )
}


def decode_body(cls: type[Any], body: bytes, resource: str) -> Any:
    """Decode a POST body strictly into ``cls``; ``EmptyBody`` also takes an empty body.

    Returns:
        The decoded Struct, or the 400 reply that names the offending field.
    """
    if not body.strip():
        if cls is EmptyBody:
            return EmptyBody()
        return text_reply(400, f"Invalid {resource} body: a JSON body is required")
    try:
        return _decoders[cls].decode(body)
    except msgspec.ValidationError as exc:
        return text_reply(400, f"Invalid {resource} body: {exc}")
    except msgspec.DecodeError as exc:
        return text_reply(400, f"Invalid {resource} body: malformed JSON ({exc})")

