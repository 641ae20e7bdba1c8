"""The README's first command: `bridged demo` chats through bridged and its simulator."""

from __future__ import annotations

import json
import queue
import re
import subprocess
import sys
import threading
import time
import urllib.request
from typing import Any

import pytest

from tests.processes import ROOT

TIMEOUT = 30.0


class Demo:
    """``bridged demo`` in a process of its own: its terminal read line by line, bounded."""

    def __init__(self, *args: str) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "bridged", "demo", "--port", "0", "--simulator-port", "0",
             "--messaging-simulator-port", "0", *args],
            cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            text=True)
        self.lines: list[str] = []
        self._queue: queue.Queue[str | None] = queue.Queue(maxsize=10_000)
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self._queue.put(line)
        self._queue.put(None)

    def until(self, wanted: str) -> str:
        """The first line (from here on) that contains ``wanted``; fail after TIMEOUT."""
        deadline = time.monotonic() + TIMEOUT
        while (left := deadline - time.monotonic()) > 0:
            try:
                line = self._queue.get(timeout=left)
            except queue.Empty:
                break
            if line is None:
                break
            self.lines.append(line)
            if wanted in line:
                return line
        raise AssertionError(f"the demo never printed {wanted!r}:\n{''.join(self.lines)}")

    def type(self, line: str) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(line + "\n")
        self.process.stdin.flush()

    def finish(self) -> int:
        """Close its input and wait for it to exit; its exit code."""
        assert self.process.stdin is not None
        self.process.stdin.close()
        return self.process.wait(timeout=TIMEOUT)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        for stream in (self.process.stdin, self.process.stdout):
            if stream is not None and not stream.closed:
                stream.close()

    def text(self) -> str:
        return "".join(self.lines)


def test_the_demo_chats_end_to_end() -> None:
    demo = Demo("--profile", "echo")
    try:
        demo.until("joined the chat")  # wait for the agent before typing
        demo.type("hello from the test")
        demo.until("Echo: hello from the test")
        demo.type("/end")
        demo.until("chat ended")
        code = demo.finish()
    finally:
        demo.stop()
    text = demo.text()
    assert "* Ada Agent joined the chat" in text
    assert "Ada Agent: Echo: hello from the test" in text
    assert "* chat ended [client]: The agent has ended the chat." in text
    assert code == 0


def test_the_demo_chats_through_enhanced_chat_too() -> None:
    demo = Demo("--profile", "enhanced_echo")
    try:
        demo.until("joined the chat")
        demo.type("hello from the test")
        demo.until("Echo: hello from the test")
        demo.type("/end")
        demo.until("chat ended")
        code = demo.finish()
    finally:
        demo.stop()
    text = demo.text()
    assert "messaging    http://127.0.0.1:" in text
    assert "* Ada Agent joined the chat" in text
    assert "* chat ended [client]: The agent has ended the chat." in text
    assert code == 0


def console_call(url: str, path: str, body: Any = None) -> Any:
    """GET (no body) or POST a JSON body to the console's API."""
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url + "api/" + path, data=data,
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())


def console_poll(url: str, what: str, condition: Any) -> dict[str, Any]:
    """The first conversation of the console that meets ``condition``; bounded."""
    deadline = time.monotonic() + TIMEOUT
    while time.monotonic() < deadline:
        for conversation in console_call(url, "conversations")["conversations"]:
            if condition(conversation):
                return conversation  # type: ignore[no-any-return]
        time.sleep(0.05)
    raise AssertionError(f"the console never showed {what}")


@pytest.mark.parametrize(("profile", "backend"), [("manual", "liveagent"),
                                                  ("enhanced_manual", "messaging")])
def test_on_profile_manual_a_person_answers_at_the_console_it_prints(profile: str,
                                                                      backend: str) -> None:
    demo = Demo("--profile", profile)
    try:
        match = re.search(r"console\s+(http://127\.0\.0\.1:\d+/console/)", demo.until("console"))
        assert match, demo.text()
        url = match.group(1)
        demo.until(f"Starting a chat on profile {profile!r}")
        waiting = console_poll(url, "the chat waiting", lambda c: c["state"] == "waiting")
        assert waiting["visitor"] == "Demo Visitor"
        chat = f"{backend}/{waiting['id']}/"

        console_call(url, chat + "accept", {"agent": "Pat Person"})
        demo.until("* Pat Person joined the chat")
        demo.type("hello from the terminal")
        console_poll(url, "the visitor's message",
                     lambda c: [line["text"] for line in c["lines"]] == ["hello from the terminal"])
        console_call(url, chat + "say", {"text": "hello from the console"})
        demo.until("Pat Person: hello from the console")
        console_call(url, chat + "end", {})
        demo.until("chat ended [agent]")
        code = demo.finish()
    finally:
        demo.stop()
    assert code == 0
