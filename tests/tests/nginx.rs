//! `deploy/nginx/templates/idyntra.conf.template` for real: Debian's nginx on loopback, with a
//! throwaway certificate, in front of `idyntra serve` (which trusts it as its proxy). Plain HTTP is
//! redirected, HTTPS answers with HSTS, a whole verification (session, capture attested by the
//! embedded edge, media upload, finalize) goes through it, and an `X-Forwarded-For` a client forges
//! is not believed. Needs nginx (`apt-get install nginx-light`) and openssl.
#![allow(clippy::unwrap_used)] // Test code: a failed unwrap is a failed test.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use idyntra_edge::sample;
use idyntra_models::liveness_samples::Answer;
use idyntra_tests::{Setup, jwt_claims, registry_photo_bytes};
use reqwest::StatusCode;
use serde_json::{Value, json};

const NGINX: &str = "/usr/sbin/nginx";

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

struct Nginx {
    child: Child,
    dir: PathBuf,
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Nginx {
    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("error.log")).unwrap_or_default()
    }
}

fn openssl(dir: &Path, args: &[&str]) {
    let status = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .stderr(Stdio::null())
        .status()
        .expect("openssl runs");
    assert!(status.success(), "openssl {args:?}");
}

/// A throwaway CA (`ca.crt`, which the client trusts) and a certificate it issued for
/// `localhost`, valid one day: `(cert, key)` paths.
fn certificate(dir: &Path) -> (PathBuf, PathBuf) {
    let curve = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    let mut ca = vec!["req", "-x509"];
    ca.extend(curve);
    ca.extend([
        "-days",
        "1",
        "-subj",
        "/CN=idyntra test CA",
        "-keyout",
        "ca.key",
        "-out",
        "ca.crt",
    ]);
    openssl(dir, &ca);
    let mut request = vec!["req"];
    request.extend(curve);
    request.extend([
        "-subj",
        "/CN=localhost",
        "-keyout",
        "tls.key",
        "-out",
        "tls.csr",
    ]);
    openssl(dir, &request);
    std::fs::write(
        dir.join("tls.ext"),
        "subjectAltName=DNS:localhost\nbasicConstraints=critical,CA:FALSE\nextendedKeyUsage=serverAuth\n",
    )
    .unwrap();
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            "tls.csr",
            "-CA",
            "ca.crt",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "1",
            "-extfile",
            "tls.ext",
            "-out",
            "tls.crt",
        ],
    );
    (dir.join("tls.crt"), dir.join("tls.key"))
}

