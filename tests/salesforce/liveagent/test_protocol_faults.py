"""Pure tests of the loss windows the session closes: parked batches, polls Salesforce may
still hold, sessions left behind, and a restart in the middle of a server switch."""

from __future__ import annotations

import json

import msgspec
import pytest

from bridged.chats import facts
from bridged.salesforce.liveagent.protocol import (
    HttpRequest,
    HttpResponse,
    Lane,
    LiveAgentSession,
    Purpose,
    SessionSnapshot,
    State,
    SwitchPhase,
)
from tests.salesforce.liveagent.test_protocol import (
    KEY,
    SESSION_ID_BODY,
    answer,
    chatting_session,
    headers,
    messages,
    params,
)
from tests.salesforce.liveagent.test_protocol_switch import reconnect_answer

# Above every sequence chatting_session() has seen.
BASE = 1_000_000


def say(text: str) -> tuple[str, dict[str, object]]:
    return ("ChatMessage", {"name": "Ada", "text": text})


def keepalive(session: LiveAgentSession) -> HttpRequest:
    request = session.next_request(Lane.POLL, keepalive=True)
    assert request is not None and request.keepalive
    return request


def ack_of(request: HttpRequest) -> str:
    return dict(request.query)["ack"]


def texts(out: list[facts.Fact]) -> list[str]:
    return [f.text for f in out if isinstance(f, facts.AgentMessage)]


# --- item 1: a batch is never thrown away ---------------------------------------------------


def test_a_keepalive_batch_with_the_goodbye_and_the_end_is_kept_until_there_is_room() -> None:
    session = chatting_session()
    poll = keepalive(session)
    session.receive_response(poll, messages(say("bye"), ("ChatEnded", {"reason": "agent"}),
                                            sequence=BASE + 7))
    assert session.facts_received() == []  # nothing for OCP while it has no room
    assert session.parked and not session.is_finished
    # Salesforce ended the session when it handed the batch over: nothing is polled any more
    # (the poll would get 403 and the chat would fail "expired").
    assert session.next_request(Lane.POLL, keepalive=True) is None
    assert session.next_request(Lane.POLL) is None
    assert session.release_parked()
    assert session.facts_received() == [facts.AgentMessage(agent="Ada", text="bye"),
                                        facts.Ended(reason="agent")]
    assert session.state is State.ENDED


def test_batches_delivered_again_to_keepalives_replace_the_parked_one() -> None:
    session = chatting_session()
    first = keepalive(session)
    ack = ack_of(first)
    session.receive_response(first, messages(say("one"), sequence=BASE + 10))
    second = keepalive(session)
    assert ack_of(second) == ack  # nothing acknowledged: Salesforce keeps it too
    session.receive_response(second, messages(say("one"), say("two"), sequence=BASE + 11))
    assert session.facts_received() == []
    assert session.release_parked()
    assert texts(session.facts_received()) == ["one", "two"]
    assert ack_of(session.next_request(Lane.POLL) or first) == str(BASE + 11)


def test_a_server_that_does_not_deliver_again_loses_nothing_either() -> None:
    session = chatting_session()
    answer_keepalive = keepalive(session)
    session.receive_response(answer_keepalive, messages(say("one"), sequence=BASE + 10))
    again = keepalive(session)
    session.receive_response(again, messages(say("two"), sequence=BASE + 11))
    # The same text again under a new sequence is a new message, not a redelivery.
    third = keepalive(session)
    session.receive_response(third, messages(say("two"), sequence=BASE + 12))
    assert session.release_parked()
    assert texts(session.facts_received()) == ["one", "two", "two"]


def test_a_parked_batch_is_released_only_with_no_poll_in_flight() -> None:
    session = chatting_session()
    session.receive_response(keepalive(session), messages(say("one"), sequence=BASE + 10))
    poll = keepalive(session)
    assert not session.release_parked()  # its answer may hold "one" again
    session.receive_response(poll, HttpResponse(204))
    assert session.release_parked()
    assert texts(session.facts_received()) == ["one"]


def test_a_switch_processes_the_parked_batch_first_and_reconnects_from_it() -> None:
    session = chatting_session()
    session.receive_response(keepalive(session), messages(say("parked"), sequence=BASE + 10,
                                                          offset=777))
    session.receive_response(keepalive(session), HttpResponse(503))
    assert texts(session.facts_received()) == ["parked"]  # before the new server's
    reconnect = session.next_request(Lane.POST)
    assert reconnect is not None and reconnect.query == (("ReconnectSession.offset", "777"),)
    session.receive_response(reconnect, reconnect_answer())
    data = session.next_request(Lane.POLL, keepalive=True)
    assert data is not None and not data.keepalive  # the switch must read it
    assert ack_of(data) == str(BASE + 10)
    session.receive_response(data, messages(("ChasitorSessionData", {"chatMessages": []}),
                                            sequence=BASE + 11))
    assert session.switch_phase is SwitchPhase.RESYNC


