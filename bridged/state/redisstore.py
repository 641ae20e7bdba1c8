"""Chats shared by several nodes through Redis (or Valkey): leases, fencing, takeover.

The store behind ``[cluster]`` (docs/cluster.md has the design and its reasons). What makes
it safe with Salesforce's rule that a second concurrent poll ends the session:

* **A node lease.** ``b:node:<node>`` holds this process's incarnation token with a TTL;
  it is renewed only while it still holds that token. The local deadline is the monotonic
  time the last confirmed renewal was *sent*, plus the TTL, minus a margin: past it the
  node sends nothing to Salesforce (:meth:`RedisStore.may_send`) and ``/readyz`` is 503.
* **A fencing token per chat**, checked by the store on every write: a commit is one Lua
  script that refuses a node whose lease is not its incarnation's, and, chat by chat, a
  change whose token is not the chat's. A fenced chat is dropped by its node.
* **Nothing goes to Salesforce unrecorded.** A poll's send time is written by a confirmed,
  fenced commit (``poll_ms``, the store's clock) before the poll goes.
* **A new owner waits out the old owner's last poll**, on the store's clock alone: the claim
  script returns how long ago (by ``TIME``) that poll was recorded.
* **Lost data is seen.** ``b:store`` holds a random epoch; a node that finds another one (or
  none) knows the data it relied on is gone, and ends its chats saying so.

Keys: ``b:store``; ``b:node:<node>`` (lease); ``b:nodes`` (set of ``node/inc``);
``b:owned:<node>/<inc>`` (the chats an incarnation holds); ``b:chat:<chat>`` (hash: owner,
inc, token, gen, static, snap, poll_ms, released); ``b:dlv:<chat>`` (delivered ids);
``b:it:<chat>`` (hash: the items of the chat's kept lists, field ``<list>:<key>``).

Writes are group commits, as with SQLite: every change of one loop turn (and of the turns
while a commit is in flight) goes in one script call, followed on the same connection by
``WAIT min_replicas`` when ``cluster.min_replicas`` is set.
"""

from __future__ import annotations

__all__ = ["FORWARD_MAXLEN", "Claimed", "Held", "RedisStore"]

import asyncio
import contextlib
import logging
import secrets
import time
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import redis.asyncio as aioredis
from redis.asyncio.sentinel import Sentinel
from redis.exceptions import NoScriptError, RedisError

from bridged._log import log_event
from bridged.config.file import ClusterConfig
from bridged.state.store import (
    Callback,
    Drop,
    Item,
    KeptChat,
    PendingChange,
    StoreStatistics,
    run_callbacks,
)

log = logging.getLogger("bridged.state.redis")

_CREATE, _DELETE, _TOUCH = 1, 2, 4

# Every script takes the node, its incarnation and the store epoch first, and refuses with
# 'store' (the epoch changed: data lost) or 'lease' (this incarnation holds no lease).
_PRELUDE = """
local node, inc, epoch = ARGV[1], ARGV[2], ARGV[3]
if redis.call('GET', 'b:store') ~= epoch then return {'store'} end
if redis.call('GET', 'b:node:' .. node) ~= inc then return {'lease'} end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local owned = 'b:owned:' .. node .. '/' .. inc
"""

