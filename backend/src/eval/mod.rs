//! `idyntra eval faces`: face-matching accuracy of the bundled chain on labelled pairs of photos;
//! `idyntra eval liveness`: the active liveness check on recorded answers;
//! `idyntra eval pad`: the passive presentation-attack model on folders of bona fide and attack
//! photos; `idyntra eval manipulation`: trains, calibrates and measures the manipulation model.
//!
//! Prints the ROC, the equal error rate, the threshold for a target false-match rate, the rates at
//! the configured threshold, failures to detect, and a held-out estimate that calibrates each
//! threshold without the person it is then measured on (`identities.csv` beside the pairs).

mod manipulation;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use idyntra_models::evaluation::{self, OperatingPoint, Rate, ScoredPair};
use idyntra_models::{DecodeLimits, FaceChain, MatchPolicy, decode, embedding, liveness};
use idyntra_types::FrameTiming;
use serde::Deserialize;
use serde_json::{Value, json};

pub use manipulation::{ManipulationEvalRequest, manipulation, manipulation_text};

/// What `eval faces` was asked.
#[derive(Debug, Clone)]
pub struct FaceEvalRequest {
    /// CSV `image_a,image_b,label` with label `same` or `different`.
    pub pairs: PathBuf,
    pub images: PathBuf,
    /// CSV `image,identity`; default `identities.csv` beside the pairs.
    pub identities: Option<PathBuf>,
    pub target_fmr: f64,
    pub policy: MatchPolicy,
    pub canvas: usize,
}

#[derive(Debug, Deserialize)]
struct PairRow {
    image_a: String,
    image_b: String,
    label: String,
}

#[derive(Debug, Deserialize)]
struct IdentityRow {
    image: String,
    identity: String,
}

fn read_csv<T: for<'de> Deserialize<'de>>(path: &Path) -> anyhow::Result<Vec<T>> {
    let mut reader =
        csv::Reader::from_path(path).with_context(|| format!("cannot read {}", path.display()))?;
    reader
        .deserialize()
        .enumerate()
        .map(|(i, row)| row.with_context(|| format!("{} row {}", path.display(), i + 2)))
        .collect()
}

/// The identity of every image: from the identities file, or, without one, from the `same`
/// pairs (connected components), which only works when every person has a pair.
fn identities(
    request: &FaceEvalRequest,
    pairs: &[PairRow],
) -> anyhow::Result<BTreeMap<String, String>> {
    let path = request.identities.clone().unwrap_or_else(|| {
        request
            .pairs
            .parent()
            .unwrap_or(Path::new("."))
            .join("identities.csv")
    });
    if path.exists() {
        let rows: Vec<IdentityRow> = read_csv(&path)?;
        return Ok(rows.into_iter().map(|r| (r.image, r.identity)).collect());
    }
    if request.identities.is_some() {
        bail!("{} does not exist", path.display());
    }
    // Union-find over the `same` pairs.
    let mut parent: BTreeMap<String, String> = BTreeMap::new();
    fn root(parent: &mut BTreeMap<String, String>, x: &str) -> String {
        let up = parent
            .entry(x.to_owned())
            .or_insert_with(|| x.to_owned())
            .clone();
        if up == x {
            return up;
        }
        let top = root(parent, &up);
        parent.insert(x.to_owned(), top.clone());
        top
    }
    for pair in pairs {
        let (a, b) = (
            root(&mut parent, &pair.image_a),
            root(&mut parent, &pair.image_b),
        );
        if pair.label == "same" && a != b {
            parent.insert(a, b);
        }
    }
    let images: Vec<String> = parent.keys().cloned().collect();
    Ok(images
        .into_iter()
        .map(|image| {
            let identity = root(&mut parent, &image);
            (image, identity)
        })
        .collect())
}

