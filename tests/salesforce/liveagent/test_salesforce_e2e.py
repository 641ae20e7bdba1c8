"""Careful-client behaviour against the simulator: availability, polite starts, entities."""

from __future__ import annotations

import asyncio
from pathlib import Path

import aiohttp
from msgspec.structs import replace

from bridged.ops.daemon import Daemon
from bridged.salesforce.liveagent.protocol import HttpRequest, HttpResponse, Purpose
from bridged.salesforce.liveagent.transport import AiohttpTransport
from bridged.simulators.liveagent import Simulator
from tests.conftest import TOKEN, bridged_config, running_bridged
from tests.ocp_client import connect


async def test_availability_check_ends_no_agent_without_creating_a_session(
        sim: Simulator, tmp_path: Path, http: aiohttp.ClientSession) -> None:
    async with running_bridged(bridged_config(sim, tmp_path)) as daemon:
        client = await connect(http, daemon.url, TOKEN)
        await client.start("av-1", profile="no_agent", config={"check_availability": True})
        ended = await client.expect("ended")
        assert ended["reason"] == "no_agent"
        assert sim.sessions == {}  # no SessionId was ever asked for
        await client.start("av-2", profile="echo", config={"check_availability": True})
        assert (await client.expect("agent_joined"))["chat"] == "av-2"


class CountingTransport(AiohttpTransport):
    """Counts the session-creating calls in flight at once."""

    def __init__(self) -> None:
        super().__init__(1000)
        self.in_flight = 0
        self.most = 0

    async def exchange(self, base_url: str, request: HttpRequest, timeout: float) -> HttpResponse:
        creating = request.purpose in (Purpose.SESSION_ID, Purpose.CHASITOR_INIT)
        if creating:
            self.in_flight += 1
            self.most = max(self.most, self.in_flight)
            await asyncio.sleep(0.01)  # a slow Salesforce makes the burst pile up
        try:
            return await super().exchange(base_url, request, timeout)
        finally:
            if creating:
                self.in_flight -= 1


async def test_a_burst_of_starts_is_admitted_a_few_at_a_time(
        sim: Simulator, tmp_path: Path, http: aiohttp.ClientSession) -> None:
    config = bridged_config(sim, tmp_path)
    config = replace(config, salesforce=replace(config.salesforce, max_concurrent_starts=3))
    transport = CountingTransport()
    daemon = Daemon(config, transport=transport)
    await daemon.start()
    try:
        client = await connect(http, daemon.url, TOKEN)
        chats = [f"burst-{i}" for i in range(30)]
        for chat in chats:
            await client.start(chat, profile="echo")
        joined = set()
        async with asyncio.timeout(20):
            while len(joined) < len(chats):
                frame = await client.next()
                if frame["type"] == "agent_joined":
                    joined.add(frame["chat"])
        assert transport.most == 3
        assert daemon.backends.get("salesforce").start_gate.holders == 0  # type: ignore[attr-defined]
    finally:
        await daemon.stop()


async def test_prechat_entities_reach_salesforce_and_bad_ones_name_the_field(
        sim: Simulator, tmp_path: Path, http: aiohttp.ClientSession) -> None:
    async with running_bridged(bridged_config(sim, tmp_path)) as daemon:
        client = await connect(http, daemon.url, TOKEN)
        details = [{"label": "Email", "value": "{{ocpvars:email}}"}]
        entity = {"entity_name": "Contact", "save_to_transcript": "ContactId",
                  "entity_fields_maps": [{"field_name": "Email", "label": "Email",
                                          "do_find": True, "is_exact_match": True}]}
        await client.start("ent-1", profile="echo", ocpvars={"email": "a@b.c"}, config={
            "prechat_details": details, "prechat_entities": [entity]})
        await client.expect("agent_joined")
        (session,) = sim.sessions.values()
        assert session.init["prechatEntities"] == [{
            "entityName": "Contact", "saveToTranscript": "ContactId",
            "entityFieldsMaps": [{"fieldName": "Email", "label": "Email", "doFind": True,
                                  "isExactMatch": True, "doCreate": False}]}]
        assert session.init["prechatDetails"][0]["value"] == "a@b.c"
        bad = {**entity, "entity_fields_maps": [{"field_name": "Email", "label": "Mail"}]}
        await client.start("ent-2", profile="echo", config={
            "prechat_details": details, "prechat_entities": [bad]})
        error = await client.expect("error")
        assert error["code"] == "bad_config"
        assert error["detail"] == ("prechat_entities[0].entity_fields_maps[0].label: 'Mail' is"
                                   " not the label of a prechat detail")


async def test_one_stalled_salesforce_does_not_slow_another_chat(
        sim: Simulator, tmp_path: Path, http: aiohttp.ClientSession) -> None:
    # A second "Salesforce" that accepts connections and never answers.
    writers: list[asyncio.StreamWriter] = []
    stalled = await asyncio.start_server(lambda r, w: writers.append(w), "127.0.0.1", 0)
    port = stalled.sockets[0].getsockname()[1]
    try:
        async with running_bridged(bridged_config(sim, tmp_path)) as daemon:
            client = await connect(http, daemon.url, TOKEN)
            for i in range(5):
                await client.start(f"stuck-{i}", profile="echo", config={
                    "live_agent_base_url": f"http://127.0.0.1:{port}/chat"})
            await client.start("fine", profile="echo")
            await client.expect("agent_joined", chat="fine", timeout=5)
            for i in range(3):
                await client.send({"type": "message", "chat": "fine", "id": f"m{i}",
                                   "text": f"t{i}"})
                await client.expect("agent_message", chat="fine", text=f"Echo: t{i}")
            assert all(f"stuck-{i}" in daemon.dispatcher.live for i in range(5))
    finally:
        for writer in writers:
            writer.close()
        stalled.close()
        await stalled.wait_closed()
