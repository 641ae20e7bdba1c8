"""The null bridge: the floor of the work any OCP to Salesforce bridge must do.

It is the baseline of ``bridged loadtest``: the same WebSocket envelopes in and out (PROTOCOL.md
section 2) and the same Salesforce calls, on the same stack (aiohttp, uvloop, msgspec), with
nothing else. It speaks either backend (``--backend``).

Live Agent (SALESFORCE.md sections 2-4), per chat:

* ``start``: ``GET System/SessionId``, ``POST Chasitor/ChasitorInit`` (sequence 1), then one
  task parks a ``GET System/Messages`` long poll (``ack`` -1, then the last ``sequence``) for
  the chat's whole life;
* ``message``: one ``POST Chasitor/ChatMessage`` with the next ``X-LIVEAGENT-SEQUENCE``, then
  one ``delivered`` frame (a per-chat lock keeps the sequence in order, as the server demands);
* every message in a poll answer: one frame (``queued``, ``agent_joined``, ``agent_message``,
  ``agent_typing``, ``ended``);
* ``end``: ``POST Chasitor/ChatEnd``, then ``ended``.

Enhanced Chat (MESSAGING.md sections 2-3), per chat:

* ``start``: ``POST .../authorization/unauthenticated/access-token`` (one guest token), then
  one task opens the event stream ``GET /eventrouter/v1/sse`` (``Authorization``,
  ``X-Org-Id``, ``Last-Event-Id`` = the token's ``lastEventId``) and holds it for the chat's
  whole life; once it is open, ``POST .../conversation`` with a new lowercase UUID;
* ``message``: one ``POST .../conversation/{id}/message`` with a new message id, then one
  ``delivered`` frame (a per-chat lock keeps the messages in order);
* every event: ``ping``, acknowledgements and the visitor's own echoes (``sender.role``
  ``EndUser``) are dropped; an Agent ``add`` is ``agent_joined``, an agent message
  ``agent_message``, agent typing ``agent_typing``, a routing result before the agent
  ``queued``, the session ``Ended`` ``ended``;
* ``end``: ``DELETE .../conversation/{id}?esDeveloperName=``, then ``ended``, and the
  stream is closed.

What it does not do, on purpose: no seq bookkeeping beyond a counter (events carry ``seq``
so that the load generator checks both servers alike, but nothing is held and ``ack`` and
``attach`` are ignored), no persistence, no supervision, retries or reconnects, no
backpressure, no pacing (the simulator's rate limits are lifted for load tests), no
validation beyond decoding, no logging per chat. Its SSE reader takes the events as the
simulator writes them (``\\n`` line ends, ``data`` on one line or several), not every form
the WHATWG rules allow. It is not a product: never point OCP at it.

It gets the best treatment its design allows, so that a ratio to it measures bridged's own
cost and not the floor's handicaps (issue 12):

* HTTP keep-alive, in two pools: what a chat holds open (its long poll or event stream) has
  a connection of its own; every other request goes over a shared pool of at most
  ``--max-request-connections`` (256, as bridged's ``salesforce.max_request_connections``)
  kept-alive connections (``--keepalive-s``, 5 s as bridged's ``salesforce.keepalive_s``).
  With 100, at 19,000 chats the floor waited for its pool at 44 % of a core while bridged,
  with 256, relayed a third more. Without the cap, a saturated floor opened one
  connection per message in flight: at 10,000 chats, 20,000 descriptors and a quarter of its
  CPU in TCP connects. A request's timeout counts from the moment it has a connection, as
  bridged's does: counted from its wait in the pool, 12,645 of the floor's messages failed
  unsent at 19,000 chats, where the saturation keeps 19,000 and more waiting;
* no garbage collector (``--gc off``: ``gc.freeze()`` once it listens, then
  ``gc.disable()``). The floor makes almost no reference cycles: with the collector on, it
  freed 0.27 (Live Agent) and 0.09 (Enhanced Chat) objects per relayed message at 10,000
  chats, and the process's RSS after the load was the same with the collector off, while
  the collections of a heap of 10,000 chats took 11 to 22 % of its CPU at saturation, in
  pauses of up to 0.8 s. ``--gc bridged`` gives it bridged's default policy (``gc.freeze()``,
  automatic collections off, a full collection once the heap doubled:
  bridged/ops/gcpolicy.py), ``--gc python`` Python's defaults;
* at most ``--max-concurrent-starts`` (50, bridged's ``salesforce.max_concurrent_starts``)
  chats open their Salesforce session at once: a burst of starts waits its turn instead of
  timing out.

Run it as ``python -m bridged.tools.nullbridge --listen 127.0.0.1:8720 --token T
--live-agent-url http://127.0.0.1:8711/chat`` (or ``--backend messaging --scrt-url
http://127.0.0.1:8712``); ``GET /healthz`` answers 200 once it listens.
"""

