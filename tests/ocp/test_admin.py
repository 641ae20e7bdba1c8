"""The admin view of live chats, and `bridged chats` against a real process."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import aiohttp
import pytest

from bridged.config.file import Config
from bridged.ocp.admin import ChatInfo, render_table
from bridged.simulators.liveagent import Simulator
from tests.conftest import TOKEN, bridged_config, cluster_config, running_bridged
from tests.ocp_client import connect
from tests.redis_server import RedisServer
from tests.test_cli import ROOT, free_port

ADMIN = "admin-token-0123456789"


async def test_admin_view_lists_chats_and_needs_the_admin_token(
        sim: Simulator, tmp_path: Path, http: aiohttp.ClientSession) -> None:
    async with running_bridged(bridged_config(sim, tmp_path, admin_tokens=[ADMIN])) as daemon:
        client = await connect(http, daemon.url, TOKEN)
        await client.start("adm-1", profile="echo")
        await client.expect("agent_joined")
        base = daemon.url.replace("ws://", "http://").removesuffix("/v1/chat")
        headers = {"Authorization": f"Bearer {ADMIN}"}
        async with http.get(base + "/v1/chats", headers=headers) as response:
            assert response.status == 200
            body = await response.json()
        (chat,) = body["chats"]
        assert (chat["id"], chat["state"], chat["agent"]) == ("adm-1", "chatting", "Ada Agent")
        assert chat["connection"].startswith("L")
        assert "node" not in chat and set(body) == {"chats", "count"}  # one node: as ever
        async with http.get(base + "/v1/chats/adm-1", headers=headers) as response:
            assert (await response.json())["id"] == "adm-1"
        async with http.get(base + "/v1/chats/none", headers=headers) as response:
            assert response.status == 404
        for wrong in ({"Authorization": f"Bearer {TOKEN}"}, {}):  # OCP's token is not admin
            async with http.get(base + "/v1/chats", headers=wrong) as response:
                assert response.status == 401


async def test_admin_view_is_off_without_admin_tokens(
        sim: Simulator, tmp_path: Path, http: aiohttp.ClientSession) -> None:
    async with running_bridged(bridged_config(sim, tmp_path)) as daemon:
        base = daemon.url.replace("ws://", "http://").removesuffix("/v1/chat")
        async with http.get(base + "/v1/chats",
                            headers={"Authorization": f"Bearer {TOKEN}"}) as response:
            assert response.status == 404


def test_render_table() -> None:
    info = ChatInfo(id="c1", state="waiting", agent=None, queue_position=3, age_s=75.0,
                    idle_s=2.0, connection=None, last_seq=4, held_events=4,
                    pending_messages=0, finished=False, backend="salesforce_messaging")
    assert render_table([info]) == (
        "CHAT  BACKEND    STATE    AGENT  QUEUE  AGE    IDLE  CONNECTION  SEQ  HELD\n"
        "c1    messaging  waiting  -      3      1m15s  2s    (detached)  4    4\n")


@pytest.mark.parametrize("token", [ADMIN, "wrong-token-123"])
def test_bridged_chats_command(tmp_path: Path, token: str) -> None:
    port = free_port()
    config = tmp_path / "bridged.toml"
    config.write_text(f'[server]\nlisten = "127.0.0.1:{port}"\ntokens = ["0123456789"]\n'
                      f'admin_tokens = ["{ADMIN}"]\n[state]\ndir = "{tmp_path / "s"}"\n')
    process = subprocess.Popen([sys.executable, "-m", "bridged", "run", "--config",
                                str(config)], cwd=ROOT, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1).close()
                break
            except OSError:
                assert time.monotonic() < deadline
                time.sleep(0.1)
        result = subprocess.run([sys.executable, "-m", "bridged", "chats", "--url",
                                 f"http://127.0.0.1:{port}", "--token", token],
                                capture_output=True, text=True, cwd=ROOT, timeout=30)
        if token == ADMIN:
            assert result.returncode == 0, result.stderr
            assert result.stdout.startswith("CHAT  BACKEND  STATE")
            assert result.stderr == "0 chats\n"
        else:
            assert result.returncode == 1
            assert "answered HTTP 401" in result.stderr
    finally:
        os.kill(process.pid, signal.SIGTERM)
        process.wait(timeout=15)


async def test_with_a_cluster_the_admin_view_lists_every_nodes_chats_with_its_holder(
        sim: Simulator, tmp_path: Path, http: aiohttp.ClientSession,
        redis_server: RedisServer) -> None:
    def node(name: str) -> Config:
        return cluster_config(bridged_config(sim, tmp_path / name, admin_tokens=[ADMIN]),
                              name, redis_server.url)

    async with running_bridged(node("a")) as a, running_bridged(node("b")) as b:
        clients = []  # kept open: the chats stay attached
        for daemon, chat in ((a, "on-a"), (b, "on-b")):
            client = await connect(http, daemon.url, TOKEN)
            clients.append(client)
            await client.start(chat, profile="echo")
            await client.expect("agent_joined")
            await client.send({"type": "ack", "chat": chat, "seq": 2})
        assert await a.store.flush(5) and await b.store.flush(5)
        base = a.url.replace("ws://", "http://").removesuffix("/v1/chat")
        headers = {"Authorization": f"Bearer {ADMIN}"}
        async with http.get(base + "/v1/chats", headers=headers) as response:
            assert response.status == 200
            body = await response.json()
        chats = {chat["id"]: chat for chat in body["chats"]}
        assert set(chats) == {"on-a", "on-b"} and body["next"] is None
        # This node's chat: everything; the other node's: what the store keeps, and its holder.
        assert (chats["on-a"]["node"], chats["on-a"]["holder_live"]) == ("a", True)
        assert chats["on-a"]["connection"].startswith("L")
        assert (chats["on-b"]["node"], chats["on-b"]["holder_live"]) == ("b", True)
        assert (chats["on-b"]["state"], chats["on-b"]["agent"]) == ("chatting", "Ada Agent")
        assert chats["on-b"]["connection"] is None and chats["on-b"]["idle_s"] is None
        assert chats["on-b"]["backend"] == "salesforce" and chats["on-b"]["last_seq"] >= 2
        assert sorted((n["node"], n["live"], n["chats"]) for n in body["nodes"]) == [
            ("a", True, 1), ("b", True, 1)]
        async with http.get(base + "/v1/chats/on-b", headers=headers) as response:
            assert (await response.json())["node"] == "b"
        # A page at a time: two pages of one chat, then none.
        async with http.get(base + "/v1/chats?limit=1", headers=headers) as response:
            first = await response.json()
        async with http.get(base + "/v1/chats", headers=headers,
                            params={"limit": "1", "after": first["next"]}) as response:
            second = await response.json()
        assert second["next"] is None
        assert {c["id"] for c in first["chats"] + second["chats"]} == {"on-a", "on-b"}
        for query, field in (("limit=0", "limit"), ("limit=x", "limit"),
                             ("after=nonsense", "after")):
            async with http.get(f"{base}/v1/chats?{query}", headers=headers) as response:
                assert response.status == 400
                assert (await response.text()).startswith(field)
        # The CLI shows both, with their holder, page after page.
        command = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "bridged", "chats", "--url", base, "--token", ADMIN,
            cwd=ROOT, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        out, err = await asyncio.wait_for(command.communicate(), 30)
        assert command.returncode == 0, err
        lines = out.decode().splitlines()
        assert lines[0].split()[-1] == "NODE"
        assert sorted(line.split()[0] + " " + line.split()[-1] for line in lines[1:]) == [
            "on-a a", "on-b b"]
        assert "node b (" in err.decode() and "2 chats" in err.decode()
        command = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "bridged", "chats", "--url", base, "--token", ADMIN,
            "--limit", "1", cwd=ROOT, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE)
        out, err = await asyncio.wait_for(command.communicate(), 30)
        assert command.returncode == 0, err
        assert len(out.decode().splitlines()) == 2 and err.decode().endswith("1 chats\n")
        # b's lease gone (it froze): the chat shows it, until a node takes it over.
        await b.store.client.delete("b:node:b")
        for task in b.store._tasks:  # b stops renewing: frozen
            task.cancel()
        if a.cluster is not None:
            await a.cluster.aclose()  # nobody takes it over meanwhile
        async with http.get(base + "/v1/chats/on-b", headers=headers) as response:
            assert (await response.json())["holder_live"] is False
        redis_server.stop()  # the store gone: a clear 503, no traceback
        for path in ("/v1/chats", "/v1/chats/on-b"):
            async with http.get(base + path, headers=headers) as response:
                assert response.status == 503
                assert (await response.text()).startswith("the shared store did not answer")
