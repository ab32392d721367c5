"""Many sockets' Redis calls at once on one event loop, as a node makes them when sockets come or go
together (a load test's sockets closing, a killed node's members reconnecting, a join storm):
each socket's connect (``limits.admit_socket`` then ``presence`` join) and then each one's
disconnect (presence leave then ``Slot.release``), all sockets at once, against the real Redis.

    REDIS_URL=redis://127.0.0.1:6379/7 DATABASE_URL=... SECRET_KEY=... \\
        python -m bench.redis_storm --sockets 1000 --rounds 3

Prints, per round and phase: wall time (s), the Redis connections the loop opened (clients on
REDIS_URL's database that appeared during the round, from ``CLIENT LIST``), errors (a presence
call that raised, an admit that fell back to "admit without counting", a release that could not
reach Redis: the ``rooms.limits`` warnings), and with ``chatsite.redis_batch`` its round trips.
No database is touched; keys live under a prefix of their own and are deleted afterwards.
"""

import argparse
import asyncio
import logging
import os
import time
import uuid


class _Consumer:
    def __init__(self, name):
        self.channel_name = name


class _Count(logging.Handler):
    def __init__(self):
        super().__init__(logging.WARNING)
        self.n = 0

    def emit(self, record):
        self.n += 1


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sockets", type=int, default=1000)
    parser.add_argument("--users", type=int, default=250)
    parser.add_argument("--rooms", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "chatsite.settings")
    os.environ.setdefault("SERVER_ID", "bench-storm")
    import django

    django.setup()
    from django.conf import settings

    settings.CHANNEL_LAYER_PREFIX = f"bench-storm-{uuid.uuid4().hex[:8]}"
    asyncio.run(_run(args))


async def _run(args) -> None:
    import redis
    from django.conf import settings

    from rooms import limits, presence

    try:
        from chatsite import redis_batch
    except ImportError:  # main before the batch
        redis_batch = None
    watcher = redis.Redis.from_url(settings.REDIS.urls[0])
    db = watcher.connection_pool.connection_kwargs.get("db", 0)
    me = watcher.client_id()

    def client_ids() -> set[int]:
        return {int(c["id"]) for c in watcher.client_list() if int(c["db"]) == db and int(c["id"]) != me}

    warnings = _Count()
    logging.getLogger("rooms").addHandler(warnings)
    logging.getLogger("rooms").propagate = False  # counted, not printed (hundreds of tracebacks)
    store = presence.RedisStore()
    sockets = [
        (10_000_000 + i % args.users, 800_000_000 + i % args.rooms, f"storm.{i}.{uuid.uuid4().hex[:6]}")
        for i in range(args.sockets)
    ]
    print(
        f"{args.sockets} sockets ({args.users} users, {args.rooms} rooms) on one loop, "
        f"{'with' if redis_batch else 'without'} chatsite.redis_batch; WS_MAX_SOCKETS_PER_USER "
        f"{limits.max_sockets()}"
    )
    for round_no in range(1, args.rounds + 1):
        limits._paused_until = 0.0
        before = client_ids()
        batch = redis_batch.batch() if redis_batch else None
        trips0 = batch.round_trips if batch else 0

        async def connect(user_id, room_id, conn, consumer):
            slot = await limits.admit_socket(user_id, consumer)
            try:
                await store.join(room_id, user_id, f"u{user_id}", conn, presence.names_limit())
            except Exception:
                return slot, 1
            return slot, 0

        async def disconnect(user_id, room_id, conn, slot):
            failed = 0
            try:
                await store.leave(room_id, user_id, conn)
            except Exception:
                failed = 1
            if slot is not None:
                await slot.release()
            return failed

        consumers = [_Consumer(conn) for _, _, conn in sockets]
        warnings.n = 0
        start = time.perf_counter()
        opened = await asyncio.gather(*(connect(u, r, c, k) for (u, r, c), k in zip(sockets, consumers)))
        connect_s = time.perf_counter() - start
        join_errors, admit_warnings = sum(e for _, e in opened), warnings.n
        refused = sum(1 for slot, _ in opened if slot is None)
        mid = client_ids() - before
        warnings.n = 0
        start = time.perf_counter()
        failed = await asyncio.gather(
            *(disconnect(u, r, c, slot) for (u, r, c), (slot, _) in zip(sockets, opened))
        )
        disconnect_s = time.perf_counter() - start
        leave_errors, release_warnings = sum(failed), warnings.n
        new = client_ids() - before
        trips = f", {batch.round_trips - trips0} round trips" if batch else ""
        print(
            f"round {round_no}: connect {connect_s:.3f} s (errors: {admit_warnings} admit, {join_errors} "
            f"join; {refused} refused), disconnect {disconnect_s:.3f} s (errors: {leave_errors} leave, "
            f"{release_warnings} release); Redis connections opened: "
            f"{len(mid)} by the connects, {len(new)} in all{trips}"
        )
    keys = [limits._key(u) for u in range(10_000_000, 10_000_000 + args.users)]
    for room_id in range(800_000_000, 800_000_000 + args.rooms):
        keys += [k for k in presence._keys(room_id) if k]
        keys += [presence._keys(room_id, u)[1] for u in range(10_000_000, 10_000_000 + args.users)]
    watcher.delete(*keys)


if __name__ == "__main__":
    main()
