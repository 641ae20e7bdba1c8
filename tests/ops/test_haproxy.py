"""The HAProxy example (conf/haproxy/bridged.cfg) agrees with bridged, and HAProxy runs it.

What the load balancer relies on is checked against a live bridged with the default config:
the servers' port is ``server.listen``'s, the health check's path answers 200 on a ready
node, the one path let through is the WebSocket OCP connects to, and the tunnel outlives
bridged's heartbeat. ``haproxy -c`` (Debian's ``haproxy`` package; ``.ci/run`` installs it)
checks the file itself; without it the tests fail. And the file itself (only its addresses
and certificate changed) runs a real HAProxy in front of two real bridged nodes on one Redis:
a node cut off from Redis is marked down by its ``/readyz``, its connections are cut, and OCP,
connecting again through HAProxy, lands on the other node and its chat goes on there.
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import signal
import subprocess
from pathlib import Path

import aiohttp

from bridged.config.file import ServerConfig, split_listen
from bridged.ops.daemon import Daemon
from tests.conftest import TOKEN
from tests.ocp_client import OcpClient, connect
from tests.ops.test_processes import Conversation, say, visitor
from tests.processes import ROOT, BridgedProcess, SimulatorProcess, free_port, wait_http
from tests.redis_server import RedisServer
from tests.test_cluster_e2e import Relay, status

HAPROXY = ROOT / "conf" / "haproxy" / "bridged.cfg"
_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}


def directives() -> list[list[str]]:
    """Every directive of the file, as words (comments and blank lines left out)."""
    lines = (line.split("#", 1)[0].split() for line in example_text().splitlines())
    return [words for words in lines if words]


def example_text() -> str:
    return HAPROXY.read_text(encoding="utf-8")


def seconds(text: str) -> float:
    number, unit = re.fullmatch(r"(\d+)(ms|s|m|h|d)?", text).groups()  # type: ignore[union-attr]
    return int(number) * _UNITS[unit or "ms"]


def one(*prefix: str) -> list[str]:
    """The one directive that starts with ``prefix``."""
    found = [words for words in directives() if words[:len(prefix)] == list(prefix)]
    assert len(found) == 1, (prefix, found)
    return found[0]


async def test_the_load_balancer_example_matches_bridged(
        bridged: Daemon, http: aiohttp.ClientSession) -> None:
    defaults = ServerConfig()
    servers = [words for words in directives() if words[0] == "server"]
    assert len(servers) == 2  # two nodes
    _, port = split_listen(defaults.listen)
    for server in servers:
        assert server[2].rpartition(":")[2] == str(port), server  # server.listen's port
        assert "check" in server[3:]
    # The health check asks /readyz and wants 200: what a ready node answers.
    check = one("http-check", "send")
    path = check[check.index("uri") + 1]
    assert one("http-check", "expect") == ["http-check", "expect", "status", "200"]
    base = bridged.url.replace("ws://", "http://").removesuffix("/v1/chat")
    async with http.get(base + path) as response:
        assert (path, response.status) == ("/readyz", 200)
    bridged.dispatcher.draining = True  # as on SIGTERM: the load balancer must see it
    async with http.get(base + path) as response:
        assert response.status == 503
    bridged.dispatcher.draining = False
    # The one path let through is OCP's WebSocket.
    deny = one("http-request", "deny")
    allowed = deny[deny.index("path") + 1]
    assert bridged.url.endswith(allowed)
    async with http.ws_connect(base.replace("http://", "ws://") + allowed,
                               headers={"Authorization": f"Bearer {TOKEN}"}) as socket:
        assert (await socket.receive_json(timeout=5))["type"] == "hello"
    # An upgraded connection outlives bridged's pings by far; no stickiness is needed.
    assert seconds(one("timeout", "tunnel")[2]) >= 10 * defaults.heartbeat_s
    assert one("balance")[1] == "leastconn"
    words = {w[0] for w in directives()}
    assert not words & {"stick", "stick-table", "cookie", "hash-type"}
    assert "shutdown-sessions" in one("default-server")


def haproxy_binary() -> str:
    haproxy = shutil.which("haproxy")
    assert haproxy, ("haproxy is not installed: apt-get install haproxy (Debian's package;"
                     " .ci/run installs it when it is missing)")
    return haproxy


def certificate(tmp_path: Path) -> Path:
    """A self-signed certificate and its key in one PEM file, as HAProxy's ``crt`` wants."""
    key, cert = tmp_path / "key.pem", tmp_path / "cert.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                    "-subj", "/CN=bridged.example.com", "-keyout", str(key), "-out",
                    str(cert)], check=True, capture_output=True, timeout=60)
    pem = tmp_path / "bridged.pem"
    pem.write_text(cert.read_text() + key.read_text())
    return pem


def the_example_with(pem: Path, bind: str | None = None,
                     servers: dict[str, str] | None = None) -> str:
    """The example with only its certificate, listening address and servers' addresses changed."""
    text = example_text()
    assert "/etc/haproxy/certs/bridged.pem" in text
    text = text.replace("/etc/haproxy/certs/bridged.pem", str(pem))
    if bind is not None:
        text, n = re.subn(r"(?m)^(\s+bind) :443 ", rf"\1 {bind} ", text)
        assert n == 1
    for name, address in (servers or {}).items():
        text, n = re.subn(rf"(?m)^(\s+server {name}) \S+ ", rf"\1 {address} ", text)
        assert n == 1
    return text


