"""Chats kept across restarts: one SQLite database in WAL mode, written by one thread.

Why SQLite (standard library) rather than an append-only journal: SQLite in WAL mode is
already an append-only journal with checksums, crash recovery and compaction (checkpoints),
tested far beyond anything written here; each chat is one row (its latest snapshot) and the
rows of its kept lists, so reading the state back after a crash is a few queries, with no log
to replay or compact.

Why this survives ``kill -9`` at any instant: a transaction is in the WAL or it is not;
readers after a crash see the last committed transaction. With ``synchronous=NORMAL`` a
commit is not fsynced (the WAL is fsynced at checkpoints), so a crash of the *process*
loses nothing committed, and a crash of the *machine* may lose the last commits but never
leaves the database inconsistent; ``state.synchronous = "full"`` fsyncs every commit.

Why it stays cheap with thousands of chats:

* saving a chat only replaces its entry in a dict of pending changes (one per chat, the
  latest snapshot wins); once per turn of the event loop those are handed to a single writer
  thread, which writes all it has in one transaction: a group commit, so thousands of chats
  changing within a few milliseconds cost one commit, not thousands;
* what never changes about a chat (its webchat configuration, its ``start``) is written once,
  what only grows (the ids of delivered messages) is appended, and the time of the last
  poll is a column of its own: the snapshot written at every change is small;
* what a chat holds in numbers (its events not yet acknowledged, the commands and visitor
  messages not yet sent) is kept item by item, in *kept lists*: a save adds the items that
  are new and drops the ranges that are gone, so its cost follows what changed, not what
  the chat holds (a chat under backpressure holds a thousand events);
* a commit usually holds one chat (one more event, or an acknowledgement): each statement
  and each page it touches costs, so the chat's row takes its snapshot, its unchanging part
  and its poll time in one statement, a one-chat commit runs its rows directly (nothing
  built for ``executemany``), and the kept lists are one b-tree without a rowid, a chat's
  items side by side (``bridged bench-state``, its last table, measures these).

Whoever saved learns from a callback on the event loop when their change is durable.

Where the commits run: with ``synchronous = "normal"`` a commit costs no fsync (a fraction
of a millisecond), so it runs on the event loop itself, once per turn of the loop and no
sooner than :data:`COMMIT_INTERVAL` after the last one; a thread would only add a hand-over
and a fight for the GIL to every event's way out. The WAL is
checkpointed (which does fsync) by a thread of its own, outside the loop. With ``"full"``
every commit fsyncs, so the commits run in a writer thread.
"""

from __future__ import annotations

__all__ = ["Drop", "Item", "KeptChat", "StateStore", "StoreStatistics"]

import asyncio
import contextlib
import logging
import math
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Literal

from bridged._log import log_event
from bridged.state.store import (
    Callback,
    Drop,
    Item,
    KeptChat,
    PendingChange,
    StoreStatistics,
    run_callbacks,
)

log = logging.getLogger("bridged.state.sqlite")

_SCHEMA = (
    """CREATE TABLE IF NOT EXISTS chats (
        id TEXT PRIMARY KEY,
        static BLOB,
        snapshot BLOB NOT NULL,
        poll_sent REAL NOT NULL DEFAULT 0,
        updated REAL NOT NULL
    )""",
    """CREATE TABLE IF NOT EXISTS delivered (
        chat TEXT NOT NULL,
        id TEXT NOT NULL,
        PRIMARY KEY (chat, id)
    ) WITHOUT ROWID""",
    # The kept lists: one row per item, ordered by key within (chat, list). Without a rowid
    # the rows are the primary key's b-tree itself, so a chat's items sit side by side: the
    # usual change (an acknowledged item dropped, a new one added) writes one page, where a
    # table with a rowid writes its table's page(s) and its key's index page. A database
    # made before keeps its table with a rowid (CREATE ... IF NOT EXISTS leaves it): the
    # statements below work on both forms.
    """CREATE TABLE IF NOT EXISTS items (
        chat TEXT NOT NULL,
        list INTEGER NOT NULL,
        key INTEGER NOT NULL,
        data BLOB NOT NULL,
        PRIMARY KEY (chat, list, key)
    ) WITHOUT ROWID""",
)

