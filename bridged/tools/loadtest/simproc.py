"""The Live Agent simulator as the load test runs it: its own process, tuned for load.

``python -m bridged.tools.loadtest.simproc --listen 127.0.0.1:PORT --options JSON`` serves the
built-in simulator (:mod:`bridged.simulators.liveagent`, unchanged) with two additions that
live only here:

* a middleware that notes, for every ``POST Chasitor/ChatMessage`` whose text starts with
  ``lt:`` (a message of the latency phase), the ``CLOCK_MONOTONIC`` time at which the
  simulator received it. The load generator reads these marks to split the round trip
  into OCP->agent and agent->OCP; both processes are on one machine, where
  ``time.monotonic_ns()`` is the same clock;
* ``GET /_loadtest/marks`` returns the marks noted since the last call, and forgets them
  (bounded: past ``MAX_MARKS`` unread marks new ones are counted, not kept);
  ``GET /_loadtest/ping`` answers once the simulator listens.
"""

from __future__ import annotations

__all__ = ["main"]

import argparse
import asyncio
import contextlib
import os
import resource
import signal
import sys
import time
from collections.abc import Awaitable, Callable, Sequence

import msgspec
from aiohttp import web

MAX_MARKS = 2_000_000


class _Text(msgspec.Struct):
    text: str = ""


_text_decoder = msgspec.json.Decoder(_Text)


def raise_nofile_limit() -> int:
    """Raise the soft open-files limit to the hard one (thousands of sockets); the limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY:
        return soft if soft != resource.RLIM_INFINITY else 1 << 20
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard


class _Marks:
    def __init__(self) -> None:
        self.items: list[tuple[str, int]] = []
        self.dropped = 0

    def add(self, text: str, t_ns: int) -> None:
        """Keep one mark, up to ``MAX_MARKS``; count the rest."""
        if len(self.items) >= MAX_MARKS:
            self.dropped += 1
        else:
            self.items.append((text, t_ns))


def _middleware(marks: _Marks) -> Callable[..., Awaitable[web.StreamResponse]]:
    @web.middleware
    async def mark(request: web.Request,
                   handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
                   ) -> web.StreamResponse:
        """Mark the time each visitor message reaches the simulator."""
        if request.method != "POST" or not request.path.endswith("/ChatMessage"):
            return await handler(request)
        received = time.monotonic_ns()
        body = await request.read()  # cached: the handler reads it again for free
        response = await handler(request)
        if response.status == 200 and b'"lt:' in body:
            with contextlib.suppress(msgspec.DecodeError):
                marks.add(_text_decoder.decode(body).text, received)
        return response

    return mark


async def serve(listen: str, options_json: str) -> int:
    """Serve the simulator with the load test's routes until cancelled."""
    from bridged.simulators.liveagent import Simulator, SimulatorOptions

    options = msgspec.json.decode(options_json.encode(), type=SimulatorOptions)
    host, _, port = listen.rpartition(":")
    simulator = Simulator(options)
    marks = _Marks()
    simulator.app.middlewares.append(_middleware(marks))

    async def take(_request: web.Request) -> web.Response:
        """Hand over the marks gathered since the last call."""
        items, marks.items = marks.items, []
        return web.Response(body=msgspec.json.encode({"marks": items, "dropped": marks.dropped}),
                            content_type="application/json")

    async def ping(_request: web.Request) -> web.Response:
        """Liveness, with the session count."""
        return web.Response(text=f"ok {len(simulator.sessions)}\n")

    simulator.app.router.add_get("/_loadtest/marks", take)
    simulator.app.router.add_get("/_loadtest/ping", ping)
    runner = web.AppRunner(simulator.app, access_log=None, handle_signals=False,
                           shutdown_timeout=2.0)
    await runner.setup()
    site = web.TCPSite(runner, host or "127.0.0.1", int(port), backlog=4096,
                       reuse_address=True)
    await site.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)
    print(f"simulator {os.getpid()} listening on http://{listen}/chat", file=sys.stderr,
          flush=True)
    await stop.wait()
    await runner.cleanup()
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m bridged.tools.loadtest.simproc``."""
    import uvloop

    parser = argparse.ArgumentParser(prog="python -m bridged.tools.loadtest.simproc")
    parser.add_argument("--listen", required=True, metavar="HOST:PORT")
    parser.add_argument("--options", default="{}", help="SimulatorOptions as JSON")
    args = parser.parse_args(argv)
    raise_nofile_limit()
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        try:
            return runner.run(serve(args.listen, args.options))
        except KeyboardInterrupt:
            return 130


if __name__ == "__main__":
    sys.exit(main())
