"""``/metrics`` (rooms.views.metrics_view) and the metrics of rooms.metrics.

Metrics live in prometheus_client's default registry, one per process: in this test process the
consumer (WebsocketCommunicator), the services and the Django test client all count into the
same registry, and counts carry over from test to test. So every test compares values before
and after what it does, never against zero. The test client's requests come from
``REMOTE_ADDR=127.0.0.1`` unless a test says otherwise.
"""

import asyncio
import ipaddress
import os
import urllib.error
import urllib.request
import uuid

import pytest
from channels.db import database_sync_to_async
from channels.layers import channel_layers
from django.test import Client
from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families
from rest_framework.test import APIClient
from rest_framework.throttling import ScopedRateThrottle

from rooms import events, services
from tests import factories
from tests.conftest import new_client_msg_id
from tests.nodes import TEST_SECRET_KEY, cluster, database_url_for_tests, free_port
from tests.nodes import Client as NodeClient
from tests.test_consumers import send_and_collect
from tests.test_settings import run

TOKEN = "metrics-test-token"


def value(name: str, **labels) -> float:
    """A sample's current value in this process's registry (0 when it has none yet)."""
    return REGISTRY.get_sample_value(name, labels) or 0.0


def parse(text: str) -> dict:
    """Exposition text → ``{(sample name, ((label, value), ...)): value}``."""
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def scrape(**extra) -> dict:
    response = Client().get("/metrics", HTTP_AUTHORIZATION=f"Bearer {TOKEN}", **extra)
    assert response.status_code == 200
    return parse(response.content.decode())


@pytest.fixture
def open_metrics(settings):
    """``/metrics`` readable with ``Bearer TOKEN`` only."""
    settings.METRICS_TOKEN = TOKEN
    settings.METRICS_ALLOW = []


@pytest.fixture
def closed_metrics(settings):
    settings.METRICS_TOKEN = ""
    settings.METRICS_ALLOW = []


# --- who may read /metrics -------------------------------------------------------------------------


def test_metrics_is_404_without_configuration(closed_metrics):
    client = Client()
    assert client.get("/metrics").status_code == 404
    assert client.get("/metrics", HTTP_AUTHORIZATION="Bearer ").status_code == 404
    assert client.get("/metrics", HTTP_AUTHORIZATION="Bearer anything").status_code == 404
    assert client.post("/metrics").status_code == 404  # no CSRF 403 hinting that it exists


def test_metrics_is_404_with_a_wrong_token_and_200_with_the_right_one(open_metrics):
    client = Client()
    for header in (None, "Bearer wrong", f"Bearer {TOKEN}x", f"Token {TOKEN}", TOKEN, f"Basic {TOKEN}"):
        extra = {} if header is None else {"HTTP_AUTHORIZATION": header}
        assert client.get("/metrics", **extra).status_code == 404, header
    response = client.get("/metrics", HTTP_AUTHORIZATION=f"Bearer {TOKEN}")
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/plain; version=0.0.4")
    assert response["Cache-Control"].startswith("max-age=0")
    samples = parse(response.content.decode())
    assert samples[("chatsite_node_info", (("server_id", "test-node"),))] == 1.0
    assert ("chatsite_ws_open_sockets", ()) in samples
    assert ("chatsite_messages_stored_total", ()) in samples
    assert ("chatsite_ws_origin_refused_total", ()) in samples
    assert client.get("/metrics", HTTP_AUTHORIZATION=f"bearer {TOKEN}").status_code == 200
    assert client.post("/metrics", HTTP_AUTHORIZATION=f"Bearer {TOKEN}").status_code == 405


def test_metrics_speaks_openmetrics_when_asked(open_metrics):
    response = Client().get(
        "/metrics",
        HTTP_AUTHORIZATION=f"Bearer {TOKEN}",
        HTTP_ACCEPT="application/openmetrics-text; version=1.0.0",
    )
    assert response.status_code == 200
    assert response["Content-Type"].startswith("application/openmetrics-text")
    assert response.content.decode().rstrip().endswith("# EOF")


