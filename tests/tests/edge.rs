//! The edge over HTTP, as the real binary serves it: alone (`idyntra edge serve`) and embedded in
//! `idyntra serve`. A session's client token gets a live capture attested by either; the same
//! backend verifier accepts both attestations with the keys they publish.
#![allow(clippy::unwrap_used)] // Test code: a failed unwrap is a failed test.

use idyntra_edge::{AttestationVerifier, KeySet, sample};
use idyntra_models::liveness_samples::Answer;
use idyntra_tests::{Server, Setup, http, registry_photo_bytes, session_with_nonce as session};
use idyntra_types::JwkSet;
use serde_json::Value;

fn frame(name: &str) -> image::RgbImage {
    let photo = image::load_from_memory(&registry_photo_bytes(name))
        .unwrap()
        .to_rgb8();
    sample::camera_frame(&photo, 480)
}

async fn jwks(server: &Server) -> JwkSet {
    serde_json::from_value(idyntra_tests::jwks(&server.url("/.well-known/jwks.json")).await)
        .unwrap()
}

async fn post_capture(
    server: &Server,
    token: Option<&str>,
    parts: &[(&str, Vec<u8>)],
) -> reqwest::Response {
    let (content_type, body) = sample::body(parts);
    let mut request = http()
        .post(server.url("/v1/attest"))
        .header("content-type", content_type)
        .body(body);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    request.send().await.unwrap()
}

/// Sends `head` on a new connection and returns what comes back before the server closes it or
/// goes quiet.
async fn raw_request(server: &Server, head: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let address = server.base_url.trim_start_matches("http://");
    let mut stream = tokio::net::TcpStream::connect(address).await.unwrap();
    stream.write_all(head.as_bytes()).await.unwrap();
    let mut answer = vec![0u8; 4096];
    let read = tokio::time::timeout(std::time::Duration::from_secs(10), stream.read(&mut answer))
        .await
        .unwrap()
        .unwrap();
    String::from_utf8_lossy(&answer[..read]).into_owned()
}

#[tokio::test]
async fn both_native_hosts_attest_a_live_capture_that_one_verifier_accepts() {
    let mut setup = Setup::embedded();
    setup.set(
        "IDYNTRA_HTTP__ALLOWED_ORIGINS",
        "[\"https://app.example.com\"]",
    );
    setup.set("IDYNTRA_EDGE__MAX_BODY_BYTES", "4000000");
    let backend = setup.serve();
    // The same working directory: the edge trusts the backend's dev client-token key.
    let edge = setup.serve_edge();
    let key = setup.create_key("acme", &[]);
    let key = key["secret"].as_str().unwrap();

    let mut keys = jwks(&edge).await;
    keys.keys.extend(jwks(&backend).await.keys);
    // The embedded edge has the same dev key as the standalone one: published by both.
    keys.keys.sort_by(|a, b| a.kid.cmp(&b.kid));
    keys.keys.dedup();
    let verifier = AttestationVerifier::new(
        KeySet::from_jwks(&keys).unwrap(),
        &["idyntra-edge".to_owned()],
    );
    let (frontal, turned) = (frame("obama.jpg"), frame("obama2.jpg"));
    let document = registry_photo_bytes("obama.jpg");
    for host in [&edge, &backend] {
        let (session_id, token, nonce) = session(&backend, key).await;
        let parts = sample::active_parts(&nonce, Answer::Live, &frontal, &turned, Some(&document));
        let response = post_capture(host, Some(&token), &parts).await;
        assert_eq!(response.status(), 200, "{}", response.text().await.unwrap());
        assert_eq!(response.headers()["cache-control"], "no-store");
        let answer: Value = response.json().await.unwrap();
        // Now, after the answer: the attestation is dated when it was signed.
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64;
        let claims = verifier
            .verify(
                answer["attestation"].as_str().unwrap(),
                &session_id,
                &nonce,
                now,
            )
            .unwrap();
        assert!(claims.checks.liveness.challenge.unwrap().passed);
    }

    // No token: 401; too large: 413; both problem+json.
    let (_, token, _) = session(&backend, key).await;
    let unauthorized = post_capture(&edge, None, &[("selfie", document.clone())]).await;
    assert_eq!(unauthorized.status(), 401);
    assert_eq!(
        unauthorized.headers()["content-type"],
        "application/problem+json"
    );
    // An announced oversized body is refused before it is sent (a client writing it anyway would
    // see the connection close), so ask with the headers alone.
    let raw = raw_request(
        &edge,
        &format!(
            "POST /v1/attest HTTP/1.1\r\nHost: edge\r\nAuthorization: Bearer {token}\r\n\
             Content-Type: multipart/form-data; boundary=x\r\nContent-Length: 5000000\r\n\r\n"
        ),
    )
    .await;
    assert!(raw.starts_with("HTTP/1.1 413"), "{raw}");
    assert!(raw.contains("payload_too_large"), "{raw}");

    // CORS: the allow-listed origin only.
    for (origin, allowed) in [
        ("https://app.example.com", true),
        ("https://evil.example", false),
    ] {
        let preflight = http()
            .request(reqwest::Method::OPTIONS, edge.url("/v1/attest"))
            .header("origin", origin)
            .header("access-control-request-method", "POST")
            .header(
                "access-control-request-headers",
                "authorization,content-type",
            )
            .send()
            .await
            .unwrap();
        let allow = preflight
            .headers()
            .get("access-control-allow-origin")
            .map(|v| v.to_str().unwrap().to_owned());
        assert_eq!(
            allow.as_deref() == Some(origin),
            allowed,
            "{origin}: {allow:?}"
        );
    }
    let health: Value = http()
        .get(edge.url("/healthz"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(health["status"], "ok");
}

#[tokio::test]
async fn replicas_sharing_redis_share_the_session_attempts_and_the_failure_lockout() {
    let mut setup = Setup::embedded();
    setup.use_redis();
    // Two replicas of the edge: the one embedded in the API server, and one alone.
    let backend = setup.serve();
    let edge = setup.serve_edge();
    let replicas = [&backend, &edge];
    let key = setup.create_key("acme", &[]);
    let key = key["secret"].as_str().unwrap();

    // 10 attempts per session, taken in turn at either replica: an empty capture is unreadable,
    // which is not a failed check, so no lockout gets in the way.
    let (_, token, _) = session(&backend, key).await;
    for attempt in 0..10 {
        let response = post_capture(replicas[attempt % 2], Some(&token), &[]).await;
        assert_eq!(response.status(), 400, "attempt {attempt}");
    }
    // Each replica has seen only 5: the count is shared.
    let response = post_capture(replicas[0], Some(&token), &[]).await;
    assert_eq!(response.status(), 429);
    let problem: Value = response.json().await.unwrap();
    assert_eq!(problem["code"], "session_attempts_exhausted");

    // 5 refused tokens at one replica lock the client out at the other, for 3 minutes.
    for _ in 0..5 {
        let response = post_capture(replicas[0], Some("not-a-token"), &[]).await;
        assert_eq!(response.status(), 401);
    }
    let (_, token, _) = session(&backend, key).await;
    let response = post_capture(replicas[1], Some(&token), &[]).await;
    assert_eq!(response.status(), 429);
    let retry_after: i64 = response.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((170..=180).contains(&retry_after), "{retry_after}");
    let problem: Value = response.json().await.unwrap();
    assert_eq!(problem["code"], "too_many_failures");
}
