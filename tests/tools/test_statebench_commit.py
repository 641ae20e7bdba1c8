"""``bridged bench-state``'s last table: one chat's commit (and ten chats'), before and now, in
one run. A smoke: every change committed on each variant, a row for each, and the WAL
written by today's form of the kept lists smaller than before's. Never timings."""

from __future__ import annotations

import pytest

from bridged.tools.statebench import run_commit_benchmark


def test_the_commit_benchmark_runs_every_variant_on_the_same_changes(
        capsys: pytest.CaptureFixture[str]) -> None:
    run_commit_benchmark(chats=30, commits=20)  # asserts every change became durable

    out = capsys.readouterr().out
    rows: dict[tuple[str, str], list[str]] = {}
    for line in out.splitlines():
        for variant in ("before", "now, old-schema db", "now"):
            shape, _, rest = line.partition(f"  {variant} ")
            if rest and rest.lstrip()[0].isdigit():
                words = shape.split()
                rows[(" ".join(words[:-1]) + " x" + words[-1], variant)] = rest.split()
    shapes = {shape for shape, _ in rows}
    assert shapes == {"a relayed message x1", "a relayed message x10",
                      "a message of 1.2 KB x1", "snapshot, poll time x1"}, out
    assert len(rows) == 12, out
    for shape in shapes:  # CPU, "us", WAL bytes, pages, CPU ratio, WAL ratio
        assert rows[(shape, "before")][-2:] == ["1.00", "1.00"]
    for shape in ("a relayed message x1", "a relayed message x10", "a message of 1.2 KB x1"):
        before = float(rows[(shape, "before")][2])  # WAL bytes: items in one b-tree, not two
        assert float(rows[(shape, "now")][2]) < before, shape
