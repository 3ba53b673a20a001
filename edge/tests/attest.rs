//! The edge core on real photos: a capture is checked, signed and verified by the backend's
//! verifier; every refusal answers a problem naming what failed. The photos are the registry
//! photos of `models/tools/fetch-fixtures.sh` (fetched on first use) and the shared face fixtures.
#![cfg(not(target_arch = "wasm32"))] // Reads photos from disk.
#![allow(clippy::unwrap_used)] // Test code: a failed unwrap is a failed test.

use std::path::PathBuf;
use std::sync::{Mutex, OnceLock};

use base64::Engine;
use idyntra_edge::abuse::AbuseLimits;
use idyntra_edge::sample;
use idyntra_edge::verifier::check_image;
use idyntra_edge::{
    AttestError, AttestRequest, AttestationError, AttestationVerifier, Checker, EdKey, Edge,
    EdgeSettings, KeySet, PassivePad, jwt,
};
use idyntra_models::liveness_samples::Answer;
use idyntra_models::{DecodeLimits, decode};
use idyntra_types::{
    AttestResponse, CLIENT_TOKEN_SCOPE, ClientTokenClaims, ImageRole, LivenessMode,
};
use image::RgbImage;

const NOW: i64 = 1_800_000_000;

/// Bytes of a registry photo, fetched on first use; fails loudly when it cannot be fetched.
fn registry_bytes(name: &str) -> Vec<u8> {
    static FETCH: Mutex<()> = Mutex::new(());
    let models = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../models"));
    let path = models.join("fixtures").join(name);
    if !path.exists() {
        let _guard = FETCH.lock().unwrap_or_else(|e| e.into_inner());
        if !path.exists() {
            let script = models.join("tools/fetch-fixtures.sh");
            let status = std::process::Command::new("bash")
                .arg(&script)
                .status()
                .unwrap();
            assert!(
                status.success(),
                "{script:?} failed: registry photos missing"
            );
        }
    }
    std::fs::read(path).unwrap()
}

fn shared_bytes(name: &str) -> Vec<u8> {
    let path = format!(
        "{}/../../shared/fixtures/faces/{name}",
        env!("CARGO_MANIFEST_DIR")
    );
    std::fs::read(&path).expect("the shared face fixtures are beside the checkout")
}

fn image(bytes: &[u8]) -> RgbImage {
    decode(bytes, &DecodeLimits::default()).unwrap().image
}

fn key(kid: &str, byte: u8) -> EdKey {
    EdKey::parse(
        kid,
        &base64::engine::general_purpose::STANDARD.encode([byte; 32]),
    )
    .unwrap()
}

fn backend_key() -> EdKey {
    key("backend-1", 1)
}

fn checker() -> Checker {
    static CHECKER: OnceLock<Checker> = OnceLock::new();
    CHECKER.get_or_init(|| Checker::bundled().unwrap()).clone()
}

fn edge_with(signing: EdKey, retired: Vec<idyntra_edge::PublicKey>, abuse: AbuseLimits) -> Edge {
    Edge::new(
        EdgeSettings {
            abuse,
            ..EdgeSettings::default()
        },
        KeySet::new([backend_key().public()]).unwrap(),
        signing,
        retired,
        checker(),
    )
    .unwrap()
}

fn edge() -> Edge {
    edge_with(key("edge-1", 3), Vec::new(), AbuseLimits::default())
}

fn token(session: &str, liveness: LivenessMode, require_document: bool) -> String {
    let claims = ClientTokenClaims {
        iss: "idyntra".to_owned(),
        aud: vec!["idyntra-edge".to_owned(), "idyntra-backend".to_owned()],
        sub: session.to_owned(),
        sid: session.to_owned(),
        acct: "acct_1".to_owned(),
        nonce: format!("nonce of {session}"),
        scope: CLIENT_TOKEN_SCOPE.to_owned(),
        iat: NOW,
        nbf: NOW,
        exp: NOW + 900,
        jti: format!("ctk_{session}"),
        liveness,
        require_document,
    };
    format!("Bearer {}", jwt::sign(&claims, &backend_key()).unwrap())
}

fn attest(
    edge: &Edge,
    authorization: Option<&str>,
    parts: &[(&str, Vec<u8>)],
) -> Result<AttestResponse, AttestError> {
    let (content_type, body) = sample::body(parts);
    edge.attest(AttestRequest {
        authorization,
        content_type: Some(&content_type),
        body: body.into(),
        client: "203.0.113.7",
        now: NOW + 1,
    })
}

