"""``python -m bench reconnect-storm``: a node holding thousands of members is stopped; are they
all back on the other nodes, resumed with nothing missing, and how fast (issue 16, item 3)?

Shape (every figure an option): 3 nodes; ``--victim-clients`` (3,000) clients on node-1 and
``--other-clients`` (600) spread over the other nodes; client ``i`` joins room ``i % --rooms``
(30 rooms: 120 members each, 100 of them on node-1). One sender per room (room ``r``'s first
client on node-1 for an even ``r``, its first client elsewhere for an odd one) sends
``--rate`` (0.5) messages per second from the start of the run to ``--duration`` (20 s). At
``--kill-after`` (3 s) node-1 gets SIGTERM (``--signal term``) or SIGKILL (``kill``); ``both``
(the default) runs the whole shape twice, on fresh nodes.

The clients do what the room page does (``static/rooms/room/connection.js``): on a close with
1012 (node restarting) they reconnect after a wait drawn from 0 to ``--restart-spread`` seconds
(2, the page's ``restartDelay``; 0: at once, as the page did before), the first time; on any other close (1006 after a
SIGKILL, a refused TCP connect, a handshake timeout, 4503, 4429) they wait 1 s, 2 s, 4 s ...
(capped at 30 s) with ±20 % jitter. There is no balancer in the bench, so a client picks one of
the other nodes at random (``--urls``-style list; the stopped node stays in the list, as behind
a balancer that has not noticed yet). They reconnect with ``?after_seq=<highest seq held with no
gap before it>`` and are *back* when ``resumed`` arrives. A sender keeps its unacked messages
(by ``client_msg_id``) and sends them again after each ``resumed``, and after ``retry_after`` (or
1 s) when a send is answered ``unavailable`` or ``rate_limited``, as the page's outbox does; the
server stores each once.

Figures: time from the signal until every member of node-1 is back (and p50 / p99 of each
client's time back), reconnect attempts, what each close and failed attempt was (close codes,
``connect_refused``, ``connect_timeout``, ``http_<status>``), then the delivery check once
sending ended: every client must hold every seq of its room from its first ``hello``'s
``last_seq`` + 1 to the room's last seq, none twice on one socket (``missing`` and
``duplicate`` must be 0); ``repaired_by_fetch`` counts seqs a client only got through ``fetch``
at the end (a live frame the at-most-once layer dropped), ``lost_sends`` messages a sender sent
that no member of the room received, ``stored_twice`` one message under two seqs.

Load generator: ``--lg-procs`` (2) processes (spawn), client ``i`` in process ``i % procs``,
each a uvloop loop. Every loop is bounded: handshakes by ``--connect-timeout`` (10 s), the
initial connects by 300 s, each phase by its deadline, the whole run by ``--timeout`` (600 s);
the nodes are stopped by PID at the end (SIGTERM, SIGKILL after 10 s), the workers by the parent.
"""

import argparse
import asyncio
import datetime as dt
import json
import multiprocessing
import os
import random
import secrets
import signal
import sys
import tempfile
import time
from collections import Counter
from multiprocessing.connection import wait as conn_wait
from pathlib import Path

from . import cluster, stats
from .cli import DEFAULT_REDIS_URL, OUT_DIR, git_rev, machine, prepare

DEFAULT_DATABASE_URL = "postgres://postgres@127.0.0.1:5432/chatsite_bench_reconnect"
WS_PATH = "/ws/rooms/{room}/"
SERVICE_RESTART = 1012
STOP_CODES = {4000, 4401, 4403, 4404, 4410}  # the page stops; the bench counts them as failures


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def backoff_delay(attempt: int) -> float:
    """``seq.js``'s ``backoffDelay`` in seconds: 1, 2, 4 ... capped at 30, ±20 % jitter."""
    base = min(30.0, 1.0 * 2 ** max(0, attempt - 1))
    return min(30.0, base * (0.8 + random.random() * 0.4))