/// nginx with the template rendered as the official image would, in front of `upstream`.
fn nginx(dir: &Path, upstream: &str, http_port: u16, https_port: u16) -> Nginx {
    assert!(
        Path::new(NGINX).exists(),
        "{NGINX} is missing: apt-get install nginx-light"
    );
    let (cert, key) = certificate(dir);
    let template = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../deploy/nginx/templates/idyntra.conf.template"
    ))
    .unwrap();
    let site = template
        .replace("${IDYNTRA_UPSTREAM}", upstream)
        .replace("${IDYNTRA_SERVER_NAME}", "localhost")
        .replace("${NGINX_HTTP_PORT}", &http_port.to_string())
        .replace("${NGINX_HTTPS_PORT}", &https_port.to_string())
        .replace("${TLS_CERT}", cert.to_str().unwrap())
        .replace("${TLS_KEY}", key.to_str().unwrap());
    assert!(!site.contains("${"), "a variable was left: {site}");
    std::fs::write(dir.join("idyntra.conf"), site).unwrap();
    let d = dir.display();
    std::fs::write(
        dir.join("nginx.conf"),
        format!(
            "master_process off;\nerror_log {d}/error.log warn;\npid {d}/nginx.pid;\ndaemon off;\n\
             events {{ worker_connections 256; }}\n\
             http {{\n  access_log off;\n  client_body_temp_path {d}/body;\n  proxy_temp_path {d}/proxy;\n  \
             fastcgi_temp_path {d}/fastcgi;\n  uwsgi_temp_path {d}/uwsgi;\n  scgi_temp_path {d}/scgi;\n  \
             include {d}/idyntra.conf;\n}}\n"
        ),
    )
    .unwrap();
    // One process, no master: killing it when the test ends leaves no orphaned worker behind
    // holding the ports.
    let child = Command::new(NGINX)
        .arg("-p")
        .arg(dir)
        .arg("-c")
        .arg(dir.join("nginx.conf"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("nginx starts");
    let nginx = Nginx {
        child,
        dir: dir.to_owned(),
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", https_port)).is_err() {
        assert!(
            Instant::now() < deadline,
            "nginx did not listen: {}",
            nginx.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    nginx
}

#[tokio::test]
async fn nginx_terminates_tls_redirects_and_passes_only_the_real_client_address() {
    let dir = tempfile::tempdir().unwrap();
    let mut setup = Setup::embedded();
    setup
        .set("IDYNTRA_HTTP__TRUSTED_PROXIES", "[\"127.0.0.1/32\"]")
        .set("IDYNTRA_HTTP__ALLOWED_HOSTS", "[\"localhost\"]")
        // A small per-client limit shows whose address the application counts.
        .set("IDYNTRA_RATE_LIMIT__PER_IP__REQUESTS", "30")
        .set("IDYNTRA_RATE_LIMIT__PER_IP__WINDOW", "1m");
    let server = setup.serve();
    let upstream = server.base_url.trim_start_matches("http://").to_owned();
    let (http_port, https_port) = (free_port(), free_port());
    let proxy = nginx(dir.path(), &upstream, http_port, https_port);
    let cert = std::fs::read(dir.path().join("ca.crt")).unwrap();
    let client = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(&cert).unwrap())
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(60))
        .build()
        .unwrap();
    let https = |path: &str| format!("https://localhost:{https_port}{path}");

    // Plain HTTP only redirects.
    let plain = client
        .get(format!("http://localhost:{http_port}/v1/sessions"))
        .send()
        .await
        .unwrap();
    assert_eq!(plain.status(), StatusCode::MOVED_PERMANENTLY);
    assert_eq!(plain.headers()["location"], "https://localhost/v1/sessions");
    let health = client.get(https("/healthz")).send().await.unwrap();
    assert_eq!(health.status(), StatusCode::OK, "{}", proxy.log());
    assert_eq!(
        health.headers()["strict-transport-security"],
        "max-age=63072000; includeSubDomains; preload"
    );
    assert_eq!(
        client.get(https("/metrics")).send().await.unwrap().status(),
        StatusCode::NOT_FOUND
    );

    // A whole verification through the proxy.
    let key = setup.create_key("acme", &[]);
    let key = key["secret"].as_str().unwrap();
    let session: Value = client
        .post(https("/v1/sessions"))
        .bearer_auth(key)
        .json(&json!({}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let (id, token) = (
        session["id"].as_str().unwrap(),
        session["client_token"].as_str().unwrap(),
    );
    let claims = jwt_claims(token);
    let frame = |name: &str| {
        let photo = image::load_from_memory(&registry_photo_bytes(name))
            .unwrap()
            .to_rgb8();
        sample::camera_frame(&photo, 480)
    };
    let document = registry_photo_bytes("obama.jpg");
    let parts = sample::active_parts(
        claims["nonce"].as_str().unwrap(),
        Answer::Live,
        &frame("obama.jpg"),
        &frame("obama2.jpg"),
        Some(&document),
    );
    let (content_type, body) = sample::body(&parts);
    let attested = client
        .post(https("/v1/attest"))
        .bearer_auth(token)
        .header("content-type", content_type)
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(attested.status(), StatusCode::OK, "{}", proxy.log());
    let attestation: Value = attested.json().await.unwrap();
    let mut upload = vec![(
        "attestation",
        attestation["attestation"]
            .as_str()
            .unwrap()
            .as_bytes()
            .to_vec(),
    )];
    upload.extend(parts.into_iter().filter(|(name, _)| *name != "timeline"));
    let (content_type, body) = sample::body(&upload);
    let uploaded = client
        .post(https(&format!("/v1/sessions/{id}/media")))
        .bearer_auth(token)
        .header("content-type", content_type)
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(uploaded.status(), StatusCode::OK);
    let decided: Value = client
        .post(https(&format!("/v1/sessions/{id}/finalize")))
        .bearer_auth(key)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(
        decided["result"]["face_match"]["passed"] == true,
        "{decided}"
    );

    // Every request forges another client address: counted as one client all the same.
    let mut limited = false;
    for i in 0..40 {
        let answer = client
            .get(https(&format!("/v1/sessions/{id}")))
            .bearer_auth(key)
            .header("x-forwarded-for", format!("203.0.113.{i}"))
            .send()
            .await
            .unwrap();
        if answer.status() == StatusCode::TOO_MANY_REQUESTS {
            limited = true;
            break;
        }
        assert_eq!(answer.status(), StatusCode::OK);
    }
    assert!(limited, "forged X-Forwarded-For addresses were believed");
    drop(proxy);
    drop(server);
}
