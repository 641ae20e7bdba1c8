"""The orchestration: for each topology, bridged then the null bridge, each in fresh processes.

One *run* is one server in one topology, against a simulator of its own (so that no run
inherits another's sessions). The server is bridged (one node on SQLite), the null bridge,
or, with a redis-server of the run's started first: one bridged node on a Redis store
(``redis``) or ``--nodes`` bridged nodes sharing it (``cluster``), the connections spread
over them round-robin and every node's CPU, RSS, probe and /metrics summed::

    start the simulator and the server; note RSS, tasks (before any chat)
    start    open M connections, start N chats at --start-rate, wait for every agent_joined
    idle     settle, then --idle-s with every chat live and no message: CPU idle, RSS live
    saturate closed loop, in steps within --saturate-s: each chat keeps W messages in
             flight, W doubling while the relayed rate still grows; the best step's
             messages/s and CPU, the GC over the whole phase; then drain
    latency  open loop at --rate, or at half of bridged's saturation in this topology (the
             same offered load for both servers), for --duration: latencies, CPU, GC share;
             then drain
    end      ``end`` every chat, wait for ``ended``; note RSS
    stop     SIGTERM the server (every node, then redis-server) and the simulator (by pid)

Every wait has a deadline, and the whole run is under ``--timeout``.

Reading the figures: a closed loop lets every process batch (many answers per loop turn,
group commits), so a server's CPU per message at saturation is lower than in the open loop
at half load; "half load" can therefore be close to a server's real open-loop limit. The
CPU per message at the same offered load (half load) is the steadiest comparison of the
two servers. On a machine shared with other work, "other processes' CPU" says how much
the figures were disturbed; the p99 latencies suffer first.
"""

from __future__ import annotations

__all__ = ["RunContext", "fit_topologies", "run_loadtest", "scrape_metrics", "server_sample"]

import asyncio
import contextlib
import functools
import math
import os
import platform
import secrets
import shutil
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import msgspec

from bridged.ops.limits import fds_needed
from bridged.tools.loadtest.client import LoadGenerator
from bridged.tools.loadtest.options import LoadTestOptions, Topology
from bridged.tools.loadtest.probe import ProbeSample, ask_tasks, read_sample
from bridged.tools.loadtest.procs import (
    CpuMeter,
    ServerProcess,
    count_fds,
    cpu_seconds,
    free_port,
    python_module,
    read_rss_kib,
)
from bridged.tools.loadtest.profile import ProfileRecorder
from bridged.tools.loadtest.report import Report, percentiles
from bridged.tools.loadtest.simproc import raise_nofile_limit
from bridged.tools.redisproc import (
    ROUND_TRIPS,
    command_calls,
    find_redis_server,
    ping,
    redis_argv,
)

_START_TIMEOUT = 30.0


# The longest wait for the saturation's backlog before the half-load phase.
MAX_DRAIN_S = 240.0


class Progress:
    """The live progress line on stderr (rewritten in place on a terminal)."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self.tty = sys.stderr.isatty()
        self.target = ""
        self.topology = ""
        self.phase = ""
        self.gen: LoadGenerator | None = None
        self._t0 = time.monotonic()
        self._last_echoed = 0
        self._last_t = time.monotonic()
        self._last_print = 0.0
        self._task: asyncio.Task[None] | None = None

    def line(self) -> str:
        """The progress line: phase, chats, rate and memory, as of now."""
        now = time.monotonic()
        gen = self.gen
        if gen is None:
            rate = 0.0
            c = None
        else:
            c = gen.counters
            dt = max(1e-9, now - self._last_t)
            rate = (c.echoed - self._last_echoed) / dt
            self._last_echoed, self._last_t = c.echoed, now
        text = f"[{now - self._t0:6.0f}s] {self.target:7} {self.topology:>11} {self.phase:9}"
        if c is not None and gen is not None:
            text += (f" started {c.started}/{gen.n_chats} joined {c.joined}"
                     f" | {rate:7.0f} msg/s sent {c.sent} echoed {c.echoed}"
                     f" | errors {c.errors_total + c.ended_unexpected + c.connection_errors}")
        return text

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(1.0)
            line = self.line()
            if self.tty:
                sys.stderr.write("\r\x1b[K" + line)
                sys.stderr.flush()
            elif time.monotonic() - self._last_print >= 5.0:
                self._last_print = time.monotonic()
                print(line, file=sys.stderr, flush=True)

    def say(self, text: str) -> None:
        """Print ``text`` on stderr, above the progress line."""
        if not self.enabled:
            return
        if self.tty:
            sys.stderr.write("\r\x1b[K")
        print(text, file=sys.stderr, flush=True)

    def start(self) -> None:
        """Start redrawing the progress line."""
        if self.enabled and self._task is None:
            self._task = asyncio.create_task(self._loop(), name="loadtest:progress")

    async def stop(self) -> None:
        """Stop redrawing and clear the line."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
            if self.tty:
                sys.stderr.write("\r\x1b[K")
                sys.stderr.flush()


class RunContext:
    """Processes and addresses of one run.

    ``server``, ``server_pid``, ``ws_url``, ``stats_path`` and ``metrics_url`` are the first
    (or only) server's; the lists hold every server process of the run (the nodes of a
    cluster), and ``redis`` the redis-server they share (the redis and cluster targets).
    """

    def __init__(self) -> None:
        self.nodes: list[ServerProcess] = []
        self.ws_urls: list[str] = []
        self.stats_paths: list[str] = []
        self.metrics_urls: list[str] = []
        self.redis: ServerProcess | None = None
        self.redis_port: int | None = None
        self.sim: ServerProcess | None = None
        self.sim_http: str | None = None  # http://HOST:PORT of our simulator (marks), if ours
        self.salesforce_url = ""  # the Live Agent chat URL or the Enhanced Chat SCRT URL
        self.server: ServerProcess | None = None
        self.server_pid: int | None = None
        self.ws_url = ""
        self.token = ""
        self.stats_path: str | None = None
        self.metrics_url: str | None = None  # bridged's /metrics
        self.workdir = Path(".")


