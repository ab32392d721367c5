"""The benchmark tool (bench/): its own arithmetic, one small real run of both channel-layer
modes with exact delivery counts, and a Ctrl-C that leaves no process behind."""

import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections import Counter

import psutil
import pytest

from bench import cluster, runner, stats
from bench.cli import prepare
from bench.scenarios import SCENARIOS, Scenario
from tests.nodes import database_url_for_tests

# --- the tool's own logic -----------------------------------------------------------------------


def test_free_ports_are_below_the_ephemeral_range_bindable_and_never_repeated():
    """A server port from the ephemeral range can be a polling client's own source port (the
    client then connects to itself); free_port stays below that range."""
    import socket

    low = cluster._ephemeral_low()
    ports = [cluster.free_port() for _ in range(50)]
    assert len(set(ports)) == 50 and all(1024 <= p < low for p in ports)
    with socket.socket() as s:
        s.bind(("127.0.0.1", ports[-1]))


def test_percentile_is_nearest_rank():
    values = list(range(1, 101))  # 1..100
    assert stats.percentile(values, 50) == 50
    assert stats.percentile(values, 95) == 95
    assert stats.percentile(values, 99) == 99
    assert stats.percentile(values, 100) == 100
    assert stats.percentile(values, 0) == 1
    assert stats.percentile([7.0], 99) == 7.0
    assert stats.percentile([1, 2, 3, 4], 50) == 2  # ceil(0.5 * 4) = 2nd value
    assert stats.percentile([1, 2, 3, 4], 51) == 3
    assert stats.percentile([], 50) is None
    with pytest.raises(ValueError):
        stats.percentile([1], 101)


def test_latency_summary_of_unsorted_samples_and_of_none():
    s = stats.latency_summary([5.0, 1.0, 3.0, 2.0, 4.0] * 20)
    assert s == {"count": 100, "p50": 3.0, "p95": 5.0, "p99": 5.0, "max": 5.0, "mean": 3.0}
    assert stats.latency_summary([]) == {
        "count": 0,
        "p50": None,
        "p95": None,
        "p99": None,
        "max": None,
        "mean": None,
    }


def test_expected_deliveries_for_thirty_clients_round_robin_in_one_room():
    client_nodes = {i: f"node-{i % 3 + 1}" for i in range(30)}
    members = stats.room_members(client_nodes, rooms=1)
    assert members == {(0, "node-1"): 10, (0, "node-2"): 10, (0, "node-3"): 10}
    # 10 messages sent through node-1, 5 through node-2
    matrix = stats.expected_matrix(members, [(0, "node-1", 10), (0, "node-2", 5)])
    assert matrix == {n: {"node-1": 100, "node-2": 50} for n in ("node-1", "node-2", "node-3")}
    assert stats.matrix_total(matrix) == 450  # every member gets every message (sender included)
    assert stats.matrix_total(matrix, local_only=True) == 150  # the in-memory layer: own node only


def test_expected_deliveries_count_only_the_senders_room():
    # 2 rooms: client i in room i % 2; 4 clients on 2 nodes -> room 0 = {0, 2}, room 1 = {1, 3}
    client_nodes = {0: "a", 1: "b", 2: "a", 3: "b"}
    members = stats.room_members(client_nodes, rooms=2)
    assert members == {(0, "a"): 2, (1, "b"): 2}
    matrix = stats.expected_matrix(members, [(0, "a", 3), (1, "b", 0)])
    assert matrix == {"a": {"a": 6}}
    assert stats.matrix_total(matrix, local_only=True) == 6


def test_per_node_delivery_reports_what_each_nodes_members_received():
    members = Counter({(0, "node-1"): 1, (0, "node-2"): 1, (0, "node-3"): 1})
    expected = stats.expected_matrix(members, [(0, "node-1", 20)])
    received = {"node-1": {"node-1": 20}}
    per_node = stats.per_node_delivery(expected, received, members)
    assert per_node["node-1"] == {
        "members": 1,
        "expected": 20,
        "received": 20,
        "rate_pct": 100.0,
        "from": {"node-1": 20},
    }
    assert per_node["node-2"]["received"] == 0 and per_node["node-2"]["rate_pct"] == 0.0
    assert per_node["node-3"]["expected"] == 20


def test_merge_counts_adds_flat_and_nested_counts():
    assert stats.merge_counts([{"a": 1, "m": {"x": 2}}, {"a": 2, "b": 1, "m": {"x": 1, "y": 4}}]) == {
        "a": 3,
        "b": 1,
        "m": {"x": 3, "y": 4},
    }


