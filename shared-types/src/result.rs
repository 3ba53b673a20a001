//! The result of a verification: one object per check, each with its score, the threshold it was
//! judged against and whether it passed, plus the decision, stable reason codes and the sha256 of
//! every model that produced a score. `idyntra verify --json` prints the same shape.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// The outcome of a verification.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum Decision {
    /// Every required check ran and passed.
    Verified,
    /// A check ran and failed.
    Rejected,
    /// Nothing failed, but a required check could not be run; a person should look.
    NeedsReview,
}

/// Why a verification was not simply verified. Stable: clients branch on these.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum ReasonCode {
    /// The faces of the selfie and the document belong to different people.
    FaceMismatch,
    /// No face was found in the selfie or the document.
    NoFace,
    /// The selfie shows more than one face.
    MultipleFaces,
    /// A photo is too poor to judge (see the quality failures).
    LowQuality,
    /// The liveness checks failed.
    LivenessFailed,
    /// Liveness was not checked (no live capture was given).
    LivenessNotChecked,
    /// The manipulation detector suspects a deepfake or a face swap.
    DeepfakeSuspected,
    /// No manipulation detector ran.
    ManipulationNotChecked,
}

/// The face comparison of the selfie with the document portrait.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct FaceMatchResult {
    /// Cosine similarity of the two face embeddings, −1…1.
    pub score: f32,
    /// Scores at or above this are the same person.
    pub threshold: f32,
    pub passed: bool,
    /// The false-match rate the threshold was calibrated for on people it had not seen.
    pub calibrated_fmr: f64,
}

/// A quality failure the capture UI can turn into guidance. Stable codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum QualityCode {
    NoFace,
    MultipleFaces,
    FaceTooSmall,
    FaceTooLarge,
    NotCentred,
    Pose,
    TooDark,
    TooBright,
    LowContrast,
    Blurry,
}

impl QualityCode {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::NoFace => "no_face",
            Self::MultipleFaces => "multiple_faces",
            Self::FaceTooSmall => "face_too_small",
            Self::FaceTooLarge => "face_too_large",
            Self::NotCentred => "not_centred",
            Self::Pose => "pose",
            Self::TooDark => "too_dark",
            Self::TooBright => "too_bright",
            Self::LowContrast => "low_contrast",
            Self::Blurry => "blurry",
        }
    }

    /// What the person should do, in words a capture screen can show.
    pub fn guidance(self) -> &'static str {
        match self {
            Self::NoFace => "No face was found: look at the camera.",
            Self::MultipleFaces => "More than one face was found: only one person may be in view.",
            Self::FaceTooSmall => "The face is too small: come closer.",
            Self::FaceTooLarge => "The face is too close: move back a little.",
            Self::NotCentred => "Centre the face in the frame.",
            Self::Pose => "Look straight at the camera.",
            Self::TooDark => "The picture is too dark: find more light.",
            Self::TooBright => "The picture is too bright: avoid direct light.",
            Self::LowContrast => "The picture is washed out: avoid light behind you.",
            Self::Blurry => "The picture is blurry: hold still.",
        }
    }
}

/// Quality components, each 0 (unusable) … 100 (ideal), in the spirit of ISO/IEC 29794-5.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct QualityComponents {
    pub sharpness: u8,
    pub exposure: u8,
    pub contrast: u8,
    /// Inter-eye distance in pixels, against the minimum for matching.
    pub face_size: u8,
    /// Yaw, pitch and roll together.
    pub pose: u8,
    pub centring: u8,
    /// 100 for one face, 0 for none or several.
    pub single_face: u8,
}

/// The quality of one photo or frame.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct QualityReport {
    /// 0…100: the lowest component (a photo is as usable as its worst aspect).
    pub score: u8,
    pub components: QualityComponents,
    /// Empty when the photo is usable.
    pub failures: Vec<QualityCode>,
    /// Measurements behind the components, for guidance and audit.
    pub measurements: QualityMeasurements,
}

