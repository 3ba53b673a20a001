//! Per-model latency of tract in wasm under Node, printed (never asserted):
//! `CARGO_TARGET_WASM32_UNKNOWN_UNKNOWN_RUNNER=wasm-bindgen-test-runner cargo test --release
//! --target wasm32-unknown-unknown -p idyntra-models --test wasm_timings -- --nocapture`.
//! The native counterpart is `examples/stage_timings.rs`; the results are in `docs/PERFORMANCE.md`.
#![cfg(target_arch = "wasm32")]
#![allow(clippy::unwrap_used)] // Test code: a failed unwrap is a failed test.

use idyntra_models::bundled::{ANTISPOOFING, BLAZEFACE_SHORT_RANGE, CENTERFACE, MOBILEFACENET};
use idyntra_models::manipulation::BlendModel;
use idyntra_models::{
    AntiSpoofingModel, BlazeFaceDetector, CenterFaceDetector, MobileFaceNetEmbedder,
};
use idyntra_models::{BoundingBox, Face, Point};
use wasm_bindgen_test::{console_log, wasm_bindgen_test};

const RUNS: usize = 10;

/// Median milliseconds of `RUNS` calls, after one warm-up.
fn median_ms(mut run: impl FnMut()) -> f64 {
    run();
    let mut samples: Vec<f64> = (0..RUNS)
        .map(|_| {
            let started = js_sys::Date::now();
            run();
            js_sys::Date::now() - started
        })
        .collect();
    samples.sort_by(f64::total_cmp);
    samples[RUNS / 2]
}

#[wasm_bindgen_test]
fn model_latency_in_wasm() {
    let centerface = CenterFaceDetector::load(CENTERFACE.onnx, 320).unwrap();
    let input = vec![0.5f32; 3 * 320 * 320];
    let ms = median_ms(|| {
        centerface.raw_outputs(&input).unwrap();
    });
    console_log!("wasm: CenterFace 320x320: {ms:.1} ms");

    let blazeface = BlazeFaceDetector::load(BLAZEFACE_SHORT_RANGE.onnx).unwrap();
    let input = vec![0.1f32; 3 * 128 * 128];
    let ms = median_ms(|| {
        blazeface.raw_outputs(&input).unwrap();
    });
    console_log!("wasm: BlazeFace 128x128: {ms:.1} ms");

    let embedder = MobileFaceNetEmbedder::load(MOBILEFACENET.onnx).unwrap();
    let input = vec![0.1f32; 2 * 3 * 112 * 112];
    let ms = median_ms(|| {
        embedder.raw_outputs(&input).unwrap();
    });
    console_log!("wasm: MobileFaceNet, two crops: {ms:.1} ms");

    let anti_spoofing = AntiSpoofingModel::load(ANTISPOOFING.onnx).unwrap();
    let input = vec![0.1f32; 3 * 256 * 256];
    let ms = median_ms(|| {
        anti_spoofing.raw_outputs(&input).unwrap();
    });
    console_log!("wasm: passive PAD network 256x256: {ms:.1} ms");

    // The manipulation score is arithmetic on a 128x128 crop: a textured photo with a face
    // placed by hand is enough to time it.
    let photo = image::RgbImage::from_fn(640, 480, |x, y| {
        image::Rgb([
            (x * 7 % 251) as u8,
            (y * 5 % 241) as u8,
            ((x + y) % 239) as u8,
        ])
    });
    let point = |x, y| Point { x, y };
    let face = Face {
        bbox: BoundingBox {
            x1: 240.0,
            y1: 140.0,
            x2: 400.0,
            y2: 340.0,
        },
        score: 1.0,
        landmarks: [
            point(280.0, 200.0),
            point(360.0, 200.0),
            point(320.0, 245.0),
            point(290.0, 290.0),
            point(350.0, 290.0),
        ],
    };
    let model = BlendModel::bundled().unwrap();
    let ms = median_ms(|| {
        model.score_face(&photo, &face).unwrap();
    });
    console_log!("wasm: manipulation score of one face: {ms:.1} ms");
}
