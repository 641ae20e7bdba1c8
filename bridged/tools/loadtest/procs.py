"""The processes of a load test run, and what ``/proc`` says about them.

Each server runs in a process of its own (the simulator, bridged, the null bridge), started
with ``subprocess.Popen``, its output sent to a log file in the run's directory (its pid in
``NAME.pid`` beside it), and stopped by its pid: SIGTERM, then SIGKILL if it does not exit
in time. Nothing else is ever signalled.

``/proc/<pid>/status`` gives ``VmRSS``; ``/proc/<pid>/stat`` gives ``utime`` and ``stime``
(fields 14 and 15, in clock ticks), whose delta over wall time is the CPU use as a percentage
of one core.
"""

from __future__ import annotations

__all__ = [
    "CpuMeter",
    "ServerProcess",
    "count_fds",
    "cpu_seconds",
    "free_port",
    "machine_busy_seconds",
    "python_module",
    "read_rss_kib",
]

import asyncio
import contextlib
import os
import random
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path

import aiohttp

_TICK = os.sysconf("SC_CLK_TCK")


# Below the kernel's ephemeral range (net.ipv4.ip_local_port_range, 32768 and up by default),
# where outgoing connections take their local ports: a port the kernel picks from it for a
# server that binds it only later may meanwhile be taken by one of the thousands of
# connections a load test opens (seen in the test suite: a restarted bridged that could not
# bind, "address already in use").
_PORTS = range(20000, 32768)


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port free on ``host`` right now, below the ephemeral range.

    Raises:
        OSError: none of 200 ports tried at random was free.
    """
    for _ in range(200):
        port = random.choice(_PORTS)
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            try:
                s.bind((host, port))
            except OSError:
                continue
            return port
    raise OSError(f"no free port on {host} in {_PORTS.start}-{_PORTS.stop - 1}")


def read_rss_kib(pid: int) -> int | None:
    """``VmRSS`` of ``pid`` in KiB, or None if it cannot be read."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except (OSError, ValueError):
        return None
    return None


def cpu_seconds(pid: int) -> float | None:
    """``utime + stime`` of ``pid`` in seconds, or None if it cannot be read."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            data = f.read()
    except OSError:
        return None
    # The command name (field 2) may hold spaces and parentheses: split after the last ')'.
    fields = data[data.rindex(")") + 2:].split()
    return (int(fields[11]) + int(fields[12])) / _TICK


def machine_busy_seconds() -> float | None:
    """CPU seconds every CPU of the machine has been busy (``/proc/stat``), or None."""
    try:
        with open("/proc/stat") as f:
            fields = f.readline().split()
    except OSError:
        return None
    if not fields or fields[0] != "cpu":
        return None
    # user nice system idle iowait irq softirq steal: all but idle and iowait are busy.
    values = [int(v) for v in fields[1:9]]
    return (sum(values) - values[3] - values[4]) / _TICK


def count_fds(pid: int) -> int | None:
    """Open file descriptors of ``pid``, or None."""
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return None


class CpuMeter:
    """CPU use of one process (or, with ``pid`` 0, of the whole machine) between two marks,
    as % of one core."""

    def __init__(self, pid: int | None) -> None:
        self.pid = pid
        self._t = 0.0
        self._cpu: float | None = None

    def _read(self) -> float | None:
        if self.pid == 0:
            return machine_busy_seconds()
        return cpu_seconds(self.pid) if self.pid else None

    def mark(self) -> None:
        """Start a measured interval of this process's CPU time."""
        self._t = time.monotonic()
        self._cpu = self._read()

    def since_mark(self) -> tuple[float | None, float | None]:
        """(% of one core since :meth:`mark`, CPU seconds since :meth:`mark`)."""
        if self.pid is None or self._cpu is None:
            return None, None
        now_cpu = self._read()
        if now_cpu is None:
            return None, None
        wall = time.monotonic() - self._t
        used = now_cpu - self._cpu
        return (100.0 * used / wall if wall > 0 else None), used


class ServerProcess:
    """One server process of the run.

    Args:
        name: for messages and the log file's name.
        argv: the command.
        workdir: where the log file goes.
        ready_url: an HTTP URL that answers 200 once the server is ready.
        ready: instead of ``ready_url``, a check that says whether it is ready (e.g. a
            redis-server answering PING).
    """

    def __init__(self, name: str, argv: Sequence[str], workdir: Path, ready_url: str = "",
                 env: dict[str, str] | None = None,
                 ready: Callable[[], Awaitable[bool]] | None = None) -> None:
        self.name = name
        self.argv = list(argv)
        self.log_path = workdir / f"{name}.log"
        self.ready_url = ready_url
        self.ready = ready
        self.env = env
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int | None:
        """The process id while it runs."""
        return self.proc.pid if self.proc is not None else None

    def log_tail(self, lines: int = 15) -> str:
        """The last ``lines`` of the process's log, for a failure message."""
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    async def start(self, timeout: float) -> None:
        """Start and wait until ``ready_url`` answers 200.

        Raises:
            RuntimeError: it exited, or was not ready within ``timeout``.
        """
        env = dict(os.environ)
        env.setdefault("PYTHONUNBUFFERED", "1")
        # The servers import bridged as this process does, installed or not.
        root = str(Path(__file__).resolve().parents[2])
        paths = [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
        env["PYTHONPATH"] = os.pathsep.join([root, *[p for p in paths if p != root]])
        if self.env:
            env.update(self.env)
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(self.argv, stdin=subprocess.DEVNULL, stdout=log,
                                         stderr=subprocess.STDOUT, env=env,
                                         start_new_session=True)
        # Beside the log, for a profiler: py-spy record --pid "$(cat NAME.pid)".
        self.log_path.with_suffix(".pid").write_text(f"{self.proc.pid}\n")
        deadline = time.monotonic() + timeout
        async with aiohttp.ClientSession() as http:
            while True:
                if self.proc.poll() is not None:
                    raise RuntimeError(f"{self.name} exited with {self.proc.returncode}:\n"
                                       f"{self.log_tail()}")
                if await self._is_ready(http):
                    return
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{self.name} not ready within {timeout:g} s:\n"
                                       f"{self.log_tail()}")
                await asyncio.sleep(0.1)

    async def _is_ready(self, http: aiohttp.ClientSession) -> bool:
        if self.ready is not None:
            return await self.ready()
        try:
            async with http.get(self.ready_url,
                                timeout=aiohttp.ClientTimeout(total=2)) as response:
                return response.status == 200
        except (TimeoutError, aiohttp.ClientError, OSError):
            return False

    async def stop(self, timeout: float = 10.0) -> int | None:
        """SIGTERM, wait up to ``timeout``, then SIGKILL. Idempotent; returns the exit code."""
        proc = self.proc
        if proc is None:
            return None
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, signal.SIGTERM)
            deadline = time.monotonic() + timeout
            while proc.poll() is None and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(proc.pid, signal.SIGKILL)
        return proc.wait()

    def stop_now(self) -> None:
        """Synchronous SIGKILL and wait (for clean-up after an interrupt)."""
        proc = self.proc
        if proc is not None and proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, signal.SIGKILL)
        if proc is not None:
            proc.wait()


def python_module(module: str, *args: str) -> list[str]:
    """``python -m module args`` with this interpreter."""
    return [sys.executable, "-m", module, *args]