# ARGV[4..]: per chat, its id, token, flags, snapshot, static, the number n of delivered
# ids, then those n ids, the number of drops, then each drop's list, first and last key,
# the number of items, then each item's list, key and data (flat: binary-safe, and no
# decoder needed in the script). Drops go before items, as in SQLite.
COMMIT = _PRELUDE + """
local function hcall(command, key, args)
  for j = 1, #args, 1000 do
    redis.call(command, key, unpack(args, j, math.min(j + 999, #args)))
  end
end
-- A kept list's keys first..last go: named one by one when the range is no larger than
-- the chat's items, else found among them (the lists are bounded, so either is short).
local function drop(items, list, first, last)
  local size = redis.call('HLEN', items)
  if size == 0 or last < first then return end
  local gone = {}
  if last - first + 1 <= size then
    for k = first, last do gone[#gone + 1] = string.format('%d:%d', list, k) end
  else
    for _, field in ipairs(redis.call('HKEYS', items)) do
      local colon = string.find(field, ':', 1, true)
      local l = tonumber(string.sub(field, 1, colon - 1))
      local k = tonumber(string.sub(field, colon + 1))
      if l == list and k >= first and k <= last then gone[#gone + 1] = field end
    end
  end
  hcall('HDEL', items, gone)
end
local fenced = {}
local i = 4
while i <= #ARGV do
  local id, token, flags = ARGV[i], ARGV[i + 1], tonumber(ARGV[i + 2])
  local snap, static, n = ARGV[i + 3], ARGV[i + 4], tonumber(ARGV[i + 5])
  local first = i + 6
  local nd = tonumber(ARGV[first + n])
  local drops = first + n + 1
  local ni = tonumber(ARGV[drops + 3 * nd])
  local adds = drops + 3 * nd + 1
  i = adds + 3 * ni
  local key, items = 'b:chat:' .. id, 'b:it:' .. id
  local current = redis.call('HGET', key, 'token')
  if flags % 2 == 1 and not current then
    redis.call('HSET', key, 'owner', node, 'inc', inc, 'token', token, 'gen', 1)
    redis.call('SADD', owned, id)
    current = token
  end
  local deleted = math.floor(flags / 2) % 2 == 1
  if current ~= token then
    fenced[#fenced + 1] = id
  elseif deleted then
    redis.call('DEL', key, 'b:dlv:' .. id, items)
    redis.call('SREM', owned, id)
    if snap ~= '' then
      -- A new chat of the same id was saved after the delete: it is made again at once.
      redis.call('HSET', key, 'owner', node, 'inc', inc, 'token', token, 'gen', 1)
      redis.call('SADD', owned, id)
      deleted = false
    end
  end
  if current == token and not deleted then
    if snap ~= '' then redis.call('HSET', key, 'snap', snap) end
    if static ~= '' then redis.call('HSET', key, 'static', static) end
    if n > 0 then hcall('SADD', 'b:dlv:' .. id, {unpack(ARGV, first, first + n - 1)}) end
    for j = drops, drops + 3 * nd - 1, 3 do
      drop(items, tonumber(ARGV[j]), tonumber(ARGV[j + 1]), tonumber(ARGV[j + 2]))
    end
    if ni > 0 then
      local fields = {}
      for j = adds, adds + 3 * ni - 1, 3 do
        fields[#fields + 1] = ARGV[j] .. ':' .. ARGV[j + 1]
        fields[#fields + 1] = ARGV[j + 2]
      end
      hcall('HSET', items, fields)
    end
    if math.floor(flags / 4) % 2 == 1 then
      redis.call('HSET', key, 'poll_ms', now)
      redis.call('HDEL', key, 'released')
    end
  end
end
return {'ok', fenced}
"""

# ARGV[4]: the chat; ARGV[5]: the new token. Takes a chat whose holder's lease is gone (or
# that its holder released, this node included: a move that nobody took); returns its state
# and how long ago, on the store's clock, its last poll was recorded (-1: no poll can be
# outstanding), or 'alive' and the node that holds it.
CLAIM = _PRELUDE + """
local chat, token = ARGV[4], ARGV[5]
local key = 'b:chat:' .. chat
local h = redis.call('HMGET', key, 'owner', 'inc', 'token', 'released', 'poll_ms')
if not h[3] then return {'gone'} end
if h[1] == node and h[2] == inc and not h[4] then return {'mine'} end
if not h[4] and redis.call('GET', 'b:node:' .. h[1]) == h[2] then return {'alive', h[1]} end
local gen = redis.call('HINCRBY', key, 'gen', 1)
redis.call('HSET', key, 'owner', node, 'inc', inc, 'token', token)
redis.call('HDEL', key, 'released')
redis.call('SREM', 'b:owned:' .. h[1] .. '/' .. h[2], chat)
redis.call('SADD', owned, chat)
local age = -1
if not h[4] and h[5] then age = now - tonumber(h[5]) end
local kept = redis.call('HMGET', key, 'static', 'snap')
return {'ok', age, kept[1] or '', kept[2] or '', redis.call('SMEMBERS', 'b:dlv:' .. chat), gen,
        redis.call('HGETALL', 'b:it:' .. chat)}
"""

