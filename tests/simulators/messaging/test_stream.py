"""The event stream: its checks, its wire format, echoes, pings, replay, its lifetime."""

from __future__ import annotations

import asyncio
import json
import re
from typing import Any

import aiohttp
import pytest

from bridged.simulators.messaging import ECHO_DEPLOYMENT, MANUAL_DEPLOYMENT, Simulator
from tests.simulators.messaging.helpers import ORG, ORG18, STREAM, EventReader, Guest, new_id

# ------------------------------------------------------------------------------------------
# Checks


async def open_with(visitor: Guest, **replace: str | None) -> Any:
    headers = visitor.stream_headers()
    for name, value in replace.items():
        name = name.replace("_", "-")
        if value is None:
            headers.pop(name)
        else:
            headers[name] = value
    return await visitor.open_stream(headers)


async def test_the_stream_checks_its_headers(guest: Any) -> None:
    visitor = guest()
    await visitor.get_token()
    cases = [
        ({"X_Org_Id": ORG18}, "OrgId in the header and token must match"),
        ({"X_Org_Id": "00D000000000002"}, "OrgId in the header and token must match"),
        ({"X_Org_Id": None}, "Specify the X-Org-Id header"),
        ({"Last_Event_Id": None}, "Specify the Last-Event-Id header"),
        ({"Last_Event_Id": "abc"}, "Invalid Last-Event-Id"),
        ({"Accept": "application/json"}, "The Accept header must be text/event-stream"),
    ]
    for replace, message in cases:
        resp = await open_with(visitor, **replace)
        assert not isinstance(resp, EventReader)
        assert (resp.status, resp.json()["message"]) == (400, message), replace


async def test_header_names_are_case_insensitive_and_unknown_params_ignored(guest: Any) -> None:
    visitor = guest()
    await visitor.get_token()
    headers = {"authorization": f"Bearer {visitor.token}", "accept": "text/event-stream",
               "X-Org-ID": ORG, "Last-Event-ID": visitor.last_event_id or ""}
    reader = await visitor.open_stream(headers, params={"_ts": "1700000000000"})
    assert isinstance(reader, EventReader)


async def test_the_stream_401_has_the_spring_body(make_sim: Any,
                                                  guest: Any) -> None:
    sim = await make_sim(token_lifetime_s=0.2)
    visitor = guest(simulator=sim)
    await visitor.get_token()
    await asyncio.sleep(0.25)
    resp = await visitor.open_stream()
    assert not isinstance(resp, EventReader)
    assert resp.status == 401 and "Jwt is expired" in resp.text
    body = resp.json()
    assert body["status"] == 401 and body["error"] == "Unauthorized"
    assert body["path"] == STREAM and "timestamp" in body
    resp = await visitor.open_stream({"Accept": "text/event-stream"})
    assert not isinstance(resp, EventReader)
    assert resp.json()["message"] == "Missing Authorization header"


async def test_header_rules_can_be_switched_off(make_sim: Any,
                                                guest: Any) -> None:
    sim = await make_sim(require_org_id_header=False, require_last_event_id=False)
    visitor = guest(simulator=sim)
    await visitor.get_token()
    headers = {"Authorization": f"Bearer {visitor.token}", "Accept": "text/event-stream",
               "X-Org-Id": ORG18}
    reader = await visitor.open_stream(headers)
    assert isinstance(reader, EventReader)
    reader.close()


# ------------------------------------------------------------------------------------------
# Wire format


