//! The API keeps the contract its own `/openapi.json` states: schemathesis (pinned with hashes from
//! PyPI) runs its examples, coverage and fuzzing phases with every check against a real server —
//! no 5xx, every status and body documented, schema-valid requests accepted, schema-invalid ones
//! refused.
#![allow(clippy::unwrap_used)] // Test code: a failed unwrap is a failed test.

use std::path::PathBuf;
use std::process::Command;

use idyntra_tests::Setup;

fn tools() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/tools"))
}

/// schemathesis in a virtual environment, installed once per target dir.
fn schemathesis() -> PathBuf {
    idyntra_tests::fetch_tool(
        "tests/tools/fetch-schemathesis.sh",
        PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("schemathesis"),
    )
    .join("bin/schemathesis")
}

#[test]
fn the_api_keeps_its_openapi_contract() {
    let schemathesis = schemathesis();
    let mut setup = Setup::embedded();
    // Thousands of requests from one address and key in a few minutes: the limits are tested
    // elsewhere and would only answer 429 here. Generated webhook URLs name any address.
    setup
        .set("IDYNTRA_RATE_LIMIT__ENABLED", "false")
        .set("IDYNTRA_WEBHOOKS__ALLOW_PRIVATE_TARGETS", "true");
    let key = setup.create_key("contract", &[]);
    let server = setup.serve();
    let output = Command::new("bash")
        .arg(tools().join("schemathesis.sh"))
        .arg(server.url(""))
        .arg(key["secret"].as_str().unwrap())
        .env("SCHEMATHESIS", &schemathesis)
        .env("MAX_TIME", "120")
        .env("NO_COLOR", "1")
        .output()
        .unwrap();
    let report = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "schemathesis found failures:\n{report}\n{}\nserver log:\n{}",
        String::from_utf8_lossy(&output.stderr),
        server.stop()
    );
    // A run that tested nothing would also exit 0.
    assert!(report.contains("passed"), "{report}");
}
