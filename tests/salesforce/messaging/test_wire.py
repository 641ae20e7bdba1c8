"""Pure tests of the Enhanced Chat bodies: tolerant decoding, strict about what is relied on."""

from __future__ import annotations

import json

import msgspec
import pytest

from bridged.errors import ConfigError, RemoteProtocolError
from bridged.salesforce.messaging import wire
from tests.salesforce.messaging import payloads as p


def test_access_token_request_is_the_sample_body_plus_context() -> None:
    body = wire.encode_body(wire.AccessTokenRequest(
        org_id=p.ORG_18, es_developer_name="Bridged_API", capabilities_version="1",
        platform="Web", context=wire.ClientContext(app_name="bridged", client_version="0.1.0")))
    assert json.loads(body) == {
        "orgId": p.ORG_18, "esDeveloperName": "Bridged_API", "capabilitiesVersion": "1",
        "platform": "Web", "context": {"appName": "bridged", "clientVersion": "0.1.0"}}


def test_access_token_request_without_context_leaves_it_out() -> None:
    body = wire.encode_body(wire.AccessTokenRequest(
        org_id=p.ORG_15, es_developer_name="X", capabilities_version="1", platform="Web"))
    assert b"context" not in body


def test_access_token_response_reads_token_last_event_id_and_hidden_fields() -> None:
    token, problem = wire.decode_access_token(p.token_body())
    assert problem is None
    assert token.access_token == p.TOKEN
    assert token.last_event_id == "1739971138000-0000"
    assert token.context is not None and token.context.configuration is not None
    config = token.context.configuration.embedded_service_config
    assert config is not None and config.deployment_type == "API"
    fields = config.forms[0].form_fields
    assert [(f.name, f.is_hidden) for f in fields] == [("_firstName", False), ("BotHistory", True)]


def test_access_token_response_last_event_id_number_or_missing() -> None:
    token, _ = wire.decode_access_token(p.token_body(last_event_id=1739971138000))
    assert token.last_event_id == "1739971138000"
    token, _ = wire.decode_access_token(p.token_body(last_event_id=None))
    assert token.last_event_id is None


def test_access_token_response_with_a_surprising_context_still_gives_the_token() -> None:
    body = p.token_body(context={"configuration": {"embeddedServiceConfig": {"forms": "oops"}}})
    token, problem = wire.decode_access_token(body)
    assert token.access_token == p.TOKEN and token.context is None
    assert problem is not None and "forms" in problem


def test_access_token_response_without_token_names_the_field() -> None:
    with pytest.raises(RemoteProtocolError) as info:
        wire.decode_access_token(b'{"lastEventId": "1"}')
    assert "accessToken" in str(info.value)


def test_create_conversation_body_in_sample_order_and_without_empty_attributes() -> None:
    body = wire.encode_body(wire.CreateConversation(
        routing_attributes={"_firstName": "Ann"}, es_developer_name="Bridged_API",
        conversation_id=p.CONV))
    assert body == (b'{"routingAttributes":{"_firstName":"Ann"},"esDeveloperName":"Bridged_API",'
                    b'"conversationId":"' + p.CONV.encode() + b'"}')
    bare = wire.encode_body(wire.CreateConversation(es_developer_name="X",
                                                    conversation_id=p.CONV))
    assert json.loads(bare) == {"esDeveloperName": "X", "conversationId": p.CONV}


def test_send_message_body() -> None:
    body = wire.encode_body(wire.SendMessage(
        message=wire.OutgoingMessage(id="7cd9a406-0000-4000-8000-000000000001",
                                     message_type="StaticContentMessage",
                                     static_content=wire.TextContent(text="check")),
        es_developer_name="Bridged_API", language="en-US"))
    assert json.loads(body) == {
        "message": {"id": "7cd9a406-0000-4000-8000-000000000001",
                    "messageType": "StaticContentMessage",
                    "staticContent": {"formatType": "Text", "text": "check"}},
        "esDeveloperName": "Bridged_API", "language": "en-US"}


def test_typing_body() -> None:
    body = wire.encode_body(wire.TypingIndicator(entry_type="TypingStartedIndicator", id="u"))
    assert json.loads(body) == {"entryType": "TypingStartedIndicator", "id": "u"}


