"""A restart of bridged keeps live chats: stop, start again on the same state, attach."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from pathlib import Path

import aiohttp
import msgspec
import pytest

from bridged.chats.chat import BACKEND_LISTS, ChatRecord, ChatStatic
from bridged.ocp import envelopes as env
from bridged.simulators.liveagent import Simulator
from tests.conftest import FAST, TOKEN, bridged_config, running_bridged
from tests.ocp_client import connect


async def test_chats_survive_a_graceful_restart(
        sim: Simulator, tmp_path: Path, http: aiohttp.ClientSession) -> None:
    config = bridged_config(sim, tmp_path)
    async with running_bridged(config) as first:
        client = await connect(http, first.url, TOKEN)
        await client.start("keep-1", profile="manual")
        joined = await client.expect("agent_joined")
        await client.send({"type": "message", "chat": "keep-1", "id": "m1", "text": "before"})
        await client.expect("delivered", id="m1")
        last_seen = max(f["seq"] for f in client.received if f.get("chat") == "keep-1")
    # bridged is down; the agent goes on talking, Salesforce keeps the messages.
    (session,) = sim.sessions.values()
    sim.agent_says(session.id, "while you were away")
    sim.agent_says(session.id, "are you back?")
    async with running_bridged(config) as second:
        assert "keep-1" in second.dispatcher.live
        client = await connect(http, second.url, TOKEN)
        await client.send({"type": "attach", "chat": "keep-1", "after": last_seen})
        first_msg = await client.expect("agent_message", timeout=15)
        second_msg = await client.expect("agent_message")
        assert [first_msg["text"], second_msg["text"]] == ["while you were away",
                                                            "are you back?"]
        assert first_msg["seq"] == last_seen + 1 and second_msg["seq"] == last_seen + 2
        # A message already delivered before the restart is not sent again.
        await client.send({"type": "message", "chat": "keep-1", "id": "m1", "text": "before"})
        await client.expect("delivered", id="m1")
        await client.send({"type": "message", "chat": "keep-1", "id": "m2", "text": "after"})
        await client.expect("delivered", id="m2")
        assert session.visitor_messages == ["before", "after"]
        assert joined["seq"] < first_msg["seq"]
        await client.send({"type": "end", "chat": "keep-1"})
        ended = await client.expect("ended")
        await client.send({"type": "ack", "chat": "keep-1", "seq": ended["seq"]})
        async with asyncio.timeout(5):
            while "keep-1" in second.dispatcher.finished:
                await asyncio.sleep(0.01)
    async with running_bridged(config) as third:
        assert third.dispatcher.live == {} and third.dispatcher.finished == {}


@pytest.mark.parametrize("when", ["after_the_held_poll", "into_the_lost_poll"])
async def test_a_chat_ended_while_bridged_was_down_ends_with_a_clear_reason(
        sim: Simulator, tmp_path: Path, http: aiohttp.ClientSession, when: str) -> None:
    config = bridged_config(sim, tmp_path)
    async with running_bridged(config) as first:
        client = await connect(http, first.url, TOKEN)
        await client.start("dead-1", profile="manual")
        await client.expect("agent_joined")
        last_seen = max(f["seq"] for f in client.received if f.get("chat") == "dead-1")
    (session,) = sim.sessions.values()
    if when == "after_the_held_poll":
        # The poll the first process left behind has been answered (204) into the void.
        await asyncio.sleep(FAST.hold_s + 0.3)
    # Otherwise the ChatEnded goes out in the answer to the lost poll, and the session is
    # over before the next process can poll: it can only learn that the session is gone.
    sim.agent_ends(session.id)
    async with running_bridged(config) as second:
        client = await connect(http, second.url, TOKEN)
        await client.send({"type": "attach", "chat": "dead-1", "after": last_seen})
        ended = await client.expect("ended", timeout=15)
    if when == "after_the_held_poll":
        assert (ended["reason"], ended["text"]) == ("agent", "The agent has ended the chat.")
    else:
        assert ended["reason"] == "failed"
        assert ended["detail"] == "the Salesforce session expired while bridged was restarting"


async def test_a_chat_kept_by_an_earlier_version_resumes_whole_and_loses_its_token(
        sim: Simulator, tmp_path: Path, http: aiohttp.ClientSession) -> None:
    config = bridged_config(sim, tmp_path)
    async with running_bridged(config) as first:
        client = await connect(http, first.url, TOKEN)
        await client.start("old-1", profile="manual")
        await client.expect("agent_joined")
        (session,) = sim.sessions.values()
        for i in range(3):  # OCP acknowledges nothing: all held
            sim.agent_says(session.id, f"agent {i}")
            await client.expect("agent_message", text=f"agent {i}")
        path = first.store.path
    # Rewrite the kept chat as version 1 wrote it: events inline, a history_token in start.
    with contextlib.closing(sqlite3.connect(path)) as db, db:
        static, snapshot = db.execute(
            "SELECT static, snapshot FROM chats WHERE id = 'old-1'").fetchone()
        events = [msgspec.msgpack.decode(data, type=env.ChatEvent) for (data,) in db.execute(
            "SELECT data FROM items WHERE chat = 'old-1' AND list = 1 ORDER BY key")]
        record = ChatRecord.decode(snapshot)
        old_record = msgspec.structs.replace(
            record, version=1, chat=msgspec.structs.replace(record.chat, held=events))
        old_static = ChatStatic.decode(static)
        old_static = msgspec.structs.replace(old_static, start=msgspec.structs.replace(
            old_static.start, history_token="old-secret-token"))
        db.execute("UPDATE chats SET static = ?, snapshot = ? WHERE id = 'old-1'",
                   (old_static.encode(), msgspec.msgpack.encode(old_record)))
        db.execute("DELETE FROM items")
    async with running_bridged(config) as second:
        client = await connect(http, second.url, TOKEN)
        await client.send({"type": "attach", "chat": "old-1", "after": 0})
        replayed = await client.events("old-1", until="agent_message")
        replayed += [await client.expect("agent_message") for _ in range(2)]
        assert [e["type"] for e in replayed][-3:] == ["agent_message"] * 3
        assert [e["seq"] for e in replayed] == list(range(1, len(replayed) + 1))
        await client.send({"type": "message", "chat": "old-1", "id": "m1", "text": "after"})
        await client.expect("delivered", id="m1")
        assert await second.store.flush(5)
    with contextlib.closing(sqlite3.connect(path)) as db:
        (static,) = db.execute("SELECT static FROM chats WHERE id = 'old-1'").fetchone()
        kept = db.execute("SELECT count(*) FROM items WHERE chat = 'old-1' AND list = 1")
        assert kept.fetchone()[0] >= 3  # its events are kept item by item now
    assert ChatStatic.decode(static).start.history_token is None
    assert session.visitor_messages == ["after"]


async def test_a_parked_batch_is_kept_across_a_restart_and_delivered_once(
        sim: Simulator, tmp_path: Path, http: aiohttp.ClientSession) -> None:
    config = bridged_config(sim, tmp_path, max_held_events=16)
    async with running_bridged(config) as first:
        client = await connect(http, first.url, TOKEN)
        await client.start("park-1", profile="manual")
        await client.expect("agent_joined")
        (session,) = sim.sessions.values()
        chat = first.dispatcher.live["park-1"]
        for i in range(14):  # queued, agent_joined and these fill the bound: no acks
            sim.agent_says(session.id, f"agent {i}")
            await client.expect("agent_message", text=f"agent {i}")
        assert not chat.has_room()
        for i in range(14, 20):
            sim.agent_says(session.id, f"agent {i}")
        async with asyncio.timeout(15):  # a keep-alive poll parks what came meanwhile
            while not _kept_parked(first.store.path, "park-1"):
                await asyncio.sleep(0.05)
        assert len(chat.held) == 16  # the parked batch is not the chat's events (yet)
    async with running_bridged(config) as second:
        client = await connect(http, second.url, TOKEN)
        await client.send({"type": "attach", "chat": "park-1", "after": 0})
        texts: list[str] = []
        async with asyncio.timeout(20):
            while len(texts) < 20:
                frame = await client.next()
                if frame.get("chat") != "park-1" or "seq" not in frame:
                    continue
                if frame["type"] == "agent_message":
                    texts.append(frame["text"])
                await client.send({"type": "ack", "chat": "park-1", "seq": frame["seq"]})
        assert texts == [f"agent {i}" for i in range(20)]


def _kept_parked(path: Path, chat: str) -> bool:
    """Whether the store holds a parked batch for ``chat`` (the Live Agent list after the
    activity)."""
    with contextlib.closing(sqlite3.connect(path)) as db:
        row = db.execute("SELECT count(*) FROM items WHERE chat = ? AND list = ?",
                         (chat, BACKEND_LISTS + 1)).fetchone()
    return bool(row[0])
