//! The offline model commands of the real binary: `verify` and `eval faces`, on the shared
//! development photos.
#![allow(clippy::unwrap_used)] // Test code: a failed unwrap is a failed test.

use std::path::PathBuf;

use idyntra_tests::Setup;
use serde_json::Value;

fn faces_dir() -> PathBuf {
    PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../shared/fixtures/faces"
    ))
}

fn json_of(output: &std::process::Output) -> Value {
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).expect("--json prints one JSON object")
}

#[test]
fn verify_prints_the_api_result_shape() {
    let setup = Setup::embedded();
    let dir = faces_dir();
    let selfie = dir.join("img1.jpg");
    let document = dir.join("img13.jpg");
    let result = json_of(&setup.cli(&[
        "verify",
        "--selfie",
        selfie.to_str().unwrap(),
        "--document",
        document.to_str().unwrap(),
        "--json",
    ]));
    assert_eq!(result["decision"], "rejected");
    let face_match = &result["face_match"];
    assert_eq!(face_match["passed"], false);
    assert!(face_match["score"].as_f64().unwrap() < face_match["threshold"].as_f64().unwrap());
    assert!(
        result["reasons"]
            .as_array()
            .unwrap()
            .contains(&"face_mismatch".into())
    );
    assert_eq!(result["quality"]["passed"], true);
    assert!(result["liveness"].is_null() && result["manipulation"].is_null());
    let models = result["models"].as_array().unwrap();
    assert!(
        models
            .iter()
            .all(|m| m["sha256"].as_str().unwrap().len() == 64)
    );
}

#[test]
fn verify_refuses_a_file_that_is_not_a_photo() {
    let setup = Setup::embedded();
    let document = faces_dir().join("img1.jpg");
    let output = setup.cli(&[
        "verify",
        "--selfie",
        concat!(env!("CARGO_MANIFEST_DIR"), "/Cargo.toml"),
        "--document",
        document.to_str().unwrap(),
    ]);
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("unsupported_image_format"), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
}

/// Three people, eight photos: every pair, with identities derived from the `same` pairs.
#[test]
fn eval_faces_reports_rates_with_intervals() {
    let setup = Setup::embedded();
    let people = [
        ("img1.jpg", "a"),
        ("img10.jpg", "a"),
        ("img2.jpg", "a"),
        ("img13.jpg", "b"),
        ("img14.jpg", "b"),
        ("img38.jpg", "c"),
        ("img39.jpg", "c"),
        ("img40.jpg", "c"),
    ];
    let mut csv = String::from("image_a,image_b,label\n");
    for (i, (a, pa)) in people.iter().enumerate() {
        for (b, pb) in &people[i + 1..] {
            let label = if pa == pb { "same" } else { "different" };
            csv.push_str(&format!("{a},{b},{label}\n"));
        }
    }
    let pairs = setup.dir.path().join("pairs.csv");
    std::fs::write(&pairs, csv).unwrap();
    let images = faces_dir();
    let report = json_of(&setup.cli(&[
        "eval",
        "faces",
        "--pairs",
        pairs.to_str().unwrap(),
        "--images",
        images.to_str().unwrap(),
        "--json",
    ]));
    assert_eq!(report["pairs"], 28);
    assert_eq!(report["genuine_pairs"], 3 + 1 + 3);
    assert_eq!(report["failures_to_detect"].as_array().unwrap().len(), 0);
    let configured = &report["configured"]["point"];
    assert_eq!(configured["fmr"]["errors"], 0);
    assert_eq!(configured["fnmr"]["errors"], 0);
    assert_eq!(
        report["held_out"]["empirical"]["folds"]
            .as_array()
            .unwrap()
            .len(),
        3
    );
    let ci = configured["fmr"]["ci95"].as_array().unwrap();
    assert!(ci[1].as_f64().unwrap() > 0.0);

    // A label that is neither `same` nor `different` is a usage mistake, named in one line.
    std::fs::write(&pairs, "image_a,image_b,label\nimg1.jpg,img2.jpg,maybe\n").unwrap();
    let output = setup.cli(&[
        "eval",
        "faces",
        "--pairs",
        pairs.to_str().unwrap(),
        "--images",
        images.to_str().unwrap(),
    ]);
    assert_eq!(output.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&output.stderr).contains("row 2"));
}
