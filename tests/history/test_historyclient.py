"""bridged.history.client: the fetch, against the fake OCP on loopback and with aioresponses."""

from __future__ import annotations

import logging
import re
import socket
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aioresponses import CallbackResult, aioresponses

from bridged.history.client import MAX_HISTORY_BODY, HistoryAuth, fetch_history
from bridged.history.decoder import HistoryUnavailable, HistoryUnreadable, Turn
from bridged.simulators.ocp_history import (
    SAMPLE_HISTORY,
    OcpHistoryService,
    running_history_service,
)
from tests.history.test_history import CONVERSATION, FIXTURES, SHAPES

JWT = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJvY3AifQ.c2lnbmF0dXJl"
PAT = "pat-0123456789abcdef"
BEARER = HistoryAuth(bearer_token=JWT)
PERSONAL = HistoryAuth(personal_access_token=PAT)
FAST = 0.25  # seconds: every exchange here is on loopback or mocked

Served = tuple[OcpHistoryService, str]


@pytest.fixture
async def served() -> AsyncIterator[Served]:
    service = OcpHistoryService(bearer_tokens={JWT}, personal_access_tokens={PAT})
    service.set_history("s-1", SAMPLE_HISTORY)
    async with running_history_service(service) as base_url:
        yield service, base_url


def assert_no_token(text: str) -> None:
    assert JWT not in text
    assert PAT not in text


async def unavailable(http: aiohttp.ClientSession, base_url: str, auth: HistoryAuth,
                      session_id: str = "s-1", timeout: float = FAST,
                      **kwargs: Any) -> HistoryUnavailable:
    with pytest.raises(HistoryUnavailable) as caught:
        await fetch_history(http, base_url, session_id, auth, timeout, **kwargs)
    assert_no_token(caught.value.reason)
    assert_no_token(repr(caught.value))
    return caught.value


# --- against the fake OCP on 127.0.0.1 -----------------------------------------------------


async def test_bearer_auth_sends_the_bearer_header(
        served: Served, http: aiohttp.ClientSession) -> None:
    service, base_url = served
    turns = await fetch_history(http, base_url, "s-1", BEARER, FAST)
    assert turns[:2] == [Turn(speaker="bot", text="Hello! How can I help you today?"),
                         Turn(speaker="visitor", text="My card is blocked.")]
    assert len(turns) == 5
    (request,) = service.requests
    assert (request.session_id, request.auth, request.accept, request.status) == (
        "s-1", "bearer", "application/json", 200)


async def test_personal_access_token_sends_its_header(
        served: Served, http: aiohttp.ClientSession) -> None:
    service, base_url = served
    assert len(await fetch_history(http, base_url, "s-1", PERSONAL, FAST)) == 5
    assert service.requests[-1].auth == "personal_access_token"


async def test_bearer_wins_when_both_are_set(served: Served, http: aiohttp.ClientSession) -> None:
    service, base_url = served
    both = HistoryAuth(bearer_token=JWT, personal_access_token=PAT)
    assert len(await fetch_history(http, base_url, "s-1", both, FAST)) == 5
    assert service.requests[-1].auth == "bearer"


async def test_a_trailing_slash_on_the_base_url(
        served: Served, http: aiohttp.ClientSession) -> None:
    _, base_url = served
    assert len(await fetch_history(http, base_url + "/", "s-1", BEARER, FAST)) == 5


async def test_the_session_id_is_url_encoded(served: Served, http: aiohttp.ClientSession) -> None:
    service, base_url = served
    odd = "a b&c=d+e#f%g/é"
    service.set_history(odd, [{"role": "user", "text": "found"}])
    assert await fetch_history(http, base_url, odd, BEARER, FAST) == [
        Turn(speaker="visitor", text="found")]
    (request,) = service.requests
    assert request.session_id == odd
    assert request.raw_query.startswith("sessionId=")
    encoded = request.raw_query.removeprefix("sessionId=")
    assert encoded == "a%20b%26c%3Dd%2Be%23f%25g%2F%C3%A9"


