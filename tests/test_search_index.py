"""The search indexes' pending lists merged by the node after its sends (``rooms.search_index``),
not inside a send when a list fills up. Real PostgreSQL: ``gin_clean_pending_list`` run by the
test itself says how many pending-list pages were still waiting (0 once the node merged them)."""

import asyncio
import logging
import time
import uuid

import psycopg
import pytest
from channels.db import database_sync_to_async
from django.db import connection
from prometheus_client import REGISTRY

from rooms import search, search_index
from rooms.logutil import RateLimitedLogger

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(autouse=True)
def no_send_limit(settings):
    settings.WS_SEND_RATE = "0"


@database_sync_to_async
def pending_pages() -> int:
    """Merges what is pending itself: the pages that were still waiting in both lists."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT sum(gin_clean_pending_list(to_regclass(name))) FROM unnest(%s::text[]) AS name",
            [list(search_index.GIN_INDEXES)],
        )
        return cursor.fetchone()[0]


def cleanups(outcome: str) -> float:
    return REGISTRY.get_sample_value("chatsite_search_index_cleanups_total", {"outcome": outcome}) or 0.0


async def send_all(conn, bodies):
    for body in bodies:
        await conn.send({"type": "message.send", "body": body, "client_msg_id": uuid.uuid4().hex})
        await conn.receive_type("ack")
        await conn.receive_type("message")


async def merge_started_by_sends():
    state = search_index._loops.get(asyncio.get_running_loop())
    assert state is not None and state.task is not None, "no merge was started"
    await state.task
    return state


async def test_a_nodes_sends_leave_no_search_keys_pending_once_their_characters_reach_the_setting(
    ws, user, room, settings
):
    settings.SEARCH_INDEX_CLEAN_CHARS = 30
    await pending_pages()  # what earlier tests left
    conn = await ws(f"/ws/rooms/{room.slug}/", user=user)
    assert await conn.connect()
    await conn.receive_type("hello")
    cleaned = cleanups("cleaned")
    await send_all(conn, ["대화방에서 배포 준비", "deploy the release"])  # 11 + 18 characters: not yet
    assert search_index._loops[asyncio.get_running_loop()].task is None
    await send_all(conn, ["ok"])  # 31
    await merge_started_by_sends()
    assert cleanups("cleaned") == cleaned + 1
    assert await pending_pages() == 0


@pytest.fixture
def no_autovacuum(db):
    """Autovacuum also merges GIN pending lists: off on the messages table for the test."""
    with connection.cursor() as cursor:
        cursor.execute("ALTER TABLE rooms_message SET (autovacuum_enabled = off)")
    yield
    with connection.cursor() as cursor:
        cursor.execute("ALTER TABLE rooms_message RESET (autovacuum_enabled)")


async def test_with_the_setting_at_zero_the_keys_stay_pending(ws, user, room, settings, no_autovacuum):
    settings.SEARCH_INDEX_CLEAN_CHARS = 0
    await pending_pages()
    conn = await ws(f"/ws/rooms/{room.slug}/", user=user)
    assert await conn.connect()
    await conn.receive_type("hello")
    await send_all(conn, ["x" * 40, "y" * 40])
    state = search_index._loops.get(asyncio.get_running_loop())
    assert state is None or state.task is None
    assert await pending_pages() >= 1  # the sends' keys were waiting: what the node merges


async def test_a_merge_skips_while_another_session_merges_and_merges_nothing(
    ws, user, room, settings, no_autovacuum
):
    from chatsite import async_db

    settings.SEARCH_INDEX_CLEAN_CHARS = 0
    conn = await ws(f"/ws/rooms/{room.slug}/", user=user)
    assert await conn.connect()
    await conn.receive_type("hello")
    other = await psycopg.AsyncConnection.connect(**async_db._conninfo_kwargs())
    try:
        await other.execute("SELECT pg_advisory_lock(%s)", [search_index.LOCK_KEY])
        await send_all(conn, ["z" * 40])
        assert await search_index.clean() is None
        await other.execute("SELECT pg_advisory_unlock(%s)", [search_index.LOCK_KEY])
        assert await pending_pages() >= 1  # the skipped merge left the keys where they were
        await send_all(conn, ["w" * 40])
        assert await search_index.clean() >= 1
        assert await pending_pages() == 0
    finally:
        await other.close()


# A stand-in for the merge that takes 0.6 s (PostgreSQL's pg_sleep), with the real one's parameters.
_SLOW_MERGE_SQL = "SELECT 7 + 0 * %(key)s::bigint + 0 * cardinality(%(names)s::text[]) FROM pg_sleep(0.6)"


async def test_a_merge_has_its_own_time_limit_not_the_statement_timeout_of_sends(settings, monkeypatch):
    """On 10,000,000 messages a merge took 1.5 s, a send's whole limit: a merge cut short by
    ``DATABASE_STATEMENT_TIMEOUT`` leaves a longer list for the next, and a list that reaches
    4 MB is merged inside a send. The merge runs under ``SEARCH_INDEX_CLEAN_TIMEOUT``, on the
    server and in the client's wait, and still ends at it."""
    from chatsite import async_db

    await async_db.aclose()  # this loop's pool is made again with the limit below
    settings.DATABASE_STATEMENT_TIMEOUT = 0.2
    monkeypatch.setattr(search_index, "_CLEAN_SQL", _SLOW_MERGE_SQL)
    try:
        settings.SEARCH_INDEX_CLEAN_TIMEOUT = 5
        assert await search_index.clean() == 7  # 0.6 s: past the sends' 0.2 + 0.25 s
        # The pool holds that one connection: it went back with its own limit.
        (statement_timeout,) = await async_db.fetchone("SHOW statement_timeout", {})
        assert statement_timeout == "200ms"
        settings.SEARCH_INDEX_CLEAN_TIMEOUT = 0.4
        started = time.monotonic()
        with pytest.raises(psycopg.errors.QueryCanceled):
            await search_index.clean()
        assert time.monotonic() - started >= 0.38  # the merge's own limit ended it, not the 0.2 s
    finally:
        await pool_closed()