def test_ending_with_a_parked_goodbye_reports_it_and_asks_salesforce_nothing() -> None:
    session = chatting_session()
    session.receive_response(keepalive(session), messages(
        say("bye"), ("ChatEnded", {"reason": "agent"}), sequence=BASE + 7))
    session.end("client")
    assert session.facts_received() == [facts.AgentMessage(agent="Ada", text="bye"),
                                        facts.Ended(reason="client")]
    assert session.next_request(Lane.POST) is None


def test_a_session_that_expires_reports_the_parked_batch_before_the_end() -> None:
    session = chatting_session()
    session.receive_response(keepalive(session), messages(say("still mine"), sequence=BASE + 7))
    session.receive_response(keepalive(session), HttpResponse(403))
    assert session.facts_received() == [
        facts.AgentMessage(agent="Ada", text="still mine"),
        facts.Ended(reason="failed", detail="the Salesforce session expired")]


def test_the_parked_batch_survives_a_restart() -> None:
    session = chatting_session()
    session.receive_response(keepalive(session), messages(
        say("bye"), ("ChatEnded", {"reason": "agent"}), sequence=BASE + 7))
    restored = restore(session)
    assert restored.next_request(Lane.POLL) is None
    assert restored.release_parked()
    assert restored.facts_received() == [facts.AgentMessage(agent="Ada", text="bye"),
                                         facts.Ended(reason="agent")]


# --- item 8: polls Salesforce may still hold, sessions left behind -----------------------


@pytest.mark.parametrize("status", [502, 504, 500])
def test_a_gateway_answer_to_a_poll_leaves_the_poll_unsettled(status: int) -> None:
    session = chatting_session()
    assert not session.take_unsettled_poll()
    answer(session, Lane.POLL, HttpResponse(status))
    assert session.take_unsettled_poll()
    assert not session.take_unsettled_poll()  # once
    assert session.state is State.CHATTING


@pytest.mark.parametrize("response", [HttpResponse(204), messages(say("hi"))])
def test_salesforces_own_answers_settle_the_poll(response: HttpResponse) -> None:
    session = chatting_session()
    answer(session, Lane.POLL, response)
    assert not session.take_unsettled_poll()


def test_a_poll_without_any_answer_is_unsettled() -> None:
    session = chatting_session()
    poll = session.next_request(Lane.POLL)
    assert poll is not None
    session.receive_failure(poll)
    assert session.take_unsettled_poll()


def test_a_503_that_was_no_switch_leaves_the_poll_unsettled() -> None:
    session = chatting_session()
    answer(session, Lane.POLL, HttpResponse(503))
    assert not session.take_unsettled_poll()  # a switch: the new server holds no poll
    answer(session, Lane.POST, HttpResponse(405))  # ReconnectSession: no hand-over
    assert session.state is State.CHATTING
    assert session.take_unsettled_poll()


def _initiating() -> LiveAgentSession:
    session = LiveAgentSession(params())
    session.start()
    answer(session, Lane.POST, HttpResponse(200, SESSION_ID_BODY))
    assert session.state is State.INITIATING
    return session


@pytest.mark.parametrize("delete_status", [200, 403, 503])
def test_a_503_to_chasitor_init_deletes_the_session_then_fails(delete_status: int) -> None:
    session = _initiating()
    answer(session, Lane.POST, HttpResponse(503))
    assert session.facts_received() == []
    assert session.next_request(Lane.POLL) is None
    delete = session.next_request(Lane.POST)
    assert delete is not None
    assert (delete.method, delete.path) == ("DELETE", f"System/SessionId/{KEY}")
    session.receive_response(delete, HttpResponse(delete_status))
    assert session.facts_received() == [facts.Ended(
        reason="failed", detail="Salesforce moved the session before the chat began")]


def test_visitor_messages_during_that_delete_are_reported_undelivered() -> None:
    session = _initiating()
    answer(session, Lane.POST, HttpResponse(503))
    session.send_text("m1", "too late")
    delete = session.next_request(Lane.POST)
    assert delete is not None and delete.purpose is Purpose.DELETE_SESSION
    session.receive_response(delete, HttpResponse(200))
    assert [type(f).__name__ for f in session.facts_received()] == ["Undelivered", "Ended"]


def _waiting() -> LiveAgentSession:
    session = _initiating()
    answer(session, Lane.POST, HttpResponse(200))  # ChasitorInit
    assert session.state is State.WAITING
    return session


