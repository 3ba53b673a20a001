//! Face-matching accuracy from labelled pairs, in the vocabulary of ISO/IEC 19795-1: false-match
//! rate (FMR, different people accepted), false-non-match rate (FNMR, the same person refused),
//! the ROC, the equal error rate, and a threshold for a target FMR.
//!
//! A threshold picked on the people it is then measured on looks better than it is. The held-out
//! estimate ([`leave_one_identity_out`]) picks each threshold without one identity and measures it
//! on the pairs of that identity only, so every reported decision is about a person the threshold
//! never saw. A pair whose photo has no detected face counts as a failure: a non-match for the same
//! person (the user is refused), never a match.

/// One labelled comparison.
#[derive(Debug, Clone, PartialEq)]
pub struct ScoredPair {
    pub identity_a: String,
    pub identity_b: String,
    /// `None` when a face could not be found in one of the photos.
    pub score: Option<f32>,
}

impl ScoredPair {
    /// Whether both photos show the same person.
    pub fn genuine(&self) -> bool {
        self.identity_a == self.identity_b
    }

    fn involves(&self, identity: &str) -> bool {
        self.identity_a == identity || self.identity_b == identity
    }

    /// Whether the pair is accepted at `threshold` (a failure is never accepted).
    fn accepted(&self, threshold: f32) -> bool {
        self.score.is_some_and(|s| s >= threshold)
    }
}

/// A rate with its count and a 95 % Wilson score interval.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rate {
    pub errors: usize,
    pub trials: usize,
    pub low: f64,
    pub high: f64,
}

impl Rate {
    pub fn new(errors: usize, trials: usize) -> Self {
        let (low, high) = wilson_interval(errors, trials);
        Self {
            errors,
            trials,
            low,
            high,
        }
    }

    pub fn value(&self) -> f64 {
        if self.trials == 0 {
            0.0
        } else {
            self.errors as f64 / self.trials as f64
        }
    }
}

/// The 95 % Wilson score interval of `errors` in `trials` (0…1 with no trials). Pairs that share a
/// photo or a person are not independent, so the true interval is wider: read it as a lower bound
/// on the uncertainty.
pub fn wilson_interval(errors: usize, trials: usize) -> (f64, f64) {
    if trials == 0 {
        return (0.0, 1.0);
    }
    let z = 1.959_964_f64;
    let n = trials as f64;
    let p = errors as f64 / n;
    let denominator = 1.0 + z * z / n;
    let centre = (p + z * z / (2.0 * n)) / denominator;
    let half = z * (p * (1.0 - p) / n + z * z / (4.0 * n * n)).sqrt() / denominator;
    ((centre - half).max(0.0), (centre + half).min(1.0))
}

/// FMR and FNMR of `pairs` at one threshold.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct OperatingPoint {
    pub threshold: f32,
    pub fmr: Rate,
    pub fnmr: Rate,
}

/// The operating point of `pairs` at `threshold`.
pub fn operating_point<'a>(
    pairs: impl IntoIterator<Item = &'a ScoredPair>,
    threshold: f32,
) -> OperatingPoint {
    let (mut false_matches, mut impostors, mut false_non_matches, mut genuines) = (0, 0, 0, 0);
    for pair in pairs {
        let accepted = pair.accepted(threshold);
        if pair.genuine() {
            genuines += 1;
            false_non_matches += usize::from(!accepted);
        } else {
            impostors += 1;
            false_matches += usize::from(accepted);
        }
    }
    OperatingPoint {
        threshold,
        fmr: Rate::new(false_matches, impostors),
        fnmr: Rate::new(false_non_matches, genuines),
    }
}

/// Every distinct operating point, lowest threshold first: one at each distinct score (the
/// threshold accepting that score and all above it).
pub fn roc(pairs: &[ScoredPair]) -> Vec<OperatingPoint> {
    let mut thresholds: Vec<f32> = pairs.iter().filter_map(|p| p.score).collect();
    thresholds.sort_by(f32::total_cmp);
    thresholds.dedup();
    thresholds
        .into_iter()
        .map(|t| operating_point(pairs, t))
        .collect()
}

