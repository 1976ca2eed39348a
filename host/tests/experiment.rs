//! `metarim experiment`: a smoke run of every suite in `experiments/` (Tiny preset, tiny
//! budgets, 2 seeds) end to end, checking `results.md` and the plots; reruns skip finished
//! runs; an interrupted run resumes exactly; bad suite files are refused with clear errors.

mod common;
use common::assert_mentions;

use std::fs::File;
use std::io::BufReader;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::SystemTime;

use host::experiment::{self, plan, ExperimentOptions, ExperimentSummary, Overrides, Suite};
use host::train::run::{train, RunOptions, CHECKPOINT_FILE};

const SEEDS: usize = 2;

fn suite_path(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join("experiments")
        .join(format!("{name}.toml"))
}

fn tmpdir(name: &str) -> common::Scratch {
    common::Scratch::new("metarim-exp", name)
}

/// The row of the Markdown table in `md` that starts with `prefix`, checked to have nine cells
/// (ten `|`): the tables of `results.md` that these tests read all have nine columns.
fn table_row<'a>(md: &'a str, prefix: &str) -> &'a str {
    let line = md
        .lines()
        .find(|l| l.starts_with(prefix))
        .unwrap_or_else(|| panic!("no row {prefix:?}:\n{md}"));
    assert_eq!(line.matches('|').count(), 10, "{line}");
    line
}

/// The smoke overrides: Tiny preset, 8 envs, small minibatches, one thread per run.
fn overrides(scale: f64) -> Overrides {
    Overrides {
        budget_scale: scale,
        preset: Some("Tiny".into()),
        set: vec![
            ("procs".into(), "8".into()),
            ("batch_size".into(), "160".into()),
        ],
        threads: 1,
    }
}

fn options(name: &str, scale: f64, out: &Path) -> ExperimentOptions {
    ExperimentOptions {
        seeds: Some(SEEDS),
        overrides: overrides(scale),
        command: format!("metarim experiment {name} (test)"),
        ..ExperimentOptions::new(suite_path(name), out.to_path_buf())
    }
}

/// Decode a PNG: 8-bit RGB, 900 wide, with more than one colour.
fn check_png(path: &Path) {
    let mut reader = png::Decoder::new(BufReader::new(File::open(path).unwrap()))
        .read_info()
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut buf = vec![0; reader.output_buffer_size().unwrap()];
    let info = reader.next_frame(&mut buf).unwrap();
    assert_eq!(info.color_type, png::ColorType::Rgb, "{}", path.display());
    assert_eq!(info.bit_depth, png::BitDepth::Eight);
    assert_eq!(info.width, host::plot::CURVE_WIDTH);
    assert!(info.height >= 200, "{}", path.display());
    let px = &buf[..info.buffer_size()];
    let first = &px[..3];
    assert!(
        px.chunks(3).any(|p| p != first),
        "{} is a blank image",
        path.display()
    );
}

/// [`options`] at budget scale 0.001, archiving each finished run into `arch`.
fn archiving_each(name: &str, out: &Path, arch: &Path) -> ExperimentOptions {
    ExperimentOptions {
        archive_each: Some(arch.to_path_buf()),
        ..options(name, 0.001, out)
    }
}

/// `results.md` and the plots exist and are well formed; returns results.md.
/// Loads and runs the suite of `opts`, then [`check_outputs`]: the suite, the run's summary
/// and its report.
fn run_and_check(
    opts: &ExperimentOptions,
    table_header: &str,
) -> (Suite, ExperimentSummary, String) {
    let suite = Suite::load(&opts.suite, &opts.overrides).unwrap();
    let s = experiment::run(opts).unwrap();
    let md = check_outputs(&s, &suite, table_header);
    (suite, s, md)
}

