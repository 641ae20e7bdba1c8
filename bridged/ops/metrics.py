"""Prometheus metrics, on a registry of bridged's own (never the process-global one).

The official ``prometheus-client`` writes the text format; bridged only counts. Label
children are cached so that counting one envelope is a dict lookup and an increment.
Figures that are cheaper to read than to keep (chats by state, queue depths, tasks) are
read at scrape time by a collector.
"""

from __future__ import annotations

__all__ = ["CONTENT_TYPE", "Metrics"]

import asyncio
import gc
import time
from collections.abc import Callable, Iterable
from typing import Any, cast

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    ProcessCollector,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.metrics import MetricWrapperBase
from prometheus_client.registry import Collector

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
# How old the scraped count of asyncio tasks may be (counting walks every task).
TASKS_COUNT_EVERY_S = 30.0

# Salesforce answers in milliseconds; a long poll is held for tens of seconds.
_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
# Redis answers in a millisecond or so; a renewal near cluster.socket_timeout_s is trouble.
_RENEW_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5)


class _Labelled:
    """A counter whose children are looked up once per label value."""

    def __init__(self, metric: MetricWrapperBase) -> None:
        self._metric = metric
        self._children: dict[tuple[str, ...], Counter] = {}

    def inc(self, *labels: str, amount: float = 1.0) -> None:
        child = self._children.get(labels)
        if child is None:
            child = self._children[labels] = cast(Counter, self._metric.labels(*labels))
        child.inc(amount)


class _ScrapeTime(Collector):
    """Calls ``read`` at each scrape; ``read`` yields the metric families."""

    def __init__(self, read: Callable[[], Iterable[Metric]]) -> None:
        self._read = read

    def collect(self) -> Iterable[Metric]:
        return self._read()


