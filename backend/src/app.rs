//! The application's shared services, built once at start-up from the configuration.

use std::collections::HashMap;
use std::ops::Deref;
use std::path::Path;
use std::sync::{Arc, Mutex};

use anyhow::Context;
use serde::{Deserialize, Serialize};

use crate::api_keys::{self, KeyHasher, PlainKey};
use crate::auth::KeyCache;
use crate::client_token::{ClientTokenIssuer, SigningIdentity};
use crate::clock;
use crate::config::{Config, Profile, Secret};
use crate::ids;
use crate::rate_limit::RateLimiter;
use crate::redis_link::RedisLink;
use crate::store::{self, Account, AuditEvent, Store};
use crate::telemetry::Metrics;

/// Cheap to clone; handlers receive it as axum state.
#[derive(Debug, Clone)]
pub struct AppState(Arc<App>);

impl Deref for AppState {
    type Target = App;

    fn deref(&self) -> &App {
        &self.0
    }
}

#[derive(Debug)]
pub struct App {
    pub config: Config,
    pub store: Arc<dyn Store>,
    pub key_hasher: KeyHasher,
    pub key_cache: KeyCache,
    pub client_tokens: ClientTokenIssuer,
    pub redis: Option<Arc<RedisLink>>,
    pub limiter: RateLimiter,
    pub metrics: Arc<Metrics>,
    /// The embedded edge (`edge.embedded`), serving `POST /v1/attest`.
    pub edge: Option<Arc<idyntra_edge::Edge>>,
    /// The edges whose attestations media uploads must carry.
    pub edge_trust: crate::edge_trust::EdgeTrust,
    /// Master keys of the sealed media and webhook secrets.
    pub vault: crate::vault::Vault,
    /// The face models of finalize, on their bounded pool.
    pub faces: Arc<crate::inference::FaceEngine>,
    /// What the models found in sessions' images, for repeated finalizes.
    pub face_cache: crate::face_cache::FaceCache,
    /// When each key's `last_used_at` was last written, so a busy key costs one write a minute.
    key_touches: Mutex<HashMap<String, i64>>,
}

/// `last_used_at` is kept to this precision.
const KEY_TOUCH_INTERVAL_MS: i64 = 60_000;

/// Secrets the `dev` profile generates on first start when none are configured, kept in
/// `data_dir` so keys and tokens survive restarts.
#[derive(Serialize, Deserialize)]
struct DevSecrets {
    api_key_pepper: String,
    signing_seed: String,
    /// Added after the first two: files written before it get one on the next start.
    #[serde(default)]
    edge_signing_seed: Option<String>,
    #[serde(default)]
    media_master_key: Option<String>,
}

impl App {
    /// Opens the database (applying migrations), resolves secrets and connects the services.
    pub async fn open(config: Config) -> anyhow::Result<Self> {
        let (pepper, signing) = resolve_secrets(&config)?;
        let store = store::open(&config).await.context("opening the database")?;
        store
            .migrate()
            .await
            .context("applying database migrations")?;
        let inference = config.inference.clone();
        let faces =
            tokio::task::spawn_blocking(move || crate::inference::FaceEngine::load(&inference))
                .await
                .context("loading the face models")??;
        let metrics = Arc::new(Metrics::new(faces.batch_sizes()));
        let redis = RedisLink::from_config(&config)?;
        let limiter = RateLimiter::new(redis.clone(), metrics.clone());
        let edge = if config.edge.embedded {
            Some(Arc::new(crate::edge_host::build(&config, Some(&signing))?))
        } else {
            None
        };
        let vault = crate::vault::Vault::new(&config.media, &media_master_key(&config)?)?;
        let edge_trust = crate::edge_trust::EdgeTrust::new(&config)?;
        edge_trust.prefetch().await;
        let client_tokens = ClientTokenIssuer::new(
            signing,
            &config.issuer,
            &config.sessions.client_token_audience,
            config.sessions.client_token_ttl,
        );
        let face_cache =
            crate::face_cache::FaceCache::new(config.inference.cache_ttl, redis.clone());
        Ok(Self {
            key_hasher: KeyHasher::new(pepper),
            key_cache: KeyCache::new(config.api_keys.cache_ttl),
            client_tokens,
            store,
            redis,
            limiter,
            metrics,
            edge,
            edge_trust,
            vault,
            faces: Arc::new(faces),
            face_cache,
            config,
            key_touches: Mutex::new(HashMap::new()),
        })
    }

