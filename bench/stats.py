"""The tool's own arithmetic: percentiles, expected deliveries, per-node delivery, the table.

Pure functions on plain data (no processes, no I/O), unit-tested in tests/test_bench.py.
"""

import math
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence

MODE_TITLES = {"memory": "in-memory layer", "redis": "Redis Pub/Sub"}


def percentile(sorted_values: Sequence[float], p: float) -> float | None:
    """Nearest-rank percentile of already sorted values: the smallest value with at least
    ``p`` percent of the values at or below it. ``None`` for no values; ``p`` in [0, 100]."""
    if not 0 <= p <= 100:
        raise ValueError(f"percentile {p} is not in [0, 100]")
    n = len(sorted_values)
    if n == 0:
        return None
    rank = max(1, math.ceil(p / 100 * n))
    return sorted_values[rank - 1]


def latency_summary(latencies_ms: Iterable[float]) -> dict:
    """``count``, ``p50``, ``p95``, ``p99``, ``max`` and ``mean`` in ms (rounded to 0.01 ms);
    ``None`` figures when there is no sample."""
    values = sorted(latencies_ms)
    out = {"count": len(values)}
    for p in (50, 95, 99):
        v = percentile(values, p)
        out[f"p{p}"] = None if v is None else round(v, 2)
    out["max"] = round(values[-1], 2) if values else None
    out["mean"] = round(sum(values) / len(values), 2) if values else None
    return out


def room_members(client_nodes: Mapping[int, str], rooms: int) -> Counter:
    """Connected members per ``(room, node)``: ``client_nodes`` maps each connected client's
    index to the node (``server_id``) it landed on; client ``i`` is in room ``i % rooms``."""
    return Counter((i % rooms, node) for i, node in client_nodes.items())


def expected_matrix(members: Mapping[tuple[int, str], int], sent: Iterable[tuple[int, str, int]]) -> dict:
    """Deliveries expected with full cross-node delivery, as ``{receiving node: {sending node:
    count}}``: each of the ``count`` messages sent in ``room`` through ``node`` (``sent`` holds
    ``(room, node, count)``) reaches every connected member of that room on every node, the
    sender included. The in-memory layer delivers only the diagonal (receiving node == sending
    node)."""
    matrix: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    nodes = {node for (_, node) in members}
    for room, send_node, count in sent:
        if count <= 0:
            continue
        for recv_node in nodes:
            n = members.get((room, recv_node), 0)
            if n:
                matrix[recv_node][send_node] += n * count
    return {r: dict(row) for r, row in matrix.items()}


def matrix_total(matrix: Mapping[str, Mapping[str, int]], *, local_only: bool = False) -> int:
    """Sum of a ``{receiving node: {sending node: n}}`` matrix; ``local_only``: the diagonal."""
    return sum(n for r, row in matrix.items() for s, n in row.items() if not local_only or r == s)


def pct(part: float, whole: float) -> float | None:
    return None if not whole else round(100.0 * part / whole, 3)


def per_node_delivery(
    expected: Mapping[str, Mapping[str, int]],
    received: Mapping[str, Mapping[str, int]],
    members: Mapping[tuple[int, str], int],
) -> dict:
    """What each node's members received: ``{node: {"members", "expected", "received",
    "rate_pct", "from": {sending node: received}}}`` for every node with members."""
    nodes = sorted({node for (_, node) in members} | set(expected) | set(received))
    out = {}
    for node in nodes:
        exp = sum(expected.get(node, {}).values())
        got_row = received.get(node, {})
        got = sum(got_row.values())
        out[node] = {
            "members": sum(n for (_, nd), n in members.items() if nd == node),
            "expected": exp,
            "received": got,
            "rate_pct": pct(got, exp),
            "from": dict(sorted(got_row.items())),
        }
    return out


def merge_counts(rows: Iterable[Mapping]) -> dict:
    """Add up dicts of counts (nested one level deep allowed)."""
    out: dict = {}
    for row in rows:
        for k, v in row.items():
            if isinstance(v, Mapping):
                inner = out.setdefault(k, {})
                for k2, v2 in v.items():
                    inner[k2] = inner.get(k2, 0) + v2
            else:
                out[k] = out.get(k, 0) + v
    return out


def ramp_step_passes(result: Mapping, *, min_delivery_pct: float, max_p99_ms: float) -> bool:
    """A ramp step passes with at least ``min_delivery_pct`` delivered and p99 under
    ``max_p99_ms`` (and no message lost to a send or connect error)."""
    rate = result.get("delivery_rate_pct")
    p99 = (result.get("latency_ms") or {}).get("p99")
    return rate is not None and p99 is not None and rate >= min_delivery_pct and p99 < max_p99_ms


def log_histogram(
    latencies_ms: Iterable[float], *, lo: float = 0.1, hi: float = 100_000.0, per_decade: int = 10
) -> dict:
    """Counts in logarithmic bins (``per_decade`` bins per factor of 10, from ``lo`` to ``hi``
    ms; values outside go to the first or last bin): ``{"edges_ms": [...], "counts": [...]}``."""
    decades = math.log10(hi / lo)
    nbins = int(round(decades * per_decade))
    edges = [lo * 10 ** (i / per_decade) for i in range(nbins + 1)]
    counts = [0] * nbins
    for v in latencies_ms:
        if v <= lo:
            i = 0
        else:
            i = min(nbins - 1, int(math.log10(v / lo) * per_decade))
        counts[i] += 1
    return {"edges_ms": [round(e, 4) for e in edges], "counts": counts}