from __future__ import annotations

__all__ = ["GC_MODES", "NullBridge", "main", "tune_gc"]

import argparse
import asyncio
import contextlib
import gc
import hmac
import signal
import sys
import uuid
from collections.abc import Callable, Sequence
from typing import Any

import msgspec
from aiohttp import ClientResponse, ClientSession, ClientTimeout, TCPConnector, WSMsgType, web

from bridged.ops.gcpolicy import GrowthCollector
from bridged.salesforce.http import HELD_KEEPALIVE_S

JSON = "bridged.v1+json"
MSGPACK = "bridged.v1+msgpack"


# --- OCP -> bridge: one flat Struct, so decoding costs one pass and no union dispatch ----


class _Inbound(msgspec.Struct, kw_only=True):
    type: str
    chat: str = ""
    id: str = ""
    text: str = ""


_in_json = msgspec.json.Decoder(_Inbound)
_in_msgpack = msgspec.msgpack.Decoder(_Inbound)
_json = msgspec.json.Encoder()
_msgpack = msgspec.msgpack.Encoder()


class _Chat:
    """One chat: its connection, its Salesforce session, its counters."""

    __slots__ = ("agent", "conversation", "ending", "headers", "id", "joined", "lock",
                 "poller", "send_seq", "seq", "ws", "ws_binary")

    def __init__(self, chat_id: str, ws: web.WebSocketResponse, binary: bool) -> None:
        self.id = chat_id
        self.ws = ws
        self.ws_binary = binary
        self.seq = 0  # events sent to OCP
        self.send_seq = 0  # Live Agent: X-LIVEAGENT-SEQUENCE of the last POST
        self.headers: dict[str, str] = {}
        self.conversation = ""  # Enhanced Chat: the conversation id
        self.ending = False  # the visitor's end is under way
        self.agent = ""
        self.joined = asyncio.Event()
        self.lock = asyncio.Lock()
        self.poller: asyncio.Task[None] | None = None

    async def emit(self, fields: dict[str, Any]) -> None:
        """Send one event to the chat's connection, numbered."""
        self.seq += 1
        fields["chat"] = self.id
        fields["seq"] = self.seq
        if self.ws.closed:
            return
        try:
            if self.ws_binary:
                await self.ws.send_bytes(_msgpack.encode(fields))
            else:
                await self.ws.send_frame(_json.encode(fields), WSMsgType.TEXT)
        except (ConnectionError, RuntimeError):
            pass


class _Backend:
    """What one Salesforce API costs per chat: run it, send a message, end it."""

    def __init__(self, bridge: NullBridge) -> None:
        self.bridge = bridge

    @property
    def http(self) -> ClientSession:
        """The bridge's client for requests: a capped pool of kept-alive connections."""
        http = self.bridge.http
        assert http is not None
        return http

    @property
    def held(self) -> ClientSession:
        """The bridge's client for what a chat holds open (long poll, event stream)."""
        held = self.bridge.held
        assert held is not None
        return held

    async def run(self, chat: _Chat) -> None:
        """Open the chat's session and relay its events until it is over."""
        raise NotImplementedError

    async def send(self, chat: _Chat, text: str) -> bool:
        """Send one visitor message (the agent has joined, the chat's lock is held)."""
        raise NotImplementedError

    async def end(self, chat: _Chat) -> None:
        """End the chat on the Salesforce side (the chat's lock is held)."""
        raise NotImplementedError


# --- Live Agent ---------------------------------------------------------------------------


class _SessionId(msgspec.Struct, kw_only=True, rename="camel"):
    id: str
    key: str
    affinity_token: str
    client_poll_timeout: float | str = 40


class _Item(msgspec.Struct, kw_only=True):
    type: str
    message: msgspec.Raw = msgspec.Raw(b"{}")


class _Batch(msgspec.Struct, kw_only=True):
    messages: list[_Item] = []
    sequence: int | None = None


class _Named(msgspec.Struct, kw_only=True):
    name: str = ""
    text: str = ""
    reason: str = ""
    position: int | None = None
    queue_position: int | None = msgspec.field(default=None, name="queuePosition")


