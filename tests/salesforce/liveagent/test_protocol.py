"""Pure tests of the Live Agent session: no network, no event loop."""

from __future__ import annotations

import itertools
import json

import msgspec
import pytest

from bridged.chats import facts
from bridged.errors import LocalProtocolError
from bridged.salesforce.liveagent import wire
from bridged.salesforce.liveagent.protocol import (
    HttpRequest,
    HttpResponse,
    Lane,
    LiveAgentSession,
    Purpose,
    SessionParams,
    State,
    map_chat_ended,
    map_request_fail,
)

SESSION_ID_BODY = json.dumps({
    "clientPollTimeout": 40,
    "key": "49d50d5a-790f-40ec-98ca-8b813e6f0347!c007a252-0f76-473f-b411-588930e09be0",
    "affinityToken": "2c931fa0",
    "id": "49d50d5a-790f-40ec-98ca-8b813e6f0347",
}).encode()
KEY = "49d50d5a-790f-40ec-98ca-8b813e6f0347!c007a252-0f76-473f-b411-588930e09be0"


def params(**overrides: object) -> SessionParams:
    values: dict[str, object] = dict(
        api_version="66", organization_id="00D000000000001", deployment_id="572000000000001",
        button_id="573000000000001", language="en-US", visitor_name="Visitor",
        user_agent="bridged", screen_resolution="1920x1080",
        prechat_details=[wire.CustomDetail(label="Name", value="Ann", transcript_fields=[],
                                           display_to_agent=True)],
    )
    values.update(overrides)
    return SessionParams(**values)  # type: ignore[arg-type]


_sequences = itertools.count(1)


def messages(*items: tuple[str, dict[str, object]], sequence: int | None = None,
             offset: int | None = 100) -> HttpResponse:
    """A 200 Messages answer; its sequence grows from batch to batch unless given."""
    if sequence is None:
        sequence = next(_sequences) + 1000
    body: dict[str, object] = {
        "messages": [{"type": t, "message": m} for t, m in items], "sequence": sequence}
    if offset is not None:
        body["offset"] = offset
    return HttpResponse(200, json.dumps(body).encode())


def headers(request: HttpRequest) -> dict[str, str]:
    return dict(request.headers)


def answer(session: LiveAgentSession, lane: Lane, response: HttpResponse) -> HttpRequest:
    request = session.next_request(lane)
    assert request is not None
    session.receive_response(request, response)
    return request


def chatting_session() -> LiveAgentSession:
    """A session past SessionId, ChasitorInit and ChatEstablished."""
    session = LiveAgentSession(params())
    session.start()
    answer(session, Lane.POST, HttpResponse(200, SESSION_ID_BODY))
    answer(session, Lane.POST, HttpResponse(200))
    answer(session, Lane.POLL, messages(("ChatEstablished", {"name": "Ada", "userId": "005x"})))
    session.facts_received()
    return session


def test_session_id_request_sends_literal_null_affinity_and_no_key() -> None:
    session = LiveAgentSession(params())
    session.start()
    request = session.next_request(Lane.POST)
    assert request is not None
    assert (request.method, request.path, request.purpose) == (
        "GET", "System/SessionId", Purpose.SESSION_ID)
    h = headers(request)
    assert h["X-LIVEAGENT-AFFINITY"] == "null"
    assert h["X-LIVEAGENT-API-VERSION"] == "66"
    assert "X-LIVEAGENT-SESSION-KEY" not in h
    assert "X-LIVEAGENT-SEQUENCE" not in h
    assert session.next_request(Lane.POLL) is None  # nothing to poll before ChasitorInit


