"""Who is online in a room, across all nodes.

Channel-layer groups cannot be listed, so presence has its own store: with Redis, two sorted
sets per room (every node sees the same), without it a dict in this process (one node).

- ``<prefix>:presence:<room id>:users``: member ``user id``, score = when that user's newest
  connection expires (Unix seconds). Online = score in the future; a user with two tabs is one
  member, so counts once.
- ``<prefix>:presence:<room id>:u:<user id>``: that user's connections (``conn`` = the socket's
  channel name), score = expiry.
- ``<prefix>:presence:<room id>:names``: user id → username, for the online list.
- ``<prefix>:presence:<room id>:byname``: the same users in name order (score 0, member
  ``username NUL user id``), so a page of the online list is one ``ZRANGEBYLEX`` from a cursor:
  O(log n + page), never O(room). An entry whose user has expired but is not yet swept is
  skipped by the page script (checked against ``users``) and removed by the sweep.

Each connection expires ``PRESENCE_TTL`` seconds (default 30) after its last heartbeat; every
node refreshes its own connections every ``PRESENCE_HEARTBEAT`` seconds (default 10) and sweeps
the rooms it has members in, announcing users whose last connection expired. So a node that dies
takes its users offline within TTL + heartbeat (40 s by default) without any call from it; each
expired user is announced once, by whichever node removed it (the removal is one Lua script).

A page of the online list (``page``; ``join`` returns the first one) is ``(count, members,
next)``: ``count`` the users online now (``ZCOUNT``, O(log n)), ``members`` at most ``limit``
``{"id", "username"}`` in name order (codepoint order of the username, then the id's digits),
``next`` the cursor after the last (an opaque string: ``username NUL id``) or None when there is
no more. ``PRESENCE_NAMES`` (default 50) is how many a join and a diff carry.

The async functions are called by ``rooms.consumers.RoomConsumer``; ``online_now`` (sync) by the
REST view. Every function raises ``redis.exceptions.RedisError`` / ``OSError`` when Redis cannot be
reached (``TimeoutError``, an ``OSError``, when no answer came within ``CALL_TIMEOUT``); callers
treat presence as best effort (chat goes on without it). A socket's join and leave and a
``presence.list`` page go out batched with the node's other sockets' commands
(``chatsite.redis_batch``: one pipeline per round trip), so a join storm or a mass disconnect
is a few round trips on one connection; the heartbeat's refresh and sweeps, one script per tick,
use the loop client directly.
"""

import asyncio
import logging
import time
import typing

from django.conf import settings

from chatsite import redis_batch
from chatsite.redis_config import CONNECT_TIMEOUT

logger = logging.getLogger(__name__)

