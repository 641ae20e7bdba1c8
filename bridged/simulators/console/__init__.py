"""The agent console: a web page to play the agent side of the built-in simulators.

A person opens ``http://HOST:PORT/console/`` on a simulator (``bridged simulator`` and
``bridged demo`` print the URL), sees the chats waiting for an agent, accepts one under a
name of their choice, reads and answers the visitor, shows typing, transfers the chat to
another agent name and ends it. The page updates live over Server-Sent Events from the
simulator's own process; it is static HTML, CSS and JavaScript served from this package
(no build step, no CDN, works offline).

Modules:

* :mod:`.backend`: the backend-neutral interface (:class:`ConsoleBackend`,
  :class:`Conversation`, :class:`Line`, :class:`ActionRefused`). Pure.
* :mod:`.server`: :class:`AgentConsole`, the routes (page, JSON API, live stream).
* :mod:`.liveagent`: :class:`LiveAgentConsole`, the adapter for the Live Agent simulator
  (the chats on its button ``CONSOLE_BUTTON``).
* :mod:`.messaging`: :class:`MessagingConsole`, the adapter for the Enhanced Chat simulator
  (the conversations of its ``manual`` deployments, ``Sim_Manual``).
* :mod:`.wiring`: :func:`add_simulators`, both adapters on one console.
* ``static/``: ``console.html``, ``console.js``, ``console.css``.

Use (the console is served by the Live Agent simulator's app and lists the chats of both
simulators of the process; ``messaging_sim`` is a started, or not yet started, Enhanced Chat
``Simulator`` on the same loop, or None)::

    console = AgentConsole()
    async with running_simulator(options, setup=lambda sim: console.mount(sim.app)) as sim:
        add_simulators(console, sim, messaging_sim)
        print(console_url(sim))          # http://127.0.0.1:PORT/console/

(the same as ``console.add(LiveAgentConsole(sim))`` and
``console.add(MessagingConsole(messaging_sim))``).

The interface a simulator implements (:class:`ConsoleBackend`), one small adapter each:

=====================================  ===================================================
``key``, ``title``                     ``"liveagent"``, ``"Live Agent"`` (``"messaging"``,
                                       ``"Enhanced Chat"``): its URL name, and what the
                                       page calls it
``conversations()``                    every chat to show (waiting, active, ended but still
                                       kept), as :class:`Conversation` values
``conversation(id)``                   one of them, or None
``accept(id, agent)``                  agent ``agent`` joins the waiting chat
``say(id, text)``                      the agent says ``text`` (and stops typing)
``typing(id, active)``                 the agent's typing indicator on or off
``transfer(id, agent)``                the chat moves to agent ``agent``
``end(id)``                            the agent ends the chat
``watch(changed)``                     call ``changed(id)`` after any change to a chat (the
                                       visitor's messages and typing included) and when it
                                       is forgotten: at once, on the loop, never raising
=====================================  ===================================================

The console checks each action against the conversation's state (:data:`WAITING`,
:data:`ACTIVE`, :data:`ENDED`) and validates names and texts before it calls the adapter,
which only translates; an adapter raises :class:`ActionRefused` for what its simulator
refuses. ``watch`` is only a nudge: the console reads ``conversation(id)`` when it writes
to a page, so an adapter need not say what changed.

The Enhanced Chat adapter needs no deployment of its own: ``Sim_Manual`` is routed and then
waits for whoever joins (the Live Agent side has ``CONSOLE_BUTTON`` because its manual
button's agent joins by itself). Its ``watch`` is fed by that simulator's
``Engine.watchers`` hook, which also gives it the typing indicators (events only).
"""

from __future__ import annotations

from .backend import (
    ACTIVE,
    ENDED,
    WAITING,
    ActionRefused,
    ConsoleBackend,
    Conversation,
    Line,
    State,
)
from .liveagent import LiveAgentConsole, console_url
from .messaging import MessagingConsole
from .server import CONSOLE_PATH, AgentConsole
from .wiring import add_simulators

__all__ = [
    "ACTIVE",
    "CONSOLE_PATH",
    "ENDED",
    "WAITING",
    "ActionRefused",
    "AgentConsole",
    "ConsoleBackend",
    "Conversation",
    "Line",
    "LiveAgentConsole",
    "MessagingConsole",
    "State",
    "add_simulators",
    "console_url",
]
