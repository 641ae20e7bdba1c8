"""Each way a commit writes a chat comes back after a reopen: the poll time folded into the
snapshot's row or written alone, a commit of one chat or of several, and a database made by
an earlier bridged (its kept lists' table with a rowid) opens and keeps working."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path
from typing import Literal

import pytest

from bridged.state.sqlite import KeptChat, StateStore

# The schema of databases made before the kept lists' table lost its rowid, as it was.
OLD_SCHEMA = (
    """CREATE TABLE chats (
        id TEXT PRIMARY KEY,
        static BLOB,
        snapshot BLOB NOT NULL,
        poll_sent REAL NOT NULL DEFAULT 0,
        updated REAL NOT NULL
    )""",
    """CREATE TABLE delivered (
        chat TEXT NOT NULL,
        id TEXT NOT NULL,
        PRIMARY KEY (chat, id)
    ) WITHOUT ROWID""",
    """CREATE TABLE items (
        chat TEXT NOT NULL,
        list INTEGER NOT NULL,
        key INTEGER NOT NULL,
        data BLOB NOT NULL,
        PRIMARY KEY (chat, list, key)
    )""",
)


async def reopen(directory: Path) -> dict[str, KeptChat]:
    store = StateStore(directory)
    kept = store.open()
    await store.aclose()
    return kept


async def commit(store: StateStore, others: bool) -> None:
    """End the loop's turn: what was saved commits, with another chat's change if
    ``others`` (a commit of several chats, not of one)."""
    if others:
        store.save("other", b"other snapshot", delivered=["o1"])
    assert await store.flush(5)


@pytest.mark.parametrize("others", [False, True], ids=["one chat", "with another chat"])
@pytest.mark.parametrize("synchronous", ["normal", "full"])
async def test_the_poll_time_and_the_snapshot_come_back_however_they_were_written(
        tmp_path: Path, others: bool, synchronous: Literal["normal", "full"]) -> None:
    store = StateStore(tmp_path, synchronous)
    store.open()
    # The first save, its unchanging part and a poll time in one commit: a new row.
    store.save("new", b"n1", static=b"n-static", delivered=["d1"], items=[(1, 1, b"e1")])
    store.touch("new", 100.5)
    # A snapshot alone keeps the poll time it had; a poll time alone keeps the snapshot.
    store.save("kept", b"k1", static=b"k-static")
    store.touch("kept", 200.5)
    store.save("alone", b"a1")
    await commit(store, others)
    store.save("kept", b"k2")  # no poll time: 200.5 stays
    store.touch("alone", 300.5)  # no snapshot: a1 stays
    # A snapshot and a poll time in one commit replace both, and the first one's static.
    store.save("new", b"n2", drops=[(1, 1, 1)], items=[(1, 2, b"e2")], delivered=["d2"])
    store.touch("new", 101.5)
    await commit(store, others)
    await store.aclose()

    kept = await reopen(tmp_path)
    assert kept["new"] == (b"n-static", b"n2", ["d1", "d2"], 101.5, {1: [(2, b"e2")]})
    assert kept["kept"] == (b"k-static", b"k2", [], 200.5, {})
    assert kept["alone"] == (b"", b"a1", [], 300.5, {})
    assert set(kept) == ({"new", "kept", "alone", "other"} if others
                         else {"new", "kept", "alone"})


@pytest.mark.parametrize("others", [False, True], ids=["one chat", "with another chat"])
async def test_a_chat_deleted_and_saved_again_in_one_commit_starts_afresh(
        tmp_path: Path, others: bool) -> None:
    store = StateStore(tmp_path)
    store.open()
    store.save("x", b"old", static=b"old-static", delivered=["old"], items=[(1, 1, b"e")])
    store.touch("x", 50.0)
    await commit(store, others)
    store.delete("x")
    store.save("x", b"new", static=b"new-static")  # a new chat of the same id, no poll yet
    store.delete("y")  # never kept: nothing to delete
    store.touch("y", 60.0)  # a poll time for a chat with no row keeps nothing
    await commit(store, others)
    await store.aclose()

    kept = await reopen(tmp_path)
    assert kept["x"] == (b"new-static", b"new", [], 0.0, {})
    assert "y" not in kept


async def test_a_database_of_the_old_schema_opens_and_keeps_working(tmp_path: Path) -> None:
    path = tmp_path / "chats.sqlite3"
    connection = sqlite3.connect(path)
    for statement in OLD_SCHEMA:
        connection.execute(statement)
    with connection:  # a chat as the earlier bridged left it
        connection.execute("INSERT INTO chats VALUES ('a', ?, ?, 10.5, 1.0)",
                           (b"s", b"snap-1"))
        connection.execute("INSERT INTO delivered VALUES ('a', 'm1')")
        connection.executemany("INSERT INTO items VALUES ('a', 1, ?, ?)",
                               [(k, f"e{k}".encode()) for k in (1, 2, 3)])
    connection.close()

    store = StateStore(tmp_path)
    kept = store.open()
    assert kept["a"] == (b"s", b"snap-1", ["m1"], 10.5,
                         {1: [(1, b"e1"), (2, b"e2"), (3, b"e3")]})
    store.save("a", b"snap-2", drops=[(1, 1, 2)], items=[(1, 4, b"e4"), (1, 3, b"e3'")],
               delivered=["m2"])
    store.touch("a", 20.5)
    assert await store.flush(5)
    store.save("b", b"b-1", items=[(2, 1, b"f1")])
    store.save("a", b"snap-3", drops=[(1, 3, 3)])
    assert await store.flush(5)
    await store.aclose()

    kept = await reopen(tmp_path)
    assert kept["a"] == (b"s", b"snap-3", ["m1", "m2"], 20.5, {1: [(4, b"e4")]})
    assert kept["b"].lists == {2: [(1, b"f1")]}
    connection = sqlite3.connect(path)
    try:  # still the old form: a table with a rowid (the new form has none)
        connection.execute("SELECT rowid FROM items").fetchall()
    finally:
        connection.close()


async def test_a_new_database_keeps_its_lists_without_a_rowid(tmp_path: Path) -> None:
    store = StateStore(tmp_path)
    store.open()
    store.save("a", b"s", items=[(1, 1, b"e1")])
    assert await store.flush(5)
    await store.aclose()
    connection = sqlite3.connect(tmp_path / "chats.sqlite3")
    try:
        with pytest.raises(sqlite3.OperationalError, match="no such column: rowid"):
            connection.execute("SELECT rowid FROM items")
    finally:
        connection.close()
    assert (await reopen(tmp_path))["a"].lists == {1: [(1, b"e1")]}


def test_both_forms_hold_the_same_after_the_same_saves(tmp_path: Path) -> None:
    async def run(directory: Path) -> dict[str, KeptChat]:
        store = StateStore(directory)
        store.open()
        for turn in range(30):
            for chat in range(3):
                store.save(f"c{chat}", f"{turn}".encode(), items=[(1, turn, b"e")],
                           drops=[(1, turn - 2, turn - 2)], delivered=[f"m{turn}"])
                store.touch(f"c{chat}", float(turn))
            if turn % 3:
                await asyncio.sleep(0)  # one commit per turn, of three chats
            else:
                assert await store.flush(5)
        assert await store.flush(5)
        await store.aclose()
        return await reopen(directory)

    old = tmp_path / "old"
    old.mkdir()
    connection = sqlite3.connect(old / "chats.sqlite3")
    for statement in OLD_SCHEMA:
        connection.execute(statement)
    connection.close()
    kept_old = asyncio.run(run(old))
    kept_new = asyncio.run(run(tmp_path / "new"))
    assert kept_old == kept_new
    assert kept_new["c1"].lists == {1: [(28, b"e"), (29, b"e")]}
    assert kept_new["c1"].poll_sent == 29.0