/// The lowest threshold whose FMR on `pairs` is at most `target` (the most permissive threshold
/// that still meets it); `None` without impostor scores.
pub fn threshold_for_fmr(pairs: &[ScoredPair], target: f64) -> Option<f32> {
    let mut impostor: Vec<f32> = pairs
        .iter()
        .filter(|p| !p.genuine())
        .filter_map(|p| p.score)
        .collect();
    let trials = pairs.iter().filter(|p| !p.genuine()).count();
    if impostor.is_empty() {
        return None;
    }
    impostor.sort_by(|a, b| b.total_cmp(a));
    // At most `allowed` impostors may score at or above the threshold.
    let allowed = (target * trials as f64).floor() as usize;
    Some(match impostor.get(allowed) {
        // Just above the first impostor that must be refused.
        Some(&refused) => next_up(refused),
        None => f32::NEG_INFINITY,
    })
}

/// The smallest `f32` above `x` (for finite `x`).
fn next_up(x: f32) -> f32 {
    if x == 0.0 {
        return f32::from_bits(1);
    }
    let bits = x.to_bits();
    f32::from_bits(if x > 0.0 { bits + 1 } else { bits - 1 })
}

/// The equal error rate: the operating point where FMR and FNMR are closest, reported as their
/// mean.
pub fn equal_error_rate(pairs: &[ScoredPair]) -> Option<(f64, f32)> {
    roc(pairs)
        .into_iter()
        .min_by(|a, b| {
            let gap = |p: &OperatingPoint| (p.fmr.value() - p.fnmr.value()).abs();
            gap(a).total_cmp(&gap(b))
        })
        .map(|p| ((p.fmr.value() + p.fnmr.value()) / 2.0, p.threshold))
}

/// One fold of [`leave_one_identity_out`].
#[derive(Debug, Clone, PartialEq)]
pub struct HeldOutFold {
    pub identity: String,
    /// Picked without any pair of `identity`.
    pub threshold: f32,
    /// Measured on the pairs of `identity` only.
    pub point: OperatingPoint,
}

/// Mean and standard deviation of the impostor scores.
pub fn impostor_distribution(pairs: &[ScoredPair]) -> Option<(f64, f64)> {
    let scores: Vec<f64> = pairs
        .iter()
        .filter(|p| !p.genuine())
        .filter_map(|p| p.score.map(f64::from))
        .collect();
    if scores.len() < 2 {
        return None;
    }
    let n = scores.len() as f64;
    let mean = scores.iter().sum::<f64>() / n;
    let variance = scores.iter().map(|s| (s - mean).powi(2)).sum::<f64>() / (n - 1.0);
    Some((mean, variance.sqrt()))
}

/// The threshold a normal fit of the impostor scores puts at `target` FMR: `mean + z·sd`. A few
/// hundred impostor pairs cannot show a 0.1 % rate directly; the fit extrapolates the tail, which
/// is only as good as the normal shape (the genuine check is the held-out estimate).
pub fn threshold_for_fmr_normal_fit(pairs: &[ScoredPair], target: f64) -> Option<f32> {
    let (mean, sd) = impostor_distribution(pairs)?;
    if !(target > 0.0 && target < 1.0) {
        return None;
    }
    Some((mean + standard_normal_quantile(1.0 - target) * sd) as f32)
}

