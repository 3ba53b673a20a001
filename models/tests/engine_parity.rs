//! tract gives the same outputs as onnxruntime, the reference engine, on the same ONNX files and
//! the same input tensors (`models/reference/`: inputs made from registry photos by
//! `examples/export_reference_inputs.rs`, outputs by `tools/reference_outputs.py`). The same tests
//! run natively and in wasm under Node:
//! `CARGO_TARGET_WASM32_UNKNOWN_UNKNOWN_RUNNER=wasm-bindgen-test-runner cargo test --target
//! wasm32-unknown-unknown -p idyntra-models --test engine_parity` (everything is compiled in: a
//! wasm test has no file system).
#![allow(clippy::unwrap_used)] // Test code: a failed unwrap is a failed test.

use idyntra_models::bundled::{ANTISPOOFING, BLAZEFACE_SHORT_RANGE, CENTERFACE, MOBILEFACENET};
use idyntra_models::{
    AntiSpoofingModel, BlazeFaceDetector, CenterFaceDetector, MobileFaceNetEmbedder, embedding,
};
use image::RgbImage;
use serde_json::Value;

/// Largest absolute difference allowed between engines (BlazeFace's box and key-point regressors
/// are compared in units of the input side, as its decoder reads them).
const TOLERANCE: f32 = 1e-4;

fn reference() -> Value {
    serde_json::from_slice(include_bytes!("../reference/outputs.json")).unwrap()
}

fn input(name: &str) -> RgbImage {
    let png: &[u8] = match name {
        "centerface_obama" => include_bytes!("../reference/centerface_obama.png"),
        "centerface_biden" => include_bytes!("../reference/centerface_biden.png"),
        "blazeface_obama" => include_bytes!("../reference/blazeface_obama.png"),
        "blazeface_biden" => include_bytes!("../reference/blazeface_biden.png"),
        "mobilefacenet_obama" => include_bytes!("../reference/mobilefacenet_obama.png"),
        "mobilefacenet_biden" => include_bytes!("../reference/mobilefacenet_biden.png"),
        "antispoofing_obama" => include_bytes!("../reference/antispoofing_obama.png"),
        "antispoofing_biden" => include_bytes!("../reference/antispoofing_biden.png"),
        _ => panic!("no reference input {name}"),
    };
    image::load_from_memory_with_format(png, image::ImageFormat::Png)
        .unwrap()
        .to_rgb8()
}

/// Channels first, each pixel value mapped by `scale`.
fn planes(image: &RgbImage, scale: impl Fn(f32) -> f32) -> Vec<f32> {
    let plane = (image.width() * image.height()) as usize;
    let mut tensor = vec![0.0; 3 * plane];
    for (i, pixel) in image.pixels().enumerate() {
        for c in 0..3 {
            tensor[c * plane + i] = scale(f32::from(pixel[c]));
        }
    }
    tensor
}

/// The largest absolute difference between `actual` and the kept values of one reference output (every
/// `stride`-th of the flattened output).
fn max_difference(actual: &[f32], expected: &Value, stride: usize) -> f32 {
    let expected: Vec<f32> = expected
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap() as f32)
        .collect();
    assert_eq!(actual.len().div_ceil(stride), expected.len());
    actual
        .iter()
        .step_by(stride)
        .zip(&expected)
        .map(|(a, e)| (a - e).abs())
        .fold(0.0, f32::max)
}

/// Checks every output of one reference entry; `outputs` in the reference's order.
fn check(entry: &str, outputs: &[Vec<f32>]) {
    let reference = reference();
    let expected = &reference[entry];
    let stride = expected["stride"].as_u64().unwrap() as usize;
    let expected = expected["outputs"].as_array().unwrap();
    assert_eq!(outputs.len(), expected.len(), "{entry}");
    for (i, (actual, expected)) in outputs.iter().zip(expected).enumerate() {
        let difference = max_difference(actual, expected, stride);
        assert!(
            difference <= TOLERANCE,
            "{entry} output {i}: tract and onnxruntime differ by {difference}"
        );
    }
}

#[cfg_attr(not(target_arch = "wasm32"), test)]
#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
fn centerface_matches_onnxruntime() {
    let detector = CenterFaceDetector::load(CENTERFACE.onnx, 320).unwrap();
    for person in ["obama", "biden"] {
        let tensor = planes(&input(&format!("centerface_{person}")), |v| v);
        check(
            &format!("centerface_{person}"),
            &detector.raw_outputs(&tensor).unwrap(),
        );
    }
}

/// BlazeFace on the anchors a decoder can reach (onnxruntime's logit above −5): the rest hold
/// values in the thousands that nothing reads.
#[cfg_attr(not(target_arch = "wasm32"), test)]
#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
fn blazeface_matches_onnxruntime() {
    let detector = BlazeFaceDetector::load(BLAZEFACE_SHORT_RANGE.onnx).unwrap();
    let reference = reference();
    for person in ["obama", "biden"] {
        let tensor = planes(&input(&format!("blazeface_{person}")), |v| v / 127.5 - 1.0);
        let [regressors, logits] = detector.raw_outputs(&tensor).unwrap();
        let expected = &reference[format!("blazeface_{person}")];
        let anchors = expected["anchors"].as_array().unwrap();
        assert!(!anchors.is_empty(), "{person}: the face's anchors are kept");
        for (k, anchor) in anchors.iter().enumerate() {
            let anchor = anchor.as_u64().unwrap() as usize;
            let logit = expected["logits"][k].as_f64().unwrap() as f32;
            assert!(
                (logits[anchor] - logit).abs() <= TOLERANCE,
                "{person} anchor {anchor} logit"
            );
            for v in 0..16 {
                let value = expected["regressors"][k][v].as_f64().unwrap() as f32;
                let ours = regressors[anchor * 16 + v];
                let difference = (ours - value).abs() / 128.0;
                assert!(
                    difference <= TOLERANCE,
                    "{person} anchor {anchor} value {v}: {difference}"
                );
            }
        }
    }
}

#[cfg_attr(not(target_arch = "wasm32"), test)]
#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
fn mobilefacenet_matches_onnxruntime() {
    let embedder = MobileFaceNetEmbedder::load(MOBILEFACENET.onnx).unwrap();
    let (obama, biden) = (input("mobilefacenet_obama"), input("mobilefacenet_biden"));
    let tensor = embedding::input_tensor(&[&obama, &biden]);
    check(
        "mobilefacenet_obama_biden",
        &[embedder.raw_outputs(&tensor).unwrap()],
    );
}

/// Both outputs (the eight leaves' classifications and the mask of the reached leaf) on the face
/// crops the edge makes; channels last, as in the TFLite original.
#[cfg_attr(not(target_arch = "wasm32"), test)]
#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
fn antispoofing_matches_onnxruntime() {
    let model = AntiSpoofingModel::load(ANTISPOOFING.onnx).unwrap();
    for person in ["obama", "biden"] {
        let crop = input(&format!("antispoofing_{person}"));
        let tensor: Vec<f32> = crop
            .into_raw()
            .into_iter()
            .map(|v| f32::from(v) / 255.0)
            .collect();
        let [classes, mask] = model.raw_outputs(&tensor).unwrap();
        assert_eq!(
            mask.iter().filter(|&&m| m == 1.0).count(),
            1,
            "{person}: {mask:?}"
        );
        check(&format!("antispoofing_{person}"), &[classes, mask]);
    }
}
