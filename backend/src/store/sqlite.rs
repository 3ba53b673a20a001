//! The embedded default: one SQLite file in WAL mode.

use std::str::FromStr;

use idyntra_types::SessionStatus;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Sqlite, SqlitePool};

use super::pipeline::{
    ATTESTATION_COLUMNS, AttestationRecord, DELIVERY_COLUMNS, DeliveryAttempt, DeliveryRecord,
    ENDPOINT_COLUMNS, JOB_COLUMNS, JobRecord, MEDIA_COLUMNS, MediaRecord, PipelineStore,
    SessionKeyRecord, Submission, WebhookEndpointRecord, impl_pipeline_store,
};
use super::shared::{
    API_KEY_COLUMNS, AUDIT_COLUMNS, SESSION_COLUMNS, bind_audit, bind_session,
    common_store_helpers, conflict_or, impl_store,
};
use super::{
    Account, ApiKeyRecord, AuditEntry, AuditEvent, IdempotencyStart, IdempotencyWindow, PoolState,
    SessionQuery, SessionRecord, Store, StoreResult, StoredResponse, Transition,
};
use crate::config::DatabaseConfig;

#[derive(Debug, Clone)]
pub struct SqliteStore {
    pool: SqlitePool,
    /// One connection for every write: SQLite has a single writer anyway, and queueing here is
    /// fair and quiet, where concurrent writers would spin on the file lock (busy_timeout sleeps
    /// of up to 100 ms each, which showed as a long latency tail under load).
    writer: SqlitePool,
}

impl SqliteStore {
    /// Opens (creating if missing) the database at `url` (`sqlite://path`).
    pub async fn connect(url: &str, config: &DatabaseConfig) -> StoreResult<Self> {
        let options = SqliteConnectOptions::from_str(url)?
            .create_if_missing(true)
            // WAL lets readers run beside the single writer; NORMAL sync is durable across
            // application crashes, which is what WAL is designed for.
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(config.acquire_timeout)
            .foreign_keys(true);
        let writer = SqlitePoolOptions::new()
            .max_connections(1)
            .acquire_timeout(config.acquire_timeout)
            .connect_with(options.clone())
            .await?;
        let pool = SqlitePoolOptions::new()
            .max_connections(config.max_connections)
            .acquire_timeout(config.acquire_timeout)
            .connect_with(options)
            .await?;
        Ok(Self { pool, writer })
    }
}

common_store_helpers!(SqliteStore, Sqlite);

impl_store!(SqliteStore, Sqlite, {
    async fn migrate(&self) -> StoreResult<()> {
        sqlx::migrate!("./migrations/sqlite")
            .run(&self.writer)
            .await?;
        Ok(())
    }

    async fn ping(&self) -> StoreResult<()> {
        sqlx::query("select 1").execute(&self.pool).await?;
        Ok(())
    }

    fn pool_state(&self) -> PoolState {
        PoolState {
            size: self.pool.size(),
            idle: u32::try_from(self.pool.num_idle()).unwrap_or(u32::MAX),
        }
    }

    fn kind(&self) -> &'static str {
        "sqlite"
    }

    /// In one transaction: SQLite has no data-modifying `with`.
    async fn insert_session(&self, session: &SessionRecord, audit: &AuditEvent) -> StoreResult<()> {
        let mut tx = self.writer.begin().await?;
        let sql = format!(
            "insert into session ({SESSION_COLUMNS}) \
             values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)"
        );
        bind_session!(sqlx::query(&sql), session)
            .execute(&mut *tx)
            .await
            .map_err(|e| conflict_or(e, "session"))?;
        Self::audit_in(&mut tx, audit).await?;
        tx.commit().await?;
        Ok(())
    }
});

// One writer connection: the first due job, taken in the same statement.
impl_pipeline_store!(
    SqliteStore,
    Sqlite,
    "update job set locked_until = $2, attempts = attempts + 1 \
     where job_id = (select job_id from job where done_at is null and run_at <= $1 \
     and (locked_until is null or locked_until <= $1) order by run_at limit 1) \
     returning job_id, kind, payload, dedupe_key, run_at, attempts, locked_until, last_error, created_at, done_at"
);
