//! The compose files (`deploy/compose/`): `docker compose config` (or Debian's `docker-compose`,
//! which checks the same Compose Specification schema) validates both; the production file keeps
//! its promises (limits, restart policies, secrets as files, internal networks, hardened
//! containers); and its settings start the real binary in the `prod` profile, with secrets read
//! from files, on PostgreSQL and Redis.
#![allow(clippy::unwrap_used)] // Test code: a failed unwrap is a failed test.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use idyntra_tests::{Setup, fresh_postgres_database, http, redis_url};
use reqwest::StatusCode;
use serde_json::Value;

fn compose_dir() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../deploy/compose"))
}

const PUBLIC_HOST: &str = "api.example.com";
const APP_ORIGIN: &str = "https://app.example.com";

/// `docker compose -f <file> config` with the plugin, else `docker-compose`; fails loudly with
/// neither (`.ci/run` installs Debian's `docker-compose`).
fn compose_config(file: &str, env: &[(&str, &str)]) -> Output {
    let plugin = Command::new("docker")
        .args(["compose", "version"])
        .output()
        .is_ok_and(|output| output.status.success());
    let mut command = if plugin {
        let mut command = Command::new("docker");
        command.arg("compose");
        command
    } else {
        Command::new("docker-compose")
    };
    command
        .current_dir(compose_dir())
        .args(["-f", file, "config"])
        .env_remove("IDYNTRA_PUBLIC_HOST")
        .env_remove("IDYNTRA_APP_ORIGIN")
        .envs(env.iter().copied());
    command.output().unwrap_or_else(|error| {
        panic!(
            "neither `docker compose` nor `docker-compose` runs ({error}); install docker-compose"
        )
    })
}

/// The resolved configuration as JSON (PyYAML comes with docker-compose).
fn resolved(file: &str, env: &[(&str, &str)]) -> Value {
    let output = compose_config(file, env);
    assert!(
        output.status.success(),
        "{file} is invalid:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let mut python = Command::new("python3")
        .args([
            "-c",
            "import json, sys, yaml; json.dump(yaml.safe_load(sys.stdin), sys.stdout)",
        ])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(&mut python.stdin.take().unwrap(), &output.stdout).unwrap();
    let json = python.wait_with_output().unwrap();
    assert!(json.status.success(), "PyYAML could not read the output");
    serde_json::from_slice(&json.stdout).unwrap()
}

fn production() -> Value {
    resolved(
        "docker-compose.production.yml",
        &[
            ("IDYNTRA_PUBLIC_HOST", PUBLIC_HOST),
            ("IDYNTRA_APP_ORIGIN", APP_ORIGIN),
        ],
    )
}

fn names(object: &Value) -> Vec<String> {
    let mut names: Vec<String> = object.as_object().unwrap().keys().cloned().collect();
    names.sort();
    names
}

#[test]
fn the_local_file_validates_and_has_every_service() {
    let local = resolved("docker-compose.yml", &[]);
    let services = names(&local["services"]);
    for service in [
        "backend",
        "worker",
        "postgres",
        "redis",
        "nginx",
        "prometheus",
        "grafana",
    ] {
        assert!(services.contains(&service.to_owned()), "{service} missing");
    }
}

#[test]
fn the_production_file_validates_and_refuses_to_guess_the_public_names() {
    let services = names(&production()["services"]);
    for service in [
        "backend",
        "worker",
        "postgres",
        "redis",
        "nginx",
        "prometheus",
        "grafana",
    ] {
        assert!(services.contains(&service.to_owned()), "{service} missing");
    }
    let missing = compose_config("docker-compose.production.yml", &[]);
    assert!(!missing.status.success());
    assert!(
        String::from_utf8_lossy(&missing.stderr).contains("IDYNTRA_PUBLIC_HOST"),
        "{}",
        String::from_utf8_lossy(&missing.stderr)
    );
}

#[test]
fn production_services_are_limited_restarted_and_hardened() {
    let config = production();
    for (name, service) in config["services"].as_object().unwrap() {
        let limits = &service["deploy"]["resources"]["limits"];
        if name != "migrate" {
            assert!(
                limits["cpus"].is_string() || limits["cpus"].is_number(),
                "{name}: no CPU limit"
            );
            assert!(limits["memory"].is_string(), "{name}: no memory limit");
            assert_eq!(service["restart"], "always", "{name}: restart policy");
        }
        // Only the proxy and Grafana (on loopback) are reachable from the host.
        if let Some(ports) = service["ports"].as_array() {
            assert!(
                ["nginx", "grafana"].contains(&name.as_str()),
                "{name} publishes ports"
            );
            if name == "grafana" {
                assert!(
                    ports
                        .iter()
                        .all(|port| port.to_string().contains("127.0.0.1"))
                );
            }
        }
        // Secrets only as files: no variable of any service carries one.
        if let Some(environment) = service["environment"].as_object() {
            for (variable, value) in environment {
                let secret_like = ["PASSWORD", "PEPPER", "PRIVATE_KEY", "MASTER_KEY", "URL"]
                    .iter()
                    .any(|word| variable.contains(word));
                if secret_like {
                    assert!(
                        variable.ends_with("_FILE") || variable.ends_with("__FILE"),
                        "{name}: {variable} is not read from a file"
                    );
                    assert!(value.as_str().unwrap().starts_with("/run/secrets/"));
                }
            }
        }
    }
    for name in ["migrate", "backend", "worker"] {
        let service = &config["services"][name];
        assert_eq!(service["read_only"], true, "{name}: read-only root");
        assert_eq!(service["user"], "65532:65532", "{name}: unprivileged user");
        assert_eq!(service["cap_drop"], serde_json::json!(["ALL"]), "{name}");
        assert!(
            service["security_opt"]
                .to_string()
                .contains("no-new-privileges:true")
        );
    }
    // The data stores and the API have no route out; the proxy is the only way in.
    for network in ["data", "proxy", "monitoring"] {
        assert_eq!(config["networks"][network]["internal"], true, "{network}");
    }
    for name in ["postgres", "redis"] {
        assert_eq!(
            names(&config["services"][name]["networks"]),
            vec!["data".to_owned()],
            "{name} is reachable from outside the data network"
        );
    }
}

/// Writes `content` as a secret file and returns its path.
fn secret(dir: &Path, name: &str, content: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, content).unwrap();
    path.display().to_string()
}

