"""The window of ids an Enhanced Chat session keeps apart from its snapshot, item by item."""

from __future__ import annotations

from bridged.salesforce.messaging.kept import IdWindow


def encode(entry_id: str, number: int) -> bytes:
    return f"{entry_id}={number}".encode()


def decode(data: bytes) -> tuple[str, int]:
    entry_id, number = data.decode().split("=")
    return entry_id, int(number)


class Store:
    """The kept list as a state store applies a save's changes."""

    def __init__(self) -> None:
        self.items: dict[int, bytes] = {}
        self.written = 0

    def save(self, window: IdWindow) -> tuple[list[tuple[int, int, bytes]],
                                              list[tuple[int, int, int]]]:
        items: list[tuple[int, int, bytes]] = []
        drops: list[tuple[int, int, int]] = []
        window.take_changes(7, items, drops, encode)
        for number, first, last in drops:
            assert number == 7 and first <= last
            gone = [key for key in self.items if first <= key <= last]
            assert gone, "a drop of keys never written"
            for key in gone:
                del self.items[key]
        for number, key, data in items:
            assert number == 7 and key not in self.items
            self.items[key] = data
        self.written += len(items)
        return items, drops

    def ids(self) -> list[str]:
        return [decode(self.items[key])[0] for key in sorted(self.items)]

    def kept(self) -> list[tuple[int, bytes]]:
        return sorted(self.items.items())


def test_each_save_writes_only_the_new_ids_and_drops_the_evicted_range() -> None:
    window, store = IdWindow(3), Store()
    for entry_id in "abc":
        window.add(entry_id)
    store.save(window)
    assert store.ids() == ["a", "b", "c"]
    window.add("d")
    items, drops = store.save(window)
    assert [data for _, _, data in items] == [b"d=0"] and len(drops) == 1
    assert store.ids() == window.ids() == ["b", "c", "d"]
    assert not window.changed and store.save(window) == ([], [])


def test_ids_evicted_before_any_save_are_never_written_nor_dropped() -> None:
    window, store = IdWindow(3), Store()
    window.add("a")
    store.save(window)
    for entry_id in "bcdefg":
        window.add(entry_id)
    store.save(window)  # Store asserts that every drop names written keys
    assert store.ids() == ["e", "f", "g"] and store.written == 4


def test_an_id_held_already_changes_nothing_and_eviction_gives_the_oldest_number() -> None:
    window = IdWindow(2)
    assert window.add("a", 10) is None and window.add("b", 20) is None
    window.take_changes(7, [], [], encode)
    assert window.add("a", 99) is None and not window.changed
    assert window.add("c", 30) == 10
    assert "a" not in window and "c" in window and len(window) == 2


def test_a_restored_window_writes_its_ids_anew_once_then_goes_on() -> None:
    window, store = IdWindow(3), Store()
    for entry_id in "abcd":
        window.add(entry_id, ord(entry_id))
    store.save(window)
    again = IdWindow.restore(3, store.kept(), decode)
    assert again.ids() == ["b", "c", "d"]
    store.save(again)  # the old keys dropped, the same ids under new keys
    assert store.ids() == ["b", "c", "d"] and store.written == 6
    again.add("e")
    store.save(again)
    assert store.ids() == ["c", "d", "e"]
    assert decode(store.items[max(store.items)]) == ("e", 0)


def test_a_restore_from_inline_ids_of_an_earlier_version_writes_them_all() -> None:
    store = Store()
    window = IdWindow.restore(3, [], decode, inline=[("x", 1), ("y", 2), ("z", 3), ("w", 4)])
    store.save(window)
    assert store.ids() == ["y", "z", "w"]
