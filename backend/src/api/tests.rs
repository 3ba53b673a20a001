//! Handler tests: the whole router without a socket.

use axum::body::Body;
use axum::http::{Method, Request, StatusCode, header};
use axum::response::Response;
use http_body_util::BodyExt;
use serde_json::{Value, json};
use tower::ServiceExt;

use crate::api_keys;
use crate::app::{App, AppState};
use crate::clock;
use crate::config::{Config, Limit};
use crate::store::{Account, AuditEvent};

struct TestApp {
    state: AppState,
    _dir: tempfile::TempDir,
}

fn audit() -> AuditEvent {
    AuditEvent {
        at: clock::now_ms(),
        actor: "test".to_owned(),
        action: "test".to_owned(),
        target: "test".to_owned(),
        request_id: None,
        details: json!({}),
    }
}

impl TestApp {
    async fn new(adjust: impl FnOnce(&mut Config)) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let mut config = Config {
            data_dir: dir.path().to_owned(),
            ..Config::default()
        };
        adjust(&mut config);
        let app = App::open(config).await.unwrap();
        Self {
            state: app.into_state(),
            _dir: dir,
        }
    }

    /// A new account with a key carrying `scopes` (all when empty).
    async fn key(&self, account: &str, scopes: &[&str]) -> String {
        self.key_until(account, scopes, None).await
    }

    /// Like [`TestApp::key`], expiring at `expires_at` (ms).
    async fn key_until(&self, account: &str, scopes: &[&str], expires_at: Option<i64>) -> String {
        let store = &self.state.store;
        let account = match store.find_account(account).await.unwrap() {
            Some(account) => account,
            None => {
                let created = Account {
                    account_id: crate::ids::new_id("acct"),
                    name: account.to_owned(),
                    created_at: clock::now_ms(),
                };
                store.insert_account(&created, &audit()).await.unwrap();
                created
            }
        };
        let scopes: Vec<String> = scopes.iter().map(|s| (*s).to_owned()).collect();
        let (record, plain) = api_keys::mint(
            &self.state.key_hasher,
            &account.account_id,
            "test",
            api_keys::parse_scopes(&scopes).unwrap(),
            expires_at,
            false,
            clock::now_ms(),
        );
        store.insert_api_key(&record, &audit()).await.unwrap();
        plain.expose().to_owned()
    }

    async fn revoke(&self, key: &str) {
        let store = &self.state.store;
        let record = store
            .api_keys_by_prefix(api_keys::prefix_of(key).unwrap())
            .await
            .unwrap()
            .remove(0);
        store
            .revoke_api_key(&record.api_key_id, clock::now_ms(), &audit())
            .await
            .unwrap();
    }

    async fn send(&self, request: Request<Body>) -> Response {
        crate::api::router(self.state.clone())
            .oneshot(request)
            .await
            .unwrap()
    }

    async fn call(
        &self,
        method: Method,
        uri: &str,
        key: Option<&str>,
        body: Option<Value>,
    ) -> (StatusCode, Value, Response) {
        let mut builder = Request::builder().method(method).uri(uri);
        if let Some(key) = key {
            builder = builder.header(header::AUTHORIZATION, format!("Bearer {key}"));
        }
        let request = match body {
            Some(body) => builder
                .header(header::CONTENT_TYPE, "application/json")
                .body(Body::from(body.to_string()))
                .unwrap(),
            None => builder.body(Body::empty()).unwrap(),
        };
        let response = self.send(request).await;
        split(response).await
    }
}

async fn split(response: Response) -> (StatusCode, Value, Response) {
    let (parts, body) = response.into_parts();
    let bytes = body.collect().await.unwrap().to_bytes();
    let json = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    (
        parts.status,
        json,
        Response::from_parts(parts, Body::empty()),
    )
}

fn assert_problem(
    status: StatusCode,
    body: &Value,
    response: &Response,
    expected: StatusCode,
    code: &str,
) {
    assert_eq!(status, expected, "{body}");
    assert_eq!(body["code"], code, "{body}");
    assert_eq!(body["status"], expected.as_u16());
    assert_eq!(
        response.headers()[header::CONTENT_TYPE],
        "application/problem+json",
        "{body}"
    );
    let request_id = response.headers()["x-request-id"].to_str().unwrap();
    assert_eq!(body["request_id"], request_id);
}

