"""The room consumer: one WebSocket per member per room, at ``/ws/rooms/<slug>/``.

Frames are JSON text. The contract (also in README.md):

server → client, on connect::

    {"type": "hello", "server_id": str, "room": slug, "last_seq": int}

client → server (``reply_to``: optional, the seq of the message of this room it answers,
``rooms.replies``; ``reply_not_found`` when there is none or it is deleted)::

    {"type": "message.send", "body": str, "client_msg_id": str, "reply_to": int | null}

server → sender, once the message is committed (a retry of the same ``client_msg_id`` gets the
same ack and stores nothing)::

    {"type": "ack", "client_msg_id": str, "id": int, "seq": int}

server → every member of the room on every node (``rooms.serializers.MessageSerializer``)::

    {"type": "message", "message": {"id", "room", "seq", "author": {"id", "username", "display_name"},
                                    "body", "created_at", "server_id"}}

client → server, to catch up after a reconnect (or ``?after_seq=N`` on the socket URL)::

    {"type": "resume", "after_seq": int}

server → client: the stored messages with a higher seq, up to the ``last_seq`` of ``hello`` (up to
the room's last seq for ``?after_seq``), as ``message`` frames in seq order, then
``{"type": "resumed", "last_seq": int}``; nothing is sent twice (``RoomConsumer.resume``). Over
1,000 missing: ``{"type": "resync", "latest_seq": int}`` instead (reload through the REST history).

server → client after ``hello``, the room's online members (a user with two tabs once): how
many, and the first ``PRESENCE_NAMES`` (50) in name order with the cursor of the rest (``next``,
null when ``online`` is all of them); then changes from any node, at most one diff per node per
second (one per 5 s when only the count changed), naming at most ``PRESENCE_NAMES`` joins and
leaves (``partial``: some were left unnamed; ``rooms.presence.Announcer``)::

    {"type": "presence", "count": int, "online": [{"id": int, "username": str}, ...], "next": str | null}
    {"type": "presence.diff", "joins": [{...}], "leaves": [{...}], "count": int, "partial": bool}

client → server, the next page of the online list (``after``: a ``next`` cursor, absent or null
for the first page; ``limit``: 1 to ``PRESENCE_PAGE_MAX`` (200), default 200; counted as a read
frame), answered with::

    {"type": "presence.list", "after": str | null, "limit": int}
    {"type": "presence.page", "count": int, "online": [{...}, ...], "next": str | null}

client → server, relayed to the others as ``{"type": "typing", "user": {"id", "username"}}``,
never stored, at most one every 2 s per socket and per user in a room (over all of the user's
sockets on a node; ``rooms.limits``)::

    {"type": "typing"}

client → server, to repair a gap; answered with up to 200 messages, oldest first::

    {"type": "fetch", "after_seq": int, "before_seq": int (optional)}
    {"type": "history", "messages": [{...}, ...], "has_more": bool}

Read frames (``fetch``, ``resume``, ``read``) are limited per user over all of their sockets
(``rooms.limits``): ``WS_READ_RATE`` (default ``10/s``, decided on each node without a Redis
round trip, shared between nodes in batches; over it, error ``rate_limited`` with
``retry_after``, nothing read, the socket kept), and at most ``WS_READS_IN_FLIGHT`` (2) of the
user's reads run at once on a node (further ones wait their turn; a socket's frames are handled
in order).

server → client on bad input; the socket stays open (``client_msg_id`` when known, ``field``
when one field is at fault)::

    {"type": "error", "code": str, "detail": str}

Error codes: ``invalid_json`` (text that is not JSON, or empty), ``binary_frame``, ``not_object``
(JSON that is not an object), ``missing_field``, ``invalid_field`` (wrong type, or a too-long
``client_msg_id``), ``unknown_type``, ``empty_body`` (nothing visible:
``serializers.validate_not_blank``),
``body_too_long`` (over 4,000 characters), ``invalid_text`` (a lone surrogate or NUL; in
``body`` any control character but tab and line breaks: ``serializers.validate_body_controls``),
``unavailable`` (the database could not be used: a send was not broadcast, send it again with
the same ``client_msg_id``, which stores it once; a ``fetch``, ``resume`` or ``?after_seq`` has
``"frame": "fetch"`` or ``"resume"``, ask again; the socket stays open. A hung database is
answered within ``DATABASE_STATEMENT_TIMEOUT`` + 0.5 s, 2 s by default), ``rate_limited`` (over
``WS_SEND_RATE``, per user across all nodes; with ``retry_after`` in seconds; not stored; or a
``fetch`` / ``resume`` over ``WS_READ_RATE``: nothing read), ``internal_error``.

server → every member, when a message is edited or deleted::

    {"type": "message.updated", "message": {...}}
    {"type": "message.deleted", "id": int, "room": slug, "seq": int}

client → server, the reader has seen the room up to ``seq`` (a page reports it debounced, not
per frame; ``rooms.reads``; written with the node's other reports of a 0.25 s tick, in one
statement): no answer, or an error frame (``missing_field``, ``invalid_field``, ``rate_limited``:
counted as a read frame, below; after the tick: ``not_found`` when not a member,
``unavailable``)::

    {"type": "read", "seq": int}

server → every socket of the user on every node, when a read report moved their marker (never
backward; clamped to the room's last seq; once per tick for a socket's reports), so their other tabs clear their badges; and to each
member mentioned by ``@username`` in a message stored or edited (``rooms.mentions``)::

    {"type": "read.updated", "room": slug, "last_read_seq": int, "unread_count": int,
     "mention_count": int}
    {"type": "mention", "room": slug, "message": {...}}

Each socket of the user gets these once (a user with sockets in three rooms gets three copies,
one on each: every room socket joins the user's group).

server → every member, when the room is archived (the socket is then closed with 4410)::

    {"type": "room.archived", "room": slug}

server → every socket of a user (any room), when a direct message with them is first opened
(``rooms.dms``; ``room``: the REST room shape as that user sees it, ``dm_with`` the other
person)::

    {"type": "dm.created", "room": {"slug", "name", "kind": "dm", "dm_with": {"id", "username"}, ...}}

client → server, a reaction to the message ``seq`` of this room (``rooms.reactions``; counted as
a read frame), answered with ``reaction.ack``; every member on every node then gets
``reaction.updated`` (when something changed)::

    {"type": "reaction.add", "seq": int, "emoji": "👍"}
    {"type": "reaction.remove", "seq": int, "emoji": "👍"}
    {"type": "reaction.ack", "action": "add" | "remove", "seq": int, "emoji": str, "changed": bool,
     "reactions": [...]}
    {"type": "reaction.updated", "room": slug, "seq": int,
     "reactions": [{"emoji": "👍", "count": 2, "users": [{"id", "username"}, ...]}, ...]}

server → every member, when a message's reply count changed (a reply stored, or deleted)::

    {"type": "thread.updated", "room": slug, "seq": int, "reply_count": int}

More error codes: ``muted`` (with ``until``), ``banned``, ``archived``, ``not_found``,
``invalid_emoji`` and ``message_not_found`` (reactions), ``reply_not_found`` (a send's
``reply_to``), ``unavailable`` with ``"frame": "presence.list"`` (Redis unreachable); the socket
stays open.

Close codes (refusals are sent right after accept, so browsers see the code):
4000 you left the room (or a moderator deleted your membership of a public room); 4001 your
session changed its password and has a new key: reconnect (with the new cookie); 4401 not
signed in (no session, an expired one, an inactive user, a wrong or revoked token; on an open
socket: its session logged out or deleted, or the user's password changed); 4403 banned
from the room; 4404 no such room (also a private room you are not a member of, or a path that is
not a room; on an open socket: the room deleted, or made private, or your membership of a
private room deleted); 4410 the room is archived; 4429 too many sockets: the user already has
``WS_MAX_SOCKETS_PER_USER`` (32) open over all nodes (checked first; their open sockets are kept,
the newest is refused: reconnect with backoff); 4503 the node cannot reach its database or
Redis right now (reconnect with backoff, to any node; also when such an error escapes a
handler); 1011 an unexpected error escaped a handler (logged; reconnect with backoff). Sent by
``chatsite.serve``, not this consumer: 1012 the node is stopping (reconnect soon: the room page
waits 0-2 s, drawn, so a node's members do not all arrive at once), 4008 too
slow (resume), 1009 a frame over 64 KiB.

Access (``rooms.access``) is checked at connect, again once the socket is in its groups, with
every ``fetch`` / ``resume`` / ``?after_seq`` in the same database hop as the read (refused: an
error frame ``not_found``, ``banned`` or ``unauthenticated``, then the close code), on the
access events of ``rooms.events``, and every ``ACCESS_RECHECK`` seconds per node. No live frame
is sent once the socket is closing.

Whatever ends the consumer (a disconnect, an exception, a cancellation), ``cleanup`` runs:
presence, groups, the open-socket gauge, the access watch.
"""

import asyncio
import contextlib
import functools
import json
import logging
import re
import time

