//! Running the models with tract: each model is parsed, given its concrete input shape, optimised
//! and made runnable once, then shared; a run only fills the input and reads the outputs.

use std::io::Cursor;
use std::sync::Arc;

use image::RgbImage;
use tract_onnx::prelude::*;

use crate::centerface::{self, OutputMaps};
use crate::face::Face;

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

    #[test]
    fn the_canvas_must_be_a_multiple_of_32() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/onnx/centerface.onnx");
        assert!(CenterFaceDetector::load(&std::fs::read(path).unwrap(), 100).is_err());
    }
}