fn verifier(keys: KeySet) -> AttestationVerifier {
    AttestationVerifier::new(keys, &["idyntra-edge".to_owned()])
}

fn codes(error: &AttestError) -> Vec<String> {
    error
        .problem()
        .errors
        .iter()
        .map(|e| e.code.clone().unwrap())
        .collect()
}

fn live_parts(session: &str, answer: Answer) -> Vec<(&'static str, Vec<u8>)> {
    let frontal = sample::camera_frame(&image(&registry_bytes("obama.jpg")), 480);
    let turned = sample::camera_frame(&image(&registry_bytes("obama2.jpg")), 480);
    let document = registry_bytes("obama.jpg");
    sample::active_parts(
        &format!("nonce of {session}"),
        answer,
        &frontal,
        &turned,
        Some(&document),
    )
}

#[test]
fn a_live_capture_is_attested_and_the_backend_verifier_accepts_it() {
    let edge = edge();
    let parts = live_parts("ses_live", Answer::Live);
    let authorization = token("ses_live", LivenessMode::Active, true);
    let answer = attest(&edge, Some(&authorization), &parts).unwrap();
    let verifier = verifier(KeySet::from_jwks(&edge.jwks()).unwrap());
    let claims = verifier
        .verify(
            &answer.attestation,
            "ses_live",
            "nonce of ses_live",
            NOW + 2,
        )
        .unwrap();
    assert_eq!(claims.checks, answer.checks);
    assert!(claims.exp - claims.iat <= 600);
    let challenge = claims.checks.liveness.challenge.as_ref().unwrap();
    assert!(challenge.passed, "{challenge:?}");
    // Every part is named by its hash, in order, with its role.
    let selfies = parts.iter().filter(|(name, _)| *name == "selfie").count();
    assert_eq!(claims.images.len(), selfies + 1);
    assert_eq!(claims.images[0].role, ImageRole::Selfie);
    assert!(
        claims.images[1..selfies]
            .iter()
            .all(|i| i.role == ImageRole::Frame && i.timing.is_some())
    );
    check_image(&claims, ImageRole::Selfie, &parts[0].1).unwrap();
    check_image(&claims, ImageRole::Document, &registry_bytes("obama.jpg")).unwrap();
    assert_eq!(
        check_image(&claims, ImageRole::Selfie, &registry_bytes("obama.jpg")),
        Err(AttestationError::ImageMismatch)
    );
    assert_eq!(claims.models[0].name, "blazeface_short_range");

    // Another session, another nonce, too late, or a foreign edge: refused.
    assert_eq!(
        verifier.verify(
            &answer.attestation,
            "ses_other",
            "nonce of ses_live",
            NOW + 2
        ),
        Err(AttestationError::WrongSession)
    );
    assert_eq!(
        verifier.verify(&answer.attestation, "ses_live", "another nonce", NOW + 2),
        Err(AttestationError::WrongNonce)
    );
    assert_eq!(
        verifier.verify(
            &answer.attestation,
            "ses_live",
            "nonce of ses_live",
            NOW + 1000
        ),
        Err(AttestationError::Expired)
    );
    let stranger = verifier_for_issuer(&edge, "other-edge");
    assert_eq!(
        stranger.verify(
            &answer.attestation,
            "ses_live",
            "nonce of ses_live",
            NOW + 2
        ),
        Err(AttestationError::WrongIssuer)
    );
    let other_keys = KeySet::new([key("edge-1", 9).public()]).unwrap();
    assert_eq!(
        AttestationVerifier::new(other_keys, &["idyntra-edge".to_owned()]).verify(
            &answer.attestation,
            "ses_live",
            "nonce of ses_live",
            NOW
        ),
        Err(AttestationError::BadSignature)
    );
}

fn verifier_for_issuer(edge: &Edge, issuer: &str) -> AttestationVerifier {
    AttestationVerifier::new(edge.published_keys().clone(), &[issuer.to_owned()])
}

