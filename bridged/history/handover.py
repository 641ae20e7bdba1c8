"""The bot's conversation, fetched from OCP and shaped for the agent (PROTOCOL.md section 4).

Backend-neutral: it fetches the history of a chat (before an agent is asked for) and turns
it into what a backend hands over: the text of one field the agent sees before accepting
(a Live Agent prechat detail, or an Enhanced Chat hidden pre-chat field), and the messages of
a transcript sent to the agent as the conversation's first visitor messages. A history that
cannot be had never stops the chat: the agent is told that it is unavailable instead.
"""

from __future__ import annotations

__all__ = ["Handover", "HistoryHandover"]

import logging

import aiohttp
import msgspec

from bridged._log import log_event
from bridged.chats.chat import Chat
from bridged.config.file import HistoryConfig
from bridged.config.webchat import AnyWebchat, PrechatDetail, WebchatConfig
from bridged.history.client import HistoryAuth, fetch_history
from bridged.history.decoder import (
    MAX_CHAT_MESSAGE,
    HistoryUnavailable,
    format_transcript,
    prechat_value,
    split_messages,
)
from bridged.ops.metrics import Metrics

log = logging.getLogger("bridged.history.handover")


class Handover(msgspec.Struct, frozen=True, kw_only=True):
    """What the agent is given: the history as one field's value, and as messages.

    ``summary`` is the history in one value (for Enhanced Chat's hidden pre-chat field,
    truncated there to the field's length); ``prechat`` is the same as a Live Agent prechat
    detail, with the profile's label and transcript field.
    """

    prechat: PrechatDetail | None = None
    summary: str | None = None
    messages: list[str] = []


def _wants_summary(webchat: AnyWebchat) -> bool:
    """Whether the chat's configuration asks for the history in one field."""
    if isinstance(webchat, WebchatConfig):
        return webchat.history_prechat
    return bool(webchat.history_routing_attribute)


class HistoryHandover:
    """Fetches a chat's bot history and shapes it per the chat's webchat configuration.

    Args:
        config: the ``[history]`` section; without ``base_url`` there is no handover.
    """

    def __init__(self, config: HistoryConfig, metrics: Metrics | None = None) -> None:
        self.config = config
        self._metrics = metrics
        self._session: aiohttp.ClientSession | None = None

    @property
    def enabled(self) -> bool:
        return bool(self.config.base_url)

    async def prepare(self, chat: Chat) -> Handover:
        """The handover for ``chat``; empty when disabled or when the history is empty."""
        webchat = chat.webchat
        if not self.enabled or not (_wants_summary(webchat) or webchat.history_messages):
            return Handover()
        auth = HistoryAuth(
            bearer_token=chat.start.history_token or self.config.bearer_token,
            personal_access_token=self.config.personal_access_token,
        )
        if self._session is None:
            # No cookies: a cookie the history service (or a proxy before it) sets in one
            # chat's answer must not go out with another chat's fetch.
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=200, limit_per_host=0),
                cookie_jar=aiohttp.DummyCookieJar())
        history_session = chat.start.history_session or chat.id
        try:
            turns = await fetch_history(self._session, self.config.base_url, history_session,
                                        auth, self.config.timeout_s)
        except HistoryUnavailable as exc:
            log_event(log, logging.WARNING, "history_unavailable", chat=chat.id,
                      reason=exc.reason)
            self._count("unavailable")
            return self._unavailable(chat)
        log_event(log, logging.INFO, "history_fetched", chat=chat.id, turns=len(turns))
        self._count("fetched" if turns else "empty")
        if not turns:
            return Handover()
        lines = format_transcript(turns)
        messages = []
        if webchat.history_messages:
            messages = split_messages([webchat.history_header, *lines], MAX_CHAT_MESSAGE)
        return self._shaped(webchat, prechat_value(lines), messages)

    def _count(self, outcome: str) -> None:
        if self._metrics is not None:
            self._metrics.history.inc(outcome)

    def _unavailable(self, chat: Chat) -> Handover:
        text = chat.webchat.history_unavailable_message
        return self._shaped(chat.webchat, text, [text] if chat.webchat.history_messages else [])

    @staticmethod
    def _shaped(webchat: AnyWebchat, value: str, messages: list[str]) -> Handover:
        """The handover for the chat's backend: ``value`` in its one field, and messages."""
        if not _wants_summary(webchat):
            return Handover(messages=messages)
        if isinstance(webchat, WebchatConfig):
            field = webchat.history_transcript_field
            detail = PrechatDetail(label=webchat.history_prechat_label, value=value,
                                   display_to_agent=True,
                                   transcript_fields=[field] if field else [])
            return Handover(prechat=detail, summary=value, messages=messages)
        return Handover(summary=value, messages=messages)

    async def aclose(self) -> None:
        """Close the connection pool. Idempotent."""
        if self._session is not None:
            session, self._session = self._session, None
            await session.close()
