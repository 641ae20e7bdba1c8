"""A sans-I/O parser of the event-stream format (WHATWG HTML, "Server-sent events").

Theory of operation
-------------------
Salesforce's event router speaks "standard ``text/event-stream``" (MESSAGING.md 3.2). The
shell reads bytes from the ``GET /eventrouter/v1/sse`` response and hands them to
:meth:`SseParser.feed` in whatever chunks the network delivers; the parser returns the events
completed by those bytes. It keeps no clock and does no I/O.

The rules, quoted from the WHATWG section "Parsing an event stream" next to the code that
obeys them:

* "The stream must then be parsed by reading everything line by line, with a U+000D CARRIAGE
  RETURN U+000A LINE FEED (CRLF) character pair, a single U+000A LINE FEED (LF) character not
  preceded by a U+000D CARRIAGE RETURN (CR) character, and a single U+000D CARRIAGE RETURN
  (CR) character not followed by a U+000A LINE FEED (LF) character being the ways in which a
  line can end." A chunk may end between the CR and the LF of one line end.
* "Streams must be decoded using the UTF-8 decode algorithm" (invalid bytes become U+FFFD);
  a chunk may end inside a character. "One leading U+FEFF BYTE ORDER MARK character must be
  ignored if any are present."
* "If the line is empty (a blank line): Dispatch the event." "If the line starts with a
  U+003A COLON character (:): Ignore the line." Otherwise the field name is what comes before
  the first colon and the value what follows it; "if value starts with a U+0020 SPACE
  character, remove it from value"; a line without a colon is a field whose value is empty.
* ``event`` sets the event type; ``data`` appends the value and a LF to the data buffer;
  ``id`` sets the last event ID buffer "if the field value does not contain U+0000 NULL";
  ``retry`` sets the reconnection time "if the field value consists of only ASCII digits";
  any other field is ignored.
* Dispatch: the last event ID buffer becomes the *last event ID*, which persists from event to
  event. "If the data buffer is an empty string, set the data buffer and the event type buffer
  to the empty string and return" (no event). A trailing LF is removed from the data; the
  type defaults to ``message``. An incomplete event at the end of the stream is discarded.

Salesforce's keep-alive (``event: ping`` / ``data: 0``) is an event like any other here;
the Enhanced Chat core ignores it.

Unlike a browser, the parser bounds what it buffers: a line, or an event's data, longer than
``max_size`` characters raises :class:`~bridged.errors.RemoteProtocolError`, so that a
misbehaving server cannot make bridged hold an unbounded amount of memory for one chat.
"""

from __future__ import annotations

__all__ = ["DEFAULT_MAX_SIZE", "SseEvent", "SseParser"]

import codecs
import re

import msgspec

from bridged._lists import appended
from bridged.errors import RemoteProtocolError

# Salesforce sends "one JSON object on one line" per event (MESSAGING.md 3.2); a message is at
# most a few kilobytes of text. One MiB leaves a wide margin and still bounds memory.
DEFAULT_MAX_SIZE = 1 << 20

_LINE_END = re.compile(r"\r\n|\r|\n")
_DIGITS = re.compile(r"[0-9]+")
_BOM = "\ufeff"
_UTF8_DECODER = codecs.getincrementaldecoder("utf-8")


def _new_decoder() -> codecs.IncrementalDecoder:
    return _UTF8_DECODER(errors="replace")


class SseEvent(msgspec.Struct, frozen=True, kw_only=True, gc=False):
    """One dispatched event.

    Attributes:
        event: the event type (``message`` when the stream named none).
        data: the data lines joined with LF.
        id: the last event ID as of this event: the ``id`` of this event or, when it had
            none, of the latest earlier event that had one ("" if none ever did).
    """

    event: str = "message"
    data: str = ""
    id: str = ""


