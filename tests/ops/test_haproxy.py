"""The HAProxy example (conf/haproxy/bridged.cfg) agrees with bridged, and HAProxy accepts it.

What the load balancer relies on is checked against a live bridged with the default config:
the servers' port is ``server.listen``'s, the health check's path answers 200 on a ready
node, the one path let through is the WebSocket OCP connects to, and the tunnel outlives
bridged's heartbeat. ``haproxy -c`` (Debian's ``haproxy`` package; ``.ci/run`` installs it)
checks the file itself; without it the test fails.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import aiohttp

from bridged.config.file import ServerConfig, split_listen
from bridged.ops.daemon import Daemon
from tests.conftest import TOKEN
from tests.processes import ROOT

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


def test_haproxy_accepts_the_example(tmp_path: Path) -> None:
    haproxy = shutil.which("haproxy")
    assert haproxy, ("haproxy is not installed: apt-get install haproxy (Debian's package;"
                     " .ci/run installs it when it is missing)")
    # The certificate the example names, made for the check: one PEM, certificate and key.
    key, cert = tmp_path / "key.pem", tmp_path / "cert.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                    "-subj", "/CN=bridged.example.com", "-keyout", str(key), "-out",
                    str(cert)], check=True, capture_output=True, timeout=60)
    pem = tmp_path / "bridged.pem"
    pem.write_text(cert.read_text() + key.read_text())
    text = example_text()
    assert "/etc/haproxy/certs/bridged.pem" in text
    config = tmp_path / "haproxy.cfg"
    config.write_text(text.replace("/etc/haproxy/certs/bridged.pem", str(pem)))
    result = subprocess.run([haproxy, "-c", "-f", str(config)], capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "ALERT" not in result.stdout + result.stderr
