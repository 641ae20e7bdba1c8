"""The bounded mailbox."""

from __future__ import annotations

import asyncio
import weakref

import pytest

from bridged.chats.mailbox import LoadMeter, Mailbox
from bridged.errors import MailboxClosed, MailboxFull


async def test_put_nowait_refuses_when_full_and_never_grows() -> None:
    box: Mailbox[int] = Mailbox(2)
    box.put_nowait(1)
    box.put_nowait(2)
    with pytest.raises(MailboxFull):
        box.put_nowait(3)
    assert len(box) == 2
    assert box.statistics().size == 2


async def test_put_waits_for_room_and_get_waits_for_an_item() -> None:
    box: Mailbox[int] = Mailbox(1)
    box.put_nowait(1)
    putter = asyncio.create_task(box.put(2))
    await asyncio.sleep(0)
    assert not putter.done()
    assert await box.get() == 1
    await putter
    assert await box.get() == 2
    getter = asyncio.create_task(box.get())
    await asyncio.sleep(0)
    box.put_nowait(3)
    assert await getter == 3


async def test_close_wakes_the_reader_and_refuses_more() -> None:
    box: Mailbox[int] = Mailbox(1)
    getter = asyncio.create_task(box.get())
    await asyncio.sleep(0)
    box.close()
    box.close()  # idempotent
    with pytest.raises(MailboxClosed):
        await getter
    with pytest.raises(MailboxClosed):
        box.put_nowait(1)


async def test_on_put_is_called_for_each_accepted_item() -> None:
    calls = []
    box: Mailbox[int] = Mailbox(4, on_put=lambda: calls.append(1))
    box.put_nowait(1)
    box.put_nowait(2)
    assert box.drain() == [1, 2]
    assert len(calls) == 2


async def test_an_on_put_method_is_called_on_its_object_and_does_not_keep_it() -> None:
    """A chat holds its inbox and the inbox calls the chat's method: the inbox must not keep
    the chat alive (a reference cycle would wait for the collector, which bridged runs
    rarely), and once the chat is gone a put calls nothing."""

    class Owner:
        def __init__(self) -> None:
            self.puts = 0
            self.inbox: Mailbox[int] = Mailbox(4, on_put=self.put)

        def put(self) -> None:
            self.puts += 1

    owner = Owner()
    box = owner.inbox
    box.put_nowait(1)
    box.put_nowait(2)
    assert owner.puts == 2
    gone = weakref.ref(owner)
    del owner
    assert gone() is None  # freed by reference counting alone
    box.put_nowait(3)  # calls no one, and raises nothing
    assert box.drain() == [1, 2, 3]


def test_the_load_meter_refuses_only_owners_past_their_fair_share() -> None:
    load = LoadMeter(high=10, low=4)
    load.add("flooder", 9)
    load.add("quiet", 1)
    assert load.overloaded
    # Two owners hold some: each may hold up to 5 while overloaded.
    assert not load.admits("flooder")
    assert load.admits("quiet")
    assert load.admits("newcomer")  # three owners then: a share of 3, and it holds none
    load.add("quiet", 4)
    assert not load.admits("quiet")
    # Moving load between owners (a chat attached elsewhere) changes no total, no mark.
    load.move("flooder", None, 9)
    assert (load.total, load.overloaded, load.held_by("flooder")) == (14, True, 0)
    assert load.admits("flooder")
    load.remove(None, 9)
    assert load.overloaded  # 5: above the low mark
    load.remove("quiet", 1)
    assert not load.overloaded and load.admits("quiet")
