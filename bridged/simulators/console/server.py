"""The agent console's HTTP side: its page, its JSON API and its live stream (SSE).

Routes, under ``/console/`` of the app it is mounted on::

    GET  /console/                          the page (static HTML, no build step, no CDN)
    GET  /console/static/{console.js,console.css}
    GET  /console/api/conversations         {"backends": [{key, title}], "conversations": [...]}
    POST /console/api/{backend}/{id}/{action}
         accept {"agent"}  say {"text"}  typing {"active"}  transfer {"agent"}  end {}
    GET  /console/events                    text/event-stream

Every action is checked against the conversation's state first (accept a waiting chat; say,
type, transfer and end an active one) and answered with the conversation as it is then, or
``{"error"}`` naming the field or the state: 400 bad body, 404 unknown backend, chat or
action, 409 wrong state (or refused by the simulator), 415 a body that is not
``application/json`` (which keeps other web pages from driving the console: a JSON POST to
another origin needs a CORS preflight, and the console allows none).

The stream sends ``snapshot`` (what ``api/conversations`` answers) once, then
``conversation`` events ``{"backend", "id", "conversation"}`` (``conversation`` null once the
simulator forgot it), and a comment every :data:`PING_S` seconds. Each open page has a set
of the conversations that changed since it was last written to, not a queue: a slow page
gets each conversation's latest state once, however much happened meanwhile. The set is
bounded (:data:`DIRTY_MAX`; past it, the page gets a fresh snapshot instead), and so is the
number of pages (:data:`STREAMS_MAX`).
"""

from __future__ import annotations

import asyncio
import functools
import importlib.resources
import logging
from typing import Any

import msgspec
from aiohttp import web

from .backend import ACTIVE, WAITING, ActionRefused, ConsoleBackend, Conversation

__all__ = ["CONSOLE_PATH", "DIRTY_MAX", "NAME_MAX", "PING_S", "STREAMS_MAX", "TEXT_MAX",
           "AgentConsole"]

logger = logging.getLogger("bridged.simulators.console")

CONSOLE_PATH = "/console/"
PING_S = 15.0
STREAMS_MAX = 32
DIRTY_MAX = 10_000
NAME_MAX = 80
TEXT_MAX = 10_000

_STATIC = {"console.js": "text/javascript", "console.css": "text/css"}


