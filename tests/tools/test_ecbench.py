"""The Enhanced Chat benchmark runs end to end (its figures are not checked: no timings)."""

from __future__ import annotations

from pathlib import Path

import pytest

from bridged.tools import ecbench


async def test_every_message_of_every_chat_is_relayed_and_echoed(tmp_path: Path) -> None:
    result = await ecbench.run_bench(3, 4, tmp_path / "state")
    assert result.messages == 12
    # Each relayed message was saved at least once before it went (the durability rule).
    assert result.saves >= result.messages
    assert result.cpu_s > 0


def test_the_command_line_prints_the_figure(capsys: pytest.CaptureFixture[str]) -> None:
    assert ecbench.main(["--chats", "2", "--messages", "2", "--rounds", "1"]) == 0
    assert "ms CPU per relayed message" in capsys.readouterr().out
