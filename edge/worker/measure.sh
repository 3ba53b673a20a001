#!/usr/bin/env bash
# Measures the Worker: the size of its release build (after wasm-opt), then cold start and time per
# attestation in workerd (`wrangler dev --local`), with the captures of the `attest_timings` example.
# Run from anywhere; prints the numbers docs/PERFORMANCE.md records.
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
cd "$root"
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/idyntra-target}
runs=${1:-5}
port=8799

bash edge/worker/build.sh
wasm=edge/build/index_bg.wasm
echo "wasm: $(stat -c %s "$wasm") bytes, gzip -9: $(gzip -9 -c "$wasm" | wc -c) bytes"
echo "index.js: $(stat -c %s edge/build/index.js) bytes, gzip -9: $(gzip -9 -c edge/build/index.js | wc -c) bytes"

example() { cargo run -q --release -p idyntra-edge --example attest_timings -- "$@"; }
jwks=$(example --print-jwks)
seed=$(head -c 32 /dev/urandom | base64)
# The Worker's state (attempt counts, lockouts) starts empty: the captures reuse their session ids
# and client addresses, so a measurement repeated within minutes would otherwise be refused (429).
state=$(mktemp -d)
# The build above is what wrangler serves: its own build step is skipped.
IDYNTRA_WORKER_PREBUILT=1 WRANGLER_SEND_METRICS=false CLOUDFLARE_CF_FETCH_ENABLED=false \
  edge/worker/node_modules/.bin/wrangler dev --local --ip 127.0.0.1 --port "$port" \
  --inspector-port 0 --show-interactive-dev-session=false --persist-to "$state" \
  --var "EDGE_PRIVATE_KEY:$seed" --var "CLIENT_TOKEN_JWKS:$jwks" >/tmp/idyntra-wrangler.log 2>&1 &
wrangler=$!
trap 'kill $wrangler 2>/dev/null || true; rm -rf "$state"' EXIT
for _ in $(seq 1 120); do
  curl -fsS "http://127.0.0.1:$port/healthz" >/dev/null 2>&1 && break
  sleep 0.5
done
curl -fsS "http://127.0.0.1:$port/healthz" >/dev/null || { cat /tmp/idyntra-wrangler.log; exit 1; }
example --worker "http://127.0.0.1:$port" "$runs"
