"""What one Live Agent exchange costs bridged's HTTP client, against a loopback server.

Each relayed message costs bridged two exchanges over its transport
(:class:`~bridged.salesforce.liveagent.transport.AiohttpTransport`): a ``POST
Chasitor/ChatMessage`` (its body, the ``X-LIVEAGENT-*`` headers) over the shared request
pool, and a ``GET System/Messages?ack=N`` long poll, answered, over the polls' pool. This
runs such pairs, sequential (one chat) and concurrent (many chats over a capped request
pool, so that requests queue for a connection), against an aiohttp server in a process of
its own on 127.0.0.1, and prints the CPU time this process spent per exchange.

Four clients, interleaved in one run (the exchanges are cut in slices; each slice runs
each client once, in an order rotated slice after slice, so that the machine's other load
weighs on each alike; the table gives each one's mean over the slices, and the median of
the slices' ratios):

* ``transport``: bridged's transport as it is (its sessions keep no cookies);
* ``jar``: the same transport over sessions with aiohttp's default cookie jar, as they were
  before the sessions stopped keeping cookies: what the jar costs per exchange;
* ``before``: the path as it was before issue 12's changes (kept here to compare): the
  request pool's slot held by a ``contextlib.asynccontextmanager``, a new
  ``aiohttp.ClientTimeout`` and a ``dict`` of the headers per request, the query given as
  ``params``, ``async with session.request(...)``;
* ``floor``: bare aiohttp as the null bridge uses it (one session, no queue of its own,
  no timeout per request, no error mapping): what aiohttp itself costs.

With ``--set-cookie`` every answer carries a sticky-routing ``Set-Cookie``, as a load
balancer in front of Salesforce would set, and the clients reach the server as
``localhost`` (the default jar ignores a cookie from a bare IP address): the case where a
jar has work on every request and answer. Without it no answer sets a cookie.

Run it as ``python -m bridged.tools.httpbench [--exchanges 20000] [--slices 100]
[--set-cookie]``. The machine's other load shows in the figures: compare the columns of one
run, not two runs.
"""

from __future__ import annotations

__all__ = ["CLIENTS", "MODES", "main", "run_benchmark"]

import argparse
import asyncio
import contextlib
import gc
import statistics
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Coroutine, Sequence
from pathlib import Path
from typing import Any, Protocol

import aiohttp
from aiohttp import web

from bridged.errors import TransportConnectError, TransportTimeout
from bridged.salesforce.liveagent.protocol import HttpRequest, HttpResponse, Lane, Purpose
from bridged.salesforce.liveagent.transport import AiohttpTransport
from bridged.tools.loadtest.procs import ServerProcess, free_port, python_module

CLIENTS = ("transport", "jar", "before", "floor")
MODES = ("sequential", "concurrent")
_PREFIX = "/chat/rest/"
# What a poll answer looks like (SALESFORCE.md 4): one agent message.
_POLL_BODY = (b'{"messages":[{"type":"ChatMessage","message":{"name":"Agent",'
              b'"text":"an answer of a realistic length","agentId":"005xx0000012345"}}],'
              b'"sequence":1,"offset":12345}')


# --- the server: its own process, so that its CPU is not counted --------------------------


# What a load balancer's sticky-routing cookie looks like (``--set-cookie``).
_COOKIE = {"Set-Cookie": "AWSALB=Zm9vYmFyYmF6cXV4MDEyMzQ1Njc4OWFiY2RlZg; Path=/; Max-Age=604800"}


async def _serve(port: int, set_cookie: bool) -> None:
    headers = _COOKIE if set_cookie else None

    async def message(request: web.Request) -> web.Response:
        await request.read()
        return web.Response(body=b"OK", content_type="text/plain", headers=headers)

    async def messages(request: web.Request) -> web.Response:
        return web.Response(body=_POLL_BODY, content_type="application/json",
                            headers=headers)

    async def healthz(request: web.Request) -> web.Response:
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_post(_PREFIX + "Chasitor/ChatMessage", message)
    app.router.add_get(_PREFIX + "System/Messages", messages)
    app.router.add_get("/healthz", healthz)
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        await asyncio.Event().wait()
    finally:
        await runner.cleanup()


