"""The load generator: ``procs`` worker processes (multiprocessing, spawn), each an asyncio loop
holding a slice of the clients (client ``i`` goes to worker ``i % procs``).

One clock: every timestamp is ``time.monotonic()`` (CLOCK_MONOTONIC on Linux, one clock for all
processes of the machine). A sender puts its send time in the message body; whichever worker
receives the message computes ``receive time - send time``.

Message body (JSON text inside the product's ``message.send``): ``{"b": run tag, "p": phase,
"s": sender index, "k": message number, "t": send time (s), "x": padding}``.

Parent ↔ worker over a Pipe:

- worker → ``("connected", info)`` once its clients connected (or failed);
- parent → ``("phase", plan)``; worker → ``("progress", sent, acks, received)`` every 0.2 s,
  ``("sent", {sender: count})`` when its senders are done;
- parent → ``("stop",)``; worker → ``("result", data)``;
- parent → ``("quit",)``: the worker closes its sockets and exits.

Every loop is bounded: connects by a timeout each, sending by a count and a deadline, the phase
by the parent's deadline; the worker exits by itself when the parent goes away.
"""

import asyncio
import json
import math
import multiprocessing
import signal
import time
from collections import defaultdict
from multiprocessing.connection import wait as conn_wait

import psutil

from . import stats

WS_PATH = "/ws/rooms/{room}/"


class _Client:
    __slots__ = ("index", "url", "room", "token", "ws", "node", "seen", "reader", "connect_ms", "msg_counter")

    def __init__(self, index, url, room, token):
        self.index, self.url, self.room, self.token = index, url, room, token
        self.ws = None
        self.node = None
        self.seen = set()
        self.reader = None
        self.connect_ms = None
        self.msg_counter = 0


