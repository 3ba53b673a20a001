//! Five-point alignment: the similarity transform (rotation, uniform scale, translation) that best
//! maps a face's landmarks onto a recogniser's template, in the least-squares sense (Umeyama's
//! closed form in 2-D), and the warp of the photo through it with bilinear sampling.

use image::{Rgb, RgbImage};

use crate::face::Point;

/// The ArcFace template for 112×112 crops, the one MobileFaceNet was trained on: left eye, right
/// eye, nose tip, left and right mouth corners.
pub const ARCFACE_112: [Point; 5] = [
    Point {
        x: 38.2946,
        y: 51.6963,
    },
    Point {
        x: 73.5318,
        y: 51.5014,
    },
    Point {
        x: 56.0252,
        y: 71.7366,
    },
    Point {
        x: 41.5493,
        y: 92.3655,
    },
    Point {
        x: 70.7299,
        y: 92.2041,
    },
];

/// `x' = a·x − b·y + tx`, `y' = b·x + a·y + ty`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Similarity {
    pub a: f32,
    pub b: f32,
    pub tx: f32,
    pub ty: f32,
}

impl Similarity {
    /// The least-squares similarity taking `from` onto `to`; `None` when the points coincide.
    pub fn estimate(from: &[Point; 5], to: &[Point; 5]) -> Option<Self> {
        let mean = |points: &[Point; 5]| {
            let (x, y) = points
                .iter()
                .fold((0.0, 0.0), |(x, y), p| (x + p.x, y + p.y));
            Point {
                x: x / 5.0,
                y: y / 5.0,
            }
        };
        let (mean_from, mean_to) = (mean(from), mean(to));
        let (mut dot, mut cross, mut spread) = (0.0f32, 0.0f32, 0.0f32);
        for (f, t) in from.iter().zip(to) {
            let (fx, fy) = (f.x - mean_from.x, f.y - mean_from.y);
            let (tx, ty) = (t.x - mean_to.x, t.y - mean_to.y);
            dot += fx * tx + fy * ty;
            cross += fx * ty - fy * tx;
            spread += fx * fx + fy * fy;
        }
        if spread <= f32::EPSILON {
            return None;
        }
        let (a, b) = (dot / spread, cross / spread);
        Some(Self {
            a,
            b,
            tx: mean_to.x - (a * mean_from.x - b * mean_from.y),
            ty: mean_to.y - (b * mean_from.x + a * mean_from.y),
        })
    }

    pub fn apply(&self, p: Point) -> Point {
        Point {
            x: self.a * p.x - self.b * p.y + self.tx,
            y: self.b * p.x + self.a * p.y + self.ty,
        }
    }

    /// The transform going back.
    pub fn inverse(&self) -> Option<Self> {
        let norm = self.a * self.a + self.b * self.b;
        if norm <= f32::EPSILON {
            return None;
        }
        let (a, b) = (self.a / norm, -self.b / norm);
        Some(Self {
            a,
            b,
            tx: -(a * self.tx - b * self.ty),
            ty: -(b * self.tx + a * self.ty),
        })
    }
}

/// The `size`×`size` crop of `photo` in which the landmarks sit on `template`; `None` for
/// degenerate landmarks.
pub fn align(
    photo: &RgbImage,
    landmarks: &[Point; 5],
    template: &[Point; 5],
    size: u32,
) -> Option<RgbImage> {
    let back = Similarity::estimate(landmarks, template)?.inverse()?;
    Some(RgbImage::from_fn(size, size, |u, v| {
        let source = back.apply(Point {
            x: u as f32,
            y: v as f32,
        });
        sample(photo, source.x, source.y)
    }))
}

/// Bilinear sample; black outside the photo.
fn sample(photo: &RgbImage, x: f32, y: f32) -> Rgb<u8> {
    let (width, height) = photo.dimensions();
    if !(x >= 0.0 && y >= 0.0 && x <= (width - 1) as f32 && y <= (height - 1) as f32) {
        return Rgb([0, 0, 0]);
    }
    let (x0, y0) = (x.floor() as u32, y.floor() as u32);
    let (x1, y1) = ((x0 + 1).min(width - 1), (y0 + 1).min(height - 1));
    let (fx, fy) = (x - x0 as f32, y - y0 as f32);
    let mut out = [0u8; 3];
    for (channel, value) in out.iter_mut().enumerate() {
        let p = |x, y| f32::from(photo.get_pixel(x, y)[channel]);
        let top = p(x0, y0) * (1.0 - fx) + p(x1, y0) * fx;
        let bottom = p(x0, y1) * (1.0 - fx) + p(x1, y1) * fx;
        *value = (top * (1.0 - fy) + bottom * fy).round().clamp(0.0, 255.0) as u8;
    }
    Rgb(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: Point, b: Point) -> bool {
        (a.x - b.x).abs() < 1e-3 && (a.y - b.y).abs() < 1e-3
    }

    #[test]
    fn recovers_a_known_similarity() {
        // Rotate by 30°, scale by 2, shift by (5, -3).
        let (s, c) = (30f32.to_radians().sin(), 30f32.to_radians().cos());
        let truth = Similarity {
            a: 2.0 * c,
            b: 2.0 * s,
            tx: 5.0,
            ty: -3.0,
        };
        let moved = ARCFACE_112.map(|p| truth.apply(p));
        let found = Similarity::estimate(&ARCFACE_112, &moved).unwrap();
        for p in ARCFACE_112 {
            assert!(close(found.apply(p), truth.apply(p)));
        }
        let back = found.inverse().unwrap();
        for p in ARCFACE_112 {
            assert!(close(back.apply(found.apply(p)), p));
        }
        assert!(Similarity::estimate(&[Point { x: 1.0, y: 1.0 }; 5], &ARCFACE_112).is_none());
    }

    #[test]
    fn aligned_crops_put_the_landmarks_on_the_template() {
        // A photo with a bright dot at each landmark, placed by a known transform.
        let place = Similarity {
            a: 3.0,
            b: 0.5,
            tx: 40.0,
            ty: 20.0,
        };
        let landmarks = ARCFACE_112.map(|p| place.apply(p));
        let mut photo = RgbImage::new(500, 500);
        for p in landmarks {
            for dy in -2i32..=2 {
                for dx in -2i32..=2 {
                    let (x, y) = (
                        (p.x.round() as i32 + dx) as u32,
                        (p.y.round() as i32 + dy) as u32,
                    );
                    photo.put_pixel(x, y, Rgb([255, 255, 255]));
                }
            }
        }
        let crop = align(&photo, &landmarks, &ARCFACE_112, 112).unwrap();
        for p in ARCFACE_112 {
            let pixel = crop.get_pixel(p.x.round() as u32, p.y.round() as u32);
            assert!(pixel[0] > 100, "no dot at {p:?}: {pixel:?}");
        }
        assert_eq!(crop.get_pixel(5, 5)[0], 0);
    }
}