# --- the path before issue 12's changes, kept to compare ----------------------------------


class _BeforePool:
    """``salesforce.http.Pool`` as it was: the slot held by an async generator."""

    def __init__(self, limit: int, keepalive_s: float) -> None:
        self._limit = limit
        self._keepalive_s = keepalive_s
        self._slots = asyncio.Semaphore(limit)
        self._may_send: Callable[[], bool] | None = None
        self._session: aiohttp.ClientSession | None = None

    @contextlib.asynccontextmanager
    async def going(self, what: str) -> AsyncIterator[aiohttp.ClientSession]:
        async with self._slots:
            if self._may_send is not None and not self._may_send():
                raise TransportConnectError(
                    f"{what}: not sent: this node may not send to Salesforce now")
            if self._session is None:
                self._session = _session(self._limit, self._keepalive_s)
            yield self._session

    async def aclose(self) -> None:
        if self._session is not None:
            session, self._session = self._session, None
            await session.close()


class _BeforeTransport:
    """``AiohttpTransport.exchange`` as it was."""

    def __init__(self, max_connections: int, keepalive_s: float,
                 max_request_connections: int) -> None:
        self._pools = {Lane.POLL: _BeforePool(max_connections, keepalive_s),
                       Lane.POST: _BeforePool(max_request_connections, keepalive_s)}

    async def exchange(self, base_url: str, request: HttpRequest, timeout: float) -> HttpResponse:
        try:
            async with self._pools[request.lane].going(request.purpose.value) as session, \
                    session.request(
                        request.method,
                        base_url + request.path,
                        params=request.query or None,
                        headers=dict(request.headers),
                        data=request.body,
                        timeout=aiohttp.ClientTimeout(total=timeout),
                        allow_redirects=False,
                    ) as response:
                body = await response.read()
                return HttpResponse(status=response.status, body=body)
        except TimeoutError as exc:
            raise TransportTimeout(
                f"{request.purpose.value}: no answer within {timeout:g} s") from exc
        except (aiohttp.ClientError, OSError) as exc:
            raise TransportConnectError(
                f"{request.purpose.value}: {type(exc).__name__}: {exc}") from exc

    async def aclose(self) -> None:
        for pool in self._pools.values():
            await pool.aclose()


def _session(limit: int, keepalive_s: float) -> aiohttp.ClientSession:
    # aiohttp's default cookie jar, as bridged's sessions had one until they kept no cookies.
    connector = aiohttp.TCPConnector(limit=limit, limit_per_host=0, ttl_dns_cache=300,
                                     keepalive_timeout=keepalive_s)
    return aiohttp.ClientSession(connector=connector, auto_decompress=True,
                                 raise_for_status=False, skip_auto_headers=("User-Agent",))


class _JarTransport(AiohttpTransport):
    """bridged's transport over sessions with aiohttp's default cookie jar."""

    def __init__(self, max_connections: int, keepalive_s: float,
                 max_request_connections: int) -> None:
        super().__init__(max_connections, keepalive_s, max_request_connections)
        # The pools make their session with the first request: made here, with a jar.
        self._polls._session = _session(max_connections, keepalive_s)
        self._posts._session = _session(max_request_connections, keepalive_s)


class _FloorTransport:
    """Bare aiohttp, as the null bridge calls it: what aiohttp itself costs."""

    def __init__(self, max_connections: int, keepalive_s: float,
                 max_request_connections: int) -> None:
        self._held = _session(max_connections, keepalive_s)
        self._http = _session(max_request_connections, keepalive_s)

    async def exchange(self, base_url: str, request: HttpRequest, timeout: float) -> HttpResponse:
        http = self._held if request.lane is Lane.POLL else self._http
        async with http.request(request.method, base_url + request.path,
                                params=request.query or None, headers=dict(request.headers),
                                data=request.body) as response:
            return HttpResponse(status=response.status, body=await response.read())

    async def aclose(self) -> None:
        await self._held.close()
        await self._http.close()


