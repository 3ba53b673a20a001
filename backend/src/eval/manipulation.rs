//! `idyntra eval manipulation`: trains and calibrates the manipulation model on photos of real
//! people, and measures it on people it was not trained on.
//!
//! From every photo it makes real samples (the face's crop, its landmarks jittered, some of them
//! re-encoded as JPEG) and self-blended fakes (drawn at random, re-encoded alike), then:
//! - leaves each person out in turn: a model fitted on everyone else scores that person's
//!   samples, so every score comes from a model that never saw the person;
//! - sets the threshold where those held-out real samples are flagged at the target rate, and
//!   reports the fakes detected at it;
//! - fits the model on everyone and, given photos of other people (`--held-out`), measures it there
//!   with that threshold: the estimate for people nobody calibrated on.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use idyntra_models::evaluation::Rate;
use idyntra_models::manipulation::{self, BlendModel, Features, SelfBlend};
use idyntra_models::{DecodeLimits, FaceChain, Point, decode};
use image::RgbImage;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};

use super::{IdentityRow, percent_text, photos_in, rate_json, read_csv};

/// What `eval manipulation` was asked.
#[derive(Debug, Clone)]
pub struct ManipulationEvalRequest {
    /// Folder of photos of real people.
    pub images: PathBuf,
    /// CSV `image,identity` naming the person in each photo of `images`.
    pub identities: PathBuf,
    /// Folder of photos of people not in `images`, measured with the calibrated threshold.
    pub held_out: Option<PathBuf>,
    /// Share of real faces of unseen people the threshold may flag.
    pub target_fpr: f64,
    /// Real samples and fakes made from each photo.
    pub variants: usize,
    pub seed: u64,
    /// Where to write the model fitted on every person of `images`.
    pub write_model: Option<PathBuf>,
}

/// The L2 penalty of every fit: light, the features are few and standardised.
const L2: f32 = 1e-3;

/// Samples of one photo.
struct PhotoSamples {
    name: String,
    person: String,
    /// The face's crop as it is, for the score a real upload of it gets.
    original: Features,
    real: Vec<Features>,
    fake: Vec<Features>,
}

/// A self-blend drawn with the ranges of Shiohara and Yamasaki's source-target augmentation.
fn random_blend(rng: &mut StdRng) -> SelfBlend {
    let mut channel = |low: f32, high: f32| -> [f32; 3] {
        [
            rng.gen_range(low..high),
            rng.gen_range(low..high),
            rng.gen_range(low..high),
        ]
    };
    let gain = channel(0.9, 1.1);
    let offset = channel(-20.0, 20.0);
    let blur = match rng.gen_range(0..10) {
        0..=3 => rng.gen_range(0.5..1.5),
        4..=6 => -rng.gen_range(0.5..1.5),
        _ => 0.0,
    };
    // 3 % of the crop's side.
    let shift = 0.03 * manipulation::CROP_SIZE as f32;
    SelfBlend {
        shift: (rng.gen_range(-shift..shift), rng.gen_range(-shift..shift)),
        scale: rng.gen_range(0.95..1.05),
        gain,
        offset,
        blur,
        radii: (rng.gen_range(0.6..0.95), rng.gen_range(0.6..0.95)),
        feather: rng.gen_range(1.0..6.0),
        ratio: [0.25, 0.5, 0.75, 1.0, 1.0, 1.0][rng.gen_range(0..6)],
    }
}

/// Half of the samples go through a JPEG encoding (quality 75–95), as an upload might have; real
/// samples and fakes alike, so the model cannot tell them apart by that.
fn maybe_reencoded(crop: RgbImage, rng: &mut StdRng) -> anyhow::Result<RgbImage> {
    if rng.gen_bool(0.5) {
        return Ok(crop);
    }
    let mut bytes = Vec::new();
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut bytes, rng.gen_range(75..=95))
        .encode_image(&crop)?;
    Ok(image::load_from_memory(&bytes)?.to_rgb8())
}

fn jittered(landmarks: &[Point; 5], rng: &mut StdRng) -> [Point; 5] {
    landmarks.map(|p| Point {
        x: p.x + rng.gen_range(-1.0..1.0),
        y: p.y + rng.gen_range(-1.0..1.0),
    })
}

/// The samples of one photo; `None` when no face is found.
fn samples_of(
    chain: &FaceChain,
    path: &Path,
    person: &str,
    variants: usize,
    rng: &mut StdRng,
) -> anyhow::Result<Option<PhotoSamples>> {
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    let photo = decode(&bytes, &DecodeLimits::default())
        .with_context(|| format!("{}", path.display()))?
        .image;
    let located = chain.locate(&photo)?;
    let Some(face) = located.faces.first() else {
        return Ok(None);
    };
    let landmarks = face.landmarks;
    let Some(original) = manipulation::crop(&photo, &landmarks) else {
        return Ok(None);
    };
    let mut samples = PhotoSamples {
        name: path.display().to_string(),
        person: person.to_owned(),
        original: manipulation::features(&original),
        real: Vec::with_capacity(variants),
        fake: Vec::with_capacity(variants),
    };
    for _ in 0..variants {
        if let Some(crop) = manipulation::crop(&photo, &jittered(&landmarks, rng)) {
            samples
                .real
                .push(manipulation::features(&maybe_reencoded(crop, rng)?));
        }
        let blend = random_blend(rng);
        if let Some(fake) = manipulation::self_blend(&photo, &landmarks, &blend) {
            samples
                .fake
                .push(manipulation::features(&maybe_reencoded(fake, rng)?));
        }
    }
    Ok(Some(samples))
}

