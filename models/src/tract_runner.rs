//! Running the models with tract: each model is parsed, given its concrete input shape, optimised
//! and made runnable once, then shared; a run only fills the input and reads the outputs.

use std::io::Cursor;
use std::sync::Arc;

use image::RgbImage;
use tract_onnx::prelude::*;

use crate::blazeface;
use crate::centerface::{self, OutputMaps};
use crate::embedding;
use crate::face::Face;
use crate::face::Point;

/// Why a model could not be loaded or run.
#[derive(Debug, thiserror::Error)]
#[error("model {model}: {message}")]
pub struct ModelError {
    pub model: &'static str,
    pub message: String,
}

impl ModelError {
    fn new(model: &'static str, error: impl std::fmt::Display) -> Self {
        Self {
            model,
            message: format!("{error:#}"),
        }
    }
}

/// CenterFace on tract, for one square canvas size.
#[derive(Debug, Clone)]
pub struct CenterFaceDetector {
    plan: Arc<TypedRunnableModel>,
    canvas: usize,
}

impl CenterFaceDetector {
    const NAME: &'static str = "centerface";

    /// Loads the ONNX bytes for a `canvas`×`canvas` input (`canvas` a multiple of 32).
    pub fn load(onnx: &[u8], canvas: usize) -> Result<Self, ModelError> {
        if canvas == 0 || !canvas.is_multiple_of(32) {
            return Err(ModelError::new(
                Self::NAME,
                "the canvas must be a multiple of 32",
            ));
        }
        let error = |e: TractError| ModelError::new(Self::NAME, e);
        let plan = tract_onnx::onnx()
            .model_for_read(&mut Cursor::new(onnx))
            .map_err(error)?
            .with_input_fact(0, f32::fact([1, 3, canvas, canvas]).into())
            .map_err(error)?
            .into_optimized()
            .map_err(error)?
            .into_runnable()
            .map_err(error)?;
        Ok(Self { plan, canvas })
    }

    /// Faces in `photo` scoring above `threshold`, best first, in photo pixels.
    pub fn detect(&self, photo: &RgbImage, threshold: f32) -> Result<Vec<Face>, ModelError> {
        let error = |e: TractError| ModelError::new(Self::NAME, e);
        let (input, placement) = centerface::input_tensor(photo, self.canvas);
        let input = Tensor::from_shape(&[1, 3, self.canvas, self.canvas], &input).map_err(error)?;
        let outputs = self.plan.run(tvec!(input.into())).map_err(error)?;
        if outputs.len() != 4 {
            return Err(ModelError::new(Self::NAME, "expected four outputs"));
        }
        let mut maps: Vec<Vec<f32>> = Vec::with_capacity(4);
        for output in &outputs {
            let view = output.to_plain_array_view::<f32>().map_err(error)?;
            maps.push(view.iter().copied().collect());
        }
        Ok(centerface::decode_faces(
            OutputMaps {
                heatmap: &maps[0],
                scale: &maps[1],
                offset: &maps[2],
                landmarks: &maps[3],
            },
            placement,
            threshold,
        ))
    }
}

/// BlazeFace short range on tract: the fast detector for live frames.
#[derive(Debug, Clone)]
pub struct BlazeFaceDetector {
    plan: Arc<TypedRunnableModel>,
    anchors: Arc<Vec<Point>>,
}

impl BlazeFaceDetector {
    const NAME: &'static str = "blazeface_short_range";

    pub fn load(onnx: &[u8]) -> Result<Self, ModelError> {
        let error = |e: TractError| ModelError::new(Self::NAME, e);
        let side = blazeface::INPUT;
        let plan = tract_onnx::onnx()
            .model_for_read(&mut Cursor::new(onnx))
            .map_err(error)?
            .with_input_fact(0, f32::fact([1, 3, side, side]).into())
            .map_err(error)?
            .into_optimized()
            .map_err(error)?
            .into_runnable()
            .map_err(error)?;
        Ok(Self {
            plan,
            anchors: Arc::new(blazeface::anchors()),
        })
    }

    /// Faces in `frame` scoring above `threshold`, best first, in frame pixels.
    pub fn detect(&self, frame: &RgbImage, threshold: f32) -> Result<Vec<Face>, ModelError> {
        let error = |e: TractError| ModelError::new(Self::NAME, e);
        let side = blazeface::INPUT;
        let (input, scale) = blazeface::input_tensor(frame);
        let input = Tensor::from_shape(&[1, 3, side, side], &input).map_err(error)?;
        let outputs = self.plan.run(tvec!(input.into())).map_err(error)?;
        let mut regressors = None;
        let mut logits = None;
        // Told apart by shape: `[1, 896, 16]` regressors, `[1, 896, 1]` logits.
        for output in &outputs {
            let view = output.to_plain_array_view::<f32>().map_err(error)?;
            let values: Vec<f32> = view.iter().copied().collect();
            match values.len() {
                n if n == blazeface::ANCHORS * blazeface::VALUES => regressors = Some(values),
                n if n == blazeface::ANCHORS => logits = Some(values),
                _ => {}
            }
        }
        let (Some(regressors), Some(logits)) = (regressors, logits) else {
            return Err(ModelError::new(Self::NAME, "unexpected outputs"));
        };
        Ok(blazeface::decode_faces(
            &regressors,
            &logits,
            &self.anchors,
            scale,
            threshold,
        ))
    }
}

/// MobileFaceNet on tract: one embedding per aligned 112×112 crop, two crops per run.
#[derive(Debug, Clone)]
pub struct MobileFaceNetEmbedder {
    plan: Arc<TypedRunnableModel>,
}

impl MobileFaceNetEmbedder {
    const NAME: &'static str = "mobilefacenet";

