"""One user cannot slow a node for others (rooms/limits.py): read frames per user, reads in
flight per user, typing per user, sockets per user across nodes.

The first tests drive ``chatsite.asgi`` in-process (real PostgreSQL and Redis); the ``multinode``
ones run real nodes (``python -m chatsite.serve``) and print the figures they measure (shown with
``pytest -s``): latencies are figures, not assertions, beyond a generous bound that proves
"not stalled for seconds".
"""

import asyncio
import json
import os
import signal
import statistics
import time
import uuid

import pytest
import websockets
from channels.db import database_sync_to_async

from rooms import limits, services
from rooms.models import Message, Room
from tests import factories
from tests.nodes import TEST_SECRET_KEY, database_url_for_tests, start_node, wait_healthy

pytestmark = pytest.mark.django_db(transaction=True)


async def joined_socket(ws, room, user):
    conn = await ws(f"/ws/rooms/{room.slug}/", user=user)
    assert await conn.connect()
    await conn.receive_type("hello")
    return conn


async def test_reads_over_ws_read_rate_are_answered_rate_limited_per_user_and_the_socket_stays_open(
    ws, room, user, other_user, settings
):
    """WS_READ_RATE counts a user's fetch and resume frames over all their sockets (here 3 an
    hour: the window cannot end during the test); the 4th is refused with retry_after, the socket
    stays open and can still send, and another user's reads are not affected."""
    settings.WS_READ_RATE = "3/h"
    one = await joined_socket(ws, room, other_user)
    two = await joined_socket(ws, room, other_user)
    alice = await joined_socket(ws, room, user)
    await one.send({"type": "fetch", "after_seq": 0})
    assert (await one.receive_type("history"))["messages"] == []
    await two.send({"type": "resume", "after_seq": 0})
    assert (await two.receive_type("resumed"))["last_seq"] == 0
    await one.send({"type": "fetch", "after_seq": 0})
    await one.receive_type("history")
    await two.send({"type": "fetch", "after_seq": 0})  # the user's 4th read: over the rate
    error = await two.receive_type("error")
    assert error["code"] == "rate_limited" and 0 < error["retry_after"] <= 3600, error
    assert "detail" in error
    await one.send({"type": "resume", "after_seq": 0})
    assert (await one.receive_type("error"))["code"] == "rate_limited"
    await alice.send({"type": "fetch", "after_seq": 0})  # another user: their own count
    await alice.receive_type("history")
    await two.send({"type": "message.send", "body": "still here", "client_msg_id": "c1"})
    assert (await two.receive_type("ack"))["seq"] == 1
    for conn in (one, two, alice):
        await conn.close()


async def test_refused_read_frames_name_their_frame_so_the_page_can_ask_again(ws, room, user, settings):
    """Over WS_READ_RATE a ``read`` report, a ``fetch`` and a ``resume`` are each answered
    ``rate_limited`` with ``"frame"`` (the page's reads.js reports again after ``retry_after``);
    the refused read moves nothing."""
    from rooms.models import Membership

    settings.WS_READ_RATE = "1/h"
    await database_sync_to_async(services.message_post)(room=room, author=user, body="x", client_msg_id="m1")
    await Membership.objects.filter(room=room, user=user).aupdate(last_read_seq=0)
    conn = await joined_socket(ws, room, user)
    await conn.send({"type": "fetch", "after_seq": 0})  # the one read of the hour
    await conn.receive_type("history")
    for frame in (
        {"type": "read", "seq": 1},
        {"type": "fetch", "after_seq": 0},
        {"type": "resume", "after_seq": 0},
    ):
        await conn.send(frame)
        error = await conn.receive_type("error")
        assert error["code"] == "rate_limited" and error["frame"] == frame["type"], error
        assert 0 < error["retry_after"] <= 3600
    assert (await Membership.objects.aget(room=room, user=user)).last_read_seq == 0
    await conn.close()


async def test_typing_from_several_sockets_of_one_user_is_relayed_once_per_interval(
    ws, room, user, other_user
):
    """Each socket may relay one typing every 2 s; a user with three tabs still relays one."""
    tabs = [await joined_socket(ws, room, user) for _ in range(3)]
    bob = await joined_socket(ws, room, other_user)
    for tab in tabs:
        await tab.send({"type": "typing"})
    assert (await bob.receive_type("typing"))["user"]["id"] == user.pk
    assert await bob.nothing_more(timeout=0.5)
    for conn in (*tabs, bob):
        await conn.close()


