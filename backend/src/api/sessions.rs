//! `/v1/sessions`: create, get, list and cancel verification sessions.

use axum::extract::{Path, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use idyntra_types::{CreateSessionRequest, Page, Session, SessionStatus};
use serde::Deserialize;
use serde_json::Value;
use sqlx::types::Json as DbJson;

use super::extract::{ApiJson, ApiQuery};
use crate::api_keys::{SCOPE_SESSIONS_READ, SCOPE_SESSIONS_WRITE};
use crate::app::AppState;
use crate::auth::Principal;
use crate::clock;
use crate::error::ApiError;
use crate::ids;
use crate::store::{AuditEvent, SessionQuery, SessionRecord, Transition};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/sessions", post(create).get(list))
        .route("/v1/sessions/{id}", get(retrieve))
        .route("/v1/sessions/{id}/cancel", post(cancel))
}

const MAX_REFERENCE_LEN: usize = 255;
const MAX_METADATA_KEYS: usize = 20;
const MAX_METADATA_KEY_LEN: usize = 40;
const MAX_METADATA_VALUE_LEN: usize = 500;

/// Field problems of a create request (Stripe's metadata rules: string values, bounded sizes).
fn validate(request: &CreateSessionRequest) -> Result<(), ApiError> {
    let mut errors = Vec::new();
    let mut problem = |field: String, message: &str| {
        errors.push(idyntra_types::FieldError {
            field,
            message: message.to_owned(),
            code: None,
        });
    };
    if let Some(reference) = &request.reference {
        if reference.is_empty() || reference.chars().count() > MAX_REFERENCE_LEN {
            problem("/reference".to_owned(), "must be 1 to 255 characters");
        } else if reference.chars().any(char::is_control) {
            problem(
                "/reference".to_owned(),
                "must not contain control characters",
            );
        }
    }
    if let Some(metadata) = &request.metadata {
        if metadata.len() > MAX_METADATA_KEYS {
            problem("/metadata".to_owned(), "at most 20 keys");
        }
        for (key, value) in metadata {
            if key.is_empty() || key.chars().count() > MAX_METADATA_KEY_LEN {
                problem(
                    format!("/metadata/{key}"),
                    "keys must be 1 to 40 characters",
                );
            } else if key.chars().any(char::is_control) {
                problem(
                    format!("/metadata/{key}"),
                    "keys must not contain control characters",
                );
            }
            match value {
                // NUL cannot be stored by every database; other text is kept as given.
                Value::String(text) if text.contains('\0') => {
                    problem(format!("/metadata/{key}"), "values must not contain NUL");
                }
                Value::String(text) if text.chars().count() <= MAX_METADATA_VALUE_LEN => {}
                Value::String(_) => {
                    problem(
                        format!("/metadata/{key}"),
                        "values must be at most 500 characters",
                    );
                }
                _ => problem(format!("/metadata/{key}"), "values must be strings"),
            }
        }
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(ApiError::Validation(errors))
    }
}

/// The API view of a stored session at `now` (ms).
pub fn view(record: &SessionRecord, now: i64) -> Session {
    Session {
        id: record.session_id.clone(),
        object: Session::OBJECT.to_owned(),
        status: record.status_at(now),
        reference: record.reference.clone(),
        metadata: record.metadata.0.as_object().cloned().unwrap_or_default(),
        options: serde_json::from_value(record.options.0.clone()).unwrap_or_default(),
        created: clock::to_secs(record.created_at),
        expires_at: clock::to_secs(record.expires_at),
        updated: clock::to_secs(record.updated_at),
        client_token: None,
        result: record.result.as_ref().map(|result| result.0.clone()),
        redacted_at: record.redacted_at.map(clock::to_secs),
    }
}