_session_decoder = msgspec.json.Decoder(_SessionId)
_batch_decoder = msgspec.json.Decoder(_Batch)
_named_decoder = msgspec.json.Decoder(_Named)


class _LiveAgent(_Backend):
    """Live Agent REST: a parked long poll per chat, one POST per visitor message."""

    def __init__(self, bridge: NullBridge, base_url: str, *, organization_id: str,
                 deployment_id: str, button_id: str, api_version: str) -> None:
        super().__init__(bridge)
        self.base_url = base_url
        self._org, self._deployment, self._button = organization_id, deployment_id, button_id
        self._version = api_version

    def _headers(self, chat: _Chat, sequenced: bool) -> dict[str, str]:
        if not sequenced:
            return chat.headers
        chat.send_seq += 1
        return {**chat.headers, "X-LIVEAGENT-SEQUENCE": str(chat.send_seq),
                "Content-Type": "application/json"}

    async def run(self, chat: _Chat) -> None:
        """SessionId, ChasitorInit, then the long poll until the chat is over."""
        base = self.base_url
        async with self.bridge.starts:
            session = await self._open(chat)
        if session is None:
            return
        timeout = ClientTimeout(total=float(session.client_poll_timeout))
        held = self.held
        ack = -1
        while True:
            async with held.get(base + "System/Messages", params={"ack": str(ack)},
                                headers=chat.headers, timeout=timeout) as response:
                status = response.status
                body = await response.read()
            if status == 204:
                continue
            if status != 200:
                if status != 403:
                    await self.bridge.failed(chat, f"Messages HTTP {status}")
                return
            batch = _batch_decoder.decode(body)
            if batch.sequence is not None:
                ack = batch.sequence
            for item in batch.messages:
                if await self._relay(chat, item):
                    return

    async def _open(self, chat: _Chat) -> _SessionId | None:
        """SessionId and ChasitorInit; the session, or None when the chat failed."""
        http = self.http
        base = self.base_url
        async with http.get(base + "System/SessionId", headers={
                "X-LIVEAGENT-API-VERSION": self._version,
                "X-LIVEAGENT-AFFINITY": "null"}) as response:
            if response.status != 200:
                await self.bridge.failed(chat, f"SessionId HTTP {response.status}")
                return None
            session = _session_decoder.decode(await response.read())
        chat.headers = {"X-LIVEAGENT-API-VERSION": self._version,
                        "X-LIVEAGENT-AFFINITY": session.affinity_token,
                        "X-LIVEAGENT-SESSION-KEY": session.key}
        init = {
            "organizationId": self._org, "deploymentId": self._deployment,
            "buttonId": self._button, "sessionId": session.id,
            "userAgent": "nullbridge", "language": "en-US",
            "screenResolution": "1920x1080", "visitorName": "Visitor",
            "prechatDetails": [], "prechatEntities": [],
            "receiveQueueUpdates": True, "isPost": True,
        }
        # The first POST: no message can go before it (they wait for the agent).
        async with http.post(base + "Chasitor/ChasitorInit", data=_json.encode(init),
                             headers=self._headers(chat, True)) as response:
            await response.read()
            if response.status != 200:
                await self.bridge.failed(chat, f"ChasitorInit HTTP {response.status}")
                return None
        return session

    async def _relay(self, chat: _Chat, item: _Item) -> bool:
        """One Live Agent message, one frame; True when the chat is over."""
        kind = item.type
        if kind == "ChatMessage":
            named = _named_decoder.decode(item.message)
            await chat.emit({"type": "agent_message", "agent": named.name or chat.agent,
                             "text": named.text})
        elif kind in ("AgentTyping", "AgentNotTyping"):
            await chat.emit({"type": "agent_typing", "active": kind == "AgentTyping"})
        elif kind == "ChatEstablished":
            chat.agent = _named_decoder.decode(item.message).name
            chat.joined.set()
            await chat.emit({"type": "agent_joined", "agent": chat.agent})
        elif kind in ("ChatRequestSuccess", "QueueUpdate"):
            named = _named_decoder.decode(item.message)
            position = named.queue_position if named.queue_position is not None \
                else named.position
            await chat.emit({"type": "queued", "position": position or None, "wait_s": None,
                             "text": ""})
        elif kind == "ChatEnded":
            self.bridge.forget(chat)
            await chat.emit({"type": "ended", "reason": "agent", "text": ""})
            return True
        elif kind == "ChatRequestFail":
            self.bridge.forget(chat)
            reason = _named_decoder.decode(item.message).reason
            await chat.emit({"type": "ended", "reason": "no_agent" if reason == "Unavailable"
                             else "failed", "text": reason})
            return True
        return False

    async def send(self, chat: _Chat, text: str) -> bool:
        """``POST Chasitor/ChatMessage`` with the next sequence."""
        async with self.http.post(self.base_url + "Chasitor/ChatMessage",
                                  data=_json.encode({"text": text}),
                                  headers=self._headers(chat, True)) as response:
            await response.read()
            return response.status == 200

    async def end(self, chat: _Chat) -> None:
        """``POST Chasitor/ChatEnd``."""
        async with self.http.post(self.base_url + "Chasitor/ChatEnd",
                                  data=b'{"reason":"client"}',
                                  headers=self._headers(chat, True)) as response:
            await response.read()


