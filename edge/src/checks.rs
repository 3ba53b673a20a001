//! The checks the edge runs on a capture: decoding within limits, face quality of the selfie and
//! the document, and the active liveness challenge, all with the light models that also run in
//! the browser (BlazeFace; no face embedding at the edge); and, where the host turns it on, the
//! passive presentation-attack model on the selfie's face.

use std::collections::BTreeMap;

use idyntra_models::liveness::{self, ActiveThresholds};
use idyntra_models::quality::{self, Capture as Purpose};
use idyntra_models::{
    AntiSpoofingModel, DecodeLimits, Face, FrameQuality, ModelError, bundled, pad,
};
use idyntra_types::{
    AttestedImage, AttestedLiveness, EdgeChecks, FrameTiming, ImageRole, LivenessMode, ModelUsed,
    QualityReport, ScoredCheck,
};
use image::RgbImage;
use sha2::{Digest, Sha256};

use crate::capture::Capture;

/// One check that failed, named so the capture screen can guide the person.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FailedCheck {
    /// `selfie`, `document`, `timeline` or `liveness`.
    pub part: &'static str,
    /// Stable code, e.g. `too_dark` or `spoof_suspected`.
    pub code: String,
    pub message: String,
}

impl FailedCheck {
    fn new(part: &'static str, code: &str, message: &str) -> Self {
        Self {
            part,
            code: code.to_owned(),
            message: message.to_owned(),
        }
    }
}

/// What the checks found.
#[derive(Debug, Clone, PartialEq)]
pub struct CheckOutcome {
    /// Absent when the selfie could not be decoded.
    pub checks: Option<EdgeChecks>,
    /// Every image, in upload order, with its hash.
    pub images: Vec<AttestedImage>,
    /// Empty when everything passed.
    pub failures: Vec<FailedCheck>,
}

/// What a session asks of its capture, from its client token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Requirements {
    pub liveness: LivenessMode,
    pub require_document: bool,
    /// The session nonce the active challenge is derived from.
    pub nonce: String,
}

/// The passive presentation-attack check on the selfie, as a host configures it.
#[derive(Debug, Clone)]
pub struct PassivePad {
    model: AntiSpoofingModel,
    /// The file's name and sha256, without its bytes: a build that never loads the model (the
    /// Worker) must not link them in.
    used: ModelUsed,
    /// Lowest liveness score (1 − the model's attack score) that passes.
    pub threshold: f32,
    /// Refuse a capture that does not pass (with `spoof_suspected`), rather than only attesting
    /// its score for the backend's policy.
    pub enforce: bool,
}

impl PassivePad {
    /// The bundled model at its authors' threshold: an attack score below 0.2 passes.
    pub fn bundled(enforce: bool) -> Result<Self, ModelError> {
        let model = bundled::ANTISPOOFING;
        Ok(Self {
            model: AntiSpoofingModel::load(model.onnx)?,
            used: ModelUsed {
                name: model.name.to_owned(),
                sha256: model.sha256.to_owned(),
            },
            threshold: 1.0 - pad::DTN_THRESHOLD,
            enforce,
        })
    }

    /// The model's name and sha256.
    pub fn model(&self) -> &ModelUsed {
        &self.used
    }

    /// The check of the largest face `frames` (BlazeFace) finds in `photo`, as the edge runs it on
    /// a selfie; `None` when there is no face or it lies outside the photo.
    pub fn check_photo(
        &self,
        frames: &FrameQuality,
        photo: &RgbImage,
    ) -> Result<Option<ScoredCheck>, ModelError> {
        match frames.faces(photo)?.first() {
            Some(face) => self.check(photo, face),
            None => Ok(None),
        }
    }

    /// The check of `face` in `selfie`; `None` when the face lies outside the photo.
    pub fn check(&self, selfie: &RgbImage, face: &Face) -> Result<Option<ScoredCheck>, ModelError> {
        let Some(attack) = self.model.score(selfie, face)? else {
            return Ok(None);
        };
        // Reported like every other check: higher is better, passing at the threshold.
        let score = (1.0 - attack).clamp(0.0, 1.0);
        Ok(Some(ScoredCheck {
            score,
            threshold: self.threshold,
            passed: score >= self.threshold,
            method: pad::METHOD.to_owned(),
            signals: BTreeMap::from([("attack_score".to_owned(), attack)]),
        }))
    }
}

/// The models and limits of the checks, loaded once and shared by every request.
#[derive(Debug, Clone)]
pub struct Checker {
    frames: FrameQuality,
    /// Off unless the host turns it on ([`Checker::with_passive_pad`]).
    passive_pad: Option<PassivePad>,
    /// Limits for the selfie and the document photo.
    pub decode: DecodeLimits,
    /// Limits for challenge frames: camera frames, far smaller than photos.
    pub frame_decode: DecodeLimits,
    pub active: ActiveThresholds,
}

