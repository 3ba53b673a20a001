#!/usr/bin/env bash
# Builds the edge as a Cloudflare Worker into edge/build/ (index.js, index_bg.wasm) with the tools
# pinned in edge/worker/package.json and worker-build (cargo). Nothing is downloaded by
# worker-build itself: wasm-bindgen, wasm-opt and esbuild are given to it.
#
# `build.sh tools` only installs the tools. IDYNTRA_WORKER_PROFILE=dev builds without optimisation (fast, for local tests); the default is
# the release build, shrunk by wasm-opt, that `wrangler deploy` publishes.
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
tools="$root/edge/worker"
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/idyntra-target}

wasm_bindgen=$(awk '$0 == "name = \"wasm-bindgen\"" { getline; gsub(/"/, "", $3); print $3 }' "$root/Cargo.lock")
# Tools that run for seconds, so they are built with light optimisation: their build time matters,
# their speed hardly does. worker-build only drives cargo, wasm-bindgen and esbuild.
if [ "$(wasm-bindgen --version 2>/dev/null | awk '{ print $2 }')" != "$wasm_bindgen" ]; then
  CARGO_PROFILE_RELEASE_OPT_LEVEL=1 cargo install wasm-bindgen-cli --version "$wasm_bindgen"
fi
if [ "$(worker-build --version 2>/dev/null | awk '{ print $NF }')" != "0.8.7" ]; then
  CARGO_PROFILE_RELEASE_OPT_LEVEL=0 cargo install --locked worker-build --version 0.8.7
fi
if [ ! -x "$tools/node_modules/.bin/wrangler" ] || [ ! -x "$tools/node_modules/.bin/esbuild" ]; then
  (cd "$tools" && npm ci --no-audit --no-fund)
fi
[ "${1:-}" = tools ] && exit 0
# A measurement serves the build it has just made (wrangler would otherwise rebuild it).
if [ "${IDYNTRA_WORKER_PREBUILT:-}" = 1 ] && [ -f "$root/edge/build/index.js" ]; then
  exit 0
fi
export WASM_BINDGEN_BIN="$(command -v wasm-bindgen)"
export WASM_OPT_BIN="$tools/node_modules/.bin/wasm-opt"
export ESBUILD_BIN="$tools/node_modules/.bin/esbuild"

cd "$root/edge"
if [ "${IDYNTRA_WORKER_PROFILE:-release}" = dev ]; then
  worker-build --dev --no-opt --no-default-features --features worker
else
  worker-build --release --no-default-features --features worker
fi