# --- Enhanced Chat ------------------------------------------------------------------------

_API = "/iamessage/api/v2/"
_TOKEN_PATH = _API + "authorization/unauthenticated/access-token"
_CONVERSATION_PATH = _API + "conversation"
_STREAM_PATH = "/eventrouter/v1/sse"
# The sample app treats 90 s of silence as a dead stream; pings come every 15 s or so.
_STREAM_READ_TIMEOUT_S = 90.0


class _Token(msgspec.Struct, kw_only=True, rename="camel"):
    access_token: str
    last_event_id: str | None = None


class _Sender(msgspec.Struct, kw_only=True, frozen=True):
    role: str = ""


class _ConversationEntry(msgspec.Struct, kw_only=True, rename="camel"):
    sender_display_name: str = ""
    entry_payload: str = "{}"
    sender: _Sender = _Sender()


class _EventData(msgspec.Struct, kw_only=True, rename="camel"):
    conversation_id: str = ""
    conversation_entry: _ConversationEntry | None = None


class _StaticContent(msgspec.Struct, kw_only=True):
    text: str = ""


class _AbstractMessage(msgspec.Struct, kw_only=True, rename="camel"):
    static_content: _StaticContent | None = None


class _MessagePayload(msgspec.Struct, kw_only=True, rename="camel"):
    abstract_message: _AbstractMessage | None = None


class _Participant(msgspec.Struct, kw_only=True, frozen=True):
    role: str = ""


class _ParticipantChange(msgspec.Struct, kw_only=True, rename="camel"):
    operation: str = ""
    participant: _Participant = _Participant()
    display_name: str = ""


class _ParticipantPayload(msgspec.Struct, kw_only=True):
    entries: list[_ParticipantChange] = []


class _SessionPayload(msgspec.Struct, kw_only=True, rename="camel"):
    session_status: str = ""


_token_decoder = msgspec.json.Decoder(_Token)
_event_decoder = msgspec.json.Decoder(_EventData)
_message_decoder = msgspec.json.Decoder(_MessagePayload)
_participant_decoder = msgspec.json.Decoder(_ParticipantPayload)
_session_decoder_ec = msgspec.json.Decoder(_SessionPayload)

_TYPING = {b"CONVERSATION_TYPING_STARTED_INDICATOR": True,
           b"CONVERSATION_TYPING_STOPPED_INDICATOR": False}
# Events whose data the floor reads; every other one (ping, acknowledgements, ...) is
# dropped by its name alone.
_READ = frozenset({b"CONVERSATION_MESSAGE", b"CONVERSATION_PARTICIPANT_CHANGED",
                   b"CONVERSATION_ROUTING_RESULT", b"CONVERSATION_SESSION_STATUS_CHANGED",
                   b"CONVERSATION_CLOSE_CONVERSATION", *_TYPING})


def _sse_event(block: bytes) -> tuple[bytes, bytes]:
    """The ``event`` name and the ``data`` of one event block (lines without the blank)."""
    name = b"message"
    data: list[bytes] = []
    for line in block.split(b"\n"):
        if line.startswith(b"data:"):
            data.append(line[6:] if line[5:6] == b" " else line[5:])
        elif line.startswith(b"event:"):
            name = line[7:] if line[6:7] == b" " else line[6:]
    return name, b"\n".join(data)


