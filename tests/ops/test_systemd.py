"""systemd: the unit verifies, and a real bridged speaks sd_notify to a socket the test opens."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from bridged.ops.systemd import Notifier
from tests.test_cli import free_port

ROOT = Path(__file__).resolve().parents[2]
UNIT = ROOT / "systemd" / "bridged.service"


def test_the_unit_file_verifies(tmp_path: Path) -> None:
    assert shutil.which("systemd-analyze"), (
        "systemd-analyze is not installed: apt-get install systemd (.ci/run does)")
    # The unit names the installed path; point it at this checkout's interpreter instead.
    unit = tmp_path / "bridged.service"
    unit.write_text(UNIT.read_text().replace("/opt/bridged/venv/bin/bridged",
                                             f"{sys.executable} -m bridged"))
    result = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    text = UNIT.read_text()
    for line in ("Type=notify", "Restart=on-failure", "StateDirectory=bridged",
                 "NoNewPrivileges=yes", "ProtectSystem=strict", "CapabilityBoundingSet=\n",
                 "SystemCallFilter=@system-service", "WatchdogSec=", "LimitNOFILE="):
        assert line in text, line


def receive_all(sock: socket.socket, until: str, timeout: float = 20) -> list[str]:
    """Datagrams from the socket until one contains ``until``."""
    got: list[str] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        sock.settimeout(max(0.01, deadline - time.monotonic()))
        try:
            got.append(sock.recv(4096).decode())
        except TimeoutError:
            break
        if until in got[-1]:
            return got
    raise AssertionError(f"no {until!r} in {got}")


def test_notify_ready_watchdog_reloading_and_stopping(tmp_path: Path) -> None:
    address = str(tmp_path / "notify.sock")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(address)
    port = free_port()
    config = tmp_path / "bridged.toml"
    config.write_text(f'[server]\nlisten = "127.0.0.1:{port}"\ntokens = ["0123456789"]\n'
                      f'[state]\ndir = "{tmp_path / "state"}"\n')
    env = {**os.environ, "NOTIFY_SOCKET": address, "WATCHDOG_USEC": "200000"}
    process = subprocess.Popen([sys.executable, "-m", "bridged", "run", "--config",
                                str(config)], env=env, cwd=ROOT, stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE, text=True)
    try:
        got = receive_all(sock, "READY=1")
        assert got[-1].startswith("READY=1")
        pings = receive_all(sock, "WATCHDOG=1")
        assert "WATCHDOG=1" in pings[-1]
        process.send_signal(signal.SIGHUP)
        reload = receive_all(sock, "READY=1")
        reloading = [d for d in reload if d.startswith("RELOADING=1")]
        assert reloading and "MONOTONIC_USEC=" in reloading[0]
        process.send_signal(signal.SIGTERM)
        assert any("STOPPING=1" in d for d in receive_all(sock, "STOPPING=1"))
        assert process.wait(timeout=15) == 0
    finally:
        if process.poll() is None:
            os.kill(process.pid, signal.SIGKILL)
            process.wait()
        if process.stderr is not None:
            process.stderr.close()
        sock.close()


def test_without_notify_socket_nothing_is_sent() -> None:
    notifier = Notifier({})
    assert not notifier.enabled
    notifier.ready()  # no socket, no error
    assert notifier.watchdog_interval is None


def test_watchdog_for_another_pid_is_ignored() -> None:
    notifier = Notifier({"NOTIFY_SOCKET": "/nowhere", "WATCHDOG_USEC": "1000000",
                         "WATCHDOG_PID": str(os.getpid() + 1)})
    assert notifier.watchdog_interval is None
    assert Notifier({"WATCHDOG_USEC": "1000000"}).watchdog_interval == 0.5
