"""chatsite.async_db's statements on the event loop's pool, against the real PostgreSQL: each
statement prepared once per connection under a name of ours, values adapted both ways by
psycopg, PostgreSQL's errors raised as psycopg raises them."""

import datetime

import psycopg
import pytest

from chatsite import async_db

pytestmark = pytest.mark.django_db(transaction=True)


async def _prepared_here() -> dict:
    """The pool's one connection's prepared statements named by us: {name: statement text}."""
    async with (await async_db.pool()).connection() as conn:
        cursor = await conn.execute(
            "SELECT name, statement FROM pg_prepared_statements WHERE name LIKE 'chatsite_%%'"
        )
        return dict(await cursor.fetchall())


async def test_a_statement_is_prepared_once_per_connection_and_types_round_trip():
    sql = "SELECT %(n)s::bigint + 1, %(text)s::text, %(at)s::timestamptz, %(n)s::int, %(none)s::text"
    at = datetime.datetime(2026, 12, 7, 12, 30, tzinfo=datetime.UTC)
    try:
        for n in range(5):
            row = await async_db.fetchone(sql, {"n": n, "text": "대화 ok", "at": at, "none": None})
            assert row == (n + 1, "대화 ok", at, n, None)
        prepared = await _prepared_here()
        # one prepared statement for the five calls, each name numbered once ($1 used twice)
        ours = [text for text in prepared.values() if "$1::bigint + 1" in text]
        assert len(ours) == 1 and "$1::int" in ours[0] and "$4::text" in ours[0]
        rows = await async_db.fetchall("SELECT g, g * %(k)s FROM generate_series(1, 3) g", {"k": 10})
        assert rows == [(1, 10), (2, 20), (3, 30)]
    finally:
        await async_db.aclose()


async def test_postgresqls_errors_are_psycopgs_and_the_connection_stays_usable():
    """A unique violation is ``psycopg.errors.UniqueViolation`` (an ``IntegrityError``, which the
    send path takes for a retry of a stored ``client_msg_id``); the statement that failed can
    run again on the same connection; a statement with no rows back answers None / []."""
    try:
        await async_db.fetchone("CREATE TABLE t_async_db (k int PRIMARY KEY)", {})
        insert = "INSERT INTO t_async_db (k) VALUES (%(k)s) RETURNING k"
        assert await async_db.fetchone(insert, {"k": 1}) == (1,)
        with pytest.raises(psycopg.errors.UniqueViolation) as caught:
            await async_db.fetchone(insert, {"k": 1})
        assert isinstance(caught.value, psycopg.IntegrityError)
        assert caught.value.sqlstate == "23505"
        assert await async_db.fetchone(insert, {"k": 2}) == (2,)
        assert await async_db.fetchone("DELETE FROM t_async_db WHERE k = %(k)s", {"k": 1}) is None
        assert await async_db.fetchall("DELETE FROM t_async_db WHERE k = %(k)s", {"k": 2}) == []
        assert await async_db.fetchall("SELECT k FROM t_async_db", {}) == []
        with pytest.raises(psycopg.errors.UndefinedTable):
            await async_db.fetchone("SELECT * FROM t_async_db_missing WHERE k = %(k)s", {"k": 1})
    finally:
        await async_db.fetchone("DROP TABLE IF EXISTS t_async_db", {})
        await async_db.aclose()


async def test_the_same_text_with_a_null_or_a_value_is_prepared_for_each_and_both_answer():
    sql = "SELECT %(v)s::bigint IS NULL"
    try:
        assert await async_db.fetchone(sql, {"v": None}) == (True,)
        assert await async_db.fetchone(sql, {"v": 5}) == (False,)
        assert await async_db.fetchone(sql, {"v": None}) == (True,)
    finally:
        await async_db.aclose()


def test_only_named_placeholders_are_numbered_and_others_take_psycopgs_path():
    assert async_db._statement("SELECT %(a)s, %(b)s, %(a)s") == (b"SELECT $1, $2, $1", ("a", "b"))
    assert async_db._statement("SELECT %s") is None
    assert async_db._statement("SELECT 'a%%' || %(a)s") is None


async def test_a_statement_with_other_placeholders_or_a_missing_parameter():
    try:
        assert await async_db.fetchone("SELECT %s::int + 1", [1]) == (2,)  # psycopg's own path
        with pytest.raises(psycopg.ProgrammingError):
            await async_db.fetchone("SELECT %(a)s::int", {"b": 1})
    finally:
        await async_db.aclose()


async def test_a_prepared_statement_the_server_lost_is_prepared_again_and_answers():
    """A statement of ours that the connection no longer has on the server (``DEALLOCATE``, as
    a reset would) is prepared again under a new name and sent once more: the caller gets its
    row, not 26000."""
    sql = "SELECT %(n)s::int * 2"
    try:
        async with (await async_db.pool()).connection() as conn:
            assert await async_db._fetch_prepared(conn, sql, {"n": 2}, all_rows=False) == (4,)
            (before,) = conn._chatsite_prepared.values()
            await conn.execute("DEALLOCATE ALL")
            assert await async_db._fetch_prepared(conn, sql, {"n": 3}, all_rows=True) == [(6,)]
            (after,) = conn._chatsite_prepared.values()
            assert after != before
            cursor = await conn.execute("SELECT name FROM pg_prepared_statements")
            assert [row[0] for row in await cursor.fetchall()] == [after.decode()]
    finally:
        await async_db.aclose()
