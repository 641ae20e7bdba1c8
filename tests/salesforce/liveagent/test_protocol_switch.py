"""Pure tests of the session's fault handling: the 503 switch, SwitchServer, availability."""

from __future__ import annotations

import json

from bridged.chats import facts
from bridged.salesforce.liveagent import wire
from bridged.salesforce.liveagent.protocol import (
    MAX_SWITCHES,
    HttpResponse,
    Lane,
    LiveAgentSession,
    Purpose,
    State,
    SwitchPhase,
)
from tests.salesforce.liveagent.test_protocol import (
    SESSION_ID_BODY,
    answer,
    chatting_session,
    headers,
    messages,
    params,
)


def reconnect_answer(token: str = "efae1fa0", reset: bool | None = True) -> HttpResponse:
    message: dict[str, object] = {"affinityToken": token}
    if reset is not None:
        message["resetSequence"] = reset
    return HttpResponse(200, json.dumps(
        {"messages": [{"type": "ReconnectSession", "message": message}]}).encode())


def test_503_on_the_poll_runs_the_whole_switch_then_resends_held_messages() -> None:
    session = chatting_session()
    answer(session, Lane.POLL, messages(("ChatMessage", {"name": "Ada", "text": "hi"}),
                                        offset=4242))
    session.facts_received()
    session.send_text("m1", "held during the switch")
    poll = session.next_request(Lane.POLL)
    assert poll is not None
    session.receive_response(poll, HttpResponse(503))
    assert session.state is State.RECONNECTING
    # Nothing but ReconnectSession goes out; no poll until the new server is known.
    assert session.next_request(Lane.POLL) is None
    reconnect = session.next_request(Lane.POST)
    assert reconnect is not None
    assert (reconnect.method, reconnect.path) == ("GET", "System/ReconnectSession")
    assert reconnect.query == (("ReconnectSession.offset", "4242"),)
    assert headers(reconnect)["X-LIVEAGENT-AFFINITY"] == "null"
    session.receive_response(reconnect, reconnect_answer())
    assert session.affinity == "efae1fa0"
    assert session.switch_phase is SwitchPhase.SESSION_DATA
    assert session.next_request(Lane.POST) is None  # "send nothing" before ChasitorSessionData
    session.in_flight(Lane.POST)
    data = session.next_request(Lane.POLL)
    assert data is not None and headers(data)["X-LIVEAGENT-AFFINITY"] == "efae1fa0"
    session.receive_response(data, messages(("ChasitorSessionData", {"chatMessages": []})))
    resync = session.next_request(Lane.POST)
    assert resync is not None and resync.body is not None
    assert resync.path == "Chasitor/ChasitorResyncState"
    assert "X-LIVEAGENT-SEQUENCE" not in headers(resync)
    assert json.loads(resync.body) == {"organizationId": "00D000000000001"}
    session.receive_response(resync, HttpResponse(200))
    assert session.state is State.CHATTING
    held = session.next_request(Lane.POST)
    assert held is not None and held.body is not None
    assert json.loads(held.body) == {"text": "held during the switch"}
    assert headers(held)["X-LIVEAGENT-SEQUENCE"] == "1"  # resetSequence: start again at 1
    assert session.abandoned_lanes() == []


def test_503_on_a_post_keeps_that_message_and_cancels_the_held_poll() -> None:
    session = chatting_session()
    poll = session.next_request(Lane.POLL)
    session.send_text("m1", "first")
    session.send_text("m2", "second")
    post = session.next_request(Lane.POST)
    assert poll is not None and post is not None
    session.receive_response(post, HttpResponse(503))
    assert session.abandoned_lanes() == [Lane.POLL]
    assert session.in_flight(Lane.POLL) is None
    reconnect = answer(session, Lane.POST, reconnect_answer())
    assert reconnect.purpose is Purpose.RECONNECT
    answer(session, Lane.POLL, messages(("ChasitorSessionData", {})))
    answer(session, Lane.POST, HttpResponse(200))  # ChasitorResyncState
    texts = []
    for _ in range(2):
        request = answer(session, Lane.POST, HttpResponse(200))
        assert request.body is not None
        texts.append(json.loads(request.body)["text"])
    assert texts == ["first", "second"]
    assert session.facts_received() == [facts.Delivered(id="m1"), facts.Delivered(id="m2")]


def test_a_post_in_flight_at_the_switch_is_answered_not_resent() -> None:
    session = chatting_session()
    poll = session.next_request(Lane.POLL)
    session.send_text("m1", "on the wire")
    post = session.next_request(Lane.POST)
    assert poll is not None and post is not None
    session.receive_response(poll, HttpResponse(503))
    # The old server did take the message: it is delivered, and not sent again.
    session.receive_response(post, HttpResponse(200))
    assert session.facts_received() == [facts.Delivered(id="m1")]
    reconnect = session.next_request(Lane.POST)
    assert reconnect is not None and reconnect.purpose is Purpose.RECONNECT


