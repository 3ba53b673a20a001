#!/usr/bin/env bash
# Throughput and latency of POST /v1/sessions and GET /v1/sessions/{id} on the embedded SQLite
# default and on PostgreSQL + Redis, next to two ceilings measured in the same run: a bare axum
# handler (HTTP) and pgbench inserting one row per transaction (database), with the same number of
# connections. The load generator (wrk) runs as a second process on the same machine.
#
# Usage: tests/perf/api-bench.sh            (CONNECTIONS=100 DURATION=10s by default; IDYNTRA=binary)
# Needs: wrk, pgbench, a PostgreSQL at 127.0.0.1:5432 (user postgres) and Redis at 127.0.0.1:6379.
set -euo pipefail

CONNECTIONS=${CONNECTIONS:-100}
DURATION=${DURATION:-10s}
THREADS=${THREADS:-2}
PG_ADMIN=${PG_ADMIN:-postgres://postgres@127.0.0.1:5432/postgres}
REDIS_URL=${REDIS_URL:-redis://127.0.0.1:6379/}

root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root"
for tool in wrk pgbench psql; do
  command -v "$tool" >/dev/null || { echo "error: $tool is required" >&2; exit 1; }
done
cargo build --quiet --release --workspace --bins
target=${CARGO_TARGET_DIR:-$root/target}/release
# IDYNTRA=path/to/idyntra measures another build (e.g. an older one, for a before/after table).
idyntra=${IDYNTRA:-$target/idyntra}
work=$(mktemp -d)
pids=()
cleanup() { for pid in "${pids[@]+"${pids[@]}"}"; do kill "$pid" 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT

cat > "$work/report.lua" <<'EOF'
done = function(summary, latency, requests)
  local errors = summary.errors.status + summary.errors.connect + summary.errors.read
    + summary.errors.write + summary.errors.timeout
  io.write(string.format("RESULT %.0f %.2f %.2f %.2f %d %d\n",
    summary.requests / (summary.duration / 1e6),
    latency:percentile(50) / 1000, latency:percentile(95) / 1000, latency:percentile(99) / 1000,
    errors, summary.requests))
end
EOF
cat > "$work/create.lua" <<'EOF'
wrk.method = "POST"
wrk.headers["Authorization"] = "Bearer " .. os.getenv("IDYNTRA_KEY")
wrk.headers["Content-Type"] = "application/json"
wrk.body = '{"reference":"bench","metadata":{"source":"wrk"}}'
EOF
cat "$work/report.lua" >> "$work/create.lua"
cat > "$work/get.lua" <<'EOF'
wrk.headers["Authorization"] = "Bearer " .. os.getenv("IDYNTRA_KEY")
EOF
cat "$work/report.lua" >> "$work/get.lua"

# server_cpu PID: the CPU time (user + system, every thread) the process has used, in clock ticks.
server_cpu() { awk '{print $14 + $15}' "/proc/$1/stat"; }
# services_cpu: the same for every PostgreSQL and Redis process of the machine together (those on
# this machine share its cores with the server and wrk, so they bound what a request can cost).
services_cpu() {
  local total=0 pid
  for pid in $(pgrep -x 'postgres|redis-server' || true); do
    total=$((total + $(awk '{print $14 + $15}' "/proc/$pid/stat" 2>/dev/null || echo 0)))
  done
  echo "$total"
}
# per_request TICKS REQUESTS: microseconds of CPU per request.
per_request() {
  awk -v used="$1" -v hz="$(getconf CLK_TCK)" -v n="$2" 'BEGIN { printf "%.1f", used * 1e6 / hz / n }'
}

# measure NAME URL SCRIPT PID: prints "| name | req/s | p50 | p95 | p99 | errors | server CPU |
# PostgreSQL + Redis CPU |", the last two being the microseconds of CPU the server at PID, and the
# PostgreSQL and Redis processes, spent per request during the run.
measure() {
  local name=$1 url=$2 script=$3 pid=$4
  local line before after services_before services_after
  before=$(server_cpu "$pid")
  services_before=$(services_cpu)
  line=$(wrk -t"$THREADS" -c"$CONNECTIONS" -d"$DURATION" -s "$script" "$url" | grep '^RESULT')
  after=$(server_cpu "$pid")
  services_after=$(services_cpu)
  read -r _ rps p50 p95 p99 errors total <<<"$line"
  printf '| %s | %s | %s | %s | %s | %s of %s | %s | %s |\n' "$name" "$rps" "$p50" "$p95" "$p99" \
    "$errors" "$total" "$(per_request $((after - before)) "$total")" \
    "$(per_request $((services_after - services_before)) "$total")"
}

# wait_for OUT_FILE PID [LOG_FILE]: until the process says it listens; fails if it exits.
wait_for() {
  local file=$1 pid=$2 log=${3:-$1}
  for _ in $(seq 1 200); do
    grep -q 'listening on' "$file" 2>/dev/null && return 0
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  echo "error: server did not start: $(cat "$log")" >&2
  exit 1
}

# start_idyntra DIR PORT [VAR=VALUE…]: runs `idyntra serve` with huge limits (the limiter still runs).
start_idyntra() {
  local dir=$1 port=$2; shift 2
  mkdir -p "$dir"
  (cd "$dir" && exec env "$@" IDYNTRA_RATE_LIMIT__PER_KEY__REQUESTS=1000000000 \
      IDYNTRA_RATE_LIMIT__PER_IP__REQUESTS=1000000000 \
      "$idyntra" serve --listen "127.0.0.1:$port" >"$dir/out" 2>"$dir/log") &
  pids+=($!)
  wait_for "$dir/out" "$!" "$dir/log"
}

bench_setup() {
  local label=$1 dir=$2 port=$3; shift 3
  start_idyntra "$dir" "$port" "$@"
  local key session
  key=$(cd "$dir" && env "$@" "$idyntra" keys create --account bench --name wrk --json \
    | sed -E 's/.*"secret":"([^"]+)".*/\1/')
  session=$(curl -fsS -X POST "http://127.0.0.1:$port/v1/sessions" -H "Authorization: Bearer $key" \
    | sed -E 's/.*"id":"(ses_[0-9a-f]+)".*/\1/')
  local server=${pids[-1]}
  IDYNTRA_KEY=$key measure "POST /v1/sessions ($label)" "http://127.0.0.1:$port/v1/sessions" \
    "$work/create.lua" "$server"
  IDYNTRA_KEY=$key measure "GET /v1/sessions/{id} ($label)" \
    "http://127.0.0.1:$port/v1/sessions/$session" "$work/get.lua" "$server"
}

echo "connections: $CONNECTIONS, duration: $DURATION, wrk threads: $THREADS, cores: $(nproc)"
echo
echo "| what | requests/s | p50 ms | p95 ms | p99 ms | errors | server CPU µs/request | PostgreSQL + Redis CPU µs/request |"
echo "|---|---|---|---|---|---|---|---|"

"$target/bare-axum" 127.0.0.1:18090 >"$work/bare.out" 2>&1 &
pids+=($!)
wait_for "$work/bare.out" "$!"
IDYNTRA_KEY=unused measure "bare axum handler (HTTP ceiling)" "http://127.0.0.1:18090/" "$work/get.lua" \
  "${pids[-1]}"

bench_setup "SQLite" "$work/sqlite" 18080

database="idyntra_bench_$$"
psql "$PG_ADMIN" -qc "create database $database" >/dev/null
pg_url="${PG_ADMIN%/*}/$database"
bench_setup "PostgreSQL + Redis" "$work/pg" 18081 IDYNTRA_DATABASE_URL="$pg_url" \
  IDYNTRA_REDIS_URL="$REDIS_URL" IDYNTRA_REDIS_KEY_PREFIX="bench:$$:"

# The servers' pools would take connections pgbench needs (max_connections is 100 by default).
for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
pids=()
sleep 1
psql "$pg_url" -qc "create table pgbench_row (id bigserial primary key, reference text, created_at bigint not null)" >/dev/null
echo "insert into pgbench_row (reference, created_at) values ('bench', 1);" > "$work/insert.sql"
seconds=${DURATION%s}
tps=$(pgbench -n -c "$CONNECTIONS" -j "$THREADS" -T "$seconds" -f "$work/insert.sql" "$pg_url" 2>/dev/null \
  | sed -nE 's/^tps = ([0-9.]+).*/\1/p')
latency=$(pgbench -n -c "$CONNECTIONS" -j "$THREADS" -T 3 -f "$work/insert.sql" "$pg_url" 2>/dev/null \
  | sed -nE 's/^latency average = ([0-9.]+) ms/\1/p')
printf '| pgbench one-row insert (database ceiling) | %.0f | avg %s | | | | | |\n' "$tps" "$latency"

psql "$PG_ADMIN" -qc "drop database if exists $database" >/dev/null
