//! The face chain on photos fetched from package registries and pinned by sha256
//! (`models/tools/fetch-fixtures.sh`, run here on first use): public-domain photographs of Barack
//! Obama and Joe Biden from PyPI `face_recognition==1.3.0` and NASA's astronaut portrait from
//! PyPI `scikit-image==0.24.0`. None of these people is in the development set the threshold was
//! calibrated on.
#![allow(clippy::unwrap_used)] // Test code: a failed unwrap is a failed test.

use std::path::PathBuf;
use std::sync::Mutex;

use idyntra_models::quality::{self, Capture, QualityThresholds};
use idyntra_models::{DecodeLimits, FaceChain, MatchPolicy, decode, embedding};
use idyntra_types::QualityCode;
use image::RgbImage;

/// The photo `name`, fetched on first use; fails loudly when it cannot be fetched.
fn photo(name: &str) -> RgbImage {
    static FETCH: Mutex<()> = Mutex::new(());
    let dir = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures"));
    let path = dir.join(name);
    if !path.exists() {
        let _guard = FETCH.lock().unwrap_or_else(|e| e.into_inner());
        if !path.exists() {
            let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tools/fetch-fixtures.sh");
            let status = std::process::Command::new("bash")
                .arg(script)
                .status()
                .expect("bash runs");
            assert!(
                status.success(),
                "{script} failed: the registry photos are missing"
            );
        }
    }
    let bytes = std::fs::read(&path).unwrap();
    decode(&bytes, &DecodeLimits::default()).unwrap().image
}

fn chain() -> FaceChain {
    FaceChain::bundled(FaceChain::CANVAS).unwrap()
}

#[test]
fn one_face_is_found_in_each_portrait() {
    let chain = chain();
    for name in [
        "obama.jpg",
        "obama2.jpg",
        "biden.jpg",
        "astronaut.png",
        "32bit.png",
    ] {
        let located = chain.locate(&photo(name)).unwrap();
        assert_eq!(located.faces.len(), 1, "{name}: {:?}", located.faces);
        assert!(located.crop.is_some(), "{name}");
    }
}

#[test]
fn the_same_person_matches_and_different_people_do_not() {
    let chain = chain();
    let names = [
        "obama.jpg",
        "obama2.jpg",
        "obama3.jpg",
        "biden.jpg",
        "astronaut.png",
    ];
    let crops: Vec<RgbImage> = names
        .iter()
        .map(|name| chain.locate(&photo(name)).unwrap().crop.unwrap())
        .collect();
    let refs: Vec<&RgbImage> = crops.iter().collect();
    let embeddings = chain.embed(&refs).unwrap();
    let policy = MatchPolicy::MOBILEFACENET;
    let judge =
        |a: usize, b: usize| policy.judge(embedding::cosine(&embeddings[a], &embeddings[b]));
    for (a, b) in [(0, 1), (0, 2), (1, 2)] {
        let result = judge(a, b);
        assert!(result.passed, "{} vs {}: {result:?}", names[a], names[b]);
    }
    for (a, b) in [(0, 3), (1, 3), (2, 3), (0, 4), (3, 4)] {
        let result = judge(a, b);
        assert!(!result.passed, "{} vs {}: {result:?}", names[a], names[b]);
    }
}

#[test]
fn quality_flags_a_blurred_and_a_darkened_copy() {
    let chain = chain();
    let limits = QualityThresholds::default();
    for name in ["obama.jpg", "astronaut.png"] {
        let original = photo(name);
        let faces = chain.locate(&original).unwrap().faces;
        let report = quality::assess(&original, &faces, Capture::Selfie, &limits);
        assert!(report.failures.is_empty(), "{name}: {report:?}");

        let blurred = image::imageops::blur(&original, faces[0].bbox.width() / 25.0);
        let report = quality::assess(&blurred, &faces, Capture::Selfie, &limits);
        assert_eq!(
            report.failures,
            vec![QualityCode::Blurry],
            "{name}: {report:?}"
        );

        let mut dark = original.clone();
        dark.pixels_mut()
            .for_each(|p| p.0 = p.0.map(|c| (f32::from(c) * 0.25) as u8));
        let report = quality::assess(&dark, &faces, Capture::Selfie, &limits);
        assert!(
            report.failures.contains(&QualityCode::TooDark),
            "{name}: {report:?}"
        );
    }
}

