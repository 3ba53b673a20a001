//! `POST /v1/sessions/{id}/finalize` and `POST /v1/sessions/{id}/redact`.

use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use idyntra_types::{Problem, Session, SessionStatus};

use super::sessions::{find, view};
use crate::api_keys::SCOPE_SESSIONS_WRITE;
use crate::app::AppState;
use crate::auth::Principal;
use crate::clock;
use crate::error::ApiError;
use crate::finalize::{self, FinalizeError, Requester, is_decided};
use crate::ids;
use crate::inference::InferenceError;
use crate::store::Transition;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/sessions/{id}/finalize", post(finalize_session))
        .route("/v1/sessions/{id}/redact", post(redact))
}

fn conflict(code: &'static str, detail: String) -> ApiError {
    ApiError::conflict(code, detail)
}

impl From<FinalizeError> for ApiError {
    fn from(error: FinalizeError) -> Self {
        match error {
            FinalizeError::NotFound(id) => ApiError::not_found(format!("no session {id}")),
            FinalizeError::NotReady("created") => conflict(
                "session_not_submitted",
                "the session has no capture yet: the browser uploads it first".to_owned(),
            ),
            FinalizeError::NotReady(status) => conflict(
                "session_not_finalizable",
                format!("a session in status {status} cannot be finalized"),
            ),
            FinalizeError::MediaGone => conflict(
                "media_gone",
                "the session's media was purged or redacted".to_owned(),
            ),
            FinalizeError::Inference(InferenceError::Overloaded) => ApiError::Unavailable {
                detail: "the face models are busy; retry later".to_owned(),
                retry_after: std::time::Duration::from_secs(1),
            },
            FinalizeError::Inference(InferenceError::BreakerOpen { retry_after }) => {
                ApiError::Unavailable {
                    detail: "the face models are failing; retry later".to_owned(),
                    retry_after,
                }
            }
            FinalizeError::Inference(InferenceError::TimedOut(_)) => ApiError::Unavailable {
                detail: "the face models took too long; retry later".to_owned(),
                retry_after: std::time::Duration::from_secs(2),
            },
            // The engine failing is this server's fault but a passing one: the session is back
            // to `submitted`, and repeated failures open the breaker; the client may retry.
            FinalizeError::Inference(InferenceError::Failed(message)) => {
                tracing::error!(error = %message, "a model run failed");
                ApiError::Unavailable {
                    detail: "the face models failed; retry later".to_owned(),
                    retry_after: std::time::Duration::from_secs(1),
                }
            }
            FinalizeError::Internal(error) => ApiError::Internal(error),
        }
    }
}

fn wants_async(headers: &HeaderMap) -> bool {
    headers
        .get_all("prefer")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|p| p.trim().eq_ignore_ascii_case("respond-async"))
}

fn accepted(session: Session) -> Response {
    let mut response = (StatusCode::ACCEPTED, Json(session)).into_response();
    response.headers_mut().insert(
        "preference-applied",
        HeaderValue::from_static("respond-async"),
    );
    response
}

/// Decide a submitted session: face match, liveness and quality from the attestation, policy.
///
/// Synchronous by default (within `decision.sync_deadline`, else `202`); with
/// `Prefer: respond-async` it answers `202` at once and the decision arrives by webhook and `GET`.
/// Finalizing a decided session returns the same result.
#[utoipa::path(
    post,
    path = "/v1/sessions/{id}/finalize",
    tag = "sessions",
    params(
        ("id" = String, Path, description = "Session id (`ses_…`)"),
        ("Prefer" = Option<String>, Header, description = "`respond-async` to answer 202 at once"),
    ),
    responses(
        (status = 200, description = "The decided session, with its result", body = Session),
        (status = 202, description = "Being decided; the result arrives by webhook and GET", body = Session),
        (status = 404, description = "No such session for this account", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Not submitted yet, canceled, expired or media gone", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Models busy or failing; retry after Retry-After", body = Problem, content_type = "application/problem+json"),
    ),
    security(("api_key" = []))
)]
pub async fn finalize_session(
    State(app): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    principal.require(SCOPE_SESSIONS_WRITE)?;
    if !ids::is_well_formed(&id, "ses") {
        return Err(ApiError::not_found(format!("no session {id}")));
    }
    let requester = Requester {
        actor: format!("api_key:{}", principal.api_key_id),
        request_id: crate::request_id::current(),
    };
    let now = clock::now_ms();
    if wants_async(&headers) {
        let session = find(&app, &principal.account_id, &id).await?;
        let status = session.status_at(now);
        if is_decided(status) {
            return Ok(Json(view(&session, now)).into_response());
        }
        if !matches!(status, SessionStatus::Submitted | SessionStatus::Processing) {
            return Err(FinalizeError::NotReady(status.as_str()).into());
        }
        let job = crate::jobs::finalize_job(&principal.account_id, &id, &requester, now);
        // A job already waiting for this session does the work; this call answers the same.
        app.store.enqueue(&job).await?;
        return Ok(accepted(view(&session, now)));
    }
    decide_within_deadline(app, principal.account_id.clone(), id, requester).await
}

