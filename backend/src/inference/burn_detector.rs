//! CenterFace on burn: model code generated from `models/onnx/centerface.onnx` at build time
//! (`build.rs`, burn-onnx), weights embedded in the binary. The input tensor and the decoding of
//! the four output maps are the models crate's, shared with tract.

use burn::tensor::{Device, Tensor, TensorData};
use idyntra_models::centerface::{self, OutputMaps};
use idyntra_models::{Face, ModelError};
use image::RgbImage;

use super::burn_engine::BurnDevice;

#[allow(
    clippy::all,
    clippy::unwrap_used,
    unused,
    missing_debug_implementations,
    unreachable_pub
)]
mod generated {
    include!(concat!(env!("OUT_DIR"), "/burn/centerface.rs"));
}

const NAME: &str = "centerface";

pub struct BurnDetector {
    model: generated::Model,
    device: Device,
    canvas: usize,
}

impl std::fmt::Debug for BurnDetector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BurnDetector")
            .field("canvas", &self.canvas)
            .finish_non_exhaustive()
    }
}

impl BurnDetector {
    /// CenterFace for a `canvas`×`canvas` input (a multiple of 32) on `kind`.
    pub fn load(kind: BurnDevice, canvas: usize) -> Result<Self, ModelError> {
        if canvas == 0 || !canvas.is_multiple_of(32) {
            return Err(error("the canvas must be a multiple of 32"));
        }
        let device = kind.device();
        Ok(Self {
            model: generated::Model::from_embedded(&device),
            device,
            canvas,
        })
    }

    /// The four output maps (heat map, scale, offset, landmarks) for a `[1, 3, canvas, canvas]`
    /// input, flattened: the numbers tract gives for the same input.
    pub fn raw_outputs(&self, input: Vec<f32>) -> Result<[Vec<f32>; 4], ModelError> {
        let shape = [1, 3, self.canvas, self.canvas];
        if input.len() != shape.iter().product::<usize>() {
            return Err(error("the input must be 1 × 3 × canvas × canvas"));
        }
        let input = Tensor::<4>::from_data(TensorData::new(input, shape), &self.device);
        let (heatmap, scale, offset, landmarks) = self.model.forward(input);
        let flat = |map: Tensor<4>| {
            map.into_data()
                .try_into_vec::<f32>()
                .map_err(|e| error(&format!("{e:?}")))
        };
        Ok([
            flat(heatmap)?,
            flat(scale)?,
            flat(offset)?,
            flat(landmarks)?,
        ])
    }

    /// Faces in `photo` scoring above `threshold`, best first, in photo pixels.
    pub fn detect(&self, photo: &RgbImage, threshold: f32) -> Result<Vec<Face>, ModelError> {
        let (input, placement) = centerface::input_tensor(photo, self.canvas);
        let [heatmap, scale, offset, landmarks] = self.raw_outputs(input)?;
        Ok(centerface::decode_faces(
            OutputMaps {
                heatmap: &heatmap,
                scale: &scale,
                offset: &offset,
                landmarks: &landmarks,
            },
            placement,
            threshold,
        ))
    }
}

fn error(message: &str) -> ModelError {
    ModelError::new(NAME, message)
}

#[cfg(test)]
mod tests {
    use idyntra_models::{CenterFaceDetector, FaceChain, bundled};

    use super::*;

    fn photo(name: &str) -> RgbImage {
        let faces = concat!(env!("CARGO_MANIFEST_DIR"), "/../../shared/fixtures/faces");
        image::open(format!("{faces}/{name}")).unwrap().to_rgb8()
    }

    /// burn and tract run the same ONNX file: their output maps and the faces they imply must
    /// agree.
    fn agrees_with_tract(kind: BurnDevice) {
        let canvas = FaceChain::CANVAS;
        let tract = CenterFaceDetector::load(bundled::CENTERFACE.onnx, canvas).unwrap();
        let burn = BurnDetector::load(kind, canvas).unwrap();
        for name in ["img1.jpg", "img2.jpg", "img13.jpg"] {
            let photo = photo(name);
            let (input, _) = centerface::input_tensor(&photo, canvas);
            let ours = burn.raw_outputs(input.clone()).unwrap();
            let theirs = tract.raw_outputs(&input).unwrap();
            for (map, (a, b)) in ours.iter().zip(&theirs).enumerate() {
                assert_eq!(a.len(), b.len(), "{name}: map {map}");
                let gap = a
                    .iter()
                    .zip(b)
                    .map(|(x, y)| (x - y).abs())
                    .fold(0.0, f32::max);
                assert!(gap < 1e-3, "{kind:?} {name}: map {map} differs by {gap}");
            }
            let ours = burn.detect(&photo, 0.5).unwrap();
            let theirs = tract.detect(&photo, 0.5).unwrap();
            assert_eq!(ours.len(), theirs.len(), "{name}");
            assert!(!ours.is_empty(), "{name}: no face");
            for (a, b) in ours.iter().zip(&theirs) {
                for (p, q) in a.landmarks.iter().zip(&b.landmarks) {
                    assert!((p.x - q.x).abs() < 0.5 && (p.y - q.y).abs() < 0.5, "{name}");
                }
            }
        }
    }

    #[test]
    fn burn_flex_detects_as_tract_does() {
        agrees_with_tract(BurnDevice::Cpu);
    }

    #[cfg(feature = "gpu")]
    #[test]
    fn burn_wgpu_detects_as_tract_does() {
        agrees_with_tract(BurnDevice::Wgpu);
    }

    #[test]
    fn a_canvas_that_is_not_a_multiple_of_32_is_refused() {
        assert!(BurnDetector::load(BurnDevice::Cpu, 100).is_err());
    }
}
