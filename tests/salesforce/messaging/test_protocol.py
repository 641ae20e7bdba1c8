"""Pure tests of the Enhanced Chat core: what goes out, and what OCP would get.

No network, no event loop, no clock: a small driver plays the shell, drains the outputs and
answers the requests the way Salesforce would (payloads shaped as MESSAGING.md shows them).
"""

from __future__ import annotations

import json
import uuid
from typing import Any

import msgspec
import pytest

from bridged.chats import facts
from bridged.errors import LocalProtocolError
from bridged.salesforce.messaging import protocol
from bridged.salesforce.messaging.protocol import (
    FailureKind,
    HttpRequest,
    MessagingParams,
    MessagingSession,
    MessagingSnapshot,
    Purpose,
    State,
    message_id,
)
from bridged.salesforce.messaging.sse import SseEvent, SseParser
from tests.salesforce.messaging import payloads as p

PARAMS = MessagingParams(
    organization_id=p.ORG_18, es_developer_name="Bridged_API", language="en-US",
    routing_attributes={"_firstName": "Ann", "BotHistory": "bot: hello\nvisitor: hi"})
AGENT_A = p.agent("005Ny00000AgntA")
AGENT_B = p.agent("005Ny00000AgntB")


class Driver:
    """Plays the shell: drains the session after every input and keeps what came out."""

    def __init__(self, session: MessagingSession | None = None, now: float = p.T0) -> None:
        self.s = session or MessagingSession(PARAMS, conversation_id=p.CONV)
        self.now = now
        self.sent: list[HttpRequest] = []  # every REST request drained, in order
        self.open: list[HttpRequest] = []  # drained, not answered
        self.streams: list[HttpRequest] = []
        self.facts: list[facts.Fact] = []
        self.notices: list[tuple[str, str]] = []
        self._ids = 0
        self._ts = 1_740_057_800_000
        self.drain()

    # --- the shell's side ---------------------------------------------------------------

    def drain(self) -> None:
        new = self.s.requests_to_send()
        self.sent += new
        self.open += new
        stream = self.s.stream_to_open()
        if stream is not None:
            self.streams.append(stream)
        self.facts += self.s.facts_received()
        self.notices += self.s.notices_received()

    def take_facts(self) -> list[facts.Fact]:
        out, self.facts = self.facts, []
        return out

    def pending(self, purpose: Purpose) -> list[HttpRequest]:
        return [r for r in self.open if r.purpose is purpose]

    def request(self, purpose: Purpose) -> HttpRequest:
        found = self.pending(purpose)
        assert found, f"no {purpose.value} request in flight; open: {self.open}"
        return found[0]

    def answer(self, purpose: Purpose, status: int = 200, body: bytes | dict[str, Any] = b"",
               request: HttpRequest | None = None) -> HttpRequest:
        request = request or self.request(purpose)
        self.open.remove(request)
        raw = json.dumps(body).encode() if isinstance(body, dict) else body
        self.s.receive_response(request, status, raw, now=self.now)
        self.drain()
        return request

    def fail(self, purpose: Purpose, kind: FailureKind = FailureKind.TIMEOUT) -> HttpRequest:
        request = self.request(purpose)
        self.open.remove(request)
        self.s.receive_failure(request, kind, now=self.now)
        self.drain()
        return request

    def opened(self) -> None:
        self.s.stream_opened(now=self.now)
        self.drain()

    def lost(self, status: int | None = None, body: bytes = b"") -> None:
        self.s.stream_lost(now=self.now, status=status, body=body)
        self.drain()

    def wake(self, now: float) -> None:
        self.now = now
        self.s.wake(now=now)
        self.drain()

    def event(self, event: SseEvent) -> None:
        self.s.receive_event(event, now=self.now)
        self.drain()

    # --- Salesforce's side --------------------------------------------------------------

    def next_ids(self) -> tuple[str, str, int]:
        self._ids += 1
        self._ts += 1000
        return f"{self._ids:08d}-0000-4000-8000-000000000000", f"{self._ts}-{self._ids:04d}", \
            self._ts

    def entry(self, payload: dict[str, Any] | None, sender: dict[str, str], display: str, *,
              entry_type: str | None = None, as_string: bool = True) -> dict[str, Any]:
        entry_id, _, ts = self.next_ids()
        if payload is not None:
            payload = {**payload, "id": entry_id}
        return p.entry(payload, sender=sender, display=display, entry_id=entry_id, ts=ts,
                       entry_type=entry_type, as_string=as_string)

    def push(self, name: str, conversation_entry: dict[str, Any] | None,
             conversation_id: str = p.CONV) -> SseEvent:
        """Salesforce sends ``conversation_entry`` on the stream; returns the event."""
        _, event_id, _ = self.next_ids()
        event = p.sse(name, conversation_entry, event_id=event_id,
                      conversation_id=conversation_id)
        self.event(event)
        return event

    def agent_message(self, text: str, sender: dict[str, str] = AGENT_A,
                      display: str = "Ada") -> dict[str, Any]:
        return self.entry(p.text_message(text, ""), sender, display)

    def participant(self, operation: str, who: dict[str, str], name: str) -> dict[str, Any]:
        return self.entry(p.participant_changed(operation, who, name, ""), p.SYSTEM,
                          "Platform Integration User")

    def routing(self, **kwargs: Any) -> dict[str, Any]:
        return self.entry(p.routing_result("", **kwargs), p.SYSTEM, "Platform Integration User")

    def status(self, value: str) -> dict[str, Any]:
        return self.entry(p.session_status(value, ""), p.SYSTEM, "Platform Integration User")

    def typing(self, started: bool, sender: dict[str, str] = AGENT_A) -> dict[str, Any]:
        kind = "TypingStartedIndicator" if started else "TypingStoppedIndicator"
        return self.entry(None, sender, "Ada", entry_type=kind)

    # --- scenes ---------------------------------------------------------------------------

    def created(self, *, token: bytes | None = None) -> Driver:
        """Start, get the token, open the stream, create the conversation."""
        self.s.start(now=self.now)
        self.drain()
        self.answer(Purpose.ACCESS_TOKEN, 200, token or p.token_body())
        self.opened()
        self.answer(Purpose.CREATE_CONVERSATION, 201, b'{"conversationId":"x","extra":1}')
        return self

    def chatting(self) -> Driver:
        """Created, routed, and Ada (an Agent) joined."""
        self.created()
        self.push("CONVERSATION_ROUTING_RESULT", self.routing())
        self.push("CONVERSATION_PARTICIPANT_CHANGED", self.participant("add", AGENT_A, "Ada"))
        self.take_facts()
        return self


def body(request: HttpRequest) -> Any:
    assert request.body is not None
    return json.loads(request.body)


def headers(request: HttpRequest) -> dict[str, str]:
    return dict(request.headers)


def sf_id(ocp_id: str) -> str:
    return str(uuid.uuid5(uuid.UUID(p.CONV), f"ocp:{ocp_id}"))


def roundtrip(snapshot: MessagingSnapshot) -> MessagingSnapshot:
    """Through JSON, as the state store keeps it."""
    return msgspec.json.decode(msgspec.json.encode(snapshot), type=MessagingSnapshot)


# --- the order of a hand-over ----------------------------------------------------------------


def test_token_request_is_the_sample_body_without_authorization() -> None:
    d = Driver()
    d.s.start(now=d.now)
    d.drain()
    token = d.request(Purpose.ACCESS_TOKEN)
    assert (token.method, token.path) == (
        "POST", "/iamessage/api/v2/authorization/unauthenticated/access-token")
    assert headers(token) == {"Content-Type": "application/json"}
    assert body(token) == {"orgId": p.ORG_18, "esDeveloperName": "Bridged_API",
                           "capabilitiesVersion": "1", "platform": "Web",
                           "context": {"appName": "bridged", "clientVersion": "0.1.0"}}
    assert d.streams == [] and len(d.sent) == 1


