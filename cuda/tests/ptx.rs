//! Every kernel compiles with NVRTC for compute_90 (for the Paper and Tiny presets and the
//! other branches of the model kernels) and passes `ptxas -arch=sm_90 -v` with no spills
//! (register and stack counts printed); every entry point's PTX parameters match the host's
//! declaration; the bit-exact kernels (optim.cu) have no contracted or non-IEEE f32 operations.
//! Needs NVRTC and ptxas, not a GPU.
//!
//! With `CI` set, missing tools are a failure (`.ci/run` installs them with
//! `scripts/install-cuda-tools.sh`); elsewhere the test prints why it skipped and passes.

use std::path::PathBuf;
use std::process::Command;

use metarim_core::nn::dims::{CellKind, CommUpdate, EncoderKind, ModelDims, PAPER, SMALL, TINY};
use metarim_cuda::kernel::ArgKind;
use metarim_cuda::layout::ModelLayout;
use metarim_cuda::nvrtc::{self, CI_ARCH};
use metarim_cuda::{compile_ptx, compile_ptx_with, Define, Kernel};

fn in_ci() -> bool {
    std::env::var_os("CI").is_some_and(|v| !v.is_empty() && v != "false" && v != "0")
}

/// The tools, or `None` after printing a skip reason (outside CI). Panics (fails) in CI.
fn tools() -> Option<PathBuf> {
    let found = nvrtc::load_nvrtc()
        .map_err(|e| e.to_string())
        .and_then(|()| nvrtc::ptxas().map_err(|e| e.to_string()));
    match found {
        Ok(ptxas) => Some(ptxas),
        Err(reason) if in_ci() => panic!(
            "CI is set but the CUDA tools are missing: {reason}\n\
             run scripts/install-cuda-tools.sh and export what it prints"
        ),
        Err(reason) => {
            println!("skipped: {reason}");
            None
        }
    }
}

/// The CPU-parity kernels must not contract a*b+c: no f32 `fma`/`mad`, and every f32
/// add/sub/mul/div/sqrt carries an explicit `.rn` (which ptxas may not fuse either). Sqrt and
/// division must be the IEEE ones (`.rn`, not `.approx`).
fn assert_f32_ops_round_alone(file: &str, ptx: &str) {
    for line in ptx.lines().map(str::trim) {
        let op = line.split_whitespace().next().unwrap_or("");
        if !op.ends_with(".f32") {
            continue;
        }
        let name = op.split('.').next().unwrap_or("");
        assert!(
            !matches!(name, "fma" | "mad"),
            "{file}: contracted f32 op: {line}"
        );
        if matches!(name, "add" | "sub" | "mul" | "div" | "sqrt" | "rcp") {
            assert!(
                op.contains(".rn."),
                "{file}: f32 op without IEEE rounding: {line}"
            );
        }
    }
}

/// The `.param` types of PTX entry `name`, in order.
fn ptx_param_types(ptx: &str, name: &str) -> Option<Vec<String>> {
    let start = ptx.find(&format!(".entry {name}("))?;
    let rest = &ptx[start..];
    let end = rest.find(')')?;
    Some(
        rest[..end]
            .lines()
            .filter_map(|l| {
                let mut it = l.split_whitespace();
                while let Some(tok) = it.next() {
                    if tok == ".param" {
                        return it.next().map(str::to_string);
                    }
                }
                None
            })
            .collect(),
    )
}

/// The model configurations CI compiles every kernel for: the two presets, Paper with the
/// bag-of-words encoder and no communication (the other branches of the kernels), and the
/// FiLM encoder: the Small preset (bag of words) and Tiny with the plain conv input; RIM modules
/// with LSTM cells: Small (bag of words, FiLM, communication) and Paper without communication;
/// Paper with the interpolating communication; Paper with the plain CNN encoder (no FiLM, no
/// normalisation: the preset before 2026-12-05).
fn configs() -> Vec<(&'static str, Vec<Define>)> {
    let mut alt = PAPER;
    alt.encoder = EncoderKind::Bow;
    alt.rim.communication = false;
    let tiny_film = ModelDims { film: true, ..TINY };
    let mut small_lstm = SMALL;
    small_lstm.rim.cell = CellKind::Lstm;
    let mut paper_lstm = alt;
    paper_lstm.rim.cell = CellKind::Lstm;
    let mut paper_interp = PAPER;
    paper_interp.rim.comm_update = CommUpdate::Interpolate;
    let paper_conv = ModelDims {
        encoder: EncoderKind::Conv,
        film: false,
        feature_norm: false,
        ..PAPER
    };
    [
        ("Paper", PAPER),
        ("Tiny", TINY),
        ("Paper+bow-comm", alt),
        ("Small", SMALL),
        ("Tiny+FiLM", tiny_film),
        ("Small+lstm-cells", small_lstm),
        ("Paper+bow-comm+lstm-cells", paper_lstm),
        ("Paper+interpolate", paper_interp),
        ("Paper+conv", paper_conv),
    ]
    .into_iter()
    .map(|(name, d)| (name, ModelLayout::new(&d).expect("layout").defines()))
    .collect()
}

