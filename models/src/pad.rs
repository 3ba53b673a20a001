//! Passive presentation-attack detection (PAD) on one photo: the Deep Tree Network port bundled as
//! `antispoofing.onnx` (model card in `models/onnx/README.md`).
//!
//! The network routes a 256×256 face crop down a binary tree of eight leaves; each leaf classifies
//! it, and a mask names the leaf the crop reached. The score is that leaf's classification, as its
//! authors' app reads it: below 0.2 reads as a live face. On photos of real people taken by other
//! cameras than the ones it was trained with, it flags many as attacks (`docs/ACCURACY.md`), so
//! deployments record the score before they let it decide anything.

use image::RgbImage;
use image::imageops::{self, FilterType};

use crate::face::Face;

/// Side of the square input, in pixels.
pub const INPUT: usize = 256;
/// Leaves of the tree: the length of both outputs.
pub const LEAVES: usize = 8;
/// The authors' threshold: a score below it reads as live.
pub const DTN_THRESHOLD: f32 = 0.2;
/// The `method` of the checks this model scores.
pub const METHOD: &str = "passive_dtn";

/// A square of a photo, in whole pixels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Square {
    pub x: u32,
    pub y: u32,
    pub side: u32,
}

/// The part of a `width`×`height` photo the model sees for `face`, as its authors' app cuts it:
/// the face box made square on its longer side around the same centre, then, where it crosses an
/// edge of the photo, shrunk from that corner until it fits. `None` for a box with no area inside
/// the photo.
pub fn face_square(face: &Face, width: u32, height: u32) -> Option<Square> {
    let bbox = &face.bbox;
    let side = bbox.width().max(bbox.height()).round();
    let centre_x = (bbox.x1 + bbox.x2) / 2.0;
    let centre_y = (bbox.y1 + bbox.y2) / 2.0;
    let mut x0 = (centre_x - side / 2.0).round();
    let mut y0 = (centre_y - side / 2.0).round();
    let mut x1 = x0 + side;
    let mut y1 = y0 + side;
    if x0 < 0.0 || y0 < 0.0 {
        let shift = (-x0).max(-y0);
        x0 += shift;
        y0 += shift;
    }
    let (w, h) = (width as f32, height as f32);
    if x1 > w || y1 > h {
        let shift = (x1 - w).max(y1 - h);
        x1 -= shift;
        y1 -= shift;
    }
    let side = (x1 - x0).min(y1 - y0);
    if !(side >= 1.0 && x0 >= 0.0 && y0 >= 0.0 && x0 + side <= w && y0 + side <= h) {
        return None;
    }
    // Whole pixels, inside the photo by construction.
    Some(Square {
        x: x0 as u32,
        y: y0 as u32,
        side: side as u32,
    })
}

/// The model's input for `face` in `photo`: `[1, 256, 256, 3]`, RGB scaled to 0–1, the square
/// resized with a triangle filter (the bilinear resize of the authors' app).
pub fn input_tensor(photo: &RgbImage, face: &Face) -> Option<Vec<f32>> {
    let square = face_square(face, photo.width(), photo.height())?;
    let crop = imageops::crop_imm(photo, square.x, square.y, square.side, square.side).to_image();
    let side = INPUT as u32;
    let resized = imageops::resize(&crop, side, side, FilterType::Triangle);
    Some(
        resized
            .into_raw()
            .into_iter()
            .map(|value| f32::from(value) / 255.0)
            .collect(),
    )
}

/// The score of a crop from the model's two outputs: the classification of the leaf the mask
/// names (Σ |class| · mask).
pub fn leaf_score(classes: &[f32], mask: &[f32]) -> f32 {
    classes
        .iter()
        .zip(mask)
        .map(|(class, reached)| class.abs() * reached)
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::face::{BoundingBox, Point};

    fn face(x1: f32, y1: f32, x2: f32, y2: f32) -> Face {
        Face {
            bbox: BoundingBox { x1, y1, x2, y2 },
            score: 0.9,
            landmarks: [Point { x: 0.0, y: 0.0 }; 5],
        }
    }

    #[test]
    fn a_tall_face_gets_a_square_around_its_centre() {
        let square = face_square(&face(100.0, 50.0, 160.0, 150.0), 640, 480).unwrap();
        assert_eq!(
            square,
            Square {
                x: 80,
                y: 50,
                side: 100
            }
        );
    }

    #[test]
    fn a_square_crossing_an_edge_shrinks_from_that_corner() {
        // Centred at (20, 100) with side 80: 20 px over the left edge.
        let square = face_square(&face(0.0, 60.0, 40.0, 140.0), 640, 480).unwrap();
        assert_eq!(
            square,
            Square {
                x: 0,
                y: 80,
                side: 60
            }
        );
        // Centred at (630, 445) with side 90: 35 px over the right edge, 10 over the bottom.
        let square = face_square(&face(600.0, 400.0, 660.0, 490.0), 640, 480).unwrap();
        assert_eq!(
            square,
            Square {
                x: 585,
                y: 400,
                side: 55
            }
        );
    }

    #[test]
    fn a_face_outside_the_photo_has_no_square() {
        assert_eq!(face_square(&face(700.0, 10.0, 760.0, 70.0), 640, 480), None);
    }

    #[test]
    fn the_input_is_rgb_from_zero_to_one_in_pixel_order() {
        let photo = RgbImage::from_fn(64, 64, |x, _| {
            image::Rgb([255, 0, if x < 32 { 0 } else { 255 }])
        });
        let input = input_tensor(&photo, &face(0.0, 0.0, 64.0, 64.0)).unwrap();
        assert_eq!(input.len(), INPUT * INPUT * 3);
        assert_eq!(&input[..3], &[1.0, 0.0, 0.0]);
        let last = input.len() - 3;
        assert_eq!(&input[last..], &[1.0, 0.0, 1.0]);
    }

    #[test]
    fn the_score_is_the_reached_leafs_classification() {
        let classes = [0.9, -0.05, 0.3, 0.2, 0.1, 0.0, 0.0, 0.7];
        let mask = [0.0, 1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0];
        assert!((leaf_score(&classes, &mask) - 0.05).abs() < 1e-6);
    }
}
