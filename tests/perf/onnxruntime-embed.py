"""Latency of MobileFaceNet (models/onnx/mobilefacenet.onnx) on onnxruntime, CPU, for comparison with
the Rust engines (`cargo run --release -p idyntra-backend --example embed_engines`): one call of two
crops, then the throughput of batches of 2 to 64 crops.

    python3 -m venv /tmp/ort && /tmp/ort/bin/pip install onnxruntime==1.32.0 numpy
    /tmp/ort/bin/python tests/perf/onnxruntime-embed.py [RUNS]
"""

import pathlib
import statistics
import sys
import time

import numpy as np
import onnxruntime as ort

runs = int(sys.argv[1]) if len(sys.argv) > 1 else 50


def timed(batch):
    for _ in range(3):
        session.run(None, {name: batch})
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        session.run(None, {name: batch})
        times.append((time.perf_counter() - started) * 1000.0)
    return times


model = pathlib.Path(__file__).resolve().parents[2] / "models" / "onnx" / "mobilefacenet.onnx"
session = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
name = session.get_inputs()[0].name
# Values in the model's input range ((x - 127.5) / 128); the latency does not depend on them.
crops = np.random.default_rng(7).uniform(-1.0, 1.0, size=(64, 3, 112, 112)).astype(np.float32)
times = timed(crops[:2])
print("| engine | runs | p50 ms | mean ms |")
print("|---|---|---|---|")
print(f"| onnxruntime {ort.__version__} (CPU) | {runs} | {statistics.median(times):.2f} | {statistics.mean(times):.2f} |")
print()
print("| engine | crops per call | runs | p50 ms per call | crops per second |")
print("|---|---|---|---|---|")
for size in (2, 8, 16, 32, 64):
    times = timed(crops[:size])
    print(f"| onnxruntime {ort.__version__} (CPU) | {size} | {runs} | {statistics.median(times):.2f} | {size * 1000.0 / statistics.mean(times):.0f} |")
