"""The admin view of live chats: ``GET /v1/chats`` and ``GET /v1/chats/{id}``.

Behind ``server.admin_tokens`` (a bearer token, compared in constant time); off (404) when
there is none. It shows what an operator needs to see a chat's health, and nothing secret:
no session key, no access token, no message text. For each chat: its backend (``type``), its
Salesforce id (Enhanced Chat's conversation id) and routing news, and its state, where
``token_queued`` is an Enhanced Chat hand-over waiting its turn for an access token.

With ``[cluster]`` the list is the cluster's, read from the shared store (``bridged/state/
redisview.py``: bounded work per page), a page at a time: ``?limit=`` (1 to 1000, 500 by
default) and ``?after=`` (the ``next`` of the page before; ``null`` on the last page). Each
chat names its holder (``node``) and whether the holder's lease is live (``holder_live``);
the answer lists the incarnations that hold chats (``nodes``). A chat this node holds shows
everything above; one held elsewhere shows what the store keeps (state, agent, queue
position, last ``seq``, age, backend), and ``null`` for what only its holder knows (idle
time, connection, held events, pending messages).
"""

from __future__ import annotations

__all__ = ["ChatInfo", "ClusterChatInfo", "admin_routes", "chat_info", "cluster_chat_info",
           "render_table"]

import hmac
import time
from collections.abc import Callable, Sequence

import msgspec
from aiohttp import web
from redis.exceptions import RedisError

from bridged.chats.chat import Chat, ChatRecord, ChatStatic
from bridged.chats.dispatcher import Dispatcher
from bridged.salesforce.backend import backend_name
from bridged.state.redisstore import RedisStore
from bridged.state.redisview import ClusterChat, read_chat, read_page


class ChatInfo(msgspec.Struct, frozen=True, kw_only=True):
    """One chat, as the admin view shows it."""

    id: str
    state: str
    agent: str | None
    queue_position: int | None
    age_s: float
    idle_s: float | None  # None: held by another node, which alone knows
    connection: str | None
    last_seq: int
    held_events: int | None
    pending_messages: int | None
    finished: bool
    backend: str = ""
    salesforce_id: str | None = None  # Enhanced Chat: the conversation id
    routing_status: str | None = None


class ClusterChatInfo(ChatInfo, frozen=True, kw_only=True):
    """One chat of a cluster ([cluster]): as :class:`ChatInfo`, and its holder."""

    node: str
    holder_live: bool  # if not, the chat waits for another node to take it over


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


def cluster_chat_info(held: ClusterChat, local: Chat | None,
                      now: float | None = None) -> ClusterChatInfo:
    """A chat of the cluster: this node's view of it if it has one, else the store's."""
    if local is not None:
        return ClusterChatInfo(**msgspec.structs.asdict(chat_info(local, now)),
                               node=held.node, holder_live=held.holder_live)
    now = time.time() if now is None else now
    try:
        static = ChatStatic.decode(held.static)
        snapshot = ChatRecord.decode(held.snapshot).chat
    except (msgspec.DecodeError, msgspec.ValidationError):
        return ClusterChatInfo(id=held.id, state="unknown", agent=None, queue_position=None,
                        age_s=0.0, idle_s=None, connection=None, last_seq=0,
                        held_events=None, pending_messages=None, finished=False,
                        node=held.node, holder_live=held.holder_live)
    return ClusterChatInfo(
        id=held.id, state="ended" if snapshot.finished else snapshot.state,
        agent=snapshot.agent, queue_position=snapshot.queue_position,
        age_s=round(now - static.created, 1), idle_s=None, connection=None,
        last_seq=snapshot.next_seq - 1, held_events=None, pending_messages=None,
        finished=snapshot.finished, backend=static.backend, node=held.node,
        holder_live=held.holder_live)


_encoder = msgspec.json.Encoder()
DEFAULT_LIMIT, MAX_LIMIT = 500, 1000


def _limit(request: web.Request) -> int:
    text = request.query.get("limit", str(DEFAULT_LIMIT))
    if not text.isdigit() or not 1 <= int(text) <= MAX_LIMIT:
        raise web.HTTPBadRequest(text=f"limit: expected 1 to {MAX_LIMIT}, got {text!r}\n")
    return int(text)


