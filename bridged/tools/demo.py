"""``bridged demo``: bridged on its embedded default, with the built-in simulators and a chat.

Everything runs in one process on 127.0.0.1: the Live Agent simulator (as Salesforce) with
its agent console, the Enhanced Chat simulator, bridged (configured with one profile per
scripted agent of each, both backends at once), and the terminal chat client (as OCP). On
profile ``manual`` nobody answers but a person at the agent console (a web page on the
simulator, its URL printed at start), so one person can play both sides. Logs go to a file
so they do not mix with the conversation.
"""

from __future__ import annotations

__all__ = ["DEMO_PROFILES", "MESSAGING_DEMO_PROFILES", "demo_config", "run_demo"]

import secrets
import sys
import tempfile
from pathlib import Path

import msgspec

from bridged.config.file import Config
from bridged.ops.logs import setup_logging

# Profile name -> the simulator's scripted agent (its button id). "manual" waits for a
# person at the agent console.
DEMO_PROFILES = {
    "echo": "573ECHO00000000",
    "queue": "573QUEUE0000000",
    "no_agent": "573NOAGENT00000",
    "fail": "573FAIL00000000",
    "agent_ends": "573ENDS00000000",
    "manual": "573CONSOLE00000",
}
# Profile name -> the Enhanced Chat simulator's scripted agent (its deployment name).
MESSAGING_DEMO_PROFILES = {
    "enhanced_echo": "Sim_Echo",
    "enhanced_queue": "Sim_Queue",
    "enhanced_transfer": "Sim_Transfer",
    "enhanced_agent_ends": "Sim_Agent_Ends",
    "enhanced_no_agent": "Sim_No_Agent",
    "enhanced_fail": "Sim_Routing_Fails",
    "enhanced_manual": "Sim_Manual",
}
DEMO_ORG = "00D000000000001"
# Nobody ever comes to Sim_No_Agent: bridged gives up after this long.
DEMO_AGENT_WAIT_S = 20
DEMO_DEPLOYMENT = "572000000000001"


def demo_config(live_agent_url: str, token: str, port: int, state_dir: str,
                messaging_url: str | None = None) -> Config:
    """A config whose profiles point at the simulators, one per scripted agent."""
    profiles: dict[str, dict[str, object]] = {
        name: {
            "live_agent_base_url": live_agent_url,
            "organization_id": DEMO_ORG,
            "deployment_id": DEMO_DEPLOYMENT,
            "button_id": button,
            "displayed_username": "{{ocpvars:name}}",
            "prechat_details": [
                {"label": "Customer name", "value": "{{ocpvars:name}}"},
            ],
        }
        for name, button in DEMO_PROFILES.items()
    }
    if messaging_url is not None:
        for name, deployment in MESSAGING_DEMO_PROFILES.items():
            profiles[name] = {
                "type": "salesforce_messaging",
                "scrt_url": messaging_url,
                "organization_id": DEMO_ORG,
                "es_developer_name": deployment,
                "displayed_username": "{{ocpvars:name}}",
                "routing_attributes": {"_firstName": "{{ocpvars:name}}"},
                "agent_wait_timeout_s": DEMO_AGENT_WAIT_S,
            }
    return msgspec.convert({
        "server": {"listen": f"127.0.0.1:{port}", "tokens": [token]},
        "salesforce": {"allowed_hosts": ["127.0.0.1:*"]},
        "state": {"dir": state_dir},
        "profiles": profiles,
    }, Config)


async def run_demo(profile: str, port: int, serve_only: bool, simulator_port: int = 0,
                   messaging_port: int = 0) -> int:
    """Run the demo; see the module docstring."""
    import asyncio
    import contextlib

    from bridged.ops.daemon import Daemon
    from bridged.simulators import messaging
    from bridged.simulators.console import AgentConsole, add_simulators, console_url
    from bridged.simulators.liveagent import SimulatorOptions, running_simulator
    from bridged.tools.chatclient import run_chat_client

    names = [*DEMO_PROFILES, *MESSAGING_DEMO_PROFILES]
    if profile not in names:
        print(f"bridged: --profile must be one of {', '.join(names)}", file=sys.stderr)
        return 2
    workdir = Path(tempfile.mkdtemp(prefix="bridged-demo-"))
    log_path = workdir / "bridged.log"
    with log_path.open("a", encoding="utf-8") as log_file:
        setup_logging("info", log_file)
        options = SimulatorOptions(hold_s=20.0, join_delay_s=1.5, reply_delay_s=1.0,
                                   queue_step_s=2.0)
        console = AgentConsole()
        async with contextlib.AsyncExitStack() as stack:
            try:
                sim = await stack.enter_async_context(running_simulator(
                    options, host="127.0.0.1", port=simulator_port,
                    setup=lambda sim: console.mount(sim.app)))
            except OSError as exc:
                print(f"bridged: the simulator cannot listen on 127.0.0.1:{simulator_port}: "
                      f"{exc.strerror or exc} (try --simulator-port 0)", file=sys.stderr)
                return 1
            m_options = messaging.MessagingOptions(routing_delay_s=0.5, join_delay_s=1.5,
                                                   reply_delay_s=1.0, queue_step_s=2.0)
            try:
                m_sim = await stack.enter_async_context(messaging.running_simulator(
                    m_options, host="127.0.0.1", port=messaging_port))
            except OSError as exc:
                print(f"bridged: the Enhanced Chat simulator cannot listen on 127.0.0.1:"
                      f"{messaging_port}: {exc.strerror or exc} (try "
                      "--messaging-simulator-port 0)", file=sys.stderr)
                return 1
            add_simulators(console, sim, m_sim)
            token = secrets.token_urlsafe(16)
            assert sim.base_url is not None
            config = demo_config(sim.base_url, token, port, str(workdir / "state"),
                                 m_sim.base_url)
            daemon = Daemon(config)
            try:
                await daemon.start()
            except OSError as exc:
                print(f"bridged: cannot listen on 127.0.0.1:{port}: {exc.strerror or exc}"
                      " (try --port 0)", file=sys.stderr)
                return 1
            try:
                print(f"bridged      {daemon.url}  (token {token})")
                print(f"simulator    {sim.base_url}")
                print(f"messaging    {m_sim.base_url}  (Enhanced Chat)")
                print(f"console      {console_url(sim)}  (the agent side of profiles manual and "
                      "enhanced_manual)")
                print(f"profiles     {', '.join(names)}")
                print(f"logs         {log_path}")
                if serve_only:
                    print("Chat from another terminal with:\n"
                          f"  bridged chat --url {daemon.url} --token {token} --profile echo\n"
                          "Press Ctrl+C to stop.", flush=True)
                    await asyncio.Event().wait()
                    return 0
                if profile in ("manual", "enhanced_manual"):
                    print(f"You play both sides: open {console_url(sim)} in a browser, accept "
                          "the chat there under any agent name and answer it; type here as "
                          "the visitor.")
                print(f"Starting a chat on profile {profile!r}.", flush=True)
                return await run_chat_client(daemon.url, token, f"demo-{secrets.token_hex(4)}",
                                             {"profile": profile,
                                              "ocpvars": {"name": "Demo Visitor"}})
            finally:
                await daemon.stop()
