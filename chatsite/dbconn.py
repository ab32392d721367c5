"""psycopg connection classes for both of a node's pools (Django's and ``chatsite.async_db``'s):
every wait for PostgreSQL has a client-side time limit, and a dead connection empties its pool.

Why a client-side limit: PostgreSQL's own ``statement_timeout`` (``DATABASE_STATEMENT_TIMEOUT``,
set on every connection made here) ends a slow statement, but it cannot answer
when the server is gone silent (hung, or the connection silently dropped on the way: a NAT or a
balancer that forgot it). TCP keepalive and ``tcp_user_timeout`` do not help either while
something on the path still acknowledges the bytes (measured through ``tests.nodes.TcpProxy``'s
blackhole with keepalives every second and ``tcp_user_timeout=1000``: a ``SELECT 1`` was still
waiting after 8 s; bench/RESULTS.md). So every round trip a connection makes (a statement, a
commit, a rollback, the pool's reset) waits at most ``DATABASE_STATEMENT_TIMEOUT`` + 0.25 s
(``client_timeout``); past that the connection is closed (its protocol state is unknown) and
``psycopg.OperationalError`` is raised, which callers answer as ``unavailable``. Under daphne this
matters twice: Django's ORM runs on ONE shared thread per process, so a wait without a bound there
would stall every socket of the node.

Why empty the pool: after PostgreSQL restarts or its backends are terminated, every idle pooled
connection is dead, and each would fail the next statement given to it. When a connection turns
out dead (closed by the server, or silent past the limit), its pool is drained at once (idle
connections closed and replaced, the ones in use closed when returned; ``psycopg_pool``'s
``drain``), so a node fails at most the statements already under way, and a caller that retries
once (``connection_lost``) gets a fresh connection. A pool is drained once per event: a
connection made after the last drain drains it again, an older one does not.
"""

import contextlib
import contextvars
import logging
import time

import psycopg
from django.conf import settings
from psycopg import errors as pg_errors
from psycopg.pq import ConnStatus

logger = logging.getLogger("chatsite.db")

# Margin of the client-side limit over the server's statement_timeout, so that a statement that
# is merely slow is cancelled by the server (the connection stays usable) before we give up on it.
CLIENT_MARGIN = 0.25

_WaitTimeout = getattr(pg_errors, "_WaitTimeout", None) or pg_errors.OperationalError

# An absolute time.monotonic() deadline for the waits of the current task (async_db.deadline):
# a send's whole database step, pool wait and retry included, stays inside one budget.
_deadline: contextvars.ContextVar[float | None] = contextvars.ContextVar("chatsite_db_deadline", default=None)


def client_timeout() -> float | None:
    """Seconds one round trip may wait: ``DATABASE_STATEMENT_TIMEOUT`` + ``CLIENT_MARGIN``, or
    None (no limit) when ``DATABASE_STATEMENT_TIMEOUT`` is 0."""
    statement = getattr(settings, "DATABASE_STATEMENT_TIMEOUT", 0) or 0
    return statement + CLIENT_MARGIN if statement > 0 else None


# A limit of the current task's own for its round trips (``statement_limit``), in place of
# ``client_timeout()``.
_own_limit: contextvars.ContextVar[float | None] = contextvars.ContextVar(
    "chatsite_db_own_limit", default=None
)


@contextlib.contextmanager
def statement_limit(seconds: float):
    """Within this block the current task's round trips wait up to ``seconds`` (> 0) +
    ``CLIENT_MARGIN`` instead of ``client_timeout()``: for a statement the caller runs under
    ``SET LOCAL statement_timeout`` of the same ``seconds``, off any request's path
    (``rooms.search_index.clean``). A ``deadline`` still shortens it."""
    token = _own_limit.set(seconds + CLIENT_MARGIN)
    try:
        yield
    finally:
        _own_limit.reset(token)


def _timeout(given: float | None) -> float | None:
    own = _own_limit.get()
    timeout = given if given is not None else (client_timeout() if own is None else own)
    deadline = _deadline.get()
    if deadline is not None:
        left = max(deadline - time.monotonic(), 0.001)
        timeout = left if timeout is None else min(timeout, left)
    return timeout


