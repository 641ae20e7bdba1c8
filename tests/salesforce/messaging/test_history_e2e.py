"""The bot's history through Enhanced Chat: the first visitor messages and a hidden field."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from bridged.simulators.ocp_history import OcpHistoryService, running_history_service
from tests.conftest import running_bridged
from tests.ocp_client import connect
from tests.salesforce.messaging.e2e import (
    ORG15,
    TOKEN,
    config,
    messaging_simulator,
    only_conversation,
    requests,
)

PAT = "pat-0123456789"
HISTORY = {"messages": [
    {"role": "bot", "text": "Hello, how can I help?"},
    {"role": "user", "text": "My card is blocked"},
    {"role": "assistant", "text": "Let me get a person for you."},
]}
LINES = ("Bot: Hello, how can I help?\nVisitor: My card is blocked\n"
         "Bot: Let me get a person for you.")


@pytest.fixture
async def ocp_history() -> AsyncIterator[tuple[OcpHistoryService, str]]:
    service = OcpHistoryService(personal_access_tokens={PAT})
    async with running_history_service(service) as url:
        yield service, url


async def test_the_history_reaches_the_agent_first_and_in_the_hidden_field(
        tmp_path: Path, ocp_history: tuple[OcpHistoryService, str]) -> None:
    service, url = ocp_history
    service.set_history("h-1", HISTORY)
    async with messaging_simulator() as sim:
        profiles = {"with_history": {
            "type": "salesforce_messaging", "scrt_url": sim.base_url, "organization_id": ORG15,
            "es_developer_name": "Sim_Manual", "routing_attributes": {"_firstName": "Ann"},
            "history_routing_attribute": "BotHistory"}}
        history = {"base_url": url, "personal_access_token": PAT, "timeout_s": 2}
        async with aiohttp.ClientSession() as http, running_bridged(
                config(sim, tmp_path, profiles=profiles, history=history)) as daemon:
            ocp = await connect(http, daemon.url, TOKEN)
            await ocp.start("h-1", profile="with_history")
            await ocp.send({"type": "message", "chat": "h-1", "id": "v1", "text": "hi agent"})
            await ocp.expect("delivered", id="v1")
            sim.agent_joins(only_conversation(sim).id)
            await ocp.expect("agent_joined")
            await ocp.send({"type": "end", "chat": "h-1"})
            await ocp.expect("ended")
        conversation = only_conversation(sim)
    assert conversation.routing_attributes == {"_firstName": "Ann", "BotHistory": LINES}
    sent = [json.loads(r.body)["message"]["staticContent"]["text"]
            for r in requests(sim, "SendMessage")]
    assert sent == ["Conversation with the bot before this chat:\n" + LINES, "hi agent"]
    # The history is bridged's, not OCP's: no delivered for it, one for the visitor.
    assert [f["id"] for f in ocp.received if f["type"] == "delivered"] == ["v1"]
    assert "agent_message" not in [f["type"] for f in ocp.received]
