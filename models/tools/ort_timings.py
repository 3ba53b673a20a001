"""The onnxruntime reference for the stage timings: the same ONNX files, the same input sizes.

Usage: python3 models/tools/ort_timings.py [RUNS]   (needs: pip install onnxruntime numpy)
Prints the median milliseconds of one CenterFace run at 320×320, one MobileFaceNet run of two
crops, one BlazeFace run at 128×128 and one run of the passive presentation-attack model at
256×256, on random inputs (speed does not depend on the pixel values for these networks).
"""

import pathlib
import statistics
import sys
import time

import numpy as np
import onnxruntime as ort

ONNX = pathlib.Path(__file__).resolve().parent.parent / "onnx"


def median_ms(session, feeds, runs):
    session.run(None, feeds)  # warm-up
    samples = []
    for _ in range(runs):
        started = time.perf_counter()
        session.run(None, feeds)
        samples.append((time.perf_counter() - started) * 1000)
    return statistics.median(samples)


def main():
    runs = int(sys.argv[1]) if len(sys.argv) > 1 else 20
    rng = np.random.default_rng(0)
    canvas = rng.uniform(0, 255, (1, 3, 320, 320)).astype(np.float32)
    crops = rng.uniform(-1, 1, (2, 3, 112, 112)).astype(np.float32)
    frame = rng.uniform(-1, 1, (1, 3, 128, 128)).astype(np.float32)
    face = rng.uniform(0, 1, (1, 256, 256, 3)).astype(np.float32)
    print(f"onnxruntime {ort.__version__}, runs: {runs}")
    # tract runs a model on one thread; onnxruntime uses every core unless told otherwise.
    for threads in (1, 0):
        options = ort.SessionOptions()
        options.log_severity_level = 3
        options.intra_op_num_threads = threads
        label = "1 thread" if threads == 1 else "all cores"
        detector = ort.InferenceSession(str(ONNX / "centerface.onnx"), options)
        embedder = ort.InferenceSession(str(ONNX / "mobilefacenet.onnx"), options)
        blazeface = ort.InferenceSession(str(ONNX / "blazeface_short_range.onnx"), options)
        pad = ort.InferenceSession(str(ONNX / "antispoofing.onnx"), options)
        detect = median_ms(detector, {"input.1": canvas}, runs)
        embed = median_ms(embedder, {"input": crops}, runs)
        frame_detect = median_ms(blazeface, {"input": frame}, runs)
        passive = median_ms(pad, {"input": face}, runs)
        print(f"| CenterFace 320×320, {label} | {detect:.2f} |")
        print(f"| MobileFaceNet batch of 2, {label} | {embed:.2f} |")
        print(f"| BlazeFace 128×128, {label} | {frame_detect:.2f} |")
        print(f"| passive PAD 256×256, {label} | {passive:.2f} |")


if __name__ == "__main__":
    main()
