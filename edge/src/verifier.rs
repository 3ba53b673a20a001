//! The backend's check of an attestation: signed by a known edge key, from a trusted edge, for the
//! backend, unexpired, for this session and its nonce; and the hashes of the uploaded images. The
//! same verifier accepts attestations from every host of the edge (Worker, native, embedded).
//! Replay (`jti` seen before) is the caller's to check: it needs shared storage.

use idyntra_types::{ATTESTATION_AUDIENCE, AttestationClaims, ImageRole};
use sha2::{Digest, Sha256};

use crate::jwt::{self, SignatureError};
use crate::keys::KeySet;
use crate::token::LEEWAY_SECS;

/// Why an attestation was refused; [`AttestationError::code`] is what the client sees.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AttestationError {
    #[error("the attestation is not a well-formed EdDSA JWT")]
    Malformed,
    #[error("the attestation was signed by an unknown edge key")]
    UnknownKey,
    #[error("the attestation's signature does not verify")]
    BadSignature,
    #[error("the attestation has expired")]
    Expired,
    #[error("the attestation is dated in the future")]
    NotYetValid,
    #[error("the attestation comes from an untrusted edge")]
    WrongIssuer,
    #[error("the attestation is for another audience")]
    WrongAudience,
    #[error("the attestation is for another session")]
    WrongSession,
    #[error("the attestation is bound to another nonce")]
    WrongNonce,
    #[error("an uploaded image is not the one the attestation names")]
    ImageMismatch,
}

impl AttestationError {
    pub fn code(self) -> &'static str {
        match self {
            Self::Malformed => "attestation_malformed",
            Self::UnknownKey => "attestation_unknown_key",
            Self::BadSignature => "attestation_bad_signature",
            Self::Expired => "attestation_expired",
            Self::NotYetValid => "attestation_not_yet_valid",
            Self::WrongIssuer => "attestation_wrong_issuer",
            Self::WrongAudience => "attestation_wrong_audience",
            Self::WrongSession => "attestation_wrong_session",
            Self::WrongNonce => "attestation_wrong_nonce",
            Self::ImageMismatch => "attestation_image_mismatch",
        }
    }
}

/// Verifies attestations against the edges' public keys.
#[derive(Debug, Clone)]
pub struct AttestationVerifier {
    keys: KeySet,
    issuers: Vec<String>,
}

impl AttestationVerifier {
    /// Attestations signed by one of `keys` and issued by one of `issuers` (edge ids).
    pub fn new(keys: KeySet, issuers: &[String]) -> Self {
        Self {
            keys,
            issuers: issuers.to_vec(),
        }
    }

    /// The claims of `token` if it attests a capture of `session_id` with `nonce`, valid at `now`
    /// (Unix seconds).
    pub fn verify(
        &self,
        token: &str,
        session_id: &str,
        nonce: &str,
        now: i64,
    ) -> Result<AttestationClaims, AttestationError> {
        let claims: AttestationClaims =
            jwt::decode(token, &self.keys).map_err(|error| match error {
                SignatureError::Malformed => AttestationError::Malformed,
                SignatureError::UnknownKey => AttestationError::UnknownKey,
                SignatureError::BadSignature => AttestationError::BadSignature,
            })?;
        if claims.exp.saturating_add(LEEWAY_SECS) <= now {
            return Err(AttestationError::Expired);
        }
        if claims.iat > now.saturating_add(LEEWAY_SECS) {
            return Err(AttestationError::NotYetValid);
        }
        if !self.issuers.contains(&claims.iss) {
            return Err(AttestationError::WrongIssuer);
        }
        if claims.aud != ATTESTATION_AUDIENCE {
            return Err(AttestationError::WrongAudience);
        }
        if claims.sid != session_id || claims.sub != session_id {
            return Err(AttestationError::WrongSession);
        }
        if claims.nonce != nonce {
            return Err(AttestationError::WrongNonce);
        }
        Ok(claims)
    }
}

/// Checks that `bytes` are the image the attestation names for `role` (index 0 of the role).
pub fn check_image(
    claims: &AttestationClaims,
    role: ImageRole,
    bytes: &[u8],
) -> Result<(), AttestationError> {
    let digest = hex::encode(Sha256::digest(bytes));
    claims
        .images
        .iter()
        .find(|image| image.role == role)
        .filter(|image| image.sha256 == digest)
        .map(|_| ())
        .ok_or(AttestationError::ImageMismatch)
}
