//! Ed25519 keys with their key ids: the edge's signing key, and the public keys it trusts or
//! publishes. Keys rotate with overlap: a new key signs, the old one's public half stays published
//! (and trusted) until everything it signed has expired.

use std::collections::BTreeMap;
use std::fmt;

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use ed25519_dalek::pkcs8::DecodePrivateKey;
use ed25519_dalek::{SigningKey, VerifyingKey};
use idyntra_types::{Jwk, JwkSet};
use jsonwebtoken::DecodingKey;

/// Why a key could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    #[error("not an Ed25519 PKCS#8 PEM: {0}")]
    Pem(String),
    #[error("neither a PEM nor base64")]
    Encoding,
    #[error("an Ed25519 key is 32 bytes, this one is {0}")]
    Length(usize),
    #[error("not an Ed25519 public key")]
    NotOnCurve,
    #[error("kid {0:?} appears twice")]
    DuplicateKid(String),
    #[error("a kid must be 1 to 64 printable characters")]
    BadKid,
}

fn check_kid(kid: &str) -> Result<(), KeyError> {
    if kid.is_empty() || kid.len() > 64 || !kid.chars().all(|c| c.is_ascii_graphic()) {
        return Err(KeyError::BadKid);
    }
    Ok(())
}

/// A private signing key and its key id.
#[derive(Clone)]
pub struct EdKey {
    kid: String,
    key: SigningKey,
}

impl fmt::Debug for EdKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EdKey")
            .field("kid", &self.kid)
            .finish_non_exhaustive()
    }
}

impl EdKey {
    /// Reads a PKCS#8 PEM or the base64 (standard or url-safe) of a 32-byte seed.
    pub fn parse(kid: &str, text: &str) -> Result<Self, KeyError> {
        check_kid(kid)?;
        let text = text.trim();
        let key = if text.starts_with("-----BEGIN") {
            SigningKey::from_pkcs8_pem(text).map_err(|e| KeyError::Pem(e.to_string()))?
        } else {
            let bytes = STANDARD
                .decode(text)
                .or_else(|_| URL_SAFE_NO_PAD.decode(text))
                .map_err(|_| KeyError::Encoding)?;
            let seed: [u8; 32] = bytes
                .try_into()
                .map_err(|bytes: Vec<u8>| KeyError::Length(bytes.len()))?;
            SigningKey::from_bytes(&seed)
        };
        Ok(Self::from_key(kid, key))
    }

    /// A new random key.
    pub fn generate(kid: &str) -> Result<Self, KeyError> {
        check_kid(kid)?;
        let mut seed = [0u8; 32];
        crate::random::fill(&mut seed);
        Ok(Self::from_key(kid, SigningKey::from_bytes(&seed)))
    }

    fn from_key(kid: &str, key: SigningKey) -> Self {
        Self {
            kid: kid.to_owned(),
            key,
        }
    }

    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// The base64 of the seed, to store a generated key.
    pub fn seed_base64(&self) -> String {
        STANDARD.encode(self.key.to_bytes())
    }

    /// The public half.
    pub fn public(&self) -> PublicKey {
        PublicKey {
            kid: self.kid.clone(),
            key: self.key.verifying_key(),
        }
    }

    /// The Ed25519 signature of `message`.
    pub fn sign(&self, message: &[u8]) -> [u8; 64] {
        use ed25519_dalek::Signer;
        self.key.sign(message).to_bytes()
    }
}

/// A public key and its key id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublicKey {
    kid: String,
    key: VerifyingKey,
}

impl PublicKey {
    /// From a JWK's `x`: the base64url of the 32-byte public key.
    pub fn from_x(kid: &str, x: &str) -> Result<Self, KeyError> {
        check_kid(kid)?;
        let bytes = URL_SAFE_NO_PAD
            .decode(x.trim())
            .map_err(|_| KeyError::Encoding)?;
        let bytes: [u8; 32] = bytes
            .try_into()
            .map_err(|bytes: Vec<u8>| KeyError::Length(bytes.len()))?;
        let key = VerifyingKey::from_bytes(&bytes).map_err(|_| KeyError::NotOnCurve)?;
        Ok(Self {
            kid: kid.to_owned(),
            key,
        })
    }

    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// The JWK `x`.
    pub fn x(&self) -> String {
        URL_SAFE_NO_PAD.encode(self.key.to_bytes())
    }