class Client:
    """One member: its socket, the seqs it holds, its reconnects; a sender also has an outbox."""

    def __init__(self, index: int, room: str, token: str, home: int, sender: bool):
        self.index, self.room, self.token, self.node = index, room, token, home
        self.sender = sender
        self.ws = None
        self.base = None  # last_seq of the first hello: this client must hold base+1 .. N
        self.seqs: set[int] = set()
        self.high = 0  # highest seq held with every seq from base+1 up to it
        self.keys: set[tuple[int, int]] = set()  # (sender, k) of every message received
        self.key_seq: dict[tuple[int, int], int] = {}
        self.stored_twice = 0
        self.duplicate = 0
        self.resent_after_resume = 0
        self.attempts = 0
        self.down_at = None  # monotonic time the socket closed (after the signal)
        self.back_at = None  # monotonic time its ``resumed`` came
        self.socket_seqs: set[int] = set()
        self.outbox: dict[str, str] = {}  # client_msg_id -> frame text, until acked
        self.sent_keys: set[int] = set()
        self.acked = 0
        self.fetched = 0

    def hold(self, seq: int, key) -> None:
        if seq in self.socket_seqs:
            self.duplicate += 1
            return
        self.socket_seqs.add(seq)
        if seq in self.seqs:
            self.resent_after_resume += 1
            return
        self.seqs.add(seq)
        if key is not None:
            if key in self.key_seq and self.key_seq[key] != seq:
                self.stored_twice += 1
            self.key_seq[key] = seq
            self.keys.add(key)
        while self.high + 1 in self.seqs:
            self.high += 1


