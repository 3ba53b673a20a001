//! Typed configuration, layered: defaults → `idyntra.toml` → `IDYNTRA_*` environment → `*_FILE` secrets.
//!
//! Parsed once at start-up and validated against the profile; every refusal names the setting.

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use figment::Figment;
use figment::providers::Serialized;
use figment::providers::{Format, Toml};
use figment::value::Value;
use ipnet::IpNet;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

mod pipeline;

pub use pipeline::{
    AttestationConfig, CpuEngine, DecisionConfig, Device, InferenceConfig, JobsConfig, MasterKey,
    MediaConfig, SignalUse, WebhookConfig, WhenUnchecked, aes_key,
};

/// Environment variable prefix of every setting.
pub const ENV_PREFIX: &str = "IDYNTRA_";
/// Environment variable naming the TOML file (default `idyntra.toml` in the working directory).
pub const CONFIG_FILE_ENV: &str = "IDYNTRA_CONFIG";

/// Deployment profile; stricter rules apply outside `dev`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Profile {
    #[default]
    Dev,
    Staging,
    Prod,
}

impl fmt::Display for Profile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Profile::Dev => "dev",
            Profile::Staging => "staging",
            Profile::Prod => "prod",
        })
    }
}

/// A secret value: never shown by `Debug` or `Display`, so it cannot leak into logs.
/// (`Serialize` only feeds the defaults layer of the configuration; nothing else serializes it.)
#[derive(Clone, Deserialize, Serialize, PartialEq, Eq)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    pub profile: Profile,
    /// Address the API listens on.
    pub listen: SocketAddr,
    /// Directory of the embedded database and of generated dev secrets.
    pub data_dir: PathBuf,
    /// `postgres://…` or `sqlite://…`; unset means SQLite in `data_dir`.
    pub database_url: Option<Secret>,
    /// Allow SQLite in the `prod` profile (single-node deployments that accept its limits).
    pub allow_sqlite_in_prod: bool,
    /// `redis://…`; unset means in-process rate limits (per instance).
    pub redis_url: Option<Secret>,
    /// Prefix of every Redis key, so several deployments can share one Redis.
    pub redis_key_prefix: String,
    /// Name of this backend in the tokens it issues (`iss`).
    pub issuer: String,
    pub database: DatabaseConfig,
    pub http: HttpConfig,
    pub rate_limit: RateLimitConfig,
    pub api_keys: ApiKeysConfig,
    pub signing: SigningConfig,
    pub sessions: SessionsConfig,
    pub edge: EdgeConfig,
    pub attestation: AttestationConfig,
    pub media: MediaConfig,
    pub inference: InferenceConfig,
    pub decision: DecisionConfig,
    pub webhooks: WebhookConfig,
    pub jobs: JobsConfig,
    pub log: LogConfig,
    pub demo: DemoConfig,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            profile: Profile::Dev,
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            data_dir: PathBuf::from("data"),
            database_url: None,
            allow_sqlite_in_prod: false,
            redis_url: None,
            redis_key_prefix: "idyntra:".to_owned(),
            issuer: "idyntra".to_owned(),
            database: DatabaseConfig::default(),
            http: HttpConfig::default(),
            rate_limit: RateLimitConfig::default(),
            api_keys: ApiKeysConfig::default(),
            signing: SigningConfig::default(),
            sessions: SessionsConfig::default(),
            edge: EdgeConfig::default(),
            attestation: AttestationConfig::default(),
            media: MediaConfig::default(),
            inference: InferenceConfig::default(),
            decision: DecisionConfig::default(),
            webhooks: WebhookConfig::default(),
            jobs: JobsConfig::default(),
            demo: DemoConfig::default(),
            log: LogConfig::default(),
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct DatabaseConfig {
    pub max_connections: u32,
    #[serde(deserialize_with = "duration", serialize_with = "duration_text")]
    pub acquire_timeout: Duration,
    /// Longest a readiness probe waits for the database.
    #[serde(deserialize_with = "duration", serialize_with = "duration_text")]
    pub ping_timeout: Duration,
}

