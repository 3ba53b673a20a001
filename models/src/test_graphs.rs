//! Small ONNX graphs for the graph rewrites' tests.

use tract_onnx::pb;

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
