//! The monitoring files (`deploy/prometheus`, `deploy/grafana`): promtool accepts the scrape
//! configuration and the alert rules, the rules' unit tests pass (each alert fires on the series
//! it is for and stays quiet on a healthy service), and every `idyntra_*` metric an alert or a
//! dashboard panel asks for is one the running server exports. Needs promtool (Debian:
//! `apt-get install prometheus`).
#![allow(clippy::unwrap_used)] // Test code: a failed unwrap is a failed test.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::Command;

use idyntra_tests::{Setup, http};

fn deploy() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../deploy"))
}

fn promtool(args: &[&str]) {
    let output = Command::new("promtool")
        .args(args)
        .current_dir(deploy().join("prometheus"))
        .output()
        .expect("promtool is missing: apt-get install prometheus");
    assert!(
        output.status.success(),
        "promtool {args:?}:\n{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

#[test]
fn promtool_accepts_the_configuration_and_the_alerts_fire_when_they_should() {
    promtool(&["check", "config", "prometheus.yml"]);
    promtool(&["check", "rules", "alerts.yml"]);
    promtool(&["test", "rules", "alerts.test.yml"]);
}

/// The `idyntra_*` metric families named in `text` (histogram and counter suffixes removed).
fn metric_names(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut rest = text;
    while let Some(start) = rest.find("idyntra_") {
        let tail = &rest[start..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        let name = &tail[..end];
        let family = ["_bucket", "_count", "_sum", "_total"]
            .iter()
            .find_map(|suffix| name.strip_suffix(suffix))
            .unwrap_or(name);
        names.insert(family.to_owned());
        rest = &tail[end..];
    }
    names
}

#[tokio::test]
async fn alerts_and_dashboard_ask_only_for_metrics_the_server_exports() {
    let setup = Setup::embedded();
    let server = setup.serve();
    let exported = http()
        .get(server.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let exported: BTreeSet<String> = exported
        .lines()
        .filter_map(|line| line.strip_prefix("# TYPE "))
        .filter_map(|line| line.split_whitespace().next())
        .map(str::to_owned)
        .collect();
    let alerts = std::fs::read_to_string(deploy().join("prometheus/alerts.yml")).unwrap();
    let dashboard = std::fs::read_to_string(deploy().join("grafana/idyntra.json")).unwrap();
    let panels: serde_json::Value = serde_json::from_str(&dashboard).unwrap();
    assert!(!panels["panels"].as_array().unwrap().is_empty());
    let asked: BTreeSet<String> = metric_names(&alerts)
        .into_iter()
        .chain(metric_names(&dashboard))
        .collect();
    let missing: Vec<&String> = asked.difference(&exported).collect();
    assert!(
        missing.is_empty(),
        "not exported: {missing:?} (exported: {exported:?})"
    );
    // Every exported family is on the dashboard.
    let on_dashboard = metric_names(&dashboard);
    let unseen: Vec<&String> = exported.difference(&on_dashboard).collect();
    assert!(unseen.is_empty(), "not on the dashboard: {unseen:?}");
}
