"""Templating cannot amplify: a stream of amplifying ``start``s against a real bridged process.

Each ``start`` fits in one frame but asks, through ``{{ocpvars:NAME}}`` referenced thousands of
times, for a 72-million-character ``position_message``. bridged refuses each with ``bad_config``
naming the field, while a chat on another connection keeps relaying, and the process's RSS
(measured before and after the stream, in the same run) grows by a small fraction of what
a single such ``start`` would have cost.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import aiohttp

from bridged.config.webchat import TEXT_LIMIT
from bridged.tools.loadtest.procs import read_rss_kib
from tests.ocp_client import OcpClient, connect
from tests.processes import BridgedProcess, SimulatorProcess

OCPVAR = "x" * 30_000
TEMPLATE = "{{ocpvars:v}}" * 2_400  # with OCPVAR: one 63 KB frame, 72,000,000 characters
RENDERED = len(OCPVAR) * 2_400


def rss_kib(process: BridgedProcess) -> int:
    rss = read_rss_kib(process.pid)
    assert rss is not None
    return rss


async def amplifying_starts(attacker: OcpClient, steady: OcpClient, first: int, count: int
                            ) -> None:
    """``count`` amplifying starts, each refused; the steady chat relays between them."""
    for i in range(first, first + count):
        chat = f"amp-{i}"
        await attacker.start(chat, profile="echo", ocpvars={"v": OCPVAR},
                             config={"position_message": TEMPLATE})
        answer = await attacker.next()
        assert (answer["type"], answer.get("chat"), answer.get("code")) == (
            "error", chat, "bad_config"), {k: str(v)[:200] for k, v in answer.items()}
        assert answer["detail"] == (
            f"position_message: longer than {TEXT_LIMIT} characters after templating")
        await steady.send({"type": "message", "chat": "steady", "id": f"m{i}", "text": f"t{i}"})
        await steady.expect("agent_message", text=f"Echo: t{i}")


async def test_a_stream_of_amplifying_starts_is_refused_and_costs_no_memory(
        simulator: SimulatorProcess, tmp_path: Path) -> None:
    bridged = await asyncio.to_thread(BridgedProcess, tmp_path, simulator)
    try:
        async with aiohttp.ClientSession() as http:
            steady = await connect(http, bridged.url, BridgedProcess.TOKEN)
            await steady.start("steady", profile="echo")
            await steady.expect("agent_joined")
            attacker = await connect(http, bridged.url, BridgedProcess.TOKEN)
            await amplifying_starts(attacker, steady, 0, 5)  # warm-up: pools, caches
            before = rss_kib(bridged)
            await amplifying_starts(attacker, steady, 5, 60)
            after = rss_kib(bridged)
            # Nothing of the strings asked for was built or kept: the growth over 60 starts
            # is a fraction of what one of them alone would have taken (1 byte a character).
            assert (after - before) * 1024 < RENDERED // 10, (before, after)
            # The other chat is untouched: still live, still relaying.
            await steady.send({"type": "message", "chat": "steady", "id": "last",
                               "text": "still here"})
            await steady.expect("agent_message", text="Echo: still here")
            await steady.close()
            await attacker.close()
    finally:
        bridged.stop()