impl Checker {
    pub fn bundled() -> Result<Self, ModelError> {
        Ok(Self {
            frames: FrameQuality::bundled()?,
            passive_pad: None,
            // A 16 MP photo decodes to 48 MB of RGB: within a Worker's 128 MB with room to work.
            decode: DecodeLimits {
                max_bytes: 8 * 1024 * 1024,
                max_pixels: 16_000_000,
                max_side: 8_000,
            },
            frame_decode: DecodeLimits {
                max_bytes: 2 * 1024 * 1024,
                max_pixels: 2_100_000,
                max_side: 2_048,
            },
            active: ActiveThresholds::default(),
        })
    }

    /// These checks with the passive presentation-attack model run on every selfie.
    pub fn with_passive_pad(mut self, passive_pad: PassivePad) -> Self {
        self.passive_pad = Some(passive_pad);
        self
    }

    /// The models behind every check.
    pub fn models(&self) -> Vec<ModelUsed> {
        let detector = bundled::BLAZEFACE_SHORT_RANGE;
        let pad = self.passive_pad.as_ref().map(|pad| pad.used.clone());
        std::iter::once(ModelUsed {
            name: detector.name.to_owned(),
            sha256: detector.sha256.to_owned(),
        })
        .chain(pad)
        .collect()
    }

    /// Runs every check on `capture`; a model that cannot run is an error of the service, not of
    /// the capture.
    pub fn check(
        &self,
        capture: &Capture,
        needs: &Requirements,
    ) -> Result<CheckOutcome, ModelError> {
        let mut failures = Vec::new();
        let images = attested_images(capture);
        let Some(selfie_bytes) = capture.selfies.first() else {
            failures.push(FailedCheck::new(
                "selfie",
                "selfie_missing",
                "At least one selfie is required.",
            ));
            return Ok(CheckOutcome {
                checks: None,
                images,
                failures,
            });
        };
        let selfie = match idyntra_models::decode(selfie_bytes, &self.decode) {
            Ok(decoded) => Some(decoded.image),
            Err(error) => {
                failures.push(FailedCheck::new("selfie", error.code(), &error.to_string()));
                None
            }
        };
        let mut pad = None;
        let mut selfie_faces = Vec::new();
        let selfie_quality = match &selfie {
            Some(selfie) => {
                let (report, faces) =
                    self.quality("selfie", selfie, Purpose::Selfie, &mut failures)?;
                pad = self.passive_pad(selfie, &faces, &mut failures)?;
                selfie_faces = faces;
                Some(report)
            }
            None => None,
        };
        let document_quality = match &capture.document {
            Some(bytes) => match idyntra_models::decode(bytes, &self.decode) {
                Ok(document) => Some(
                    self.quality(
                        "document",
                        &document.image,
                        Purpose::Document,
                        &mut failures,
                    )?
                    .0,
                ),
                Err(error) => {
                    failures.push(FailedCheck::new(
                        "document",
                        error.code(),
                        &error.to_string(),
                    ));
                    None
                }
            },
            None if needs.require_document => {
                failures.push(FailedCheck::new(
                    "document",
                    "document_missing",
                    "This session needs a photo of the identity document.",
                ));
                None
            }
            None => None,
        };
        let challenge = match needs.liveness {
            LivenessMode::Active => {
                let selfie = selfie
                    .as_ref()
                    .map(|image| (image, selfie_faces.as_slice()));
                Some(self.challenge(capture, selfie, needs, &mut failures)?)
            }
            LivenessMode::Passive => None,
        };
        let checks = selfie_quality.map(|selfie_quality| EdgeChecks {
            selfie_quality,
            document_quality,
            liveness: AttestedLiveness {
                mode: needs.liveness,
                challenge,
                pad,
                method_version: liveness::CHALLENGE_VERSION,
            },
        });
        Ok(CheckOutcome {
            checks,
            images,
            failures,
        })
    }

    /// The quality report of `image` and its faces, largest first.
    fn quality(
        &self,
        part: &'static str,
        image: &RgbImage,
        purpose: Purpose,
        failures: &mut Vec<FailedCheck>,
    ) -> Result<(QualityReport, Vec<Face>), ModelError> {
        let faces = self.frames.faces(image)?;
        let report = quality::assess(image, &faces, purpose, &self.frames.limits);
        failures.extend(
            report
                .failures
                .iter()
                .map(|code| FailedCheck::new(part, code.as_str(), code.guidance())),
        );
        Ok((report, faces))
    }

