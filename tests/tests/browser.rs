//! The browser SDK: its TypeScript unit tests, its bundle budget, and the demo page of the real
//! `idyntra serve` in Debian's headless Chromium with a fake camera playing a video made from
//! real photos (`browser-sdk/e2e/run.mjs`; screenshots land in `browser-sdk/e2e/screenshots/`).
//! Needs node with npm (the tools are pinned in `browser-sdk/package-lock.json`) and Chromium
//! (`apt-get install chromium`; Playwright cannot download a browser here). The first run builds
//! the analysis engine for wasm32: minutes.
#![allow(clippy::unwrap_used)] // Test code: a failed unwrap is a failed test.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;

use idyntra_tests::{binary, registry_photo_bytes};

fn sdk() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../browser-sdk"))
}

/// Runs `program` in the SDK's directory; fails the test with its output when it fails.
fn run(program: &str, args: &[&str], env: &[(&str, &Path)]) -> String {
    let mut command = Command::new(program);
    command.args(args).current_dir(sdk());
    for (name, value) in env {
        command.env(name, value);
    }
    let output = command
        .output()
        .unwrap_or_else(|e| panic!("{program} could not run: {e}"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        output.status.success(),
        "{program} {args:?} failed:\n{text}"
    );
    text
}

/// `npm ci` once per run, for both tests.
fn tools() {
    static DONE: Mutex<bool> = Mutex::new(false);
    let mut done = DONE.lock().unwrap_or_else(|e| e.into_inner());
    if !*done {
        run("npm", &["ci", "--no-audit", "--no-fund"], &[]);
        *done = true;
    }
}

#[test]
fn the_sdk_typechecks_and_its_unit_tests_pass() {
    tools();
    run("npx", &["--no-install", "tsc", "--noEmit", "-p", "."], &[]);
    let output = run("npx", &["--no-install", "vitest", "run"], &[]);
    println!("{output}");
}

#[test]
fn the_demo_page_reaches_each_outcome_in_chromium_with_a_fake_camera() {
    let chromium = std::env::var_os("E2E_CHROMIUM")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/bin/chromium"));
    assert!(
        chromium.exists(),
        "{} is missing: apt-get install chromium (or set E2E_CHROMIUM)",
        chromium.display()
    );
    tools();
    // wasm-opt takes minutes on two cores and changes nothing the test looks at.
    let mut build = Command::new("bash");
    build
        .arg(sdk().join("scripts/build.sh"))
        .env("IDYNTRA_SDK_FAST", "1");
    assert!(build.status().unwrap().success(), "building the SDK failed");
    println!("{}", run("node", &["scripts/size.mjs", "--check"], &[]));

    // The registry photos the fake camera films (fetched on first use, pinned by sha256).
    registry_photo_bytes("obama.jpg");
    let fixtures = sdk().join("../models/fixtures");
    let fake_camera = PathBuf::from(env!("CARGO_BIN_EXE_fake-camera"));
    let output = run(
        "node",
        &["e2e/run.mjs"],
        &[
            ("E2E_SERVER_BIN", binary()),
            ("E2E_FAKE_CAMERA_BIN", &fake_camera),
            ("E2E_FIXTURES", &fixtures),
            ("E2E_CHROMIUM", &chromium),
        ],
    );
    println!("{output}");
    for scenario in [
        "verified", "rejected", "still", "denied", "element", "measure",
    ] {
        assert!(
            output.contains(&format!("ok {scenario}:")),
            "{scenario} did not pass:\n{output}"
        );
    }
}
