"""chatsite.layers on the real Redis: direct delivery into a consumer's inbox, with
channels-redis's own behaviour kept for everything else."""

import asyncio
import os
import uuid

import pytest

from chatsite.layers import RedisPubSubChannelLayer

REDIS_URL = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")


@pytest.fixture
async def layer():
    layer = RedisPubSubChannelLayer(hosts=[REDIS_URL], prefix=f"chatsite-test-layers-{uuid.uuid4().hex[:8]}")
    yield layer
    await layer.flush()


async def _wait_for(predicate, timeout=5.0):
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():
        assert asyncio.get_running_loop().time() < deadline, "timed out"
        await asyncio.sleep(0.01)


def _count_calls(obj, name: str) -> list:
    """Wrap the coroutine method ``obj.<name>`` so that each call is recorded (its arguments)
    in the list returned, then runs as before."""
    calls = []
    real = getattr(obj, name)

    async def counted(*args, **kwargs):
        calls.append(args)
        return await real(*args, **kwargs)

    setattr(obj, name, counted)
    return calls


async def test_attached_channels_get_group_events_in_order_decoded_once_per_node(layer):
    a, b = await layer.new_channel(), await layer.new_channel()
    got_a, got_b = [], []
    assert layer.attach(a, got_a.append) and layer.attach(b, got_b.append)
    for channel in (a, b):
        await layer.group_add("room.1", channel)
    for n in range(20):
        await layer.group_send("room.1", {"type": "room.message", "seq": n})
    await _wait_for(lambda: len(got_a) == 20 and len(got_b) == 20)
    assert [e["seq"] for e in got_a] == list(range(20))
    assert [e["seq"] for e in got_b] == list(range(20))
    # one decode per message on this node: both members were handed the same event
    assert all(x is y for x, y in zip(got_a, got_b))


async def test_group_send_many_reaches_each_groups_members_in_order_in_one_pipeline(layer):
    """``group_send_many`` (a tick's ``read.updated`` events, ``rooms.events.broadcast_read_updates``):
    every event reaches its own group's members, in the order given, and none another group's."""
    a, b, c = await layer.new_channel(), await layer.new_channel(), await layer.new_channel()
    got = {a: [], b: [], c: []}
    for channel, group in ((a, "user.1"), (b, "user.2"), (c, "user.1")):
        assert layer.attach(channel, got[channel].append)
        await layer.group_add(group, channel)
    events = [(f"user.{1 + n % 2}", {"type": "user.read_updated", "n": n}) for n in range(10)]
    await layer.group_send_many(events)
    await _wait_for(lambda: len(got[a]) == 5 and len(got[b]) == 5 and len(got[c]) == 5)
    assert [e["n"] for e in got[a]] == [0, 2, 4, 6, 8] == [e["n"] for e in got[c]]
    assert [e["n"] for e in got[b]] == [1, 3, 5, 7, 9]


async def test_events_queued_before_attach_are_handed_over_first(layer):
    channel = await layer.new_channel()
    await layer.group_add("room.2", channel)
    await layer.group_send("room.2", {"type": "room.message", "seq": 1})
    await layer.send(channel, {"type": "direct", "seq": 2})
    loop_layer = layer._get_layer()
    await _wait_for(lambda: loop_layer.channels[channel].qsize() == 2)
    got = []
    layer.attach(channel, got.append)
    await layer.group_send("room.2", {"type": "room.message", "seq": 3})
    await _wait_for(lambda: len(got) == 3)
    assert [e["seq"] for e in got] == [1, 2, 3]


async def test_a_channel_without_a_sink_still_receives_as_under_channels_redis(layer):
    channel = await layer.new_channel()
    await layer.group_add("room.3", channel)
    await layer.group_send("room.3", {"type": "room.message", "text": "hi"})
    assert await asyncio.wait_for(layer.receive(channel), 5) == {"type": "room.message", "text": "hi"}
    assert layer.attach("chatsite-test-layers.specific.nobody", print) is False


async def test_cancelling_receive_still_unsubscribes_an_attached_channel(layer):
    channel = await layer.new_channel()
    layer.attach(channel, lambda event: None)
    receiving = asyncio.create_task(layer.receive(channel))
    await asyncio.sleep(0.05)
    receiving.cancel()
    with pytest.raises(asyncio.CancelledError):
        await receiving
    loop_layer = layer._get_layer()
    assert channel not in loop_layer.channels
    await _wait_for(lambda: channel not in loop_layer._shards[0]._subscribed_to)
    assert channel not in await _server_channels(layer)