fn fit(photos: &[&PhotoSamples]) -> BlendModel {
    let real: Vec<Features> = photos.iter().flat_map(|p| p.real.clone()).collect();
    let fake: Vec<Features> = photos.iter().flat_map(|p| p.fake.clone()).collect();
    BlendModel::fit(&real, &fake, L2)
}

/// The lowest threshold that flags at most `fpr` of `real` scores (flagged: score ≥ threshold).
fn threshold_for(real: &[f32], fpr: f64) -> f32 {
    let mut sorted = real.to_vec();
    sorted.sort_by(f32::total_cmp);
    let allowed = (fpr * sorted.len() as f64).floor() as usize;
    match sorted.len().checked_sub(allowed + 1) {
        // Just above the highest real score that must not be flagged.
        Some(index) => next_up(sorted[index]),
        None => 0.0,
    }
}

/// The smallest f32 above `value` (for the scores in 0–1 the model gives).
fn next_up(value: f32) -> f32 {
    if value.is_nan() || value == f32::INFINITY {
        return value;
    }
    let bits = value.to_bits();
    f32::from_bits(if value >= 0.0 { bits + 1 } else { bits - 1 })
}

/// The area under the ROC curve: the chance a random fake scores above a random real sample.
fn auc(real: &[f32], fake: &[f32]) -> f64 {
    if real.is_empty() || fake.is_empty() {
        return f64::NAN;
    }
    let mut wins = 0.0f64;
    for f in fake {
        for r in real {
            wins += match f.total_cmp(r) {
                std::cmp::Ordering::Greater => 1.0,
                std::cmp::Ordering::Equal => 0.5,
                std::cmp::Ordering::Less => 0.0,
            };
        }
    }
    wins / (real.len() * fake.len()) as f64
}

/// Rates of real samples and fakes flagged at `threshold`.
fn rates(real: &[f32], fake: &[f32], originals: &[f32], threshold: f32) -> Value {
    let flagged = |scores: &[f32]| scores.iter().filter(|&&s| s >= threshold).count();
    // The detection rate is reported as the share flagged: `errors` counts detections here.
    json!({
        "real_flagged": rate_json(&Rate::new(flagged(real), real.len())),
        "originals_flagged": rate_json(&Rate::new(flagged(originals), originals.len())),
        "fakes_detected": rate_json(&Rate::new(flagged(fake), fake.len())),
        "auc": auc(real, fake),
    })
}

/// Runs the evaluation; returns the report as JSON.
pub fn manipulation(request: &ManipulationEvalRequest) -> anyhow::Result<Value> {
    if !(0.0..1.0).contains(&request.target_fpr) {
        bail!("--target-fpr must be at least 0 and below 1");
    }
    if request.variants == 0 {
        bail!("--variants must be at least 1");
    }
    let chain = FaceChain::bundled(FaceChain::CANVAS)?;
    let mut rng = StdRng::seed_from_u64(request.seed);
    let people: Vec<IdentityRow> = read_csv(&request.identities)?;
    let mut photos = Vec::new();
    let mut no_face = Vec::new();
    for row in &people {
        let path = request.images.join(&row.image);
        match samples_of(&chain, &path, &row.identity, request.variants, &mut rng)? {
            Some(samples) => photos.push(samples),
            None => no_face.push(path.display().to_string()),
        }
    }
    let persons: Vec<&str> = {
        let mut names: Vec<&str> = photos.iter().map(|p| p.person.as_str()).collect();
        names.sort_unstable();
        names.dedup();
        names
    };
    if persons.len() < 2 {
        bail!("at least two people with a face found are needed to leave one out");
    }

    // Leave one person out: every score from a model that never saw the person.
    let (mut real, mut fake, mut originals) = (Vec::new(), Vec::new(), Vec::new());
    let mut per_photo = Vec::new();
    for person in &persons {
        let others: Vec<&PhotoSamples> = photos.iter().filter(|p| p.person != *person).collect();
        let model = fit(&others);
        for photo in photos.iter().filter(|p| p.person == *person) {
            real.extend(photo.real.iter().map(|f| model.score(f)));
            fake.extend(photo.fake.iter().map(|f| model.score(f)));
            let score = model.score(&photo.original);
            originals.push(score);
            per_photo.push((photo.name.clone(), score));
        }
    }
    let threshold = threshold_for(&real, request.target_fpr);
    let mut model = fit(&photos.iter().collect::<Vec<_>>());
    model.threshold = threshold;
    model.calibrated_fpr = request.target_fpr as f32;

    let held_out = match &request.held_out {
        Some(dir) => Some(measure_held_out(&chain, &model, dir, request, &mut rng)?),
        None => None,
    };
    if let Some(path) = &request.write_model {
        let text = serde_json::to_string_pretty(&model)? + "\n";
        std::fs::write(path, text).with_context(|| format!("cannot write {}", path.display()))?;
    }
    Ok(json!({
        "method": manipulation::METHOD,
        "people": persons.len(),
        "photos": photos.len(),
        "samples": {"real": real.len(), "fake": fake.len()},
        "seed": request.seed,
        "target_fpr": request.target_fpr,
        "threshold": threshold,
        "cross_validation": rates(&real, &fake, &originals, threshold),
        "cross_validation_scores": per_photo
            .iter()
            .map(|(photo, score)| json!({"photo": photo, "score": score}))
            .collect::<Vec<_>>(),
        "held_out": held_out,
        "no_face": no_face,
        "model": request.write_model.as_ref().map(|p| p.display().to_string()),
        "weights": model
            .features
            .iter()
            .zip(&model.weights)
            .map(|(name, weight)| (name.clone(), *weight))
            .collect::<BTreeMap<_, _>>(),
    }))
}

