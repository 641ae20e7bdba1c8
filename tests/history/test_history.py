"""bridged.history.decoder, pure: the tolerant reader, the transcript, splitting, prechat value."""

from __future__ import annotations

from pathlib import Path

import msgspec
import pytest

from bridged.errors import BridgedError
from bridged.history.decoder import (
    MAX_CHAT_MESSAGE,
    OMITTED_MARKER,
    PRECHAT_VALUE_LIMIT,
    HistoryUnavailable,
    HistoryUnreadable,
    Turn,
    decode_history,
    format_transcript,
    prechat_value,
    split_messages,
)

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "history"

CONVERSATION = [
    Turn(speaker="bot", text="How can I help?"),
    Turn(speaker="visitor", text="my card is blocked"),
    Turn(speaker="bot", text="Which card?"),
    Turn(speaker="visitor", text="the debit card"),
]

# Every accepted shape: the fixture and the turns it must give.
SHAPES = {
    "list_role_text.json": CONVERSATION,
    "messages_sender_message.json": CONVERSATION,
    "history_from_utterance.json": CONVERSATION,
    "turns_speaker_content.json": CONVERSATION,
    "dialogs_type_content_strings.json": CONVERSATION,
    "items_content_objects.json": CONVERSATION,
    "nested_message_object.json": CONVERSATION,
    "wrapped_data.json": CONVERSATION,
    "mixed_case_keys.json": CONVERSATION,
    "skips_unusable_turns.json": CONVERSATION,
    "empty_list.json": [],
    "empty_messages.json": [],
}

GARBAGE = {
    "garbage_not_json.json": "history body is not JSON (JSON is malformed: invalid character "
                             "(byte 0))",
    "garbage_html.json": "history body is not JSON (JSON is malformed: invalid character "
                         "(byte 0))",
    "garbage_truncated.json": "history body is not JSON (Input data was truncated)",
    "garbage_object_without_list.json": "history body holds no list of turns (a JSON object, "
                                        "and no list under messages, history, turns, "
                                        "dialogs, items)",
    "garbage_list_of_strings.json": "none of the 2 items of the history is a turn with a "
                                    "known speaker and a text",
    "garbage_no_known_turn.json": "none of the 2 items of the history is a turn with a "
                                  "known speaker and a text",
    "garbage_scalar.json": "history body holds no list of turns (a JSON number, and no list "
                           "under messages, history, turns, dialogs, items)",
    "garbage_json_string.json": "history body holds no list of turns (a JSON string, and no "
                                "list under messages, history, turns, dialogs, items)",
}


def test_every_fixture_is_covered() -> None:
    assert {p.name for p in FIXTURES.glob("*.json")} == set(SHAPES) | set(GARBAGE)


@pytest.mark.parametrize("name", sorted(SHAPES))
def test_each_shape_decodes_to_the_expected_turns(name: str) -> None:
    assert decode_history((FIXTURES / name).read_bytes()) == SHAPES[name]


@pytest.mark.parametrize("name", sorted(GARBAGE))
def test_garbage_is_unreadable_with_a_reason(name: str) -> None:
    with pytest.raises(HistoryUnreadable) as caught:
        decode_history((FIXTURES / name).read_bytes())
    assert caught.value.reason == GARBAGE[name]
    assert str(caught.value) == GARBAGE[name]


def test_unreadable_is_unavailable_and_a_bridged_error() -> None:
    assert issubclass(HistoryUnreadable, HistoryUnavailable)
    assert issubclass(HistoryUnavailable, BridgedError)


@pytest.mark.parametrize(("name", "speaker"), [
    *[(name, "bot") for name in ("bot", "assistant", "system", "agent", "BOT", "Agent")],
    *[(name, "visitor") for name in ("user", "visitor", "customer", "human", "client", "USER")],
])
def test_every_speaker_name_of_the_protocol(name: str, speaker: str) -> None:
    body = msgspec.json.encode([{"role": name, "text": "hi"}])
    assert decode_history(body) == [Turn(speaker=speaker, text="hi")]  # type: ignore[arg-type]