# A chat's snapshot, with its unchanging part and its poll time when the same commit has them:
# one statement, one row written (not an upsert then an UPDATE for each).
_UPSERT = ("INSERT INTO chats (id, static, snapshot, poll_sent, updated) "
           "VALUES (?1, ?2, ?3, coalesce(?4, 0), ?5) "
           "ON CONFLICT(id) DO UPDATE SET static = coalesce(?2, static), "
           "snapshot = excluded.snapshot, poll_sent = coalesce(?4, poll_sent), "
           "updated = excluded.updated")
# A poll time (or an unchanging part) with no snapshot in the commit.
_UPDATE = ("UPDATE chats SET static = coalesce(?1, static), "
           "poll_sent = coalesce(?2, poll_sent) WHERE id = ?3")
_DROP = "DELETE FROM items WHERE chat = ? AND list = ? AND key BETWEEN ? AND ?"
_ITEM = "INSERT OR REPLACE INTO items (chat, list, key, data) VALUES (?, ?, ?, ?)"
_DELIVERED = "INSERT OR IGNORE INTO delivered (chat, id) VALUES (?, ?)"


# The least time between two commits on the loop (synchronous = "normal"): none, a commit
# per turn of the loop. A window (state.commit_interval_ms) merges the commits that come
# closer than it to the last one, a change after a quiet moment still committing at once.
# 2 ms cut an Enhanced Chat message's CPU at half load by 9 to 14 % (its four saves share
# commits), but added up to 2 ms to each durable step while commits came that close: with
# Live Agent the p99 at half load went from 2.05 to 2.81 times the floor's (whose p99 is
# under 4 ms), the p50 from 3.4 to 6.8 ms (README, "Scale: measured").
COMMIT_INTERVAL = 0.0
# With an fsync per commit (synchronous = "full"): a few hundred fsyncs a second at most.
COMMIT_INTERVAL_FULL = 0.005

# The WAL file's size once it starts over: what a few seconds of commits at 10,000 chats
# write, so a steady load reuses its blocks, and a burst's growth is given back.
WAL_SIZE_LIMIT = 64 * 1024 * 1024


class _Change(PendingChange):
    """What is pending for one chat: its saves, a poll time, a delete."""

    __slots__ = ("delete", "poll_sent")

    def __init__(self) -> None:
        super().__init__()
        self.poll_sent: float | None = None
        self.delete = False

    def forget(self) -> None:
        """Everything of the chat goes (it is deleted)."""
        super().forget()
        self.poll_sent, self.delete = None, True

    def merge(self, newer: _Change) -> None:
        # A delete stays a delete (written first), even if a new chat of the same id
        # saved after it: the old chat's rows must go.
        if newer.delete:
            self.forget()
        self.merge_saves(newer)
        self.poll_sent = newer.poll_sent if newer.poll_sent is not None else self.poll_sent


