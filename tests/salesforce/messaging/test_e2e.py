"""Enhanced Chat end to end: OCP over WebSocket, bridged, the strict simulator, on 127.0.0.1.

Each test asserts on what OCP received and on what the simulator recorded (headers, ids,
order, no duplicate at the agent, never two streams at once).
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import re
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from bridged.chats.fartimers import FarTimers
from bridged.ops.daemon import Daemon
from bridged.salesforce.messaging import actor as messaging_actor
from bridged.simulators.messaging import Simulator
from tests.conftest import running_bridged
from tests.ocp_client import OcpClient, connect
from tests.salesforce.messaging.e2e import (
    ORG15,
    ORG18,
    TOKEN,
    config,
    messaging_simulator,
    only_conversation,
    requests,
    types,
    until,
    wait_for,
)


@pytest.fixture
async def msim() -> AsyncIterator[Simulator]:
    async with messaging_simulator() as sim:
        yield sim


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


async def open_bridged(sim: Simulator, tmp_path: Path, **kwargs: Any
                       ) -> tuple[Any, Daemon]:
    manager = running_bridged(config(sim, tmp_path, **kwargs))
    return manager, await manager.__aenter__()


async def client(http: aiohttp.ClientSession, daemon: Daemon) -> OcpClient:
    return await connect(http, daemon.url, TOKEN)


def assert_one_stream_at_a_time(sim: Simulator) -> None:
    assert sim.streams, "no stream was opened"
    assert [s.concurrent for s in sim.streams] == [0] * len(sim.streams)


def assert_stream_headers(sim: Simulator) -> None:
    for stream in sim.streams:
        headers = {k.lower(): v for k, v in stream.headers.items()}
        assert headers["x-org-id"] == ORG15  # the 15-character id, from an 18 in the config
        assert headers["accept"] == "text/event-stream"
        assert headers["authorization"].startswith("Bearer ")
        assert stream.last_event_id is not None


async def test_a_whole_hand_over_and_ocp_ends_it(msim: Simulator, tmp_path: Path,
                                                 http: aiohttp.ClientSession) -> None:
    async with running_bridged(config(msim, tmp_path)) as daemon:
        ocp = await client(http, daemon)
        await ocp.start("c1", profile="m_echo")
        await ocp.expect("agent_joined", agent="Ada Agent")
        await ocp.send({"type": "typing", "chat": "c1", "active": True})
        await ocp.send({"type": "message", "chat": "c1", "id": "v1", "text": "my card"})
        await ocp.expect("agent_message", text="Echo: my card")
        await ocp.send({"type": "message", "chat": "c1", "id": "v1", "text": "my card"})
        await ocp.expect("delivered", id="v1")  # again, without a second send
        await ocp.send({"type": "end", "chat": "c1"})
        frames = await ocp.events("c1", until="ended")
        conversation = only_conversation(msim)
        await wait_for(lambda: requests(msim, "CloseConversation"), "the DELETE")
    seen = types(ocp.received[1:])
    assert seen[:2] == ["queued", "agent_joined"]
    assert seen.count("delivered") == 2 and seen.count("agent_message") == 1
    assert "agent_typing" in seen
    assert frames[-1]["reason"] == "client"
    assert [f["seq"] for f in ocp.received[1:]] == list(range(1, len(seen) + 1))
    # What the simulator saw: the order of a hand-over, the ids, one of each message.
    order = [r.resource for r in msim.requests]
    assert order[:3] == ["AccessToken", "Stream", "CreateConversation"]
    token = json.loads(requests(msim, "AccessToken")[0].body)
    assert token["orgId"] == ORG18 and token["esDeveloperName"] == "Sim_Echo"
    assert conversation.id == str(uuid.UUID(conversation.id))  # a lowercase UUID
    assert len(conversation.message_ids) == 1 and not list(conversation.duplicates)
    (close,) = requests(msim, "CloseConversation")
    assert close.status == 204 and "esDeveloperName=Sim_Echo" in close.query
    assert conversation.close_reason == "visitor"
    typing = [json.loads(r.body)["entryType"] for r in requests(msim, "Typing")]
    assert typing[:1] == ["TypingStartedIndicator"]
    assert_one_stream_at_a_time(msim)
    assert_stream_headers(msim)


async def test_the_agent_ends_the_chat(msim: Simulator, tmp_path: Path,
                                       http: aiohttp.ClientSession) -> None:
    async with running_bridged(config(msim, tmp_path)) as daemon:
        ocp = await client(http, daemon)
        await ocp.start("c1", profile="m_agent_ends")
        await ocp.expect("agent_joined")
        await ocp.send({"type": "message", "chat": "c1", "id": "v1", "text": "bye?"})
        ended = await ocp.expect("ended")
        await wait_for(lambda: requests(msim, "CloseConversation"), "the DELETE")
    assert ended["reason"] == "agent"
    assert ended["text"] == "The agent has ended the chat."
    assert "agent_message" in types(ocp.received)
    assert len(requests(msim, "CloseConversation")) == 1


async def test_a_transfer_is_told_apart_from_the_end(msim: Simulator, tmp_path: Path,
                                                    http: aiohttp.ClientSession) -> None:
    async with running_bridged(config(msim, tmp_path)) as daemon:
        ocp = await client(http, daemon)
        await ocp.start("c1", profile="m_transfer")
        await ocp.expect("agent_joined", agent="Ada Agent")
        await ocp.send({"type": "message", "chat": "c1", "id": "v1", "text": "one"})
        await ocp.expect("agent_message", agent="Ada Agent", text="Echo: one")
        await ocp.expect("transferred", agent="Bo Backup")
        await ocp.send({"type": "message", "chat": "c1", "id": "v2", "text": "two"})
        await ocp.expect("agent_message", agent="Bo Backup", text="Echo: two")
        await ocp.send({"type": "end", "chat": "c1"})
        await ocp.expect("ended", reason="client")
    assert "ended" not in types(ocp.received[:-1])
    assert requests(msim, "GetConversation"), "the routing status was not asked"


async def test_no_agent_within_the_wait_ends_the_chat_no_agent(
        msim: Simulator, tmp_path: Path, http: aiohttp.ClientSession) -> None:
    profiles = {"waiting": {"type": "salesforce_messaging", "scrt_url": msim.base_url,
                            "organization_id": ORG15, "es_developer_name": "Sim_No_Agent",
                            "agent_wait_timeout_s": 0.3}}
    async with running_bridged(config(msim, tmp_path, profiles=profiles)) as daemon:
        ocp = await client(http, daemon)
        await ocp.start("c1", profile="waiting")
        ended = await ocp.expect("ended")
        await wait_for(lambda: requests(msim, "CloseConversation"), "the DELETE")
    assert ended["reason"] == "no_agent"
    assert ended["text"].startswith("There is no agent available")
    assert only_conversation(msim).close_reason == "visitor"


async def test_a_routing_failure_ends_the_chat_failed(msim: Simulator, tmp_path: Path,
                                                      http: aiohttp.ClientSession) -> None:
    async with running_bridged(config(msim, tmp_path)) as daemon:
        ocp = await client(http, daemon)
        await ocp.start("c1", profile="m_routing_fails")
        ended = await ocp.expect("ended")
    assert ended["reason"] == "failed"
    assert "routing failed" in ended["detail"]


async def test_a_deployment_that_is_not_a_custom_client_fails_naming_it(
        msim: Simulator, tmp_path: Path, http: aiohttp.ClientSession) -> None:
    async with running_bridged(config(msim, tmp_path)) as daemon:
        ocp = await client(http, daemon)
        await ocp.start("c1", profile="m_web")
        ended = await ocp.expect("ended")
    assert ended["reason"] == "failed"
    assert "HTTP 400" in ended["detail"] and "access token" in ended["detail"]


@pytest.mark.parametrize("replay", [True, False], ids=["replay", "no-replay"])
async def test_stream_drops_lose_nothing_and_show_nothing_twice(
        msim: Simulator, tmp_path: Path, http: aiohttp.ClientSession, replay: bool) -> None:
    msim.set_replay(replay)
    async with running_bridged(config(msim, tmp_path)) as daemon:
        ocp = await client(http, daemon)
        await ocp.start("c1", profile="m_manual")
        await ocp.expect("queued")
        conversation = only_conversation(msim)
        msim.agent_joins(conversation.id)
        await ocp.expect("agent_joined")
        msim.agent_says(conversation.id, "a1")
        await ocp.expect("agent_message", text="a1")
        for round_ in range(3):
            # Cut the stream; the agent speaks before bridged can reopen it.
            assert msim.drop_streams() == 1
            msim.agent_says(conversation.id, f"b{round_}")
            msim.agent_says(conversation.id, f"c{round_}")
            await ocp.expect("agent_message", text=f"c{round_}")
        msim.agent_says(conversation.id, "z")
        await ocp.expect("agent_message", text="z")
        await ocp.send({"type": "end", "chat": "c1"})
        await ocp.expect("ended")
    said = [f["text"] for f in ocp.received if f.get("type") == "agent_message"]
    assert said == ["a1", "b0", "c0", "b1", "c1", "b2", "c2", "z"]
    assert_one_stream_at_a_time(msim)
    assert_stream_headers(msim)
    streams = list(msim.streams)
    assert len(streams) >= 4
    # Each reopening asked from the last event the previous stream delivered.
    for before, after in itertools.pairwise(streams):
        if before.delivered:
            assert after.last_event_id == before.delivered[-1]
    assert requests(msim, "ListEntries"), "no reconciliation after a reopen"


@pytest.mark.parametrize(("resource", "status", "count"), [
    ("AccessToken", 429, 2), ("AccessToken", 500, 2), ("Stream", 503, 2), ("Stream", 429, 1),
    ("CreateConversation", 503, 1), ("SendMessage", 429, 2), ("SendMessage", 500, 2),
    ("SendMessage", 503, 1),
])
async def test_429_and_5xx_are_waited_out_and_nothing_is_sent_twice(
        msim: Simulator, tmp_path: Path, http: aiohttp.ClientSession, resource: str,
        status: int, count: int) -> None:
    msim.fail_next(resource, status, count=count)
    async with running_bridged(config(msim, tmp_path)) as daemon:
        ocp = await client(http, daemon)
        await ocp.start("c1", profile="m_echo")
        await ocp.expect("agent_joined")
        await ocp.send({"type": "message", "chat": "c1", "id": "v1", "text": "once"})
        await ocp.expect("agent_message", text="Echo: once")
        await ocp.send({"type": "end", "chat": "c1"})
        await ocp.expect("ended", reason="client")
    failed = [r for r in requests(msim, resource) if r.status == status]
    assert len(failed) == count
    conversation = only_conversation(msim)
    assert len(conversation.message_ids) == 1 and not list(conversation.duplicates)
    assert types(ocp.received).count("delivered") == 1
    assert_one_stream_at_a_time(msim)


@pytest.mark.parametrize(("resource", "status", "reason", "detail"), [
    ("SendMessage", 403, "failed", "refused the message"),
    ("SendMessage", 417, "agent", ""),
    ("Stream", 400, "failed", "refused the event stream"),
])
async def test_refusals_end_the_chat_with_a_reason_that_says_so(
        msim: Simulator, tmp_path: Path, http: aiohttp.ClientSession, resource: str,
        status: int, reason: str, detail: str) -> None:
    async with running_bridged(config(msim, tmp_path)) as daemon:
        ocp = await client(http, daemon)
        await ocp.start("c1", profile="m_echo")
        await ocp.expect("agent_joined")
        msim.fail_next(resource, status, message="Simulated refusal")
        if resource == "Stream":
            msim.drop_streams()
        else:
            await ocp.send({"type": "message", "chat": "c1", "id": "v1", "text": "x"})
        ended = await ocp.expect("ended")
    assert ended["reason"] == reason
    assert detail in ended.get("detail", "")


async def test_an_expired_token_ends_the_chat_saying_so(
        msim: Simulator, tmp_path: Path, http: aiohttp.ClientSession) -> None:
    async with running_bridged(config(msim, tmp_path)) as daemon:
        ocp = await client(http, daemon)
        await ocp.start("c1", profile="m_echo")
        await ocp.expect("agent_joined")
        assert msim.expire_tokens() == 1
        ended = await ocp.expect("ended")
    assert ended["reason"] == "failed"
    assert "access token expired" in ended["detail"]


@pytest.mark.parametrize("far_timer_s", [30.0, 0.5], ids=["loop timer", "shared far timer"])
async def test_bridged_ends_the_chat_before_the_token_runs_out(
        tmp_path: Path, http: aiohttp.ClientSession, monkeypatch: pytest.MonkeyPatch,
        far_timer_s: float) -> None:
    """Guests get no renewal: bridged ends the hand-over gracefully before ``exp``, whether
    the wake-up is a loop timer of its own or one of the far-off ones that share one."""
    shared: list[float] = []
    call_later = FarTimers.call_later

    def counted(self: FarTimers, delay: float, callback: Any) -> Any:
        shared.append(delay)
        return call_later(self, delay, callback)

    monkeypatch.setattr(FarTimers, "call_later", counted)
    monkeypatch.setattr(messaging_actor, "FAR_TIMER_S", far_timer_s)
    async with messaging_simulator(token_lifetime_s=301.0) as sim, running_bridged(
            config(sim, tmp_path)) as daemon:
        ocp = await client(http, daemon)
        await ocp.start("c1", profile="m_echo")
        ended = await ocp.expect("ended")
        await wait_for(lambda: requests(sim, "CloseConversation"), "the DELETE")
    assert ended["reason"] == "failed" and "access token expired" in ended["detail"]
    assert requests(sim, "CloseConversation")[0].status == 204  # the token still worked
    assert bool(shared) is (far_timer_s < 1.0)  # the token's end came through the shared one


async def test_a_burst_of_starts_over_the_token_limit_is_served_in_order(
        tmp_path: Path, http: aiohttp.ClientSession) -> None:
    async with messaging_simulator(tokens_per_window=3, token_window_s=1.0) as sim:
        limits = {"messaging_token_limit": 3, "messaging_limit_window_s": 1.0}
        async with running_bridged(config(sim, tmp_path, salesforce=limits,
                                          admin_tokens=["admin-0123456789"])) as daemon:
            ocp = await client(http, daemon)
            chats = [f"b{i}" for i in range(8)]
            for chat in chats:
                await ocp.start(chat, profile="m_echo")
            depth = await wait_for(lambda: daemon.backends.get(
                "salesforce_messaging").tokens.depth, "a queue")  # type: ignore[attr-defined]
            assert depth > 0
            # Visible in /metrics and in the admin view while the burst waits.
            base = daemon.url.replace("ws://", "http://").removesuffix("/v1/chat")
            async with http.get(base + "/metrics") as response:
                metrics = await response.text()
            async with http.get(base + "/v1/chats", headers={
                    "Authorization": "Bearer admin-0123456789"}) as response:
                listed = (await response.json())["chats"]
            gauge = re.search(r"^bridged_messaging_token_queue_depth (\S+)$", metrics, re.M)
            assert gauge is not None and float(gauge.group(1)) > 0
            assert 'bridged_chats_live{backend="salesforce_messaging",state="token_queued"}' \
                in metrics
            assert {c["backend"] for c in listed} == {"salesforce_messaging"}
            assert "token_queued" in {c["state"] for c in listed}
            joined: set[str] = set()
            async with asyncio.timeout(20):
                while joined != set(chats):
                    frame = await ocp.next()
                    assert frame["type"] != "ended", frame
                    if frame["type"] == "agent_joined":
                        joined.add(frame["chat"])
            by_conversation = {c.salesforce_id: c.id for c in daemon.dispatcher.live.values()}
        tokens = requests(sim, "AccessToken")
        assert [t.status for t in tokens] == [200] * len(chats)  # never a 429
        created = sorted(sim.conversations.values(), key=lambda c: c.started_ms)
        order = [chats.index(by_conversation[c.id]) for c in created]
        # Three a window, in the order of the starts.
        assert [i // 3 for i in order] == sorted(i // 3 for i in order)


async def test_more_than_the_message_limit_is_paced_delivered_and_in_order(
        tmp_path: Path, http: aiohttp.ClientSession) -> None:
    async with messaging_simulator(messages_per_window=5, message_window_s=1.0) as sim:
        limits = {"messaging_message_limit": 5, "messaging_limit_window_s": 1.0}
        async with running_bridged(config(sim, tmp_path, salesforce=limits)) as daemon:
            ocp = await client(http, daemon)
            await ocp.start("c1", profile="m_manual")
            await ocp.expect("queued")
            ids = [f"v{i:02d}" for i in range(13)]
            for message_id in ids:
                await ocp.send({"type": "message", "chat": "c1", "id": message_id,
                                "text": f"text {message_id}"})
            for message_id in ids:
                await ocp.expect("delivered", id=message_id, timeout=15)
            metrics = daemon.metrics.render().decode()
            await ocp.send({"type": "end", "chat": "c1"})
            await ocp.expect("ended")
    sends = requests(sim, "SendMessage")
    assert [r.status for r in sends] == [202] * len(ids)  # never a 429
    texts = [json.loads(r.body)["message"]["staticContent"]["text"] for r in sends]
    assert texts == [f"text {i}" for i in ids]
    assert "error" not in types(ocp.received)
    waits = re.search(r"^bridged_messaging_pacing_waits_total (\S+)$", metrics, re.M)
    assert waits is not None and float(waits.group(1)) >= 1


async def test_both_backends_serve_at_once_in_one_bridged(
        msim: Simulator, tmp_path: Path, http: aiohttp.ClientSession) -> None:
    from bridged.simulators.liveagent import running_simulator as live_agent_simulator
    from tests.conftest import FAST as LIVE_AGENT_FAST
    from tests.conftest import bridged_config

    async with live_agent_simulator(LIVE_AGENT_FAST) as la:
        live = bridged_config(la, tmp_path)
        enhanced = config(msim, tmp_path)
        both = enhanced.__class__(**{
            **{f: getattr(enhanced, f) for f in enhanced.__struct_fields__},
            "profiles": {**live.profiles, **enhanced.profiles}})
        async with running_bridged(both) as daemon:
            ocp = await client(http, daemon)
            await ocp.start("la", profile="echo")
            await ocp.start("ec", profile="m_echo")
            await until(ocp, "agent_joined", chat="la")
            await until(ocp, "agent_joined", chat="ec")
            for chat in ("la", "ec"):
                await ocp.send({"type": "message", "chat": chat, "id": "v1",
                                "text": f"to {chat}"})
            await until(ocp, "agent_message", chat="la", text="Echo: to la")
            await until(ocp, "agent_message", chat="ec", text="Echo: to ec")
            admin = {c.id: c for c in daemon.dispatcher.live.values()}
            assert admin["ec"].salesforce_id == only_conversation(msim).id
            for chat in ("la", "ec"):
                await ocp.send({"type": "end", "chat": chat})
                await until(ocp, "ended", chat=chat, reason="client")
            metrics = daemon.metrics.render().decode()
    assert 'bridged_chats_started_total{backend="salesforce"} 1.0' in metrics
    assert 'bridged_chats_started_total{backend="salesforce_messaging"} 1.0' in metrics
    assert ('bridged_salesforce_requests_total{backend="salesforce_messaging",'
            'resource="access-token",status="200"} 1.0') in metrics
    assert len(la.sessions) == 1


async def test_no_access_token_and_no_message_text_in_any_log_line(
        msim: Simulator, tmp_path: Path, http: aiohttp.ClientSession,
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    async with running_bridged(config(msim, tmp_path)) as daemon:
        ocp = await client(http, daemon)
        await ocp.start("c1", profile="m_echo")
        await ocp.expect("agent_joined")
        await ocp.send({"type": "message", "chat": "c1", "id": "v1", "text": "secret-text-42"})
        await ocp.expect("agent_message")
        msim.drop_streams()  # a reconnection logs too
        msim.agent_says(only_conversation(msim).id, "agent-text-43")
        await ocp.expect("agent_message", text="agent-text-43")
        msim.expire_tokens()
        await ocp.expect("ended")
    (stream, *_) = msim.streams
    token = stream.headers.get("Authorization", stream.headers.get("authorization", ""))
    token = token.removeprefix("Bearer ")
    assert token.count(".") == 2  # a JWT
    logged = " ".join(repr(record.__dict__) for record in caplog.records)
    assert "chat_requested" in logged and "stream_lost" in logged
    for secret in (token, token.split(".")[1], "secret-text-42", "agent-text-43"):
        assert secret not in logged
    # The state file holds the token: readable by the service user only.
    assert (tmp_path / "state" / "chats.sqlite3").stat().st_mode & 0o777 == 0o600
    assert (tmp_path / "state").stat().st_mode & 0o777 == 0o700


async def test_a_silent_stream_counts_as_lost_and_is_reopened(
        tmp_path: Path, http: aiohttp.ClientSession) -> None:
    """No ping within messaging_stream_timeout_s: the stream is reopened, the chat goes on."""
    async with messaging_simulator(ping_interval_s=60.0) as sim, running_bridged(
            config(sim, tmp_path, salesforce={"messaging_stream_timeout_s": 0.3})) as daemon:
        ocp = await client(http, daemon)
        await ocp.start("c1", profile="m_manual")
        await ocp.expect("queued")
        await wait_for(lambda: len(sim.streams) >= 3, "reopened streams")
        sim.agent_joins(only_conversation(sim).id)
        sim.agent_says(only_conversation(sim).id, "still there")
        await ocp.expect("agent_message", text="still there")
        await ocp.send({"type": "end", "chat": "c1"})
        await ocp.expect("ended", reason="client")
    assert_one_stream_at_a_time(sim)
    assert [s.close_reason for s in list(sim.streams)[:2]] == ["client_gone"] * 2


async def test_a_crash_in_the_actor_ends_only_that_chat_and_closes_its_conversation(
        msim: Simulator, tmp_path: Path, http: aiohttp.ClientSession,
        monkeypatch: pytest.MonkeyPatch) -> None:
    from bridged.salesforce.messaging.protocol import MessagingSession

    real = MessagingSession.send_text

    def send_text(self: MessagingSession, ocp_id: str, text: str, *, now: float) -> None:
        if text == "crash":
            raise RuntimeError("a bug")
        real(self, ocp_id, text, now=now)

    monkeypatch.setattr(MessagingSession, "send_text", send_text)
    async with running_bridged(config(msim, tmp_path)) as daemon:
        ocp = await client(http, daemon)
        await ocp.start("c1", profile="m_echo")
        await ocp.start("c2", profile="m_echo")
        await until(ocp, "agent_joined", chat="c1")
        await until(ocp, "agent_joined", chat="c2")
        await ocp.send({"type": "message", "chat": "c1", "id": "v1", "text": "crash"})
        ended = await until(ocp, "ended", chat="c1")
        await ocp.send({"type": "message", "chat": "c2", "id": "v1", "text": "fine"})
        await until(ocp, "agent_message", chat="c2", text="Echo: fine")
        await wait_for(lambda: requests(msim, "CloseConversation"), "the farewell DELETE")
        crashed = daemon.dispatcher.finished.get("c1")
        conversation_id = crashed.salesforce_id if crashed is not None else None
    assert ended["reason"] == "failed" and "internal error" in ended["detail"]
    (close,) = requests(msim, "CloseConversation")
    assert close.status == 204
    if conversation_id is not None:
        assert close.conversation_id == conversation_id
    assert [c.is_open for c in msim.conversations.values()].count(False) == 1