def test_ramp_step_passes_needs_delivery_and_p99():
    ok = {"delivery_rate_pct": 99.95, "latency_ms": {"p99": 80.0}}
    assert stats.ramp_step_passes(ok, min_delivery_pct=99.9, max_p99_ms=100)
    assert not stats.ramp_step_passes(
        {**ok, "delivery_rate_pct": 99.8}, min_delivery_pct=99.9, max_p99_ms=100
    )
    assert not stats.ramp_step_passes(
        {**ok, "latency_ms": {"p99": 100.0}}, min_delivery_pct=99.9, max_p99_ms=100
    )
    assert not stats.ramp_step_passes(
        {"delivery_rate_pct": None, "latency_ms": {}}, min_delivery_pct=99.9, max_p99_ms=100
    )


def test_log_histogram_keeps_every_sample():
    h = stats.log_histogram([0.01, 0.5, 5, 50, 500, 1e9])
    assert sum(h["counts"]) == 6
    assert len(h["edges_ms"]) == len(h["counts"]) + 1
    assert h["counts"][0] == 1 and h["counts"][-1] == 1


def _result(rate, received, expected, per_node):
    return {
        "delivery_rate_pct": rate,
        "received": received,
        "expected": expected,
        "sent": 20,
        "acks": 20,
        "latency_ms": {"p50": 2.5, "p95": 4.0, "p99": 5.25, "max": 9.0},
        "per_node": per_node,
        "deliveries_per_s": 30.0,
        "clients": 3,
        "connected": 3,
        "connect_ms": {"p50": 1.0, "p99": 2.0, "all": 10.0},
        "node_cpu_us_per_delivery": 150.0,
        "node_stats": {"node-1": {"cpu_s": 0.1, "peak_rss_mb": 90.0}},
        "loadgen": {"cpu_pct": 3.0, "loop_delay_p99_ms": 1.5},
        "errors": {"duplicate": 0, "connect_timeout": 2},
    }


def test_table_compares_the_modes_row_by_row():
    def node(got):
        return {
            "members": 1,
            "expected": 20,
            "received": got,
            "rate_pct": 100.0 * got / 20,
            "from": {},
        }

    table = stats.render_table(
        {
            "memory": _result(33.333, 20, 60, {"node-1": node(20), "node-2": node(0), "node-3": node(0)}),
            "redis": _result(100.0, 60, 60, {"node-1": node(20), "node-2": node(20), "node-3": node(20)}),
        }
    )
    lines = table.splitlines()
    assert lines[0] == "| measure | in-memory layer | Redis Pub/Sub |"
    assert "| delivery rate | 33.3% (20 of 60) | 100.0% (60 of 60) |" in lines
    assert "| latency p50 / p95 / p99 / max (ms) | 2.5 / 4.0 / 5.2 / 9.0 | 2.5 / 4.0 / 5.2 / 9.0 |" in lines
    assert "| node-2's members received | 0 of 20 (0.0%; 1 member) | 20 of 20 (100.0%; 1 member) |" in lines
    assert "| errors | connect_timeout 2 | connect_timeout 2 |" in lines


def test_named_scenarios_have_the_issues_shapes():
    assert (SCENARIOS["seed-3"].clients, SCENARIOS["seed-3"].rooms, SCENARIOS["seed-3"].nodes) == (3, 1, 3)
    s = SCENARIOS["seed-1000"]
    assert (s.clients, s.rooms, s.senders, s.rate) == (1000, 1, 1, 5.0)
    s = SCENARIOS["seed-50rooms"]
    assert (s.clients, s.rooms, s.senders) == (1000, 50, 50)
    assert SCENARIOS["ramp"].is_ramp and SCENARIOS["ramp"].rooms == 50


def test_only_loopback_targets_are_accepted():
    for url in ("ws://127.0.0.1:8001", "ws://localhost:8000", "ws://[::1]:8000", "redis://127.0.0.1:6379/0"):
        assert cluster.check_loopback(url) == url
    for url in ("ws://10.0.0.5:8000", "ws://example.com", "postgres://db.internal/x"):
        with pytest.raises(ValueError):
            cluster.check_loopback(url)


# --- a small real run ---------------------------------------------------------------------------


@pytest.fixture
def bench_database(django_db_setup, django_db_blocker):
    """The test database's URL; the data ``bench.prepare`` commits there is flushed after the
    test (``transaction=True``)."""
    with django_db_blocker.unblock():
        return database_url_for_tests()


