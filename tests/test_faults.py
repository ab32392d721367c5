"""Nothing lost: faults on real processes (nodes started with the product's own command,
``python -m chatsite.serve``), each ending with every client's history equal to the database's.

Each test prints a line ``FAULT <name>: sent … stored … delivered … lost … duplicated …`` (shown
with ``pytest -s``), the figures the issue's closing note asks for.
"""

import asyncio
import base64
import json
import os
import signal
import socket
import subprocess
import sys
import time
import uuid

import pytest
import redis
from channels.db import database_sync_to_async

from rooms.models import Message
from tests import factories
from tests.nodes import (
    BASE_DIR,
    TEST_SECRET_KEY,
    Client,
    Http,
    ResumingClient,
    TcpProxy,
    cluster,
    database_url_for_tests,
    free_port,
    start_node,
    wait_healthy,
)

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


async def refused_close_code(node, headers: dict, path: str = "/ws/rooms/r0/") -> int:
    """Open a socket on ``node`` with ``headers`` that the node accepts and then closes before
    any frame: its close code."""
    import websockets

    async with websockets.connect(f"{node.ws}{path}", open_timeout=10, additional_headers=headers) as socket:
        with pytest.raises(websockets.ConnectionClosed):
            await asyncio.wait_for(socket.recv(), 10)
    return socket.close_code


async def stored_bodies(room) -> list[str]:
    return await database_sync_to_async(
        lambda: list(Message.objects.filter(room=room).order_by("seq").values_list("body", flat=True))
    )()


async def settle_histories(room, readers, timeout: float = 10.0) -> list[str]:
    """Wait (bounded) until every reader holds the stored history, stop them, return it."""
    stored = await stored_bodies(room)
    deadline = time.monotonic() + timeout
    while any(r.bodies() != stored for r in readers) and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
    for reader in readers:
        await reader.stop()
    return stored


def report(name, sent, stored, clients, recovery=None):
    lines = [f"FAULT {name}: sent {sent}, stored {len(stored)}"]
    for i, c in enumerate(clients):
        got = c.bodies()
        lost = len(set(stored) - set(got))
        lines.append(
            f"  client {i}: delivered {len(got)}, lost {lost}, duplicated {c.duplicates}, "
            f"connects {c.connects}"
        )
    if recovery is not None:
        lines.append(f"  recovery {recovery:.2f} s")
    print("\n".join(lines))


async def rest_sender(node, token, count, rate, tag):
    """Post ``count`` messages at ``rate`` per second over REST on ``node``; returns how many
    were accepted (201)."""
    http = Http(node, token)
    accepted = 0
    for i in range(count):
        try:
            status, _, body = await asyncio.to_thread(
                http.request,
                "POST",
                "/api/rooms/r0/messages/",
                json_body={"body": f"{tag} {i}", "client_msg_id": f"{tag}-{i}"},
                timeout=5,
            )
        except OSError as exc:
            status, body = None, repr(exc)
        if status != 201:
            print(f"  send {tag}-{i}: {status} {body[:200]!r}")
        accepted += status == 201
        await asyncio.sleep(1 / rate)
    return accepted


