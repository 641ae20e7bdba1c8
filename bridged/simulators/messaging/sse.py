"""The bytes of the event stream (MESSAGING.md 3.2, 3.3). Pure.

Every event but ``ping`` carries ``id:``; ``data:`` is one JSON object on one line (JSON
escapes line breaks inside strings, so one line is guaranteed); an empty line ends each
event. A keep-alive is ``event: ping`` / ``data: 0`` without an id.

Event ids are opaque to a client; here they are ``<epoch ms>-<n>``, where ``n`` counts every
event of the simulator. :func:`parse_event_id` also takes a bare integer (the Android SDK
sends ``0`` when it has nothing), so a replay can find "everything after ``n``".
"""

from __future__ import annotations

import re
from typing import Any

import msgspec

__all__ = [
    "CHANNEL_TYPE",
    "PING_FRAME",
    "envelope",
    "event_frame",
    "format_event_id",
    "parse_event_id",
]

CHANNEL_TYPE = "embedded_messaging"
PING_FRAME = b"event: ping\ndata: 0\n\n"

_ID_RE = re.compile(r"(?:[0-9]{1,15}-)?([0-9]{1,18})")
_json = msgspec.json.Encoder()


def format_event_id(number: int, now_ms: int) -> str:
    """The ``id:`` of the ``number``-th event."""
    return f"{now_ms}-{number}"


def parse_event_id(raw: str) -> int | None:
    """The event number in a ``Last-Event-Id`` value, or None if it is not one of ours."""
    match = _ID_RE.fullmatch(raw.strip())
    return int(match.group(1)) if match else None


def envelope(
    *,
    conversation_id: str,
    entry: dict[str, Any] | None,
    channel_address_id: str,
    platform_key: str,
) -> bytes:
    """The ``data`` JSON of an event (MESSAGING.md 3.3); no ``conversationEntry`` if None."""
    data: dict[str, Any] = {
        "channelPlatformKey": platform_key,
        "channelType": CHANNEL_TYPE,
        "channelAddressIdentifier": channel_address_id,
        "conversationId": conversation_id,
    }
    if entry is not None:
        data["conversationEntry"] = entry
    return _json.encode(data)


def event_frame(event_id: str, event: str, data: bytes) -> bytes:
    """One event on the wire: ``id:``, ``event:``, one ``data:`` line, an empty line."""
    if b"\n" in data or b"\r" in data:
        raise ValueError("SSE data must be one line")
    return b"id: %s\nevent: %s\ndata: %s\n\n" % (event_id.encode(), event.encode(), data)
