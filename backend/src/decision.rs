//! The decision of finalize: the backend's face match, the liveness and quality the edge attested,
//! and the configured policy for checks that could not run, turned into `verified`, `rejected` or
//! `needs_review` with stable reason codes.

use std::collections::BTreeMap;

use idyntra_models::{MatchPolicy, manipulation};
use idyntra_types::{
    AttestationClaims, Decision, ModelUsed, QualityCode, QualityReport, QualityResult, ReasonCode,
    ScoredCheck, VerificationResult,
};

use crate::config::{DecisionConfig, SignalUse, WhenUnchecked};
use crate::verify::QUALITY_THRESHOLD;

/// What the backend's own models found.
#[derive(Debug, Clone, PartialEq)]
pub struct FaceEvidence {
    pub selfie_faces: usize,
    /// `None` when the capture has no document.
    pub document_faces: Option<usize>,
    /// Cosine similarity of the selfie's and the document's main faces, when both have one.
    pub similarity: Option<f32>,
    /// The manipulation model's scores of the selfie's and the document's main faces.
    pub manipulation: Manipulation,
}

/// The manipulation scores of a capture's faces (how likely each was blended in, 0–1).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Manipulation {
    pub selfie: Option<f32>,
    pub document: Option<f32>,
}

/// The policy of a deployment: the match threshold and what unchecked evidence means.
#[derive(Debug, Clone, Copy)]
pub struct Policy {
    pub face_match: MatchPolicy,
    pub liveness_unchecked: WhenUnchecked,
    pub passive_pad: SignalUse,
    pub manipulation: SignalUse,
    /// Manipulation scores at or above it are flagged.
    pub manipulation_threshold: f32,
    pub manipulation_unchecked: WhenUnchecked,
}

impl Policy {
    /// The policy of `config`; `manipulation_threshold` is the bundled model's, unless the
    /// configuration sets one.
    pub fn new(config: &DecisionConfig, manipulation_threshold: f32) -> Self {
        let mut face_match = MatchPolicy::MOBILEFACENET;
        if let Some(threshold) = config.face_match_threshold {
            face_match.threshold = threshold;
        }
        Self {
            face_match,
            liveness_unchecked: config.liveness_unchecked,
            passive_pad: config.passive_pad,
            manipulation: config.manipulation,
            manipulation_threshold: config
                .manipulation_threshold
                .unwrap_or(manipulation_threshold),
            manipulation_unchecked: config.manipulation_unchecked,
        }
    }

    /// The manipulation check of a capture's scores: the most suspicious face decides, both
    /// scores are kept as signals; `None` when no face was scored.
    pub fn manipulation_check(&self, scores: &Manipulation) -> Option<ScoredCheck> {
        let faces = [("selfie", scores.selfie), ("document", scores.document)];
        let score = faces
            .iter()
            .filter_map(|(_, score)| *score)
            .reduce(f32::max)?;
        Some(ScoredCheck {
            score,
            threshold: self.manipulation_threshold,
            passed: score < self.manipulation_threshold,
            method: manipulation::METHOD.to_owned(),
            signals: faces
                .iter()
                .filter_map(|(face, score)| score.map(|s| ((*face).to_owned(), s)))
                .collect(),
        })
    }
}

