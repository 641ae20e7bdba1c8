"""The report: the table printed at the end, the JSON, and the bridged/null ratios.

Every figure of bridged is also given as a ratio to the null bridge's, measured in the same
run and topology. The three targets of the project (not checked by any test):

* relayed messages/s at saturation: bridged >= 0.70 x null;
* memory per live chat: bridged <= 2 x null;
* p99 round trip at half load: bridged <= 3 x null.

With the redis and cluster targets (``--nodes N``), two more columns each: bridged as one
node on a Redis store, and N nodes sharing one Redis, each also as a ratio to bridged on
SQLite in the same run and topology. Their CPU is the bridged processes' plus
redis-server's (both also apart); RSS is the nodes' (redis-server's apart).
"""

from __future__ import annotations

__all__ = ["LOSS_FIELDS", "Report", "percentiles"]

import math
from collections.abc import Sequence
from typing import Any

import msgspec

from bridged.tools.loadtest.options import BRIDGED_TARGETS

# Each must be zero in every run: the load test fails otherwise.
LOSS_FIELDS = ("lost", "undelivered", "duplicated", "seq_gaps", "ended_unexpected")

# (key, label, format, how the ratio is read: "low" lower is better, "high" higher is
# better, None: no ratio)
_ROWS: list[tuple[str, str, str, str | None]] = [
    ("nodes", "bridged processes (nodes)", "{:.0f}", None),
    ("started", "chats started", "{:.0f}", None),
    ("joined", "chats joined (agent_joined)", "{:.0f}", None),
    ("join_span_s", "time to start and join all (s)", "{:.1f}", "low"),
    ("ended_unexpected", "unexpected ended", "{:.0f}", None),
    ("errors_total", "error envelopes", "{:.0f}", None),
    ("connection_errors", "connection failures", "{:.0f}", None),
    ("sent", "messages sent", "{:.0f}", None),
    ("delivered", "delivered", "{:.0f}", None),
    ("echoed", "echoed back", "{:.0f}", None),
    ("lost", "LOST (sent, never echoed)", "{:.0f}", None),
    ("undelivered", "UNDELIVERED (no delivered)", "{:.0f}", None),
    ("duplicated", "DUPLICATED (echo/delivered/seq)", "{:.0f}", None),
    ("seq_gaps", "SEQ GAPS (events missing)", "{:.0f}", None),
    ("rss_base_mib", "RSS before chats (MiB)", "{:.1f}", "low"),
    ("rss_live_mib", "RSS, all chats live (MiB)", "{:.1f}", "low"),
    ("rss_per_chat_kib", "RSS per live chat (KiB)", "{:.1f}", "low"),
    ("redis_rss_per_chat_kib", "redis-server RSS per chat (KiB)", "{:.1f}", None),
    ("rss_after_load_mib", "RSS after the load (MiB)", "{:.1f}", "low"),
    ("rss_end_mib", "RSS after every chat ended (MiB)", "{:.1f}", "low"),
    ("fds_per_chat", "open files per chat", "{:.2f}", "low"),
    ("fds_per_chat_after_load", "open files per chat after the load", "{:.2f}", "low"),
    ("fds_peak_per_chat", "open files at the peak / chats", "{:.3f}", "low"),
    ("tasks_per_chat", "asyncio tasks per chat, idle", "{:.2f}", "low"),
    ("tasks_per_chat_load", "asyncio tasks per chat, half load", "{:.2f}", "low"),
    ("cpu_idle_pct", "CPU, chats live, idle (% core)", "{:.1f}", "low"),
    ("sat_msgs_per_s", "relayed msg/s at saturation", "{:.0f}", "high"),
    ("sat_window", "saturation: messages in flight per chat", "{:.0f}", None),
    ("sat_fill_s", "saturation: s until a window came back", "{:.1f}", None),
    ("cpu_sat_pct", "CPU at saturation (% core)", "{:.0f}", None),
    ("nodes_cpu_sat_pct", "  of which bridged processes", "{:.0f}", None),
    ("redis_cpu_sat_pct", "  of which redis-server", "{:.0f}", None),
    ("cpu_ms_per_msg_sat", "CPU per relayed message (ms)", "{:.3f}", "low"),
    ("gc_share_sat_pct", "GC share of CPU, saturation (%)", "{:.1f}", "low"),
    ("gc_max_pause_sat_ms", "longest GC pause, saturation (ms)", "{:.0f}", "low"),
    ("gc_max_pause_cpu_sat_ms", "longest GC pause CPU, saturation (ms)", "{:.0f}", "low"),
    ("gc_cycle_objects_per_msg", "objects freed by the GC per message", "{:.1f}", "low"),
    ("sim_cpu_sat_pct", "simulator CPU, saturation (%)", "{:.0f}", None),
    ("loadgen_cpu_sat_pct", "load generator CPU, saturation (%)", "{:.0f}", None),
    ("other_cpu_sat_pct", "other processes' CPU, saturation (%)", "{:.0f}", None),
    ("latency_rate", "half load: offered msg/s", "{:.0f}", None),
    ("latency_achieved_rate", "half load: sent msg/s", "{:.0f}", None),
    ("cpu_load_pct", "CPU at half load (% core)", "{:.0f}", "low"),
    ("cpu_ms_per_msg_load", "CPU per message, half load (ms)", "{:.3f}", "low"),
    ("redis_cpu_ms_per_msg_load", "  of which redis-server (ms)", "{:.3f}", None),
    ("other_cpu_load_pct", "other processes' CPU, half load (%)", "{:.0f}", None),
    ("gc_share_load_pct", "GC share of CPU, half load (%)", "{:.1f}", "low"),
    ("gc_max_pause_load_ms", "longest GC pause, half load (ms)", "{:.0f}", "low"),
    ("gc_max_pause_cpu_load_ms", "longest GC pause CPU, half load (ms)", "{:.0f}", "low"),
    ("gc_long_pauses_load", "GC pauses >= 10 ms, half load", "{:.0f}", None),
    ("sf_requests_per_msg", "Salesforce requests per message", "{:.2f}", None),
    ("state_commits_per_msg", "state store commits per message", "{:.2f}", None),
    ("state_commit_share_pct", "state store commit time (% of time)", "{:.1f}", None),
    ("state_commit_ms_per_msg", "state store time per message (ms)", "{:.3f}", "low"),
    ("redis_round_trips_per_msg", "Redis round trips per message", "{:.2f}", None),
    ("redis_commands_per_msg", "  Redis commands run per message", "{:.1f}", None),
    ("rtt_p50", "round trip p50 (ms)", "{:.1f}", "low"),
    ("rtt_p99", "round trip p99 (ms)", "{:.1f}", "low"),
    ("o2a_p50", "OCP->agent p50 (ms)", "{:.1f}", "low"),
    ("o2a_p99", "OCP->agent p99 (ms)", "{:.1f}", "low"),
    ("a2o_p50", "agent->OCP p50 (ms)", "{:.1f}", "low"),
    ("a2o_p99", "agent->OCP p99 (ms)", "{:.1f}", "low"),
    ("dlv_p50", "message->delivered p50 (ms)", "{:.1f}", "low"),
    ("dlv_p99", "message->delivered p99 (ms)", "{:.1f}", "low"),
]