def test_sse_message_payload_is_decoded_a_second_time() -> None:
    data = p.sse_data(p.entry(p.text_message("Hi, welcome to CoinSwitch!", "32cd97e7"),
                              sender=p.CHATBOT, display="CoinSwitch", entry_id="32cd97e7",
                              ts=1739971138541))
    decoded = wire.decode_sse_data(data, "CONVERSATION_MESSAGE")
    assert decoded.conversation_id == p.CONV
    assert decoded.entry is not None
    assert decoded.entry.identifier == "32cd97e7"
    assert decoded.entry.sender.role == "Chatbot"
    assert decoded.entry.sender_display_name == "CoinSwitch"
    assert decoded.entry.transcripted_timestamp == 1739971138541
    payload = decoded.entry.payload
    assert isinstance(payload, wire.MessagePayload)
    assert payload.abstract_message.text == "Hi, welcome to CoinSwitch!"


def test_entries_list_payload_is_an_object() -> None:
    body = p.entries_body(p.entry(p.text_message("hello", "e1"), sender=p.agent(),
                                  display="Ada", entry_id="e1", ts=5, as_string=False))
    entries = wire.decode_entries(body).entries
    assert len(entries) == 1
    assert isinstance(entries[0].payload, wire.MessagePayload)
    assert entries[0].payload.abstract_message.text == "hello"


def test_entry_with_missing_optional_fields_takes_plausible_defaults() -> None:
    data = json.dumps({"conversationId": p.CONV, "conversationEntry": {
        "entryPayload": json.dumps({"entryType": "Message", "id": "m1",
                                    "abstractMessage": {"staticContent": {"text": "hi"}}})}})
    decoded = wire.decode_sse_data(data)
    assert decoded.entry is not None
    assert decoded.entry.entry_type == "Message"  # from the payload
    assert decoded.entry.identifier == "m1"  # from the payload's id
    assert decoded.entry.sender.role == ""
    assert decoded.entry.transcripted_timestamp == 0


def test_missing_conversation_id_names_the_field() -> None:
    with pytest.raises(RemoteProtocolError) as info:
        wire.decode_sse_data('{"conversationEntry": null}', "CONVERSATION_MESSAGE")
    assert str(info.value) == ("CONVERSATION_MESSAGE data is not the documented shape: "
                               "Object missing required field `conversationId`")


def test_message_without_abstract_message_names_the_field() -> None:
    data = p.sse_data(p.entry({"entryType": "Message", "id": "m"}, sender=p.agent(),
                              display="Ada", entry_id="m", ts=1))
    with pytest.raises(RemoteProtocolError) as info:
        wire.decode_sse_data(data, "CONVERSATION_MESSAGE")
    assert "abstractMessage" in str(info.value)
    assert "conversationEntry.entryPayload" in str(info.value)


def test_entry_payload_that_is_not_json_is_refused() -> None:
    data = p.sse_data({"identifier": "x", "entryType": "Message", "entryPayload": "{not json"})
    with pytest.raises(RemoteProtocolError):
        wire.decode_sse_data(data)


def test_unknown_entry_type_is_kept_by_name() -> None:
    data = p.sse_data(p.entry({"entryType": "ClientAction", "id": "c", "whatever": [1]},
                              sender=p.SYSTEM, display="x", entry_id="c", ts=1))
    decoded = wire.decode_sse_data(data)
    assert decoded.entry is not None
    assert decoded.entry.payload == wire.UnknownPayload(entry_type="ClientAction")


def test_typing_entry_without_payload_is_fine() -> None:
    data = p.sse_data(p.entry(None, sender=p.agent(), display="Ada", entry_id="t",
                              ts=1, entry_type="TypingStartedIndicator"))
    decoded = wire.decode_sse_data(data)
    assert decoded.entry is not None and isinstance(decoded.entry.payload, wire.TypingPayload)


def test_participant_changed_entries() -> None:
    data = p.sse_data(p.entry(p.participant_changed("add", p.agent(), "Ada Lovelace", "pc"),
                              sender=p.SYSTEM, display="Platform Integration User",
                              entry_id="pc", ts=1))
    decoded = wire.decode_sse_data(data)
    assert decoded.entry is not None
    payload = decoded.entry.payload
    assert isinstance(payload, wire.ParticipantChangedPayload)
    assert [(c.operation, c.participant.role, c.display_name) for c in payload.entries] == [
        ("add", "Agent", "Ada Lovelace")]


