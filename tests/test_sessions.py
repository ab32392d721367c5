"""Ending a session ends its sockets (issue 17, hardening F5), on real daphne nodes sharing
PostgreSQL and Redis: a log-out through node-1's page closes the sockets of that session on
node-2 (4401) and no other; a password change (Django's view, node-1) closes the user's other
sessions' sockets (4401) while the changing session stays signed in (its socket closes with 4001
and reconnects with the renewed cookie); an admin setting the password closes them all (4401).
Token sockets are not sessions: they stay. The event nodes run with ``ACCESS_RECHECK`` of an
hour, so those closes came from the event; the backstop (a node with ``ACCESS_RECHECK=1``)
closes a socket whose session row was deleted, or whose password changed, behind the services'
back."""

import asyncio
import json
import os
import uuid

import pytest
from channels.db import database_sync_to_async
from django.contrib.auth import get_user_model
from django.contrib.sessions.models import Session

from rooms import access, services
from tests import factories
from tests.nodes import (
    TEST_SECRET_KEY,
    Client,
    Http,
    cluster,
    database_url_for_tests,
    start_node,
    wait_healthy,
)
from tests.test_access import SessionClient, admin_login, closed_with, node_user, page_login

User = get_user_model()
NEW_PASSWORD = "a new Passphrase 42!"


@pytest.fixture(scope="module")
def nodes(django_db_setup, django_db_blocker):
    with django_db_blocker.unblock():
        database_url = database_url_for_tests()
    prefix = f"chatsite-test-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    with cluster(
        2,
        redis_url=os.environ["REDIS_URL"],
        database_url=database_url,
        prefix=prefix,
        extra_env={"ACCESS_RECHECK": "3600"},
    ) as started:
        yield started
        for node in started:
            assert "Traceback" not in node.log(), node.log()


@pytest.fixture
def setup(db):
    """bob (a member of alice's public room ``lobby``, with a token); root is a superuser."""
    alice, bob = factories.make_user("alice"), node_user("bob")
    node_user("root", is_staff=True, is_superuser=True)
    lobby = factories.make_room(created_by=alice, slug="lobby")
    services.member_join(room=lobby, user=bob)
    return {"alice": factories.token_for(alice), "bob": factories.token_for(bob), "bob_user": bob}


async def still_open(node, alice_token: str, *clients) -> None:
    """A message alice sends now reaches every one of ``clients`` (their sockets are open)."""
    body = f"still there {uuid.uuid4().hex[:6]}"
    status, _, raw = await asyncio.to_thread(
        Http(node, alice_token).request,
        "POST",
        "/api/rooms/lobby/messages/",
        json_body={"body": body, "client_msg_id": uuid.uuid4().hex},
    )
    assert status == 201, raw
    for client in clients:
        assert await client.wait_for(lambda c: any(m["body"] == body for m in c.messages)), client.frames[-3:]
        assert client.close_code is None


def session_of(page: Http) -> str:
    return next(c.value for c in page.jar if c.name == "sessionid")


@pytest.mark.django_db(transaction=True)
@pytest.mark.multinode
async def test_logging_out_on_node1s_page_closes_that_sessions_socket_on_node2_only(nodes, setup):
    node1, node2 = nodes
    page, session = await page_login(node1, "bob")
    other_page, other_session = await page_login(node1, "bob")  # another browser of bob's
    mine = await SessionClient(node2, "lobby", session).connect()
    second_tab = await SessionClient(node1, "lobby", session).connect()
    other = await SessionClient(node2, "lobby", other_session).connect()
    script = await Client(node2, "lobby", setup["bob"]).connect()

    status, _, body = await asyncio.to_thread(page.request, "POST", "/accounts/logout/", form={})
    assert status == 302, body[:300]
    assert await closed_with(mine) == 4401
    assert await closed_with(second_tab) == 4401
    await still_open(node1, setup["alice"], other, script)
    status, _, _ = await asyncio.to_thread(other_page.request, "GET", "/api/rooms/lobby/")
    assert status == 200  # the other browser is still signed in
    for client in (other, script):
        await client.close()