@pytest.mark.multinode
@pytest.mark.django_db(transaction=True)
def test_small_real_run_counts_every_delivery_in_both_modes(bench_database, tmp_path):
    """3 nodes, 30 clients in one room (10 per node), 3 senders (one per node) at 5 msg/s for
    2 s: with Redis all 30 members get all 30 messages (900); with the in-memory layer each
    message reaches only the 10 members on its sender's node (300)."""
    scn = Scenario(
        name="test",
        description="small real run",
        nodes=3,
        clients=30,
        rooms=1,
        senders=3,
        rate=5.0,
        duration=2.0,
    )
    data = prepare(
        database_url=bench_database, users=30, rooms=1, product_dir=cluster.REPO_DIR, migrate=False
    )
    assert len(set(data["tokens"])) == 30 and data["rooms"] == ["r0"]
    results = {}
    for mode in ("redis", "memory"):
        run = runner.run_mode(
            scn,
            mode,
            tokens=data["tokens"],
            rooms=data["rooms"],
            database_url=bench_database,
            redis_url=os.environ["REDIS_URL"],
            log_dir=tmp_path,
            progress=False,
            quiet_s=1.0,
            drain_s=8.0,
            log=lambda m: None,
        )
        results[mode] = r = run["steps"][0]
        assert r["connected"] == 30 and r["sent"] == 30 and r["acks"] == 30, r["errors"]
        assert r["expected"] == 900 and r["expected_local"] == 300
        assert r["errors"] == {}, r["error_samples"]
        assert r["latency_ms"]["count"] == r["received"]
        assert set(r["node_stats"]) == {"node-1", "node-2", "node-3"}
        assert all(s["cpu_s"] is not None and s["peak_rss_mb"] > 0 for s in r["node_stats"].values())
        assert r["loadgen"]["procs"] == 1 and r["loadgen"]["loop_delay_p99_ms"] is not None
        for n in run["nodes"]:  # every node was stopped
            assert (
                not psutil.pid_exists(n["pid"]) or psutil.Process(n["pid"]).status() == psutil.STATUS_ZOMBIE
            )
    redis, memory = results["redis"], results["memory"]
    assert redis["received"] == 900 and redis["delivery_rate_pct"] == 100.0
    for row in redis["per_node"].values():
        assert row == {
            "members": 10,
            "expected": 300,
            "received": 300,
            "rate_pct": 100.0,
            "from": {"node-1": 100, "node-2": 100, "node-3": 100},
        }
    assert memory["received"] == 300 and memory["delivery_rate_pct"] == pytest.approx(33.333, abs=0.001)
    for node, row in memory["per_node"].items():
        assert row["received"] == 100 and row["from"] == {node: 100}
    table = stats.render_table(results)
    assert "| delivery rate | 100.0% (900 of 900) | 33.3% (300 of 900) |" in table


@pytest.mark.multinode
@pytest.mark.django_db(transaction=True)
def test_ctrl_c_stops_every_process_the_tool_started(bench_database, tmp_path):
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "bench",
            "seed-3",
            "--modes",
            "redis",
            "--duration",
            "60",
            "--no-chart",
            "--database-url",
            bench_database,
            "--redis-url",
            os.environ["REDIS_URL"],
            "--out",
            str(tmp_path),
        ],
        cwd=cluster.REPO_DIR,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    lines = []
    reader = threading.Thread(target=lambda: lines.extend(proc.stderr), daemon=True)
    reader.start()
    try:
        deadline = time.monotonic() + 60
        while not any("connected in" in line for line in lines) and time.monotonic() < deadline:
            assert proc.poll() is None, "".join(lines)
            time.sleep(0.1)
        text = "".join(lines)
        pids = [int(p) for p in re.findall(r"node-\d pid (\d+)", text)]
        pids += [int(p) for p in re.findall(r"\d+", re.search(r"pids \[([\d, ]+)\]", text).group(1))]
        assert len(pids) == 4, text
        assert all(psutil.pid_exists(p) for p in pids)
        time.sleep(1.0)  # sending now
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=30) == 130
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)
    reader.join(5)
    assert "interrupted" in "".join(lines)
    for pid in pids:
        gone = not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
        assert gone, f"process {pid} survived Ctrl-C"


# --- history over many stored messages (bench/history.py) -----------------------------------------


