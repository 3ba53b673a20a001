#!/usr/bin/env bash
# Installs kubernetes-validate 1.37.0 (schemas of Kubernetes up to 1.37) from PyPI into a virtual
# environment at $1 (default deploy/tools/venv), every package checked against the hashes in
# kubernetes-validate.txt. Needs python3 with venv and pip reaching PyPI; x86_64 Linux, CPython 3.11.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
venv=${1:-$here/venv}
if [ -x "$venv/bin/kubernetes-validate" ] && [ "$("$venv/bin/kubernetes-validate" --version)" = 1.37.0 ]; then
  exit 0
fi
python3 -m venv "$venv" || { echo "error: python3 -m venv failed (Debian: python3-venv)" >&2; exit 1; }
"$venv/bin/pip" install --quiet --disable-pip-version-check --no-deps --only-binary :all: \
  --require-hashes -r "$here/kubernetes-validate.txt"
"$venv/bin/kubernetes-validate" --version
