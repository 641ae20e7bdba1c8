"""Salesforce faults, injected by the simulator over real loopback: nothing lost, nothing twice.

Each test asserts on what OCP received and on what the simulator recorded.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import aiohttp
import pytest

from bridged.ops.daemon import Daemon
from bridged.simulators.liveagent import Simulator, SimulatorOptions, running_simulator
from bridged.simulators.liveagent.model import Session
from tests.conftest import FAST, TOKEN, bridged_config, running_bridged
from tests.ocp_client import OcpClient, connect


@pytest.fixture
async def sim2() -> AsyncIterator[Simulator]:
    """A simulator that also listens on a second port ("another Salesforce host")."""
    async with running_simulator(FAST, extra_ports=1) as simulator:
        yield simulator


async def wait_for(predicate: Callable[[], bool], timeout: float = 15.0) -> None:
    """Wait (bounded) until ``predicate()`` holds."""
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(0.01)


def sent(session: Session, resource: str, fault: str | None = None) -> bool:
    """Whether the simulator saw a request for ``resource`` (hit by ``fault``, if given)."""
    return any(r.path.endswith(resource) and (fault is None or r.fault == fault)
               for r in session.requests)


def polls_after(session: Session, fault: str) -> int:
    """How many polls the simulator saw after the one ``fault`` hit (-1: none was hit)."""
    labels = [r.fault for r in session.requests if r.path.endswith("Messages")]
    return len(labels) - 1 - labels.index(fault) if fault in labels else -1


async def joined_chat(daemon: Daemon, http: aiohttp.ClientSession, sim: Simulator,
                      chat: str, profile: str = "manual") -> tuple[OcpClient, Session]:
    client = await connect(http, daemon.url, TOKEN)
    await client.start(chat, profile=profile)
    await client.expect("agent_joined")
    session = list(sim.sessions.values())[-1]  # the newest: this chat's
    return client, session


async def converse(client: OcpClient, sim: Simulator, session: Session, chat: str,
                   rounds: int, during: object = None) -> tuple[list[str], list[str]]:
    """Visitor and agent talk in turns; returns (agent texts seen by OCP, ids delivered)."""
    agent_texts: list[str] = []
    delivered: list[str] = []
    for i in range(rounds):
        await client.send({"type": "message", "chat": chat, "id": f"v{i}", "text": f"visitor {i}"})
        sim.agent_says(session.id, f"agent {i}")
        if i == 0 and callable(during):
            during()
    async with asyncio.timeout(30):
        while len(agent_texts) < rounds or len(delivered) < rounds:
            frame = await client.next(timeout=30)
            if frame.get("chat") != chat:
                continue
            if frame["type"] == "agent_message":
                agent_texts.append(frame["text"])
            elif frame["type"] == "delivered":
                delivered.append(frame["id"])
            elif frame["type"] == "ended":
                raise AssertionError(f"the chat ended: {frame}")
            await client.send({"type": "ack", "chat": chat, "seq": frame["seq"]})
    return agent_texts, delivered


async def test_the_503_server_switch_loses_nothing_and_doubles_nothing(
        sim: Simulator, bridged: Daemon, http: aiohttp.ClientSession) -> None:
    client, session = await joined_chat(bridged, http, sim, "sw-1")
    sim.agent_says(session.id, "before the switch")
    await client.expect("agent_message", text="before the switch")
    agent_texts, delivered = await converse(
        client, sim, session, "sw-1", 8, during=lambda: sim.switch_server(session.id))
    assert agent_texts == [f"agent {i}" for i in range(8)]
    assert delivered == [f"v{i}" for i in range(8)]
    assert session.visitor_messages == [f"visitor {i}" for i in range(8)]
    assert session.switches == 1
    paths = [r.path.rsplit("/", 1)[-1] for r in session.requests]
    reconnect = paths.index("ReconnectSession")
    resync = paths.index("ChasitorResyncState")
    assert reconnect < resync  # and ChasitorSessionData was polled between (else 500)
    after = [r for r in session.requests[resync + 1:] if r.path.endswith("ChatMessage")]
    assert after and after[0].headers["X-LIVEAGENT-SEQUENCE"] == "1"


@pytest.mark.parametrize("when", ["before", "after"])
async def test_a_visitor_message_whose_connection_dropped_is_applied_once(
        sim: Simulator, bridged: Daemon, http: aiohttp.ClientSession, when: str) -> None:
    client, session = await joined_chat(bridged, http, sim, f"rst-{when}")
    sim.reset_next(session.id, "ChatMessage", when=when)
    await client.send({"type": "message", "chat": f"rst-{when}", "id": "m1", "text": "once"})
    await client.expect("delivered", id="m1", timeout=15)
    await client.send({"type": "message", "chat": f"rst-{when}", "id": "m2", "text": "twice?"})
    await client.expect("delivered", id="m2")
    assert session.visitor_messages == ["once", "twice?"]
    sent = [r.headers["X-LIVEAGENT-SEQUENCE"] for r in session.requests
            if r.path.endswith("ChatMessage")]
    assert sent[0] == sent[1]  # re-sent with the same number: Salesforce drops a duplicate


async def test_a_lost_poll_is_retried_without_a_duplicate_poll(
        sim: Simulator, bridged: Daemon, http: aiohttp.ClientSession) -> None:
    client, session = await joined_chat(bridged, http, sim, "poll-1")
    # aiohttp resends an idempotent GET once on a reused connection: two resets to be seen.
    sim.reset_next(session.id, "Messages", count=2, when="after")
    sim.agent_says(session.id, "you lost my poll")
    sim.agent_says(session.id, "still there?")
    first = await client.expect("agent_message", timeout=20)
    second = await client.expect("agent_message", timeout=20)
    assert [first["text"], second["text"]] == ["you lost my poll", "still there?"]
    assert session.end_reason is None  # no 409 duplicate poll ended it


async def test_server_errors_on_posts_are_retried_with_the_same_sequence(
        sim: Simulator, bridged: Daemon, http: aiohttp.ClientSession) -> None:
    client, session = await joined_chat(bridged, http, sim, "e500-1")
    sim.fail_next(session.id, "ChatMessage", 500, count=2)
    await client.send({"type": "message", "chat": "e500-1", "id": "m1", "text": "eventually"})
    await client.expect("delivered", id="m1", timeout=15)
    assert session.visitor_messages == ["eventually"]
    numbers = {r.headers["X-LIVEAGENT-SEQUENCE"] for r in session.requests
               if r.path.endswith("ChatMessage")}
    assert len(numbers) == 1


async def test_out_of_sync_realigns_the_sequence(
        sim: Simulator, bridged: Daemon, http: aiohttp.ClientSession) -> None:
    client, session = await joined_chat(bridged, http, sim, "oos-1")
    await client.send({"type": "message", "chat": "oos-1", "id": "m1", "text": "first"})
    await client.expect("delivered", id="m1")
    accepted = session.last_accepted
    # A 409 that claims one more accepted POST than there was: bridged takes Actual + 1,
    # the simulator answers with its own 409 (Actual is the truth), bridged takes that.
    sim.fail_next(session.id, "ChatMessage", 409,
                  f"Out of sync Ack. Expected {accepted + 1}. Actual {accepted + 1}")
    await client.send({"type": "message", "chat": "oos-1", "id": "m2", "text": "second"})
    await client.expect("delivered", id="m2", timeout=15)
    assert session.visitor_messages == ["first", "second"]


async def test_an_expired_session_ends_the_chat_saying_so(
        sim: Simulator, bridged: Daemon, http: aiohttp.ClientSession) -> None:
    client, session = await joined_chat(bridged, http, sim, "exp-1")
    sim.expire(session.id)
    ended = await client.expect("ended", timeout=15)
    assert ended["reason"] == "failed"
    assert ended["text"] == (
        "Chat request failed to Salesforce. Reason: the Salesforce session expired")


async def test_switch_server_moves_to_the_new_host(
        sim2: Simulator, tmp_path: Path, http: aiohttp.ClientSession) -> None:
    async with running_bridged(bridged_config(sim2, tmp_path)) as daemon:
        client, session = await joined_chat(daemon, http, sim2, "move-1")
        sim2.switch_server_url(session.id)  # to the second port
        await asyncio.sleep(0.2)
        await client.send({"type": "message", "chat": "move-1", "id": "m1", "text": "moved"})
        await client.expect("delivered", id="m1", timeout=15)
        last = session.requests[-1]
        assert last.port == sim2.ports[1]


async def test_switch_server_to_a_host_not_allowed_fails_the_chat(
        sim: Simulator, bridged: Daemon, http: aiohttp.ClientSession) -> None:
    client, session = await joined_chat(bridged, http, sim, "evil-1")
    sim.switch_server_url(session.id, "https://evil.example.com/chat")
    ended = await client.expect("ended", timeout=15)
    assert ended["detail"] == ("Salesforce moved the chat to https://evil.example.com/chat,"
                               " which salesforce.allowed_hosts does not allow")


@pytest.mark.parametrize("mode", ["reset", "503", "500", "refuse"])
async def test_an_outage_is_ridden_out(sim: Simulator, bridged: Daemon,
                                       http: aiohttp.ClientSession, mode: str) -> None:
    client, session = await joined_chat(bridged, http, sim, "out-1")
    sim.outage(1.0, mode=mode)
    await client.send({"type": "message", "chat": "out-1", "id": "m1", "text": "during"})
    await client.expect("delivered", id="m1", timeout=20)
    sim.agent_says(session.id, "back")
    await client.expect("agent_message", text="back", timeout=20)
    assert session.visitor_messages == ["during"]


async def test_sneak_peek_sends_the_draft(sim: Simulator, bridged: Daemon,
                                          http: aiohttp.ClientSession) -> None:
    client = await connect(http, bridged.url, TOKEN)
    await client.start("peek-1", profile="echo", config={"button_id": "573PEEK00000000"})
    await client.expect("agent_joined")
    await client.send({"type": "typing", "chat": "peek-1", "active": True, "text": "I ne"})
    await client.send({"type": "message", "chat": "peek-1", "id": "m1", "text": "I need"})
    await client.expect("delivered")
    (session,) = sim.sessions.values()
    peeks = [e for e in session.visitor_events if e["type"] == "ChasitorSneakPeek"]
    assert peeks and peeks[0]["text"] == "I ne"


async def test_every_server_message_type_is_understood_and_unknown_ones_skipped(
        sim: Simulator, bridged: Daemon, http: aiohttp.ClientSession) -> None:
    client, session = await joined_chat(bridged, http, sim, "types-1")
    for kind, message in [
        ("CustomEvent", {"type": "Hint", "data": "x"}),
        ("SensitiveDataRules", {"sensitiveDataRules": []}),
        ("TransferToButtonInitiated", {}),
        ("FileTransfer", {"type": "Requested", "uploadServletUrl": "u", "fileToken": "t",
                          "cdmServletUrl": "c"}),
        ("NewVisitorBreadcrumb", {"location": "https://example.com"}),
        ("SomethingFromTheFuture", {"a": 1}),
        ("AgentDisconnect", {}),
    ]:
        sim.push(session.id, kind, message)
    sim.agent_transfers(session.id, "Bea Backup")
    assert (await client.expect("transferred"))["agent"] == "Bea Backup"
    sim.agent_says(session.id, "Bea here")
    assert (await client.expect("agent_message"))["text"] == "Bea here"
    assert "types-1" in bridged.dispatcher.live  # AgentDisconnect did not end it


async def test_a_garbage_messages_body_fails_only_that_chat(
        sim: Simulator, bridged: Daemon, http: aiohttp.ClientSession) -> None:
    client, session = await joined_chat(bridged, http, sim, "junk-1")
    other, other_session = await joined_chat(bridged, http, sim, "fine-1")
    sim.fail_next(session.id, "Messages", 200, '{"messages": "not a list"}')
    sim.agent_says(session.id, "trigger")
    ended = await client.expect("ended", timeout=15)
    assert ended["reason"] == "failed"
    assert ended["detail"].startswith("Messages body is not the documented shape")
    sim.agent_says(other_session.id, "unaffected")
    assert (await other.expect("agent_message"))["text"] == "unaffected"


# --- issue 9: the remaining loss windows --------------------------------------------------


async def test_a_client_that_stops_acking_gets_every_agent_message_once_then_the_agents_end(
        sim: Simulator, tmp_path: Path, http: aiohttp.ClientSession) -> None:
    config = bridged_config(sim, tmp_path, max_held_events=16)
    async with running_bridged(config) as daemon:
        client = await connect(http, daemon.url, TOKEN)
        await client.start("bye-1", profile="manual")
        joined = await client.expect("agent_joined")
        await client.send({"type": "ack", "chat": "bye-1", "seq": joined["seq"]})
        chat = daemon.dispatcher.live["bye-1"]
        session = list(sim.sessions.values())[-1]
        # From now on the client acknowledges nothing; the agent says more than the bound.
        for i in range(20):
            sim.agent_says(session.id, f"agent {i}")
        await wait_for(lambda: not chat.has_room())
        # Then goodbye, and ends the chat: only a keep-alive poll can take that batch, and
        # Salesforce ends the session as it hands it over.
        sim.agent_says(session.id, "bye")
        sim.agent_ends(session.id)
        await wait_for(lambda: session.is_over)
        assert session.end_reason == "agent"
        # The client catches up, acknowledging everything.
        texts: list[str] = []
        async with asyncio.timeout(20):
            while True:
                frame = await client.next(timeout=20)
                if frame.get("chat") != "bye-1" or "seq" not in frame:
                    continue
                await client.send({"type": "ack", "chat": "bye-1", "seq": frame["seq"]})
                if frame["type"] == "agent_message":
                    texts.append(frame["text"])
                elif frame["type"] == "ended":
                    break
        assert texts == [f"agent {i}" for i in range(20)] + ["bye"]
        assert (frame["reason"], frame["text"]) == ("agent", "The agent has ended the chat.")


@pytest.mark.parametrize("status", [502, 504, 503])
async def test_a_gateway_answer_to_a_held_poll_does_not_lead_to_a_second_poll(
        tmp_path: Path, http: aiohttp.ClientSession, status: int) -> None:
    # The proxy answers at once while Salesforce holds the poll for its hold time (a 503 is
    # taken for a server switch first, until ReconnectSession says there was none).
    held = SimulatorOptions(hold_s=3, client_poll_timeout=5, join_delay_s=0.05,
                            reply_delay_s=0.02)
    async with running_simulator(held) as sim, running_bridged(
            bridged_config(sim, tmp_path)) as daemon:
        client, session = await joined_chat(daemon, http, sim, f"gw-{status}")
        await wait_for(lambda: session.poll_held)
        # The poll after the one that brings "trigger" is the one the proxy answers.
        sim.fail_next(session.id, "Messages", status, when="after")
        sim.agent_says(session.id, "trigger")
        await client.expect("agent_message", text="trigger")
        # Nothing is said until bridged polled again: a message would answer the held poll.
        await wait_for(lambda: polls_after(session, f"fail_{status}_after") > 0)
        assert session.end_reason is None  # no 409 duplicate
        sim.agent_says(session.id, "still here?")
        await client.expect("agent_message", text="still here?", timeout=15)
        assert session.end_reason is None
        assert [r.status for r in session.requests].count(409) == 0


@pytest.mark.parametrize("when", ["before", "after"])
async def test_a_503_to_chasitor_init_deletes_the_session_it_leaves_behind(
        sim: Simulator, bridged: Daemon, http: aiohttp.ClientSession, when: str) -> None:
    # "after": a proxy's 503 while ChasitorInit went on, a chat request queued for an agent.
    sim.fail_next(None, "ChasitorInit", 503, when=when)
    client = await connect(http, bridged.url, TOKEN)
    await client.start("init-503", profile="manual")
    ended = await client.expect("ended", timeout=15)
    assert (ended["reason"], ended["detail"]) == (
        "failed", "Salesforce moved the session before the chat began")
    (session,) = sim.sessions.values()
    assert (session.init is not None) == (when == "after")
    assert session.end_reason == "deleted"


async def test_a_chat_end_refused_with_500_deletes_the_session(
        sim: Simulator, bridged: Daemon, http: aiohttp.ClientSession) -> None:
    client = await connect(http, bridged.url, TOKEN)
    await client.start("end-500", profile="manual")
    await client.expect("queued")
    (session,) = sim.sessions.values()
    # D-GS: visitor activity before an agent joined is a NullPointerException, HTTP 500.
    sim.fail_next(session.id, "ChatEnd", 500, "java.lang.NullPointerException")
    await client.send({"type": "end", "chat": "end-500"})
    ended = await client.expect("ended", timeout=15)
    assert ended["reason"] == "client"
    assert session.end_reason == "deleted"  # not left waiting for an agent
    assert sent(session, "ChatEnd", "fail_500")


@pytest.mark.parametrize("arrived", [True, False])
async def test_a_restart_in_the_middle_of_a_switch_settles_the_unanswered_message(
        sim: Simulator, tmp_path: Path, http: aiohttp.ClientSession, arrived: bool) -> None:
    config = bridged_config(sim, tmp_path)
    async with running_bridged(config) as first:
        client, session = await joined_chat(first, http, sim, "mid-1")
        await client.send({"type": "message", "chat": "mid-1", "id": "m1", "text": "ok"})
        await client.expect("delivered", id="m1")
        # The same text again; its POST gets no answer (applied or not), nor do re-sends.
        sid = session.id
        sim.reset_next(sid, "ChatMessage", when="after" if arrived else "before")
        sim.reset_next(sid, "ChatMessage", count=100)
        await client.send({"type": "message", "chat": "mid-1", "id": "m2", "text": "ok"})
        await wait_for(lambda: sent(session, "ChatMessage", "reset_after" if arrived
                                    else "reset_before"))
        # Salesforce moves the session, and the new server is not ready yet when bridged
        # stops: the switch is half done.
        sim.fail_next(sid, "ReconnectSession", 503, count=1000)
        sim.switch_server(sid)
        await wait_for(lambda: sent(session, "ReconnectSession", "fail_503"))
        last_seen = max(f["seq"] for f in client.received if f.get("chat") == "mid-1")
    sim.clear_faults()
    async with running_bridged(config) as second:
        client = await connect(http, second.url, TOKEN)
        await client.send({"type": "attach", "chat": "mid-1", "after": last_seen})
        await client.expect("delivered", id="m2", timeout=20)
        await client.send({"type": "message", "chat": "mid-1", "id": "m3", "text": "done"})
        await client.expect("delivered", id="m3", timeout=15)
    assert session.visitor_messages == ["ok", "ok", "done"]
    assert session.switches == 1


async def test_payloads_with_missing_or_null_fields_keep_the_chat_going(
        sim: Simulator, bridged: Daemon, http: aiohttp.ClientSession) -> None:
    client, session = await joined_chat(bridged, http, sim, "sparse-1")
    sid = session.id
    sim.push(sid, "ChatMessage", {"name": None, "text": "a name of null"})
    sim.push(sid, "ChatMessage", {"name": "Ada", "agentId": "5b39e61e"})  # no text at all
    sim.push(sid, "AgentTyping", {"name": None, "agentId": None})
    sim.push(sid, "ChatTransferred", {"name": "Bea", "sneakPeekEnabled": None,
                                      "chasitorIdleTimeout": {"isEnabled": None}})
    sim.push(sid, "QueueUpdate", {"position": "second", "estimatedWaitTime": None})
    sim.push(sid, "SwitchServer", {"newUrl": None})
    sim.agent_says(sid, "after all that")
    sim.push(sid, "ChatEnded", {"attachedRecords": None})
    frames = await client.events("sparse-1", until="ended", timeout=15)
    assert [f["text"] for f in frames if f["type"] == "agent_message"] == [
        "a name of null", "after all that"]
    assert [f["agent"] for f in frames if f["type"] == "transferred"] == ["Bea"]
    assert frames[-1]["reason"] == "agent"