@pytest.mark.django_db(transaction=True)
@pytest.mark.multinode
async def test_a_password_change_on_node1_closes_the_other_sessions_sockets_and_keeps_the_changing_one(
    nodes, setup
):
    node1, node2 = nodes
    page, session = await page_login(node1, "bob")
    other_page, other_session = await page_login(node1, "bob")
    mine = await SessionClient(node2, "lobby", session).connect()
    other = await SessionClient(node2, "lobby", other_session).connect()
    script = await Client(node2, "lobby", setup["bob"]).connect()

    status, _, _ = await asyncio.to_thread(page.request, "GET", "/accounts/password/")
    assert status == 200
    status, headers, body = await asyncio.to_thread(
        page.request,
        "POST",
        "/accounts/password/",
        form={
            "old_password": factories.PASSWORD,
            "new_password1": NEW_PASSWORD,
            "new_password2": NEW_PASSWORD,
        },
    )
    assert status == 302 and headers["Location"] == "/accounts/password/done/", body[:500]

    assert await closed_with(other) == 4401  # another session: signed out
    assert await closed_with(mine) == 4001  # this session: renewed by Django, reconnect at once
    renewed = session_of(page)
    assert renewed != session
    # The changing session keeps working (update_session_auth_hash): pages, REST, a new socket.
    status, _, _ = await asyncio.to_thread(page.request, "GET", "/api/rooms/lobby/")
    assert status == 200
    again = await SessionClient(node2, "lobby", renewed).connect()
    await still_open(node1, setup["alice"], again, script)  # and token sockets are not sessions
    status, _, _ = await asyncio.to_thread(other_page.request, "GET", "/api/rooms/lobby/")
    assert status in (401, 403)  # the other session is signed out
    for client in (again, script):
        await client.close()


@pytest.mark.django_db(transaction=True)
@pytest.mark.multinode
async def test_an_admin_setting_a_users_password_closes_all_their_session_sockets(nodes, setup):
    node1, node2 = nodes
    _, session = await page_login(node1, "bob")
    _, other_session = await page_login(node2, "bob")
    first = await SessionClient(node2, "lobby", session).connect()
    second = await SessionClient(node1, "lobby", other_session).connect()
    script = await Client(node2, "lobby", setup["bob"]).connect()

    admin = await admin_login(node1)
    path = f"/admin/auth/user/{setup['bob_user'].pk}/password/"
    status, _, _ = await asyncio.to_thread(admin.request, "GET", path)
    assert status == 200
    status, _, body = await asyncio.to_thread(
        admin.request,
        "POST",
        path,
        form={"password1": NEW_PASSWORD, "password2": NEW_PASSWORD, "usable_password": "true"},
    )
    assert status == 302, body[:500]
    assert await closed_with(first) == 4401
    assert await closed_with(second) == 4401
    await still_open(node1, setup["alice"], script)
    status, _, _ = await asyncio.to_thread(admin.request, "GET", "/admin/")
    assert status == 200  # the admin's own session is untouched
    await script.close()


@pytest.mark.django_db(transaction=True)
@pytest.mark.multinode
async def test_the_backstop_closes_a_socket_whose_session_was_deleted_or_whose_password_changed(
    setup, tmp_path
):
    """No event: the session row deleted in the database, the password set in a shell. The
    node's periodic check (``ACCESS_RECHECK``: 1 s here) closes the sockets with 4401."""
    env = {
        "DATABASE_URL": database_url_for_tests(),
        "REDIS_URL": os.environ["REDIS_URL"],
        "CHANNEL_LAYER_PREFIX": f"chatsite-test-{os.getpid()}-{uuid.uuid4().hex[:8]}",
        "DEBUG": "0",
        "SECRET_KEY": TEST_SECRET_KEY,
        "ALLOWED_HOSTS": "127.0.0.1,localhost",
        "DATABASE_POOL_MAX_SIZE": "4",
        "ACCESS_RECHECK": "1",
    }
    node = start_node("node-b", env=env, log_dir=tmp_path)
    try:
        await asyncio.to_thread(wait_healthy, node)
        _, deleted = await page_login(node, "bob")
        _, kept = await page_login(node, "bob")
        gone = await SessionClient(node, "lobby", deleted).connect()
        stays = await SessionClient(node, "lobby", kept).connect()
        script = await Client(node, "lobby", setup["bob"]).connect()
        await asyncio.sleep(1.5)
        assert gone.close_code is None and stays.close_code is None  # rounds pass while sessions hold

        await database_sync_to_async(lambda: Session.objects.filter(session_key=deleted).delete())()
        assert await closed_with(gone, timeout=10) == 4401
        assert stays.close_code is None

        def set_password_behind_the_services_back():
            bob = User.objects.get(username="bob")
            bob.set_password(NEW_PASSWORD)
            bob.save(update_fields=["password"])

        await database_sync_to_async(set_password_behind_the_services_back)()
        assert await closed_with(stays, timeout=10) == 4401
        await asyncio.sleep(1.5)
        assert script.close_code is None  # a token socket has no session
        await script.close()
        assert "Traceback" not in node.log(), node.log()
    finally:
        node.stop()


