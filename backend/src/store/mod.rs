//! Persistence behind one [`Store`] trait, with SQLite (embedded default) and PostgreSQL
//! implementations chosen from the database URL. Each has its own migrations; the same story of
//! tests runs against both.

mod audit;
mod batch;
mod pipeline;
mod postgres;
mod shared;
mod sqlite;
mod sqlite_readers;

use std::sync::Arc;

use async_trait::async_trait;
use idyntra_types::SessionStatus;
use serde_json::Value;
use sqlx::types::Json;

pub use audit::{
    AuditEntry, AuditEvent, ChainBreak, GENESIS_HASH, verify_page as audit_verify_page,
};
pub use pipeline::{
    AttestationRecord, DeliveryAttempt, DeliveryRecord, JobRecord, MediaRecord, PipelineStore,
    SessionKeyRecord, Submission, WebhookEndpointRecord,
};
pub use postgres::PostgresStore;
pub use sqlite::SqliteStore;

use crate::config::Config;

/// A storage failure. Client-caused cases have their own variants so handlers can map them.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("already exists: {0}")]
    Conflict(String),
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    #[error("migration: {0}")]
    Migration(#[from] sqlx::migrate::MigrateError),
    /// The failure of a batch, shared by every call in it.
    #[error("database: {0}")]
    Batch(Arc<sqlx::Error>),
    #[error("database: {0}")]
    NotRun(#[from] crate::batch::NotRun),
    /// A batch of reads on SQLite's own connections (see `sqlite_readers`), shared by every
    /// call in it.
    #[error("database: {0}")]
    Sqlite(Arc<rusqlite::Error>),
    /// A configuration the store cannot work with.
    #[error("{0}")]
    Unsupported(String),
}

pub type StoreResult<T> = Result<T, StoreError>;

#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct Account {
    pub account_id: String,
    pub name: String,
    pub created_at: i64,
}

/// A stored API key: never the key itself, only its keyed hash.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct ApiKeyRecord {
    pub api_key_id: String,
    pub account_id: String,
    pub name: String,
    /// The non-secret start of the key, used to find the row.
    pub prefix: String,
    pub secret_hash: Vec<u8>,
    /// Space-separated scopes.
    pub scopes: String,
    /// The key made for the dev profile's first start; refused in every other profile.
    pub is_dev: bool,
    pub created_at: i64,
    pub expires_at: Option<i64>,
    pub revoked_at: Option<i64>,
    pub last_used_at: Option<i64>,
    pub rotated_to: Option<String>,
}

impl ApiKeyRecord {
    /// Usable at `now` (milliseconds): not revoked and not past its expiry.
    pub fn is_active(&self, now: i64) -> bool {
        self.revoked_at.is_none() && self.expires_at.is_none_or(|at| at > now)
    }
}

#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct SessionRecord {
    pub session_id: String,
    pub account_id: String,
    pub status: String,
    pub reference: Option<String>,
    pub metadata: Json<Value>,
    pub options: Json<Value>,
    pub nonce: String,
    pub created_at: i64,
    pub updated_at: i64,
    pub expires_at: i64,
    pub result: Option<Json<Value>>,
    pub redacted_at: Option<i64>,
}

impl SessionRecord {
    /// The status as the API shows it at `now`: an unsubmitted session past its expiry is expired
    /// even before a sweep rewrites the row.
    pub fn status_at(&self, now: i64) -> SessionStatus {
        let stored = SessionStatus::parse(&self.status).unwrap_or(SessionStatus::Expired);
        if stored == SessionStatus::Created && self.expires_at <= now {
            SessionStatus::Expired
        } else {
            stored
        }
    }
}

/// Which sessions a list call asks for.
#[derive(Debug, Clone)]
pub struct SessionQuery {
    pub account_id: String,
    pub status: Option<SessionStatus>,
    /// Only sessions older than this id (ids sort by creation time).
    pub starting_after: Option<String>,
    pub limit: u32,
    pub now: i64,
}

/// The stored answer of a completed idempotent request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredResponse {
    pub status: u16,
    pub content_type: Option<String>,
    pub body: Vec<u8>,
}

/// What starting an idempotent request found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IdempotencyStart {
    /// The key is new (or its earlier attempt was abandoned): run the request.
    Started,
    /// The same request already completed: answer this again.
    Replay(StoredResponse),
    /// The same key is being processed by another request right now.
    InProgress,
    /// The key was used with a different request.
    Mismatch,
}

/// Timing rules of idempotency keys, in milliseconds.
#[derive(Debug, Clone, Copy)]
pub struct IdempotencyWindow {
    pub now: i64,
    /// Keys older than this are forgotten (Stripe keeps them 24 h).
    pub retention: i64,
    /// An unfinished attempt older than this is taken to have crashed and may be retried.
    pub lock_timeout: i64,
}

/// Outcome of a conditional status change.
#[derive(Debug, Clone, PartialEq)]
pub enum Transition {
    Done(SessionRecord),
    /// The session exists but its status does not allow the change.
    Refused(SessionRecord),
    NotFound,
}

