"""Fault injection and rate limits, as a guest meets them."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import aiohttp
import pytest

from bridged.simulators.messaging import MANUAL_DEPLOYMENT, Simulator
from bridged.simulators.messaging.faults import Fault, FaultPlan, StreamDrop
from tests.simulators.messaging.helpers import API, EventReader, new_id

# ------------------------------------------------------------------------------------------
# fail, reset, delay


async def test_fail_next_answers_the_status_and_applies_nothing(guest: Any,
                                                                sim: Simulator) -> None:
    visitor = guest(MANUAL_DEPLOYMENT)
    reader = await visitor.start()
    await reader.until("CONVERSATION_ROUTING_RESULT")
    sim.fail_next("SendMessage", 500, "Something went wrong", count=2)
    mid = new_id()
    for _ in range(2):
        resp = await visitor.send("hi", mid)
        assert resp.status == 500
        assert resp.json() == {"message": "Something went wrong",
                               "errorCode": "INTERNAL_SERVER_ERROR"}
    assert sim.conversation(visitor.conversation_id).message_ids == {}
    assert (await visitor.send("hi", mid)).status == 202
    assert [r.fault for r in sim.request_records("SendMessage")] == ["fail_500", "fail_500",
                                                                     None]
    assert [f.fault for f in sim.injected] == ["fail_500", "fail_500"]


async def test_a_fault_never_hides_a_strictness_error(guest: Any, sim: Simulator) -> None:
    visitor = guest(MANUAL_DEPLOYMENT)
    await visitor.start(stream=False)
    sim.fail_next("SendMessage", 503)
    resp = await visitor.send("hi", new_id().upper())
    assert resp.status == 400
    assert (await visitor.send("hi")).status == 503


async def test_a_conversation_fault_hits_only_that_conversation(guest: Any,
                                                                sim: Simulator) -> None:
    first, second = guest(MANUAL_DEPLOYMENT), guest(MANUAL_DEPLOYMENT)
    await first.start(stream=False)
    await second.start(stream=False)
    sim.fail_next("SendMessage", 503, conversation_id=first.conversation_id)
    assert (await second.send("hi")).status == 202
    assert (await first.send("hi")).status == 503
    assert sim.faults()["pending"] == []


async def test_the_stream_answers_5xx(guest: Any, sim: Simulator) -> None:
    visitor = guest()
    await visitor.get_token()
    sim.fail_next("Stream", 503, count=2)
    for _ in range(2):
        resp = await visitor.open_stream()
        assert not isinstance(resp, EventReader) and resp.status == 503
    assert isinstance(await visitor.open_stream(), EventReader)


async def test_reset_before_applies_nothing(guest: Any, sim: Simulator) -> None:
    visitor = guest(MANUAL_DEPLOYMENT)
    await visitor.start(stream=False)
    sim.reset_next("SendMessage")
    with pytest.raises(aiohttp.ClientError):
        await visitor.send("lost")
    assert sim.conversation(visitor.conversation_id).message_ids == {}
    assert sim.request_records("SendMessage")[-1].status == 0


async def test_reset_after_applies_then_drops(guest: Any, sim: Simulator) -> None:
    visitor = guest(MANUAL_DEPLOYMENT)
    reader = await visitor.start()
    await reader.until("CONVERSATION_ROUTING_RESULT")
    sim.reset_next("SendMessage", when="after")
    mid = new_id()
    with pytest.raises(aiohttp.ClientError):
        await visitor.send("did it arrive?", mid)
    echo = await reader.next()
    assert echo is not None and echo.entry["identifier"] == mid
    # The client's retry with the same id is answered and dropped.
    assert (await visitor.send("did it arrive?", mid)).status == 202
    assert await reader.quiet(0.1) == []


async def test_delay_after_applies_at_once_and_answers_late(guest: Any,
                                                            sim: Simulator) -> None:
    visitor = guest(MANUAL_DEPLOYMENT)
    reader = await visitor.start()
    await reader.until("CONVERSATION_ROUTING_RESULT")
    sim.delay_next("SendMessage", 0.3)
    started = time.monotonic()
    send = asyncio.create_task(visitor.send("slow"))
    echo = await reader.next()
    assert echo is not None and time.monotonic() - started < 0.25
    assert (await send).status == 202
    assert time.monotonic() - started >= 0.3


async def test_delay_before_handles_the_request_late(guest: Any, sim: Simulator) -> None:
    visitor = guest(MANUAL_DEPLOYMENT)
    await visitor.start(stream=False)
    sim.delay_next("CreateConversation", 0.2, when="before")
    started = time.monotonic()
    assert (await visitor.create()).status == 201
    conv = sim.conversation(visitor.conversation_id)
    assert conv.started_ms / 1000 >= time.time() - (time.monotonic() - started) + 0.19
    assert sim.request_records("CreateConversation")[-1].fault == "delay_before"


async def test_delayed_stream_headers(guest: Any, sim: Simulator) -> None:
    visitor = guest()
    await visitor.get_token()
    sim.delay_next("Stream", 0.2)
    started = time.monotonic()
    reader = await visitor.stream()
    assert time.monotonic() - started >= 0.2
    reader.close()


# ------------------------------------------------------------------------------------------
# Stream drops, token expiry, replay off


async def test_drop_the_next_stream_after_n_events(guest: Any, sim: Simulator) -> None:
    visitor = guest()
    await visitor.start(stream=False)
    await asyncio.sleep(0.1)  # routing result, agent add, status Active are buffered
    sim.drop_next_streams(after_events=2)
    reader = await visitor.stream()
    with pytest.raises(aiohttp.ClientError):
        await reader.ends()
    assert len(reader.events) == 2
    record = sim.streams[-1]
    assert record.close_reason == "dropped" and list(record.delivered) == [
        e.id for e in reader.events]
    again = await visitor.stream(**{"Last-Event-Id": reader.events[-1].id or ""})
    rest = await again.take(1)
    assert rest[0].event == "CONVERSATION_SESSION_STATUS_CHANGED"


async def test_end_the_next_stream_cleanly_at_once(guest: Any, sim: Simulator) -> None:
    visitor = guest()
    await visitor.get_token()
    sim.drop_next_streams(after_events=0, abort=False)
    reader = await visitor.stream()
    assert await reader.ends() == []
    assert sim.streams[-1].close_reason == "dropped"


async def test_drop_every_open_stream_now(guest: Any, sim: Simulator) -> None:
    first, second = guest(), guest()
    await first.get_token()
    await second.get_token()
    readers = [await first.stream(), await second.stream()]
    assert sim.drop_streams() == 2
    for reader in readers:
        with pytest.raises(aiohttp.ClientError):
            await reader.ends()
    assert [f.fault for f in sim.injected] == ["drop_now", "drop_now"]


async def test_expire_tokens_now(guest: Any, sim: Simulator) -> None:
    visitor = guest(MANUAL_DEPLOYMENT)
    reader = await visitor.start()
    other = guest(MANUAL_DEPLOYMENT)
    await other.start(stream=False)
    assert sim.expire_tokens(sim.conversation(visitor.conversation_id).subject) == 1
    await reader.ends()
    assert reader.ended
    assert sim.streams[-1].close_reason == "token_expired"
    resp = await visitor.send("hi")
    assert (resp.status, resp.json()["message"]) == (401, "Jwt is expired")
    assert (await other.send("hi")).status == 202


async def test_replay_off_and_back_on(guest: Any, sim: Simulator) -> None:
    visitor = guest()
    await visitor.start(stream=False)
    await asyncio.sleep(0.1)
    sim.set_replay(False)
    reader = await visitor.stream()
    assert await reader.quiet(0.1) == []
    reader.close()
    await asyncio.sleep(0.05)
    sim.clear_faults()
    again = await visitor.stream()
    assert len(await again.take(3)) == 3


# ------------------------------------------------------------------------------------------
# Rate limits


async def test_conversation_starts_are_limited_per_subject(make_sim: Any, guest: Any) -> None:
    sim = await make_sim(starts_per_window=2, starts_window_s=0.3)
    visitor = guest(MANUAL_DEPLOYMENT, sim)
    await visitor.get_token()
    assert [(await visitor.create()).status for _ in range(3)] == [201, 201, 429]
    other = guest(MANUAL_DEPLOYMENT, sim)
    await other.get_token()
    assert (await other.create()).status == 201
    await asyncio.sleep(0.35)
    assert (await visitor.create()).status == 201


async def test_messages_are_limited_per_conversation(make_sim: Any, guest: Any) -> None:
    sim = await make_sim(messages_per_window=3, message_window_s=0.4)
    visitor = guest(MANUAL_DEPLOYMENT, sim)
    await visitor.start(stream=False)
    mid = new_id()
    assert (await visitor.send("1", mid)).status == 202
    assert (await visitor.send("1", mid)).status == 202  # a dropped duplicate: free
    assert [(await visitor.send(str(n))).status for n in range(3)] == [202, 202, 429]
    resp = await visitor.send("again")
    assert resp.json() == {"message": "Too many requests: messages per conversation",
                           "errorCode": "TOO_MANY_REQUESTS"}
    await visitor.create()  # another conversation has its own budget
    assert (await visitor.send("elsewhere")).status == 202
    await asyncio.sleep(0.45)
    visitor.conversation_id = sim.request_records("CreateConversation")[0].conversation_id
    assert (await visitor.send("later")).status == 202


# ------------------------------------------------------------------------------------------
# The plan itself


def test_the_fault_plan_refuses_nonsense() -> None:
    plan = FaultPlan()
    fault = Fault(kind="fail", status=500)
    with pytest.raises(ValueError, match="unknown resource"):
        plan.add(None, "Messages", fault)
    with pytest.raises(ValueError, match="name no conversation"):
        plan.add(new_id(), "Stream", fault)
    with pytest.raises(ValueError, match="count"):
        plan.add(None, "SendMessage", fault, count=0)
    with pytest.raises(ValueError):
        Fault(kind="explode")
    with pytest.raises(ValueError):
        Fault(kind="fail", status=42)
    with pytest.raises(ValueError):
        Fault(kind="delay", seconds=-1)
    with pytest.raises(ValueError):
        StreamDrop(after_events=-1)


def test_conversation_faults_come_before_any_conversation_ones() -> None:
    plan = FaultPlan()
    cid = new_id()
    plan.add(None, "SendMessage", Fault(kind="fail", status=500))
    plan.add(cid, "SendMessage", Fault(kind="fail", status=503))
    assert [f["fault"] for f in plan.pending()] == ["fail_500", "fail_503"]
    first = plan.take(cid, "SendMessage")
    second = plan.take(cid, "SendMessage")
    assert first is not None and second is not None
    assert (first.status, second.status) == (503, 500)
    assert plan.take(cid, "SendMessage") is None
    plan.add(cid, "Typing", Fault(kind="reset"))
    plan.forget_conversation(cid)
    assert not plan


async def test_fault_calls_check_the_conversation(sim: Simulator) -> None:
    with pytest.raises(KeyError):
        sim.fail_next("SendMessage", 500, conversation_id=new_id())
    assert API