def _toml_str(value: str) -> str:
    return msgspec.json.encode(value).decode()


def bridged_config(path: Path, *, port: int, token: str, salesforce_url: str,
                   state_dir: Path, opts: LoadTestOptions, max_chats: int,
                   cluster: tuple[str, str] | None = None) -> None:
    """Write a bridged config for the run: one profile ``echo`` on the simulator (Live Agent
    or Enhanced Chat, per ``opts.backend``), the defaults for everything else but the
    limits that would measure a limiter instead of bridged (lifted, each said below); with
    ``cluster`` (node name, Redis URL) a ``[cluster]`` section, its timings the defaults."""
    parts = urlsplit(salesforce_url)
    allowed = f"{parts.hostname}:*"
    if opts.backend == "messaging":
        limits = """\
# Lifted: Salesforce allows 200 guest tokens a minute per org (one per hand-over) and 22
# visitor messages a minute per conversation. bridged keeps both (a burst waits its turn);
# at those limits starting 10,000 chats takes 50 minutes and a chat's messages are paced,
# which would measure the limiter, not bridged. The simulator's are lifted alike.
messaging_token_limit = 1000000
messaging_message_limit = 1000000
"""
        profile = f"""\
[profiles.echo]
type = "salesforce_messaging"
scrt_url = {_toml_str(salesforce_url)}
organization_id = {_toml_str(opts.organization_id)}
es_developer_name = {_toml_str(opts.es_developer_name)}
"""
    else:
        limits = ""
        profile = f"""\
[profiles.echo]
live_agent_base_url = {_toml_str(salesforce_url)}
organization_id = {_toml_str(opts.organization_id)}
deployment_id = {_toml_str(opts.deployment_id)}
button_id = {_toml_str(opts.button_id)}
"""
    cluster_section = ""
    if cluster is not None:
        cluster_section = (f"\n[cluster]\nnode = {_toml_str(cluster[0])}\n"
                           f"redis_url = {_toml_str(cluster[1])}\n")
    text = f"""\
[server]
listen = "127.0.0.1:{port}"
tokens = [{_toml_str(token)}]
max_chats = {max_chats}
# Lifted: the per-connection rate limit would cap the few-connections topology (2000
# envelopes/s per connection by default), and the test measures bridged, not its limiter.
max_envelopes_per_s = 1000000

[salesforce]
allowed_hosts = [{_toml_str(allowed)}]
{limits}
[state]
dir = {_toml_str(str(state_dir))}

[logging]
level = {_toml_str(opts.bridged_log_level)}
{cluster_section}
{profile}"""
    path.write_text(with_settings(text, opts.bridged_settings))


def with_settings(text: str, settings: tuple[str, ...]) -> str:
    """``text`` (a TOML config) with each ``SECTION.KEY=VALUE`` set: the key added under its
    section's header (a new section at the end if there is none); a key set already is
    replaced."""
    lines = text.splitlines()
    for setting in settings:
        key, _, value = setting.partition("=")
        section, _, name = key.strip().partition(".")
        header = f"[{section}]"
        assignment = f"{name} = {value.strip()}"
        if header not in lines:
            lines += ["", header, assignment]
            continue
        start = lines.index(header) + 1
        end = next((i for i in range(start, len(lines)) if lines[i].startswith("[")),
                   len(lines))
        for i in range(start, end):
            if lines[i].split("=", 1)[0].strip() == name:
                lines[i] = assignment
                break
        else:
            lines.insert(start, assignment)
    return "\n".join(lines) + "\n"


def simulator_options(opts: LoadTestOptions, topology: Topology) -> dict[str, Any]:
    """The options of the run's simulator (``SimulatorOptions`` or ``MessagingOptions``):
    the run's timings, nothing recorded, room for every chat, and for Enhanced Chat the
    rate limits lifted (Salesforce's are 200 tokens a minute per org, 3 conversations per
    30 s per subject, 22 messages a minute per conversation: the load test measures bridged,
    not them)."""
    if opts.backend == "messaging":
        lifted = 1_000_000_000
        return {
            "org_id": opts.organization_id[:15],
            "routing_delay_s": opts.routing_delay_s, "join_delay_s": opts.join_delay_s,
            "reply_delay_s": opts.reply_delay_s,
            "request_log_max": 0, "record_max": 0,
            # A reconnect replays from here; 20 events a subject is a few KiB per chat.
            "replay_depth": 20,
            "tokens_per_window": lifted, "starts_per_window": lifted,
            "messages_per_window": lifted,
            "max_conversations": 2 * topology.chats + 1000,
            "max_tokens": 2 * topology.chats + 1000,
        }
    return {
        "hold_s": opts.hold_s, "client_poll_timeout": opts.hold_s + 10.0,
        "join_delay_s": opts.join_delay_s, "reply_delay_s": opts.reply_delay_s,
        "request_log_max": 0, "record_max": 0,
        "max_sessions": 2 * topology.chats + 1000,
        "org_id": opts.organization_id, "deployment_id": opts.deployment_id,
    }