def test_stream_opens_after_the_token_with_the_15_character_org_id() -> None:
    d = Driver()
    d.s.start(now=d.now)
    d.drain()
    d.answer(Purpose.ACCESS_TOKEN, 200, p.token_body())
    assert d.s.state is State.CONNECTING and d.s.wants_stream
    [stream] = d.streams
    assert (stream.method, stream.path, stream.attempt) == ("GET", "/eventrouter/v1/sse", 0)
    assert headers(stream) == {"Accept": "text/event-stream",
                               "Authorization": f"Bearer {p.TOKEN}",
                               "X-Org-Id": p.ORG_15,
                               "Last-Event-Id": "1739971138000-0000"}
    assert d.s.token_expires_at == p.T0 + 21_600
    assert d.pending(Purpose.CREATE_CONVERSATION) == []  # not before the stream is open


def test_stream_without_token_last_event_id_sends_zero() -> None:
    d = Driver()
    d.s.start(now=d.now)
    d.drain()
    d.answer(Purpose.ACCESS_TOKEN, 200, p.token_body(last_event_id=None))
    assert headers(d.streams[0])["Last-Event-Id"] == "0"


def test_create_after_the_stream_opened_with_lowercase_uuid_and_rendered_attributes() -> None:
    d = Driver()
    d.s.start(now=d.now)
    d.drain()
    d.answer(Purpose.ACCESS_TOKEN, 200, p.token_body())
    d.opened()
    create = d.request(Purpose.CREATE_CONVERSATION)
    assert (create.method, create.path) == ("POST", "/iamessage/api/v2/conversation")
    assert headers(create) == {"Content-Type": "application/json",
                               "Authorization": f"Bearer {p.TOKEN}"}
    assert body(create) == {"routingAttributes": {"_firstName": "Ann",
                                                  "BotHistory": "bot: hello\nvisitor: hi"},
                            "esDeveloperName": "Bridged_API", "conversationId": p.CONV}
    d.answer(Purpose.CREATE_CONVERSATION, 201)
    assert d.s.state is State.WAITING and d.take_facts() == []


def test_default_conversation_id_is_a_fresh_lowercase_uuid4() -> None:
    a, b = MessagingSession(PARAMS), MessagingSession(PARAMS)
    assert a.conversation_id != b.conversation_id
    assert uuid.UUID(a.conversation_id).version == 4
    assert a.conversation_id == a.conversation_id.lower()


def test_conversation_id_not_lowercase_is_refused() -> None:
    with pytest.raises(LocalProtocolError):
        MessagingSession(PARAMS, conversation_id=p.CONV.upper())


def test_create_without_routing_attributes_leaves_them_out() -> None:
    params = msgspec.structs.replace(PARAMS, routing_attributes={})
    d = Driver(MessagingSession(params, conversation_id=p.CONV))
    d.s.start(now=d.now)
    d.drain()
    d.answer(Purpose.ACCESS_TOKEN, 200, p.token_body())
    d.opened()
    assert "routingAttributes" not in body(d.request(Purpose.CREATE_CONVERSATION))


def test_history_goes_first_then_visitor_messages_each_with_its_own_id() -> None:
    d = Driver()
    d.s.start(now=d.now)
    d.s.send_text("m1", "I want a human", now=d.now)
    d.s.send_history(["bot: Hello!", "visitor: hi"], now=d.now)
    d.drain()
    d.answer(Purpose.ACCESS_TOKEN, 200, p.token_body())
    d.opened()
    assert d.pending(Purpose.SEND_MESSAGE) == []  # not before the conversation exists
    d.answer(Purpose.CREATE_CONVERSATION, 201)
    texts, ids = [], []
    for _ in range(3):
        send = d.request(Purpose.SEND_MESSAGE)
        assert len(d.pending(Purpose.SEND_MESSAGE)) == 1  # one at a time, in order
        assert (send.method, send.path) == (
            "POST", f"/iamessage/api/v2/conversation/{p.CONV}/message")
        b = body(send)
        assert b["esDeveloperName"] == "Bridged_API" and b["language"] == "en-US"
        assert b["message"]["messageType"] == "StaticContentMessage"
        assert "isNewMessagingSession" not in b and "routingAttributes" not in b
        texts.append(b["message"]["staticContent"]["text"])
        ids.append(b["message"]["id"])
        d.answer(Purpose.SEND_MESSAGE, 202, {"conversationEntries": [
            {"id": b["message"]["id"], "clientTimestamp": 1}]})
    assert texts == ["bot: Hello!", "visitor: hi", "I want a human"]
    assert ids == [message_id(p.CONV, "history:0"), message_id(p.CONV, "history:1"),
                   sf_id("m1")]
    assert all(i == i.lower() for i in ids)
    assert d.take_facts() == [facts.Delivered(id="m1")]  # history lines have no OCP id


# --- message ids ------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["ocp:m1", "history:0", "history:12345", "ocp:",
                                  "ocp:caf\u00e9 \u2603 \U0001f600", "ocp:" + "x" * 500])
def test_message_ids_are_the_rfc_4122_uuid5_that_any_process_computes(name: str) -> None:
    """The ids are made without the uuid module's objects: they must stay its uuid5, the
    same in a process of an older bridged (a message resent after an upgrade keeps its id)."""
    for conversation in (p.CONV, p.OTHER_CONV, str(uuid.uuid4()), str(uuid.uuid4())):
        expected = str(uuid.uuid5(uuid.UUID(conversation), name))
        assert message_id(conversation, name) == expected
    d = Driver().chatting()
    d.s.send_history(["a line"], now=d.now)
    d.s.send_text("caf\u00e9", "hi", now=d.now)
    d.drain()
    sent = []
    for _ in range(2):
        (request,) = d.pending(Purpose.SEND_MESSAGE)
        sent.append(json.loads(request.body or b"")["message"]["id"])
        d.answer(Purpose.SEND_MESSAGE, 202, {})
    assert sent == [str(uuid.uuid5(uuid.UUID(p.CONV), "history:0")),
                    str(uuid.uuid5(uuid.UUID(p.CONV), "ocp:caf\u00e9"))]


def test_ocp_id_maps_to_one_salesforce_id_even_in_another_process() -> None:
    a = MessagingSession(PARAMS, conversation_id=p.CONV)
    b = MessagingSession(PARAMS, conversation_id=p.CONV)
    assert message_id(a.conversation_id, "ocp:m1") == message_id(b.conversation_id, "ocp:m1")
    assert message_id(p.CONV, "ocp:m1") != message_id(p.OTHER_CONV, "ocp:m1")


def test_a_retry_after_5xx_or_no_answer_is_the_same_message() -> None:
    d = Driver().chatting()
    d.s.send_text("m1", "hello", now=d.now)
    d.drain()
    first = d.answer(Purpose.SEND_MESSAGE, 503, b'{"message":"Something went wrong"}')
    second = d.fail(Purpose.SEND_MESSAGE, FailureKind.CONNECTION)
    third = d.request(Purpose.SEND_MESSAGE)
    assert [r.attempt for r in (first, second, third)] == [0, 1, 2]
    assert {r.body for r in (first, second, third)} == {first.body}
    assert body(third)["message"]["id"] == sf_id("m1")
    d.answer(Purpose.SEND_MESSAGE, 202)
    assert d.take_facts() == [facts.Delivered(id="m1")]


def test_an_ocp_retry_of_a_delivered_message_is_answered_without_a_request() -> None:
    d = Driver().chatting()
    d.s.send_text("m1", "hello", now=d.now)
    d.drain()
    d.answer(Purpose.SEND_MESSAGE, 202)
    sent = len(d.sent)
    d.s.send_text("m1", "hello", now=d.now)
    d.drain()
    assert len(d.sent) == sent
    assert d.take_facts() == [facts.Delivered(id="m1"), facts.Delivered(id="m1")]


def test_an_ocp_retry_of_a_waiting_message_is_not_queued_twice() -> None:
    d = Driver().chatting()
    d.s.send_text("m1", "hello", now=d.now)
    d.s.send_text("m1", "hello", now=d.now)
    d.drain()
    d.answer(Purpose.SEND_MESSAGE, 202)
    assert d.pending(Purpose.SEND_MESSAGE) == []
    assert d.take_facts() == [facts.Delivered(id="m1")]


