"""The channel layer chatsite runs on: channels-redis's ``RedisPubSubChannelLayer`` with one
addition, direct delivery into a consumer's inbox.

channels-redis's Pub/Sub layer gives each consumer channel an ``asyncio.Queue``. Each node reads
a group message once from Redis and puts the same msgpack bytes into the queue of every member
channel on that node; every consumer then has a task waiting in ``receive()`` that wakes, decodes
the bytes and hands the event on. In a room of 20 that is 20 task wake-ups and 20 decodes per
message per node.

``attach(channel, sink)`` lets a consumer take its channel's events as they arrive instead:
``sink(event)`` is called, synchronously, in the node's Pub/Sub read, with the event already
decoded, and decoded once per node however many members it has (the members share the one
dict: handlers must not change it). Order is kept: events reach the sink in the order Redis
delivered them, as they would reach the queue. Everything else (``group_add``, ``group_send``,
sharding, Sentinel) is channels-redis's own, unchanged, but for the clean-up when ``receive`` is
cancelled at disconnect, which queues the channel's unsubscription instead of waiting for it
(``RedisPubSubLoopLayer.receive``). A channel with no sink attached behaves as under channels-redis.

Each Redis shard's receive loop is ours too (``RedisShardConnection``), channels-redis's plus
three things:

- a subscriber connection that has been silent for twice its ``health_check_interval`` (the
  configured PINGs got no PONG: Redis moved or hung, or the network dropped the connection
  without a reset) is closed, and redis-py reconnects and subscribes again to every channel and
  group of the node. Without this, such a node never delivered anything live from other nodes
  again, even after its health check (whose connections time out and reconnect) was green again
  (tests/test_faults.py);
- a dropped subscriber connection is reconnected the way the pool connects (with Sentinel, at
  the current master), before redis-py's health-check PING would reconnect it at its old address
  (tests/test_redis_deploy.py, BR-24);
- a ``room.message`` the shard already passed on (same group, same seq: a PUBLISH retried after
  a timeout) is dropped (tests/test_layers.py).

Measured under ``python -m bench seed-50rooms`` (bench/RESULTS.md, fifth pass): see there.

Configuration: ``CHANNEL_LAYERS["default"]["BACKEND"] = "chatsite.layers.RedisPubSubChannelLayer"``
with channels-redis's own ``CONFIG``. Depends on channels-redis 4.3's internals (the loop layer's
``channels`` dict of queues, fed with ``put_nowait(bytes)``); ``requirements.txt`` pins that
version and ``tests/test_layers.py`` fails if they change.
"""

import asyncio
import functools
import logging
import uuid
from collections import Counter

from channels_redis import pubsub
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from rooms.logutil import RateLimitedLogger

from .queues import LightQueue

logger = logging.getLogger(__name__)
_unsubscribe_log = RateLimitedLogger(logger, interval=60.0)


class _ChannelQueue(LightQueue):
    """A consumer channel's queue. Until a sink is attached, a queue of msgpack bytes, as in
    channels-redis (a ``chatsite.queues.LightQueue``, not channels-redis's ``asyncio.Queue``:
    3 KB less per socket, and channels-redis uses only ``put_nowait`` and ``get`` of it). Once attached, ``put_nowait(data)`` decodes ``data`` (once per
    message per node, see ``RedisPubSubLoopLayer.decode``) and calls ``sink(event)``; whatever
    was queued before is handed over first, in order."""

    __slots__ = ("_layer", "sink")

    def __init__(self, layer):
        super().__init__()
        self._layer = layer
        self.sink = None

    def put_nowait(self, data) -> None:
        if self.sink is None:
            super().put_nowait(data)
            return
        try:
            event = self._layer.decode(data)
        except Exception:  # one bad message must not cost the node's other members theirs
            logger.exception("dropping a channel-layer message that cannot be decoded")
            return
        self.sink(event)

    def attach(self, sink) -> None:
        while not self.empty():
            sink(self._layer.decode(self.get_nowait()))
        self.sink = sink


