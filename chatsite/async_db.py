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
is one transaction, except in a group (``fetchone_grouped``: the sends that arrive while one is
in flight, stored in one transaction, in one round trip).

A pool belongs to the event loop that opened it (one per process in a server; one per test in
the test suite, closed by ``aclose()``).

Faults (``chatsite.dbconn``): every round trip of a pooled connection waits at most
``DATABASE_STATEMENT_TIMEOUT`` + 0.25 s, and ``fetchone`` keeps a whole statement (pool wait and
one retry included) within that budget, retrying once on a fresh connection when the one it was
given turned out dead (PostgreSQL restarted, backends terminated).
"""

import asyncio
import contextlib
import time

import psycopg
from django.conf import settings
from psycopg.pq import ExecStatus
from psycopg_pool import PoolTimeout

from chatsite import dbconn, loops

# libpq connection parameters Django passes through from OPTIONS (the rest are Django's own).
_NOT_LIBPQ = {"pool", "server_side_binding", "isolation_level", "assume_role", "client_encoding"}

_pools: dict = {}  # event loop -> psycopg_pool.AsyncConnectionPool
_background: dict = {}  # event loop -> set of tasks using its pool (``track``)


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

        loops.drop_closed(_pools)  # finished tests' loops: their sockets went with them
        pool = AsyncConnectionPool(
            kwargs=_conninfo_kwargs(),
            open=False,
            name="chatsite-async",
            connection_class=dbconn.AsyncConnection,
            **_pool_options(),
        )
        _pools[loop] = pool
        await pool.open(wait=False)
    return pool


@contextlib.contextmanager
def deadline():
    """Within this block every database wait of the current task (and of the sync calls it makes
    through ``database_sync_to_async``, which copy its context) ends by one deadline, the budget
    of ``dbconn.client_timeout()`` seconds from now; yields the deadline (``time.monotonic()``),
    or None when there is no limit. Nested blocks keep the outer deadline."""
    limit = dbconn.client_timeout()
    outer = dbconn._deadline.get()
    if outer is not None or limit is None:
        yield outer
        return
    token = dbconn._deadline.set(time.monotonic() + limit)
    try:
        yield dbconn._deadline.get()
    finally:
        dbconn._deadline.reset(token)


def remaining() -> float | None:
    """Seconds left before the current ``deadline()`` (None: no deadline)."""
    at = dbconn._deadline.get()
    return None if at is None else max(at - time.monotonic(), 0.0)


async def fetchall(sql: str, params: dict) -> list:
    """``fetchone``'s rules (a statement safe to run twice, the deadline, one retry on a fresh
    connection when the first turned out dead, the same errors), returning every row."""
    return await _run(sql, params, all_rows=True)


async def fetchone(sql: str, params: dict):
    """Run one statement that is safe to run twice (its effect is idempotent, such as a send
    keyed by ``client_msg_id``) on a pooled connection and return its first row. Within a
    ``deadline()``: the pool wait is cut to the time left, and when the connection turns out dead
    (``dbconn.connection_lost``) the statement is sent once more on a fresh one (the pool has been
    drained). Raises ``psycopg.Error`` / ``psycopg_pool.PoolTimeout``; an error raised by the
    retry carries ``chatsite_retried = True`` (the first attempt's outcome is unknown)."""
    return await _run(sql, params, all_rows=False)


async def _run(sql: str, params: dict, *, all_rows: bool):
    timeout = _pool_options()["timeout"]
    for attempt in (1, 2):
        left = remaining()
        try:
            async with (await pool()).connection(
                timeout=timeout if left is None else min(timeout, left)
            ) as conn:
                cursor = await conn.execute(sql, params)
                return await (cursor.fetchall() if all_rows else cursor.fetchone())
        except psycopg.Error as exc:
            if attempt == 2:
                exc.chatsite_retried = True
                raise
            if not dbconn.connection_lost(exc) or (remaining() is not None and remaining() < 0.05):
                raise


class GroupFailed(Exception):
    """The transaction of a group of statements (``fetchone_grouped``) did not commit: nothing
    of it is stored when ``unsure`` is False (PostgreSQL answered an error and rolled it back:
    one statement's unique violation, a deadlock, the pool had no connection); with ``unsure``
    True the connection failed or went silent, or the error came once every statement had been
    answered (with the COMMIT): it may have committed."""

    def __init__(self, unsure: bool):
        super().__init__(
            "the grouped statements' transaction did not commit" + (" (maybe)" if unsure else "")
        )
        self.unsure = unsure


# Statements per group at most: one transaction holds the rows its statements lock (one room's
# row per send) until it commits, so a group is kept short.
GROUP_MAX = 32
# A group waits at most this long for any one row lock, then fails and each send runs alone.
# Groups take rooms' rows in room order, but a send also locks its author's rate window (and
# read markers are written by other statements), so two groups of two nodes holding the same
# users' sends can deadlock; PostgreSQL would find that only after ``deadlock_timeout`` (1 s by
# default), past most of a send's budget (DATABASE_STATEMENT_TIMEOUT + 0.25 s), and answer
# those sends ``unavailable`` (seen in tests/test_group_commit.py before this limit).
GROUP_LOCK_TIMEOUT_MS = 200
# A statement's answer that is not an error.
_ANSWERED = (ExecStatus.TUPLES_OK, ExecStatus.COMMAND_OK)
_GROUP_LOCK_TIMEOUT = f"SET LOCAL lock_timeout = '{GROUP_LOCK_TIMEOUT_MS}ms'"


async def fetchone_grouped(sql: str, params: dict, *, order: int, timeout: float | None):
    """``fetchone(sql, params)``, grouped with the other calls made on this event loop while a
    statement was in flight (group commit, issue 16). A call that finds nothing in flight is
    ``fetchone`` itself, in the caller's task (``Batcher.lead_alone``: the same retry and
    errors). The calls that came meanwhile go together: their statements run in ``order`` (a
    room's id: every group takes the rooms' rows in the same order) in one transaction, in one
    round trip: ``BEGIN``, the statements and ``COMMIT`` sent together in pipeline mode, then the
    sync that ends the pipeline (every answer, or the first error with ``COMMIT`` skipped and
    nothing kept). Before session 20: two round trips (the statements and a sync, then
    ``COMMIT``), holding the rooms' rows across both; a group of 2 or 3 in isolation now costs
    this process 14-35 % less CPU (``bench/RESULTS.md``, session 20 pass).

    Measured (``bench/RESULTS.md``, session 17 pass): PostgreSQL's CPU per send statement,
    autocommit one by one against groups of 2 / 4 / 8 in one transaction: 275–310 against 235 /
    160 / 140 µs.

    A group runs under the earliest of its callers' deadlines (``deadline()``), so no caller
    gives up while its statement may still commit. Raises what ``fetchone`` raises for a call
    run alone; for a group ``GroupFailed`` when its transaction did not commit (``unsure``:
    the failure came once the ``COMMIT`` may have been sent, or the connection failed); then
    the caller runs its statement alone, which gives it its own answer. ``TimeoutError`` past
    ``timeout`` seconds (None: no limit): the statement may or may not have been sent."""
    from chatsite import db_batch

    # lead_alone: a send with none in flight runs the plain statement, in its own task.
    group = db_batch.batcher("chatsite.async_db.grouped", _run_group, max_items=GROUP_MAX, lead_alone=True)
    return await group.call((sql, params, order, dbconn._deadline.get()), timeout=timeout)


async def _run_group(items: list) -> list:
    deadlines = [item[3] for item in items if item[3] is not None]
    token = dbconn._deadline.set(min(deadlines) if deadlines else None)
    try:
        if len(items) == 1:
            sql, params, _, _ = items[0]
            return [await _run(sql, params, all_rows=False)]
        return await _run_together(items)
    finally:
        dbconn._deadline.reset(token)


async def _run_together(items: list) -> list:
    ranked = sorted(range(len(items)), key=lambda i: items[i][2])
    cursors: dict[int, object] = {}
    timeout = _pool_options()["timeout"]
    left = remaining()
    try:
        async with (await pool()).connection(timeout=timeout if left is None else min(timeout, left)) as conn:
            try:
                # One round trip: BEGIN, the lock limit, the statements and COMMIT, then the sync
                # that psycopg sends as the pipeline block ends (a sync of our own inside it
                # would be a second round trip: the block's end sends another). After an error
                # PostgreSQL skips the rest up to the sync, COMMIT included. The explicit BEGIN
                # keeps a group left half sent (a cancelled caller, a parameter psycopg could not
                # send) from being committed by that sync, which psycopg sends on an error too.
                async with conn.pipeline():
                    await conn.execute("BEGIN")
                    await conn.execute(_GROUP_LOCK_TIMEOUT)
                    for i in ranked:
                        sql, params, _, _ = items[i]
                        cursors[i] = await conn.execute(sql, params)
                    await conn.execute("COMMIT")
            except BaseException:
                # Whatever failed, the connection goes (the pool opens another): a transaction
                # left open is rolled back with it (one whose COMMIT had reached the server may
                # have committed: then this error has no SQLSTATE, and the group is unsure), and
                # psycopg's cache of prepared statements may name one the server never made (a
                # Parse skipped after an error; "prepared statement _pg3_0 does not exist" at
                # every later use, bench/RESULTS.md session 20 pass). Rare: a retry of a stored
                # send, a lock waited on past GROUP_LOCK_TIMEOUT_MS. The pool logs a warning.
                await conn.close()
                raise
            return [await cursors[i].fetchone() for i in range(len(items))]
    except PoolTimeout:
        raise GroupFailed(unsure=False) from None
    except psycopg.Error as exc:
        # An error PostgreSQL answered (it has a SQLSTATE) while a statement ran rolled the
        # transaction back (COMMIT was skipped). Once every statement had its answer, the error
        # came with the COMMIT (a fast shutdown's 57P01); without an answer (the connection
        # lost, a wait past its limit, an error in this process) the group may have committed.
        answered = len(cursors) == len(items) and all(
            cursor.pgresult is not None and cursor.pgresult.status in _ANSWERED for cursor in cursors.values()
        )
        raise GroupFailed(unsure=answered or getattr(exc, "sqlstate", None) is None) from exc


def track(task: asyncio.Task) -> asyncio.Task:
    """Register a background task of the running loop that uses its pool (such as
    ``rooms.search_index``'s merge), so that ``aclose()`` cancels it before closing the pool.
    Returns ``task``."""
    tasks = _background.setdefault(asyncio.get_running_loop(), set())
    tasks.add(task)
    task.add_done_callback(tasks.discard)
    return task


async def aclose() -> None:
    """Close the running loop's pool, if it has one (tests call this at teardown), once the
    loop's ``chatsite.db_batch`` statements in flight and its tracked background tasks
    (``track``) have ended (cancelled), so that none of them opens a new pool afterwards."""
    from chatsite import db_batch

    loop = asyncio.get_running_loop()
    for task in list(_background.pop(loop, ())):
        if not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
    loops.drop_closed(_background)
    for batcher in db_batch._batchers.pop(loop, {}).values():
        task = batcher.task
        if isinstance(task, asyncio.Task) and not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
    pool = _pools.pop(loop, None)
    if pool is not None:
        await pool.close()