fn check_outputs(s: &ExperimentSummary, suite: &Suite, table_header: &str) -> String {
    assert_eq!(s.runs, suite.arms.len() * SEEDS);
    assert_eq!(s.finished, s.runs);
    let md = std::fs::read_to_string(&s.results).unwrap();
    assert!(
        md.starts_with(&format!("# Experiment `{}`", suite.name)),
        "{md}"
    );
    for key in [
        "- command: `",
        "- commit: ",
        "- wall time: ",
        "- hardware: ",
        "- trained on: ",
        "bootstrap",
    ] {
        assert!(md.contains(key), "results.md lacks {key:?}:\n{md}");
    }
    assert!(
        md.contains(table_header),
        "results.md lacks {table_header:?}:\n{md}"
    );
    // The budget: per run, in all, and what the runs trained (each at least its budget).
    let budget = md
        .lines()
        .find_map(|l| l.strip_prefix("- budget: "))
        .unwrap_or_else(|| panic!("results.md lacks its budget line:\n{md}"));
    let number = |t: &str| t.replace(',', "").parse::<u64>().unwrap();
    let (per_run, rest) = budget.split_once(" frames per run, ").unwrap();
    let (all, rest) = rest.split_once(" in all (").unwrap();
    let trained = rest
        .split_once("); ")
        .and_then(|(_, t)| t.split_once(" trained"))
        .unwrap()
        .0;
    if !per_run.contains(" to ") {
        assert_eq!(number(per_run) * s.runs as u64, number(all), "{budget}");
    }
    assert!(rest.starts_with(&format!("{} runs)", s.runs)), "{budget}");
    assert!(number(trained) >= number(all), "{budget}");
    for arm in &suite.arms {
        assert!(
            md.contains(&format!("| {} |", arm.name)),
            "no row for arm {}:\n{md}",
            arm.name
        );
        for seed in 0..SEEDS {
            let run = experiment::run_dir_name(&arm.name, seed as u64);
            assert!(md.contains(&format!("| {run} |")), "no row for run {run}");
        }
    }
    // Every referenced image exists, and every PNG in the directory is referenced and valid.
    let mut pngs: Vec<PathBuf> = std::fs::read_dir(&s.out)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "png"))
        .collect();
    pngs.sort();
    let mut plots = s.plots.clone();
    plots.sort();
    assert_eq!(pngs, plots);
    assert!(pngs
        .iter()
        .any(|p| p.to_string_lossy().contains("success-")));
    assert!(pngs
        .iter()
        .any(|p| p.to_string_lossy().contains("modules-")));
    for p in &pngs {
        check_png(p);
        let name = p.file_name().unwrap().to_string_lossy();
        assert!(
            md.contains(&format!("]({name})")),
            "{name} not in results.md"
        );
    }
    check_results_json(s, &md);
    md
}

/// `results.json` beside results.md holds every table row of it, cell for cell, with the
/// numbers shown as values, and one entry per run with its result.
fn check_results_json(s: &ExperimentSummary, md: &str) {
    let text = std::fs::read_to_string(s.out.join("results.json")).unwrap();
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(v["commit"], host::provenance::BUILD_COMMIT);
    assert_eq!(v["header"]["commit"], host::provenance::BUILD_COMMIT);
    let json_rows: Vec<&Vec<serde_json::Value>> = v["sections"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|sec| sec["blocks"].as_array().unwrap().iter())
        .filter_map(|b| b["rows"].as_array())
        .flatten()
        .map(|row| row.as_array().unwrap())
        .collect();
    let json_texts: Vec<Vec<&str>> = json_rows
        .iter()
        .map(|row| row.iter().map(|c| c["text"].as_str().unwrap()).collect())
        .collect();
    let md_rows: Vec<Vec<&str>> = md
        .lines()
        .filter(|l| l.starts_with('|') && !l.starts_with("|---"))
        .filter(|l| !l.starts_with("| arm |") && !l.starts_with("| run |"))
        .filter(|l| !l.starts_with("| policy |"))
        .map(|l| l.trim_matches('|').split('|').map(str::trim).collect())
        .collect();
    assert_eq!(json_texts, md_rows);
    // Numbers read back as the values shown.
    for c in json_rows.iter().copied().flatten() {
        let t = c["text"].as_str().unwrap();
        if let Ok(x) = t.replace(',', "").parse::<f64>() {
            assert_eq!(c["value"].as_f64(), Some(x), "{t}");
        }
    }
    assert_eq!(v["runs"].as_array().unwrap().len(), s.runs);
    for r in v["runs"].as_array().unwrap() {
        assert!(r["result"]["final_success"].is_number(), "{r}");
    }
}

