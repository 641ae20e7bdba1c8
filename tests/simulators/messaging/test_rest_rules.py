"""The strict rules of the REST endpoints, over real loopback."""

from __future__ import annotations

import json
from typing import Any

import aiohttp
import pytest

from bridged.simulators.messaging import (
    AGENT_ENDS_DEPLOYMENT,
    ECHO_DEPLOYMENT,
    MANUAL_DEPLOYMENT,
    WEB_DEPLOYMENT,
    Simulator,
)
from tests.simulators.messaging.helpers import API, ORG, ORG18, new_id, text_body

UUID_TEXT = "Specify the conversationId in UUID format. The UUID must be in lowercase."


def error(resp: Any) -> tuple[int, str, str]:
    body = resp.json()
    assert set(body) == {"message", "errorCode"}, body
    assert resp.headers["Content-Type"].startswith("application/json")
    return resp.status, body["errorCode"], body["message"]


# ------------------------------------------------------------------------------------------
# Access token


async def test_token_answers_the_documented_shape(guest: Any) -> None:
    resp = await guest().get_token(context={"appName": "tests", "clientVersion": "1.0.0"},
                                   deviceId="dev-1")
    assert resp.status == 200, resp
    body = resp.json()
    assert set(body) == {"accessToken", "lastEventId", "context"}
    assert isinstance(body["lastEventId"], str)
    config = body["context"]["configuration"]["embeddedServiceConfig"]
    assert config["name"] == ECHO_DEPLOYMENT and config["deploymentType"] == "API"
    assert config["attachments"] == {"endUserToAgent": False, "maxFileSize": 5 * 1024 * 1024}
    assert body["context"]["deviceId"] == "dev-1"
    assert body["context"]["endUser"]["role"] == "EndUser"
    assert body["context"]["endUser"]["subject"].startswith("v2/iamessage/UNAUTH/NA/uid:")


async def test_token_takes_the_18_character_org_id(guest: Any) -> None:
    assert (await guest().get_token(orgId=ORG18)).status == 200


@pytest.mark.parametrize(
    ("overrides", "code", "message"),
    [
        ({"orgId": "00D000000000002"}, "BAD_REQUEST", "Invalid orgId"),
        ({"orgId": ORG + "A"}, "BAD_REQUEST", "Invalid orgId"),
        ({"orgId": ORG + "AAA"}, "BAD_REQUEST", "Invalid orgId"),
        ({"esDeveloperName": "Nope"}, "BAD_REQUEST",
         "Invalid esDeveloperName: no deployment named 'Nope'"),
        ({"esDeveloperName": WEB_DEPLOYMENT}, "BAD_REQUEST",
         "Set the esDeveloperName to a deploymentType that's set to api"),
        ({"platform": "iOS"}, "BAD_REQUEST", "Unsupported platform 'iOS'"),
        ({"capabilitiesVersion": 1}, "BAD_REQUEST",
         "Invalid request body: Expected `str`, got `int` - at `$.capabilitiesVersion`"),
        ({"capabilitiesVersion": None}, "BAD_REQUEST",
         "Invalid request body: Object missing required field `capabilitiesVersion`"),
        ({"extra": True}, "BAD_REQUEST", "Unrecognized field `$.extra`"),
    ],
)
async def test_token_refusals(guest: Any, overrides: dict[str, Any], code: str,
                              message: str) -> None:
    resp = await guest().get_token(**overrides)
    assert error(resp) == (400, code, message)


async def test_token_needs_a_json_body(guest: Any, sim: Simulator) -> None:
    visitor = guest()
    path = API + "authorization/unauthenticated/access-token"
    resp = await visitor.request("POST", path, headers={"Content-Type": "text/plain"},
                                 data=b'{"orgId": "x"}')
    assert error(resp) == (400, "BAD_REQUEST", "Content-Type must be application/json")
    resp = await visitor.request("POST", path, headers={"Content-Type": "application/json"},
                                 data=b"{not json")
    assert resp.status == 400 and resp.json()["message"].startswith("Malformed JSON")
    resp = await visitor.request("POST", path, json=[1, 2])
    assert error(resp)[2] == "The request body must be a JSON object"


