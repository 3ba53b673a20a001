"""Rewrites converted ONNX models into a canonical, reproducible form.

tflite2onnx writes initializers in an order that changes from run to run, so the same conversion
gives different bytes. Sorting initializers and value_info by name makes the file depend on the
model alone. For CenterFace, the graph input stored as [10,3,32,32] becomes [N,3,H,W] (H and W
multiples of 32), the initializers no longer appear as graph inputs (an old exporter habit) and
initializers no node uses are dropped. For MobileFaceNet, the batch stored as 2 becomes N: only the
last Reshape (to [2, 192]) depends on it, and [-1, 192] makes the same graph take any number of
crops, which dynamic batching needs; the converter's shapes of the intermediate values, all of
batch 2, are dropped.

Usage: normalize.py generic|centerface|mobilefacenet IN OUT
"""

import sys

import numpy as np
import onnx
from onnx import numpy_helper


def sort_graph(model: onnx.ModelProto) -> None:
    graph = model.graph
    initializers = sorted(graph.initializer, key=lambda t: t.name)
    del graph.initializer[:]
    graph.initializer.extend(initializers)
    value_info = sorted(graph.value_info, key=lambda v: v.name)
    del graph.value_info[:]
    graph.value_info.extend(value_info)


def set_dims(value: onnx.ValueInfoProto, dims) -> None:
    shape = value.type.tensor_type.shape
    del shape.dim[:]
    for dim in dims:
        entry = shape.dim.add()
        if isinstance(dim, str):
            entry.dim_param = dim
        else:
            entry.dim_value = dim


def centerface(model: onnx.ModelProto) -> None:
    graph = model.graph
    initializer_names = {t.name for t in graph.initializer}
    inputs = [i for i in graph.input if i.name not in initializer_names]
    del graph.input[:]
    graph.input.extend(inputs)
    set_dims(graph.input[0], ["N", 3, "H", "W"])
    # Outputs are at a quarter of the input's resolution.
    for output, channels in zip(graph.output, [1, 2, 2, 10]):
        set_dims(output, ["N", channels, "H4", "W4"])
    del graph.value_info[:]
    # Batch-norm counters the exporter left behind are used by no node.
    used = {name for node in graph.node for name in node.input}
    kept = [t for t in graph.initializer if t.name in used]
    del graph.initializer[:]
    graph.initializer.extend(kept)


def mobilefacenet(model: onnx.ModelProto) -> None:
    graph = model.graph
    set_dims(graph.input[0], ["N", 3, 112, 112])
    set_dims(graph.output[0], ["N", 192])
    (last,) = [node for node in graph.node if graph.output[0].name in node.output]
    assert last.op_type == "Reshape", last.op_type
    (shape,) = [t for t in graph.initializer if t.name == last.input[1]]
    assert list(numpy_helper.to_array(shape)) == [2, 192], numpy_helper.to_array(shape)
    shape.CopyFrom(numpy_helper.from_array(np.array([-1, 192], dtype=np.int64), shape.name))
    del graph.value_info[:]


def main() -> None:
    kind, source, target = sys.argv[1:4]
    model = onnx.load(source)
    if kind == "centerface":
        centerface(model)
    elif kind == "mobilefacenet":
        mobilefacenet(model)
    elif kind != "generic":
        sys.exit(f"unknown kind {kind}")
    sort_graph(model)
    model.producer_version = model.producer_version or "unknown"
    onnx.checker.check_model(model)
    onnx.save(model, target)


if __name__ == "__main__":
    main()
