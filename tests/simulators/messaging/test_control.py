"""The control API under /_sim/ (HTTP) and its Python twin: the agent by hand, faults."""

from __future__ import annotations

import time
from typing import Any
from unittest import mock

import pytest
from aiohttp.test_utils import make_mocked_request

from bridged.simulators.messaging import (
    MANUAL_DEPLOYMENT,
    SessionOver,
    Simulator,
    UnknownConversation,
)
from bridged.simulators.messaging.control import _is_loopback
from tests.simulators.messaging.helpers import Guest, new_id


async def control(visitor: Guest, path: str, body: Any = None, method: str = "POST") -> Any:
    resp = await visitor.request(method, "/_sim/" + path, headers={}, json=body)
    return resp


async def started(guest: Any) -> tuple[Guest, Any]:
    visitor = guest(MANUAL_DEPLOYMENT)
    reader = await visitor.start()
    await reader.until("CONVERSATION_ROUTING_RESULT")
    return visitor, reader


async def test_the_agent_over_http(guest: Any, sim: Simulator) -> None:
    visitor, reader = await started(guest)
    cid = visitor.conversation_id
    mid = new_id()
    await visitor.send("hello", mid)
    await reader.next()
    steps: list[tuple[str, Any, int]] = [
        ("join", {"name": "Hal", "subject": "005000000000HAL"}, 2),
        ("typing", {}, 1),
        ("say", {"text": "Hi, Hal here"}, 1),
        ("typing", {"active": False}, 1),
        ("ack", {"messageId": mid, "read": True}, 1),
        ("queue", {"position": 1, "waitSeconds": 10}, 1),
        ("route", {"routingType": "Transfer"}, 1),
        ("push", {"event": "CONVERSATION_PROGRESS_INDICATOR", "entry": {"x": 1}}, 1),
        ("transfer", {"name": "Bea"}, 3),
        ("leave", None, 1),
        ("join", None, 1),
        ("end", None, 2),
    ]
    expected: list[str] = []
    for action, body, count in steps:
        resp = await control(visitor, f"conversations/{cid}/{action}", body)
        assert resp.status == 200, (action, resp)
        ids = resp.json()["event_ids"]
        assert len(ids) == count, action
        expected += ids
    events = await reader.take(len(expected))
    assert [e.id for e in events] == expected
    assert events[0].payload["entries"][0]["displayName"] == "Hal"
    assert events[0].payload["entries"][0]["participant"]["subject"] == "005000000000HAL"
    assert events[3].payload["abstractMessage"]["staticContent"]["text"] == "Hi, Hal here"
    assert events[3].entry["senderDisplayName"] == "Hal"
    assert events[5].event == "CONVERSATION_READ_ACKNOWLEDGEMENT"
    assert events[8].event == "CONVERSATION_PROGRESS_INDICATOR"
    assert events[8].json()["conversationEntry"] == {"x": 1}
    assert events[11].payload["entries"][0]["displayName"] == "Bea"
    assert events[-1].payload["sessionStatus"] == "Ended"
    assert await visitor.routing_status() == "NEEDS_ROUTING"


async def test_control_errors(guest: Any, sim: Simulator) -> None:
    visitor, _ = await started(guest)
    cid = visitor.conversation_id
    unknown = new_id()
    assert (await control(visitor, f"conversations/{unknown}/say", {"text": "x"})).status == 404
    assert (await control(visitor, f"conversations/{unknown}/fail-next",
                          {"resource": "SendMessage", "status": 500})).status == 404
    assert (await control(visitor, f"conversations/{cid}/dance", {})).status == 404
    assert (await control(visitor, "dance", {})).status == 404
    resp = await control(visitor, f"conversations/{cid}/say", {"text": "nobody here"})
    assert resp.status == 409 and "no agent" in resp.json()["error"]
    assert (await control(visitor, f"conversations/{cid}/say", {"txt": "x"})).status == 400
    assert (await control(visitor, "fail-next", {"resource": "Nope", "status": 500})).status \
        == 400
    await control(visitor, f"conversations/{cid}/join")
    assert (await control(visitor, f"conversations/{cid}/join")).status == 409
    await visitor.close()
    assert (await control(visitor, f"conversations/{cid}/join")).status == 409


