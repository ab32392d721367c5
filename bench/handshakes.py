"""``python -m bench.handshakes``: how many WebSocket handshakes one node completes per second, and
what each costs it in CPU (issue 16, item 3: a stopped node's members all reconnect at once).

Shape: one node (``chatsite.serve``, the product's command); ``--clients`` (2,000) clients, each a
user with an API token in one of ``--rooms`` (20) rooms, open their room socket with
``--concurrency`` (200) handshakes in flight, as resuming members do (``?after_seq=`` the room's
last seq minus ``--replay`` (5), so each handshake also replays a few messages). A client counts
when its ``resumed`` (or, without ``--replay``, its ``hello``) arrives. Then every socket is closed,
and the whole wave runs ``--waves`` (3) times on the same node (the first wave also fills the
node's per-node caches: token, room id).

Prints per wave: handshakes per second, p50 / p99 of one handshake (seconds, from the TCP connect
to ``resumed``), the node's CPU time per handshake (ms, psutil user + system over the wave) and
failures by kind. Bounded: every handshake by ``--connect-timeout`` (10 s), each wave by 300 s.

    python -m bench.handshakes --clients 2000 --concurrency 200 --waves 3
"""

import argparse
import asyncio
import json
import os
import secrets
import signal
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

from . import cluster, stats
from .cli import DEFAULT_REDIS_URL, OUT_DIR, log, prepare

DEFAULT_DATABASE_URL = "postgres://postgres@127.0.0.1:5432/chatsite_bench_handshakes"


async def _seed(url: str, tokens: list[str], slugs: list[str], per_room: int) -> None:
    """Send ``per_room`` messages in each room (from its first member) so a resume replays some."""
    import websockets

    for r, slug in enumerate(slugs):
        async with websockets.connect(
            f"{url}/ws/rooms/{slug}/", additional_headers={"Authorization": f"Token {tokens[r]}"}
        ) as ws:
            await ws.recv()  # hello
            for i in range(per_room):
                await ws.send(f'{{"type": "message.send", "body": "seed {i}", "client_msg_id": "s{r}-{i}"}}')
            acked = 0
            while acked < per_room:
                if json.loads(await asyncio.wait_for(ws.recv(), 10)).get("type") == "ack":
                    acked += 1


async def _wave(args, url: str, tokens: list[str], slugs: list[str], node: cluster.Node) -> dict:
    import websockets

    sem = asyncio.Semaphore(args.concurrency)
    times: list[float] = []
    failures: Counter = Counter()
    sockets = []
    query = f"?after_seq={args.seed - args.replay}" if args.replay else ""
    want = '"resumed"' if args.replay else '"hello"'

    async def one(i: int) -> None:
        async with sem:
            t0 = time.monotonic()
            try:
                ws = await websockets.connect(
                    f"{url}/ws/rooms/{slugs[i % len(slugs)]}/{query}",
                    additional_headers={"Authorization": f"Token {tokens[i]}"},
                    open_timeout=args.connect_timeout,
                    max_queue=None,
                )
            except Exception as exc:
                failures[type(exc).__name__] += 1
                return
            try:
                async with asyncio.timeout(args.connect_timeout):
                    while want not in await ws.recv():
                        pass
            except Exception as exc:
                failures[f"recv_{type(exc).__name__}"] += 1
                await ws.close()
                return
            times.append(time.monotonic() - t0)
            sockets.append(ws)

    cpu0, t0 = node.cpu_seconds(), time.monotonic()
    async with asyncio.timeout(300):
        await asyncio.gather(*(one(i) for i in range(args.clients)))
    wall, cpu = time.monotonic() - t0, node.cpu_seconds() - cpu0
    async with asyncio.timeout(60):
        await asyncio.gather(*(ws.close() for ws in sockets), return_exceptions=True)
    await asyncio.sleep(2)  # let the node finish its clean-ups before the next wave
    times.sort()
    n = len(times)
    return {
        "done": n,
        "per_s": round(n / wall, 1),
        "p50_s": round(stats.percentile(times, 50), 3) if n else None,
        "p99_s": round(stats.percentile(times, 99), 3) if n else None,
        "cpu_ms_each": round(1000 * cpu / max(n, 1), 2),
        "failures": dict(failures),
    }


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.handshakes", description=__doc__.split("\n\n")[0])
    p.add_argument("--clients", type=int, default=2000)
    p.add_argument("--rooms", type=int, default=20)
    p.add_argument("--concurrency", type=int, default=200)
    p.add_argument("--waves", type=int, default=3)
    p.add_argument("--seed", type=int, default=10, help="messages sent in each room before the waves")
    p.add_argument("--replay", type=int, default=5, help="messages each handshake replays (0: no after_seq)")
    p.add_argument("--connect-timeout", type=float, default=10.0)
    p.add_argument(
        "--database-url", default=os.environ.get("BENCH_HANDSHAKES_DATABASE_URL", DEFAULT_DATABASE_URL)
    )
    p.add_argument("--redis-url", default=os.environ.get("BENCH_REDIS_URL", DEFAULT_REDIS_URL))
    p.add_argument("--product-dir", type=Path, default=cluster.REPO_DIR)
    p.add_argument("--out", type=Path, default=OUT_DIR)
    args = p.parse_args(sys.argv[1:] if argv is None else argv)
    if args.replay > args.seed:
        p.error("--replay must not exceed --seed")
    for u in (args.database_url, args.redis_url):
        cluster.check_loopback(u)
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    data = prepare(
        database_url=args.database_url,
        users=args.clients,
        rooms=args.rooms,
        product_dir=args.product_dir,
        memberships="all",
    )
    tokens, slugs = data["tokens"], data["rooms"]
    args.out.mkdir(parents=True, exist_ok=True)
    env = cluster.node_env(
        database_url=args.database_url,
        redis_url=args.redis_url,
        prefix=f"chatsite-bench-hs-{os.getpid()}-{secrets.token_hex(4)}",
        extra={"WS_MAX_SOCKETS_PER_USER": "100"},
    )
    nodes = cluster.start_nodes(
        1,
        env=env,
        log_dir=Path(tempfile.mkdtemp(prefix="bench-handshakes-", dir=args.out)),
        product_dir=args.product_dir,
    )
    try:
        cluster.wait_healthy(nodes)
        node = nodes[0]
        log(
            f"bench handshakes: {args.clients} clients, {args.rooms} rooms, {args.concurrency} in flight, node pid {node.pid}"
        )
        asyncio.run(_seed(node.url, tokens, slugs, args.seed))
        print("| wave | done | per s | p50 s | p99 s | node CPU ms each | failures |")
        print("|---|---|---|---|---|---|---|")
        for w in range(1, args.waves + 1):
            r = asyncio.run(_wave(args, node.url, tokens, slugs, node))
            print(
                f"| {w} | {r['done']} | {r['per_s']} | {r['p50_s']} | {r['p99_s']} | {r['cpu_ms_each']} | {r['failures'] or '-'} |",
                flush=True,
            )
    except KeyboardInterrupt:
        return 130
    finally:
        cluster.stop_nodes(nodes)
    return 0


if __name__ == "__main__":
    sys.exit(main())
