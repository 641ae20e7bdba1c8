"""Bad actors and bad input get nowhere: limits, TLS, secrets out of logs, fuzzed envelopes."""

from __future__ import annotations

import asyncio
import logging
import ssl
import subprocess
from pathlib import Path
from typing import Any

import aiohttp
import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bridged.ops.daemon import Daemon
from bridged.simulators.liveagent import Simulator
from tests.conftest import TOKEN, bridged_config, running_bridged
from tests.ocp_client import OcpClient, connect


async def test_too_many_envelopes_get_busy_then_the_connection_is_closed(
        sim: Simulator, tmp_path: Path, http: aiohttp.ClientSession) -> None:
    async with running_bridged(bridged_config(sim, tmp_path, max_envelopes_per_s=5)) as daemon:
        client = await connect(http, daemon.url, TOKEN)
        for _ in range(10):  # the burst: twice the rate
            await client.send({"type": "ack", "chat": "none", "seq": 1})
        await client.send({"type": "ack", "chat": "none", "seq": 1})
        codes = [(await client.expect("error"))["code"] for _ in range(11)]
        assert codes == ["unknown_chat"] * 10 + ["busy"]
        for _ in range(11):
            await client.send({"type": "ack", "chat": "none", "seq": 1})
        msg = await client.ws.receive(timeout=5)
        while msg.type not in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED):
            msg = await client.ws.receive(timeout=5)
        assert client.ws.close_code == 1008


async def test_chats_per_connection_are_capped(
        sim: Simulator, tmp_path: Path, http: aiohttp.ClientSession) -> None:
    config = bridged_config(sim, tmp_path, max_chats_per_connection=2)
    async with running_bridged(config) as daemon:
        client = await connect(http, daemon.url, TOKEN)
        for chat in ("a", "b", "c"):
            await client.start(chat, profile="echo")
        error = await client.expect("error")
        assert (error["code"], error["chat"]) == ("busy", "c")
        other = await connect(http, daemon.url, TOKEN)
        await other.start("c", profile="echo")
        assert (await other.expect("queued"))["chat"] == "c"


async def test_tls_listener(sim: Simulator, tmp_path: Path, http: aiohttp.ClientSession) -> None:
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                    "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
                    "-keyout", str(key), "-out", str(cert)], check=True, capture_output=True)
    config = bridged_config(sim, tmp_path, tls_cert=str(cert), tls_key=str(key))
    async with running_bridged(config) as daemon:
        assert daemon.url.startswith("wss://")
        context = ssl.create_default_context(cafile=str(cert))
        ws = await http.ws_connect(daemon.url, ssl=context,
                                   headers={"Authorization": f"Bearer {TOKEN}"})
        hello = msgspec.json.decode((await ws.receive(timeout=5)).data)
        assert hello["type"] == "hello"
        await ws.close()
        with pytest.raises(aiohttp.ClientConnectorCertificateError):
            await http.ws_connect(daemon.url, headers={"Authorization": f"Bearer {TOKEN}"})


async def test_no_token_or_session_key_in_any_log_line(
        sim: Simulator, bridged: Daemon, http: aiohttp.ClientSession,
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    client = await connect(http, bridged.url, TOKEN)
    await client.start("s-1", profile="echo")
    await client.expect("agent_joined")
    await client.send({"type": "message", "chat": "s-1", "id": "m", "text": "x"})
    await client.expect("agent_message")
    with pytest.raises(aiohttp.WSServerHandshakeError):
        await http.ws_connect(bridged.url, headers={"Authorization": "Bearer wrong-token-1"})
    (session,) = sim.sessions.values()
    logged = " ".join(repr(record.__dict__) for record in caplog.records)
    assert "chat_started" in logged
    for secret in (TOKEN, "wrong-token-1", session.key, session.key.split("!")[1]):
        assert secret not in logged


# --- fuzzing ---------------------------------------------------------------------------

TYPES = ["start", "message", "typing", "end", "attach", "ack", "hello", "dance", ""]
scalars = st.one_of(st.none(), st.booleans(), st.integers(-5, 10**12),
                    st.text(max_size=40), st.floats(allow_nan=False))
values = st.recursive(scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=10), inner, max_size=4)),
    max_leaves=12)
