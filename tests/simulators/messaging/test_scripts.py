"""Each scripted agent's sequence of events, as a guest sees them on the stream."""

from __future__ import annotations

from typing import Any

import pytest

from bridged.simulators.messaging import (
    AGENT_ENDS_DEPLOYMENT,
    ECHO_DEPLOYMENT,
    MANUAL_DEPLOYMENT,
    NO_AGENT_DEPLOYMENT,
    QUEUE_DEPLOYMENT,
    ROUTING_FAILS_DEPLOYMENT,
    TRANSFER_DEPLOYMENT,
    Simulator,
)
from bridged.simulators.messaging.deployments import default_deployments
from bridged.simulators.messaging.options import MessagingOptions
from bridged.simulators.messaging.scripts import ScriptView, on_visitor_message
from tests.simulators.messaging.helpers import Event, new_id

MESSAGE = "CONVERSATION_MESSAGE"
ADDED = "CONVERSATION_PARTICIPANT_CHANGED"
ROUTED = "CONVERSATION_ROUTING_RESULT"
STATUS = "CONVERSATION_SESSION_STATUS_CHANGED"
QUEUE = "CONVERSATION_QUEUE_POSITION"


def names(events: list[Event]) -> list[str]:
    return [e.event.removeprefix("CONVERSATION_") for e in events]


def participant(event: Event) -> tuple[str, str, str]:
    (change,) = event.payload["entries"]
    return change["operation"], change["participant"]["role"], change["displayName"]


def text(event: Event) -> str:
    content: str = event.payload["abstractMessage"]["staticContent"]["text"]
    return content


async def test_echo(guest: Any) -> None:
    visitor = guest(ECHO_DEPLOYMENT)
    reader = await visitor.start()
    start = await reader.take(3)
    assert names(start) == ["ROUTING_RESULT", "PARTICIPANT_CHANGED", "SESSION_STATUS_CHANGED"]
    routing = start[0].payload
    assert routing["routingType"] == "Initial" and routing["failureType"] == "None"
    assert routing["recordId"].startswith("0Mw") and routing["errorMessages"] == []
    assert routing["estimatedWaitTime"] == {"estimatedWaitTimeInSeconds": -1,
                                            "isEWTRequested": True}
    assert participant(start[1]) == ("add", "Agent", "Ada Agent")
    assert start[2].payload["sessionStatus"] == "Active"
    assert start[2].payload["previousSessionStatus"] == "Waiting"
    mid = new_id()
    await visitor.send("ping?", mid)
    answer = await reader.take(6)
    assert names(answer) == ["MESSAGE", "DELIVERY_ACKNOWLEDGEMENT", "READ_ACKNOWLEDGEMENT",
                             "TYPING_STARTED_INDICATOR", "MESSAGE", "TYPING_STOPPED_INDICATOR"]
    assert answer[0].entry["sender"]["role"] == "EndUser"
    assert answer[1].entry["relatedRecords"] == [mid] == answer[2].entry["relatedRecords"]
    assert answer[4].entry["sender"]["role"] == "Agent" and text(answer[4]) == "Echo: ping?"
    await visitor.send("again")
    assert text((await reader.until(MESSAGE))[-1]) == "again"
    assert text((await reader.until(MESSAGE))[-1]) == "Echo: again"


async def test_echo_does_not_answer_before_the_agent_joined(make_sim: Any,
                                                            guest: Any) -> None:
    sim = await make_sim(join_delay_s=0.3)
    visitor = guest(ECHO_DEPLOYMENT, sim)
    reader = await visitor.start()
    await reader.until(ROUTED)
    await visitor.send("anyone?")
    events = await reader.until(STATUS)
    assert names(events) == ["MESSAGE", "PARTICIPANT_CHANGED", "SESSION_STATUS_CHANGED"]
    assert await reader.quiet(0.1) == []


async def test_queue(guest: Any) -> None:
    visitor = guest(QUEUE_DEPLOYMENT)
    reader = await visitor.start()
    events = await reader.take(6)
    assert names(events) == ["ROUTING_RESULT", "QUEUE_POSITION", "QUEUE_POSITION",
                             "QUEUE_POSITION", "PARTICIPANT_CHANGED", "SESSION_STATUS_CHANGED"]
    assert events[0].payload["estimatedWaitTime"]["estimatedWaitTimeInSeconds"] == 90
    assert [e.payload["queuePosition"] for e in events[1:4]] == [3, 2, 1]
    waits = [e.payload["estimatedWaitTime"]["estimatedWaitTimeInSeconds"] for e in events[1:4]]
    assert waits == [90, 60, 30]
    await visitor.send("hi")
    assert text((await reader.until(MESSAGE))[-1]) == "hi"
    assert text((await reader.until(MESSAGE))[-1]) == "Echo: hi"


