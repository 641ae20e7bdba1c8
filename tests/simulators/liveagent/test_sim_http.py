"""The simulator's strictness rules over loopback HTTP (aiohttp's test server)."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from bridged.simulators.liveagent import ECHO_BUTTON, MANUAL_BUTTON
from bridged.simulators.liveagent.wire import DUPLICATE_POLL_TEXT
from tests.simulators.liveagent.sim_helpers import (
    DEPLOYMENT,
    ORG,
    Visitor,
    init_body,
    types,
    wait_until,
)

# ------------------------------------------------------------------------------------------
# SessionId


async def test_session_id_answers_the_documented_shape(make_sim: Any) -> None:
    sim, client = await make_sim()
    visitor = Visitor(client)
    payload = await visitor.start()
    assert set(payload) == {"id", "key", "affinityToken", "clientPollTimeout"}
    assert payload["clientPollTimeout"] == 3 and isinstance(payload["clientPollTimeout"], int)
    assert payload["key"].startswith(payload["id"] + "!")
    assert payload["id"] in sim.sessions


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({"X-LIVEAGENT-AFFINITY": "null"}, "Missing header X-LIVEAGENT-API-VERSION"),
        ({"X-LIVEAGENT-API-VERSION": "49"}, "Missing header X-LIVEAGENT-AFFINITY"),
        (
            {"X-LIVEAGENT-API-VERSION": "49", "X-LIVEAGENT-AFFINITY": ""},
            "Invalid header X-LIVEAGENT-AFFINITY: '' (expected null)",
        ),
        (
            {"X-LIVEAGENT-API-VERSION": "49", "X-LIVEAGENT-AFFINITY": "2c931fa0"},
            "Invalid header X-LIVEAGENT-AFFINITY: '2c931fa0' (expected null)",
        ),
        (
            {"X-LIVEAGENT-API-VERSION": "70", "X-LIVEAGENT-AFFINITY": "null"},
            "Invalid header X-LIVEAGENT-API-VERSION: '70' (expected an integer from 29 to 67)",
        ),
    ],
)
async def test_session_id_header_errors_are_400(
    make_sim: Any, headers: dict[str, str], expected: str
) -> None:
    sim, client = await make_sim()
    resp = await Visitor(client).request("GET", "System/SessionId", headers=headers)
    assert (resp.status, resp.text) == (400, expected)
    assert sim.sessions == {}
    assert sim.unattributed_requests[-1].status == 400


# ------------------------------------------------------------------------------------------
# Session headers


async def test_session_header_errors(make_sim: Any) -> None:
    sim, client = await make_sim()
    visitor = Visitor(client)
    await visitor.start()
    assert (await visitor.init()).status == 200

    async def poll_with(**replace: str | None) -> tuple[int, str]:
        headers = visitor.headers()
        for name, value in replace.items():
            header = "X-LIVEAGENT-" + name.replace("_", "-").upper()
            if value is None:
                headers.pop(header)
            else:
                headers[header] = value
        resp = await visitor.request(
            "GET", "System/Messages", headers=headers, params={"ack": "-1"}
        )
        return resp.status, resp.text

    assert await poll_with(api_version=None) == (400, "Missing header X-LIVEAGENT-API-VERSION")
    assert await poll_with(affinity=None) == (400, "Missing header X-LIVEAGENT-AFFINITY")
    assert await poll_with(affinity="garbage") == (
        400,
        "Invalid header X-LIVEAGENT-AFFINITY: 'garbage'",
    )
    assert await poll_with(affinity="null") == (
        400,
        "Invalid header X-LIVEAGENT-AFFINITY: 'null'",
    )
    assert await poll_with(affinity="0badf00d") == (
        400,
        "Invalid header X-LIVEAGENT-AFFINITY: '0badf00d' is not this session's token",
    )
    assert await poll_with(session_key=None) == (400, "Missing header X-LIVEAGENT-SESSION-KEY")
    assert await poll_with(session_key=visitor.id + "!nope") == (
        403,
        "Session not valid: unknown, ended or expired session key",
    )
    # None of these was a poll: the session is still fine.
    assert not sim.sessions[visitor.id].is_over
    assert sim.sessions[visitor.id].polls == 0


async def test_post_body_must_be_json(make_sim: Any) -> None:
    _, client = await make_sim()
    visitor = Visitor(client)
    await visitor.start()
    resp = await visitor.request(
        "POST",
        "Chasitor/ChasitorInit",
        headers=visitor.headers(seq=1, **{"Content-Type": "text/plain"}),
        data=b'{"organizationId": "x"}',
    )
    assert (resp.status, resp.text) == (
        400,
        "Invalid header Content-Type: 'text/plain' (expected application/json)",
    )
    resp = await visitor.request(
        "POST",
        "Chasitor/ChasitorInit",
        headers=visitor.headers(seq=1, **{"Content-Type": "application/json"}),
        data=b"{not json",
    )
    assert resp.status == 400
    assert resp.text.startswith("Invalid ChasitorInit body: malformed JSON")
    # Neither used sequence 1 up.
    assert (await visitor.init()).status == 200


async def test_unknown_chasitor_resource_is_404(make_sim: Any) -> None:
    _, client = await make_sim()
    visitor = Visitor(client)
    await visitor.start()
    resp = await visitor.post("ChasitorMood", {}, seq=1)
    assert resp.status == 404


async def test_init_errors_name_the_field(make_sim: Any) -> None:
    sim, client = await make_sim()
    visitor = Visitor(client)
    await visitor.start()
    resp = await visitor.init(screenResolution=None)
    assert (resp.status, resp.text) == (
        400,
        "Invalid ChasitorInit body: Object missing required field `screenResolution`",
    )
    assert (await visitor.init()).status == 200
    assert sim.sessions[visitor.id].init == init_body(visitor.id)


# ------------------------------------------------------------------------------------------
# Sequence


async def test_out_of_sync_sequence_is_409_with_the_exact_body(make_sim: Any) -> None:
    _, client = await make_sim()
    visitor = Visitor(client)
    await visitor.join()
    resp = await visitor.post("ChatMessage", {"text": "hi"}, seq=5)
    assert (resp.status, resp.text) == (409, "Out of sync Ack. Expected 5. Actual 1")


async def test_duplicate_sequence_is_dropped(make_sim: Any) -> None:
    sim, client = await make_sim(join_delay_s=0, reply_delay_s=10)
    visitor = Visitor(client)
    await visitor.join(MANUAL_BUTTON)
    assert (await visitor.post("ChatMessage", {"text": "once"})).status == 200
    resp = await visitor.post("ChatMessage", {"text": "once"}, seq=visitor.seq)
    assert (resp.status, resp.text) == (200, "")
    assert sim.sessions[visitor.id].visitor_messages == ["once"]


async def test_missing_sequence_is_400_unless_lenient(make_sim: Any) -> None:
    for strict in (True, False):
        _, client = await make_sim(require_sequence=strict)
        visitor = Visitor(client)
        await visitor.join(MANUAL_BUTTON)
        headers = visitor.headers()
        resp = await visitor.request(
            "POST", "Chasitor/ChatMessage", headers=headers, json={"text": "x"}
        )
        if strict:
            assert (resp.status, resp.text) == (400, "Missing header X-LIVEAGENT-SEQUENCE")
        else:
            assert resp.status == 200


async def test_chat_message_before_join_is_500_without_using_the_sequence(make_sim: Any) -> None:
    sim, client = await make_sim(join_delay_s=0.3)
    visitor = Visitor(client)
    await visitor.start()
    assert (await visitor.init()).status == 200
    resp = await visitor.post("ChatMessage", {"text": "early"})
    assert resp.status == 500
    assert visitor.seq == 1
    await visitor.poll_until("ChatEstablished")
    resp = await visitor.post("ChatMessage", {"text": "now"}, seq=2)
    assert resp.status == 200
    assert sim.sessions[visitor.id].visitor_messages == ["now"]


# ------------------------------------------------------------------------------------------
# Messages


async def test_idle_poll_is_held_then_204(make_sim: Any) -> None:
    _, client = await make_sim(hold_s=0.2)
    visitor = Visitor(client)
    await visitor.join(MANUAL_BUTTON)
    started = time.monotonic()
    resp = await visitor.poll()
    elapsed = time.monotonic() - started
    assert (resp.status, resp.text) == (204, "")
    assert 0.15 <= elapsed < 1.5


async def test_held_poll_is_answered_as_soon_as_something_is_queued(make_sim: Any) -> None:
    sim, client = await make_sim(hold_s=5, client_poll_timeout=10)
    visitor = Visitor(client)
    await visitor.join(MANUAL_BUTTON)
    poll = asyncio.create_task(visitor.poll())
    await wait_until(lambda: sim.sessions[visitor.id].poll_held)
    sim.agent_says(visitor.id, "hello")
    async with asyncio.timeout(1):
        resp = await poll
    assert resp.status == 200
    assert resp.json()["messages"][0]["message"]["text"] == "hello"


async def test_second_poll_is_409_for_both_and_ends_the_session(make_sim: Any) -> None:
    sim, client = await make_sim(hold_s=5, client_poll_timeout=10)
    visitor = Visitor(client)
    await visitor.join(MANUAL_BUTTON)
    first = asyncio.create_task(visitor.poll())
    await wait_until(lambda: sim.sessions[visitor.id].poll_held)
    second = await visitor.poll()
    assert (second.status, second.text) == (409, DUPLICATE_POLL_TEXT)
    async with asyncio.timeout(1):
        held = await first
    assert (held.status, held.text) == (409, DUPLICATE_POLL_TEXT)
    session = sim.sessions[visitor.id]
    assert session.end_reason == "duplicate_poll"
    assert (await visitor.poll()).status == 403
    assert (await visitor.post("ChatMessage", {"text": "x"})).status == 403


async def test_stale_ack_redelivers(make_sim: Any) -> None:
    sim, client = await make_sim()
    visitor = Visitor(client)
    await visitor.join(MANUAL_BUTTON)
    before = visitor.ack
    sim.agent_says(visitor.id, "one")
    first = await visitor.poll()
    # Pretend that answer was lost: poll again with the older ack.
    again = await visitor.poll(ack=before)
    assert again.status == 200 and again.json() == first.json()


async def test_ack_never_given_is_409(make_sim: Any) -> None:
    sim, client = await make_sim()
    visitor = Visitor(client)
    await visitor.join(MANUAL_BUTTON)
    # The server has handed out visitor.ack but has not yet seen it acknowledged.
    acked = sim.sessions[visitor.id].acked
    resp = await visitor.poll(ack=visitor.ack + 40)
    assert resp.status == 409
    assert resp.text == (
        f"Invalid ack {visitor.ack + 40}. Last sequence sent {visitor.ack}, "
        f"last acknowledged {acked}"
    )
    assert (await visitor.poll()).status == 204


async def test_missing_ack_is_400_unless_lenient(make_sim: Any) -> None:
    for strict in (True, False):
        _, client = await make_sim(require_ack=strict)
        visitor = Visitor(client)
        await visitor.start()
        await visitor.init(MANUAL_BUTTON)
        resp = await visitor.request("GET", "System/Messages", headers=visitor.headers())
        if strict:
            assert (resp.status, resp.text) == (400, "Missing query parameter ack")
        else:
            assert resp.status == 200
            assert types(resp.json()["messages"])[0] == "ChatRequestSuccess"


# ------------------------------------------------------------------------------------------
# After the end


async def test_403_after_chat_end(make_sim: Any) -> None:
    sim, client = await make_sim()
    visitor = Visitor(client)
    await visitor.join()
    assert (await visitor.post("ChatEnd", {"reason": "client"})).status == 200
    assert (await visitor.poll()).status == 403
    assert (await visitor.post("ChatMessage", {"text": "x"})).status == 403
    session = sim.sessions[visitor.id]
    assert session.end_reason == "client"
    assert [r.status for r in session.requests][-2:] == [403, 403]


async def test_chat_end_answers_the_held_poll_with_403(make_sim: Any) -> None:
    sim, client = await make_sim(hold_s=5, client_poll_timeout=10)
    visitor = Visitor(client)
    await visitor.join(MANUAL_BUTTON)
    poll = asyncio.create_task(visitor.poll())
    await wait_until(lambda: sim.sessions[visitor.id].poll_held)
    assert (await visitor.post("ChatEnd", {"reason": "client"})).status == 200
    async with asyncio.timeout(1):
        assert (await poll).status == 403


async def test_403_after_delete(make_sim: Any) -> None:
    sim, client = await make_sim()
    visitor = Visitor(client)
    await visitor.join()
    resp = await visitor.request(
        "DELETE", f"System/SessionId/{visitor.key}", headers=visitor.headers()
    )
    assert resp.status == 200
    assert sim.sessions[visitor.id].end_reason == "deleted"
    assert (await visitor.poll()).status == 403
    resp = await visitor.request(
        "DELETE", f"System/SessionId/{visitor.key}", headers=visitor.headers()
    )
    assert resp.status == 403


async def test_delete_checks_its_headers(make_sim: Any) -> None:
    _, client = await make_sim()
    visitor = Visitor(client)
    await visitor.start()
    resp = await visitor.request(
        "DELETE",
        f"System/SessionId/{visitor.key}",
        headers={"X-LIVEAGENT-API-VERSION": "49", "X-LIVEAGENT-AFFINITY": "null"},
    )
    assert resp.status == 400
    resp = await visitor.request(
        "DELETE",
        f"System/SessionId/{visitor.id}!other",
        headers={"X-LIVEAGENT-API-VERSION": "49", "X-LIVEAGENT-AFFINITY": visitor.affinity},
    )
    assert resp.status == 403
    # Without the (optional) key header: the key in the path is enough.
    resp = await visitor.request(
        "DELETE",
        f"System/SessionId/{visitor.key}",
        headers={"X-LIVEAGENT-API-VERSION": "49", "X-LIVEAGENT-AFFINITY": visitor.affinity},
    )
    assert resp.status == 200


async def test_poll_timeout_ends_the_session(make_sim: Any) -> None:
    sim, client = await make_sim(hold_s=0.1, client_poll_timeout=0.3, reap_interval_s=0.05)
    visitor = Visitor(client)
    await visitor.join(MANUAL_BUTTON)
    await wait_until(lambda: sim.sessions[visitor.id].is_over, timeout=2)
    assert sim.sessions[visitor.id].end_reason == "timeout"
    assert (await visitor.poll()).status == 403


async def test_a_session_that_is_polled_does_not_time_out(make_sim: Any) -> None:
    sim, client = await make_sim(hold_s=0.1, client_poll_timeout=0.3, reap_interval_s=0.05)
    visitor = Visitor(client)
    await visitor.join(MANUAL_BUTTON)
    for _ in range(8):
        assert (await visitor.poll()).status == 204
    assert not sim.sessions[visitor.id].is_over


async def test_reaper_forgets_ended_sessions_after_retention(make_sim: Any) -> None:
    sim, client = await make_sim(ended_retention_s=0.1, reap_interval_s=0.05)
    visitor = Visitor(client)
    await visitor.join()
    await visitor.post("ChatEnd", {"reason": "client"})
    await wait_until(lambda: visitor.id not in sim.sessions)
    assert (await visitor.poll()).status == 403


# ------------------------------------------------------------------------------------------
# Server switch over HTTP


async def test_server_switch_over_http(make_sim: Any) -> None:
    sim, client = await make_sim(hold_s=5, client_poll_timeout=10)
    visitor = Visitor(client)
    await visitor.join(MANUAL_BUTTON)
    offset = (await _last_offset(visitor, sim))
    old = visitor.affinity
    resp = await visitor.request(
        "GET",
        "System/ReconnectSession",
        headers=visitor.headers(),
        params={"ReconnectSession.offset": str(offset)},
    )
    assert resp.status == 405

    poll = asyncio.create_task(visitor.poll())
    await wait_until(lambda: sim.sessions[visitor.id].poll_held)
    new = sim.switch_server(visitor.id)
    async with asyncio.timeout(1):
        assert (await poll).status == 503
    assert (await visitor.post("ChatMessage", {"text": "x"})).status == 503

    resp = await visitor.request(
        "GET",
        "System/ReconnectSession",
        headers=visitor.headers(**{"X-LIVEAGENT-AFFINITY": "null"}),
        params={"ReconnectSession.offset": str(offset)},
    )
    assert resp.status == 200
    assert resp.json()["messages"][0]["message"] == {"resetSequence": True, "affinityToken": new}
    visitor.affinity, visitor.seq = new, 0
    reply = await visitor.poll()
    assert types(reply.json()["messages"]) == ["ChasitorSessionData"]
    resync = await visitor.request(
        "POST",
        "Chasitor/ChasitorResyncState",
        headers=visitor.headers(),
        json={"organizationId": ORG},
    )
    assert resync.status == 200
    assert (await visitor.post("ChatMessage", {"text": "back"})).status == 200
    assert visitor.seq == 1
    # The old token stays refused.
    resp = await visitor.poll(**{"X-LIVEAGENT-AFFINITY": old})
    assert resp.status == 503


async def _last_offset(visitor: Visitor, sim: Any) -> int:
    sim.agent_says(visitor.id, "for the offset")
    resp = await visitor.poll()
    assert resp.status == 200
    return int(resp.json()["offset"])


async def test_reconnect_needs_api_version_37(make_sim: Any) -> None:
    sim, client = await make_sim()
    visitor = Visitor(client, version="36")
    await visitor.join(MANUAL_BUTTON)
    sim.switch_server(visitor.id)
    resp = await visitor.request(
        "GET",
        "System/ReconnectSession",
        headers=visitor.headers(),
        params={"ReconnectSession.offset": "1"},
    )
    assert (resp.status, resp.text) == (
        400,
        "Invalid header X-LIVEAGENT-API-VERSION: this resource needs 37 or later",
    )


# ------------------------------------------------------------------------------------------
# Availability


@pytest.mark.parametrize(
    "ids", [f"[{ECHO_BUTTON},573NOAGENT00000]", f"{ECHO_BUTTON},573NOAGENT00000"]
)
async def test_availability_accepts_both_id_list_forms(make_sim: Any, ids: str) -> None:
    _, client = await make_sim()
    visitor = Visitor(client, version="49")
    resp = await visitor.request(
        "GET",
        "Visitor/Availability",
        headers={"X-LIVEAGENT-API-VERSION": "49"},
        params={
            "org_id": ORG,
            "deployment_id": DEPLOYMENT,
            "Availability.ids": ids,
            "Availability.needEstimatedWaitTime": "1",
        },
    )
    assert resp.status == 200
    assert resp.json() == {
        "messages": [
            {
                "type": "Availability",
                "message": {
                    "results": [
                        {"id": ECHO_BUTTON, "isAvailable": True, "estimatedWaitTime": 30},
                        {"id": "573NOAGENT00000", "estimatedWaitTime": -1},
                    ]
                },
            }
        ]
    }


async def test_availability_wait_time_needs_version_47(make_sim: Any) -> None:
    _, client = await make_sim()
    resp = await Visitor(client).request(
        "GET",
        "Visitor/Availability",
        headers={"X-LIVEAGENT-API-VERSION": "46"},
        params={
            "org_id": ORG,
            "deployment_id": DEPLOYMENT,
            "Availability.ids": ECHO_BUTTON,
            "Availability.needEstimatedWaitTime": "1",
        },
    )
    assert resp.json()["messages"][0]["message"]["results"] == [
        {"id": ECHO_BUTTON, "isAvailable": True}
    ]


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ({"deployment_id": DEPLOYMENT, "Availability.ids": "x"}, "Missing query parameter org_id"),
        (
            {"org_id": "nope", "deployment_id": DEPLOYMENT, "Availability.ids": "x"},
            "Invalid query parameter org_id: 'nope'",
        ),
        (
            {"org_id": ORG, "deployment_id": DEPLOYMENT, "Availability.ids": "[a,,b]"},
            "Invalid query parameter Availability.ids: '[a,,b]' (expected [id1,id2] or id1,id2)",
        ),
    ],
)
async def test_availability_errors(make_sim: Any, params: dict[str, str], expected: str) -> None:
    _, client = await make_sim()
    resp = await Visitor(client).request(
        "GET", "Visitor/Availability", headers={"X-LIVEAGENT-API-VERSION": "49"}, params=params
    )
    assert (resp.status, resp.text) == (400, expected)
