"""Both transports' requests as a server sees them, and their slots and timeouts.

The transports take the cheapest path aiohttp allows per request (issue 12): the pool's slot
taken and given back without a context manager, the headers handed over as their pairs, a
``ClientTimeout`` made once per value. What a user would notice if that broke: other bytes
on the wire (a header lost, doubled, renamed or added; the query encoded otherwise), a
redirect followed, a timeout that no longer fires, or a slot never given back after a
failure, so that the capped pool jams and every chat's messages stop.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
from aiohttp import web

from bridged.errors import TransportConnectError, TransportTimeout
from bridged.salesforce.liveagent.protocol import HttpRequest, Lane, Purpose
from bridged.salesforce.liveagent.transport import AiohttpTransport
from bridged.salesforce.messaging import protocol as ec
from bridged.salesforce.messaging.transport import AiohttpMessagingTransport
from bridged.tools.loadtest.procs import free_port

SESSION_KEY = "a7c3e2f0-1b2c!1700000000000!AbCdEf"
LA_HEADERS = (("X-LIVEAGENT-API-VERSION", "61"), ("X-LIVEAGENT-AFFINITY", "8f2e1a3c"),
              ("X-LIVEAGENT-SESSION-KEY", SESSION_KEY), ("X-LIVEAGENT-SEQUENCE", "7"),
              ("Accept", "application/json"), ("Content-Type", "application/json"))
EC_HEADERS = (("Content-Type", "application/json"), ("Authorization", "Bearer t0k3n"))


class Wire:
    """A loopback server that records each request as it came: method, raw path and query,
    the raw header lines in order, the body."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, str, list[tuple[str, str]], bytes]] = []
        self.hold = asyncio.Event()
        self.slow_s = 1.0
        self.url = ""

    async def record(self, request: web.Request) -> web.Response:
        headers = [(k.decode(), v.decode()) for k, v in request.raw_headers]
        self.seen.append((request.method, request.raw_path, headers, await request.read()))
        return web.Response(status=200, body=b'{"ok":true}', content_type="application/json")

    async def slow(self, request: web.Request) -> web.Response:
        self.seen.append((request.method, request.raw_path, [], b""))
        await asyncio.sleep(self.slow_s)
        return web.Response(status=200, body=b"late")

    async def held(self, request: web.Request) -> web.Response:
        self.seen.append((request.method, request.raw_path, [], b""))
        async with asyncio.timeout(10):
            await self.hold.wait()
        return web.Response(status=200, body=b"released")

    async def moved(self, request: web.Request) -> web.Response:
        self.seen.append((request.method, request.raw_path, [], b""))
        return web.Response(status=302, headers={"Location": self.url + "/elsewhere"})


@pytest.fixture
async def wire() -> AsyncIterator[Wire]:
    srv = Wire()
    app = web.Application()
    app.router.add_route("*", "/slow/{tail:.*}", srv.slow)
    app.router.add_route("*", "/held/{tail:.*}", srv.held)
    app.router.add_route("*", "/moved/{tail:.*}", srv.moved)
    app.router.add_route("*", "/{tail:.*}", srv.record)
    runner = web.AppRunner(app, shutdown_timeout=1.0)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    srv.url = f"http://127.0.0.1:{runner.addresses[0][1]}"
    try:
        yield srv
    finally:
        srv.hold.set()
        await runner.cleanup()


def _la(path: str, *, method: str = "POST", lane: Lane = Lane.POST,
        query: tuple[tuple[str, str], ...] = (), body: bytes | None = None,
        headers: tuple[tuple[str, str], ...] = LA_HEADERS) -> HttpRequest:
    return HttpRequest(method=method, path=path, purpose=Purpose.CHAT_MESSAGE, lane=lane,
                       headers=headers, query=query, body=body)


def _ec(path: str, *, method: str = "POST", query: tuple[tuple[str, str], ...] = (),
        body: bytes | None = None) -> ec.HttpRequest:
    return ec.HttpRequest(method=method, path=path, purpose=ec.Purpose.SEND_MESSAGE,
                          headers=EC_HEADERS, query=query, body=body)


