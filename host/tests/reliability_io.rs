//! Reliability of the command line's input and output (issue 13): bounded memory on hostile
//! trace files, exports the firmware can run, atomic writes that survive a full disk, and one
//! clear error for each bad argument, before anything is written.

mod common;

use std::fs;
use std::io::{Read, Write};
use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::{assert_mentions, opts, small_config};
use host::experiment::{self, ExperimentOptions, Overrides};
use host::export::{export, export_checkpoint};
use host::fsutil::sorted_names;
use host::render::GifWriter;
use host::train::run::train;
use host::train::{checkpoint, TrainConfig};
use metarim_core::blob::FrozenDtype;

fn metarim(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_metarim"))
        .args(args)
        .output()
        .unwrap()
}

/// Run the binary with the file-size limit of `sh -c 'ulimit -f BLOCKS'` (SIGXFSZ ignored, so
/// a write past the limit fails with EFBIG like a write on a full disk).
fn metarim_with_file_limit(blocks: u32, args: &[&str]) -> Output {
    Command::new("sh")
        .arg("-c")
        .arg(format!(
            "trap '' XFSZ; ulimit -f {blocks}; exec \"$0\" \"$@\""
        ))
        .arg(env!("CARGO_BIN_EXE_metarim"))
        .args(args)
        .output()
        .unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// A fresh, empty scratch directory for one test.
fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("metarim-rel-{}-{name}", std::process::id()));
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).unwrap();
    dir
}

/// A Tiny checkpoint of `mode` after one small update, trained into `dir/ckpt-MODE` (the
/// caller removes `dir`).
fn checkpoint_of(mode: &str, dir: &Path) -> PathBuf {
    let cfg = TrainConfig {
        threads: 1,
        backend: host::train::config::BackendChoice::Cpu,
        ..small_config(mode, 4, 80)
    };
    train(&cfg, &opts(&dir.join(format!("ckpt-{mode}"))))
        .unwrap()
        .checkpoint
}