# Above this CPU use (% of one core) by processes outside the test, a warning is printed.
DISTURBED_PCT = 20.0

# (metric key, comparison, limit, name)
TARGETS = [
    ("sat_msgs_per_s", ">=", 0.70, "throughput >= 70% of null"),
    ("rss_per_chat_kib", "<=", 2.0, "memory per chat <= 2x null"),
    ("rtt_p99", "<=", 3.0, "p99 latency at half load <= 3x null"),
]


def percentiles(values_ns: Sequence[int]) -> dict[str, float] | None:
    """p50, p90, p99, max and mean in milliseconds (nearest rank), and the count."""
    if not values_ns:
        return None
    data = sorted(values_ns)
    n = len(data)

    def rank(p: float) -> float:
        """The value at percentile ``p`` (nearest rank), in ms."""
        return data[min(n - 1, max(0, math.ceil(p / 100.0 * n) - 1))] / 1e6

    return {"count": n, "p50": rank(50), "p90": rank(90), "p99": rank(99),
            "max": data[-1] / 1e6, "mean": sum(data) / n / 1e6}


def _flat(run: dict[str, Any]) -> dict[str, Any]:
    """The run's figures under the table's keys."""
    flat = dict(run)
    for key in ("rss_base", "rss_live", "rss_after_load", "rss_end"):
        kib = run.get(f"{key}_kib")
        flat[f"{key}_mib"] = kib / 1024.0 if kib is not None else None
    rate = run.get("latency_achieved_rate")
    if rate:
        for key, name in (("sf_requests_per_msg", "sf_requests_load_per_s"),
                          ("state_commits_per_msg", "state_commits_load_per_s")):
            if run.get(name) is not None:
                flat[key] = run[name] / rate
    if rate and run.get("cpu_load_pct") is not None:
        flat["cpu_ms_per_msg_load"] = 10.0 * run["cpu_load_pct"] / rate
    if rate and run.get("redis_cpu_load_pct") is not None:
        flat["redis_cpu_ms_per_msg_load"] = 10.0 * run["redis_cpu_load_pct"] / rate
    for key in ("redis_round_trips", "redis_commands"):
        if rate and run.get(f"{key}_load_per_s") is not None:
            flat[f"{key}_per_msg"] = run[f"{key}_load_per_s"] / rate
    if run.get("state_commit_s_load_per_s") is not None:
        # Summed over the nodes: each commit's time as its node waited for it.
        flat["state_commit_share_pct"] = 100.0 * run["state_commit_s_load_per_s"]
        if rate:
            flat["state_commit_ms_per_msg"] = 1000.0 * run["state_commit_s_load_per_s"] / rate
    lat = run.get("latency_ms") or {}
    for short, name in (("rtt", "round_trip"), ("o2a", "ocp_to_agent"),
                        ("a2o", "agent_to_ocp"), ("dlv", "delivered")):
        stats = lat.get(name) or {}
        flat[f"{short}_p50"] = stats.get("p50")
        flat[f"{short}_p99"] = stats.get("p99")
    return flat


