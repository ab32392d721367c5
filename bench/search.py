"""``python -m bench search``: search latency over a million stored messages (issue 14, item 4).

Loads ``--messages`` (default 1,000,000) messages in ``--rooms`` (1,000) rooms with ``COPY`` into
a database of its own (``--database-url``, default ``chatsite_bench_search`` on 127.0.0.1; it is
created and migrated when missing, and the bench refuses a test database's name), then times
``rooms.search.search_messages`` (the function behind ``GET /api/search/`` and the search page:
the SQL statement, the mentions and the wire shape) for one user who is a member of
``--user-rooms`` (20) of the rooms, over a fixed list of English and Korean queries, each run
``--repeat`` times (first page and, where there is one, the next page by its cursor). Prints
p50 / p95 / p99 / max per query and over all of them; ``--explain`` prints each first page's
``EXPLAIN (ANALYZE, BUFFERS)``. A database already holding the same shape is reused (``--reload``
loads it again).

Data: 2/3 of the messages English (4..16 words from a 5,000-word vocabulary drawn with Zipf's
law, so "the" is everywhere and the tail is rare), 1/3 Korean (3..10 words, with particles
attached as Korean is written: "회의는", "대화방에서"; some rooms' names such as
"일반대화방입니다"). Each room has 10 authoring members; ids follow time, rooms interleave.

    .venv/bin/python -m bench search                    # 1,000,000 messages (about 3 minutes to load)
    .venv/bin/python -m bench search --messages 2000 --rooms 20 --user-rooms 5 --repeat 2
"""

import argparse
import datetime as dt
import os
import random
import secrets
import statistics
import sys
import time

DEFAULT_DATABASE_URL = "postgres://postgres@127.0.0.1:5432/chatsite_bench_search"
SEARCHER = "search-bench-user"
AUTHORS_PER_ROOM = 10

# A fixed list: common and rare words, two-word queries, a miss, Korean words inside longer
# words (no spaces), two-character Korean words (below a trigram's length).
QUERIES = [
    "the",
    "deploy",
    "meeting notes",
    "database migration",
    "lunch",
    "kubernetes",
    "wkq3",
    "nothing-matches-this",
    "release",
    "ok",
    "대화",
    "회의",
    "배포",
    "일반대화방",
    "서버 점검",
    "커피",
    "점심 메뉴",
    "프로젝트 일정",
    "방",
    "밥",
    "qz",
    "뷁뷁",
]

ENGLISH = [
    "the",
    "be",
    "to",
    "of",
    "and",
    "a",
    "in",
    "that",
    "have",
    "I",
    "it",
    "for",
    "not",
    "on",
    "with",
    "he",
    "as",
    "you",
    "do",
    "at",
    "this",
    "but",
    "his",
    "by",
    "from",
    "they",
    "we",
    "say",
    "her",
    "she",
    "or",
    "an",
    "will",
    "my",
    "one",
    "all",
    "would",
    "there",
    "their",
    "what",
    "so",
    "up",
    "out",
    "if",
    "about",
    "who",
    "get",
    "which",
    "go",
    "me",
    "when",
    "make",
    "can",
    "like",
    "time",
    "no",
    "just",
    "him",
    "know",
    "take",
    "people",
    "into",
    "year",
    "your",
    "good",
    "some",
    "could",
    "them",
    "see",
    "other",
    "than",
    "then",
    "now",
    "look",
    "only",
    "come",
    "its",
    "over",
    "think",
    "also",
    "back",
    "after",
    "use",
    "two",
    "how",
    "our",
    "work",
    "first",
    "well",
    "way",
    "even",
    "new",
    "want",
    "because",
    "any",
    "these",
    "give",
    "day",
    "most",
    "us",
    "meeting",
    "notes",
    "deploy",
    "release",
    "database",
    "migration",
    "lunch",
    "coffee",
    "server",
    "build",
    "test",
    "review",
    "merge",
    "branch",
    "issue",
    "bug",
    "fix",
    "ticket",
    "customer",
    "support",
    "design",
    "meeting",
    "standup",
    "sprint",
    "plan",
    "roadmap",
    "deadline",
    "launch",
    "dashboard",
    "metrics",
    "alert",
    "incident",
    "outage",
    "latency",
    "cache",
    "queue",
    "worker",
    "cluster",
    "node",
    "redis",
    "postgres",
    "index",
    "query",
    "search",
    "upload",
    "file",
    "image",
    "photo",
    "link",
    "thread",
    "reply",
    "reaction",
    "emoji",
    "channel",
    "room",
    "message",
    "chat",
    "team",
    "project",
    "schedule",
    "calendar",
    "week",
    "friday",
    "monday",
    "tomorrow",
    "today",
    "yesterday",
    "morning",
    "afternoon",
    "evening",
    "please",
    "thanks",
    "sorry",
    "great",
    "nice",
    "cool",
    "sure",
    "yes",
    "okay",
    "agreed",
    "done",
    "ready",
    "blocked",
    "waiting",
    "working",
    "shipping",
    "kubernetes",
    "docker",
    "terraform",
    "grafana",
    "prometheus",
    "python",
    "django",
    "javascript",
    "react",
    "typescript",
]

