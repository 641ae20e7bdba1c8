"""Fixtures of the agent console's tests: the simulator with its console, and a real browser.

The browser is Debian's Chromium driven through chromedriver (Selenium), headless, with a
fresh profile. A test that uses it fails, never skips, when it is missing (``.ci/run``
installs it). When such a test fails, the page is kept in ``test-artifacts/`` (or
``$BRIDGED_TEST_ARTIFACTS``): a screenshot, the page's HTML and the browser's console log.
"""

from __future__ import annotations

import asyncio
import os
import shutil
from collections.abc import AsyncIterator, Callable, Generator
from pathlib import Path
from typing import Any, TypeVar

import aiohttp
import pytest
from selenium import webdriver
from selenium.common.exceptions import NoSuchElementException, StaleElementReferenceException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support.wait import WebDriverWait

from bridged.simulators import messaging
from bridged.simulators.console import AgentConsole, LiveAgentConsole, console_url
from bridged.simulators.liveagent import Simulator, running_simulator
from tests.conftest import FAST
from tests.processes import ROOT
from tests.simulators.messaging.helpers import Guest, fast_options

T = TypeVar("T")

ARTIFACTS = Path(os.environ.get("BRIDGED_TEST_ARTIFACTS", ROOT / "test-artifacts"))
WAIT_S = 10.0
CHROMIUM_FLAGS = (
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    # Without these, Chromium's own connections (updates, sync, field trials) are refused
    # by a closed network and it can stall.
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--window-size=1280,800",
)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]
                              ) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """Keep each phase's report on the test item, so a fixture can tell that it failed."""
    report = yield
    setattr(item, f"report_{report.when}", report)
    return report


@pytest.fixture
def console() -> AgentConsole:
    return AgentConsole()


@pytest.fixture
async def sim(console: AgentConsole) -> AsyncIterator[Simulator]:
    """The Live Agent simulator with the console on it (replaces the suite's ``sim``)."""
    async with running_simulator(FAST, setup=lambda s: console.mount(s.app)) as simulator:
        console.add(LiveAgentConsole(simulator))
        yield simulator


@pytest.fixture
def url(sim: Simulator) -> str:
    """The console's page."""
    return console_url(sim)


@pytest.fixture
async def msim() -> AsyncIterator[messaging.Simulator]:
    """An Enhanced Chat simulator on 127.0.0.1 (test timings), beside the Live Agent one."""
    simulator = messaging.Simulator(fast_options())
    await simulator.start()
    try:
        yield simulator
    finally:
        await simulator.stop()


@pytest.fixture
async def guests(msim: messaging.Simulator, http: aiohttp.ClientSession
                 ) -> AsyncIterator[Callable[[], Guest]]:
    """Make dumb Enhanced Chat visitors of ``msim`` on ``Sim_Manual`` (the console's
    deployment); their streams are dropped at the end."""
    made: list[Guest] = []

    def factory() -> Guest:
        assert msim.base_url is not None
        made.append(Guest(http, msim.base_url, deployment=messaging.MANUAL_DEPLOYMENT))
        return made[-1]

    yield factory
    for guest in made:
        guest.close_streams()


class Browser:
    """A headless Chromium, driven from async tests: every call runs in a worker thread, so
    the loop that serves the simulator and bridged keeps running meanwhile."""

    def __init__(self, driver: WebDriver) -> None:
        self.driver = driver

    async def run(self, action: Callable[[WebDriver], T]) -> T:
        """Run ``action(driver)`` in a thread."""
        return await asyncio.to_thread(action, self.driver)

    async def wait(self, what: str, condition: Callable[[WebDriver], T]) -> T:
        """Wait (bounded) until ``condition(driver)`` is truthy; fail naming ``what``."""
        waiter: WebDriverWait[WebDriver] = WebDriverWait(
            self.driver, WAIT_S, poll_frequency=0.05,
            ignored_exceptions=(NoSuchElementException, StaleElementReferenceException))
        return await asyncio.to_thread(waiter.until, condition, f"the page never showed {what}")

    def keep(self, name: str) -> Path:
        """Save a screenshot, the HTML and the console log under ARTIFACTS; the screenshot."""
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        png = ARTIFACTS / f"{name}.png"
        self.driver.save_screenshot(str(png))
        (ARTIFACTS / f"{name}.html").write_text(self.driver.page_source, encoding="utf-8")
        log = "\n".join(str(entry) for entry in self.driver.get_log("browser"))
        (ARTIFACTS / f"{name}.console.log").write_text(log, encoding="utf-8")
        return png


@pytest.fixture
def browser(sim: Simulator, request: pytest.FixtureRequest, tmp_path: Path
            ) -> Generator[Browser, None, None]:
    """A fresh headless Chromium (torn down before the simulator, so a failure's page is
    still there to keep)."""
    chromium, chromedriver = shutil.which("chromium"), shutil.which("chromedriver")
    if chromium is None or chromedriver is None:
        pytest.fail("the browser tests need Debian's chromium and chromium-driver: "
                    "apt-get install chromium chromium-driver (.ci/run does)")
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in (*CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / 'chromium'}"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(options=options, service=Service(chromedriver))
    try:
        yield Browser(driver)
        reports: list[Any] = [getattr(request.node, f"report_{when}", None)
                              for when in ("setup", "call")]
        if any(report is not None and report.failed for report in reports):
            Browser(driver).keep(f"{request.node.name}-failure")
    finally:
        driver.quit()
