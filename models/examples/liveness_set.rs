//! Writes answers to active challenges for `idyntra eval liveness`, made from the registry photos
//! (`models/tools/fetch-fixtures.sh`) with `idyntra_models::liveness_samples`:
//! `cargo run --release -p idyntra-models --example liveness_set -- OUT [COUNT]`.
//! For each of COUNT nonces (default 3): a live answer, a replayed still, a tilted print, and the
//! live answer replayed against the next nonce's challenge.

use std::path::Path;

use idyntra_models::liveness::challenge_for;
use idyntra_models::liveness_samples::{self, Answer};
use idyntra_models::{DecodeLimits, decode};
use idyntra_types::FrameTiming;
use image::RgbImage;
use image::codecs::jpeg::JpegEncoder;
use image::imageops::FilterType;
use serde_json::json;

fn photo(name: &str) -> Result<RgbImage, Box<dyn std::error::Error>> {
    let path = format!("{}/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
    let bytes = std::fs::read(&path)
        .map_err(|e| format!("{path}: {e} (run models/tools/fetch-fixtures.sh)"))?;
    let original = decode(&bytes, &DecodeLimits::default())?.image;
    let height = original.height() * 480 / original.width();
    Ok(image::imageops::resize(
        &original,
        480,
        height,
        FilterType::Triangle,
    ))
}

fn write(
    dir: &Path,
    nonce: &str,
    label: &str,
    attack: Option<&str>,
    frames: &[(FrameTiming, RgbImage)],
) -> Result<(), Box<dyn std::error::Error>> {
    std::fs::create_dir_all(dir)?;
    let mut entries = Vec::new();
    for (i, (timing, frame)) in frames.iter().enumerate() {
        let file = format!("{i:03}.jpg");
        let mut jpeg = Vec::new();
        JpegEncoder::new_with_quality(&mut jpeg, 92).encode_image(frame)?;
        std::fs::write(dir.join(&file), jpeg)?;
        entries.push(json!({"file": file, "at_ms": timing.at_ms, "step": timing.step}));
    }
    let mut response = json!({"nonce": nonce, "label": label, "frames": entries});
    if let Some(attack) = attack {
        response["attack"] = json!(attack);
    }
    std::fs::write(
        dir.join("response.json"),
        serde_json::to_vec_pretty(&response)?,
    )?;
    Ok(())
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let out = std::env::args()
        .nth(1)
        .ok_or("usage: liveness_set OUT [COUNT]")?;
    let count: usize = std::env::args()
        .nth(2)
        .map(|n| n.parse())
        .transpose()?
        .unwrap_or(3);
    let (frontal, turned) = (photo("obama.jpg")?, photo("obama2.jpg")?);
    let out = Path::new(&out);
    for i in 0..count {
        let nonce = format!("evaluation nonce {i}");
        let next = format!("evaluation nonce {}", i + 1);
        let challenge = challenge_for(nonce.as_bytes());
        let live = liveness_samples::frames(&challenge, Answer::Live, &frontal, &turned);
        write(&out.join(format!("live-{i}")), &nonce, "live", None, &live)?;
        let still = liveness_samples::frames(&challenge, Answer::Still, &frontal, &turned);
        write(
            &out.join(format!("still-{i}")),
            &nonce,
            "attack",
            Some("still"),
            &still,
        )?;
        let print = liveness_samples::frames(&challenge, Answer::TiltedPrint, &frontal, &turned);
        write(
            &out.join(format!("print-{i}")),
            &nonce,
            "attack",
            Some("print"),
            &print,
        )?;
        write(
            &out.join(format!("replay-{i}")),
            &next,
            "attack",
            Some("replay"),
            &live,
        )?;
    }
    println!("{} answers written to {}", count * 4, out.display());
    Ok(())
}