KOREAN = [
    "대화",
    "회의",
    "배포",
    "서버",
    "점검",
    "커피",
    "점심",
    "메뉴",
    "프로젝트",
    "일정",
    "오늘",
    "내일",
    "어제",
    "문서",
    "검색",
    "사진",
    "파일",
    "데이터베이스",
    "마이그레이션",
    "고객",
    "지원",
    "디자인",
    "스프린트",
    "계획",
    "출시",
    "장애",
    "지연",
    "캐시",
    "작업",
    "클러스터",
    "노드",
    "링크",
    "스레드",
    "답장",
    "반응",
    "채널",
    "방",
    "메시지",
    "팀",
    "주간",
    "금요일",
    "월요일",
    "아침",
    "오후",
    "저녁",
    "감사",
    "확인",
    "완료",
    "준비",
    "대기",
    "리뷰",
    "병합",
    "브랜치",
    "이슈",
    "버그",
    "수정",
    "테스트",
    "빌드",
    "알림",
    "지표",
    "대시보드",
    "로그",
    "보안",
    "권한",
    "계정",
    "비밀번호",
    "일반대화방",
    "공지사항",
    "회의실",
    "휴가",
    "출장",
    "보고서",
    "예산",
    "계약",
    "견적",
    "발표",
    "자료",
    "교육",
    "채용",
    "면접",
]
PARTICLES = [
    "",
    "",
    "",
    "은",
    "는",
    "이",
    "가",
    "을",
    "를",
    "에",
    "에서",
    "도",
    "입니다",
    "이에요",
    "으로",
    "와",
    "과",
    "의",
]


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def parse_args(argv):
    p = argparse.ArgumentParser(prog="python -m bench search", description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--database-url", default=os.environ.get("BENCH_SEARCH_DATABASE_URL", DEFAULT_DATABASE_URL)
    )
    p.add_argument("--messages", type=int, default=1_000_000)
    p.add_argument("--rooms", type=int, default=1000)
    p.add_argument("--user-rooms", type=int, default=20, help="rooms the searching user is a member of")
    p.add_argument("--repeat", type=int, default=5, help="runs of each query")
    p.add_argument("--limit", type=int, default=20, help="page size")
    p.add_argument("--seed", type=int, default=14)
    p.add_argument("--reload", action="store_true", help="load the data again even if present")
    p.add_argument("--explain", action="store_true", help="print EXPLAIN ANALYZE of each query's first page")
    p.add_argument(
        "--without-index",
        action="append",
        default=[],
        metavar="NAME",
        help="measure as if this index did not exist (dropped in a transaction rolled back after "
        "the measurement): an older version's figures on a database migrated by a newer one",
    )
    return p.parse_args(argv)


def _vocabulary(rng: random.Random) -> tuple[list[str], list[float]]:
    """5,000 English-like words, real ones first, then made-up ones (a long rare tail); Zipf weights."""
    seen, words = set(), []
    for w in ENGLISH:
        if w.lower() not in seen:
            seen.add(w.lower())
            words.append(w)
    letters = "abcdefghijklmnopqrstuvwxyz"
    while len(words) < 5000:
        w = "".join(rng.choice(letters) for _ in range(rng.randint(4, 9)))
        if w not in seen:
            seen.add(w)
            words.append(w)
    weights, total = [], 0.0
    for i in range(len(words)):
        total += 1.0 / (i + 1)
        weights.append(total)
    return words, weights


def _korean(rng: random.Random) -> tuple[list[str], list[float]]:
    """The Korean words above, then 1,000 made-up 2..3-syllable words; Zipf weights."""
    words = list(dict.fromkeys(KOREAN))
    seen = set(words)
    while len(words) < 1000 + len(KOREAN):
        w = "".join(chr(0xAC00 + rng.randrange(11172)) for _ in range(rng.randint(2, 3)))
        if w not in seen:
            seen.add(w)
            words.append(w)
    weights, total = [], 0.0
    for i in range(len(words)):
        total += 1.0 / (i + 1)
        weights.append(total)
    return words, weights


