"""The cluster topology: nginx in front of 3 daphne nodes (bin/cluster, Procfile.cluster), its
container twin (docker/compose.yaml, docker/nginx.conf) and the trusted-proxy middleware
(chatsite/proxy.py, BR-14). nginx checks its own configs (``nginx -t``); the real-cluster tests
start nginx and real daphne nodes on free loopback ports and stop them."""

import asyncio
import http.client
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.parse
import uuid
from contextlib import contextmanager
from pathlib import Path
from types import SimpleNamespace

import pytest
import websockets
import yaml
from asgiref.testing import ApplicationCommunicator
from channels.db import database_sync_to_async

from chatsite.proxy import TrustedProxyMiddleware, parse_trusted_proxies
from tests import factories
from tests.nodes import BASE_DIR, Http, cluster, database_url_for_tests, free_port
from tests.tools import NGINX, NGINX_REASON

needs_nginx = pytest.mark.skipif(NGINX is None, reason=NGINX_REASON)  # tests/tools.py: make test names it
NGINX_CONF = [sys.executable, str(BASE_DIR / "bin" / "nginx-conf")]
UNTRUSTED_CLIENT = "127.0.0.9"  # a loopback address of its own: the client, not the proxy
FORGED = "203.0.113.7"


def procfile(path: Path) -> dict[str, str]:
    """``name: command`` lines of a Procfile."""
    entries = {}
    for line in path.read_text().splitlines():
        m = re.match(r"^([A-Za-z0-9_-]+):\s*(.+)$", line)
        if m:
            entries[m[1]] = m[2].strip()
    return entries


def render_local(run_dir: Path, listen: str, upstreams: list[str]) -> Path:
    """The balancer config exactly as bin/cluster renders it (logs to files only)."""
    run_dir.mkdir(parents=True, exist_ok=True)
    args = [
        *NGINX_CONF,
        "--quiet",
        "--listen",
        listen,
        "--run-dir",
        str(run_dir),
        "-o",
        str(run_dir / "nginx.conf"),
    ]
    for upstream in upstreams:
        args += ["--upstream", upstream]
    subprocess.run(args, check=True)
    return run_dir / "nginx.conf"


def nginx_t(conf: Path, run_dir: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [NGINX, "-t", "-e", str(run_dir / "error.log"), "-c", str(conf)], capture_output=True, text=True
    )


def run_dir() -> Path:
    # nginx's workers drop to an unprivileged user when it runs as root: keep the path readable.
    path = Path(tempfile.mkdtemp(prefix="chatsite-nginx-"))
    path.chmod(0o755)
    return path


# --- nginx's own check of both configs -------------------------------------------------------------


@needs_nginx
def test_cluster_balancer_config_passes_nginx_t_and_keeps_the_proxy_rules():
    where = run_dir()
    conf = render_local(where, "127.0.0.1:18080", ["127.0.0.1:18001", "127.0.0.1:18002", "127.0.0.1:18003"])
    result = nginx_t(conf, where)
    assert result.returncode == 0, result.stderr
    text = conf.read_text()
    assert "daemon off;" in text and f"pid {where}/nginx.pid;" in text
    assert f"error_log {where}/error.log" in text and f"access_log {where}/access.log" in text
    assert re.findall(r"^\s*listen (\S+);", text, re.M) == ["127.0.0.1:18080"]  # loopback only
    assert re.findall(r"^\s*server (\S+);", text, re.M) == [
        "127.0.0.1:18001",
        "127.0.0.1:18002",
        "127.0.0.1:18003",
    ]
    for sticky in ("ip_hash", "hash ", "sticky", "least_conn"):
        assert sticky not in text.split("upstream chatsite_nodes", 1)[1].split("}", 1)[0]
    assert "proxy_set_header Upgrade $http_upgrade;" in text
    assert "proxy_set_header Connection $connection_upgrade;" in text
    assert "proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;" in text
    sockets = re.search(r"location /ws/ \{(.*?)\}", text, re.S)[1]
    pages = re.search(r"location / \{(.*?)\}", text, re.S)[1]
    read_timeout = int(re.search(r"proxy_read_timeout (\d+)s;", sockets)[1])
    assert read_timeout > 20, "idle sockets are pinged every 20 s: the proxy must wait longer"
    # a frozen node holds a page or API request at most this long before another node is tried
    assert int(re.search(r"proxy_read_timeout (\d+)s;", pages)[1]) <= 15
    assert "/etc/nginx" not in text
    shutil.rmtree(where)


