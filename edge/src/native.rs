//! The native host: the edge over HTTP with axum. The backend embeds [`attest_route`] in its own
//! router (single-binary setup); `idyntra edge serve` runs [`standalone`] alone.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use idyntra_types::Problem;
use tokio::sync::Semaphore;
use tower_http::cors::{AllowOrigin, CorsLayer};
use tower_http::timeout::TimeoutLayer;

use crate::attest::{AttestError, AttestRequest, Edge};
use crate::capture::CaptureError;

/// Names the client of a request for the failure lockout (its IP address, as the host trusts
/// proxies).
pub type ClientIdentity = Arc<dyn Fn(&axum::http::request::Parts) -> String + Send + Sync>;

/// The edge with what serving it needs.
#[derive(Clone)]
pub struct EdgeService {
    edge: Arc<Edge>,
    identify: ClientIdentity,
    /// Checks running at once; more are shed with `503` rather than queued.
    permits: Arc<Semaphore>,
}

impl std::fmt::Debug for EdgeService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EdgeService")
            .field("edge", &self.edge)
            .finish_non_exhaustive()
    }
}

impl EdgeService {
    /// `concurrency` checks run at once (each takes one CPU core for tens of milliseconds).
    pub fn new(edge: Arc<Edge>, identify: ClientIdentity, concurrency: usize) -> Self {
        Self {
            edge,
            identify,
            permits: Arc::new(Semaphore::new(concurrency.max(1))),
        }
    }

    pub fn edge(&self) -> &Arc<Edge> {
        &self.edge
    }
}

fn now_secs() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

/// A problem+json answer.
pub fn problem_response(problem: &Problem) -> Response {
    let status = StatusCode::from_u16(problem.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut response = (status, Json(problem)).into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(Problem::CONTENT_TYPE),
    );
    response
}

fn error_response(error: &AttestError) -> Response {
    if let AttestError::Internal(message) = error {
        tracing::error!(error = %message, "attestation failed");
    }
    let mut response = problem_response(&error.problem());
    if let Some(value) = error
        .retry_after_secs()
        .and_then(|seconds| HeaderValue::from_str(&seconds.to_string()).ok())
    {
        response.headers_mut().insert(header::RETRY_AFTER, value);
    }
    response
}

fn header_text<'a>(headers: &'a HeaderMap, name: &HeaderName) -> Option<&'a str> {
    headers.get(name).and_then(|value| value.to_str().ok())
}

/// `POST /v1/attest`.
async fn attest(State(service): State<EdgeService>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let limit = service.edge.settings().capture.max_body_bytes;
    let too_large = || {
        error_response(&AttestError::Capture(CaptureError::BodyTooLarge {
            max: limit,
        }))
    };
    // Refuse an announced oversized body before reading any of it.
    let announced = header_text(&parts.headers, &header::CONTENT_LENGTH)
        .and_then(|length| length.parse::<usize>().ok());
    if announced.is_some_and(|length| length > limit) {
        return too_large();
    }
    let client = (service.identify)(&parts);
    let authorization = header_text(&parts.headers, &header::AUTHORIZATION).map(str::to_owned);
    // No body is read for a locked-out client or a bad token.
    if let Err(error) = service
        .edge
        .precheck(authorization.as_deref(), &client, now_secs())
    {
        return error_response(&error);
    }
    let body = match axum::body::to_bytes(Body::new(body), limit).await {
        Ok(body) => body,
        Err(error) if is_length_limit(&error) => return too_large(),
        Err(_) => {
            return problem_response(
                &Problem::new(400, "body_unreadable", "The body could not be read")
                    .with_detail("The upload was interrupted; send it again."),
            );
        }
    };
    // A slot is taken only for the checks, once the whole body is here: slow uploads hold none.
    let Ok(permit) = service.permits.clone().try_acquire_owned() else {
        let mut response = problem_response(
            &Problem::new(503, "overloaded", "Too many captures are being checked")
                .with_detail("Try again in a second."),
        );
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        return response;
    };
    let content_type = header_text(&parts.headers, &header::CONTENT_TYPE).map(str::to_owned);
    let edge = service.edge.clone();
    // Decoding and the models take tens of milliseconds of CPU: off the async threads.
    let outcome = tokio::task::spawn_blocking(move || {
        let _permit = permit;
        edge.attest(AttestRequest {
            authorization: authorization.as_deref(),
            content_type: content_type.as_deref(),
            body,
            client: &client,
            now: now_secs(),
        })
    })
    .await
    .unwrap_or_else(|error| Err(AttestError::Internal(error.to_string())));
    let mut response = match outcome {
        Ok(answer) => Json(answer).into_response(),
        Err(error) => error_response(&error),
    };
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// Whether reading a body failed on its length limit (rather than on the connection).
fn is_length_limit(error: &axum::Error) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(error) = source {
        if error.is::<http_body_util::LengthLimitError>() {
            return true;
        }
        source = error.source();
    }
    false
}

/// `POST /v1/attest` alone, for a host that adds its own layers (the backend).
pub fn attest_route(service: EdgeService) -> Router {
    Router::new()
        .route("/v1/attest", post(attest))
        .with_state(service)
}

/// `GET /.well-known/jwks.json`.
async fn jwks(State(service): State<EdgeService>) -> Response {
    let mut response = Json(service.edge.jwks()).into_response();
    response.headers_mut().insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=300"),
    );
    response
}

async fn not_found() -> Response {
    problem_response(&Problem::new(404, "not_found", "Not found").with_detail("no such route"))
}