async def test_a_socket_over_the_cap_is_closed_4429_and_a_refused_or_closed_socket_frees_its_slot(
    ws, room, user, other_user, settings
):
    """WS_MAX_SOCKETS_PER_USER=2 (counted in Redis): a socket refused for another reason (4404)
    after admission gives its slot back, a third open socket is closed 4429 (the open ones stay),
    another user is admitted, and closing one lets the next in."""
    settings.WS_MAX_SOCKETS_PER_USER = 2
    missing = await ws("/ws/rooms/no-such-room/", user=user)
    assert await missing.connect()
    assert await missing.close_code() == 4404
    await missing.close()
    first = await joined_socket(ws, room, user)
    second = await joined_socket(ws, room, user)
    third = await ws(f"/ws/rooms/{room.slug}/", user=user)
    assert await third.connect()
    assert await third.close_code() == 4429
    await third.close()
    bob = await joined_socket(ws, room, other_user)
    await first.send({"type": "message.send", "body": "kept", "client_msg_id": "k1"})
    assert (await first.receive_type("ack"))["seq"] == 1
    await second.close()
    again = await joined_socket(ws, room, user)
    for conn in (first, again, bob):
        await conn.close()


class _Consumer:
    """Stands for a consumer in the slot registry (held weakly)."""

    def __init__(self, name):
        self.channel_name = name


async def test_a_user_runs_at_most_ws_reads_in_flight_reads_at_once_and_others_do_not_wait(settings):
    settings.WS_READS_IN_FLIGHT = 2
    running, most = 0, 0

    async def read(user_id):
        nonlocal running, most
        async with limits.read_turn(user_id):
            running += 1
            most = max(most, running)
            await asyncio.sleep(0.05)
            running -= 1

    flood = [asyncio.ensure_future(read(1)) for _ in range(6)]
    await asyncio.sleep(0.01)
    started = time.monotonic()
    await read(2)  # another user: no wait behind user 1's queue
    other_waited = time.monotonic() - started
    await asyncio.gather(*flood)
    assert most == 3  # user 1's two, and user 2's one
    assert other_waited < 0.1 + 0.05  # its own 50 ms, not user 1's 150 ms queue
    assert 1 not in limits._node().users  # nothing kept for a user with no socket here


async def test_without_redis_sockets_are_counted_in_this_process(settings):
    settings.REDIS = None
    settings.WS_MAX_SOCKETS_PER_USER = 2
    consumers = [_Consumer(f"c{i}") for i in range(4)]
    first = await limits.admit_socket(7, consumers[0])
    second = await limits.admit_socket(7, consumers[1])
    assert first is not None and second is not None
    assert await limits.admit_socket(7, consumers[2]) is None
    assert await limits.admit_socket(8, consumers[3]) is not None  # another user
    await first.release()
    await first.release()  # idempotent
    assert await limits.admit_socket(7, consumers[2]) is not None


# --- real nodes -----------------------------------------------------------------------------------


@pytest.fixture
def node_env(db):
    """Environment for nodes started by a test (its own Redis key prefix)."""
    return {
        "DATABASE_URL": database_url_for_tests(),
        "REDIS_URL": os.environ["REDIS_URL"],
        "CHANNEL_LAYER_PREFIX": f"chatsite-test-{os.getpid()}-{uuid.uuid4().hex[:8]}",
        "DEBUG": "0",
        "SECRET_KEY": TEST_SECRET_KEY,
        "ALLOWED_HOSTS": "127.0.0.1,localhost",
        "DATABASE_POOL_MAX_SIZE": "4",
        "THROTTLE_SEND_RATE": "100000/min",
        "WS_SEND_RATE": "0",
    }


def _seed_room(n: int) -> tuple[Room, str, str]:
    """Room r0 holding ``n`` stored messages, and two members' tokens: the flooder's and another's."""
    owner = factories.make_user("owner")
    room = factories.make_room(created_by=owner, slug="r0")
    Message.objects.bulk_create(
        Message(
            room=room,
            seq=i,
            author=owner,
            body=f"message {i} " + "x" * 200,
            client_msg_id=f"seed-{i}",
            server_id="seed",
        )
        for i in range(1, n + 1)
    )
    Room.objects.filter(pk=room.pk).update(last_seq=n)
    return (
        room,
        factories.token_for(factories.make_user("flooder")),
        factories.token_for(factories.make_user("other")),
    )


