//! Settings of the verification pipeline: trusted edges, encrypted media, inference, the decision
//! policy, webhooks and the job runner.

use std::path::PathBuf;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde::{Deserialize, Serialize};

use super::{ConfigError, Profile, RetiredKey, Secret, check_public_keys, duration, duration_text};

/// Which edges' attestations the backend accepts.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct AttestationConfig {
    /// Edge ids (`iss`) trusted besides the embedded edge, e.g. the Worker's.
    pub trusted_issuers: Vec<String>,
    /// Public keys of those edges (the embedded edge's are always trusted).
    pub edge_keys: Vec<RetiredKey>,
    /// An edge's key set (`https://edge.example.com/.well-known/jwks.json`), fetched at start-up
    /// and again when an attestation names a key it does not hold, so edge keys rotate without a
    /// restart.
    pub jwks_url: Option<String>,
    /// Least time between two fetches of `jwks_url` (an unknown `kid` cannot force more).
    #[serde(deserialize_with = "duration", serialize_with = "duration_text")]
    pub jwks_min_refresh: Duration,
    /// Time allowed for one fetch.
    #[serde(deserialize_with = "duration", serialize_with = "duration_text")]
    pub jwks_timeout: Duration,
}

impl Default for AttestationConfig {
    fn default() -> Self {
        Self {
            trusted_issuers: Vec::new(),
            edge_keys: Vec::new(),
            jwks_url: None,
            jwks_min_refresh: Duration::from_secs(30),
            jwks_timeout: Duration::from_secs(5),
        }
    }
}

/// A master key that wraps sessions' data keys.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct MasterKey {
    pub kid: String,
    /// AES-256 key: base64 of 32 random bytes (`openssl rand -base64 32`).
    pub key: Secret,
}

/// Uploaded images: encryption at rest and how long they are kept.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct MediaConfig {
    /// Key id of `master_key`, stored beside every data key it wraps.
    pub master_kid: String,
    /// AES-256 master key: base64 of 32 random bytes. `dev` generates one in `data_dir`.
    pub master_key: Option<Secret>,
    /// Earlier master keys, kept to unwrap the data keys they wrapped until those are purged.
    pub retired_master_keys: Vec<MasterKey>,
    /// Media of a decided session is purged this long after the decision.
    #[serde(deserialize_with = "duration", serialize_with = "duration_text")]
    pub retention: Duration,
    /// Largest media upload body.
    pub max_body_bytes: usize,
    /// Most `selfie` parts (the selfie and the challenge frames) in one upload.
    pub max_frames: usize,
}

impl Default for MediaConfig {
    fn default() -> Self {
        Self {
            master_kid: "media-1".to_owned(),
            master_key: None,
            retired_master_keys: Vec::new(),
            retention: Duration::from_secs(24 * 60 * 60),
            max_body_bytes: 24 * 1024 * 1024,
            max_frames: 40,
        }
    }
}

/// Where the models run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Device {
    /// A GPU when this build has one and the machine offers one, else the CPU.
    #[default]
    Auto,
    Gpu,
    Cpu,
}

/// What runs the face-embedding model on the CPU.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum CpuEngine {
    Tract,
    /// burn's `flex` backend; needs a build with the `burn` feature.
    Burn,
}

/// The face models of finalize.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct InferenceConfig {
    pub device: Device,
    /// The engine of the embedding model on the CPU (`device = cpu`, or `auto` without a GPU build).
    pub cpu_engine: CpuEngine,
    /// Model runs at once (0: one per CPU core).
    pub workers: usize,
    /// Runs waiting for a worker before more are refused with `503`.
    pub queue: usize,
    /// Most face crops embedded in one run of the model: concurrent finalizes' crops are
    /// gathered into one batch.
    pub batch_crops: usize,
    /// How long a batch waits after its first pair for more before it runs (0: it takes what is
    /// waiting when a worker is free, and never waits).
    #[serde(deserialize_with = "duration", serialize_with = "duration_text")]
    pub batch_wait: Duration,
    /// How long what the models found in a session's images (face count, embedding) is kept,
    /// sealed with the session's data key, for a repeated finalize (0: not kept).
    #[serde(deserialize_with = "duration", serialize_with = "duration_text")]
    pub cache_ttl: Duration,
    /// Longest one finalize may spend in the models.
    #[serde(deserialize_with = "duration", serialize_with = "duration_text")]
    pub timeout: Duration,
    /// Consecutive failures that open the circuit breaker.
    pub breaker_failures: u32,
    /// How long an open breaker refuses before it lets one run try again.
    #[serde(deserialize_with = "duration", serialize_with = "duration_text")]
    pub breaker_cooldown: Duration,
    /// Fault drills: while this file exists every model run fails, as an engine failing
    /// repeatedly would (the breaker opens; removing the file lets it close). Refused in `prod`.
    pub fault_marker: Option<PathBuf>,
}

