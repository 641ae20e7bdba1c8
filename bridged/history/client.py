"""The fetch of the bot conversation from OCP (PROTOCOL.md section 4). I/O.

``GET {base_url}/chat/dialogs/history?sessionId={history_session}``, authorised by
``Authorization: Bearer <jwt>`` or ``X-OCP-PERSONAL-ACCESS-TOKEN: <token>``. Every way the
call can fail (no answer in time, no connection, a non-2xx status, an oversized or
unreadable body) is translated here into one exception,
:class:`~bridged.history.decoder.HistoryUnavailable`, because "a history call that fails or
times out
does not stop the chat: the agent is told that the history is unavailable". Its reason names
the cause and never holds a token.
"""

from __future__ import annotations

__all__ = ["HISTORY_PATH", "MAX_HISTORY_BODY", "HistoryAuth", "fetch_history"]

import logging
import time
from urllib.parse import quote

import aiohttp
import msgspec
from yarl import URL

from bridged._log import log_event
from bridged.history.decoder import HistoryUnavailable, HistoryUnreadable, Turn, decode_history
from bridged.salesforce.http import total_timeout

log = logging.getLogger("bridged.history.decoder")

HISTORY_PATH = "/chat/dialogs/history"

# A bot conversation is a few kilobytes; 2 MiB is hundreds of long turns. Anything bigger is
# not a history we could hand to an agent anyway, and reading it would cost memory per chat.
MAX_HISTORY_BODY = 2 * 1024 * 1024

_CHUNK = 64 * 1024


class HistoryAuth(msgspec.Struct, frozen=True, kw_only=True):
    """The credentials for OCP's history service.

    The bearer token wins when both are set: a per-chat ``history_token`` from OCP arrives
    as ``bearer_token`` and is more specific than the configured personal access token.
    With neither set the request goes without credentials, and OCP decides.

    Attributes:
        bearer_token: a JWT, sent as ``Authorization: Bearer <jwt>``.
        personal_access_token: sent as ``X-OCP-PERSONAL-ACCESS-TOKEN: <token>``.
    """

    bearer_token: str = ""
    personal_access_token: str = ""

    def __repr__(self) -> str:
        # The default repr would print the tokens into any log line or traceback.
        kinds = [name for name, value in (("bearer_token", self.bearer_token),
                                          ("personal_access_token", self.personal_access_token))
                 if value]
        return f"HistoryAuth({', '.join(f'{kind}=<redacted>' for kind in kinds)})"

    def headers(self) -> dict[str, str]:
        """The authorisation header to send: one of the two, or none."""
        if self.bearer_token:
            return {"Authorization": f"Bearer {self.bearer_token}"}
        if self.personal_access_token:
            return {"X-OCP-PERSONAL-ACCESS-TOKEN": self.personal_access_token}
        return {}

    @property
    def kind(self) -> str:
        """``"bearer"``, ``"personal_access_token"`` or ``"none"``: loggable, unlike the token."""
        if self.bearer_token:
            return "bearer"
        return "personal_access_token" if self.personal_access_token else "none"


async def fetch_history(
    session: aiohttp.ClientSession,
    base_url: str,
    history_session: str,
    auth: HistoryAuth,
    timeout: float,
    *,
    max_body: int = MAX_HISTORY_BODY,
) -> list[Turn]:
    """Fetch and read the bot conversation of ``history_session``.

    Redirects are not followed: a redirect could carry the token to a host nobody
    configured. A 204 answer is an empty history.

    Args:
        session: the client session to use (its connection pool; not closed here).
        base_url: OCP's history base URL, with or without a trailing slash.
        history_session: OCP's session id, sent URL-encoded as ``sessionId``.
        auth: the credentials.
        timeout: seconds for the whole exchange, body included.
        max_body: the most bytes of body read; a bigger answer is unavailable.

    Returns:
        The turns, oldest first (see :func:`bridged.history.decoder.decode_history`).

    Raises:
        HistoryUnavailable: no answer in time, no connection, a non-2xx status, a body
            over ``max_body``, or (as :class:`~bridged.history.decoder.HistoryUnreadable`) a body
            that cannot be read.
    """
    started = time.monotonic()
    try:
        turns = await _fetch(session, base_url, history_session, auth, timeout, max_body)
    except HistoryUnavailable as exc:
        reason = _scrub(exc.reason, auth)
        log_event(log, logging.INFO, "history_unavailable", session=history_session,
                  auth=auth.kind, reason=reason, status=exc.status)
        if reason != exc.reason:
            raise type(exc)(reason, status=exc.status) from None
        raise
    log_event(log, logging.DEBUG, "history_fetched", session=history_session, turns=len(turns),
              elapsed_ms=round((time.monotonic() - started) * 1000))
    return turns


