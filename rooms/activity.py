"""The per-node room activity hub: what the user sockets (``rooms.user_consumer``) of one node
learn of their rooms, received once per node per room instead of once per socket.

Why (issue 12, bench/RESULTS.md "Room activity hub"): in the 50-rooms-of-20 shape with page-like
clients, each room has 200 members of whom 20 have it open; every user socket was in the
channel-layer group of each of its 10 rooms, so each node handed every message to ~67 user
sockets (one ``note_message`` each, ~40,000 calls a second at 12 msg/s in 50 rooms), and each
socket ran a flush timer of its own.

How: the hub of a node (one per event loop, ``hub()``) has, for each room that at least one user
socket of the node follows, one channel of its own in the room's group (``room.<id>``), made
without a Redis subscription of its own where the layer allows (``chatsite.layers``'s
``new_local_channel``) and fed synchronously in the node's Pub/Sub read (``attach``). Following
is refcounted: the first follower of a room on the node joins the group (awaited, so a
follower's sidebar read afterwards misses nothing), the last one to leave discards it. For each
room the hub keeps:

- ``last``: the highest ``seq`` of a ``room.message`` received (a lower or equal one is a repeat
  or came out of order across nodes: ignored, as each socket used to ignore it);
- ``log``: the last ``LOG_SIZE`` (256) messages as ``(seq, author_id)``, complete for every seq
  above ``base`` (the seq before the first one received, then the last one dropped off the
  log's end).

One node-wide timer runs while rooms change: every ``ACTIVITY_BATCH`` seconds (1) it wakes each
follower of a room that changed since the last tick, once (one ``sidebar.flush`` in its inbox),
and that socket sends one ``room.activity`` frame computed from the hub's state against the
seqs it has already counted (``entry``; the same semantics as before: ``unread_added`` counts
others' messages, after the user's own newest one, whose seq comes as ``read_seq``). When the
log no longer reaches back to what a socket counted (``GAP``), that socket reads and sends a
fresh ``sidebar`` instead.

The room's other events that a user socket needs are handed to its followers' inboxes, in the
order they came: ``room.message_deleted``, ``room.updated``, ``room.archived``,
``room.access_changed``, and ``room.member_removed`` (to the removed user's sockets only).
Everything else of a room (typing, presence, edits, reactions, member changes) stops at the hub.

A follower is any object with ``user_id`` (int), ``closing`` (bool) and ``enqueue`` (a function
putting an event at the end of its inbox, or None).
"""

import asyncio
import functools
import logging
import weakref

from channels.layers import get_channel_layer

from . import events

logger = logging.getLogger(__name__)

ACTIVITY_BATCH = 1.0  # seconds: the hub's tick; a user socket sends at most one room.activity per tick
LOG_SIZE = 256  # messages remembered per room (about 20 s of a room at 12 msg/s)
FLUSH = "sidebar.flush"  # the event a follower gets in its inbox at a tick: send your activity
GAP = object()  # ``entry``'s answer when the log does not reach back: send a fresh sidebar

FORWARDED = frozenset(
    {
        events.ROOM_MESSAGE_DELETED,
        events.ROOM_UPDATED,
        events.ROOM_ARCHIVED,
        events.ROOM_ACCESS_CHANGED,
    }
)


class _Room:
    """One followed room on this node."""

    __slots__ = ("room_id", "followers", "channel", "pump", "lock", "last", "base", "log", "cache")

    def __init__(self, room_id: int):
        self.room_id = room_id
        self.followers: dict = {}  # follower → None (insertion-ordered set)
        self.channel: str | None = None  # the hub's channel in the room's group, once subscribed
        self.pump: asyncio.Task | None = None  # the receive loop, on a layer without ``attach``
        self.lock = asyncio.Lock()
        self.last: int | None = None  # highest seq received
        self.base: int | None = None  # the log holds every seq in (base, last]
        self.log: list[tuple[int, int | None]] = []
        self.cache: tuple | None = None  # (since, count, {author: (seq, after)}) for ``last``

    def record(self, seq: int, author_id) -> bool:
        """A ``room.message``: logged unless it is not newer than ``last``. Returns whether it was."""
        if self.last is not None and seq <= self.last:
            return False
        if self.base is None:
            self.base = seq - 1
        self.log.append((seq, author_id))
        if len(self.log) > LOG_SIZE:
            drop = len(self.log) - LOG_SIZE
            self.base = self.log[drop - 1][0]
            del self.log[:drop]
        self.last = seq
        self.cache = None
        return True

    def summary(self, since: int) -> tuple[int, dict]:
        """The messages after ``since``: ``(count, {author_id: (their newest seq, messages after
        it)})``, computed once per ``since`` between two messages (most followers of a room
        counted up to the same seq at the last tick)."""
        cache = self.cache
        if cache is not None and cache[0] == since:
            return cache[1], cache[2]
        newer = []
        for seq, author in reversed(self.log):
            if seq <= since:
                break
            newer.append(author)
        count = len(newer)
        authors: dict = {}
        for after, author in enumerate(newer):  # newest first: the first seen is the newest
            if author not in authors:
                authors[author] = after
        seqs = [s for s, _ in self.log[len(self.log) - count :]] if count else []
        by_author = {author: (seqs[count - 1 - after], after) for author, after in authors.items()}
        self.cache = (since, count, by_author)
        return count, by_author

    def entry(self, since: int, user_id: int):
        """The ``room.activity`` entry for a follower that counted up to ``since``:
        ``(last_seq, unread_added, read_seq or 0)``, None when nothing is newer, ``GAP`` when the
        log does not reach back to ``since``."""
        if self.last is None or self.last <= since:
            return None
        if since < self.base:
            return GAP
        count, by_author = self.summary(since)
        own = by_author.get(user_id)
        if own is None:
            return self.last, count, 0
        return self.last, own[1], own[0]


