"""Pure tests of the simulator's session state machine: no loop, no socket."""

from __future__ import annotations

import json
import re
from typing import Any

import msgspec
import pytest

from bridged.simulators.liveagent.model import OutboxFull, Phase, Session, SessionOver
from bridged.simulators.liveagent.wire import DUPLICATE_POLL_TEXT, Reply, parse_api_version
from tests.simulators.liveagent.sim_helpers import ORG, fast_options, init_body

T0 = 1000.0
_BAD_VERSION = "Invalid header X-LIVEAGENT-API-VERSION: "
_RANGE = " (expected an integer from 29 to 67)"


def make_session(**overrides: Any) -> Session:
    return Session(fast_options(**overrides), now=T0, wall_ms=1_700_000_000_000)


def post(
    session: Session, resource: str, body: Any, seq: int | str | None, *, version: int = 49
) -> Reply:
    raw = b"" if body is None else json.dumps(body).encode()
    reply, _ = session.receive_post(
        resource,
        sequence=None if seq is None else str(seq),
        body=raw,
        now=T0,
        api_version=version,
    )
    return reply


def batch(reply: Reply | None) -> dict[str, Any]:
    assert reply is not None and reply.status == 200, reply
    return msgspec.json.decode(reply.body)


def types_of(payload: dict[str, Any]) -> list[str]:
    return [m["type"] for m in payload["messages"]]


def initialised(**overrides: Any) -> Session:
    session = make_session(**overrides)
    assert post(session, "ChasitorInit", init_body(session.id), 1).status == 200
    return session


def established(**overrides: Any) -> Session:
    """A session whose visitor has received ChatEstablished (ack = its sequence)."""
    session = initialised(**overrides)
    session.queue("ChatEstablished", {"name": "Ada Agent", "userId": "005000000000ADA"}, T0)
    payload = batch(session.open_poll("-1", T0))
    assert types_of(payload) == ["ChatEstablished"]
    assert session.phase is Phase.CHATTING
    return session


# ------------------------------------------------------------------------------------------
# Identity


def test_new_session_identity_has_the_documented_shapes() -> None:
    session = make_session()
    assert re.fullmatch(r"[0-9a-f-]{36}", session.id)
    prefix, _, rest = session.key.partition("!")
    assert prefix == session.id and rest
    assert re.fullmatch(r"[0-9a-f]{8}", session.affinity_token)
    assert session.phase is Phase.CREATED


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("49", 49),
        ("29", 29),
        ("67", 67),
        (None, "Missing header X-LIVEAGENT-API-VERSION"),
        ("28", f"{_BAD_VERSION}'28'{_RANGE}"),
        ("68", f"{_BAD_VERSION}'68'{_RANGE}"),
        ("42.0", f"{_BAD_VERSION}'42.0'{_RANGE}"),
        ("abc", f"{_BAD_VERSION}'abc'{_RANGE}"),
    ],
)
def test_api_version_is_an_integer_from_29_to_67(raw: str | None, expected: Any) -> None:
    result = parse_api_version(raw)
    if isinstance(expected, int):
        assert result == expected
    else:
        assert isinstance(result, Reply) and result.status == 400
        assert result.body.decode() == expected


# ------------------------------------------------------------------------------------------
# ChasitorInit validation


