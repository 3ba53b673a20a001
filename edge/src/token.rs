//! Checking the client token a browser presents: an EdDSA JWT from the backend, for this edge's
//! audience, in its lifetime, with the submit scope, naming one session and its nonce.
//!
//! Time is checked here against the caller's clock rather than by the JWT library, so the Worker
//! (which has no system clock in wasm) and the tests use the same code.

use crate::jwt::{self, SignatureError};
use crate::keys::KeySet;
use idyntra_types::{CLIENT_TOKEN_SCOPE, ClientTokenClaims};

/// Seconds of clock difference tolerated between the backend and the edge.
pub const LEEWAY_SECS: i64 = 5;

/// Why a client token was refused; [`TokenError::code`] is what the client sees.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("no client token: send `Authorization: Bearer <client_token>`")]
    Missing,
    #[error("the client token is not a well-formed EdDSA JWT")]
    Malformed,
    #[error("the client token was signed by an unknown key")]
    UnknownKey,
    #[error("the client token's signature does not verify")]
    BadSignature,
    #[error("the client token has expired")]
    Expired,
    #[error("the client token is not valid yet")]
    NotYetValid,
    #[error("the client token was issued by someone else")]
    WrongIssuer,
    #[error("the client token is for another audience")]
    WrongAudience,
    #[error("the client token does not allow submitting a capture")]
    WrongScope,
    #[error("the client token does not name one session and its nonce")]
    WrongSession,
}

impl TokenError {
    pub fn code(self) -> &'static str {
        match self {
            Self::Missing => "client_token_missing",
            Self::Malformed => "client_token_malformed",
            Self::UnknownKey => "client_token_unknown_key",
            Self::BadSignature => "client_token_bad_signature",
            Self::Expired => "client_token_expired",
            Self::NotYetValid => "client_token_not_yet_valid",
            Self::WrongIssuer => "client_token_wrong_issuer",
            Self::WrongAudience => "client_token_wrong_audience",
            Self::WrongScope => "client_token_wrong_scope",
            Self::WrongSession => "client_token_wrong_session",
        }
    }

    /// 403 for a genuine token that does not allow this; 401 for every other refusal.
    pub fn status(self) -> u16 {
        match self {
            Self::WrongScope => 403,
            _ => 401,
        }
    }
}

/// Verifies client tokens against the backend's published keys.
#[derive(Debug, Clone)]
pub struct ClientTokenVerifier {
    keys: KeySet,
    issuer: String,
    audience: String,
}

impl ClientTokenVerifier {
    /// Tokens signed by one of `keys`, issued by `issuer`, naming `audience` (this edge).
    pub fn new(keys: KeySet, issuer: &str, audience: &str) -> Self {
        Self {
            keys,
            issuer: issuer.to_owned(),
            audience: audience.to_owned(),
        }
    }

    /// The claims of `token` if it is valid at `now` (Unix seconds).
    pub fn verify(&self, token: &str, now: i64) -> Result<ClientTokenClaims, TokenError> {
        let claims: ClientTokenClaims =
            jwt::decode(token, &self.keys).map_err(|error| match error {
                SignatureError::Malformed => TokenError::Malformed,
                SignatureError::UnknownKey => TokenError::UnknownKey,
                SignatureError::BadSignature => TokenError::BadSignature,
            })?;
        if claims.exp.saturating_add(LEEWAY_SECS) <= now {
            return Err(TokenError::Expired);
        }
        if claims.nbf.max(claims.iat) > now.saturating_add(LEEWAY_SECS) {
            return Err(TokenError::NotYetValid);
        }
        if claims.iss != self.issuer {
            return Err(TokenError::WrongIssuer);
        }
        if !claims.aud.contains(&self.audience) {
            return Err(TokenError::WrongAudience);
        }
        if !claims
            .scope
            .split(' ')
            .any(|scope| scope == CLIENT_TOKEN_SCOPE)
        {
            return Err(TokenError::WrongScope);
        }
        if claims.sid.is_empty() || claims.sid != claims.sub || claims.nonce.is_empty() {
            return Err(TokenError::WrongSession);
        }
        Ok(claims)
    }
}

/// The token of an `Authorization: Bearer …` header value.
pub fn bearer(authorization: Option<&str>) -> Result<&str, TokenError> {
    let value = authorization.ok_or(TokenError::Missing)?.trim();
    let (scheme, token) = value.split_once(' ').ok_or(TokenError::Malformed)?;
    if !scheme.eq_ignore_ascii_case("bearer") || token.trim().is_empty() {
        return Err(TokenError::Malformed);
    }
    Ok(token.trim())
}

#[cfg(test)]
pub(crate) mod tests {
    use idyntra_types::LivenessMode;
    use jsonwebtoken::{Algorithm, Header};

    use super::*;
    use crate::keys::EdKey;

    pub(crate) const NOW: i64 = 1_800_000_000;

    pub(crate) fn claims() -> ClientTokenClaims {
        ClientTokenClaims {
            iss: "idyntra".to_owned(),
            aud: vec!["idyntra-edge".to_owned(), "idyntra-backend".to_owned()],
            sub: "ses_1".to_owned(),
            sid: "ses_1".to_owned(),
            acct: "acct_1".to_owned(),
            nonce: "nonce-1".to_owned(),
            scope: CLIENT_TOKEN_SCOPE.to_owned(),
            iat: NOW,
            nbf: NOW,
            exp: NOW + 900,
            jti: "ctk_1".to_owned(),
            liveness: LivenessMode::Active,
            require_document: true,
        }
    }

