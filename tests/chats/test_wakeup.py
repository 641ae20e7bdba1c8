"""The actors' wake-up flag behaves as asyncio.Event does for its one waiter."""

from __future__ import annotations

import asyncio
import sys

import pytest

from bridged.chats.wakeup import Wakeup


async def test_a_set_flag_lets_wait_return_at_once_until_cleared() -> None:
    flag = Wakeup()
    assert not flag.is_set()
    flag.set()
    assert flag.is_set()
    await asyncio.wait_for(flag.wait(), 1.0)
    flag.clear()
    assert not flag.is_set()
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(flag.wait(), 0.05)


async def test_set_wakes_the_waiting_task_and_a_cancelled_wait_leaves_it_usable() -> None:
    flag = Wakeup()
    waiting = asyncio.create_task(flag.wait())
    await asyncio.sleep(0)
    assert not waiting.done()
    asyncio.get_running_loop().call_soon(flag.set)
    await asyncio.wait_for(waiting, 1.0)
    flag.clear()
    cancelled = asyncio.create_task(flag.wait())
    await asyncio.sleep(0)
    cancelled.cancel()
    await asyncio.gather(cancelled, return_exceptions=True)
    flag.set()
    await asyncio.wait_for(flag.wait(), 1.0)  # the cancelled wait left no waiter behind


async def test_one_waiter_at_a_time() -> None:
    flag = Wakeup()
    first = asyncio.create_task(flag.wait())
    await asyncio.sleep(0)
    with pytest.raises(RuntimeError, match="one waiting task"):
        await flag.wait()
    flag.set()
    await first


def test_it_is_far_smaller_than_an_event() -> None:
    assert sys.getsizeof(Wakeup()) * 4 < sys.getsizeof(asyncio.Event()._waiters)
