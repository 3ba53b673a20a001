//! The face chain on tract: find the faces of a photo, align the main one, embed it, and compare
//! two embeddings against a calibrated threshold.

use idyntra_types::FaceMatchResult;
use image::RgbImage;

use idyntra_types::{FrameTiming, QualityReport};

use crate::align::{ARCFACE_112, align};
use crate::bundled;
use crate::embedding;
use crate::face::Face;
use crate::liveness::{self, FrameObservation};
use crate::quality::{self, Capture, QualityThresholds};
use crate::tract_runner::{
    BlazeFaceDetector, CenterFaceDetector, MobileFaceNetEmbedder, ModelError,
};

/// The faces of a photo, largest first, and the aligned crop of the largest.
#[derive(Debug, Clone)]
pub struct LocatedFaces {
    pub faces: Vec<Face>,
    /// `None` when there is no face or its landmarks are degenerate.
    pub crop: Option<RgbImage>,
}

impl LocatedFaces {
    pub fn main_face(&self) -> Option<&Face> {
        self.faces.first()
    }
}

/// The face-match threshold and the false-match rate it was calibrated for.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MatchPolicy {
    pub threshold: f32,
    pub calibrated_fmr: f64,
}

impl MatchPolicy {
    /// MobileFaceNet on ArcFace-aligned crops: a normal fit of 395 impostor scores puts FMR
    /// 0.1 % at 0.466 (`docs/ACCURACY.md`); every genuine score seen was above 0.64.
    pub const MOBILEFACENET: Self = Self {
        threshold: 0.47,
        calibrated_fmr: 0.001,
    };

    pub fn judge(&self, score: f32) -> FaceMatchResult {
        FaceMatchResult {
            score,
            threshold: self.threshold,
            passed: score >= self.threshold,
            calibrated_fmr: self.calibrated_fmr,
        }
    }
}

/// CenterFace, five-point alignment and MobileFaceNet, loaded once and shared.
#[derive(Debug, Clone)]
pub struct FaceChain {
    detector: CenterFaceDetector,
    embedder: MobileFaceNetEmbedder,
    /// Minimum detector confidence of a face.
    pub detection_threshold: f32,
}

impl FaceChain {
    /// Detector canvas for photos: faces down to about 1/20 of the photo's longer side are found.
    pub const CANVAS: usize = 320;

    /// The bundled models, detecting on a `canvas`×`canvas` input.
    pub fn bundled(canvas: usize) -> Result<Self, ModelError> {
        Ok(Self {
            detector: CenterFaceDetector::load(bundled::CENTERFACE.onnx, canvas)?,
            embedder: MobileFaceNetEmbedder::load(bundled::MOBILEFACENET.onnx)?,
            detection_threshold: 0.5,
        })
    }

    /// The models behind every score of this chain.
    pub fn models(&self) -> [&'static bundled::BundledModel; 2] {
        [&bundled::CENTERFACE, &bundled::MOBILEFACENET]
    }

    /// The faces of `photo`, largest first, with the aligned crop of the largest.
    pub fn locate(&self, photo: &RgbImage) -> Result<LocatedFaces, ModelError> {
        let faces = self.detector.detect(photo, self.detection_threshold)?;
        Ok(Self::located(photo, faces))
    }

    /// `faces` of `photo` found by any engine running CenterFace, largest first, with the aligned
    /// crop of the largest.
    pub fn located(photo: &RgbImage, mut faces: Vec<Face>) -> LocatedFaces {
        faces.sort_by(|a, b| b.bbox.area().total_cmp(&a.bbox.area()));
        let crop = faces
            .first()
            .and_then(|face| align(photo, &face.landmarks, &ARCFACE_112, embedding::CROP_SIZE));
        LocatedFaces { faces, crop }
    }

    /// One embedding per aligned crop, in order.
    pub fn embed(&self, crops: &[&RgbImage]) -> Result<Vec<Vec<f32>>, ModelError> {
        self.embedder.embed(crops)
    }
}