def admin_routes(app: web.Application, dispatcher: Dispatcher,
                 tokens: Callable[[], Sequence[str]],
                 cluster: Callable[[], RedisStore | None] = lambda: None) -> None:
    """Add the admin view to ``app``; ``tokens`` gives the admin tokens of the moment.

    ``cluster`` gives the shared store when this node is one of a cluster: the view is then
    the cluster's.
    """

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

    def local(chat_id: str) -> Chat | None:
        return dispatcher.live.get(chat_id) or dispatcher.finished.get(chat_id)

    async def list_cluster_chats(request: web.Request, store: RedisStore) -> web.Response:
        limit = _limit(request)
        try:
            page = await read_page(store.client, request.query.get("after"), limit)
        except ValueError as exc:
            raise web.HTTPBadRequest(text=f"{exc}\n") from None
        except (RedisError, OSError) as exc:
            raise web.HTTPServiceUnavailable(text=f"the shared store did not answer: {exc}\n"
                                             ) from None
        now = time.time()
        chats = [cluster_chat_info(held, local(held.id) if held.node == store.node
                                   and held.incarnation == store.incarnation else None, now)
                 for held in page.chats]
        nodes = [{"node": n.node, "incarnation": n.incarnation, "live": n.live,
                  "chats": n.chats} for n in page.nodes]
        return web.Response(body=_encoder.encode({
            "chats": chats, "count": len(chats), "next": page.next, "node": store.node,
            "nodes": nodes}), content_type="application/json")

    async def list_chats(request: web.Request) -> web.Response:
        """``GET /v1/chats``: every live chat (the cluster's, a page at a time)."""
        authorised(request)
        store = cluster()
        if store is not None:
            return await list_cluster_chats(request, store)
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
        chat = local(chat_id)
        store = cluster()
        if store is not None:
            try:
                held = await read_chat(store.client, chat_id)
            except (RedisError, OSError) as exc:
                raise web.HTTPServiceUnavailable(
                    text=f"the shared store did not answer: {exc}\n") from None
            if held is not None:
                mine = held.node == store.node and held.incarnation == store.incarnation
                return web.Response(
                    body=_encoder.encode(cluster_chat_info(held, chat if mine else None)),
                    content_type="application/json")
        if chat is None:
            raise web.HTTPNotFound(text=f"no chat {chat_id}\n")
        return web.Response(body=_encoder.encode(chat_info(chat)),
                            content_type="application/json")

    app.router.add_get("/v1/chats", list_chats)
    app.router.add_get("/v1/chats/{chat}", one_chat)


def render_table(chats: Sequence[ChatInfo]) -> str:
    """The chats as a plain text table, for ``bridged chats``."""
    cluster = any(isinstance(c, ClusterChatInfo) for c in chats)
    headers = ("CHAT", "BACKEND", "STATE", "AGENT", "QUEUE", "AGE", "IDLE", "CONNECTION",
               "SEQ", "HELD", *(("NODE",) if cluster else ()))
    rows = [headers] + [
        (c.id, _BACKENDS.get(c.backend, c.backend or "-"), c.state, c.agent or "-",
         "-" if c.queue_position is None else str(c.queue_position),
         _duration(c.age_s), "-" if c.idle_s is None else _duration(c.idle_s),
         c.connection or ("(detached)" if c.idle_s is not None else "-"),
         str(c.last_seq), "-" if c.held_events is None else str(c.held_events),
         *((_holder(c),) if cluster else ()))
        for c in chats
    ]
    widths = [max(len(row[i]) for row in rows) for i in range(len(headers))]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True))
             .rstrip() for row in rows]
    return "\n".join(lines) + "\n"


_BACKENDS = {"salesforce": "liveagent", "salesforce_messaging": "messaging"}


def _holder(chat: ChatInfo) -> str:
    if not isinstance(chat, ClusterChatInfo):
        return "-"
    return chat.node if chat.holder_live else f"{chat.node} (lease gone)"


def _duration(seconds: float) -> str:
    seconds = int(seconds)
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
