"""Fault injection over real loopback: resets, delays, failures, outages, switches, expiry.

Every test serves the simulator with :func:`running_simulator` and talks to it with a plain
``aiohttp.ClientSession``, so a reset is a real dropped TCP connection and a delay a real
wait. Timings are fractions of a second, every wait is bounded.

Note: aiohttp's client retries an idempotent request (GET, DELETE) once by itself when its
connection is dropped, so a reset of a GET reaches the caller only if the retry is reset
too (``count=2``). ``test_aiohttp_retries_a_reset_get_once`` pins that down.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aiohttp
import pytest

from bridged.simulators.liveagent import (
    ECHO_BUTTON,
    ENDS_BUTTON,
    FAIL_BUTTON,
    MANUAL_BUTTON,
    NOAGENT_BUTTON,
    PEEK_BUTTON,
    QUEUE_BUTTON,
    SessionOver,
    Simulator,
    SimulatorError,
    running_simulator,
)
from tests.simulators.liveagent.sim_helpers import (
    DEPLOYMENT,
    ORG,
    Response,
    Visitor,
    fast_options,
    types,
    wait_until,
)

Serve = Callable[..., Awaitable[tuple[Simulator, aiohttp.ClientSession]]]


@pytest.fixture
async def serve() -> AsyncIterator[Serve]:
    """Serve a simulator (fast options + overrides) and open a client session to it."""
    async with contextlib.AsyncExitStack() as stack:

        async def factory(
            extra_ports: int = 0, **overrides: Any
        ) -> tuple[Simulator, aiohttp.ClientSession]:
            sim = await stack.enter_async_context(
                running_simulator(fast_options(**overrides), extra_ports=extra_ports)
            )
            http = await stack.enter_async_context(
                aiohttp.ClientSession(base_url=f"http://127.0.0.1:{sim.port}")
            )
            return sim, http

        yield factory


def _ends(request_path: str) -> str:
    return request_path.rsplit("/", 1)[-1]


def _log(sim: Simulator, session_id: str) -> list[tuple[str, int, str | None]]:
    """(resource, status, fault) of every request the session logged."""
    return [(_ends(r.path), r.status, r.fault) for r in sim.sessions[session_id].requests]


async def _offset(sim: Simulator, visitor: Visitor) -> int:
    """Have the agent say something and poll it: the offset of that answer."""
    sim.agent_says(visitor.id, "for the offset")
    resp = await visitor.poll()
    assert resp.status == 200, resp
    return int(resp.json()["offset"])


# ------------------------------------------------------------------------------------------
# Connection resets


async def test_reset_before_drops_the_connection_and_does_not_apply(serve: Serve) -> None:
    sim, http = await serve()
    visitor = Visitor(http)
    await visitor.join(MANUAL_BUTTON)
    session = sim.sessions[visitor.id]
    sim.reset_next(visitor.id, "ChatMessage")
    with pytest.raises(aiohttp.ClientConnectionError) as caught:
        await visitor.post("ChatMessage", {"text": "hello"})
    # A TCP RST: "connection reset by peer", not an HTTP status.
    assert isinstance(caught.value, aiohttp.ClientOSError)
    assert caught.value.errno == errno.ECONNRESET
    assert session.visitor_messages == []
    # The retry carries the same number and is applied, once.
    assert (await visitor.post("ChatMessage", {"text": "hello"})).status == 200
    assert session.visitor_messages == ["hello"]
    assert session.sequences_accepted == [1, 2]
    assert session.duplicates_dropped == []
    assert _log(sim, visitor.id)[-2:] == [
        ("ChatMessage", 0, "reset_before"),
        ("ChatMessage", 200, None),
    ]
    (injected,) = sim.injected
    assert (injected.session_id, injected.resource, injected.fault, injected.port) == (
        visitor.id,
        "ChatMessage",
        "reset_before",
        sim.port,
    )


async def test_reset_after_applies_then_drops_and_the_retry_is_a_duplicate(serve: Serve) -> None:
    sim, http = await serve()
    visitor = Visitor(http)
    await visitor.join(MANUAL_BUTTON)
    session = sim.sessions[visitor.id]
    sim.reset_next(visitor.id, "ChatMessage", when="after")
    with pytest.raises(aiohttp.ClientConnectionError):
        await visitor.post("ChatMessage", {"text": "once"})
    # Applied although the client never heard so.
    assert session.visitor_messages == ["once"]
    assert session.last_accepted == 2
    assert (await visitor.post("ChatMessage", {"text": "once"})).status == 200
    assert session.visitor_messages == ["once"]
    assert session.sequences_accepted == [1, 2]
    assert session.duplicates_dropped == [("ChatMessage", 2)]
    assert _log(sim, visitor.id)[-2:] == [
        ("ChatMessage", 0, "reset_after"),
        ("ChatMessage", 200, None),
    ]


async def test_a_reset_sends_no_http_bytes_at_all(serve: Serve) -> None:
    sim, _ = await serve()
    sim.reset_next(None, "SessionId")
    reader, writer = await asyncio.open_connection("127.0.0.1", sim.port)
    try:
        writer.write(
            b"GET /chat/rest/System/SessionId HTTP/1.1\r\nHost: x\r\n"
            b"X-LIVEAGENT-API-VERSION: 49\r\nX-LIVEAGENT-AFFINITY: null\r\n\r\n"
        )
        await writer.drain()
        async with asyncio.timeout(2):
            try:
                data = await reader.read()
            except ConnectionResetError:
                data = b""
        assert data == b""
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()
    assert sim.sessions == {}


@pytest.mark.parametrize("when", ["before", "after"])
async def test_resets_are_reliable(serve: Serve, when: str) -> None:
    sim, http = await serve()
    visitor = Visitor(http)
    await visitor.join(ECHO_BUTTON)
    rounds = 25
    for resource in ("ChasitorTyping", "ChasitorNotTyping"):
        sim.reset_next(visitor.id, resource, count=rounds, when=when)
        for _ in range(rounds):
            with pytest.raises(aiohttp.ClientConnectionError):
                await visitor.request(
                    "POST",
                    f"Chasitor/{resource}",
                    headers=visitor.headers(seq=visitor.seq + 1),
                    json={},
                )
            if when == "after":
                visitor.seq += 1  # applied: the next request takes the next number
    session = sim.sessions[visitor.id]
    assert len(session.visitor_events) == (2 * rounds if when == "after" else 0)
    assert (await visitor.post("ChasitorTyping", {})).status == 200


async def test_aiohttp_retries_a_reset_get_once(serve: Serve) -> None:
    sim, http = await serve()
    visitor = Visitor(http)
    await visitor.join(MANUAL_BUTTON)
    session = sim.sessions[visitor.id]
    sim.agent_says(visitor.id, "redelivered")
    sim.reset_next(visitor.id, "Messages", when="after")
    polls = session.polls
    resp = await visitor.poll()  # the reset is invisible: the retry got the batch again
    assert resp.status == 200
    assert _log(sim, visitor.id)[-2:] == [("Messages", 0, "reset_after"), ("Messages", 200, None)]
    assert session.polls == polls + 2


async def test_reset_after_on_a_poll_hands_out_the_batch_which_is_redelivered(
    serve: Serve,
) -> None:
    sim, http = await serve()
    visitor = Visitor(http)
    await visitor.join(MANUAL_BUTTON)
    session = sim.sessions[visitor.id]
    sim.agent_says(visitor.id, "are you there?")
    sim.reset_next(visitor.id, "Messages", count=2, when="after")
    ack = visitor.ack
    with pytest.raises(aiohttp.ClientConnectionError):
        await visitor.poll()
    handed_out = session.last_given
    assert handed_out > ack  # the batch went out (and was lost)
    resp = await visitor.poll()  # same ack: at-least-once redelivery
    assert resp.status == 200
    assert resp.json()["sequence"] == handed_out
    assert [m["message"]["text"] for m in resp.json()["messages"]] == ["are you there?"]


async def test_reset_after_on_a_held_poll_waits_for_its_batch(serve: Serve) -> None:
    sim, http = await serve(hold_s=2, client_poll_timeout=4)
    visitor = Visitor(http)
    await visitor.join(MANUAL_BUTTON)
    session = sim.sessions[visitor.id]
    sim.reset_next(visitor.id, "Messages", count=2, when="after")
    poll = asyncio.create_task(visitor.poll())
    await wait_until(lambda: session.poll_held)
    sim.agent_says(visitor.id, "late")
    with pytest.raises(aiohttp.ClientConnectionError):
        async with asyncio.timeout(2):
            await poll
    assert not session.poll_held and not session.is_over
    resp = await visitor.poll()
    assert [m["message"]["text"] for m in resp.json()["messages"]] == ["late"]


async def test_reset_before_on_a_poll_does_not_open_it(serve: Serve) -> None:
    sim, http = await serve()
    visitor = Visitor(http)
    await visitor.join(MANUAL_BUTTON)
    session = sim.sessions[visitor.id]
    polls = session.polls
    sim.reset_next(visitor.id, "Messages", count=2)
    with pytest.raises(aiohttp.ClientConnectionError):
        await visitor.poll()
    assert session.polls == polls and not session.poll_held
    sim.agent_says(visitor.id, "hi")
    assert (await visitor.poll()).status == 200


async def test_reset_of_any_session_with_a_count(serve: Serve) -> None:
    sim, http = await serve()
    sim.reset_next(None, "SessionId", count=4)
    for _ in range(2):  # each attempt is two requests: aiohttp retries a GET once
        with pytest.raises(aiohttp.ClientConnectionError):
            await Visitor(http).start()
    await Visitor(http).start()
    assert len(sim.sessions) == 1
    assert [r.fault for r in sim.unattributed_requests] == ["reset_before"] * 4
    # "after" on SessionId: the sessions exist, the visitor never learns their keys.
    sim.reset_next(None, "SessionId", count=2, when="after")
    with pytest.raises(aiohttp.ClientConnectionError):
        await Visitor(http).start()
    assert len(sim.sessions) == 3


async def test_visitor_messages_stay_once_and_in_order_across_resets(serve: Serve) -> None:
    sim, http = await serve()
    visitor = Visitor(http)
    await visitor.join(MANUAL_BUTTON)
    session = sim.sessions[visitor.id]
    texts = [f"m{i}" for i in range(9)]
    expected_duplicates = []
    for i, text in enumerate(texts):
        number = visitor.seq + 1
        if i % 3 == 1:
            sim.reset_next(visitor.id, "ChatMessage", when="after")
            expected_duplicates.append(("ChatMessage", number))
        elif i % 3 == 2:
            sim.reset_next(visitor.id, "ChatMessage", count=2, when="before")
        for _ in range(5):  # at-least-once: retry with the same number until a 200
            try:
                resp = await visitor.post("ChatMessage", {"text": text}, seq=number)
            except aiohttp.ClientConnectionError:
                continue
            assert resp.status == 200, resp
            visitor.seq = number
            break
    assert session.visitor_messages == texts
    assert session.sequences_accepted == list(range(1, len(texts) + 2))
    assert session.duplicates_dropped == expected_duplicates
    assert session.record()["sequences_accepted"] == session.sequences_accepted


# ------------------------------------------------------------------------------------------
# Delays


async def test_delay_after_applies_at_once_and_answers_late(serve: Serve) -> None:
    sim, http = await serve()
    visitor = Visitor(http)
    await visitor.join(MANUAL_BUTTON)
    session = sim.sessions[visitor.id]
    sim.delay_next(visitor.id, "ChatMessage", 0.3)
    loop = asyncio.get_running_loop()
    started = loop.time()
    post = asyncio.create_task(visitor.post("ChatMessage", {"text": "slow"}))
    await wait_until(lambda: session.visitor_messages == ["slow"])
    assert not post.done()
    resp = await post
    assert resp.status == 200
    assert 0.3 <= loop.time() - started < 1.5
    assert _log(sim, visitor.id)[-1] == ("ChatMessage", 200, "delay_after")


async def test_delay_before_applies_only_after_the_wait(serve: Serve) -> None:
    sim, http = await serve()
    visitor = Visitor(http)
    await visitor.join(MANUAL_BUTTON)
    session = sim.sessions[visitor.id]
    sim.delay_next(visitor.id, "ChatMessage", 0.3, when="before")
    post = asyncio.create_task(visitor.post("ChatMessage", {"text": "stalled"}))
    await asyncio.sleep(0.15)
    assert session.visitor_messages == []
    assert (await post).status == 200
    assert session.visitor_messages == ["stalled"]
    assert _log(sim, visitor.id)[-1] == ("ChatMessage", 200, "delay_before")


async def test_a_read_timeout_on_a_delayed_post_then_the_retry_is_dropped(serve: Serve) -> None:
    sim, http = await serve()
    visitor = Visitor(http)
    await visitor.join(MANUAL_BUTTON)
    session = sim.sessions[visitor.id]
    sim.delay_next(visitor.id, "ChatMessage", 0.5)
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.1):
            await visitor.post("ChatMessage", {"text": "timed out"})
    assert (await visitor.post("ChatMessage", {"text": "timed out"})).status == 200
    assert session.visitor_messages == ["timed out"]
    assert session.duplicates_dropped == [("ChatMessage", 2)]


async def test_a_delayed_poll_waits_although_messages_are_there(serve: Serve) -> None:
    sim, http = await serve()
    visitor = Visitor(http)
    await visitor.join(MANUAL_BUTTON)
    sim.agent_says(visitor.id, "waiting")
    sim.delay_next(visitor.id, "Messages", 0.3)
    loop = asyncio.get_running_loop()
    started = loop.time()
    resp = await visitor.poll()
    assert resp.status == 200 and types(resp.json()["messages"]) == ["ChatMessage"]
    assert 0.3 <= loop.time() - started < 1.5


async def test_a_delayed_idle_poll_gets_its_204_after_the_delay(serve: Serve) -> None:
    sim, http = await serve(hold_s=0.2)
    visitor = Visitor(http)
    await visitor.join(MANUAL_BUTTON)
    sim.delay_next(visitor.id, "Messages", 0.4)
    loop = asyncio.get_running_loop()
    started = loop.time()
    assert (await visitor.poll()).status == 204
    assert 0.4 <= loop.time() - started < 1.5
    # A short delay: the poll is still held for the rest of hold_s, and gets what comes.
    sim.delay_next(visitor.id, "Messages", 0.05)
    poll = asyncio.create_task(visitor.poll())
    await asyncio.sleep(0.1)
    sim.agent_says(visitor.id, "within the hold")
    resp = await poll
    assert resp.status == 200


async def test_a_delayed_poll_is_outstanding_so_a_second_poll_is_the_409(serve: Serve) -> None:
    sim, http = await serve()
    visitor = Visitor(http)
    await visitor.join(MANUAL_BUTTON)
    session = sim.sessions[visitor.id]
    sim.agent_says(visitor.id, "waiting")
    sim.delay_next(visitor.id, "Messages", 1.0)
    first = asyncio.create_task(visitor.poll())
    await wait_until(lambda: session.poll_held)
    second = await visitor.poll()
    assert second.status == 409
    async with asyncio.timeout(0.5):  # the held twin gets its 409 at once too
        assert (await first).status == 409
    assert session.end_reason == "duplicate_poll"


async def test_a_read_timeout_on_a_delayed_poll(serve: Serve) -> None:
    # Strict (default): the abandoned poll is still outstanding, the re-poll is the 409.
    sim, http = await serve()
    visitor = Visitor(http)
    await visitor.join(MANUAL_BUTTON)
    sim.delay_next(visitor.id, "Messages", 1.0)
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.1):
            await visitor.poll()
    assert (await visitor.poll()).status == 409


async def test_a_read_timeout_on_a_delayed_poll_when_abandoned_polls_are_released(
    serve: Serve,
) -> None:
    sim, http = await serve(release_abandoned_polls=True)
    visitor = Visitor(http)
    await visitor.join(MANUAL_BUTTON)
    sim.agent_says(visitor.id, "not lost")
    sim.delay_next(visitor.id, "Messages", 1.0)
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.1):
            await visitor.poll()
    await asyncio.sleep(0.05)  # let the server see the closed connection
    resp = await visitor.poll()
    assert resp.status == 200
    assert resp.json()["messages"][0]["message"]["text"] == "not lost"


async def test_a_switch_answers_a_delayed_poll_at_once(serve: Serve) -> None:
    sim, http = await serve()
    visitor = Visitor(http)
    await visitor.join(MANUAL_BUTTON)
    session = sim.sessions[visitor.id]
    sim.delay_next(visitor.id, "Messages", 2.0)
    poll = asyncio.create_task(visitor.poll())
    await wait_until(lambda: session.poll_held)
    sim.switch_server(visitor.id)
    async with asyncio.timeout(0.5):
        assert (await poll).status == 503


async def test_shutdown_cuts_delays_short() -> None:
    loop = asyncio.get_running_loop()
    async with (
        running_simulator(fast_options()) as sim,
        aiohttp.ClientSession(base_url=f"http://127.0.0.1:{sim.port}") as http,
    ):
        visitor = Visitor(http)
        await visitor.join(MANUAL_BUTTON)
        sim.delay_next(visitor.id, "ChatMessage", 30)
        post = asyncio.create_task(visitor.post("ChatMessage", {"text": "x"}))
        await wait_until(lambda: sim.sessions[visitor.id].visitor_messages == ["x"])
        started = loop.time()
    with contextlib.suppress(aiohttp.ClientError):
        await post
    assert loop.time() - started < 3


# ------------------------------------------------------------------------------------------
# HTTP errors


async def test_fail_next_for_any_session_with_a_count(serve: Serve) -> None:
    sim, http = await serve()
    one, two = Visitor(http), Visitor(http)
    await one.join(MANUAL_BUTTON)
    await two.join(MANUAL_BUTTON)
    sim.fail_next(one.id, "ChatMessage", 502, "one only")
    sim.fail_next(None, "ChatMessage", 500, count=2)
    assert (await one.post("ChatMessage", {"text": "a"})).text == "one only"
    assert (await two.post("ChatMessage", {"text": "b"})).status == 500
    assert (await one.post("ChatMessage", {"text": "c"})).status == 500
    assert (await one.post("ChatMessage", {"text": "c"})).status == 200
    assert (await two.post("ChatMessage", {"text": "b"})).status == 200
    assert sim.sessions[one.id].visitor_messages == ["c"]
    assert sim.sessions[one.id].sequences_accepted == [1, 2]
    sim.fail_next(None, "SessionId", 503, "busy")
    resp = await Visitor(http).request(
        "GET",
        "System/SessionId",
        headers={"X-LIVEAGENT-API-VERSION": "49", "X-LIVEAGENT-AFFINITY": "null"},
    )
    assert (resp.status, resp.text) == (503, "busy")
    assert len(sim.sessions) == 2
    with pytest.raises(ValueError, match="SessionId requests have no session"):
        sim.fail_next(one.id, "SessionId", 500)


async def test_a_proxy_answer_to_a_poll_leaves_it_held_so_a_second_poll_is_the_409(
        serve: Serve) -> None:
    sim, http = await serve(hold_s=1, client_poll_timeout=2)
    visitor = Visitor(http)
    await visitor.join(MANUAL_BUTTON)
    session = sim.sessions[visitor.id]
    sim.fail_next(visitor.id, "Messages", 504, "gateway timeout", when="after")
    resp = await visitor.poll()
    assert (resp.status, resp.text) == (504, "gateway timeout")
    assert session.poll_held  # the "proxy" answered; the server still holds the poll
    assert (await visitor.poll()).status == 409
    assert session.end_reason == "duplicate_poll"
    assert _log(sim, visitor.id)[-2:] == [("Messages", 504, "fail_504_after"),
                                          ("Messages", 409, None)]


async def test_a_proxy_answer_to_a_poll_then_a_poll_after_the_hold_is_fine(
        serve: Serve) -> None:
    sim, http = await serve(hold_s=0.2, client_poll_timeout=2)
    visitor = Visitor(http)
    await visitor.join(MANUAL_BUTTON)
    session = sim.sessions[visitor.id]
    sim.fail_next(visitor.id, "Messages", 502, when="after")
    assert (await visitor.poll()).status == 502
    await wait_until(lambda: not session.poll_held)  # answered (204) into the void
    sim.agent_says(visitor.id, "still here")
    resp = await visitor.poll()
    assert [m["message"]["text"] for m in resp.json()["messages"]] == ["still here"]
    assert not session.is_over


async def test_a_proxy_answer_to_a_poll_with_a_batch_waiting_loses_the_batch_to_the_void(
        serve: Serve) -> None:
    sim, http = await serve()
    visitor = Visitor(http)
    await visitor.join(MANUAL_BUTTON)
    session = sim.sessions[visitor.id]
    sim.agent_says(visitor.id, "into the void")
    ack = visitor.ack
    sim.fail_next(visitor.id, "Messages", 502, when="after")
    assert (await visitor.poll(ack)).status == 502
    assert session.last_given > ack and not session.poll_held  # handed out, not held
    resp = await visitor.poll(ack)  # the same ack: delivered again
    assert [m["message"]["text"] for m in resp.json()["messages"]] == ["into the void"]


async def test_a_proxy_answer_to_a_post_applies_it(serve: Serve) -> None:
    sim, http = await serve()
    visitor = Visitor(http)
    await visitor.join(MANUAL_BUTTON)
    sim.fail_next(visitor.id, "ChatMessage", 502, when="after")
    assert (await visitor.post("ChatMessage", {"text": "went through"})).status == 502
    session = sim.sessions[visitor.id]
    assert session.visitor_messages == ["went through"]
    assert session.sequences_accepted[-1] == visitor.seq + 1  # used up, unbeknown to it


# ------------------------------------------------------------------------------------------
# Outages


async def test_outage_503_fails_everything_then_ends_by_itself(serve: Serve) -> None:
    # The outage outlasts clientPollTimeout: the sessions must survive it anyway.
    sim, http = await serve(hold_s=0.1, client_poll_timeout=0.4)
    visitor = Visitor(http)
    await visitor.join(MANUAL_BUTTON)
    session = sim.sessions[visitor.id]
    poll = asyncio.create_task(visitor.poll())
    await wait_until(lambda: session.poll_held)
    sim.outage(0.6, "503")
    assert sim.in_outage
    async with asyncio.timeout(0.5):
        assert (await poll).status == 503
    assert not session.poll_held
    assert (await visitor.post("ChatMessage", {"text": "x"})).status == 503
    assert (await visitor.poll()).status == 503
    resp = await visitor.request(
        "GET",
        "System/SessionId",
        headers={"X-LIVEAGENT-API-VERSION": "49", "X-LIVEAGENT-AFFINITY": "null"},
    )
    assert resp.status == 503
    assert sim.faults()["outage"]["mode"] == "503"
    await wait_until(lambda: not sim.in_outage, timeout=2)
    assert not session.is_over
    sim.agent_says(visitor.id, "back")
    assert (await visitor.poll()).status == 200
    assert (await visitor.post("ChatMessage", {"text": "x"})).status == 200
    assert session.visitor_messages == ["x"]
    assert {(i.resource, i.fault) for i in sim.injected} == {
        ("Messages", "outage_503"),
        ("ChatMessage", "outage_503"),
        ("SessionId", "outage_503"),
    }


async def test_outage_reset_drops_every_request_and_the_held_poll(serve: Serve) -> None:
    sim, http = await serve(hold_s=2, client_poll_timeout=4)
    visitor = Visitor(http)
    await visitor.join(MANUAL_BUTTON)
    session = sim.sessions[visitor.id]
    poll = asyncio.create_task(visitor.poll())
    await wait_until(lambda: session.poll_held)
    sim.outage(0.4)
    with pytest.raises(aiohttp.ClientConnectionError):
        async with asyncio.timeout(1):
            await poll
    with pytest.raises(aiohttp.ClientConnectionError):
        await visitor.post("ChatMessage", {"text": "x"})
    # The control API is not part of the outage.
    async with http.get("/_sim/faults") as resp:
        assert (await resp.json())["outage"]["mode"] == "reset"
    await wait_until(lambda: not sim.in_outage, timeout=2)
    assert (await visitor.post("ChatMessage", {"text": "x"})).status == 200
    assert ("ChatMessage", 0, "outage_reset") in _log(sim, visitor.id)


async def test_outage_refuse_stops_listening_then_listens_again_on_the_same_port(
    serve: Serve,
) -> None:
    sim, http = await serve(extra_ports=1)
    visitor = Visitor(http)
    await visitor.join(MANUAL_BUTTON)  # its keep-alive connection stays in the pool
    ports = list(sim.ports)
    sim.outage(0.4, "refuse")
    for port in ports:
        async with aiohttp.ClientSession() as fresh:
            with pytest.raises(aiohttp.ClientConnectorError) as caught:
                async with fresh.get(f"http://127.0.0.1:{port}/_sim/sessions"):
                    pass
            assert caught.value.os_error.errno == errno.ECONNREFUSED
    # A connection opened before the outage gets its requests reset.
    with pytest.raises(aiohttp.ClientConnectionError):
        await visitor.poll()
    await wait_until(lambda: not sim.in_outage, timeout=3)
    assert sim.ports == ports
    for port in ports:
        async with aiohttp.ClientSession(base_url=f"http://127.0.0.1:{port}") as fresh:
            assert (await Visitor(fresh).start())["id"] in sim.sessions
    sim.agent_says(visitor.id, "back")
    assert (await visitor.poll()).status == 200


async def test_outage_over_http_and_ended_early(serve: Serve) -> None:
    sim, http = await serve()
    visitor = Visitor(http)
    await visitor.join(MANUAL_BUTTON)

    async def control(action: str, body: Any = None) -> tuple[int, Any]:
        async with http.post(f"/_sim/{action}", json=body) as resp:
            return resp.status, await resp.json()

    assert await control("outage", {"seconds": 30, "mode": "500"}) == (200, {"ok": True})
    assert (await visitor.post("ChatMessage", {"text": "x"})).status == 500
    assert (await control("end-outage"))[0] == 200
    assert not sim.in_outage
    assert (await visitor.post("ChatMessage", {"text": "x"})).status == 200
    status, body = await control("outage", {"seconds": 1, "mode": "404"})
    assert status == 400 and "unknown outage mode '404'" in body["error"]
    status, body = await control("outage", {"seconds": -1})
    assert status == 400 and "seconds must be a positive number" in body["error"]


async def test_refuse_needs_a_simulator_that_owns_its_socket(make_sim: Any) -> None:
    sim, _ = await make_sim()
    with pytest.raises(SimulatorError, match='outage mode "refuse" needs running_simulator'):
        sim.outage(0.1, "refuse")
    sim.outage(0.1, "503")  # the other modes work under any runner
    assert sim.in_outage
    sim.end_outage()


# ------------------------------------------------------------------------------------------
# Server switch (SALESFORCE.md 6, 11.5-11.7)


async def test_switch_server_all_follows_the_procedure(serve: Serve) -> None:
    sim, http = await serve()
    one, two, done = Visitor(http), Visitor(http), Visitor(http)
    for visitor in (one, two, done):
        await visitor.join(MANUAL_BUTTON)
    await done.post("ChatEnd", {"reason": "client"})
    offset = await _offset(sim, one)
    old = one.affinity

    tokens = sim.switch_server_all()
    assert set(tokens) == {one.id, two.id}
    assert tokens[one.id] != old
    # The old token gets 503 on any request.
    assert (await one.poll()).status == 503
    assert (await one.post("ChatMessage", {"text": "x"})).status == 503
    resync_body = {"organizationId": ORG}
    resync = await one.request(
        "POST", "Chasitor/ChasitorResyncState", headers=one.headers(), json=resync_body
    )
    assert resync.status == 503
    delete = await one.request("DELETE", f"System/SessionId/{one.key}", headers=one.headers())
    assert delete.status == 503

    resp = await one.request(
        "GET",
        "System/ReconnectSession",
        headers=one.headers(),
        params={"ReconnectSession.offset": str(offset)},
    )
    assert resp.json() == {
        "messages": [
            {
                "type": "ReconnectSession",
                "message": {"resetSequence": True, "affinityToken": tokens[one.id]},
            }
        ]
    }
    one.affinity = tokens[one.id]
    # Visitor activity before ChasitorResyncState: 500; resync before the poll: 500.
    assert (await one.post("ChatMessage", {"text": "early"}, seq=1)).status == 500
    resync = await one.request(
        "POST", "Chasitor/ChasitorResyncState", headers=one.headers(), json=resync_body
    )
    assert resync.status == 500
    resp = await one.poll()
    assert types(resp.json()["messages"])[0] == "ChasitorSessionData"
    resync = await one.request(
        "POST", "Chasitor/ChasitorResyncState", headers=one.headers(), json=resync_body
    )
    assert resync.status == 200
    # resetSequence: the next sequenced POST carries 1.
    assert (await one.post("ChatMessage", {"text": "after"}, seq=2)).status == 409
    assert (await one.post("ChatMessage", {"text": "after"}, seq=1)).status == 200
    session = sim.sessions[one.id]
    assert session.visitor_messages == ["after"]
    assert session.sequences_accepted == [1, 1]
    # The other session was switched too, over HTTP this time as well.
    assert (await two.poll()).status == 503
    async with http.post("/_sim/switch-server-all") as resp2:
        assert set((await resp2.json())["affinity_tokens"]) == {one.id, two.id}


# ------------------------------------------------------------------------------------------
# SwitchServer to another port of the same simulator


async def test_switch_server_url_moves_the_session_to_the_alias_port(serve: Serve) -> None:
    sim, http = await serve(extra_ports=1)
    (alias,) = sim.alias_base_urls
    alias_port = sim.ports[1]
    assert alias_port != sim.port and alias == f"http://127.0.0.1:{alias_port}/chat/rest/"
    visitor = Visitor(http)
    await visitor.join(ECHO_BUTTON)
    sim.switch_server_url(visitor.id)
    resp = await visitor.poll()
    assert resp.json()["messages"] == [
        {"type": "SwitchServer", "message": {"newUrl": f"http://127.0.0.1:{alias_port}/chat"}}
    ]
    async with aiohttp.ClientSession(base_url=f"http://127.0.0.1:{alias_port}") as other:
        moved = Visitor(other)
        moved.id, moved.key, moved.affinity = visitor.id, visitor.key, visitor.affinity
        moved.seq, moved.ack = visitor.seq, visitor.ack
        assert (await moved.post("ChatMessage", {"text": "from the new host"})).status == 200
        messages = await moved.poll_until("AgentNotTyping")
    assert "Echo: from the new host" in [m["message"].get("text") for m in messages]
    ports = [r.port for r in sim.sessions[visitor.id].requests]
    assert ports[0] == sim.port and ports[-1] == alias_port
    assert set(ports) == {sim.port, alias_port}


async def test_switch_url_over_http_and_without_an_alias(serve: Serve, make_sim: Any) -> None:
    sim, http = await serve(extra_ports=1)
    visitor = Visitor(http)
    await visitor.join(MANUAL_BUTTON)
    async with http.post(f"/_sim/sessions/{visitor.id}/switch-url", json={}) as resp:
        assert resp.status == 200
    message = (await visitor.poll()).json()["messages"][0]["message"]
    assert message == {"newUrl": f"http://127.0.0.1:{sim.ports[1]}/chat"}
    plain, client = await make_sim()
    other = Visitor(client)
    await other.join(MANUAL_BUTTON)
    with pytest.raises(SimulatorError, match="no alias port"):
        plain.switch_server_url(other.id)


# ------------------------------------------------------------------------------------------
# Expiry


async def test_expire_ends_the_session_as_a_poll_timeout(serve: Serve) -> None:
    sim, http = await serve(hold_s=2, client_poll_timeout=4)
    visitor, other = Visitor(http), Visitor(http)
    await visitor.join(MANUAL_BUTTON)
    await other.join(MANUAL_BUTTON)
    session = sim.sessions[visitor.id]
    poll = asyncio.create_task(visitor.poll())
    await wait_until(lambda: session.poll_held)
    sim.expire(visitor.id)
    async with asyncio.timeout(0.5):
        assert (await poll).status == 403
    assert (await visitor.post("ChatMessage", {"text": "x"})).status == 403
    assert session.end_reason == "timeout"
    with pytest.raises(SessionOver):
        sim.expire(visitor.id)
    async with http.post(f"/_sim/sessions/{other.id}/expire") as resp:
        assert resp.status == 200
    async with http.post(f"/_sim/sessions/{other.id}/expire") as resp:
        assert resp.status == 409
    assert (await other.poll()).status == 403


# ------------------------------------------------------------------------------------------
# Agent events


_EVERY_TYPE: list[tuple[str, dict[str, Any]]] = [
    ("ChatTransferred", {"name": "Bob", "userId": "005000000000BOB", "sneakPeekEnabled": True,
                         "chasitorIdleTimeout": {"isEnabled": False}}),
    ("AgentDisconnect", {}),
    ("CustomEvent", {"type": "PromptForCreditCard", "data": "Visa"}),
    ("SensitiveDataRules", {"sensitiveDataRules": [
        {"name": "Card", "pattern": "\\d{16}", "id": "0GN000000000001", "replacement": "****",
         "actionType": "Replace"}]}),
    ("TransferToButtonInitiated", {}),
    ("FileTransfer", {"type": "Requested", "uploadServletUrl": "https://x/upload",
                      "fileToken": "t0k3n", "cdmServletUrl": "https://x/cdm"}),
    ("NewVisitorBreadcrumb", {"location": "https://example.com/pricing"}),
    ("QueueUpdate", {"position": 0, "estimatedWaitTime": 0}),
    ("AgentTyping", {"name": "Bob", "agentId": "005000000000BOB"}),
    ("AgentNotTyping", {"name": "Bob", "agentId": "005000000000BOB"}),
    ("ChatMessage", {"text": "hi", "name": "Bob", "agentId": "005000000000BOB"}),
    ("RichMessage", {"type": "ChatWindowMenu", "items": []}),
    ("AgentJoinedConference", {"name": "Carol"}),
    ("AgentLeftConference", {"name": "Carol"}),
    ("AsyncResult", {"isSuccess": True}),
    ("SomethingNobodyDocumented", {"anything": [1, 2, 3]}),
    ("ChatRequestFail", {"reason": "Unavailable"}),
]


async def test_push_sends_every_message_type_verbatim(serve: Serve) -> None:
    sim, http = await serve()
    visitor = Visitor(http)
    await visitor.join(MANUAL_BUTTON)
    for type_, message in _EVERY_TYPE:
        async with http.post(
            f"/_sim/sessions/{visitor.id}/push", json={"type": type_, "message": message}
        ) as resp:
            assert resp.status == 200
    resp = await visitor.poll()
    assert resp.json()["messages"] == [{"type": t, "message": m} for t, m in _EVERY_TYPE]
    # ChatRequestFail during the chat ends it (IBM saw that), once delivered.
    assert sim.sessions[visitor.id].is_over


async def test_chat_established_with_sneak_peek(serve: Serve) -> None:
    sim, http = await serve()
    visitor = Visitor(http)
    await visitor.join(MANUAL_BUTTON)
    sim.agent_joins(visitor.id, sneak_peek=True)
    async with http.post(
        f"/_sim/sessions/{visitor.id}/join",
        json={"name": "Pia Peek", "userId": "005000000000PIA", "sneakPeekEnabled": True},
    ) as resp:
        assert resp.status == 200
    async with http.post(
        f"/_sim/sessions/{visitor.id}/transfer", json={"name": "Bob", "sneakPeekEnabled": True}
    ) as resp:
        assert resp.status == 200
    messages = (await visitor.poll()).json()["messages"]
    assert [(m["type"], m["message"]["name"], m["message"]["sneakPeekEnabled"])
            for m in messages] == [
        ("ChatEstablished", "Ada Agent", True),
        ("ChatEstablished", "Pia Peek", True),
        ("ChatTransferred", "Bob", True),
    ]


async def test_peek_button_joins_with_sneak_peek_and_echoes(serve: Serve) -> None:
    _, http = await serve()
    visitor = Visitor(http)
    messages = await visitor.join(PEEK_BUTTON)
    established = [m for m in messages if m["type"] == "ChatEstablished"]
    assert established[0]["message"]["sneakPeekEnabled"] is True
    assert (await visitor.post("ChasitorSneakPeek", {"position": 2, "text": "he"})).status == 200
    assert (await visitor.post("ChatMessage", {"text": "hello"})).status == 200
    messages = await visitor.poll_until("AgentNotTyping")
    assert "Echo: hello" in [m["message"].get("text") for m in messages]


# ------------------------------------------------------------------------------------------
# Visitor/Availability per button


async def _availability(http: aiohttp.ClientSession, ids: list[str], version: str) -> Response:
    return await Visitor(http).request(
        "GET",
        "Visitor/Availability",
        headers={"X-LIVEAGENT-API-VERSION": version},
        params={
            "org_id": ORG,
            "deployment_id": DEPLOYMENT,
            "Availability.ids": ",".join(ids),
            "Availability.needEstimatedWaitTime": "1",
        },
    )


async def test_availability_per_button_and_at_run_time(serve: Serve) -> None:
    sim, http = await serve()
    scripted = [ECHO_BUTTON, QUEUE_BUTTON, FAIL_BUTTON, ENDS_BUTTON, MANUAL_BUTTON, PEEK_BUTTON]
    unknown = "573UNKNOWN00000"
    resp = await _availability(http, [*scripted, NOAGENT_BUTTON, unknown], "49")
    results = {r["id"]: r for r in resp.json()["messages"][0]["message"]["results"]}
    assert all(results[b].get("isAvailable") is True for b in scripted)
    # FAIL looks available but has no wait estimate ("-1 if unknown").
    assert [results[b]["estimatedWaitTime"] for b in scripted] == [30, 90, -1, 30, 30, 30]
    assert results[NOAGENT_BUTTON] == {"id": NOAGENT_BUTTON, "estimatedWaitTime": -1}
    assert results[unknown] == {"id": unknown, "estimatedWaitTime": -1}
    resp = await _availability(http, [ECHO_BUTTON, NOAGENT_BUTTON], "46")
    assert resp.json()["messages"][0]["message"]["results"] == [
        {"id": ECHO_BUTTON, "isAvailable": True},
        {"id": NOAGENT_BUTTON},
    ]

    sim.set_available(ECHO_BUTTON, False)
    async with http.post(
        "/_sim/availability", json={"buttonId": NOAGENT_BUTTON, "available": True}
    ) as ctl:
        assert ctl.status == 200
    resp = await _availability(http, [ECHO_BUTTON, NOAGENT_BUTTON], "49")
    assert resp.json()["messages"][0]["message"]["results"] == [
        {"id": ECHO_BUTTON, "estimatedWaitTime": -1},
        {"id": NOAGENT_BUTTON, "isAvailable": True, "estimatedWaitTime": -1},
    ]
    async with http.post(
        "/_sim/availability", json={"buttonId": ECHO_BUTTON, "available": None}
    ) as ctl:
        assert ctl.status == 200
    resp = await _availability(http, [ECHO_BUTTON], "49")
    assert resp.json()["messages"][0]["message"]["results"] == [
        {"id": ECHO_BUTTON, "isAvailable": True, "estimatedWaitTime": 30}
    ]
    # Faults reach Availability too (any session: it has none).
    sim.fail_next(None, "Availability", 503)
    assert (await _availability(http, [ECHO_BUTTON], "49")).status == 503


# ------------------------------------------------------------------------------------------
# The HTTP control API for faults


async def test_fault_actions_over_http(serve: Serve) -> None:
    sim, http = await serve()
    visitor = Visitor(http)
    await visitor.join(MANUAL_BUTTON)

    async def control(path: str, body: Any = None) -> tuple[int, Any]:
        async with http.post(f"/_sim/{path}", json=body) as resp:
            return resp.status, await resp.json()

    sid = visitor.id
    assert await control(f"sessions/{sid}/reset-next",
                         {"resource": "ChatMessage", "when": "after"}) == (200, {"ok": True})
    assert (await control(f"sessions/{sid}/delay-next",
                          {"resource": "ChatMessage", "seconds": 0.1, "when": "before"}))[0] == 200
    assert (await control("fail-next", {"resource": "ChatMessage", "status": 418,
                                        "count": 2}))[0] == 200
    assert (await control("reset-next", {"resource": "SessionId"}))[0] == 200
    assert (await control(f"sessions/{sid}/fail-next", {"resource": "Messages", "status": 504,
                                                       "when": "after"}))[0] == 200
    async with http.get("/_sim/faults") as resp:
        pending = (await resp.json())["pending"]
    assert [(p["session_id"], p["fault"], p["remaining"]) for p in pending] == [
        (sid, "reset_after", 1),
        (sid, "delay_before", 1),
        (None, "fail_418", 2),
        (None, "reset_before", 1),
        (sid, "fail_504_after", 1),
    ]
    with pytest.raises(aiohttp.ClientConnectionError):
        await visitor.post("ChatMessage", {"text": "a"})
    visitor.seq += 1  # it was applied
    assert (await visitor.post("ChatMessage", {"text": "b"})).status == 200
    assert (await visitor.post("ChatMessage", {"text": "c"})).status == 418
    assert (await visitor.poll()).status == 504
    assert sim.sessions[sid].poll_held
    assert await control("clear-faults") == (200, {"ok": True})
    assert (await visitor.post("ChatMessage", {"text": "c"})).status == 200
    assert sim.sessions[sid].visitor_messages == ["a", "b", "c"]
    async with http.get("/_sim/record") as resp:
        injected = (await resp.json())["faults"]["injected"]
    assert [i["fault"] for i in injected] == ["reset_after", "delay_before", "fail_418",
                                              "fail_504_after"]

    # Errors: bad values 400, unknown session 404.
    status, body = await control(f"sessions/{sid}/reset-next", {"resource": "Nope"})
    assert status == 400 and "unknown resource 'Nope'" in body["error"]
    status, body = await control("reset-next", {"resource": "ChatMessage", "when": "later"})
    assert status == 400 and 'when must be "before" or "after"' in body["error"]
    assert (await control("sessions/nope/reset-next", {"resource": "ChatMessage"}))[0] == 404
    assert (await control("dance"))[0] == 404
