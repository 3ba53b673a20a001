//! The embedded default: one SQLite file in WAL mode.

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use idyntra_types::SessionStatus;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Sqlite, SqlitePool};

use super::batch::{
    Batcher, MAX_BATCH, SessionRead, SessionReads, SessionWrites, answer_reads, fail_all,
    fail_all_as, lanes,
};
use super::pipeline::{
    ATTESTATION_COLUMNS, AttestationRecord, DELIVERY_COLUMNS, DeliveryAttempt, DeliveryRecord,
    ENDPOINT_COLUMNS, JOB_COLUMNS, JobRecord, MEDIA_COLUMNS, MediaRecord, PipelineStore,
    SessionKeyRecord, Submission, WebhookEndpointRecord, impl_pipeline_store,
};
use super::shared::{
    API_KEY_COLUMNS, AUDIT_COLUMNS, AUDIT_LINKS_PER_STATEMENT, AUDIT_WRITTEN_COLUMNS,
    SESSION_COLUMNS, common_store_helpers, conflict_or, impl_store, push_audit, push_session,
    session_writes,
};
use super::sqlite_readers::SqliteReaders;
use super::{
    Account, ApiKeyRecord, AuditEntry, AuditEvent, IdempotencyStart, IdempotencyWindow, PoolState,
    SessionQuery, SessionRecord, Store, StoreError, StoreResult, StoredResponse, Transition,
};
use crate::config::DatabaseConfig;

#[derive(Debug, Clone)]
pub struct SqliteStore {
    pool: SqlitePool,
    /// One connection for every write: SQLite has a single writer anyway, and queueing here is
    /// fair and quiet, where concurrent writers would spin on the file lock (busy_timeout sleeps
    /// of up to 100 ms each, which showed as a long latency tail under load).
    writer: SqlitePool,
    session_writes: SessionWrites,
    /// Batches of session reads by id, on connections of their own (see [`SqliteReaders`]).
    session_reads: SessionReads,
    /// Stops the checkpointer when the last clone of the store goes.
    _checkpointer: Arc<Checkpointer>,
}

/// Pages the WAL may hold before the writer copies them into the database itself. A backstop
/// only: the checkpointer below normally does it first, off the write path (64 MiB of 4 KiB pages).
const WRITER_CHECKPOINT_PAGES: &str = "16384";

/// How often the checkpointer copies the WAL into the database. What it has not copied yet is
/// what the writer copies when it crosses its backstop, so a short interval keeps that small; a
/// checkpoint with nothing to copy costs next to nothing.
const CHECKPOINT_EVERY: Duration = Duration::from_millis(20);

/// Copies committed pages from the WAL into the database on a connection of its own. SQLite
/// otherwise does this in the commit that crosses its threshold, on the one writer connection: a
/// media upload's megabyte then waits, and so does every write queued behind it, for the copy and
/// its fsync. A passive checkpoint takes no write lock, so writes go on meanwhile.
#[derive(Debug)]
struct Checkpointer(tokio::task::JoinHandle<()>);

impl Checkpointer {
    fn start(connection: SqlitePool) -> Self {
        Self(tokio::spawn(async move {
            let mut ticks = tokio::time::interval(CHECKPOINT_EVERY);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut failing = false;
            loop {
                ticks.tick().await;
                let outcome = sqlx::query("pragma wal_checkpoint(passive)")
                    .execute(&connection)
                    .await;
                // Said once per spell of failures: the writer's own checkpoints still run.
                match outcome {
                    Err(error) if !failing => {
                        tracing::warn!(%error, "the WAL checkpoint failed; retrying");
                        failing = true;
                    }
                    Err(_) => {}
                    Ok(_) => failing = false,
                }
            }
        }))
    }
}

