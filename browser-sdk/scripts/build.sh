#!/usr/bin/env bash
# Builds the package into dist/: the analysis engine (the edge's `browser` build for
# wasm32-unknown-unknown, bound with `wasm-bindgen --target web`, shrunk with wasm-opt), the ES
# modules (esbuild) and the type declarations (tsc). Needs cargo with the wasm32 target,
# wasm-bindgen-cli of the version in Cargo.lock, and `npm ci` done here.
#
# `build.sh js` rebuilds the modules only, over an engine built before. IDYNTRA_SDK_FAST=1 skips
# wasm-opt (minutes on two cores; the engine is then about the same size but slower to load).
set -euo pipefail
sdk="$(cd "$(dirname "$0")/.." && pwd)"
root="$(cd "$sdk/.." && pwd)"
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/idyntra-target}
bin="$sdk/node_modules/.bin"
[ -x "$bin/esbuild" ] || { echo "error: run \`npm ci\` in browser-sdk first" >&2; exit 1; }

build_js() {
  cd "$sdk"
  rm -rf "$sdk/dist/types" "$sdk/dist/"*.js "$sdk/dist/"*.js.map
  "$bin/esbuild" idyntra=src/index.ts element=src/element.ts --bundle --splitting --format=esm \
    --target=es2020,chrome100,firefox100,safari15 --minify --sourcemap --outdir="$sdk/dist" \
    --entry-names='[name]' --chunk-names='chunk-[hash]' --log-level=warning
  "$bin/tsc" -p tsconfig.json
}
if [ "${1:-}" = js ]; then
  [ -f "$sdk/dist/wasm/idyntra_edge_bg.wasm" ] || { echo "error: build the engine first (build.sh)" >&2; exit 1; }
  build_js
  exit 0
fi

wasm_bindgen=$(awk '$0 == "name = \"wasm-bindgen\"" { getline; gsub(/"/, "", $3); print $3 }' "$root/Cargo.lock")
if [ "$(wasm-bindgen --version 2>/dev/null | awk '{ print $2 }')" != "$wasm_bindgen" ]; then
  echo "error: wasm-bindgen $wasm_bindgen is needed: cargo install wasm-bindgen-cli --version $wasm_bindgen" >&2
  exit 1
fi
rustup target list --installed 2>/dev/null | grep -qx wasm32-unknown-unknown \
  || rustup target add wasm32-unknown-unknown

rm -rf "$sdk/dist"
mkdir -p "$sdk/dist/wasm"
(cd "$root" && cargo build --locked --release --target wasm32-unknown-unknown \
  -p idyntra-edge --no-default-features --features browser)
wasm-bindgen --target web --out-dir "$sdk/dist/wasm" --out-name idyntra_edge \
  "$CARGO_TARGET_DIR/wasm32-unknown-unknown/release/idyntra_edge.wasm"
# The glue's own declarations are not part of the SDK's API.
rm -f "$sdk/dist/wasm/"*.d.ts
if [ "${IDYNTRA_SDK_FAST:-}" != 1 ]; then
  "$bin/wasm-opt" -Oz --enable-bulk-memory --enable-nontrapping-float-to-int --enable-sign-ext \
    --enable-mutable-globals --enable-simd "$sdk/dist/wasm/idyntra_edge_bg.wasm" -o "$sdk/dist/wasm/idyntra_edge_bg.wasm"
fi

build_js
echo "built $sdk/dist"