def _publish_command(channel, data: bytes) -> bytes:
    """One PUBLISH in Redis's protocol (RESP): ``channel`` (str or bytes) and ``data`` (bytes)."""
    if isinstance(channel, str):
        channel = channel.encode()
    if isinstance(data, str):
        data = data.encode()
    return b"*3\r\n$7\r\nPUBLISH\r\n$%d\r\n%b\r\n$%d\r\n%b\r\n" % (len(channel), channel, len(data), data)


def _still_current(pool, connection) -> bool:
    """Whether ``connection`` is still one ``pool`` would hand out: with Sentinel
    (``SentinelConnectionPool``), connected to the master address the pool last discovered."""
    master = getattr(pool, "master_address", None)
    if master is None or not getattr(pool, "is_master", False):
        return True
    return (connection.host, connection.port) == master


def _retrieved(future: asyncio.Future) -> None:
    if not future.cancelled():
        future.exception()


def _log_unsubscribe_failure(channel: str, future: asyncio.Future) -> None:
    # At most one line a minute: a round that failed fails every socket closing in it (a storm's
    # end, thousands). The channel stays subscribed, as under channels-redis.
    if not future.cancelled() and future.exception() is not None:
        _unsubscribe_log.log(
            logging.WARNING,
            "unsubscribe",
            "could not unsubscribe channel %s: %r",
            channel,
            future.exception(),
        )