@contextlib.asynccontextmanager
async def _processes(opts: LoadTestOptions, target: str, topology: Topology, workdir: Path,
                     ) -> AsyncIterator[RunContext]:
    ctx = RunContext()
    ctx.workdir = workdir
    procs: list[ServerProcess] = []
    try:
        external = opts.scrt_url if opts.backend == "messaging" else opts.live_agent_url
        if external:
            ctx.salesforce_url = external
        else:
            port = free_port()
            sim_options = simulator_options(opts, topology)
            ctx.sim = ServerProcess(
                f"simulator-{target}-{topology.key}",
                python_module("bridged.tools.loadtest.simproc", "--listen", f"127.0.0.1:{port}",
                              "--backend", opts.backend,
                              "--options", msgspec.json.encode(sim_options).decode()),
                workdir, f"http://127.0.0.1:{port}/_loadtest/ping")
            procs.append(ctx.sim)
            ctx.sim_http = f"http://127.0.0.1:{port}"
            ctx.salesforce_url = (f"http://127.0.0.1:{port}" if opts.backend == "messaging"
                                  else f"http://127.0.0.1:{port}/chat")
        if target == "bridged" and opts.bridged_url:
            ctx.ws_url, ctx.token, ctx.server_pid = opts.bridged_url, opts.token or "", \
                opts.bridged_pid
            parts = urlsplit(opts.bridged_url)
            scheme = "https" if parts.scheme == "wss" else "http"
            ctx.metrics_url = f"{scheme}://{parts.netloc}/metrics"
        early = list(procs)  # the simulator, and the redis-server: before the nodes
        if target == "bridged" and opts.bridged_url:
            ctx.ws_urls, ctx.metrics_urls = [ctx.ws_url], [ctx.metrics_url or ""]
        else:
            ctx.token = opts.token or f"loadtest-{secrets.token_hex(8)}"
            if target in ("redis", "cluster"):
                ctx.redis_port = free_port()
                redis_dir = workdir / f"redis-{target}-{topology.key}"
                redis_dir.mkdir(exist_ok=True)
                ctx.redis = ServerProcess(
                    f"redis-server-{target}-{topology.key}",
                    redis_argv(find_redis_server(opts.redis_server), ctx.redis_port,
                               redis_dir),
                    workdir, ready=functools.partial(asyncio.to_thread, ping, ctx.redis_port))
                procs.append(ctx.redis)
                early.append(ctx.redis)
            count = opts.nodes if target == "cluster" else 1
            for i in range(count):
                node = _server_process(opts, target, topology, workdir, ctx,
                                       f"n{i + 1}" if target in ("redis", "cluster") else None)
                procs.append(node)
                ctx.nodes.append(node)
            ctx.server = ctx.nodes[0]
            ctx.ws_url = ctx.ws_urls[0]
            ctx.stats_path = ctx.stats_paths[0] if ctx.stats_paths else None
            ctx.metrics_url = ctx.metrics_urls[0] if ctx.metrics_urls else None
        # Neither server talks to the other before a chat starts: boot them together; but
        # bridged on Redis joins its cluster as it starts, so Redis comes first.
        groups = [early, [p for p in procs if p not in early]] if ctx.redis else [procs]
        for group in groups:
            results = await asyncio.gather(*(p.start(_START_TIMEOUT) for p in group),
                                           return_exceptions=True)
            for result in results:
                if isinstance(result, BaseException):
                    raise result
        if ctx.server is not None:
            ctx.server_pid = ctx.server.pid
        yield ctx
    finally:
        try:
            for proc in reversed(procs):
                await proc.stop()
        finally:
            for proc in procs:
                proc.stop_now()  # a no-op for those already stopped


def _server_process(opts: LoadTestOptions, target: str, topology: Topology, workdir: Path,
                    ctx: RunContext, node: str | None) -> ServerProcess:
    """One server process of the run (bridged, one node of a cluster, or the null bridge),
    its addresses added to ``ctx``; not started."""
    port = free_port()
    suffix = f"{target}-{node}-{topology.key}" if node else f"{target}-{topology.key}"
    stats_path = str(workdir / f"probe-{suffix}.json")
    with contextlib.suppress(FileNotFoundError):
        os.unlink(stats_path)
    probe: list[str] | None = None
    if opts.probe:
        probe = ["-m", "bridged.tools.loadtest.probe", "--stats", stats_path,
                 "--interval", str(opts.probe_interval_s), "--"]
        ctx.stats_paths.append(stats_path)
    if target != "null":
        # bridged's files keep their one-node names (bridged-KEY.toml, state-KEY).
        files = topology.key if target == "bridged" else suffix
        state = workdir / f"state-{files}"
        state.mkdir(exist_ok=True)
        config = workdir / f"bridged-{files}.toml"
        cluster = None
        if node is not None:
            cluster = (node, f"redis://127.0.0.1:{ctx.redis_port}/0")
        bridged_config(config, port=port, token=ctx.token,
                       salesforce_url=ctx.salesforce_url, state_dir=state, opts=opts,
                       max_chats=max(20000, topology.chats), cluster=cluster)
        args = ["bridged", "run", "--config", str(config)]
        argv = ([sys.executable, *probe, *args] if probe
                else python_module("bridged", *args[1:]))
        ready = f"http://127.0.0.1:{port}/readyz"
        ctx.metrics_urls.append(f"http://127.0.0.1:{port}/metrics")
    else:
        args = ["nullbridge", "--listen", f"127.0.0.1:{port}", "--token", ctx.token,
                "--backend", opts.backend, "--organization-id", opts.organization_id,
                "--gc", opts.null_gc]
        if opts.backend == "messaging":
            args += ["--scrt-url", ctx.salesforce_url,
                     "--es-developer-name", opts.es_developer_name]
        else:
            args += ["--live-agent-url", ctx.salesforce_url,
                     "--deployment-id", opts.deployment_id,
                     "--button-id", opts.button_id]
        argv = ([sys.executable, *probe, *args] if probe
                else python_module("bridged.tools.nullbridge", *args[1:]))
        ready = f"http://127.0.0.1:{port}/healthz"
    ctx.ws_urls.append(f"ws://127.0.0.1:{port}/v1/chat")
    return ServerProcess(suffix, argv, workdir, ready)


async def _take_marks(http: aiohttp.ClientSession, sim_http: str, gen: LoadGenerator) -> None:
    async with http.get(f"{sim_http}/_loadtest/marks",
                        timeout=aiohttp.ClientTimeout(total=10)) as response:
        data = msgspec.json.decode(await response.read())
    for text, t_sim in data["marks"]:
        gen.samples.mark(text, t_sim)
    gen.samples.marks_dropped = data.get("dropped", 0)


