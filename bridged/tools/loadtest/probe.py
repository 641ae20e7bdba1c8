"""Instrumentation of a server the load test starts, from outside its code.

``python -m bridged.tools.loadtest.probe --stats PATH -- bridged run --config C`` (or
``-- nullbridge ...``) runs the server's own entry point, unchanged, in a process that also:

* times every garbage collection (``gc.callbacks``: the ``start`` and ``stop`` phases), per
  generation, so that the load test can give the collector's share of the process's CPU;
* counts the event loop's live tasks (``asyncio.all_tasks``, run *on* the loop through
  ``call_soon_threadsafe``) when asked: when the file ``PATH.ask`` exists (the load test
  creates it, :func:`ask_tasks`), the next sample counts them and removes it. Counting is a
  pass over every task on the server's own loop, so it is done at the few moments the load
  test reads the count, not at every sample. The loop is found by wrapping
  ``uvloop.new_event_loop``, which both servers pass to ``asyncio.Runner``;
* raises the soft open-files limit to the hard one.

A daemon thread writes one JSON sample to ``PATH`` (atomically: a temporary file, then a
rename) every ``--interval`` seconds: ``t`` (CLOCK_MONOTONIC), ``cpu_s`` (process CPU),
``gc_s`` (CPU time of the collections, per generation: time a collection spends preempted
by another process does not count), ``gc_n`` (collections per generation),
``gc_collected`` (objects the collections freed: garbage that reference counting could not
free, i.e. reference cycles), ``tasks`` (when asked; else, or when the loop is not known yet
or did not answer in time, null), and ``long_pauses``: the last collections that took 10 ms
or more, each ``[t, generation, ms]`` in wall time (the event loop stands still that long).
Because ``cpu_s`` and ``gc_s`` come from the same sample, the GC share over a phase is exact
to the sample interval.

The instrumentation's own cost: four clock reads per collection, and one pass over
the task set when asked (a few milliseconds for 30,000 tasks).
"""

from __future__ import annotations

__all__ = ["ProbeSample", "ask_tasks", "main", "read_sample"]

import asyncio
import contextlib
import gc
import json
import os
import runpy
import sys
import threading
import time
from collections import deque
from collections.abc import Sequence
from typing import Any

import msgspec


class ProbeSample(msgspec.Struct, kw_only=True):
    """One sample written by the probe."""

    t: float
    cpu_s: float
    gc_s: list[float]
    gc_n: list[int]
    tasks: int | None = None
    gc_collected: int = 0
    long_pauses: list[tuple[float, int, float, float]] = []  # (t, generation, wall ms, CPU ms)


def read_sample(path: str) -> ProbeSample | None:
    """The latest sample at ``path``, or None when there is none (yet)."""
    try:
        with open(path, "rb") as f:
            return msgspec.json.decode(f.read(), type=ProbeSample)
    except (OSError, msgspec.DecodeError):
        return None


def ask_tasks(path: str) -> None:
    """Ask the probe writing ``path`` to count the tasks in its next sample."""
    with open(f"{path}.ask", "w"):
        pass


# Collections that take at least this long are listed one by one (time, generation, ms).
LONG_PAUSE_MS = 10.0


