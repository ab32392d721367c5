"""Who is online in a room, across all nodes.

Channel-layer groups cannot be listed, so presence has its own store: with Redis, two sorted
sets per room (every node sees the same), without it a dict in this process (one node).

- ``<prefix>:presence:<room id>:users``: member ``user id``, score = when that user's newest
  connection expires (Unix seconds). Online = score in the future; a user with two tabs is one
  member, so counts once.
- ``<prefix>:presence:<room id>:u:<user id>``: that user's connections (``conn`` = the socket's
  channel name), score = expiry.
- ``<prefix>:presence:<room id>:names``: user id → username, for the online list.

Each connection expires ``PRESENCE_TTL`` seconds (default 30) after its last heartbeat; every
node refreshes its own connections every ``PRESENCE_HEARTBEAT`` seconds (default 10) and sweeps
the rooms it has members in, announcing users whose last connection expired. So a node that dies
takes its users offline within TTL + heartbeat (40 s by default) without any call from it; each
expired user is announced once, by whichever node removed it (the removal is one Lua script).

The async functions are called by ``rooms.consumers.RoomConsumer``; ``online_now`` (sync) by the
REST view. Every function raises ``redis.exceptions.RedisError`` / ``OSError`` when Redis cannot be
reached; callers treat presence as best effort (chat goes on without it).
"""

import asyncio
import logging
import time

from django.conf import settings

logger = logging.getLogger(__name__)

# Lua scripts: each runs atomically in Redis, so concurrent nodes agree on joins and leaves.
_JOIN = """
local users, conns, names = KEYS[1], KEYS[2], KEYS[3]
local uid, conn, exp, now, name = ARGV[1], ARGV[2], tonumber(ARGV[3]), tonumber(ARGV[4]), ARGV[5]
local was = redis.call('ZSCORE', users, uid)
redis.call('ZADD', conns, exp, conn)
redis.call('ZADD', users, 'GT', exp, uid)
redis.call('HSET', names, uid, name)
if (not was) or tonumber(was) <= now then return 1 else return 0 end
"""
_LEAVE = """
local users, conns = KEYS[1], KEYS[2]
local uid, conn, now = ARGV[1], ARGV[2], tonumber(ARGV[3])
redis.call('ZREM', conns, conn)
redis.call('ZREMRANGEBYSCORE', conns, '-inf', now)
if redis.call('ZCARD', conns) == 0 then
  redis.call('DEL', conns)
  return redis.call('ZREM', users, uid)
end
return 0
"""
_REFRESH = """
local now, exp = tonumber(ARGV[1]), tonumber(ARGV[2])
local back = {}
for i = 1, #KEYS, 3 do
  local users, conns, names = KEYS[i], KEYS[i + 1], KEYS[i + 2]
  local uid, conn, name = ARGV[i + 2], ARGV[i + 3], ARGV[i + 4]
  local was = redis.call('ZSCORE', users, uid)
  redis.call('ZADD', conns, exp, conn)
  redis.call('ZADD', users, 'GT', exp, uid)
  if name ~= '' then redis.call('HSET', names, uid, name) end
  if (not was) or tonumber(was) <= now then table.insert(back, (i - 1) / 3) end
end
return back
"""
_SWEEP = """
local users, now = KEYS[1], tonumber(ARGV[1])
local expired = redis.call('ZRANGEBYSCORE', users, '-inf', now)
local gone = {}
for _, uid in ipairs(expired) do
  if redis.call('ZREM', users, uid) == 1 then table.insert(gone, uid) end
end
return gone
"""


def ttl() -> float:
    return float(getattr(settings, "PRESENCE_TTL", 30))


def heartbeat() -> float:
    return float(getattr(settings, "PRESENCE_HEARTBEAT", 10))


def _keys(room_id: int, user_id: int | None = None) -> tuple[str, ...]:
    base = f"{settings.CHANNEL_LAYER_PREFIX}:presence:{int(room_id)}"
    conns = f"{base}:u:{int(user_id)}" if user_id is not None else None
    return f"{base}:users", conns, f"{base}:names"