async def test_a_receive_cancelled_again_while_it_cleans_up_unsubscribes_and_logs_no_error(layer, caplog):
    """A consumer's ``receive`` cancelled twice in a row (its application ended as its socket
    closed) still ends unsubscribed in Redis, with nothing logged above INFO (channels-redis
    logged "Unexpected exception while cleaning-up channel" with a traceback for each)."""
    loop_layer = layer._get_layer()
    channels = [await layer.new_channel() for _ in range(20)]
    assert set(channels) <= await _server_channels(layer)
    receiving = [asyncio.create_task(layer.receive(channel)) for channel in channels]
    await asyncio.sleep(0.05)
    with caplog.at_level("INFO"):
        for task in receiving:
            task.cancel()
        await asyncio.sleep(0)  # each is in its clean-up now
        for task in receiving:
            task.cancel()
        for task in receiving:
            with pytest.raises(asyncio.CancelledError):
                await task
        await _wait_for(lambda: not set(channels) & loop_layer._shards[0]._subscribed_to)
    assert not set(channels) & await _server_channels(layer)
    assert not set(channels) & set(loop_layer.channels)
    assert [r.getMessage() for r in caplog.records if r.levelname in ("WARNING", "ERROR")] == []


async def test_a_channel_cancelled_while_subscribing_is_not_left_subscribed(layer):
    """A handshake cut short by its time limit while its channel's SUBSCRIBE was queued: the
    SUBSCRIBE is still sent, and an UNSUBSCRIBE after it (before, the channel stayed subscribed
    in Redis for the node's lifetime, and again after every reconnect)."""
    loop_layer = layer._get_layer()
    await layer.new_channel()  # the shard's connections are up
    before = await _server_channels(layer)
    names = [f"{layer.prefix}specific.cut-short-{i}" for i in range(5)]
    creating = [asyncio.create_task(loop_layer._subscribe_to_channel(name)) for name in names]
    await asyncio.sleep(0)  # each has queued its SUBSCRIBE
    shard = loop_layer._shards[0]
    assert all(shard._changing[name] for name in names)
    for task in creating:
        task.cancel()
    for task in creating:
        with pytest.raises(asyncio.CancelledError):
            await task
    await _wait_for(lambda: not shard._changing and shard._change_task is None)
    assert await _server_channels(layer) == before
    assert set(loop_layer.channels) == before


async def test_an_undecodable_message_is_dropped_for_that_channel_only(layer):
    channel = await layer.new_channel()
    got = []
    layer.attach(channel, got.append)
    loop_layer = layer._get_layer()
    loop_layer.channels[channel].put_nowait(b"\xc1 not msgpack")  # what the shard's reader does
    await layer.send(channel, {"type": "direct", "seq": 1})
    await _wait_for(lambda: len(got) == 1)
    assert got == [{"type": "direct", "seq": 1}]


async def test_dispatch_in_order_hands_events_to_deliver_now_only_while_idle_and_keeps_order():
    """``rooms.consumers.dispatch_in_order``: a pushed event goes to ``deliver_now`` only when
    nothing is being dispatched or waiting; otherwise (and when ``deliver_now`` declines) it
    goes through the inbox, after what came before it."""
    from rooms.consumers import dispatch_in_order

    order, pushes = [], []
    release = asyncio.Event()
    socket_events: asyncio.Queue = asyncio.Queue()

    async def dispatch(event):
        order.append(("dispatched", event["n"]))
        if event.get("slow"):
            await release.wait()  # busy: pushes now must wait in the inbox
        if event.get("stop"):
            raise asyncio.CancelledError

    def deliver_now(event):
        if event.get("decline"):
            return False
        order.append(("now", event["n"]))
        return True

    running = asyncio.create_task(
        dispatch_in_order([socket_events.get], dispatch, attach=pushes.append, deliver_now=deliver_now)
    )
    await asyncio.sleep(0.01)
    push = pushes[0]
    push({"n": 1})  # idle: handled at once
    push({"n": 2, "decline": True})  # declined: through the inbox
    await asyncio.sleep(0.01)
    socket_events.put_nowait({"n": 3, "slow": True})
    await asyncio.sleep(0.01)
    push({"n": 4})  # busy with 3: queued behind it
    push({"n": 5})
    release.set()
    await asyncio.sleep(0.01)
    push({"n": 6})  # idle again
    socket_events.put_nowait({"n": 7, "stop": True})
    with pytest.raises(asyncio.CancelledError):
        await running
    assert order == [
        ("now", 1),
        ("dispatched", 2),
        ("dispatched", 3),
        ("dispatched", 4),
        ("dispatched", 5),
        ("now", 6),
        ("dispatched", 7),
    ]


