"""Fixtures. Tests run against the real PostgreSQL and Redis named by DATABASE_URL / REDIS_URL
(``make test`` sets both); nothing here mocks either."""

import asyncio
import json
import os
import uuid

import pytest
from channels.db import database_sync_to_async
from channels.layers import channel_layers
from channels.testing import WebsocketCommunicator
from django.conf import settings
from django.db import connections
from django.utils import translation

from chatsite import async_db
from chatsite.asgi import application
from tests import factories, tools

ORIGIN = b"http://127.0.0.1"


# --- what this run cannot test, said loudly (tests/tools.py) -----------------------------------


def _skipped_banner() -> list[str]:
    groups = tools.skipped_groups()
    if not groups:
        return [f"all test groups will run: nginx and Chromium found ({tools.NGINX}, {tools.CHROMIUM})"]
    lines = ["!" * 78, "SKIPPED in this run (a green result tests less than the suite):"]
    lines += [f"  - {group}: {reason}" for group, reason in groups]
    lines.append("!" * 78)
    return lines


def pytest_sessionstart(session):
    # Written at the start whatever the verbosity (-q hides pytest's own header).
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    groups = tools.skipped_groups()
    if reporter is not None:
        for line in _skipped_banner():
            reporter.write_line(line, red=bool(groups), bold=bool(groups))
    if tools.CI and groups:
        # CI never skips them: a missing tool fails the run before any test.
        pytest.exit(
            "CI=true and tests would be skipped:\n"
            + "\n".join(f"  - {group}: {reason}" for group, reason in groups),
            returncode=3,
        )


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    groups = tools.skipped_groups()
    skipped = len(terminalreporter.stats.get("skipped", []))
    if groups and skipped:
        terminalreporter.write_sep("!", f"WARNING: {skipped} tests were skipped", red=True, bold=True)
        for group, reason in groups:
            terminalreporter.write_line(f"  - {group}: {reason}", red=True)


def pytest_configure(config):
    # A channel-layer prefix of this run's own, so parallel runs on one Redis never cross.
    layer = settings.CHANNEL_LAYERS["default"]
    if "CONFIG" in layer:
        layer["CONFIG"]["prefix"] = f"{layer['CONFIG'].get('prefix', 'chatsite')}-test-{os.getpid()}"
    channel_layers.backends.clear()
    # Throttle counters and presence live in Redis too: keep this run's apart from earlier runs'.
    run_prefix = f"chatsite-test-{os.getpid()}-{uuid.uuid4().hex[:6]}"
    settings.CACHES["default"]["KEY_PREFIX"] = run_prefix
    settings.CHANNEL_LAYER_PREFIX = run_prefix
    # Pages render without `collectstatic` having run (hashed names need its manifest).
    settings.STORAGES = {
        **settings.STORAGES,
        "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
    }
    # Password hashing at production strength costs ~0.25 s per user; tests make hundreds.
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture(scope="session", autouse=True)
def _close_database_pool(django_db_setup, django_db_blocker):
    """Close this process's PostgreSQL pool before the test database is dropped (pooled
    connections from consumer threads would otherwise keep it "accessed by other users")."""
    yield
    with django_db_blocker.unblock():
        for conn in connections.all():
            if getattr(conn, "pool", None) is not None:
                conn.close_pool()


@pytest.fixture(autouse=True)
def _english_after_each_test():
    """Every test starts and ends in the default language. Django's LocaleMiddleware activates a
    request's language in the thread that serves it and leaves it active; under the test client
    that thread is the test's, so a Korean request (tests/test_i18n.py) would otherwise turn the
    texts of every later test in the process Korean."""
    translation.deactivate()
    yield
    translation.deactivate()


@pytest.fixture(autouse=True)
def _fresh_node_caches():
    """Every test starts with this process's per-node handshake caches empty (``rooms.auth``'s
    credential caches, ``rooms.consumers.room_ids``): the database is emptied between tests, so
    what they remember belongs to another test's rows."""
    from rooms import auth, consumers

    for cache in (auth.token_users, auth.session_users, consumers.room_ids):
        cache.clear()
    yield


@pytest.fixture
def user(db):
    return factories.make_user("alice")


@pytest.fixture
def other_user(db):
    return factories.make_user("bob")


@pytest.fixture
def room(db, user):
    return factories.make_room(created_by=user, slug="lobby", name="Lobby")