/// Runs the evaluation; returns the report as JSON (printed by the caller as text or JSON).
pub fn faces(request: &FaceEvalRequest) -> anyhow::Result<Value> {
    let rows: Vec<PairRow> = read_csv(&request.pairs)?;
    if rows.is_empty() {
        bail!("{} has no pairs", request.pairs.display());
    }
    for (i, row) in rows.iter().enumerate() {
        if row.label != "same" && row.label != "different" {
            bail!(
                "{} row {}: label must be `same` or `different`, not `{}`",
                request.pairs.display(),
                i + 2,
                row.label
            );
        }
    }
    let identity_of = identities(request, &rows)?;
    let chain = FaceChain::bundled(request.canvas)?;

    // Every image once: decode, locate, embed.
    let mut images: Vec<&str> = rows
        .iter()
        .flat_map(|r| [r.image_a.as_str(), r.image_b.as_str()])
        .collect();
    images.sort_unstable();
    images.dedup();
    let mut crops = Vec::new();
    let mut cropped_names = Vec::new();
    let mut failures = Vec::new();
    let mut several_faces = Vec::new();
    for name in &images {
        let path = request.images.join(name);
        let bytes =
            std::fs::read(&path).with_context(|| format!("cannot read {}", path.display()))?;
        let photo = decode(&bytes, &DecodeLimits::default())
            .with_context(|| format!("{}", path.display()))?
            .image;
        let located = chain.locate(&photo)?;
        if located.faces.len() > 1 {
            several_faces.push(name.to_string());
        }
        match located.crop {
            Some(crop) => {
                crops.push(crop);
                cropped_names.push(*name);
            }
            None => failures.push(name.to_string()),
        }
    }
    let crop_refs: Vec<_> = crops.iter().collect();
    let embeddings: BTreeMap<&str, Vec<f32>> = cropped_names
        .into_iter()
        .zip(chain.embed(&crop_refs)?)
        .collect();

    let mut scored = Vec::with_capacity(rows.len());
    for row in &rows {
        let identity = |image: &str| {
            identity_of
                .get(image)
                .cloned()
                .with_context(|| format!("no identity for {image}"))
        };
        let (identity_a, identity_b) = (identity(&row.image_a)?, identity(&row.image_b)?);
        if (identity_a == identity_b) != (row.label == "same") {
            bail!(
                "{} and {} are labelled `{}` but the identities say otherwise",
                row.image_a,
                row.image_b,
                row.label
            );
        }
        let score = match (
            embeddings.get(row.image_a.as_str()),
            embeddings.get(row.image_b.as_str()),
        ) {
            (Some(a), Some(b)) => Some(embedding::cosine(a, b)),
            _ => None,
        };
        scored.push(ScoredPair {
            identity_a,
            identity_b,
            score,
        });
    }
    Ok(report(
        request,
        &scored,
        images.len(),
        failures,
        several_faces,
    ))
}

fn rate_json(rate: &Rate) -> Value {
    json!({
        "rate": rate.value(),
        "errors": rate.errors,
        "trials": rate.trials,
        "ci95": [rate.low, rate.high],
    })
}

fn point_json(point: &OperatingPoint) -> Value {
    json!({
        "threshold": point.threshold,
        "fmr": rate_json(&point.fmr),
        "fnmr": rate_json(&point.fnmr),
    })
}

