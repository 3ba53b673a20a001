//! A rewrite of an ONNX graph before tract plans it, which changes no output value: 2×2 max pools
//! at stride 2 become 2×2 pools at stride 1 followed by every other row and column.
//!
//! tract 0.23 pools 2×2 windows at stride 2 with a scalar loop and a bounds check per tap, but at
//! stride 1 with SIMD on x86-64 and aarch64 (the runner rewrites only there); its strided `Slice`
//! is a plain copy. With `SAME_UPPER` padding the stride-2 pool's windows are exactly the stride-1
//! pool's windows at even rows and columns — the same taps, and the same padding after the last
//! row or column when a side is odd — so the values are identical (the tests compare them bit for
//! bit). On BlazeFace, whose three pools are of this kind, a run takes about 14 % less time (see
//! docs/PERFORMANCE.md).

use tract_onnx::pb;

/// Prefix of the constants the rewrite adds to the graph.
const PREFIX: &str = "idyntra_dense_pool";

/// Rewrites every 2×2, stride-2, `SAME_UPPER` max pool of `model`; returns how many. Graphs below
/// opset 10, whose `Slice` takes no steps, are left as they are.
pub fn rewrite(model: &mut pb::ModelProto) -> usize {
    let opset = model
        .opset_import
        .iter()
        .find(|import| import.domain.is_empty() || import.domain == "ai.onnx")
        .map_or(0, |import| import.version);
    let Some(graph) = model.graph.as_mut().filter(|_| opset >= 10) else {
        return 0;
    };
    let mut rewritten = 0;
    let mut nodes = Vec::with_capacity(graph.node.len());
    for mut node in std::mem::take(&mut graph.node) {
        if !strided_2x2_same_upper(&node) {
            nodes.push(node);
            continue;
        }
        let output = std::mem::take(&mut node.output[0]);
        let dense = format!("{PREFIX}_{rewritten}_{output}");
        for attribute in &mut node.attribute {
            if attribute.name == "strides" {
                attribute.ints = vec![1, 1];
            }
        }
        node.output[0] = dense.clone();
        let mut input = vec![dense.clone()];
        input.extend(["_starts", "_ends", "_axes", "_steps"].map(|name| format!("{PREFIX}{name}")));
        nodes.push(node);
        nodes.push(pb::NodeProto {
            name: format!("{dense}_every_other"),
            op_type: "Slice".to_owned(),
            input,
            output: vec![output],
            ..Default::default()
        });
        rewritten += 1;
    }
    graph.node = nodes;
    if rewritten > 0 {
        // From the first row and column to the end, every other one, of the two spatial axes.
        graph.initializer.extend([
            int64s("_starts", &[0, 0]),
            int64s("_ends", &[i64::MAX, i64::MAX]),
            int64s("_axes", &[2, 3]),
            int64s("_steps", &[2, 2]),
        ]);
    }
    rewritten
}

/// Whether `node` is a max pool whose stride-1 form, sampled at even positions, is the same pool.
/// Any attribute besides these (or a second output, the indices) leaves it alone.
fn strided_2x2_same_upper(node: &pb::NodeProto) -> bool {
    let attribute = |name: &str| node.attribute.iter().find(|a| a.name == name);
    let known = node.attribute.iter().all(|a| match a.name.as_str() {
        "kernel_shape" | "strides" | "auto_pad" => true,
        "dilations" => a.ints.iter().all(|&d| d == 1),
        "ceil_mode" | "storage_order" => a.i == 0,
        _ => false,
    });
    node.op_type == "MaxPool"
        && node.domain.is_empty()
        && node.input.len() == 1
        && node.output.len() == 1
        && known
        && attribute("kernel_shape").is_some_and(|a| a.ints == [2, 2])
        && attribute("strides").is_some_and(|a| a.ints == [2, 2])
        && attribute("auto_pad").is_some_and(|a| a.s == b"SAME_UPPER")
}

