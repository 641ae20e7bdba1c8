"""The agent console in a real browser: a person plays the agent of a chat OCP started.

Everything is real on 127.0.0.1: bridged, the Live Agent simulator serving the console,
an OCP client over WebSocket, and headless Chromium on the console's page. The test looks
at both ends: what the page shows, and what OCP receives.

On success it keeps ``test-artifacts/agent-console.png``, the page mid-chat; README's
screenshot (``docs/agent-console.png``) is a copy of it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from selenium.webdriver.common.keys import Keys

from bridged.simulators.liveagent import Simulator
from tests.ocp_client import OcpClient
from tests.simulators.console.conftest import Browser
from tests.simulators.console.helpers import click, element, shows, text_of, type_into

Connect = Callable[..., Awaitable[OcpClient]]


async def test_a_person_accepts_answers_transfers_and_ends_a_chat_in_the_console(
        ocp: Connect, sim: Simulator, url: str, browser: Browser) -> None:
    await browser.run(lambda driver: driver.get(url))
    await browser.wait("the stream connected", shows("#connection", "live"))
    client = await ocp()
    await client.start("console-1", profile="console", visitor_name="Dana Visitor")
    await client.expect("queued")
    (session,) = sim.sessions.values()
    item = f'#waiting li[data-id="{session.id}"]'

    # Listed as waiting, live; accepted under the name typed in the page.
    await browser.wait("the chat waiting", shows(item, "Dana Visitor"))
    await type_into(browser, "#agent-name", "Grace Hopper", clear=True)
    await click(browser, item)
    await browser.wait("the accept button", shows("#accept", "Accept as Grace Hopper"))
    await click(browser, "#accept")
    assert (await client.expect("agent_joined"))["agent"] == "Grace Hopper"
    await browser.wait("the chat active", shows(f'#active li[data-id="{session.id}"]',
                                                "with Grace Hopper"))

    # The visitor's typing and message appear in the page as they happen.
    await client.send({"type": "typing", "chat": "console-1", "active": True})
    await browser.wait("the visitor typing", shows("#visitor-typing", "Dana Visitor is typing"))
    await client.send({"type": "message", "chat": "console-1", "id": "m1",
                       "text": "Hello, my parcel never arrived."})
    await client.expect("delivered", id="m1")
    await browser.wait("the visitor's message", shows("#lines", "Hello, my parcel never arrived."))
    await browser.wait("the typing indicator gone",
                       lambda driver: text_of("#visitor-typing")(driver) == "")

    # Typing in the composer shows the visitor that the agent types; Enter sends.
    await type_into(browser, "#composer", "Sorry to hear that! Let me look it up.")
    assert (await client.expect("agent_typing"))["active"] is True
    await browser.wait("the agent typing note", shows("#agent-typing", "sees Grace Hopper typing"))
    await type_into(browser, "#composer", Keys.ENTER)
    said = await client.expect("agent_message")
    assert (said["agent"], said["text"]) == (
        "Grace Hopper", "Sorry to hear that! Let me look it up.")
    assert (await client.expect("agent_typing"))["active"] is False
    await browser.wait("the agent's message", shows("#lines", "Let me look it up."))

    # Transferred to another name, who answers from then on.
    await type_into(browser, "#transfer-name", "Bob Builder")
    await click(browser, "#transfer")
    assert (await client.expect("transferred"))["agent"] == "Bob Builder"
    await browser.wait("the new agent", shows("#chat-meta", "with Bob Builder"))
    await browser.wait("the page playing Bob",
                       lambda driver: element("#agent-name")(driver).get_attribute("value")
                       == "Bob Builder")
    await type_into(browser, "#composer", "Bob here: it is on its way, arriving tomorrow.")
    await click(browser, "#send")
    said = await client.expect("agent_message")
    assert (said["agent"], said["text"]) == ("Bob Builder",
                                             "Bob here: it is on its way, arriving tomorrow.")
    await client.send({"type": "message", "chat": "console-1", "id": "m2", "text": "Thanks!"})
    await browser.wait("the visitor's thanks", shows("#lines", "Thanks!"))
    await browser.wait("the agent typing note gone",
                       lambda driver: text_of("#agent-typing")(driver) == "")

    # Another visitor asks meanwhile: listed as waiting, the chat picked stays as it is.
    other = await ocp()
    await other.start("console-2", profile="console", visitor_name="Sam Visitor")
    await other.expect("queued")
    await browser.wait("the second chat waiting", shows("#waiting", "Sam Visitor"))
    await browser.wait("one waiting", shows("#waiting-count", "1"))
    assert "Thanks!" in await browser.run(text_of("#lines"))
    await browser.run(lambda driver: browser.keep("agent-console"))

    # Ended by the agent: OCP is told, the page moves the chat to Ended.
    await click(browser, "#end")
    ended = await client.expect("ended")
    assert ended["reason"] == "agent"
    await browser.wait("the chat ended", shows(f'#ended li[data-id="{session.id}"]',
                                               "the agent ended the chat"))
    await browser.wait("the ended note", shows("#ended-note", "Chat ended"))
    lines = await browser.run(lambda driver: driver.execute_script(
        "return [...document.querySelectorAll('#lines li')].map((li) => [li.className,"
        " li.querySelector('.name').textContent, li.querySelector('.text').textContent]);"))
    assert lines == [
        ["visitor", "Dana Visitor", "Hello, my parcel never arrived."],
        ["agent", "Grace Hopper", "Sorry to hear that! Let me look it up."],
        ["agent", "Bob Builder", "Bob here: it is on its way, arriving tomorrow."],
        ["visitor", "Dana Visitor", "Thanks!"],
    ]
    assert session.visitor_messages == ["Hello, my parcel never arrived.", "Thanks!"]
    await browser.wait("the second chat still waiting", shows("#waiting", "Sam Visitor"))
