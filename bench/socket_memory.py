"""``python -m bench.socket_memory``: where a node's memory per idle room socket goes.

Starts one node (``chatsite.serve``, Redis layer, this checkout or ``--product-dir``), opens
``--sockets`` (1,000) idle room sockets to it in one room (one user each, as ``python -m bench``
does), waits until each has had its ``presence`` frame, and prints the node's RSS before and
after: RSS per socket in KB (the figure of issue 16: 48 KB, target 30). With ``--census`` it
also prints what the sockets added to the heap, by type (objects the garbage collector tracks,
and their own sizes: ``sys.getsizeof``), biggest first: where the Python bytes go; then, for one
socket, the attributes of its protocol, transport and consumer with what each holds. (tracemalloc
was tried first: it slowed the node until its handshakes timed out.)

Only loopback addresses; every loop is bounded (connects time out after 15 s each, the whole run
after ``--timeout`` seconds); the node is stopped by its PID at the end."""

import argparse
import asyncio
import json
import os
import secrets
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

from . import cluster
from .cli import DEFAULT_DATABASE_URL, DEFAULT_REDIS_URL, prepare

TOP = 45


def _census() -> dict:
    """Objects the garbage collector tracks, by kind: ``{kind: [count, bytes]}`` (``sys.getsizeof``
    of each: its own size, not what it points to). A coroutine is named by its function, an
    instance's ``__dict__`` and a deque or event held in an attribute by their owner's type (and
    the attribute), so that the kinds say where they come from."""
    import collections
    import gc

    objects = gc.get_objects()
    owner_of_dict, held_by = {}, {}
    for obj in objects:
        d = getattr(obj, "__dict__", None) if not isinstance(obj, type) else None
        if isinstance(d, dict):
            owner = type(obj).__qualname__
            owner_of_dict[id(d)] = owner
            for key, value in list(d.items()):
                if isinstance(value, collections.deque | asyncio.Event | asyncio.Queue | dict | list):
                    held_by[id(value)] = f"{owner}.{key}"
    totals: dict = {}
    for obj in objects:
        t = type(obj)
        name = f"{t.__module__}.{t.__qualname__}"
        if isinstance(obj, type):
            name = f"class {obj.__module__}.{obj.__qualname__}"
        elif t is type(_census.__code__) or name == "builtins.coroutine":
            name = f"coroutine {getattr(obj, '__qualname__', '?')}"
        elif id(obj) in held_by:
            name = f"{name} in {held_by[id(obj)]}"
        elif t is dict and id(obj) in owner_of_dict:
            name = f"__dict__ of {owner_of_dict[id(obj)]}"
        acc = totals.setdefault(name, [0, 0])
        acc[0] += 1
        acc[1] += sys.getsizeof(obj)
    return totals


def _deep_size(obj, seen: set) -> int:
    """``sys.getsizeof`` of ``obj`` and of what its dicts, lists, tuples and sets hold, each
    object counted once in ``seen``: what letting go of ``obj`` could free, at most."""
    if id(obj) in seen:
        return 0
    seen.add(id(obj))
    size = sys.getsizeof(obj)
    if isinstance(obj, dict):
        size += sum(_deep_size(k, seen) + _deep_size(v, seen) for k, v in obj.items())
    elif isinstance(obj, list | tuple | set | frozenset):
        size += sum(_deep_size(v, seen) for v in obj)
    return size


def _attribute_sizes() -> dict:
    """For one socket: ``{kind: [[bytes, attribute, type], ...]}`` of its WebSocket protocol, its
    Twisted transport and its consumer, biggest first (``_deep_size`` of each attribute)."""
    import gc

    found = {}
    for obj in gc.get_objects():
        kind = type(obj).__qualname__
        wanted = kind.endswith("WebSocketProtocol") or kind in ("RoomConsumer", "Server")
        if wanted and kind not in found and hasattr(obj, "__dict__"):
            found[kind] = sorted(
                ([_deep_size(v, set()), k, type(v).__qualname__] for k, v in vars(obj).items()),
                reverse=True,
            )
    return found