class SseParser:
    """Turns the bytes of one event stream into :class:`SseEvent` values (sans-I/O).

    Args:
        max_size: the most characters the parser holds for one line, or for one event's data
            (whichever is reached first raises).
        last_event_id: the last event ID to start from (the one a reconnection sent as
            ``Last-Event-Id``), so that an event without ``id`` reports it.

    Attributes:
        last_event_id: the last event ID so far (it survives :meth:`reset`).
        retry_ms: the reconnection time the stream asked for with ``retry``, if any.
    """

    # One per chat: slots, not an instance dict.
    __slots__ = ("_after_cr", "_data", "_data_size", "_decoder", "_event", "_id", "_partial",
                 "_partial_size", "_started", "last_event_id", "max_size", "retry_ms")

    def __init__(self, *, max_size: int = DEFAULT_MAX_SIZE, last_event_id: str = "") -> None:
        self.max_size = max_size
        self.last_event_id = last_event_id
        self.retry_ms: int | None = None
        self.reset()

    def reset(self) -> None:
        """Start a new stream (a reconnection): forget partial input, keep the last event ID."""
        # Made only for a chunk that ends inside a character (or is not valid UTF-8), and
        # dropped once it holds nothing back: most chats never need one (one per chat
        # otherwise, a few hundred bytes).
        self._decoder: codecs.IncrementalDecoder | None = None
        self._started = False  # the first character (a BOM, maybe) has not been seen yet
        self._after_cr = False  # the last line ended with a CR: a LF next belongs to it
        # () while empty, both (bridged._lists): a parser waits between events. The current
        # line, in pieces (fed byte by byte, maybe), and the event's data lines.
        self._partial: list[str] | tuple[()] = ()
        self._partial_size = 0
        self._data: list[str] | tuple[()] = ()
        self._data_size = 0
        self._event = ""
        self._id = self.last_event_id  # the "last event ID buffer"

    def feed(self, chunk: bytes) -> list[SseEvent]:
        """Parse ``chunk`` (any part of the stream) and return the events it completed.

        Raises:
            RemoteProtocolError: a line or an event is longer than ``max_size`` characters.
        """
        if self._decoder is None:
            # Nothing of a character held back: a chunk of whole, valid UTF-8 (the usual) is
            # decoded in one C call; any other goes to an incremental decoder, which then
            # gives what it would have given from the start.
            try:
                text = chunk.decode()
            except UnicodeDecodeError:
                self._decoder = _new_decoder()
                text = self._decode(chunk)
        else:
            text = self._decode(chunk)
        if not text:
            return []
        if not self._started:
            self._started = True
            if text.startswith(_BOM):
                text = text[1:]
        if self._after_cr and text.startswith("\n"):
            text = text[1:]  # the LF of a CRLF split across two chunks
        self._after_cr = False
        events: list[SseEvent] = []
        if "\r" in text:
            lines: list[str] = []
            start = 0
            for match in _LINE_END.finditer(text):
                lines.append(text[start:match.start()])
                start = match.end()
            rest = text[start:]
            self._after_cr = text.endswith("\r")
        else:
            # Line feeds alone (what servers send): a plain split, the same lines.
            lines = text.split("\n")
            rest = lines.pop()
        if self._partial and lines:
            self._partial.append(lines[0])
            lines[0] = "".join(self._partial)
            self._partial = ()
            self._partial_size = 0
        # Line by line, inline (a call per line cost more than the work of most lines): a
        # blank line dispatches, a colon first is a comment, else a field (``data`` and
        # ``event`` handled here, the others by _process_field).
        for line in lines:
            if not line:
                self._dispatch(events)
                continue
            name, colon, value = line.partition(":")
            if not name:
                continue  # a comment
            if colon and value[:1] == " ":
                value = value[1:]
            if name == "data":  # appended(), inline: this is the loop's own work
                if self._data:
                    self._data.append(value)
                else:
                    self._data = [value]
                self._data_size += len(value) + 1
                if self._partial_size + self._data_size > self.max_size:
                    self._check_size()
            elif name == "event":
                self._event = value
            else:
                self._process_field(name, value)
        if rest:
            self._partial = appended(self._partial, rest)
            self._partial_size += len(rest)
            self._check_size()
        return events

    def _decode(self, chunk: bytes) -> str:
        decoder = self._decoder
        assert decoder is not None
        text = decoder.decode(chunk)
        if not decoder.getstate()[0]:
            self._decoder = None  # nothing held back: the next chunk starts afresh
        return text

    def _check_size(self) -> None:
        if self._partial_size + self._data_size > self.max_size:
            what = "line" if self._partial_size > self._data_size else "event"
            raise RemoteProtocolError(
                f"event stream {what} longer than max_size ({self.max_size} characters)")

    def _process_field(self, name: str, value: str) -> None:
        if name == "event":
            self._event = value
        elif name == "data":
            self._data = appended(self._data, value)
            self._data_size += len(value) + 1
            self._check_size()
        elif name == "id" and "\0" not in value:
            self._id = value
        elif name == "retry" and _DIGITS.fullmatch(value):
            self.retry_ms = int(value)
        # Otherwise (an unknown field, an id with NUL, a retry not all digits): "ignore".

    def _dispatch(self, events: list[SseEvent]) -> None:
        self.last_event_id = self._id
        data, event = self._data, self._event
        self._data, self._data_size, self._event = (), 0, ""
        if not data:
            return
        events.append(SseEvent(event=event or "message", data="\n".join(data),
                               id=self.last_event_id))