async def _open(node, token: str, query: str = ""):
    return await websockets.connect(
        f"{node.ws}/ws/rooms/r0/{query}",
        additional_headers={"Authorization": f"Token {token}"},
        open_timeout=10,
        max_size=2**24,
    )


async def _first_frame(node, token: str) -> tuple[object, dict | int]:
    """Open a socket; ``(socket, hello frame)``, or ``(None, close code)`` when it is refused."""
    socket = await _open(node, token)
    try:
        frame = json.loads(await asyncio.wait_for(socket.recv(), 10))
    except websockets.ConnectionClosed:
        return None, socket.close_code
    assert frame["type"] == "hello", frame
    return socket, frame


async def _next_of(socket, frame_type: str, timeout: float = 10.0) -> dict:
    """The next frame of ``frame_type`` (others skipped; an error frame fails the test)."""
    deadline = time.monotonic() + timeout
    while True:
        frame = json.loads(await asyncio.wait_for(socket.recv(), max(0.01, deadline - time.monotonic())))
        assert frame["type"] != "error" or frame_type == "error", frame
        if frame["type"] == frame_type:
            return frame


async def _join_and_fetch(node, token: str) -> tuple[float, float]:
    """Another user's join (socket opened → hello) and one fetch of 200 messages, in ms; then
    a pause, so that this user stays well within WS_READ_RATE (10/s) themselves."""
    started = time.monotonic()
    socket, hello = await _first_frame(node, token)
    assert socket is not None, hello
    joined = time.monotonic()
    await socket.send(json.dumps({"type": "fetch", "after_seq": 0}))
    history = await _next_of(socket, "history")
    fetched = time.monotonic()
    assert len(history["messages"]) == 200
    await socket.close()
    await asyncio.sleep(0.2)
    return (joined - started) * 1000, (fetched - joined) * 1000


@pytest.mark.multinode
async def test_one_users_16_sockets_flooding_fetch_are_rate_limited_while_another_users_join_and_fetch_stay_prompt(
    node_env, tmp_path
):
    """16 sockets of one user send ``fetch`` (200 messages each) 50 times a second each, for
    4 s. They are answered ``rate_limited`` (with ``retry_after``) beyond WS_READ_RATE and keep
    their sockets; the histories they get stay within the rate; meanwhile another user's joins
    and fetches on the same node are answered promptly. Prints p50/max (ms) quiet and during
    the flood."""
    _, flooder, other = await database_sync_to_async(_seed_room)(2000)
    env = {**node_env, "WS_READ_RATE": "10/s", "WS_READS_IN_FLIGHT": "2"}
    node = start_node("node-1", env=env, log_dir=tmp_path)
    sockets = []
    try:
        await asyncio.to_thread(wait_healthy, node)
        quiet = [await _join_and_fetch(node, other) for _ in range(8)]

        counts = {"history": 0, "rate_limited": 0, "other": 0}
        retry_afters = []
        for _ in range(16):
            socket, hello = await _first_frame(node, flooder)
            assert socket is not None, hello
            sockets.append(socket)

        async def read(socket):
            try:
                async for raw in socket:
                    frame = json.loads(raw)
                    if frame["type"] == "history":
                        counts["history"] += 1
                    elif frame["type"] == "error" and frame["code"] == "rate_limited":
                        counts["rate_limited"] += 1
                        retry_afters.append(frame["retry_after"])
                    elif frame["type"] not in (
                        "presence",
                        "presence.diff",
                        "member.updated",
                        "members.updated",
                        "members.joined",
                        "member.removed",
                    ):
                        counts["other"] += 1
            except websockets.ConnectionClosed:
                pass

        async def flood(socket, seconds):
            end = time.monotonic() + seconds
            while time.monotonic() < end:
                await socket.send(json.dumps({"type": "fetch", "after_seq": 0}))
                await asyncio.sleep(0.02)  # 50/s a socket, 800/s in all: 80 times the rate

        readers = [asyncio.ensure_future(read(s)) for s in sockets]
        flood_started = time.monotonic()
        flooding = asyncio.ensure_future(asyncio.gather(*(flood(s, 4.0) for s in sockets)))
        await asyncio.sleep(0.5)
        busy = []
        while not flooding.done() and len(busy) < 8:
            busy.append(await _join_and_fetch(node, other))
        await flooding
        flood_seconds = time.monotonic() - flood_started
        await asyncio.sleep(1.0)  # the last answers
        open_after = sum(1 for s in sockets if s.close_code is None)

        def summary(pairs, i):
            values = [p[i] for p in pairs]
            return f"p50 {statistics.median(values):.0f} max {max(values):.0f}"

        print(
            f"LIMITS flood: 16 sockets of one user, {flood_seconds:.1f} s of fetch frames: "
            f"{counts['history']} answered with history, {counts['rate_limited']} rate_limited, "
            f"{counts['other']} other; {open_after} of 16 sockets still open. Another user's join "
            f"ms {summary(quiet, 0)} quiet, {summary(busy, 0)} during the flood; fetch (200 messages) "
            f"ms {summary(quiet, 1)} quiet, {summary(busy, 1)} during the flood"
        )
        assert counts["rate_limited"] > 0 and counts["other"] == 0
        assert all(0 < r <= 1 for r in retry_afters)
        # Fixed 1 s windows: at most 10 per whole second touched (the flood started mid-window).
        assert counts["history"] <= 10 * (int(flood_seconds) + 3), counts
        assert open_after == 16
        assert len(busy) >= 3
        # Not stalled for seconds (measured without the limits, WS_READ_RATE=0 and
        # WS_READS_IN_FLIGHT=0: joins took a median of 2,030 ms during this flood; with them, 11 ms).
        assert statistics.median(join for join, _ in busy) < 1000, busy
        assert max(max(join, fetch) for join, fetch in busy) < 3000, busy
        for reader in readers:
            reader.cancel()
    finally:
        for socket in sockets:
            await socket.close()
        node.stop()


