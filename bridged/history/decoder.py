"""The bot conversation handed to the agent: a tolerant reader and the formatting. Pure.

PROTOCOL.md section 4: "OCP does not publish the response's shape, so bridged reads it
tolerantly." :func:`decode_history` turns whatever OCP answers into a list of :class:`Turn`;
:func:`format_transcript` makes readable lines of them; :func:`split_messages` packs those
lines into chat messages small enough for Live Agent, and :func:`prechat_value` into one
prechat detail value. The fetch itself lives in :mod:`bridged.history.client`.

What the reader accepts (PROTOCOL.md section 4; the sentences starting with * go beyond it):

* The turns: a JSON list, or an object holding it under ``messages``, ``history``, ``turns``,
  ``dialogs`` or ``items``. * That object may itself sit under one of those keys or under
  ``data``, ``result`` or ``payload`` (two levels at most): ``{"data": {"messages": [...]}}``.
* A turn's text under ``text``, ``message``, ``utterance`` or ``content``: a string, or a list
  of strings or of objects with ``text`` (the parts are joined with a space). * The value may
  also be an object read as a turn in its own right: ``{"message": {"text": "hi"}}``, and it
  may name the speaker there: ``{"message": {"role": "user", "text": "hi"}}``.
* A turn's speaker under ``role``, ``sender``, ``from``, ``speaker`` or ``type``: ``bot``,
  ``assistant``, ``system``, ``agent`` for the bot; ``user``, ``visitor``, ``customer``,
  ``human``, ``client`` for the visitor. Values compare case-insensitively. * The value may be
  an object naming the speaker under one of those keys: ``{"from": {"role": "bot"}}``. Every
  speaker key is tried in that order and the first known value wins, so
  ``{"type": "message", "from": {"role": "bot"}}`` reads as a bot turn.
* Beyond it too: keys compare case-insensitively (``"Messages"``, ``"Text"``), and a UTF-8
  byte order mark is ignored.

What it does with the rest:

* A turn with a known speaker but no text, or only blank text, is skipped: there is nothing
  to show the agent (a bot turn that only offered buttons, say).
* A turn whose speaker is missing or unknown is skipped, not guessed: the agent acts on who
  said what, and misattributed words are worse than a missing line.
* Items that are not objects are skipped alike.
* Turns keep the order of the body; timestamps, if any, are not used to sort them.
* ``[]`` (or ``{"messages": []}``) is a valid, empty history. A body that is not JSON, holds
  no list of turns, or holds items none of which is a turn (no item with a known speaker and
  a text key) raises :class:`HistoryUnreadable`. Reasons never quote the body: it is the
  visitor's words.

Exceptions (both under :class:`bridged.errors.BridgedError`)::

    BridgedError
    └── HistoryUnavailable           the history cannot be had: the one the caller catches
        └── HistoryUnreadable        the body was received but cannot be read
"""

from __future__ import annotations

__all__ = [
    "BOT_SPEAKERS",
    "LIST_KEYS",
    "MAX_CHAT_MESSAGE",
    "OMITTED_MARKER",
    "PRECHAT_VALUE_LIMIT",
    "SPEAKER_KEYS",
    "TEXT_KEYS",
    "VISITOR_SPEAKERS",
    "WRAPPER_KEYS",
    "HistoryUnavailable",
    "HistoryUnreadable",
    "Speaker",
    "Turn",
    "decode_history",
    "format_transcript",
    "prechat_value",
    "split_messages",
]

import re
from collections.abc import Iterable, Sequence
from typing import Any, Literal, TypeAlias

import msgspec

from bridged.errors import BridgedError

Speaker: TypeAlias = Literal["bot", "visitor"]

# Salesforce documents no length limit for a chat message: the Chat REST API's ChatMessage
# request body is {"text": String} with no maximum stated (developer.salesforce.com, Chat REST
# API Developer Guide, "ChatMessage" request and "Request Bodies"), and no limit turned up in
# Salesforce's help pages, its SDK issues or client code (searched 2026). So this is a
# conservative choice, not a documented figure: 2,000 characters is what comparable
# agent consoles take from a visitor (e.g. Live Assist for Dynamics 365: "Up to 2000
# characters can be sent by the visitor"), well under anything a chat console would refuse,
# and short enough to read. Counted in code points (Python ``len``), not bytes.
MAX_CHAT_MESSAGE = 2000

# Not documented either: a CustomDetail ``value`` is a String (Chat REST API, "Data Types").
# The value is shown in the agent's details panel and may be copied into a transcript field
# through ``transcriptFields``; a Long Text Area field holds 32,768 characters by default, a
# Text field 255. 4,000 characters keeps the ChasitorInit body small and the panel readable
# (about 40 short turns). An operator who maps the value into a Text(255) field passes 255.
PRECHAT_VALUE_LIMIT = 4000

OMITTED_MARKER = "[earlier turns omitted]"