async def test_events_are_exactly_as_documented(guest: Any, sim: Simulator) -> None:
    visitor = guest(MANUAL_DEPLOYMENT)
    reader = await visitor.start()
    assert reader is not None
    await reader.until("CONVERSATION_ROUTING_RESULT")
    sim.agent_joins(visitor.conversation_id)
    sim.agent_says(visitor.conversation_id, 'Say "hi"\nplease')
    await reader.until("CONVERSATION_MESSAGE")
    blocks = reader.raw.decode().split("\n\n")
    assert blocks[-1] == ""
    for block in blocks[:-1]:
        lines = block.split("\n")
        if lines[0] == "event: ping":
            assert lines == ["event: ping", "data: 0"]
            continue
        assert len(lines) == 3, lines
        assert re.fullmatch(r"id: \d+-\d+", lines[0])
        assert re.fullmatch(r"event: CONVERSATION_[A-Z_]+", lines[1])
        assert lines[2].startswith("data: {") and lines[2].endswith("}")
    message = reader.events[-1]
    data = message.json()
    assert set(data) == {"channelPlatformKey", "channelType", "channelAddressIdentifier",
                         "conversationId", "conversationEntry"}
    assert data["channelType"] == "embedded_messaging"
    assert data["conversationId"] == visitor.conversation_id
    entry = message.entry
    assert set(entry) == {"senderDisplayName", "identifier", "entryType", "entryPayload",
                          "sender", "transcriptedTimestamp", "clientTimestamp",
                          "relatedRecords"}
    assert isinstance(entry["entryPayload"], str)
    payload = message.payload
    assert payload["entryType"] == "Message" and payload["id"] == entry["identifier"]
    assert payload["abstractMessage"]["staticContent"] == {"formatType": "Text",
                                                           "text": 'Say "hi"\nplease'}
    assert entry["sender"] == {"role": "Agent", "appType": "agent",
                               "subject": "005000000000ADA", "clientIdentifier": ""}
    assert entry["senderDisplayName"] == "Ada Agent"
    ids = [e.id for e in reader.events]
    assert len(set(ids)) == len(ids)


async def test_pings_come_after_silence_without_an_id(make_sim: Any,
                                                      guest: Any) -> None:
    sim = await make_sim(ping_interval_s=0.05)
    visitor = guest(MANUAL_DEPLOYMENT, sim)
    await visitor.get_token()
    reader = await visitor.stream()
    first = await reader.next(1.0, pings=True)
    second = await reader.next(1.0, pings=True)
    assert first is not None and second is not None
    assert (first.event, first.data, first.id) == ("ping", "0", None)
    assert second.event == "ping"
    await asyncio.sleep(0.05)
    assert sim.streams[-1].pings >= 2
    reader.close()


async def test_the_visitors_messages_and_typing_come_back_as_end_user(
    guest: Any, sim: Simulator
) -> None:
    visitor = guest(MANUAL_DEPLOYMENT)
    reader = await visitor.start()
    assert reader is not None and visitor.token is not None
    await reader.until("CONVERSATION_ROUTING_RESULT")
    mid = new_id()
    await visitor.send("hello", mid)
    await visitor.typing()
    await visitor.typing(started=False)
    echo, started, stopped = await reader.take(3)
    assert echo.event == "CONVERSATION_MESSAGE"
    assert echo.entry["identifier"] == mid and echo.payload["id"] == mid
    assert echo.entry["sender"]["role"] == "EndUser"
    subject = json.loads(__import__("base64").urlsafe_b64decode(
        visitor.token.split(".")[1] + "==").decode())["sub"]
    assert echo.entry["sender"]["subject"] == subject
    assert echo.entry["senderDisplayName"] == "Guest"
    assert started.event == "CONVERSATION_TYPING_STARTED_INDICATOR"
    assert stopped.event == "CONVERSATION_TYPING_STOPPED_INDICATOR"
    assert started.entry["sender"]["role"] == stopped.entry["sender"]["role"] == "EndUser"


# ------------------------------------------------------------------------------------------
# Replay


async def test_create_before_the_stream_still_gets_everything(guest: Any) -> None:
    visitor = guest()  # the sample app's order: token, create, then the stream
    await visitor.start(stream=False)
    await asyncio.sleep(0.1)
    reader = await visitor.stream()
    events = await reader.until("CONVERSATION_SESSION_STATUS_CHANGED")
    assert [e.event for e in events] == ["CONVERSATION_ROUTING_RESULT",
                                         "CONVERSATION_PARTICIPANT_CHANGED",
                                         "CONVERSATION_SESSION_STATUS_CHANGED"]