@needs_nginx
def test_compose_balancer_config_is_the_current_render_and_passes_nginx_t():
    committed = (BASE_DIR / "docker" / "nginx.conf").read_text()
    rendered = subprocess.run([*NGINX_CONF, "--compose"], check=True, capture_output=True, text=True).stdout
    assert committed == rendered, (
        "docker/nginx.conf is stale: run `bin/nginx-conf --compose -o docker/nginx.conf`"
    )
    assert re.findall(r"^\s*server (\S+);", committed, re.M) == ["node-1:8000", "node-2:8000", "node-3:8000"]
    # Only what cannot exist outside Docker is replaced: the service names (Docker's DNS) and the
    # pid file (so that the check writes nothing outside its own folder).
    where = run_dir()
    local = re.sub(r"node-(\d):8000", r"127.0.0.1:800\1", committed)
    local = local.replace("pid /run/nginx.pid;", f"pid {where}/nginx.pid;")
    (where / "nginx.conf").write_text(local)
    result = nginx_t(where / "nginx.conf", where)
    assert result.returncode == 0, result.stderr
    shutil.rmtree(where)


# --- the compose file ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def compose():
    return yaml.safe_load((BASE_DIR / "docker" / "compose.yaml").read_text())


def _shell_command(service: dict) -> str:
    command = service["command"]
    assert command[:2] == ["sh", "-c"], command
    return command[2].replace("$$", "$")  # compose's escape for a literal $


def test_compose_has_three_app_nodes_with_their_own_server_id_and_the_procfile_web_command(compose):
    services = compose["services"]
    web = procfile(BASE_DIR / "Procfile")["web"]
    nodes = {name: s for name, s in services.items() if "chatsite.serve" in str(s.get("command"))}
    assert sorted(nodes) == ["node-1", "node-2", "node-3"]
    assert sorted(s["environment"]["SERVER_ID"] for s in nodes.values()) == ["node-1", "node-2", "node-3"]
    for name, service in nodes.items():
        assert service["environment"]["SERVER_ID"] == name
        assert _shell_command(service) == f"exec {web}"
        assert "/healthz" in " ".join(service["healthcheck"]["test"])
        assert service["depends_on"] == {
            "release": {"condition": "service_completed_successfully"},
            "postgres": {"condition": "service_healthy"},
            "redis": {"condition": "service_healthy"},
        }
        assert service["environment"]["REDIS_URL"].startswith("redis://redis:")
        assert "@postgres:5432/" in service["environment"]["DATABASE_URL"]
        assert (
            service["environment"]["TRUSTED_PROXIES"]
            == services["balancer"]["networks"]["backend"]["ipv4_address"]
        )
        assert service["env_file"] == ".env"


def test_compose_release_balancer_redis_and_postgres(compose):
    services = compose["services"]
    assert _shell_command(services["release"]) == procfile(BASE_DIR / "Procfile")["release"]
    assert services["release"]["restart"] == "no"
    for name in ("balancer", "redis", "postgres", "node-1", "node-2", "node-3"):
        assert services[name]["healthcheck"]["test"], name
    balancer = services["balancer"]
    assert "./nginx.conf:/etc/nginx/nginx.conf:ro" in balancer["volumes"]
    assert {d: c["condition"] for d, c in balancer["depends_on"].items()} == {
        f"node-{i}": "service_healthy" for i in (1, 2, 3)
    }
    assert services["redis"]["image"].startswith("redis:7")
    assert "--appendonly" in services["redis"]["command"]
    assert services["redis"]["command"][services["redis"]["command"].index("--appendonly") + 1] == "yes"
    assert any(v.endswith(":/data") for v in services["redis"]["volumes"])
    assert any(v.endswith(":/var/lib/postgresql/data") for v in services["postgres"]["volumes"])
    assert set(compose["volumes"]) == {"redis-data", "postgres-data"}
    # Every ${VAR} the compose file needs is in the example env file.
    example = (BASE_DIR / "docker" / ".env.example").read_text()
    needed = set(re.findall(r"(?<!\$)\$\{(\w+)", (BASE_DIR / "docker" / "compose.yaml").read_text()))
    assert needed and all(re.search(rf"^{v}=", example, re.M) for v in needed), needed


def _env_file(path: Path) -> dict[str, str]:
    """``NAME=value`` lines of an env file (comments and blank lines skipped)."""
    return dict(
        line.split("=", 1)
        for line in path.read_text().splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    )


