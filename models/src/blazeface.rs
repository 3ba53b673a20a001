//! BlazeFace short range (`models/onnx/blazeface_short_range.onnx`): the engine-independent half —
//! the 128×128 input and the decoding of its 896 anchor predictions. It is the fast detector for
//! live frames (selfie range, faces filling a good part of the frame); CenterFace finds faces at
//! any range for the decision itself.
//!
//! The frame is scaled to fit the square input and placed in its top-left corner. Each anchor
//! predicts a box centre offset, a box size and six key points (eyes, nose tip, mouth centre, ear
//! tragions), in input pixels relative to the anchor centre, plus a logit.

use image::RgbImage;

use crate::canvas;

use crate::face::{BoundingBox, Face, Point, non_maximum_suppression};

/// Side of the input.
pub const INPUT: usize = 128;
/// Anchors, and values per anchor.
pub const ANCHORS: usize = 896;
pub const VALUES: usize = 16;
/// Faces overlapping more than this are one face.
const NMS_IOU: f32 = 0.3;

/// The `[1, 3, 128, 128]` input (RGB scaled to −1…1, channels first) and the scale from frame
/// pixels to input pixels.
pub fn input_tensor(frame: &RgbImage) -> (Vec<f32>, f32) {
    let (fitted, scale) = canvas::fit(frame, INPUT);
    let plane = INPUT * INPUT;
    // Padding is black, as in the scaled frame: −1.
    let mut tensor = vec![-1.0f32; 3 * plane];
    for (x, y, pixel) in fitted.enumerate_pixels() {
        let at = y as usize * INPUT + x as usize;
        for channel in 0..3 {
            tensor[channel * plane + at] = f32::from(pixel[channel]) / 127.5 - 1.0;
        }
    }
    (tensor, scale)
}

/// Anchor centres in input pixels, in the model's order: a 16×16 grid with 2 anchors per cell
/// (stride 8), then an 8×8 grid with 6 (stride 16) — MediaPipe's SSD anchors for this model.
pub fn anchors() -> Vec<Point> {
    let mut centres = Vec::with_capacity(ANCHORS);
    for (stride, per_cell) in [(8usize, 2usize), (16, 6)] {
        let side = INPUT / stride;
        for y in 0..side {
            for x in 0..side {
                for _ in 0..per_cell {
                    centres.push(Point {
                        x: (x as f32 + 0.5) * stride as f32,
                        y: (y as f32 + 0.5) * stride as f32,
                    });
                }
            }
        }
    }
    centres
}

/// Faces scoring above `threshold`, in frame pixels, best first. `regressors` is `[896 × 16]`,
/// `logits` `[896]`. The five landmarks are the image-left eye, the image-right eye, the nose tip
/// and the mouth centre twice (this model has no mouth corners): good for pose and framing, not
/// for alignment.
pub fn decode_faces(
    regressors: &[f32],
    logits: &[f32],
    anchors: &[Point],
    scale: f32,
    threshold: f32,
) -> Vec<Face> {
    let to_frame = |anchor: Point, dx: f32, dy: f32| Point {
        x: (anchor.x + dx) / scale,
        y: (anchor.y + dy) / scale,
    };
    let mut faces = Vec::new();
    for (i, (&logit, &anchor)) in logits.iter().zip(anchors).enumerate() {
        // ±80 keeps the exponential finite in f32: past about 88 it overflows, and libm's
        // overflow path is slow, while most anchors are background with very negative logits.
        // Beyond ±80 the score is 1 to f32 precision, or far below any threshold.
        let score = 1.0 / (1.0 + (-logit.clamp(-80.0, 80.0)).exp());
        if score < threshold {
            continue;
        }
        let r = &regressors[i * VALUES..(i + 1) * VALUES];
        let centre = to_frame(anchor, r[0], r[1]);
        let (half_w, half_h) = (r[2] / scale / 2.0, r[3] / scale / 2.0);
        let point = |k: usize| to_frame(anchor, r[4 + 2 * k], r[5 + 2 * k]);
        // Key points 0 and 1 are the subject's right and left eye: image-left, image-right.
        let (left_eye, right_eye, nose, mouth) = (point(0), point(1), point(2), point(3));
        faces.push(Face {
            bbox: BoundingBox {
                x1: centre.x - half_w,
                y1: centre.y - half_h,
                x2: centre.x + half_w,
                y2: centre.y + half_h,
            },
            score,
            landmarks: [left_eye, right_eye, nose, mouth, mouth],
        });
    }
    non_maximum_suppression(faces, NMS_IOU)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn there_are_896_anchors_inside_the_input() {
        let anchors = anchors();
        assert_eq!(anchors.len(), ANCHORS);
        assert_eq!(anchors[0], Point { x: 4.0, y: 4.0 });
        assert_eq!(anchors[512], Point { x: 8.0, y: 8.0 });
        assert!(anchors.iter().all(|a| a.x < 128.0 && a.y < 128.0));
    }

    #[test]
    fn one_confident_anchor_becomes_one_face_in_frame_pixels() {
        let anchors = anchors();
        let mut regressors = vec![0.0; ANCHORS * VALUES];
        let mut logits = vec![-10.0; ANCHORS];
        // Anchor 0 at (4, 4): a 20×20 box centred 10 px right and down, eyes beside the centre.
        logits[0] = 3.0;
        regressors[..12].copy_from_slice(&[
            10.0, 10.0, 20.0, 20.0, 6.0, 10.0, 14.0, 10.0, 10.0, 14.0, 10.0, 18.0,
        ]);
        // Frame pixels are twice the input's.
        let faces = decode_faces(&regressors, &logits, &anchors, 0.5, 0.5);
        assert_eq!(faces.len(), 1);
        let face = &faces[0];
        assert_eq!(
            face.bbox,
            BoundingBox {
                x1: 8.0,
                y1: 8.0,
                x2: 48.0,
                y2: 48.0
            }
        );
        assert_eq!(face.landmarks[0], Point { x: 20.0, y: 28.0 });
        assert_eq!(face.landmarks[3], face.landmarks[4]);
        assert!((face.score - 0.9526).abs() < 1e-3);
    }
}
