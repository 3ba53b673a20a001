//! Per-stage latency of the face chain on tract, natively:
//! `cargo run --release -p idyntra-models --example stage_timings [PHOTO] [RUNS]`
//! (default: the fixture `shared/fixtures/faces/img1.jpg`, 20 runs). Prints the median of each stage,
//! then of each network alone on an input made ready beforehand (beside `models/tools/ort_timings.py`).

use std::time::{Duration, Instant};

use idyntra_models::align::{ARCFACE_112, align};
use idyntra_models::manipulation::BlendModel;
use idyntra_models::tract_runner::{BlazeFaceDetector, ModelError};
use idyntra_models::{
    AntiSpoofingModel, CenterFaceDetector, DecodeLimits, FrameQuality, MobileFaceNetEmbedder,
    blazeface, bundled, centerface, decode, embedding, pad,
};

fn median(mut samples: Vec<Duration>) -> f64 {
    samples.sort();
    samples[samples.len() / 2].as_secs_f64() * 1000.0
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = concat!(env!("CARGO_MANIFEST_DIR"));
    let photo_path = std::env::args()
        .nth(1)
        .unwrap_or_else(|| format!("{root}/../../shared/fixtures/faces/img1.jpg"));
    let runs: usize = std::env::args()
        .nth(2)
        .map(|n| n.parse())
        .transpose()?
        .unwrap_or(20);
    let bytes = std::fs::read(&photo_path)?;
    let started = Instant::now();
    let detector =
        CenterFaceDetector::load(&std::fs::read(format!("{root}/onnx/centerface.onnx"))?, 320)?;
    let embedder =
        MobileFaceNetEmbedder::load(&std::fs::read(format!("{root}/onnx/mobilefacenet.onnx"))?)?;
    println!(
        "model load and optimisation: {:.1} ms",
        started.elapsed().as_secs_f64() * 1000.0
    );
    let started = Instant::now();
    let anti_spoofing = AntiSpoofingModel::load(bundled::ANTISPOOFING.onnx)?;
    println!(
        "passive PAD model load and optimisation: {:.1} ms",
        started.elapsed().as_secs_f64() * 1000.0
    );
    let manipulation = BlendModel::bundled()?;

    let frame_quality = FrameQuality::bundled()?;
    let (mut decoding, mut preparing, mut detecting, mut aligning, mut embedding) =
        (vec![], vec![], vec![], vec![], vec![]);
    let (mut assessing, mut pad, mut scoring) = (vec![], vec![], vec![]);
    for _ in 0..runs {
        let t = Instant::now();
        let photo = decode(&bytes, &DecodeLimits::default())?.image;
        decoding.push(t.elapsed());
        let t = Instant::now();
        idyntra_models::centerface::input_tensor(&photo, 320);
        preparing.push(t.elapsed());
        let t = Instant::now();
        let faces = detector.detect(&photo, 0.5)?;
        detecting.push(t.elapsed());
        let face = faces.first().ok_or("no face found")?;
        let t = Instant::now();
        let crop = align(&photo, &face.landmarks, &ARCFACE_112, 112).ok_or("bad landmarks")?;
        aligning.push(t.elapsed());
        let t = Instant::now();
        embedder.embed(&[&crop, &crop])?;
        embedding.push(t.elapsed());
        let t = Instant::now();
        anti_spoofing.score(&photo, face)?;
        pad.push(t.elapsed());
        let t = Instant::now();
        manipulation
            .score_face(&photo, face)
            .ok_or("bad landmarks")?;
        scoring.push(t.elapsed());
        // A camera frame as the browser sends it: the longer side 640 pixels (img1: 474×640).
        let scale = 640.0 / photo.width().max(photo.height()) as f32;
        let (w, h) = (photo.width() as f32 * scale, photo.height() as f32 * scale);
        let frame = image::imageops::resize(
            &photo,
            w as u32,
            h as u32,
            image::imageops::FilterType::Triangle,
        );
        let t = Instant::now();
        frame_quality.assess(&frame)?;
        assessing.push(t.elapsed());
    }
    println!("photo: {photo_path} ({} bytes), runs: {runs}", bytes.len());
    println!("| stage | median ms |");
    println!("|---|---|");
    println!("| decode (JPEG) | {:.2} |", median(decoding));
    println!(
        "| detector input alone (resize to the 320×320 canvas) | {:.2} |",
        median(preparing)
    );
    println!(
        "| detect: input + CenterFace + decoding | {:.2} |",
        median(detecting)
    );
    println!("| align (112×112) | {:.2} |", median(aligning));
    println!(
        "| embed (MobileFaceNet, two crops, a run each) | {:.2} |",
        median(embedding)
    );
    println!(
        "| passive PAD (crop, 256×256 network, leaves) | {:.2} |",
        median(pad)
    );
    println!(
        "| manipulation score (128×128 crop, features, model) | {:.2} |",
        median(scoring)
    );
    println!(
        "| quality of a 640×480 frame (BlazeFace + metrics) | {:.2} |",
        median(assessing)
    );
    networks_alone(
        &photo_path,
        &bytes,
        runs,
        &detector,
        &embedder,
        &anti_spoofing,
    )
}

/// Each network alone on an input made ready beforehand: the rows to set beside onnxruntime's
/// (`models/tools/ort_timings.py`), which also times the network alone.
fn networks_alone(
    photo_path: &str,
    bytes: &[u8],
    runs: usize,
    detector: &CenterFaceDetector,
    embedder: &MobileFaceNetEmbedder,
    anti_spoofing: &AntiSpoofingModel,
) -> Result<(), Box<dyn std::error::Error>> {
    let photo = decode(bytes, &DecodeLimits::default())?.image;
    let faces = detector.detect(&photo, 0.5)?;
    let face = faces.first().ok_or("no face found")?;
    let crop = align(&photo, &face.landmarks, &ARCFACE_112, 112).ok_or("bad landmarks")?;
    let blazeface = BlazeFaceDetector::load(bundled::BLAZEFACE_SHORT_RANGE.onnx)?;
    let (canvas, _) = centerface::input_tensor(&photo, 320);
    let crops = embedding::input_tensor(&[&crop, &crop]);
    let (frame, _) = blazeface::input_tensor(&photo);
    let face_input = pad::input_tensor(&photo, face).ok_or("the face is outside the photo")?;
    let time = |run: &dyn Fn() -> Result<(), ModelError>| {
        run()?; // warm-up, as onnxruntime's timings have
        let mut samples = Vec::with_capacity(runs);
        for _ in 0..runs {
            let t = Instant::now();
            run()?;
            samples.push(t.elapsed());
        }
        Ok::<_, Box<dyn std::error::Error>>(median(samples))
    };
    let rows = [
        (
            "CenterFace 320×320",
            time(&|| detector.raw_outputs(&canvas).map(drop))?,
        ),
        (
            "MobileFaceNet, two crops (a run each)",
            time(&|| embedder.raw_outputs(&crops).map(drop))?,
        ),
        (
            "BlazeFace 128×128",
            time(&|| blazeface.raw_outputs(&frame).map(drop))?,
        ),
        (
            "passive PAD 256×256",
            time(&|| anti_spoofing.raw_outputs(&face_input).map(drop))?,
        ),
    ];
    println!();
    println!("networks alone, input ready ({photo_path}), runs: {runs}");
    println!("| network on tract | median ms |");
    println!("|---|---|");
    for (network, ms) in rows {
        println!("| {network} | {ms:.2} |");
    }
    Ok(())
}
