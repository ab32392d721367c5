"""Per-user limits that keep one user from slowing a node for everyone else.

Why: under daphne every ``database_sync_to_async`` call of a process runs on ONE thread, so each
read frame (``fetch``, ``resume``) waits in the same queue as every other user's joins and reads
on that node. 16 sockets of one user sending ``fetch`` as fast as they could stalled new joins on
a node for seconds. This module bounds what one user can put in that queue, and how many sockets
one user can hold. Called by ``rooms.consumers.RoomConsumer``.

**Read frames** (``fetch``, ``resume``), per user over all of that user's sockets:

- ``WS_READ_RATE`` (default ``10/s``, fixed windows like ``WS_SEND_RATE``; ``0`` turns it off):
  ``read_hit``. Over it the frame is answered ``{"type": "error", "code": "rate_limited",
  "retry_after": seconds, "detail": ...}``, nothing is read and the socket stays open. Each node
  decides in its own memory, at once (no Redis command in a frame's path: the harm is per node,
  the database thread of one process, and a round trip per frame is what the limit saves). On a
  node, attempts count, refused ones included. Across nodes (with Redis), each node adds the
  reads it allowed to a shared counter in batches (``_ReadWindow``: one ``INCRBY`` per
  ``read_batch()`` allowed reads, from a background task, none for refused ones) and counts the
  other nodes' total it learns in return: a user spread over N nodes is held to the rate plus at
  most N batches per window.
- ``WS_READS_IN_FLIGHT`` (default 2; ``0`` no bound): ``read_turn``, at most this many of the
  user's reads on the database thread at once; a further read waits its turn (queued, not
  refused: a user whose tabs all resume at once after a node restart gets every answer, one
  after another). A single socket never has more than one read in flight anyway: its frames are
  handled one at a time, in order. So the work one user has queued on a node is at most
  ``WS_READS_IN_FLIGHT`` reads, whatever their number of sockets and frames; the connect-time
  replay (``?after_seq``) takes its turn too, and is not counted against the rate (the room page
  depends on it, and the socket cap bounds it).

The room page sends no ``fetch`` or ``resume`` frames (it resumes with ``?after_seq`` and
repairs gaps through the REST history), so it never meets these limits.

**Typing**: ``typing_allowed``, one relayed ``typing`` per user per room every
``TYPING_INTERVAL`` seconds (2) on this node, whatever their number of sockets (each socket
already had that bound on its own); more are dropped without an answer.

**Sockets**: ``admit_socket``, at most ``WS_MAX_SOCKETS_PER_USER`` (default 32; ``0`` turns it
off) open room sockets per user, across all nodes. A socket over the cap is accepted and closed
with 4429 (too many sockets) before any database work; the user's open sockets are kept: the
newest loses. Why not the oldest: the room page reconnects by itself, so with "oldest loses" two
tabs over the cap would close each other in turn for ever; "newest loses" is stable, needs no
message to another node, and the refused client retries with backoff until a slot frees.

With Redis the user's sockets are one sorted set ``<prefix>:sockets:<user id>`` (member: the
socket's channel name, score: its expiry, Unix seconds), checked and added to by one Lua script;
each node refreshes its own sockets every ``PRESENCE_HEARTBEAT`` seconds and a socket expires
``PRESENCE_TTL`` seconds after its node's last refresh. So a killed node's sockets stop counting
within the TTL; a closed socket frees its slot at once (``Slot.release``, from ``disconnect``).
Redis failing or not answering within ``ratelimit.SHARED_TIMEOUT`` admits the socket (logged),
and so do the next ``ratelimit.SHARED_PAUSE`` seconds without asking: the cap must not stop
people talking (the heartbeat records the sockets when Redis is back). A socket's admit script and
its release's ``ZREM`` go out batched with the node's other sockets' commands
(``chatsite.redis_batch``), so many sockets opening or closing at once cost a few round trips on
one connection, not a connection each.
Without Redis (one node) the sockets are counted in this process.
"""

