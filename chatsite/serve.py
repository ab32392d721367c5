"""``python -m chatsite.serve``: one chatsite node, served by daphne with the WebSocket settings
the delivery contract relies on, and a graceful stop.

What it adds to ``daphne chatsite.asgi:application`` (which still works, without these):

- Keepalive: daphne pings every socket idle for ``WS_PING_INTERVAL`` seconds (default 20, below
  the 60 s idle timeout of nginx and of AWS load balancers) and drops a peer that has not
  answered within ``WS_PING_TIMEOUT`` (default 30), so a dead peer leaves its room within 50 s.
- Frame size: a message over ``WS_MAX_MESSAGE_BYTES`` (default 65,536) is refused as it arrives,
  with close code 1009 (message too big) instead of a dropped TCP connection. The limit is the
  clients' only: the server's own frames may be larger (``client_limit_only``).
- Socket lifetime: unlimited by default (daphne's own default closes every socket after a day);
  ``WS_MAX_LIFETIME`` seconds sets a limit, after which daphne closes the socket and the client
  resumes. ``HTTP_TIMEOUT`` (seconds, default none) limits plain HTTP requests only.
- Slow clients: a socket whose unsent output exceeds ``WS_SLOW_CLIENT_BYTES`` (default 1 MiB)
  (Twisted's buffer plus the kernel's socket queue) is closed with 4008 (too slow: reconnect and
  resume), checked every second, so one member that stops reading cannot make the node buffer
  without bound; it resumes with nothing missing. A client that does not read even the close
  frame is dropped after the close handshake's timeout (it sees 1006).
- Backlog in the scope: each socket's scope carries ``"chatsite.backlog"``, a callable giving
  the bytes waiting for its client, so the consumer drops typing hints first for a slow client.
- Writes: a frame goes to the socket at once when nothing waits before it (``direct_writes``),
  instead of through Twisted's writability callback.
- Send now: each socket's scope carries ``"chatsite.send_text"``, a callable sending a text frame
  at once, which the consumer uses for live messages while it is idle (``send_text_now``).
- Garbage collection tuned for short stalls (``tune_gc``).
- Light application queues: each connection's queue of events for its application is a
  ``chatsite.queues.LightQueue`` instead of daphne's ``asyncio.Queue`` (3 KB less per idle
  socket; ``light_application_queues``).
- Handshake debug text: autobahn's pretty-printed settings for its per-connection debug line are
  made only when that line is written (``lazy_handshake_debug``).
- Status lines: a 429 reads ``429 Too Many Requests``, not Twisted's ``429 Unknown Status``
  (``reason_phrases``).
- Event loop: uvloop's (``EVENT_LOOP=uvloop``, the default) or the standard library's
  (``EVENT_LOOP=asyncio``) under Twisted's asyncio reactor; see ``use_event_loop``.
- Housekeeping that survives: daphne's application checker (reaps finished application
  instances, logs their exceptions, kills those that outlive their connection) checks each
  connection on its own and always runs again a second later, so one failure (uvloop's
  "unable to perform operation on <UVPoll closed=True>" answering a dead socket) no longer
  stops it for good; failures are logged at most once a minute (``safe_application_checker``).
  So do daphne's timeout checker (pings, dead peers: ``safe_timeout_checker``) and the
  slow-client check.
  ``chatsite_server_connections`` (``/metrics``) counts the connections it tracks.
- Sockets reset by their peer: uvloop closes the poll handle of a socket on which the kernel
  reports an error (a client's RST); the next write to that socket failed with "unable to
  perform operation on <UVPoll closed=True>" inside the consumer (or daphne's checker), and
  Twisted never learnt that the connection had died. Such a connection is now aborted instead,
  so its close reaches the consumer as usual (``drop_connections_with_dead_polls``).
- Close codes: a consumer may close a socket with 1011 (internal error), 1012 or 1013, which
  autobahn's ``sendClose`` refuses as application codes (``server_close_codes``).
- Origin refusals: every handshake refused for its ``Origin`` answers HTTP 403, as
  docs/protocol.md says: ``Origin: null`` (and ``file://`` pages, which autobahn reads as null)
  reaches the application's check, and one autobahn cannot parse (a port that is not a number,
  no host) or finds twice gets 403 instead of autobahn's 400 (``origin_refusals_forbidden``).
- Graceful stop: on SIGTERM or SIGINT the node stops accepting connections, closes every open
  socket with 1012 (service restart) so clients resume on another node at once, waits
  ``SHUTDOWN_GRACE`` seconds (default 1) for the close frames to go out, then exits.

Usage: ``python -m chatsite.serve [--bind 127.0.0.1] [--port 8000]`` (``PORT`` and ``HOST`` from
the environment are the defaults).
"""

