//! `POST /v1/attest` without the HTTP: the client token, the abuse controls, the capture, the
//! checks, and the signed attestation — or a problem naming every failed check.

use bytes::Bytes;
use idyntra_types::{
    ATTESTATION_AUDIENCE, AttestResponse, AttestationClaims, ClientTokenClaims, EdgeChecks,
    FieldError, JwkSet, Problem,
};

use crate::abuse::{AbuseGuard, AbuseLimits, Refusal};
use crate::capture::{Capture, CaptureError, CaptureLimits};
use crate::checks::{Checker, FailedCheck, Requirements};
use crate::jwt;
use crate::keys::{EdKey, KeySet, PublicKey};
use crate::random;
use crate::token::{self, ClientTokenVerifier, TokenError};

/// Longest lifetime of an attestation: the backend must receive it soon after the capture.
pub const MAX_ATTESTATION_TTL_SECS: i64 = 600;

/// Settings of an edge.
#[derive(Debug, Clone)]
pub struct EdgeSettings {
    /// This edge's id: the `iss` of its attestations.
    pub edge_id: String,
    /// The issuer of client tokens (the backend).
    pub token_issuer: String,
    /// The audience client tokens must name for this edge.
    pub token_audience: String,
    /// Seconds an attestation is valid, at most [`MAX_ATTESTATION_TTL_SECS`].
    pub attestation_ttl_secs: i64,
    pub capture: CaptureLimits,
    pub abuse: AbuseLimits,
}

impl Default for EdgeSettings {
    fn default() -> Self {
        Self {
            edge_id: "idyntra-edge".to_owned(),
            token_issuer: "idyntra".to_owned(),
            token_audience: "idyntra-edge".to_owned(),
            attestation_ttl_secs: 300,
            capture: CaptureLimits::default(),
            abuse: AbuseLimits::default(),
        }
    }
}

/// Why an edge could not be set up.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SetupError {
    #[error("attestation_ttl must be 1 to {MAX_ATTESTATION_TTL_SECS} seconds")]
    Ttl,
    #[error("no client-token keys are trusted")]
    NoTokenKeys,
    #[error("published key {0:?} has the signing key's kid")]
    KidClash(String),
    #[error("models: {0}")]
    Models(String),
}

/// One attestation request, as the host received it.
#[derive(Debug, Clone)]
pub struct AttestRequest<'a> {
    /// The `Authorization` header.
    pub authorization: Option<&'a str>,
    /// The `Content-Type` header.
    pub content_type: Option<&'a str>,
    pub body: Bytes,
    /// Who is asking, for the failure lockout: the client's IP address as the host knows it.
    pub client: &'a str,
    /// Unix seconds.
    pub now: i64,
}

/// Why no attestation was signed. Each maps to one problem answer.
#[derive(Debug, Clone, PartialEq)]
pub enum AttestError {
    Token(TokenError),
    Capture(CaptureError),
    Refused(Refusal),
    /// The capture failed checks; `checks` holds what was measured when the selfie decoded.
    Rejected {
        failures: Vec<FailedCheck>,
        checks: Option<Box<EdgeChecks>>,
    },
    /// A fault of the service (a model that cannot run, a signing failure): 500.
    Internal(String),
}

impl AttestError {
    /// The problem+json answer.
    pub fn problem(&self) -> Problem {
        match self {
            Self::Token(error) => {
                Problem::new(error.status(), error.code(), "Client token refused")
                    .with_detail(error.to_string())
            }
            Self::Capture(error) => Problem::new(error.status(), error.code(), "Capture not read")
                .with_detail(error.to_string()),
            Self::Refused(Refusal::SessionExhausted) => Problem::new(
                429,
                "session_attempts_exhausted",
                "Too many attempts for this session",
            )
            .with_detail("Start a new verification session."),
            Self::Refused(Refusal::LockedOut { retry_after_secs }) => {
                Problem::new(429, "too_many_failures", "Too many failed attempts")
                    .with_detail(format!("Try again in {retry_after_secs} seconds."))
            }
            Self::Rejected { failures, .. } => {
                let mut problem = Problem::new(
                    422,
                    "capture_rejected",
                    "The capture did not pass the checks",
                )
                .with_detail(
                    failures
                        .iter()
                        .map(|f| f.code.as_str())
                        .collect::<Vec<_>>()
                        .join(", "),
                );
                problem.errors = failures
                    .iter()
                    .map(|f| FieldError {
                        field: f.part.to_owned(),
                        message: f.message.clone(),
                        code: Some(f.code.clone()),
                    })
                    .collect();
                problem
            }
            Self::Internal(_) => Problem::new(500, "internal_error", "Internal error")
                .with_detail("The capture could not be checked; try again."),
        }
    }

    /// Whether this outcome counts against the client's failure lockout: a refused client token
    /// or a capture that failed the checks. A capture that could not be read, a refusal and a
    /// fault of the service do not.
    pub fn counts_as_failure(&self) -> bool {
        matches!(self, Self::Token(_) | Self::Rejected { .. })
    }

