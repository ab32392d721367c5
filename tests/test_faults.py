"""Nothing lost: faults on real processes (nodes started with the product's own command,
``python -m chatsite.serve``), each ending with every client's history equal to the database's.

Each test prints a line ``FAULT <name>: sent … stored … delivered … lost … duplicated …`` (shown
with ``pytest -s``), the figures the issue's closing note asks for.
"""

import asyncio
import base64
import os
import signal
import socket
import time
import uuid

import pytest
import redis
from channels.db import database_sync_to_async

from rooms.models import Message, Room
from tests import factories
from tests.nodes import Client, Http, ResumingClient, cluster, database_url_for_tests, start_node, wait_healthy

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.multinode]


def prefix() -> str:
    return f"chatsite-test-{os.getpid()}-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def people(db):
    """``people(n)``: the room r0 and n members' API tokens."""
    def make(n):
        owner = factories.make_user("owner")
        room = factories.make_room(created_by=owner, slug="r0")
        return room, [factories.token_for(factories.make_user(f"p{i}")) for i in range(n)]
    return make


async def stored_bodies(room) -> list[str]:
    return await database_sync_to_async(
        lambda: list(Message.objects.filter(room=room).order_by("seq").values_list("body", flat=True))
    )()


def report(name, sent, stored, clients, recovery=None):
    lines = [f"FAULT {name}: sent {sent}, stored {len(stored)}"]
    for i, c in enumerate(clients):
        got = c.bodies()
        lost = len(set(stored) - set(got))
        lines.append(f"  client {i}: delivered {len(got)}, lost {lost}, duplicated {c.duplicates}, "
                     f"connects {c.connects}")
    if recovery is not None:
        lines.append(f"  recovery {recovery:.2f} s")
    print("\n".join(lines))


async def rest_sender(node, token, count, rate, tag):
    """Post ``count`` messages at ``rate`` per second over REST on ``node``; returns how many
    were accepted (201)."""
    http = Http(node, token)
    accepted = 0
    for i in range(count):
        status, _, _ = await asyncio.to_thread(
            http.request, "POST", "/api/rooms/r0/messages/",
            json_body={"body": f"{tag} {i}", "client_msg_id": f"{tag}-{i}"}, timeout=5)
        accepted += status == 201
        await asyncio.sleep(1 / rate)
    return accepted


@pytest.fixture
def node_env(db):
    """Environment for nodes started by a test itself."""
    return {
        "DATABASE_URL": database_url_for_tests(), "REDIS_URL": os.environ["REDIS_URL"],
        "CHANNEL_LAYER_PREFIX": prefix(), "DEBUG": "0", "SECRET_KEY": "faults-test-secret",
        "ALLOWED_HOSTS": "127.0.0.1,localhost", "DATABASE_POOL_MAX_SIZE": "4",
        "THROTTLE_SEND_RATE": "100000/min",
    }


async def test_sigterm_closes_sockets_1012_and_clients_resume_on_another_node(people, node_env, tmp_path):
    room, tokens = await database_sync_to_async(people)(2)
    a = start_node("node-a", env=node_env, log_dir=tmp_path)
    b = start_node("node-b", env=node_env, log_dir=tmp_path)
    try:
        await asyncio.gather(asyncio.to_thread(wait_healthy, a), asyncio.to_thread(wait_healthy, b))
        reader = ResumingClient([a, b], "r0", tokens[0]).start()
        await asyncio.wait_for(reader.connected.wait(), 10)
        sending = asyncio.ensure_future(rest_sender(b, tokens[1], 60, 20, "s"))
        await asyncio.sleep(1)
        stopped_at = time.monotonic()
        a.process.send_signal(signal.SIGTERM)
        await asyncio.to_thread(a.process.wait, 15)
        exit_seconds = time.monotonic() - stopped_at
        sent = await sending
        await asyncio.sleep(1)
        await reader.stop()
        stored = await stored_bodies(room)
        report("sigterm", sent, stored, [reader], recovery=exit_seconds)
        assert reader.close_codes[0] == 1012
        assert sent == 60 and reader.bodies() == stored and reader.duplicates == 0
        assert a.process.returncode == 0 and exit_seconds < 5
        assert "closing 1 socket(s) with 1012" in a.log()
    finally:
        a.stop()
        b.stop()


async def test_reconnecting_20_times_at_50_messages_per_second_loses_nothing(people, node_env, tmp_path):
    room, tokens = await database_sync_to_async(people)(2)
    with cluster(3, redis_url=node_env["REDIS_URL"], database_url=node_env["DATABASE_URL"],
                 prefix=node_env["CHANNEL_LAYER_PREFIX"]) as nodes:
        reader = ResumingClient(nodes, "r0", tokens[0]).start()
        await asyncio.wait_for(reader.connected.wait(), 10)
        sender = await Client(nodes[0], "r0", tokens[1]).connect()

        async def send_at_50_per_second():
            for i in range(250):
                await sender.send(f"m {i}", f"m-{i}")
                await asyncio.sleep(0.02)

        sending = asyncio.ensure_future(send_at_50_per_second())
        for _ in range(20):
            await asyncio.sleep(0.2)
            await reader.drop()
            await asyncio.wait_for(reader.connected.wait(), 10)
        await sending
        assert await sender.wait_for(lambda c: len(c.acks) == 250, timeout=20)
        stored = await stored_bodies(room)
        deadline = time.monotonic() + 10
        while reader.bodies() != stored and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        await reader.stop()
        await sender.close()
        report("reconnect x20", 250, stored, [reader])
        assert reader.connects >= 21
        assert len(stored) == 250 and reader.bodies() == stored
        assert reader.duplicates == 0 and reader.out_of_order == 0