import psycopg
from channels.consumer import get_handler_name
from channels.db import database_sync_to_async
from channels.exceptions import StopConsumer
from channels.generic.websocket import AsyncJsonWebsocketConsumer, AsyncWebsocketConsumer
from channels.layers import get_channel_layer
from django.conf import settings
from django.contrib.auth import HASH_SESSION_KEY
from django.db import Error as DjangoDatabaseError
from django.utils.functional import LazyObject
from psycopg_pool import PoolTimeout
from redis.exceptions import RedisError
from rest_framework.exceptions import ValidationError

from chatsite import dbconn
from chatsite.queues import LightQueue

from . import access, events, limits, metrics, presence, ratelimit, reactions, reads, selectors, services
from .auth import SESSION_HASH_SCOPE_KEY, refuse_unstarted
from .entry import (
    CLOSE_ARCHIVED,
    CLOSE_BANNED,
    CLOSE_NOT_FOUND,
    CLOSE_UNAUTHENTICATED,
    CLOSING_ERRORS,
    RESUME_MAX,
    Entry,
    enter,
    enter_async,
)
from .logutil import RateLimitedLogger
from .models import Room
from .serializers import MessageSendFrame, is_valid_text, send_frame_accepted
from .services import ServiceError

logger = logging.getLogger(__name__)
bad_frame_log = RateLimitedLogger(logger, interval=10.0)
unavailable_log = RateLimitedLogger(logger, interval=10.0)
unexpected_log = RateLimitedLogger(logger, interval=10.0)

CLOSE_LEFT = 4000
CLOSE_SESSION_RENEWED = 4001  # the session changed its password and got a new key: reconnect
CLOSE_TOO_MANY_SOCKETS = 4429  # over WS_MAX_SOCKETS_PER_USER (rooms.limits): retry with backoff
CLOSE_UNAVAILABLE = 4503  # the database or Redis cannot be reached: reconnect with backoff
CLOSE_INTERNAL_ERROR = 1011  # a genuinely unexpected error in the consumer (logged): reconnect

try:  # what daphne (autobahn) raises when sending on a socket the peer has just closed
    from autobahn.exception import Disconnected as _PEER_GONE
except ImportError:  # another ASGI server
    _PEER_GONE = ()

# What "the database cannot be reached" looks like from here: Django's errors (its Error, not
# DatabaseError: InterfaceError "connection already closed" is not a DatabaseError), psycopg's
# from the event loop's pool, and TimeoutError.
DATABASE_ERRORS = (DjangoDatabaseError, psycopg.Error, PoolTimeout, TimeoutError)
# ... and "the database or Redis cannot be reached".
UNAVAILABLE_ERRORS = DATABASE_ERRORS + (RedisError, OSError)  # OSError: TimeoutError too
# Seconds the channel-layer steps of a handshake (subscribing the socket's channel, joining its
# groups) may take together: under daphne's 5 s handshake timeout, so that a Redis that hangs
# gets the socket a 4503 close rather than a handshake dropped without an answer (1006).
LAYER_JOIN_TIMEOUT = 2.0
# Seconds a handshake's access row may wait for its statement from the event loop (queued behind
# the other handshakes of a storm, ``rooms.entry.enter_async``): under daphne's 5 s handshake
# timeout, past the channel-layer steps' own limit, so that the socket still gets its 4503.
ENTRY_TIMEOUT = 2.5
# Seconds a database hop of a socket (fetch, resume) may take beyond one statement's
# client-side limit (chatsite.dbconn.client_timeout) before it is answered as unavailable.
DB_HOP_MARGIN = 0.25
# Seconds a socket's clean-up may wait for Redis (presence leave, leaving its groups).
CLEANUP_TIMEOUT = 5.0

# Service refusals that end the socket, and the close code they end it with.
_CLOSING_ERRORS = CLOSING_ERRORS

# DRF validation codes → our error codes, per field.
_FIELD_CODES = {
    "required": "missing_field",
    "null": "invalid_field",
    "invalid": "invalid_field",
    "invalid_text": "invalid_text",
}
_BODY_CODES = {"blank": "empty_body", "max_length": "body_too_long"}

# One MessageSendFrame for every frame: its bound fields are built once instead of per frame
# (DRF deep-copies the declared fields per instance). ``run_validation`` keeps no state, and the
# event loop runs one frame's validation at a time.
_SEND_FRAME = MessageSendFrame()


class FrameError(Exception):
    """A client frame that cannot be processed; answered with an error frame. The socket is kept
    unless ``close_code`` is set."""

    def __init__(self, code: str, detail: str, close_code: int | None = None, **extra):
        super().__init__(detail)
        self.code = code
        self.detail = detail
        self.close_code = close_code
        self.extra = extra


_pending_closes: set = set()  # close tasks started outside a consumer's own task (strong references)

# Scope entry from ``python -m chatsite.serve``: ``(text: str) -> bool``, sending a text frame now.
SEND_TEXT_SCOPE_KEY = "chatsite.send_text"

SEQ_MAX = 2**63 - 1  # PostgreSQL bigint
TYPING_INTERVAL = 2.0  # seconds between relayed typing hints of one socket
TYPING_DROP_BYTES = 64 * 1024  # a client with more unread than this gets no typing hints
FETCH_MAX = 200  # messages per fetch frame (the history API's page limit)


def _seq_field(content: dict, name: str, *, required: bool) -> int | None:
    value = content.get(name)
    if value is None and not required:
        return None
    if name not in content:
        raise FrameError("missing_field", f"{name} is required.", field=name)
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= SEQ_MAX:
        raise FrameError("invalid_field", f"{name} must be a whole number from 0 to {SEQ_MAX}.", field=name)
    return value


PRESENCE_CURSOR_MAX = presence.CURSOR_MAX  # characters of a presence.list cursor


