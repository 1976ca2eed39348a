//! Metrics of an experiment, computed from the per-update training logs (`train.jsonl`) and
//! summarised over seeds.
//!
//! Invariants:
//! - Everything here is a pure function of its inputs: the bootstrap draws from a [`Pcg32`]
//!   with a fixed seed ([`BOOTSTRAP_SEED`]), so the same logs give the same tables.
//! - A run that never reaches the threshold counts as infinitely slow
//!   ([`f64::INFINITY`]): medians and intervals over seeds stay defined, and read "not
//!   reached" when at least half the resampled runs did not reach it.
//! - Non-finite success rates (none are logged, but logs are input) count as 0.

use std::path::Path;

use anyhow::{anyhow, Context, Result};
use metarim_core::rng::Pcg32;

/// Seed of the bootstrap's generator (any fixed value; fixed so tables are reproducible).
pub const BOOTSTRAP_SEED: u64 = 0x6d65_7461_7269_6d00;

/// Resamples drawn by [`bootstrap_median_interval`].
pub const BOOTSTRAP_RESAMPLES: usize = 2000;

/// One update of a training log: the fields the metrics need.
#[derive(Clone, Debug, PartialEq)]
pub struct LogPoint {
    /// Update index (1-based).
    pub update: u64,
    /// Frames trained on after this update.
    pub frames: u64,
    /// The level trained on during this update (the curriculum's level before any switch
    /// that this update triggered).
    pub level: String,
    /// Episodes that ended in this update.
    pub episodes: u64,
    /// Rolling success rate (the trainer's statistics window, current level only).
    pub success: f64,
    /// Fraction of the update's steps each RIM module was active (empty for the LSTM).
    pub activity: Vec<f64>,
    /// Training frames per second of this update (0 where the log has none): with the
    /// frames of the update, its duration, so a run's training time survives resumes.
    pub fps: f64,
}

/// Parse the JSON lines of a `train.jsonl`; blank lines are skipped, anything else that is
/// not a log line is an error naming the line.
pub fn parse_log(text: &str) -> Result<Vec<LogPoint>> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let point = parse_line(line).with_context(|| format!("log line {}", i + 1))?;
        out.push(point);
    }
    Ok(out)
}

fn parse_line(line: &str) -> Result<LogPoint> {
    let v: serde_json::Value = serde_json::from_str(line).map_err(|e| anyhow!("not JSON: {e}"))?;
    let field = |name: &str| {
        v.get(name)
            .ok_or_else(|| anyhow!("field `{name}` is missing"))
    };
    let uint = |name: &str| -> Result<u64> {
        field(name)?
            .as_u64()
            .ok_or_else(|| anyhow!("field `{name}` is not a non-negative integer"))
    };
    let success = field("success_rate")?
        .as_f64()
        .ok_or_else(|| anyhow!("field `success_rate` is not a number"))?;
    let activity = match v.get("module_activity") {
        None => Vec::new(),
        Some(a) => a
            .as_array()
            .ok_or_else(|| anyhow!("field `module_activity` is not an array"))?
            .iter()
            .map(|x| x.as_f64().unwrap_or(f64::NAN))
            .collect(),
    };
    Ok(LogPoint {
        update: uint("update")?,
        frames: uint("frames")?,
        level: field("level")?
            .as_str()
            .ok_or_else(|| anyhow!("field `level` is not a string"))?
            .to_string(),
        episodes: uint("episodes")?,
        success: if success.is_finite() { success } else { 0.0 },
        activity,
        fps: v
            .get("fps")
            .and_then(serde_json::Value::as_f64)
            .filter(|f| f.is_finite() && *f > 0.0)
            .unwrap_or(0.0),
    })
}

/// Seconds of training in `points` (each update's frames over its frames per second; updates
/// without a rate count 0): evaluations and start-up not included.
pub fn training_seconds(points: &[LogPoint]) -> f64 {
    let mut prev = 0u64;
    let mut total = 0.0;
    for p in points {
        if p.fps > 0.0 {
            total += p.frames.saturating_sub(prev) as f64 / p.fps;
        }
        prev = p.frames;
    }
    total
}

