"""Envelope decoding and encoding (pure)."""

from __future__ import annotations

import msgspec
import pytest

from bridged.errors import BadEnvelope, TooLarge
from bridged.ocp import envelopes as env


def decode(obj: object, fmt: env.Format = env.JSON) -> env.Inbound:
    data = msgspec.msgpack.encode(obj) if fmt == env.MSGPACK else msgspec.json.encode(obj)
    return env.decode_inbound(data, fmt)


@pytest.mark.parametrize("fmt", [env.JSON, env.MSGPACK])
def test_every_command_decodes_in_both_formats(fmt: env.Format) -> None:
    assert decode({"type": "start", "chat": "c1", "profile": "p", "ocpvars": {"a": "b"},
                   "unknown": 1}, fmt) == env.Start(chat="c1", profile="p", ocpvars={"a": "b"})
    assert decode({"type": "message", "chat": "c1", "id": "m1", "text": "hi"}, fmt) == \
        env.Message(chat="c1", id="m1", text="hi")
    assert decode({"type": "typing", "chat": "c1", "active": True}, fmt) == \
        env.Typing(chat="c1", active=True)
    assert decode({"type": "end", "chat": "c1"}, fmt) == env.End(chat="c1")
    assert decode({"type": "attach", "chat": "c1", "after": 0}, fmt) == \
        env.Attach(chat="c1", after=0)
    assert decode({"type": "ack", "chat": "c1", "seq": 3}, fmt) == env.Ack(chat="c1", seq=3)


@pytest.mark.parametrize(("obj", "detail", "chat", "ref"), [
    ({"type": "message", "chat": "c1", "id": "m1"},
     "text: Object missing required field `text`", "c1", "m1"),
    ({"type": "message", "chat": "c1", "id": "m1", "text": 5},
     "text: Expected `str`, got `int`", "c1", "m1"),
    ({"type": "dance", "chat": "c1"}, "type: unknown envelope type", "c1", "dance"),
    ({"chat": "c1"}, "type: Object missing required field `type`", "c1", None),
    ({"type": "start", "chat": "bad id!"},
     "chat: Expected `str` matching regex '^[A-Za-z0-9._:-]{1,128}$'", None, "start"),
    ({"type": "start", "chat": "x" * 129},
     "chat: Expected `str` matching regex '^[A-Za-z0-9._:-]{1,128}$'", None, "start"),
    ({"type": "attach", "chat": "c1", "after": -1}, "after: Expected `int` >= 0", "c1",
     "attach"),
    ({"type": "message", "chat": "c1", "id": "", "text": "x"},
     "id: Expected `str` of length >= 1", "c1", "message"),
    ({"type": "start", "chat": "c1", "config": {"prechat_details": [{"label": "a"}]}},
     "config.prechat_details[0].value: Object missing required field `value`", "c1", "start"),
    ({"type": "start", "chat": "c1", "ocpvars": {"a": 1}},
     "ocpvars[...]: Expected `str`, got `int`", "c1", "start"),
])
def test_bad_envelopes_name_the_field(obj: object, detail: str, chat: str | None,
                                      ref: str | None) -> None:
    with pytest.raises(BadEnvelope) as info:
        decode(obj)
    assert info.value.detail == detail
    assert info.value.code == "bad_envelope"
    assert info.value.chat == chat
    assert info.value.ref == ref


def test_not_json_at_all() -> None:
    with pytest.raises(BadEnvelope) as info:
        env.decode_inbound(b"{nope", env.JSON)
    assert info.value.detail.startswith("frame: not valid JSON")


def test_text_over_10000_characters_is_too_large() -> None:
    with pytest.raises(TooLarge) as info:
        decode({"type": "message", "chat": "c1", "id": "m1", "text": "x" * 10001})
    assert info.value.detail == "text: 10001 characters, at most 10000"
    assert (info.value.chat, info.value.ref) == ("c1", "m1")
    assert decode({"type": "message", "chat": "c1", "id": "m1", "text": "x" * 10000})


def test_outbound_events_omit_absent_optional_fields() -> None:
    ended = env.Ended(chat="c", seq=4, reason="agent", text="bye")
    assert msgspec.json.decode(env.encode(ended, env.JSON)) == {
        "type": "ended", "chat": "c", "seq": 4, "reason": "agent", "text": "bye"}
    error = env.Error(code="busy", detail="full")
    assert msgspec.msgpack.decode(env.encode(error, env.MSGPACK)) == {
        "type": "error", "code": "busy", "detail": "full"}
    queued = env.Queued(chat="c", seq=1, position=None, wait_s=None, text="")
    assert msgspec.json.decode(env.encode(queued, env.JSON))["position"] is None