#[tokio::test]
async fn session_lifecycle() {
    let app = TestApp::new(|_| {}).await;
    let key = app.key("acme", &[]).await;
    let (status, created, response) = app
        .call(Method::POST, "/v1/sessions", Some(&key), Some(json!({"reference": "order-7", "metadata": {"plan": "gold"}, "options": {"liveness": "passive"}})))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let id = created["id"].as_str().unwrap();
    assert_eq!(
        response.headers()[header::LOCATION],
        format!("/v1/sessions/{id}")
    );
    assert_eq!(created["status"], "created");
    assert_eq!(
        created["options"],
        json!({"require_document": true, "liveness": "passive"})
    );
    assert!(created["expires_at"].as_i64().unwrap() > created["created"].as_i64().unwrap());

    let token = created["client_token"].as_str().unwrap();
    let claims = app
        .state
        .client_tokens
        .verify(token, "idyntra-edge")
        .unwrap();
    assert_eq!(claims.sid, id);
    assert_eq!(claims.scope, idyntra_types::CLIENT_TOKEN_SCOPE);
    assert_eq!(claims.nonce.len(), 22);

    let (status, fetched, _) = app
        .call(Method::GET, &format!("/v1/sessions/{id}"), Some(&key), None)
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(fetched["metadata"], json!({"plan": "gold"}));
    assert!(
        fetched.get("client_token").is_none(),
        "the token is shown once"
    );

    let (status, canceled, _) = app
        .call(
            Method::POST,
            &format!("/v1/sessions/{id}/cancel"),
            Some(&key),
            None,
        )
        .await;
    assert_eq!(
        (status, canceled["status"].as_str()),
        (StatusCode::OK, Some("canceled"))
    );
    let (status, body, response) = app
        .call(
            Method::POST,
            &format!("/v1/sessions/{id}/cancel"),
            Some(&key),
            None,
        )
        .await;
    assert_problem(
        status,
        &body,
        &response,
        StatusCode::CONFLICT,
        "session_not_cancelable",
    );
}

#[tokio::test]
async fn accounts_never_see_each_other() {
    let app = TestApp::new(|_| {}).await;
    let mine = app.key("mine", &[]).await;
    let theirs = app.key("theirs", &[]).await;
    let (_, created, _) = app
        .call(Method::POST, "/v1/sessions", Some(&mine), None)
        .await;
    let id = created["id"].as_str().unwrap();
    for (method, uri) in [
        (Method::GET, format!("/v1/sessions/{id}")),
        (Method::POST, format!("/v1/sessions/{id}/cancel")),
    ] {
        let (status, body, response) = app.call(method, &uri, Some(&theirs), None).await;
        assert_problem(status, &body, &response, StatusCode::NOT_FOUND, "not_found");
    }
    let (_, page, _) = app
        .call(Method::GET, "/v1/sessions", Some(&theirs), None)
        .await;
    assert_eq!(page["data"], json!([]));
}

#[tokio::test]
async fn list_paginates_newest_first() {
    let app = TestApp::new(|_| {}).await;
    let key = app.key("acme", &[]).await;
    let mut ids = Vec::new();
    for _ in 0..5 {
        let (_, created, _) = app
            .call(Method::POST, "/v1/sessions", Some(&key), None)
            .await;
        ids.push(created["id"].as_str().unwrap().to_owned());
    }
    ids.reverse();
    let mut seen = Vec::new();
    let mut uri = "/v1/sessions?limit=2".to_owned();
    loop {
        let (status, page, _) = app.call(Method::GET, &uri, Some(&key), None).await;
        assert_eq!(status, StatusCode::OK, "{page}");
        assert_eq!(page["object"], "list");
        let data = page["data"].as_array().unwrap();
        seen.extend(data.iter().map(|s| s["id"].as_str().unwrap().to_owned()));
        if !page["has_more"].as_bool().unwrap() {
            break;
        }
        uri = format!(
            "/v1/sessions?limit=2&starting_after={}",
            seen.last().unwrap()
        );
    }
    assert_eq!(seen, ids);
    let (_, canceled, _) = app
        .call(
            Method::GET,
            "/v1/sessions?status=canceled",
            Some(&key),
            None,
        )
        .await;
    assert_eq!(canceled["data"], json!([]));
    for bad in [
        "limit=0",
        "limit=101",
        "limit=x",
        "status=done",
        "starting_after=nope",
        "color=red",
    ] {
        let (status, body, response) = app
            .call(
                Method::GET,
                &format!("/v1/sessions?{bad}"),
                Some(&key),
                None,
            )
            .await;
        assert_problem(
            status,
            &body,
            &response,
            StatusCode::BAD_REQUEST,
            "invalid_query",
        );
    }
}

