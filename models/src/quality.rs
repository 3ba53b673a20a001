//! Face image quality in the spirit of ISO/IEC 29794-5: each component measured on the face, scored
//! 0 (unusable) … 100 (ideal), with stable failure codes the capture UI turns into guidance.
//!
//! Sharpness, exposure and contrast are measured on a fixed-size grey patch of the face's inner
//! region, resampled with area averaging: the patch has about the resolution the recogniser sees
//! (the aligned crop is 112 px with 35 px between the eyes), so a large face that is a little soft
//! is not "blurry", while a small one that is smeared at that scale is. Pose comes from the five
//! landmarks with a simple head model (the nose tip sits about 0.6 inter-eye distances in front of
//! the eyes). Everything here is arithmetic on a 64×64 patch: well under a millisecond.

use idyntra_types::{QualityCode, QualityComponents, QualityMeasurements, QualityReport};
use image::RgbImage;

use crate::face::{Face, Point};

/// What the photo is for: centring and framing matter for a live selfie, not for the portrait on a
/// document (which sits to one side of the card).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Capture {
    Selfie,
    Document,
}

/// Limits behind the failure codes. The defaults were set on the development photos and on
/// blurred and darkened copies of them (see `docs/ACCURACY.md`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct QualityThresholds {
    /// Below this many pixels between the eyes the recogniser has too little detail.
    pub min_inter_eye_px: f32,
    pub max_yaw_deg: f32,
    pub max_pitch_deg: f32,
    pub max_roll_deg: f32,
    pub min_face_luma: f32,
    pub max_face_luma: f32,
    pub min_face_contrast: f32,
    pub min_sharpness: f32,
    /// Largest distance of the face centre from the frame centre, as a fraction of the frame.
    pub max_off_centre: f32,
    /// Largest face width as a fraction of the frame width (closer than this crops the head).
    pub max_face_width: f32,
}

impl Default for QualityThresholds {
    fn default() -> Self {
        Self {
            min_inter_eye_px: 20.0,
            max_yaw_deg: 25.0,
            max_pitch_deg: 25.0,
            max_roll_deg: 20.0,
            min_face_luma: 55.0,
            max_face_luma: 215.0,
            min_face_contrast: 14.0,
            min_sharpness: 0.06,
            max_off_centre: 0.3,
            max_face_width: 0.9,
        }
    }
}

/// Side of the grey face patch.
const PATCH: usize = 64;
/// Depth of the nose tip in front of the eyes, in inter-eye distances.
const NOSE_DEPTH: f32 = 0.6;
/// Where the nose tip sits between the eye line (0) and the mouth (1) in a level face, as
/// CenterFace places them (the median over the frontal development photos).
const LEVEL_NOSE_HEIGHT: f32 = 0.56;

/// Linear score: 100 at `good` or better, 0 at `bad` or worse.
fn ramp(value: f32, bad: f32, good: f32) -> u8 {
    let t = ((value - bad) / (good - bad)).clamp(0.0, 1.0);
    (t * 100.0).round() as u8
}

pub(crate) fn midpoint(a: Point, b: Point) -> Point {
    Point {
        x: (a.x + b.x) / 2.0,
        y: (a.y + b.y) / 2.0,
    }
}

/// Head pose from five landmarks.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct HeadPose {
    /// Degrees; positive when the nose is towards the image's right.
    pub yaw: f32,
    /// Degrees; positive when looking down.
    pub pitch: f32,
    /// Degrees; positive when the image-right eye is lower.
    pub roll: f32,
    /// Pixels between the eyes.
    pub inter_eye: f32,
}

/// Yaw, pitch and roll of `face` (degenerate landmarks read as 90° of yaw and pitch).
pub fn head_pose(face: &Face) -> HeadPose {
    let [left_eye, right_eye, nose, mouth_left, mouth_right] = face.landmarks;
    let (dx, dy) = (right_eye.x - left_eye.x, right_eye.y - left_eye.y);
    let inter_eye = dx.hypot(dy);
    let roll = dy.atan2(dx);
    // Work in the face's own frame: rotate by −roll about the eye midpoint.
    let eyes = midpoint(left_eye, right_eye);
    let mouth = midpoint(mouth_left, mouth_right);
    let (sin, cos) = (-roll).sin_cos();
    let level = |p: Point| {
        let (x, y) = (p.x - eyes.x, p.y - eyes.y);
        (x * cos - y * sin, x * sin + y * cos)
    };
    let (nose_x, nose_y) = level(nose);
    let (_, mouth_y) = level(mouth);
    if inter_eye < 1.0 || mouth_y <= 0.0 {
        return HeadPose {
            yaw: 90.0,
            pitch: 90.0,
            roll: roll.to_degrees(),
            inter_eye,
        };
    }
    // Turning by θ moves the nose sideways by depth·sin θ and shortens the eye line by cos θ.
    let yaw = (nose_x / inter_eye / NOSE_DEPTH).atan();
    let pitch =
        ((nose_y / mouth_y - LEVEL_NOSE_HEIGHT) * mouth_y / (NOSE_DEPTH * inter_eye)).atan();
    HeadPose {
        yaw: yaw.to_degrees(),
        pitch: pitch.to_degrees(),
        roll: roll.to_degrees(),
        inter_eye,
    }
}

