#!/usr/bin/env bash
# Two builds' CPU per `GET /v1/sessions/{id}`, measured at the same time: both servers run side by
# side on the embedded SQLite default, each under its own wrk (1 thread, 50 connections), so that
# whatever the host does to the machine's speed during the run falls on both alike. On a VM whose
# speed moves between runs, this tells two builds apart where alternating runs of api-bench.sh
# cannot. Run it several times, swapping the order of the builds.
#
# Usage: tests/perf/paired-reads.sh OLD_IDYNTRA NEW_IDYNTRA [SECONDS]
#        FILL=SECONDS tests/perf/paired-reads.sh …   first creates sessions for that long (each server
#        alone, 50 connections), so that the reads meet a database the size api-bench.sh leaves.
#        ALONE=1 tests/perf/paired-reads.sh …   loads one server at a time instead, as api-bench.sh
#        does (2 wrk threads, 100 connections): the same setting as its rows, less robust to noise.
#        Each server's CPU then also counts its idle seconds while the other is loaded (its WAL
#        checkpointer's ticks: the same small amount for both builds).
# Prints, per build: requests answered, and the server's CPU (user + system) in µs per request;
# fails when any answer was not a success (a build that answers errors fast is not faster).
set -euo pipefail

[ $# -ge 2 ] || { echo "usage: $0 OLD_IDYNTRA NEW_IDYNTRA [SECONDS]" >&2; exit 2; }
builds=("$1" "$2")
seconds=${3:-8}
fill=${FILL:-0}
alone=${ALONE:-0}
command -v wrk >/dev/null || { echo "error: wrk is required" >&2; exit 1; }

work=$(mktemp -d)
servers=()
cleanup() { for pid in "${servers[@]+"${servers[@]}"}"; do kill "$pid" 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT

cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }

urls=()
for i in 0 1; do
  dir=$work/$i port=$((20000 + RANDOM % 5000 + i))
  mkdir -p "$dir"
  (cd "$dir" && exec env IDYNTRA_RATE_LIMIT__PER_KEY__REQUESTS=1000000000 \
    IDYNTRA_RATE_LIMIT__PER_IP__REQUESTS=1000000000 \
    "${builds[$i]}" serve --listen "127.0.0.1:$port" >out 2>log) &
  servers+=($!)
  for _ in $(seq 1 100); do grep -q 'listening on' "$dir/out" 2>/dev/null && break; sleep 0.1; done
  grep -q 'listening on' "$dir/out" || { echo "error: ${builds[$i]} did not start: $(cat "$dir/log")" >&2; exit 1; }
  key=$(cd "$dir" && "${builds[$i]}" keys create --account paired --name wrk --json |
    sed -E 's/.*"secret":"([^"]+)".*/\1/')
  session=$(curl -fsS -X POST "http://127.0.0.1:$port/v1/sessions" -H "Authorization: Bearer $key" |
    sed -E 's/.*"id":"(ses_[0-9a-f]+)".*/\1/')
  printf 'wrk.headers["Authorization"] = "Bearer %s"\n' "$key" >"$dir/get.lua"
  echo 'done = function(summary) io.write(string.format("RESULT %d %d\n", summary.requests, summary.errors.status)) end' \
    >>"$dir/get.lua"
  urls+=("http://127.0.0.1:$port/v1/sessions/$session")
  if [ "$fill" -gt 0 ]; then
    printf 'wrk.method = "POST"\nwrk.headers["Content-Type"] = "application/json"\nwrk.body = "{}"\n' \
      >"$dir/create.lua"
    grep Authorization "$dir/get.lua" >>"$dir/create.lua"
    wrk -t1 -c50 -d"${fill}s" -s "$dir/create.lua" "http://127.0.0.1:$port/v1/sessions" |
      grep -E 'Requests/sec|Non-2xx' | sed "s|^|${builds[$i]} fill: |"
  fi
done

# load SECONDS: both wrk at once (or one after the other with ALONE=1), each writing its RESULT
# line to its server's directory.
load() {
  local loaders=()
  for i in 0 1; do
    if [ "$alone" = 1 ]; then
      wrk -t2 -c100 -d"$1s" -s "$work/$i/get.lua" "${urls[$i]}" | grep '^RESULT' >"$work/$i/result"
    else
      (wrk -t1 -c50 -d"$1s" -s "$work/$i/get.lua" "${urls[$i]}" | grep '^RESULT' >"$work/$i/result") &
      loaders+=($!)
    fi
  done
  # Not a bare `wait`, which would wait for the servers too.
  if [ ${#loaders[@]} -gt 0 ]; then wait "${loaders[@]}"; fi
}

load 2 # warm-up
before=("$(cpu_ticks "${servers[0]}")" "$(cpu_ticks "${servers[1]}")")
load "$seconds"
failed=0
for i in 0 1; do
  used=$(($(cpu_ticks "${servers[$i]}") - before[i]))
  requests=$(awk '{print $2}' "$work/$i/result")
  errors=$(awk '{print $3}' "$work/$i/result")
  awk -v build="${builds[$i]}" -v used="$used" -v hz="$(getconf CLK_TCK)" -v n="$requests" \
    'BEGIN { printf "%s: %d requests, %.1f µs of server CPU per request\n", build, n, used * 1e6 / hz / n }'
  if [ "$errors" -ne 0 ]; then
    echo "error: ${builds[$i]} answered $errors requests with an error status" >&2
    failed=1
  fi
done
exit "$failed"
