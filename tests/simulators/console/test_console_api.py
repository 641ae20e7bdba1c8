"""The agent console's HTTP side, with a real bridged and OCP client: its checks, its stream.

What a person at the console would notice: an action the chat's state does not allow is
refused with a message naming the field or the state, and nothing reaches the visitor; the
page's stream shows every change as it happens, ends cleanly when the simulator stops,
and the number of open pages is bounded.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable, Callable
from pathlib import Path

import aiohttp
import pytest

import bridged.simulators.console as console_package
from bridged.simulators.console import AgentConsole, LiveAgentConsole, console_url, server
from bridged.simulators.console.server import STREAMS_MAX
from bridged.simulators.liveagent import Simulator, running_simulator
from tests.conftest import FAST
from tests.ocp_client import OcpClient
from tests.simulators.console.helpers import TIMEOUT, Stream, post

Connect = Callable[..., Awaitable[OcpClient]]


async def test_actions_the_chat_does_not_allow_are_refused_and_reach_nobody(
        ocp: Connect, sim: Simulator, url: str, http: aiohttp.ClientSession) -> None:
    client = await ocp()
    await client.start("api-1", profile="console")
    await client.expect("queued")
    (session,) = sim.sessions.values()
    chat = f"liveagent/{session.id}/"

    assert await post(http, url, chat + "say", {"text": "hi"}) == (
        409, {"error": "cannot say this chat: it waits to be accepted"})
    status, answer = await post(http, url, chat + "accept", {})
    assert status == 400 and "`agent`" in answer["error"], answer
    assert (await post(http, url, chat + "accept", {"agent": "   "}))[0] == 400
    status, answer = await post(http, url, chat + "accept", {"agent": "Ann", "x": 1})
    assert status == 400 and "`x`" in answer["error"], answer
    status, answer = await post(http, url, chat + "accept", raw=b"{not json")
    assert status == 400 and "not JSON" in answer["error"], answer
    async with http.post(url + "api/" + chat + "accept", data=b'{"agent": "Eve"}',
                         headers={"Content-Type": "text/plain"}) as response:  # another site
        assert response.status == 415
        assert "must be application/json" in (await response.json())["error"]

    status, answer = await post(http, url, chat + "accept", {"agent": " Ann Agent "})
    assert status == 200
    assert (answer["conversation"]["state"], answer["conversation"]["agent"]) == (
        "active", "Ann Agent")
    assert (await client.expect("agent_joined"))["agent"] == "Ann Agent"

    assert await post(http, url, chat + "accept", {"agent": "Bo"}) == (
        409, {"error": "cannot accept this chat: Ann Agent already accepted it"})
    assert await post(http, url, chat + "transfer", {"agent": "Ann Agent"}) == (
        400, {"error": "agent: 'Ann Agent' is already on the chat"})
    status, answer = await post(http, url, chat + "say", {"text": "  "})
    assert status == 400 and answer["error"].startswith("text:"), answer
    status, answer = await post(http, url, chat + "typing", {"active": "yes"})
    assert status == 400 and "`$.active`" in answer["error"], answer
    assert (await post(http, url, chat + "dance"))[0] == 404
    assert (await post(http, url, "liveagent/no-such-chat/say", {"text": "x"}))[0] == 404
    assert (await post(http, url, f"messaging/{session.id}/say", {"text": "x"}))[0] == 404

    assert (await post(http, url, chat + "end"))[0] == 200
    assert (await client.expect("ended"))["reason"] == "agent"
    status, answer = await post(http, url, chat + "say", {"text": "still there?"})
    assert (status, answer["error"]) == (
        409, "cannot say this chat: it is over (the agent ended the chat)")
    # The visitor heard only what the accepted actions sent.
    assert [type_ for _, type_, _ in session.agent_messages] == [
        "ChatRequestSuccess", "ChatEstablished", "ChatEnded"]


async def test_the_stream_shows_each_change_as_it_happens(
        ocp: Connect, sim: Simulator, url: str, http: aiohttp.ClientSession) -> None:
    async with http.get(url + "events") as response:
        assert response.content_type == "text/event-stream"
        stream = Stream(response)
        assert await stream.next() == ("snapshot", {
            "backends": [{"key": "liveagent", "title": "Live Agent"}], "conversations": []})

        client = await ocp()
        await client.start("live-1", profile="console", visitor_name="Kim Visitor")
        waiting = await stream.until(lambda c: c is not None and c["state"] == "waiting")
        assert waiting is not None and waiting["visitor"] == "Kim Visitor"
        chat = f"liveagent/{waiting['id']}/"
        await post(http, url, chat + "accept", {"agent": "Lee Agent"})
        await stream.until(lambda c: c is not None and c["agent"] == "Lee Agent")
        assert (await client.expect("agent_joined"))["agent"] == "Lee Agent"

        await client.send({"type": "typing", "chat": "live-1", "active": True})
        await stream.until(lambda c: c is not None and c["visitor_typing"])
        await client.send({"type": "message", "chat": "live-1", "id": "m1", "text": "Hi Lee"})
        said = await stream.until(lambda c: c is not None and c["lines"] != [])
        assert said is not None
        assert said["lines"] == [{"side": "visitor", "name": "Kim Visitor", "text": "Hi Lee"}]
        assert said["visitor_typing"] is False  # a message ends the visitor's typing

        # A page opened now starts from the chat as it is.
        async with http.get(url + "events") as late:
            kind, snapshot = await Stream(late).next()
        assert kind == "snapshot"
        assert [(c["id"], c["state"], c["agent"]) for c in snapshot["conversations"]] == [
            (waiting["id"], "active", "Lee Agent")]

        await post(http, url, chat + "typing", {"active": True})
        assert (await client.expect("agent_typing"))["active"] is True
        await stream.until(lambda c: c is not None and c["agent_typing"])
        await post(http, url, chat + "say", {"text": "Hello Kim"})
        assert (await client.expect("agent_message"))["text"] == "Hello Kim"
        assert (await client.expect("agent_typing"))["active"] is False  # saying ends typing
        await stream.until(lambda c: c is not None and not c["agent_typing"])

        await client.send({"type": "end", "chat": "live-1"})
        ended = await stream.until(lambda c: c is not None and c["state"] == "ended")
        assert ended is not None and ended["ended"] == "the visitor ended the chat"

        sim.reap(asyncio.get_running_loop().time() + FAST.ended_retention_s + 1)
        assert await stream.until(lambda c: c is None) is None  # forgotten: gone from the page


async def test_a_page_stream_ends_cleanly_when_the_simulator_stops() -> None:
    console = AgentConsole()
    async with aiohttp.ClientSession() as http:
        async with running_simulator(FAST, setup=lambda s: console.mount(s.app)) as sim:
            console.add(LiveAgentConsole(sim))
            response = await http.get(console_url(sim) + "events")
            assert (await Stream(response).next())[0] == "snapshot"
        # The stream was finished, not cut off: the rest reads as a clean end.
        async with asyncio.timeout(TIMEOUT):
            assert await response.content.read() == b""
        response.release()


async def test_open_pages_are_bounded(url: str, http: aiohttp.ClientSession,
                                      monkeypatch: pytest.MonkeyPatch) -> None:
    # A page that went away is noticed at the next write, at the latest the next ping.
    monkeypatch.setattr(server, "PING_S", 0.05)
    streams = [await http.get(url + "events") for _ in range(STREAMS_MAX)]
    try:
        for response in streams:
            assert (await Stream(response).next())[0] == "snapshot"
        async with http.get(url + "events") as refused:
            assert refused.status == 503
            assert "too many console pages open" in await refused.text()
        streams.pop().close()
        async with asyncio.timeout(TIMEOUT):
            while True:
                async with http.get(url + "events") as again:
                    if again.status == 200:
                        break
                await asyncio.sleep(0.05)
    finally:
        for response in streams:
            response.close()


async def test_the_page_needs_nothing_from_outside(url: str, http: aiohttp.ClientSession
                                                  ) -> None:
    async with http.get(url) as page:
        assert page.status == 200 and page.content_type == "text/html"
        html = await page.text()
    references = re.findall(r'(?:src|href)="([^"]*)"', html)
    assert references and all(ref.startswith(("static/", "data:")) for ref in references)
    for ref in references:
        if ref.startswith("static/"):
            async with http.get(url + ref) as asset:
                assert asset.status == 200, ref
    static = Path(console_package.__file__).parent / "static"
    for path in static.iterdir():
        assert not re.search(r"https?://|//[a-z]", path.read_text()), path


async def test_a_page_far_behind_gets_a_fresh_snapshot_instead_of_a_backlog(
        ocp: Connect, sim: Simulator, console: AgentConsole, url: str,
        http: aiohttp.ClientSession, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(server, "DIRTY_MAX", 2)
    client = await ocp()
    for n in range(3):
        await client.start(f"far-{n}", profile="console")
        await client.expect("queued", chat=f"far-{n}")
    async with http.get(url + "events") as response:
        stream = Stream(response)
        assert len((await stream.next())[1]["conversations"]) == 3
        # Three chats change before the page's stream can write again: more than it keeps.
        for session_id in list(sim.sessions):
            console.act("liveagent", session_id, "accept", b'{"agent": "Ann"}')
        kind, snapshot = await stream.next()
    assert kind == "snapshot"
    assert sorted((c["state"], c["agent"]) for c in snapshot["conversations"]) == [
        ("active", "Ann")] * 3
