//! The manipulation score: how likely the face in a photo was blended in from another picture —
//! the last step of a face swap and of most deepfake pipelines, which paste a made face back into
//! a real frame.
//!
//! The method follows Shiohara and Yamasaki's self-blended images (CVPR 2022), with measured
//! features and a linear model in place of their deep network:
//! - the training fakes are made from real photos alone ([`self_blend`]): the face is blended back
//!   into its own photo from a copy altered a little (colour, sharpness, a shift and a scale) inside
//!   a feathered oval. Such a fake carries what every blend leaves behind — a seam, a change of
//!   noise and sharpness between inside and outside, a colour step — without the traits of any
//!   one generator, so the model learns the blend, not a dataset;
//! - [`features`] measures those traces on a crop aligned on the face's five landmarks with a
//!   margin ([`crop`]): the energy of three frequency bands (differences of Gaussians) in
//!   elliptical rings from the face's centre outwards, the chroma and the chroma's edges ring by
//!   ring inside the face, and how unevenly the finest band (the sensor's noise) is spread over
//!   the face;
//! - [`BlendModel`] is a logistic regression over them, trained and calibrated by
//!   `idyntra eval manipulation` on photos of real people.
//!
//! What it cannot see: a face generated whole, with no blend (a fully synthetic photo); a blend
//! whose seam follows the hairline and jaw outside the oval measured here; a photo re-encoded or
//! shrunk until the seam is gone. It was never shown a real deepfake: its detection rate on them
//! is unknown, and it is one signal among others.

use image::RgbImage;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::align::{ARCFACE_112, align};
use crate::face::{Face, Point};

/// Side of the crop the features are measured on.
pub const CROP_SIZE: u32 = 128;

/// ArcFace's template shrunk by this much about the crop's centre: the whole face with a margin,
/// so the seam of a blend along the cheeks, jaw and forehead falls inside the crop.
const SHRINK: f32 = 0.75;

/// The face's oval in the crop (centre, radii), from the template's geometry: the eyes at 0.37 and
/// the mouth at 0.68 of the face's height.
const CENTRE: (f32, f32) = (64.0, 69.0);
const RADII: (f32, f32) = (29.0, 36.0);

/// The rings features are measured in, as the oval's normalised radius (1 = the face's edge).
const RINGS: [f32; 9] = [0.0, 0.35, 0.55, 0.7, 0.8, 0.9, 1.0, 1.1, 1.25];
const RING_COUNT: usize = RINGS.len() - 1;
/// The ring that ends at the face's edge.
const FACE_EDGE_RING: usize = 5;

/// Standard deviations of the Gaussians whose differences split the luma into bands.
const BAND_SIGMAS: [f32; 3] = [1.0, 2.0, 4.0];
const BANDS: usize = BAND_SIGMAS.len();

/// The Gaussians whose difference finds the chroma's edges.
const CHROMA_SIGMAS: (f32, f32) = (1.5, 4.0);

/// The features' names, in order.
pub const FEATURE_NAMES: [&str; FEATURES] = [
    "inner_vs_outer_band0",
    "inner_vs_outer_band1",
    "inner_vs_outer_band2",
    "seam_band0",
    "seam_band1",
    "seam_band2",
    "step_band0",
    "step_band1",
    "step_band2",
    "chroma_step_cb",
    "chroma_step_cr",
    "noise_unevenness",
    "level_band0",
    "level_band1",
    "level_band2",
    "chroma_seam_cb",
    "chroma_seam_cr",
    "chroma_edges_cb",
    "chroma_edges_cr",
];

/// How many features [`features`] measures.
pub const FEATURES: usize = 19;

/// The features of a face.
pub type Features = [f32; FEATURES];

/// The template the crop puts the landmarks on.
pub fn template() -> [Point; 5] {
    ARCFACE_112.map(|p| Point {
        x: (p.x - 56.0) * SHRINK + 64.0,
        y: (p.y - 56.0) * SHRINK + 64.0,
    })
}

/// The crop of the face with `landmarks` the features are measured on; `None` for degenerate
/// landmarks.
pub fn crop(photo: &RgbImage, landmarks: &[Point; 5]) -> Option<RgbImage> {
    align(photo, landmarks, &template(), CROP_SIZE)
}

/// One channel of a crop, as numbers.
type Plane = Vec<f32>;