fn ed25519_pem(dir: &Path, name: &str) -> String {
    let path = dir.join(name);
    let status = Command::new("openssl")
        .args(["genpkey", "-algorithm", "ed25519", "-out"])
        .arg(&path)
        .status()
        .unwrap();
    assert!(status.success(), "openssl genpkey");
    path.display().to_string()
}

/// The backend's environment from the production file, with each `/run/secrets/<name>` replaced by
/// a real file, on a fresh PostgreSQL database and Redis: `migrate`, `serve` and `worker` start in
/// the `prod` profile and are ready; the API serves only the public name.
#[tokio::test(flavor = "multi_thread")]
async fn the_production_settings_start_the_real_binary() {
    let config = production();
    let secrets_dir = tempfile::tempdir().unwrap();
    let dir = secrets_dir.path();
    let files = [
        (
            "database_url",
            secret(
                dir,
                "database_url",
                &format!("{}\n", fresh_postgres_database().await),
            ),
        ),
        (
            "redis_url",
            secret(dir, "redis_url", &format!("{}\n", redis_url())),
        ),
        (
            "api_keys_pepper",
            secret(
                dir,
                "api_keys_pepper",
                "cHJvZHVjdGlvbi1wZXBwZXItZm9yLXRoZS1jb21wb3NlLXRlc3Q=\n",
            ),
        ),
        ("signing_key", ed25519_pem(dir, "signing_key.pem")),
        ("edge_key", ed25519_pem(dir, "edge_key.pem")),
        (
            "media_master_key",
            secret(
                dir,
                "media_master_key",
                "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=\n",
            ),
        ),
    ];
    let mut setup = Setup::embedded();
    for (variable, value) in config["services"]["backend"]["environment"]
        .as_object()
        .unwrap()
    {
        let value = value.as_str().unwrap();
        let value = match value.strip_prefix("/run/secrets/") {
            Some(name) => files
                .iter()
                .find(|(secret, _)| *secret == name)
                .unwrap_or_else(|| panic!("no test file for the secret {name}"))
                .1
                .clone(),
            None => value.to_owned(),
        };
        setup.set(variable, &value);
    }
    setup.set(
        "IDYNTRA_REDIS_KEY_PREFIX",
        &format!("compose:{}:", uuid::Uuid::new_v4().simple()),
    );
    assert_eq!(setup_value(&setup, "IDYNTRA_PROFILE"), "prod");

    let migrated = setup.cli(&["migrate"]);
    assert!(migrated.status.success(), "{migrated:?}");
    let server = setup.serve();
    let worker = setup.worker();
    let client = http();
    let public = |path: &str| {
        client
            .get(server.url(path))
            .header("host", PUBLIC_HOST)
            .send()
    };
    let ready: Value = public("/readyz").await.unwrap().json().await.unwrap();
    assert_eq!(ready["status"], "ready", "{ready}");
    assert_eq!(ready["checks"]["redis"], "ok", "{ready}");
    let other_host = client
        .get(server.url("/v1/sessions"))
        .header("host", "attacker.example")
        .send()
        .await
        .unwrap();
    assert_eq!(other_host.status(), StatusCode::BAD_REQUEST);
    let no_key = public("/v1/sessions").await.unwrap();
    assert_eq!(no_key.status(), StatusCode::UNAUTHORIZED);
    // The JWKS publishes the signing key and the embedded edge's key read from the files.
    let jwks: Value = public("/.well-known/jwks.json")
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(jwks["keys"].as_array().unwrap().len(), 2, "{jwks}");
    let worker_ready = client.get(worker.url("/readyz")).send().await.unwrap();
    assert_eq!(worker_ready.status(), StatusCode::OK);
}

fn setup_value(setup: &Setup, name: &str) -> String {
    setup
        .env
        .iter()
        .find(|(variable, _)| variable == name)
        .map(|(_, value)| value.clone())
        .unwrap_or_default()
}
