"""A scripted OCP for tests: a real WebSocket client that speaks PROTOCOL.md."""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
import msgspec

from bridged.ocp import envelopes as env

TIMEOUT = 10.0


class OcpClient:
    """One WebSocket connection to bridged, as OCP would open it.

    Every frame received is kept in ``received``; the ``expect*`` helpers wait (bounded)
    for the next frame that matches.
    """

    def __init__(self, ws: aiohttp.ClientWebSocketResponse, fmt: str) -> None:
        self.ws = ws
        self.fmt = fmt
        self.received: list[dict[str, Any]] = []
        self._cursor = 0
        self.closed = False

    async def send(self, envelope: dict[str, Any]) -> None:
        if self.fmt == env.MSGPACK:
            await self.ws.send_bytes(msgspec.msgpack.encode(envelope))
        else:
            await self.ws.send_str(msgspec.json.encode(envelope).decode())

    async def send_raw(self, data: str | bytes) -> None:
        if isinstance(data, bytes):
            await self.ws.send_bytes(data)
        else:
            await self.ws.send_str(data)

    async def _read_one(self, timeout: float) -> dict[str, Any] | None:
        msg = await self.ws.receive(timeout=timeout)
        if msg.type is aiohttp.WSMsgType.TEXT:
            assert self.fmt != env.MSGPACK, "text frame on a msgpack connection"
            frame: dict[str, Any] = msgspec.json.decode(msg.data)
        elif msg.type is aiohttp.WSMsgType.BINARY:
            assert self.fmt == env.MSGPACK, "binary frame on a JSON connection"
            frame = msgspec.msgpack.decode(msg.data)
        else:
            self.closed = True
            return None
        self.received.append(frame)
        return frame

    async def next(self, timeout: float = TIMEOUT) -> dict[str, Any]:
        """The next frame not yet looked at."""
        while self._cursor >= len(self.received):
            if self.closed or await self._read_one(timeout) is None:
                raise AssertionError(f"connection closed; received {self.received}")
        frame = self.received[self._cursor]
        self._cursor += 1
        return frame

    async def expect(self, type_: str, timeout: float = TIMEOUT, **fields: Any) -> dict[str, Any]:
        """Skip frames until one of ``type_`` with ``fields``; fail after ``timeout``."""
        async with asyncio.timeout(timeout):
            while True:
                frame = await self.next(timeout)
                if frame.get("type") == type_ and all(frame.get(k) == v for k, v in fields.items()):
                    return frame

    async def events(self, chat: str, until: str, timeout: float = TIMEOUT) -> list[dict[str, Any]]:
        """Every frame about ``chat`` up to and including the first of type ``until``."""
        out = []
        async with asyncio.timeout(timeout):
            while True:
                frame = await self.next(timeout)
                if frame.get("chat") == chat:
                    out.append(frame)
                    if frame.get("type") == until:
                        return out

    async def start(self, chat: str, **fields: Any) -> None:
        await self.send({"type": "start", "chat": chat, **fields})

    async def close(self) -> None:
        await self.ws.close()


async def connect(session: aiohttp.ClientSession, url: str, token: str | None,
                  fmt: str | None = env.JSON) -> OcpClient:
    headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
    protocols = (fmt,) if fmt else ()
    ws = await session.ws_connect(url, headers=headers, protocols=protocols, heartbeat=None,
                                  max_msg_size=0)
    client = OcpClient(ws, ws.protocol or env.JSON)
    hello = await client.next()
    assert hello["type"] == "hello", hello
    return client
