"""A chat's events, inbox and pending message ids are kept item by item, and come back."""

from __future__ import annotations

import sys

import msgspec

from bridged.chats import facts
from bridged.chats.chat import Chat, ChatRecord, ChatStatic
from bridged.config.webchat import WebchatFields, resolve_webchat
from bridged.ocp import envelopes as env

BASE = "https://d.la1-c1-fra.salesforceliveagent.com/chat/rest/"


def new_chat() -> Chat:
    webchat = resolve_webchat(WebchatFields(
        live_agent_base_url=BASE, organization_id="00D000000000001",
        deployment_id="572000000000001", button_id="573000000000001"), None, {},
        ["*.salesforceliveagent.com"])
    return Chat("c1", webchat, env.Start(chat="c1", history_token="secret-jwt"),
                inbox_size=8, max_held=100)


class Kept:
    """What the store holds of a chat: its record, its lists (drops first, then items)."""

    def __init__(self) -> None:
        self.items: dict[tuple[int, int], bytes] = {}
        self.snapshot = b""
        self.static = b""
        self.written = 0

    def save(self, chat: Chat) -> None:
        items: list[tuple[int, int, bytes]] = []
        drops: list[tuple[int, int, int]] = []
        chat.kept_changes(items, drops)
        for list_id, first, last in drops:
            for key in [k for k in self.items if k[0] == list_id and first <= k[1] <= last]:
                del self.items[key]
        self.items.update(((list_id, key), data) for list_id, key, data in items)
        self.written = sum(len(data) for _, _, data in items)
        self.snapshot = ChatRecord(chat=chat.snapshot()).encode()
        self.static = self.static or chat.static("salesforce").encode()

    def restored(self) -> Chat:
        lists: dict[int, list[tuple[int, bytes]]] = {}
        for (list_id, key), data in sorted(self.items.items()):
            lists.setdefault(list_id, []).append((key, data))
        return Chat.restore(ChatStatic.decode(self.static),
                            ChatRecord.decode(self.snapshot).chat, [], lists,
                            inbox_size=8, max_held=100)


def message(i: int) -> env.Message:
    return env.Message(chat="c1", id=f"m{i}", text=f"visitor {i}")


def test_events_inbox_and_pending_ids_come_back_after_item_by_item_saves() -> None:
    chat, kept = new_chat(), Kept()
    for i in range(5):
        chat.emit(facts.AgentMessage(agent="Ada", text=f"agent {i}"))
    for i in range(4):
        chat.inbox.put_nowait(message(i))
        chat.accept(f"m{i}")
    kept.save(chat)
    chat.ack(2)  # OCP has the first two events
    chat.inbox.get_nowait()  # the actor took m0 and m1
    chat.inbox.get_nowait()
    chat.emit(facts.Delivered(id="m0"))  # m0 is answered, m1 still pending
    kept.save(chat)
    assert kept.written < 200  # one new event, nothing held before it again
    again = kept.restored()
    assert [e.seq for e in again.held] == [3, 4, 5, 6]
    assert [c.id for c in again.inbox.peek() if isinstance(c, env.Message)] == ["m2", "m3"]
    assert list(again.pending_ids) == ["m1", "m2", "m3"]  # in the order taken in
    # And it goes on from there: new items after the kept ones, acks drop them.
    again.emit(facts.AgentMessage(agent="Ada", text="after"))
    again.inbox.put_nowait(message(9))
    again.accept("m9")
    again.ack(5)
    kept.save(again)
    third = kept.restored()
    assert [e.seq for e in third.held] == [6, 7]
    assert [c.id for c in third.inbox.peek() if isinstance(c, env.Message)] == ["m2", "m3", "m9"]
    assert list(third.pending_ids) == ["m1", "m2", "m3", "m9"]


def test_held_errors_are_kept_item_by_item_and_go_with_their_ack() -> None:
    chat, kept = new_chat(), Kept()
    chat.emit(facts.AgentMessage(agent="Ada", text="one"))
    chat.accept("m1")
    chat.accept("m2")
    chat.emit(facts.Undelivered(id="m1", detail="the chat ended first"))
    kept.save(chat)
    chat.emit(facts.Undelivered(id="m2", detail="the chat ended first"))
    chat.emit(facts.AgentMessage(agent="Ada", text="two"))
    kept.save(chat)
    again = kept.restored()
    assert [(h.serial, h.before, h.error.ref) for h in again.held_errors] == [
        (1, 2, "m1"), (2, 2, "m2")]
    again.ack(2)  # the errors before event 2 go with it
    kept.save(again)
    assert kept.restored().held_errors == []
    assert not again.pending_ids


def test_the_history_token_is_not_part_of_what_is_kept() -> None:
    chat = new_chat()
    assert b"secret-jwt" not in chat.static("salesforce").encode()
    assert chat.start.history_token == "secret-jwt"  # still there for the history fetch


def test_a_record_of_version_1_is_read_and_kept_item_by_item_from_then_on() -> None:
    chat, kept = new_chat(), Kept()
    for i in range(3):
        chat.emit(facts.AgentMessage(agent="Ada", text=f"agent {i}"))
    kept.save(chat)
    # What an earlier version wrote: everything inline in the snapshot, no items.
    inline = msgspec.structs.replace(chat.snapshot(), held=list(chat.held), inbox=[message(1)],
                                     pending_ids=["m1"])
    kept.snapshot = msgspec.msgpack.encode(ChatRecord(version=1, chat=inline))
    kept.items = {}
    old = kept.restored()
    assert [e.seq for e in old.held] == [1, 2, 3] and list(old.pending_ids) == ["m1"]
    kept.save(old)  # the next save writes it all as items, and the snapshot without it
    assert ChatRecord.decode(kept.snapshot).chat.held == []
    again = kept.restored()
    assert [e.seq for e in again.held] == [1, 2, 3]
    assert [c.id for c in again.inbox.peek() if isinstance(c, env.Message)] == ["m1"]
    assert list(again.pending_ids) == ["m1"]


def test_a_chat_with_nothing_pending_holds_no_emptied_tables() -> None:
    """Between two messages (most of a chat's life) the pending ids' dicts are as small as
    new ones, not the tables of the messages answered (memory per live chat)."""
    chat, kept = new_chat(), Kept()
    empty = sys.getsizeof({})
    for i in range(20):
        chat.accept(f"m{i}")
    kept.save(chat)
    for i in range(20):
        chat.emit(facts.Delivered(id=f"m{i}"))
    kept.save(chat)
    assert sys.getsizeof(chat.pending_ids) == sys.getsizeof(chat._pending_keys) == empty
    again = kept.restored()
    assert not again.pending_ids  # and what is kept says so
    chat.accept("m20")
    assert list(chat.pending_ids) == ["m20"]