/// Grey (BT.601 luma) patch of the face's inner region, area-averaged.
fn face_patch(photo: &RgbImage, face: &Face) -> Vec<f32> {
    let [left_eye, right_eye, _, mouth_left, mouth_right] = face.landmarks;
    // From a little above the eyes to a little below the mouth, between the outer eye corners.
    let eyes = midpoint(left_eye, right_eye);
    let mouth = midpoint(mouth_left, mouth_right);
    let inter_eye = (right_eye.x - left_eye.x).hypot(right_eye.y - left_eye.y);
    let height = ((mouth.y - eyes.y).abs() * 1.8).max(inter_eye);
    let side = height.max(inter_eye * 1.6).max(4.0);
    let centre = Point {
        x: (eyes.x + mouth.x) / 2.0,
        y: (eyes.y + mouth.y) / 2.0,
    };
    let (x0, y0) = (centre.x - side / 2.0, centre.y - side / 2.0);
    let step = side / PATCH as f32;
    // Sub-samples per output pixel and axis: enough to average away aliasing when shrinking.
    let taps = (step.ceil() as usize).clamp(1, 4);
    let (width, height) = photo.dimensions();
    let mut patch = vec![0.0f32; PATCH * PATCH];
    for (i, value) in patch.iter_mut().enumerate() {
        let (u, v) = ((i % PATCH) as f32, (i / PATCH) as f32);
        let mut sum = 0.0;
        for ty in 0..taps {
            for tx in 0..taps {
                let x = x0 + (u + (tx as f32 + 0.5) / taps as f32) * step;
                let y = y0 + (v + (ty as f32 + 0.5) / taps as f32) * step;
                let (x, y) = (
                    (x.max(0.0) as u32).min(width - 1),
                    (y.max(0.0) as u32).min(height - 1),
                );
                let [r, g, b] = photo.get_pixel(x, y).0;
                sum += 0.299 * f32::from(r) + 0.587 * f32::from(g) + 0.114 * f32::from(b);
            }
        }
        *value = sum / (taps * taps) as f32;
    }
    patch
}

fn mean_and_sd(values: &[f32]) -> (f32, f32) {
    let n = values.len() as f32;
    let mean = values.iter().sum::<f32>() / n;
    let variance = values.iter().map(|v| (v - mean).powi(2)).sum::<f32>() / n;
    (mean, variance.sqrt())
}

/// Variance of the 4-neighbour Laplacian over the patch's variance: the share of the face's
/// contrast that is fine detail, independent of exposure.
fn sharpness(patch: &[f32], variance: f32) -> f32 {
    let mut laplacians = Vec::with_capacity((PATCH - 2) * (PATCH - 2));
    for y in 1..PATCH - 1 {
        for x in 1..PATCH - 1 {
            let at = |x: usize, y: usize| patch[y * PATCH + x];
            laplacians
                .push(at(x - 1, y) + at(x + 1, y) + at(x, y - 1) + at(x, y + 1) - 4.0 * at(x, y));
        }
    }
    let (_, sd) = mean_and_sd(&laplacians);
    if variance < 1e-3 {
        0.0
    } else {
        sd * sd / variance
    }
}