# Lua scripts: each runs atomically in Redis, so concurrent nodes agree on joins and leaves.
# ``_NAMED`` keeps the name-ordered set in step with ``names`` (a renamed user's old entry goes).
_NAMED = """
local function named(names, byname, uid, name)
  local old = redis.call('HGET', names, uid)
  if old and old ~= name then redis.call('ZREM', byname, old .. '\\0' .. uid) end
  redis.call('HSET', names, uid, name)
  redis.call('ZADD', byname, 0, name .. '\\0' .. uid)
end
local function unnamed(names, byname, uid)
  local old = redis.call('HGET', names, uid)
  if old then redis.call('ZREM', byname, old .. '\\0' .. uid) end
end
"""
# A page: ``{count, next or '', key, key, ...}`` (keys ``username NUL id``), online users only.
# Scans at most 4 × limit + 100 entries (expired ones not yet swept are skipped), so a call is
# bounded whatever the room's size; ``next`` then lets the client go on.
_PAGE = """
local function page(users, byname, now, after, limit, vkey)
  local count = redis.call('ZCOUNT', users, '(' .. now, '+inf')
  local version = redis.call('INCR', vkey)
  redis.call('EXPIRE', vkey, 86400)
  local out, start, scanned, budget = {}, '-', 0, limit * 4 + 100
  if after ~= '' then start = '(' .. after end
  local last = nil
  while #out < limit and scanned < budget do
    local batch = redis.call('ZRANGEBYLEX', byname, start, '+', 'LIMIT', 0, limit - #out)
    if #batch == 0 then break end
    for _, key in ipairs(batch) do
      local uid = string.match(key, '%z(%d+)$')
      local score = uid and redis.call('ZSCORE', users, uid)
      if score and tonumber(score) > now then table.insert(out, key) end
    end
    scanned = scanned + #batch
    last = batch[#batch]
    start = '(' .. last
  end
  local nxt = ''
  if last and #redis.call('ZRANGEBYLEX', byname, '(' .. last, '+', 'LIMIT', 0, 1) > 0 then nxt = last end
  local result = {count, nxt, version}
  for _, key in ipairs(out) do table.insert(result, key) end
  return result
end
"""
_JOIN = (
    _NAMED
    + _PAGE
    + """
local users, conns, names, byname = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local uid, conn, exp, now, name = ARGV[1], ARGV[2], tonumber(ARGV[3]), tonumber(ARGV[4]), ARGV[5]
local was = redis.call('ZSCORE', users, uid)
redis.call('ZADD', conns, exp, conn)
redis.call('ZADD', users, 'GT', exp, uid)
named(names, byname, uid, name)
local result = page(users, byname, now, '', tonumber(ARGV[6]), KEYS[5])
if (not was) or tonumber(was) <= now then table.insert(result, 1, 1) else table.insert(result, 1, 0) end
return result
"""
)
_PAGE_ONLY = (
    _PAGE
    + """
return page(KEYS[1], KEYS[2], tonumber(ARGV[1]), ARGV[2], tonumber(ARGV[3]), KEYS[3])
"""
)
_LEAVE = (
    _NAMED
    + """
local users, conns, names, byname = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local uid, conn, now = ARGV[1], ARGV[2], tonumber(ARGV[3])
redis.call('ZREM', conns, conn)
redis.call('ZREMRANGEBYSCORE', conns, '-inf', now)
if redis.call('ZCARD', conns) == 0 then
  redis.call('DEL', conns)
  unnamed(names, byname, uid)
  return redis.call('ZREM', users, uid)
end
return 0
"""
)
_REFRESH = (
    _NAMED
    + """
local now, exp = tonumber(ARGV[1]), tonumber(ARGV[2])
local back = {}
for i = 1, #KEYS, 4 do
  local users, conns, names, byname = KEYS[i], KEYS[i + 1], KEYS[i + 2], KEYS[i + 3]
  local j = (i - 1) / 4 * 3 + 3
  local uid, conn, name = ARGV[j], ARGV[j + 1], ARGV[j + 2]
  local was = redis.call('ZSCORE', users, uid)
  redis.call('ZADD', conns, exp, conn)
  redis.call('ZADD', users, 'GT', exp, uid)
  if name ~= '' then named(names, byname, uid, name) end
  if (not was) or tonumber(was) <= now then table.insert(back, (i - 1) / 4) end
end
return back
"""
)
_SWEEP = (
    _NAMED
    + """
local users, names, byname, now = KEYS[1], KEYS[2], KEYS[3], tonumber(ARGV[1])
local expired = redis.call('ZRANGEBYSCORE', users, '-inf', now)
local gone = {}
for _, uid in ipairs(expired) do
  if redis.call('ZREM', users, uid) == 1 then
    table.insert(gone, uid)
    unnamed(names, byname, uid)
  end
end
return gone
"""
)

# Which of ARGV[2..] are online, how many are, and the room's presence version, read at once.
_AMONG = """
local users, vkey, now = KEYS[1], KEYS[2], tonumber(ARGV[1])
local online = {}
for i = 2, #ARGV do
  local score = redis.call('ZSCORE', users, ARGV[i])
  if score and tonumber(score) > now then table.insert(online, ARGV[i]) end
end
local version = redis.call('INCR', vkey)
redis.call('EXPIRE', vkey, 86400)
return {redis.call('ZCOUNT', users, '(' .. now, '+inf'), version, online}
"""