/// The `p` quantile of the standard normal distribution (Acklam's rational approximation with one
/// Newton step; relative error below 1e-9).
pub fn standard_normal_quantile(p: f64) -> f64 {
    const A: [f64; 6] = [
        -3.969_683_028_665_376e1,
        2.209_460_984_245_205e2,
        -2.759_285_104_469_687e2,
        1.383_577_518_672_69e2,
        -3.066_479_806_614_716e1,
        2.506_628_277_459_239,
    ];
    const B: [f64; 5] = [
        -5.447_609_879_822_406e1,
        1.615_858_368_580_409e2,
        -1.556_989_798_598_866e2,
        6.680_131_188_771_972e1,
        -1.328_068_155_288_572e1,
    ];
    const C: [f64; 6] = [
        -7.784_894_002_430_293e-3,
        -3.223_964_580_411_365e-1,
        -2.400_758_277_161_838,
        -2.549_732_539_343_734,
        4.374_664_141_464_968,
        2.938_163_982_698_783,
    ];
    const D: [f64; 4] = [
        7.784_695_709_041_462e-3,
        3.224_671_290_700_398e-1,
        2.445_134_137_142_996,
        3.754_408_661_907_416,
    ];
    let tail = |q: f64| {
        (((((C[0] * q + C[1]) * q + C[2]) * q + C[3]) * q + C[4]) * q + C[5])
            / ((((D[0] * q + D[1]) * q + D[2]) * q + D[3]) * q + 1.0)
    };
    let x = if p < 0.02425 {
        tail((-2.0 * p.ln()).sqrt())
    } else if p > 1.0 - 0.02425 {
        -tail((-2.0 * (1.0 - p).ln()).sqrt())
    } else {
        let q = p - 0.5;
        let r = q * q;
        (((((A[0] * r + A[1]) * r + A[2]) * r + A[3]) * r + A[4]) * r + A[5]) * q
            / (((((B[0] * r + B[1]) * r + B[2]) * r + B[3]) * r + B[4]) * r + 1.0)
    };
    // One Newton step on Φ(x) − p, with Φ from the complementary error function.
    let error = 0.5 * erfc(-x / std::f64::consts::SQRT_2) - p;
    let density = (-x * x / 2.0).exp() / (2.0 * std::f64::consts::PI).sqrt();
    x - error / density
}

/// The complementary error function (Numerical Recipes' Chebyshev fit, relative error < 1.2e-7).
fn erfc(x: f64) -> f64 {
    let z = x.abs();
    let t = 1.0 / (1.0 + 0.5 * z);
    let r = t
        * (-z * z - 1.265_512_23
            + t * (1.000_023_68
                + t * (0.374_091_96
                    + t * (0.096_784_18
                        + t * (-0.186_288_06
                            + t * (0.278_868_07
                                + t * (-1.135_203_98
                                    + t * (1.488_515_87
                                        + t * (-0.822_152_23 + t * 0.170_872_77)))))))))
            .exp();
    if x >= 0.0 { r } else { 2.0 - r }
}

