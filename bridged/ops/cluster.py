"""This node's part in a cluster: take over the chats of nodes that are gone, let go of lost ones.

The store (:class:`~bridged.state.redisstore.RedisStore`) decides who holds what, by lease
and fencing token; this module acts on its decisions in the node:

* every ``cluster.scan_interval_ms`` it asks the store for chats whose node's lease is gone,
  and claims those that rendezvous hashing gives to this node (any of them, once an orphan
  has waited three scans): a claimed chat is resumed exactly as after a restart, its first
  poll waiting out the old node's last one (timed by the store's clock);
* an ``attach`` for a chat this node does not hold claims it at once if its node is gone
  (the node a chat's connection is on takes it first), and otherwise is answered
  ``not_attached``, naming the node that holds it;
* a chat the store fenced (another node took it) is dropped: its actor stops, sends
  nothing more, and its connection here is told ``not_attached``;
* a lost lease drops every chat; a store that lost its data ends every chat, saying so.
"""

from __future__ import annotations

__all__ = ["Cluster"]

import asyncio
import hashlib
import logging
import time
from collections.abc import Callable

from redis.exceptions import RedisError

from bridged._log import log_event
from bridged.chats.chat import Chat, Link
from bridged.chats.dispatcher import Dispatcher
from bridged.chats.supervisor import ChatSupervisor
from bridged.config.file import ClusterConfig
from bridged.errors import Refused
from bridged.ocp import envelopes as env
from bridged.ocp.front import BotLink
from bridged.ops.metrics import Metrics
from bridged.state.redisstore import RedisStore
from bridged.state.store import KeptChat

log = logging.getLogger("bridged.ops.cluster")

STORE_LOST = "the shared state store lost its data; the chat cannot go on safely"


def _weight(chat: str, node: str) -> bytes:
    return hashlib.blake2b(f"{chat}\0{node}".encode(), digest_size=8).digest()


def _winner(chat: str, nodes: list[str]) -> str:
    """The live node rendezvous hashing gives ``chat`` to."""
    return max(nodes, key=lambda node: _weight(chat, node))