def test_the_history_bench_loads_a_tiny_shape_with_copy_and_times_pages_and_resumes():
    """``python -m bench history`` on 3,000 messages: its own database, the table's sizes after
    the load, then the three reads with percentiles and counts; run again, it reuses the data."""
    import uuid

    base = database_url_for_tests().rsplit("/", 1)[0]
    name = f"chatsite_history_bench_test_{uuid.uuid4().hex[:8]}"
    env = {**os.environ, "PYTHONPATH": os.getcwd()}
    cmd = [sys.executable, "-m", "bench", "history", "--database-url", f"{base}/{name}"]
    cmd += ["--messages", "3000", "--rooms", "12", "--user-rooms", "9", "--body-pool", "300"]
    cmd += ["--samples", "3", "--limit", "20", "--sends", "5"]
    try:
        first = subprocess.run(cmd, capture_output=True, text=True, timeout=240, env=env)
        assert first.returncode == 0, first.stderr[-3000:]
        assert "loading messages=3000 rooms=12" in first.stderr
        assert re.search(r"message_room_seq_unique: \d+ MB", first.stderr)
        assert re.search(r"message_body_grams_idx: \d+ MB", first.stderr)
        for read in ("history page, newest", "before_seq at a random depth", "resume of 1000", "send (5 x"):
            assert re.search(
                rf"\| [^|]*{re.escape(read)}[^|]* \| [35] \| [\d.]+ \| [\d.]+ \| [\d.]+ \|", first.stdout
            )
        again = subprocess.run(cmd, capture_output=True, text=True, timeout=240, env=env)
        assert again.returncode == 0 and "reusing the loaded data" in again.stderr
        import psycopg

        with psycopg.connect(f"{base}/{name}") as conn:
            # Gapless seq per room, last_seq stored, every body rendered (the product's shape).
            assert conn.execute(
                "SELECT count(*), count(DISTINCT room_id), bool_and(body_html <> '') FROM rooms_message"
            ).fetchone() == (3000 + 2 * 5, 12, True)  # two runs sent 5 each
            assert conn.execute(
                "SELECT count(*) FROM rooms_room r WHERE kind = 'room' AND slug LIKE 'sb-%' AND last_seq <> "
                "(SELECT count(*) FROM rooms_message m WHERE m.room_id = r.id AND m.seq <= r.last_seq)"
            ).fetchone() == (0,)
    finally:
        import psycopg

        with psycopg.connect(f"{base}/postgres", autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}"')


def test_the_history_bench_refuses_a_test_database_and_a_full_disk():
    env = {**os.environ, "PYTHONPATH": os.getcwd()}
    base = database_url_for_tests().rsplit("/", 1)[0]
    refused = subprocess.run(
        [sys.executable, "-m", "bench", "history", "--database-url", f"{base}/test_x"],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )
    assert refused.returncode != 0 and "its own database" in refused.stderr
    from bench.history import check_disk

    with pytest.raises(SystemExit, match=r"GB free on /work \(df -h /work\); the load needs at least"):
        check_disk(10**9)


# --- what an idle machine adds to a send (bench/idle_cost.py) ------------------------------------


def test_the_idle_cost_bench_times_select_1_and_stored_sends_after_each_pause():
    """``python -m bench.idle_cost`` on its own database: a row per pause with both timings, and
    every timed send really stored (20 to warm up, then rounds x pauses x n)."""
    import uuid

    import psycopg

    base = database_url_for_tests().rsplit("/", 1)[0]
    name = f"chatsite_idle_bench_test_{uuid.uuid4().hex[:8]}"
    env = {**os.environ, "PYTHONPATH": os.getcwd()}
    cmd = [sys.executable, "-m", "bench.idle_cost", "--database-url", f"{base}/{name}"]
    cmd += ["--gaps", "0,0.01", "--rounds", "1", "--n", "3"]
    try:
        run = subprocess.run(cmd, capture_output=True, text=True, timeout=240, env=env)
        assert run.returncode == 0, run.stderr[-3000:]
        for gap in ("0", "0.01"):
            assert re.search(
                rf"^\| {re.escape(gap)} \| [\d.]+ / [\d.]+ \| [\d.]+ / [\d.]+ \|$", run.stdout, re.M
            )
        with psycopg.connect(f"{base}/{name}") as conn:
            assert conn.execute(
                "SELECT count(*), max(m.seq) FROM rooms_message m JOIN rooms_room r ON r.id = m.room_id "
                "WHERE r.slug = 'idle'"
            ).fetchone() == (20 + 1 * 2 * 3, 20 + 1 * 2 * 3)
    finally:
        with psycopg.connect(f"{base}/postgres", autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