def test_redelivered_batch_is_not_shown_twice() -> None:
    session = chatting_session()
    batch = messages(("ChatMessage", {"name": "Ada", "text": "once"}), sequence=50_000)
    answer(session, Lane.POLL, batch)
    answer(session, Lane.POLL, batch)
    assert session.facts_received() == [facts.AgentMessage(agent="Ada", text="once")]


def test_end_during_the_switch_waits_for_resync_then_ends() -> None:
    session = chatting_session()
    answer(session, Lane.POLL, HttpResponse(503))
    session.end()
    answer(session, Lane.POST, reconnect_answer())
    answer(session, Lane.POLL, messages(("ChasitorSessionData", {})))
    answer(session, Lane.POST, HttpResponse(200))
    end = session.next_request(Lane.POST)
    assert end is not None and end.path == "Chasitor/ChatEnd"
    assert headers(end)["X-LIVEAGENT-SEQUENCE"] == "1"


def test_too_many_switches_fail_the_chat() -> None:
    session = chatting_session()
    for _ in range(MAX_SWITCHES):
        answer(session, Lane.POLL, HttpResponse(503))
        answer(session, Lane.POST, reconnect_answer())
        answer(session, Lane.POLL, messages(("ChasitorSessionData", {})))
        answer(session, Lane.POST, HttpResponse(200))
    answer(session, Lane.POLL, HttpResponse(503))
    (ended,) = session.facts_received()
    assert isinstance(ended, facts.Ended)
    assert ended.detail == f"Salesforce moved the session {MAX_SWITCHES} times; giving up"


def test_reconnect_refused_fails_with_the_status() -> None:
    session = chatting_session()
    answer(session, Lane.POLL, HttpResponse(503))
    answer(session, Lane.POST, HttpResponse(403))
    assert session.facts_received() == [facts.Ended(
        reason="failed", detail="the Salesforce session expired")]
    session = chatting_session()
    answer(session, Lane.POLL, HttpResponse(503))
    answer(session, Lane.POST, HttpResponse(400))
    assert session.facts_received() == [facts.Ended(
        reason="failed", detail="Salesforce refused to reconnect the session (HTTP 400)")]


def test_a_503_that_was_no_switch_carries_on_with_the_old_server() -> None:
    session = chatting_session()
    answer(session, Lane.POLL, HttpResponse(503))
    answer(session, Lane.POST, HttpResponse(405))  # "no server switch pending"
    assert session.state is State.CHATTING and session.affinity == "2c931fa0"
    poll = session.next_request(Lane.POLL)
    assert poll is not None and poll.purpose is Purpose.MESSAGES
    assert ("reconnect_not_needed", "switch 1") in session.notices_received()


def test_switch_server_message_hands_the_new_url_to_the_shell() -> None:
    session = chatting_session()
    answer(session, Lane.POLL, messages(("SwitchServer",
                                         {"newUrl": "https://d.la2.salesforceliveagent.com/chat"})))
    assert session.take_switch_url() == "https://d.la2.salesforceliveagent.com/chat"
    assert session.take_switch_url() is None


def availability(available: bool, button: str = "573000000000001") -> HttpResponse:
    result: dict[str, object] = {"id": button}
    if available:
        result["isAvailable"] = True
    return HttpResponse(200, json.dumps({"messages": [
        {"type": "Availability", "message": {"results": [result]}}]}).encode())


def test_availability_check_first_and_no_agent_ends_without_a_session() -> None:
    session = LiveAgentSession(params(check_availability=True))
    session.start()
    check = session.next_request(Lane.POST)
    assert check is not None
    assert (check.method, check.path) == ("GET", "Visitor/Availability")
    assert dict(check.query) == {
        "org_id": "00D000000000001", "deployment_id": "572000000000001",
        "Availability.ids": "[573000000000001]", "Availability.needEstimatedWaitTime": "1"}
    assert set(headers(check)) == {"X-LIVEAGENT-API-VERSION", "Accept"}
    session.receive_response(check, availability(False))
    assert session.facts_received() == [facts.Ended(reason="no_agent")]
    assert session.next_request(Lane.POST) is None


def test_available_button_goes_on_to_create_the_session() -> None:
    session = LiveAgentSession(params(check_availability=True))
    session.start()
    answer(session, Lane.POST, availability(True, button="573000000000001AAA"))
    request = session.next_request(Lane.POST)
    assert request is not None and request.purpose is Purpose.SESSION_ID


