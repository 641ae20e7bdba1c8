"""How long a chat is frozen after bridged is killed (-9) and started again.

Real processes: the simulator and bridged (tests/processes.py). A chat talks, has had one idle
poll answered (so bridged has seen the server's hold time), the agent's message reaches OCP
(so bridged has just sent a new poll: the worst case, that poll is held for a full hold
time), and bridged is killed at once. The agent says something while it is down; a new
bridged starts on the same state, OCP attaches, and the time until the agent's message
arrives is measured, from the new process being ready and from the kill.

Run it with production-like timings (the simulator holds an idle poll 30 s, clientPollTimeout
40 s; about two minutes)::

    .venv/bin/python -m tests.ops.resume_time --hold-s 30 --client-poll-timeout 40
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import tempfile
import time
from pathlib import Path
from typing import NamedTuple

import aiohttp

from tests.ocp_client import connect
from tests.processes import BridgedProcess, SimulatorProcess


class ResumeTime(NamedTuple):
    """Seconds until the agent's message said while bridged was down reached OCP."""

    from_ready: float  # from the new process answering /readyz
    from_kill: float
    chat_ended: bool  # the session ended (e.g. by a second concurrent poll): must stay False


async def measure_resume(tmp: Path, hold_s: float, client_poll_timeout: float,
                         timeout: float | None = None) -> ResumeTime:
    """Kill bridged -9 right after it sent a poll; the time until the chat is live again.

    Raises:
        TimeoutError: the chat did not resume within ``timeout`` (default: 2 x clientPollTimeout).
    """
    timeout = timeout or 2 * client_poll_timeout
    simulator = await asyncio.to_thread(SimulatorProcess, tmp, hold_s, client_poll_timeout)
    try:
        async with aiohttp.ClientSession() as http:
            bridged = await asyncio.to_thread(BridgedProcess, tmp, simulator)
            try:
                client = await connect(http, bridged.url, BridgedProcess.TOKEN)
                await client.start("resume-1", profile="manual")
                await client.expect("agent_joined")
                # Read on meanwhile (a client that does not answer pings is dropped).
                said = asyncio.create_task(client.expect("agent_message", text="before",
                                                         timeout=hold_s * 3 + 30))
                (summary,) = await asyncio.to_thread(simulator.sessions)
                session_id = summary["id"]
                # One idle poll answered (204) and the next one sent: the hold is observed.
                polls = (await asyncio.to_thread(simulator.session, session_id))["polls"]
                async with asyncio.timeout(hold_s * 3 + 10):
                    while (await asyncio.to_thread(simulator.session, session_id))["polls"] < (
                            polls + 2):
                        await asyncio.sleep(0.05)
                await asyncio.to_thread(simulator.action, session_id, "say", {"text": "before"})
                before = await said
                await client.send({"type": "ack", "chat": "resume-1", "seq": before["seq"]})
                bridged.signal(signal.SIGKILL)
                killed = time.monotonic()
                bridged.wait()
            finally:
                bridged.stop()
            await asyncio.to_thread(simulator.action, session_id, "say", {"text": "while down"})
            again = await asyncio.to_thread(BridgedProcess, tmp, simulator, name="bridged-2")
            try:
                ready = time.monotonic()
                client = await connect(http, again.url, BridgedProcess.TOKEN)
                await client.send({"type": "attach", "chat": "resume-1", "after": before["seq"]})
                await client.expect("agent_message", timeout=timeout, text="while down")
                arrived = time.monotonic()
            finally:
                again.stop()
        record = await asyncio.to_thread(simulator.session, session_id)
    finally:
        simulator.stop()
    return ResumeTime(arrived - ready, arrived - killed, bool(record["ended"]))


def main() -> None:
    """Print the resume time for the given simulator timings."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--hold-s", type=float, default=30.0)
    parser.add_argument("--client-poll-timeout", type=float, default=40.0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bridged-resume-") as tmp:
        result = asyncio.run(measure_resume(Path(tmp), args.hold_s, args.client_poll_timeout))
    print(f"hold {args.hold_s:g} s, clientPollTimeout {args.client_poll_timeout:g} s: "
          f"the agent's message arrived {result.from_ready:.1f} s after the new bridged was "
          f"ready ({result.from_kill:.1f} s after the kill); session ended: {result.chat_ended}")


if __name__ == "__main__":
    main()
