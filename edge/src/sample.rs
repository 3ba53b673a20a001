//! Captures made from still photos: the multipart body a browser would send for a session, for the
//! tests, the benchmark and the wasm parity check. A live answer is the frontal photo lit by each
//! screen colour and the turned photo for the turns (`idyntra_models::liveness_samples`).

use std::io::Cursor;

use idyntra_models::liveness::challenge_for;
use idyntra_models::liveness_samples::{self, Answer};
use image::{ImageFormat, RgbImage};

use crate::capture::form;

/// JPEG bytes of `image`.
pub fn jpeg(image: &RgbImage) -> Vec<u8> {
    let mut bytes = Cursor::new(Vec::new());
    // Encoding an in-memory RGB image to JPEG cannot fail.
    let _ = image.write_to(&mut bytes, ImageFormat::Jpeg);
    bytes.into_inner()
}

/// PNG bytes of `image`: lossless, so every platform decodes the same pixels.
pub fn png(image: &RgbImage) -> Vec<u8> {
    let mut bytes = Cursor::new(Vec::new());
    let _ = image.write_to(&mut bytes, ImageFormat::Png);
    bytes.into_inner()
}

/// `photo` scaled to `width` pixels wide, as a camera frame.
pub fn camera_frame(photo: &RgbImage, width: u32) -> RgbImage {
    let height = photo.height() * width / photo.width().max(1);
    image::imageops::resize(
        photo,
        width,
        height.max(1),
        image::imageops::FilterType::Triangle,
    )
}

/// Widest challenge frame after the first, as the browser SDK sends them: the challenge reads only
/// the face's colour and landmarks on them, and the detector sees 128×128 anyway. The first frame
/// is the selfie the face match uses and keeps its size.
pub const CHALLENGE_FRAME_WIDTH: u32 = 320;

/// The parts of a capture answering the challenge of `nonce`: the frames as `selfie` parts (the
/// first is the selfie, the rest at most [`CHALLENGE_FRAME_WIDTH`] wide), their `timeline`, and
/// `document` when given.
pub fn active_parts(
    nonce: &str,
    answer: Answer,
    frontal: &RgbImage,
    turned_right: &RgbImage,
    document: Option<&[u8]>,
) -> Vec<(&'static str, Vec<u8>)> {
    active_parts_encoded(
        nonce,
        answer,
        frontal,
        turned_right,
        document,
        CHALLENGE_FRAME_WIDTH,
        jpeg,
    )
}

/// [`active_parts`] with the frames after the selfie at most `challenge_width` wide and every
/// frame encoded by `encode`.
pub fn active_parts_encoded(
    nonce: &str,
    answer: Answer,
    frontal: &RgbImage,
    turned_right: &RgbImage,
    document: Option<&[u8]>,
    challenge_width: u32,
    encode: fn(&RgbImage) -> Vec<u8>,
) -> Vec<(&'static str, Vec<u8>)> {
    let challenge = challenge_for(nonce.as_bytes());
    let frames = liveness_samples::frames(&challenge, answer, frontal, turned_right);
    let timeline: Vec<_> = frames.iter().map(|(timing, _)| *timing).collect();
    let mut parts: Vec<(&'static str, Vec<u8>)> = frames
        .iter()
        .enumerate()
        .map(|(i, (_, frame))| {
            let bytes = if i > 0 && frame.width() > challenge_width {
                encode(&camera_frame(frame, challenge_width))
            } else {
                encode(frame)
            };
            ("selfie", bytes)
        })
        .collect();
    parts.push((
        "timeline",
        serde_json::to_vec(&timeline).unwrap_or_default(),
    ));
    if let Some(document) = document {
        parts.push(("document", document.to_vec()));
    }
    parts
}

/// The multipart body of `parts`, with its content type.
pub fn body(parts: &[(&str, Vec<u8>)]) -> (String, Vec<u8>) {
    (
        form::content_type(),
        form::body(parts.iter().map(|(name, bytes)| (*name, bytes.as_slice()))),
    )
}

#[cfg(test)]
mod tests {
    use image::Rgb;

    use super::*;

    #[test]
    fn the_selfie_keeps_its_size_and_the_challenge_frames_are_sent_small() {
        let frontal = RgbImage::from_pixel(480, 360, Rgb([150, 110, 90]));
        let turned = RgbImage::from_pixel(480, 360, Rgb([140, 100, 80]));
        let parts = active_parts("nonce", Answer::Live, &frontal, &turned, None);
        let widths: Vec<u32> = parts
            .iter()
            .filter(|(name, _)| *name == "selfie")
            .map(|(_, bytes)| image::load_from_memory(bytes).map_or(0, |image| image.width()))
            .collect();
        assert!(widths.len() > 2, "{widths:?}");
        assert_eq!(widths[0], 480);
        assert!(
            widths[1..].iter().all(|&w| w == CHALLENGE_FRAME_WIDTH),
            "{widths:?}"
        );
    }
}