impl FaceChain {
    /// Observes every frame of an answer to a liveness challenge: faces in the frame and in its
    /// mirror image, and, for the middle frame of every step, the similarity of its face with the
    /// first frame's (the capture).
    pub fn observe_answer(
        &self,
        frames: &[(FrameTiming, RgbImage)],
    ) -> Result<Vec<FrameObservation>, ModelError> {
        let mut observations = Vec::with_capacity(frames.len());
        let mut crops = Vec::with_capacity(frames.len());
        for (timing, frame) in frames {
            let located = self.locate(frame)?;
            let mirrored = self.locate(&image::imageops::flip_horizontal(frame))?.faces;
            observations.push(liveness::observe(frame, &located.faces, &mirrored, *timing));
            crops.push(located.crop);
        }
        // The capture, then the middle frame of each step.
        let mut compared: Vec<usize> = Vec::new();
        let mut step_start = 0;
        for i in 1..=frames.len() {
            if i == frames.len() || frames[i].0.step != frames[step_start].0.step {
                compared.push((step_start + i - 1) / 2);
                step_start = i;
            }
        }
        let Some(Some(capture)) = crops.first() else {
            return Ok(observations);
        };
        let compared: Vec<usize> = compared
            .into_iter()
            .filter(|&i| crops[i].is_some())
            .collect();
        let mut batch: Vec<&RgbImage> = vec![capture];
        batch.extend(compared.iter().filter_map(|&i| crops[i].as_ref()));
        let embeddings = self.embed(&batch)?;
        for (k, &i) in compared.iter().enumerate() {
            observations[i].identity = Some(embedding::cosine(&embeddings[0], &embeddings[k + 1]));
        }
        Ok(observations)
    }
}

/// Live feedback on camera frames: BlazeFace, then the quality report of the largest face.
#[derive(Debug, Clone)]
pub struct FrameQuality {
    detector: BlazeFaceDetector,
    pub limits: QualityThresholds,
    /// Minimum detector confidence of a face.
    pub detection_threshold: f32,
}

impl FrameQuality {
    pub fn bundled() -> Result<Self, ModelError> {
        Ok(Self {
            detector: BlazeFaceDetector::load(bundled::BLAZEFACE_SHORT_RANGE.onnx)?,
            limits: QualityThresholds::default(),
            detection_threshold: 0.5,
        })
    }

    /// The quality report of a selfie frame.
    pub fn assess(&self, frame: &RgbImage) -> Result<QualityReport, ModelError> {
        self.assess_as(frame, Capture::Selfie)
    }

    /// The quality report of a photo taken for `capture`.
    pub fn assess_as(
        &self,
        frame: &RgbImage,
        capture: Capture,
    ) -> Result<QualityReport, ModelError> {
        let faces = self.faces(frame)?;
        Ok(quality::assess(frame, &faces, capture, &self.limits))
    }

    /// The faces of `frame`, largest first.
    pub fn faces(&self, frame: &RgbImage) -> Result<Vec<Face>, ModelError> {
        let mut faces = self.detector.detect(frame, self.detection_threshold)?;
        faces.sort_by(|a, b| b.bbox.area().total_cmp(&a.bbox.area()));
        Ok(faces)
    }

    /// Observes a frame of an answer to a liveness challenge, as [`FaceChain::observe_answer`]
    /// does but with BlazeFace and without the identity comparison.
    pub fn observe(
        &self,
        frame: &RgbImage,
        timing: FrameTiming,
    ) -> Result<FrameObservation, ModelError> {
        let faces = self.faces(frame)?;
        self.observe_faces(frame, &faces, timing, true)
    }

