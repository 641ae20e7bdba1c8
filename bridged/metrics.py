"""Prometheus metrics, on a registry of bridged's own (never the process-global one).

The official ``prometheus-client`` writes the text format; bridged only counts. Label
children are cached so that counting one envelope is a dict lookup and an increment.
"""

from __future__ import annotations

__all__ = ["Metrics"]

from collections.abc import Callable
from typing import cast

from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest
from prometheus_client.metrics import MetricWrapperBase

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class _Labelled:
    """A counter whose children are looked up once per label value."""

    def __init__(self, metric: MetricWrapperBase) -> None:
        self._metric = metric
        self._children: dict[str, Counter] = {}

    def inc(self, label: str, amount: float = 1.0) -> None:
        child = self._children.get(label)
        if child is None:
            child = self._children[label] = cast(Counter, self._metric.labels(label))
        child.inc(amount)


class Metrics:
    """Every metric bridged exports."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.chats_live = Gauge("bridged_chats_live", "Chats live now", registry=r)
        self.connections = Gauge("bridged_connections", "WebSocket connections open now",
                                 registry=r)
        self.chats_started = Counter("bridged_chats_started", "Chats started", registry=r)
        self.chats_ended = _Labelled(Counter("bridged_chats_ended", "Chats ended, by reason",
                                             ["reason"], registry=r))
        self.envelopes_in = _Labelled(Counter("bridged_envelopes_in",
                                              "Envelopes received from OCP, by type",
                                              ["type"], registry=r))
        self.envelopes_out = _Labelled(Counter("bridged_envelopes_out",
                                               "Envelopes sent to OCP, by type",
                                               ["type"], registry=r))
        self.errors = _Labelled(Counter("bridged_errors", "Error envelopes sent, by code",
                                        ["code"], registry=r))

    def track_live(self, count: Callable[[], int]) -> None:
        """Read the live chat count from ``count`` at each scrape."""
        self.chats_live.set_function(count)

    def render(self) -> bytes:
        """The Prometheus text format of every metric."""
        return generate_latest(self.registry)
