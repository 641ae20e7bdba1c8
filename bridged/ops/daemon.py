"""The composition root: builds bridged from its config, runs it, and stops it in order.

Start order: metrics, state store, transports, backends (Live Agent and Enhanced Chat, both
at once), supervisor, dispatcher, front; then the kept chats are resumed, each by the backend
its record names (their long polls and event streams start at once, their events are held
until OCP attaches), and only then does the listener open.

Stop order (under ``server.shutdown_budget_s``), the reverse, with a drain first:

1. drain: ``/readyz`` answers 503 and ``start`` gets ``capacity``;
2. close every OCP connection with 1001;
3. with ``[cluster]``: release each chat at its actor's next safe point (within a quarter of
   the budget), for another node to take it and poll at once;
4. stop the actors (cancelled; chats are kept, not ended toward Salesforce);
5. write what the state store still holds, and close it (with ``[cluster]``: give the
   lease up, so that the other nodes claim what is left at once);
6. close the Salesforce connection pool;
7. close the listener.
"""

from __future__ import annotations

__all__ = ["Daemon", "serve"]

import asyncio
import gc
import logging
import signal
import socket
import ssl
from collections.abc import Awaitable, Iterable
from pathlib import Path
from typing import Any

import msgspec
from aiohttp import web
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from bridged._log import log_event
from bridged.chats.chat import Chat, ChatRecord, ChatStatic
from bridged.chats.dispatcher import Dispatcher
from bridged.chats.supervisor import ChatSupervisor
from bridged.config.file import ClusterConfig, Config, load_config, split_listen
from bridged.config.webchat import AnyWebchat
from bridged.errors import ConfigError
from bridged.history.handover import HistoryHandover
from bridged.ocp.envelopes import ChatEvent, Ended
from bridged.ocp.front import Front
from bridged.ops.cluster import Cluster
from bridged.ops.gcpolicy import GrowthCollector
from bridged.ops.limits import chats_that_fit, fds_needed, raise_nofile_limit
from bridged.ops.metrics import Metrics
from bridged.ops.systemd import Notifier, watchdog_pings
from bridged.salesforce.backend import Backends, backend_name, backend_name_of
from bridged.salesforce.liveagent.actor import LiveAgentBackend
from bridged.salesforce.liveagent.transport import AiohttpTransport, Transport
from bridged.salesforce.messaging.actor import MessagingBackend
from bridged.salesforce.messaging.transport import (
    AiohttpMessagingTransport,
    MessagingTransport,
)
from bridged.state.redisstore import RedisStore
from bridged.state.sqlite import StateStore
from bridged.state.store import Drop, Item, KeptChat, Store

log = logging.getLogger("bridged.ops.daemon")