def test_chasitor_init_carries_every_field_and_sequence_one() -> None:
    session = LiveAgentSession(params(visitor_name="Ann"))
    session.start()
    answer(session, Lane.POST, HttpResponse(200, SESSION_ID_BODY))
    assert session.state is State.INITIATING
    request = session.next_request(Lane.POST)
    assert request is not None and request.body is not None
    assert request.path == "Chasitor/ChasitorInit"
    h = headers(request)
    assert h["X-LIVEAGENT-SEQUENCE"] == "1"
    assert h["X-LIVEAGENT-AFFINITY"] == "2c931fa0"
    assert h["X-LIVEAGENT-SESSION-KEY"] == KEY
    assert h["Content-Type"] == "application/json"
    body = json.loads(request.body)
    assert body == {
        "organizationId": "00D000000000001",
        "deploymentId": "572000000000001",
        "buttonId": "573000000000001",
        "sessionId": "49d50d5a-790f-40ec-98ca-8b813e6f0347",
        "userAgent": "bridged",
        "language": "en-US",
        "screenResolution": "1920x1080",
        "visitorName": "Ann",
        "prechatDetails": [{"label": "Name", "value": "Ann", "transcriptFields": [],
                            "displayToAgent": True}],
        "prechatEntities": [],
        "receiveQueueUpdates": True,
        "isPost": True,
    }


def test_client_poll_timeout_given_as_string_is_understood() -> None:
    session = LiveAgentSession(params())
    session.start()
    body = json.loads(SESSION_ID_BODY)
    body["clientPollTimeout"] = "30"
    answer(session, Lane.POST, HttpResponse(200, json.dumps(body).encode()))
    assert session.client_poll_timeout == 30.0
    assert session.poll_timeout > 30.0


def test_ack_starts_at_minus_one_follows_200_and_repeats_after_204() -> None:
    session = LiveAgentSession(params())
    session.start()
    answer(session, Lane.POST, HttpResponse(200, SESSION_ID_BODY))
    answer(session, Lane.POST, HttpResponse(200))
    first = answer(session, Lane.POLL, messages(("ChatRequestSuccess", {"queuePosition": 2}),
                                                 sequence=7))
    assert first.query == (("ack", "-1"),)
    second = answer(session, Lane.POLL, HttpResponse(204))
    assert second.query == (("ack", "7"),)
    third = session.next_request(Lane.POLL)
    assert third is not None and third.query == (("ack", "7"),)
    assert "X-LIVEAGENT-SEQUENCE" not in headers(third)


def test_only_one_poll_in_flight() -> None:
    session = chatting_session()
    assert session.next_request(Lane.POLL) is not None
    with pytest.raises(LocalProtocolError):
        session.next_request(Lane.POLL)


def test_messages_map_to_facts_in_order() -> None:
    session = LiveAgentSession(params())
    session.start()
    answer(session, Lane.POST, HttpResponse(200, SESSION_ID_BODY))
    answer(session, Lane.POST, HttpResponse(200))
    answer(session, Lane.POLL, messages(
        ("ChatRequestSuccess", {"queuePosition": 3, "estimatedWaitTime": 90,
                                "connectionTimeout": 150000}),
        ("QueueUpdate", {"position": 1, "estimatedWaitTime": -1}),
        ("ChatEstablished", {"name": "Ada", "userId": "005x", "sneakPeekEnabled": False}),
        ("AgentTyping", {}),
        ("ChatMessage", {"name": "Ada", "text": "Hello"}),
        ("SomethingNew", {"x": 1}),
        ("ChatTransferred", {"name": "Bob", "userId": "005y"}),
    ))
    assert session.facts_received() == [
        facts.Queued(position=3, wait_s=90),
        facts.Queued(position=1, wait_s=None),
        facts.AgentJoined(agent="Ada"),
        facts.AgentTyping(active=True),
        facts.AgentMessage(agent="Ada", text="Hello"),
        facts.Transferred(agent="Bob"),
    ]
    assert session.state is State.CHATTING
    assert session.connection_timeout == 150.0
    assert ("unknown_message_type", "SomethingNew") in session.notices_received()


def test_typing_and_not_typing_in_one_batch_means_not_typing() -> None:
    session = chatting_session()
    answer(session, Lane.POLL, messages(("AgentNotTyping", {}), ("AgentTyping", {})))
    assert session.facts_received() == [facts.AgentTyping(active=False)]