fn report(
    request: &FaceEvalRequest,
    scored: &[ScoredPair],
    images: usize,
    failures: Vec<String>,
    several_faces: Vec<String>,
) -> Value {
    let roc = evaluation::roc(scored);
    let eer = evaluation::equal_error_rate(scored);
    let target = request.target_fmr;
    let at_target = evaluation::threshold_for_fmr(scored, target)
        .map(|t| point_json(&evaluation::operating_point(scored, t)));
    let configured = evaluation::operating_point(scored, request.policy.threshold);
    let held_out = |calibrate: &dyn Fn(&[ScoredPair]) -> Option<f32>, method: &str| {
        let (folds, (fmr, fnmr)) = evaluation::leave_one_identity_out(scored, calibrate);
        json!({
            "method": method,
            "fmr": rate_json(&fmr),
            "fnmr": rate_json(&fnmr),
            "folds": folds.iter().map(|f| json!({
                "identity": f.identity,
                "threshold": f.threshold,
                "fmr": rate_json(&f.point.fmr),
                "fnmr": rate_json(&f.point.fnmr),
            })).collect::<Vec<_>>(),
        })
    };
    let empirical = held_out(
        &|pairs| evaluation::threshold_for_fmr(pairs, target),
        "empirical: the most permissive threshold with at most the target FMR on the other people",
    );
    let normal_fit = held_out(
        &|pairs| evaluation::threshold_for_fmr_normal_fit(pairs, target),
        "normal fit: mean + z·sd of the other people's impostor scores",
    );

    // ROC points at a few false-match rates, as a reader would look them up.
    let roc_points: Vec<Value> = [0.0, 0.001, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2]
        .iter()
        .filter_map(|&fmr| evaluation::threshold_for_fmr(scored, fmr).map(|t| (fmr, t)))
        .map(|(fmr, t)| {
            let point = evaluation::operating_point(scored, t);
            json!({"max_fmr": fmr, "threshold": t, "fmr": point.fmr.value(), "tar": 1.0 - point.fnmr.value()})
        })
        .collect();
    let scores = |genuine: bool| -> Vec<f32> {
        scored
            .iter()
            .filter(|p| p.genuine() == genuine)
            .filter_map(|p| p.score)
            .collect()
    };
    let summary = |values| score_summary(values, "count");
    json!({
        "pairs": scored.len(),
        "genuine_pairs": scored.iter().filter(|p| p.genuine()).count(),
        "impostor_pairs": scored.iter().filter(|p| !p.genuine()).count(),
        "images": images,
        "failures_to_detect": failures,
        "images_with_several_faces": several_faces,
        "detector_canvas": request.canvas,
        "scores": {"genuine": summary(scores(true)), "impostor": summary(scores(false))},
        "roc_distinct_points": roc.len(),
        "roc": roc_points,
        "eer": eer.map(|(rate, threshold)| json!({"rate": rate, "threshold": threshold})),
        "target_fmr": target,
        "at_target_fmr": at_target,
        "configured": {
            "threshold": request.policy.threshold,
            "calibrated_fmr": request.policy.calibrated_fmr,
            "point": point_json(&configured),
        },
        "impostor_normal_fit": evaluation::impostor_distribution(scored)
            .map(|(mean, sd)| json!({"mean": mean, "sd": sd})),
        "normal_fit_threshold": evaluation::threshold_for_fmr_normal_fit(scored, target),
        // Leave one identity out: each threshold calibrated without one person, measured on
        // that person's pairs.
        "held_out": {"empirical": empirical, "normal_fit": normal_fit},
    })
}

/// The report as text for a terminal.
pub fn faces_text(report: &Value) -> String {
    let pct = |v: &Value| format!("{:.2} %", v.as_f64().unwrap_or(0.0) * 100.0);
    let rate = |r: &Value| percent_text(r, 2);
    let mut out = String::new();
    let mut line = |s: String| {
        out.push_str(&s);
        out.push('\n');
    };
    line(format!(
        "pairs: {} ({} genuine, {} impostor) over {} images; detector canvas {}",
        report["pairs"],
        report["genuine_pairs"],
        report["impostor_pairs"],
        report["images"],
        report["detector_canvas"]
    ));
    line(format!(
        "failures to detect: {} {}",
        report["failures_to_detect"].as_array().map_or(0, Vec::len),
        report["failures_to_detect"]
    ));
    line(format!(
        "genuine scores: {}\nimpostor scores: {}",
        report["scores"]["genuine"], report["scores"]["impostor"]
    ));
    line("ROC (most permissive threshold for each maximum FMR):".to_owned());
    line("  max FMR   threshold   FMR       TAR".to_owned());
    for point in report["roc"].as_array().into_iter().flatten() {
        line(format!(
            "  {:<9} {:<11.4} {:<9} {}",
            pct(&point["max_fmr"]),
            point["threshold"].as_f64().unwrap_or(f64::NAN),
            pct(&point["fmr"]),
            pct(&point["tar"])
        ));
    }
    if let Some(eer) = report["eer"].as_object() {
        line(format!(
            "EER: {} at threshold {:.4}",
            pct(&eer["rate"]),
            eer["threshold"].as_f64().unwrap_or(f64::NAN)
        ));
    }
    if let Some(point) = report["at_target_fmr"].as_object() {
        line(format!(
            "threshold for FMR ≤ {}: {:.4} (FMR {}, FNMR {})",
            pct(&report["target_fmr"]),
            point["threshold"].as_f64().unwrap_or(f64::NAN),
            rate(&point["fmr"]),
            rate(&point["fnmr"])
        ));
    }
    let configured = &report["configured"];
    line(format!(
        "configured threshold {:.4}: FMR {}, FNMR {}",
        configured["threshold"].as_f64().unwrap_or(f64::NAN),
        rate(&configured["point"]["fmr"]),
        rate(&configured["point"]["fnmr"])
    ));
    if let Some(fit) = report["impostor_normal_fit"].as_object() {
        line(format!(
            "impostor scores ~ normal(mean {:.4}, sd {:.4}); its threshold for FMR {}: {:.4}",
            fit["mean"].as_f64().unwrap_or(f64::NAN),
            fit["sd"].as_f64().unwrap_or(f64::NAN),
            pct(&report["target_fmr"]),
            report["normal_fit_threshold"].as_f64().unwrap_or(f64::NAN)
        ));
    }
    for kind in ["empirical", "normal_fit"] {
        let held = &report["held_out"][kind];
        line(format!(
            "held out, {}\n  pooled: FMR {}, FNMR {}",
            held["method"].as_str().unwrap_or(kind),
            rate(&held["fmr"]),
            rate(&held["fnmr"])
        ));
        for fold in held["folds"].as_array().into_iter().flatten() {
            line(format!(
                "  {} unseen: threshold {:.4}, FMR {}, FNMR {}",
                fold["identity"].as_str().unwrap_or("?"),
                fold["threshold"].as_f64().unwrap_or(f64::NAN),
                rate(&fold["fmr"]),
                rate(&fold["fnmr"])
            ));
        }
    }
    out
}

