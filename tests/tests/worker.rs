//! The edge as a Cloudflare Worker, served by `wrangler dev` (workerd, from npm; built by
//! `edge/worker/build.sh` through the root `wrangler.toml`). A session's client token from the real
//! backend gets a live capture attested by the Worker, by `idyntra edge serve` and by the edge
//! embedded in `idyntra serve`; one backend verifier accepts all three. The first run builds the
//! Worker (tools pinned in `edge/worker/package.json`, `worker-build` from crates.io): minutes.
#![allow(clippy::unwrap_used)] // Test code: a failed unwrap is a failed test.

use std::io::{BufRead, BufReader};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use idyntra_edge::{AttestationVerifier, KeySet, sample};
use idyntra_models::liveness_samples::Answer;
use idyntra_tests::{Setup, http, registry_photo_bytes, session_with_nonce as session};
use idyntra_types::JwkSet;
use serde_json::Value;

fn repository() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
}

/// `wrangler dev` on a free port, stopped when dropped.
struct Worker {
    child: Child,
    base_url: String,
}

impl Drop for Worker {
    fn drop(&mut self) {
        stop(&mut self.child);
    }
}

/// Stops wrangler and everything it started: it runs workerd and esbuild as children of its
/// own, which outlive a kill of wrangler alone.
fn stop(child: &mut Child) {
    let _ = Command::new("kill")
        .args(["-KILL", "--", &format!("-{}", child.id())])
        .status();
    let _ = child.kill();
    let _ = child.wait();
}

impl Worker {
    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base_url)
    }

    /// Serves the Worker with `vars`, its Durable Objects' storage under `state`.
    fn start(vars: &[(&str, String)], state: &Path) -> Self {
        let root = repository();
        let status = Command::new("bash")
            .arg(root.join("edge/worker/build.sh"))
            .arg("tools")
            .status()
            .unwrap();
        assert!(status.success(), "installing the Worker tools failed");
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut command = Command::new(root.join("edge/worker/node_modules/.bin/wrangler"));
        command
            .current_dir(&root)
            .args([
                "dev",
                "--local",
                "--ip",
                "127.0.0.1",
                "--port",
                &port.to_string(),
            ])
            .args([
                "--inspector-port",
                "0",
                "--show-interactive-dev-session=false",
            ])
            .arg("--persist-to")
            .arg(state)
            .env("WRANGLER_SEND_METRICS", "false")
            .env("CLOUDFLARE_CF_FETCH_ENABLED", "false")
            .env("IDYNTRA_WORKER_PROFILE", "dev")
            // A group of its own, so that `stop` reaches wrangler's children too.
            .process_group(0)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for (name, value) in vars {
            command.arg("--var").arg(format!("{name}:{value}"));
        }
        let mut child = command.spawn().expect("wrangler runs");
        let log = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
        for stream in [
            Box::new(child.stdout.take().unwrap()) as Box<dyn std::io::Read + Send>,
            Box::new(child.stderr.take().unwrap()),
        ] {
            let log = log.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stream).lines().map_while(Result::ok) {
                    log.lock().unwrap().push_str(&(line + "\n"));
                }
            });
        }
        let base_url = format!("http://127.0.0.1:{port}");
        // The first start builds the Worker.
        let deadline = Instant::now() + Duration::from_secs(45 * 60);
        loop {
            let ready = healthy(port);
            if ready {
                return Self { child, base_url };
            }
            if Instant::now() > deadline || child.try_wait().unwrap().is_some() {
                stop(&mut child);
                panic!(
                    "wrangler dev did not serve the Worker:\n{}",
                    log.lock().unwrap()
                );
            }
            std::thread::sleep(Duration::from_millis(500));
        }
    }
}

/// Whether `GET /healthz` answers 200 on `port`.
fn healthy(port: u16) -> bool {
    use std::io::{Read, Write};
    let Ok(mut stream) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
    let mut answer = [0u8; 12];
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .and_then(|()| stream.read_exact(&mut answer))
        .is_ok_and(|()| answer.starts_with(b"HTTP/1.1 200"))
}

async fn jwks(url: String) -> JwkSet {
    serde_json::from_value(idyntra_tests::jwks(&url).await).unwrap()
}

