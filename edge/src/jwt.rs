//! EdDSA JWTs with a `kid`: signing with an [`EdKey`], and checking a signature against a
//! [`KeySet`]. Claims (times included) are checked by the callers, against their own clock.

use jsonwebtoken::{Algorithm, Header, Validation};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::keys::{EdKey, KeySet};

/// Why a token's signature could not be trusted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SignatureError {
    /// Not a JWT, not EdDSA, or claims of the wrong shape.
    Malformed,
    /// No `kid`, or one the key set does not hold.
    UnknownKey,
    BadSignature,
}

/// The claims of `token` if a key of `keys` signed it.
pub fn decode<T: DeserializeOwned>(token: &str, keys: &KeySet) -> Result<T, SignatureError> {
    let header = jsonwebtoken::decode_header(token).map_err(|_| SignatureError::Malformed)?;
    // Only EdDSA: a token naming another algorithm (e.g. HS256 keyed with the public key) is
    // refused before any key is used.
    if header.alg != Algorithm::EdDSA {
        return Err(SignatureError::Malformed);
    }
    let kid = header.kid.ok_or(SignatureError::UnknownKey)?;
    let key = keys.get(&kid).ok_or(SignatureError::UnknownKey)?;
    let mut validation = Validation::new(Algorithm::EdDSA);
    validation.validate_exp = false;
    validation.validate_nbf = false;
    validation.validate_aud = false;
    validation.required_spec_claims.clear();
    jsonwebtoken::decode::<T>(token, key, &validation)
        .map(|data| data.claims)
        .map_err(|error| match error.kind() {
            jsonwebtoken::errors::ErrorKind::InvalidSignature => SignatureError::BadSignature,
            _ => SignatureError::Malformed,
        })
}

/// `claims` signed by `key`, with its `kid` in the header.
pub fn sign<T: Serialize>(claims: &T, key: &EdKey) -> Result<String, jsonwebtoken::errors::Error> {
    let mut header = Header::new(Algorithm::EdDSA);
    header.kid = Some(key.kid().to_owned());
    header.typ = Some("JWT".to_owned());
    jsonwebtoken::encode(&header, claims, key.encoding_key())
}
