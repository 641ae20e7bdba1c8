"""The scripted agents, chosen by button id: pure scripts and over loopback."""

from __future__ import annotations

from typing import Any

import pytest

from bridged.simulators.liveagent import (
    CONSOLE_BUTTON,
    ECHO_BUTTON,
    ENDS_BUTTON,
    ENDS_GREETING,
    FAIL_BUTTON,
    MANUAL_BUTTON,
    NOAGENT_BUTTON,
    QUEUE_BUTTON,
)
from bridged.simulators.liveagent.behaviours import AgentView, script_for_init
from tests.simulators.liveagent.sim_helpers import Visitor, fast_options, types


def view(**overrides: Any) -> AgentView:
    values: dict[str, Any] = {
        "session_id": "s",
        "api_version": 49,
        "receive_queue_updates": True,
        "agent_name": "Ada Agent",
        "agent_user_id": "005000000000ADA",
    }
    values.update(overrides)
    return AgentView(**values)


def by_type(messages: list[dict[str, Any]], message_type: str) -> list[dict[str, Any]]:
    return [m["message"] for m in messages if m["type"] == message_type]


# ------------------------------------------------------------------------------------------
# Pure scripts


def test_queue_script_timing_and_content() -> None:
    options = fast_options(queue_step_s=1.5)
    steps = script_for_init(view(), options, QUEUE_BUTTON, True)
    assert [s.delay_s for s in steps] == [0, 1.5, 1.5, 1.5]
    assert [[t for t, _ in s.messages] for s in steps] == [
        ["ChatRequestSuccess"],
        ["QueueUpdate"],
        ["QueueUpdate"],
        ["ChatEstablished"],
    ]
    assert steps[1].messages[0][1] == {"position": 2, "estimatedWaitTime": 60}
    quiet = script_for_init(view(receive_queue_updates=False), options, QUEUE_BUTTON, True)
    assert [[t for t, _ in s.messages] for s in quiet] == [
        ["ChatRequestSuccess"],
        [],
        [],
        ["ChatEstablished"],
    ]


def test_estimated_wait_time_needs_version_47() -> None:
    options = fast_options()
    old = script_for_init(view(api_version=46), options, ECHO_BUTTON, True)
    assert "estimatedWaitTime" not in old[0].messages[0][1]
    new = script_for_init(view(api_version=47), options, ECHO_BUTTON, True)
    assert new[0].messages[0][1]["estimatedWaitTime"] == 30


@pytest.mark.parametrize(
    ("button", "reason"),
    [
        (NOAGENT_BUTTON, "Unavailable"),
        (FAIL_BUTTON, "InternalFailure"),
        ("573UNKNOWN00000", "InternalFailure"),
        ("", "InternalFailure"),
    ],
)
def test_failing_buttons(button: str, reason: str) -> None:
    steps = script_for_init(view(), fast_options(), button, True)
    assert [s.messages for s in steps] == [(("ChatRequestFail", {"reason": reason}),)]


def test_is_post_false_fails_with_no_post() -> None:
    steps = script_for_init(view(), fast_options(), ECHO_BUTTON, False)
    assert [s.messages for s in steps] == [(("ChatRequestFail", {"reason": "NoPost"}),)]


# ------------------------------------------------------------------------------------------
# Over loopback


async def test_echo_agent(make_sim: Any) -> None:
    sim, client = await make_sim()
    visitor = Visitor(client)
    messages = await visitor.join(ECHO_BUTTON)
    assert types(messages) == ["ChatRequestSuccess", "ChatEstablished"]
    success = by_type(messages, "ChatRequestSuccess")[0]
    assert success["queuePosition"] == 1
    assert success["connectionTimeout"] == 150000
    assert success["estimatedWaitTime"] == 30
    assert by_type(messages, "ChatEstablished") == [
        {
            "name": "Ada Agent",
            "userId": "005000000000ADA",
            "items": [],
            "sneakPeekEnabled": False,
            "chasitorIdleTimeout": {"isEnabled": False},
        }
    ]
    assert (await visitor.post("ChatMessage", {"text": "ping"})).status == 200
    messages = await visitor.poll_until("AgentNotTyping")
    assert types(messages)[2:] == ["AgentTyping", "ChatMessage", "AgentNotTyping"]
    assert by_type(messages, "ChatMessage") == [
        {
            "text": "Echo: ping",
            "name": "Ada Agent",
            "schedule": {"responseDelayMilliseconds": 0},
            "agentId": "005000000000ADA",
        }
    ]
    assert sim.sessions[visitor.id].visitor_messages == ["ping"]


async def test_echo_agent_without_estimated_wait_time_before_47(make_sim: Any) -> None:
    _, client = await make_sim()
    visitor = Visitor(client, version="46")
    messages = await visitor.join(ECHO_BUTTON)
    assert "estimatedWaitTime" not in by_type(messages, "ChatRequestSuccess")[0]


