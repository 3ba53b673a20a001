"""onnxruntime's outputs on the engine-parity inputs in models/reference/, written to
models/reference/outputs.json. The Rust engine-parity tests compare their engine's outputs with these.

Usage: python3 models/tools/reference_outputs.py   (needs: pip install onnxruntime numpy pillow)
Every `stride`-th value of each flattened output is kept, so the file stays small; for BlazeFace,
the anchors whose logit is above -5.
"""

import json
import pathlib

import numpy as np
import onnxruntime as ort
from PIL import Image

MODELS = pathlib.Path(__file__).resolve().parent.parent
REFERENCE = MODELS / "reference"
PEOPLE = ["obama", "biden"]


def pixels(name):
    """The PNG as float32 [1, 3, H, W], values 0-255."""
    array = np.asarray(Image.open(REFERENCE / f"{name}.png").convert("RGB"), dtype=np.float32)
    return array.transpose(2, 0, 1)[np.newaxis]


def run(model, feed):
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(str(MODELS / "onnx" / f"{model}.onnx"), options)
    name = session.get_inputs()[0].name
    return session.run(None, {name: feed})


def values(array):
    """float32 values with 9 significant digits: enough to read back the same float32."""
    return [float(f"{v:.9g}") for v in np.asarray(array, dtype=np.float32).reshape(-1)]


def sampled(outputs, stride):
    return {"stride": stride, "outputs": [values(o.reshape(-1)[::stride]) for o in outputs]}


def main():
    result = {"onnxruntime": ort.__version__}
    for person in PEOPLE:
        centerface = pixels(f"centerface_{person}")
        result[f"centerface_{person}"] = sampled(run("centerface", centerface), 29)
        blazeface = pixels(f"blazeface_{person}") / 127.5 - 1.0
        regressors, logits = run("blazeface_short_range", blazeface)
        regressors, logits = regressors.reshape(896, 16), logits.reshape(896)
        # Only anchors a decoder can reach (score above 0.7 %): the others hold values in the
        # thousands that no decision reads, where float32 spacing alone exceeds 1e-4.
        kept = [int(i) for i in np.flatnonzero(logits > -5.0)]
        result[f"blazeface_{person}"] = {
            "anchors": kept,
            "regressors": [values(row) for row in regressors[kept]],
            "logits": values(logits[kept]),
        }
    for person in PEOPLE:
        # Channels last, as the TFLite original: [1, 256, 256, 3], RGB / 255.
        crop = pixels(f"antispoofing_{person}").transpose(0, 2, 3, 1) / 255.0
        result[f"antispoofing_{person}"] = sampled(run("antispoofing", crop), 1)
    crops = np.concatenate([pixels(f"mobilefacenet_{p}") for p in PEOPLE])
    result["mobilefacenet_" + "_".join(PEOPLE)] = sampled(run("mobilefacenet", (crops - 127.5) / 128.0), 1)
    (REFERENCE / "outputs.json").write_text(json.dumps(result) + "\n")
    print(f"wrote {REFERENCE / 'outputs.json'} (onnxruntime {ort.__version__})")


if __name__ == "__main__":
    main()