/// The result of a session whose capture `claims` attests.
pub fn decide(
    policy: &Policy,
    claims: &AttestationClaims,
    evidence: &FaceEvidence,
    models: Vec<ModelUsed>,
    engine: &str,
    timings_ms: BTreeMap<String, f64>,
) -> VerificationResult {
    let mut reasons = Vec::new();
    let edge = &claims.checks;
    for report in std::iter::once(&edge.selfie_quality).chain(&edge.document_quality) {
        reasons.extend(report.failures.iter().map(|failure| match failure {
            QualityCode::NoFace => ReasonCode::NoFace,
            QualityCode::MultipleFaces => ReasonCode::MultipleFaces,
            _ => ReasonCode::LowQuality,
        }));
    }
    match evidence.selfie_faces {
        0 => reasons.push(ReasonCode::NoFace),
        1 => {}
        _ => reasons.push(ReasonCode::MultipleFaces),
    }
    if evidence.document_faces == Some(0) {
        reasons.push(ReasonCode::NoFace);
    }
    let face_match = evidence
        .similarity
        .map(|score| policy.face_match.judge(score));
    if face_match.as_ref().is_some_and(|m| !m.passed) {
        reasons.push(ReasonCode::FaceMismatch);
    }

    // The challenge is the liveness evidence when there was one, else the passive score where
    // the policy counts it.
    let passive_pad = edge.liveness.pad.clone();
    let liveness = edge.liveness.challenge.clone().or_else(|| {
        passive_pad
            .clone()
            .filter(|_| policy.passive_pad == SignalUse::Evidence)
    });
    let mut unchecked_review = false;
    match &liveness {
        Some(check) if !check.passed => reasons.push(ReasonCode::LivenessFailed),
        Some(_) => {}
        None => {
            reasons.push(ReasonCode::LivenessNotChecked);
            unchecked_review |= policy.liveness_unchecked == WhenUnchecked::Review;
        }
    }
    // The manipulation score decides only where the policy counts it as evidence.
    let manipulation = policy.manipulation_check(&evidence.manipulation);
    match manipulation
        .as_ref()
        .filter(|_| policy.manipulation == SignalUse::Evidence)
    {
        Some(check) if !check.passed => reasons.push(ReasonCode::DeepfakeSuspected),
        Some(_) => {}
        None => {
            reasons.push(ReasonCode::ManipulationNotChecked);
            unchecked_review |= policy.manipulation_unchecked == WhenUnchecked::Review;
        }
    }
    reasons.sort_unstable();
    reasons.dedup();

    let failed = reasons.iter().any(|reason| {
        !matches!(
            reason,
            ReasonCode::LivenessNotChecked | ReasonCode::ManipulationNotChecked
        )
    });
    let decision = if failed {
        Decision::Rejected
    } else if unchecked_review {
        Decision::NeedsReview
    } else {
        Decision::Verified
    };
    VerificationResult {
        decision,
        face_match,
        liveness,
        passive_pad,
        manipulation,
        quality: quality(&edge.selfie_quality, edge.document_quality.as_ref()),
        reasons,
        models,
        engine: Some(engine.to_owned()),
        timings_ms,
    }
}

fn quality(selfie: &QualityReport, document: Option<&QualityReport>) -> QualityResult {
    let score = document.map_or(selfie.score, |d| d.score.min(selfie.score));
    let passed =
        selfie.failures.is_empty() && document.is_none_or(|report| report.failures.is_empty());
    QualityResult {
        score,
        threshold: QUALITY_THRESHOLD,
        passed,
        selfie: selfie.clone(),
        document: document.cloned(),
    }
}

#[cfg(test)]
mod tests {
    use idyntra_types::{AttestedLiveness, EdgeChecks, LivenessMode};

    use super::*;

    fn claims(challenge: Option<bool>) -> AttestationClaims {
        let report: QualityReport = serde_json::from_value(serde_json::json!({
            "score": 90,
            "components": {"sharpness": 90, "exposure": 90, "contrast": 90, "face_size": 90,
                "pose": 90, "centring": 90, "single_face": 100},
            "failures": [],
            "measurements": {"faces": 1, "inter_eye_px": 60.0, "yaw_deg": 0.0, "pitch_deg": 0.0,
                "roll_deg": 0.0, "face_luma": 120.0, "face_contrast": 40.0, "sharpness": 200.0,
                "off_centre": 0.1}
        }))
        .unwrap();
        AttestationClaims {
            iss: "edge".into(),
            aud: "idyntra-backend".into(),
            sub: "ses".into(),
            sid: "ses".into(),
            nonce: "n".into(),
            iat: 0,
            exp: 1,
            jti: "j".into(),
            images: Vec::new(),
            checks: EdgeChecks {
                selfie_quality: report.clone(),
                document_quality: Some(report),
                liveness: AttestedLiveness {
                    mode: if challenge.is_some() {
                        LivenessMode::Active
                    } else {
                        LivenessMode::Passive
                    },
                    challenge: challenge.map(|passed| ScoredCheck {
                        score: if passed { 0.9 } else { 0.1 },
                        threshold: 0.5,
                        passed,
                        method: "challenge".into(),
                        signals: BTreeMap::new(),
                    }),
                    pad: None,
                    method_version: 1,
                },
            },
            injection_signals: BTreeMap::new(),
            models: Vec::new(),
        }
    }

