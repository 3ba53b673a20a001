//! EdDSA JWTs with a `kid`: signing with an [`EdKey`], and checking a signature against a
//! [`KeySet`]. Claims (times included) are checked by the callers, against their own clock.
//!
//! jsonwebtoken runs on a crypto provider of our own that knows Ed25519 only, through
//! ed25519-dalek. Every other algorithm is refused by the provider itself, and the RSA and NIST
//! curve code the crate's stock providers bring is not built at all: it was the slowest part of
//! the WebAssembly builds.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ed25519_dalek::ed25519::signature::{self, Signer, Verifier};
use ed25519_dalek::pkcs8::DecodePrivateKey;
use ed25519_dalek::{Signature, SigningKey, VerifyingKey};
use jsonwebtoken::crypto::{CryptoProvider, JwkUtils, JwtSigner, JwtVerifier};
use jsonwebtoken::errors::{Error, ErrorKind};
use jsonwebtoken::{Algorithm, AlgorithmFamily, DecodingKey, EncodingKey, Header, Validation};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::keys::{EdKey, KeySet};

/// The provider every signature of this crate goes through.
static ED25519_ONLY: CryptoProvider = CryptoProvider {
    signer_factory: ed25519_signer,
    verifier_factory: ed25519_verifier,
    // JWK helpers for RSA and EC keys: never called, since keys are read by `keys` itself.
    jwk_utils: JwkUtils::new_unimplemented(),
};

/// Installs the Ed25519-only provider as jsonwebtoken's, for this process. [`decode`] and
/// [`sign`] call it; code that calls jsonwebtoken directly must call it first, because
/// jsonwebtoken fixes its provider at first use.
pub fn install_provider() {
    // Err only means it is installed already.
    let _ = ED25519_ONLY.install_default();
}

struct Ed25519Signer(SigningKey);

impl Signer<Vec<u8>> for Ed25519Signer {
    fn try_sign(&self, message: &[u8]) -> Result<Vec<u8>, signature::Error> {
        Ok(self.0.sign(message).to_bytes().to_vec())
    }
}

impl JwtSigner for Ed25519Signer {
    fn algorithm(&self) -> Algorithm {
        Algorithm::EdDSA
    }
}

struct Ed25519Verifier(VerifyingKey);

impl Verifier<Vec<u8>> for Ed25519Verifier {
    fn verify(&self, message: &[u8], signature: &Vec<u8>) -> Result<(), signature::Error> {
        // Strict: refuses the malleable and small-order encodings plain `verify` lets through.
        self.0
            .verify_strict(message, &Signature::from_slice(signature)?)
    }
}

impl JwtVerifier for Ed25519Verifier {
    fn algorithm(&self) -> Algorithm {
        Algorithm::EdDSA
    }
}

fn ed25519_signer(
    algorithm: &Algorithm,
    key: &EncodingKey,
) -> jsonwebtoken::errors::Result<Box<dyn JwtSigner>> {
    if *algorithm != Algorithm::EdDSA || key.family() != AlgorithmFamily::Ed {
        return Err(Error::from(ErrorKind::InvalidAlgorithm));
    }
    let key = SigningKey::from_pkcs8_der(key.inner()).map_err(|_| ErrorKind::InvalidEddsaKey)?;
    Ok(Box::new(Ed25519Signer(key)))
}

fn ed25519_verifier(
    algorithm: &Algorithm,
    key: &DecodingKey,
) -> jsonwebtoken::errors::Result<Box<dyn JwtVerifier>> {
    if *algorithm != Algorithm::EdDSA || key.family() != AlgorithmFamily::Ed {
        return Err(Error::from(ErrorKind::InvalidAlgorithm));
    }
    let bytes: &[u8; 32] = key
        .as_bytes()
        .try_into()
        .map_err(|_| ErrorKind::InvalidEddsaKey)?;
    let key = VerifyingKey::from_bytes(bytes).map_err(|_| ErrorKind::InvalidEddsaKey)?;
    Ok(Box::new(Ed25519Verifier(key)))
}

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
    install_provider();
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
///
/// Signed here with the parsed key rather than through `jsonwebtoken::encode`, whose signer
/// starts from the key's PKCS#8 bytes and derives the public key again for every token: half of
/// the Ed25519 work of issuing one.
pub fn sign<T: Serialize>(claims: &T, key: &EdKey) -> Result<String, Error> {
    let mut header = Header::new(Algorithm::EdDSA);
    header.kid = Some(key.kid().to_owned());
    header.typ = Some("JWT".to_owned());
    let message = format!("{}.{}", encode_part(&header)?, encode_part(claims)?);
    let signature = URL_SAFE_NO_PAD.encode(key.sign(message.as_bytes()));
    Ok(format!("{message}.{signature}"))
}

/// A JWT part: the base64url of the JSON.
fn encode_part<T: Serialize>(part: &T) -> Result<String, Error> {
    Ok(URL_SAFE_NO_PAD.encode(serde_json::to_vec(part)?))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn the_provider_refuses_every_algorithm_but_eddsa() {
        install_provider();
        let secret = EncodingKey::from_secret(b"a shared secret");
        let refused = jsonwebtoken::encode(&Header::new(Algorithm::HS256), &(), &secret);
        assert!(matches!(
            refused.unwrap_err().kind(),
            ErrorKind::InvalidAlgorithm
        ));
        // Called directly, with a validation that asks for HS256, it still refuses.
        let mut validation = Validation::new(Algorithm::HS256);
        validation.required_spec_claims.clear();
        let token = "eyJhbGciOiJIUzI1NiJ9.e30.c2lnbmF0dXJl";
        let refused = jsonwebtoken::decode::<serde_json::Value>(
            token,
            &DecodingKey::from_secret(b"a shared secret"),
            &validation,
        );
        assert!(matches!(
            refused.unwrap_err().kind(),
            ErrorKind::InvalidAlgorithm
        ));
    }

    #[test]
    fn signatures_verify_strictly() {
        let key = EdKey::generate("k1").unwrap();
        let keys = KeySet::new([key.public()]).unwrap();
        let token = sign(&serde_json::json!({"sub": "s"}), &key).unwrap();
        let claims: serde_json::Value = decode(&token, &keys).unwrap();
        assert_eq!(claims["sub"], "s");
        // One flipped bit of the signature.
        let (signed, signature) = token.rsplit_once('.').unwrap();
        let mut bytes =
            base64::Engine::decode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, signature)
                .unwrap();
        bytes[0] ^= 1;
        let forged = format!(
            "{signed}.{}",
            base64::Engine::encode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, bytes)
        );
        assert_eq!(
            decode::<serde_json::Value>(&forged, &keys),
            Err(SignatureError::BadSignature)
        );
    }
}
