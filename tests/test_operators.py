"""The operators' view (issue 15, item 4), on real daphne nodes: node names only for staff (or
SHOW_NODE_NAMES=1), JSON logs with node, request or socket id, user id and room
(chatsite/logcontext.py), errors to Sentry when SENTRY_DSN is set (chatsite/sentry.py)."""

import asyncio
import gzip
import http.client
import json
import os
import re
import subprocess
import sys
import threading
import time
import uuid
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import websockets
from channels.db import database_sync_to_async
from django.conf import settings

from tests import factories
from tests.nodes import BASE_DIR, cluster, database_url_for_tests

pytestmark = [pytest.mark.multinode, pytest.mark.django_db(transaction=True)]

UNTRUSTED = "127.0.0.9"  # a loopback address of its own: not in TRUSTED_PROXIES


@contextmanager
def one_node(**extra_env):
    prefix = f"chatsite-test-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    with cluster(
        1,
        redis_url=os.environ["REDIS_URL"],
        database_url=database_url_for_tests(),
        prefix=prefix,
        # this process's SECRET_KEY: the sessions it makes must be valid there
        extra_env={"TRUSTED_PROXIES": "127.0.0.1", "SECRET_KEY": settings.SECRET_KEY, **extra_env},
    ) as nodes:
        yield nodes[0]


def get(node, path, *, user=None, headers=None, source="127.0.0.1"):
    """``(status, headers dict (lower-case names), body text)`` of a GET on ``node``."""
    headers = dict(headers or {})
    if user is not None:
        headers["Cookie"] = f"{settings.SESSION_COOKIE_NAME}={factories.session_key_for(user)}"
    conn = http.client.HTTPConnection("127.0.0.1", node.port, timeout=10, source_address=(source, 0))
    try:
        conn.request("GET", path, headers=headers)
        response = conn.getresponse()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read().decode()
    finally:
        conn.close()


def json_lines(node, predicate, timeout=5.0):
    """The node's JSON log records for which ``predicate(record)`` holds (waits for one)."""
    deadline = time.monotonic() + timeout
    while True:
        found = []
        for line in node.log().splitlines():
            try:
                record = json.loads(line)
            except ValueError:
                continue
            if isinstance(record, dict) and predicate(record):
                found.append(record)
        if found or time.monotonic() > deadline:
            return found
        time.sleep(0.05)


# --- node names: staff only ----------------------------------------------------------------------


def test_staff_see_node_names_on_a_real_room_page_and_other_users_do_not():
    staff = factories.make_user("operator", is_staff=True)
    member = factories.make_user("member")
    room = factories.make_room(created_by=member, slug="ops-room", name="Ops")
    factories.services.message_post(room=room, author=member, body="hello", client_msg_id="m-1")
    with one_node() as node:
        status, headers, page = get(node, "/rooms/ops-room/", user=staff)
        assert status == 200 and headers["x-served-by"] == "node-1"
        assert 'page served by <span class="node">node-1</span>' in page
        assert f'<span class="message__via">via {settings.SERVER_ID}</span>' in page
        assert '"show_node_names": true' in page  # the script then says "connected to node-1"

        status, headers, page = get(node, "/rooms/ops-room/", user=member)
        assert status == 200 and headers["x-served-by"] == "node-1"  # the header stays, for operators
        assert "hello" in page
        assert "page served by" not in page and "message__via" not in page and "node-1" not in page
        assert '"show_node_names": false' in page

        status, _, page = get(node, "/accounts/login/")  # anonymous
        assert status == 200 and "page served by" not in page


def test_show_node_names_setting_shows_them_to_everyone():
    member = factories.make_user("member")
    factories.make_room(created_by=member, slug="demo", name="Demo")
    with one_node(SHOW_NODE_NAMES="1") as node:
        _, _, page = get(node, "/rooms/demo/", user=member)
        assert 'page served by <span class="node">node-1</span>' in page
        assert '"show_node_names": true' in page


# --- JSON logs -------------------------------------------------------------------------------------


def test_json_log_lines_of_a_real_node_carry_server_id_request_id_and_user_id():
    user = factories.make_user("alice")
    with one_node(LOG_FORMAT="json", LOG_LEVEL="DEBUG") as node:
        # Through the trusted balancer (127.0.0.1): its X-Request-ID is kept and echoed.
        rid = f"lb-{uuid.uuid4().hex}"
        status, headers, _ = get(node, "/", user=user, headers={"X-Request-ID": rid})  # the room list
        assert status == 200 and headers["x-request-id"] == rid
        [record] = json_lines(
            node, lambda r: r.get("logger") == "chatsite.request" and r.get("request_id") == rid
        )
        assert record["message"].startswith("GET / 200")
        assert record["server_id"] == "node-1"
        assert record["user_id"] == user.pk  # the page loaded its user; a log line never queries
        assert record["level"] == "DEBUG" and record["time"]

        # From an untrusted peer: its X-Request-ID is ignored and the node makes one.
        path = f"/probe-{uuid.uuid4().hex}/"
        _, headers, _ = get(node, path, headers={"X-Request-ID": "forged"}, source=UNTRUSTED)
        assert re.fullmatch(r"[0-9a-f]{32}", headers["x-request-id"]), headers
        [record] = json_lines(node, lambda r: r.get("logger") == "chatsite.request" and path in r["message"])
        assert record["request_id"] == headers["x-request-id"] and record["user_id"] is None

        # Every line is JSON (start-up lines included), none of them plain text.
        lines = [line for line in node.log().splitlines() if line.strip()]
        assert lines and all(line.startswith("{") for line in lines), lines[:5]


