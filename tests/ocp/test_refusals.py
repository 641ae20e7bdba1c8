"""Every error code, end to end: the right code, the field named, and nobody else harmed."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path

import aiohttp
import msgspec
import pytest

from bridged.ops.daemon import Daemon
from bridged.simulators.liveagent import Simulator, SimulatorOptions, running_simulator
from tests.conftest import TOKEN, bridged_config, running_bridged
from tests.ocp_client import OcpClient, connect

Connect = Callable[..., Awaitable[OcpClient]]


async def test_bad_envelopes_get_errors_and_the_connection_and_other_chats_go_on(
        ocp: Connect) -> None:
    client = await ocp()
    other = await ocp()
    await other.start("bystander", profile="echo")
    await other.expect("agent_joined")
    await client.start("victim", profile="echo")
    await client.expect("agent_joined")
    bad = [
        ("not json", "bad_envelope", "frame: not valid JSON"),
        ("[1, 2]", "bad_envelope", "Expected `object`, got `array`"),
        ('{"type": "dance", "chat": "victim"}', "bad_envelope", "type: unknown envelope type"),
        ('{"type": "message", "chat": "victim", "id": "x"}', "bad_envelope",
         "text: Object missing required field `text`"),
        ('{"type": "message", "chat": "victim", "id": "x", "text": 1}', "bad_envelope",
         "text: Expected `str`, got `int`"),
        ('{"type": "start", "chat": "no spaces allowed"}', "bad_envelope", "chat: Expected `str`"),
        ('{"type": "attach", "chat": "victim"}', "bad_envelope",
         "after: Object missing required field `after`"),
        ('{"type": "message", "chat": "victim", "id": "x", "text": "'
         + "y" * 10001 + '"}', "too_large", "text: 10001 characters, at most 10000"),
        ('{"type": "message", "chat": "ghost", "id": "x", "text": "boo"}', "unknown_chat",
         "no such live chat"),
        ('{"type": "start", "chat": "victim", "profile": "echo"}', "chat_exists",
         "a live chat has this id"),
        ('{"type": "start", "chat": "nope", "profile": "absent"}', "bad_config",
         "profile: no profile named 'absent'"),
        ('{"type": "start", "chat": "nope"}', "bad_config", "live_agent_base_url: required"),
    ]
    for raw, code, detail in bad:
        await client.send_raw(raw)
        error = await client.expect("error")
        assert error["code"] == code, raw
        assert error["detail"].startswith(detail), (raw, error)
    await client.send_raw(b"\x81\xa4type\xa3ack")  # a binary frame on a JSON connection
    error = await client.expect("error")
    assert error["detail"] == "frame: bridged.v1+json takes text frames"
    # The connection still works, and so do both chats.
    await client.send({"type": "message", "chat": "victim", "id": "ok", "text": "still here"})
    assert (await client.expect("agent_message", chat="victim"))["text"] == "Echo: still here"
    await other.send({"type": "message", "chat": "bystander", "id": "ok", "text": "me too"})
    assert (await other.expect("agent_message"))["text"] == "Echo: me too"


async def test_error_names_the_chat_and_the_envelope(ocp: Connect) -> None:
    client = await ocp()
    await client.send({"type": "message", "chat": "ghost", "id": "m7", "text": "x"})
    error = await client.expect("error")
    assert (error["chat"], error["ref"]) == ("ghost", "m7")
    await client.send({"type": "end", "chat": "ghost"})
    error = await client.expect("error")
    assert (error["code"], error["chat"], error["ref"]) == ("unknown_chat", "ghost", "end")


async def test_not_attached_until_attach(ocp: Connect) -> None:
    owner = await ocp()
    stranger = await ocp()
    await owner.start("bound-1", profile="echo")
    await owner.expect("agent_joined")
    await stranger.send({"type": "message", "chat": "bound-1", "id": "m1", "text": "hi"})
    error = await stranger.expect("error")
    assert (error["code"], error["ref"]) == ("not_attached", "m1")
    await stranger.send({"type": "attach", "chat": "bound-1", "after": 0})
    assert (await stranger.expect("queued"))["seq"] == 1  # replayed
    await owner.send({"type": "message", "chat": "bound-1", "id": "m2", "text": "mine?"})
    assert (await owner.expect("error"))["code"] == "not_attached"


async def test_host_not_allowed(ocp: Connect) -> None:
    client = await ocp()
    await client.start("h-1", profile="echo", config={
        "live_agent_base_url": "https://{{ocpvars:pod}}/chat"}, ocpvars={"pod": "evil.example"})
    error = await client.expect("error")
    assert error["code"] == "host_not_allowed"
    assert "evil.example" in error["detail"]


async def test_capacity(sim: Simulator, tmp_path: Path, http: aiohttp.ClientSession) -> None:
    async with running_bridged(bridged_config(sim, tmp_path, max_chats=1)) as daemon:
        client = await connect(http, daemon.url, TOKEN)
        await client.start("c-1", profile="echo")
        await client.start("c-2", profile="echo")
        error = await client.expect("error")
        assert (error["code"], error["chat"]) == ("capacity", "c-2")


async def test_busy_when_the_chat_queue_is_full_and_other_chats_flow(
        tmp_path: Path, http: aiohttp.ClientSession) -> None:
    slow = SimulatorOptions(hold_s=0.5, client_poll_timeout=5, join_delay_s=30)
    async with running_simulator(slow) as sim, running_bridged(bridged_config(
            sim, tmp_path, mailbox_size=1, max_pending_messages=1)) as daemon:
        client = await connect(http, daemon.url, TOKEN)
        await client.start("full-1", profile="echo")
        await client.expect("queued")
        chat = daemon.dispatcher.live["full-1"]
        await client.send({"type": "message", "chat": "full-1", "id": "m0", "text": "0"})
        for _ in range(100):  # until the actor holds m0 (its one pending slot)
            if chat.pending_ids and not chat.inbox:
                break
            await asyncio.sleep(0.01)
        for i in (1, 2):  # m1 fills the inbox; m2 finds it full
            await client.send({"type": "message", "chat": "full-1", "id": f"m{i}",
                               "text": f"{i}"})
        error = await client.expect("error")
        assert (error["code"], error["ref"]) == ("busy", "m2")
        assert "NOT accepted" in error["detail"]
        # Another chat on the same connection is not held up.
        await client.start("full-2", profile="echo")
        assert (await client.expect("queued", chat="full-2"))["seq"] == 1


async def test_a_frame_over_max_frame_bytes_closes_with_1009(
        bridged: Daemon, http: aiohttp.ClientSession) -> None:
    client = await connect(http, bridged.url, TOKEN)
    await client.send_raw(msgspec.json.encode({"type": "message", "chat": "c", "id": "m",
                                               "text": "x" * 70000}).decode())
    msg = await client.ws.receive(timeout=5)
    assert msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED)
    assert client.ws.close_code == 1009


async def test_draining_refuses_new_chats_and_readyz_says_so(
        bridged: Daemon, ocp: Connect, http: aiohttp.ClientSession) -> None:
    client = await ocp()
    bridged.dispatcher.draining = True
    await client.start("late-1", profile="echo")
    error = await client.expect("error")
    assert (error["code"], error["chat"]) == ("capacity", "late-1")
    base = bridged.url.replace("ws://", "http://").removesuffix("/v1/chat")
    async with http.get(base + "/readyz") as response:
        assert response.status == 503
    async with http.get(base + "/healthz") as response:
        assert response.status == 200


async def test_capacity_rather_than_running_out_of_file_descriptors(
        bridged: Daemon, ocp: Connect, caplog: pytest.LogCaptureFixture) -> None:
    from bridged.ops.limits import fds_needed
    # A limit that fits exactly one chat on one connection, beyond the reserve.
    bridged.use_fd_limit(fds_needed(1, 1))
    assert "fd_limit_too_low" in caplog.text
    client = await ocp()
    await client.start("fd-1", profile="echo")
    await client.expect("queued")
    await client.start("fd-2", profile="echo")
    error = await client.expect("error")
    assert (error["code"], error["chat"]) == ("capacity", "fd-2")
    assert "open-file limit" in error["detail"]
