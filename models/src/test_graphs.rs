//! Small ONNX graphs for the graph rewrites' tests.

use tract_onnx::pb;
use tract_onnx::prelude::*;

/// A float tensor of any shape named `name`, as a graph input or output.
pub fn float_value(name: &str) -> pb::ValueInfoProto {
    pb::ValueInfoProto {
        name: name.to_owned(),
        r#type: Some(pb::TypeProto {
            value: Some(pb::type_proto::Value::TensorType(pb::type_proto::Tensor {
                elem_type: pb::tensor_proto::DataType::Float as i32,
                shape: None,
            })),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// A model at opset 11 of `nodes` and `initializer`, from the float input `x` to the output `y`.
pub fn x_to_y(nodes: Vec<pb::NodeProto>, initializer: Vec<pb::TensorProto>) -> pb::ModelProto {
    pb::ModelProto {
        ir_version: 6,
        opset_import: vec![pb::OperatorSetIdProto {
            domain: String::new(),
            version: 11,
        }],
        graph: Some(pb::GraphProto {
            node: nodes,
            initializer,
            input: vec![float_value("x")],
            output: vec![float_value("y")],
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// Plans `model` for an input of `shape`, as the runner parses graphs, and runs it on `input`.
pub fn run(model: &pb::ModelProto, shape: &[usize], input: &[f32]) -> Tensor {
    let plan = crate::channel_prelu::onnx()
        .model_for_proto_model(model)
        .unwrap()
        .with_input_fact(0, f32::fact(shape).into())
        .unwrap()
        .into_optimized()
        .unwrap()
        .into_runnable()
        .unwrap();
    let input = Tensor::from_shape(shape, input).unwrap();
    plan.run(tvec!(input.into()))
        .unwrap()
        .remove(0)
        .into_tensor()
}
