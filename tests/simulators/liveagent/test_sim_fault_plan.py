"""Pure tests of fault planning and of the model's hooks for faults: no loop, no socket."""

from __future__ import annotations

import json

import pytest

from bridged.simulators.liveagent.faults import RESET_REPLY, Fault, FaultPlan, Outage
from bridged.simulators.liveagent.model import Session
from tests.simulators.liveagent.sim_helpers import fast_options, init_body

T0 = 1000.0


def test_faults_hit_in_order_session_first_then_any_session() -> None:
    plan = FaultPlan()
    assert not plan
    plan.add(None, "ChatMessage", Fault(kind="fail", status=500), count=2)
    plan.add("s1", "ChatMessage", Fault(kind="reset", when="after"))
    plan.add("s1", "ChatMessage", Fault(kind="delay", seconds=0.5))
    assert plan
    labels = [f.label if f else None for f in (plan.take("s1", "ChatMessage") for _ in range(5))]
    assert labels == ["reset_after", "delay_before", "fail_500", "fail_500", None]
    assert plan.take("s2", "ChatMessage") is None
    assert not plan


def test_any_session_faults_reach_every_session_and_sessionless_resources() -> None:
    plan = FaultPlan()
    plan.add(None, "SessionId", Fault(kind="reset"))
    plan.add(None, "Messages", Fault(kind="fail", status=503))
    assert plan.take(None, "SessionId") == Fault(kind="reset")
    fault = plan.take("any", "Messages")
    assert fault is not None and fault.reply.status == 503
    assert plan.take("any", "ChatMessage") is None


def test_pending_faults_are_listed_and_forgotten_with_their_session() -> None:
    plan = FaultPlan()
    plan.add("s1", "ChatMessage", Fault(kind="reset"), count=3)
    plan.add(None, "Messages", Fault(kind="delay", when="after", seconds=1.5))
    plan.take("s1", "ChatMessage")
    assert plan.pending() == [
        {
            "session_id": "s1",
            "resource": "ChatMessage",
            "fault": "reset_before",
            "remaining": 2,
            "kind": "reset",
            "when": "before",
            "seconds": 0.0,
            "status": 0,
            "body": "",
        },
        {
            "session_id": None,
            "resource": "Messages",
            "fault": "delay_after",
            "remaining": 1,
            "kind": "delay",
            "when": "after",
            "seconds": 1.5,
            "status": 0,
            "body": "",
        },
    ]
    plan.forget_session("s1")
    assert [p["resource"] for p in plan.pending()] == ["Messages"]
    plan.clear()
    assert not plan


@pytest.mark.parametrize(
    ("session_id", "resource", "count", "message"),
    [
        ("s1", "Nope", 1, "unknown resource 'Nope'"),
        ("s1", "SessionId", 1, "SessionId requests have no session: use session_id=None"),
        ("s1", "Availability", 1, "Availability requests have no session"),
        (None, "ChatMessage", 0, "count must be an integer >= 1, got 0"),
    ],
)
def test_bad_plans_are_refused(
    session_id: str | None, resource: str, count: int, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        FaultPlan().add(session_id, resource, Fault(kind="reset"), count)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"kind": "explode"}, "unknown fault kind 'explode'"),
        ({"kind": "reset", "when": "during"}, 'when must be "before" or "after"'),
        ({"kind": "fail", "status": 99}, "not an HTTP status: 99"),
        ({"kind": "delay", "seconds": -1}, "seconds must be a number >= 0"),
        ({"kind": "delay", "seconds": float("inf")}, "seconds must be a number >= 0"),
    ],
)
def test_bad_faults_are_refused(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Fault(**kwargs)  # type: ignore[arg-type]


def test_fault_replies_and_labels() -> None:
    assert Fault(kind="fail", status=502, body="bad gateway").reply.body == b"bad gateway"
    assert Fault(kind="fail", status=502).reply.body == b""
    assert Fault(kind="reset").reply is RESET_REPLY
    assert Fault(kind="fail", status=504, when="after").after  # a proxy's answer
    assert not Fault(kind="fail", status=504).after
    assert Fault(kind="fail", status=504, when="after").label == "fail_504_after"
    assert Fault(kind="fail", status=504).label == "fail_504"
    assert Fault(kind="reset", when="after").after
    assert Outage(mode="503", started_at=0, until=1).reply.status == 503
    assert Outage(mode="refuse", started_at=0, until=1).reply is RESET_REPLY
    assert Outage(mode="500", started_at=0, until=1).label == "outage_500"


# ------------------------------------------------------------------------------------------
# The model's side


def _chatting() -> Session:
    session = Session(fast_options(), now=T0, wall_ms=0)
    reply, _ = session.receive_post(
        "ChasitorInit", sequence="1", body=json.dumps(init_body(session.id)).encode(),
        now=T0, api_version=49,
    )
    assert reply.status == 200
    session.queue("ChatEstablished", {"name": "Ada"}, T0)
    assert session.open_poll("-1", T0) is not None
    return session


def _say(session: Session, text: str, seq: int) -> int:
    reply, _ = session.receive_post(
        "ChatMessage", sequence=str(seq), body=json.dumps({"text": text}).encode(),
        now=T0, api_version=49,
    )
    return reply.status


def test_sequence_log_shows_accepted_numbers_and_dropped_duplicates() -> None:
    session = _chatting()
    assert [_say(session, t, s) for t, s in [("a", 2), ("a", 2), ("b", 3), ("c", 5)]] == [
        200, 200, 200, 409,
    ]
    assert session.sequence_log == [
        ("ChasitorInit", 1, True),
        ("ChatMessage", 2, True),
        ("ChatMessage", 2, False),
        ("ChatMessage", 3, True),
    ]
    assert session.sequences_accepted == [1, 2, 3]
    assert session.duplicates_dropped == [("ChatMessage", 2)]
    assert session.visitor_messages == ["a", "b"]
    record = session.record()
    assert record["duplicates_dropped"] == [{"resource": "ChatMessage", "sequence": 2}]
    assert record["sequence_log"][2] == {"resource": "ChatMessage", "sequence": 2, "applied": False}


def test_a_held_poll_can_wait_although_messages_are_queued() -> None:
    session = _chatting()
    session.queue("ChatMessage", {"text": "waiting"}, T0)
    assert session.open_poll(str(session.last_given), T0, hold=True) is None
    assert session.poll_held
    assert session.settle_poll(T0, deliver=False) is None
    reply = session.settle_poll(T0)
    assert reply is not None and reply.status == 200


@pytest.mark.parametrize(("event", "status"), [("switch", 503), ("end", 403)])
def test_a_waiting_poll_still_gets_a_switch_or_the_end_at_once(event: str, status: int) -> None:
    session = _chatting()
    session.queue("ChatMessage", {"text": "waiting"}, T0)
    assert session.open_poll(str(session.last_given), T0, hold=True) is None
    if event == "switch":
        session.switch_server(T0)
    else:
        session.end("agent", T0)
    reply = session.settle_poll(T0, deliver=False)
    assert reply is not None and reply.status == status
    assert not session.poll_held


def test_poll_clock_restarts_after_an_outage() -> None:
    session = _chatting()  # last poll answer at T0; client_poll_timeout 3
    assert session.is_expired(T0 + 3.5)
    session.restart_poll_clock(T0 + 3.5)
    assert not session.is_expired(T0 + 6)
    assert session.is_expired(T0 + 6.6)

