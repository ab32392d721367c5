"""``chatsite.db_batch``: lookups queued on one event loop share one statement, against the real
PostgreSQL (``chatsite.async_db``)."""

import asyncio

import psycopg
import pytest

from chatsite import async_db, db_batch

pytestmark = pytest.mark.django_db(transaction=True)


class Recorded:
    """A ``run`` for a ``Batcher``: one real statement squaring each item, recording each list."""

    def __init__(
        self, sql="SELECT x * x FROM unnest(%(items)s::int[]) WITH ORDINALITY AS v(x, i) ORDER BY i"
    ):
        self.sql = sql
        self.lists: list[list] = []

    async def __call__(self, items):
        self.lists.append(list(items))
        rows = await async_db.fetchall(self.sql, {"items": items})
        return [row[0] for row in rows]


@pytest.fixture
async def closing_pool():
    yield
    await async_db.aclose()


async def test_calls_queued_while_a_statement_is_in_flight_share_the_next_one(closing_pool):
    run = Recorded()
    batcher = db_batch.Batcher(run)
    first = asyncio.ensure_future(batcher.call(0, timeout=5))
    await asyncio.sleep(0.01)  # its statement is in flight
    results = await asyncio.gather(*(batcher.call(i, timeout=5) for i in range(1, 100)))
    assert await first == 0
    assert results == [i * i for i in range(1, 100)]
    # the first call went alone; the 99 queued behind it go in one statement
    assert [len(items) for items in run.lists] == [1, 99]
    assert batcher.statements == 2 and batcher.items == 100


async def test_at_most_max_batch_items_per_statement(closing_pool, monkeypatch):
    monkeypatch.setattr(db_batch, "MAX_BATCH", 30)
    run = Recorded()
    batcher = db_batch.Batcher(run)
    results = await asyncio.gather(*(batcher.call(i, timeout=5) for i in range(70)))
    assert results == [i * i for i in range(70)]
    assert [len(items) for items in run.lists] == [30, 30, 10]  # queued at once


async def test_a_caller_that_gave_up_is_left_out_of_the_next_statement(closing_pool):
    slow = Recorded(
        "SELECT x * x FROM unnest(%(items)s::int[]) WITH ORDINALITY AS v(x, i), pg_sleep(0.3) ORDER BY i"
    )
    batcher = db_batch.Batcher(slow)
    first = asyncio.ensure_future(batcher.call(1, timeout=5))
    await asyncio.sleep(0.05)  # the first statement is in flight
    with pytest.raises(TimeoutError):
        await batcher.call(2, timeout=0.05)
    third = asyncio.ensure_future(batcher.call(3, timeout=5))
    assert await first == 1 and await third == 9
    assert slow.lists == [[1], [3]]


async def test_a_failed_statement_fails_each_of_its_callers_and_the_next_one_runs(closing_pool):
    run = Recorded("SELECT 1 / x FROM unnest(%(items)s::int[]) WITH ORDINALITY AS v(x, i) ORDER BY i")
    batcher = db_batch.Batcher(run)
    first = asyncio.ensure_future(batcher.call(1, timeout=5))
    await asyncio.sleep(0)
    bad = [asyncio.ensure_future(batcher.call(x, timeout=5)) for x in (0, 2)]
    assert await first == 1
    for call in bad:  # 1 / 0 fails the statement, and so both callers in it
        with pytest.raises(psycopg.errors.DivisionByZero):
            await call
    assert await batcher.call(1, timeout=5) == 1
    assert run.lists == [[1], [0, 2], [1]]


async def test_each_event_loop_has_its_own_batcher_per_name():
    async def run(items):
        return items

    a = db_batch.batcher("test.a", run)
    assert db_batch.batcher("test.a", run) is a
    assert db_batch.batcher("test.b", run) is not a


async def test_lead_alone_runs_a_lone_call_in_its_own_task_and_queues_the_next_ones(closing_pool):
    """``lead_alone``: a call that finds the batcher idle runs its item in the caller's task (no
    drain task); calls made while it is in flight go together in the next statement; its error
    is its own."""
    tasks = []

    class Tasks(Recorded):
        async def __call__(self, items):
            tasks.append(asyncio.current_task())
            return await super().__call__(items)

    run = Tasks(
        "SELECT x * x FROM unnest(%(items)s::int[]) WITH ORDINALITY AS v(x, i), pg_sleep(0.05) ORDER BY i"
    )
    batcher = db_batch.Batcher(run)
    batcher.lead_alone = True
    first = asyncio.ensure_future(batcher.call(3, timeout=5))
    await asyncio.sleep(0.01)  # in flight, run by the first caller itself
    rest = await asyncio.gather(*(batcher.call(i, timeout=5) for i in range(1, 6)))
    assert await first == 9 and rest == [1, 4, 9, 16, 25]
    assert run.lists == [[3], [1, 2, 3, 4, 5]]
    assert tasks[0] is first  # the lone call ran in the caller's own task
    assert tasks[1] is not first and batcher.task is None
    assert batcher.statements == 2 and batcher.items == 6
    run.sql = "SELECT 1 / 0"
    with pytest.raises(psycopg.errors.DivisionByZero):
        await batcher.call(1, timeout=5)
    assert batcher.task is None  # idle again after the error