class _Messaging(_Backend):
    """Enhanced Chat: a guest token and an event stream per chat, one POST per message."""

    def __init__(self, bridge: NullBridge, scrt_url: str, *, organization_id: str,
                 es_developer_name: str) -> None:
        super().__init__(bridge)
        self.scrt_url = scrt_url.rstrip("/")
        self._org15 = organization_id[:15]
        self._deployment = es_developer_name
        self._token_body = _json.encode({"orgId": organization_id,
                                         "esDeveloperName": es_developer_name,
                                         "capabilitiesVersion": "1", "platform": "Web"})
        self._stream_timeout = ClientTimeout(total=None, sock_connect=30.0,
                                             sock_read=_STREAM_READ_TIMEOUT_S)

    async def run(self, chat: _Chat) -> None:
        """Token, stream, create; then relay the stream until the chat is over."""
        async with contextlib.AsyncExitStack() as hold:
            async with self.bridge.starts:
                stream = await self._open(chat, hold)
            if stream is None:
                return
            pending = b""
            async for chunk in stream.content.iter_any():
                pending = pending + chunk if pending else chunk
                del chunk  # not held while the next one is awaited (as bridged)
                while True:
                    cut = pending.find(b"\n\n")
                    if cut < 0:
                        break
                    block, pending = pending[:cut], pending[cut + 2:]
                    over = await self._relay(chat, block)
                    del block
                    if over:
                        return
        if not chat.ending:
            await self.bridge.failed(chat, "the event stream ended")

    async def _open(self, chat: _Chat, hold: contextlib.AsyncExitStack
                    ) -> ClientResponse | None:
        """Token, stream (held open by ``hold``), create; the stream, or None (failed)."""
        http = self.http
        base = self.scrt_url
        async with http.post(base + _TOKEN_PATH, data=self._token_body,
                             headers={"Content-Type": "application/json"}) as response:
            body = await response.read()
            if response.status != 200:
                await self.bridge.failed(chat, f"access token HTTP {response.status}")
                return None
        token = _token_decoder.decode(body)
        bearer = "Bearer " + token.access_token
        chat.headers = {"Authorization": bearer, "Content-Type": "application/json"}
        stream_headers = {"Authorization": bearer, "X-Org-Id": self._org15,
                          "Last-Event-Id": token.last_event_id or "0",
                          "Accept": "text/event-stream"}
        stream = await hold.enter_async_context(self.held.get(
            base + _STREAM_PATH, headers=stream_headers, timeout=self._stream_timeout))
        if stream.status != 200:
            await self.bridge.failed(chat, f"event stream HTTP {stream.status}")
            return None
        # The stream is open: create the conversation (its events are buffered meanwhile).
        chat.conversation = str(uuid.uuid4())
        create = _json.encode({"esDeveloperName": self._deployment,
                               "conversationId": chat.conversation})
        async with http.post(base + _CONVERSATION_PATH, data=create,
                             headers=chat.headers) as response:
            await response.read()
            if not 200 <= response.status < 300:
                await self.bridge.failed(chat, f"create HTTP {response.status}")
                return None
        return stream

    async def _relay(self, chat: _Chat, block: bytes) -> bool:
        """One event, at most one frame; True when the chat is over."""
        name, data = _sse_event(block)
        if name not in _READ or chat.ending:
            return False
        event = _event_decoder.decode(data)
        if event.conversation_id != chat.conversation:
            return False
        if name == b"CONVERSATION_CLOSE_CONVERSATION":
            return await self._agent_ended(chat)  # not ours: chat.ending is not set
        entry = event.conversation_entry
        if entry is None:
            return False
        if entry.sender.role == "EndUser":
            return False  # the visitor's own message or typing, echoed
        if name == b"CONVERSATION_MESSAGE":
            message = _message_decoder.decode(entry.entry_payload).abstract_message
            if message is not None and message.static_content is not None:
                await chat.emit({"type": "agent_message",
                                 "agent": entry.sender_display_name or chat.agent,
                                 "text": message.static_content.text})
        elif name in _TYPING:
            await chat.emit({"type": "agent_typing", "active": _TYPING[name]})
        elif name == b"CONVERSATION_PARTICIPANT_CHANGED":
            for change in _participant_decoder.decode(entry.entry_payload).entries:
                if change.participant.role == "Agent" and change.operation == "add" \
                        and not chat.joined.is_set():
                    chat.agent = change.display_name
                    chat.joined.set()
                    await chat.emit({"type": "agent_joined", "agent": chat.agent})
        elif name == b"CONVERSATION_ROUTING_RESULT":
            if not chat.joined.is_set():
                await chat.emit({"type": "queued", "position": None, "wait_s": None,
                                 "text": ""})
        elif name == b"CONVERSATION_SESSION_STATUS_CHANGED":
            status = _session_decoder_ec.decode(entry.entry_payload).session_status
            if status.lower() == "ended":
                return await self._agent_ended(chat)
        return False

    async def _agent_ended(self, chat: _Chat) -> bool:
        self.bridge.forget(chat)
        await chat.emit({"type": "ended", "reason": "agent", "text": ""})
        return True

    async def send(self, chat: _Chat, text: str) -> bool:
        """``POST .../conversation/{id}/message`` with a new message id."""
        body = _json.encode({
            "message": {"id": str(uuid.uuid4()), "messageType": "StaticContentMessage",
                        "staticContent": {"formatType": "Text", "text": text}},
            "esDeveloperName": self._deployment})
        async with self.http.post(
                f"{self.scrt_url}{_CONVERSATION_PATH}/{chat.conversation}/message",
                data=body, headers=chat.headers) as response:
            await response.read()
            return response.status == 202

    async def end(self, chat: _Chat) -> None:
        """``DELETE .../conversation/{id}``; the stream then has nothing more to say."""
        chat.ending = True
        if chat.conversation:
            async with self.http.delete(
                    f"{self.scrt_url}{_CONVERSATION_PATH}/{chat.conversation}",
                    params={"esDeveloperName": self._deployment},
                    headers=chat.headers) as response:
                await response.read()
        if chat.poller is not None:
            chat.poller.cancel()