    pub fn into_state(self) -> AppState {
        AppState(Arc::new(self))
    }

    /// Refuses to serve outside `dev` while a dev key is active.
    pub async fn check_no_dev_key(&self) -> anyhow::Result<()> {
        if self.config.profile == Profile::Dev {
            return Ok(());
        }
        let now = clock::now_ms();
        if let Some(key) = self
            .store
            .list_api_keys(None)
            .await?
            .into_iter()
            .find(|key| key.is_dev && key.is_active(now))
        {
            anyhow::bail!(
                "the dev API key {} is active and refused in the {} profile: revoke it with `idyntra keys revoke {}`",
                key.api_key_id,
                self.config.profile,
                key.api_key_id
            );
        }
        Ok(())
    }

    /// In `dev`, on the first start (no account yet), creates the `dev` account and its key.
    pub async fn create_dev_account(&self) -> anyhow::Result<Option<PlainKey>> {
        if self.config.profile != Profile::Dev || self.store.count_accounts().await? > 0 {
            return Ok(None);
        }
        let now = clock::now_ms();
        let account = Account {
            account_id: ids::new_id("acct"),
            name: "dev".to_owned(),
            created_at: now,
        };
        let audit = |action: &str, target: &str| AuditEvent {
            at: now,
            actor: "system".to_owned(),
            action: action.to_owned(),
            target: target.to_owned(),
            request_id: None,
            details: serde_json::json!({"profile": "dev"}),
        };
        self.store
            .insert_account(&account, &audit("account.created", &account.account_id))
            .await?;
        let (record, plain) = api_keys::mint(
            &self.key_hasher,
            &account.account_id,
            "dev",
            api_keys::parse_scopes(&[]).map_err(anyhow::Error::msg)?,
            None,
            true,
            now,
        );
        self.store
            .insert_api_key(&record, &audit("api_key.created", &record.api_key_id))
            .await?;
        Ok(Some(plain))
    }

    /// Records that a key was used, at most once a minute per key and process.
    pub async fn touch_key(&self, api_key_id: &str) {
        let now = clock::now_ms();
        {
            let mut touches = self
                .key_touches
                .lock()
                .unwrap_or_else(|poison| poison.into_inner());
            match touches.get(api_key_id) {
                Some(at) if now - at < KEY_TOUCH_INTERVAL_MS => return,
                _ => {
                    touches.insert(api_key_id.to_owned(), now);
                }
            }
        }
        if let Err(error) = self.store.touch_api_key(api_key_id, now).await {
            tracing::warn!(error = %error, "could not record API key use");
        }
    }
}

/// The pepper and signing key: configured ones, or in `dev` generated ones kept in `data_dir`.
fn resolve_secrets(config: &Config) -> anyhow::Result<(Secret, SigningIdentity)> {
    let kid = &config.signing.kid;
    if let (Some(pepper), Some(key)) = (&config.api_keys.pepper, &config.signing.private_key) {
        let identity = SigningIdentity::parse(kid, key)
            .map_err(|e| anyhow::anyhow!("configuration: signing.private_key: {e}"))?;
        return Ok((pepper.clone(), identity));
    }
    // `validate` already refused missing secrets outside dev.
    let dev = load_or_create_dev_secrets(&config.data_dir)?;
    let pepper = config
        .api_keys
        .pepper
        .clone()
        .unwrap_or(Secret::new(dev.api_key_pepper));
    let key = config
        .signing
        .private_key
        .clone()
        .unwrap_or(Secret::new(dev.signing_seed));
    let identity = SigningIdentity::parse(kid, &key)
        .map_err(|e| anyhow::anyhow!("configuration: signing.private_key: {e}"))?;
    Ok((pepper, identity))
}