@pytest.fixture
def node_env(db):
    """Environment for nodes started by a test itself."""
    return {
        "DATABASE_URL": database_url_for_tests(),
        "REDIS_URL": os.environ["REDIS_URL"],
        "CHANNEL_LAYER_PREFIX": prefix(),
        "DEBUG": "0",
        "SECRET_KEY": TEST_SECRET_KEY,
        "ALLOWED_HOSTS": "127.0.0.1,localhost",
        "DATABASE_POOL_MAX_SIZE": "4",
        "THROTTLE_SEND_RATE": "100000/min",
        "WS_SEND_RATE": "0",
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
        await asyncio.sleep(0.3)  # within SHUTDOWN_GRACE: the node no longer accepts
        with pytest.raises(OSError):
            socket.create_connection(("127.0.0.1", a.port), timeout=2).close()
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
    with cluster(
        3,
        redis_url=node_env["REDIS_URL"],
        database_url=node_env["DATABASE_URL"],
        prefix=node_env["CHANNEL_LAYER_PREFIX"],
    ) as nodes:
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
        stored = await settle_histories(room, [reader])
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
        await big._socket.send(
            '{"type": "message.send", "body": "' + "x" * 70_000 + '", "client_msg_id": "big"}'
        )
        assert await big.wait_for(lambda c: c.close_code is not None, timeout=5)
        assert big.close_code == 1009
        await other.send("still fine", "ok-1")
        assert await other.wait_for(lambda c: "ok-1" in c.acks and c.messages)
        await other.close()
        assert await stored_bodies(room) == ["still fine"]
    finally:
        node.stop()


async def test_the_frame_limit_is_the_clients_only_server_frames_may_be_larger(people, node_env, tmp_path):
    """WS_MAX_MESSAGE_BYTES (here 2,000) refuses client frames over it with 1009, but a server
    frame over it (a history page of long messages; in a big room, the presence list) is sent:
    before, autobahn refused it in the consumer and daphne closed the socket with 1011."""
    room, tokens = await database_sync_to_async(people)(2)
    node = start_node("node-1", env={**node_env, "WS_MAX_MESSAGE_BYTES": "2000"}, log_dir=tmp_path)
    try:
        await asyncio.to_thread(wait_healthy, node)
        writer = await Client(node, "r0", tokens[0]).connect()
        for i in range(3):
            await writer.send(f"{i}" + "x" * 1_500, f"long-{i}")
        assert await writer.wait_for(lambda c: len(c.acks) == 3)
        reader = await Client(node, "r0", tokens[1]).connect()
        await reader._socket.send(json.dumps({"type": "fetch", "after_seq": 0}))
        assert await reader.wait_for(lambda c: any(f["type"] == "history" for f in c.frames))
        page = next(f for f in reader.frames if f["type"] == "history")
        assert [m["seq"] for m in page["messages"]] == [1, 2, 3]
        assert len(json.dumps(page)) > 4_500 and reader.close_code is None
        await reader._socket.send(
            json.dumps({"type": "message.send", "body": "y" * 2_500, "client_msg_id": "big"})
        )
        assert await reader.wait_for(lambda c: c.close_code is not None, timeout=5)
        assert reader.close_code == 1009
        await writer.close()
    finally:
        node.stop()


async def unread_client(node, token: str):
    """A websockets client that reads only when asked, over a socket with a 4 KiB receive
    buffer: what it does not read stays queued at the node (a member that stopped reading)."""
    import websockets

    raw = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    raw.connect(("127.0.0.1", node.port))
    return await websockets.connect(
        f"{node.ws}/ws/rooms/r0/",
        sock=raw,
        max_queue=1,
        ping_interval=None,
        additional_headers={"Authorization": f"Token {token}"},
    )


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
        await asyncio.to_thread(
            Http(node, tokens[0]).request,
            "POST",
            "/api/rooms/r0/messages/",
            json_body={"body": "after idling", "client_msg_id": "idle-1"},
        )
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


def test_a_throttled_request_answers_429_too_many_requests_not_unknown_status(people, node_env, tmp_path):
    import http.client

    room, tokens = people(1)
    node = start_node("node-1", env={**node_env, "THROTTLE_SEND_RATE": "1/min"}, log_dir=tmp_path)
    try:
        wait_healthy(node)
        lines = []
        for i in range(2):  # the second send is over the 1/min limit
            connection = http.client.HTTPConnection("127.0.0.1", node.port, timeout=10)
            try:
                connection.request(
                    "POST",
                    "/api/rooms/r0/messages/",
                    body=json.dumps({"body": f"m{i}", "client_msg_id": f"m-{i}"}),
                    headers={"Authorization": f"Token {tokens[0]}", "Content-Type": "application/json"},
                )
                response = connection.getresponse()
                response.read()
                lines.append((response.status, response.reason))
            finally:
                connection.close()
        assert lines == [(201, "Created"), (429, "Too Many Requests")]
    finally:
        node.stop()


async def test_BR03_forced_close_by_socket_lifetime_loses_and_repeats_nothing(people, node_env, tmp_path):
    """daphne closes every socket after WS_MAX_LIFETIME (1 s here, checked every 2 s) with code
    1000; the client reconnects with
    backoff, resumes after its last seq and ends with the stored history exactly."""
    room, tokens = await database_sync_to_async(people)(2)
    with cluster(
        2,
        redis_url=node_env["REDIS_URL"],
        database_url=node_env["DATABASE_URL"],
        prefix=node_env["CHANNEL_LAYER_PREFIX"],
        extra_env={"WS_MAX_LIFETIME": "1"},
    ) as nodes:
        reader = ResumingClient(nodes, "r0", tokens[0]).start()
        await asyncio.wait_for(reader.connected.wait(), 10)
        sent = await rest_sender(nodes[1], tokens[1], 60, 10, "lifetime")
        stored = await settle_histories(room, [reader])
        report("socket lifetime", sent, stored, [reader])
        print("  close codes", reader.close_codes)
        assert reader.connects >= 3 and set(reader.close_codes[:-1]) <= {1000}
        assert reader.bodies() == stored and len(stored) == 60 and reader.duplicates == 0


async def test_postgresql_unreachable_answers_unavailable_fast_then_recovers(people, node_env, tmp_path):
    """PostgreSQL cut off from one node (a TCP proxy in between is cut): a send gets an
    `unavailable` error frame within 2 s and nothing is broadcast; a fetch gets an `unavailable`
    error frame on a socket that stays open; the REST API answers 503 JSON with Retry-After;
    /healthz is 503; a socket opened meanwhile with a token the node has not seen (its lookup
    needs the database: ``rooms.auth.SocketAuth``) is closed with 4503, not refused with a 500;
    once the database is back the next send works without restarting the node."""
    from django.db import connection

    room, tokens = await database_sync_to_async(people)(3)
    s = connection.settings_dict
    proxy = TcpProxy((s["HOST"] or "127.0.0.1", int(s["PORT"] or 5432)))
    env = {
        **node_env,
        "DATABASE_URL": f"postgres://{s['USER']}@127.0.0.1:{proxy.port}/{s['NAME']}",
        "DATABASE_POOL_TIMEOUT": "1.5",
        "DATABASE_CONNECT_TIMEOUT": "1",
    }
    node = start_node("node-1", env=env, log_dir=tmp_path)
    other = start_node("node-2", env=node_env, log_dir=tmp_path)
    try:
        await asyncio.gather(asyncio.to_thread(wait_healthy, node), asyncio.to_thread(wait_healthy, other))
        sender = await Client(node, "r0", tokens[0]).connect()
        watcher = await Client(other, "r0", tokens[1]).connect()
        await sender.send("before", "b-1")
        assert await watcher.wait_for(lambda c: len(c.messages) == 1)

        proxy.cut()
        started = time.monotonic()
        await sender.send("during", "d-1")
        assert await sender.wait_for(lambda c: any(f["type"] == "error" for f in c.frames), timeout=5)
        answered_after = time.monotonic() - started
        error = next(f for f in sender.frames if f["type"] == "error")
        assert error["code"] == "unavailable" and error["client_msg_id"] == "d-1"
        assert answered_after < 2.0
        status, body = await asyncio.to_thread(node.health, 5)
        assert status == 503 and body["failing"] == ["database"]
        seen = len(sender.frames)  # a fetch: an error frame, and the socket stays open
        await sender._socket.send(json.dumps({"type": "fetch", "after_seq": 0}))
        assert await sender.wait_for(lambda c: any(f["type"] == "error" for f in c.frames[seen:]), timeout=5)
        assert next(f for f in sender.frames[seen:] if f["type"] == "error")["frame"] == "fetch"
        status, headers, raw = await asyncio.to_thread(  # REST: 503 JSON with Retry-After
            Http(node, tokens[0]).request, "GET", "/api/rooms/r0/messages/"
        )
        assert status == 503 and json.loads(raw)["code"] == "unavailable" and int(headers["Retry-After"]) > 0
        assert await refused_close_code(node, {"Authorization": f"Token {tokens[2]}"}) == 4503
        assert "the database cannot be reached for authentication" in node.log()
        await asyncio.sleep(0.5)
        assert len(watcher.messages) == 1 and sender.close_code is None  # nothing broadcast

        proxy.restore()
        recovered, started = None, time.monotonic()
        while time.monotonic() - started < 15:
            await sender.send("during", "d-1")  # the outbox resends with the same id
            if await sender.wait_for(lambda c: "d-1" in c.acks, timeout=1.5):
                recovered = time.monotonic() - started
                break
        assert recovered is not None, sender.frames[-3:]
        assert await watcher.wait_for(lambda c: len(c.messages) == 2)
        assert await stored_bodies(room) == ["before", "during"]
        # /healthz uses Django's pool, which may still be in psycopg_pool's reconnect back-off
        # for a moment after the sends' own pool recovered: it must turn 200 within seconds.
        healthy = None
        while time.monotonic() - started < 25:
            if (await asyncio.to_thread(node.health, 5))[0] == 200:
                healthy = time.monotonic() - started
                break
            await asyncio.sleep(0.25)
        assert healthy is not None
        print(
            f"FAULT postgresql: unavailable answered in {answered_after:.2f} s; "
            f"sends work {recovered:.2f} s and /healthz is 200 {healthy:.2f} s after the database "
            f"returned; stored 2, lost 0"
        )
        await sender.close()
        await watcher.close()
    finally:
        node.stop()
        other.stop()
        proxy.close()


async def test_BR04b_node_killed_mid_stream_its_clients_resume_elsewhere_and_others_see_no_gap(
    people, node_env
):
    """One of 3 nodes SIGKILLed while its members are in the room's group, then 100 more
    messages: its client reconnects to another node and ends with the full history; clients on
    the other nodes see no interruption (the Pub/Sub layer keeps no membership in Redis that a
    dead node could leave behind)."""
    room, tokens = await database_sync_to_async(people)(4)
    with cluster(
        3,
        redis_url=node_env["REDIS_URL"],
        database_url=node_env["DATABASE_URL"],
        prefix=node_env["CHANNEL_LAYER_PREFIX"],
    ) as nodes:
        readers = [ResumingClient(nodes[i:] + nodes[:i], "r0", tokens[i]).start() for i in range(3)]
        for reader in readers:
            await asyncio.wait_for(reader.connected.wait(), 10)
        sending = asyncio.ensure_future(rest_sender(nodes[1], tokens[3], 130, 20, "k"))
        await asyncio.sleep(1.5)
        nodes[0].process.kill()  # SIGKILL: no goodbye
        killed_at = time.monotonic()
        while readers[0].connects < 2 and time.monotonic() - killed_at < 10:
            await asyncio.sleep(0.02)
        recovery = time.monotonic() - killed_at
        sent = await sending
        stored = await settle_histories(room, readers)
        report("node SIGKILL", sent, stored, readers, recovery=recovery)
        assert sent == 130 and len(stored) == 130
        for reader in readers:
            assert reader.bodies() == stored and reader.duplicates == 0
        assert readers[0].connects == 2
        assert readers[1].connects == 1 and readers[2].connects == 1  # never interrupted
        assert readers[1].gap_fetches == 0 and readers[2].gap_fetches == 0


class PrivateRedis:
    """Our own redis-server for one test: a free port, no persistence, stopped by its PID
    (the shared Redis is never touched)."""

    def __init__(self, folder):
        self.port, self.folder, self.proc = free_port(), folder, None
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.start()

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [
                "redis-server",
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.folder),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    def kill(self) -> None:
        self.proc.kill()
        self.proc.wait(5)


async def connect_when_possible(node, token: str, timeout: float) -> Client | None:
    """A client of ``node`` in r0 as soon as one gets its ``hello`` (None after ``timeout`` s)."""
    import websockets

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            return await Client(node, "r0", token).connect()
        except (TimeoutError, websockets.ConnectionClosed, AssertionError, OSError):
            await asyncio.sleep(0.3)
    return None


async def test_redis_restarted_empty_sends_keep_being_stored_and_live_delivery_resumes(
    people, node_env, tmp_path
):
    """Our own redis-server under 3 nodes is killed and started again, empty, on the same port,
    while a room gets 20 msg/s: every send is stored, live delivery comes back without any node
    restart, and every client ends with the stored history (gaps repaired by fetch)."""
    room, tokens = await database_sync_to_async(people)(4)
    private = PrivateRedis(tmp_path)
    redis_url = private.url
    client = redis.Redis.from_url(redis_url)
    try:
        for _ in range(50):
            try:
                client.ping()
                break
            except redis.ConnectionError:
                await asyncio.sleep(0.1)
        with cluster(
            3,
            redis_url=redis_url,
            database_url=node_env["DATABASE_URL"],
            prefix=node_env["CHANNEL_LAYER_PREFIX"],
        ) as nodes:
            readers = [ResumingClient(nodes[i:] + nodes[:i], "r0", tokens[i]).start() for i in range(3)]
            for reader in readers:
                await asyncio.wait_for(reader.connected.wait(), 10)
            sending = asyncio.ensure_future(rest_sender(nodes[0], tokens[3], 200, 20, "r"))
            await asyncio.sleep(2)
            private.kill()
            await asyncio.sleep(2)
            private.start()
            back_at = time.monotonic()
            # Live delivery is back when a message sent now reaches every reader live.
            before = [len(r.by_seq) for r in readers]
            resumed = None
            while time.monotonic() - back_at < 30:
                await asyncio.sleep(0.2)
                if all(len(r.by_seq) > b + 2 for r, b in zip(readers, before)):
                    resumed = time.monotonic() - back_at
                    break
            sent = await sending
            stored = await stored_bodies(room)
            deadline = time.monotonic() + 10
            while any(r.bodies() != stored for r in readers) and time.monotonic() < deadline:
                await asyncio.sleep(0.1)
            for reader in readers:
                await reader.stop()
            report("redis restart", sent, stored, readers, recovery=resumed)
            assert sent == 200 and len(stored) == 200
            assert resumed is not None and resumed < 15
            for reader in readers:
                assert reader.bodies() == stored and reader.duplicates == 0
    finally:
        private.kill()


async def test_a_socket_opened_while_redis_is_down_is_closed_4503_not_refused_with_a_500(
    people, node_env, tmp_path
):
    """The node's Redis (our own redis-server) is killed: a new socket is accepted and closed with
    4503 (reconnect with backoff), as README's close codes say, instead of a handshake refused
    with HTTP 500; once Redis is back a new socket joins without restarting the node."""

    room, tokens = await database_sync_to_async(people)(2)
    private = PrivateRedis(tmp_path)
    node = start_node("node-1", env={**node_env, "REDIS_URL": private.url}, log_dir=tmp_path)
    try:
        await asyncio.to_thread(wait_healthy, node)
        first = await Client(node, "r0", tokens[0]).connect()
        private.kill()
        codes = []
        for _ in range(3):  # each attempt is refused the same way; the node keeps serving
            codes.append(await refused_close_code(node, {"Authorization": f"Token {tokens[1]}"}))
        assert codes == [4503, 4503, 4503]
        private.start()
        second = await connect_when_possible(node, tokens[1], timeout=15)
        assert second is not None and second.hello["last_seq"] == 0
        await first.close()
        await second.close()
    finally:
        node.stop()
        private.kill()


async def test_a_socket_opened_while_redis_hangs_is_answered_within_the_handshake_timeout_and_then_works(
    people, node_env, tmp_path
):
    """The node's Redis (our own redis-server) is paused with SIGSTOP, so it answers nothing,
    while a message's publish waits on it. A new socket is answered within about 2 s, not
    dropped unanswered after daphne's 5 s timeout: its subscriptions no longer wait behind that
    publish (``chatsite.layers``: publishes have a lock of their own, and a SUBSCRIBE is only
    written), so it gets its ``hello`` (the socket cap and presence fall back as when Redis is
    slow); the sent message is stored; once Redis runs again, the new socket gets the held
    message and the next ones live, and more sockets join."""
    import websockets

    room, tokens = await database_sync_to_async(people)(3)
    private = PrivateRedis(tmp_path)
    node = start_node("node-1", env={**node_env, "REDIS_URL": private.url}, log_dir=tmp_path)
    try:
        await asyncio.to_thread(wait_healthy, node)
        first = await Client(node, "r0", tokens[0]).connect()
        private.proc.send_signal(signal.SIGSTOP)
        try:
            await first.send("while Redis hangs", "h-1")  # stored; its publish then waits on Redis
            assert await first.wait_for(lambda c: "h-1" in c.acks)
            started = time.monotonic()
            socket = await websockets.connect(
                f"{node.ws}/ws/rooms/r0/",
                open_timeout=10,
                additional_headers={"Authorization": f"Token {tokens[1]}"},
            )
            hello = json.loads(await asyncio.wait_for(socket.recv(), 10))
            assert time.monotonic() - started < 4.5
            assert hello["type"] == "hello" and hello["last_seq"] == 1
        finally:
            private.proc.send_signal(signal.SIGCONT)
        await first.send("after Redis is back", "h-2")
        seen = []
        async with asyncio.timeout(10):
            while 2 not in seen:
                frame = json.loads(await socket.recv())
                if frame["type"] == "message":
                    seen.append(frame["message"]["seq"])
        assert seen == [1, 2] or seen == [2], seen  # h-1's publish reached it too, or was before it
        await socket.close()
        third = await connect_when_possible(node, tokens[2], timeout=20)
        assert third is not None
        await first.close()
        await third.close()
    finally:
        node.stop()
        private.kill()


async def test_a_node_whose_redis_connections_went_silent_reconnects_and_delivers_live_again(
    people, node_env, tmp_path
):
    """node-1 reaches Redis through a TCP proxy, which then silently discards all traffic on the
    connections open at that moment (Redis moved or hung, and nothing reset the connections)
    while new connections get through. node-1 notices its silent subscriber connection and
    subscribes again on a new one: messages sent on node-2 reach node-1's member live again
    within seconds, and a message sent on node-1 reaches node-2 (its publish times out and is
    retried on a new connection), and /healthz answers 200 again. Before, node-1 never
    delivered anything live from other nodes again."""
    from urllib.parse import urlsplit

    room, tokens = await database_sync_to_async(people)(2)
    shared = urlsplit(node_env["REDIS_URL"])
    proxy = TcpProxy((shared.hostname, shared.port or 6379))
    node = start_node(
        "node-1",
        env={**node_env, "REDIS_URL": f"redis://127.0.0.1:{proxy.port}{shared.path}"},
        log_dir=tmp_path,
    )
    other = start_node("node-2", env=node_env, log_dir=tmp_path)
    try:
        await asyncio.gather(asyncio.to_thread(wait_healthy, node), asyncio.to_thread(wait_healthy, other))
        reader = await Client(node, "r0", tokens[0]).connect()
        sender = await Client(other, "r0", tokens[1]).connect()
        await sender.send("before", "b-1")
        assert await reader.wait_for(lambda c: len(c.messages) == 1)

        assert proxy.blackhole() > 0
        silenced, resumed, i = time.monotonic(), None, 0
        while resumed is None and time.monotonic() - silenced < 30:
            i += 1
            await sender.send(f"during {i}", f"d-{i}")
            if await reader.wait_for(
                lambda c: any(m["body"] == f"during {i}" for m in c.messages), timeout=0.5
            ):
                resumed = time.monotonic() - silenced
        assert resumed is not None, node.log()[-2000:]

        started = time.monotonic()
        await reader.send("from node-1", "n1-1")
        assert await reader.wait_for(lambda c: "n1-1" in c.acks)
        assert await sender.wait_for(
            lambda c: any(m["body"] == "from node-1" for m in c.messages), timeout=20
        )
        published_after = time.monotonic() - started
        print(
            f"FAULT redis silent: live delivery to node-1 back {resumed:.1f} s after its connections went "
            f"silent; node-1's next publish arrived after {published_after:.1f} s"
        )
        assert "silent for" in node.log()
        health, deadline = None, time.monotonic() + 15
        while health != 200 and time.monotonic() < deadline:  # its own connection recovers too
            health = (await asyncio.to_thread(node.health, 5))[0]
        assert health == 200
        await reader.close()
        await sender.close()
    finally:
        node.stop()
        other.stop()
        proxy.close()


async def test_frames_written_at_once_and_frames_buffered_behind_a_full_socket_keep_their_order(
    people, node_env, tmp_path
):
    """chatsite.serve writes a frame to the socket at once when nothing waits before it, and
    leaves the rest to Twisted's buffer. A member that reads nothing while 400 frames of 12 KB go
    out (4.8 MB: the kernel's socket buffer fills, frames are cut mid-way and buffered) then reads them all: every one
    arrives, whole, in seq order."""

    room, tokens = await database_sync_to_async(people)(2)
    node = start_node("node-1", env={**node_env, "WS_SLOW_CLIENT_BYTES": str(64 * 2**20)}, log_dir=tmp_path)
    try:
        await asyncio.to_thread(wait_healthy, node)
        slow = await unread_client(node, tokens[1])
        await slow.recv()  # hello
        talker = await Client(node, "r0", tokens[0]).connect()
        for i in range(400):
            await talker.send(f"{i} {'€' * 3990}", f"order-{i}")
        assert await talker.wait_for(lambda c: len(c.acks) == 400, timeout=60)
        seqs = []
        while len(seqs) < 400:
            frame = json.loads(await asyncio.wait_for(slow.recv(), 10))
            if frame["type"] == "message":
                assert frame["message"]["body"] == f"{len(seqs)} {'€' * 3990}"
                seqs.append(frame["message"]["seq"])
        assert seqs == list(range(1, 401))
        await slow.close()
        await talker.close()
    finally:
        node.stop()


async def test_BR04a_a_member_that_stops_reading_is_closed_4008_or_caught_up_and_resumes_with_nothing_missing(
    people, node_env, tmp_path
):
    """300 messages of 3,000 characters go to a room while one member reads nothing (its TCP
    receive window is tiny): the fast member gets all 300; the slow one is closed with 4008
    (too slow) once 64 KiB wait for it, then resumes and ends with the stored history; the
    node's memory stays bounded."""
    import psutil
    import websockets

    room, tokens = await database_sync_to_async(people)(3)
    node = start_node("node-1", env={**node_env, "WS_SLOW_CLIENT_BYTES": "65536"}, log_dir=tmp_path)
    try:
        await asyncio.to_thread(wait_healthy, node)
        fast = await Client(node, "r0", tokens[0]).connect()
        slow = await unread_client(node, tokens[1])
        await slow.recv()  # its hello
        rss_before = psutil.Process(node.process.pid).memory_info().rss
        talker = await Client(node, "r0", tokens[2]).connect()
        body = "x" * 3000
        for i in range(300):
            await talker.send(f"{i} {body}", f"big-{i}")
        assert await talker.wait_for(lambda c: len(c.acks) == 300, timeout=60)
        assert await fast.wait_for(lambda c: len(c.messages) == 300, timeout=30)
        await asyncio.sleep(2.5)  # the node checks every second
        rss_after = psutil.Process(node.process.pid).memory_info().rss

        # The slow member reads now: what it was sent, then (if closed) the close code.
        got = {}
        try:
            async for raw_frame in slow:
                frame = __import__("json").loads(raw_frame)
                if frame["type"] == "message":
                    got[frame["message"]["seq"]] = frame["message"]["body"]
                if len(got) == 300:
                    break
        except websockets.ConnectionClosed:
            pass
        closed_with = slow.close_code
        await slow.close()
        if len(got) < 300:  # closed for being slow: resume after the last seq it holds
            # 4008 when the close frame got through, 1006 when the member did not read even that
            # before the close handshake's timeout dropped the connection.
            assert closed_with in (4008, 1006), closed_with
            assert "closing a slow client" in node.log()
            last = max(s for s in range(len(got) + 1) if all(k in got for k in range(1, s + 1)))
            reader = ResumingClient([node], "r0", tokens[1])
            reader.by_seq = {k: {"seq": k, "body": v} for k, v in got.items() if k <= last}
            reader.start()
            deadline = time.monotonic() + 20
            while len(reader.by_seq) < 300 and time.monotonic() < deadline:
                await asyncio.sleep(0.1)
            await reader.stop()
            got = {k: v["body"] for k, v in reader.by_seq.items()}
        stored = await stored_bodies(room)
        assert [got[k] for k in sorted(got)] == stored and len(stored) == 300
        grew = (rss_after - rss_before) / 2**20
        print(
            f"FAULT slow member: closed with {closed_with}; 300 stored, fast member 300, slow member "
            f"{len(got)} after resume; node RSS grew {grew:.1f} MiB"
        )
        assert grew < 64
        await fast.close()
        await talker.close()
    finally:
        node.stop()


async def test_BR09_consumer_and_rest_views_in_one_process_each_send_200_interleaved(
    people, node_env, tmp_path
):
    """One node: 200 sends over its WebSocket (daphne's loop) interleaved with 200 REST posts
    (sync views broadcasting through async_to_sync), 5 receivers: no cross-loop error, each
    receiver gets each message exactly once, ids unique."""
    room, tokens = await database_sync_to_async(people)(7)
    node = start_node("node-1", env=node_env, log_dir=tmp_path)
    try:
        await asyncio.to_thread(wait_healthy, node)
        receivers = [await Client(node, "r0", tokens[i]).connect() for i in range(5)]
        ws_sender = await Client(node, "r0", tokens[5]).connect()

        async def over_the_socket():
            for i in range(200):
                await ws_sender.send(f"ws {i}", f"ws-{i}")
                await asyncio.sleep(0.005)

        results = await asyncio.gather(over_the_socket(), rest_sender(node, tokens[6], 200, 200, "rest"))
        assert results[1] == 200
        assert await ws_sender.wait_for(lambda c: len(c.acks) == 200, timeout=30)
        for receiver in receivers:
            assert await receiver.wait_for(lambda c: len(c.messages) >= 400, timeout=30)
        await asyncio.sleep(0.5)
        stored = await stored_bodies(room)
        assert len(stored) == 400
        for receiver in receivers:
            ids = [m["id"] for m in receiver.messages]
            assert len(ids) == 400 and len(set(ids)) == 400
            assert sorted(m["body"] for m in receiver.messages) == sorted(stored)
        log = node.log()
        for bad in ("RuntimeError", "Event loop is closed", "AsyncToSync in the same thread", "Traceback"):
            assert bad not in log, log
        for client in receivers + [ws_sender]:
            await client.close()
    finally:
        node.stop()


async def test_invalid_utf8_text_frame_is_refused_to_its_sender_only(people, node_env, tmp_path):
    """A text frame that is not UTF-8 ends that sender's socket with 1007 (invalid payload, RFC
    6455); the other members' sockets carry on."""
    import struct

    room, tokens = await database_sync_to_async(people)(2)
    node = start_node("node-1", env=node_env, log_dir=tmp_path)
    try:
        await asyncio.to_thread(wait_healthy, node)
        other = await Client(node, "r0", tokens[1]).connect()
        sock = await asyncio.to_thread(_raw_websocket, node, tokens[0])
        payload, mask = b"\xff\xfe\xfd", os.urandom(4)
        masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        sock.sendall(bytes([0x81, 0x80 | len(payload)]) + mask + masked)
        sock.settimeout(5)
        data = b""
        while True:  # skip the hello frame; find the close frame (opcode 0x8)
            chunk = await asyncio.to_thread(sock.recv, 4096)
            if not chunk:
                break
            data += chunk
            at = data.find(b"\x88")
            if at >= 0 and len(data) >= at + 4:
                break
        at = data.find(b"\x88")
        assert at >= 0, data
        assert struct.unpack("!H", data[at + 2 : at + 4])[0] == 1007
        sock.close()
        await other.send("unaffected", "u-1")
        assert await other.wait_for(lambda c: "u-1" in c.acks and c.messages)
        await other.close()
    finally:
        node.stop()


async def test_typing_hints_are_dropped_first_for_a_client_that_is_behind(people, node_env, tmp_path):
    """A member that has not read 64 KiB of messages gets those messages but no typing hint;
    a member that keeps up gets the hint."""
    import json as _json

    room, tokens = await database_sync_to_async(people)(3)
    node = start_node("node-1", env={**node_env, "WS_SLOW_CLIENT_BYTES": str(64 * 2**20)}, log_dir=tmp_path)
    try:
        await asyncio.to_thread(wait_healthy, node)
        fast = await Client(node, "r0", tokens[0]).connect()
        import websockets

        slow = await unread_client(node, tokens[1])
        talker = await Client(node, "r0", tokens[2]).connect()
        for i in range(150):
            await talker.send(f"{i} " + "y" * 3000, f"fill-{i}")
        assert await talker.wait_for(lambda c: len(c.acks) == 150, timeout=60)
        assert await fast.wait_for(lambda c: len(c.messages) == 150, timeout=30)
        await talker._socket.send(_json.dumps({"type": "typing"}))
        assert await fast.wait_for(lambda c: any(f["type"] == "typing" for f in c.frames), timeout=5)
        await asyncio.sleep(0.5)
        seen = []
        try:
            while True:
                frame = _json.loads(await asyncio.wait_for(slow.recv(), 3))
                seen.append(frame["type"])
        except (TimeoutError, websockets.ConnectionClosed):
            pass
        assert seen.count("message") == 150 and "typing" not in seen, seen[-5:]
        await slow.close()
        for c in (fast, talker):
            await c.close()
    finally:
        node.stop()


async def test_a_flooding_client_is_rate_limited_and_others_keep_their_latency(people, node_env, tmp_path):
    """One member floods 600 sends as fast as it can (WS_SEND_RATE 20/s): it gets rate_limited
    answers, and two other members' round trips stay what they were. Prints p50/p99 (ms) without
    and with the flood; speed is a figure here, not an assertion (see bench/ for budgets)."""
    import statistics

    room, tokens = await database_sync_to_async(people)(3)
    node = start_node("node-1", env={**node_env, "WS_SEND_RATE": "20/s"}, log_dir=tmp_path)
    try:
        await asyncio.to_thread(wait_healthy, node)
        a = await Client(node, "r0", tokens[0]).connect()
        b = await Client(node, "r0", tokens[1]).connect()
        flooder = await Client(node, "r0", tokens[2]).connect()

        async def round_trips(tag, n=30):
            times = []
            for i in range(n):
                started = time.monotonic()
                await a.send(f"{tag} {i}", f"{tag}-{i}")
                assert await b.wait_for(
                    lambda c, i=i: any(m["body"] == f"{tag} {i}" for m in c.messages), timeout=10
                )
                times.append((time.monotonic() - started) * 1000)
                await asyncio.sleep(0.06)  # below a's own 20/s
            return times

        quiet = await round_trips("quiet")

        async def flood():
            for i in range(600):
                await flooder.send("flood", f"flood-{i}")

        flooding = asyncio.ensure_future(flood())
        busy = await round_trips("busy")
        await flooding
        await flooder.wait_for(
            lambda c: len(c.acks) + sum(f["type"] == "error" for f in c.frames) >= 600, timeout=30
        )
        limited = sum(1 for f in flooder.frames if f["type"] == "error" and f["code"] == "rate_limited")
        stored_flood = await database_sync_to_async(Message.objects.filter(room=room, body="flood").count)()

        def p(values, q):
            return statistics.quantiles(values, n=100)[q - 1]

        print(
            f"FAULT flood: {limited} of 600 flood sends rate_limited, {stored_flood} stored; other members' "
            f"round trip p50/p99 {p(quiet, 50):.1f}/{p(quiet, 99):.1f} ms quiet, "
            f"{p(busy, 50):.1f}/{p(busy, 99):.1f} ms during the flood"
        )
        assert limited >= 500 and limited + stored_flood == 600
        assert len(a.acks) == 60 and len([m for m in b.messages if m["body"] != "flood"]) == 60
        for c in (a, b, flooder):
            await c.close()
    finally:
        node.stop()


# --- PostgreSQL faults on a private cluster ---------------------------------------------------

_SEED = """
import json
from django.contrib.auth import get_user_model
from django.core.management import call_command
from rest_framework.authtoken.models import Token
from rooms import services
call_command("migrate", verbosity=0)
User = get_user_model()
owner = User.objects.create(username="pg-owner")
for slug in ("pg-restart", "pg-terminate", "pg-blackhole", "pg-lost-answer", "pg-hung"):
    services.room_create(name=slug, slug=slug, description="", created_by=owner, is_private=False)
from tests.factories import session_key_for
users = [User.objects.create(username=f"pg-{i}") for i in range(6)]
print(json.dumps({"tokens": [Token.objects.create(user=u).key for u in users], "session": session_key_for(users[5])}))
"""


@pytest.fixture(scope="module")
def private_pg(tmp_path_factory):
    """A PostgreSQL cluster of this module's own (``tests.nodes.PrivatePostgres``), migrated, with
    the rooms pg-restart, pg-terminate, pg-blackhole, pg-lost-answer and pg-hung, six users' API tokens
    and a session of the sixth, behind a
    ``TcpProxy``; two daphne nodes use it through the proxy. Made once for the tests below, so
    the suite runs initdb once; each test has a room of its own."""
    from types import SimpleNamespace

    from tests.nodes import PrivatePostgres

    pg = PrivatePostgres()
    proxy = None
    nodes = []
    try:
        pg.execute("CREATE DATABASE chatsite")
        seeded = subprocess.run(
            [sys.executable, "manage.py", "shell", "-c", _SEED],
            cwd=BASE_DIR,
            capture_output=True,
            text=True,
            env={**os.environ, "DATABASE_URL": pg.url("chatsite"), "SECRET_KEY": TEST_SECRET_KEY},
            timeout=120,
        )
        assert seeded.returncode == 0, seeded.stderr
        seed = json.loads(seeded.stdout.strip().splitlines()[-1])
        proxy = TcpProxy(("127.0.0.1", pg.port))
        env = {
            "DATABASE_URL": pg.url("chatsite", proxy.port),
            "REDIS_URL": os.environ["REDIS_URL"],
            "CHANNEL_LAYER_PREFIX": prefix(),
            "DEBUG": "0",
            "SECRET_KEY": TEST_SECRET_KEY,
            "ALLOWED_HOSTS": "127.0.0.1,localhost",
            "DATABASE_POOL_MAX_SIZE": "4",
            "THROTTLE_SEND_RATE": "100000/min",
            "WS_SEND_RATE": "0",
        }
        log_dir = tmp_path_factory.mktemp("pg-nodes")
        nodes = [start_node(f"pg-node-{i}", env=env, log_dir=log_dir) for i in (1, 2)]
        for node in nodes:
            wait_healthy(node)
        yield SimpleNamespace(pg=pg, proxy=proxy, tokens=seed["tokens"], session=seed["session"], nodes=nodes)
    finally:
        for node in nodes:
            node.stop()
        if proxy is not None:
            proxy.close()
        pg.close()


class OutboxSender:
    """Sends ``count`` messages at about ``rate`` per second over one socket, the way the room
    page's outbox does: a message answered with ``unavailable`` (or not at all within 5 s) is
    sent again with the same ``client_msg_id`` until acked, and a closed socket is reopened.
    Records every answer: ``answers`` as (sent at, seconds to the answer, "ack" | "unavailable"
    | other code | "none"), ``close_codes``, and ``acked`` client_msg_ids."""

    def __init__(self, node, room: str, token: str, tag: str):
        self.node, self.room, self.token, self.tag = node, room, token, tag
        self.answers: list[tuple[float, float, str]] = []
        self.close_codes: list[int | None] = []
        self.acked: set[str] = set()
        self.sent: list[str] = []
        self.client = None

    async def _open(self) -> None:
        deadline = time.monotonic() + 20
        while True:
            try:
                self.client = await Client(self.node, self.room, self.token).connect()
                return
            except Exception:
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.3)

    async def _send_until_acked(self, body: str, cid: str, give_up_at: float) -> None:
        while time.monotonic() < give_up_at:
            if self.client.close_code is not None:
                self.close_codes.append(self.client.close_code)
                await self._open()
            seen = len(self.client.frames)
            sent_at = time.monotonic()
            try:
                await self.client.send(body, cid)
            except Exception:  # the socket went away under us: reopen and send again
                await asyncio.sleep(0.1)
                continue

            def answered(c):
                return (
                    cid in c.acks
                    or c.close_code is not None
                    or any(f["type"] == "error" and f.get("client_msg_id") == cid for f in c.frames[seen:])
                )

            await self.client.wait_for(answered, timeout=5)
            took = time.monotonic() - sent_at
            if cid in self.client.acks:
                self.answers.append((sent_at, took, "ack"))
                self.acked.add(cid)
                return
            error = next(
                (
                    f
                    for f in self.client.frames[seen:]
                    if f["type"] == "error" and f.get("client_msg_id") == cid
                ),
                None,
            )
            self.answers.append((sent_at, took, error["code"] if error else "none"))
            await asyncio.sleep(0.2)

    async def run(self, count: int, rate: float) -> None:
        await self._open()
        for i in range(count):
            cid = f"{self.tag}-{i}"
            self.sent.append(cid)
            await self._send_until_acked(f"{self.tag} {i}", cid, time.monotonic() + 30)
            await asyncio.sleep(1 / rate)
        await self.client.close()
        if self.client.close_code not in (None, 1000):
            self.close_codes.append(self.client.close_code)


