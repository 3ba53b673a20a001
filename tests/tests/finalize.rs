//! The whole verification on the real binary: a session, a live capture attested by the embedded
//! edge, the media upload, finalize, signed webhooks to a real receiver, the result, redaction.
//! Then every way an upload is refused, and a worker killed mid-job and mid-delivery.
#![allow(clippy::unwrap_used)] // Test code: a failed unwrap is a failed test.

use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use idyntra_edge::{EdKey, jwt, sample};
use idyntra_models::liveness_samples::Answer;
use idyntra_tests::Answer as _;
use idyntra_tests::{
    Received, Server, Setup, WebhookReceiver, http, jwt_claims, registry_photo_bytes,
    session_with_nonce,
};
use serde_json::{Value, json};
use sha2::Sha256;

fn frame(name: &str) -> image::RgbImage {
    let photo = image::load_from_memory(&registry_photo_bytes(name))
        .unwrap()
        .to_rgb8();
    sample::camera_frame(&photo, 480)
}

/// A capture of one person: the challenge frames and a document photo.
struct Person {
    frontal: image::RgbImage,
    turned: image::RgbImage,
    document: Vec<u8>,
}

impl Person {
    fn obama() -> Self {
        Self {
            frontal: frame("obama.jpg"),
            turned: frame("obama2.jpg"),
            document: registry_photo_bytes("obama.jpg"),
        }
    }

    fn parts(&self, nonce: &str, document: Option<&[u8]>) -> Vec<(&'static str, Vec<u8>)> {
        sample::active_parts(nonce, Answer::Live, &self.frontal, &self.turned, document)
    }
}

/// A session with its token, nonce, the parts sent to the edge and the edge's attestation.
struct Attested {
    id: String,
    token: String,
    nonce: String,
    parts: Vec<(&'static str, Vec<u8>)>,
    attestation: String,
}

async fn attested(server: &Server, key: &str, person: &Person) -> Attested {
    let (id, token, nonce) = session_with_nonce(server, key).await;
    let parts = person.parts(&nonce, Some(&person.document));
    let (content_type, body) = sample::body(&parts);
    let response = http()
        .post(server.url("/v1/attest"))
        .bearer_auth(&token)
        .header("content-type", content_type)
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200, "{}", response.text().await.unwrap());
    let answer: Value = response.json().await.unwrap();
    Attested {
        id,
        token,
        nonce,
        parts,
        attestation: answer["attestation"].as_str().unwrap().to_owned(),
    }
}