def test_valid_init_is_accepted_and_recorded() -> None:
    session = make_session()
    body = init_body(session.id, trackingId="", somethingNew={"x": 1})
    assert post(session, "ChasitorInit", body, 1).status == 200
    assert session.phase is Phase.ROUTING
    assert session.init == body
    assert session.last_accepted == 1


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        ({"buttonId": None}, "Object missing required field `buttonId`"),
        ({"visitorName": 5}, "Expected `str`, got `int` - at `$.visitorName`"),
        ({"isPost": "true"}, "Expected `bool`, got `str` - at `$.isPost`"),
        ({"receiveQueueUpdates": None}, "Object missing required field `receiveQueueUpdates`"),
        ({"prechatEntities": None}, "Object missing required field `prechatEntities`"),
        (
            {"prechatDetails": [{"label": "Email", "value": "v"}]},
            "Object missing required field `transcriptFields` - at `$.prechatDetails[0]`",
        ),
        (
            {"prechatDetails": [{"label": "E", "value": "v", "transcriptFields": [1]}]},
            "Expected `str`, got `int` - at `$.prechatDetails[0].transcriptFields[0]`",
        ),
        (
            {"prechatEntities": [{"entityName": "Contact"}]},
            "Object missing required field `entityFieldsMaps` - at `$.prechatEntities[0]`",
        ),
        (
            {
                "prechatEntities": [
                    {
                        "entityName": "Contact",
                        "entityFieldsMaps": [
                            {"fieldName": "Email", "label": "Email", "doFind": True,
                             "isExactMatch": True}
                        ],
                    }
                ]
            },
            "Object missing required field `doCreate`"
            " - at `$.prechatEntities[0].entityFieldsMaps[0]`",
        ),
        (
            {
                "prechatEntities": [
                    {
                        "entityName": "Contact",
                        "entityFieldsMaps": [
                            {"fieldName": "Email", "label": "E-mail", "doFind": True,
                             "isExactMatch": True, "doCreate": False}
                        ],
                    }
                ]
            },
            "label 'E-mail' matches no prechatDetails label"
            " - at `$.prechatEntities[0].entityFieldsMaps[0].label`",
        ),
        ({"sessionId": "someone-else"}, "sessionId 'someone-else' is not the id of this session"),
        ({"organizationId": "00X000000000001"},
         "organizationId '00X000000000001' is not an org id (00D...)"),
        ({"deploymentId": "572short"},
         "deploymentId '572short' is not a deployment id (572...)"),
        (
            {"buttonOverrides": "573ECHO00000000"},
            "Expected `array`, got `str` - at `$.buttonOverrides`",
        ),
    ],
)
def test_invalid_init_is_400_naming_the_field(overrides: dict[str, Any], expected: str) -> None:
    session = make_session()
    reply = post(session, "ChasitorInit", init_body(session.id, **overrides), 1)
    assert reply.status == 400
    assert reply.body.decode() == f"Invalid ChasitorInit body: {expected}"
    # A refused request does not use the sequence number up.
    assert session.last_accepted == 0
    assert session.phase is Phase.CREATED


def test_init_body_must_be_a_json_object() -> None:
    session = make_session()
    reply = post(session, "ChasitorInit", [1, 2], 1)
    assert reply.body.decode() == "Invalid ChasitorInit body: Expected `object`, got `array`"
    reply = post(session, "ChasitorInit", None, 1)
    assert reply.body.decode() == "Invalid ChasitorInit body: a JSON body is required"


def test_init_accepts_entity_maps_and_entity_field_maps() -> None:
    session = make_session()
    details = [
        {"label": "A", "value": "1", "transcriptFields": [], "entityMaps": [],
         "doKnowledgeSearch": False},
        {"label": "B", "value": "2", "transcriptFields": [], "entityFieldMaps": [
            {"entityName": "Contact", "fieldName": "Email", "isFastFillable": False,
             "isAutoQueryable": True, "isExactMatchable": True}]},
    ]
    body = init_body(session.id, prechatDetails=details, prechatEntities=[])
    assert post(session, "ChasitorInit", body, 1).status == 200


def test_configured_org_id_must_match() -> None:
    session = make_session(org_id="00D000000000XYZ")
    reply = post(session, "ChasitorInit", init_body(session.id), 1)
    assert reply.body.decode() == (
        f"Invalid ChasitorInit body: organizationId {ORG!r} is not '00D000000000XYZ'"
    )


def test_second_init_is_refused() -> None:
    session = initialised()
    reply = post(session, "ChasitorInit", init_body(session.id), 2)
    assert reply.status == 400
    assert reply.body == b"ChasitorInit was already accepted for this session"
    assert session.last_accepted == 1


# ------------------------------------------------------------------------------------------
# X-LIVEAGENT-SEQUENCE


def test_init_must_carry_sequence_1() -> None:
    session = make_session()
    reply = post(session, "ChasitorInit", init_body(session.id), 2)
    assert (reply.status, reply.body) == (409, b"Out of sync Ack. Expected 2. Actual 0")
    reply = post(session, "ChasitorInit", init_body(session.id), 0)
    assert (reply.status, reply.body) == (409, b"Out of sync Ack. Expected 0. Actual 0")


def test_wrong_sequence_is_409_with_the_observed_text() -> None:
    session = established()
    assert post(session, "ChatMessage", {"text": "one"}, 2).status == 200
    reply = post(session, "ChatMessage", {"text": "x"}, 498)
    assert (reply.status, reply.body) == (409, b"Out of sync Ack. Expected 498. Actual 2")
    reply = post(session, "ChatMessage", {"text": "x"}, 1)
    assert (reply.status, reply.body) == (409, b"Out of sync Ack. Expected 1. Actual 2")
    assert session.visitor_messages == ["one"]


