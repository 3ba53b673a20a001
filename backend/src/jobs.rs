//! The job runner: finalize jobs (`Prefer: respond-async`), event fan-out, webhook deliveries and
//! the retention sweep. `idyntra worker` runs it alone; `idyntra serve` runs it beside the API when
//! `jobs.in_server` is on. Jobs live in the database and are claimed with a lease, so several
//! runners share them and a runner that dies mid-job loses nothing: its lease lapses and another
//! runner takes the job over.

use std::time::Duration;

use serde_json::json;

use crate::app::AppState;
use crate::clock;
use crate::events;
use crate::finalize::{self, FinalizeError, Requester};
use crate::inference::InferenceError;
use crate::store::{DeliveryAttempt, JobRecord};
use crate::webhooks;

/// A job that keeps failing for a fault of ours is given up after this many claims.
const MAX_ATTEMPTS: i32 = 20;

/// What running a job came to.
enum Outcome {
    Done,
    RetryIn(Duration, String),
}

/// The finalize job of a session (one unfinished per session).
pub fn finalize_job(
    account_id: &str,
    session_id: &str,
    requester: &Requester,
    now: i64,
) -> JobRecord {
    JobRecord::new(
        "finalize",
        json!({
            "account_id": account_id,
            "session_id": session_id,
            "actor": requester.actor,
            "request_id": requester.request_id,
        }),
        Some(format!("finalize:{session_id}")),
        now,
    )
}

/// Runs jobs until `shutdown` resolves; jobs under way then finish (or their leases lapse).
pub async fn run(app: AppState, shutdown: impl std::future::Future<Output = ()> + Send) {
    let http = match crate::webhooks::delivery_client(&app.config.webhooks) {
        Ok(http) => http,
        Err(error) => {
            // Only a TLS set-up failure gets here; a client without the guards is no fallback.
            tracing::error!(error = %error, "cannot build the webhook HTTP client; jobs do not run");
            return;
        }
    };
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let mut runners = tokio::task::JoinSet::new();
    for _ in 0..app.config.jobs.concurrency {
        runners.spawn(claim_loop(app.clone(), http.clone(), stopped.clone()));
    }
    runners.spawn(retention_loop(app.clone(), stopped));
    shutdown.await;
    let _ = stop.send(true);
    while runners.join_next().await.is_some() {}
}

async fn claim_loop(
    app: AppState,
    http: reqwest::Client,
    mut stopped: tokio::sync::watch::Receiver<bool>,
) {
    let lease = clock::ms(app.config.jobs.lease);
    while !*stopped.borrow() {
        let now = clock::now_ms();
        match app.store.claim_job(now, now + lease).await {
            Ok(Some(job)) => run_one(&app, &http, job).await,
            Ok(None) => {
                let _ =
                    tokio::time::timeout(app.config.jobs.poll_interval, stopped.changed()).await;
            }
            Err(error) => {
                tracing::warn!(error = %error, "could not claim a job");
                let _ = tokio::time::timeout(app.config.jobs.poll_interval * 4, stopped.changed())
                    .await;
            }
        }
    }
}

async fn run_one(app: &AppState, http: &reqwest::Client, job: JobRecord) {
    let outcome = match job.kind.as_str() {
        "finalize" => run_finalize(app, &job).await,
        "event" => run_event(app, &job).await,
        "webhook" => run_webhook(app, http, &job).await,
        other => {
            tracing::error!(kind = other, job = %job.job_id, "unknown job kind; dropped");
            Ok(Outcome::Done)
        }
    };
    let outcome = outcome.unwrap_or_else(|error| {
        let delay = Duration::from_secs(2u64.saturating_pow(job.attempts.clamp(1, 10) as u32));
        Outcome::RetryIn(delay, format!("{error:#}"))
    });
    let now = clock::now_ms();
    let written = match outcome {
        Outcome::Done => app.store.finish_job(&job.job_id, now).await,
        Outcome::RetryIn(_, error) if job.attempts >= MAX_ATTEMPTS => {
            tracing::error!(job = %job.job_id, kind = %job.kind, error = %error, "job given up");
            app.store.finish_job(&job.job_id, now).await
        }
        Outcome::RetryIn(delay, error) => {
            tracing::info!(job = %job.job_id, kind = %job.kind, error = %error, "job will be retried");
            app.store
                .retry_job(&job.job_id, now + clock::ms(delay), &error)
                .await
        }
    };
    if let Err(error) = written {
        // The lease lapses and the job runs again: at least once, never lost.
        tracing::warn!(job = %job.job_id, error = %error, "could not record a job's outcome");
    }
}

