"""The database cost of the one-statement send (``rooms.services._post_sql``) with and without
what read state and mentions added to it: the author's read marker moved in the statement, and,
for a body with ``@``, the mentions stored in it. Each variant runs in alternating rounds
against the database of ``DATABASE_URL`` (migrated; it gets a room ``bench`` and users alice and
bob), as autocommit statements from one connection; prints the client's wall time per statement
(one round trip each). "before" is today's statement with the marker CTE cut out.

    SECRET_KEY=... DATABASE_URL=postgres://postgres@127.0.0.1:5432/chatsite_bench_send \
        PYTHONPATH=. .venv/bin/python bench/send_cost.py [rounds=5] [statements per round=1000]
"""

import os
import statistics
import sys
import time
import uuid

import django

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "chatsite.settings")
django.setup()
from django.contrib.auth import get_user_model
from django.db import connection
from django.utils import timezone

from rooms import services
from rooms.models import Room
from tests import factories

U = get_user_model()
alice = U.objects.filter(username="alice").first() or factories.make_user("alice")
bob = U.objects.filter(username="bob").first() or factories.make_user("bob")
room = Room.objects.filter(slug="bench").first() or factories.make_room(created_by=alice, slug="bench")
services.member_join(room=room, user=bob)

plain = services._post_sql("user", limited=False)
# "before": the statement without this branch's additions (no marker CTE, no mentions_room column value)
before = plain.replace(
    """        ), seen AS (
            UPDATE""",
    """        ), seen_unused AS (
            SELECT 1 WHERE FALSE
        ), x AS (
            UPDATE""",
)
import re

before = re.sub(r", x AS \(\s*UPDATE .*?last_read_seq < msg.seq\s*\)", "", before, flags=re.S)
before = before.replace(", mentions_room)", ")").replace("NULL, NULL, NULL, FALSE", "NULL, NULL, NULL")
before = before.replace(", banned_at, last_read_seq)", ", banned_at)").replace(
    "NULL, NULL, seq FROM msg", "NULL, NULL FROM msg"
)
assert "last_read_seq" not in before and "mentions_room" not in before, before
mentioning = services._post_sql("user", limited=False, mentioning=True)


def run(sql, body, n, extra=None):
    times = []
    with connection.cursor() as cur:
        for _ in range(n):
            params = {
                "room": room.pk,
                "user": alice.pk,
                "body": body,
                "client_msg_id": uuid.uuid4().hex,
                "server_id": "bench",
                "now": timezone.now(),
                "role": "member",
            }
            if extra:
                params.update(extra)
            t = time.perf_counter()
            cur.execute(sql, params)
            cur.fetchone()
            times.append(time.perf_counter() - t)
    return statistics.median(times) * 1e6, statistics.mean(times) * 1e6


variants = {
    "before (no marker, no mentions)": (before, "hello world", None),
    "after, body without @": (plain, "hello world", None),
    "after, body with @bob": (mentioning, "hello @bob", {"mentions_room": False, "names": ["bob"]}),
}
rounds, n = int(sys.argv[1]) if len(sys.argv) > 1 else 5, int(sys.argv[2]) if len(sys.argv) > 2 else 1000
res = {k: [] for k in variants}
run(plain, "warm", 200)
for _ in range(rounds):
    for k, (sql, body, extra) in variants.items():
        res[k].append(run(sql, body, n, extra))
for k, v in res.items():
    med = statistics.median(x[0] for x in v)
    mean = statistics.median(x[1] for x in v)
    print(f"{k:35s} median {med:7.1f} µs  mean {mean:7.1f} µs  (median of {rounds} rounds of {n})")