impl Drop for Checkpointer {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl SqliteStore {
    /// Opens (creating if missing) the database at `url` (`sqlite://path`).
    pub async fn connect(url: &str, config: &DatabaseConfig) -> StoreResult<Self> {
        // Each connection of an in-memory database would see a database of its own.
        if url.contains(":memory:") || url.contains("mode=memory") {
            return Err(StoreError::Unsupported(
                "database_url: an in-memory SQLite database is not supported; name a file"
                    .to_owned(),
            ));
        }
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
            .connect_with(
                options
                    .clone()
                    .pragma("wal_autocheckpoint", WRITER_CHECKPOINT_PAGES),
            )
            .await?;
        let checkpointer = SqlitePoolOptions::new()
            .max_connections(1)
            .acquire_timeout(config.acquire_timeout)
            .connect_with(options.clone())
            .await?;
        // A connection per lane of reads: each lane runs one batch at a time.
        let read_lanes = lanes(config.max_connections);
        let readers = SqliteReaders::new(options.get_filename(), read_lanes);
        let pool = SqlitePoolOptions::new()
            .max_connections(config.max_connections)
            .acquire_timeout(config.acquire_timeout)
            .connect_with(options)
            .await?;
        Ok(Self {
            pool,
            // One lane of writes: there is one writer connection.
            session_writes: Self::start_session_writes(&writer, 1),
            writer,
            session_reads: Self::start_session_reads(readers, read_lanes),
            _checkpointer: Arc::new(Checkpointer::start(checkpointer)),
        })
    }
}

common_store_helpers!(SqliteStore, Sqlite);
session_writes!(SqliteStore, Sqlite);

impl SqliteStore {
    /// Each batch on its lane's own task (see [`SqliteReaders`]): no thread switch.
    fn start_session_reads(readers: SqliteReaders, lanes: usize) -> SessionReads {
        let readers = Arc::new(readers);
        Batcher::spawn(lanes, MAX_BATCH, move |batch: Vec<SessionRead>| {
            let readers = readers.clone();
            async move {
                match readers.sessions(&batch) {
                    Ok(rows) => answer_reads(&batch, &rows),
                    Err(error) => fail_all_as(batch.len(), error, StoreError::Sqlite),
                }
            }
        })
    }
}

impl SqliteStore {
    /// In one transaction, since SQLite has no data-modifying `with`: two statements for the
    /// whole batch, and one commit.
    async fn insert_sessions_at_once(
        writer: &SqlitePool,
        batch: &[(SessionRecord, AuditEvent)],
    ) -> Result<(), sqlx::Error> {
        let mut tx = writer.begin().await?;
        let mut sessions =
            sqlx::QueryBuilder::<Sqlite>::new(format!("insert into session ({SESSION_COLUMNS}) "));
        sessions.push_values(batch, |mut row, (session, _)| {
            push_session!(row, session);
        });
        sessions.build().execute(&mut *tx).await?;
        let mut audits = sqlx::QueryBuilder::<Sqlite>::new(format!(
            "insert into audit_log ({AUDIT_WRITTEN_COLUMNS}) "
        ));
        audits.push_values(batch, |mut row, (_, audit)| {
            push_audit!(row, audit);
        });
        audits.build().execute(&mut *tx).await?;
        tx.commit().await
    }
}

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

#[cfg(test)]
mod tests {
    use super::*;

    /// Committed pages reach the database file without the writer checkpointing: its threshold
    /// is far above what is written here, so only the checkpointer can have copied them.
    #[tokio::test]
    async fn the_checkpointer_copies_the_wal_into_the_database() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("checkpoint.db");
        let store = SqliteStore::connect(
            &format!("sqlite://{}", path.display()),
            &DatabaseConfig::default(),
        )
        .await
        .unwrap();
        sqlx::query("create table filler (bytes blob not null)")
            .execute(&store.writer)
            .await
            .unwrap();
        let before = std::fs::metadata(&path).unwrap().len();
        for _ in 0..50 {
            sqlx::query("insert into filler (bytes) values (zeroblob(16384))")
                .execute(&store.writer)
                .await
                .unwrap();
        }
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while std::fs::metadata(&path).unwrap().len() < before + 50 * 16384 {
            assert!(
                std::time::Instant::now() < deadline,
                "the database file stayed at {} bytes",
                std::fs::metadata(&path).unwrap().len()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}
