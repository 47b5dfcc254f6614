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
# would); admitted = answers 200, refused = 429 `rate_limited`. Every admitted answer's request id
# is kept (authorize.lua, PARAPET_BENCH_ACKED) and looked for in the exported chain at the end:
# an acknowledged decision that is not there, the killed replica's included, fails the run.
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
    PARAPET_BENCH_ACKED="$scratch/acked-$name-$i" \
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
( cd "$scratch/r0" && "$bin" audit verify && "$bin" audit export --out "$scratch/export.ndjson" )
cat "$scratch"/acked-* >"$scratch/acked.txt"
python3 - "$scratch/acked.txt" "$scratch/export.ndjson" <<'PY'
import json, sys
acked = [l.strip() for l in open(sys.argv[1]) if l.strip()]
logged = {json.loads(json.loads(l)["canonical"])["request_id"] for l in open(sys.argv[2])}
missing = [a for a in acked if a not in logged]
print(f"acknowledged decisions: {len(acked)}, found in the verified chain: {len(acked) - len(missing)}, missing: {len(missing)}")
sys.exit(1 if missing or not acked else 0)
PY
