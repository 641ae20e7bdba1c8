"""A chat's life is readable from the JSON log: one info line per step, no texts, no secrets.

A real chat end to end (bridged and the simulator on 127.0.0.1, the bot history fetched from a
fake OCP with a per-chat token): queued, an agent joins, messages both ways, a transfer, the
agent drops, the agent ends. The JSON lines bridged writes are captured as an operator reads
them.
"""

from __future__ import annotations

import io
import logging
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import msgspec
import pytest

from bridged.ops.logs import JsonFormatter
from bridged.simulators.liveagent import Simulator
from bridged.simulators.ocp_history import OcpHistoryService, running_history_service
from tests.conftest import TOKEN, bridged_config, running_bridged
from tests.ocp_client import connect

PAT = "pat-lifecycle-0123456789"
JWT = "jwt-lifecycle-0123456789"
HISTORY_TEXT = "Bot-history-text-7f3a"
VISITOR_TEXT = "Visitor-text-91c2"
AGENT_TEXT = "Agent-text-44d0"
STEPS = {"chat_started", "chat_queued", "agent_joined", "chat_transferred",
         "agent_disconnected", "chat_ended"}


@pytest.fixture
def json_log() -> Iterator[io.StringIO]:
    """bridged's log lines, formatted exactly as on stderr, at the default level (info)."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger("bridged")
    old_level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        yield stream
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old_level)


@pytest.fixture
async def history_url() -> AsyncIterator[str]:
    service = OcpHistoryService(bearer_tokens={JWT}, personal_access_tokens={PAT})
    service.set_history("ocp-session-1", {"messages": [
        {"role": "bot", "text": HISTORY_TEXT}, {"role": "user", "text": "I need a person"}]})
    async with running_history_service(service) as url:
        yield url


async def test_each_step_of_a_chat_is_one_json_line_without_texts_or_secrets(
        sim: Simulator, tmp_path: Path, http: aiohttp.ClientSession, history_url: str,
        json_log: io.StringIO) -> None:
    config = bridged_config(sim, tmp_path, history={"base_url": history_url,
                                                    "personal_access_token": PAT})
    async with running_bridged(config) as daemon:
        client = await connect(http, daemon.url, TOKEN)
        await client.start("life-1", profile="manual", history_session="ocp-session-1",
                           history_token=JWT)
        await client.expect("queued", chat="life-1")
        joined = await client.expect("agent_joined", chat="life-1")
        (session,) = sim.sessions.values()
        await client.send({"type": "message", "chat": "life-1", "id": "m1",
                           "text": VISITOR_TEXT})
        await client.expect("delivered", id="m1")
        sim.agent_says(session.id, AGENT_TEXT)
        await client.expect("agent_message", text=AGENT_TEXT)
        sim.agent_transfers(session.id, "Bob Builder")
        await client.expect("transferred", agent="Bob Builder")
        sim.agent_disconnects(session.id)
        sim.agent_ends(session.id)
        ended = await client.expect("ended", chat="life-1")
        await client.send({"type": "ack", "chat": "life-1", "seq": ended["seq"]})
        await client.close()
    text = json_log.getvalue()
    lines: list[dict[str, Any]] = [msgspec.json.decode(line) for line in text.splitlines()]
    steps = [line for line in lines if line["event"] in STEPS]
    assert [line["event"] for line in steps] == [
        "chat_started", "chat_queued", "agent_joined", "chat_transferred",
        "agent_disconnected", "chat_ended"]
    assert {line["chat"] for line in steps} == {"life-1"}
    assert {line["level"] for line in steps} == {"info"}
    by_event = {line["event"]: line for line in steps}
    assert by_event["chat_queued"]["position"] == 1
    assert by_event["agent_joined"]["agent"] == joined["agent"]
    assert by_event["chat_transferred"]["agent"] == "Bob Builder"
    assert by_event["chat_ended"]["reason"] == "agent"
    # Every line about the chat names it; none carries a text or a secret.
    assert any(line["event"] == "history_fetched" and line["chat"] == "life-1"
               for line in lines)
    for secret in (VISITOR_TEXT, AGENT_TEXT, HISTORY_TEXT, "I need a person", TOKEN, PAT, JWT,
                   session.key, session.key.split("!")[1], session.affinity_token):
        assert secret not in text, secret
