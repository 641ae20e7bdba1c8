"""The null bridge: the floor of the work any OCP to Live Agent bridge must do.

It is the baseline of ``bridged loadtest``: the same WebSocket envelopes in and out (PROTOCOL.md
section 2) and the same Live Agent REST calls (SALESFORCE.md sections 2-4), on the same stack
(aiohttp, uvloop, msgspec), with nothing else. Per chat:

* ``start``: ``GET System/SessionId``, ``POST Chasitor/ChasitorInit`` (sequence 1), then one
  task parks a ``GET System/Messages`` long poll (``ack`` -1, then the last ``sequence``) for
  the chat's whole life;
* ``message``: one ``POST Chasitor/ChatMessage`` with the next ``X-LIVEAGENT-SEQUENCE``, then
  one ``delivered`` frame (a per-chat lock keeps the sequence in order, as the server demands);
* every message in a poll answer: one frame (``queued``, ``agent_joined``, ``agent_message``,
  ``agent_typing``, ``ended``);
* ``end``: ``POST Chasitor/ChatEnd``, then ``ended``.

What it does not do, on purpose: no seq bookkeeping beyond a counter (events carry ``seq``
so that the load generator checks both servers alike, but nothing is held and ``ack`` and
``attach`` are ignored), no persistence, no supervision or retries, no backpressure, no
validation beyond decoding, no logging per chat. It is not a product: never point OCP at it.

It tunes the garbage collector as bridged's daemon does (``gc.set_threshold(50_000, 20,
100)`` and ``gc.freeze()`` once it listens; ``--python-gc`` keeps Python's defaults), so that
the load test compares the work of the two, not their tuning.

Run it as ``python -m bridged.tools.nullbridge --listen 127.0.0.1:8720 --token T
--live-agent-url http://127.0.0.1:8711/chat``; ``GET /healthz`` answers 200 once it listens.
"""

from __future__ import annotations

__all__ = ["NullBridge", "main"]

import argparse
import asyncio
import gc
import hmac
import signal
import sys
from collections.abc import Sequence
from typing import Any

import msgspec
from aiohttp import ClientSession, ClientTimeout, TCPConnector, WSMsgType, web

JSON = "bridged.v1+json"
MSGPACK = "bridged.v1+msgpack"


# --- OCP -> bridge: one flat Struct, so decoding costs one pass and no union dispatch ----


class _Inbound(msgspec.Struct, kw_only=True):
    type: str
    chat: str = ""
    id: str = ""
    text: str = ""


# --- Live Agent answers -------------------------------------------------------------------


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


_in_json = msgspec.json.Decoder(_Inbound)
_in_msgpack = msgspec.msgpack.Decoder(_Inbound)
_session_decoder = msgspec.json.Decoder(_SessionId)
_batch_decoder = msgspec.json.Decoder(_Batch)
_named_decoder = msgspec.json.Decoder(_Named)
_json = msgspec.json.Encoder()
_msgpack = msgspec.msgpack.Encoder()


class _Chat:
    """One chat: its connection, its Live Agent session, its counters."""

    __slots__ = ("agent", "headers", "id", "joined", "lock", "poller", "send_seq", "seq",
                 "ws", "ws_binary")

    def __init__(self, chat_id: str, ws: web.WebSocketResponse, binary: bool) -> None:
        self.id = chat_id
        self.ws = ws
        self.ws_binary = binary
        self.seq = 0  # events sent to OCP
        self.send_seq = 0  # X-LIVEAGENT-SEQUENCE of the last POST
        self.headers: dict[str, str] = {}
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


