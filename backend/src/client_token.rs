//! Client tokens: short-lived EdDSA JWTs that let a browser submit the capture of one session.

use std::fmt;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use idyntra_edge::{ClientTokenVerifier, EdKey, KeySet, TokenError, jwt};
use idyntra_types::{CLIENT_TOKEN_SCOPE, ClientTokenClaims, SessionOptions};
use rand::RngCore;

use crate::config::Secret;
use crate::{clock, ids};

/// An Ed25519 key with its key id (the edge's key type: one parser for every key).
#[derive(Clone)]
pub struct SigningIdentity {
    pub kid: String,
    key: EdKey,
}

impl fmt::Debug for SigningIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SigningIdentity")
            .field("kid", &self.kid)
            .finish_non_exhaustive()
    }
}

impl SigningIdentity {
    /// Reads a PKCS#8 PEM or the base64 of a 32-byte seed.
    pub fn parse(kid: &str, secret: &Secret) -> Result<Self, String> {
        let key = EdKey::parse(kid, secret.expose()).map_err(|e| e.to_string())?;
        Ok(Self {
            kid: kid.to_owned(),
            key,
        })
    }

    /// A new random key; `kid` is one of this program's own literals.
    pub fn generate(kid: &str) -> Self {
        Self {
            kid: kid.to_owned(),
            key: EdKey::generate(kid).expect("the program's own key ids are valid"),
        }
    }

    /// The base64 seed, for storing a generated dev key.
    pub fn seed_base64(&self) -> String {
        self.key.seed_base64()
    }

    /// The Ed25519 signature of `message` (webhook bodies).
    pub fn sign(&self, message: &[u8]) -> [u8; 64] {
        self.key.sign(message)
    }

    /// The public key as a JWK `x` (base64url).
    pub fn public_x(&self) -> String {
        self.key.public().x()
    }
}

/// Issues the client tokens of new sessions.
pub struct ClientTokenIssuer {
    identity: SigningIdentity,
    issuer: String,
    audience: Vec<String>,
    ttl: Duration,
}

impl fmt::Debug for ClientTokenIssuer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientTokenIssuer")
            .field("kid", &self.identity.kid)
            .field("issuer", &self.issuer)
            .finish_non_exhaustive()
    }
}

impl ClientTokenIssuer {
    pub fn new(
        identity: SigningIdentity,
        issuer: &str,
        audience: &[String],
        ttl: Duration,
    ) -> Self {
        Self {
            identity,
            issuer: issuer.to_owned(),
            audience: audience.to_vec(),
            ttl,
        }
    }

    pub fn identity(&self) -> &SigningIdentity {
        &self.identity
    }

    /// A fresh nonce for a session (128 random bits, base64url). From the thread's CSPRNG
    /// (ChaCha, seeded and reseeded from the OS), which spares every session a system call.
    pub fn new_nonce() -> String {
        let mut bytes = [0u8; 16];
        rand::thread_rng().fill_bytes(&mut bytes);
        URL_SAFE_NO_PAD.encode(bytes)
    }

    /// Signs a token for the session, valid from `now` (Unix seconds) for the configured lifetime,
    /// but never past the session's own expiry.
    pub fn issue(
        &self,
        session_id: &str,
        account_id: &str,
        nonce: &str,
        options: &SessionOptions,
        now: i64,
        session_expires_at: i64,
    ) -> Result<String, jsonwebtoken::errors::Error> {
        let ttl = i64::try_from(self.ttl.as_secs()).unwrap_or(i64::MAX);
        let claims = ClientTokenClaims {
            iss: self.issuer.clone(),
            aud: self.audience.clone(),
            sub: session_id.to_owned(),
            sid: session_id.to_owned(),
            acct: account_id.to_owned(),
            nonce: nonce.to_owned(),
            scope: CLIENT_TOKEN_SCOPE.to_owned(),
            iat: now,
            nbf: now,
            exp: now.saturating_add(ttl).min(session_expires_at),
            jti: ids::new_id("ctk"),
            liveness: options.liveness,
            require_document: options.require_document,
        };
        jwt::sign(&claims, &self.identity.key)
    }

