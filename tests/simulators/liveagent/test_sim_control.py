"""The control and record API (Python and HTTP), the runners, shutdown and scale."""

from __future__ import annotations

import asyncio
import json
import socket
import time
from typing import Any

import aiohttp
import pytest

from bridged.simulators.liveagent import (
    ECHO_BUTTON,
    MANUAL_BUTTON,
    OutboxFull,
    SessionOver,
    Simulator,
    UnknownSession,
    running_simulator,
    serve_forever,
)
from tests.simulators.liveagent.sim_helpers import ORG, Visitor, fast_options, types, wait_until

# ------------------------------------------------------------------------------------------
# Python control API


async def test_agent_actions_queue_the_documented_messages(make_sim: Any) -> None:
    sim, client = await make_sim()
    visitor = Visitor(client)
    await visitor.join(MANUAL_BUTTON)
    sid = visitor.id
    numbers = [
        sim.agent_typing(sid),
        sim.agent_says(sid, "Hi there"),
        sim.agent_typing(sid, active=False),
        sim.queue_update(sid, 0, 0),
        sim.push(sid, "CustomEvent", {"type": "PromptForCreditCard", "data": "Visa"}),
        sim.agent_transfers(sid, "Bob Backup", "005000000000BOB"),
        sim.agent_disconnects(sid),
        sim.switch_server_url(sid, "https://d.la2-c1-fra.salesforceliveagent.com/chat"),
        sim.agent_ends(sid),
    ]
    assert numbers == sorted(numbers) and len(set(numbers)) == len(numbers)
    resp = await visitor.poll()
    assert resp.json()["sequence"] == numbers[-1]
    assert resp.json()["messages"] == [
        {"type": "AgentTyping", "message": {"name": "Ada Agent", "agentId": "005000000000ADA"}},
        {
            "type": "ChatMessage",
            "message": {
                "text": "Hi there",
                "name": "Ada Agent",
                "schedule": {"responseDelayMilliseconds": 0},
                "agentId": "005000000000ADA",
            },
        },
        {"type": "AgentNotTyping", "message": {"name": "Ada Agent", "agentId": "005000000000ADA"}},
        {"type": "QueueUpdate", "message": {"position": 0, "estimatedWaitTime": 0}},
        {"type": "CustomEvent", "message": {"type": "PromptForCreditCard", "data": "Visa"}},
        {
            "type": "ChatTransferred",
            "message": {
                "name": "Bob Backup",
                "userId": "005000000000BOB",
                "sneakPeekEnabled": False,
                "chasitorIdleTimeout": {"isEnabled": False},
            },
        },
        {"type": "AgentDisconnect", "message": {}},
        {
            "type": "SwitchServer",
            "message": {"newUrl": "https://d.la2-c1-fra.salesforceliveagent.com/chat"},
        },
        {"type": "ChatEnded", "message": {"reason": "agent"}},
    ]
    assert sim.sessions[sid].end_reason == "agent"
    with pytest.raises(SessionOver):
        sim.agent_says(sid, "too late")
    with pytest.raises(UnknownSession):
        sim.agent_says("no-such-session", "hello")


async def test_queue_update_respects_receive_queue_updates(make_sim: Any) -> None:
    sim, client = await make_sim()
    visitor = Visitor(client)
    await visitor.start()
    await visitor.init(MANUAL_BUTTON, receiveQueueUpdates=False)
    assert sim.queue_update(visitor.id, 2) is None
    assert isinstance(sim.push(visitor.id, "QueueUpdate", {"position": 2}), int)


async def test_outbox_overflow_is_refused(make_sim: Any) -> None:
    sim, client = await make_sim(max_queued=2)
    visitor = Visitor(client)
    await visitor.start()
    await visitor.init(MANUAL_BUTTON)
    await wait_until(lambda: sim.sessions[visitor.id].queued == 2)
    with pytest.raises(OutboxFull):
        sim.agent_says(visitor.id, "one too many")