_JOIN_SCRIPT, _PAGE_SCRIPT, _LEAVE_SCRIPT, _AMONG_SCRIPT = (
    redis_batch.Script(s) for s in (_JOIN, _PAGE_ONLY, _LEAVE, _AMONG)
)
# Seconds a batched join, leave or page waits for its answer, the round trip in flight before
# it included (chatsite.redis_batch): the 2 s each of these had as its own connection's timeout.
CALL_TIMEOUT = CONNECT_TIMEOUT


def ttl() -> float:
    return float(getattr(settings, "PRESENCE_TTL", 30))


def heartbeat() -> float:
    return float(getattr(settings, "PRESENCE_HEARTBEAT", 10))


def names_limit() -> int:
    """``PRESENCE_NAMES`` (default 50): the most names a ``presence`` frame on join and a
    ``presence.diff`` carry. Why 50: a sidebar list a person reads at a glance is a few dozen
    names, and 50 names of up to 150 characters keep each such frame a few KB, so a join storm
    into a room of S costs O(S) presence bytes per socket-second, not O(S) per frame."""
    return int(getattr(settings, "PRESENCE_NAMES", 50))


CURSOR_MAX = 400
"""Characters of a presence page cursor (``next``/``after``): a username (150) and an id, with room."""


def page_max() -> int:
    """``PRESENCE_PAGE_MAX`` (default 200): the most names one ``presence.list`` answer carries."""
    return int(getattr(settings, "PRESENCE_PAGE_MAX", 200))


def _keys(room_id: int, user_id: int | None = None) -> tuple[str, ...]:
    """``(users, conns, names, byname)`` keys of ``room_id`` (``conns`` None without a user)."""
    base = f"{settings.CHANNEL_LAYER_PREFIX}:presence:{int(room_id)}"
    conns = f"{base}:u:{int(user_id)}" if user_id is not None else None
    return f"{base}:users", conns, f"{base}:names", f"{base}:byname"


def _text(value) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _version_key(room_id: int) -> str:
    """The room's presence version: a counter every read of the online state increments
    (``page``, ``online_among``), so that the reads of all nodes are ordered (see ``Page``)."""
    return f"{settings.CHANNEL_LAYER_PREFIX}:presence:{int(room_id)}:v"


class Page(typing.NamedTuple):
    """A page of a room's online list: ``count`` users online, ``members`` (``{"id",
    "username"}``, in name order), ``next`` (the cursor of the following page, or None) and
    ``v``, the room's presence version when it was read.

    Why ``v``: each node reads the online state when it sends a frame (a page, a diff), and the
    frames of two nodes reach a socket in any order, so a state read earlier could arrive later
    and undo a newer one (seen: a page showing two names under "Online (1)"). Every read
    increments the room's counter in the same script, so ``v`` orders the reads of all nodes;
    the page (static/rooms/room/roster.js) keeps, per user and for the count, the state of the
    highest ``v`` it has seen."""

    count: int
    members: list[dict]
    next: str | None
    v: int


def _page_result(raw) -> Page:
    """``{count, next or '', version, key, ...}`` from the page script → a ``Page``."""
    count, nxt, version, keys = int(raw[0]), _text(raw[1]), int(raw[2]), raw[3:]
    members = []
    for key in keys:
        name, _, uid = _text(key).rpartition("\0")
        members.append({"id": int(uid), "username": name})
    return Page(count, members, (nxt or None), version)


_shas: dict[str, str] = {}


async def _script(client, script: str, numkeys: int, *args):
    """Run a Lua script by its SHA1 (``EVALSHA``: the text crosses the wire once per Redis
    server, not on every join), loading it when Redis does not know it yet."""
    from redis.exceptions import NoScriptError

    sha = _shas.get(script)
    if sha is not None:
        try:
            return await client.evalsha(sha, numkeys, *args)
        except NoScriptError:
            pass
    _shas[script] = await client.script_load(script)
    return await client.evalsha(_shas[script], numkeys, *args)


