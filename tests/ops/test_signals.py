"""Signals on a real bridged process: SIGHUP reloads without dropping a chat; SIGTERM drains."""

from __future__ import annotations

import asyncio
import signal
import time
from pathlib import Path

import aiohttp

from tests.ocp_client import OcpClient, connect
from tests.processes import BridgedProcess, SimulatorProcess


async def wait_log(path: Path, text: str, timeout: float = 10) -> None:
    async with asyncio.timeout(timeout):
        while text not in path.read_text():
            await asyncio.sleep(0.05)


async def test_sighup_takes_new_tokens_refuses_a_bad_file_and_keeps_chats(
        tmp_path: Path, simulator: SimulatorProcess) -> None:
    bridged = await asyncio.to_thread(BridgedProcess, tmp_path, simulator)
    config = tmp_path / "bridged.toml"
    log = tmp_path / "bridged.log"
    try:
        async with aiohttp.ClientSession() as http:
            client = await connect(http, bridged.url, BridgedProcess.TOKEN)
            await client.start("hup-1", profile="echo")
            await client.expect("agent_joined")
            original = config.read_text()
            # A new token, added while running.
            config.write_text(original.replace(
                f'tokens = ["{BridgedProcess.TOKEN}"]',
                f'tokens = ["{BridgedProcess.TOKEN}", "second-token-987654"]'))
            bridged.signal(signal.SIGHUP)
            await wait_log(log, '"reloaded"')
            second = await connect(http, bridged.url, "second-token-987654")
            await second.start("hup-2", profile="echo")
            await second.expect("agent_joined")
            # A broken file is refused with one line; the running config stays.
            config.write_text(original.replace("detach_grace_s = 60", "detach_grace_s = -1"))
            bridged.signal(signal.SIGHUP)
            await wait_log(log, '"reload_refused"')
            refused = [line for line in log.read_text().splitlines() if "reload_refused" in line]
            assert len(refused) == 1 and "server.detach_grace_s" in refused[0]
            await connect(http, bridged.url, "second-token-987654")
            # No chat was dropped.
            await client.send({"type": "message", "chat": "hup-1", "id": "m", "text": "still"})
            await client.expect("agent_message", text="Echo: still")
    finally:
        bridged.stop()


async def test_sigterm_drains_keeps_chats_and_exits_0_within_10_s(
        tmp_path: Path, simulator: SimulatorProcess) -> None:
    bridged = await asyncio.to_thread(BridgedProcess, tmp_path, simulator)
    try:
        async with aiohttp.ClientSession() as http:
            clients = []
            for i in range(20):
                client = await connect(http, bridged.url, BridgedProcess.TOKEN)
                await client.start(f"term-{i}", profile="echo")
                clients.append(client)
            for client in clients:
                await client.expect("agent_joined")
            started = time.monotonic()
            bridged.signal(signal.SIGTERM)
            async def closed(client: OcpClient) -> int | None:
                msg = await client.ws.receive(timeout=10)
                while msg.type not in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED):
                    msg = await client.ws.receive(timeout=10)
                return client.ws.close_code

            # Every connection (each read at once, as OCP would) is closed with 1001.
            codes = await asyncio.gather(*(closed(client) for client in clients))
            assert set(codes) == {1001}
            code = await asyncio.to_thread(bridged.wait, 15)
            assert code == 0
            assert time.monotonic() - started < 10
        restarted = await asyncio.to_thread(BridgedProcess, tmp_path, simulator,
                                            port=bridged.port, name="bridged-2")
        try:
            log = (tmp_path / "bridged-2.log").read_text()
            assert '"chats_resumed"' in log and '"live":20' in log.replace(" ", "")
        finally:
            restarted.stop()
        records = await asyncio.to_thread(simulator.sessions)
        assert not any(r.get("ended") for r in records)  # none was ended toward Salesforce
    finally:
        bridged.stop()