import asyncio
import logging
import math
import time
import uuid
import weakref
from contextlib import asynccontextmanager

from django.conf import settings

from chatsite import loops, redis_batch

from . import presence, ratelimit

logger = logging.getLogger(__name__)

TYPING_INTERVAL = 2.0  # seconds between relayed typing hints of one user in one room (per node)


def read_rate() -> str:
    return getattr(settings, "WS_READ_RATE", "10/s")


def reads_in_flight() -> int:
    return int(getattr(settings, "WS_READS_IN_FLIGHT", 2))


def max_sockets() -> int:
    return int(getattr(settings, "WS_MAX_SOCKETS_PER_USER", 32))


def read_batch(limit: int) -> int:
    """Allowed reads a node counts before adding them to the shared count (a quarter of the
    limit, at least 2): the shared count costs at most one command per that many reads."""
    return max(2, limit // 4)


class _ReadWindow:
    """One user's read count on this node in the current fixed window of ``WS_READ_RATE``, plus
    the other nodes' count as last learnt from Redis (``others``). ``hit`` never waits: it counts
    the frame here, answers from ``local + others``, and every ``read_batch`` allowed reads starts
    one background ``INCRBY`` of them on the shared key, whose answer updates ``others``."""

    def __init__(self, rate: str):
        self.parsed = ratelimit.parse_rate(rate)
        self.bucket = None
        self.local = 0  # frames counted here in this window (refused ones included)
        self.unsynced = 0  # allowed here and not yet added to the shared count
        self.synced = 0  # allowed here and added to the shared count
        self.others = 0  # the other nodes' allowed reads in this window, as last learnt
        self.task = None

    def hit(self, user_id: int) -> float | None:
        """Count one read frame; None when within the rate, else seconds until the window ends."""
        if self.parsed is None:
            return None
        window = ratelimit.Window(f"read:{int(user_id)}", *self.parsed)
        if window.bucket != self.bucket:
            self.bucket, self.local, self.unsynced, self.synced, self.others = window.bucket, 0, 0, 0, 0
        self.local += 1
        retry_after = window.retry_after(self.local + self.others)
        if retry_after is None and settings.REDIS:
            self.unsynced += 1
            if self.unsynced >= read_batch(window.limit) and (self.task is None or self.task.done()):
                self.task = asyncio.get_running_loop().create_task(self._sync(window))
        return retry_after

    async def _sync(self, window) -> None:
        global _reads_paused_until
        if time.monotonic() < _reads_paused_until:
            return
        count, self.unsynced = self.unsynced, 0
        key = f"{settings.CHANNEL_LAYER_PREFIX}:{window.key}"
        try:
            total, _ = await redis_batch.batch().calls(
                [("INCRBY", key, count), ("EXPIRE", key, window.seconds + 1)],
                timeout=ratelimit.SHARED_TIMEOUT,
            )
        except Exception:  # the shared count misses these; this node's own still holds
            _reads_paused_until = time.monotonic() + ratelimit.SHARED_PAUSE
            logger.warning("shared read count unavailable for %.0f s", ratelimit.SHARED_PAUSE, exc_info=True)
            return
        if self.bucket == window.bucket:
            self.synced += count
            self.others = max(self.others, int(total) - self.synced)


_reads_paused_until = 0.0  # after a Redis failure: no shared read count until then


class _User:
    """One user's state on this node: their admitted sockets (conn → the consumer, weakly), the
    read window, the read gate and the last relayed typing hint per room."""

    def __init__(self):
        self.conns: dict[str, weakref.ref] = {}
        self.reads = _ReadWindow(read_rate())
        limit = reads_in_flight()
        self.gate = asyncio.Semaphore(limit) if limit > 0 else None
        self.reading = 0  # reads holding or waiting for the gate
        self.typing: dict[int, float] = {}

    def idle(self) -> bool:
        return not self.conns and not self.reading


class _Node:
    """This event loop's users (a daphne process runs one loop: one per node), and the task that
    refreshes their sockets in Redis."""

    def __init__(self):
        self.users: dict[int, _User] = {}
        self.task = None

    def user(self, user_id: int) -> _User:
        state = self.users.get(user_id)
        if state is None:
            state = self.users[user_id] = _User()
        return state

    def forget_if_idle(self, user_id: int) -> None:
        state = self.users.get(user_id)
        if state is not None and state.idle():
            del self.users[user_id]

    def start_heartbeat(self) -> None:
        if settings.REDIS and (self.task is None or self.task.done()):
            self.task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        while any(state.conns for state in self.users.values()):
            await asyncio.sleep(presence.heartbeat())
            try:
                await self.beat()
            except Exception:
                logger.warning(
                    "socket count refresh failed; retrying in %s s", presence.heartbeat(), exc_info=True
                )

    async def beat(self) -> None:
        """Refresh this node's sockets in Redis (one script). A socket whose consumer is gone
        without a ``release`` (an ending that skipped ``disconnect``) is dropped here, so its
        slot expires within the TTL instead of being held for ever."""
        entries = []
        for user_id, state in list(self.users.items()):
            for conn, ref in list(state.conns.items()):
                if ref() is None:
                    del state.conns[conn]
                else:
                    entries.append((user_id, conn))
            self.forget_if_idle(user_id)
        if entries:
            await _redis_refresh(entries)


_nodes: dict = {}


def _node() -> _Node:
    return loops.for_running_loop(_nodes, _Node)


# --- read frames -------------------------------------------------------------------------------


def read_hit(user_id: int) -> float | None:
    """Count one read frame of ``user_id`` against ``WS_READ_RATE`` on this node: None when
    within it, else the seconds until the window ends (``retry_after``)."""
    return _node().user(user_id).reads.hit(user_id)


@asynccontextmanager
async def read_turn(user_id: int):
    """``async with read_turn(user_id):`` around one read's database work: waits while the user
    already has ``WS_READS_IN_FLIGHT`` reads running on this node."""
    node = _node()
    state = node.user(user_id)
    state.reading += 1
    try:
        if state.gate is None:
            yield
        else:
            async with state.gate:
                yield
    finally:
        state.reading -= 1
        node.forget_if_idle(user_id)


# --- typing ------------------------------------------------------------------------------------


def typing_allowed(user_id: int, room_id: int) -> bool:
    """Whether a ``typing`` of ``user_id`` in ``room_id`` may be relayed now (then it counts):
    one every ``TYPING_INTERVAL`` seconds per user and room on this node."""
    node = _node()
    state = node.user(user_id)
    now = time.monotonic()
    if now - state.typing.get(room_id, -math.inf) < TYPING_INTERVAL:
        return False
    state.typing[room_id] = now
    node.forget_if_idle(user_id)  # a user with no socket here keeps no state
    return True


# --- sockets per user ----------------------------------------------------------------------------

_ADMIT = """
local key, conn = KEYS[1], ARGV[1]
local now, exp, cap, ttl = tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5])
redis.call('ZREMRANGEBYSCORE', key, '-inf', now)
if redis.call('ZSCORE', key, conn) == false and redis.call('ZCARD', key) >= cap then return 0 end
redis.call('ZADD', key, exp, conn)
redis.call('EXPIRE', key, ttl)
return 1
"""
_REFRESH = """
local exp, ttl = tonumber(ARGV[1]), tonumber(ARGV[2])
for i = 1, #KEYS do
  redis.call('ZADD', KEYS[i], exp, ARGV[i + 2])
  redis.call('EXPIRE', KEYS[i], ttl)
end
return #KEYS
"""
_ADMIT_SCRIPT = redis_batch.Script(_ADMIT)


def _key(user_id: int) -> str:
    return f"{settings.CHANNEL_LAYER_PREFIX}:sockets:{int(user_id)}"


def _key_ttl() -> int:
    """Seconds the whole sorted set outlives its last refresh (its members expire by score)."""
    return math.ceil(presence.ttl()) + 1


def _client():
    from chatsite.redis_config import loop_client

    return loop_client()


_paused_until = 0.0  # after a Redis failure: admit without asking Redis until then


async def _redis_admit(user_id: int, conn: str, cap: int) -> bool:
    """Whether the user's count over all nodes has room for ``conn`` (then it is counted).
    Redis failing or slow: True (logged), and True without asking for ``SHARED_PAUSE`` s."""
    global _paused_until
    if time.monotonic() < _paused_until:
        return True
    now = time.time()
    try:
        # Batched with this node's other sockets' commands (chatsite.redis_batch): a storm of
        # connects is a few round trips on one connection, not a connection per socket.
        return bool(
            await redis_batch.batch().script(
                _ADMIT_SCRIPT,
                [_key(user_id)],
                [conn, now, now + presence.ttl(), cap, _key_ttl()],
                timeout=ratelimit.SHARED_TIMEOUT,
            )
        )
    except Exception:
        _paused_until = time.monotonic() + ratelimit.SHARED_PAUSE
        logger.warning(
            "socket count store unavailable; sockets admitted for %.0f s",
            ratelimit.SHARED_PAUSE,
            exc_info=True,
        )
        return True


async def _redis_refresh(entries: list[tuple[int, str]]) -> None:
    keys = [_key(user_id) for user_id, _ in entries]
    await _client().eval(
        _REFRESH, len(keys), *keys, time.time() + presence.ttl(), _key_ttl(), *[conn for _, conn in entries]
    )


def _redis_release(user_id: int, conn: str) -> None:
    # Sent with the loop's next batch, not awaited (chatsite.redis_batch.Batch.send): a
    # disconnect does not wait for Redis, and a failure is logged there; the slot then expires.
    redis_batch.batch().send("ZREM", _key(user_id), conn)


class Slot:
    """An admitted socket's place in its user's count; ``release()`` (idempotent) frees it."""

    def __init__(self, user_id: int, conn: str):
        self.user_id, self.conn = user_id, conn
        self.released = False

    async def release(self) -> None:
        """Called from the consumer's ``disconnect``. Never raises: a Redis that cannot be
        reached lets the entry expire within the TTL (this node stops refreshing it)."""
        if self.released:
            return
        self.released = True
        node = _node()
        state = node.users.get(self.user_id)
        if state is not None:
            state.conns.pop(self.conn, None)
            node.forget_if_idle(self.user_id)
        if settings.REDIS and max_sockets() > 0:
            try:
                _redis_release(self.user_id, self.conn)
            except Exception:
                logger.warning(
                    "socket count store unavailable; a slot of user %s expires within the TTL",
                    self.user_id,
                    exc_info=True,
                )


async def admit_socket(user_id: int, consumer) -> Slot | None:
    """Called at connect, before any database work: a ``Slot`` for this socket when its user has
    fewer than ``WS_MAX_SOCKETS_PER_USER`` open sockets (over all nodes with Redis, in this
    process without), else None (the caller closes the socket with 4429)."""
    cap = max_sockets()
    conn = getattr(consumer, "channel_name", None) or f"local.{uuid.uuid4().hex}"
    node = _node()
    state = node.user(user_id)
    if cap > 0:
        if settings.REDIS:
            admitted = await _redis_admit(user_id, conn, cap)
        else:
            admitted = len(state.conns) < cap
        if not admitted:
            node.forget_if_idle(user_id)
            return None
    state.conns[conn] = weakref.ref(consumer)
    if cap > 0:
        node.start_heartbeat()
    return Slot(user_id, conn)
