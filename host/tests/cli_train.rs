//! The `train`, `eval`, `play` and `bench train` command lines: flags reach the config, bad
//! input is a clear error (exit 2, no panic), and the documented last lines are printed.

use std::process::{Command, Output};

fn metarim(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_metarim"))
        .args(args)
        .output()
        .unwrap()
}

/// Runs `metarim` with `args`, asserts that it succeeded (showing its stderr otherwise) and
/// returns its stdout: the common start of every check of a successful command.
fn metarim_ok(args: &[&str]) -> String {
    let o = metarim(args);
    let (out, err) = text(&o);
    assert!(o.status.success(), "{args:?}: {err}");
    out
}

fn text(o: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

#[test]
fn print_config_applies_config_file_flags_and_sets() {
    let cfg = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../configs/paper-gotolocal.toml"
    );
    let out = metarim_ok(&[
        "train",
        "--config",
        cfg,
        "--mode",
        "lstm",
        "--set",
        "inner_steps=7",
        "--print-config",
    ]);
    assert!(out.contains("level = \"BabyAI-GoToLocal-v0\""), "{out}");
    assert!(out.contains("preset = \"Paper\""), "{out}");
    assert!(out.contains("mode = \"lstm\""), "{out}");
    assert!(out.contains("inner_steps = 7"), "{out}");
}

/// Without a usable GPU, `--backend cuda` is a clear error naming the reason (exit 2).
fn no_gpu_cases() -> Vec<(Vec<String>, &'static str)> {
    if matches!(metarim_cuda::detect(0), metarim_cuda::Backend::Cuda(_)) {
        println!("a CUDA device is present: the no-GPU cases are skipped");
        return Vec::new();
    }
    let out = std::env::temp_dir().join(format!("metarim-cli-cuda-{}", std::process::id()));
    let cases = vec![
        (
            ["bench", "train", "--backend", "cuda", "--preset", "Tiny"]
                .map(String::from)
                .to_vec(),
            "no usable CUDA device",
        ),
        (
            ["train", "--backend", "cuda", "--frames", "10", "--out"]
                .map(String::from)
                .into_iter()
                .chain([out.display().to_string()])
                .collect(),
            "backend cuda: no usable CUDA device",
        ),
    ];
    cases
}

#[test]
fn bad_input_is_a_clear_error() {
    for (args, needle) in [
        (
            vec!["train", "--level", "BabyAI-Nope-v0", "--print-config"],
            "Nope",
        ),
        (
            vec!["train", "--mode", "fastest", "--print-config"],
            "fastest",
        ),
        (vec!["train", "--set", "frams=3", "--print-config"], "frams"),
        (vec!["train", "--set", "lr", "--print-config"], "KEY=VALUE"),
        (
            vec!["train", "--config", "/nonexistent/x.toml"],
            "/nonexistent/x.toml",
        ),
        (
            vec!["eval", "--checkpoint", "/nonexistent/c.safetensors"],
            "c.safetensors",
        ),
        (
            vec!["play", "--checkpoint", "/nonexistent/c.safetensors"],
            "c.safetensors",
        ),
        (vec!["eval"], "--checkpoint"),
        (vec!["eval", "--scripted-reader"], "--level"),
        (
            vec![
                "eval",
                "--scripted-reader",
                "--level",
                "MiniGrid-Empty-5x5-v0",
            ],
            "not \"get to the green goal square\"",
        ),
        (
            vec![
                "eval",
                "--scripted-reader",
                "--level",
                "BabyAI-PickupLoc-v0",
            ],
            "`go to` missions",
        ),
        (
            vec![
                "eval",
                "--scripted-reader",
                "--level",
                "GoToLocal",
                "--reader-idle",
                "sit",
            ],
            "sit",
        ),
        (
            vec!["train", "--backend", "gpu", "--print-config"],
            "backend",
        ),
    ]
    .into_iter()
    .map(|(a, n)| (a.into_iter().map(String::from).collect::<Vec<_>>(), n))
    .chain(no_gpu_cases())
    {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let o = metarim(&args);
        let (_, err) = text(&o);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.contains(needle), "{args:?}: {err}");
        assert!(!err.contains("panicked"), "{args:?}: {err}");
    }
    let _ = std::fs::remove_dir_all(
        std::env::temp_dir().join(format!("metarim-cli-cuda-{}", std::process::id())),
    );
}