/// `response.json` of one recorded answer to a liveness challenge.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RecordedResponse {
    /// The session nonce the challenge was derived from.
    nonce: String,
    /// `live` or `attack`.
    label: String,
    /// The kind of attack, for the per-kind rates (`still`, `print`, `replay`, …).
    #[serde(default)]
    attack: Option<String>,
    frames: Vec<RecordedFrame>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RecordedFrame {
    file: String,
    at_ms: u32,
    step: usize,
}

/// `idyntra eval liveness`: the active check on every `*/response.json` under `responses`.
/// Reports BPCER (live answers refused) and APCER (attacks accepted, overall and per kind), in the
/// vocabulary of ISO/IEC 30107-3.
pub fn liveness(responses: &Path, canvas: usize) -> anyhow::Result<Value> {
    let chain = FaceChain::bundled(canvas)?;
    let limits = liveness::ActiveThresholds::default();
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(responses)
        .with_context(|| format!("cannot read {}", responses.display()))?
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|path| path.join("response.json").is_file())
        .collect();
    dirs.sort();
    if dirs.is_empty() {
        bail!("no */response.json under {}", responses.display());
    }
    let mut results = Vec::new();
    let (mut live, mut refused) = (0, 0);
    let mut attacks: BTreeMap<String, (usize, usize)> = BTreeMap::new();
    for dir in &dirs {
        let path = dir.join("response.json");
        let text =
            std::fs::read(&path).with_context(|| format!("cannot read {}", path.display()))?;
        let response: RecordedResponse =
            serde_json::from_slice(&text).with_context(|| format!("{}", path.display()))?;
        let challenge = liveness::challenge_for(response.nonce.as_bytes());
        let mut frames = Vec::with_capacity(response.frames.len());
        for frame in &response.frames {
            let file = dir.join(&frame.file);
            let bytes =
                std::fs::read(&file).with_context(|| format!("cannot read {}", file.display()))?;
            let image = decode(&bytes, &DecodeLimits::default())
                .with_context(|| format!("{}", file.display()))?
                .image;
            let timing = FrameTiming {
                at_ms: frame.at_ms,
                step: frame.step,
            };
            frames.push((timing, image));
        }
        let observations = chain.observe_answer(&frames)?;
        let verdict = liveness::verify(&challenge, &observations, &limits);
        let name = dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        match response.label.as_str() {
            "live" => {
                live += 1;
                refused += usize::from(!verdict.passed);
            }
            "attack" => {
                let kind = response
                    .attack
                    .clone()
                    .unwrap_or_else(|| "unnamed".to_owned());
                let counts = attacks.entry(kind).or_default();
                counts.0 += usize::from(verdict.passed);
                counts.1 += 1;
            }
            other => bail!(
                "{}: label must be `live` or `attack`, not `{other}`",
                path.display()
            ),
        }
        results.push(json!({
            "response": name,
            "label": response.label,
            "attack": response.attack,
            "frames": response.frames.len(),
            "score": verdict.score,
            "passed": verdict.passed,
            "signals": verdict.signals,
        }));
    }
    let accepted: usize = attacks.values().map(|c| c.0).sum();
    let attempts: usize = attacks.values().map(|c| c.1).sum();
    Ok(json!({
        "responses": results.len(),
        "threshold": limits.pass_score,
        "bpcer": rate_json(&Rate::new(refused, live)),
        "apcer": rate_json(&Rate::new(accepted, attempts)),
        "apcer_by_attack": attacks
            .iter()
            .map(|(kind, (a, n))| (kind.clone(), rate_json(&Rate::new(*a, *n))))
            .collect::<BTreeMap<_, _>>(),
        "results": results,
    }))
}

