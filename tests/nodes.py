"""Real daphne nodes for multi-node tests: each a separate process on a free loopback port,
started with the product's own command and environment, stopped by PID."""

import asyncio
import json
import os
import secrets
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import websockets
from django.db import connection

from bench.cluster import free_port  # below the ephemeral range: a poll cannot connect to itself

BASE_DIR = Path(__file__).resolve().parent.parent

# A key the settings accept outside DEBUG (50+ random characters), for every node a test starts.
TEST_SECRET_KEY = secrets.token_urlsafe(50)


def database_url_for_tests() -> str:
    """The URL of the database pytest-django set up for this run (``test_<name>``)."""
    s = connection.settings_dict
    auth = s["USER"] or ""
    if s["PASSWORD"]:
        auth += f":{s['PASSWORD']}"
    return f"postgres://{auth}@{s['HOST'] or '127.0.0.1'}:{s['PORT'] or 5432}/{s['NAME']}"


@dataclass
class Node:
    server_id: str
    port: int
    process: subprocess.Popen
    log_path: Path
    env: dict = field(repr=False, default_factory=dict)

    @property
    def http(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def health(self, timeout: float = 3.0) -> tuple[int, dict]:
        try:
            with urllib.request.urlopen(f"{self.http}/healthz", timeout=timeout) as r:
                return r.status, json.loads(r.read())
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read())

    def stop(self, sig=signal.SIGTERM, timeout: float = 10.0) -> None:
        if self.process.poll() is None:
            self.process.send_signal(sig)
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=timeout)


_static_root: str | None = None


def collected_static_root() -> str:
    """Static files collected once per test run into a folder of its own (nodes render pages
    with hashed names from its manifest; the checkout's staticfiles/ is never touched)."""
    global _static_root
    if _static_root is None:
        root = tempfile.mkdtemp(prefix="chatsite-static-")
        env = {**os.environ, "STATIC_ROOT": root, "SECRET_KEY": TEST_SECRET_KEY}
        subprocess.run(
            [sys.executable, "manage.py", "collectstatic", "--noinput", "--verbosity", "0"],
            cwd=BASE_DIR,
            env=env,
            check=True,
            timeout=120,
        )
        _static_root = root
    return _static_root


def wait_for_quiet_database(database_url: str, *, quiet: float = 0.3, timeout: float = 5.0) -> None:
    """Wait until no other session of the test database has been running a statement or held a
    transaction open for ``quiet`` seconds (at most ``timeout``). For a test whose nodes keep
    running after its browser closed: the pages' sockets close then, and the nodes' clean-up
    (presence, read reports) ran beside pytest-django's flush, whose ``TRUNCATE`` of every
    table then deadlocked with it (seen once in ``.ci/run``: "Database test_chatsite couldn't be
    flushed")."""
    import psycopg

    deadline = time.monotonic() + timeout
    quiet_since = None
    with psycopg.connect(database_url, autocommit=True) as conn:
        while time.monotonic() < deadline:
            busy = conn.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
                " AND pid <> pg_backend_pid() AND state IN ('active', 'idle in transaction')"
            ).fetchone()[0]
            now = time.monotonic()
            if busy:
                quiet_since = None
            elif quiet_since is None:
                quiet_since = now
            elif now - quiet_since >= quiet:
                return
            time.sleep(0.05)


def start_node(server_id: str, *, env: dict, log_dir: Path, port: int | None = None) -> Node:
    port = port or free_port()
    log_path = log_dir / f"{server_id}.log"
    full_env = {
        **os.environ,
        "STATIC_ROOT": collected_static_root(),
        **env,
        "SERVER_ID": server_id,
        "PORT": str(port),
    }
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "chatsite.serve", "--bind", "127.0.0.1", "--port", str(port)],
            cwd=BASE_DIR,
            env=full_env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    return Node(server_id=server_id, port=port, process=process, log_path=log_path, env=full_env)