/// Read and parse a `train.jsonl`, or, where it is absent, the gzip of it beside it
/// (`train.jsonl.gz`: how archived runs keep their log, experiments/README.md).
pub fn read_log(path: &Path) -> Result<Vec<LogPoint>> {
    let mut gz = path.as_os_str().to_owned();
    gz.push(".gz");
    let gz = Path::new(&gz);
    if !path.exists() && gz.exists() {
        let file = std::fs::File::open(gz).with_context(|| format!("opening {}", gz.display()))?;
        let mut text = String::new();
        std::io::Read::read_to_string(&mut flate2::read::GzDecoder::new(file), &mut text)
            .with_context(|| format!("reading {} (gzip)", gz.display()))?;
        return parse_log(&text).with_context(|| format!("in {}", gz.display()));
    }
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    parse_log(&text).with_context(|| format!("in {}", path.display()))
}

/// Frames until the rolling success rate first reaches `threshold`, counting only updates
/// with at least `min_frames` frames (so the rolling window holds enough episodes); `None`
/// when it is never reached.
pub fn frames_to_threshold(points: &[LogPoint], threshold: f64, min_frames: u64) -> Option<u64> {
    points
        .iter()
        .find(|p| p.frames >= min_frames && p.success >= threshold)
        .map(|p| p.frames)
}

/// The area under the success curve over `0..budget` frames, divided by `budget` (so in
/// `[0, 1]`): the success logged at an update holds for the frames of that update, from the
/// previous update's frame count (0 for the first) to its own. Frames past the budget do not
/// count; frames of the budget that no update covers count as 0. A zero budget gives 0.
pub fn success_auc(points: &[LogPoint], budget: u64) -> f64 {
    if budget == 0 {
        return 0.0;
    }
    let mut area = 0.0;
    let mut prev = 0u64;
    for p in points {
        let end = p.frames.min(budget);
        if end > prev {
            area += p.success.clamp(0.0, 1.0) * (end - prev) as f64;
        }
        prev = prev.max(end);
    }
    area / budget as f64
}

/// One level of a curriculum run, as seen in its log.
#[derive(Clone, Debug, PartialEq)]
pub struct LevelSegment {
    /// Level id.
    pub level: String,
    /// Frames when training on it started (the switch; 0 for the first level).
    pub start_frames: u64,
    /// Frames at its last logged update.
    pub end_frames: u64,
    /// Frames after the switch until the rolling success on this level first reached the
    /// threshold (updates at least `min_frames` after the switch); `None`: not reached.
    pub frames_to_threshold: Option<u64>,
}

/// Split a curriculum log into its levels (consecutive updates on the same level) and measure
/// the adaptation speed on each: frames after the switch to reach `threshold`.
pub fn curriculum_segments(
    points: &[LogPoint],
    threshold: f64,
    min_frames: u64,
) -> Vec<LevelSegment> {
    let mut out: Vec<LevelSegment> = Vec::new();
    let mut prev_frames = 0u64;
    for p in points {
        let same = out.last().is_some_and(|s| s.level == p.level);
        if !same {
            out.push(LevelSegment {
                level: p.level.clone(),
                start_frames: prev_frames,
                end_frames: p.frames,
                frames_to_threshold: None,
            });
        }
        if let Some(seg) = out.last_mut() {
            seg.end_frames = p.frames;
            let since = p.frames.saturating_sub(seg.start_frames);
            if seg.frames_to_threshold.is_none() && since >= min_frames && p.success >= threshold {
                seg.frames_to_threshold = Some(since);
            }
        }
        prev_frames = p.frames;
    }
    out
}

/// The median of the non-NaN `values` (the mean of the two middle ones for an even count;
/// infinities allowed); `None` when there are none.
pub fn median(values: &[f64]) -> Option<f64> {
    let mut v: Vec<f64> = values.iter().copied().filter(|x| !x.is_nan()).collect();
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    Some(if n % 2 == 1 {
        v[n / 2]
    } else if v[n / 2 - 1] == v[n / 2] {
        // Also keeps two equal infinities from becoming NaN.
        v[n / 2]
    } else {
        0.5 * (v[n / 2 - 1] + v[n / 2])
    })
}

/// The interquartile mean of the non-NaN `values` (rliable's IQM, `scipy.stats.trim_mean(x,
/// 0.25)`): sorted, `floor(n / 4)` values cut from each end, the mean of the rest. More
/// efficient than the median over few seeds, and as robust to one outlying seed. Infinities
/// in the kept middle give an infinite IQM; `None` for no values.
pub fn iqm(values: &[f64]) -> Option<f64> {
    let mut v: Vec<f64> = values.iter().copied().filter(|x| !x.is_nan()).collect();
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let cut = v.len() / 4;
    let kept = &v[cut..v.len() - cut];
    Some(kept.iter().sum::<f64>() / kept.len() as f64)
}

