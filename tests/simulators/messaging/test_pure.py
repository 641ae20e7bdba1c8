"""The pure modules on their own: SSE bytes, event ids, limits, tokens, bodies, uploads."""

from __future__ import annotations

import pytest

from bridged.simulators.messaging.entries import text_message
from bridged.simulators.messaging.limits import SlidingWindow
from bridged.simulators.messaging.records import StreamRecord
from bridged.simulators.messaging.sse import (
    PING_FRAME,
    envelope,
    event_frame,
    format_event_id,
    parse_event_id,
)
from bridged.simulators.messaging.streams import EventStream, StreamHub
from bridged.simulators.messaging.tokens import TokenBook, TokenProblem, decode_part
from bridged.simulators.messaging.uploads import check_file, parse_form
from bridged.simulators.messaging.wire import (
    CreateConversation,
    Reply,
    decode_body,
    is_lower_uuid,
    long_id,
)
from tests.simulators.messaging.helpers import ORG, new_id


def test_event_frames() -> None:
    assert PING_FRAME == b"event: ping\ndata: 0\n\n"
    frame = event_frame("1-2", "CONVERSATION_MESSAGE", b'{"a":"b\\nc"}')
    assert frame == b'id: 1-2\nevent: CONVERSATION_MESSAGE\ndata: {"a":"b\\nc"}\n\n'
    with pytest.raises(ValueError):
        event_frame("1", "X", b"two\nlines")
    data = envelope(conversation_id="c", entry=None, channel_address_id="a", platform_key="k")
    assert b"\n" not in data and b"conversationEntry" not in data


def test_event_ids() -> None:
    assert format_event_id(7, 1700000000000) == "1700000000000-7"
    assert parse_event_id("1700000000000-7") == 7
    assert parse_event_id("0") == 0 and parse_event_id(" 12 ") == 12
    for bad in ("", "abc", "1-2-3", "-5", "1.5"):
        assert parse_event_id(bad) is None, bad


def test_entries_show_the_payload_two_ways() -> None:
    entry = text_message(sender={"role": "Agent"}, display_name="A", message_id="m",
                         text="hi", now_ms=5)
    assert isinstance(entry.as_event()["entryPayload"], str)
    assert entry.as_listed()["entryPayload"]["abstractMessage"]["id"] == "m"
    assert entry.event == "CONVERSATION_MESSAGE"


def test_sliding_window() -> None:
    window = SlidingWindow(2, 10.0)
    assert window.allows("k", 0.0)
    window.hit("k", 0.0)
    window.hit("k", 1.0)
    assert not window.allows("k", 9.0) and window.retry_after("k", 9.0) == 1.0
    assert window.allows("k", 10.0) and window.allows("other", 9.0)
    window.reap(100.0)
    assert window.retry_after("k", 100.0) == 0.0
    with pytest.raises(ValueError):
        SlidingWindow(0, 1.0)


def test_tokens_are_checked_against_the_book() -> None:
    book = TokenBook(ORG, new_id(), max_tokens=10)
    token = book.mint(deployment="Sim_Echo", now=1000.0, lifetime_s=0.5)
    assert book.check(token.raw, 1000.4) is token
    expired = book.check(token.raw, 1000.5)
    assert isinstance(expired, TokenProblem) and expired.message == "Jwt is expired"
    claims = decode_part(token.raw.split(".")[1])
    assert claims["exp"] == 1001 and claims["iat"] == 1000
    follow = book.mint(deployment="x", now=1000.1, lifetime_s=99, continues=token)
    assert (follow.subject, follow.expires_at, follow.deployment) == (
        token.subject, token.expires_at, "Sim_Echo")
    head, body, _ = token.raw.split(".")
    forged = book.check(f"{head}.{body}.AAAA", 1000.0)
    assert isinstance(forged, TokenProblem) and "signature" in forged.message
    for junk in ("a.b", "a.b.c", "..."):
        assert isinstance(book.check(junk, 1000.0), TokenProblem)
    with pytest.raises(ValueError):
        decode_part("%%%")


def test_bodies_decode_strictly() -> None:
    ok = decode_body(CreateConversation, b'{"conversationId": "x", "esDeveloperName": "y"}',
                     reject_unknown=True)
    assert isinstance(ok, CreateConversation)
    nested = decode_body(CreateConversation, {"conversationId": "x", "esDeveloperName": "y",
                                              "routingAttributes": {"a": "b"}},
                         reject_unknown=True)
    assert isinstance(nested, CreateConversation)
    for raw in (b"", b"{", b"[]", b'{"conversationId": 1, "esDeveloperName": "y"}'):
        assert isinstance(decode_body(CreateConversation, raw, reject_unknown=True), Reply)
    assert is_lower_uuid(new_id()) and not is_lower_uuid(new_id().upper())


def test_multipart_parsing() -> None:
    boundary = "XyZ"
    body = (
        f"--{boundary}\r\nContent-Disposition: form-data; name=\"messageEntry\"\r\n"
        "Content-Type: application/json\r\n\r\n{}\r\n"
        f"--{boundary}\r\nContent-Disposition: form-data; name=\"fileData\"; "
        "filename=\"a.PDF\"\r\nContent-Type: application/octet-stream\r\n\r\n%PDF\r\n"
        f"--{boundary}--\r\n"
    ).encode()
    parts = parse_form(f"multipart/form-data; boundary={boundary}", body)
    assert not isinstance(parts, Reply)
    assert parts["messageEntry"].data == b"{}" and parts["fileData"].filename == "a.PDF"
    assert check_file(parts["fileData"], max_bytes=10, extensions=("pdf",)) == (
        "a.PDF", "application/pdf")
    refused = check_file(parts["fileData"], max_bytes=3, extensions=("pdf",))
    assert isinstance(refused, Reply) and refused.status == 413
    assert isinstance(parse_form("application/json", body), Reply)


def test_long_ids_carry_the_case_checksum() -> None:
    assert long_id("00D000000000001") == "00D000000000001EAA"
    # A real org id and its 18-character form (MESSAGING.md 2.2: 00DNy0000000Hgn).
    assert long_id("00DNy0000000Hgn") == "00DNy0000000HgnMAE"


def test_stream_hub_finds_a_tokens_streams_among_many() -> None:
    hub = StreamHub(replay_depth=0)

    def open_stream(subject: str, jwt_id: str) -> EventStream:
        record = StreamRecord(number=0, opened_at=0.0, jwt_id=jwt_id, subject=subject,
                              headers={}, last_event_id=None, concurrent=0, record_max=0)
        stream = EventStream(record, jwt_id, 10)
        hub.attach(subject, stream)
        return stream

    a1, b1 = open_stream("s1", "a"), open_stream("s2", "b")
    a2 = open_stream("s1", "a")
    assert hub.of_token("a") == [a1, a2]
    assert hub.of_token("b") == [b1]
    hub.detach("s1", a1)
    assert hub.of_token("a") == [a2]
    hub.detach("s1", a2)
    hub.detach("s2", b1)
    assert hub.of_token("a") == [] and hub.of_token("b") == [] and hub.all() == []
