"""What the simulator records, its runners and its options."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from typing import Any

import aiohttp
import msgspec
import pytest

from bridged.simulators.messaging import (
    MANUAL_DEPLOYMENT,
    MessagingOptions,
    Simulator,
    SimulatorError,
    running_simulator,
    serve_forever,
)
from tests.simulators.messaging.helpers import API, ORG, STREAM, fast_options, new_id, wait_until


async def test_every_request_is_recorded(guest: Any, sim: Simulator) -> None:
    visitor = guest(MANUAL_DEPLOYMENT)
    before = time.time()
    await visitor.start(stream=False)
    mid = new_id()
    await visitor.send("recorded", mid)
    await visitor.send("bad", new_id().upper())
    records = list(sim.requests)
    assert [(r.method, r.resource, r.status) for r in records] == [
        ("POST", "AccessToken", 200), ("POST", "CreateConversation", 201),
        ("POST", "SendMessage", 202), ("POST", "SendMessage", 400)]
    send = records[2]
    assert send.path == f"{API}conversation/{visitor.conversation_id}/message"
    assert send.conversation_id == visitor.conversation_id
    assert send.headers["Authorization"] == f"Bearer {visitor.token}"
    assert send.headers["Content-Type"] == "application/json"
    assert msgspec.json.decode(send.body)["message"]["id"] == mid
    assert before <= records[0].at <= send.at <= time.time()
    assert records[0].headers.get("Authorization") is None
    resp = await visitor.request("GET", f"{API}conversation/{visitor.conversation_id}/entries",
                                 params={"limit": "5"})
    assert resp.status == 200 and sim.requests[-1].query == "limit=5"


async def test_stream_openings_are_recorded(guest: Any, sim: Simulator) -> None:
    visitor = guest(MANUAL_DEPLOYMENT)
    reader = await visitor.start()
    events = await reader.take(1)
    (record,) = sim.streams
    assert record.number == 1 and record.is_open and record.concurrent == 0
    assert record.headers["X-Org-Id"] == ORG
    assert record.last_event_id == visitor.last_event_id
    assert list(record.delivered) == [e.id for e in events]
    assert record.subject == sim.conversation(visitor.conversation_id).subject
    (opening,) = sim.request_records("Stream")
    assert (opening.path, opening.status) == (STREAM, 200)
    reader.close()
    await wait_until(lambda: not record.is_open)
    assert record.close_reason == "client_gone"
    assert record.as_dict()["closed_at"] is not None


async def test_records_are_bounded(make_sim: Any, guest: Any) -> None:
    sim = await make_sim(request_log_max=0, record_max=0)
    visitor = guest(MANUAL_DEPLOYMENT, sim)
    reader = await visitor.start()
    await reader.take(1)
    assert list(sim.requests) == [] and list(sim.streams) == []
    conv = sim.conversation(visitor.conversation_id)
    assert list(conv.entries) == [] and list(conv.events) == []
    small = await make_sim(request_log_max=2, body_record_max=10)
    other = guest(MANUAL_DEPLOYMENT, small)
    await other.start(stream=False)
    await other.send("a rather long text")
    assert [r.resource for r in small.requests] == ["CreateConversation", "SendMessage"]
    assert len(small.requests[-1].body) == 10


async def test_closed_conversations_are_reaped(make_sim: Any, guest: Any) -> None:
    sim = await make_sim(closed_retention_s=0.05)
    visitor = guest(MANUAL_DEPLOYMENT, sim)
    await visitor.start(stream=False)
    await visitor.close()
    await wait_until(lambda: not sim.conversations)
    assert sim.summaries() == []


async def test_start_and_stop(http: aiohttp.ClientSession) -> None:
    sim = Simulator(fast_options())
    url = await sim.start()
    assert url == sim.base_url == f"http://127.0.0.1:{sim.port}"
    with pytest.raises(SimulatorError):
        await sim.start()
    async with http.get(url + API + "conversation/list") as resp:
        assert resp.status == 401
    await sim.stop()
    await sim.stop()
    with pytest.raises(aiohttp.ClientConnectionError):
        async with http.get(url + API + "conversation/list"):
            pass


async def test_stop_ends_open_streams(http: aiohttp.ClientSession) -> None:
    async with running_simulator(fast_options()) as sim:
        assert sim.base_url is not None
        body = {"orgId": ORG, "esDeveloperName": MANUAL_DEPLOYMENT,
                "capabilitiesVersion": "1", "platform": "Web"}
        async with http.post(sim.base_url + API + "authorization/unauthenticated/access-token",
                             json=body) as resp:
            token = (await resp.json())["accessToken"]
        headers = {"Authorization": f"Bearer {token}", "Accept": "text/event-stream",
                   "X-Org-Id": ORG, "Last-Event-Id": "0"}
        stream = await http.get(sim.base_url + STREAM, headers=headers)
        assert stream.status == 200
        started = time.monotonic()
    assert time.monotonic() - started < 2
    assert sim.streams[-1].close_reason == "shutdown"
    stream.close()


async def test_serve_forever_until_cancelled(http: aiohttp.ClientSession) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    task = asyncio.create_task(serve_forever(fast_options(), "127.0.0.1", port))
    url = f"http://127.0.0.1:{port}{API}conversation/list"
    try:
        async with asyncio.timeout(3):
            while True:
                with contextlib.suppress(aiohttp.ClientConnectionError):
                    async with http.get(url) as resp:
                        assert resp.status == 401
                        break
                await asyncio.sleep(0.02)
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


@pytest.mark.parametrize(
    ("overrides", "match"),
    [
        ({"org_id": "00D0000000001"}, "org_id"),
        ({"deployments": {"Bad Name": "echo"}}, "deployment API name"),
        ({"deployments": {"Sim_X": "dance"}}, "unknown kind"),
        ({"second_stream": "both"}, "second_stream"),
        ({"duplicate_messages": "keep"}, "duplicate_messages"),
        ({"ping_interval_s": 0}, "ping_interval_s"),
        ({"join_delay_s": -1}, "join_delay_s"),
        ({"messages_per_window": 0}, "messages_per_window"),
        ({"replay_depth": -1}, "replay_depth"),
        ({"create_status": 302}, "create_status"),
        ({"closed_conversation_status": 500}, "closed_conversation_status"),
    ],
)
def test_options_refuse_bad_values(overrides: dict[str, Any], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        MessagingOptions(**overrides)


def test_options_decode_strictly_from_a_config() -> None:
    options = msgspec.convert({"replay_depth": 0, "second_stream": "allow"}, MessagingOptions)
    assert options.replay_depth == 0 and options.kind_of("Sim_Echo") == "echo"
    with pytest.raises(msgspec.ValidationError):
        msgspec.convert({"replay": 0}, MessagingOptions)


async def test_a_client_that_hangs_up_during_a_delay_is_recorded(guest: Any,
                                                                 sim: Simulator) -> None:
    visitor = guest(MANUAL_DEPLOYMENT)
    await visitor.start(stream=False)
    sim.delay_next("SendMessage", 5.0, when="before")
    sim.delay_next("Stream", 5.0)
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.2):
            await visitor.send("never mind")
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.2):
            await visitor.open_stream()
    await wait_until(lambda: len(sim.request_records("SendMessage")) == 1
                     and len(sim.request_records("Stream")) == 1)
    (sent,) = sim.request_records("SendMessage")
    assert (sent.status, sent.fault) == (499, "delay_before")
    assert sim.request_records("Stream")[0].status == 499
    assert sim.conversation(visitor.conversation_id).message_ids == {}