async def test_a_channel_that_cannot_be_subscribed_is_not_kept():
    """Redis unreachable: ``new_channel`` raises (the consumer refuses its socket with 4503) and
    leaves no queue behind, so refused attempts do not pile up in the node's memory."""
    import redis

    from bench.cluster import free_port

    layer = RedisPubSubChannelLayer(hosts=[f"redis://127.0.0.1:{free_port()}/0"], prefix="chatsite-test-down")
    for _ in range(3):
        with pytest.raises((redis.ConnectionError, OSError)):
            await layer.new_channel()
    assert layer._get_layer().channels == {}
    await layer.flush()


async def test_a_silent_subscriber_connection_is_reconnected_and_subscribed_again():
    """The subscriber's connection goes silent (a TCP proxy starts discarding its traffic; new
    connections get through): within about two health-check intervals the shard closes it,
    redis-py reconnects and subscribes again, and group messages arrive again."""
    from urllib.parse import urlsplit

    from tests.nodes import TcpProxy

    shared = urlsplit(REDIS_URL)
    proxy = TcpProxy((shared.hostname, shared.port or 6379))
    prefix = f"chatsite-test-silent-{uuid.uuid4().hex[:8]}"
    host = {
        "address": f"redis://127.0.0.1:{proxy.port}{shared.path}",
        "health_check_interval": 1,
        "socket_timeout": 1,
    }
    layer = RedisPubSubChannelLayer(hosts=[host], prefix=prefix)
    direct = RedisPubSubChannelLayer(hosts=[REDIS_URL], prefix=prefix)  # another node, on Redis itself
    try:
        channel = await layer.new_channel()
        got = []
        assert layer.attach(channel, got.append)
        await layer.group_add("room.9", channel)
        # SUBSCRIBE goes out without waiting for Redis's confirmation (and through the proxy):
        # publish until the subscription is live.
        for _ in range(50):
            await direct.group_send("room.9", {"type": "room.message", "n": 0})
            await asyncio.sleep(0.1)
            if got:
                break
        assert got and got[-1]["n"] == 0

        assert proxy.blackhole() > 0
        started, n = asyncio.get_running_loop().time(), 0
        while asyncio.get_running_loop().time() - started < 10:
            n += 1
            await direct.group_send("room.9", {"type": "room.message", "n": n})
            await asyncio.sleep(0.2)
            if got[-1]["n"] == n:
                break
        assert got[-1]["n"] == n, "no message arrived after the connection went silent"
        assert asyncio.get_running_loop().time() - started < 5  # 2 intervals, plus a little
        assert [e["n"] for e in got if e["n"] > 0] != list(range(1, n + 1))  # some went into the silence
    finally:
        await layer.flush()
        await direct.flush()
        proxy.close()


async def test_a_room_message_published_twice_reaches_a_node_once(layer):
    """A PUBLISH retried after a timeout can reach Redis twice: the node passes each group's
    room.message seq on once; other seqs, the same seq in another group, and other event types
    go through."""
    channel = await layer.new_channel()
    got = []
    assert layer.attach(channel, got.append)
    for group in ("room.5", "room.6"):
        await layer.group_add(group, channel)
    events = [
        ("room.5", {"type": "room.message", "seq": 1, "text": "a"}),
        ("room.5", {"type": "room.message", "seq": 1, "text": "a"}),  # the repeat
        ("room.6", {"type": "room.message", "seq": 1, "text": "b"}),
        ("room.5", {"type": "room.presence", "text": "p"}),
        ("room.5", {"type": "room.presence", "text": "p"}),
        ("room.5", {"type": "room.message", "seq": 2, "text": "c"}),
    ]
    for group, event in events:
        await layer.group_send(group, event)
    await _wait_for(lambda: len(got) >= 5)
    await asyncio.sleep(0.2)
    assert [e["text"] for e in got] == ["a", "b", "p", "p", "c"]


