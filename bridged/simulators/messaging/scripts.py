"""The scripted agents: what happens on the Salesforce side after create. Pure.

A script is chosen by the deployment a conversation was created for
(:mod:`.deployments`). It turns two facts into :class:`Step` lists: a messaging session
starts (create, or a send with ``isNewMessagingSession: true`` after the session ended), and
the visitor sent a message. Each step waits ``delay_s`` after the previous one and then
applies its actions in order; the shell (``app.py``) runs one ``loop.call_later`` at a time
per script, and drops the rest of a script once its session is over (a new session, an
end, a close).

The actions are also what the control API does when a test drives the agent by hand, so a
scripted agent and a manual one produce the same events:

==================  ===========================================================================
action              events on the stream (and state)
==================  ===========================================================================
``Route``           CONVERSATION_ROUTING_RESULT; a failure sets routingStatus NEEDS_ROUTING
``QueueUpdate``     CONVERSATION_QUEUE_POSITION (SYNTHETIC payload)
``Join``            PARTICIPANT_CHANGED ``add`` (role Agent, ``displayName``); routingStatus
                    ROUTED; SESSION_STATUS_CHANGED Waiting -> Active on the first join
``Leave``           PARTICIPANT_CHANGED ``remove``; with ``transfer`` routingStatus TRANSFER
``Say``             CONVERSATION_MESSAGE from the agent
``Typing``          CONVERSATION_TYPING_STARTED/STOPPED_INDICATOR from the agent
``Acknowledge``     CONVERSATION_DELIVERY/READ_ACKNOWLEDGEMENT of a visitor message
``EndSession``      ``Leave`` if an agent is on, SESSION_STATUS_CHANGED Ended, routingStatus
                    NEEDS_ROUTING; later sends get 417 until a new session
==================  ===========================================================================

The scripts (``R`` routing_delay_s, ``J`` join_delay_s, ``Q`` queue_step_s, ``A``
reply_delay_s):

* ``echo``: R, Route(Initial); J, Join(agent). Each visitor message while an agent is on: A,
  Acknowledge(Delivery), Acknowledge(Read), Typing(on), Say("Echo: <text>"), Typing(off).
  Messages sent before the agent joined are not answered.
* ``queue``: R, Route(Initial, estimated wait 90 s), QueueUpdate(3, 90); Q, QueueUpdate(2,
  60); Q, QueueUpdate(1, 30); J, Join(agent); then as echo.
* ``transfer``: as echo until the first agent answered one message; then A, Leave(transfer);
  R, Route(Transfer); J, Join(second agent), who echoes from then on.
* ``agent_ends``: as echo for the first message of a session; then A, EndSession(Agent).
* ``routing_fails``: R, Route(Initial, failureType RoutingError), EndSession(System).
* ``no_agent``: R, Route(Initial); nothing more, ever.
* ``manual``: R, Route(Initial); the control API does the rest.
"""

from __future__ import annotations

import msgspec

from .deployments import AGENT_ENDS, ECHO, MANUAL, NO_AGENT, QUEUE, ROUTING_FAILS, TRANSFER
from .options import MessagingOptions

__all__ = [
    "ECHO_PREFIX",
    "ROUTING_FAILURE_REASON",
    "Acknowledge",
    "Action",
    "EndSession",
    "Join",
    "Leave",
    "QueueUpdate",
    "Route",
    "Say",
    "ScriptView",
    "Step",
    "Typing",
    "on_session_start",
    "on_visitor_message",
]

ECHO_PREFIX = "Echo: "
ROUTING_FAILURE_REASON = "No routing configuration could route this work"


class Route(msgspec.Struct, frozen=True, kw_only=True, tag=True):
    """A RoutingResult: ``routing_type`` Initial or Transfer; ``failure_type`` None or a
    failure (RoutingError, SubmissionError, Unknown); ``wait_s`` -1 for no estimate."""

    routing_type: str = "Initial"
    failure_type: str = "None"
    failure_reason: str = ""
    wait_s: int = -1


class QueueUpdate(msgspec.Struct, frozen=True, kw_only=True, tag=True):
    """A queue position and estimated wait."""

    position: int
    wait_s: int


class Join(msgspec.Struct, frozen=True, kw_only=True, tag=True):
    """An agent is added to the conversation."""

    name: str
    subject: str