def test_metrics_allowed_from_addresses_in_metrics_allow(settings):
    settings.METRICS_TOKEN = ""
    settings.METRICS_ALLOW = [ipaddress.ip_network("127.0.0.1/32")]
    assert Client().get("/metrics").status_code == 200  # the test client's REMOTE_ADDR
    assert Client().get("/metrics", REMOTE_ADDR="10.1.2.3").status_code == 404
    assert Client().get("/metrics", REMOTE_ADDR="::ffff:127.0.0.1").status_code == 200
    settings.METRICS_ALLOW = [ipaddress.ip_network("10.0.0.0/8"), ipaddress.ip_network("fd00::/8")]
    assert Client().get("/metrics", REMOTE_ADDR="10.1.2.3").status_code == 200
    assert Client().get("/metrics", REMOTE_ADDR="fd00::5").status_code == 200
    assert Client().get("/metrics").status_code == 404
    assert Client().get("/metrics", REMOTE_ADDR="").status_code == 404


def test_metrics_token_and_allow_come_from_the_environment():
    show = (
        "import django, json\nfrom django.conf import settings\ndjango.setup()\n"
        "print(json.dumps([settings.METRICS_TOKEN, [str(n) for n in settings.METRICS_ALLOW]]))"
    )
    proc = run(
        show, SECRET_KEY=TEST_SECRET_KEY, METRICS_TOKEN="t0k", METRICS_ALLOW=" 127.0.0.1, 10.0.0.0/8,,::1 "
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().splitlines()[-1] == '["t0k", ["127.0.0.1/32", "10.0.0.0/8", "::1/128"]]'
    unset = run(show, SECRET_KEY=TEST_SECRET_KEY, METRICS_TOKEN="", METRICS_ALLOW="")
    assert unset.stdout.strip().splitlines()[-1] == '["", []]'
    bad = run(show, SECRET_KEY=TEST_SECRET_KEY, METRICS_ALLOW="127.0.0.1,localhost")
    assert bad.returncode != 0 and "METRICS_ALLOW: 'localhost'" in bad.stderr


# --- what moves ---------------------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
async def test_connect_send_bad_frame_and_disconnect_move_their_metrics(ws, room, user):
    sockets = value("chatsite_ws_open_sockets")
    hello = value("chatsite_ws_frames_sent_total", type="hello")
    ack = value("chatsite_ws_frames_sent_total", type="ack")
    message = value("chatsite_ws_frames_sent_total", type="message")
    error = value("chatsite_ws_frames_sent_total", type="error")
    sends = value("chatsite_ws_frames_received_total", type="message.send", error="")
    bad_json = value("chatsite_ws_frames_received_total", type="other", error="invalid_json")
    too_long = value("chatsite_ws_frames_received_total", type="message.send", error="body_too_long")
    unknown = value("chatsite_ws_frames_received_total", type="other", error="unknown_type")
    stored = value("chatsite_messages_stored_total")
    fanouts = value("chatsite_fanout_latency_seconds_count", event="room.message")
    fanout_sum = value("chatsite_fanout_latency_seconds_sum", event="room.message")

    conn = await ws(f"/ws/rooms/{room.slug}/", user=user)
    assert await conn.connect()
    await conn.receive_type("hello")
    assert value("chatsite_ws_open_sockets") == sockets + 1
    assert value("chatsite_ws_frames_sent_total", type="hello") == hello + 1

    await send_and_collect(conn, "counted")
    assert value("chatsite_ws_frames_received_total", type="message.send", error="") == sends + 1
    assert value("chatsite_ws_frames_sent_total", type="ack") == ack + 1
    assert value("chatsite_ws_frames_sent_total", type="message") == message + 1
    assert value("chatsite_messages_stored_total") == stored + 1
    assert value("chatsite_fanout_latency_seconds_count", event="room.message") == fanouts + 1
    latency = value("chatsite_fanout_latency_seconds_sum", event="room.message") - fanout_sum
    assert 0 < latency < 5

    # A retry stores nothing: acked again, no new message counted.
    await conn.send({"type": "message.send", "body": "once", "client_msg_id": "same"})
    await conn.receive_type("ack")
    await conn.receive_type("message")
    await conn.send({"type": "message.send", "body": "once", "client_msg_id": "same"})
    await conn.receive_type("ack")
    assert value("chatsite_messages_stored_total") == stored + 2

    await conn.send_text("not json")
    await conn.receive_type("error")
    await conn.send({"type": "message.send", "body": "x" * 4001, "client_msg_id": new_client_msg_id()})
    await conn.receive_type("error")
    await conn.send({"type": "made.up.type"})
    await conn.receive_type("error")
    assert value("chatsite_ws_frames_received_total", type="other", error="invalid_json") == bad_json + 1
    assert (
        value("chatsite_ws_frames_received_total", type="message.send", error="body_too_long") == too_long + 1
    )
    assert value("chatsite_ws_frames_received_total", type="other", error="unknown_type") == unknown + 1
    assert value("chatsite_ws_frames_received_total", type="made.up.type", error="unknown_type") == 0
    assert value("chatsite_ws_frames_sent_total", type="error") == error + 3

    await conn.close()
    assert value("chatsite_ws_open_sockets") == sockets


@pytest.mark.django_db(transaction=True)
async def test_refused_handshakes_are_not_open_sockets(ws, room, user):
    sockets = value("chatsite_ws_open_sockets")
    conn = await ws("/ws/rooms/no-such-room/", user=user)
    assert await conn.connect()
    assert await conn.close_code() == 4404
    assert value("chatsite_ws_open_sockets") == sockets
    await conn.close()
    assert value("chatsite_ws_open_sockets") == sockets


@pytest.mark.django_db(transaction=True)
async def test_origin_refusals_are_counted(ws, room, user):
    before = value("chatsite_ws_origin_refused_total")
    foreign = await ws(f"/ws/rooms/{room.slug}/", user=user, origin=b"http://evil.example")
    assert not await foreign.connect()
    missing = await ws(f"/ws/rooms/{room.slug}/", user=user, origin=None)  # AllowedHosts check
    assert not await missing.connect()
    assert value("chatsite_ws_origin_refused_total") == before + 2
    ok = await ws(f"/ws/rooms/{room.slug}/", user=user)
    assert await ok.connect()
    await ok.receive_type("hello")
    await ok.close()
    assert value("chatsite_ws_origin_refused_total") == before + 2


@pytest.fixture
def rates(monkeypatch):
    def set_rates(**scoped):
        monkeypatch.setattr(
            ScopedRateThrottle, "THROTTLE_RATES", {**ScopedRateThrottle.THROTTLE_RATES, **scoped}
        )

    return set_rates


@pytest.mark.django_db
def test_rest_429_counts_a_rate_limit_hit_by_scope(room, user, rates, open_metrics):
    rates(send="2/min", login="1/min")
    before = scrape()
    api = APIClient()
    api.force_authenticate(user)
    codes = [
        api.post(
            "/api/rooms/lobby/messages/", {"body": f"m{i}", "client_msg_id": f"rl-{i}"}, format="json"
        ).status_code
        for i in range(4)
    ]
    assert codes == [201, 201, 429, 429]
    address = f"10.{uuid.uuid4().int % 250}.{uuid.uuid4().int % 250}.7"  # a login counter of its own
    login = [
        APIClient(REMOTE_ADDR=address)
        .post("/api/auth/token/", {"username": "alice", "password": "wrong"})
        .status_code
        for _ in range(2)
    ]
    assert login == [400, 429]
    after = scrape()
    key = "chatsite_rate_limited_total"
    assert after[(key, (("scope", "send"),))] - before.get((key, (("scope", "send"),)), 0) == 2
    assert after[(key, (("scope", "login"),))] - before.get((key, (("scope", "login"),)), 0) == 1


@pytest.mark.django_db
def test_layer_errors_are_counted_beside_broadcast_failures(
    room, user, settings, django_capture_on_commit_callbacks
):
    settings.CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "channels_redis.pubsub.RedisPubSubChannelLayer",
            "CONFIG": {
                "hosts": [{"address": f"redis://127.0.0.1:{free_port()}/0", "socket_connect_timeout": 1}]
            },
        }
    }
    channel_layers.backends.clear()
    errors = value("chatsite_layer_errors_total", event="room.message")
    failures = events.broadcast_failures
    fanouts = value("chatsite_fanout_latency_seconds_count", event="room.message")
    stored = value("chatsite_messages_stored_total")
    try:
        with django_capture_on_commit_callbacks(execute=True):
            services.message_post(room=room, author=user, body="kept", client_msg_id="layer-down")
    finally:
        channel_layers.backends.clear()
    assert value("chatsite_layer_errors_total", event="room.message") == errors + 1
    assert events.broadcast_failures == failures + 1
    assert value("chatsite_fanout_latency_seconds_count", event="room.message") == fanouts  # not handed over
    assert value("chatsite_messages_stored_total") == stored + 1