fn planes(crop: &RgbImage) -> [Plane; 3] {
    let mut out: [Plane; 3] = Default::default();
    for plane in &mut out {
        plane.reserve(crop.len() / 3);
    }
    for pixel in crop.pixels() {
        for (plane, value) in out.iter_mut().zip(pixel.0) {
            plane.push(f32::from(value));
        }
    }
    out
}

/// Gaussian blur with edges clamped, separable.
fn gaussian(plane: &[f32], width: usize, sigma: f32) -> Plane {
    let radius = (3.0 * sigma).ceil() as isize;
    let kernel: Vec<f32> = (-radius..=radius)
        .map(|i| (-((i * i) as f32) / (2.0 * sigma * sigma)).exp())
        .collect();
    let total: f32 = kernel.iter().sum();
    let height = plane.len() / width;
    let pass = |source: &[f32], horizontal: bool| -> Plane {
        let mut out = vec![0.0; source.len()];
        for y in 0..height {
            for x in 0..width {
                let mut sum = 0.0;
                for (k, weight) in kernel.iter().enumerate() {
                    let offset = k as isize - radius;
                    let (sx, sy) = if horizontal {
                        (
                            (x as isize + offset).clamp(0, width as isize - 1) as usize,
                            y,
                        )
                    } else {
                        (
                            x,
                            (y as isize + offset).clamp(0, height as isize - 1) as usize,
                        )
                    };
                    sum += weight * source[sy * width + sx];
                }
                out[y * width + x] = sum / total;
            }
        }
        out
    };
    pass(&pass(plane, true), false)
}

/// The oval's normalised radius at a pixel, with radii scaled by `scale`.
fn oval_radius(x: usize, y: usize, scale: (f32, f32)) -> f32 {
    let dx = (x as f32 - CENTRE.0) / (RADII.0 * scale.0);
    let dy = (y as f32 - CENTRE.1) / (RADII.1 * scale.1);
    (dx * dx + dy * dy).sqrt()
}

fn ring_of(radius: f32) -> Option<usize> {
    RINGS
        .windows(2)
        .position(|w| radius >= w[0] && radius < w[1])
}

