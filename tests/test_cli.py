"""The command line, as an operator meets it: real processes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from tests.processes import free_port

ROOT = Path(__file__).parent.parent


def bridged(*args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "bridged", *args], capture_output=True,
                          text=True, timeout=timeout, cwd=ROOT)


def test_a_bad_config_key_stops_start_up_with_one_clear_line(tmp_path: Path) -> None:
    config = tmp_path / "bridged.toml"
    config.write_text('[server]\ntokens = ["0123456789"]\nlisten = "nowhere"\n')
    result = bridged("run", "--config", str(config))
    assert result.returncode == 2
    assert result.stderr == (
        "bridged: config error: server.listen: expected host:port, got 'nowhere'\n")
    config.write_text('[server]\ntokens = ["0123456789"]\nmax_chats = "many"\n')
    result = bridged("run", "--config", str(config))
    assert result.returncode == 2
    assert result.stderr == (
        "bridged: config error: server.max_chats: Expected `int`, got `str`\n")
    assert "Traceback" not in result.stderr


def test_a_missing_config_file_is_one_clear_line(tmp_path: Path) -> None:
    result = bridged("run", "--config", str(tmp_path / "nope.toml"))
    assert result.returncode == 2
    assert result.stderr.startswith("bridged: config error: cannot read ")
    assert result.stderr.count("\n") == 1


def test_check_prints_the_effective_config_without_secrets() -> None:
    result = bridged("check", "--config", str(ROOT / "conf" / "bridged.example.toml"))
    assert result.returncode == 0, result.stderr
    assert "change-me-please" not in result.stdout
    assert '"<redacted>"' in result.stdout
    assert '"listen": "127.0.0.1:8710"' in result.stdout


def test_check_refuses_a_bad_cluster_section_naming_the_field(tmp_path: Path) -> None:
    config = tmp_path / "bridged.toml"
    config.write_text('[server]\ntokens = ["0123456789"]\n[cluster]\nnode = "a"\n'
                      'sentinels = ["10.0.0.1:26379", "10.0.0.2"]\n')
    result = bridged("check", "--config", str(config))
    assert result.returncode == 2
    assert result.stderr == ("bridged: config error: cluster.sentinels[1]: expected host:port,"
                             " got '10.0.0.2'\n")


def test_version() -> None:
    result = bridged("version")
    assert result.returncode == 0
    assert result.stdout.startswith("bridged 0.")


def test_run_serves_and_stops_on_sigterm(tmp_path: Path) -> None:
    port = free_port()
    config = tmp_path / "bridged.toml"
    config.write_text(f'[server]\nlisten = "127.0.0.1:{port}"\ntokens = ["0123456789"]\n'
                      f'[state]\ndir = "{tmp_path}"\n')
    process = subprocess.Popen([sys.executable, "-m", "bridged", "run", "--config", str(config)],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               cwd=ROOT)
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1) as r:
                    assert r.status == 200
                    break
            except OSError:
                assert time.monotonic() < deadline, "bridged did not come up"
                assert process.poll() is None, process.communicate()
                time.sleep(0.1)
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=15)
        assert process.returncode == 0, stderr
        assert '"event": "listening"' in stderr.replace('":"', '": "') or '"listening"' in stderr
        assert "0123456789" not in stderr  # tokens are never logged
    finally:
        if process.poll() is None:
            os.kill(process.pid, signal.SIGKILL)
            process.wait()