# The chats whose incarnation's lease is gone (at most ARGV[4]), and the live nodes.
SCAN = _PRELUDE + """
local orphans, live = {}, {}
for _, member in ipairs(redis.call('SMEMBERS', 'b:nodes')) do
  local slash = string.find(member, '/', 1, true)
  local owner, owner_inc = string.sub(member, 1, slash - 1), string.sub(member, slash + 1)
  if redis.call('GET', 'b:node:' .. owner) == owner_inc then
    live[#live + 1] = owner
  else
    local chats = redis.call('SRANDMEMBER', 'b:owned:' .. member, tonumber(ARGV[4]))
    if #chats == 0 then redis.call('SREM', 'b:nodes', member) end
    for _, chat in ipairs(chats) do orphans[#orphans + 1] = chat end
  end
end
return {'ok', orphans, live}
"""

# Takes the lease for a new incarnation (ARGV[4]: TTL in ms; ARGV[5]: a new epoch, used if
# the store has none). Returns the epoch, or 'taken' while another incarnation holds it.
JOIN = """
local node, inc = ARGV[1], ARGV[2]
local epoch = redis.call('GET', 'b:store')
if not epoch then
  epoch = ARGV[5]
  redis.call('SET', 'b:store', epoch)
end
if not redis.call('SET', 'b:node:' .. node, inc, 'NX', 'PX', ARGV[4]) then
  return {'taken'}
end
redis.call('SADD', 'b:nodes', node .. '/' .. inc)
return {'ok', epoch}
"""

# Renews the lease while it still holds this incarnation (ARGV[4]: TTL in ms).
RENEW = """
local node, inc, epoch = ARGV[1], ARGV[2], ARGV[3]
if redis.call('GET', 'b:store') ~= epoch then return {'store'} end
if redis.call('GET', 'b:node:' .. node) ~= inc then return {'lease'} end
redis.call('PEXPIRE', 'b:node:' .. node, ARGV[4])
return {'ok'}
"""

# Gives the lease up (a clean stop): the chats are orphans at once, their polls waited out.
LEAVE = """
local node, inc = ARGV[1], ARGV[2]
if redis.call('GET', 'b:node:' .. node) == inc then redis.call('DEL', 'b:node:' .. node) end
return {'ok'}
"""

# Marks chats released by their holder at a safe point (no poll, no POST in flight): the
# next claim need not wait. ARGV[4..]: chat, token pairs.
RELEASE = _PRELUDE + """
local done = {}
for i = 4, #ARGV, 2 do
  local key = 'b:chat:' .. ARGV[i]
  if redis.call('HGET', key, 'token') == ARGV[i + 1] then
    redis.call('HSET', key, 'released', 1)
    done[#done + 1] = ARGV[i]
  end
end
return {'ok', done}
"""


class Claimed(NamedTuple):
    """A chat this node has just taken over: what to resume it from."""

    kept: KeptChat
    gen: int


class Held(NamedTuple):
    """A chat a live node holds (not released): it can only be moved, by that node."""

    node: str


# The entries a node's forward stream (``b:fwd:<node>``) keeps, at most (approximately):
# commands for chats it holds, forwarded by the nodes their connections are on, and the
# notices of moves. A node reads its stream as it goes, so it holds only what is in flight.
FORWARD_MAXLEN = 1000
# A stream nobody reads any more (its node is gone for good) goes after this.
FORWARD_TTL_MS = 3_600_000


class _Change(PendingChange):
    """What is pending for one chat: its saves, and the commit script's flags."""

    __slots__ = ("flags",)

    def __init__(self) -> None:
        super().__init__()
        self.flags = 0

    def merge(self, newer: _Change) -> None:
        if newer.flags & _DELETE:
            self.forget()
            self.flags = _DELETE
        self.merge_saves(newer)
        self.flags |= newer.flags


class StoreLost(Exception):
    """The store's epoch changed: the data this node relied on is gone."""


class LeaseLost(Exception):
    """This incarnation's lease is gone (it expired, or Redis lost it)."""


