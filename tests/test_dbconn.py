"""chatsite.dbconn: time limits and dead-connection handling of the pools' connections, against
the real PostgreSQL (through a ``TcpProxy`` where a connection must go silent; the shared server
itself is never stopped or hung; a terminated backend is one of this test's own)."""

import subprocess
import sys
import time

import psycopg
import pytest
from django.db import connection
from psycopg_pool import AsyncConnectionPool, ConnectionPool

from chatsite import async_db, dbconn
from tests.nodes import BASE_DIR, TcpProxy

pytestmark = pytest.mark.django_db(transaction=True)


def _kwargs(port: int | None = None) -> dict:
    kwargs = async_db._conninfo_kwargs()
    if port is not None:
        kwargs.update(host="127.0.0.1", port=str(port))
    return kwargs


def test_every_pooled_connection_has_the_statement_timeout(settings):
    """Django's pool and the event loop's pool both make connections whose statement_timeout is
    DATABASE_STATEMENT_TIMEOUT (1.5 s by default)."""
    assert settings.DATABASE_STATEMENT_TIMEOUT == 1.5
    assert settings.DATABASES["default"]["OPTIONS"]["pool"]["connection_class"] is dbconn.Connection
    with connection.cursor() as cursor:
        cursor.execute("SHOW statement_timeout")
        assert cursor.fetchone()[0] == "1500ms"


async def test_the_event_loops_pool_has_the_statement_timeout_too():
    async with (await async_db.pool()).connection() as conn:
        assert isinstance(conn, dbconn.AsyncConnection)
        assert (await (await conn.execute("SHOW statement_timeout")).fetchone())[0] == "1500ms"
    await async_db.aclose()


def test_a_slow_statement_is_cancelled_by_postgresql_and_the_connection_stays_usable():
    with ConnectionPool(kwargs=_kwargs(), connection_class=dbconn.Connection, min_size=1, open=True) as pool:
        with pool.connection() as conn:
            started = time.monotonic()
            with pytest.raises(psycopg.errors.QueryCanceled):
                conn.execute("SELECT pg_sleep(5)")
            assert 1.4 < time.monotonic() - started < 3
            assert conn.execute("SELECT 1").fetchone() == (1,)  # the same connection, still good


def test_a_silent_connection_is_given_up_after_the_limit_and_its_pool_drained():
    """The connection goes silent (TcpProxy.blackhole: bytes swallowed, nothing reset): the
    statement raises OperationalError after DATABASE_STATEMENT_TIMEOUT + 0.25 s, the connection
    is closed, and the pool's other idle connections (silent too) are replaced, so the next
    statement works at once on a new connection."""
    proxy = TcpProxy(("127.0.0.1", int(connection.settings_dict["PORT"] or 5432)))
    try:
        with ConnectionPool(
            kwargs=_kwargs(proxy.port), connection_class=dbconn.Connection, min_size=3, open=True
        ) as pool:
            pool.wait(10)
            assert proxy.blackhole() == 3
            started = time.monotonic()
            with pytest.raises(psycopg.OperationalError) as failure, pool.connection() as conn:
                conn.execute("SELECT 1")
            took = time.monotonic() - started
            assert "no answer from PostgreSQL within 1.75 s" in str(failure.value)
            assert 1.6 < took < 3 and conn.closed and not dbconn.connection_lost(failure.value)
            started = time.monotonic()
            with pool.connection(timeout=5) as conn:
                assert conn.execute("SELECT 1").fetchone() == (1,)
            assert time.monotonic() - started < 1.0
    finally:
        proxy.close()


async def test_a_terminated_backend_is_found_dead_and_fetchone_retries_on_a_fresh_connection():
    """A pooled connection whose backend was ended (pg_terminate_backend, as a PostgreSQL
    restart does to all of them): the error says connection_lost, the pool is drained, and
    async_db.fetchone sends the statement again on a fresh connection and returns its row."""
    pool = AsyncConnectionPool(
        kwargs=_kwargs(), connection_class=dbconn.AsyncConnection, min_size=2, open=False
    )
    await pool.open(wait=True)
    try:
        async with pool.connection() as conn:
            pid = conn.info.backend_pid
        async with pool.connection() as other:
            await other.execute("SELECT pg_terminate_backend(%s)", [pid])
        lost = None
        for _ in range(4):  # the pool hands connections out in turn: meet the dead one
            try:
                async with pool.connection() as conn:
                    await conn.execute("SELECT 1")
            except psycopg.OperationalError as exc:
                lost = exc
                break
        assert lost is not None and dbconn.connection_lost(lost)
        assert pool._drained_at > 0  # its other connections were replaced too
    finally:
        await pool.close()

    # fetchone: the same fault, met by the statement itself, costs the caller nothing.
    real = await async_db.pool()
    async with real.connection() as conn:
        pid = conn.info.backend_pid  # min_size 1: the pool's one idle connection
    with psycopg.connect(**_kwargs()) as outside:
        outside.execute("SELECT pg_terminate_backend(%s)", [pid])
    with async_db.deadline():
        assert await async_db.fetchone("SELECT 41 + 1", {}) == (42,)
    await async_db.aclose()


def test_manage_py_commands_run_without_a_statement_limit():
    code = "from django.conf import settings; print(settings.DATABASE_STATEMENT_TIMEOUT)"
    shown = subprocess.run(
        [sys.executable, "manage.py", "shell", "-c", code],
        cwd=BASE_DIR,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert shown.stdout.strip().splitlines()[-1] == "0.0", shown.stderr
