//! Storage of the verification pipeline: submitted captures (attestation, wrapped data key,
//! sealed media), decisions, redaction and retention, the job queue, and webhook endpoints with
//! their deliveries. A second trait beside [`Store`](super::Store), with one body for both
//! databases like the first (see `shared.rs`); job claiming differs per database.

use async_trait::async_trait;
use serde_json::Value;
use sqlx::types::Json;

use super::{AuditEvent, StoreResult, Transition};

/// The accepted attestation of a submission.
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct AttestationRecord {
    pub jti: String,
    pub session_id: String,
    pub issuer: String,
    pub claims: Json<Value>,
    pub expires_at: i64,
    pub received_at: i64,
}

/// One uploaded image, sealed with the session's data key.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct MediaRecord {
    pub session_id: String,
    /// `selfie`, `frame` or `document`.
    pub role: String,
    pub idx: i32,
    /// Of the image as uploaded, lower-case hex.
    pub sha256: String,
    pub sealed: Vec<u8>,
    pub created_at: i64,
    pub purge_at: Option<i64>,
}

/// A session's data key as stored: wrapped by the master key `master_kid` names.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct SessionKeyRecord {
    pub session_id: String,
    pub master_kid: String,
    pub wrapped_key: Vec<u8>,
    pub created_at: i64,
}

/// A verified capture, stored with the session's move to `submitted` or not at all.
#[derive(Debug, Clone)]
pub struct Submission {
    pub account_id: String,
    pub session_id: String,
    pub now: i64,
    pub key: SessionKeyRecord,
    pub attestation: AttestationRecord,
    pub media: Vec<MediaRecord>,
}

/// Work for the job runner.
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct JobRecord {
    pub job_id: String,
    /// What to run (`finalize`, `event`, `webhook`).
    pub kind: String,
    pub payload: Json<Value>,
    /// While unfinished, no other job has this key.
    pub dedupe_key: Option<String>,
    pub run_at: i64,
    /// Claims so far, this one included.
    pub attempts: i32,
    pub locked_until: Option<i64>,
    pub last_error: Option<String>,
    pub created_at: i64,
    pub done_at: Option<i64>,
}