async def _marks_loop(http: aiohttp.ClientSession, sim_http: str, gen: LoadGenerator) -> None:
    while True:
        await asyncio.sleep(1.0)
        with contextlib.suppress(aiohttp.ClientError, OSError, asyncio.TimeoutError):
            await _take_marks(http, sim_http, gen)


async def scrape_metrics(url: str) -> dict[str, float]:
    """Prometheus text from ``url``, summed per metric name (labels dropped); {} on failure."""
    values: dict[str, float] = {}
    try:
        async with aiohttp.ClientSession() as http, http.get(
                url, timeout=aiohttp.ClientTimeout(total=5)) as response:
            if response.status != 200:
                return values
            text = await response.text()
    except (TimeoutError, aiohttp.ClientError, OSError):
        return values
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        name_part, _, value = line.rpartition(" ")
        name = name_part.split("{", 1)[0]
        try:
            values[name] = values.get(name, 0.0) + float(value)
        except ValueError:
            continue
    return values


async def _probe_sample(path: str, fresh: bool) -> ProbeSample | None:
    if not fresh:
        return read_sample(path)
    start = time.monotonic()
    ask_tasks(path)
    while time.monotonic() - start < 3.0:
        sample = read_sample(path)
        if sample is not None and sample.t >= start and sample.tasks is not None:
            return sample
        await asyncio.sleep(0.05)
    return read_sample(path)


def sum_samples(samples: list[ProbeSample]) -> ProbeSample:
    """Several processes' probe samples (a cluster's nodes) as one: times and counts summed,
    the pauses of all."""
    tasks = [s.tasks for s in samples]
    return ProbeSample(
        t=max(s.t for s in samples), cpu_s=sum(s.cpu_s for s in samples),
        gc_s=[sum(v) for v in zip(*(s.gc_s for s in samples), strict=True)],
        gc_n=[sum(v) for v in zip(*(s.gc_n for s in samples), strict=True)],
        tasks=None if None in tasks else sum(t or 0 for t in tasks),
        gc_collected=sum(s.gc_collected for s in samples),
        long_pauses=sorted(p for s in samples for p in s.long_pauses))


async def server_sample(ctx: RunContext, fresh: bool = False) -> ProbeSample | None:
    """The server's GC time, CPU and task count now: from the probe when the load test
    started the server (summed over a cluster's nodes), else from bridged's ``/metrics``
    (``bridged_tasks``, ``bridged_gc_seconds_total``) and ``/proc`` (with the server's pid).

    ``fresh`` waits (up to 3 s) for a probe sample written after now, with a task count.
    """
    paths = ctx.stats_paths or ([ctx.stats_path] if ctx.stats_path else [])
    if paths:
        samples = await asyncio.gather(*(_probe_sample(path, fresh) for path in paths))
        present = [sample for sample in samples if sample is not None]
        if len(present) < len(paths):
            return None
        return present[0] if len(present) == 1 else sum_samples(present)
    if not ctx.metrics_url:
        return None
    metrics = await scrape_metrics(ctx.metrics_url)
    if not metrics:
        return None
    cpu = cpu_seconds(ctx.server_pid) if ctx.server_pid else None
    tasks = metrics.get("bridged_tasks")
    return ProbeSample(t=time.monotonic(), cpu_s=-1.0 if cpu is None else cpu,
                       gc_s=[metrics.get("bridged_gc_seconds_total", 0.0), 0.0, 0.0],
                       gc_n=[0, 0, 0], tasks=None if tasks is None else int(tasks),
                       long_pauses=[])


# bridged's counters read over each phase: (Prometheus name, key in the report).
_RATES = [
    ("bridged_state_commits_total", "state_commits"),
    ("bridged_state_commit_seconds_total", "state_commit_s"),
    ("bridged_salesforce_requests_total", "sf_requests"),
    ("bridged_envelopes_in_total", "envelopes_in"),
    ("bridged_envelopes_out_total", "envelopes_out"),
]


async def scrape_all(ctx: RunContext) -> dict[str, float]:
    """Every node's ``/metrics``, summed per metric name; {} if any cannot be read."""
    urls = ctx.metrics_urls or ([ctx.metrics_url] if ctx.metrics_url else [])
    scraped = await asyncio.gather(*(scrape_metrics(url) for url in urls))
    if not scraped or not all(scraped):
        return {}
    total: dict[str, float] = {}
    for values in scraped:
        for name, value in values.items():
            total[name] = total.get(name, 0.0) + value
    return total


def _node_pids(ctx: RunContext) -> list[int]:
    """The pids of the server processes (every node of a cluster) the run can read."""
    pids = [p.pid for p in ctx.nodes if p.pid is not None]
    if not pids and ctx.server_pid:
        pids = [ctx.server_pid]
    return pids


def _sum_of(pids: list[int], read: Callable[[int], int | None]) -> int | None:
    values = [read(pid) for pid in pids]
    if not values or None in values:
        return None
    return sum(v or 0 for v in values)


def _since_marks(meters: list[CpuMeter]) -> tuple[float | None, float | None]:
    """The sum of several meters' (% of one core, CPU seconds); None if any is unknown."""
    readings = [meter.since_mark() for meter in meters]
    if not readings or any(pct is None or used is None for pct, used in readings):
        return None, None
    return (sum(pct or 0.0 for pct, _ in readings), sum(used or 0.0 for _, used in readings))


