"""``LightQueue``: an unbounded FIFO for asyncio with what a socket's queues use of
``asyncio.Queue`` (``put_nowait``, ``await get()``, ``get_nowait``, ``empty``, ``qsize``) and a
fraction of its memory.

Why: an ``asyncio.Queue`` holds three ``collections.deque`` (its items, getters and putters) and
an ``asyncio.Event`` holding a fourth, and a deque allocates a block of 64 slots at once (760
bytes empty, Python 3.11): about 3.1 KB per queue before anything is queued. Each idle room
socket had two of them on our side (its consumer's inbox, ``rooms.consumers.dispatch_in_order``,
and its channel's queue in the layer, ``chatsite.layers``): 6 KB of the 46 KB a socket cost
(``python -m bench.socket_memory --census``, bench/RESULTS.md). A ``LightQueue`` is a list, an
index and the futures of the tasks waiting in ``get`` (none, or one: each of these queues has a
single reader), about 200 bytes empty.

Items come out in the order they went in; ``get`` waits while the queue is empty and returns the
first item; a cancelled ``get`` takes nothing. No maximum size and no ``join``/``task_done``:
neither use had them.
"""

import asyncio


class LightQueue:
    """An unbounded FIFO (see the module); ``asyncio.QueueEmpty`` from ``get_nowait`` when empty."""

    __slots__ = ("_items", "_head", "_waiters")

    COMPACT_AFTER = 64  # items taken before the list's taken head is dropped (amortised O(1))

    def __init__(self):
        self._items: list = []
        self._head = 0  # index of the first item not yet taken
        self._waiters: list | None = None  # futures of tasks waiting in get(), oldest first

    def qsize(self) -> int:
        return len(self._items) - self._head

    def empty(self) -> bool:
        return self._head >= len(self._items)

    def put_nowait(self, item) -> None:
        self._items.append(item)
        self._wake()

    def get_nowait(self):
        items, head = self._items, self._head
        if head >= len(items):
            raise asyncio.QueueEmpty
        item = items[head]
        items[head] = None
        head += 1
        if head == len(items):
            items.clear()
            head = 0
        elif head >= self.COMPACT_AFTER and head * 2 >= len(items):
            del items[:head]
            head = 0
        self._head = head
        return item

    async def get(self):
        while self._head >= len(self._items):
            waiter = asyncio.get_running_loop().create_future()
            if self._waiters is None:
                self._waiters = []
            self._waiters.append(waiter)
            try:
                await waiter
            except BaseException:
                if waiter in self._waiters:
                    self._waiters.remove(waiter)
                elif not self.empty():  # woken with an item, then cancelled: wake the next one
                    self._wake()
                raise
        return self.get_nowait()

    def _wake(self) -> None:
        """Wake the oldest waiting ``get`` (an item is there for it)."""
        waiters = self._waiters
        while waiters:
            waiter = waiters.pop(0)
            if not waiter.done():
                waiter.set_result(None)
                return