/// The upload form: the attestation and the images as sent to the edge (no timeline).
fn upload_parts(
    attestation: &str,
    parts: &[(&'static str, Vec<u8>)],
) -> Vec<(&'static str, Vec<u8>)> {
    let mut upload = vec![("attestation", attestation.as_bytes().to_vec())];
    upload.extend(
        parts
            .iter()
            .filter(|(name, _)| *name != "timeline")
            .cloned(),
    );
    upload
}

async fn upload(
    server: &Server,
    id: &str,
    token: &str,
    parts: &[(&str, Vec<u8>)],
) -> reqwest::Response {
    let (content_type, body) = sample::body(parts);
    http()
        .post(server.url(&format!("/v1/sessions/{id}/media")))
        .bearer_auth(token)
        .header("content-type", content_type)
        .body(body)
        .send()
        .await
        .unwrap()
}

/// Uploads the whole of `capture`, which the server accepts: the session is submitted.
async fn submit(server: &Server, capture: &Attested) {
    let response = upload(
        server,
        &capture.id,
        &capture.token,
        &upload_parts(&capture.attestation, &capture.parts),
    )
    .await;
    assert_eq!(response.status(), 200, "{}", response.text().await.unwrap());
}

/// The session's status as `GET` shows it.
async fn status(server: &Server, key: &str, id: &str) -> String {
    let session: Value = http()
        .get(server.url(&format!("/v1/sessions/{id}")))
        .bearer_auth(key)
        .value()
        .await;
    session["status"].as_str().unwrap().to_owned()
}

async fn expect_problem(response: reqwest::Response, status: u16, code: &str) {
    assert_eq!(
        response.headers()["content-type"],
        "application/problem+json"
    );
    let got = response.status().as_u16();
    let problem: Value = response.json().await.unwrap();
    assert_eq!(
        (got, problem["code"].as_str().unwrap()),
        (status, code),
        "{problem}"
    );
}

fn secrets(setup: &Setup) -> Value {
    let text = std::fs::read_to_string(setup.dir.path().join("data/dev-secrets.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

fn now_secs() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// Checks both signatures of a webhook: HMAC with the endpoint secret, Ed25519 with the JWKS.
fn check_signatures(received: &Received, secret: &str, jwks: &Value) {
    let header = received.headers["idyntra-signature"].to_str().unwrap();
    let (t, v1) = header.split_once(',').unwrap();
    let t = t.strip_prefix("t=").unwrap();
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(format!("{t}.{}", received.body).as_bytes());
    assert_eq!(
        v1.strip_prefix("v1=").unwrap(),
        hex::encode(mac.finalize().into_bytes())
    );
    let header = received.headers["idyntra-signature-ed25519"]
        .to_str()
        .unwrap();
    let fields: std::collections::HashMap<&str, &str> = header
        .split(',')
        .filter_map(|field| field.split_once('='))
        .collect();
    let jwk = jwks["keys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["kid"] == fields["kid"])
        .unwrap();
    let x: [u8; 32] = URL_SAFE_NO_PAD
        .decode(jwk["x"].as_str().unwrap())
        .unwrap()
        .try_into()
        .unwrap();
    let key = ed25519_dalek::VerifyingKey::from_bytes(&x).unwrap();
    let signature =
        ed25519_dalek::Signature::from_slice(&URL_SAFE_NO_PAD.decode(fields["sig"]).unwrap())
            .unwrap();
    use ed25519_dalek::Verifier;
    key.verify(
        format!("{}.{}", fields["t"], received.body).as_bytes(),
        &signature,
    )
    .unwrap();
}

async fn create_endpoint(server: &Server, key: &str, url: &str) -> (String, String) {
    let endpoint: Value = http()
        .post(server.url("/v1/webhook_endpoints"))
        .bearer_auth(key)
        .json(&json!({ "url": url }))
        .value()
        .await;
    (
        endpoint["id"].as_str().unwrap().to_owned(),
        endpoint["secret"].as_str().unwrap().to_owned(),
    )
}

fn pipeline_setup(setup: &mut Setup) {
    setup
        .set("IDYNTRA_WEBHOOKS__ALLOW_PRIVATE_TARGETS", "true")
        .set("IDYNTRA_JOBS__POLL_INTERVAL", "100ms")
        .set("IDYNTRA_DECISION__MANIPULATION_UNCHECKED", "ignore");
}

async fn the_whole_flow(mut setup: Setup) {
    pipeline_setup(&mut setup);
    let server = setup.serve();
    let key = setup.create_key("acme", &[]);
    let key = key["secret"].as_str().unwrap();
    let receiver = WebhookReceiver::start(0).await;
    let (endpoint, secret) = create_endpoint(&server, key, &receiver.url).await;
    let person = Person::obama();

    let capture = attested(&server, key, &person).await;
    submit(&server, &capture).await;
    let submitted = receiver
        .wait_for("session.submitted", Duration::from_secs(20))
        .await;
    // The job backlog and the model pool are read at scrape time, on either database.
    let metrics = http()
        .get(server.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for line in [
        "idyntra_jobs_due{kind=\"finalize\"} ",
        "idyntra_inference_breaker_open 0",
    ] {
        assert!(metrics.contains(line), "{line} missing from:\n{metrics}");
    }

    let finalized = http()
        .post(server.url(&format!("/v1/sessions/{}/finalize", capture.id)))
        .bearer_auth(key)
        .header("idempotency-key", "finalize-1")
        .send()
        .await
        .unwrap();
    assert_eq!(
        finalized.status(),
        200,
        "{}",
        finalized.text().await.unwrap()
    );
    let session: Value = finalized.json().await.unwrap();
    assert_eq!(session["status"], "verified", "{session}");
    let result = &session["result"];
    assert_eq!(result["decision"], "verified");
    assert_eq!(result["face_match"]["passed"], true);
    assert!(result["face_match"]["threshold"].as_f64().unwrap() > 0.0);
    assert_eq!(result["liveness"]["passed"], true);
    assert_eq!(result["engine"], "tract-cpu");
    assert!(result["timings_ms"]["total_ms"].as_f64().unwrap() > 0.0);
    let models = result["models"].as_array().unwrap();
    assert!(
        models
            .iter()
            .all(|m| m["sha256"].as_str().unwrap().len() == 64)
    );
    assert!(
        models
            .iter()
            .any(|m| m["name"].as_str().unwrap().contains("mobilefacenet")),
        "{models:?}"
    );
    // Both faces were scored for manipulation; the score is advisory by default.
    let manipulation = &result["manipulation"];
    assert_eq!(manipulation["method"], "self_blend_lr", "{result}");
    assert!(manipulation["signals"]["selfie"].is_number(), "{result}");
    assert!(manipulation["signals"]["document"].is_number(), "{result}");
    assert!(
        models.iter().any(|m| m["name"] == "self-blend-lr"),
        "{models:?}"
    );

    let verified = receiver
        .wait_for("session.verified", Duration::from_secs(20))
        .await;
    let jwks = idyntra_tests::jwks(&server.url("/.well-known/jwks.json")).await;
    for received in [&submitted, &verified] {
        check_signatures(received, &secret, &jwks);
    }
    let event: Value = serde_json::from_str(&verified.body).unwrap();
    assert_eq!(event["data"]["object"]["id"], capture.id.as_str());
    assert_eq!(event["data"]["object"]["result"]["decision"], "verified");
    assert!(event["data"]["object"].get("client_token").is_none());

    // Finalizing again answers the same result; GET shows it.
    let again: Value = http()
        .post(server.url(&format!("/v1/sessions/{}/finalize", capture.id)))
        .bearer_auth(key)
        .value()
        .await;
    assert_eq!(again["result"], session["result"]);
    let got: Value = http()
        .get(server.url(&format!("/v1/sessions/{}", capture.id)))
        .bearer_auth(key)
        .value()
        .await;
    assert_eq!(got["result"], session["result"]);

    let deliveries: Value = http()
        .get(server.url(&format!("/v1/webhook_endpoints/{endpoint}/deliveries")))
        .bearer_auth(key)
        .value()
        .await;
    let statuses: Vec<&str> = deliveries["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["status"].as_str().unwrap())
        .collect();
    assert!(
        statuses.len() >= 2 && statuses.iter().all(|s| *s == "delivered"),
        "{deliveries}"
    );

    // A canceled session is an event too.
    let (canceled, _, _) = session_with_nonce(&server, key).await;
    let answer = http()
        .post(server.url(&format!("/v1/sessions/{canceled}/cancel")))
        .bearer_auth(key)
        .answer()
        .await;
    assert_eq!(answer.status(), 200);
    let event = receiver
        .wait_for("session.canceled", Duration::from_secs(20))
        .await;
    assert!(event.body.contains(&canceled));

    // Redaction: the decision stays, the media is gone (and a new finalize has nothing to read).
    let redacted: Value = http()
        .post(server.url(&format!("/v1/sessions/{}/redact", capture.id)))
        .bearer_auth(key)
        .value()
        .await;
    assert!(redacted["redacted_at"].is_i64(), "{redacted}");
    assert_eq!(redacted["result"], session["result"]);
    receiver
        .wait_for("session.redacted", Duration::from_secs(20))
        .await;
    let stored = idyntra_tests::count_rows(&setup, "media", &capture.id).await
        + idyntra_tests::count_rows(&setup, "session_key", &capture.id).await;
    assert_eq!(stored, 0);
    server.stop();
}

#[tokio::test]
async fn the_whole_flow_on_the_embedded_default() {
    the_whole_flow(Setup::embedded()).await;
}

#[tokio::test]
async fn the_whole_flow_on_postgres_and_redis() {
    the_whole_flow(Setup::postgres_and_redis().await).await;
}

#[tokio::test]
async fn every_refused_upload_has_its_code_and_stores_nothing() {
    let mut setup = Setup::embedded();
    pipeline_setup(&mut setup);
    let server = setup.serve();
    let key = setup.create_key("acme", &[]);
    let key = key["secret"].as_str().unwrap();
    let other = setup.create_key("globex", &[]);
    let other = other["secret"].as_str().unwrap();
    let person = Person::obama();
    let secrets = secrets(&setup);
    let edge_key = EdKey::parse("edge-1", secrets["edge_signing_seed"].as_str().unwrap()).unwrap();
    let backend_key = EdKey::parse("backend-1", secrets["signing_seed"].as_str().unwrap()).unwrap();

    let a = attested(&server, key, &person).await;
    let b = attested(&server, key, &person).await;
    let good = upload_parts(&a.attestation, &a.parts);

    // A tampered selfie, a frame left out, an extra frame.
    let mut tampered = good.clone();
    let last = tampered[1].1.len() - 3;
    tampered[1].1[last] ^= 0x55;
    expect_problem(
        upload(&server, &a.id, &a.token, &tampered).await,
        422,
        "media_mismatch",
    )
    .await;
    let mut missing = good.clone();
    // The last challenge frame (the document is the last part).
    missing.remove(good.len() - 2);
    expect_problem(
        upload(&server, &a.id, &a.token, &missing).await,
        422,
        "media_missing",
    )
    .await;
    let mut extra = good.clone();
    extra.insert(2, ("selfie", good[1].1.clone()));
    expect_problem(
        upload(&server, &a.id, &a.token, &extra).await,
        422,
        "media_mismatch",
    )
    .await;
    // Another session's attestation, with this session's token.
    expect_problem(
        upload(&server, &b.id, &b.token, &good).await,
        422,
        "attestation_wrong_session",
    )
    .await;
    // Another session's token.
    expect_problem(
        upload(&server, &a.id, &b.token, &good).await,
        403,
        "client_token_wrong_session",
    )
    .await;
    // No token, a garbage attestation, no attestation part.
    let (content_type, body) = sample::body(&good);
    let anonymous = http()
        .post(server.url(&format!("/v1/sessions/{}/media", a.id)))
        .header("content-type", content_type)
        .body(body)
        .send()
        .await
        .unwrap();
    expect_problem(anonymous, 401, "client_token_missing").await;
    let mut garbage = good.clone();
    garbage[0].1 = b"not.a.jwt".to_vec();
    expect_problem(
        upload(&server, &a.id, &a.token, &garbage).await,
        422,
        "attestation_invalid",
    )
    .await;
    expect_problem(
        upload(&server, &a.id, &a.token, &good[1..]).await,
        400,
        "attestation_missing",
    )
    .await;

    // Attestations signed by the edge key but expired or for another nonce, and one signed by a
    // key nobody trusts.
    let claims = jwt_claims(&a.attestation);
    let mut expired = claims.clone();
    expired["iat"] = json!(now_secs() - 900);
    expired["exp"] = json!(now_secs() - 600);
    let mut other_nonce = claims.clone();
    other_nonce["nonce"] = json!("another-nonce");
    let stranger = EdKey::generate("edge-1").unwrap();
    for (signed, code) in [
        (
            jwt::sign(&expired, &edge_key).unwrap(),
            "attestation_expired",
        ),
        (
            jwt::sign(&other_nonce, &edge_key).unwrap(),
            "attestation_wrong_nonce",
        ),
        (
            jwt::sign(&claims, &stranger).unwrap(),
            "attestation_invalid",
        ),
        (
            jwt::sign(&claims, &EdKey::generate("edge-9").unwrap()).unwrap(),
            "attestation_unknown_key",
        ),
    ] {
        let parts = upload_parts(&signed, &a.parts);
        expect_problem(upload(&server, &a.id, &a.token, &parts).await, 422, code).await;
    }
    // An expired client token, signed by the backend's own key.
    let mut token_claims = jwt_claims(&a.token);
    token_claims["exp"] = json!(now_secs() - 60);
    let expired_token = jwt::sign(&token_claims, &backend_key).unwrap();
    expect_problem(
        upload(&server, &a.id, &expired_token, &good).await,
        401,
        "client_token_expired",
    )
    .await;

    // Nothing of the above was stored.
    assert_eq!(idyntra_tests::count_rows(&setup, "media", &a.id).await, 0);

    // Finalize before the upload; another account's key sees no session.
    let early = http()
        .post(server.url(&format!("/v1/sessions/{}/finalize", a.id)))
        .bearer_auth(key)
        .send()
        .await
        .unwrap();
    expect_problem(early, 409, "session_not_submitted").await;
    let foreign = http()
        .post(server.url(&format!("/v1/sessions/{}/finalize", a.id)))
        .bearer_auth(other)
        .send()
        .await
        .unwrap();
    expect_problem(foreign, 404, "not_found").await;

    // The good upload once; the same attestation again is a replay.
    let accepted = upload(&server, &a.id, &a.token, &good).await;
    assert_eq!(accepted.status(), 200, "{}", accepted.text().await.unwrap());
    assert!(idyntra_tests::count_rows(&setup, "media", &a.id).await >= 3);
    expect_problem(
        upload(&server, &a.id, &a.token, &good).await,
        409,
        "attestation_replayed",
    )
    .await;
    let _ = b.nonce;
}

#[tokio::test]
async fn a_killed_worker_loses_no_job_and_no_delivery() {
    let mut setup = Setup::postgres_and_redis().await;
    pipeline_setup(&mut setup);
    setup
        .set("IDYNTRA_JOBS__IN_SERVER", "false")
        .set("IDYNTRA_JOBS__LEASE", "2s")
        .set("IDYNTRA_INFERENCE__TIMEOUT", "2s")
        .set("IDYNTRA_WEBHOOKS__INITIAL_BACKOFF", "1s");
    let server = setup.serve();
    let key = setup.create_key("acme", &[]);
    let key = key["secret"].as_str().unwrap();
    // The receiver holds the first delivery open: the worker is killed while it waits.
    let receiver = WebhookReceiver::start(1).await;
    create_endpoint(&server, key, &receiver.url).await;
    let person = Person::obama();
    let capture = attested(&server, key, &person).await;
    submit(&server, &capture).await;

    let worker = setup.worker();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while receiver.received().is_empty() {
        assert!(std::time::Instant::now() < deadline, "no delivery attempt");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Mid-delivery.
    worker.stop();

    // An async finalize, and the worker killed while it decides.
    let accepted = http()
        .post(server.url(&format!("/v1/sessions/{}/finalize", capture.id)))
        .bearer_auth(key)
        .header("prefer", "respond-async")
        .send()
        .await
        .unwrap();
    assert_eq!(accepted.status(), 202);
    assert_eq!(accepted.headers()["preference-applied"], "respond-async");
    let worker = setup.worker();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let now = status(&server, key, &capture.id).await;
        if now == "processing" {
            break;
        }
        assert_eq!(
            now, "submitted",
            "decided before the worker could be killed"
        );
        assert!(std::time::Instant::now() < deadline, "never processing");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Mid-job.
    worker.stop();

    // A new worker finishes both: the lapsed leases give the jobs back.
    let _worker = setup.worker();
    receiver
        .wait_for("session.verified", Duration::from_secs(60))
        .await;
    let submitted: Vec<_> = receiver
        .received()
        .into_iter()
        .filter(|r| r.body.contains("\"type\":\"session.submitted\""))
        .collect();
    assert!(submitted.len() >= 2, "the held delivery was sent again");
    assert_eq!(status(&server, key, &capture.id).await, "verified");
}

/// A synchronous finalize that runs past `decision.sync_deadline` answers `202`, a promise that a
/// job backs: the server killed right after answering still leaves the session decided.
#[tokio::test]
async fn a_202_is_kept_when_the_server_dies_after_answering() {
    let mut setup = Setup::postgres_and_redis().await;
    pipeline_setup(&mut setup);
    setup
        .set("IDYNTRA_JOBS__IN_SERVER", "false")
        .set("IDYNTRA_DECISION__SYNC_DEADLINE", "1ms")
        .set("IDYNTRA_INFERENCE__TIMEOUT", "2s");
    let server = setup.serve();
    let key = setup.create_key("acme", &[]);
    let key = key["secret"].as_str().unwrap();
    let capture = attested(&server, key, &Person::obama()).await;
    submit(&server, &capture).await;
    let answer = http()
        .post(server.url(&format!("/v1/sessions/{}/finalize", capture.id)))
        .bearer_auth(key)
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 202, "past the deadline");
    // Killed mid-decision: the decision the server had begun dies with it.
    server.stop();

    let server = setup.serve();
    let left = status(&server, key, &capture.id).await;
    assert!(
        left == "processing" || left == "submitted",
        "decided before the server was killed: {left}"
    );
    let _worker = setup.worker();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while status(&server, key, &capture.id).await != "verified" {
        assert!(
            std::time::Instant::now() < deadline,
            "the 202 was never kept"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// A passive session on a server whose edge records the passive presentation-attack score: the
/// attestation carries it, the result shows it, and, advisory by default, it decides nothing; as
/// evidence, it is the session's liveness.
#[tokio::test]
async fn a_recorded_passive_score_is_shown_and_counts_only_when_the_policy_says() {
    for (counted, threshold) in [(false, "0"), (true, "0"), (true, "1")] {
        let mut setup = Setup::embedded();
        pipeline_setup(&mut setup);
        setup
            .set("IDYNTRA_EDGE__PASSIVE_PAD", "record")
            .set("IDYNTRA_EDGE__PASSIVE_PAD_THRESHOLD", threshold)
            .set(
                "IDYNTRA_DECISION__PASSIVE_PAD",
                if counted { "evidence" } else { "advisory" },
            );
        let server = setup.serve();
        let key = setup.create_key("acme", &[]);
        let key = key["secret"].as_str().unwrap();
        let selfie = std::fs::read(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../shared/fixtures/faces/img1.jpg"
        ))
        .unwrap();
        let document = std::fs::read(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../shared/fixtures/faces/img2.jpg"
        ))
        .unwrap();
        let (id, token, body) =
            idyntra_tests::flow::attested(&server.url(""), key, &selfie, &document)
                .await
                .unwrap();
        let uploaded = idyntra_tests::flow::post_form(
            server.url(&format!("/v1/sessions/{id}/media")),
            &token,
            body,
        )
        .await
        .unwrap();
        assert_eq!(uploaded.status(), 200);
        let result: Value = http()
            .post(server.url(&format!("/v1/sessions/{id}/finalize")))
            .bearer_auth(key)
            .value()
            .await;
        let result = &result["result"];
        let pad = &result["passive_pad"];
        assert_eq!(pad["method"], "passive_dtn", "{result}");
        assert_eq!(pad["passed"], threshold == "0", "{result}");
        let models: Vec<&str> = result["models"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["name"].as_str().unwrap())
            .collect();
        assert!(models.contains(&"antispoofing"), "{models:?}");
        let reasons = result["reasons"].to_string();
        match (counted, threshold) {
            (false, _) => {
                assert!(result["liveness"].is_null(), "{result}");
                assert!(reasons.contains("liveness_not_checked"), "{reasons}");
                assert_eq!(result["decision"], "needs_review");
            }
            (true, "0") => {
                assert_eq!(result["liveness"], *pad);
                assert_eq!(result["decision"], "verified", "{reasons}");
            }
            _ => {
                assert!(reasons.contains("liveness_failed"), "{reasons}");
                assert_eq!(result["decision"], "rejected");
            }
        }
    }
}