class _Meters:
    """CPU of the server (every node, and a redis-server of the run), the simulator and
    this process, and the server's GC, over one phase (from :meth:`mark` to :meth:`read`).
    """

    def __init__(self, ctx: RunContext) -> None:
        self.ctx = ctx
        pids = _node_pids(ctx)
        self.servers = [CpuMeter(pid) for pid in pids] or [CpuMeter(None)]
        self.redis = CpuMeter(ctx.redis.pid) if ctx.redis and ctx.redis.pid else None
        self.redis_calls: dict[str, int] | None = None
        self.sim = CpuMeter(ctx.sim.pid if ctx.sim else None)
        self.gen = CpuMeter(os.getpid())
        self.machine = CpuMeter(0)
        self.probe: ProbeSample | None = None
        self.metrics: dict[str, float] = {}
        self._t0 = 0.0

    def clone(self) -> _Meters:
        """A new set of meters over the same processes."""
        return _Meters(self.ctx)

    async def mark(self) -> None:
        """Start a measured interval: CPU of every process, the probe and /metrics now."""
        self._t0 = time.monotonic()
        for meter in (*self.servers, self.sim, self.gen, self.machine):
            meter.mark()
        if self.redis is not None:
            self.redis.mark()
        if self.ctx.redis_port is not None:
            self.redis_calls = await asyncio.to_thread(command_calls, self.ctx.redis_port)
        self.probe = await server_sample(self.ctx)
        if self.ctx.metrics_url:
            self.metrics = await scrape_all(self.ctx)

    async def read(self, out: dict[str, Any], prefix: str) -> None:
        """Write the interval's CPU shares and figures into ``out`` under ``prefix``: the
        server's CPU is every node's plus a redis-server's (each also apart)."""
        cpu_pct, cpu_s = _since_marks(self.servers)
        if self.redis is not None:
            redis_pct, redis_s = self.redis.since_mark()
            out[f"nodes_cpu_{prefix}_pct"] = cpu_pct
            out[f"redis_cpu_{prefix}_pct"], out[f"redis_cpu_{prefix}_s"] = redis_pct, redis_s
            if cpu_pct is not None and cpu_s is not None:
                cpu_pct, cpu_s = cpu_pct + (redis_pct or 0.0), cpu_s + (redis_s or 0.0)
        if self.ctx.redis_port is not None and self.redis_calls is not None:
            now_calls = await asyncio.to_thread(command_calls, self.ctx.redis_port)
            if now_calls is not None:
                span = max(1e-9, time.monotonic() - self._t0)
                delta = {name: calls - self.redis_calls.get(name, 0)
                         for name, calls in now_calls.items()}
                # Round trips: what the nodes sent (EVALSHA...); commands: also those the
                # scripts ran (the INFO of this meter left out).
                out[f"redis_round_trips_{prefix}_per_s"] = sum(
                    delta.get(name, 0) for name in ROUND_TRIPS) / span
                out[f"redis_commands_{prefix}_per_s"] = sum(
                    calls for name, calls in delta.items() if name != "info") / span
        out[f"cpu_{prefix}_pct"] = cpu_pct
        out[f"sim_cpu_{prefix}_pct"], _ = self.sim.since_mark()
        out[f"loadgen_cpu_{prefix}_pct"], _ = self.gen.since_mark()
        out[f"cpu_{prefix}_s"] = cpu_s
        machine, _ = self.machine.since_mark()
        ours = [out[f"cpu_{prefix}_pct"], out[f"sim_cpu_{prefix}_pct"],
                out[f"loadgen_cpu_{prefix}_pct"]]
        # What the rest of the machine used meanwhile: high values disturb the figures.
        out[f"other_cpu_{prefix}_pct"] = (None if machine is None else
                                          max(0.0, machine - sum(v or 0.0 for v in ours)))
        out.update(await self.read_gc(prefix))
        if self.ctx.metrics_url and self.metrics:
            # bridged's own counters over the phase, per second (bridged only).
            now = await scrape_all(self.ctx)
            span = max(1e-9, time.monotonic() - self._t0)
            for name, key in _RATES:
                if name in now and name in self.metrics:
                    out[f"{key}_{prefix}_per_s"] = (now[name] - self.metrics[name]) / span

    async def read_gc(self, prefix: str) -> dict[str, Any]:
        """The server's GC over the phase: share of its CPU, collections per generation,
        the pauses of 10 ms or more (count, longest)."""
        out: dict[str, Any] = {f"gc_share_{prefix}_pct": None}
        end = await server_sample(self.ctx)
        start = self.probe
        if start is None or end is None or start.cpu_s < 0 or end.cpu_s <= start.cpu_s:
            return out
        gc_s = sum(end.gc_s) - sum(start.gc_s)
        out[f"gc_share_{prefix}_pct"] = 100.0 * gc_s / (end.cpu_s - start.cpu_s)
        if not self.ctx.stats_path:
            return out  # bridged's /metrics: the total time only
        out[f"gc_collections_{prefix}"] = [b - a for a, b in zip(start.gc_n, end.gc_n,
                                                                 strict=True)]
        out[f"gc_collected_{prefix}"] = end.gc_collected - start.gc_collected
        pauses = [(ms, cpu_ms) for t, _gen, ms, cpu_ms in end.long_pauses if t >= self._t0]
        out[f"gc_long_pauses_{prefix}"] = len(pauses)
        out[f"gc_max_pause_{prefix}_ms"] = max((ms for ms, _ in pauses), default=0.0)
        out[f"gc_max_pause_cpu_{prefix}_ms"] = max((cpu for _, cpu in pauses), default=0.0)
        return out


