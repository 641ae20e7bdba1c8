"""What the state store is handed: what changed, never the chat's secrets for OCP.

A chat may hold a thousand events OCP has not acknowledged, and hundreds of visitor messages
(or a long bot history) waiting for an agent: a save writes what changed since the last one,
not all of that again. OCP's per-chat ``history_token`` is used once and never written.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import aiohttp
import msgspec

from bridged.ops.daemon import Daemon
from bridged.simulators.liveagent import Simulator, running_simulator
from bridged.simulators.ocp_history import OcpHistoryService, running_history_service
from tests.conftest import FAST, TOKEN, bridged_config, running_bridged
from tests.ocp_client import connect

JWT = "eyJhbGciOiJIUzI1NiJ9.per-chat-history-token.c2lnbmF0dXJl"


def record_saves(daemon: Daemon) -> list[int]:
    """Bytes handed to the store by each save (snapshot, unchanging part and list items)."""
    sizes: list[int] = []
    save = daemon.store.save

    def recording(chat_id: str, snapshot: bytes, *args: Any, **kwargs: Any) -> None:
        size = len(snapshot) + len(kwargs.get("static") or b"")
        size += sum(len(data) for _, _, data in kwargs.get("items", ()))
        sizes.append(size)
        save(chat_id, snapshot, *args, **kwargs)

    daemon.store.save = recording  # type: ignore[method-assign]
    return sizes


async def test_a_save_with_hundreds_of_events_held_writes_only_the_new_one(
        sim: Simulator, tmp_path: Path, http: aiohttp.ClientSession) -> None:
    async with running_bridged(bridged_config(sim, tmp_path)) as daemon:
        client = await connect(http, daemon.url, TOKEN)
        await client.start("held-1", profile="manual")
        await client.expect("agent_joined")
        (session,) = sim.sessions.values()
        sizes = record_saves(daemon)
        marks = []
        for i in range(300):  # OCP acknowledges nothing: every event stays held
            sim.agent_says(session.id, f"agent {i:03d} " + "x" * 300)
            await client.expect("agent_message", text=f"agent {i:03d} " + "x" * 300)
            marks.append(len(sizes))
        early = max(sizes[marks[4]:marks[14]])
        late = max(sizes[marks[-11]:marks[-1]])
        assert len(daemon.dispatcher.live["held-1"].held) >= 300
    # Held 300 events of 300 bytes (90 KB): the save of the last is the size of the first.
    assert late <= early + 64, (early, late)


async def test_a_save_while_messages_wait_for_an_agent_does_not_write_them_again(
        tmp_path: Path, http: aiohttp.ClientSession) -> None:
    # The queue moves only when the test says so: the agent never joins by itself.
    options = msgspec.structs.replace(FAST, queue_step_s=600)
    texts = [f"visitor {i:03d} " + "y" * 2000 for i in range(100)]  # 200 KB, held for an agent
    async with running_simulator(options) as sim:
        config = bridged_config(sim, tmp_path)
        async with running_bridged(config) as daemon:
            client = await connect(http, daemon.url, TOKEN)
            await client.start("wait-1", profile="queue")
            await client.expect("queued")
            (session,) = sim.sessions.values()
            for i, text in enumerate(texts):
                await client.send({"type": "message", "chat": "wait-1", "id": f"m{i}",
                                   "text": text})
            chat = daemon.dispatcher.live["wait-1"]
            async with asyncio.timeout(10):  # all taken in by the session, and kept
                while len(chat.pending_ids) < 100 or chat.inbox:
                    await asyncio.sleep(0.01)
            assert await daemon.store.flush(5)
            sizes = record_saves(daemon)
            for position in (9, 8, 7):
                sim.queue_update(session.id, position, 60)
                await client.expect("queued", position=position)
            assert await daemon.store.flush(5)
            last_seen = client.received[-1]["seq"]
        assert sizes and max(sizes) < sum(map(len, texts)) / 100, max(sizes)
        # Kept item by item, they are all there after a restart, and reach the agent once.
        async with running_bridged(config) as daemon:
            client = await connect(http, daemon.url, TOKEN)
            await client.send({"type": "attach", "chat": "wait-1", "after": last_seen})
            sim.agent_joins(session.id)
            for i in range(100):
                await client.expect("delivered", id=f"m{i}")
        assert session.visitor_messages == texts


async def test_the_history_token_never_reaches_the_state_database(
        sim: Simulator, tmp_path: Path, http: aiohttp.ClientSession) -> None:
    service = OcpHistoryService(bearer_tokens={JWT})
    service.set_history("tok-1", [{"role": "bot", "text": "Hello"}])
    async with running_history_service(service) as url:
        config = bridged_config(sim, tmp_path, history={"base_url": url, "timeout_s": 2})
        async with running_bridged(config) as daemon:
            client = await connect(http, daemon.url, TOKEN)
            await client.start("tok-1", profile="echo", history_token=JWT)
            await client.expect("agent_joined")
            await client.send({"type": "message", "chat": "tok-1", "id": "m1", "text": "hi"})
            await client.expect("agent_message", text="Echo: hi")
            assert [request.auth for request in service.requests] == ["bearer"]  # it was used
            assert await daemon.store.flush(5)
            while_running = {path.name: path.read_bytes() for path in daemon.store.path.parent
                             .iterdir()}
    after = {path.name: path.read_bytes() for path in daemon.store.path.parent.iterdir()}
    files = [*while_running.items(), *after.items()]
    assert any(b"tok-1" in data for _, data in files)  # the chat was kept there
    for name, data in files:
        assert JWT.encode() not in data, name