def test_429_on_a_send_retries_it_and_never_fails_for_it() -> None:
    d = Driver().chatting()
    d.s.send_text("m1", "hello", now=d.now)
    d.drain()
    for attempt in range(20):
        assert d.request(Purpose.SEND_MESSAGE).attempt == attempt
        d.answer(Purpose.SEND_MESSAGE, 429, b'{"message":"Too many requests"}')
    d.answer(Purpose.SEND_MESSAGE, 202)
    assert d.take_facts() == [facts.Delivered(id="m1")]


def test_5xx_on_a_send_too_often_fails_the_chat() -> None:
    d = Driver().chatting()
    d.s.send_text("m1", "hello", now=d.now)
    d.drain()
    for _ in range(protocol.MAX_FAILURES):
        d.answer(Purpose.SEND_MESSAGE, 500)
    assert d.take_facts() == [
        facts.Undelivered(id="m1", detail="the chat ended before Salesforce confirmed the message"),
        facts.Ended(reason="failed",
                    detail="Salesforce did not answer the message (HTTP 500)")]
    assert d.request(Purpose.CLOSE_CONVERSATION)


def test_a_message_salesforce_refuses_is_undelivered_and_the_next_goes() -> None:
    d = Driver().chatting()
    d.s.send_text("m1", "x" * 10000, now=d.now)
    d.s.send_text("m2", "short", now=d.now)
    d.drain()
    d.answer(Purpose.SEND_MESSAGE, 400, b'{"message":"Invalid request parameters",'
                                          b'"errorCode":"BAD_REQUEST"}')
    assert body(d.request(Purpose.SEND_MESSAGE))["message"]["id"] == sf_id("m2")
    d.answer(Purpose.SEND_MESSAGE, 202)
    assert d.take_facts() == [
        facts.Undelivered(id="m1", detail="Salesforce refused the message "
                                          "(HTTP 400: Invalid request parameters)"),
        facts.Delivered(id="m2")]
    assert d.s.state is State.CHATTING


# --- pacing -----------------------------------------------------------------------------------


def test_pacing_holds_the_23rd_message_of_a_minute_and_keeps_the_order() -> None:
    d = Driver().chatting()
    start = d.now
    for i in range(30):
        d.s.send_text(f"m{i}", f"text {i}", now=d.now)
    d.drain()
    texts = []
    for i in range(22):
        d.now = start + i  # one answer a second
        texts.append(body(d.answer(Purpose.SEND_MESSAGE, 202))["message"]["staticContent"]["text"])
    assert d.pending(Purpose.SEND_MESSAGE) == []  # the 23rd waits
    assert d.s.next_send_at == start + 60
    assert d.s.next_wake_at == start + 60
    d.wake(start + 59.9)
    assert d.pending(Purpose.SEND_MESSAGE) == []
    d.wake(start + 60)
    texts.append(body(d.answer(Purpose.SEND_MESSAGE, 202))["message"]["staticContent"]["text"])
    assert d.pending(Purpose.SEND_MESSAGE) == []  # the window moves one answer at a time
    assert d.s.next_send_at == start + 61
    for i in range(7):
        d.wake(start + 61 + i)
        if d.pending(Purpose.SEND_MESSAGE):
            texts.append(
                body(d.answer(Purpose.SEND_MESSAGE, 202))["message"]["staticContent"]["text"])
    assert texts == [f"text {i}" for i in range(30)]
    assert [f for f in d.take_facts()] == [facts.Delivered(id=f"m{i}") for i in range(30)]


def test_history_counts_toward_the_pace() -> None:
    d = Driver().chatting()
    d.s.send_history([f"line {i}" for i in range(22)], now=d.now)
    d.s.send_text("m1", "hello", now=d.now)
    d.drain()
    for _ in range(22):
        d.answer(Purpose.SEND_MESSAGE, 202)
    assert d.pending(Purpose.SEND_MESSAGE) == [] and d.s.pending_messages == 1
    d.wake(d.now + 60)
    assert body(d.request(Purpose.SEND_MESSAGE))["message"]["id"] == sf_id("m1")


# --- events -----------------------------------------------------------------------------------


def test_routing_result_is_queued_with_the_estimate_or_none() -> None:
    d = Driver().created()
    d.push("CONVERSATION_ROUTING_RESULT", d.routing(ewt=95))
    d.push("CONVERSATION_ROUTING_RESULT", d.routing(ewt=-1))
    d.push("CONVERSATION_ROUTING_RESULT", d.routing(ewt=30, ewt_requested=False))
    assert d.take_facts() == [facts.Queued(position=None, wait_s=95),
                              facts.Queued(position=None, wait_s=None),
                              facts.Queued(position=None, wait_s=None)]


def test_queue_position_updates_are_queued() -> None:
    d = Driver().created()
    _, event_id, _ = d.next_ids()
    d.event(SseEvent(event="CONVERSATION_QUEUE_POSITION",
                     data=json.dumps({"conversationId": p.CONV, "queuePosition": 3,
                                      "estimatedWaitTime": 120}), id=event_id))
    assert d.take_facts() == [facts.Queued(position=3, wait_s=120)]


def test_routing_failure_ends_failed_with_salesforce_reason_then_deletes() -> None:
    d = Driver().created()
    d.s.send_text("m1", "hello", now=d.now)
    d.drain()
    d.answer(Purpose.SEND_MESSAGE, 202)
    d.push("CONVERSATION_ROUTING_RESULT",
           d.routing(failure_type="RoutingError", failure_reason="No queue matches"))
    assert d.take_facts() == [
        facts.Delivered(id="m1"),
        facts.Ended(reason="failed", detail="routing failed: No queue matches")]
    delete = d.request(Purpose.CLOSE_CONVERSATION)
    assert (delete.method, delete.path, delete.query) == (
        "DELETE", f"/iamessage/api/v2/conversation/{p.CONV}", (("esDeveloperName", "Bridged_API"),))
    assert not d.s.wants_stream
    d.answer(Purpose.CLOSE_CONVERSATION, 204)
    assert d.s.is_finished and d.take_facts() == []


def test_agent_joins_with_display_name_and_supervisor_never_counts() -> None:
    d = Driver().created()
    d.push("CONVERSATION_PARTICIPANT_CHANGED", d.participant("add", p.SUPERVISOR, "Sue"))
    assert d.take_facts() == [] and d.s.state is State.WAITING
    d.push("CONVERSATION_PARTICIPANT_CHANGED", d.participant("add", AGENT_A, "Ada Lovelace"))
    d.push("CONVERSATION_PARTICIPANT_CHANGED", d.participant("remove", p.SUPERVISOR, "Sue"))
    assert d.take_facts() == [facts.AgentJoined(agent="Ada Lovelace")]
    assert d.s.state is State.CHATTING and d.pending(Purpose.GET_CONVERSATION) == []


def test_messages_from_agent_and_bot_reach_ocp_but_not_the_visitor_echo() -> None:
    d = Driver().chatting()
    d.s.send_text("m1", "check", now=d.now)
    d.drain()
    echo_id = body(d.request(Purpose.SEND_MESSAGE))["message"]["id"]
    d.answer(Purpose.SEND_MESSAGE, 202)
    echo = p.entry(p.text_message("check", echo_id), sender=p.END_USER, display="Guest",
                   entry_id=echo_id, ts=1)
    d.push("CONVERSATION_MESSAGE", echo)
    d.push("CONVERSATION_MESSAGE", d.agent_message("How can I help?"))
    d.push("CONVERSATION_MESSAGE", d.entry(p.text_message("Survey link", ""), p.CHATBOT,
                                           "CoinSwitch"))
    assert d.take_facts() == [facts.Delivered(id="m1"),
                              facts.AgentMessage(agent="Ada", text="How can I help?"),
                              facts.AgentMessage(agent="CoinSwitch", text="Survey link")]