@pytest.mark.parametrize("key", ["role", "sender", "from", "speaker", "type"])
def test_every_speaker_key(key: str) -> None:
    assert decode_history(msgspec.json.encode([{key: "user", "text": "hi"}])) == [
        Turn(speaker="visitor", text="hi")]


@pytest.mark.parametrize("key", ["text", "message", "utterance", "content"])
def test_every_text_key(key: str) -> None:
    assert decode_history(msgspec.json.encode([{"role": "bot", key: "hi"}])) == [
        Turn(speaker="bot", text="hi")]


@pytest.mark.parametrize("key", ["messages", "history", "turns", "dialogs", "items"])
def test_every_list_key(key: str) -> None:
    body = msgspec.json.encode({key: [{"role": "bot", "text": "hi"}]})
    assert decode_history(body) == [Turn(speaker="bot", text="hi")]


def test_the_first_known_speaker_value_wins_over_a_type_that_is_no_speaker() -> None:
    body = msgspec.json.encode([{"type": "message", "sender": "customer", "text": "hi"}])
    assert decode_history(body) == [Turn(speaker="visitor", text="hi")]


def test_a_list_nested_two_levels_down_is_found() -> None:
    body = msgspec.json.encode({"result": {"history": {"items": [{"role": "bot", "text": "a"}]}}})
    assert decode_history(body) == [Turn(speaker="bot", text="a")]


def test_a_list_deeper_than_that_is_not_searched_for() -> None:
    body = msgspec.json.encode(
        {"data": {"data": {"data": {"messages": [{"role": "bot", "text": "a"}]}}}})
    with pytest.raises(HistoryUnreadable):
        decode_history(body)


def test_a_byte_order_mark_is_ignored() -> None:
    assert decode_history(b'\xef\xbb\xbf[{"role": "bot", "text": "hi"}]') == [
        Turn(speaker="bot", text="hi")]


def test_turns_that_all_have_empty_text_are_an_empty_history_not_garbage() -> None:
    assert decode_history(b'[{"role": "bot", "text": ""}, {"role": "user", "content": []}]') == []


def test_absurd_nesting_is_unreadable_not_a_crash() -> None:
    with pytest.raises(HistoryUnreadable) as caught:
        decode_history(b"[" * 100_000 + b"]" * 100_000)
    assert caught.value.reason.startswith("history body is not JSON")


def test_the_reason_never_quotes_the_body() -> None:
    secret = "my pin is 1234"
    for body in (f'{{"note": "{secret}"}}', f'[{{"role": "x", "text": "{secret}"}}]',
                 f"{secret} not json"):
        with pytest.raises(HistoryUnreadable) as caught:
            decode_history(body.encode())
        assert secret not in caught.value.reason


# --- format_transcript ---------------------------------------------------------------------


def test_format_transcript_marks_each_line_bot_or_visitor() -> None:
    assert format_transcript(CONVERSATION) == [
        "Bot: How can I help?",
        "Visitor: my card is blocked",
        "Bot: Which card?",
        "Visitor: the debit card",
    ]


def test_format_transcript_labels_and_one_line_per_turn() -> None:
    turns = [Turn(speaker="bot", text="line one\n\nline  two"), Turn(speaker="visitor", text="x")]
    assert format_transcript(turns, bot_label="Assistant", visitor_label="Customer") == [
        "Assistant: line one line two", "Customer: x"]


def test_format_transcript_of_nothing() -> None:
    assert format_transcript([]) == []


# --- split_messages ------------------------------------------------------------------------


def test_the_message_limit_constant() -> None:
    assert MAX_CHAT_MESSAGE == 2000


def test_lines_that_fit_make_one_message() -> None:
    lines = format_transcript(CONVERSATION)
    assert split_messages(lines, MAX_CHAT_MESSAGE) == ["\n".join(lines)]
    assert split_messages(lines) == ["\n".join(lines)]


