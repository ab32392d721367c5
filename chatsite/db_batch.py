"""One event loop's lookups of one kind, sent to PostgreSQL together: one statement for every caller
queued while the previous statement was in flight.

Why: a stopped node's members all reconnect to the other nodes at once (issue 16, item 3), and
each handshake reads the same kinds of rows (its API token's user, ``rooms.auth``; its access and
room, ``rooms.entry``). One statement per socket on the loop's pool (``chatsite.async_db``, 10
connections) queued 1,500 statements behind each other on a busy node, and those waiting past
the pool's 1.5 s were refused as "database unavailable" (553 of them on one node in
``python -m bench reconnect-storm``). The statements these lookups run take a list (``= ANY``,
``unnest``), so N callers at once cost about N / ``MAX_BATCH`` statements after the first, and
never more than one connection of the pool per ``Batcher``.

Shape: ``Batcher(run)`` where ``await run(items)`` returns one result per item, in order (one
statement). ``await batcher.call(item, timeout=s)`` queues ``item`` and returns its result.

Timeouts (seconds): a call waits at most its ``timeout`` for its result (the wait behind a
statement already in flight included), then raises ``TimeoutError``; an item whose caller gave
up before its statement was sent is left out of it. Errors: an exception raised by ``run``
(``psycopg.Error``, ``psycopg_pool.PoolTimeout``) is raised to every caller of that statement.
"""

from __future__ import annotations

import asyncio
import contextvars
import weakref
from collections.abc import Awaitable, Callable, Sequence

# Items per statement at most: the first callers of a storm get their answers after a statement
# this size rather than after the whole storm; the rest waits for the next one.
MAX_BATCH = 500


_LEADING = object()  # Batcher.task while a lone caller runs its own item (``lead_alone``)


class Batcher:
    """Callers' items on one event loop, run ``MAX_BATCH`` at a time by ``run``, one statement in
    flight at a time. ``statements`` and ``items`` count what was run (tests, the bench)."""

    max_items: int | None  # items per statement at most (None: MAX_BATCH)
    # With ``lead_alone``, a caller that finds nothing in flight and nothing queued runs its item
    # at once in its own task (``run([item])``, whose own limits apply, not ``timeout``), not
    # through the drain task: a lone statement costs no task switch more than a plain call;
    # callers that come meanwhile queue, and their items go in the next statement once it is done.
    lead_alone: bool

    def __init__(
        self,
        run: Callable[[list], Awaitable[Sequence]],
        *,
        max_items: int | None = None,
        lead_alone: bool = False,
    ):
        self.run = run
        self.max_items = max_items
        self.lead_alone = lead_alone
        self.queue: list[tuple[object, asyncio.Future]] = []
        self.task: asyncio.Task | object | None = None
        self.statements = 0
        self.items = 0

    async def call(self, item, *, timeout: float):
        """``item``'s result (see the module's docstring); raises ``TimeoutError`` past
        ``timeout`` seconds, or what ``run`` raised."""
        loop = asyncio.get_running_loop()
        if self.lead_alone and self.task is None and not self.queue:
            self.task = _LEADING  # in flight: the next callers queue
            self.statements += 1
            self.items += 1
            try:
                # Not under ``timeout``: cancelling a statement mid-flight makes psycopg cancel it
                # on the server and wait for that (seconds, on a silent connection); a lone run
                # bounds its own waits (``chatsite.dbconn``'s deadline), as a plain call does.
                return (await self.run([item]))[0]
            finally:
                self.task = None
                if self.queue:
                    self.task = loop.create_task(self._drain(), context=contextvars.Context())
        future = loop.create_future()
        self.queue.append((item, future))
        if self.task is None:
            # A context of its own: the statements serve every caller queued, not the first one
            # (whose database deadline, ``chatsite.dbconn``, or log context would otherwise apply).
            self.task = loop.create_task(self._drain(), context=contextvars.Context())
        async with asyncio.timeout(timeout):  # cancels the future: its item is left out
            return await future

    async def _drain(self) -> None:
        try:
            while self.queue:
                limit = self.max_items or MAX_BATCH
                taken, self.queue = self.queue[:limit], self.queue[limit:]
                live = [(item, future) for item, future in taken if not future.done()]
                if not live:
                    continue
                self.statements += 1
                self.items += len(live)
                try:
                    results = await self.run([item for item, _ in live])
                except Exception as exc:  # the statement failed: each of its callers gets the error
                    for _, future in live:
                        if not future.done():
                            future.set_exception(exc)
                    continue
                for (_, future), result in zip(live, results, strict=True):
                    if not future.done():
                        future.set_result(result)
        finally:
            self.task = None


_batchers: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # loop -> {name: Batcher}


def batcher(name: str, run: Callable[[list], Awaitable[Sequence]], **options) -> Batcher:
    """This event loop's ``Batcher`` called ``name`` (made with ``run`` and ``options``, the
    ``Batcher`` keywords, on first use)."""
    loop = asyncio.get_running_loop()
    mine = _batchers.get(loop)
    if mine is None:
        mine = _batchers[loop] = {}
    found = mine.get(name)
    if found is None:
        found = mine[name] = Batcher(run, **options)
    return found