class RedisShardConnection(pubsub.RedisSingleShardConnection):
    """channels-redis's connection to one Redis shard (a publishing client and one Pub/Sub
    subscriber connection), whose receive loop also closes a subscriber connection that went
    silent, so that redis-py reconnects and subscribes again.

    Silent means: nothing read for more than twice the connection's ``health_check_interval``
    (seconds; ``redis_config.HEALTH_CHECK_INTERVAL``). redis-py sends a PING on an idle
    subscriber connection once per interval and any reply counts, so a live connection is never
    silent that long; a dead one is closed between two and about three intervals after its last
    reply. Without ``health_check_interval`` nothing changes."""

    _closed_at = 0.0  # loop time at which _close_if_silent last closed the connection
    RECENT_MESSAGES = 4096  # room.message events remembered per shard, to drop repeats

    async def publish(self, channel, message) -> None:
        """channels-redis's ``publish``, under the publishes' own lock (see ``__init__``), on the
        shard's held publishing connection (``_publish``)."""
        async with self._publish_lock:
            self._ensure_redis()
            await self._publish([(channel, message)])

    async def publish_many(self, messages: list[tuple[str, bytes]]) -> None:
        """``publish`` of each ``(channel, data)``, in order, in one write: one round trip to
        Redis for all of them (each still one PUBLISH command)."""
        async with self._publish_lock:
            self._ensure_redis()
            await self._publish(messages)

    async def _publish(self, messages: list) -> None:
        """PUBLISH each ``(channel, data)`` in order, in one round trip, on a connection of the
        shard's pool that this shard holds for its publishes (taken after the first publish).

        Why (issue 16, bench/RESULTS.md session 21 pass): redis-py's ``Redis.publish`` takes
        the connection from the pool and gives it back, wraps the command in its retry and its
        metrics, and encodes each argument on every call: 88-97 µs of CPU per PUBLISH against
        35-45 µs written and read directly (``bench/RESULTS.md``), once per message sent.

        Faults keep redis-py's behaviour: when the held connection fails (closed, reset, no
        answer within the connection's ``socket_timeout``), it is closed and given back, and
        the same PUBLISHes go once more through redis-py's ``publish`` / pipeline, with its
        retries on a fresh connection (with Sentinel, at the current master). A PUBLISH that
        Redis had taken before the connection failed may so reach subscribers twice, as with
        redis-py's own retry; the receiving shards drop a repeated ``room.message``
        (``_receive_message``). An error reply (``ResponseError``) is raised as redis-py
        raises it, once every reply has been read."""
        redis = self._redis
        held = self._publisher
        if held is None or held[0] is not redis:
            if len(messages) == 1:
                await redis.publish(*messages[0])
            else:
                pipe = redis.pipeline(transaction=False)
                for channel, data in messages:
                    pipe.publish(channel, data)
                await pipe.execute()
            if self._publisher is None and self._redis is redis:
                try:
                    connection = await redis.connection_pool.get_connection()
                except (OSError, RedisError):  # published all the same; the next one tries again
                    return
                if self._publisher is None and self._redis is redis:
                    self._publisher = (redis, connection)
                else:
                    await redis.connection_pool.release(connection)
            return
        connection = held[1]
        if not _still_current(redis.connection_pool, connection):
            # With Sentinel, a connection to a former master (the pool's master address moved):
            # idle connections are closed by the pool then, a held one must be given back here.
            await self._give_back(redis, connection)
            await self._publish(messages)
            return
        packed = b"".join(_publish_command(channel, data) for channel, data in messages)
        error = None
        answered = 0
        try:
            await connection.send_packed_command(packed, check_health=False)
            for _ in messages:
                try:
                    await connection.read_response()
                except ResponseError as exc:  # one command's error reply: read the others first
                    error = error or exc
                answered += 1
        except (OSError, RedisConnectionError, RedisTimeoutError):
            await self._give_back(redis, connection)
            # The ones Redis answered are published; the rest again through redis-py's own
            # path, with its retries.
            if messages[answered:]:
                await self._publish(messages[answered:])
            return
        except BaseException:  # cancelled mid-round trip: the connection's state is unknown
            await self._give_back(redis, connection)
            raise
        if error is not None:
            raise error

    async def _give_back(self, redis, connection) -> None:
        """Stop holding ``connection`` for publishes: close it and return it to ``redis``'s pool
        (the next publish goes through redis-py and holds another)."""
        self._publisher = None
        await connection.disconnect(nowait=True)
        await redis.connection_pool.release(connection)

    def __init__(self, host, channel_layer):
        super().__init__(host, channel_layer)
        self._recent: dict[tuple, None] = {}  # (group channel, seq), oldest first
        # Publishes wait for their reply under a lock of their own, not the subscriptions' one
        # (channels-redis holds one lock for both): a SUBSCRIBE is only written to the
        # subscriber connection, yet in a reconnect storm each handshake's three (its channel,
        # its room's group, its user's group) queued behind every presence and message
        # publish's round trip, past the handshake's 2 s limit (LAYER_JOIN_TIMEOUT: 1,370
        # sockets refused with 4503 in ``python -m bench reconnect-storm --signal kill``).
        # Publishes still go one at a time, in order.
        self._publish_lock = asyncio.Lock()
        self._publisher = None  # (the redis-py client, its connection held for publishes)
        # (Un)subscriptions queued while one is in flight go together (``_change``).
        self._changes: list[tuple[bool, str, asyncio.Future]] = []
        self._changing: Counter = Counter()  # channel -> its changes queued or in flight
        self._change_task: asyncio.Task | None = None

    async def subscribe(self, channel) -> None:
        """channels-redis's ``subscribe``, queued with the others (``_change``); at once when the
        channel is subscribed and no change of it is queued or in flight (``group_add`` calls
        this for every member of a group the node is already in)."""
        if channel in self._subscribed_to and not self._changing[channel]:
            return
        await self._change(True, channel)

    async def unsubscribe(self, channel) -> None:
        """channels-redis's ``unsubscribe``, queued with the others (``_change``)."""
        if channel not in self._subscribed_to and not self._changing[channel]:
            return
        await self._change(False, channel)

    async def _change(self, subscribe: bool, channel: str) -> None:
        """Queue one (un)subscription and wait until it is sent. channels-redis sends each under
        the shard's lock, one per handoff of that lock, and a busy loop hands the lock on once
        per turn: in a reconnect storm 1,500 handshakes (three subscriptions each) waited for
        one another past the handshake's 2 s limit (``LAYER_JOIN_TIMEOUT``). Here every change
        queued while one round is being sent goes in the next round: one ``SUBSCRIBE`` and one
        ``UNSUBSCRIBE`` with all their channels, the last change of a channel deciding. Errors
        (Redis unreachable) are raised to every caller of that round. A caller that is cancelled
        stops waiting; its change is still sent."""
        await asyncio.shield(self._queue_change(subscribe, channel))

    def _queue_change(self, subscribe: bool, channel: str) -> asyncio.Future:
        """Queue one (un)subscription for the next round (``_change``); the future is done when
        that round has been sent (its exception: Redis unreachable)."""
        future = asyncio.get_running_loop().create_future()
        self._changes.append((subscribe, channel, future))
        future.add_done_callback(_retrieved)  # a caller cancelled meanwhile leaves it unread
        self._changing[channel] += 1
        if self._change_task is None:
            self._change_task = asyncio.ensure_future(self._send_changes())
        return future

    def unsubscribe_soon(self, channel) -> None:
        """``unsubscribe`` without waiting for it: queued with the others and sent in the next
        round (``_change``); a failure (Redis unreachable) is logged as a warning. For a
        consumer's channel as its ``receive`` is cancelled (``RedisPubSubLoopLayer.receive``)."""
        if channel not in self._subscribed_to and not self._changing[channel]:
            return
        self._queue_change(False, channel).add_done_callback(
            functools.partial(_log_unsubscribe_failure, channel)
        )

    async def _send_changes(self) -> None:
        try:
            while self._changes:
                async with self._lock:
                    changes, self._changes = self._changes, []
                    last: dict[str, bool] = {}
                    for subscribe, channel, _ in changes:
                        last[channel] = subscribe
                    add = [c for c, on in last.items() if on and c not in self._subscribed_to]
                    drop = [c for c, on in last.items() if not on and c in self._subscribed_to]
                    error = None
                    try:
                        if add or drop:
                            self._ensure_redis()
                            self._ensure_receiver()
                        if add:
                            await self._pubsub.subscribe(*add)
                            self._subscribed_to.update(add)
                        if drop:
                            await self._pubsub.unsubscribe(*drop)
                            self._subscribed_to.difference_update(drop)
                    except Exception as exc:
                        error = exc
                    finally:
                        for _, channel, _ in changes:
                            self._changing[channel] -= 1
                            if not self._changing[channel]:
                                del self._changing[channel]
                for _, _, future in changes:
                    if future.done():
                        continue
                    if error is None:
                        future.set_result(None)
                    else:
                        future.set_exception(error)
        finally:
            self._change_task = None

    async def flush(self) -> None:
        """channels-redis's ``flush``, once no publish is in flight."""
        async with self._publish_lock:
            self._publisher = None  # closed with the client's pool
            await super().flush()

    def _receive_message(self, message):
        """channels-redis's, minus repeats of a ``room.message`` (same group, same ``seq``)
        among the last ``RECENT_MESSAGES`` this shard received, and with the event decoded once
        and handed to each attached channel's sink directly. A PUBLISH that timed out on a
        hung Redis is retried on a new connection, and when Redis had taken the first one after
        all, every member got the message twice (seen with SIGSTOP for 5.6 s)."""
        if message is not None:
            self._deliver(message["channel"], message["data"])

    def _deliver(self, name, data) -> None:
        """``_receive_message`` of a Pub/Sub message on channel ``name`` (bytes or str) carrying
        ``data``."""
        event = None
        if isinstance(data, bytes):
            try:
                event = self.channel_layer.decode(data)
            except Exception:
                event = None  # delivered as it is; the channel's queue deals with it
            if isinstance(event, dict) and event.get("type") == "room.message" and "seq" in event:
                key = (name, event["seq"])
                recent = self._recent
                if key in recent:
                    return
                recent[key] = None
                if len(recent) > self.RECENT_MESSAGES:
                    del recent[next(iter(recent))]
        # channels-redis's fan-out, handing the decoded event straight to each attached
        # channel's sink (one call per member on this node, not put_nowait and decode each).
        if isinstance(name, bytes):
            name = name.decode()
        channels = self.channel_layer.channels
        queue = channels.get(name)
        if queue is not None:
            queue.put_nowait(data)
            return
        for channel_name in self.channel_layer.groups.get(name, ()):
            queue = channels.get(channel_name)
            if queue is None:
                continue
            sink = getattr(queue, "sink", None)
            if sink is not None and isinstance(event, dict):
                sink(event)
            else:
                queue.put_nowait(data)

    async def _do_receiving(self):
        # channels-redis 4.3's loop, plus the Sentinel-aware reconnect and _close_if_silent.
        while True:
            try:
                if self._pubsub and self._pubsub.subscribed:
                    connection = self._pubsub.connection
                    if connection is not None and not connection.is_connected:
                        # Reconnect as the pool does: with Sentinel, at the current master. Left to
                        # get_message, redis-py's health-check PING would reconnect first, at the
                        # connection's old address (a dead master after a failover), for ever.
                        await connection.connect()
                    read = await self._read(connection)
                    if read:
                        await self._receive_buffered(connection)
                    elif read is False:
                        await self._close_if_silent()
                    else:
                        message = await self._pubsub.get_message(ignore_subscribe_messages=True, timeout=0.1)
                        if message is None:
                            await self._close_if_silent()
                        else:
                            self._receive_message(message)
                        # replies read with it (after a PONG or a confirmation it kept to itself too)
                        await self._receive_buffered(connection)
                else:
                    await asyncio.sleep(0.1)
            except (TimeoutError, asyncio.CancelledError, GeneratorExit):
                raise
            except BaseException:
                logger.exception("Unexpected exception in receive task")
                await asyncio.sleep(1)

    async def _read(self, connection) -> bool | None:
        """Wait up to 0.1 s for the subscriber connection's next bytes and hand them to its
        hiredis reader, without ``PubSub.get_message``: True when bytes came, for
        ``_receive_buffered`` to hand on (it stops at a reply not yet complete: hiredis's
        ``has_data`` means unparsed bytes, not a whole reply, so it is never a reason not to
        wait); False when none came in time, or when the read failed or the connection was
        closed by Redis (then it is closed here, and the caller's next turn reconnects). None,
        having read nothing, when the connection is not in a state to read this way (no
        hiredis reader, not connected, a health-check PING due): the caller's ``get_message``
        does what redis-py does (sends the PING, reconnects and subscribes again, raises).

        Why (issue 16, bench/RESULTS.md session 21 pass): each ``get_message`` wraps its read in
        redis-py's health check, retry and timeout, and builds a dict per message: 86-120 µs of
        CPU per message read alone against 52 µs for the read itself, and every node reads
        every message of the rooms it has members in. Any bytes read count as a reply for the
        health check (``next_health_check``, as redis-py's ``read_response`` counts each)."""
        parser = getattr(connection, "_parser", None)
        reader = getattr(parser, "_reader", None)
        stream = getattr(parser, "_stream", None)
        if stream is None or not hasattr(reader, "has_data") or not connection.is_connected:
            return None
        loop = asyncio.get_running_loop()
        interval = connection.health_check_interval
        if interval and loop.time() > connection.next_health_check:
            return None  # get_message sends the PING first
        waited = asyncio.timeout(0.1)
        try:
            async with waited:
                data = await stream.read(65536)
        except OSError:  # TimeoutError included: a socket's ETIMEDOUT is one too
            if waited.expired():
                # Bytes left unparsed: a reply may still be complete in them (after a round
                # that stopped at an error): hand them on.
                return bool(reader.has_data())
            data = None
        if parser._stream is not stream:  # reconnected meanwhile (a subscription round did)
            return False
        if not data:  # closed by Redis, or reset
            # The next turn reconnects first, the way the pool connects (with Sentinel, at the
            # current master), then subscribes again.
            await connection.disconnect(nowait=True)
            return False
        reader.feed(data)
        if interval:
            connection.next_health_check = loop.time() + interval
        return True

    async def _receive_buffered(self, connection) -> None:
        """Hand on the Pub/Sub replies already read from the socket and parsed by hiredis after
        the one ``get_message`` returned, without a ``get_message`` each: redis-py's per-call
        health check, retry wrapper and read timeout cost more than the message itself (about a
        third of a node's Pub/Sub read under load, yappi, bench/RESULTS.md session 17 pass).
        A published message (``[b"message", channel, data]``; channels-redis subscribes with no
        handler) is handed on as it is; every other reply goes through
        ``PubSub.handle_message`` (subscription counts, PONGs).
        Stops at the first reply not yet complete; a reply that is not a Pub/Sub list (an error)
        is raised, as ``get_message`` would raise it. Without hiredis (redis-py's own parser
        keeps no such reader) nothing is done here."""
        reader = getattr(getattr(connection, "_parser", None), "_reader", None)
        if reader is None or not hasattr(reader, "gets"):
            return
        from redis._parsers.hiredis import NOT_ENOUGH_DATA  # what redis-py's reader answers for "not yet"

        handle = self._pubsub.handle_message
        while True:
            response = reader.gets()
            if response is NOT_ENOUGH_DATA:
                return
            if isinstance(response, BaseException):
                raise response
            if isinstance(response, list) and response and isinstance(response[0], BaseException):
                raise response[0]
            if not isinstance(response, (list, bytes)):
                continue  # nothing a RESP2 subscriber is sent
            if isinstance(response, list) and len(response) == 3 and response[0] == b"message":
                self._deliver(response[1], response[2])
                continue
            message = await handle(response, ignore_subscribe_messages=True)
            if message is not None:
                self._receive_message(message)

    async def _close_if_silent(self) -> bool:
        """Close the subscriber connection if it has been silent too long (see the class);
        returns whether it did. The next read reconnects and subscribes again."""
        connection = self._pubsub.connection
        interval = getattr(connection, "health_check_interval", 0)
        if not interval or connection.next_health_check < 0 or not connection.is_connected:
            return False
        # redis-py sets next_health_check to (last reply + interval) on every reply it reads; a
        # connection closed here gets a full allowance again before its first reply.
        now = asyncio.get_running_loop().time()
        silent_for = now - max(connection.next_health_check - interval, self._closed_at)
        if silent_for <= 2 * interval:
            return False
        logger.warning("Redis subscriber connection silent for %.1f s: reconnecting", silent_for)
        self._closed_at = now
        await connection.disconnect(nowait=True)
        return True