class RedisStore:
    """Presence in Redis (``settings.REDIS``: the same host or Sentinel master as the cache)."""

    def _client(self):
        from chatsite.redis_config import loop_client

        return loop_client()

    async def join(
        self, room_id: int, user_id: int, username: str, conn: str, limit: int = 0
    ) -> tuple[bool, tuple[int, list[dict], str | None]]:
        """Record ``conn`` of ``user_id`` online in ``room_id``; returns ``(came_online, page)``:
        whether the user was offline before, and the first page of the online list (at most
        ``limit`` names; see the module's docstring). One script: O(log n + limit)."""
        now = time.time()
        raw = await redis_batch.batch().script(
            _JOIN_SCRIPT,
            [*_keys(room_id, user_id), _version_key(room_id)],
            [user_id, conn, now + ttl(), now, username, limit],
            timeout=CALL_TIMEOUT,
        )
        return bool(int(raw[0])), _page_result(raw[1:])

    async def page(self, room_id: int, after: str | None, limit: int) -> tuple[int, list[dict], str | None]:
        """A page of the online list of ``room_id``: ``(count, members, next)`` after the cursor
        ``after`` (None: from the start). One script: O(log n + limit)."""
        users, _, _, byname = _keys(room_id)
        raw = await redis_batch.batch().script(
            _PAGE_SCRIPT,
            [users, byname, _version_key(room_id)],
            [time.time(), after or "", limit],
            timeout=CALL_TIMEOUT,
        )
        return _page_result(raw)

    async def leave(self, room_id: int, user_id: int, conn: str) -> bool:
        """Remove ``conn`` of ``user_id`` from ``room_id``; whether that was the user's last
        connection there (then they are offline). One script."""
        return bool(
            await redis_batch.batch().script(
                _LEAVE_SCRIPT, _keys(room_id, user_id), [user_id, conn, time.time()], timeout=CALL_TIMEOUT
            )
        )

    async def refresh(self, entries: list[tuple[int, int, str, str]]) -> list[int]:
        """Extend ``(room id, user id, conn, username)`` connections by the TTL (one script);
        returns the indexes of the entries whose user was not online before: the store had lost
        them (a Redis restarted empty, a TTL run out while this node was stalled)."""
        if not entries:
            return []
        now = time.time()
        keys, args = [], [now, now + ttl()]
        for room_id, user_id, conn, username in entries:
            keys.extend(_keys(room_id, user_id))
            args.extend([user_id, conn, username])
        return [int(i) for i in await _script(self._client(), _REFRESH, len(keys), *keys, *args)]

    async def sweep(self, room_id: int) -> list[int]:
        users, _, names, byname = _keys(room_id)
        gone = await _script(self._client(), _SWEEP, 3, users, names, byname, time.time())
        return [int(uid) for uid in gone]

    async def named(self, room_id: int, ids: list[int]) -> list[dict]:
        _, _, names, _ = _keys(room_id)
        return _with_names(ids, await self._client().hmget(names, ids) if ids else [])

    async def online_among(self, room_id: int, ids: list[int]) -> tuple[set[int], int, int]:
        """Which of ``ids`` are online in ``room_id`` now, how many users are online in all, and
        the room's presence version (``Page``), read at once (one script, O(len(ids) + log n))."""
        users, _, _, _ = _keys(room_id)
        count, version, online = await redis_batch.batch().script(
            _AMONG_SCRIPT, [users, _version_key(room_id)], [time.time(), *ids], timeout=CALL_TIMEOUT
        )
        return {int(uid) for uid in online}, int(count), int(version)

    def page_now(self, room_id: int, after: str | None, limit: int) -> tuple[int, list[dict], str | None]:
        """Sync, for views: ``page`` (the same script, O(log n + limit)) with a short-lived
        client. Raises redis-py's ``RedisError`` when Redis cannot be reached (2 s)."""
        users, _, _, byname = _keys(room_id)
        _, client = settings.REDIS.sync_clients(timeout=2)[0]
        try:
            return _page_result(
                client.eval(
                    _PAGE_ONLY, 3, users, byname, _version_key(room_id), time.time(), after or "", limit
                )
            )
        finally:
            client.close()

    def online_now(self, room_id: int) -> list[dict]:
        """Sync, for views: the online list, read with a short-lived client."""
        users, _, names, _ = _keys(room_id)
        _, client = settings.REDIS.sync_clients(timeout=2)[0]
        try:
            ids = client.zrangebyscore(users, time.time(), "+inf")
            return _with_names(ids, client.hmget(names, ids) if ids else [])
        finally:
            client.close()