class Daemon:
    """One bridged instance.

    Args:
        config: the validated config.
        transport: the Live Agent transport (tests inject one); a real one by default.
        messaging_transport: the Enhanced Chat transport; a real one by default.
        config_path: where SIGHUP reloads the config from.
    """

    def __init__(self, config: Config, *, transport: Transport | None = None,
                 messaging_transport: MessagingTransport | None = None,
                 config_path: str | Path | None = None) -> None:
        self.config = config
        self.config_path = config_path
        self.metrics = Metrics()
        interval = config.state.commit_interval_ms
        # [cluster]: the chats are shared through Redis; otherwise kept in state.dir.
        self.store: Store = (
            RedisStore(config.cluster) if config.cluster.node else
            StateStore(config.state.dir, config.state.synchronous,
                       None if interval is None else interval / 1000))
        # Whether this node may send is asked again as each request leaves its pool's queue.
        self._transport = transport or AiohttpTransport(
            config.salesforce.max_connections, config.salesforce.keepalive_s,
            config.salesforce.max_request_connections, may_send=self.store.may_send)
        history = (HistoryHandover(config.history, self.metrics)
                   if config.history.base_url else None)
        salesforce = config.salesforce
        # Both backends serve at once; each chat goes to the one its type names.
        self.backends = Backends(
            LiveAgentBackend(self._transport, salesforce,
                             max_pending=config.server.max_pending_messages,
                             history=history, store=self.store, metrics=self.metrics),
            MessagingBackend(messaging_transport or AiohttpMessagingTransport(
                                 salesforce.max_connections, salesforce.keepalive_s,
                                 salesforce.max_request_connections,
                                 may_send=self.store.may_send),
                             salesforce, max_pending=config.server.max_pending_messages,
                             history=history, store=self.store, metrics=self.metrics))
        self.supervisor = ChatSupervisor(self._run_chat, on_crashed=self._keep_finished)
        self.dispatcher = Dispatcher(config, self.supervisor, on_chat_event=self._count_event)
        self.dispatcher.on_forget = self.store.delete
        self.metrics.read_live(self._live_metrics)
        self.metrics.max_chats.set_function(lambda: self.config.server.max_chats)
        self.node = config.cluster.node or config.server.node or socket.gethostname()
        self.cluster = (Cluster(config.cluster, self.store, self.dispatcher, self.supervisor,
                                self._resume, self.metrics)
                        if isinstance(self.store, RedisStore) else None)
        self.front = Front(config.server, self.dispatcher, self.metrics, self.node)
        if isinstance(self.store, RedisStore):
            self.front.cluster_store = self.store
            self.store.on_renewed = self.metrics.cluster_renew_seconds.observe
        self.fd_limit: int | None = None
        self._runner: web.AppRunner | None = None
        self._lag: asyncio.Task[None] | None = None
        self.port = 0
        self._stopped = False

    def use_fd_limit(self, limit: int) -> None:
        """Answer ``capacity`` rather than run out of descriptors; warn if max_chats cannot fit."""
        self.fd_limit = limit
        # Both backends' request pools.
        pools = 2 * self.config.salesforce.max_request_connections
        self.dispatcher.fds_left = lambda: fds_needed(
            len(self.dispatcher.live) + 1, self.front.connection_count, pools) <= limit
        needed = fds_needed(self.config.server.max_chats, 1, pools)
        if needed > limit:
            log_event(log, logging.WARNING, "fd_limit_too_low", limit=limit,
                      max_chats=self.config.server.max_chats, needed=needed,
                      chats_that_fit=chats_that_fit(limit, 1, pools),
                      detail="raise LimitNOFILE (systemd) or lower server.max_chats")

    def _live_metrics(self) -> Iterable[Metric]:
        """Chats by state and the depths of their queues, read at scrape time."""
        # By the configuration's type, named after the walk: at 19,000 chats the walk is
        # a scrape's main cost, so each chat costs it a few lookups and no call.
        by_type: dict[tuple[type[AnyWebchat], str], int] = {}
        inbox = held = 0
        for chat in self.dispatcher.live.values():
            key = (type(chat.webchat), chat.state)
            by_type[key] = by_type.get(key, 0) + 1
            inbox += len(chat.inbox)
            held += len(chat.held)
        by_state: dict[tuple[str, str], int] = {}
        for (kind, state), count in by_type.items():
            named = (backend_name_of(kind), state)
            by_state[named] = by_state.get(named, 0) + count
        for chat in self.dispatcher.finished.values():
            held += len(chat.held)
        states = GaugeMetricFamily("bridged_chats_live", "Chats live now, by backend and state",
                                   labels=["backend", "state"])
        for (backend, state), count in sorted(by_state.items()):
            states.add_metric([backend, state], count)
        yield states
        yield GaugeMetricFamily("bridged_chats_finished_held",
                                "Ended chats whose ended event OCP has not acknowledged",
                                value=len(self.dispatcher.finished))
        yield GaugeMetricFamily("bridged_inbox_depth",
                                "Visitor commands waiting in chat inboxes", value=inbox)
        yield GaugeMetricFamily("bridged_held_events",
                                "Events held for OCP (unsent or unacknowledged)", value=held)
        control, ready = self.front.queue_depths()
        yield GaugeMetricFamily("bridged_outbound_control_depth",
                                "Control frames waiting on connections", value=control)
        yield GaugeMetricFamily("bridged_outbound_ready_chats",
                                "Chats with events waiting for their connection's writer",
                                value=ready)
        stats = self.store.statistics()
        yield GaugeMetricFamily("bridged_state_pending", "Chat snapshots not yet committed",
                                value=stats.pending)
        yield CounterMetricFamily("bridged_state_commits", "State store commits",
                                  value=stats.commits)
        yield CounterMetricFamily("bridged_state_commit_seconds",
                                  "Time spent committing the state store",
                                  value=stats.commit_seconds)
        yield CounterMetricFamily("bridged_state_commit_failures",
                                  "State store commits that failed (tried again a second later)",
                                  value=stats.commit_failures)
        if isinstance(self.store, RedisStore):
            yield from _cluster_metrics(self.store, self.config.cluster,
                                        self.cluster.nodes if self.cluster else [])

    def _keep_finished(self, chat: Chat) -> None:
        """Keep a chat whose actor crashed, so that its ``ended`` is durable, then sent."""
        record = ChatRecord(chat=chat.snapshot())
        upto = chat.next_seq - 1
        items: list[Item] = []
        drops: list[Drop] = []
        chat.kept_changes(items, drops)
        self.store.save(chat.id, record.encode(), lambda: chat.mark_durable(upto),
                        static=chat.static(backend_name(chat.webchat)).encode(),
                        delivered=chat.take_new_delivered(), items=items, drops=drops)

    def _run_chat(self, chat: Chat, resume: Any) -> Awaitable[None]:
        """Serve ``chat`` with the backend its type names (counted once, when new).

        The backend's own coroutine, not one awaiting it: a frame less held per live chat.
        """
        if resume is None:
            self.metrics.chats_started.inc(backend_name(chat.webchat))
        return self.backends.run_chat(chat, resume)

    def _count_event(self, event: ChatEvent) -> None:
        if isinstance(event, Ended):
            # Emitted while the chat is still live (before it is marked finished).
            chat = self.dispatcher.live.get(event.chat)
            backend = backend_name(chat.webchat) if chat is not None else "unknown"
            self.metrics.chats_ended.inc(backend, event.reason)

    @property
    def url(self) -> str:
        """The WebSocket URL OCP connects to."""
        host, _ = split_listen(self.config.server.listen)
        scheme = "wss" if self.config.server.tls_cert else "ws"
        host = f"[{host}]" if ":" in host else host
        return f"{scheme}://{host}:{self.port}/v1/chat"

    async def start(self) -> None:
        """Resume the kept chats, then listen.

        Raises:
            OSError: the state directory cannot be used, or the address cannot be bound.
        """
        self._resume(await self.store.load())
        if self.cluster is not None:
            self.cluster.start()
        self.metrics.watch_gc()
        self._lag = asyncio.create_task(self.metrics.measure_loop_lag(), name="loop-lag")
        server = self.config.server
        host, port = split_listen(server.listen)
        ssl_context = None
        if server.tls_cert:
            ssl_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            ssl_context.load_cert_chain(server.tls_cert, server.tls_key)
        self._runner = web.AppRunner(self.front.app, access_log=None, handle_signals=False,
                                     shutdown_timeout=1.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, port, ssl_context=ssl_context,
                           backlog=4096, reuse_address=True)
        await site.start()
        addresses = self._runner.addresses  # the bound port, when the config asked for 0
        self.port = addresses[0][1] if addresses else port
        log_event(log, logging.INFO, "listening", url=self.url, node=self.node)

    def _resume(self, kept: dict[str, KeptChat]) -> None:
        """Take back every kept chat; a live one goes on with its Salesforce session."""
        server = self.config.server
        resumed = 0
        for chat_id, row in kept.items():
            try:
                static = ChatStatic.decode(row.static)
                record = ChatRecord.decode(row.snapshot)
                try:
                    backend = self.backends.get(static.backend)
                except KeyError:
                    raise ValueError(f"unknown backend {static.backend!r}") from None
                resume = None if record.chat.finished else backend.resume_from(
                    static.backend_static, record.state, row.poll_sent, row.lists)
                chat = Chat.restore(static, record.chat, row.delivered, row.lists,
                                    inbox_size=server.mailbox_size,
                                    max_held=server.max_held_events)
            except (msgspec.DecodeError, ValueError) as exc:
                log_event(log, logging.ERROR, "kept_chat_unreadable", chat=chat_id,
                          detail=str(exc))
                self.store.delete(chat_id)
                continue
            if static.start.history_token is not None:
                # Kept by an earlier version: OCP's token is used once and never kept.
                self.store.save(chat_id, row.snapshot, static=chat.static(
                    static.backend, static.backend_static).encode())
            self.dispatcher.adopt(chat)
            if resume is not None:
                self.supervisor.spawn(chat, resume)
                resumed += 1
        if kept:
            log_event(log, logging.INFO, "chats_resumed", live=resumed,
                      finished=len(kept) - resumed)

    async def stop(self) -> None:
        """Drain and stop, in the documented order, within the budget. Idempotent."""
        if self._stopped:
            return
        self._stopped = True
        budget = self.config.server.shutdown_budget_s
        self.dispatcher.draining = True
        log_event(log, logging.INFO, "draining", live_chats=len(self.dispatcher.live))
        try:
            async with asyncio.timeout(budget / 2):
                await self.front.close_connections()
        except TimeoutError:
            log_event(log, logging.WARNING, "connections_not_closed_in_time")
        if self._lag is not None:
            self._lag.cancel()
            await asyncio.gather(self._lag, return_exceptions=True)
        self.metrics.unwatch_gc()
        if self.cluster is not None:
            # Several nodes: each chat is released at its actor's next safe point, so that
            # the node that takes it polls at once (no poll gap); the rest are left to LEAVE.
            await self.cluster.hand_over(budget / 4)
            await self.cluster.aclose()
        await self.supervisor.aclose(budget / 4)
        await self.store.aclose(budget / 4)
        await self.backends.aclose()
        if self._runner is not None:
            await self._runner.cleanup()
        log_event(log, logging.INFO, "stopped")

    def reload(self) -> None:
        """Re-read the config file: new profiles and tokens; a bad file changes nothing."""
        if self.config_path is None:
            return
        try:
            new = load_config(self.config_path)
        except ConfigError as exc:
            log_event(log, logging.ERROR, "reload_refused", detail=str(exc))
            return
        # Only what can change safely in a running process changes.
        self.config = new
        self.dispatcher.reconfigure(new)
        self.front.reconfigure(new.server)
        self.backends.reconfigure(new.salesforce)
        log_event(log, logging.INFO, "reloaded", profiles=len(new.profiles),
                  tokens=len(new.server.tokens))


