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

/// A channel value scaled to −1…1, for every byte: a lookup instead of a division per value, with
/// the same numbers (constant evaluation follows the same IEEE arithmetic as run time).
const SCALED: [f32; 256] = {
    let mut table = [0.0f32; 256];
    let mut value = 0;
    while value < 256 {
        table[value] = value as f32 / 127.5 - 1.0;
        value += 1;
    }
    table
};

/// The `[1, 3, 128, 128]` input (RGB scaled to −1…1, channels first) and the scale from frame
/// pixels to input pixels.
pub fn input_tensor(frame: &RgbImage) -> (Vec<f32>, f32) {
    let (fitted, scale) = canvas::fit(frame, INPUT);
    let plane = INPUT * INPUT;
    // Padding is black, as in the scaled frame: −1.
    let mut tensor = vec![-1.0f32; 3 * plane];
    let (red, rest) = tensor.split_at_mut(plane);
    let (green, blue) = rest.split_at_mut(plane);
    // Row by row from the buffer: every camera frame and its mirror image come through here.
    let row_bytes = fitted.width() as usize * 3;
    for (y, row) in fitted.as_raw().chunks_exact(row_bytes).enumerate() {
        let at = y * INPUT;
        let planes = (&mut red[at..], &mut green[at..], &mut blue[at..]);
        for (x, pixel) in row.chunks_exact(3).enumerate() {
            planes.0[x] = SCALED[usize::from(pixel[0])];
            planes.1[x] = SCALED[usize::from(pixel[1])];
            planes.2[x] = SCALED[usize::from(pixel[2])];
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
    fn the_input_holds_each_channel_scaled_to_minus_one_one_and_black_padding() {
        // A 200×100 frame fits as 128×64: the rows below it are padding.
        let frame = RgbImage::from_fn(200, 100, |x, y| {
            image::Rgb([(x % 256) as u8, (y * 2 % 256) as u8, ((x + y) % 256) as u8])
        });
        let (tensor, scale) = input_tensor(&frame);
        assert_eq!(scale, 0.64);
        let (fitted, _) = canvas::fit(&frame, INPUT);
        assert_eq!(fitted.dimensions(), (128, 64));
        let plane = INPUT * INPUT;
        for y in 0..INPUT {
            for x in 0..INPUT {
                for channel in 0..3 {
                    let expected = if y < 64 {
                        let value = fitted.get_pixel(x as u32, y as u32)[channel];
                        f32::from(value) / 127.5 - 1.0
                    } else {
                        -1.0
                    };
                    let got = tensor[channel * plane + y * INPUT + x];
                    assert_eq!(
                        got.to_bits(),
                        expected.to_bits(),
                        "({x}, {y}) channel {channel}"
                    );
                }
            }
        }
        assert_eq!(SCALED[0], -1.0);
        assert_eq!(SCALED[255], 1.0);
    }

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