@pytest.mark.parametrize("name", sorted(SHAPES))
async def test_every_shape_over_http(
        name: str, served: Served, http: aiohttp.ClientSession) -> None:
    service, base_url = served
    service.set_raw("s-2", (FIXTURES / name).read_bytes())
    assert await fetch_history(http, base_url, "s-2", BEARER, FAST) == SHAPES[name]


async def test_an_unknown_session_is_an_empty_history(
        served: Served, http: aiohttp.ClientSession) -> None:
    _, base_url = served
    assert await fetch_history(http, base_url, "nobody", BEARER, FAST) == []


async def test_204_is_an_empty_history(served: Served, http: aiohttp.ClientSession) -> None:
    service, base_url = served
    service.set_raw("s-1", b"", status=204)
    assert await fetch_history(http, base_url, "s-1", BEARER, FAST) == []


@pytest.mark.parametrize("auth", [
    HistoryAuth(bearer_token="not-" + JWT),
    HistoryAuth(personal_access_token="not-" + PAT),
    HistoryAuth(),
], ids=["wrong-bearer", "wrong-pat", "none"])
async def test_refused_credentials_are_401(
        auth: HistoryAuth, served: Served, http: aiohttp.ClientSession) -> None:
    service, base_url = served
    error = await unavailable(http, base_url, auth)
    assert error.reason == "OCP history answered HTTP 401 (credentials refused)"
    assert error.status == 401
    assert type(error) is HistoryUnavailable
    assert service.requests[-1].status == 401


async def test_a_server_error_names_the_status(
        served: Served, http: aiohttp.ClientSession) -> None:
    service, base_url = served
    service.fail_with(500)
    error = await unavailable(http, base_url, BEARER)
    assert (error.reason, error.status) == ("OCP history answered HTTP 500", 500)
    service.fail_with(None)
    assert len(await fetch_history(http, base_url, "s-1", BEARER, FAST)) == 5


async def test_a_slow_answer_times_out(served: Served, http: aiohttp.ClientSession) -> None:
    service, base_url = served
    service.delay_s = 5.0
    started = time.monotonic()
    error = await unavailable(http, base_url, BEARER, timeout=0.1)
    assert time.monotonic() - started < 1.0
    assert error.reason == "OCP history did not answer within 0.1 s"
    assert error.status is None


async def test_the_same_timeout_fires_each_time_and_a_longer_one_waits(
        served: Served, http: aiohttp.ClientSession) -> None:
    # The client makes a ClientTimeout once per value: reused, it must still fire each time,
    # and another value must not be served the first one.
    service, base_url = served
    service.delay_s = 0.4
    for _ in range(2):
        error = await unavailable(http, base_url, BEARER, timeout=0.1)
        assert error.reason == "OCP history did not answer within 0.1 s"
    assert len(await fetch_history(http, base_url, "s-1", BEARER, 5.0)) == 5


async def test_connection_refused(http: aiohttp.ClientSession) -> None:
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    error = await unavailable(http, f"http://127.0.0.1:{port}", BEARER)
    assert error.reason.startswith("cannot reach OCP history (ClientConnectorError: ")


@pytest.mark.parametrize("name", ["garbage_not_json.json", "garbage_object_without_list.json",
                                  "garbage_no_known_turn.json"])
async def test_garbage_is_unavailable(
        name: str, served: Served, http: aiohttp.ClientSession) -> None:
    service, base_url = served
    service.set_raw("s-1", (FIXTURES / name).read_bytes(), content_type="text/plain")
    error = await unavailable(http, base_url, BEARER)
    assert isinstance(error, HistoryUnreadable)
    assert error.reason.startswith("OCP history answer unreadable: history body ") or (
        error.reason.startswith("OCP history answer unreadable: none of the"))
    assert error.status == 200