    fn evidence(similarity: f32) -> FaceEvidence {
        FaceEvidence {
            selfie_faces: 1,
            document_faces: Some(1),
            similarity: Some(similarity),
            manipulation: Manipulation::default(),
        }
    }

    fn policy(manipulation: WhenUnchecked) -> Policy {
        Policy {
            face_match: MatchPolicy::MOBILEFACENET,
            liveness_unchecked: WhenUnchecked::Review,
            passive_pad: SignalUse::Advisory,
            manipulation: SignalUse::Advisory,
            manipulation_threshold: 0.6,
            manipulation_unchecked: manipulation,
        }
    }

    /// Passive claims whose edge attested a passive score that passed or not.
    fn passive_claims(pad_passed: bool) -> AttestationClaims {
        let mut claims = claims(None);
        claims.checks.liveness.pad = Some(ScoredCheck {
            score: if pad_passed { 0.99 } else { 0.05 },
            threshold: 0.8,
            passed: pad_passed,
            method: "passive_dtn".into(),
            signals: BTreeMap::new(),
        });
        claims
    }

    fn run(
        policy: &Policy,
        claims: &AttestationClaims,
        evidence: &FaceEvidence,
    ) -> VerificationResult {
        decide(
            policy,
            claims,
            evidence,
            Vec::new(),
            "test",
            BTreeMap::new(),
        )
    }

    #[test]
    fn a_match_with_a_passed_challenge_is_verified_when_the_policy_allows() {
        let lenient = policy(WhenUnchecked::Ignore);
        let result = run(&lenient, &claims(Some(true)), &evidence(0.8));
        assert_eq!(result.decision, Decision::Verified, "{:?}", result.reasons);
        assert_eq!(result.reasons, vec![ReasonCode::ManipulationNotChecked]);
        assert!(result.liveness.unwrap().passed);
        // The default policy wants a person to look while no manipulation detector ran.
        let strict = policy(WhenUnchecked::Review);
        assert_eq!(
            run(&strict, &claims(Some(true)), &evidence(0.8)).decision,
            Decision::NeedsReview
        );
    }

    #[test]
    fn failures_reject_with_their_reasons() {
        let lenient = policy(WhenUnchecked::Ignore);
        let mismatch = run(&lenient, &claims(Some(true)), &evidence(0.1));
        assert_eq!(mismatch.decision, Decision::Rejected);
        assert!(mismatch.reasons.contains(&ReasonCode::FaceMismatch));
        assert!(!mismatch.face_match.unwrap().passed);

        let spoof = run(&lenient, &claims(Some(false)), &evidence(0.8));
        assert_eq!(spoof.decision, Decision::Rejected);
        assert!(spoof.reasons.contains(&ReasonCode::LivenessFailed));

        let blank = FaceEvidence {
            selfie_faces: 2,
            document_faces: Some(0),
            similarity: None,
            manipulation: Manipulation::default(),
        };
        let result = run(&lenient, &claims(Some(true)), &blank);
        assert_eq!(result.decision, Decision::Rejected);
        assert!(result.reasons.contains(&ReasonCode::NoFace));
        assert!(result.reasons.contains(&ReasonCode::MultipleFaces));
    }

    #[test]
    fn passive_sessions_without_a_passive_model_need_review() {
        let result = run(
            &policy(WhenUnchecked::Ignore),
            &claims(None),
            &evidence(0.8),
        );
        assert_eq!(result.decision, Decision::NeedsReview);
        assert!(result.reasons.contains(&ReasonCode::LivenessNotChecked));
        assert!(result.liveness.is_none());
    }

