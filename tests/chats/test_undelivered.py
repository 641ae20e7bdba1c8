"""Every ``message`` gets ``delivered`` or an ``error``, whatever happens to its connection or
its chat's actor: the errors for messages that could not be sent are held with the chat's
events, in their order, and replayed by ``attach``."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp

from bridged.ops.daemon import Daemon
from bridged.salesforce.liveagent.protocol import HttpRequest, HttpResponse
from bridged.salesforce.liveagent.transport import AiohttpTransport
from bridged.simulators.liveagent import Simulator, SimulatorOptions, running_simulator
from tests.conftest import TOKEN, bridged_config, running_bridged
from tests.ocp_client import OcpClient, connect

NO_AGENT_YET = SimulatorOptions(hold_s=0.5, client_poll_timeout=5, join_delay_s=600,
                                reply_delay_s=0.02)


async def wait_for(predicate: Callable[[], bool], timeout: float = 10.0) -> None:
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(0.01)


async def in_step(client: OcpClient) -> None:
    """Wait until bridged has read everything ``client`` sent so far (it answers in order)."""
    await client.send({"type": "ack", "chat": "sync-probe", "seq": 1})
    await client.expect("error", chat="sync-probe")


def answers(frames: list[dict[str, Any]]) -> list[tuple[str, Any]]:
    """What OCP learnt about each message, and the end, in the order it learnt it."""
    out: list[tuple[str, Any]] = []
    for frame in frames:
        if frame["type"] == "error":
            assert "seq" not in frame, frame  # an error carries no seq, replayed or not
            out.append((frame["code"], frame["ref"]))
        elif frame["type"] == "delivered":
            out.append(("delivered", frame["id"]))
        elif frame["type"] == "ended":
            out.append(("ended", frame["reason"]))
    return out


async def test_errors_for_a_detached_chat_are_held_and_replayed_on_attach(
        tmp_path: Path, http: aiohttp.ClientSession) -> None:
    async with running_simulator(NO_AGENT_YET) as sim, running_bridged(
            bridged_config(sim, tmp_path, detach_grace_s=1.0)) as daemon:
        client = await connect(http, daemon.url, TOKEN)
        await client.start("held-1", profile="echo")
        queued = await client.expect("queued")
        for i in range(3):  # held for the agent, who never comes
            await client.send({"type": "message", "chat": "held-1", "id": f"m{i}",
                               "text": f"{i}"})
        await in_step(client)
        await client.close()
        # Nobody attaches in time: the chat ends (toward Salesforce too), and its messages
        # can never be sent. No connection is bound at that moment.
        (session,) = sim.sessions.values()
        await wait_for(lambda: session.end_reason is not None)
        assert session.visitor_messages == []
        late = await connect(http, daemon.url, TOKEN)
        await late.send({"type": "attach", "chat": "held-1", "after": queued["seq"]})
        frames = await late.events("held-1", until="ended")
        assert answers(frames) == [("unknown_chat", "m0"), ("unknown_chat", "m1"),
                                   ("unknown_chat", "m2"), ("ended", "detached")]
        # Replayed again by another attach, until the ended event after them is acknowledged.
        again = await connect(http, daemon.url, TOKEN)
        await again.send({"type": "attach", "chat": "held-1", "after": queued["seq"]})
        frames = await again.events("held-1", until="ended")
        assert answers(frames) == [("unknown_chat", "m0"), ("unknown_chat", "m1"),
                                   ("unknown_chat", "m2"), ("ended", "detached")]
        await again.send({"type": "ack", "chat": "held-1", "seq": frames[-1]["seq"]})
        await again.send({"type": "attach", "chat": "held-1", "after": 0})
        assert (await again.expect("error", chat="held-1"))["code"] == "unknown_chat"


async def test_held_errors_are_kept_across_a_restart(
        tmp_path: Path, http: aiohttp.ClientSession) -> None:
    async with running_simulator(NO_AGENT_YET) as sim:
        config = bridged_config(sim, tmp_path, detach_grace_s=1.0)
        async with running_bridged(config) as first:
            client = await connect(http, first.url, TOKEN)
            await client.start("kept-1", profile="echo")
            queued = await client.expect("queued")
            await client.send({"type": "message", "chat": "kept-1", "id": "m0", "text": "0"})
            await in_step(client)
            await client.close()
            (session,) = sim.sessions.values()
            await wait_for(lambda: session.end_reason is not None)
            await wait_for(lambda: "kept-1" in first.dispatcher.finished)
        async with running_bridged(config) as second:
            client = await connect(http, second.url, TOKEN)
            await client.send({"type": "attach", "chat": "kept-1", "after": queued["seq"]})
            frames = await client.events("kept-1", until="ended")
            assert answers(frames) == [("unknown_chat", "m0"), ("ended", "detached")]


def small_receive_buffer(addr_info: Any) -> socket.socket:
    """A client socket whose kernel buffer holds little, so that a client that stops reading
    soon stalls bridged's writer (the kernel would otherwise take tens of megabytes)."""
    family, type_, proto, _, _ = addr_info
    sock = socket.socket(family=family, type=type_, proto=proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16384)
    return sock


