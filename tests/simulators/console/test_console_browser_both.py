"""The agent console in a real browser with both simulators: an Enhanced Chat conversation
beside a Live Agent chat, listed together and each served from the same page.

Real on 127.0.0.1: the Live Agent simulator serving the console with both simulators added
(``add_simulators``, as ``bridged simulator`` and ``bridged demo`` do), bridged and an OCP
client for the Live Agent chat, the Enhanced Chat simulator and a dumb guest client on
``Sim_Manual`` as its visitor (no bridged in between), and headless Chromium on the page.
The test looks at the page and at what each visitor received.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
from selenium.webdriver.common.keys import Keys

from bridged.simulators import messaging
from bridged.simulators.console import AgentConsole, add_simulators
from bridged.simulators.liveagent import Simulator, running_simulator
from tests.conftest import FAST
from tests.ocp_client import OcpClient
from tests.simulators.console.conftest import Browser
from tests.simulators.console.helpers import (
    click,
    from_agent,
    participant,
    shows,
    text,
    text_of,
    type_into,
    visitor_asks,
)
from tests.simulators.messaging.helpers import Event, EventReader, Guest

Connect = Callable[..., Awaitable[OcpClient]]


@pytest.fixture
async def sim(console: AgentConsole, msim: messaging.Simulator) -> AsyncIterator[Simulator]:
    """The Live Agent simulator serving the console, with both simulators on it."""
    async with running_simulator(FAST, setup=lambda s: console.mount(s.app)) as simulator:
        add_simulators(console, simulator, msim)
        yield simulator


async def events_until(reader: EventReader, *wanted: Callable[[Event], bool]) -> list[Event]:
    """Read the visitor's stream until each of ``wanted`` matched an event (bounded)."""
    seen: list[Event] = []
    for _ in range(20):
        if all(any(match(e) for e in seen) for match in wanted):
            return seen
        event = await reader.next()
        assert event is not None, f"the visitor's stream ended after {seen}"
        seen.append(event)
    raise AssertionError(f"not every event wanted came: {seen}")


async def test_the_page_lists_and_serves_an_enhanced_chat_conversation_beside_a_live_agent_one(
        ocp: Connect, sim: Simulator, msim: messaging.Simulator, url: str, browser: Browser,
        guests: Callable[[], Guest]) -> None:
    await browser.run(lambda driver: driver.get(url))
    await browser.wait("the stream connected", shows("#connection", "live"))
    client = await ocp()
    await client.start("both-1", profile="console", visitor_name="Sam Visitor")
    await client.expect("queued")
    (session,) = sim.sessions.values()
    guest, reader = await visitor_asks(guests)
    cid = guest.conversation_id
    live_agent = f'#waiting li[data-key="liveagent/{session.id}"]'
    enhanced = f'#waiting li[data-key="messaging/{cid}"]'

    # Both wait in one list, each with its simulator's name.
    await browser.wait("the Live Agent chat waiting", shows(live_agent, "Sam Visitor"))
    await browser.wait("the Enhanced Chat conversation waiting", shows(enhanced, "Dana Visitor"))
    assert "Live Agent" in await browser.run(text_of(live_agent + " .badge"))
    assert "Enhanced Chat" in await browser.run(text_of(enhanced + " .badge"))
    await browser.wait("two waiting", shows("#waiting-count", "2"))

    # The Enhanced Chat one is accepted as Grace Hopper: the visitor's stream gets her add.
    await type_into(browser, "#agent-name", "Grace Hopper", clear=True)
    await click(browser, enhanced)
    await browser.wait("the pre-chat fields", shows("#chat-meta", "OrderNumber: A-1001"))
    await browser.wait("the accept button", shows("#accept", "Accept as Grace Hopper"))
    await click(browser, "#accept")
    added, active = await reader.take(2)
    assert participant(added) == (
        "CONVERSATION_PARTICIPANT_CHANGED", "add", "Agent", "Grace Hopper")
    assert active.payload["sessionStatus"] == "Active"
    await browser.wait("the conversation active",
                       shows(f'#active li[data-key="messaging/{cid}"]', "with Grace Hopper"))

    # The visitor's typing and message appear in the page.
    assert (await guest.typing(True)).status == 200
    await browser.wait("the visitor typing", shows("#visitor-typing", "Dana Visitor is typing"))
    assert (await guest.send("Hello, my parcel never arrived.")).status == 202
    await browser.wait("the visitor's message", shows("#lines", "Hello, my parcel never arrived."))
    await browser.wait("the typing indicator gone",
                       lambda driver: text_of("#visitor-typing")(driver) == "")
    await events_until(reader, lambda e: e.event == "CONVERSATION_MESSAGE")  # its own echo

    # Typing in the composer: the visitor sees Grace typing; Enter sends, and typing stops.
    await type_into(browser, "#composer", "Sorry to hear that! Let me look it up.")
    (typing,) = await reader.take(1)
    assert from_agent(typing) == ("CONVERSATION_TYPING_STARTED_INDICATOR", "Agent",
                                  "Grace Hopper")
    await browser.wait("the agent typing note", shows("#agent-typing", "sees Grace Hopper typing"))
    await type_into(browser, "#composer", Keys.ENTER)
    seen = await events_until(
        reader, lambda e: e.event == "CONVERSATION_MESSAGE",
        lambda e: e.event == "CONVERSATION_TYPING_STOPPED_INDICATOR")
    (message,) = [e for e in seen if e.event == "CONVERSATION_MESSAGE"]
    assert from_agent(message) == ("CONVERSATION_MESSAGE", "Agent", "Grace Hopper")
    assert text(message) == "Sorry to hear that! Let me look it up."
    await browser.wait("the agent's message", shows("#lines", "Let me look it up."))

    # Transferred to Bob Builder: remove, RoutingResult Transfer, add.
    await type_into(browser, "#transfer-name", "Bob Builder")
    await click(browser, "#transfer")
    removed, routed, added = await reader.take(3)
    assert participant(removed)[1:] == ("remove", "Agent", "Grace Hopper")
    assert (routed.event, routed.payload["routingType"]) == (
        "CONVERSATION_ROUTING_RESULT", "Transfer")
    assert participant(added)[1:] == ("add", "Agent", "Bob Builder")
    await browser.wait("the new agent", shows("#chat-meta", "with Bob Builder"))
    await browser.run(lambda driver: browser.keep("agent-console-both"))

    # Ended by the agent: the session ends as the strict simulator ends it.
    await click(browser, "#end")
    removed, ended = await reader.take(2)
    assert participant(removed)[1:] == ("remove", "Agent", "Bob Builder")
    assert (ended.payload["sessionStatus"], ended.payload["sessionEndedByRole"]) == (
        "Ended", "Agent")
    await browser.wait("the conversation ended", shows(f'#ended li[data-key="messaging/{cid}"]',
                                                       "the agent ended the chat"))
    assert await guest.routing_status() == "NEEDS_ROUTING"

    # The Live Agent chat waited meanwhile, and is served from the same page.
    await browser.wait("the Live Agent chat still waiting", shows(live_agent, "Sam Visitor"))
    await click(browser, live_agent)
    await browser.wait("the accept button", shows("#accept", "Accept as Bob Builder"))
    await click(browser, "#accept")
    assert (await client.expect("agent_joined"))["agent"] == "Bob Builder"
    await browser.wait("the Live Agent chat active",
                       shows(f'#active li[data-key="liveagent/{session.id}"]',
                             "with Bob Builder"))
    assert msim.conversations[str(cid)].agent is None  # the other one stayed ended