/// Item 4: a gzip trace holding one 64 MiB line is refused with the limit in the message,
/// instead of being read into memory whole (a 4 GB line used to abort the process).
#[test]
fn env_replay_refuses_an_overlong_line_naming_the_limit() {
    let dir = scratch("replay");
    let path = dir.join("long.jsonl.gz");
    let mut gz = flate2::write::GzEncoder::new(
        fs::File::create(&path).unwrap(),
        flate2::Compression::fast(),
    );
    // 64 MiB of `x` without a newline, produced on the fly.
    std::io::copy(&mut std::io::repeat(b'x').take(64 << 20), &mut gz).unwrap();
    gz.finish().unwrap();
    let o = metarim(&["env", "replay", path.to_str().unwrap()]);
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(err.contains("line 1"), "{err}");
    assert!(err.contains("16 MiB"), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    let _ = fs::remove_dir_all(&dir);
}

/// Item 6: the firmware runs the Tiny preset in the meta-rim split, with f32 or f16 frozen
/// groups; every other mode (whose fast group has another size) is refused by name.
#[test]
fn export_refuses_what_the_firmware_cannot_run() {
    let dir = scratch("export-modes");
    let blobs = dir.join("blobs");
    fs::create_dir(&blobs).unwrap();
    let ok = checkpoint_of("meta-rim", &dir);
    export(&ok, "Tiny", FrozenDtype::F32, &blobs.join("ok.bin")).unwrap();
    for mode in ["joint", "reversed", "lstm"] {
        let ck = checkpoint_of(mode, &dir);
        let out = blobs.join(format!("{mode}.bin"));
        let e = format!(
            "{:#}",
            export(&ck, "Tiny", FrozenDtype::F32, &out).unwrap_err()
        );
        assert_mentions(&e, &[mode, "meta-rim"]);
        assert!(!out.exists());
    }
    // An override of the preset's dims (the firmware's buffers are sized for Tiny's).
    let cfg = TrainConfig {
        k_active: Some(3),
        threads: 1,
        backend: host::train::config::BackendChoice::Cpu,
        ..small_config("meta-rim", 4, 80)
    };
    let k3 = train(&cfg, &opts(&dir.join("k3"))).unwrap().checkpoint;
    let e = format!(
        "{:#}",
        export(&k3, "Tiny", FrozenDtype::F32, &blobs.join("k3.bin")).unwrap_err()
    );
    assert!(e.contains("k_active 3 (firmware: 2)"), "{e}");
    let e = format!(
        "{:#}",
        export(&ok, "Paper", FrozenDtype::F32, &blobs.join("p.bin")).unwrap_err()
    );
    assert_mentions(&e, &["Paper", "Tiny"]);
    assert_eq!(sorted_names(&blobs).unwrap(), ["ok.bin"]);
    let _ = fs::remove_dir_all(&dir);
}

/// Minor item: f16 cannot hold magnitudes above 65504; such weights are refused, naming the
/// tensor and the count, instead of becoming inf in the blob.
#[test]
fn export_f16_refuses_weights_beyond_half_range() {
    let dir = scratch("export-f16");
    let mut ck = checkpoint::load(&checkpoint_of("meta-rim", &dir)).unwrap();
    let dir = dir.join("blobs");
    fs::create_dir(&dir).unwrap();
    let n = ck.model.params.slow.len();
    ck.model.params.slow[n - 1] = 1.0e5;
    ck.model.params.slow[n - 2] = -7.0e4;
    let out = dir.join("m.bin");
    let e = format!(
        "{:#}",
        export_checkpoint(&ck, "Tiny", FrozenDtype::F16, &out).unwrap_err()
    );
    assert_mentions(&e, &["65504", "2 "]);
    let last =
        ck.model.layout.entries().iter().find(|t| {
            t.group == metarim_core::nn::params::Group::Slow && t.range().contains(&(n - 1))
        });
    let last = last.expect("a slow tensor holds the last slow element");
    assert!(e.contains(last.name), "{e} should name {}", last.name);
    assert!(!out.exists());
    // f32 holds them; f16 holds everything below 65520 (which rounds to 65504).
    export_checkpoint(&ck, "Tiny", FrozenDtype::F32, &out).unwrap();
    ck.model.params.slow[n - 1] = 65519.0;
    ck.model.params.slow[n - 2] = -65519.0;
    let half = dir.join("half.bin");
    export_checkpoint(&ck, "Tiny", FrozenDtype::F16, &half).unwrap();
    let bytes = fs::read(&half).unwrap();
    let mut words = vec![0u32; bytes.len().div_ceil(4)];
    bytemuck::cast_slice_mut::<u32, u8>(&mut words)[..bytes.len()].copy_from_slice(&bytes);
    let blob = metarim_core::blob::Blob::parse(
        &bytemuck::cast_slice::<u32, u8>(&words)[..bytes.len()],
        &metarim_core::nn::dims::TINY,
        metarim_core::nn::params::Mode::MetaRim,
    )
    .unwrap();
    let mut frozen = vec![0.0f32; blob.slow_len + blob.other_len];
    blob.frozen_into(&mut frozen).unwrap();
    assert!(frozen.iter().all(|x| x.is_finite()));
    assert_eq!(frozen[n - 1], 65504.0);
    fs::remove_file(&half).unwrap();
    // Nothing non-finite is ever written (a checkpoint cannot hold one; a model can).
    ck.model.params.fast[3] = f32::NAN;
    let e = format!(
        "{:#}",
        export_checkpoint(&ck, "Tiny", FrozenDtype::F32, &dir.join("nan.bin")).unwrap_err()
    );
    assert!(e.contains("non-finite"), "{e}");
    assert_eq!(sorted_names(&dir).unwrap(), ["m.bin"]);
    let _ = fs::remove_dir_all(dir.parent().unwrap());
}

/// The arguments of `metarim env dump` writing `count` GoToLocal states to `out`.
fn env_dump<'a>(count: &'a str, out: &'a std::path::Path) -> [&'a str; 8] {
    let out = out.to_str().unwrap();
    [
        "env",
        "dump",
        "--level",
        "BabyAI-GoToLocal-v0",
        "--count",
        count,
        "--out",
        out,
    ]
}

