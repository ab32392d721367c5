"""Every ending of a consumer runs its clean-up, and the node's housekeeping keeps running
(issue 17, item 3), on real daphne nodes:

- an exception escaping a handler (a ``fetch`` / ``resume`` whose database read fails: the node's
  PostgreSQL is reached through a TCP proxy that the test cuts) closes the socket with a
  documented code, and the user's presence, the room's groups and ``chatsite_ws_open_sockets``
  are cleaned up, again and again;
- daphne's application checker survives a check that raises (the test hook
  ``CHATSITE_TEST_FAULT_APPLICATION_CHECKER``, ``chatsite.serve.safe_application_checker``) and
  still reaps the applications that finish afterwards."""

import asyncio
import json
import os
import re
import time
import urllib.request
import uuid

import pytest
from django.db import connection

from tests import factories
from tests.nodes import (
    TEST_SECRET_KEY,
    Client,
    Http,
    TcpProxy,
    database_url_for_tests,
    start_node,
    wait_healthy,
)

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.multinode]

METRICS_TOKEN = "cleanup-test-metrics"


@pytest.fixture
def node_env(db):
    return {
        "DATABASE_URL": database_url_for_tests(),
        "REDIS_URL": os.environ["REDIS_URL"],
        "CHANNEL_LAYER_PREFIX": f"chatsite-test-{os.getpid()}-{uuid.uuid4().hex[:8]}",
        "DEBUG": "0",
        "SECRET_KEY": TEST_SECRET_KEY,
        "ALLOWED_HOSTS": "127.0.0.1,localhost",
        "DATABASE_POOL_MAX_SIZE": "4",
        "METRICS_TOKEN": METRICS_TOKEN,
        "PRESENCE_BATCH": "0.2",
        "WS_SEND_RATE": "0",
    }


@pytest.fixture
def people(db):
    owner = factories.make_user("owner")
    factories.make_room(created_by=owner, slug="r0")
    return {name: factories.token_for(factories.make_user(name)) for name in ("bob", "carol")}


def metric(node, name: str) -> float:
    request = urllib.request.Request(
        f"{node.http}/metrics", headers={"Authorization": f"Bearer {METRICS_TOKEN}"}
    )
    with urllib.request.urlopen(request, timeout=5) as response:
        text = response.read().decode()
    found = re.search(rf"^{re.escape(name)} (\S+)$", text, re.M)
    assert found, f"{name} not in /metrics"
    return float(found.group(1))


async def eventually(check, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if await asyncio.to_thread(check):
            return True
        await asyncio.sleep(0.2)
    return await asyncio.to_thread(check)


def online(node, token: str) -> list[str]:
    status, _, body = Http(node, token).request("GET", "/api/rooms/r0/presence/")
    assert status == 200, body
    return [u["username"] for u in json.loads(body)["online"]]


async def connect_when_possible(node, token: str, timeout: float = 15.0) -> Client:
    import websockets

    deadline = time.monotonic() + timeout
    while True:
        try:
            return await Client(node, "r0", token).connect()
        except (TimeoutError, websockets.ConnectionClosed, AssertionError, OSError):
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.3)


async def test_a_database_failure_under_fetch_or_resume_closes_the_socket_and_cleans_up_every_time(
    people, node_env, tmp_path
):
    """The error escapes the handler (on this branch: closed 4503 by ``RoomConsumer.__call__``;
    where the handler answers the outage itself with ``unavailable``, the client leaves): the
    user is shown gone on another node and the node's open-socket gauge is back, twice in a row."""
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
        carol = await Client(other, "r0", people["carol"]).connect()  # watches from a node with a database
        baseline = metric(node, "chatsite_ws_open_sockets")
        for round_, frame in enumerate(
            [{"type": "fetch", "after_seq": 0}, {"type": "resume", "after_seq": 0}]
        ):
            bob = await connect_when_possible(
                node, people["bob"]
            )  # the pool may hand out dead connections first
            assert await eventually(lambda: "bob" in online(other, people["carol"]))
            assert metric(node, "chatsite_ws_open_sockets") == baseline + 1

            proxy.cut()
            await bob._socket.send(json.dumps(frame))
            # The read fails under the handler. Closed with 4503 (reconnect with backoff), or, where
            # the handler answers the outage itself, an `unavailable` error frame (then the
            # client leaves): either way nothing is left behind.
            assert await bob.wait_for(
                lambda c: c.close_code is not None or any(f.get("code") == "unavailable" for f in c.frames),
                timeout=10,
            ), bob.frames
            if bob.close_code is None:
                await bob.close()
            assert bob.close_code in (4503, 1000), (round_, bob.close_code)
            assert await eventually(lambda: metric(node, "chatsite_ws_open_sockets") == baseline, timeout=10)
            proxy.restore()
            assert await eventually(lambda: "bob" not in online(other, people["carol"])), (
                "bob still shown online"
            )
            assert await carol.wait_for(
                lambda c: (
                    sum(
                        f["type"] == "presence.diff" and "bob" in [u["username"] for u in f["leaves"]]
                        for f in c.frames
                    )
                    == round_ + 1
                )
            ), carol.frames
        assert "Exception inside application" not in node.log()
        await carol.close()
    finally:
        node.stop()
        other.stop()
        proxy.close()