class MemoryStore:
    """Presence in this process (the in-memory layer: one node)."""

    def __init__(self):
        self.conns: dict[tuple[int, int], dict[str, float]] = {}  # (room, user) → conn → expiry
        self.names: dict[int, str] = {}
        self.versions: dict[int, int] = {}  # room → presence version (``Page``)

    def _version(self, room_id: int) -> int:
        self.versions[room_id] = self.versions.get(room_id, 0) + 1
        return self.versions[room_id]

    def _live(self, room_id: int, user_id: int, now: float) -> dict[str, float]:
        conns = self.conns.get((room_id, user_id), {})
        for conn in [c for c, exp in conns.items() if exp <= now]:
            del conns[conn]
        return conns

    async def join(self, room_id, user_id, username, conn, limit=0):
        now = time.time()
        conns = self._live(room_id, user_id, now)
        was_online = bool(conns)
        self.conns.setdefault((room_id, user_id), conns)[conn] = now + ttl()
        self.names[user_id] = username
        return not was_online, await self.page(room_id, None, limit)

    async def page(self, room_id, after, limit):
        return self.page_now(room_id, after, limit)

    def page_now(self, room_id, after, limit):
        members = self.online_now(room_id)
        keys = [member_key(m) for m in members]
        start = 0 if after is None else next((i for i, k in enumerate(keys) if k > after), len(keys))
        chosen = members[start : start + limit]
        more = start + limit < len(members)
        return Page(
            len(members),
            chosen,
            (keys[start + limit - 1] if more and chosen else None),
            self._version(room_id),
        )

    async def leave(self, room_id, user_id, conn) -> bool:
        conns = self._live(room_id, user_id, time.time())
        if conns.pop(conn, None) is None:
            return False
        if not conns:
            self.conns.pop((room_id, user_id), None)
            return True
        return False

    async def refresh(self, entries) -> list[int]:
        now = time.time()
        back = []
        for i, (room_id, user_id, conn, username) in enumerate(entries):
            if not self._live(room_id, user_id, now):
                back.append(i)
            self.conns.setdefault((room_id, user_id), {})[conn] = now + ttl()
            if username:
                self.names[user_id] = username
        return back

    async def sweep(self, room_id) -> list[int]:
        now, gone = time.time(), []
        for r, user_id in [k for k in self.conns if k[0] == room_id]:
            if not self._live(r, user_id, now):
                del self.conns[(r, user_id)]
                gone.append(user_id)
        return gone

    async def named(self, room_id, ids) -> list[dict]:
        return _with_names(ids, [self.names.get(u, "") for u in ids])

    async def online_among(self, room_id, ids) -> tuple[set[int], int, int]:
        now = time.time()
        online = {u for u in ids if self._live(room_id, u, now)}
        return online, len(self.online_now(room_id)), self._version(room_id)

    def online_now(self, room_id) -> list[dict]:
        now = time.time()
        ids = [u for (r, u) in list(self.conns) if r == room_id and self._live(r, u, now)]
        return sorted(
            ({"id": u, "username": self.names.get(u, "")} for u in ids),
            key=member_key,
        )


def _with_names(ids, names) -> list[dict]:
    members = [
        {"id": int(uid), "username": (name.decode() if isinstance(name, bytes) else name) or ""}
        for uid, name in zip(ids, names)
    ]
    return sorted(members, key=lambda m: m["username"])