def wait_healthy(node: Node, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if node.process.poll() is not None:
            raise RuntimeError(f"{node.server_id} exited {node.process.returncode}:\n{node.log()}")
        try:
            status, _ = node.health(timeout=1)
            if status == 200:
                return
        except (OSError, ValueError):
            pass
        time.sleep(0.1)
    raise RuntimeError(f"{node.server_id} not healthy after {timeout}s:\n{node.log()}")


@contextmanager
def cluster(count: int, *, redis_url: str, database_url: str, prefix: str, extra_env: dict | None = None):
    """``count`` daphne nodes (``SERVER_ID`` node-1..node-N) sharing one database and, when
    ``redis_url`` is not empty, one Redis; yields the list of ``Node``. Stops every node on exit."""
    log_dir = Path(tempfile.mkdtemp(prefix="chatsite-nodes-"))
    env = {
        "DATABASE_URL": database_url,
        "REDIS_URL": redis_url,
        "CHANNEL_LAYER_PREFIX": prefix,
        "DEBUG": "0",
        "SECRET_KEY": TEST_SECRET_KEY,
        "ALLOWED_HOSTS": "127.0.0.1,localhost",
        "DATABASE_POOL_MAX_SIZE": "4",
        "THROTTLE_SEND_RATE": "100000/min",  # tests drive sends faster than a person
        "WS_SEND_RATE": "0",
        # Tests log in and sign up from one address far more often than a person would.
        "LOGIN_ADDRESS_RATE": "100000/min",
        "SIGNUP_RATE": "100000/min",
        **(extra_env or {}),
    }
    nodes = [start_node(f"node-{i}", env=env, log_dir=log_dir) for i in range(1, count + 1)]
    try:
        for node in nodes:
            wait_healthy(node)
        yield nodes
    finally:
        for node in nodes:
            node.stop()


class Client:
    """A token-authenticated WebSocket client of one node, reading frames in the background."""

    def __init__(self, node: Node, room: str, token: str, name: str = "", query: str = ""):
        self.node = node
        self.room = room
        self.query = query  # appended to the socket URL: "?tab=..."
        self.token = token
        self.name = name
        self.hello: dict | None = None
        self.frames: list[dict] = []
        self.messages: list[dict] = []
        self.acks: dict[str, dict] = {}
        self.close_code: int | None = None
        self._socket = None
        self._reader = None
        self._changed = asyncio.Event()

    async def connect(self) -> "Client":
        self._socket = await websockets.connect(
            f"{self.node.ws}/ws/rooms/{self.room}/{self.query}",
            additional_headers={"Authorization": f"Token {self.token}"},
            open_timeout=10,
        )
        self.hello = json.loads(await asyncio.wait_for(self._socket.recv(), 10))
        assert self.hello["type"] == "hello", self.hello
        self._reader = asyncio.ensure_future(self._read())
        return self

    async def _read(self) -> None:
        try:
            async for raw in self._socket:
                frame = json.loads(raw)
                self.frames.append(frame)
                if frame["type"] == "message":
                    self.messages.append(frame["message"])
                elif frame["type"] == "ack":
                    self.acks[frame["client_msg_id"]] = frame
                self._changed.set()
        except websockets.ConnectionClosed:
            pass
        finally:
            self.close_code = self._socket.close_code
            self._changed.set()

    async def send(self, body: str, client_msg_id: str) -> None:
        await self._socket.send(
            json.dumps({"type": "message.send", "body": body, "client_msg_id": client_msg_id})
        )

    async def send_frame(self, frame) -> None:
        """Send ``frame`` as it is: a dict as JSON, a str or bytes untouched."""
        await self._socket.send(json.dumps(frame) if isinstance(frame, dict) else frame)

    async def wait_for(self, predicate, timeout: float = 10.0) -> bool:
        """Wait until ``predicate(self)`` holds; False after ``timeout`` seconds."""
        deadline = asyncio.get_running_loop().time() + timeout
        while not predicate(self):
            remaining = deadline - asyncio.get_running_loop().time()
            if remaining <= 0:
                return False
            self._changed.clear()
            try:
                await asyncio.wait_for(self._changed.wait(), remaining)
            except TimeoutError:
                return predicate(self)
        return True

    async def close(self) -> None:
        if self._socket is not None:
            await self._socket.close()
        if self._reader is not None:
            await asyncio.wait_for(self._reader, 5)


class Http:
    """A small HTTP client for one node, with cookies (sessions, CSRF) and optional token."""

    def __init__(self, node: Node, token: str | None = None):
        import http.cookiejar

        self.node = node
        self.token = token
        self.jar = http.cookiejar.CookieJar()
        self.opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(self.jar), _NoRedirect())

    def _csrf(self) -> str | None:
        return next((c.value for c in self.jar if c.name == "csrftoken"), None)

    def request(self, method: str, path: str, *, json_body=None, form=None, timeout: float = 10.0):
        """Returns ``(status, headers, body bytes)``; never raises for HTTP error statuses."""
        import urllib.parse

        headers = {"Referer": self.node.http + "/"}
        data = None
        if self.token:
            headers["Authorization"] = f"Token {self.token}"
        if json_body is not None:
            data = json.dumps(json_body).encode()
            headers["Content-Type"] = "application/json"
        elif form is not None:
            form = {**form}
            if self._csrf():
                form.setdefault("csrfmiddlewaretoken", self._csrf())
            data = urllib.parse.urlencode(form, doseq=True).encode()
            headers["Content-Type"] = "application/x-www-form-urlencoded"
        if method != "GET" and self._csrf():
            headers["X-CSRFToken"] = self._csrf()
        req = urllib.request.Request(self.node.http + path, data=data, method=method, headers=headers)
        try:
            with self.opener.open(req, timeout=timeout) as r:
                return r.status, dict(r.headers), r.read()
        except urllib.error.HTTPError as e:
            return e.code, dict(e.headers), e.read()

    def login_admin(self, username: str, password: str) -> None:
        self.request("GET", "/admin/login/")
        status, headers, _ = self.request(
            "POST",
            "/admin/login/?next=/admin/",
            form={"username": username, "password": password, "next": "/admin/"},
        )
        assert status == 302, f"admin login failed: {status}"


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):
        return None