/// The fitted model on photos of people it was neither trained nor calibrated on.
fn measure_held_out(
    chain: &FaceChain,
    model: &BlendModel,
    dir: &Path,
    request: &ManipulationEvalRequest,
    rng: &mut StdRng,
) -> anyhow::Result<Value> {
    let (mut real, mut fake, mut originals) = (Vec::new(), Vec::new(), Vec::new());
    let mut scores = Vec::new();
    let mut no_face = Vec::new();
    for path in photos_in(dir)? {
        match samples_of(chain, &path, "held-out", request.variants, rng)? {
            Some(photo) => {
                real.extend(photo.real.iter().map(|f| model.score(f)));
                fake.extend(photo.fake.iter().map(|f| model.score(f)));
                let score = model.score(&photo.original);
                originals.push(score);
                scores.push(json!({"photo": photo.name, "score": score}));
            }
            None => no_face.push(path.display().to_string()),
        }
    }
    let mut out = rates(&real, &fake, &originals, model.threshold);
    out["photos"] = json!(originals.len());
    out["scores"] = json!(scores);
    out["no_face"] = json!(no_face);
    Ok(out)
}

/// The report as text for a terminal.
pub fn manipulation_text(report: &Value) -> String {
    let rate = |r: &Value| percent_text(r, 1);
    let block = |name: &str, r: &Value| {
        format!(
            "{name}:\n  real samples flagged: {}\n  original photos flagged: {}\n  \
             self-blended fakes detected: {}\n  AUC {:.3}\n",
            rate(&r["real_flagged"]),
            rate(&r["originals_flagged"]),
            rate(&r["fakes_detected"]),
            r["auc"].as_f64().unwrap_or(f64::NAN),
        )
    };
    let mut out = format!(
        "method {}: {} people, {} photos, {} real samples, {} fakes (seed {})\n\
         threshold {:.4} (flags {} of held-out real samples)\n",
        report["method"].as_str().unwrap_or("?"),
        report["people"],
        report["photos"],
        report["samples"]["real"],
        report["samples"]["fake"],
        report["seed"],
        report["threshold"].as_f64().unwrap_or(f64::NAN),
        report["target_fpr"],
    );
    out += &block("each person left out in turn", &report["cross_validation"]);
    if !report["held_out"].is_null() {
        out += &block(
            &format!("held-out people ({} photos)", report["held_out"]["photos"]),
            &report["held_out"],
        );
    }
    if let Some(missing) = report["no_face"].as_array().filter(|m| !m.is_empty()) {
        out += &format!("no face found: {}\n", missing.len());
    }
    if let Some(path) = report["model"].as_str() {
        out += &format!("model written to {path}\n");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_threshold_flags_at_most_the_target_share_of_real_scores() {
        let real: Vec<f32> = (0..100).map(|i| i as f32 / 100.0).collect();
        let t = threshold_for(&real, 0.05);
        assert_eq!(real.iter().filter(|&&s| s >= t).count(), 5);
        let t = threshold_for(&real, 0.0);
        assert_eq!(real.iter().filter(|&&s| s >= t).count(), 0);
        // Ties at the cut are not split: all of them stay below.
        let tied = [0.1, 0.5, 0.5, 0.5];
        let t = threshold_for(&tied, 0.5);
        assert_eq!(tied.iter().filter(|&&s| s >= t).count(), 0);
    }

    #[test]
    fn auc_counts_fakes_above_real_samples() {
        assert_eq!(auc(&[0.1, 0.2], &[0.3, 0.4]), 1.0);
        assert_eq!(auc(&[0.3, 0.4], &[0.1, 0.2]), 0.0);
        assert_eq!(auc(&[0.5], &[0.5]), 0.5);
    }
}
