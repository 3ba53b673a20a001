//! Writes the model inputs of the engine-parity checks to `models/reference/` as PNG, made by
//! this crate's own pre-processing from registry photos (`models/tools/fetch-fixtures.sh`):
//! `cargo run --release -p idyntra-models --example export_reference_inputs`.
//! Then `python3 models/tools/reference_outputs.py` runs onnxruntime on them. Each PNG holds
//! exactly the pixels the input tensor is computed from (see `models/reference/README.md`).

use idyntra_models::align::{ARCFACE_112, align};
use idyntra_models::canvas::square;
use idyntra_models::{DecodeLimits, FaceChain, FrameQuality, decode, pad};
use image::RgbImage;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = env!("CARGO_MANIFEST_DIR");
    let out = format!("{root}/reference");
    let chain = FaceChain::bundled(FaceChain::CANVAS)?;
    let frames = FrameQuality::bundled()?;
    let read = |name: &str| -> Result<RgbImage, Box<dyn std::error::Error>> {
        let bytes = std::fs::read(format!("{root}/fixtures/{name}"))
            .map_err(|e| format!("{name}: {e} (run models/tools/fetch-fixtures.sh)"))?;
        Ok(decode(&bytes, &DecodeLimits::default())?.image)
    };
    for name in ["obama", "biden"] {
        let photo = read(&format!("{name}.jpg"))?;
        square(&photo, 320)
            .0
            .save(format!("{out}/centerface_{name}.png"))?;
        square(&photo, 128)
            .0
            .save(format!("{out}/blazeface_{name}.png"))?;
        let face = chain
            .locate(&photo)?
            .faces
            .into_iter()
            .next()
            .ok_or("no face")?;
        align(&photo, &face.landmarks, &ARCFACE_112, 112)
            .ok_or("bad landmarks")?
            .save(format!("{out}/mobilefacenet_{name}.png"))?;
        // The anti-spoofing input as the edge makes it: BlazeFace's face, squared, 256×256.
        let face = frames.faces(&photo)?.into_iter().next().ok_or("no face")?;
        let input = pad::input_tensor(&photo, &face).ok_or("face outside the photo")?;
        let side = pad::INPUT as u32;
        let pixels = input.iter().map(|v| (v * 255.0).round() as u8).collect();
        RgbImage::from_raw(side, side, pixels)
            .ok_or("input size")?
            .save(format!("{out}/antispoofing_{name}.png"))?;
    }
    println!("reference inputs written to {out}");
    Ok(())
}