async def test_live_agent_requests_reach_the_server_with_exactly_their_headers(
        wire: Wire) -> None:
    transport = AiohttpTransport(max_connections=4, max_request_connections=2)
    base = wire.url + "/chat/rest/"
    body = b'{"text":"hello"}'
    try:
        post = await transport.exchange(base, _la("Chasitor/ChatMessage", body=body), 5.0)
        poll = await transport.exchange(base, _la(
            "System/Messages", method="GET", lane=Lane.POLL, query=(("ack", "-1"),),
            headers=(*LA_HEADERS[:3], ("Accept", "application/json"))), 5.0)
        offset = await transport.exchange(base, _la(
            "System/ReconnectSession", method="GET",
            query=(("ReconnectSession.offset", "12 34"), ("x", "a&b=c/d?é"))), 5.0)
    finally:
        await transport.aclose()

    assert (post.status, post.body) == (poll.status, poll.body) == (200, b'{"ok":true}')
    assert offset.status == 200
    host = ("Host", wire.url.removeprefix("http://"))
    auto = [("Accept-Encoding", "gzip, deflate")]
    (m1, path1, headers1, body1), (m2, path2, headers2, body2), (m3, path3, _, _) = wire.seen
    # Host, the request's own headers in their order, aiohttp's Accept-Encoding and the
    # body's length; no User-Agent, nothing doubled, nothing else.
    assert (m1, path1, body1) == ("POST", "/chat/rest/Chasitor/ChatMessage", body)
    assert headers1 == [host, *LA_HEADERS, *auto, ("Content-Length", str(len(body)))]
    assert (m2, path2, body2) == ("GET", "/chat/rest/System/Messages?ack=-1", b"")
    assert headers2 == [host, *LA_HEADERS[:3], ("Accept", "application/json"), *auto]
    assert (m3, path3) == ("GET", "/chat/rest/System/ReconnectSession"
                                  "?ReconnectSession.offset=12+34&x=a%26b%3Dc/d?%C3%A9")


async def test_enhanced_chat_requests_reach_the_server_with_exactly_their_headers(
        wire: Wire) -> None:
    transport = AiohttpMessagingTransport(max_connections=4, max_request_connections=2)
    body = b'{"message":{"id":"m1"}}'
    try:
        send = await transport.exchange(
            wire.url, _ec("/iamessage/api/v2/conversation/c1/message", body=body), 5.0)
        close = await transport.exchange(wire.url, _ec(
            "/iamessage/api/v2/conversation/c1", method="DELETE",
            query=(("esDeveloperName", "Web Chat_1"),)), 5.0)
    finally:
        await transport.aclose()

    assert (send.status, send.body) == (close.status, close.body) == (200, b'{"ok":true}')
    host = ("Host", wire.url.removeprefix("http://"))
    auto = [("Accept", "*/*"), ("Accept-Encoding", "gzip, deflate")]
    (m1, path1, headers1, body1), (m2, path2, headers2, body2) = wire.seen
    assert (m1, path1, body1) == ("POST", "/iamessage/api/v2/conversation/c1/message", body)
    assert headers1 == [host, *EC_HEADERS, *auto, ("Content-Length", str(len(body)))]
    assert (m2, path2, body2) == (
        "DELETE", "/iamessage/api/v2/conversation/c1?esDeveloperName=Web+Chat_1", b"")
    assert headers2 == [host, *EC_HEADERS, *auto, ("Content-Length", "0")]


async def test_a_redirect_is_answered_not_followed(wire: Wire) -> None:
    # A redirect could lead a session key or a bearer token to a host that
    # salesforce.allowed_hosts never allowed.
    la = AiohttpTransport(max_connections=4, max_request_connections=2)
    ec_transport = AiohttpMessagingTransport(max_connections=4, max_request_connections=2)
    try:
        first = await la.exchange(wire.url + "/moved/", _la("Chasitor/ChatMessage"), 5.0)
        second = await ec_transport.exchange(wire.url, _ec("/moved/message"), 5.0)
    finally:
        await la.aclose()
        await ec_transport.aclose()
    assert first.status == second.status == 302
    assert [path for _, path, _, _ in wire.seen] == ["/moved/Chasitor/ChatMessage",
                                                     "/moved/message"]


