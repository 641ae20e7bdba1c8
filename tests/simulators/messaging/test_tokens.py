"""Access tokens: their shape, lifetime, continuation, and the token rate limit."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from bridged.simulators.messaging import MANUAL_DEPLOYMENT, Simulator
from bridged.simulators.messaging.tokens import decode_part
from tests.simulators.messaging.helpers import API, ORG, ORG18, wait_until


def claims(token: str) -> dict[str, Any]:
    header, payload, signature = token.split(".")
    assert signature and "=" not in token
    assert decode_part(header)["typ"] == "JWT"
    result: dict[str, Any] = decode_part(payload)
    return result


async def test_a_token_is_a_jwt_with_the_observed_claims(guest: Any) -> None:
    visitor = guest()
    before = time.time()
    await visitor.get_token(capabilitiesVersion="248")
    assert visitor.token is not None
    body = claims(visitor.token)
    assert body["orgId"] == ORG and len(body["orgId"]) == 15
    assert body["sub"].startswith("v2/iamessage/UNAUTH/NA/uid:")
    assert body["exp"] - body["iat"] in (21_600, 21_601)
    assert body["iat"] >= int(before)
    assert body["esDeploymentType"] == "API" and body["platform"] == "Web"
    assert body["capabilitiesVersion"] == "248"
    assert {"clientId", "jwtId", "deviceId", "channelAddId", "aud", "iss", "scope",
            "evtKey", "apiVersion"} <= set(body)


async def test_18_character_org_still_gives_a_15_character_claim(guest: Any) -> None:
    visitor = guest()
    assert (await visitor.get_token(orgId=ORG18)).status == 200
    assert visitor.token is not None
    assert claims(visitor.token)["orgId"] == ORG


async def test_an_expired_token_is_401_jwt_is_expired(make_sim: Any,
                                                      guest: Any) -> None:
    sim = await make_sim(token_lifetime_s=0.3)
    visitor = guest(MANUAL_DEPLOYMENT, sim)
    await visitor.start(stream=False)
    assert (await visitor.send("in time")).status == 202
    await asyncio.sleep(0.35)
    resp = await visitor.send("too late")
    assert resp.status == 401
    assert resp.json() == {"message": "Jwt is expired", "errorCode": "UNAUTHORIZED"}
    resp = await visitor.request("GET", API + "authorization/continuation-access-token")
    assert resp.json()["message"] == "Jwt is expired"


async def test_an_expired_token_is_still_expired_after_it_was_reaped(
    make_sim: Any, guest: Any
) -> None:
    sim = await make_sim(token_lifetime_s=0.1, closed_retention_s=0.05)
    visitor = guest(simulator=sim)
    await visitor.get_token()
    await wait_until(lambda: len(sim.tokens) == 0)
    resp = await visitor.request("GET", API + "conversation/list")
    assert resp.json()["message"] == "Jwt is expired"


async def test_continuation_keeps_the_subject_and_expiry(guest: Any, sim: Simulator) -> None:
    visitor = guest(MANUAL_DEPLOYMENT)
    reader = await visitor.start()
    assert reader is not None and visitor.token is not None
    first = claims(visitor.token)
    await reader.until("CONVERSATION_ROUTING_RESULT")
    resp = await visitor.request("GET", API + "authorization/continuation-access-token")
    assert resp.status == 200
    body = resp.json()
    assert set(body) == {"accessToken", "lastEventId"}
    assert body["lastEventId"] == reader.events[-1].id
    second = claims(body["accessToken"])
    assert second["sub"] == first["sub"] and second["exp"] == first["exp"]
    assert second["clientId"] != first["clientId"] and second["jwtId"] != first["jwtId"]
    visitor.token = body["accessToken"]
    assert (await visitor.send("still mine")).status == 202


async def test_token_requests_are_limited_per_org(make_sim: Any,
                                                  guest: Any) -> None:
    sim = await make_sim(tokens_per_window=3, token_window_s=0.4)
    visitor = guest(simulator=sim)
    assert [(await visitor.get_token()).status for _ in range(2)] == [200, 200]
    # A continuation token counts too.
    resp = await visitor.request("GET", API + "authorization/continuation-access-token")
    assert resp.status == 200
    resp = await visitor.get_token()
    assert resp.status == 429 and resp.json()["errorCode"] == "TOO_MANY_REQUESTS"
    assert "Retry-After" not in resp.headers
    await asyncio.sleep(0.45)
    assert (await visitor.get_token()).status == 200


async def test_retry_after_when_switched_on(make_sim: Any, guest: Any) -> None:
    sim = await make_sim(tokens_per_window=1, token_window_s=30, retry_after_s=1)
    visitor = guest(simulator=sim)
    await visitor.get_token()
    resp = await visitor.get_token()
    assert resp.status == 429 and int(resp.headers["Retry-After"]) >= 29


async def test_the_token_book_is_bounded(make_sim: Any, guest: Any) -> None:
    sim = await make_sim(max_tokens=2)
    visitor = guest(simulator=sim)
    assert [(await visitor.get_token()).status for _ in range(3)] == [200, 200, 500]
