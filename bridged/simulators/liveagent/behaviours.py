"""Scripted agents of the simulator, chosen by the ChasitorInit ``buttonId``. Pure.

Button table (15-character ids, prefix ``573`` like real chat buttons):

===================  ===========================================================================
``573ECHO00000000``  ChatRequestSuccess (queuePosition 1), after ``join_delay_s``
                     ChatEstablished ("Ada Agent"); every visitor ChatMessage is answered after
                     ``reply_delay_s`` by AgentTyping, ChatMessage ``"Echo: <text>"``,
                     AgentNotTyping.
``573QUEUE0000000``  ChatRequestSuccess (queuePosition 3, estimatedWaitTime 90), QueueUpdate 2
                     (60) and 1 (30) every ``queue_step_s``, then ChatEstablished; echoes.
``573NOAGENT00000``  ChatRequestFail ``{"reason": "Unavailable"}``.
``573FAIL00000000``  ChatRequestFail ``{"reason": "InternalFailure"}``.
``573ENDS00000000``  Joins, greets ("Hello, I am Ada. This chat will end after your first
                     message."), echoes the first visitor message, then ChatEnded
                     ``{"reason": "agent"}``.
``573MANUAL000000``  Joins, then does nothing by itself: driven by the control API.
``573CONSOLE00000``  ChatRequestSuccess (queuePosition 1), then waits for a person: nobody joins
                     until the agent console (``bridged.simulators.console``) accepts the chat,
                     or the control API's ``join``; then nothing happens by itself.
``573PEEK00000000``  Like ECHO, but ChatEstablished carries ``sneakPeekEnabled: true``.
any other button     ChatRequestFail ``{"reason": "InternalFailure"}``.
===================  ===========================================================================

Visitor/Availability reports every button above available except ``573NOAGENT00000``;
unknown buttons are unavailable. The shell can override that per button at run time
(``Simulator.set_available``), without changing the scripted agent behind it.

A ChasitorInit with ``isPost: false`` fails whatever the button: ChatRequestFail
``{"reason": "NoPost"}`` (a reason the Android SDK knows, SALESFORCE.md 5).

A behaviour turns a fact (the chat was requested, the visitor said something) into a
:class:`Step` list: each step waits ``delay_s`` after the previous one, then queues its
messages together, in order. The shell runs a script with one ``loop.call_later`` at a time,
so 10,000 sessions cost no task each.

Message shapes follow the YALO capture of a real Messages payload (SALESFORCE.md 5).
``estimatedWaitTime`` is only sent when the chat was started with API version 47 or later.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import msgspec

from .options import SimulatorOptions

__all__ = [
    "BEHAVIOURS",
    "CONSOLE_BUTTON",
    "ECHO_BUTTON",
    "ENDS_BUTTON",
    "ENDS_GREETING",
    "FAIL_BUTTON",
    "MANUAL_BUTTON",
    "NOAGENT_BUTTON",
    "PEEK_BUTTON",
    "QUEUE_BUTTON",
    "AgentView",
    "Behaviour",
    "Step",
    "agent_message",
    "agent_typing",
    "availability",
    "behaviour_for",
    "chat_ended",
    "chat_established",
    "chat_request_fail",
    "chat_request_success",
    "chat_transferred",
    "queue_update",
    "script_for_init",
]

ECHO_BUTTON = "573ECHO00000000"
QUEUE_BUTTON = "573QUEUE0000000"
NOAGENT_BUTTON = "573NOAGENT00000"
FAIL_BUTTON = "573FAIL00000000"
ENDS_BUTTON = "573ENDS00000000"
MANUAL_BUTTON = "573MANUAL000000"
PEEK_BUTTON = "573PEEK00000000"
CONSOLE_BUTTON = "573CONSOLE00000"

ENDS_GREETING = "Hello, I am Ada. This chat will end after your first message."

# "estimated wait time needs >= 47" (SALESFORCE.md 2.2).
_EWT_MIN_VERSION = 47


class AgentView(msgspec.Struct, frozen=True, kw_only=True):
    """What a scripted agent may know about its session."""

    session_id: str
    api_version: int
    receive_queue_updates: bool
    agent_name: str
    agent_user_id: str


class Step(msgspec.Struct, frozen=True, kw_only=True):
    """Wait ``delay_s`` after the previous step, then queue ``messages`` (type, message)."""

    delay_s: float
    messages: tuple[tuple[str, Any], ...] = ()


# ------------------------------------------------------------------------------------------
# Message builders


def _with_ewt(message: dict[str, Any], view: AgentView, seconds: int) -> dict[str, Any]:
    if view.api_version >= _EWT_MIN_VERSION:
        message["estimatedWaitTime"] = seconds
    return message


def chat_request_success(
    view: AgentView, options: SimulatorOptions, *, queue_position: int, wait_s: int
) -> tuple[str, dict[str, Any]]:
    """ChatRequestSuccess as captured by YALO: queued and routed, not yet accepted."""
    message: dict[str, Any] = {
        "connectionTimeout": options.connection_timeout_ms,
        "sensitiveDataRules": [],
        "transcriptSaveEnabled": False,
        "url": "",
        "queuePosition": queue_position,
        "customDetails": [],
        "visitorId": view.session_id,
        "geoLocation": {
            "organization": "Simulator",
            "countryName": "Germany",
            "latitude": 52.52,
            "countryCode": "DE",
            "longitude": 13.4,
        },
    }
    return "ChatRequestSuccess", _with_ewt(message, view, wait_s)


def queue_update(view: AgentView, *, position: int, wait_s: int) -> tuple[str, dict[str, Any]]:
    """QueueUpdate ``{position, estimatedWaitTime}``."""
    return "QueueUpdate", _with_ewt({"position": position}, view, wait_s)


def chat_established(
    name: str, user_id: str, *, sneak_peek: bool = False
) -> tuple[str, dict[str, Any]]:
    """ChatEstablished: the agent accepted the chat (YALO capture's fields)."""
    return "ChatEstablished", {
        "name": name,
        "userId": user_id,
        "items": [],
        "sneakPeekEnabled": sneak_peek,
        "chasitorIdleTimeout": {"isEnabled": False},
    }


def chat_transferred(
    name: str, user_id: str, *, sneak_peek: bool = False
) -> tuple[str, dict[str, Any]]:
    """ChatTransferred: another agent took the chat over."""
    return "ChatTransferred", {
        "name": name,
        "userId": user_id,
        "sneakPeekEnabled": sneak_peek,
        "chasitorIdleTimeout": {"isEnabled": False},
    }


def agent_message(name: str, user_id: str, text: str) -> tuple[str, dict[str, Any]]:
    """An agent ChatMessage (YALO: ``text``, ``name``, ``schedule``, ``agentId``)."""
    return "ChatMessage", {
        "text": text,
        "name": name,
        "schedule": {"responseDelayMilliseconds": 0},
        "agentId": user_id,
    }


def agent_typing(name: str, user_id: str, active: bool) -> tuple[str, dict[str, Any]]:
    """AgentTyping or AgentNotTyping (YALO: ``{name, agentId}``)."""
    return ("AgentTyping" if active else "AgentNotTyping"), {"name": name, "agentId": user_id}


def chat_ended(reason: str = "agent") -> tuple[str, dict[str, Any]]:
    """ChatEnded ``{reason}``."""
    return "ChatEnded", {"reason": reason}


def chat_request_fail(reason: str) -> tuple[str, dict[str, Any]]:
    """ChatRequestFail ``{reason}``."""
    return "ChatRequestFail", {"reason": reason}


def _echo(view: AgentView, options: SimulatorOptions, text: str) -> Step:
    name, user_id = view.agent_name, view.agent_user_id
    return Step(
        delay_s=options.reply_delay_s,
        messages=(
            agent_typing(name, user_id, True),
            agent_message(name, user_id, f"Echo: {text}"),
            agent_typing(name, user_id, False),
        ),
    )


# ------------------------------------------------------------------------------------------
# Behaviours


class Behaviour:
    """A scripted agent. Subclasses override the two hooks; the base never joins.

    Attributes:
        available: What ``Visitor/Availability`` says about the button.
        wait_s: Its estimated wait time in seconds (-1 if unknown, as in D-TYPES).
    """

    available = False
    wait_s = -1

    def on_init(self, view: AgentView, options: SimulatorOptions) -> list[Step]:
        """Script run when ChasitorInit was accepted."""
        return [Step(delay_s=0, messages=(chat_request_fail("InternalFailure"),))]

    def on_visitor_message(
        self, view: AgentView, options: SimulatorOptions, text: str, count: int
    ) -> list[Step]:
        """Script run when visitor ChatMessage number ``count`` was applied."""
        return []


class _Echo(Behaviour):
    available = True
    wait_s = 30
    sneak_peek = False

    def on_init(self, view: AgentView, options: SimulatorOptions) -> list[Step]:
        return [
            Step(
                delay_s=0,
                messages=(
                    chat_request_success(view, options, queue_position=1, wait_s=self.wait_s),
                ),
            ),
            Step(
                delay_s=options.join_delay_s,
                messages=(
                    chat_established(
                        options.agent_name, options.agent_user_id, sneak_peek=self.sneak_peek
                    ),
                ),
            ),
        ]

    def on_visitor_message(
        self, view: AgentView, options: SimulatorOptions, text: str, count: int
    ) -> list[Step]:
        return [_echo(view, options, text)]


class _Queue(_Echo):
    wait_s = 90

    def on_init(self, view: AgentView, options: SimulatorOptions) -> list[Step]:
        # "QueueUpdate ... Only with receiveQueueUpdates:true" (SALESFORCE.md 5): without it
        # the agent still takes as long, the visitor just hears nothing in between.
        updates = view.receive_queue_updates
        return [
            Step(
                delay_s=0,
                messages=(chat_request_success(view, options, queue_position=3, wait_s=90),),
            ),
            Step(
                delay_s=options.queue_step_s,
                messages=(queue_update(view, position=2, wait_s=60),) if updates else (),
            ),
            Step(
                delay_s=options.queue_step_s,
                messages=(queue_update(view, position=1, wait_s=30),) if updates else (),
            ),
            Step(
                delay_s=options.queue_step_s,
                messages=(chat_established(options.agent_name, options.agent_user_id),),
            ),
        ]


class _Peek(_Echo):
    sneak_peek = True


class _Fail(Behaviour):
    def __init__(self, reason: str, *, available: bool) -> None:
        self.reason = reason
        self.available = available

    def on_init(self, view: AgentView, options: SimulatorOptions) -> list[Step]:
        return [Step(delay_s=0, messages=(chat_request_fail(self.reason),))]


class _Ends(_Echo):
    def on_init(self, view: AgentView, options: SimulatorOptions) -> list[Step]:
        steps = super().on_init(view, options)
        name, user_id = options.agent_name, options.agent_user_id
        steps[-1] = Step(
            delay_s=steps[-1].delay_s,
            messages=(*steps[-1].messages, agent_message(name, user_id, ENDS_GREETING)),
        )
        return steps

    def on_visitor_message(
        self, view: AgentView, options: SimulatorOptions, text: str, count: int
    ) -> list[Step]:
        if count != 1:
            return []
        echo = _echo(view, options, text)
        return [Step(delay_s=echo.delay_s, messages=(*echo.messages, chat_ended("agent")))]


class _Manual(_Echo):
    def on_visitor_message(
        self, view: AgentView, options: SimulatorOptions, text: str, count: int
    ) -> list[Step]:
        return []


class _Console(Behaviour):
    """Queued, waiting for a person (the agent console, or the control API's join)."""

    available = True
    wait_s = 60

    def on_init(self, view: AgentView, options: SimulatorOptions) -> list[Step]:
        success = chat_request_success(view, options, queue_position=1, wait_s=self.wait_s)
        return [Step(delay_s=0, messages=(success,))]


BEHAVIOURS: dict[str, Behaviour] = {
    ECHO_BUTTON: _Echo(),
    QUEUE_BUTTON: _Queue(),
    NOAGENT_BUTTON: _Fail("Unavailable", available=False),
    # FAIL answers Availability like a working button, so that a client does try it.
    FAIL_BUTTON: _Fail("InternalFailure", available=True),
    ENDS_BUTTON: _Ends(),
    MANUAL_BUTTON: _Manual(),
    PEEK_BUTTON: _Peek(),
    CONSOLE_BUTTON: _Console(),
}
_UNKNOWN = Behaviour()


def behaviour_for(button_id: str | None) -> Behaviour:
    """The scripted agent behind a button; unknown buttons fail with InternalFailure."""
    return BEHAVIOURS.get(button_id or "", _UNKNOWN)


def script_for_init(
    view: AgentView, options: SimulatorOptions, button_id: str, is_post: bool
) -> list[Step]:
    """The routing script for an accepted ChasitorInit."""
    if not is_post:
        return [Step(delay_s=0, messages=(chat_request_fail("NoPost"),))]
    return behaviour_for(button_id).on_init(view, options)


def availability(
    ids: list[str],
    *,
    api_version: int,
    need_wait: bool,
    overrides: Mapping[str, bool] | None = None,
) -> dict[str, Any]:
    """The ``Visitor/Availability`` answer, in the messages envelope observed by IBM.

    "isAvailable is left out when false; estimatedWaitTime (seconds, -1 if unknown, >= 47.0)
    appears when requested" (D-TYPES). ``overrides`` (button id → available) wins over the
    scripted agent's own :attr:`Behaviour.available`.
    """
    results = []
    for id_ in ids:
        behaviour = behaviour_for(id_)
        available = behaviour.available
        if overrides and id_ in overrides:
            available = overrides[id_]
        result: dict[str, Any] = {"id": id_}
        if available:
            result["isAvailable"] = True
        if need_wait and api_version >= _EWT_MIN_VERSION:
            # A button made available at run time with no scripted wait: unknown (-1).
            result["estimatedWaitTime"] = behaviour.wait_s if available else -1
        results.append(result)
    return {"messages": [{"type": "Availability", "message": {"results": results}}]}
