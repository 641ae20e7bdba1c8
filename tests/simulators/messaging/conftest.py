"""Fixtures of the Enhanced Chat simulator's tests: a served simulator and guests."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aiohttp
import pytest

from bridged.simulators.messaging import ECHO_DEPLOYMENT, Simulator
from tests.simulators.messaging.helpers import Guest, fast_options


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    """One client session for the test (closed at the end)."""
    async with aiohttp.ClientSession() as session:
        yield session


@pytest.fixture
async def make_sim() -> AsyncIterator[Callable[..., Awaitable[Simulator]]]:
    """Start simulators on 127.0.0.1 with :func:`fast_options` plus overrides; all stopped
    at the end."""
    started: list[Simulator] = []

    async def factory(**overrides: Any) -> Simulator:
        simulator = Simulator(fast_options(**overrides))
        await simulator.start()
        started.append(simulator)
        return simulator

    yield factory
    for simulator in started:
        await simulator.stop()


@pytest.fixture
async def sim(make_sim: Callable[..., Awaitable[Simulator]]) -> Simulator:
    """A simulator with the fast defaults."""
    return await make_sim()


@pytest.fixture
async def guest(
    sim: Simulator, http: aiohttp.ClientSession
) -> AsyncIterator[Callable[..., Guest]]:
    """Make guests of ``sim`` (deployment ``Sim_Echo`` unless given); their streams are
    dropped at the end."""
    made: list[Guest] = []

    def factory(deployment: str = ECHO_DEPLOYMENT, simulator: Simulator | None = None) -> Guest:
        target = simulator or sim
        assert target.base_url is not None
        made.append(Guest(http, target.base_url, deployment=deployment))
        return made[-1]

    yield factory
    for one in made:
        one.close_streams()
