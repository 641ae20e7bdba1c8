"""The shutdown drain: every connection is closed with 1001, those accepted during it too."""

from __future__ import annotations

import asyncio
from pathlib import Path

import aiohttp

from bridged.ops.daemon import Daemon
from bridged.salesforce.liveagent.protocol import HttpRequest, HttpResponse
from bridged.salesforce.liveagent.transport import AiohttpTransport
from bridged.simulators.liveagent import Simulator
from tests.conftest import TOKEN, bridged_config
from tests.ocp_client import OcpClient, connect


class SlowToCancel(AiohttpTransport):
    """A cancelled request takes until ``released`` to wind down (a slow TLS close, say).

    It holds the shutdown in its "stop the actors" step, with the listener still open.
    """

    def __init__(self, max_connections: int) -> None:
        super().__init__(max_connections)
        self.released = asyncio.Event()
        self.cancelled = asyncio.Event()

    async def exchange(self, base_url: str, request: HttpRequest, timeout: float) -> HttpResponse:
        try:
            return await super().exchange(base_url, request, timeout)
        except asyncio.CancelledError:
            self.cancelled.set()
            async with asyncio.timeout(10):
                await self.released.wait()
            raise


async def close_code(client: OcpClient | aiohttp.ClientWebSocketResponse) -> int | None:
    """Read (bounded) until the connection closes; the code bridged closed it with."""
    ws = client.ws if isinstance(client, OcpClient) else client
    async with asyncio.timeout(10):
        msg = await ws.receive()
        while msg.type not in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED):
            msg = await ws.receive()
    return ws.close_code


async def test_a_connection_accepted_during_the_drain_is_closed_with_1001(
        sim: Simulator, tmp_path: Path, http: aiohttp.ClientSession) -> None:
    transport = SlowToCancel(100)
    # A budget large enough that the actors' step waits for the transport, not the clock.
    daemon = Daemon(bridged_config(sim, tmp_path, shutdown_budget_s=40), transport=transport)
    await daemon.start()
    stopping: asyncio.Task[None] | None = None
    try:
        early = await connect(http, daemon.url, TOKEN)
        await early.start("drain-1", profile="echo")
        await early.expect("agent_joined")
        stopping = asyncio.create_task(daemon.stop())
        assert await close_code(early) == 1001
        async with asyncio.timeout(10):
            await transport.cancelled.wait()  # the drain is in its actors' step
        # The listener is still open: a client that connects now is upgraded, then told
        # "going away" like every other one.
        late = await http.ws_connect(daemon.url, headers={"Authorization": f"Bearer {TOKEN}"},
                                     protocols=("bridged.v1+json",), heartbeat=None)
        assert await close_code(late) == 1001
    finally:
        transport.released.set()
        if stopping is None:
            await daemon.stop()
        else:
            await stopping
