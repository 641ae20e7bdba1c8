"""``bridged bench-state --store redis``: the same workload on SQLite and on the cluster's
Redis store, in one run, against a redis-server it starts and stops by pid.

A smoke: every change committed on both stores, the table with Redis's ratios to SQLite's.
Never timings.
"""

from __future__ import annotations

import pytest

from bridged.cli import main


def test_bench_state_compares_the_redis_store_with_sqlite(
        capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["bench-state", "--store", "redis", "--chats", "50", "--rate", "200",
                 "--seconds", "0.5", "--size", "256"])

    out = capsys.readouterr().out
    assert code == 0, out
    rows = {line.split()[0]: line.split()[1:] for line in out.splitlines()
            if line and not line.startswith((" ", "(", "state", "one"))}
    # The same workload on both, however slow the machine: rate x seconds changes.
    assert rows["changes"][:2] == ["100.000", "100.000"], rows["changes"]
    assert rows["rows_written"][:2] == rows["changes"][:2]  # every change committed, on both
    assert float(rows["server_cpu_ms_per_change"][0]) == 0.0  # SQLite has no server
    assert len(rows["cpu_ms_per_change"]) == 3  # sqlite, redis, redis/sqlite
    assert "held events" in out


def test_bench_state_without_a_redis_server_names_the_option(
        capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["bench-state", "--store", "redis", "--redis-server", "/nowhere/redis"])

    assert code == 2
    assert "--redis-server '/nowhere/redis': not an executable file" in capsys.readouterr().err
