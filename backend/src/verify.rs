//! `idyntra verify --selfie A --document B`: the face chain on two photos, offline, with the same
//! result shape as the API (`session.result`).
//!
//! Two still photos cannot prove liveness, and the manipulation score is advisory (as in the
//! API's default policy), so the best decision here is `needs_review`; a mismatch, a missing face
//! or a poor photo rejects. With `--passive-pad` the passive presentation-attack model scores the
//! selfie as the edge would; like the API's default policy (`decision.passive_pad = "advisory"`),
//! the score is reported and decides nothing.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Instant;

use anyhow::Context;
use idyntra_edge::PassivePad;
use idyntra_models::manipulation::{self, BlendModel};
use idyntra_models::quality::{self, Capture, QualityThresholds};
use idyntra_models::{
    DecodeLimits, FaceChain, FrameQuality, LocatedFaces, MatchPolicy, decode, embedding,
};
use idyntra_types::{ModelUsed, QualityCode, QualityResult, ReasonCode, VerificationResult};

use crate::config::DecisionConfig;
use crate::decision::{Manipulation, Policy};

/// The overall quality score at or above which a photo is usable (a component at its limit
/// scores 50).
pub const QUALITY_THRESHOLD: u8 = 50;

/// Compares the face of `selfie` with the face of `document`; scores the selfie with
/// `passive_pad` too when given.
pub fn verify(
    selfie: &Path,
    document: &Path,
    chain: &FaceChain,
    policy: MatchPolicy,
    passive_pad: Option<&PassivePad>,
) -> anyhow::Result<VerificationResult> {
    let mut timings = BTreeMap::new();
    let mut timed = |stage: &str, started: Instant| {
        timings.insert(stage.to_owned(), started.elapsed().as_secs_f64() * 1000.0);
    };
    let limits = QualityThresholds::default();
    let mut photos = Vec::with_capacity(2);
    for (role, path) in [("selfie", selfie), ("document", document)] {
        let bytes = std::fs::read(path)
            .with_context(|| format!("{role}: cannot read {}", path.display()))?;
        let started = Instant::now();
        let photo = decode(&bytes, &DecodeLimits::default())
            .map_err(|e| anyhow::anyhow!("{role} ({}): {e} [{}]", path.display(), e.code()))?
            .image;
        timed(&format!("{role}_decode"), started);
        let started = Instant::now();
        let located = chain.locate(&photo)?;
        timed(&format!("{role}_detect_align"), started);
        photos.push((photo, located));
    }
    let (selfie_photo, selfie_faces) = &photos[0];
    let (document_photo, document_faces) = &photos[1];

    let started = Instant::now();
    let blend = BlendModel::bundled()?;
    let score = |photo, located: &LocatedFaces| {
        located
            .main_face()
            .and_then(|face| blend.score_face(photo, face))
    };
    let manipulation = Policy::new(&DecisionConfig::default(), blend.threshold).manipulation_check(
        &Manipulation {
            selfie: score(selfie_photo, selfie_faces),
            document: score(document_photo, document_faces),
        },
    );
    timed("manipulation", started);

    let started = Instant::now();
    let selfie_quality =
        quality::assess(selfie_photo, &selfie_faces.faces, Capture::Selfie, &limits);
    let document_quality = quality::assess(
        document_photo,
        &document_faces.faces,
        Capture::Document,
        &limits,
    );
    timed("quality", started);

    // The edge's way: BlazeFace's largest face in the selfie, squared, to the network.
    let passive = match passive_pad {
        Some(model) => {
            let started = Instant::now();
            let check = model.check_photo(&FrameQuality::bundled()?, selfie_photo)?;
            timed("passive_pad", started);
            check
        }
        None => None,
    };
    // Listed when it scored the selfie (not when BlazeFace found no face there).
    let passive_model = passive_pad
        .filter(|_| passive.is_some())
        .map(|model| model.model().clone());

    let face_match = match (&selfie_faces.crop, &document_faces.crop) {
        (Some(a), Some(b)) => {
            let started = Instant::now();
            let embeddings = chain.embed(&[a, b])?;
            timed("embed", started);
            Some(policy.judge(embedding::cosine(&embeddings[0], &embeddings[1])))
        }
        _ => None,
    };

    let mut reasons = vec![
        ReasonCode::LivenessNotChecked,
        ReasonCode::ManipulationNotChecked,
    ];
    for report in [&selfie_quality, &document_quality] {
        for failure in &report.failures {
            reasons.push(match failure {
                QualityCode::NoFace => ReasonCode::NoFace,
                QualityCode::MultipleFaces => ReasonCode::MultipleFaces,
                _ => ReasonCode::LowQuality,
            });
        }
    }
    if face_match.as_ref().is_some_and(|m| !m.passed) {
        reasons.push(ReasonCode::FaceMismatch);
    }
    reasons.sort_unstable();
    reasons.dedup();

    let score = selfie_quality.score.min(document_quality.score);
    let usable = selfie_quality.failures.is_empty() && document_quality.failures.is_empty();
    Ok(VerificationResult {
        decision: VerificationResult::decide(&reasons),
        face_match,
        liveness: None,
        passive_pad: passive,
        manipulation,
        quality: QualityResult {
            score,
            threshold: QUALITY_THRESHOLD,
            passed: usable,
            selfie: selfie_quality,
            document: Some(document_quality),
        },
        reasons,
        models: chain
            .models()
            .iter()
            .map(|m| ModelUsed {
                name: m.name.to_owned(),
                sha256: m.sha256.to_owned(),
            })
            .chain([ModelUsed {
                name: manipulation::MODEL_NAME.to_owned(),
                sha256: BlendModel::bundled_sha256().to_owned(),
            }])
            .chain(passive_model)
            .collect(),
        engine: Some("tract-cpu".to_owned()),
        timings_ms: timings,
    })
}

