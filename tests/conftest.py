"""Shared fixtures: the simulator and bridged on 127.0.0.1, and OCP clients to talk to them."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aiohttp
import msgspec
import pytest

from bridged.config.file import Config
from bridged.ops.daemon import Daemon
from bridged.simulators.liveagent import (
    CONSOLE_BUTTON,
    MANUAL_BUTTON,
    Simulator,
    SimulatorOptions,
    running_simulator,
)
from bridged.tools.demo import DEMO_DEPLOYMENT, DEMO_ORG, DEMO_PROFILES
from tests import aioresponses_compat
from tests.ocp_client import OcpClient, connect
from tests.processes import SimulatorProcess

aioresponses_compat.install()

TOKEN = "test-token-0123456789"
# Short timings: every wait in a test is a fraction of a second, never the strictness.
FAST = SimulatorOptions(hold_s=0.5, client_poll_timeout=5, join_delay_s=0.05,
                        reply_delay_s=0.02, queue_step_s=0.05)


# The demo's profiles, but "manual" is the agent a test drives through the control API: it
# joins by itself, then only does what the test says (as in tests/processes.py). "console"
# is the demo's "manual": it waits until someone accepts it at the agent console.
PROFILES = {**DEMO_PROFILES, "manual": MANUAL_BUTTON, "console": CONSOLE_BUTTON}


def bridged_config(sim: Simulator, tmp_path: Any, *, history: dict[str, Any] | None = None,
                   **server: Any) -> Config:
    """A config whose profiles (:data:`PROFILES`) point at ``sim``."""
    profiles = {
        name: {"live_agent_base_url": sim.base_url, "organization_id": DEMO_ORG,
               "deployment_id": DEMO_DEPLOYMENT, "button_id": button}
        for name, button in PROFILES.items()
    }
    return msgspec.convert({
        "server": {"listen": "127.0.0.1:0", "tokens": [TOKEN], "detach_grace_s": 5, **server},
        "salesforce": {"allowed_hosts": ["127.0.0.1:*"]},
        "state": {"dir": str(tmp_path / "state")},
        "history": history or {},
        "profiles": profiles,
    }, Config)


def cluster_config(config: Config, node: str, redis_url: str) -> Config:
    """``config`` as node ``node`` of a cluster on ``redis_url``, with scaled-down timings."""
    from bridged.config.file import ClusterConfig
    return msgspec.structs.replace(config, cluster=ClusterConfig(
        node=node, redis_url=redis_url, lease_ttl_ms=1000, renew_interval_ms=200,
        lease_margin_ms=200, scan_interval_ms=100, socket_timeout_s=0.5))


@contextlib.asynccontextmanager
async def running_bridged(config: Config) -> AsyncIterator[Daemon]:
    daemon = Daemon(config)
    await daemon.start()
    try:
        yield daemon
    finally:
        await daemon.stop()


@pytest.fixture
async def sim() -> AsyncIterator[Simulator]:
    async with running_simulator(FAST) as simulator:
        yield simulator


@pytest.fixture
async def bridged(sim: Simulator, tmp_path: Any) -> AsyncIterator[Daemon]:
    async with running_bridged(bridged_config(sim, tmp_path)) as daemon:
        yield daemon


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


@pytest.fixture
async def ocp(bridged: Daemon, http: aiohttp.ClientSession) -> Callable[..., Awaitable[OcpClient]]:
    """A factory of connections to the ``bridged`` fixture; all closed at the end."""
    async def factory(fmt: str | None = "bridged.v1+json") -> OcpClient:
        return await connect(http, bridged.url, TOKEN, fmt)
    return factory


@pytest.fixture
async def simulator(tmp_path: Any) -> AsyncIterator[SimulatorProcess]:
    """The simulator in a process of its own (it outlives the bridged processes of a test)."""
    process = await asyncio.to_thread(SimulatorProcess, tmp_path)
    try:
        yield process
    finally:
        process.stop()


@pytest.fixture
def redis_server(tmp_path: Any) -> Any:
    """A real redis-server on a random port of 127.0.0.1 (append-only file on); stopped by pid."""
    from tests.redis_server import RedisServer
    server = RedisServer(tmp_path / "redis")
    try:
        yield server
    finally:
        server.stop()
