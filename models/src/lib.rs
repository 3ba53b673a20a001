//! Face models and the engine-independent vision code around them.
//!
//! The pinned model files are in `models/onnx/` (model cards in its README, reproduced from the
//! registries by `models/tools/fetch-models.sh`). Decoding with limits, face detection
//! post-processing, five-point alignment, quality metrics, liveness and embedding pre/post-processing
//! and a tract runner live in this crate, for native targets and `wasm32-unknown-unknown`.
#![forbid(unsafe_code)]

mod channel_prelu;
pub mod decode;
mod dense_pools;

pub use decode::{DecodeError, DecodeLimits, DecodedImage, decode};
pub mod align;
pub mod blazeface;
pub mod bundled;
pub mod canvas;
pub mod centerface;
pub mod chain;
pub mod embedding;
pub mod evaluation;
pub mod face;
pub mod liveness;
pub mod liveness_samples;
pub mod manipulation;
pub mod pad;
pub mod quality;
#[cfg(test)]
mod test_graphs;
pub mod tract_runner;

pub use chain::{FaceChain, FrameQuality, LocatedFaces, MatchPolicy};
pub use face::{BoundingBox, Face, Point};
pub use tract_runner::{
    AntiSpoofingModel, BlazeFaceDetector, CenterFaceDetector, MobileFaceNetEmbedder, ModelError,
};
