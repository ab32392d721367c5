"""Who may still read a room: the check behind every read of an open socket.

A socket is allowed in at the handshake (``rooms.entry``); afterwards access can end in
many ways: the user deactivated or deleted, their API token revoked, the session the socket was
opened with ended (logged out, expired, deleted) or no longer valid (the user's password changed
since: Django's session auth hash), their membership deleted or banned, the room made private
or deleted. Each is checked again, from the database, by:

- every ``fetch`` and ``resume`` frame and ``?after_seq``, in the same database hop as the read
  (``reading=True``), so history never goes to a socket whose access has ended, even when the
  event below was lost;
- the consumer's handler of an access event (``room.access_changed``, ``user.access_changed``,
  ``user.sessions_changed``, ``room.member_removed`` reason ``removed``: ``rooms.events``),
  broadcast on commit by the services that end access, on every node;
- ``Watch``: every ``ACCESS_RECHECK`` seconds (default 10) each node checks all of its open
  sockets in one statement, which catches changes made behind the services' back (a
  ``User.objects.update(is_active=False)`` in a shell, a row deleted in psql): such a socket is
  closed at the latest ``ACCESS_RECHECK`` seconds (plus one statement) after the change.

Verdicts are ``rooms.services`` error codes, which the consumer maps to close codes:
``None`` (still allowed), ``"unauthenticated"`` (4401: user inactive or gone, token revoked, the
socket's session gone or expired, or its auth hash no longer the user's password's),
``"not_found"`` (4404: the room is gone, or private and the user no longer a member),
``"banned"`` (4403), ``"archived"`` (4410; only for open sockets, ``reading=False``: an
archived room's history stays readable).
"""

import asyncio
import hashlib
import logging
import weakref

from channels.db import database_sync_to_async
from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.sessions.models import Session
from django.db import connection
from django.utils import timezone
from django.utils.crypto import constant_time_compare, salted_hmac
from rest_framework.authtoken.models import Token

from .logutil import RateLimitedLogger
from .models import Membership, Room

logger = logging.getLogger(__name__)
watch_log = RateLimitedLogger(logger, interval=60.0)

# (room id, user id, API token key or None, session key or None, session auth hash or None): a
# token socket has a token and no session; a session socket its session's key and the auth hash
# stored in it (Django's ``_auth_user_hash``), which matched the user's password at the handshake.
Key = tuple[int, int, str | None, str | None, str | None]

# The session engines whose sessions are rows of django_session (checked in the one statement);
# with another engine each session socket's session is looked up through the engine.
DB_SESSION_ENGINES = (
    "chatsite.sessions",  # Django's db engine, checking the keys' shape
    "django.contrib.sessions.backends.db",
    "django.contrib.sessions.backends.cached_db",
)
_AUTH_HASH_SALT = "django.contrib.auth.models.AbstractBaseUser.get_session_auth_hash"


def session_digest(session_key: str | None) -> str | None:
    """A session key's SHA-256 (hex): how layer events name a session (``user.sessions_changed``)
    without the key itself, a credential, travelling through Redis."""
    return hashlib.sha256(session_key.encode()).hexdigest() if session_key else None


def _auth_hashes(password: str) -> list[str]:
    """The session auth hashes a user whose password (hash) is ``password`` may have in a
    session: Django's ``get_session_auth_hash`` under ``SECRET_KEY`` and each of
    ``SECRET_KEY_FALLBACKS`` (as ``django.contrib.auth.get_user`` accepts them)."""
    return [
        salted_hmac(_AUTH_HASH_SALT, password, secret=secret, algorithm="sha256").hexdigest()
        for secret in (settings.SECRET_KEY, *getattr(settings, "SECRET_KEY_FALLBACKS", ()))
    ]


def _hash_matches(password: str | None, session_hash: str | None, memo: dict) -> bool:
    """Whether ``session_hash`` (a session's ``_auth_user_hash``) is still an auth hash of a user
    whose password (hash) is ``password``. ``memo``: the hashes per password within one check
    (a user's sockets share them)."""
    if password is None or not session_hash:
        return False
    if password not in memo:
        memo[password] = _auth_hashes(password)
    return any(constant_time_compare(session_hash, expected) for expected in memo[password])


def _full(key: tuple) -> Key:
    return tuple(key) + (None,) * (5 - len(key))


def recheck_interval() -> float:
    """Seconds between two checks of every open socket of a node (``ACCESS_RECHECK``, at least
    0.5: a node must not spend its database thread on nothing else)."""
    return max(float(getattr(settings, "ACCESS_RECHECK", 10)), 0.5)


def _verdict(
    active, token_ok, room_found, private, archived, member, banned, session_ok=True, *, reading: bool
) -> str | None:
    if not active or not token_ok or not session_ok:
        return "unauthenticated"
    if not room_found:
        return "not_found"
    if banned:
        return "banned"
    if private and not member:
        return "not_found"
    if archived and not reading:
        return "archived"
    return None


