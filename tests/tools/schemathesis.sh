#!/usr/bin/env bash
# Property-based tests of a running server against its own /openapi.json:
#   tests/tools/schemathesis.sh BASE_URL API_KEY
# (API_KEY: a secret key with every scope, e.g. from `idyntra keys create --account contract`).
# Runs the examples, coverage and fuzzing phases with every check for MAX_TIME seconds (default
# 600); exits non-zero on any failure. Installs schemathesis (pinned) on first use.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
[ $# -eq 2 ] || { echo "usage: $0 BASE_URL API_KEY" >&2; exit 2; }
schemathesis=${SCHEMATHESIS:-$here/venv/bin/schemathesis}
[ -x "$schemathesis" ] || bash "$here/fetch-schemathesis.sh" >/dev/null
base=${1%/}
export SCHEMATHESIS_HOOKS=schemathesis_hooks PYTHONPATH="$here${PYTHONPATH:+:$PYTHONPATH}"
exec "$schemathesis" run "$base/openapi.json" \
  --header "Authorization: Bearer $2" \
  --checks all \
  --phases examples,coverage,fuzzing \
  --max-time "${MAX_TIME:-600}" \
  --workers 2 \
  --request-timeout 30 \
  --seed "${SEED:-1}"
