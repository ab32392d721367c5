"""Output files: JSON of every figure, and a PNG chart (latency distribution and delivery rate
per mode; for ramp, deliveries/s and p99 per step)."""

import json
from pathlib import Path

from .stats import MODE_TITLES

COLORS = {"redis": "#d62728", "memory": "#1f77b4"}


def write_json(path: Path, data: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=1, default=str))


def write_chart(path: Path, runs: dict, *, title: str, ramp: bool = False) -> None:
    """``runs`` maps mode → run (with ``steps`` and ``latencies``)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker
    import numpy as np

    path.parent.mkdir(parents=True, exist_ok=True)
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 4.8))
    if ramp:
        for mode, run in runs.items():
            steps = run["steps"]
            x = [s["rate"] for s in steps]
            ax1.plot(
                x,
                [s["deliveries_per_s"] or 0 for s in steps],
                "o-",
                color=COLORS.get(mode),
                label=f"{MODE_TITLES.get(mode, mode)} deliveries/s",
            )
            ax1.plot(
                x,
                [s["offered_sends_per_s"] * (s["expected"] / max(1, s["sent"])) for s in steps],
                "k:",
                label="offered deliveries/s",
            )
            ax2.plot(
                x, [s["latency_ms"]["p99"] or 0 for s in steps], "o-", color=COLORS.get(mode), label="p99"
            )
            ax2.plot(
                x, [s["latency_ms"]["p50"] or 0 for s in steps], "s--", color=COLORS.get(mode), label="p50"
            )
            for s in steps:
                if not s.get("passed"):
                    ax1.annotate(
                        f"{s['delivery_rate_pct']}%", (s["rate"], s["deliveries_per_s"] or 0), fontsize=7
                    )
        ax1.set_xlabel("messages/s per sender")
        ax1.set_ylabel("deliveries/s")
        ax1.set_title("Throughput per step")
        ax2.axhline(100, color="grey", lw=0.8, ls="--")
        ax2.set_xlabel("messages/s per sender")
        ax2.set_ylabel("latency (ms)")
        ax2.set_yscale("log")
        ax2.set_title("Latency per step (target p99 < 100 ms)")
        ax1.legend(fontsize=8)
        ax2.legend(fontsize=8)
    else:
        labels, rates = [], []
        for mode, run in runs.items():
            lat = np.sort(np.asarray(run["latencies"][0] if run["latencies"] else [], dtype=float))
            step = run["steps"][0] if run["steps"] else {}
            if lat.size:
                y = np.arange(1, lat.size + 1) / lat.size * 100
                ax1.step(
                    lat,
                    y,
                    where="post",
                    color=COLORS.get(mode),
                    label=f"{MODE_TITLES.get(mode, mode)} (p50 {step['latency_ms']['p50']} / "
                    f"p99 {step['latency_ms']['p99']} ms, n={lat.size})",
                )
            labels.append(MODE_TITLES.get(mode, mode))
            rates.append(step.get("delivery_rate_pct") or 0)
        ax1.set_xscale("log")
        ax1.xaxis.set_major_locator(matplotlib.ticker.LogLocator(subs=(1.0, 2.0, 5.0)))
        ax1.xaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:g}"))
        ax1.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        ax1.set_xlabel("end-to-end latency (ms, send → receive)")
        ax1.set_ylabel("% of deliveries at or below")
        ax1.set_title("Latency distribution")
        ax1.grid(True, which="both", alpha=0.3)
        ax1.legend(fontsize=8, loc="lower right")
        bars = ax2.bar(labels, rates, color=[COLORS.get(m) for m in runs])
        for b, r in zip(bars, rates):
            ax2.annotate(f"{r:.1f}%", (b.get_x() + b.get_width() / 2, r), ha="center", va="bottom")
        ax2.set_ylim(0, 110)
        ax2.set_ylabel("delivered / expected (%)")
        ax2.set_title("Delivery rate")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
