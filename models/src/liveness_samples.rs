//! Answers to an active challenge made from real photos, for evaluating and testing the active
//! check (`idyntra eval liveness`, `examples/liveness_set.rs`): a live answer, and the attacks the
//! check is meant to stop. They show the verifier's logic on real faces, not field performance: a
//! live answer here is a frontal photo lit by each screen colour and a photo of the same person
//! with the head turned, not a video of a person.

use idyntra_types::{ChallengeStep, FrameTiming, LivenessChallenge, TurnDirection};
use image::{Rgb, RgbImage};

/// Frames per step, and the time between frames.
const FRAMES_PER_STEP: u32 = 3;
const FRAME_INTERVAL_MS: u32 = 120;
/// Share of each channel a face reflects of a screen at arm's length (diffuse).
const REFLECTION: f32 = 0.06;

/// How the challenge is answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer {
    /// The frontal photo lit by each screen colour; the turned photo (or its mirror) for turns.
    Live,
    /// The same picture whatever the screen shows (a replayed still or a frozen stream).
    Still,
    /// A print held before the screen: it reflects the colours like skin, and is tilted 40° for
    /// the turns.
    TiltedPrint,
}

/// `frame` lit by a screen of `colour`: each channel gains [`REFLECTION`] of itself where the
/// screen has that colour, plus a little deterministic sensor noise.
pub fn lit(frame: &RgbImage, colour: [u8; 3], seed: u32) -> RgbImage {
    let mut out = frame.clone();
    for (i, pixel) in out.pixels_mut().enumerate() {
        let noise = ((i as u32).wrapping_mul(2_654_435_761).wrapping_add(seed) >> 29) as f32 - 3.5;
        *pixel = Rgb([0, 1, 2].map(|c| {
            let gain = 1.0 + REFLECTION * f32::from(colour[c]) / 255.0;
            (f32::from(pixel[c]) * gain + noise).clamp(0.0, 255.0) as u8
        }));
    }
    out
}

/// A flat print of `photo` rotated by `degrees` about its vertical axis, seen by a camera whose
/// focal length is the photo's width.
pub fn tilted_print(photo: &RgbImage, degrees: f32) -> RgbImage {
    let (sin, cos) = degrees.to_radians().sin_cos();
    let f = photo.width() as f32;
    let (cx, cy) = (photo.width() as f32 / 2.0, photo.height() as f32 / 2.0);
    RgbImage::from_fn(photo.width(), photo.height(), |x, y| {
        let (u, v) = (x as f32 - cx, y as f32 - cy);
        // Invert the projection of the rotated plane.
        let across = u * f / (f * cos - u * sin);
        let up = v * (f + across * sin) / f;
        let (sx, sy) = (across + cx, up + cy);
        if sx >= 0.0 && sy >= 0.0 && sx < photo.width() as f32 && sy < photo.height() as f32 {
            *photo.get_pixel(sx as u32, sy as u32)
        } else {
            Rgb([40, 40, 40])
        }
    })
}

/// The frames of an `answer` to `challenge`, with their timings. `frontal` looks at the camera;
/// `turned_right` is the same person with the head turned to their right (mirrored for left).
pub fn frames(
    challenge: &LivenessChallenge,
    answer: Answer,
    frontal: &RgbImage,
    turned_right: &RgbImage,
) -> Vec<(FrameTiming, RgbImage)> {
    let mut frames = Vec::new();
    let mut at_ms = 0;
    for (step, kind) in challenge.steps.iter().enumerate() {
        for k in 0..FRAMES_PER_STEP {
            at_ms += FRAME_INTERVAL_MS;
            let seed = k + step as u32 * FRAMES_PER_STEP;
            let frame = match (answer, kind) {
                (Answer::Still, _) => frontal.clone(),
                (
                    _,
                    ChallengeStep::Neutral { colour, .. } | ChallengeStep::Flash { colour, .. },
                ) => lit(frontal, *colour, seed),
                (Answer::Live, ChallengeStep::Turn { direction, .. }) => match direction {
                    TurnDirection::Right => turned_right.clone(),
                    TurnDirection::Left => image::imageops::flip_horizontal(turned_right),
                },
                (Answer::TiltedPrint, ChallengeStep::Turn { direction, .. }) => {
                    let degrees = if *direction == TurnDirection::Left {
                        40.0
                    } else {
                        -40.0
                    };
                    tilted_print(frontal, degrees)
                }
            };
            frames.push((FrameTiming { at_ms, step }, frame));
        }
    }
    frames
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::liveness::challenge_for;

    #[test]
    fn every_step_gets_its_frames_in_order() {
        let challenge = challenge_for(b"n");
        let photo = RgbImage::from_pixel(40, 40, Rgb([100, 100, 100]));
        let frames = frames(&challenge, Answer::Live, &photo, &photo);
        assert_eq!(
            frames.len(),
            challenge.steps.len() * FRAMES_PER_STEP as usize
        );
        assert!(frames.windows(2).all(|w| w[0].0.at_ms < w[1].0.at_ms));
        // A red flash reddens a grey face.
        let red = lit(&photo, [255, 0, 0], 0);
        let [r, g, _] = red.get_pixel(20, 20).0;
        assert!(r > g + 3, "{r} {g}");
    }

    #[test]
    fn a_tilted_print_is_narrower() {
        let photo = RgbImage::from_pixel(100, 100, Rgb([200, 200, 200]));
        let tilted = tilted_print(&photo, 40.0);
        // The near edge grows, the far edge shrinks: some border shows on one side.
        assert_eq!(tilted.get_pixel(99, 50), &Rgb([40, 40, 40]));
        assert_eq!(tilted.get_pixel(50, 50), &Rgb([200, 200, 200]));
    }
}