def serve_traced() -> None:  # pragma: no cover - runs in the node's process
    """The node's process under ``--census``: ``chatsite.serve`` with two signal handlers;
    SIGUSR1 counts the objects the garbage collector tracks by type (the baseline), SIGUSR2
    counts again and writes the difference to ``$SOCKET_MEMORY_OUT`` as JSON. Cheap enough
    (a walk of the heap, well under a second) to leave the node's timing alone."""
    base = {}

    def snap(*_):
        base.update(_census())
        Path(os.environ["SOCKET_MEMORY_OUT"] + ".base").write_text("ok")

    def dump(*_):
        Path(os.environ["SOCKET_MEMORY_OUT"] + ".attrs").write_text(json.dumps(_attribute_sizes()))
        now = _census()
        diff = {k: [v[0] - base.get(k, [0, 0])[0], v[1] - base.get(k, [0, 0])[1]] for k, v in now.items()}
        Path(os.environ["SOCKET_MEMORY_OUT"]).write_text(json.dumps(diff))

    signal.signal(signal.SIGUSR1, snap)
    signal.signal(signal.SIGUSR2, dump)
    from chatsite import serve

    sys.argv = ["chatsite.serve", *sys.argv[2:]]
    serve.main()


async def open_sockets(url: str, room: str, tokens: list[str], concurrency: int = 50) -> list:
    """Open one idle room socket per token; returns them once each has had ``presence``."""
    from websockets.asyncio.client import connect
    from websockets.exceptions import ConnectionClosed, InvalidMessage

    sem = asyncio.Semaphore(concurrency)

    async def one(token):
        for attempt in range(3):  # a handshake refused under load is tried again, twice
            try:
                return await once(token)
            except (OSError, TimeoutError, InvalidMessage, ConnectionClosed):  # 4503 under load too
                if attempt == 2:
                    raise
                await asyncio.sleep(1.0)

    async def once(token):
        async with sem:
            ws = await asyncio.wait_for(
                connect(
                    f"{url}/ws/rooms/{room}/",
                    additional_headers={"Authorization": f"Token {token}"},
                    compression=None,
                    ping_interval=None,
                    max_size=2**22,
                ),
                15,
            )
            for _ in range(10):  # hello, then presence (other frames may come between)
                frame = json.loads(await asyncio.wait_for(ws.recv(), 15))
                if frame["type"] == "presence":
                    return ws
            raise RuntimeError("no presence frame")

    return await asyncio.gather(*(one(t) for t in tokens))