/// The quality of `photo` given the faces a detector found in it (largest first; the first is
/// judged).
pub fn assess(
    photo: &RgbImage,
    faces: &[Face],
    capture: Capture,
    limits: &QualityThresholds,
) -> QualityReport {
    let Some(face) = faces.first() else {
        return QualityReport {
            score: 0,
            components: QualityComponents::default(),
            failures: vec![QualityCode::NoFace],
            measurements: QualityMeasurements::default(),
        };
    };
    let (frame_w, frame_h) = (photo.width() as f32, photo.height() as f32);
    let HeadPose {
        yaw,
        pitch,
        roll,
        inter_eye,
    } = head_pose(face);
    let patch = face_patch(photo, face);
    let (luma, contrast) = mean_and_sd(&patch);
    let sharp = sharpness(&patch, contrast * contrast);
    let centre = Point {
        x: (face.bbox.x1 + face.bbox.x2) / 2.0,
        y: (face.bbox.y1 + face.bbox.y2) / 2.0,
    };
    let off_centre = ((centre.x / frame_w - 0.5).abs()).max((centre.y / frame_h - 0.5).abs());
    let face_width = face.bbox.width() / frame_w;

    let mut failures = Vec::new();
    let mut fail = |condition: bool, code| {
        if condition {
            failures.push(code);
        }
    };
    let selfie = capture == Capture::Selfie;
    // A document may show the holder twice (the ghost portrait); the largest face is judged.
    let several = selfie && faces.len() > 1;
    fail(several, QualityCode::MultipleFaces);
    fail(
        inter_eye < limits.min_inter_eye_px,
        QualityCode::FaceTooSmall,
    );
    fail(
        selfie && face_width > limits.max_face_width,
        QualityCode::FaceTooLarge,
    );
    fail(
        selfie && off_centre > limits.max_off_centre,
        QualityCode::NotCentred,
    );
    fail(
        yaw.abs() > limits.max_yaw_deg
            || pitch.abs() > limits.max_pitch_deg
            || roll.abs() > limits.max_roll_deg,
        QualityCode::Pose,
    );
    fail(luma < limits.min_face_luma, QualityCode::TooDark);
    fail(luma > limits.max_face_luma, QualityCode::TooBright);
    fail(
        contrast < limits.min_face_contrast,
        QualityCode::LowContrast,
    );
    fail(sharp < limits.min_sharpness, QualityCode::Blurry);

    // Each score is 100 with a comfortable margin inside its limit, 50 at the limit, 0 far beyond.
    let pose_excess = (yaw.abs() / limits.max_yaw_deg)
        .max(pitch.abs() / limits.max_pitch_deg)
        .max(roll.abs() / limits.max_roll_deg);
    let exposure = if luma < 128.0 {
        ramp(luma, limits.min_face_luma / 2.0, limits.min_face_luma * 1.5)
    } else {
        ramp(
            -luma,
            -(limits.max_face_luma + (255.0 - limits.max_face_luma) / 2.0),
            -(limits.max_face_luma - (255.0 - limits.max_face_luma) / 2.0),
        )
    };
    let components = QualityComponents {
        sharpness: ramp(
            sharp,
            limits.min_sharpness / 2.0,
            limits.min_sharpness * 1.5,
        ),
        exposure,
        contrast: ramp(
            contrast,
            limits.min_face_contrast / 2.0,
            limits.min_face_contrast * 1.5,
        ),
        face_size: ramp(
            inter_eye,
            limits.min_inter_eye_px / 2.0,
            limits.min_inter_eye_px * 1.5,
        ),
        pose: ramp(-pose_excess, -1.5, -0.5),
        centring: if selfie {
            ramp(
                -off_centre,
                -limits.max_off_centre * 1.5,
                -limits.max_off_centre / 2.0,
            )
        } else {
            100
        },
        single_face: if several { 0 } else { 100 },
    };
    let score = [
        components.sharpness,
        components.exposure,
        components.contrast,
        components.face_size,
        components.pose,
        components.centring,
        components.single_face,
    ]
    .into_iter()
    .min()
    .unwrap_or(0);
    QualityReport {
        score,
        components,
        failures,
        measurements: QualityMeasurements {
            faces: faces.len(),
            inter_eye_px: inter_eye,
            yaw_deg: yaw,
            pitch_deg: pitch,
            roll_deg: roll,
            face_luma: luma,
            face_contrast: contrast,
            sharpness: sharp,
            off_centre,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::face::BoundingBox;

    fn face(landmarks: [(f32, f32); 5]) -> Face {
        Face {
            bbox: BoundingBox {
                x1: 60.0,
                y1: 40.0,
                x2: 140.0,
                y2: 150.0,
            },
            score: 0.9,
            landmarks: landmarks.map(|(x, y)| Point { x, y }),
        }
    }

    fn frontal() -> Face {
        face([
            (80.0, 80.0),
            (120.0, 80.0),
            (100.0, 100.0),
            (85.0, 120.0),
            (115.0, 120.0),
        ])
    }

    #[test]
    fn a_frontal_face_has_no_pose() {
        let mut level = frontal();
        level.landmarks[2].y = 80.0 + 40.0 * LEVEL_NOSE_HEIGHT;
        let pose = head_pose(&level);
        assert!(pose.yaw.abs() < 0.1 && pose.pitch.abs() < 0.1 && pose.roll.abs() < 0.1);
        assert_eq!(pose.inter_eye, 40.0);
    }

    #[test]
    fn a_nose_off_to_the_side_is_yaw_and_tilted_eyes_are_roll() {
        let mut turned = frontal();
        turned.landmarks[2].x += 24.0; // 0.6 inter-eye: tan θ = 1
        let yaw = head_pose(&turned).yaw;
        assert!((yaw - 45.0).abs() < 0.5, "{yaw}");
        let mut tilted = frontal();
        tilted.landmarks[1].y += 40.0;
        let roll = head_pose(&tilted).roll;
        assert!((roll - 45.0).abs() < 0.5, "{roll}");
    }

    #[test]
    fn no_face_scores_zero() {
        let photo = RgbImage::new(200, 200);
        let report = assess(&photo, &[], Capture::Selfie, &QualityThresholds::default());
        assert_eq!(report.score, 0);
        assert_eq!(report.failures, vec![QualityCode::NoFace]);
    }

    #[test]
    fn a_flat_dark_face_is_dark_flat_and_blurry() {
        let photo = RgbImage::from_pixel(200, 200, image::Rgb([20, 20, 20]));
        let report = assess(
            &photo,
            &[frontal()],
            Capture::Selfie,
            &QualityThresholds::default(),
        );
        for code in [
            QualityCode::TooDark,
            QualityCode::LowContrast,
            QualityCode::Blurry,
        ] {
            assert!(report.failures.contains(&code), "{report:?}");
        }
        assert!(!report.failures.contains(&QualityCode::NotCentred));
        assert_eq!(report.components.exposure, 0);
        assert_eq!(report.score, 0);
    }

    #[test]
    fn a_second_face_and_an_off_centre_one_are_flagged_for_selfies_only_where_it_matters() {
        let photo = RgbImage::from_pixel(600, 200, image::Rgb([128, 128, 128]));
        let faces = [frontal(), frontal()];
        let selfie = assess(
            &photo,
            &faces,
            Capture::Selfie,
            &QualityThresholds::default(),
        );
        assert!(selfie.failures.contains(&QualityCode::MultipleFaces));
        assert!(selfie.failures.contains(&QualityCode::NotCentred));
        let document = assess(
            &photo,
            &faces,
            Capture::Document,
            &QualityThresholds::default(),
        );
        assert!(!document.failures.contains(&QualityCode::NotCentred));
        assert!(!document.failures.contains(&QualityCode::MultipleFaces));
        assert_eq!(document.components.centring, 100);
    }

    /// A development photo, its largest face, and copies blurred (σ = face width / 25) and
    /// darkened to a quarter.
    #[test]
    fn real_photos_pass_and_their_blurred_and_darkened_copies_fail() {
        let chain = crate::FaceChain::bundled(crate::FaceChain::CANVAS).unwrap();
        let limits = QualityThresholds::default();
        for name in ["img1.jpg", "img20.jpg", "img57.jpg"] {
            let path = format!(
                "{}/../../shared/fixtures/faces/{name}",
                env!("CARGO_MANIFEST_DIR")
            );
            let bytes =
                std::fs::read(&path).expect("the shared face fixtures are beside the checkout");
            let photo = crate::decode(&bytes, &crate::DecodeLimits::default())
                .unwrap()
                .image;
            let faces = chain.locate(&photo).unwrap().faces;
            let original = assess(&photo, &faces, Capture::Document, &limits);
            assert!(original.failures.is_empty(), "{name}: {original:?}");
            assert!(original.score >= 90, "{name}: {original:?}");

            let blurred = image::imageops::blur(&photo, faces[0].bbox.width() / 25.0);
            let report = assess(&blurred, &faces, Capture::Document, &limits);
            assert_eq!(report.failures, vec![QualityCode::Blurry], "{name}");
            assert!(report.components.sharpness < 20, "{name}: {report:?}");

            let mut dark = photo.clone();
            dark.pixels_mut()
                .for_each(|p| p.0 = p.0.map(|c| (f32::from(c) * 0.25) as u8));
            let report = assess(&dark, &faces, Capture::Document, &limits);
            assert!(
                report.failures.contains(&QualityCode::TooDark),
                "{name}: {report:?}"
            );
            assert!(!report.failures.contains(&QualityCode::Blurry), "{name}");
        }
    }
}
