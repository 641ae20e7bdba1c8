"""The state store: durable snapshots, group commits, file modes, and kill -9 at any instant."""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import stat
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Literal

import pytest

from bridged.state.sqlite import KeptChat, StateStore

WRITER = """
import asyncio, sys
from bridged.state.sqlite import KeptChat, StateStore

async def main(directory):
    store = StateStore(directory)
    store.open()
    n = 0
    print("ready", flush=True)
    while True:  # stopped by SIGKILL; each chat's snapshot is its counter, 4 KB
        n += 1
        for chat in range(50):
            store.save(f"chat-{chat}", f"{n:08d}".encode() * 512)
        await asyncio.sleep(0.001)

asyncio.run(main(sys.argv[1]))
"""


async def test_saved_snapshots_come_back_and_callbacks_run_on_the_loop(tmp_path: Path) -> None:
    store = StateStore(tmp_path / "state")
    assert store.open() == {}
    durable = asyncio.Event()
    store.save("a", b"one")
    store.save("a", b"two", durable.set)  # replaces the pending one
    store.save("b", b"three")
    await asyncio.wait_for(durable.wait(), 5)
    store.delete("b")
    store.save("c", b"four", static=b"unchanging", delivered=["m1"])
    store.save("c", b"five", delivered=["m2"])
    store.touch("c", 1234.5)
    assert await store.flush(5)
    await store.aclose()
    again = StateStore(tmp_path / "state")
    kept = again.open()
    assert set(kept) == {"a", "c"}
    assert kept["a"].snapshot == b"two"
    assert kept["c"] == (b"unchanging", b"five", ["m1", "m2"], 1234.5, {})
    await again.aclose()


async def test_a_deleted_chat_leaves_nothing_for_a_new_chat_of_the_same_id(
        tmp_path: Path) -> None:
    store = StateStore(tmp_path)
    store.open()
    store.save("x", b"old", static=b"old-static", delivered=["old-id"])
    assert await store.flush(5)
    store.delete("x")
    store.save("x", b"new", static=b"new-static")
    assert await store.flush(5)
    await store.aclose()
    again = StateStore(tmp_path)
    assert again.open()["x"] == (b"new-static", b"new", [], 0.0, {})
    await again.aclose()


@pytest.mark.parametrize("synchronous", ["normal", "full"])
async def test_kept_lists_change_item_by_item_and_come_back_by_key(
        tmp_path: Path, synchronous: Literal["normal", "full"]) -> None:
    store = StateStore(tmp_path, synchronous)
    store.open()
    store.save("a", b"s1", items=[(1, k, f"e{k}".encode()) for k in (3, 1, 2)] + [(2, -1, b"x")])
    assert await store.flush(5)
    # Dropped before added: a range that covers an item not yet written removes it too.
    store.save("a", b"s2", drops=[(1, 1, 2)], items=[(1, 4, b"e4"), (1, 5, b"e5")])
    store.save("a", b"s3", drops=[(1, 5, 5), (2, -1, -1)], items=[(2, 7, b"y")])
    store.save("b", b"t1", items=[(1, 1, b"other chat")])
    assert await store.flush(5)
    stats = store.statistics()
    await store.aclose()
    again = StateStore(tmp_path)
    kept = again.open()
    assert kept["a"].snapshot == b"s3"
    assert kept["a"].lists == {1: [(3, b"e3"), (4, b"e4")], 2: [(7, b"y")]}
    assert kept["b"].lists == {1: [(1, b"other chat")]}
    assert stats.bytes_written > 0
    again.delete("a")  # a chat's lists go with it
    assert await again.flush(5)
    await again.aclose()
    third = StateStore(tmp_path)
    assert set(third.open()) == {"b"}
    await third.aclose()


async def test_thousands_of_saves_become_few_commits(tmp_path: Path) -> None:
    store = StateStore(tmp_path)
    store.open()
    for round_ in range(5):
        for chat in range(2000):
            store.save(f"chat-{chat}", f"{round_}".encode() * 100)
        await asyncio.sleep(0)
    assert await store.flush(10)
    stats = store.statistics()
    assert stats.rows_written <= 5 * 2000
    assert stats.commits < 100  # grouped, not one per save
    await store.aclose()
    reopened = StateStore(tmp_path)
    rows = reopened.open()
    assert len(rows) == 2000 and rows["chat-7"].snapshot == b"4" * 100
    await reopened.aclose()


async def test_a_commit_window_delays_only_commits_closer_than_it(tmp_path: Path) -> None:
    # A change after a quiet moment is committed in the loop's turn, window or not; the
    # changes that follow within the window wait for its end and share one commit.
    store = StateStore(tmp_path, commit_interval=1.0)
    store.open()
    first = asyncio.Event()
    store.save("a", b"1", first.set)
    for _ in range(3):
        await asyncio.sleep(0)
    assert first.is_set()  # no wait for the window
    later = [asyncio.Event() for _ in range(3)]
    for chat, done in zip("bcd", later, strict=True):
        store.save(chat, b"2", done.set)
        await asyncio.sleep(0)  # a turn of the loop of its own for each
    assert not any(done.is_set() for done in later)
    await asyncio.wait_for(asyncio.gather(*(done.wait() for done in later)), 10)
    assert store.statistics().commits == 2
    await store.aclose()


