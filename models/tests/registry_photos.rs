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
    use idyntra_types::{ChallengeStep, FrameTiming, LivenessChallenge, TurnDirection};
    use image::imageops::FilterType;
    use image::{Rgb, RgbImage};

    use super::{chain, photo};

    /// A camera frame of `name`: 480 pixels wide, mirrored on request.
    fn frame(name: &str, mirrored: bool) -> RgbImage {
        let original = photo(name);
        let height = original.height() * 480 / original.width();
        let frame = image::imageops::resize(&original, 480, height, FilterType::Triangle);
        if mirrored {
            image::imageops::flip_horizontal(&frame)
        } else {
            frame
        }
    }

    /// The frame lit by a screen of `colour`: each channel gains `gain` of itself where the screen
    /// colour has it (diffuse reflection), plus a little sensor noise.
    fn lit(frame: &RgbImage, colour: [u8; 3], gain: f32, seed: u32) -> RgbImage {
        let mut out = frame.clone();
        for (i, pixel) in out.pixels_mut().enumerate() {
            let noise =
                ((i as u32).wrapping_mul(2_654_435_761).wrapping_add(seed) >> 29) as f32 - 3.5;
            *pixel = Rgb([0, 1, 2].map(|c| {
                let value =
                    f32::from(pixel[c]) * (1.0 + gain * f32::from(colour[c]) / 255.0) + noise;
                value.clamp(0.0, 255.0) as u8
            }));
        }
        out
    }

    /// A printed photo rotated by `degrees` about its vertical axis, seen by a camera whose focal
    /// length is the photo's width.
    fn tilted_print(photo: &RgbImage, degrees: f32) -> RgbImage {
        let (sin, cos) = degrees.to_radians().sin_cos();
        let f = photo.width() as f32;
        let (cx, cy) = (photo.width() as f32 / 2.0, photo.height() as f32 / 2.0);
        RgbImage::from_fn(photo.width(), photo.height(), |x, y| {
            let (u, v) = (x as f32 - cx, y as f32 - cy);
            // Invert the projection of the rotated plane.
            let across = u * f / (f * cos - u * sin);
            let up = v * (f + across * sin) / f;
            let (sx, sy) = (across + cx, up + cy);
            if sx >= 0.0 && sy >= 0.0 && sx < photo.width() as f32 && sy < photo.height() as f32 {
                *photo.get_pixel(sx as u32, sy as u32)
            } else {
                Rgb([40, 40, 40])
            }
        })
    }

    /// Frames answering `challenge` (three per step, 120 ms apart), observed with CenterFace.
    fn observe(challenge: &LivenessChallenge, answer: Answer) -> Vec<FrameObservation> {
        let chain = chain();
        let original = photo("obama.jpg");
        let base =
            image::imageops::resize(&original, 480, 600, image::imageops::FilterType::Triangle);
        let mut frames = Vec::new();
        let mut at_ms = 0;
        for (step, kind) in challenge.steps.iter().enumerate() {
            for k in 0..3u32 {
                at_ms += 120;
                let frame = match answer {
                    // A replayed still: the same picture whatever the screen shows.
                    Answer::Still => base.clone(),
                    // A print in front of the camera: it reflects the screen like skin does, and is
                    // tilted for the turns.
                    Answer::TiltedPrint => match kind {
                        ChallengeStep::Neutral { colour, .. }
                        | ChallengeStep::Flash { colour, .. } => lit(&base, *colour, 0.06, k),
                        ChallengeStep::Turn { direction, .. } => tilted_print(
                            &base,
                            if *direction == TurnDirection::Left {
                                40.0
                            } else {
                                -40.0
                            },
                        ),
                    },
                    Answer::Live => match kind {
                        ChallengeStep::Neutral { colour, .. }
                        | ChallengeStep::Flash { colour, .. } => {
                            lit(&base, *colour, 0.06, k + step as u32 * 3)
                        }
                        ChallengeStep::Turn { direction, .. } => {
                            frame("obama2.jpg", *direction == TurnDirection::Left)
                        }
                    },
                };
                let faces = chain.locate(&frame).unwrap().faces;
                let mirrored = chain
                    .locate(&image::imageops::flip_horizontal(&frame))
                    .unwrap()
                    .faces;
                let timing = FrameTiming { at_ms, step };
                frames.push(liveness::observe(&frame, &faces, &mirrored, timing));
            }
        }
        frames
    }

    #[derive(Debug, Clone, Copy, PartialEq)]
    enum Answer {
        Live,
        Still,
        TiltedPrint,
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
}