def test_an_unreadable_availability_answer_does_not_stop_the_chat() -> None:
    session = LiveAgentSession(params(check_availability=True))
    session.start()
    answer(session, Lane.POST, HttpResponse(500))
    request = session.next_request(Lane.POST)
    assert request is not None and request.purpose is Purpose.SESSION_ID
    assert session.notices_received() == [("availability_unknown", "HTTP 500")]


def test_no_estimate_below_api_47() -> None:
    session = LiveAgentSession(params(api_version="46"))
    session.start()
    answer(session, Lane.POST, HttpResponse(200, SESSION_ID_BODY))
    answer(session, Lane.POST, HttpResponse(200))
    answer(session, Lane.POLL, messages(("ChatRequestSuccess",
                                         {"queuePosition": 2, "estimatedWaitTime": 120})))
    assert session.facts_received() == [facts.Queued(position=2, wait_s=None)]


def test_sensitive_data_rules_mask_later_visitor_text() -> None:
    session = chatting_session()
    answer(session, Lane.POLL, messages(("SensitiveDataRules", {"sensitiveDataRules": [
        {"name": "card", "pattern": r"\d{4}-\d{4}-\d{4}-\d{4}", "replacement": "XXXX",
         "actionType": "Replace"}]})))
    session.send_text("m1", "my card is 1234-5678-9012-3456, thanks")
    request = session.next_request(Lane.POST)
    assert request is not None and request.body is not None
    assert json.loads(request.body) == {"text": "my card is XXXX, thanks"}


def test_history_goes_before_the_visitor_messages_without_delivered_events() -> None:
    session = LiveAgentSession(params())
    session.start()
    session.send_text("m1", "visitor first")
    session.send_history(["Bot: hello", "Visitor: help"])
    answer(session, Lane.POST, HttpResponse(200, SESSION_ID_BODY))
    answer(session, Lane.POST, HttpResponse(200))
    answer(session, Lane.POLL, messages(("ChatEstablished", {"name": "Ada"})))
    texts = []
    for _ in range(3):
        request = answer(session, Lane.POST, HttpResponse(200))
        assert request.body is not None
        texts.append(json.loads(request.body)["text"])
    assert texts == ["Bot: hello", "Visitor: help", "visitor first"]
    assert [f for f in session.facts_received() if isinstance(f, facts.Delivered)] == [
        facts.Delivered(id="m1")]


def test_prechat_entities_are_sent_camel_case() -> None:
    entity = wire.Entity(entity_name="Contact", save_to_transcript="ContactId",
                         entity_fields_maps=[wire.EntityFieldsMap(
                             field_name="Email", label="Email", do_find=True,
                             is_exact_match=True, do_create=False)])
    session = LiveAgentSession(params(prechat_entities=[entity]))
    session.start()
    answer(session, Lane.POST, HttpResponse(200, SESSION_ID_BODY))
    init = session.next_request(Lane.POST)
    assert init is not None and init.body is not None
    assert json.loads(init.body)["prechatEntities"] == [{
        "entityName": "Contact", "saveToTranscript": "ContactId",
        "entityFieldsMaps": [{"fieldName": "Email", "label": "Email", "doFind": True,
                              "isExactMatch": True, "doCreate": False}]}]


def _switch_with_lost_post(transcript: list[dict[str, str]]) -> LiveAgentSession:
    session = chatting_session()
    session.send_text("m1", "did it arrive?")
    post = session.next_request(Lane.POST)
    assert post is not None
    session.receive_failure(post)  # no answer: unknown whether Salesforce took it
    answer(session, Lane.POLL, HttpResponse(503))
    answer(session, Lane.POST, reconnect_answer())
    answer(session, Lane.POLL, messages(("ChasitorSessionData", {"chatMessages": transcript})))
    answer(session, Lane.POST, HttpResponse(200))  # ChasitorResyncState
    return session


def test_a_message_lost_at_a_switch_that_did_arrive_is_not_sent_again() -> None:
    session = _switch_with_lost_post([
        {"type": "Agent", "name": "Ada", "content": "hi"},
        {"type": "Chasitor", "name": "Visitor", "content": "did it arrive?"}])
    assert session.next_request(Lane.POST) is None  # nothing to resend
    assert session.facts_received() == [facts.Delivered(id="m1")]


def test_a_message_lost_at_a_switch_that_did_not_arrive_is_sent_again() -> None:
    session = _switch_with_lost_post([{"type": "Agent", "name": "Ada", "content": "hi"}])
    again = session.next_request(Lane.POST)
    assert again is not None and again.body is not None
    assert json.loads(again.body) == {"text": "did it arrive?"}
    assert headers(again)["X-LIVEAGENT-SEQUENCE"] == "1"