def test_haproxy_accepts_the_example(tmp_path: Path) -> None:
    config = tmp_path / "haproxy.cfg"
    config.write_text(the_example_with(certificate(tmp_path)))
    result = subprocess.run([haproxy_binary(), "-c", "-f", str(config)], capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "ALERT" not in result.stdout + result.stderr


async def follow_until_closed(conversation: Conversation, client: OcpClient) -> None:
    """Read (and ack) the chat's events until the connection is closed under us (bounded)."""
    async with asyncio.timeout(30):
        while not client.closed:
            try:
                frame = await client.next(timeout=30)
            except AssertionError:  # closed
                return
            if frame.get("chat") == conversation.chat and "seq" in frame:
                assert frame["seq"] == conversation.last_seq + 1, frame
                conversation.last_seq = frame["seq"]
                if frame["type"] == "agent_message":
                    conversation.agent_texts.append(frame["text"])
                elif frame["type"] == "delivered":
                    conversation.delivered.append(frame["id"])
                await client.send({"type": "ack", "chat": conversation.chat,
                                   "seq": frame["seq"]})


async def test_behind_haproxy_a_node_cut_off_from_redis_hands_ocp_to_the_other_node(
        tmp_path: Path, simulator: SimulatorProcess, redis_server: RedisServer) -> None:
    relays = {name: Relay(redis_server.port) for name in "ab"}
    nodes: dict[str, BridgedProcess] = {}
    proxy: subprocess.Popen[bytes] | None = None
    port = free_port()
    # Made before the nodes start: openssl's key generation, on this loop, would stall the
    # relays that carry the nodes' Redis traffic, and a busy machine then lets their leases
    # run out (seen once, suite on 2 workers: no agent_joined).
    pem = await asyncio.to_thread(certificate, tmp_path)
    try:
        for name, relay in relays.items():
            await relay.start()
            nodes[name] = await asyncio.to_thread(
                BridgedProcess, tmp_path, simulator, name=f"node-{name}", node=name,
                redis_url=relay.url)
        config = tmp_path / "haproxy.cfg"
        config.write_text(the_example_with(
            pem, bind=f"127.0.0.1:{port}",
            servers={name: f"127.0.0.1:{node.port}" for name, node in nodes.items()}))
        with (tmp_path / "haproxy.log").open("wb") as log:
            proxy = subprocess.Popen([haproxy_binary(), "-db", "-f", str(config)],
                                     stdout=log, stderr=subprocess.STDOUT)
        url = f"wss://127.0.0.1:{port}/v1/chat"
        # Only /v1/chat goes through: the nodes' other endpoints stay on their own addresses.
        await asyncio.to_thread(wait_http, f"http://127.0.0.1:{nodes['a'].port}/readyz")
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=False)) as http:
            async with asyncio.timeout(20):
                while True:  # until HAProxy listens
                    try:
                        client = await connect(http, url, BridgedProcess.TOKEN)
                        break
                    except aiohttp.ClientError:
                        await asyncio.sleep(0.1)
            async with http.get(f"https://127.0.0.1:{port}/readyz") as response:
                assert response.status == 404
            held_by = client.received[0]["node"]  # hello: the node HAProxy chose
            talk = Conversation("lb-1")
            talk.client = client
            await client.start("lb-1", profile="manual")
            talk.last_seq = (await client.expect("agent_joined"))["seq"]
            (summary,) = await asyncio.to_thread(simulator.sessions)
            talk.session_id = summary["id"]
            await visitor(talk, "v0", "visitor 0")
            await say(simulator, talk, "agent 0")
            await talk.pump(lambda c: c.agent_texts == ["agent 0"] and c.delivered == ["v0"])
            relays[held_by].blackholed = True  # that node is cut off from Redis only
            for i in (1, 2):  # the agent goes on talking
                await say(simulator, talk, f"agent {i}")
            # /readyz 503 there, HAProxy marks it down and cuts its connections: nothing
            # here closes this one.
            await follow_until_closed(talk, client)
            await client.ws.close()
            assert status(f"{nodes[held_by].health}/readyz") == 503
            # OCP connects again, through HAProxy: to the other node, which takes the chat.
            # As OCP does, it tries again after a 503: HAProxy answers so while, on a busy
            # machine, its check of the other node is late too (seen once, suite on 2 workers).
            async with asyncio.timeout(20):
                while True:
                    try:
                        talk.client = await connect(http, url, BridgedProcess.TOKEN)
                        break
                    except aiohttp.WSServerHandshakeError as exc:
                        if exc.status != 503:
                            raise
                        await asyncio.sleep(0.2)
            assert talk.client.received[0]["node"] != held_by
            await talk.client.send({"type": "attach", "chat": "lb-1", "after": talk.last_seq})
            await visitor(talk, "v1", "visitor 1")
            await talk.pump(lambda c: len(c.agent_texts) == 3 and "v1" in c.delivered)
            await talk.client.ws.close()
        assert talk.agent_texts == ["agent 0", "agent 1", "agent 2"]
        record = await asyncio.to_thread(simulator.session, talk.session_id)
        assert record["visitor_messages"] == ["visitor 0", "visitor 1"]
        assert not record["ended"], record["end_reason"]  # never two polls at once
        assert len(await asyncio.to_thread(simulator.sessions)) == 1
    finally:
        if proxy is not None and proxy.poll() is None:
            os.kill(proxy.pid, signal.SIGKILL)
            proxy.wait()
        for node in nodes.values():
            node.stop()
        for relay in relays.values():
            await relay.aclose()
