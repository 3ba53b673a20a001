//! The native host: the edge over HTTP with axum. The backend embeds [`attest_route`] in its own
//! router (single-binary setup); `idyntra edge serve` runs [`standalone`] alone.

use std::future::Future;
use std::pin::Pin;
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

use crate::abuse::Refusal;
use crate::attest::{AttestError, AttestRequest, Edge};
use crate::capture::CaptureError;

/// Names the client of a request for the failure lockout (its IP address, as the host trusts
/// proxies).
pub type ClientIdentity = Arc<dyn Fn(&axum::http::request::Parts) -> String + Send + Sync>;

/// What a [`SharedLedger`] call gives back.
pub type LedgerFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Attempts and failures counted across every instance of the edge (the backend keeps them in
/// Redis), so that an attacker spread over replicas gets no more tries than against one. Each
/// edge still counts in its own memory too: that count decides alone when the ledger is away,
/// which is why a ledger that cannot answer admits.
pub trait SharedLedger: Send + Sync {
    /// Whether `client` may try now, and whether `session` (whose token expires at
    /// `expires_at`, Unix seconds) has attempts left; counts the attempt when it does.
    fn admit<'a>(
        &'a self,
        client: &'a str,
        session: &'a str,
        expires_at: i64,
    ) -> LedgerFuture<'a, Result<(), Refusal>>;

    /// Records a failed attempt of `client`.
    fn record_failure<'a>(&'a self, client: &'a str) -> LedgerFuture<'a, ()>;
}

/// The edge with what serving it needs.
#[derive(Clone)]
pub struct EdgeService {
    edge: Arc<Edge>,
    identify: ClientIdentity,
    /// Checks running at once; more are shed with `503` rather than queued.
    permits: Arc<Semaphore>,
    ledger: Option<Arc<dyn SharedLedger>>,
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
            ledger: None,
        }
    }

    /// Counts attempts and failures in `ledger` as well as in this process.
    #[must_use]
    pub fn with_ledger(mut self, ledger: Arc<dyn SharedLedger>) -> Self {
        self.ledger = Some(ledger);
        self
    }

    /// Records a failure in the shared ledger, when the outcome counts as one.
    async fn count_failure(&self, error: &AttestError, client: &str) {
        if let Some(ledger) = &self.ledger
            && error.counts_as_failure()
        {
            ledger.record_failure(client).await;
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
    let claims = match service
        .edge
        .precheck(authorization.as_deref(), &client, now_secs())
    {
        Ok(claims) => claims,
        Err(error) => {
            service.count_failure(&error, &client).await;
            return error_response(&error);
        }
    };
    if let Some(ledger) = &service.ledger
        && let Err(refusal) = ledger.admit(&client, &claims.sid, claims.exp).await
    {
        return error_response(&AttestError::Refused(refusal));
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
    let checking = client.clone();
    let outcome = tokio::task::spawn_blocking(move || {
        let _permit = permit;
        edge.attest(AttestRequest {
            authorization: authorization.as_deref(),
            content_type: content_type.as_deref(),
            body,
            client: &checking,
            now: now_secs(),
        })
    })
    .await
    .unwrap_or_else(|error| Err(AttestError::Internal(error.to_string())));
    let mut response = match outcome {
        Ok(answer) => Json(answer).into_response(),
        Err(error) => {
            service.count_failure(&error, &client).await;
            error_response(&error)
        }
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

    fn service(max_body_bytes: usize, concurrency: usize) -> EdgeService {
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
        EdgeService::new(Arc::new(edge), identify, concurrency)
    }

    fn serve(service: EdgeService) -> Router {
        standalone(
            service,
            &["https://app.example.com".to_owned()],
            Duration::from_secs(5),
        )
    }

    fn router(max_body_bytes: usize, concurrency: usize) -> Router {
        serve(service(max_body_bytes, concurrency))
    }

    /// A ledger that answers `refusal` and remembers the failures it is told of.
    #[derive(Default)]
    struct Ledger {
        refusal: Option<Refusal>,
        admitted: std::sync::Mutex<Vec<(String, String)>>,
        failures: std::sync::Mutex<Vec<String>>,
    }

    impl SharedLedger for Ledger {
        fn admit<'a>(
            &'a self,
            client: &'a str,
            session: &'a str,
            _expires_at: i64,
        ) -> LedgerFuture<'a, Result<(), Refusal>> {
            self.admitted
                .lock()
                .unwrap()
                .push((client.to_owned(), session.to_owned()));
            Box::pin(std::future::ready(self.refusal.map_or(Ok(()), Err)))
        }

        fn record_failure<'a>(&'a self, client: &'a str) -> LedgerFuture<'a, ()> {
            self.failures.lock().unwrap().push(client.to_owned());
            Box::pin(std::future::ready(()))
        }
    }

    fn never_ending_capture(authorization: Option<String>) -> Request<Body> {
        let never = futures_util::stream::pending::<Result<bytes::Bytes, std::io::Error>>();
        let mut request = Request::post("/v1/attest")
            .header(header::CONTENT_TYPE, "multipart/form-data; boundary=x");
        if let Some(authorization) = authorization {
            request = request.header(header::AUTHORIZATION, authorization);
        }
        request.body(Body::from_stream(never)).unwrap()
    }

    #[tokio::test]
    async fn the_shared_ledger_hears_of_failures_and_can_refuse_before_the_body_is_read() {
        let ledger = Arc::new(Ledger::default());
        let router = serve(service(5000, 2).with_ledger(ledger.clone()));
        let response = router
            .clone()
            .oneshot(never_ending_capture(Some("Bearer nope".to_owned())))
            .await
            .unwrap();
        assert_eq!(status_and_code(response).await.0, 401);
        assert_eq!(*ledger.failures.lock().unwrap(), ["client"]);
        assert!(ledger.admitted.lock().unwrap().is_empty());

        // A valid token is admitted by the ledger; an empty capture is not a failed check.
        let (content_type, body) = crate::sample::body(&[]);
        let request = Request::post("/v1/attest")
            .header(header::CONTENT_TYPE, content_type)
            .header(header::AUTHORIZATION, token())
            .body(Body::from(body))
            .unwrap();
        let response = router.oneshot(request).await.unwrap();
        assert_eq!(status_and_code(response).await.0, 400);
        let session = crate::token::tests::claims().sid;
        assert_eq!(
            *ledger.admitted.lock().unwrap(),
            [("client".to_owned(), session)]
        );
        assert_eq!(ledger.failures.lock().unwrap().len(), 1);

        // What the ledger refuses is refused, with its wait, and no body is read (it never ends).
        let refusing = Arc::new(Ledger {
            refusal: Some(Refusal::LockedOut {
                retry_after_secs: 42,
            }),
            ..Ledger::default()
        });
        let response = serve(service(5000, 2).with_ledger(refusing))
            .oneshot(never_ending_capture(Some(token())))
            .await
            .unwrap();
        assert_eq!(response.headers()[header::RETRY_AFTER], "42");
        assert_eq!(
            status_and_code(response).await,
            (429, "too_many_failures".to_owned())
        );
        let exhausted = Arc::new(Ledger {
            refusal: Some(Refusal::SessionExhausted),
            ..Ledger::default()
        });
        let response = serve(service(5000, 2).with_ledger(exhausted))
            .oneshot(never_ending_capture(Some(token())))
            .await
            .unwrap();
        assert_eq!(
            status_and_code(response).await,
            (429, "session_attempts_exhausted".to_owned())
        );
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
        // The body never ends: answering at all shows it was not read.
        let response = router(5000, 2)
            .oneshot(never_ending_capture(None))
            .await
            .unwrap();
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