def _profile_lines(b: dict[str, Any] | None, n: dict[str, Any] | None,
                   extra: Sequence[dict[str, Any]] = ()) -> list[str]:
    """Where each server's time went (``--py-spy``): % of its samples per part, and the
    part's share times the CPU per message (ms), per phase; bridged, null, then ``extra``
    (one node on Redis, a cluster: its first node's samples, the CPU per message of all)."""
    from bridged.tools.loadtest.profile import PARTS

    runs: list[dict[str, Any] | None] = [b, n, *extra]
    lines: list[str] = []
    for phase, title, cpu_key in (("load", "half load", "cpu_ms_per_msg_load"),
                                  ("sat", "saturation", "cpu_ms_per_msg_sat"),
                                  ("idle", "idle", None)):
        profiles = [((run or {}).get(f"profile_{phase}") or {}) for run in runs]
        if not any(profiles):
            continue
        cpu = [_flat(run or {}).get(cpu_key) if cpu_key else None for run in runs]
        lines.append(f"where the time goes, {title} (py-spy; % of samples, ms per message):")
        for part in PARTS:
            shares = [p.get(part) for p in profiles]
            if not any(shares):
                continue
            cells = []
            for share, per_msg in zip(shares, cpu, strict=True):
                if share is None:
                    cells.append(f"{'':>12}")
                elif per_msg:
                    cells.append(f"{share:5.1f}% {per_msg * share / 100:5.3f}")
                else:
                    cells.append(f"{share:11.1f}%")
            lines.append(f"  {part:34} " + " ".join(f"{cell:>12}" for cell in cells).rstrip())
        samples = [int(p.get("samples", 0)) for p in profiles]
        lines.append(f"  {'(samples)':34} " + " ".join(f"{count:>12}" for count in samples))
    return lines


def _ratio(a: Any, b: Any) -> float | None:
    """``a / b`` for two numbers (not booleans), else None."""
    if isinstance(a, bool) or isinstance(b, bool):
        return None
    if isinstance(a, (int, float)) and isinstance(b, (int, float)) and b:
        return a / b
    return None


def _fmt(value: Any, spec: str) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, bool):
        return "yes" if value else "no"
    try:
        return spec.format(value)
    except (ValueError, TypeError):
        return str(value)