def test_last_accepted_sequence_again_is_dropped_silently() -> None:
    session = established()
    assert post(session, "ChatMessage", {"text": "one"}, 2).status == 200
    reply = post(session, "ChatMessage", {"text": "one again"}, 2)
    assert (reply.status, reply.body) == (200, b"")
    assert session.visitor_messages == ["one"]
    assert session.visitor_events == [
        {"type": "duplicate", "resource": "ChatMessage", "sequence": 2}
    ]
    assert post(session, "ChatMessage", {"text": "two"}, 3).status == 200
    assert session.visitor_messages == ["one", "two"]


def test_missing_or_garbage_sequence_is_400() -> None:
    session = established()
    reply = post(session, "ChatMessage", {"text": "x"}, None)
    assert (reply.status, reply.body) == (400, b"Missing header X-LIVEAGENT-SEQUENCE")
    reply = post(session, "ChatMessage", {"text": "x"}, "two")
    assert (reply.status, reply.body) == (400, b"Invalid header X-LIVEAGENT-SEQUENCE: 'two'")
    assert session.last_accepted == 1


def test_missing_sequence_is_the_next_one_with_the_leniency_switch() -> None:
    session = established(require_sequence=False)
    assert post(session, "ChatMessage", {"text": "a"}, None).status == 200
    assert post(session, "ChatMessage", {"text": "b"}, None).status == 200
    assert session.last_accepted == 3
    # A wrong explicit number is still refused.
    assert post(session, "ChatMessage", {"text": "c"}, 9).status == 409


# ------------------------------------------------------------------------------------------
# Visitor activity before the agent joined (SALESFORCE.md 3, 11.3)


@pytest.mark.parametrize(
    ("resource", "body"),
    [
        ("ChatMessage", {"text": "too early"}),
        ("ChasitorTyping", {}),
        ("ChasitorNotTyping", None),
        ("ChasitorSneakPeek", {"position": 3, "text": "too"}),
        ("CustomEvent", {"type": "x", "data": "y"}),
    ],
)
def test_activity_before_chat_established_is_500_and_keeps_the_sequence(
    resource: str, body: Any
) -> None:
    session = initialised()
    # ChatEstablished queued but not yet delivered: the visitor has not seen it.
    session.queue("ChatRequestSuccess", {"queuePosition": 1}, T0)
    session.queue("ChatEstablished", {"name": "Ada Agent", "userId": "005000000000ADA"}, T0)
    reply = post(session, resource, body, 2)
    assert reply.status == 500
    assert reply.body.decode() == (
        f"{resource} refused: the chat is not established (no ChatEstablished delivered yet)"
    )
    assert session.last_accepted == 1
    batch(session.open_poll("-1", T0))
    # The same number is good once ChatEstablished was delivered.
    assert post(session, resource, body, 2).status == 200
    assert session.last_accepted == 2


def test_activity_bodies_are_validated() -> None:
    session = established()
    reply = post(session, "ChatMessage", {"txt": "x"}, 2)
    assert reply.body == b"Invalid ChatMessage body: Object missing required field `text`"
    reply = post(session, "ChasitorTyping", {"typing": True}, 2)
    assert reply.body == b"Invalid ChasitorTyping body: Object contains unknown field `typing`"
    reply = post(session, "ChasitorSneakPeek", {"text": "x"}, 2)
    assert reply.body == (
        b"Invalid ChasitorSneakPeek body: Object missing required field `position`"
    )
    reply = post(session, "ChatMessage", None, 2)
    assert reply.body == b"Invalid ChatMessage body: a JSON body is required"
    assert session.last_accepted == 1


def test_activity_is_recorded_in_order() -> None:
    session = established()
    post(session, "ChasitorTyping", None, 2)
    post(session, "ChasitorSneakPeek", {"position": 2, "text": "he"}, 3)
    post(session, "ChasitorNotTyping", {}, 4)
    post(session, "ChatMessage", {"text": "hello"}, 5)
    post(session, "CustomEvent", {"type": "PromptForCreditCard", "data": "Visa"}, 6)
    assert session.visitor_messages == ["hello"]
    assert session.visitor_events == [
        {"type": "ChasitorTyping"},
        {"type": "ChasitorSneakPeek", "position": 2, "text": "he"},
        {"type": "ChasitorNotTyping"},
        {"type": "CustomEvent", "event_type": "PromptForCreditCard", "data": "Visa"},
    ]


