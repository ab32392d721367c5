"""The cost of the live sidebar and of read state (issue 12): the 50-rooms-of-20 shape, twice in
one sitting on the same nodes, database and Redis:

- ``rooms``: every client holds one room socket (the shape of ``python -m bench ramp``);
- ``pages``: every client behaves like the page: its room socket, plus a user socket
  (``/ws/user/``, the sidebar) in the 10 rooms it is a member of, and a ``read`` report for the
  newest message it received, debounced as the page does (1 s after the newest message, 5 s at
  the latest after the first one not reported).

Each phase sends at each of ``--rates`` (messages per second per sender, one sender per room)
for ``--duration`` seconds and reports, per stored message: µs of node CPU (the sum of the
nodes' user + system time over the phase, divided by the messages), PostgreSQL transactions
and rows written (``pg_stat_database`` of the bench's own database: each autocommit statement is
one transaction), Redis commands (``INFO commandstats`` of a redis-server of its own, so no other
client is counted; background work such as heartbeats included), and the delivery figures.

The clients run in ``--lg-procs`` (2) load-generator processes (spawn, uvloop; client ``i`` in
process ``i % N``, as ``bench.loadgen``): in one process the page clients' read reports, all
sent in a few moments, held its loop 170-190 ms behind at 8 msg/s (bench/RESULTS.md, "The
page-like shape's latency"), and the generator's own lag was measured as delivery latency.

    .venv/bin/python -m bench.sidebar [--rates 1,2,4] [--duration 8] [--clients 1000 --rooms 50
        --rooms-each 10 --nodes 3] [--lg-procs 2] [--database-url postgres://postgres@127.0.0.1:5432/chatsite_bench_sidebar]

Prints a Markdown table (bench/RESULTS.md, "Sidebar") and writes the JSON to bench/out/.
"""

import argparse
import asyncio
import datetime as dt
import json
import os
import random
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

from . import cluster
from .cli import OUT_DIR, machine

DEFAULT_DATABASE_URL = "postgres://postgres@127.0.0.1:5432/chatsite_bench_sidebar"
READ_DEBOUNCE = 1.0  # seconds after the last new message, as static/rooms/room/reads.js ...
READ_MAX_WAIT = 5.0  # ... and at the latest 0.8-1.2 times this long after the first one
REPORTER_EVERY = 0.05  # seconds between two looks for due read reports (the page's timers, to 50 ms)


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