impl Default for DatabaseConfig {
    fn default() -> Self {
        Self {
            max_connections: 16,
            acquire_timeout: Duration::from_secs(3),
            ping_timeout: Duration::from_secs(2),
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct HttpConfig {
    /// Origins allowed to call the API from a browser; `*` only in `dev`.
    pub allowed_origins: Vec<String>,
    /// Host names the API answers to; `*` (any) only in `dev`.
    pub allowed_hosts: Vec<String>,
    /// Proxies whose `X-Forwarded-For` is believed.
    pub trusted_proxies: Vec<IpNet>,
    /// Largest accepted JSON request body.
    pub max_body_bytes: usize,
    #[serde(deserialize_with = "duration", serialize_with = "duration_text")]
    pub request_timeout: Duration,
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self {
            allowed_origins: vec![
                "http://127.0.0.1:8080".to_owned(),
                "http://localhost:8080".to_owned(),
            ],
            allowed_hosts: vec!["*".to_owned()],
            trusted_proxies: Vec::new(),
            max_body_bytes: 64 * 1024,
            request_timeout: Duration::from_secs(30),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Limit {
    pub requests: u64,
    #[serde(deserialize_with = "duration", serialize_with = "duration_text")]
    pub window: Duration,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct RateLimitConfig {
    pub enabled: bool,
    pub per_key: Limit,
    pub per_ip: Limit,
    /// After Redis fails, how long to use the in-process limiter before trying Redis again.
    #[serde(deserialize_with = "duration", serialize_with = "duration_text")]
    pub redis_retry_after: Duration,
    #[serde(deserialize_with = "duration", serialize_with = "duration_text")]
    pub redis_timeout: Duration,
}

impl Default for RateLimitConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            per_key: Limit {
                requests: 6000,
                window: Duration::from_secs(60),
            },
            per_ip: Limit {
                requests: 12000,
                window: Duration::from_secs(60),
            },
            redis_retry_after: Duration::from_secs(1),
            redis_timeout: Duration::from_millis(250),
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct ApiKeysConfig {
    /// Server secret mixed into every stored key hash (HMAC-SHA256 key). At least 32 bytes.
    pub pepper: Option<Secret>,
    /// How long a verified key is trusted without asking the database again (`0s` disables it);
    /// a revocation takes up to this long to reach every instance.
    #[serde(deserialize_with = "duration", serialize_with = "duration_text")]
    pub cache_ttl: Duration,
}

impl Default for ApiKeysConfig {
    fn default() -> Self {
        Self {
            pepper: None,
            cache_ttl: Duration::from_secs(5),
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct SigningConfig {
    /// Key id put in the header of client tokens.
    pub kid: String,
    /// Ed25519 key: a PKCS#8 PEM or the base64 of the 32-byte seed.
    pub private_key: Option<Secret>,
    /// Public keys of earlier signing keys, still published so tokens they signed verify until
    /// they expire (rotation with overlap).
    pub retired_keys: Vec<RetiredKey>,
}

/// An earlier signing key's public half.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RetiredKey {
    pub kid: String,
    /// The Ed25519 public key, base64url (a JWK's `x`).
    pub x: String,
}

impl Default for SigningConfig {
    fn default() -> Self {
        Self {
            kid: "backend-1".to_owned(),
            private_key: None,
            retired_keys: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct SessionsConfig {
    /// How long after creation a session can be submitted.
    #[serde(deserialize_with = "duration", serialize_with = "duration_text")]
    pub ttl: Duration,
    /// Lifetime of the browser's client token.
    #[serde(deserialize_with = "duration", serialize_with = "duration_text")]
    pub client_token_ttl: Duration,
    /// Audience of client tokens: the edge and the backend.
    pub client_token_audience: Vec<String>,
}

impl Default for SessionsConfig {
    fn default() -> Self {
        Self {
            ttl: Duration::from_secs(60 * 60),
            client_token_ttl: Duration::from_secs(15 * 60),
            client_token_audience: vec!["idyntra-edge".to_owned(), "idyntra-backend".to_owned()],
        }
    }
}

/// The demo onboarding page at `/demo`: served in the `dev` profile only, whatever this says.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct DemoConfig {
    pub enabled: bool,
    /// The built browser SDK (`npm run build` in `browser-sdk/`).
    pub sdk_dir: PathBuf,
    /// The account the demo's sessions belong to (created on first use).
    pub account: String,
}

impl Default for DemoConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            sdk_dir: PathBuf::from("browser-sdk/dist"),
            account: "demo".to_owned(),
        }
    }
}

/// The edge attestation service: embedded in the API server, or alone with `idyntra edge serve`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct EdgeConfig {
    /// Serve `POST /v1/attest` from the API server too (the single-binary setup).
    pub embedded: bool,
    /// This edge's id: the `iss` of its attestations.
    pub id: String,
    /// Key id of the attestation signing key.
    pub kid: String,
    /// Ed25519 attestation signing key: a PKCS#8 PEM or the base64 of the 32-byte seed.
    pub private_key: Option<Secret>,
    /// Public keys of earlier attestation keys, still published until what they signed expires.
    pub retired_keys: Vec<RetiredKey>,
    /// Public keys of the backend that signs client tokens, for an edge that runs apart from it
    /// (the backend's own key, when configured here, is always trusted).
    pub client_token_keys: Vec<RetiredKey>,
    /// Lifetime of an attestation, at most 10 minutes.
    #[serde(deserialize_with = "duration", serialize_with = "duration_text")]
    pub attestation_ttl: Duration,
    /// Address `idyntra edge serve` listens on.
    pub listen: SocketAddr,
    /// Largest `POST /v1/attest` body.
    pub max_body_bytes: usize,
    /// Most `selfie` parts (the selfie and the challenge frames) in one capture.
    pub max_frames: usize,
    /// Captures checked at once (0: one per CPU core); more are answered `503`.
    pub concurrency: usize,
    /// The passive presentation-attack model on the selfie: `off`, `record` (attest its score,
    /// refuse nothing) or `enforce` (refuse a selfie under the threshold).
    pub passive_pad: PassivePadMode,
    /// Lowest passing liveness score (1 − the model's attack score); absent: the model authors'
    /// threshold, 0.8.
    pub passive_pad_threshold: Option<f32>,
}

/// What the edge does with the passive presentation-attack model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PassivePadMode {
    /// The model is not loaded.
    #[default]
    Off,
    /// Every attestation carries the score; no capture is refused for it.
    Record,
    /// A selfie under the threshold is refused with `spoof_suspected`.
    Enforce,
}

impl Default for EdgeConfig {
    fn default() -> Self {
        Self {
            embedded: true,
            id: "idyntra-edge".to_owned(),
            kid: "edge-1".to_owned(),
            private_key: None,
            retired_keys: Vec::new(),
            client_token_keys: Vec::new(),
            attestation_ttl: Duration::from_secs(5 * 60),
            listen: SocketAddr::from(([127, 0, 0, 1], 8787)),
            max_body_bytes: 24 * 1024 * 1024,
            max_frames: 40,
            concurrency: 0,
            passive_pad: PassivePadMode::Off,
            passive_pad_threshold: None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Json,
    Pretty,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogConfig {
    pub format: LogFormat,
    /// `tracing` filter directive, e.g. `info` or `idyntra_backend=debug`.
    pub level: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            format: LogFormat::Json,
            level: "info".to_owned(),
        }
    }
}

/// Why the configuration could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("configuration: {0}")]
    Parse(String),
    #[error("configuration: {setting}: {message}")]
    Invalid {
        setting: &'static str,
        message: String,
    },
}

impl ConfigError {
    fn invalid(setting: &'static str, message: impl Into<String>) -> Self {
        Self::Invalid {
            setting,
            message: message.into(),
        }
    }
}

impl Config {
    /// Loads the layers from the process environment and the config file it names.
    pub fn load() -> Result<Self, ConfigError> {
        let vars: Vec<(String, String)> = std::env::vars().collect();
        let file = vars
            .iter()
            .find(|(name, _)| name == CONFIG_FILE_ENV)
            .map(|(_, value)| PathBuf::from(value));
        Self::from_layers(file.as_deref(), &vars)
    }

    /// Builds the configuration from an optional TOML file and environment variables (given
    /// explicitly so tests do not depend on the process environment).
    pub fn from_layers(
        file: Option<&Path>,
        vars: &[(String, String)],
    ) -> Result<Self, ConfigError> {
        let config = Self::extract(file, vars)?;
        config.validate()?;
        Ok(config)
    }

    /// Loads the configuration of `idyntra edge serve`: the rules of the edge only, so an edge
    /// deployed apart from the backend needs none of the backend's secrets.
    pub fn load_edge() -> Result<Self, ConfigError> {
        let vars: Vec<(String, String)> = std::env::vars().collect();
        let file = vars
            .iter()
            .find(|(name, _)| name == CONFIG_FILE_ENV)
            .map(|(_, value)| PathBuf::from(value));
        let config = Self::extract(file.as_deref(), &vars)?;
        config.validate_edge()?;
        Ok(config)
    }

    fn extract(file: Option<&Path>, vars: &[(String, String)]) -> Result<Self, ConfigError> {
        // Defaults are a layer too, so a partial override (one field of a table) keeps the rest.
        let mut figment = Figment::from(Serialized::defaults(Config::default()));
        match file {
            Some(path) => {
                if !path.exists() {
                    return Err(ConfigError::invalid(
                        "IDYNTRA_CONFIG",
                        format!("file {} does not exist", path.display()),
                    ));
                }
                figment = figment.merge(Toml::file(path));
            }
            None => figment = figment.merge(Toml::file("idyntra.toml")),
        }
        // Environment layer: `IDYNTRA_A__B=v` sets `a.b`; values parse like TOML (numbers, arrays).
        // `X_FILE=/run/secrets/x` sets `X` to the file's content (Docker and Kubernetes secrets).
        for (name, value) in vars {
            let Some(setting) = name.strip_prefix(ENV_PREFIX) else {
                continue;
            };
            if name == CONFIG_FILE_ENV {
                continue;
            }
            let (setting, value) = match setting.strip_suffix("_FILE") {
                Some(setting) => {
                    let content = std::fs::read_to_string(value).map_err(|error| {
                        ConfigError::Parse(format!("{name}: cannot read {value}: {error}"))
                    })?;
                    (setting, Value::from(content.trim().to_owned()))
                }
                // Secrets and URLs stay strings whatever they look like (and never get echoed back
                // by a type error).
                None if is_string_setting(setting) => (setting, Value::from(value.clone())),
                None => (
                    setting,
                    value
                        .parse::<Value>()
                        .unwrap_or_else(|_| Value::from(value.clone())),
                ),
            };
            let key = setting.to_ascii_lowercase().replace("__", ".");
            figment = figment.merge((key, value));
        }
        figment
            .extract()
            .map_err(|error| ConfigError::Parse(error.to_string()))
    }

    /// Whether the database is the embedded SQLite one.
    pub fn uses_sqlite(&self) -> bool {
        self.database_url
            .as_ref()
            .is_none_or(|url| url.expose().starts_with("sqlite:"))
    }

    /// Checks the rules of the profile. Secrets that `dev` may generate are checked here for the
    /// other profiles only.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if let Some(url) = &self.database_url {
            let url = url.expose();
            if !(url.starts_with("postgres://")
                || url.starts_with("postgresql://")
                || url.starts_with("sqlite:"))
            {
                return Err(ConfigError::invalid(
                    "database_url",
                    "must start with postgres://, postgresql:// or sqlite:",
                ));
            }
        }
        if let Some(url) = &self.redis_url
            && !(url.expose().starts_with("redis://") || url.expose().starts_with("rediss://"))
        {
            return Err(ConfigError::invalid(
                "redis_url",
                "must start with redis:// or rediss://",
            ));
        }
        if self
            .decision
            .manipulation_threshold
            .is_some_and(|threshold| !(0.0..=1.0).contains(&threshold))
        {
            return Err(ConfigError::invalid(
                "decision.manipulation_threshold",
                "must be 0 to 1 (the probability that a face was blended in)",
            ));
        }
        for (setting, limit) in [
            ("rate_limit.per_key", self.rate_limit.per_key),
            ("rate_limit.per_ip", self.rate_limit.per_ip),
        ] {
            if limit.requests == 0 || limit.window.is_zero() {
                return Err(ConfigError::invalid(
                    setting,
                    "requests and window must be greater than zero",
                ));
            }
        }
        if self.http.max_body_bytes < 1024 {
            return Err(ConfigError::invalid(
                "http.max_body_bytes",
                "must be at least 1024",
            ));
        }
        self.check_origins()?;
        if let Some(pepper) = &self.api_keys.pepper
            && pepper.expose().len() < 32
        {
            return Err(ConfigError::invalid(
                "api_keys.pepper",
                "must be at least 32 characters of random data",
            ));
        }
        check_public_keys(
            "signing.retired_keys",
            &self.signing.kid,
            &self.signing.retired_keys,
        )?;
        self.validate_edge_settings()?;
        pipeline::validate(self)?;
        if self.edge.embedded && !self.sessions.client_token_audience.contains(&self.edge.id) {
            return Err(ConfigError::invalid(
                "sessions.client_token_audience",
                format!(
                    "must include edge.id {:?}: the embedded edge accepts only client tokens addressed to it",
                    self.edge.id
                ),
            ));
        }
        if self.profile == Profile::Dev {
            return Ok(());
        }
        let profile = self.profile;
        if self.http.allowed_hosts.is_empty() || self.http.allowed_hosts.iter().any(|h| h == "*") {
            return Err(ConfigError::invalid(
                "http.allowed_hosts",
                format!(
                    "wildcard or empty host list is refused in the {profile} profile; list the host names"
                ),
            ));
        }
        if self.api_keys.pepper.is_none() {
            return Err(ConfigError::invalid(
                "api_keys.pepper",
                format!(
                    "required in the {profile} profile (IDYNTRA_API_KEYS__PEPPER or IDYNTRA_API_KEYS__PEPPER_FILE)"
                ),
            ));
        }
        if self.signing.private_key.is_none() {
            return Err(ConfigError::invalid(
                "signing.private_key",
                format!(
                    "required in the {profile} profile (IDYNTRA_SIGNING__PRIVATE_KEY or IDYNTRA_SIGNING__PRIVATE_KEY_FILE)"
                ),
            ));
        }
        if self.edge.embedded && self.edge.private_key.is_none() {
            return Err(ConfigError::invalid(
                "edge.private_key",
                format!(
                    "required in the {profile} profile while edge.embedded is on (IDYNTRA_EDGE__PRIVATE_KEY or IDYNTRA_EDGE__PRIVATE_KEY_FILE)"
                ),
            ));
        }
        if profile == Profile::Prod && self.inference.fault_marker.is_some() {
            return Err(ConfigError::invalid(
                "inference.fault_marker",
                "fault drills are refused in the prod profile",
            ));
        }
        if profile == Profile::Prod && self.uses_sqlite() && !self.allow_sqlite_in_prod {
            return Err(ConfigError::invalid(
                "database_url",
                "SQLite is refused in the prod profile: set a postgres:// URL or allow_sqlite_in_prod = true",
            ));
        }
        Ok(())
    }
}

impl Config {
    /// CORS origins: each one an origin; the `"*"` wildcard only in `dev`.
    fn check_origins(&self) -> Result<(), ConfigError> {
        for origin in &self.http.allowed_origins {
            if origin == "*" && self.profile != Profile::Dev {
                return Err(ConfigError::invalid(
                    "http.allowed_origins",
                    format!(
                        "wildcard \"*\" is refused in the {} profile; list the origins",
                        self.profile
                    ),
                ));
            }
            if origin != "*" && !(origin.starts_with("http://") || origin.starts_with("https://")) {
                return Err(ConfigError::invalid(
                    "http.allowed_origins",
                    format!("{origin:?} is not an origin like https://app.example.com"),
                ));
            }
        }
        Ok(())
    }

    /// The edge's own rules, shared by the API server (embedded edge) and `idyntra edge serve`.
    fn validate_edge_settings(&self) -> Result<(), ConfigError> {
        let edge = &self.edge;
        if edge.kid == self.signing.kid {
            return Err(ConfigError::invalid(
                "edge.kid",
                "must differ from signing.kid: both keys are published side by side",
            ));
        }
        check_public_keys("edge.retired_keys", &edge.kid, &edge.retired_keys)?;
        // The backend's JWKS publishes both key lists side by side: no kid may appear in both.
        let backend_kids: Vec<&str> = std::iter::once(self.signing.kid.as_str())
            .chain(self.signing.retired_keys.iter().map(|k| k.kid.as_str()))
            .collect();
        if let Some(clash) = std::iter::once(edge.kid.as_str())
            .chain(edge.retired_keys.iter().map(|k| k.kid.as_str()))
            .find(|kid| backend_kids.contains(kid))
        {
            return Err(ConfigError::invalid(
                "edge.kid",
                format!(
                    "kid {clash:?} is also a client-token key's (signing.kid, signing.retired_keys)"
                ),
            ));
        }
        check_public_keys("edge.client_token_keys", "", &edge.client_token_keys)?;
        if edge.attestation_ttl < Duration::from_secs(1)
            || edge.attestation_ttl > Duration::from_secs(600)
        {
            return Err(ConfigError::invalid(
                "edge.attestation_ttl",
                "must be 1 second to 10 minutes",
            ));
        }
        if !(1024..=256 * 1024 * 1024).contains(&edge.max_body_bytes) {
            return Err(ConfigError::invalid(
                "edge.max_body_bytes",
                "must be 1 KiB to 256 MiB",
            ));
        }
        if !(1..=200).contains(&edge.max_frames) {
            return Err(ConfigError::invalid("edge.max_frames", "must be 1 to 200"));
        }
        if edge
            .passive_pad_threshold
            .is_some_and(|threshold| !(0.0..=1.0).contains(&threshold))
        {
            return Err(ConfigError::invalid(
                "edge.passive_pad_threshold",
                "must be 0 to 1 (a liveness score: 1 − the model's attack score)",
            ));
        }
        Ok(())
    }

    /// The rules of `idyntra edge serve`.
    pub fn validate_edge(&self) -> Result<(), ConfigError> {
        self.validate_edge_settings()?;
        self.check_origins()?;
        if self.profile == Profile::Dev {
            return Ok(());
        }
        let profile = self.profile;
        if self.edge.private_key.is_none() {
            return Err(ConfigError::invalid(
                "edge.private_key",
                format!("required in the {profile} profile (IDYNTRA_EDGE__PRIVATE_KEY_FILE)"),
            ));
        }
        if self.signing.private_key.is_none() && self.edge.client_token_keys.is_empty() {
            return Err(ConfigError::invalid(
                "edge.client_token_keys",
                format!(
                    "required in the {profile} profile: the backend's public keys (its /.well-known/jwks.json)"
                ),
            ));
        }
        Ok(())
    }
}

/// Public keys of a key list: valid Ed25519 `x`, no kid twice, none named `current`.
fn check_public_keys(
    setting: &'static str,
    current: &str,
    keys: &[RetiredKey],
) -> Result<(), ConfigError> {
    for (i, key) in keys.iter().enumerate() {
        if key.kid == current {
            return Err(ConfigError::invalid(
                setting,
                format!("kid {:?} is the current signing key's", key.kid),
            ));
        }
        if keys[..i].iter().any(|earlier| earlier.kid == key.kid) {
            return Err(ConfigError::invalid(
                setting,
                format!("kid {:?} appears twice", key.kid),
            ));
        }
        let decoded = URL_SAFE_NO_PAD.decode(&key.x).map(|bytes| bytes.len());
        if decoded != Ok(32) {
            return Err(ConfigError::invalid(
                setting,
                format!("x of {:?} must be a base64url Ed25519 public key", key.kid),
            ));
        }
    }
    Ok(())
}

fn is_string_setting(setting: &str) -> bool {
    let setting = setting.to_ascii_lowercase();
    [
        "pepper",
        "private_key",
        "master_key",
        "url",
        "prefix",
        "issuer",
        "kid",
    ]
    .iter()
    .any(|suffix| setting.ends_with(suffix))
}

fn duration_text<S: Serializer>(duration: &Duration, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(&humantime::format_duration(*duration).to_string())
}

/// Durations are written as `250ms`, `30s`, `15m`, `24h`, `90d`.
fn duration<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Duration, D::Error> {
    let text = String::deserialize(deserializer)?;
    humantime::parse_duration(&text).map_err(serde::de::Error::custom)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    fn load(pairs: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let dir = tempfile::tempdir().unwrap();
        Config::from_layers(Some(&write(&dir, "")), &vars(pairs))
    }

    fn write(dir: &tempfile::TempDir, toml: &str) -> PathBuf {
        let path = dir.path().join("idyntra.toml");
        std::fs::write(&path, toml).unwrap();
        path
    }

    const PEPPER: &str = "0123456789abcdef0123456789abcdef";

    fn prod() -> Vec<(&'static str, &'static str)> {
        vec![
            ("IDYNTRA_PROFILE", "prod"),
            ("IDYNTRA_DATABASE_URL", "postgres://db/idyntra"),
            (
                "IDYNTRA_HTTP__ALLOWED_ORIGINS",
                "[\"https://app.example.com\"]",
            ),
            ("IDYNTRA_HTTP__ALLOWED_HOSTS", "[\"api.example.com\"]"),
            ("IDYNTRA_API_KEYS__PEPPER", PEPPER),
            ("IDYNTRA_SIGNING__PRIVATE_KEY", "AAAA"),
            ("IDYNTRA_EDGE__PRIVATE_KEY", "BBBB"),
            (
                "IDYNTRA_MEDIA__MASTER_KEY",
                "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=",
            ),
        ]
    }

    #[test]
    fn defaults_are_the_embedded_dev_setup() {
        let config = load(&[]).unwrap();
        assert_eq!(config.profile, Profile::Dev);
        assert_eq!(config.listen, "127.0.0.1:8080".parse().unwrap());
        assert!(config.uses_sqlite());
        assert!(config.redis_url.is_none());
    }

    #[test]
    fn environment_overrides_file_and_nests_with_double_underscore() {
        let dir = tempfile::tempdir().unwrap();
        let path = write(
            &dir,
            "listen = \"127.0.0.1:9000\"\n[rate_limit.per_key]\nrequests = 5\nwindow = \"10s\"\n",
        );
        let config = Config::from_layers(
            Some(&path),
            &vars(&[
                ("IDYNTRA_LISTEN", "127.0.0.1:9001"),
                ("IDYNTRA_RATE_LIMIT__PER_IP__REQUESTS", "7"),
                ("IDYNTRA_RATE_LIMIT__PER_IP__WINDOW", "1m"),
                ("OTHER_VARIABLE", "ignored"),
            ]),
        )
        .unwrap();
        assert_eq!(config.listen.port(), 9001);
        assert_eq!(config.rate_limit.per_key.requests, 5);
        assert_eq!(config.rate_limit.per_key.window, Duration::from_secs(10));
        assert_eq!(config.rate_limit.per_ip.requests, 7);
        assert_eq!(config.rate_limit.per_ip.window, Duration::from_secs(60));
    }

    #[test]
    fn one_field_of_a_table_can_be_overridden_alone() {
        let config = load(&[("IDYNTRA_RATE_LIMIT__PER_KEY__REQUESTS", "9")]).unwrap();
        assert_eq!(config.rate_limit.per_key.requests, 9);
        assert_eq!(config.rate_limit.per_key.window, Duration::from_secs(60));
    }

    #[test]
    fn file_variables_supply_secrets() {
        let dir = tempfile::tempdir().unwrap();
        let secret = dir.path().join("pepper");
        std::fs::write(&secret, format!("{PEPPER}\n")).unwrap();
        let config = Config::from_layers(
            Some(&write(&dir, "")),
            &vars(&[("IDYNTRA_API_KEYS__PEPPER_FILE", secret.to_str().unwrap())]),
        )
        .unwrap();
        assert_eq!(config.api_keys.pepper.unwrap().expose(), PEPPER);
    }

    #[test]
    fn secrets_that_look_like_numbers_stay_strings() {
        let digits = "12345678901234567890123456789012345678";
        let config = load(&[("IDYNTRA_API_KEYS__PEPPER", digits)]).unwrap();
        assert_eq!(config.api_keys.pepper.unwrap().expose(), digits);
    }

    #[test]
    fn secrets_never_show_in_debug() {
        let config = load(&[
            ("IDYNTRA_API_KEYS__PEPPER", PEPPER),
            ("IDYNTRA_DATABASE_URL", "postgres://user:hunter2@db/idyntra"),
        ])
        .unwrap();
        let debug = format!("{config:?}");
        assert!(!debug.contains(PEPPER), "{debug}");
        assert!(!debug.contains("hunter2"), "{debug}");
    }

    #[test]
    fn prod_accepts_a_complete_configuration() {
        load(&prod()).unwrap();
    }

    #[test]
    fn prod_refusals_name_the_setting() {
        let cases: [(&str, Option<&str>, &str); 7] = [
            (
                "IDYNTRA_HTTP__ALLOWED_ORIGINS",
                Some("[\"*\"]"),
                "http.allowed_origins",
            ),
            (
                "IDYNTRA_HTTP__ALLOWED_HOSTS",
                Some("[\"*\"]"),
                "http.allowed_hosts",
            ),
            ("IDYNTRA_API_KEYS__PEPPER", None, "api_keys.pepper"),
            ("IDYNTRA_SIGNING__PRIVATE_KEY", None, "signing.private_key"),
            ("IDYNTRA_EDGE__PRIVATE_KEY", None, "edge.private_key"),
            ("IDYNTRA_DATABASE_URL", None, "database_url"),
            (
                "IDYNTRA_DATABASE_URL",
                Some("sqlite://x.db"),
                "database_url",
            ),
        ];
        for (name, value, setting) in cases {
            let mut pairs = prod();
            pairs.retain(|(k, _)| *k != name);
            if let Some(value) = value {
                pairs.push((name, value));
            }
            let error = load(&pairs).unwrap_err().to_string();
            assert!(error.contains(setting), "{name}={value:?}: {error}");
        }
        let mut pairs = prod();
        pairs.retain(|(k, _)| *k != "IDYNTRA_DATABASE_URL");
        pairs.push(("IDYNTRA_ALLOW_SQLITE_IN_PROD", "true"));
        load(&pairs).unwrap();
        // A backend whose edge runs elsewhere does not hold the edge's key.
        let mut pairs = prod();
        pairs.retain(|(k, _)| *k != "IDYNTRA_EDGE__PRIVATE_KEY");
        pairs.push(("IDYNTRA_EDGE__EMBEDDED", "false"));
        load(&pairs).unwrap();
    }

    #[test]
    fn an_edge_alone_needs_its_key_and_the_backends_public_key_only() {
        let x = "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo";
        let keys = format!("[{{kid = \"backend-1\", x = \"{x}\"}}]");
        let edge_only = |pairs: &[(&str, &str)]| {
            Config::extract(None, &vars(pairs)).and_then(|config| config.validate_edge())
        };
        let complete: Vec<(&str, &str)> = vec![
            ("IDYNTRA_PROFILE", "prod"),
            (
                "IDYNTRA_HTTP__ALLOWED_ORIGINS",
                "[\"https://app.example.com\"]",
            ),
            ("IDYNTRA_EDGE__PRIVATE_KEY", "BBBB"),
            ("IDYNTRA_EDGE__CLIENT_TOKEN_KEYS", &keys),
        ];
        edge_only(&complete).unwrap();
        for (name, setting) in [
            ("IDYNTRA_EDGE__PRIVATE_KEY", "edge.private_key"),
            ("IDYNTRA_EDGE__CLIENT_TOKEN_KEYS", "edge.client_token_keys"),
        ] {
            let mut pairs = complete.clone();
            pairs.retain(|(k, _)| *k != name);
            let error = edge_only(&pairs).unwrap_err().to_string();
            assert!(error.contains(setting), "{error}");
        }
        let mut pairs = complete.clone();
        pairs.push(("IDYNTRA_EDGE__ATTESTATION_TTL", "11m"));
        let error = edge_only(&pairs).unwrap_err().to_string();
        assert!(error.contains("edge.attestation_ttl"), "{error}");
        let mut pairs = complete;
        pairs.push(("IDYNTRA_EDGE__KID", "backend-1"));
        let error = edge_only(&pairs).unwrap_err().to_string();
        assert!(error.contains("edge.kid"), "{error}");
    }

    #[test]
    fn retired_signing_keys_are_checked() {
        let x = "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo";
        load(&[(
            "IDYNTRA_SIGNING__RETIRED_KEYS",
            &format!("[{{kid = \"old\", x = \"{x}\"}}]"),
        )])
        .unwrap();
        for (kid, x) in [("backend-1", x), ("old", "not-a-key")] {
            let value = format!("[{{kid = \"{kid}\", x = \"{x}\"}}]");
            let error = load(&[("IDYNTRA_SIGNING__RETIRED_KEYS", &value)]).unwrap_err();
            assert!(
                error.to_string().contains("signing.retired_keys"),
                "{error}"
            );
        }
    }

    #[test]
    fn bad_values_are_refused_with_their_name() {
        let error = load(&[("IDYNTRA_RATE_LIMIT__PER_KEY__WINDOW", "soon")]).unwrap_err();
        assert!(error.to_string().contains("window"), "{error}");
        let error = load(&[("IDYNTRA_DATABASE_URL", "mysql://x")]).unwrap_err();
        assert!(error.to_string().contains("database_url"), "{error}");
        let error = load(&[("IDYNTRA_NOT_A_SETTING", "1")]).unwrap_err();
        assert!(error.to_string().contains("not_a_setting"), "{error}");
        let error = load(&[("IDYNTRA_INFERENCE__BATCH_CROPS", "1")]).unwrap_err();
        assert!(
            error.to_string().contains("inference.batch_crops"),
            "{error}"
        );
        let error = load(&[("IDYNTRA_INFERENCE__BATCH_WAIT", "2s")]).unwrap_err();
        assert!(
            error.to_string().contains("inference.batch_wait"),
            "{error}"
        );
        let config = load(&[("IDYNTRA_INFERENCE__BATCH_WAIT", "3ms")]).unwrap();
        assert_eq!(config.inference.batch_wait, Duration::from_millis(3));
        let error = load(&[("IDYNTRA_EDGE__PASSIVE_PAD_THRESHOLD", "1.5")]).unwrap_err();
        assert!(
            error.to_string().contains("edge.passive_pad_threshold"),
            "{error}"
        );
        let error = load(&[("IDYNTRA_EDGE__PASSIVE_PAD", "sometimes")]).unwrap_err();
        assert!(error.to_string().contains("passive_pad"), "{error}");
        let config = load(&[
            ("IDYNTRA_EDGE__PASSIVE_PAD", "enforce"),
            ("IDYNTRA_EDGE__PASSIVE_PAD_THRESHOLD", "0.9"),
            ("IDYNTRA_DECISION__PASSIVE_PAD", "evidence"),
        ])
        .unwrap();
        assert_eq!(config.edge.passive_pad, PassivePadMode::Enforce);
        assert_eq!(config.edge.passive_pad_threshold, Some(0.9));
        assert_eq!(config.decision.passive_pad, SignalUse::Evidence);
        let error = load(&[("IDYNTRA_DECISION__MANIPULATION_THRESHOLD", "2")]).unwrap_err();
        assert!(
            error
                .to_string()
                .contains("decision.manipulation_threshold"),
            "{error}"
        );
        let config = load(&[
            ("IDYNTRA_DECISION__MANIPULATION", "evidence"),
            ("IDYNTRA_DECISION__MANIPULATION_THRESHOLD", "0.7"),
        ])
        .unwrap();
        assert_eq!(config.decision.manipulation, SignalUse::Evidence);
        assert_eq!(config.decision.manipulation_threshold, Some(0.7));
    }
}
