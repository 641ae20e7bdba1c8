"""The Salesforce simulator as the load test runs it: its own process, tuned for load.

``python -m bridged.tools.loadtest.simproc --listen 127.0.0.1:PORT --options JSON`` serves the
built-in Live Agent simulator (:mod:`bridged.simulators.liveagent`, unchanged), and with
``--backend messaging`` the Enhanced Chat one (:mod:`bridged.simulators.messaging`,
unchanged; ``--options`` is then its ``MessagingOptions``), with two additions that live
only here:

* a middleware that notes, for every visitor message (Live Agent's ``POST
  Chasitor/ChatMessage``, Enhanced Chat's ``POST .../conversation/{id}/message``) whose text
  starts with ``lt:`` (a message of the latency phase) and that the simulator accepted, the
  ``CLOCK_MONOTONIC`` time at which the simulator received it. The load generator reads
  these marks to split the round trip into OCP->agent and agent->OCP; both processes are on
  one machine, where ``time.monotonic_ns()`` is the same clock;
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


class _StaticContent(msgspec.Struct):
    text: str = ""


class _Message(msgspec.Struct, rename="camel"):
    static_content: _StaticContent = msgspec.field(default_factory=_StaticContent)


class _SendMessage(msgspec.Struct):
    message: _Message = msgspec.field(default_factory=_Message)


_text_decoder = msgspec.json.Decoder(_Text)
_send_message_decoder = msgspec.json.Decoder(_SendMessage)


def _liveagent_text(body: bytes) -> str:
    return _text_decoder.decode(body).text


def _messaging_text(body: bytes) -> str:
    return _send_message_decoder.decode(body).message.static_content.text


# What a visitor message is, per backend: (method, path suffix, accepted status, its text).
_VISITOR_MESSAGE: dict[str, tuple[str, str, int, Callable[[bytes], str]]] = {
    "liveagent": ("POST", "/ChatMessage", 200, _liveagent_text),
    "messaging": ("POST", "/message", 202, _messaging_text),
}


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


def _middleware(marks: _Marks, backend: str) -> Callable[..., Awaitable[web.StreamResponse]]:
    method, suffix, accepted, text_of = _VISITOR_MESSAGE[backend]

    @web.middleware
    async def mark(request: web.Request,
                   handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
                   ) -> web.StreamResponse:
        """Mark the time each visitor message reaches the simulator."""
        if request.method != method or not request.path.endswith(suffix):
            return await handler(request)
        received = time.monotonic_ns()
        body = await request.read()  # cached: the handler reads it again for free
        response = await handler(request)
        if response.status == accepted and b'"lt:' in body:
            with contextlib.suppress(msgspec.DecodeError):
                marks.add(text_of(body), received)
        return response

    return mark


async def serve(listen: str, options_json: str, backend: str = "liveagent") -> int:
    """Serve the simulator of ``backend`` with the load test's routes until cancelled."""
    host, _, port = listen.rpartition(":")
    marks = _Marks()
    if backend == "messaging":
        from bridged.simulators.messaging import MessagingOptions
        from bridged.simulators.messaging import Simulator as MessagingSimulator

        messaging = MessagingSimulator(
            msgspec.json.decode(options_json.encode(), type=MessagingOptions))
        app = messaging.app

        def sessions() -> int:
            return len(messaging.conversations)
    else:
        from bridged.simulators.liveagent import Simulator, SimulatorOptions

        simulator = Simulator(msgspec.json.decode(options_json.encode(),
                                                  type=SimulatorOptions))
        app = simulator.app

        def sessions() -> int:
            return len(simulator.sessions)

    app.middlewares.append(_middleware(marks, backend))

    async def take(_request: web.Request) -> web.Response:
        """Hand over the marks gathered since the last call."""
        items, marks.items = marks.items, []
        return web.Response(body=msgspec.json.encode({"marks": items, "dropped": marks.dropped}),
                            content_type="application/json")

    async def ping(_request: web.Request) -> web.Response:
        """Liveness, with the session count."""
        return web.Response(text=f"ok {sessions()}\n")

    app.router.add_get("/_loadtest/marks", take)
    app.router.add_get("/_loadtest/ping", ping)
    # The messaging simulator ends a stream whose client left at once (handler
    # cancellation), as its own runner does.
    runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=2.0,
                           handler_cancellation=backend == "messaging")
    await runner.setup()
    site = web.TCPSite(runner, host or "127.0.0.1", int(port), backlog=4096,
                       reuse_address=True)
    await site.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)
    where = f"http://{listen}" + ("" if backend == "messaging" else "/chat")
    print(f"{backend} simulator {os.getpid()} listening on {where}", file=sys.stderr,
          flush=True)
    await stop.wait()
    await runner.cleanup()
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m bridged.tools.loadtest.simproc``."""
    import uvloop

    parser = argparse.ArgumentParser(prog="python -m bridged.tools.loadtest.simproc")
    parser.add_argument("--listen", required=True, metavar="HOST:PORT")
    parser.add_argument("--backend", choices=["liveagent", "messaging"], default="liveagent")
    parser.add_argument("--options", default="{}",
                        help="SimulatorOptions (liveagent) or MessagingOptions as JSON")
    args = parser.parse_args(argv)
    raise_nofile_limit()
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        try:
            return runner.run(serve(args.listen, args.options, args.backend))
        except KeyboardInterrupt:
            return 130


if __name__ == "__main__":
    sys.exit(main())