def _stored(pg, room: str) -> list[tuple[str, str]]:
    return pg.execute(
        "SELECT m.client_msg_id, m.body FROM rooms_message m JOIN rooms_room r ON r.id = m.room_id "
        f"WHERE r.slug = '{room}' ORDER BY m.seq",
        dbname="chatsite",
    )


async def _probe_fetch(client) -> tuple[float, dict, int | None]:
    """One ``fetch`` on an open socket: (seconds to the answer, the answer, close code)."""
    seen = len(client.frames)
    started = time.monotonic()
    await client._socket.send(json.dumps({"type": "fetch", "after_seq": 0}))
    await client.wait_for(
        lambda c: any(f["type"] in ("history", "error") for f in c.frames[seen:]), timeout=10
    )
    took = time.monotonic() - started
    answer = next((f for f in client.frames[seen:] if f["type"] in ("history", "error")), {"type": "none"})
    await asyncio.sleep(0.3)
    code = client.close_code
    await client.close()
    return took, answer, code


def _get_page(node, path: str, session: str) -> tuple[int, dict, bytes]:
    """A page as a signed-in browser asks for it (session cookie, Accept: text/html)."""
    import urllib.error
    import urllib.request

    request = urllib.request.Request(
        node.http + path, headers={"Cookie": f"sessionid={session}", "Accept": "text/html,*/*;q=0.8"}
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers), error.read()