/// Create a verification session.
///
/// Returns the session with the `client_token` the browser needs to submit its capture; the token
/// is shown only in this answer.
#[utoipa::path(
    post,
    path = "/v1/sessions",
    tag = "sessions",
    request_body(content = Option<CreateSessionRequest>, description = "May be empty"),
    responses(
        (status = 201, description = "Session created", body = Session),
        (status = 400, description = "Malformed request", body = idyntra_types::Problem, content_type = "application/problem+json"),
        (status = 401, description = "Missing or invalid API key", body = idyntra_types::Problem, content_type = "application/problem+json"),
        (status = 403, description = "The key lacks sessions:write", body = idyntra_types::Problem, content_type = "application/problem+json"),
        (status = 409, description = "Idempotency key in use", body = idyntra_types::Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid fields, or idempotency key reused", body = idyntra_types::Problem, content_type = "application/problem+json"),
        (status = 429, description = "Rate limited", body = idyntra_types::Problem, content_type = "application/problem+json"),
    ),
    security(("api_key" = []))
)]
pub async fn create(
    State(app): State<AppState>,
    principal: Principal,
    ApiJson(request): ApiJson<CreateSessionRequest>,
) -> Result<Response, ApiError> {
    principal.require(SCOPE_SESSIONS_WRITE)?;
    let actor = format!("api_key:{}", principal.api_key_id);
    let session = open(&app, &principal.account_id, &actor, request).await?;
    let session_id = session.id.clone();
    let mut response = (StatusCode::CREATED, Json(session)).into_response();
    if let Ok(location) = HeaderValue::from_str(&format!("/v1/sessions/{session_id}")) {
        response.headers_mut().insert(header::LOCATION, location);
    }
    Ok(response)
}

/// Opens a session of `account_id` for `actor` (the audit trail's who): the record, its audit
/// entry, and the session as answered, with its client token.
pub(crate) async fn open(
    app: &AppState,
    account_id: &str,
    actor: &str,
    request: CreateSessionRequest,
) -> Result<Session, ApiError> {
    validate(&request)?;
    let now = clock::now_ms();
    let session_id = ids::new_id("ses");
    let options = request.options.unwrap_or_default();
    let record = SessionRecord {
        session_id: session_id.clone(),
        account_id: account_id.to_owned(),
        status: SessionStatus::Created.as_str().to_owned(),
        reference: request.reference,
        metadata: DbJson(Value::Object(request.metadata.unwrap_or_default())),
        options: DbJson(serde_json::to_value(&options).map_err(anyhow::Error::from)?),
        nonce: crate::client_token::ClientTokenIssuer::new_nonce(),
        created_at: now,
        updated_at: now,
        expires_at: now.saturating_add(clock::ms(app.config.sessions.ttl)),
        result: None,
        redacted_at: None,
    };
    let client_token = app
        .client_tokens
        .issue(
            &session_id,
            account_id,
            &record.nonce,
            &options,
            clock::to_secs(now),
            clock::to_secs(record.expires_at),
        )
        .map_err(anyhow::Error::from)?;
    let audit = AuditEvent {
        at: now,
        actor: actor.to_owned(),
        action: "session.created".to_owned(),
        target: session_id.clone(),
        request_id: crate::request_id::current(),
        details: serde_json::json!({ "liveness": options.liveness, "require_document": options.require_document }),
    };
    app.store.insert_session(&record, &audit).await?;
    let mut session = view(&record, now);
    session.client_token = Some(client_token);
    Ok(session)
}

/// Answers 404 for ids that cannot exist as for ids of other accounts: nothing tells them apart.
pub(super) async fn find(
    app: &AppState,
    account_id: &str,
    id: &str,
) -> Result<SessionRecord, ApiError> {
    let not_found = || ApiError::not_found(format!("no session {id}"));
    if !ids::is_well_formed(id, "ses") {
        return Err(not_found());
    }
    app.store
        .get_session(account_id, id)
        .await?
        .ok_or_else(not_found)
}