/// The held-out estimate: per identity, a threshold calibrated by `calibrate` on the pairs
/// without it, applied to the pairs with it. Returns the folds and the pooled FMR and FNMR; an
/// impostor pair involves two people, so it is judged once in each of their folds.
pub fn leave_one_identity_out(
    pairs: &[ScoredPair],
    calibrate: impl Fn(&[ScoredPair]) -> Option<f32>,
) -> (Vec<HeldOutFold>, (Rate, Rate)) {
    let mut identities: Vec<&str> = pairs
        .iter()
        .flat_map(|p| [p.identity_a.as_str(), p.identity_b.as_str()])
        .collect();
    identities.sort_unstable();
    identities.dedup();
    let mut folds = Vec::new();
    let (mut fm, mut impostors, mut fnm, mut genuines) = (0, 0, 0, 0);
    for identity in identities {
        let calibration: Vec<ScoredPair> = pairs
            .iter()
            .filter(|p| !p.involves(identity))
            .cloned()
            .collect();
        let Some(threshold) = calibrate(&calibration) else {
            continue;
        };
        let point = operating_point(pairs.iter().filter(|p| p.involves(identity)), threshold);
        fm += point.fmr.errors;
        impostors += point.fmr.trials;
        fnm += point.fnmr.errors;
        genuines += point.fnmr.trials;
        folds.push(HeldOutFold {
            identity: identity.to_owned(),
            threshold,
            point,
        });
    }
    (folds, (Rate::new(fm, impostors), Rate::new(fnm, genuines)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair(a: &str, b: &str, score: Option<f32>) -> ScoredPair {
        ScoredPair {
            identity_a: a.into(),
            identity_b: b.into(),
            score,
        }
    }

    /// Genuine pairs score 0.6–0.9, impostors 0.1–0.5, one impostor at 0.7 and one failure.
    fn sample() -> Vec<ScoredPair> {
        vec![
            pair("p1", "p1", Some(0.9)),
            pair("p2", "p2", Some(0.8)),
            pair("p3", "p3", Some(0.6)),
            pair("p3", "p3", None),
            pair("p1", "p2", Some(0.1)),
            pair("p1", "p3", Some(0.3)),
            pair("p2", "p3", Some(0.5)),
            pair("p2", "p1", Some(0.7)),
        ]
    }

    #[test]
    fn rates_at_a_threshold_count_failures_as_refusals() {
        let point = operating_point(&sample(), 0.65);
        assert_eq!((point.fmr.errors, point.fmr.trials), (1, 4));
        // 0.6 and the failure are refused.
        assert_eq!((point.fnmr.errors, point.fnmr.trials), (2, 4));
    }

    #[test]
    fn the_threshold_for_a_target_refuses_enough_impostors() {
        let pairs = sample();
        let strict = threshold_for_fmr(&pairs, 0.0).unwrap();
        assert!(strict > 0.7 && strict < 0.7001, "{strict}");
        assert_eq!(operating_point(&pairs, strict).fmr.errors, 0);
        // A quarter of four impostors may pass: the 0.7 one.
        let loose = threshold_for_fmr(&pairs, 0.25).unwrap();
        assert!(loose > 0.5 && loose < 0.5001, "{loose}");
        assert_eq!(operating_point(&pairs, loose).fmr.errors, 1);
    }

    #[test]
    fn the_roc_is_monotone() {
        let points = roc(&sample());
        assert_eq!(points.len(), 7);
        for step in points.windows(2) {
            assert!(step[0].fmr.errors >= step[1].fmr.errors);
            assert!(step[0].fnmr.errors <= step[1].fnmr.errors);
        }
    }

    #[test]
    fn equal_error_rate_of_separable_scores_is_zero() {
        let pairs = vec![
            pair("a", "a", Some(0.9)),
            pair("b", "b", Some(0.8)),
            pair("a", "b", Some(0.2)),
        ];
        let (eer, threshold) = equal_error_rate(&pairs).unwrap();
        assert_eq!(eer, 0.0);
        assert!((0.2..=0.8).contains(&threshold) && threshold > 0.2);
    }

    #[test]
    fn held_out_folds_never_see_their_identity() {
        let pairs = sample();
        let (folds, (fmr, fnmr)) = leave_one_identity_out(&pairs, |p| threshold_for_fmr(p, 0.0));
        assert_eq!(folds.len(), 3);
        // Without p1, the highest impostor is p2–p3 at 0.5; p1's impostor at 0.7 then passes.
        let p1 = folds.iter().find(|f| f.identity == "p1").unwrap();
        assert!(p1.threshold > 0.5 && p1.threshold < 0.5001);
        assert_eq!(p1.point.fmr.errors, 1);
        // Every impostor pair is judged in the two folds of its people.
        assert_eq!(fmr.trials, 8);
        assert_eq!(fnmr.trials, 4);
    }

    #[test]
    fn normal_quantiles_are_the_textbook_ones() {
        for (p, z) in [
            (0.5, 0.0),
            (0.975, 1.959_964),
            (0.999, 3.090_232),
            (1e-4, -3.719_016),
        ] {
            let q = standard_normal_quantile(p);
            assert!((q - z).abs() < 1e-5, "{p}: {q}");
        }
    }

    #[test]
    fn the_normal_fit_threshold_sits_in_the_impostor_tail() {
        // Impostors 0.1, 0.3, 0.5, 0.7: mean 0.4, sd ≈ 0.258; z(0.99) ≈ 2.326.
        let threshold = threshold_for_fmr_normal_fit(&sample(), 0.01).unwrap();
        assert!(
            (threshold - (0.4 + 2.326 * 0.2582)).abs() < 1e-3,
            "{threshold}"
        );
        assert!(threshold_for_fmr_normal_fit(&sample(), 0.0).is_none());
    }

    #[test]
    fn wilson_interval_brackets_the_rate() {
        let (low, high) = wilson_interval(0, 395);
        assert_eq!(low, 0.0);
        assert!(high > 0.009 && high < 0.0097, "{high}");
        let (low, high) = wilson_interval(5, 10);
        assert!(low < 0.5 && high > 0.5 && (0.5 - low - (high - 0.5)).abs() < 1e-9);
    }
}
