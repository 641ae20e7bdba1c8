"""Pure tests of the event-stream parser: each WHATWG rule, and chunks split anywhere."""

from __future__ import annotations

import pytest

from bridged.errors import RemoteProtocolError
from bridged.salesforce.messaging.sse import SseEvent, SseParser

# What Salesforce's event router sends (MESSAGING.md 3.2): a ping, then a message event.
DATA = (
    '{"channelPlatformKey":"<opaque>","channelType":"embedded_messaging",'
    '"conversationId":"d10c295f-25c1-42ac-b762-32ac80f177b7","conversationEntry":{}}'
)
STREAM = (
    "event: ping\ndata: 0\n\n"
    f"id: 1739971138541-0001\nevent: CONVERSATION_MESSAGE\ndata: {DATA}\n\n"
).encode()


def parse(data: bytes, **kwargs: object) -> list[SseEvent]:
    return SseParser(**kwargs).feed(data)  # type: ignore[arg-type]


def byte_by_byte(data: bytes) -> list[SseEvent]:
    parser = SseParser()
    events: list[SseEvent] = []
    for i in range(len(data)):
        events += parser.feed(data[i:i + 1])
    return events


def test_salesforce_stream_gives_ping_then_message_with_its_id() -> None:
    assert parse(STREAM) == [
        SseEvent(event="ping", data="0", id=""),
        SseEvent(event="CONVERSATION_MESSAGE", data=DATA, id="1739971138541-0001"),
    ]


@pytest.mark.parametrize("end", ["\n", "\r", "\r\n"], ids=["LF", "CR", "CRLF"])
def test_every_line_end_is_understood(end: str) -> None:
    text = f"id: 7{end}event: x{end}data: a{end}data: b{end}{end}"
    assert parse(text.encode()) == [SseEvent(event="x", data="a\nb", id="7")]


def test_mixed_line_ends_in_one_stream() -> None:
    events = parse(b"data: a\r\ndata: b\rdata: c\n\rdata: d\r\n\n")
    assert events == [SseEvent(data="a\nb\nc"), SseEvent(data="d")]


def test_byte_by_byte_gives_the_same_events() -> None:
    assert byte_by_byte(STREAM) == parse(STREAM)


def test_crlf_split_between_cr_and_lf_is_one_line_end() -> None:
    parser = SseParser()
    assert parser.feed(b"data: a\r") == []
    # Were the LF a line end of its own, it would be a blank line and dispatch "a" now.
    assert parser.feed(b"\ndata: b\r") == []
    assert parser.feed(b"\n\r") == [SseEvent(data="a\nb")]  # CR alone: a blank line
    assert parser.feed(b"\n") == []  # the LF of that CRLF, not a second blank line
    assert parser.feed(b"data: c\n\n") == [SseEvent(data="c")]


def test_cr_then_blank_line_in_the_next_chunk_dispatches() -> None:
    parser = SseParser()
    assert parser.feed(b"data: a\r") == []
    assert parser.feed(b"\r") == [SseEvent(data="a")]


def test_utf8_character_split_across_chunks() -> None:
    encoded = "data: Grüß dich 👋\n\n".encode()
    cut = encoded.index("👋".encode()) + 2  # inside the four bytes of the emoji
    parser = SseParser()
    assert parser.feed(encoded[:cut]) == []
    assert parser.feed(encoded[cut:]) == [SseEvent(data="Grüß dich 👋")]
    assert byte_by_byte(encoded) == [SseEvent(data="Grüß dich 👋")]


def test_invalid_utf8_becomes_replacement_character() -> None:
    assert parse(b"data: a\xffb\n\n") == [SseEvent(data="a\ufffdb")]


def test_one_leading_bom_is_ignored_even_fed_byte_by_byte() -> None:
    stream = "\ufeffdata: x\n\n".encode()
    assert parse(stream) == [SseEvent(data="x")]
    assert byte_by_byte(stream) == [SseEvent(data="x")]


def test_a_second_bom_is_kept() -> None:
    # Only one leading BOM is ignored: the next one makes the field name "\ufeffdata".
    assert parse("\ufeff\ufeffdata: x\n\n".encode()) == []


def test_bom_later_in_the_stream_is_data() -> None:
    assert parse("data: \ufeffx\n\n".encode()) == [SseEvent(data="\ufeffx")]


def test_comment_lines_are_ignored() -> None:
    assert parse(b": keep-alive\n:\ndata: x\n: more\n\n") == [SseEvent(data="x")]


def test_comment_alone_dispatches_nothing() -> None:
    assert parse(b": hello\n\n") == []


def test_space_after_colon_is_stripped_once() -> None:
    assert parse(b"data:  two spaces\n\n") == [SseEvent(data=" two spaces")]
    assert parse(b"data:none\n\n") == [SseEvent(data="none")]


def test_field_without_colon_has_empty_value() -> None:
    # "data" alone appends an empty line: the event is dispatched with data "".
    assert parse(b"data\n\n") == [SseEvent(data="")]
    assert parse(b"data\ndata\n\n") == [SseEvent(data="\n")]


