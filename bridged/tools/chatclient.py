"""A terminal chat client for the OCP side: type as the visitor, see the agent.

It speaks PROTOCOL.md like OCP would: it connects with a bearer token, starts a chat,
sends each line typed as a ``message``, acknowledges every event, and, when the connection
drops, reconnects and sends ``attach`` with the last ``seq`` it saw, so nothing is lost.

Lines starting with ``/`` are commands: ``/end`` ends the chat, ``/typing`` sends a typing
indicator, ``/quit`` leaves without ending (the chat stays alive, detached).
"""

from __future__ import annotations

__all__ = ["ChatClient", "run_chat_client"]

import asyncio
import contextlib
import itertools
import os
import stat
import sys
from collections.abc import AsyncIterator
from typing import Any, TextIO

import aiohttp
import msgspec

from bridged.ocp import envelopes as env

MAX_RECONNECTS = 10


class ChatClient:
    """One visitor chat through bridged.

    Args:
        url: bridged's WebSocket URL (``ws://HOST:PORT/v1/chat``).
        token: a bearer token from ``server.tokens``.
        chat_id: the chat's id.
        start: extra fields of the ``start`` envelope (``profile``, ``ocpvars``, ...).
        out: where the conversation is printed.
    """

    def __init__(self, url: str, token: str, chat_id: str, start: dict[str, Any],
                 out: TextIO = sys.stdout) -> None:
        self.url = url
        self.token = token
        self.chat_id = chat_id
        self.start = start
        self.out = out
        self.last_seq = 0
        self.ended: dict[str, Any] | None = None
        self._ids = itertools.count(1)
        self._ws: aiohttp.ClientWebSocketResponse | None = None
        self._agent = "Agent"
        self._ending = False
        self._ended = asyncio.Event()

    def _print(self, text: str) -> None:
        self.out.write(text + "\n")
        self.out.flush()

    async def send(self, envelope: dict[str, Any]) -> None:
        """Send one envelope, if connected (a line typed while reconnecting is refused)."""
        if self._ws is None or self._ws.closed:
            self._print("! not connected right now; try again in a moment")
            return
        await self._ws.send_str(msgspec.json.encode(envelope).decode())

    async def say(self, text: str) -> None:
        """Send the visitor's ``text`` as a message with a new id."""
        await self.send({"type": "message", "chat": self.chat_id, "id": f"m{next(self._ids)}",
                         "text": text})

    async def command(self, line: str) -> bool:
        """Act on one typed line; ``False`` when the client should stop."""
        line = line.rstrip("\r\n")
        if not line.strip():
            return True
        if line == "/quit":
            return False
        if line == "/end":
            self._ending = True
            await self.send({"type": "end", "chat": self.chat_id})
        elif line == "/typing":
            await self.send({"type": "typing", "chat": self.chat_id, "active": True})
        else:
            await self.say(line)
        return True

    def show(self, event: dict[str, Any]) -> None:
        """Print an event the way a visitor would read it."""
        kind = event.get("type")
        if kind == "hello":
            self._print(f"* connected to bridged node {event.get('node')}")
        elif kind == "queued":
            self._print(f"* {event.get('text') or 'waiting for an agent'}")
        elif kind == "agent_joined":
            self._agent = event.get("agent") or self._agent
            self._print(f"* {self._agent} joined the chat")
        elif kind == "agent_message":
            self._print(f"{event.get('agent') or self._agent}: {event.get('text')}")
        elif kind == "agent_typing" and event.get("active"):
            self._print(f"  ({self._agent} is typing...)")
        elif kind == "transferred":
            self._agent = event.get("agent") or self._agent
            self._print(f"* the chat was transferred to {self._agent}")
        elif kind == "ended":
            detail = f" ({event['detail']})" if event.get("detail") else ""
            self._print(f"* chat ended [{event.get('reason')}]: {event.get('text')}{detail}")
        elif kind == "error":
            self._print(f"! {event.get('code')}: {event.get('detail')}")

    async def run(self, lines: AsyncIterator[str]) -> int:
        """Chat until it ends or the input ends; returns an exit code."""
        session = aiohttp.ClientSession()
        reader = asyncio.create_task(self._pump_input(lines), name="chat-input")
        try:
            for attempt in range(MAX_RECONNECTS + 1):
                if attempt:
                    await asyncio.sleep(min(5.0, 0.5 * attempt))
                    self._print("* reconnecting...")
                try:
                    done = await self._connection(session, first=attempt == 0)
                except aiohttp.WSServerHandshakeError as exc:
                    self._print(f"! bridged refused the connection: HTTP {exc.status}")
                    return 2
                except (aiohttp.ClientError, OSError) as exc:
                    self._print(f"! cannot reach bridged: {exc}")
                    continue
                if done or reader.done():
                    break
            return 0 if self.ended is not None or reader.done() else 1
        finally:
            reader.cancel()
            await asyncio.gather(reader, return_exceptions=True)
            if self._ws is not None:
                await self._ws.close()
            await session.close()

    async def _connection(self, session: aiohttp.ClientSession, first: bool) -> bool:
        """One connection; ``True`` when the chat is over or the visitor quit."""
        async with session.ws_connect(self.url, protocols=(env.JSON,), heartbeat=20,
                                      headers={"Authorization": f"Bearer {self.token}"}) as ws:
            self._ws = ws
            if first:
                await self.send({"type": "start", "chat": self.chat_id, **self.start})
            else:
                await self.send({"type": "attach", "chat": self.chat_id, "after": self.last_seq})
            async for msg in ws:
                if msg.type not in (aiohttp.WSMsgType.TEXT, aiohttp.WSMsgType.BINARY):
                    break
                event = msgspec.json.decode(msg.data)
                seq = event.get("seq")
                if isinstance(seq, int):
                    if seq <= self.last_seq:
                        continue  # already shown before a reconnect
                    self.last_seq = seq
                self.show(event)
                if isinstance(seq, int):
                    await self.send({"type": "ack", "chat": self.chat_id, "seq": seq})
                if event.get("type") == "ended" and event.get("chat") == self.chat_id:
                    self.ended = event
                    self._ended.set()
                    return True
                if event.get("type") == "error" and event.get("ref") == "start":
                    return True
            return self._quit

    _quit = False

    async def _pump_input(self, lines: AsyncIterator[str]) -> None:
        async for line in lines:
            if not await self.command(line):
                break
        if self._ending:
            # The input ended right after /end: see how the chat ends before leaving.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(10):
                    await self._ended.wait()
        self._quit = True
        if self._ws is not None:
            await self._ws.close()


async def stdin_lines() -> AsyncIterator[str]:
    """Lines typed on stdin, read without a thread (a thread would block the exit)."""
    if stat.S_ISREG(os.fstat(sys.stdin.fileno()).st_mode):
        for line in sys.stdin:  # a file redirected in: epoll cannot watch it
            yield line
        return
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    while line := await reader.readline():
        yield line.decode(errors="replace")


async def run_chat_client(url: str, token: str, chat_id: str, start: dict[str, Any]) -> int:
    """Chat from the terminal; see the module docstring."""
    client = ChatClient(url, token, chat_id, start)
    print("Type a message and press Enter. /end ends the chat, /quit leaves it.", flush=True)
    return await client.run(stdin_lines())