impl JobRecord {
    /// A job due at `now`.
    pub fn new(kind: &str, payload: Value, dedupe_key: Option<String>, now: i64) -> Self {
        Self {
            job_id: crate::ids::new_id("job"),
            kind: kind.to_owned(),
            payload: Json(payload),
            dedupe_key,
            run_at: now,
            attempts: 0,
            locked_until: None,
            last_error: None,
            created_at: now,
            done_at: None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct WebhookEndpointRecord {
    pub webhook_endpoint_id: String,
    pub account_id: String,
    pub url: String,
    /// Space-separated event types.
    pub events: String,
    pub master_kid: String,
    pub sealed_secret: Vec<u8>,
    pub created_at: i64,
    pub deleted_at: Option<i64>,
}

impl WebhookEndpointRecord {
    pub fn wants(&self, event_type: &str) -> bool {
        self.events.split(' ').any(|wanted| wanted == event_type)
    }
}

#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct DeliveryRecord {
    pub webhook_delivery_id: String,
    pub webhook_endpoint_id: String,
    pub account_id: String,
    pub event_id: String,
    pub event_type: String,
    /// The event as sent, byte for byte (the signature covers it).
    pub payload: String,
    /// `pending`, `delivered` or `failed`.
    pub status: String,
    pub attempts: i32,
    pub next_attempt_at: Option<i64>,
    pub last_status_code: Option<i32>,
    pub last_error: Option<String>,
    pub created_at: i64,
    pub delivered_at: Option<i64>,
}

/// What one delivery attempt did.
#[derive(Debug, Clone, PartialEq)]
pub struct DeliveryAttempt {
    pub status: &'static str,
    pub next_attempt_at: Option<i64>,
    pub status_code: Option<i32>,
    pub error: Option<String>,
    pub delivered_at: Option<i64>,
}

pub(super) const ATTESTATION_COLUMNS: &str =
    "jti, session_id, issuer, claims, expires_at, received_at";
pub(super) const MEDIA_COLUMNS: &str =
    "session_id, role, idx, sha256, sealed, created_at, purge_at";
pub(super) const JOB_COLUMNS: &str = "job_id, kind, payload, dedupe_key, run_at, attempts, \
     locked_until, last_error, created_at, done_at";
pub(super) const ENDPOINT_COLUMNS: &str = "webhook_endpoint_id, account_id, url, events, \
     master_kid, sealed_secret, created_at, deleted_at";
pub(super) const DELIVERY_COLUMNS: &str = "webhook_delivery_id, webhook_endpoint_id, account_id, \
     event_id, event_type, payload, status, attempts, next_attempt_at, last_status_code, \
     last_error, created_at, delivered_at";

#[async_trait]
pub trait PipelineStore: Send + Sync {
    /// Stores a verified capture and moves the session from `created` (unexpired) to
    /// `submitted`, with `jobs` (the `session.submitted` event), in one transaction. A `jti`
    /// seen before is [`StoreError::Conflict`](super::StoreError::Conflict)`("attestation")`.
    /// The submission is taken whole so that its sealed images move into the query instead of
    /// being copied.
    async fn submit(
        &self,
        submission: Submission,
        audit: &AuditEvent,
        jobs: &[JobRecord],
    ) -> StoreResult<Transition>;
    async fn session_key(&self, session_id: &str) -> StoreResult<Option<SessionKeyRecord>>;
    async fn session_media(&self, session_id: &str) -> StoreResult<Vec<MediaRecord>>;
    async fn session_attestation(&self, session_id: &str)
    -> StoreResult<Option<AttestationRecord>>;
    /// Moves a `submitted` session, or one left `processing` since before `stale_before`, to
    /// `processing`: whoever gets `Done` decides it.
    async fn start_processing(
        &self,
        account_id: &str,
        session_id: &str,
        now: i64,
        stale_before: i64,
    ) -> StoreResult<Transition>;
    /// Gives a `processing` session back to `submitted` (the decision could not be made).
    async fn abandon_processing(&self, session_id: &str, now: i64) -> StoreResult<()>;
    /// Records the decision of a `processing` session: its status and result, the media's
    /// purge time, the audit row and `jobs`, in one transaction.
    #[allow(clippy::too_many_arguments)]
    async fn decide(
        &self,
        session_id: &str,
        status: &str,
        result: &Value,
        now: i64,
        purge_at: i64,
        audit: &AuditEvent,
        jobs: &[JobRecord],
    ) -> StoreResult<Transition>;
    /// Deletes the session's data key and media and marks it redacted (the decision stays).
    async fn redact(
        &self,
        account_id: &str,
        session_id: &str,
        now: i64,
        audit: &AuditEvent,
        jobs: &[JobRecord],
    ) -> StoreResult<Transition>;
    /// Deletes media whose purge time has come, and the data keys left with no media.
    async fn purge_media(&self, now: i64) -> StoreResult<u64>;

    /// Adds a job; `false` when an unfinished job has its dedupe key.
    async fn enqueue(&self, job: &JobRecord) -> StoreResult<bool>;
    /// Takes the next due job, leased until `lease_until`.
    async fn claim_job(&self, now: i64, lease_until: i64) -> StoreResult<Option<JobRecord>>;
    async fn finish_job(&self, job_id: &str, now: i64) -> StoreResult<()>;
    /// Runs the job again at `run_at`, noting why it has not finished.
    async fn retry_job(&self, job_id: &str, run_at: i64, error: &str) -> StoreResult<()>;
    async fn get_job(&self, job_id: &str) -> StoreResult<Option<JobRecord>>;
    /// Unfinished jobs whose time has come, by kind: the backlog the runners have not taken.
    async fn due_jobs(&self, now: i64) -> StoreResult<Vec<(String, i64)>>;

    async fn insert_webhook_endpoint(
        &self,
        endpoint: &WebhookEndpointRecord,
        audit: &AuditEvent,
    ) -> StoreResult<()>;
    /// The live endpoints of an account, oldest first.
    async fn webhook_endpoints(&self, account_id: &str) -> StoreResult<Vec<WebhookEndpointRecord>>;
    async fn get_webhook_endpoint(
        &self,
        account_id: &str,
        endpoint_id: &str,
    ) -> StoreResult<Option<WebhookEndpointRecord>>;
    /// Marks an endpoint deleted (its deliveries stay visible); `false` when there is none.
    async fn delete_webhook_endpoint(
        &self,
        account_id: &str,
        endpoint_id: &str,
        now: i64,
        audit: &AuditEvent,
    ) -> StoreResult<bool>;
    /// Creates one delivery per endpoint of the account that wants the event, each with its
    /// `webhook` job, in one transaction; an event already fanned out to an endpoint is skipped.
    async fn fan_out(
        &self,
        account_id: &str,
        event_id: &str,
        event_type: &str,
        payload: &str,
        now: i64,
    ) -> StoreResult<u64>;
    async fn get_delivery(&self, delivery_id: &str) -> StoreResult<Option<DeliveryRecord>>;
    /// An endpoint's deliveries, newest first.
    async fn deliveries(
        &self,
        account_id: &str,
        endpoint_id: &str,
        limit: i64,
    ) -> StoreResult<Vec<DeliveryRecord>>;
    async fn record_attempt(&self, delivery_id: &str, attempt: &DeliveryAttempt)
    -> StoreResult<()>;
}

/// Implements [`PipelineStore`] for `$store` on `$db`; `$claim` is the SQL that leases the next
/// due job (`$1` now, `$2` lease end), returning [`JOB_COLUMNS`].
macro_rules! impl_pipeline_store {
    ($store:ty, $db:ty, $claim:expr) => {
        #[async_trait::async_trait]
        impl PipelineStore for $store {
            async fn submit(
                &self,
                submission: Submission,
                audit: &AuditEvent,
                jobs: &[JobRecord],
            ) -> StoreResult<Transition> {
                let mut tx = self.writer.begin().await?;
                let sql = format!(
                    "update session set status = 'submitted', updated_at = $3 \
                     where account_id = $1 and session_id = $2 \
                     and status = 'created' and expires_at > $3 \
                     returning {SESSION_COLUMNS}"
                );
                let Some(session) = sqlx::query_as::<_, SessionRecord>(&sql)
                    .bind(&submission.account_id)
                    .bind(&submission.session_id)
                    .bind(submission.now)
                    .fetch_optional(&mut *tx)
                    .await?
                else {
                    let refused =
                        Self::refusal_in(&mut tx, &submission.account_id, &submission.session_id)
                            .await?;
                    tx.rollback().await?;
                    return Ok(refused);
                };
                let a = &submission.attestation;
                let sql = format!("insert into attestation ({ATTESTATION_COLUMNS}) values ($1, $2, $3, $4, $5, $6)");
                sqlx::query(&sql)
                    .bind(&a.jti)
                    .bind(&a.session_id)
                    .bind(&a.issuer)
                    .bind(&a.claims)
                    .bind(a.expires_at)
                    .bind(a.received_at)
                    .execute(&mut *tx)
                    .await
                    .map_err(|e| conflict_or(e, "attestation"))?;
                let k = &submission.key;
                sqlx::query(
                    "insert into session_key (session_id, master_kid, wrapped_key, created_at) \
                     values ($1, $2, $3, $4)",
                )
                .bind(&k.session_id)
                .bind(&k.master_kid)
                .bind(&k.wrapped_key)
                .bind(k.created_at)
                .execute(&mut *tx)
                .await?;
                let sql = format!("insert into media ({MEDIA_COLUMNS}) values ($1, $2, $3, $4, $5, $6, $7)");
                for m in submission.media {
                    sqlx::query(&sql)
                        .bind(&m.session_id)
                        .bind(&m.role)
                        .bind(m.idx)
                        .bind(&m.sha256)
                        .bind(m.sealed)
                        .bind(m.created_at)
                        .bind(m.purge_at)
                        .execute(&mut *tx)
                        .await?;
                }
                Self::audit_in(&mut tx, audit).await?;
                Self::jobs_in(&mut tx, jobs).await?;
                tx.commit().await?;
                Ok(Transition::Done(session))
            }

            async fn session_key(&self, session_id: &str) -> StoreResult<Option<SessionKeyRecord>> {
                Ok(sqlx::query_as::<_, SessionKeyRecord>(
                    "select session_id, master_kid, wrapped_key, created_at \
                     from session_key where session_id = $1",
                )
                .bind(session_id)
                .fetch_optional(&self.pool)
                .await?)
            }

            async fn session_media(&self, session_id: &str) -> StoreResult<Vec<MediaRecord>> {
                let sql = format!("select {MEDIA_COLUMNS} from media where session_id = $1 order by role, idx");
                Ok(sqlx::query_as::<_, MediaRecord>(&sql)
                    .bind(session_id)
                    .fetch_all(&self.pool)
                    .await?)
            }

            async fn session_attestation(
                &self,
                session_id: &str,
            ) -> StoreResult<Option<AttestationRecord>> {
                let sql = format!(
                    "select {ATTESTATION_COLUMNS} from attestation where session_id = $1 \
                     order by received_at desc limit 1"
                );
                Ok(sqlx::query_as::<_, AttestationRecord>(&sql)
                    .bind(session_id)
                    .fetch_optional(&self.pool)
                    .await?)
            }

            async fn start_processing(
                &self,
                account_id: &str,
                session_id: &str,
                now: i64,
                stale_before: i64,
            ) -> StoreResult<Transition> {
                let mut tx = self.writer.begin().await?;
                let sql = format!(
                    "update session set status = 'processing', updated_at = $3 \
                     where account_id = $1 and session_id = $2 and redacted_at is null \
                     and (status = 'submitted' or (status = 'processing' and updated_at < $4)) \
                     returning {SESSION_COLUMNS}"
                );
                let updated = sqlx::query_as::<_, SessionRecord>(&sql)
                    .bind(account_id)
                    .bind(session_id)
                    .bind(now)
                    .bind(stale_before)
                    .fetch_optional(&mut *tx)
                    .await?;
                let outcome = match updated {
                    Some(session) => Transition::Done(session),
                    None => Self::refusal_in(&mut tx, account_id, session_id).await?,
                };
                tx.commit().await?;
                Ok(outcome)
            }

            async fn abandon_processing(&self, session_id: &str, now: i64) -> StoreResult<()> {
                sqlx::query(
                    "update session set status = 'submitted', updated_at = $2 \
                     where session_id = $1 and status = 'processing'",
                )
                .bind(session_id)
                .bind(now)
                .execute(&self.writer)
                .await?;
                Ok(())
            }

            async fn decide(
                &self,
                session_id: &str,
                status: &str,
                result: &serde_json::Value,
                now: i64,
                purge_at: i64,
                audit: &AuditEvent,
                jobs: &[JobRecord],
            ) -> StoreResult<Transition> {
                let mut tx = self.writer.begin().await?;
                let sql = format!(
                    "update session set status = $2, result = $3, updated_at = $4 \
                     where session_id = $1 and status = 'processing' \
                     returning {SESSION_COLUMNS}"
                );
                let updated = sqlx::query_as::<_, SessionRecord>(&sql)
                    .bind(session_id)
                    .bind(status)
                    .bind(sqlx::types::Json(result))
                    .bind(now)
                    .fetch_optional(&mut *tx)
                    .await?;
                let Some(session) = updated else {
                    tx.rollback().await?;
                    return Ok(Transition::NotFound);
                };
                sqlx::query("update media set purge_at = $2 where session_id = $1")
                    .bind(session_id)
                    .bind(purge_at)
                    .execute(&mut *tx)
                    .await?;
                Self::audit_in(&mut tx, audit).await?;
                Self::jobs_in(&mut tx, jobs).await?;
                tx.commit().await?;
                Ok(Transition::Done(session))
            }

            async fn redact(
                &self,
                account_id: &str,
                session_id: &str,
                now: i64,
                audit: &AuditEvent,
                jobs: &[JobRecord],
            ) -> StoreResult<Transition> {
                let mut tx = self.writer.begin().await?;
                // A session being decided right now is redacted after its decision.
                let sql = format!(
                    "update session set redacted_at = $3, updated_at = $3 \
                     where account_id = $1 and session_id = $2 and redacted_at is null \
                     and status <> 'processing' \
                     returning {SESSION_COLUMNS}"
                );
                let updated = sqlx::query_as::<_, SessionRecord>(&sql)
                    .bind(account_id)
                    .bind(session_id)
                    .bind(now)
                    .fetch_optional(&mut *tx)
                    .await?;
                let Some(session) = updated else {
                    let refused = Self::refusal_in(&mut tx, account_id, session_id).await?;
                    tx.rollback().await?;
                    return Ok(refused);
                };
                for table in ["media", "session_key"] {
                    sqlx::query(&format!("delete from {table} where session_id = $1"))
                        .bind(session_id)
                        .execute(&mut *tx)
                        .await?;
                }
                Self::audit_in(&mut tx, audit).await?;
                Self::jobs_in(&mut tx, jobs).await?;
                tx.commit().await?;
                Ok(Transition::Done(session))
            }

            async fn purge_media(&self, now: i64) -> StoreResult<u64> {
                let mut tx = self.writer.begin().await?;
                let purged = sqlx::query("delete from media where purge_at <= $1")
                    .bind(now)
                    .execute(&mut *tx)
                    .await?
                    .rows_affected();
                sqlx::query(
                    "delete from session_key where not exists \
                     (select 1 from media where media.session_id = session_key.session_id)",
                )
                .execute(&mut *tx)
                .await?;
                tx.commit().await?;
                Ok(purged)
            }

            async fn enqueue(&self, job: &JobRecord) -> StoreResult<bool> {
                let mut tx = self.writer.begin().await?;
                let added = Self::jobs_in(&mut tx, std::slice::from_ref(job)).await?;
                tx.commit().await?;
                Ok(added == 1)
            }

            async fn claim_job(&self, now: i64, lease_until: i64) -> StoreResult<Option<JobRecord>> {
                Ok(sqlx::query_as::<_, JobRecord>($claim)
                    .bind(now)
                    .bind(lease_until)
                    .fetch_optional(&self.writer)
                    .await?)
            }

            async fn finish_job(&self, job_id: &str, now: i64) -> StoreResult<()> {
                // The dedupe key is freed so the same work can be asked for again later.
                sqlx::query(
                    "update job set done_at = $2, locked_until = null, dedupe_key = null \
                     where job_id = $1",
                )
                .bind(job_id)
                .bind(now)
                .execute(&self.writer)
                .await?;
                Ok(())
            }

            async fn retry_job(&self, job_id: &str, run_at: i64, error: &str) -> StoreResult<()> {
                sqlx::query(
                    "update job set run_at = $2, locked_until = null, last_error = $3 \
                     where job_id = $1",
                )
                .bind(job_id)
                .bind(run_at)
                .bind(error)
                .execute(&self.writer)
                .await?;
                Ok(())
            }

            async fn get_job(&self, job_id: &str) -> StoreResult<Option<JobRecord>> {
                let sql = format!("select {JOB_COLUMNS} from job where job_id = $1");
                Ok(sqlx::query_as::<_, JobRecord>(&sql)
                    .bind(job_id)
                    .fetch_optional(&self.pool)
                    .await?)
            }

            async fn due_jobs(&self, now: i64) -> StoreResult<Vec<(String, i64)>> {
                Ok(sqlx::query_as::<_, (String, i64)>(
                    "select kind, count(*) from job \
                     where done_at is null and run_at <= $1 \
                       and (locked_until is null or locked_until < $1) \
                     group by kind",
                )
                .bind(now)
                .fetch_all(&self.pool)
                .await?)
            }

            async fn insert_webhook_endpoint(
                &self,
                endpoint: &WebhookEndpointRecord,
                audit: &AuditEvent,
            ) -> StoreResult<()> {
                let mut tx = self.writer.begin().await?;
                let sql = format!(
                    "insert into webhook_endpoint ({ENDPOINT_COLUMNS}) \
                     values ($1, $2, $3, $4, $5, $6, $7, $8)"
                );
                sqlx::query(&sql)
                    .bind(&endpoint.webhook_endpoint_id)
                    .bind(&endpoint.account_id)
                    .bind(&endpoint.url)
                    .bind(&endpoint.events)
                    .bind(&endpoint.master_kid)
                    .bind(&endpoint.sealed_secret)
                    .bind(endpoint.created_at)
                    .bind(endpoint.deleted_at)
                    .execute(&mut *tx)
                    .await?;
                Self::audit_in(&mut tx, audit).await?;
                tx.commit().await?;
                Ok(())
            }

            async fn webhook_endpoints(
                &self,
                account_id: &str,
            ) -> StoreResult<Vec<WebhookEndpointRecord>> {
                let sql = format!(
                    "select {ENDPOINT_COLUMNS} from webhook_endpoint \
                     where account_id = $1 and deleted_at is null order by webhook_endpoint_id"
                );
                Ok(sqlx::query_as::<_, WebhookEndpointRecord>(&sql)
                    .bind(account_id)
                    .fetch_all(&self.pool)
                    .await?)
            }

            async fn get_webhook_endpoint(
                &self,
                account_id: &str,
                endpoint_id: &str,
            ) -> StoreResult<Option<WebhookEndpointRecord>> {
                let sql = format!(
                    "select {ENDPOINT_COLUMNS} from webhook_endpoint \
                     where account_id = $1 and webhook_endpoint_id = $2"
                );
                Ok(sqlx::query_as::<_, WebhookEndpointRecord>(&sql)
                    .bind(account_id)
                    .bind(endpoint_id)
                    .fetch_optional(&self.pool)
                    .await?)
            }

            async fn delete_webhook_endpoint(
                &self,
                account_id: &str,
                endpoint_id: &str,
                now: i64,
                audit: &AuditEvent,
            ) -> StoreResult<bool> {
                let mut tx = self.writer.begin().await?;
                let deleted = sqlx::query(
                    "update webhook_endpoint set deleted_at = $3 \
                     where account_id = $1 and webhook_endpoint_id = $2 and deleted_at is null",
                )
                .bind(account_id)
                .bind(endpoint_id)
                .bind(now)
                .execute(&mut *tx)
                .await?
                .rows_affected()
                    == 1;
                if deleted {
                    Self::audit_in(&mut tx, audit).await?;
                }
                tx.commit().await?;
                Ok(deleted)
            }

            async fn fan_out(
                &self,
                account_id: &str,
                event_id: &str,
                event_type: &str,
                payload: &str,
                now: i64,
            ) -> StoreResult<u64> {
                let endpoints = self.webhook_endpoints(account_id).await?;
                let mut tx = self.writer.begin().await?;
                let sql = format!(
                    "insert into webhook_delivery ({DELIVERY_COLUMNS}) \
                     values ($1, $2, $3, $4, $5, $6, 'pending', 0, $7, null, null, $7, null) \
                     on conflict (webhook_endpoint_id, event_id) do nothing"
                );
                let mut created = 0;
                for endpoint in endpoints.iter().filter(|e| e.wants(event_type)) {
                    let delivery_id = crate::ids::new_id("whd");
                    let added = sqlx::query(&sql)
                        .bind(&delivery_id)
                        .bind(&endpoint.webhook_endpoint_id)
                        .bind(account_id)
                        .bind(event_id)
                        .bind(event_type)
                        .bind(payload)
                        .bind(now)
                        .execute(&mut *tx)
                        .await?
                        .rows_affected();
                    if added == 1 {
                        let job = JobRecord::new(
                            "webhook",
                            serde_json::json!({ "delivery_id": delivery_id }),
                            None,
                            now,
                        );
                        Self::jobs_in(&mut tx, &[job]).await?;
                        created += 1;
                    }
                }
                tx.commit().await?;
                Ok(created)
            }

            async fn get_delivery(&self, delivery_id: &str) -> StoreResult<Option<DeliveryRecord>> {
                let sql = format!(
                    "select {DELIVERY_COLUMNS} from webhook_delivery where webhook_delivery_id = $1"
                );
                Ok(sqlx::query_as::<_, DeliveryRecord>(&sql)
                    .bind(delivery_id)
                    .fetch_optional(&self.pool)
                    .await?)
            }

            async fn deliveries(
                &self,
                account_id: &str,
                endpoint_id: &str,
                limit: i64,
            ) -> StoreResult<Vec<DeliveryRecord>> {
                let sql = format!(
                    "select {DELIVERY_COLUMNS} from webhook_delivery \
                     where account_id = $1 and webhook_endpoint_id = $2 \
                     order by webhook_delivery_id desc limit $3"
                );
                Ok(sqlx::query_as::<_, DeliveryRecord>(&sql)
                    .bind(account_id)
                    .bind(endpoint_id)
                    .bind(limit)
                    .fetch_all(&self.pool)
                    .await?)
            }

            async fn record_attempt(
                &self,
                delivery_id: &str,
                attempt: &DeliveryAttempt,
            ) -> StoreResult<()> {
                sqlx::query(
                    "update webhook_delivery set status = $2, attempts = attempts + 1, \
                     next_attempt_at = $3, last_status_code = $4, last_error = $5, \
                     delivered_at = $6 where webhook_delivery_id = $1",
                )
                .bind(delivery_id)
                .bind(attempt.status)
                .bind(attempt.next_attempt_at)
                .bind(attempt.status_code)
                .bind(&attempt.error)
                .bind(attempt.delivered_at)
                .execute(&self.writer)
                .await?;
                Ok(())
            }
        }

        impl $store {
            /// What a conditional change that matched no row means: the session as it is
            /// (refused), or no such session.
            async fn refusal_in(
                tx: &mut sqlx::Transaction<'_, $db>,
                account_id: &str,
                session_id: &str,
            ) -> StoreResult<Transition> {
                let sql = format!(
                    "select {SESSION_COLUMNS} from session where account_id = $1 and session_id = $2"
                );
                Ok(sqlx::query_as::<_, SessionRecord>(&sql)
                    .bind(account_id)
                    .bind(session_id)
                    .fetch_optional(&mut **tx)
                    .await?
                    .map_or(Transition::NotFound, Transition::Refused))
            }

            /// Inserts `jobs`; returns how many were new (a live dedupe key skips one).
            async fn jobs_in(
                tx: &mut sqlx::Transaction<'_, $db>,
                jobs: &[JobRecord],
            ) -> StoreResult<u64> {
                let sql = format!(
                    "insert into job ({JOB_COLUMNS}) values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) \
                     on conflict (dedupe_key) do nothing"
                );
                let mut added = 0;
                for job in jobs {
                    added += sqlx::query(&sql)
                        .bind(&job.job_id)
                        .bind(&job.kind)
                        .bind(&job.payload)
                        .bind(&job.dedupe_key)
                        .bind(job.run_at)
                        .bind(job.attempts)
                        .bind(job.locked_until)
                        .bind(&job.last_error)
                        .bind(job.created_at)
                        .bind(job.done_at)
                        .execute(&mut **tx)
                        .await?
                        .rows_affected();
                }
                Ok(added)
            }
        }
    };
}

pub(super) use impl_pipeline_store;
