"""The simulator's own view of the Enhanced Chat wire: paths, bodies, replies. Pure.

Request bodies are decoded into frozen msgspec Structs that follow what Salesforce's sample
app sends (MESSAGING.md 2). Decoding is strict: no coercion (``"true"`` is not ``true``),
and with ``reject_unknown_fields`` a field the docs do not show is refused, naming its JSON
path. Every error is JSON ``{"message", "errorCode"}`` (MESSAGING.md 4.5).

Nothing here is shared with bridged's client: the simulator is a separate reading of the
Salesforce side, so a misreading in one is not mirrored in the other.
"""

from __future__ import annotations

import re
from typing import Any

import msgspec
from msgspec import UNSET, UnsetType

__all__ = [
    "ACCESS_TOKEN_PATH",
    "API_PREFIX",
    "CONTINUATION_PATH",
    "CONVERSATION_PATH",
    "LIST_PATH",
    "ORG_MISMATCH_TEXT",
    "STREAM_PATH",
    "WEB_DEPLOYMENT_TEXT",
    "Ack",
    "AcknowledgeEntries",
    "CreateConversation",
    "FileEntry",
    "FileMessage",
    "OutgoingMessage",
    "Reply",
    "SendMessage",
    "StaticContent",
    "TokenRequest",
    "TypingEntry",
    "decode_body",
    "decode_json",
    "encode",
    "error_reply",
    "is_lower_uuid",
    "json_reply",
    "long_id",
    "uuid_problem",
]

API_PREFIX = "/iamessage/api/v2/"
ACCESS_TOKEN_PATH = API_PREFIX + "authorization/unauthenticated/access-token"
CONTINUATION_PATH = API_PREFIX + "authorization/continuation-access-token"
CONVERSATION_PATH = API_PREFIX + "conversation"
LIST_PATH = API_PREFIX + "conversation/list"
STREAM_PATH = "/eventrouter/v1/sse"

# Observed texts (MESSAGING.md 1, 3.1, 4.5).
WEB_DEPLOYMENT_TEXT = "Set the esDeveloperName to a deploymentType that's set to api"
ORG_MISMATCH_TEXT = "OrgId in the header and token must match"

_ERROR_CODES = {
    400: "BAD_REQUEST",
    401: "UNAUTHORIZED",
    403: "FORBIDDEN",
    404: "NOT_FOUND",
    409: "CONFLICT",
    412: "PRECONDITION_FAILED",
    413: "PAYLOAD_TOO_LARGE",
    415: "UNSUPPORTED_MEDIA_TYPE",
    417: "EXPECTATION_FAILED",
    429: "TOO_MANY_REQUESTS",
    500: "INTERNAL_SERVER_ERROR",
    502: "BAD_GATEWAY",
    503: "SERVICE_UNAVAILABLE",
    504: "GATEWAY_TIMEOUT",
}

_UUID_RE = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")

_encoder = msgspec.json.Encoder()
encode = _encoder.encode


class Reply(msgspec.Struct, frozen=True, kw_only=True):
    """What the simulator answers to one request, before it becomes an HTTP response.

    Attributes:
        status: HTTP status code.
        body: Response body bytes (empty for a 204).
        content_type: ``Content-Type`` of the body, None when there is no body.
        headers: Extra response headers (``Retry-After``).
    """

    status: int
    body: bytes = b""
    content_type: str | None = None
    headers: tuple[tuple[str, str], ...] = ()


def json_reply(payload: Any, status: int = 200) -> Reply:
    """A JSON reply, encoded with msgspec."""
    return Reply(status=status, body=encode(payload), content_type="application/json")


def error_reply(
    status: int,
    message: str,
    error_code: str | None = None,
    headers: tuple[tuple[str, str], ...] = (),
) -> Reply:
    """The JSON error body every refusal carries: ``{"message", "errorCode"}``."""
    code = error_code or _ERROR_CODES.get(status, "ERROR")
    body = encode({"message": message, "errorCode": code})
    return Reply(status=status, body=body, content_type="application/json", headers=headers)


_SUFFIX_CHARS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ012345"


def long_id(short: str) -> str:
    """The 18-character form of a 15-character Salesforce id: the id and its case checksum
    (one character per 5-character chunk, its bit i set when character i is uppercase)."""
    suffix = ""
    for start in range(0, 15, 5):
        bits = sum(1 << i for i, char in enumerate(short[start:start + 5])
                   if "A" <= char <= "Z")
        suffix += _SUFFIX_CHARS[bits]
    return short + suffix


def is_lower_uuid(value: str) -> bool:
    """True for a canonical UUID in lowercase (``8-4-4-4-12`` hex digits)."""
    return _UUID_RE.fullmatch(value) is not None


def uuid_problem(value: str, field: str) -> Reply | None:
    """The 400 for an id that is not a lowercase UUID (text as observed, MESSAGING.md 2.0)."""
    if is_lower_uuid(value):
        return None
    return error_reply(
        400, f"Specify the {field} in UUID format. The UUID must be in lowercase."
    )


# ------------------------------------------------------------------------------------------
# Request bodies. Optional fields are UNSET when absent, so a present but wrongly typed value
# is still refused.


