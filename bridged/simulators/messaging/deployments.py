"""Deployment names and the scripted agent behind each. Pure constants.

A scripted agent is chosen by the **deployment API name** (``esDeveloperName``), the way the
Live Agent simulator chooses one by button id: each name below is a Custom Client
deployment whose Omni-Channel routing "is" that script. ``MessagingOptions.deployments``
maps names to kinds, so an operator can add their own names (for example the name in
their bridged config) for any kind.

=====================  =============  ==========================================================
deployment             kind           what the agent does (details in :mod:`.scripts`)
=====================  =============  ==========================================================
``Sim_Echo``           ``echo``       routed, agent added, echoes every visitor message
``Sim_Queue``          ``queue``      routed with an estimated wait, queue updates, then as echo
``Sim_Transfer``       ``transfer``   as echo; the first message is answered, then transferred
                                      to the second agent, who echoes from then on
``Sim_Agent_Ends``     ``agent_ends`` as echo; answers the first message, then ends the session
``Sim_Routing_Fails``  ``routing_fails``  RoutingResult with ``failureType: RoutingError``
``Sim_No_Agent``       ``no_agent``   routed to the queue; no agent ever comes
``Sim_Manual``         ``manual``     routed to the queue; the control API drives the agent
``Sim_Web``            ``web``        not a Custom Client deployment: every call is 400
=====================  =============  ==========================================================
"""

from __future__ import annotations

__all__ = [
    "AGENT_ENDS",
    "AGENT_ENDS_DEPLOYMENT",
    "ECHO",
    "ECHO_DEPLOYMENT",
    "MANUAL",
    "MANUAL_DEPLOYMENT",
    "NO_AGENT",
    "NO_AGENT_DEPLOYMENT",
    "QUEUE",
    "QUEUE_DEPLOYMENT",
    "ROUTING_FAILS",
    "ROUTING_FAILS_DEPLOYMENT",
    "SCRIPTS",
    "TRANSFER",
    "TRANSFER_DEPLOYMENT",
    "WEB_DEPLOYMENT",
    "WEB_DEPLOYMENT_KIND",
    "default_deployments",
]

ECHO = "echo"
QUEUE = "queue"
TRANSFER = "transfer"
AGENT_ENDS = "agent_ends"
ROUTING_FAILS = "routing_fails"
NO_AGENT = "no_agent"
MANUAL = "manual"

SCRIPTS = frozenset({ECHO, QUEUE, TRANSFER, AGENT_ENDS, ROUTING_FAILS, NO_AGENT, MANUAL})

# The kind of a deployment that is not a Custom Client (API) one.
WEB_DEPLOYMENT_KIND = "web"

ECHO_DEPLOYMENT = "Sim_Echo"
QUEUE_DEPLOYMENT = "Sim_Queue"
TRANSFER_DEPLOYMENT = "Sim_Transfer"
AGENT_ENDS_DEPLOYMENT = "Sim_Agent_Ends"
ROUTING_FAILS_DEPLOYMENT = "Sim_Routing_Fails"
NO_AGENT_DEPLOYMENT = "Sim_No_Agent"
MANUAL_DEPLOYMENT = "Sim_Manual"
WEB_DEPLOYMENT = "Sim_Web"


def default_deployments() -> dict[str, str]:
    """The deployments every simulator knows unless told otherwise (the table above)."""
    return {
        ECHO_DEPLOYMENT: ECHO,
        QUEUE_DEPLOYMENT: QUEUE,
        TRANSFER_DEPLOYMENT: TRANSFER,
        AGENT_ENDS_DEPLOYMENT: AGENT_ENDS,
        ROUTING_FAILS_DEPLOYMENT: ROUTING_FAILS,
        NO_AGENT_DEPLOYMENT: NO_AGENT,
        MANUAL_DEPLOYMENT: MANUAL,
        WEB_DEPLOYMENT: WEB_DEPLOYMENT_KIND,
    }