def test_a_visitor_echo_before_the_sends_answer_delivers_the_message() -> None:
    # The echo proves the send arrived: it is news (a save) when the answer has not come.
    d = Driver().chatting()
    d.s.send_text("m1", "quick", now=d.now)
    d.drain()
    echo_id = body(d.request(Purpose.SEND_MESSAGE))["message"]["id"]
    echo = p.entry(p.text_message("quick", echo_id), sender=p.END_USER, display="Guest",
                   entry_id=echo_id, ts=1)
    _, event_id, _ = d.next_ids()
    assert d.s.receive_event(p.sse("CONVERSATION_MESSAGE", echo, event_id=event_id),
                             now=d.now) is True
    d.drain()
    assert d.take_facts() == [facts.Delivered(id="m1")]


def test_agent_typing_reaches_ocp_the_visitor_own_typing_does_not() -> None:
    d = Driver().chatting()
    d.push("CONVERSATION_TYPING_STARTED_INDICATOR", d.typing(True, p.END_USER))
    d.push("CONVERSATION_TYPING_STARTED_INDICATOR", d.typing(True))
    d.push("CONVERSATION_TYPING_STOPPED_INDICATOR", d.typing(False))
    assert d.take_facts() == [facts.AgentTyping(active=True), facts.AgentTyping(active=False)]


def test_events_of_another_conversation_are_dropped() -> None:
    d = Driver().chatting()
    d.push("CONVERSATION_MESSAGE", d.agent_message("not for you"), conversation_id=p.OTHER_CONV)
    d.push("CONVERSATION_SESSION_STATUS_CHANGED", d.status("Ended"),
           conversation_id=p.OTHER_CONV)
    assert d.take_facts() == [] and d.s.state is State.CHATTING


def test_pings_acks_and_unknown_events_are_ignored_never_fatal() -> None:
    d = Driver().chatting()
    d.event(SseEvent(event="ping", data="0", id="x"))
    d.push("CONVERSATION_DELIVERY_ACKNOWLEDGEMENT", d.entry(
        {"entryType": "DeliveryAcknowledgement", "acknowledgementTimestamp": 1}, AGENT_A, "Ada"))
    d.push("CONVERSATION_PROGRESS_INDICATOR", None)
    d.event(SseEvent(event="CONVERSATION_SOMETHING_NEW", data="not even json", id="y"))
    d.event(SseEvent(event="CONVERSATION_SOMETHING_NEW", data="{}", id="z"))
    d.push("CONVERSATION_MESSAGE", d.entry({"entryType": "Note", "text": "internal"},
                                           AGENT_A, "Ada", entry_type="Note"))
    assert d.take_facts() == [] and d.s.state is State.CHATTING
    assert d.notices.count(("unknown_event_type", "CONVERSATION_SOMETHING_NEW")) == 1


def test_a_stream_replay_of_the_same_entry_is_shown_once() -> None:
    d = Driver().chatting()
    message = d.agent_message("once")
    d.push("CONVERSATION_MESSAGE", message)
    d.push("CONVERSATION_MESSAGE", message)
    assert d.take_facts() == [facts.AgentMessage(agent="Ada", text="once")]


def test_last_event_id_follows_the_stream() -> None:
    d = Driver().chatting()
    event = d.push("CONVERSATION_MESSAGE", d.agent_message("hi"))
    d.event(SseEvent(event="ping", data="0", id=event.id))
    d.lost()
    assert headers(d.streams[-1])["Last-Event-Id"] == event.id


# --- transfer vs end --------------------------------------------------------------------------


def test_agent_leaving_for_a_transfer_is_transferred_to_the_next_agent() -> None:
    d = Driver().chatting()
    d.push("CONVERSATION_PARTICIPANT_CHANGED", d.participant("remove", AGENT_A, "Ada"))
    get = d.request(Purpose.GET_CONVERSATION)
    assert (get.method, get.path) == ("GET", f"/iamessage/api/v2/conversation/{p.CONV}")
    d.answer(Purpose.GET_CONVERSATION, 200, {"routingStatus": "TRANSFER", "other": 1})
    assert d.take_facts() == [] and d.s.state is State.TRANSFERRING
    d.push("CONVERSATION_ROUTING_RESULT", d.routing(routing_type="Transfer"))
    d.push("CONVERSATION_PARTICIPANT_CHANGED", d.participant("add", AGENT_B, "Bob"))
    d.push("CONVERSATION_MESSAGE", d.agent_message("Bob here", AGENT_B, "Bob"))
    assert d.take_facts() == [facts.Transferred(agent="Bob"),
                              facts.AgentMessage(agent="Bob", text="Bob here")]
    assert d.pending(Purpose.CLOSE_CONVERSATION) == []
    assert d.s.state is State.CHATTING
    # The agent leaving is a step of the chat's life, logged as Live Agent's is.
    assert ("agent_disconnected", "Ada") in d.notices


def test_next_agent_joining_before_the_first_leaves_is_a_transfer_too() -> None:
    d = Driver().chatting()
    d.push("CONVERSATION_PARTICIPANT_CHANGED", d.participant("add", AGENT_B, "Bob"))
    assert d.take_facts() == []
    d.push("CONVERSATION_PARTICIPANT_CHANGED", d.participant("remove", AGENT_A, "Ada"))
    assert d.take_facts() == [facts.Transferred(agent="Bob")]
    assert d.pending(Purpose.GET_CONVERSATION) == []


def test_agent_ending_is_ended_agent_then_one_delete() -> None:
    d = Driver().chatting()
    d.push("CONVERSATION_PARTICIPANT_CHANGED", d.participant("remove", AGENT_A, "Ada"))
    d.answer(Purpose.GET_CONVERSATION, 200, {"routingStatus": "NEEDS_ROUTING"})
    assert d.take_facts() == [facts.Ended(reason="agent")]
    d.push("CONVERSATION_SESSION_STATUS_CHANGED", d.status("Ended"))  # the stream is closing
    assert len(d.pending(Purpose.CLOSE_CONVERSATION)) == 1
    d.answer(Purpose.CLOSE_CONVERSATION, 204)
    assert d.s.is_finished and d.take_facts() == []
    assert [r.purpose for r in d.sent].count(Purpose.CLOSE_CONVERSATION) == 1


def test_session_status_ended_is_the_agent_ending() -> None:
    d = Driver().chatting()
    d.s.send_text("m1", "are you there?", now=d.now)
    d.drain()
    d.push("CONVERSATION_PARTICIPANT_CHANGED", d.participant("remove", AGENT_A, "Ada"))
    d.push("CONVERSATION_SESSION_STATUS_CHANGED", d.status("Ended"))
    # The GET asked for after the remove is answered late: it changes nothing.
    d.answer(Purpose.GET_CONVERSATION, 200, {"routingStatus": "NEEDS_ROUTING"})
    assert d.take_facts() == [
        facts.Undelivered(id="m1", detail="the chat ended before Salesforce confirmed the message"),
        facts.Ended(reason="agent")]
    d.answer(Purpose.SEND_MESSAGE, 202)  # too late for OCP: it was told Undelivered
    assert d.pending(Purpose.CLOSE_CONVERSATION) != [] and d.take_facts() == []


def test_session_ended_before_any_agent_is_no_agent() -> None:
    d = Driver().created()
    d.push("CONVERSATION_SESSION_STATUS_CHANGED", d.status("Waiting"))
    d.push("CONVERSATION_SESSION_STATUS_CHANGED", d.status("Ended"))
    assert d.take_facts() == [facts.Ended(reason="no_agent")]


def test_417_on_a_send_is_the_agent_having_ended() -> None:
    d = Driver().chatting()
    d.s.send_text("m1", "hello?", now=d.now)
    d.drain()
    d.answer(Purpose.SEND_MESSAGE, 417, b'{"message":"No messaging session"}')
    assert d.take_facts() == [
        facts.Undelivered(id="m1", detail="the chat ended before Salesforce confirmed the message"),
        facts.Ended(reason="agent")]
    assert d.request(Purpose.CLOSE_CONVERSATION)


def test_close_conversation_not_asked_for_ends_without_a_delete() -> None:
    d = Driver().chatting()
    d.push("CONVERSATION_CLOSE_CONVERSATION", None)
    assert d.take_facts() == [facts.Ended(reason="agent")]
    assert d.pending(Purpose.CLOSE_CONVERSATION) == [] and d.s.is_finished