#[test]
fn a_replayed_still_and_a_recording_for_another_session_are_refused_as_spoofs() {
    let edge = edge();
    let still = attest(
        &edge,
        Some(&token("ses_still", LivenessMode::Active, true)),
        &live_parts("ses_still", Answer::Still),
    )
    .unwrap_err();
    assert_eq!(still.problem().status, 422);
    assert!(
        codes(&still).contains(&"spoof_suspected".to_owned()),
        "{still:?}"
    );
    // A live answer recorded for one session, sent with another session's token.
    let replayed = attest(
        &edge,
        Some(&token("ses_b", LivenessMode::Active, true)),
        &live_parts("ses_a", Answer::Live),
    )
    .unwrap_err();
    assert!(
        codes(&replayed).contains(&"spoof_suspected".to_owned()),
        "{replayed:?}"
    );
}

#[test]
fn a_passive_capture_needs_a_good_selfie_and_the_document_it_asks_for() {
    let edge = edge();
    let selfie = shared_bytes("img1.jpg");
    let passive = token("ses_passive", LivenessMode::Passive, true);
    let answer = attest(
        &edge,
        Some(&passive),
        &[
            ("selfie", selfie.clone()),
            ("document", shared_bytes("img2.jpg")),
        ],
    )
    .unwrap();
    assert!(answer.checks.liveness.challenge.is_none());
    assert!(answer.checks.document_quality.is_some());

    let missing = attest(&edge, Some(&passive), &[("selfie", selfie.clone())]).unwrap_err();
    assert_eq!(codes(&missing), ["document_missing"]);
    let optional = token("ses_no_doc", LivenessMode::Passive, false);
    assert!(attest(&edge, Some(&optional), &[("selfie", selfie.clone())]).is_ok());

    // A dark selfie and a document with no face: both named.
    let mut dark = image(&selfie);
    dark.pixels_mut().for_each(|p| p.0 = p.0.map(|c| c / 6));
    let blank = RgbImage::from_pixel(600, 400, image::Rgb([200, 200, 200]));
    let rejected = attest(
        &edge,
        Some(&passive),
        &[
            ("selfie", sample::jpeg(&dark)),
            ("document", sample::jpeg(&blank)),
        ],
    )
    .unwrap_err();
    let problem = rejected.problem();
    assert_eq!(
        (problem.status, problem.code.as_str()),
        (422, "capture_rejected")
    );
    let fields: Vec<(&str, &str)> = problem
        .errors
        .iter()
        .map(|e| (e.field.as_str(), e.code.as_deref().unwrap()))
        .collect();
    assert!(fields.contains(&("selfie", "too_dark")), "{fields:?}");
    assert!(fields.contains(&("document", "no_face")), "{fields:?}");

    // Not an image at all.
    let garbage = attest(
        &edge,
        Some(&passive),
        &[
            ("selfie", b"GIF89a...".to_vec()),
            ("document", shared_bytes("img2.jpg")),
        ],
    )
    .unwrap_err();
    assert_eq!(codes(&garbage), ["unsupported_image_format"]);
}

/// An edge whose checks run the passive model with `threshold` (a liveness score, 0–1).
fn edge_with_passive_pad(threshold: f32, enforce: bool) -> Edge {
    let mut passive_pad = PassivePad::bundled(enforce).unwrap();
    passive_pad.threshold = threshold;
    Edge::new(
        EdgeSettings::default(),
        KeySet::new([backend_key().public()]).unwrap(),
        key("edge-1", 3),
        Vec::new(),
        checker().with_passive_pad(passive_pad),
    )
    .unwrap()
}