async def test_faults_over_http(guest: Any, sim: Simulator) -> None:
    visitor, reader = await started(guest)
    cid = visitor.conversation_id
    bodies = [
        ("fail-next", {"resource": "SendMessage", "status": 503, "count": 1}),
        (f"conversations/{cid}/delay-next", {"resource": "Typing", "seconds": 0.01}),
        ("reset-next", {"resource": "ListConversations", "when": "after"}),
        ("drop-next-stream", {"afterEvents": 1}),
    ]
    for path, body in bodies:
        assert (await control(visitor, path, body)).status == 200, path
    pending = (await control(visitor, "faults", method="GET")).json()["pending"]
    assert [p["fault"] for p in pending] == ["fail_503", "delay_after", "reset_after",
                                             "drop_after_1"]
    assert (await visitor.send("x")).status == 503
    assert (await control(visitor, "clear-faults", {})).json() == {"ok": True}
    assert (await control(visitor, "faults", method="GET")).json()["pending"] == []
    assert (await control(visitor, "replay", {"enabled": False})).status == 200
    assert sim.hub.replay_enabled is False
    resp = await control(visitor, "drop-streams", {"abort": False})
    assert resp.json() == {"dropped": 1}
    await reader.ends()
    resp = await control(visitor, "expire-tokens", {})
    assert resp.json() == {"expired": 1}
    assert (await visitor.send("x")).status == 401


async def test_reading_over_http(guest: Any, sim: Simulator) -> None:
    visitor, _ = await started(guest)
    cid = visitor.conversation_id
    await visitor.send("hello")
    summaries = (await control(visitor, "conversations", method="GET")).json()
    assert summaries["conversations"][0]["id"] == cid
    assert summaries["conversations"][0]["script"] == "manual"
    one = (await control(visitor, f"conversations/{cid}", method="GET")).json()
    assert one["visitor_messages"] == 1 and one["entries"][-1]["entryType"] == "Message"
    assert (await control(visitor, f"conversations/{new_id()}", method="GET")).status == 404
    sent = (await control(visitor, f"requests?resource=SendMessage&conversation={cid}",
                          method="GET")).json()["requests"]
    assert len(sent) == 1 and sent[0]["status"] == 202
    streams = (await control(visitor, "streams", method="GET")).json()["streams"]
    assert streams[0]["close_reason"] is None and streams[0]["delivered"]
    record = (await control(visitor, "record", method="GET")).json()
    assert set(record) == {"options", "conversations", "requests", "streams", "faults"}
    assert record["options"]["org_id"] == "00D000000000001"


def test_the_control_api_answers_loopback_only() -> None:
    for peer, expected in ((("127.0.0.1", 5000), True), (("::1", 5000, 0, 0), True),
                           (("10.0.0.7", 5000), False)):
        transport = mock.Mock()
        transport.get_extra_info.side_effect = lambda name, default=None, p=peer: (
            p if name == "peername" else default)
        request = make_mocked_request("GET", "/_sim/record", transport=transport)
        assert _is_loopback(request) is expected


async def test_python_control_errors(guest: Any, sim: Simulator) -> None:
    with pytest.raises(UnknownConversation):
        sim.agent_joins(new_id())
    visitor, _ = await started(guest)
    cid = visitor.conversation_id
    with pytest.raises(SessionOver):
        sim.agent_says(cid, "nobody")
    with pytest.raises(SessionOver):
        sim.agent_leaves(cid)
    sim.agent_joins(cid)
    sim.agent_ends(cid)
    with pytest.raises(SessionOver, match="session"):
        sim.agent_joins(cid)


async def test_watchers_are_told_of_every_event_and_of_the_forgetting(
        guest: Any, sim: Simulator) -> None:
    seen: list[tuple[str, str | None]] = []
    sim.watchers.append(lambda cid, entry: seen.append(
        (cid, None if entry is None else entry.entry_type)))
    visitor, reader = await started(guest)
    cid = visitor.conversation_id
    assert cid is not None
    await visitor.typing()
    await visitor.send("hello")
    sim.agent_joins(cid, "Hal")
    sim.push_event(cid, "CONVERSATION_PROGRESS_INDICATOR", {"x": 1})
    await visitor.close()
    # Created, then each event right after it went out, in the stream's order.
    events = await reader.ends()
    assert [cid for cid, _ in seen] == [cid] * len(seen)
    assert [kind for _, kind in seen] == [
        None, "RoutingResult", "TypingStartedIndicator", "Message", "ParticipantChanged",
        "SessionStatusChanged", None, "SessionStatusChanged", None]
    assert len(seen) == 2 + len(events)  # created; the RoutingResult was read by started()
    seen.clear()
    sim.reap(time.time() + sim.options.closed_retention_s + 1)
    assert cid not in sim.conversations
    assert seen == [(cid, None)]  # forgotten, once
    sim.reap(time.time() + sim.options.closed_retention_s + 2)
    assert seen == [(cid, None)]
