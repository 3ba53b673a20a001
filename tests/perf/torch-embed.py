"""Throughput of MobileFaceNet (models/onnx/mobilefacenet.onnx) on PyTorch and a CUDA GPU, the
reference for burn's wgpu engine on the same card (`embed_engines` with the `gpu` feature).

The ONNX file is turned into a PyTorch module by onnx2torch, so both engines run the same graph
and weights. A call is timed from host memory to host memory, like the backend's: copy the crops
to the GPU, run, copy the embeddings back. Float32 is measured twice, with TF32 tensor cores off
(the same arithmetic as burn's float32 kernels) and on (PyTorch's default for convolutions).
Before timing, the module's embeddings are compared with onnxruntime's (CPU) on the same crops.

    pip install torch onnx onnx2torch onnxruntime numpy
    python3 tests/perf/torch-embed.py [RUNS] [LARGEST_BATCH]
"""

import pathlib
import statistics
import sys
import time

import numpy as np
import onnx
import onnxruntime as ort
import torch
from onnx2torch import convert

runs = int(sys.argv[1]) if len(sys.argv) > 1 else 50
largest = int(sys.argv[2]) if len(sys.argv) > 2 else 64

model_path = pathlib.Path(__file__).resolve().parents[2] / "models" / "onnx" / "mobilefacenet.onnx"
device = torch.device("cuda")
module = convert(onnx.load(str(model_path))).eval().to(device)
# Values in the model's input range ((x - 127.5) / 128); the timing does not depend on them.
crops = np.random.default_rng(7).uniform(-1.0, 1.0, size=(largest, 3, 112, 112)).astype(np.float32)


def embed(batch):
    with torch.inference_mode():
        out = module(torch.from_numpy(batch).to(device, non_blocking=False))
        return out.float().cpu().numpy()


def cosine(a, b):
    a = a / np.linalg.norm(a, axis=1, keepdims=True)
    b = b / np.linalg.norm(b, axis=1, keepdims=True)
    return (a * b).sum(axis=1)


session = ort.InferenceSession(str(model_path), providers=["CPUExecutionProvider"])
reference = session.run(None, {session.get_inputs()[0].name: crops[:8]})[0]
torch.backends.cudnn.allow_tf32 = False
torch.backends.cuda.matmul.allow_tf32 = False
agreement = cosine(embed(crops[:8]), reference).min()
print(f"{torch.cuda.get_device_name(0)}; torch {torch.__version__}; onnxruntime {ort.__version__}")
print(f"lowest cosine between PyTorch (CUDA, float32) and onnxruntime (CPU) over 8 crops: {agreement:.6f}")
print()
print("| engine | crops per call | runs | p50 ms per call | crops per second |")
print("|---|---|---|---|---|")
for tf32 in (False, True):
    torch.backends.cudnn.allow_tf32 = tf32
    torch.backends.cuda.matmul.allow_tf32 = tf32
    name = f"PyTorch {torch.__version__} CUDA float32, TF32 {'on' if tf32 else 'off'}"
    size = 2
    while size <= largest:
        batch = crops[:size]
        for _ in range(3):
            embed(batch)
        times = []
        for _ in range(runs):
            started = time.perf_counter()
            embed(batch)
            times.append((time.perf_counter() - started) * 1000.0)
        mean = statistics.mean(times)
        print(f"| {name} | {size} | {runs} | {statistics.median(times):.2f} | {size * 1000.0 / mean:.0f} |")
        size *= 2