/// Retrieve a session, with its `result` once decided.
#[utoipa::path(
    get,
    path = "/v1/sessions/{id}",
    tag = "sessions",
    params(("id" = String, Path, description = "Session id (`ses_…`)")),
    responses(
        (status = 200, description = "The session", body = Session),
        (status = 404, description = "No such session for this account", body = idyntra_types::Problem, content_type = "application/problem+json"),
    ),
    security(("api_key" = []))
)]
pub async fn retrieve(
    State(app): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
) -> Result<Json<Session>, ApiError> {
    principal.require(SCOPE_SESSIONS_READ)?;
    let record = find(&app, &principal.account_id, &id).await?;
    Ok(Json(view(&record, clock::now_ms())))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ListParams {
    /// 1 to 100 (default 10).
    #[param(value_type = u32, required = false, minimum = 1, maximum = 100)]
    limit: Option<u32>,
    /// A session id: list the sessions created before it.
    #[param(value_type = String, required = false, pattern = "^ses_[0-9a-f]{32}$")]
    starting_after: Option<String>,
    /// Only sessions with this status.
    #[param(value_type = SessionStatus, required = false)]
    status: Option<String>,
}

/// List sessions, newest first, with cursor pagination.
#[utoipa::path(
    get,
    path = "/v1/sessions",
    tag = "sessions",
    params(ListParams),
    responses(
        (status = 200, description = "A page of sessions", body = Page<Session>),
        (status = 400, description = "Invalid parameters", body = idyntra_types::Problem, content_type = "application/problem+json"),
    ),
    security(("api_key" = []))
)]
pub async fn list(
    State(app): State<AppState>,
    principal: Principal,
    ApiQuery(params): ApiQuery<ListParams>,
) -> Result<Json<Page<Session>>, ApiError> {
    principal.require(SCOPE_SESSIONS_READ)?;
    let limit = params.limit.unwrap_or(10);
    if !(1..=100).contains(&limit) {
        return Err(ApiError::bad_request(
            "invalid_query",
            "limit must be between 1 and 100",
        ));
    }
    if let Some(after) = &params.starting_after
        && !ids::is_well_formed(after, "ses")
    {
        return Err(ApiError::bad_request(
            "invalid_query",
            "starting_after must be a session id",
        ));
    }
    let status = match params.status.as_deref() {
        None => None,
        Some(text) => Some(SessionStatus::parse(text).ok_or_else(|| {
            ApiError::bad_request("invalid_query", format!("unknown status {text:?}"))
        })?),
    };
    let now = clock::now_ms();
    let mut records = app
        .store
        .list_sessions(&SessionQuery {
            account_id: principal.account_id.clone(),
            status,
            starting_after: params.starting_after,
            limit,
            now,
        })
        .await?;
    let has_more = records.len() > limit as usize;
    records.truncate(limit as usize);
    let data = records.iter().map(|record| view(record, now)).collect();
    Ok(Json(Page::new(data, has_more)))
}

/// Cancel a session that has not been decided yet.
#[utoipa::path(
    post,
    path = "/v1/sessions/{id}/cancel",
    tag = "sessions",
    params(("id" = String, Path, description = "Session id (`ses_…`)")),
    responses(
        (status = 200, description = "The canceled session", body = Session),
        (status = 404, description = "No such session for this account", body = idyntra_types::Problem, content_type = "application/problem+json"),
        (status = 409, description = "The session can no longer be canceled", body = idyntra_types::Problem, content_type = "application/problem+json"),
    ),
    security(("api_key" = []))
)]
pub async fn cancel(
    State(app): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
) -> Result<Json<Session>, ApiError> {
    principal.require(SCOPE_SESSIONS_WRITE)?;
    if !ids::is_well_formed(&id, "ses") {
        return Err(ApiError::not_found(format!("no session {id}")));
    }
    let now = clock::now_ms();
    let audit = principal.audit("session.canceled", &id, serde_json::json!({}));
    let mut canceled = find(&app, &principal.account_id, &id).await?;
    canceled.status = SessionStatus::Canceled.as_str().to_owned();
    canceled.updated_at = now;
    let event = crate::events::job("session.canceled", &canceled, now);
    match app
        .store
        .cancel_session(&principal.account_id, &id, now, &audit, &[event])
        .await?
    {
        Transition::Done(record) => Ok(Json(view(&record, now))),
        Transition::Refused(record) => Err(ApiError::conflict(
            "session_not_cancelable",
            format!(
                "a session in status {} cannot be canceled",
                record.status_at(now).as_str()
            ),
        )),
        Transition::NotFound => Err(ApiError::not_found(format!("no session {id}"))),
    }
}
