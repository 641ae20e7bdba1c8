"""The simulator as a served aiohttp application: :class:`Simulator` and its runners.

Routes (the base URL plays the SCRT URL, ``http://127.0.0.1:PORT``)::

    POST   /iamessage/api/v2/authorization/unauthenticated/access-token     (rest.py)
    GET    /iamessage/api/v2/authorization/continuation-access-token
    POST   /iamessage/api/v2/conversation
    GET    /iamessage/api/v2/conversation/list
    GET    /iamessage/api/v2/conversation/{id}
    DELETE /iamessage/api/v2/conversation/{id}?esDeveloperName=
    POST   /iamessage/api/v2/conversation/{id}/message
    POST   /iamessage/api/v2/conversation/{id}/entry
    POST   /iamessage/api/v2/conversation/{id}/acknowledge-entries
    GET    /iamessage/api/v2/conversation/{id}/entries
    DELETE /iamessage/api/v2/conversation/{id}/session?esDeveloperName=
    POST   /iamessage/api/v2/conversation/{id}/file
    GET    /eventrouter/v1/sse                                               (events.py)
    *      /_sim/...                                                         (control.py)

Any other path (or method) under the host gets a JSON 404 (405) and is recorded too.
:class:`Simulator` is the :class:`~.engine.Engine` (state, agents, faults, records) plus
this application; one reaper task runs while it is served.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable

from aiohttp import web

from ..common import url_host
from .control import ControlApi
from .engine import Engine
from .events import StreamApi
from .model import SimulatorError
from .options import MessagingOptions
from .pipeline import Pipeline
from .rest import RestApi
from .wire import error_reply

__all__ = ["CONTROL_PATH", "Simulator", "running_simulator", "serve_forever"]

logger = logging.getLogger("bridged.simulators.messaging")

CONTROL_PATH = "/_sim/"

_Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class Simulator(Engine):
    """A strict simulator of Salesforce's Enhanced Chat API (the guest side).

    Serve :attr:`app` with any aiohttp runner, or :meth:`start` it (or use
    :func:`running_simulator`). Tests in the same process call the public methods of
    :class:`~.engine.Engine`; other processes use them over HTTP under ``/_sim/``.

    Attributes:
        app: The ``aiohttp.web.Application``.
        pipeline: The request machinery the endpoints share.
        base_url: ``http://HOST:PORT`` once started (the "SCRT URL" to configure).
        port: The bound port once started.
    """

    def __init__(self, options: MessagingOptions | None = None) -> None:
        super().__init__(options)
        self.base_url: str | None = None
        self.port: int | None = None
        self._runner: web.AppRunner | None = None
        self.pipeline = Pipeline(self)
        self._rest = RestApi(self, self.pipeline)
        self._stream_api = StreamApi(self, self.pipeline)
        self._control = ControlApi(self)
        self.app = self._build_app()

    def _build_app(self) -> web.Application:
        # Room for a file of max_file_bytes and its multipart framing; beyond it aiohttp
        # answers 413 itself.
        max_size = max(1 << 20, 2 * self.options.max_file_bytes + (1 << 20))
        app = web.Application(client_max_size=max_size, middlewares=[self._unmatched])
        self._rest.add_routes(app.router)
        self._stream_api.add_routes(app.router)
        self._control.add_routes(app.router, CONTROL_PATH)
        app.cleanup_ctx.append(self._lifecycle)
        app.on_shutdown.append(self._on_shutdown)
        return app

    @web.middleware
    async def _unmatched(self, request: web.Request, handler: _Handler) -> web.StreamResponse:
        """Answer (and record) what no endpoint takes with a JSON error, as the rest."""
        arrived = time.time()
        try:
            return await handler(request)
        except web.HTTPException as exc:
            if request.path.startswith(CONTROL_PATH) or exc.status < 400:
                raise
            if exc.status == 404:
                reply = error_reply(404, "No such endpoint")
            elif exc.status == 405:
                reply = error_reply(405, f"Method {request.method} not allowed",
                                    "METHOD_NOT_ALLOWED")
            else:
                reply = error_reply(exc.status, exc.reason)
            return self.pipeline.respond(request, "Unknown", b"", reply, None, arrived)

    async def _lifecycle(self, app: web.Application) -> AsyncIterator[None]:
        self.bind(asyncio.get_running_loop())
        reaper = asyncio.create_task(self._reap_forever(), name="messaging-simulator-reaper")
        yield
        self.shut()
        reaper.cancel()
        try:
            await reaper
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if task is not None and task.cancelling():
                raise

    async def _on_shutdown(self, app: web.Application) -> None:
        self.shut()

    async def _reap_forever(self) -> None:
        while True:
            await asyncio.sleep(self.options.reap_interval_s)
            self.reap()

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> str:
        """Listen on ``host:port`` (0 picks a free port); returns :attr:`base_url`.

        Raises:
            SimulatorError: Already started.
        """
        if self._runner is not None:
            raise SimulatorError("the simulator is already started")
        # No access log (a load test would drown everything); a short shutdown budget,
        # because open streams are ended on shutdown. Handler cancellation: a stream whose
        # client went away ends at once (served by another runner, at the next ping).
        runner = web.AppRunner(self.app, access_log=None, shutdown_timeout=5.0,
                               handler_cancellation=True)
        await runner.setup()
        try:
            site = web.TCPSite(runner, host, port, backlog=4096)
            await site.start()
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        self.port = int(runner.addresses[0][1])
        self.base_url = f"http://{url_host(host)}:{self.port}"
        return self.base_url

    async def stop(self) -> None:
        """Stop listening, end every stream and agent; idempotent."""
        runner, self._runner = self._runner, None
        self.shut()
        if runner is not None:
            await runner.cleanup()



@contextlib.asynccontextmanager
async def running_simulator(
    options: MessagingOptions | None = None, host: str = "127.0.0.1", port: int = 0
) -> AsyncIterator[Simulator]:
    """Serve a simulator on ``host:port`` (0 picks a free port) for the block's duration.

    Yields:
        The started :class:`Simulator`, with ``base_url`` and ``port`` set.
    """
    simulator = Simulator(options)
    await simulator.start(host, port)
    try:
        yield simulator
    finally:
        await simulator.stop()


async def serve_forever(
    options: MessagingOptions | None = None, host: str = "127.0.0.1", port: int = 8081
) -> None:
    """Serve the simulator until cancelled (for ``bridged simulator``).

    Cancellation is the way to stop it; the server is cleaned up and the
    ``CancelledError`` propagates.
    """
    async with running_simulator(options, host, port) as simulator:
        logger.info("Enhanced Chat simulator listening on %s", simulator.base_url)
        if host not in ("127.0.0.1", "::1", "localhost"):
            logger.warning("the simulator's control API (/_sim/) answers loopback peers only")
        await asyncio.Event().wait()
