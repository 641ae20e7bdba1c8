"""Helpers of the agent console's tests: its event stream as a page reads it, its API, the
page in the browser, and an Enhanced Chat visitor (a dumb guest client) and its events."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import aiohttp
import msgspec
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.remote.webelement import WebElement

from tests.simulators.console.conftest import Browser
from tests.simulators.messaging.helpers import Event, EventReader, Guest

__all__ = [
    "NAME",
    "TIMEOUT",
    "Stream",
    "click",
    "element",
    "from_agent",
    "participant",
    "post",
    "shows",
    "text",
    "text_of",
    "type_into",
    "visitor_asks",
]

TIMEOUT = 10.0


class Stream:
    """The console's event stream, read as a page's EventSource would."""

    def __init__(self, response: aiohttp.ClientResponse) -> None:
        self.response = response

    async def next(self) -> tuple[str, Any]:
        """The next event (kind, payload), pings skipped; bounded."""
        kind, data = "message", None
        async with asyncio.timeout(TIMEOUT):
            while True:
                raw = await self.response.content.readline()
                assert raw, "the stream ended"
                line = raw.decode().rstrip("\n")
                if line.startswith("event: "):
                    kind = line.removeprefix("event: ")
                elif line.startswith("data: "):
                    data = msgspec.json.decode(line.removeprefix("data: "))
                elif line == "" and data is not None:
                    return kind, data

    async def until(self, condition: Callable[[dict[str, Any] | None], bool]
                    ) -> dict[str, Any] | None:
        """Skip events until a ``conversation`` event whose conversation matches."""
        while True:
            kind, data = await self.next()
            if kind == "conversation" and condition(data["conversation"]):
                return data["conversation"]  # type: ignore[no-any-return]


async def post(http: aiohttp.ClientSession, url: str, path: str, body: Any = None,
               raw: bytes | None = None) -> tuple[int, dict[str, Any]]:
    """POST a console action (``path`` under ``api/``): status and JSON answer."""
    data = raw if raw is not None else msgspec.json.encode({} if body is None else body)
    async with http.post(url + "api/" + path, data=data,
                         headers={"Content-Type": "application/json"}) as response:
        return response.status, await response.json()


# The page, in the browser ----------------------------------------------------------------

def text_of(selector: str) -> Callable[[WebDriver], str]:
    """The element's text."""
    return lambda driver: str(driver.find_element(By.CSS_SELECTOR, selector).text)


def shows(selector: str, wanted: str) -> Callable[[WebDriver], bool]:
    """The element's text contains ``wanted``."""
    return lambda driver: wanted in driver.find_element(By.CSS_SELECTOR, selector).text


def element(selector: str) -> Callable[[WebDriver], WebElement]:
    """The element."""
    return lambda driver: driver.find_element(By.CSS_SELECTOR, selector)


async def type_into(browser: Browser, selector: str, text: str, *, clear: bool = False) -> None:
    """Type ``text`` into the field (emptied first if ``clear``)."""

    def act(driver: WebDriver) -> None:
        field = driver.find_element(By.CSS_SELECTOR, selector)
        if clear:
            field.clear()
        field.send_keys(text)

    await browser.run(act)


async def click(browser: Browser, selector: str) -> None:
    """Click the element."""

    def act(driver: WebDriver) -> bool:
        driver.find_element(By.CSS_SELECTOR, selector).click()
        return True

    # Retried if the page redraws the element between finding and clicking it.
    await browser.wait(f"{selector} to click", act)


# An Enhanced Chat visitor ----------------------------------------------------------------

NAME = {"_firstName": "Dana", "_lastName": "Visitor", "OrderNumber": "A-1001"}


async def visitor_asks(guests: Callable[[], Guest], **attributes: str) -> tuple[Guest,
                                                                                 EventReader]:
    """A visitor with its stream open creates a conversation on Sim_Manual; routed."""
    guest = guests()
    assert (await guest.get_token()).status == 200
    reader = await guest.stream()
    assert (await guest.create(routingAttributes=attributes or NAME)).status == 201
    await reader.until("CONVERSATION_ROUTING_RESULT")
    return guest, reader


def participant(event: Event) -> tuple[str, str, str, str]:
    """(event, operation, role, displayName) of a PARTICIPANT_CHANGED."""
    assert event.event == "CONVERSATION_PARTICIPANT_CHANGED", event
    (change,) = event.payload["entries"]
    return event.event, change["operation"], change["participant"]["role"], change["displayName"]


def from_agent(event: Event) -> tuple[str, str, str]:
    """(event, sender role, senderDisplayName) of an entry event."""
    return event.event, event.entry["sender"]["role"], event.entry["senderDisplayName"]


def text(event: Event) -> str:
    """The text of a CONVERSATION_MESSAGE."""
    value: str = event.payload["abstractMessage"]["staticContent"]["text"]
    return value