/// Decides a session, answering within `decision.sync_deadline`: the decided session, or `202`
/// with the session as it is when the decision takes longer or is already being made elsewhere.
pub(crate) async fn decide_within_deadline(
    app: AppState,
    account_id: String,
    id: String,
    requester: Requester,
) -> Result<Response, ApiError> {
    let task = {
        let app = app.clone();
        let account = account_id.clone();
        let id = id.clone();
        let requester = requester.clone();
        // Its own task: a deadline passed or a client gone does not stop a decision half made.
        tokio::spawn(async move { finalize::finalize(&app, &account, &id, &requester).await })
    };
    match tokio::time::timeout(app.config.decision.sync_deadline, task).await {
        Ok(Ok(Ok(session))) => Ok(Json(view(&session, clock::now_ms())).into_response()),
        // Still being decided (here, or by another request or a job): answer as for an async call.
        // A `202` promises a decision, so a job backs it: should the process deciding die, the
        // job takes the session over once it is stale; otherwise it finds it decided and ends.
        Ok(Ok(Err(FinalizeError::NotReady("processing")))) | Err(_) => {
            let now = clock::now_ms();
            let job = crate::jobs::finalize_job(&account_id, &id, &requester, now);
            app.store.enqueue(&job).await?;
            let session = find(&app, &account_id, &id).await?;
            Ok(accepted(view(&session, clock::now_ms())))
        }
        Ok(Ok(Err(error))) => Err(error.into()),
        Ok(Err(join)) => Err(ApiError::Internal(anyhow::anyhow!("finalize task: {join}"))),
    }
}

/// Redact a session: its media and data key are destroyed for good (crypto-shredding); the
/// decision and the audit trail stay. Redacting again answers the same.
#[utoipa::path(
    post,
    path = "/v1/sessions/{id}/redact",
    tag = "sessions",
    params(("id" = String, Path, description = "Session id (`ses_…`)")),
    responses(
        (status = 200, description = "The redacted session", body = Session),
        (status = 404, description = "No such session for this account", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The session is being decided; retry after", body = Problem, content_type = "application/problem+json"),
    ),
    security(("api_key" = []))
)]
pub async fn redact(
    State(app): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
) -> Result<Json<Session>, ApiError> {
    principal.require(SCOPE_SESSIONS_WRITE)?;
    let now = clock::now_ms();
    let audit = principal.audit("session.redacted", &id, serde_json::json!({}));
    let current = find(&app, &principal.account_id, &id).await?;
    let mut redacted = current.clone();
    redacted.redacted_at = Some(now);
    redacted.updated_at = now;
    let event = crate::events::job("session.redacted", &redacted, now);
    match app
        .store
        .redact(&principal.account_id, &id, now, &audit, &[event])
        .await?
    {
        Transition::Done(session) => {
            // Unreadable already (its data key is gone); dropped so nothing lingers.
            app.face_cache.forget(&id).await;
            Ok(Json(view(&session, now)))
        }
        Transition::Refused(session) if session.redacted_at.is_some() => {
            Ok(Json(view(&session, now)))
        }
        Transition::Refused(_) => Err(conflict(
            "session_processing",
            "the session is being decided; redact it once decided".to_owned(),
        )),
        Transition::NotFound => Err(ApiError::not_found(format!("no session {id}"))),
    }
}
