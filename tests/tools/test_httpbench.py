"""``python -m bridged.tools.httpbench``: bridged's transport, the same over a cookie jar,
the path it replaced and bare aiohttp, each relaying messages to a loopback server it starts
(and stops) in a process of its own.

A smoke: every client's exchanges were answered and measured, the table printed. Never
timings.
"""

from __future__ import annotations

import pytest

from bridged.tools.httpbench import CLIENTS, MODES, main, run_benchmark


@pytest.mark.parametrize("set_cookie", [False, True], ids=["no-cookie", "set-cookie"])
async def test_httpbench_measures_every_client_in_both_modes(set_cookie: bool) -> None:
    lines: list[str] = []
    figures = await run_benchmark(exchanges=40, slices=2, chats=4, request_connections=2,
                                  set_cookie=set_cookie, say=lines.append)

    assert set(figures) == set(MODES)
    for per in figures.values():
        assert set(per) == set(CLIENTS)
        assert all(cpu > 0 for cpu in per.values())
    table = lines[-3:]
    assert table[0].split() == ["mode", *CLIENTS, "jar/transport", "before/transport",
                                 "transport/floor"]
    assert [row.split()[0] for row in table[1:]] == list(MODES)


def test_httpbench_names_a_bad_option(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--exchanges", "0"]) == 2
    assert "--exchanges: must be at least 1" in capsys.readouterr().err
