#!/usr/bin/env bash
# What sealing the audit trail costs session creates on PostgreSQL + Redis: the same server, the
# same load (wrk, POST /v1/sessions), once with the sealer running as usual (every second it
# chains the new audit rows: an update of each) and once with it held back (another connection
# holds the lock on the chain's head row for the run, so every seal waits and nothing is chained),
# alternately, each on a fresh database.
#
# Usage: tests/perf/audit-seal-cost.sh [PAIRS]   (2 pairs, CONNECTIONS=100, DURATION=10s by default;
#        IDYNTRA=binary measures another build)
# Needs: wrk and psql, a PostgreSQL at 127.0.0.1:5432 (user postgres), Redis at 127.0.0.1:6379.
# Prints one row per run: creates a second, p50/p95/p99/max, and how many audit rows were chained.
set -euo pipefail

PAIRS=${1:-2}
CONNECTIONS=${CONNECTIONS:-100}
DURATION=${DURATION:-10s}
THREADS=${THREADS:-2}
PG_ADMIN=${PG_ADMIN:-postgres://postgres@127.0.0.1:5432/postgres}
REDIS_URL=${REDIS_URL:-redis://127.0.0.1:6379/}
PORT=${PORT:-18082}

root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root"
for tool in wrk psql; do
  command -v "$tool" >/dev/null || { echo "error: $tool is required" >&2; exit 1; }
done
if [ -z "${IDYNTRA:-}" ]; then
  cargo build --quiet --release -p idyntra-backend --bin idyntra
fi
idyntra=${IDYNTRA:-${CARGO_TARGET_DIR:-$root/target}/release/idyntra}
work=$(mktemp -d)
server=
database=
cleanup() {
  if [ -n "$database" ]; then
    # The lock holder first: a server stopping seals what is left, and would wait for it.
    release_sealer
    [ -n "$server" ] && { kill "$server" 2>/dev/null || true; wait "$server" 2>/dev/null || true; }
    psql "$PG_ADMIN" -qc "drop database if exists $database (force)" >/dev/null 2>&1 || true
  fi
  rm -rf "$work"
}
trap cleanup EXIT

cat > "$work/create.lua" <<'EOF'
wrk.method = "POST"
wrk.headers["Authorization"] = "Bearer " .. os.getenv("IDYNTRA_KEY")
wrk.headers["Content-Type"] = "application/json"
wrk.body = '{"reference":"bench","metadata":{"source":"wrk"}}'
done = function(summary, latency, requests)
  local errors = summary.errors.status + summary.errors.connect + summary.errors.read
    + summary.errors.write + summary.errors.timeout
  io.write(string.format("RESULT %.0f %.2f %.2f %.2f %.2f %d\n",
    summary.requests / (summary.duration / 1e6), latency:percentile(50) / 1000,
    latency:percentile(95) / 1000, latency:percentile(99) / 1000, latency.max / 1000, errors))
end
EOF

# release_sealer: ends the connection that holds the chain's head, if any.
release_sealer() {
  psql "$PG_ADMIN" -qAtc "select count(pg_terminate_backend(pid)) from pg_stat_activity \
    where datname = '$database' and application_name = 'hold-audit-head'" >/dev/null 2>&1 || true
}

# run LABEL HOLD: one run on a fresh database; HOLD=1 holds the sealer back.
run() {
  local label=$1 hold=$2
  database="idyntra_seal_cost_$$_$RANDOM"
  psql "$PG_ADMIN" -qc "create database $database" >/dev/null
  local url="${PG_ADMIN%/*}/$database"
  export IDYNTRA_DATABASE_URL=$url IDYNTRA_REDIS_URL=$REDIS_URL \
    IDYNTRA_REDIS_KEY_PREFIX="seal-cost:$$:$RANDOM:" \
    IDYNTRA_RATE_LIMIT__PER_KEY__REQUESTS=1000000000 IDYNTRA_RATE_LIMIT__PER_IP__REQUESTS=1000000000
  mkdir -p "$work/$database"
  (cd "$work/$database" && exec "$idyntra" serve --listen "127.0.0.1:$PORT" >out 2>log) &
  server=$!
  for _ in $(seq 1 200); do
    grep -q 'listening on' "$work/$database/out" 2>/dev/null && break
    kill -0 "$server" 2>/dev/null || { echo "error: server did not start: $(cat "$work/$database/log")" >&2; exit 1; }
    sleep 0.1
  done
  local key
  key=$(cd "$work/$database" && "$idyntra" keys create --account bench --name wrk --json \
    | sed -E 's/.*"secret":"([^"]+)".*/\1/')
  if [ "$hold" = 1 ]; then
    PGAPPNAME=hold-audit-head psql "$url" -qc \
      "begin; select 1 from audit_head for update; select pg_sleep(3600);" >/dev/null 2>&1 &
    # Until the lock is taken, so the sealer cannot slip in first.
    for _ in $(seq 1 50); do
      [ "$(psql "$url" -qAtc "select count(*) from pg_locks l join pg_stat_activity a using (pid) \
        where a.application_name = 'hold-audit-head' and l.mode = 'RowShareLock'")" -gt 0 ] && break
      sleep 0.1
    done
  fi
  local line
  line=$(IDYNTRA_KEY=$key wrk -t"$THREADS" -c"$CONNECTIONS" -d"$DURATION" -s "$work/create.lua" \
    "http://127.0.0.1:$PORT/v1/sessions" | grep '^RESULT')
  read -r _ rps p50 p95 p99 max errors <<<"$line"
  local chained
  chained=$(psql "$url" -qAtc "select count(chain_seq) || ' of ' || count(*) from audit_log")
  printf '| %s | %s | %s | %s | %s | %s | %s | %s |\n' "$label" "$rps" "$p50" "$p95" "$p99" "$max" \
    "$errors" "$chained"
  release_sealer
  kill "$server"; wait "$server" 2>/dev/null || true
  server=
  psql "$PG_ADMIN" -qc "drop database $database (force)" >/dev/null
  database=
}

echo "connections: $CONNECTIONS, duration: $DURATION, wrk threads: $THREADS, cores: $(nproc)"
echo
echo "| sealer | creates/s | p50 ms | p95 ms | p99 ms | max ms | errors | audit rows chained |"
echo "|---|---|---|---|---|---|---|---|"
for _ in $(seq 1 "$PAIRS"); do
  run "running" 0
  run "held back" 1
done
