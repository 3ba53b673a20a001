//! The edge core gives the same numbers natively and in wasm (wasm-bindgen-test under Node): the
//! checks of a capture built from the committed reference canvases (`models/reference/`, PNG, so
//! every platform decodes the same pixels) are compared with `parity/expected.json`, written by
//! the native build with `IDYNTRA_WRITE_PARITY=1`, within 1e-4.
#![allow(clippy::unwrap_used)] // Test code: a failed unwrap is a failed test.

use idyntra_edge::checks::{Checker, Requirements};
use idyntra_edge::guidance::{ChallengeTracker, analyze_frame};
use idyntra_edge::{Capture, sample};
use idyntra_models::liveness_samples::Answer;
use idyntra_models::{DecodeLimits, FrameQuality, decode};
use idyntra_types::LivenessMode;
use serde_json::{Value, json};

#[cfg(target_arch = "wasm32")]
use wasm_bindgen_test::wasm_bindgen_test as test;

const OBAMA: &[u8] = include_bytes!("../../models/reference/centerface_obama.png");
const BIDEN: &[u8] = include_bytes!("../../models/reference/centerface_biden.png");
const EXPECTED: &str = include_str!("parity/expected.json");

fn measured() -> Value {
    let checker = Checker::bundled().unwrap();
    let frontal = decode(OBAMA, &DecodeLimits::default()).unwrap().image;
    let turned = decode(BIDEN, &DecodeLimits::default()).unwrap().image;
    let parts = sample::active_parts_encoded(
        "parity",
        Answer::Live,
        &frontal,
        &turned,
        Some(BIDEN),
        sample::CHALLENGE_FRAME_WIDTH,
        sample::png,
    );
    let (content_type, body) = sample::body(&parts);
    let capture = Capture::parse(Some(&content_type), body.into(), &Default::default()).unwrap();
    let needs = Requirements {
        liveness: LivenessMode::Active,
        require_document: true,
        nonce: "parity".to_owned(),
    };
    let outcome = checker.check(&capture, &needs).unwrap();
    // The browser exports' numbers too.
    let models = FrameQuality::bundled().unwrap();
    let rgba: Vec<u8> = frontal
        .pixels()
        .flat_map(|p| [p.0[0], p.0[1], p.0[2], 255])
        .collect();
    let (width, height) = frontal.dimensions();
    let quality = analyze_frame(&models, &rgba, width, height).unwrap();
    let mut tracker = ChallengeTracker::new("parity");
    let tracked: Vec<_> = (0..3)
        .map(|i| {
            tracker
                .track(&models, &rgba, width, height, f64::from(i) * 100.0)
                .unwrap()
        })
        .collect();
    json!({
        "checks": outcome.checks,
        "failures": outcome.failures.iter().map(|f| &f.code).collect::<Vec<_>>(),
        "images": outcome.images,
        "analyze_frame": quality,
        "tracked": tracked,
    })
}

/// Every difference between `a` and `b` beyond `tolerance`, by JSON path.
fn differences(path: &str, a: &Value, b: &Value, tolerance: f64, out: &mut Vec<String>) {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => {
            let (x, y) = (x.as_f64().unwrap(), y.as_f64().unwrap());
            if (x - y).abs() > tolerance {
                out.push(format!("{path}: {x} vs {y}"));
            }
        }
        (Value::Object(x), Value::Object(y)) => {
            let keys: std::collections::BTreeSet<&String> = x.keys().chain(y.keys()).collect();
            for key in keys {
                match (x.get(key), y.get(key)) {
                    (Some(a), Some(b)) => {
                        differences(&format!("{path}/{key}"), a, b, tolerance, out)
                    }
                    _ => out.push(format!("{path}/{key}: present on one side only")),
                }
            }
        }
        (Value::Array(x), Value::Array(y)) if x.len() == y.len() => {
            for (i, (a, b)) in x.iter().zip(y).enumerate() {
                differences(&format!("{path}/{i}"), a, b, tolerance, out);
            }
        }
        _ if a == b => {}
        _ => out.push(format!("{path}: {a} vs {b}")),
    }
}

#[test]
fn the_checks_match_the_native_reference() {
    let measured = measured();
    #[cfg(not(target_arch = "wasm32"))]
    if std::env::var_os("IDYNTRA_WRITE_PARITY").is_some() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/parity/expected.json");
        std::fs::write(
            path,
            serde_json::to_string_pretty(&measured).unwrap() + "\n",
        )
        .unwrap();
        return;
    }
    let expected: Value = serde_json::from_str(EXPECTED).unwrap();
    let mut out = Vec::new();
    differences("", &measured, &expected, 1e-4, &mut out);
    assert!(out.is_empty(), "{} differences: {out:#?}", out.len());
    // The reference holds a real answer: faces seen, a challenge judged.
    assert!(expected["checks"]["liveness"]["challenge"]["signals"]["frames"].as_f64() > Some(10.0));
}