async def test_transfer(guest: Any) -> None:
    visitor = guest(TRANSFER_DEPLOYMENT)
    reader = await visitor.start()
    await reader.until(STATUS)
    await visitor.send("help")
    events = await reader.until(ADDED)
    events += await reader.until(ADDED)
    assert names(events)[-4:] == ["TYPING_STOPPED_INDICATOR", "PARTICIPANT_CHANGED",
                                  "ROUTING_RESULT", "PARTICIPANT_CHANGED"]
    assert text(events[-5]) == "Echo: help"
    assert participant(events[-3]) == ("remove", "Agent", "Ada Agent")
    assert events[-2].payload["routingType"] == "Transfer"
    assert events[-2].payload["failureType"] == "None"
    assert participant(events[-1]) == ("add", "Agent", "Bo Backup")
    assert await visitor.routing_status() == "ROUTED"
    await visitor.send("still there?")
    answer = [e for e in await reader.take(6) if e.event == MESSAGE][-1]
    assert answer.entry["senderDisplayName"] == "Bo Backup"
    assert text(answer) == "Echo: still there?"


async def test_transfer_shows_transfer_status_between_remove_and_add(make_sim: Any,
                                                                     guest: Any) -> None:
    sim = await make_sim(routing_delay_s=0.3)  # the gap between remove and RoutingResult
    visitor = guest(TRANSFER_DEPLOYMENT, sim)
    reader = await visitor.start()
    await reader.until(STATUS, timeout=3)
    await visitor.send("help")
    events = await reader.until(ADDED)
    assert participant(events[-1])[0] == "remove"
    assert await visitor.routing_status() == "TRANSFER"
    await reader.until(ADDED)
    assert await visitor.routing_status() == "ROUTED"


async def test_agent_ends(guest: Any, sim: Simulator) -> None:
    visitor = guest(AGENT_ENDS_DEPLOYMENT)
    reader = await visitor.start()
    await reader.until(STATUS)
    await visitor.send("bye?")
    events = await reader.until(STATUS)
    assert names(events)[-3:] == ["TYPING_STOPPED_INDICATOR", "PARTICIPANT_CHANGED",
                                  "SESSION_STATUS_CHANGED"]
    assert text(events[-4]) == "Echo: bye?"
    assert participant(events[-2]) == ("remove", "Agent", "Ada Agent")
    ended = events[-1].payload
    assert ended["sessionStatus"] == "Ended" and ended["sessionEndedByRole"] == "Agent"
    assert await visitor.routing_status() == "NEEDS_ROUTING"
    assert "CONVERSATION_CLOSE_CONVERSATION" not in [e.event for e in reader.events]
    assert (await visitor.send("hello?")).status == 417
    assert sim.conversation(visitor.conversation_id).is_open


async def test_routing_fails(guest: Any) -> None:
    visitor = guest(ROUTING_FAILS_DEPLOYMENT)
    reader = await visitor.start()
    routing, ended = await reader.take(2)
    assert routing.payload["failureType"] == "RoutingError"
    assert routing.payload["errorMessages"] == [routing.payload["failureReason"]]
    assert ended.payload["sessionStatus"] == "Ended"
    assert ended.payload["sessionEndedByRole"] == "System"
    assert await visitor.routing_status() == "NEEDS_ROUTING"
    assert (await visitor.send("hello?")).status == 417
    assert await reader.quiet(0.1) == []


@pytest.mark.parametrize("deployment", [NO_AGENT_DEPLOYMENT, MANUAL_DEPLOYMENT])
async def test_no_agent_and_manual_never_add_an_agent(guest: Any, deployment: str) -> None:
    visitor = guest(deployment)
    reader = await visitor.start()
    assert names(await reader.take(1)) == ["ROUTING_RESULT"]
    await visitor.send("hello?")
    assert names(await reader.quiet(0.15)) == ["MESSAGE"]
    assert await visitor.routing_status() == "INITIAL"


async def test_names_are_configurable(make_sim: Any, guest: Any) -> None:
    deployments = {**default_deployments(), "Acme_Support": "transfer"}
    sim = await make_sim(deployments=deployments, agent_name="Alice", second_agent_name="Bob",
                         agent_acks=False)
    visitor = guest("Acme_Support", sim)
    reader = await visitor.start()
    events = await reader.take(3)
    assert participant(events[1]) == ("add", "Agent", "Alice")
    await visitor.send("x")
    events = await reader.until(ADDED)
    assert "DELIVERY_ACKNOWLEDGEMENT" not in names(events)
    assert participant(events[-1]) == ("remove", "Agent", "Alice")
    events = await reader.until(ADDED)
    assert participant(events[-1]) == ("add", "Agent", "Bob")


def test_the_scripts_answer_nothing_without_an_agent() -> None:
    options = MessagingOptions()
    view = ScriptView(kind="echo", agent_subject=None, answered=0)
    assert on_visitor_message(view, options, new_id(), "x") == []
    view = ScriptView(kind="agent_ends", agent_subject="005", answered=1)
    assert on_visitor_message(view, options, new_id(), "x") == []