#[test]
fn the_passive_model_is_attested_when_recorded_and_refuses_when_enforced() {
    let selfie = shared_bytes("img1.jpg");
    let parts = [
        ("selfie", selfie.clone()),
        ("document", shared_bytes("img2.jpg")),
    ];
    let passive = token("ses_pad", LivenessMode::Passive, true);

    // Off by default: no score, no model named.
    let plain = attest(&edge(), Some(&passive), &parts).unwrap();
    assert!(plain.checks.liveness.pad.is_none());

    // Recorded: a score that fails its threshold is attested, and the capture still passes.
    let recording = edge_with_passive_pad(1.01, false);
    let answer = attest(&recording, Some(&passive), &parts).unwrap();
    let pad = answer.checks.liveness.pad.clone().unwrap();
    assert_eq!(pad.method, "passive_dtn");
    assert!(!pad.passed && (0.0..=1.0).contains(&pad.score), "{pad:?}");
    let attack = pad.signals["attack_score"];
    assert!(
        (pad.score - (1.0 - attack).clamp(0.0, 1.0)).abs() < 1e-6,
        "{pad:?}"
    );
    let claims = verifier(KeySet::from_jwks(&recording.jwks()).unwrap())
        .verify(&answer.attestation, "ses_pad", "nonce of ses_pad", NOW + 2)
        .unwrap();
    assert_eq!(claims.checks.liveness.pad, Some(pad.clone()));
    let models: Vec<&str> = claims.models.iter().map(|m| m.name.as_str()).collect();
    assert_eq!(models, ["blazeface_short_range", "antispoofing"]);

    // The same score at a threshold it meets passes, enforced or not.
    let lenient = attest(&edge_with_passive_pad(0.0, true), Some(&passive), &parts).unwrap();
    assert_eq!(lenient.checks.liveness.pad.unwrap().score, pad.score);

    // Enforced, a score under the threshold refuses the capture with guidance.
    let refused = attest(&edge_with_passive_pad(1.01, true), Some(&passive), &parts).unwrap_err();
    assert_eq!(codes(&refused), ["spoof_suspected"]);
}

#[test]
fn an_active_session_without_its_timeline_fails_the_challenge() {
    let edge = edge();
    let active = token("ses_active", LivenessMode::Active, false);
    let error = attest(
        &edge,
        Some(&active),
        &[("selfie", shared_bytes("img1.jpg"))],
    )
    .unwrap_err();
    let codes = codes(&error);
    assert!(codes.contains(&"timeline_missing".to_owned()), "{codes:?}");
    assert!(
        codes.contains(&"challenge_incomplete".to_owned()),
        "{codes:?}"
    );
}

#[test]
fn token_and_body_refusals_come_before_any_check() {
    let edge = edge();
    let parts = [("selfie", shared_bytes("img1.jpg"))];
    let missing = attest(&edge, None, &parts).unwrap_err().problem();
    assert_eq!(
        (missing.status, missing.code.as_str()),
        (401, "client_token_missing")
    );
    let foreign = format!(
        "Bearer {}",
        jwt::sign(&serde_json::json!({"sid": "ses_1"}), &key("backend-1", 8)).unwrap()
    );
    let refused = attest(&edge, Some(&foreign), &parts).unwrap_err().problem();
    assert_eq!(refused.status, 401);
    let authorization = token("ses_body", LivenessMode::Passive, false);
    let not_multipart = edge
        .attest(AttestRequest {
            authorization: Some(&authorization),
            content_type: Some("application/json"),
            body: "{}".into(),
            client: "198.51.100.1",
            now: NOW,
        })
        .unwrap_err()
        .problem();
    assert_eq!(not_multipart.status, 415);
}

#[test]
fn five_failures_lock_the_client_out_and_a_session_has_bounded_attempts() {
    let edge = edge_with(
        key("edge-1", 3),
        Vec::new(),
        AbuseLimits {
            max_attempts_per_session: 7,
            ..AbuseLimits::default()
        },
    );
    let blank = sample::jpeg(&RgbImage::from_pixel(64, 64, image::Rgb([9, 9, 9])));
    let authorization = token("ses_abuse", LivenessMode::Passive, false);
    for _ in 0..5 {
        let error = attest(&edge, Some(&authorization), &[("selfie", blank.clone())]).unwrap_err();
        assert_eq!(error.problem().status, 422);
    }
    let locked = attest(
        &edge,
        Some(&authorization),
        &[("selfie", shared_bytes("img1.jpg"))],
    )
    .unwrap_err();
    assert_eq!(locked.problem().code, "too_many_failures");
    assert_eq!(locked.retry_after_secs(), Some(180));

    // Another client on the same session: the session's own budget runs out.
    let other_client = |n: usize| {
        let (content_type, body) = sample::body(&[("selfie", shared_bytes("img1.jpg"))]);
        edge.attest(AttestRequest {
            authorization: Some(&authorization),
            content_type: Some(&content_type),
            body: body.into(),
            client: "192.0.2.44",
            now: NOW + n as i64,
        })
    };
    assert!(other_client(1).is_ok());
    assert!(other_client(2).is_ok());
    assert_eq!(
        other_client(3).unwrap_err().problem().code,
        "session_attempts_exhausted"
    );
}

