"""Prometheus metrics of this node, served at ``/metrics`` (``rooms.views.metrics``).

Every metric object lives here; the instrumented modules only increment them. They are
registered in ``prometheus_client``'s default registry at import, once per process: daphne runs
one process per node, so each node exposes its own counts (no multiprocess mode; Prometheus
scrapes every node and sums). Counters start at 0 when a node starts.

``/metrics`` answers 404 unless the request carries ``Authorization: Bearer <METRICS_TOKEN>`` or
comes from an address in ``METRICS_ALLOW`` (see ``rooms.views.metrics`` and README.md).

Names, units and labels (counters are exposed with the ``_total`` suffix):

- ``chatsite_ws_open_sockets`` (gauge, sockets): room sockets accepted into a room and not yet
  disconnected. Refused handshakes (4401, 4403, 4404, 4410) are not counted.
- ``chatsite_ws_frames_received_total{type, error}`` (counter, frames): client frames, counted
  once each when handled. ``type``: ``message.send`` (and the other client frame types in
  ``CLIENT_FRAME_TYPES``), or ``other`` for every other frame (an unknown or missing ``type``, not
  JSON, not an object, binary); the client's own ``type`` text is never a label value. ``error``: empty for a frame handled without error, else the error code
  sent back (``invalid_json``, ``body_too_long``, ``muted``, ``unavailable``, ...).
- ``chatsite_ws_frames_sent_total{type}`` (counter, frames): frames sent to clients, by frame
  ``type``: ``hello``, ``ack``, ``error``, ``message``, ``message.updated``,
  ``message.deleted``, ``room.archived``, and any other type the consumer sends. Live frames
  count once per socket they are delivered to.
- ``chatsite_messages_stored_total`` (counter, messages): new messages committed by this node,
  counted when their commit runs ``rooms.events.broadcast_message`` (the one ``on_commit``
  callback ``rooms.services.message_post`` registers per new message; a retry that stores
  nothing is not counted, a failed broadcast is).
- ``chatsite_fanout_latency_seconds{event}`` (histogram, seconds): from the commit (the start of
  the ``on_commit`` callback) to the broadcast handed to the channel layer (``group_send``
  returned), per layer ``event`` (``room.message``, ``room.message_updated``, ...). Only
  broadcasts the layer took are observed.
- ``chatsite_layer_errors_total{event}`` (counter, errors): broadcasts the channel layer refused
  (the change stays stored; clients recover it by ``seq``). Mirrors
  ``rooms.events.broadcast_failures``, per layer ``event``.
- ``chatsite_rate_limited_total{scope}`` (counter, requests): requests answered 429, by
  throttle ``scope``: ``send`` (REST sends), ``login`` (the token route, the log-in pages and
  the admin's log-in page; ``rooms.login_throttle``), ``signup`` (the sign-up page), ``password_reset`` (the reset request page); and
  ``ws_send`` (WebSocket sends answered ``rate_limited``).
- ``chatsite_ws_origin_refused_total`` (counter, handshakes): WebSocket handshakes refused with
  HTTP 403 for their ``Origin`` (foreign, missing without a token, or a host not allowed).
- ``chatsite_server_connections`` (gauge, connections): under ``python -m chatsite.serve``, the
  HTTP and WebSocket connections daphne tracks: open ones, and closed ones whose application
  its checker has not reaped yet (a value that only grows means the checker stopped).
- ``chatsite_application_checker_errors_total`` (counter, checks): connection checks of that
  checker, or of daphne's timeout checker, that raised (logged; the checker goes on).
- ``chatsite_connections_aborted_total`` (counter, connections): connections the node aborted
  because the peer reset them and uvloop no longer polled their socket
  (``chatsite.serve.drop_connections_with_dead_polls``); each is then cleaned up as a close.
- ``chatsite_node_info{server_id}`` (gauge, always 1): this node's ``SERVER_ID``.

Plus ``prometheus_client``'s default process and Python collectors (``process_*``,
``python_*``).
"""

import collections
import threading

from django.conf import settings
from prometheus_client import Counter, Gauge, Histogram, disable_created_metrics

# No ``*_created`` series beside each counter and histogram (Prometheus does not need them).
disable_created_metrics()

OPEN_SOCKETS = Gauge(
    "chatsite_ws_open_sockets",
    "Room WebSockets accepted into a room and not yet disconnected.",
)

USER_SOCKETS = Gauge(
    "chatsite_ws_open_user_sockets",
    "User WebSockets (/ws/user/, the sidebar) accepted and not yet disconnected.",
)

FRAMES_RECEIVED = Counter(
    "chatsite_ws_frames_received",
    "Client frames handled, by type (message.send, ... or other) and error code (empty: none).",
    ["type", "error"],
)


class _FramesSent(Counter):
    """``Counter`` that first adds the live deliveries counted in ``SENT_LIVE`` (see there)
    whenever it is collected (a scrape, ``REGISTRY.get_sample_value``)."""

    def collect(self):
        fold_sent_live()
        return super().collect()


FRAMES_SENT = _FramesSent(
    "chatsite_ws_frames_sent",
    "Frames sent to clients, by frame type; live frames once per receiving socket.",
    ["type"],
)

MESSAGES_STORED = Counter(
    "chatsite_messages_stored",
    "New messages committed by this node.",
)

# 0.1 ms .. 1 s: handing a broadcast to Redis takes well under a millisecond when all is well;
# the upper buckets catch a busy event loop or a slow Redis.
FANOUT_BUCKETS = (
    0.0001,
    0.00025,
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
)

