"""``python -m bench SCENARIO [options]``: see bench/README.md."""

import argparse
import datetime as dt
import json
import os
import platform
import secrets
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

from . import cluster, report, runner, stats
from .scenarios import SCENARIOS

DEFAULT_DATABASE_URL = "postgres://postgres@127.0.0.1:5432/chatsite_bench"
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"
OUT_DIR = Path(__file__).resolve().parent / "out"


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def prepare(
    *,
    database_url: str,
    users: int,
    rooms: int,
    product_dir: Path,
    migrate: bool = True,
    memberships: str = "as-is",
    timeout: float = 300,
) -> dict:
    """Create/migrate the database and the users, tokens and rooms (``bench.prepare`` in a
    subprocess with the product's settings)."""
    env = {
        **os.environ,
        "DATABASE_URL": database_url,
        "REDIS_URL": "",
        "DEBUG": "0",
        "SECRET_KEY": secrets.token_urlsafe(50),
        "DJANGO_SETTINGS_MODULE": "chatsite.settings",
        "PYTHONPATH": os.pathsep.join([str(product_dir), str(cluster.REPO_DIR)]),
    }
    cmd = [sys.executable, "-m", "bench.prepare", "--users", str(users), "--rooms", str(rooms)]
    cmd += ["--memberships", memberships]
    if not migrate:
        cmd.append("--no-migrate")
    r = subprocess.run(cmd, cwd=product_dir, env=env, capture_output=True, text=True, timeout=timeout)
    if r.returncode != 0:
        raise RuntimeError(f"bench.prepare failed ({r.returncode}):\n{r.stderr[-3000:]}")
    return json.loads(r.stdout)


def parse_args(argv):
    p = argparse.ArgumentParser(
        prog="python -m bench", description="Benchmark chatsite on real daphne nodes."
    )
    p.add_argument("scenario", choices=sorted(SCENARIOS), help="named scenario (see bench/README.md)")
    p.add_argument("--modes", help="comma-separated: redis,memory (default: the scenario's)")
    p.add_argument("--nodes", type=int, help="daphne nodes to start")
    p.add_argument("--clients", type=int, help="WebSocket clients (one user each)")
    p.add_argument("--rooms", type=int, help="rooms (client i is in room i %% R)")
    p.add_argument("--senders", type=int, help="senders (clients 0..S-1)")
    p.add_argument("--rate", type=float, help="messages per second per sender")
    p.add_argument("--duration", type=float, help="seconds of sending (per step for ramp)")
    p.add_argument("--ramp-rates", help="ramp: comma-separated per-sender rates")
    p.add_argument("--ramp-stop-after", type=int, help="ramp: stop after this many failing steps")
    p.add_argument("--payload-bytes", type=int)
    p.add_argument("--database-url", default=os.environ.get("BENCH_DATABASE_URL", DEFAULT_DATABASE_URL))
    p.add_argument("--redis-url", default=os.environ.get("BENCH_REDIS_URL", DEFAULT_REDIS_URL))
    p.add_argument("--urls", help="target running nodes instead of starting them: ws://127.0.0.1:8001,...")
    p.add_argument("--pids", help="with --urls: node-1=PID,node-2=PID to measure their CPU and RSS")
    p.add_argument(
        "--product-dir",
        type=Path,
        default=cluster.REPO_DIR,
        help="checkout whose chatsite the nodes run (default: this one)",
    )
    p.add_argument(
        "--connect-concurrency", type=int, help="handshakes in flight at once (default: the scenario's, 50)"
    )
    p.add_argument("--lg-procs", type=int, help="load-generator processes (default 1, 2 above 200 clients)")
    p.add_argument(
        "--memberships",
        choices=["as-is", "all", "none"],
        default="as-is",
        help="before connecting: all = every user already a member of its room (members coming back, "
        "the usual storm); none = no user a member (each connect joins the public room as a new member, "
        "announced to the room with member.updated); as-is = what the database holds (a reused database "
        "keeps the joins of earlier runs)",
    )
    p.add_argument(
        "--drain", type=float, default=10.0, help="max seconds to wait for deliveries after sending"
    )
    p.add_argument(
        "--quiet", type=float, default=1.5, help="end a phase after this many seconds with no new delivery"
    )
    p.add_argument("--out", type=Path, default=OUT_DIR, help="directory for JSON, PNG and node logs")
    p.add_argument("--no-chart", action="store_true")
    p.add_argument("--no-progress", action="store_true", help="no progress bars (they are off without a TTY)")
    return p.parse_args(argv)


def machine() -> dict:
    return {
        "cpus": psutil.cpu_count(),
        "memory_gb": round(psutil.virtual_memory().total / 2**30, 1),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "load_avg": [round(x, 2) for x in os.getloadavg()],
    }


