"""chatsite/redis_batch.py and the loop client's bounded pool, against the real Redis (REDIS_URL):
many sockets' admits, releases, presence joins and leaves at once on one event loop share a
connection or two (they used to open one each), every answer is what it was one at a time, a
burst is a few round trips, and one command's error is its caller's only.

Connections are counted in Redis itself (``CLIENT LIST``): the clients on this test's database
that appeared during the burst."""

import asyncio
import os
import uuid

import pytest
import redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError, ResponseError

from chatsite import redis_config
from rooms import limits, presence, ratelimit

CONNECTIONS_AT_MOST = 3  # a handful: the batch's one, and room for a periodic task's


class _Consumer:
    """Stands for a consumer in the slot registry (held weakly)."""

    def __init__(self, name):
        self.channel_name = name


def _sync_client() -> redis.Redis:
    return redis.Redis.from_url(os.environ["REDIS_URL"])


def _our_db() -> int:
    return _sync_client().connection_pool.connection_kwargs.get("db", 0)


def _client_ids(watcher: redis.Redis) -> dict[int, dict]:
    """The clients connected to this test's Redis database: id → ``CLIENT LIST`` fields."""
    db = _our_db()
    me = watcher.client_id()
    return {int(c["id"]): c for c in watcher.client_list() if int(c["db"]) == db and int(c["id"]) != me}


class NewConnections:
    """Connections to this test's Redis database opened since ``start()``."""

    def __init__(self):
        self.watcher = _sync_client()
        self.before = set()

    def start(self):
        self.before = set(_client_ids(self.watcher))

    def now(self) -> list[dict]:
        return [c for cid, c in _client_ids(self.watcher).items() if cid not in self.before]


async def _drained(timeout: float = 5.0) -> None:
    """Until this loop's batch has nothing queued or in flight."""
    from chatsite import redis_batch

    batch = redis_batch.batch()
    async with asyncio.timeout(timeout):
        while batch.task is not None or batch.queue:
            await asyncio.sleep(0.01)


@pytest.fixture
def unpaused(monkeypatch):
    """No pause left over from an earlier test's Redis failure: every admit asks Redis."""
    monkeypatch.setattr(limits, "_paused_until", 0.0)


async def test_500_concurrent_admits_then_releases_on_one_loop_use_a_handful_of_connections_and_keep_the_cap_exact(
    settings, unpaused, monkeypatch
):
    """100 users open 5 sockets each at once (500 admits), cap 3: exactly 3 of each user's are
    admitted, counted once in Redis; then the 300 admitted close at once (300 releases) and every
    count is back to 0. All of it over at most a handful of Redis connections (it was one per
    concurrent call: about 500)."""
    settings.WS_MAX_SOCKETS_PER_USER = 3
    # Counts and connections are what is checked here, not speed: on a machine busy with the
    # rest of the suite a round trip of 500 scripts once took longer than the production limit
    # (then each admit falls back to "admitted without counting", and the cap is not exact).
    monkeypatch.setattr(ratelimit, "SHARED_TIMEOUT", 5.0)
    base = 10_000_000 + uuid.uuid4().int % 1_000_000  # user ids no other test uses
    users = [base + i for i in range(100)]
    consumers = {u: [_Consumer(f"t.{u}.{k}.{uuid.uuid4().hex[:6]}") for k in range(5)] for u in users}
    connections = NewConnections()
    connections.start()

    slots = await asyncio.gather(*(limits.admit_socket(u, c) for u in users for c in consumers[u]))
    admitted = [s for s in slots if s is not None]
    per_user = dict.fromkeys(users, 0)
    for slot in admitted:
        per_user[slot.user_id] += 1
    assert set(per_user.values()) == {3}, per_user
    sync = connections.watcher
    assert {sync.zcard(limits._key(u)) for u in users} == {3}
    assert await limits.admit_socket(users[0], _Consumer("one-more")) is None  # still full

    await asyncio.gather(*(slot.release() for slot in admitted))  # sent, not awaited (Batch.send)
    await _drained()
    assert {sync.zcard(limits._key(u)) for u in users} == {0}
    opened = connections.now()
    print(f"REDIS BATCH 500 admits + 300 releases at once: {len(opened)} Redis connection(s) opened")
    assert len(opened) <= CONNECTIONS_AT_MOST, [c.get("name") for c in opened]
    from chatsite import redis_batch

    batch = redis_batch.batch()
    print(f"REDIS BATCH ... in {batch.round_trips} round trips ({batch.commands} commands)")
    assert batch.round_trips <= 10  # 801 calls: 500 + 1 + 300, at most 500 a round trip


