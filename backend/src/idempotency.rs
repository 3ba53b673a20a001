//! `Idempotency-Key` on every POST, with Stripe's semantics: the same key and the same request
//! answer the stored response again; the same key with another request is refused (`422`); a key
//! whose first request is still running answers `409`. Keys are per account and kept 24 hours.
//! Only answers that reflect a completed operation are stored: a failed validation, a rate limit
//! or a server error leaves the key free for a corrected retry.

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};
use tracing::Instrument;

use crate::app::AppState;
use crate::auth::Principal;
use crate::clock;
use crate::error::ApiError;
use crate::request_id;
use crate::store::{IdempotencyStart, IdempotencyWindow, StoredResponse};

pub const HEADER: &str = "idempotency-key";
pub const MAX_KEY_LEN: usize = 255;
pub const RETENTION_MS: i64 = 24 * 60 * 60 * 1000;
/// An attempt that has not answered after this long (or twice the request timeout, if longer) is
/// taken to have crashed.
const MIN_LOCK_TIMEOUT_MS: i64 = 60 * 1000;

/// 1 to 255 visible ASCII characters (the pattern the OpenAPI document gives).
fn is_well_formed(key: &str) -> bool {
    (1..=MAX_KEY_LEN).contains(&key.len()) && key.bytes().all(|b| b.is_ascii_graphic())
}

/// Whether an answer is the outcome of the operation, and so replayed to a retry.
fn is_replayable(status: StatusCode) -> bool {
    status.is_success() || status == StatusCode::NOT_FOUND || status == StatusCode::CONFLICT
}

/// Middleware of the authenticated routes (it needs the [`Principal`]).
pub async fn middleware(State(app): State<AppState>, request: Request, next: Next) -> Response {
    match handle(app, request, next).await {
        Ok(response) => response,
        Err(error) => error.into_response(),
    }
}

async fn handle(app: AppState, request: Request, next: Next) -> Result<Response, ApiError> {
    if request.method() != Method::POST {
        return Ok(next.run(request).await);
    }
    let Some(key) = request.headers().get(HEADER) else {
        return Ok(next.run(request).await);
    };
    let key = key
        .to_str()
        .ok()
        .filter(|key| is_well_formed(key))
        .ok_or_else(|| {
            ApiError::bad_request(
                "invalid_idempotency_key",
                "Idempotency-Key must be 1 to 255 visible ASCII characters",
            )
        })?
        .to_owned();
    let principal = request
        .extensions()
        .get::<Principal>()
        .cloned()
        .ok_or_else(|| anyhow::anyhow!("idempotency middleware runs after authentication"))?;
    let (parts, body) = request.into_parts();
    let body = axum::body::to_bytes(body, app.config.http.max_body_bytes)
        .await
        .map_err(|_| ApiError::PayloadTooLarge)?;
    // The key that sent it is part of the request: another key of the account (say, a read-only
    // one) reusing the Idempotency-Key gets a mismatch, never the stored answer.
    let mut hasher = Sha256::new();
    for part in [
        principal.api_key_id.as_bytes(),
        parts.method.as_str().as_bytes(),
        parts.uri.path().as_bytes(),
        parts.uri.query().unwrap_or_default().as_bytes(),
    ] {
        hasher.update(part);
        hasher.update([0]);
    }
    hasher.update(&body);
    let request_hash = hasher.finalize();
    let window = IdempotencyWindow {
        now: clock::now_ms(),
        retention: RETENTION_MS,
        // Longer than any request may run, so a slow first attempt is never taken over.
        lock_timeout: MIN_LOCK_TIMEOUT_MS.max(2 * clock::ms(app.config.http.request_timeout)),
    };
    let account_id = principal.account_id.clone();
    // This attempt's lock: complete and abandon only touch the row while it is still ours.
    let lock = window.now;
    match app
        .store
        .idempotency_start(&account_id, &key, &request_hash, window)
        .await?
    {
        IdempotencyStart::Started => {}
        IdempotencyStart::Replay(stored) => return Ok(replay(stored)),
        IdempotencyStart::InProgress => {
            return Err(ApiError::conflict(
                "idempotency_key_in_use",
                "a request with this Idempotency-Key is still being processed; retry later",
            ));
        }
        IdempotencyStart::Mismatch => {
            return Err(ApiError::Unprocessable {
                code: "idempotency_key_reused",
                detail: "this Idempotency-Key was used with a different request".to_owned(),
            });
        }
    }
    // The operation and the recording of its answer run to the end in their own task, even when
    // the client goes away or the request times out, so a retry finds the answer instead of
    // running the operation twice.
    let request = Request::from_parts(parts, Body::from(body));
    let completion = request_id::scoped(
        async move {
            let response = next.run(request).await;
            record(&app, &account_id, &key, lock, response).await
        }
        .instrument(tracing::Span::current()),
    );
    tokio::spawn(completion)
        .await
        .map_err(|error| anyhow::anyhow!("idempotent request task failed: {error}"))?
}

/// Stores a replayable answer (or frees the key) and gives the answer back.
async fn record(
    app: &AppState,
    account_id: &str,
    key: &str,
    lock: i64,
    response: Response,
) -> Result<Response, ApiError> {
    let status = response.status();
    if !is_replayable(status) {
        app.store.idempotency_abandon(account_id, key, lock).await?;
        return Ok(response);
    }
    let (parts, body) = response.into_parts();
    let body = axum::body::to_bytes(body, usize::MAX)
        .await
        .map_err(|error| anyhow::anyhow!("reading a response body: {error}"))?;
    let stored = StoredResponse {
        status: status.as_u16(),
        content_type: parts
            .headers
            .get(header::CONTENT_TYPE)
            .and_then(|value| value.to_str().ok())
            .map(str::to_owned),
        body: body.to_vec(),
    };
    app.store
        .idempotency_complete(account_id, key, lock, &stored)
        .await?;
    Ok(Response::from_parts(parts, Body::from(body)))
}

fn replay(stored: StoredResponse) -> Response {
    let status = StatusCode::from_u16(stored.status).unwrap_or(StatusCode::OK);
    let mut response = (status, stored.body).into_response();
    let headers = response.headers_mut();
    if let Some(value) = stored
        .content_type
        .and_then(|content_type| HeaderValue::from_str(&content_type).ok())
    {
        headers.insert(header::CONTENT_TYPE, value);
    }
    headers.insert("idempotent-replayed", HeaderValue::from_static("true"));
    response
}
