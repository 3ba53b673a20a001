//! The Idyntra backend: the server-to-server API over a [`Store`](store::Store), with secret-key
//! authentication, rate limits, idempotency, an audit trail, metrics and JSON logs.
//!
//! `main.rs` is a thin shell over [`cli`]; tests build the app with [`App::open`](app::App::open)
//! and drive [`api::router`] without a socket, or [`serve`] on port 0.
#![forbid(unsafe_code)]

pub mod abuse_ledger;
pub mod api;
pub mod api_keys;
pub mod app;
pub mod auth;
pub mod batch;
pub mod cli;
pub mod client_token;
pub mod clock;
pub mod config;
pub mod decision;
pub mod edge_host;
pub mod edge_trust;
pub mod error;
pub mod eval;
pub mod events;
pub mod evidence;
pub mod face_cache;
pub mod finalize;
pub mod idempotency;
pub mod ids;
pub mod inference;
pub mod jobs;
pub mod log_format;
pub mod log_writer;
pub mod perimeter;
pub mod rate_limit;
pub mod redis_link;
pub mod request_id;
pub mod store;
pub mod submission;
pub mod telemetry;
pub mod vault;
pub mod verify;
pub mod webhooks;

use std::future::{Future, IntoFuture};
use std::net::SocketAddr;
use std::time::Duration;

use axum::ServiceExt as _;
use tokio::net::TcpListener;

use crate::app::AppState;

/// How often unsealed audit rows are chained.
const AUDIT_SEAL_INTERVAL: Duration = Duration::from_secs(1);
/// Audit rows chained per sealing transaction.
const AUDIT_SEAL_BATCH: i64 = 200;
/// Expired idempotency keys are purged every this many seal ticks (a minute).
const PURGE_EVERY_TICKS: u64 = 60;

/// Serves the API on `listener` until `shutdown` resolves, then drains open requests.
pub async fn serve(
    state: AppState,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let maintenance = tokio::spawn(maintain_forever(state.clone()));
    let (stop_jobs, jobs_stopped) = tokio::sync::oneshot::channel::<()>();
    let jobs = state.config.jobs.in_server.then(|| {
        tokio::spawn(jobs::run(state.clone(), async move {
            let _ = jobs_stopped.await;
        }))
    });
    let api = api::router(state.clone()).into_make_service_with_connect_info::<SocketAddr>();
    let served = axum::serve(listener, api)
        .with_graceful_shutdown(shutdown)
        .await;
    maintenance.abort();
    let _ = stop_jobs.send(());
    if let Some(jobs) = jobs {
        let _ = jobs.await;
    }
    // Chain what the last requests wrote before the process ends.
    if let Err(error) = state.store.seal_audit(i64::MAX).await {
        tracing::warn!(error = %error, "could not seal the audit log at shutdown");
    }
    served
}

/// Runs the jobs of a worker process until `shutdown`, serving only its operations endpoints
/// (`/healthz`, `/readyz`, `/metrics`) on `listener`: orchestrators probe it and Prometheus
/// scrapes its job and model metrics like the API's.
pub async fn work(
    state: AppState,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let maintenance = tokio::spawn(maintain_forever(state.clone()));
    let (stop_serving, serving_stopped) = tokio::sync::oneshot::channel::<()>();
    let router = api::operations_router(state.clone());
    let served = tokio::spawn(
        axum::serve(
            listener,
            router.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .with_graceful_shutdown(async move {
            let _ = serving_stopped.await;
        })
        .into_future(),
    );
    // Jobs stop first (a job in flight finishes or its lease lapses); probes answer until then.
    jobs::run(state.clone(), shutdown).await;
    maintenance.abort();
    let _ = stop_serving.send(());
    if let Err(error) = state.store.seal_audit(i64::MAX).await {
        tracing::warn!(error = %error, "could not seal the audit log at shutdown");
    }
    served.await.map_err(std::io::Error::other)?
}

/// Background job: chains new audit rows every second and forgets expired idempotency keys.
async fn maintain_forever(state: AppState) {
    let mut ticker = tokio::time::interval(AUDIT_SEAL_INTERVAL);
    for tick in 0u64.. {
        ticker.tick().await;
        // Short batches, each its own transaction, so writers never wait long behind the sealer.
        loop {
            match state.store.seal_audit(AUDIT_SEAL_BATCH).await {
                Ok(sealed) if sealed == AUDIT_SEAL_BATCH as u64 => continue,
                Ok(_) => break,
                Err(error) => {
                    tracing::warn!(error = %error, "could not seal the audit log");
                    break;
                }
            }
        }
        if tick % PURGE_EVERY_TICKS == 0 {
            let before = clock::now_ms() - idempotency::RETENTION_MS;
            if let Err(error) = state.store.purge_idempotency(before).await {
                tracing::warn!(error = %error, "could not purge idempotency keys");
            }
        }
    }
}
