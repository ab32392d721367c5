"""``python -m bench history``: history and resume over ten million stored messages (issue 16, item 5).

Loads ``--messages`` (default 10,000,000) messages in ``--rooms`` (10,000) rooms with ``COPY``
(``bench.search``'s loader: English and Korean bodies, ``body_html`` rendered by the product's
``rooms.formatting``, every index the migrations create, the search GIN indexes included) into a
database of its own (``--database-url``, default ``chatsite_bench_history`` on 127.0.0.1; created
and migrated when missing; a test database's name is refused). Before a load it checks the free
disk (``--min-free-gb``, 20) and stops with a message below it. A database already holding the
same shape is reused (``--reload`` loads it again). After a load it prints the load time and the
sizes of the messages table and of each of its indexes.

Then, for one member of ``--user-rooms`` (1,000) of the rooms, over ``--samples`` rooms drawn at
random (so the caches are not all warm: the first read of a room is cold for its pages unless a
previous run read them), it times in ms:

- a history page: ``GET /api/rooms/<slug>/messages/`` through the route's own view
  (``MessageViewSet.list``: the query, the message shapes (``rooms.message_shape``), the JSON
  rendering), the newest page
  and a ``before_seq`` page at a random depth of the room;
- a resume of 1,000 messages: ``rooms.consumers._replay`` (the consumer's own replay: one
  database hop, the messages and the encoded ``message`` frames) from ``after_seq = last_seq -
  1000``, the whole 1,000 timed as one.

The reads run under the garbage collector's settings of a node (``--gc node``, the default:
``chatsite.serve.tune_gc``, which freezes the start-up heap); ``--gc default`` keeps Python's,
under which a full collection (60-75 ms here) fell in about one resume in 35 and made the p99
(bench/RESULTS.md, session 16). The full collections seen during each read are counted.

Prints p50 / p95 / p99 / max of each, and with ``--explain`` the ``EXPLAIN (ANALYZE, BUFFERS)`` of
each read's SQL for one room.

    .venv/bin/python -m bench history                                   # 10 M messages (load: see RESULTS.md)
    .venv/bin/python -m bench history --messages 20000 --rooms 200 --user-rooms 50 --samples 100
"""

import argparse
import os
import random
import shutil
import statistics
import sys
import time

from .search import load, loaded_shape, log, percentile, setup_django

DEFAULT_DATABASE_URL = "postgres://postgres@127.0.0.1:5432/chatsite_bench_history"
MEMBER = "history-bench-user"
MARK_SLUG = "history-bench-shape"
RESUME = 1000  # messages a resume replays (rooms.consumers.RESUME_MAX)


def parse_args(argv):
    p = argparse.ArgumentParser(prog="python -m bench history", description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--database-url", default=os.environ.get("BENCH_HISTORY_DATABASE_URL", DEFAULT_DATABASE_URL)
    )
    p.add_argument("--messages", type=int, default=10_000_000)
    p.add_argument("--rooms", type=int, default=10_000)
    p.add_argument("--user-rooms", type=int, default=1000, help="rooms the member is in")
    p.add_argument("--body-pool", type=int, default=200_000, help="distinct bodies the messages draw from")
    p.add_argument("--samples", type=int, default=500, help="rooms drawn at random for each timing")
    p.add_argument("--limit", type=int, default=50, help="history page size (the route's default)")
    p.add_argument("--sends", type=int, default=1000, help="messages to post after the reads (0: none)")
    p.add_argument("--seed", type=int, default=16)
    p.add_argument("--min-free-gb", type=float, default=20.0, help="refuse to load below this free disk")
    p.add_argument("--reload", action="store_true", help="load the data again even if present")
    p.add_argument("--load-only", action="store_true", help="load (or check the load), measure nothing")
    p.add_argument("--explain", action="store_true", help="print EXPLAIN (ANALYZE, BUFFERS) of each read")
    p.add_argument(
        "--gc",
        choices=("node", "default"),
        default="node",
        help="the garbage collector as a node runs it (chatsite.serve.tune_gc: the start-up heap "
        "frozen, fewer collections), or Python's defaults (the passes before session 16)",
    )
    return p.parse_args(argv)


class Collections:
    """The garbage collections of this process while ``on``: ``(generation, pause in ms)``."""

    def __init__(self):
        import gc

        self.on = False
        self.seen: list[tuple[int, float]] = []
        self._started = 0.0
        gc.callbacks.append(self._callback)

    def _callback(self, phase: str, info: dict) -> None:
        if phase == "start":
            self._started = time.perf_counter()
        elif self.on:
            self.seen.append((info["generation"], (time.perf_counter() - self._started) * 1000))

    def full(self) -> list[float]:
        """The pauses (ms) of the full (generation 2) collections seen."""
        return [ms for generation, ms in self.seen if generation == 2]


