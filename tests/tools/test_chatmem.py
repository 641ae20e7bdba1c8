"""The memory tool runs: both sides measured over the simulator, a figure per chat each."""

from __future__ import annotations

import json

import pytest

from bridged.tools import chatmem


def test_chatmem_measures_both_sides(capsys: pytest.CaptureFixture[str]) -> None:
    # One frame per trace: the same figures, without the cost of deep tracebacks in CI.
    assert chatmem.main(["--chats", "2", "--frames", "1", "--json"]) == 0
    results = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert set(results) == {"bridged", "null"}
    for side in results.values():
        assert side["chats"] == 2 and side["bytes_per_chat"] > 0
        assert side["lineno"] and side["traceback"]