class _AgentBody(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    agent: str


class _SayBody(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    text: str


class _TypingBody(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    active: bool


class _EmptyBody(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    pass


class _Stream:
    """One open page: what changed since it was last written to."""

    __slots__ = ("dirty", "resync", "wake")

    def __init__(self) -> None:
        self.dirty: dict[tuple[str, str], None] = {}  # ordered set
        self.resync = False
        self.wake = asyncio.Event()

    def changed(self, key: tuple[str, str]) -> None:
        if not self.resync:
            if len(self.dirty) < DIRTY_MAX:
                self.dirty[key] = None
            else:
                self.dirty.clear()
                self.resync = True
        self.wake.set()


class AgentConsole:
    """The agent console for any number of simulators (:class:`~.backend.ConsoleBackend`).

    Mount it on the aiohttp app of the process's simulator before that app starts
    (:meth:`mount`); backends can be added before or after (:meth:`add`).
    """

    def __init__(self) -> None:
        self.backends: dict[str, ConsoleBackend] = {}
        self._streams: set[_Stream] = set()
        self._closing = False

    def add(self, backend: ConsoleBackend) -> None:
        """Show the chats of ``backend`` too, live."""
        if backend.key in self.backends:
            raise ValueError(f"a console backend named {backend.key!r} is already added")
        self.backends[backend.key] = backend
        key = backend.key
        backend.watch(lambda id: self._changed(key, id))
        self._changed_all()

    def mount(self, app: web.Application, prefix: str = CONSOLE_PATH) -> None:
        """Add the console's routes under ``prefix`` to ``app`` (before it starts)."""
        router = app.router
        router.add_get(prefix.rstrip("/"), self._redirect)
        router.add_get(prefix, self._page)
        router.add_get(prefix + "static/{name}", self._static)
        router.add_get(prefix + "api/conversations", self._snapshot)
        router.add_post(prefix + "api/{backend}/{id}/{action}", self._action)
        router.add_get(prefix + "events", self._events)
        app.on_shutdown.append(self._on_shutdown)

    # ----------------------------------------------------------------------------------
    # Reading

    def snapshot(self) -> dict[str, Any]:
        """Every backend and every conversation, as the page starts from."""
        return {
            "backends": [{"key": b.key, "title": b.title} for b in self.backends.values()],
            "conversations": [
                self._entry(key, conversation)
                for key, backend in self.backends.items()
                for conversation in backend.conversations()
            ],
        }

    @staticmethod
    def _entry(backend: str, conversation: Conversation) -> dict[str, Any]:
        entry: dict[str, Any] = msgspec.to_builtins(conversation)
        entry["backend"] = backend
        return entry

    async def _redirect(self, request: web.Request) -> web.StreamResponse:
        raise web.HTTPFound(request.path + "/")

    async def _page(self, request: web.Request) -> web.StreamResponse:
        return web.Response(body=_resource("console.html"), content_type="text/html",
                            charset="utf-8", headers={"Cache-Control": "no-cache"})

    async def _static(self, request: web.Request) -> web.StreamResponse:
        name = request.match_info["name"]
        if name not in _STATIC:
            raise web.HTTPNotFound(text=f"no console file {name!r}")
        return web.Response(body=_resource(name), content_type=_STATIC[name], charset="utf-8",
                            headers={"Cache-Control": "no-cache"})

    async def _snapshot(self, request: web.Request) -> web.StreamResponse:
        return _json(self.snapshot())

    # ----------------------------------------------------------------------------------
    # Acting

    async def _action(self, request: web.Request) -> web.StreamResponse:
        key, id, action = (request.match_info[k] for k in ("backend", "id", "action"))
        if request.content_type != "application/json":
            # Another web page can send a "simple" POST (text/plain, a form) to 127.0.0.1
            # without asking; a JSON one needs a CORS preflight, which is never allowed.
            return _json({"error": f"{action}: the body must be application/json, not "
                                   f"{request.content_type!r}"}, status=415)
        raw = await request.read()
        try:
            conversation = self.act(key, id, action, raw or b"{}")
        except ActionRefused as exc:
            return _json({"error": str(exc)}, status=exc.status)
        except msgspec.ValidationError as exc:
            return _json({"error": f"{action}: {exc}"}, status=400)
        except msgspec.DecodeError as exc:
            return _json({"error": f"{action}: the body is not JSON ({exc})"}, status=400)
        return _json({"conversation": self._entry(key, conversation)})

    def act(self, key: str, id: str, action: str, body: bytes) -> Conversation:
        """Check and carry out one action (JSON ``body``); the conversation afterwards.

        Raises:
            ActionRefused: Refused here or by the backend (``status`` says how).
            msgspec.DecodeError: The body is not JSON, or misses or mistypes a field
                (``msgspec.ValidationError``).
        """
        backend = self.backends.get(key)
        if backend is None:
            raise ActionRefused(f"no console backend {key!r}", 404)
        conversation = backend.conversation(id)
        if conversation is None:
            raise ActionRefused(f"no conversation {id!r} in {backend.title}", 404)
        match action:
            case "accept":
                agent = _name(msgspec.json.decode(body, type=_AgentBody).agent)
                _need(conversation, WAITING, "accept")
                backend.accept(id, agent)
            case "say":
                text = msgspec.json.decode(body, type=_SayBody).text
                if not text.strip() or len(text) > TEXT_MAX:
                    raise ActionRefused(f"text: must be 1 to {TEXT_MAX} characters, not blank", 400)
                _need(conversation, ACTIVE, "say")
                backend.say(id, text)
            case "typing":
                active = msgspec.json.decode(body, type=_TypingBody).active
                _need(conversation, ACTIVE, "typing")
                backend.typing(id, active)
            case "transfer":
                agent = _name(msgspec.json.decode(body, type=_AgentBody).agent)
                _need(conversation, ACTIVE, "transfer")
                if agent == conversation.agent:
                    raise ActionRefused(f"agent: {agent!r} is already on the chat", 400)
                backend.transfer(id, agent)
            case "end":
                msgspec.json.decode(body, type=_EmptyBody)
                _need(conversation, ACTIVE, "end")
                backend.end(id)
            case _:
                raise ActionRefused(
                    f"no action {action!r} (accept, say, typing, transfer, end)", 404)
        logger.info("console %s: %s %s", backend.key, action, id)
        after = backend.conversation(id)
        return after if after is not None else conversation

    # ----------------------------------------------------------------------------------
    # The live stream

    def _changed(self, backend: str, id: str) -> None:
        for stream in self._streams:
            stream.changed((backend, id))

    def _changed_all(self) -> None:
        for stream in self._streams:
            stream.resync = True
            stream.dirty.clear()
            stream.wake.set()

    async def _events(self, request: web.Request) -> web.StreamResponse:
        if self._closing:
            raise web.HTTPServiceUnavailable(text="the console is stopping")
        if len(self._streams) >= STREAMS_MAX:
            raise web.HTTPServiceUnavailable(
                text=f"too many console pages open ({STREAMS_MAX}); close one")
        response = web.StreamResponse(headers={
            "Content-Type": "text/event-stream", "Cache-Control": "no-cache",
            "X-Accel-Buffering": "no"})
        stream = _Stream()
        self._streams.add(stream)
        try:
            await response.prepare(request)
            await response.write(_event("snapshot", self.snapshot()))
            while not self._closing:
                try:
                    async with asyncio.timeout(PING_S):
                        await stream.wake.wait()
                except TimeoutError:
                    await response.write(b": ping\n\n")
                    continue
                stream.wake.clear()
                await response.write(self._pending(stream))
        except ConnectionResetError:  # the page went away
            pass
        finally:
            self._streams.discard(stream)
        return response

    def _pending(self, stream: _Stream) -> bytes:
        """What ``stream`` has not been sent yet, as SSE events (and forget it)."""
        if stream.resync:
            stream.resync = False
            stream.dirty.clear()
            return _event("snapshot", self.snapshot())
        chunks = []
        for key, id in stream.dirty:
            backend = self.backends.get(key)
            conversation = backend.conversation(id) if backend is not None else None
            payload = {"backend": key, "id": id,
                       "conversation": None if conversation is None
                       else self._entry(key, conversation)}
            chunks.append(_event("conversation", payload))
        stream.dirty.clear()
        return b"".join(chunks)

    async def _on_shutdown(self, app: web.Application) -> None:
        # End every stream now, so the server's graceful shutdown does not wait for them.
        self._closing = True
        for stream in self._streams:
            stream.wake.set()


def _need(conversation: Conversation, state: str, action: str) -> None:
    if conversation.state == state:
        return
    if conversation.state == WAITING:
        why = "it waits to be accepted"
    elif conversation.state == ACTIVE:
        why = f"{conversation.agent} already accepted it"
    else:
        why = f"it is over ({conversation.ended})"
    raise ActionRefused(f"cannot {action} this chat: {why}", 409)


def _name(raw: str) -> str:
    name = raw.strip()
    if not name or len(name) > NAME_MAX or not name.isprintable():
        raise ActionRefused(f"agent: must be a name of 1 to {NAME_MAX} printable characters", 400)
    return name


def _event(kind: str, payload: Any) -> bytes:
    # Compact JSON has no raw newline, so one data line carries it.
    return b"event: %s\ndata: %s\n\n" % (kind.encode(), msgspec.json.encode(payload))


def _json(payload: Any, status: int = 200) -> web.Response:
    return web.Response(status=status, body=msgspec.json.encode(payload),
                        content_type="application/json")


@functools.cache
def _resource(name: str) -> bytes:
    return importlib.resources.files(__package__).joinpath("static", name).read_bytes()

