"""Both transports keep no cookies: nothing one chat's answer sets goes out with another's.

Every chat's requests share a transport's sessions, while bridged is a chat visitor of its
own per chat. What a user would notice if a session kept cookies: a cookie Salesforce, or a
proxy or load balancer in front of it, sets in one chat's answer (a sticky-routing cookie, a
visitor id) would go out with every other chat's requests to that host, so that one
visitor's state reaches another's chat. Neither backend needs a cookie (Live Agent: the
session key and affinity headers; Enhanced Chat: the bearer token).

The server is reached as ``localhost`` (on 127.0.0.1): aiohttp's default jar would refuse a
cookie from a bare IP address, and the test would prove nothing.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from aiohttp import web

from bridged.salesforce.liveagent.protocol import HttpRequest, Lane, Purpose
from bridged.salesforce.liveagent.transport import AiohttpTransport
from bridged.salesforce.messaging import protocol as ec
from bridged.salesforce.messaging.transport import AiohttpMessagingTransport


class Jar:
    """A loopback server that notes each request's chat (its ``chat`` query parameter) and
    Cookie header, and answers every request with a Set-Cookie naming that chat."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, str | None]] = []
        self.url = ""

    async def answer(self, request: web.Request) -> web.StreamResponse:
        chat = request.query.get("chat", "")
        self.seen.append((chat, request.headers.get("Cookie")))
        await request.read()
        # What a load balancer's sticky-routing cookie looks like: host-only, every path.
        headers = {"Set-Cookie": f"AWSALB=node-of-{chat}; Path=/; Max-Age=600"}
        if request.path == "/eventrouter/v1/sse":
            response = web.StreamResponse(
                headers={**headers, "Content-Type": "text/event-stream"})
            await response.prepare(request)
            await response.write(b": ping\n\n")
            await response.write_eof()
            return response
        return web.Response(status=200, body=b"{}", content_type="application/json",
                            headers=headers)


@pytest.fixture
async def jar() -> AsyncIterator[Jar]:
    srv = Jar()
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", srv.answer)
    runner = web.AppRunner(app, shutdown_timeout=1.0)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    srv.url = f"http://localhost:{runner.addresses[0][1]}"
    try:
        yield srv
    finally:
        await runner.cleanup()


def _la(chat: str, lane: Lane) -> HttpRequest:
    path, method = (("System/Messages", "GET") if lane is Lane.POLL
                    else ("Chasitor/ChatMessage", "POST"))
    headers = (("X-LIVEAGENT-API-VERSION", "61"), ("X-LIVEAGENT-AFFINITY", f"aff-{chat}"),
               ("X-LIVEAGENT-SESSION-KEY", f"key-{chat}"))
    return HttpRequest(method=method, path=path, purpose=Purpose.CHAT_MESSAGE, lane=lane,
                       headers=headers, query=(("chat", chat),),
                       body=b'{"text":"hi"}' if method == "POST" else None)


def _ec(chat: str, purpose: ec.Purpose) -> ec.HttpRequest:
    path, method = (("/eventrouter/v1/sse", "GET") if purpose is ec.Purpose.EVENTS
                    else (f"/iamessage/api/v2/conversation/{chat}/message", "POST"))
    return ec.HttpRequest(method=method, path=path, purpose=purpose,
                          headers=(("Authorization", f"Bearer token-of-{chat}"),),
                          query=(("chat", chat),),
                          body=b"{}" if method == "POST" else None)


@pytest.mark.parametrize("lane", [Lane.POST, Lane.POLL])
async def test_live_agent_sends_no_cookie_an_answer_set(jar: Jar, lane: Lane) -> None:
    transport = AiohttpTransport(max_connections=4, max_request_connections=2)
    base = jar.url + "/chat/rest/"
    try:
        for chat in ("a", "b", "a"):
            answer = await transport.exchange(base, _la(chat, lane), 5.0)
            assert answer.status == 200
    finally:
        await transport.aclose()

    # Chat a's answer set a cookie; neither chat b's next request nor chat a's own carries it.
    assert jar.seen == [("a", None), ("b", None), ("a", None)]


async def test_enhanced_chat_sends_no_cookie_an_answer_set(jar: Jar) -> None:
    transport = AiohttpMessagingTransport(max_connections=4, max_request_connections=2)
    try:
        for chat in ("a", "b", "a"):
            answer = await transport.exchange(jar.url, _ec(chat, ec.Purpose.SEND_MESSAGE), 5.0)
            assert answer.status == 200
        for chat in ("a", "b", "a"):
            async with transport.stream(jar.url, _ec(chat, ec.Purpose.EVENTS), 5.0,
                                        5.0) as stream:
                assert (stream.status, stream.is_event_stream) == (200, True)
    finally:
        await transport.aclose()

    # The requests' pool, then the streams' pool: no cookie crosses chats, nor stays.
    assert jar.seen == [("a", None), ("b", None), ("a", None)] * 2