async def _pg_fault(private_pg, room: str, name: str, fault, *, heal=None, hold: float = 0.0):
    """Two senders (one per node, 10 msg/s each, retrying like the outbox) and two resuming
    readers in ``room`` while ``fault()`` happens (then ``heal()`` after ``hold`` s); every send
    ends acked, nothing acked is missing from the database, no socket is closed with 1011, and
    every reader ends with the stored history. Prints the figures; returns them."""
    nodes, tokens, pg = private_pg.nodes, private_pg.tokens, private_pg.pg
    readers = [
        ResumingClient(nodes, room, tokens[0]).start(),
        ResumingClient(nodes[::-1], room, tokens[1]).start(),
    ]
    for reader in readers:
        await asyncio.wait_for(reader.connected.wait(), 10)
    senders = [
        OutboxSender(nodes[0], room, tokens[2], f"{name}-a"),
        OutboxSender(nodes[1], room, tokens[3], f"{name}-b"),
    ]
    probing = [await Client(node, room, tokens[4]).connect() for node in nodes]
    sending = asyncio.gather(*(s.run(60, 10) for s in senders))
    await asyncio.sleep(1.5)
    fault_at = time.monotonic()
    await asyncio.to_thread(fault)
    probes = await asyncio.gather(*(_probe_fetch(client) for client in probing))
    if heal is not None:
        await asyncio.sleep(max(0.0, hold - (time.monotonic() - fault_at)))
        await asyncio.to_thread(heal)
    await asyncio.wait_for(sending, 90)
    stored = await asyncio.to_thread(_stored, pg, room)
    stored_ids = [cid for cid, _ in stored]
    bodies = [body for _, body in stored]
    deadline = time.monotonic() + 15
    while any(r.bodies() != bodies for r in readers) and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
    for reader in readers:
        await reader.stop()

    answers = [a for s in senders for a in s.answers]
    after = [a for a in answers if a[0] + a[1] >= fault_at]
    unavailable = sorted(a[0] + a[1] - fault_at for a in after if a[2] == "unavailable")
    sent = [cid for s in senders for cid in s.sent]
    acked = set().union(*(s.acked for s in senders))
    closes = [c for s in senders for c in s.close_codes] + [c for r in readers for c in r.close_codes]
    figures = {
        "sent": len(sent),
        "stored": len(stored_ids),
        "lost": len(set(sent) - acked),
        "acked_missing": len(acked - set(stored_ids)),
        "duplicates": len(stored_ids) - len(set(stored_ids)),
        "closed_1011": closes.count(1011),
        "unavailable": len(unavailable),
        "first_unavailable": unavailable[0] if unavailable else None,
        "slowest_answer": max((a[1] for a in after), default=0.0),
        "unanswered": sum(1 for a in answers if a[2] == "none"),
        "other_errors": sorted({a[2] for a in answers} - {"ack", "unavailable", "none"}),
        "probes": [(round(t, 2), a["type"], a.get("code"), c) for t, a, c in probes],
        "readers_match": [r.bodies() == bodies for r in readers],
    }
    first = f"{figures['first_unavailable']:.2f} s" if unavailable else "never (no send failed)"
    print(
        f"FAULT postgresql {name}: sent {figures['sent']}, stored {figures['stored']}, lost {figures['lost']}, "
        f"acked-but-missing {figures['acked_missing']}, closed 1011: {figures['closed_1011']}; "
        f"unavailable answers {figures['unavailable']} (first {first} after the fault), "
        f"slowest answer {figures['slowest_answer']:.2f} s, unanswered {figures['unanswered']}; "
        f"fetch during the fault: {figures['probes']}; readers hold the stored history: {figures['readers_match']}"
    )
    assert figures["lost"] == 0 and figures["acked_missing"] == 0 and figures["duplicates"] == 0
    assert figures["closed_1011"] == 0, closes
    assert figures["unanswered"] == 0 and not figures["other_errors"], answers
    assert all(figures["readers_match"]), [len(r.bodies()) for r in readers]
    for _took, answer, code in probes:  # answered (history, or an error frame), the socket kept
        assert answer["type"] == "history" or answer.get("code") == "unavailable", answer
        assert code is None
    return figures