import argparse
import asyncio
import fcntl
import functools
import logging
import os
import pprint
import struct
import sys
import termios
import time
import types

logger = logging.getLogger("chatsite.serve")

CLOSE_SERVICE_RESTART = 1012  # RFC 6455 registry: "Service Restart"
CLOSE_TOO_SLOW = 4008  # ours: the client did not read its frames fast enough; resume
BACKLOG_SCOPE_KEY = "chatsite.backlog"  # scope entry: () -> bytes waiting for this socket's client
SEND_TEXT_SCOPE_KEY = "chatsite.send_text"  # scope entry: (text) -> bool, a text frame sent now


def pending_bytes(transport) -> int:
    """Bytes waiting for a peer that has not taken them: Twisted's write buffer plus the kernel's
    unsent socket queue (``SIOCOUTQ``; on loopback the kernel alone holds megabytes)."""
    buffered = len(getattr(transport, "dataBuffer", b"")) - getattr(transport, "offset", 0)
    buffered += getattr(transport, "_tempDataLen", 0)
    try:
        queued = struct.unpack("i", fcntl.ioctl(transport.fileno(), termios.TIOCOUTQ, b"\0" * 4))[0]
    except (OSError, AttributeError, ValueError):
        queued = 0
    return buffered + queued


def client_limit_only(protocol_class):
    """A subclass of daphne's WebSocket protocol whose ``WS_MAX_MESSAGE_BYTES`` limits only what
    clients send. autobahn applies ``maxMessagePayloadSize`` to outgoing messages too: a frame
    of ours over the limit (the ``presence`` list of a room with about 1,500 members online, a
    ``history`` page of long messages) raised ``PayloadExceededError`` in the consumer, which
    daphne answered by closing the socket with 1011 (measured: 1,092 of 3,000 sockets in one
    room, bench/RESULTS.md, fourth pass). The server's own frames are bounded by their own
    rules (``FETCH_MAX`` messages of at most 4,000 characters, one entry per member)."""

    class ClientLimitOnly(protocol_class):
        def sendMessage(self, payload, isBinary=False, fragmentSize=None, sync=False, doNotCompress=False):
            limit, self.maxMessagePayloadSize = self.maxMessagePayloadSize, 0
            try:
                return super().sendMessage(payload, isBinary, fragmentSize, sync, doNotCompress)
            finally:
                self.maxMessagePayloadSize = limit

    ClientLimitOnly.__name__ = ClientLimitOnly.__qualname__ = f"ClientLimitOnly{protocol_class.__name__}"
    return ClientLimitOnly