async def test_oversize_frame_is_closed_1009_and_others_are_unaffected(people, node_env, tmp_path):
    room, tokens = await database_sync_to_async(people)(2)
    node = start_node("node-1", env=node_env, log_dir=tmp_path)
    try:
        await asyncio.to_thread(wait_healthy, node)
        big = await Client(node, "r0", tokens[0]).connect()
        other = await Client(node, "r0", tokens[1]).connect()
        await big._socket.send('{"type": "message.send", "body": "' + "x" * 70_000 + '", "client_msg_id": "big"}')
        assert await big.wait_for(lambda c: c.close_code is not None, timeout=5)
        assert big.close_code == 1009
        await other.send("still fine", "ok-1")
        assert await other.wait_for(lambda c: "ok-1" in c.acks and c.messages)
        await other.close()
        assert await stored_bodies(room) == ["still fine"]
    finally:
        node.stop()


def _raw_websocket(node, token: str) -> socket.socket:
    """A WebSocket handshake by hand, after which the peer never reads or answers a ping (a
    client whose network was cut without a FIN)."""
    sock = socket.create_connection(("127.0.0.1", node.port), timeout=5)
    key = base64.b64encode(os.urandom(16)).decode()
    sock.sendall(
        f"GET /ws/rooms/r0/ HTTP/1.1\r\nHost: 127.0.0.1:{node.port}\r\nUpgrade: websocket\r\n"
        f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
        f"Authorization: Token {token}\r\n\r\n".encode()
    )
    response = sock.recv(4096)
    assert response.startswith(b"HTTP/1.1 101"), response
    return sock


async def test_BR13_idle_socket_survives_and_dead_peer_is_dropped_within_ping_interval_plus_timeout(
    people, node_env, tmp_path
):
    room, tokens = await database_sync_to_async(people)(2)
    env = {**node_env, "WS_PING_INTERVAL": "1", "WS_PING_TIMEOUT": "2"}
    node = start_node("node-1", env=env, log_dir=tmp_path)
    group_channel = f"{env['CHANNEL_LAYER_PREFIX']}__group__room.{room.pk}"
    r = redis.Redis.from_url(os.environ["REDIS_URL"])
    try:
        await asyncio.to_thread(wait_healthy, node)
        dead = await asyncio.to_thread(_raw_websocket, node, tokens[0])
        await asyncio.sleep(0.5)
        assert r.pubsub_numsub(group_channel)[0][1] == 1  # the node subscribed for its member
        started = time.monotonic()
        while r.pubsub_numsub(group_channel)[0][1] and time.monotonic() - started < 15:
            await asyncio.sleep(0.2)
        dropped_after = time.monotonic() - started
        assert r.pubsub_numsub(group_channel)[0][1] == 0, "the dead peer is still in its room's group"
        assert dropped_after < 1 + 2 + 3  # interval + timeout, plus the close handshake's wait
        dead.close()

        idle = await Client(node, "r0", tokens[1]).connect()  # websockets answers pings itself
        await asyncio.sleep(5)
        assert idle.close_code is None
        await asyncio.to_thread(Http(node, tokens[0]).request, "POST", "/api/rooms/r0/messages/",
                                json_body={"body": "after idling", "client_msg_id": "idle-1"})
        assert await idle.wait_for(lambda c: c.messages)
        await idle.close()
        print(f"FAULT dead peer: dropped after {dropped_after:.2f} s (ping interval 1 s, timeout 2 s)")
    finally:
        node.stop()


async def test_BR12_http_timeout_applies_to_http_only(people, node_env, tmp_path):
    room, tokens = await database_sync_to_async(people)(2)
    node = start_node("node-1", env={**node_env, "HTTP_TIMEOUT": "1"}, log_dir=tmp_path)
    try:
        await asyncio.to_thread(wait_healthy, node)
        listener = await Client(node, "r0", tokens[0]).connect()
        talker = await Client(node, "r0", tokens[1]).connect()
        for i in range(6):  # 6 s open, past the 1 s HTTP timeout, a message every second
            await talker.send(f"tick {i}", f"t-{i}")
            await asyncio.sleep(1)
        assert await listener.wait_for(lambda c: len(c.messages) == 6)
        assert listener.close_code is None and talker.close_code is None
        await listener.close()
        await talker.close()
    finally:
        node.stop()


async def test_BR03_forced_close_by_socket_lifetime_loses_and_repeats_nothing(people, node_env, tmp_path):
    """daphne closes every socket after WS_MAX_LIFETIME (1 s here, checked every 2 s) with code
    1000; the client reconnects with
    backoff, resumes after its last seq and ends with the stored history exactly."""
    room, tokens = await database_sync_to_async(people)(2)
    with cluster(2, redis_url=node_env["REDIS_URL"], database_url=node_env["DATABASE_URL"],
                 prefix=node_env["CHANNEL_LAYER_PREFIX"], extra_env={"WS_MAX_LIFETIME": "1"}) as nodes:
        reader = ResumingClient(nodes, "r0", tokens[0]).start()
        await asyncio.wait_for(reader.connected.wait(), 10)
        sent = await rest_sender(nodes[1], tokens[1], 60, 10, "lifetime")
        stored = await stored_bodies(room)
        deadline = time.monotonic() + 10
        while reader.bodies() != stored and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        await reader.stop()
        report("socket lifetime", sent, stored, [reader])
        print("  close codes", reader.close_codes)
        assert reader.connects >= 3 and set(reader.close_codes[:-1]) <= {1000}
        assert reader.bodies() == stored and len(stored) == 60 and reader.duplicates == 0