class Report:
    """Runs, their comparison, the targets; printable and JSON-able."""

    def __init__(self, options: Any, environment: dict[str, Any]) -> None:
        self.options = options
        self.environment = environment
        self.runs: list[dict[str, Any]] = []
        self.notes: list[str] = []
        self.timed_out = False

    def add_run(self, run: dict[str, Any]) -> None:
        """Add one run (bridged or the null bridge, one topology) to the report."""
        self.runs.append(run)

    def has_loss(self, target: str | None = None) -> bool:
        """Whether ``target`` (default: bridged in every form, one node or a cluster) lost
        or doubled anything (the verdict is about bridged: the null bridge has no retries,
        so under stress it may lose, which is noted apart)."""
        targets = BRIDGED_TARGETS if target is None else (target,)
        return any(run.get(field) for run in self.runs if run["target"] in targets
                   for field in LOSS_FIELDS)

    def ok(self) -> bool:
        """No loss, no duplicate, every run complete, not timed out."""
        return (not self.timed_out and bool(self.runs) and not self.has_loss()
                and not any(run.get("failed") for run in self.runs))

    def _by_target(self) -> list[tuple[str, dict[str, dict[str, Any]]]]:
        """Per topology (in the order run), its runs by target."""
        topologies: list[str] = []
        for run in self.runs:
            if run["topology"] not in topologies:
                topologies.append(run["topology"])
        out = []
        for topology in topologies:
            runs: dict[str, dict[str, Any]] = {}
            for run in self.runs:
                if run["topology"] == topology:
                    runs.setdefault(run["target"], run)
            out.append((topology, runs))
        return out

    def _pairs(self) -> list[tuple[str, dict[str, Any] | None, dict[str, Any] | None]]:
        return [(topology, runs.get("bridged"), runs.get("null"))
                for topology, runs in self._by_target()]

    def comparison(self) -> dict[str, Any]:
        """Per topology: each figure of bridged and null, and their ratio."""
        result: dict[str, Any] = {}
        for topology, runs in self._by_target():
            fb, fn = _flat(runs.get("bridged") or {}), _flat(runs.get("null") or {})
            extra = {target: _flat(runs[target]) for target in ("redis", "cluster")
                     if target in runs}
            rows: dict[str, Any] = {}
            for key, _label, _spec, _better in _ROWS:
                vb, vn = fb.get(key), fn.get(key)
                rows[key] = {"bridged": vb, "null": vn, "ratio": _ratio(vb, vn)}
                # One node on Redis, and the cluster, each as a ratio to bridged on SQLite.
                for target, flat in extra.items():
                    rows[key][target] = flat.get(key)
                    rows[key][f"{target}_ratio"] = _ratio(flat.get(key), vb)
            targets = {}
            for key, op, limit, name in TARGETS:
                ratio = rows[key]["ratio"]
                met = None if ratio is None else (ratio >= limit if op == ">=" else
                                                  ratio <= limit)
                targets[key] = {"name": name, "ratio": ratio, "limit": f"{op} {limit:.2f}",
                                "met": met}
            result[topology] = {"figures": rows, "targets": targets}
        return result

    def run_summary(self, run: dict[str, Any]) -> str:
        """One run in a line: its verdict and headline figures."""
        if run.get("failed"):
            return f"  {run['target']} {run['topology']}: FAILED: {run['failed']}"
        bits = [f"joined {run.get('joined')}/{run.get('chats')}",
                f"sent {run.get('sent')} echoed {run.get('echoed')} lost {run.get('lost')}"
                f" dup {run.get('duplicated')}"]
        if run.get("sat_msgs_per_s") is not None:
            bits.append(f"saturation {run['sat_msgs_per_s']:.0f} msg/s")
        rtt = (run.get("latency_ms") or {}).get("round_trip")
        if rtt:
            bits.append(f"p99 {rtt['p99']:.1f} ms at {run.get('latency_rate', 0):.0f} msg/s")
        if run.get("nodes", 1) > 1:
            bits.append(f"chats per node {run.get('chats_per_node')}")
        return f"  {run['target']} {run['topology']}: " + ", ".join(bits)

    def table(self) -> str:
        """The human-readable table, one block per topology."""
        lines: list[str] = [f"note: {note}" for note in self.notes]
        backend = {"liveagent": "Live Agent", "messaging": "Enhanced Chat"}.get(
            self.environment.get("backend", ""), "")
        env = self.environment
        if env.get("python"):
            lines.append(f"{backend or 'bridged'}: Python {env['python']}, aiohttp "
                         f"{env.get('aiohttp')}, msgspec {env.get('msgspec')}, "
                         f"{env.get('cpus')} CPUs ({env.get('machine')})")
        comparison = self.comparison()
        for topology, runs in self._by_target():
            b, n = runs.get("bridged"), runs.get("null")
            extra = [target for target in ("redis", "cluster") if target in runs]
            any_run = b or n or next(iter(runs.values()))
            chats, conns = any_run.get("chats"), any_run.get("connections")
            title = (f"{chats} chats, one connection each" if conns == chats
                     else f"{chats} chats over {conns} connections")
            lines.append(f"== {backend + ': ' if backend else ''}{title} ==")
            for run in runs.values():
                if run.get("failed"):
                    lines.append(f"   {run['target']} FAILED: {run['failed'].splitlines()[0]}")
            header = f"{'':36} {'bridged':>12} {'null':>12} {'bridged/null':>13}"
            names = {"redis": "redis 1 node",
                     "cluster": f"{runs['cluster'].get('nodes') or ''} nodes".strip()
                     if "cluster" in runs else ""}
            for target in extra:
                header += f" {names[target]:>12} {'/bridged':>9}"
            lines.append(header)
            rows = comparison[topology]["figures"]
            for key, label, spec, better in _ROWS:
                row = rows[key]
                if all(row.get(target) is None for target in ("bridged", "null", *extra)):
                    continue
                ratio = row["ratio"]
                ratio_text = f"{ratio:.2f}" if ratio is not None and better else ""
                line = (f"{label:36} {_fmt(row['bridged'], spec):>12} "
                        f"{_fmt(row['null'], spec):>12} {ratio_text:>13}")
                for target in extra:
                    ratio = row.get(f"{target}_ratio")
                    ratio_text = f"{ratio:.2f}" if ratio is not None and better else ""
                    line += f" {_fmt(row.get(target), spec):>12} {ratio_text:>9}"
                lines.append(line.rstrip())
            if extra:
                lines.append("(redis, nodes: CPU is the bridged processes' plus "
                             "redis-server's; RSS the bridged processes'; /bridged: the "
                             "ratio to bridged on SQLite)")
            lines.extend(_profile_lines(b, n, [runs[target] for target in extra]))
            disturbed = [(run.get(f"other_cpu_{phase}_pct") or 0.0, target, phase)
                         for target, run in runs.items()
                         for phase in ("idle", "sat", "load")]
            worst = max(disturbed, default=(0.0, "", ""))
            if worst[0] > DISTURBED_PCT:
                phase = {"idle": "idle", "sat": "saturation", "load": "half load"}[worst[2]]
                lines.append(f"WARNING: other processes used up to {worst[0]:.0f}% of a "
                             f"core during the measurements ({worst[1]}, {phase}): CPU, "
                             "throughput and above all the p99 figures are disturbed")
            for name, run in runs.items():
                if run.get("sat_drained") is False:
                    lines.append(f"WARNING: {name}'s saturation backlog was not relayed "
                                 "before the half-load phase began: its half-load latencies "
                                 "include that backlog")
            lines.append("targets:")
            for target in comparison[topology]["targets"].values():
                verdict = {True: "met", False: "MISSED", None: "n/a"}[target["met"]]
                ratio = "n/a" if target["ratio"] is None else f"{target['ratio']:.2f}"
                lines.append(f"  {target['name']:40} ratio {ratio:>6} ({target['limit']})"
                             f"  {verdict}")
            lines.append("")
        failed = [f"{run['target']} {run['topology']}" for run in self.runs
                  if run["target"] in BRIDGED_TARGETS and run.get("failed")]
        if self.has_loss():
            verdict = "LOSS OR DUPLICATES FOUND (see the capitalised rows)"
        elif failed:
            # Nothing relayed is nothing lost: a run that failed proves nothing either way.
            verdict = f"FAILED ({', '.join(failed)}: see above), nothing proven"
        else:
            verdict = "ZERO LOSS, ZERO DUPLICATES"
        lines.append(f"result (bridged): {verdict}"
                     + ("; TIMED OUT (partial)" if self.timed_out else ""))
        if self.has_loss("null"):
            lines.append("note: the null bridge lost or doubled messages (it does not retry);"
                         " its figures count only what it relayed")
        if self.environment.get("workdir"):
            lines.append(f"logs and configs kept in {self.environment['workdir']}")
        return "\n".join(lines)

    def to_json(self) -> bytes:
        """The whole report as JSON (private keys left out)."""
        runs = [{k: v for k, v in run.items() if not k.startswith("_")} for run in self.runs]
        payload = {
            "options": msgspec.to_builtins(self.options),
            "environment": self.environment,
            "timed_out": self.timed_out,
            "notes": self.notes,
            "zero_loss": not self.has_loss(),
            "ok": self.ok(),
            "runs": runs,
            "comparison": self.comparison(),
        }
        return msgspec.json.format(msgspec.json.encode(payload), indent=2)