def bodies(n: int, rng: random.Random):
    en, en_w = _vocabulary(rng)
    ko, ko_w = _korean(rng)
    for i in range(n):
        if i % 3 == 2:
            words = rng.choices(ko, cum_weights=ko_w, k=rng.randint(3, 10))
            yield " ".join(w + rng.choice(PARTICLES) for w in words)
        else:
            words = rng.choices(en, cum_weights=en_w, k=rng.randint(4, 16))
            text = " ".join(words)
            yield text[0].upper() + text[1:] + rng.choice([".", "", "!", "?"])


def setup_django(database_url: str, what: str = "a million messages") -> None:
    name = database_url.rstrip("/").rsplit("/", 1)[-1].split("?")[0]
    if name.startswith("test_") or name in ("chatsite", "postgres", "template0", "template1"):
        raise SystemExit(f"refusing to load {what} into {name!r}: give the bench its own database")
    # No pool and no statement time limit: the load's COPY and index builds take minutes.
    os.environ.update(
        {
            "DATABASE_URL": database_url,
            "REDIS_URL": "",
            "DEBUG": "0",
            "DATABASE_POOL": "0",
            "DATABASE_STATEMENT_TIMEOUT": "0",
            "SECRET_KEY": os.environ.get("SECRET_KEY") or secrets.token_urlsafe(50),
            "DJANGO_SETTINGS_MODULE": "chatsite.settings",
        }
    )
    from .prepare import ensure_database

    if ensure_database(database_url):
        log(f"created database {name}")
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0, interactive=False)


def shape(args) -> str:
    return f"messages={args.messages} rooms={args.rooms} user_rooms={args.user_rooms} seed={args.seed}"


def loaded_shape(mark_slug: str = "search-bench-shape") -> str | None:
    from rooms.models import Room

    room = Room.objects.filter(slug=mark_slug).first()
    return room.description if room else None