impl Default for InferenceConfig {
    fn default() -> Self {
        Self {
            device: Device::Auto,
            // burn's flex backend measured 4.3× faster than tract on MobileFaceNet
            // (docs/PERFORMANCE.md): it is the default wherever the build has it.
            cpu_engine: if cfg!(feature = "burn") {
                CpuEngine::Burn
            } else {
                CpuEngine::Tract
            },
            workers: 0,
            queue: 64,
            // On a GPU a batch of many crops costs little more than one of two: on an H200, 128
            // crops gave the most crops a second, and a short wait fills batches under load. On
            // the CPU larger batches measured slower per crop (docs/PERFORMANCE.md): each
            // finalize runs alone, never waiting.
            batch_crops: if cfg!(feature = "gpu") { 128 } else { 2 },
            batch_wait: if cfg!(feature = "gpu") {
                Duration::from_millis(5)
            } else {
                Duration::ZERO
            },
            cache_ttl: Duration::from_secs(600),
            timeout: Duration::from_secs(10),
            breaker_failures: 5,
            breaker_cooldown: Duration::from_secs(30),
            fault_marker: None,
        }
    }
}

/// What to decide when a check could not run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum WhenUnchecked {
    /// A person looks: `needs_review`.
    Review,
    /// Decide on the other checks alone.
    Ignore,
}

/// What the score of a model too weak to rely on by default counts for (the passive
/// presentation-attack score, the manipulation score).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SignalUse {
    /// Shown in the result; the session counts as one where that check did not run.
    Advisory,
    /// The check's verdict: the session's liveness evidence when it had no active challenge,
    /// or its manipulation check.
    Evidence,
}

/// The decision policy of finalize.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct DecisionConfig {
    /// Face-match threshold (cosine); absent: the bundled model's calibrated one.
    pub face_match_threshold: Option<f32>,
    /// When the capture carries no liveness evidence (a passive session whose passive score is
    /// not evidence, see `passive_pad`).
    pub liveness_unchecked: WhenUnchecked,
    /// What the edge's passive presentation-attack score is to the decision of a session
    /// without an active challenge: `advisory` (recorded in the result, decides nothing) or
    /// `evidence` (its verdict is the session's liveness).
    pub passive_pad: SignalUse,
    /// What the manipulation score is to the decision: `advisory` (recorded in the result,
    /// decides nothing: the session counts as unchecked for manipulation) or `evidence` (a
    /// flagged face is rejected with `deepfake_suspected`, one not flagged counts as checked).
    pub manipulation: SignalUse,
    /// Manipulation score at or above which a face is flagged; absent: the bundled model's
    /// calibrated one.
    pub manipulation_threshold: Option<f32>,
    /// When no manipulation detector ran, or its score is only advisory.
    pub manipulation_unchecked: WhenUnchecked,
    /// Longest a synchronous finalize waits for its decision before answering `202` and
    /// finishing in the background.
    #[serde(deserialize_with = "duration", serialize_with = "duration_text")]
    pub sync_deadline: Duration,
}

impl Default for DecisionConfig {
    fn default() -> Self {
        Self {
            face_match_threshold: None,
            liveness_unchecked: WhenUnchecked::Review,
            passive_pad: SignalUse::Advisory,
            manipulation: SignalUse::Advisory,
            manipulation_threshold: None,
            manipulation_unchecked: WhenUnchecked::Review,
            sync_deadline: Duration::from_secs(20),
        }
    }
}

/// Webhook deliveries.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct WebhookConfig {
    /// Time allowed for the receiver to answer.
    #[serde(deserialize_with = "duration", serialize_with = "duration_text")]
    pub timeout: Duration,
    /// First retry delay; each retry doubles it (with jitter) up to `max_backoff`.
    #[serde(deserialize_with = "duration", serialize_with = "duration_text")]
    pub initial_backoff: Duration,
    #[serde(deserialize_with = "duration", serialize_with = "duration_text")]
    pub max_backoff: Duration,
    /// A delivery is retried until this long after the event.
    #[serde(deserialize_with = "duration", serialize_with = "duration_text")]
    pub retry_for: Duration,
    /// Receivers on loopback and private addresses (tests, `dev`); refused in `prod`.
    pub allow_private_targets: bool,
}

impl Default for WebhookConfig {
    fn default() -> Self {
        Self {
            timeout: Duration::from_secs(10),
            initial_backoff: Duration::from_secs(10),
            max_backoff: Duration::from_secs(60 * 60),
            retry_for: Duration::from_secs(72 * 60 * 60),
            allow_private_targets: false,
        }
    }
}

/// The job runner.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct JobsConfig {
    /// Run jobs inside `idyntra serve` too (the single-binary setup); off when `idyntra worker`
    /// processes run them.
    pub in_server: bool,
    /// Jobs run at once by one process.
    pub concurrency: usize,
    /// How often an idle runner looks for due jobs.
    #[serde(deserialize_with = "duration", serialize_with = "duration_text")]
    pub poll_interval: Duration,
    /// A claimed job not finished within this is taken to have crashed and is run again.
    #[serde(deserialize_with = "duration", serialize_with = "duration_text")]
    pub lease: Duration,
    /// How often the retention sweep runs.
    #[serde(deserialize_with = "duration", serialize_with = "duration_text")]
    pub retention_interval: Duration,
}