/// The result for a terminal.
pub fn text(result: &VerificationResult) -> String {
    let mut out = String::new();
    let decision = code(&result.decision);
    let reasons: Vec<String> = result.reasons.iter().map(code).collect();
    out.push_str(&format!("decision: {decision}"));
    if !reasons.is_empty() {
        out.push_str(&format!(" ({})", reasons.join(", ")));
    }
    out.push('\n');
    match &result.face_match {
        Some(m) => out.push_str(&format!(
            "face match: score {:.4}, threshold {:.4} (calibrated for FMR {} %): {}\n",
            m.score,
            m.threshold,
            m.calibrated_fmr * 100.0,
            if m.passed { "passed" } else { "failed" }
        )),
        None => out.push_str("face match: not scored (no face in a photo)\n"),
    }
    let q = &result.quality;
    let failures = |report: &idyntra_types::QualityReport| {
        report
            .failures
            .iter()
            .map(code)
            .collect::<Vec<_>>()
            .join(", ")
    };
    out.push_str(&format!(
        "quality: {} (threshold {}): {}\n  selfie {} [{}] {:?}\n",
        q.score,
        q.threshold,
        if q.passed { "passed" } else { "failed" },
        q.selfie.score,
        failures(&q.selfie),
        q.selfie.components
    ));
    if let Some(document) = &q.document {
        out.push_str(&format!(
            "  document {} [{}] {:?}\n",
            document.score,
            failures(document),
            document.components
        ));
    }
    out.push_str("liveness: not checked (two still photos cannot prove liveness)\n");
    if let Some(pad) = &result.passive_pad {
        out.push_str(&format!(
            "passive presentation-attack model: liveness score {:.4}, threshold {:.4}: {} \
             (advisory: decides nothing)\n",
            pad.score,
            pad.threshold,
            if pad.passed { "passed" } else { "failed" }
        ));
    }
    match &result.manipulation {
        Some(m) => out.push_str(&format!(
            "manipulation: score {:.4}, threshold {:.4}: {} (advisory: decides nothing)\n",
            m.score,
            m.threshold,
            if m.passed { "not flagged" } else { "flagged" }
        )),
        None => out.push_str("manipulation: not scored (no face in a photo)\n"),
    }
    for model in &result.models {
        out.push_str(&format!("model {}: sha256 {}\n", model.name, model.sha256));
    }
    let timings: Vec<String> = result
        .timings_ms
        .iter()
        .map(|(stage, ms)| format!("{stage} {ms:.1}"))
        .collect();
    out.push_str(&format!("timings (ms): {}\n", timings.join(", ")));
    out
}

/// The wire code of a unit enum value (its JSON string).
fn code(value: &impl serde::Serialize) -> String {
    serde_json::to_value(value)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use idyntra_types::Decision;

    use super::*;

    #[test]
    fn the_same_person_needs_review_and_different_people_are_rejected() {
        let chain = FaceChain::bundled(FaceChain::CANVAS).unwrap();
        let faces = concat!(env!("CARGO_MANIFEST_DIR"), "/../../shared/fixtures/faces");
        let path = |name: &str| Path::new(faces).join(name);
        let policy = MatchPolicy::MOBILEFACENET;

        let same = verify(&path("img1.jpg"), &path("img2.jpg"), &chain, policy, None).unwrap();
        assert_eq!(same.decision, Decision::NeedsReview, "{}", text(&same));
        assert_eq!(
            same.reasons,
            vec![
                ReasonCode::LivenessNotChecked,
                ReasonCode::ManipulationNotChecked
            ]
        );
        assert!(same.face_match.as_ref().unwrap().passed);

        let different =
            verify(&path("img1.jpg"), &path("img13.jpg"), &chain, policy, None).unwrap();
        assert_eq!(different.decision, Decision::Rejected);
        assert!(different.reasons.contains(&ReasonCode::FaceMismatch));
        // CenterFace, MobileFaceNet and the manipulation model.
        assert_eq!(different.models.len(), 3);
        assert!(different.manipulation.is_some());
        assert!(text(&different).starts_with("decision: rejected (face_mismatch"));
        assert!(same.passive_pad.is_none() && different.passive_pad.is_none());
    }

    #[test]
    fn the_passive_score_is_reported_and_decides_nothing() {
        let chain = FaceChain::bundled(FaceChain::CANVAS).unwrap();
        let faces = concat!(env!("CARGO_MANIFEST_DIR"), "/../../shared/fixtures/faces");
        let path = |name: &str| Path::new(faces).join(name);
        let policy = MatchPolicy::MOBILEFACENET;
        let model = PassivePad::bundled(false).unwrap();
        let (selfie, document) = (path("img1.jpg"), path("img2.jpg"));

        let without = verify(&selfie, &document, &chain, policy, None).unwrap();
        let with = verify(&selfie, &document, &chain, policy, Some(&model)).unwrap();
        let pad = with.passive_pad.as_ref().expect("the selfie has a face");
        assert!((0.0..=1.0).contains(&pad.score), "{pad:?}");
        assert_eq!(pad.passed, pad.score >= pad.threshold);
        assert!(pad.signals.contains_key("attack_score"));
        // Advisory: the same decision for the same reasons, whatever the score.
        assert_eq!(with.decision, without.decision);
        assert_eq!(with.reasons, without.reasons);
        assert!(with.liveness.is_none());
        assert_eq!(with.models.len(), without.models.len() + 1);
        assert_eq!(with.models.last(), Some(model.model()));
        assert!(with.timings_ms.contains_key("passive_pad"));
        assert!(text(&with).contains("passive presentation-attack model: liveness score"));
    }
}