def _cluster_metrics(store: RedisStore, cluster: ClusterConfig,
                     nodes: list[str]) -> Iterable[Metric]:
    """This node's figures in the cluster, read at scrape time (the renewals' round trips are
    a histogram, ``bridged_cluster_lease_renew_seconds``, observed as they come)."""
    yield GaugeMetricFamily("bridged_cluster_chats_held", "Chats this node holds now",
                            value=store.held_count)
    yield GaugeMetricFamily("bridged_cluster_lease_remaining_seconds",
                            "Seconds left before the node's local lease deadline",
                            value=max(0.0, store.lease_remaining))
    yield GaugeMetricFamily("bridged_cluster_lease_ttl_seconds",
                            "cluster.lease_ttl_ms in seconds: what the remaining lease is"
                            " measured against", value=cluster.lease_ttl_ms / 1000)
    yield GaugeMetricFamily("bridged_cluster_nodes_live",
                            "Nodes whose lease was live at this node's last scan",
                            value=len(nodes))
    yield CounterMetricFamily("bridged_cluster_store_errors",
                              "Calls to the shared store that failed", value=store.store_errors)
    yield CounterMetricFamily("bridged_cluster_lease_losses",
                              "Times this node lost its lease, or found the store's data"
                              " gone (it dropped every chat and joined again)",
                              value=store.lease_losses)