async def test_a_reconnect_replays_after_the_last_id_without_duplicates(
    guest: Any, sim: Simulator
) -> None:
    visitor = guest(MANUAL_DEPLOYMENT)
    reader = await visitor.start()
    assert reader is not None
    await reader.until("CONVERSATION_ROUTING_RESULT")
    sim.agent_joins(visitor.conversation_id)
    await reader.take(2)
    last = reader.events[-1].id
    assert last is not None
    reader.close()
    await asyncio.sleep(0.05)
    sim.agent_says(visitor.conversation_id, "while you were away")
    sim.agent_says(visitor.conversation_id, "and this")
    again = await visitor.stream(**{"Last-Event-Id": last})
    missed = await again.take(2)
    assert [e.payload["abstractMessage"]["staticContent"]["text"] for e in missed] == [
        "while you were away", "and this"]
    record = sim.streams[-1]
    assert record.replayed == [e.id for e in missed]
    assert record.last_event_id == last
    sim.agent_says(visitor.conversation_id, "live")
    assert (await again.next()) is not None
    delivered = [i for r in sim.streams for i in r.delivered]
    assert len(delivered) == len(set(delivered))


async def test_replay_depth_bounds_what_comes_back(make_sim: Any,
                                                   guest: Any) -> None:
    sim = await make_sim(replay_depth=2)
    visitor = guest(MANUAL_DEPLOYMENT, sim)
    await visitor.start(stream=False)
    await asyncio.sleep(0.05)
    assert visitor.conversation_id is not None
    sim.agent_joins(visitor.conversation_id)  # routing result, add, status Active: 3 events
    reader = await visitor.stream()
    got = await reader.take(2)
    assert [e.event for e in got] == ["CONVERSATION_PARTICIPANT_CHANGED",
                                      "CONVERSATION_SESSION_STATUS_CHANGED"]
    assert await reader.quiet(0.1) == []
    reader.close()


async def test_replay_depth_zero_replays_nothing(make_sim: Any,
                                                 guest: Any) -> None:
    sim = await make_sim(replay_depth=0)
    visitor = guest(simulator=sim)
    await visitor.start(stream=False)
    await asyncio.sleep(0.1)
    reader = await visitor.stream()
    assert await reader.quiet(0.15) == []
    assert sim.streams[-1].replayed == []
    reader.close()


# ------------------------------------------------------------------------------------------
# Concurrent streams


async def test_a_second_stream_of_a_token_is_refused(guest: Any, sim: Simulator) -> None:
    visitor = guest()
    await visitor.get_token()
    first = await visitor.stream()
    second = await visitor.open_stream()
    assert not isinstance(second, EventReader)
    assert second.status == 409 and second.json()["errorCode"] == "CONFLICT"
    # Once the first client is gone, a new stream is fine (no false refusal).
    first.close()
    await asyncio.sleep(0.05)
    third = await visitor.stream()
    assert sim.streams[-1].concurrent == 0
    third.close()


async def test_a_continuation_token_may_stream_beside_the_first(guest: Any,
                                                                sim: Simulator) -> None:
    visitor = guest(MANUAL_DEPLOYMENT)
    reader = await visitor.start()
    assert reader is not None
    await reader.until("CONVERSATION_ROUTING_RESULT")
    resp = await visitor.request("GET", "/iamessage/api/v2/authorization/"
                                        "continuation-access-token")
    other = guest()
    other.token, other.last_event_id = resp.json()["accessToken"], reader.events[-1].id
    second = await other.stream()
    assert visitor.conversation_id is not None
    sim.agent_joins(visitor.conversation_id)
    one, two = await reader.next(), await second.next()
    assert one is not None and two is not None and one.id == two.id
    second.close()