@pytest.mark.multinode
async def test_sockets_per_user_are_capped_across_nodes_the_newest_closed_4429_and_slots_free_on_close_and_node_death(
    node_env, tmp_path
):
    """WS_MAX_SOCKETS_PER_USER=3 over two nodes: a 4th socket of the user is closed 4429 on
    either node (its open ones are kept, another user is admitted); closing one frees a slot at
    once; a node killed with SIGKILL frees its sockets' slots within PRESENCE_TTL + heartbeat."""
    _, alice, bob = await database_sync_to_async(_seed_room)(1)
    env = {**node_env, "WS_MAX_SOCKETS_PER_USER": "3", "PRESENCE_TTL": "4", "PRESENCE_HEARTBEAT": "1"}
    one = start_node("node-1", env=env, log_dir=tmp_path)
    two = start_node("node-2", env=env, log_dir=tmp_path)
    opened = []

    async def first_frame(node, token):
        socket, frame = await _first_frame(node, token)
        if socket is not None:
            opened.append(socket)
        return socket, frame

    async def admitted_within(node, token, seconds):
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            socket, frame = await first_frame(node, token)
            if socket is not None:
                return socket
            assert frame == 4429, frame
            await asyncio.sleep(0.2)
        return None

    try:
        await asyncio.to_thread(wait_healthy, one)
        await asyncio.to_thread(wait_healthy, two)
        a1, _ = await first_frame(one, alice)
        a2, _ = await first_frame(one, alice)
        a3, _ = await first_frame(two, alice)
        assert None not in (a1, a2, a3)
        assert await first_frame(two, alice) == (None, 4429)
        assert await first_frame(one, alice) == (None, 4429)
        b, hello = await first_frame(one, bob)
        assert b is not None, hello  # the cap is per user
        # The newest lost: the open ones still work.
        await a1.send(json.dumps({"type": "message.send", "body": "kept", "client_msg_id": "k1"}))
        assert (await _next_of(a1, "ack"))["seq"] == 2
        assert (await _next_of(a3, "message"))["message"]["body"] == "kept"

        await a3.close()  # frees its slot at once (disconnect releases it)
        a4 = await admitted_within(two, alice, 5)
        assert a4 is not None

        one.stop(sig=signal.SIGKILL)  # a1 and a2 stay counted until their entries expire
        killed = time.monotonic()
        assert await first_frame(two, alice) == (None, 4429)
        a5 = await admitted_within(two, alice, 4 + 1 + 5)
        freed = time.monotonic() - killed
        print(
            f"LIMITS socket cap: a killed node's slots freed after {freed:.1f} s (PRESENCE_TTL 4, heartbeat 1)"
        )
        assert a5 is not None
        a6 = await admitted_within(two, alice, 5)
        assert a6 is not None
        assert await first_frame(two, alice) == (None, 4429)  # 3 open on node-2: full again
    finally:
        for socket in opened:
            await socket.close()
        one.stop()
        two.stop()