/// A 95% bootstrap percentile interval of `statistic` over seeds: `resamples` resamples of the
/// non-NaN `values` with replacement (drawn from a [`Pcg32`] seeded with `seed`), the
/// statistic of each, and their 2.5th and 97.5th percentiles (nearest rank). `None` for no
/// values; a single value gives the degenerate interval `(v, v)`.
pub fn bootstrap_interval(
    values: &[f64],
    statistic: impl Fn(&[f64]) -> Option<f64>,
    resamples: usize,
    seed: u64,
) -> Option<(f64, f64)> {
    let v: Vec<f64> = values.iter().copied().filter(|x| !x.is_nan()).collect();
    if v.is_empty() {
        return None;
    }
    let resamples = resamples.max(1);
    let mut rng = Pcg32::new(seed);
    let mut stats = Vec::with_capacity(resamples);
    let mut sample = vec![0.0; v.len()];
    for _ in 0..resamples {
        for s in sample.iter_mut() {
            *s = v[rng.below(v.len() as u32) as usize];
        }
        stats.push(statistic(&sample)?);
    }
    stats.sort_by(f64::total_cmp);
    let rank = |q: f64| -> usize {
        let r = (q * resamples as f64).ceil() as usize;
        r.clamp(1, resamples) - 1
    };
    Some((stats[rank(0.025)], stats[rank(0.975)]))
}

/// [`bootstrap_interval`] of the [`median`].
pub fn bootstrap_median_interval(
    values: &[f64],
    resamples: usize,
    seed: u64,
) -> Option<(f64, f64)> {
    bootstrap_interval(values, median, resamples, seed)
}

/// How two arms compare on one quantity over their seeds (e.g. Meta-RIM against a baseline):
/// rank-based, so runs that never reached a threshold (infinite frames) take part as the
/// slowest.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Comparison {
    /// Seeds of the first arm and of the second with a value.
    pub n: (usize, usize),
    /// Probability of improvement: the chance that a random seed of the first arm does better
    /// than a random seed of the second (ties count half), i.e. the Mann-Whitney `U / (n_a
    /// n_b)`; 0.5 means no difference.
    pub prob_better: f64,
    /// Two-sided p-value of the exact permutation test of that statistic (every split of the
    /// pooled seeds into groups of the two sizes; a random [`PERMUTATIONS`] of them beyond
    /// [`EXACT_PERMUTATIONS`] splits): the chance, were the arm labels exchangeable, of a
    /// probability of improvement at least as far from 0.5 as the one observed.
    pub p_value: f64,
}

/// Splits enumerated exactly by [`compare`] (5 seeds against 5 make 252, 10 against 10 make
/// 184,756).
pub const EXACT_PERMUTATIONS: u64 = 200_000;

/// Random splits drawn by [`compare`] when there are more than [`EXACT_PERMUTATIONS`].
pub const PERMUTATIONS: usize = 100_000;

/// The probability that a value of `a` beats one of `b` (ties half), `lower_is_better` or not.
fn prob_better(a: &[f64], b: &[f64], lower_is_better: bool) -> f64 {
    let mut wins = 0.0;
    for x in a {
        for y in b {
            let (x, y) = if lower_is_better { (y, x) } else { (x, y) };
            wins += match x.total_cmp(y) {
                std::cmp::Ordering::Greater => 1.0,
                std::cmp::Ordering::Equal => 0.5,
                std::cmp::Ordering::Less => 0.0,
            };
        }
    }
    wins / (a.len() * b.len()) as f64
}

