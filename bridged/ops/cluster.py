"""This node's part in a cluster: take over the chats of nodes that are gone, let go of lost ones.

The store (:class:`~bridged.state.redisstore.RedisStore`) decides who holds what, by lease
and fencing token; this module acts on its decisions in the node:

* every ``cluster.scan_interval_ms`` it asks the store for chats whose node's lease is gone,
  and claims those that rendezvous hashing gives to this node (any of them, once an orphan
  has waited three scans): a claimed chat is resumed exactly as after a restart, its first
  poll waiting out the old node's last one (timed by the store's clock);
* an ``attach`` for a chat this node does not hold claims it at once if its node is gone
  (the node a chat's connection is on takes it first); if a live node holds it, this node
  asks that node to *move* it here (through the holder's forward stream ``b:fwd:<node>``)
  and forwards what the connection sends for the chat meanwhile (``message``, ``typing``,
  ``end``, ``ack``), which the holder applies as from a connection; the holder lets go of
  the chat at its actor's next safe point (:meth:`Chat.request_release`: nothing in flight
  to Salesforce, everything committed), releases it in the store and says so, and this node
  claims it with no poll to wait out, then applies again what it forwarded (idempotent: a
  message keeps its id) and replays the kept events to the connection;
* ``start`` of a chat id first looks for a live chat of that id on another node
  (``chat_exists``);
* SIGTERM (:meth:`Cluster.hand_over`): every chat is released at its safe point within
  the drain budget, so the nodes that claim them poll at once;
* a chat the store fenced (another node took it) is dropped: its actor stops, sends
  nothing more, and its connection here is told ``not_attached``;
* a lost lease drops every chat; a store that lost its data ends every chat, saying so.
"""

from __future__ import annotations

__all__ = ["Cluster"]

import asyncio
import contextlib
import hashlib
import logging
import time
from collections import deque
from collections.abc import Callable

import msgspec
from redis.exceptions import RedisError

from bridged._log import log_event
from bridged.chats.chat import Chat, ChatRecord, Link
from bridged.chats.dispatcher import Dispatcher
from bridged.chats.supervisor import ChatSupervisor
from bridged.config.file import ClusterConfig
from bridged.errors import ChatExists, Refused
from bridged.ocp import envelopes as env
from bridged.ocp.front import BotLink
from bridged.ops.metrics import Metrics
from bridged.state.redisstore import Held, RedisStore
from bridged.state.store import KeptChat

log = logging.getLogger("bridged.ops.cluster")

STORE_LOST = "the shared state store lost its data; the chat cannot go on safely"


def _weight(chat: str, node: str) -> bytes:
    return hashlib.blake2b(f"{chat}\0{node}".encode(), digest_size=8).digest()


def _winner(chat: str, nodes: list[str]) -> str:
    """The live node rendezvous hashing gives ``chat`` to."""
    return max(nodes, key=lambda node: _weight(chat, node))


_inbound = msgspec.json.Decoder(env.Inbound)


class _Attach:
    """An ``attach`` on this node for a chat this node does not hold, being settled."""

    __slots__ = ("chat", "holder", "link", "moved", "outbox", "sender")

    def __init__(self, link: Link, chat: str) -> None:
        self.link = link
        self.chat = chat
        self.holder: str | None = None  # the live node asked to move the chat here
        self.moved = asyncio.Event()  # the holder said it released the chat
        # Entries for holders' forward streams, (holder, kind, fields), sent in order.
        self.outbox: deque[tuple[str, str, dict[str, str]]] = deque()
        self.sender: asyncio.Future[None] | None = None


