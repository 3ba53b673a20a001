//! `POST /v1/sessions/{id}/media`: the browser uploads its attested capture with the client token
//! (see [`crate::submission`]).

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use http_body_util::{BodyExt, Limited};
use idyntra_types::{Problem, SessionStatus};
use serde::Serialize;

use crate::app::AppState;
use crate::error::{ApiError, problem_response};
use crate::submission::{self, UploadError};

pub fn router() -> Router<AppState> {
    Router::new().route("/v1/sessions/{id}/media", post(upload))
}

/// What the browser learns: its capture was accepted, nothing about the session beyond that.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct MediaAccepted {
    pub id: String,
    pub object: &'static str,
    pub status: SessionStatus,
}

/// Upload the attested capture of a session (browser, client token).
///
/// Multipart parts: `attestation` (the edge's JWT), `selfie` (the selfie, then the challenge
/// frames, as sent to the edge) and `document`. Every image must be the one the attestation
/// names; the session then becomes `submitted`.
#[utoipa::path(
    post,
    path = "/v1/sessions/{id}/media",
    tag = "capture",
    params(("id" = String, Path, description = "Session id (`ses_…`)")),
    request_body(content_type = "multipart/form-data", description = "attestation, selfie (1..N), document"),
    responses(
        (status = 200, description = "Capture stored; the session is submitted", body = MediaAccepted),
        (status = 400, description = "Malformed multipart body", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "Missing, invalid or expired client token", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "The client token is for another session", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Attestation replayed, or the session takes no capture", body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "Body, part or frame count too large", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Attestation refused (invalid, expired, wrong session or nonce, media mismatch)", body = Problem, content_type = "application/problem+json"),
    ),
    security(("client_token" = []))
)]
pub async fn upload(
    State(app): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let header = |name| headers.get(name).and_then(|v| v.to_str().ok());
    let max = app.config.media.max_body_bytes;
    let bytes = match Limited::new(body, max).collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(error) if error.is::<http_body_util::LengthLimitError>() => {
            return problem_response(
                Problem::new(413, "payload_too_large", "Payload too large")
                    .with_detail(format!("the upload is larger than {max} bytes")),
            );
        }
        Err(_) => {
            return problem_response(
                Problem::new(400, "malformed_multipart", "Invalid upload")
                    .with_detail("the body could not be read"),
            );
        }
    };
    let outcome = submission::upload(
        &app,
        &id,
        header(header::AUTHORIZATION),
        header(header::CONTENT_TYPE),
        bytes,
        crate::request_id::current(),
    )
    .await;
    match outcome {
        Ok(_) => Json(MediaAccepted {
            id,
            object: "session",
            status: SessionStatus::Submitted,
        })
        .into_response(),
        Err(UploadError::Refused(problem)) => {
            let unauthorized = problem.status == 401;
            let mut response = problem_response(*problem);
            if unauthorized {
                response.headers_mut().insert(
                    header::WWW_AUTHENTICATE,
                    axum::http::HeaderValue::from_static("Bearer"),
                );
            }
            response
        }
        Err(UploadError::Internal(error)) => ApiError::Internal(error).into_response(),
    }
}
