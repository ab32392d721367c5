"""chatsite.queues.LightQueue: the FIFO a socket's inbox and channel queue use."""

import asyncio
import sys

import pytest

from chatsite.queues import LightQueue


async def test_items_come_out_in_order_and_get_waits_for_the_next():
    q = LightQueue()
    assert q.empty() and q.qsize() == 0
    with pytest.raises(asyncio.QueueEmpty):
        q.get_nowait()
    for i in range(3):
        q.put_nowait(i)
    assert q.qsize() == 3 and [await q.get() for _ in range(3)] == [0, 1, 2]
    waiting = asyncio.ensure_future(q.get())
    await asyncio.sleep(0)
    assert not waiting.done()
    q.put_nowait("late")
    assert await asyncio.wait_for(waiting, 1) == "late"


async def test_a_cancelled_get_takes_nothing_and_two_getters_are_served_in_turn():
    q = LightQueue()
    first = asyncio.ensure_future(q.get())
    second = asyncio.ensure_future(q.get())
    await asyncio.sleep(0)
    first.cancel()
    await asyncio.sleep(0)
    q.put_nowait("a")
    assert await asyncio.wait_for(second, 1) == "a"
    assert first.cancelled() and q.empty()
    # woken with an item, then cancelled before it ran: the item stays for the next getter
    third, fourth = asyncio.ensure_future(q.get()), asyncio.ensure_future(q.get())
    await asyncio.sleep(0)
    q.put_nowait("b")
    third.cancel()
    assert await asyncio.wait_for(fourth, 1) == "b"


async def test_a_long_run_keeps_order_and_the_list_is_compacted():
    q = LightQueue()
    taken = []
    for i in range(1000):
        q.put_nowait(i)
        if i % 3 == 0:
            taken.append(q.get_nowait())
    while not q.empty():
        taken.append(q.get_nowait())
    assert taken == list(range(1000))
    assert q._items == [] and q._head == 0


def test_an_empty_queue_is_far_smaller_than_asyncio_queue():
    def size(q):
        attrs = [
            getattr(q, a) for a in ("_items", "_queue", "_getters", "_putters", "_finished") if hasattr(q, a)
        ]
        return sys.getsizeof(q) + sum(sys.getsizeof(a) for a in attrs)

    assert size(LightQueue()) * 5 < size(asyncio.Queue())
