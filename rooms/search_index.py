"""Upkeep of the search indexes' pending lists, off the send path (issue 16).

Every stored message adds its body's keys to the two GIN indexes of search
(``rooms.search.INDEXES``: ``message_body_trgm_idx``, ``message_body_grams_idx``). PostgreSQL
first appends them to each index's *pending list* (GIN's ``fastupdate``) and merges the list
into the index later: in autovacuum, or, once the list has grown past ``gin_pending_list_limit``
(4 MB by default), inside whichever insert finds it full. That insert is a send: its statement
then takes 35-80 ms instead of about 0.3, while it holds the row locks of its group's rooms, so
every other send to those rooms waits as well. Measured under ``bench/peer-loadgen.sh 32`` (50
rooms of 20, 1,600 messages a second): 4-6 such statements in every 10 s, none with the lists
cleaned in the background (bench/RESULTS.md, session 18 pass). Searches read the whole pending
list too, so a long one slows every search as well.

So each node merges the lists itself, in a task of its own, after every ``SEARCH_INDEX_CLEAN_CHARS``
characters of message bodies it stored (default 50,000: about 600 KB of pending entries, well
below the 4 MB at which a send would do it; the bench's bodies of about 100 characters add
about 1.2 KB each): ``gin_clean_pending_list`` on both indexes, in one statement that first
takes a transaction-level advisory lock (``pg_try_advisory_xact_lock``), so that when another
node is already merging this one skips instead of queueing behind it. ``0`` turns it off.
Each node counts only its own sends, so the lists can hold up to the nodes' count times the
setting between two merges: keep that product well under 4 MB (about 12 bytes of pending
entries per character: 50,000 characters on up to 6 nodes).

Only the event loop's sends (``rooms.services.message_post_async``) are counted: sends on the
database thread (REST, the fallback paths) and edits are few, and the next count catches up.
The merge needs to own the indexes (the role that ran the migrations, as usual); without that
privilege (SQLSTATE 42501) it is turned off for the process, with one warning in the log.
Outcomes are counted in ``chatsite_search_index_cleanups_total{outcome}``: ``cleaned``,
``skipped`` (another node held the lock), ``failed``.
"""

import asyncio
import contextvars
import logging

import psycopg
from django.conf import settings

from chatsite import async_db, dbconn, loops

from . import metrics
from .logutil import RateLimitedLogger

logger = logging.getLogger(__name__)
_failure_log = RateLimitedLogger(logger, interval=60.0)

GIN_INDEXES = ("message_body_trgm_idx", "message_body_grams_idx")
# pg_try_advisory_xact_lock's key: one bigint, chosen once for this task (any fixed value that
# no other advisory lock of the application uses).
LOCK_KEY = 0x63686174_73726368  # "chatsrch"

# One statement: the lock is taken first and held to the end of its transaction; the merge (an
# InitPlan, run only when its CASE branch is reached) is skipped, NULL, when another session holds it.
_CLEAN_SQL = (
    "SELECT CASE WHEN pg_try_advisory_xact_lock(%(key)s) THEN (SELECT "
    "coalesce(sum(gin_clean_pending_list(index_oid)), 0)::bigint FROM "
    "(SELECT to_regclass(name) AS index_oid FROM unnest(%(names)s::text[]) AS name) AS indexes "
    "WHERE index_oid IS NOT NULL) END"
)


class _Loop:
    """One event loop's count of stored characters and its merge task."""

    def __init__(self):
        self.chars = 0
        self.task: asyncio.Task | None = None
        self.disabled = False


_loops: dict = {}


def _state() -> _Loop:
    return loops.for_running_loop(_loops, _Loop)


def note_stored(chars: int) -> None:
    """Called on the event loop after a send's statement committed, with the length of its body
    (characters). Starts a merge (``clean``, in a task of its own) once this loop's sends since
    the last one reach ``SEARCH_INDEX_CLEAN_CHARS``, unless one is still running. Never raises."""
    try:
        every = settings.SEARCH_INDEX_CLEAN_CHARS
        if every <= 0:
            return
        state = _state()
        if state.disabled:
            return
        state.chars += chars
        if state.chars < every or (state.task is not None and not state.task.done()):
            return
        state.chars = 0
        # A context of its own: not the send's (its database deadline, its log context).
        task = asyncio.get_running_loop().create_task(_clean_logged(state), context=contextvars.Context())
        state.task = async_db.track(task)  # cancelled by async_db.aclose() before the pool closes
    except Exception:  # the send is stored and broadcast: nothing here may turn it into an error
        _failure_log.warning("note", "search index upkeep could not be started", exc_info=True)


async def clean() -> int | None:
    """Merge the pending lists of ``GIN_INDEXES`` into their indexes now, in one statement on a
    connection of the loop's pool, in a transaction of its own whose time limit is
    ``SEARCH_INDEX_CLEAN_TIMEOUT`` seconds (``SET LOCAL statement_timeout``, and the same for the
    client's wait: ``chatsite.dbconn.statement_limit``), not ``DATABASE_STATEMENT_TIMEOUT``: on a
    table of 10,000,000 messages a merge of 337 pending pages took 1.5 s, the whole of a send's
    limit, and a merge cut short leaves a longer list for the next one (bench/RESULTS.md,
    session 23). Returns the number of pending-list pages merged, or None when another
    session holds the lock (it is merging them). An index that does not exist is left out (a
    benchmark drops and rebuilds them around its COPY). Raises ``psycopg.Error``
    (``InsufficientPrivilege`` when this role does not own the indexes, ``QueryCanceled`` past
    the limit) and ``psycopg_pool.PoolTimeout``."""
    limit = settings.SEARCH_INDEX_CLEAN_TIMEOUT  # > 0 (chatsite/settings.py)
    async with (await async_db.pool()).connection() as conn:
        with dbconn.statement_limit(limit):
            async with conn.transaction():
                await conn.execute(f"SET LOCAL statement_timeout = {int(limit * 1000)}")
                cursor = await conn.execute(_CLEAN_SQL, {"key": LOCK_KEY, "names": list(GIN_INDEXES)})
                (pages,) = await cursor.fetchone()
    return pages


async def _clean_logged(state: _Loop) -> None:
    try:
        pages = await clean()
    except asyncio.CancelledError:
        raise
    except psycopg.errors.InsufficientPrivilege:
        state.disabled = True
        metrics.SEARCH_INDEX_CLEANUPS.labels(outcome="failed").inc()
        logger.warning(
            "search index upkeep turned off: this role may not merge the GIN pending lists of %s "
            "(it does not own them); sends will merge them when they fill up",
            ", ".join(GIN_INDEXES),
        )
        return
    except Exception:  # the database restarting, the pool closing: the next count tries again
        metrics.SEARCH_INDEX_CLEANUPS.labels(outcome="failed").inc()
        _failure_log.warning("clean", "search index upkeep failed; retried later", exc_info=True)
        return
    metrics.SEARCH_INDEX_CLEANUPS.labels(outcome="skipped" if pages is None else "cleaned").inc()
