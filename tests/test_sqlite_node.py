"""``make run``'s configuration on a real process: one node on a SQLite file with the in-memory
channel layer, the set-up README.md gives a newcomer. Every frame a room socket takes and the
user socket are driven through it, because each has a PostgreSQL fast path (``chatsite.async_db``)
and a path of its own for SQLite, and only this configuration runs the second: a ``read`` frame
there closed the socket with 1011 (the SQLite path handed a coroutine function to
``database_sync_to_async``), and search matched case only for ASCII letters (SQLite's ``LIKE``)."""

import asyncio
import json
import os
import subprocess
import sys
import tempfile
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import pytest
import websockets

from tests.nodes import BASE_DIR, TEST_SECRET_KEY, Client, start_node, wait_healthy


def _api(
    node, method: str, path: str, token: str | None = None, body: dict | None = None
) -> tuple[int, dict]:
    request = urllib.request.Request(
        f"{node.http}{path}",
        method=method,
        data=None if body is None else json.dumps(body).encode(),
        headers={
            "Content-Type": "application/json",
            **({"Authorization": f"Token {token}"} if token else {}),
        },
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read() or b"{}")
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read() or b"{}")


@pytest.fixture(scope="module")
def sqlite_node():
    """One node as ``make run`` starts it without configuration (SQLite, no Redis), with alice
    and bob signed up and their API tokens; yields (node, {"alice": token, "bob": token})."""
    folder = Path(tempfile.mkdtemp(prefix="chatsite-sqlite-"))
    env = {
        "DATABASE_URL": f"sqlite:///{folder / 'db.sqlite3'}",
        "REDIS_URL": "",
        "DEBUG": "0",
        "SECRET_KEY": TEST_SECRET_KEY,
        "ALLOWED_HOSTS": "127.0.0.1,localhost",
        "LOGIN_ADDRESS_RATE": "100000/min",
    }
    run_env = {**os.environ, **env}
    subprocess.run(
        [sys.executable, "manage.py", "migrate", "--noinput", "--verbosity", "0"],
        cwd=BASE_DIR,
        env=run_env,
        check=True,
        timeout=120,
    )
    subprocess.run(
        [
            sys.executable,
            "manage.py",
            "shell",
            "-c",
            "from django.contrib.auth import get_user_model as g\n"
            "for name in ('alice', 'bob'): g().objects.create_user(name, password='pw-' + name + '-123456')",
        ],
        cwd=BASE_DIR,
        env=run_env,
        check=True,
        timeout=60,
    )
    node = start_node("node-sqlite", env=env, log_dir=folder)
    try:
        wait_healthy(node)
        tokens = {}
        for name in ("alice", "bob"):
            status, data = _api(
                node, "POST", "/api/auth/token/", body={"username": name, "password": f"pw-{name}-123456"}
            )
            assert status == 200, data
            tokens[name] = data["token"]
        status, data = _api(
            node, "POST", "/api/rooms/", tokens["alice"], {"name": "Book club", "slug": "book-club"}
        )
        assert status == 201, data
        status, data = _api(node, "POST", "/api/rooms/book-club/members/", tokens["bob"], {})
        assert status == 201, data
        yield node, tokens
    finally:
        node.stop()


def _of_type(client: Client, kind: str) -> list[dict]:
    return [frame for frame in client.frames if frame["type"] == kind]


def test_every_room_frame_works_on_sqlite_and_keeps_the_socket_open(sqlite_node):
    node, tokens = sqlite_node

    async def scenario():
        alice = await Client(node, "book-club", tokens["alice"], "alice").connect()
        bob = await Client(node, "book-club", tokens["bob"], "bob").connect()
        user_socket = await websockets.connect(
            f"{node.ws}/ws/user/",
            additional_headers={"Authorization": f"Token {tokens['bob']}"},
            open_timeout=10,
        )
        try:
            sidebar = json.loads(await asyncio.wait_for(user_socket.recv(), 10))
            assert sidebar["type"] == "sidebar", sidebar
            assert [room["slug"] for room in sidebar["rooms"]] == ["book-club"]

            await alice.send("Grüße 커피 @bob", "m-1")
            assert await bob.wait_for(lambda c: len(c.messages) == 1), bob.frames
            assert await alice.wait_for(lambda c: "m-1" in c.acks), alice.frames
            seq = bob.messages[0]["seq"]

            # The frame that closed the socket with 1011: the marker moves, the socket stays.
            await bob.send_frame({"type": "read", "seq": seq})
            await bob.send_frame({"type": "reaction.add", "seq": seq, "emoji": "👍"})
            assert await bob.wait_for(lambda c: _of_type(c, "reaction.ack")), bob.frames
            assert await alice.wait_for(lambda c: _of_type(c, "reaction.updated")), alice.frames
            await bob.send_frame({"type": "reaction.remove", "seq": seq, "emoji": "👍"})
            assert await bob.wait_for(lambda c: len(_of_type(c, "reaction.ack")) == 2), bob.frames
            await bob.send_frame({"type": "fetch", "after_seq": 0, "before_seq": seq + 1})
            assert await bob.wait_for(lambda c: _of_type(c, "history")), bob.frames
            await bob.send_frame({"type": "resume", "after_seq": 0})
            assert await bob.wait_for(lambda c: _of_type(c, "resumed")), bob.frames
            await bob.send_frame({"type": "presence.list", "after": None, "limit": 10})
            assert await bob.wait_for(lambda c: _of_type(c, "presence.page")), bob.frames
            await bob.send_frame({"type": "typing"})
            assert await alice.wait_for(lambda c: _of_type(c, "typing")), alice.frames
            await bob.send("back to you", "m-2")
            assert await bob.wait_for(lambda c: "m-2" in c.acks), bob.frames

            # The read report reached the user socket and the database.
            updated = json.loads(await asyncio.wait_for(user_socket.recv(), 10))
            while updated["type"] != "read.updated":
                updated = json.loads(await asyncio.wait_for(user_socket.recv(), 10))
            assert updated["last_read_seq"] == seq, updated
            status, room = _api(node, "GET", "/api/rooms/book-club/", tokens["bob"])
            assert status == 200 and room["last_read_seq"] >= seq, room

            assert [f for f in bob.frames if f["type"] == "error"] == []
            assert bob.close_code is None and alice.close_code is None
        finally:
            await user_socket.close()
            await alice.close()
            await bob.close()

    asyncio.run(scenario())
    assert "Traceback" not in node.log(), node.log()


def test_search_on_sqlite_ignores_case_in_every_script(sqlite_node):
    node, tokens = sqlite_node
    status, data = _api(
        node,
        "POST",
        "/api/rooms/book-club/messages/",
        tokens["alice"],
        {
            "body": "Ünïcödé ΣΊΣΥΦΟΣ and Straße",
            "client_msg_id": "s-1",
        },
    )
    assert status in (200, 201), data
    for query in ("ünïcö", "σίσυφ", "STRAßE", "ÜNÏCÖDÉ"):
        status, found = _api(node, "GET", f"/api/search/?q={urllib.parse.quote(query)}", tokens["bob"])
        assert status == 200, found
        assert [r["message"]["body"] for r in found["results"]] == ["Ünïcödé ΣΊΣΥΦΟΣ and Straße"], query
    status, found = _api(node, "GET", "/api/search/?q=unicode", tokens["bob"])
    assert status == 200 and found["results"] == [], found