#[test]
fn after_a_key_rotation_earlier_attestations_verify_until_they_expire() {
    let old_edge = edge_with(key("edge-1", 3), Vec::new(), AbuseLimits::default());
    let passive = token("ses_rotate", LivenessMode::Passive, false);
    let parts = [("selfie", shared_bytes("img1.jpg"))];
    let before = attest(&old_edge, Some(&passive), &parts).unwrap();
    // The new key signs; the old key's public half stays published.
    let new_edge = edge_with(
        key("edge-2", 4),
        vec![key("edge-1", 3).public()],
        AbuseLimits::default(),
    );
    let after = attest(&new_edge, Some(&passive), &parts).unwrap();
    let jwks = new_edge.jwks();
    assert_eq!(jwks.keys.len(), 2);
    let rotated = verifier(KeySet::from_jwks(&jwks).unwrap());
    for attestation in [&before.attestation, &after.attestation] {
        rotated
            .verify(attestation, "ses_rotate", "nonce of ses_rotate", NOW + 2)
            .unwrap();
    }
    assert_eq!(
        rotated.verify(
            &before.attestation,
            "ses_rotate",
            "nonce of ses_rotate",
            NOW + 400
        ),
        Err(AttestationError::Expired)
    );
    // Once the old key is dropped from the set, what it signed no longer verifies.
    let current_only = verifier_keys_without(&jwks, "edge-1");
    assert_eq!(
        current_only.verify(
            &before.attestation,
            "ses_rotate",
            "nonce of ses_rotate",
            NOW + 2
        ),
        Err(AttestationError::UnknownKey)
    );
}

fn verifier_keys_without(jwks: &idyntra_types::JwkSet, kid: &str) -> AttestationVerifier {
    let mut kept = jwks.clone();
    kept.keys.retain(|k| k.kid != kid);
    verifier(KeySet::from_jwks(&kept).unwrap())
}

/// The browser's side: a person follows what the tracker shows (the screen colour lights the face;
/// they turn when asked), the frames go up with the tracker's timings, and the edge attests them.
#[test]
fn frames_timed_by_the_challenge_tracker_pass_the_edge() {
    use idyntra_edge::guidance::ChallengeTracker;
    use idyntra_models::liveness_samples::lit;
    use idyntra_types::{ChallengeStep, TurnDirection};

    let models = idyntra_models::FrameQuality::bundled().unwrap();
    let frontal = sample::camera_frame(&image(&registry_bytes("obama.jpg")), 480);
    let turned = sample::camera_frame(&image(&registry_bytes("obama2.jpg")), 480);
    let nonce = "nonce of ses_tracked";
    let mut tracker = ChallengeTracker::new(nonce);
    let mut next = tracker.challenge().steps.first().cloned();
    let (mut now, mut frames, mut timeline) = (0.0, Vec::new(), Vec::new());
    for seed in 0.. {
        let frame = match &next {
            Some(ChallengeStep::Neutral { colour, .. } | ChallengeStep::Flash { colour, .. }) => {
                lit(&frontal, *colour, seed)
            }
            Some(ChallengeStep::Turn {
                direction: TurnDirection::Right,
                ..
            }) => turned.clone(),
            Some(ChallengeStep::Turn {
                direction: TurnDirection::Left,
                ..
            }) => image::imageops::flip_horizontal(&turned),
            None => break,
        };
        let rgba: Vec<u8> = frame
            .pixels()
            .flat_map(|p| [p.0[0], p.0[1], p.0[2], 255])
            .collect();
        let tracked = tracker
            .track(&models, &rgba, frame.width(), frame.height(), now)
            .unwrap();
        // The yaw is read where it is judged: every frame here shows the face.
        let flash = matches!(
            tracker.challenge().steps[tracked.timing.step],
            ChallengeStep::Flash { .. }
        );
        assert_eq!(tracked.yaw_deg.is_none(), flash, "{tracked:?}");
        frames.push(("selfie", sample::jpeg(&frame)));
        timeline.push(tracked.timing);
        next = tracked.next;
        now += 150.0;
        assert!(seed < 200, "the tracker never finished");
    }
    let mut parts = frames;
    parts.push(("timeline", serde_json::to_vec(&timeline).unwrap()));
    let authorization = token("ses_tracked", LivenessMode::Active, false);
    let answer = attest(&edge(), Some(&authorization), &parts).unwrap();
    assert!(answer.checks.liveness.challenge.unwrap().passed);
}
