"""Where a server's time goes: py-spy on the running process, sorted into parts.

With ``bridged loadtest --py-spy PATH`` (PATH: the ``py-spy`` program, ``pip install
py-spy``), each server (bridged and the null bridge) is sampled from outside, without being
paused (``py-spy record --nonblocking``, 100 samples/s), over its idle, saturation and
half-load phases. The samples go to ``profile-<target>-<topology>-<phase>.txt`` in the run's
directory (py-spy's raw "collapsed stack" format: one stack and its count per line, for
``flamegraph.pl`` or speedscope) and are sorted into the parts of :data:`PARTS`.

A sample belongs to the part of its innermost frame that belongs to a part; frames of
shared plumbing (asyncio, uvloop, aiohttp's stream and writer helpers, yarl, multidict)
belong to none, so they count for whoever called them: aiohttp's HTTP writer called by a
Salesforce request is "HTTP client", called by a WebSocket send "WebSocket". A sample with
no such frame at all is the event loop itself. Garbage collection has no frame of its own
(it runs inside whatever allocated): the probe's GC share is its measure.
"""

from __future__ import annotations

__all__ = ["PARTS", "ProfileRecorder", "parts_of", "read_folded"]

import asyncio
import contextlib
import os
import re
import signal
import subprocess
from collections import Counter
from pathlib import Path

# (part, regular expression on a frame's file path); the first that matches names the part.
_RULES: list[tuple[str, str]] = [
    ("Redis client", r"(^|/)redis/"),
    ("state store", r"bridged/state/|sqlite3/"),
    ("envelope codec", r"bridged/ocp/envelopes\.py"),
    ("OCP front", r"bridged/ocp/"),
    ("actor turns", r"bridged/chats/"),
    ("Salesforce core", r"bridged/salesforce/[^/]+/(protocol|wire|sse)\.py"),
    ("Salesforce shell", r"bridged/salesforce/"),
    ("bot history", r"bridged/history/"),
    ("metrics", r"prometheus_client/|bridged/ops/metrics\.py"),
    ("logging", r"bridged/_log\.py|bridged/ops/logs\.py|/logging/"),
    ("load test probe", r"bridged/tools/loadtest/probe\.py|/threading\.py"),
    ("null bridge relay", r"bridged/tools/nullbridge\.py"),
    ("WebSocket", r"aiohttp/_websocket/|aiohttp/web_ws\.py|aiohttp/client_ws\.py"),
    ("HTTP client", r"aiohttp/(client[a-z_]*|connector|tracing)\.py|aiohappyeyeballs/"),
    ("HTTP server", r"aiohttp/web[a-z_]*\.py"),
    ("other bridged", r"bridged/"),
]
_COMPILED = [(part, re.compile(pattern)) for part, pattern in _RULES]
EVENT_LOOP = "event loop and plumbing"
# Every part, in the order of the report.
PARTS = [part for part, _ in _RULES] + [EVENT_LOOP]

_FRAME = re.compile(r"\((.*):\d+\)\s*$")
# The entry points at the root of every stack (the event loop runs under them): plumbing.
_ROOTS = re.compile(r"^\S+ \(.*bridged/(cli|__main__)\.py:\d+\)|"
                    r"^(main|serve|<module>) \(.*bridged/tools/(nullbridge|loadtest/probe)\.py:")


def _part_of_frame(frame: str) -> str | None:
    if _ROOTS.match(frame):
        return None
    match = _FRAME.search(frame)
    path = match.group(1) if match else frame
    for part, pattern in _COMPILED:
        if pattern.search(path):
            return part
    return None


def read_folded(path: str | os.PathLike[str]) -> Counter[str]:
    """Samples per part in a py-spy raw file (``stack;stack;... count`` lines)."""
    counts: Counter[str] = Counter()
    cache: dict[str, str | None] = {}
    try:
        text = Path(path).read_text(errors="replace")
    except OSError:
        return counts
    for line in text.splitlines():
        stack, _, number = line.rpartition(" ")
        if not stack or not number.isdigit():
            continue
        part = EVENT_LOOP
        for frame in reversed(stack.split(";")):
            if frame not in cache:
                cache[frame] = _part_of_frame(frame)
            found = cache[frame]
            if found is not None:
                part = found
                break
        counts[part] += int(number)
    return counts


def parts_of(path: str | os.PathLike[str]) -> dict[str, float] | None:
    """The share (%) of each part in a py-spy raw file; None without samples."""
    counts = read_folded(path)
    total = sum(counts.values())
    if not total:
        return None
    shares = {part: 100.0 * counts[part] / total for part in PARTS if counts[part]}
    shares["samples"] = float(total)
    return shares


class ProfileRecorder:
    """One py-spy recording of one process over one phase.

    Args:
        py_spy: the ``py-spy`` program.
        pid: the process to sample.
        out: the raw output file.
        rate: samples per second.
    """

    def __init__(self, py_spy: str, pid: int, out: Path, rate: int = 100) -> None:
        self.py_spy = py_spy
        self.pid = pid
        self.out = out
        self.rate = rate
        self._proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        """Start sampling (until :meth:`stop`)."""
        with open(self.out.with_suffix(".log"), "wb") as log:
            self._proc = subprocess.Popen(
                [self.py_spy, "record", "--pid", str(self.pid), "--rate", str(self.rate),
                 "--format", "raw", "--nonblocking", "--output", str(self.out)],
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True)

    async def stop(self, timeout: float = 20.0) -> dict[str, float] | None:
        """Stop sampling (SIGINT: py-spy writes what it has), wait for the file; its parts."""
        proc = self._proc
        if proc is None:
            return None
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, signal.SIGINT)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while proc.poll() is None and loop.time() < deadline:
            await asyncio.sleep(0.1)
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
        return parts_of(self.out)
