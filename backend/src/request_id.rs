//! Request ids: taken from `x-request-id` when well-formed, generated otherwise, echoed on every
//! answer and put in every problem body and log line of the request.

use axum::body::Body;
use axum::extract::Request;
use axum::http::{HeaderName, HeaderValue, header};
use axum::middleware::Next;
use axum::response::Response;
use idyntra_types::Problem;

pub static HEADER: HeaderName = HeaderName::from_static("x-request-id");

tokio::task_local! {
    static CURRENT: String;
}

/// The id of the request being handled on this task, if any.
pub fn current() -> Option<String> {
    CURRENT.try_with(Clone::clone).ok()
}

/// A caller's id is kept only when it is short and plain, so it is safe in logs and headers.
fn is_well_formed(id: &str) -> bool {
    (1..=128).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'))
}

/// Runs `future` under the current request's id, for work moved to another task.
pub fn scoped<F: std::future::Future>(future: F) -> impl std::future::Future<Output = F::Output> {
    CURRENT.scope(current().unwrap_or_default(), future)
}

pub fn generate() -> String {
    format!("req_{}", uuid::Uuid::now_v7().simple())
}

/// Fixes the request's id: the caller's when well-formed, a new one otherwise. It is set on the
/// request's header, so that handlers see the id that is logged, and returned with that header's
/// value for the answer. [`within`] then runs the request under it.
pub fn assign(request: &mut Request) -> (String, HeaderValue) {
    let id = request
        .headers()
        .get(&HEADER)
        .and_then(|value| value.to_str().ok())
        .filter(|id| is_well_formed(id))
        .map_or_else(generate, str::to_owned);
    let header = HeaderValue::from_str(&id).expect("request ids are plain ASCII");
    request.headers_mut().insert(HEADER.clone(), header.clone());
    (id, header)
}

/// Runs `future` as the request with this id: [`current`] returns it there.
pub fn within<F: std::future::Future>(
    id: String,
    future: F,
) -> impl std::future::Future<Output = F::Output> {
    CURRENT.scope(id, future)
}

/// Problem bodies are a few hundred bytes; anything larger is passed on as it is.
const MAX_PROBLEM_BYTES: usize = 64 * 1024;

/// Middleware for routes whose handlers write their own problem bodies (the embedded edge's
/// `/v1/attest`): puts the request id in them, as in every other problem of the API.
pub async fn stamp_problems(request: Request, next: Next) -> Response {
    let response = next.run(request).await;
    let Some(id) = current().filter(|_| crate::error::is_problem(&response)) else {
        return response;
    };
    let (mut parts, body) = response.into_parts();
    let bytes = match axum::body::to_bytes(body, MAX_PROBLEM_BYTES).await {
        Ok(bytes) => bytes,
        Err(_) => return Response::from_parts(parts, Body::empty()),
    };
    let stamped = serde_json::from_slice::<Problem>(&bytes)
        .ok()
        .filter(|problem| problem.request_id.is_none())
        .and_then(|mut problem| {
            problem.request_id = Some(id);
            serde_json::to_vec(&problem).ok()
        });
    match stamped {
        Some(stamped) => {
            parts.headers.remove(header::CONTENT_LENGTH);
            Response::from_parts(parts, Body::from(stamped))
        }
        None => Response::from_parts(parts, Body::from(bytes)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_plain_ids_and_refuses_others() {
        assert!(is_well_formed("abc-123_X.y:z"));
        assert!(!is_well_formed(""));
        assert!(!is_well_formed("has space"));
        assert!(!is_well_formed("newline\nInjected: yes"));
        assert!(!is_well_formed(&"a".repeat(129)));
        assert!(is_well_formed(&generate()));
    }
}