    pub(crate) fn sign(key: &EdKey, claims: &ClientTokenClaims) -> String {
        jwt::sign(claims, key).unwrap()
    }

    /// A correctly MACed HS256 token of [`claims`]: jsonwebtoken here signs EdDSA only.
    fn hs256_token(secret: &[u8], kid: &str) -> String {
        use base64::Engine;
        use base64::engine::general_purpose::URL_SAFE_NO_PAD;
        use hmac::Mac;
        let header = Header {
            kid: Some(kid.to_owned()),
            ..Header::new(Algorithm::HS256)
        };
        let signed = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(serde_json::to_vec(&header).unwrap()),
            URL_SAFE_NO_PAD.encode(serde_json::to_vec(&claims()).unwrap())
        );
        let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(secret).unwrap();
        mac.update(signed.as_bytes());
        let tag = mac.finalize().into_bytes();
        format!("{signed}.{}", URL_SAFE_NO_PAD.encode(tag))
    }

    /// A fixed key, so tokens signed in one test verify in another.
    pub(crate) fn fixed_key(kid: &str, byte: u8) -> EdKey {
        use base64::Engine;
        EdKey::parse(
            kid,
            &base64::engine::general_purpose::STANDARD.encode([byte; 32]),
        )
        .unwrap()
    }

    pub(crate) fn backend_key() -> EdKey {
        fixed_key("backend-1", 1)
    }

    pub(crate) fn verifier() -> ClientTokenVerifier {
        ClientTokenVerifier::new(
            KeySet::new([backend_key().public()]).unwrap(),
            "idyntra",
            "idyntra-edge",
        )
    }

    fn refused(claims: &ClientTokenClaims) -> TokenError {
        verifier()
            .verify(&sign(&backend_key(), claims), NOW)
            .unwrap_err()
    }

    #[test]
    fn a_valid_token_gives_its_claims() {
        let token = sign(&backend_key(), &claims());
        assert_eq!(verifier().verify(&token, NOW).unwrap(), claims());
        // Within the leeway at both ends.
        assert!(verifier().verify(&token, NOW + 900 + 4).is_ok());
        assert!(verifier().verify(&token, NOW - 4).is_ok());
    }

    #[test]
    fn every_claim_is_checked() {
        type Change = fn(&mut ClientTokenClaims);
        let cases: [(Change, TokenError); 8] = [
            (|c| c.exp = NOW - 10, TokenError::Expired),
            (|c| c.nbf = NOW + 60, TokenError::NotYetValid),
            (|c| c.iss = "someone".to_owned(), TokenError::WrongIssuer),
            (
                |c| c.aud = vec!["idyntra-backend".to_owned()],
                TokenError::WrongAudience,
            ),
            (
                |c| c.scope = "session:read".to_owned(),
                TokenError::WrongScope,
            ),
            (|c| c.sid = "ses_2".to_owned(), TokenError::WrongSession),
            (|c| c.sid = String::new(), TokenError::WrongSession),
            (|c| c.nonce = String::new(), TokenError::WrongSession),
        ];
        for (change, expected) in cases {
            let mut changed = claims();
            change(&mut changed);
            assert_eq!(refused(&changed), expected, "{changed:?}");
        }
        assert_eq!(TokenError::WrongScope.status(), 403);
        assert_eq!(TokenError::Expired.status(), 401);
    }

    #[test]
    fn foreign_tampered_and_garbage_tokens_are_refused() {
        let stranger = fixed_key("backend-1", 2);
        let token = sign(&stranger, &claims());
        assert_eq!(
            verifier().verify(&token, NOW),
            Err(TokenError::BadSignature)
        );
        let unknown = EdKey::generate("backend-0").unwrap();
        assert_eq!(
            verifier().verify(&sign(&unknown, &claims()), NOW),
            Err(TokenError::UnknownKey)
        );
        let good = sign(&backend_key(), &claims());
        let mut parts: Vec<&str> = good.split('.').collect();
        let forged = sign(
            &stranger,
            &ClientTokenClaims {
                sid: "ses_9".to_owned(),
                sub: "ses_9".to_owned(),
                ..claims()
            },
        );
        parts[1] = forged.split('.').nth(1).unwrap();
        assert_eq!(
            verifier().verify(&parts.join("."), NOW),
            Err(TokenError::BadSignature)
        );
        for garbage in ["", "a.b.c", "not a token", "e30.e30.e30"] {
            assert_eq!(
                verifier().verify(garbage, NOW),
                Err(TokenError::Malformed),
                "{garbage:?}"
            );
        }
        // HS256 keyed with the public key (algorithm confusion) is refused by its header.
        let hs = hs256_token(backend_key().public().x().as_bytes(), "backend-1");
        assert_eq!(verifier().verify(&hs, NOW), Err(TokenError::Malformed));
    }

    #[test]
    fn bearer_headers_are_parsed_strictly() {
        assert_eq!(bearer(Some("Bearer abc")), Ok("abc"));
        assert_eq!(bearer(Some("bearer  abc ")), Ok("abc"));
        assert_eq!(bearer(None), Err(TokenError::Missing));
        for bad in ["Basic abc", "Bearer", "Bearer ", "abc"] {
            assert_eq!(bearer(Some(bad)), Err(TokenError::Malformed), "{bad:?}");
        }
    }
}
