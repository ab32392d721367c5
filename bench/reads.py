"""The cost of one read report (issue 12), alone: no message is sent, so every figure is the
read path's (the ``read`` frame, its database write, the ``read.updated`` fan-out).

3 nodes, a PostgreSQL database and a redis-server of the run's own (``bench.sidebar``'s), the
users of ``bench.sidebar`` (``--clients`` in ``--rooms`` rooms). Every member's read marker is
set back to 0 first and each room is filled to at least ``--messages`` messages, so every report
moves a marker. Each client holds one room socket, on node ``i % 3``, and a user socket (the
sidebar) on the next node, as a page does; it reports ``seq`` 1, 2, 3 ... at ``--rate`` reports
a second for ``--duration`` seconds (staggered over one interval). Measured over the run: µs of
node CPU per report (idle subtracted: the same sockets idle for as long beforehand), PostgreSQL
transactions and rows written per report, Redis commands (and PUBLISHes) per report, the
``read.updated`` frames received per report, and the time from a report to the reporting
socket's ``read.updated`` for it (p50 / p99, ms: includes the node's tick, ``READ_TICK``, where
there is one).

    .venv/bin/python -m bench.reads [--rate 1] [--duration 10] [--clients 1000 --rooms 50]
        [--product-dir ../other-checkout] --database-url postgres://.../chatsite_bench_<name>

Prints a Markdown table and writes the JSON to bench/out/.
"""

import argparse
import asyncio
import datetime as dt
import json
import os
import secrets
import statistics
import sys
import tempfile
import time
from pathlib import Path

from . import cluster
from .cli import OUT_DIR, machine
from .sidebar import DEFAULT_DATABASE_URL, PrivateRedis, pg_counters, prepare_with_memberships


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def reset_markers(database_url: str, rooms: list[str], messages: int) -> None:
    """Every membership's marker back to 0; each room's ``last_seq`` at least ``messages``
    (messages added by a plain INSERT of the bench's own user, as ``bench.prepare`` does not)."""
    import environ
    import psycopg

    cfg = environ.Env.db_url_config(database_url)
    with psycopg.connect(
        host=cfg.get("HOST") or "127.0.0.1",
        port=cfg.get("PORT") or 5432,
        user=cfg.get("USER") or None,
        dbname=cfg["NAME"],
        autocommit=True,
    ) as conn:
        conn.execute("UPDATE rooms_membership SET last_read_seq = 0 WHERE last_read_seq <> 0")
        for slug in rooms:
            room_id, last_seq, author = conn.execute(
                "SELECT r.id, r.last_seq, r.created_by_id FROM rooms_room r WHERE r.slug = %s", [slug]
            ).fetchone()
            if last_seq >= messages:
                continue
            conn.execute(
                "INSERT INTO rooms_message (room_id, seq, author_id, body, body_html, client_msg_id, "
                "server_id, created_at) SELECT %s, s, %s, 'filler', '<p>filler</p>', "
                "'fill-' || s, 'bench', now() FROM generate_series(%s, %s) s",
                [room_id, author, last_seq + 1, messages],
            )
            conn.execute("UPDATE rooms_room SET last_seq = %s WHERE id = %s", [messages, room_id])


