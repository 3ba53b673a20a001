//! The offline model commands of the real binary: `verify` and `eval faces` on the shared
//! development photos, `eval liveness` on answers made from registry photos, `eval pad` on folders
//! of photos.
#![allow(clippy::unwrap_used)] // Test code: a failed unwrap is a failed test.

use std::path::PathBuf;

use idyntra_models::liveness;
use idyntra_models::liveness_samples::{self, Answer};
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
        "--passive-pad",
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
    assert!(result["liveness"].is_null());
    // Both faces scored by the manipulation model; advisory, so still unchecked.
    let manipulation = &result["manipulation"];
    assert_eq!(manipulation["method"], "self_blend_lr");
    let signals = manipulation["signals"].as_object().unwrap();
    assert_eq!(signals.len(), 2, "{manipulation}");
    let highest = signals
        .values()
        .filter_map(Value::as_f64)
        .fold(0.0, f64::max);
    assert!((manipulation["score"].as_f64().unwrap() - highest).abs() < 1e-6);
    assert!(
        result["reasons"]
            .as_array()
            .unwrap()
            .contains(&"manipulation_not_checked".into())
    );
    // The passive model scored the selfie, reported beside the liveness it does not decide.
    let passive = &result["passive_pad"];
    assert_eq!(passive["method"], "passive_dtn", "{passive}");
    let score = passive["score"].as_f64().unwrap();
    assert!((0.0..=1.0).contains(&score));
    assert_eq!(
        passive["passed"].as_bool(),
        Some(score >= passive["threshold"].as_f64().unwrap())
    );
    let models = result["models"].as_array().unwrap();
    assert!(models.iter().any(|m| m["name"] == "self-blend-lr"));
    assert!(models.iter().any(|m| m["name"] == "antispoofing"));
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

/// A registry photo (fetched by `models/tools/fetch-fixtures.sh` when missing), 360 pixels wide.
fn registry_photo(name: &str) -> image::RgbImage {
    let photo = image::load_from_memory(&idyntra_tests::registry_photo_bytes(name))
        .unwrap()
        .to_rgb8();
    let height = photo.height() * 360 / photo.width();
    image::imageops::resize(&photo, 360, height, image::imageops::FilterType::Triangle)
}

/// Writes one recorded answer: frames as JPEG and `response.json`.
fn write_answer(
    dir: &std::path::Path,
    nonce: &str,
    label: &str,
    attack: Option<&str>,
    answer: Answer,
) {
    let challenge = liveness::challenge_for(nonce.as_bytes());
    let frames = liveness_samples::frames(
        &challenge,
        answer,
        &registry_photo("obama.jpg"),
        &registry_photo("obama2.jpg"),
    );
    std::fs::create_dir_all(dir).unwrap();
    let mut entries = Vec::new();
    for (i, (timing, frame)) in frames.iter().enumerate() {
        let file = format!("{i:03}.jpg");
        frame.save(dir.join(&file)).unwrap();
        entries.push(serde_json::json!({"file": file, "at_ms": timing.at_ms, "step": timing.step}));
    }
    let mut response = serde_json::json!({"nonce": nonce, "label": label, "frames": entries});
    if let Some(attack) = attack {
        response["attack"] = attack.into();
    }
    std::fs::write(dir.join("response.json"), response.to_string()).unwrap();
}

#[test]
fn eval_liveness_reports_refused_live_answers_and_accepted_attacks() {
    let setup = Setup::embedded();
    let answers = setup.dir.path().join("answers");
    write_answer(
        &answers.join("live"),
        "nonce one",
        "live",
        None,
        Answer::Live,
    );
    write_answer(
        &answers.join("still"),
        "nonce one",
        "attack",
        Some("still"),
        Answer::Still,
    );
    let report = json_of(&setup.cli(&[
        "eval",
        "liveness",
        "--responses",
        answers.to_str().unwrap(),
        "--json",
    ]));
    assert_eq!(report["responses"], 2);
    assert_eq!(report["bpcer"]["errors"], 0, "{report}");
    assert_eq!(report["bpcer"]["trials"], 1);
    assert_eq!(report["apcer"]["errors"], 0, "{report}");
    assert_eq!(report["apcer_by_attack"]["still"]["trials"], 1);

    // A response that is not what it should be is named in one line.
    std::fs::write(answers.join("still/response.json"), "{\"nonce\": 1}").unwrap();
    let output = setup.cli(&["eval", "liveness", "--responses", answers.to_str().unwrap()]);
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("still/response.json"), "{stderr}");
}