class NullBridge:
    """The server: ``/v1/chat`` (WebSocket) and ``/healthz``.

    Args:
        base_url: the Live Agent REST base, ``http://HOST:PORT/chat/rest/``.
        tokens: accepted bearer tokens.
        organization_id, deployment_id, button_id: the ChasitorInit ids.
        api_version: ``X-LIVEAGENT-API-VERSION``.
    """

    def __init__(self, base_url: str, tokens: Sequence[str], *, organization_id: str,
                 deployment_id: str, button_id: str, api_version: str = "66") -> None:
        self.base_url = base_url
        self._tokens = [t.encode() for t in tokens]
        self._org, self._deployment, self._button = organization_id, deployment_id, button_id
        self._version = api_version
        self._http: ClientSession | None = None
        self._chats: dict[str, _Chat] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self.app = web.Application()
        self.app.router.add_get("/v1/chat", self._ws_handler)
        self.app.router.add_get("/healthz", self._healthz)
        self.app.cleanup_ctx.append(self._lifecycle)

    async def _lifecycle(self, _app: web.Application) -> Any:
        # No limit on connections: one parked poll per chat, plus the POSTs.
        # The same keep-alive as bridged (salesforce.keepalive_s), so both hold about one
        # descriptor per chat.
        self._http = ClientSession(connector=TCPConnector(limit=0, force_close=False,
                                                          keepalive_timeout=5.0),
                                   skip_auto_headers=("User-Agent",))
        yield
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._http.close()

    async def _healthz(self, _request: web.Request) -> web.Response:
        return web.Response(text="ok\n")

    def _spawn(self, coro: Any, name: str) -> asyncio.Task[Any]:
        task = asyncio.create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

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
                    self._spawn(self._send_message(chat, envelope.id, envelope.text),
                                "message")
            elif kind == "start":
                if envelope.chat in self._chats:
                    continue
                chat = _Chat(envelope.chat, ws, binary)
                self._chats[chat.id] = chat
                mine.append(chat.id)
                chat.poller = self._spawn(self._run_chat(chat), f"chat:{chat.id}")
            elif kind == "end":
                chat = self._chats.get(envelope.chat)
                if chat is not None:
                    self._spawn(self._end(chat), "end")
            # ack, typing, attach: nothing to do in the floor.
        for chat_id in mine:
            chat = self._chats.pop(chat_id, None)
            if chat is not None and chat.poller is not None:
                chat.poller.cancel()
        return ws

    # --- Live Agent side --------------------------------------------------------------------

    def _headers(self, chat: _Chat, sequenced: bool) -> dict[str, str]:
        if not sequenced:
            return chat.headers
        chat.send_seq += 1
        return {**chat.headers, "X-LIVEAGENT-SEQUENCE": str(chat.send_seq),
                "Content-Type": "application/json"}

    async def _run_chat(self, chat: _Chat) -> None:
        http = self._http
        assert http is not None
        base = self.base_url
        try:
            async with http.get(base + "System/SessionId", headers={
                    "X-LIVEAGENT-API-VERSION": self._version,
                    "X-LIVEAGENT-AFFINITY": "null"}) as response:
                if response.status != 200:
                    await self._failed(chat, f"SessionId HTTP {response.status}")
                    return
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
                    await self._failed(chat, f"ChasitorInit HTTP {response.status}")
                    return
            timeout = ClientTimeout(total=float(session.client_poll_timeout))
            ack = -1
            while True:
                async with http.get(base + "System/Messages", params={"ack": str(ack)},
                                    headers=chat.headers, timeout=timeout) as response:
                    status = response.status
                    body = await response.read()
                if status == 204:
                    continue
                if status != 200:
                    if status != 403:
                        await self._failed(chat, f"Messages HTTP {status}")
                    return
                batch = _batch_decoder.decode(body)
                if batch.sequence is not None:
                    ack = batch.sequence
                for item in batch.messages:
                    if await self._relay(chat, item):
                        return
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the floor has no supervision: report and stop
            await self._failed(chat, f"{type(exc).__name__}: {exc}")
        finally:
            if self._chats.get(chat.id) is chat:
                del self._chats[chat.id]

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
            self._chats.pop(chat.id, None)
            await chat.emit({"type": "ended", "reason": "agent", "text": ""})
            return True
        elif kind == "ChatRequestFail":
            self._chats.pop(chat.id, None)
            reason = _named_decoder.decode(item.message).reason
            await chat.emit({"type": "ended", "reason": "no_agent" if reason == "Unavailable"
                             else "failed", "text": reason})
            return True
        return False

    async def _send_message(self, chat: _Chat, message_id: str, text: str) -> None:
        http = self._http
        assert http is not None
        # Live Agent refuses visitor activity before ChatEstablished was delivered.
        await chat.joined.wait()
        async with chat.lock:
            try:
                async with http.post(self.base_url + "Chasitor/ChatMessage",
                                     data=_json.encode({"text": text}),
                                     headers=self._headers(chat, True)) as response:
                    await response.read()
                    ok = response.status == 200
            except Exception as exc:
                ok = False
                text = f"{type(exc).__name__}: {exc}"
        if ok:
            await chat.emit({"type": "delivered", "id": message_id})
        elif not chat.ws.closed:
            await chat.ws.send_frame(_json.encode({
                "type": "error", "code": "failed", "detail": "ChatMessage failed",
                "chat": chat.id, "ref": message_id}), WSMsgType.TEXT)

    async def _end(self, chat: _Chat) -> None:
        http = self._http
        assert http is not None
        self._chats.pop(chat.id, None)
        try:
            async with chat.lock, http.post(self.base_url + "Chasitor/ChatEnd",
                                 data=b'{"reason":"client"}',
                                 headers=self._headers(chat, True)) as response:
                await response.read()
        except Exception:
            pass
        await chat.emit({"type": "ended", "reason": "client", "text": ""})

    async def _failed(self, chat: _Chat, detail: str) -> None:
        self._chats.pop(chat.id, None)
        await chat.emit({"type": "ended", "reason": "failed", "text": detail})