/// A rate of [`rate_json`] as a percentage with its counts and interval, to `decimals` places.
fn percent_text(rate: &Value, decimals: usize) -> String {
    let percent = |value: &Value| value.as_f64().unwrap_or(0.0) * 100.0;
    format!(
        "{:.decimals$} % ({}/{}, 95 % CI {:.decimals$}–{:.decimals$} %)",
        percent(&rate["rate"]),
        rate["errors"],
        rate["trials"],
        percent(&rate["ci95"][0]),
        percent(&rate["ci95"][1]),
    )
}

/// The liveness report as text for a terminal.
pub fn liveness_text(report: &Value) -> String {
    let rate = |r: &Value| percent_text(r, 2);
    let mut out = format!(
        "responses: {}; pass score {}\nBPCER (live refused): {}\nAPCER (attacks accepted): {}\n",
        report["responses"],
        report["threshold"],
        rate(&report["bpcer"]),
        rate(&report["apcer"])
    );
    for (kind, r) in report["apcer_by_attack"].as_object().into_iter().flatten() {
        out.push_str(&format!("  {kind}: {}\n", rate(r)));
    }
    for result in report["results"].as_array().into_iter().flatten() {
        out.push_str(&format!(
            "  {} ({}{}): score {:.2}, {}\n",
            result["response"].as_str().unwrap_or("?"),
            result["label"].as_str().unwrap_or("?"),
            result["attack"]
                .as_str()
                .map(|a| format!(", {a}"))
                .unwrap_or_default(),
            result["score"].as_f64().unwrap_or(0.0),
            if result["passed"] == true {
                "passed"
            } else {
                "refused"
            }
        ));
    }
    out
}

/// Liveness thresholds the passive report tabulates, besides the one asked for.
const PAD_THRESHOLDS: [f32; 8] = [0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.98, 0.99];

/// How many `values` there are (under `count_key`), and their minimum, median and maximum.
fn score_summary(mut values: Vec<f32>, count_key: &str) -> Value {
    values.sort_by(f32::total_cmp);
    json!({
        count_key: values.len(),
        "min": values.first(),
        "median": values.get(values.len() / 2),
        "max": values.last(),
    })
}

/// The photos (JPEG, PNG, WebP by name) directly in `dir`, sorted.
fn photos_in(dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let mut photos: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("cannot read {}", dir.display()))?
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|path| {
            path.extension().and_then(|e| e.to_str()).is_some_and(|e| {
                matches!(
                    e.to_ascii_lowercase().as_str(),
                    "jpg" | "jpeg" | "png" | "webp"
                )
            })
        })
        .collect();
    photos.sort();
    Ok(photos)
}