class StateStore:
    """The chats' snapshots, by chat id.

    Args:
        directory: ``state.dir``; created (mode 0700) if missing.
        synchronous: ``"normal"`` (survives process crashes) or ``"full"`` (also machine
            crashes, at one fsync per commit).
        commit_interval: least seconds between two commits (``None``:
            :data:`COMMIT_INTERVAL` with ``"normal"``, :data:`COMMIT_INTERVAL_FULL` with
            ``"full"``); a change after a quiet moment is committed at once.
        wal_size_limit: the bytes the WAL file is cut back to once it starts over.
    """

    def __init__(self, directory: str | Path,
                 synchronous: Literal["normal", "full"] = "normal",
                 commit_interval: float | None = None,
                 wal_size_limit: int = WAL_SIZE_LIMIT) -> None:
        self.path = Path(directory) / "chats.sqlite3"
        self._wal_size_limit = wal_size_limit
        self._directory = Path(directory)
        self._synchronous = synchronous.upper()
        # With an fsync per commit, commits are spaced so that a busy bridged makes at most
        # a few hundred fsyncs a second, however many chats change; without, at once.
        if commit_interval is None:
            commit_interval = COMMIT_INTERVAL_FULL if synchronous == "full" else COMMIT_INTERVAL
        self._interval = commit_interval
        # Without fsyncs the commits run on the loop (a window, if set, merges the turns
        # that come closer than it).
        self._inline = synchronous == "normal"
        self._connection: sqlite3.Connection | None = None
        self._local: dict[str, _Change] = {}  # the loop's side, handed over once per turn
        self._handoff_scheduled = False
        self._last_commit = -math.inf  # the loop's time of the last commit on it
        self._pending: dict[str, _Change] = {}  # the writer's side, under the lock
        self._lock = threading.Lock()
        self._work = threading.Condition(self._lock)
        self._closing = False
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._commits = 0
        self._rows_written = 0
        self._rows_deleted = 0
        self._commit_seconds = 0.0
        self._commit_failures = 0  # counted by the one writer (the loop, or the writer thread)
        self._bytes_written = 0
        self._idle = threading.Event()
        self._idle.set()

    # --- opening and reading ------------------------------------------------------------

    def open(self) -> dict[str, KeptChat]:
        """Create or open the database; return every kept chat, by chat id.

        Must be called from the event loop's thread (callbacks are delivered there).

        Raises:
            OSError: the directory or the database cannot be made or read.
        """
        self._directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        # The snapshots hold session keys: only the service user may read them.
        old_umask = os.umask(0o077)
        try:
            connection = self._connect()
        finally:
            os.umask(old_umask)
        try:
            rows = connection.execute(
                "SELECT id, static, snapshot, poll_sent FROM chats").fetchall()
            delivered: dict[str, list[str]] = {}
            for chat, message in connection.execute("SELECT chat, id FROM delivered"):
                delivered.setdefault(chat, []).append(message)
            lists: dict[str, dict[int, list[tuple[int, bytes]]]] = {}
            for chat, list_id, key, data in connection.execute(
                    "SELECT chat, list, key, data FROM items ORDER BY chat, list, key"):
                lists.setdefault(chat, {}).setdefault(list_id, []).append((key, bytes(data)))
        except sqlite3.Error as exc:
            raise OSError(f"cannot read {self.path}: {exc}") from exc
        finally:
            connection.close()
        for suffix in ("", "-wal", "-shm"):
            with contextlib.suppress(FileNotFoundError):
                os.chmod(f"{self.path}{suffix}", 0o600)
        self._loop = asyncio.get_running_loop()
        if self._inline:
            self._connection = self._connect(checkpoints=False)
            self._thread = threading.Thread(target=self._checkpoints, name="bridged-checkpoint",
                                            daemon=True)
        else:
            self._thread = threading.Thread(target=self._run, name="bridged-state",
                                            daemon=True)
        self._thread.start()
        return {chat_id: KeptChat(bytes(static or b""), bytes(snapshot),
                                  delivered.get(chat_id, []), poll_sent, lists.get(chat_id, {}))
                for chat_id, static, snapshot, poll_sent in rows}

    def _connect(self, checkpoints: bool = True) -> sqlite3.Connection:
        try:
            connection = sqlite3.connect(self.path, isolation_level=None,
                                         check_same_thread=False)
            connection.execute("PRAGMA journal_mode=WAL")
            connection.execute(f"PRAGMA synchronous={self._synchronous}")
            # The WAL starts over from its beginning once a checkpoint has caught up with it,
            # but its file keeps the size it grew to: a burst (thousands of chats starting)
            # leaves hundreds of megabytes on disk. SQLite cuts it back when it starts over.
            connection.execute(f"PRAGMA journal_size_limit={int(self._wal_size_limit)}")
            if not checkpoints:
                # Checkpoints fsync: they are the checkpoint thread's job, not the loop's.
                connection.execute("PRAGMA wal_autocheckpoint=0")
            for statement in _SCHEMA:
                connection.execute(statement)
        except sqlite3.Error as exc:
            raise OSError(f"cannot open {self.path}: {exc}") from exc
        return connection

    async def load(self) -> dict[str, KeptChat]:
        """:meth:`open`, as the :class:`~bridged.state.store.Store` interface has it."""
        return self.open()

    def may_send(self) -> bool:
        """Always: one node on its own disk holds no lease."""
        return True

    # --- writing (from the event loop's thread) -------------------------------------------

    def save(self, chat_id: str, snapshot: bytes, on_durable: Callback | None = None, *,
             static: bytes | None = None, delivered: Sequence[str] = (),
             items: Sequence[Item] = (), drops: Sequence[Drop] = ()) -> None:
        """Keep ``snapshot`` as ``chat_id``'s; ``on_durable`` runs on the loop once committed.

        Args:
            chat_id: the chat.
            snapshot: its latest snapshot; replaces one not yet written.
            on_durable: called once this change is committed.
            static: the chat's unchanging part; given once (with its first save).
            delivered: message ids delivered since the last save (appended).
            items: items of the chat's kept lists added (or replaced) since the last save.
            drops: ranges of keys gone from its kept lists since the last save (applied
                before ``items``).
        """
        self._change(chat_id).keep(snapshot, on_durable, static, delivered, items, drops)

    def touch(self, chat_id: str, poll_sent: float, on_durable: Callback | None = None) -> None:
        """Record when the chat polls Salesforce (no snapshot needed)."""
        change = self._change(chat_id)
        change.poll_sent = poll_sent
        if on_durable is not None:
            change.callbacks.append(on_durable)

    def delete(self, chat_id: str) -> None:
        """Forget ``chat_id`` (it ended, and OCP knows)."""
        self._change(chat_id).forget()

    def _change(self, chat_id: str) -> _Change:
        change = self._local.get(chat_id)
        if change is None:
            change = self._local[chat_id] = _Change()
        if not self._handoff_scheduled and self._loop is not None:
            # One hand-over per turn of the loop, however many chats changed in it; with a
            # window, none sooner than the window after the last commit. A change after a
            # quiet moment is committed at once: the window costs latency only when commits
            # come closer than it, which is when merging them saves the most.
            self._handoff_scheduled = True
            wait = self._last_commit + self._interval - self._loop.time()
            if self._inline and wait > 0:
                self._loop.call_later(wait, self._handoff)
            else:
                self._loop.call_soon(self._handoff)
        return change

    def _handoff(self) -> None:
        self._handoff_scheduled = False
        local, self._local = self._local, {}
        if not local:
            return
        if self._inline:
            if self._connection is not None:
                if self._loop is not None:
                    self._last_commit = self._loop.time()
                self._write(self._connection, local, inline=True)
            return
        with self._work:
            if self._closing and self._thread is None:
                return
            for chat_id, change in local.items():
                pending = self._pending.get(chat_id)
                if pending is None:
                    self._pending[chat_id] = change
                else:
                    pending.merge(change)
            self._idle.clear()
            self._work.notify()

    # --- the writer thread -----------------------------------------------------------------

    def _run(self) -> None:
        connection = self._connect()
        try:
            while True:
                with self._work:
                    while not self._pending and not self._closing:
                        self._idle.set()
                        self._work.wait()
                    if not self._pending and self._closing:
                        self._idle.set()
                        return
                    batch, self._pending = self._pending, {}
                started = time.monotonic()
                self._write(connection, batch)
                spare = self._interval - (time.monotonic() - started)
                if spare > 0 and not self._closing:
                    time.sleep(spare)  # let the next batch grow
        finally:
            connection.close()

    def _checkpoints(self) -> None:
        """Checkpoint the WAL every second, off the event loop, until closed."""
        connection = self._connect()
        try:
            with self._work:
                while not self._closing:
                    self._work.wait(1.0)
                    if self._closing:
                        break
                    self._work.release()
                    try:
                        connection.execute("PRAGMA wal_checkpoint(PASSIVE)")
                    except sqlite3.Error as exc:
                        self._report_failure(f"checkpoint: {exc}")
                    finally:
                        self._work.acquire()
            with contextlib.suppress(sqlite3.Error):
                connection.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        finally:
            connection.close()

    def _write(self, connection: sqlite3.Connection, batch: dict[str, _Change],
               inline: bool = False) -> None:
        started = time.perf_counter()
        try:
            connection.execute("BEGIN IMMEDIATE")
            upserts, deletes, written = self._statements(connection, batch)
            connection.execute("COMMIT")
        except sqlite3.Error as exc:
            # A full disk or a broken file: nothing is durable, so nothing is released (the
            # chats hold their events); the batch is tried again a second later.
            with contextlib.suppress(sqlite3.Error):
                connection.execute("ROLLBACK")
            self._commit_failures += 1
            self._report_failure(str(exc))
            self._retry_later(batch, inline)
            return
        self._commits += 1
        self._rows_written += upserts
        self._rows_deleted += deletes
        self._bytes_written += written
        self._commit_seconds += time.perf_counter() - started
        callbacks = [(chat_id, cb) for chat_id, change in batch.items()
                     for cb in change.callbacks]
        if inline:
            run_callbacks(callbacks)
        elif callbacks and self._loop is not None and not self._loop.is_closed():
            with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
                self._loop.call_soon_threadsafe(run_callbacks, callbacks)

    def _statements(self, connection: sqlite3.Connection,
                    batch: dict[str, _Change]) -> tuple[int, int, int]:
        """Write ``batch`` within the open transaction; returns the snapshots written, the
        chats deleted and the bytes written.

        A batch of one chat (the usual commit, unless bridged is busy) runs each of its rows
        as one ``execute``, building nothing; a larger batch runs each statement once for
        all the chats that need it (``executemany``), and not at all for none.
        """
        if len(batch) == 1:
            ((chat_id, change),) = batch.items()
            return _write_chat(connection.execute, chat_id, change, time.time())
        now = time.time()
        deletes: list[tuple[str]] = []
        upserts: list[tuple[str, bytes | None, bytes, float | None, float]] = []
        updates: list[tuple[bytes | None, float | None, str]] = []
        delivered: list[tuple[str, str]] = []
        drops: list[tuple[str, int, int, int]] = []
        items: list[tuple[str, int, int, bytes]] = []
        written = 0
        for chat_id, change in batch.items():
            if change.delete:
                deletes.append((chat_id,))
            static = change.static
            if static is not None:
                written += len(static)
            if change.snapshot is not None:
                upserts.append((chat_id, static, change.snapshot, change.poll_sent, now))
                written += len(change.snapshot)
            elif static is not None or change.poll_sent is not None:
                updates.append((static, change.poll_sent, chat_id))
            if change.delivered:
                delivered.extend((chat_id, message) for message in change.delivered)
            if change.drops:
                drops.extend((chat_id, *drop) for drop in change.drops)
            for (list_id, key), data in change.items.items():
                items.append((chat_id, list_id, key, data))
                written += len(data)
        if deletes:  # first: the rows of an earlier chat of the same id go
            connection.executemany("DELETE FROM chats WHERE id = ?", deletes)
            connection.executemany("DELETE FROM delivered WHERE chat = ?", deletes)
            connection.executemany("DELETE FROM items WHERE chat = ?", deletes)
        _run(connection, _DROP, drops)  # before the items (see PendingChange)
        _run(connection, _ITEM, items)
        _run(connection, _UPSERT, upserts)
        _run(connection, _UPDATE, updates)
        _run(connection, _DELIVERED, delivered)
        return len(upserts), len(deletes), written

    def _retry_later(self, batch: dict[str, _Change], inline: bool) -> None:
        if inline:
            for chat_id, change in batch.items():
                newer = self._local.get(chat_id)
                if newer is not None:
                    change.merge(newer)
                self._local[chat_id] = change
            if self._loop is not None and not self._handoff_scheduled:
                self._handoff_scheduled = True
                self._loop.call_later(1.0, self._handoff)
            return
        with self._work:
            for chat_id, change in batch.items():
                newer = self._pending.get(chat_id)
                if newer is not None:
                    change.merge(newer)
                self._pending[chat_id] = change
        time.sleep(1.0)

    def _report_failure(self, detail: str) -> None:
        if self._inline and threading.current_thread() is threading.main_thread():
            log_event(log, logging.ERROR, "state_write_failed", detail=detail)
        elif self._loop is not None and not self._loop.is_closed():
            with contextlib.suppress(RuntimeError):
                self._loop.call_soon_threadsafe(
                    lambda: log_event(log, logging.ERROR, "state_write_failed", detail=detail))

    # --- lifecycle -------------------------------------------------------------------------

    def statistics(self) -> StoreStatistics:
        with self._lock:
            pending = len(self._pending)
        return StoreStatistics(self._commits, self._rows_written, self._rows_deleted,
                               self._commit_seconds, pending + len(self._local),
                               self._commit_failures, self._bytes_written)

    async def flush(self, timeout: float) -> bool:
        """Wait until everything saved so far is committed; ``False`` on timeout."""
        self._handoff()
        if self._thread is None or self._inline:
            return True
        return await asyncio.to_thread(self._idle.wait, timeout)

    async def aclose(self, timeout: float = 5.0) -> None:
        """Write what is pending, then stop the writer. Idempotent."""
        if self._thread is None:
            return
        self._handoff()
        with self._work:
            self._closing = True
            self._work.notify()
        thread, self._thread = self._thread, None
        await asyncio.to_thread(thread.join, timeout)
        if self._connection is not None:
            self._connection.close()
            self._connection = None