def _with_statement_timeout(kwargs: dict) -> dict:
    """Connection parameters plus ``-c statement_timeout=<ms>`` in libpq's ``options``."""
    statement = getattr(settings, "DATABASE_STATEMENT_TIMEOUT", 0) or 0
    if statement > 0:
        setting = f"-c statement_timeout={int(statement * 1000)}"
        kwargs = {**kwargs, "options": f"{kwargs['options']} {setting}" if kwargs.get("options") else setting}
    return kwargs


def connection_lost(exc: BaseException | None) -> bool:
    """Whether ``exc`` (a psycopg error, or Django's wrapping of one) came from a connection found
    dead at once (closed by the server: a restart, ``pg_terminate_backend``), so that trying again
    on a fresh connection is worth it. False for a wait past the limit: that already took the time."""
    seen = 0
    while exc is not None and seen < 5:
        if getattr(exc, "chatsite_connection_lost", False):
            return True
        exc, seen = exc.__cause__ or exc.__context__, seen + 1
    return False


def timed_out(exc: BaseException | None) -> bool:
    """Whether ``exc`` (or what it wraps) is a round trip given up after ``client_timeout()``."""
    seen = 0
    while exc is not None and seen < 5:
        if getattr(exc, "chatsite_timed_out", False):
            return True
        exc, seen = exc.__cause__ or exc.__context__, seen + 1
    return False


def _drain_needed(conn) -> object | None:
    """The pool ``conn`` came from, if it should be drained now (see the module docstring)."""
    pool = getattr(conn, "_pool", None)
    if pool is None or not hasattr(pool, "drain"):
        return None
    if getattr(conn, "_created_at", 0.0) <= getattr(pool, "_drained_at", 0.0):
        return None  # drained since this connection was made: already handled
    return pool


def _dead(conn) -> bool:
    return conn.pgconn.status == ConnStatus.BAD


def _mark(exc: BaseException, timeout: float | None) -> BaseException:
    if isinstance(exc, _WaitTimeout):
        new = psycopg.OperationalError(f"no answer from PostgreSQL within {timeout:.2f} s: connection closed")
        new.chatsite_timed_out = True
        return new
    exc.chatsite_connection_lost = True
    return exc


class Connection(psycopg.Connection):
    """``psycopg.Connection`` with a time limit on every wait (Django's pool: ``connection_class``
    in ``DATABASES["default"]["OPTIONS"]["pool"]``)."""

    @classmethod
    def connect(cls, conninfo: str = "", **kwargs):
        return super().connect(conninfo, **_with_statement_timeout(kwargs))

    def wait(self, gen, interval: float = 0.1, timeout: float | None = None):
        timeout = _timeout(timeout)
        try:
            return super().wait(gen, interval=interval, timeout=timeout)
        except psycopg.OperationalError as exc:
            timed_out = isinstance(exc, _WaitTimeout)
            if not (timed_out or _dead(self)):
                raise  # a statement error on a working connection (statement_timeout included)
            if timed_out:
                self.pgconn.finish()  # mid-protocol: it cannot be used again
            logger.warning("PostgreSQL connection %s: %s", "silent" if timed_out else "lost", exc)
            pool = _drain_needed(self)
            if pool is not None:
                pool.drain()
            new = _mark(exc, timeout)
            if new is exc:
                raise
            raise new from None


class AsyncConnection(psycopg.AsyncConnection):
    """``psycopg.AsyncConnection`` with the same limit (``chatsite.async_db``'s pool)."""

    @classmethod
    async def connect(cls, conninfo: str = "", **kwargs):
        return await super().connect(conninfo, **_with_statement_timeout(kwargs))

    async def wait(self, gen, interval: float = 0.1, timeout: float | None = None):
        timeout = _timeout(timeout)
        try:
            return await super().wait(gen, interval=interval, timeout=timeout)
        except psycopg.OperationalError as exc:
            timed_out = isinstance(exc, _WaitTimeout)
            if not (timed_out or _dead(self)):
                raise
            if timed_out:
                self.pgconn.finish()
            logger.warning("PostgreSQL connection %s: %s", "silent" if timed_out else "lost", exc)
            pool = _drain_needed(self)
            if pool is not None:
                await pool.drain()
            new = _mark(exc, timeout)
            if new is exc:
                raise
            raise new from None