# --- the table --------------------------------------------------------------------------------


def _fmt(v, suffix: str = "", digits: int = 1) -> str:
    if v is None:
        return "n/a"
    if isinstance(v, float):
        return f"{v:,.{digits}f}{suffix}"
    return f"{v:,}{suffix}"


def _lat(lat: Mapping | None) -> str:
    if not lat or lat.get("p50") is None:
        return "n/a"
    return f"{lat['p50']:.1f} / {lat['p95']:.1f} / {lat['p99']:.1f} / {lat['max']:.1f}"


def _errors(errors: Mapping[str, int]) -> str:
    items = [f"{k} {v}" for k, v in sorted(errors.items()) if v]
    return ", ".join(items) if items else "none"


def table_rows(results: Mapping[str, Mapping]) -> list[tuple[str, list[str]]]:
    """The comparison table's rows, ``(measure, [cell per mode])``, modes in the order given
    (``results`` maps mode → one run's result)."""
    modes = list(results)
    nodes = sorted({n for r in results.values() for n in (r.get("per_node") or {})})
    rows: list[tuple[str, list[str]]] = []

    def row(name, f):
        rows.append((name, [f(results[m]) for m in modes]))

    row(
        "delivery rate",
        lambda r: (
            f"{_fmt(r.get('delivery_rate_pct'), '%')} "
            f"({_fmt(r.get('received'))} of {_fmt(r.get('expected'))})"
        ),
    )
    row("latency p50 / p95 / p99 / max (ms)", lambda r: _lat(r.get("latency_ms")))
    for node in nodes:

        def cell(r, node=node):
            n = (r.get("per_node") or {}).get(node)
            if not n:
                return "n/a"
            return f"{_fmt(n['received'])} of {_fmt(n['expected'])} ({_fmt(n['rate_pct'], '%')}; {n['members']} member{'' if n['members'] == 1 else 's'})"

        row(f"{node}'s members received", cell)
    row("messages sent (acked)", lambda r: f"{_fmt(r.get('sent'))} ({_fmt(r.get('acks'))})")
    row("deliveries per second", lambda r: _fmt(r.get("deliveries_per_s")))
    row("clients connected", lambda r: f"{_fmt(r.get('connected'))} of {_fmt(r.get('clients'))}")
    row(
        "connect p50 / p99 / all (ms)",
        lambda r: (
            f"{_fmt((r.get('connect_ms') or {}).get('p50'))} / {_fmt((r.get('connect_ms') or {}).get('p99'))}"
            f" / {_fmt((r.get('connect_ms') or {}).get('all'), digits=0)}"
        ),
    )
    row("node CPU per delivery (µs)", lambda r: _fmt(r.get("node_cpu_us_per_delivery"), digits=0))
    row(
        "node CPU s / peak RSS MB",
        lambda r: (
            ", ".join(
                f"{n}: {_fmt(s.get('cpu_s'), digits=2)} / {_fmt(s.get('peak_rss_mb'), digits=0)}"
                for n, s in sorted((r.get("node_stats") or {}).items())
            )
            or "n/a"
        ),
    )
    row(
        "load generator CPU % / loop delay p99 (ms)",
        lambda r: (
            f"{_fmt((r.get('loadgen') or {}).get('cpu_pct'))} / "
            f"{_fmt((r.get('loadgen') or {}).get('loop_delay_p99_ms'))}"
        ),
    )
    row("errors", lambda r: _errors(r.get("errors") or {}))
    return rows


def render_table(results: Mapping[str, Mapping]) -> str:
    """The mission's comparison table as Markdown, one column per mode."""
    rows = table_rows(results)
    header = ["measure"] + [MODE_TITLES.get(m, m) for m in results]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for name, cells in rows:
        lines.append("| " + " | ".join([name, *cells]) + " |")
    return "\n".join(lines)


def render_ramp(steps: Sequence[Mapping], best: Mapping | None) -> str:
    """A ramp's steps as Markdown, and the highest passing step."""
    lines = [
        "| rate per sender (msg/s) | offered sends/s | delivered | deliveries/s | p50 / p95 / p99 / max (ms) | node CPU µs/delivery | loadgen CPU % | pass |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for s in steps:
        lines.append(
            f"| {_fmt(s.get('rate'))} | {_fmt(s.get('offered_sends_per_s'))} | {_fmt(s.get('delivery_rate_pct'), '%', 3)} "
            f"| {_fmt(s.get('deliveries_per_s'))} | {_lat(s.get('latency_ms'))} "
            f"| {_fmt(s.get('node_cpu_us_per_delivery'), digits=0)} | {_fmt((s.get('loadgen') or {}).get('cpu_pct'))} "
            f"| {'yes' if s.get('passed') else 'no'} |"
        )
    if best:
        lines.append(
            f"\nHighest passing step: {_fmt(best.get('rate'))} msg/s per sender, "
            f"{_fmt(best.get('deliveries_per_s'))} deliveries/s sustained."
        )
    else:
        lines.append("\nNo step passed.")
    return "\n".join(lines)