_store = None


def store():
    """The presence store of this process: Redis when ``settings.REDIS`` is set, else memory."""
    global _store
    if _store is None:
        _store = RedisStore() if getattr(settings, "REDIS", None) else MemoryStore()
    return _store


# --- announcing changes: batched, so a join storm is not joins × members frames ------------------


class Announcer:
    """Collects this process's presence changes per room and sends them as one ``presence.diff``
    per room every ``PRESENCE_BATCH`` seconds (default 1): 1,000 members joining within a second
    cost one diff per socket, not 1,000. Diffs are idempotent set changes; a socket may see its
    own user among the joins, and a user it already shows.

    A batch says where each user it touched stands when it goes out, read from the store (one
    ``ZMSCORE`` per room): online, among the joins; gone, among the leaves; whatever the changes
    that put them in the batch were. Each node batches on its own timer, so one user's changes
    (a reload that lands on another node, a tab opened on one node and closed before that node's
    batch) are spread over the batches of several nodes, which arrive in any order. Announcing
    the changes themselves made such a user blink offline, or stay shown offline while connected,
    or (with leave and join cancelling out within one batch) stay shown online after they had
    gone; announcing the state, each node's last batch for a user says the truth. If the store
    cannot be read, each user's last change goes out instead.

    Bounded: a diff names at most ``PRESENCE_NAMES`` joins and as many leaves, and in a room with
    more users online than that, only those whose name falls in the first ``PRESENCE_NAMES`` of
    the online list (what a page shows without "show all"; one page read per batch). It carries
    ``count`` (users online) and ``partial: true`` when it left some change unnamed. A diff that
    would name nobody (only the count changed, in a room over ``PRESENCE_NAMES``) goes out at
    most once per ``COUNT_EVERY`` (5) seconds per room from each node, the last count always
    (held back, then sent). So a join storm into a room of S costs each socket a few small diffs
    (one per node per 5 s, and one per second only while the first names change), not the S
    names, and its bytes grow with S, not S squared."""

    def __init__(self):
        self.pending: dict[int, dict[int, tuple[dict, bool]]] = {}  # room → user id → (user, joined)
        self.task = None
        self.quiet_until: dict[int, float] = {}  # room → loop time before which no count-only diff
        self.count_due: set[int] = set()  # rooms whose count-only diff waits for quiet_until

    def add(self, room_id: int, *, joins=(), leaves=()) -> None:
        changes = self.pending.setdefault(room_id, {})
        for user in joins:
            changes[user["id"]] = (user, True)
        for user in leaves:
            changes[user["id"]] = (user, False)
        if self.task is None or self.task.done():
            self.task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        from . import events

        loop = asyncio.get_running_loop()
        while self.pending or self.count_due:
            await asyncio.sleep(batch())
            pending, self.pending = self.pending, {}
            now = loop.time()
            for room_id in list(self.count_due):  # a count held back is sent once it may be
                if room_id not in pending and now >= self.quiet_until.get(room_id, 0):
                    pending[room_id] = {}
            for room_id, quiet in list(self.quiet_until.items()):
                if quiet < now and room_id not in self.count_due:
                    del self.quiet_until[room_id]
            for room_id, changes in pending.items():
                count, edge, version = None, None, None
                try:
                    online, count, version = await store().online_among(room_id, list(changes))
                    states = [(user, uid in online) for uid, (user, _) in changes.items()]
                    if count > names_limit():  # only the first page's names are worth sending
                        first = (await store().page(room_id, None, names_limit())).members
                        edge = member_key(first[-1]) if first else ""
                except Exception:  # the store is out of reach: each user's last change
                    logger.warning("presence batch for room %s not checked", room_id, exc_info=True)
                    states = list(changes.values())
                joins = [user for user, is_online in states if is_online]
                leaves = [user for user, is_online in states if not is_online]
                if not (joins or leaves or room_id in self.count_due):
                    continue
                named_joins, named_leaves = _bounded(joins, edge), _bounded(leaves, edge)
                partial = len(named_joins) < len(joins) or len(named_leaves) < len(leaves)
                if not (named_joins or named_leaves) and count is not None and count > names_limit():
                    # Only the count changed: at most one such diff per COUNT_EVERY seconds.
                    if now < self.quiet_until.get(room_id, 0):
                        self.count_due.add(room_id)
                        continue
                    self.quiet_until[room_id] = now + COUNT_EVERY
                    partial = True
                self.count_due.discard(room_id)
                try:
                    await events.presence_changed(
                        room_id=room_id,
                        joins=named_joins,
                        leaves=named_leaves,
                        count=count,
                        partial=partial,
                        v=version,
                    )
                except Exception:
                    logger.warning("presence diff for room %s not sent", room_id, exc_info=True)


