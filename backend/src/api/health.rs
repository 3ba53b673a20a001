//! Operations endpoints: liveness, readiness and metrics.

use axum::extract::State;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use idyntra_types::Problem;
use serde_json::json;

use crate::app::AppState;
use crate::error::problem_response;
use crate::telemetry::PoolLabels;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/.well-known/jwks.json", get(jwks))
}

/// The public keys that verify the tokens this backend signs (client tokens): the current key and
/// the retired ones still inside their overlap. The edge fetches it to check client tokens. With
/// the embedded edge, its attestation keys are published here too.
#[utoipa::path(get, path = "/.well-known/jwks.json", tag = "operations",
    responses((status = 200, description = "JSON Web Key Set (Ed25519 keys)")))]
pub async fn jwks(State(app): State<AppState>) -> Response {
    let current = app.client_tokens.identity();
    let keys: Vec<serde_json::Value> = std::iter::once((current.kid.clone(), current.public_x()))
        .chain(
            app.config
                .signing
                .retired_keys
                .iter()
                .map(|key| (key.kid.clone(), key.x.clone())),
        )
        .chain(app.edge.iter().flat_map(|edge| {
            edge.jwks()
                .keys
                .into_iter()
                .map(|jwk| (jwk.kid, jwk.x))
                .collect::<Vec<_>>()
        }))
        .map(|(kid, x)| {
            json!({"kty": "OKP", "crv": "Ed25519", "alg": "EdDSA", "use": "sig", "kid": kid, "x": x})
        })
        .collect();
    let mut response = Json(json!({ "keys": keys })).into_response();
    // Verifiers may cache it briefly; a rotation publishes the new key before signing with it.
    response.headers_mut().insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=300"),
    );
    response
}

/// The process is up and answering.
#[utoipa::path(get, path = "/healthz", tag = "operations",
    responses((status = 200, description = "Up")))]
pub async fn healthz() -> Json<serde_json::Value> {
    Json(json!({ "status": "ok" }))
}

/// Ready to serve: the database answers, and Redis when it is configured.
#[utoipa::path(get, path = "/readyz", tag = "operations",
    responses(
        (status = 200, description = "Ready"),
        (status = 503, description = "Not ready; `detail` names what failed", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn readyz(State(app): State<AppState>) -> Response {
    let database = tokio::time::timeout(app.config.database.ping_timeout, app.store.ping())
        .await
        .is_ok_and(|result| result.is_ok());
    let redis = match &app.redis {
        None => None,
        Some(redis) => {
            let up = redis.ping().await.is_ok();
            app.metrics.redis_up.set(i64::from(up));
            Some(up)
        }
    };
    let mut failed = Vec::new();
    if !database {
        failed.push("database");
    }
    if redis == Some(false) {
        failed.push("redis");
    }
    // Models are loaded before the server starts; a breaker open after repeated failures means
    // this instance cannot decide sessions now.
    if !app.faces.is_available() {
        failed.push("models");
    }
    if failed.is_empty() {
        let mut checks = json!({
            "database": "ok",
            "models": { "status": "ok", "engine": app.faces.engine() },
        });
        if redis.is_some() {
            checks["redis"] = json!("ok");
        }
        return Json(json!({ "status": "ready", "checks": checks })).into_response();
    }
    tracing::warn!(failed = failed.join(","), "not ready");
    problem_response(
        Problem::new(503, "not_ready", "Not ready")
            .with_detail(format!("unavailable: {}", failed.join(", "))),
    )
}

/// Prometheus metrics.
#[utoipa::path(get, path = "/metrics", tag = "operations",
    responses((status = 200, description = "OpenMetrics text", content_type = "application/openmetrics-text")))]
pub async fn metrics(State(app): State<AppState>) -> Response {
    let pool = app.store.pool_state();
    let gauges = &app.metrics.db_connections;
    gauges
        .get_or_create(&PoolLabels { state: "idle" })
        .set(i64::from(pool.idle));
    gauges
        .get_or_create(&PoolLabels { state: "in_use" })
        .set(i64::from(pool.size.saturating_sub(pool.idle)));
    let metrics = &app.metrics;
    metrics
        .inference_in_flight
        .set(i64::try_from(app.faces.in_flight()).unwrap_or(i64::MAX));
    metrics
        .inference_breaker_open
        .set(i64::from(!app.faces.is_available()));
    // The backlog is read at scrape time; a database that does not answer leaves the last values.
    if let Ok(due) = app.store.due_jobs(crate::clock::now_ms()).await {
        for kind in ["finalize", "event", "webhook"] {
            let count = due.iter().find(|(k, _)| k == kind).map_or(0, |(_, n)| *n);
            metrics
                .jobs_due
                .get_or_create(&crate::telemetry::KindLabels {
                    kind: kind.to_owned(),
                })
                .set(count);
        }
    }
    let mut response = app.metrics.render().into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/openmetrics-text; version=1.0.0; charset=utf-8"),
    );
    response
}