class _Body(msgspec.Struct, frozen=True, kw_only=True, rename="camel"):
    """Base of the request bodies: camelCase JSON names."""


class TokenRequest(_Body, frozen=True, kw_only=True):
    """Body of the unauthenticated access-token request (MESSAGING.md 2.1)."""

    org_id: str
    es_developer_name: str
    capabilities_version: str
    platform: str
    context: dict[str, Any] | UnsetType = UNSET
    device_id: str | UnsetType = UNSET


class CreateConversation(_Body, frozen=True, kw_only=True):
    """Body of create conversation (MESSAGING.md 2.4); ``routingAttributes`` may be null."""

    conversation_id: str
    es_developer_name: str
    routing_attributes: dict[str, str] | UnsetType | None = UNSET
    language: str | UnsetType = UNSET


class StaticContent(_Body, frozen=True, kw_only=True):
    """``message.staticContent`` of a text message."""

    format_type: str
    text: str


class OutgoingMessage(_Body, frozen=True, kw_only=True):
    """``message`` of send message: the client-made id and the text."""

    id: str
    message_type: str
    static_content: StaticContent
    in_reply_to_message_id: str | UnsetType | None = UNSET


class SendMessage(_Body, frozen=True, kw_only=True):
    """Body of send message (MESSAGING.md 2.5)."""

    message: OutgoingMessage
    es_developer_name: str
    is_new_messaging_session: bool | UnsetType = UNSET
    routing_attributes: dict[str, str] | UnsetType | None = UNSET
    language: str | UnsetType = UNSET


class TypingEntry(_Body, frozen=True, kw_only=True):
    """Body of the typing call (MESSAGING.md 2.6)."""

    entry_type: str
    id: str


class Ack(_Body, frozen=True, kw_only=True):
    """One acknowledgement (MESSAGING.md 2.7)."""

    id: str
    entry_type: str
    conversation_entry_id: str


class AcknowledgeEntries(_Body, frozen=True, kw_only=True):
    """Body of acknowledge-entries: ``{"acks": [...]}``."""

    acks: list[Ack]


class FileMessage(_Body, frozen=True, kw_only=True):
    """``message`` of the ``messageEntry`` part of a file upload (MESSAGING.md 2.13)."""

    id: str
    file_id: str
    text: str | UnsetType = UNSET
    in_reply_to_message_id: str | UnsetType | None = UNSET


class FileEntry(_Body, frozen=True, kw_only=True):
    """The ``messageEntry`` part of a file upload."""

    es_developer_name: str
    message: FileMessage
    is_new_messaging_session: bool | UnsetType = UNSET
    routing_attributes: dict[str, str] | UnsetType | None = UNSET
    language: str | UnsetType = UNSET


def _unknown_field(info: msgspec.inspect.Type, value: Any, path: str) -> str | None:
    """The JSON path of the first field of ``value`` that ``info`` does not declare."""
    if isinstance(info, msgspec.inspect.StructType):
        if not isinstance(value, dict):
            return None
        fields = {field.encode_name: field for field in info.fields}
        for key, item in value.items():
            field = fields.get(key)
            if field is None:
                return f"{path}.{key}"
            found = _unknown_field(field.type, item, f"{path}.{key}")
            if found is not None:
                return found
    elif isinstance(info, msgspec.inspect.UnionType):
        for member in info.types:
            found = _unknown_field(member, value, path)
            if found is not None:
                return found
    elif isinstance(info, msgspec.inspect.ListType) and isinstance(value, list):
        for index, item in enumerate(value):
            found = _unknown_field(info.item_type, item, f"{path}[{index}]")
            if found is not None:
                return found
    return None


_TYPE_INFO: dict[type, msgspec.inspect.Type] = {
    cls: msgspec.inspect.type_info(cls)
    for cls in (
        TokenRequest,
        CreateConversation,
        SendMessage,
        TypingEntry,
        AcknowledgeEntries,
        FileEntry,
    )
}


def decode_json(body: bytes) -> Any | Reply:
    """Parse a JSON body (any value), or the 400 that says why not."""
    if not body.strip():
        return error_reply(400, "A JSON request body is required")
    try:
        return msgspec.json.decode(body)
    except msgspec.DecodeError as exc:
        return error_reply(400, f"Malformed JSON: {exc}")


def decode_body(cls: type[Any], body: bytes | Any, *, reject_unknown: bool) -> Any:
    """Decode a request body strictly into ``cls``.

    Args:
        cls: One of the body Structs above.
        body: The raw bytes, or an already parsed JSON value.
        reject_unknown: Refuse a field the Struct does not declare (at any depth).

    Returns:
        The decoded Struct, or the 400 :class:`Reply` that names the offending field.
    """
    value = decode_json(body) if isinstance(body, bytes) else body
    if isinstance(value, Reply):
        return value
    if not isinstance(value, dict):
        return error_reply(400, "The request body must be a JSON object")
    if reject_unknown:
        unknown = _unknown_field(_TYPE_INFO[cls], value, "$")
        if unknown is not None:
            return error_reply(400, f"Unrecognized field `{unknown}`")
    try:
        return msgspec.convert(value, cls)
    except msgspec.ValidationError as exc:
        return error_reply(400, f"Invalid request body: {exc}")
