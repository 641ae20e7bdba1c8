"""The session's visitor activity is kept item by item, and comes back whole, in order."""

from __future__ import annotations

import json

import msgspec

from bridged.chats import facts
from bridged.salesforce.liveagent.protocol import HttpResponse, Lane, LiveAgentSession, Purpose
from tests.salesforce.liveagent.test_protocol import answer, chatting_session, messages, params
from tests.salesforce.liveagent.test_protocol_faults import _settle


class KeptList:
    """What the store holds of one kept list: items by key; drops first, then items."""

    def __init__(self) -> None:
        self.items: dict[int, bytes] = {}

    def apply(self, session: LiveAgentSession) -> int:
        added, gone = session.take_activity_changes()
        for first, last in gone:
            for key in [k for k in self.items if first <= k <= last]:
                del self.items[key]
        self.items.update(added)
        return len(added)

    def restored(self, session: LiveAgentSession) -> LiveAgentSession:
        return LiveAgentSession.restore(session.params, session.snapshot(),
                                        sorted(self.items.items()))


def texts(session: LiveAgentSession) -> list[str]:
    """The texts the session will send, in order (draining its post lane)."""
    out = []
    while (request := session.next_request(Lane.POST)) is not None:
        assert request.body is not None
        out.append(json.loads(request.body).get("text", request.purpose.value))
        session.receive_response(request, HttpResponse(200))
    return out


def test_activity_is_kept_item_by_item_and_restores_in_order() -> None:
    session = LiveAgentSession(params())
    session.start()
    answer(session, Lane.POST, HttpResponse(200, json.dumps({
        "id": "s", "key": "s!k", "affinityToken": "a1", "clientPollTimeout": 40}).encode()))
    answer(session, Lane.POST, HttpResponse(200))  # ChasitorInit: waiting for an agent
    kept = KeptList()
    for i in range(3):
        session.send_text(f"m{i}", f"visitor {i}")
    assert kept.apply(session) == 3
    session.send_history(["history 1", "history 2"])  # ahead of the visitor's
    session.send_text("m3", "visitor 3")
    assert kept.apply(session) == 3  # only the new ones, never the whole queue again
    assert kept.apply(session) == 0 and not session.activity_changed
    again = kept.restored(session)
    answer(again, Lane.POLL, messages(("ChatEstablished", {"name": "Ada", "userId": "005x"})))
    expected = ["history 1", "history 2", "visitor 0", "visitor 1", "visitor 2", "visitor 3"]
    assert texts(again) == expected
    # What was sent is gone from the kept list too.
    kept_after = KeptList()
    kept_after.items = dict(kept.items)
    kept_after.apply(again)
    assert kept_after.items == {}


def test_a_typing_change_replaces_the_kept_one_and_a_sent_message_goes() -> None:
    session = chatting_session()
    kept = KeptList()
    session.send_text("m1", "one")
    session.send_text("m2", "two")
    session.set_typing(True)
    kept.apply(session)
    session.set_typing(False)  # replaces the typing not yet sent
    request = session.next_request(Lane.POST)  # "one" is in flight: no longer queued
    assert request is not None
    kept.apply(session)
    again = kept.restored(session)  # the in-flight POST comes back as unconfirmed, first
    assert [msgspec.json.decode(a.body or b"{}").get("text", a.purpose.value)
            for a in again._activity] == ["two", Purpose.NOT_TYPING.value]
    assert texts(again) == ["one", "two", Purpose.NOT_TYPING.value]


def test_activity_inline_in_an_earlier_snapshot_is_kept_anew() -> None:
    session = chatting_session()
    session.send_text("m1", "one")
    session.send_text("m2", "two")
    old = session.snapshot()
    inline = msgspec.structs.replace(old, activity=list(session._activity))  # version 1
    again = LiveAgentSession.restore(session.params, inline)
    kept = KeptList()
    assert kept.apply(again) == 2  # written as items with the next save
    assert texts(kept.restored(again)) == ["one", "two"]


def test_a_message_a_switch_left_unconfirmed_is_found_again_by_its_key() -> None:
    session = chatting_session()
    kept = KeptList()
    session.send_text("m1", "ok")
    answer(session, Lane.POST, HttpResponse(200))
    session.send_text("m2", "did it arrive?")
    post = session.next_request(Lane.POST)
    assert post is not None
    session.receive_failure(post)  # no answer: it may have arrived
    answer(session, Lane.POLL, HttpResponse(503))  # a server switch: m2 is unconfirmed
    kept.apply(session)
    session.send_text("m3", "later")  # kept with a later save: m2 is an older item by then
    kept.apply(session)
    session.facts_received()
    again = kept.restored(session)
    _settle(again, ["ok", "did it arrive?"])  # the new server's transcript has it
    assert again.facts_received() == [facts.Delivered(id="m2")]
    assert texts(again) == ["later"]