def test_compose_example_env_speaks_the_scheme_its_balancer_serves(compose):
    """README's compose recipe as shipped: the balancer's published port is its ``listen`` in
    docker/nginx.conf; without ``ssl`` there it serves plain HTTP, so HTTPS (redirect to https,
    Secure cookies) must be off in the example env, and on only with a TLS listener."""
    example = _env_file(BASE_DIR / "docker" / ".env.example")
    published = [str(p) for p in compose["services"]["balancer"]["ports"]]
    container_ports = {p.rsplit(":", 1)[1] for p in published}
    listens = re.findall(r"^\s*listen\s+([^;]+);", (BASE_DIR / "docker" / "nginx.conf").read_text(), re.M)
    listen_ports = {re.match(r"(?:\S+:)?(\d+)", line)[1]: "ssl" in line.split() for line in listens}
    assert container_ports and container_ports <= set(listen_ports), (published, listens)
    balancer_speaks_tls = any(listen_ports[p] for p in container_ports)
    https = example["HTTPS"].strip().lower() in ("1", "true", "yes", "on")
    assert https == balancer_speaks_tls, (example["HTTPS"], listens)
    # Its hosts include the address README's recipe opens and the containers' health checks use.
    assert "127.0.0.1" in example["ALLOWED_HOSTS"].split(",")
    assert "http://127.0.0.1:8080" in (BASE_DIR / "docker" / "compose.yaml").read_text()


def test_cluster_procfile_runs_the_procfile_web_command_per_node_and_nginx_in_the_foreground():
    cluster_procfile = procfile(BASE_DIR / "Procfile.cluster")
    assert sorted(cluster_procfile) == ["balancer", "node-1", "node-2", "node-3"]
    web = procfile(BASE_DIR / "Procfile")["web"]
    for i in (1, 2, 3):
        expected = web.replace("0.0.0.0", "127.0.0.1").replace("${PORT:-8000}", f"${{NODE_PORT_{i}}}")
        # Under bin/restart-on-exit: a node killed or crashed is started again, not the cluster stopped.
        assert (
            cluster_procfile[f"node-{i}"]
            == f"SERVER_ID=node-{i} exec python bin/restart-on-exit -- {expected}"
        )
    # nginx starts only once every node answers /healthz: no 502 while the nodes start.
    assert cluster_procfile["balancer"] == (
        "exec python bin/wait-healthy 127.0.0.1:${NODE_PORT_1} 127.0.0.1:${NODE_PORT_2} "
        "127.0.0.1:${NODE_PORT_3} -- nginx -e ${CLUSTER_DIR}/error.log -c ${CLUSTER_DIR}/nginx.conf"
    )
    assert subprocess.run(["bash", "-n", str(BASE_DIR / "bin" / "cluster")]).returncode == 0


# --- the trusted-proxy middleware, on crafted scopes (BR-14) -------------------------------------


async def _seen(
    trusted, scope_type="http", client=("127.0.0.1", 50000), headers=(), scheme=None, root_path=None
):
    """The scope the wrapped app receives."""
    seen = {}

    async def app(scope, receive, send):
        seen.update(scope)

    scope = {"type": scope_type, "client": client, "headers": [(k.encode(), v.encode()) for k, v in headers]}
    if scheme:
        scope["scheme"] = scheme
    if root_path is not None:
        scope["root_path"] = root_path
    original = dict(scope)
    await TrustedProxyMiddleware(app, trusted)(scope, None, None)
    assert scope == original, "the caller's scope was changed in place"
    return seen


async def test_br_14_forged_forwarded_for_from_an_untrusted_peer_is_ignored():
    seen = await _seen(
        "127.0.0.1",
        client=("198.51.100.20", 4000),
        headers=[("x-forwarded-for", FORGED), ("x-forwarded-proto", "https")],
    )
    assert seen["client"] == ("198.51.100.20", 4000)
    assert "scheme" not in seen


async def test_br_14_trusted_proxy_gives_the_right_most_untrusted_address():
    seen = await _seen("127.0.0.1", headers=[("x-forwarded-for", f"{FORGED}, 198.51.100.20")])
    assert seen["client"] == ("198.51.100.20", 0)  # the client wrote FORGED itself; the proxy saw .20
    seen = await _seen(
        "127.0.0.1, 10.0.0.0/8", headers=[("x-forwarded-for", f"{FORGED}, 198.51.100.20, 10.1.2.3")]
    )
    assert seen["client"] == ("198.51.100.20", 0)  # 10.1.2.3 is a trusted hop
    seen = await _seen("127.0.0.1,10.0.0.0/8", headers=[("x-forwarded-for", "10.0.0.7, 10.1.2.3")])
    assert seen["client"] == ("10.0.0.7", 0)  # all trusted: the left-most
    seen = await _seen(
        "127.0.0.1", headers=[("x-forwarded-for", FORGED), ("x-forwarded-for", "198.51.100.20:7")]
    )
    assert seen["client"] == ("198.51.100.20", 0)  # repeated headers, a port
    seen = await _seen("::1", client=("::1", 1), headers=[("x-forwarded-for", "[2001:db8::5]:443")])
    assert seen["client"] == ("2001:db8::5", 0)


