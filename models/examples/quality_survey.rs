//! Quality measurements of every photo in a folder, and of a blurred and a darkened copy of each:
//! `cargo run --release -p idyntra-models --example quality_survey [DIR]`
//! (default: `shared/fixtures/faces`). The quality thresholds were set from this table.

use idyntra_models::quality::{Capture, QualityThresholds, assess};
use idyntra_models::{DecodeLimits, FaceChain, decode};
use image::RgbImage;

/// The photo blurred with a Gaussian of σ = 1/25 of the face width.
fn blurred(photo: &RgbImage, face_width: f32) -> RgbImage {
    image::imageops::blur(photo, face_width / 25.0)
}

/// The photo at a quarter of its brightness.
fn darkened(photo: &RgbImage) -> RgbImage {
    let mut dark = photo.clone();
    dark.pixels_mut()
        .for_each(|p| p.0 = p.0.map(|c| (f32::from(c) * 0.25) as u8));
    dark
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = std::env::args().nth(1).unwrap_or_else(|| {
        concat!(env!("CARGO_MANIFEST_DIR"), "/../../shared/fixtures/faces").to_owned()
    });
    let chain = FaceChain::bundled(FaceChain::CANVAS)?;
    let limits = QualityThresholds::default();
    let mut names: Vec<_> = std::fs::read_dir(&dir)?
        .filter_map(|e| e.ok().map(|e| e.file_name().to_string_lossy().into_owned()))
        .filter(|n| n.ends_with(".jpg") || n.ends_with(".png"))
        .collect();
    names.sort();
    println!(
        "| photo | copy | faces | eyes px | yaw | pitch | roll | luma | contrast | sharpness | score | failures |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|");
    for name in names {
        let photo = decode(
            &std::fs::read(format!("{dir}/{name}"))?,
            &DecodeLimits::default(),
        )?
        .image;
        let faces = chain.locate(&photo)?.faces;
        let Some(width) = faces.first().map(|f| f.bbox.width()) else {
            println!("| {name} | original | 0 | | | | | | | | 0 | no_face |");
            continue;
        };
        for (copy, image) in [
            ("original", photo.clone()),
            ("blurred", blurred(&photo, width)),
            ("darkened", darkened(&photo)),
        ] {
            let report = assess(&image, &faces, Capture::Document, &limits);
            let m = report.measurements;
            println!(
                "| {name} | {copy} | {} | {:.0} | {:.0} | {:.0} | {:.0} | {:.0} | {:.1} | {:.3} | {} | {} |",
                m.faces,
                m.inter_eye_px,
                m.yaw_deg,
                m.pitch_deg,
                m.roll_deg,
                m.face_luma,
                m.face_contrast,
                m.sharpness,
                report.score,
                serde_json::to_string(&report.failures)?
            );
        }
    }
    Ok(())
}