class Cluster:
    """Takeovers and drops for one node of a cluster.

    Args:
        config: the ``[cluster]`` section.
        store: the shared store.
        dispatcher: the node's chats.
        supervisor: their actors.
        resume: takes claimed chats in (the daemon's restart path).
    """

    def __init__(self, config: ClusterConfig, store: RedisStore, dispatcher: Dispatcher,
                 supervisor: ChatSupervisor, resume: Callable[[dict[str, KeptChat]], None],
                 metrics: Metrics) -> None:
        self._config = config
        self._store = store
        self._dispatcher = dispatcher
        self._supervisor = supervisor
        self._resume = resume
        self._metrics = metrics
        self._seen: dict[str, float] = {}  # orphan → when this node first saw it
        self._claiming: set[str] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._scanner: asyncio.Task[None] | None = None
        self.takeovers = 0
        self.nodes: list[str] = []
        store.on_fenced = self._drop
        store.on_lease_lost = self._drop_all
        store.on_store_lost = self._end_all
        dispatcher.accepting = store.may_send
        dispatcher.on_unknown_attach = self._unknown_attach

    def start(self) -> None:
        """Start looking for orphaned chats."""
        self._scanner = asyncio.create_task(self._scans(), name="cluster-scan")

    async def aclose(self) -> None:
        """Stop scanning and claiming. Idempotent."""
        tasks = [*self._tasks, *([self._scanner] if self._scanner else [])]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._scanner = None

    # --- taking over ----------------------------------------------------------------------

    async def _scans(self) -> None:
        interval = self._config.scan_interval_ms / 1000
        while True:
            await asyncio.sleep(interval)
            if not self._store.may_send() or self._dispatcher.draining:
                continue
            try:
                orphans, self.nodes = await self._store.scan()
            except RedisError as exc:
                self._store.store_errors += 1
                log_event(log, logging.WARNING, "cluster_scan_failed", detail=str(exc))
                continue
            now = time.monotonic()
            self._seen = {chat: self._seen.get(chat, now) for chat in orphans}
            for chat in orphans:
                if chat in self._claiming or self._store.holds(chat):
                    continue
                mine = not self.nodes or _winner(chat, self.nodes) == self._store.node
                if mine or now - self._seen[chat] >= 3 * interval:
                    await self._claim(chat)

    async def _claim(self, chat_id: str) -> bool:
        """Take ``chat_id`` over if its node is gone; ``True`` once it is this node's."""
        if self._store.holds(chat_id):
            return True
        self._claiming.add(chat_id)
        try:
            claimed = await self._store.claim(chat_id)
        except RedisError as exc:
            self._store.store_errors += 1
            log_event(log, logging.WARNING, "cluster_claim_failed", chat=chat_id,
                      detail=str(exc))
            return False
        finally:
            self._claiming.discard(chat_id)
        if claimed is None:
            return False
        self.takeovers += 1
        self._metrics.cluster_takeovers.inc()
        poll_sent = claimed.kept.poll_sent
        log_event(log, logging.INFO, "chat_taken_over", chat=chat_id, gen=claimed.gen,
                  last_poll_age_s=round(time.time() - poll_sent, 3) if poll_sent else None)
        self._resume({chat_id: claimed.kept})
        return True

    def _unknown_attach(self, link: Link, attach: env.Attach) -> bool:
        """An ``attach`` for a chat this node does not hold: claim it if its node is gone."""
        task = asyncio.create_task(self._attach_later(link, attach),
                                   name=f"cluster-attach:{attach.chat}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return True

    async def _attach_later(self, link: Link, attach: env.Attach) -> None:
        # A node just lost still holds its lease for up to its TTL: keep trying that long.
        deadline = time.monotonic() + (self._config.lease_ttl_ms
                                       + 2 * self._config.scan_interval_ms) / 1000
        try:
            while True:
                # (While this node renews or rejoins, it waits: it cannot claim meanwhile.)
                if attach.chat in self._dispatcher.live or (
                        self._store.may_send() and await self._claim(attach.chat)):
                    break
                if time.monotonic() > deadline:
                    _tell(link, env.Error(code="unknown_chat", chat=attach.chat, ref="attach",
                                          detail="no node of the cluster could take the chat"))
                    self._dispatcher.settle_attach(link, attach.chat)
                    return
                await asyncio.sleep(self._config.scan_interval_ms / 1000)
        except BaseException:
            self._dispatcher.settle_attach(link, attach.chat)
            raise
        waiting = self._dispatcher.settle_attach(link, attach.chat)
        for envelope in [attach, *waiting]:
            try:
                self._dispatcher.handle(link, envelope)
            except Refused as exc:  # answered as the front would
                _tell(link, env.Error(
                    code=exc.code, detail=exc.detail,
                    chat=exc.chat if exc.chat is not None else env.UNSET,
                    ref=exc.ref if exc.ref is not None else env.UNSET))

    # --- letting go -----------------------------------------------------------------------

    def _drop(self, chat_id: str) -> None:
        """Another node holds ``chat_id`` now: stop here, and tell its connection."""
        chat = self._dispatcher.drop(chat_id)
        if chat is None:
            return
        self._metrics.cluster_dropped.inc()
        link = chat.link
        self._spawn(self._supervisor.cancel(chat))
        if link is not None:
            # The messages it took in and did not answer: OCP sends them again (same ids)
            # once attached, and the node that holds the chat sends each once.
            for message_id in chat.pending_ids:
                _tell(link, env.Error(code="not_attached", chat=chat_id, ref=message_id,
                                      detail="this node no longer holds the chat: attach"
                                             " again, then send this message again"))
            _tell(link, env.Error(code="not_attached", chat=chat_id, ref="attach",
                                  detail="this node no longer holds the chat: attach again"))

    def _drop_all(self) -> None:
        for chat_id in [*self._dispatcher.live, *self._dispatcher.finished]:
            self._drop(chat_id)

    def _end_all(self) -> None:
        """The store lost its data: every chat here ends, saying so (never doubled)."""
        for chat in list(self._dispatcher.live.values()):
            self._spawn(self._end(chat))
        for chat_id in list(self._dispatcher.finished):
            self._dispatcher.drop(chat_id)

    async def _end(self, chat: Chat) -> None:
        await self._supervisor.cancel(chat)
        chat.persistent = False  # nothing can be kept any more: what OCP gets is final
        if not chat.finished:
            self._supervisor.fail(chat, STORE_LOST)

    def _spawn(self, coroutine: object) -> None:
        task = asyncio.ensure_future(coroutine)  # type: ignore[call-overload]
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)


_telling: set[asyncio.Future[None]] = set()


def _tell(link: Link, error: env.Error) -> None:
    """Send an ``error`` to a connection (one of the front's) without waiting for it."""
    if isinstance(link, BotLink):
        task = asyncio.ensure_future(link.send_control(error))
        _telling.add(task)
        task.add_done_callback(_telling.discard)
