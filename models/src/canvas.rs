//! The square detector input: a photo scaled to fit a `side`×`side` canvas, placed in its top-left
//! corner. Both detectors use it, so one canvas size means one optimised plan per engine whatever
//! the photos' shapes.

use image::RgbImage;
use image::imageops::{FilterType, resize, thumbnail};

/// The photo scaled to fit `side` (its longer side becomes `side`) and the scale used.
///
/// Phone photos are shrunk 5–15× for the detectors. A triangle filter that wide costs about 12 ms
/// on a 2.5 MP photo; averaging each block of source pixels into one target pixel gives the same
/// low-pass effect in a fraction of that, so it is used for every shrink of 2× or more; the
/// triangle filter only for milder ones, where block averaging would alias.
pub fn fit(photo: &RgbImage, side: usize) -> (RgbImage, f32) {
    let (width, height) = photo.dimensions();
    let scale = side as f32 / width.max(height) as f32;
    let fitted_width = ((width as f32 * scale).round() as u32).clamp(1, side as u32);
    let fitted_height = ((height as f32 * scale).round() as u32).clamp(1, side as u32);
    let fitted = if scale <= 0.5 {
        block_average(photo, fitted_width, fitted_height)
    } else {
        resize(photo, fitted_width, fitted_height, FilterType::Triangle)
    };
    (fitted, scale)
}

/// The source rows (or columns) `[start, end)` averaged into each of `target` output rows (or
/// columns) from `source`: the blocks of image's `thumbnail`, computed the same way in f32.
fn blocks(source: u32, target: u32) -> Vec<(usize, usize)> {
    let ratio = source as f32 / target as f32;
    (0..target)
        .map(|i| {
            let startf = i as f32 * ratio;
            let endf = startf + ratio;
            let start = (startf.ceil() as u32).clamp(0, source - 1);
            let end = (endf.ceil() as u32).clamp(start, source);
            (start as usize, end as usize)
        })
        .collect()
}

/// `photo` shrunk to `width`×`height`, each target pixel the rounded mean of its block of source
/// pixels: the same numbers as image's `thumbnail` (the tests compare them pixel for pixel), which
/// detections and calibrated thresholds were measured with, but summed straight from the buffer a
/// row at a time instead of pixel by pixel through the generic pixel accessors — several times
/// faster, and a detector input is made for every camera frame.
fn block_average(photo: &RgbImage, width: u32, height: u32) -> RgbImage {
    let (source_width, source_height) = photo.dimensions();
    if source_width == 0 || source_height == 0 {
        return RgbImage::new(width, height);
    }
    let columns = blocks(source_width, width);
    let rows = blocks(source_height, height);
    // A block can only be empty when growing; `thumbnail` then interpolates, so let it.
    if columns.iter().chain(&rows).any(|(start, end)| start == end) {
        return thumbnail(photo, width, height);
    }
    let stride = source_width as usize * 3;
    let source = photo.as_raw();
    let mut out = Vec::with_capacity(width as usize * height as usize * 3);
    // Per source column and channel, the sum over the current block of rows.
    let mut column_sums = vec![0u32; stride];
    for &(top, bottom) in &rows {
        column_sums.fill(0);
        for row in source[top * stride..bottom * stride].chunks_exact(stride) {
            for (sum, &value) in column_sums.iter_mut().zip(row) {
                *sum += u32::from(value);
            }
        }
        for &(left, right) in &columns {
            let count = ((right - left) * (bottom - top)) as u64;
            let mut pixel = [0u64; 3];
            for sums in column_sums[left * 3..right * 3].chunks_exact(3) {
                pixel[0] += u64::from(sums[0]);
                pixel[1] += u64::from(sums[1]);
                pixel[2] += u64::from(sums[2]);
            }
            // Rounded to nearest, as `thumbnail` does; a mean of u8 values fits a u8.
            out.extend(pixel.map(|sum| ((sum + count / 2) / count) as u8));
        }
    }
    RgbImage::from_raw(width, height, out).unwrap_or_else(|| thumbnail(photo, width, height))
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

    /// A photo of noise, the same for the same seed.
    fn noise(width: u32, height: u32, seed: u32) -> RgbImage {
        let mut state = seed.wrapping_mul(2_654_435_761).wrapping_add(1);
        RgbImage::from_fn(width, height, |_, _| {
            let mut channel = || {
                state ^= state << 13;
                state ^= state >> 17;
                state ^= state << 5;
                state as u8
            };
            Rgb([channel(), channel(), channel()])
        })
    }

    #[test]
    fn the_block_average_gives_the_same_pixels_as_image_thumbnail() {
        // Camera frames, a phone photo's shape, odd sizes, exact and fractional ratios, and
        // blocks of one source row or column.
        let cases = [
            ((640, 480), (128, 96)),
            ((320, 240), (128, 96)),
            ((1382, 1868), (95, 128)),
            ((1868, 1382), (320, 237)),
            ((333, 517), (82, 128)),
            ((256, 256), (128, 128)),
            ((257, 129), (128, 64)),
            ((5, 3), (5, 1)),
            ((7, 7), (1, 1)),
        ];
        for (seed, ((w, h), (tw, th))) in cases.into_iter().enumerate() {
            let photo = noise(w, h, seed as u32);
            let ours = block_average(&photo, tw, th);
            let reference = thumbnail(&photo, tw, th);
            assert_eq!(ours.dimensions(), (tw, th));
            assert!(
                ours == reference,
                "{w}×{h} → {tw}×{th}: the pixels differ from thumbnail's"
            );
        }
    }

    #[test]
    fn growing_falls_back_to_thumbnail() {
        let photo = noise(3, 2, 9);
        assert!(block_average(&photo, 6, 4) == thumbnail(&photo, 6, 4));
    }

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