class Leave(msgspec.Struct, frozen=True, kw_only=True, tag=True):
    """The agent on the conversation is removed; ``transfer`` marks a transfer."""

    transfer: bool = False


class Say(msgspec.Struct, frozen=True, kw_only=True, tag=True):
    """The agent sends a text message."""

    text: str


class Typing(msgspec.Struct, frozen=True, kw_only=True, tag=True):
    """The agent starts (``active``) or stops typing."""

    active: bool = True


class Acknowledge(msgspec.Struct, frozen=True, kw_only=True, tag=True):
    """The agent's side acknowledges a visitor message as delivered or ``read``."""

    message_id: str
    read: bool = False


class EndSession(msgspec.Struct, frozen=True, kw_only=True, tag=True):
    """The messaging session ends (the conversation stays open); ``by_role`` ended it."""

    by_role: str = "Agent"


Action = Route | QueueUpdate | Join | Leave | Say | Typing | Acknowledge | EndSession


class Step(msgspec.Struct, frozen=True, kw_only=True):
    """Wait ``delay_s`` after the previous step, then apply ``actions`` in order."""

    delay_s: float
    actions: tuple[Action, ...]


class ScriptView(msgspec.Struct, frozen=True, kw_only=True):
    """What a script may know when the visitor sent a message.

    Attributes:
        kind: The script (``echo``...).
        agent_subject: The user id of the agent on the conversation, None if none.
        answered: Visitor messages the agents answered in this messaging session so far.
    """

    kind: str
    agent_subject: str | None
    answered: int


def _routed(options: MessagingOptions, wait_s: int = -1) -> Step:
    return Step(delay_s=options.routing_delay_s, actions=(Route(wait_s=wait_s),))


def _join(options: MessagingOptions, *, second: bool = False) -> Step:
    if second:
        agent = Join(name=options.second_agent_name, subject=options.second_agent_subject)
    else:
        agent = Join(name=options.agent_name, subject=options.agent_subject)
    return Step(delay_s=options.join_delay_s, actions=(agent,))


def on_session_start(kind: str, options: MessagingOptions) -> list[Step]:
    """The steps after a messaging session starts (create, or a new session)."""
    if kind in (ECHO, TRANSFER, AGENT_ENDS):
        return [_routed(options), _join(options)]
    if kind == QUEUE:
        step = options.queue_step_s
        return [
            Step(delay_s=options.routing_delay_s,
                 actions=(Route(wait_s=90), QueueUpdate(position=3, wait_s=90))),
            Step(delay_s=step, actions=(QueueUpdate(position=2, wait_s=60),)),
            Step(delay_s=step, actions=(QueueUpdate(position=1, wait_s=30),)),
            _join(options),
        ]
    if kind == ROUTING_FAILS:
        failed = Route(failure_type="RoutingError", failure_reason=ROUTING_FAILURE_REASON)
        return [Step(delay_s=options.routing_delay_s,
                     actions=(failed, EndSession(by_role="System")))]
    if kind in (NO_AGENT, MANUAL):
        return [_routed(options)]
    raise ValueError(f"unknown script {kind!r}")


def _answer(options: MessagingOptions, message_id: str, text: str) -> Step:
    actions: tuple[Action, ...] = ()
    if options.agent_acks:
        actions = (Acknowledge(message_id=message_id), Acknowledge(message_id=message_id,
                                                                   read=True))
    actions += (Typing(active=True), Say(text=ECHO_PREFIX + text), Typing(active=False))
    return Step(delay_s=options.reply_delay_s, actions=actions)


def on_visitor_message(
    view: ScriptView, options: MessagingOptions, message_id: str, text: str
) -> list[Step]:
    """The steps after a visitor message; empty when the script does not answer it."""
    if view.agent_subject is None or view.kind in (NO_AGENT, MANUAL, ROUTING_FAILS):
        return []
    answer = _answer(options, message_id, text)
    if view.kind == TRANSFER and view.answered == 0 and (
        view.agent_subject == options.agent_subject
    ):
        return [
            answer,
            Step(delay_s=options.reply_delay_s, actions=(Leave(transfer=True),)),
            Step(delay_s=options.routing_delay_s, actions=(Route(routing_type="Transfer"),)),
            _join(options, second=True),
        ]
    if view.kind == AGENT_ENDS:
        if view.answered > 0:
            return []
        return [answer, Step(delay_s=options.reply_delay_s, actions=(EndSession(),))]
    return [answer]
