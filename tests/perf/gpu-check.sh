#!/usr/bin/env bash
# The GPU half of the face-embedding measurements (docs/PERFORMANCE.md, "On a GPU"): burn's wgpu
# engine against tract (parity) and against PyTorch on the same card and the same ONNX file
# (throughput). Runs on a machine with an NVIDIA GPU, its driver and python3 with torch, onnx and
# onnxruntime, from the repository root, with what a build machine prepared beside it:
#   .gpu/embed_engines   cargo build --release -p idyntra-backend --features gpu --example embed_engines
#                        (stripped; or .gpu/embed_engines.xz, compressed with xz)
#   .gpu/faces/          img1.jpg and img2.jpg from the face fixtures
#   .gpu/fixtures-path   the fixtures folder the binary was built to read (a line)
#   .gl/*.deb            the Vulkan loader (libvulkan1), when the machine has none
#   .whl/*.whl           onnx2torch, when the machine has none
# Usage: bash tests/perf/gpu-check.sh RESULTS_DIR [RUNS] [LARGEST_BATCH]
set -uo pipefail
results=${1:?results folder}
runs=${2:-20}
largest=${3:-1024}
mkdir -p "$results"

if ! ldconfig -p | grep -q libvulkan.so.1 && compgen -G '.gl/*.deb' >/dev/null; then
  for deb in .gl/*.deb; do dpkg -x "$deb" /; done
  ldconfig
fi
# The NVIDIA driver's Vulkan and EGL manifests, where the loader's default folders miss them.
if [ -e /usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json ]; then
  export VK_DRIVER_FILES=/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json
fi
if compgen -G '.whl/*.whl' >/dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site
fi
if [ ! -e .gpu/embed_engines ]; then
  python3 -c 'import lzma, shutil, sys; shutil.copyfileobj(lzma.open(sys.argv[1]), open(sys.argv[2], "wb"))' \
    .gpu/embed_engines.xz .gpu/embed_engines && chmod +x .gpu/embed_engines
fi
# The example reads the fixtures from the path it was built with.
fixtures=$(cat .gpu/fixtures-path)
mkdir -p "$fixtures" && cp .gpu/faces/*.jpg "$fixtures/"

nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv 2>&1 | tee "$results/gpu.txt"
status=0
timeout 240 .gpu/embed_engines "$runs" "$largest" 2>&1 | tee "$results/burn.txt" || status=1
PYTHONUNBUFFERED=1 timeout 150 python3 tests/perf/torch-embed.py "$runs" "$largest" 2>&1 \
  | tee "$results/torch.txt" || status=1
exit $status
