"""Helpers for the Enhanced Chat simulator's tests: a raw guest and an SSE reader.

The :class:`Guest` is deliberately dumb: it sends exactly the headers and bodies a test asks
for, so each strictness rule can be broken on purpose. It is not bridged's client. The
:class:`EventReader` parses the stream by the SSE rules, byte for byte, with a timeout on
every read, and keeps the raw text so the wire format itself can be asserted on.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from typing import Any

import aiohttp

from bridged.simulators.messaging import ECHO_DEPLOYMENT, MessagingOptions

__all__ = [
    "API",
    "ORG",
    "ORG18",
    "STREAM",
    "Event",
    "EventReader",
    "Guest",
    "Response",
    "fast_options",
    "new_id",
    "text_body",
    "wait_until",
]

ORG = "00D000000000001"
ORG18 = ORG + "EAA"  # the case checksum of "00D000000000001"
API = "/iamessage/api/v2/"
STREAM = "/eventrouter/v1/sse"
TIMEOUT = 3.0


def fast_options(**overrides: Any) -> MessagingOptions:
    """Options with test timings: short delays and pings, same strictness."""
    values: dict[str, Any] = {
        "routing_delay_s": 0.01,
        "join_delay_s": 0.01,
        "reply_delay_s": 0.01,
        "queue_step_s": 0.01,
        "ping_interval_s": 5.0,
        "reap_interval_s": 0.05,
    }
    values.update(overrides)
    return MessagingOptions(**values)


def new_id() -> str:
    """A fresh lowercase UUID, as the sample app makes them."""
    return str(uuid.uuid4())


def text_body(text: str, message_id: str | None = None, deployment: str = ECHO_DEPLOYMENT,
              **extra: Any) -> dict[str, Any]:
    """A valid send-message body."""
    return {
        "message": {"id": message_id or new_id(), "messageType": "StaticContentMessage",
                    "staticContent": {"formatType": "Text", "text": text}},
        "esDeveloperName": deployment,
        **extra,
    }


class Response:
    """Status, headers and body of one answer, read completely."""

    def __init__(self, status: int, text: str, headers: Any) -> None:
        self.status = status
        self.text = text
        self.headers = headers

    def json(self) -> Any:
        """The body as JSON."""
        return json.loads(self.text)

    def __repr__(self) -> str:
        return f"<Response {self.status} {self.text[:300]!r}>"


class Event:
    """One parsed SSE event."""

    def __init__(self, event: str, data: str, event_id: str | None) -> None:
        self.event = event
        self.data = data
        self.id = event_id

    def json(self) -> Any:
        """``data`` as JSON."""
        return json.loads(self.data)

    @property
    def entry(self) -> dict[str, Any]:
        """``conversationEntry`` of the data."""
        entry: dict[str, Any] = self.json()["conversationEntry"]
        return entry

    @property
    def payload(self) -> dict[str, Any]:
        """``entryPayload``, parsed the second time (it is a JSON string)."""
        raw = self.entry["entryPayload"]
        assert isinstance(raw, str), raw
        payload: dict[str, Any] = json.loads(raw)
        return payload

    def __repr__(self) -> str:
        return f"<Event {self.event} id={self.id}>"


class EventReader:
    """Reads one open stream event by event; every read is bounded by a timeout."""

    def __init__(self, response: aiohttp.ClientResponse) -> None:
        self.response = response
        self.events: list[Event] = []
        self.raw = b""
        self.ended = False

    async def next(self, timeout: float = TIMEOUT, *, pings: bool = False) -> Event | None:
        """The next event (pings skipped unless asked for); None when the stream ended."""
        async with asyncio.timeout(timeout):
            while True:
                fields: dict[str, list[str]] = {}
                while True:
                    line = await self.response.content.readline()
                    if not line:
                        self.ended = True
                        return None
                    self.raw += line
                    text = line.decode().rstrip("\n").rstrip("\r")
                    if text == "":
                        break
                    name, _, value = text.partition(":")
                    fields.setdefault(name, []).append(value.removeprefix(" "))
                if not fields:
                    continue
                event = Event(fields.get("event", ["message"])[-1],
                              "\n".join(fields.get("data", [])),
                              fields["id"][-1] if "id" in fields else None)
                if event.event == "ping" and not pings:
                    continue
                self.events.append(event)
                return event

    async def until(self, name: str, timeout: float = TIMEOUT) -> list[Event]:
        """Read until an event ``name`` came; returns the events read by this call."""
        seen: list[Event] = []
        async with asyncio.timeout(timeout):
            while True:
                event = await self.next(timeout)
                if event is None:
                    raise AssertionError(f"stream ended before {name}: {seen}")
                seen.append(event)
                if event.event == name:
                    return seen

    async def take(self, count: int, timeout: float = TIMEOUT) -> list[Event]:
        """The next ``count`` events."""
        out = []
        for _ in range(count):
            event = await self.next(timeout)
            assert event is not None, f"stream ended after {out}"
            out.append(event)
        return out

    async def quiet(self, seconds: float) -> list[Event]:
        """Every event that arrives within ``seconds`` (expecting few or none)."""
        out: list[Event] = []
        try:
            async with asyncio.timeout(seconds):
                while True:
                    event = await self.next(seconds + 1)
                    if event is None:
                        return out
                    out.append(event)
        except TimeoutError:
            return out

    async def ends(self, timeout: float = TIMEOUT) -> list[Event]:
        """Read until the stream ends; the events read meanwhile."""
        out = []
        async with asyncio.timeout(timeout):
            while (event := await self.next(timeout)) is not None:
                out.append(event)
        return out

    def close(self) -> None:
        """Drop the connection."""
        self.response.close()


class Guest:
    """A raw Enhanced Chat guest over an aiohttp session against ``base_url``."""

    def __init__(self, http: aiohttp.ClientSession, base_url: str, *,
                 deployment: str = ECHO_DEPLOYMENT) -> None:
        self.http = http
        self.base_url = base_url
        self.deployment = deployment
        self.token: str | None = None
        self.last_event_id: str | None = None
        self.conversation_id: str | None = None
        self.readers: list[EventReader] = []

    def headers(self, **extra: str) -> dict[str, str]:
        """``Authorization`` with the current token, plus ``extra``."""
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        headers.update(extra)
        return headers

    async def request(self, method: str, path: str, *, headers: dict[str, str] | None = None,
                      json: Any = None, data: Any = None,
                      params: dict[str, str] | None = None) -> Response:
        """One request; ``path`` is under the host root."""
        async with asyncio.timeout(TIMEOUT):
            async with self.http.request(method, self.base_url + path,
                                         headers=self.headers() if headers is None else headers,
                                         json=json, data=data, params=params) as resp:
                return Response(resp.status, await resp.text(), resp.headers)

    async def get_token(self, **overrides: Any) -> Response:
        """The unauthenticated access token; on 200 it becomes the current token."""
        body: dict[str, Any] = {"orgId": ORG, "esDeveloperName": self.deployment,
                                "capabilitiesVersion": "1", "platform": "Web"}
        for name, value in overrides.items():
            if value is None:
                body.pop(name, None)
            else:
                body[name] = value
        resp = await self.request("POST", API + "authorization/unauthenticated/access-token",
                                  headers={}, json=body)
        if resp.status == 200:
            self.token = resp.json()["accessToken"]
            self.last_event_id = resp.json()["lastEventId"]
        return resp

    async def create(self, conversation_id: str | None = None, **extra: Any) -> Response:
        """Create a conversation (a fresh id unless given); on 2xx it becomes current."""
        cid = conversation_id or new_id()
        body = {"conversationId": cid, "esDeveloperName": self.deployment, **extra}
        resp = await self.request("POST", API + "conversation", json=body)
        if 200 <= resp.status < 300:
            self.conversation_id = cid
        return resp

    async def send(self, text: str, message_id: str | None = None, **extra: Any) -> Response:
        """Send a text message to the current conversation."""
        body = text_body(text, message_id, self.deployment, **extra)
        return await self.request("POST", f"{API}conversation/{self.conversation_id}/message",
                                  json=body)

    async def typing(self, started: bool = True) -> Response:
        """Send a typing indicator."""
        entry_type = "TypingStartedIndicator" if started else "TypingStoppedIndicator"
        return await self.request("POST", f"{API}conversation/{self.conversation_id}/entry",
                                  json={"entryType": entry_type, "id": new_id()})

    async def close(self) -> Response:
        """Close the current conversation (DELETE)."""
        return await self.request("DELETE", f"{API}conversation/{self.conversation_id}",
                                  params={"esDeveloperName": self.deployment})

    async def routing_status(self) -> str:
        """``routingStatus`` of the current conversation."""
        resp = await self.request("GET", f"{API}conversation/{self.conversation_id}")
        assert resp.status == 200, resp
        status: str = resp.json()["routingStatus"]
        return status

    def stream_headers(self, **extra: str) -> dict[str, str]:
        """The stream's headers as the sample app sends them (plus ``extra``)."""
        headers = self.headers(Accept="text/event-stream", **{"X-Org-Id": ORG})
        if self.last_event_id is not None:
            headers["Last-Event-Id"] = self.last_event_id
        headers.update(extra)
        return headers

    async def open_stream(self, headers: dict[str, str] | None = None,
                          params: dict[str, str] | None = None) -> EventReader | Response:
        """Open the stream: an :class:`EventReader` on 200, else the full response."""
        resp = await asyncio.wait_for(self.http.get(
            self.base_url + STREAM, headers=self.stream_headers() if headers is None else headers,
            params=params), TIMEOUT)
        if resp.status != 200:
            text = await resp.text()
            resp.release()
            return Response(resp.status, text, resp.headers)
        reader = EventReader(resp)
        self.readers.append(reader)
        return reader

    async def stream(self, **extra: str) -> EventReader:
        """Open the stream and insist on a 200."""
        reader = await self.open_stream(self.stream_headers(**extra))
        assert isinstance(reader, EventReader), reader
        return reader

    async def start(self, *, stream: bool = True) -> EventReader | None:
        """Token, stream (unless ``stream`` is False), create: the safe order of 7.2."""
        assert (await self.get_token()).status == 200
        reader = await self.stream() if stream else None
        resp = await self.create()
        assert resp.status == 201, resp
        return reader

    def close_streams(self) -> None:
        """Drop every stream this guest opened."""
        for reader in self.readers:
            reader.close()


async def wait_until(predicate: Any, timeout: float = TIMEOUT) -> None:
    """Wait (bounded) until ``predicate()`` is true."""
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(0.01)
