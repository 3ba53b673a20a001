//! Claims of the client token the backend issues for a session's browser capture.

use serde::{Deserialize, Serialize};

use crate::LivenessMode;

/// The only scope a client token carries: submit the capture of one session.
pub const CLIENT_TOKEN_SCOPE: &str = "session:submit";

/// Claims of a client token (an EdDSA JWT with `kid` in its header).
///
/// The token is given to the browser; the edge and the backend's media upload accept it for this one
/// session only, until `exp`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClientTokenClaims {
    /// The backend that issued it.
    pub iss: String,
    /// The services that accept it: the edge and the backend.
    pub aud: Vec<String>,
    /// The session id.
    pub sub: String,
    /// The session id again, under the name the attestation uses.
    pub sid: String,
    /// The account that owns the session.
    pub acct: String,
    /// Fresh random value the capture and the attestation are bound to.
    pub nonce: String,
    /// Space-separated scopes; [`CLIENT_TOKEN_SCOPE`].
    pub scope: String,
    pub iat: i64,
    pub nbf: i64,
    pub exp: i64,
    pub jti: String,
    /// How the session proves liveness (tokens without it ask for the default, active).
    #[serde(default)]
    pub liveness: LivenessMode,
    /// Whether the capture must include a document photo.
    #[serde(default = "required")]
    pub require_document: bool,
}

fn required() -> bool {
    true
}
