"""Both transports over real loopback: the requests share a capped pool of kept-alive
connections, while what a chat holds open (a long poll, an event stream) has its own.

What a user would notice: the descriptors bridged holds. One connection per request in
flight would cost a descriptor per chat at saturation (19,000 chats could not fit in 20,000
open files); a capped pool costs at most its cap, and a held poll or stream never waits
for it.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import pytest
from aiohttp import web

from bridged.errors import TransportConnectError
from bridged.ops.limits import chats_that_fit, fds_needed
from bridged.salesforce.liveagent.protocol import HttpRequest, Lane, Purpose
from bridged.salesforce.liveagent.transport import AiohttpTransport
from bridged.salesforce.messaging import protocol as ec
from bridged.salesforce.messaging.transport import AiohttpMessagingTransport


class Server:
    """A loopback server that notes the client port of every request (one per connection)."""

    def __init__(self) -> None:
        self.ports: dict[str, set[int]] = {"post": set(), "held": set()}
        self.in_flight = 0
        self.most_in_flight = 0
        self.release = asyncio.Event()
        self.url = ""

    def _note(self, request: web.Request, kind: str) -> None:
        peer = request.transport.get_extra_info("peername") if request.transport else None
        assert peer is not None
        self.ports[kind].add(peer[1])

    async def post(self, request: web.Request) -> web.Response:
        self._note(request, "post")
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        await asyncio.sleep(0.01)
        self.in_flight -= 1
        return web.Response(status=202, text="{}")

    async def quick_poll(self, request: web.Request) -> web.Response:
        """A poll answered at once: nothing to deliver."""
        self._note(request, "held")
        return web.Response(status=204)

    async def held(self, request: web.Request) -> web.StreamResponse:
        """Held until released: a parked long poll, an open event stream."""
        self._note(request, "held")
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        async with asyncio.timeout(10):
            await self.release.wait()
        return response


@contextlib.asynccontextmanager
async def _serving(app: web.Application) -> AsyncIterator[str]:
    """``app`` on a free port of 127.0.0.1 while the block runs; its base URL."""
    runner = web.AppRunner(app, shutdown_timeout=1.0)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        yield f"http://127.0.0.1:{runner.addresses[0][1]}"
    finally:
        await runner.cleanup()


@pytest.fixture
async def server() -> AsyncIterator[Server]:
    srv = Server()
    app = web.Application()
    app.router.add_post("/chat/rest/Chasitor/ChatMessage", srv.post)
    app.router.add_get("/chat/rest/System/Messages", srv.held)
    app.router.add_post("/iamessage/api/v2/conversation/c/message", srv.post)
    app.router.add_get("/eventrouter/v1/sse", srv.held)
    async with _serving(app) as url:
        srv.url = url
        try:
            yield srv
        finally:
            srv.release.set()


def _la(purpose: Purpose, lane: Lane, path: str, method: str) -> HttpRequest:
    return HttpRequest(method=method, path=path, purpose=purpose, lane=lane, headers=())


async def test_live_agent_posts_share_a_capped_pool_and_polls_never_wait_for_it(
        server: Server) -> None:
    transport = AiohttpTransport(max_connections=100, keepalive_s=5.0,
                                 max_request_connections=4)
    base = server.url + "/chat/rest/"
    try:
        # Ten chats park their long polls; then they send 60 messages at once.
        polls = [asyncio.create_task(transport.exchange(
            base, _la(Purpose.MESSAGES, Lane.POLL, "System/Messages", "GET"), 10.0))
            for _ in range(10)]
        async with asyncio.timeout(5):
            while len(server.ports["held"]) < 10:
                await asyncio.sleep(0.01)
        post = _la(Purpose.CHAT_MESSAGE, Lane.POST, "Chasitor/ChatMessage", "POST")
        answers = await asyncio.gather(*(transport.exchange(base, post, 10.0)
                                         for _ in range(60)))
        server.release.set()
        await asyncio.gather(*polls)
    finally:
        await transport.aclose()

    assert [a.status for a in answers] == [202] * 60
    assert len(server.ports["post"]) <= 4, server.ports["post"]
    assert server.most_in_flight <= 4
    # No POST ever went over a poll's connection, nor waited for one.
    assert not server.ports["post"] & server.ports["held"]


async def test_enhanced_chat_requests_share_a_capped_pool_beside_the_streams(
        server: Server) -> None:
    transport = AiohttpMessagingTransport(max_connections=100, keepalive_s=5.0,
                                          max_request_connections=3)
    stream_request = ec.HttpRequest(method="GET", path="/eventrouter/v1/sse",
                                    purpose=ec.Purpose.EVENTS, headers=())
    send = ec.HttpRequest(method="POST", path="/iamessage/api/v2/conversation/c/message",
                          purpose=ec.Purpose.SEND_MESSAGE, headers=(), body=b"{}")
    try:
        async with transport.stream(server.url, stream_request, 5.0, 10.0) as one, \
                transport.stream(server.url, stream_request, 5.0, 10.0) as two:
            assert one.status == two.status == 200
            answers = await asyncio.gather(*(transport.exchange(server.url, send, 10.0)
                                             for _ in range(40)))
            server.release.set()
    finally:
        await transport.aclose()

    assert [a.status for a in answers] == [202] * 40
    assert len(server.ports["post"]) <= 3, server.ports["post"]
    assert len(server.ports["held"]) == 2
    assert not server.ports["post"] & server.ports["held"]


class SlowFirst:
    """Answers the first POST after ``first_s``, every later one after ``later_s``."""

    def __init__(self, first_s: float, later_s: float) -> None:
        self.delays = [first_s]
        self.later_s = later_s
        self.answered = 0

    async def post(self, request: web.Request) -> web.Response:
        delay = self.delays.pop() if self.delays else self.later_s
        await asyncio.sleep(delay)
        self.answered += 1
        return web.Response(status=202, text="{}")


@pytest.fixture
async def slow_first() -> AsyncIterator[tuple[SlowFirst, str]]:
    srv = SlowFirst(first_s=1.0, later_s=0.6)
    app = web.Application()
    app.router.add_post("/chat/rest/Chasitor/ChatMessage", srv.post)
    app.router.add_post("/iamessage/api/v2/conversation/c/message", srv.post)
    async with _serving(app) as url:
        yield srv, url


async def test_a_request_waiting_for_a_pooled_connection_is_not_timed_out_unsent(
        slow_first: tuple[SlowFirst, str]) -> None:
    # Thousands of chats share a capped pool: a request's timeout is Salesforce's time to
    # answer it, not its wait for a connection. Counted from the wait, a burst times out
    # requests that never left, each retry queues again, and the queue never drains.
    srv, url = slow_first
    la = AiohttpTransport(max_connections=10, keepalive_s=5.0, max_request_connections=1)
    ec_transport = AiohttpMessagingTransport(max_connections=10, keepalive_s=5.0,
                                             max_request_connections=1)
    post = _la(Purpose.CHAT_MESSAGE, Lane.POST, "Chasitor/ChatMessage", "POST")
    send = ec.HttpRequest(method="POST", path="/iamessage/api/v2/conversation/c/message",
                          purpose=ec.Purpose.SEND_MESSAGE, headers=(), body=b"{}")
    try:
        # Each second request waits 1 s for the pool's one connection, then is answered in
        # 0.6 s: 1.6 s after it was asked for, within 1.2 s of being sent.
        first = asyncio.create_task(la.exchange(url + "/chat/rest/", post, 1.2))
        await asyncio.sleep(0.1)
        second = await la.exchange(url + "/chat/rest/", post, 1.2)
        assert (await first).status == second.status == 202
        srv.delays = [1.0]
        first_ec = asyncio.create_task(ec_transport.exchange(url, send, 1.2))
        await asyncio.sleep(0.1)
        second_ec = await ec_transport.exchange(url, send, 1.2)
        assert (await first_ec).status == second_ec.status == 202
    finally:
        await la.aclose()
        await ec_transport.aclose()
    assert srv.answered == 4


async def test_a_request_leaving_the_queue_after_the_node_lost_its_lease_never_goes(
        slow_first: tuple[SlowFirst, str]) -> None:
    # Several nodes: whether this node may send is asked when the request leaves the queue,
    # right before it goes; asked when it joined, a node whose lease ran out while it waited
    # would still send (and the chat may be another node's by then).
    srv, url = slow_first
    allowed = [True]
    la = AiohttpTransport(max_connections=10, keepalive_s=5.0, max_request_connections=1,
                          may_send=lambda: allowed[0])
    ec_transport = AiohttpMessagingTransport(max_connections=10, keepalive_s=5.0,
                                             max_request_connections=1,
                                             may_send=lambda: allowed[0])
    post = _la(Purpose.CHAT_MESSAGE, Lane.POST, "Chasitor/ChatMessage", "POST")
    send = ec.HttpRequest(method="POST", path="/iamessage/api/v2/conversation/c/message",
                          purpose=ec.Purpose.SEND_MESSAGE, headers=(), body=b"{}")
    try:
        for transport_call in (lambda: la.exchange(url + "/chat/rest/", post, 5.0),
                               lambda: ec_transport.exchange(url, send, 5.0)):
            allowed[0] = True
            srv.delays = [1.0]
            first = asyncio.create_task(transport_call())
            await asyncio.sleep(0.1)
            second = asyncio.create_task(transport_call())
            await asyncio.sleep(0.1)
            allowed[0] = False  # the lease is lost while the second waits for the connection
            assert (await first).status == 202
            with pytest.raises(TransportConnectError, match="not sent"):
                await second
    finally:
        await la.aclose()
        await ec_transport.aclose()
    assert srv.answered == 2  # the two first ones only


def test_nineteen_thousand_chats_over_ten_connections_fit_in_twenty_thousand_files() -> None:
    # One descriptor per chat for its poll or stream, the capped request pools of both
    # backends, the OCP connections and the reserve.
    assert fds_needed(19_000, 10) <= 20_000
    assert fds_needed(19_000, 10) / 19_000 <= 1.05
    fit = chats_that_fit(20_000, 10)
    assert fds_needed(fit, 10) <= 20_000 < fds_needed(fit + 1, 10)
    assert chats_that_fit(100, 1) == 0


async def test_a_poll_connection_outlives_the_post_keep_alive(server: Server) -> None:
    # What a user would notice at 19,000 chats: every connection closed while idle is a
    # connect() later, each milliseconds of the event loop once the chats' own connections
    # nearly fill the local port range. A POST connection idle past salesforce.keepalive_s
    # is closed; a poll's is kept, since the next poll wants it as soon as one more chat
    # has a poll out.
    app = web.Application()
    app.router.add_get("/chat/rest/System/Messages", server.quick_poll)
    app.router.add_post("/chat/rest/Chasitor/ChatMessage", server.post)
    transport = AiohttpTransport(max_connections=10, keepalive_s=0.2,
                                 max_request_connections=2)
    poll = _la(Purpose.MESSAGES, Lane.POLL, "System/Messages", "GET")
    post = _la(Purpose.CHAT_MESSAGE, Lane.POST, "Chasitor/ChatMessage", "POST")
    async with _serving(app) as url:
        base = url + "/chat/rest/"
        try:
            for _ in range(2):
                assert (await transport.exchange(base, poll, 5.0)).status == 204
                assert (await transport.exchange(base, post, 5.0)).status == 202
                await asyncio.sleep(1.0)  # five times the POSTs' keep-alive
        finally:
            await transport.aclose()
    assert len(server.ports["held"]) == 1, server.ports["held"]
    assert len(server.ports["post"]) == 2, server.ports["post"]