async def test_unknown_fields_pass_when_switched_off(make_sim: Any,
                                                     guest: Any) -> None:
    sim = await make_sim(reject_unknown_fields=False)
    assert (await guest(simulator=sim).get_token(extra=True)).status == 200


# ------------------------------------------------------------------------------------------
# Authorization


async def test_every_endpoint_but_the_token_needs_a_bearer(guest: Any) -> None:
    visitor = guest()
    await visitor.get_token()
    cid = new_id()
    calls = [
        ("GET", API + "authorization/continuation-access-token", None),
        ("POST", API + "conversation", {"conversationId": cid,
                                         "esDeveloperName": ECHO_DEPLOYMENT}),
        ("GET", API + "conversation/list", None),
        ("GET", f"{API}conversation/{cid}", None),
        ("DELETE", f"{API}conversation/{cid}?esDeveloperName={ECHO_DEPLOYMENT}", None),
        ("POST", f"{API}conversation/{cid}/message", text_body("hi")),
        ("POST", f"{API}conversation/{cid}/entry", {"entryType": "TypingStartedIndicator",
                                                    "id": new_id()}),
        ("POST", f"{API}conversation/{cid}/acknowledge-entries", {"acks": []}),
        ("GET", f"{API}conversation/{cid}/entries", None),
        ("DELETE", f"{API}conversation/{cid}/session?esDeveloperName={ECHO_DEPLOYMENT}",
         None),
    ]
    bad_headers: list[dict[str, str]] = [
        {},
        {"Authorization": f"Basic {visitor.token}"},
        {"Authorization": "Bearer "},
        {"Authorization": "Bearer not.a.jwt"},
        {"Authorization": f"Bearer {visitor.token}x"},
    ]
    for method, path, body in calls:
        for headers in bad_headers:
            resp = await visitor.request(method, path, headers=headers, json=body)
            assert resp.status == 401, (method, path, headers, resp)
            assert resp.json()["errorCode"] == "UNAUTHORIZED"


async def test_a_token_of_another_simulator_is_refused(
    make_sim: Any, guest: Any
) -> None:
    other = await make_sim()
    stranger = guest(simulator=other)
    await stranger.get_token()
    visitor = guest()
    visitor.token = stranger.token
    resp = await visitor.request("GET", API + "conversation/list")
    assert error(resp) == (401, "UNAUTHORIZED", "Invalid token: signature does not match")


# ------------------------------------------------------------------------------------------
# Create conversation


async def test_create_answers_201_and_needs_a_lowercase_uuid(guest: Any, sim: Simulator) -> None:
    visitor = guest()
    await visitor.get_token()
    upper = new_id().upper()
    assert error(await visitor.create(upper)) == (400, "BAD_REQUEST", UUID_TEXT)
    assert error(await visitor.create("not-a-uuid")) == (400, "BAD_REQUEST", UUID_TEXT)
    assert error(await visitor.create(new_id().replace("-", ""))) == (
        400, "BAD_REQUEST", UUID_TEXT)
    assert sim.conversations == {}
    resp = await visitor.create(routingAttributes={"_firstName": "Vera", "Hidden__c": "x"})
    assert resp.status == 201 and resp.json() == {"conversationId": visitor.conversation_id}
    conv = sim.conversation(visitor.conversation_id)
    assert conv.routing_attributes == {"_firstName": "Vera", "Hidden__c": "x"}
    assert conv.kind == "echo" and conv.routing_status == "INITIAL"


async def test_create_takes_null_routing_attributes_and_refuses_bad_ones(guest: Any) -> None:
    visitor = guest()
    await visitor.get_token()
    assert (await visitor.create(routingAttributes=None)).status == 201
    resp = await visitor.create(routingAttributes={"n": 1})
    assert error(resp)[0] == 400 and "$.routingAttributes" in error(resp)[2]