class ResumingClient:
    """A scripted client that keeps the delivery contract the way the room page does: it
    connects to the next node of ``nodes`` whenever its socket ends, resumes after the highest
    contiguous seq it holds, keeps messages by seq (so ``bodies()`` is the history it shows),
    asks again when a fetch or resume is answered with an error frame (``unavailable``), and
    counts what went wrong: ``duplicates`` (a seq received again) and ``out_of_order`` (a live
    seq below one already shown). Stopped by ``stop()``; every wait is bounded."""

    def __init__(self, nodes: list, room: str, token: str):
        self.nodes = nodes
        self.room = room
        self.token = token
        self.by_seq: dict[int, dict] = {}
        self.duplicates = 0
        self.out_of_order = 0
        self.connects = 0
        self.gap_fetches = 0
        self.close_codes: list[int | None] = []
        self.resync = False
        self.errors: list[dict] = []  # error frames (e.g. "unavailable" for a fetch or resume)
        self._socket = None
        self._task = None
        self._stopping = False
        self.connected = asyncio.Event()

    def contiguous(self) -> int:
        seq = 0
        while seq + 1 in self.by_seq:
            seq += 1
        return seq

    def bodies(self) -> list[str]:
        return [self.by_seq[s]["body"] for s in sorted(self.by_seq)]

    async def _session(self, node) -> None:
        after = self.contiguous()
        self._socket = await websockets.connect(
            f"{node.ws}/ws/rooms/{self.room}/?after_seq={after}",
            additional_headers={"Authorization": f"Token {self.token}"},
            open_timeout=10,
        )
        self.connects += 1
        if self._stopping:  # stop() came while this socket was opening: it closed the old one
            await self._socket.close()
            return
        highest_live = after
        fetching = False
        async for raw in self._socket:
            frame = json.loads(raw)
            if frame["type"] == "hello":
                self.connected.set()
            elif frame["type"] == "message":
                seq = frame["message"]["seq"]
                if seq in self.by_seq:
                    self.duplicates += 1
                if seq < highest_live:
                    self.out_of_order += 1
                highest_live = max(highest_live, seq)
                self.by_seq[seq] = frame["message"]
                if seq > self.contiguous() + 1 and not fetching:  # a gap: repair it
                    fetching = True
                    self.gap_fetches += 1
                    await self._socket.send(
                        json.dumps({"type": "fetch", "after_seq": self.contiguous(), "before_seq": seq})
                    )
            elif frame["type"] == "history":
                fetching = False
                for message in frame["messages"]:
                    self.by_seq.setdefault(message["seq"], message)
            elif frame["type"] == "resync":
                self.resync = True
            elif frame["type"] == "error":
                self.errors.append(frame)
                if frame["code"] == "unavailable" and frame.get("frame") == "fetch":
                    fetching = False  # not read now: ask again at the next live message
                elif frame["code"] == "unavailable" and frame.get("frame") == "resume":
                    await self._socket.close()  # reconnect (with backoff), resuming again

    async def run(self) -> None:
        attempt = 0
        while not self._stopping and attempt < 200:
            node = self.nodes[attempt % len(self.nodes)]
            attempt += 1
            try:
                await self._session(node)
            except (TimeoutError, OSError, websockets.InvalidHandshake, websockets.ConnectionClosed):
                pass
            finally:
                self.connected.clear()
                if self._socket is not None:
                    self.close_codes.append(self._socket.close_code)
            if not self._stopping:
                await asyncio.sleep(0.05 * min(attempt, 10))  # bounded backoff

    def start(self) -> "ResumingClient":
        self._task = asyncio.ensure_future(self.run())
        return self

    async def drop(self) -> None:
        """Close the current socket from the client side (a reconnect follows)."""
        if self._socket is not None:
            await self._socket.close()

    async def stop(self) -> None:
        self._stopping = True
        if self._socket is not None:
            await self._socket.close()
        if self._task is not None:
            await asyncio.wait_for(self._task, 15)