def test_visitor_messages_wait_for_the_agent_then_go_in_order_with_sequence() -> None:
    session = LiveAgentSession(params())
    session.start()
    answer(session, Lane.POST, HttpResponse(200, SESSION_ID_BODY))
    answer(session, Lane.POST, HttpResponse(200))
    session.send_text("m1", "first")
    session.send_text("m2", "second")
    assert session.next_request(Lane.POST) is None  # held until ChatEstablished
    answer(session, Lane.POLL, messages(("ChatEstablished", {"name": "Ada"})))
    session.facts_received()
    sent = []
    for expected_sequence in (2, 3):
        request = session.next_request(Lane.POST)
        assert request is not None and request.body is not None
        assert headers(request)["X-LIVEAGENT-SEQUENCE"] == str(expected_sequence)
        sent.append(json.loads(request.body)["text"])
        session.receive_response(request, HttpResponse(200))
    assert sent == ["first", "second"]
    assert session.facts_received() == [facts.Delivered(id="m1"), facts.Delivered(id="m2")]


def test_network_failure_resends_same_post_with_same_sequence() -> None:
    session = chatting_session()
    session.send_text("m1", "hi")
    request = session.next_request(Lane.POST)
    assert request is not None
    session.receive_failure(request)
    again = session.next_request(Lane.POST)
    assert again is not None and again.unanswered  # the first attempt may have arrived
    assert msgspec.structs.replace(again, unanswered=False) == request


def test_server_error_on_post_does_not_use_up_the_sequence() -> None:
    session = chatting_session()
    session.send_text("m1", "hi")
    request = session.next_request(Lane.POST)
    assert request is not None
    session.receive_response(request, HttpResponse(500))
    again = session.next_request(Lane.POST)
    assert again is not None
    assert headers(again)["X-LIVEAGENT-SEQUENCE"] == headers(request)["X-LIVEAGENT-SEQUENCE"]
    session.receive_response(again, HttpResponse(200))
    assert session.facts_received() == [facts.Delivered(id="m1")]


def test_out_of_sync_realigns_from_the_body() -> None:
    session = chatting_session()
    session.send_text("m1", "hi")
    request = session.next_request(Lane.POST)
    assert request is not None
    session.receive_response(request, HttpResponse(409, b"Out of sync Ack. Expected 2. Actual 5"))
    again = session.next_request(Lane.POST)
    assert again is not None
    assert headers(again)["X-LIVEAGENT-SEQUENCE"] == "6"
    assert again.ref == "m1"


def test_typing_is_dropped_before_the_agent_and_coalesced_after() -> None:
    session = LiveAgentSession(params())
    session.start()
    session.set_typing(True)
    assert session.pending_activity == 0
    session = chatting_session()
    session.set_typing(True)
    session.set_typing(False)
    session.set_typing(True)
    assert session.pending_activity == 1
    request = session.next_request(Lane.POST)
    assert request is not None and request.path == "Chasitor/ChasitorTyping"


def test_sneak_peek_when_enabled() -> None:
    session = LiveAgentSession(params())
    session.start()
    answer(session, Lane.POST, HttpResponse(200, SESSION_ID_BODY))
    answer(session, Lane.POST, HttpResponse(200))
    answer(session, Lane.POLL, messages(("ChatEstablished",
                                         {"name": "Ada", "sneakPeekEnabled": True})))
    session.set_typing(True, "hel")
    request = session.next_request(Lane.POST)
    assert request is not None and request.body is not None
    assert request.path == "Chasitor/ChasitorSneakPeek"
    assert json.loads(request.body) == {"position": 3, "text": "hel"}


@pytest.mark.parametrize(("reason", "expected"), [
    ("Unavailable", facts.Ended(reason="no_agent")),
    ("InternalFailure", facts.Ended(reason="failed", detail="InternalFailure")),
    ("Blocked", facts.Ended(reason="failed", detail="Blocked")),
])
def test_chat_request_fail_reasons(reason: str, expected: facts.Ended) -> None:
    assert map_request_fail(reason) == expected