async def test_create_refuses_language_unless_switched_on(
    guest: Any, make_sim: Any
) -> None:
    visitor = guest()
    await visitor.get_token()
    assert error(await visitor.create(language="en_US")) == (
        400, "BAD_REQUEST", "Unrecognized field `$.language`")
    lenient = await make_sim(create_accepts_language=True, create_status=200)
    other = guest(simulator=lenient)
    await other.get_token()
    assert (await other.create(language="en_US")).status == 200


async def test_create_checks_the_deployment(guest: Any) -> None:
    visitor = guest()
    await visitor.get_token()
    visitor.deployment = "Unknown_One"
    assert error(await visitor.create())[:2] == (400, "BAD_REQUEST")
    visitor.deployment = WEB_DEPLOYMENT
    assert error(await visitor.create()) == (
        400, "BAD_REQUEST", "Set the esDeveloperName to a deploymentType that's set to api")
    visitor.deployment = MANUAL_DEPLOYMENT  # a real one, but not the token's
    assert error(await visitor.create()) == (
        400, "BAD_REQUEST", "The esDeveloperName is not the access token's deployment")


async def test_create_twice_is_409(guest: Any) -> None:
    visitor = guest()
    await visitor.get_token()
    cid = new_id()
    assert (await visitor.create(cid)).status == 201
    assert error(await visitor.create(cid))[:2] == (409, "CONFLICT")


# ------------------------------------------------------------------------------------------
# Conversations of another subject, unknown, closed


async def test_a_new_token_has_no_access_to_an_old_conversation(guest: Any) -> None:
    first = guest()
    await first.start(stream=False)
    second = guest()
    await second.get_token()
    second.conversation_id = first.conversation_id
    assert (await second.send("hi")).status == 403
    assert (await second.typing()).status == 403
    assert (await second.close()).status == 403
    resp = await second.request("GET", f"{API}conversation/{first.conversation_id}")
    assert error(resp)[:2] == (403, "FORBIDDEN")
    resp = await second.request("GET", f"{API}conversation/{first.conversation_id}/entries")
    assert resp.status == 403
    resp = await second.request("GET", API + "conversation/list")
    assert resp.json()["conversations"] == []


async def test_unknown_conversation_is_404_and_bad_path_ids_400(guest: Any) -> None:
    visitor = guest()
    await visitor.get_token()
    visitor.conversation_id = new_id()
    assert error(await visitor.send("hi"))[:2] == (404, "NOT_FOUND")
    visitor.conversation_id = visitor.conversation_id.upper()
    assert error(await visitor.send("hi")) == (400, "BAD_REQUEST", UUID_TEXT)
    assert error(await visitor.typing()) == (400, "BAD_REQUEST", UUID_TEXT)


async def test_a_closed_conversation_refuses_everything_but_reading(
    guest: Any, make_sim: Any
) -> None:
    visitor = guest()
    await visitor.start(stream=False)
    assert (await visitor.close()).status == 204
    assert error(await visitor.send("hi")) == (403, "FORBIDDEN", "The conversation is closed")
    assert (await visitor.typing()).status == 403
    assert (await visitor.close()).status == 403
    assert await visitor.routing_status() in ("INITIAL", "ROUTED")
    resp = await visitor.request("GET", f"{API}conversation/{visitor.conversation_id}/entries")
    assert resp.status == 200
    lenient = await make_sim(closed_conversation_status=404)
    other = guest(simulator=lenient)
    await other.start(stream=False)
    await other.close()
    assert (await other.send("hi")).status == 404


# ------------------------------------------------------------------------------------------
# Send message