def _sessions_in_table() -> bool:
    return settings.SESSION_ENGINE in DB_SESSION_ENGINES


def _sql(room_columns: tuple[str, ...] = ()) -> str:
    """The statement of ``_rows`` (and, with ``room_columns``, those columns of the room after
    the access columns: ``rooms.entry``)."""
    quote = connection.ops.quote_name
    extra = "".join(f", r.{quote(column)}" for column in room_columns)
    user_t, token_t = quote(get_user_model()._meta.db_table), quote(Token._meta.db_table)
    room_t, member_t = quote(Room._meta.db_table), quote(Membership._meta.db_table)
    # A session socket's session row must exist and not be expired (when sessions are rows).
    session = (
        f"EXISTS (SELECT 1 FROM {quote(Session._meta.db_table)} s WHERE s.session_key = v.session"
        " AND s.expire_date > %s)"
        if _sessions_in_table()
        else "TRUE"
    )
    return f"""
        SELECT u.is_active IS TRUE,
               v.token IS NULL OR EXISTS (SELECT 1 FROM {token_t} t WHERE t.key = v.token AND t.user_id = v.user_id),
               r.id IS NOT NULL, r.is_private IS TRUE, r.archived_at IS NOT NULL,
               m.id IS NOT NULL, m.banned_at IS NOT NULL, COALESCE(r.last_seq, 0),
               v.session IS NULL OR {session},
               CASE WHEN v.session IS NULL THEN NULL ELSE u.password END{extra}
        FROM unnest(%s::bigint[], %s::bigint[], %s::text[], %s::text[]) WITH ORDINALITY
             AS v(room_id, user_id, token, session, i)
        LEFT JOIN {user_t} u ON u.id = v.user_id
        LEFT JOIN {room_t} r ON r.id = v.room_id
        LEFT JOIN {member_t} m ON m.room_id = v.room_id AND m.user_id = v.user_id
        ORDER BY v.i
    """


def _judge(row: tuple, key: Key, *, reading: bool, memo: dict) -> str | None:
    """The verdict of one ``_rows`` row for ``key``: a session socket also needs its session
    (row 8) and its auth hash to match the user's password now (row 9)."""
    session_ok = key[3] is None or (bool(row[8]) and _hash_matches(row[9], key[4], memo))
    return _verdict(*row[:7], session_ok, reading=reading)


def verdicts(keys: list[Key], *, reading: bool = False) -> list[str | None]:
    """Sync: the verdict for each ``Key`` (a 3-tuple ``(room id, user id, token key or None)``
    is a socket without a session), in order. One statement on PostgreSQL whatever the number
    of keys; a few queries per key elsewhere (SQLite, development only). Database errors
    propagate."""
    keys, memo = [_full(key) for key in keys], {}
    return [_judge(row, key, reading=reading, memo=memo) for row, key in zip(_rows(keys), keys)]


def verdict_and_last_seq(key: Key) -> tuple[str | None, int]:
    """Sync, one statement: the verdict for one open socket (``reading=False``) and its room's
    ``last_seq`` (0 when the room is gone), for the ``hello`` of a socket now in its groups."""
    key = _full(key)
    row = _rows([key])[0]
    return _judge(row, key, reading=False, memo={}), row[7]


def _rows(keys: list[Key]) -> list[tuple]:
    if not keys:
        return []
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute(_sql(), _params(keys))
            rows = cursor.fetchall()
    else:
        rows = []
        for room_id, user_id, token, session, _ in keys:
            room = Room.objects.filter(pk=room_id).values("is_private", "archived_at", "last_seq").first()
            member = Membership.objects.filter(room_id=room_id, user_id=user_id).values("banned_at").first()
            user = get_user_model().objects.filter(pk=user_id).values("is_active", "password").first()
            rows.append(
                (
                    bool(user and user["is_active"]),
                    token is None or Token.objects.filter(key=token, user_id=user_id).exists(),
                    room is not None,
                    bool(room and room["is_private"]),
                    bool(room and room["archived_at"]),
                    member is not None,
                    bool(member and member["banned_at"]),
                    room["last_seq"] if room else 0,
                    session is None or _session_exists(session),
                    user["password"] if user and session else None,
                )
            )
    if not _sessions_in_table():  # another engine (cache, signed cookies): asked one by one
        rows = [
            row[:8] + (key[3] is None or _session_exists(key[3]),) + row[9:] for row, key in zip(rows, keys)
        ]
    return rows


def _params(keys: list[Key]) -> list:
    """``_sql``'s parameters for ``keys`` (PostgreSQL)."""
    params = [[k[0] for k in keys], [k[1] for k in keys], [k[2] for k in keys], [k[3] for k in keys]]
    if _sessions_in_table():
        params.insert(0, timezone.now())
    return params