# --- rooms.access: the session part of the one statement ---------------------------------------------


@pytest.mark.django_db
def test_a_session_sockets_verdict_needs_its_session_and_its_auth_hash(setup, django_assert_num_queries):
    from django.contrib.auth import HASH_SESSION_KEY
    from django.utils import timezone

    from rooms.models import Room

    bob = setup["bob_user"]
    lobby = Room.objects.get(slug="lobby")
    live = factories.session_key_for(bob)
    stored_hash = Session.objects.get(session_key=live).get_decoded()[HASH_SESSION_KEY]
    expired = factories.session_key_for(bob)
    Session.objects.filter(session_key=expired).update(expire_date=timezone.now())
    keys = [
        (lobby.pk, bob.pk, None, live, stored_hash),  # allowed
        (lobby.pk, bob.pk, None, "x" * 32, stored_hash),  # no such session
        (lobby.pk, bob.pk, None, expired, stored_hash),  # expired
        (lobby.pk, bob.pk, None, live, "0" * 64),  # an auth hash of another password
        (lobby.pk, bob.pk, setup["bob"], None, None),  # a token socket
        (lobby.pk, bob.pk, None),  # the old 3-tuple: no session
    ]
    with django_assert_num_queries(1):
        found = access.verdicts(keys)
    assert found == [None, "unauthenticated", "unauthenticated", "unauthenticated", None, None]
    bob.set_password(NEW_PASSWORD)
    bob.save(update_fields=["password"])
    assert access.verdicts(keys[:1]) == ["unauthenticated"]
    assert access.session_digest(live) != live and len(access.session_digest(live)) == 64


@pytest.mark.django_db
def test_logout_and_password_change_broadcast_after_commit_and_name_sessions_by_digest(
    setup, client, django_capture_on_commit_callbacks, monkeypatch
):
    from rooms import events

    sent = []
    monkeypatch.setattr(events, "_group_send", lambda group, event, started=None: sent.append((group, event)))
    bob = factories.make_user("carol")  # hashed with the tests' hasher, so this process checks it
    client.force_login(bob)
    old = client.session.session_key
    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(
            "/accounts/password/",
            {
                "old_password": factories.PASSWORD,
                "new_password1": NEW_PASSWORD,
                "new_password2": NEW_PASSWORD,
            },
        )
    assert response.status_code == 302
    assert sent == [
        (
            events.user_group_name(bob.pk),
            {"type": "user.sessions_changed", "renewed": access.session_digest(old)},
        )
    ]
    assert old not in json.dumps(sent)  # the key itself never goes to Redis
    sent.clear()
    with django_capture_on_commit_callbacks(execute=True):
        assert client.post("/accounts/logout/").status_code == 302
    assert sent == [(events.user_group_name(bob.pk), {"type": "user.sessions_changed", "renewed": None})]
    sent.clear()
    # a refused change (wrong old password) ends nothing
    bob.refresh_from_db()  # its new password: the session's auth hash must match it
    client.force_login(bob)
    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(
            "/accounts/password/",
            {
                "old_password": "wrong",
                "new_password1": "x" + NEW_PASSWORD,
                "new_password2": "x" + NEW_PASSWORD,
            },
        )
    assert response.status_code == 200 and sent == []


@pytest.mark.django_db
def test_the_recheck_of_3000_session_sockets_is_one_statement_and_its_time_is_printed(
    setup, django_assert_num_queries
):
    """The backstop's round for 3,000 session sockets: one statement, plus one HMAC per socket
    in Python. Prints the time next to the same round without sessions (no timed assertion)."""
    import time
    from datetime import timedelta

    from django.contrib.auth import BACKEND_SESSION_KEY, HASH_SESSION_KEY, SESSION_KEY
    from django.contrib.sessions.backends.db import SessionStore
    from django.utils import timezone

    from rooms.models import Room

    bob = setup["bob_user"]
    lobby = Room.objects.get(slug="lobby")
    auth_hash = bob.get_session_auth_hash()
    data = SessionStore().encode(
        {
            SESSION_KEY: str(bob.pk),
            HASH_SESSION_KEY: auth_hash,
            BACKEND_SESSION_KEY: "django.contrib.auth.backends.ModelBackend",
        }
    )
    expire = timezone.now() + timedelta(days=1)
    sessions = [
        Session(session_key=f"bench{i:027d}", session_data=data, expire_date=expire) for i in range(3000)
    ]
    Session.objects.bulk_create(sessions)
    with_sessions = [(lobby.pk, bob.pk, None, s.session_key, auth_hash) for s in sessions]
    without = [(lobby.pk, bob.pk, None)] * 3000
    timings = {}
    for name, keys in (("without sessions", without), ("with sessions", with_sessions)):
        access.verdicts(keys)  # warm
        started = time.perf_counter()
        with django_assert_num_queries(1):
            found = access.verdicts(keys)
        timings[name] = (time.perf_counter() - started) * 1000
        assert found == [None] * 3000
    print("\naccess recheck of 3,000 sockets: " + ", ".join(f"{k} {v:.1f} ms" for k, v in timings.items()))