#[test]
fn eval_pad_reports_rates_from_the_scores_and_names_photos_without_a_face() {
    let setup = Setup::embedded();
    let bona_fide = setup.dir.path().join("bona_fide");
    let attacks = setup.dir.path().join("attacks");
    std::fs::create_dir_all(&bona_fide).unwrap();
    std::fs::create_dir_all(&attacks).unwrap();
    for name in ["img1.jpg", "img13.jpg"] {
        std::fs::copy(faces_dir().join(name), bona_fide.join(name)).unwrap();
    }
    std::fs::copy(faces_dir().join("img8.jpg"), attacks.join("img8.jpg")).unwrap();
    image::RgbImage::from_pixel(320, 240, image::Rgb([180, 180, 180]))
        .save(bona_fide.join("blank.png"))
        .unwrap();
    std::fs::write(bona_fide.join("notes.txt"), "not a photo").unwrap();
    let run = |threshold: &str| {
        json_of(&setup.cli(&[
            "eval",
            "pad",
            "--bona-fide",
            bona_fide.to_str().unwrap(),
            "--attacks",
            attacks.to_str().unwrap(),
            "--threshold",
            threshold,
            "--json",
        ]))
    };
    let report = run("0.8");
    assert_eq!(report["model"], "antispoofing");
    assert_eq!(report["bona_fide_scores"]["photos"], 2, "{report}");
    assert_eq!(report["attack_scores"]["photos"], 1, "{report}");
    let no_face = report["no_face"].as_array().unwrap();
    assert_eq!(no_face.len(), 1);
    assert!(no_face[0].as_str().unwrap().ends_with("blank.png"));
    // The rates are those of the scores listed beside them.
    let results = report["results"].as_array().unwrap();
    let below = |label: &str, threshold: f64| {
        results
            .iter()
            .filter(|r| r["label"] == label && r["score"].as_f64().unwrap() < threshold)
            .count()
    };
    let at = &report["at_threshold"];
    assert_eq!(at["bpcer"]["trials"], 2);
    assert_eq!(at["bpcer"]["errors"], below("bona_fide", 0.8));
    assert_eq!(at["apcer"]["errors"], 1 - below("attack", 0.8));
    for r in results {
        let (score, attack) = (
            r["score"].as_f64().unwrap(),
            r["attack_score"].as_f64().unwrap(),
        );
        assert!((score - (1.0 - attack).clamp(0.0, 1.0)).abs() < 1e-6, "{r}");
    }
    // At 0 every photo passes: nothing bona fide refused, every attack accepted.
    let lenient = run("0");
    assert_eq!(lenient["at_threshold"]["bpcer"]["errors"], 0);
    assert_eq!(lenient["at_threshold"]["apcer"]["errors"], 1);

    // Usage mistakes are named in one line.
    let output = setup.cli(&[
        "eval",
        "pad",
        "--bona-fide",
        bona_fide.to_str().unwrap(),
        "--threshold",
        "2",
    ]);
    assert_eq!(output.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&output.stderr).contains("--threshold"));
    let empty = setup.dir.path().join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    let output = setup.cli(&["eval", "pad", "--bona-fide", empty.to_str().unwrap()]);
    assert_eq!(output.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&output.stderr).contains("no JPEG"));
}

#[test]
fn eval_manipulation_calibrates_on_people_left_out_and_writes_a_model_that_loads() {
    let setup = Setup::embedded();
    let dir = setup.dir.path();
    // Three people of the development set (two photos each) and a photo of someone else.
    let identities = "image,identity\nimg1.jpg,person01\nimg10.jpg,person01\n\
                      img13.jpg,person03\nimg14.jpg,person03\nimg2.jpg,person02\nimg4.jpg,person02\n";
    std::fs::write(dir.join("identities.csv"), identities).unwrap();
    let held_out = dir.join("held_out");
    std::fs::create_dir_all(&held_out).unwrap();
    std::fs::copy(faces_dir().join("img8.jpg"), held_out.join("img8.jpg")).unwrap();
    let model = dir.join("model.json");
    let run = || {
        json_of(&setup.cli(&[
            "eval",
            "manipulation",
            "--images",
            faces_dir().to_str().unwrap(),
            "--identities",
            dir.join("identities.csv").to_str().unwrap(),
            "--held-out",
            held_out.to_str().unwrap(),
            "--variants",
            "3",
            "--target-fpr",
            "0.2",
            "--write-model",
            model.to_str().unwrap(),
            "--json",
        ]))
    };
    let report = run();
    assert_eq!(report["people"], 3, "{report}");
    assert_eq!(report["photos"], 6, "{report}");
    assert_eq!(report["samples"]["real"], 18, "{report}");
    let cv = &report["cross_validation"];
    // The threshold flags at most the target share of the held-out real samples.
    let flagged = cv["real_flagged"]["errors"].as_u64().unwrap();
    assert!(flagged as f64 <= 0.2 * 18.0, "{cv}");
    assert_eq!(cv["fakes_detected"]["trials"], 18);
    assert_eq!(report["held_out"]["photos"], 1);
    // The written model carries the calibrated threshold and scores like the report says.
    let written = std::fs::read_to_string(&model).unwrap();
    let loaded = idyntra_models::manipulation::BlendModel::from_json(&written).unwrap();
    assert_eq!(
        loaded.threshold,
        report["threshold"].as_f64().unwrap() as f32
    );
    assert_eq!(loaded.calibrated_fpr, 0.2);
    // The same seed makes the same model.
    run();
    assert_eq!(std::fs::read_to_string(&model).unwrap(), written);
}