def _base_url(url: str) -> str:
    url = url.rstrip("/")
    if url.endswith("/chat/rest"):
        return url + "/"
    if url.endswith("/chat"):
        return url + "/rest/"
    return url + "/chat/rest/"


async def serve(args: argparse.Namespace) -> int:
    """Serve until SIGTERM or SIGINT."""
    host, _, port = args.listen.rpartition(":")
    bridge = NullBridge(_base_url(args.live_agent_url), args.token,
                        organization_id=args.organization_id,
                        deployment_id=args.deployment_id, button_id=args.button_id,
                        api_version=args.api_version)
    runner = web.AppRunner(bridge.app, access_log=None, handle_signals=False,
                           shutdown_timeout=1.0)
    await runner.setup()
    site = web.TCPSite(runner, host.strip("[]") or "127.0.0.1", int(port), backlog=4096,
                       reuse_address=True)
    await site.start()
    if not args.python_gc:
        # The same collector settings as bridged's daemon, so that the two are compared on
        # their work, not on their tuning.
        gc.set_threshold(50_000, 20, 100)
        gc.freeze()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)
    print(f"nullbridge listening on ws://{args.listen}/v1/chat", file=sys.stderr, flush=True)
    await stop.wait()
    await runner.cleanup()
    return 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bridged.tools.nullbridge",
                                     description="The null bridge (load test baseline).")
    parser.add_argument("--listen", default="127.0.0.1:8720", metavar="HOST:PORT")
    parser.add_argument("--token", action="append", required=True)
    parser.add_argument("--live-agent-url", required=True,
                        help="e.g. http://127.0.0.1:8711/chat")
    parser.add_argument("--organization-id", default="00D000000000001")
    parser.add_argument("--deployment-id", default="572000000000001")
    parser.add_argument("--button-id", default="573ECHO00000000")
    parser.add_argument("--api-version", default="66")
    parser.add_argument("--python-gc", action="store_true",
                        help="keep Python's collector defaults (default: bridged's settings, "
                             "gc.set_threshold(50000, 20, 100) and gc.freeze() at start)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point: ``python -m bridged.tools.nullbridge``."""
    import uvloop

    args = _parser().parse_args(argv)
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        try:
            return runner.run(serve(args))
        except KeyboardInterrupt:
            return 130


if __name__ == "__main__":
    sys.exit(main())