async def test_queue_agent(make_sim: Any) -> None:
    _, client = await make_sim()
    visitor = Visitor(client)
    messages = await visitor.join(QUEUE_BUTTON)
    assert types(messages) == [
        "ChatRequestSuccess",
        "QueueUpdate",
        "QueueUpdate",
        "ChatEstablished",
    ]
    assert by_type(messages, "ChatRequestSuccess")[0]["queuePosition"] == 3
    assert by_type(messages, "QueueUpdate") == [
        {"position": 2, "estimatedWaitTime": 60},
        {"position": 1, "estimatedWaitTime": 30},
    ]
    await visitor.post("ChatMessage", {"text": "q"})
    messages = await visitor.poll_until("AgentNotTyping")
    assert by_type(messages, "ChatMessage")[0]["text"] == "Echo: q"


async def test_queue_agent_without_queue_updates(make_sim: Any) -> None:
    _, client = await make_sim()
    visitor = Visitor(client)
    messages = await visitor.join(QUEUE_BUTTON, receiveQueueUpdates=False)
    assert types(messages) == ["ChatRequestSuccess", "ChatEstablished"]


@pytest.mark.parametrize(
    ("button", "reason"),
    [
        (NOAGENT_BUTTON, "Unavailable"),
        (FAIL_BUTTON, "InternalFailure"),
        ("573SOMETHING000", "InternalFailure"),
    ],
)
async def test_failing_agents_end_the_session(make_sim: Any, button: str, reason: str) -> None:
    sim, client = await make_sim()
    visitor = Visitor(client)
    await visitor.start()
    assert (await visitor.init(button)).status == 200
    messages = await visitor.poll_until("ChatRequestFail")
    assert messages == [{"type": "ChatRequestFail", "message": {"reason": reason}}]
    assert sim.sessions[visitor.id].end_reason == "request_failed"
    assert (await visitor.poll()).status == 403


async def test_no_post(make_sim: Any) -> None:
    _, client = await make_sim()
    visitor = Visitor(client)
    await visitor.start()
    assert (await visitor.init(ECHO_BUTTON, isPost=False)).status == 200
    messages = await visitor.poll_until("ChatRequestFail")
    assert messages[0]["message"] == {"reason": "NoPost"}


async def test_ends_agent(make_sim: Any) -> None:
    sim, client = await make_sim()
    visitor = Visitor(client)
    messages = await visitor.join(ENDS_BUTTON)
    if "ChatMessage" not in types(messages):
        messages = await visitor.poll_until("ChatMessage")
    assert by_type(messages, "ChatMessage")[0]["text"] == ENDS_GREETING
    assert (await visitor.post("ChatMessage", {"text": "bye"})).status == 200
    messages = await visitor.poll_until("ChatEnded")
    assert types(messages)[-4:] == ["AgentTyping", "ChatMessage", "AgentNotTyping", "ChatEnded"]
    assert by_type(messages, "ChatMessage")[-1]["text"] == "Echo: bye"
    assert by_type(messages, "ChatEnded") == [{"reason": "agent"}]
    session = sim.sessions[visitor.id]
    assert session.end_reason == "agent"
    assert (await visitor.poll()).status == 403
    assert (await visitor.post("ChatMessage", {"text": "hello?"})).status == 403


async def test_manual_agent_only_joins(make_sim: Any) -> None:
    sim, client = await make_sim()
    visitor = Visitor(client)
    messages = await visitor.join(MANUAL_BUTTON)
    assert types(messages) == ["ChatRequestSuccess", "ChatEstablished"]
    await visitor.post("ChatMessage", {"text": "anyone?"})
    assert (await visitor.poll()).status == 204
    sim.agent_says(visitor.id, "yes")
    resp = await visitor.poll()
    assert resp.json()["messages"][0]["message"]["text"] == "yes"


async def test_the_console_agent_waits_until_someone_joins(make_sim: Any) -> None:
    sim, client = await make_sim()
    visitor = Visitor(client)
    await visitor.start()
    assert (await visitor.init(CONSOLE_BUTTON)).status == 200
    messages = await visitor.poll_until("ChatRequestSuccess")
    assert types(messages) == ["ChatRequestSuccess"]
    # A whole idle hold passes (the scripted agents join well within it): nobody joined.
    assert (await visitor.poll()).status == 204
    sim.agent_joins(visitor.id, "Pat Person", "005000000000PAT")
    messages = await visitor.poll_until("ChatEstablished")
    assert by_type(messages, "ChatEstablished")[0]["name"] == "Pat Person"


async def test_echo_replies_come_from_the_agent_after_a_transfer(make_sim: Any) -> None:
    sim, client = await make_sim()
    visitor = Visitor(client)
    await visitor.join(ECHO_BUTTON)
    sim.agent_transfers(visitor.id, "Bob Backup")
    messages = await visitor.poll_until("ChatTransferred")
    transferred = by_type(messages, "ChatTransferred")[0]
    assert transferred["name"] == "Bob Backup"
    assert transferred["userId"].startswith("005") and len(transferred["userId"]) == 15
    await visitor.post("ChatMessage", {"text": "who?"})
    messages = await visitor.poll_until("AgentNotTyping")
    assert by_type(messages, "ChatMessage")[-1]["name"] == "Bob Backup"
