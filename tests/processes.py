"""Real processes for fault tests: the simulator and bridged, each started and stopped by pid."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import msgspec

from bridged.tools.loadtest.procs import free_port

ROOT = Path(__file__).parent.parent




def wait_http(url: str, timeout: float = 20.0, process: subprocess.Popen[bytes] | None = None
              ) -> None:
    """Wait (bounded) until ``url`` answers 200."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(url, timeout=1) as response:
                if response.status == 200:
                    return
        except (OSError, urllib.error.HTTPError):
            pass
        if process is not None and process.poll() is not None:
            raise AssertionError(f"{url}: the process exited with {process.returncode}")
        if time.monotonic() > deadline:
            raise AssertionError(f"{url} did not answer within {timeout} s")
        time.sleep(0.05)


class Process:
    """A child process, stopped by its pid when the test is done."""

    def __init__(self, args: list[str], log: Path) -> None:
        self.log = log.open("wb")
        self.process = subprocess.Popen([sys.executable, "-m", "bridged", *args], cwd=ROOT,
                                        stdout=self.log, stderr=subprocess.STDOUT)

    @property
    def pid(self) -> int:
        return self.process.pid

    def signal(self, signum: int) -> None:
        os.kill(self.process.pid, signum)

    def wait(self, timeout: float = 15.0) -> int:
        return self.process.wait(timeout=timeout)

    def stop(self) -> None:
        """Stop for good (SIGKILL if it is still running); idempotent."""
        if self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGKILL)
            self.process.wait()
        self.log.close()


class SimulatorProcess(Process):
    """``bridged simulator`` with short timings, controlled through its ``/_sim/`` API."""

    def __init__(self, tmp: Path, hold_s: float = 0.5, client_poll_timeout: float = 5.0,
                 messaging_ping_s: float = 0.5) -> None:
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        # The Enhanced Chat simulator beside it (its SCRT URL), driven under its /_sim/.
        self.messaging_port = free_port()
        self.messaging_base = f"http://127.0.0.1:{self.messaging_port}"
        super().__init__(["simulator", "--listen", f"127.0.0.1:{self.port}",
                          "--hold-s", str(hold_s),
                          "--client-poll-timeout", str(client_poll_timeout),
                          "--join-delay-s", "0.05", "--reply-delay-s", "0.02",
                          "--queue-step-s", "0.05", "--log-level", "warning",
                          "--messaging-listen", f"127.0.0.1:{self.messaging_port}",
                          "--messaging-routing-delay-s", "0.02",
                          "--messaging-ping-s", str(messaging_ping_s)],
                         tmp / "simulator.log")
        wait_http(self.base + "/_sim/sessions", process=self.process)  # type: ignore[arg-type]
        wait_http(self.messaging_base + "/_sim/conversations",
                  process=self.process)  # type: ignore[arg-type]

    def messaging(self, method: str, path: str, body: Any = None) -> Any:
        """Call the Enhanced Chat simulator's control API (``/_sim/PATH``)."""
        data = None if body is None else msgspec.json.encode(body)
        request = urllib.request.Request(self.messaging_base + "/_sim/" + path, data=data,
                                         method=method,
                                         headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=10) as response:
            text = response.read()
        return msgspec.json.decode(text) if text else None

    def _call(self, method: str, path: str, body: Any = None) -> Any:
        data = None if body is None else msgspec.json.encode(body)
        request = urllib.request.Request(self.base + "/_sim/" + path, data=data, method=method,
                                         headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=10) as response:
            text = response.read()
        return msgspec.json.decode(text) if text else None

    def sessions(self) -> list[dict[str, Any]]:
        result = self._call("GET", "sessions")
        return result["sessions"] if isinstance(result, dict) else result

    def session(self, session_id: str) -> dict[str, Any]:
        return self._call("GET", f"sessions/{session_id}")  # type: ignore[no-any-return]

    def action(self, session_id: str, action: str, body: Any = None) -> Any:
        return self._call("POST", f"sessions/{session_id}/{action}", body or {})

    def global_action(self, action: str, body: Any = None) -> Any:
        return self._call("POST", action, body or {})