async def test_json_log_lines_of_a_socket_carry_its_socket_id_user_id_and_room():
    def make():
        user = factories.make_user("bob")
        factories.make_room(created_by=user, slug="logroom", name="Log room")
        return user.pk, factories.token_for(user)

    user_pk, token = await database_sync_to_async(make)()
    with one_node(LOG_FORMAT="json") as node:
        async with websockets.connect(
            f"{node.ws}/ws/rooms/logroom/",
            open_timeout=10,
            additional_headers={"Authorization": f"Token {token}", "X-Request-ID": "lb-socket-1"},
        ) as ws:
            assert json.loads(await asyncio.wait_for(ws.recv(), 10))["type"] == "hello"
            await ws.send("not json")  # answered with an error frame, and logged as a bad frame
            while True:
                frame = json.loads(await asyncio.wait_for(ws.recv(), 10))
                if frame["type"] == "error":
                    break
        records = await asyncio.to_thread(json_lines, node, lambda r: "bad frame" in r.get("message", ""))
        assert records, node.log()[-2000:]
        record = records[0]
        assert record["server_id"] == "node-1"
        assert record["socket_id"] == "lb-socket-1"  # the handshake's id, from the trusted proxy
        assert record["user_id"] == user_pk and record["room"] == "logroom"


# --- Sentry ----------------------------------------------------------------------------------------


def _sentry_active(**env) -> str:
    probe = (
        "import django; django.setup(); import sentry_sdk; from django.conf import settings; "
        "print(settings.SENTRY_ENABLED, sentry_sdk.get_client().is_active())"
    )
    full = {**os.environ, "DJANGO_SETTINGS_MODULE": "chatsite.settings", **env}
    full.pop("SENTRY_DSN", None) if "SENTRY_DSN" not in env else None
    return subprocess.run(
        [sys.executable, "-c", probe],
        cwd=BASE_DIR,
        env=full,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout.strip()


def test_without_sentry_dsn_nothing_is_initialised():
    assert _sentry_active() == "False False"
    assert _sentry_active(SENTRY_DSN="http://key@127.0.0.1:9/1") == "True True"


class _Collector(BaseHTTPRequestHandler):
    received: list = []

    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        if self.headers.get("Content-Encoding") == "gzip":
            body = gzip.decompress(body)
        type(self).received.append((self.path, body))
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(b"{}")

    def log_message(self, *args):
        pass


def test_an_error_on_a_real_node_is_delivered_to_the_sentry_dsn():
    _Collector.received = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Collector)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    dsn = f"http://publickey@127.0.0.1:{server.server_port}/42"
    try:
        with one_node(SENTRY_DSN=dsn, DJANGO_SETTINGS_MODULE="tests.error_settings") as node:
            status, headers, _ = get(node, "/test-error/", headers={"X-Request-ID": "lb-err-1"})
            assert status == 500
            deadline = time.monotonic() + 15
            events = []
            while time.monotonic() < deadline and not events:
                events = [
                    body
                    for path, body in _Collector.received
                    if path.startswith("/api/42/envelope/") and b"test error for Sentry" in body
                ]
                time.sleep(0.1)
            assert events, (_Collector.received, node.log()[-3000:])
            event = json.loads(next(line for line in events[0].splitlines() if b'"exception"' in line))
            assert event["server_name"] == "node-1"
            assert event["tags"]["request_id"] == "lb-err-1"
            assert event["exception"]["values"][-1]["type"] == "RuntimeError"
    finally:
        server.shutdown()
        server.server_close()


# --- the socket route in the OpenAPI schema ---------------------------------------------------------


def test_openapi_describes_the_socket_route_with_its_slug_and_frames_and_lists_no_ws_path(client):
    response = client.get("/api/schema/?format=json")
    assert response.status_code == 200
    schema = json.loads(response.content)
    assert not [p for p in schema["paths"] if p.startswith("/ws")]  # not REST: described, not a path
    description = schema["info"]["description"]
    assert "`/ws/rooms/{slug}/`" in description and "ws://HOST/ws/rooms/{slug}/" in description
    for frame in ("hello", "message.send", "ack", "resume", "resumed", "fetch", "history", "error"):
        assert f"`{frame}`" in description, frame
    for code in ("4401", "4404", "4429", "4503", "1012"):
        assert code in description
    # Swagger UI renders the description as Markdown and drops anything that looks like an HTML
    # tag: "/ws/rooms/<slug>/" showed as "/ws/rooms//". Outside code spans there is no "<".
    outside_code = re.sub(r"`[^`]*`", "", description)
    assert "<" not in outside_code, outside_code
