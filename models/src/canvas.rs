//! The square detector input: a photo scaled to fit a `side`×`side` canvas, placed in its top-left
//! corner. Both detectors use it, so one canvas size means one optimised plan per engine whatever
//! the photos' shapes.

use image::RgbImage;
use image::imageops::{FilterType, resize, thumbnail};

/// The photo scaled to fit `side` (its longer side becomes `side`) and the scale used.
///
/// Phone photos are shrunk 5–15× for the detectors. A triangle filter that wide costs about 12 ms
/// on a 2.5 MP photo; averaging each block of source pixels into one target pixel (`thumbnail`)
/// gives the same low-pass effect in about a millisecond, so it is used for every shrink of 2× or
/// more; the triangle filter only for milder ones, where block averaging would alias.
pub fn fit(photo: &RgbImage, side: usize) -> (RgbImage, f32) {
    let (width, height) = photo.dimensions();
    let scale = side as f32 / width.max(height) as f32;
    let fitted_width = ((width as f32 * scale).round() as u32).clamp(1, side as u32);
    let fitted_height = ((height as f32 * scale).round() as u32).clamp(1, side as u32);
    let fitted = if scale <= 0.5 {
        thumbnail(photo, fitted_width, fitted_height)
    } else {
        resize(photo, fitted_width, fitted_height, FilterType::Triangle)
    };
    (fitted, scale)
}

/// The fitted photo on a black `side`×`side` canvas, and the scale.
pub fn square(photo: &RgbImage, side: usize) -> (RgbImage, f32) {
    let (fitted, scale) = fit(photo, side);
    let mut canvas = RgbImage::new(side as u32, side as u32);
    image::imageops::replace(&mut canvas, &fitted, 0, 0);
    (canvas, scale)
}

#[cfg(test)]
mod tests {
    use image::Rgb;

    use super::*;

    #[test]
    fn the_longer_side_fills_the_canvas_and_the_rest_is_black() {
        for (w, h) in [(1000, 500), (300, 600), (100, 100)] {
            let photo = RgbImage::from_pixel(w, h, Rgb([200, 100, 50]));
            let (canvas, scale) = square(&photo, 320);
            assert_eq!(canvas.dimensions(), (320, 320));
            assert!((scale - 320.0 / w.max(h) as f32).abs() < 1e-6);
            // A flat photo stays flat when shrunk or grown.
            assert_eq!(canvas.get_pixel(0, 0), &Rgb([200, 100, 50]));
            let inside = ((w as f32 * scale) as u32 - 1, (h as f32 * scale) as u32 - 1);
            assert_eq!(canvas.get_pixel(inside.0, inside.1), &Rgb([200, 100, 50]));
            if w != h {
                assert_eq!(canvas.get_pixel(319, 319), &Rgb([0, 0, 0]));
            }
        }
    }
}