async def test_fail_next_answers_without_applying(make_sim: Any) -> None:
    sim, client = await make_sim()
    visitor = Visitor(client)
    await visitor.join(MANUAL_BUTTON)
    sim.fail_next(visitor.id, "ChatMessage", 500, "boom")
    resp = await visitor.post("ChatMessage", {"text": "lost"})
    assert (resp.status, resp.text) == (500, "boom")
    assert (await visitor.post("ChatMessage", {"text": "kept"})).status == 200
    assert sim.sessions[visitor.id].visitor_messages == ["kept"]
    sim.fail_next(visitor.id, "Messages", 502)
    assert (await visitor.poll()).status == 502
    with pytest.raises(ValueError, match="unknown resource"):
        sim.fail_next(visitor.id, "Nope", 500)


async def test_record_is_json_and_complete(make_sim: Any) -> None:
    sim, client = await make_sim()
    visitor = Visitor(client)
    await visitor.join(ECHO_BUTTON)
    await visitor.post("ChasitorTyping", {})
    await visitor.post("ChatMessage", {"text": "hello"})
    await visitor.poll_until("AgentNotTyping")
    await visitor.post("ChatEnd", {"reason": "client"})
    record = json.loads(json.dumps(sim.record()))
    assert set(record) == {"options", "sessions", "requests", "faults"}
    assert record["options"]["hold_s"] == 0.2
    session = record["sessions"][visitor.id]
    assert session["init"]["buttonId"] == ECHO_BUTTON
    assert session["visitor_messages"] == ["hello"]
    assert session["visitor_events"] == [{"type": "ChasitorTyping"}]
    assert session["ended"] is True and session["end_reason"] == "client"
    assert session["phase"] == "ended"
    assert [m["type"] for m in session["agent_messages"]] == [
        "ChatRequestSuccess",
        "ChatEstablished",
        "AgentTyping",
        "ChatMessage",
        "AgentNotTyping",
    ]
    first = session["requests"][0]
    assert first == {
        "method": "GET",
        "path": "/chat/rest/System/SessionId",
        "query": "",
        "headers": {"X-LIVEAGENT-API-VERSION": "49", "X-LIVEAGENT-AFFINITY": "null"},
        "status": 200,
        "port": first["port"],
        "fault": None,
        "received": None,  # a poll's arrival only
        "answered": first["answered"],
    }
    assert isinstance(first["port"], int)
    polls = [r for r in session["requests"] if r["path"].endswith("/Messages")]
    assert polls and all(r["received"] <= r["answered"] for r in polls)
    answers = [r["answered"] for r in session["requests"]]
    assert answers == sorted(answers)
    assert session["sequences_accepted"] == [1, 2, 3, 4]
    assert session["duplicates_dropped"] == []
    init = session["requests"][1]
    assert init["path"] == "/chat/rest/Chasitor/ChasitorInit"
    assert init["headers"]["X-LIVEAGENT-SEQUENCE"] == "1"
    assert init["headers"]["Content-Type"] == "application/json"
    assert session["requests"][-1]["path"] == "/chat/rest/Chasitor/ChatEnd"


async def test_request_log_can_be_turned_off(make_sim: Any) -> None:
    sim, client = await make_sim(request_log_max=0)
    visitor = Visitor(client)
    await visitor.join(ECHO_BUTTON)
    assert sim.sessions[visitor.id].requests == []


# ------------------------------------------------------------------------------------------
# HTTP control API