    /// The passive check of the selfie's largest face, when the host turned it on and there is
    /// one face (with none or several, the quality checks have failed the capture already).
    fn passive_pad(
        &self,
        selfie: &RgbImage,
        faces: &[Face],
        failures: &mut Vec<FailedCheck>,
    ) -> Result<Option<ScoredCheck>, ModelError> {
        let (Some(passive_pad), [face]) = (&self.passive_pad, faces) else {
            return Ok(None);
        };
        let check = passive_pad.check(selfie, face)?;
        if passive_pad.enforce && check.as_ref().is_some_and(|check| !check.passed) {
            failures.push(FailedCheck::new(
                "liveness",
                "spoof_suspected",
                "The selfie does not look like a live person in front of the camera: take it \
                 again yourself, not from a photo or a screen.",
            ));
        }
        Ok(check)
    }

    /// The active challenge derived from the session nonce, judged on the selfie parts (the first
    /// is the selfie, decoded and searched for faces already). Frames are decoded one at a time,
    /// within the frame limits, and dropped once observed: memory stays at one frame whatever
    /// their number.
    fn challenge(
        &self,
        capture: &Capture,
        selfie: Option<(&RgbImage, &[Face])>,
        needs: &Requirements,
        failures: &mut Vec<FailedCheck>,
    ) -> Result<ScoredCheck, ModelError> {
        let challenge = liveness::challenge_for(needs.nonce.as_bytes());
        let reads_yaw = |timing: &FrameTiming| liveness::step_reads_yaw(&challenge, timing.step);
        let mut observations = Vec::with_capacity(capture.selfies.len());
        if let Some(timeline) = &capture.timeline {
            let mut undecodable = None;
            for (i, (bytes, timing)) in capture.selfies.iter().zip(timeline).enumerate() {
                if i == 0 {
                    if let Some((frame, faces)) = selfie {
                        let observation =
                            self.frames
                                .observe_faces(frame, faces, *timing, reads_yaw(timing))?;
                        observations.push(observation);
                    }
                    continue;
                }
                // An undecodable frame is a failure; the rest are still judged.
                match idyntra_models::decode(bytes, &self.frame_decode) {
                    Ok(decoded) => {
                        let frame = decoded.image;
                        let faces = self.frames.faces(&frame)?;
                        let observation = self.frames.observe_faces(
                            &frame,
                            &faces,
                            *timing,
                            reads_yaw(timing),
                        )?;
                        observations.push(observation);
                    }
                    Err(error) => undecodable = Some(error),
                }
            }
            if let Some(error) = undecodable {
                failures.push(FailedCheck::new("frames", error.code(), &error.to_string()));
            }
        } else {
            failures.push(FailedCheck::new(
                "timeline",
                "timeline_missing",
                "An active liveness session sends the challenge frames with their timeline.",
            ));
        }
        let verdict = liveness::verify(&challenge, &observations, &self.active);
        if !verdict.passed {
            failures.push(liveness_failure(&verdict));
        }
        Ok(verdict)
    }
}

/// The code of a failed challenge: what went wrong, where the verifier says.
fn liveness_failure(verdict: &ScoredCheck) -> FailedCheck {
    let failed = |reason: &str| verdict.signals.contains_key(&format!("failed_{reason}"));
    let (code, message) = if failed("timeline") {
        (
            "challenge_incomplete",
            "The challenge was not followed to the end: try again and follow every step.",
        )
    } else if failed("multiple_faces") {
        ("multiple_faces", "Only one person may be in view.")
    } else if failed("face_presence") {
        (
            "face_not_seen",
            "Keep your face in view during the whole challenge.",
        )
    } else if failed("identity") {
        ("face_changed", "The same person must stay in view.")
    } else {
        (
            "spoof_suspected",
            "The challenge was not answered by a live person in front of the camera.",
        )
    };
    FailedCheck::new("liveness", code, message)
}

fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

fn attested_images(capture: &Capture) -> Vec<AttestedImage> {
    let mut images: Vec<AttestedImage> = capture
        .selfies
        .iter()
        .enumerate()
        .map(|(i, bytes)| AttestedImage {
            role: if i == 0 {
                ImageRole::Selfie
            } else {
                ImageRole::Frame
            },
            index: u32::try_from(i).unwrap_or(u32::MAX),
            sha256: sha256_hex(bytes),
            timing: capture.timeline.as_ref().and_then(|t| t.get(i).copied()),
        })
        .collect();
    if let Some(document) = &capture.document {
        images.push(AttestedImage {
            role: ImageRole::Document,
            index: 0,
            sha256: sha256_hex(document),
            timing: None,
        });
    }
    images
}
