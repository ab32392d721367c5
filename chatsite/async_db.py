"""An asyncio psycopg 3 connection pool on the event loop, for the one hot write that must not wait
for the database thread: a member's ``message.send`` (``rooms.services.message_post_async``).

Why: under daphne every consumer's ``database_sync_to_async`` call runs on one shared thread per
process, and each call costs two thread switches plus Django's connection checkout and return
(``close_old_connections`` before and after). Measured under ``python -m bench ramp`` (50 rooms of
20, see ``bench/RESULTS.md``, fourth pass) that hop and the ORM's token ``EXISTS`` took most of a
sending node's CPU per message. Here the store is one statement sent from the event loop itself,
prepared by PostgreSQL after a few uses (psycopg's ``prepare_threshold``).

Everything else (reads, admin, REST, the refusal paths) keeps using Django's ORM and its own
pool. The same ``DATABASES["default"]`` settings are used (host, port, name, user, password,
``sslmode`` and the other libpq ``OPTIONS``), so the test runner's test database is followed.
Pool size and timeout come from ``DATABASE_POOL_MIN_SIZE`` / ``DATABASE_POOL_MAX_SIZE`` /
``DATABASE_POOL_TIMEOUT`` like Django's pool; connections are in autocommit, so one statement
is one transaction.

A pool belongs to the event loop that opened it (one per process in a server; one per test in
the test suite, closed by ``aclose()``).
"""

import asyncio

from django.conf import settings

# libpq connection parameters Django passes through from OPTIONS (the rest are Django's own).
_NOT_LIBPQ = {"pool", "server_side_binding", "isolation_level", "assume_role", "client_encoding"}

_pools: dict = {}  # event loop -> psycopg_pool.AsyncConnectionPool


def available() -> bool:
    """Whether the default database is PostgreSQL (the only engine with an async pool here)."""
    return settings.DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql"


def _conninfo_kwargs() -> dict:
    db = settings.DATABASES["default"]
    kwargs = {
        "dbname": db.get("NAME") or "postgres",
        "user": db.get("USER") or None,
        "password": db.get("PASSWORD") or None,
        "host": db.get("HOST") or None,
        "port": str(db["PORT"]) if db.get("PORT") else None,
    }
    for key, value in (db.get("OPTIONS") or {}).items():
        if key not in _NOT_LIBPQ:
            kwargs[key] = value
    kwargs["autocommit"] = True
    return {k: v for k, v in kwargs.items() if v is not None}


def _pool_options() -> dict:
    pool = (settings.DATABASES["default"].get("OPTIONS") or {}).get("pool")
    pool = pool if isinstance(pool, dict) else {}
    return {
        "min_size": pool.get("min_size", 1),
        "max_size": pool.get("max_size", 10),
        "timeout": pool.get("timeout", 1.5),
    }


async def pool():
    """This event loop's ``psycopg_pool.AsyncConnectionPool`` (opened on first use). Use as
    ``async with (await pool()).connection() as conn:`` for a ``psycopg.AsyncConnection`` in
    autocommit; that raises ``psycopg_pool.PoolTimeout`` when no connection is free within the
    pool timeout (1.5 s by default: the database is down or every connection is busy), and
    statements raise ``psycopg.Error`` subclasses."""
    loop = asyncio.get_running_loop()
    pool = _pools.get(loop)
    if pool is None:
        from psycopg_pool import AsyncConnectionPool

        for other in [other for other in _pools if other.is_closed()]:
            _pools.pop(other, None)  # a finished test's loop: its sockets went with it
        pool = AsyncConnectionPool(kwargs=_conninfo_kwargs(), open=False, name="chatsite-async",
                                   **_pool_options())
        _pools[loop] = pool
        await pool.open(wait=False)
    return pool


async def aclose() -> None:
    """Close the running loop's pool, if it has one (tests call this at teardown)."""
    pool = _pools.pop(asyncio.get_running_loop(), None)
    if pool is not None:
        await pool.close()