    pub fn load(onnx: &[u8]) -> Result<Self, ModelError> {
        let error = |e: TractError| ModelError::new(Self::NAME, e);
        let side = embedding::CROP_SIZE as usize;
        let plan = tract_onnx::onnx()
            .model_for_read(&mut Cursor::new(onnx))
            .map_err(error)?
            .with_input_fact(0, f32::fact([embedding::BATCH, 3, side, side]).into())
            .map_err(error)?
            .into_optimized()
            .map_err(error)?
            .into_runnable()
            .map_err(error)?;
        Ok(Self { plan })
    }

    /// The embeddings of two aligned crops, in order.
    pub fn embed_pair(
        &self,
        first: &RgbImage,
        second: &RgbImage,
    ) -> Result<[Vec<f32>; 2], ModelError> {
        let error = |e: TractError| ModelError::new(Self::NAME, e);
        let side = embedding::CROP_SIZE as usize;
        for crop in [first, second] {
            if crop.dimensions() != (embedding::CROP_SIZE, embedding::CROP_SIZE) {
                return Err(ModelError::new(Self::NAME, "crops must be 112×112"));
            }
        }
        let input = embedding::input_tensor([first, second]);
        let input =
            Tensor::from_shape(&[embedding::BATCH, 3, side, side], &input).map_err(error)?;
        let outputs = self.plan.run(tvec!(input.into())).map_err(error)?;
        let values: Vec<f32> = outputs[0]
            .to_plain_array_view::<f32>()
            .map_err(error)?
            .iter()
            .copied()
            .collect();
        if values.len() != embedding::BATCH * embedding::DIMENSION {
            return Err(ModelError::new(Self::NAME, "unexpected output size"));
        }
        let (a, b) = values.split_at(embedding::DIMENSION);
        Ok([a.to_vec(), b.to_vec()])
    }
}

#[cfg(test)]
mod tests {
    use image::Rgb;

    use super::*;
    use crate::decode::{DecodeLimits, decode};

    fn fixture(name: &str) -> RgbImage {
        let path = format!(
            "{}/../../shared/fixtures/faces/{name}",
            env!("CARGO_MANIFEST_DIR")
        );
        let bytes = std::fs::read(&path).expect("the shared face fixtures are beside the checkout");
        decode(&bytes, &DecodeLimits::default()).unwrap().image
    }

    fn detector() -> CenterFaceDetector {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/onnx/centerface.onnx");
        CenterFaceDetector::load(&std::fs::read(path).unwrap(), 320).unwrap()
    }

    #[test]
    fn finds_the_one_face_with_plausible_landmarks() {
        let detector = detector();
        for name in [
            "img1.jpg",
            "img10.jpg",
            "img13.jpg",
            "img20.jpg",
            "img38.jpg",
        ] {
            let photo = fixture(name);
            let faces = detector.detect(&photo, 0.5).unwrap();
            assert_eq!(faces.len(), 1, "{name}: {faces:?}");
            let face = &faces[0];
            let [left_eye, right_eye, nose, mouth_left, mouth_right] = face.landmarks;
            assert!(face.bbox.width() > 50.0, "{name}: {face:?}");
            for point in face.landmarks {
                assert!(
                    face.bbox.contains(point),
                    "{name}: {point:?} outside {:?}",
                    face.bbox
                );
            }
            // An upright face: eyes above the nose above the mouth, left left of right.
            assert!(
                left_eye.x < right_eye.x && mouth_left.x < mouth_right.x,
                "{name}"
            );
            assert!(left_eye.y.max(right_eye.y) < nose.y, "{name}");
            assert!(nose.y < mouth_left.y.min(mouth_right.y), "{name}");
        }
    }

    #[test]
    fn an_empty_picture_has_no_face() {
        let blank = RgbImage::from_pixel(400, 300, Rgb([128, 128, 128]));
        assert!(detector().detect(&blank, 0.5).unwrap().is_empty());
    }

    /// Detects the face of a fixture photo and aligns it to the ArcFace template.
    fn aligned(detector: &CenterFaceDetector, name: &str) -> RgbImage {
        let photo = fixture(name);
        let faces = detector.detect(&photo, 0.5).unwrap();
        crate::align::align(&photo, &faces[0].landmarks, &crate::align::ARCFACE_112, 112).unwrap()
    }

    #[test]
    fn the_same_person_scores_above_different_people() {
        let detector = detector();
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/onnx/mobilefacenet.onnx");
        let embedder = MobileFaceNetEmbedder::load(&std::fs::read(path).unwrap()).unwrap();
        let score = |a: &str, b: &str| {
            let [x, y] = embedder
                .embed_pair(&aligned(&detector, a), &aligned(&detector, b))
                .unwrap();
            embedding::cosine(&x, &y)
        };
        // person01: img1, img10; person03: img13, img14; person07: img38, img39.
        let same = [
            score("img1.jpg", "img10.jpg"),
            score("img13.jpg", "img14.jpg"),
            score("img38.jpg", "img39.jpg"),
        ];
        let different = [
            score("img1.jpg", "img13.jpg"),
            score("img10.jpg", "img38.jpg"),
            score("img14.jpg", "img39.jpg"),
        ];
        let lowest_same = same.iter().copied().fold(f32::INFINITY, f32::min);
        let highest_different = different.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        assert!(
            lowest_same > highest_different,
            "same {same:?}, different {different:?}"
        );
        // Two crops of the same photo are one face.
        assert!(score("img1.jpg", "img1.jpg") > 0.99);
    }

    #[test]
    fn the_canvas_must_be_a_multiple_of_32() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/onnx/centerface.onnx");
        assert!(CenterFaceDetector::load(&std::fs::read(path).unwrap(), 100).is_err());
    }
}
