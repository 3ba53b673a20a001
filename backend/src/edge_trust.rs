//! Which edges the backend believes: their ids and public keys, from the configuration, from this
//! process's own edge key, and from an edge's JWKS URL (cached; fetched again when an attestation
//! names a key it does not hold, at most once per `attestation.jwks_min_refresh`), so an edge
//! rotates its key without a backend restart.

use std::sync::{Arc, RwLock};
use std::time::Instant;

use anyhow::Context;
use idyntra_edge::{AttestationError, AttestationVerifier, KeySet, PublicKey};
use idyntra_types::{AttestationClaims, JwkSet};
use tokio::sync::Mutex;

use crate::config::Config;

#[derive(Debug)]
pub struct EdgeTrust {
    issuers: Vec<String>,
    /// Keys from the configuration; never replaced.
    configured: Vec<PublicKey>,
    jwks: Option<JwksSource>,
    verifier: RwLock<Arc<AttestationVerifier>>,
}

#[derive(Debug)]
struct JwksSource {
    url: String,
    client: reqwest::Client,
    min_refresh: std::time::Duration,
    /// When the last fetch started; one fetch at a time.
    last_fetch: Mutex<Option<Instant>>,
}

impl EdgeTrust {
    /// The edges of `config`. The edge key of this configuration is trusted whenever this
    /// process has one (embedded edge, or `edge.private_key` set).
    pub fn new(config: &Config) -> anyhow::Result<Self> {
        let mut issuers = config.attestation.trusted_issuers.clone();
        let mut configured = Vec::new();
        for key in &config.attestation.edge_keys {
            configured.push(
                PublicKey::from_x(&key.kid, &key.x)
                    .with_context(|| format!("attestation.edge_keys: {:?}", key.kid))?,
            );
        }
        if config.edge.embedded || config.edge.private_key.is_some() {
            issuers.push(config.edge.id.clone());
            configured.push(crate::app::edge_signing_key(config)?.public());
            for key in &config.edge.retired_keys {
                configured.push(
                    PublicKey::from_x(&key.kid, &key.x)
                        .with_context(|| format!("edge.retired_keys: {:?}", key.kid))?,
                );
            }
        }
        issuers.sort();
        issuers.dedup();
        let jwks = match &config.attestation.jwks_url {
            Some(url) => Some(JwksSource {
                url: url.clone(),
                client: reqwest::Client::builder()
                    .timeout(config.attestation.jwks_timeout)
                    .build()
                    .context("attestation.jwks_url client")?,
                min_refresh: config.attestation.jwks_min_refresh,
                last_fetch: Mutex::new(None),
            }),
            None => None,
        };
        let verifier = verifier_of(&issuers, &configured, None)?;
        Ok(Self {
            issuers,
            configured,
            jwks,
            verifier: RwLock::new(Arc::new(verifier)),
        })
    }

    /// Fetches the JWKS now (at start-up); a failure is logged and retried on the next unknown
    /// key, the configured keys keep working meanwhile.
    pub async fn prefetch(&self) {
        if self.jwks.is_some()
            && let Err(error) = self.refresh().await
        {
            tracing::warn!(error = format!("{error:#}"), "edge JWKS not fetched");
        }
    }

    /// The claims of `token` if a trusted edge attested a capture of `session_id` with `nonce`,
    /// valid at `now` (Unix seconds). Replay is the caller's to check.
    pub async fn verify(
        &self,
        token: &str,
        session_id: &str,
        nonce: &str,
        now: i64,
    ) -> Result<AttestationClaims, AttestationError> {
        let verifier = self.current();
        match verifier.verify(token, session_id, nonce, now) {
            Err(AttestationError::UnknownKey) if self.jwks.is_some() => {
                match self.refresh().await {
                    Ok(true) => self.current().verify(token, session_id, nonce, now),
                    Ok(false) => Err(AttestationError::UnknownKey),
                    Err(error) => {
                        tracing::warn!(error = format!("{error:#}"), "edge JWKS not fetched");
                        Err(AttestationError::UnknownKey)
                    }
                }
            }
            other => other,
        }
    }

    fn current(&self) -> Arc<AttestationVerifier> {
        self.verifier
            .read()
            .unwrap_or_else(|poison| poison.into_inner())
            .clone()
    }

    /// Fetches the JWKS unless a fetch started less than `min_refresh` ago; `true` when the keys
    /// were replaced.
    async fn refresh(&self) -> anyhow::Result<bool> {
        let Some(source) = &self.jwks else {
            return Ok(false);
        };
        let mut last = source.last_fetch.lock().await;
        if last.is_some_and(|at| at.elapsed() < source.min_refresh) {
            return Ok(false);
        }
        *last = Some(Instant::now());
        let jwks: JwkSet = source
            .client
            .get(&source.url)
            .send()
            .await
            .and_then(reqwest::Response::error_for_status)
            .with_context(|| format!("GET {}", source.url))?
            .json()
            .await
            .with_context(|| format!("{} is not a JWKS", source.url))?;
        let fetched = KeySet::from_jwks(&jwks).context("edge JWKS")?;
        let verifier = verifier_of(&self.issuers, &self.configured, Some(&jwks))?;
        tracing::info!(url = %source.url, keys = ?fetched, "edge JWKS fetched");
        *self
            .verifier
            .write()
            .unwrap_or_else(|poison| poison.into_inner()) = Arc::new(verifier);
        Ok(true)
    }
}

/// A verifier trusting `configured` keys and those of `jwks` (a configured kid wins).
fn verifier_of(
    issuers: &[String],
    configured: &[PublicKey],
    jwks: Option<&JwkSet>,
) -> anyhow::Result<AttestationVerifier> {
    let mut keys = KeySet::new(configured.iter().cloned()).context("edge keys")?;
    if let Some(jwks) = jwks {
        for jwk in jwks
            .keys
            .iter()
            .filter(|jwk| jwk.kty == "OKP" && jwk.crv == "Ed25519")
        {
            if keys.get(&jwk.kid).is_none() {
                keys.insert(PublicKey::from_x(&jwk.kid, &jwk.x).context("edge JWKS")?)
                    .context("edge JWKS")?;
            }
        }
    }
    Ok(AttestationVerifier::new(keys, issuers))
}