async def test_a_loops_publishes_queued_together_go_out_in_one_pipeline_in_commit_order(layer):
    """``rooms.events``' publisher: the events a node queues while a publish is in flight go
    to Redis in one ``group_send_many`` (one round trip), in the order they were queued; a
    publish alone goes by ``group_send``. Each caller's wait ends once its event was taken."""
    from rooms import events

    a = await layer.new_channel()
    got = []
    assert layer.attach(a, got.append)
    await layer.group_add("room.9", a)
    pipelines = []
    send_many = layer.group_send_many

    async def counted(items):
        pipelines.append(len(items))
        await send_many(items)

    layer.group_send_many = counted
    await events._publish_in_order(layer, "room.9", {"type": "room.message", "seq": 0}, None)
    assert pipelines == []  # alone: one group_send
    waits = [
        asyncio.ensure_future(
            events._publish_in_order(layer, "room.9", {"type": "room.message", "seq": n}, None)
        )
        for n in range(1, 31)
    ]
    await asyncio.wait_for(asyncio.gather(*waits), 5)
    assert sum(pipelines) == 30 and len(pipelines) <= 2, pipelines  # not 30 round trips
    await _wait_for(lambda: len(got) == 31)
    assert [e["seq"] for e in got] == list(range(31))


async def _server_channels(layer) -> set[str]:
    """The channels of ``layer``'s prefix that Redis has a subscriber for (``PUBSUB CHANNELS``)."""
    import redis.asyncio

    client = redis.asyncio.Redis.from_url(REDIS_URL)
    try:
        return {c.decode() for c in await client.pubsub_channels(f"{layer.prefix}*")}
    finally:
        await client.aclose()


async def test_a_storm_of_group_adds_is_subscribed_in_a_few_rounds_and_every_member_gets_events(layer):
    """300 sockets arriving at once (a stopped node's members: a channel each, their room's group
    and their user's group): their subscriptions go out in a few ``SUBSCRIBE`` rounds, not one
    lock handoff each, and each member then gets its groups' events."""
    loop_layer = layer._get_layer()
    shard = loop_layer._shards[0]
    rounds = []
    subscribe = None

    async def arrive(i):
        channel = await layer.new_channel()
        got = []
        layer.attach(channel, got.append)
        await asyncio.gather(layer.group_add(f"room.{i % 3}", channel), layer.group_add(f"user.{i}", channel))
        return got

    first = await arrive(0)  # opens the subscriber connection
    subscribe = shard._pubsub.subscribe

    async def counted(*channels):
        rounds.append(len(channels))
        return await subscribe(*channels)

    shard._pubsub.subscribe = counted
    inboxes = [first] + list(await asyncio.gather(*(arrive(i) for i in range(1, 300))))
    assert sum(rounds) == 299 + 299 + 2  # each new channel, each user group, rooms 1 and 2
    assert len(rounds) <= 10, rounds
    for r in range(3):
        await layer.group_send(f"room.{r}", {"type": "room.message", "seq": 1})
    await layer.group_send("user.7", {"type": "user.notice", "n": 7})
    await _wait_for(lambda: all(len(got) == (2 if i == 7 else 1) for i, got in enumerate(inboxes)))
    assert inboxes[7][1] == {"type": "user.notice", "n": 7}


async def test_the_last_change_of_a_channel_decides_whatever_was_in_flight(layer):
    """A group left while its subscription was queued ends unsubscribed; a group joined again
    while its unsubscription was in flight ends subscribed and delivering (no member left deaf)."""
    loop_layer = layer._get_layer()
    a, b = await layer.new_channel(), await layer.new_channel()
    got = []
    layer.attach(b, got.append)
    group_channel = loop_layer._get_group_channel_name("room.9")

    await asyncio.gather(layer.group_add("room.8", a), layer.group_discard("room.8", a))
    assert loop_layer._get_group_channel_name("room.8") not in await _server_channels(layer)

    await layer.group_add("room.9", a)
    assert group_channel in await _server_channels(layer)
    leaving = asyncio.ensure_future(layer.group_discard("room.9", a))  # the last member leaves ...
    await asyncio.sleep(0)
    await layer.group_add("room.9", b)  # ... and another comes before that is sent
    await leaving
    assert group_channel in await _server_channels(layer)
    await layer.group_send("room.9", {"type": "room.message", "seq": 5})
    await _wait_for(lambda: got == [{"type": "room.message", "seq": 5}])