async def test_send_answers_202_with_the_entry(guest: Any, sim: Simulator) -> None:
    visitor = guest(MANUAL_DEPLOYMENT)
    await visitor.start(stream=False)
    mid = new_id()
    resp = await visitor.send("hello", mid, isNewMessagingSession=False, language="en_US")
    assert resp.status == 202
    (entry,) = resp.json()["conversationEntries"]
    assert entry["id"] == mid and isinstance(entry["clientTimestamp"], int)
    assert list(sim.conversation(visitor.conversation_id).message_ids) == [mid]


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda b: b["message"].update(id=b["message"]["id"].upper()),
         "Specify the message.id in UUID format. The UUID must be in lowercase."),
        (lambda b: b["message"].update(messageType="ChoicesResponseMessage"),
         "Unsupported messageType 'ChoicesResponseMessage'"),
        (lambda b: b["message"]["staticContent"].update(formatType="RichLink"),
         "Unsupported formatType 'RichLink'"),
        (lambda b: b["message"]["staticContent"].update(text="  "),
         "The message text must not be empty"),
        (lambda b: b["message"]["staticContent"].update(text="x" * 3001),
         "The message text is longer than 3000 characters"),
        (lambda b: b["message"].update(inReplyToMessageId="ABC"),
         "Specify the inReplyToMessageId in UUID format. The UUID must be in lowercase."),
        (lambda b: b.pop("esDeveloperName"),
         "Invalid request body: Object missing required field `esDeveloperName`"),
        (lambda b: b.update(isNewMessagingSession="false"),
         "Invalid request body: Expected `bool`, got `str` - at `$.isNewMessagingSession`"),
        (lambda b: b["message"].update(format="x"), "Unrecognized field `$.message.format`"),
    ],
)
async def test_send_refusals(guest: Any, mutate: Any, message: str) -> None:
    visitor = guest(MANUAL_DEPLOYMENT)
    await visitor.start(stream=False)
    body = text_body("hello", deployment=MANUAL_DEPLOYMENT)
    mutate(body)
    resp = await visitor.request("POST", f"{API}conversation/{visitor.conversation_id}/message",
                                 json=body)
    assert error(resp) == (400, "BAD_REQUEST", message)


async def test_send_needs_a_json_content_type(guest: Any) -> None:
    visitor = guest(MANUAL_DEPLOYMENT)
    await visitor.start(stream=False)
    resp = await visitor.request(
        "POST", f"{API}conversation/{visitor.conversation_id}/message",
        headers=visitor.headers(**{"Content-Type": "text/plain"}),
        data=json.dumps(text_body("hi", deployment=MANUAL_DEPLOYMENT)))
    assert error(resp) == (400, "BAD_REQUEST", "Content-Type must be application/json")


async def test_after_the_agent_ended_sends_get_417_until_a_new_session(
    guest: Any, sim: Simulator
) -> None:
    visitor = guest(AGENT_ENDS_DEPLOYMENT)
    reader = await visitor.start()
    assert reader is not None
    await reader.until("CONVERSATION_PARTICIPANT_CHANGED")
    assert (await visitor.send("first")).status == 202
    await reader.until("CONVERSATION_SESSION_STATUS_CHANGED")
    await reader.until("CONVERSATION_SESSION_STATUS_CHANGED")  # Active, then Ended
    mid = new_id()
    resp = await visitor.send("again", mid)
    assert error(resp)[:2] == (417, "EXPECTATION_FAILED")
    assert await visitor.routing_status() == "NEEDS_ROUTING"
    # The sample app's answer: the same id, with a new session and the pre-chat data.
    resp = await visitor.send("again", mid, isNewMessagingSession=True,
                              routingAttributes={"_firstName": "Vera"})
    assert resp.status == 202
    conv = sim.conversation(visitor.conversation_id)
    assert conv.session_number == 2 and conv.routing_attributes == {"_firstName": "Vera"}
    events = await reader.until("CONVERSATION_PARTICIPANT_CHANGED")
    assert [e.event for e in events][:2] == ["CONVERSATION_MESSAGE",
                                             "CONVERSATION_ROUTING_RESULT"]


# ------------------------------------------------------------------------------------------
# Duplicates


async def test_a_repeated_message_id_is_answered_and_dropped(guest: Any, sim: Simulator) -> None:
    visitor = guest(MANUAL_DEPLOYMENT)
    reader = await visitor.start()
    assert reader is not None
    mid = new_id()
    first = await visitor.send("once", mid)
    again = await visitor.send("once", mid)
    assert first.status == again.status == 202
    assert first.json() == again.json()
    conv = sim.conversation(visitor.conversation_id)
    assert list(conv.duplicates) == [mid]
    events = [e for e in await reader.quiet(0.2) if e.event == "CONVERSATION_MESSAGE"]
    assert [e.entry["identifier"] for e in events] == [mid]