def _encodable(text: str) -> bool:
    """Whether ``text`` can be sent to Redis as UTF-8 (a lone surrogate cannot)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _presence_list_fields(content: dict) -> tuple[str | None, int]:
    """``presence.list``'s ``(after, limit)``; ``FrameError`` ``invalid_field`` (with ``field``
    and ``"frame": "presence.list"``) when ``after`` is not null or a string of at most
    ``PRESENCE_CURSOR_MAX`` characters without a lone surrogate, or ``limit`` not a whole
    number from 1 to ``PRESENCE_PAGE_MAX``."""
    after = content.get("after")
    if after is not None and (
        not isinstance(after, str) or len(after) > PRESENCE_CURSOR_MAX or not _encodable(after)
    ):
        raise FrameError(
            "invalid_field",
            f"after must be null or a cursor (a string of at most {PRESENCE_CURSOR_MAX} characters).",
            field="after",
            frame="presence.list",
        )
    most = presence.page_max()
    limit = content.get("limit", most)
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= most:
        raise FrameError(
            "invalid_field",
            f"limit must be a whole number from 1 to {most}.",
            field="limit",
            frame="presence.list",
        )
    return after, limit


def _replay(*, room, after_seq: int, upto: int | None = None) -> tuple[list[tuple[int, str]] | None, int]:
    """Sync, one database hop: ``(seq, encoded message frame)`` for the messages after
    ``after_seq`` (up to ``upto`` when given) and the seq they reach; ``(None, latest_seq)`` when
    more than ``RESUME_MAX`` are missing."""
    # The room's last_seq is read with (or before) the replay: every seq up to it is committed
    # (commits follow seq order), so it is a safe seam even when the client claims more than the
    # room has.
    last_seq, data = selectors.room_replay_data(
        room_id=room.pk, after_seq=after_seq, limit=RESUME_MAX + 1, upto=upto
    )
    if upto is not None:
        last_seq = min(last_seq, upto)
    if len(data) > RESUME_MAX:
        return None, selectors.room_last_seq(room_id=room.pk)
    frames = [(m["seq"], events.encode_message_frame(m)) for m in data]
    return frames, (data[-1]["seq"] if data else last_seq)


def _read_checked(read, key: access.Key, **kwargs):
    """Sync, one database hop: the socket's access (``rooms.access``, ``reading=True``), then
    ``read(**kwargs)`` when it is still allowed. Returns ``(verdict, None)`` when refused,
    ``(None, result)`` otherwise, so no history reaches a socket whose access has ended, even if
    the event that should have closed it was lost."""
    refused = access.verdicts([key], reading=True)[0]
    if refused is not None:
        return refused, None
    return None, read(**kwargs)


def _react_checked(*, room, user, token_key: str | None, seq: int, emoji: str, add: bool):
    """Sync, one database hop: the socket's credentials (``Unauthenticated``), then the reaction
    change (``rooms.reactions.reaction_by_seq``)."""
    if not services.credentials_valid(user=user, token_key=token_key):
        raise services.Unauthenticated("The credentials of this socket are no longer valid.")
    try:
        return reactions.reaction_by_seq(room=room, seq=seq, user=user, emoji=emoji, add=add)
    except Room.DoesNotExist:
        raise services.NotFound("The room no longer exists.") from None


def _fetch(*, room, after_seq: int, before_seq: int | None) -> tuple[list[dict], bool]:
    data = selectors.room_messages_after_data(
        room=room, after_seq=after_seq, limit=FETCH_MAX + 1, before_seq=before_seq
    )
    return data[:FETCH_MAX], len(data) > FETCH_MAX


def _query_after_seq(scope) -> int | None:
    """``?after_seq=N`` on the socket URL: resume at connect (same as a ``resume`` frame).
    None when absent; raises ``FrameError`` (``invalid_field``) when not a whole number."""
    from urllib.parse import parse_qs

    values = parse_qs(scope.get("query_string", b"").decode("latin-1"), keep_blank_values=True).get(
        "after_seq"
    )
    if not values:
        return None
    if values[-1].isascii() and values[-1].isdigit() and int(values[-1]) <= SEQ_MAX:
        return int(values[-1])
    raise FrameError(
        "invalid_field", f"after_seq must be a whole number from 0 to {SEQ_MAX}.", field="after_seq"
    )


TAB_RE = re.compile(r"[A-Za-z0-9_-]{8,32}")


def query_tab(scope) -> str | None:
    """``?tab=<id>`` on a socket URL: the page's random tab id (8 to 32 of ``A-Z a-z 0-9 _ -``),
    the same on the page's room socket and user socket. A ``read.updated`` caused by a ``read``
    frame of that tab is not sent back to that tab's sockets (the page updated itself). Anything
    else (absent, too long, other characters) is ignored: None, and the socket gets every
    ``read.updated``."""
    from urllib.parse import parse_qs

    values = parse_qs(scope.get("query_string", b"").decode("latin-1"), keep_blank_values=True).get("tab")
    if values and TAB_RE.fullmatch(values[-1]):
        return values[-1]
    return None


def _refuse_constant(name: str):
    raise ValueError(f"{name} is not JSON")


# One decoder for every frame (``json.loads`` with an argument builds a new one per call).
_JSON_DECODER = json.JSONDecoder(parse_constant=_refuse_constant)


class RoomIds:
    """This node's slug → room id map, so that a socket can join its room's group before its one
    database read (``rooms.entry``): a group name needs the room's id, and the group join must
    come before the ``last_seq`` read (no message may fall between the two).

    Why it is safe: it is only a hint. ``rooms.entry`` reads the room with the access row and
    checks its slug (``enter_async``), or reads it by its slug (``enter``) and answers
    ``moved`` when the id differs (a room deleted and a new one made with its slug; slugs
    do not change otherwise), and every access rule is decided there, from the database. A stale
    entry costs one more hop, never a wrong answer. At most ``size`` slugs (the least recently
    used go first); a slug with no room is not kept."""

    def __init__(self, size: int = 10_000):
        self.size = size
        self.ids: dict[str, int] = {}

    def get(self, slug: str) -> int | None:
        """The room id last seen for ``slug`` (None: not known on this node)."""
        room_id = self.ids.pop(slug, None)
        if room_id is not None:
            self.ids[slug] = room_id  # most recently used last
        return room_id

    def clear(self) -> None:
        """Forget every slug (tests)."""
        self.ids.clear()

    def put(self, slug: str, room_id: int | None) -> None:
        """Remember ``room_id`` for ``slug`` (None: forget the slug)."""
        self.ids.pop(slug, None)
        if room_id is None:
            return
        self.ids[slug] = room_id
        while len(self.ids) > self.size:
            self.ids.pop(next(iter(self.ids)))


room_ids = RoomIds()


def _room_id(*, slug: str) -> int | None:
    """Sync, one database hop (a slug this node has not seen): the id of the room with this slug,
    or None when there is none."""
    room = selectors.room_get(slug=slug)
    return None if room is None else room.pk


async def dispatch_in_order(sources, dispatch, *, attach=None, deliver_now=None, expose=None) -> None:
    """Await events from every callable in ``sources`` (the socket's ``receive`` and the channel
    layer's ``receive`` for this consumer's channel) and ``await dispatch(event)`` for each, one
    at a time, in the order they arrived: the job of channels' ``await_many_dispatch``, without its
    per-event ``asyncio.wait`` over every source and a new task per event. Each source has one
    long-lived task that moves its events to an inbox; the dispatch loop reads the inbox.

    Measured under ``python -m bench`` (50 rooms of 20, bench/RESULTS.md, fourth pass): channels'
    loop was about 12 % of a node's CPU samples; replacing it took node CPU per delivery from 222
    to 201 µs (means of 4 alternating runs). An exception from a source or from ``dispatch``
    (``StopConsumer`` at disconnect included) ends the loop and is raised; the source tasks are
    cancelled first, so the layer's ``receive`` cleans up its channel as it does under channels.

    ``attach``, when given, is called once with a function ``push(event)`` that puts an event
    straight into the inbox (``chatsite.layers``: the channel layer delivers there directly,
    without a task wake-up per event).

    ``deliver_now``, when given, is a synchronous ``deliver_now(event) -> bool`` that ``push``
    calls first while the consumer is idle (no event being dispatched, none waiting): True means
    it handled the event, False sends it through the inbox as usual. Order is kept, because an
    event is handled at once only when nothing came before it that is not yet done.

    ``expose``, when given, is called once with a function ``enqueue(event)`` that puts an event
    of the consumer's own at the end of the inbox (a timer's work, done in order with the rest)."""
    loop = asyncio.get_running_loop()
    inbox = LightQueue()  # not asyncio.Queue: 3 KB less per socket (chatsite.queues)
    waiting = inbox._items  # empty exactly when the inbox is (LightQueue clears it when drained)
    busy = True  # an event is being dispatched, or the loop has stopped

    def push(event) -> None:
        if not busy and not waiting and deliver_now(event):
            return
        inbox.put_nowait((event, None))

    if attach is not None:
        attach(push if deliver_now is not None else lambda event: inbox.put_nowait((event, None)))
    if expose is not None:
        expose(lambda event: inbox.put_nowait((event, None)))

    async def pump(source):
        try:
            while True:
                inbox.put_nowait((await source(), None))
        except asyncio.CancelledError:
            raise
        except BaseException as exc:  # handed to the dispatch loop, which raises it
            inbox.put_nowait((None, exc))

    pumps = [loop.create_task(pump(source)) for source in sources]
    try:
        while True:
            busy = False
            event, error = await inbox.get()
            busy = True
            if error is not None:
                raise error
            await dispatch(event)
    finally:
        busy = True
        for task in pumps:
            task.cancel()
        for task in pumps:
            try:
                await task
            except asyncio.CancelledError:
                pass


class SocketConsumer(AsyncJsonWebsocketConsumer):
    """What every socket of a signed-in user shares (``RoomConsumer``, ``rooms.user_consumer.
    UserConsumer``): the dispatch loop and its clean-up on every ending, admission (4401, the
    per-user socket cap 4429), refusals and ends, safe frame decoding with error frames, the
    bounded database hop, the open-socket gauge and the access watch, the user's group events
    (``read.updated``, ``mention``, ``dm.created``, notices, token revocation) and the frame
    counters. Subclasses define ``connect``, ``receive_json``, ``pop_groups`` and the access
    checks (``access_keys`` / ``access_checked`` for the watch, ``recheck_access``)."""

    user_group = None
    closing = False
    counted_open = False  # counted in open_gauge (accepted)
    session_key = None  # a session socket's session (rooms.access checks it still exists) ...
    session_hash = None  # ... and its auth hash (still the user's password's), else None
    socket_slot = None  # this socket's place in its user's WS_MAX_SOCKETS_PER_USER (rooms.limits)
    tab = None  # the page's tab id (``?tab=``, ``query_tab``), or None

    async def __call__(self, scope, receive, send) -> None:
        """channels' ``AsyncConsumer.__call__`` (the channel layer's channel, ``base_send``), with
        ``dispatch_in_order`` in place of ``await_many_dispatch``, and the layer's events
        delivered straight into its inbox when the layer can (``chatsite.layers``)."""
        self.scope = scope
        self.channel_layer = get_channel_layer(self.channel_layer_alias)
        sources = [receive]
        attach = None
        if self.channel_layer is not None:
            try:
                self.channel_name = await asyncio.wait_for(
                    self.channel_layer.new_channel(), LAYER_JOIN_TIMEOUT
                )
            except UNAVAILABLE_ERRORS:
                # The Pub/Sub layer subscribes a new channel in Redis: without Redis there is no
                # channel, so refuse as connect() does when Redis fails there, not with a 500.
                unavailable_log.warning("connect", "refusing a socket: Redis unreachable", exc_info=True)
                await refuse_unstarted(receive, send, CLOSE_UNAVAILABLE)
                return
            receiver = getattr(self.channel_layer, "receiver", None)  # chatsite.layers: no proxy
            if receiver is not None:
                self.channel_receive = receiver(self.channel_name)
            else:
                self.channel_receive = functools.partial(self.channel_layer.receive, self.channel_name)
            sources.append(self.channel_receive)
            if hasattr(self.channel_layer, "attach"):  # chatsite.layers: events without a hop
                attach = functools.partial(self.channel_layer.attach, self.channel_name)
        self.base_send = send
        self.send_text_now = scope.get(SEND_TEXT_SCOPE_KEY)
        # Every ending runs the clean-up: a disconnect (StopConsumer after disconnect()), an
        # exception from a handler or from under it (the database or Redis gone mid-frame, a
        # write to a socket aborted while messages were fanned out), a cancellation by the
        # server. The exception is logged and answered with a close code here instead of
        # escaping to daphne, whose handling of it could itself fail on the dead socket.
        try:
            await dispatch_in_order(
                sources, self.dispatch, attach=attach, deliver_now=self.fast_path(), expose=self.expose_inbox
            )
        except StopConsumer:
            pass
        except UNAVAILABLE_ERRORS:
            unavailable_log.warning(
                "escaped",
                "closing a socket with %d: the database or Redis failed under it",
                CLOSE_UNAVAILABLE,
                exc_info=True,
            )
            await self.close_after_error(CLOSE_UNAVAILABLE)
        except Exception:
            unexpected_log.log(
                logging.ERROR,
                "escaped",
                "closing a socket with %d: unexpected error",
                CLOSE_INTERNAL_ERROR,
                exc_info=True,
            )
            await self.close_after_error(CLOSE_INTERNAL_ERROR)
        finally:
            await self.cleanup()

    async def close_after_error(self, code: int) -> None:
        """Close the socket with ``code`` after an error escaped a handler (a socket not yet
        accepted is refused: accepted, then closed). A peer already gone is not an error."""
        if self.closing and not self.counted_open:  # refused already, or cleaned up
            return
        self.closing = True
        try:
            if not self.counted_open:
                await self.base_send({"type": "websocket.accept"})
            await self.base_send({"type": "websocket.close", "code": code})
        except Exception:  # the socket is gone already (aborted): nothing left to tell it
            pass

    async def dispatch(self, message: dict) -> None:
        """Like channels' own, without its ``aclose_old_connections()`` hop to the database thread
        before every event (measured: over half of the per-delivery cost): every ORM call here goes
        through ``database_sync_to_async``, which closes old connections itself."""
        handler = getattr(self, get_handler_name(message), None)
        if handler is None:
            raise ValueError(f"No handler for message type {message['type']}")
        await handler(message)

    async def _remember_session(self, session) -> None:
        """A session socket keeps its session's key and auth hash (``_auth_user_hash``, which
        channels' ``get_user`` just verified against the user's password) for ``rooms.access``:
        the socket lives while that session exists and the user's password is unchanged. The
        hash comes from the auth middleware (``rooms.auth.SESSION_HASH_SCOPE_KEY``: also when it
        took the user from its per-node cache, the session itself then unread) or from the
        session's data, loaded by the user lookup; failing both, it is read on a thread."""
        if SESSION_HASH_SCOPE_KEY in self.scope:
            found = self.scope[SESSION_HASH_SCOPE_KEY]
        elif hasattr(session, "_session_cache"):
            found = session.get(HASH_SESSION_KEY)
        else:
            found = await database_sync_to_async(session.get)(HASH_SESSION_KEY)
        self.session_key, self.session_hash = session.session_key, found

    def credentials(self) -> tuple[str | None, str | None, str | None]:
        """This socket's part of an ``access.Key`` after room and user: (API token or None,
        session key or None, session auth hash or None)."""
        return self.scope.get("auth_token"), self.session_key, self.session_hash

    async def send(self, text_data=None, bytes_data=None, close=False) -> None:
        """Send a frame, unless the peer has just gone: a frame (a presence change, a message)
        can meet a socket the client closed a moment before its disconnect reaches us; that
        frame is dropped instead of failing the consumer (the client resumes by seq)."""
        try:
            await super().send(text_data=text_data, bytes_data=bytes_data, close=close)
        except _PEER_GONE:
            self.closing = True

    async def refuse(self, close_code: int) -> None:
        """Accept, then close with ``close_code`` (a refusal browsers can read)."""
        self.closing = True
        await self.accept()
        await self.close(code=close_code)

    async def end(self, close_code: int) -> None:
        """Close an accepted socket with ``close_code``; frames after this are ignored."""
        if not self.closing:
            self.closing = True
            await self.close(code=close_code)

    async def disconnect(self, code) -> None:
        """Called when the socket closes for any reason, also after a refused handshake."""
        await self.cleanup()

    async def cleanup(self) -> None:
        """Undo what the socket set up: the open-socket gauge, the access watch, its slot under
        ``WS_MAX_SOCKETS_PER_USER``, presence (``leave_presence``: a room socket's user announced gone if it was their last
        socket) and the groups (``pop_groups``). Run by ``disconnect``
        and again, whatever ended the consumer, by ``__call__``; idempotent (each step at most
        once), never raises, and waits on Redis at most ``CLEANUP_TIMEOUT`` seconds (past that,
        presence expires by TTL on the other nodes' sweeps)."""
        self.closing = True
        if self.counted_open:
            self.counted_open = False
            self.open_gauge.dec()
        access.watch().discard(self)
        try:
            await asyncio.wait_for(asyncio.shield(self._leave_everything()), CLEANUP_TIMEOUT)
        except TimeoutError:
            unavailable_log.warning(
                "cleanup", "socket clean-up took over %s s; presence expires by TTL", CLEANUP_TIMEOUT
            )
        except asyncio.CancelledError:
            raise
        except Exception:
            logger.exception("socket clean-up failed")

    async def _leave_everything(self) -> None:
        if self.socket_slot is not None:
            await self.socket_slot.release()  # idempotent, never raises
        await self.leave_presence()
        for group in self.pop_groups():
            try:
                await self.channel_layer.group_discard(group, self.channel_name)
            except UNAVAILABLE_ERRORS:  # Redis gone: the subscription went with it
                pass

    async def leave_presence(self) -> None:
        """Clean-up step before the groups are left (the room socket's presence); never raises."""

    def pop_groups(self) -> list[str]:
        """The groups this socket is in, forgotten (each left at most once)."""
        groups = [self.user_group] if self.user_group is not None else []
        self.user_group = None
        return groups

    # --- client → server ---------------------------------------------------------------------

    async def receive(self, text_data=None, bytes_data=None, **kwargs) -> None:
        """Called for every frame. Decodes and dispatches it; any bad frame is answered with an
        error frame and the socket stays open."""
        if self.closing:  # refused at connect, or being closed
            return
        frame_type = None  # for chatsite_ws_frames_received_total
        try:
            if text_data is None:
                raise FrameError("binary_frame", "Binary frames are not supported; send JSON text.")
            try:
                content = _JSON_DECODER.decode(text_data)
            except (ValueError, RecursionError):
                raise FrameError("invalid_json", "The frame is not valid JSON.") from None
            if not isinstance(content, dict):
                raise FrameError("not_object", 'A frame must be a JSON object with a "type".')
            frame_type = content.get("type")
            await self.receive_json(content)
        except FrameError as exc:
            metrics.frame_received(frame_type, exc.code)
            if exc.close_code is None:
                bad_frame_log.warning(exc.code, "bad frame from user %s: %s", self.scope["user"].pk, exc.code)
            await self.send_json({"type": "error", "code": exc.code, "detail": exc.detail, **exc.extra})
            if exc.close_code is not None:
                await self.end(exc.close_code)
        else:
            metrics.frame_received(frame_type)

    def read_counted(self, **extra):
        """For a read frame that does not touch the database (``presence.list``): counted
        against ``WS_READ_RATE`` as ``read_turn`` does (``rate_limited`` over it), without a turn
        on the database thread (``extra``: fields of the error frame, e.g. ``frame``). A context
        manager, for symmetry with ``read_turn``."""
        user_id = self.scope["user"].pk
        retry_after = limits.read_hit(user_id)
        if retry_after is not None:
            metrics.RATE_LIMITED.labels(scope="ws_read").inc()
            raise FrameError(
                "rate_limited",
                f"Too many reads; try again in {retry_after} s.",
                retry_after=retry_after,
                **extra,
            )
        return contextlib.nullcontext()

    def read_turn(self, frame: str, **extra):
        """For a read frame (``fetch``, ``resume``, ``read``): count it against ``WS_READ_RATE`` (per user,
        decided on this node), raising ``FrameError`` ``rate_limited`` with ``retry_after`` and
        ``frame`` (the refused frame's type) and ``extra`` (a reaction's ``seq``) over it (nothing is
        read; the socket stays open), else
        the user's turn on the database thread (``limits.read_turn``: at most
        ``WS_READS_IN_FLIGHT`` reads of a user at once)."""
        user_id = self.scope["user"].pk
        retry_after = limits.read_hit(user_id)
        if retry_after is not None:
            metrics.RATE_LIMITED.labels(scope="ws_read").inc()
            raise FrameError(
                "rate_limited",
                f"Too many reads; try again in {retry_after} s.",
                retry_after=retry_after,
                frame=frame,
                **extra,
            )
        return limits.read_turn(user_id)

    async def db(self, fn, /, *, bounded: bool = True, **kwargs):
        """``fn(**kwargs)`` on the database thread (one hop), sent once more at once when the
        pooled connection it got turned out dead (PostgreSQL restarted, backends terminated:
        ``dbconn.connection_lost``; the pool has been drained, so the second hop gets a fresh
        connection). Only for reads and idempotent writes (``member_join``).

        ``bounded``: the whole of it is given ``DATABASE_STATEMENT_TIMEOUT`` + 0.5 s (2 s by
        default), then raises ``TimeoutError``: a hop still queued behind others on the node's
        one database thread (a hung database makes each take up to the statement limit) is
        dropped from the queue instead of adding to the wait of every socket behind it. Not for
        the handshake's hops (``bounded=False``): a connect storm may queue them for longer on
        a healthy database, and daphne's handshake timeout bounds them; each statement is still
        bounded by ``chatsite.dbconn``."""
        call = database_sync_to_async(fn)

        async def once_or_twice():
            try:
                return await call(**kwargs)
            except DATABASE_ERRORS as exc:
                if not dbconn.connection_lost(exc):
                    raise
            return await call(**kwargs)

        limit = dbconn.client_timeout() if bounded else None
        return await asyncio.wait_for(once_or_twice(), None if limit is None else limit + DB_HOP_MARGIN)

    async def user_token_revoked(self, event: dict) -> None:
        """This user's API token was revoked: a socket opened with it closes with 4401."""
        if self.scope.get("auth_token") is not None:
            await self.end(CLOSE_UNAUTHENTICATED)

    async def user_notice(self, event: dict) -> None:
        """A direct notice to this user (``events.broadcast_user_notice``): forwards the
        ``{"type": "notice", "text": …}`` frame."""
        if not self.closing:
            await self.send(text_data=event["text"])

    async def user_dm_created(self, event: dict) -> None:
        """A direct message with this user was opened (``events.broadcast_dm_created``): forwards
        the ``{"type": "dm.created", "room": {...}}`` frame."""
        if not self.closing:
            await self.send(text_data=event["text"])

    async def user_read_updated(self, event: dict) -> None:
        """``user.read_updated`` / ``user.mention`` (``events.broadcast_read_updated``,
        ``events.broadcast_mention``): forwards the ``read.updated`` / ``mention`` frame; not a
        ``read.updated`` whose ``tab`` (the tab whose report moved the marker) is this socket's
        own tab (``query_tab``): that page already shows it."""
        if not self.closing and (event.get("tab") is None or event.get("tab") != self.tab):
            await self.send(text_data=event["text"])
            metrics.SENT_BY_EVENT[event["type"]].inc()

    user_mention = user_read_updated

    @classmethod
    async def encode_json(cls, content) -> str:
        return events.encode_frame(content)

    async def send_json(self, content: dict, close: bool = False) -> None:
        """Every frame built here (``hello``, ``ack``, ``error``, ...) goes out through this one
        method, counted by its ``type`` in ``chatsite_ws_frames_sent_total``. On an open socket
        under ``chatsite.serve`` the frame is written at once (``send_text_now``), not through
        channels' ``send`` and daphne's reply coroutine; the order is the same, since that path
        too has written the frame when its ``await`` returns."""
        text = events.encode_frame(content)
        if close or self.send_text_now is None or not self._written_now(text):
            await self.send(text_data=text, close=close)
        metrics.FRAMES_SENT.labels(type=content["type"]).inc()

    def _written_now(self, text: str) -> bool:
        """Whether ``text`` was handled by ``send_text_now``: written, or dropped because the peer
        has just gone (as ``send`` does). False: the socket is not open; nothing was sent."""
        try:
            return self.send_text_now(text)
        except _PEER_GONE:
            self.closing = True
            return True

    deliver_now = None  # a subclass's synchronous fast path for layer events (``dispatch_in_order``)
    enqueue = None  # puts an event of this consumer's own at the end of its inbox (``dispatch_in_order``)

    def fast_path(self):
        """The ``deliver_now`` that ``dispatch_in_order`` may call: the subclass's, when it can
        write frames synchronously (``chatsite.serve``'s ``send_text_now``)."""
        return self.deliver_now if self.send_text_now and self.deliver_now else None

    def expose_inbox(self, enqueue) -> None:
        self.enqueue = enqueue

    open_gauge = metrics.OPEN_SOCKETS  # the gauge this kind of socket is counted in while open

    async def admit(self):
        """The start of every ``connect``: the signed-in user, with this socket's slot under
        ``WS_MAX_SOCKETS_PER_USER`` taken (``rooms.limits``, one Redis script, before any
        database work); or None after refusing the socket with 4401 (not signed in) or 4429
        (too many sockets)."""
        self.tab = query_tab(self.scope)
        user = self.scope.get("user")
        if isinstance(user, LazyObject):  # channels' session user: every attribute read of the
            user = self.scope["user"] = user._wrapped  # lazy proxy costs a call, on every frame
        if user is None or not user.is_authenticated:
            await self.refuse(CLOSE_UNAUTHENTICATED)
            return None
        if self.scope.get("auth_token") is None and self.scope.get("session") is not None:
            await self._remember_session(self.scope["session"])
        self.socket_slot = await limits.admit_socket(user.pk, self)
        if self.socket_slot is None:
            metrics.RATE_LIMITED.labels(scope="ws_sockets").inc()
            await self.refuse(CLOSE_TOO_MANY_SOCKETS)
            return None
        return user

    async def accept_counted(self) -> None:
        """Accept the socket: counted in ``open_gauge`` until clean-up, and checked by the
        access watch (``rooms.access.Watch``) every ``ACCESS_RECHECK`` seconds."""
        await self.accept()
        self.counted_open = True
        self.open_gauge.inc()
        access.watch().register(self)

    async def user_access_changed(self, event: dict) -> None:
        """``user.access_changed`` (this user was deactivated or deleted): check this socket's
        access again and close it if it has ended (4401)."""
        if not self.closing:
            await self.recheck_access()

    async def user_sessions_changed(self, event: dict) -> None:
        """``user.sessions_changed``: one of this user's sessions ended (log-out) or their
        password changed (``services.user_sessions_changed``). The socket of the session that
        changed the password (``renewed``: its digest; Django gave it a new key) closes with
        4001, and the page reconnects with its new cookie; any other session socket of
        the user checks its session again and closes with 4401 if it ended or its auth hash no
        longer matches. Token sockets are not affected."""
        if self.closing or self.session_key is None:
            return
        if event.get("renewed") is not None and event["renewed"] == access.session_digest(self.session_key):
            await self.end(CLOSE_SESSION_RENEWED)
        else:
            await self.recheck_access()

    async def user_rooms_changed(self, event: dict) -> None:
        """``user.rooms_changed``: for the user socket (``rooms.user_consumer``); ignored here."""

    def _me(self) -> dict:
        user = self.scope["user"]
        return {"id": user.pk, "username": user.get_username()}