@pytest.mark.multinode
async def test_reads_are_counted_across_nodes_in_batches_without_a_redis_command_per_frame(
    node_env, tmp_path
):
    """WS_READ_RATE 40 an hour over two nodes: after 30 reads on node-1, node-2 answers only
    what is left of the shared 40 plus at most one batch (10) it had not added yet; each node
    counted alone would have answered all 30 there."""
    _, alice, _ = await database_sync_to_async(_seed_room)(1)
    env = {**node_env, "WS_READ_RATE": "40/h"}
    one = start_node("node-1", env=env, log_dir=tmp_path)
    two = start_node("node-2", env=env, log_dir=tmp_path)
    sockets = []

    async def reads(socket, n):
        answered = refused = 0
        for _ in range(n):
            await socket.send(json.dumps({"type": "fetch", "after_seq": 0}))
            while True:
                frame = json.loads(await asyncio.wait_for(socket.recv(), 10))
                if frame["type"] == "history":
                    answered += 1
                    break
                if frame["type"] == "error":
                    assert frame["code"] == "rate_limited", frame
                    refused += 1
                    break
        return answered, refused

    try:
        await asyncio.to_thread(wait_healthy, one)
        await asyncio.to_thread(wait_healthy, two)
        for node in (one, two):
            socket, hello = await _first_frame(node, alice)
            assert socket is not None, hello
            sockets.append(socket)
        assert await reads(sockets[0], 30) == (30, 0)
        await asyncio.sleep(0.5)  # node-1's last batch reaches Redis
        answered, refused = await reads(sockets[1], 30)
        print(
            f"LIMITS shared reads: 30 answered on node-1, then {answered} of 30 on node-2 (limit 40, batch 10)"
        )
        assert 10 <= answered <= 20 and answered + refused == 30
    finally:
        for socket in sockets:
            await socket.close()
        one.stop()
        two.stop()


# --- REST bursts ----------------------------------------------------------------------------------


def _burst(requests: list, workers: int) -> list[int]:
    """Run ``requests`` (callables returning ``(status, headers, body)``) all at once; statuses."""
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=workers) as pool:
        return [status for status, _, _ in pool.map(lambda call: call(), requests)]


def test_a_burst_of_rest_sends_over_two_nodes_gets_the_throttles_limit_exactly(node_env, tmp_path):
    """60 REST sends at once, over two nodes, against ``THROTTLE_SEND_RATE`` 20 a day: exactly 20
    stored (201), the other 40 refused 429 ``rate_limited``. DRF's throttle read its list of
    times, added one and wrote it back, so requests that arrived together all passed (150 of 150
    against 120/min)."""
    from tests.nodes import Http

    _room, flooder, _other = _seed_room(0)
    env = {**node_env, "THROTTLE_SEND_RATE": "20/d", "HTTP_REQUESTS_IN_FLIGHT": "0"}
    nodes = [start_node(f"burst-{i}", env=env, log_dir=tmp_path) for i in (1, 2)]
    try:
        for node in nodes:
            wait_healthy(node)
        calls = [
            (
                lambda i=i: Http(nodes[i % 2], token=flooder).request(
                    "POST",
                    "/api/rooms/r0/messages/",
                    json_body={"body": f"burst {i}", "client_msg_id": f"b-{i}"},
                )
            )
            for i in range(60)
        ]
        statuses = _burst(calls, 60)
        assert sorted(statuses) == [201] * 20 + [429] * 40, sorted(statuses)
        assert Message.objects.filter(room__slug="r0").count() == 20
    finally:
        for node in nodes:
            node.stop()