/// Item 9: `env dump` over an existing file, with the write failing part-way (file-size limit,
/// as on a full disk), leaves the old file as it was and no temporary file behind.
#[test]
fn env_dump_failing_midway_keeps_the_old_file() {
    let dir = scratch("dump");
    for name in ["states.jsonl", "states.jsonl.gz"] {
        let path = dir.join(name);
        fs::write(&path, b"the old contents\n").unwrap();
        let o = metarim_with_file_limit(8, &env_dump("2000", &path));
        let err = stderr(&o);
        assert_eq!(o.status.code(), Some(2), "{err}");
        assert!(err.contains(name), "{err}");
        let now = String::from_utf8_lossy(&fs::read(&path).unwrap()).into_owned();
        assert!(
            now == "the old contents\n",
            "{name}: {err}; the file now starts {:?}",
            &now[..now.len().min(80)]
        );
    }
    assert_eq!(
        sorted_names(&dir).unwrap(),
        ["states.jsonl", "states.jsonl.gz"]
    );
    // A dump that succeeds replaces the file.
    let path = dir.join("states.jsonl");
    let o = metarim(&env_dump("3", &path));
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(fs::read_to_string(&path).unwrap().lines().count(), 3);
    let _ = fs::remove_dir_all(&dir);
}

/// Item 9: a target that is not a regular file (here a link to `/dev/full`) is written in
/// place, never renamed over: the disk-full error is reported once and the link survives.
#[test]
fn env_dump_onto_a_full_device_is_one_error() {
    let dir = scratch("dump-full");
    let link = dir.join("full");
    std::os::unix::fs::symlink("/dev/full", &link).unwrap();
    let o = metarim(&env_dump("50", &link));
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert_eq!(err.matches("No space left on device").count(), 1, "{err}");
    assert!(fs::symlink_metadata(&link).unwrap().is_symlink());
    assert!(fs::metadata(&link).unwrap().file_type().is_char_device());
    assert_eq!(sorted_names(&dir).unwrap(), ["full"]);
    let _ = fs::remove_dir_all(&dir);
}

/// Minor item: `--windows-per-step 0` is an error naming the flag, not the default in
/// disguise.
#[test]
fn adapt_refuses_zero_windows_per_step() {
    let dir = scratch("adapt");
    let ck = checkpoint_of("meta-rim", &dir);
    let flag = "--windows-per-step";
    let o = metarim(&[
        "adapt",
        "--checkpoint",
        ck.to_str().unwrap(),
        "--level",
        "BabyAI-GoToObj-v0",
        "--episodes",
        "1",
        "--eval-episodes",
        "1",
        flag,
        "0",
    ]);
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(2), "{flag}: {err}");
    assert_mentions(&err, &[flag, ">= 1"]);
    let _ = fs::remove_dir_all(&dir);
}

/// Minor item: a suite given with a trailing slash is the suite meant; a directory gets an
/// error saying what a suite argument may be.
#[test]
fn experiment_suite_arguments_with_slashes_and_directories() {
    let suites = Path::new(env!("CARGO_MANIFEST_DIR")).join("../experiments");
    let want = suites.join("sample-efficiency.toml");
    for arg in ["sample-efficiency/", "sample-efficiency//"] {
        assert_eq!(experiment::resolve_suite(arg, &suites).unwrap(), want);
    }
    let file_slash = format!("{}/", want.display());
    assert_eq!(
        experiment::resolve_suite(&file_slash, &suites).unwrap(),
        PathBuf::from(want.display().to_string())
    );
    let dir = format!("{}/", suites.display());
    let e = format!(
        "{:#}",
        experiment::resolve_suite(&dir, &suites).unwrap_err()
    );
    assert!(e.contains("is a directory"), "{e}");
    assert!(e.contains("sample-efficiency"), "{e}");
    assert!(e.contains(".toml"), "{e}");
}

fn suite_options(suite: PathBuf, out: PathBuf, scale: f64) -> ExperimentOptions {
    ExperimentOptions {
        overrides: Overrides {
            budget_scale: scale,
            preset: Some("Tiny".into()),
            set: Vec::new(),
            threads: 1,
        },
        jobs: 1,
        command: "test".into(),
        ..ExperimentOptions::new(suite, out)
    }
}