async def test_http_control_api(make_sim: Any) -> None:
    sim, client = await make_sim()
    visitor = Visitor(client)
    await visitor.join(MANUAL_BUTTON)
    sid = visitor.id

    async def action(name: str, body: Any = None) -> tuple[int, Any]:
        async with client.post(f"/_sim/sessions/{sid}/{name}", json=body) as resp:
            return resp.status, await resp.json()

    assert (await action("say", {"text": "hello"}))[0] == 200
    assert (await action("typing", {"active": True}))[0] == 200
    assert (await action("typing", {"active": False}))[0] == 200
    assert (await action("push", {"type": "NewVisitorBreadcrumb", "message": {"location": "x"}}))[
        0
    ] == 200
    assert (await action("transfer", {"name": "Bob Backup"}))[0] == 200
    assert (await action("disconnect"))[0] == 200
    status, body = await action("queue", {"position": 1, "estimatedWaitTime": 10})
    assert status == 200 and isinstance(body["number"], int)
    resp = await visitor.poll()
    assert types(resp.json()["messages"]) == [
        "ChatMessage",
        "AgentTyping",
        "AgentNotTyping",
        "NewVisitorBreadcrumb",
        "ChatTransferred",
        "AgentDisconnect",
        "QueueUpdate",
    ]

    assert (await action("say", {"txt": "x"}))[0] == 400
    assert (await action("dance"))[0] == 404
    assert (await action("fail-next", {"resource": "ChatMessage", "status": 500}))[0] == 200
    assert (await visitor.post("ChatMessage", {"text": "x"})).status == 500

    async with client.post("/_sim/sessions/nope/say", json={"text": "x"}) as resp:
        assert resp.status == 404

    async with client.get("/_sim/sessions") as resp:
        summaries = (await resp.json())["sessions"]
    assert [s["id"] for s in summaries] == [sid]
    assert summaries[0]["phase"] == "chatting"
    async with client.get(f"/_sim/sessions/{sid}") as resp:
        assert (await resp.json())["button_id"] == MANUAL_BUTTON
    async with client.get("/_sim/record") as resp:
        assert sid in (await resp.json())["sessions"]

    status, body = await action("switch-server")
    assert status == 200 and body["affinity_token"] == sim.sessions[sid].affinity_token
    assert (await visitor.poll()).status == 503

    assert (await action("end"))[0] == 200
    assert (await action("end"))[0] == 409


async def test_http_control_api_switch_url(make_sim: Any) -> None:
    _, client = await make_sim()
    visitor = Visitor(client)
    await visitor.join(MANUAL_BUTTON)
    async with client.post(
        f"/_sim/sessions/{visitor.id}/switch-url", json={"newUrl": "https://x/chat"}
    ) as resp:
        assert resp.status == 200
    assert (await visitor.poll()).json()["messages"][0] == {
        "type": "SwitchServer",
        "message": {"newUrl": "https://x/chat"},
    }


# ------------------------------------------------------------------------------------------
# Runners


async def test_running_simulator_serves_loopback() -> None:
    async with running_simulator(fast_options()) as sim:
        assert sim.port and sim.base_url == f"http://127.0.0.1:{sim.port}/chat/rest/"
        async with aiohttp.ClientSession(base_url=f"http://127.0.0.1:{sim.port}") as http:
            visitor = Visitor(http)
            messages = await visitor.join(ECHO_BUTTON)
            assert types(messages) == ["ChatRequestSuccess", "ChatEstablished"]
            async with http.post(
                f"/_sim/sessions/{visitor.id}/say", json={"text": "from another process"}
            ) as resp:
                assert resp.status == 200
            resp2 = await visitor.poll()
            assert resp2.json()["messages"][0]["message"]["text"] == "from another process"


async def test_shutdown_answers_held_polls_promptly() -> None:
    options = fast_options(hold_s=10, client_poll_timeout=20)
    async with aiohttp.ClientSession() as http:
        async with running_simulator(options) as sim:
            visitor = Visitor(_Prefixed(http, f"http://127.0.0.1:{sim.port}"))
            await visitor.join(MANUAL_BUTTON)
            poll = asyncio.create_task(visitor.poll())
            await wait_until(lambda: sim.sessions[visitor.id].poll_held)
            started = time.monotonic()
        async with asyncio.timeout(3):
            resp = await poll
        assert resp.status == 204
        assert time.monotonic() - started < 3


async def test_serve_forever_stops_on_cancellation() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    task = asyncio.create_task(serve_forever(fast_options(), "127.0.0.1", port))
    async with aiohttp.ClientSession() as http:
        async with asyncio.timeout(3):
            while True:
                try:
                    async with http.get(f"http://127.0.0.1:{port}/_sim/sessions") as resp:
                        assert resp.status == 200
                        break
                except aiohttp.ClientConnectionError:
                    await asyncio.sleep(0.02)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        with pytest.raises(aiohttp.ClientConnectionError):
            async with http.get(f"http://127.0.0.1:{port}/_sim/sessions"):
                pass