def test_one_clients_burst_is_refused_beyond_its_requests_in_flight_and_others_are_served(node_env, tmp_path):
    """One token's 80 requests at once on a node whose pool has 2 connections: 2 run at once
    (``HTTP_REQUESTS_IN_FLIGHT``), 16 wait their turn, and the rest answer 429 at once (JSON,
    ``rate_limited``, ``Retry-After: 1``) instead of queueing for the pool; another user's
    requests made during the burst are all served (before, past ``DATABASE_POOL_TIMEOUT`` they
    answered 503 ``unavailable``). Then 10 at once, within what may wait: all served."""
    import json as _json
    import threading

    from tests.nodes import Http

    _room, flooder, other = _seed_room(50)
    env = {
        **node_env,
        "DATABASE_POOL_MAX_SIZE": "2",
        "DATABASE_POOL_TIMEOUT": "0.5",
        "HTTP_REQUESTS_IN_FLIGHT": "2",
        "THROTTLE_SEARCH_RATE": "100000/min",
    }
    node = start_node("inflight", env=env, log_dir=tmp_path)
    try:
        wait_healthy(node)
        bystander: list[int] = []

        def browse():
            for _ in range(10):
                bystander.append(
                    Http(node, token=other).request("GET", "/api/rooms/r0/messages/?limit=50")[0]
                )

        from concurrent.futures import ThreadPoolExecutor

        watcher = threading.Thread(target=browse)
        with ThreadPoolExecutor(max_workers=80) as pool:
            watcher.start()
            answers = list(
                pool.map(
                    lambda _: Http(node, token=flooder).request("GET", "/api/search/?q=message&limit=50"),
                    range(80),
                )
            )
        watcher.join(timeout=60)
        statuses = [status for status, _, _ in answers]
        assert bystander == [200] * 10, bystander
        assert 503 not in statuses and statuses.count(429) > 0 and statuses.count(200) > 0, sorted(statuses)
        _, headers, body = next(a for a in answers if a[0] == 429)
        assert headers["Retry-After"] == "1" and headers["Content-Type"] == "application/json"
        assert _json.loads(body) == {
            "detail": "Too many requests at once from this client; wait for the ones in flight.",
            "code": "rate_limited",
            "retry_after": 1,
        }
        assert statuses.count(200) >= 18, sorted(statuses)  # the 2 running and the 16 waiting
        # A page's parallel requests (HTTP/2: thumbnails) over the bound wait, none refused.
        with ThreadPoolExecutor(max_workers=10) as pool:
            answers = list(
                pool.map(
                    lambda _: Http(node, token=flooder).request("GET", "/api/rooms/r0/messages/"), range(10)
                )
            )
        assert [status for status, _, _ in answers] == [200] * 10
        assert "Traceback" not in node.log()
    finally:
        node.stop()


def test_http_requests_are_keyed_by_credential_and_by_address_an_ipv6_one_by_its_64():
    from chatsite.http_limits import client_keys

    def scope(client, *headers):
        return {"type": "http", "client": (client, 1234), "headers": list(headers)}

    assert client_keys(scope("2001:db8:1:2:3::9")) == (None, "addr:2001:db8:1:2::/64")
    assert client_keys(scope("2001:db8:1:2:ffff::1"))[1] == "addr:2001:db8:1:2::/64"
    assert client_keys(scope("203.0.113.5", (b"authorization", b"Token abc"))) == (
        "auth:Token abc",
        "addr:203.0.113.5",
    )
    assert client_keys(scope("203.0.113.5", (b"cookie", b"csrftoken=x; sessionid=s1")))[0] == "session:s1"
    assert client_keys(scope("203.0.113.5", (b"cookie", b"csrftoken=x")))[0] is None


async def test_turns_run_the_bound_at_once_hand_over_in_order_and_leak_nothing_on_timeout_or_cancel():
    """``_Turns(2)``: two run, the next ones wait in order; one that gives up (timeout) or whose
    request is cancelled leaves the count as it was; releasing hands the turn to the next."""
    from chatsite.http_limits import _Turns

    turns = _Turns(2)
    assert await turns.acquire(1) and await turns.acquire(1)
    order = []

    async def waiter(name, timeout):
        got = await turns.acquire(timeout)
        order.append((name, got))

    late = asyncio.ensure_future(waiter("late", 0.05))  # gives up
    first = asyncio.ensure_future(waiter("first", 5))
    second = asyncio.ensure_future(waiter("second", 5))
    cancelled = asyncio.ensure_future(waiter("cancelled", 5))
    await asyncio.sleep(0.1)
    assert late.done() and order == [("late", False)] and turns.users == 5
    cancelled.cancel()
    with pytest.raises(asyncio.CancelledError):
        await cancelled
    assert turns.users == 4 and turns.running == 2
    turns.release()
    await first
    turns.release()
    await second
    assert order == [("late", False), ("first", True), ("second", True)]
    assert (turns.running, turns.users) == (2, 2)
    turns.release()
    turns.release()
    assert (turns.running, turns.users) == (0, 0)