class PrivateRedis:
    """A redis-server of this run's own (free port, no persistence), so its command counts are
    this run's only."""

    def __init__(self, folder: Path):
        self.port = cluster.free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.proc = subprocess.Popen(
            [
                "redis-server",
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(folder),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        import redis

        self.client = redis.Redis(port=self.port)
        deadline = time.monotonic() + 10
        while True:
            try:
                self.client.ping()
                break
            except redis.ConnectionError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    def commands(self) -> dict[str, int]:
        return {
            name.removeprefix("cmdstat_"): v["calls"] for name, v in self.client.info("commandstats").items()
        }

    def cpu_seconds(self) -> float:
        t = psutil.Process(self.proc.pid).cpu_times()
        return t.user + t.system

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)


def machine_busy_seconds() -> float:
    """CPU seconds every process of the machine has used (``/proc/stat``: all but idle and
    iowait): nodes, load generator, PostgreSQL, Redis and anything else running."""
    t = psutil.cpu_times()
    return sum(t) - t.idle - getattr(t, "iowait", 0.0)


def process_cpu_seconds(name: str) -> float:
    """CPU seconds used so far by the live processes called ``name`` (``postgres``: the
    server's backends, among them the nodes' pooled connections; a process that ended between
    two readings is missed)."""
    total = 0.0
    for proc in psutil.process_iter(["name", "cpu_times"]):
        if proc.info["name"] == name and proc.info["cpu_times"] is not None:
            total += proc.info["cpu_times"].user + proc.info["cpu_times"].system
    return total


def pg_counters(database_url: str) -> dict[str, int]:
    import environ
    import psycopg

    cfg = environ.Env.db_url_config(database_url)
    with psycopg.connect(
        host=cfg.get("HOST") or "127.0.0.1",
        port=cfg.get("PORT") or 5432,
        user=cfg.get("USER") or None,
        dbname="postgres",
        autocommit=True,
    ) as conn:
        conn.execute("SELECT pg_stat_clear_snapshot()")
        row = conn.execute(
            "SELECT xact_commit + xact_rollback, tup_inserted + tup_updated + tup_deleted FROM pg_stat_database "
            "WHERE datname = %s",
            [cfg["NAME"]],
        ).fetchone()
    return {"transactions": row[0], "rows_written": row[1]}


class Client:
    def __init__(self, index: int, url: str, user_url: str, room: str, token: str):
        self.index, self.url, self.user_url, self.room, self.token = index, url, user_url, room, token
        self.tab = secrets.token_hex(8)  # pages: the tab id of both sockets (static/rooms/room/tab.js)
        self.room_ws = self.user_ws = None
        self.newest = 0
        self.reported = 0
        self.tasks = []
        self.first_at = 0.0
        self.last_at = 0.0
        self.max_wait = READ_MAX_WAIT


class Run:
    """One load-generator process's clients (``Shard``): ``specs`` are ``(index, room node URL,
    user-socket node URL, room slug, API token)``, ``index`` global over all processes."""

    def __init__(self, specs, *, pages: bool, tag: str, reads: bool = True):
        self.pages, self.tag, self.reads = pages, tag, reads
        self.clients = [Client(*spec) for spec in specs]
        self.latencies: list[float] = []
        self.deliveries = 0
        self.activity_frames = 0
        self.activity_unread = 0
        self.reads_sent = 0
        self.read_updated_room = self.read_updated_user = 0
        self.sidebar_frames = 0
        self.errors: dict[str, int] = {}
        self.sending = False
        self.waiting: list = []  # clients with a read report pending (saw_message)
        self.reporter_task = None

    def reset(self, *, tag: str) -> None:
        """A new step on the same sockets: its own tag (deliveries of earlier steps are not
        counted) and fresh counters."""
        self.tag = tag
        self.latencies, self.deliveries, self.reads_sent = [], 0, 0
        self.activity_frames = self.activity_unread = 0
        self.read_updated_room = self.read_updated_user = self.sidebar_frames = 0
        self.errors = {}

    def error(self, kind: str) -> None:
        self.errors[kind] = self.errors.get(kind, 0) + 1

    async def connect(self) -> None:
        from websockets.asyncio.client import connect

        sem = asyncio.Semaphore(50)

        async def one(c: Client):
            headers = {"Authorization": f"Token {c.token}"}
            async with sem:
                try:
                    c.room_ws = await connect(
                        f"{c.url}/ws/rooms/{c.room}/" + (f"?tab={c.tab}" if self.pages else ""),
                        additional_headers=headers,
                        compression=None,
                        ping_interval=None,
                        max_size=2**22,
                    )
                    assert json.loads(await c.room_ws.recv())["type"] == "hello"
                    c.tasks.append(asyncio.ensure_future(self.read_room(c)))
                    if self.pages:
                        c.user_ws = await connect(  # on another node than the room socket's
                            f"{c.user_url}/ws/user/?tab={c.tab}",  # the page's two sockets: one tab
                            additional_headers=headers,
                            compression=None,
                            ping_interval=None,
                            max_size=2**22,
                        )
                        assert json.loads(await c.user_ws.recv())["type"] == "sidebar"
                        c.tasks.append(asyncio.ensure_future(self.read_user(c)))
                except Exception as exc:
                    self.error(f"connect {type(exc).__name__}")

        await asyncio.gather(*(one(c) for c in self.clients))
        if self.pages and self.reads and self.reporter_task is None:
            self.reporter_task = asyncio.ensure_future(self.reporter())

    async def read_room(self, c: Client) -> None:
        try:
            async for raw in c.room_ws:
                frame = json.loads(raw)
                if frame.get("type") == "message":
                    m = frame["message"]
                    c.newest = max(c.newest, m["seq"])
                    self.saw_message(c)
                    try:
                        body = json.loads(m["body"])
                    except ValueError:
                        continue
                    if isinstance(body, dict) and body.get("b") == self.tag:
                        self.deliveries += 1
                        self.latencies.append(time.monotonic() - body["t"])
                elif frame.get("type") == "read.updated":
                    self.read_updated_room += 1
                elif frame.get("type") == "error":
                    self.error(f"error {frame.get('code')}")
        except Exception:
            pass

    async def read_user(self, c: Client) -> None:
        try:
            async for raw in c.user_ws:
                frame = json.loads(raw)
                if frame.get("type") == "room.activity":
                    self.activity_frames += 1
                    self.activity_unread += sum(e.get("unread_added", 0) for e in frame.get("rooms", ()))
                elif frame.get("type") == "read.updated":
                    self.read_updated_user += 1
                elif frame.get("type") == "sidebar":
                    self.sidebar_frames += 1
        except Exception:
            pass

    def saw_message(self, c: Client) -> None:
        """The page's read debounce: READ_DEBOUNCE after the newest message, READ_MAX_WAIT (times
        0.8-1.2, drawn each time) at the latest after the first one not yet reported. Due
        reports are sent by ``reporter`` (one loop for all clients, every REPORTER_EVERY s: a timer
        per client per message cost the generator's own loop as much as the nodes' work it
        measures)."""
        if not self.pages or not self.reads:
            return
        now = time.monotonic()
        c.last_at = now
        if not c.first_at:
            c.first_at = now
            c.max_wait = READ_MAX_WAIT * random.uniform(0.8, 1.2)
            self.waiting.append(c)

    async def reporter(self) -> None:
        """Sends the due read reports (``saw_message``), checking every REPORTER_EVERY s."""
        while True:
            await asyncio.sleep(REPORTER_EVERY)
            now = time.monotonic()
            still = []
            for c in self.waiting:
                if now - c.last_at >= READ_DEBOUNCE or now - c.first_at >= c.max_wait:
                    c.first_at = 0.0
                    self.report(c)
                else:
                    still.append(c)
            self.waiting = still

    def report(self, c: Client) -> None:
        if c.newest > c.reported:
            c.reported = c.newest
            self.reads_sent += 1
            c.tasks.append(
                asyncio.ensure_future(c.room_ws.send(json.dumps({"type": "read", "seq": c.newest})))
            )

    async def send(self, senders: int, rate: float, duration: float, start_at: float) -> int:
        """Client j (global index) for j < ``senders`` sends ``rate`` messages a second for
        ``duration`` seconds from ``start_at`` (``time.monotonic()``, one clock for every process
        of the machine), the senders spread evenly over a period. Returns the messages each
        sender sends."""
        count = int(rate * duration)

        async def sender(c: Client):
            start = start_at + (c.index % senders) / senders / rate
            for k in range(count):
                delay = start + k / rate - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
                body = json.dumps({"b": self.tag, "t": time.monotonic(), "k": k})
                await c.room_ws.send(
                    json.dumps(
                        {"type": "message.send", "body": body, "client_msg_id": f"{self.tag}-{c.index}-{k}"}
                    )
                )

        await asyncio.gather(
            *(sender(c) for c in self.clients if c.index < senders and c.room_ws is not None)
        )
        return count

    def counters(self) -> dict:
        return {
            "reads_sent": self.reads_sent,
            "activity_frames": self.activity_frames,
            "activity_unread": self.activity_unread,
            "read_updated_room": self.read_updated_room,
            "read_updated_user": self.read_updated_user,
            "sidebar_frames": self.sidebar_frames,
            "errors": dict(self.errors),
        }

    async def close(self) -> None:
        if self.reporter_task is not None:
            self.reporter_task.cancel()
        for c in self.clients:
            for t in c.tasks:
                t.cancel()
            for ws in (c.room_ws, c.user_ws):
                if ws is not None:
                    try:
                        await ws.close()
                    except Exception:
                        pass


class Shard:
    """One load-generator process (``shard_main``): a ``Run`` of its clients, driven by the parent
    (``Shards``) over a Pipe. Parent → shard, each answered once:

    - ``("connect",)`` → ``("connected", {"errors": {...}})``;
    - ``("step", tag, rate, duration, senders, start_at)``: send, then wait until this shard's
      room sockets received every message of the step (``count × its clients``), or nothing came
      for 1.5 s, or 10 s after the sending → ``("stepped", {"deliveries", "latencies" (s),
      "drained_at" (monotonic), "count"})``; its loop-delay probe runs on until ``counters``;
    - ``("counters",)`` → ``("counters", {reads_sent, activity_frames, ..., "errors",
      "loop_delays_ms": [...]})``;
    - ``("close",)`` → ``("closed",)``, then the process exits (also when the parent is gone)."""

    def __init__(self, conn, spec: dict):
        self.conn = conn
        self.run = Run(spec["clients"], pages=spec["pages"], tag="", reads=spec["reads"])
        self.delays: list[float] = []
        self.prober = None

    async def probe(self, interval: float = 0.01) -> None:
        """How late a 10 ms sleep wakes in this loop (ms): the generator's own lag."""
        while True:
            t = time.monotonic()
            await asyncio.sleep(interval)
            self.delays.append(max(0.0, (time.monotonic() - t - interval) * 1000.0))

    async def step(self, tag: str, rate: float, duration: float, senders: int, start_at: float) -> dict:
        run = self.run
        run.reset(tag=tag)
        self.delays = []
        self.prober = asyncio.ensure_future(self.probe())
        count = await run.send(senders, rate, duration, start_at)
        expected = count * len(run.clients)  # one sender per room: every client's room sends `count`
        deadline = time.monotonic() + 10
        last, quiet_since = -1, time.monotonic()
        while time.monotonic() < deadline and run.deliveries < expected:
            if run.deliveries != last:
                last, quiet_since = run.deliveries, time.monotonic()
            elif time.monotonic() - quiet_since > 1.5:
                break
            await asyncio.sleep(0.1)
        return {
            "deliveries": run.deliveries,
            "latencies": run.latencies,
            "drained_at": time.monotonic(),
            "count": count,
        }

    async def serve(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            try:
                cmd = await loop.run_in_executor(None, self.conn.recv)
            except (EOFError, OSError):  # the parent is gone: never outlive it
                cmd = ("close",)
            if cmd[0] == "connect":
                await self.run.connect()
                self.conn.send(("connected", {"errors": dict(self.run.errors)}))
            elif cmd[0] == "step":
                self.conn.send(("stepped", await self.step(*cmd[1:])))
            elif cmd[0] == "counters":
                if self.prober is not None:
                    self.prober.cancel()
                    self.prober = None
                self.conn.send(("counters", {**self.run.counters(), "loop_delays_ms": self.delays}))
            else:
                await self.run.close()
                try:
                    self.conn.send(("closed",))
                except OSError:
                    pass
                return


def shard_main(conn, spec: dict) -> None:
    """Entry point of a load-generator process (spawned): ignores SIGINT, the parent stops it."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:  # uvloop, as bench.loadgen's workers (both shapes alike)
        import uvloop
    except ImportError:
        asyncio.run(Shard(conn, spec).serve())
    else:
        uvloop.run(Shard(conn, spec).serve())


class Shards:
    """The parent's side of the load generator: ``procs`` processes (multiprocessing, spawn),
    client ``i`` in process ``i % procs`` (as ``bench.loadgen``), so that the generator's own
    loop (the read reports' bursts above all) is not what fails a step. Client ``i``'s room socket
    is on node ``i % nodes``, its user socket (pages) on node ``(i + 1) % nodes``."""

    def __init__(self, nodes, tokens, rooms, *, clients: int, pages: bool, reads: bool, procs: int):
        import multiprocessing

        self.pages, self.reads = pages, reads
        self.connect_errors: dict[str, int] = {}
        urls = [n.url for n in nodes]
        specs = [
            (i, urls[i % len(urls)], urls[(i + 1) % len(urls)], rooms[i % len(rooms)], tokens[i])
            for i in range(clients)
        ]
        procs = max(1, procs)
        ctx = multiprocessing.get_context("spawn")
        self.conns, self.procs = [], []
        for w in range(procs):
            parent, child = ctx.Pipe()
            spec = {"clients": [c for c in specs if c[0] % procs == w], "pages": pages, "reads": reads}
            proc = ctx.Process(target=shard_main, args=(child, spec), name=f"bench-sidebar-{w}", daemon=True)
            proc.start()
            child.close()
            self.conns.append(parent)
            self.procs.append(proc)
        self._ps = [psutil.Process(p.pid) for p in self.procs]

    async def call(self, *cmd) -> list:
        """Sends ``cmd`` to every process; their answers' payloads, in process order."""
        for conn in self.conns:
            conn.send(cmd)
        answers = await asyncio.gather(*(asyncio.to_thread(conn.recv) for conn in self.conns))
        return [a[1] if len(a) > 1 else None for a in answers]

    def cpu_seconds(self) -> float:
        total = 0.0
        for p in self._ps:
            try:
                t = p.cpu_times()
                total += t.user + t.system
            except psutil.Error:
                pass
        return total

    async def close(self) -> None:
        try:
            await asyncio.wait_for(self.call("close"), 15)
        except (TimeoutError, EOFError, OSError):
            pass
        for p in self.procs:
            p.join(5)
            if p.is_alive():
                p.kill()


async def connect_and_idle(
    nodes, data, args, redis: PrivateRedis, *, pages: bool
) -> tuple["Shards", dict, float]:
    """Connect every client of the shape (``args.lg_procs`` generator processes), let the
    connects settle, then measure the same sockets idle for as long as a step's sending takes:
    the background (heartbeats, presence, the access watch) per second, subtracted from each
    step's figures. Returns ``(shards, idle, connect_s)``."""
    shards = Shards(
        nodes,
        data["tokens"],
        data["rooms"],
        clients=args.clients,
        pages=pages,
        reads=not args.no_reads,
        procs=args.lg_procs,
    )
    t0 = time.monotonic()
    answers = await shards.call("connect")
    connect_s = time.monotonic() - t0
    for a in answers:
        for k, v in a["errors"].items():
            shards.connect_errors[k] = shards.connect_errors.get(k, 0) + v
    if shards.connect_errors:
        log(f"connect errors: {shards.connect_errors}")
    await asyncio.sleep(2)  # connects settle (presence, sidebars)
    idle_cpu0 = sum(n.cpu_seconds() or 0 for n in nodes)
    idle_pg0, idle_r0, idle_t0 = pg_counters(args.database_url), redis.commands(), time.monotonic()
    await asyncio.sleep(args.duration + READ_DEBOUNCE + 0.5)
    idle_s = time.monotonic() - idle_t0
    idle_pg1, idle_r1 = pg_counters(args.database_url), redis.commands()
    idle = {
        "cpu": (sum(n.cpu_seconds() or 0 for n in nodes) - idle_cpu0) / idle_s,
        "tx": (idle_pg1["transactions"] - idle_pg0["transactions"]) / idle_s,
        "rows": (idle_pg1["rows_written"] - idle_pg0["rows_written"]) / idle_s,
        "redis": (sum(idle_r1.values()) - sum(idle_r0.values())) / idle_s,
    }
    return shards, idle, connect_s


async def phase(nodes, data, args, redis: PrivateRedis, *, pages: bool, rate: float) -> dict:
    """One shape at one rate: connect, idle, one step, close."""
    shards, idle, connect_s = await connect_and_idle(nodes, data, args, redis, pages=pages)
    try:
        return await step(nodes, shards, args, redis, idle, rate=rate, connect_s=connect_s)
    finally:
        await shards.close()


RAMP_RATES = (2, 4, 6, 8, 10, 12, 15, 20, 25, 30)  # as ``python -m bench ramp`` (bench/scenarios.py)
RAMP_MIN_DELIVERED_PCT = 99.9  # the ramp's pass rule (bench/scenarios.py): this much delivered ...
RAMP_MAX_P99_MS = 100.0  # ... and p99 under this


async def ramp(nodes, data, args, redis: PrivateRedis, *, pages: bool) -> dict:
    """The ramp of ``python -m bench ramp`` on one shape: the same sockets (connected once) send
    at each of ``args.ramp_rates`` messages per second per sender for ``args.duration`` seconds,
    until a step fails the ramp's rule (>= 99.9 % delivered and p99 < 100 ms). Returns every
    step's figures and the sustained rate: the highest passing step and its deliveries/s."""
    shards, idle, connect_s = await connect_and_idle(nodes, data, args, redis, pages=pages)
    steps = []
    try:
        for rate in args.ramp_rates:
            result = await step(nodes, shards, args, redis, idle, rate=rate, connect_s=connect_s)
            result["passed"] = bool(
                result["delivered_pct"] is not None
                and result["delivered_pct"] >= RAMP_MIN_DELIVERED_PCT
                and result["p99_ms"] is not None
                and result["p99_ms"] < RAMP_MAX_P99_MS
            )
            log(
                f"  {result['shape']} @ {rate:g}/s: {result['delivered_pct']} %, p99 {result['p99_ms']} ms, "
                f"{result['deliveries_per_s']} deliveries/s, {'pass' if result['passed'] else 'FAIL'}"
            )
            steps.append(result)
            if not result["passed"]:
                break
            await asyncio.sleep(1.0)  # late frames of this step must not land in the next one
    finally:
        await shards.close()
    passed = [r for r in steps if r["passed"]]
    best = passed[-1] if passed else None
    return {
        "shape": "pages" if pages else "rooms",
        "steps": steps,
        "sustained_rate": best["rate"] if best else None,
        "sustained_deliveries_per_s": best["deliveries_per_s"] if best else 0,
        "load_avg": [round(x, 2) for x in os.getloadavg()],
    }


async def step(
    nodes, shards: "Shards", args, redis: PrivateRedis, idle: dict, *, rate: float, connect_s: float
) -> dict:
    """One send step on connected sockets (a fresh tag: deliveries of earlier steps are not
    counted): every sender at ``rate`` for ``args.duration`` s, the drain, the last read reports;
    the per-message figures (see the module's docstring)."""
    cpu0 = [n.cpu_seconds() or 0 for n in nodes]
    machine0 = machine_busy_seconds()
    pg_cpu0, redis_cpu0 = process_cpu_seconds("postgres"), redis.cpu_seconds()
    lg0 = shards.cpu_seconds()
    pg0, r0 = pg_counters(args.database_url), redis.commands()
    started = time.monotonic()
    answers = await shards.call(
        "step", secrets.token_hex(4), rate, args.duration, args.rooms, started + 0.2
    )  # one sender per room: clients 0 .. rooms-1
    stored = answers[0]["count"] * args.rooms
    expected = stored * (args.clients // args.rooms)
    deliveries = sum(a["deliveries"] for a in answers)
    window = max(a["drained_at"] for a in answers) - started
    await asyncio.sleep(READ_DEBOUNCE + 0.5)  # the last read reports and activity batches
    counters = await shards.call("counters")
    measured_s = time.monotonic() - started
    cpu = sum((n.cpu_seconds() or 0) - c for n, c in zip(nodes, cpu0))
    lg_cpu = shards.cpu_seconds() - lg0
    machine_cpu = machine_busy_seconds() - machine0
    pg_cpu = process_cpu_seconds("postgres") - pg_cpu0
    redis_cpu = redis.cpu_seconds() - redis_cpu0
    pg1, r1 = pg_counters(args.database_url), redis.commands()
    redis_by_cmd = {k: r1.get(k, 0) - r0.get(k, 0) for k in r1}
    lat = sorted(x for a in answers for x in a["latencies"])
    total = {
        k: sum(c[k] for c in counters)
        for k in (
            "reads_sent",
            "activity_frames",
            "activity_unread",
            "read_updated_room",
            "read_updated_user",
            "sidebar_frames",
        )
    }
    errors: dict[str, int] = {}
    for c in counters:
        for k, v in c["errors"].items():
            errors[k] = errors.get(k, 0) + v
    delays = [sorted(c["loop_delays_ms"]) for c in counters if c["loop_delays_ms"]]

    def pct(p):
        return round(lat[min(len(lat) - 1, int(p / 100 * len(lat)))] * 1000, 1) if lat else None

    return {
        "shape": "pages" if shards.pages else "rooms",
        "rate": rate,
        "reads": shards.reads,
        "stored": stored,
        "expected": expected,
        "delivered": deliveries,
        "delivered_pct": round(100 * deliveries / expected, 2) if expected else None,
        "deliveries_per_s": round(deliveries / window),
        "window_s": round(window, 2),
        "p50_ms": pct(50),
        "p99_ms": pct(99),
        "mean_ms": round(statistics.mean(lat) * 1000, 1) if lat else None,
        "node_cpu_us_per_message": round(cpu / stored * 1e6) if stored else None,
        "net_node_cpu_us_per_message": round((cpu - idle["cpu"] * measured_s) / stored * 1e6),
        "net_db_transactions_per_message": round(
            (pg1["transactions"] - pg0["transactions"] - idle["tx"] * measured_s) / stored, 2
        ),
        "net_db_rows_written_per_message": round(
            (pg1["rows_written"] - pg0["rows_written"] - idle["rows"] * measured_s) / stored, 2
        ),
        "net_redis_commands_per_message": round(
            (sum(redis_by_cmd.values()) - idle["redis"] * measured_s) / stored, 2
        ),
        "idle_per_s": {k: round(v, 3) for k, v in idle.items()},
        "machine_cpu_us_per_message": round(machine_cpu / stored * 1e6) if stored else None,
        "machine_busy_cores": round(machine_cpu / measured_s, 2),
        "postgres_cpu_us_per_message": round(pg_cpu / stored * 1e6) if stored else None,
        "redis_cpu_us_per_message": round(redis_cpu / stored * 1e6) if stored else None,
        "load_generator_cpu_us_per_message": round(lg_cpu / stored * 1e6) if stored else None,
        "node_cpu_us_per_delivery": round(cpu / deliveries * 1e6) if deliveries else None,
        "db_transactions_per_message": round((pg1["transactions"] - pg0["transactions"]) / stored, 2),
        "db_rows_written_per_message": round((pg1["rows_written"] - pg0["rows_written"]) / stored, 2),
        "redis_commands_per_message": round(sum(redis_by_cmd.values()) / stored, 2),
        "redis_by_command_per_message": {
            k: round(v / stored, 2) for k, v in sorted(redis_by_cmd.items(), key=lambda kv: -kv[1]) if v
        },
        "reads_sent": total["reads_sent"],
        "reads_per_message": round(total["reads_sent"] / stored, 2),
        "activity_frames": total["activity_frames"],
        "activity_unread": total["activity_unread"],
        "read_updated_frames_room": total["read_updated_room"],
        "read_updated_frames_user": total["read_updated_user"],
        "sidebar_snapshots": total["sidebar_frames"],
        "load_generator_cpu_s": round(lg_cpu, 2),
        "load_generator_procs": len(shards.procs),
        "load_generator_loop_delay_p99_ms": max(
            (round(d[int(0.99 * (len(d) - 1))], 1) for d in delays), default=None
        ),  # the worst process's p99
        "load_generator_loop_delay_max_ms": max((round(d[-1], 1) for d in delays), default=None),
        "connect_s": round(connect_s, 1),
        "errors": errors,
        "load_avg": [round(x, 2) for x in os.getloadavg()],
    }


def table(results: list[dict]) -> str:
    rows = [
        ("delivered", lambda r: f"{r['delivered_pct']} % ({r['delivered']:,} of {r['expected']:,})"),
        ("deliveries/s (room sockets)", lambda r: f"{r['deliveries_per_s']:,}"),
        ("latency p50 / p99 (ms)", lambda r: f"{r['p50_ms']} / {r['p99_ms']}"),
        ("node CPU per message (µs), idle subtracted", lambda r: f"{r['net_node_cpu_us_per_message']:,}"),
        ("node CPU per message (µs), raw", lambda r: f"{r['node_cpu_us_per_message']:,}"),
        ("node CPU per delivery (µs)", lambda r: f"{r['node_cpu_us_per_delivery']}"),
        (
            "machine CPU per message (µs, every process), busy cores",
            lambda r: f"{r.get('machine_cpu_us_per_message', 0):,}, {r.get('machine_busy_cores')}",
        ),
        (
            "CPU per message (µs): PostgreSQL / Redis / load generator",
            lambda r: (
                f"{r.get('postgres_cpu_us_per_message', 0):,} / {r.get('redis_cpu_us_per_message', 0):,} / "
                f"{r.get('load_generator_cpu_us_per_message', 0):,}"
            ),
        ),
        (
            "DB transactions per message, idle subtracted (raw)",
            lambda r: f"{r['net_db_transactions_per_message']} ({r['db_transactions_per_message']})",
        ),
        (
            "DB rows written per message, idle subtracted (raw)",
            lambda r: f"{r['net_db_rows_written_per_message']} ({r['db_rows_written_per_message']})",
        ),
        ("read reports per message", lambda r: f"{r['reads_per_message']}"),
        (
            "Redis commands per message, idle subtracted (raw)",
            lambda r: f"{r['net_redis_commands_per_message']} ({r['redis_commands_per_message']})",
        ),
        ("of which PUBLISH", lambda r: f"{r['redis_by_command_per_message'].get('publish', 0)}"),
        ("sidebar frames (room.activity)", lambda r: f"{r['activity_frames']:,}"),
        (
            "read.updated frames: room sockets / user sockets",
            lambda r: f"{r.get('read_updated_frames_room', 0):,} / {r.get('read_updated_frames_user', 0):,}",
        ),
        ("fresh sidebar snapshots during the step", lambda r: f"{r.get('sidebar_snapshots', 0):,}"),
        (
            "load generator: CPU s, loop delay p99 / max (ms)",
            lambda r: (
                f"{r['load_generator_cpu_s']}, {r.get('load_generator_loop_delay_p99_ms')} / "
                f"{r.get('load_generator_loop_delay_max_ms')}"
            ),
        ),
        ("load average", lambda r: " ".join(str(x) for x in r["load_avg"])),
        ("errors", lambda r: ", ".join(f"{k}: {v}" for k, v in r["errors"].items()) or "none"),
    ]
    head = (
        "| measure | "
        + " | ".join(
            f"{r['shape']} @ {r['rate']:g}/s" + ("" if r.get("reads", True) else " (no reads)")
            for r in results
        )
        + " |"
    )
    lines = [head, "|---|" + "---|" * len(results)]
    for name, fn in rows:
        lines.append(f"| {name} | " + " | ".join(fn(r) for r in results) + " |")
    return "\n".join(lines)


def ramp_table(results: list[dict]) -> str:
    """One column per ramp, in the order run: the sustained rate and deliveries/s, the drop
    against the mean of the ``rooms`` ramps, and the last passing step's per-message figures."""
    base = [r["sustained_deliveries_per_s"] for r in results if r["shape"] == "rooms"]
    base_mean = statistics.mean(base) if base else None

    def last_pass(r):
        passed = [s for s in r["steps"] if s["passed"]]
        return passed[-1] if passed else None

    def at_pass(fn):
        return lambda r: "" if last_pass(r) is None else fn(last_pass(r))

    rows = [
        ("sustained rate (msg/s per room)", lambda r: f"{r['sustained_rate'] or 0:g}"),
        ("sustained deliveries/s", lambda r: f"{r['sustained_deliveries_per_s']:,}"),
        (
            "drop against the rooms ramps' mean",
            lambda r: (
                "" if not base_mean else f"{100 * (1 - r['sustained_deliveries_per_s'] / base_mean):.1f} %"
            ),
        ),
        (
            "steps (rate: p99 ms)",
            lambda r: ", ".join(
                f"{s['rate']:g}: {s['p99_ms']}{'' if s['passed'] else ' FAIL'}" for s in r["steps"]
            ),
        ),
        ("at that step: p50 / p99 (ms)", at_pass(lambda s: f"{s['p50_ms']} / {s['p99_ms']}")),
        (
            "first failing step: load generator loop delay p99 / max (ms)",
            lambda r: next(
                (
                    f"{s['load_generator_loop_delay_p99_ms']} / {s['load_generator_loop_delay_max_ms']}"
                    for s in r["steps"]
                    if not s["passed"]
                ),
                "",
            ),
        ),
        (
            "node CPU per message (µs), idle subtracted",
            at_pass(lambda s: f"{s['net_node_cpu_us_per_message']:,}"),
        ),
        (
            "machine CPU per message (µs, every process), busy cores",
            at_pass(lambda s: f"{s.get('machine_cpu_us_per_message', 0):,}, {s.get('machine_busy_cores')}"),
        ),
        (
            "DB transactions per message, idle subtracted (raw)",
            at_pass(lambda s: f"{s['net_db_transactions_per_message']} ({s['db_transactions_per_message']})"),
        ),
        (
            "Redis commands per message, idle subtracted (raw)",
            at_pass(lambda s: f"{s['net_redis_commands_per_message']} ({s['redis_commands_per_message']})"),
        ),
        ("read reports per message", at_pass(lambda s: f"{s['reads_per_message']}")),
        ("load average at the end", lambda r: " ".join(str(x) for x in r["load_avg"])),
    ]
    head = "| measure | " + " | ".join(f"{r['shape']} ramp {i + 1}" for i, r in enumerate(results)) + " |"
    lines = [head, "|---|" + "---|" * len(results)]
    for name, fn in rows:
        lines.append(f"| {name} | " + " | ".join(fn(r) for r in results) + " |")
    return "\n".join(lines)


async def main_async(args) -> list[dict]:
    folder = Path(tempfile.mkdtemp(prefix="bench-sidebar-"))
    redis = PrivateRedis(folder)
    nodes = []
    try:
        log(f"preparing {args.clients} users in {args.rooms} rooms, {args.rooms_each} rooms each")
        data = prepare_with_memberships(args)
        env = cluster.node_env(
            database_url=args.database_url, redis_url=redis.url, prefix=f"bench-{secrets.token_hex(3)}"
        )
        nodes = cluster.start_nodes(
            args.nodes, env=env, log_dir=folder / "logs", product_dir=args.product_dir or cluster.REPO_DIR
        )
        cluster.wait_healthy(nodes)
        results = []
        if args.ramp:
            for shape in args.shapes.split(","):  # in the order given: rooms,pages,rooms,pages alternates
                log(f"ramp {shape}: {', '.join(f'{r:g}' for r in args.ramp_rates)} msg/s per sender")
                result = await ramp(nodes, data, args, redis, pages=shape == "pages")
                log(json.dumps({k: v for k, v in result.items() if k != "steps"}))
                results.append(result)
            return results
        for rate in args.rates:
            for pages in [
                shape == "pages" for shape in args.shapes.split(",")
            ]:  # alternating, in one sitting
                log(f"phase {'pages' if pages else 'rooms'} at {rate:g} msg/s per sender")
                result = await phase(nodes, data, args, redis, pages=pages, rate=rate)
                log(json.dumps(result))
                results.append(result)
        return results
    finally:
        cluster.stop_nodes(nodes)
        redis.stop()


def prepare_with_memberships(args) -> dict:
    env = {
        **os.environ,
        "DATABASE_URL": args.database_url,
        "REDIS_URL": "",
        "DEBUG": "0",
        "SECRET_KEY": secrets.token_urlsafe(50),
        "DJANGO_SETTINGS_MODULE": "chatsite.settings",
    }
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench.prepare",
            "--users",
            str(args.clients),
            "--rooms",
            str(args.rooms),
            "--rooms-each",
            str(args.rooms_each),
        ],
        cwd=cluster.REPO_DIR,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    if r.returncode != 0:
        raise RuntimeError(r.stderr[-3000:])
    return json.loads(r.stdout)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.sidebar", description=__doc__.splitlines()[0])
    p.add_argument("--rates", default="1,2,4", help="messages per second per sender, comma-separated")
    p.add_argument("--duration", type=float, default=8.0)
    p.add_argument("--clients", type=int, default=1000)
    p.add_argument("--rooms", type=int, default=50)
    p.add_argument("--rooms-each", type=int, default=10)
    p.add_argument("--nodes", type=int, default=3)
    p.add_argument("--no-reads", action="store_true", help="page-like clients send no read reports")
    p.add_argument(
        "--lg-procs", type=int, default=2, help="load-generator processes (client i in process i %% N)"
    )
    p.add_argument(
        "--shapes",
        default="rooms,pages",
        help="which shapes to run, in order, at each rate (with --ramp: one ramp each, in order)",
    )
    p.add_argument(
        "--ramp",
        action="store_true",
        help="ramp each shape as python -m bench ramp does (>= 99.9 %% delivered, p99 < 100 ms)",
    )
    p.add_argument("--ramp-rates", default=",".join(str(r) for r in RAMP_RATES))
    p.add_argument(
        "--product-dir", type=Path, default=None, help="run the nodes from this checkout (before/after)"
    )
    p.add_argument(
        "--database-url", default=os.environ.get("BENCH_SIDEBAR_DATABASE_URL", DEFAULT_DATABASE_URL)
    )
    p.add_argument("--out", type=Path, default=OUT_DIR)
    args = p.parse_args(argv)
    args.rates = [float(x) for x in args.rates.split(",")]
    args.ramp_rates = [float(x) for x in args.ramp_rates.split(",")]
    results = asyncio.run(main_async(args))
    print(ramp_table(results) if args.ramp else table(results))
    args.out.mkdir(parents=True, exist_ok=True)
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    path = args.out / f"sidebar-{stamp}.json"
    path.write_text(
        json.dumps(
            {
                "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
                "machine": machine(),
                "results": results,
            },
            indent=2,
        )
    )
    log(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