async def test_a_burst_read_at_once_is_handed_on_without_a_read_per_message_in_order(layer):
    """Messages that arrive together (one pipeline of 300 PUBLISHes from another node) are handed
    on from what hiredis has already parsed, not with one ``get_message`` each
    (``RedisShardConnection._receive_buffered``): each member gets every event once, in order,
    a group change in the middle of the burst still takes effect, and far fewer reads ran than
    messages arrived."""
    a, b = await layer.new_channel(), await layer.new_channel()
    got_a, got_b = [], []
    assert layer.attach(a, got_a.append) and layer.attach(b, got_b.append)
    await layer.group_add("room.5", a)
    await layer.group_add("room.5", b)
    await layer.group_add("room.6", b)
    other = RedisPubSubChannelLayer(hosts=[REDIS_URL], prefix=layer.prefix)  # another node
    try:
        for _ in range(50):  # until both subscriptions are live
            await other.group_send("room.5", {"type": "room.message", "seq": 0})
            await other.group_send("room.6", {"type": "x", "n": 0})
            await asyncio.sleep(0.05)
            if got_a and any(e.get("n") == 0 for e in got_b):
                break
        got_a.clear(), got_b.clear()
        shard = layer._get_layer()._shards[0]
        reads = _count_calls(shard._pubsub, "get_message")
        events = [("room.5", {"type": "room.message", "seq": n}) for n in range(1, 301)]
        events += [("room.6", {"type": "x", "n": 1})]
        await other.group_send_many(events)
        await _wait_for(lambda: len(got_a) == 300 and len(got_b) == 301)
        assert [e["seq"] for e in got_a] == list(range(1, 301))
        assert [e.get("seq", e.get("n")) for e in got_b] == list(range(1, 301)) + [1]
        assert len(reads) < 100, len(reads)
        await layer.group_discard("room.5", b)  # a subscription change read after the burst
        await asyncio.sleep(0.2)
        await other.group_send("room.5", {"type": "room.message", "seq": 301})
        await _wait_for(lambda: len(got_a) == 301)
        await asyncio.sleep(0.1)
        assert len(got_b) == 301
    finally:
        await other.flush()


async def _kill_client(connection) -> None:
    """Close one of this process's Redis connections from the server side (CLIENT KILL by its
    address), as a Redis restart or a proxy reset would."""
    import redis.asyncio as aioredis

    host, port = connection._writer.get_extra_info("sockname")[:2]
    admin = aioredis.Redis.from_url(REDIS_URL)
    try:
        assert await admin.execute_command("CLIENT", "KILL", "ADDR", f"{host}:{port}") in (b"OK", "OK", True)
    finally:
        await admin.aclose()


async def test_publishes_after_the_first_go_on_a_held_connection_and_survive_its_loss(layer):
    """``RedisShardConnection._publish``: the first publish goes through redis-py's
    ``Redis.publish``; the next ones are written on a connection the shard holds, with no call
    of redis-py's command path. When Redis closes that connection, the next publish still
    arrives (sent again through redis-py, with its retries) and a new connection is held."""
    channel = await layer.new_channel()
    got = []
    assert layer.attach(channel, got.append)
    await layer.group_add("room.7", channel)
    await layer.group_send("room.7", {"type": "x", "n": 0})
    await _wait_for(lambda: len(got) == 1)
    shard = layer._get_layer()._shards[0]
    assert shard._publisher is not None
    held = shard._publisher[1]
    calls = _count_calls(shard._redis, "publish")
    for n in range(1, 21):
        await layer.group_send("room.7", {"type": "x", "n": n})
    await layer.group_send_many([("room.7", {"type": "x", "n": n}) for n in range(21, 31)])
    await _wait_for(lambda: len(got) == 31)
    assert [e["n"] for e in got] == list(range(31))
    assert len(calls) == 0 and shard._publisher[1] is held

    killed = held._writer.get_extra_info("sockname")
    await _kill_client(held)
    await layer.group_send("room.7", {"type": "x", "n": 31})
    await _wait_for(lambda: len(got) == 32)
    assert got[-1]["n"] == 31
    assert len(calls) == 1  # sent again through redis-py once the held connection failed
    assert shard._publisher is not None  # a connection held again (the pool may reuse the object)
    assert shard._publisher[1]._writer.get_extra_info("sockname") != killed
    await layer.group_send("room.7", {"type": "x", "n": 32})
    await _wait_for(lambda: len(got) == 33)
    await asyncio.sleep(0.2)
    assert [e["n"] for e in got] == list(range(33))  # each once ("x" is not de-duplicated)
    assert len(calls) == 1


