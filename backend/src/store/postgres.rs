//! PostgreSQL, the production database.

use idyntra_types::SessionStatus;
use sqlx::postgres::PgPoolOptions;
use sqlx::{PgPool, Postgres};

use super::batch::{
    Batcher, MAX_BATCH, SessionRead, SessionReads, SessionWrites, answer_reads, fail_all, lanes,
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
use super::{
    Account, ApiKeyRecord, AuditEntry, AuditEvent, IdempotencyStart, IdempotencyWindow, PoolState,
    SessionQuery, SessionRecord, Store, StoreResult, StoredResponse, Transition,
};
use crate::config::DatabaseConfig;

#[derive(Debug, Clone)]
pub struct PostgresStore {
    pool: PgPool,
    /// The same pool: PostgreSQL runs concurrent writers well.
    writer: PgPool,
    session_writes: SessionWrites,
    session_reads: SessionReads,
}

impl PostgresStore {
    pub async fn connect(url: &str, config: &DatabaseConfig) -> StoreResult<Self> {
        let pool = PgPoolOptions::new()
            .max_connections(config.max_connections)
            .acquire_timeout(config.acquire_timeout)
            .connect(url)
            .await?;
        let lanes = lanes(config.max_connections);
        Ok(Self {
            session_writes: Self::start_session_writes(&pool, lanes),
            session_reads: Self::start_session_reads(&pool, lanes),
            writer: pool.clone(),
            pool,
        })
    }
}

common_store_helpers!(PostgresStore, Postgres);
session_writes!(PostgresStore, Postgres);

impl PostgresStore {
    /// Concurrent reads by id, one query for a batch: a round trip to PostgreSQL is what a read
    /// costs most (see [`super::batch`]).
    fn start_session_reads(pool: &PgPool, lanes: usize) -> SessionReads {
        let pool = pool.clone();
        Batcher::spawn(lanes, MAX_BATCH, move |batch| {
            let pool = pool.clone();
            async move { Self::read_session_batch(&pool, &batch).await }
        })
    }

    async fn read_session_batch(
        pool: &PgPool,
        batch: &[SessionRead],
    ) -> Vec<StoreResult<Option<SessionRecord>>> {
        let mut sql = sqlx::QueryBuilder::<Postgres>::new(format!(
            "select {SESSION_COLUMNS} from session where session_id in ("
        ));
        let mut ids = sql.separated(", ");
        for (_, session_id) in batch {
            ids.push_bind(session_id);
        }
        sql.push(")");
        match sql.build_query_as::<SessionRecord>().fetch_all(pool).await {
            Ok(rows) => answer_reads(batch, &rows),
            Err(error) => fail_all(batch.len(), error),
        }
    }

    /// One statement, atomic on its own: the sessions and their audit rows in a single round
    /// trip (a data-modifying `with`) instead of four (begin, two inserts, commit).
    async fn insert_sessions_at_once(
        writer: &PgPool,
        batch: &[(SessionRecord, AuditEvent)],
    ) -> Result<(), sqlx::Error> {
        let mut sql = sqlx::QueryBuilder::<Postgres>::new(format!(
            "with inserted as (insert into session ({SESSION_COLUMNS}) "
        ));
        sql.push_values(batch, |mut row, (session, _)| {
            push_session!(row, session);
        });
        sql.push(format!(
            " returning session_id) insert into audit_log ({AUDIT_WRITTEN_COLUMNS}) "
        ));
        sql.push_values(batch, |mut row, (_, audit)| {
            push_audit!(row, audit);
        });
        sql.build().execute(writer).await?;
        Ok(())
    }
}

impl_store!(PostgresStore, Postgres, {
    async fn migrate(&self) -> StoreResult<()> {
        sqlx::migrate!("./migrations/postgres")
            .run(&self.pool)
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
        "postgres"
    }
});

// Concurrent workers skip the rows others are claiming instead of waiting on them.
impl_pipeline_store!(
    PostgresStore,
    Postgres,
    "update job set locked_until = $2, attempts = attempts + 1 \
     where job_id = (select job_id from job where done_at is null and run_at <= $1 \
     and (locked_until is null or locked_until <= $1) order by run_at limit 1 for update skip locked) \
     returning job_id, kind, payload, dedupe_key, run_at, attempts, locked_until, last_error, created_at, done_at"
);

#[cfg(test)]
mod tests {
    use super::*;

    /// The transaction that last wrote the chain's head row.
    async fn head_version(store: &PostgresStore) -> String {
        sqlx::query_scalar("select xmin::text from audit_head")
            .fetch_one(&store.pool)
            .await
            .unwrap()
    }

    #[tokio::test]
    async fn a_seal_with_nothing_to_chain_writes_nothing() {
        let url = idyntra_tests::fresh_postgres_database().await;
        let store = PostgresStore::connect(&url, &DatabaseConfig::default())
            .await
            .unwrap();
        store.migrate().await.unwrap();
        store.seal_audit(i64::MAX).await.unwrap();
        let idle = head_version(&store).await;
        assert_eq!(store.seal_audit(i64::MAX).await.unwrap(), 0);
        assert_eq!(head_version(&store).await, idle);

        store
            .append_audit(&super::super::story::event("extra", "x"))
            .await
            .unwrap();
        assert_eq!(store.seal_audit(i64::MAX).await.unwrap(), 1);
        assert_ne!(head_version(&store).await, idle);
    }
}