@pytest.mark.django_db
def test_edits_deletes_and_archives_observe_fanout_latency_per_event(
    room, user, django_capture_on_commit_callbacks
):
    message = services.message_post(room=room, author=user, body="v1", client_msg_id="e1").message
    names = ("room.message_updated", "room.message_deleted", "room.archived")
    before = {name: value("chatsite_fanout_latency_seconds_count", event=name) for name in names}
    with django_capture_on_commit_callbacks(execute=True):
        message = services.message_edit(message=message, actor=user, body="v2")
    with django_capture_on_commit_callbacks(execute=True):
        services.message_delete(message=message, actor=user)
    with django_capture_on_commit_callbacks(execute=True):
        services.room_archive(room=room, actor=user)
    for name in names:
        assert value("chatsite_fanout_latency_seconds_count", event=name) == before[name] + 1, name
    # The buckets span 0.1 ms .. 1 s.
    assert (
        REGISTRY.get_sample_value(
            "chatsite_fanout_latency_seconds_bucket", {"event": "room.archived", "le": "0.0001"}
        )
        is not None
    )
    assert (
        REGISTRY.get_sample_value(
            "chatsite_fanout_latency_seconds_bucket", {"event": "room.archived", "le": "1.0"}
        )
        is not None
    )


# --- a real node --------------------------------------------------------------------------------