async def test_postgresql_restarted_sends_are_answered_and_stored_once_nothing_closed_1011(private_pg):
    """Our own PostgreSQL is stopped (fast shutdown: every session ended) for 2 s and started
    again while two nodes take 20 sends a second: during the outage sends are answered
    ``unavailable`` within about 2 s, a fetch is answered with an ``unavailable`` error frame on an
    open socket, REST answers 503 JSON with Retry-After and a page 503 (no HTML 500); after it,
    the dead pooled connections are replaced without a failed send, every retried send is stored
    once and every reader holds the stored history."""
    pg, node = private_pg.pg, private_pg.nodes[0]
    rest = {}

    def outage():
        pg.stop()
        http = Http(node, private_pg.tokens[5])
        rest["api"] = http.request("GET", "/api/rooms/pg-restart/messages/", timeout=10)
        rest["page"] = _get_page(node, "/", private_pg.session)

    figures = await _pg_fault(private_pg, "pg-restart", "restart", outage, heal=pg.start, hold=2.5)
    status, headers, body = rest["api"]
    assert status == 503 and json.loads(body)["code"] == "unavailable" and headers.get("Retry-After"), body[
        :300
    ]
    assert rest["page"][0] == 503 and rest["page"][1].get("Retry-After"), rest["page"][2][:300]
    assert rest["page"][1]["Content-Type"].startswith("text/html")
    print(f"  REST during the outage: {status} {body[:120]!r}; page {rest['page'][0]}")
    assert figures["unavailable"] > 0 and figures["slowest_answer"] < 5