async fn post(
    url: String,
    token: Option<&str>,
    content_type: &str,
    body: Vec<u8>,
) -> reqwest::Response {
    let mut request = http()
        .post(url)
        .header("content-type", content_type)
        .body(body);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    request.send().await.unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn the_worker_and_both_native_hosts_attest_and_one_verifier_accepts_them_all() {
    let setup = Setup::embedded();
    let backend = setup.serve();
    let edge = setup.serve_edge();
    let key = setup.create_key("acme", &[]);
    let key = key["secret"].as_str().unwrap();
    let backend_keys = jwks(backend.url("/.well-known/jwks.json")).await;
    // The Worker trusts the backend's client-token key and signs with its own.
    let client_token_keys = JwkSet {
        keys: backend_keys
            .keys
            .iter()
            .filter(|jwk| jwk.kid.starts_with("backend"))
            .cloned()
            .collect(),
    };
    let worker_key = idyntra_edge::EdKey::generate("worker-1").unwrap();
    let vars = [
        ("EDGE_PRIVATE_KEY", worker_key.seed_base64()),
        ("EDGE_KID", "worker-1".to_owned()),
        (
            "CLIENT_TOKEN_JWKS",
            serde_json::to_string(&client_token_keys).unwrap(),
        ),
        ("MAX_BODY_BYTES", "4000000".to_owned()),
        ("ALLOWED_ORIGINS", "https://app.example.com".to_owned()),
    ];
    let state = tempfile::tempdir().unwrap();
    let start = {
        let state = state.path().to_owned();
        move || Worker::start(&vars, &state)
    };
    let worker = tokio::task::spawn_blocking(start.clone()).await.unwrap();

    let mut keys = jwks(worker.url("/.well-known/jwks.json")).await;
    assert_eq!(keys.keys.len(), 1);
    keys.keys
        .extend(jwks(edge.url("/.well-known/jwks.json")).await.keys);
    keys.keys.extend(
        backend_keys
            .keys
            .into_iter()
            .filter(|jwk| !jwk.kid.starts_with("backend")),
    );
    keys.keys.sort_by(|a, b| a.kid.cmp(&b.kid));
    keys.keys.dedup();
    let verifier = AttestationVerifier::new(
        KeySet::from_jwks(&keys).unwrap(),
        &["idyntra-edge".to_owned()],
    );

    let frame = |name: &str| {
        let photo = image::load_from_memory(&registry_photo_bytes(name))
            .unwrap()
            .to_rgb8();
        sample::camera_frame(&photo, 480)
    };
    let (frontal, turned) = (frame("obama.jpg"), frame("obama2.jpg"));
    let document = registry_photo_bytes("obama.jpg");
    for host in [
        worker.base_url.clone(),
        edge.base_url.clone(),
        backend.base_url.clone(),
    ] {
        let (session_id, token, nonce) = session(&backend, key).await;
        let parts = sample::active_parts(&nonce, Answer::Live, &frontal, &turned, Some(&document));
        let (content_type, body) = sample::body(&parts);
        let response = post(
            format!("{host}/v1/attest"),
            Some(&token),
            &content_type,
            body,
        )
        .await;
        assert_eq!(
            response.status(),
            200,
            "{host}: {}",
            response.text().await.unwrap()
        );
        let answer: Value = response.json().await.unwrap();
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
            .unwrap_or_else(|e| panic!("{host}: {e}"));
        assert!(claims.checks.liveness.challenge.unwrap().passed, "{host}");
    }

    // The Worker refuses a request without a token (401) and an oversized one (413).
    let (_, token, _) = session(&backend, key).await;
    let (content_type, body) = sample::body(&[("selfie", document.clone())]);
    let unauthorized = post(worker.url("/v1/attest"), None, &content_type, body).await;
    assert_eq!(unauthorized.status(), 401);
    assert_eq!(
        unauthorized.headers()["content-type"],
        "application/problem+json"
    );
    let problem: Value = unauthorized.json().await.unwrap();
    assert_eq!(problem["code"], "client_token_missing");
    let (content_type, body) = sample::body(&[("selfie", vec![0u8; 4_100_000])]);
    let too_large = post(worker.url("/v1/attest"), Some(&token), &content_type, body).await;
    assert_eq!(too_large.status(), 413);
    // CORS from the allow-list only.
    for (origin, allowed) in [
        ("https://app.example.com", true),
        ("https://evil.example", false),
    ] {
        let response = http()
            .get(worker.url("/healthz"))
            .header("origin", origin)
            .send()
            .await
            .unwrap();
        let allow = response
            .headers()
            .get("access-control-allow-origin")
            .is_some();
        assert_eq!(allow, allowed, "{origin}");
    }

    // Failures are counted in the abuse ledger's Durable Objects, not in the isolate: 5 refused
    // tokens (the request without one above was the first) lock the client out, and a new
    // isolate (the Worker restarted over the same storage) still refuses it.
    let (content_type, body) = sample::body(&[]);
    for _ in 0..4 {
        let refused = post(
            worker.url("/v1/attest"),
            Some("not-a-token"),
            &content_type,
            body.clone(),
        )
        .await;
        assert_eq!(refused.status(), 401);
    }
    drop(worker);
    let worker = tokio::task::spawn_blocking(start).await.unwrap();
    let (_, token, _) = session(&backend, key).await;
    let locked = post(worker.url("/v1/attest"), Some(&token), &content_type, body).await;
    assert_eq!(locked.status(), 429);
    assert!(locked.headers().contains_key("retry-after"));
    let problem: Value = locked.json().await.unwrap();
    assert_eq!(problem["code"], "too_many_failures");

    // The build wrangler served links BlazeFace and nothing bigger: the passive model (4.1 MB)
    // is for native hosts only, and a reference to its bytes from code the Worker runs would
    // ship them in every isolate.
    let wasm = std::fs::read(repository().join("edge/build/index_bg.wasm")).unwrap();
    assert!(holds_middle_of(
        &wasm,
        idyntra_models::bundled::BLAZEFACE_SHORT_RANGE.onnx
    ));
    assert!(!holds_middle_of(
        &wasm,
        idyntra_models::bundled::ANTISPOOFING.onnx
    ));
}

/// Whether `haystack` holds the 64 bytes from the middle of `file` (a model's weights).
fn holds_middle_of(haystack: &[u8], file: &[u8]) -> bool {
    let middle = &file[file.len() / 2..file.len() / 2 + 64];
    haystack
        .windows(middle.len())
        .any(|window| window == middle)
}