class Worker:
    def __init__(self, conn, cfg: dict):
        self.conn = conn
        self.cfg = cfg
        self.urls = cfg["urls"]
        self.tag = cfg["tag"]
        self.clients = [Client(*c) for c in cfg["clients"]]
        self.events = Counter()  # close codes and failed attempts, after the signal
        self.before = Counter()  # the same before it (initial connects)
        self.signalled_at = None
        self.sending = False
        self.stopping = False

    def count(self, what: str) -> None:
        (self.events if self.signalled_at is not None else self.before)[what] += 1

    async def open(self, c: Client, resume: bool) -> bool:
        """One attempt: handshake, ``hello`` (and ``resumed`` when resuming); reads until closed."""
        from websockets.asyncio.client import connect
        from websockets.exceptions import ConnectionClosed, InvalidStatus

        url = self.urls[c.node] + WS_PATH.format(room=c.room)
        if resume:
            url += f"?after_seq={c.high}"
        timeout = self.cfg["connect_timeout"]
        try:
            async with asyncio.timeout(timeout):
                ws = await connect(
                    url,
                    additional_headers={"Authorization": f"Token {c.token}"},
                    compression=None,
                    open_timeout=timeout,
                    close_timeout=2,
                    max_size=2**20,
                    ping_interval=None,
                )
                hello = json.loads(await ws.recv())
        except TimeoutError:
            self.count("connect_timeout")
            return False
        except InvalidStatus as exc:
            self.count(f"http_{exc.response.status_code}")
            return False
        except ConnectionRefusedError:
            self.count("connect_refused")
            return False
        except ConnectionClosed as exc:
            self.count(f"refused_{exc.rcvd.code if exc.rcvd else 1006}")
            return False
        except Exception as exc:
            self.count(f"connect_error_{type(exc).__name__}")
            return False
        if hello.get("type") != "hello":
            self.count("no_hello")
            await ws.close()
            return False
        c.ws = ws
        c.socket_seqs = set()
        if c.base is None:
            c.base = c.high = hello["last_seq"]
        return True

    async def read(self, c: Client) -> int:
        """Read frames until the socket closes; returns the close code (1006: no close frame)."""
        from websockets.exceptions import ConnectionClosed

        try:
            async for raw in c.ws:
                frame = json.loads(raw)
                kind = frame.get("type")
                if kind == "message":
                    m = frame["message"]
                    try:
                        body = json.loads(m["body"])
                        key = (body["s"], body["k"]) if body.get("b") == self.tag else None
                    except (ValueError, KeyError, TypeError):
                        key = None
                    c.hold(m["seq"], key)
                elif kind == "resumed":
                    if c.down_at is not None and c.back_at is None:
                        c.back_at = time.monotonic()
                    if c.sender:
                        for text in list(c.outbox.values()):  # stored once by client_msg_id
                            await c.ws.send(text)
                elif kind == "resync":
                    self.count("resync")
                elif kind == "ack":
                    if c.outbox.pop(frame.get("client_msg_id"), None) is not None:
                        c.acked += 1
                elif kind == "history":
                    for m in frame["messages"]:
                        if m["seq"] not in c.seqs:
                            c.fetched += 1
                        try:
                            body = json.loads(m["body"])
                            key = (body["s"], body["k"])
                        except (ValueError, KeyError, TypeError):
                            key = None
                        c.hold(m["seq"], key)
                elif kind == "error":
                    self.count(f"error_frame_{frame.get('code')}")
                    text = c.outbox.get(frame.get("client_msg_id"))
                    if text is not None and frame.get("code") in ("unavailable", "rate_limited"):
                        # Not stored: as the page (outbox.js "retry"/"retry-later"), send it
                        # again with the same id after retry_after, or after a pause.
                        asyncio.get_running_loop().call_later(
                            float(frame.get("retry_after") or 1.0), self.resend, c, frame["client_msg_id"]
                        )
            code = c.ws.close_code
        except ConnectionClosed as exc:
            code = exc.rcvd.code if exc.rcvd else 1006
        except Exception as exc:
            self.count(f"reader_error_{type(exc).__name__}")
            code = 1006
        c.ws = None
        return code or 1006

    def resend(self, c: Client, client_msg_id: str) -> None:
        """Send an unacked message again on the client's socket now, if it has one (else the
        next ``resumed`` sends it)."""
        text = c.outbox.get(client_msg_id)
        if text is not None and c.ws is not None and not self.stopping:
            asyncio.ensure_future(self._send_quietly(c.ws, text))

    @staticmethod
    async def _send_quietly(ws, text: str) -> None:
        try:
            await ws.send(text)
        except Exception:  # closed meanwhile: the next resumed sends it
            pass

    async def life(self, c: Client, start_sem: asyncio.Semaphore) -> None:
        """The client's whole run: connect, then reconnect after every close, until stopped."""
        async with start_sem:
            for _ in range(5):  # the initial connect: bounded retries
                if await self.open(c, resume=False):
                    break
                await asyncio.sleep(backoff_delay(1))
        attempt = 0
        while c.ws is not None and not self.stopping:
            code = await self.read(c)
            if self.stopping:
                return
            if self.signalled_at is not None and c.down_at is None:
                c.down_at = time.monotonic()
            self.count(f"close_{code}")
            if code in STOP_CODES:
                return
            # As the page: 1012 the first time -> within --restart-spread; otherwise backoff with jitter.
            while not self.stopping:
                attempt += 1
                c.attempts += 1
                if code == SERVICE_RESTART and attempt == 1:  # seq.js restartDelay
                    delay = random.random() * self.cfg["restart_spread"]
                else:
                    delay = backoff_delay(attempt)
                await asyncio.sleep(delay)
                c.node = random.choice([n for n in range(len(self.urls)) if n != c.node])
                if await self.open(c, resume=True):
                    attempt = 0
                    break
                code = None

    async def send_loop(self, c: Client, t0: float, t_end: float, rate: float) -> None:
        k = 0
        interval = 1.0 / rate
        start = t0 + (c.index % 97) / 97 * interval  # senders staggered over one interval
        while True:
            due = start + k * interval
            if due >= t_end:
                return
            now = time.monotonic()
            if due > now:
                await asyncio.sleep(due - now)
            body = json.dumps({"b": self.tag, "s": c.index, "k": k, "t": time.monotonic()})
            cmid = f"{self.tag}-{c.index}-{k}"
            text = json.dumps({"type": "message.send", "body": body, "client_msg_id": cmid})
            c.outbox[cmid] = text
            c.sent_keys.add(k)
            k += 1
            ws = c.ws
            if ws is not None:
                try:
                    await ws.send(text)
                except Exception:
                    pass  # sent again after the next resumed

    def status(self) -> dict:
        victims = [c for c in self.clients if c.down_at is not None]
        return {
            "connected": sum(1 for c in self.clients if c.ws is not None),
            "down": len(victims),
            "back": sum(1 for c in victims if c.back_at is not None),
            "outbox": sum(len(c.outbox) for c in self.clients),
        }

    async def run(self) -> None:
        loop = asyncio.get_running_loop()

        async def recv():
            try:
                return await loop.run_in_executor(None, self.conn.recv)
            except (EOFError, OSError):
                return ("quit",)

        sem = asyncio.Semaphore(self.cfg["connect_concurrency"])
        lives = [asyncio.ensure_future(self.life(c, sem)) for c in self.clients]
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:  # until each client connected once or gave up
            await asyncio.sleep(0.3)
            self.conn.send(("connecting", self.status()["connected"]))
            if all(c.base is not None or lf.done() for c, lf in zip(self.clients, lives)):
                break
        self.conn.send(("connected", {"connected": self.status()["connected"], "errors": dict(self.before)}))

        async def report():
            while not self.stopping:
                self.conn.send(("status", self.status()))
                await asyncio.sleep(0.25)

        reporter = None
        senders = []
        cmd = await recv()
        while cmd[0] != "quit":
            if cmd[0] == "go":
                plan = cmd[1]
                senders = [
                    asyncio.ensure_future(self.send_loop(c, plan["t0"], plan["t_end"], plan["rate"]))
                    for c in self.clients
                    if c.sender and c.ws is not None
                ]
                reporter = asyncio.ensure_future(report())
            elif cmd[0] == "signalled":
                self.signalled_at = cmd[1]
            elif cmd[0] == "final":
                await self.final(cmd[1], senders)
            cmd = await recv()
        self.stopping = True
        if reporter is not None:
            reporter.cancel()
        for c in self.clients:
            if c.ws is not None:
                try:
                    await asyncio.wait_for(c.ws.close(), 2)
                except Exception:
                    pass
        for lf in lives:
            lf.cancel()

    async def final(self, last_seqs: dict, senders: list):
        """Wait (bounded) for every client to hold its room's seqs up to the last one, repair
        what is still missing with ``fetch`` once, then send the result."""
        for s in senders:
            s.cancel()
        deadline = time.monotonic() + self.cfg["final_wait"]
        while time.monotonic() < deadline:
            if all(c.high >= last_seqs[c.room] for c in self.clients if c.base is not None):
                break
            await asyncio.sleep(0.2)
        missing_before_fetch = sum(
            max(0, last_seqs[c.room] - c.base - len([s for s in c.seqs if s > c.base]))
            for c in self.clients
            if c.base is not None
        )
        for c in self.clients:  # gap repair as the page does: fetch after the last held seq
            if c.base is not None and c.high < last_seqs[c.room] and c.ws is not None:
                try:
                    await c.ws.send(
                        json.dumps(
                            {"type": "fetch", "after_seq": c.high, "before_seq": last_seqs[c.room] + 1}
                        )
                    )
                except Exception:
                    pass
        repair_deadline = time.monotonic() + 5
        while time.monotonic() < repair_deadline:
            if all(c.high >= last_seqs[c.room] for c in self.clients if c.base is not None):
                break
            await asyncio.sleep(0.2)
        per_room_keys: dict[str, list] = {}
        for c in self.clients:
            per_room_keys.setdefault(c.room, set()).update(c.keys)
        down = [c for c in self.clients if c.down_at is not None]
        result = {
            "clients": len(self.clients),
            "never_connected": sum(1 for c in self.clients if c.base is None),
            "down": len(down),
            "back_s": [c.back_at - self.signalled_at for c in down if c.back_at is not None],
            "not_back": sum(1 for c in down if c.back_at is None),
            "attempts": sum(c.attempts for c in self.clients),
            "missing": sum(
                max(0, last_seqs[c.room] - c.base - len([s for s in c.seqs if s > c.base]))
                for c in self.clients
                if c.base is not None
            ),
            "missing_before_fetch": missing_before_fetch,
            "repaired_by_fetch": sum(c.fetched for c in self.clients),
            "duplicate": sum(c.duplicate for c in self.clients),
            "resent_after_resume": sum(c.resent_after_resume for c in self.clients),
            "stored_twice": sum(c.stored_twice for c in self.clients),
            "events": dict(self.events),
            "before": dict(self.before),
            "sent": {c.index: sorted(c.sent_keys) for c in self.clients if c.sender},
            "sender_room": {c.index: c.room for c in self.clients if c.sender},
            "unacked": sum(len(c.outbox) for c in self.clients),
            "room_keys": {r: sorted(ks) for r, ks in per_room_keys.items()},
        }
        self.conn.send(("result", result))


