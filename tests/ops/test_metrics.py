"""/metrics parses as Prometheus text and moves when chats move."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

from bridged.ops.daemon import Daemon
from bridged.simulators.liveagent import Simulator
from tests.conftest import TOKEN, bridged_config, cluster_config, running_bridged
from tests.ocp_client import OcpClient, connect
from tests.redis_server import RedisServer

Connect = Callable[..., Awaitable[OcpClient]]


async def scrape(http: aiohttp.ClientSession, daemon: Daemon) -> dict[tuple[str, tuple], float]:
    base = daemon.url.replace("ws://", "http://").removesuffix("/v1/chat")
    async with http.get(base + "/metrics") as response:
        assert response.status == 200
        assert response.headers["Content-Type"].startswith("text/plain; version=0.0.4")
        text = await response.text()
    samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


async def test_metrics_move_when_chats_move(bridged: Daemon, http: aiohttp.ClientSession,
                                            ocp: Connect) -> None:
    before = await scrape(http, bridged)
    assert ("bridged_chats_started_total", (("backend", "salesforce"),)) not in before
    client = await ocp()
    await client.start("m-1", profile="echo")
    await client.expect("agent_joined")
    during = await scrape(http, bridged)
    assert during[("bridged_chats_live",
                   (("backend", "salesforce"), ("state", "chatting")))] == 1
    assert during[("bridged_connections", ())] == 1
    assert during[("bridged_salesforce_requests_total",
                   (("backend", "salesforce"), ("resource", "SessionId"),
                    ("status", "200")))] == 1
    assert during[("bridged_salesforce_request_seconds_count",
                   (("backend", "salesforce"), ("resource", "ChasitorInit")))] == 1
    assert during[("bridged_tasks", ())] >= 1
    assert during[("bridged_state_commits_total", ())] >= 1
    await client.send({"type": "ack", "chat": "nope", "seq": 1})
    await client.expect("error")
    await client.send({"type": "end", "chat": "m-1"})
    await client.expect("ended")
    after = await scrape(http, bridged)
    assert after[("bridged_chats_started_total", (("backend", "salesforce"),))] == 1
    assert after[("bridged_chats_ended_total",
                  (("backend", "salesforce"), ("reason", "client")))] == 1
    assert after[("bridged_envelopes_in_total", (("type", "start"),))] == 1
    assert after[("bridged_envelopes_out_total", (("type", "ended"),))] == 1
    assert after[("bridged_errors_total", (("code", "unknown_chat"),))] == 1
    assert ("bridged_chats_live", (("backend", "salesforce"), ("state", "chatting"))) not in after
    assert ("bridged_event_loop_lag_seconds", ()) in after
    assert ("bridged_gc_seconds_total", ()) in after


async def test_a_cluster_nodes_figures_follow_its_chats_its_lease_and_the_store(
        sim: Simulator, tmp_path: Path, http: aiohttp.ClientSession,
        redis_server: RedisServer) -> None:
    async def figures() -> dict[str, float]:
        samples = await scrape(http, daemon)
        return {name: value for (name, labels), value in samples.items()
                if name.startswith("bridged_cluster_") and not labels}

    async def until(predicate: Callable[[dict[str, float]], bool]) -> dict[str, float]:
        async with asyncio.timeout(20):
            while not predicate(now := await figures()):
                await asyncio.sleep(0.1)
        return now

    config = cluster_config(bridged_config(sim, tmp_path), "a", redis_server.url)
    async with running_bridged(config) as daemon:
        before = await until(lambda f: f["bridged_cluster_lease_renew_seconds_count"] > 0)
        assert before["bridged_cluster_chats_held"] == 0
        assert before["bridged_cluster_lease_ttl_seconds"] == 1.0
        assert 0 < before["bridged_cluster_lease_remaining_seconds"] <= 0.8
        assert before["bridged_cluster_store_errors_total"] == 0
        assert before["bridged_cluster_lease_losses_total"] == 0
        await until(lambda f: f["bridged_cluster_nodes_live"] == 1)
        client = await connect(http, daemon.url, TOKEN)
        await client.start("m-1", profile="echo")
        await client.expect("agent_joined")
        await until(lambda f: f["bridged_cluster_chats_held"] == 1)
        redis_server.stop()  # the store is gone: errors, and the lease runs out
        await until(lambda f: f["bridged_cluster_lease_remaining_seconds"] == 0
                    and f["bridged_cluster_store_errors_total"] > 0)
        await asyncio.to_thread(redis_server.start)
        # Back: it joined again (one loss) and took its chat back (one takeover).
        after = await until(lambda f: f["bridged_cluster_lease_losses_total"] == 1
                            and f["bridged_cluster_chats_held"] == 1)
        assert after["bridged_cluster_takeovers_total"] == 1
        assert after["bridged_cluster_lease_remaining_seconds"] > 0
