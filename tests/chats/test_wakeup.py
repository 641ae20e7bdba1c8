"""The actors' wake-up flag behaves as asyncio.Event does for its one waiter."""

from __future__ import annotations

import asyncio
import inspect
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


async def _wait(flag: Wakeup) -> None:
    await flag.wait()  # as the actors do


async def test_set_wakes_the_waiting_task_and_a_cancelled_wait_leaves_it_usable() -> None:
    flag = Wakeup()
    waiting = asyncio.create_task(_wait(flag))
    await asyncio.sleep(0)
    assert not waiting.done()
    asyncio.get_running_loop().call_soon(flag.set)
    await asyncio.wait_for(waiting, 1.0)
    flag.clear()
    cancelled = asyncio.create_task(_wait(flag))
    await asyncio.sleep(0)
    cancelled.cancel()
    await asyncio.gather(cancelled, return_exceptions=True)
    flag.set()
    await asyncio.wait_for(flag.wait(), 1.0)  # the cancelled wait left no waiter behind


async def test_one_waiter_at_a_time() -> None:
    flag = Wakeup()
    first = asyncio.create_task(_wait(flag))
    await asyncio.sleep(0)
    with pytest.raises(RuntimeError, match="one waiting task"):
        await flag.wait()
    flag.set()
    await first


async def test_a_waiting_task_holds_no_frame_of_the_flag() -> None:
    """An idle actor waits on its flag for minutes: what it awaits is the flag's future, not
    a coroutine around it (a frame more held by every idle chat)."""
    flag = Wakeup()
    waiting = asyncio.create_task(_wait(flag))
    await asyncio.sleep(0)
    coro = waiting.get_coro()
    assert coro is not None
    # The future's own iterator, not a coroutine of the flag.
    assert not inspect.iscoroutine(coro.cr_await)  # type: ignore[attr-defined]
    flag.set()
    await waiting


def test_it_is_far_smaller_than_an_event() -> None:
    assert sys.getsizeof(Wakeup()) * 4 < sys.getsizeof(asyncio.Event()._waiters)