async def _bench(opts: LoadTestOptions, target: str, topology: Topology, ctx: RunContext,
                 latency_rate: Callable[[dict[str, Any]], float], progress: Progress,
                 deadline: float) -> dict[str, Any]:
    out: dict[str, Any] = {"target": target, "topology": topology.key,
                           "chats": topology.chats, "connections": topology.connections}
    pids = _node_pids(ctx)
    redis_pid = ctx.redis.pid if ctx.redis else None
    out["nodes"] = len(ctx.ws_urls) or 1
    await asyncio.sleep(opts.settle_s)  # let the fresh process settle
    out["rss_base_kib"] = _sum_of(pids, read_rss_kib)
    out["fds_base"] = _sum_of(pids, count_fds)
    out["redis_rss_base_kib"] = read_rss_kib(redis_pid) if redis_pid else None
    base_probe = await server_sample(ctx, fresh=True)
    out["tasks_base"] = base_probe.tasks if base_probe else None

    def until(seconds: float) -> float:
        """A deadline ``seconds`` from now, never past the run's own."""
        return min(deadline, time.monotonic() + seconds)

    gen = LoadGenerator(ctx.ws_urls or ctx.ws_url, ctx.token, chats=topology.chats,
                        connections=topology.connections, fmt=opts.fmt,
                        msg_bytes=opts.msg_bytes, run_id=f"lt{secrets.token_hex(3)}")
    gen.samples.reply_delay_ns = int(opts.reply_delay_s * 1e9)
    progress.gen = gen
    meters = _Meters(ctx)
    fds_peak = [out["fds_base"] or 0]
    watch = asyncio.create_task(_watch_fds(pids, fds_peak)) if pids else None
    async with gen, aiohttp.ClientSession() as http:
        # --- start -----------------------------------------------------------------------
        progress.phase = "start"
        t_start = time.monotonic()
        start_budget = topology.chats / opts.start_rate + 60.0 + opts.join_delay_s
        await gen.start_chats(opts.start_rate, until(start_budget))
        progress.phase = "join"
        all_joined = await gen.wait_joined(until(start_budget))
        out["start_s"] = time.monotonic() - t_start
        out["all_joined"] = all_joined
        out["chats_per_node"] = gen.chats_per_server()
        if gen.counters.joined == 0:
            out["failed"] = "no chat reached agent_joined"
            _counts(gen, out)
            return out

        # --- idle ------------------------------------------------------------------------
        progress.phase = "idle"
        await asyncio.sleep(opts.settle_s)
        await meters.mark()
        recorder = _profiler(opts, ctx, target, topology, "idle")
        await asyncio.sleep(opts.idle_s)
        await meters.read(out, "idle")
        if recorder is not None:
            out["profile_idle"] = await recorder.stop()
        out["rss_live_kib"] = _sum_of(pids, read_rss_kib)
        out["fds_live"] = _sum_of(pids, count_fds)
        out["redis_rss_live_kib"] = read_rss_kib(redis_pid) if redis_pid else None
        live_probe = await server_sample(ctx, fresh=True)
        out["tasks_live"] = live_probe.tasks if live_probe else None

        # --- saturation ------------------------------------------------------------------
        if opts.saturate:
            progress.phase = "saturate"
            recorder = _profiler(opts, ctx, target, topology, "sat")
            await _saturate(opts, gen, meters, out)
            if recorder is not None:
                out["profile_sat"] = await recorder.stop()
            progress.phase = "drain"
            # The half-load latencies must not carry the saturation's backlog: wait for it
            # as long as it takes to relay at the rate just measured (twice, bounded).
            rate = out.get("sat_msgs_per_s") or 0.0
            budget = opts.drain_timeout_s
            if rate > 0:
                budget = min(MAX_DRAIN_S, max(budget, 2.0 * gen.in_flight() / rate))
            out["sat_drained"] = await gen.drain(until(budget))

        # --- latency ---------------------------------------------------------------------
        rate = latency_rate(out)
        out["latency_rate"] = rate
        if opts.duration_s > 0:
            progress.phase = "latency"
            if ctx.sim_http:
                with contextlib.suppress(aiohttp.ClientError, OSError, asyncio.TimeoutError):
                    async with http.get(f"{ctx.sim_http}/_loadtest/marks") as response:
                        await response.read()  # forget older marks
            marks = (asyncio.create_task(_marks_loop(http, ctx.sim_http, gen))
                     if ctx.sim_http else None)
            await meters.mark()
            recorder = _profiler(opts, ctx, target, topology, "load")
            open_task = asyncio.create_task(gen.run_open(rate, opts.duration_s))
            await asyncio.sleep(min(opts.duration_s / 2, 5.0))
            load_probe = await server_sample(ctx, fresh=True)
            out["tasks_load"] = load_probe.tasks if load_probe else None
            sent, spent = await open_task
            await meters.read(out, "load")
            if recorder is not None:
                out["profile_load"] = await recorder.stop()
            out["latency_sent"] = sent
            out["latency_achieved_rate"] = sent / spent if spent else None
            progress.phase = "drain"
            out["latency_drained"] = await gen.drain(until(opts.drain_timeout_s))
            if marks is not None:
                marks.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await marks
                assert ctx.sim_http is not None
                with contextlib.suppress(aiohttp.ClientError, OSError, asyncio.TimeoutError):
                    await _take_marks(http, ctx.sim_http, gen)
            s = gen.samples
            out["latency_ms"] = {
                "round_trip": percentiles(s.rtt),
                "ocp_to_agent": percentiles(s.ocp_to_agent) if ctx.sim_http else None,
                "agent_to_ocp": percentiles(s.agent_to_ocp) if ctx.sim_http else None,
                "delivered": percentiles(s.delivered),
            }
            out["latency_unmatched_marks"] = len(s.pending_echo) + len(s.pending_mark)
        out["rss_after_load_kib"] = _sum_of(pids, read_rss_kib)
        out["fds_after_load"] = _sum_of(pids, count_fds)
        if watch is not None:
            watch.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watch
            out["fds_peak"] = fds_peak[0]

        # --- end -------------------------------------------------------------------------
        progress.phase = "end"
        out["all_ended"] = await gen.end_chats(opts.start_rate * 2,
                                               until(topology.chats / opts.start_rate + 60))
        await asyncio.sleep(min(1.0, opts.settle_s))
        out["rss_end_kib"] = _sum_of(pids, read_rss_kib)
        gen.mode = "closing"
        _counts(gen, out)
    progress.gen = None
    _derive(out)
    out["_samples"] = gen.samples  # for the plot; dropped from the JSON
    return out


async def _watch_fds(pids: list[int], peak: list[int]) -> None:
    """Keep in ``peak[0]`` the most descriptors ``pids`` held together, read every half
    second."""
    while True:
        count = _sum_of(pids, count_fds)
        if count is not None and count > peak[0]:
            peak[0] = count
        await asyncio.sleep(0.5)