@pytest.mark.parametrize(("policy", "status", "echoes"), [("reject", 409, 1), ("accept", 202, 2)])
async def test_other_duplicate_policies(make_sim: Any, guest: Any,
                                        policy: str, status: int, echoes: int) -> None:
    sim = await make_sim(duplicate_messages=policy)
    visitor = guest(MANUAL_DEPLOYMENT, sim)
    reader = await visitor.start()
    assert reader is not None
    mid = new_id()
    assert (await visitor.send("once", mid)).status == 202
    assert (await visitor.send("once", mid)).status == status
    events = [e for e in await reader.quiet(0.2) if e.event == "CONVERSATION_MESSAGE"]
    assert len(events) == echoes
    reader.close()


# ------------------------------------------------------------------------------------------
# Typing and acknowledgements


async def test_typing_answers_200_and_checks_its_body(guest: Any) -> None:
    visitor = guest(MANUAL_DEPLOYMENT)
    await visitor.start(stream=False)
    assert (await visitor.typing()).status == 200
    assert (await visitor.typing(started=False)).status == 200
    path = f"{API}conversation/{visitor.conversation_id}/entry"
    resp = await visitor.request("POST", path, json={"entryType": "Typing", "id": new_id()})
    assert error(resp) == (400, "BAD_REQUEST", "Unsupported entryType 'Typing'")
    resp = await visitor.request("POST", path, json={"entryType": "TypingStartedIndicator",
                                                     "id": new_id().upper()})
    assert error(resp)[2] == "Specify the id in UUID format. The UUID must be in lowercase."
    resp = await visitor.request("POST", path, json={"entryType": "TypingStartedIndicator"})
    assert error(resp)[2].endswith("Object missing required field `id`")


async def test_acknowledgements_name_known_entries(guest: Any, sim: Simulator) -> None:
    visitor = guest(MANUAL_DEPLOYMENT)
    reader = await visitor.start()
    assert reader is not None
    await reader.until("CONVERSATION_ROUTING_RESULT")
    sim.agent_joins(visitor.conversation_id)
    sim.agent_says(visitor.conversation_id, "Hello")
    said = (await reader.until("CONVERSATION_MESSAGE"))[-1].entry["identifier"]
    path = f"{API}conversation/{visitor.conversation_id}/acknowledge-entries"
    ack = {"id": new_id(), "entryType": "Read", "conversationEntryId": said}
    resp = await visitor.request("POST", path, json={"acks": [ack]})
    assert resp.status == 202
    assert list(sim.conversation(visitor.conversation_id).acks) == [ack]
    unknown = {"id": new_id(), "entryType": "Delivery", "conversationEntryId": new_id()}
    resp = await visitor.request("POST", path, json={"acks": [unknown]})
    assert error(resp)[2] == "acks[0].conversationEntryId names no entry of this conversation"
    resp = await visitor.request("POST", path, json={"acks": [{**ack, "entryType": "Seen"}]})
    assert error(resp)[2] == "Unsupported acks[0].entryType 'Seen'"
    resp = await visitor.request("POST", path, json={"acks": []})
    assert error(resp)[2] == "Specify at least one acknowledgement"


# ------------------------------------------------------------------------------------------
# Reading: list conversations, list entries, routing status


async def test_list_conversations(guest: Any) -> None:
    visitor = guest(MANUAL_DEPLOYMENT)
    await visitor.get_token()
    first, second = new_id(), new_id()
    await visitor.create(first)
    await visitor.create(second)
    visitor.conversation_id = first
    await visitor.close()
    resp = await visitor.request("GET", API + "conversation/list",
                                 params={"inclClosedConvs": "false", "limit": "20"})
    body = resp.json()
    assert body["openConversationsFound"] == 1 and body["closedConversationsFound"] == 1
    assert [c["conversationId"] for c in body["conversations"]] == [second]
    assert body["conversations"][0]["endTimestamp"] is None
    resp = await visitor.request("GET", API + "conversation/list",
                                 params={"inclClosedConvs": "true"})
    assert {c["conversationId"] for c in resp.json()["conversations"]} == {first, second}
    for params in ({"limit": "51"}, {"limit": "0"}, {"limit": "x"}, {"inclClosedConvs": "1"}):
        resp = await visitor.request("GET", API + "conversation/list", params=params)
        assert resp.status == 400, params