#[test]
fn train_eval_play_round_trip() {
    let dir = std::env::temp_dir().join(format!("metarim-cli-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let out = dir.display().to_string();
    let stdout = metarim_ok(&[
        "train",
        "--frames",
        "2400",
        "--quiet",
        "--out",
        &out,
        "--set",
        "procs=4",
        "--set",
        "batch_size=40",
        "--set",
        "recurrence=10",
        "--set",
        "frames_per_proc=20",
    ]);
    let last = stdout.lines().last().unwrap_or_default();
    assert!(
        last.starts_with("train: level=BabyAI-GoToLocal-v0 frames=2400 success="),
        "{stdout}"
    );
    for f in [
        "checkpoint.safetensors",
        "train.jsonl",
        "train.csv",
        "curve.png",
        "config.toml",
        "provenance.jsonl",
    ] {
        assert!(dir.join(f).exists(), "{f} missing");
    }
    let ck = dir.join("checkpoint.safetensors").display().to_string();
    let stdout = metarim_ok(&["eval", "--checkpoint", &ck, "--episodes", "20"]);
    let last = stdout.lines().last().unwrap_or_default();
    assert!(
        last.starts_with("eval: level=BabyAI-GoToLocal-v0 success="),
        "{stdout}"
    );
    assert!(last.ends_with("episodes=20"), "{stdout}");
    // --json: one object with the same figures as the text.
    let json_out = metarim_ok(&["eval", "--checkpoint", &ck, "--episodes", "20", "--json"]);
    let v: serde_json::Value = serde_json::from_str(&json_out).unwrap();
    let field = |k: &str| -> String {
        last.split_whitespace()
            .find_map(|kv| kv.strip_prefix(&format!("{k}=")))
            .unwrap()
            .to_string()
    };
    let f4 = |x: &serde_json::Value| format!("{:.4}", x.as_f64().unwrap());
    assert_eq!(f4(&v["own"]["success"]), field("success"), "{json_out}");
    assert_eq!(f4(&v["swapped"]["success"]), field("swapped_success"));
    // A go-to level: the perfect reader's figures on the same episodes come with them.
    assert_eq!(v["yardstick"]["stay"]["episodes"], 20, "{json_out}");
    let stay = f4(&v["yardstick"]["stay"]["success"]);
    assert!(
        stdout.contains(&format!("perfectly scores {stay}")),
        "{stay} not in {stdout}"
    );
    assert_eq!(f4(&v["own"]["mean_return"]), field("return"));
    assert_eq!(v["own"]["episodes"], 20);
    let ci = &v["own"]["success_ci"];
    let interval = format!("(95% CI {}-{})", f4(&ci[0]), f4(&ci[1]));
    assert!(stdout.contains(&interval), "{interval} not in {stdout}");
    assert_eq!(v["commit"], host::provenance::BUILD_COMMIT);
    let gif = dir.join("ep.gif").display().to_string();
    let stdout = metarim_ok(&[
        "play",
        "--checkpoint",
        &ck,
        "--gif",
        &gif,
        "--level",
        "GoToLocal",
    ]);
    assert!(stdout.contains("play: level=GoToLocal"), "{stdout}");
    let bytes = std::fs::read(dir.join("ep.gif")).unwrap();
    assert!(bytes.starts_with(b"GIF89a"));
    let _ = std::fs::remove_dir_all(&dir);
}

/// The scripted reader needs no checkpoint; its JSON names it, and it always carries out its
/// own `go to` mission.
#[test]
fn eval_runs_the_scripted_reader() {
    let out = metarim_ok(&[
        "eval",
        "--scripted-reader",
        "--reader-idle",
        "wander",
        "--level",
        "BabyAI-GoToLocal-v0",
        "--episodes",
        "50",
        "--json",
    ]);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["agent"], "scripted-reader-wander", "{out}");
    assert!(v["checkpoint"].is_null(), "{out}");
    assert_eq!(v["own"]["success"], 1.0, "{out}");
    assert_eq!(v["swapped"]["episodes"], 50, "{out}");
}

/// `--done-actions true` judges by BabyAI's done-action rules: the JSON says so, the reader
/// still carries out its own missions (one `done` more each), and the same episodes with
/// another episode's mission succeed no more often than under the default rules.
#[test]
fn eval_judges_by_the_done_action_rules_when_asked() {
    let eval = |rules: &str| {
        let out = metarim_ok(&[
            "eval",
            "--scripted-reader",
            "--level",
            "BabyAI-GoToLocal-v0",
            "--episodes",
            "60",
            "--done-actions",
            rules,
            "--json",
        ]);
        serde_json::from_str::<serde_json::Value>(&out).unwrap()
    };
    let (with, without) = (eval("true"), eval("false"));
    assert_eq!(with["done_actions"], true, "{with}");
    assert_eq!(without["done_actions"], false, "{without}");
    assert_eq!(with["own"]["success"], 1.0, "{with}");
    let len = |v: &serde_json::Value| v["own"]["mean_len"].as_f64().unwrap();
    assert!(
        (len(&with) - len(&without) - 1.0).abs() < 1e-9,
        "{with}\n{without}"
    );
    let swapped = |v: &serde_json::Value| v["swapped"]["success"].as_f64().unwrap();
    assert!(swapped(&with) <= swapped(&without), "{with}\n{without}");
}