    /// Seconds a `429` asks the client to wait.
    pub fn retry_after_secs(&self) -> Option<i64> {
        match self {
            Self::Refused(Refusal::LockedOut { retry_after_secs }) => Some(*retry_after_secs),
            _ => None,
        }
    }
}

/// The edge: everything but the HTTP host.
#[derive(Debug)]
pub struct Edge {
    settings: EdgeSettings,
    tokens: ClientTokenVerifier,
    signing: EdKey,
    published: KeySet,
    checker: Checker,
    guard: AbuseGuard,
}

impl Edge {
    /// An edge that trusts client tokens signed by `token_keys`, signs with `signing`, and
    /// also publishes `retired` (earlier signing keys whose attestations may still be valid).
    pub fn new(
        settings: EdgeSettings,
        token_keys: KeySet,
        signing: EdKey,
        retired: Vec<PublicKey>,
        checker: Checker,
    ) -> Result<Self, SetupError> {
        if !(1..=MAX_ATTESTATION_TTL_SECS).contains(&settings.attestation_ttl_secs) {
            return Err(SetupError::Ttl);
        }
        if token_keys.is_empty() {
            return Err(SetupError::NoTokenKeys);
        }
        let mut published = KeySet::new([signing.public()])
            .map_err(|_| SetupError::KidClash(signing.kid().to_owned()))?;
        for key in retired {
            let kid = key.kid().to_owned();
            published
                .insert(key)
                .map_err(|_| SetupError::KidClash(kid))?;
        }
        Ok(Self {
            tokens: ClientTokenVerifier::new(
                token_keys,
                &settings.token_issuer,
                &settings.token_audience,
            ),
            guard: AbuseGuard::new(settings.abuse),
            settings,
            signing,
            published,
            checker,
        })
    }

    pub fn settings(&self) -> &EdgeSettings {
        &self.settings
    }

    /// `GET /.well-known/jwks.json`: the signing key and the retired keys.
    pub fn jwks(&self) -> JwkSet {
        self.published.jwks()
    }

    /// The keys that verify this edge's attestations.
    pub fn published_keys(&self) -> &KeySet {
        &self.published
    }

    /// What can be refused from the headers alone — a locked-out client, a missing or invalid
    /// client token — before a host reads the body. A refused token counts as a failure. Gives
    /// the token's claims, whose session a host with a shared ledger counts the attempt against.
    pub fn precheck(
        &self,
        authorization: Option<&str>,
        client: &str,
        now: i64,
    ) -> Result<ClientTokenClaims, AttestError> {
        self.guard
            .check_client(client, now)
            .map_err(AttestError::Refused)?;
        token::bearer(authorization)
            .and_then(|token| self.tokens.verify(token, now))
            .map_err(|error| {
                self.guard.record_failure(client, now);
                AttestError::Token(error)
            })
    }

    /// Checks a capture and signs what was seen.
    pub fn attest(&self, request: AttestRequest<'_>) -> Result<AttestResponse, AttestError> {
        let outcome = self.attempt(&request);
        if outcome.as_ref().is_err_and(AttestError::counts_as_failure) {
            self.guard.record_failure(request.client, request.now);
        }
        outcome
    }

    fn attempt(&self, request: &AttestRequest<'_>) -> Result<AttestResponse, AttestError> {
        self.guard
            .check_client(request.client, request.now)
            .map_err(AttestError::Refused)?;
        let claims = token::bearer(request.authorization)
            .and_then(|token| self.tokens.verify(token, request.now))
            .map_err(AttestError::Token)?;
        self.guard
            .admit_session(&claims.sid, claims.exp, request.now)
            .map_err(AttestError::Refused)?;
        let capture = Capture::parse(
            request.content_type,
            request.body.clone(),
            &self.settings.capture,
        )
        .map_err(AttestError::Capture)?;
        let needs = Requirements {
            liveness: claims.liveness,
            require_document: claims.require_document,
            nonce: claims.nonce.clone(),
        };
        let outcome = self
            .checker
            .check(&capture, &needs)
            .map_err(|error| AttestError::Internal(error.to_string()))?;
        let checks = match outcome.checks {
            Some(checks) if outcome.failures.is_empty() => checks,
            checks => {
                return Err(AttestError::Rejected {
                    failures: outcome.failures,
                    checks: checks.map(Box::new),
                });
            }
        };
        let attestation = AttestationClaims {
            iss: self.settings.edge_id.clone(),
            aud: ATTESTATION_AUDIENCE.to_owned(),
            sub: claims.sid.clone(),
            sid: claims.sid,
            nonce: claims.nonce,
            iat: request.now,
            exp: request
                .now
                .saturating_add(self.settings.attestation_ttl_secs),
            jti: random::id("att"),
            images: outcome.images,
            checks: checks.clone(),
            injection_signals: capture.signals,
            models: self.checker.models(),
        };
        let signed = jwt::sign(&attestation, &self.signing)
            .map_err(|error| AttestError::Internal(error.to_string()))?;
        Ok(AttestResponse {
            attestation: signed,
            checks,
        })
    }
}
