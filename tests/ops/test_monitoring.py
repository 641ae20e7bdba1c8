"""The Grafana dashboard and the alerting rules read only what a live bridged exports.

Every expression of ``conf/grafana/bridged.json`` and ``conf/prometheus/bridged-rules.yml``
is parsed for the metric names it selects, and each must be one that a real bridged's
``/metrics`` gives Prometheus after a few chats with the Live Agent simulator: when a metric
is renamed or removed, these tests name the panel or the alert that would go blank. promtool
(Debian's ``prometheus`` package; ``.ci/run`` installs it) checks the rules, runs their unit
tests and checks every dashboard expression as PromQL; without it these tests fail.
"""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import subprocess
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml

from bridged.ops.daemon import Daemon
from bridged.simulators.liveagent import Simulator
from bridged.state.redisstore import RedisStore
from tests import promql
from tests.conftest import TOKEN, bridged_config, cluster_config, running_bridged
from tests.ocp_client import OcpClient, connect
from tests.ops.test_metrics import scrape
from tests.processes import ROOT
from tests.redis_server import RedisServer
from tests.state.test_state import FailingOnce

Connect = Callable[..., Awaitable[OcpClient]]

DASHBOARD = ROOT / "conf" / "grafana" / "bridged.json"
RULES = ROOT / "conf" / "prometheus" / "bridged-rules.yml"
RULE_TESTS = ROOT / "conf" / "prometheus" / "bridged-rules.test.yml"
README = ROOT / "README.md"
# Series that Prometheus itself records for every target it scrapes.
SCRAPE_SERIES = {"up"}
DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}


