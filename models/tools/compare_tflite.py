"""Checks a converted model against its TFLite original: both run on the same inputs, the TFLite
file in the TFLite interpreter (ai-edge-litert), the ONNX file in onnxruntime, and the largest
difference of any output is printed. Used for the anti-spoofing network, whose conversion needed
repairs (tools/normalize.py).

Usage: python3 models/tools/compare_tflite.py MODEL.tflite MODEL.onnx PHOTO...
(needs: pip install -r models/tools/reference-requirements.txt). Each photo's centre square,
resized to the model's input, RGB / 255, is one input; the TFLite file comes from the package
fetch-models.sh names.
"""

import sys

import numpy as np
import onnxruntime as ort
from ai_edge_litert.interpreter import Interpreter
from PIL import Image


def square(path: str, side: int) -> np.ndarray:
    image = Image.open(path).convert("RGB")
    width, height = image.size
    edge = min(width, height)
    left, top = (width - edge) // 2, (height - edge) // 2
    image = image.crop((left, top, left + edge, top + edge)).resize((side, side), Image.BILINEAR)
    return (np.asarray(image, dtype=np.float32) / 255.0)[np.newaxis]


def main() -> None:
    tflite_path, onnx_path, *photos = sys.argv[1:]
    interpreter = Interpreter(tflite_path)
    interpreter.allocate_tensors()
    (source,) = interpreter.get_input_details()
    outputs = interpreter.get_output_details()
    session = ort.InferenceSession(onnx_path)
    names = [output.name for output in session.get_outputs()]
    worst = 0.0
    for photo in photos:
        tensor = square(photo, source["shape"][1])
        interpreter.set_tensor(source["index"], tensor)
        interpreter.invoke()
        expected = {o["name"]: interpreter.get_tensor(o["index"]) for o in outputs}
        actual = dict(zip(names, session.run(None, {session.get_inputs()[0].name: tensor})))
        difference = max(float(np.abs(actual[name] - expected[name]).max()) for name in expected)
        worst = max(worst, difference)
        print(f"{photo}: {difference:.3g}")
    print(f"largest difference over {len(photos)} inputs: {worst:.3g}")


if __name__ == "__main__":
    main()