def _profiler(opts: LoadTestOptions, ctx: RunContext, target: str, topology: Topology,
              phase: str) -> ProfileRecorder | None:
    """py-spy sampling the server from now on (``--py-spy``), or None."""
    if not opts.py_spy or not ctx.server_pid:
        return None
    recorder = ProfileRecorder(opts.py_spy, ctx.server_pid,
                               ctx.workdir / f"profile-{target}-{topology.key}-{phase}.txt")
    recorder.start()
    return recorder


# Saturation search: the window doubles while the throughput still grows by this much.
_SAT_GAIN = 1.05
_SAT_MAX_WINDOW = 32  # below bridged's default mailbox_size (64): never "busy"
_SAT_MIN_IN_FLIGHT = 1000
# A step is measured once a whole window has come back (at most this long after it began).
_SAT_FILL_MAX_S = 120.0


async def _fill(gen: LoadGenerator, in_flight: int, echoed_before: int) -> float:
    """Wait until ``in_flight`` echoes have come back since the window was set (at most
    ``_SAT_FILL_MAX_S``); the seconds waited.

    Setting a window sends every chat's messages at once. Until that burst has gone round
    once, a server is still taking it in (decoding, numbering, persisting what it has not
    relayed yet) and relays less than it can: with 19,000 chats a round takes 40 s or
    more, and a step measured 2.5 s in reported 90 msg/s for a bridged that then relayed
    about 600 a second. One round later the messages in flight are spread over every
    stage, as in a steady state.
    """
    t0 = time.monotonic()
    while (gen.counters.echoed - echoed_before < in_flight
           and time.monotonic() - t0 < _SAT_FILL_MAX_S):
        await asyncio.sleep(0.1)
    return time.monotonic() - t0


async def _saturate(opts: LoadTestOptions, gen: LoadGenerator, meters: _Meters,
                    out: dict[str, Any]) -> None:
    """Closed loop, in steps: every chat keeps ``window`` messages in flight, and the window
    doubles (1, 2, 4, ... from ``--window``) while the relayed rate still grows by 5%;
    the best step is the saturation. ``--saturate-s`` is the budget of all the steps."""
    step_s = max(min(4.0, opts.saturate_s), opts.saturate_s / 4)
    warm = min(opts.warmup_s, step_s / 3)
    t_end = time.monotonic() + opts.saturate_s
    # Start with at least ~1000 messages in flight: fewer chats need a wider window.
    chats = max(1, len(gen.live_chats()))
    window = min(_SAT_MAX_WINDOW, max(opts.window, math.ceil(_SAT_MIN_IN_FLIGHT / chats)))
    whole = meters.clone()
    await whole.mark()
    echoed_at_start = gen.counters.echoed
    steps: list[dict[str, Any]] = []
    best: dict[str, Any] | None = None
    while True:
        echoed_before = gen.counters.echoed
        await gen.set_window(window)
        in_flight = window * len(gen.live_chats())
        await asyncio.sleep(warm)
        filled_s = warm + await _fill(gen, in_flight, echoed_before)
        # The budget is for measuring: a step's filling does not shorten the next steps.
        t_end += filled_s - warm
        await meters.mark()
        t1, c1 = time.monotonic(), gen.counters.echoed
        await asyncio.sleep(step_s - warm)
        t2, c2 = time.monotonic(), gen.counters.echoed
        step: dict[str, Any] = {"window": window, "in_flight": in_flight,
                                "fill_s": filled_s}
        await meters.read(step, "sat")
        step["sat_msgs_per_s"] = (c2 - c1) / max(1e-9, t2 - t1)
        if step.get("cpu_sat_s") and c2 > c1:
            step["cpu_ms_per_msg_sat"] = 1000.0 * step["cpu_sat_s"] / (c2 - c1)
        steps.append(step)
        grew = best is None or step["sat_msgs_per_s"] >= _SAT_GAIN * best["sat_msgs_per_s"]
        if best is None or step["sat_msgs_per_s"] > best["sat_msgs_per_s"]:
            best = step
        window *= 2
        if not grew or window > _SAT_MAX_WINDOW or time.monotonic() + step_s > t_end:
            break
    gen.mode = "drain"
    assert best is not None
    out.update({k: v for k, v in best.items() if k not in ("window", "in_flight", "fill_s")})
    # GC is bursty (a full collection every few seconds): count it over the whole phase.
    out.update(await whole.read_gc("sat"))
    relayed = gen.counters.echoed - echoed_at_start
    if out.get("gc_collected_sat") is not None and relayed:
        out["gc_cycle_objects_per_msg"] = out["gc_collected_sat"] / relayed
    out["sat_window"] = best["window"]
    out["sat_steps"] = [{"window": s["window"], "msgs_per_s": s["sat_msgs_per_s"],
                         "cpu_pct": s.get("cpu_sat_pct"), "fill_s": s["fill_s"]}
                        for s in steps]
    out["sat_fill_s"] = best["fill_s"]


def _counts(gen: LoadGenerator, out: dict[str, Any]) -> None:
    c = gen.counters
    lost = sum(len(chat.outstanding) for chat in gen.by_idx)
    undelivered = sum(len(chat.undelivered) for chat in gen.by_idx)
    out.update({
        "started": c.started, "joined": c.joined, "connections_opened": c.connections,
        "connection_errors": c.connection_errors,
        "ended_unexpected": c.ended_unexpected, "ended_client": c.ended_client,
        "ended_reasons": dict(c.ended_reasons), "ended_details": dict(c.ended_details),
        "errors": dict(c.errors), "errors_total": c.errors_total,
        "sent": c.sent, "delivered": c.delivered, "echoed": c.echoed,
        "busy": c.busy, "lost": lost, "undelivered": undelivered,
        "duplicated": c.duplicated, "dup_seq": c.dup_seq, "dup_echo": c.dup_echo,
        "dup_delivered": c.dup_delivered, "seq_gaps": c.seq_gaps,
        "unknown_frames": c.unknown, "frames_in": c.frames_in, "acks_sent": c.acks,
    })
    if gen.last_join_ns and gen.first_start_ns:
        out["join_span_s"] = (gen.last_join_ns - gen.first_start_ns) / 1e9