async def _fetch(
    session: aiohttp.ClientSession,
    base_url: str,
    history_session: str,
    auth: HistoryAuth,
    timeout: float,
    max_body: int,
) -> list[Turn]:
    """:func:`fetch_history` without the logging and the last scrub of the reason."""
    headers = {"Accept": "application/json", **auth.headers()}
    if any(_bad_header_value(value) for value in headers.values()):
        # aiohttp would refuse it with a ValueError; say which part is wrong, not the value.
        raise HistoryUnavailable(f"the {auth.kind} credential is not a valid header value")
    try:
        url = _history_url(base_url, history_session)
        async with session.get(
            url,
            headers=headers,
            timeout=total_timeout(timeout),
            allow_redirects=False,
            raise_for_status=False,
        ) as response:
            status = response.status
            if not 200 <= status < 300:
                raise HistoryUnavailable(_status_reason(status), status=status)
            if status == 204:
                return []
            if response.content_length is not None and response.content_length > max_body:
                raise HistoryUnavailable(
                    f"OCP history answer is larger than {max_body} bytes "
                    f"(Content-Length {response.content_length})", status=status)
            body = await _read_capped(response.content, max_body, status)
    # TimeoutError first: aiohttp's ServerTimeoutError is also a ClientError and an OSError.
    except TimeoutError:
        raise HistoryUnavailable(f"OCP history did not answer within {timeout:g} s") from None
    except aiohttp.InvalidURL:
        raise HistoryUnavailable("the history base URL is not a valid URL") from None
    except (aiohttp.ClientError, OSError) as exc:
        raise HistoryUnavailable(
            f"cannot reach OCP history ({type(exc).__name__}: {exc})") from None
    except ValueError as exc:  # yarl or aiohttp refusing to build the request
        raise HistoryUnavailable(f"the history request cannot be made ({exc})") from None
    try:
        return decode_history(body)
    except HistoryUnreadable as exc:
        raise HistoryUnreadable(f"OCP history answer unreadable: {exc.reason}",
                                status=status) from None


def _history_url(base_url: str, history_session: str) -> URL:
    """``{base_url}/chat/dialogs/history?sessionId=...``, the id percent-encoded.

    Every byte outside RFC 3986's unreserved set is escaped, a space as ``%20``: yarl's
    form encoding would write ``+``, which a server that decodes by RFC 3986 reads as a
    plus sign.
    """
    base = URL(base_url.rstrip("/") + HISTORY_PATH)
    return URL(f"{base}?sessionId={quote(history_session, safe='')}", encoded=True)


async def _read_capped(content: aiohttp.StreamReader, max_body: int, status: int) -> bytes:
    """Read the body, giving up as soon as it grows past ``max_body`` bytes."""
    chunks: list[bytes] = []
    size = 0
    while chunk := await content.read(_CHUNK):
        size += len(chunk)
        if size > max_body:
            raise HistoryUnavailable(f"OCP history answer is larger than {max_body} bytes",
                                     status=status)
        chunks.append(chunk)
    return b"".join(chunks)


def _status_reason(status: int) -> str:
    """The reason for a non-2xx answer, naming the status."""
    if status in (401, 403):
        return f"OCP history answered HTTP {status} (credentials refused)"
    if 300 <= status < 400:
        return f"OCP history answered HTTP {status} (redirects are not followed)"
    return f"OCP history answered HTTP {status}"


def _bad_header_value(value: str) -> bool:
    """True if ``value`` holds a control character (header injection, or a pasted newline)."""
    return any((ord(char) < 0x20 and char != "\t") or ord(char) == 0x7F for char in value)


def _scrub(reason: str, auth: HistoryAuth) -> str:
    """``reason`` with any token in it replaced: the last guard on the way to a log."""
    for token in (auth.bearer_token, auth.personal_access_token):
        if token:
            reason = reason.replace(token, "<redacted>")
    return reason