async def test_the_same_timeout_fires_each_time_and_a_longer_one_waits(wire: Wire) -> None:
    # One ClientTimeout per value, shared by every request with that timeout: it fires for
    # each of them, and a request with another value gets its own.
    wire.slow_s = 0.6
    la = AiohttpTransport(max_connections=4, max_request_connections=1)
    ec_transport = AiohttpMessagingTransport(max_connections=4, max_request_connections=1)
    try:
        async with asyncio.timeout(10):  # a slot kept: the next request waits for good
            for _ in range(2):
                with pytest.raises(TransportTimeout,
                                   match=r"^ChatMessage: no answer within 0\.2 s$"):
                    await la.exchange(wire.url + "/slow/", _la("Chasitor/ChatMessage"), 0.2)
                with pytest.raises(TransportTimeout,
                                   match=r"^message: no answer within 0\.2 s$"):
                    await ec_transport.exchange(wire.url, _ec("/slow/message"), 0.2)
            # The pool's one connection was given back each time: these go, and wait.
            assert (await la.exchange(wire.url + "/slow/", _la("Chasitor/ChatMessage"),
                                      5.0)).body == b"late"
            assert (await ec_transport.exchange(wire.url, _ec("/slow/message"),
                                                5.0)).body == b"late"
    finally:
        await la.aclose()
        await ec_transport.aclose()
    assert len(wire.seen) == 6


async def test_a_failed_or_cancelled_request_gives_its_slot_back(wire: Wire) -> None:
    # One connection in each pool: a slot kept after a failure would stop every later
    # request of every chat (each waits below, bounded).
    dead = f"http://127.0.0.1:{free_port()}"
    allowed = [True]
    la = AiohttpTransport(max_connections=4, max_request_connections=1,
                          may_send=lambda: allowed[0])
    ec_transport = AiohttpMessagingTransport(max_connections=4, max_request_connections=1,
                                             may_send=lambda: allowed[0])
    try:
        async with asyncio.timeout(10):
            for _ in range(2):
                with pytest.raises(TransportConnectError, match=r"^ChatMessage: "):
                    await la.exchange(dead + "/", _la("Chasitor/ChatMessage"), 5.0)
                with pytest.raises(TransportConnectError, match=r"^message: "):
                    await ec_transport.exchange(dead, _ec("/message"), 5.0)
            allowed[0] = False
            with pytest.raises(TransportConnectError, match="not sent"):
                await la.exchange(wire.url + "/", _la("Chasitor/ChatMessage"), 5.0)
            with pytest.raises(TransportConnectError, match="not sent"):
                await ec_transport.exchange(wire.url, _ec("/message"), 5.0)
            allowed[0] = True
            # Cancelled while the server holds the answer.
            held = [asyncio.create_task(la.exchange(wire.url + "/held/",
                                                    _la("Chasitor/ChatMessage"), 5.0)),
                    asyncio.create_task(ec_transport.exchange(wire.url, _ec("/held/message"),
                                                              5.0))]
            while len(wire.seen) < 2:
                await asyncio.sleep(0.01)
            for task in held:
                task.cancel()
            await asyncio.gather(*held, return_exceptions=True)
            assert all(task.cancelled() for task in held)
            after = [(await la.exchange(wire.url + "/", _la("Chasitor/ChatMessage"),
                                        5.0)).status,
                     (await ec_transport.exchange(wire.url, _ec("/message"), 5.0)).status]
    finally:
        await la.aclose()
        await ec_transport.aclose()
    assert after == [200, 200]
    assert [path for _, path, _, _ in wire.seen] == [
        "/held/Chasitor/ChatMessage", "/held/message", "/Chasitor/ChatMessage", "/message"]


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@contextlib.asynccontextmanager
async def _streams_from(routes: dict[str, Handler]
                        ) -> AsyncIterator[tuple[str, AiohttpMessagingTransport]]:
    """A loopback server answering GET ``routes`` (path: handler), and a transport to it."""
    app = web.Application()
    for path, handler in routes.items():
        app.router.add_get(path, handler)
    runner = web.AppRunner(app, shutdown_timeout=1.0)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    transport = AiohttpMessagingTransport(max_connections=2, max_request_connections=1)
    try:
        yield f"http://127.0.0.1:{runner.addresses[0][1]}", transport
    finally:
        await transport.aclose()
        await runner.cleanup()