/// Minor item: `seeds = 0` in a suite file is reported as the file's field, not as `--seeds`.
#[test]
fn suite_seeds_zero_names_the_field() {
    let dir = scratch("seeds");
    let suite = dir.join("s.toml");
    fs::write(
        &suite,
        "name = \"s\"\nmetric = \"sample-efficiency\"\nseeds = 0\n\
         [[arms]]\nname = \"a\"\n",
    )
    .unwrap();
    let out = dir.join("out");
    let e = format!(
        "{:#}",
        experiment::run(&suite_options(suite.clone(), out.clone(), 1.0)).unwrap_err()
    );
    assert_mentions(&e, &["field `seeds`", "s.toml"]);
    assert!(!e.contains("--seeds"), "{e}");
    assert!(!out.exists());
    let _ = fs::remove_dir_all(&dir);
}

/// Minor item: a budget scale whose budgets do not fit the config's integers is refused,
/// naming the scale and the field, before any file is written.
#[test]
fn budget_scale_overflow_is_refused_before_writing() {
    let dir = scratch("scale");
    let suite = Path::new(env!("CARGO_MANIFEST_DIR")).join("../experiments/sample-efficiency.toml");
    for scale in [1e300, 1e15, f64::INFINITY, f64::NAN, 0.0, -1.0] {
        let out = dir.join("out");
        let e = format!(
            "{:#}",
            experiment::run(&suite_options(suite.clone(), out.clone(), scale)).unwrap_err()
        );
        assert!(e.contains("budget scale"), "{scale}: {e}");
        if scale.is_finite() && scale > 0.0 {
            assert_mentions(&e, &["`frames`", "9223372036854775807"]);
        }
        assert!(!out.exists(), "{scale}");
    }
    let _ = fs::remove_dir_all(&dir);
}

/// A writer that fails like a full disk.
struct Full;

impl Write for Full {
    fn write(&mut self, _: &[u8]) -> std::io::Result<usize> {
        Err(std::io::Error::from_raw_os_error(28))
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Minor item: a GIF that cannot be written says why once (the GIF encoder's error used to
/// repeat its cause).
#[test]
fn gif_write_errors_say_the_cause_once() {
    let e = match GifWriter::new(Full, 4, 4, 10) {
        Err(e) => format!("{e:#}"),
        Ok(mut g) => {
            let frame = host::render::Frame {
                width: 4,
                height: 4,
                rgb: vec![0; 48],
            };
            let r = g.add(&frame).and_then(|()| g.finish());
            format!("{:#}", r.unwrap_err())
        }
    };
    assert_eq!(e.matches("No space left on device").count(), 1, "{e}");
}

/// Minor item: `play --gif` on a full disk (a link to /dev/full; a file-size limit) ends with
/// one error naming the file, and leaves nothing behind.
#[test]
fn play_gif_on_a_full_disk_is_one_error() {
    let top = scratch("gif");
    let ck = checkpoint_of("meta-rim", &top);
    let dir = top.join("gifs");
    fs::create_dir(&dir).unwrap();
    let link = dir.join("full.gif");
    std::os::unix::fs::symlink("/dev/full", &link).unwrap();
    let args = |gif: &Path| -> Vec<String> {
        [
            "play",
            "--checkpoint",
            ck.to_str().unwrap(),
            "--gif",
            gif.to_str().unwrap(),
        ]
        .map(String::from)
        .to_vec()
    };
    let a = args(&link);
    let o = metarim(&a.iter().map(String::as_str).collect::<Vec<_>>());
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert_eq!(err.matches("No space left on device").count(), 1, "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("full.gif"), "{err}");
    assert!(fs::metadata(&link).unwrap().file_type().is_char_device());

    let gif = dir.join("big.gif");
    let a = args(&gif);
    let o = metarim_with_file_limit(4, &a.iter().map(String::as_str).collect::<Vec<_>>());
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert_eq!(err.matches("File too large").count(), 1, "{err}");
    assert!(err.contains("big.gif"), "{err}");
    assert_eq!(sorted_names(&dir).unwrap(), ["full.gif"]);
    let _ = fs::remove_dir_all(&top);
}