def direct_writes(protocol_class):
    """A subclass of daphne's WebSocket protocol that writes each frame to the socket at once when
    nothing is waiting before it, instead of buffering it and registering the socket for a
    writability callback (Twisted's ``write``: ``add_writer``, a loop iteration, ``send``, then
    ``remove_writer``; two ``epoll_ctl`` system calls and a callback per frame). What the kernel
    does not take at once goes to Twisted's buffer as before, so slow clients, back-pressure and
    ``pending_bytes`` are unchanged; TLS transports and frames sent while closing take Twisted's
    path. Measured: bench/RESULTS.md, fifth pass. It also reads without autobahn's debug line
    per read (see ``dataReceived``)."""

    class DirectWrites(protocol_class):
        def dataReceived(self, data: bytes) -> None:
            # autobahn's own first formats a debug line per read (``hltype``/``hlval``, which
            # colour text with click) whether or not debug logging is on: 4 % of a node's CPU
            # under load in the 50-rooms shape (yappi, bench/RESULTS.md, session 17 pass).
            self._dataReceived(data)

        def sendData(self, data, sync=False, chopsize=None):
            if sync or chopsize or not self.write_now(data):
                return super().sendData(data, sync, chopsize)

        def write_now(self, data: bytes) -> bool:
            """Write ``data`` (a whole frame) to the socket now if nothing waits before it;
            what the kernel does not take goes to Twisted's buffer. False: nothing was written
            (closing, TLS, something buffered, the connection gone): use ``sendData``.
            ``send_text_now`` calls this directly for each delivery (one call, not three)."""
            transport = self.transport
            try:
                if (
                    self.send_queue
                    or self.state != self.STATE_OPEN
                    or self.logOctets
                    or transport.TLS
                    or not transport.connected
                    or transport.disconnecting
                    or transport._writeDisconnected
                    or transport._tempDataLen
                    or len(transport.dataBuffer) != transport.offset
                ):
                    return False
                sent = transport.socket.send(data)
            except (BlockingIOError, InterruptedError):
                sent = 0
            except (OSError, AttributeError):  # gone, or another transport: Twisted's own path
                return False
            self.trafficStats.outgoingOctetsWireLevel += len(data)
            if sent < len(data):
                transport.write(data[sent:])
            return True

    DirectWrites.__name__ = DirectWrites.__qualname__ = f"DirectWrites{protocol_class.__name__}"
    return DirectWrites


# Protocol-level close codes (RFC 6455 registry) a consumer may send through ASGI's
# ``websocket.close``: 1011 internal error, 1012 service restart, 1013 try again later.
PROTOCOL_CLOSE_CODES = frozenset({1011, 1012, 1013})


def server_close_codes(protocol_class):
    """A subclass of daphne's WebSocket protocol whose ``serverClose`` (an ASGI
    ``websocket.close``) also sends the codes of ``PROTOCOL_CLOSE_CODES``: autobahn's
    ``sendClose`` accepts only 1000 and 3000-4999 and raised on 1011 inside daphne."""

    class ServerCloseCodes(protocol_class):
        def serverClose(self, code=None):
            if code in PROTOCOL_CLOSE_CODES:
                self.sendCloseFrame(code=code, isReply=False)
            else:
                super().serverClose(code)

    ServerCloseCodes.__name__ = ServerCloseCodes.__qualname__ = f"ServerCloseCodes{protocol_class.__name__}"
    return ServerCloseCodes


# The reasons autobahn gives when it refuses a handshake for its Origin header before the
# application sees it: an Origin it cannot parse (a port that is not a number, no host, no
# scheme), more than one Origin header, or an Origin its allowed list refuses.
ORIGIN_HANDSHAKE_FAILURES = (
    "HTTP Origin header invalid",
    "HTTP Origin header appears more than once",
    "WebSocket connection denied: origin",
)


def origin_refusals_forbidden(protocol_class):
    """A subclass of daphne's WebSocket protocol answering HTTP 403 (autobahn's own: 400) to a
    handshake autobahn refuses for its Origin (``ORIGIN_HANDSHAKE_FAILURES``: ``Origin:
    http://127.0.0.1:8000.evil.com``, ``Origin: nonsense``), as the application's Origin check
    answers every other foreign Origin (``rooms.auth.OriginValidator``, docs/protocol.md), each
    counted in ``chatsite_ws_origin_refused_total`` as those are. Other malformed handshakes
    keep autobahn's 400."""

    class OriginRefusalsForbidden(protocol_class):
        def failHandshake(self, reason, code=400, responseHeaders=None):
            if code == 400 and reason.startswith(ORIGIN_HANDSHAKE_FAILURES):
                from rooms import metrics

                code = 403
                metrics.ORIGIN_REFUSED.inc()
            return super().failHandshake(reason, code, responseHeaders)

    OriginRefusalsForbidden.__name__ = OriginRefusalsForbidden.__qualname__ = (
        f"OriginRefusalsForbidden{protocol_class.__name__}"
    )
    return OriginRefusalsForbidden


# What autobahn keeps of a handshake that nothing reads once the socket is open: its
# ``processHandshake`` and ``succeedHandshake`` (the server side) are the only readers. The
# request's raw bytes, its parsed headers (a dict daphne's ``ConnectionRequest`` shares), the
# query, host, path and Origin, the response's text and the client's key.
HANDSHAKE_ONLY_STATE = (
    "http_headers",
    "http_request_data",
    "http_request_host",
    "http_request_params",
    "http_request_path",
    "http_request_uri",
    "http_response_data",
    "http_status_line",
    "websocket_origin",
    "_wskey",
)


