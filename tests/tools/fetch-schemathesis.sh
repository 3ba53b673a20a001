#!/usr/bin/env bash
# Installs schemathesis 4.32.5 from PyPI into a virtual environment at $1 (default
# tests/tools/venv), every package checked against the hashes in schemathesis.txt. Needs python3
# with venv and pip reaching PyPI; x86_64 Linux, CPython 3.11.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
venv=${1:-$here/venv}
if [ -x "$venv/bin/schemathesis" ] && "$venv/bin/schemathesis" --version | grep -q ' 4\.32\.5$'; then
  exit 0
fi
python3 -m venv "$venv" || { echo "error: python3 -m venv failed (Debian: python3-venv)" >&2; exit 1; }
"$venv/bin/pip" install --quiet --disable-pip-version-check --no-deps --only-binary :all: \
  --require-hashes -r "$here/schemathesis.txt"
"$venv/bin/schemathesis" --version