class TcpProxy:
    """A TCP forwarder on a free loopback port to ``target`` (host, port), run in a thread of
    its own. ``cut()`` drops every connection and refuses new ones (the target looks
    unreachable); ``restore()`` accepts again. ``blackhole()`` keeps every open connection open
    but from then on discards what either side sends on it, while new connections work (the
    target moved or hung and nothing reset the old connections). Used to take PostgreSQL or
    Redis away from one node without touching the shared server."""

    def __init__(self, target: tuple[str, int]):
        import threading

        self.target = target
        self.port = free_port()
        self._loop = asyncio.new_event_loop()
        self._server = None
        self._writers: set = set()
        self._open: list[dict] = []  # per connection: {"swallow": bool}
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._thread.start()
        self.restore()

    def _call(self, coro, timeout: float = 10.0):
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout)

    async def _pipe(self, reader, writer, state, key):
        try:
            while data := await reader.read(65536):
                if state[key]:
                    continue
                writer.write(data)
                await writer.drain()
        except (OSError, asyncio.CancelledError):
            pass
        finally:
            writer.close()

    async def _handle(self, client_reader, client_writer):
        try:
            upstream_reader, upstream_writer = await asyncio.open_connection(*self.target)
        except OSError:
            client_writer.close()
            return
        self._writers |= {client_writer, upstream_writer}
        state = {"requests": False, "replies": False}  # swallowed from now on
        self._open.append(state)
        await asyncio.gather(
            self._pipe(client_reader, upstream_writer, state, "requests"),
            self._pipe(upstream_reader, client_writer, state, "replies"),
        )
        self._writers -= {client_writer, upstream_writer}
        self._open.remove(state)

    async def _start(self):
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", self.port)

    async def _stop(self):
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
        for writer in list(self._writers):
            writer.transport.abort()
        self._writers.clear()

    def restore(self) -> None:
        self._call(self._start())

    def blackhole(self, replies_only: bool = False) -> int:
        """Discard all traffic on the connections open now (with ``replies_only``, only what the
        target sends: requests still arrive and take effect, their answers are lost); returns
        how many connections there are."""

        async def swallow():
            for state in self._open:
                state["replies"] = True
                state["requests"] = state["requests"] or not replies_only
            return len(self._open)

        return self._call(swallow())

    def cut(self) -> None:
        self._call(self._stop())

    def close(self) -> None:
        self.cut()
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)


