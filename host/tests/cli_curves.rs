//! `metarim curves`: the table reads plain and archived (gzipped) logs with the suites'
//! definition of frames to a threshold, the chart is a PNG of the documented size, and bad
//! input (a missing run, an empty log, a threshold outside [0, 1], a level the run never
//! trained on) is a clear error naming it.

use std::fs::{self, File};
use std::io::{BufReader, Write};
use std::process::{Command, Output};

mod common;

use host::plot::{CURVE_HEIGHT, CURVE_WIDTH};

fn metarim(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_metarim"))
        .args(args)
        .output()
        .unwrap()
}

fn scratch(name: &str) -> common::Scratch {
    common::Scratch::new("metarim-curves", name)
}

/// A `train.jsonl` with one line per `(frames, success)`, in the trainer's field names.
fn log(points: &[(u64, f64)]) -> String {
    points
        .iter()
        .enumerate()
        .map(|(i, (frames, success))| {
            format!(
                "{{\"update\":{},\"frames\":{frames},\"fps\":1000.0,\"level\":\"BabyAI-GoToLocal-v0\",\
                 \"episodes\":12,\"success_rate\":{success},\"return_mean\":0.5}}\n",
                i + 1
            )
        })
        .collect()
}

#[test]
fn table_and_chart_of_a_plain_and_an_archived_run() {
    let dir = scratch("ok");
    let a = dir.join("a");
    let b = dir.join("b");
    fs::create_dir_all(&a).unwrap();
    fs::create_dir_all(&b).unwrap();
    fs::write(
        a.join("train.jsonl"),
        log(&[
            (20_000, 0.95),
            (1_000_000, 0.31),
            (2_000_000, 0.52),
            (3_000_000, 0.93),
        ]),
    )
    .unwrap();
    // An archived run keeps only the gzip of its log.
    let mut gz = flate2::write::GzEncoder::new(
        File::create(b.join("train.jsonl.gz")).unwrap(),
        flate2::Compression::default(),
    );
    gz.write_all(log(&[(1_000_000, 0.1), (2_000_000, 0.2)]).as_bytes())
        .unwrap();
    gz.finish().unwrap();

    let png = dir.join("fig.png");
    let args = [
        "curves",
        a.to_str().unwrap(),
        &format!("{}=archived run", b.display()),
        "--thresholds",
        "0.3,0.9",
        "--at",
        "2000000",
        "--out",
        png.to_str().unwrap(),
    ];
    let o = metarim(&args);
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(
        lines[0],
        "| run | frames to 0.3 | frames to 0.9 | at 2M | last update: frames, success |"
    );
    // 0.95 at 20k frames is before the default 50k minimum.
    assert_eq!(lines[2], "| a | 1.00M | 3.00M | 0.52 | 3.00M, 0.930 |");
    assert_eq!(lines[3], "| archived run | - | - | 0.20 | 2.00M, 0.200 |");
    assert!(lines[4].starts_with("curves: wrote "), "{out}");

    let decoder = png::Decoder::new(BufReader::new(File::open(&png).unwrap()));
    let reader = decoder.read_info().unwrap();
    assert_eq!(reader.info().width, CURVE_WIDTH);
    assert_eq!(reader.info().height, CURVE_HEIGHT);
}

#[test]
fn bad_input_is_an_error_naming_it() {
    let dir = scratch("bad");
    let empty = dir.join("empty");
    fs::create_dir_all(&empty).unwrap();
    fs::write(empty.join("train.jsonl"), "").unwrap();
    let missing = dir.join("missing");
    let local = dir.join("local");
    fs::create_dir_all(&local).unwrap();
    fs::write(local.join("train.jsonl"), log(&[(100_000, 0.5)])).unwrap();
    let cases: [(Vec<String>, &str); 4] = [
        (
            vec!["curves".into(), missing.display().to_string()],
            "is not a directory",
        ),
        (
            vec!["curves".into(), format!("{}=e", empty.display())],
            "no update logged",
        ),
        (
            vec![
                "curves".into(),
                empty.display().to_string(),
                "--thresholds".into(),
                "0.5,1.5".into(),
            ],
            "threshold 1.5",
        ),
        (
            vec![
                "curves".into(),
                local.display().to_string(),
                "--level".into(),
                "BabyAI-GoToObj-v0".into(),
            ],
            "no update on level \"BabyAI-GoToObj-v0\" (its log names: BabyAI-GoToLocal-v0)",
        ),
    ];
    for (args, want) in cases {
        let o = metarim(&args.iter().map(String::as_str).collect::<Vec<_>>());
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(!o.status.success(), "{args:?} succeeded");
        assert!(err.contains(want), "{args:?}: {err}");
        assert!(!err.contains("panicked"), "{args:?}: {err}");
    }
}