mod active_liveness {
    use idyntra_models::liveness::{self, ActiveThresholds, FrameObservation};
    use idyntra_models::liveness_samples::{self, Answer};
    use idyntra_types::{ChallengeStep, LivenessChallenge};
    use image::RgbImage;
    use image::imageops::FilterType;

    use super::{chain, photo};

    /// A camera frame of `name`: 480 pixels wide.
    fn frame(name: &str) -> RgbImage {
        let original = photo(name);
        let height = original.height() * 480 / original.width();
        image::imageops::resize(&original, 480, height, FilterType::Triangle)
    }

    /// An answer to `challenge` made of real photos of one person — `obama.jpg` looking at the
    /// camera (yaw 1°), `obama2.jpg` with the head turned to his right (yaw −20°) — observed with
    /// CenterFace on each frame and its mirror image.
    fn observe(challenge: &LivenessChallenge, answer: Answer) -> Vec<FrameObservation> {
        let chain = chain();
        let frames =
            liveness_samples::frames(challenge, answer, &frame("obama.jpg"), &frame("obama2.jpg"));
        chain.observe_answer(&frames).unwrap()
    }

    #[test]
    fn a_live_response_passes_a_replayed_still_and_another_sessions_recording_fail() {
        let limits = ActiveThresholds::default();
        let challenge = liveness::challenge_for(b"session one");
        let live = observe(&challenge, Answer::Live);
        let verdict = liveness::verify(&challenge, &live, &limits);
        assert!(verdict.passed, "{verdict:?}");

        let still = liveness::verify(&challenge, &observe(&challenge, Answer::Still), &limits);
        assert!(!still.passed && still.score == 0.0, "{still:?}");

        let print = liveness::verify(
            &challenge,
            &observe(&challenge, Answer::TiltedPrint),
            &limits,
        );
        assert!(!print.passed, "{print:?}");
        assert_eq!(print.signals["turns"], 0.0, "{print:?}");

        // The live recording replayed against another session's challenge.
        let other = liveness::challenge_for(b"session two");
        let colours = |c: &LivenessChallenge| -> Vec<ChallengeStep> {
            c.steps
                .iter()
                .filter(|s| matches!(s, ChallengeStep::Flash { .. }))
                .cloned()
                .collect()
        };
        assert_ne!(colours(&challenge), colours(&other));
        let replayed = liveness::verify(&other, &live, &limits);
        assert!(!replayed.passed, "{replayed:?}");
    }

    /// The edge's light path: BlazeFace on each frame and its mirror image, no identity check.
    #[test]
    fn blazeface_observations_tell_a_live_answer_from_a_still_and_a_print() {
        let detector = idyntra_models::FrameQuality::bundled().unwrap();
        let challenge = liveness::challenge_for(b"session one");
        let verdict = |answer: Answer| {
            let frames = liveness_samples::frames(
                &challenge,
                answer,
                &frame("obama.jpg"),
                &frame("obama2.jpg"),
            );
            let observations: Vec<FrameObservation> = frames
                .iter()
                .map(|(timing, image)| detector.observe(image, *timing).unwrap())
                .collect();
            liveness::verify(&challenge, &observations, &ActiveThresholds::default())
        };
        let live = verdict(Answer::Live);
        assert!(live.passed, "{live:?}");
        let still = verdict(Answer::Still);
        assert!(!still.passed, "{still:?}");
        let print = verdict(Answer::TiltedPrint);
        assert!(!print.passed, "{print:?}");
        assert_eq!(print.signals["turns"], 0.0, "{print:?}");
    }

    /// Someone else does the turns: the live answer's turn frames replaced by another person's.
    #[test]
    fn another_person_in_the_frames_fails() {
        let chain = chain();
        let challenge = liveness::challenge_for(b"session one");
        let mut frames = liveness_samples::frames(
            &challenge,
            Answer::Live,
            &frame("obama.jpg"),
            &frame("obama2.jpg"),
        );
        let stranger = frame("biden.jpg");
        for (timing, image) in &mut frames {
            if matches!(challenge.steps[timing.step], ChallengeStep::Turn { .. }) {
                *image = stranger.clone();
            }
        }
        let observations = chain.observe_answer(&frames).unwrap();
        let verdict = liveness::verify(&challenge, &observations, &ActiveThresholds::default());
        assert!(!verdict.passed, "{verdict:?}");
        assert_eq!(verdict.signals["failed_identity"], 1.0, "{verdict:?}");
    }
}