class Worker:
    def __init__(self, conn, cfg: dict):
        self.conn = conn
        self.cfg = cfg
        self.tag = cfg["tag"]
        self.clients = [_Client(*c) for c in cfg["clients"]]
        self.by_index = {c.index: c for c in self.clients}
        self.errors = defaultdict(int)
        self.error_samples = []
        self.phase = 0
        self.in_phase = False
        self.reset_phase()

    def reset_phase(self):
        self.sent = defaultdict(int)
        self.acks = 0
        self.received = 0
        self.latencies = []
        self.matrix = defaultdict(lambda: defaultdict(int))  # receiving node -> sending node -> n
        self.first_recv = None
        self.last_recv = None
        self.loop_delays = []
        for c in self.clients:
            c.seen = set()
        self.errors = defaultdict(int)

    def error(self, kind, detail=""):
        self.errors[kind] += 1
        if detail and len(self.error_samples) < 10:
            self.error_samples.append(f"{kind}: {detail}"[:200])

    # --- connect ----------------------------------------------------------------------------
    async def connect_one(self, c: _Client, sem: asyncio.Semaphore):
        from websockets.asyncio.client import connect
        from websockets.exceptions import ConnectionClosed, InvalidStatus

        timeout = self.cfg["connect_timeout"]
        async with sem:
            t0 = time.monotonic()
            try:
                async with asyncio.timeout(timeout):
                    ws = await connect(
                        c.url + WS_PATH.format(room=c.room),
                        additional_headers={"Authorization": f"Token {c.token}"},
                        compression=None,
                        open_timeout=timeout,
                        close_timeout=2,
                        max_size=2**20,
                        ping_interval=None,
                    )
                    try:
                        hello = json.loads(await ws.recv())
                    except ConnectionClosed as exc:
                        code = exc.rcvd.code if exc.rcvd else "none"
                        self.error(f"refused_{code}", f"client {c.index}")
                        return
                    if hello.get("type") != "hello":
                        self.error("no_hello", str(hello)[:100])
                        await ws.close()
                        return
            except TimeoutError:
                self.error("connect_timeout", f"client {c.index}")
                return
            except InvalidStatus as exc:
                self.error(f"http_{exc.response.status_code}", f"client {c.index}")
                return
            except OSError as exc:
                self.error("connect_error", f"client {c.index}: {exc}")
                return
            except Exception as exc:
                self.error("connect_error", f"client {c.index}: {type(exc).__name__} {exc}")
                return
            c.connect_ms = (time.monotonic() - t0) * 1000
            c.ws = ws
            c.node = hello.get("server_id")
            c.reader = asyncio.ensure_future(self.read(c))

    async def read(self, c: _Client):
        from websockets.exceptions import ConnectionClosed

        loads = json.loads
        monotonic = time.monotonic
        try:
            async for raw in c.ws:
                now = monotonic()
                try:
                    frame = loads(raw)
                    kind = frame.get("type")
                    if kind == "message":
                        m = frame["message"]
                        body = loads(m["body"])
                        if not isinstance(body, dict) or body.get("b") != self.tag:
                            self.error("foreign_message")
                            continue
                        if body.get("p") != self.phase or not self.in_phase:
                            self.error("late_delivery")
                            continue
                        key = (body["s"], body["k"])
                        if key in c.seen:
                            self.error("duplicate")
                            continue
                        c.seen.add(key)
                        self.received += 1
                        self.latencies.append((now - body["t"]) * 1000.0)
                        self.matrix[c.node][m.get("server_id")] += 1
                        if self.first_recv is None:
                            self.first_recv = now
                        self.last_recv = now
                    elif kind == "ack":
                        self.acks += 1
                    elif kind == "error":
                        self.error(f"error_frame_{frame.get('code')}", str(frame)[:150])
                except (ValueError, KeyError, TypeError, AttributeError) as exc:
                    self.error("bad_frame", f"{type(exc).__name__}: {str(raw)[:80]}")
        except ConnectionClosed as exc:
            code = exc.rcvd.code if exc.rcvd else None
            self.error("closed_during_run", f"client {c.index} code {code}")
        except Exception as exc:
            self.error("reader_error", f"{type(exc).__name__}: {exc}")

    # --- a phase ----------------------------------------------------------------------------
    async def send_loop(self, c: _Client, plan: dict, offset: float):
        interval = 1.0 / plan["rate"]
        t0 = plan["t0"] + offset
        deadline = plan["t0"] + plan["duration"] + 1.0
        pad = "x" * plan["payload_bytes"]
        for k in range(plan["messages"]):
            due = t0 + k * interval
            now = time.monotonic()
            if now > deadline:
                self.error("send_deadline_passed")
                break
            if due > now:
                await asyncio.sleep(due - now)
            body = json.dumps(
                {"b": self.tag, "p": self.phase, "s": c.index, "k": k, "t": time.monotonic(), "x": pad},
                separators=(",", ":"),
            )
            try:
                await c.ws.send(
                    json.dumps(
                        {
                            "type": "message.send",
                            "body": body,
                            "client_msg_id": f"{self.tag}-{self.phase}-{c.index}-{k}",
                        }
                    )
                )
            except Exception as exc:
                self.error("send_error", f"client {c.index}: {type(exc).__name__}")
                break
            self.sent[c.index] += 1

    async def loop_delay_probe(self, interval: float = 0.01):
        """Event-loop delay: how late a 10 ms sleep wakes up, sampled all phase long."""
        while self.in_phase:
            t = time.monotonic()
            await asyncio.sleep(interval)
            self.loop_delays.append(max(0.0, (time.monotonic() - t - interval) * 1000.0))

    async def run_phase(self, plan: dict, recv_cmd):
        self.phase = plan["phase"]
        self.reset_phase()
        self.in_phase = True
        probe = asyncio.ensure_future(self.loop_delay_probe())
        senders = [self.by_index[i] for i in plan["senders"] if i in self.by_index and self.by_index[i].ws]
        n_all = max(1, plan["n_senders"])
        interval = 1.0 / plan["rate"]
        tasks = [
            asyncio.ensure_future(self.send_loop(c, plan, (c.index % n_all) * interval / n_all))
            for c in senders
        ]
        sending = asyncio.ensure_future(asyncio.gather(*tasks)) if tasks else None
        sent_reported = False
        cmd_task = asyncio.ensure_future(recv_cmd())
        hard = plan["t0"] + plan["duration"] + plan["hard_extra"]
        while True:
            if not sent_reported and (sending is None or sending.done()):
                self.conn.send(("sent", dict(self.sent)))
                sent_reported = True
            self.conn.send(("progress", sum(self.sent.values()), self.acks, self.received))
            done, _ = await asyncio.wait({cmd_task}, timeout=0.2)
            if done or time.monotonic() > hard:
                break
        self.in_phase = False
        await probe
        if sending is not None and not sending.done():
            sending.cancel()
        if not sent_reported:
            self.conn.send(("sent", dict(self.sent)))
        delays = sorted(self.loop_delays)
        result = {
            "sent": dict(self.sent),
            "acks": self.acks,
            "received": self.received,
            "latencies": self.latencies,
            "matrix": {r: dict(row) for r, row in self.matrix.items()},
            "first_recv": self.first_recv,
            "last_recv": self.last_recv,
            "errors": dict(self.errors),
            "error_samples": list(self.error_samples),
            "loop_delay_p99_ms": stats.percentile(delays, 99),
            "loop_delay_max_ms": delays[-1] if delays else None,
        }
        self.conn.send(("result", result))
        return await cmd_task  # normally ("stop",) already; the one pending recv is never lost

    async def run(self):
        loop = asyncio.get_running_loop()

        async def recv_cmd():
            # Parent gone (EOF) counts as "quit": the worker never outlives the tool.
            try:
                return await loop.run_in_executor(None, self.conn.recv)
            except (EOFError, OSError):
                return ("quit",)

        sem = asyncio.Semaphore(self.cfg["connect_concurrency"])
        connecting = asyncio.ensure_future(asyncio.gather(*(self.connect_one(c, sem) for c in self.clients)))
        while not connecting.done():  # bounded: each connect has its own timeout
            await asyncio.wait({connecting}, timeout=0.3)
            self.conn.send(("connecting", sum(1 for c in self.clients if c.ws is not None)))
        self.conn.send(
            (
                "connected",
                {
                    "nodes": {c.index: c.node for c in self.clients if c.ws},
                    "connect_ms": [c.connect_ms for c in self.clients if c.ws],
                    "errors": dict(self.errors),
                    "error_samples": list(self.error_samples),
                },
            )
        )
        self.errors = defaultdict(int)
        cmd = await recv_cmd()
        while cmd[0] == "phase":
            cmd = await self.run_phase(cmd[1], recv_cmd)
            if cmd[0] == "stop":
                cmd = await recv_cmd()
        for c in self.clients:
            if c.ws is not None:
                try:
                    await asyncio.wait_for(c.ws.close(), 2)
                except Exception:
                    pass
        for c in self.clients:
            if c.reader is not None and not c.reader.done():
                c.reader.cancel()