async def test_a_root_path_is_believed_only_from_a_trusted_proxy():
    """daphne takes ``root_path`` from a ``Daphne-Root-Path`` request header: from a client it
    would move Django's URLs (and a socket's route: a 500) under a path of its choosing."""
    for scope_type in ("http", "websocket"):
        seen = await _seen("127.0.0.1", scope_type=scope_type, client=("198.51.100.20", 4000), root_path="/x")
        assert seen["root_path"] == "", scope_type
        seen = await _seen("127.0.0.1", scope_type=scope_type, root_path="/chat")
        assert seen["root_path"] == "/chat", scope_type  # the proxy's
    seen = await _seen("", root_path="/x")  # trusting nobody
    assert seen["root_path"] == ""


async def test_br_14_no_usable_forwarded_for_leaves_the_proxy_address():
    for headers in ([], [("x-forwarded-for", "")], [("x-forwarded-for", f"{FORGED}, unknown")]):
        seen = await _seen("127.0.0.1", headers=headers)
        assert seen["client"] == ("127.0.0.1", 50000), headers


async def test_br_14_tls_ended_at_the_trusted_balancer_counts_as_secure():
    seen = await _seen("127.0.0.1", headers=[("x-forwarded-proto", "https")])
    assert seen["scheme"] == "https"
    seen = await _seen(
        "127.0.0.1", scope_type="websocket", scheme="ws", headers=[("x-forwarded-proto", "https")]
    )
    assert seen["scheme"] == "wss"
    seen = await _seen(
        "127.0.0.1", scope_type="websocket", scheme="ws", headers=[("x-forwarded-proto", "wss")]
    )
    assert seen["scheme"] == "wss"
    seen = await _seen("127.0.0.1", scheme="https", headers=[("x-forwarded-proto", "http")])
    assert seen["scheme"] == "http"
    seen = await _seen("127.0.0.1", scheme="http", headers=[("x-forwarded-proto", "gopher")])
    assert seen["scheme"] == "http"


async def test_br_14_default_trusts_nobody_and_other_scopes_pass_unchanged(monkeypatch):
    monkeypatch.delenv("TRUSTED_PROXIES", raising=False)
    middleware = TrustedProxyMiddleware(lambda *a: None)
    assert middleware.trusted == ()
    seen = await _seen("", headers=[("x-forwarded-for", FORGED)])
    assert seen["client"] == ("127.0.0.1", 50000)
    received = []

    async def app(scope, receive, send):
        received.append(scope)

    lifespan = {"type": "lifespan"}
    await TrustedProxyMiddleware(app, "127.0.0.1")(lifespan, None, None)
    assert received == [lifespan] and received[0] is lifespan


def test_br_14_a_bad_trusted_proxies_entry_fails_loudly():
    assert [str(n) for n in parse_trusted_proxies(" 127.0.0.1 , 10.0.0.0/8,,")] == [
        "127.0.0.1/32",
        "10.0.0.0/8",
    ]
    with pytest.raises(ValueError, match="nginx"):
        parse_trusted_proxies("127.0.0.1,nginx")


def test_br_14_the_asgi_application_applies_it_outermost(caplog):
    """chatsite.asgi.application itself: Django sees the forwarded address and scheme, and every
    response carries X-Served-By."""
    from chatsite.asgi import application

    assert isinstance(application, TrustedProxyMiddleware)
    trusted, application.trusted = application.trusted, parse_trusted_proxies("127.0.0.1")
    caplog.set_level("DEBUG", logger="chatsite.request")

    async def get(client, headers):
        scope = {
            "type": "http",
            "http_version": "1.1",
            "method": "GET",
            "scheme": "http",
            "path": "/no-such-page/",
            "raw_path": b"/no-such-page/",
            "query_string": b"",
            "root_path": "",
            "headers": [(b"host", b"127.0.0.1"), *headers],
            "client": client,
            "server": ("127.0.0.1", 8000),
        }
        communicator = ApplicationCommunicator(application, scope)
        await communicator.send_input({"type": "http.request", "body": b""})
        start = await communicator.receive_output(5)
        await communicator.receive_output(5)
        await communicator.wait(5)
        return start

    forwarded = [(b"x-forwarded-for", FORGED.encode()), (b"x-forwarded-proto", b"https")]
    try:
        start = asyncio.run(get(("127.0.0.1", 1), forwarded))
        asyncio.run(get(("198.51.100.20", 2), forwarded))
    finally:
        application.trusted = trusted
    assert start["status"] == 404
    assert (b"x-served-by", b"test-node") in [(k.lower(), v) for k, v in start["headers"]]
    lines = [r.getMessage() for r in caplog.records if r.name == "chatsite.request"]
    assert lines == [
        f"GET /no-such-page/ 404 client={FORGED} scheme=https",
        "GET /no-such-page/ 404 client=198.51.100.20 scheme=http",
    ]


# --- nginx in front of 3 real daphne nodes -------------------------------------------------------