class PrivatePostgres:
    """A PostgreSQL cluster of our own for fault tests: ``initdb`` under /tmp (as the
    ``postgres`` user when run as root), served on a free loopback port by a ``postgres``
    process we start and stop by its PID, so it can be restarted or have its backends
    terminated without touching the shared server. ``url(name)`` is a DATABASE_URL for it."""

    def __init__(self):
        import glob
        import shutil

        bins = sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=lambda p: int(p.split("/")[-2]))
        self.bin = Path(bins[-1]) if bins else Path(shutil.which("postgres") or "postgres").parent
        self.folder = Path(tempfile.mkdtemp(prefix="chatsite-pg-", dir="/tmp"))
        self.data = self.folder / "data"
        self.port = free_port()
        self.proc = None
        self.user = "postgres" if os.geteuid() == 0 else None
        if self.user:
            shutil.chown(self.folder, self.user, self.user)
        subprocess.run(
            [
                str(self.bin / "initdb"),
                "-D",
                str(self.data),
                "-A",
                "trust",
                "-U",
                "postgres",
                "--no-sync",
                "-E",
                "UTF8",
                "--locale",
                "C",
            ],
            user=self.user,
            check=True,
            timeout=120,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        self.start()

    def url(self, name: str = "postgres", port: int | None = None) -> str:
        return f"postgres://postgres@127.0.0.1:{port or self.port}/{name}"

    def start(self, timeout: float = 30.0) -> None:
        """Start the server on its port and wait until it accepts connections."""
        import psycopg

        log = open(self.folder / "postgres.log", "ab")
        self.proc = subprocess.Popen(
            [
                str(self.bin / "postgres"),
                "-D",
                str(self.data),
                "-p",
                str(self.port),
                "-k",
                str(self.folder),
                "-c",
                "listen_addresses=127.0.0.1",
                "-c",
                "fsync=off",
                "-c",
                "synchronous_commit=off",
                "-c",
                "full_page_writes=off",
                "-c",
                "max_connections=100",
            ],
            user=self.user,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        deadline = time.monotonic() + timeout
        while True:
            try:
                psycopg.connect(self.url(), connect_timeout=2).close()
                return
            except psycopg.OperationalError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"private PostgreSQL did not start:\n{self.log()[-2000:]}") from None
                time.sleep(0.05)

    def stop(self, sig=signal.SIGINT, timeout: float = 30.0) -> None:
        """Stop the server by its PID (SIGINT: PostgreSQL's fast shutdown, which ends every
        session as a restart does)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout)

    def restart(self) -> None:
        self.stop()
        self.start()

    def execute(self, sql: str, dbname: str = "postgres") -> list:
        import psycopg

        with psycopg.connect(self.url(dbname), autocommit=True, connect_timeout=5) as conn:
            cursor = conn.execute(sql)
            return cursor.fetchall() if cursor.description else []

    def terminate_backends(self, dbname: str) -> int:
        """``pg_terminate_backend`` every client session of ``dbname``; returns how many."""
        rows = self.execute(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
            f"WHERE datname = '{dbname}' AND pid <> pg_backend_pid() AND backend_type = 'client backend'"
        )
        return rows[0][0]

    def log(self) -> str:
        return (self.folder / "postgres.log").read_text(errors="replace")

    def close(self) -> None:
        import shutil

        self.stop()
        shutil.rmtree(self.folder, ignore_errors=True)
