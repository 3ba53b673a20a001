//! The API's one error type and its problem+json answer.
//!
//! Client mistakes map to 4xx with a stable `code`; internal failures are logged once with their
//! cause and answered with a bare 500 that reveals nothing.

use std::time::Duration;

use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use idyntra_types::{FieldError, Problem};

use crate::request_id;

/// An error answered to an API client.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{detail}")]
    BadRequest { code: &'static str, detail: String },
    #[error("invalid request: {0:?}")]
    Validation(Vec<FieldError>),
    #[error("missing or invalid credentials")]
    Unauthorized { detail: &'static str },
    #[error("the API key lacks the scope {0}")]
    Forbidden(&'static str),
    #[error("not found")]
    NotFound { detail: String },
    #[error("{detail}")]
    Conflict { code: &'static str, detail: String },
    #[error("{detail}")]
    Unprocessable { code: &'static str, detail: String },
    #[error("request body too large")]
    PayloadTooLarge,
    #[error("unsupported media type")]
    UnsupportedMediaType,
    #[error("rate limited")]
    RateLimited { retry_after: Duration },
    #[error("service unavailable: {detail}")]
    Unavailable {
        detail: String,
        retry_after: Duration,
    },
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

impl ApiError {
    pub fn bad_request(code: &'static str, detail: impl Into<String>) -> Self {
        Self::BadRequest {
            code,
            detail: detail.into(),
        }
    }

    pub fn not_found(detail: impl Into<String>) -> Self {
        Self::NotFound {
            detail: detail.into(),
        }
    }

    pub fn conflict(code: &'static str, detail: impl Into<String>) -> Self {
        Self::Conflict {
            code,
            detail: detail.into(),
        }
    }

    pub fn field(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self::Validation(vec![FieldError {
            field: field.into(),
            message: message.into(),
            code: None,
        }])
    }

    /// The problem document of this error (without the request id, which the answer adds).
    pub fn problem(&self) -> Problem {
        match self {
            Self::BadRequest { code, detail } => {
                Problem::new(400, *code, "Bad request").with_detail(detail.clone())
            }
            Self::Validation(errors) => {
                let mut problem = Problem::new(422, "validation_failed", "Invalid request")
                    .with_detail("one or more fields are invalid");
                problem.errors = errors.clone();
                problem
            }
            Self::Unauthorized { detail } => {
                Problem::new(401, "unauthorized", "Unauthorized").with_detail(*detail)
            }
            Self::Forbidden(scope) => Problem::new(403, "insufficient_scope", "Forbidden")
                .with_detail(format!("the API key lacks the scope {scope}")),
            Self::NotFound { detail } => {
                Problem::new(404, "not_found", "Not found").with_detail(detail.clone())
            }
            Self::Conflict { code, detail } => {
                Problem::new(409, *code, "Conflict").with_detail(detail.clone())
            }
            Self::Unprocessable { code, detail } => {
                Problem::new(422, *code, "Unprocessable request").with_detail(detail.clone())
            }
            Self::PayloadTooLarge => Problem::new(413, "payload_too_large", "Payload too large")
                .with_detail("the request body exceeds the configured limit"),
            Self::UnsupportedMediaType => {
                Problem::new(415, "unsupported_media_type", "Unsupported media type")
                    .with_detail("send the body as application/json")
            }
            Self::RateLimited { .. } => Problem::new(429, "rate_limited", "Too many requests")
                .with_detail("slow down and retry after the time in Retry-After"),
            Self::Unavailable { detail, .. } => {
                Problem::new(503, "unavailable", "Service unavailable").with_detail(detail.clone())
            }
            Self::Internal(_) => Problem::new(500, "internal_error", "Internal server error"),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if let Self::Internal(cause) = &self {
            // Logged once here, with the whole chain; the client learns only the request id.
            tracing::error!(error = format!("{cause:#}"), "internal error");
        }
        let retry_after = match &self {
            Self::RateLimited { retry_after } | Self::Unavailable { retry_after, .. } => {
                Some(*retry_after)
            }
            _ => None,
        };
        let challenge = matches!(self, Self::Unauthorized { .. });
        let mut response = problem_response(self.problem());
        if challenge {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        if let Some(retry_after) = retry_after {
            let seconds = retry_after.as_secs_f64().ceil().max(1.0) as u64;
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        response
    }
}

/// Answers a problem document, stamped with the current request id.
pub fn problem_response(mut problem: Problem) -> Response {
    problem.request_id = request_id::current();
    idyntra_edge::native::problem_response(&problem)
}

/// Whether `response` is already a problem document.
pub fn is_problem(response: &Response) -> bool {
    response
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|value| {
            value
                .as_bytes()
                .starts_with(Problem::CONTENT_TYPE.as_bytes())
        })
}

/// Storage failures are internal unless they are the client's doing, which callers map first;
/// a database that cannot be reached is a temporary `503` the client may retry.
impl From<crate::store::StoreError> for ApiError {
    fn from(error: crate::store::StoreError) -> Self {
        use crate::store::StoreError;
        match &error {
            StoreError::Database(database) if database_unavailable(database) => retry_later(&error),
            StoreError::Batch(database) if database_unavailable(database) => retry_later(&error),
            StoreError::NotRun(_) => retry_later(&error),
            StoreError::Sqlite(sqlite) if sqlite_unavailable(sqlite) => retry_later(&error),
            _ => Self::Internal(anyhow::Error::new(error)),
        }
    }
}

/// The `503` of a database that cannot be reached now.
fn retry_later(error: &crate::store::StoreError) -> ApiError {
    tracing::warn!(error = %error, "database unavailable");
    ApiError::Unavailable {
        detail: "the database is unavailable; retry later".to_owned(),
        retry_after: Duration::from_secs(1),
    }
}

/// Whether a read on SQLite's own connections failed for a while only: the file locked past the
/// wait (the WAL being reset or recovered) or not openable now.
fn sqlite_unavailable(error: &rusqlite::Error) -> bool {
    use rusqlite::ErrorCode;
    matches!(
        error.sqlite_error_code(),
        Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked | ErrorCode::CannotOpen)
    )
}

/// Whether a database error means the server cannot be reached right now (no connection, or the
/// server shutting down, starting up or restarting: SQLSTATE classes `08` and `57P`), rather
/// than a fault of the query.
fn database_unavailable(error: &sqlx::Error) -> bool {
    match error {
        sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed | sqlx::Error::Io(_) => true,
        sqlx::Error::Database(database) => database
            .code()
            .is_some_and(|code| code.starts_with("08") || code.starts_with("57P")),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use rusqlite::ffi;

    use super::*;
    use crate::store::StoreError;

    fn sqlite_failure(code: std::ffi::c_int) -> ApiError {
        let error = rusqlite::Error::SqliteFailure(ffi::Error::new(code), None);
        StoreError::Sqlite(Arc::new(error)).into()
    }

    /// A SQLite file locked or unopenable for now is a `503` the client may retry; any other
    /// failure of a read stays internal.
    #[test]
    fn a_busy_sqlite_read_is_retried_later_and_a_broken_one_is_internal() {
        for code in [ffi::SQLITE_BUSY, ffi::SQLITE_LOCKED, ffi::SQLITE_CANTOPEN] {
            let answer = sqlite_failure(code);
            assert!(
                matches!(answer, ApiError::Unavailable { .. }),
                "{code}: {answer:?}"
            );
        }
        let answer = sqlite_failure(ffi::SQLITE_CORRUPT);
        assert!(matches!(answer, ApiError::Internal(_)), "{answer:?}");
    }
}