class Connection:
    """A ``WebsocketCommunicator`` that decodes frames; always ``await close()`` it."""

    PRESENCE_TYPES = frozenset({"presence", "presence.diff"})
    MEMBER_TYPES = frozenset(
        {"member.updated", "members.updated", "members.joined", "member.removed", "room.updated"}
    )

    def __init__(
        self, communicator: WebsocketCommunicator, keep_presence: bool = False, keep_members: bool = False
    ):
        self.communicator = communicator
        self.connected = False
        self.subprotocol = None
        # Presence frames come and go with every socket of the room, member frames with every
        # first join; tests of other things skip them (tests/test_presence.py keeps presence,
        # tests/test_members_live.py the member frames).
        self.keep_presence = keep_presence
        self.skipped = (frozenset() if keep_presence else self.PRESENCE_TYPES) | (
            frozenset() if keep_members else self.MEMBER_TYPES
        )

    async def connect(self, timeout: float = 3):
        self.connected, self.subprotocol = await self.communicator.connect(timeout=timeout)
        return self.connected

    async def receive(self, timeout: float = 3) -> dict:
        while True:
            frame = await self.communicator.receive_json_from(timeout=timeout)
            if frame.get("type") not in self.skipped:
                return frame

    async def receive_type(self, frame_type: str, timeout: float = 3) -> dict:
        """The next frame, which must be of ``frame_type``."""
        frame = await self.receive(timeout=timeout)
        assert frame["type"] == frame_type, frame
        return frame

    async def send(self, frame: dict) -> None:
        await self.communicator.send_json_to(frame)

    async def send_text(self, text: str) -> None:
        # send_to() refuses an empty string, which a real client can send: put the frame directly.
        await self.communicator.send_input({"type": "websocket.receive", "text": text})

    async def nothing_more(self, timeout: float = 0.2) -> bool:
        """No frame (other than skipped presence frames) arrives within ``timeout`` seconds.
        (A timed-out receive would cancel the application, so this waits with receive_nothing.)"""
        if not self.skipped:
            return await self.communicator.receive_nothing(timeout=timeout)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            if await self.communicator.receive_nothing(timeout=max(0.01, deadline - loop.time())):
                return True
            output = await self.communicator.receive_output(timeout=1)
            if output["type"] != "websocket.send":
                return False
            if json.loads(output.get("text") or "{}").get("type") not in self.skipped:
                return False

    async def close_code(self, timeout: float = 3) -> int:
        """The close code of a socket the server closes (skipped presence frames before it)."""
        while True:
            output = await self.communicator.receive_output(timeout=timeout)
            if (
                output["type"] == "websocket.send"
                and json.loads(output.get("text") or "{}").get("type") in self.skipped
            ):
                continue
            assert output["type"] == "websocket.close", output
            return output.get("code")

    async def close(self) -> None:
        await self.communicator.disconnect()


@pytest.fixture
async def ws():
    """``conn = await ws(path, user=..., token=..., origin=...)`` makes a socket through
    ``chatsite.asgi.application`` (routing, Origin check and auth included). Sockets are closed
    at teardown."""
    opened = []

    async def open_socket(
        path,
        *,
        user=None,
        token=None,
        origin=ORIGIN,
        cookie=None,
        headers=(),
        host=b"127.0.0.1",
        keep_presence=False,
        keep_members=False,
    ):
        hdrs = list(headers)
        if host is not None:
            hdrs.append((b"host", host))
        if origin is not None:
            hdrs.append((b"origin", origin))
        if user is not None:
            key = await database_sync_to_async(factories.session_key_for)(user)
            cookie = f"{settings.SESSION_COOKIE_NAME}={key}"
        if cookie is not None:
            hdrs.append((b"cookie", cookie.encode()))
        if token is not None:
            hdrs.append((b"authorization", f"Token {token}".encode()))
        conn = Connection(
            WebsocketCommunicator(application, path, headers=hdrs),
            keep_presence=keep_presence,
            keep_members=keep_members,
        )
        opened.append(conn)
        return conn

    yield open_socket
    # Teardown is sync; communicators stopped by the test already. Leftover ones are closed by
    # the async helper below where a test forgot.
    for conn in opened:
        future = conn.communicator.future
        if future is not None and not future.done():
            future.cancel()
    await async_db.aclose()  # this test's loop's pool (message_post_async)


@pytest.fixture
async def joined(ws, room, user):
    """An open socket of ``user`` in ``room`` with its hello read."""
    conn = await ws(f"/ws/rooms/{room.slug}/", user=user)
    assert await conn.connect()
    await conn.receive_type("hello")
    yield conn
    await conn.close()


def new_client_msg_id() -> str:
    return str(uuid.uuid4())


@pytest.fixture
def media_in_tmp(settings, tmp_path):
    """The default storage (uploads, thumbnails) in this test's own folder."""
    settings.STORAGES = {
        **settings.STORAGES,
        "default": {
            "BACKEND": "django.core.files.storage.FileSystemStorage",
            "OPTIONS": {"location": str(tmp_path)},
        },
    }