class Cluster:
    """Takeovers, moves, forwarding and drops for one node of a cluster.

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
        self._tasks: set[asyncio.Future[None]] = set()
        self._scanner: asyncio.Task[None] | None = None
        self._reader: asyncio.Task[None] | None = None
        self._attaching: dict[tuple[str, str], _Attach] = {}  # (link id, chat) → settling
        self._moving: set[str] = set()  # chats this node is letting go of
        self._asked: dict[str, str] = {}  # chat → the node that asked for it to move there
        self.takeovers = 0
        self.nodes: list[str] = []
        store.on_fenced = self._drop
        store.on_lease_lost = self._drop_all
        store.on_store_lost = self._end_all
        dispatcher.accepting = store.may_send
        dispatcher.on_unknown_attach = self._unknown_attach
        dispatcher.on_start = self._check_start
        dispatcher.on_awaiting = self._awaited

    def start(self) -> None:
        """Start looking for orphaned chats, and reading this node's forward stream."""
        self._scanner = asyncio.create_task(self._scans(), name="cluster-scan")
        self._reader = asyncio.create_task(self._forwards(), name="cluster-forwards")

    async def aclose(self) -> None:
        """Stop scanning, claiming and reading forwards. Idempotent."""
        own = [task for task in (self._scanner, self._reader) if task is not None]
        tasks = [*self._tasks, *own]
        # Bounded: a task spawned meanwhile, or one whose cancellation a client library
        # swallowed, is cancelled again; none keeps the node from stopping.
        for _ in range(3):
            for task in tasks:
                task.cancel()
            _done, pending = await asyncio.wait(tasks, timeout=1.0) if tasks else ((), ())
            tasks = [*pending, *(task for task in self._tasks if not task.done())]
            if not tasks:
                break
        self._scanner = self._reader = None

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

    async def _claim(self, chat_id: str) -> bool | Held:
        """Take ``chat_id`` over if its node is gone or released it; ``True`` once it is
        this node's, :class:`Held` if a live node holds it."""
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
        if isinstance(claimed, Held):
            return claimed
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
        config = self._config
        interval = config.scan_interval_ms / 1000
        # A node just lost still holds its lease for up to its TTL: keep trying that long;
        # a live holder asked to move the chat has move_timeout_ms to let go of it.
        deadline = time.monotonic() + (config.lease_ttl_ms + 2 * config.scan_interval_ms) / 1000
        pending = self._attaching[(link.id, attach.chat)] = _Attach(link, attach.chat)
        try:
            while True:
                # (While this node renews or rejoins, it waits: it cannot claim meanwhile.)
                if attach.chat in self._dispatcher.live or attach.chat in self._dispatcher.finished:
                    break
                if self._store.may_send():
                    claimed = await self._claim(attach.chat)
                    if claimed is True:
                        break
                    if isinstance(claimed, Held) and claimed.node != pending.holder:
                        pending.holder = claimed.node
                        deadline = time.monotonic() + (config.move_timeout_ms
                                                       + config.lease_ttl_ms) / 1000
                        self._ask_move(pending)
                if time.monotonic() > deadline:
                    self._attach_failed(pending)
                    return
                pending.moved.clear()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(interval):
                        await pending.moved.wait()
        except BaseException:
            self._dispatcher.settle_attach(link, attach.chat)
            raise
        finally:
            self._attaching.pop((link.id, attach.chat), None)
        waiting = self._dispatcher.settle_attach(link, attach.chat)
        # Applied again here what was forwarded (the holder may have taken it in: then a
        # message is not sent again, and it is answered by its ``delivered``).
        for envelope in [attach, *waiting]:
            try:
                self._dispatcher.handle(link, envelope)
            except Refused as exc:  # answered as the front would
                _tell(link, _error(exc))

    def _attach_failed(self, pending: _Attach) -> None:
        """The chat could not be brought here in time: say so, for the attach and for each
        message that waited with it (none of them was answered)."""
        link, chat_id = pending.link, pending.chat
        waiting = self._dispatcher.settle_attach(link, chat_id)
        if pending.holder is None:
            code, detail = "unknown_chat", "no node of the cluster could take the chat"
        else:
            code = "not_attached"
            detail = (f"node {pending.holder} holds the chat and did not hand it over in"
                      f" time (cluster.move_timeout_ms); attach again")
        log_event(log, logging.WARNING, "cluster_attach_failed", chat=chat_id,
                  holder=pending.holder, code=code)
        for envelope in waiting:
            if isinstance(envelope, env.Message):
                _tell(link, env.Error(code=code, chat=chat_id, ref=envelope.id,
                                      detail=detail + ", then send this message again"))
        _tell(link, env.Error(code=code, chat=chat_id, ref="attach", detail=detail))

    # --- moving a chat here: forwarding to its holder ---------------------------------------

    def _ask_move(self, pending: _Attach) -> None:
        """Ask the chat's holder to move it here; forward what the link sent meanwhile."""
        holder = pending.holder
        assert holder is not None
        log_event(log, logging.INFO, "chat_move_asked", chat=pending.chat, holder=holder)
        # In one step with setting the holder: whatever the link sends from now on is
        # queued after these (see _awaited), so the holder gets them all in order.
        self._enqueue(pending, "move", {"kind": "move", "chat": pending.chat,
                                        "to": self._store.node})
        for envelope in self._dispatcher.awaiting(pending.link, pending.chat):
            self._forward_command(pending, envelope)

    def _awaited(self, link: Link, envelope: env.Inbound) -> None:
        """The link sent ``envelope`` for a chat being attached: on to its holder, if any."""
        pending = self._attaching.get((link.id, envelope.chat))
        if pending is not None and pending.holder is not None:
            self._forward_command(pending, envelope)

    def _forward_command(self, pending: _Attach, envelope: env.Inbound) -> None:
        self._enqueue(pending, str(envelope.__struct_config__.tag), {
            "kind": "command", "chat": pending.chat, "from": self._store.node,
            "link": pending.link.id, "envelope": msgspec.json.encode(envelope).decode()})

    def _enqueue(self, pending: _Attach, what: str, fields: dict[str, str]) -> None:
        """Queue one entry for the holder's stream; one sender per attach keeps the order."""
        assert pending.holder is not None
        pending.outbox.append((pending.holder, what, fields))
        if pending.sender is None or pending.sender.done():
            pending.sender = self._spawn(self._send_forwards(pending))

    async def _send_forwards(self, pending: _Attach) -> None:
        """Send the attach's queued entries, in order (bounded: the link's waiting commands,
        which the dispatcher bounds, and one ``move`` per holder asked)."""
        while pending.outbox:
            holder, what, fields = pending.outbox.popleft()
            try:
                await self._store.forward(holder, fields)
            except RedisError as exc:
                # Not lost: what was forwarded is applied again here after the move.
                self._store.store_errors += 1
                log_event(log, logging.WARNING, "cluster_forward_failed", chat=pending.chat,
                          holder=holder, detail=str(exc))
                continue
            if fields["kind"] == "command":
                self._metrics.cluster_forwarded.inc(what)
                log_event(log, logging.DEBUG, "command_forwarded", chat=pending.chat,
                          holder=holder, command=what)

    async def _forwards(self) -> None:
        """Read this node's forward stream and act on each entry, until closed."""
        after: str | None = None
        block_ms = max(10, int(self._config.socket_timeout_s * 500))
        while True:
            try:
                after, entries = await self._store.forwarded(after, block_ms)
            except RedisError as exc:
                self._store.store_errors += 1
                log_event(log, logging.WARNING, "cluster_forwards_failed", detail=str(exc))
                await asyncio.sleep(self._config.scan_interval_ms / 1000)
                continue
            for entry in entries:
                try:
                    self._on_forward(entry)
                except (KeyError, ValueError, msgspec.DecodeError) as exc:
                    log_event(log, logging.WARNING, "cluster_forward_unreadable",
                              chat=entry.get("chat"), detail=str(exc))

    def _on_forward(self, entry: dict[str, str]) -> None:
        kind, chat_id = entry["kind"], entry["chat"]
        if kind == "move":
            if chat_id in self._dispatcher.live or chat_id in self._dispatcher.finished:
                self._asked[chat_id] = entry["to"]  # told once it is released (a drain too)
            # While draining, the hand-over releases every chat and tells the asking node.
            if chat_id not in self._moving and not self._dispatcher.draining:
                self._spawn(self._move(chat_id, entry["to"]))
        elif kind == "moved":
            for pending in self._attaching.values():
                if pending.chat == chat_id:
                    pending.moved.set()
        elif kind == "command":
            envelope = _inbound.decode(entry["envelope"])
            if envelope.chat != chat_id:
                raise ValueError("envelope: not for the entry's chat")
            refused = self._dispatcher.apply_forwarded(envelope)
            if refused is not None:
                self._spawn(self._reply(entry["from"], entry["link"], refused))
        elif kind == "reply":
            settling = self._attaching.get((entry["link"], chat_id))
            if settling is None:
                return  # that attach is settled already: the command is applied there
            ref = entry.get("ref", "")
            self._dispatcher.forget_awaiting(settling.link, chat_id, ref)
            _tell(settling.link, env.Error(code=entry["code"], detail=entry["detail"],
                                          chat=chat_id, ref=ref or env.UNSET))

    async def _reply(self, node: str, link_id: str, refused: Refused) -> None:
        """Send a refusal this node gave a forwarded command back to the node it came from."""
        try:
            await self._store.forward(node, {
                "kind": "reply", "chat": refused.chat or "", "link": link_id,
                "code": refused.code, "detail": refused.detail, "ref": refused.ref or ""})
        except RedisError as exc:
            self._store.store_errors += 1
            log_event(log, logging.WARNING, "cluster_forward_failed", chat=refused.chat,
                      holder=node, detail=str(exc))

    # --- moving a chat away -----------------------------------------------------------------

    async def _move(self, chat_id: str, to: str) -> None:
        """Let go of ``chat_id`` at its actor's next safe point, for node ``to`` to take it."""
        chat = self._dispatcher.live.get(chat_id) or self._dispatcher.finished.get(chat_id)
        if chat is None or not self._store.holds(chat_id) or chat_id in self._moving:
            return  # not this node's: the asking node finds the holder in the store
        self._moving.add(chat_id)
        try:
            if not await self._supervisor.release(chat, self._config.move_timeout_ms / 1000):
                self._asked.pop(chat_id, None)
                log_event(log, logging.WARNING, "chat_move_timed_out", chat=chat_id, to=to)
                return
            if not await self._let_go([chat]):
                return  # (released already, by a drain: the asking node was told then)
        finally:
            self._moving.discard(chat_id)
        if self._dispatcher.draining:
            return  # stopping: the chat is the cluster's, not to be taken back here
        # Nobody took it (the asking node is gone, say): it is this node's again.
        await asyncio.sleep(self._config.move_timeout_ms / 1000)
        if (chat_id in self._dispatcher.live or chat_id in self._dispatcher.finished
                or self._dispatcher.draining):
            return
        try:
            kept = await self._store.peek(chat_id)
        except RedisError:
            return  # the next move asked of it, or this node's lease, settles it
        if kept is not None and kept[0] == self._store.node and await self._claim(chat_id) is True:
            log_event(log, logging.WARNING, "chat_move_not_taken", chat=chat_id, to=to)

    async def _let_go(self, chats: list[Chat]) -> list[str]:
        """Chats whose actors stopped at a safe point: drop them here, release them in the
        store (fenced by their tokens), so that their next holder polls at once."""
        for chat in chats:
            self._dispatcher.drop(chat.id)
            if chat.link is not None:
                # Its connection here (an old one): the chat goes on on another node.
                _tell(chat.link, env.Error(code="not_attached", chat=chat.id, ref="attach",
                                           detail="the chat moved to another node: attach"
                                                  " again"))
        ids = [chat.id for chat in chats]
        # Retried while this node still holds them: the lease's loss (at most the TTL away
        # when the store is out of reach) makes them orphans, claimed with the poll waited out.
        give_up = time.monotonic() + 2 * self._config.lease_ttl_ms / 1000 + 1
        while any(self._store.holds(chat_id) for chat_id in ids):
            try:
                released = await self._store.release(ids)
            except RedisError as exc:
                self._store.store_errors += 1
                log_event(log, logging.WARNING, "cluster_release_failed", chats=len(ids),
                          detail=str(exc))
                if time.monotonic() > give_up:
                    return []
                await asyncio.sleep(self._config.renew_interval_ms / 1000)
                continue
            self._metrics.cluster_moves.inc(len(released))
            for chat_id in ids:
                to = self._asked.pop(chat_id, None)
                if to is not None and chat_id in released:
                    await self._tell_moved(chat_id, to)
            return released
        return []

    async def _tell_moved(self, chat_id: str, to: str) -> None:
        """Tell the node that asked for ``chat_id`` that it may claim it now."""
        log_event(log, logging.INFO, "chat_moved", chat=chat_id, to=to)
        try:
            await self._store.forward(to, {"kind": "moved", "chat": chat_id})
        except RedisError as exc:  # it claims it at its next try anyway
            self._store.store_errors += 1
            log_event(log, logging.WARNING, "cluster_forward_failed", chat=chat_id,
                      holder=to, detail=str(exc))

    async def hand_over(self, budget: float) -> None:
        """SIGTERM: release every chat at its safe point within ``budget`` seconds.

        The nodes that claim them (from an ``attach`` or a scan) poll at once. A chat whose
        actor is not at a safe point by then (a poll still held) is left as before: it is
        claimed once this node leaves, its last poll waited out.
        """
        chats = [*self._dispatcher.live.values(), *self._dispatcher.finished.values()]
        if not chats:
            return
        stopped = await asyncio.gather(*(self._supervisor.release(chat, budget)
                                         for chat in chats))
        ready = [chat for chat, ok in zip(chats, stopped, strict=True) if ok]
        released = await self._let_go(ready) if ready else []
        log_event(log, logging.INFO, "chats_handed_over", released=len(released),
                  left=len(chats) - len(released))

    # --- start ----------------------------------------------------------------------------

    def _check_start(self, link: Link, start: env.Start) -> bool:
        """A ``start`` of an id this node does not hold: another node may hold it live."""
        task = asyncio.create_task(self._start_later(link, start),
                                   name=f"cluster-start:{start.chat}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return True

    async def _start_later(self, link: Link, start: env.Start) -> None:
        try:
            kept = await self._store.peek(start.chat)
        except RedisError as exc:
            # Started all the same: a chat of that id elsewhere fences this one at its
            # first commit (it is then dropped here, and its connection told).
            self._store.store_errors += 1
            log_event(log, logging.WARNING, "cluster_start_check_failed", chat=start.chat,
                      detail=str(exc))
            kept = None
        except BaseException:
            self._dispatcher.settle_attach(link, start.chat)
            raise
        detail = ""
        if kept is not None and not self._store.holds(start.chat):
            # Another node's (or an earlier process's): a new chat of that id would be fenced
            # at its first commit. One that ended is kept until OCP acknowledges its end.
            try:
                finished = ChatRecord.decode(kept[1]).chat.finished
            except (msgspec.DecodeError, ValueError):
                finished = False
            detail = (f"a chat of this id ended on node {kept[0]} and its ended event is not"
                      " acknowledged yet: attach and ack it, then start again" if finished
                      else f"a live chat has this id, on node {kept[0]}")
        elif kept is None:
            self._store.allow(start.chat)  # free in the whole cluster: this node may make it
        waiting = self._dispatcher.settle_attach(link, start.chat)
        try:
            if detail:
                raise ChatExists(detail, chat=start.chat, ref="start")
            self._dispatcher.start_checked(link, start)
        except Refused as exc:
            _tell(link, _error(exc))
        for envelope in waiting:
            try:
                self._dispatcher.handle(link, envelope)
            except Refused as exc:
                _tell(link, _error(exc))

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

    def _spawn(self, coroutine: object) -> asyncio.Future[None]:
        task: asyncio.Future[None] = asyncio.ensure_future(coroutine)  # type: ignore[call-overload]
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task


_telling: set[asyncio.Future[None]] = set()


def _error(exc: Refused) -> env.Error:
    """The ``error`` envelope of a refusal, as the front sends it."""
    return env.Error(code=exc.code, detail=exc.detail,
                     chat=exc.chat if exc.chat is not None else env.UNSET,
                     ref=exc.ref if exc.ref is not None else env.UNSET)


def _tell(link: Link, error: env.Error) -> None:
    """Send an ``error`` to a connection (one of the front's) without waiting for it."""
    if isinstance(link, BotLink):
        task = asyncio.ensure_future(link.send_control(error))
        _telling.add(task)
        task.add_done_callback(_telling.discard)