async def reset_after(node, token: str, frame: dict) -> None:
    """A client that sends ``frame`` and resets the connection (RST) at once, as a killed tab
    does: the node's next write (its reply, a live frame, a ping) meets a socket the peer has
    reset."""
    import socket
    import struct

    client = await Client(node, "r0", token).connect()
    transport = client._socket.transport
    transport.get_extra_info("socket").setsockopt(
        socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0)
    )
    client._reader.cancel()
    await client._socket.send(json.dumps(frame))
    transport.abort()


@pytest.mark.parametrize(
    "frame",
    [{"type": "fetch", "after_seq": 0}, {"type": "typing"}],
    ids=["reply-at-once", "no-reply-until-a-ping"],
)
async def test_writes_to_sockets_reset_by_the_client_clean_up_and_leave_no_connection_behind(
    people, node_env, tmp_path, frame
):
    """The real aborted-write path (uvloop: "unable to perform operation on <UVPoll closed=True>"):
    clients reset their connections while the node writes them a page of history. Before, the
    error escaped the consumer (no clean-up: the user stayed online, the gauge high) and the
    connection was never closed. Now each such connection is aborted, and every socket, user and
    connection is cleaned up. Resets go on until the node has met the error at least once. A
    frame with no reply (``typing``) leaves the dead socket unwritten until the next ping
    (``WS_PING_INTERVAL``, 1 s here)."""
    node = start_node("node-1", env={**node_env, "WS_PING_INTERVAL": "1"}, log_dir=tmp_path)
    try:
        await asyncio.to_thread(wait_healthy, node)
        carol = await Client(node, "r0", people["carol"]).connect()
        for i in range(30):  # a page of history worth writing
            await carol.send("h" * 3000, f"h-{i}")
        assert await carol.wait_for(lambda c: len(c.acks) == 30)
        resets = 0
        while metric(node, "chatsite_connections_aborted_total") == 0 and resets < 3000:
            await asyncio.gather(*[reset_after(node, people["bob"], frame) for _ in range(5)])
            resets += 5
            if frame["type"] == "typing":
                await asyncio.sleep(0.5)  # the pings find them
        aborted = metric(node, "chatsite_connections_aborted_total")
        print(f"CLEANUP reset: {resets} resets, {aborted:.0f} met a dead socket poll")
        assert aborted >= 1, f"the aborted-write path was not reached in {resets} resets"
        assert await eventually(lambda: metric(node, "chatsite_ws_open_sockets") == 1, timeout=15), metric(
            node, "chatsite_ws_open_sockets"
        )
        assert await eventually(lambda: online(node, people["carol"]) == ["carol"], timeout=15)
        # Only carol's socket and the /metrics request itself are left.
        assert await eventually(lambda: metric(node, "chatsite_server_connections") <= 2, timeout=15), metric(
            node, "chatsite_server_connections"
        )
        assert "Exception inside application" not in node.log() and "Traceback" not in node.log(), node.log()
        await carol.close()
    finally:
        node.stop()


async def test_the_application_checker_survives_a_failing_check_and_still_reaps_later_applications(
    people, node_env, tmp_path
):
    node = start_node(
        "node-1", env={**node_env, "CHATSITE_TEST_FAULT_APPLICATION_CHECKER": "2"}, log_dir=tmp_path
    )
    try:
        await asyncio.to_thread(wait_healthy, node)  # its health checks are the first applications to end
        assert await eventually(lambda: metric(node, "chatsite_application_checker_errors_total") == 2)
        # Later applications, WebSocket and HTTP, end and are reaped: the tracked connections go
        # back down (only the /metrics request reading them is left).
        for _ in range(3):
            client = await Client(node, "r0", people["bob"]).connect()
            await client.close()
            await asyncio.to_thread(node.health)
        assert await eventually(lambda: metric(node, "chatsite_server_connections") <= 1, timeout=15), metric(
            node, "chatsite_server_connections"
        )
        assert metric(node, "chatsite_ws_open_sockets") == 0
        assert "application checker:" in node.log() and "injected for a test" in node.log()
        assert node.process.poll() is None
    finally:
        node.stop()


def test_a_consumer_may_close_with_1011_under_chatsite_serve():
    """autobahn's ``sendClose`` refuses 1011 as an application code; ``server_close_codes`` sends
    the protocol-level codes as a close frame and passes the others on."""
    from chatsite.serve import server_close_codes

    class Protocol:
        sent = None

        def serverClose(self, code=None):
            self.sent = ("sendClose", code)

        def sendCloseFrame(self, code=None, isReply=False):
            self.sent = ("sendCloseFrame", code, isReply)

    protocol = server_close_codes(Protocol)()
    protocol.serverClose(1011)
    assert protocol.sent == ("sendCloseFrame", 1011, False)
    protocol.serverClose(4404)
    assert protocol.sent == ("sendClose", 4404)