async def test_the_merge_runs_outside_the_sends_deadline(settings, monkeypatch):
    from chatsite import dbconn

    settings.SEARCH_INDEX_CLEAN_CHARS = 5
    seen = []

    async def clean():
        seen.append(dbconn._deadline.get())
        return 0

    monkeypatch.setattr(search_index, "clean", clean)
    token = dbconn._deadline.set(123.0)  # as inside a send's async_db.deadline()
    try:
        search_index.note_stored(10)
        search_index.note_stored(10)  # while the first runs: no second merge
        state = search_index._loops[asyncio.get_running_loop()]
        first = state.task
    finally:
        dbconn._deadline.reset(token)
    await first
    assert seen == [None]
    assert state.task is first


async def test_a_failed_merge_is_counted_and_logged_and_the_sends_go_on(
    ws, user, room, settings, monkeypatch, caplog
):
    settings.SEARCH_INDEX_CLEAN_CHARS = 5
    monkeypatch.setattr(search_index, "_CLEAN_SQL", "SELECT gin_clean_pending_list('no_such_index')")
    conn = await ws(f"/ws/rooms/{room.slug}/", user=user)
    assert await conn.connect()
    await conn.receive_type("hello")
    monkeypatch.setattr(search_index, "_failure_log", RateLimitedLogger(search_index.logger, 60.0))
    failed = cleanups("failed")
    with caplog.at_level(logging.WARNING, logger="rooms.search_index"):
        await send_all(conn, ["hello there"])
        state = await merge_started_by_sends()
    assert cleanups("failed") == failed + 1
    assert not state.disabled  # tried again after the next characters
    assert "search index upkeep failed" in caplog.text
    await send_all(conn, ["still stored"])  # the socket and the sends are unaffected
    await merge_started_by_sends()
    assert cleanups("failed") == failed + 2
    await pool_closed()


async def pool_closed():
    """Close this loop's pool and wait until its sessions have left PostgreSQL: psycopg_pool
    finishes closing a connection returned after a failed transaction a moment later, and the
    test database is dropped at the end of the run."""
    from chatsite import async_db

    @database_sync_to_async
    def others():
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                "AND pid <> pg_backend_pid() AND backend_type = 'client backend'"
            )
            return cursor.fetchone()[0]

    await async_db.aclose()
    for _ in range(50):
        if await others() == 0:
            return
        await asyncio.sleep(0.05)


@pytest.fixture
def not_owner_role():
    """A login role that owns nothing (PostgreSQL roles are the cluster's: dropped afterwards)."""
    name = f"chatsite_not_owner_{uuid.uuid4().hex[:8]}"
    with connection.cursor() as cursor:
        cursor.execute(f'CREATE ROLE "{name}" LOGIN')
    yield name
    with connection.cursor() as cursor:
        cursor.execute(f'DROP ROLE IF EXISTS "{name}"')


async def test_without_owning_the_indexes_the_upkeep_turns_itself_off_with_one_warning(
    not_owner_role, settings, monkeypatch, caplog
):
    from chatsite import async_db

    settings.SEARCH_INDEX_CLEAN_CHARS = 5
    monkeypatch.setitem(settings.DATABASES["default"], "USER", not_owner_role)
    await async_db.aclose()  # this loop's pool, if any, opened as the owner
    failed = cleanups("failed")
    try:
        with caplog.at_level(logging.WARNING, logger="rooms.search_index"):
            search_index.note_stored(10)
            state = await merge_started_by_sends()
            assert state.disabled
            search_index.note_stored(10)  # off: no merge started
            assert state.task.done()
    finally:
        await async_db.aclose()
    assert cleanups("failed") == failed + 1
    assert caplog.text.count("search index upkeep turned off") == 1


def test_the_upkeep_merges_the_gin_indexes_search_creates():
    gin = [name for name, create in search.INDEXES if "USING gin" in create]
    assert sorted(gin) == sorted(search_index.GIN_INDEXES)