impl Default for JobsConfig {
    fn default() -> Self {
        Self {
            in_server: true,
            concurrency: 4,
            poll_interval: Duration::from_millis(500),
            lease: Duration::from_secs(60),
            retention_interval: Duration::from_secs(5 * 60),
        }
    }
}

/// The 32 bytes of a base64 AES-256 key.
pub fn aes_key(setting: &'static str, secret: &Secret) -> Result<[u8; 32], ConfigError> {
    STANDARD
        .decode(secret.expose().trim())
        .ok()
        .and_then(|bytes| <[u8; 32]>::try_from(bytes).ok())
        .ok_or_else(|| ConfigError::invalid(setting, "must be the base64 of 32 random bytes"))
}

/// The rules of the pipeline settings.
pub fn validate(config: &super::Config) -> Result<(), ConfigError> {
    let attestation = &config.attestation;
    check_public_keys("attestation.edge_keys", "", &attestation.edge_keys)?;
    if let Some(url) = &attestation.jwks_url {
        let https = url.starts_with("https://");
        if !(https || url.starts_with("http://")) {
            return Err(ConfigError::invalid(
                "attestation.jwks_url",
                "must be an http:// or https:// URL",
            ));
        }
        if !https && config.profile == Profile::Prod {
            return Err(ConfigError::invalid(
                "attestation.jwks_url",
                "must be https:// in the prod profile",
            ));
        }
    }
    let media = &config.media;
    if let Some(key) = &media.master_key {
        aes_key("media.master_key", key)?;
    }
    for (i, retired) in media.retired_master_keys.iter().enumerate() {
        aes_key("media.retired_master_keys", &retired.key)?;
        if retired.kid == media.master_kid
            || media.retired_master_keys[..i]
                .iter()
                .any(|k| k.kid == retired.kid)
        {
            return Err(ConfigError::invalid(
                "media.retired_master_keys",
                format!("kid {:?} appears twice", retired.kid),
            ));
        }
    }
    if media.retention < Duration::from_secs(60) {
        return Err(ConfigError::invalid(
            "media.retention",
            "must be at least 1 minute",
        ));
    }
    if !(1024..=256 * 1024 * 1024).contains(&media.max_body_bytes) {
        return Err(ConfigError::invalid(
            "media.max_body_bytes",
            "must be 1 KiB to 256 MiB",
        ));
    }
    if !(1..=200).contains(&media.max_frames) {
        return Err(ConfigError::invalid("media.max_frames", "must be 1 to 200"));
    }
    let inference = &config.inference;
    if inference.queue == 0 || inference.timeout.is_zero() || inference.breaker_failures == 0 {
        return Err(ConfigError::invalid(
            "inference",
            "queue, timeout and breaker_failures must be greater than zero",
        ));
    }
    if !(2..=256).contains(&inference.batch_crops) {
        return Err(ConfigError::invalid(
            "inference.batch_crops",
            "must be 2 (one pair) to 256",
        ));
    }
    if inference.cache_ttl > Duration::from_secs(3600) {
        return Err(ConfigError::invalid(
            "inference.cache_ttl",
            "must be at most 1h: it holds biometric templates",
        ));
    }
    if inference.batch_wait > Duration::from_secs(1) {
        return Err(ConfigError::invalid(
            "inference.batch_wait",
            "must be at most 1s",
        ));
    }
    if let Some(threshold) = config.decision.face_match_threshold
        && !(-1.0..=1.0).contains(&threshold)
    {
        return Err(ConfigError::invalid(
            "decision.face_match_threshold",
            "must be a cosine similarity, -1 to 1",
        ));
    }
    let webhooks = &config.webhooks;
    if webhooks.initial_backoff.is_zero() || webhooks.max_backoff < webhooks.initial_backoff {
        return Err(ConfigError::invalid(
            "webhooks.max_backoff",
            "must be at least initial_backoff, which must be greater than zero",
        ));
    }
    if webhooks.retry_for < Duration::from_secs(24 * 60 * 60) && config.profile == Profile::Prod {
        return Err(ConfigError::invalid(
            "webhooks.retry_for",
            "must be at least 24h in the prod profile",
        ));
    }
    if webhooks.allow_private_targets && config.profile == Profile::Prod {
        return Err(ConfigError::invalid(
            "webhooks.allow_private_targets",
            "is refused in the prod profile",
        ));
    }
    let jobs = &config.jobs;
    if jobs.concurrency == 0 || jobs.lease < Duration::from_secs(1) {
        return Err(ConfigError::invalid(
            "jobs",
            "concurrency must be at least 1 and lease at least 1s",
        ));
    }
    if config.profile != Profile::Dev && media.master_key.is_none() {
        return Err(ConfigError::invalid(
            "media.master_key",
            format!(
                "required in the {} profile (IDYNTRA_MEDIA__MASTER_KEY_FILE)",
                config.profile
            ),
        ));
    }
    Ok(())
}