async def test_postgresql_backends_terminated_sends_retry_on_fresh_connections_none_fail(private_pg):
    """Every session of the nodes' database is ended with pg_terminate_backend while two nodes
    take 20 sends a second: each node's pooled connections are dead; the first statement to
    meet one drains the pool and is sent again on a fresh connection, so sends are answered
    (no 1011, nothing lost or stored twice) and fetches answer history."""
    pg = private_pg.pg
    terminated = []
    figures = await _pg_fault(
        private_pg, "pg-terminate", "terminate", lambda: terminated.append(pg.terminate_backends("chatsite"))
    )
    print(f"  sessions terminated: {terminated[0]}")
    assert terminated[0] > 0
    assert figures["slowest_answer"] < 5


async def test_postgresql_connections_blackholed_answered_unavailable_within_2s_then_recover(private_pg):
    """The nodes' open connections to PostgreSQL go silent (``TcpProxy.blackhole``: bytes
    swallowed, nothing reset; new connections still work): a statement on a silent connection
    is given up after DATABASE_STATEMENT_TIMEOUT + 0.25 s (1.75 s), that pool is drained, and the
    send is answered ``unavailable`` (its retry is stored once) or a fetch an error frame; then
    everything goes on over new connections. Before, sends got no answer for 25-45 s."""
    figures = await _pg_fault(private_pg, "pg-blackhole", "blackhole", private_pg.proxy.blackhole)
    assert figures["slowest_answer"] < 2.5


