//! `metarim export --format torch`: every tensor of every mode and model option gets its
//! PyTorch name and shape, each parameter exactly once; the written file reads back to the
//! checkpoint's parameters bit for bit; bad input is a clear error and writes nothing.
//! (python/tests/test_torch.py checks the same file through `metarim.torch.load_policy`.)

mod common;

use common::{assert_mentions, opts, small_config, tmpdir};
use host::export::{
    export_torch, pack_torch_tensors, read_torch, torch_bytes, torch_specs, torch_tensors,
    TorchTensor,
};
use host::train::checkpoint;
use host::train::run::train;
use host::train::{Model, TrainConfig};
use metarim_core::nn::dims::{CellKind, EncoderKind};
use metarim_core::nn::params::{Group, Layout};

/// The configs of every mode at the three presets and every model option.
fn configs() -> Vec<(String, TrainConfig)> {
    let mut out = Vec::new();
    for preset in ["Tiny", "Small", "Paper"] {
        for mode in ["meta-rim", "joint", "reversed", "lstm"] {
            let mut c = small_config(mode, 2, 0);
            c.set("preset", &format!("\"{preset}\"")).unwrap();
            out.push((format!("{preset}/{mode}"), c));
        }
    }
    let mut c = small_config("meta-rim", 2, 0);
    c.cell = Some(CellKind::Lstm);
    c.communication = Some(false);
    out.push(("Tiny/lstm-cells/no-comm".into(), c));
    let mut c = small_config("reversed", 2, 0);
    c.encoder = Some(EncoderKind::Bow);
    c.film = Some(true);
    c.cell = Some(CellKind::Lstm);
    c.n_modules = Some(6);
    c.k_active = Some(3);
    c.rim_hidden = Some(5);
    out.push(("Tiny/bow-film/lstm-cells/6x5".into(), c));
    out
}

/// A model of `cfg` with every parameter distinct (its index in the packed buffers).
fn numbered(cfg: &TrainConfig) -> Model {
    let layout = Layout::new(&cfg.dims().unwrap(), cfg.mode).unwrap();
    let mut model = Model::init(layout, 1).unwrap();
    let mut k = 0.0f32;
    for g in Group::ALL {
        for p in model.params.group_mut(g).iter_mut() {
            *p = k;
            k += 1.0;
        }
    }
    model
}

#[test]
fn every_parameter_has_one_pytorch_place() {
    for (name, cfg) in configs() {
        let model = numbered(&cfg);
        let layout = &model.layout;
        let d = layout.dims();
        let tensors = torch_tensors(layout, model.params.bufs()).unwrap();
        // Each packed element exactly once.
        let mut seen: Vec<f32> = tensors.iter().flat_map(|t| t.data.clone()).collect();
        seen.sort_by(f32::total_cmp);
        let want: Vec<f32> = (0..layout.total_len()).map(|i| i as f32).collect();
        assert_eq!(seen, want, "{name}");
        let shape = |n: &str| -> Vec<usize> {
            tensors
                .iter()
                .find(|t| t.name == n)
                .unwrap_or_else(|| panic!("{name}: no tensor {n}"))
                .shape
                .clone()
        };
        for t in &tensors {
            assert_eq!(
                t.data.len(),
                t.shape.iter().product::<usize>(),
                "{name} {}",
                t.name
            );
        }
        let [c0, c1, c2] = d.conv_channels;
        let cin = if d.encoder == EncoderKind::Bow {
            d.bow_dim
        } else {
            3
        };
        assert_eq!(shape("encoder.conv1.weight"), [c0, cin, 2, 2], "{name}");
        assert_eq!(shape("encoder.conv3.weight"), [c2, c1, 2, 2], "{name}");
        let w = d.memory_width();
        assert_eq!(shape("actor.0.weight"), [d.head_hidden, w], "{name}");
        assert_eq!(
            shape("actor.2.weight"),
            [d.n_actions, d.head_hidden],
            "{name}"
        );
        assert_eq!(shape("critic.2.bias"), [1], "{name}");
        let hi = d.instr_hidden;
        assert_eq!(shape("instr.gru.weight_hh_l0"), [3 * hi, hi], "{name}");
        let r = &d.rim;
        if cfg.mode.name() == "lstm" {
            assert_eq!(shape("lstm.weight_ih"), [4 * w, r.input], "{name}");
            assert!(tensors.iter().all(|t| !t.name.starts_with("rim.")));
        } else {
            let g = if r.cell == CellKind::Lstm { 4 } else { 3 };
            let u = r.in_heads * r.d_v;
            let (n, h) = (r.n_modules, r.hidden);
            assert_eq!(
                shape("rim.input_attention.query.weight"),
                [n, r.in_heads * r.d_k, h]
            );
            assert_eq!(shape("rim.rnn.weight_ih"), [n, g * h, u], "{name}");
            assert_eq!(shape("rim.rnn.weight_hh"), [n, g * h, h], "{name}");
            assert_eq!(shape("rim.rnn.bias_hh"), [n, g * h], "{name}");
            // Module m's w_hh row j, column i is packed at m * per + g*h*u + j*h + i.
            let packed = model
                .params
                .group(layout.find("rim.modules.rnn").unwrap().group);
            let e = layout.find("rim.modules.rnn").unwrap();
            let per = e.len / n;
            let whh = tensors
                .iter()
                .find(|t| t.name == "rim.rnn.weight_hh")
                .unwrap();
            let (m, j, i) = (n - 1, g * h - 1, h - 1);
            assert_eq!(
                whh.data[(m * g * h + j) * h + i],
                packed[e.offset + m * per + g * h * u + j * h + i]
            );
            let comm = tensors
                .iter()
                .any(|t| t.name.starts_with("rim.communication."));
            assert_eq!(comm, r.communication, "{name}");
        }
        if d.film {
            let nf = 2 * (c0 + c1 + c2);
            assert_eq!(shape("encoder.film.weight"), [nf, hi], "{name}");
        }
        // Packing back gives the buffers.
        let back = pack_torch_tensors(layout, &tensors).unwrap();
        assert_eq!(back, model.params, "{name}");
        assert_eq!(torch_specs(layout).unwrap().len(), tensors.len());
    }
}