# ------------------------------------------------------------------------------------------
# Ending


def test_chat_end_needs_the_client_reason_and_ends_the_session() -> None:
    session = established()
    reply = post(session, "ChatEnd", None, 2)
    assert reply.body == b"Invalid ChatEnd body: a JSON body is required"
    reply = post(session, "ChatEnd", {"ChatEndReason": {"reason": "client"}}, 2)
    assert reply.body == b"Invalid ChatEnd body: Object missing required field `reason`"
    reply = post(session, "ChatEnd", {"reason": "agent"}, 2)
    assert reply.body == b'Invalid ChatEnd body: reason must be "client", got \'agent\''
    assert post(session, "ChatEnd", {"type": "ChatEndReason", "reason": "client"}, 2).status == 200
    assert session.is_over and session.end_reason == "client"
    assert post(session, "ChatMessage", {"text": "x"}, 3).status == 403


def test_chat_end_is_allowed_while_waiting_for_an_agent() -> None:
    session = initialised()
    assert post(session, "ChatEnd", {"reason": "client"}, 2).status == 200
    assert session.end_reason == "client"


def test_final_message_ends_the_session_once_delivered() -> None:
    session = established()
    session.queue("ChatEnded", {"reason": "agent"}, T0)
    assert session.closing and not session.is_over
    # Between queueing and delivery the visitor may only poll.
    reply = post(session, "ChatMessage", {"text": "x"}, 2)
    assert (reply.status, reply.body) == (403, b"Session not valid: the chat has ended")
    assert post(session, "ChatEnd", {"reason": "client"}, 2).status == 403
    with pytest.raises(SessionOver):
        session.queue("ChatMessage", {"text": "late"}, T0)
    payload = batch(session.open_poll(str(session.last_given), T0))
    assert types_of(payload) == ["ChatEnded"]
    assert session.is_over and session.end_reason == "agent"


def test_request_fail_ends_the_session_once_delivered() -> None:
    session = initialised()
    session.queue("ChatRequestFail", {"reason": "Unavailable"}, T0)
    assert types_of(batch(session.open_poll("-1", T0))) == ["ChatRequestFail"]
    assert session.end_reason == "request_failed"


def test_delete_ends_the_session() -> None:
    session = established()
    assert session.receive_delete(T0).status == 200
    assert session.end_reason == "deleted"


# ------------------------------------------------------------------------------------------
# Messages long poll and ack


def test_first_poll_is_held_then_answered_with_one_batch() -> None:
    session = initialised()
    assert session.open_poll("-1", T0) is None
    assert session.poll_held
    assert session.settle_poll(T0) is None
    first = session.queue("ChatRequestSuccess", {"queuePosition": 1}, T0)
    second = session.queue("ChatEstablished", {"name": "Ada Agent", "userId": "005"}, T0)
    payload = batch(session.settle_poll(T0))
    assert types_of(payload) == ["ChatRequestSuccess", "ChatEstablished"]
    assert payload["sequence"] == second == first + 1
    assert isinstance(payload["offset"], int)
    assert not session.poll_held


def test_idle_poll_expires_with_204() -> None:
    session = initialised()
    assert session.open_poll("-1", T0) is None
    reply = session.expire_poll(T0 + 0.2)
    assert (reply.status, reply.body) == (204, b"")
    assert not session.poll_held
    assert session.last_poll_answer_at == T0 + 0.2


def test_ack_confirms_and_the_same_ack_after_a_204_is_fine() -> None:
    session = initialised()
    session.queue("ChatRequestSuccess", {}, T0)
    seq = batch(session.open_poll("-1", T0))["sequence"]
    assert session.open_poll(str(seq), T0) is None
    assert session.expire_poll(T0).status == 204
    assert session.open_poll(str(seq), T0) is None
    assert session.acked == seq and session.queued == 0


def test_stale_ack_redelivers_what_came_after_it() -> None:
    session = initialised()
    session.queue("ChatRequestSuccess", {}, T0)
    first = batch(session.open_poll("-1", T0))
    session.queue("QueueUpdate", {"position": 1}, T0)
    second = batch(session.open_poll(str(first["sequence"]), T0))
    assert types_of(second) == ["QueueUpdate"]
    # The answer to the second poll was lost: the visitor polls with its older ack.
    again = batch(session.open_poll(str(first["sequence"]), T0))
    assert again == second
    # Nothing was confirmed yet, -1 redelivers everything.
    session2 = initialised()
    session2.queue("ChatRequestSuccess", {}, T0)
    lost = batch(session2.open_poll("-1", T0))
    assert batch(session2.open_poll("-1", T0)) == lost