class _OpenRequest:
    """What daphne reads of a socket's request once it is open: its ``path`` (the access log
    of ``connected`` and ``disconnected``)."""

    __slots__ = ("path",)

    def __init__(self, path: str):
        self.path = path


def handshake_state_dropped(protocol_class):
    """A subclass of daphne's WebSocket protocol that lets go of the handshake's state once the
    socket is open (``HANDSHAKE_ONLY_STATE``, and daphne's ``ConnectionRequest`` for a
    ``_OpenRequest`` keeping its path): about 2 KB per idle socket that nothing reads again
    (``python -m bench.socket_memory --census``). The scope's headers stay: the consumer has
    them."""

    class HandshakeStateDropped(protocol_class):
        def onOpen(self):
            super().onOpen()
            state = self.__dict__
            for name in HANDSHAKE_ONLY_STATE:
                state.pop(name, None)
            request = state.get("request")
            if request is not None:
                self.request = _OpenRequest(request.path)

    HandshakeStateDropped.__name__ = HandshakeStateDropped.__qualname__ = (
        f"HandshakeStateDropped{protocol_class.__name__}"
    )
    return HandshakeStateDropped


# For tests only (tests/test_faults.py): the first N connection checks of the application checker
# that find a finished application raise, as uvloop's error on an aborted socket did.
FAULT_CHECKER_ENV = "CHATSITE_TEST_FAULT_APPLICATION_CHECKER"


def safe_application_checker(server, reactor, *, interval: float = 1.0, faults: int = 0) -> None:
    """daphne's ``Server.application_checker`` made to survive: each connection is checked on
    its own (``check_one``: daphne's own steps for it), an exception from one is logged
    (rate-limited, ``chatsite_application_checker_errors_total``) and the finished application
    is reaped anyway (the connection is dropped if it is still up), and the checker always
    runs again ``interval`` seconds later. daphne's checker stopped for good at the first
    exception (seen: uvloop's "unable to perform operation on <UVPoll closed=True>" from
    ``handle_exception`` writing the 1011 close frame to a socket the client had aborted); from
    then on no dead application on the node was logged, reaped or killed. ``faults``: see
    ``FAULT_CHECKER_ENV``."""
    import time as _time
    from asyncio import CancelledError

    from rooms import metrics
    from rooms.logutil import RateLimitedLogger

    log = RateLimitedLogger(logger, interval=60.0)
    injected = [faults]

    def check_one(protocol, details) -> None:
        disconnected = details.get("disconnected", None)
        application_instance = details.get("application_instance", None)
        if (
            disconnected
            and _time.time() - disconnected > server.application_close_timeout
            and application_instance
            and not application_instance.done()
        ):
            logger.warning(
                "Application instance %r for connection %s took too long to shut down and was killed.",
                application_instance,
                repr(protocol),
            )
            application_instance.cancel()
        if application_instance and application_instance.done():
            if injected[0] > 0:
                injected[0] -= 1
                raise RuntimeError(
                    "unable to perform operation on <UVPoll closed=True> (injected for a test)"
                )
            try:
                exception = application_instance.exception()
            except CancelledError:
                exception = None
            if exception:
                if isinstance(exception, KeyboardInterrupt):
                    server.stop()
                else:
                    logger.error("Exception inside application: %s", exception, exc_info=exception)
                    if not disconnected:
                        protocol.handle_exception(exception)
            del details["application_instance"]
            application_instance = None
        if not application_instance and disconnected:
            del server.connections[protocol]

    def reap(protocol, details) -> None:
        """After a failed check: forget the finished application and drop the connection."""
        instance = details.get("application_instance")
        if instance is not None and instance.done():
            del details["application_instance"]
        if details.get("disconnected"):
            if "application_instance" not in details:
                server.connections.pop(protocol, None)
        else:
            try:
                protocol.transport.abortConnection()
            except Exception:
                pass

    def checker() -> None:
        try:
            for protocol, details in list(server.connections.items()):
                try:
                    check_one(protocol, details)
                except Exception as exc:
                    metrics.APPLICATION_CHECKER_ERRORS.inc()
                    log.log(
                        logging.ERROR,
                        "check",
                        "application checker: %s failed for %r; reaped",
                        exc,
                        protocol,
                        exc_info=True,
                    )
                    try:
                        reap(protocol, details)
                    except Exception:
                        pass
        finally:
            reactor.callLater(interval, checker)

    server.application_checker = checker