fn field<'a>(job: &'a JobRecord, name: &str) -> anyhow::Result<&'a str> {
    job.payload
        .0
        .get(name)
        .and_then(|v| v.as_str())
        .ok_or_else(|| anyhow::anyhow!("{} job without {name}", job.kind))
}

async fn run_finalize(app: &AppState, job: &JobRecord) -> anyhow::Result<Outcome> {
    let requester = Requester {
        actor: field(job, "actor")?.to_owned(),
        request_id: job
            .payload
            .0
            .get("request_id")
            .and_then(|v| v.as_str())
            .map(str::to_owned),
    };
    let outcome = finalize::finalize(
        app,
        field(job, "account_id")?,
        field(job, "session_id")?,
        &requester,
    )
    .await;
    Ok(match outcome {
        Ok(_) => Outcome::Done,
        // Being decided by a request right now: look again soon.
        Err(FinalizeError::NotReady("processing")) => Outcome::RetryIn(
            Duration::from_secs(5),
            "the session is being processed".into(),
        ),
        Err(FinalizeError::NotReady(_) | FinalizeError::NotFound(_) | FinalizeError::MediaGone) => {
            Outcome::Done
        }
        Err(FinalizeError::Inference(InferenceError::BreakerOpen { retry_after })) => {
            Outcome::RetryIn(retry_after, "the model engine's breaker is open".into())
        }
        Err(FinalizeError::Inference(error)) => {
            Outcome::RetryIn(Duration::from_secs(2), error.to_string())
        }
        Err(FinalizeError::Internal(error)) => return Err(error),
    })
}

async fn run_event(app: &AppState, job: &JobRecord) -> anyhow::Result<Outcome> {
    let (account_id, event_id, event_type, body) =
        events::parse(&job.payload.0).ok_or_else(|| anyhow::anyhow!("malformed event job"))?;
    let created = app
        .store
        .fan_out(account_id, event_id, event_type, &body, clock::now_ms())
        .await?;
    tracing::debug!(event = event_id, deliveries = created, "event fanned out");
    Ok(Outcome::Done)
}

async fn run_webhook(
    app: &AppState,
    http: &reqwest::Client,
    job: &JobRecord,
) -> anyhow::Result<Outcome> {
    let delivery_id = field(job, "delivery_id")?;
    let Some(delivery) = app.store.get_delivery(delivery_id).await? else {
        return Ok(Outcome::Done);
    };
    if delivery.status != "pending" {
        return Ok(Outcome::Done);
    }
    let endpoint = app
        .store
        .get_webhook_endpoint(&delivery.account_id, &delivery.webhook_endpoint_id)
        .await?;
    let Some(endpoint) = endpoint.filter(|e| e.deleted_at.is_none()) else {
        let attempt = DeliveryAttempt {
            status: "failed",
            next_attempt_at: None,
            status_code: None,
            error: Some("the endpoint was deleted".to_owned()),
            delivered_at: None,
        };
        app.store.record_attempt(delivery_id, &attempt).await?;
        return Ok(Outcome::Done);
    };
    let secret = app
        .vault
        .open_secret(
            &endpoint.master_kid,
            &crate::api::webhooks::secret_context(&endpoint.webhook_endpoint_id),
            &endpoint.sealed_secret,
        )
        .map_err(|e| anyhow::anyhow!("secret of {}: {e}", endpoint.webhook_endpoint_id))?;
    let now = clock::now_ms();
    let attempt = webhooks::deliver(
        http,
        &app.config.webhooks,
        app.client_tokens.identity(),
        &endpoint.url,
        &secret,
        &delivery,
        now,
    )
    .await;
    app.store.record_attempt(delivery_id, &attempt).await?;
    app.metrics.webhook_attempt(attempt.status);
    Ok(match attempt.next_attempt_at {
        Some(at) => Outcome::RetryIn(
            Duration::from_millis(u64::try_from(at - now).unwrap_or(0)),
            attempt.error.unwrap_or_default(),
        ),
        None => Outcome::Done,
    })
}

/// Purges media past its retention, every `jobs.retention_interval`.
async fn retention_loop(app: AppState, mut stopped: tokio::sync::watch::Receiver<bool>) {
    while !*stopped.borrow() {
        match app.store.purge_media(clock::now_ms()).await {
            Ok(0) => {}
            Ok(purged) => tracing::info!(purged, "media past retention purged"),
            Err(error) => tracing::warn!(error = %error, "could not purge media"),
        }
        let _ = tokio::time::timeout(app.config.jobs.retention_interval, stopped.changed()).await;
    }
}