@pytest.mark.parametrize(("reason", "expected"), [
    ("agent", facts.Ended(reason="agent")),
    ("client", facts.Ended(reason="client")),
    ("agentsUnavailable", facts.Ended(reason="no_agent")),
    ("clientIdleTimeout", facts.Ended(reason="failed", detail="clientIdleTimeout")),
])
def test_chat_ended_reasons(reason: str, expected: facts.Ended) -> None:
    assert map_chat_ended(reason) == expected


def test_request_fail_ends_the_session_and_stops_polling() -> None:
    session = LiveAgentSession(params())
    session.start()
    answer(session, Lane.POST, HttpResponse(200, SESSION_ID_BODY))
    answer(session, Lane.POST, HttpResponse(200))
    answer(session, Lane.POLL, messages(("ChatRequestFail", {"reason": "Unavailable"})))
    assert session.facts_received() == [facts.Ended(reason="no_agent")]
    assert session.is_finished
    assert session.next_request(Lane.POLL) is None


def test_agent_end_reports_undelivered_messages_before_the_end() -> None:
    session = chatting_session()
    session.send_text("m1", "hi")
    session.send_text("m2", "there")
    session.next_request(Lane.POST)  # m1 on the wire, m2 queued
    answer(session, Lane.POLL, messages(("ChatEnded", {"reason": "agent"})))
    out = session.facts_received()
    assert [type(f) for f in out] == [facts.Undelivered, facts.Undelivered, facts.Ended]
    assert [f.id for f in out[:2]] == ["m1", "m2"]  # type: ignore[union-attr]
    assert out[-1] == facts.Ended(reason="agent")


def test_client_end_flushes_messages_then_chat_end() -> None:
    session = chatting_session()
    session.send_text("m1", "bye")
    session.end()
    request = answer(session, Lane.POST, HttpResponse(200))
    assert request.path == "Chasitor/ChatMessage"
    end = session.next_request(Lane.POST)
    assert end is not None and end.body is not None
    assert end.path == "Chasitor/ChatEnd"
    assert json.loads(end.body) == {"reason": "client"}
    session.receive_response(end, HttpResponse(200))
    assert session.facts_received() == [facts.Delivered(id="m1"), facts.Ended(reason="client")]


def test_end_before_any_session_needs_no_request() -> None:
    session = LiveAgentSession(params())
    session.start()
    session.end("detached")
    assert session.facts_received() == [facts.Ended(reason="detached")]
    assert session.next_request(Lane.POST) is None


def test_end_while_session_id_in_flight_deletes_the_session() -> None:
    session = LiveAgentSession(params())
    session.start()
    request = session.next_request(Lane.POST)
    assert request is not None
    session.end()
    session.receive_response(request, HttpResponse(200, SESSION_ID_BODY))
    delete = session.next_request(Lane.POST)
    assert delete is not None
    assert (delete.method, delete.path) == ("DELETE", f"System/SessionId/{KEY}")
    session.receive_response(delete, HttpResponse(200))
    assert session.facts_received() == [facts.Ended(reason="client")]


def test_403_on_poll_means_the_session_expired() -> None:
    session = chatting_session()
    answer(session, Lane.POLL, HttpResponse(403))
    assert session.facts_received() == [
        facts.Ended(reason="failed", detail="the Salesforce session expired")]


def test_garbage_messages_body_fails_only_this_session_with_a_clear_reason() -> None:
    session = chatting_session()
    answer(session, Lane.POLL, HttpResponse(200, b'{"messages": 5}'))
    (ended,) = session.facts_received()
    assert isinstance(ended, facts.Ended) and ended.reason == "failed"
    assert "Messages body is not the documented shape" in ended.detail
    assert session.state is State.ERROR


def test_late_answer_after_the_end_is_ignored() -> None:
    session = chatting_session()
    poll = session.next_request(Lane.POLL)
    assert poll is not None
    session.end()
    end = session.next_request(Lane.POST)
    assert end is not None
    session.receive_response(end, HttpResponse(200))
    session.facts_received()
    session.receive_response(poll, messages(("ChatMessage", {"name": "Ada", "text": "late"})))
    assert session.facts_received() == []