async def test_list_entries_has_object_payloads_newest_first(guest: Any, sim: Simulator) -> None:
    visitor = guest(MANUAL_DEPLOYMENT)
    reader = await visitor.start()
    assert reader is not None
    await reader.until("CONVERSATION_ROUTING_RESULT")
    sim.agent_joins(visitor.conversation_id)
    await visitor.send("one")
    sim.agent_says(visitor.conversation_id, "two")
    await visitor.typing()  # typing is not in the transcript
    path = f"{API}conversation/{visitor.conversation_id}/entries"
    entries = (await visitor.request("GET", path)).json()["conversationEntries"]
    types = [e["entryType"] for e in entries]
    assert types == ["Message", "Message", "SessionStatusChanged", "ParticipantChanged",
                     "RoutingResult"]
    assert all(isinstance(e["entryPayload"], dict) for e in entries)
    assert entries[0]["entryPayload"]["abstractMessage"]["staticContent"]["text"] == "two"
    resp = await visitor.request("GET", path, params={
        "direction": "FromStart", "limit": "2",
        "entryTypeFilter": "Message,ParticipantChanged,RoutingResult"})
    assert [e["entryType"] for e in resp.json()["conversationEntries"]] == [
        "RoutingResult", "ParticipantChanged"]
    later = entries[1]["transcriptedTimestamp"]
    resp = await visitor.request("GET", path, params={"startTimestamp": str(later),
                                                      "entryTypeFilter": "Message"})
    assert len(resp.json()["conversationEntries"]) == 2
    for params in ({"direction": "Up"}, {"entryTypeFilter": "Message,Bogus"},
                   {"startTimestamp": "yesterday"}, {"limit": "100"}):
        assert (await visitor.request("GET", path, params=params)).status == 400, params


async def test_routing_status_follows_the_session(guest: Any, sim: Simulator) -> None:
    visitor = guest(MANUAL_DEPLOYMENT)
    reader = await visitor.start()
    assert reader is not None
    await reader.until("CONVERSATION_ROUTING_RESULT")
    assert await visitor.routing_status() == "INITIAL"
    resp = await visitor.request("GET", f"{API}conversation/{visitor.conversation_id}")
    assert resp.json() == {"conversationId": visitor.conversation_id,
                           "routingStatus": "INITIAL"}
    sim.agent_joins(visitor.conversation_id)
    assert await visitor.routing_status() == "ROUTED"
    sim.agent_leaves(visitor.conversation_id)
    assert await visitor.routing_status() == "ROUTED"
    sim.agent_joins(visitor.conversation_id)
    sim.agent_ends(visitor.conversation_id)
    assert await visitor.routing_status() == "NEEDS_ROUTING"


# ------------------------------------------------------------------------------------------
# Ending


async def test_close_needs_the_deployment_in_the_query(guest: Any) -> None:
    visitor = guest(MANUAL_DEPLOYMENT)
    await visitor.start(stream=False)
    path = f"{API}conversation/{visitor.conversation_id}"
    resp = await visitor.request("DELETE", path)
    assert error(resp) == (400, "BAD_REQUEST", "Specify the esDeveloperName query parameter")
    resp = await visitor.request("DELETE", path, params={"esDeveloperName": WEB_DEPLOYMENT})
    assert error(resp)[2] == "Set the esDeveloperName to a deploymentType that's set to api"
    assert (await visitor.close()).status == 204


