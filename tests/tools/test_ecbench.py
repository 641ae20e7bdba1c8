"""The Enhanced Chat benchmark runs end to end (its figures are not checked: no timings)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from bridged.salesforce.messaging.tokenqueue import TokenQueue
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


async def test_more_chats_than_the_token_window_allows_start_without_waiting_for_it(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Salesforce's 200 tokens a minute held the 201st chat a minute: a benchmark of
    # thousands of chats measured nothing (it timed out waiting for the joins).
    waited: list[object] = []
    try_acquire = TokenQueue.try_acquire

    def recording(self: TokenQueue, org: str, key: object, wake: Callable[[], None]) -> bool:
        granted = try_acquire(self, org, key, wake)
        if not granted:
            waited.append(key)
        return granted

    monkeypatch.setattr(TokenQueue, "try_acquire", recording)
    result = await ecbench.run_bench(201, 1, tmp_path / "state", "none")
    assert result.messages == 201
    assert waited == []


def test_chats_that_do_not_all_join_are_told_not_measured(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(ecbench, "JOIN_TIMEOUT_S", 0.0)
    assert ecbench.main(["--chats", "2", "--messages", "1", "--rounds", "1"]) == 1
    err = capsys.readouterr().err
    assert "ecbench: 0 of 2 chats joined within 0 s" in err
    assert "Traceback" not in err