@pytest.mark.parametrize(("policy", "first_open"), [("replace", False), ("allow", True)])
async def test_second_stream_policies(make_sim: Any, guest: Any,
                                      policy: str, first_open: bool) -> None:
    sim = await make_sim(second_stream=policy)
    visitor = guest(MANUAL_DEPLOYMENT, sim)
    await visitor.get_token()
    first = await visitor.stream()
    second = await visitor.stream()
    assert sim.streams[-1].concurrent == 1
    await visitor.create()
    got = await second.next()
    assert got is not None and got.event == "CONVERSATION_ROUTING_RESULT"
    if first_open:
        assert (await first.next()) is not None
    else:
        assert await first.ends() == []
        assert sim.streams[0].close_reason == "replaced"
    first.close()
    second.close()


# ------------------------------------------------------------------------------------------
# Lifetime


async def test_the_stream_ends_after_the_visitor_closed(guest: Any, sim: Simulator) -> None:
    visitor = guest()
    reader = await visitor.start()
    assert reader is not None
    await reader.until("CONVERSATION_PARTICIPANT_CHANGED")
    assert (await visitor.close()).status == 204
    rest = await reader.ends()
    assert [e.event for e in rest][-2:] == ["CONVERSATION_SESSION_STATUS_CHANGED",
                                            "CONVERSATION_CLOSE_CONVERSATION"]
    close = rest[-1]
    assert close.id is not None
    assert close.json()["conversationId"] == visitor.conversation_id
    assert "conversationEntry" not in close.json()
    assert rest[-2].payload["sessionEndedByRole"] == "EndUser"
    assert sim.streams[-1].close_reason == "conversation_closed"


async def test_close_stream_and_session_status_can_be_switched_off(
    make_sim: Any, guest: Any
) -> None:
    sim = await make_sim(close_stream_on_close=False, session_status_on_close=False)
    visitor = guest(simulator=sim)
    reader = await visitor.start()
    assert reader is not None
    await reader.until("CONVERSATION_PARTICIPANT_CHANGED")
    await visitor.close()
    events = await reader.until("CONVERSATION_CLOSE_CONVERSATION")
    assert "CONVERSATION_SESSION_STATUS_CHANGED" not in [e.event for e in events[1:]]
    assert await reader.quiet(0.1) == [] and not reader.ended
    reader.close()


async def test_the_stream_stays_while_another_conversation_is_open(guest: Any,
                                                                   sim: Simulator) -> None:
    visitor = guest(MANUAL_DEPLOYMENT)
    reader = await visitor.start()
    assert reader is not None
    first = visitor.conversation_id
    await visitor.create()
    await visitor.request("DELETE", f"/iamessage/api/v2/conversation/{first}",
                          params={"esDeveloperName": MANUAL_DEPLOYMENT})
    await reader.until("CONVERSATION_CLOSE_CONVERSATION")
    assert await reader.quiet(0.1) is not None and not reader.ended


async def test_the_stream_ends_when_the_token_expires(make_sim: Any,
                                                      guest: Any) -> None:
    sim = await make_sim(token_lifetime_s=0.3)
    visitor = guest(simulator=sim)
    await visitor.get_token()
    reader = await visitor.stream()
    await reader.ends(timeout=2)
    assert sim.streams[-1].close_reason == "token_expired"
    resp = await visitor.open_stream()
    assert not isinstance(resp, EventReader) and resp.status == 401


async def test_a_stream_that_falls_behind_is_cut(make_sim: Any,
                                                 guest: Any) -> None:
    sim = await make_sim(stream_pending_max=5)
    visitor = guest(MANUAL_DEPLOYMENT, sim)
    await visitor.start(stream=False)
    reader = await visitor.stream()
    await asyncio.sleep(0.05)
    assert visitor.conversation_id is not None
    sim.agent_joins(visitor.conversation_id)
    for _ in range(20):  # in one loop step: the writer cannot keep up
        sim.agent_says(visitor.conversation_id, "flood")
    with pytest.raises(aiohttp.ClientError):
        await reader.ends()
    assert sim.streams[-1].close_reason == "too_slow"
    assert ECHO_DEPLOYMENT  # the module's import is used
