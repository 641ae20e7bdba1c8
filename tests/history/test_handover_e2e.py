"""The bot's history reaches the agent: fetched from a fake OCP, checked at the simulator."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from bridged.simulators.liveagent import Simulator
from bridged.simulators.ocp_history import OcpHistoryService, running_history_service
from tests.conftest import TOKEN, bridged_config, running_bridged
from tests.ocp_client import connect

PAT = "pat-0123456789"
JWT = "jwt-per-chat-0123456789"
HISTORY = {"messages": [
    {"role": "bot", "text": "Hello, how can I help?"},
    {"role": "user", "text": "My card is blocked"},
    {"role": "assistant", "text": "Let me get a person for you."},
]}


@pytest.fixture
async def ocp_history() -> AsyncIterator[tuple[OcpHistoryService, str]]:
    service = OcpHistoryService(bearer_tokens={JWT}, personal_access_tokens={PAT})
    async with running_history_service(service) as url:
        yield service, url


async def chat_with_history(sim: Simulator, tmp_path: Path, http: aiohttp.ClientSession,
                            url: str, chat: str, **start: object) -> list[dict[str, object]]:
    config = bridged_config(sim, tmp_path, history={"base_url": url,
                                                    "personal_access_token": PAT,
                                                    "timeout_s": 0.5})
    async with running_bridged(config) as daemon:
        client = await connect(http, daemon.url, TOKEN)
        await client.start(chat, profile="echo", **start)
        await client.expect("agent_joined")
        await client.send({"type": "message", "chat": chat, "id": "m1", "text": "hi agent"})
        await client.expect("agent_message", text="Echo: hi agent")
        return client.received


async def test_history_as_prechat_detail_and_transcript_before_the_visitor(
        sim: Simulator, tmp_path: Path, http: aiohttp.ClientSession,
        ocp_history: tuple[OcpHistoryService, str]) -> None:
    service, url = ocp_history
    service.set_history("ocp-session-7", HISTORY)
    received = await chat_with_history(sim, tmp_path, http, url, "h-1",
                                       history_session="ocp-session-7")
    (session,) = sim.sessions.values()
    detail = session.init["prechatDetails"][-1]
    assert detail == {"label": "Bot conversation", "value": (
        "Bot: Hello, how can I help?\nVisitor: My card is blocked\n"
        "Bot: Let me get a person for you."), "transcriptFields": [], "displayToAgent": True}
    assert session.visitor_messages == [
        "Conversation with the bot before this chat:\nBot: Hello, how can I help?\n"
        "Visitor: My card is blocked\nBot: Let me get a person for you.",
        "hi agent",
    ]
    # The transcript is not the visitor's: OCP is told only about its own message.
    assert [e["id"] for e in received if e.get("type") == "delivered"] == ["m1"]
    (request,) = service.requests
    assert (request.session_id, request.auth) == ("ocp-session-7", "personal_access_token")


async def test_history_token_from_start_is_used_and_chat_id_is_the_default_session(
        sim: Simulator, tmp_path: Path, http: aiohttp.ClientSession,
        ocp_history: tuple[OcpHistoryService, str]) -> None:
    service, url = ocp_history
    service.set_history("h-2", [{"sender": "bot", "message": "Hi"}])
    await chat_with_history(sim, tmp_path, http, url, "h-2", history_token=JWT)
    (request,) = service.requests
    assert (request.session_id, request.auth) == ("h-2", "bearer")
    (session,) = sim.sessions.values()
    assert session.init["prechatDetails"][-1]["value"] == "Bot: Hi"


@pytest.mark.parametrize("fault", ["status", "slow", "garbage"])
async def test_history_that_cannot_be_had_never_stops_the_chat(
        sim: Simulator, tmp_path: Path, http: aiohttp.ClientSession,
        ocp_history: tuple[OcpHistoryService, str], fault: str,
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    service, url = ocp_history
    if fault == "status":
        service.fail_with(500)
    elif fault == "slow":
        service.set_history("h-3", HISTORY)
        service.delay_s = 2.0  # past the 0.5 s timeout
    else:
        service.set_raw("h-3", b"<html>not json</html>")
    await chat_with_history(sim, tmp_path, http, url, "h-3")
    (session,) = sim.sessions.values()
    unavailable = "The conversation with the bot is not available."
    assert session.init["prechatDetails"][-1]["value"] == unavailable
    assert session.visitor_messages == [unavailable, "hi agent"]
    logged = " ".join(repr(record.__dict__) for record in caplog.records)
    assert "history_unavailable" in logged
    assert PAT not in logged and JWT not in logged


async def test_a_cookie_the_history_service_sets_never_goes_out_with_another_fetch(
        sim: Simulator, tmp_path: Path, http: aiohttp.ClientSession) -> None:
    # Each chat is a visitor of its own: a cookie the history service (or a proxy before
    # it) sets in one chat's answer must not reach the next chat's fetch. Reached as
    # "localhost": a cookie jar would refuse a cookie from a bare IP address.
    service = OcpHistoryService(bearer_tokens={JWT}, personal_access_tokens={PAT})
    cookies_seen: list[str | None] = []

    @web.middleware
    async def sets_a_cookie(request: web.Request, handler: Any) -> web.StreamResponse:
        cookies_seen.append(request.headers.get("Cookie"))
        response = await handler(request)
        response.set_cookie("AWSALB", f"node-of-{len(cookies_seen)}")
        return response

    service.app.middlewares.append(sets_a_cookie)
    for session in ("s-1", "s-2", "s-3"):
        service.set_history(session, HISTORY)
    async with running_history_service(service) as url:
        config = bridged_config(sim, tmp_path, history={
            "base_url": url.replace("127.0.0.1", "localhost"),
            "personal_access_token": PAT, "timeout_s": 2.0})
        async with running_bridged(config) as daemon:
            client = await connect(http, daemon.url, TOKEN)
            for n, session in enumerate(("s-1", "s-2", "s-3")):
                await client.start(f"hc-{n}", profile="echo", history_session=session)
                await client.expect("agent_joined", chat=f"hc-{n}")
    assert len(cookies_seen) == 3
    assert cookies_seen == [None, None, None]