async def test_an_oversized_body_is_unavailable(
        served: Served, http: aiohttp.ClientSession) -> None:
    service, base_url = served
    service.set_raw("s-1", b"[" + b" " * MAX_HISTORY_BODY + b"]")
    error = await unavailable(http, base_url, BEARER, timeout=2.0)
    assert error.reason == (f"OCP history answer is larger than {MAX_HISTORY_BODY} bytes "
                            f"(Content-Length {MAX_HISTORY_BODY + 2})")
    # A body of exactly the cap is still read.
    service.set_raw("s-1", b"[" + b" " * (MAX_HISTORY_BODY - 2) + b"]")
    assert await fetch_history(http, base_url, "s-1", BEARER, 2.0) == []


async def test_an_oversized_body_without_content_length_is_cut_off(
        http: aiohttp.ClientSession) -> None:
    async def chunked(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse()
        response.enable_chunked_encoding()
        await response.prepare(request)
        for _ in range(8):
            await response.write(b" " * 512)
        await response.write_eof()
        return response

    app = web.Application()
    app.router.add_get("/chat/dialogs/history", chunked)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    try:
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        base_url = f"http://127.0.0.1:{runner.addresses[0][1]}"
        error = await unavailable(http, base_url, BEARER, max_body=1000)
    finally:
        await runner.cleanup()
    assert error.reason == "OCP history answer is larger than 1000 bytes"


async def test_a_token_that_is_no_header_value_is_refused_before_sending(
        served: Served, http: aiohttp.ClientSession) -> None:
    service, base_url = served
    error = await unavailable(http, base_url, HistoryAuth(bearer_token=JWT + "\r\nX-Evil: 1"))
    assert error.reason == "the bearer credential is not a valid header value"
    assert not service.requests


async def test_failures_are_logged_without_the_token(
        served: Served, http: aiohttp.ClientSession, caplog: pytest.LogCaptureFixture) -> None:
    service, base_url = served
    service.fail_with(503)
    with caplog.at_level(logging.DEBUG, logger="bridged.history.decoder"):
        await unavailable(http, base_url, BEARER)
    (record,) = [r for r in caplog.records if r.getMessage() == "history_unavailable"]
    assert record.fields == {"session": "s-1", "auth": "bearer",  # type: ignore[attr-defined]
                             "reason": "OCP history answered HTTP 503", "status": 503}
    assert_no_token(str(record.__dict__))


def test_the_auth_repr_hides_the_tokens() -> None:
    both = HistoryAuth(bearer_token=JWT, personal_access_token=PAT)
    assert repr(both) == "HistoryAuth(bearer_token=<redacted>, personal_access_token=<redacted>)"
    assert repr(HistoryAuth()) == "HistoryAuth()"
    assert_no_token(str(both))


# --- with aioresponses ---------------------------------------------------------------------

OCP = "http://ocp.test/base"
HISTORY = re.compile(r"^http://ocp\.test/base/chat/dialogs/history\?.*$")


class Seen:
    """The requests aioresponses saw: URL and keyword arguments."""

    def __init__(self, status: int = 200, body: bytes = b'[{"role": "bot", "text": "hi"}]',
                 headers: dict[str, str] | None = None) -> None:
        self.calls: list[tuple[Any, dict[str, Any]]] = []
        self.status, self.body, self.headers = status, body, headers

    def __call__(self, url: Any, **kwargs: Any) -> CallbackResult:
        self.calls.append((url, kwargs))
        return CallbackResult(status=self.status, body=self.body, headers=self.headers)


@pytest.mark.parametrize(("auth", "header", "value"), [
    (BEARER, "Authorization", f"Bearer {JWT}"),
    (PERSONAL, "X-OCP-PERSONAL-ACCESS-TOKEN", PAT),
    (HistoryAuth(bearer_token=JWT, personal_access_token=PAT), "Authorization", f"Bearer {JWT}"),
], ids=["bearer", "pat", "both"])
async def test_mocked_request_headers_and_options(
        auth: HistoryAuth, header: str, value: str, http: aiohttp.ClientSession) -> None:
    seen = Seen()
    with aioresponses() as mocked:
        mocked.get(HISTORY, callback=seen)
        assert await fetch_history(http, OCP + "/", "s 1&x", auth, FAST) == [
            Turn(speaker="bot", text="hi")]
    ((url, kwargs),) = seen.calls
    headers = kwargs["headers"]
    assert headers == {"Accept": "application/json", header: value}
    assert kwargs["allow_redirects"] is False
    assert kwargs["timeout"].total == FAST
    assert url.path == "/base/chat/dialogs/history"
    assert url.query["sessionId"] == "s 1&x"
    # aioresponses re-normalises the URL (a space comes back as "+"); the loopback test
    # checks the bytes on the wire.
    assert "%26" in url.raw_query_string


async def test_mocked_redirects_are_not_followed(http: aiohttp.ClientSession) -> None:
    seen = Seen(status=302, body=b"", headers={"Location": "http://elsewhere.test/steal"})
    with aioresponses() as mocked:
        mocked.get(HISTORY, callback=seen)
        mocked.get(re.compile(r"^http://elsewhere\.test/.*$"), callback=Seen(), repeat=True)
        error = await unavailable(http, OCP, BEARER)
    assert error.reason == "OCP history answered HTTP 302 (redirects are not followed)"
    assert len(seen.calls) == 1


@pytest.mark.parametrize(("exception", "reason"), [
    (TimeoutError(), f"OCP history did not answer within {FAST:g} s"),
    (aiohttp.ServerTimeoutError("read timed out"), f"OCP history did not answer within {FAST:g} s"),
    (aiohttp.ServerDisconnectedError(),
     "cannot reach OCP history (ServerDisconnectedError: Server disconnected)"),
    (ConnectionResetError("reset by peer"),
     "cannot reach OCP history (ConnectionResetError: reset by peer)"),
    (aiohttp.ClientConnectionError(f"refused, with {JWT} and {PAT} in it"),
     "cannot reach OCP history (ClientConnectionError: refused, with <redacted> and "
     "<redacted> in it)"),
], ids=["timeout", "server-timeout", "disconnected", "reset", "token-in-message"])
async def test_mocked_transport_failures(
        exception: BaseException, reason: str, http: aiohttp.ClientSession) -> None:
    both = HistoryAuth(bearer_token=JWT, personal_access_token=PAT)
    with aioresponses() as mocked:
        mocked.get(HISTORY, exception=exception)
        error = await unavailable(http, OCP, both)
    assert error.reason == reason


@pytest.mark.parametrize("status", [400, 401, 403, 404, 429, 500, 502, 503])
async def test_mocked_non_2xx_statuses(status: int, http: aiohttp.ClientSession) -> None:
    with aioresponses() as mocked:
        mocked.get(HISTORY, status=status, body=f"nope {JWT}")
        error = await unavailable(http, OCP, BEARER)
    assert error.status == status
    assert error.reason.startswith(f"OCP history answered HTTP {status}")


async def test_mocked_garbage_and_oversize(http: aiohttp.ClientSession) -> None:
    with aioresponses() as mocked:
        mocked.get(HISTORY, body=b"\x00\xff garbage")
        mocked.get(HISTORY, body=b"[" + b" " * 100 + b"]")
        garbage = await unavailable(http, OCP, BEARER)
        oversize = await unavailable(http, OCP, BEARER, max_body=50)
    assert isinstance(garbage, HistoryUnreadable)
    assert garbage.reason == ("OCP history answer unreadable: history body is not JSON "
                              "(JSON is malformed: invalid character (byte 0))")
    assert oversize.reason.startswith("OCP history answer is larger than 50 bytes")


async def test_mocked_shapes_round_trip(http: aiohttp.ClientSession) -> None:
    with aioresponses() as mocked:
        mocked.get(HISTORY, body=(FIXTURES / "items_content_objects.json").read_bytes())
        assert await fetch_history(http, OCP, "s-1", PERSONAL, FAST) == CONVERSATION
