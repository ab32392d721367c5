"""One event loop's small Redis commands, sent together: one pipeline per round trip.

Why: every WebSocket connect and disconnect makes Redis calls of its own on the node's loop (the
socket cap's admit script and its ``ZREM``, ``rooms.limits``; the presence join and leave
scripts, ``rooms.presence``; a send's shared rate count, ``rooms.ratelimit``). Each used to take
a connection of the loop's client for itself, and that client's pool was unbounded, so N sockets
coming or going at once opened N TCP connections to Redis at the same moment: a load test's 333
sockets of one node closing together, a killed node's 3,000 members reconnecting to the others, a
join storm of 10,000. The connects timed out (``CONNECT_TIMEOUT``, 2 s) and the node logged
hundreds of tracebacks ("socket count store unavailable"), and each of those sockets fell back
(admitted without a count, its slot or its presence left to expire within the TTL).

Here the commands queued on one loop while a round trip is in flight go out together in the next
one: a pipeline (``transaction=False``: no MULTI, each command stands alone) on one connection,
like ``rooms.events._Publisher`` does for publishes. So a node has at most one of these round
trips in flight, on one connection, whatever the number of sockets; a burst of N commands costs
about N / ``MAX_BATCH`` round trips after the first, and Redis runs the same N commands.

Shapes (``batch()`` gives this loop's ``Batch``):

- ``await batch().call("ZREM", key, member, timeout=0.5)``: one command (redis-py's command
  names and arguments, as ``execute_command`` takes them); returns its reply, parsed as redis-py
  parses that command's reply (bytes for strings: the loop client does not decode).
- ``await batch().calls([("SET", k, 0, "EX", 2, "NX"), ("INCR", k)], timeout=0.5)``: several
  commands of one caller, in this order and in the same pipeline; returns the list of replies.
- ``batch().send("ZREM", key, member)``: one command sent with the next round trip, its reply not
  awaited (clean-up that must not hold a disconnect); failures logged, rate-limited.
- ``await batch().script(SCRIPT, keys, args, timeout=2)``: a Lua script (a ``Script``) by its
  SHA1 (``EVALSHA``: the text crosses the wire once per Redis server, not per call). A Redis
  that does not know it (``NOSCRIPT``: restarted, flushed, first use) gets ``SCRIPT LOAD`` and
  the ``EVALSHA`` again in the next round trip, once; then the ``NoScriptError`` is the caller's.

Timeouts (seconds): each call waits at most its ``timeout`` for its answer, the wait behind a
round trip already in flight included, then raises ``TimeoutError`` to that caller (its
commands still go out: a late ``ZREM`` or presence leave still frees what it should). A round
trip takes at most ``ROUND_TRIP_TIMEOUT``; then every caller still waiting on it gets
``TimeoutError``.

Errors: a command's own error reply (``ResponseError``: a script's error, a wrong type,
``NOSCRIPT`` after the retry) is raised to its caller only; the other commands of the round trip
get their replies. An error of the round trip itself (no connection, connection lost, Redis not
answering) is raised to every caller in it, each getting its own copy (``__cause__``: the
original). The loop's client is ``chatsite.redis_config.loop_client()``: its pool is bounded
(``LOOP_MAX_CONNECTIONS``), so the periodic callers that use it directly (the heartbeats) share
a few connections with this one.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
import weakref
from collections.abc import Sequence

from redis.exceptions import NoScriptError, ResponseError

from chatsite.redis_config import CONNECT_TIMEOUT

logger = logging.getLogger(__name__)

# Commands per pipeline at most. The rest waits for the next round trip, so the first callers
# of a storm get their answers after a batch this size rather than after the whole storm (and a
# pipeline's replies, up to 50 presence names each, stay a few MB at most).
MAX_BATCH = 500
# Seconds one round trip may take (sent, run by Redis, every reply read), as the loop client's
# own read timeout: past it Redis is hung or gone, and the callers fall back.
ROUND_TRIP_TIMEOUT = CONNECT_TIMEOUT


class Script:
    """A Lua script for ``Batch.script``: its text and SHA1 (hex, as Redis names it)."""

    def __init__(self, text: str):
        self.text = text
        self.sha = hashlib.sha1(text.encode()).hexdigest()


class _Call:
    """One caller's commands (``[(name, *args), ...]``) and the future of their replies."""

    __slots__ = ("commands", "future", "script", "reloaded")

    def __init__(self, commands: list[tuple], future: asyncio.Future, script: Script | None):
        self.commands, self.future, self.script = commands, future, script
        self.reloaded = False  # NOSCRIPT once already: the next NOSCRIPT is the caller's


