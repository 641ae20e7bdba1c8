"""A fake of OCP's chat history service, for tests and the demo.

It serves the one call bridged makes (PROTOCOL.md section 4)::

    GET /chat/dialogs/history?sessionId={history_session}
        Authorization: Bearer <jwt>            or
        X-OCP-PERSONAL-ACCESS-TOKEN: <token>

OCP publishes neither the answer's shape nor its errors, so this service serves whatever a
test sets: :meth:`OcpHistoryService.set_history` stores any JSON-able body (one per response
shape bridged must read), :meth:`OcpHistoryService.set_raw` any bytes and status (garbage).
Like the Live Agent simulator it is an independent implementation: it imports nothing from
bridged outside :mod:`bridged.simulators.liveagent`.

Where OCP's behaviour is unknown, it takes these readings:

* An unknown session id gets ``200`` with ``[]``: a session the bot never talked in has an
  empty history. (A real OCP might answer 404; bridged treats both as "nothing to show".)
* A missing or empty ``sessionId`` gets ``400``: that is a client bug worth seeing.
* Credentials are checked before the session: a wrong or missing token gets ``401`` with
  ``WWW-Authenticate: Bearer``. Sending both headers at once gets ``400``: a client sends one.
  The bearer scheme name compares case-insensitively (RFC 7235).
* Faults come first: :attr:`OcpHistoryService.delay_s` delays every answer, then
  :meth:`OcpHistoryService.fail_with` answers every request with its status until cleared.

Every request is recorded as a :class:`HistoryRequest` (which kind of credential came,
never the credential itself).

Typical use in a test::

    service = OcpHistoryService(bearer_tokens={"jwt-1"})
    service.set_history("s-1", {"messages": [{"role": "bot", "text": "Hi"}]})
    async with running_history_service(service) as base_url:
        ...  # point the client at base_url
"""

from __future__ import annotations

__all__ = [
    "HISTORY_PATH",
    "SAMPLE_HISTORY",
    "AuthKind",
    "HistoryRequest",
    "OcpHistoryService",
    "running_history_service",
]

import asyncio
import contextlib
from collections import deque
from collections.abc import AsyncIterator, Iterable
from typing import Any, Literal, TypeAlias

import msgspec
from aiohttp import web

from .common import url_host

HISTORY_PATH = "/chat/dialogs/history"

AuthKind: TypeAlias = Literal["bearer", "personal_access_token", "both", "other", "none"]

# A short conversation in the ``messages`` shape, for the demo.
SAMPLE_HISTORY: dict[str, Any] = {
    "messages": [
        {"role": "bot", "text": "Hello! How can I help you today?"},
        {"role": "user", "text": "My card is blocked."},
        {"role": "bot", "text": "I'm sorry to hear that. Did you enter a wrong PIN?"},
        {"role": "user", "text": "Yes, three times. I need to pay for something today."},
        {"role": "bot", "text": "I'll pass you to one of our agents, who can unblock it."},
    ]
}

_PAT_HEADER = "X-OCP-PERSONAL-ACCESS-TOKEN"
_JSON = "application/json"


class HistoryRequest(msgspec.Struct, frozen=True, kw_only=True):
    """One request the service received.

    Attributes:
        session_id: the decoded ``sessionId`` query parameter, ``None`` if absent.
        raw_query: the query string as sent, to check its encoding.
        auth: which credential header came: ``"bearer"``, ``"personal_access_token"``,
            ``"both"``, ``"other"`` (an ``Authorization`` that is not Bearer) or ``"none"``.
        accept: the ``Accept`` header, ``None`` if absent.
        status: the status answered.
    """

    session_id: str | None
    raw_query: str
    auth: AuthKind
    accept: str | None
    status: int


class _Canned(msgspec.Struct, frozen=True, kw_only=True):
    status: int
    body: bytes
    content_type: str