@pytest.mark.django_db(transaction=True)
@pytest.mark.multinode
async def test_a_session_cookie_not_of_djangos_shape_is_no_session_on_pages_and_sockets(nodes, setup):
    """A session key with a NUL (``sessionid="abcdefgh\\000ijklmnop"``, decoded by the cookie
    parser) or other text than letters and digits is no session (``chatsite.sessions``): a page
    answers as to a visitor, not with a 500, and a socket is closed 4401 (not signed in), not
    4503 as if the database were down. Found by a tester; real nodes and PostgreSQL."""
    import urllib.request

    from tests.test_faults import refused_close_code

    node = nodes[0]
    for cookie in (
        'sessionid="abcdefgh\\000ijklmnop"',
        "sessionid=abc-def-ghi-jkl",
        "sessionid=abcdefghij\u00e9",
    ):
        raw = cookie.encode("utf-8").decode("latin-1")

        def page():
            request = urllib.request.Request(f"{node.http}/", headers={"Cookie": raw})
            with urllib.request.urlopen(request, timeout=10) as response:
                return response.status

        assert await asyncio.to_thread(page) == 200, cookie
        headers = {"Cookie": raw, "Origin": node.http}
        assert await refused_close_code(node, headers, "/ws/rooms/lobby/") == 4401, cookie
    assert "cannot be reached" not in node.log()


def handshake_status(node, headers: list[tuple[str, str]], path: str = "/ws/rooms/lobby/") -> int:
    """The HTTP status a real node answers a WebSocket handshake on ``path`` with ``headers``
    (101 when it is accepted)."""
    import socket

    lines = [
        f"GET {path} HTTP/1.1",
        f"Host: 127.0.0.1:{node.port}",
        "Upgrade: websocket",
        "Connection: Upgrade",
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==",
        "Sec-WebSocket-Version: 13",
        *(f"{name}: {value}" for name, value in headers),
    ]
    with socket.create_connection(("127.0.0.1", node.port), timeout=10) as sock:
        sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
        answer = b""
        while b"\r\n" not in answer:
            chunk = sock.recv(4096)
            if not chunk:
                break
            answer += chunk
    return int(answer.split(b" ", 2)[1])


@pytest.mark.django_db(transaction=True)
@pytest.mark.multinode
async def test_a_handshake_from_a_foreign_null_or_unparsable_origin_is_http_403(nodes, setup):
    """docs/protocol.md: a handshake whose ``Origin`` is not the page's own is refused with
    HTTP 403, with a session cookie or a token, whatever the Origin: another site, ``null`` (a
    sandboxed frame; a ``file://`` page), one whose port is not a number
    (``http://127.0.0.1:8031.evil.com``) or is out of range, one without a host, two Origin
    headers; and a cookie handshake with no Origin. Found by a tester: autobahn answered 400
    itself to ``null`` and to Origins it cannot parse (``chatsite.serve``). Real node, real
    session cookie; the page's own Origin is still accepted (101)."""
    node = nodes[0]
    _, session = await page_login(node, "bob")
    cookie = ("Cookie", f"sessionid={session}")
    token = ("Authorization", f"Token {setup['bob']}")
    assert await asyncio.to_thread(handshake_status, node, [cookie, ("Origin", node.http)]) == 101
    origins = [
        [("Origin", "null")],
        [("Origin", "NULL")],
        [("Origin", f"http://127.0.0.1:{node.port}.evil.com")],
        [("Origin", "http://127.0.0.1:99999")],
        [("Origin", "http://evil.example")],
        [("Origin", "file:///tmp/page.html")],
        [("Origin", "http://")],
        [("Origin", "nonsense")],
        [("Origin", node.http), ("Origin", node.http)],
    ]
    statuses = {}
    for origin in origins:
        for credentials in (cookie, token):
            status = await asyncio.to_thread(handshake_status, node, [credentials, *origin])
            statuses[str(origin), credentials[0]] = status
    assert set(statuses.values()) == {403}, sorted(statuses.items())
    assert await asyncio.to_thread(handshake_status, node, [cookie]) == 403
