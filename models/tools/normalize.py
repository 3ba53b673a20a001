"""Rewrites converted ONNX models into a canonical, reproducible form.

tflite2onnx writes initializers in an order that changes from run to run, so the same conversion
gives different bytes. Sorting initializers and value_info by name makes the file depend on the
model alone. For CenterFace, the graph input stored as [10,3,32,32] becomes [N,3,H,W] (H and W
multiples of 32), the initializers no longer appear as graph inputs (an old exporter habit) and
initializers no node uses are dropped. For MobileFaceNet, the batch stored as 2 becomes N: only the
last Reshape (to [2, 192]) depends on it, and [-1, 192] makes the same graph take any number of
crops, which dynamic batching needs; the converter's shapes of the intermediate values, all of
batch 2, are dropped.

For the anti-spoofing network (converted by tf2onnx, since tflite2onnx has no LEAKY_RELU), the
names tf2onnx makes up (`…__123`) take a counter that changes from run to run, so they are numbered
again in the order the graph first uses them; then two repairs: tf2onnx drops the bias of the eight fully connected layers it writes as a bare MatMul, so
each gets an Add of its bias back, read from the TFLite file; and the weights, stored as float16 in
the TFLite file and widened by the converter, are stored as float16 again with a Cast to float32
after them, which halves the file and changes no value.

Usage: normalize.py generic|centerface|mobilefacenet IN OUT
       normalize.py antispoofing IN OUT TFLITE
"""

import re
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


def tflite_constant(model, graph, index: int) -> np.ndarray:
    """A constant tensor of a TFLite graph as float32, through the DEQUANTIZE that widens it."""
    import tflite  # only this model needs the TFLite schema

    tensor = graph.Tensors(index)
    data = model.Buffers(tensor.Buffer()).DataAsNumpy()
    if isinstance(data, np.ndarray) and data.size:
        dtype = {tflite.TensorType.FLOAT32: np.float32, tflite.TensorType.FLOAT16: np.float16}
        values = np.frombuffer(data.tobytes(), dtype=dtype[tensor.Type()])
        return values.reshape(tensor.ShapeAsNumpy()).astype(np.float32)
    for k in range(graph.OperatorsLength()):
        op = graph.Operators(k)
        if op.OutputsLength() and op.Outputs(0) == index:
            return tflite_constant(model, graph, op.Inputs(0))
    raise ValueError(f"tensor {tensor.Name()} is not a constant")


def renumber_made_up_names(graph: onnx.GraphProto) -> None:
    """Gives every name with a converter's counter (`…__123`) the number of its first use."""
    made_up = re.compile(r"__\d+")
    renamed: dict = {}

    def rename(name: str) -> str:
        if not made_up.search(name):
            return name
        if name not in renamed:
            renamed[name] = made_up.sub(f"__{len(renamed)}", name)
        return renamed[name]

    for node in graph.node:
        node.input[:] = [rename(name) for name in node.input]
        node.output[:] = [rename(name) for name in node.output]
    for node in graph.node:
        node.name = rename(node.name)
    for tensor in graph.initializer:
        tensor.name = rename(tensor.name)
    for value in list(graph.input) + list(graph.output):
        value.name = rename(value.name)


def antispoofing(model: onnx.ModelProto, tflite_path: str) -> None:
    import tflite

    graph = model.graph
    renumber_made_up_names(graph)
    source = tflite.Model.GetRootAsModel(open(tflite_path, "rb").read(), 0)
    subgraph = source.Subgraphs(0)
    producers = {out: node for node in graph.node for out in node.output}
    repaired = 0
    for k in range(subgraph.OperatorsLength()):
        op = subgraph.Operators(k)
        code = source.OperatorCodes(op.OpcodeIndex())
        opcode = max(code.BuiltinCode(), code.DeprecatedBuiltinCode())
        if opcode != tflite.BuiltinOperator.FULLY_CONNECTED or op.InputsLength() < 3:
            continue
        if op.Inputs(2) < 0:
            continue
        name = subgraph.Tensors(op.Outputs(0)).Name().decode()
        node = producers.get(name)
        if node is None or node.op_type != "MatMul":
            continue  # written as a Gemm, bias included
        bias = tflite_constant(source, subgraph, op.Inputs(2))
        unbiased = f"{name}/without_bias"
        node.output[0] = unbiased
        graph.initializer.append(numpy_helper.from_array(bias, f"{name}/bias"))
        add = onnx.helper.make_node("Add", [unbiased, f"{name}/bias"], [name], name=f"{name}/add_bias")
        graph.node.insert(list(graph.node).index(node) + 1, add)
        repaired += 1
    assert repaired == 8, f"{repaired} biases restored, expected 8"
    # float16 storage: only weights that float16 holds exactly, so no value changes.
    casts = []
    for index, tensor in enumerate(graph.initializer):
        values = numpy_helper.to_array(tensor)
        if values.dtype != np.float32 or values.size < 64:
            continue
        narrow = values.astype(np.float16)
        if not np.array_equal(narrow.astype(np.float32), values):
            continue
        name = tensor.name
        graph.initializer[index].CopyFrom(numpy_helper.from_array(narrow, f"{name}/f16"))
        casts.append(
            onnx.helper.make_node("Cast", [f"{name}/f16"], [name], name=f"{name}/widen", to=onnx.TensorProto.FLOAT)
        )
    # In name order: the converter's order of initializers changes from run to run.
    for cast in sorted(casts, key=lambda node: node.name, reverse=True):
        graph.node.insert(0, cast)
    del graph.value_info[:]


def main() -> None:
    kind, source, target = sys.argv[1:4]
    model = onnx.load(source)
    if kind == "centerface":
        centerface(model)
    elif kind == "mobilefacenet":
        mobilefacenet(model)
    elif kind == "antispoofing":
        antispoofing(model, sys.argv[4])
    elif kind != "generic":
        sys.exit(f"unknown kind {kind}")
    sort_graph(model)
    model.producer_version = model.producer_version or "unknown"
    onnx.checker.check_model(model)
    onnx.save(model, target)


if __name__ == "__main__":
    main()