# --- ending from bridged ------------------------------------------------------------------------


def test_ocp_end_deletes_the_conversation_then_ends_client() -> None:
    d = Driver().chatting()
    d.s.end(now=d.now)
    d.s.end(now=d.now)
    d.drain()
    assert d.take_facts() == [] and not d.s.wants_stream
    d.answer(Purpose.CLOSE_CONVERSATION, 204)
    assert d.take_facts() == [facts.Ended(reason="client")]
    assert d.s.is_finished and d.s.state is State.ENDED
    assert [r.purpose for r in d.sent].count(Purpose.CLOSE_CONVERSATION) == 1


def test_ocp_end_waits_for_the_message_on_the_wire_and_drops_the_rest() -> None:
    d = Driver().chatting()
    for i in range(3):
        d.s.send_text(f"m{i}", "x", now=d.now)
    d.s.end(now=d.now)
    d.drain()
    assert d.pending(Purpose.CLOSE_CONVERSATION) == []
    d.answer(Purpose.SEND_MESSAGE, 202)
    d.answer(Purpose.CLOSE_CONVERSATION, 204)
    detail = "the chat ended before Salesforce confirmed the message"
    assert d.take_facts() == [facts.Delivered(id="m0"), facts.Undelivered(id="m1", detail=detail),
                              facts.Undelivered(id="m2", detail=detail),
                              facts.Ended(reason="client")]


def test_once_ocp_asked_to_end_its_reason_stands() -> None:
    d = Driver().chatting()
    d.s.send_text("m1", "bye", now=d.now)
    d.s.end(now=d.now)
    d.drain()
    d.answer(Purpose.SEND_MESSAGE, 417)  # the agent had ended the session meanwhile
    assert d.take_facts() == []
    d.answer(Purpose.CLOSE_CONVERSATION, 204)
    assert d.take_facts() == [
        facts.Undelivered(id="m1", detail="the chat ended before Salesforce confirmed the message"),
        facts.Ended(reason="client")]


def test_end_while_the_create_is_on_the_wire_deletes_after_it() -> None:
    d = Driver()
    d.s.start(now=d.now)
    d.drain()
    d.answer(Purpose.ACCESS_TOKEN, 200, p.token_body())
    d.opened()
    d.s.end(now=d.now)
    d.drain()
    assert d.pending(Purpose.CLOSE_CONVERSATION) == []
    d.answer(Purpose.CREATE_CONVERSATION, 201)
    d.answer(Purpose.CLOSE_CONVERSATION, 204)
    assert d.take_facts() == [facts.Ended(reason="client")]


def test_end_before_any_conversation_needs_no_delete() -> None:
    d = Driver()
    d.s.start(now=d.now)
    d.drain()
    d.s.end(now=d.now)
    d.drain()
    assert d.take_facts() == [facts.Ended(reason="client")]
    d.answer(Purpose.ACCESS_TOKEN, 200, p.token_body())  # the late answer changes nothing
    assert d.s.is_finished and d.streams == []
    assert Purpose.CLOSE_CONVERSATION not in [r.purpose for r in d.sent]


def test_delete_answered_404_or_failing_still_ends() -> None:
    d = Driver().chatting()
    d.s.end(now=d.now)
    d.drain()
    for _ in range(protocol.MAX_FAILURES):
        d.fail(Purpose.CLOSE_CONVERSATION)
    assert d.take_facts() == [facts.Ended(reason="client")] and d.s.is_finished
    d = Driver().chatting()
    d.s.end(now=d.now)
    d.drain()
    d.answer(Purpose.CLOSE_CONVERSATION, 404)
    assert d.take_facts() == [facts.Ended(reason="client")] and d.s.is_finished


def test_no_agent_within_the_wait_timeout_deletes_and_ends_no_agent() -> None:
    params = msgspec.structs.replace(PARAMS, agent_wait_timeout_s=120)
    d = Driver(MessagingSession(params, conversation_id=p.CONV)).created()
    assert d.s.agent_wait_deadline == p.T0 + 120 and d.s.next_wake_at == p.T0 + 120
    d.wake(p.T0 + 119)
    assert d.pending(Purpose.CLOSE_CONVERSATION) == []
    d.wake(p.T0 + 120)
    assert d.take_facts() == []
    d.answer(Purpose.CLOSE_CONVERSATION, 204)
    assert d.take_facts() == [facts.Ended(reason="no_agent")]


def test_an_agent_in_time_cancels_the_wait_timeout() -> None:
    params = msgspec.structs.replace(PARAMS, agent_wait_timeout_s=120)
    d = Driver(MessagingSession(params, conversation_id=p.CONV)).created()
    d.push("CONVERSATION_PARTICIPANT_CHANGED", d.participant("add", AGENT_A, "Ada"))
    assert d.s.agent_wait_deadline is None
    d.wake(p.T0 + 1000)
    assert d.pending(Purpose.CLOSE_CONVERSATION) == [] and d.s.state is State.CHATTING


def test_no_wait_timeout_when_zero() -> None:
    d = Driver().created()
    assert d.s.agent_wait_deadline is None
    d.wake(p.T0 + 3600)
    assert d.s.state is State.WAITING


# --- the token ----------------------------------------------------------------------------------


def test_token_about_to_expire_ends_gracefully_before_exp() -> None:
    d = Driver().chatting()
    exp = p.T0 + 21_600
    assert d.s.end_by == exp - protocol.TOKEN_MARGIN_S
    assert d.s.next_wake_at == exp - protocol.TOKEN_MARGIN_S
    d.wake(exp - protocol.TOKEN_MARGIN_S)
    d.answer(Purpose.CLOSE_CONVERSATION, 204)
    assert d.take_facts() == [facts.Ended(reason="failed",
                                          detail="the Salesforce access token expired")]


def test_token_without_exp_is_given_six_hours() -> None:
    d = Driver()
    d.created(token=p.token_body(token=p.jwt(exp=None)))
    assert d.s.token_expires_at == p.T0 + protocol.DEFAULT_TOKEN_LIFETIME_S


def test_401_jwt_expired_ends_failed_without_a_delete() -> None:
    d = Driver().chatting()
    d.s.send_text("m1", "hello", now=d.now)
    d.drain()
    d.answer(Purpose.SEND_MESSAGE, 401, b'{"message":"Jwt is expired"}')
    assert d.take_facts()[-1] == facts.Ended(
        reason="failed", detail="the Salesforce access token expired (HTTP 401 on the message)")
    assert d.pending(Purpose.CLOSE_CONVERSATION) == [] and d.s.is_finished


def test_401_on_the_stream_ends_failed_saying_so() -> None:
    d = Driver().chatting()
    d.lost(401, b'{"timestamp":1,"status":401,"error":"Unauthorized",'
                b'"path":"/eventrouter/v1/sse"}')
    assert d.take_facts() == [facts.Ended(
        reason="failed",
        detail="Salesforce refused the access token (HTTP 401 on the event stream)")]
    assert d.s.is_finished and d.open == []


def test_403_on_a_send_ends_failed_and_deletes() -> None:
    d = Driver().chatting()
    d.s.send_text("m1", "hello", now=d.now)
    d.drain()
    d.answer(Purpose.SEND_MESSAGE, 403, b'{"message":"Permission Denied"}')
    assert d.take_facts()[-1] == facts.Ended(
        reason="failed", detail="Salesforce refused the message (HTTP 403: Permission Denied)")
    assert d.request(Purpose.CLOSE_CONVERSATION)


def test_token_refused_ends_failed_with_salesforce_message() -> None:
    d = Driver()
    d.s.start(now=d.now)
    d.drain()
    d.answer(Purpose.ACCESS_TOKEN, 400, b'{"message":"Set the esDeveloperName to a deploymentType'
                                        b' that\'s set to api","errorCode":"BAD_REQUEST"}')
    assert d.take_facts() == [facts.Ended(
        reason="failed", detail="Salesforce refused the access token (HTTP 400: Set the "
                                "esDeveloperName to a deploymentType that's set to api)")]
    assert d.s.is_finished