/// Compares arm `a` with arm `b` on the non-NaN `values` of each ([`Comparison`]); `None` when
/// either has none.
pub fn compare(a: &[f64], b: &[f64], lower_is_better: bool) -> Option<Comparison> {
    let a: Vec<f64> = a.iter().copied().filter(|x| !x.is_nan()).collect();
    let b: Vec<f64> = b.iter().copied().filter(|x| !x.is_nan()).collect();
    if a.is_empty() || b.is_empty() {
        return None;
    }
    let observed = prob_better(&a, &b, lower_is_better);
    let far = |p: f64| (p - 0.5).abs() >= (observed - 0.5).abs() - 1e-12;
    let pooled: Vec<f64> = a.iter().chain(&b).copied().collect();
    let (na, n) = (a.len(), pooled.len());
    let split = |mask: &[bool]| -> f64 {
        let (mut x, mut y) = (Vec::with_capacity(na), Vec::with_capacity(n - na));
        for (v, in_a) in pooled.iter().zip(mask) {
            if *in_a {
                x.push(*v)
            } else {
                y.push(*v)
            }
        }
        prob_better(&x, &y, lower_is_better)
    };
    let (mut extreme, mut total) = (0u64, 0u64);
    if binomial(n as u64, na as u64) <= EXACT_PERMUTATIONS {
        // Every subset of `na` positions, in lexicographic order of their indices.
        let mut idx: Vec<usize> = (0..na).collect();
        loop {
            let mut mask = vec![false; n];
            idx.iter().for_each(|&i| mask[i] = true);
            total += 1;
            extreme += u64::from(far(split(&mask)));
            // Next combination.
            let Some(i) = (0..na).rev().find(|&i| idx[i] < n - na + i) else {
                break;
            };
            idx[i] += 1;
            for j in i + 1..na {
                idx[j] = idx[j - 1] + 1;
            }
        }
    } else {
        let mut rng = Pcg32::new(BOOTSTRAP_SEED ^ 0x7065_726d);
        let mut order: Vec<usize> = (0..n).collect();
        for _ in 0..PERMUTATIONS {
            // Fisher-Yates: the first `na` positions of a uniform shuffle are group a.
            for i in (1..n).rev() {
                order.swap(i, rng.below(i as u32 + 1) as usize);
            }
            let mut mask = vec![false; n];
            order[..na].iter().for_each(|&i| mask[i] = true);
            total += 1;
            extreme += u64::from(far(split(&mask)));
        }
        // The observed split counts as one of the draws (a valid Monte Carlo p-value).
        total += 1;
        extreme += 1;
    }
    Some(Comparison {
        n: (na, n - na),
        prob_better: observed,
        p_value: extreme as f64 / total as f64,
    })
}

/// `n choose k`, saturating.
fn binomial(n: u64, k: u64) -> u64 {
    let k = k.min(n - k.min(n));
    (0..k).fold(1u64, |acc, i| acc.saturating_mul(n - i) / (i + 1))
}

/// The median and the interquartile mean of a quantity over seeds, each with its 95%
/// bootstrap interval.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Stat {
    /// Seeds with a value.
    pub n: usize,
    /// Median over seeds.
    pub median: f64,
    /// Lower end of the median's 95% interval.
    pub lo: f64,
    /// Upper end of the median's 95% interval.
    pub hi: f64,
    /// Interquartile mean over seeds ([`iqm`]).
    pub iqm: f64,
    /// The IQM's 95% interval.
    pub iqm_ci: (f64, f64),
}