def test_lines_are_packed_without_splitting_any_and_in_order() -> None:
    lines = ["a" * 4, "b" * 4, "c" * 4, "d" * 9, "e"]
    assert split_messages(lines, 9) == ["aaaa\nbbbb", "cccc", "ddddddddd", "e"]


def test_a_message_exactly_at_the_limit() -> None:
    assert split_messages(["aaaa", "bbbb"], 9) == ["aaaa\nbbbb"]
    assert split_messages(["aaaa", "bbbb"], 8) == ["aaaa", "bbbb"]


def test_a_line_longer_than_the_limit_is_split_at_words() -> None:
    assert split_messages(["Bot: the quick brown fox jumps"], 12) == [
        "Bot: the", "quick brown", "fox jumps"]


def test_a_long_line_is_split_at_words_and_its_pieces_packed_with_its_neighbours() -> None:
    messages = split_messages(["short", "Visitor: one two three four five six", "end"], 16)
    assert messages == ["short", "Visitor: one two", "three four five", "six\nend"]
    assert all(len(m) <= 16 for m in messages)


def test_a_word_longer_than_the_limit_is_cut_hard() -> None:
    assert split_messages(["x" * 25], 10) == ["x" * 10, "x" * 10, "x" * 5]


@pytest.mark.parametrize("limit", [1, 2, 5, 7, 13, 40, 100])
def test_limits_are_honoured_and_nothing_but_split_whitespace_is_lost(limit: int) -> None:
    lines = [*format_transcript(CONVERSATION * 3), "y" * 57, "word " * 30]
    messages = split_messages(lines, limit)
    assert all(1 <= len(m) <= limit for m in messages)
    squeeze = "".join("".join(lines).split())
    assert "".join("".join(messages).split()) == squeeze


def test_split_of_nothing_and_bad_limits() -> None:
    assert split_messages([], 10) == []
    with pytest.raises(ValueError, match="limit must be at least 1, got 0"):
        split_messages(["a"], 0)


# --- prechat_value -------------------------------------------------------------------------


def test_the_prechat_limit_constant() -> None:
    assert PRECHAT_VALUE_LIMIT == 4000


def test_a_history_that_fits_is_joined_whole() -> None:
    lines = format_transcript(CONVERSATION)
    assert prechat_value(lines) == "\n".join(lines)
    assert prechat_value(lines, len("\n".join(lines))) == "\n".join(lines)
    assert prechat_value([], 50) == ""


def test_the_oldest_lines_are_dropped_and_the_cut_marked() -> None:
    lines = ["Bot: one one one one", "Visitor: two two two", "Bot: three", "Visitor: four"]
    limit = len(OMITTED_MARKER) + 1 + len("Bot: three\nVisitor: four")
    value = prechat_value(lines, limit)
    assert value == f"{OMITTED_MARKER}\nBot: three\nVisitor: four"
    assert len(value) == limit
    assert prechat_value(lines, limit - 1) == f"{OMITTED_MARKER}\nVisitor: four"


def test_a_latest_line_too_long_for_the_room_keeps_its_beginning() -> None:
    lines = ["Bot: hi", "Visitor: " + "z" * 100]
    value = prechat_value(lines, 50)
    assert value == f"{OMITTED_MARKER}\nVisitor: " + "z" * (50 - len(OMITTED_MARKER) - 11) + "…"
    assert len(value) == 50


def test_a_limit_too_small_for_the_marker_keeps_the_end() -> None:
    assert prechat_value(["Bot: hello", "Visitor: bye"], 10) == "sitor: bye"
    with pytest.raises(ValueError, match="limit must be at least 1, got 0"):
        prechat_value(["a"], 0)


@pytest.mark.parametrize("limit", [1, 10, 24, 25, 26, 30, 60, 200])
def test_the_prechat_value_never_exceeds_its_limit(limit: int) -> None:
    lines = format_transcript(CONVERSATION * 5)
    assert len(prechat_value(lines, limit)) <= limit