    #[test]
    fn an_advisory_passive_score_is_shown_and_decides_nothing() {
        let advisory = policy(WhenUnchecked::Ignore);
        for passed in [true, false] {
            let result = run(&advisory, &passive_claims(passed), &evidence(0.8));
            assert_eq!(result.decision, Decision::NeedsReview, "{passed}");
            assert!(result.reasons.contains(&ReasonCode::LivenessNotChecked));
            assert!(result.liveness.is_none());
            assert_eq!(result.passive_pad.unwrap().passed, passed);
        }
    }

    #[test]
    fn a_passive_score_counted_as_evidence_is_the_sessions_liveness() {
        let counted = Policy {
            passive_pad: SignalUse::Evidence,
            ..policy(WhenUnchecked::Ignore)
        };
        let live = run(&counted, &passive_claims(true), &evidence(0.8));
        assert_eq!(live.decision, Decision::Verified, "{:?}", live.reasons);
        assert_eq!(live.liveness, live.passive_pad);
        let spoof = run(&counted, &passive_claims(false), &evidence(0.8));
        assert_eq!(spoof.decision, Decision::Rejected);
        assert!(spoof.reasons.contains(&ReasonCode::LivenessFailed));
        // An active challenge is the evidence whenever there was one.
        let mut both = passive_claims(false);
        both.checks.liveness.challenge = claims(Some(true)).checks.liveness.challenge;
        assert_eq!(
            run(&counted, &both, &evidence(0.8)).decision,
            Decision::Verified
        );
    }

    #[test]
    fn a_manipulation_score_is_shown_and_counts_only_as_evidence() {
        let scored = |selfie: f32, document: f32| FaceEvidence {
            manipulation: Manipulation {
                selfie: Some(selfie),
                document: Some(document),
            },
            ..evidence(0.8)
        };
        // Advisory (the default): shown, with both faces' scores, and still unchecked.
        let advisory = policy(WhenUnchecked::Review);
        let result = run(&advisory, &claims(Some(true)), &scored(0.9, 0.1));
        assert_eq!(result.decision, Decision::NeedsReview);
        assert!(result.reasons.contains(&ReasonCode::ManipulationNotChecked));
        let check = result.manipulation.unwrap();
        assert_eq!(
            (check.score, check.threshold, check.passed),
            (0.9, 0.6, false)
        );
        assert_eq!(check.signals["selfie"], 0.9);
        assert_eq!(check.signals["document"], 0.1);
        assert_eq!(check.method, manipulation::METHOD);

        // As evidence: a flagged face rejects, unflagged faces count as checked.
        let counted = Policy {
            manipulation: SignalUse::Evidence,
            ..policy(WhenUnchecked::Review)
        };
        let flagged = run(&counted, &claims(Some(true)), &scored(0.1, 0.6));
        assert_eq!(flagged.decision, Decision::Rejected);
        assert_eq!(flagged.reasons, vec![ReasonCode::DeepfakeSuspected]);
        let clean = run(&counted, &claims(Some(true)), &scored(0.2, 0.3));
        assert_eq!(clean.decision, Decision::Verified, "{:?}", clean.reasons);
        assert!(clean.reasons.is_empty());
        // No face scored: unchecked, whatever the policy.
        let none = run(&counted, &claims(Some(true)), &evidence(0.8));
        assert!(none.manipulation.is_none());
        assert_eq!(none.decision, Decision::NeedsReview);
    }

    #[test]
    fn the_manipulation_threshold_is_the_models_unless_configured() {
        let config = DecisionConfig::default();
        assert_eq!(Policy::new(&config, 0.6).manipulation_threshold, 0.6);
        let config = DecisionConfig {
            manipulation_threshold: Some(0.3),
            ..DecisionConfig::default()
        };
        assert_eq!(Policy::new(&config, 0.6).manipulation_threshold, 0.3);
    }
}