    /// [`FrameQuality::observe`] for a frame whose faces (largest first) are already found. The
    /// mirror image only steadies the yaw, so it is searched only when `read_yaw` and there is a
    /// face: the challenge reads the yaw of neutral and turn frames, and judges flash frames on
    /// the face's colour alone. Without it a frame costs one detector run instead of two, and its
    /// yaw is left out rather than read from the unsteadied landmarks.
    pub fn observe_faces(
        &self,
        frame: &RgbImage,
        faces: &[Face],
        timing: FrameTiming,
        read_yaw: bool,
    ) -> Result<FrameObservation, ModelError> {
        if !read_yaw || faces.is_empty() {
            let mut observation = liveness::observe(frame, faces, &[], timing);
            observation.yaw_deg = None;
            return Ok(observation);
        }
        let mirrored = self.faces(&image::imageops::flip_horizontal(frame))?;
        Ok(liveness::observe(frame, faces, &mirrored, timing))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_policy_passes_scores_at_the_threshold() {
        let policy = MatchPolicy {
            threshold: 0.5,
            calibrated_fmr: 0.01,
        };
        assert!(policy.judge(0.5).passed);
        assert!(!policy.judge(0.49).passed);
    }

    fn fixture_frame(name: &str) -> RgbImage {
        let path = format!(
            "{}/../../shared/fixtures/faces/{name}",
            env!("CARGO_MANIFEST_DIR")
        );
        let bytes = std::fs::read(&path).expect("the shared face fixtures are beside the checkout");
        let photo = crate::decode(&bytes, &crate::DecodeLimits::default())
            .unwrap()
            .image;
        // A camera frame: the longer side 640 pixels.
        let scale = 640.0 / photo.width().max(photo.height()) as f32;
        let (w, h) = (photo.width() as f32 * scale, photo.height() as f32 * scale);
        image::imageops::resize(
            &photo,
            w as u32,
            h as u32,
            image::imageops::FilterType::Triangle,
        )
    }

    #[test]
    fn blazeface_and_centerface_agree_on_the_eyes() {
        let chain = FaceChain::bundled(FaceChain::CANVAS).unwrap();
        let blazeface = BlazeFaceDetector::load(bundled::BLAZEFACE_SHORT_RANGE.onnx).unwrap();
        for name in ["img1.jpg", "img13.jpg", "img20.jpg"] {
            let frame = fixture_frame(name);
            let fast = blazeface.detect(&frame, 0.5).unwrap();
            let reference = chain.locate(&frame).unwrap().faces;
            assert_eq!(fast.len(), 1, "{name}: {fast:?}");
            let [a_left, a_right, ..] = fast[0].landmarks;
            let [b_left, b_right, ..] = reference[0].landmarks;
            let inter_eye = (b_right.x - b_left.x).hypot(b_right.y - b_left.y);
            for (a, b) in [(a_left, b_left), (a_right, b_right)] {
                let gap = (a.x - b.x).hypot(a.y - b.y);
                // The two models were trained on differently placed eye points.
                assert!(gap < 0.3 * inter_eye, "{name}: {a:?} vs {b:?}");
            }
        }
    }

    #[test]
    fn a_good_frame_passes_and_a_blank_one_has_no_face() {
        let checker = FrameQuality::bundled().unwrap();
        let report = checker.assess(&fixture_frame("img1.jpg")).unwrap();
        assert!(report.failures.is_empty(), "{report:?}");
        let blank = RgbImage::from_pixel(640, 480, image::Rgb([90, 90, 90]));
        let report = checker.assess(&blank).unwrap();
        assert_eq!(report.failures, vec![idyntra_types::QualityCode::NoFace]);
    }

    #[test]
    fn a_frame_observed_without_its_yaw_keeps_its_faces_and_colour() {
        let checker = FrameQuality::bundled().unwrap();
        let frame = fixture_frame("img13.jpg");
        let timing = FrameTiming { at_ms: 0, step: 0 };
        let full = checker.observe(&frame, timing).unwrap();
        let faces = checker.faces(&frame).unwrap();
        let colour_only = checker
            .observe_faces(&frame, &faces, timing, false)
            .unwrap();
        assert_eq!(colour_only.faces, 1);
        assert_eq!(colour_only.faces, full.faces);
        assert_eq!(colour_only.face_rgb, full.face_rgb);
        assert_eq!(colour_only.yaw_deg, None);
        assert!(full.yaw_deg.is_some());
        // With the faces given, the yaw is the same as when the frame is searched again.
        let with_yaw = checker.observe_faces(&frame, &faces, timing, true).unwrap();
        assert_eq!(with_yaw, full);
    }

    #[test]
    fn an_odd_number_of_crops_gets_one_embedding_each() {
        let chain = FaceChain::bundled(FaceChain::CANVAS).unwrap();
        let grey = RgbImage::from_pixel(112, 112, image::Rgb([120, 120, 120]));
        let dark = RgbImage::from_pixel(112, 112, image::Rgb([20, 20, 20]));
        let out = chain.embed(&[&grey, &dark, &grey]).unwrap();
        assert_eq!(out.len(), 3);
        assert!((embedding::cosine(&out[0], &out[2]) - 1.0).abs() < 1e-5);
        assert!(embedding::cosine(&out[0], &out[1]) < 0.999);
    }
}
