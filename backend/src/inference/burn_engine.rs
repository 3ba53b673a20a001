//! MobileFaceNet on burn: model code generated from `models/onnx/mobilefacenet.onnx` at build time
//! (`build.rs`, burn-onnx), weights embedded in the binary. Runs on burn's `flex` CPU backend, or
//! with the `gpu` feature on wgpu (a GPU, or Mesa's software renderer where there is none).

use burn::tensor::{Device, Tensor, TensorData};
use idyntra_models::{ModelError, embedding};
use image::RgbImage;

#[allow(
    clippy::all,
    clippy::unwrap_used,
    unused,
    missing_debug_implementations,
    unreachable_pub
)]
mod generated {
    include!(concat!(env!("OUT_DIR"), "/burn/mobilefacenet.rs"));
}

const NAME: &str = "mobilefacenet";

/// Which burn device the models run on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BurnDevice {
    Cpu,
    #[cfg(feature = "gpu")]
    Wgpu,
}

impl BurnDevice {
    pub fn device(self) -> Device {
        match self {
            BurnDevice::Cpu => Device::flex(),
            #[cfg(feature = "gpu")]
            BurnDevice::Wgpu => Device::wgpu(burn::tensor::DeviceKind::DefaultDevice),
        }
    }

    /// `burn-flex` or `burn-wgpu`.
    pub fn engine(self) -> &'static str {
        match self {
            BurnDevice::Cpu => "burn-flex",
            #[cfg(feature = "gpu")]
            BurnDevice::Wgpu => "burn-wgpu",
        }
    }
}

pub struct BurnEmbedder {
    model: generated::Model,
    device: Device,
    kind: BurnDevice,
}

impl std::fmt::Debug for BurnEmbedder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BurnEmbedder")
            .field("device", &self.kind)
            .finish_non_exhaustive()
    }
}

impl BurnEmbedder {
    pub fn load(kind: BurnDevice) -> Self {
        let device = kind.device();
        Self {
            model: generated::Model::from_embedded(&device),
            device,
            kind,
        }
    }

    /// `burn-flex` or `burn-wgpu`.
    pub fn engine(&self) -> &'static str {
        self.kind.engine()
    }

    /// The `[N × 192]` embeddings of an `[N, 3, 112, 112]` input of `count` crops.
    pub fn raw_outputs(&self, input: Vec<f32>, count: usize) -> Result<Vec<f32>, ModelError> {
        let side = embedding::CROP_SIZE as usize;
        let shape = [count, 3, side, side];
        if count == 0 || input.len() != shape.iter().product::<usize>() {
            return Err(error("the input must be N × 3 × 112 × 112, N ≥ 1"));
        }
        let input = Tensor::<4>::from_data(TensorData::new(input, shape), &self.device);
        self.model
            .forward(input)
            .into_data()
            .try_into_vec::<f32>()
            .map_err(|e| error(&format!("{e:?}")))
    }

    /// The embeddings of aligned crops, in order, from one run of the model (the file's batch
    /// is dynamic).
    pub fn embed(&self, crops: &[&RgbImage]) -> Result<Vec<Vec<f32>>, ModelError> {
        if crops.is_empty() {
            return Ok(Vec::new());
        }
        if !embedding::crops_fit(crops) {
            return Err(error("crops must be 112×112"));
        }
        let outputs = self.raw_outputs(embedding::input_tensor(crops), crops.len())?;
        embedding::split(&outputs, crops.len()).ok_or_else(|| error("unexpected output size"))
    }
}

fn error(message: &str) -> ModelError {
    ModelError {
        model: NAME,
        message: message.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use idyntra_models::FaceChain;

    use super::*;
    use crate::inference::fixture_crops as crops;

    /// burn and tract run the same ONNX file: their embeddings must agree.
    fn agrees_with_tract(device: BurnDevice) {
        let chain = FaceChain::bundled(FaceChain::CANVAS).unwrap();
        let burn = BurnEmbedder::load(device);
        let crops = crops();
        for pair in [(&crops[0], &crops[1]), (&crops[1], &crops[2])] {
            let ours = burn.embed(&[pair.0, pair.1]).unwrap();
            let theirs = chain.embed(&[pair.0, pair.1]).unwrap();
            for (a, b) in ours.iter().zip(&theirs) {
                let agreement = embedding::cosine(a, b);
                assert!(agreement >= 0.9999, "{}: cosine {agreement}", burn.engine());
            }
            // And the scores they imply.
            let score_gap = (embedding::cosine(&ours[0], &ours[1])
                - embedding::cosine(&theirs[0], &theirs[1]))
            .abs();
            assert!(score_gap < 1e-3, "{}: score gap {score_gap}", burn.engine());
        }
    }

    /// One run of many crops gives each crop the embedding it gets alone.
    fn a_batch_gives_each_crop_its_own_embedding(device: BurnDevice) {
        let burn = BurnEmbedder::load(device);
        let crops = crops();
        let batch: Vec<&RgbImage> = crops.iter().cycle().take(7).collect();
        let together = burn.embed(&batch).unwrap();
        assert_eq!(together.len(), 7);
        for (crop, embedding) in batch.iter().zip(&together) {
            let alone = burn.embed(&[crop]).unwrap();
            let agreement = embedding::cosine(&alone[0], embedding);
            assert!(agreement >= 0.9999, "{}: cosine {agreement}", burn.engine());
        }
        assert!(burn.embed(&[]).unwrap().is_empty());
    }

    #[test]
    fn burn_flex_batches_dynamically() {
        a_batch_gives_each_crop_its_own_embedding(BurnDevice::Cpu);
    }

    #[cfg(feature = "gpu")]
    #[test]
    fn burn_wgpu_batches_dynamically() {
        a_batch_gives_each_crop_its_own_embedding(BurnDevice::Wgpu);
    }

    #[test]
    fn burn_flex_agrees_with_tract() {
        agrees_with_tract(BurnDevice::Cpu);
    }

    #[cfg(feature = "gpu")]
    #[test]
    fn burn_wgpu_agrees_with_tract() {
        agrees_with_tract(BurnDevice::Wgpu);
    }
}