def safe_timeout_checker(server, reactor, *, interval: float = 2.0) -> None:
    """daphne's ``Server.timeout_checker`` (pings idle sockets, drops peers that do not answer,
    enforces timeouts) with each connection checked on its own and the next run always
    scheduled: an exception from one dead socket stopped it for good, and then no idle socket
    was pinged and no dead peer dropped on the node. Failures are logged at most once a minute
    and counted in ``chatsite_application_checker_errors_total``."""
    from rooms import metrics
    from rooms.logutil import RateLimitedLogger

    log = RateLimitedLogger(logger, interval=60.0)

    def checker() -> None:
        try:
            for protocol in list(server.connections.keys()):
                try:
                    protocol.check_timeouts()
                except Exception as exc:
                    metrics.APPLICATION_CHECKER_ERRORS.inc()
                    log.log(
                        logging.ERROR,
                        "timeouts",
                        "timeout checker: %s failed for %r",
                        exc,
                        protocol,
                        exc_info=True,
                    )
        finally:
            reactor.callLater(interval, checker)

    server.timeout_checker = checker


def drop_connections_with_dead_polls(reactor) -> None:
    """Make Twisted's asyncio reactor abort a connection whose socket uvloop no longer polls,
    instead of raising into whoever wrote to it.

    uvloop closes a socket's poll handle when the kernel reports an error on it (``EPOLLERR``: the
    client reset the connection, e.g. a tab killed while frames were on the way) but keeps the
    closed handle under that file descriptor; when data arrived with the reset, Twisted reads it
    and goes on thinking the connection is open. Its next write registers a writer, and uvloop
    raises ``RuntimeError: unable to perform operation on <UVPoll closed=True>; the handler is
    closed``: out of the consumer's ``send`` (which then ended without clean-up), or out of
    daphne's application checker (which then stopped for good). The connection is never read
    again either, so it stayed open, its file descriptor leaked and its user shown online.

    Here ``addWriter`` / ``addReader`` meeting that error abort the connection (Twisted's
    ``abortConnection``: the stale handle is released, the socket closed, and the close reaches
    daphne and the consumer as a disconnect, which cleans up). Logged at most once a minute,
    counted in ``chatsite_connections_aborted_total``."""
    from rooms import metrics
    from rooms.logutil import RateLimitedLogger

    log = RateLimitedLogger(logger, interval=60.0)

    def guarded(add):
        def add_or_abort(selectable):
            try:
                return add(selectable)
            except RuntimeError as exc:
                if "handler is closed" not in str(exc):
                    raise
                abort = getattr(selectable, "abortConnection", None)
                if abort is None:
                    raise
                if not getattr(selectable, "_aborting", False):  # once per connection
                    metrics.CONNECTIONS_ABORTED.inc()
                    log.warning("dead-poll", "aborting a connection its peer reset (%s)", exc)  # noqa: PLE1205 (a RateLimitedLogger: key, then message)
                # Releases uvloop's stale handle (stopReading) and closes the socket on the next
                # loop turn; later writes to it are dropped.
                abort()

        return add_or_abort

    reactor.addWriter = guarded(reactor.addWriter)
    reactor.addReader = guarded(reactor.addReader)


def use_event_loop(name: str) -> str:
    """Choose the asyncio event loop daphne runs Twisted on, before daphne makes it: ``"uvloop"``
    (the default; uvloop's loop, written in C) or ``"asyncio"`` (the standard library's). Returns
    the loop in use. Raises ``ValueError`` for any other name; without uvloop installed, falls
    back to asyncio's with a warning.

    Measured under ``python -m bench seed-50rooms --rate 5`` (bench/RESULTS.md, fourth pass):
    node CPU per delivery 215 µs on asyncio's loop, 188 µs on uvloop's (means of 4 alternating
    runs; every pair favoured uvloop), with a lower p99."""
    if name not in ("uvloop", "asyncio"):
        raise ValueError(f"EVENT_LOOP must be uvloop or asyncio, not {name!r}")
    if name == "uvloop":
        try:
            import uvloop
        except ImportError:
            logger.warning("uvloop is not installed: serving on asyncio's event loop")
            return "asyncio"
        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    return name


