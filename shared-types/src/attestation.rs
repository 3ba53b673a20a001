//! What the edge signs: the claims of an attestation JWT, its answer to `POST /v1/attest`, and the
//! JSON Web Key Set it publishes.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::{FrameTiming, LivenessMode, ModelUsed, QualityReport, ScoredCheck};

/// Audience of every attestation: the backend that finalizes sessions.
pub const ATTESTATION_AUDIENCE: &str = "idyntra-backend";

/// What an image checked by the edge was.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum ImageRole {
    /// The selfie the face match uses: the first `selfie` part.
    Selfie,
    /// A later `selfie` part: a frame of the liveness challenge.
    Frame,
    /// The photo of the identity document.
    Document,
}

/// One image the edge checked, named by the SHA-256 of its bytes as uploaded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AttestedImage {
    pub role: ImageRole,
    /// Position among the `selfie` parts (0 is the selfie), or 0 for the document.
    pub index: u32,
    /// Lower-case hex.
    pub sha256: String,
    /// When the frame was taken, for challenge frames.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timing: Option<FrameTiming>,
}

/// The liveness the edge established.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AttestedLiveness {
    /// The session's mode, from its client token.
    pub mode: LivenessMode,
    /// The active challenge's verdict; absent for passive sessions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub challenge: Option<ScoredCheck>,
    /// The passive presentation-attack score; absent when no passive model ran.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pad: Option<ScoredCheck>,
    /// Version of the challenge and its verification method.
    pub method_version: u32,
}

/// The checks behind an attestation, also returned to the browser.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct EdgeChecks {
    pub selfie_quality: QualityReport,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub document_quality: Option<QualityReport>,
    pub liveness: AttestedLiveness,
}

/// Claims of an attestation (an EdDSA JWT with the edge key's `kid` in its header).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AttestationClaims {
    /// The edge that checked the capture.
    pub iss: String,
    /// [`ATTESTATION_AUDIENCE`].
    pub aud: String,
    /// The session id.
    pub sub: String,
    /// The session id again, as the client token names it.
    pub sid: String,
    /// The session's nonce, from the client token.
    pub nonce: String,
    pub iat: i64,
    pub exp: i64,
    pub jti: String,
    /// Every image and frame checked, in upload order.
    pub images: Vec<AttestedImage>,
    pub checks: EdgeChecks,
    /// What the browser reported about its capture (virtual camera, automation), as received.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub injection_signals: BTreeMap<String, Value>,
    /// Every model behind the checks.
    pub models: Vec<ModelUsed>,
}

/// The answer to a successful `POST /v1/attest`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AttestResponse {
    /// The signed attestation to upload with the images.
    pub attestation: String,
    pub checks: EdgeChecks,
}

/// One public key of a JSON Web Key Set (RFC 8037: Ed25519 as `OKP`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Jwk {
    pub kty: String,
    pub crv: String,
    /// The public key, base64url without padding.
    pub x: String,
    pub kid: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alg: Option<String>,
    #[serde(default, rename = "use", skip_serializing_if = "Option::is_none")]
    pub key_use: Option<String>,
}

impl Jwk {
    /// An Ed25519 signing key's public half.
    pub fn ed25519(kid: impl Into<String>, x: impl Into<String>) -> Self {
        Self {
            kty: "OKP".to_owned(),
            crv: "Ed25519".to_owned(),
            x: x.into(),
            kid: kid.into(),
            alg: Some("EdDSA".to_owned()),
            key_use: Some("sig".to_owned()),
        }
    }
}

/// `GET /.well-known/jwks.json`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct JwkSet {
    pub keys: Vec<Jwk>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_jwk_uses_rfc_8037_member_names() {
        let json = serde_json::to_value(Jwk::ed25519("edge-1", "abc")).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"kty": "OKP", "crv": "Ed25519", "x": "abc", "kid": "edge-1",
                "alg": "EdDSA", "use": "sig"})
        );
    }

    #[test]
    fn image_roles_are_snake_case() {
        assert_eq!(
            serde_json::to_string(&ImageRole::Document).unwrap(),
            "\"document\""
        );
    }
}