def _wait_port(port: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listens on 127.0.0.1:{port}")


def _port_closed(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
        return False
    except OSError:
        return True


def _healthy(port: int) -> bool:
    try:
        return _get(port, "/healthz")[0] == 200
    except OSError:
        return False


@contextmanager
def balanced_cluster(database_url: str, redis_url: str, count: int = 3, extra_env: dict | None = None):
    """nginx (rendered like bin/cluster's, on a free port) in front of ``count`` daphne nodes that
    trust 127.0.0.1; yields ``(port, nodes, nginx_process)`` and stops them all."""
    prefix = f"chatsite-test-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    extra = {"TRUSTED_PROXIES": "127.0.0.1", "LOG_LEVEL": "DEBUG", **(extra_env or {})}
    with cluster(
        count, redis_url=redis_url, database_url=database_url, prefix=prefix, extra_env=extra
    ) as nodes:
        where = run_dir()
        port = free_port()
        conf = render_local(where, f"127.0.0.1:{port}", [f"127.0.0.1:{n.port}" for n in nodes])
        with open(where / "nginx.out", "wb") as out:
            nginx = subprocess.Popen(
                [NGINX, "-e", str(where / "error.log"), "-c", str(conf)], stdout=out, stderr=subprocess.STDOUT
            )
        try:
            _wait_port(port)
            yield port, nodes, nginx
        finally:
            nginx.terminate()
            nginx.wait(10)
            shutil.rmtree(where, ignore_errors=True)


@needs_nginx
def test_balancer_with_no_node_answering_sends_json_503_with_retry_after_not_nginx_html():
    """Every node down (the upstream port refuses connections): nginx answers the clients' JSON
    contract, 503 ``{"detail", "code": "unavailable"}`` with Retry-After, for pages, the API and
    the socket route alike, never its own HTML 502 page."""
    where = run_dir()
    port, dead = free_port(), free_port()  # nothing listens on `dead`
    conf = render_local(where, f"127.0.0.1:{port}", [f"127.0.0.1:{dead}"])
    with open(where / "nginx.out", "wb") as out:
        nginx = subprocess.Popen(
            [NGINX, "-e", str(where / "error.log"), "-c", str(conf)], stdout=out, stderr=subprocess.STDOUT
        )
    try:
        _wait_port(port)
        for path in ("/", "/api/rooms/", "/rooms/general/", "/ws/rooms/general/"):
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
            try:
                conn.request("GET", path)
                response = conn.getresponse()
                body = response.read().decode()
                assert response.status == 503, (path, response.status, body)
                assert response.getheader("Content-Type") == "application/json", path
                assert response.getheader("Retry-After") == "5", path
                assert json.loads(body)["code"] == "unavailable", body
                assert "<html" not in body.lower()
            finally:
                conn.close()
    finally:
        nginx.terminate()
        nginx.wait(10)
        shutil.rmtree(where, ignore_errors=True)


def _get(port: int, path: str, *, source: str = "127.0.0.1", headers: dict | None = None):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10, source_address=(source, 0))
    try:
        conn.request("GET", path, headers=headers or {})
        response = conn.getresponse()
        return response.status, response.getheader("X-Served-By"), response.read().decode()
    finally:
        conn.close()


@pytest.fixture(scope="module")
def balanced(django_db_setup, django_db_blocker):
    with django_db_blocker.unblock():
        database_url = database_url_for_tests()
    with balanced_cluster(database_url, os.environ["REDIS_URL"]) as (port, nodes, nginx):
        yield port, nodes
        for node in nodes:
            assert "Traceback" not in node.log(), node.log()


def _seen_by_node(nodes, server_id: str, path: str, timeout: float = 5.0) -> str:
    """The ``client=… scheme=…`` a node logged for ``path``."""
    node = next(n for n in nodes if n.server_id == server_id)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        m = re.search(rf"GET {re.escape(path)} \d+ (client=\S+ scheme=\S+)", node.log())
        if m:
            return m[1]
        time.sleep(0.05)
    raise AssertionError(f"{server_id} logged no request for {path}:\n{node.log()[-3000:]}")


@needs_nginx
@pytest.mark.multinode
def test_six_page_loads_through_the_balancer_go_round_robin_to_all_three_nodes(balanced):
    port, _ = balanced
    served = []
    for _ in range(6):
        status, served_by, page = _get(port, "/accounts/login/")
        assert status == 200 and served_by
        assert "page served by" not in page  # node names are for staff: the header says it
        served.append(served_by)
    assert sorted(served[:3]) == ["node-1", "node-2", "node-3"], served
    assert served[3:] == served[:3], served  # strict rotation, no stickiness


@needs_nginx
@pytest.mark.multinode
@pytest.mark.django_db(transaction=True)
async def test_websockets_through_the_balancer_land_on_every_node_and_talk_across_them(balanced):
    port, _ = balanced

    def make():
        owner = factories.make_user("owner")
        factories.make_room(created_by=owner, slug="r0", name="Room zero")
        return [factories.token_for(factories.make_user(f"member{i}")) for i in range(3)]

    tokens = await database_sync_to_async(make)()
    sockets, hellos = [], []
    try:
        for token in tokens:
            ws = await websockets.connect(
                f"ws://127.0.0.1:{port}/ws/rooms/r0/",
                open_timeout=10,
                additional_headers={"Authorization": f"Token {token}"},
            )
            sockets.append(ws)
            hellos.append(json.loads(await asyncio.wait_for(ws.recv(), 10)))
        assert [h["type"] for h in hellos] == ["hello"] * 3
        assert sorted(h["server_id"] for h in hellos) == ["node-1", "node-2", "node-3"]
        await sockets[0].send(
            json.dumps({"type": "message.send", "body": "through nginx", "client_msg_id": "n-1"})
        )
        for ws in sockets:  # every member, whichever node its socket landed on
            while True:
                frame = json.loads(await asyncio.wait_for(ws.recv(), 10))
                if frame["type"] == "message":
                    assert frame["message"]["body"] == "through nginx"
                    break
    finally:
        for ws in sockets:
            await ws.close()


@needs_nginx
@pytest.mark.multinode
def test_br_14_nodes_see_the_forwarded_client_only_from_the_trusted_balancer(balanced):
    port, nodes = balanced
    # Through nginx (peer 127.0.0.1, trusted): the client's own address, whatever it claims.
    path = f"/probe-{uuid.uuid4().hex}/"
    _, served_by, _ = _get(port, path, source=UNTRUSTED_CLIENT)
    assert _seen_by_node(nodes, served_by, path) == f"client={UNTRUSTED_CLIENT} scheme=http"
    path = f"/probe-{uuid.uuid4().hex}/"
    _, served_by, _ = _get(
        port, path, source=UNTRUSTED_CLIENT, headers={"X-Forwarded-For": FORGED, "X-Forwarded-Proto": "ftp"}
    )
    assert _seen_by_node(nodes, served_by, path) == f"client={UNTRUSTED_CLIENT} scheme=http"
    # "https" from in front of the balancer (a TLS terminator) passes through; a client that
    # claims it over plain HTTP only makes its own cookies Secure. The address stays its own.
    path = f"/probe-{uuid.uuid4().hex}/"
    _, served_by, _ = _get(
        port, path, source=UNTRUSTED_CLIENT, headers={"X-Forwarded-For": FORGED, "X-Forwarded-Proto": "https"}
    )
    assert _seen_by_node(nodes, served_by, path) == f"client={UNTRUSTED_CLIENT} scheme=https"
    # Straight to a node from an untrusted peer: its headers are ignored.
    path = f"/probe-{uuid.uuid4().hex}/"
    status, served_by, _ = _get(
        nodes[0].port,
        path,
        source=UNTRUSTED_CLIENT,
        headers={"X-Forwarded-For": FORGED, "X-Forwarded-Proto": "https"},
    )
    assert status == 404 and served_by == "node-1"
    assert _seen_by_node(nodes, "node-1", path) == f"client={UNTRUSTED_CLIENT} scheme=http"


@needs_nginx
@pytest.mark.multinode
def test_https_nodes_behind_the_balancer_with_tls_ended_in_front_of_it_serve_pages(
    django_db_setup, django_db_blocker
):
    """HTTPS=1 nodes behind the shipped balancer, TLS ended in front of it (X-Forwarded-Proto:
    https): pages are served, not redirected to https for ever; plain HTTP is redirected."""
    with django_db_blocker.unblock():
        database_url = database_url_for_tests()
    with balanced_cluster(database_url, os.environ["REDIS_URL"], count=1, extra_env={"HTTPS": "1"}) as (
        port,
        _,
        _,
    ):
        status, _, _ = _get(port, "/accounts/login/", headers={"X-Forwarded-Proto": "https"})
        assert status == 200
        status, _, _ = _get(port, "/accounts/login/")
        assert status == 301


@needs_nginx
@pytest.mark.multinode
@pytest.mark.django_db(transaction=True)
def test_compose_example_env_behind_the_shipped_balancer_serves_pages_over_plain_http():
    """A node with docker/.env.example's HTTPS, ALLOWED_HOSTS and CSRF_TRUSTED_ORIGINS behind the
    shipped balancer config, reached over plain HTTP as README's recipe does: pages answer (a
    sign-in redirect stays on http), nothing redirects to https, and a browser can sign up (its
    cookies are not Secure-only, so they come back over plain HTTP and pass the CSRF check)."""
    example = _env_file(BASE_DIR / "docker" / ".env.example")
    env = {k: example[k] for k in ("HTTPS", "ALLOWED_HOSTS", "CSRF_TRUSTED_ORIGINS")}
    with balanced_cluster(database_url_for_tests(), os.environ["REDIS_URL"], count=1, extra_env=env) as (
        port,
        _,
        _,
    ):
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        try:
            conn.request("GET", "/")
            response = conn.getresponse()
            response.read()
            assert response.status == 302 and not response.getheader("Location").startswith("https:")
        finally:
            conn.close()
        status, _, body = _get(port, "/accounts/login/")
        assert status == 200 and "Log in" in body

        origin = f"http://127.0.0.1:{port}"
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        try:
            conn.request("GET", "/accounts/signup/")
            page = conn.getresponse()
            page.read()
            cookie = next(c for c in page.headers.get_all("Set-Cookie") if c.startswith("csrftoken="))
            assert "secure" not in cookie.lower(), cookie
            token = cookie.split(";", 1)[0].split("=", 1)[1]
            form = urllib.parse.urlencode(
                {
                    "username": f"compose-{uuid.uuid4().hex[:8]}",
                    "csrfmiddlewaretoken": token,
                    "password1": factories.PASSWORD,
                    "password2": factories.PASSWORD,
                }
            )
            conn.request(
                "POST",
                "/accounts/signup/",
                body=form,
                headers={
                    "Content-Type": "application/x-www-form-urlencoded",
                    "Cookie": f"csrftoken={token}",
                    "Origin": origin,
                    "Referer": f"{origin}/accounts/signup/",
                },
            )
            signed_up = conn.getresponse()
            signed_up.read()
            assert signed_up.status == 302 and signed_up.getheader("Location") == "/", signed_up.status
            session = next(c for c in signed_up.headers.get_all("Set-Cookie") if c.startswith("sessionid="))
            assert "secure" not in session.lower(), session
        finally:
            conn.close()


@needs_nginx
@pytest.mark.multinode
def test_a_frozen_node_holds_a_page_request_for_the_pages_read_timeout_then_another_node_answers(
    django_db_setup, django_db_blocker
):
    """A node that accepted connections but no longer answers (SIGSTOP: a stuck process) costs a
    GET at most the balancer's read timeout for pages (15 s, not the sockets' 75 s): nginx then
    answers from the other node, and leaves the frozen one out for the next requests."""
    with django_db_blocker.unblock():
        database_url = database_url_for_tests()
    with balanced_cluster(database_url, os.environ["REDIS_URL"], count=2) as (port, nodes, _nginx):
        nodes[0].process.send_signal(signal.SIGSTOP)
        try:
            served = []
            for _ in range(4):
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
                try:
                    conn.request("GET", "/healthz")
                    response = conn.getresponse()
                    response.read()
                    assert response.status == 200
                    served.append(response.getheader("X-Served-By"))
                finally:
                    conn.close()
            assert served == [nodes[1].server_id] * 4, served
        finally:
            nodes[0].process.send_signal(signal.SIGCONT)


@needs_nginx
@pytest.mark.multinode
def test_nginx_and_nodes_are_stopped_afterwards(django_db_setup, django_db_blocker):
    with django_db_blocker.unblock():
        database_url = database_url_for_tests()
    with balanced_cluster(database_url, os.environ["REDIS_URL"]) as (port, nodes, nginx):
        assert _get(port, "/healthz")[0] == 200
        ports = [port] + [n.port for n in nodes]
        processes = [nginx] + [n.process for n in nodes]
    assert all(p.poll() is not None for p in processes)
    assert all(_port_closed(p) for p in ports)


# --- bin/cluster itself ----------------------------------------------------------------------------


def _processes_matching(*needles: str) -> list[tuple[int, str]]:
    """Processes whose command line contains one of ``needles``, and their children (nginx's
    workers do not repeat the master's arguments)."""
    table = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        table[int(entry.name)] = (ppid, cmdline.strip())
    found = {pid for pid, (_, cmdline) in table.items() if any(n in cmdline for n in needles)}
    found |= {pid for pid, (ppid, _) in table.items() if ppid in found}
    return sorted((pid, table[pid][1]) for pid in found)


@needs_nginx
@pytest.mark.multinode
@pytest.mark.django_db(transaction=True)
def test_bin_cluster_never_answers_502_while_starting_serves_round_robin_and_sigint_leaves_nothing_running(
    django_db_blocker,
):
    """bin/cluster from its first second: the balancer refuses connections or answers 200, never
    502 (nginx starts once every node answers /healthz). Then strict rotation; Ctrl-C stops all."""
    with django_db_blocker.unblock():
        database_url = database_url_for_tests()
    balancer_port, node_ports = free_port(), [free_port() for _ in range(3)]
    cluster_dir = run_dir()
    env = {
        **os.environ,
        "DATABASE_URL": database_url,
        "BALANCER_PORT": str(balancer_port),
        "NODE_PORTS": " ".join(map(str, node_ports)),
        "CLUSTER_DIR": str(cluster_dir),
        "CLUSTER_ENV": str(cluster_dir / "cluster.env"),
        # Its static files in its own folder: the checkout's staticfiles/ is never written
        # (a manifest left there from an older checkout breaks later runs' pages).
        "STATIC_ROOT": str(cluster_dir / "static"),
        "CHANNEL_LAYER_PREFIX": f"chatsite-test-{os.getpid()}-{uuid.uuid4().hex[:8]}",
    }
    log = cluster_dir / "cluster.log"
    with open(log, "wb") as out:
        # Its own session, as a terminal job would be; bin/cluster ends by exec-ing honcho.
        honcho = subprocess.Popen(
            [str(BASE_DIR / "bin" / "cluster")],
            cwd=BASE_DIR,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    needles = [str(cluster_dir)] + [f"--port {p}" for p in node_ports]
    try:
        # README's curl loop, from the moment the cluster is started: every answer is a node's.
        answers = []
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and honcho.poll() is None:
            try:
                answers.append(_get(balancer_port, "/healthz")[:2])
            except OSError:  # nginx not started yet: the port refuses
                time.sleep(0.05)
                continue
            if len(answers) >= 6:
                break
        assert honcho.poll() is None and len(answers) >= 6, log.read_text()
        assert all(status == 200 and node for status, node in answers), (answers, log.read_text())
        served = [_get(balancer_port, "/accounts/login/")[1] for _ in range(6)]
        assert sorted(served[:3]) == ["node-1", "node-2", "node-3"] and served[3:] == served[:3], (
            served,
            log.read_text(),
        )
        # The one environment file: README's `make manage ARGS=createsuperuser` after `make
        # cluster` (no DATABASE_URL of its own) writes into the cluster's database, says so, and
        # that admin logs in through the balancer.
        cluster_env = cluster_dir / "cluster.env"
        assert f"export DATABASE_URL={database_url}\n" in cluster_env.read_text()
        manage_env = {k: v for k, v in env.items() if k not in ("DATABASE_URL", "REDIS_URL")}
        manage_env["DJANGO_SUPERUSER_PASSWORD"] = "cluster-admin-password"
        made = subprocess.run(
            [
                "make",
                "--no-print-directory",
                "-o",
                ".venv/.installed",
                "manage",
                "ARGS=createsuperuser --noinput --username clusteradmin --email admin@example.com",
            ],
            cwd=BASE_DIR,
            env=manage_env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert made.returncode == 0, made.stdout + made.stderr
        assert f"chatsite: DATABASE_URL={database_url} (from {cluster_env})" in made.stderr, made.stderr
        admin = Http(SimpleNamespace(http=f"http://127.0.0.1:{balancer_port}"))
        admin.login_admin("clusteradmin", "cluster-admin-password")
        status, _, body = admin.request("GET", "/admin/")
        assert status == 200 and b"Site administration" in body, status
        # One node killed (SIGKILL): the balancer keeps answering from the other two, the node is
        # started again (bin/restart-on-exit) and serves, and the cluster keeps running.
        killed = next(
            pid
            for pid, c in _processes_matching(*needles)
            if f"--port {node_ports[1]}" in c and "python -m" in c and "restart-on-exit" not in c
        )
        os.kill(killed, signal.SIGKILL)
        assert all(_get(balancer_port, "/healthz")[0] == 200 for _ in range(6)), log.read_text()
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not _healthy(node_ports[1]):
            time.sleep(0.2)
        assert _healthy(node_ports[1]) and honcho.poll() is None, log.read_text()
        assert "was killed by signal 9; starting it again" in log.read_text()
        running = _processes_matching(*needles)
        assert len([c for _, c in running if "chatsite.serve" in c and "restart-on-exit" not in c]) == 3, (
            running
        )
        assert len([c for _, c in running if "nginx: master" in c]) == 1, running
        assert len([c for _, c in running if "nginx: worker" in c]) == 1, running
        honcho.send_signal(signal.SIGINT)  # Ctrl-C
        honcho.wait(20)  # honcho gives its processes 5 s after SIGTERM before SIGKILL
        time.sleep(0.5)
        assert _processes_matching(*needles) == []
        assert all(_port_closed(p) for p in [balancer_port, *node_ports])
    finally:
        if honcho.poll() is None:
            os.killpg(honcho.pid, signal.SIGKILL)
        for pid, _ in _processes_matching(*needles):
            os.kill(pid, signal.SIGKILL)
        shutil.rmtree(cluster_dir, ignore_errors=True)