GC_THRESHOLDS = (10_000, 10, 100)  # allocations before a young collection; collections per older one


def light_application_queues() -> None:
    """daphne makes each connection's application queue (what its consumer's ``receive``
    awaits; daphne itself only calls ``put_nowait`` on it) with ``asyncio.Queue()`` looked up in
    ``daphne.server``'s ``asyncio`` at every connection. That name is pointed at a view of
    ``asyncio`` whose ``Queue`` is ``chatsite.queues.LightQueue``; every other attribute is
    asyncio's own. An empty ``asyncio.Queue`` is about 3.1 KB (four deques and an Event), a
    ``LightQueue`` about 0.2 KB (measured: ``python -m bench.socket_memory``, bench/RESULTS.md)."""
    import daphne.server

    from chatsite.queues import LightQueue

    class AsyncioWithLightQueues(types.ModuleType):
        Queue = LightQueue

        def __getattr__(self, name):
            return getattr(asyncio, name)

    daphne.server.asyncio = AsyncioWithLightQueues("asyncio")


def tune_gc() -> None:
    """Garbage-collector settings for a node, called once everything is imported:

    - ``gc.freeze()``: the objects alive at start (Django, DRF, Twisted, the URL conf: about
      120,000 here) move to a generation no collection scans; they live as long as the process
      anyway. A full collection then scans only what came after (measured here: 37 ms for the
      start-up heap alone).
    - ``gc.set_threshold(*GC_THRESHOLDS)``: a young collection after 10,000 net allocations
      instead of 700, and a full one after 100 middle ones instead of 10, so a burst of
      messages (each builds and drops a few hundred objects, mostly freed by reference
      counting) pays for far fewer collections. 10,000, not more: a young collection scans
      what accumulated, and at 50,000 one took 17-44 ms here.

    Why: collections stop the event loop, and every socket of the node with it. Under
    ``python -m bench seed-50rooms --rate 8`` a node's loop stalled 114-173 ms in each full
    collection, which set the p99 latency; with these settings no full collection ran while
    messages were sent (bench/RESULTS.md, fifth pass). Cyclic garbage is still collected; only
    the start-up objects are exempt.

    Each collection's pause is observed in ``chatsite_gc_pause_seconds`` (by generation), so an
    operator sees them in /metrics."""
    import gc

    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)
    from rooms import metrics

    pauses = {g: metrics.GC_PAUSE.labels(generation=str(g)) for g in range(3)}
    started = [0.0]

    def timed(phase: str, info: dict) -> None:
        if phase == "start":
            started[0] = time.perf_counter()
        else:
            pauses[info["generation"]].observe(time.perf_counter() - started[0])

    gc.callbacks.append(timed)


def reason_phrases() -> None:
    """Adds the HTTP statuses Twisted has no reason phrase for (429 Too Many Requests, 422, 423,
    428, 431, 451, 511, ...) to its table, ``twisted.web.http.RESPONSES``, from the standard
    library's ``http.HTTPStatus``. daphne sets each response's status without a phrase, so
    Twisted answered a throttled request with the status line ``HTTP/1.1 429 Unknown Status``,
    which curl, proxies and logs show. The phrase is informative only (RFC 9110, section 15);
    codes Twisted already names keep its phrase."""
    from http import HTTPStatus

    from twisted.web import http

    for status in HTTPStatus:
        http.RESPONSES.setdefault(status.value, status.phrase.encode("ascii"))


class _LazyPformat:
    """``pprint.pformat(value)``, computed only when formatted (a debug line actually written)."""

    __slots__ = ("value",)

    def __init__(self, value):
        self.value = value

    def __format__(self, spec: str) -> str:
        return format(pprint.pformat(self.value), spec)

    __str__ = __repr__ = lambda self: pprint.pformat(self.value)