class RedisPubSubLoopLayer(pubsub.RedisPubSubLoopLayer):
    """channels-redis's per-event-loop Pub/Sub layer with ``_ChannelQueue`` queues and
    ``RedisShardConnection`` shards."""

    _last = (None, None)  # (bytes, event): the last message decoded on this loop

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._shards = [RedisShardConnection(shard.host, self) for shard in self._shards]

    async def receive(self, channel):
        """channels-redis's ``receive``, whose clean-up when it is cancelled (the consumer has
        ended) queues the channel's unsubscription without waiting for it
        (``RedisShardConnection.unsubscribe_soon``). channels-redis waits, and a second
        cancellation during that wait (the application ended as its socket closed) was logged
        as an error with a traceback for each such socket, though the unsubscription is sent
        all the same: seen at the end of ``python -m bench join-storm --clients 10000``, each a
        Sentry event where Sentry is configured. Errors: as channels-redis's (none of its own)."""
        if channel not in self.channels:
            await self._subscribe_to_channel(channel)
        queue = self.channels[channel]
        try:
            message = await queue.get()
        except (asyncio.CancelledError, TimeoutError, GeneratorExit):
            if self.channels.get(channel) is queue:
                del self.channels[channel]
                self._get_shard(channel).unsubscribe_soon(channel)
            raise
        return self.channel_layer.deserialize(message)

    async def _subscribe_to_channel(self, channel):
        self.channels[channel] = _ChannelQueue(self)
        try:
            await self._get_shard(channel).subscribe(channel)
        except BaseException:  # Redis unreachable: the channel does not exist (no queue left behind)
            self.channels.pop(channel, None)
            # Cancelled (a handshake's time limit): the SUBSCRIBE is sent all the same; its
            # UNSUBSCRIBE goes after it (nothing to do when it failed: nothing was subscribed).
            self._get_shard(channel).unsubscribe_soon(channel)
            raise

    def decode(self, data: bytes) -> dict:
        """The event in ``data``, decoded once: a group message's bytes are the same object for
        every member channel on this node (channels-redis's ``_receive_message`` loop)."""
        last_data, event = self._last
        if data is not last_data:
            event = self.channel_layer.deserialize(data)
            self._last = (data, event)
        return event

    async def group_send_many(self, events: list[tuple[str, dict]]) -> None:
        """``group_send`` of each ``(group, event)``, in order; the PUBLISHes of one shard go in one
        pipeline (``RedisShardConnection.publish_many``). For a burst of small events, such as a
        tick's ``read.updated`` frames (``rooms.reads.ReadBatcher``)."""
        by_shard: dict = {}
        for group, event in events:
            channel = self._get_group_channel_name(group)
            by_shard.setdefault(self._get_shard(channel), []).append(
                (channel, self.channel_layer.serialize(event))
            )
        for shard, messages in by_shard.items():
            await shard.publish_many(messages)

    async def new_local_channel(self, prefix: str, sink) -> str:
        """A channel of this node only, with ``sink`` attached from the start: it can be added to
        groups (their events reach ``sink``) but has no Redis subscription of its own, so nothing
        can be sent to it by name (``rooms.activity``'s hub: one per followed room). Returns its
        name; ``delete_local_channel`` removes it."""
        channel = f"{self.prefix}{prefix}{uuid.uuid4().hex}"
        queue = _ChannelQueue(self)
        queue.sink = sink
        self.channels[channel] = queue
        return channel

    async def delete_local_channel(self, channel: str) -> None:
        """Forget a ``new_local_channel`` (discard it from its groups first)."""
        self.channels.pop(channel, None)

    def attach(self, channel: str, sink) -> bool:
        """Deliver ``channel``'s events to ``sink(event)`` from now on (see the module's
        docstring). Returns False, changing nothing, when ``channel`` is not this loop's."""
        queue = self.channels.get(channel)
        if not isinstance(queue, _ChannelQueue):
            return False
        queue.attach(sink)
        return True