def shape(args) -> str:
    return (
        f"messages={args.messages} rooms={args.rooms} user_rooms={args.user_rooms} "
        f"body_pool={args.body_pool} seed={args.seed}"
    )


def check_disk(min_free_gb: float, path: str = "/work") -> None:
    free = shutil.disk_usage(path if os.path.exists(path) else "/").free / 2**30
    if free < min_free_gb:
        raise SystemExit(
            f"only {free:.1f} GB free on {path} (df -h {path}); the load needs at least "
            f"{min_free_gb:.0f} GB (--min-free-gb): free some disk or load a smaller shape"
        )
    log(f"free disk: {free:.1f} GB")


def sizes() -> list[tuple[str, int]]:
    """(name, bytes) of the messages table (heap and TOAST) and of each of its indexes."""
    from django.db import connection

    with connection.cursor() as cur:
        cur.execute(
            "SELECT 'rooms_message (table)', pg_table_size('rooms_message') UNION ALL "
            "SELECT indexrelid::regclass::text, pg_relation_size(indexrelid) FROM pg_index "
            "WHERE indrelid = 'rooms_message'::regclass UNION ALL "
            "SELECT 'rooms_message (total)', pg_total_relation_size('rooms_message') "
        )
        return cur.fetchall()


def _blocks() -> tuple[int, int]:
    """This database's (blocks read from outside shared_buffers, blocks hit) so far."""
    from django.db import connection

    with connection.cursor() as cur:
        # A backend sends its counters at most once a second unless told to at its next idle.
        cur.execute("SELECT pg_stat_force_next_flush()")
        cur.execute("SELECT pg_stat_clear_snapshot()")
        cur.execute("SELECT blks_read, blks_hit FROM pg_stat_database WHERE datname = current_database()")
        return cur.fetchone()


