//! Face models and the engine-independent vision code around them.
//!
//! This crate will hold the pinned model files, decoding with limits, face detection post-processing,
//! five-point alignment, quality metrics, liveness and embedding pre/post-processing and a tract runner.
//! It builds for native targets and for `wasm32-unknown-unknown`. It has no checks yet: the backend
//! does not claim any model result until they land here.
#![forbid(unsafe_code)]
