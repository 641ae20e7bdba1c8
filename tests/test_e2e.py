"""End to end: a real bridged, the real simulator on 127.0.0.1, real WebSocket clients."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import aiohttp

from bridged.ops.daemon import Daemon
from bridged.simulators.liveagent import Simulator
from tests.ocp_client import OcpClient

Connect = Callable[..., Awaitable[OcpClient]]


def session_of(sim: Simulator, visitor_name: str | None = None) -> object:
    (session,) = [s for s in sim.sessions.values()
                  if visitor_name is None or (s.init and s.init["visitorName"] == visitor_name)]
    return session


async def test_happy_path_with_default_texts_and_seq_numbering(
        ocp: Connect, sim: Simulator) -> None:
    client = await ocp()
    await client.start("chat-1", profile="echo")
    queued = await client.expect("queued")
    assert queued["seq"] == 1
    assert queued["position"] == 1
    assert queued["text"].startswith("You are in position: 1")
    joined = await client.expect("agent_joined")
    assert (joined["seq"], joined["agent"]) == (2, "Ada Agent")
    await client.send({"type": "message", "chat": "chat-1", "id": "m1", "text": "hello"})
    events = await client.events("chat-1", until="agent_message")
    assert events[0]["type"] == "delivered"
    assert events[0]["id"] == "m1"
    reply = events[-1]
    assert (reply["agent"], reply["text"]) == ("Ada Agent", "Echo: hello")
    await client.send({"type": "end", "chat": "chat-1"})
    ended = await client.expect("ended", chat="chat-1")
    assert ended["reason"] == "client"
    assert ended["text"] == "The agent has ended the chat."
    seqs = [e["seq"] for e in client.received if e.get("chat") == "chat-1"]
    assert seqs == list(range(1, len(seqs) + 1))
    (session,) = sim.sessions.values()
    assert session.visitor_messages == ["hello"]
    assert session.end_reason is not None


async def test_msgpack_and_no_subprotocol(ocp: Connect) -> None:
    packed = await ocp("bridged.v1+msgpack")
    assert packed.ws.protocol == "bridged.v1+msgpack"
    await packed.start("mp-1", profile="echo")
    assert (await packed.expect("agent_joined"))["chat"] == "mp-1"
    plain = await ocp(None)
    assert plain.ws.protocol is None
    await plain.start("plain-1", profile="echo")
    assert (await plain.expect("agent_joined"))["chat"] == "plain-1"


async def test_queue_positions_and_estimates(ocp: Connect) -> None:
    client = await ocp()
    await client.start("q-1", profile="queue")
    events = await client.events("q-1", until="agent_joined")
    queued = [e for e in events if e["type"] == "queued"]
    assert [e["position"] for e in queued] == [3, 2, 1]
    assert [e["wait_s"] for e in queued] == [90, 60, 30]
    assert queued[0]["text"] == "You are in position: 3\nEstimated wait time: 2 min"
    assert queued[2]["text"] == "You are in position: 1\nEstimated wait time: 1 min"


async def test_no_agent_available(ocp: Connect) -> None:
    client = await ocp()
    await client.start("na-1", profile="no_agent")
    ended = await client.expect("ended")
    assert ended["reason"] == "no_agent"
    assert ended["text"] == (
        "There is no agent available right now. Please contact us again later.")


async def test_request_failed_carries_the_reason(ocp: Connect) -> None:
    client = await ocp()
    await client.start("f-1", profile="fail")
    ended = await client.expect("ended")
    assert ended["reason"] == "failed"
    assert ended["text"] == "Chat request failed to Salesforce. Reason: InternalFailure"


async def test_agent_ends_the_chat(ocp: Connect) -> None:
    client = await ocp()
    await client.start("ae-1", profile="agent_ends")
    await client.expect("agent_message")  # the greeting
    await client.send({"type": "message", "chat": "ae-1", "id": "m1", "text": "ok"})
    ended = await client.expect("ended")
    assert ended["reason"] == "agent"
    assert ended["text"] == "The agent has ended the chat."
    # The id is free again.
    await client.start("ae-1", profile="echo")
    assert (await client.expect("agent_joined"))["seq"] == 2


async def test_messages_sent_before_the_agent_joined_arrive_in_order(
        ocp: Connect, sim: Simulator) -> None:
    client = await ocp()
    await client.start("early-1", profile="queue")
    for i in range(5):
        await client.send({"type": "message", "chat": "early-1", "id": f"m{i}",
                           "text": f"early {i}"})
    await client.expect("agent_joined")
    delivered = []
    while len(delivered) < 5:
        delivered.append((await client.expect("delivered"))["id"])
    assert delivered == [f"m{i}" for i in range(5)]
    (session,) = sim.sessions.values()
    assert session.visitor_messages == [f"early {i}" for i in range(5)]


async def test_prechat_details_and_visitor_name_reach_salesforce(
        ocp: Connect, sim: Simulator) -> None:
    client = await ocp()
    await client.start("pre-1", profile="echo", visitor_name="Ann Lee", ocpvars={"e": "a@b.c"},
                       config={"prechat_details": [
                           {"label": "Email", "value": "{{ocpvars:e}}",
                            "transcript_fields": ["Email__c"]}]})
    await client.expect("agent_joined")
    (session,) = sim.sessions.values()
    assert session.init["visitorName"] == "Ann Lee"
    assert session.init["prechatDetails"] == [{"label": "Email", "value": "a@b.c",
                                               "transcriptFields": ["Email__c"],
                                               "displayToAgent": True}]


async def test_a_message_resent_with_a_delivered_id_is_not_sent_twice(
        ocp: Connect, sim: Simulator) -> None:
    client = await ocp()
    await client.start("dup-1", profile="echo")
    await client.expect("agent_joined")
    message = {"type": "message", "chat": "dup-1", "id": "m1", "text": "once"}
    await client.send(message)
    first = await client.expect("delivered", id="m1")
    await client.send(message)
    second = await client.expect("delivered", id="m1")
    assert second["seq"] > first["seq"]
    (session,) = sim.sessions.values()
    assert session.visitor_messages == ["once"]


async def test_typing_reaches_salesforce(ocp: Connect, sim: Simulator) -> None:
    client = await ocp()
    await client.start("t-1", profile="manual")
    await client.expect("agent_joined")
    await client.send({"type": "typing", "chat": "t-1", "active": True})
    await client.send({"type": "message", "chat": "t-1", "id": "m1", "text": "x"})
    await client.expect("delivered")
    (session,) = sim.sessions.values()
    assert [e["type"] for e in session.visitor_events][:1] == ["ChasitorTyping"]


async def test_agent_typing_and_transfer(ocp: Connect, sim: Simulator) -> None:
    client = await ocp()
    await client.start("tr-1", profile="manual")
    await client.expect("agent_joined")
    (session,) = sim.sessions.values()
    sim.agent_typing(session.id, True)
    assert (await client.expect("agent_typing"))["active"] is True
    sim.agent_transfers(session.id, "Bob Builder")
    assert (await client.expect("transferred"))["agent"] == "Bob Builder"
    sim.agent_says(session.id, "Bob here")
    message = await client.expect("agent_message")
    assert message["text"] == "Bob here"


async def test_wrong_or_missing_token_gets_401(bridged: Daemon, http: aiohttp.ClientSession
                                               ) -> None:
    for headers in ({"Authorization": "Bearer wrong-token"}, {}):
        async with http.get(bridged.url.replace("ws://", "http://"), headers={
                **headers, "Connection": "Upgrade", "Upgrade": "websocket",
                "Sec-WebSocket-Version": "13", "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ=="},
        ) as response:
            assert response.status == 401


async def test_health_and_ready(bridged: Daemon, http: aiohttp.ClientSession) -> None:
    base = bridged.url.replace("ws://", "http://").removesuffix("/v1/chat")
    async with http.get(base + "/healthz") as response:
        assert response.status == 200
    async with http.get(base + "/readyz") as response:
        assert response.status == 200


async def test_many_chats_share_one_connection(ocp: Connect, sim: Simulator) -> None:
    client = await ocp()
    chats = [f"multi-{i}" for i in range(20)]
    for chat in chats:
        await client.start(chat, profile="echo")
    for chat in chats:
        await client.send({"type": "message", "chat": chat, "id": "m1", "text": chat})
    replies: dict[str, str] = {}
    async with asyncio.timeout(10):
        while len(replies) < len(chats):
            frame = await client.next()
            if frame["type"] == "agent_message":
                replies[frame["chat"]] = frame["text"]
    assert replies == {chat: f"Echo: {chat}" for chat in chats}
    assert sorted(m for s in sim.sessions.values() for m in s.visitor_messages) == sorted(chats)
