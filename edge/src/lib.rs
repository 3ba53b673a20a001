//! The edge attestation service: it checks what the browser captured, close to the user, and signs
//! what it saw so the backend can trust it without seeing the capture happen.
//!
//! One library, several hosts: the core here has no platform code; the `native` module serves it
//! over HTTP (embedded by the backend, or alone with `idyntra edge serve`), the `browser` module
//! exports the live feedback to the browser SDK with wasm-bindgen.
#![forbid(unsafe_code)]

pub mod abuse;
pub mod attest;
pub mod capture;
pub mod checks;
pub mod guidance;
pub mod jwt;
pub mod keys;
mod random;
pub mod sample;
pub mod token;
pub mod verifier;

#[cfg(feature = "native")]
pub mod native;

#[cfg(feature = "browser")]
pub mod browser;

#[cfg(feature = "worker")]
mod worker;

pub use abuse::{AbuseGuard, AbuseLimits};
pub use attest::{AttestError, AttestRequest, Edge, EdgeSettings, SetupError};
pub use capture::{Capture, CaptureError, CaptureLimits};
pub use checks::{Checker, FailedCheck, PassivePad};
pub use keys::{EdKey, KeyError, KeySet, PublicKey};
pub use token::{ClientTokenVerifier, TokenError};
pub use verifier::{AttestationError, AttestationVerifier};