def _write_chat(execute: Callable[..., object], chat_id: str, change: _Change,
                now: float) -> tuple[int, int, int]:
    """One chat's change, row by row, in the order of :meth:`StateStore._statements`."""
    upserts = deletes = written = 0
    if change.delete:  # first: the rows of an earlier chat of the same id go
        deletes = 1
        execute("DELETE FROM chats WHERE id = ?", (chat_id,))
        execute("DELETE FROM delivered WHERE chat = ?", (chat_id,))
        execute("DELETE FROM items WHERE chat = ?", (chat_id,))
    for list_id, first, last in change.drops:  # before the items (see PendingChange)
        execute(_DROP, (chat_id, list_id, first, last))
    for (list_id, key), data in change.items.items():
        execute(_ITEM, (chat_id, list_id, key, data))
        written += len(data)
    static = change.static
    if static is not None:
        written += len(static)
    if change.snapshot is not None:
        upserts = 1
        written += len(change.snapshot)
        execute(_UPSERT, (chat_id, static, change.snapshot, change.poll_sent, now))
    elif static is not None or change.poll_sent is not None:
        execute(_UPDATE, (static, change.poll_sent, chat_id))
    for message in change.delivered:
        execute(_DELIVERED, (chat_id, message))
    return upserts, deletes, written


def _run(connection: sqlite3.Connection, statement: str, rows: Sequence[tuple[object, ...]],
         ) -> None:
    """``statement`` for each of ``rows``: none, one (``execute``), or many."""
    if len(rows) == 1:
        connection.execute(statement, rows[0])
    elif rows:
        connection.executemany(statement, rows)