def worker_main(conn, cfg: dict) -> None:
    """Entry point of a worker process. Ignores SIGINT: the parent coordinates the stop."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:  # uvloop: 45 -> 33 % of a core at 5,000 deliveries/s (bench/RESULTS.md, fourth pass)
        import uvloop
    except ImportError:
        asyncio.run(Worker(conn, cfg).run())
    else:
        uvloop.run(Worker(conn, cfg).run())


class LoadGenerator:
    """The parent's side: starts the worker processes and runs phases on them."""

    def __init__(
        self,
        *,
        clients: list[tuple[int, str, str, str]],
        procs: int,
        tag: str,
        connect_concurrency: int = 50,
        connect_timeout: float = 10.0,
    ):
        procs = max(1, min(procs, len(clients) or 1))
        ctx = multiprocessing.get_context("spawn")
        self.procs = []
        self.conns = []
        per_proc_conc = max(1, math.ceil(connect_concurrency / procs))
        for w in range(procs):
            parent, child = ctx.Pipe()
            cfg = {
                "clients": [c for c in clients if c[0] % procs == w],
                "tag": tag,
                "connect_concurrency": per_proc_conc,
                "connect_timeout": connect_timeout,
            }
            p = ctx.Process(target=worker_main, args=(child, cfg), name=f"bench-loadgen-{w}", daemon=True)
            p.start()
            child.close()
            self.procs.append(p)
            self.conns.append(parent)
        self._ps = [psutil.Process(p.pid) for p in self.procs]

    @property
    def pids(self) -> list[int]:
        return [p.pid for p in self.procs]

    def cpu_seconds(self) -> float:
        total = 0.0
        for p in self._ps:
            try:
                t = p.cpu_times()
                total += t.user + t.system
            except psutil.Error:
                pass
        return total

    def _recv_all(self, kind: str, timeout: float, on_other=None) -> list:
        """One ``kind`` message from each worker, within ``timeout`` seconds."""
        got = [None] * len(self.conns)
        deadline = time.monotonic() + timeout
        while any(g is None for g in got):
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"load generator: no {kind!r} from every worker in {timeout:.0f}s")
            for conn in conn_wait([c for c, g in zip(self.conns, got) if g is None], timeout=min(left, 0.2)):
                i = self.conns.index(conn)
                try:
                    msg = conn.recv()
                except EOFError:
                    raise RuntimeError(f"load generator worker {i} died") from None
                if msg[0] == kind:
                    got[i] = msg[1]
                elif on_other:
                    on_other(i, msg)
        return got

    def wait_connected(self, timeout: float, on_progress=None) -> dict:
        """Wait until every worker connected its clients; ``on_progress(connected so far)``."""
        counts = [0] * len(self.conns)

        def other(i, msg):
            if msg[0] == "connecting":
                counts[i] = msg[1]
                if on_progress:
                    on_progress(sum(counts))

        infos = self._recv_all("connected", timeout, on_other=other)
        nodes = {}
        connect_ms = []
        for info in infos:
            nodes.update({int(k): v for k, v in info["nodes"].items()})
            connect_ms.extend(info["connect_ms"])
        return {
            "nodes": nodes,
            "connect_ms": connect_ms,
            "errors": stats.merge_counts(i["errors"] for i in infos),
            "error_samples": [s for i in infos for s in i["error_samples"]][:10],
        }

    def run_phase(
        self, plan: dict, *, expected_for_sent, quiet_s: float, drain_s: float, on_progress=None, on_tick=None
    ) -> list:
        """Run one send phase; returns the workers' results. Ends when every expected delivery
        and ack arrived, when nothing arrived for ``quiet_s`` after sending ended, or ``drain_s``
        after sending ended; never later than the plan's hard deadline."""
        for conn in self.conns:
            conn.send(("phase", plan))
        n = len(self.conns)
        progress = [(0, 0, 0)] * n
        sent_by = [None] * n
        last_change = time.monotonic()
        last_total = -1
        hard = plan["t0"] + plan["duration"] + plan["hard_extra"] - 1.0
        sending_ended_at = None
        got = {}
        while True:
            for conn in conn_wait(self.conns, timeout=0.2):
                i = self.conns.index(conn)
                try:
                    msg = conn.recv()
                except EOFError:
                    raise RuntimeError(f"load generator worker {i} died") from None
                if msg[0] == "progress":
                    progress[i] = msg[1:]
                elif msg[0] == "sent":
                    sent_by[i] = msg[1]
                elif msg[0] == "result":  # a worker that hit its own deadline first
                    got[i] = msg[1]
            now = time.monotonic()
            sent, acks, received = (sum(p[k] for p in progress) for k in range(3))
            if on_tick:
                on_tick()
            if on_progress:
                on_progress(sent, acks, received)
            if received + acks != last_total:
                last_total, last_change = received + acks, now
            if all(s is not None for s in sent_by):
                if sending_ended_at is None:
                    sending_ended_at = now
                sent_map = {int(k): v for s in sent_by for k, v in s.items()}
                expected = expected_for_sent(sent_map)
                total_sent = sum(sent_map.values())
                if received >= expected and acks >= total_sent:
                    break
                if now - last_change >= quiet_s and now - sending_ended_at >= quiet_s:
                    break
                if now - sending_ended_at >= drain_s:
                    break
            if now > hard:
                break
        for conn in self.conns:
            conn.send(("stop",))
        deadline = time.monotonic() + 30
        pending = [c for i, c in enumerate(self.conns) if i not in got]
        while pending and time.monotonic() < deadline:
            for conn in conn_wait(pending, timeout=0.5):
                try:
                    msg = conn.recv()
                except EOFError:
                    raise RuntimeError("load generator worker died") from None
                if msg[0] == "result":
                    got[self.conns.index(conn)] = msg[1]
                    pending.remove(conn)
        if pending:
            raise TimeoutError("load generator: no result from every worker in 30s")
        return [got[i] for i in range(n)]

    def close(self, timeout: float = 5.0) -> None:
        """Ask the workers to quit; terminate, then kill, any that does not."""
        for conn in self.conns:
            try:
                conn.send(("quit",))
            except (OSError, ValueError):
                pass
        deadline = time.monotonic() + timeout
        for p in self.procs:
            p.join(max(0.1, deadline - time.monotonic()))
        for p in self.procs:
            if p.is_alive():
                p.terminate()
                p.join(3)
            if p.is_alive():
                p.kill()
                p.join(3)
        for conn in self.conns:
            conn.close()
