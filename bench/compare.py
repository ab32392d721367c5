"""``python -m bench.compare``: one chart and one table for runs of the peers' Node load generator
(``../shared/peers/loadgen.js``) against several servers in one sitting: chatsite through
``bench/peer-loadgen.sh``, the Socket.IO and Channels-tutorial peers through their
``run_throughput.py``. Each run is the generator's JSON (one rate step).

    python -m bench.compare --out bench/charts/final.png \\
        chatsite=/tmp/peer-loadgen.*/rate-*.json \\
        socket.io=/tmp/peer/results/T-sio-redis-*.json

Each ``LABEL=GLOB`` is one series; its steps are sorted by offered deliveries per second.
A step passes as in the issue: at least 99.9 % delivered and p99 under 100 ms. Printed: a
Markdown table (label, per-sender rate, deliveries/s, p50/p99 ms, node CPU µs per delivery,
pass), then the highest passing rate of each series. The chart has two panels: delivered
against offered deliveries per second, and p99 (log scale) against offered, with the 100 ms
line; failed steps are drawn hollow.

Node CPU per delivery is the generator's ``cpu_send_phase``: the sum of the nodes' % of a core
over the send window, times the window, divided by the deliveries."""

import argparse
import glob
import json
from pathlib import Path


def load(pattern: str) -> list[dict]:
    """The runs matching ``pattern`` (generator JSON files), sorted by offered deliveries/s.
    Files that are not a finished run (no ``actual_deliveries``) are skipped."""
    runs = []
    for name in sorted(glob.glob(pattern)):
        try:
            run = json.loads(Path(name).read_text())
        except (OSError, ValueError):
            continue
        if not isinstance(run, dict) or "actual_deliveries" not in run:
            continue
        run["_file"] = name
        runs.append(run)
    return sorted(runs, key=offered)


def offered(run: dict) -> float:
    """Offered deliveries per second: sends per second times members per room."""
    per_message = run["expected_deliveries"] / max(run["sent"], 1)
    return run["offered_sends_per_s"] * per_message


def passed(run: dict) -> bool:
    """The issue's pass rule: ≥ 99.9 % delivered and p99 < 100 ms."""
    return (run.get("delivery_rate_pct") or 0) >= 99.9 and (run.get("lat_p99_ms") or 1e9) < 100


def node_us_per_delivery(run: dict) -> float | None:
    """Node CPU per delivery in µs (all nodes), or None without CPU figures."""
    cpu = run.get("cpu_send_phase") or {}
    nodes = sum(v for k, v in cpu.items() if k.startswith("node"))
    if not nodes or not run.get("actual_deliveries"):
        return None
    return nodes / 100 * cpu["window_s"] / run["actual_deliveries"] * 1e6


def table(series: dict[str, list[dict]]) -> str:
    """The Markdown table of every step of every series."""
    lines = [
        "| server | msg/s per sender | deliveries/s | p50 / p99 ms | node µs per delivery | pass |",
        "|---|---|---|---|---|---|",
    ]
    for label, runs in series.items():
        for run in runs:
            us = node_us_per_delivery(run)
            lines.append(
                f"| {label} | {run['rate_per_sender']:g} | {run['delivered_msgs_per_s']:,.0f} | "
                f"{run['lat_p50_ms']} / {run['lat_p99_ms']} | {'' if us is None else f'{us:.0f}'} | "
                f"{'yes' if passed(run) else 'no'} |"
            )
    return "\n".join(lines)


def chart(series: dict[str, list[dict]], path: Path, title: str) -> None:
    """Write the two-panel PNG to ``path``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path.parent.mkdir(parents=True, exist_ok=True)
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 4.8))
    top = 0.0
    for index, (label, runs) in enumerate(series.items()):
        color = f"C{index}"
        x = [offered(r) for r in runs]
        top = max([top, *x])
        ax1.plot(x, [r["delivered_msgs_per_s"] for r in runs], "-", color=color, label=label)
        ax2.plot(x, [max(r["lat_p99_ms"] or 0, 0.1) for r in runs], "-", color=color, label=label)
        for r, xi in zip(runs, x):
            face = color if passed(r) else "none"
            ax1.plot(xi, r["delivered_msgs_per_s"], "o", color=color, mfc=face)
            ax2.plot(xi, max(r["lat_p99_ms"] or 0, 0.1), "o", color=color, mfc=face)
    ax1.plot([0, top], [0, top], "k:", lw=0.8, label="offered")
    ax1.set_xlabel("offered deliveries/s")
    ax1.set_ylabel("delivered per second")
    ax1.set_title("Throughput (hollow: step failed)")
    ax1.legend(fontsize=8)
    ax2.axhline(100, color="grey", lw=0.8, ls="--")
    ax2.set_yscale("log")
    ax2.set_xlabel("offered deliveries/s")
    ax2.set_ylabel("p99 latency (ms)")
    ax2.set_title("p99 per step (pass: < 100 ms, ≥ 99.9 % delivered)")
    ax2.legend(fontsize=8)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.compare", description=__doc__.split("\n\n")[0])
    parser.add_argument("series", nargs="+", help="LABEL=GLOB of generator JSON files")
    parser.add_argument("--out", type=Path, help="PNG to write (none: table only)")
    parser.add_argument("--title", default="50 rooms of 20, 50 senders, the peers' Node generator")
    args = parser.parse_args(argv)
    series = {}
    for item in args.series:
        label, _, pattern = item.partition("=")
        if not pattern:
            parser.error(f"expected LABEL=GLOB, got {item!r}")
        series[label] = load(pattern)
    print(table(series))
    for label, runs in series.items():
        best = max((r["delivered_msgs_per_s"] for r in runs if passed(r)), default=None)
        print(f"{label}: highest passing step {'none' if best is None else f'{best:,.0f} deliveries/s'}")
    if args.out:
        chart(series, args.out, args.title)
        print(f"chart: {args.out}")


if __name__ == "__main__":
    main()