fn load_or_create_dev_secrets(data_dir: &Path) -> anyhow::Result<DevSecrets> {
    let path = data_dir.join("dev-secrets.json");
    if path.exists() {
        let text = std::fs::read_to_string(&path).with_context(|| path.display().to_string())?;
        let mut secrets: DevSecrets =
            serde_json::from_str(&text).with_context(|| path.display().to_string())?;
        if secrets.edge_signing_seed.is_none() || secrets.media_master_key.is_none() {
            secrets.edge_signing_seed.get_or_insert_with(new_seed);
            secrets.media_master_key.get_or_insert_with(new_aes_key);
            let staged = data_dir.join("dev-secrets.json.new");
            let _ = std::fs::remove_file(&staged);
            write_private(&staged, &serde_json::to_vec_pretty(&secrets)?)
                .and_then(|()| std::fs::rename(&staged, &path))
                .with_context(|| path.display().to_string())?;
        }
        return Ok(secrets);
    }
    std::fs::create_dir_all(data_dir).with_context(|| data_dir.display().to_string())?;
    let secrets = DevSecrets {
        api_key_pepper: PlainKey::generate().expose().to_owned(),
        signing_seed: new_seed(),
        edge_signing_seed: Some(new_seed()),
        media_master_key: Some(new_aes_key()),
    };
    write_private(&path, &serde_json::to_vec_pretty(&secrets)?)
        .with_context(|| path.display().to_string())?;
    Ok(secrets)
}

fn new_aes_key() -> String {
    use base64::Engine;
    let key: [u8; 32] = rand::random();
    base64::engine::general_purpose::STANDARD.encode(key)
}

/// The media master key: configured, or in `dev` generated and kept in `data_dir`.
fn media_master_key(config: &Config) -> anyhow::Result<Secret> {
    match &config.media.master_key {
        Some(key) => Ok(key.clone()),
        // `validate` refused a missing key outside dev.
        None => Ok(Secret::new(
            load_or_create_dev_secrets(&config.data_dir)?
                .media_master_key
                .unwrap_or_default(),
        )),
    }
}

fn new_seed() -> String {
    SigningIdentity::generate("dev").seed_base64()
}

/// The embedded or standalone edge's signing key: configured, or in `dev` generated and kept in
/// `data_dir`.
pub fn edge_signing_key(config: &Config) -> anyhow::Result<idyntra_edge::EdKey> {
    let seed = match &config.edge.private_key {
        Some(key) => key.clone(),
        None => Secret::new(
            load_or_create_dev_secrets(&config.data_dir)?
                .edge_signing_seed
                .unwrap_or_default(),
        ),
    };
    idyntra_edge::EdKey::parse(&config.edge.kid, seed.expose())
        .map_err(|e| anyhow::anyhow!("configuration: edge.private_key: {e}"))
}

/// The backend's client-token key from the configuration (or the dev secrets), when this
/// process has it.
pub fn backend_signing_identity(config: &Config) -> anyhow::Result<Option<SigningIdentity>> {
    match &config.signing.private_key {
        Some(key) => SigningIdentity::parse(&config.signing.kid, key)
            .map(Some)
            .map_err(|e| anyhow::anyhow!("configuration: signing.private_key: {e}")),
        None if config.profile == Profile::Dev => {
            let dev = load_or_create_dev_secrets(&config.data_dir)?;
            SigningIdentity::parse(&config.signing.kid, &Secret::new(dev.signing_seed))
                .map(Some)
                .map_err(|e| anyhow::anyhow!("dev secrets: {e}"))
        }
        None => Ok(None),
    }
}

/// Writes a file only its owner can read.
fn write_private(path: &Path, contents: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    options.open(path)?.write_all(contents)
}
