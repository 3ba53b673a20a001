//! Cold start and per-request time of the edge's `attest`, natively:
//! `cargo run --release -p idyntra-edge --example attest_timings [RUNS]` (default 10).
//!
//! Captures made from the registry photos (`models/tools/fetch-fixtures.sh`): 640-pixel-wide
//! camera frames, the document photo as fetched. Everything runs on one thread, so the time is
//! the CPU time of one attestation.

use std::time::{Duration, Instant};

use base64::Engine;
use idyntra_edge::{AttestRequest, Checker, EdKey, Edge, EdgeSettings, KeySet, jwt, sample};
use idyntra_models::liveness_samples::Answer;
use idyntra_types::{CLIENT_TOKEN_SCOPE, ClientTokenClaims, LivenessMode};

const NOW: i64 = 1_800_000_000;

fn median_ms(mut samples: Vec<Duration>) -> f64 {
    samples.sort();
    samples[samples.len() / 2].as_secs_f64() * 1000.0
}

fn registry_photo(name: &str) -> Result<Vec<u8>, Box<dyn std::error::Error>> {
    let models = concat!(env!("CARGO_MANIFEST_DIR"), "/../models");
    let path = format!("{models}/fixtures/{name}");
    if !std::path::Path::new(&path).exists() {
        let status = std::process::Command::new("bash")
            .arg(format!("{models}/tools/fetch-fixtures.sh"))
            .status()?;
        if !status.success() {
            return Err("fetching the registry photos failed".into());
        }
    }
    Ok(std::fs::read(path)?)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let runs: usize = std::env::args()
        .nth(1)
        .map(|n| n.parse())
        .transpose()?
        .unwrap_or(10);
    let backend = EdKey::parse(
        "backend-1",
        &base64::engine::general_purpose::STANDARD.encode([1u8; 32]),
    )?;

    let started = Instant::now();
    let edge = Edge::new(
        EdgeSettings::default(),
        KeySet::new([backend.public()])?,
        EdKey::generate("edge-1")?,
        Vec::new(),
        Checker::bundled()?,
    )?;
    println!(
        "cold start (models loaded and optimised, keys parsed): {:.1} ms",
        started.elapsed().as_secs_f64() * 1000.0
    );

    let document = registry_photo("obama.jpg")?;
    let frontal = sample::camera_frame(&image::load_from_memory(&document)?.to_rgb8(), 640);
    let turned = sample::camera_frame(
        &image::load_from_memory(&registry_photo("obama2.jpg")?)?.to_rgb8(),
        640,
    );
    let live = sample::active_parts("bench", Answer::Live, &frontal, &turned, Some(&document));
    // The selfie, 8 challenge frames and the document: every frame is checked even though the
    // challenge (which needs two frames per step) then fails.
    let eight: Vec<(&str, Vec<u8>)> = {
        let selfies: Vec<_> = live
            .iter()
            .filter(|(n, _)| *n == "selfie")
            .take(9)
            .collect();
        let challenge = idyntra_models::liveness::challenge_for(b"bench");
        let timeline: Vec<idyntra_types::FrameTiming> = (0..selfies.len())
            .map(|i| idyntra_types::FrameTiming {
                at_ms: 100 * i as u32,
                step: i * challenge.steps.len() / selfies.len(),
            })
            .collect();
        let mut parts: Vec<(&str, Vec<u8>)> =
            selfies.into_iter().map(|(n, b)| (*n, b.clone())).collect();
        parts.push(("timeline", serde_json::to_vec(&timeline)?));
        parts.push(("document", document.clone()));
        parts
    };
    let passive = vec![
        ("selfie", live[0].1.clone()),
        ("document", document.clone()),
    ];

    for (name, parts, liveness) in [
        (
            "selfie + document (passive)",
            &passive,
            LivenessMode::Passive,
        ),
        ("selfie + document + 8 frames", &eight, LivenessMode::Active),
        (
            "selfie + document + 20 frames (live answer)",
            &live,
            LivenessMode::Active,
        ),
    ] {
        let (content_type, body) = sample::body(parts);
        let mut times = Vec::with_capacity(runs);
        let mut outcome = String::new();
        for run in 0..runs {
            let session = format!("ses_{run}");
            let claims = ClientTokenClaims {
                iss: "idyntra".to_owned(),
                aud: vec!["idyntra-edge".to_owned()],
                sub: session.clone(),
                sid: session.clone(),
                acct: "acct".to_owned(),
                nonce: "bench".to_owned(),
                scope: CLIENT_TOKEN_SCOPE.to_owned(),
                iat: NOW,
                nbf: NOW,
                exp: NOW + 900,
                jti: session.clone(),
                liveness,
                require_document: true,
            };
            let authorization = format!("Bearer {}", jwt::sign(&claims, &backend)?);
            let client = format!("client-{run}");
            let t = Instant::now();
            let result = edge.attest(AttestRequest {
                authorization: Some(&authorization),
                content_type: Some(&content_type),
                body: body.clone().into(),
                client: &client,
                now: NOW,
            });
            times.push(t.elapsed());
            outcome = match result {
                Ok(_) => "attested".to_owned(),
                Err(error) => format!("refused: {}", error.problem().detail.unwrap_or_default()),
            };
        }
        println!(
            "{name}: {} bytes, median {:.1} ms per attestation ({runs} runs; {outcome})",
            body.len(),
            median_ms(times)
        );
    }

    // Where a challenge frame's time goes.
    let frame_bytes = &live[1].1;
    let models = idyntra_models::FrameQuality::bundled()?;
    let limits = idyntra_models::DecodeLimits::default();
    let (mut decoding, mut detecting, mut mirroring) = (vec![], vec![], vec![]);
    for _ in 0..runs.max(5) {
        let t = Instant::now();
        let frame = idyntra_models::decode(frame_bytes, &limits)?.image;
        decoding.push(t.elapsed());
        let t = Instant::now();
        models.faces(&frame)?;
        detecting.push(t.elapsed());
        let t = Instant::now();
        models.faces(&image::imageops::flip_horizontal(&frame))?;
        mirroring.push(t.elapsed());
    }
    println!(
        "one {}-byte challenge frame: decode {:.1} ms, detect {:.1} ms, detect on the mirror image {:.1} ms",
        frame_bytes.len(),
        median_ms(decoding),
        median_ms(detecting),
        median_ms(mirroring)
    );
    Ok(())
}