def test_a_held_publishing_connection_to_a_former_sentinel_master_is_not_current():
    """``_still_current``: with a Sentinel pool (``is_master``, ``master_address``), a held
    connection counts only while it is connected to the master address the pool last found;
    with any other pool, always."""
    from types import SimpleNamespace

    from chatsite.layers import _still_current

    connection = SimpleNamespace(host="10.0.0.1", port=6379)
    plain = SimpleNamespace()
    sentinel = SimpleNamespace(is_master=True, master_address=("10.0.0.1", 6379))
    assert _still_current(plain, connection) and _still_current(sentinel, connection)
    sentinel.master_address = ("10.0.0.2", 6379)  # failed over
    assert not _still_current(sentinel, connection)
    replica_pool = SimpleNamespace(is_master=False, master_address=("10.0.0.2", 6379))
    assert _still_current(replica_pool, connection)


async def test_messages_are_read_without_get_message_and_after_the_subscriber_connection_is_killed(layer):
    """``RedisShardConnection._read``: messages arriving one at a time are read from the
    subscriber's socket directly, not through redis-py's ``get_message`` (none is called while
    they arrive). When Redis closes the subscriber connection, the shard reconnects and
    subscribes again, and later messages arrive."""
    channel = await layer.new_channel()
    got = []
    assert layer.attach(channel, got.append)
    await layer.group_add("room.8", channel)
    other = RedisPubSubChannelLayer(hosts=[REDIS_URL], prefix=layer.prefix)  # another node
    try:
        for _ in range(50):  # until the subscription is live
            await other.group_send("room.8", {"type": "x", "n": 0})
            await asyncio.sleep(0.05)
            if got:
                break
        shard = layer._get_layer()._shards[0]
        reads = _count_calls(shard._pubsub, "get_message")
        got.clear()
        for n in range(1, 31):
            await other.group_send("room.8", {"type": "x", "n": n})
            await _wait_for(lambda: len(got) == n)
        assert [e["n"] for e in got] == list(range(1, 31))
        assert len(reads) == 0

        await _kill_client(shard._pubsub.connection)
        n = 30
        for _ in range(100):  # publish until the new subscription is live
            n += 1
            await other.group_send("room.8", {"type": "x", "n": n})
            await asyncio.sleep(0.05)
            if got[-1]["n"] > 30:
                break
        assert got[-1]["n"] > 30, "nothing arrived after the subscriber connection was killed"
        await other.group_send("room.8", {"type": "x", "n": n + 1})
        await _wait_for(lambda: got[-1]["n"] == n + 1)
    finally:
        await other.flush()


async def test_a_message_larger_than_one_read_arrives_whole_and_the_loop_keeps_turning():
    """A message of 600 KB reaches the subscriber in several socket reads (64 KB each): it is
    handed on whole, once, and while its bytes are only partly parsed the shard waits for the
    rest instead of spinning (hiredis's ``has_data`` means unparsed bytes, not a whole reply):
    the event loop keeps turning, measured by a 10 ms ticker's longest gap."""
    prefix = f"chatsite-test-big-{uuid.uuid4().hex[:8]}"
    host = {"address": REDIS_URL, "health_check_interval": 1}
    layer = RedisPubSubChannelLayer(hosts=[host], prefix=prefix)
    other = RedisPubSubChannelLayer(hosts=[REDIS_URL], prefix=prefix)  # another node
    loop = asyncio.get_running_loop()
    gaps = []

    async def ticker():
        last = loop.time()
        while True:
            await asyncio.sleep(0.01)
            gaps.append(loop.time() - last)
            last = loop.time()

    tick = asyncio.ensure_future(ticker())
    try:
        channel = await layer.new_channel()
        got = []
        assert layer.attach(channel, got.append)
        await layer.group_add("room.4", channel)
        for _ in range(50):  # until the subscription is live
            await other.group_send("room.4", {"type": "x", "n": 0})
            await asyncio.sleep(0.05)
            if got:
                break
        await asyncio.sleep(0.2)
        gaps.clear(), got.clear()
        body = "대화 " * 100_000  # 600 KB in UTF-8
        for n in (1, 2, 3):
            await other.group_send("room.4", {"type": "x", "n": n, "body": body})
        try:
            await _wait_for(lambda: len(got) == 3)
        except AssertionError:
            raise AssertionError(f"got {[e['n'] for e in got]}, max gap {max(gaps):.3f}") from None
        await asyncio.sleep(0.3)
        assert [e["n"] for e in got] == [1, 2, 3] and all(e["body"] == body for e in got)
        assert max(gaps) < 0.5, max(gaps)
    finally:
        tick.cancel()
        await layer.flush()
        await other.flush()