def test_routing_result_estimate_and_failure() -> None:
    ok = msgspec.json.decode(json.dumps(p.routing_result("r", ewt=95)),
                                  type=wire.RoutingResultPayload)
    assert not ok.failed
    assert ok.estimated_wait_time is not None and ok.estimated_wait_time.seconds == 95
    none = msgspec.json.decode(json.dumps(p.routing_result("r")),
                                    type=wire.RoutingResultPayload)
    assert none.estimated_wait_time is not None and none.estimated_wait_time.seconds is None
    unrequested = wire.EstimatedWaitTime(estimated_wait_time_in_seconds=30,
                                         is_ewt_requested=False)
    assert unrequested.seconds is None
    failed = msgspec.json.decode(
        json.dumps(p.routing_result("r", failure_type="RoutingError",
                                    error_messages=[{"message": "No queue"}, "busy"])),
        type=wire.RoutingResultPayload)
    assert failed.failed and failed.failure_detail == "No queue; busy"
    bare = wire.RoutingResultPayload()
    assert not bare.failed and bare.estimated_wait_time is None


def test_message_text_for_attachments_and_choices() -> None:
    files = wire.AbstractMessage(static_content=wire.StaticContent(
        format_type="Attachments", text="Here you go",
        attachments=[wire.Attachment(name="invoice.pdf", url="https://x/y")]))
    assert files.text == "Here you go\ninvoice.pdf https://x/y"
    choices = msgspec.json.decode(json.dumps({
        "messageType": "ChoicesMessage",
        "choices": {"formatType": "QuickReplies", "text": "Pick one",
                    "optionItems": [{"titleItem": {"title": "Yes"}}, {"title": "No"}]}}),
        type=wire.AbstractMessage)
    assert choices.text == "Pick one\n- Yes\n- No"


def test_queue_position_read_wherever_it_is() -> None:
    assert wire.decode_queue_position(b'{"conversationId":"x","queuePosition":3}').value == 3
    flat = wire.decode_queue_position(b'{"position":2,"estimatedWaitTime":40}')
    assert (flat.value, flat.wait_s) == (2, 40)
    nested = wire.decode_queue_position(
        b'{"estimatedWaitTime":{"estimatedWaitTimeInSeconds":12,"isEWTRequested":true}}')
    assert (nested.value, nested.wait_s) == (None, 12)
    assert wire.decode_queue_position(b'{"queuePosition":"three"}') == wire.QueuePositionPayload()


def test_conversation_status_and_error_bodies() -> None:
    status = wire.decode_conversation_status(b'{"routingStatus":"TRANSFER","conversationId":"x"}')
    assert status.routing_status == "TRANSFER"
    assert wire.decode_conversation_status(b"{}").routing_status == ""
    error = wire.decode_error(b'{"message":"Jwt is expired","errorCode":"UNAUTHORIZED"}')
    assert (error.message, error.error_code) == ("Jwt is expired", "UNAUTHORIZED")
    assert wire.decode_error(b"Jwt is expired").message == "Jwt is expired"


def test_sent_entries_tolerates_anything() -> None:
    sent = wire.decode_sent_entries(b'{"conversationEntries":[{"id":"e","clientTimestamp":1}]}')
    assert sent.conversation_entries[0].id == "e"
    assert wire.decode_sent_entries(b"") == wire.SendMessageResponse()
    assert wire.decode_sent_entries(b"<html>") == wire.SendMessageResponse()


def test_read_jwt_gives_exp_and_org_id() -> None:
    claims = wire.read_jwt(p.jwt(exp=1740079370))
    assert (claims.exp, claims.org_id, claims.iat) == (1740079370, p.ORG_15, int(p.T0))
    assert claims.sub is not None and claims.sub.startswith("v2/iamessage/UNAUTH")


def test_read_jwt_without_exp() -> None:
    assert wire.read_jwt(p.jwt(exp=None)).exp is None


@pytest.mark.parametrize("token", ["opaque", "a.b", "a.!!!.c", f"a.{p.b64url(b'[1]')}.c"])
def test_read_jwt_refuses_what_is_not_a_jwt(token: str) -> None:
    with pytest.raises(RemoteProtocolError):
        wire.read_jwt(token)


def test_org_id_15() -> None:
    assert wire.org_id_15(p.ORG_18) == p.ORG_15
    assert wire.org_id_15(p.ORG_15) == p.ORG_15
    for bad in ("00DNy0000000Hg", "001Ny0000000Hgn", ""):
        with pytest.raises(ConfigError):
            wire.org_id_15(bad)