/// Raw measurements behind a [`QualityReport`].
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct QualityMeasurements {
    pub faces: usize,
    pub inter_eye_px: f32,
    /// Degrees; positive yaw turns the face to the image's right, positive pitch looks down.
    pub yaw_deg: f32,
    pub pitch_deg: f32,
    pub roll_deg: f32,
    /// Mean luma of the face, 0–255.
    pub face_luma: f32,
    /// Standard deviation of the face's luma.
    pub face_contrast: f32,
    /// Variance of the Laplacian of the face at a fixed scale.
    pub sharpness: f32,
    /// Distance of the face centre from the frame centre, as a fraction of the frame.
    pub off_centre: f32,
}

/// Quality of the photos of one verification.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct QualityResult {
    /// The lower of the photos' scores.
    pub score: u8,
    pub threshold: u8,
    pub passed: bool,
    pub selfie: QualityReport,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub document: Option<QualityReport>,
}

/// A check that produced a score with a threshold (liveness, manipulation).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ScoredCheck {
    pub score: f32,
    pub threshold: f32,
    pub passed: bool,
    /// How the score was made, e.g. `active_challenge`.
    pub method: String,
    /// Per-signal details.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub signals: BTreeMap<String, f32>,
}

/// A model that contributed to the result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ModelUsed {
    pub name: String,
    pub sha256: String,
}

/// `session.result`, and the output of `idyntra verify --json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct VerificationResult {
    pub decision: Decision,
    /// Absent when a photo had no face.
    pub face_match: Option<FaceMatchResult>,
    /// The liveness evidence the decision used; absent when liveness was not checked.
    pub liveness: Option<ScoredCheck>,
    /// The passive presentation-attack score the edge attested, whether or not the policy
    /// counted it as liveness evidence (`decision.passive_pad`); absent when no passive model ran.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub passive_pad: Option<ScoredCheck>,
    /// Absent when no manipulation detector ran.
    pub manipulation: Option<ScoredCheck>,
    pub quality: QualityResult,
    /// Sorted, without repeats; empty when verified.
    pub reasons: Vec<ReasonCode>,
    pub models: Vec<ModelUsed>,
    /// The inference engine that ran the backend's models (e.g. `tract-cpu`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub engine: Option<String>,
    /// Milliseconds per stage.
    pub timings_ms: BTreeMap<String, f64>,
}

impl VerificationResult {
    /// The decision the checks imply: rejected when a check ran and failed, otherwise needs review
    /// when a required check did not run, otherwise verified.
    pub fn decide(reasons: &[ReasonCode]) -> Decision {
        let failed = reasons.iter().any(|r| {
            !matches!(
                r,
                ReasonCode::LivenessNotChecked | ReasonCode::ManipulationNotChecked
            )
        });
        if failed {
            Decision::Rejected
        } else if reasons.is_empty() {
            Decision::Verified
        } else {
            Decision::NeedsReview
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quality_codes_name_themselves_as_serde_does() {
        use QualityCode::*;
        for code in [
            NoFace,
            MultipleFaces,
            FaceTooSmall,
            FaceTooLarge,
            NotCentred,
            Pose,
            TooDark,
            TooBright,
            LowContrast,
            Blurry,
        ] {
            assert_eq!(serde_json::to_value(code).unwrap(), code.as_str());
        }
    }

    #[test]
    fn a_failed_check_rejects_and_a_missing_one_asks_for_review() {
        assert_eq!(VerificationResult::decide(&[]), Decision::Verified);
        assert_eq!(
            VerificationResult::decide(&[ReasonCode::LivenessNotChecked]),
            Decision::NeedsReview
        );
        assert_eq!(
            VerificationResult::decide(&[ReasonCode::LivenessNotChecked, ReasonCode::FaceMismatch]),
            Decision::Rejected
        );
    }

    #[test]
    fn codes_are_snake_case_on_the_wire() {
        assert_eq!(
            serde_json::to_string(&QualityCode::FaceTooSmall).unwrap(),
            "\"face_too_small\""
        );
        assert_eq!(
            serde_json::to_string(&Decision::NeedsReview).unwrap(),
            "\"needs_review\""
        );
    }
}
