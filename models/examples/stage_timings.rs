//! Per-stage latency of the face chain on tract, natively:
//! `cargo run --release -p idyntra-models --example stage_timings [PHOTO] [RUNS]`
//! (default: the fixture `shared/fixtures/faces/img1.jpg`, 20 runs). Prints the median of each stage.

use std::time::{Duration, Instant};

use idyntra_models::align::{ARCFACE_112, align};
use idyntra_models::manipulation::BlendModel;
use idyntra_models::{
    AntiSpoofingModel, CenterFaceDetector, DecodeLimits, FrameQuality, MobileFaceNetEmbedder,
    bundled, decode,
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
    Ok(())
}
