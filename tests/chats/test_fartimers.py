"""Far-off deadlines of many chats on one loop timer: each fires once, in order, not before its
time; a cancelled one never fires and does not stay held; one failing callback harms no other."""

from __future__ import annotations

import asyncio
import functools

from bridged.chats.fartimers import FarTimers


async def _until(what: object, timeout: float = 5.0) -> None:
    async with asyncio.timeout(timeout):
        while not what():  # type: ignore[operator]
            await asyncio.sleep(0.01)


async def test_deadlines_fire_once_in_their_order_and_never_early() -> None:
    loop = asyncio.get_running_loop()
    timers = FarTimers()
    fired: list[tuple[str, float, float]] = []

    def at(name: str, delay: float) -> None:
        due = loop.time() + delay
        timers.call_later(delay, lambda: fired.append((name, due, loop.time())))

    at("third", 0.15)
    at("first", 0.05)
    at("second", 0.10)
    at("also first", 0.05)
    await _until(lambda: len(fired) == 4)
    await asyncio.sleep(0.05)
    assert sorted(name for name, _, _ in fired[:2]) == ["also first", "first"]
    assert [name for name, _, _ in fired[2:]] == ["second", "third"]
    assert all(now >= due - 0.001 for _, due, now in fired)  # the clock's millisecond
    assert len(timers) == 0


async def test_an_earlier_deadline_added_later_is_not_held_behind_the_first() -> None:
    timers = FarTimers()
    fired: list[str] = []
    timers.call_later(3600.0, lambda: fired.append("in an hour"))
    timers.call_later(0.05, lambda: fired.append("soon"))
    await _until(lambda: fired == ["soon"])
    timers.close()


async def test_a_cancelled_deadline_never_fires_and_cancelled_ones_are_dropped() -> None:
    timers = FarTimers()
    fired: list[int] = []
    far = [timers.call_later(3600.0, functools.partial(fired.append, i)) for i in range(150)]
    near = [timers.call_later(0.05, functools.partial(fired.append, 1000 + i))
            for i in range(50)]
    near[0].cancel()
    near[0].cancel()  # twice: harmless
    for timer in far:
        timer.cancel()
    # 151 of 200 cancelled: the heap was rebuilt without them, not kept for an hour.
    assert len(timers) < 100
    await _until(lambda: len(fired) == 49)
    await asyncio.sleep(0.05)
    assert sorted(fired) == [1000 + i for i in range(1, 50)]
    near[1].cancel()  # after it fired: harmless
    assert len(timers) == 0


async def test_a_failing_callback_is_reported_and_the_others_still_fire() -> None:
    loop = asyncio.get_running_loop()
    reported: list[dict[str, object]] = []
    loop.set_exception_handler(lambda _loop, context: reported.append(context))
    try:
        timers = FarTimers()
        fired: list[str] = []

        def boom() -> None:
            raise RuntimeError("a bug in one chat")

        timers.call_later(0.05, lambda: fired.append("before"))
        timers.call_later(0.05, boom)
        timers.call_later(0.06, lambda: fired.append("after"))
        await _until(lambda: len(fired) == 2)
        assert sorted(fired) == ["after", "before"]
        assert [type(c["exception"]) for c in reported] == [RuntimeError]
    finally:
        loop.set_exception_handler(None)


async def test_nothing_fires_once_closed() -> None:
    timers = FarTimers()
    fired: list[str] = []
    timers.call_later(0.02, lambda: fired.append("late"))
    timers.close()
    await asyncio.sleep(0.1)
    assert fired == [] and len(timers) == 0