/// CORS from an allow-list of origins (`*` allows any: for development only).
pub fn cors(allowed_origins: &[String]) -> CorsLayer {
    let origins = if allowed_origins.iter().any(|origin| origin == "*") {
        AllowOrigin::any()
    } else {
        AllowOrigin::list(
            allowed_origins
                .iter()
                .filter_map(|origin| HeaderValue::from_str(origin.trim_end_matches('/')).ok()),
        )
    };
    CorsLayer::new()
        .allow_origin(origins)
        .allow_methods([Method::GET, Method::POST])
        .allow_headers([header::AUTHORIZATION, header::CONTENT_TYPE])
        .expose_headers([header::RETRY_AFTER])
        .max_age(Duration::from_secs(600))
}

/// The edge on its own: `POST /v1/attest`, `GET /.well-known/jwks.json`, `GET /healthz`, with
/// CORS from `allowed_origins` and a whole-request `timeout`.
pub fn standalone(service: EdgeService, allowed_origins: &[String], timeout: Duration) -> Router {
    let others = Router::new()
        .route("/.well-known/jwks.json", get(jwks))
        .route(
            "/healthz",
            get(|| async { Json(serde_json::json!({"status": "ok"})) }),
        )
        .with_state(service.clone());
    attest_route(service)
        .merge(others)
        .fallback(not_found)
        .layer(TimeoutLayer::with_status_code(
            StatusCode::SERVICE_UNAVAILABLE,
            timeout,
        ))
        .layer(cors(allowed_origins))
}

#[cfg(test)]
mod tests {
    use axum::body::Body;
    use axum::http::Request;
    use tower::ServiceExt;

    use super::*;
    use crate::attest::EdgeSettings;
    use crate::capture::CaptureLimits;
    use crate::checks::Checker;
    use crate::keys::{EdKey, KeySet};

    /// A client token of the test backend key, valid now.
    fn token() -> String {
        let now = now_secs();
        let claims = idyntra_types::ClientTokenClaims {
            iat: now,
            nbf: now,
            exp: now + 600,
            ..crate::token::tests::claims()
        };
        format!(
            "Bearer {}",
            crate::token::tests::sign(&crate::token::tests::backend_key(), &claims)
        )
    }

    fn router(max_body_bytes: usize, concurrency: usize) -> Router {
        let edge = Edge::new(
            EdgeSettings {
                capture: CaptureLimits {
                    max_body_bytes,
                    ..CaptureLimits::default()
                },
                ..EdgeSettings::default()
            },
            KeySet::new([crate::token::tests::backend_key().public()]).unwrap(),
            EdKey::generate("edge-1").unwrap(),
            Vec::new(),
            Checker::bundled().unwrap(),
        )
        .unwrap();
        let identify: ClientIdentity = Arc::new(|_| "client".to_owned());
        let service = EdgeService::new(Arc::new(edge), identify, concurrency);
        standalone(
            service,
            &["https://app.example.com".to_owned()],
            Duration::from_secs(5),
        )
    }

    async fn status_and_code(response: Response) -> (u16, String) {
        let status = response.status().as_u16();
        let body = axum::body::to_bytes(response.into_body(), 1 << 20)
            .await
            .unwrap();
        let problem: Problem = serde_json::from_slice(&body).unwrap();
        (status, problem.code)
    }

    #[tokio::test]
    async fn a_body_over_the_limit_without_a_length_is_refused_while_read() {
        let chunks = futures_util::stream::iter(
            (0..10).map(|_| Ok::<_, std::io::Error>(bytes::Bytes::from(vec![0u8; 1000]))),
        );
        let request = Request::post("/v1/attest")
            .header(header::CONTENT_TYPE, "multipart/form-data; boundary=x")
            .header(header::AUTHORIZATION, token())
            .body(Body::from_stream(chunks))
            .unwrap();
        let response = router(5000, 2).oneshot(request).await.unwrap();
        assert_eq!(
            status_and_code(response).await,
            (413, "payload_too_large".to_owned())
        );
    }

    #[tokio::test]
    async fn without_a_valid_token_no_body_is_read() {
        let never = futures_util::stream::pending::<Result<bytes::Bytes, std::io::Error>>();
        let request = Request::post("/v1/attest")
            .header(header::CONTENT_TYPE, "multipart/form-data; boundary=x")
            .body(Body::from_stream(never))
            .unwrap();
        // The body never ends: answering at all shows it was not read.
        let response = router(5000, 2).oneshot(request).await.unwrap();
        assert_eq!(
            status_and_code(response).await,
            (401, "client_token_missing".to_owned())
        );
    }

    #[tokio::test]
    async fn unknown_routes_answer_a_problem_and_jwks_publishes_the_key() {
        let router = router(5000, 2);
        let response = router
            .clone()
            .oneshot(Request::get("/nope").body(Body::empty()).unwrap())
            .await
            .unwrap();
        assert_eq!(
            status_and_code(response).await,
            (404, "not_found".to_owned())
        );
        let response = router
            .oneshot(
                Request::get("/.well-known/jwks.json")
                    .body(Body::empty())
                    .unwrap(),
            )
            .await
            .unwrap();
        let body = axum::body::to_bytes(response.into_body(), 1 << 20)
            .await
            .unwrap();
        let jwks: idyntra_types::JwkSet = serde_json::from_slice(&body).unwrap();
        assert_eq!(jwks.keys[0].kid, "edge-1");
    }
}