def load(
    args,
    *,
    member: str = SEARCHER,
    mark_slug: str = "search-bench-shape",
    mark: str | None = None,
    body_pool: int = 0,
    html: bool = False,
) -> None:
    """Empty the bench database's chat tables and load users, rooms, memberships and messages
    with COPY (the search indexes dropped during the load and built again after it).

    ``args``: ``messages``, ``rooms``, ``user_rooms`` (the rooms ``member`` is in: every
    ``rooms // user_rooms``-th one), ``seed``. ``body_pool``: 0 makes every body afresh; N > 0
    draws the bodies from N made once (a 10-million load's time goes to the text otherwise).
    ``html``: store ``body_html`` rendered by ``rooms.formatting.render``, as the product does.
    The room ``mark_slug`` (description ``mark``, default ``shape(args)``) is written last: the
    sign that the shape is fully loaded (``loaded_shape``)."""
    from array import array

    from django.db import connection

    from rooms.search import INDEXES

    rng = random.Random(args.seed)
    started = time.perf_counter()
    now = dt.datetime.now(dt.UTC).replace(microsecond=0)
    span = dt.timedelta(days=365)
    if body_pool:
        pool = list(bodies(body_pool, rng))
    if html:
        from rooms.formatting import render

        rendered = [render(b) for b in pool] if body_pool else None
    with connection.cursor() as django_cursor:
        cur = django_cursor.cursor  # psycopg's own cursor: COPY
        cur.execute("SET statement_timeout = 0")  # the product's DATABASE_STATEMENT_TIMEOUT is for requests
        cur.execute("SET maintenance_work_mem = '512MB'")  # the index builds after the COPY
        cur.execute(
            "TRUNCATE rooms_mention, rooms_message, rooms_membership, rooms_room, rooms_sendwindow "
            "RESTART IDENTITY CASCADE"
        )
        cur.execute("DELETE FROM authtoken_token")
        cur.execute("DELETE FROM auth_user")
        for name, _ in INDEXES:
            cur.execute(f"DROP INDEX IF EXISTS {name}")
        n_users = args.rooms * AUTHORS_PER_ROOM // 2 + 1
        with cur.copy(
            "COPY auth_user (id, password, is_superuser, username, first_name, last_name, email, "
            "is_staff, is_active, date_joined) FROM STDIN"
        ) as copy:
            copy.write_row((1, "!", False, member, "", "", "", False, True, now - span))
            for i in range(2, n_users + 1):
                copy.write_row((i, "!", False, f"search-bench-{i}", "", "", "", False, True, now - span))
        # Rooms: room k has authors k*5 .. k*5+9 (modulo the users); the member is in every
        # (rooms // user_rooms)-th room. Each message's room drawn at random (ids follow time,
        # rooms interleave); 4 bytes a message.
        per_room = [0] * (args.rooms + 1)
        room_of = array("I", bytes(4 * args.messages))
        for i in range(args.messages):
            r = rng.randrange(args.rooms) + 1
            per_room[r] += 1
            room_of[i] = r
        with cur.copy(
            "COPY rooms_room (id, slug, name, description, created_at, last_seq, is_private, kind) FROM STDIN"
        ) as copy:
            for r in range(1, args.rooms + 1):
                private = r % 4 == 0
                copy.write_row((r, f"sb-{r}", f"Room {r}", "", now - span, per_room[r], private, "room"))
        step = max(1, args.rooms // args.user_rooms)
        member_rooms = [1 + i * step for i in range(args.user_rooms)]
        room_authors = [
            [2 + ((r * 5 + j) % (n_users - 1)) for j in range(AUTHORS_PER_ROOM)]
            for r in range(args.rooms + 1)
        ]

        with cur.copy(
            "COPY rooms_membership (room_id, user_id, role, joined_at, last_read_seq) FROM STDIN"
        ) as copy:
            for r in range(1, args.rooms + 1):
                for j, uid in enumerate(room_authors[r]):
                    copy.write_row((r, uid, "owner" if j == 0 else "member", now - span, per_room[r]))
            for r in member_rooms:
                copy.write_row((r, 1, "member", now - span, per_room[r]))
        log(f"  users, rooms, memberships: {time.perf_counter() - started:.1f} s")
        seq_of = [0] * (args.rooms + 1)
        fresh = None if body_pool else bodies(args.messages, rng)
        with cur.copy(
            "COPY rooms_message (id, room_id, seq, author_id, body, body_html, client_msg_id, "
            "server_id, created_at, mentions_room) FROM STDIN"
        ) as copy:
            for i in range(args.messages):
                r = room_of[i]
                seq_of[r] += 1
                if body_pool:
                    k = rng.randrange(body_pool)
                    body, body_html = pool[k], (rendered[k] if html else "")
                else:
                    body = next(fresh)
                    body_html = render(body) if html else ""
                created = now - span + span * (i / args.messages)
                copy.write_row(
                    (
                        i + 1,
                        r,
                        seq_of[r],
                        rng.choice(room_authors[r]),
                        body,
                        body_html,
                        f"b{i}",
                        "bench",
                        created,
                        False,
                    )
                )
                if i and i % 1_000_000 == 0:
                    log(f"  {i} messages: {time.perf_counter() - started:.1f} s")
        cur.execute("SELECT setval(pg_get_serial_sequence('rooms_message', 'id'), %s)", [args.messages + 1])
        cur.execute("SELECT setval(pg_get_serial_sequence('rooms_room', 'id'), %s)", [args.rooms + 2])
        cur.execute("SELECT setval(pg_get_serial_sequence('auth_user', 'id'), %s)", [n_users + 1])
        log(f"  {args.messages} messages copied: {time.perf_counter() - started:.1f} s")
        for name, create in INDEXES:
            t = time.perf_counter()
            cur.execute(create.replace(" CONCURRENTLY", ""))
            log(f"  index {name}: {time.perf_counter() - t:.1f} s")
    connection.close()
    with connection.cursor() as cur:  # VACUUM: outside a transaction (autocommit)
        cur.execute("SET statement_timeout = 0")
        cur.execute("VACUUM ANALYZE rooms_message")
        cur.execute("ANALYZE")
        # Last: the mark that this shape is fully loaded (a load cut short is loaded again).
        cur.execute(
            "INSERT INTO rooms_room (id, slug, name, description, created_at, last_seq, is_private, kind) "
            "VALUES (%s, %s, 'bench shape', %s, now(), 0, TRUE, 'room')",
            [args.rooms + 1, mark_slug, mark if mark is not None else shape(args)],
        )
    log(f"  loaded in {time.perf_counter() - started:.1f} s")


def percentile(values: list[float], pct: float) -> float:
    from .stats import percentile as nearest_rank

    return nearest_rank(sorted(values), pct)


def measure(args) -> dict:
    from django.contrib.auth import get_user_model
    from django.db import connection

    from rooms import search

    user = get_user_model().objects.get(username=SEARCHER)
    per_query: dict[str, list[float]] = {}
    found: dict[str, int] = {}
    refused: dict[str, str] = {}
    for q in QUERIES:  # warm the cache once; a version that refuses a query has it left out
        try:
            search.search_messages(user=user, q=q, limit=args.limit)
        except search.QueryError as e:
            refused[q] = e.code
    for _ in range(args.repeat):
        for q in QUERIES:
            if q in refused:
                continue
            t = time.perf_counter()
            page = search.search_messages(user=user, q=q, limit=args.limit)
            per_query.setdefault(q, []).append((time.perf_counter() - t) * 1000)
            found[q] = len(page.results)
            if page.next_before is not None:
                t = time.perf_counter()
                search.search_messages(user=user, q=q, limit=args.limit, before=page.next_before)
                per_query.setdefault(q + "  (page 2)", []).append((time.perf_counter() - t) * 1000)
    if args.explain:
        for q in QUERIES:
            if q in refused:
                continue
            sql, params = search.page_sql(user=user, terms=search.parse_query(q), limit=args.limit)
            with connection.cursor() as cur:
                cur.execute("EXPLAIN (ANALYZE, BUFFERS) " + sql, params)
                print(f"\n-- EXPLAIN {q!r}")
                print("\n".join(row[0] for row in cur.fetchall()))
    return {"per_query": per_query, "found": found, "refused": refused}


def long_term(q: str) -> bool:
    """Whether the query (a table row's, "  (page 2)" ignored) has a term the trigram index serves."""
    return any(len(t) >= 3 for t in q.replace("  (page 2)", "").split())


def kinds(q: str, found: int) -> list[str]:
    """The groups a query (or its next page) is counted in: its longest term's length
    (1, 2, 3+ characters), its script (Korean, English) and no-hit (no result on page 1)."""
    terms = q.replace("  (page 2)", "").split()
    longest = max(len(t) for t in terms)
    groups = [] if longest >= 3 else [f"longest term {longest} character{'s' if longest > 1 else ''}"]
    groups.append("Korean" if any("\uac00" <= c <= "\ud7a3" for t in terms for c in t) else "English")
    if found == 0:
        groups.append("no hit")
    return groups


def main(argv=None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    from .cluster import check_loopback

    check_loopback(args.database_url)
    setup_django(args.database_url)
    current = loaded_shape()
    if args.reload or current != shape(args):
        log(f"loading {shape(args)} (found: {current or 'nothing'})")
        load(args)
    else:
        log(f"reusing the loaded data ({current})")
    if args.without_index:
        from django.db import connection, transaction

        with transaction.atomic():
            with connection.cursor() as cur:
                for name in args.without_index:
                    cur.execute(f'DROP INDEX "{name}"')
            log(f"measuring without {', '.join(args.without_index)} (rolled back after)")
            result = measure(args)
            transaction.set_rollback(True)
    else:
        result = measure(args)
    every = [ms for values in result["per_query"].values() for ms in values]
    print(f"\n## search: {shape(args)}, page of {args.limit}, {args.repeat} runs per query\n")
    print("| query | results on page 1 | p50 ms | p99 ms | max ms |")
    print("|---|---|---|---|---|")
    for q, values in result["per_query"].items():
        base = q.replace("  (page 2)", "")
        shown = result["found"].get(base, "") if q == base else "(next page)"
        print(
            f"| `{q}` | {shown} | {percentile(values, 50):.1f} | {percentile(values, 99):.1f} | {max(values):.1f} |"
        )
    print()
    groups = {
        "all": every,
        "a term of 3+ characters (trigram index)": [
            ms for q, values in result["per_query"].items() if long_term(q) for ms in values
        ],
        "only terms of 1-2 characters (no trigram)": [
            ms for q, values in result["per_query"].items() if not long_term(q) for ms in values
        ],
    }
    for q, values in result["per_query"].items():
        for kind in kinds(q, result["found"].get(q.replace("  (page 2)", ""), 0)):
            groups.setdefault(kind, []).extend(values)
    for q, code in result["refused"].items():
        print(f"refused: `{q}` ({code})")
    for label, values in groups.items():
        if values:
            print(
                f"{label}: {len(values)} searches, p50 {percentile(values, 50):.1f} ms, "
                f"p95 {percentile(values, 95):.1f} ms, p99 {percentile(values, 99):.1f} ms, "
                f"max {max(values):.1f} ms (mean {statistics.mean(values):.1f})"
            )
    print(
        f"machine: load average {', '.join(f'{x:.1f}' for x in os.getloadavg())} "
        f"(1, 5, 15 min) on {os.cpu_count()} CPUs"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