class RedisStore:
    """The chats of a cluster of nodes, in Redis; fenced by lease and per-chat token.

    Args:
        cluster: the ``[cluster]`` section.
        on_fenced: called with a chat id this node no longer holds (another took it over).
        on_lease_lost: called when this incarnation's lease is gone: every chat is lost.
        on_store_lost: called when the store lost its data: every chat must end.
    """

    def __init__(self, cluster: ClusterConfig) -> None:
        self._cluster = cluster
        self.node = cluster.node
        self.incarnation = ""
        self.epoch = ""
        self._redis: aioredis.Redis | None = None
        self._tokens: dict[str, str] = {}  # chat → our fencing token
        self._created: set[str] = set()  # chats whose first commit creates them
        self._local: dict[str, _Change] = {}
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._tasks: list[asyncio.Task[None]] = []
        self._deadline = 0.0  # monotonic: the lease is ours until then
        self._closing = False
        self._rejoining = False
        self._dropped: set[str] = set()  # chats this node let go of: their writes are void
        self.on_fenced: Callable[[str], None] = lambda _chat: None
        self.on_lease_lost: Callable[[], None] = lambda: None
        self.on_store_lost: Callable[[], None] = lambda: None
        self.on_joined: Callable[[], None] = lambda: None
        self._scripts: dict[str, Any] = {}
        self._commit_sha = ""  # the commit script's, as pipelined with WAIT
        self._commits = 0
        self._rows_written = 0
        self._rows_deleted = 0
        self._commit_seconds = 0.0
        self._commit_failures = 0
        self._bytes_written = 0
        self.store_errors = 0
        self.renew_seconds = 0.0  # the last renewal's round trip
        self.renewals = 0
        self.lease_losses = 0  # times this node lost its lease (or the store its data)
        self.on_renewed: Callable[[float], None] = lambda _seconds: None  # its round trip

    # --- connecting and the lease ---------------------------------------------------------

    def _connect(self) -> aioredis.Redis:
        cluster = self._cluster
        timeout = cluster.socket_timeout_s
        if cluster.sentinels:
            addresses = []
            for address in cluster.sentinels:
                host, _, port = address.rpartition(":")
                addresses.append((host.strip("[]"), int(port)))
            options = aioredis.connection.parse_url(cluster.redis_url)
            options.pop("host", None)
            options.pop("port", None)
            sentinel = Sentinel(addresses, socket_timeout=timeout)  # type: ignore[no-untyped-call]
            primary: aioredis.Redis = sentinel.master_for(
                cluster.sentinel_service, socket_timeout=timeout,
                socket_connect_timeout=timeout, **options)
            return primary
        return aioredis.Redis.from_url(cluster.redis_url, socket_timeout=timeout,
                                       socket_connect_timeout=timeout)

    async def _call(self, name: str, source: str, *args: Any, pipe: Any = None) -> Any:
        """Run one script (EVALSHA, loaded again after NOSCRIPT, e.g. after a failover)."""
        assert self._redis is not None
        script = self._scripts.get(name)
        if script is None:
            script = self._scripts[name] = self._redis.register_script(source)
        return await script(args=[self.node, self.incarnation, self.epoch, *args],
                            client=pipe)

    async def load(self) -> dict[str, KeptChat]:
        """Join the cluster (take this node's lease); chats come later, by :meth:`claim`.

        Raises:
            OSError: Redis cannot be reached, or another live process holds this node's name.
        """
        self._redis = self._connect()
        try:
            await self._join(wait=True)
        except RedisError as exc:
            raise OSError(f"cannot reach the store at {self._where()}: {exc}") from exc
        loop = asyncio.get_running_loop()
        self._tasks = [loop.create_task(self._renewals(), name="cluster-lease"),
                       loop.create_task(self._writer(), name="cluster-commits")]
        return {}

    def _where(self) -> str:
        if self._cluster.sentinels:
            return f"sentinel service {self._cluster.sentinel_service}"
        url = self._cluster.redis_url
        return url.rpartition("@")[2] if "@" in url else url

    async def _join(self, wait: bool) -> None:
        """A new incarnation takes this node's lease; waits for an old one's to expire."""
        ttl = self._cluster.lease_ttl_ms
        give_up = time.monotonic() + 2 * ttl / 1000 + 1
        while True:
            incarnation = secrets.token_hex(8)
            self.incarnation = incarnation
            sent = time.monotonic()
            answer = await self._call("join", JOIN, ttl, secrets.token_hex(8))
            status = _text(answer[0])
            if status == "ok":
                self.epoch = _text(answer[1])
                self._deadline = sent + (ttl - self._cluster.lease_margin_ms) / 1000
                self._tokens.clear()
                log_event(log, logging.INFO, "cluster_joined", node=self.node,
                          incarnation=incarnation)
                self.on_joined()
                return
            # 'taken': the previous incarnation (killed) still holds the lease until its
            # TTL runs out; beyond twice that, another live process has this node's name.
            if not wait or time.monotonic() > give_up:
                raise OSError(f"cluster.node {self.node!r} is held by another live process")
            await asyncio.sleep(self._cluster.renew_interval_ms / 1000)

    @property
    def client(self) -> aioredis.Redis:
        """The connection to the store (read only outside this class: the admin view)."""
        if self._redis is None:
            raise OSError("not connected to the shared store")
        return self._redis

    def may_send(self) -> bool:
        """Whether the lease is surely still ours (the local deadline has not passed)."""
        return not self._closing and time.monotonic() < self._deadline

    @property
    def lease_remaining(self) -> float:
        """Seconds until the local lease deadline (negative: past it)."""
        return self._deadline - time.monotonic()

    async def _renewals(self) -> None:
        interval = self._cluster.renew_interval_ms / 1000
        ttl = self._cluster.lease_ttl_ms
        while not self._closing:
            await asyncio.sleep(interval)
            sent = time.monotonic()
            try:
                answer = await self._call("renew", RENEW, ttl)
            except RedisError as exc:
                self.store_errors += 1
                log_event(log, logging.WARNING, "cluster_renew_failed", node=self.node,
                          detail=str(exc), lease_left_s=round(self.lease_remaining, 3))
                continue
            self.renewals += 1
            self.renew_seconds = time.monotonic() - sent
            self.on_renewed(self.renew_seconds)
            status = _text(answer[0])
            if status == "ok":
                self._deadline = sent + (ttl - self._cluster.lease_margin_ms) / 1000
                continue
            await self._lost(status)

    async def _lost(self, status: str) -> None:
        """The lease (or the whole store) is gone: drop every chat, join anew."""
        if self._rejoining:
            return
        self._rejoining = True
        try:
            await self._rejoin(status)
        finally:
            self._rejoining = False

    async def _rejoin(self, status: str) -> None:
        self.lease_losses += 1
        self._deadline = 0.0
        self._dropped.update(self._tokens)
        self._local.clear()
        self._tokens.clear()
        self._created.clear()
        if status == "store":
            log_event(log, logging.ERROR, "cluster_store_lost", node=self.node,
                      detail="the shared store lost its data (its epoch changed)")
            self.on_store_lost()
        else:
            log_event(log, logging.WARNING, "cluster_lease_lost", node=self.node)
            self.on_lease_lost()
        while not self._closing:
            try:
                await self._join(wait=True)
                return
            except (RedisError, OSError) as exc:
                self.store_errors += 1
                log_event(log, logging.WARNING, "cluster_join_failed", node=self.node,
                          detail=str(exc))
                await asyncio.sleep(self._cluster.renew_interval_ms / 1000)

    # --- ownership --------------------------------------------------------------------------

    @property
    def held_count(self) -> int:
        """How many chats this node holds now."""
        return len(self._tokens)

    def holds(self, chat_id: str) -> bool:
        """Whether this node holds the chat (created or claimed, and not fenced since)."""
        return chat_id in self._tokens

    async def scan(self, limit: int = 1000) -> tuple[list[str], list[str]]:
        """The chats whose node is gone, and the live nodes' names."""
        answer = await self._call("scan", SCAN, limit)
        if _text(answer[0]) != "ok":
            return [], []
        return [_text(c) for c in answer[1]], sorted({_text(n) for n in answer[2]})

    async def claim(self, chat_id: str) -> Claimed | Held | None:
        """Take over ``chat_id`` if its holder is gone or released it; :class:`Held` (by
        whom) if a live node holds it; ``None`` if it is gone (or this node holds it)."""
        token = secrets.token_hex(8)
        answer = await self._call("claim", CLAIM, chat_id, token)
        status = _text(answer[0])
        if status == "alive":
            return Held(_text(answer[1]))
        if status != "ok":
            return None
        age_ms = int(answer[1])
        self._tokens[chat_id] = token
        self._dropped.discard(chat_id)
        # The store's clock said how long ago the poll went; on this node's wall clock that
        # is now minus that age (an interval, so no clock of ours needs to agree with it).
        poll_sent = 0.0 if age_ms < 0 else time.time() - age_ms / 1000
        kept = KeptChat(bytes(answer[2]), bytes(answer[3]),
                        sorted(_text(d) for d in answer[4]), poll_sent, _lists(answer[6]))
        return Claimed(kept, int(answer[5]))

    async def release(self, chat_ids: Sequence[str]) -> list[str]:
        """Mark chats released at a safe point (their actors stopped, everything committed):
        the next claim of each need not wait. They are no longer this node's once it
        returns; the ones returned were released (the others were not this node's).

        Raises:
            RedisError: the store could not be reached; the chats are still this node's.
        """
        args: list[str] = []
        for chat_id in chat_ids:
            token = self._tokens.get(chat_id)
            if token is not None:
                args += [chat_id, token]
        if not args:
            return []
        answer = await self._call("release", RELEASE, *args)
        for chat_id in chat_ids:
            self.forget_local(chat_id)
        return [_text(c) for c in answer[1]] if _text(answer[0]) == "ok" else []

    async def peek(self, chat_id: str) -> tuple[str, bytes] | None:
        """Who holds ``chat_id`` in the store and its last snapshot; ``None``: no such chat."""
        assert self._redis is not None
        answer: Any = await self._redis.hmget(f"b:chat:{chat_id}", ["owner", "snap"])
        owner, snapshot = answer
        if owner is None:
            return None
        return _text(owner), bytes(snapshot or b"")

    async def forward(self, node: str, fields: dict[str, str]) -> None:
        """Append one entry to ``node``'s forward stream (bounded by :data:`FORWARD_MAXLEN`)."""
        assert self._redis is not None
        key = f"b:fwd:{node}"
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.xadd(key, fields, maxlen=FORWARD_MAXLEN, approximate=True)  # type: ignore[arg-type]
            pipe.pexpire(key, FORWARD_TTL_MS)
            await pipe.execute()

    async def forwarded(self, after: str | None, block_ms: int
                        ) -> tuple[str, list[dict[str, str]]]:
        """The entries of this node's forward stream after id ``after`` (``None``: only
        those added from now on), waiting up to ``block_ms`` for one; and the last id."""
        assert self._redis is not None
        key = f"b:fwd:{self.node}"
        if after is None:
            last: Any = await self._redis.xrevrange(key, count=1)
            after = _text(last[0][0]) if last else "0-0"
        answer: Any = await self._redis.xread({key: after}, count=100, block=block_ms)
        entries: list[dict[str, str]] = []
        for _stream, items in answer or []:
            for entry_id, fields in items:
                after = _text(entry_id)
                entries.append({_text(k): _text(v) for k, v in fields.items()})
        return after, entries

    def allow(self, chat_id: str) -> None:
        """``chat_id`` is free in the whole store: a new chat of that id may be made here
        (writes for it were void since this node let go of an earlier one)."""
        if chat_id not in self._tokens:
            self._dropped.discard(chat_id)

    def forget_local(self, chat_id: str) -> None:
        """Stop writing for ``chat_id`` (dropped by this node); its pending changes go."""
        self._tokens.pop(chat_id, None)
        self._created.discard(chat_id)
        self._local.pop(chat_id, None)
        self._dropped.add(chat_id)

    # --- writing (from the event loop) ------------------------------------------------------

    def _change(self, chat_id: str) -> _Change | None:
        if chat_id not in self._tokens:
            if chat_id in self._dropped or self._closing or self._deadline == 0.0:
                return None
            # A chat this node creates: its first commit makes it, with a fresh token.
            self._tokens[chat_id] = secrets.token_hex(8)
            self._created.add(chat_id)
        change = self._local.get(chat_id)
        if change is None:
            change = self._local[chat_id] = _Change()
            if chat_id in self._created:
                change.flags |= _CREATE
        self._idle.clear()
        self._wake.set()
        return change

    def save(self, chat_id: str, snapshot: bytes, on_durable: Callback | None = None, *,
             static: bytes | None = None, delivered: Sequence[str] = (),
             items: Sequence[Item] = (), drops: Sequence[Drop] = ()) -> None:
        """Keep ``snapshot`` as ``chat_id``'s; ``on_durable`` runs once confirmed.

        ``items`` and ``drops`` change the chat's kept lists as in SQLite (drops first); they
        are written in the same fenced script as the snapshot.
        """
        change = self._change(chat_id)
        if change is not None:
            change.keep(snapshot, on_durable, static, delivered, items, drops)

    def touch(self, chat_id: str, poll_sent: float, on_durable: Callback | None = None) -> None:
        """Record (with the store's clock) that the chat is about to poll."""
        change = self._change(chat_id)
        if change is None:
            return
        change.flags |= _TOUCH
        if on_durable is not None:
            change.callbacks.append(on_durable)

    def delete(self, chat_id: str) -> None:
        """Forget ``chat_id`` in the store (it ended, and OCP knows)."""
        if chat_id not in self._tokens:
            return
        change = self._change(chat_id)
        if change is None:
            return
        change.forget()
        change.flags = _DELETE | (change.flags & _CREATE)
        # A chat of the same id saved after this (OCP may start it again at once) is a new
        # one: its first commit makes it again, whether this delete is committed by then or
        # still pending (then the commit deletes and makes it in one script).
        self._created.add(chat_id)

    async def _writer(self) -> None:
        """Commit what the loop saved, one batch at a time, until closed."""
        while True:
            await self._wake.wait()
            self._wake.clear()
            if not self._local:
                self._idle.set()
                if self._closing:
                    return
                continue
            batch, self._local = self._local, {}
            tokens = {chat: self._tokens.get(chat, "") for chat in batch}
            ok = await self._commit(batch, tokens)
            if not ok:
                self._retry_later(batch)
                await asyncio.sleep(0.2)
                self._wake.set()
            elif not self._local:
                self._idle.set()
            if self._local:
                self._wake.set()

    async def _commit(self, batch: dict[str, _Change], tokens: dict[str, str]) -> bool:
        assert self._redis is not None
        started = time.perf_counter()
        payload: list[bytes | str | int] = []
        written = 0
        for chat, change in batch.items():
            snapshot, static = change.snapshot or b"", change.static or b""
            payload += [chat, tokens[chat], change.flags, snapshot, static,
                        len(change.delivered), *change.delivered, len(change.drops)]
            for drop in change.drops:
                payload += drop
            payload.append(len(change.items))
            for (list_id, key), data in change.items.items():
                payload += (list_id, key, data)
                written += len(data)
            written += len(snapshot) + len(static)
        replicas = self._cluster.min_replicas
        try:
            if replicas:
                answer, confirmed = await self._commit_and_wait(payload, replicas)
                if int(confirmed) < replicas:
                    self._commit_failures += 1
                    log_event(log, logging.WARNING, "cluster_commit_unconfirmed",
                              node=self.node, replicas=int(confirmed), wanted=replicas)
                    return False
            else:
                answer = await self._call("commit", COMMIT, *payload)
        except RedisError as exc:
            self._commit_failures += 1
            self.store_errors += 1
            log_event(log, logging.WARNING, "state_write_failed", node=self.node,
                      detail=str(exc))
            return False
        status = _text(answer[0])
        if status != "ok":
            await self._lost(status)
            return True  # nothing of the batch will ever be confirmed
        fenced = {_text(c) for c in answer[1]}
        self._commits += 1
        self._commit_seconds += time.perf_counter() - started
        self._bytes_written += written
        callbacks: list[tuple[str, Callback]] = []
        for chat, change in batch.items():
            if chat in fenced:
                continue
            ours = self._tokens.get(chat) == tokens[chat]
            if change.flags & _DELETE:
                self._rows_deleted += 1
            if change.flags & _DELETE and not change.snapshot:
                # Gone, unless a new chat of that id is already waiting to be written.
                if ours and chat not in self._local:
                    del self._tokens[chat]
                    self._created.discard(chat)
            else:
                self._rows_written += 1
                if ours:
                    self._created.discard(chat)
            callbacks.extend((chat, callback) for callback in change.callbacks)
        run_callbacks(callbacks)
        for chat in fenced:
            if self._tokens.get(chat) == tokens[chat]:
                self.forget_local(chat)
                log_event(log, logging.WARNING, "chat_fenced", chat=chat, node=self.node)
                self.on_fenced(chat)
        return True

    async def _commit_and_wait(self, payload: list[bytes | str | int],
                               replicas: int) -> tuple[Any, Any]:
        """The commit script, then ``WAIT``, in one round trip on one connection.

        EVALSHA straight into the pipeline (redis-py's pipelined scripts would ask ``SCRIPT
        EXISTS`` first, a round trip more per commit); a server without the script (a
        promoted replica that never saw it, a restart) answers NOSCRIPT: it is loaded, and
        the pair sent again (the first WAIT, for nothing written, did no harm).
        """
        assert self._redis is not None
        args = [self.node, self.incarnation, self.epoch, *payload]
        sha = self._commit_sha or self._redis.register_script(COMMIT).sha
        for attempt in range(2):
            async with self._redis.pipeline(transaction=False) as pipe:
                pipe.evalsha(sha, 0, *args)
                pipe.execute_command("WAIT", replicas, self._cluster.wait_timeout_ms)
                answer, confirmed = await pipe.execute(raise_on_error=False)
            if isinstance(answer, NoScriptError) and attempt == 0:
                sha = await self._redis.script_load(COMMIT)
                continue
            break
        self._commit_sha = sha
        for result in (answer, confirmed):
            if isinstance(result, Exception):
                raise result
        return answer, confirmed

    def _retry_later(self, batch: dict[str, _Change]) -> None:
        for chat, change in batch.items():
            if chat not in self._tokens:
                continue  # dropped meanwhile
            newer = self._local.get(chat)
            if newer is not None:
                change.merge(newer)
            self._local[chat] = change

    # --- lifecycle ----------------------------------------------------------------------------

    def statistics(self) -> StoreStatistics:
        """The writer's counters."""
        return StoreStatistics(self._commits, self._rows_written, self._rows_deleted,
                               self._commit_seconds, len(self._local), self._commit_failures,
                               self._bytes_written)

    async def flush(self, timeout: float) -> bool:
        """Wait until everything saved so far is committed; ``False`` on timeout."""
        try:
            async with asyncio.timeout(timeout):
                await self._idle.wait()
        except TimeoutError:
            return False
        return True

    async def aclose(self, timeout: float = 5.0) -> None:
        """Write what is pending, give the lease up, and disconnect. Idempotent."""
        if self._redis is None:
            return
        await self.flush(timeout)
        self._closing = True
        self._wake.set()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        with contextlib.suppress(RedisError, OSError):
            async with asyncio.timeout(timeout):
                await self._call("leave", LEAVE)
        redis_client, self._redis = self._redis, None
        with contextlib.suppress(RedisError, OSError):
            await redis_client.aclose()


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _lists(flat: Sequence[Any]) -> dict[int, list[tuple[int, bytes]]]:
    """The kept lists from ``HGETALL b:it:<chat>`` (field ``<list>:<key>``, value data)."""
    lists: dict[int, list[tuple[int, bytes]]] = {}
    for index in range(0, len(flat), 2):
        list_id, _, key = _text(flat[index]).partition(":")
        lists.setdefault(int(list_id), []).append((int(key), bytes(flat[index + 1])))
    for entries in lists.values():
        entries.sort()
    return lists
