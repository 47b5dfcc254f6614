#!/usr/bin/env bash
# Load recipe for audited /v1/authorize decisions (issue: ≥ 5,000/s sustained on SQLite with
# p99 ≤ 20 ms on a 2-core machine) and the /healthz ceiling of the same server.
#
#   benches/audit_load.sh                       # SQLite under a scratch data dir
#   PARAPET_DATABASE_URL=postgres://… benches/audit_load.sh   # PostgreSQL (a fresh database)
#
# Knobs: DURATION (s, default 20), CONNECTIONS (default 32), THREADS (wrk threads, default 1),
# RUNS (default 3), PARAPET_BIN (a built binary to measure instead of building this tree's, e.g.
# to alternate runs of two builds on a noisy machine). Needs `wrk` (apt-get install wrk). Loopback only; every run is bounded.
# The load comes from one IP and one app (each request for another of 10,000 random wallets,
# PARAPET_BENCH_WALLETS), so the rate limits are lifted for the run: this measures the audit
# path, not the limiters (benches/flood.rs does that).
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION=${DURATION:-20}
CONNECTIONS=${CONNECTIONS:-32}
THREADS=${THREADS:-1}
RUNS=${RUNS:-3}
PORT=${PORT:-18181}
command -v wrk >/dev/null || { echo "install wrk (apt-get install wrk)" >&2; exit 1; }
bin=${PARAPET_BIN:-}
if [ -z "$bin" ]; then
  cargo build --release -p parapet --quiet
  bin="$PWD/target/release/parapet"
fi
scratch=$(mktemp -d)
trap 'kill "$server" 2>/dev/null || true; wait "$server" 2>/dev/null || true; rm -rf "$scratch"' EXIT
ln -s "$PWD/policies" "$scratch/policies"
ln -s "$PWD/schemas" "$scratch/schemas"
cp tests/fixtures/good/erc20-transfer-usdc-small.json "$scratch/body.json"
( cd "$scratch" && PARAPET_LISTEN="127.0.0.1:$PORT" PARAPET_LOG=warn \
  PARAPET_IP_RATE=1000000/s PARAPET_APP_RATE=1000000/s PARAPET_WALLET_RATE=1000000/s exec "$bin" serve ) &
server=$!
for _ in $(seq 1 100); do curl -sf "http://127.0.0.1:$PORT/healthz" >/dev/null && break; sleep 0.1; done
export PARAPET_BENCH_TOKEN=$(cat "$scratch/data/dev-token")
export PARAPET_BENCH_BODY="$scratch/body.json"
curl -sf -H "authorization: Bearer $PARAPET_BENCH_TOKEN" -H 'content-type: application/json' \
  -d @"$PARAPET_BENCH_BODY" "http://127.0.0.1:$PORT/v1/authorize" >/dev/null
echo "store: $(curl -s "http://127.0.0.1:$PORT/readyz")"
wrk -t"$THREADS" -c"$CONNECTIONS" -d3s -s benches/authorize.lua "http://127.0.0.1:$PORT/v1/authorize" >/dev/null
# The server's CPU time (user + system, in clock ticks) from /proc, so each run can print the
# CPU it cost per request.
ticks=$(getconf CLK_TCK)
cpu() { awk '{print $14 + $15}' "/proc/$server/stat"; }
# load NAME URL [wrk args…]: one wrk run; prints requests/s, latency, non-2xx, and the server's
# CPU per request; leaves requests/s in $rate.
load() {
  local name=$1 url=$2; shift 2
  local before after out
  before=$(cpu)
  out=$(wrk -t"$THREADS" -c"$CONNECTIONS" -d"${DURATION}s" --latency "$@" "$url")
  after=$(cpu)
  local requests
  requests=$(echo "$out" | awk '/requests in/ {print $1}')
  rate=$(echo "$out" | awk '/Requests\/sec/ {print $2}')
  echo "$out" | grep -E "Requests/sec|50%|99%|Non-2xx|Socket errors|errors:" | sed "s/^/  $name /"
  awk -v b="$before" -v a="$after" -v n="$requests" -v t="$ticks" -v name="$name" \
    'BEGIN { printf "  %s server CPU: %.1f s for %d requests = %.0f µs/request\n", name, (a - b) / t, n, (a - b) / t * 1e6 / n }'
}
for run in $(seq 1 "$RUNS"); do
  echo "== run $run: $CONNECTIONS connections, ${DURATION}s each"
  load authorize "http://127.0.0.1:$PORT/v1/authorize" -s benches/authorize.lua
  audited=$rate
  load healthz "http://127.0.0.1:$PORT/healthz"
  awk -v a="$audited" -v h="$rate" 'BEGIN { printf "  audited / healthz = %.1f %%\n", a * 100 / h }'
done
curl -s "http://127.0.0.1:$PORT/metrics" | grep -E "^parapet_audit_(events_total|batches_total|batch_largest|commit_seconds_total)"
if [ -z "${PARAPET_DATABASE_URL:-}" ] && command -v sqlite3 >/dev/null; then
  # The log's size as SQLite counts it (table, indexes, and what the write-ahead log still
  # holds), per event.
  sqlite3 "$scratch/data/parapet.db" "SELECT 'stored: ' || (SELECT page_count * page_size FROM pragma_page_count(), pragma_page_size()) || ' bytes for ' || (SELECT MAX(seq) FROM audit_events) || ' events = ' || ((SELECT page_count * page_size FROM pragma_page_count(), pragma_page_size()) / (SELECT MAX(seq) FROM audit_events)) || ' bytes/event'"
fi
( cd "$scratch" && "$OLDPWD/target/release/parapet" audit verify )