# --- the client side ----------------------------------------------------------------------


class _Exchanger(Protocol):
    async def exchange(self, base_url: str, request: HttpRequest,
                       timeout: float) -> HttpResponse: ...

    async def aclose(self) -> None: ...


def _make(client: str, chats: int, request_connections: int) -> _Exchanger:
    cls: Callable[[int, float, int], _Exchanger] = {
        "transport": AiohttpTransport, "jar": _JarTransport, "before": _BeforeTransport,
        "floor": _FloorTransport}[client]
    return cls(chats, 5.0, request_connections)


def _requests(sequence: int, ack: int) -> tuple[HttpRequest, HttpRequest]:
    """One relayed message's two exchanges, with a chat's real headers."""
    common = (("X-LIVEAGENT-API-VERSION", "61"),
              ("X-LIVEAGENT-AFFINITY", "8f2e1a3c"),
              ("X-LIVEAGENT-SESSION-KEY", "a7c3e2f0-1b2c-4d5e-8f90-1234567890ab!"
                                          "1700000000000!AbCdEfGhIjKlMnOpQrStUvWxYz0123"))
    post = HttpRequest(method="POST", path="Chasitor/ChatMessage",
                       purpose=Purpose.CHAT_MESSAGE, lane=Lane.POST,
                       headers=(*common, ("X-LIVEAGENT-SEQUENCE", str(sequence)),
                                ("Accept", "application/json"),
                                ("Content-Type", "application/json")),
                       body=b'{"text":"a visitor message of a realistic length"}')
    poll = HttpRequest(method="GET", path="System/Messages", purpose=Purpose.MESSAGES,
                       lane=Lane.POLL, query=(("ack", str(ack)),),
                       headers=(*common, ("Accept", "application/json")))
    return post, poll


async def _chat(transport: _Exchanger, base: str, messages: int) -> None:
    for n in range(messages):
        post, poll = _requests(n + 1, n)
        for request in (post, poll):
            answer = await transport.exchange(base, request, 30.0)
            if answer.status != 200:
                raise RuntimeError(f"{request.path}: HTTP {answer.status}")


async def _measure(transport: _Exchanger, base: str, chats: int, messages: int) -> float:
    """CPU seconds of this process for ``chats`` chats relaying ``messages`` each at once."""
    start = time.process_time()
    await asyncio.gather(*(_chat(transport, base, messages) for _ in range(chats)))
    return time.process_time() - start