async def run(args, nodes, data, redis: PrivateRedis) -> dict:
    from websockets.asyncio.client import connect

    tokens, rooms = data["tokens"], data["rooms"]
    clients = []
    sem = asyncio.Semaphore(50)
    sent_at: dict[tuple[int, int], float] = {}
    latencies: list[float] = []
    counts = {"read_updated": 0, "errors": 0, "reported": 0}

    async def reader(ws, index: int) -> None:
        try:
            async for raw in ws:
                frame = json.loads(raw)
                if frame.get("type") == "read.updated":
                    counts["read_updated"] += 1
                    at = sent_at.pop((index, frame["last_read_seq"]), None)
                    if at is not None:
                        latencies.append(time.monotonic() - at)
                elif frame.get("type") == "error":
                    counts["errors"] += 1
        except Exception:
            pass

    async def one(i: int):
        headers = {"Authorization": f"Token {tokens[i]}"}
        async with sem:
            room_ws = await connect(
                f"{nodes[i % len(nodes)].url}/ws/rooms/{rooms[i % len(rooms)]}/",
                additional_headers=headers,
                compression=None,
                ping_interval=None,
            )
            assert json.loads(await room_ws.recv())["type"] == "hello"
            user_ws = await connect(
                f"{nodes[(i + 1) % len(nodes)].url}/ws/user/",
                additional_headers=headers,
                compression=None,
                ping_interval=None,
                max_size=2**22,
            )
            assert json.loads(await user_ws.recv())["type"] == "sidebar"
        clients.append((i, room_ws, user_ws, asyncio.ensure_future(reader(room_ws, i))))

    await asyncio.gather(*(one(i) for i in range(args.clients)))
    await asyncio.sleep(2)
    idle_cpu0 = sum(n.cpu_seconds() or 0 for n in nodes)
    idle_pg0, idle_r0, t0 = pg_counters(args.database_url), redis.commands(), time.monotonic()
    await asyncio.sleep(args.duration)
    idle_s = time.monotonic() - t0
    idle_pg1, idle_r1 = pg_counters(args.database_url), redis.commands()
    idle = {
        "cpu": (sum(n.cpu_seconds() or 0 for n in nodes) - idle_cpu0) / idle_s,
        "tx": (idle_pg1["transactions"] - idle_pg0["transactions"]) / idle_s,
        "rows": (idle_pg1["rows_written"] - idle_pg0["rows_written"]) / idle_s,
        "redis": (sum(idle_r1.values()) - sum(idle_r0.values())) / idle_s,
    }
    cpu0 = sum(n.cpu_seconds() or 0 for n in nodes)
    pg0, r0, started = pg_counters(args.database_url), redis.commands(), time.monotonic()
    count = int(args.rate * args.duration)

    async def reporter(i: int, room_ws) -> None:
        start = time.monotonic() + (i % 100) / 100 / args.rate
        for k in range(count):
            delay = start + k / args.rate - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            sent_at[(i, k + 1)] = time.monotonic()
            counts["reported"] += 1
            await room_ws.send(json.dumps({"type": "read", "seq": k + 1}))

    await asyncio.gather(*(reporter(i, room_ws) for i, room_ws, _, _ in clients))
    deadline = time.monotonic() + 5
    while sent_at and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
    await asyncio.sleep(0.5)
    measured_s = time.monotonic() - started
    cpu = sum(n.cpu_seconds() or 0 for n in nodes) - cpu0
    pg1, r1 = pg_counters(args.database_url), redis.commands()
    for _, room_ws, user_ws, task in clients:
        task.cancel()
        for ws in (room_ws, user_ws):
            try:
                await ws.close()
            except Exception:
                pass
    reports = counts["reported"]
    by_cmd = {k: r1.get(k, 0) - r0.get(k, 0) for k in r1}
    lat = sorted(latencies)

    def pct(p):
        return round(lat[min(len(lat) - 1, int(p / 100 * len(lat)))] * 1000, 1) if lat else None

    return {
        "reports": reports,
        "reports_per_s": round(reports / args.duration),
        "answered": len(latencies),
        "report_to_read_updated_p50_ms": pct(50),
        "report_to_read_updated_p99_ms": pct(99),
        "mean_ms": round(statistics.mean(lat) * 1000, 1) if lat else None,
        "node_cpu_us_per_report": round((cpu - idle["cpu"] * measured_s) / reports * 1e6),
        "node_cpu_us_per_report_raw": round(cpu / reports * 1e6),
        "db_transactions_per_report": round(
            (pg1["transactions"] - pg0["transactions"] - idle["tx"] * measured_s) / reports, 3
        ),
        "db_rows_written_per_report": round(
            (pg1["rows_written"] - pg0["rows_written"] - idle["rows"] * measured_s) / reports, 3
        ),
        "redis_commands_per_report": round((sum(by_cmd.values()) - idle["redis"] * measured_s) / reports, 3),
        "publish_per_report": round(by_cmd.get("publish", 0) / reports, 3),
        "read_updated_frames_on_room_sockets_per_report": round(counts["read_updated"] / reports, 3),
        "errors": counts["errors"],
        "load_avg": [round(x, 2) for x in os.getloadavg()],
    }


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.reads", description=__doc__.splitlines()[0])
    p.add_argument("--rate", type=float, default=1.0, help="read reports per second per client")
    p.add_argument("--duration", type=float, default=10.0)
    p.add_argument("--clients", type=int, default=1000)
    p.add_argument("--rooms", type=int, default=50)
    p.add_argument("--rooms-each", type=int, default=10)
    p.add_argument("--nodes", type=int, default=3)
    p.add_argument("--product-dir", type=Path, default=None)
    p.add_argument(
        "--database-url", default=os.environ.get("BENCH_SIDEBAR_DATABASE_URL", DEFAULT_DATABASE_URL)
    )
    p.add_argument("--out", type=Path, default=OUT_DIR)
    args = p.parse_args(argv)
    folder = Path(tempfile.mkdtemp(prefix="bench-reads-"))
    redis = PrivateRedis(folder)
    nodes = []
    try:
        data = prepare_with_memberships(args)
        reset_markers(args.database_url, data["rooms"], int(args.rate * args.duration) + 10)
        env = cluster.node_env(
            database_url=args.database_url, redis_url=redis.url, prefix=f"bench-{secrets.token_hex(3)}"
        )
        nodes = cluster.start_nodes(
            args.nodes, env=env, log_dir=folder / "logs", product_dir=args.product_dir or cluster.REPO_DIR
        )
        cluster.wait_healthy(nodes)
        result = asyncio.run(run(args, nodes, data, redis))
    finally:
        cluster.stop_nodes(nodes)
        redis.stop()
    result["product_dir"] = str(args.product_dir or cluster.REPO_DIR)
    print("| measure | value |\n|---|---|")
    for k, v in result.items():
        print(f"| {k} | {v} |")
    args.out.mkdir(parents=True, exist_ok=True)
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    path = args.out / f"reads-{stamp}.json"
    path.write_text(
        json.dumps({"args": {k: str(v) for k, v in vars(args).items()}, "machine": machine(), **result})
    )
    log(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