def _stream_request(path: str = "/eventrouter/v1/sse") -> ec.HttpRequest:
    return ec.HttpRequest(method="GET", path=path, purpose=ec.Purpose.EVENTS, headers=EC_HEADERS)


async def test_an_event_streams_chunk_is_not_held_while_the_next_one_is_awaited() -> None:
    """An idle conversation waits minutes for its next chunk: the last one (a few KB) is
    not kept alive meanwhile by the transport; the stream's end reads as ``b""``."""
    go_on = asyncio.Event()

    async def events(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        await response.write(b"id: 1\nevent: ping\ndata: 0\n\n")
        async with asyncio.timeout(10):
            await go_on.wait()
        return response

    try:
        async with _streams_from({"/eventrouter/v1/sse": events}) as (base, transport), \
                transport.stream(base, _stream_request(), 5.0, 10.0) as stream:
            assert not hasattr(stream, "__dict__")  # held by every chat: slots only
            assert await stream.read_chunk() == b"id: 1\nevent: ping\ndata: 0\n\n"
            waiting = asyncio.ensure_future(stream.read_chunk())
            for _ in range(5):
                await asyncio.sleep(0)
            assert not waiting.done()
            frame = waiting.get_coro().cr_frame  # type: ignore[union-attr]
            assert not any(isinstance(value, bytes) for value in frame.f_locals.values())
            go_on.set()
            assert await waiting == b""  # the server ended the stream
    finally:
        go_on.set()


@pytest.mark.parametrize(("content_type", "is_stream"), [
    ("text/event-stream", True),
    ("Text/Event-Stream; charset=utf-8", True),
    (" text/event-stream ;charset=UTF-8", True),
    ("application/json", False),
    ("text/event-streams", False),
    (None, False),
])
async def test_only_an_event_stream_answer_is_taken_for_the_stream(
        content_type: str | None, is_stream: bool) -> None:
    """A stream request answered 200 with another media type (an HTML page of a proxy, a JSON
    error) is refused, not parsed as events; the media type's case and parameters do not
    matter (RFC 9110 8.3.1)."""

    async def events(request: web.Request) -> web.StreamResponse:
        response = web.Response(status=200, body=b"x")
        response.headers["Content-Type"] = "" if content_type is None else content_type
        return response

    async with _streams_from({"/eventrouter/v1/sse": events}) as (base, transport), \
            transport.stream(base, _stream_request(), 5.0, 10.0) as stream:
        assert stream.status == 200
        assert stream.is_event_stream is is_stream


async def test_a_silent_or_broken_stream_raises_the_transports_errors() -> None:
    """read_chunk hands out aiohttp's own awaitable (no frame of ours held by every chat), so
    aiohttp's errors become the transport's on leaving the stream's context: a stream
    silent past its read timeout is ``TransportTimeout``, one cut off is
    ``TransportConnectError``; the reader names them, as before."""
    cut = asyncio.Event()

    async def silent(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        async with asyncio.timeout(10):
            await cut.wait()
        return response

    async def broken(request: web.Request) -> web.StreamResponse:
        # Announces more than it sends, then the connection closes mid-body.
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream",
                                               "Content-Length": "1000"})
        await response.prepare(request)
        await response.write(b"id: 1\n")
        assert request.transport is not None
        request.transport.close()
        return response

    try:
        async with _streams_from({"/silent": silent, "/broken": broken}) as (base, transport), \
                asyncio.timeout(10):
            with pytest.raises(TransportTimeout, match=r"^sse: silent past the read timeout$"):
                async with transport.stream(base, _stream_request("/silent"), 5.0, 0.2) as stream:
                    await stream.read_chunk()
            cut.set()
            with pytest.raises(TransportConnectError, match=r"^sse: "):
                async with transport.stream(base, _stream_request("/broken"), 5.0,
                                            5.0) as stream:
                    while await stream.read_chunk():
                        pass
            # An error of ours raised inside the context goes out as it is.
            with pytest.raises(TransportTimeout, match=r"^mine$"):
                async with transport.stream(base, _stream_request("/broken"), 5.0, 5.0):
                    raise TransportTimeout("mine")
    finally:
        cut.set()