async def test_postgresql_hung_sends_and_fetches_answered_unavailable_within_2s_on_both_paths(private_pg):
    """Every PostgreSQL process is stopped (SIGSTOP) for 4 s: open connections and new ones get
    no answer at all. Sends (the event loop's pool) and fetches (Django's ORM on the node's one
    database thread) are answered ``unavailable`` within about 2 s all along, not after the
    thread's queue of hung hops; after SIGCONT every retried send is stored once."""
    import psutil

    processes = []

    def hang():
        postmaster = psutil.Process(private_pg.pg.proc.pid)
        postmaster.suspend()  # first: no new backend from now on
        processes.append(postmaster)
        for process in postmaster.children(recursive=True):
            try:
                process.suspend()
                processes.append(process)
            except psutil.NoSuchProcess:
                pass

    def resume():
        while processes:
            try:
                processes.pop().resume()
            except psutil.NoSuchProcess:
                pass

    try:
        figures = await _pg_fault(private_pg, "pg-hung", "hung", hang, heal=resume, hold=4)
    finally:
        resume()
    assert figures["unavailable"] > 0 and figures["slowest_answer"] < 2.5


async def test_a_send_stored_but_whose_answer_was_lost_is_broadcast_by_its_retry(private_pg):
    """PostgreSQL's answers stop reaching the nodes (``blackhole(replies_only=True)``: the
    statement arrives and commits, its answer is lost): the send is answered ``unavailable``
    after 1.75 s; the client's retry with the same ``client_msg_id`` finds it stored and is
    acked, and because the node knows that attempt's outcome was unknown, the retry broadcasts
    it: a member on the other node gets it live, with no later message to reveal the gap."""
    nodes, tokens, pg = private_pg.nodes, private_pg.tokens, private_pg.pg
    reader = ResumingClient([nodes[1]], "pg-lost-answer", tokens[0]).start()
    await asyncio.wait_for(reader.connected.wait(), 10)
    sender = OutboxSender(nodes[0], "pg-lost-answer", tokens[2], "lost")
    await sender._open()
    await sender._send_until_acked("before", "lost-0", time.monotonic() + 10)
    assert await asyncio.to_thread(private_pg.proxy.blackhole, True) > 0
    await sender._send_until_acked("answer lost", "lost-1", time.monotonic() + 30)
    stored = await asyncio.to_thread(_stored, pg, "pg-lost-answer")
    deadline = time.monotonic() + 10
    while len(reader.by_seq) < 2 and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
    await reader.stop()
    await sender.client.close()
    codes = [code for _, _, code in sender.answers]
    print(
        f"FAULT postgresql answers lost: answers to the send {[(code, round(took, 2)) for _, took, code in sender.answers[1:]]}; "
        f"stored {[cid for cid, _ in stored]}; live at the other node: {reader.bodies()}"
    )
    assert codes[0] == "ack" and "unavailable" in codes[1:] and codes[-1] == "ack"
    assert stored == [("lost-0", "before"), ("lost-1", "answer lost")]
    assert reader.bodies() == ["before", "answer lost"] and reader.gap_fetches == 0 and reader.duplicates == 0
