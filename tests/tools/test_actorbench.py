"""``python -m bridged.tools.actorbench``: the Live Agent actor's cost per relayed message,
this tree against a git revision, in one run. A smoke: every message relayed, both columns,
never timings."""

from __future__ import annotations

import pytest

from bridged.tools.actorbench import main, measure


def test_every_message_is_relayed_and_each_costs_the_saves_the_rules_ask_for() -> None:
    figures = measure(chats=3, messages=4, latency_ms=0.5)

    assert figures["messages"] == 12
    # The POST's snapshot, the delivered, the agent's echo: each kept before it goes on.
    assert figures["saves_per_message"] >= 3
    assert figures["turns_per_message"] >= 3


def test_the_table_compares_this_tree_with_a_revision(capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["--chats", "2", "--messages", "2", "--repeat", "1", "--baseline", "HEAD"])

    out = capsys.readouterr().out
    assert code == 0, out
    header, *rows = [line for line in out.splitlines()[1:] if line.strip()]
    assert header.split() == ["HEAD", "this", "tree", "ratio"]
    names = [row.split()[0] for row in rows]
    assert names == ["cpu_us_per_message", "turn_cpu_us_per_message", "turns_per_message",
                     "saves_per_message", "bytes_per_message", "messages_per_s"]
    assert all(len(row.split()) == 4 for row in rows)


def test_a_revision_that_does_not_exist_is_named(capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["--chats", "1", "--messages", "1", "--baseline", "no-such-revision"])

    assert code == 2
    assert "no-such-revision" in capsys.readouterr().err