@pytest.mark.parametrize("status", [500, 502])
def test_a_chat_end_refused_with_a_5xx_falls_back_to_deleting_the_session(status: int) -> None:
    session = _waiting()
    session.end("client")
    chat_end = session.next_request(Lane.POST)
    assert chat_end is not None and chat_end.path == "Chasitor/ChatEnd"
    session.receive_response(chat_end, HttpResponse(status))
    assert session.facts_received() == []  # the chat request may still wait for an agent
    delete = session.next_request(Lane.POST)
    assert delete is not None
    assert (delete.method, delete.path) == ("DELETE", f"System/SessionId/{KEY}")
    assert "X-LIVEAGENT-SEQUENCE" not in headers(delete)
    session.receive_response(delete, HttpResponse(200))
    assert session.facts_received() == [facts.Ended(reason="client")]


# --- item 7: a restart in the middle of a server switch ------------------------------------


def restore(session: LiveAgentSession) -> LiveAgentSession:
    """The session as another process gets it: through the store's encoding (its snapshot,
    and its activity, kept item by item)."""
    kept = msgspec.msgpack.decode(msgspec.msgpack.encode(session.snapshot()),
                                  type=SessionSnapshot)
    activity, _ = session.take_activity_changes()  # all of it: never taken before
    return LiveAgentSession.restore(session.params, kept, activity)


def _ok_then_ok_unanswered(*, in_flight: bool) -> LiveAgentSession:
    """The visitor said "ok" (accepted), then "ok" again, whose POST got no answer; then a
    503 switch; then bridged restarts."""
    session = chatting_session()
    session.send_text("m1", "ok")
    answer(session, Lane.POST, HttpResponse(200))
    session.facts_received()
    session.send_text("m2", "ok")
    post = session.next_request(Lane.POST)
    assert post is not None
    if not in_flight:
        session.receive_failure(post)  # kept for a re-send
    answer(session, Lane.POLL, HttpResponse(503))
    assert session.state is State.RECONNECTING
    # in_flight: the restart comes while that POST is still on the wire.
    return restore(session)


def _settle(session: LiveAgentSession, transcript: list[str]) -> None:
    reconnect = session.next_request(Lane.POST)
    assert reconnect is not None and reconnect.purpose is Purpose.RECONNECT
    session.receive_response(reconnect, reconnect_answer())
    lines = [{"type": "Chasitor", "name": "Visitor", "content": text} for text in transcript]
    answer(session, Lane.POLL, messages(("ChasitorSessionData", {"chatMessages": lines})))
    answer(session, Lane.POST, HttpResponse(200))  # ChasitorResyncState


@pytest.mark.parametrize("in_flight", [False, True])
def test_after_a_restart_mid_switch_a_message_that_arrived_is_not_sent_again(
        in_flight: bool) -> None:
    session = _ok_then_ok_unanswered(in_flight=in_flight)
    _settle(session, ["ok", "ok"])
    assert session.next_request(Lane.POST) is None
    assert session.facts_received() == [facts.Delivered(id="m2")]


@pytest.mark.parametrize("in_flight", [False, True])
def test_after_a_restart_mid_switch_a_message_that_did_not_arrive_is_sent_again(
        in_flight: bool) -> None:
    # Two identical texts in a row: the transcript's last line is "ok", but it is the first
    # one; only the count of messages Salesforce accepted tells them apart.
    session = _ok_then_ok_unanswered(in_flight=in_flight)
    _settle(session, ["ok"])
    again = session.next_request(Lane.POST)
    assert again is not None and again.body is not None and again.ref == "m2"
    assert json.loads(again.body) == {"text": "ok"}
    assert headers(again)["X-LIVEAGENT-SEQUENCE"] == "1"


def test_a_resend_refused_by_the_503_is_still_unconfirmed() -> None:
    session = chatting_session()
    session.send_text("m1", "did it arrive?")
    first = session.next_request(Lane.POST)
    assert first is not None
    session.receive_failure(first)  # no answer: it may have arrived
    answer(session, Lane.POST, HttpResponse(503))  # the re-send meets the switch
    _settle(session, ["did it arrive?"])
    assert session.next_request(Lane.POST) is None
    assert session.facts_received() == [facts.Delivered(id="m1")]


def test_a_parked_batch_that_gives_up_while_the_chat_ends_ends_it_once() -> None:
    session = chatting_session()
    moves = [("SwitchServer", {"newUrl": f"https://h{i}.salesforceliveagent.com/chat"})
             for i in range(7)]
    session.receive_response(keepalive(session), messages(*moves, sequence=BASE + 1))
    session.receive_response(keepalive(session), HttpResponse(403))
    ended = [f for f in session.facts_received() if isinstance(f, facts.Ended)]
    assert ended == [facts.Ended(reason="failed",
                                 detail="Salesforce moved the session 5 times; giving up")]
