"""The admin view of live chats: ``GET /v1/chats`` and ``GET /v1/chats/{id}``.

Behind ``server.admin_tokens`` (a bearer token, compared in constant time); off (404) when
there is none. It shows what an operator needs to see a chat's health, and nothing secret:
no session key, no access token, no message text. For each chat: its backend (``type``), its
Salesforce id (Enhanced Chat's conversation id) and routing news, and its state, where
``token_queued`` is an Enhanced Chat hand-over waiting its turn for an access token.
"""

from __future__ import annotations

__all__ = ["ChatInfo", "admin_routes", "chat_info", "render_table"]

import hmac
import time
from collections.abc import Callable, Sequence

import msgspec
from aiohttp import web

from bridged.chats.chat import Chat
from bridged.chats.dispatcher import Dispatcher
from bridged.salesforce.backend import backend_name


class ChatInfo(msgspec.Struct, frozen=True, kw_only=True):
    """One chat, as the admin view shows it."""

    id: str
    state: str
    agent: str | None
    queue_position: int | None
    age_s: float
    idle_s: float
    connection: str | None
    last_seq: int
    held_events: int
    pending_messages: int
    finished: bool
    backend: str = ""
    salesforce_id: str | None = None  # Enhanced Chat: the conversation id
    routing_status: str | None = None


def chat_info(chat: Chat, now: float | None = None) -> ChatInfo:
    """What the admin view shows of one chat (never message texts)."""
    now = time.time() if now is None else now
    return ChatInfo(
        id=chat.id, state="ended" if chat.finished else chat.state, agent=chat.agent,
        queue_position=chat.queue_position, age_s=round(now - chat.created, 1),
        idle_s=round(now - chat.last_activity, 1),
        connection=chat.link.id if chat.link is not None else None,
        last_seq=chat.next_seq - 1, held_events=len(chat.held),
        pending_messages=len(chat.pending_ids), finished=chat.finished,
        backend=backend_name(chat.webchat), salesforce_id=chat.salesforce_id,
        routing_status=chat.routing_status,
    )


_encoder = msgspec.json.Encoder()


def admin_routes(app: web.Application, dispatcher: Dispatcher,
                 tokens: Callable[[], Sequence[str]]) -> None:
    """Add the admin view to ``app``; ``tokens`` gives the admin tokens of the moment."""

    def authorised(request: web.Request) -> None:
        """Refuse the request (401) unless it carries one of the admin tokens."""
        accepted = [t.encode() for t in tokens()]
        if not accepted:
            raise web.HTTPNotFound(text="the admin view is off (no server.admin_tokens)\n")
        scheme, _, given = request.headers.get("Authorization", "").partition(" ")
        matches = [hmac.compare_digest(given.strip().encode(), t) for t in accepted]
        if scheme.lower() != "bearer" or not any(matches):
            raise web.HTTPUnauthorized(text="missing or wrong admin token\n",
                                       headers={"WWW-Authenticate": 'Bearer realm="admin"'})

    async def list_chats(request: web.Request) -> web.Response:
        """``GET /v1/chats``: every live chat."""
        authorised(request)
        now = time.time()
        chats = [chat_info(c, now) for c in (*dispatcher.live.values(),
                                             *dispatcher.finished.values())]
        chats.sort(key=lambda info: info.age_s, reverse=True)
        return web.Response(body=_encoder.encode({"chats": chats, "count": len(chats)}),
                            content_type="application/json")

    async def one_chat(request: web.Request) -> web.Response:
        """``GET /v1/chats/{chat}``: one chat."""
        authorised(request)
        chat_id = request.match_info["chat"]
        chat = dispatcher.live.get(chat_id) or dispatcher.finished.get(chat_id)
        if chat is None:
            raise web.HTTPNotFound(text=f"no chat {chat_id}\n")
        return web.Response(body=_encoder.encode(chat_info(chat)),
                            content_type="application/json")

    app.router.add_get("/v1/chats", list_chats)
    app.router.add_get("/v1/chats/{chat}", one_chat)


def render_table(chats: Sequence[ChatInfo]) -> str:
    """The chats as a plain text table, for ``bridged chats``."""
    headers = ("CHAT", "BACKEND", "STATE", "AGENT", "QUEUE", "AGE", "IDLE", "CONNECTION",
               "SEQ", "HELD")
    rows = [headers] + [
        (c.id, _BACKENDS.get(c.backend, c.backend or "-"), c.state, c.agent or "-",
         "-" if c.queue_position is None else str(c.queue_position),
         _duration(c.age_s), _duration(c.idle_s), c.connection or "(detached)",
         str(c.last_seq), str(c.held_events))
        for c in chats
    ]
    widths = [max(len(row[i]) for row in rows) for i in range(len(headers))]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True))
             .rstrip() for row in rows]
    return "\n".join(lines) + "\n"


_BACKENDS = {"salesforce": "liveagent", "salesforce_messaging": "messaging"}


def _duration(seconds: float) -> str:
    seconds = int(seconds)
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