# BRIDGED_TEST_LOG=debug: the bridged processes log at that level (to debug a test).
LOG_LEVEL = (["--log-level", os.environ["BRIDGED_TEST_LOG"]]
             if os.environ.get("BRIDGED_TEST_LOG") else [])

# Scaled-down cluster timings (a takeover in about 1.5 s; the simulator's hold is 0.5 s).
CLUSTER = ('[cluster]\nnode = "{node}"\nredis_url = "{url}"\nlease_ttl_ms = 1000\n'
           'renew_interval_ms = 200\nlease_margin_ms = 200\nscan_interval_ms = 100\n'
           'socket_timeout_s = 0.5\n')


class BridgedProcess(Process):
    """``bridged run`` on a config whose profiles point at a simulator process."""

    TOKEN = "proc-token-0123456789"

    def __init__(self, tmp: Path, simulator: SimulatorProcess, *, port: int | None = None,
                 state: Path | None = None, name: str = "bridged",
                 redis_url: str | None = None, node: str = "a", wait_ready: bool = True,
                 state_options: dict[str, Any] | None = None,
                 cluster_options: dict[str, Any] | None = None,
                 server_options: dict[str, Any] | None = None) -> None:
        self.port = port or free_port()
        self.url = f"ws://127.0.0.1:{self.port}/v1/chat"
        config = tmp / f"{name}.toml"
        profile = (f'live_agent_base_url = "{simulator.base}/chat"\n'
                   'organization_id = "00D000000000001"\n'
                   'deployment_id = "572000000000001"\n')
        server_lines = "".join(f"{key} = {msgspec.json.encode(value).decode()}\n"
                               for key, value in (server_options or {}).items())
        state_lines = "".join(f"{key} = {msgspec.json.encode(value).decode()}\n"
                              for key, value in (state_options or {}).items())
        config.write_text(
            f'[server]\nlisten = "127.0.0.1:{self.port}"\ntokens = ["{self.TOKEN}"]\n'
            f'detach_grace_s = 60\n{server_lines}'
            f'[salesforce]\nallowed_hosts = ["127.0.0.1:*"]\n'
            'messaging_stream_timeout_s = 5\n'
            f'[state]\ndir = "{state or tmp / "state"}"\n{state_lines}'
            f'[profiles.manual]\n{profile}button_id = "573MANUAL000000"\n'
            f'[profiles.echo]\n{profile}button_id = "573ECHO00000000"\n'
            f'{self.messaging_profiles(simulator.messaging_base)}'
            + (self.cluster_section(node, redis_url, cluster_options or {})
               if redis_url else ""))
        super().__init__(["run", "--config", str(config), *LOG_LEVEL], tmp / f"{name}.log")
        self.health = f"http://127.0.0.1:{self.port}"
        if not wait_ready:
            wait_http(f"{self.health}/healthz", process=self.process)  # type: ignore[arg-type]
            return
        wait_http(f"http://127.0.0.1:{self.port}/readyz",
                  process=self.process)  # type: ignore[arg-type]

    @staticmethod
    def cluster_section(node: str, redis_url: str, options: dict[str, Any]) -> str:
        """``[cluster]`` with the scaled-down timings, ``options`` added or put instead."""
        lines = [line for line in CLUSTER.format(node=node, url=redis_url).splitlines()
                 if line.partition(" = ")[0] not in options]
        lines += [f"{key} = {msgspec.json.encode(value).decode()}"
                  for key, value in options.items()]
        return "\n".join(lines) + "\n"

    @staticmethod
    def messaging_profiles(scrt_url: str) -> str:
        """Enhanced Chat profiles ``m_manual`` and ``m_echo`` (an 18-character org id)."""
        return "".join(
            f'[profiles.{name}]\ntype = "salesforce_messaging"\nscrt_url = "{scrt_url}"\n'
            'organization_id = "00D000000000001EAA"\n'
            f'es_developer_name = "{deployment}"\n'
            for name, deployment in (("m_manual", "Sim_Manual"), ("m_echo", "Sim_Echo")))