class RedisPubSubChannelLayer(pubsub.RedisPubSubChannelLayer):
    """channels-redis's ``RedisPubSubChannelLayer``, whose per-loop layers are
    ``RedisPubSubLoopLayer`` above: same configuration, plus ``attach``."""

    def _get_layer(self):
        loop = asyncio.get_running_loop()
        try:
            return self._layers[loop]
        except KeyError:
            layer = self._layers[loop] = RedisPubSubLoopLayer(*self._args, **self._kwargs, channel_layer=self)
            pubsub._wrap_close(self, loop)
            return layer

    def receiver(self, channel: str):
        """``receive(channel)`` as a callable bound to the running loop's layer: the same
        coroutine (its clean-up on cancellation included) without channels-redis's proxy
        coroutine (``_async_proxy``), which a consumer waiting on its channel keeps suspended for
        the socket's life."""
        return functools.partial(self._get_layer().receive, channel)

    def attach(self, channel: str, sink) -> bool:
        """``RedisPubSubLoopLayer.attach`` on the running loop's layer."""
        return self._get_layer().attach(channel, sink)

    async def new_local_channel(self, prefix: str, sink) -> str:
        """``RedisPubSubLoopLayer.new_local_channel`` on the running loop's layer."""
        return await self._get_layer().new_local_channel(prefix, sink)

    async def delete_local_channel(self, channel: str) -> None:
        """``RedisPubSubLoopLayer.delete_local_channel`` on the running loop's layer."""
        await self._get_layer().delete_local_channel(channel)

    async def group_send_many(self, events: list[tuple[str, dict]]) -> None:
        """``RedisPubSubLoopLayer.group_send_many`` on the running loop's layer."""
        await self._get_layer().group_send_many(events)