def lazy_handshake_debug() -> None:
    """autobahn pretty-prints its protocol's 30-odd settings for a debug line on every new
    connection (``WebSocketProtocol._connectionMade``), whether debug logging is on or not:
    2.5 % of a node's CPU during a handshake storm (py-spy ``--gil``, ``python -m
    bench.handshakes``). The text is now made only when that line is written."""
    from autobahn.websocket import protocol

    if getattr(protocol.pformat, "__name__", "") != "_LazyPformat":
        protocol.pformat = _LazyPformat


def shared_protocol_options(factory) -> None:
    """Puts the factory's WebSocket settings (autobahn's ``CONFIG_ATTRS``: ping interval and
    timeout, frame and message limits, handshake timeouts, 29 in all) on its protocol class,
    once. autobahn copies each into every new connection's own ``__dict__`` unless the protocol
    already has it (``WebSocketProtocol._connectionMade``); found on the class, nothing is copied.
    Per idle socket that was most of the 3.3 KB its protocol's ``__dict__`` took, the largest
    object per socket (``python -m bench.socket_memory --census``). Call after the last
    ``setProtocolOptions``: later changes of the factory would not reach the class."""
    protocol_class = factory.protocol
    for name in protocol_class.CONFIG_ATTRS:
        value = getattr(factory, name)
        if isinstance(value, types.FunctionType):  # perMessageCompressionAccept: not a method
            value = staticmethod(value)
        setattr(protocol_class, name, value)