#[test]
fn export_round_trips_and_refuses_bad_input() {
    let dir = tmpdir("export-torch");
    let s = train(&small_config("meta-rim", 4, 160), &opts(&dir.join("run"))).unwrap();
    let out = dir.join("policy.safetensors");
    let sum = export_torch(&s.checkpoint, &out).unwrap();
    let bytes = std::fs::read(&out).unwrap();
    assert_eq!(bytes.len(), sum.bytes);
    let ck = checkpoint::load(&s.checkpoint).unwrap();
    let (cfg, model) = read_torch(&bytes).unwrap();
    assert_eq!(model, ck.model);
    assert_eq!(cfg.mode, ck.config.mode);
    assert_eq!(sum.params, ck.model.layout.total_len());
    // Bit for bit, and the bytes are a function of the checkpoint.
    for g in Group::ALL {
        let (a, b) = (model.params.group(g), ck.model.params.group(g));
        assert!(a.iter().zip(b).all(|(x, y)| x.to_bits() == y.to_bits()));
    }
    let again = torch_bytes(&ck.config, &ck.model).unwrap();
    assert!(again == bytes, "the export's bytes differ between two runs");

    // A non-finite parameter is refused, naming the PyTorch tensor; nothing is written.
    let mut bad = ck.model.clone();
    let e = *bad.layout.find("heads.actor").unwrap();
    bad.params.group_mut(e.group)[e.offset] = f32::NAN;
    let err = format!("{:#}", torch_bytes(&ck.config, &bad).unwrap_err());
    assert_mentions(&err, &["actor.0.weight", "non-finite"]);

    // Tensors: missing, unknown, wrong shape.
    let layout = &ck.model.layout;
    let mut ts = torch_tensors(layout, ck.model.params.bufs()).unwrap();
    let last = ts.pop().unwrap();
    let err = format!("{:#}", pack_torch_tensors(layout, &ts).unwrap_err());
    assert_mentions(&err, &[&last.name, "missing"]);
    ts.push(TorchTensor {
        shape: vec![last.data.len(), 1],
        ..last.clone()
    });
    let err = format!("{:#}", pack_torch_tensors(layout, &ts).unwrap_err());
    assert!(err.contains("shape"), "{err}");
    ts.pop();
    ts.push(last);
    ts.push(TorchTensor {
        name: "encoder.conv9.weight".into(),
        shape: vec![1],
        data: vec![0.0],
    });
    let err = format!("{:#}", pack_torch_tensors(layout, &ts).unwrap_err());
    assert!(err.contains("unknown tensor"), "{err}");

    // Not an export; a checkpoint is not an export either; bad paths write nothing.
    assert!(read_torch(b"junk").is_err());
    let ck_bytes = std::fs::read(&s.checkpoint).unwrap();
    let err = format!("{:#}", read_torch(&ck_bytes).unwrap_err());
    assert!(err.contains("not a metarim PyTorch export"), "{err}");
    assert!(export_torch(&dir.join("missing.safetensors"), &dir.join("x.safetensors")).is_err());
    assert!(!dir.join("x.safetensors").exists());
    assert!(export_torch(&s.checkpoint, &dir.join("no/such/dir.safetensors")).is_err());
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn command_line_writes_the_torch_format() {
    let dir = tmpdir("export-torch-cli");
    let s = train(&small_config("lstm", 2, 0), &opts(&dir.join("run"))).unwrap();
    let out = dir.join("p.safetensors");
    let bin = env!("CARGO_BIN_EXE_metarim");
    let run = |args: &[&str]| {
        std::process::Command::new(bin)
            .args(args)
            .output()
            .expect("running metarim")
    };
    let ck = s.checkpoint.display().to_string();
    let o = run(&[
        "export",
        "--format",
        "torch",
        "--checkpoint",
        &ck,
        "--out",
        &out.display().to_string(),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(String::from_utf8_lossy(&o.stdout).contains("format=torch"));
    let (_, model) = read_torch(&std::fs::read(&out).unwrap()).unwrap();
    assert_eq!(model, checkpoint::load(&s.checkpoint).unwrap().model);
    let o = run(&[
        "export",
        "--format",
        "onnx",
        "--checkpoint",
        &ck,
        "--out",
        "y",
    ]);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("--format"));
    let _ = std::fs::remove_dir_all(&dir);
}