fn mtimes(out: &Path) -> Vec<(PathBuf, SystemTime)> {
    let mut v: Vec<(PathBuf, SystemTime)> = std::fs::read_dir(out.join("runs"))
        .unwrap()
        .map(|e| {
            let ck = e.unwrap().path().join(CHECKPOINT_FILE);
            let t = std::fs::metadata(&ck).unwrap().modified().unwrap();
            (ck, t)
        })
        .collect();
    v.sort();
    v
}

#[test]
fn sample_efficiency_smoke_and_rerun_skips_finished_runs() {
    let out = tmpdir("sample-efficiency");
    let opts = options("sample-efficiency", 0.0005, &out);
    let suite = Suite::load(&opts.suite, &opts.overrides).unwrap();
    assert_eq!(suite.arms.len(), 4);
    let s = experiment::run(&opts).unwrap();
    assert_eq!((s.trained, s.skipped), (s.runs, 0));
    // Each run records the invocation that trained it, with the binary's commit.
    let prov =
        std::fs::read_to_string(out.join("runs/GoToLocal-lstm-seed1/provenance.jsonl")).unwrap();
    let line: serde_json::Value = serde_json::from_str(prov.trim()).unwrap();
    assert_eq!(line["commit"], host::provenance::BUILD_COMMIT);
    assert_eq!(line["frames_at_start"], 0);
    let md = check_outputs(
        &s,
        &suite,
        "| arm | seeds | frames to 0.9 (median) | 95% interval |",
    );
    let level = "GoToLocal";
    assert!(
        md.contains(&format!("## {level}: sample efficiency")),
        "{md}"
    );
    assert!(out.join(format!("success-{level}.png")).is_file());
    assert!(out.join(format!("modules-{level}.png")).is_file());
    // Meta-RIM against each other arm, seed by seed.
    for other in ["joint", "reversed", "lstm"] {
        let row = format!("| GoToLocal-{other} | {SEEDS}, {SEEDS} | ");
        assert!(md.contains(&row), "no comparison row {row:?}:\n{md}");
    }
    // A rerun trains nothing and leaves every checkpoint alone.
    let before = mtimes(&out);
    assert_eq!(before.len(), s.runs);
    let again = experiment::run(&opts).unwrap();
    assert_eq!(
        (again.trained, again.skipped, again.finished),
        (0, s.runs, s.runs)
    );
    assert_eq!(mtimes(&out), before);
    // The command line does the same and ends with the summary line.
    let exe = env!("CARGO_BIN_EXE_metarim");
    let o = Command::new(exe)
        .args(["experiment", opts.suite.to_str().unwrap(), "--out"])
        .arg(out.as_path())
        .args([
            "--seeds",
            "2",
            "--budget-scale",
            "0.0005",
            "--preset",
            "Tiny",
        ])
        .args([
            "--set",
            "procs=8",
            "--set",
            "batch_size=160",
            "--threads",
            "1",
        ])
        .arg("--quiet")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(
        o.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let last = stdout.lines().last().unwrap_or_default();
    assert_eq!(
        last,
        format!(
            "experiment: suite=sample-efficiency runs={0} finished={0} out={1}",
            s.runs,
            out.display()
        )
    );
    assert!(stdout.contains("trained 0"), "{stdout}");
    assert_eq!(mtimes(&out), before);

    // Archived: no checkpoints, gzipped logs; its runs count as finished and its report has
    // the same tables (the header names the invocation, which differs).
    let arch = tmpdir("sample-efficiency-archive");
    let a = experiment::archive(&opts, &arch).unwrap();
    assert_eq!(
        (a.archived, a.unfinished, a.complete_seeds),
        (s.runs, 0, SEEDS)
    );
    for run in std::fs::read_dir(arch.join("runs")).unwrap() {
        let run = run.unwrap().path();
        let files = host::fsutil::sorted_names(&run).unwrap();
        assert_eq!(
            files,
            [
                "config.toml",
                "provenance.jsonl",
                "result.json",
                "train.jsonl.gz"
            ],
            "{}",
            run.display()
        );
    }
    let archived_md = std::fs::read_to_string(a.results.unwrap()).unwrap();
    let tables = |md: &str| md[md.find("## ").unwrap()..].to_string();
    assert_eq!(tables(&archived_md), tables(&md));
    let mut from_archive = options("sample-efficiency", 0.0005, &arch);
    from_archive.report_only = true;
    let r = experiment::run(&from_archive).unwrap();
    assert_eq!((r.trained, r.skipped), (0, s.runs));
    // --status on the archive: every run done, its frames read from its result (no checkpoint).
    for row in experiment::status(&from_archive).unwrap() {
        assert_eq!(row.state, experiment::RunState::Done, "{}", row.name);
        assert!(
            row.frames >= row.budget,
            "{}: {} frames",
            row.name,
            row.frames
        );
    }
    // One seed more than was run: --report-only refuses, naming the run, and trains nothing.
    from_archive.seeds = Some(SEEDS + 1);
    let e = format!("{:#}", experiment::run(&from_archive).unwrap_err());
    assert_mentions(&e, &[&format!("GoToLocal-meta-rim-seed{SEEDS}"), "--seeds"]);
    assert!(!arch
        .join("runs")
        .join(format!("GoToLocal-meta-rim-seed{SEEDS}"))
        .exists());
    // An archived run of another computation (here: another learning rate) is not finished.
    let cfg = arch.join("runs/GoToLocal-joint-seed0/config.toml");
    let text = std::fs::read_to_string(&cfg).unwrap();
    let changed: String = text
        .lines()
        .map(|l| {
            if l.starts_with("lr = ") {
                "lr = 0.5"
            } else {
                l
            }
        })
        .map(|l| format!("{l}\n"))
        .collect();
    assert_ne!(changed, text);
    std::fs::write(&cfg, changed).unwrap();
    from_archive.seeds = Some(SEEDS);
    let e = format!("{:#}", experiment::run(&from_archive).unwrap_err());
    assert!(e.contains("GoToLocal-joint-seed0"), "{e}");
}

#[test]
fn curriculum_smoke() {
    let out = tmpdir("curriculum");
    let opts = options("curriculum", 0.0002, &out);
    let (suite, _, md) = run_and_check(
        &opts,
        "| arm | level | seeds on level | frames to 0.9 (median) |",
    );
    // Every arm has an adaptation row and a forgetting row per curriculum level; the
    // curriculum advanced through all three levels on its (scaled) frame budget.
    for arm in ["meta-rim", "joint", "reversed", "lstm"] {
        for level in ["GoToObj", "GoToLocal", "PickupDist"] {
            let row = format!("| {arm} | {level} | {SEEDS}/{SEEDS} |");
            assert!(md.contains(&row), "no row {row:?}:\n{md}");
            let eval_row = format!("| {arm} | {level} | {SEEDS} |");
            assert!(md.contains(&eval_row), "no row {eval_row:?}:\n{md}");
        }
    }
    assert!(out.join("modules-by-level.png").is_file());
    // Forgetting: every run saved the policy as each of the first two levels ended and
    // evaluated it on that level and the earlier ones; the report has the per-level table,
    // the comparison and a success matrix per arm.
    let levels = ["BabyAI-GoToObj-v0", "BabyAI-GoToLocal-v0"];
    for run in plan(&suite, SEEDS, &out) {
        let text = std::fs::read_to_string(run.dir.join("result.json")).unwrap();
        let r: experiment::RunResult = serde_json::from_str(&text).unwrap();
        assert_eq!(r.stages.len(), 2, "{}", run.dir.display());
        for (i, st) in r.stages.iter().enumerate() {
            assert_eq!(st.level, levels[i]);
            assert!(run.dir.join(format!("level-{i}.safetensors")).is_file());
            let evaluated: Vec<&str> = st.evals.iter().map(|e| e.level.as_str()).collect();
            assert_eq!(evaluated, levels[..=i]);
            assert!(st.evals.iter().all(|e| (0.0..=1.0).contains(&e.success)));
        }
        assert!(r.stages.windows(2).all(|w| w[0].frames < w[1].frames));
    }
    let section = md
        .split("## all: forgetting")
        .nth(1)
        .and_then(|rest| rest.split("Success matrix of").next())
        .unwrap_or_else(|| panic!("no forgetting section:\n{md}"));
    for arm in ["meta-rim", "joint", "reversed", "lstm"] {
        for level in ["GoToObj", "GoToLocal"] {
            table_row(section, &format!("| {arm} | {level} | {SEEDS} | "));
        }
        assert!(md.contains(&format!("Success matrix of {arm} ")), "{md}");
    }
    assert!(md.contains("| P(meta-rim forgets less) | p |"), "{md}");
}

#[test]
fn zero_shot_smoke() {
    let out = tmpdir("zero-shot");
    // Archiving each run as it finishes: at the end the archive holds every run and the
    // same report tables as the suite's own.
    let arch = tmpdir("zero-shot-archive-each");
    let opts = archiving_each("zero-shot", &out, &arch);
    let (_, s, md) = run_and_check(
        &opts,
        "| arm | level | seeds | success (median) | 95% interval |",
    );
    for level in ["GoToLocalS8N4 *", "GoToLocalS8N7", "GoToLocal"] {
        for mode in ["meta-rim", "joint", "reversed", "lstm"] {
            let row = format!("| GoToLocalS8N4-{mode} | {level} | {SEEDS} |");
            assert!(md.contains(&row), "no row {row:?}:\n{md}");
        }
    }
    let archived = std::fs::read_dir(arch.join("runs")).unwrap().count();
    assert_eq!(archived, s.runs);
    let archived_md = std::fs::read_to_string(arch.join("results.md")).unwrap();
    // Both reports name the machine and commit that trained every run.
    let trained_on = format!(
        "- trained on: {} at {}: {} runs\n",
        host::experiment::report::hardware(),
        host::provenance::BUILD_COMMIT,
        s.runs
    );
    for m in [&md, &archived_md] {
        assert!(m.contains(&trained_on), "no {trained_on:?}:\n{m}");
    }
    let tables = |md: &str| md[md.find("## ").unwrap()..].to_string();
    assert_eq!(tables(&archived_md), tables(&md));
}

#[test]
fn one_run_by_index_archives_itself_when_asked() {
    // `--run-index I --archive-each DIR`: the way a suite runs one run at a time (or as a
    // Slurm array task) keeps each finished run outside the scratch directory too.
    let out = tmpdir("run-index-archive");
    let arch = tmpdir("run-index-archive-dest");
    let opts = archiving_each("zero-shot", &out, &arch);
    let o = experiment::run_one(&opts, 1, None).unwrap();
    assert!(!o.skipped);
    let archived: Vec<_> = std::fs::read_dir(arch.join("runs"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(archived, std::slice::from_ref(&o.name));
    let result = |dir: &Path| std::fs::read(dir.join("runs").join(&o.name).join("result.json"));
    assert_eq!(result(&arch).unwrap(), result(&out).unwrap());
    // Without a complete seed there is no report yet.
    assert!(!arch.join("results.md").exists());
    // The archive says which commit and machine trained the run, without the command line
    // (it names the scratch directory).
    let prov =
        std::fs::read_to_string(arch.join("runs").join(&o.name).join("provenance.jsonl")).unwrap();
    let first: serde_json::Value = serde_json::from_str(prov.lines().next().unwrap()).unwrap();
    assert_eq!(first["commit"], host::provenance::BUILD_COMMIT);
    assert_eq!(first["frames_at_start"], 0);
    assert!(
        first["hardware"].as_str().unwrap().contains("cores"),
        "{prov}"
    );
    assert!(first.get("command").is_none(), "{prov}");
    assert!(!prov.contains(out.to_str().unwrap()), "{prov}");
}

#[test]
fn grounding_smoke_reports_success_with_another_episodes_mission() {
    let out = tmpdir("grounding");
    let opts = options("grounding", 0.0002, &out);
    let (suite, _, md) = run_and_check(&opts, "| arm | level | seeds | success (median) | 95% interval | another's mission (median) | 95% interval | carried out the shown mission (median) | 95% interval |");
    assert!(suite.eval.grounding);
    assert_eq!(suite.arms.len(), 5);
    for mode in [
        "meta-rim",
        "lstm",
        "joint",
        "reversed",
        "meta-rim-lstm-cells",
    ] {
        // Nine cells: both success rates, the rate of carrying out the shown mission and their
        // intervals are filled in.
        let line = table_row(&md, &format!("| GoToLocal-{mode} | GoToLocal | {SEEDS} |"));
        assert!(!line.contains("| - |"), "{line}");
    }
    // Every run's result.json holds both evaluations, and says the check was on.
    for run in plan(&suite, SEEDS, &out) {
        let text = std::fs::read_to_string(run.dir.join("result.json")).unwrap();
        let r: experiment::RunResult = serde_json::from_str(&text).unwrap();
        assert!(r.eval_grounding);
        let (w, (lo, hi)) = r.evals[0].swapped.expect("swapped-mission evaluation");
        assert!(
            (0.0..=1.0).contains(&w) && lo <= w && w <= hi,
            "{w} {lo} {hi}"
        );
        let (f, (lo, hi)) = r.evals[0]
            .followed_shown
            .expect("the shown mission tracked");
        assert!(
            (0.0..=1.0).contains(&f) && lo <= f && f <= hi,
            "{f} {lo} {hi}"
        );
        // The counts behind the swapped figure agree with it and with each other.
        let c = r.evals[0]
            .swap_counts
            .expect("the swapped evaluation's counts");
        let episodes = r.evals[0].episodes;
        assert_eq!(
            c.swapped, episodes,
            "every GoToLocal episode has another mission"
        );
        assert_eq!(c.successes as f64 / episodes as f64, w);
        assert_eq!(c.followed_shown as f64 / c.shown_feasible as f64, f);
        assert!(c.feasible_successes <= c.shown_feasible && c.feasible_successes <= c.successes);
        assert!(c.followed_then_own <= c.feasible_successes.min(c.followed_shown));
        let (own, of) = c.infeasible();
        assert_eq!(of, episodes - c.shown_feasible);
        assert_eq!(own, c.successes - c.feasible_successes);
    }
    assert!(
        md.contains("own success where the shown mission was impossible"),
        "{md}"
    );
    // Under the table, the perfect reader's figures on the same evaluation episodes.
    assert!(
        md.contains(
            "Yardstick, GoToLocal: on the same evaluation episodes an agent that reads perfectly"
        ),
        "{md}"
    );
}

#[test]
fn ablations_smoke_resumes_an_interrupted_run() {
    let out = tmpdir("ablations");
    let opts = options("ablations", 0.0005, &out);
    let suite = Suite::load(&opts.suite, &opts.overrides).unwrap();
    // Interrupt the first run after one update, as a killed experiment would leave it.
    let runs = plan(&suite, SEEDS, &out);
    let first = &runs[0];
    let partial = RunOptions {
        out: first.dir.clone(),
        resume: false,
        progress: false,
        stop_after_updates: Some(1),
        tensorboard: true,
        notes: true,
        on_update: None,
        stop: None,
    };
    let stopped = train(&first.config, &partial).unwrap();
    assert!(stopped.frames < first.config.frames);
    let s = experiment::run(&opts).unwrap();
    check_outputs(
        &s,
        &suite,
        "| arm | seeds | frames to 0.9 (median) | 95% interval |",
    );
    // The resumed run ends where an uninterrupted one does, byte for byte.
    let fresh = tmpdir("ablations-uninterrupted");
    let uninterrupted = RunOptions::new(fresh.as_path());
    train(&first.config, &uninterrupted).unwrap();
    assert_eq!(
        std::fs::read(first.dir.join(CHECKPOINT_FILE)).unwrap(),
        std::fs::read(fresh.join(CHECKPOINT_FILE)).unwrap()
    );
}

#[test]
fn bad_suite_files_are_refused_with_clear_errors() {
    let dir = tmpdir("bad");
    let good = std::fs::read_to_string(suite_path("sample-efficiency")).unwrap();
    let cases = [
        (
            "unknown-field",
            good.replace("min_frames =", "min_frams ="),
            "min_frams",
        ),
        (
            "unknown-config-field",
            good.replace("save_interval = 10", "save_intervl = 10"),
            "save_intervl",
        ),
        (
            "unknown-level",
            good.replace(
                "levels = [\"BabyAI-GoToLocal-v0\"]\nmodes",
                "levels = [\"BabyAI-PickupNowhere-v0\"]\nmodes",
            ),
            "BabyAI-PickupNowhere-v0",
        ),
        (
            "unknown-mode",
            good.replace("\"reversed\"", "\"sideways\""),
            "sideways",
        ),
    ];
    for (name, text, what) in cases {
        assert_ne!(text, good, "{name}: the replacement did not apply");
        let path = dir.join(format!("{name}.toml"));
        std::fs::write(&path, text).unwrap();
        let opts = ExperimentOptions {
            suite: path.clone(),
            ..options("sample-efficiency", 0.001, &dir.join("out"))
        };
        let e = format!("{:#}", experiment::run(&opts).unwrap_err());
        assert!(e.contains(what), "{name}: {e}");
        assert!(e.contains(&path.display().to_string()), "{name}: {e}");
        assert!(!dir.join("out").join("results.md").exists());
    }
    let e = format!(
        "{:#}",
        experiment::resolve_suite("no-such-suite", suite_path("x").parent().unwrap()).unwrap_err()
    );
    assert_mentions(&e, &["no-such-suite", "sample-efficiency"]);
}

/// `metarim experiment paper` at a smoke budget: the three claim suites run into their own
/// directories and `claims.md` holds the four claim lines in the form, each followed
/// by its evidence (a verdict per line; at this budget nothing can be significant).
#[test]
fn paper_smoke_writes_the_four_claim_lines() {
    let out = tmpdir("paper");
    let arch = tmpdir("paper-archive-each");
    let opts = ExperimentOptions {
        suite: PathBuf::new(),
        archive_each: Some(arch.clone()),
        ..options("sample-efficiency", 0.0002, &out)
    };
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../experiments");
    let claims = experiment::run_paper(&opts, std::slice::from_ref(&dir)).unwrap();
    assert_eq!(claims, out.join("claims.md"));
    for suite in experiment::PAPER_SUITES {
        assert!(out.join(suite).join("results.md").is_file(), "{suite}");
        // --archive-each: each suite's runs in their own archive.
        assert!(arch.join(suite).join("results.md").is_file(), "{suite}");
    }
    let md = std::fs::read_to_string(&claims).unwrap();
    let names = [
        "faster learning",
        "roles matter",
        "shifting objectives",
        "zero-shot transfer",
    ];
    for (i, name) in names.iter().enumerate() {
        let prefix = format!("claim {} ({name}): ", i + 1);
        let line = md
            .lines()
            .find(|l| l.starts_with(&prefix))
            .unwrap_or_else(|| panic!("no line {prefix:?}:\n{md}"));
        let verdict = &line[prefix.len()..];
        assert!(
            ["holds", "does not hold", "inconclusive"].contains(&verdict),
            "{line}"
        );
        // Two seeds per arm cannot make a test significant (smallest p: 2/6).
        assert_eq!(verdict, "inconclusive", "{line}");
    }
    assert!(md.contains("P(meta-rim better)"), "{md}");
    assert!(md.contains("exact permutation, seeds 2 and 2"), "{md}");
    // --report-only judges the suites that have finished and names the others.
    let unfinished = out.join("zero-shot/runs");
    let run = std::fs::read_dir(&unfinished)
        .unwrap()
        .next()
        .unwrap()
        .unwrap();
    std::fs::remove_file(run.path().join("result.json")).unwrap();
    let report_only = ExperimentOptions {
        report_only: true,
        ..opts.clone()
    };
    let claims = experiment::run_paper(&report_only, &[dir]).unwrap();
    let md = std::fs::read_to_string(&claims).unwrap();
    assert!(
        md.contains("suite `zero-shot`: 7 of 8 runs finished"),
        "{md}"
    );
    // Only the suites judged are linked (a left-out suite may have no report yet).
    assert!(md.contains("zero-shot (left out)"), "{md}");
    assert!(!md.contains("](zero-shot/results.md)"), "{md}");
    assert!(md.contains("[curriculum](curriculum/results.md)"), "{md}");
    assert!(md.contains("claim 1 (faster learning): "), "{md}");
    assert!(md.contains("sample-efficiency"), "{md}");
}

/// From a directory outside the repository, a suite is found by name (the repository the
/// binary was built from), results.md records the binary's commit, progress lines carry
/// ETAs, and `--quiet` keeps the per-run summary but drops the runs' notes.
#[test]
fn cli_finds_suites_from_anywhere_reports_progress_and_quiets_notes() {
    let cwd = tmpdir("cli-anywhere");
    let run = |out: &str, extra: &[&str]| {
        let mut args = vec![
            "experiment",
            "sample-efficiency",
            "--seeds",
            "1",
            "--budget-scale",
            "0.0003",
            "--preset",
            "Tiny",
            "--set",
            "procs=8",
            "--set",
            "batch_size=160",
            "--out",
            out,
        ];
        args.extend_from_slice(extra);
        let o = Command::new(env!("CARGO_BIN_EXE_metarim"))
            .args(&args)
            .current_dir(&cwd)
            .env_remove("METARIM_SUITES")
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&o.stderr).into_owned();
        assert!(o.status.success(), "{err}");
        err
    };
    let err = run("loud", &["--progress-every", "0.02"]);
    assert!(err.contains("starting a new run"), "{err}");
    assert!(
        err.lines()
            .any(|l| l.contains("frames,") && l.contains("fps") && l.contains("ETA")),
        "no per-run progress line:\n{err}"
    );
    assert!(
        err.lines()
            .any(|l| l.contains("runs finished") && l.contains("ETA")),
        "no suite progress line:\n{err}"
    );
    let md = std::fs::read_to_string(cwd.join("loud/results.md")).unwrap();
    assert!(
        md.contains(&format!("- commit: {}\n", host::provenance::BUILD_COMMIT)),
        "{md}"
    );
    assert!(cwd.join("loud/results.json").is_file());
    let err = run("quiet", &["--quiet", "--progress-every", "0.02"]);
    assert!(err.contains("[4/4]"), "{err}");
    for noise in ["starting a new run", "backend cpu", "ETA"] {
        assert!(!err.contains(noise), "--quiet printed {noise:?}:\n{err}");
    }
    // An unknown name lists where it looked.
    let o = Command::new(env!("CARGO_BIN_EXE_metarim"))
        .args(["experiment", "no-such-suite", "--report-only"])
        .current_dir(&cwd)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success());
    assert_mentions(&err, &["searched:", "METARIM_SUITES"]);
    let _ = std::fs::remove_dir_all(&cwd);
}