@pytest.mark.parametrize("ack", ["7", "0", "-2"])
def test_an_ack_never_given_is_409(ack: str) -> None:
    session = initialised()
    session.queue("ChatRequestSuccess", {}, T0)
    seq = batch(session.open_poll("-1", T0))["sequence"]
    reply = session.open_poll(ack, T0)
    assert reply is not None and reply.status == 409
    assert reply.body.decode() == (
        f"Invalid ack {ack}. Last sequence sent {seq}, last acknowledged -1"
    )
    assert not session.is_over


def test_acks_never_go_backwards() -> None:
    session = initialised()
    session.queue("ChatRequestSuccess", {}, T0)
    first = batch(session.open_poll("-1", T0))["sequence"]
    session.queue("QueueUpdate", {}, T0)
    second = batch(session.open_poll(str(first), T0))["sequence"]
    assert session.open_poll(str(second), T0) is None
    session.expire_poll(T0)
    for old in (first, -1):
        reply = session.open_poll(str(old), T0)
        assert reply is not None and reply.status == 409


def test_missing_or_garbage_ack() -> None:
    session = initialised()
    reply = session.open_poll(None, T0)
    assert reply is not None and (reply.status, reply.body) == (
        400,
        b"Missing query parameter ack",
    )
    reply = session.open_poll("one", T0)
    assert reply is not None and (reply.status, reply.body) == (
        400,
        b"Invalid query parameter ack: 'one'",
    )


def test_missing_ack_confirms_everything_with_the_leniency_switch() -> None:
    session = initialised(require_ack=False)
    session.queue("ChatRequestSuccess", {}, T0)
    assert types_of(batch(session.open_poll(None, T0))) == ["ChatRequestSuccess"]
    assert session.open_poll(None, T0) is None
    assert session.queued == 0


def test_second_poll_while_one_is_held_ends_the_session_with_409_for_both() -> None:
    session = initialised()
    assert session.open_poll("-1", T0) is None
    reply = session.open_poll("-1", T0)
    assert reply is not None and (reply.status, reply.body.decode()) == (409, DUPLICATE_POLL_TEXT)
    assert session.is_over and session.end_reason == "duplicate_poll"
    held = session.settle_poll(T0)
    assert held is not None and (held.status, held.body.decode()) == (409, DUPLICATE_POLL_TEXT)


def test_session_end_answers_the_held_poll_with_403() -> None:
    session = established()
    assert session.open_poll(str(session.last_given), T0) is None
    assert post(session, "ChatEnd", {"reason": "client"}, 2).status == 200
    held = session.settle_poll(T0)
    assert held is not None and held.status == 403


def test_batches_are_capped_at_max_batch() -> None:
    session = initialised(max_batch=2)
    for i in range(5):
        session.queue("ChatMessage", {"text": str(i)}, T0)
    texts = []
    ack = "-1"
    for _ in range(3):
        payload = batch(session.open_poll(ack, T0))
        texts.extend(m["message"]["text"] for m in payload["messages"])
        ack = str(payload["sequence"])
    assert texts == ["0", "1", "2", "3", "4"]


def test_outbox_is_bounded() -> None:
    session = initialised(max_queued=3)
    for _ in range(3):
        session.queue("AgentTyping", {}, T0)
    with pytest.raises(OutboxFull, match="already holds 3 undelivered messages"):
        session.queue("AgentTyping", {}, T0)


def test_records_can_be_turned_off() -> None:
    session = established(record_max=0)
    post(session, "ChatMessage", {"text": "x"}, 2)
    assert session.visitor_messages == [] and session.agent_messages == []
    assert session.sequence_log == []
    # ChatEstablished and the visitor's message, plus the sequence log's two entries
    # (ChasitorInit 1, ChatMessage 2).
    assert session.records_dropped == 4
    assert session.last_accepted == 2


def test_records_are_bounded() -> None:
    session = established(record_max=2)
    for i in range(4):
        post(session, "ChatMessage", {"text": str(i)}, i + 2)
    assert session.visitor_messages == ["0", "1"]
    assert session.records_dropped >= 2
    assert session.last_accepted == 5


# ------------------------------------------------------------------------------------------
# Poll timeout


