//! The edge attestation service.
//!
//! One library with three hosts behind features (Cloudflare Worker, browser, native). It verifies the
//! client token the backend issued for a session, re-runs the light checks on the capture and signs an
//! attestation JWT. The client-token claims it verifies are defined in `idyntra-types`
//! ([`idyntra_types::ClientTokenClaims`]); the checks and signing are not written yet.
#![forbid(unsafe_code)]
