"""The product's daphne nodes: started as separate processes on free loopback ports (each in its
own session, so a Ctrl-C in the terminal reaches the tool, which then stops them in order),
watched with psutil (CPU seconds, RSS) and stopped by PID."""

import ipaddress
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import psutil

REPO_DIR = Path(__file__).resolve().parent.parent


_handed_out: set[int] = set()


def _ephemeral_low() -> int:
    """The first port of the kernel's ephemeral range (client sockets' own ports)."""
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            return int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768  # Linux's default


def free_port() -> int:
    """A TCP port free on 127.0.0.1 for a server about to start, below the kernel's ephemeral
    range, and not handed out before by this process.

    Below the ephemeral range because a client that polls a port whose server has not started
    yet can be given that very port as its own source port, and then connects to itself and
    reads back its own request (TCP self-connect; seen once in a fresh-clone run:
    ``BadStatusLine: GET /healthz HTTP/1.1``). Raises ``OSError`` when none is found in 500
    tries."""
    low = _ephemeral_low()
    first = 10000 if low > 11000 else 1024
    for _ in range(500):
        port = secrets.randbelow(low - first) + first
        if port in _handed_out:
            continue
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        _handed_out.add(port)
        return port
    raise OSError(f"no free port between {first} and {low}")


def check_loopback(url: str) -> str:
    """Return ``url`` when its host is a loopback address (127.0.0.0/8, ``localhost``, ``::1``);
    raise ``ValueError`` otherwise: the benchmark sends traffic to this machine only."""
    host = urllib.parse.urlsplit(url).hostname or ""
    if host == "localhost":
        return url
    try:
        if ipaddress.ip_address(host).is_loopback:
            return url
    except ValueError:
        pass
    raise ValueError(f"{url}: the benchmark only targets loopback addresses (127.0.0.1, ::1)")


@dataclass
class Node:
    server_id: str
    url: str  # ws://127.0.0.1:PORT
    pid: int | None = None
    process: subprocess.Popen | None = field(default=None, repr=False)
    log_path: Path | None = None
    _ps: psutil.Process | None = field(default=None, repr=False)
    peak_rss: int = 0

    @property
    def http(self) -> str:
        return self.url.replace("ws://", "http://", 1).replace("wss://", "https://", 1)

    def ps(self) -> psutil.Process | None:
        if self._ps is None and self.pid:
            try:
                self._ps = psutil.Process(self.pid)
            except psutil.Error:
                return None
        return self._ps

    def cpu_seconds(self) -> float | None:
        p = self.ps()
        try:
            t = p.cpu_times() if p else None
        except psutil.Error:
            return None
        return None if t is None else t.user + t.system

    def rss(self) -> int | None:
        """Current RSS in bytes (also raises ``peak_rss``)."""
        p = self.ps()
        try:
            rss = p.memory_info().rss if p else None
        except psutil.Error:
            return None
        if rss is not None:
            self.peak_rss = max(self.peak_rss, rss)
        return rss

    def alive(self) -> bool:
        return self.process is None or self.process.poll() is None

    def log_tail(self, chars: int = 3000) -> str:
        if not self.log_path:
            return ""
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    def health(self, timeout: float = 2.0) -> tuple[int, dict]:
        try:
            with urllib.request.urlopen(f"{self.http}/healthz", timeout=timeout) as r:
                return r.status, json.loads(r.read())
        except urllib.error.HTTPError as e:
            return e.code, {}

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM, then SIGKILL after ``timeout`` seconds; only the process this tool started."""
        p = self.process
        if p is None or p.poll() is not None:
            return
        p.send_signal(signal.SIGTERM)
        try:
            p.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait(timeout=timeout)


def node_env(*, database_url: str, redis_url: str, prefix: str, extra: dict | None = None) -> dict:
    """The nodes' environment: the product's own variables (README's configuration table)."""
    return {
        "DATABASE_URL": database_url,
        "REDIS_URL": redis_url,  # empty: the in-memory layer
        "CHANNEL_LAYER_PREFIX": prefix,
        "DEBUG": "0",
        "SECRET_KEY": os.environ.get("BENCH_SECRET_KEY") or secrets.token_urlsafe(40),
        "ALLOWED_HOSTS": "127.0.0.1,localhost",
        "LOG_LEVEL": "WARNING",
        "DJANGO_SETTINGS_MODULE": "chatsite.settings",
        # The per-user send limit stays on, as in production (each send counts in Redis), set
        # above the fastest ramp step (30 msg/s per sender) so that it never refuses a send.
        "WS_SEND_RATE": "100/s",
        **(extra or {}),
    }


def start_nodes(count: int, *, env: dict, log_dir: Path, product_dir: Path = REPO_DIR) -> list[Node]:
    """Start ``count`` daphne nodes (``node-1`` ..) with the product's command; does not wait."""
    log_dir.mkdir(parents=True, exist_ok=True)
    nodes = []
    for i in range(1, count + 1):
        server_id = f"node-{i}"
        port = free_port()
        log_path = log_dir / f"{server_id}.log"
        full_env = {**os.environ, **env, "SERVER_ID": server_id, "PORT": str(port)}
        with open(log_path, "wb") as log:
            process = subprocess.Popen(
                [sys.executable, "-m", "chatsite.serve", "--bind", "127.0.0.1", "--port", str(port)],
                cwd=product_dir,
                env=full_env,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        nodes.append(
            Node(
                server_id=server_id,
                url=f"ws://127.0.0.1:{port}",
                pid=process.pid,
                process=process,
                log_path=log_path,
            )
        )
    return nodes


def wait_healthy(nodes: list[Node], timeout: float = 60.0) -> None:
    """Wait until every node answers ``/healthz`` with 200; ``RuntimeError`` when one exits or
    ``timeout`` seconds pass."""
    deadline = time.monotonic() + timeout
    pending = list(nodes)
    while pending:
        for node in list(pending):
            if not node.alive():
                raise RuntimeError(f"{node.server_id} exited {node.process.returncode}:\n{node.log_tail()}")
            try:
                if node.health(timeout=1)[0] == 200:
                    pending.remove(node)
            except (OSError, ValueError):
                pass
        if pending:
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"{pending[0].server_id} not healthy after {timeout}s:\n{pending[0].log_tail()}"
                )
            time.sleep(0.1)


def stop_nodes(nodes: list[Node]) -> None:
    """Stop every node this tool started: SIGTERM to all, then wait (SIGKILL after 10 s)."""
    for node in nodes:
        if node.process is not None and node.process.poll() is None:
            try:
                node.process.send_signal(signal.SIGTERM)
            except ProcessLookupError:
                pass
    for node in nodes:
        node.stop()


def external_nodes(urls: list[str], pids: dict[str, int] | None = None) -> list[Node]:
    """Nodes this tool did not start (``--urls``): never stopped; watched when a PID is given
    (``--pids node-1=1234,..``, matched by order: the i-th URL is ``node-i``)."""
    nodes = []
    for i, url in enumerate(urls, start=1):
        check_loopback(url)
        sid = f"node-{i}"
        nodes.append(Node(server_id=sid, url=url.rstrip("/"), pid=(pids or {}).get(sid)))
    return nodes