# --- the server ---------------------------------------------------------------------------


class NullBridge:
    """The server: ``/v1/chat`` (WebSocket) and ``/healthz``.

    Args:
        tokens: accepted bearer tokens.
        keepalive_s: seconds an idle connection to Salesforce is kept for the next request.
        max_concurrent_starts: chats opening their Salesforce session at once.
        max_request_connections: connections for requests (every call but the long poll
            and the event stream), kept alive and shared by every chat; 0: no limit.

    Then :meth:`live_agent` or :meth:`messaging` chooses the backend.
    """

    def __init__(self, tokens: Sequence[str], *, keepalive_s: float = 5.0,
                 max_concurrent_starts: int = 50, max_request_connections: int = 256) -> None:
        self._tokens = [t.encode() for t in tokens]
        # Session-creating calls in progress at once, as bridged's
        # salesforce.max_concurrent_starts: a burst of starts queues instead of opening
        # thousands of connections at once (the calls would time out).
        self.starts = asyncio.Semaphore(max_concurrent_starts)
        self._keepalive_s = keepalive_s
        self._max_request_connections = max_request_connections
        self.http: ClientSession | None = None
        self.held: ClientSession | None = None
        self.backend: _Backend | None = None
        self._chats: dict[str, _Chat] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self.app = web.Application()
        self.app.router.add_get("/v1/chat", self._ws_handler)
        self.app.router.add_get("/healthz", self._healthz)
        self.app.cleanup_ctx.append(self._lifecycle)

    def live_chats(self) -> int:
        """How many chats are live (the garbage collector's policy counts the heap per)."""
        return len(self._chats)

    def live_agent(self, base_url: str, *, organization_id: str, deployment_id: str,
                   button_id: str, api_version: str = "66") -> NullBridge:
        """Hand chats over through Live Agent REST at ``base_url`` (``.../chat/rest/``)."""
        self.backend = _LiveAgent(self, base_url, organization_id=organization_id,
                                  deployment_id=deployment_id, button_id=button_id,
                                  api_version=api_version)
        return self

    def messaging(self, scrt_url: str, *, organization_id: str,
                  es_developer_name: str) -> NullBridge:
        """Hand chats over through Enhanced Chat at ``scrt_url``."""
        self.backend = _Messaging(self, scrt_url, organization_id=organization_id,
                                  es_developer_name=es_developer_name)
        return self

    async def _lifecycle(self, _app: web.Application) -> Any:
        # Two pools. What a chat holds open (its long poll or event stream) has a connection
        # of its own, so that pool has no limit. Every other request shares a capped pool of
        # kept-alive connections: one per request in flight would mean a descriptor (and a
        # TCP handshake) per chat at saturation, where a few dozen serve them all in turn.
        # Those are kept as long as bridged keeps its own (HELD_KEEPALIVE_S, and why).
        self.held = ClientSession(connector=TCPConnector(
            limit=0, force_close=False,
            keepalive_timeout=max(self._keepalive_s, HELD_KEEPALIVE_S)),
            skip_auto_headers=("User-Agent",))
        self.http = ClientSession(connector=TCPConnector(
            limit=self._max_request_connections, force_close=False,
            keepalive_timeout=self._keepalive_s), skip_auto_headers=("User-Agent",),
            # No total: it would count the wait for a connection of the pool.
            timeout=ClientTimeout(total=None, sock_connect=30.0, sock_read=60.0))
        yield
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.http.close()
        await self.held.close()

    async def _healthz(self, _request: web.Request) -> web.Response:
        return web.Response(text="ok\n")

    def spawn(self, coro: Any, name: str) -> asyncio.Task[Any]:
        """Run ``coro`` as a task the bridge cancels when it stops."""
        task = asyncio.create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def forget(self, chat: _Chat) -> None:
        """The chat is over: later envelopes for it are ignored."""
        if self._chats.get(chat.id) is chat:
            del self._chats[chat.id]

    async def failed(self, chat: _Chat, detail: str) -> None:
        """End the chat ``failed`` (the floor has no retries)."""
        self.forget(chat)
        await chat.emit({"type": "ended", "reason": "failed", "text": detail})

    # --- OCP side ---------------------------------------------------------------------------

    async def _ws_handler(self, request: web.Request) -> web.StreamResponse:
        scheme, _, presented = request.headers.get("Authorization", "").partition(" ")
        given = presented.strip().encode()
        if scheme.lower() != "bearer" or not any(
                [hmac.compare_digest(given, t) for t in self._tokens]):
            return web.Response(status=401, text="missing or wrong bearer token\n")
        ws = web.WebSocketResponse(protocols=(JSON, MSGPACK), heartbeat=20.0, compress=False,
                                   max_msg_size=65536, decode_text=False)
        await ws.prepare(request)
        binary = ws.ws_protocol == MSGPACK
        decode = _in_msgpack.decode if binary else _in_json.decode
        hello = {"type": "hello", "version": 1, "node": "nullbridge", "max_frame_bytes": 65536}
        if binary:
            await ws.send_bytes(_msgpack.encode(hello))
        else:
            await ws.send_frame(_json.encode(hello), WSMsgType.TEXT)
        mine: list[str] = []
        async for msg in ws:
            if msg.type not in (WSMsgType.TEXT, WSMsgType.BINARY):
                break
            try:
                envelope = decode(msg.data)
            except msgspec.DecodeError:
                continue
            kind = envelope.type
            if kind == "message":
                chat = self._chats.get(envelope.chat)
                if chat is not None:
                    self.spawn(self._send_message(chat, envelope.id, envelope.text), "message")
            elif kind == "start":
                if envelope.chat in self._chats:
                    continue
                chat = _Chat(envelope.chat, ws, binary)
                self._chats[chat.id] = chat
                mine.append(chat.id)
                chat.poller = self.spawn(self._run_chat(chat), "chat")
            elif kind == "end":
                chat = self._chats.get(envelope.chat)
                if chat is not None:
                    self.spawn(self._end(chat), "end")
            # ack, typing, attach: nothing to do in the floor.
        for chat_id in mine:
            chat = self._chats.pop(chat_id, None)
            if chat is not None and chat.poller is not None:
                chat.poller.cancel()
        return ws

    # --- Salesforce side --------------------------------------------------------------------

    async def _run_chat(self, chat: _Chat) -> None:
        assert self.backend is not None
        try:
            await self.backend.run(chat)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the floor has no supervision: report and stop
            if not chat.ending:
                await self.failed(chat, f"{type(exc).__name__}: {exc}")
        finally:
            self.forget(chat)

    async def _send_message(self, chat: _Chat, message_id: str, text: str) -> None:
        assert self.backend is not None
        # Salesforce refuses visitor messages before the agent joined.
        await chat.joined.wait()
        async with chat.lock:
            try:
                ok = await self.backend.send(chat, text)
            except Exception:
                ok = False
        if ok:
            await chat.emit({"type": "delivered", "id": message_id})
        elif not chat.ws.closed:
            await chat.ws.send_frame(_json.encode({
                "type": "error", "code": "failed", "detail": "message not accepted",
                "chat": chat.id, "ref": message_id}), WSMsgType.TEXT)

    async def _end(self, chat: _Chat) -> None:
        assert self.backend is not None
        self.forget(chat)
        chat.ending = True
        try:
            async with chat.lock:
                await self.backend.end(chat)
        except Exception:
            pass
        await chat.emit({"type": "ended", "reason": "client", "text": ""})