/// The traces of a blend on a [`crop`] (any square crop is measured as if it were one).
pub fn features(crop: &RgbImage) -> Features {
    let width = crop.width() as usize;
    let [r, g, b] = planes(crop);
    let luma: Plane = (0..r.len())
        .map(|i| 0.299 * r[i] + 0.587 * g[i] + 0.114 * b[i])
        .collect();
    let cb: Plane = (0..r.len()).map(|i| 0.564 * (b[i] - luma[i])).collect();
    let cr: Plane = (0..r.len()).map(|i| 0.713 * (r[i] - luma[i])).collect();
    let mut blurred = vec![luma.clone()];
    for sigma in BAND_SIGMAS {
        blurred.push(gaussian(&luma, width, sigma));
    }
    // Band k: what the Gaussian of BAND_SIGMAS[k] removes that the previous level still had.
    let band = |k: usize, i: usize| blurred[k][i] - blurred[k + 1][i];
    // The chroma's edges at the scale of a feathered seam (a difference of Gaussians).
    let chroma_edges: Vec<Plane> = [&cb, &cr]
        .iter()
        .map(|plane| {
            let fine = gaussian(plane, width, CHROMA_SIGMAS.0);
            let coarse = gaussian(plane, width, CHROMA_SIGMAS.1);
            fine.iter().zip(coarse).map(|(f, c)| f - c).collect()
        })
        .collect();

    let mut energy = [[0.0f64; RING_COUNT]; BANDS];
    let mut chroma_energy = [[0.0f64; RING_COUNT]; 2];
    let mut colour = [[0.0f64; RING_COUNT]; 2];
    let mut count = [0u32; RING_COUNT];
    for i in 0..luma.len() {
        let radius = oval_radius(i % width, i / width, (1.0, 1.0));
        let Some(ring) = ring_of(radius) else {
            continue;
        };
        count[ring] += 1;
        for (k, ring_energy) in energy.iter_mut().enumerate() {
            ring_energy[ring] += f64::from(band(k, i).powi(2));
        }
        for (c, plane) in [&cb, &cr].iter().enumerate() {
            colour[c][ring] += f64::from(plane[i]);
            chroma_energy[c][ring] += f64::from(chroma_edges[c][i].powi(2));
        }
    }
    let log_means = |rings: &[f64; RING_COUNT]| -> [f32; RING_COUNT] {
        std::array::from_fn(|ring| {
            let mean = rings[ring] / f64::from(count[ring].max(1));
            (mean + 1e-3).ln() as f32
        })
    };
    let mean = |values: &[f32]| values.iter().sum::<f32>() / values.len() as f32;
    // Within the face only: its natural edge against the background is at the last rings.
    let seam = |l: &[f32; RING_COUNT]| {
        (1..=FACE_EDGE_RING)
            .map(|ring| l[ring] - (l[ring - 1] + l[ring + 1]) / 2.0)
            .fold(f32::MIN, f32::max)
    };
    let step = |l: &[f32; RING_COUNT]| {
        (1..=FACE_EDGE_RING)
            .map(|ring| (l[ring] - l[ring - 1]).abs())
            .fold(0.0, f32::max)
    };

    let mut out = [0.0f32; FEATURES];
    for (k, rings) in energy.iter().enumerate() {
        let l = log_means(rings);
        out[k] = mean(&l[0..3]) - mean(&l[5..8]);
        out[3 + k] = seam(&l);
        out[6 + k] = step(&l);
        out[12 + k] = l[0];
    }
    for c in 0..2 {
        // The largest step of mean chroma between neighbouring rings inside the face: skin's
        // colour changes slowly, a pasted face's changes at its seam.
        let at = |ring: usize| colour[c][ring] / f64::from(count[ring].max(1));
        out[9 + c] = (1..=FACE_EDGE_RING)
            .map(|ring| (at(ring) - at(ring - 1)).abs() as f32)
            .fold(0.0, f32::max);
        let l = log_means(&chroma_energy[c]);
        out[15 + c] = seam(&l);
        // Chroma edges where a seam would run (0.55 to 1 of the face) against the centre's.
        out[17 + c] = mean(&l[2..=FACE_EDGE_RING]) - mean(&l[0..2]);
    }
    out[11] = noise_unevenness(&|i| band(0, i), width, luma.len() / width);
    out
}

/// How unevenly the finest band's energy is spread over 8×8 blocks inside the face: the log of
/// their coefficient of variation. A face pasted in from a picture with other noise changes it.
fn noise_unevenness(fine: &dyn Fn(usize) -> f32, width: usize, height: usize) -> f32 {
    const BLOCK: usize = 8;
    let mut blocks = Vec::new();
    for by in 0..height / BLOCK {
        for bx in 0..width / BLOCK {
            let (cx, cy) = (bx * BLOCK + BLOCK / 2, by * BLOCK + BLOCK / 2);
            if oval_radius(cx, cy, (1.0, 1.0)) >= 0.9 {
                continue;
            }
            let mut sum = 0.0f64;
            for y in by * BLOCK..(by + 1) * BLOCK {
                for x in bx * BLOCK..(bx + 1) * BLOCK {
                    sum += f64::from(fine(y * width + x).powi(2));
                }
            }
            blocks.push(sum / (BLOCK * BLOCK) as f64);
        }
    }
    if blocks.is_empty() {
        return 0.0;
    }
    let n = blocks.len() as f64;
    let mean = blocks.iter().sum::<f64>() / n;
    let variance = blocks.iter().map(|e| (e - mean).powi(2)).sum::<f64>() / n;
    ((variance.sqrt() + 1e-6) / (mean + 1e-6)).ln() as f32
}

/// How one self-blended fake is made; the trainer draws these at random.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SelfBlend {
    /// Shift of the altered copy against the original, in crop pixels.
    pub shift: (f32, f32),
    /// Scale of the altered copy about the crop's centre.
    pub scale: f32,
    /// Gain and offset of each colour channel of the copy.
    pub gain: [f32; 3],
    pub offset: [f32; 3],
    /// Gaussian blur of the copy (sigma, pixels); a negative value sharpens it instead (unsharp
    /// masking with that sigma).
    pub blur: f32,
    /// The blended oval's radii as fractions of the face's.
    pub radii: (f32, f32),
    /// Feathering of the oval's edge (Gaussian sigma, pixels).
    pub feather: f32,
    /// How much of the copy the blended oval takes (1: all of it).
    pub ratio: f32,
}

