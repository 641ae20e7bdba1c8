"""The per-org access-token queue: at most N grants a window, the rest admitted in order."""

from __future__ import annotations

import asyncio

from bridged.salesforce.messaging.tokenqueue import TokenQueue


async def test_a_burst_over_the_limit_is_served_in_arrival_order() -> None:
    queue = TokenQueue(limit=3, window_s=0.2)
    admitted: list[int] = []
    waiting: dict[int, asyncio.Event] = {}
    for chat in range(8):
        event = waiting[chat] = asyncio.Event()
        if queue.try_acquire("00D000000000001", chat, event.set):
            admitted.append(chat)
    assert admitted == [0, 1, 2]
    for chat in admitted:
        queue.answered(chat)  # the window counts from the answers
    assert queue.depth == 5 and queue.depths() == {"00D000000000001": 5}
    assert [queue.position(c) for c in (3, 7)] == [1, 5]
    async with asyncio.timeout(5):
        while len(admitted) < 8:
            woken = [c for c in range(8) if c not in admitted and waiting[c].is_set()]
            for chat in woken:  # a woken chat comes back and takes its grant
                assert queue.try_acquire("00D000000000001", chat, waiting[chat].set)
                admitted.append(chat)
                queue.answered(chat)
            await asyncio.sleep(0.01)
    assert admitted == list(range(8))
    assert queue.depth == 0
    queue.close()


async def test_a_request_on_the_wire_counts_until_answered_then_for_a_window() -> None:
    """Salesforce counts a request when it arrives: bridged's window runs from the answer."""
    queue = TokenQueue(limit=1, window_s=0.05)
    assert queue.try_acquire("org", "a", lambda: None)
    woken: list[str] = []
    assert not queue.try_acquire("org", "b", lambda: woken.append("b"))
    await asyncio.sleep(0.1)  # longer than the window: "a" is still on the wire
    assert woken == []
    queue.answered("a")
    assert woken == []  # the window runs from now
    async with asyncio.timeout(5):
        while not woken:
            await asyncio.sleep(0.01)
    assert queue.try_acquire("org", "b", lambda: None)
    queue.close()


async def test_orgs_have_windows_of_their_own() -> None:
    queue = TokenQueue(limit=1, window_s=60)
    assert queue.try_acquire("00DA00000000001", "a", lambda: None)
    assert queue.try_acquire("00DB00000000001", "b", lambda: None)
    assert not queue.try_acquire("00DA00000000001", "c", lambda: None)
    assert queue.depths() == {"00DA00000000001": 1}
    queue.close()


async def test_a_chat_that_leaves_the_queue_lets_the_next_one_in_its_place() -> None:
    queue = TokenQueue(limit=1, window_s=0.1)
    assert queue.try_acquire("org", "first", lambda: None)
    queue.answered("first")
    woken: list[str] = []
    assert not queue.try_acquire("org", "second", lambda: woken.append("second"))
    assert not queue.try_acquire("org", "third", lambda: woken.append("third"))
    queue.leave("second")  # ended while waiting
    assert queue.position("third") == 1
    async with asyncio.timeout(5):
        while not woken:
            await asyncio.sleep(0.01)
    assert woken == ["third"]
    assert queue.try_acquire("org", "third", lambda: None)
    queue.close()
