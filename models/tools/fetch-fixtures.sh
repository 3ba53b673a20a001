#!/usr/bin/env bash
# Fetches the test photos the models' tests use from package registries, pinned by sha256, into
# models/fixtures/ (not committed):
#   - PyPI face_recognition==1.3.0 (MIT), source package, tests/test_images/: official White House
#     photographs of Barack Obama and Joe Biden (US government works, public domain);
#   - PyPI scikit-image==0.24.0 (BSD-3-Clause), wheel, skimage/data/astronaut.png: Eileen Collins,
#     a NASA photograph (public domain).
# Needs python3 with pip reaching PyPI. Safe to rerun: files already present and correct are kept.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
out="$root/fixtures"
mkdir -p "$out"

# sha256 of every photo, and of the packages they come from.
photos="3c17508bb91554c637a2eabddfae790e5bb1caba93130814fc2ac50be9760c4c  biden.jpg
0930e3aa8cae5920329c0c8cbc6a2ab70f47b0e67b432875beaa95cbf7e741f6  obama.jpg
a7efcc907375274796f39646510704aa86672d59f6d5469d69af3c85590976a6  obama2.jpg
76ac6bf97c36dc2da0ad16a537d6a5ac1b10f48d49aac29a0cca9a17cdbc3ca3  obama3.jpg
c2d1f09e7ef3042352b41e41286e6eb0522f64f88308be13886991b95db52117  obama_partial_face.jpg
44dca895a7d635a4aedddd91a4f37af9a8a5b44e66154282a24645a757b5f627  32bit.png
88431cd9653ccd539741b555fb0a46b61558b301d4110412b5bc28b5e3ea6cb5  astronaut.png"
face_recognition_sha256=5e5efdd1686aa566af0d3cc1313b131e4b197657a8ffd03669e6d3fad92705ec
scikit_image_wheel=scikit_image-0.24.0-cp311-cp311-manylinux_2_17_x86_64.manylinux2014_x86_64.whl
scikit_image_sha256=fa27b3a0dbad807b966b8db2d78da734cb812ca4787f7fbb143764800ce2fa9c

if (cd "$out" && printf '%s\n' "$photos" | sha256sum --check --quiet --strict >/dev/null 2>&1); then
  echo "fixtures: all present in $out"
  exit 0
fi

command -v python3 >/dev/null || { echo "error: python3 is needed to fetch the fixtures" >&2; exit 1; }
python3 -m pip --version >/dev/null 2>&1 || { echo "error: pip is needed (Debian: python3-pip)" >&2; exit 1; }
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

verify() { # file sha256
  echo "$2  $1" | sha256sum --check --quiet --strict \
    || { echo "error: $1 does not have the pinned sha256 $2" >&2; exit 1; }
}

python3 -m pip download --quiet --no-deps --no-binary :all: face_recognition==1.3.0 -d "$work"
verify "$work/face_recognition-1.3.0.tar.gz" "$face_recognition_sha256"
python3 -m pip download --quiet --no-deps --only-binary :all: --platform manylinux2014_x86_64 \
  --python-version 3.11 scikit-image==0.24.0 -d "$work"
verify "$work/$scikit_image_wheel" "$scikit_image_sha256"

python3 - "$work" "$out" "$scikit_image_wheel" <<'PY'
import sys, tarfile, zipfile, pathlib
work, out, wheel = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2]), sys.argv[3]
with tarfile.open(work / "face_recognition-1.3.0.tar.gz") as sdist:
    for name in ["biden.jpg", "obama.jpg", "obama2.jpg", "obama3.jpg", "obama_partial_face.jpg", "32bit.png"]:
        data = sdist.extractfile(f"face_recognition-1.3.0/tests/test_images/{name}").read()
        (out / name).write_bytes(data)
with zipfile.ZipFile(work / wheel) as wheel_zip:
    (out / "astronaut.png").write_bytes(wheel_zip.read("skimage/data/astronaut.png"))
PY
(cd "$out" && printf '%s\n' "$photos" | sha256sum --check --quiet --strict) \
  || { echo "error: a fixture does not have its pinned sha256" >&2; exit 1; }
echo "fixtures: fetched into $out"