def _base_url(url: str) -> str:
    url = url.rstrip("/")
    if url.endswith("/chat/rest"):
        return url + "/"
    if url.endswith("/chat"):
        return url + "/rest/"
    return url + "/chat/rest/"


# How the floor's garbage collector runs (``--gc``):
GC_MODES = ("bridged", "python", "off")


def tune_gc(mode: str, population: Callable[[], int] | None = None,
            ) -> asyncio.Task[None] | None:
    """Set the collector for ``mode``, once the server listens; the task of its policy.

    ``bridged``: bridged's daemon default (``gc.freeze()``, then the "growth" policy of
    bridged/ops/gcpolicy.py). ``python``: Python's defaults. ``off``: ``gc.freeze()``, then
    no collection at all (memory is freed by reference counting alone). ``population``:
    the live chats, which the "growth" policy counts the heap per.
    """
    if mode == "python":
        return None
    if mode == "off":
        gc.freeze()
        gc.disable()
        return None
    if mode == "bridged":
        gc.freeze()
        collector = GrowthCollector(growth=1.0, population=population)
        collector.start()
        return asyncio.create_task(collector.run(), name="gc-growth")
    raise ValueError(f"gc mode must be one of {', '.join(GC_MODES)}, got {mode!r}")


async def serve(args: argparse.Namespace) -> int:
    """Serve until SIGTERM or SIGINT."""
    host, _, port = args.listen.rpartition(":")
    bridge = NullBridge(args.token, keepalive_s=args.keepalive_s,
                        max_concurrent_starts=args.max_concurrent_starts,
                        max_request_connections=args.max_request_connections)
    if args.backend == "messaging":
        bridge.messaging(args.scrt_url, organization_id=args.organization_id,
                         es_developer_name=args.es_developer_name)
    else:
        bridge.live_agent(_base_url(args.live_agent_url),
                          organization_id=args.organization_id,
                          deployment_id=args.deployment_id, button_id=args.button_id,
                          api_version=args.api_version)
    runner = web.AppRunner(bridge.app, access_log=None, handle_signals=False,
                           shutdown_timeout=1.0)
    await runner.setup()
    site = web.TCPSite(runner, host.strip("[]") or "127.0.0.1", int(port), backlog=4096,
                       reuse_address=True)
    await site.start()
    collecting = tune_gc(args.gc, population=bridge.live_chats)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)
    print(f"nullbridge ({args.backend}) listening on ws://{args.listen}/v1/chat",
          file=sys.stderr, flush=True)
    await stop.wait()
    if collecting is not None:
        collecting.cancel()
    await runner.cleanup()
    return 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bridged.tools.nullbridge",
                                     description="The null bridge (load test baseline).")
    parser.add_argument("--listen", default="127.0.0.1:8720", metavar="HOST:PORT")
    parser.add_argument("--token", action="append", required=True)
    parser.add_argument("--backend", choices=["liveagent", "messaging"], default="liveagent")
    parser.add_argument("--live-agent-url", help="liveagent: e.g. http://127.0.0.1:8711/chat")
    parser.add_argument("--scrt-url", help="messaging: e.g. http://127.0.0.1:8712")
    parser.add_argument("--organization-id", default="00D000000000001")
    parser.add_argument("--deployment-id", default="572000000000001")
    parser.add_argument("--button-id", default="573ECHO00000000")
    parser.add_argument("--es-developer-name", default="Sim_Echo",
                        help="messaging: the deployment's API name")
    parser.add_argument("--api-version", default="66")
    parser.add_argument("--keepalive-s", type=float, default=5.0,
                        help="seconds an idle connection to Salesforce is kept")
    parser.add_argument("--max-concurrent-starts", type=int, default=50,
                        help="chats opening their Salesforce session at once (as bridged's "
                             "salesforce.max_concurrent_starts)")
    parser.add_argument("--max-request-connections", type=int, default=256,
                        help="connections for requests other than the long poll or the "
                             "event stream, shared by every chat (0: no limit)")
    parser.add_argument("--gc", choices=GC_MODES, default="off",
                        help="the garbage collector: off (the floor makes almost no cycles), "
                             "bridged's settings, or Python's defaults")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point: ``python -m bridged.tools.nullbridge``."""
    import uvloop

    parser = _parser()
    args = parser.parse_args(argv)
    if args.backend == "messaging" and not args.scrt_url:
        parser.error("--backend messaging needs --scrt-url")
    if args.backend == "liveagent" and not args.live_agent_url:
        parser.error("--backend liveagent needs --live-agent-url")
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        try:
            return runner.run(serve(args))
        except KeyboardInterrupt:
            return 130


if __name__ == "__main__":
    sys.exit(main())
