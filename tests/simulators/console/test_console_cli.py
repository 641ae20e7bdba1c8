"""``bridged simulator`` serves the agent console and prints its URL."""

from __future__ import annotations

import json
import time
import urllib.request
from pathlib import Path

from tests.processes import Process, free_port, wait_http


def test_bridged_simulator_serves_the_console_and_prints_its_url(tmp_path: Path) -> None:
    port = free_port()
    process = Process(["simulator", "--listen", f"127.0.0.1:{port}", "--log-level", "warning",
                       "--messaging-listen", f"127.0.0.1:{free_port()}"],
                      tmp_path / "simulator.log")
    try:
        url = f"http://127.0.0.1:{port}/console/"
        wait_http(url, process=process.process)  # type: ignore[arg-type]
        deadline = time.monotonic() + 10
        while url not in (tmp_path / "simulator.log").read_text():
            assert time.monotonic() < deadline, (tmp_path / "simulator.log").read_text()
            time.sleep(0.05)
        with urllib.request.urlopen(url, timeout=10) as page:
            assert "<title>Agent console</title>" in page.read().decode()
        with urllib.request.urlopen(url + "api/conversations", timeout=10) as answer:
            assert json.loads(answer.read()) == {
                "backends": [{"key": "liveagent", "title": "Live Agent"},
                             {"key": "messaging", "title": "Enhanced Chat"}],
                "conversations": []}
    finally:
        process.stop()