LIST_KEYS = ("messages", "history", "turns", "dialogs", "items")
WRAPPER_KEYS = ("data", "result", "payload")
TEXT_KEYS = ("text", "message", "utterance", "content")
SPEAKER_KEYS = ("role", "sender", "from", "speaker", "type")
BOT_SPEAKERS = frozenset({"bot", "assistant", "system", "agent"})
VISITOR_SPEAKERS = frozenset({"user", "visitor", "customer", "human", "client"})

_MAX_DEPTH = 2  # nesting followed for wrappers, nested messages and speaker objects
_SPACES = re.compile(r"\s+")
_BOM = b"\xef\xbb\xbf"


class HistoryUnavailable(BridgedError):
    """The bot history cannot be had; the agent is told so and the chat goes on.

    PROTOCOL.md section 4: "A history call that fails or times out does not stop the chat".

    Attributes:
        reason: what went wrong, for logs and for the agent's notice; never holds a token
            or the body.
        status: the HTTP status of the answer, when there was one.
    """

    def __init__(self, reason: str, *, status: int | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.status = status

    def __str__(self) -> str:
        return self.reason


class HistoryUnreadable(HistoryUnavailable):
    """OCP answered, but the body is not a history this module can read.

    A subclass of :class:`HistoryUnavailable` because "a body it cannot read counts as
    unavailable" (PROTOCOL.md section 4): a caller catches the one base.
    """


class Turn(msgspec.Struct, frozen=True, kw_only=True):
    """One turn of the bot conversation.

    Attributes:
        speaker: ``"bot"`` or ``"visitor"``.
        text: what was said, stripped, never empty.
    """

    speaker: Speaker
    text: str


def decode_history(body: bytes) -> list[Turn]:
    """Read OCP's history answer tolerantly (the shapes are listed in the module docstring).

    Args:
        body: the raw response body.

    Returns:
        The turns in the body's order; ``[]`` for an empty history.

    Raises:
        HistoryUnreadable: the body is not JSON, holds no list of turns, or none of its
            items is a turn.
    """
    try:
        document = msgspec.json.decode(body.removeprefix(_BOM))
    except (msgspec.DecodeError, RecursionError) as exc:
        # msgspec's message names the fault and a byte offset, never the content.
        raise HistoryUnreadable(f"history body is not JSON ({exc})") from None
    items = _find_list(document, 0)
    if items is None:
        raise HistoryUnreadable(
            f"history body holds no list of turns (a JSON {_kind(document)}, and no list "
            f"under {', '.join(LIST_KEYS)})"
        )
    turns: list[Turn] = []
    recognised = 0
    for item in items:
        speaker, text = _read_turn(item, 0)
        if speaker is None or text is None:
            continue
        recognised += 1
        if text:
            turns.append(Turn(speaker=speaker, text=text))
    if items and not recognised:
        raise HistoryUnreadable(
            f"none of the {len(items)} items of the history is a turn with a known "
            f"speaker and a text"
        )
    return turns


def format_transcript(
    turns: Iterable[Turn], *, bot_label: str = "Bot", visitor_label: str = "Visitor"
) -> list[str]:
    """One readable line per turn: ``"Bot: How can I help?"``, ``"Visitor: my card ..."``.

    Runs of whitespace, line breaks included, become one space, so that one line is one
    turn: :func:`split_messages` and :func:`prechat_value` count on it.

    Args:
        turns: the conversation, oldest first.
        bot_label: the name the bot's lines start with.
        visitor_label: the name the visitor's lines start with.

    Returns:
        The lines, in the turns' order.
    """
    labels = {"bot": bot_label, "visitor": visitor_label}
    return [f"{labels[turn.speaker]}: {_SPACES.sub(' ', turn.text).strip()}" for turn in turns]


def split_messages(lines: Sequence[str], limit: int = MAX_CHAT_MESSAGE) -> list[str]:
    """Pack lines, newline-separated, into as few messages of at most ``limit`` characters.

    A line is never split unless it alone is longer than ``limit``; then it is cut at the
    last whitespace that fits (the whitespace is dropped), or hard at ``limit`` when a
    piece has none, and its pieces are packed like lines. The order is kept.

    Args:
        lines: the lines, e.g. from :func:`format_transcript`.
        limit: the most characters a message may have.

    Returns:
        The messages; ``[]`` when there are no lines.

    Raises:
        ValueError: ``limit`` is less than 1.
    """
    if limit < 1:
        raise ValueError(f"limit must be at least 1, got {limit}")
    messages: list[str] = []
    current: list[str] = []
    size = 0
    for line in lines:
        for piece in _cut(line, limit) if len(line) > limit else (line,):
            # Joining adds one newline per piece after the first.
            grown = size + len(piece) + (1 if current else 0)
            if current and grown > limit:
                messages.append("\n".join(current))
                current, grown = [], len(piece)
            current.append(piece)
            size = grown
    if current:
        messages.append("\n".join(current))
    return messages


def prechat_value(lines: Sequence[str], limit: int = PRECHAT_VALUE_LIMIT) -> str:
    """The history as one prechat detail value: the lines newline-joined, at most ``limit``.

    When they do not fit, the oldest lines are dropped and the value starts with
    :data:`OMITTED_MARKER` on a line of its own: the agent needs the latest turns most.
    If even the latest line does not fit after the marker, its beginning is kept and the
    cut is marked with ``…``. If not even the marker fits, the value is the end of the
    joined text.

    Args:
        lines: the lines, oldest first, e.g. from :func:`format_transcript`.
        limit: the most characters the value may have.

    Returns:
        The value; ``""`` when there are no lines.

    Raises:
        ValueError: ``limit`` is less than 1.
    """
    if limit < 1:
        raise ValueError(f"limit must be at least 1, got {limit}")
    joined = "\n".join(lines)
    if len(joined) <= limit:
        return joined
    room = limit - len(OMITTED_MARKER) - 1  # characters left after the marker and its newline
    if room < 2:
        return joined[-limit:]
    kept: list[str] = []
    used = -1  # the first kept line brings no joining newline
    for line in reversed(lines):
        if used + 1 + len(line) > room:
            break
        kept.append(line)
        used += 1 + len(line)
    if not kept:
        latest = lines[-1]
        kept = [latest[: room - 1].rstrip() + "…"]
    return "\n".join([OMITTED_MARKER, *reversed(kept)])


def _cut(line: str, limit: int) -> list[str]:
    """Cut a line longer than ``limit`` into pieces of at most ``limit``, at words if possible."""
    pieces: list[str] = []
    rest = line
    while len(rest) > limit:
        head = rest[: limit + 1]  # a space just after the limit is a clean cut too
        at = max(head.rfind(" "), head.rfind("\t"))
        if at > 0:
            pieces.append(rest[:at].rstrip())
            rest = rest[at + 1 :].lstrip()
        else:
            pieces.append(rest[:limit])
            rest = rest[limit:]
    if rest:
        pieces.append(rest)
    return [piece for piece in pieces if piece]


def _kind(value: Any) -> str:
    """The JSON name of a decoded value's type, for reasons."""
    if isinstance(value, dict):
        return "object"
    if isinstance(value, list):
        return "list"
    if isinstance(value, str):
        return "string"
    if isinstance(value, bool):
        return "boolean"
    if value is None:
        return "null"
    return "number"


def _get(obj: dict[str, Any], key: str) -> Any:
    """``obj[key]`` with the key compared case-insensitively; ``None`` if absent."""
    if key in obj:
        return obj[key]
    for name, value in obj.items():
        if isinstance(name, str) and name.lower() == key:
            return value
    return None


def _find_list(document: Any, depth: int) -> list[Any] | None:
    """The list of turns: the document itself, or under a list key, or one wrapper down."""
    if isinstance(document, list):
        return document
    if not isinstance(document, dict) or depth > _MAX_DEPTH:
        return None
    for key in LIST_KEYS:
        value = _get(document, key)
        if isinstance(value, list):
            return value
    for key in (*LIST_KEYS, *WRAPPER_KEYS):
        value = _get(document, key)
        if isinstance(value, dict):
            found = _find_list(value, depth + 1)
            if found is not None:
                return found
    return None


def _speaker_of(value: Any, depth: int) -> Speaker | None:
    """Map a speaker value (a string, or an object naming one) to a speaker."""
    if isinstance(value, str):
        name = value.strip().lower()
        if name in BOT_SPEAKERS:
            return "bot"
        if name in VISITOR_SPEAKERS:
            return "visitor"
        return None
    if isinstance(value, dict) and depth < _MAX_DEPTH:
        for key in SPEAKER_KEYS:
            speaker = _speaker_of(_get(value, key), depth + 1)
            if speaker is not None:
                return speaker
    return None


def _text_of(value: Any) -> str | None:
    """The text of a string or of a list of strings / objects with ``text``.

    ``None`` when the value is no text at all (a number, say); ``""`` when it is an empty one.
    """
    if isinstance(value, str):
        return value.strip()
    if isinstance(value, list):
        parts: list[str] = []
        for part in value:
            if isinstance(part, dict):
                part = _get(part, "text")
            if isinstance(part, str) and part.strip():
                parts.append(part.strip())
        return " ".join(parts)
    return None


def _read_turn(item: Any, depth: int) -> tuple[Speaker | None, str | None]:
    """The speaker and text of one item; either is ``None`` when the item has none."""
    if not isinstance(item, dict):
        return None, None
    speaker: Speaker | None = None
    for key in SPEAKER_KEYS:
        speaker = _speaker_of(_get(item, key), 0)
        if speaker is not None:
            break
    text: str | None = None
    for key in TEXT_KEYS:
        value = _get(item, key)
        if isinstance(value, dict) and depth < _MAX_DEPTH:
            # {"message": {"text": ...}}: a nested message, which may name the speaker.
            inner_speaker, inner_text = _read_turn(value, depth + 1)
            speaker = speaker or inner_speaker
            found = inner_text
        else:
            found = _text_of(value)
        if found:
            return speaker, found
        if found is not None and text is None:
            text = found  # an empty text: keep looking for a non-empty one under other keys
    return speaker, text
