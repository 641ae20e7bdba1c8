"""Put the built-in simulators on one agent console: what ``bridged simulator`` and
``bridged demo`` call.

The console is served by one simulator's app (the Live Agent one's, mounted before it
starts: ``running_simulator(..., setup=lambda sim: console.mount(sim.app))``); the adapters
read their simulators in the same process, so one page lists the chats of both.

In ``bridged/cli.py`` (``_simulate``) and ``bridged/tools/demo.py`` (``run_demo``), with the
Enhanced Chat simulator ``messaging_sim`` running in the same process, two lines change::

    from bridged.simulators.console import AgentConsole, add_simulators, console_url
    add_simulators(console, sim, messaging_sim)   # was: console.add(LiveAgentConsole(sim))
"""

from __future__ import annotations

from ..liveagent import Simulator as LiveAgentSimulator
from ..messaging import Engine as MessagingSimulator
from .liveagent import LiveAgentConsole
from .messaging import MessagingConsole
from .server import AgentConsole

__all__ = ["add_simulators"]


def add_simulators(console: AgentConsole, liveagent: LiveAgentSimulator | None = None,
                   messaging: MessagingSimulator | None = None) -> None:
    """Show the chats of each simulator given in ``console``, live: the Live Agent one's on
    its console button, the Enhanced Chat one's on its manual deployments (``Sim_Manual``).

    Call it once, with the simulators of the process (started or not, on the same loop).

    Raises:
        ValueError: A simulator of that kind is already on ``console``.
    """
    if liveagent is not None:
        console.add(LiveAgentConsole(liveagent))
    if messaging is not None:
        console.add(MessagingConsole(messaging))