/// A fake made from a real photo: the crop of the face with `landmarks`, into which an altered
/// copy of the same face is blended inside a feathered oval; `None` for degenerate landmarks.
pub fn self_blend(photo: &RgbImage, landmarks: &[Point; 5], blend: &SelfBlend) -> Option<RgbImage> {
    let target = crop(photo, landmarks)?;
    let half = CROP_SIZE as f32 / 2.0;
    let moved = template().map(|p| Point {
        x: (p.x - half) * blend.scale + half + blend.shift.0,
        y: (p.y - half) * blend.scale + half + blend.shift.1,
    });
    let width = CROP_SIZE as usize;
    let mut source = planes(&align(photo, landmarks, &moved, CROP_SIZE)?);
    for (c, plane) in source.iter_mut().enumerate() {
        for value in plane.iter_mut() {
            *value = *value * blend.gain[c] + blend.offset[c];
        }
        if blend.blur > 0.0 {
            *plane = gaussian(plane, width, blend.blur);
        } else if blend.blur < 0.0 {
            let soft = gaussian(plane, width, -blend.blur);
            for (value, soft) in plane.iter_mut().zip(soft) {
                *value = 2.0 * *value - soft;
            }
        }
    }
    let hard: Plane = (0..width * width)
        .map(|i| {
            let inside = oval_radius(i % width, i / width, blend.radii) < 1.0;
            if inside { 1.0 } else { 0.0 }
        })
        .collect();
    let mut mask = if blend.feather > 0.0 {
        gaussian(&hard, width, blend.feather)
    } else {
        hard
    };
    for alpha in &mut mask {
        *alpha *= blend.ratio;
    }
    let mut out = target;
    for (i, pixel) in out.pixels_mut().enumerate() {
        for (c, value) in pixel.0.iter_mut().enumerate() {
            let blended = mask[i] * source[c][i] + (1.0 - mask[i]) * f32::from(*value);
            *value = blended.round().clamp(0.0, 255.0) as u8;
        }
    }
    Some(out)
}

/// A logistic regression over standardised [`features`] and their squares: the probability that
/// a face was blended in, flagged at `threshold`. The squares let it flag a feature far from real
/// faces' in either direction (a blurred copy lowers the fine band's energy inside the face, a
/// sharpened one raises it), which a linear model alone cannot.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BlendModel {
    /// The method, as results name it.
    pub method: String,
    pub features: Vec<String>,
    pub mean: Vec<f32>,
    pub scale: Vec<f32>,
    /// Weights of the standardised features.
    pub weights: Vec<f32>,
    /// Weights of their squares.
    pub quadratic: Vec<f32>,
    pub bias: f32,
    /// Scores at or above it are flagged.
    pub threshold: f32,
    /// The share of real faces of people the model had not seen that `threshold` flagged when it
    /// was calibrated.
    pub calibrated_fpr: f32,
}

/// The method's name in results.
pub const METHOD: &str = "self_blend_lr";

/// The bundled model's name in results' list of models.
pub const MODEL_NAME: &str = "self-blend-lr";

/// The bundled model's file (`models/manipulation/`, model card beside it).
const BUNDLED: &str = include_str!("../manipulation/self-blend-lr.json");

/// Why a model file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum BlendModelError {
    #[error("the manipulation model is not valid JSON: {0}")]
    Json(#[from] serde_json::Error),
    #[error("the manipulation model has {found} features where {FEATURES} are measured")]
    Shape { found: usize },
}

impl BlendModel {
    /// The bundled model.
    pub fn bundled() -> Result<Self, BlendModelError> {
        Self::from_json(BUNDLED)
    }