async def test_end_session_keeps_the_conversation_open(guest: Any, sim: Simulator) -> None:
    visitor = guest(MANUAL_DEPLOYMENT)
    reader = await visitor.start()
    assert reader is not None
    await reader.until("CONVERSATION_ROUTING_RESULT")
    sim.agent_joins(visitor.conversation_id)
    path = f"{API}conversation/{visitor.conversation_id}/session"
    resp = await visitor.request("DELETE", path, params={"esDeveloperName": MANUAL_DEPLOYMENT})
    assert resp.status == 204 and resp.text == ""
    events = await reader.take(4)
    assert [e.event for e in events][2:] == ["CONVERSATION_PARTICIPANT_CHANGED",
                                             "CONVERSATION_SESSION_STATUS_CHANGED"]
    assert events[3].payload["sessionEndedByRole"] == "EndUser"
    conv = sim.conversation(visitor.conversation_id)
    assert conv.is_open and not conv.has_session
    assert (await visitor.send("hi")).status == 417
    resp = await visitor.request("DELETE", path, params={"esDeveloperName": MANUAL_DEPLOYMENT})
    assert resp.status == 417


# ------------------------------------------------------------------------------------------
# Files


def file_form(deployment: str, *, name: str = "photo.png", data: bytes = b"\x89PNG....",
              message_id: str | None = None) -> aiohttp.FormData:
    form = aiohttp.FormData()
    entry = {"esDeveloperName": deployment,
             "message": {"id": message_id or new_id(), "fileId": new_id(), "text": "look"}}
    form.add_field("messageEntry", json.dumps(entry), content_type="application/json")
    form.add_field("fileData", data, filename=name, content_type="application/octet-stream")
    return form


async def test_files_are_refused_while_attachments_are_off(guest: Any) -> None:
    visitor = guest(MANUAL_DEPLOYMENT)
    await visitor.start(stream=False)
    resp = await visitor.request("POST", f"{API}conversation/{visitor.conversation_id}/file",
                                 data=file_form(MANUAL_DEPLOYMENT))
    assert error(resp) == (400, "BAD_REQUEST",
                           "File attachments are not enabled for this deployment")


async def test_files_when_attachments_are_on(make_sim: Any, guest: Any) -> None:
    sim = await make_sim(accept_files=True, max_file_bytes=1000)
    visitor = guest(MANUAL_DEPLOYMENT, sim)
    reader = await visitor.start()
    assert reader is not None
    path = f"{API}conversation/{visitor.conversation_id}/file"
    mid = new_id()
    resp = await visitor.request("POST", path, data=file_form(MANUAL_DEPLOYMENT,
                                                              message_id=mid))
    assert resp.status == 202 and resp.json()["conversationEntries"][0]["id"] == mid
    (echo,) = [e for e in await reader.until("CONVERSATION_MESSAGE")
               if e.event == "CONVERSATION_MESSAGE"]
    content = echo.payload["abstractMessage"]["staticContent"]
    assert content["formatType"] == "Attachments"
    assert content["attachments"][0]["name"] == "photo.png"
    assert content["attachments"][0]["mimeType"] == "image/png"
    assert echo.entry["sender"]["role"] == "EndUser"
    resp = await visitor.request("POST", path, data=file_form(MANUAL_DEPLOYMENT,
                                                              data=b"x" * 1001))
    assert error(resp)[:2] == (413, "PAYLOAD_TOO_LARGE")
    resp = await visitor.request("POST", path, data=file_form(MANUAL_DEPLOYMENT,
                                                              name="tool.exe"))
    assert error(resp)[:2] == (415, "UNSUPPORTED_MEDIA_TYPE")
    resp = await visitor.request("POST", path, json={"esDeveloperName": MANUAL_DEPLOYMENT})
    assert error(resp)[2] == "Content-Type must be multipart/form-data"
    assert sim.conversation(visitor.conversation_id).files[0]["size"] == 8
    reader.close()


# ------------------------------------------------------------------------------------------
# Anything else


async def test_unknown_paths_and_methods_get_json_errors_and_are_recorded(
    guest: Any, sim: Simulator
) -> None:
    visitor = guest()
    resp = await visitor.request("GET", API + "nothing/here", headers={})
    assert error(resp) == (404, "NOT_FOUND", "No such endpoint")
    resp = await visitor.request("PUT", API + "conversation", headers={})
    assert resp.status == 405 and resp.json()["errorCode"] == "METHOD_NOT_ALLOWED"
    assert [(r.resource, r.status) for r in sim.requests] == [("Unknown", 404),
                                                             ("Unknown", 405)]
