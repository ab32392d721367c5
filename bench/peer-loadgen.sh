#!/usr/bin/env bash
# Drive this checkout with the reference peers' Node load generator (../shared/peers/loadgen.js,
# --proto chatsite), for same-generator figures beside the peers (bench/RESULTS.md, fourth pass).
#
#   bench/peer-loadgen.sh RATE [RATE ...]     e.g. bench/peer-loadgen.sh 6 8 10
#
# Starts 3 nodes (python -m chatsite.serve, the environment python -m bench gives them) on
# 127.0.0.1:8711-8713, runs the 50-rooms-of-20 shape (1,000 clients, 50 senders, DURATION seconds per rate, default 5: run_throughput.py's own default is 10)
# once per RATE (messages per second per sender), prints one line per rate, stops the nodes.
# CLIENTS, ROOMS, SENDERS and CONNECT_CONCURRENCY (defaults 1000, 50, 50, 50) change the shape:
# CLIENTS=10000 ROOMS=1 SENDERS=1 CONNECT_CONCURRENCY=100 bench/peer-loadgen.sh 1 is the join
# storm's second half (one message to 10,000 members) measured by the Node generator (add
# P99_LIMIT_MS=250, its target; the default is the 50-rooms shape's 100).
# Each rate starts from an empty message table in the bench database: the generator's
# client_msg_ids restart at every run, and a reused id with another body is (rightly) refused.
# Needs: PostgreSQL and Redis on 127.0.0.1, `make venv`, Node, and the peers set up once with
# ../shared/peers/setup.sh (its modules in /tmp/peer/lg; PEER_ROOT changes that).
set -euo pipefail
cd "$(dirname "$0")/.."
PEERS=${PEERS:-../shared/peers}
PEER_ROOT=${PEER_ROOT:-/tmp/peer}
DURATION=${DURATION:-5}
CLIENTS=${CLIENTS:-1000}
ROOMS=${ROOMS:-50}
SENDERS=${SENDERS:-50}
CONNECT_CONCURRENCY=${CONNECT_CONCURRENCY:-50}
P99_LIMIT_MS=${P99_LIMIT_MS:-100}  # a rate passes with >= 99.9 % delivered and p99 under this
DB=${BENCH_DATABASE_URL:-postgres://postgres@127.0.0.1:5432/chatsite_bench}
OUT=$(mktemp -d /tmp/peer-loadgen.XXXXXX)
KEY=$(.venv/bin/python -c 'import secrets; print(secrets.token_urlsafe(50))')  # settings refuse short keys
[ $# -gt 0 ] || { echo "usage: $0 RATE [RATE ...]" >&2; exit 2; }
[ -d "$PEER_ROOT/lg/node_modules" ] || { echo "run $PEERS/setup.sh first" >&2; exit 2; }

env DATABASE_URL="$DB" REDIS_URL= DEBUG=0 SECRET_KEY="$KEY" DJANGO_SETTINGS_MODULE=chatsite.settings \
  .venv/bin/python -m bench.prepare --users "$CLIENTS" --rooms "$ROOMS" --memberships all > "$OUT/prepare.json"
.venv/bin/python -c "import json,sys; json.dump(json.load(open(sys.argv[1]))['tokens'], open(sys.argv[2], 'w'))" \
  "$OUT/prepare.json" "$OUT/tokens.json"

export DATABASE_URL="$DB" REDIS_URL=redis://127.0.0.1:6379/0 CHANNEL_LAYER_PREFIX="peer-loadgen-$$" DEBUG=0 \
  SECRET_KEY="$KEY" ALLOWED_HOSTS=127.0.0.1,localhost LOG_LEVEL=WARNING \
  DJANGO_SETTINGS_MODULE=chatsite.settings WS_SEND_RATE=100/s
PIDS=()
trap 'kill "${PIDS[@]}" 2>/dev/null || true' EXIT
for i in 1 2 3; do
  SERVER_ID=node-$i .venv/bin/python -m chatsite.serve --port 871$i > "$OUT/node-$i.log" 2>&1 &
  PIDS+=($!)
done
for i in 1 2 3; do
  for _ in $(seq 100); do curl -sf "127.0.0.1:871$i/healthz" > /dev/null && break; sleep 0.2; done
done

# CPU seconds of the local PostgreSQL's processes (ended backends counted in the postmaster's
# children's time) and the wall clock, for its share of a core over each run; 0 when it is not
# on this machine.
pg_cpu() {
  python3 - <<'PY'
import os, time
total, tick = 0, os.sysconf("SC_CLK_TCK")
for pid in filter(str.isdigit, os.listdir("/proc")):
    try:
        with open(f"/proc/{pid}/stat") as f:
            head, rest = f.read().rsplit(")", 1)
    except OSError:
        continue
    if head.split("(", 1)[1] != "postgres":
        continue
    fields = rest.split()
    total += sum(int(v) for v in fields[11:15])  # utime stime cutime cstime
print(total / tick, time.time())
PY
}

# One unreported warm-up run at 2 msg/s per sender (pools fill, statements get prepared), as
# python -m bench ramp's first steps do.
for rate in warmup "$@"; do
  psql -q "$DB" -c "TRUNCATE rooms_message CASCADE"
  pg_cpu > "$OUT/pg-before"
  NODE_PATH="$PEER_ROOT/lg/node_modules" timeout 300 node "$PEERS/loadgen.js" --proto chatsite \
    --urls ws://127.0.0.1:8711,ws://127.0.0.1:8712,ws://127.0.0.1:8713 --tokens "$OUT/tokens.json" \
    --clients "$CLIENTS" --rooms "$ROOMS" --senders "$SENDERS" --connect-concurrency "$CONNECT_CONCURRENCY" --rate "${rate/warmup/2}" --duration "$DURATION" --drain-ms 10000 --hard-timeout-s 240 \
    --pids "node1=${PIDS[0]},node2=${PIDS[1]},node3=${PIDS[2]}" --json "$OUT/rate-$rate.json" \
    --label "chatsite-rate$rate" > "$OUT/rate-$rate.log" 2>&1
  pg_cpu > "$OUT/pg-after"
  [ "$rate" = warmup ] && continue
  .venv/bin/python - "$OUT/rate-$rate.json" "$rate" "$P99_LIMIT_MS" "$OUT/pg-before" "$OUT/pg-after" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
(pg0, t0), (pg1, t1) = (map(float, open(f).read().split()) for f in sys.argv[4:6])
cpu = r["cpu_send_phase"]
nodes = sum(v for k, v in cpu.items() if k.startswith("node"))
ok = r["delivery_rate_pct"] >= 99.9 and r["lat_p99_ms"] < float(sys.argv[3])
errors = {k: v for k, v in r["errors"].items() if v}
print(f"rate {sys.argv[2]}/s/sender: delivered {r['delivery_rate_pct']}% ({r['actual_deliveries']} of "
      f"{r['expected_deliveries']}), {r['connected']} connected in {r['connect_all_ms'] / 1000:.1f} s, "
      f"{r['delivered_msgs_per_s']} deliveries/s, p50 {r['lat_p50_ms']} "
      f"p99 {r['lat_p99_ms']} ms, nodes {nodes:.0f}% of a core ({1e4 * nodes / r['delivered_msgs_per_s']:.0f} "
      f"us/delivery), generator {cpu['loadgen_pct']}%, PostgreSQL {100 * (pg1 - pg0) / (t1 - t0):.0f}% (whole run), "
      f"errors {errors or 'none'}: {'pass' if ok else 'FAIL'}")
PY
done
echo "JSON and node logs: $OUT"