    /// The SHA-256 of the bundled model's file, lower-case hex: hashed once, since every
    /// finalize names it.
    pub fn bundled_sha256() -> &'static str {
        static SHA256: std::sync::OnceLock<String> = std::sync::OnceLock::new();
        SHA256.get_or_init(|| hex_string(&Sha256::digest(BUNDLED.as_bytes())))
    }

    pub fn from_json(text: &str) -> Result<Self, BlendModelError> {
        let model: Self = serde_json::from_str(text)?;
        for found in [
            model.features.len(),
            model.mean.len(),
            model.scale.len(),
            model.weights.len(),
            model.quadratic.len(),
        ] {
            if found != FEATURES {
                return Err(BlendModelError::Shape { found });
            }
        }
        Ok(model)
    }

    /// The score of `face` in `photo`; `None` when its landmarks are degenerate.
    pub fn score_face(&self, photo: &RgbImage, face: &Face) -> Option<f32> {
        Some(self.score(&features(&crop(photo, &face.landmarks)?)))
    }

    /// The probability that the face of these features was blended in.
    pub fn score(&self, features: &Features) -> f32 {
        let inputs = inputs(&standardised(features, &self.mean, &self.scale));
        let z = inputs
            .iter()
            .zip(self.weights.iter().chain(&self.quadratic))
            .map(|(x, w)| x * w)
            .sum::<f32>();
        sigmoid(self.bias + z)
    }

    /// Fits the model to `real` and `fake` faces' features: standardised, then logistic
    /// regression with an L2 penalty by full-batch gradient descent (a few hundred samples
    /// converge in well under a second), each class weighing the same. The threshold is left at
    /// 0.5, uncalibrated.
    pub fn fit(real: &[Features], fake: &[Features], l2: f32) -> Self {
        let samples: Vec<(&Features, f32)> = real
            .iter()
            .map(|f| (f, 0.0))
            .chain(fake.iter().map(|f| (f, 1.0)))
            .collect();
        let n = samples.len().max(1) as f32;
        let mean: Vec<f32> = (0..FEATURES)
            .map(|i| samples.iter().map(|(f, _)| f[i]).sum::<f32>() / n)
            .collect();
        let scale: Vec<f32> = (0..FEATURES)
            .map(|i| {
                let variance = samples
                    .iter()
                    .map(|(f, _)| (f[i] - mean[i]).powi(2))
                    .sum::<f32>()
                    / n;
                variance.sqrt().max(1e-6)
            })
            .collect();
        let expanded: Vec<([f32; INPUTS], f32)> = samples
            .iter()
            .map(|(f, y)| (inputs(&standardised(f, &mean, &scale)), *y))
            .collect();
        let weight_of = |y: f32| {
            let count = if y > 0.5 { fake.len() } else { real.len() };
            n / (2.0 * count.max(1) as f32)
        };
        let (mut weights, mut bias) = ([0.0f32; INPUTS], 0.0f32);
        let rate = 0.2;
        for _ in 0..4000 {
            let mut gradient = [0.0f32; INPUTS];
            let mut gradient_bias = 0.0f32;
            for (x, y) in &expanded {
                let z = bias + x.iter().zip(&weights).map(|(a, b)| a * b).sum::<f32>();
                let error = (sigmoid(z) - y) * weight_of(*y) / n;
                for (g, value) in gradient.iter_mut().zip(x) {
                    *g += error * value;
                }
                gradient_bias += error;
            }
            for (weight, g) in weights.iter_mut().zip(gradient) {
                *weight -= rate * (g + l2 * *weight);
            }
            bias -= rate * gradient_bias;
        }
        let (linear, quadratic) = weights.split_at(FEATURES);
        Self {
            method: METHOD.to_owned(),
            features: FEATURE_NAMES.iter().map(|&s| s.to_owned()).collect(),
            mean,
            scale,
            weights: linear.to_vec(),
            quadratic: quadratic.to_vec(),
            bias,
            threshold: 0.5,
            calibrated_fpr: f32::NAN,
        }
    }
}

/// The model's inputs: the standardised features, then their squares.
const INPUTS: usize = 2 * FEATURES;

/// A standardised value beyond this is taken as this: one odd photo must not dominate a square.
const MAX_STANDARD: f32 = 6.0;

fn standardised(features: &Features, mean: &[f32], scale: &[f32]) -> Features {
    std::array::from_fn(|i| ((features[i] - mean[i]) / scale[i]).clamp(-MAX_STANDARD, MAX_STANDARD))
}

fn inputs(z: &Features) -> [f32; INPUTS] {
    std::array::from_fn(|i| {
        if i < FEATURES {
            z[i]
        } else {
            z[i - FEATURES].powi(2)
        }
    })
}

fn sigmoid(z: f32) -> f32 {
    1.0 / (1.0 + (-z).exp())
}

