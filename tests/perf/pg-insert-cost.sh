#!/usr/bin/env bash
# What a session create costs PostgreSQL itself, without the server: pgbench runs the statement
# the server runs for a batch of creates (the sessions and their audit rows in one data-modifying
# `with`), on a fresh database with the real migrations, next to api-bench.sh's one-row insert (the
# database ceiling), then again with one piece of the schema taken away at a time, to show what
# each costs. The audit rows' later sealing (an update each) is not part of it.
#
# Usage: tests/perf/pg-insert-cost.sh        (CONNECTIONS=100 DURATION=8 seconds, BATCH=1 by default)
#        BATCH=16 tests/perf/pg-insert-cost.sh   sessions per statement, as the server's batches
# Needs: pgbench and psql, a PostgreSQL at 127.0.0.1:5432 (user postgres).
# Prints one row per variant: transactions and sessions a second, and the whole machine's busy CPU
# per session (PostgreSQL and pgbench together: pgbench's connections end with the run, so their
# backends' own CPU cannot be read afterwards).
set -euo pipefail

CONNECTIONS=${CONNECTIONS:-100}
SECONDS_EACH=${DURATION:-8}
BATCH=${BATCH:-1}
THREADS=${THREADS:-2}
PG_ADMIN=${PG_ADMIN:-postgres://postgres@127.0.0.1:5432/postgres}

root=$(cd "$(dirname "$0")/../.." && pwd)
for tool in pgbench psql; do
  command -v "$tool" >/dev/null || { echo "error: $tool is required" >&2; exit 1; }
done
database="idyntra_insert_cost_$$"
pg_url="${PG_ADMIN%/*}/$database"
work=$(mktemp -d)
cleanup() {
  psql "$PG_ADMIN" -qc "drop database if exists $database (force)" >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT

psql "$PG_ADMIN" -qc "create database $database" >/dev/null
for migration in "$root"/backend/migrations/postgres/*.sql; do
  psql "$pg_url" -q -v ON_ERROR_STOP=1 -f "$migration" >/dev/null
done
psql "$pg_url" -q -v ON_ERROR_STOP=1 >/dev/null <<'SQL'
insert into account (account_id, name, created_at) values ('acct_bench', 'bench', 1);
create table pgbench_row (id bigserial primary key, reference text, created_at bigint not null);
SQL

echo "insert into pgbench_row (reference, created_at) values ('bench', 1);" >"$work/row.sql"
# BATCH sessions and their audit rows in one statement, with fresh ids, as the server writes them.
{
  printf 'with inserted as (insert into session (session_id, account_id, status, reference, '
  printf 'metadata, options, nonce, created_at, updated_at, expires_at, result, redacted_at) values '
  for i in $(seq 1 "$BATCH"); do
    [ "$i" -gt 1 ] && printf ', '
    printf "('ses_' || md5(random()::text), 'acct_bench', 'created', 'bench', "
    printf "'{\"source\": \"wrk\"}', '{\"require_document\": true, \"liveness\": \"active\"}', "
    printf "md5(random()::text), 1, 1, 3600001, null, null)"
  done
  printf ' returning session_id) insert into audit_log (created_at, actor, action, target, '
  printf 'request_id, details) select 1, '"'"'key_bench'"'"', '"'"'session.created'"'"', '
  printf "session_id, 'req_bench', '{}' from inserted;\n"
} >"$work/session.sql"

# busy_cpu: clock ticks the machine's cores have spent busy (user, nice, system, irq, softirq, steal).
busy_cpu() { awk '/^cpu / {print $2 + $3 + $4 + $7 + $8 + $9}' /proc/stat; }

# run NAME SCRIPT ROWS_PER_TRANSACTION
run() {
  local before after tps
  before=$(busy_cpu)
  tps=$(pgbench -n -c "$CONNECTIONS" -j "$THREADS" -T "$SECONDS_EACH" -f "$2" "$pg_url" 2>/dev/null |
    sed -nE 's/^tps = ([0-9.]+).*/\1/p')
  after=$(busy_cpu)
  awk -v name="$1" -v tps="$tps" -v rows="$3" -v used=$((after - before)) -v hz="$(getconf CLK_TCK)" \
    -v secs="$SECONDS_EACH" 'BEGIN {
      printf "| %s | %.0f | %.0f | %.1f |\n", name, tps, tps * rows, used * 1e6 / hz / (tps * rows * secs)
    }'
}

echo "connections: $CONNECTIONS, seconds: $SECONDS_EACH, sessions per statement: $BATCH, cores: $(nproc)"
echo
echo "| what | transactions/s | rows or sessions/s | machine CPU µs per row or session |"
echo "|---|---|---|---|"
run "one-row insert (api-bench's database ceiling)" "$work/row.sql" 1
run "sessions with their audit rows, as migrated" "$work/session.sql" "$BATCH"
psql "$pg_url" -qc "drop index session_account_status" >/dev/null
run "without the (account, status) index" "$work/session.sql" "$BATCH"
psql "$pg_url" -qc "alter table session drop constraint session_account_id_fkey" >/dev/null
run "without it and the account foreign key" "$work/session.sql" "$BATCH"
psql "$pg_url" -qc "drop index session_account_id; drop index audit_log_unsealed; \
  alter table audit_log drop constraint audit_log_chain_seq_key" >/dev/null
run "with no secondary index at all" "$work/session.sql" "$BATCH"