def test_token_rate_limit_waits_its_turn_forever() -> None:
    d = Driver()
    d.s.start(now=d.now)
    d.drain()
    for attempt in range(30):
        assert d.request(Purpose.ACCESS_TOKEN).attempt == attempt
        d.answer(Purpose.ACCESS_TOKEN, 429)
    d.answer(Purpose.ACCESS_TOKEN, 200, p.token_body())
    assert d.s.state is State.CONNECTING


def test_create_409_means_it_exists_and_5xx_is_retried_with_the_same_id() -> None:
    d = Driver()
    d.s.start(now=d.now)
    d.drain()
    d.answer(Purpose.ACCESS_TOKEN, 200, p.token_body())
    d.opened()
    first = d.answer(Purpose.CREATE_CONVERSATION, 502)
    second = d.request(Purpose.CREATE_CONVERSATION)
    assert second.body == first.body and second.attempt == 1
    d.answer(Purpose.CREATE_CONVERSATION, 409, b'{"message":"Conversation already exists"}')
    assert d.s.state is State.WAITING


def test_a_body_not_as_documented_fails_that_chat_naming_the_field() -> None:
    d = Driver().chatting()
    d.push("CONVERSATION_MESSAGE", d.entry({"entryType": "Message"}, AGENT_A, "Ada"))
    [ended] = d.take_facts()
    assert isinstance(ended, facts.Ended) and ended.reason == "failed"
    assert "abstractMessage" in ended.detail
    d.answer(Purpose.CLOSE_CONVERSATION, 204)
    assert d.s.state is State.ERROR and d.s.is_finished


def test_a_token_that_is_not_a_jwt_fails_the_chat() -> None:
    d = Driver()
    d.s.start(now=d.now)
    d.drain()
    d.answer(Purpose.ACCESS_TOKEN, 200, p.token_body(token="opaque"))
    assert d.take_facts() == [facts.Ended(
        reason="failed", detail="accessToken is not a JWT (expected three dot-separated parts)")]
    assert d.s.state is State.ERROR


# --- the stream: drops and reconciliation --------------------------------------------------------


def test_stream_drops_reopen_from_the_last_event_id_with_attempts_counted() -> None:
    d = Driver().chatting()
    event = d.push("CONVERSATION_MESSAGE", d.agent_message("hi"))
    for attempt in range(1, protocol.MAX_STREAM_ATTEMPTS):
        d.lost(None if attempt % 2 else 503)
        assert d.streams[-1].attempt == attempt
        assert headers(d.streams[-1])["Last-Event-Id"] == event.id
    d.opened()
    d.lost()
    assert d.streams[-1].attempt == 1  # "reset the count on a successful open"


def test_stream_that_cannot_be_reopened_ends_failed() -> None:
    d = Driver().chatting()
    for _ in range(protocol.MAX_STREAM_ATTEMPTS):
        d.lost()
    assert d.take_facts() == [facts.Ended(
        reason="failed", detail="the Salesforce event stream could not be reopened (10 attempts)")]
    assert d.request(Purpose.CLOSE_CONVERSATION)


def test_stream_refused_with_org_mismatch_ends_failed() -> None:
    d = Driver()
    d.s.start(now=d.now)
    d.drain()
    d.answer(Purpose.ACCESS_TOKEN, 200, p.token_body())
    d.lost(400, b'{"message":"OrgId in the header and token must match"}')
    assert d.take_facts() == [facts.Ended(
        reason="failed", detail="Salesforce refused the event stream "
                                "(HTTP 400: OrgId in the header and token must match)")]
    assert d.s.is_finished  # no conversation was made: nothing to delete


def reconnect(d: Driver) -> HttpRequest:
    """Drop the stream, reopen it; returns the list-entries request that follows."""
    d.lost()
    d.opened()
    return d.request(Purpose.LIST_ENTRIES)


def test_after_a_reopen_missed_entries_are_fetched_when_nothing_is_replayed() -> None:
    d = Driver().chatting()
    seen = d.agent_message("before the drop")
    d.push("CONVERSATION_MESSAGE", seen)
    d.take_facts()
    listing = reconnect(d)
    assert (listing.method, listing.path) == (
        "GET", f"/iamessage/api/v2/conversation/{p.CONV}/entries")
    assert dict(listing.query) == {
        "limit": "50", "direction": "FromStart",
        "startTimestamp": str(seen["transcriptedTimestamp"] - 1),
        "entryTypeFilter": "Message,ParticipantChanged,RoutingResult,SessionStatusChanged"}
    missed_1 = d.entry(p.text_message("missed one", ""), AGENT_A, "Ada", as_string=False)
    missed_2 = d.entry(p.text_message("missed two", ""), AGENT_A, "Ada", as_string=False)
    # Live events during the reconciliation wait behind what was missed.
    d.push("CONVERSATION_MESSAGE", d.agent_message("after the reopen"))
    assert d.take_facts() == []
    old = {**seen, "entryPayload": json.loads(seen["entryPayload"])}
    d.answer(Purpose.LIST_ENTRIES, 200, p.entries_body(missed_2, missed_1, old))  # newest first
    assert d.take_facts() == [facts.AgentMessage(agent="Ada", text="missed one"),
                              facts.AgentMessage(agent="Ada", text="missed two"),
                              facts.AgentMessage(agent="Ada", text="after the reopen")]


def test_after_a_reopen_replayed_events_and_listed_entries_are_shown_once() -> None:
    d = Driver().chatting()
    listing_request = reconnect(d)
    missed = d.agent_message("missed")
    d.push("CONVERSATION_MESSAGE", missed)  # the replay, held during the reconciliation
    listed = {**missed, "entryPayload": json.loads(missed["entryPayload"])}
    d.answer(Purpose.LIST_ENTRIES, 200, p.entries_body(listed), request=listing_request)
    d.push("CONVERSATION_MESSAGE", missed)  # and once more, later
    assert d.take_facts() == [facts.AgentMessage(agent="Ada", text="missed")]


def test_visitor_messages_wait_for_the_reconciliation() -> None:
    d = Driver().chatting()
    reconnect(d)
    d.s.send_text("m1", "hello", now=d.now)
    d.drain()
    assert d.pending(Purpose.SEND_MESSAGE) == []
    d.answer(Purpose.LIST_ENTRIES, 200, p.entries_body())
    assert d.request(Purpose.SEND_MESSAGE)


def test_a_transfer_missed_while_the_stream_was_down_is_reconciled() -> None:
    d = Driver().chatting()
    reconnect(d)
    removed = d.participant("remove", AGENT_A, "Ada")
    routed = d.routing(routing_type="Transfer")
    added = d.participant("add", AGENT_B, "Bob")
    listed = [{**e, "entryPayload": json.loads(e["entryPayload"])} for e in (removed, routed,
                                                                             added)]
    d.answer(Purpose.LIST_ENTRIES, 200, p.entries_body(*reversed(listed)))
    facts_now = d.take_facts()
    assert facts_now == [facts.Transferred(agent="Bob")]


def test_reconciliation_pages_through_more_than_fifty_entries() -> None:
    d = Driver().chatting()
    first = reconnect(d)
    page = [d.entry(p.text_message(f"m{i}", ""), AGENT_A, "Ada", as_string=False)
            for i in range(50)]
    d.answer(Purpose.LIST_ENTRIES, 200, p.entries_body(*page), request=first)
    second = d.request(Purpose.LIST_ENTRIES)
    assert dict(second.query)["startTimestamp"] == str(page[-1]["transcriptedTimestamp"])
    last = d.entry(p.text_message("m50", ""), AGENT_A, "Ada", as_string=False)
    d.answer(Purpose.LIST_ENTRIES, 200, p.entries_body(page[-1], last), request=second)
    assert [f.text for f in d.take_facts() if isinstance(f, facts.AgentMessage)] == [
        f"m{i}" for i in range(51)]


def test_reconciliation_that_keeps_failing_lets_the_chat_go_on() -> None:
    d = Driver().chatting()
    reconnect(d)
    held = d.agent_message("held")
    d.push("CONVERSATION_MESSAGE", held)
    for _ in range(protocol.MAX_FAILURES):
        d.answer(Purpose.LIST_ENTRIES, 503)
    assert d.take_facts() == [facts.AgentMessage(agent="Ada", text="held")]
    assert d.s.state is State.CHATTING
    assert any(n[0] == "reconcile_abandoned" for n in d.notices)