async def test_a_join_storm_and_a_mass_leave_of_presence_answer_as_one_at_a_time_over_a_handful_of_connections(
    settings,
):
    """250 users with two sockets each join one room at once (500 joins): each user comes
    online exactly once, and the count is 250; then all 500 leave at once: each user goes
    offline exactly once (on their last socket). At most a handful of Redis connections."""
    store = presence.RedisStore()
    room = 900_000_000 + uuid.uuid4().int % 1_000_000
    users = list(range(1, 251))
    conns = {(u, k): f"p.{u}.{k}.{uuid.uuid4().hex[:6]}" for u in users for k in range(2)}
    connections = NewConnections()
    connections.start()

    joins = await asyncio.gather(*(store.join(room, u, f"user{u:03}", conns[u, k], 10) for (u, k) in conns))
    came_online = [u for (u, _), (came, _) in zip(conns, joins) if came]
    assert sorted(came_online) == users
    count = (await store.page(room, None, 10)).count
    assert count == 250
    leaves = await asyncio.gather(*(store.leave(room, u, conns[u, k]) for (u, k) in conns))
    went_offline = [u for (u, _), gone in zip(conns, leaves) if gone]
    assert sorted(went_offline) == users
    assert (await store.page(room, None, 10))[0] == 0
    opened = connections.now()
    connections.watcher.delete(*[key for key in presence._keys(room) if key])
    print(f"REDIS BATCH 500 presence joins + 500 leaves at once: {len(opened)} Redis connection(s) opened")
    assert len(opened) <= CONNECTIONS_AT_MOST, [c.get("name") for c in opened]


async def test_a_burst_is_a_few_round_trips_and_each_callers_error_is_its_own():
    """600 calls queued at once on one loop go out in 2 round trips (MAX_BATCH 500), plus one for
    a script Redis did not know yet (loaded, then run again); a wrong-type command and a script
    that fails get their errors, and every other caller its reply."""
    from chatsite import redis_batch

    batch = redis_batch.batch()
    prefix = f"rb-test-{uuid.uuid4().hex[:8]}"
    sync = _sync_client()
    sync.zadd(f"{prefix}:zset", {"m": 1})
    new_script = redis_batch.Script(f"return 'loaded {prefix}'")  # never loaded: NOSCRIPT first
    failing = redis_batch.Script(f"return redis.error_reply('boom {prefix}')")
    trips, sent = batch.round_trips, batch.commands

    calls = [batch.call("INCR", f"{prefix}:n{i % 7}", timeout=2) for i in range(596)]
    calls.append(batch.call("INCR", f"{prefix}:zset", timeout=2))  # WRONGTYPE
    calls.append(batch.script(new_script, [], [], timeout=2))
    calls.append(batch.script(failing, [], [], timeout=2))
    calls.append(batch.calls([("SET", f"{prefix}:s", 0, "EX", 5, "NX"), ("INCR", f"{prefix}:s")], timeout=2))
    replies = await asyncio.gather(*calls, return_exceptions=True)

    expected = sorted([*range(1, 87), *[n for _ in range(6) for n in range(1, 86)]])  # 596 = 86 + 6 × 85
    assert sorted(replies[:596]) == expected
    assert isinstance(replies[596], ResponseError) and "WRONGTYPE" in str(replies[596])
    assert replies[597] == f"loaded {prefix}".encode()
    assert isinstance(replies[598], ResponseError) and not isinstance(replies[598], NoScriptError)
    assert f"boom {prefix}" in str(replies[598])
    assert replies[599] == [True, 1]
    round_trips = batch.round_trips - trips
    print(f"REDIS BATCH 600 calls at once: {round_trips} round trips, {batch.commands - sent} commands")
    assert round_trips == 3  # 500, then 100, then the unknown script's SCRIPT LOAD + EVALSHA
    sync.delete(*[f"{prefix}:n{i}" for i in range(7)], f"{prefix}:zset", f"{prefix}:s")