async def serve(config: Config, config_path: str | Path | None = None) -> int:
    """Run bridged until SIGTERM or SIGINT; SIGHUP reloads. Returns the exit code.

    systemd is told READY=1 once bridged listens (kept chats resumed), RELOADING=1 and
    READY=1 around a reload, STOPPING=1 when it stops, and WATCHDOG=1 from the event loop.
    """
    notifier = Notifier()
    daemon = Daemon(config, config_path=config_path)
    daemon.use_fd_limit(raise_nofile_limit())
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()

    def reload() -> None:
        notifier.reloading()
        daemon.reload()
        notifier.ready(f"{len(daemon.dispatcher.live)} chats")

    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)
    loop.add_signal_handler(signal.SIGHUP, reload)
    try:
        await daemon.start()
    except OSError as exc:
        log_event(log, logging.ERROR, "cannot_start", listen=config.server.listen,
                  state_dir=config.state.dir, detail=exc.strerror or str(exc))
        await daemon.stop()
        return 1
    # Thousands of chats make a large, long-lived heap that the collector would rescan
    # constantly, while bridged makes no reference cycles on its paths: objects made at
    # start-up are frozen out of every scan, and (policy "growth") collections run only
    # when the heap grew (bridged/ops/gcpolicy.py; what was measured: README).
    gc.set_threshold(*config.server.gc_thresholds)
    gc.freeze()
    background = [asyncio.create_task(watchdog_pings(notifier), name="sd-watchdog")]
    collector = None
    if config.server.gc_policy == "growth":
        collector = GrowthCollector(config.server.gc_growth,
                                    population=lambda: len(daemon.dispatcher.live))
        collector.start()
        background.append(asyncio.create_task(collector.run(), name="gc-growth"))
    notifier.ready(f"{len(daemon.dispatcher.live)} chats")
    try:
        await stop.wait()
    finally:
        notifier.stopping()
        await daemon.stop()
        for task in background:
            task.cancel()
        await asyncio.gather(*background, return_exceptions=True)
        if collector is not None:
            collector.stop()
        notifier.close()
    return 0