def _env_float(name: str, default: float) -> float:
    return float(os.environ.get(name) or default)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m chatsite.serve", description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--bind", default=os.environ.get("HOST", "127.0.0.1"), help="address (default 127.0.0.1)"
    )
    parser.add_argument(
        "--port", type=int, default=int(os.environ.get("PORT") or 8000), help="port (default 8000)"
    )
    parser.add_argument("--access-log", action="store_true", help="print daphne's access log to stdout")
    args = parser.parse_args(argv)

    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "chatsite.settings")
    use_event_loop(os.environ.get("EVENT_LOOP") or "uvloop")
    from daphne.access import AccessLogGenerator
    from daphne.server import Server  # installs Twisted's asyncio reactor: before anything else

    light_application_queues()
    from twisted.internet import defer, reactor

    from chatsite.asgi import application

    reason_phrases()
    lazy_handshake_debug()

    max_bytes = int(_env_float("WS_MAX_MESSAGE_BYTES", 65536))
    grace = _env_float("SHUTDOWN_GRACE", 1.0)

    class ChatsiteServer(Server):
        def create_application(self, protocol, scope):
            # The consumer may ask how far behind its client is (to drop typing hints first).
            if scope.get("type") == "websocket":
                scope[BACKLOG_SCOPE_KEY] = lambda: pending_bytes(protocol.transport)
                # The connection's dict is bound here, so that a frame sent does not hash the
                # protocol (daphne's ``__hash__`` is Python code) to find it again.
                connection = self.connections.get(protocol)
                if connection is not None:
                    scope[SEND_TEXT_SCOPE_KEY] = functools.partial(self.send_text_now, protocol, connection)
            return super().create_application(protocol, scope)

        _prepared = (None, None)  # (text, autobahn PreparedMessage): the last frame framed

        def send_text_now(self, protocol, connection: dict, text: str) -> bool:
            """Send ``text`` as a text frame on an open socket, synchronously (what daphne's
            ``handle_reply`` coroutine does for ``websocket.send``, without a coroutine per
            frame). A text sent to many sockets in a row (a room's members on this node get the
            same ``str``) is encoded and framed once (autobahn's ``prepareMessage``). Returns
            False, sending nothing, when the socket is not open. Raises autobahn's
            ``Disconnected`` if the peer has just gone. ``connection`` is daphne's dict of
            ``protocol`` (bound at ``create_application``)."""
            if "disconnected" in connection or protocol.state != protocol.STATE_OPEN:
                return False
            last_text, prepared = self._prepared
            if text is not last_text:
                prepared = self.ws_factory.prepareMessage(text.encode("utf-8"), isBinary=False)
                self._prepared = (text, prepared)
            if protocol._perMessageCompress is None:  # autobahn's sendPreparedMessage, calls fewer
                if not protocol.write_now(prepared.payloadHybi):
                    protocol.sendData(prepared.payloadHybi)
            else:
                protocol.sendPreparedMessage(prepared)
            return True

    server = ChatsiteServer(
        application=application,
        endpoints=[f"tcp:port={args.port}:interface={args.bind}"],
        ping_interval=_env_float("WS_PING_INTERVAL", 20),
        ping_timeout=_env_float("WS_PING_TIMEOUT", 30),
        websocket_timeout=_env_float("WS_MAX_LIFETIME", -1),
        http_timeout=_env_float("HTTP_TIMEOUT", 0) or None,
        websocket_max_message_size=max_bytes,
        websocket_max_frame_size=max_bytes,
        action_logger=AccessLogGenerator(sys.stdout) if args.access_log else None,
        server_name="chatsite",
    )

    def refuse_oversize_with_a_close_frame():
        # autobahn drops the TCP connection on an oversize message unless failByDrop is off;
        # off, the client gets close code 1009. allowNullOrigin: setProtocolOptions resets it to
        # False unless given (its default argument), which made autobahn answer "Origin: null"
        # 400 itself; daphne's True lets it reach the application's Origin check (403).
        server.ws_factory.setProtocolOptions(failByDrop=False, allowNullOrigin=True)
        server.ws_factory.protocol = origin_refusals_forbidden(
            handshake_state_dropped(
                server_close_codes(direct_writes(client_limit_only(server.ws_factory.protocol)))
            )
        )
        shared_protocol_options(server.ws_factory)

    def graceful_stop():
        """Runs first in the reactor's "before shutdown" phase (before daphne cancels the
        application instances): stop listening, close every open socket with 1012, wait
        ``grace`` seconds for the close frames to go out."""
        from daphne.ws_protocol import WebSocketProtocol
        from twisted.internet.tcp import Port

        for reader in list(reactor.getReaders()):  # daphne keeps no handle on its listening ports
            if isinstance(reader, Port):
                reader.stopListening()
        sockets = [
            p
            for p in list(getattr(server, "connections", {}))
            if isinstance(p, WebSocketProtocol) and p.state == WebSocketProtocol.STATE_OPEN
        ]
        for protocol in sockets:
            # sendClose() accepts only 1000 and 3000-4999 as application codes; 1012 is a
            # protocol-level code (RFC 6455 registry), sent with the frame-level call.
            protocol.sendCloseFrame(code=CLOSE_SERVICE_RESTART, isReply=False)
        logger.info("shutting down: closing %d socket(s) with %d", len(sockets), CLOSE_SERVICE_RESTART)
        done = defer.Deferred()
        reactor.callLater(grace if sockets else 0, done.callback, None)
        return done

    slow_limit = int(_env_float("WS_SLOW_CLIENT_BYTES", 1024 * 1024))

    def close_slow_clients():
        from daphne.ws_protocol import WebSocketProtocol

        try:
            for protocol in list(getattr(server, "connections", {})):
                try:
                    if (
                        isinstance(protocol, WebSocketProtocol)
                        and protocol.state == WebSocketProtocol.STATE_OPEN
                    ):
                        pending = pending_bytes(protocol.transport)
                        if pending > slow_limit:
                            logger.warning(
                                "closing a slow client (%d bytes unsent) with %d", pending, CLOSE_TOO_SLOW
                            )
                            protocol.sendCloseFrame(code=CLOSE_TOO_SLOW, isReply=False)
                except Exception:  # one dead socket must not stop the check of the others
                    logger.warning("slow-client check failed for %r", protocol, exc_info=True)
        finally:
            reactor.callLater(1, close_slow_clients)

    drop_connections_with_dead_polls(reactor)
    safe_application_checker(server, reactor, faults=int(os.environ.get(FAULT_CHECKER_ENV) or 0))
    safe_timeout_checker(server, reactor)
    from rooms import metrics

    metrics.SERVER_CONNECTIONS.set_function(lambda: len(getattr(server, "connections", {})))
    reactor.callWhenRunning(close_slow_clients)
    reactor.callWhenRunning(refuse_oversize_with_a_close_frame)
    reactor.addSystemEventTrigger("before", "shutdown", graceful_stop)
    logger.info("chatsite node listening on http://%s:%s", args.bind, args.port)
    tune_gc()
    server.run()


if __name__ == "__main__":
    main()