def test_session_expires_when_not_polled_within_client_poll_timeout() -> None:
    session = initialised(client_poll_timeout=3)
    assert not session.is_expired(T0 + 3)
    assert session.is_expired(T0 + 3.01)
    assert session.open_poll("-1", T0 + 1) is None
    # A held poll keeps the session alive.
    assert not session.is_expired(T0 + 100)
    session.expire_poll(T0 + 101)
    assert not session.is_expired(T0 + 103)
    assert session.is_expired(T0 + 104.1)


# ------------------------------------------------------------------------------------------
# Affinity and the server switch (SALESFORCE.md 6, 11.5-11.7)


def test_affinity_must_be_the_session_token() -> None:
    session = make_session()
    assert session.check_affinity(session.affinity_token) is None
    reply = session.check_affinity("null")
    assert reply is not None and reply.status == 400
    assert reply.body.decode() == (
        "Invalid header X-LIVEAGENT-AFFINITY: 'null' is not this session's token"
    )
    reply = session.check_affinity("0badf00d")
    assert reply is not None and reply.status == 400


def test_server_switch_flow() -> None:
    session = established()
    post(session, "ChatMessage", {"text": "before"}, 2)
    session.queue("ChatMessage", {"name": "Ada Agent", "text": "delivered"}, T0)
    delivered = batch(session.open_poll(str(session.last_given), T0))
    session.queue("ChatMessage", {"name": "Ada Agent", "text": "undelivered"}, T0)
    # The visitor polls; the answer is handed out but lost in the switch.
    lost = batch(session.open_poll(str(delivered["sequence"]), T0))
    old = session.affinity_token

    assert session.receive_reconnect(str(delivered["offset"]), T0).status == 405
    new = session.switch_server(T0)
    assert new != old
    reply = session.check_affinity(old)
    assert reply is not None and reply.status == 503
    assert session.check_affinity("null", null_ok=True) is None
    assert session.check_affinity(old, null_ok=True) is None

    # The offset must be that of an answer not older than the last ack.
    bad = session.receive_reconnect("12", T0)
    assert bad.status == 400
    assert bad.body.decode().startswith("Invalid query parameter ReconnectSession.offset: 12")
    reply = session.receive_reconnect(str(delivered["offset"]), T0)
    assert reply.status == 200
    assert msgspec.json.decode(reply.body) == {
        "messages": [
            {"type": "ReconnectSession", "message": {"resetSequence": True, "affinityToken": new}}
        ]
    }
    assert session.receive_reconnect(str(delivered["offset"]), T0).status == 405
    assert session.check_affinity(new) is None

    # Visitor activity waits for ChasitorResyncState, which waits for ChasitorSessionData.
    assert post(session, "ChatMessage", {"text": "x"}, 1).status == 500
    resync = session.receive_resync(json.dumps({"organizationId": ORG}).encode(), sequenced=False)
    assert resync.status == 500
    # The ack may stay as it was (11.7); ChasitorSessionData comes first, then what the
    # visitor never received, with numbers that continue.
    after = batch(session.open_poll(str(delivered["sequence"]), T0))
    assert types_of(after) == ["ChasitorSessionData", "ChatMessage"]
    assert after["messages"][1]["message"]["text"] == "undelivered"
    assert after["sequence"] > lost["sequence"]
    transcript = after["messages"][0]["message"]["chatMessages"]
    assert [(e["type"], e["content"]) for e in transcript] == [
        ("Chasitor", "before"),
        ("Agent", "delivered"),
        ("Agent", "undelivered"),
    ]
    reply = session.receive_resync(json.dumps({"organizationId": ORG}).encode(), sequenced=True)
    assert reply.body == b"Unexpected header X-LIVEAGENT-SEQUENCE on ChasitorResyncState"
    reply = session.receive_resync(b'{"organizationId": "00D000000000009"}', sequenced=False)
    assert reply.status == 400
    assert session.receive_resync(json.dumps({"organizationId": ORG}).encode(),
                                  sequenced=False).status == 200
    # resetSequence: the next sequenced POST carries 1 (11.2).
    assert post(session, "ChatMessage", {"text": "after"}, 3).body == (
        b"Out of sync Ack. Expected 3. Actual 0"
    )
    assert post(session, "ChatMessage", {"text": "after"}, 1).status == 200
    assert session.visitor_messages == ["before", "after"]


def test_server_switch_answers_the_held_poll_with_503() -> None:
    session = established()
    assert session.open_poll(str(session.last_given), T0) is None
    session.switch_server(T0)
    held = session.settle_poll(T0)
    assert held is not None and held.status == 503