def worker_main(conn, cfg: dict) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        import uvloop
    except ImportError:
        asyncio.run(Worker(conn, cfg).run())
    else:
        uvloop.run(Worker(conn, cfg).run())


def layout(args) -> list[tuple]:
    """``(index, room, node, sender)`` per client: the first ``victim`` clients on node 0 (node-1),
    the rest round-robin on the other nodes; room ``i % rooms``; one sender per room."""
    total = args.victim_clients + args.other_clients
    rows = []
    for i in range(total):
        node = 0 if i < args.victim_clients else 1 + (i - args.victim_clients) % (args.nodes - 1)
        rows.append([i, i % args.rooms, node, False])
    for r in range(args.rooms):
        members = [row for row in rows if row[1] == r]
        want_victim = r % 2 == 0
        pick = next((m for m in members if (m[2] == 0) == want_victim), members[0] if members else None)
        if pick is not None:
            pick[3] = True
    return rows


def room_last_seqs(database_url: str, slugs: list[str]) -> dict[str, int]:
    import psycopg

    with psycopg.connect(database_url, connect_timeout=5) as conn:
        rows = conn.execute("SELECT slug, last_seq FROM rooms_room WHERE slug = ANY(%s)", [slugs]).fetchall()
    return dict(rows)


def run_once(args, sig: str, data: dict, log_dir: Path) -> dict:
    """One storm on fresh nodes: connect, send, signal node-1, wait for everyone back, check."""
    rows = layout(args)
    tokens, slugs = data["tokens"], data["rooms"]
    prefix = f"chatsite-bench-rc-{os.getpid()}-{secrets.token_hex(4)}"
    env = cluster.node_env(database_url=args.database_url, redis_url=args.redis_url, prefix=prefix)
    nodes = cluster.start_nodes(args.nodes, env=env, log_dir=log_dir / sig, product_dir=args.product_dir)
    procs, conns = [], []
    result: dict = {"signal": sig}
    try:
        cluster.wait_healthy(nodes, timeout=90)
        urls = [n.url for n in nodes]
        tag = secrets.token_hex(3)
        ctx = multiprocessing.get_context("spawn")
        n_procs = max(1, args.lg_procs)
        for w in range(n_procs):
            parent, child = ctx.Pipe()
            cfg = {
                "urls": urls,
                "tag": tag,
                "clients": [
                    (i, slugs[r], tokens[i], node, sender) for i, r, node, sender in rows if i % n_procs == w
                ],
                "connect_concurrency": max(1, args.connect_concurrency // n_procs),
                "connect_timeout": args.connect_timeout,
                "final_wait": args.final_wait,
                "restart_spread": args.restart_spread,
            }
            p = ctx.Process(target=worker_main, args=(child, cfg), daemon=True, name=f"bench-reconnect-{w}")
            p.start()
            child.close()
            procs.append(p)
            conns.append(parent)

        def gather(kind: str, timeout: float, on_other=None) -> list:
            got = [None] * len(conns)
            deadline = time.monotonic() + timeout
            while any(g is None for g in got):
                if time.monotonic() > deadline:
                    raise TimeoutError(f"no {kind!r} from every worker in {timeout:.0f} s")
                for c in conn_wait([c for c, g in zip(conns, got) if g is None], timeout=0.3):
                    msg = c.recv()
                    i = conns.index(c)
                    if msg[0] == kind:
                        got[i] = msg[1]
                    elif on_other:
                        on_other(i, msg)
            return got

        t_connect = time.monotonic()
        infos = gather("connected", 330)
        result["initial_connected"] = sum(i["connected"] for i in infos)
        result["initial_connect_s"] = round(time.monotonic() - t_connect, 1)
        result["initial_errors"] = dict(stats.merge_counts(i["errors"] for i in infos))
        log(
            f"  [{sig}] {result['initial_connected']} of {len(rows)} connected in "
            f"{result['initial_connect_s']} s; errors {result['initial_errors']}"
        )
        t0 = time.monotonic() + 0.5
        plan = {"t0": t0, "t_end": t0 + args.duration, "rate": args.rate}
        for c in conns:
            c.send(("go", plan))
        statuses = [{} for _ in conns]

        def pump(until: float) -> None:
            while time.monotonic() < until:
                for c in conn_wait(conns, timeout=0.1):
                    msg = c.recv()
                    if msg[0] == "status":
                        statuses[conns.index(c)] = msg[1]

        pump(t0 + args.kill_after)
        victim = nodes[0]
        t_signal = time.monotonic()
        victim.process.send_signal(signal.SIGTERM if sig == "term" else signal.SIGKILL)
        for c in conns:
            c.send(("signalled", t_signal))
        log(f"  [{sig}] node-1 (pid {victim.pid}) signalled: SIG{sig.upper()}")
        victim_members = sum(1 for r in rows if r[2] == 0)
        all_back_at = None
        last_log = 0.0
        end = max(t0 + args.duration, t_signal + args.back_timeout)
        while time.monotonic() < end:
            pump(time.monotonic() + 0.25)
            down = sum(s.get("down", 0) for s in statuses)
            back = sum(s.get("back", 0) for s in statuses)
            now = time.monotonic()
            if all_back_at is None and down >= victim_members and back >= down:
                all_back_at = now
            if now - last_log > 2:
                last_log = now
                log(f"  [{sig}] t+{now - t_signal:5.1f} s: down {down}, back {back}")
            if all_back_at is not None and now >= t0 + args.duration:
                break
        result["victim_exit"] = victim.process.wait(timeout=15)
        # Sending has ended: let the outboxes drain (acks), then read each room's last seq.
        drain_end = time.monotonic() + 15
        while time.monotonic() < drain_end:
            pump(time.monotonic() + 0.25)
            if sum(s.get("outbox", 0) for s in statuses) == 0:
                break
        time.sleep(0.5)
        last = room_last_seqs(args.database_url, sorted({slugs[r] for _, r, _, _ in rows}))
        for c in conns:
            c.send(("final", last))
        results = gather("result", args.final_wait + 30, on_other=lambda i, m: None)
        back = sorted(x for r in results for x in r["back_s"])
        sent_keys, sender_room, room_keys = {}, {}, {}
        for r in results:
            sent_keys.update(r["sent"])
            sender_room.update(r["sender_room"])
            for room, ks in r["room_keys"].items():
                room_keys.setdefault(room, set()).update(tuple(k) for k in ks)
        lost = sum(
            1
            for s, ks in sent_keys.items()
            for k in ks
            if (int(s), k) not in room_keys.get(sender_room[s], ())
        )
        result.update(
            {
                "clients": len(rows),
                "victim_members": victim_members,
                "down": sum(r["down"] for r in results),
                "back": len(back),
                "not_back": sum(r["not_back"] for r in results),
                "all_back_s": round(back[-1], 2)
                if back and all(r["not_back"] == 0 for r in results)
                else None,
                "back_p50_s": round(stats.percentile(back, 50), 2) if back else None,
                "back_p99_s": round(stats.percentile(back, 99), 2) if back else None,
                "reconnect_attempts": sum(r["attempts"] for r in results),
                "events": dict(stats.merge_counts(r["events"] for r in results)),
                "messages_sent": sum(len(ks) for ks in sent_keys.values()),
                "messages_stored": sum(last[s] for s in last),
                "unacked": sum(r["unacked"] for r in results),
                "lost_sends": lost,
                "missing": sum(r["missing"] for r in results),
                "missing_before_fetch": sum(r["missing_before_fetch"] for r in results),
                "repaired_by_fetch": sum(r["repaired_by_fetch"] for r in results),
                "duplicate": sum(r["duplicate"] for r in results),
                "resent_after_resume": sum(r["resent_after_resume"] for r in results),
                "stored_twice": sum(r["stored_twice"] for r in results),
                "never_connected": sum(r["never_connected"] for r in results),
            }
        )
        return result
    finally:
        for c in conns:
            try:
                c.send(("quit",))
            except (OSError, ValueError):
                pass
        for p in procs:
            p.join(5)
            if p.is_alive():
                p.terminate()
                p.join(3)
            if p.is_alive():
                p.kill()
        cluster.stop_nodes(nodes)


def render(results: list[dict]) -> str:
    lines = [
        "| signal | members on node-1 | all back in | back p50 / p99 | not back | attempts | missing | duplicate | lost sends | stored twice | fetched at end | closes and failed attempts |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        ev = ", ".join(f"{k} {v}" for k, v in sorted(r["events"].items(), key=lambda kv: -kv[1]))
        lines.append(
            f"| SIG{r['signal'].upper()} | {r['victim_members']:,} | "
            f"{'{:.1f} s'.format(r['all_back_s']) if r['all_back_s'] is not None else 'not all'} | "
            f"{r['back_p50_s']} / {r['back_p99_s']} s | {r['not_back']} | {r['reconnect_attempts']:,} | "
            f"{r['missing']} | {r['duplicate']} | {r['lost_sends']} | {r['stored_twice']} | "
            f"{r['repaired_by_fetch']} | {ev} |"
        )
    return "\n".join(lines)


def parse_args(argv):
    p = argparse.ArgumentParser(prog="python -m bench reconnect-storm", description=__doc__.split("\n\n")[0])
    p.add_argument("--signal", choices=("term", "kill", "both"), default="both")
    p.add_argument("--nodes", type=int, default=3)
    p.add_argument("--victim-clients", type=int, default=3000, help="clients on node-1, the node stopped")
    p.add_argument("--other-clients", type=int, default=600, help="clients on the other nodes")
    p.add_argument("--rooms", type=int, default=30)
    p.add_argument("--rate", type=float, default=0.5, help="messages per second per sender (one per room)")
    p.add_argument("--duration", type=float, default=20.0, help="seconds of sending")
    p.add_argument(
        "--kill-after", type=float, default=3.0, help="seconds into sending when node-1 is signalled"
    )
    p.add_argument("--back-timeout", type=float, default=60.0, help="max seconds to wait for everyone back")
    p.add_argument("--final-wait", type=float, default=15.0, help="max seconds for the last seqs to arrive")
    p.add_argument("--connect-concurrency", type=int, default=100, help="initial handshakes in flight")
    p.add_argument("--connect-timeout", type=float, default=10.0)
    p.add_argument(
        "--restart-spread",
        type=float,
        default=2.0,
        help="seconds over which the first reconnect after 1012 is drawn (the page's 2; 0: at once)",
    )
    p.add_argument("--lg-procs", type=int, default=2)
    p.add_argument(
        "--database-url", default=os.environ.get("BENCH_RECONNECT_DATABASE_URL", DEFAULT_DATABASE_URL)
    )
    p.add_argument("--redis-url", default=os.environ.get("BENCH_REDIS_URL", DEFAULT_REDIS_URL))
    p.add_argument("--product-dir", type=Path, default=cluster.REPO_DIR)
    p.add_argument("--out", type=Path, default=OUT_DIR)
    p.add_argument("--timeout", type=float, default=600.0, help="bound on the whole run, seconds")
    args = p.parse_args(argv)
    if args.nodes < 2:
        p.error("--nodes must be at least 2")
    return args


def main(argv=None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    for u in (args.database_url, args.redis_url):
        cluster.check_loopback(u)
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    signal.signal(signal.SIGALRM, signal.default_int_handler)
    signal.alarm(int(args.timeout))
    total = args.victim_clients + args.other_clients
    args.out.mkdir(parents=True, exist_ok=True)
    log_dir = Path(tempfile.mkdtemp(prefix="bench-reconnect-storm-", dir=args.out))
    log(
        f"bench reconnect-storm: {args.nodes} nodes, {args.victim_clients} clients on node-1, "
        f"{args.other_clients} on the others, {args.rooms} rooms, {args.rate} msg/s per room for "
        f"{args.duration} s, node-1 signalled at {args.kill_after} s"
    )
    started = time.time()
    try:
        data = prepare(
            database_url=args.database_url, users=total, rooms=args.rooms, product_dir=args.product_dir
        )
        results = []
        for sig in ("term", "kill") if args.signal == "both" else (args.signal,):
            results.append(run_once(args, sig, data, log_dir))
    except KeyboardInterrupt:
        log("interrupted (Ctrl-C, SIGTERM or the --timeout bound): every process started is stopped")
        return 130
    finally:
        signal.alarm(0)
    doc = {
        "scenario": "reconnect-storm",
        "command": "python -m bench reconnect-storm " + " ".join(sys.argv[2:] if argv is None else argv),
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "machine": machine(),
        "product_rev": git_rev(args.product_dir),
        "elapsed_s": round(time.time() - started, 1),
        "node_logs": str(log_dir),
        "runs": results,
    }
    print("\n## reconnect-storm\n")
    print(render(results))
    path = args.out / f"reconnect-storm-{dt.datetime.now().strftime('%Y%m%d-%H%M%S')}.json"
    path.write_text(json.dumps(doc, indent=2))
    print(f"\nJSON: {path}\nnode logs: {log_dir}")
    ok = all(
        r["not_back"] == 0 and r["missing"] == 0 and r["duplicate"] == 0 and r["lost_sends"] == 0
        for r in results
    )
    return 0 if ok else 1
