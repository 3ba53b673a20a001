//! Wire types shared by the browser SDK, the edge and the backend.
//!
//! Everything here is plain serde so it builds for `wasm32-unknown-unknown`; OpenAPI schemas come with
//! the `openapi` feature. Times on the wire are Unix seconds, as in Stripe's API.
#![forbid(unsafe_code)]

mod attestation;
mod liveness;
mod problem;
mod result;
mod session;
mod token;

pub use attestation::{
    ATTESTATION_AUDIENCE, AttestResponse, AttestationClaims, AttestedImage, AttestedLiveness,
    EdgeChecks, ImageRole, Jwk, JwkSet,
};
pub use liveness::{ChallengeStep, FrameTiming, LivenessChallenge, TurnDirection};
pub use problem::{FieldError, Problem};
pub use result::{
    Decision, FaceMatchResult, ModelUsed, QualityCode, QualityComponents, QualityMeasurements,
    QualityReport, QualityResult, ReasonCode, ScoredCheck, VerificationResult,
};
pub use session::{
    CreateSessionRequest, LivenessMode, Page, Session, SessionOptions, SessionStatus,
};
pub use token::{CLIENT_TOKEN_SCOPE, ClientTokenClaims};