/// [`median`] and [`iqm`] of `values` with their [`bootstrap_interval`]s (with
/// [`BOOTSTRAP_RESAMPLES`] and [`BOOTSTRAP_SEED`]); `None` for no values.
pub fn summarize(values: &[f64]) -> Option<Stat> {
    let median = median(values)?;
    let (lo, hi) = bootstrap_median_interval(values, BOOTSTRAP_RESAMPLES, BOOTSTRAP_SEED)?;
    let iqm_ci = bootstrap_interval(values, iqm, BOOTSTRAP_RESAMPLES, BOOTSTRAP_SEED)?;
    Some(Stat {
        n: values.iter().filter(|x| !x.is_nan()).count(),
        median,
        lo,
        hi,
        iqm: iqm(values)?,
        iqm_ci,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(frames: u64, level: &str, success: f64) -> LogPoint {
        LogPoint {
            update: frames / 100,
            frames,
            level: level.into(),
            episodes: 3,
            success,
            activity: vec![0.5, 0.5],
            fps: 100.0,
        }
    }

    #[test]
    fn training_time_sums_each_updates_frames_over_its_rate() {
        // 100 frames at 100/s, 100 at 100/s, then 100 at an unknown rate (not counted).
        let mut log = vec![p(100, "L", 0.0), p(200, "L", 0.0), p(300, "L", 0.0)];
        log[2].fps = 0.0;
        assert!((training_seconds(&log) - 2.0).abs() < 1e-12);
        assert_eq!(training_seconds(&[]), 0.0);
    }

    #[test]
    fn parses_trainer_log_lines_and_names_bad_ones() {
        let text = concat!(
            r#"{"update":1,"frames":100,"fps":1.0,"wall_s":0.1,"level":"L","episodes":2,"#,
            r#""return_mean":0.5,"success_rate":0.25,"module_activity":[0.5,1.0]}"#,
            "\n\n",
            r#"{"update":2,"frames":200,"level":"L","episodes":0,"success_rate":0.5}"#,
            "\n"
        );
        let pts = parse_log(text).unwrap();
        assert_eq!(pts.len(), 2);
        assert_eq!(pts[0].activity, vec![0.5, 1.0]);
        assert_eq!((pts[1].frames, pts[1].success), (200, 0.5));
        assert!(pts[1].activity.is_empty());
        let e = format!("{:#}", parse_log("{\"update\":1}\n").unwrap_err());
        assert!(e.contains("line 1") && e.contains("is missing"), "{e}");
        let e = format!("{:#}", parse_log("a\n").unwrap_err());
        assert!(e.contains("not JSON"), "{e}");
    }

    #[test]
    fn frames_to_threshold_skips_the_first_frames() {
        let log = [
            p(100, "L", 1.0),
            p(200, "L", 0.5),
            p(300, "L", 0.95),
            p(400, "L", 0.8),
        ];
        assert_eq!(frames_to_threshold(&log, 0.9, 0), Some(100));
        assert_eq!(frames_to_threshold(&log, 0.9, 150), Some(300));
        assert_eq!(frames_to_threshold(&log, 0.99, 150), None);
        assert_eq!(frames_to_threshold(&[], 0.9, 0), None);
    }

    #[test]
    fn auc_is_the_normalised_step_area() {
        let log = [p(100, "L", 0.0), p(200, "L", 0.5), p(300, "L", 1.0)];
        assert!((success_auc(&log, 300) - 0.5).abs() < 1e-12);
        // Budget cuts the last update; frames past it do not count.
        assert!((success_auc(&log, 250) - (50.0 + 50.0) / 250.0).abs() < 1e-12);
        // Uncovered budget counts as 0.
        assert!((success_auc(&log, 600) - 150.0 / 600.0).abs() < 1e-12);
        assert_eq!(success_auc(&log, 0), 0.0);
        assert_eq!(success_auc(&[], 100), 0.0);
    }

    #[test]
    fn curriculum_segments_measure_frames_after_each_switch() {
        let log = [
            p(100, "A", 0.5),
            p(200, "A", 0.95),
            p(300, "B", 1.0), // right after the switch: too early to count
            p(400, "B", 0.6),
            p(500, "B", 0.92),
            p(600, "C", 0.1),
        ];
        let s = curriculum_segments(&log, 0.9, 150);
        assert_eq!(s.len(), 3);
        assert_eq!((s[0].level.as_str(), s[0].start_frames), ("A", 0));
        assert_eq!(s[0].frames_to_threshold, Some(200));
        assert_eq!((s[1].start_frames, s[1].end_frames), (200, 500));
        assert_eq!(s[1].frames_to_threshold, Some(300));
        assert_eq!(s[2].start_frames, 500);
        assert_eq!(s[2].frames_to_threshold, None);
    }

    #[test]
    fn medians_handle_even_counts_and_infinity() {
        assert_eq!(median(&[]), None);
        assert_eq!(median(&[f64::NAN]), None);
        assert_eq!(median(&[3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), Some(2.5));
        assert_eq!(
            median(&[1.0, f64::INFINITY, f64::INFINITY]),
            Some(f64::INFINITY)
        );
        assert_eq!(median(&[f64::INFINITY, f64::INFINITY]), Some(f64::INFINITY));
    }

    #[test]
    fn bootstrap_interval_brackets_the_median_and_is_reproducible() {
        let v = [10.0, 12.0, 11.0, 30.0, 9.0, 10.5, 11.5];
        let (lo, hi) = bootstrap_median_interval(&v, 2000, 7).unwrap();
        let m = median(&v).unwrap();
        assert!(lo <= m && m <= hi, "{lo} {m} {hi}");
        assert!(lo >= 9.0 && hi <= 30.0);
        // The interval is narrower than the range on a sample with one outlier.
        assert!(hi < 30.0, "{hi}");
        assert_eq!(bootstrap_median_interval(&v, 2000, 7), Some((lo, hi)));
        assert_eq!(bootstrap_median_interval(&[5.0], 100, 1), Some((5.0, 5.0)));
        assert_eq!(bootstrap_median_interval(&[], 100, 1), None);
        let s = summarize(&[1.0, f64::INFINITY, 2.0]).unwrap();
        assert_eq!((s.n, s.median), (3, 2.0));
        assert!(s.lo >= 1.0 && s.hi == f64::INFINITY);
    }

    #[test]
    fn iqm_trims_a_quarter_from_each_end() {
        let v: Vec<f64> = (1..=8).map(f64::from).collect();
        assert_eq!(iqm(&v), Some(4.5));
        // 5 seeds: one cut from each end.
        assert_eq!(iqm(&[10.0, 1.0, 3.0, 2.0, 1000.0]), Some(5.0));
        // Fewer than 4: nothing cut.
        assert_eq!(iqm(&[1.0, 2.0, 6.0]), Some(3.0));
        assert_eq!(iqm(&[f64::NAN, 2.0]), Some(2.0));
        assert_eq!(iqm(&[]), None);
        // A run that never reached the threshold, in the kept middle.
        assert_eq!(
            iqm(&[1.0, 2.0, f64::INFINITY, f64::INFINITY, f64::INFINITY]),
            Some(f64::INFINITY)
        );
        assert_eq!(iqm(&[1.0, 2.0, 3.0, 4.0, f64::INFINITY]), Some(3.0));
        let s = summarize(&[1.0, 2.0, 3.0, 4.0, 100.0]).unwrap();
        assert_eq!((s.median, s.iqm), (3.0, 3.0));
        assert!(s.iqm_ci.0 <= s.iqm && s.iqm <= s.iqm_ci.1, "{s:?}");
    }

    #[test]
    fn the_exact_permutation_test_gives_the_textbook_values() {
        // Completely separated 5 vs 5: U = 25, P(better) = 1; two of the 252 splits are as
        // extreme (this one and its mirror): p = 2/252.
        let a = [1.0, 2.0, 3.0, 4.0, 5.0];
        let b = [6.0, 7.0, 8.0, 9.0, 10.0];
        let c = compare(&a, &b, true).unwrap();
        assert_eq!(c.n, (5, 5));
        assert_eq!(c.prob_better, 1.0);
        assert!((c.p_value - 2.0 / 252.0).abs() < 1e-12, "{c:?}");
        // The other direction: the same p-value, P(better) = 0.
        let c = compare(&a, &b, false).unwrap();
        assert_eq!(c.prob_better, 0.0);
        assert!((c.p_value - 2.0 / 252.0).abs() < 1e-12, "{c:?}");
        // Identical arms: P = 0.5, p = 1.
        let c = compare(&a, &a, true).unwrap();
        assert_eq!((c.prob_better, c.p_value), (0.5, 1.0));
        // 3 vs 3, one swap from separated: U = 8 of 9; splits with U >= 8 or <= 1: 4 of 20.
        let c = compare(&[1.0, 2.0, 4.0], &[3.0, 5.0, 6.0], true).unwrap();
        assert!((c.prob_better - 8.0 / 9.0).abs() < 1e-12, "{c:?}");
        assert!((c.p_value - 4.0 / 20.0).abs() < 1e-12, "{c:?}");
        // Never reached (infinite frames) is the slowest, tied with itself.
        let c = compare(&[1.0, f64::INFINITY], &[f64::INFINITY, f64::INFINITY], true).unwrap();
        assert_eq!(c.prob_better, 0.75);
        assert_eq!(compare(&[], &a, true), None);
    }

    #[test]
    fn many_seeds_fall_back_to_random_splits() {
        // 12 vs 12 is 2,704,156 splits: a Monte Carlo p-value, still tiny for separated arms
        // and near 1 for identical ones, and reproducible.
        let a: Vec<f64> = (0..12).map(f64::from).collect();
        let b: Vec<f64> = (100..112).map(f64::from).collect();
        let c = compare(&a, &b, true).unwrap();
        assert_eq!(c.prob_better, 1.0);
        assert!(c.p_value < 1e-3, "{c:?}");
        assert_eq!(c, compare(&a, &b, true).unwrap());
        let c = compare(&a, &a, true).unwrap();
        assert!(c.p_value > 0.99, "{c:?}");
    }
}
