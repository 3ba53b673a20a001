//! CenterFace (`models/onnx/centerface.onnx`): the engine-independent half — the input tensor and
//! the decoding of its four output maps into faces with five landmarks.
//!
//! The photo is scaled to fit a square canvas (its side a multiple of 32) and placed in the top-left
//! corner; the rest stays black. One canvas size means one optimised plan per engine, whatever the
//! photos' shapes. The network predicts, on a grid four times coarser than the canvas, a face-centre
//! probability, the log of the box size, a sub-cell offset and the landmarks relative to the box.

use image::RgbImage;

use crate::canvas;

use crate::face::{BoundingBox, Face, Point, non_maximum_suppression};

/// The output grid is this many canvas pixels per cell.
const STRIDE: usize = 4;
/// Faces overlapping more than this are one face.
const NMS_IOU: f32 = 0.3;

/// How the photo was placed on the canvas: canvas pixels = photo pixels × `scale`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Placement {
    pub canvas: usize,
    pub scale: f32,
}

/// The `[1, 3, canvas, canvas]` input (RGB, 0–255, channels first) and how the photo was placed.
pub fn input_tensor(photo: &RgbImage, canvas: usize) -> (Vec<f32>, Placement) {
    let (fitted, scale) = canvas::fit(photo, canvas);
    let plane = canvas * canvas;
    let mut tensor = vec![0.0f32; 3 * plane];
    for (x, y, pixel) in fitted.enumerate_pixels() {
        let at = y as usize * canvas + x as usize;
        for channel in 0..3 {
            tensor[channel * plane + at] = f32::from(pixel[channel]);
        }
    }
    (tensor, Placement { canvas, scale })
}

/// The four output maps for one image, each channel-major over a `side × side` grid.
#[derive(Debug, Clone, Copy)]
pub struct OutputMaps<'a> {
    /// Face-centre probability, 1 channel.
    pub heatmap: &'a [f32],
    /// Log of box height and width (in grid cells), 2 channels.
    pub scale: &'a [f32],
    /// Sub-cell offset of the centre (y, x), 2 channels.
    pub offset: &'a [f32],
    /// Five landmarks as (y, x) pairs relative to the box, 10 channels.
    pub landmarks: &'a [f32],
}

/// Faces whose centre probability exceeds `threshold`, in photo pixels, best first.
pub fn decode_faces(maps: OutputMaps<'_>, placement: Placement, threshold: f32) -> Vec<Face> {
    let side = placement.canvas / STRIDE;
    let cells = side * side;
    let limit = placement.canvas as f32;
    let mut faces = Vec::new();
    for (cell, &score) in maps.heatmap.iter().enumerate().take(cells) {
        if score <= threshold {
            continue;
        }
        let (row, column) = ((cell / side) as f32, (cell % side) as f32);
        let box_height = maps.scale[cell].exp() * STRIDE as f32;
        let box_width = maps.scale[cells + cell].exp() * STRIDE as f32;
        let centre_y = (row + maps.offset[cell] + 0.5) * STRIDE as f32;
        let centre_x = (column + maps.offset[cells + cell] + 0.5) * STRIDE as f32;
        let x1 = (centre_x - box_width / 2.0).clamp(0.0, limit);
        let y1 = (centre_y - box_height / 2.0).clamp(0.0, limit);
        let x2 = (x1 + box_width).min(limit);
        let y2 = (y1 + box_height).min(limit);
        let landmarks = std::array::from_fn(|point| {
            let y = maps.landmarks[(2 * point) * cells + cell] * box_height + y1;
            let x = maps.landmarks[(2 * point + 1) * cells + cell] * box_width + x1;
            Point {
                x: x / placement.scale,
                y: y / placement.scale,
            }
        });
        faces.push(Face {
            bbox: BoundingBox {
                x1: x1 / placement.scale,
                y1: y1 / placement.scale,
                x2: x2 / placement.scale,
                y2: y2 / placement.scale,
            },
            score,
            landmarks,
        });
    }
    non_maximum_suppression(faces, NMS_IOU)
}

#[cfg(test)]
mod tests {
    use image::Rgb;

    use super::*;

    #[test]
    fn the_photo_fills_the_top_left_of_the_canvas() {
        let photo = RgbImage::from_pixel(200, 100, Rgb([10, 20, 30]));
        let (tensor, placement) = input_tensor(&photo, 64);
        assert_eq!(placement.scale, 64.0 / 200.0);
        assert_eq!(tensor.len(), 3 * 64 * 64);
        // Inside the photo (row 10), the colour; below it (row 40 > 32), black.
        assert_eq!(tensor[10 * 64 + 5], 10.0);
        assert_eq!(tensor[64 * 64 + 10 * 64 + 5], 20.0);
        assert_eq!(tensor[2 * 64 * 64 + 10 * 64 + 5], 30.0);
        assert_eq!(tensor[40 * 64 + 5], 0.0);
    }

    #[test]
    fn one_hot_cell_decodes_to_one_face_in_photo_pixels() {
        // A 32-pixel canvas: an 8×8 grid. A face centred on cell (row 2, column 3).
        let placement = Placement {
            canvas: 32,
            scale: 0.5,
        };
        let cells = 64;
        let cell = 2 * 8 + 3;
        let mut heatmap = vec![0.0; cells];
        heatmap[cell] = 0.9;
        heatmap[cell + 1] = 0.6; // a weaker neighbour, suppressed
        let mut scale = vec![0.0; 2 * cells];
        scale[cell] = 2.0f32.ln(); // height 2 cells = 8 canvas pixels
        scale[cells + cell] = 2.0f32.ln();
        scale[cell + 1] = 2.0f32.ln();
        scale[cells + cell + 1] = 2.0f32.ln();
        let offset = vec![0.0; 2 * cells];
        let mut landmarks = vec![0.0; 10 * cells];
        landmarks[cell] = 0.5; // first point: y halfway down the box
        landmarks[cells + cell] = 0.25; // x a quarter across
        let faces = decode_faces(
            OutputMaps {
                heatmap: &heatmap,
                scale: &scale,
                offset: &offset,
                landmarks: &landmarks,
            },
            placement,
            0.5,
        );
        assert_eq!(faces.len(), 1);
        let face = &faces[0];
        assert_eq!(face.score, 0.9);
        // Centre (row 2.5, column 3.5) × 4 = (10, 14) canvas pixels; box 8×8 → x 10..18, y 6..14;
        // photo pixels are canvas / 0.5.
        assert_eq!(
            face.bbox,
            BoundingBox {
                x1: 20.0,
                y1: 12.0,
                x2: 36.0,
                y2: 28.0
            }
        );
        assert_eq!(face.landmarks[0], Point { x: 24.0, y: 20.0 });
    }
}
