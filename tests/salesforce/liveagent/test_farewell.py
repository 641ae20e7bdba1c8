"""The last request of a chat whose actor crashed: it ends the chat at Salesforce, whatever state
the session is in (pure, no network)."""

from __future__ import annotations

from bridged.salesforce.liveagent.protocol import HttpResponse, Lane, LiveAgentSession, Purpose
from tests.salesforce.liveagent.test_protocol import (
    KEY,
    SESSION_ID_BODY,
    answer,
    chatting_session,
    headers,
    params,
)


def test_no_session_yet_means_nothing_to_end() -> None:
    session = LiveAgentSession(params())
    session.start()
    assert session.farewell() is None


def test_before_chasitor_init_was_accepted_the_bare_session_is_deleted() -> None:
    session = LiveAgentSession(params())
    session.start()
    answer(session, Lane.POST, HttpResponse(200, SESSION_ID_BODY))
    assert session.next_request(Lane.POST) is not None  # ChasitorInit, on the wire
    request = session.farewell()
    assert request is not None
    assert (request.method, request.path) == ("DELETE", f"System/SessionId/{KEY}")
    assert session.farewell(HttpResponse(200)) is None


def test_chat_end_is_numbered_above_a_post_whose_fate_is_unknown_then_as_asked() -> None:
    session = chatting_session()
    session.send_text("m1", "hello")
    in_flight = session.next_request(Lane.POST)
    assert in_flight is not None and in_flight.sequence is not None
    request = session.farewell()
    assert request is not None
    assert (request.purpose, request.sequence) == (Purpose.CHAT_END, in_flight.sequence + 1)
    assert headers(request)["X-LIVEAGENT-SESSION-KEY"] == KEY
    assert headers(request)["X-LIVEAGENT-SEQUENCE"] == str(in_flight.sequence + 1)
    # The message never arrived: Salesforce wants the number after the last it accepted.
    out_of_sync = HttpResponse(409, f"Out of sync Ack. Expected {request.sequence}."
                                    f" Actual {in_flight.sequence - 1}".encode())
    again = session.farewell(out_of_sync)
    assert again is not None and again.sequence == in_flight.sequence
    assert session.farewell(HttpResponse(200)) is None


def test_an_ended_session_needs_no_farewell() -> None:
    session = chatting_session()
    session.end("client")
    request = session.next_request(Lane.POST)
    assert request is not None and request.purpose is Purpose.CHAT_END
    session.receive_response(request, HttpResponse(200))
    assert session.farewell() is None
