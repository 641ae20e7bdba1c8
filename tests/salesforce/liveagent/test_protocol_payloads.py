"""Pure tests of real-world payloads: fields the docs do not mention, fields they list but
Salesforce leaves out or sends as null, and fields of an unexpected type.

The fixtures are in ``tests/fixtures/liveagent/``.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bridged.chats import facts
from bridged.errors import RemoteProtocolError
from bridged.salesforce.liveagent import wire
from bridged.salesforce.liveagent.protocol import (
    HttpResponse,
    Lane,
    LiveAgentSession,
    State,
)
from tests.salesforce.liveagent.test_protocol import SESSION_ID_BODY, answer, params

FIXTURES = Path(__file__).parents[2] / "fixtures" / "liveagent"

# Every message type wire.py reads, and the class it is read as.
TYPES = {
    "ChatRequestSuccess": wire.ChatRequestSuccess,
    "ChatRequestFail": wire.ChatRequestFail,
    "QueueUpdate": wire.QueueUpdate,
    "ChatEstablished": wire.ChatEstablished,
    "ChatMessage": wire.ChatMessage,
    "AgentTyping": wire.AgentTyping,
    "AgentNotTyping": wire.AgentNotTyping,
    "AgentDisconnect": wire.AgentDisconnect,
    "ChatTransferred": wire.ChatTransferred,
    "ChatEnded": wire.ChatEnded,
    "ChasitorSessionData": wire.ChasitorSessionData,
    "CustomEvent": wire.CustomEvent,
    "SensitiveDataRules": wire.SensitiveDataRules,
    "SwitchServer": wire.SwitchServer,
    "TransferToButtonInitiated": wire.TransferToButtonInitiated,
    "FileTransfer": wire.FileTransfer,
    "NewVisitorBreadcrumb": wire.NewVisitorBreadcrumb,
    "Availability": wire.Availability,
}


def fixture(name: str) -> bytes:
    return (FIXTURES / name).read_bytes()


def waiting_session() -> LiveAgentSession:
    """A session whose chat request is queued (ChasitorInit accepted)."""
    session = LiveAgentSession(params())
    session.start()
    answer(session, Lane.POST, HttpResponse(200, SESSION_ID_BODY))
    answer(session, Lane.POST, HttpResponse(200))
    assert session.state is State.WAITING
    return session


def one(type_: str, message: object) -> bytes:
    return json.dumps({"messages": [{"type": type_, "message": message}],
                       "sequence": 1}).encode()


@pytest.mark.parametrize("type_", sorted(TYPES))
@pytest.mark.parametrize("message", [{}, None, {"fieldFromTheFuture": [1, {"x": None}]}],
                         ids=["empty", "null", "extra"])
def test_every_message_type_reads_without_its_fields(type_: str, message: object) -> None:
    (decoded,) = wire.decode_messages(one(type_, message)).messages
    assert type(decoded) is TYPES[type_]


def test_reconnect_session_needs_its_affinity_token_and_says_so() -> None:
    with pytest.raises(RemoteProtocolError, match=r"ReconnectSession.*`affinityToken`"):
        wire.decode_messages(one("ReconnectSession", {"resetSequence": True}))
    (decoded,) = wire.decode_messages(one("ReconnectSession", {"affinityToken": "efae1fa0",
                                                               "resetSequence": None})).messages
    assert decoded == wire.ReconnectSession(affinity_token="efae1fa0", reset_sequence=None)


def test_undocumented_extras_are_ignored_and_the_chat_reads_as_documented() -> None:
    session = waiting_session()
    answer(session, Lane.POLL, HttpResponse(200, fixture("messages_with_undocumented_extras.json")))
    assert session.facts_received() == [
        facts.Queued(position=1, wait_s=0),
        facts.Queued(position=None, wait_s=0),  # 0: no positions for this routing
        facts.AgentJoined(agent="Everardo G"),
        facts.AgentTyping(active=False),  # both in one batch: not typing
        facts.AgentMessage(agent="Everardo G", text="Hi, how can I help?"),
        facts.Transferred(agent="Ryan S."),
        facts.Ended(reason="agent"),
    ]
    assert session.connection_timeout == 150.0
    assert ("unknown_message_type", "AgentJoinedConference") in session.notices_received()


def test_missing_and_null_fields_take_their_most_plausible_meaning() -> None:
    session = waiting_session()
    answer(session, Lane.POLL,
           HttpResponse(200, fixture("messages_with_missing_and_null_fields.json")))
    assert session.facts_received() == [
        facts.Queued(position=None, wait_s=None),
        facts.Queued(position=None, wait_s=None),
        facts.AgentJoined(agent=""),  # no name given: the webchat's default applies
        facts.AgentTyping(active=True),
        facts.AgentMessage(agent="", text="no name given"),
        # A ChatMessage without text is skipped, not a failure.
        facts.Transferred(agent="Bea"),
        facts.Ended(reason="agent"),  # a ChatEnded without a reason: the agent ended it
    ]
    notices = session.notices_received()
    assert ("message_ignored", "ChatMessage without text") in notices
    assert ("message_ignored", "SwitchServer without newUrl") in notices
    assert ("unknown_message_type", "") in notices
    assert session.take_switch_url() is None
    assert session.ack == 3


def test_fields_of_an_unexpected_type_are_coerced_or_read_as_missing() -> None:
    session = waiting_session()
    answer(session, Lane.POLL, HttpResponse(200, fixture("messages_with_unexpected_types.json")))
    assert session.facts_received() == [
        facts.Queued(position=3, wait_s=None),  # "3" is 3; "unknown" is no estimate
        facts.AgentJoined(agent="Ada"),
        facts.AgentMessage(agent="Ada", text="readable"),  # the agent's name so far
        facts.Ended(reason="failed", detail="Unknown"),  # ChatRequestFail without a reason
    ]
    assert session.connection_timeout == 150.0
    assert session.sneak_peek is True
    assert session.ack == 4
    unreadable = [d for e, d in session.notices_received() if e == "field_unreadable"]
    assert unreadable == ["ChatRequestSuccess.estimatedWaitTime", "QueueUpdate.position",
                          "ChatMessage.name"]


def test_a_chat_ended_without_a_reason_is_the_agents_end_not_a_failure() -> None:
    session = waiting_session()
    answer(session, Lane.POLL, HttpResponse(200, json.dumps({"messages": [
        {"type": "ChatEstablished", "message": {"name": "Ada"}},
        {"type": "ChatEnded"}], "sequence": 2}).encode()))
    assert session.facts_received()[-1] == facts.Ended(reason="agent")


@pytest.mark.parametrize("body", [
    b'{"sequence": 5}', b'{"messages": null, "sequence": 5}', b'{"messages": []}'])
def test_a_messages_answer_without_messages_is_an_empty_batch(body: bytes) -> None:
    decoded = wire.decode_messages(body)
    assert decoded.messages == []


@pytest.mark.parametrize(("body", "where"), [
    (b'{"messages": "not a list"}', "$.messages"),
    (b'{"messages": ["a string"]}', "$.messages[0]"),
    (b'[1, 2]', "object"),
    (b"<html>", "malformed"),
])
def test_a_body_that_is_not_the_documented_shape_names_what_is_wrong(body: bytes,
                                                                     where: str) -> None:
    with pytest.raises(RemoteProtocolError, match="not the documented shape") as caught:
        wire.decode_messages(body)
    assert where in str(caught.value)


def test_session_id_of_the_docs_example_with_its_string_poll_timeout() -> None:
    session = LiveAgentSession(params())
    session.start()
    answer(session, Lane.POST, HttpResponse(200, fixture("session_id_docs_example.json")))
    assert session.client_poll_timeout == 30.0
    assert session.session_id == "4eb90106-d8a5-4d2b-a1dd-c4facf90a929"


def test_session_id_without_id_and_poll_timeout_reads_them_from_the_key_and_the_default() -> None:
    session = LiveAgentSession(params())
    session.start()
    answer(session, Lane.POST, HttpResponse(200, fixture("session_id_sparse.json")))
    assert session.state is State.INITIATING
    assert session.session_id == "49d50d5a-790f-40ec-98ca-8b813e6f0347"
    assert session.client_poll_timeout == 40.0
    init = session.next_request(Lane.POST)
    assert init is not None and init.body is not None
    assert json.loads(init.body)["sessionId"] == "49d50d5a-790f-40ec-98ca-8b813e6f0347"


@pytest.mark.parametrize("value", ['"soon"', "-5", "0"])
def test_an_unreadable_poll_timeout_is_the_default(value: str) -> None:
    body = b'{"key": "k1!x", "affinityToken": "2c931fa0", "clientPollTimeout": ' + (
        value.encode() + b"}")
    assert wire.decode_session_id(body).client_poll_timeout == 40.0


@pytest.mark.parametrize("missing", ["key", "affinityToken"])
def test_a_session_id_without_what_bridged_cannot_do_without_fails_naming_it(
        missing: str) -> None:
    body = {"id": "i", "key": "i!k", "affinityToken": "2c931fa0", "clientPollTimeout": 40}
    del body[missing]
    session = LiveAgentSession(params())
    session.start()
    answer(session, Lane.POST, HttpResponse(200, json.dumps(body).encode()))
    (ended,) = session.facts_received()
    assert isinstance(ended, facts.Ended) and ended.reason == "failed"
    assert ended.detail.startswith("SessionId body is not the documented shape")
    assert f"`{missing}`" in ended.detail