envelopes = st.fixed_dictionaries(
    {"type": st.sampled_from(TYPES)},
    optional={"chat": st.one_of(st.sampled_from(["fz", "victim", "x" * 129, "a b"]), values),
              "id": st.one_of(st.text(max_size=70), values), "text": values,
              "profile": st.one_of(st.sampled_from(["echo", "absent"]), values),
              "config": values, "ocpvars": values, "after": values, "seq": values,
              "active": values})
frames = st.one_of(envelopes.map(lambda e: msgspec.json.encode(e).decode()),
                   st.text(max_size=200), st.binary(max_size=200))


@settings(max_examples=150, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(batch=st.lists(frames, min_size=1, max_size=8))
def test_random_envelopes_get_answers_and_never_disturb_another_chat(
        fuzz_target: dict[str, Any], batch: list[str | bytes]) -> None:
    loop: asyncio.AbstractEventLoop = fuzz_target["loop"]
    loop.run_until_complete(_throw(fuzz_target, batch))


VALID_TYPES = {"start", "message", "typing", "end", "attach", "ack"}


def plainly_bad(frame: str | bytes) -> bool:
    """An oracle independent of bridged's decoder: frames that cannot be an envelope."""
    if isinstance(frame, bytes):
        return True  # binary on a JSON connection
    try:
        value = msgspec.json.decode(frame)
    except msgspec.DecodeError:
        return True
    return not isinstance(value, dict) or value.get("type") not in VALID_TYPES


async def _throw(target: dict[str, Any], batch: list[str | bytes]) -> None:
    fuzzer: OcpClient = target["fuzzer"]
    victim: OcpClient = target["victim"]
    for frame in batch:
        target["count"] += 1
        sentinel = f"sentinel-{target['count']}"
        if isinstance(frame, bytes):
            await fuzzer.ws.send_bytes(frame)
        else:
            await fuzzer.ws.send_str(frame)
        # An ack for a chat that does not exist always gets an error: everything bridged
        # says about ``frame`` comes before it.
        await fuzzer.send({"type": "ack", "chat": sentinel, "seq": 0})
        answers = []
        while True:
            answer = await fuzzer.next(timeout=5)
            if answer.get("chat") == sentinel:
                assert answer["code"] == "unknown_chat"
                break
            answers.append(answer)
        if plainly_bad(frame):
            assert any(a["type"] == "error" and a["code"] == "bad_envelope" for a in answers), (
                frame, answers)
        for answer in answers:
            assert answer["type"] in {"error", "queued", "agent_joined", "agent_message",
                                      "agent_typing", "delivered", "ended"}, answer
    text = f"ping {target['count']}"
    await victim.send({"type": "message", "chat": "victim", "id": f"v{target['count']}",
                       "text": text})
    await victim.expect("agent_message", text=f"Echo: {text}")


@pytest.fixture
def fuzz_target(tmp_path: Path) -> Any:
    """A live bridged and simulator on their own loop (hypothesis drives it synchronously)."""
    loop = asyncio.new_event_loop()
    stack: list[Any] = []

    async def setup() -> dict[str, Any]:
        from bridged.simulators.liveagent import running_simulator
        from tests.conftest import FAST
        sim_cm = running_simulator(FAST)
        sim = await sim_cm.__aenter__()
        daemon_cm = running_bridged(bridged_config(sim, tmp_path))
        daemon = await daemon_cm.__aenter__()
        http = aiohttp.ClientSession()
        stack.extend([http, daemon_cm, sim_cm])
        victim = await connect(http, daemon.url, TOKEN)
        await victim.start("victim", profile="echo")
        await victim.expect("agent_joined")
        fuzzer = await connect(http, daemon.url, TOKEN)
        return {"loop": loop, "victim": victim, "fuzzer": fuzzer, "daemon": daemon,
                "count": 0}

    target = loop.run_until_complete(setup())
    try:
        yield target
    finally:
        async def teardown() -> None:
            http, daemon_cm, sim_cm = stack
            await http.close()
            await daemon_cm.__aexit__(None, None, None)
            await sim_cm.__aexit__(None, None, None)
        loop.run_until_complete(teardown())
        loop.close()
