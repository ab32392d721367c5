"""What an idle machine adds to one send (issue 16, item 4: the seed's 3-user scenario).

The send's store step (``rooms.services.message_post_async``: the lock of its room, the one
statement from the loop's own pool, the message's shape, the broadcast queued) and a bare
``SELECT 1`` through the same pool, timed from this process under uvloop as a node runs them,
with a pause of ``--gaps`` seconds before each (0: back to back, the caches and CPUs warm; 0.1:
the seed scenario's 10 messages a second, every process asleep in between). Gaps are
alternated round by round (``--rounds``), ``--n`` timings per gap and round.

    .venv/bin/python -m bench.idle_cost [--gaps 0,0.01,0.1] [--rounds 3] [--n 40]
        [--database-url postgres://postgres@127.0.0.1:5432/chatsite_bench_idle]

The database is created when missing and migrated; it gets a room ``idle`` and a user
``idle-alice``. Prints a Markdown table (milliseconds, p50 / p90 of all rounds) and writes the
JSON to bench/out/. The broadcast goes to an in-memory channel layer (no Redis hop is timed).
"""

import argparse
import asyncio
import json
import os
import secrets
import statistics
import sys
import time
import uuid

DEFAULT_DATABASE_URL = "postgres://postgres@127.0.0.1:5432/chatsite_bench_idle"


def _ensure_database(url: str) -> None:
    import environ
    import psycopg

    cfg = environ.Env.db_url_config(url)
    kwargs = {"host": cfg.get("HOST") or "127.0.0.1", "port": cfg.get("PORT") or 5432}
    if cfg.get("USER"):
        kwargs["user"] = cfg["USER"]
    with psycopg.connect(dbname="postgres", autocommit=True, **kwargs) as conn:
        if conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [cfg["NAME"]]).fetchone() is None:
            conn.execute(f'CREATE DATABASE "{cfg["NAME"]}"')


def _pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))]


async def _measure(gaps: list[float], rounds: int, n: int, room, author) -> dict:
    from chatsite import async_db
    from rooms import services

    async def select_one():
        await async_db.fetchone("SELECT 1", {})

    async def send():
        await services.message_post_async(
            room=room,
            author=author,
            token_key=None,
            body=f"idle {uuid.uuid4().hex[:8]}",
            client_msg_id=uuid.uuid4().hex,
            send_rate="100/s",
        )

    timings = {(gap, name): [] for gap in gaps for name in ("select_1", "send")}
    for _ in range(20):  # the pool open, the statement prepared (psycopg: after 5 uses)
        await send()
        await select_one()
    for _ in range(rounds):
        for gap in gaps:
            for name, call in (("select_1", select_one), ("send", send)):
                for _ in range(n):
                    await asyncio.sleep(gap)
                    started = time.perf_counter()
                    await call()
                    timings[(gap, name)].append(time.perf_counter() - started)
    await async_db.aclose()
    return {
        f"{gap:g}": {
            name: {
                "p50_ms": round(1e3 * _pct(timings[(gap, name)], 50), 3),
                "p90_ms": round(1e3 * _pct(timings[(gap, name)], 90), 3),
                "mean_ms": round(1e3 * statistics.fmean(timings[(gap, name)]), 3),
                "n": len(timings[(gap, name)]),
            }
            for name in ("select_1", "send")
        }
        for gap in gaps
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.idle_cost", description=__doc__.split("\n\n")[0])
    parser.add_argument("--gaps", default="0,0.01,0.1", help="seconds of pause before each timing")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--n", type=int, default=40, help="timings per gap and round")
    parser.add_argument(
        "--database-url", default=os.environ.get("BENCH_IDLE_DATABASE_URL", DEFAULT_DATABASE_URL)
    )
    args = parser.parse_args(argv)
    gaps = [float(g) for g in args.gaps.split(",")]

    _ensure_database(args.database_url)
    os.environ.update(
        DATABASE_URL=args.database_url,
        REDIS_URL="",
        DJANGO_SETTINGS_MODULE="chatsite.settings",
        LOG_LEVEL="WARNING",
    )
    os.environ.setdefault("SECRET_KEY", secrets.token_urlsafe(50))
    import django

    django.setup()
    from django.contrib.auth import get_user_model
    from django.core.management import call_command

    from chatsite.serve import use_event_loop
    from rooms import services
    from rooms.models import Room

    call_command("migrate", verbosity=0)
    users = get_user_model()
    author = users.objects.filter(username="idle-alice").first() or users.objects.create_user("idle-alice")
    room = Room.objects.filter(slug="idle").first() or services.room_create(
        name="idle", slug="idle", created_by=author
    )
    services.member_join(room=room, user=author)

    use_event_loop("uvloop")
    started = time.time()
    figures = asyncio.run(_measure(gaps, args.rounds, args.n, room, author))
    print("| pause before each (s) | SELECT 1 p50 / p90 (ms) | one send's store p50 / p90 (ms) |")
    print("|---|---|---|")
    for gap, row in figures.items():
        one, send = row["select_1"], row["send"]
        print(f"| {gap} | {one['p50_ms']} / {one['p90_ms']} | {send['p50_ms']} / {send['p90_ms']} |")
    from .cli import OUT_DIR, machine

    OUT_DIR.mkdir(parents=True, exist_ok=True)
    out = OUT_DIR / f"idle-cost-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.write_text(
        json.dumps(
            {"started": started, "args": vars(args), "machine": machine(), "figures": figures}, indent=2
        )
    )
    sys.stdout.flush()
    print(f"JSON: {out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