/// Everything the backend persists.
///
/// Every state change takes the [`AuditEvent`] that describes it and writes both in one
/// transaction, so the audit trail cannot miss a change that happened.
#[async_trait]
pub trait Store: PipelineStore + Send + Sync + std::fmt::Debug {
    /// Applies this database's migrations.
    async fn migrate(&self) -> StoreResult<()>;
    /// Checks the database answers (readiness).
    async fn ping(&self) -> StoreResult<()>;
    /// Connections open and idle, for metrics.
    fn pool_state(&self) -> PoolState;
    /// Which database this is (`sqlite` or `postgres`).
    fn kind(&self) -> &'static str;

    async fn find_account(&self, name_or_id: &str) -> StoreResult<Option<Account>>;
    async fn insert_account(&self, account: &Account, audit: &AuditEvent) -> StoreResult<()>;
    async fn count_accounts(&self) -> StoreResult<i64>;

    async fn insert_api_key(&self, key: &ApiKeyRecord, audit: &AuditEvent) -> StoreResult<()>;
    async fn api_keys_by_prefix(&self, prefix: &str) -> StoreResult<Vec<ApiKeyRecord>>;
    async fn get_api_key(&self, api_key_id: &str) -> StoreResult<Option<ApiKeyRecord>>;
    async fn list_api_keys(&self, account_id: Option<&str>) -> StoreResult<Vec<ApiKeyRecord>>;
    /// Revokes a key; `false` when there is no such key or it was already revoked.
    async fn revoke_api_key(
        &self,
        api_key_id: &str,
        now: i64,
        audit: &AuditEvent,
    ) -> StoreResult<bool>;
    /// Stores `new_key` and makes the old one expire at `old_expires_at` (the grace period).
    async fn rotate_api_key(
        &self,
        old_key_id: &str,
        new_key: &ApiKeyRecord,
        old_expires_at: i64,
        audit: &AuditEvent,
    ) -> StoreResult<()>;
    async fn touch_api_key(&self, api_key_id: &str, now: i64) -> StoreResult<()>;

    async fn insert_session(&self, session: &SessionRecord, audit: &AuditEvent) -> StoreResult<()>;
    async fn get_session(
        &self,
        account_id: &str,
        session_id: &str,
    ) -> StoreResult<Option<SessionRecord>>;
    /// Newest first; returns up to `limit + 1` rows so the caller knows whether more follow.
    async fn list_sessions(&self, query: &SessionQuery) -> StoreResult<Vec<SessionRecord>>;
    /// Moves a cancelable, unexpired session to `canceled`, with `jobs` (its event).
    async fn cancel_session(
        &self,
        account_id: &str,
        session_id: &str,
        now: i64,
        audit: &AuditEvent,
        jobs: &[JobRecord],
    ) -> StoreResult<Transition>;

    async fn idempotency_start(
        &self,
        account_id: &str,
        key: &str,
        request_hash: &[u8],
        window: IdempotencyWindow,
    ) -> StoreResult<IdempotencyStart>;
    /// Stores the answer of the attempt that started at `lock` (its `window.now`); an attempt that
    /// was taken over since then changes nothing.
    async fn idempotency_complete(
        &self,
        account_id: &str,
        key: &str,
        lock: i64,
        response: &StoredResponse,
    ) -> StoreResult<()>;
    /// Deletes idempotency keys created before `before` (their stored answers included).
    async fn purge_idempotency(&self, before: i64) -> StoreResult<u64>;
    /// Forgets the attempt that started at `lock`, whose answer must not be replayed (server errors),
    /// so it can be retried; a newer attempt on the same key is left alone.
    async fn idempotency_abandon(&self, account_id: &str, key: &str, lock: i64) -> StoreResult<()>;

    /// Appends an audit row that goes with no other change.
    async fn append_audit(&self, audit: &AuditEvent) -> StoreResult<()>;
    /// Chains up to `limit` unsealed audit rows onto the sealed head; returns how many it sealed.
    async fn seal_audit(&self, limit: i64) -> StoreResult<u64>;
    /// Sealed audit rows with `chain_seq > after`, in chain order, at most `limit`.
    async fn audit_entries(&self, after: i64, limit: i64) -> StoreResult<Vec<AuditEntry>>;
    /// The sealed chain's last position and hash.
    async fn audit_head(&self) -> StoreResult<(i64, String)>;
    /// Rows written but not sealed yet.
    async fn unsealed_audit_count(&self) -> StoreResult<i64>;
}

/// Connection pool gauges.
#[derive(Debug, Clone, Copy, Default)]
pub struct PoolState {
    pub size: u32,
    pub idle: u32,
}

/// Opens the database the configuration names (SQLite under `data_dir` by default).
pub async fn open(config: &Config) -> anyhow::Result<Arc<dyn Store>> {
    match &config.database_url {
        Some(url) if !url.expose().starts_with("sqlite:") => Ok(Arc::new(
            PostgresStore::connect(url.expose(), &config.database).await?,
        )),
        Some(url) => Ok(Arc::new(
            SqliteStore::connect(url.expose(), &config.database).await?,
        )),
        None => {
            std::fs::create_dir_all(&config.data_dir).map_err(|error| {
                anyhow::anyhow!("data_dir {}: {error}", config.data_dir.display())
            })?;
            let path = config.data_dir.join("idyntra.db");
            let url = format!("sqlite://{}", path.display());
            Ok(Arc::new(
                SqliteStore::connect(&url, &config.database).await?,
            ))
        }
    }
}

#[cfg(test)]
pub(crate) mod story;