def _derive(out: dict[str, Any]) -> None:
    joined = out.get("joined") or 0
    base, live = out.get("rss_base_kib"), out.get("rss_live_kib")
    if joined and base is not None and live is not None:
        out["rss_per_chat_kib"] = (live - base) / joined
    base, live = out.get("redis_rss_base_kib"), out.get("redis_rss_live_kib")
    if joined and base is not None and live is not None:
        out["redis_rss_per_chat_kib"] = (live - base) / joined
    fb, fl = out.get("fds_base"), out.get("fds_live")
    if joined and fb is not None and fl is not None:
        out["fds_per_chat"] = (fl - fb) / joined
    peak = out.get("fds_peak")
    if joined and peak is not None:
        out["fds_peak_per_chat"] = peak / joined
    fa = out.get("fds_after_load")
    if joined and fb is not None and fa is not None:
        out["fds_per_chat_after_load"] = (fa - fb) / joined
    tb, tl = out.get("tasks_base"), out.get("tasks_live")
    if joined and tb is not None and tl is not None:
        out["tasks_per_chat"] = (tl - tb) / joined
    tload = out.get("tasks_load")
    if joined and tb is not None and tload is not None:
        out["tasks_per_chat_load"] = (tload - tb) / joined


async def _run_all(opts: LoadTestOptions, workdir: Path, report: Report,
                   progress: Progress) -> None:
    deadline = time.monotonic() + opts.timeout_s
    for topology in opts.topologies:
        sat_ref: dict[str, float] = {}

        def latency_rate(out: dict[str, Any], _ref: dict[str, float] = sat_ref,
                         _top: Topology = topology) -> float:
            """The latency phase's message rate: half of bridged's saturation, or ``--rate``."""
            if opts.rate is not None:
                return opts.rate
            sat = out.get("sat_msgs_per_s")
            if out["target"] == "bridged" and sat:
                _ref["bridged"] = sat
            if "bridged" in _ref:
                return 0.5 * _ref["bridged"]
            if sat:
                return 0.5 * float(sat)
            return _top.chats / 10.0  # one message per chat every 10 s

        for target in opts.targets:
            progress.target, progress.topology, progress.phase = target, topology.key, "boot"
            progress.say(f"loadtest: {target}, {topology.label}")
            try:
                async with _processes(opts, target, topology, workdir) as ctx:
                    out = await _bench(opts, target, topology, ctx, latency_rate, progress,
                                       deadline)
                    out["server_exit"] = None
                    if ctx.server is not None:
                        out["server_log"] = str(ctx.server.log_path)
                if ctx.server is not None and ctx.server.proc is not None:
                    out["server_exit"] = ctx.server.proc.returncode
            except Exception as exc:  # one run failing must not lose the others' report
                detail = str(exc) if isinstance(exc, RuntimeError) else \
                    f"{type(exc).__name__}: {exc}"
                out = {"target": target, "topology": topology.key, "chats": topology.chats,
                       "connections": topology.connections, "failed": detail,
                       "nodes": opts.nodes if target == "cluster" else 1}
            report.add_run(out)
            progress.say(report.run_summary(out))


def fit_topologies(opts: LoadTestOptions, nofile: int) -> tuple[LoadTestOptions, list[str]]:
    """Fewer chats where the open-file limit cannot hold them, with a note for each.

    A live chat holds a descriptor in each server for its parked poll, and now and then one
    for a POST (kept alive a few seconds), plus its share of the OCP connections: bridged's
    own estimate (``bridged.ops.limits.fds_needed``), beyond which it answers ``capacity``. A
    bridged the load test did not start is not capped.
    """
    if opts.bridged_url and opts.targets == ("bridged",):
        return opts, []
    notes: list[str] = []
    fitted = []
    for topology in opts.topologies:
        most = topology.chats
        while most > 1 and fds_needed(most, min(topology.connections, most)) > nofile:
            most -= max(1, most // 100)
        if topology.chats > most:
            needed = fds_needed(topology.chats, topology.connections)
            notes.append(f"{topology.chats} chats over {topology.connections} connections "
                         f"need about {needed} open files per server, above this machine's"
                         f" limit of {nofile}: running {most} chats instead")
            topology = Topology(chats=most, connections=min(topology.connections, most))
        fitted.append(topology)
    return msgspec.structs.replace(opts, topologies=tuple(fitted)), notes


async def run_loadtest(opts: LoadTestOptions) -> Report:
    """Run every topology and target of ``opts``; the report, even when cut short."""
    nofile = raise_nofile_limit()
    opts, notes = fit_topologies(opts, nofile)
    own_workdir = opts.workdir is None
    workdir = Path(opts.workdir or tempfile.mkdtemp(prefix="bridged-loadtest-"))
    workdir.mkdir(parents=True, exist_ok=True)
    report = Report(opts, environment={
        "backend": opts.backend, "python": platform.python_version(), "machine": platform.machine(),
        "cpus": os.cpu_count(), "aiohttp": aiohttp.__version__,
        "msgspec": msgspec.__version__, "workdir": str(workdir),
    })
    report.notes.extend(notes)
    progress = Progress(opts.progress)
    for note in notes:
        progress.say(f"loadtest: note: {note}")
    progress.start()
    try:
        async with asyncio.timeout(opts.timeout_s):
            await _run_all(opts, workdir, report, progress)
    except TimeoutError:
        report.timed_out = True
    finally:
        await progress.stop()
        failed = any(r.get("failed") for r in report.runs)
        if own_workdir and not failed and not report.timed_out and not report.has_loss() \
                and not opts.py_spy:
            shutil.rmtree(workdir, ignore_errors=True)
            report.environment["workdir"] = None
    return report