class _Prefixed:
    """Lets the raw Visitor use a plain ClientSession against an absolute base."""

    def __init__(self, http: aiohttp.ClientSession, base: str) -> None:
        self.http, self.base = http, base

    def request(self, method: str, path: str, **kwargs: Any) -> Any:
        return self.http.request(method, self.base + path, **kwargs)


# ------------------------------------------------------------------------------------------
# Strict and lenient abandoned polls


async def test_abandoned_poll_still_counts_by_default() -> None:
    options = fast_options(hold_s=1, client_poll_timeout=5)
    async with (
        running_simulator(options) as sim,
        aiohttp.ClientSession(base_url=f"http://127.0.0.1:{sim.port}") as http,
    ):
        visitor = Visitor(http)
        await visitor.join(MANUAL_BUTTON)
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.1):
                await visitor.poll()
        resp = await visitor.poll()
        assert resp.status == 409
        assert sim.sessions[visitor.id].end_reason == "duplicate_poll"


@pytest.mark.parametrize("served_by", ["runner", "test_server"])
async def test_abandoned_poll_is_released_when_lenient(make_sim: Any, served_by: str) -> None:
    options = {"hold_s": 1, "client_poll_timeout": 5, "release_abandoned_polls": True}
    if served_by == "runner":
        async with (
            running_simulator(fast_options(**options)) as sim,
            aiohttp.ClientSession(base_url=f"http://127.0.0.1:{sim.port}") as http,
        ):
            await _abandon_and_repoll(sim, Visitor(http))
    else:
        sim, client = await make_sim(**options)
        await _abandon_and_repoll(sim, Visitor(client))


async def _abandon_and_repoll(sim: Simulator, visitor: Visitor) -> None:
    await visitor.join(MANUAL_BUTTON)
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.1):
            await visitor.poll()
    await asyncio.sleep(0.05)  # let the server see the closed connection
    poll = asyncio.create_task(visitor.poll())
    await wait_until(lambda: sim.sessions[visitor.id].poll_held)
    sim.agent_says(visitor.id, "still here")
    async with asyncio.timeout(2):
        resp = await poll
    assert resp.status == 200
    assert not sim.sessions[visitor.id].is_over


# ------------------------------------------------------------------------------------------
# Scale (a small version of the load test: many sessions, each with a held poll)


async def test_many_sessions_with_held_polls() -> None:
    count = 300
    options = fast_options(hold_s=5, client_poll_timeout=10, join_delay_s=0, request_log_max=0)
    async with running_simulator(options) as sim:
        connector = aiohttp.TCPConnector(limit=0)
        async with aiohttp.ClientSession(
            base_url=f"http://127.0.0.1:{sim.port}", connector=connector
        ) as http:
            visitors = [Visitor(http) for _ in range(count)]
            await asyncio.gather(*(v.join(MANUAL_BUTTON) for v in visitors))
            polls = [asyncio.create_task(v.poll()) for v in visitors]
            await wait_until(lambda: all(s.poll_held for s in sim.sessions.values()), timeout=5)
            for visitor in visitors:
                sim.agent_says(visitor.id, f"hi {visitor.id}")
            async with asyncio.timeout(5):
                answers = await asyncio.gather(*polls)
            for visitor, resp in zip(visitors, answers, strict=True):
                assert resp.json()["messages"][0]["message"]["text"] == f"hi {visitor.id}"
            for visitor in visitors:
                await visitor.post("ChatEnd", {"reason": "client"})
        assert all(s.end_reason == "client" for s in sim.sessions.values())


def test_options_are_validated() -> None:
    with pytest.raises(ValueError, match="must be larger than hold_s"):
        fast_options(hold_s=5, client_poll_timeout=5)
    with pytest.raises(ValueError, match="hold_s must be a positive number"):
        fast_options(hold_s=0)
    with pytest.raises(ValueError, match="max_queued must be at least 1"):
        fast_options(max_queued=0)


def test_org_constant_is_an_org_id() -> None:
    assert ORG.startswith("00D") and len(ORG) == 15