class Batch:
    """The commands of one event loop on ``client`` (a redis.asyncio client bound to that loop):
    one round trip in flight at a time, every call queued meanwhile in the next. ``round_trips``
    and ``commands`` count what was sent (for tests and the bench)."""

    def __init__(self, client, loop: asyncio.AbstractEventLoop):
        self.client, self.loop = client, loop
        self.queue: list[_Call] = []
        self.task: asyncio.Task | None = None
        self.round_trips = 0
        self.commands = 0

    async def call(self, *command, timeout: float):
        """One command's reply (see the module's docstring)."""
        return (await self._wait(self._put([command], None), timeout))[0]

    def send(self, *command) -> None:
        """One command sent with the next round trip, its reply not awaited: for clean-up that
        must not hold its caller (a disconnect's ``ZREM`` of its socket-count slot; in a storm of
        3,333 disconnects on one node, waiting 0.5 s for each answer timed out and logged a
        traceback per socket although every command went out). A failed command is logged as
        one warning per ``SEND_FAILURE_LOG_EVERY`` seconds with the number of failures since."""
        self._put([command], None).add_done_callback(_note_send_failure)

    async def calls(self, commands: Sequence[tuple], timeout: float) -> list:
        """The replies of several commands of one caller, sent in order in one pipeline; the
        first error among them is raised."""
        return await self._wait(self._put([tuple(c) for c in commands], None), timeout)

    async def script(self, script: Script, keys: Sequence, args: Sequence, timeout: float):
        """``EVALSHA`` of ``script`` with ``keys`` and ``args``; its reply."""
        command = ("EVALSHA", script.sha, len(keys), *keys, *args)
        return (await self._wait(self._put([command], script), timeout))[0]

    def _put(self, commands: list[tuple], script: Script | None) -> asyncio.Future:
        future = self.loop.create_future()
        self.queue.append(_Call(commands, future, script))
        if self.task is None:
            self.task = self.loop.create_task(self._drain())
        return future

    @staticmethod
    async def _wait(future: asyncio.Future, timeout: float):
        # On timeout the future is cancelled (its commands are still sent; the reply is dropped).
        async with asyncio.timeout(timeout):
            return await future

    async def _drain(self) -> None:
        try:
            while self.queue:
                size, cut = 0, 0
                while cut < len(self.queue) and (
                    cut == 0 or size + len(self.queue[cut].commands) <= MAX_BATCH
                ):
                    size += len(self.queue[cut].commands)
                    cut += 1
                batch, self.queue = self.queue[:cut], self.queue[cut:]
                await self._send(batch)
        finally:
            self.task = None

    async def _send(self, batch: list[_Call]) -> None:
        pipe = self.client.pipeline(transaction=False)
        # Scripts that came back NOSCRIPT last time: loaded first, on the same connection.
        loads = list({call.script.sha: call.script for call in batch if call.reloaded}.values())
        for script in loads:
            pipe.execute_command("SCRIPT LOAD", script.text)
        for call in batch:
            for command in call.commands:
                pipe.execute_command(*command)
        self.round_trips += 1
        self.commands += len(pipe.command_stack)
        try:
            async with asyncio.timeout(ROUND_TRIP_TIMEOUT):
                replies = await pipe.execute(raise_on_error=False)
        except Exception as exc:  # the round trip failed: every caller in it gets the error
            for call in batch:
                _fail(call.future, exc)
            return
        finally:
            await pipe.reset()
        retry = []
        at = len(loads)
        for call in batch:
            mine = replies[at : at + len(call.commands)]
            at += len(call.commands)
            if call.script is not None and isinstance(mine[0], NoScriptError) and not call.reloaded:
                call.reloaded = True
                retry.append(call)
                continue
            if call.future.done():  # its caller gave up (timeout)
                continue
            error = next((reply for reply in mine if isinstance(reply, ResponseError)), None)
            if error is not None:
                call.future.set_exception(error)
            else:
                call.future.set_result(mine)
        self.queue[:0] = retry


SEND_FAILURE_LOG_EVERY = 10.0  # seconds between two warnings about failed ``send`` commands
_send_failures = {"count": 0, "logged_at": -SEND_FAILURE_LOG_EVERY}


def _note_send_failure(future: asyncio.Future) -> None:
    if future.cancelled() or future.exception() is None:
        return
    _send_failures["count"] += 1
    now = time.monotonic()
    if now - _send_failures["logged_at"] >= SEND_FAILURE_LOG_EVERY:
        logger.warning(
            "%d Redis clean-up command(s) failed (their keys expire by their TTL): %r",
            _send_failures["count"],
            future.exception(),
        )
        _send_failures["count"], _send_failures["logged_at"] = 0, now


def _fail(future: asyncio.Future, exc: BaseException) -> None:
    if future.done():
        return
    try:
        copy = type(exc)(*exc.args)
    except Exception:
        copy = exc
    else:
        copy.__cause__ = exc
    future.set_exception(copy)


_batches: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Batch] = weakref.WeakKeyDictionary()


def batch() -> Batch:
    """This event loop's ``Batch`` on ``loop_client()``, made on first use. Call only when
    ``settings.REDIS`` is set."""
    from chatsite.redis_config import loop_client

    loop = asyncio.get_running_loop()
    client = loop_client()
    found = _batches.get(loop)
    if found is None or found.client is not client:
        found = _batches[loop] = Batch(client, loop)
    return found