    /// Verifies a token this issuer signed, for one audience, now (the media upload and tests).
    pub fn verify(&self, token: &str, audience: &str) -> Result<ClientTokenClaims, TokenError> {
        let keys = KeySet::new([self.identity.key.public()]).map_err(|_| TokenError::UnknownKey)?;
        ClientTokenVerifier::new(keys, &self.issuer, audience)
            .verify(token, clock::to_secs(clock::now_ms()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn issuer() -> ClientTokenIssuer {
        ClientTokenIssuer::new(
            SigningIdentity::generate("test-1"),
            "idyntra",
            &["idyntra-edge".to_owned(), "idyntra-backend".to_owned()],
            Duration::from_secs(900),
        )
    }

    fn now() -> i64 {
        crate::clock::to_secs(crate::clock::now_ms())
    }

    #[test]
    fn tokens_carry_kid_session_and_nonce_and_verify() {
        let issuer = issuer();
        let now = now();
        let token = issuer
            .issue(
                "ses_1",
                "acct_1",
                "nonce",
                &SessionOptions::default(),
                now,
                now + 3600,
            )
            .unwrap();
        let header = jsonwebtoken::decode_header(&token).unwrap();
        assert_eq!(header.alg, jsonwebtoken::Algorithm::EdDSA);
        assert_eq!(header.kid.as_deref(), Some("test-1"));
        let claims = issuer.verify(&token, "idyntra-edge").unwrap();
        assert_eq!(
            (claims.sid.as_str(), claims.nonce.as_str()),
            ("ses_1", "nonce")
        );
        assert_eq!(claims.scope, CLIENT_TOKEN_SCOPE);
        assert_eq!(claims.exp, now + 900);
    }

    #[test]
    fn tokens_never_outlive_their_session() {
        let issuer = issuer();
        let now = now();
        let token = issuer
            .issue(
                "ses_1",
                "acct_1",
                "n",
                &SessionOptions::default(),
                now,
                now + 60,
            )
            .unwrap();
        assert_eq!(
            issuer.verify(&token, "idyntra-backend").unwrap().exp,
            now + 60
        );
    }

    #[test]
    fn tampered_foreign_and_expired_tokens_fail() {
        let issuer = issuer();
        let now = now();
        let token = issuer
            .issue(
                "ses_1",
                "acct_1",
                "n",
                &SessionOptions::default(),
                now,
                now + 3600,
            )
            .unwrap();
        assert!(issuer.verify(&token, "someone-else").is_err());
        let other = super::tests::issuer();
        assert!(other.verify(&token, "idyntra-edge").is_err());
        let mut parts: Vec<String> = token.split('.').map(str::to_owned).collect();
        parts[1] = URL_SAFE_NO_PAD.encode(
            String::from_utf8(URL_SAFE_NO_PAD.decode(&parts[1]).unwrap())
                .unwrap()
                .replace("ses_1", "ses_2"),
        );
        assert!(issuer.verify(&parts.join("."), "idyntra-edge").is_err());
        let expired = issuer
            .issue(
                "ses_1",
                "acct_1",
                "n",
                &SessionOptions::default(),
                now - 4000,
                now - 3000,
            )
            .unwrap();
        assert!(issuer.verify(&expired, "idyntra-edge").is_err());
    }

    #[test]
    fn keys_parse_from_seed_and_pem() {
        use ed25519_dalek::pkcs8::EncodePrivateKey;
        let identity = SigningIdentity::generate("k");
        let from_seed = SigningIdentity::parse("k", &Secret::new(identity.seed_base64())).unwrap();
        assert_eq!(from_seed.public_x(), identity.public_x());
        let seed: [u8; 32] = base64::engine::general_purpose::STANDARD
            .decode(identity.seed_base64())
            .unwrap()
            .try_into()
            .unwrap();
        let pem = ed25519_dalek::SigningKey::from_bytes(&seed)
            .to_pkcs8_pem(ed25519_dalek::pkcs8::spki::der::pem::LineEnding::LF)
            .unwrap();
        let from_pem = SigningIdentity::parse("k", &Secret::new(pem.as_str())).unwrap();
        assert_eq!(from_pem.public_x(), identity.public_x());
        assert!(SigningIdentity::parse("k", &Secret::new("AAAA")).is_err());
    }
}
