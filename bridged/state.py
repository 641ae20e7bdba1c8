"""Chats kept across restarts: one SQLite database in WAL mode, written by one thread.

Why SQLite (standard library) rather than an append-only journal: SQLite in WAL mode is
already an append-only journal with checksums, crash recovery and compaction (checkpoints),
tested far beyond anything written here; each chat is one row (its latest snapshot), so
reading the state back after a crash is one query, with no log to replay or compact.

Why this survives ``kill -9`` at any instant: a transaction is in the WAL or it is not;
readers after a crash see the last committed transaction. With ``synchronous=NORMAL`` a
commit is not fsynced (the WAL is fsynced at checkpoints), so a crash of the *process*
loses nothing committed, and a crash of the *machine* may lose the last commits but never
leaves the database inconsistent; ``state.synchronous = "full"`` fsyncs every commit.

Why it stays cheap with thousands of chats: saving a chat only replaces its entry in a
dict of pending snapshots (one per chat, the latest wins). A single writer thread takes the
whole dict at once and writes it in one transaction: a group commit, so thousands of chats
changing within a few milliseconds cost one commit, not thousands. Whoever saved learns
from a callback on the event loop when their snapshot is durable.
"""

from __future__ import annotations

__all__ = ["StateStore", "StoreStatistics"]

import asyncio
import contextlib
import logging
import os
import sqlite3
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Literal, NamedTuple

from bridged._log import log_event