async def test_a_round_trip_that_cannot_reach_redis_fails_each_of_its_callers_with_its_own_error():
    """A batch on a client whose Redis refuses connections: every caller gets a
    ``ConnectionError`` of its own (not one object shared by all), and no caller hangs."""
    from chatsite import redis_batch

    port = _free_port()
    config = redis_config.from_env({"REDIS_URL": f"redis://127.0.0.1:{port}/0"})
    client = redis_config.async_client(config, timeout=0.5)
    batch = redis_batch.Batch(client, asyncio.get_running_loop())
    replies = await asyncio.gather(
        *(batch.call("PING", timeout=5) for _ in range(20)), return_exceptions=True
    )
    assert all(isinstance(r, RedisConnectionError) for r in replies), replies
    assert len({id(r) for r in replies}) == 20
    assert batch.round_trips == 1
    await client.aclose()


async def test_sent_commands_do_not_hold_their_caller_and_failures_are_one_warning(caplog):
    """``Batch.send`` (a disconnect's ZREM) returns at once whatever Redis does; its commands go
    out with the next round trip; against a Redis that refuses connections, 50 failed sends make
    one warning with their count, not one traceback each."""
    import logging

    from chatsite import redis_batch

    prefix = f"rb-send-{uuid.uuid4().hex[:8]}"
    sync = _sync_client()
    sync.zadd(f"{prefix}:z", {f"m{i}": i for i in range(50)})
    batch = redis_batch.batch()
    for i in range(50):
        batch.send("ZREM", f"{prefix}:z", f"m{i}")
    assert sync.zcard(f"{prefix}:z") == 50  # nothing awaited yet: queued for the next round trip
    await _drained()
    assert sync.zcard(f"{prefix}:z") == 0

    port = _free_port()
    config = redis_config.from_env({"REDIS_URL": f"redis://127.0.0.1:{port}/0"})
    client = redis_config.async_client(config, timeout=0.5)
    dead = redis_batch.Batch(client, asyncio.get_running_loop())
    redis_batch._send_failures.update(count=0, logged_at=-redis_batch.SEND_FAILURE_LOG_EVERY)
    with caplog.at_level(logging.WARNING, logger="chatsite.redis_batch"):
        for i in range(50):
            dead.send("ZREM", f"{prefix}:z", f"m{i}")
        async with asyncio.timeout(5):
            while dead.task is not None or dead.queue:
                await asyncio.sleep(0.01)
        await asyncio.sleep(0)  # the futures' done callbacks
    warnings = [r for r in caplog.records if r.name == "chatsite.redis_batch"]
    assert len(warnings) == 1, [r.getMessage() for r in warnings]
    assert redis_batch._send_failures["count"] == 49  # the rest counted for the next warning
    await client.aclose()


async def test_the_loop_client_has_a_bounded_pool_and_named_connections():
    """``loop_client()``: a blocking pool of LOOP_MAX_CONNECTIONS; 100 direct commands at once
    open no more than that, each named chatsite-<SERVER_ID>. With Sentinel the master's pool is
    bounded the same way."""
    from django.conf import settings

    client = redis_config.loop_client()
    pool = client.connection_pool
    assert pool.max_connections == redis_config.LOOP_MAX_CONNECTIONS == 8
    assert pool.timeout == redis_config.LOOP_POOL_WAIT
    connections = NewConnections()
    connections.start()
    await asyncio.gather(*(client.ping() for _ in range(100)))
    # Only the loop client's (named) connections: this process's channel layer may open one of
    # its own meanwhile (a fresh-clone run once counted 9).
    opened = [c for c in connections.now() if c["name"] == f"chatsite-{settings.SERVER_ID}"]
    assert 1 <= len(opened) <= redis_config.LOOP_MAX_CONNECTIONS, connections.now()

    sentinel = redis_config.from_env(
        {"REDIS_SENTINELS": "127.0.0.1:1", "REDIS_SENTINEL_MASTER": "m", "REDIS_URL": "redis:///0"}
    )
    master = redis_config.async_client(sentinel)
    assert master.connection_pool.max_connections == redis_config.LOOP_MAX_CONNECTIONS
    assert master.connection_pool.timeout == redis_config.LOOP_POOL_WAIT
    assert master.connection_pool.service_name == "m"
    await master.aclose()


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