# --- restarts -------------------------------------------------------------------------------------


def restarted(d: Driver, now: float | None = None) -> Driver:
    """The process dies (nothing in flight survives) and a new one restores the snapshot."""
    snapshot = roundtrip(d.s.snapshot())
    now = d.now if now is None else now
    return Driver(MessagingSession.restore(PARAMS, snapshot, now=now), now=now)


def test_restore_reopens_from_the_last_event_id_and_reconciles() -> None:
    d = Driver().chatting()
    event = d.push("CONVERSATION_MESSAGE", d.agent_message("before the restart"))
    r = restarted(d)
    assert r.s.state is State.CHATTING and r.s.agent == "Ada"
    [stream] = r.streams
    assert stream.attempt == 0 and headers(stream)["Last-Event-Id"] == event.id
    assert headers(stream)["Authorization"] == f"Bearer {p.TOKEN}"
    r.opened()
    r.request(Purpose.LIST_ENTRIES)


def test_after_a_restart_nothing_is_lost_or_shown_twice_with_or_without_replay() -> None:
    for replay in (False, True):
        d = Driver().chatting()
        before = d.agent_message("before")
        d.push("CONVERSATION_MESSAGE", before)
        missed = d.agent_message("while bridged was down")
        r = restarted(d)
        r._ids, r._ts = d._ids, d._ts
        r.opened()
        if replay:
            r.push("CONVERSATION_MESSAGE", before)
            r.push("CONVERSATION_MESSAGE", missed)
        listed = [{**e, "entryPayload": json.loads(e["entryPayload"])} for e in (before, missed)]
        r.answer(Purpose.LIST_ENTRIES, 200, p.entries_body(*reversed(listed)))
        assert r.take_facts() == [facts.AgentMessage(agent="Ada", text="while bridged was down")]


def test_a_message_on_the_wire_at_a_crash_is_not_sent_twice_when_its_echo_shows() -> None:
    d = Driver().chatting()
    d.s.send_text("m1", "did this arrive?", now=d.now)
    d.s.send_text("m2", "next", now=d.now)
    d.drain()
    assert d.request(Purpose.SEND_MESSAGE)  # on the wire when the process dies
    r = restarted(d)
    r.opened()
    assert r.pending(Purpose.SEND_MESSAGE) == []
    echo = p.entry(p.text_message("did this arrive?", sf_id("m1")), sender=p.END_USER,
                   display="Guest", entry_id=sf_id("m1"), ts=1_740_057_900_000, as_string=False)
    r.answer(Purpose.LIST_ENTRIES, 200, p.entries_body(echo))
    assert r.take_facts() == [facts.Delivered(id="m1")]
    assert body(r.request(Purpose.SEND_MESSAGE))["message"]["id"] == sf_id("m2")


def test_a_message_on_the_wire_at_a_crash_without_echo_is_resent_with_its_id() -> None:
    d = Driver().chatting()
    d.s.send_text("m1", "did this arrive?", now=d.now)
    d.drain()
    r = restarted(d)
    r.opened()
    r.answer(Purpose.LIST_ENTRIES, 200, p.entries_body())
    resent = r.request(Purpose.SEND_MESSAGE)
    assert body(resent)["message"]["id"] == sf_id("m1") and resent.attempt == 1
    r.answer(Purpose.SEND_MESSAGE, 202)
    assert r.take_facts() == [facts.Delivered(id="m1")]


def test_restore_keeps_delivered_ids_and_the_pacing_window() -> None:
    d = Driver().chatting()
    for i in range(22):
        d.s.send_text(f"m{i}", "x", now=d.now)
    d.drain()
    for _ in range(22):
        d.answer(Purpose.SEND_MESSAGE, 202)
    d.s.send_text("late", "y", now=d.now)
    d.drain()
    r = restarted(d, now=d.now + 10)
    r.opened()
    r.answer(Purpose.LIST_ENTRIES, 200, p.entries_body())
    assert r.pending(Purpose.SEND_MESSAGE) == [] and r.s.next_send_at == d.now + 60
    r.s.send_text("m3", "x", now=r.now)
    r.drain()
    assert r.take_facts() == [facts.Delivered(id="m3")]


def test_restore_with_the_token_past_exp_ends_clearly() -> None:
    d = Driver().chatting()
    r = restarted(d, now=p.T0 + 21_600)
    assert r.take_facts() == [facts.Ended(
        reason="failed", detail="the Salesforce access token expired while bridged was restarting")]
    assert r.s.is_finished and r.sent == [] and r.streams == []


def test_restore_just_before_exp_ends_gracefully() -> None:
    d = Driver().chatting()
    r = restarted(d, now=p.T0 + 21_600 - 60)
    assert r.streams == []
    r.answer(Purpose.CLOSE_CONVERSATION, 204)
    assert r.take_facts() == [facts.Ended(reason="failed",
                                          detail="the Salesforce access token expired")]


def test_restore_while_ending_sends_the_delete_again() -> None:
    d = Driver().chatting()
    d.s.end(now=d.now)
    d.drain()
    r = restarted(d)
    r.answer(Purpose.CLOSE_CONVERSATION, 204)
    assert r.take_facts() == [facts.Ended(reason="client")]


def test_restore_in_a_transfer_still_tells_the_next_agent() -> None:
    d = Driver().chatting()
    d.push("CONVERSATION_PARTICIPANT_CHANGED", d.participant("remove", AGENT_A, "Ada"))
    d.answer(Purpose.GET_CONVERSATION, 200, {"routingStatus": "TRANSFER"})
    r = restarted(d)
    r.opened()
    r.answer(Purpose.LIST_ENTRIES, 200, p.entries_body())
    r._ids, r._ts = d._ids, d._ts
    r.push("CONVERSATION_PARTICIPANT_CHANGED", r.participant("add", AGENT_B, "Bob"))
    assert r.take_facts() == [facts.Transferred(agent="Bob")]


def test_restore_asks_again_for_a_routing_status_lost_on_the_wire() -> None:
    d = Driver().chatting()
    d.push("CONVERSATION_PARTICIPANT_CHANGED", d.participant("remove", AGENT_A, "Ada"))
    assert d.request(Purpose.GET_CONVERSATION)  # on the wire when the process dies
    r = restarted(d)
    r.opened()
    r.answer(Purpose.LIST_ENTRIES, 200, p.entries_body())
    r.answer(Purpose.GET_CONVERSATION, 200, {"routingStatus": "NEEDS_ROUTING"})
    assert r.take_facts() == [facts.Ended(reason="agent")]


def test_restore_before_the_token_answer_asks_again() -> None:
    d = Driver()
    d.s.start(now=d.now)
    d.drain()
    r = restarted(d)
    assert r.request(Purpose.ACCESS_TOKEN)


def test_restore_while_creating_creates_again_and_409_is_fine() -> None:
    d = Driver()
    d.s.start(now=d.now)
    d.drain()
    d.answer(Purpose.ACCESS_TOKEN, 200, p.token_body())
    d.opened()
    r = restarted(d)
    r.opened()
    create = r.request(Purpose.CREATE_CONVERSATION)
    assert body(create)["conversationId"] == p.CONV
    r.answer(Purpose.CREATE_CONVERSATION, 409)
    r.answer(Purpose.LIST_ENTRIES, 200, p.entries_body())
    assert r.s.state is State.WAITING


def test_snapshot_stays_small_and_old_replays_stay_dropped() -> None:
    d = Driver().chatting()
    first = d.agent_message("m0")
    d.push("CONVERSATION_MESSAGE", first)
    for i in range(1, 300):
        d.push("CONVERSATION_MESSAGE", d.agent_message(f"m{i}"))
    snapshot = d.s.snapshot()
    assert len(snapshot.seen_ids) == protocol.SEEN_IDS_MAX
    assert len(msgspec.json.encode(snapshot)) < 10_000
    d.take_facts()
    r = restarted(d)
    r.opened()
    listed = {**first, "entryPayload": json.loads(first["entryPayload"])}
    r.answer(Purpose.LIST_ENTRIES, 200, p.entries_body(listed))
    r.push("CONVERSATION_MESSAGE", first)  # a replay from far back
    assert r.take_facts() == []


