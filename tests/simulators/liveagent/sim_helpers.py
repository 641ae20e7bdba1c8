"""Helpers for the simulator's tests: a raw visitor and valid request bodies.

The :class:`Visitor` here is deliberately dumb: it sends exactly the headers and bodies a
test asks for, so each strictness rule can be broken on purpose. It is not bridged's client.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any

from bridged.simulators.liveagent import ECHO_BUTTON, SimulatorOptions

__all__ = [
    "BASE",
    "DEPLOYMENT",
    "ORG",
    "Response",
    "Visitor",
    "fast_options",
    "init_body",
    "types",
    "wait_until",
]

ORG = "00D000000000001"
DEPLOYMENT = "572000000000001"
BASE = "/chat/rest/"


def fast_options(**overrides: Any) -> SimulatorOptions:
    """Options with test timings: short holds and delays, same strictness."""
    values: dict[str, Any] = {
        "hold_s": 0.2,
        "client_poll_timeout": 3,
        "join_delay_s": 0.02,
        "reply_delay_s": 0.02,
        "queue_step_s": 0.02,
        "reap_interval_s": 0.05,
    }
    values.update(overrides)
    return SimulatorOptions(**values)


def init_body(session_id: str, button: str = ECHO_BUTTON, **overrides: Any) -> dict[str, Any]:
    """A valid ChasitorInit body; ``overrides`` replace or add fields (None removes one)."""
    body: dict[str, Any] = {
        "organizationId": ORG,
        "deploymentId": DEPLOYMENT,
        "buttonId": button,
        "sessionId": session_id,
        "userAgent": "bridged-tests",
        "language": "en-US",
        "screenResolution": "1920x1080",
        "visitorName": "Vera Visitor",
        "prechatDetails": [
            {
                "label": "Email",
                "value": "vera@example.com",
                "transcriptFields": ["Email__c"],
                "displayToAgent": True,
            }
        ],
        "prechatEntities": [
            {
                "entityName": "Contact",
                "saveToTranscript": "ContactId",
                "entityFieldsMaps": [
                    {
                        "fieldName": "Email",
                        "label": "Email",
                        "doFind": True,
                        "isExactMatch": True,
                        "doCreate": False,
                    }
                ],
            }
        ],
        "receiveQueueUpdates": True,
        "isPost": True,
    }
    for name, value in overrides.items():
        if value is None:
            body.pop(name, None)
        else:
            body[name] = value
    return body


class Response:
    """Status, headers and body of one answer, read completely."""

    def __init__(self, status: int, text: str, headers: Any) -> None:
        self.status = status
        self.text = text
        self.headers = headers

    def json(self) -> Any:
        return json.loads(self.text)

    def __repr__(self) -> str:
        return f"<Response {self.status} {self.text[:200]!r}>"


class Visitor:
    """A raw Live Agent visitor over any aiohttp client whose paths start at the host root."""

    def __init__(self, client: Any, *, version: str = "49") -> None:
        self.client = client
        self.version = version
        self.id: str | None = None
        self.key: str | None = None
        self.affinity: str | None = None
        self.seq = 0
        self.ack = -1
        self.messages: list[dict[str, Any]] = []

    def headers(self, *, seq: int | None = None, **extra: str) -> dict[str, str]:
        headers = {"X-LIVEAGENT-API-VERSION": self.version}
        if self.affinity is not None:
            headers["X-LIVEAGENT-AFFINITY"] = self.affinity
        if self.key is not None:
            headers["X-LIVEAGENT-SESSION-KEY"] = self.key
        if seq is not None:
            headers["X-LIVEAGENT-SEQUENCE"] = str(seq)
        headers.update(extra)
        return headers

    async def request(
        self,
        method: str,
        path: str,
        *,
        headers: dict[str, str] | None = None,
        json: Any = None,
        data: Any = None,
        params: dict[str, str] | None = None,
    ) -> Response:
        async with self.client.request(
            method, BASE + path, headers=headers, json=json, data=data, params=params
        ) as resp:
            return Response(resp.status, await resp.text(), resp.headers)

    async def start(self) -> dict[str, Any]:
        resp = await self.request(
            "GET",
            "System/SessionId",
            headers={"X-LIVEAGENT-API-VERSION": self.version, "X-LIVEAGENT-AFFINITY": "null"},
        )
        assert resp.status == 200, resp
        payload = resp.json()
        self.id, self.key, self.affinity = payload["id"], payload["key"], payload["affinityToken"]
        return payload

    async def init(self, button: str = ECHO_BUTTON, **overrides: Any) -> Response:
        assert self.id is not None
        return await self.post("ChasitorInit", init_body(self.id, button, **overrides))

    async def post(
        self, resource: str, body: Any = None, *, seq: int | None = None, **headers: str
    ) -> Response:
        """POST with the next sequence number (or ``seq``); on a 200 it counts as sent."""
        number = self.seq + 1 if seq is None else seq
        resp = await self.request(
            "POST", f"Chasitor/{resource}", headers=self.headers(seq=number, **headers), json=body
        )
        if resp.status == 200 and number == self.seq + 1:
            self.seq = number
        return resp

    async def poll(self, ack: int | None = None, **headers: str) -> Response:
        """One Messages poll (with the tracked ack unless given); a 200 moves the ack."""
        params = {"ack": str(self.ack if ack is None else ack)}
        resp = await self.request(
            "GET", "System/Messages", headers=self.headers(**headers), params=params
        )
        if resp.status == 200:
            payload = resp.json()
            self.ack = payload["sequence"]
            self.messages.extend(payload["messages"])
        return resp

    async def poll_until(self, message_type: str, *, max_polls: int = 20) -> list[dict[str, Any]]:
        """Poll until a message of that type arrived; returns every message seen so far."""
        for _ in range(max_polls):
            if any(m["type"] == message_type for m in self.messages):
                return self.messages
            resp = await self.poll()
            assert resp.status in (200, 204), resp
        raise AssertionError(f"no {message_type} after {max_polls} polls: {self.messages}")

    async def join(self, button: str = ECHO_BUTTON, **overrides: Any) -> list[dict[str, Any]]:
        """SessionId, ChasitorInit, then poll until ChatEstablished."""
        await self.start()
        resp = await self.init(button, **overrides)
        assert resp.status == 200, resp
        return await self.poll_until("ChatEstablished")


def types(messages: list[dict[str, Any]]) -> list[str]:
    return [m["type"] for m in messages]



async def wait_until(predicate: Callable[[], bool], timeout: float = 2.0) -> None:
    """Wait (bounded) until ``predicate()`` is true."""
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(0.01)