#[test]
fn every_kernel_compiles_for_sm_90_and_passes_ptxas() {
    let Some(ptxas) = tools() else { return };
    let dir = std::env::temp_dir().join(format!("metarim-ptx-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    for (config, defines) in configs() {
        for k in Kernel::ALL {
            if !k.needs_model() && config != "Paper" {
                continue; // no model defines: one compile is enough
            }
            let defs: &[Define] = if k.needs_model() { &defines } else { &[] };
            let ptx = compile_ptx_with(k, CI_ARCH, defs).unwrap_or_else(|e| panic!("{e}"));
            for e in k.entries() {
                let types = ptx_param_types(&ptx, e.name)
                    .unwrap_or_else(|| panic!("{}: PTX has no entry {}", k.file_name(), e.name));
                assert_eq!(types.len(), e.params.len(), "{}: parameter count", e.name);
                for (t, p) in types.iter().zip(e.params) {
                    let c = p.kind.code();
                    assert!(
                        ArgKind::ptx_types(c).contains(&t.as_str()),
                        "{}: parameter {} is {t} in the PTX, declared {c}",
                        e.name,
                        p.name
                    );
                }
            }
            if k.bit_exact() {
                assert_f32_ops_round_alone(k.file_name(), &ptx);
            }
            let path = dir.join(format!("{}.ptx", k.file_name()));
            std::fs::write(&path, &ptx).expect("write ptx");
            let out = Command::new(&ptxas)
                .args(["-arch=sm_90", "-v", "-o"])
                .arg(dir.join(format!("{}.cubin", k.file_name())))
                .arg(&path)
                .output()
                .unwrap_or_else(|e| panic!("cannot run {}: {e}", ptxas.display()));
            let log = String::from_utf8_lossy(&out.stderr);
            assert!(
                out.status.success(),
                "ptxas rejected {}:\n{log}{}",
                k.file_name(),
                String::from_utf8_lossy(&out.stdout)
            );
            println!("{config}: {} (compute_90 -> sm_90):", k.file_name());
            for line in log.lines() {
                println!("  {line}");
            }
            // Spills are a performance bug in these kernels: fail on any.
            for line in log.lines().filter(|l| l.contains("spill")) {
                assert!(
                    line.contains("0 bytes spill stores") && line.contains("0 bytes spill loads"),
                    "{config} {}: register spills: {line}",
                    k.file_name()
                );
            }
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn nvrtc_errors_carry_the_log() {
    if tools().is_none() {
        return;
    }
    // An architecture NVRTC does not know: the error must carry NVRTC's own words.
    let err = compile_ptx(Kernel::Optim, "compute_1").expect_err("compute_1 must be rejected");
    let msg = err.to_string();
    println!("{msg}");
    assert!(msg.contains("optim.cu"), "{msg}");
    assert!(msg.contains("--gpu-architecture=compute_1"), "{msg}");
    assert!(msg.contains("nvrtc: error"), "{msg}");
    // A define that breaks the source: the log names the file and line (through the `#line`
    // directives around the inlined header).
    let bad = Define::new("global_thread_index", "1").expect("valid define");
    let err = compile_ptx_with(Kernel::Optim, CI_ARCH, &[bad]).expect_err("broken source");
    let msg = err.to_string();
    println!("{msg}");
    assert!(msg.contains("-Dglobal_thread_index=1"), "{msg}");
    assert!(
        msg.contains("common.cuh(") || msg.contains("optim.cu("),
        "{msg}"
    );
}