def measure(args) -> dict:
    """Time the three reads over disjoint sets of rooms drawn at random among the member's:
    each room is read once by one kind of read (its pages are not warmed by another read of
    this run). Returns, per read, the times in ms, the CPU µs of this process, the SQL
    statements of one run, and the blocks read and hit over all runs (pg_stat_database)."""
    from django.contrib.auth import get_user_model
    from django.db import connection
    from django.test.utils import CaptureQueriesContext
    from rest_framework.test import APIRequestFactory, force_authenticate

    from rooms import consumers
    from rooms.api import MessageViewSet
    from rooms.models import Membership, Room

    user = get_user_model().objects.get(username=MEMBER)
    rooms = list(
        Room.objects.filter(pk__in=Membership.objects.filter(user=user).values("room_id"))
        .exclude(slug=MARK_SLUG)
        .order_by("pk")
    )
    rng = random.Random(args.seed + 1)
    rng.shuffle(rooms)
    per = min(args.samples, len(rooms) // 3)
    factory = APIRequestFactory()
    view = MessageViewSet.as_view({"get": "list"})

    def page(room, params) -> None:
        request = factory.get(f"/api/rooms/{room.slug}/messages/", params)
        force_authenticate(request, user=user)
        response = view(request, room_slug=room.slug)
        response.render()
        assert response.status_code == 200, response.content[:300]
        assert len(response.data["results"]) == min(args.limit, room.last_seq), len(response.data["results"])

    def resume(room) -> None:
        frames, reached = consumers._replay(room=room, after_seq=max(0, room.last_seq - RESUME))
        assert frames is not None and len(frames) == min(RESUME, room.last_seq) and reached == room.last_seq

    reads = {
        "history page, newest": lambda room: page(room, {"limit": args.limit}),
        "history page, before_seq at a random depth": lambda room: page(
            room,
            {
                "limit": args.limit,
                "before_seq": rng.randint(args.limit + 1, max(args.limit + 1, room.last_seq)),
            },
        ),
        f"resume of {RESUME} (rooms.consumers._replay)": resume,
    }
    result = {}
    collections = Collections()
    for k, (name, read) in enumerate(reads.items() if per else ()):  # --samples 0: sends only
        sample = rooms[k * per : (k + 1) * per]
        ms, cpu, statements = [], [], []
        blocks_before = _blocks()
        collections.seen, collections.on = [], True
        for room in sample:
            with CaptureQueriesContext(connection) as queries:
                t, c = time.perf_counter(), time.thread_time()
                read(room)
                ms.append((time.perf_counter() - t) * 1000)
                cpu.append((time.thread_time() - c) * 1e6)
            statements.append(len(queries))
        collections.on = False
        blocks_after = _blocks()
        result[name] = {
            "full_gc_ms": collections.full(),
            "ms": ms,
            "cpu_us": cpu,
            "statements": statements,
            "blocks_read": blocks_after[0] - blocks_before[0],
            "blocks_hit": blocks_after[1] - blocks_before[1],
        }
        if args.explain:
            with CaptureQueriesContext(connection) as queries:
                read(sample[0])
            print(f"\n-- EXPLAIN (ANALYZE, BUFFERS): {name}, room {sample[0].slug}")
            for q in queries.captured_queries:
                if not q["sql"].lstrip().upper().startswith("SELECT"):
                    continue
                with connection.cursor() as cur:
                    cur.execute("EXPLAIN (ANALYZE, BUFFERS) " + q["sql"])
                    print(q["sql"][:300])
                    print("\n".join("    " + row[0] for row in cur.fetchall()))
    if args.sends:
        result[f"send ({args.sends} x services.message_post)"] = measure_sends(args, user, rooms, rng)
    return result


def measure_sends(args, user, rooms, rng) -> dict:
    """``--sends`` messages posted by the member through ``rooms.services.message_post`` (the
    product's one-statement store, its broadcast on commit into the in-memory layer here) to
    rooms drawn at random: the time of each in ms, its statements, and the blocks it read and hit
    (the table's and each index's pages: the unique ``(room_id, seq)``, the search GIN indexes'
    pending lists and their clean-ups). The sent messages stay (each room's ``seq`` goes on from
    them). WAL is not counted: the server's WAL position is shared by every database on it."""
    import uuid

    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from rooms import services

    from .search import bodies

    texts = bodies(args.sends, rng)
    ms, cpu, statements = [], [], []

    collections = Collections()
    collections.on = True
    blocks_before = _blocks()
    for _ in range(args.sends):
        room = rng.choice(rooms)
        with CaptureQueriesContext(connection) as queries:
            t, c = time.perf_counter(), time.thread_time()
            services.message_post(room=room, author=user, body=next(texts), client_msg_id=uuid.uuid4().hex)
            ms.append((time.perf_counter() - t) * 1000)
            cpu.append((time.thread_time() - c) * 1e6)
        statements.append(len(queries))
    blocks_after = _blocks()
    collections.on = False
    return {
        "full_gc_ms": collections.full(),
        "ms": ms,
        "cpu_us": cpu,
        "statements": statements,
        "blocks_read": blocks_after[0] - blocks_before[0],
        "blocks_hit": blocks_after[1] - blocks_before[1],
    }


def main(argv=None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    from .cluster import check_loopback

    check_loopback(args.database_url)
    setup_django(args.database_url, what=f"{args.messages} messages")
    current = loaded_shape(MARK_SLUG)
    if args.reload or current != shape(args):
        check_disk(args.min_free_gb)
        log(f"loading {shape(args)} (found: {current or 'nothing'})")
        t = time.perf_counter()
        load(args, member=MEMBER, mark_slug=MARK_SLUG, mark=shape(args), body_pool=args.body_pool, html=True)
        log(f"load: {time.perf_counter() - t:.0f} s")
        for name, size in sizes():
            log(f"  {name}: {size / 2**20:.0f} MB")
    else:
        log(f"reusing the loaded data ({current})")
    if args.load_only:
        return 0
    if args.gc == "node":
        from chatsite.serve import tune_gc

        tune_gc()
    result = measure(args)
    print(
        f"\n## history: {shape(args)}, page of {args.limit}, resume of {RESUME}, garbage collector: {args.gc}, "
        f"{args.samples} rooms drawn at random for each read\n"
    )
    print(
        "| read | runs | p50 ms | p95 ms | p99 ms | max ms | CPU µs (this process) | SQL statements "
        "| blocks read outside shared_buffers | full collections (longest ms) |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for name, r in result.items():
        ms = r["ms"]
        print(
            f"| {name} | {len(ms)} | {percentile(ms, 50):.1f} | {percentile(ms, 95):.1f} | "
            f"{percentile(ms, 99):.1f} | {max(ms):.1f} | {statistics.median(r['cpu_us']):.0f} (median) | "
            f"{max(r['statements'])} | {r['blocks_read'] / len(ms):.1f} per run ({r['blocks_hit'] / len(ms):.0f} hit) | "
            f"{len(r['full_gc_ms'])} ({max(r['full_gc_ms'], default=0):.0f}) |"
        )
    print(
        f"\nmachine: load average {', '.join(f'{x:.1f}' for x in os.getloadavg())} "
        f"(1, 5, 15 min) on {os.cpu_count()} CPUs"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