async def test_errors_are_not_dropped_when_the_connection_is_behind(
        sim: Simulator, tmp_path: Path) -> None:
    config = bridged_config(sim, tmp_path, outbound_queue_size=1)
    connector = aiohttp.TCPConnector(socket_factory=small_receive_buffer)
    async with running_bridged(config) as daemon, aiohttp.ClientSession(
            connector=connector) as http:
        client = await connect(http, daemon.url, TOKEN)
        await client.start("behind-1", profile="manual")
        joined = await client.expect("agent_joined")
        (session,) = sim.sessions.values()
        sim.delay_next(session.id, "ChatMessage", 30.0)  # taken, but answered late
        for i in range(2):
            await client.send({"type": "message", "chat": "behind-1", "id": f"m{i}",
                               "text": f"{i}"})
        await in_step(client)
        # From now on the client reads nothing for a while: the agent's long messages fill
        # the socket, and bridged's writer for this connection blocks.
        chat = daemon.dispatcher.live["behind-1"]
        big = "x" * 60_000
        for i in range(150):
            sim.agent_says(session.id, f"{i} {big}")
        await wait_for(lambda: chat.durable_seq >= joined["seq"] + 150)
        # Its control queue (one frame) fills with the answer to a bad envelope.
        await client.send({"type": "ack", "chat": "ghost", "seq": 1})
        await wait_for(lambda: daemon.front.queue_depths()[0] == 1)
        # The agent ends the chat meanwhile: both messages are left unconfirmed.
        sim.agent_ends(session.id)
        await wait_for(lambda: "behind-1" not in daemon.dispatcher.live)
        # The client reads again: everything, the two messages' errors included.
        frames = await client.events("behind-1", until="ended", timeout=30)
        texts = [f["text"].split(" ")[0] for f in frames if f["type"] == "agent_message"]
        assert texts == [str(i) for i in range(150)]
        assert answers(frames) == [("unknown_chat", "m0"), ("unknown_chat", "m1"),
                                   ("ended", "agent")]


class CrashesOnAMessage(AiohttpTransport):
    """A bug in bridged, as far as the chat can tell: sending this text raises."""

    async def exchange(self, base_url: str, request: HttpRequest, timeout: float) -> HttpResponse:
        if request.path == "Chasitor/ChatMessage" and b"crash" in (request.body or b""):
            raise RuntimeError("boom")
        return await super().exchange(base_url, request, timeout)


async def test_a_crashed_chat_answers_every_message_and_ends_at_salesforce_too(
        tmp_path: Path, http: aiohttp.ClientSession) -> None:
    async with running_simulator(NO_AGENT_YET) as sim:
        daemon = Daemon(bridged_config(sim, tmp_path), transport=CrashesOnAMessage(100))
        await daemon.start()
        try:
            bystander = await connect(http, daemon.url, TOKEN)
            await bystander.start("fine", profile="echo")
            await bystander.expect("queued")
            client = await connect(http, daemon.url, TOKEN)
            await client.start("doomed", profile="manual")
            await client.expect("queued")
            for session in sim.sessions.values():
                sim.agent_joins(session.id)
            (doomed,) = [s for s in sim.sessions.values()
                         if s.init["buttonId"].startswith("573MAN")]
            # Held until the agent joins; the first one sent then crashes the actor.
            for i, text in enumerate(("crash", "then", "this")):
                await client.send({"type": "message", "chat": "doomed", "id": f"m{i}",
                                   "text": text})
            await in_step(client)
            frames = await client.events("doomed", until="ended")
            assert answers(frames) == [("unknown_chat", "m0"), ("unknown_chat", "m1"),
                                       ("unknown_chat", "m2"), ("ended", "failed")]
            assert frames[-1]["text"] == ("Chat request failed to Salesforce. Reason: internal"
                                          " error in bridged (RuntimeError)")
            # The agent is not left with a ghost chat: Salesforce was told it is over.
            await wait_for(lambda: doomed.end_reason is not None)
            assert (doomed.end_reason, doomed.visitor_messages) == ("client", [])
            # The other chat never noticed.
            await bystander.expect("agent_joined", chat="fine")
            await bystander.send({"type": "message", "chat": "fine", "id": "b", "text": "ok"})
            await bystander.expect("agent_message", text="Echo: ok")
        finally:
            await daemon.stop()