def panels(dashboard: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Every panel, those inside collapsed rows too."""
    for panel in dashboard["panels"]:
        yield panel
        yield from panel.get("panels", [])


def dashboard_expressions() -> list[tuple[str, str]]:
    """``(where, PromQL)`` of every panel query and variable query of the dashboard."""
    dashboard = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    out = []
    for panel in panels(dashboard):
        for target in panel.get("targets", []):
            out.append((f"panel {panel['title']!r} ({target['refId']})", target["expr"]))
    for variable in dashboard["templating"]["list"]:
        if variable["type"] == "query":
            query = variable["query"]
            text = query["query"] if isinstance(query, dict) else query
            out.append((f"variable ${variable['name']}", promql.grafana_query(text)))
    return out


def rules() -> list[dict[str, Any]]:
    loaded = yaml.safe_load(RULES.read_text(encoding="utf-8"))
    return [rule for group in loaded["groups"] for rule in group["rules"]]


async def exported(bridged: Daemon, http: aiohttp.ClientSession, ocp: Connect) -> set[str]:
    """The metric names of a live bridged's ``/metrics`` after chats that ended each way."""
    client = await ocp()
    await client.start("mon-1", profile="echo")
    await client.expect("agent_joined", chat="mon-1")
    await client.send({"type": "message", "chat": "mon-1", "id": "m-1", "text": "hello"})
    await client.expect("delivered", chat="mon-1")
    await client.send({"type": "end", "chat": "mon-1"})
    await client.expect("ended", chat="mon-1")
    await client.start("mon-2", profile="fail")
    await client.expect("ended", chat="mon-2", reason="failed")
    await client.send({"type": "ack", "chat": "nobody", "seq": 1})
    await client.expect("error", code="unknown_chat")
    base = bridged.url.replace("ws://", "http://").removesuffix("/v1/chat")
    async with http.get(base + "/metrics") as response:
        assert response.status == 200
        return promql.exported_names(await response.text())


async def exported_by_a_cluster_node(sim: Simulator, tmp_path: Path,
                                     http: aiohttp.ClientSession, redis: RedisServer) -> set[str]:
    """The metric names of a node of a cluster (``[cluster]``) after a chat and renewals."""
    config = cluster_config(bridged_config(sim, tmp_path / "node"), "a", redis.url)
    async with running_bridged(config) as daemon:
        client = await connect(http, daemon.url, TOKEN)
        await client.start("mon-c", profile="echo")
        await client.expect("agent_joined", chat="mon-c")
        assert isinstance(daemon.store, RedisStore)
        async with asyncio.timeout(10):
            while not daemon.store.renewals:
                await asyncio.sleep(0.05)
        base = daemon.url.replace("ws://", "http://").removesuffix("/v1/chat")
        async with http.get(base + "/metrics") as response:
            return promql.exported_names(await response.text())


def unknown(expressions: list[tuple[str, str]], names: set[str]) -> list[str]:
    return [f"{where}: {', '.join(sorted(missing))} in {expression!r}"
            for where, expression in expressions
            if (missing := promql.metric_names(expression) - names - SCRAPE_SERIES)]


async def test_every_dashboard_expression_reads_only_metrics_bridged_exports(
        bridged: Daemon, http: aiohttp.ClientSession, ocp: Connect, sim: Simulator,
        tmp_path: Path, redis_server: RedisServer) -> None:
    names = await exported(bridged, http, ocp)
    names |= await exported_by_a_cluster_node(sim, tmp_path, http, redis_server)
    expressions = dashboard_expressions()
    assert len(expressions) > 30
    if problems := unknown(expressions, names):
        pytest.fail("the dashboard reads metrics that bridged does not export:\n"
                    + "\n".join(problems), pytrace=False)


async def test_every_alert_reads_only_metrics_bridged_exports(
        bridged: Daemon, http: aiohttp.ClientSession, ocp: Connect, sim: Simulator,
        tmp_path: Path, redis_server: RedisServer) -> None:
    names = await exported(bridged, http, ocp)
    names |= await exported_by_a_cluster_node(sim, tmp_path, http, redis_server)
    expressions = [(f"alert {rule['alert']}", rule["expr"]) for rule in rules()]
    if problems := unknown(expressions, names):
        pytest.fail("the alerting rules read metrics that bridged does not export:\n"
                    + "\n".join(problems), pytrace=False)


# --- the metrics that only the alerts needed -----------------------------------------------


async def test_the_readiness_the_limits_and_the_open_files_are_exported(
        bridged: Daemon, http: aiohttp.ClientSession) -> None:
    samples = await scrape(http, bridged)
    assert samples[("bridged_ready", ())] == 1
    assert samples[("bridged_max_chats", ())] == bridged.config.server.max_chats
    assert 0 < samples[("process_open_fds", ())] <= samples[("process_max_fds", ())]
    assert samples[("bridged_state_commit_failures_total", ())] == 0
    bridged.dispatcher.draining = True  # what a stop does first
    base = bridged.url.replace("ws://", "http://").removesuffix("/v1/chat")
    async with http.get(base + "/readyz") as response:
        assert response.status == 503
    assert (await scrape(http, bridged))[("bridged_ready", ())] == 0


async def test_a_failed_commit_is_counted_and_the_chat_goes_on(
        bridged: Daemon, http: aiohttp.ClientSession, ocp: Connect) -> None:
    bridged.store._connection = FailingOnce(bridged.store._connection)  # type: ignore[assignment]
    client = await ocp()
    await client.start("disk-1", profile="echo")
    await client.expect("agent_joined", chat="disk-1")  # once the commit, tried again, held
    samples = await scrape(http, bridged)
    assert samples[("bridged_state_commit_failures_total", ())] == 1


# --- the parser the checks above stand on --------------------------------------------------


@pytest.mark.parametrize(("expression", "names"), [
    ('histogram_quantile(0.99, sum by (le, resource) (rate(x_bucket{resource!="Messages",'
     ' job=~"$job"}[$__rate_interval])))', {"x_bucket"}),
    ('sum without (reason) (rate(a_total{reason="failed"}[15m])) / on(instance, job)'
     ' group_left(node) sum(rate(b_total[5m])) by (job) > bool 0.1', {"a_total", "b_total"}),
    ('up{job="bridged"} == 0 and on() vector(1) offset 5m', {"up"}),
    ('{__name__="by_name", a="b"} + {"quoted.name"} + max_over_time(c[5m:1m] @ start())',
     {"by_name", "quoted.name", "c"}),
    ("count(x) > 1 unless topk(5, y) or absent(z)", {"x", "y", "z"}),
    ('label_replace(q, "dst", "$1", "src", "(.*)") # a comment naming w', {"q"}),
    ("sum by (state, backend) (bridged_chats_live) / ignoring(state) bridged_max_chats",
     {"bridged_chats_live", "bridged_max_chats"}),
    ("rate(ns:recorded:rate5m[1h]) * -1e3 + .5", {"ns:recorded:rate5m"}),
])
def test_metric_names_are_found_and_nothing_else(expression: str, names: set[str]) -> None:
    assert promql.metric_names(expression) == names


def test_an_expression_it_cannot_read_fails_loudly() -> None:
    with pytest.raises(ValueError, match="cannot read"):
        promql.metric_names("rate(x[5m]) ; drop")


def test_exported_names_are_as_prometheus_stores_them() -> None:
    exposition = (
        "# HELP c_total A counter\n# TYPE c_total counter\n"
        "# HELP h A histogram\n# TYPE h histogram\n"
        'h_bucket{le="+Inf"} 1.0\nh_count 1.0\nh_sum 0.5\n'
        "# HELP g A gauge\n# TYPE g gauge\ng 2.0\n")
    assert promql.exported_names(exposition) == {
        "c_total", "c_created", "h_bucket", "h_count", "h_sum", "h_created", "g"}


# --- promtool ------------------------------------------------------------------------------


def promtool(*args: str | Path) -> subprocess.CompletedProcess[str]:
    path = shutil.which("promtool")
    assert path, ("promtool is not installed: apt-get install prometheus (Debian's package"
                  " ships it; .ci/run installs it when it is missing)")
    return subprocess.run([path, *map(str, args)], capture_output=True, text=True,
                          timeout=120, cwd=ROOT)


def test_promtool_accepts_the_rules() -> None:
    result = promtool("check", "rules", RULES)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_alerts_unit_tests_pass() -> None:
    result = promtool("test", "rules", RULE_TESTS)
    assert result.returncode == 0, result.stdout + result.stderr
    tested = set(re.findall(r"alertname: (\w+)", RULE_TESTS.read_text(encoding="utf-8")))
    main = {"BridgedDown", "BridgedNotReady", "BridgedEventLoopLag", "BridgedChatsFailing",
            "BridgedSalesforceErrors", "BridgedSalesforceSlow", "BridgedSessionsExpiring",
            "BridgedHeldEventsGrowing", "BridgedNearMaxChats", "BridgedNearFdLimit",
            "BridgedStateCommitsFailing", "BridgedClusterStoreErrors", "BridgedClusterLeaseLow",
            "BridgedClusterLeaseLost"}
    assert main <= tested


_GRAFANA_DURATIONS = {"$__rate_interval": "5m", "$__interval": "1m", "$__range": "1h"}


def as_prometheus(expression: str) -> str:
    """A dashboard expression as Prometheus would get it from Grafana."""
    for variable, value in _GRAFANA_DURATIONS.items():
        expression = expression.replace(variable, value)
    return re.sub(r"\$\{\w+\}|\$\w+", ".*", expression)  # the variables are all in =~ regexes


def test_every_dashboard_expression_is_valid_promql(tmp_path: Path) -> None:
    recorded = [{"record": f"dashboard:expression_{n}:check", "expr": as_prometheus(expr)}
                for n, (_, expr) in enumerate(dashboard_expressions())]
    path = tmp_path / "dashboard-rules.yml"
    path.write_text(json.dumps({"groups": [{"name": "dashboard", "rules": recorded}]}))
    result = promtool("check", "rules", path)
    assert result.returncode == 0, result.stdout + result.stderr


# --- the files as people use them ------------------------------------------------------------


def test_the_dashboard_imports_as_it_is() -> None:
    text = DASHBOARD.read_text(encoding="utf-8")
    assert "${DS_" not in text  # no import-time placeholders: a data-source variable instead
    dashboard = json.loads(text)
    assert dashboard.get("id") is None  # Grafana gives it one on import
    assert dashboard["uid"] and dashboard["title"] and isinstance(dashboard["schemaVersion"], int)
    variables = {variable["name"]: variable for variable in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    ids, cells = set(), set()
    for panel in panels(dashboard):
        assert panel["id"] not in ids, f"panel id {panel['id']} twice"
        ids.add(panel["id"])
        position = panel["gridPos"]
        assert position["x"] + position["w"] <= 24, panel["title"]
        area = {(position["x"] + dx, position["y"] + dy)
                for dx in range(position["w"]) for dy in range(position["h"])}
        assert not area & cells, f"panel {panel['title']!r} overlaps another"
        cells |= area
        if panel["type"] == "row":
            continue
        assert panel["title"] and panel["description"], panel
        assert panel["datasource"] == DATASOURCE, panel["title"]
        assert panel["targets"], panel["title"]
        refs = [target["refId"] for target in panel["targets"]]
        assert len(refs) == len(set(refs)), panel["title"]
        for target in panel["targets"]:
            assert target["datasource"] == DATASOURCE, panel["title"]
    for variable in variables.values():
        if variable["type"] == "query":
            assert variable["datasource"] == DATASOURCE


def troubleshooting_rows() -> list[str]:
    """The first cell of each row of README's troubleshooting table."""
    section = README.read_text(encoding="utf-8").split("### Troubleshooting", 1)[1]
    section = re.split(r"\n#{1,3} ", section, maxsplit=1)[0]
    return [line.split("|")[1] for line in section.splitlines() if line.startswith("|")]


def test_every_alert_has_a_summary_and_a_runbook_row_in_the_readme() -> None:
    rows = troubleshooting_rows()
    for rule in rules():
        name = rule["alert"]
        annotations = rule["annotations"]
        assert annotations.get("summary"), name
        assert annotations.get("runbook") == f'README.md#troubleshooting, row "{name}"', name
        assert any(f"`{name}`" in row for row in rows), (
            f"README's troubleshooting table has no row for alert `{name}`")
        assert rule["labels"]["severity"] in ("critical", "warning"), name
