"""A chat id is free again the moment its ``ended`` went out, however fast OCP reuses it."""

from __future__ import annotations

from pathlib import Path

import aiohttp

from bridged.ops.daemon import Daemon
from bridged.simulators.liveagent import Simulator
from tests.conftest import TOKEN, bridged_config
from tests.ocp.test_drain import SlowToCancel
from tests.ocp_client import connect


async def test_end_then_start_of_one_id_in_a_tight_loop(
        sim: Simulator, tmp_path: Path, http: aiohttp.ClientSession) -> None:
    # Salesforce ends the session at once but answers the ChatEnd late, and cancelling that
    # request takes a while (as a TLS close may): the ``ended`` reaches OCP, and OCP's next
    # ``start`` of the id reaches bridged, while the old actor still winds down.
    transport = SlowToCancel(100)
    transport.released.set()
    daemon = Daemon(bridged_config(sim, tmp_path, max_chats=2), transport=transport)
    await daemon.start()
    try:
        client = await connect(http, daemon.url, TOKEN)
        bystander = await connect(http, daemon.url, TOKEN)
        await bystander.start("other", profile="echo")
        await bystander.expect("agent_joined")
        await client.start("again", profile="echo")
        for round_ in range(5):
            joined = await client.expect("agent_joined", chat="again")
            await client.send({"type": "message", "chat": "again", "id": f"m{round_}",
                               "text": f"round {round_}"})
            await client.expect("agent_message", chat="again", text=f"Echo: round {round_}")
            session = list(sim.sessions.values())[-1]
            sim.delay_next(session.id, "ChatEnd", 5.0)
            transport.released.clear()  # the next cancellation lingers
            await client.send({"type": "end", "chat": "again"})
            ended = await client.expect("ended", chat="again")
            assert ended["reason"] == "client" and ended["seq"] > joined["seq"]
            # At once: the old actor is still cancelling its ChatEnd.
            await client.start("again", profile="echo")
            answer = await client.next()
            assert (answer["type"], answer["chat"], answer["seq"]) == ("queued", "again", 1)
            assert session.end_reason == "client"
            transport.released.set()
        await client.expect("agent_joined", chat="again")
        # Nothing was left behind: max_chats (2) holds the bystander's chat and this one;
        # once this one ends, another id starts.
        await client.start("third", profile="echo")
        error = await client.expect("error", chat="third")
        assert error["code"] == "capacity"
        await client.send({"type": "end", "chat": "again"})
        await client.expect("ended", chat="again")
        await client.start("third", profile="echo")
        await client.expect("agent_joined", chat="third")
        # The connection stayed up all along, and the bystander never noticed.
        await bystander.send({"type": "message", "chat": "other", "id": "b", "text": "still"})
        await bystander.expect("agent_message", text="Echo: still")
    finally:
        transport.released.set()
        await daemon.stop()
