"""The README's first command: `bridged demo` chats through bridged and its simulator."""

from __future__ import annotations

import subprocess
import sys
import time

from tests.processes import ROOT


def test_the_demo_chats_end_to_end() -> None:
    process = subprocess.Popen(
        [sys.executable, "-m", "bridged", "demo", "--port", "0", "--profile", "echo"],
        cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        text=True)
    try:
        assert process.stdin is not None and process.stdout is not None
        lines: list[str] = []
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:  # wait for the agent before typing
            line = process.stdout.readline()
            lines.append(line)
            if "joined the chat" in line:
                break
        process.stdin.write("hello from the test\n")
        process.stdin.flush()
        while time.monotonic() < deadline:
            line = process.stdout.readline()
            lines.append(line)
            if "Echo: hello from the test" in line:
                break
        process.stdin.write("/end\n")
        process.stdin.close()
        process.wait(timeout=30)
        lines.append(process.stdout.read())
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        if process.stdout is not None:
            process.stdout.close()
    text = "".join(lines)
    assert "* Ada Agent joined the chat" in text
    assert "Ada Agent: Echo: hello from the test" in text
    assert "* chat ended [client]: The agent has ended the chat." in text
    assert process.returncode == 0