def _get(url: str, headers: dict | None = None) -> tuple[int, str]:
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, ""


@pytest.mark.multinode
@pytest.mark.django_db(transaction=True)
async def test_a_daphne_node_serves_its_own_metrics_to_the_token_or_allowed_address():
    user = await database_sync_to_async(factories.make_user)("carol")
    await database_sync_to_async(factories.make_room)(created_by=user, slug="metered", name="Metered")
    key = await database_sync_to_async(factories.token_for)(user)
    database_url = await database_sync_to_async(database_url_for_tests)()
    prefix = f"chatsite-test-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    extra = {"METRICS_TOKEN": TOKEN, "METRICS_ALLOW": "10.255.255.0/24"}
    with cluster(
        1, redis_url=os.environ["REDIS_URL"], database_url=database_url, prefix=prefix, extra_env=extra
    ) as nodes:
        node = nodes[0]
        url = f"{node.http}/metrics"
        assert (await asyncio.to_thread(_get, url))[0] == 404  # 127.0.0.1 is not in METRICS_ALLOW
        assert (await asyncio.to_thread(_get, url, {"Authorization": "Bearer wrong"}))[0] == 404

        async def samples() -> dict:
            status, text = await asyncio.to_thread(_get, url, {"Authorization": f"Bearer {TOKEN}"})
            assert status == 200
            return parse(text)

        before = await samples()
        assert before[("chatsite_node_info", (("server_id", "node-1"),))] == 1.0
        client = await NodeClient(node, "metered", key).connect()
        await client.send("on a real node", "real-1")
        assert await client.wait_for(lambda c: "real-1" in c.acks and c.messages)
        during = await samples()
        assert during[("chatsite_ws_open_sockets", ())] == before[("chatsite_ws_open_sockets", ())] + 1
        assert (
            during[("chatsite_messages_stored_total", ())]
            == before[("chatsite_messages_stored_total", ())] + 1
        )
        count = ("chatsite_fanout_latency_seconds_count", (("event", "room.message"),))
        assert during[count] == before.get(count, 0) + 1
        # The live frame went out through the node's synchronous delivery (``deliver_now``),
        # counted in rooms.metrics.SENT_LIVE and added to the counter at the scrape.
        sent = ("chatsite_ws_frames_sent_total", (("type", "message"),))
        assert during[sent] == before.get(sent, 0) + 1
        other = await NodeClient(node, "metered", key).connect()
        await client.send("to two sockets", "real-2")
        assert await other.wait_for(lambda c: c.messages)
        assert await client.wait_for(lambda c: "real-2" in c.acks and len(c.messages) == 2)
        assert (await samples())[sent] == before.get(sent, 0) + 3
        await other.close()
        await client.close()
        for _ in range(50):  # the node sees the close a moment later
            after = await samples()
            if after[("chatsite_ws_open_sockets", ())] == before[("chatsite_ws_open_sockets", ())]:
                break
            await asyncio.sleep(0.1)
        assert after[("chatsite_ws_open_sockets", ())] == before[("chatsite_ws_open_sockets", ())]
        assert "Traceback" not in node.log(), node.log()

    # Allowed by address: a node whose METRICS_ALLOW holds the loopback address, no token set.
    extra = {"METRICS_ALLOW": "127.0.0.1"}
    with cluster(
        1, redis_url=os.environ["REDIS_URL"], database_url=database_url, prefix=prefix, extra_env=extra
    ) as nodes:
        status, text = await asyncio.to_thread(_get, f"{nodes[0].http}/metrics")
        assert status == 200 and 'chatsite_node_info{server_id="node-1"} 1.0' in text