FANOUT_LATENCY = Histogram(
    "chatsite_fanout_latency_seconds",
    "Seconds from commit (on_commit callback start) to the broadcast handed to the channel layer.",
    ["event"],
    buckets=FANOUT_BUCKETS,
)

GC_PAUSE = Histogram(
    "chatsite_gc_pause_seconds",
    "Seconds each garbage collection of a node held its event loop (every socket of the node "
    "waits), by generation (0 young, 1 middle, 2 full); observed by chatsite.serve.tune_gc.",
    ["generation"],
    buckets=FANOUT_BUCKETS,
)

LAYER_ERRORS = Counter(
    "chatsite_layer_errors",
    "Broadcasts the channel layer refused (the change stays stored), by layer event type.",
    ["event"],
)

RATE_LIMITED = Counter(
    "chatsite_rate_limited",
    "Requests refused for their rate, by scope: REST sends (send), log-ins (login: token route and "
    "pages), sign-ups (signup) and password-reset requests (password_reset) answered 429, WebSocket sends (ws_send) and reads (ws_read) "
    "answered rate_limited, sockets over the per-user cap (ws_sockets) closed 4429, and HTTP requests over a client's "
    "requests in flight on a node (http_in_flight) answered 429.",
    ["scope"],
)

SEARCH_INDEX_CLEANUPS = Counter(
    "chatsite_search_index_cleanups",
    "Merges of the search indexes' GIN pending lists started by this node after its sends "
    "(rooms.search_index), by outcome: cleaned, skipped (another node was merging), failed.",
    ["outcome"],
)

ORIGIN_REFUSED = Counter(
    "chatsite_ws_origin_refused",
    "WebSocket handshakes refused (HTTP 403) for their Origin.",
)

SERVER_CONNECTIONS = Gauge(
    "chatsite_server_connections",
    "HTTP and WebSocket connections the server tracks: open, or closed and not yet reaped.",
)

APPLICATION_CHECKER_ERRORS = Counter(
    "chatsite_application_checker_errors",
    "Connection checks of the server's application or timeout checker that raised (it goes on).",
)

CONNECTIONS_ABORTED = Counter(
    "chatsite_connections_aborted",
    "Connections aborted because their socket was reset by the peer and no longer polled.",
)

NODE_INFO = Gauge(
    "chatsite_node_info",
    "This node's SERVER_ID (value always 1).",
    ["server_id"],
)
NODE_INFO.labels(server_id=settings.SERVER_ID).set(1)


class _SentByEvent(dict):
    """Layer event type → the ``chatsite_ws_frames_sent_total`` child of the frame it carries
    (bound once, so the per-delivery path is one lookup and one increment)."""

    def __missing__(self, event_type: str):
        return FRAMES_SENT.labels(type="other")


SENT_BY_EVENT = _SentByEvent(
    {
        "room.message": FRAMES_SENT.labels(type="message"),
        "room.message_updated": FRAMES_SENT.labels(type="message.updated"),
        "room.message_deleted": FRAMES_SENT.labels(type="message.deleted"),
        "room.reaction_updated": FRAMES_SENT.labels(type="reaction.updated"),
        "room.thread_updated": FRAMES_SENT.labels(type="thread.updated"),
        "room.archived": FRAMES_SENT.labels(type="room.archived"),
        "room.member_updated": FRAMES_SENT.labels(type="member.updated"),
        "room.members_joined": FRAMES_SENT.labels(type="members.joined"),
        "room.member_removed": FRAMES_SENT.labels(type="member.removed"),
        "room.updated": FRAMES_SENT.labels(type="room.updated"),
        "room.presence": FRAMES_SENT.labels(type="presence.diff"),
        "room.typing": FRAMES_SENT.labels(type="typing"),
        "user.read_updated": FRAMES_SENT.labels(type="read.updated"),
        "user.mention": FRAMES_SENT.labels(type="mention"),
        "user.dm_created": FRAMES_SENT.labels(type="dm.created"),
    }
)


# Live frames delivered, by layer event type, counted on the per-socket hot path as a plain dict
# increment (``SENT_LIVE[kind] += 1``; about 1 µs less per delivery than a prometheus_client
# child's ``inc``, which takes a lock: 5 % of a node's CPU under load, yappi, bench/RESULTS.md
# session 17 pass). Only the event loop's thread writes it; ``fold_sent_live`` adds what is new
# to ``chatsite_ws_frames_sent_total`` when that is collected.
SENT_LIVE: "collections.Counter[str]" = collections.Counter()
_sent_folded: dict[str, int] = {}
_fold_lock = threading.Lock()


def fold_sent_live() -> None:
    """Add the live deliveries counted in ``SENT_LIVE`` since the last fold to their
    ``chatsite_ws_frames_sent_total`` children (any thread; ``SENT_LIVE`` is only read)."""
    with _fold_lock:
        for kind, count in list(SENT_LIVE.items()):
            done = _sent_folded.get(kind, 0)
            if count > done:
                SENT_BY_EVENT[kind].inc(count - done)
                _sent_folded[kind] = count


# The client frame types counted under their own name; any other ``type`` counts as ``other``
# (a label value never comes from client text). Add a new client frame type here.
CLIENT_FRAME_TYPES = frozenset(
    {"message.send", "resume", "fetch", "typing", "read", "reaction.add", "reaction.remove"}
)


def frame_received(frame_type, error: str = "") -> None:
    """Count one handled client frame: ``frame_type`` as the client sent it (any JSON value, or
    None when there was none), ``error`` the error code answered (empty: none)."""
    label = frame_type if isinstance(frame_type, str) and frame_type in CLIENT_FRAME_TYPES else "other"
    FRAMES_RECEIVED.labels(type=label, error=error).inc()