    pub fn jwk(&self) -> Jwk {
        Jwk::ed25519(&self.kid, self.x())
    }

    fn decoding_key(&self) -> DecodingKey {
        DecodingKey::from_ed_der(self.key.as_bytes())
    }
}

/// Public keys by key id: the keys a verifier trusts, or the keys a JWKS publishes.
#[derive(Clone, Default)]
pub struct KeySet {
    keys: BTreeMap<String, (PublicKey, DecodingKey)>,
}

impl fmt::Debug for KeySet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.keys.keys()).finish()
    }
}

impl KeySet {
    pub fn new(keys: impl IntoIterator<Item = PublicKey>) -> Result<Self, KeyError> {
        let mut set = Self::default();
        for key in keys {
            set.insert(key)?;
        }
        Ok(set)
    }

    /// The Ed25519 keys of a JWKS (other key types are skipped: they cannot sign what we verify).
    pub fn from_jwks(jwks: &JwkSet) -> Result<Self, KeyError> {
        Self::new(
            jwks.keys
                .iter()
                .filter(|jwk| jwk.kty == "OKP" && jwk.crv == "Ed25519")
                .map(|jwk| PublicKey::from_x(&jwk.kid, &jwk.x))
                .collect::<Result<Vec<_>, _>>()?,
        )
    }

    pub fn insert(&mut self, key: PublicKey) -> Result<(), KeyError> {
        if self.keys.contains_key(key.kid()) {
            return Err(KeyError::DuplicateKid(key.kid.clone()));
        }
        let decoding = key.decoding_key();
        self.keys.insert(key.kid.clone(), (key, decoding));
        Ok(())
    }

    pub fn get(&self, kid: &str) -> Option<&DecodingKey> {
        self.keys.get(kid).map(|(_, decoding)| decoding)
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    pub fn jwks(&self) -> JwkSet {
        JwkSet {
            keys: self.keys.values().map(|(key, _)| key.jwk()).collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use ed25519_dalek::pkcs8::EncodePrivateKey;

    use super::*;

    #[test]
    fn keys_read_from_seed_pem_and_jwk_x_agree() {
        let key = EdKey::generate("edge-1").unwrap();
        let seed = EdKey::parse("edge-1", &key.seed_base64()).unwrap();
        assert_eq!(seed.public(), key.public());
        let pem = key
            .key
            .to_pkcs8_pem(ed25519_dalek::pkcs8::spki::der::pem::LineEnding::LF)
            .unwrap();
        assert_eq!(EdKey::parse("edge-1", &pem).unwrap().public(), key.public());
        let public = PublicKey::from_x("edge-1", &key.public().x()).unwrap();
        assert_eq!(public, key.public());
    }

    #[test]
    fn bad_keys_and_kids_are_refused() {
        assert_eq!(EdKey::parse("k", "AAAA").unwrap_err(), KeyError::Length(3));
        assert_eq!(EdKey::parse("k", "%%%").unwrap_err(), KeyError::Encoding);
        assert!(matches!(
            EdKey::parse(
                "k",
                "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----"
            ),
            Err(KeyError::Pem(_))
        ));
        assert_eq!(EdKey::generate("").unwrap_err(), KeyError::BadKid);
        assert_eq!(EdKey::generate("a b").unwrap_err(), KeyError::BadKid);
        assert_eq!(
            PublicKey::from_x("k", "AAAA").unwrap_err(),
            KeyError::Length(3)
        );
    }

    #[test]
    fn a_key_set_refuses_a_kid_twice_and_publishes_every_key() {
        let a = EdKey::generate("a").unwrap().public();
        let b = EdKey::generate("b").unwrap().public();
        let set = KeySet::new([a.clone(), b]).unwrap();
        let jwks = set.jwks();
        assert_eq!(jwks.keys.len(), 2);
        assert_eq!(KeySet::from_jwks(&jwks).unwrap().jwks(), jwks);
        assert_eq!(
            KeySet::new([a.clone(), a]).unwrap_err(),
            KeyError::DuplicateKid("a".to_owned())
        );
    }
}