COUNT_EVERY = 5.0  # seconds between two diffs of a large room that would carry only its count


def member_key(user: dict) -> str:
    """Where ``user`` (``{"id", "username"}``) sorts in the online list: ``username NUL id``,
    the ``byname`` member and the ``presence.list`` cursor."""
    return f"{user['username']}\0{user['id']}"


def _bounded(users: list[dict], edge: str | None) -> list[dict]:
    """The users a diff names: those sorting up to ``edge`` (None: all), the first
    ``PRESENCE_NAMES`` of them in list order."""
    keyed = sorted((member_key(u), u) for u in users if edge is None or member_key(u) <= edge)
    return [u for _, u in keyed[: names_limit()]]


def batch() -> float:
    return float(getattr(settings, "PRESENCE_BATCH", 1.0))


_announcers = {}


def announce(room_id: int, *, joins=(), leaves=()) -> None:
    """Queue a presence change of ``room_id`` for the next batch (see ``Announcer``)."""
    loop = asyncio.get_running_loop()
    announcer = _announcers.get(loop)
    if announcer is None:
        announcer = _announcers[loop] = Announcer()
    announcer.add(room_id, joins=joins, leaves=leaves)


# --- the heartbeat: one task per process for all of its sockets ------------------------------------


class Heartbeat:
    """Keeps this process's connections alive in the store and sweeps the rooms it has members
    in, announcing users whose last connection expired (a dead node's users) and users the
    store had lost and this refresh put back (a Redis restarted empty): after one heartbeat
    everyone sees everyone online again."""

    def __init__(self):
        self.entries: dict[str, tuple[int, int, str]] = {}  # conn → (room id, user id, username)
        self.task = None

    def add(self, conn: str, room_id: int, user_id: int, username: str = "") -> None:
        self.entries[conn] = (room_id, user_id, username)
        if self.task is None or self.task.done():
            self.task = asyncio.get_running_loop().create_task(self._run())

    def discard(self, conn: str) -> None:
        self.entries.pop(conn, None)

    async def _run(self) -> None:
        while self.entries:
            await asyncio.sleep(heartbeat())
            if not self.entries:
                break
            try:
                await self.beat()
            except Exception:
                logger.warning("presence heartbeat failed; retrying in %s s", heartbeat(), exc_info=True)

    async def beat(self) -> None:
        """One heartbeat: refresh this process's connections (announcing users the store had
        lost), then sweep their rooms (announcing users whose last connection expired). Store
        errors propagate."""
        entries = [
            (room_id, user_id, conn, name) for conn, (room_id, user_id, name) in list(self.entries.items())
        ]
        for i in await store().refresh(entries):
            room_id, user_id, _, name = entries[i]
            announce(room_id, joins=[{"id": user_id, "username": name}])
        for room_id in {room_id for room_id, _, _, _ in entries}:
            gone = await store().sweep(room_id)
            if gone:
                announce(room_id, leaves=await store().named(room_id, gone))


_heartbeats = {}


def heartbeat_for_loop() -> Heartbeat:
    loop = asyncio.get_running_loop()
    beat = _heartbeats.get(loop)
    if beat is None:
        beat = _heartbeats[loop] = Heartbeat()
    return beat