class _GcTimer:
    def __init__(self) -> None:
        self.seconds = [0.0, 0.0, 0.0]
        self.count = [0, 0, 0]
        self.collected = 0  # objects the collector freed: garbage in reference cycles
        self.long: deque[tuple[float, int, float, float]] = deque(maxlen=2000)
        self._started = 0
        self._started_cpu = 0

    def __call__(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._started_cpu = time.thread_time_ns()
            self._started = time.perf_counter_ns()
        else:
            wall_ms = (time.perf_counter_ns() - self._started) / 1e6
            cpu_ms = (time.thread_time_ns() - self._started_cpu) / 1e6
            generation = info.get("generation", 0)
            self.seconds[generation] += cpu_ms / 1000
            self.count[generation] += 1
            self.collected += info.get("collected", 0)
            if wall_ms >= LONG_PAUSE_MS:
                # CPU time too: on a shared machine the wall time includes being descheduled.
                self.long.append((time.monotonic(), generation, wall_ms, cpu_ms))


class _LoopWatch:
    def __init__(self) -> None:
        self.loop: asyncio.AbstractEventLoop | None = None

    def install(self) -> None:
        """Wrap uvloop's loop factory so the probe sees the loop."""
        try:
            import uvloop
        except ImportError:
            return
        original = uvloop.new_event_loop

        def new_event_loop() -> asyncio.AbstractEventLoop:
            """uvloop's factory, remembering the loop it made."""
            loop = original()
            self.loop = loop
            return loop

        uvloop.new_event_loop = new_event_loop  # type: ignore[assignment]

    def count_tasks(self, timeout: float) -> int | None:
        """The number of tasks on the loop, asked from the probe's thread; None if it cannot say."""
        loop = self.loop
        if loop is None or loop.is_closed():
            return None
        result: list[int] = []
        done = threading.Event()

        def count() -> None:
            """Count on the loop's own thread."""
            result.append(len(asyncio.all_tasks(loop)))
            done.set()

        try:
            loop.call_soon_threadsafe(count)
        except RuntimeError:
            return None
        if not done.wait(timeout):
            return None
        return result[0]


def _writer(path: str, interval: float, timer: _GcTimer, watch: _LoopWatch) -> None:
    tmp = f"{path}.tmp"
    ask = f"{path}.ask"
    while True:
        tasks = None
        if os.path.exists(ask):
            tasks = watch.count_tasks(timeout=max(1.0, interval))
            with contextlib.suppress(OSError):
                os.unlink(ask)
        sample = {
            "t": time.monotonic(),
            "cpu_s": time.process_time(),
            "gc_s": list(timer.seconds),
            "gc_n": list(timer.count),
            "gc_collected": timer.collected,
            "tasks": tasks,
            "long_pauses": list(timer.long),
        }
        try:
            # dumps, not dump: json.dump encodes through closures that form reference
            # cycles, some 60 objects a sample, which the GC figures would count as bridged's.
            text = json.dumps(sample)
            with open(tmp, "w") as f:
                f.write(text)
            os.replace(tmp, path)
        except OSError:
            pass
        time.sleep(interval)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m bridged.tools.loadtest.probe --stats PATH [--interval S] -- bridged|nullbridge
    ARGS...``."""
    args = list(sys.argv[1:] if argv is None else argv)
    stats, interval = None, 0.5
    while args and args[0] != "--":
        flag = args.pop(0)
        if flag == "--stats":
            stats = args.pop(0)
        elif flag == "--interval":
            interval = float(args.pop(0))
        else:
            print(f"probe: unknown option {flag}", file=sys.stderr)
            return 2
    if not args or stats is None:
        print("usage: python -m bridged.tools.loadtest.probe --stats PATH -- "
              "bridged|nullbridge ARGS", file=sys.stderr)
        return 2
    args.pop(0)
    target, target_args = args[0], args[1:]

    from bridged.tools.loadtest.simproc import raise_nofile_limit

    raise_nofile_limit()
    timer = _GcTimer()
    gc.callbacks.append(timer)
    watch = _LoopWatch()
    watch.install()
    threading.Thread(target=_writer, args=(stats, interval, timer, watch), daemon=True,
                     name="loadtest-probe").start()
    # The target runs as ``python -m MODULE`` would run it, so the probe needs no import of
    # the command line (which imports the load test: a circle).
    module = {"bridged": "bridged", "nullbridge": "bridged.tools.nullbridge"}.get(target)
    if module is not None:
        sys.argv = [module, *target_args]
        try:
            runpy.run_module(module, run_name="__main__", alter_sys=True)
        except SystemExit as exc:
            return exc.code if isinstance(exc.code, int) else int(exc.code is not None)
        return 0
    print(f"probe: unknown target {target!r}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
