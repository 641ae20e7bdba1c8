"""Fixtures of the simulator's tests (helpers live in ``sim_helpers``)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from bridged.simulators.liveagent import Simulator
from tests.simulators.liveagent.sim_helpers import fast_options


@pytest.fixture
def make_sim(
    aiohttp_client: Callable[..., Awaitable[Any]],
) -> Callable[..., Awaitable[tuple[Simulator, Any]]]:
    """Build a simulator served by aiohttp's test server; returns it and the test client."""

    async def factory(**overrides: Any) -> tuple[Simulator, Any]:
        """Options are :func:`fast_options` with ``overrides``."""
        simulator = Simulator(fast_options(**overrides))
        client = await aiohttp_client(simulator.app)
        return simulator, client

    return factory