# --- typing and commands ------------------------------------------------------------------------


def test_visitor_typing_goes_to_an_agent_only_latest_state() -> None:
    d = Driver().created()
    d.s.set_typing(True, now=d.now)
    d.drain()
    assert d.pending(Purpose.TYPING) == []  # no agent yet: nobody to see it
    d.push("CONVERSATION_PARTICIPANT_CHANGED", d.participant("add", AGENT_A, "Ada"))
    started = d.request(Purpose.TYPING)
    assert (started.method, started.path) == ("POST",
                                              f"/iamessage/api/v2/conversation/{p.CONV}/entry")
    assert body(started)["entryType"] == "TypingStartedIndicator"
    assert uuid.UUID(body(started)["id"])
    d.s.set_typing(False, now=d.now)
    d.s.set_typing(True, now=d.now)
    d.s.set_typing(False, now=d.now)
    d.drain()
    assert len(d.pending(Purpose.TYPING)) == 1
    d.answer(Purpose.TYPING, 200)
    assert body(d.request(Purpose.TYPING))["entryType"] == "TypingStoppedIndicator"
    d.fail(Purpose.TYPING)  # not retried
    assert d.pending(Purpose.TYPING) == [] and d.take_facts() == [facts.AgentJoined(agent="Ada")]


def test_commands_in_the_wrong_state_are_local_errors() -> None:
    d = Driver()
    with pytest.raises(LocalProtocolError):
        d.s.send_text("m1", "too early", now=d.now)
    d.s.start(now=d.now)
    with pytest.raises(LocalProtocolError):
        d.s.start(now=d.now)
    d.drain()
    stranger = HttpRequest(method="GET", path="/x", purpose=Purpose.TYPING, headers=())
    with pytest.raises(LocalProtocolError):
        d.s.receive_response(stranger, 200, b"", now=d.now)
    d.s.end(now=d.now)
    assert not d.s.accepts_commands
    with pytest.raises(LocalProtocolError):
        d.s.send_text("m1", "too late", now=d.now)


def test_a_shell_feeding_raw_bytes_through_the_parser() -> None:
    d = Driver().chatting()
    parser = SseParser(last_event_id=d.s.last_event_id)
    message = d.agent_message("over the wire")
    raw = (f"event: ping\ndata: 0\n\nid: 42-1\nevent: CONVERSATION_MESSAGE\n"
           f"data: {p.sse_data(message)}\n\n").encode()
    for i in range(0, len(raw), 7):
        for event in parser.feed(raw[i:i + 7]):
            d.event(event)
    assert d.take_facts() == [facts.AgentMessage(agent="Ada", text="over the wire")]
    assert d.s.last_event_id == "42-1"


# --- what a save may wait for -------------------------------------------------------------------


def _ack(d: Driver, read: bool) -> SseEvent:
    _, event_id, _ = d.next_ids()
    name = "CONVERSATION_READ_ACKNOWLEDGEMENT" if read else "CONVERSATION_DELIVERY_ACKNOWLEDGEMENT"
    return p.sse(name, d.entry(None, AGENT_A, "Ada", entry_type=name), event_id=event_id)


def test_an_event_that_changes_nothing_but_the_last_event_id_says_so() -> None:
    """``receive_event`` is False exactly when the snapshot, but for the stream's positions
    (the last event id, the newest entry's time), is the same: the shell's save of it may
    then wait (the actor's "Durability")."""
    d = Driver().chatting()
    d.s.send_text("m1", "answered before its echo", now=d.now)
    d.drain()
    echo_id = body(d.request(Purpose.SEND_MESSAGE))["message"]["id"]
    d.answer(Purpose.SEND_MESSAGE, 202)
    echo = p.entry(p.text_message("answered before its echo", echo_id), sender=p.END_USER,
                   display="Guest", entry_id=echo_id, ts=int(d.now * 1000))
    seen = d.push("CONVERSATION_MESSAGE", d.agent_message("shown once"))
    typing = d.push("CONVERSATION_TYPING_STARTED_INDICATOR", d.typing(True))
    d.take_facts()
    quiet = [_ack(d, read=False), _ack(d, read=True), SseEvent(event="ping", data="0", id="p1"),
             SseEvent(event="ping", data="0"),
             SseEvent(event="CONVERSATION_SOMETHING_NEW", data="not even json", id="u1"),
             p.sse("CONVERSATION_MESSAGE", d.agent_message("elsewhere"), event_id="o1",
                   conversation_id="00000000-0000-4000-8000-00000000dead"),
             p.sse("CONVERSATION_MESSAGE", echo, event_id="e1"),
             SseEvent(event=seen.event, data=seen.data, id="s2"),
             SseEvent(event=typing.event, data=typing.data, id="t2"),
             p.sse("CONVERSATION_TYPING_STARTED_INDICATOR", d.typing(True, p.END_USER),
                   event_id="t3")]
    for event in quiet:
        before = d.s.snapshot()
        assert d.s.receive_event(event, now=d.now) is False, event.event
        after = d.s.snapshot()
        assert after.last_event_id == (event.id or before.last_event_id)
        assert msgspec.structs.replace(after, last_event_id=before.last_event_id,
                                       last_entry_ms=before.last_entry_ms) == before, \
            event.event
    sent = len(d.sent)
    d.drain()
    assert d.take_facts() == [] and len(d.sent) == sent  # nothing for OCP, nothing to send
    _, event_id, _ = d.next_ids()
    told = p.sse("CONVERSATION_MESSAGE", d.agent_message("hello"), event_id=event_id)
    assert d.s.receive_event(told, now=d.now) is True


def test_after_a_restart_from_an_id_before_the_acknowledgements_nothing_is_shown_twice() -> None:
    """The acknowledgements after the last save are not in it; the stream replays them (and
    the agent's message before them) from the older id: OCP gets only what is new."""
    d = Driver().chatting()
    shown = d.agent_message("shown before the crash")
    told = d.push("CONVERSATION_MESSAGE", shown)
    saved = roundtrip(d.s.snapshot())  # the last save that mattered
    acks = [_ack(d, read=False), _ack(d, read=True)]
    for ack in acks:
        assert d.s.receive_event(ack, now=d.now) is False
    assert d.s.last_event_id == acks[-1].id
    assert d.take_facts() == [facts.AgentMessage(agent="Ada", text="shown before the crash")]
    r = Driver(MessagingSession.restore(PARAMS, saved, now=d.now), now=d.now)
    r._ids, r._ts = d._ids, d._ts
    [stream] = r.streams
    assert headers(stream)["Last-Event-Id"] == told.id
    r.opened()
    for event in (told, *acks):
        r.event(event)  # the replay from the older id
    new = r.agent_message("after the restart")
    r.push("CONVERSATION_MESSAGE", new)
    listed = [{**e, "entryPayload": json.loads(e["entryPayload"])} for e in (shown, new)]
    r.answer(Purpose.LIST_ENTRIES, 200, p.entries_body(*reversed(listed)))
    assert r.take_facts() == [facts.AgentMessage(agent="Ada", text="after the restart")]


def test_only_pings_under_the_last_id_read_tell_the_session_nothing() -> None:
    """What the stream's reader may keep from the actor: keep-alives that change nothing."""
    ping = SseEvent(event="ping", data="0", id="1-0001")
    assert protocol.only_keepalives([], "1-0001")  # a chunk that completed no event
    assert protocol.only_keepalives([ping, ping], "1-0001")
    # A ping that moved the last event id (a server may give one an id) is handed on.
    assert not protocol.only_keepalives([ping], "1-0000")
    message = SseEvent(event="CONVERSATION_MESSAGE", data="{}", id="1-0001")
    assert not protocol.only_keepalives([ping, message], "1-0001")
    assert not protocol.only_keepalives([SseEvent(event="ignored", data="x", id="1-0001")],
                                        "1-0001")
