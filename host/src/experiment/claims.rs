//! The paper's four claims, each judged from the runs of the suite that tests it
//! (`metarim experiment paper`): one line per claim, `claim N (name): holds`, `does not hold`
//! or `inconclusive`, then the evidence.
//!
//! The rules (also printed under the claims):
//! - Each claim is a set of tests of Meta-RIM (the group's `meta-rim` arm) against a baseline
//!   arm on one quantity, each quantity one number per seed, compared seed by seed with
//!   [`compare`] (probability of improvement, exact permutation test).
//! - The p-values of a claim's tests are corrected together (Holm, family-wise 5%).
//! - `holds`: every test is significant after the correction and favours Meta-RIM.
//!   `does not hold`: some test is significant and favours the baseline. `inconclusive`:
//!   anything else (including no runs).
//! - Claim 1 (faster learning): frames to the threshold on each level of the
//!   `sample-efficiency` suite, against `joint` and `lstm`. Claim 2 (roles matter): the same
//!   against `reversed`. Claim 3 (shifting objectives), `curriculum` suite: the mean over the
//!   switches of the frames to the threshold after each switch (adaptation), and the mean
//!   forgetting over the levels moved on from, against `joint` and `lstm`. Claim 4 (zero-shot
//!   transfer), `zero-shot` suite: the mean success over the evaluation levels not trained
//!   on, against `joint` and `lstm`.

use std::fmt::Write as _;

use anyhow::Result;
use metarim_core::nn::params::Mode;

use super::metrics::{compare, curriculum_segments, summarize, Comparison};
use super::report::{forgetting_of, groups, run_data, thousands, RunData};
use super::spec::Suite;
use super::{PlannedRun, RunResult};

/// Family-wise error rate of a claim's tests (Holm's correction).
pub const ALPHA: f64 = 0.05;

/// A suite's runs, finished.
pub struct SuiteRuns {
    /// The suite.
    pub suite: Suite,
    /// Its runs, in arm then seed order.
    pub plan: Vec<PlannedRun>,
    /// Their results, in the same order.
    pub results: Vec<RunResult>,
}

/// A claim's verdict.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Every test significant, all for Meta-RIM.
    Holds,
    /// Some test significant for the baseline.
    DoesNotHold,
    /// Neither.
    Inconclusive,
}

impl Verdict {
    /// The word in the claim line.
    pub fn word(self) -> &'static str {
        match self {
            Verdict::Holds => "holds",
            Verdict::DoesNotHold => "does not hold",
            Verdict::Inconclusive => "inconclusive",
        }
    }
}

/// One test of Meta-RIM against a baseline on one quantity.
#[derive(Clone, Debug, PartialEq)]
pub struct Test {
    /// What was compared (level and quantity).
    pub quantity: String,
    /// Lower values are better (frames, forgetting).
    pub lower_is_better: bool,
    /// The baseline arm.
    pub baseline: String,
    /// The Meta-RIM arm.
    pub reference: String,
    /// Median over seeds and its 95% bootstrap interval, Meta-RIM then the baseline.
    pub medians: [(f64, (f64, f64)); 2],
    /// The seed-by-seed comparison.
    pub comparison: Comparison,
    /// Significant after Holm's correction over the claim's tests.
    pub significant: bool,
}

/// A claim with its verdict and evidence.
#[derive(Clone, Debug, PartialEq)]
pub struct Claim {
    /// 1 to 4.
    pub number: u8,
    /// Its short name, as in the claim line.
    pub name: &'static str,
    /// The verdict.
    pub verdict: Verdict,
    /// The suite it was judged from, its seeds per arm and frame budget per run (largest).
    pub source: Option<(String, usize, u64)>,
    /// The tests.
    pub tests: Vec<Test>,
}

impl Claim {
    /// `claim N (name): verdict`.
    pub fn line(&self) -> String {
        format!(
            "claim {} ({}): {}",
            self.number,
            self.name,
            self.verdict.word()
        )
    }
}

/// Marks each test significant by Holm's step-down procedure at [`ALPHA`] and returns the
/// verdict.
fn judge(tests: &mut [Test]) -> Verdict {
    let mut order: Vec<usize> = (0..tests.len()).collect();
    order.sort_by(|&a, &b| {
        tests[a]
            .comparison
            .p_value
            .total_cmp(&tests[b].comparison.p_value)
    });
    let m = tests.len();
    for (k, &i) in order.iter().enumerate() {
        if tests[i].comparison.p_value <= ALPHA / (m - k) as f64 {
            tests[i].significant = true;
        } else {
            break;
        }
    }
    let favours = |t: &Test| t.comparison.prob_better > 0.5;
    if tests.iter().any(|t| t.significant && !favours(t)) {
        Verdict::DoesNotHold
    } else if !tests.is_empty() && tests.iter().all(|t| t.significant && favours(t)) {
        Verdict::Holds
    } else {
        Verdict::Inconclusive
    }
}