class RedisStore:
    """Presence in Redis (``settings.REDIS``: the same host or Sentinel master as the cache)."""

    def _client(self):
        from chatsite.redis_config import loop_client

        return loop_client()

    async def join(self, room_id: int, user_id: int, username: str, conn: str) -> bool:
        users, conns, names = _keys(room_id, user_id)
        now = time.time()
        return bool(
            await self._client().eval(
                _JOIN, 3, users, conns, names, user_id, conn, now + ttl(), now, username
            )
        )

    async def leave(self, room_id: int, user_id: int, conn: str) -> bool:
        users, conns, _ = _keys(room_id, user_id)
        return bool(await self._client().eval(_LEAVE, 2, users, conns, user_id, conn, time.time()))

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
        return [int(i) for i in await self._client().eval(_REFRESH, len(keys), *keys, *args)]

    async def sweep(self, room_id: int) -> list[int]:
        users, _, _ = _keys(room_id)
        gone = await self._client().eval(_SWEEP, 1, users, time.time())
        return [int(uid) for uid in gone]

    async def online(self, room_id: int) -> list[dict]:
        users, _, names = _keys(room_id)
        ids = await self._client().zrangebyscore(users, time.time(), "+inf")
        return _with_names(ids, await self._client().hmget(names, ids) if ids else [])

    async def named(self, room_id: int, ids: list[int]) -> list[dict]:
        _, _, names = _keys(room_id)
        return _with_names(ids, await self._client().hmget(names, ids) if ids else [])

    async def online_among(self, room_id: int, ids: list[int]) -> set[int]:
        """Which of ``ids`` are online in ``room_id`` now (one ``ZMSCORE``)."""
        if not ids:
            return set()
        users, _, _ = _keys(room_id)
        now = time.time()
        scores = await self._client().zmscore(users, ids)
        return {uid for uid, score in zip(ids, scores) if score is not None and score > now}

    def online_now(self, room_id: int) -> list[dict]:
        """Sync, for views: the online list, read with a short-lived client."""
        users, _, names = _keys(room_id)
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

    def _live(self, room_id: int, user_id: int, now: float) -> dict[str, float]:
        conns = self.conns.get((room_id, user_id), {})
        for conn in [c for c, exp in conns.items() if exp <= now]:
            del conns[conn]
        return conns

    async def join(self, room_id, user_id, username, conn) -> bool:
        now = time.time()
        conns = self._live(room_id, user_id, now)
        was_online = bool(conns)
        self.conns.setdefault((room_id, user_id), conns)[conn] = now + ttl()
        self.names[user_id] = username
        return not was_online

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

    async def online(self, room_id) -> list[dict]:
        return self.online_now(room_id)

    async def named(self, room_id, ids) -> list[dict]:
        return _with_names(ids, [self.names.get(u, "") for u in ids])

    async def online_among(self, room_id, ids) -> set[int]:
        now = time.time()
        return {u for u in ids if self._live(room_id, u, now)}

    def online_now(self, room_id) -> list[dict]:
        now = time.time()
        ids = [u for (r, u) in list(self.conns) if r == room_id and self._live(r, u, now)]
        return sorted(
            ({"id": u, "username": self.names.get(u, "")} for u in ids), key=lambda m: m["username"]
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
    cannot be read, each user's last change goes out instead."""

    def __init__(self):
        self.pending: dict[int, dict[int, tuple[dict, bool]]] = {}  # room → user id → (user, joined)
        self.task = None

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

        while self.pending:
            await asyncio.sleep(batch())
            pending, self.pending = self.pending, {}
            for room_id, changes in pending.items():
                try:
                    online = await store().online_among(room_id, list(changes))
                    states = [(user, uid in online) for uid, (user, _) in changes.items()]
                except Exception:  # the store is out of reach: each user's last change
                    logger.warning("presence batch for room %s not checked", room_id, exc_info=True)
                    states = list(changes.values())
                joins = [user for user, is_online in states if is_online]
                leaves = [user for user, is_online in states if not is_online]
                if joins or leaves:
                    try:
                        await events.presence_changed(room_id=room_id, joins=joins, leaves=leaves)
                    except Exception:
                        logger.warning("presence diff for room %s not sent", room_id, exc_info=True)


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