async def _bench(base: str, exchanges: int, slices: int, chats: int,
                 request_connections: int,
                 say: Callable[[str], None]) -> dict[str, dict[str, list[float]]]:
    """CPU seconds per slice: {mode: {client: [one figure per slice]}}.

    Each slice runs every client once, in an order rotated slice after slice, so that
    whatever else the machine does weighs on each client alike.
    """
    figures: dict[str, dict[str, list[float]]] = {m: {c: [] for c in CLIENTS} for m in MODES}
    per_slice = max(1, exchanges // slices // 2)  # messages per slice, 2 exchanges each
    per_chat = max(1, per_slice // chats)
    transports = {c: _make(c, chats, request_connections) for c in CLIENTS}
    thresholds = gc.get_threshold()
    try:
        for transport in transports.values():  # connections opened, code warm
            await _measure(transport, base, chats, 5)
        # bridged's collector settings (the default ``[server] gc_thresholds``, a frozen
        # heap), so that its collections cost what they cost bridged.
        gc.collect()
        gc.freeze()
        gc.set_threshold(50_000, 20, 100)
        for n in range(slices):
            order = CLIENTS[n % len(CLIENTS):] + CLIENTS[:n % len(CLIENTS)]
            for client in order:
                figures["sequential"][client].append(
                    await _measure(transports[client], base, 1, per_slice))
            for client in order:
                figures["concurrent"][client].append(
                    await _measure(transports[client], base, chats, per_chat))
            if (n + 1) % max(1, slices // 5) == 0:
                say(f"slice {n + 1}/{slices}")
    finally:
        gc.set_threshold(*thresholds)
        gc.unfreeze()
        for transport in transports.values():
            await transport.aclose()
    # µs per exchange over the whole run, slice by slice.
    sizes = {"sequential": per_slice * 2, "concurrent": per_chat * chats * 2}
    return {m: {c: [cpu / sizes[m] * 1e6 for cpu in v] for c, v in per.items()}
            for m, per in figures.items()}


async def run_benchmark(exchanges: int = 20_000, slices: int = 100, chats: int = 64,
                        request_connections: int = 16, set_cookie: bool = False,
                        say: Callable[[str], None] = print) -> dict[str, dict[str, float]]:
    """Start the server, run the clients, print the table; {mode: {client: µs/exchange}}."""
    port = free_port()
    argv = ["--serve", str(port), *(["--set-cookie"] if set_cookie else [])]
    host = "localhost" if set_cookie else "127.0.0.1"
    with tempfile.TemporaryDirectory(prefix="httpbench-") as workdir:
        server = ServerProcess("server", python_module("bridged.tools.httpbench", *argv),
                               Path(workdir), ready_url=f"http://127.0.0.1:{port}/healthz")
        try:
            await server.start(timeout=30.0)
            figures = await _bench(f"http://{host}:{port}{_PREFIX}", exchanges, slices,
                                   chats, request_connections, say)
        finally:
            await server.stop()
    means = {m: {c: statistics.fmean(v) for c, v in per.items()} for m, per in figures.items()}
    say(f"CPU µs per exchange, this process (about {exchanges} exchanges per client and "
        f"mode, in {slices} interleaved slices; concurrent: {chats} chats over "
        f"{request_connections} request connections; answers "
        f"{'setting a' if set_cookie else 'setting no'} cookie). Ratios: the median of the "
        f"slices' ratios.")
    say(f"{'mode':<12}" + "".join(f"{c:>11}" for c in CLIENTS)
        + f"{'jar/transport':>15}{'before/transport':>18}{'transport/floor':>17}")
    for mode, per in means.items():
        slices_ = figures[mode]
        jar = statistics.median(j / t for j, t in zip(slices_["jar"],
                                                       slices_["transport"], strict=True))
        gain = statistics.median(b / t for b, t in zip(slices_["before"],
                                                        slices_["transport"], strict=True))
        over = statistics.median(t / f for t, f in zip(slices_["transport"],
                                                        slices_["floor"], strict=True))
        say(f"{mode:<12}" + "".join(f"{per[c]:>11.1f}" for c in CLIENTS)
            + f"{jar:>15.3f}{gain:>18.3f}{over:>17.3f}")
    return means


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bridged.tools.httpbench",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--exchanges", type=int, default=20_000,
                        help="exchanges per client and mode (default 20000)")
    parser.add_argument("--slices", type=int, default=100,
                        help="interleaved slices they are run in (default 100)")
    parser.add_argument("--chats", type=int, default=64,
                        help="concurrent chats in the concurrent mode (default 64)")
    parser.add_argument("--request-connections", type=int, default=16,
                        help="the request pool's cap (default 16)")
    parser.add_argument("--set-cookie", action="store_true",
                        help="every answer sets a cookie, as a load balancer would")
    parser.add_argument("--serve", type=int, metavar="PORT", help=argparse.SUPPRESS)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """The command line: run the benchmark (``--serve PORT``: be its server)."""
    import uvloop

    args = _parser().parse_args(argv)
    for name in ("exchanges", "slices", "chats", "request_connections"):
        if getattr(args, name) < 1:
            print(f"--{name.replace('_', '-')}: must be at least 1", file=sys.stderr)
            return 2
    work: Coroutine[Any, Any, object] = (
        _serve(args.serve, args.set_cookie) if args.serve is not None
        else run_benchmark(args.exchanges, args.slices, args.chats, args.request_connections,
                           args.set_cookie))
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        try:
            runner.run(work)
        except KeyboardInterrupt:
            return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