async def test_the_state_files_are_readable_only_by_the_owner(tmp_path: Path) -> None:
    directory = tmp_path / "kept"
    store = StateStore(directory)
    store.open()
    store.save("a", b"secret session key")
    assert await store.flush(5)
    await store.aclose()
    assert stat.S_IMODE(directory.stat().st_mode) == 0o700
    for path in directory.iterdir():
        assert stat.S_IMODE(path.stat().st_mode) & 0o077 == 0, path


def test_kill_9_at_any_instant_leaves_a_consistent_state(tmp_path: Path) -> None:
    for attempt in range(5):
        directory = tmp_path / f"run-{attempt}"
        process = subprocess.Popen([sys.executable, "-c", WRITER, str(directory)],
                                   stdout=subprocess.PIPE, text=True)
        try:
            assert process.stdout is not None
            assert process.stdout.readline().strip() == "ready"
            time.sleep(0.05 + attempt * 0.037)  # a different instant each time
        finally:
            os.kill(process.pid, signal.SIGKILL)
            process.wait()
            if process.stdout is not None:
                process.stdout.close()
        rows = asyncio.run(_reopen(directory))
        assert rows, "something was committed before the kill"
        for chat, kept in rows.items():
            snapshot = kept.snapshot
            assert len(snapshot) == 4096, chat  # never a torn row
            assert snapshot == snapshot[:8] * 512, chat  # one whole write, never a mix


async def _reopen(directory: Path) -> dict[str, KeptChat]:
    store = StateStore(directory)
    rows = store.open()
    await store.aclose()
    return rows


class FailingOnce:
    """A connection whose first transaction fails, as on a full disk."""

    def __init__(self, connection: Any) -> None:
        self.connection = connection
        self.failed = False

    def execute(self, sql: str, *args: Any) -> Any:
        if sql == "BEGIN IMMEDIATE" and not self.failed:
            self.failed = True
            raise sqlite3.OperationalError("database or disk is full")
        return self.connection.execute(sql, *args)

    def executemany(self, sql: str, rows: Any) -> Any:
        return self.connection.executemany(sql, rows)

    def close(self) -> None:
        self.connection.close()


async def test_a_failed_commit_releases_nothing_and_is_tried_again(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    store = StateStore(tmp_path)
    store.open()
    store._connection = FailingOnce(store._connection)  # type: ignore[assignment]
    durable = asyncio.Event()
    store.save("a", b"kept", durable.set, items=[(1, 1, b"one"), (1, 2, b"two")])
    await asyncio.sleep(0.2)
    assert not durable.is_set()  # not committed: not durable
    assert "state_write_failed" in caplog.text
    # Changes meanwhile join the failed ones, in order.
    store.save("a", b"kept later", drops=[(1, 1, 1)], items=[(1, 3, b"three")])
    await asyncio.wait_for(durable.wait(), 5)  # the retry a second later
    assert await store.flush(5)
    await store.aclose()
    again = StateStore(tmp_path)
    kept = again.open()["a"]
    assert kept.snapshot == b"kept later"
    assert kept.lists == {1: [(2, b"two"), (3, b"three")]}
    await again.aclose()


async def test_the_wal_file_is_cut_back_after_a_burst(tmp_path: Path) -> None:
    # A burst grows the WAL file; once a checkpoint has caught up and the WAL starts over,
    # its file goes back to the limit instead of keeping the burst's size on disk for good.
    limit = 256 * 1024
    store = StateStore(tmp_path, wal_size_limit=limit)
    store.open()
    wal = Path(f"{store.path}-wal")
    for round_ in range(8):  # 8 commits of 200 chats x 2 KB: some 4 MB of WAL
        for chat in range(200):
            store.save(f"chat-{chat}", f"{round_}".encode() * 2048)
        assert await store.flush(10)
    grown = wal.stat().st_size
    assert grown > 4 * limit
    size = grown
    for _ in range(100):  # the checkpoint thread runs every second; bounded wait
        await asyncio.sleep(0.1)
        store.save("chat-0", b"after the burst")  # the commit that starts the WAL over
        assert await store.flush(10)
        size = wal.stat().st_size
        if size <= limit:
            break
    assert size <= limit, (grown, size)
    await store.aclose()
    assert StateStore(tmp_path).open()["chat-0"].snapshot == b"after the burst"


def _broken() -> None:
    raise RuntimeError("a bug in that chat's actor")


async def test_a_callback_that_fails_keeps_no_other_chat_from_learning_its_commit(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    store = StateStore(tmp_path)
    store.open()
    durable: list[str] = []
    store.save("a", b"one", _broken)
    store.save("b", b"two", lambda: durable.append("b"))  # the same commit, after it
    assert await store.flush(5)
    assert durable == ["b"]
    (failed,) = [r for r in caplog.records if r.getMessage() == "commit_callback_failed"]
    assert failed.fields["chat"] == "a"  # type: ignore[attr-defined]
    assert "a bug in that chat's actor" in failed.fields["detail"]  # type: ignore[attr-defined]
    await store.aclose()