def test_value_may_contain_colons() -> None:
    assert parse(b'data: {"a": "b:c"}\n\n') == [SseEvent(data='{"a": "b:c"}')]


def test_no_event_without_data() -> None:
    assert parse(b"event: ping\n\n") == []
    assert parse(b"\n\n\n") == []


def test_event_type_does_not_leak_into_the_next_event() -> None:
    events = parse(b"event: ping\n\ndata: x\n\n")
    assert events == [SseEvent(event="message", data="x")]


def test_event_only_at_blank_line_and_incomplete_event_is_not_dispatched() -> None:
    parser = SseParser()
    assert parser.feed(b"data: x\n") == []
    assert parser.feed(b"data: y") == []
    assert parser.feed(b"\n") == []
    assert parser.feed(b"\n") == [SseEvent(data="x\ny")]


def test_last_event_id_persists_across_events() -> None:
    events = parse(b"id: 1\ndata: a\n\ndata: b\n\nid: 2\ndata: c\n\n")
    assert [e.id for e in events] == ["1", "1", "2"]


def test_id_without_data_still_sets_last_event_id() -> None:
    parser = SseParser()
    assert parser.feed(b"id: 5\n\n") == []
    assert parser.last_event_id == "5"
    assert parser.feed(b"data: x\n\n") == [SseEvent(data="x", id="5")]


def test_empty_id_resets_last_event_id() -> None:
    events = parse(b"id: 1\ndata: a\n\nid\ndata: b\n\n")
    assert [e.id for e in events] == ["1", ""]


def test_id_containing_nul_is_ignored() -> None:
    events = parse(b"id: 1\ndata: a\n\nid: 2\x003\ndata: b\n\n")
    assert [e.id for e in events] == ["1", "1"]


def test_last_event_id_given_at_start_and_kept_over_reset() -> None:
    parser = SseParser(last_event_id="41")
    assert parser.feed(b"data: a\n\n") == [SseEvent(data="a", id="41")]
    parser.feed(b"id: 42\ndata: b\n\ndata: partial")
    parser.reset()  # a reconnection: the partial event is gone, the id stays
    assert parser.last_event_id == "42"
    assert parser.feed(b"\n\n") == []
    assert parser.feed(b"data: c\n\n") == [SseEvent(data="c", id="42")]


def test_reset_accepts_a_new_bom_and_forgets_a_pending_cr() -> None:
    parser = SseParser()
    parser.feed(b"data: a\r")
    parser.reset()
    assert parser.feed("\ufeff\ndata: b\n\n".encode()) == [SseEvent(data="b")]


def test_retry_takes_only_ascii_digits() -> None:
    parser = SseParser()
    parser.feed(b"retry: 3000\n\n")
    assert parser.retry_ms == 3000
    parser.feed(b"retry: 1.5\n\nretry: -1\n\nretry: \xd9\xa3\n\nretry:\n\n")
    assert parser.retry_ms == 3000


def test_unknown_fields_are_ignored() -> None:
    assert parse(b"foo: bar\nData: no\ndata: x\n\n") == [SseEvent(data="x")]


def test_a_line_longer_than_max_size_is_refused() -> None:
    parser = SseParser(max_size=100)
    parser.feed(b"data: " + b"x" * 90)
    with pytest.raises(RemoteProtocolError) as info:
        parser.feed(b"x" * 20)
    assert str(info.value) == "event stream line longer than max_size (100 characters)"


def test_an_event_longer_than_max_size_is_refused() -> None:
    parser = SseParser(max_size=100)
    with pytest.raises(RemoteProtocolError) as info:
        parser.feed(b"data: " + b"x" * 50 + b"\n" + b"data: " + b"y" * 50 + b"\ndata: z\n")
    assert str(info.value) == "event stream event longer than max_size (100 characters)"


def test_size_bound_is_not_hit_by_many_small_events() -> None:
    parser = SseParser(max_size=100)
    events = parser.feed(b"data: 0123456789\n\n" * 50)
    assert len(events) == 50


def test_a_stream_split_at_any_point_gives_the_same_events() -> None:
    """Every line kind (comment, field without colon, data of several lines, id, retry,
    unknown field) with every line end, cut into two chunks at each position."""
    text = (": hello\r\nevent: ping\ndata: 0\n\n:\nid: 7\revent: x\r\ndata\ndata: a:b\n"
            "data:  c\nretry: 5\nfoo: bar\n\n" + STREAM.decode() + ": bye\n\ndata: \u00e9\n\n")
    data = text.encode()
    whole = parse(data)
    assert [e.data for e in whole] == ["0", "\na:b\n c", "0", DATA, "\u00e9"]
    for cut in range(len(data) + 1):
        parser = SseParser()
        assert parser.feed(data[:cut]) + parser.feed(data[cut:]) == whole, cut
        assert parser.retry_ms == 5
