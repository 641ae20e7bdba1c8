"""``--plot PATH.png``: latency over time and a latency histogram, with matplotlib.

matplotlib is an optional extra (``pip install matplotlib``): it is imported here, lazily,
and only when a plot is asked for. Without it the load test says so and goes on.
"""

from __future__ import annotations

__all__ = ["write_plot"]

from typing import Any


def write_plot(runs: list[dict[str, Any]], path: str) -> str | None:
    """Write the plot of every run's latency phase to ``path``.

    Returns:
        None when written, or why not (matplotlib missing, no samples).
    """
    try:
        import matplotlib  # type: ignore[import-not-found, unused-ignore]

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt  # type: ignore[import-not-found, unused-ignore]
    except ImportError:
        return ("matplotlib is not installed, so no plot was written "
                "(it is optional: .venv/bin/pip install matplotlib)")
    series = [(f"{r['target']} {r['topology']}", r["_samples"]) for r in runs
              if r.get("_samples") is not None and len(r["_samples"].rtt)]
    if not series:
        return "no latency samples to plot"
    fig, (over_time, histogram) = plt.subplots(2, 1, figsize=(11, 9))
    for label, samples in series:
        # Per second of the phase: p50 and p99 of the round trips sent in that second.
        buckets: dict[int, list[float]] = {}
        for t, rtt in zip(samples.send_t, samples.rtt, strict=True):
            buckets.setdefault(int(t), []).append(rtt / 1e6)
        seconds = sorted(buckets)
        p50, p99 = [], []
        for s in seconds:
            values = sorted(buckets[s])
            p50.append(values[len(values) // 2])
            p99.append(values[min(len(values) - 1, int(len(values) * 0.99))])
        line = over_time.plot(seconds, p99, label=f"{label} p99")[0]
        over_time.plot(seconds, p50, linestyle="--", color=line.get_color(),
                       label=f"{label} p50")
        values_ms = [v / 1e6 for v in samples.rtt]
        low = max(0.01, min(values_ms))
        high = max(values_ms)
        bins = [low * (high / low) ** (i / 60) for i in range(61)] if high > low else 30
        histogram.hist(values_ms, bins=bins, histtype="step", label=label)
    over_time.set_xlabel("time in the half-load phase (s)")
    over_time.set_ylabel("round trip (ms)")
    over_time.set_title("Round trip OCP -> agent -> OCP, per second")
    over_time.legend(fontsize="small")
    over_time.grid(True, alpha=0.3)
    histogram.set_xscale("log")
    histogram.set_xlabel("round trip (ms)")
    histogram.set_ylabel("messages")
    histogram.set_title("Round trip histogram")
    histogram.legend(fontsize="small")
    histogram.grid(True, alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return None