class Metrics:
    """Every metric bridged exports."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.connections = Gauge("bridged_connections", "WebSocket connections open now",
                                 registry=r)
        self.chats_started = _Labelled(Counter("bridged_chats_started",
                                               "Chats started, by backend", ["backend"],
                                               registry=r))
        self.chats_ended = _Labelled(Counter("bridged_chats_ended",
                                             "Chats ended, by backend and reason",
                                             ["backend", "reason"], registry=r))
        self.envelopes_in = _Labelled(Counter("bridged_envelopes_in",
                                              "Envelopes received from OCP, by type",
                                              ["type"], registry=r))
        self.envelopes_out = _Labelled(Counter("bridged_envelopes_out",
                                               "Envelopes sent to OCP, by type",
                                               ["type"], registry=r))
        self.errors = _Labelled(Counter("bridged_errors", "Error envelopes sent, by code",
                                        ["code"], registry=r))
        self.salesforce_requests = _Labelled(Counter(
            "bridged_salesforce_requests", "Requests to Salesforce, by backend, resource and"
            " status (the status is 'error' when no answer came)",
            ["backend", "resource", "status"], registry=r))
        self._salesforce_latency = Histogram(
            "bridged_salesforce_request_seconds",
            "Time to Salesforce's answer, by backend and resource",
            ["backend", "resource"], buckets=_LATENCY_BUCKETS, registry=r)
        self._latency_children: dict[tuple[str, str], Any] = {}
        self.messaging_stream_reconnects = Counter(
            "bridged_messaging_stream_reconnects",
            "Enhanced Chat event streams opened again (after a drop or a restart)", registry=r)
        self.messaging_pacing_waits = Counter(
            "bridged_messaging_pacing_waits",
            "Times a chat's visitor messages waited for Salesforce's per-conversation limit",
            registry=r)
        self.server_switches = _Labelled(Counter(
            "bridged_salesforce_switches", "Salesforce server switches (503), by outcome",
            ["outcome"], registry=r))
        self.history = _Labelled(Counter(
            "bridged_history_fetches", "Bot history fetches, by outcome", ["outcome"],
            registry=r))
        self.loop_lag = Gauge("bridged_event_loop_lag_seconds",
                              "How late the event loop ran a timer, last measurement",
                              registry=r)
        self.gc_seconds = Counter("bridged_gc_seconds", "Time spent in the garbage collector",
                                  registry=r)
        # Read by the alerting rules (conf/prometheus/bridged-rules.yml); the owners set
        # them with set_function, so that they say what /readyz and the config say.
        # Several nodes ([cluster]); the node's other figures are read at scrape time.
        self.cluster_takeovers = Counter("bridged_cluster_takeovers",
                                         "Chats this node took over from a node gone",
                                         registry=r)
        self.cluster_dropped = Counter("bridged_cluster_dropped",
                                       "Chats this node let go of (another node holds them)",
                                       registry=r)
        self.cluster_renew_seconds = Histogram(
            "bridged_cluster_lease_renew_seconds",
            "Round trip of each renewal of the node's lease in the shared store",
            buckets=_RENEW_BUCKETS, registry=r)
        self.cluster_forwarded = _Labelled(Counter(
            "bridged_cluster_forwarded_commands",
            "Commands from OCP this node forwarded to the node holding their chat, by kind",
            ["kind"], registry=r))
        self.cluster_moves = Counter("bridged_cluster_moves",
                                     "Chats this node handed over at a safe point (a move to"
                                     " an attach's node, or a drain)", registry=r)
        self.ready = Gauge("bridged_ready", "1 while bridged takes new chats (/readyz answers"
                           " 200), 0 while it does not", registry=r)
        self.max_chats = Gauge("bridged_max_chats", "server.max_chats: the most chats bridged"
                               " holds", registry=r)
        # The official client's process figures (CPU, memory, open files and their limit),
        # which a registry of one's own does not get by default.
        ProcessCollector(registry=r)
        self._gc_started = 0.0
        self._read_live: Callable[[], Iterable[Metric]] | None = None
        self._read_more: list[Callable[[], Iterable[Metric]]] = []
        self._tasks_counted: tuple[float, int] | None = None  # (when, how many)
        r.register(_ScrapeTime(self._scrape))

    # --- what the rest of bridged reports ------------------------------------------------

    def salesforce_answered(self, backend: str, resource: str, status: str,
                            seconds: float) -> None:
        """Count one answer (or none: ``status`` "error") from Salesforce, and its time."""
        self.salesforce_requests.inc(backend, resource, status)
        child = self._latency_children.get((backend, resource))
        if child is None:
            child = self._latency_children[(backend, resource)] = (
                self._salesforce_latency.labels(backend, resource))
        child.observe(seconds)

    def _count_tasks(self) -> int:
        """The asyncio tasks alive, counted at most every :data:`TASKS_COUNT_EVERY_S`.

        ``asyncio.all_tasks()`` walks every task: at 19,000 chats (38,000 tasks) that kept
        the event loop for 25 to 70 ms, on every scrape (py-spy on a load test).
        """
        now = time.monotonic()
        if self._tasks_counted is None or now - self._tasks_counted[0] >= TASKS_COUNT_EVERY_S:
            try:
                count = len(asyncio.all_tasks())
            except RuntimeError:  # scraped from outside a loop (tests)
                return 0
            self._tasks_counted = (now, count)
        return self._tasks_counted[1]

    def read_live(self, read: Callable[[], Iterable[Metric]]) -> None:
        """Give the scrape-time reader of chats by state and queue depths."""
        self._read_live = read

    def read_more(self, read: Callable[[], Iterable[Metric]]) -> None:
        """Add a scrape-time reader of a backend's own figures."""
        self._read_more.append(read)

    def _scrape(self) -> Iterable[Metric]:
        tasks = GaugeMetricFamily("bridged_tasks", "asyncio tasks alive (actors and requests)")
        tasks.add_metric([], self._count_tasks())
        yield tasks
        if self._read_live is not None:
            yield from self._read_live()
        for read in self._read_more:
            yield from read()

    # --- the process --------------------------------------------------------------------

    def watch_gc(self) -> None:
        """Count the time the garbage collector runs (its share of CPU is a scale figure)."""
        if self._gc_callback not in gc.callbacks:
            gc.callbacks.append(self._gc_callback)

    def unwatch_gc(self) -> None:
        if self._gc_callback in gc.callbacks:
            gc.callbacks.remove(self._gc_callback)

    def _gc_callback(self, phase: str, _info: dict[str, Any]) -> None:
        if phase == "start":
            self._gc_started = time.perf_counter()
        elif self._gc_started:
            self.gc_seconds.inc(time.perf_counter() - self._gc_started)
            self._gc_started = 0.0

    async def measure_loop_lag(self, interval: float = 1.0) -> None:
        """Measure how late a timer fires, every ``interval`` seconds, until cancelled."""
        loop = asyncio.get_running_loop()
        while True:
            expected = loop.time() + interval
            await asyncio.sleep(interval)
            self.loop_lag.set(max(0.0, loop.time() - expected))

    def render(self) -> bytes:
        """The Prometheus text format of every metric."""
        return generate_latest(self.registry)
