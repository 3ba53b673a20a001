//! The real `idyntra` binary over HTTP: keys from the CLI, the sessions API on both storage set-ups,
//! idempotency, tenant isolation, rate limits, bad input, readiness and the audit trail.
#![allow(clippy::unwrap_used)] // Test code: a failed unwrap is a failed test.

use std::time::Duration;

use idyntra_tests::{Answer, Server, Setup, TcpProxy, http};
use reqwest::StatusCode;
use serde_json::{Value, json};

async fn problem(response: reqwest::Response, status: StatusCode, code: &str) -> Value {
    assert_eq!(response.status(), status);
    assert_eq!(
        response.headers()["content-type"],
        "application/problem+json"
    );
    let request_id = response.headers()["x-request-id"]
        .to_str()
        .unwrap()
        .to_owned();
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["code"], code, "{body}");
    assert_eq!(body["request_id"], request_id.as_str());
    body
}

/// The `request answered` log line of the request `request_id`; log lines reach the file within a
/// few milliseconds (they are written in batches), so this waits for it a little.
async fn request_log_line(server: &Server, request_id: &str) -> Value {
    for _ in 0..100 {
        let found = server.log().lines().find_map(|line| {
            let line: Value = serde_json::from_str(line)
                .unwrap_or_else(|e| panic!("a log line is not JSON ({e}): {line}"));
            (line["message"] == "request answered" && line["span"]["request_id"] == request_id)
                .then_some(line)
        });
        if let Some(line) = found {
            return line;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("no log line for {request_id}: {}", server.log());
}

/// The story both storage set-ups must tell.
async fn session_story(setup: &Setup, server: &Server) {
    let client = http();
    let acme_key = setup.create_key("acme", &[]);
    let acme = acme_key["secret"].as_str().unwrap().to_owned();
    let globex = setup.create_key("globex", &[])["secret"]
        .as_str()
        .unwrap()
        .to_owned();

    let created: Value = client
        .post(server.url("/v1/sessions"))
        .bearer_auth(&acme)
        .header("idempotency-key", "order-42")
        .json(&json!({"reference": "order-42", "metadata": {"tier": "gold"}}))
        .value()
        .await;
    let id = created["id"].as_str().unwrap().to_owned();
    assert_eq!(created["status"], "created");
    assert!(created["client_token"].as_str().unwrap().split('.').count() == 3);

    // Replaying the same request answers the same session; another body with the key is refused.
    let replay = client
        .post(server.url("/v1/sessions"))
        .bearer_auth(&acme)
        .header("idempotency-key", "order-42")
        .json(&json!({"reference": "order-42", "metadata": {"tier": "gold"}}))
        .answer()
        .await;
    assert_eq!(replay.status(), StatusCode::CREATED);
    assert_eq!(replay.headers()["idempotent-replayed"], "true");
    assert_eq!(replay.json::<Value>().await.unwrap()["id"], id.as_str());
    let reused = client
        .post(server.url("/v1/sessions"))
        .bearer_auth(&acme)
        .header("idempotency-key", "order-42")
        .json(&json!({"reference": "order-43"}))
        .answer()
        .await;
    problem(
        reused,
        StatusCode::UNPROCESSABLE_ENTITY,
        "idempotency_key_reused",
    )
    .await;

    let fetched: Value = client
        .get(server.url(&format!("/v1/sessions/{id}")))
        .bearer_auth(&acme)
        .value()
        .await;
    assert_eq!(fetched["metadata"]["tier"], "gold");

    // Text every database can store, or a 422: never a 500 on one of them.
    let nul = client
        .post(server.url("/v1/sessions"))
        .bearer_auth(&acme)
        .json(&json!({"reference": "a\u{0}b", "metadata": {"k": "v\u{0}"}}))
        .answer()
        .await;
    let body = problem(nul, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed").await;
    assert_eq!(body["errors"].as_array().unwrap().len(), 2, "{body}");

    // Another account sees nothing of it.
    let foreign = client
        .get(server.url(&format!("/v1/sessions/{id}")))
        .bearer_auth(&globex)
        .answer()
        .await;
    problem(foreign, StatusCode::NOT_FOUND, "not_found").await;
    let foreign_cancel = client
        .post(server.url(&format!("/v1/sessions/{id}/cancel")))
        .bearer_auth(&globex)
        .answer()
        .await;
    problem(foreign_cancel, StatusCode::NOT_FOUND, "not_found").await;
    let their_list: Value = client
        .get(server.url("/v1/sessions"))
        .bearer_auth(&globex)
        .value()
        .await;
    assert_eq!(their_list["data"], json!([]));

    for _ in 0..3 {
        let response = client
            .post(server.url("/v1/sessions"))
            .bearer_auth(&acme)
            .answer()
            .await;
        assert_eq!(response.status(), StatusCode::CREATED);
    }
    let first: Value = client
        .get(server.url("/v1/sessions?limit=3"))
        .bearer_auth(&acme)
        .value()
        .await;
    assert_eq!(first["has_more"], true);
    let last_id = first["data"][2]["id"].as_str().unwrap();
    let rest: Value = client
        .get(server.url(&format!("/v1/sessions?limit=3&starting_after={last_id}")))
        .bearer_auth(&acme)
        .value()
        .await;
    assert_eq!(rest["has_more"], false);
    assert_eq!(rest["data"][0]["id"], id.as_str(), "the oldest comes last");

    let canceled: Value = client
        .post(server.url(&format!("/v1/sessions/{id}/cancel")))
        .bearer_auth(&acme)
        .value()
        .await;
    assert_eq!(canceled["status"], "canceled");
    let again = client
        .post(server.url(&format!("/v1/sessions/{id}/cancel")))
        .bearer_auth(&acme)
        .answer()
        .await;
    problem(again, StatusCode::CONFLICT, "session_not_cancelable").await;
    let only_canceled: Value = client
        .get(server.url("/v1/sessions?status=canceled"))
        .bearer_auth(&acme)
        .value()
        .await;
    assert_eq!(only_canceled["data"].as_array().unwrap().len(), 1);

    // Every change is in the audit trail, and the chain holds.
    let verify = setup.cli(&["audit", "verify"]);
    assert!(
        verify.status.success(),
        "{}",
        String::from_utf8_lossy(&verify.stderr)
    );
    let said = String::from_utf8_lossy(&verify.stdout);
    let rows: u64 = said.trim().rsplit(' ').nth(1).unwrap().parse().unwrap();
    // 2 accounts + 2 keys + 4 sessions + 1 cancel.
    assert!(rows >= 9, "{said}");

    // One JSON line per request, with the fields docs/API.md names; nothing secret.
    let read = client
        .get(server.url(&format!("/v1/sessions/{id}")))
        .bearer_auth(&acme)
        .header("x-request-id", "log-check-1")
        .answer()
        .await;
    assert_eq!(read.status(), StatusCode::OK);
    let line = request_log_line(server, "log-check-1").await;
    assert_eq!(line["level"], "INFO");
    assert_eq!(line["status"], 200);
    assert!(line["latency_ms"].as_f64().unwrap() >= 0.0, "{line}");
    assert_eq!(line["span"]["method"], "GET");
    assert_eq!(
        line["span"]["route"], "/v1/sessions/{id}",
        "the route template"
    );
    assert_eq!(line["span"]["account_id"], acme_key["account_id"], "{line}");
    let log = server.log();
    let token = created["client_token"].as_str().unwrap().to_owned();
    for secret in [&acme, &globex, &token] {
        assert!(!log.contains(secret.as_str()), "a secret reached the log");
    }
}

#[tokio::test]
async fn sessions_on_the_embedded_default() {
    let setup = Setup::embedded();
    let server = setup.serve();
    // First start in dev: a dev key is printed once, and it works.
    let banner = server.banner.join("\n");
    let dev_key = banner
        .split_whitespace()
        .find(|word| word.starts_with("idk_"))
        .unwrap_or_else(|| panic!("no dev key in {banner}"))
        .to_owned();
    let response = http()
        .get(server.url("/v1/sessions"))
        .bearer_auth(&dev_key)
        .answer()
        .await;
    assert_eq!(response.status(), StatusCode::OK);
    session_story(&setup, &server).await;
    drop(server);
    let restarted = setup.serve();
    assert!(
        restarted.banner.iter().all(|line| !line.contains("idk_")),
        "the dev key is shown once"
    );
    assert!(setup.dir.path().join("data/idyntra.db").exists());
}

#[tokio::test]
async fn sessions_on_postgres_and_redis() {
    let setup = Setup::postgres_and_redis().await;
    let migrate = setup.cli(&["migrate"]);
    assert!(
        migrate.status.success(),
        "{}",
        String::from_utf8_lossy(&migrate.stderr)
    );
    assert!(String::from_utf8_lossy(&migrate.stdout).contains("postgres"));
    let server = setup.serve();
    let ready: Value = http().get(server.url("/readyz")).value().await;
    assert_eq!(
        ready["checks"],
        json!({"database": "ok", "redis": "ok", "models": {"status": "ok", "engine": "tract-cpu"}})
    );
    session_story(&setup, &server).await;
}

#[tokio::test]
async fn rate_limits_are_shared_through_redis() {
    let mut setup = Setup::postgres_and_redis().await;
    setup
        .set("IDYNTRA_RATE_LIMIT__PER_KEY__REQUESTS", "5")
        .set("IDYNTRA_RATE_LIMIT__PER_KEY__WINDOW", "1m");
    let key = setup.create_key("acme", &[])["secret"]
        .as_str()
        .unwrap()
        .to_owned();
    // Two replicas of the API behind one Redis.
    let one = setup.serve();
    let two = setup.serve();
    let client = http();
    let mut statuses = Vec::new();
    for i in 0..8 {
        let server = if i % 2 == 0 { &one } else { &two };
        let response = client
            .get(server.url("/v1/sessions"))
            .bearer_auth(&key)
            .answer()
            .await;
        statuses.push(response.status());
        if response.status() == StatusCode::TOO_MANY_REQUESTS {
            assert!(response.headers().contains_key("retry-after"));
            assert_eq!(response.headers()["ratelimit-limit"], "5");
            problem(response, StatusCode::TOO_MANY_REQUESTS, "rate_limited").await;
        }
    }
    let allowed = statuses.iter().filter(|s| **s == StatusCode::OK).count();
    assert_eq!(allowed, 5, "{statuses:?}");
    let metrics = client.get(one.url("/metrics")).text_body().await;
    assert!(
        metrics.contains("idyntra_rate_limit_rejections_total{scope=\"key\"}"),
        "{metrics}"
    );
}

#[tokio::test]
async fn bad_input_never_gets_a_500() {
    let mut setup = Setup::embedded();
    setup.set("IDYNTRA_HTTP__MAX_BODY_BYTES", "4096");
    let key = setup.create_key("acme", &[])["secret"]
        .as_str()
        .unwrap()
        .to_owned();
    let server = setup.serve();
    let client = http();
    let post = || client.post(server.url("/v1/sessions")).bearer_auth(&key);
    problem(
        post()
            .header("content-type", "application/json")
            .body("{\"reference\":")
            .answer()
            .await,
        StatusCode::BAD_REQUEST,
        "invalid_json",
    )
    .await;
    problem(
        post()
            .header("content-type", "text/xml")
            .body("<a/>")
            .answer()
            .await,
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "unsupported_media_type",
    )
    .await;
    problem(
        post()
            .json(&json!({"options": {"liveness": "blink"}}))
            .answer()
            .await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "validation_failed",
    )
    .await;
    problem(
        post()
            .json(&json!({"reference": "x".repeat(10_000)}))
            .answer()
            .await,
        StatusCode::PAYLOAD_TOO_LARGE,
        "payload_too_large",
    )
    .await;
    problem(
        post().json(&json!([1, 2])).answer().await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "validation_failed",
    )
    .await;
    for bad_key in ["x".repeat(300), "has space".to_owned()] {
        problem(
            post().header("idempotency-key", bad_key).answer().await,
            StatusCode::BAD_REQUEST,
            "invalid_idempotency_key",
        )
        .await;
    }
    problem(
        client.get(server.url("/nope")).answer().await,
        StatusCode::NOT_FOUND,
        "not_found",
    )
    .await;
    problem(
        client
            .patch(server.url("/v1/sessions"))
            .bearer_auth(&key)
            .answer()
            .await,
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
    )
    .await;
    problem(
        client
            .get(server.url("/v1/sessions"))
            .header("authorization", "Basic Zm9vOmJhcg==")
            .answer()
            .await,
        StatusCode::UNAUTHORIZED,
        "unauthorized",
    )
    .await;
    problem(
        client
            .get(server.url("/v1/sessions?limit=-1"))
            .bearer_auth(&key)
            .answer()
            .await,
        StatusCode::BAD_REQUEST,
        "invalid_query",
    )
    .await;
    problem(
        client
            .get(server.url("/v1/sessions/..%2F..%2Fetc"))
            .bearer_auth(&key)
            .answer()
            .await,
        StatusCode::NOT_FOUND,
        "not_found",
    )
    .await;
    // Nothing of this was a server error.
    let metrics = client.get(server.url("/metrics")).text_body().await;
    assert!(!metrics.contains("status=\"500\""), "{metrics}");
}

#[tokio::test]
async fn keys_are_scoped_revoked_and_rotated_with_grace() {
    let mut setup = Setup::embedded();
    // Without the key cache, so revocation and the end of the grace period apply at once.
    setup.set("IDYNTRA_API_KEYS__CACHE_TTL", "0s");
    let server = setup.serve();
    let client = http();
    let reader = setup.create_key("acme", &["--scopes", "sessions:read"]);
    let write = client
        .post(server.url("/v1/sessions"))
        .bearer_auth(reader["secret"].as_str().unwrap())
        .answer()
        .await;
    problem(write, StatusCode::FORBIDDEN, "insufficient_scope").await;

    let key = setup.create_key("acme", &[]);
    let old_secret = key["secret"].as_str().unwrap();
    let rotated = setup.cli(&[
        "keys",
        "rotate",
        key["id"].as_str().unwrap(),
        "--grace",
        "2s",
        "--json",
    ]);
    assert!(
        rotated.status.success(),
        "{}",
        String::from_utf8_lossy(&rotated.stderr)
    );
    let rotated: Value = serde_json::from_slice(&rotated.stdout).unwrap();
    let new_secret = rotated["secret"].as_str().unwrap();
    for secret in [old_secret, new_secret] {
        let response = client
            .get(server.url("/v1/sessions"))
            .bearer_auth(secret)
            .answer()
            .await;
        assert_eq!(
            response.status(),
            StatusCode::OK,
            "both keys work during the grace period"
        );
    }
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let expired = client
        .get(server.url("/v1/sessions"))
        .bearer_auth(old_secret)
        .answer()
        .await;
    problem(expired, StatusCode::UNAUTHORIZED, "unauthorized").await;

    let revoked = setup.cli(&["keys", "revoke", rotated["id"].as_str().unwrap()]);
    assert!(revoked.status.success());
    let refused = client
        .get(server.url("/v1/sessions"))
        .bearer_auth(new_secret)
        .answer()
        .await;
    problem(refused, StatusCode::UNAUTHORIZED, "unauthorized").await;
    let again = setup.cli(&["keys", "revoke", rotated["id"].as_str().unwrap()]);
    assert_eq!(again.status.code(), Some(1));

    let listed = setup.cli(&["keys", "list", "--json"]);
    let listed: Value = serde_json::from_slice(&listed.stdout).unwrap();
    let text = listed.to_string();
    assert!(
        !text.contains(old_secret) && !text.contains(new_secret),
        "secrets are never listed"
    );
    assert!(
        listed
            .as_array()
            .unwrap()
            .iter()
            .any(|k| k["last_used_at"].is_number())
    );
    assert_eq!(
        setup
            .cli(&["keys", "create", "--account", "acme"])
            .status
            .code(),
        Some(2),
        "usage error"
    );
}

// Multi-threaded: the CLI and server calls block, and the proxy must keep forwarding meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_fails_when_postgres_is_unreachable() {
    let database = idyntra_tests::fresh_postgres_database().await;
    let address = idyntra_tests::postgres_address();
    let proxy = TcpProxy::start(address.clone()).await;
    let through_proxy = database.replacen(&address, &format!("127.0.0.1:{}", proxy.port), 1);
    assert_ne!(
        through_proxy, database,
        "the database URL goes through the proxy"
    );
    let mut setup = Setup::embedded();
    setup
        .set("IDYNTRA_DATABASE_URL", &through_proxy)
        .set("IDYNTRA_DATABASE__PING_TIMEOUT", "500ms")
        .set("IDYNTRA_DATABASE__ACQUIRE_TIMEOUT", "1s");
    let key = setup.create_key("acme", &[])["secret"]
        .as_str()
        .unwrap()
        .to_owned();
    let server = setup.serve();
    let client = http();
    assert_eq!(
        client.get(server.url("/readyz")).answer().await.status(),
        StatusCode::OK
    );

    proxy.cut();
    let body = problem(
        client.get(server.url("/readyz")).answer().await,
        StatusCode::SERVICE_UNAVAILABLE,
        "not_ready",
    )
    .await;
    assert!(
        body["detail"].as_str().unwrap().contains("database"),
        "{body}"
    );
    assert_eq!(
        client.get(server.url("/healthz")).answer().await.status(),
        StatusCode::OK,
        "the process is up"
    );
    let response = client
        .get(server.url("/v1/sessions"))
        .bearer_auth(&key)
        .answer()
        .await;
    assert!(response.headers().contains_key("retry-after"));
    problem(response, StatusCode::SERVICE_UNAVAILABLE, "unavailable").await;
}

#[tokio::test]
async fn audit_verify_names_the_first_tampered_row() {
    let setup = Setup::embedded();
    setup.create_key("acme", &[]);
    setup.create_key("acme", &[]);
    let ok = setup.cli(&["audit", "verify"]);
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    // Someone with database access edits a sealed row (the trigger has to go first).
    let db = setup.dir.path().join("data/idyntra.db");
    let tamper = std::process::Command::new("sqlite3")
        .arg(&db)
        .arg("drop trigger audit_log_seal_once; update audit_log set actor = 'nobody' where chain_seq = 2;")
        .status()
        .expect("sqlite3 is installed");
    assert!(tamper.success());
    let broken = setup.cli(&["audit", "verify"]);
    assert_eq!(broken.status.code(), Some(1));
    let said = String::from_utf8_lossy(&broken.stderr);
    assert!(said.contains("chain position 2"), "{said}");
}

#[tokio::test]
async fn prod_profile_refuses_unsafe_configuration() {
    let mut setup = Setup::embedded();
    setup
        .set("IDYNTRA_PROFILE", "prod")
        .set("IDYNTRA_HTTP__ALLOWED_ORIGINS", "[\"*\"]")
        .set("IDYNTRA_HTTP__ALLOWED_HOSTS", "[\"api.example.com\"]");
    let refused = setup.cli(&["serve"]);
    assert_eq!(refused.status.code(), Some(1));
    let said = String::from_utf8_lossy(&refused.stderr);
    assert!(said.contains("http.allowed_origins"), "{said}");
    assert_eq!(said.trim().lines().count(), 1, "one line: {said}");

    // A dev key left in the database stops a prod start.
    let dev = Setup::embedded();
    drop(dev.serve());
    let mut prod = Setup::in_dir(dev.dir);
    prod.set("IDYNTRA_PROFILE", "prod")
        .set("IDYNTRA_ALLOW_SQLITE_IN_PROD", "true")
        .set(
            "IDYNTRA_HTTP__ALLOWED_ORIGINS",
            "[\"https://app.example.com\"]",
        )
        .set("IDYNTRA_HTTP__ALLOWED_HOSTS", "[\"api.example.com\"]")
        .set(
            "IDYNTRA_API_KEYS__PEPPER",
            "a-pepper-of-at-least-32-characters-long",
        )
        .set(
            "IDYNTRA_SIGNING__PRIVATE_KEY",
            "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=",
        )
        .set(
            "IDYNTRA_EDGE__PRIVATE_KEY",
            "AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE=",
        )
        .set(
            "IDYNTRA_MEDIA__MASTER_KEY",
            "AgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgI=",
        );
    let refused = prod.cli(&["serve", "--listen", "127.0.0.1:0"]);
    assert_eq!(refused.status.code(), Some(1));
    let said = String::from_utf8_lossy(&refused.stderr);
    assert!(said.contains("dev API key"), "{said}");
}

/// `idyntra healthcheck`: the probe of images without a shell or curl.
#[test]
fn the_healthcheck_command_tells_a_running_server_from_a_missing_one() {
    let setup = Setup::embedded();
    let server = setup.serve();
    let up = setup.cli(&["healthcheck", "--url", &server.url("/healthz")]);
    assert!(up.status.success(), "{up:?}");
    let ready = setup.cli(&["healthcheck", "--url", &server.url("/readyz")]);
    assert!(ready.status.success(), "{ready:?}");
    drop(server);
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let down = setup.cli(&[
        "healthcheck",
        "--url",
        &format!("http://127.0.0.1:{port}/healthz"),
        "--timeout",
        "1s",
    ]);
    assert_eq!(down.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&down.stderr).contains("unhealthy"));
}

/// A worker serves only its operations endpoints: the probes and the scrape of a worker pod work,
/// the API does not.
#[tokio::test]
async fn a_worker_answers_probes_and_scrapes_and_nothing_else() {
    let setup = Setup::embedded();
    let worker = setup.worker();
    let client = http();
    let health = client.get(worker.url("/healthz")).send().await.unwrap();
    assert_eq!(health.status(), StatusCode::OK);
    assert!(health.headers().contains_key("x-request-id"));
    let ready: Value = client
        .get(worker.url("/readyz"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(ready["status"], "ready", "{ready}");
    let metrics = client
        .get(worker.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(metrics.contains("idyntra_jobs_due"), "{metrics}");
    let api = client
        .post(worker.url("/v1/sessions"))
        .send()
        .await
        .unwrap();
    assert_eq!(api.status(), StatusCode::NOT_FOUND);
    assert_eq!(
        api.headers()["content-type"],
        "application/problem+json",
        "a worker serves no API"
    );
    let probe = setup.cli(&["healthcheck", "--url", &worker.url("/readyz")]);
    assert!(probe.status.success(), "{probe:?}");
}