async def drain(sockets, seconds: float) -> None:
    """Read and drop what the node sends (diffs) for ``seconds``, so nothing waits in buffers."""
    deadline = time.monotonic() + seconds

    async def read(ws):
        while (left := deadline - time.monotonic()) > 0:
            try:
                await asyncio.wait_for(ws.recv(), left)
            except TimeoutError:
                return

    await asyncio.gather(*(read(ws) for ws in sockets))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.socket_memory", description=__doc__.split("\n")[0])
    p.add_argument("--sockets", type=int, default=1000)
    p.add_argument("--census", action="store_true", help="count the objects the sockets added, by type")
    p.add_argument("--database-url", default=os.environ.get("BENCH_DATABASE_URL", DEFAULT_DATABASE_URL))
    p.add_argument("--redis-url", default=os.environ.get("BENCH_REDIS_URL", DEFAULT_REDIS_URL))
    p.add_argument("--product-dir", type=Path, default=cluster.REPO_DIR)
    p.add_argument("--timeout", type=float, default=300)
    args = p.parse_args(argv)
    for url in (args.database_url, args.redis_url):
        cluster.check_loopback(url)
    data = prepare(database_url=args.database_url, users=args.sockets, rooms=1, product_dir=args.product_dir)
    log_dir = Path(tempfile.mkdtemp(prefix="bench-socket-memory-"))
    out = log_dir / "census.json"
    prefix = f"chatsite-bench-mem-{os.getpid()}-{secrets.token_hex(4)}"
    env = cluster.node_env(database_url=args.database_url, redis_url=args.redis_url, prefix=prefix)
    port = cluster.free_port()
    cmd = [sys.executable, "-m", "chatsite.serve", "--bind", "127.0.0.1", "--port", str(port)]
    if args.census:
        cmd = [sys.executable, "-c", "import sys; from bench.socket_memory import serve_traced; serve_traced()",
               "serve", "--bind", "127.0.0.1", "--port", str(port)]  # fmt: skip
    full_env = {
        **os.environ,
        **env,
        "SERVER_ID": "node-1",
        "PORT": str(port),
        "SOCKET_MEMORY_OUT": str(out),
        "PYTHONPATH": os.pathsep.join([str(args.product_dir), str(cluster.REPO_DIR)]),
    }
    with open(log_dir / "node-1.log", "wb") as log:
        process = subprocess.Popen(
            cmd,
            cwd=args.product_dir,
            env=full_env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    node = cluster.Node(
        server_id="node-1",
        url=f"ws://127.0.0.1:{port}",
        pid=process.pid,
        process=process,
        log_path=log_dir / "node-1.log",
    )
    try:
        cluster.wait_healthy([node], timeout=240 if args.census else 60)
        ps = psutil.Process(process.pid)
        tokens, room = data["tokens"][: args.sockets], data["rooms"][0]

        async def run():
            async with asyncio.timeout(args.timeout):
                # a first socket warms up what every socket shares (pools, caches, the layer)
                warm = await open_sockets(node.url, room, tokens[:1])
                await drain(warm, 2.0)
                before = ps.memory_info().rss
                if args.census:
                    os.kill(process.pid, signal.SIGUSR1)
                    for _ in range(600):  # bounded: up to 60 s for the baseline snapshot
                        await asyncio.sleep(0.1)
                        if Path(f"{out}.base").exists():
                            break
                    await asyncio.sleep(1.0)
                started = time.monotonic()
                sockets = await open_sockets(node.url, room, tokens[1:], 8 if args.census else 50)
                opened = time.monotonic() - started
                await drain(sockets, 3.0)  # the presence diffs of the storm go out
                after = ps.memory_info().rss
                if args.census:
                    os.kill(process.pid, signal.SIGUSR2)
                    for _ in range(300):  # bounded: up to 30 s for the dump
                        await asyncio.sleep(0.1)
                        if out.exists() and out.stat().st_size:
                            break
                    await asyncio.sleep(0.5)
                for ws in [*warm, *sockets]:
                    await ws.close()
                return before, after, len(sockets), opened

        before, after, count, opened = asyncio.run(run())
        print(f"{count} idle sockets opened in {opened:.1f} s on one node ({args.product_dir})")
        print(f"RSS before {before / 2**20:.1f} MB, after {after / 2**20:.1f} MB: "
              f"{(after - before) / 1024 / count:.1f} KB per socket"
             )  # fmt: skip
        if args.census:
            diff = json.loads(out.read_text())
            rows = sorted(diff.items(), key=lambda kv: -kv[1][1])
            total = sum(v[1] for v in diff.values())
            print(f"objects the GC tracks: {total / 1024 / count:.1f} KB per socket (their own sizes)")
            print(f"{'objects/socket':>14}  {'bytes/socket':>12}  type")
            for name, (n, size) in rows[:TOP]:
                print(f"{n / count:14.2f}  {size / count:12.0f}  {name}")
            for kind, attributes in json.loads(Path(f"{out}.attrs").read_text()).items():
                print(f"\none socket's {kind}: its attributes, with what they hold (bytes, biggest first)")
                for size, name, type_name in attributes[:12]:
                    print(f"{size:14}  {name} ({type_name})")
    finally:
        node.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
