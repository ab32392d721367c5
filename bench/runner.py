"""One run of one channel-layer mode: start the nodes (or take the given URLs), connect the
clients through the load generator, run the send phase (one per rate step for ``ramp``),
measure, stop everything that was started."""

import math
import os
import secrets
import signal
import threading
import time
from contextlib import contextmanager
from pathlib import Path

from tqdm import tqdm

from . import cluster, stats
from .loadgen import LoadGenerator
from .scenarios import Scenario

MB = 1024 * 1024


@contextmanager
def sigint_deferred():
    """Let cleanup finish: a second Ctrl-C while processes are being stopped is ignored."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    old = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, old)


def default_lg_procs(clients: int) -> int:
    return 1 if clients <= 200 else 2


def summarize_phase(
    *,
    scenario: Scenario,
    rate: float,
    plan: dict,
    worker_results: list,
    client_nodes: dict,
    node_cpu: dict,
    nodes: list,
    lg_cpu_s: float,
    wall_s: float,
    rss_idle: dict,
    rss_before: dict,
    connect: dict,
) -> tuple[dict, list]:
    """One phase's figures from the workers' raw results. Returns ``(result, latencies)``."""
    R = scenario.rooms
    members = stats.room_members(client_nodes, R)
    sent_map = {}
    for r in worker_results:
        for k, v in r["sent"].items():
            sent_map[int(k)] = sent_map.get(int(k), 0) + v
    sent_rows = [(i % R, client_nodes[i], n) for i, n in sent_map.items() if i in client_nodes]
    expected = stats.expected_matrix(members, sent_rows)
    received = stats.merge_counts(r["matrix"] for r in worker_results)
    latencies = [v for r in worker_results for v in r["latencies"]]
    n_received = sum(r["received"] for r in worker_results)
    n_expected = stats.matrix_total(expected)
    sent = sum(sent_map.values())
    acks = sum(r["acks"] for r in worker_results)
    errors = stats.merge_counts([connect["errors"]] + [r["errors"] for r in worker_results])
    if acks < sent:
        errors["no_ack"] = sent - acks
    last = max((r["last_recv"] for r in worker_results if r["last_recv"]), default=None)
    window = (last - plan["t0"]) if last else None
    node_stats = {}
    for node in nodes:
        on_node = sum(n for (_, nd), n in members.items() if nd == node.server_id)
        cpu = node_cpu.get(node.server_id)
        idle, before = rss_idle.get(node.server_id), rss_before.get(node.server_id)
        node_stats[node.server_id] = {
            "pid": node.pid,
            "cpu_s": None if cpu is None else round(cpu, 3),
            "cpu_pct": None if cpu is None else round(100 * cpu / wall_s, 1),
            "peak_rss_mb": round(node.peak_rss / MB, 1) if node.peak_rss else None,
            "rss_connected_mb": round(idle / MB, 1) if idle else None,
            "rss_per_socket_kb": round((idle - before) / 1024 / on_node, 1)
            if idle and before and on_node
            else None,
        }
    cpu_total = sum(v for v in node_cpu.values() if v is not None) if node_cpu else None
    delays = [r["loop_delay_p99_ms"] for r in worker_results if r["loop_delay_p99_ms"] is not None]
    maxes = [r["loop_delay_max_ms"] for r in worker_results if r["loop_delay_max_ms"] is not None]
    connect_ms = sorted(connect["connect_ms"])
    result = {
        "rate": rate,
        "offered_sends_per_s": round(rate * len([i for i in plan["senders"] if i in client_nodes]), 2),
        "duration_s": plan["duration"],
        "clients": scenario.clients,
        "connected": len(client_nodes),
        "connect_ms": {
            "p50": stats.percentile(connect_ms, 50),
            "p99": stats.percentile(connect_ms, 99),
            "max": connect_ms[-1] if connect_ms else None,
            "all": connect.get("all_ms"),
        },
        "senders": len(plan["senders"]),
        "sent": sent,
        "acks": acks,
        "expected": n_expected,
        "expected_local": stats.matrix_total(expected, local_only=True),
        "received": n_received,
        "delivery_rate_pct": stats.pct(n_received, n_expected),
        "latency_ms": stats.latency_summary(latencies),
        "latency_histogram": stats.log_histogram(latencies),
        "deliveries_per_s": round(n_received / window, 1) if window and window > 0 else None,
        "delivery_window_s": round(window, 3) if window else None,
        "per_node": stats.per_node_delivery(expected, received, members),
        "errors": errors,
        "error_samples": (connect.get("error_samples") or [])
        + [s for r in worker_results for s in r["error_samples"]][:10],
        "node_stats": node_stats,
        "node_cpu_s": None if cpu_total is None else round(cpu_total, 3),
        "node_cpu_us_per_delivery": round(1e6 * cpu_total / n_received, 1)
        if cpu_total and n_received
        else None,
        "loadgen": {
            "procs": len(worker_results),
            "cpu_s": round(lg_cpu_s, 3),
            "cpu_pct": round(100 * lg_cpu_s / wall_s, 1) if wall_s else None,
            "loop_delay_p99_ms": round(max(delays), 2) if delays else None,
            "loop_delay_max_ms": round(max(maxes), 2) if maxes else None,
        },
        "wall_s": round(wall_s, 3),
    }
    for k in ("p50", "p99", "max"):
        if result["connect_ms"][k] is not None:
            result["connect_ms"][k] = round(result["connect_ms"][k], 2)
    return result, latencies


def run_mode(
    scenario: Scenario,
    mode: str,
    *,
    tokens: list[str],
    rooms: list[str],
    database_url: str,
    redis_url: str,
    log_dir: Path,
    urls: list[str] | None = None,
    pids: dict | None = None,
    product_dir: Path = cluster.REPO_DIR,
    lg_procs: int | None = None,
    progress: bool = True,
    quiet_s: float = 1.5,
    drain_s: float = 10.0,
    connect_timeout: float = 15.0,
    log=print,
) -> dict:
    """Run ``scenario`` once on ``mode`` ("redis" or "memory"). Returns ``{"mode", "nodes",
    "steps": [phase result, ...], "latencies": [[ms, ...] per step]}`` (latencies are not
    written to JSON; the chart uses them)."""
    if mode not in ("redis", "memory"):
        raise ValueError(f"unknown mode {mode!r}")
    prefix = f"chatsite-bench-{os.getpid()}-{secrets.token_hex(4)}"
    started = []
    lg = None
    tag = secrets.token_hex(4)
    try:
        if urls:
            nodes = cluster.external_nodes(urls, pids)
        else:
            env = cluster.node_env(
                database_url=database_url, redis_url=redis_url if mode == "redis" else "", prefix=prefix
            )
            log(f"[{mode}] starting {scenario.nodes} daphne nodes (channel-layer prefix {prefix})")
            nodes = started = cluster.start_nodes(
                scenario.nodes, env=env, log_dir=log_dir / mode, product_dir=product_dir
            )
            cluster.wait_healthy(nodes)
            log(f"[{mode}] " + ", ".join(f"{n.server_id} pid {n.pid} {n.url}" for n in nodes))
        rss_before = {n.server_id: n.rss() for n in nodes}
        clients = [
            (i, nodes[i % len(nodes)].url, rooms[i % scenario.rooms], tokens[i])
            for i in range(scenario.clients)
        ]
        procs = lg_procs or default_lg_procs(scenario.clients)
        lg = LoadGenerator(
            clients=clients,
            procs=procs,
            tag=tag,
            connect_timeout=connect_timeout,
            connect_concurrency=scenario.connect_concurrency,
        )
        log(
            f"[{mode}] load generator: {procs} process(es), pids {lg.pids}; connecting {scenario.clients} clients"
        )
        t_conn = time.monotonic()
        with tqdm(
            total=scenario.clients, desc=f"[{mode}] connect", unit="sock", disable=not progress, leave=False
        ) as bar:

            def conn_progress(n):
                bar.update(n - bar.n)

            connect = lg.wait_connected(
                timeout=connect_timeout + 10 + scenario.clients * 0.05, on_progress=conn_progress
            )
        connect["all_ms"] = round((time.monotonic() - t_conn) * 1000, 1)
        client_nodes = connect["nodes"]
        log(
            f"[{mode}] {len(client_nodes)} of {scenario.clients} connected in {connect['all_ms'] / 1000:.1f} s"
            + (f"; errors {connect['errors']}" if connect["errors"] else "")
        )
        time.sleep(0.5)  # let the joins settle (group_add is done before hello, but be fair to all)
        rss_idle = {n.server_id: n.rss() for n in nodes}
        members = stats.room_members(client_nodes, scenario.rooms)
        senders = list(range(min(scenario.senders, scenario.clients)))
        steps, all_latencies = [], []
        rates = list(scenario.ramp_rates) if scenario.is_ramp else [scenario.rate]
        fails = 0
        for phase, rate in enumerate(rates, start=1):
            messages = max(1, math.ceil(rate * scenario.duration))
            planned = stats.matrix_total(
                stats.expected_matrix(
                    members,
                    [(i % scenario.rooms, client_nodes[i], messages) for i in senders if i in client_nodes],
                )
            )
            plan = {
                "phase": phase,
                "rate": float(rate),
                "messages": messages,
                "duration": scenario.duration,
                "senders": senders,
                "n_senders": len(senders),
                "payload_bytes": scenario.payload_bytes,
                "t0": time.monotonic() + 0.3,
                "hard_extra": drain_s + 15.0,
            }

            def expected_for_sent(sent_map):
                return stats.matrix_total(
                    stats.expected_matrix(
                        members,
                        [
                            (i % scenario.rooms, client_nodes[i], n)
                            for i, n in sent_map.items()
                            if i in client_nodes
                        ],
                    )
                )

            cpu0 = {n.server_id: n.cpu_seconds() for n in nodes}
            lg0, w0 = lg.cpu_seconds(), time.monotonic()
            desc = f"[{mode}] {rate:g} msg/s/sender" if scenario.is_ramp else f"[{mode}] deliveries"
            with tqdm(total=planned, desc=desc, unit="dlv", disable=not progress, leave=False) as bar:

                def on_progress(sent, acks, received):
                    bar.set_postfix(sent=sent, acks=acks, refresh=False)
                    bar.update(received - bar.n)

                def on_tick():
                    for n in nodes:
                        n.rss()

                worker_results = lg.run_phase(
                    plan,
                    expected_for_sent=expected_for_sent,
                    quiet_s=quiet_s,
                    drain_s=drain_s,
                    on_progress=on_progress,
                    on_tick=on_tick,
                )
            wall = time.monotonic() - w0
            cpu1 = {n.server_id: n.cpu_seconds() for n in nodes}
            node_cpu = {
                k: (cpu1[k] - cpu0[k]) for k in cpu0 if cpu0[k] is not None and cpu1.get(k) is not None
            }
            result, latencies = summarize_phase(
                scenario=scenario,
                rate=float(rate),
                plan=plan,
                worker_results=worker_results,
                client_nodes=client_nodes,
                node_cpu=node_cpu,
                nodes=nodes,
                lg_cpu_s=lg.cpu_seconds() - lg0,
                wall_s=wall,
                rss_idle=rss_idle,
                rss_before=rss_before,
                connect=connect,
            )
            dead = [n.server_id for n in started if not n.alive()]
            if dead:
                result["errors"]["node_died"] = len(dead)
            if scenario.is_ramp:
                result["passed"] = stats.ramp_step_passes(
                    result,
                    min_delivery_pct=scenario.ramp_min_delivery_pct,
                    max_p99_ms=scenario.ramp_max_p99_ms,
                )
            lat = result["latency_ms"]
            log(
                f"[{mode}] rate {rate:g}/s/sender: sent {result['sent']}, delivered {result['received']} of "
                f"{result['expected']} ({result['delivery_rate_pct']}%), p50 {lat['p50']} p99 {lat['p99']} ms, "
                f"{result['deliveries_per_s']} deliveries/s"
                + (f", {'pass' if result['passed'] else 'FAIL'}" if scenario.is_ramp else "")
            )
            steps.append(result)
            all_latencies.append(latencies)
            if dead:
                log(f"[{mode}] node(s) died: {dead}")
                break
            if scenario.is_ramp:
                if not result["passed"]:
                    fails += 1
                    if fails >= scenario.ramp_stop_after:
                        break
                time.sleep(1.0)  # late frames of this step must not land in the next one
        return {
            "mode": mode,
            "prefix": prefix,
            "nodes": [{"server_id": n.server_id, "url": n.url, "pid": n.pid} for n in nodes],
            "loadgen_pids": lg.pids,
            "steps": steps,
            "latencies": all_latencies,
        }
    finally:
        with sigint_deferred():
            if lg is not None:
                lg.close()
            if started:
                cluster.stop_nodes(started)
                for n in started:
                    if "Traceback" in n.log_tail(200_000):
                        log(f"[{mode}] {n.server_id} logged a traceback: see {n.log_path}")