log = logging.getLogger("bridged.state")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS chats (
    id TEXT PRIMARY KEY,
    snapshot BLOB NOT NULL,
    updated REAL NOT NULL
)
"""
Callback = Callable[[], None]


class StoreStatistics(NamedTuple):
    """Counters of the writer, for metrics and the benchmark."""

    commits: int
    rows_written: int
    rows_deleted: int
    commit_seconds: float
    pending: int


class StateStore:
    """The chats' snapshots, by chat id.

    Args:
        directory: ``state.dir``; created (mode 0700) if missing.
        synchronous: ``"normal"`` (survives process crashes) or ``"full"`` (also machine
            crashes, at one fsync per commit).
    """

    def __init__(self, directory: str | Path,
                 synchronous: Literal["normal", "full"] = "normal",
                 commit_interval: float | None = None) -> None:
        self.path = Path(directory) / "chats.sqlite3"
        self._directory = Path(directory)
        self._synchronous = synchronous.upper()
        # With an fsync per commit, commits are spaced so that a busy bridged makes at most
        # a few hundred fsyncs a second, however many chats change; without, at once.
        if commit_interval is None:
            commit_interval = 0.005 if synchronous == "full" else 0.0
        self._interval = commit_interval
        self._pending: dict[str, tuple[bytes | None, list[Callback]]] = {}
        self._lock = threading.Lock()
        self._work = threading.Condition(self._lock)
        self._closing = False
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._commits = 0
        self._rows_written = 0
        self._rows_deleted = 0
        self._commit_seconds = 0.0
        self._idle = threading.Event()
        self._idle.set()

    # --- opening and reading ------------------------------------------------------------

    def open(self) -> dict[str, bytes]:
        """Create or open the database; return every kept snapshot, by chat id.

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
            rows = connection.execute("SELECT id, snapshot FROM chats").fetchall()
        finally:
            connection.close()
        for suffix in ("", "-wal", "-shm"):
            with contextlib.suppress(FileNotFoundError):
                os.chmod(f"{self.path}{suffix}", 0o600)
        self._loop = asyncio.get_running_loop()
        self._thread = threading.Thread(target=self._run, name="bridged-state", daemon=True)
        self._thread.start()
        return {chat_id: bytes(snapshot) for chat_id, snapshot in rows}

    def _connect(self) -> sqlite3.Connection:
        try:
            connection = sqlite3.connect(self.path, isolation_level=None,
                                         check_same_thread=False)
            connection.execute("PRAGMA journal_mode=WAL")
            connection.execute(f"PRAGMA synchronous={self._synchronous}")
            connection.execute(_SCHEMA)
        except sqlite3.Error as exc:
            raise OSError(f"cannot open {self.path}: {exc}") from exc
        return connection

    # --- writing -------------------------------------------------------------------------

    def save(self, chat_id: str, snapshot: bytes, on_durable: Callback | None = None) -> None:
        """Keep ``snapshot`` as ``chat_id``'s; ``on_durable`` runs on the loop once committed.

        A newer snapshot of the same chat replaces one not yet written (its callback still
        runs, after the newer one is committed).
        """
        self._queue(chat_id, snapshot, on_durable)

    def delete(self, chat_id: str) -> None:
        """Forget ``chat_id`` (it ended, and OCP knows)."""
        self._queue(chat_id, None, None)

    def _queue(self, chat_id: str, snapshot: bytes | None, on_durable: Callback | None) -> None:
        with self._work:
            if self._closing:
                return
            _, callbacks = self._pending.get(chat_id, (None, []))
            if on_durable is not None:
                callbacks.append(on_durable)
            self._pending[chat_id] = (snapshot, callbacks)
            self._idle.clear()
            self._work.notify()

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

    def _write(self, connection: sqlite3.Connection,
               batch: dict[str, tuple[bytes | None, list[Callback]]]) -> None:
        started = time.perf_counter()
        now = time.time()
        upserts = [(chat_id, snapshot, now) for chat_id, (snapshot, _) in batch.items()
                   if snapshot is not None]
        deletes = [(chat_id,) for chat_id, (snapshot, _) in batch.items() if snapshot is None]
        try:
            connection.execute("BEGIN IMMEDIATE")
            if upserts:
                connection.executemany(
                    "INSERT INTO chats (id, snapshot, updated) VALUES (?, ?, ?) "
                    "ON CONFLICT(id) DO UPDATE SET snapshot = excluded.snapshot, "
                    "updated = excluded.updated", upserts)
            if deletes:
                connection.executemany("DELETE FROM chats WHERE id = ?", deletes)
            connection.execute("COMMIT")
        except sqlite3.Error as exc:
            # A full disk or a broken file: nothing is durable, so nothing is released;
            # the chats keep their events and try again with their next change.
            with contextlib.suppress(sqlite3.Error):
                connection.execute("ROLLBACK")
            self._report_failure(str(exc))
            return
        self._commits += 1
        self._rows_written += len(upserts)
        self._rows_deleted += len(deletes)
        self._commit_seconds += time.perf_counter() - started
        callbacks = [cb for _, cbs in batch.values() for cb in cbs]
        if callbacks and self._loop is not None and not self._loop.is_closed():
            with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
                self._loop.call_soon_threadsafe(_run_all, callbacks)

    def _report_failure(self, detail: str) -> None:
        if self._loop is not None and not self._loop.is_closed():
            with contextlib.suppress(RuntimeError):
                self._loop.call_soon_threadsafe(
                    lambda: log_event(log, logging.ERROR, "state_write_failed", detail=detail))

    # --- lifecycle -------------------------------------------------------------------------

    def statistics(self) -> StoreStatistics:
        with self._lock:
            pending = len(self._pending)
        return StoreStatistics(self._commits, self._rows_written, self._rows_deleted,
                               self._commit_seconds, pending)

    async def flush(self, timeout: float) -> bool:
        """Wait until everything saved so far is committed; ``False`` on timeout."""
        if self._thread is None:
            return True
        return await asyncio.to_thread(self._idle.wait, timeout)

    async def aclose(self, timeout: float = 5.0) -> None:
        """Write what is pending, then stop the writer. Idempotent."""
        if self._thread is None:
            return
        with self._work:
            self._closing = True
            self._work.notify()
        thread, self._thread = self._thread, None
        await asyncio.to_thread(thread.join, timeout)


def _run_all(callbacks: list[Callback]) -> None:
    for callback in callbacks:
        callback()