async def rows_async(keys: list[Key], room_columns: tuple[str, ...] = ()) -> list[tuple]:
    """``_rows`` as one statement sent from the event loop (``chatsite.async_db``; PostgreSQL
    with sessions in the table or no session in ``keys``: the caller checks ``async_ready``),
    each row followed by the room's ``room_columns`` (None when there is no such room). Raises
    ``psycopg.Error`` / ``psycopg_pool.PoolTimeout``."""
    from chatsite import async_db

    if not keys:
        return []
    return await async_db.fetchall(_sql(room_columns), _params(keys))


def async_ready(key: Key) -> bool:
    """Whether ``rows_async`` can judge ``key``: PostgreSQL, and the session (if any) a row."""
    from chatsite import async_db

    return async_db.available() and (key[3] is None or _sessions_in_table())


def _session_exists(session_key: str) -> bool:
    from importlib import import_module

    return import_module(settings.SESSION_ENGINE).SessionStore().exists(session_key)


def verdict(
    *,
    room_id: int,
    user_id: int,
    token_key: str | None,
    session_key: str | None = None,
    session_hash: str | None = None,
    reading: bool = True,
) -> str | None:
    """Sync, one statement: the verdict for one socket (``reading``: for a read of its
    history, where an archived room is still allowed)."""
    return verdicts([(room_id, user_id, token_key, session_key, session_hash)], reading=reading)[0]


class Checker:
    """Access checks of this process's sockets, batched: every check asked for while the event
    loop runs one round (all sockets of a room on this node handling one ``room.access_changed``)
    is answered by one statement on the database thread, not one per socket."""

    def __init__(self):
        self.pending: list[tuple[Key, asyncio.Future]] = []
        self.task = None

    async def check(self, key: Key) -> str | None:
        """The verdict for ``key`` (``reading=False``); database errors are raised."""
        future = asyncio.get_running_loop().create_future()
        self.pending.append((key, future))
        if self.task is None or self.task.done():
            self.task = asyncio.get_running_loop().create_task(self._run())
        return await future

    async def _run(self) -> None:
        await asyncio.sleep(0)  # the other sockets handling the same event join this batch
        while self.pending:
            batch, self.pending = self.pending, []
            keys = list(dict.fromkeys(key for key, _ in batch))
            try:
                found = dict(zip(keys, await database_sync_to_async(verdicts)(keys)))
            except BaseException as exc:
                for _, future in batch:
                    if not future.done():
                        future.set_exception(exc)
                if isinstance(exc, asyncio.CancelledError):
                    raise
                continue
            for key, future in batch:
                if not future.done():
                    future.set_result(found[key])


class Watch:
    """The backstop: every ``recheck_interval()`` seconds, one statement checks every open
    socket of this process (``register``ed by the consumer once accepted) and closes those whose
    access ended (``consumer.access_checked(verdicts)``; a user socket drops the rooms it lost).
    When the database cannot be reached the sockets are left open (their reads are still
    checked) and the next round tries again."""

    def __init__(self):
        self.consumers: weakref.WeakSet = weakref.WeakSet()
        self.task = None

    def register(self, consumer) -> None:
        self.consumers.add(consumer)
        if self.task is None or self.task.done():
            self.task = asyncio.get_running_loop().create_task(self._run())

    def discard(self, consumer) -> None:
        self.consumers.discard(consumer)

    async def _run(self) -> None:
        while self.consumers:
            await asyncio.sleep(recheck_interval())
            try:
                await self.round()
            except Exception:
                watch_log.warning(
                    "round", "access recheck failed; sockets kept until the next round", exc_info=True
                )

    async def round(self) -> int:
        """One check of every registered socket; returns how many were closed. A socket gives
        its keys (``consumer.access_keys()``: one for a room socket, one per room and one for
        the user alone for a user socket) and is handed their verdicts in order
        (``consumer.access_checked(verdicts) -> bool``, True when it closed)."""
        consumers = [c for c in list(self.consumers) if not c.closing]
        keyed = [(c, c.access_keys()) for c in consumers]
        unique = list(dict.fromkeys(key for _, keys in keyed for key in keys))
        if not unique:
            return 0
        found = dict(zip(unique, await database_sync_to_async(verdicts)(unique)))
        closed = 0
        for consumer, keys in keyed:
            if consumer.closing or all(found[key] is None for key in keys):
                continue
            try:
                closed += bool(await consumer.access_checked([found[key] for key in keys]))
            except Exception:
                logger.exception("could not close a socket whose access ended")
        return closed


_checkers: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()
_watches: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()


def checker() -> Checker:
    """This event loop's ``Checker``."""
    loop = asyncio.get_running_loop()
    found = _checkers.get(loop)
    if found is None:
        found = _checkers[loop] = Checker()
    return found


def watch() -> Watch:
    """This event loop's ``Watch``."""
    loop = asyncio.get_running_loop()
    found = _watches.get(loop)
    if found is None:
        found = _watches[loop] = Watch()
    return found