@pytest.mark.multinode
@pytest.mark.django_db(transaction=True)
def test_an_https_node_serves_metrics_and_healthz_to_a_direct_plain_http_scrape():
    """With HTTPS=1 pages redirect to https, but Prometheus and the balancer's health check talk
    plain HTTP to the node itself (no TLS there): /metrics and /healthz answer, not 301."""
    import http.client

    def get(port: int, path: str, headers: dict | None = None):
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        try:
            conn.request("GET", path, headers=headers or {})
            response = conn.getresponse()
            return response.status, response.getheader("Location"), response.read().decode()
        finally:
            conn.close()

    prefix = f"chatsite-test-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    extra = {"HTTPS": "1", "METRICS_TOKEN": TOKEN}
    with cluster(
        1,
        redis_url=os.environ["REDIS_URL"],
        database_url=database_url_for_tests(),
        prefix=prefix,
        extra_env=extra,
    ) as nodes:
        port = nodes[0].port
        status, _, text = get(port, "/metrics", {"Authorization": f"Bearer {TOKEN}"})
        assert status == 200 and 'chatsite_node_info{server_id="node-1"} 1.0' in text
        assert get(port, "/metrics")[0] == 404  # still closed without the token
        assert get(port, "/healthz")[0] == 200
        status, location, _ = get(port, "/accounts/login/")
        assert status == 301 and location.startswith("https://")
