"""Helpers of the Enhanced Chat end-to-end tests: the product's simulator and bridged, in-process.

Everything runs on 127.0.0.1: the strict Enhanced Chat simulator (``bridged.simulators.
messaging``), bridged itself (``Daemon``) and real WebSocket OCP clients. The tests assert on
what OCP received and on what the simulator recorded.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import msgspec

from bridged.config.file import Config
from bridged.simulators.messaging import MessagingOptions, Simulator, running_simulator

ORG15 = "00D000000000001"
ORG18 = ORG15 + "EAA"  # its 18-character form: bridged must send the 15 in X-Org-Id
TOKEN = "test-token-0123456789"
# Short timings, never less strictness.
FAST = {"routing_delay_s": 0.01, "join_delay_s": 0.01, "reply_delay_s": 0.01,
        "queue_step_s": 0.01, "ping_interval_s": 0.5, "reap_interval_s": 0.05}
DEPLOYMENTS = {"echo": "Sim_Echo", "queue": "Sim_Queue", "transfer": "Sim_Transfer",
               "agent_ends": "Sim_Agent_Ends", "routing_fails": "Sim_Routing_Fails",
               "no_agent": "Sim_No_Agent", "manual": "Sim_Manual", "web": "Sim_Web"}


@contextlib.asynccontextmanager
async def messaging_simulator(**overrides: Any) -> AsyncIterator[Simulator]:
    """The Enhanced Chat simulator with test timings (and ``overrides``)."""
    async with running_simulator(MessagingOptions(**{**FAST, **overrides})) as sim:
        yield sim


def messaging_profiles(sim: Simulator, **fields: Any) -> dict[str, dict[str, Any]]:
    """One profile ``m_<kind>`` per scripted agent of ``sim``, with ``fields`` in each."""
    return {f"m_{kind}": {"type": "salesforce_messaging", "scrt_url": sim.base_url,
                          "organization_id": ORG18, "es_developer_name": deployment, **fields}
            for kind, deployment in DEPLOYMENTS.items()}


def config(sim: Simulator, tmp_path: Path, *, profiles: dict[str, Any] | None = None,
           salesforce: dict[str, Any] | None = None, history: dict[str, Any] | None = None,
           **server: Any) -> Config:
    """A bridged config whose Enhanced Chat profiles point at ``sim``."""
    return msgspec.convert({
        "server": {"listen": "127.0.0.1:0", "tokens": [TOKEN], "detach_grace_s": 5, **server},
        "salesforce": {"allowed_hosts": ["127.0.0.1:*"], "messaging_stream_timeout_s": 3,
                       **(salesforce or {})},
        "state": {"dir": str(tmp_path / "state")},
        "history": history or {},
        "profiles": {**messaging_profiles(sim), **(profiles or {})},
    }, Config)


async def wait_for(condition: Callable[[], Any], what: str, timeout: float = 10.0) -> Any:
    """Poll ``condition`` until it is truthy; fail naming ``what`` after ``timeout``."""
    async with asyncio.timeout(timeout):
        while not (value := condition()):
            await asyncio.sleep(0.01)
    return value


def only_conversation(sim: Simulator) -> Any:
    """The simulator's one conversation (a test with one chat)."""
    (conversation,) = sim.conversations.values()
    return conversation


def requests(sim: Simulator, resource: str) -> list[Any]:
    """The requests the simulator recorded for ``resource``, oldest first."""
    return sim.request_records(resource)


def types(frames: list[dict[str, Any]]) -> list[str]:
    return [f["type"] for f in frames]


async def until(ocp: Any, type_: str, timeout: float = 10.0, **fields: Any) -> dict[str, Any]:
    """The first frame received (ever) of ``type_`` with ``fields``, waiting for it if need
    be: unlike ``OcpClient.expect``, frames of other chats are not skipped for good."""
    def match() -> dict[str, Any] | None:
        for frame in ocp.received:
            if frame.get("type") == type_ and all(frame.get(k) == v for k, v in fields.items()):
                return frame  # type: ignore[no-any-return]
        return None

    async with asyncio.timeout(timeout):
        while (found := match()) is None:
            await ocp.next(timeout)
    return found
