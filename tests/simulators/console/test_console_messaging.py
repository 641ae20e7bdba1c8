"""The agent console on the Enhanced Chat simulator: what the visitor's stream gets, what the
page's stream shows.

Real servers on 127.0.0.1: the Live Agent simulator serving the console (as ``bridged
simulator`` does) with both simulators added, the Enhanced Chat simulator, and a dumb guest
client (tests/simulators/messaging/helpers.py) on deployment ``Sim_Manual`` playing the
visitor. Each action taken at the console is checked at the visitor's end, event by event.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
import pytest

from bridged.simulators import messaging
from bridged.simulators.console import AgentConsole, add_simulators
from bridged.simulators.liveagent import Simulator, running_simulator
from tests.conftest import FAST
from tests.simulators.console.helpers import (
    Stream,
    from_agent,
    participant,
    post,
    text,
    visitor_asks,
)
from tests.simulators.messaging.helpers import Guest


@pytest.fixture
async def sim(console: AgentConsole, msim: messaging.Simulator) -> AsyncIterator[Simulator]:
    """The Live Agent simulator serving the console, with both simulators on it."""
    async with running_simulator(FAST, setup=lambda s: console.mount(s.app)) as simulator:
        add_simulators(console, simulator, msim)
        yield simulator


async def test_a_visitor_is_accepted_answered_transferred_and_ended_from_the_console(
        guests: Callable[[], Guest], msim: messaging.Simulator, url: str,
        http: aiohttp.ClientSession) -> None:
    async with http.get(url + "events") as response:
        stream = Stream(response)
        kind, snapshot = await stream.next()
        assert (kind, snapshot["backends"]) == ("snapshot", [
            {"key": "liveagent", "title": "Live Agent"},
            {"key": "messaging", "title": "Enhanced Chat"}])

        # The visitor's conversation appears as waiting, named by its pre-chat fields.
        guest, reader = await visitor_asks(guests)
        cid = guest.conversation_id
        waiting = await stream.until(lambda c: c is not None and c["id"] == cid)
        assert waiting is not None
        assert (waiting["state"], waiting["visitor"], waiting["agent"]) == (
            "waiting", "Dana Visitor", None)
        assert waiting["details"] == [["_firstName", "Dana"], ["_lastName", "Visitor"],
                                      ["OrderNumber", "A-1001"]]
        chat = f"messaging/{cid}/"

        # Accepted as Grace Hopper: the visitor's stream gets her add, the session goes Active.
        status, answer = await post(http, url, chat + "accept", {"agent": "Grace Hopper"})
        assert status == 200, answer
        assert (answer["conversation"]["state"], answer["conversation"]["agent"]) == (
            "active", "Grace Hopper")
        added, active = await reader.take(2)
        assert participant(added) == (
            "CONVERSATION_PARTICIPANT_CHANGED", "add", "Agent", "Grace Hopper")
        assert active.payload["sessionStatus"] == "Active"
        assert await guest.routing_status() == "ROUTED"

        # The visitor's typing and message show in the console's view of the conversation.
        assert (await guest.typing(True)).status == 200
        await reader.next()  # the visitor's own typing comes back on its stream
        await stream.until(lambda c: c is not None and c["visitor_typing"])
        assert (await guest.send("Hello, my parcel never arrived.")).status == 202
        await reader.next()  # and its own message
        said = await stream.until(lambda c: c is not None and c["lines"] != [])
        assert said is not None
        assert said["lines"] == [{"side": "visitor", "name": "Dana Visitor",
                                  "text": "Hello, my parcel never arrived."}]
        assert said["visitor_typing"] is False  # a message ends the visitor's typing

        # The agent's typing and message reach the visitor; saying it ends the typing.
        assert (await post(http, url, chat + "typing", {"active": True}))[0] == 200
        (typing,) = await reader.take(1)
        assert from_agent(typing) == (
            "CONVERSATION_TYPING_STARTED_INDICATOR", "Agent", "Grace Hopper")
        await stream.until(lambda c: c is not None and c["agent_typing"])
        assert (await post(http, url, chat + "say",
                           {"text": "Sorry to hear that! Let me look it up."}))[0] == 200
        message, stopped = await reader.take(2)
        assert from_agent(message) == ("CONVERSATION_MESSAGE", "Agent", "Grace Hopper")
        assert text(message) == "Sorry to hear that! Let me look it up."
        assert from_agent(stopped) == (
            "CONVERSATION_TYPING_STOPPED_INDICATOR", "Agent", "Grace Hopper")
        await stream.until(lambda c: c is not None and not c["agent_typing"])

        # Transferred to Bob Builder: remove, RoutingResult Transfer, add; Bob answers.
        status, answer = await post(http, url, chat + "transfer", {"agent": "Bob Builder"})
        assert (status, answer["conversation"]["agent"]) == (200, "Bob Builder")
        removed, routed, added = await reader.take(3)
        assert participant(removed) == (
            "CONVERSATION_PARTICIPANT_CHANGED", "remove", "Agent", "Grace Hopper")
        assert routed.event == "CONVERSATION_ROUTING_RESULT"
        assert routed.payload["routingType"] == "Transfer"
        assert participant(added) == (
            "CONVERSATION_PARTICIPANT_CHANGED", "add", "Agent", "Bob Builder")
        assert added.payload["entries"][0]["participant"]["subject"] != (
            removed.payload["entries"][0]["participant"]["subject"])
        assert await guest.routing_status() == "ROUTED"
        assert (await post(http, url, chat + "say", {"text": "Bob here: arriving tomorrow."}
                           ))[0] == 200
        (message,) = await reader.take(1)
        assert from_agent(message) == ("CONVERSATION_MESSAGE", "Agent", "Bob Builder")

        # Ended: as the strict simulator ends a session (the conversation stays open).
        status, answer = await post(http, url, chat + "end")
        assert (status, answer["conversation"]["state"], answer["conversation"]["ended"]) == (
            200, "ended", "the agent ended the chat")
        removed, ended = await reader.take(2)
        assert participant(removed) == (
            "CONVERSATION_PARTICIPANT_CHANGED", "remove", "Agent", "Bob Builder")
        assert ended.event == "CONVERSATION_SESSION_STATUS_CHANGED"
        assert (ended.payload["sessionStatus"], ended.payload["sessionEndedByRole"]) == (
            "Ended", "Agent")
        assert await guest.routing_status() == "NEEDS_ROUTING"
        assert (await guest.send("still there?")).status == 417
        # Nothing else went to the visitor: the simulator's last event is the end.
        assert msim.conversations[cid].events[-1][0] == ended.id

        status, answer = await post(http, url, chat + "say", {"text": "one more thing"})
        assert (status, answer["error"]) == (
            409, "cannot say this chat: it is over (the agent ended the chat)")
        final = await stream.until(lambda c: c is not None and c["state"] == "ended")
        assert final is not None and final["lines"] == [
            {"side": "visitor", "name": "Dana Visitor", "text": "Hello, my parcel never arrived."},
            {"side": "agent", "name": "Grace Hopper",
             "text": "Sorry to hear that! Let me look it up."},
            {"side": "agent", "name": "Bob Builder", "text": "Bob here: arriving tomorrow."},
        ]


async def test_a_new_session_waits_again_and_a_closed_conversation_goes_away(
        guests: Callable[[], Guest], msim: messaging.Simulator, url: str,
        http: aiohttp.ClientSession) -> None:
    guest, reader = await visitor_asks(guests, firstName="Kim")
    cid = guest.conversation_id
    chat = f"messaging/{cid}/"
    assert (await post(http, url, chat + "accept", {"agent": "Lee Agent"}))[0] == 200
    assert (await guest.send("Hi Lee")).status == 202
    assert (await post(http, url, chat + "end"))[0] == 200

    async with http.get(url + "events") as response:
        stream = Stream(response)
        _, snapshot = await stream.next()
        assert [(c["id"], c["state"], c["visitor"]) for c in snapshot["conversations"]] == [
            (cid, "ended", "Kim")]

        # The visitor starts a new session (as after a 417): it waits for an agent again.
        resent = await guest.send("I am back", isNewMessagingSession=True,
                                  routingAttributes={"firstName": "Kim"})
        assert resent.status == 202, resent
        again = await stream.until(lambda c: c is not None and c["state"] == "waiting")
        assert again is not None and [line["text"] for line in again["lines"]] == [
            "Hi Lee", "I am back"]
        assert (await post(http, url, chat + "accept", {"agent": "Ann Agent"}))[0] == 200
        await stream.until(lambda c: c is not None and c["agent"] == "Ann Agent")

        # The visitor closes the conversation: ended; once the simulator forgets it, gone.
        assert (await guest.close()).status == 204
        closed = await stream.until(lambda c: c is not None and c["state"] == "ended")
        assert closed is not None and closed["ended"] == "the visitor closed the conversation"
        status, answer = await post(http, url, chat + "accept", {"agent": "Bo"})
        assert status == 409 and "it is over" in answer["error"], answer
        msim.reap(time.time() + msim.options.closed_retention_s + 1)
        assert await stream.until(lambda c: c is None) is None
    await reader.ends()  # its last conversation closed: the visitor's stream ended cleanly


async def test_only_the_manual_deployments_wait_in_the_console(
        guests: Callable[[], Guest], msim: messaging.Simulator, url: str,
        http: aiohttp.ClientSession) -> None:
    scripted = Guest(http, guests().base_url, deployment=messaging.ECHO_DEPLOYMENT)
    reader = await scripted.start()
    assert reader is not None
    await reader.until("CONVERSATION_PARTICIPANT_CHANGED")  # Ada joined by herself
    reader.close()
    guest, _ = await visitor_asks(guests)

    async with http.get(url + "api/conversations") as answer:
        listed: list[dict[str, Any]] = (await answer.json())["conversations"]
    assert [(c["backend"], c["id"], c["state"]) for c in listed] == [
        ("messaging", guest.conversation_id, "waiting")]
    assert (await post(http, url, f"messaging/{scripted.conversation_id}/say",
                       {"text": "x"}))[0] == 404

    # Someone joins over the control API: the console shows that agent, and refuses to accept.
    cid = guest.conversation_id
    assert cid is not None
    msim.agent_joins(cid, "Hal")
    async with http.get(url + "api/conversations") as answer:
        (shown,) = (await answer.json())["conversations"]
    assert (shown["state"], shown["agent"]) == ("active", "Hal")
    assert await post(http, url, f"messaging/{cid}/accept", {"agent": "Grace Hopper"}) == (
        409, {"error": "cannot accept this chat: Hal already accepted it"})