fn int64s(suffix: &str, values: &[i64]) -> pb::TensorProto {
    pb::TensorProto {
        name: format!("{PREFIX}{suffix}"),
        dims: vec![values.len() as i64],
        data_type: pb::tensor_proto::DataType::Int64 as i32,
        int64_data: values.to_vec(),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use tract_onnx::prelude::*;

    use super::*;
    use crate::test_graphs::run;

    fn attribute_ints(name: &str, ints: &[i64]) -> pb::AttributeProto {
        pb::AttributeProto {
            name: name.to_owned(),
            r#type: pb::attribute_proto::AttributeType::Ints as i32,
            ints: ints.to_vec(),
            ..Default::default()
        }
    }

    fn pool(kernel: i64, stride: i64, auto_pad: &str) -> pb::NodeProto {
        pb::NodeProto {
            name: "pool".to_owned(),
            op_type: "MaxPool".to_owned(),
            input: vec!["x".to_owned()],
            output: vec!["y".to_owned()],
            attribute: vec![
                attribute_ints("kernel_shape", &[kernel, kernel]),
                attribute_ints("strides", &[stride, stride]),
                pb::AttributeProto {
                    name: "auto_pad".to_owned(),
                    r#type: pb::attribute_proto::AttributeType::String as i32,
                    s: auto_pad.as_bytes().to_vec(),
                    ..Default::default()
                },
            ],
            ..Default::default()
        }
    }

    /// A graph of one pool from `x` to `y`, both float, at opset 11.
    fn one_pool(node: pb::NodeProto) -> pb::ModelProto {
        crate::test_graphs::x_to_y(vec![node], vec![])
    }

    fn bits(values: &Tensor) -> Vec<u32> {
        let view = values.to_plain_array_view::<f32>().unwrap();
        view.iter().map(|value| value.to_bits()).collect()
    }

    #[test]
    fn the_dense_pool_gives_the_strided_pools_values_even_on_odd_sides() {
        let original = one_pool(pool(2, 2, "SAME_UPPER"));
        let mut rewritten = original.clone();
        assert_eq!(rewrite(&mut rewritten), 1);
        let ops: Vec<_> = rewritten
            .graph
            .as_ref()
            .unwrap()
            .node
            .iter()
            .map(|n| n.op_type.as_str())
            .collect();
        assert_eq!(ops, ["MaxPool", "Slice"]);
        // Even and odd sides; negative values too, so that padding read as 0 would show.
        for shape in [[1, 2, 6, 8], [1, 3, 7, 5], [2, 1, 1, 9]] {
            let len = shape.iter().product::<usize>();
            let input: Vec<f32> = (0..len)
                .map(|i| ((i * 37 % 23) as f32 - 15.0) / 3.0)
                .collect();
            let expected = run(&original, &shape, &input);
            let got = run(&rewritten, &shape, &input);
            assert_eq!(got.shape(), expected.shape(), "{shape:?}");
            assert_eq!(bits(&got), bits(&expected), "{shape:?}");
        }
    }

    #[test]
    fn other_pools_are_left_alone() {
        for node in [
            pool(3, 2, "SAME_UPPER"),
            pool(2, 1, "SAME_UPPER"),
            pool(2, 2, "VALID"),
        ] {
            let original = one_pool(node);
            let mut model = original.clone();
            assert_eq!(rewrite(&mut model), 0);
            assert_eq!(model, original);
        }
        let mut with_indices = one_pool(pool(2, 2, "SAME_UPPER"));
        with_indices.graph.as_mut().unwrap().node[0]
            .output
            .push("indices".to_owned());
        assert_eq!(rewrite(&mut with_indices.clone()), 0);
        let mut old = one_pool(pool(2, 2, "SAME_UPPER"));
        old.opset_import[0].version = 9;
        assert_eq!(rewrite(&mut old), 0);
    }
}