fn hex_string(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::Rgb;

    /// A textured "face": noise over a gradient, seeded.
    fn textured(seed: u32) -> RgbImage {
        let mut state = seed.wrapping_mul(2_654_435_761).max(1);
        RgbImage::from_fn(CROP_SIZE * 2, CROP_SIZE * 2, |x, y| {
            state ^= state << 13;
            state ^= state >> 17;
            state ^= state << 5;
            let noise = (state % 24) as u8;
            let base = (60 + (x + y) / 4) as u8;
            Rgb([base + noise, base / 2 + 40 + noise, base / 2 + 30 + noise])
        })
    }

    /// Landmarks that put the template in the middle of a 256 photo at twice the size.
    fn landmarks() -> [Point; 5] {
        template().map(|p| Point {
            x: p.x * 2.0,
            y: p.y * 2.0,
        })
    }

    fn blend() -> SelfBlend {
        SelfBlend {
            shift: (1.5, -1.0),
            scale: 1.03,
            gain: [1.08, 0.95, 0.97],
            offset: [6.0, -4.0, 0.0],
            blur: 1.2,
            radii: (0.9, 0.95),
            feather: 2.0,
            ratio: 1.0,
        }
    }

    #[test]
    fn the_crop_puts_the_landmarks_on_the_template_with_a_margin() {
        let template = template();
        // The eyes 26 pixels apart in the middle of the 128 crop: room around the face.
        assert!((template[1].x - template[0].x - 26.43).abs() < 0.01);
        assert!((template[2].x - 64.0).abs() < 0.1);
        let photo = textured(1);
        let crop = crop(&photo, &landmarks()).unwrap();
        assert_eq!(crop.dimensions(), (CROP_SIZE, CROP_SIZE));
    }

    #[test]
    fn a_self_blend_changes_the_oval_only_and_shows_in_the_features() {
        let photo = textured(2);
        let real = crop(&photo, &landmarks()).unwrap();
        let fake = self_blend(&photo, &landmarks(), &blend()).unwrap();
        // Outside the feathered oval the photo is untouched; at the centre it is the copy.
        assert_eq!(real.get_pixel(2, 2), fake.get_pixel(2, 2));
        assert_ne!(real.get_pixel(64, 69), fake.get_pixel(64, 69));
        let (real, fake) = (features(&real), features(&fake));
        // The blurred copy has less fine energy inside than outside, and a colour step.
        assert!(fake[0] < real[0] - 0.5, "{} vs {}", fake[0], real[0]);
        assert!(fake[9] + fake[10] > real[9] + real[10]);
        assert!(real.iter().chain(&fake).all(|v| v.is_finite()));
    }

    #[test]
    fn a_fitted_model_tells_blends_from_originals_and_reads_back_from_json() {
        let mut real = Vec::new();
        let mut fake = Vec::new();
        for seed in 0..12 {
            let photo = textured(seed + 10);
            real.push(features(&crop(&photo, &landmarks()).unwrap()));
            let mut blend = blend();
            blend.blur = if seed % 2 == 0 { 1.0 } else { -1.0 };
            fake.push(features(&self_blend(&photo, &landmarks(), &blend).unwrap()));
        }
        let model = BlendModel::fit(&real, &fake, 1e-3);
        assert!(real.iter().all(|f| model.score(f) < 0.5));
        assert!(fake.iter().all(|f| model.score(f) > 0.5));
        let text = serde_json::to_string(&BlendModel {
            calibrated_fpr: 0.05,
            ..model.clone()
        })
        .unwrap();
        let back = BlendModel::from_json(&text).unwrap();
        assert_eq!(back.score(&real[0]), model.score(&real[0]));
        let mut short = back.clone();
        short.quadratic.pop();
        assert!(matches!(
            BlendModel::from_json(&serde_json::to_string(&short).unwrap()),
            Err(BlendModelError::Shape { found }) if found == FEATURES - 1
        ));
    }

    #[test]
    fn the_bundled_model_loads_and_names_every_feature() {
        let model = BlendModel::bundled().unwrap();
        assert_eq!(model.features, FEATURE_NAMES);
        assert_eq!(model.method, METHOD);
        assert!((0.0..1.0).contains(&model.threshold));
        assert_eq!(BlendModel::bundled_sha256().len(), 64);
    }
}