def git_rev(path: Path) -> str | None:
    try:
        r = subprocess.run(
            ["git", "-C", str(path), "describe", "--always", "--dirty"],
            capture_output=True,
            text=True,
            timeout=5,
        )
        return r.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["search"]:  # not a delivery scenario: search over a million stored messages
        from . import search

        return search.main(argv[1:])
    if argv[:1] == ["history"]:  # not a delivery scenario: history over ten million stored messages
        from . import history

        return history.main(argv[1:])
    if argv[:1] == ["reconnect-storm"]:  # a node stopped under its members (bench/reconnect.py)
        from . import reconnect

        return reconnect.main(argv[1:])
    args = parse_args(argv)
    # SIGTERM ends the run like Ctrl-C: the finally blocks stop every process started.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    scn = SCENARIOS[args.scenario].with_overrides(
        nodes=args.nodes,
        clients=args.clients,
        rooms=args.rooms,
        senders=args.senders,
        rate=args.rate,
        duration=args.duration,
        payload_bytes=args.payload_bytes,
        connect_concurrency=args.connect_concurrency,
        ramp_stop_after=args.ramp_stop_after,
        modes=tuple(args.modes.split(",")) if args.modes else None,
        ramp_rates=tuple(float(x) for x in args.ramp_rates.split(",")) if args.ramp_rates else None,
    )
    for u in (args.database_url, args.redis_url):
        cluster.check_loopback(u)
    urls = [u for u in (args.urls or "").split(",") if u]
    pids = {k: int(v) for k, v in (x.split("=") for x in args.pids.split(","))} if args.pids else None
    if urls and len(scn.modes) > 1:
        log("with --urls the nodes' layer is theirs: give one --modes (redis or memory) to label it")
        return 2
    if urls:
        scn = scn.with_overrides(nodes=len(urls))
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    out_base = args.out / f"{scn.name}-{stamp}"
    args.out.mkdir(parents=True, exist_ok=True)
    log_dir = Path(tempfile.mkdtemp(prefix=f"bench-{scn.name}-", dir=args.out))
    progress = not args.no_progress and sys.stderr.isatty()
    started = time.time()
    log(f"bench {scn.name}: {scn.description}")
    log(
        f"  nodes {scn.nodes}, clients {scn.clients}, rooms {scn.rooms}, senders {scn.senders}, "
        f"rate {scn.rate if not scn.is_ramp else list(scn.ramp_rates)} msg/s/sender, {scn.duration} s, modes {list(scn.modes)}"
    )
    try:
        data = prepare(
            database_url=args.database_url,
            users=scn.clients,
            rooms=scn.rooms,
            product_dir=args.product_dir,
            memberships=args.memberships,
        )
        log(f"  database {args.database_url}: {scn.clients} users with tokens, {scn.rooms} rooms ready")
        runs = {}
        for mode in scn.modes:
            runs[mode] = runner.run_mode(
                scn,
                mode,
                tokens=data["tokens"],
                rooms=data["rooms"],
                database_url=args.database_url,
                redis_url=args.redis_url,
                log_dir=log_dir,
                urls=urls or None,
                pids=pids,
                product_dir=args.product_dir,
                lg_procs=args.lg_procs,
                progress=progress,
                quiet_s=args.quiet,
                drain_s=args.drain,
                log=log,
            )
    except KeyboardInterrupt:
        log("interrupted: every process this run started has been stopped")
        return 130
    doc = {
        "scenario": scn.as_dict(),
        "command": "python -m bench " + " ".join(argv),
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "machine": machine(),
        "product_rev": git_rev(args.product_dir),
        "elapsed_s": round(time.time() - started, 1),
        "node_logs": str(log_dir),
        "runs": {m: {k: v for k, v in r.items() if k != "latencies"} for m, r in runs.items()},
    }
    print()
    if scn.is_ramp:
        for mode, run in runs.items():
            passing = [s for s in run["steps"] if s.get("passed")]
            best = max(passing, key=lambda s: s["rate"]) if passing else None
            doc["runs"][mode]["best"] = best and {
                k: best[k] for k in ("rate", "deliveries_per_s", "latency_ms")
            }
            print(f"## {scn.name}: {stats.MODE_TITLES.get(mode, mode)}\n")
            print(stats.render_ramp(run["steps"], best))
    else:
        print(f"## {scn.name}: {scn.description}\n")
        print(stats.render_table({m: r["steps"][0] for m, r in runs.items() if r["steps"]}))
    json_path = out_base.with_suffix(".json")
    report.write_json(json_path, doc)
    print(f"\nJSON: {json_path}")
    if not args.no_chart:
        png = out_base.with_suffix(".png")
        report.write_chart(png, runs, title=f"chatsite {scn.name}: {scn.description}", ramp=scn.is_ramp)
        print(f"chart: {png}")
    print(f"node logs: {log_dir}")
    return 0