#[tokio::test]
async fn idempotency_keys_replay_and_refuse_reuse() {
    let app = TestApp::new(|_| {}).await;
    let key = app.key("acme", &[]).await;
    let post = |body: &'static str, idempotency: &'static str| {
        Request::builder()
            .method(Method::POST)
            .uri("/v1/sessions")
            .header(header::AUTHORIZATION, format!("Bearer {key}"))
            .header(header::CONTENT_TYPE, "application/json")
            .header("idempotency-key", idempotency)
            .body(Body::from(body))
            .unwrap()
    };
    let (status, first, _) = split(app.send(post(r#"{"reference":"a"}"#, "k-1")).await).await;
    assert_eq!(status, StatusCode::CREATED);
    let (status, again, response) =
        split(app.send(post(r#"{"reference":"a"}"#, "k-1")).await).await;
    assert_eq!(status, StatusCode::CREATED);
    assert_eq!(again, first, "the stored answer, token included");
    assert_eq!(response.headers()["idempotent-replayed"], "true");
    let (status, body, response) = split(app.send(post(r#"{"reference":"b"}"#, "k-1")).await).await;
    assert_problem(
        status,
        &body,
        &response,
        StatusCode::UNPROCESSABLE_ENTITY,
        "idempotency_key_reused",
    );
    // A failed validation is not stored: the corrected request may use the same key.
    let (status, _, _) = split(app.send(post(r#"{"reference":""}"#, "k-2")).await).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    let (status, _, _) = split(app.send(post(r#"{"reference":"c"}"#, "k-2")).await).await;
    assert_eq!(status, StatusCode::CREATED);
    // Another key of the account (read-only here) never gets the stored answer, token included.
    let reader = app.key("acme", &["sessions:read"]).await;
    let request = Request::builder()
        .method(Method::POST)
        .uri("/v1/sessions")
        .header(header::AUTHORIZATION, format!("Bearer {reader}"))
        .header(header::CONTENT_TYPE, "application/json")
        .header("idempotency-key", "k-1")
        .body(Body::from(r#"{"reference":"a"}"#))
        .unwrap();
    let (status, body, _) = split(app.send(request).await).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert!(body.get("client_token").is_none());
    // Keys are per account.
    let other = app.key("other", &[]).await;
    let request = Request::builder()
        .method(Method::POST)
        .uri("/v1/sessions")
        .header(header::AUTHORIZATION, format!("Bearer {other}"))
        .header("idempotency-key", "k-1")
        .body(Body::empty())
        .unwrap();
    let (status, body, _) = split(app.send(request).await).await;
    assert_eq!(status, StatusCode::CREATED);
    assert_ne!(body["id"], first["id"]);
    let (_, page, _) = app
        .call(Method::GET, "/v1/sessions", Some(&key), None)
        .await;
    assert_eq!(
        page["data"].as_array().unwrap().len(),
        2,
        "the replay created nothing"
    );
}

#[tokio::test]
async fn bad_input_gets_problem_json() {
    let app = TestApp::new(|config| config.http.max_body_bytes = 2048).await;
    let key = app.key("acme", &[]).await;
    let raw = |content_type: &str, body: String| {
        Request::builder()
            .method(Method::POST)
            .uri("/v1/sessions")
            .header(header::AUTHORIZATION, format!("Bearer {key}"))
            .header(header::CONTENT_TYPE, content_type)
            .body(Body::from(body))
            .unwrap()
    };
    let cases = [
        (
            raw("application/json", "{not json".to_owned()),
            StatusCode::BAD_REQUEST,
            "invalid_json",
        ),
        (
            raw("text/plain", "{}".to_owned()),
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
        ),
        (
            raw("application/json", r#"{"refrence":"x"}"#.to_owned()),
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation_failed",
        ),
        (
            raw("application/json", r#"{"metadata":{"n":1}}"#.to_owned()),
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation_failed",
        ),
        (
            raw(
                "application/json",
                format!(r#"{{"reference":"{}"}}"#, "x".repeat(4000)),
            ),
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
        ),
        (
            Request::builder()
                .uri("/v2/nothing")
                .body(Body::empty())
                .unwrap(),
            StatusCode::NOT_FOUND,
            "not_found",
        ),
        (
            Request::builder()
                .method(Method::DELETE)
                .uri("/v1/sessions")
                .header(header::AUTHORIZATION, format!("Bearer {key}"))
                .body(Body::empty())
                .unwrap(),
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
        ),
        (
            Request::builder()
                .uri("/v1/sessions")
                .body(Body::empty())
                .unwrap(),
            StatusCode::UNAUTHORIZED,
            "unauthorized",
        ),
        (
            Request::builder()
                .uri("/v1/sessions")
                .header(header::AUTHORIZATION, "Bearer idk_wrong")
                .body(Body::empty())
                .unwrap(),
            StatusCode::UNAUTHORIZED,
            "unauthorized",
        ),
        (
            Request::builder()
                .uri("/v1/sessions")
                .header(
                    header::AUTHORIZATION,
                    format!("Bearer {}", api_keys::PlainKey::generate().expose()),
                )
                .body(Body::empty())
                .unwrap(),
            StatusCode::UNAUTHORIZED,
            "unauthorized",
        ),
        (
            Request::builder()
                .uri("/v1/sessions/ses_nope")
                .header(header::AUTHORIZATION, format!("Bearer {key}"))
                .body(Body::empty())
                .unwrap(),
            StatusCode::NOT_FOUND,
            "not_found",
        ),
        (
            // serde would read a struct from an array of its fields.
            raw("application/json", "[null, null]".to_owned()),
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation_failed",
        ),
        (
            raw("application/json", "{}".to_owned()).map(|_| Body::empty()),
            StatusCode::CREATED,
            "",
        ),
        (
            raw("application/json", "null".to_owned()),
            StatusCode::CREATED,
            "",
        ),
    ];
    for (request, expected, code) in cases {
        let (status, body, response) = split(app.send(request).await).await;
        if expected == StatusCode::CREATED {
            assert_eq!(
                status, expected,
                "an empty or null body is a default request"
            );
            continue;
        }
        assert_problem(status, &body, &response, expected, code);
    }
    let (status, body, response) = app
        .call(Method::PUT, "/v1/sessions", Some(&key), None)
        .await;
    assert_problem(
        status,
        &body,
        &response,
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
    );
    assert!(response.headers().contains_key(header::ALLOW));
    let (_, body, _) = app
        .call(
            Method::POST,
            "/v1/sessions",
            Some(&key),
            Some(json!({"metadata": {"n": 1}})),
        )
        .await;
    assert_eq!(body["errors"][0]["field"], "/metadata/n");
}

#[tokio::test]
async fn scopes_are_enforced() {
    let app = TestApp::new(|_| {}).await;
    let reader = app.key("acme", &["sessions:read"]).await;
    let (status, body, response) = app
        .call(Method::POST, "/v1/sessions", Some(&reader), None)
        .await;
    assert_problem(
        status,
        &body,
        &response,
        StatusCode::FORBIDDEN,
        "insufficient_scope",
    );
    let (status, _, _) = app
        .call(Method::GET, "/v1/sessions", Some(&reader), None)
        .await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn revoked_and_expired_keys_are_refused() {
    let app = TestApp::new(|_| {}).await;
    let key = app.key("acme", &[]).await;
    app.revoke(&key).await;
    let (status, body, response) = app
        .call(Method::GET, "/v1/sessions", Some(&key), None)
        .await;
    assert_problem(
        status,
        &body,
        &response,
        StatusCode::UNAUTHORIZED,
        "unauthorized",
    );
    assert_eq!(response.headers()[header::WWW_AUTHENTICATE], "Bearer");
    let expired = app.key_until("acme", &[], Some(clock::now_ms() - 1)).await;
    let (status, _, _) = app
        .call(Method::GET, "/v1/sessions", Some(&expired), None)
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn verified_keys_are_cached_for_the_configured_time() {
    let app = TestApp::new(|config| {
        config.api_keys.cache_ttl = std::time::Duration::from_millis(300);
    })
    .await;
    let key = app.key("acme", &[]).await;
    let (status, _, _) = app
        .call(Method::GET, "/v1/sessions", Some(&key), None)
        .await;
    assert_eq!(status, StatusCode::OK);
    app.revoke(&key).await;
    let (status, _, _) = app
        .call(Method::GET, "/v1/sessions", Some(&key), None)
        .await;
    assert_eq!(status, StatusCode::OK, "still cached");
    tokio::time::sleep(std::time::Duration::from_millis(350)).await;
    let (status, _, _) = app
        .call(Method::GET, "/v1/sessions", Some(&key), None)
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "the revocation arrived");
}

#[tokio::test]
async fn rate_limits_answer_429_with_headers() {
    let app = TestApp::new(|config| {
        config.rate_limit.per_key = Limit {
            requests: 3,
            window: std::time::Duration::from_secs(60),
        };
    })
    .await;
    let key = app.key("acme", &[]).await;
    for remaining in [2, 1, 0] {
        let (status, _, response) = app
            .call(Method::GET, "/v1/sessions", Some(&key), None)
            .await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(response.headers()["ratelimit-limit"], "3");
        assert_eq!(
            response.headers()["ratelimit-remaining"],
            remaining.to_string().as_str()
        );
    }
    let (status, body, response) = app
        .call(Method::GET, "/v1/sessions", Some(&key), None)
        .await;
    assert_problem(
        status,
        &body,
        &response,
        StatusCode::TOO_MANY_REQUESTS,
        "rate_limited",
    );
    let retry: u64 = response.headers()[header::RETRY_AFTER]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    // Within the rest of this window and the decay of its count in the next.
    assert!((1..=120).contains(&retry), "{retry}");
    // Another key of the same client is not affected by this key's limit.
    let other = app.key("other", &[]).await;
    let (status, _, _) = app
        .call(Method::GET, "/v1/sessions", Some(&other), None)
        .await;
    assert_eq!(status, StatusCode::OK);
    let metrics = app.state.metrics.render();
    assert!(
        metrics.contains("idyntra_rate_limit_rejections_total{scope=\"key\"} 1"),
        "{metrics}"
    );
}

#[tokio::test]
async fn ip_limit_applies_before_authentication() {
    let app = TestApp::new(|config| {
        config.rate_limit.per_ip = Limit {
            requests: 2,
            window: std::time::Duration::from_secs(60),
        };
    })
    .await;
    for _ in 0..2 {
        let (status, _, _) = app.call(Method::GET, "/v1/sessions", None, None).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
    }
    let (status, body, response) = app.call(Method::GET, "/v1/sessions", None, None).await;
    assert_problem(
        status,
        &body,
        &response,
        StatusCode::TOO_MANY_REQUESTS,
        "rate_limited",
    );
    let (status, _, _) = app.call(Method::GET, "/healthz", None, None).await;
    assert_eq!(status, StatusCode::OK, "probes are not limited");
}

#[tokio::test]
async fn headers_cors_and_request_ids() {
    let app = TestApp::new(|config| {
        config.http.allowed_origins = vec!["https://app.example.com".to_owned()];
    })
    .await;
    let request = Request::builder()
        .uri("/healthz")
        .header("x-request-id", "abc-123")
        .body(Body::empty())
        .unwrap();
    let response = app.send(request).await;
    let headers = response.headers();
    assert_eq!(headers["x-request-id"], "abc-123");
    assert_eq!(headers[header::X_CONTENT_TYPE_OPTIONS], "nosniff");
    assert_eq!(headers[header::X_FRAME_OPTIONS], "DENY");
    assert_eq!(headers[header::CACHE_CONTROL], "no-store");
    assert!(
        headers[header::STRICT_TRANSPORT_SECURITY]
            .to_str()
            .unwrap()
            .contains("max-age=")
    );
    assert_eq!(headers[header::REFERRER_POLICY], "no-referrer");

    let request = Request::builder()
        .uri("/healthz")
        .header("x-request-id", "bad id; drop")
        .body(Body::empty())
        .unwrap();
    let response = app.send(request).await;
    assert!(
        response.headers()["x-request-id"]
            .to_str()
            .unwrap()
            .starts_with("req_")
    );

    let preflight = |origin: &str| {
        Request::builder()
            .method(Method::OPTIONS)
            .uri("/v1/sessions")
            .header(header::ORIGIN, origin)
            .header(header::ACCESS_CONTROL_REQUEST_METHOD, "POST")
            .body(Body::empty())
            .unwrap()
    };
    let allowed = app.send(preflight("https://app.example.com")).await;
    assert_eq!(
        allowed.headers()[header::ACCESS_CONTROL_ALLOW_ORIGIN],
        "https://app.example.com"
    );
    let refused = app.send(preflight("https://evil.example")).await;
    assert!(
        !refused
            .headers()
            .contains_key(header::ACCESS_CONTROL_ALLOW_ORIGIN)
    );
}

#[tokio::test]
async fn hosts_outside_the_allow_list_are_refused() {
    let app =
        TestApp::new(|config| config.http.allowed_hosts = vec!["api.example.com".to_owned()]).await;
    let request = |host: &str, path: &str| {
        Request::builder()
            .uri(path)
            .header(header::HOST, host)
            .body(Body::empty())
            .unwrap()
    };
    let (status, body, response) =
        split(app.send(request("evil.example", "/openapi.json")).await).await;
    assert_problem(
        status,
        &body,
        &response,
        StatusCode::BAD_REQUEST,
        "host_not_allowed",
    );
    let (status, _, _) = split(
        app.send(request("api.example.com:443", "/openapi.json"))
            .await,
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let (status, _, _) = split(app.send(request("10.1.2.3", "/healthz")).await).await;
    assert_eq!(status, StatusCode::OK, "probes address the pod");
}

#[tokio::test]
async fn operations_endpoints() {
    let app = TestApp::new(|_| {}).await;
    let (status, body, _) = app.call(Method::GET, "/readyz", None, None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["checks"]["database"], "ok");
    // Requests are counted by route template, never by the path as sent (ids would make a label
    // per session), and those that matched no route under one label.
    let (status, _, _) = app
        .call(Method::GET, "/v1/sessions/ses_not_a_real_one", None, None)
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, _, _) = app.call(Method::GET, "/no/such/route", None, None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, spec, _) = app.call(Method::GET, "/openapi.json", None, None).await;
    assert_eq!(status, StatusCode::OK);
    assert!(spec["openapi"].as_str().unwrap().starts_with("3.1"));
    for path in [
        "/v1/sessions",
        "/v1/sessions/{id}",
        "/v1/sessions/{id}/cancel",
        "/readyz",
    ] {
        assert!(spec["paths"].get(path).is_some(), "{path} documented");
    }
    let response = app
        .send(Request::builder().uri("/docs").body(Body::empty()).unwrap())
        .await;
    assert_eq!(response.status(), StatusCode::OK);
    let response = app
        .send(
            Request::builder()
                .uri("/metrics")
                .body(Body::empty())
                .unwrap(),
        )
        .await;
    let text = String::from_utf8(
        response
            .into_body()
            .collect()
            .await
            .unwrap()
            .to_bytes()
            .to_vec(),
    )
    .unwrap();
    assert!(
        text.contains(
            "idyntra_http_requests_total{method=\"GET\",route=\"/readyz\",status=\"200\"} 1"
        ),
        "{text}"
    );
    for sample in [
        "idyntra_http_requests_total{method=\"GET\",route=\"/v1/sessions/{id}\",status=\"401\"} 1",
        "idyntra_http_requests_total{method=\"GET\",route=\"unmatched\",status=\"404\"} 1",
    ] {
        assert!(text.contains(sample), "{sample} in {text}");
    }
    assert!(!text.contains("ses_not_a_real_one"), "{text}");
    assert!(
        text.contains("idyntra_http_request_duration_seconds_bucket"),
        "{text}"
    );
    assert!(
        text.contains("idyntra_db_pool_connections{state=\"idle\"}"),
        "{text}"
    );
}

#[tokio::test]
async fn jwks_publishes_the_keys_that_verify_client_tokens() {
    let retired = crate::client_token::SigningIdentity::generate("backend-0");
    let retired_x = retired.public_x();
    let app = TestApp::new(|config| {
        config.signing.retired_keys = vec![crate::config::RetiredKey {
            kid: "backend-0".to_owned(),
            x: retired_x.clone(),
        }];
    })
    .await;
    let key = app.key("acme", &[]).await;
    let (_, session, _) = app
        .call(Method::POST, "/v1/sessions", Some(&key), None)
        .await;
    let token = session["client_token"].as_str().unwrap();
    let (status, jwks, response) = app
        .call(Method::GET, "/.well-known/jwks.json", None, None)
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        response.headers()[header::CACHE_CONTROL],
        "public, max-age=300"
    );
    let keys = jwks["keys"].as_array().unwrap();
    // The client-token key, the retired one, and the embedded edge's attestation key.
    assert_eq!(keys.len(), 3);
    assert_eq!(keys[1]["kid"], "backend-0");
    assert_eq!(keys[2]["kid"], "edge-1");
    assert_eq!(keys[1]["x"], retired_x.as_str());
    // A verifier that knows only the JWKS accepts the token with the key its kid names.
    idyntra_edge::jwt::install_provider();
    let kid = jsonwebtoken::decode_header(token).unwrap().kid.unwrap();
    let jwk = keys.iter().find(|k| k["kid"] == kid.as_str()).unwrap();
    let decoding =
        jsonwebtoken::DecodingKey::from_ed_components(jwk["x"].as_str().unwrap()).unwrap();
    let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::EdDSA);
    validation.set_audience(&["idyntra-edge"]);
    let claims =
        jsonwebtoken::decode::<idyntra_types::ClientTokenClaims>(token, &decoding, &validation)
            .unwrap()
            .claims;
    assert_eq!(claims.sid, session["id"].as_str().unwrap());
    // The retired key does not verify it.
    let retired_key = jsonwebtoken::DecodingKey::from_ed_components(&retired_x).unwrap();
    assert!(
        jsonwebtoken::decode::<idyntra_types::ClientTokenClaims>(token, &retired_key, &validation)
            .is_err()
    );
}

#[tokio::test]
async fn readiness_names_an_unreachable_redis() {
    let app = TestApp::new(|config| {
        config.redis_url = Some(crate::config::Secret::new("redis://127.0.0.1:1/"));
    })
    .await;
    let (status, body, response) = app.call(Method::GET, "/readyz", None, None).await;
    assert_problem(
        status,
        &body,
        &response,
        StatusCode::SERVICE_UNAVAILABLE,
        "not_ready",
    );
    assert!(body["detail"].as_str().unwrap().contains("redis"), "{body}");
    // The API keeps answering without Redis.
    let key = app.key("acme", &[]).await;
    let (status, _, _) = app
        .call(Method::POST, "/v1/sessions", Some(&key), None)
        .await;
    assert_eq!(status, StatusCode::CREATED);
}

/// The embedded edge: a session's client token gets its capture attested, and the attestation
/// verifies with the keys the backend publishes.
#[tokio::test]
async fn the_embedded_edge_attests_a_capture_of_the_session() {
    let app = TestApp::new(|_| {}).await;
    let key = app.key("acme", &[]).await;
    let (_, session, _) = app
        .call(
            Method::POST,
            "/v1/sessions",
            Some(&key),
            Some(json!({"options": {"liveness": "passive", "require_document": false}})),
        )
        .await;
    let token = session["client_token"].as_str().unwrap();
    let session_id = session["id"].as_str().unwrap();
    let selfie = std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../shared/fixtures/faces/img1.jpg"
    ))
    .expect("the shared face fixtures are beside the checkout");
    let (content_type, body) = idyntra_edge::sample::body(&[("selfie", selfie)]);
    let attest = |authorization: Option<String>, length: Option<usize>| {
        let mut builder = Request::builder()
            .method(Method::POST)
            .uri("/v1/attest")
            .header(header::CONTENT_TYPE, &content_type);
        if let Some(authorization) = authorization {
            builder = builder.header(header::AUTHORIZATION, authorization);
        }
        if let Some(length) = length {
            builder = builder.header(header::CONTENT_LENGTH, length);
        }
        builder.body(Body::from(body.clone())).unwrap()
    };
    let (status, answer, _) = split(
        app.send(attest(Some(format!("Bearer {token}")), None))
            .await,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{answer}");

    let (_, jwks, _) = app
        .call(Method::GET, "/.well-known/jwks.json", None, None)
        .await;
    let jwks: idyntra_types::JwkSet = serde_json::from_value(jwks).unwrap();
    let verifier = idyntra_edge::AttestationVerifier::new(
        idyntra_edge::KeySet::from_jwks(&jwks).unwrap(),
        &["idyntra-edge".to_owned()],
    );
    let claims = app
        .state
        .client_tokens
        .verify(token, "idyntra-edge")
        .unwrap();
    let attestation = verifier
        .verify(
            answer["attestation"].as_str().unwrap(),
            session_id,
            &claims.nonce,
            clock::to_secs(clock::now_ms()),
        )
        .unwrap();
    assert_eq!(attestation.sid, session_id);

    let (status, problem, response) = split(app.send(attest(None, None)).await).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(problem["code"], "client_token_missing");
    // The edge's own problems carry the request id like every other problem of the API.
    assert_eq!(
        problem["request_id"],
        response.headers()["x-request-id"].to_str().unwrap()
    );
    assert_eq!(
        response.headers()[header::CONTENT_TYPE],
        "application/problem+json"
    );
    let (status, problem, _) = split(
        app.send(attest(
            Some(format!("Bearer {token}")),
            Some(100 * 1024 * 1024),
        ))
        .await,
    )
    .await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{problem}");
}

#[tokio::test]
async fn the_demo_page_runs_sessions_of_its_own_account_in_dev_only() {
    let app = TestApp::new(|config| {
        config.demo.sdk_dir = std::path::PathBuf::from("/nonexistent/sdk");
    })
    .await;
    let response = app
        .send(Request::get("/demo").body(Body::empty()).unwrap())
        .await;
    assert_eq!(response.status(), StatusCode::OK);
    let policy = response.headers()[header::CONTENT_SECURITY_POLICY]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        policy.contains("script-src 'self' 'wasm-unsafe-eval'")
            && !policy.contains("unsafe-inline"),
        "{policy}"
    );
    let page = response.into_body().collect().await.unwrap().to_bytes();
    // Without a built SDK the page says how to build it.
    assert!(String::from_utf8_lossy(&page).contains("npm run build"));

    let (status, session, _) = app.call(Method::POST, "/demo/session", None, None).await;
    assert_eq!(status, StatusCode::OK, "{session}");
    let id = session["id"].as_str().unwrap();
    assert_eq!(session["status"], "created");
    assert!(session["client_token"].as_str().unwrap().starts_with("eyJ"));
    // The session is the demo account's: another account does not see it.
    let key = app.key("acme", &[]).await;
    let (status, _, _) = app
        .call(Method::GET, &format!("/v1/sessions/{id}"), Some(&key), None)
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, body, response) = app
        .call(
            Method::POST,
            &format!("/demo/session/{id}/finalize"),
            None,
            None,
        )
        .await;
    assert_problem(
        status,
        &body,
        &response,
        StatusCode::CONFLICT,
        "session_not_submitted",
    );
    // And the demo routes reach no other account's session.
    let (_, theirs, _) = app
        .call(Method::POST, "/v1/sessions", Some(&key), Some(json!({})))
        .await;
    let theirs = theirs["id"].as_str().unwrap();
    for (method, uri) in [
        (Method::GET, format!("/demo/session/{theirs}")),
        (Method::POST, format!("/demo/session/{theirs}/finalize")),
    ] {
        let (status, body, response) = app.call(method, &uri, None, None).await;
        assert_problem(status, &body, &response, StatusCode::NOT_FOUND, "not_found");
    }

    // Switched off, or outside the dev profile whatever `demo.enabled` says: no such routes.
    let off = TestApp::new(|config| config.demo.enabled = false).await;
    let prod = TestApp::new(|config| {
        use crate::config::{Profile, Secret};
        config.profile = Profile::Prod;
        config.allow_sqlite_in_prod = true;
        config.api_keys.pepper = Some(Secret::new("a-pepper-of-at-least-32-characters-long"));
        config.signing.private_key =
            Some(Secret::new("AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="));
        config.edge.private_key = Some(Secret::new("AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE="));
        config.media.master_key = Some(Secret::new("AgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgI="));
    })
    .await;
    for app in [off, prod] {
        for (method, uri) in [(Method::POST, "/demo/session"), (Method::GET, "/demo")] {
            let (status, _, _) = app.call(method, uri, None, None).await;
            assert_eq!(status, StatusCode::NOT_FOUND, "{uri}");
        }
    }
}