class ActivityHub:
    """The rooms followed on one node (one event loop), and the tick."""

    def __init__(self, loop: asyncio.AbstractEventLoop):
        self.loop = loop
        self.rooms: dict[int, _Room] = {}
        self.changed: dict[_Room, None] = {}
        self.timer: asyncio.TimerHandle | None = None
        self.ticks = 0  # ticks run (for tests and the bench)
        self.received = 0  # room events received by the hub's channels (for tests and the bench)

    # --- following ---------------------------------------------------------------------------

    async def follow(self, room_id: int, follower) -> None:
        """``follower`` follows ``room_id`` from now on; returns once the hub's channel is in the
        room's group (every message committed from then on reaches the hub). Raises the layer's
        error (Redis unreachable: the follower is not recorded)."""
        room = self.rooms.get(room_id)
        if room is None:
            room = self.rooms[room_id] = _Room(room_id)
        room.followers[follower] = None
        if room.channel is not None:
            return
        try:
            async with room.lock:
                if room.channel is None:
                    await self._subscribe(room)
        except BaseException:
            room.followers.pop(follower, None)
            if not room.followers and room.channel is None and self.rooms.get(room_id) is room:
                del self.rooms[room_id]
            raise

    def unfollow(self, room_id: int, follower) -> None:
        """``follower`` no longer follows ``room_id``; the last follower's leaving discards the
        hub's channel from the room's group (in a task of its own: layer errors are logged)."""
        room = self.rooms.get(room_id)
        if room is None or room.followers.pop(follower, 1) is not None:
            return
        if not room.followers:
            task = self.loop.create_task(self._release(room))
            _tasks.add(task)
            task.add_done_callback(_tasks.discard)

    def following(self, room_id: int) -> int:
        """How many followers ``room_id`` has on this node (for tests)."""
        room = self.rooms.get(room_id)
        return len(room.followers) if room is not None else 0

    async def _subscribe(self, room: _Room) -> None:
        layer = get_channel_layer()
        group = events.room_group_name(room.room_id)
        sink = functools.partial(self._on_event, room)
        local = getattr(layer, "new_local_channel", None)
        if local is not None:
            channel = await local("activity.", sink)
        else:  # another layer (InMemoryChannelLayer): a channel of its own, read by a task
            channel = await layer.new_channel("activity.")
            room.pump = self.loop.create_task(self._pump(layer, channel, sink))
        try:
            await layer.group_add(group, channel)
        except BaseException:
            await self._drop_channel(layer, room, channel)
            raise
        room.channel = channel

    async def _release(self, room: _Room) -> None:
        async with room.lock:
            if room.followers or room.channel is None:
                return
            layer, channel = get_channel_layer(), room.channel
            room.channel = None
            try:
                await layer.group_discard(events.room_group_name(room.room_id), channel)
            except Exception:
                logger.warning("could not leave the group of room %s", room.room_id, exc_info=True)
            await self._drop_channel(layer, room, channel)
            if not room.followers and self.rooms.get(room.room_id) is room:
                del self.rooms[room.room_id]
                self.changed.pop(room, None)

    async def _drop_channel(self, layer, room: _Room, channel: str) -> None:
        if room.pump is not None:
            room.pump.cancel()
            room.pump = None
        drop = getattr(layer, "delete_local_channel", None)
        if drop is not None:
            try:
                await drop(channel)
            except Exception:
                logger.warning("could not drop the hub channel %s", channel, exc_info=True)

    async def _pump(self, layer, channel: str, sink) -> None:
        while True:
            sink(await layer.receive(channel))

    # --- events --------------------------------------------------------------------------------

    def _on_event(self, room: _Room, event: dict) -> None:
        """Called for each event of ``room``'s group, in order (in the node's Pub/Sub read)."""
        self.received += 1
        kind = event.get("type")
        if kind == events.ROOM_MESSAGE:
            seq = event.get("seq")
            if isinstance(seq, int) and room.record(seq, event.get("author_id")):
                self.changed[room] = None
                if self.timer is None:
                    self.timer = self.loop.call_later(ACTIVITY_BATCH, self._tick)
            return
        if kind in FORWARDED:
            targets = list(room.followers)
        elif kind == events.ROOM_MEMBER_REMOVED and event.get("reason") != "unbanned":
            targets = [f for f in room.followers if f.user_id == event.get("user_id")]
        else:
            return
        for follower in targets:
            if not follower.closing and follower.enqueue is not None:
                follower.enqueue(event)

    def _tick(self) -> None:
        """Every ``ACTIVITY_BATCH`` seconds while rooms change: one ``sidebar.flush`` to each
        follower of a room that changed."""
        self.timer = None
        self.ticks += 1
        changed, self.changed = self.changed, {}
        woken: dict = {}
        for room in changed:
            woken.update(room.followers)
        flush = {"type": FLUSH}
        for follower in woken:
            if not follower.closing and follower.enqueue is not None:
                follower.enqueue(flush)

    def entry(self, room_id: int, since: int, user_id: int):
        """``_Room.entry`` of ``room_id`` (None when the hub does not follow it)."""
        room = self.rooms.get(room_id)
        return None if room is None else room.entry(since, user_id)


_hubs: "weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, ActivityHub]" = weakref.WeakKeyDictionary()
_tasks: set = set()


def hub() -> ActivityHub:
    """The running event loop's hub (made on first use)."""
    loop = asyncio.get_running_loop()
    found = _hubs.get(loop)
    if found is None:
        found = _hubs[loop] = ActivityHub(loop)
    return found