/// `idyntra eval pad`: the passive model, as the edge runs it (BlazeFace on the photo, the
/// largest face's square to the model), on every photo of `bona_fide` and of `attacks`. Reports
/// BPCER (bona fide photos refused) and APCER (attack photos accepted) at `threshold` and at
/// other liveness thresholds, with every photo's score. A photo without a face counts as neither
/// and is listed.
pub fn pad(bona_fide: &Path, attacks: Option<&Path>, threshold: f32) -> anyhow::Result<Value> {
    let frames = idyntra_models::FrameQuality::bundled()?;
    let model = idyntra_edge::PassivePad::bundled(false)?;
    let mut sets = vec![("bona_fide", photos_in(bona_fide)?)];
    if let Some(attacks) = attacks {
        sets.push(("attack", photos_in(attacks)?));
    }
    if sets[0].1.is_empty() {
        bail!("no JPEG, PNG or WebP photos in {}", bona_fide.display());
    }
    let mut scores: BTreeMap<&str, Vec<f32>> = BTreeMap::new();
    let mut results = Vec::new();
    let mut no_face = Vec::new();
    for (label, photos) in &sets {
        for path in photos {
            let bytes =
                std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
            let photo = decode(&bytes, &DecodeLimits::default())
                .with_context(|| format!("{}", path.display()))?
                .image;
            let name = path.display().to_string();
            let Some(check) = model.check_photo(&frames, &photo)? else {
                no_face.push(name);
                continue;
            };
            scores.entry(label).or_default().push(check.score);
            results.push(json!({
                "photo": name,
                "label": label,
                "score": check.score,
                "attack_score": check.signals.get("attack_score"),
            }));
        }
    }
    let rates_at = |threshold: f32| {
        let bona_fide = scores.get("bona_fide").map_or(&[][..], Vec::as_slice);
        let attack = scores.get("attack").map_or(&[][..], Vec::as_slice);
        let refused = bona_fide.iter().filter(|&&s| s < threshold).count();
        let accepted = attack.iter().filter(|&&s| s >= threshold).count();
        json!({
            // As written on the command line, not as float32 widens it (0.8 → 0.800000011920929).
            "threshold": (f64::from(threshold) * 1e4).round() / 1e4,
            "bpcer": rate_json(&Rate::new(refused, bona_fide.len())),
            "apcer": rate_json(&Rate::new(accepted, attack.len())),
        })
    };
    let summary =
        |values: Option<&Vec<f32>>| score_summary(values.cloned().unwrap_or_default(), "photos");
    Ok(json!({
        "model": idyntra_models::bundled::ANTISPOOFING.name,
        "sha256": idyntra_models::bundled::ANTISPOOFING.sha256,
        "at_threshold": rates_at(threshold),
        "thresholds": PAD_THRESHOLDS.iter().map(|&t| rates_at(t)).collect::<Vec<_>>(),
        "bona_fide_scores": summary(scores.get("bona_fide")),
        "attack_scores": summary(scores.get("attack")),
        "no_face": no_face,
        "results": results,
    }))
}

/// The passive report as text for a terminal.
pub fn pad_text(report: &Value) -> String {
    let rate = |r: &Value| {
        if r["trials"] == 0 {
            return "no photos".to_owned();
        }
        percent_text(r, 1)
    };
    let scores = |s: &Value| {
        if s["photos"] == 0 {
            return "no photos".to_owned();
        }
        format!(
            "{} photos, liveness score min {:.3}, median {:.3}, max {:.3}",
            s["photos"],
            s["min"].as_f64().unwrap_or(f64::NAN),
            s["median"].as_f64().unwrap_or(f64::NAN),
            s["max"].as_f64().unwrap_or(f64::NAN)
        )
    };
    let at = &report["at_threshold"];
    let mut out = format!(
        "model {} ({})\nbona fide: {}\nattacks: {}\nno face found: {}\n\
         at liveness threshold {}: BPCER {}, APCER {}\n\nthreshold | BPCER | APCER\n",
        report["model"].as_str().unwrap_or("?"),
        report["sha256"].as_str().unwrap_or("?"),
        scores(&report["bona_fide_scores"]),
        scores(&report["attack_scores"]),
        report["no_face"].as_array().map_or(0, Vec::len),
        at["threshold"],
        rate(&at["bpcer"]),
        rate(&at["apcer"]),
    );
    for row in report["thresholds"].as_array().into_iter().flatten() {
        out.push_str(&format!(
            "{} | {} | {}\n",
            row["threshold"],
            rate(&row["bpcer"]),
            rate(&row["apcer"])
        ));
    }
    out.push('\n');
    for result in report["results"].as_array().into_iter().flatten() {
        out.push_str(&format!(
            "  {} ({}): {:.3}\n",
            result["photo"].as_str().unwrap_or("?"),
            result["label"].as_str().unwrap_or("?"),
            result["score"].as_f64().unwrap_or(0.0)
        ));
    }
    for photo in report["no_face"].as_array().into_iter().flatten() {
        out.push_str(&format!("  {} : no face\n", photo.as_str().unwrap_or("?")));
    }
    out
}