# Layer events a consumer forwards unchanged with no state of its own to update: written at once
# from the node's Pub/Sub read when the consumer is idle (RoomConsumer.deliver_now).
_FAST_FORWARDED = frozenset(
    {events.ROOM_PRESENCE, events.ROOM_MEMBER_UPDATED, events.ROOM_MEMBERS_JOINED, events.ROOM_UPDATED}
)


class RoomConsumer(SocketConsumer):
    """A member's socket in one room. Joins the room's channel-layer group on connect and leaves
    it on disconnect; a ``message.send`` is stored by ``services.message_post_async`` (one
    PostgreSQL statement from the event loop) and reaches every node through the layer after
    commit."""

    room = None
    group = None

    async def connect(self) -> None:
        """Called on the handshake. Accepts signed-in users under their socket cap into a room they
        may be in (joining a public room as a member) and sends ``hello`` (then, with
        ``?after_seq=N``, the replay and ``resumed``, as a ``resume`` frame would); otherwise
        accepts and closes at once with 4401, 4429, 4403, 4404, 4410, or 4503 when the database
        or Redis cannot be reached.

        Database work (``tests/test_connect_hops.py`` counts it): a member's socket, once this
        node knows the room's id for the slug (``room_ids``), costs no hop on the node's one
        database thread: ``rooms.entry.enter_async`` reads its access, the room and
        ``last_seq`` in a statement shared with the handshakes queued meanwhile, then the
        replay in one more. A new member of a public room (the join is a write) and the cases
        that fast path leaves (a replaced room) cost one hop, ``rooms.entry.enter``; the room's
        id costs one more, ``_room_id``, the first time.
        Order: the socket cap (Redis), then the groups (Redis), then the entry: the groups are
        joined before ``last_seq`` is read, so no message falls between the replay and the live
        frames."""
        user = await self.admit()
        if user is None:
            return
        slug = self.scope["url_route"]["kwargs"]["slug"]
        try:
            after_seq, bad_after_seq = _query_after_seq(self.scope), None
        except FrameError as exc:
            after_seq, bad_after_seq = None, exc
        try:
            entry = await self._enter(user, slug, after_seq)
        except UNAVAILABLE_ERRORS:
            unavailable_log.warning(
                "connect", "refusing a socket: database or Redis unreachable", exc_info=True
            )
            await self.refuse(CLOSE_UNAVAILABLE)
            return
        if entry.close_code is not None:
            await self.refuse(entry.close_code)
            return
        room = self.room = entry.room
        await self.accept_counted()  # gauge and access watch until clean-up
        self.hello_seq = entry.last_seq
        await self.send_json(
            {"type": "hello", "server_id": settings.SERVER_ID, "room": room.slug, "last_seq": entry.last_seq}
        )
        if bad_after_seq is not None:
            exc = bad_after_seq
            await self.send_json({"type": "error", "code": exc.code, "detail": exc.detail, **exc.extra})
        if entry.replay is not None:
            await self.send_replay(*entry.replay)
        await self.presence_join()

    async def _enter(self, user, slug: str, after_seq: int | None) -> Entry:
        """The handshake's database and group work (``connect``): the room's id (``room_ids``, or
        one hop), the groups joined (``LAYER_JOIN_TIMEOUT``), then ``rooms.entry.enter_async``
        from the event loop, or ``rooms.entry.enter`` in one hop when that cannot decide alone
        (inside the user's read turn when it replays, as a ``resume`` frame). Sets ``group`` and
        ``user_group`` (left by clean-up whatever happens). Raises ``UNAVAILABLE_ERRORS``."""
        room_id = room_ids.get(slug)
        if room_id is None:
            room_id = await self.db(_room_id, slug=slug, bounded=False)
            if room_id is None:
                return Entry(close_code=CLOSE_NOT_FOUND)
        self.user_group = events.user_group_name(user.pk)
        for _ in range(3):  # a slug's room replaced since this node saw it: follow it (twice at most)
            if self.group != events.room_group_name(room_id):
                if self.group is not None:
                    await self.channel_layer.group_discard(self.group, self.channel_name)
                self.group = events.room_group_name(room_id)
                await asyncio.wait_for(self._join_groups(), LAYER_JOIN_TIMEOUT)
            kwargs = {
                "slug": slug,
                "room_id": room_id,
                "user": user,
                "credentials": self.credentials(),
                "after_seq": after_seq,
            }
            async with (  # a replay is a read: not counted against WS_READ_RATE, but in turn
                limits.read_turn(user.pk) if after_seq is not None else contextlib.nullcontext()
            ):
                entry = await enter_async(**kwargs, timeout=ENTRY_TIMEOUT)
                if entry is None:
                    entry = await self.db(enter, bounded=False, **kwargs)
            if entry.moved_to is None:
                room_ids.put(slug, room_id if entry.room is not None else None)
                return entry
            room_id = entry.moved_to
            room_ids.put(slug, room_id)
        raise TimeoutError(f"the room of slug {slug!r} keeps changing")

    async def _join_groups(self) -> None:
        await self.channel_layer.group_add(self.group, self.channel_name)
        await self.channel_layer.group_add(self.user_group, self.channel_name)

    async def receive_json(self, content: dict, **kwargs) -> None:
        frame_type = content.get("type")
        if "type" not in content:
            raise FrameError("missing_field", 'The frame has no "type".', field="type")
        if not isinstance(frame_type, str):
            raise FrameError("invalid_field", '"type" must be a string.', field="type")
        if frame_type == "message.send":
            await self.message_send(content)
        elif frame_type == "resume":
            async with self.read_turn(frame_type):
                await self.resume(_seq_field(content, "after_seq", required=True), upto=self.hello_seq)
        elif frame_type == "fetch":
            async with self.read_turn(frame_type):
                await self.fetch(content)
        elif frame_type == "read":
            seq = _seq_field(content, "seq", required=True)
            async with self.read_turn(frame_type):
                await self.read_report(seq)
        elif frame_type in ("reaction.add", "reaction.remove"):
            seq = _seq_field(content, "seq", required=True)
            if "emoji" not in content:
                raise FrameError("missing_field", "emoji is required.", field="emoji", frame=frame_type)
            try:
                emoji = reactions.normalize_emoji(content["emoji"])
            except reactions.InvalidEmoji as exc:
                raise FrameError(exc.code, str(exc), field="emoji", frame=frame_type, seq=seq) from None
            async with self.read_turn(frame_type, seq=seq):
                await self.react(frame_type, seq, emoji)
        elif frame_type == "presence.list":
            after, limit = _presence_list_fields(content)
            with self.read_counted(frame="presence.list"):
                await self.presence_list(after, limit)
        elif frame_type == "typing":
            if limits.typing_allowed(self.scope["user"].pk, self.room.pk):  # per user; typing(): per socket
                await self.typing()
        else:
            raise FrameError("unknown_type", f"Unknown frame type {frame_type[:50]!r}.")

    async def message_send(self, content: dict) -> None:
        """``message.send``: validate, store (assigns ``seq``), then ack. The broadcast to the
        room is fired by the service after commit, so a message that was not stored is never
        sent to anyone."""
        client_msg_id = content.get("client_msg_id")
        # Echo the id only when it can be sent back (a lone surrogate cannot be encoded).
        extra = {"client_msg_id": client_msg_id} if is_valid_text(client_msg_id) else {}
        try:
            validated = send_frame_accepted(content) or _SEND_FRAME.run_validation(content)
        except ValidationError as exc:
            field, errors = next(iter(exc.detail.items()))
            error = errors[0]
            codes = dict(_FIELD_CODES, **_BODY_CODES) if field == "body" else _FIELD_CODES
            code = codes.get(error.code, "invalid_field")
            raise FrameError(code, f"{field}: {error}", field=field, **extra) from None
        if self.send_window is None:
            self.send_window = ratelimit.LocalWindow(settings.WS_SEND_RATE)
        retry_after = self.send_window.hit()
        if retry_after is not None:
            metrics.RATE_LIMITED.labels(scope="ws_send").inc()
            raise FrameError(
                "rate_limited", services.RateLimited(retry_after).detail, retry_after=retry_after, **extra
            )
        try:
            result = await services.message_post_async(
                room=self.room,
                author=self.scope["user"],
                token_key=self.scope.get("auth_token"),
                body=validated["body"],
                client_msg_id=validated["client_msg_id"],
                attachments=validated.get("attachments") or (),
                send_rate=settings.WS_SEND_RATE,  # the user's sends over all nodes and sockets
                reply_to=validated.get("reply_to"),
            )
        except ServiceError as exc:
            if exc.code == "rate_limited":
                metrics.RATE_LIMITED.labels(scope="ws_send").inc()
            raise FrameError(
                exc.code, exc.detail, close_code=_CLOSING_ERRORS.get(exc.code), **extra, **exc.extra
            ) from None
        except DATABASE_ERRORS:
            unavailable_log.warning(
                "send", "could not store a message in room %s", self.room.pk, exc_info=True
            )
            raise FrameError(
                "unavailable", "The message could not be stored; send it again.", **extra
            ) from None
        except Exception:
            logger.exception("unexpected error storing a message in room %s", self.room.pk)
            raise FrameError("internal_error", "The message could not be stored.", **extra) from None
        message = result.message
        await self.send_json(
            {"type": "ack", "client_msg_id": message.client_msg_id, "id": message.pk, "seq": message.seq}
        )

    async def resume(self, after_seq: int, upto: int | None = None) -> None:
        """``resume``: replay the stored messages with ``after_seq < seq <= K`` as ``message``
        frames in seq order, then ``{"type": "resumed", "last_seq": K}``; every message after K
        arrives live. K is the ``last_seq`` of this socket's ``hello`` (the ``resume`` frame
        passes it as ``upto``; None: the room's last seq now), because the messages after that
        one may already have reached the client live before its frame. ``?after_seq=N`` at
        connect replays the same frames without a hop of its own (``rooms.entry``, ``send_replay``).
        Frames are never sent twice: live copies of replayed seqs are dropped, and replayed seqs
        that already went out live are skipped. More than ``RESUME_MAX`` (1,000) missing:
        ``{"type": "resync", "latest_seq": K}`` instead, and the client reloads through the
        history API.

        Why the seam is exact: the room's row lock makes messages commit in seq order, so the
        replay's read sees exactly seqs 1..K, and every later one arrives live (the socket joined
        the group before ``hello``)."""
        refused, replay = await self.db_read(
            "resume",
            functools.partial(_read_checked, _replay, self.access_key()),
            room=self.room,
            after_seq=after_seq,
            upto=upto,
        )
        if refused is not None:
            await self.access_lost(refused, answer=True)
            return
        await self.send_replay(*replay)

    async def send_replay(self, frames: list[tuple[int, str]] | None, latest: int) -> None:
        """Send a replay (``_replay``'s result): each ``message`` frame whose seq did not already go
        out live, in seq order, then ``{"type": "resumed", "last_seq": latest}``; or, when
        ``frames`` is None (over ``RESUME_MAX`` missing), ``{"type": "resync", "latest_seq":
        latest}``. Live copies of the replayed seqs are dropped from here on."""
        if frames is None:
            await self.send_json({"type": "resync", "latest_seq": latest})
            return
        self.replayed_upto = max(self.replayed_upto, latest)
        sent = 0
        for seq, text in frames:
            if seq not in self.live_seqs:
                await self.send(text_data=text)
                sent += 1
        metrics.SENT_BY_EVENT[events.ROOM_MESSAGE].inc(sent)
        await self.send_json({"type": "resumed", "last_seq": latest})

    async def react(self, frame_type: str, seq: int, emoji: str) -> None:
        """``reaction.add`` / ``reaction.remove``: ``{"type": "reaction.add", "seq": int, "emoji":
        "👍"}`` adds (removes) the user's reaction to the message ``seq`` of this room
        (``rooms.reactions``: adding twice counts once, removing one you do not have is a
        no-op), answered with::

            {"type": "reaction.ack", "action": "add" | "remove", "seq": int, "emoji": str,
             "changed": bool, "reactions": [...the message's reactions after it...]}

        and, when it changed something, ``reaction.updated`` to every socket of the room on
        every node (this one included). One database hop, counted as a read frame
        (``WS_READ_RATE``, ``WS_READS_IN_FLIGHT``). Errors (with ``"frame"``, and ``seq``):
        ``invalid_emoji``, ``message_not_found``, ``muted`` (adding), ``conflict`` (a deleted
        message), ``unavailable``, ``rate_limited``; ``banned``, ``archived``, ``not_found`` and
        ``unauthenticated`` are followed by the close code, as for a send."""
        try:
            result = await self.db(
                _react_checked,
                room=self.room,
                user=self.scope["user"],
                token_key=self.scope.get("auth_token"),
                seq=seq,
                emoji=emoji,
                add=frame_type == "reaction.add",
            )
        except ServiceError as exc:
            raise FrameError(
                exc.code,
                exc.detail,
                close_code=_CLOSING_ERRORS.get(exc.code),
                frame=frame_type,
                seq=seq,
                **exc.extra,
            ) from None
        except DATABASE_ERRORS:
            unavailable_log.warning(
                "react", "reaction: database unavailable in room %s", self.room.pk, exc_info=True
            )
            raise FrameError(
                "unavailable", "The reaction could not be stored; send it again.", frame=frame_type, seq=seq
            ) from None
        await self.send_json(
            {
                "type": "reaction.ack",
                "action": frame_type.split(".", 1)[1],
                "seq": seq,
                "emoji": emoji,
                "changed": result.changed,
                "reactions": result.reactions,
            }
        )

    async def read_report(self, seq: int) -> None:
        """``read``: ``{"type": "read", "seq": int}`` moves the user's read marker in this room
        (``reads.read_report``: never backward, clamped to the room's last seq). The report joins
        this node's current tick (``reads.read_report_soon``: every report a node gets within
        ``reads.READ_TICK``, 0.25 s, is written in one statement) and this returns at once, so the
        socket's next frames do not wait for it; once the tick has committed, every socket of the
        user gets ``read.updated`` through the layer when the marker moved, except the sockets
        of this socket's own tab (``?tab=``, ``query_tab``), whose page updated itself.
        No answer of its own; ``not_found`` (an error frame, the socket kept: access events close
        it) when the user is not a member of the room; ``unavailable`` (with ``"frame": "read"``)
        when the database cannot be used (report again later). Those two come after the tick,
        possibly after answers to later frames."""
        report = reads.read_report_soon(room=self.room, user=self.scope["user"], seq=seq, tab=self.tab)
        report.add_done_callback(self._read_answered)

    def _read_answered(self, report: asyncio.Future) -> None:
        """A queued read report's outcome: nothing when it was written; else its error frame, sent
        from a task of its own (kept in ``_pending_closes`` until it is done)."""
        if report.cancelled():
            return
        exc = report.exception()
        if exc is None or self.closing:
            return
        if isinstance(exc, ServiceError):
            frame = {"type": "error", "code": exc.code, "detail": exc.detail}
        elif isinstance(exc, DATABASE_ERRORS):
            unavailable_log.warning("read", "read: database unavailable in room %s", self.room.pk)
            frame = {
                "type": "error",
                "code": "unavailable",
                "detail": "The read could not be stored now; report it again.",
                "frame": "read",
            }
        else:
            logger.error("unexpected error storing a read report in room %s", self.room.pk, exc_info=exc)
            frame = {
                "type": "error",
                "code": "internal_error",
                "detail": "The read could not be stored.",
                "frame": "read",
            }
        task = asyncio.ensure_future(self.send_json(frame))
        _pending_closes.add(task)
        task.add_done_callback(_pending_closes.discard)

    async def fetch(self, content: dict) -> None:
        """``fetch``: ``{"type": "fetch", "after_seq": int, "before_seq": int (optional)}``,
        answered with ``{"type": "history", "messages": [...], "has_more": bool}``: up to 200
        stored messages with ``after_seq < seq < before_seq``, oldest first (gap repair without
        the REST API)."""
        after_seq = _seq_field(content, "after_seq", required=True)
        before_seq = _seq_field(content, "before_seq", required=False)
        refused, page = await self.db_read(
            "fetch",
            functools.partial(_read_checked, _fetch, self.access_key()),
            room=self.room,
            after_seq=after_seq,
            before_seq=before_seq,
        )
        if refused is not None:
            await self.access_lost(refused, answer=True)
            return
        messages, has_more = page
        await self.send_json({"type": "history", "messages": messages, "has_more": has_more})

    async def db_read(self, frame: str, fn, /, **kwargs):
        """``db`` for a ``fetch`` or ``resume``: the database unreachable, hung or failing is a
        ``FrameError`` ``unavailable`` (with ``"frame": frame``; the socket stays open and the
        client asks again), not an exception that would end the socket with 1011."""
        try:
            return await self.db(fn, **kwargs)
        except DATABASE_ERRORS:
            unavailable_log.warning(
                frame, "%s: database unavailable in room %s", frame, self.room.pk, exc_info=True
            )
            raise FrameError(
                "unavailable", "The messages could not be read now; ask again.", frame=frame
            ) from None

    # --- channel layer → client ----------------------------------------------------------------

    # --- presence and typing -----------------------------------------------------------------

    present = False  # in the presence store (rooms.presence) until disconnect
    send_window = None  # this socket's own count against WS_SEND_RATE (rooms.ratelimit)
    last_typing = float("-inf")  # time.monotonic() of the last relayed typing; none yet

    async def presence_join(self) -> None:
        """After ``hello``: record this socket in the presence store, tell the room if its user
        just came online (``presence.diff``), and send the socket the first page of the list:
        ``{"type": "presence", "count": int, "online": [{"id", "username"}, ...], "next": str |
        null, "v": int}`` (at most ``PRESENCE_NAMES``; ``v``: ``rooms.presence.Page``; one Redis
        script with the join, O(page) whatever the room's size). Best effort: without Redis the chat goes on with no presence frames."""
        me = self._me()
        store = presence.store()
        # In the heartbeat first: if the store cannot be reached now, the next refresh records
        # this socket and announces its user (Heartbeat), and disconnect still announces the leave.
        presence.heartbeat_for_loop().add(self.channel_name, self.room.pk, me["id"], me["username"])
        self.present = True
        try:
            came_online, (count, online, cursor, version) = await store.join(
                self.room.pk, me["id"], me["username"], self.channel_name, presence.names_limit()
            )
            if came_online:
                presence.announce(self.room.pk, joins=[me])
        except UNAVAILABLE_ERRORS:
            unavailable_log.warning("presence", "presence store unreachable", exc_info=True)
            return
        await self.send_json(
            {"type": "presence", "count": count, "online": online, "next": cursor, "v": version}
        )

    async def presence_list(self, after: str | None, limit: int) -> None:
        """``presence.list``: ``{"type": "presence.list", "after": str | null, "limit": int}``,
        answered with ``{"type": "presence.page", "count": int, "online": [{"id", "username"},
        ...], "next": str | null, "v": int}``: up to ``limit`` online users after the cursor ``after`` (a
        ``next`` of a ``presence`` or ``presence.page`` frame), in name order; following ``next``
        until null gives every user online exactly once (users coming and going meanwhile
        excepted: diffs tell those). A cursor that names nobody is no error: the page starts
        after where it would sort. One Redis script, O(log n + limit). ``unavailable`` (with
        ``"frame": "presence.list"``) when Redis cannot be reached."""
        try:
            count, online, cursor, version = await presence.store().page(self.room.pk, after, limit)
        except UNAVAILABLE_ERRORS:
            unavailable_log.warning("presence", "presence store unreachable", exc_info=True)
            raise FrameError(
                "unavailable", "The online list could not be read now; ask again.", frame="presence.list"
            ) from None
        await self.send_json(
            {"type": "presence.page", "count": count, "online": online, "next": cursor, "v": version}
        )

    async def presence_leave(self) -> None:
        me = self._me()
        presence.heartbeat_for_loop().discard(self.channel_name)
        try:
            await presence.store().leave(self.room.pk, me["id"], self.channel_name)
            # Announced even when the store had no record of this connection (emptied by a Redis
            # restart until the next heartbeat): the batch says whether the user is still online
            # (another tab) or gone, so announcing every close is safe.
            presence.announce(self.room.pk, leaves=[me])
        except UNAVAILABLE_ERRORS:  # the heartbeat of other nodes expires it within the TTL
            unavailable_log.warning("presence", "presence store unreachable", exc_info=True)

    async def typing(self) -> None:
        """``{"type": "typing"}``: relayed to the room's other members as ``{"type": "typing",
        "user": {"id", "username"}}``, never stored; at most one every ``TYPING_INTERVAL``
        seconds per socket (2 s; more are dropped without an answer)."""
        now = time.monotonic()
        if now - self.last_typing < TYPING_INTERVAL:
            return
        self.last_typing = now
        try:
            await events.typing(room_id=self.room.pk, user=self._me())
        except UNAVAILABLE_ERRORS:
            pass  # a lost typing hint harms no one

    async def room_presence(self, event: dict) -> None:
        """``presence.diff`` from any node (batched there: ``rooms.presence.Announcer``): forwarded."""
        if not self.closing:
            await self.send(text_data=event["text"])
            metrics.SENT_BY_EVENT[event["type"]].inc()

    def backed_up(self) -> bool:
        """Whether this socket's client has more than ``TYPING_DROP_BYTES`` unread (known under
        ``python -m chatsite.serve``, which puts a backlog callable in the scope)."""
        backlog = self.scope.get("chatsite.backlog")
        return backlog is not None and backlog() > TYPING_DROP_BYTES

    async def room_typing(self, event: dict) -> None:
        """Someone is typing: forwarded to every socket but that user's own, and not to a client
        that is behind on reading (typing hints are the first thing dropped for a slow client)."""
        if not self.closing and event["user_id"] != self.scope["user"].pk and not self.backed_up():
            await self.send(text_data=event["text"])
            metrics.SENT_BY_EVENT[event["type"]].inc()

    replayed_upto = 0  # highest seq sent by a resume; live copies of those are dropped
    hello_seq = None  # the last_seq this socket's hello gave
    live_seqs = frozenset()  # seqs up to hello_seq that reached this socket live (a handful at most)

    def _sent_live(self, seq: int) -> None:
        """Note a live message sent: one of seq <= hello_seq (committed while this socket was
        joining) must not be replayed again by a ``resume`` frame."""
        if self.hello_seq is not None and seq <= self.hello_seq:
            self.live_seqs = self.live_seqs | {seq}

    async def room_message(self, event: dict) -> None:
        """Called for each ``room.message`` layer event: forwards the ready-encoded frame,
        unless a resume already sent that seq."""
        if not self.closing and event["seq"] > self.replayed_upto:
            await self.send(text_data=event["text"])
            self._sent_live(event["seq"])
            metrics.SENT_BY_EVENT[event["type"]].inc()

    def deliver_now(self, event: dict) -> bool:
        """A ``room.message``, ``room.presence``, ``room.member_updated`` or ``room.updated`` event for an idle consumer, handled at once in
        the node's Pub/Sub read (``dispatch_in_order``'s ``deliver_now``): the same as
        ``room_message`` / ``room_presence``, with the frame written by ``chatsite.serve``'s
        synchronous ``send_text_now`` instead of through channels' ``send`` and daphne's reply
        coroutine. Returns False for any other event, and when the socket is not open, so the
        usual path handles it. (A presence diff goes to every socket of a room once per node per
        batch: in a join storm of 10,000 that is 10,000 frames a second on each node.)
        ``member.updated`` and ``room.updated`` (``_FAST_FORWARDED``) are forwarded the same way:
        a new member of a public room is announced to everyone in it, so n new members joining
        together cost about n²/2 frames (3,000 new members: 118 s to join through the slow
        path, bench/RESULTS.md, issue 16's final pass).

        Measured: bench/RESULTS.md, fifth pass (messages) and "Large rooms" (diffs)."""
        kind = event.get("type")
        if kind == events.ROOM_MESSAGE:
            if self.closing or event["seq"] <= self.replayed_upto:
                return True
        elif kind not in _FAST_FORWARDED:
            return False
        elif self.closing:
            return True
        try:
            if not self.send_text_now(event["text"]):
                return False
        except _PEER_GONE:
            self.closing = True
            return True
        except Exception:  # never into the node's Pub/Sub reader, which serves every member
            # A socket that cannot be written to (uvloop: "unable to perform operation on
            # <UVPoll closed=True>" once the client aborted) gets nothing more: it is closed with
            # 1011 if it still can be, and cleaned up when its disconnect comes.
            unexpected_log.log(
                logging.ERROR, "deliver", "could not send a frame; closing the socket", exc_info=True
            )
            if not self.closing:
                task = asyncio.get_running_loop().create_task(self.close_after_error(CLOSE_INTERNAL_ERROR))
                _pending_closes.add(task)
                task.add_done_callback(_pending_closes.discard)
            return True
        if kind == events.ROOM_MESSAGE and self.hello_seq is not None:
            self._sent_live(event["seq"])
        metrics.SENT_LIVE[kind] += 1
        return True

    async def room_message_updated(self, event: dict) -> None:
        """``message.updated`` / ``message.deleted``: a change of state, always forwarded."""
        if not self.closing:
            await self.send(text_data=event["text"])
            metrics.SENT_BY_EVENT[event["type"]].inc()

    room_message_deleted = room_message_updated
    room_reaction_updated = room_message_updated  # reaction.updated: a change of state, always forwarded
    room_thread_updated = room_message_updated  # thread.updated: likewise

    async def room_archived(self, event: dict) -> None:
        """The room was archived: forward ``room.archived``, then close with 4410."""
        if not self.closing:
            await self.send(text_data=event["text"])
            metrics.SENT_BY_EVENT[event["type"]].inc()
            await self.end(CLOSE_ARCHIVED)

    async def room_member_updated(self, event: dict) -> None:
        """``member.updated`` / ``room.updated``: a member's or the room's new state, forwarded."""
        if not self.closing:
            await self.send(text_data=event["text"])
            metrics.SENT_BY_EVENT[event["type"]].inc()

    room_updated = room_member_updated
    room_members_joined = room_member_updated  # members.joined: a count of new members

    async def room_member_removed(self, event: dict) -> None:
        """A member was banned (close 4403), left (close 4000) or had their membership deleted by
        a moderator (``removed``: the code a fresh access check gives, 4404 in a private room,
        else 4000): ends this socket if it is theirs; other sockets get the ``member.removed``
        frame when the event carries one."""
        if self.closing:
            return
        if event["user_id"] != self.scope["user"].pk:
            if event.get("text"):
                await self.send(text_data=event["text"])
                metrics.SENT_BY_EVENT[event["type"]].inc()
            return
        if event["reason"] == "unbanned":
            return
        if event["reason"] == "removed":
            await self.recheck_access(otherwise=CLOSE_LEFT)
        else:
            await self.end(CLOSE_BANNED if event["reason"] == "banned" else CLOSE_LEFT)

    async def room_access_changed(self, event: dict) -> None:
        """``room.access_changed`` (the room was made private or deleted) and
        ``user.access_changed`` (this user was deactivated or deleted): check this socket's
        access again and close it if it has ended (4401, 4403, 4404)."""
        if not self.closing:
            await self.recheck_access()

    user_access_changed = room_access_changed

    def access_key(self) -> access.Key:
        """What ``rooms.access`` checks for this socket: (room id, user id, API token or None,
        session key or None, session auth hash or None)."""
        return (self.room.pk, self.scope["user"].pk, *self.credentials())

    async def recheck_access(self, otherwise: int | None = None) -> None:
        """Check this socket's access now (one statement for all the sockets of this node doing
        the same: ``access.Checker``) and close it if it has ended, else with ``otherwise`` when
        given. When the database cannot tell, the socket is closed with 4503 (it reconnects
        with backoff and is checked again at connect): an event said access may have ended."""
        try:
            refused = await access.checker().check(self.access_key())
        except UNAVAILABLE_ERRORS:
            unavailable_log.warning(
                "recheck",
                "access recheck failed; closing the socket with %d",
                CLOSE_UNAVAILABLE,
                exc_info=True,
            )
            await self.end(CLOSE_UNAVAILABLE)
            return
        if refused is not None:
            await self.access_lost(refused)
        elif otherwise is not None:
            await self.end(otherwise)

    async def access_lost(self, verdict: str, answer: bool = False) -> None:
        """This socket's access ended (``verdict``: a ``rooms.access`` verdict): no frame of the
        room is sent after this; the socket is closed with the verdict's code (4401, 4403, 4404,
        4410). ``answer``: first send ``{"type": "error", "code": verdict}`` (a refused read)."""
        if self.closing:
            return
        self.closing = True  # live frames stop now, before anything else goes out
        if answer:
            detail = {
                "not_found": "No such room.",
                "banned": "You are banned from this room.",
                "unauthenticated": "The credentials of this socket are no longer valid.",
                "archived": "The room is archived.",
            }[verdict]
            await self.send_json({"type": "error", "code": verdict, "detail": detail})
        await self.close(code=_CLOSING_ERRORS[verdict])

    async def leave_presence(self) -> None:
        if self.present:
            self.present = False
            try:
                await self.presence_leave()
            except Exception:
                logger.exception("presence leave failed; the user expires by TTL")

    def pop_groups(self) -> list[str]:
        groups = [g for g in (self.group, self.user_group) if g is not None]
        self.group = self.user_group = None
        return groups

    def access_keys(self) -> list[access.Key]:
        """What the access watch checks for this socket (``rooms.access.Watch``)."""
        return [self.access_key()]

    async def access_checked(self, verdicts: list[str | None]) -> bool:
        """The watch's verdicts for ``access_keys()``: closes the socket when refused; returns
        whether it did."""
        if verdicts[0] is not None and not self.closing:
            await self.access_lost(verdicts[0])
            return True
        return False


class NotFoundConsumer(AsyncWebsocketConsumer):
    """Any WebSocket path that is not a room: accepted and closed with 4404, never an error."""

    async def connect(self) -> None:
        await self.accept()
        await self.close(code=CLOSE_NOT_FOUND)