/// For each group of `runs` with a `meta-rim` arm, a test against every arm of `baselines`'
/// modes on `quantity(run)` (one number per seed; NaN: no value).
fn tests_of(
    runs: &SuiteRuns,
    data: &[RunData<'_>],
    baselines: &[Mode],
    what: &str,
    lower_is_better: bool,
    quantity: impl Fn(&RunData<'_>) -> f64,
) -> Vec<Test> {
    let s = &runs.suite;
    let mut out = Vec::new();
    for (group, arms) in groups(s) {
        let Some(&r) = arms
            .iter()
            .find(|&&a| s.arms[a].config.mode == Mode::MetaRim)
        else {
            continue;
        };
        let values = |a: usize| -> Vec<f64> {
            data.iter()
                .filter(|d| d.run.arm == a)
                .map(&quantity)
                .collect()
        };
        for &b in arms
            .iter()
            .filter(|&&a| baselines.contains(&s.arms[a].config.mode))
        {
            let (x, y) = (values(r), values(b));
            let Some(comparison) = compare(&x, &y, lower_is_better) else {
                continue;
            };
            let median = |v: &[f64]| {
                summarize(v).map_or((f64::NAN, (f64::NAN, f64::NAN)), |s| {
                    (s.median, (s.lo, s.hi))
                })
            };
            out.push(Test {
                quantity: if group == "all" {
                    what.to_string()
                } else {
                    format!("{group}, {what}")
                },
                lower_is_better,
                baseline: s.arms[b].name.clone(),
                reference: s.arms[r].name.clone(),
                medians: [median(&x), median(&y)],
                comparison,
                significant: false,
            });
        }
    }
    out
}

fn claim(number: u8, name: &'static str, runs: Option<&SuiteRuns>, mut tests: Vec<Test>) -> Claim {
    let verdict = judge(&mut tests);
    Claim {
        number,
        name,
        verdict,
        source: runs.map(|r| {
            let seeds = r
                .plan
                .iter()
                .map(|p| p.seed as usize + 1)
                .max()
                .unwrap_or(0);
            let frames = r.plan.iter().map(|p| p.config.frames).max().unwrap_or(0);
            (r.suite.name.clone(), seeds, frames)
        }),
        tests,
    }
}

/// The four claims from the suites that test them (`None`: not run, the claim is
/// inconclusive).
pub fn claims(
    sample_efficiency: Option<&SuiteRuns>,
    curriculum: Option<&SuiteRuns>,
    zero_shot: Option<&SuiteRuns>,
) -> Result<Vec<Claim>> {
    let baselines = [Mode::Joint, Mode::Lstm];
    let (mut c1, mut c2) = (Vec::new(), Vec::new());
    if let Some(r) = sample_efficiency {
        let data = run_data(&r.suite, &r.plan, &r.results)?;
        let what = format!("frames to {}", r.suite.threshold);
        c1 = tests_of(r, &data, &baselines, &what, true, |d| d.to_threshold);
        c2 = tests_of(r, &data, &[Mode::Reversed], &what, true, |d| d.to_threshold);
    }
    let mut c3 = Vec::new();
    if let Some(r) = curriculum {
        let data = run_data(&r.suite, &r.plan, &r.results)?;
        let (threshold, min_frames) = (r.suite.threshold, r.suite.min_frames);
        let what = format!("mean frames to {threshold} after a switch");
        c3 = tests_of(r, &data, &baselines, &what, true, |d| {
            let segs = curriculum_segments(&d.log, threshold, min_frames);
            let after: Vec<f64> = segs
                .iter()
                .skip(1)
                .map(|g| g.frames_to_threshold.map_or(f64::INFINITY, |f| f as f64))
                .collect();
            mean_or_nan(&after)
        });
        c3.extend(tests_of(
            r,
            &data,
            &baselines,
            "mean forgetting",
            true,
            |d| {
                let f: Vec<f64> = forgetting_of(d).into_iter().map(|(_, v)| v).collect();
                mean_or_nan(&f)
            },
        ));
    }
    let mut c4 = Vec::new();
    if let Some(r) = zero_shot {
        let data = run_data(&r.suite, &r.plan, &r.results)?;
        c4 = tests_of(
            r,
            &data,
            &baselines,
            "mean success on the levels not trained on",
            false,
            |d| {
                let trained = d.run.config.level_ids();
                let unseen: Vec<f64> = d
                    .result
                    .evals
                    .iter()
                    .filter(|e| !trained.contains(&e.level))
                    .map(|e| e.success)
                    .collect();
                mean_or_nan(&unseen)
            },
        );
    }
    Ok(vec![
        claim(1, "faster learning", sample_efficiency, c1),
        claim(2, "roles matter", sample_efficiency, c2),
        claim(3, "shifting objectives", curriculum, c3),
        claim(4, "zero-shot transfer", zero_shot, c4),
    ])
}

fn mean_or_nan(v: &[f64]) -> f64 {
    if v.is_empty() {
        f64::NAN
    } else {
        v.iter().sum::<f64>() / v.len() as f64
    }
}

fn value(v: f64, frames: bool) -> String {
    if !v.is_finite() {
        if v.is_nan() {
            "-".into()
        } else {
            "not reached".into()
        }
    } else if frames {
        thousands(v.round().max(0.0) as u64)
    } else {
        format!("{v:.3}")
    }
}

/// The claims as markdown: the four lines, each followed by its evidence, then the rules.
pub fn markdown(claims: &[Claim]) -> String {
    let mut md = String::new();
    for c in claims {
        let _ = writeln!(md, "{}\n", c.line());
        match &c.source {
            None => {
                let _ = writeln!(md, "- not run\n");
                continue;
            }
            Some((suite, seeds, frames)) => {
                let _ = writeln!(
                    md,
                    "- suite `{suite}`, {seeds} seeds per arm, up to {} frames per run",
                    thousands(*frames)
                );
            }
        }
        if c.tests.is_empty() {
            let _ = writeln!(md, "- no Meta-RIM arm with a baseline to compare\n");
            continue;
        }
        for t in &c.tests {
            let frames = t.quantity.contains("frames");
            let [(a, ai), (b, bi)] = t.medians;
            let _ = writeln!(
                md,
                "- {}: {} {} [{}, {}] against {} {} [{}, {}] (median over seeds, 95% \
                 interval; {} is better); P({} better) {:.3}, p = {:.4} (exact permutation, \
                 seeds {} and {}){}",
                t.quantity,
                t.reference,
                value(a, frames),
                value(ai.0, frames),
                value(ai.1, frames),
                t.baseline,
                value(b, frames),
                value(bi.0, frames),
                value(bi.1, frames),
                if t.lower_is_better { "lower" } else { "higher" },
                t.reference,
                t.comparison.prob_better,
                t.comparison.p_value,
                t.comparison.n.0,
                t.comparison.n.1,
                if t.significant {
                    "; significant after Holm's correction"
                } else {
                    ""
                }
            );
        }
        md.push('\n');
    }
    let _ = writeln!(
        md,
        "How the verdicts are reached: each claim is a set of tests of Meta-RIM against a \
         baseline on one number per seed, compared seed by seed (P(better): the probability that \
         a random Meta-RIM seed does better, the Mann-Whitney U over the product of the seed \
         counts; p: its exact permutation test, two-sided). A claim's p-values are corrected \
         together (Holm, 5% family-wise). \"holds\": every test significant and for Meta-RIM; \
         \"does not hold\": some test significant for the baseline; \"inconclusive\": neither. \
         With 5 seeds against 5 the smallest p-value is 2/252 = 0.0079, so a claim of k tests \
         can hold only if k <= 6. The rules are in `host/src/experiment/claims.rs`."
    );
    md
}

#[cfg(test)]
mod tests {
    use super::*;

    fn test(p: f64, prob: f64) -> Test {
        Test {
            quantity: "q".into(),
            lower_is_better: true,
            baseline: "b".into(),
            reference: "meta-rim".into(),
            medians: [(1.0, (0.0, 2.0)); 2],
            comparison: Comparison {
                n: (5, 5),
                prob_better: prob,
                p_value: p,
            },
            significant: false,
        }
    }

    #[test]
    fn holm_decides_the_verdict() {
        // Both significant at 0.025 and 0.05, both for Meta-RIM.
        let mut t = vec![test(0.0079, 0.96), test(0.03, 0.9)];
        assert_eq!(judge(&mut t), Verdict::Holds);
        assert!(t.iter().all(|t| t.significant));
        // The smaller p passes 0.025, the larger fails 0.05: not every test is significant.
        let mut t = vec![test(0.0079, 0.96), test(0.06, 0.9)];
        assert_eq!(judge(&mut t), Verdict::Inconclusive);
        assert_eq!((t[0].significant, t[1].significant), (true, false));
        // Holm stops at the first failure: 0.03 > 0.05 / 2 fails, so 0.04 is not tested.
        let mut t = vec![test(0.03, 0.9), test(0.04, 0.9)];
        assert_eq!(judge(&mut t), Verdict::Inconclusive);
        assert!(t.iter().all(|t| !t.significant));
        // A significant test for the baseline.
        let mut t = vec![test(0.0079, 0.04), test(0.5, 0.6)];
        assert_eq!(judge(&mut t), Verdict::DoesNotHold);
        // No tests.
        assert_eq!(judge(&mut []), Verdict::Inconclusive);
    }

    #[test]
    fn lines_have_the_issue_form() {
        let c = Claim {
            number: 2,
            name: "roles matter",
            verdict: Verdict::DoesNotHold,
            source: None,
            tests: Vec::new(),
        };
        assert_eq!(c.line(), "claim 2 (roles matter): does not hold");
        let md = markdown(&[c]);
        assert!(
            md.starts_with("claim 2 (roles matter): does not hold\n\n- not run"),
            "{md}"
        );
    }
}
