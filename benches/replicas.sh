#!/usr/bin/env bash
# Three replicas on one PostgreSQL, an app hammering all three, then one replica killed with
# SIGKILL under load (issue: global limits within ± 10 %, no acknowledged decision lost, the
# chain verifies, the other two keep answering).
#
#   PARAPET_DATABASE_URL=postgres://…/a_fresh_database benches/replicas.sh
#
# Knobs: RATE (the app's rate, default 300/s burst 300), DURATION (s per phase, default 10),
# CONNECTIONS (per replica, default 8). Needs `wrk`. Loopback only; every run is bounded.
# Each replica has its own wrk (one client per replica: load spread evenly, as round-robin
# would); admitted = answers 200, refused = 429 `rate_limited`.
set -euo pipefail
cd "$(dirname "$0")/.."
: "${PARAPET_DATABASE_URL:?set PARAPET_DATABASE_URL to a fresh PostgreSQL database}"
RATE=${RATE:-300/s burst 300}
DURATION=${DURATION:-10}
CONNECTIONS=${CONNECTIONS:-8}
command -v wrk >/dev/null || { echo "install wrk (apt-get install wrk)" >&2; exit 1; }
cargo build --release -p parapet --quiet
bin="$PWD/target/release/parapet"
scratch=$(mktemp -d)
pids=()
trap 'for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$scratch"' EXIT
ports=(18301 18302 18303)
for i in 0 1 2; do
  dir="$scratch/r$i"; mkdir -p "$dir"
  ln -s "$PWD/policies" "$dir/policies"; ln -s "$PWD/schemas" "$dir/schemas"
  ( cd "$dir" && PARAPET_LISTEN="127.0.0.1:${ports[$i]}" PARAPET_LOG=warn PARAPET_STATIC_TOKEN=false \
    PARAPET_IP_RATE=1000000/s PARAPET_WALLET_RATE=1000000/s exec "$bin" serve ) &
  pids+=($!)
done
for p in "${ports[@]}"; do
  for _ in $(seq 1 100); do curl -sf "http://127.0.0.1:$p/readyz" >/dev/null && break; sleep 0.1; done
done
key=$(cd "$scratch/r0" && "$bin" apps create --name hammer --grants sign --rate "$RATE" --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["api_key"])')
cp tests/fixtures/good/erc20-transfer-usdc-small.json "$scratch/body.json"
export PARAPET_BENCH_TOKEN="$key" PARAPET_BENCH_BODY="$scratch/body.json"
sleep 3 # every replica has counted the other two
# phase NAME [KILL_AFTER]: one wrk per live replica; with KILL_AFTER, replica 3 gets SIGKILL
# that many seconds in. Prints admitted and refused per replica and in total, per second.
phase() {
  local name=$1 kill_after=${2:-}
  echo "== $name: app at $RATE, ${DURATION}s, $CONNECTIONS connections per replica"
  local outs=()
  for i in 0 1 2; do
    wrk -t1 -c"$CONNECTIONS" -d"${DURATION}s" -s benches/authorize.lua "http://127.0.0.1:${ports[$i]}/v1/authorize" \
      >"$scratch/wrk$i.out" 2>&1 &
    outs+=($!)
  done
  if [ -n "$kill_after" ]; then
    sleep "$kill_after"; kill -9 "${pids[2]}"; echo "  replica 3 killed (SIGKILL) after ${kill_after}s"
  fi
  wait "${outs[@]}" || true
  local total=0 refused_total=0
  for i in 0 1 2; do
    local n bad
    n=$(awk '/requests in/ {print $1}' "$scratch/wrk$i.out"); n=${n:-0}
    bad=$(awk '/Non-2xx/ {print $5}' "$scratch/wrk$i.out"); bad=${bad:-0}
    echo "  replica $((i + 1)): $((n - bad)) admitted, $bad refused"
    total=$((total + n - bad)); refused_total=$((refused_total + bad))
  done
  awk -v a="$total" -v r="$refused_total" -v d="$DURATION" \
    'BEGIN { printf "  all: %d admitted (%.0f/s), %d refused\n", a, a / d, r }'
}
phase "three replicas"
phase "three replicas, one killed" 4
for p in "${ports[@]:0:2}"; do
  echo "replica on $p after the kill: $(curl -s "http://127.0.0.1:$p/readyz")"
done
( cd "$scratch/r0" && "$bin" audit verify )