class OcpHistoryService:
    """OCP's history service, faked: an aiohttp app with histories and faults set by tests.

    Args:
        bearer_tokens: the JWTs accepted as ``Authorization: Bearer``.
        personal_access_tokens: the tokens accepted as ``X-OCP-PERSONAL-ACCESS-TOKEN``.

    Attributes:
        app: the ``aiohttp.web.Application``; serve it, or use
            :func:`running_history_service`.
        delay_s: seconds every answer waits before it is made (0: none). Settable.
        requests: every request received, oldest first (the most recent 10,000).
    """

    def __init__(
        self,
        *,
        bearer_tokens: Iterable[str] = (),
        personal_access_tokens: Iterable[str] = (),
    ) -> None:
        self.bearer_tokens = set(bearer_tokens)
        self.personal_access_tokens = set(personal_access_tokens)
        self.delay_s = 0.0
        self.requests: deque[HistoryRequest] = deque(maxlen=10_000)
        self._histories: dict[str, _Canned] = {}
        self._fault: int | None = None
        self._closing = asyncio.Event()
        self.app = web.Application()
        self.app.router.add_get(HISTORY_PATH, self._history)
        self.app.on_shutdown.append(self._on_shutdown)

    def set_history(self, session_id: str, body: Any) -> None:
        """Serve ``body`` (anything JSON-able: each response shape) for ``session_id``."""
        self._histories[session_id] = _Canned(
            status=200, body=msgspec.json.encode(body), content_type=_JSON)

    def set_raw(self, session_id: str, body: bytes, status: int = 200,
                content_type: str = _JSON) -> None:
        """Serve these exact bytes and status for ``session_id`` (garbage, errors)."""
        self._histories[session_id] = _Canned(status=status, body=body,
                                              content_type=content_type)

    def forget(self, session_id: str) -> None:
        """Stop serving a history for ``session_id``: it becomes unknown (``[]``)."""
        self._histories.pop(session_id, None)

    def fail_with(self, status: int | None) -> None:
        """Answer every request with ``status`` (and no history) until ``fail_with(None)``."""
        self._fault = status

    async def _on_shutdown(self, app: web.Application) -> None:
        # Wake delayed answers, so that shutdown does not wait out a test's delay.
        self._closing.set()

    async def _history(self, request: web.Request) -> web.StreamResponse:
        if self.delay_s > 0:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.delay_s):
                    await self._closing.wait()
        session_id = request.query.get("sessionId")
        auth = _auth_kind(request)
        response = self._answer(request, session_id, auth)
        self.requests.append(HistoryRequest(
            session_id=session_id, raw_query=request.rel_url.raw_query_string, auth=auth,
            accept=request.headers.get("Accept"), status=response.status))
        return response

    def _answer(self, request: web.Request, session_id: str | None,
                auth: AuthKind) -> web.Response:
        if self._fault is not None:
            return web.json_response({"error": "injected fault"}, status=self._fault)
        if auth == "both":
            return web.json_response({"error": "send one credential, not both"}, status=400)
        if not self._authorised(request, auth):
            return web.json_response({"error": "unauthorized"}, status=401,
                                     headers={"WWW-Authenticate": "Bearer"})
        if not session_id:
            return web.json_response({"error": "sessionId is required"}, status=400)
        canned = self._histories.get(session_id)
        if canned is None:
            return web.Response(body=b"[]", content_type=_JSON)
        return web.Response(body=canned.body, status=canned.status,
                            headers={"Content-Type": canned.content_type})

    def _authorised(self, request: web.Request, auth: AuthKind) -> bool:
        if auth == "bearer":
            token = request.headers["Authorization"].split(" ", 1)[1].strip()
            return token in self.bearer_tokens
        if auth == "personal_access_token":
            return request.headers[_PAT_HEADER] in self.personal_access_tokens
        return False


def _auth_kind(request: web.Request) -> AuthKind:
    authorization = request.headers.get("Authorization")
    pat = _PAT_HEADER in request.headers
    if authorization is not None and pat:
        return "both"
    if pat:
        return "personal_access_token"
    if authorization is None:
        return "none"
    scheme, _, token = authorization.partition(" ")
    return "bearer" if scheme.lower() == "bearer" and token.strip() else "other"



@contextlib.asynccontextmanager
async def running_history_service(
    service: OcpHistoryService, host: str = "127.0.0.1", port: int = 0
) -> AsyncIterator[str]:
    """Serve ``service`` on ``host:port`` (port 0 picks a free one) for the block's duration.

    Yields:
        The base URL, ``http://HOST:PORT`` (no trailing slash).
    """
    runner = web.AppRunner(service.app, access_log=None, shutdown_timeout=1.0)
    await runner.setup()
    try:
        site = web.TCPSite(runner, host, port)
        await site.start()
        bound_port = runner.addresses[0][1]
        yield f"http://{url_host(host)}:{bound_port}"
    finally:
        await runner.cleanup()
