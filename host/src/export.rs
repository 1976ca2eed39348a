//! `metarim export`: a checkpoint's parameters packed as a device blob ([`metarim_core::blob`])
//! for the firmware (the default), or, with `--format torch` ([`export_torch`]), unpacked into
//! PyTorch's parameter names and layouts ([`torch_specs`]) as a weights-only safetensors file
//! that `metarim.torch.load_policy` (python/metarim/torch.py) reads like a checkpoint.
//!
//! What the firmware runs, and therefore the only thing exported: the `Tiny` preset
//! (`firmware/app/src/model.rs` compiles `TINY` and fixed-size `TINY_FAST` buffers) in the
//! meta-rim split (it adapts the fast group, the module RNNs), without overrides of the
//! preset's dims (`n_modules`, `k_active`, `communication`, `encoder`). Anything else is
//! refused with an error saying what differs. The frozen (slow and other) groups may be f32 or
//! f16 (the QEMU firmware build reads f32 in place from flash; an f16 blob is refused there at
//! start-up, since it would need a RAM copy).
//!
//! Every value written is finite: a non-finite parameter, or one that f16 cannot hold (above
//! 65504 in magnitude), is refused naming the tensor and the count.

use std::path::Path;

use anyhow::{anyhow, bail, Context, Result};
use metarim_core::blob::{self, Blob, FrozenDtype};
use metarim_core::nn::dims::{CommUpdate, ModelDims, TINY};
use metarim_core::nn::params::{Group, Layout, Mode};

use crate::fsutil;
use crate::train::checkpoint;
use crate::train::config::Preset;
use crate::train::GroupVecs;

/// The only preset the firmware compiles.
pub const FIRMWARE_PRESET: &str = "Tiny";
/// The only parameter split the firmware runs.
pub const FIRMWARE_MODE: Mode = Mode::MetaRim;

/// The smallest f32 magnitude that f16 rounds to infinity: its largest finite value is 65504,
/// the next step would be 65536, and round-to-nearest-even sends the midpoint 65520 up.
pub const F16_ROUNDS_TO_INFINITY: f32 = 65520.0;

/// What an export wrote.
#[derive(Clone, Debug, PartialEq)]
pub struct ExportSummary {
    /// Blob length in bytes.
    pub bytes: usize,
    /// Parameters per group (fast, slow, other).
    pub groups: [usize; 3],
    /// Frozen-section dtype.
    pub dtype: FrozenDtype,
}

/// Parse `f16` / `f32`.
pub fn parse_dtype(s: &str) -> Result<FrozenDtype> {
    match s {
        "f32" => Ok(FrozenDtype::F32),
        "f16" => Ok(FrozenDtype::F16),
        _ => bail!("unknown --slow-dtype {s:?} (f16 or f32)"),
    }
}

/// Export the checkpoint at `ckpt` for `preset` into `out` (atomically), then parse the written
/// bytes back as the device would.
pub fn export(ckpt: &Path, preset: &str, dtype: FrozenDtype, out: &Path) -> Result<ExportSummary> {
    let ck = checkpoint::load(ckpt)?;
    export_checkpoint(&ck, preset, dtype, out)
}

/// [`export`] of a loaded checkpoint: refuses what the firmware cannot run (see the module
/// docs) before anything is written.
pub fn export_checkpoint(
    ck: &checkpoint::Checkpoint,
    preset: &str,
    dtype: FrozenDtype,
    out: &Path,
) -> Result<ExportSummary> {
    let want = Preset::from_name(preset)?.dims();
    if want != TINY {
        bail!(
            "--preset {preset}: the firmware compiles only the {FIRMWARE_PRESET} preset \
             (firmware/app/src/model.rs); export a {FIRMWARE_PRESET} checkpoint with --preset \
             {FIRMWARE_PRESET}"
        );
    }
    let layout = &ck.model.layout;
    if layout.mode() != FIRMWARE_MODE {
        bail!(
            "the checkpoint was trained in {} mode, but the firmware runs the {} split only \
             (it adapts a fast group of {} module-RNN parameters; this checkpoint's fast group \
             has {}); train with --mode {}",
            layout.mode().name(),
            FIRMWARE_MODE.name(),
            Layout::new(&want, FIRMWARE_MODE)
                .map(|l| l.group_len(Group::Fast))
                .unwrap_or(0),
            layout.group_len(Group::Fast),
            FIRMWARE_MODE.name()
        );
    }
    let have = *layout.dims();
    if have != want {
        bail!(
            "the checkpoint's model ({} preset) differs from the {FIRMWARE_PRESET} preset \
             compiled into the firmware: {}",
            ck.config.preset,
            dims_diff(&have, &want)
        );
    }
    let p = &ck.model.params;
    let groups = [&p.fast[..], &p.slow[..], &p.other[..]];
    check_values(layout, groups, dtype)?;
    let mut bytes = vec![0u8; blob::blob_len(layout, dtype)];
    let n = blob::write(layout, dtype, groups[0], groups[1], groups[2], &mut bytes)
        .map_err(|e| anyhow!("packing the blob: {e}"))?;
    // Check the bytes the way the device will (from a 4-aligned copy).
    let words: Vec<u32> = bytes
        .chunks(4)
        .map(|c| {
            let mut w = [0u8; 4];
            w[..c.len()].copy_from_slice(c);
            u32::from_le_bytes(w)
        })
        .collect();
    let aligned: &[u8] = &bytemuck::cast_slice::<u32, u8>(&words)[..n];
    Blob::parse(aligned, &want, FIRMWARE_MODE)
        .map_err(|e| anyhow!("the written blob does not parse: {e}"))?;
    fsutil::write_atomic(out, &bytes[..n])?;
    Ok(ExportSummary {
        bytes: n,
        groups: [
            layout.group_len(Group::Fast),
            layout.group_len(Group::Slow),
            layout.group_len(Group::Other),
        ],
        dtype,
    })
}

/// The dims that differ, as `name checkpoint vs preset`, for the error message.
fn dims_diff(have: &ModelDims, want: &ModelDims) -> String {
    let (h, w) = (&have.rim, &want.rim);
    let mut diffs = Vec::new();
    let mut cmp = |name: &str, a: String, b: String| {
        if a != b {
            diffs.push(format!("{name} {a} (firmware: {b})"));
        }
    };
    cmp(
        "n_modules",
        h.n_modules.to_string(),
        w.n_modules.to_string(),
    );
    cmp("k_active", h.k_active.to_string(), w.k_active.to_string());
    cmp(
        "communication",
        h.communication.to_string(),
        w.communication.to_string(),
    );
    cmp(
        "comm_update",
        format!("{:?}", h.comm_update),
        format!("{:?}", w.comm_update),
    );
    cmp(
        "encoder",
        format!("{:?}", have.encoder),
        format!("{:?}", want.encoder),
    );
    if diffs.is_empty() {
        diffs.push(format!("dims {have:?} (firmware: {want:?})"));
    }
    diffs.join(", ")
}

/// Refuse non-finite parameters, and frozen ones beyond f16's range when exporting f16, naming
/// every offending tensor with its count.
fn check_values(layout: &Layout, groups: [&[f32]; 3], dtype: FrozenDtype) -> Result<()> {
    let mut non_finite = Vec::new();
    let mut overflow = Vec::new();
    for e in layout.entries() {
        let Some(v) = groups[e.group as usize].get(e.range()) else {
            bail!(
                "tensor {}.{} lies outside its group",
                e.group.name(),
                e.name
            );
        };
        let name = format!("{}.{}", e.group.name(), e.name);
        let bad = v.iter().filter(|x| !x.is_finite()).count();
        if bad > 0 {
            non_finite.push(format!("{name}: {bad} of {}", v.len()));
        }
        if dtype == FrozenDtype::F16 && e.group != Group::Fast {
            let over: Vec<f32> = v
                .iter()
                .copied()
                .filter(|x| x.is_finite() && x.abs() >= F16_ROUNDS_TO_INFINITY)
                .collect();
            if let Some(max) = over.iter().map(|x| x.abs()).reduce(f32::max) {
                overflow.push(format!(
                    "{name}: {} of {} (largest magnitude {max})",
                    over.len(),
                    v.len()
                ));
            }
        }
    }
    if !non_finite.is_empty() {
        bail!(
            "refusing to export non-finite parameters (NaN or infinity): {}",
            non_finite.join("; ")
        );
    }
    if !overflow.is_empty() {
        bail!(
            "--slow-dtype f16 cannot hold these frozen weights (f16's largest finite value is \
             65504; they would become infinity on the device): {}; export with --slow-dtype f32",
            overflow.join("; ")
        );
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// `metarim export --format torch`: the parameters unpacked into PyTorch's names and layouts.

/// The metadata key of a PyTorch export (its one entry, JSON: `format_version`, `mode`, `dims`,
/// `config`).
pub const TORCH_META_KEY: &str = "metarim_torch";
/// Version of the PyTorch export's names, layouts and metadata.
pub const TORCH_FORMAT_VERSION: u32 = 1;

/// Where one PyTorch tensor's elements lie in the packed parameters: its name, shape, the group
/// buffer it comes from and the runs of that buffer that, concatenated, are its elements in
/// row-major order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TorchSpec {
    /// The PyTorch parameter name (`encoder.conv1.weight`, `rim.rnn.weight_ih`, ...).
    pub name: String,
    /// Its shape.
    pub shape: Vec<usize>,
    /// The group buffer its elements come from.
    pub group: Group,
    /// Ranges of the group buffer, in the tensor's row-major order.
    pub runs: Vec<std::ops::Range<usize>>,
}

impl TorchSpec {
    /// Number of elements.
    pub fn len(&self) -> usize {
        self.runs.iter().map(|r| r.len()).sum()
    }

    /// True when the tensor has no element.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// One tensor in PyTorch's name and layout, with its elements.
#[derive(Clone, Debug, PartialEq)]
pub struct TorchTensor<S> {
    /// The PyTorch parameter name.
    pub name: String,
    /// Its shape.
    pub shape: Vec<usize>,
    /// Its elements, row-major.
    pub data: Vec<S>,
}

/// Every PyTorch tensor of `layout` and where its elements lie in the packed groups.
///
/// The names and layouts (the module docs of `python/metarim/torch.py` describe the math):
///
/// | packed tensor | PyTorch tensors |
/// |---|---|
/// | `encoder.*` | the same names and shapes (`encoder.conv1.weight` `(C0, Cin, 2, 2)`, ...) |
/// | `instr.embedding` | `instr.embedding.weight` `(VOCAB, word_dim)` |
/// | `instr.gru.{w_ih,w_hh,b_ih,b_hh}` | `instr.gru.{weight_ih_l0,weight_hh_l0,bias_ih_l0,bias_hh_l0}` (`nn.GRU`) |
/// | `rim.input.w_k` / `w_v` | `rim.input_attention.key.weight` `(heads*d_k, input)` / `value.weight` `(heads*d_v, input)` |
/// | `rim.input.w_q` | `rim.input_attention.query.weight` `(N, heads*d_k, H)` |
/// | `rim.modules.rnn` `(N, per module)` | `rim.rnn.{weight_ih (N, G*H, U), weight_hh (N, G*H, H), bias_ih (N, G*H), bias_hh (N, G*H)}` |
/// | `rim.comm.w_q` / `w_k` / `w_v` | `rim.communication.{query,key,value}.weight` `(N, c_heads*c_k, H)` |
/// | `rim.comm.w_g` / `w_o` | `rim.communication.{gate,output}.weight` `(N, H, c_heads*c_k)` |
/// | `lstm.{w_ih,w_hh,b_ih,b_hh}` | `lstm.{weight_ih,weight_hh,bias_ih,bias_hh}` (`nn.LSTMCell`) |
/// | `heads.actor` / `heads.critic` | `actor.0.weight (hh, W)`, `actor.0.bias`, `actor.2.weight (A, hh)`, `actor.2.bias`; `critic.*` with 1 output |
///
/// Errors: a layout whose tensors do not add up to these shapes (a bug, reported, not a
/// panic).
pub fn torch_specs(layout: &Layout) -> Result<Vec<TorchSpec>> {
    use metarim_core::nn::params::TensorKind;
    use metarim_core::nn::rim::{module_input, rnn_gates};
    let d = layout.dims();
    let r = &d.rim;
    let mut out = Vec::new();
    for e in layout.entries() {
        let base = e.offset;
        let whole = |name: &str, shape: Vec<usize>| TorchSpec {
            name: name.to_string(),
            shape,
            group: e.group,
            runs: vec![e.range()],
        };
        // Consecutive pieces of one packed tensor: (name, shape) in packing order.
        let pieces = |list: &[(&str, Vec<usize>)]| -> Vec<TorchSpec> {
            let mut at = base;
            list.iter()
                .map(|(name, shape)| {
                    let n: usize = shape.iter().product();
                    let s = TorchSpec {
                        name: (*name).to_string(),
                        shape: shape.clone(),
                        group: e.group,
                        runs: std::iter::once(at..at + n).collect(),
                    };
                    at += n;
                    s
                })
                .collect()
        };
        if let Some(name) = whole_tensor_name(e)? {
            out.push(whole(&name, e.dims().to_vec()));
            continue;
        }
        let specs = match e.kind {
            TensorKind::RimRnn => {
                // Module-major: module m's block is [w_ih | w_hh | b_ih | b_hh]; each PyTorch
                // tensor gathers its piece of every module.
                let (n, h) = (r.n_modules, r.hidden);
                let gh = rnn_gates(r) * h;
                let u = module_input(r);
                let per = gh * u + gh * h + 2 * gh;
                if n * per != e.len {
                    bail!(
                        "rim.modules.rnn holds {} values, {n} modules x {per} expected",
                        e.len
                    );
                }
                let parts = [
                    ("rim.rnn.weight_ih", 0, vec![n, gh, u]),
                    ("rim.rnn.weight_hh", gh * u, vec![n, gh, h]),
                    ("rim.rnn.bias_ih", gh * u + gh * h, vec![n, gh]),
                    ("rim.rnn.bias_hh", gh * u + gh * h + gh, vec![n, gh]),
                ];
                parts
                    .into_iter()
                    .map(|(name, at, shape)| {
                        let len = shape.iter().skip(1).product::<usize>();
                        TorchSpec {
                            name: name.to_string(),
                            shape,
                            group: e.group,
                            runs: (0..n)
                                .map(|m| base + m * per + at..base + m * per + at + len)
                                .collect(),
                        }
                    })
                    .collect()
            }
            TensorKind::Actor | TensorKind::Critic => {
                let (head, outs) = if e.kind == TensorKind::Actor {
                    ("actor", d.n_actions)
                } else {
                    ("critic", 1)
                };
                let (hh, w) = (d.head_hidden, d.memory_width());
                let names = [
                    format!("{head}.0.weight"),
                    format!("{head}.0.bias"),
                    format!("{head}.2.weight"),
                    format!("{head}.2.bias"),
                ];
                let list = [
                    (names[0].as_str(), vec![hh, w]),
                    (names[1].as_str(), vec![hh]),
                    (names[2].as_str(), vec![outs, hh]),
                    (names[3].as_str(), vec![outs]),
                ];
                let total: usize = list.iter().map(|(_, s)| s.iter().product::<usize>()).sum();
                if total != e.len {
                    bail!("heads.{head} holds {} values, its MLP {total}", e.len);
                }
                pieces(&list)
            }
            // Every other kind is exported whole, above; one that is not is a bug here.
            other => bail!("{}: no PyTorch export for tensor kind {other:?}", e.name),
        };
        out.extend(specs);
    }
    Ok(out)
}

/// The PyTorch name of a tensor exported whole, in one piece with its own shape; `None` for
/// the ones split or gathered into several ([`torch_specs`]: the module RNNs and the heads).
fn whole_tensor_name(e: &metarim_core::nn::params::TensorEntry) -> Result<Option<String>> {
    use metarim_core::nn::params::TensorKind;
    let indexed = |module: &str, names: [&str; 4], i: u8| -> Result<Option<String>> {
        let name = names
            .get(usize::from(i))
            .ok_or_else(|| anyhow!("{module} tensor {i} out of range"))?;
        Ok(Some(format!("{module}.{name}")))
    };
    let name = match e.kind {
        TensorKind::Encoder(_) => e.name,
        TensorKind::InstrEmbedding => "instr.embedding.weight",
        TensorKind::RimKey => "rim.input_attention.key.weight",
        TensorKind::RimValue => "rim.input_attention.value.weight",
        TensorKind::RimQuery => "rim.input_attention.query.weight",
        TensorKind::CommQuery => "rim.communication.query.weight",
        TensorKind::CommKey => "rim.communication.key.weight",
        TensorKind::CommValue => "rim.communication.value.weight",
        TensorKind::CommGate => "rim.communication.gate.weight",
        TensorKind::CommOut => "rim.communication.output.weight",
        TensorKind::InstrGru(i) => {
            let gru = ["weight_ih_l0", "weight_hh_l0", "bias_ih_l0", "bias_hh_l0"];
            return indexed("instr.gru", gru, i);
        }
        TensorKind::Lstm(i) => {
            return indexed("lstm", ["weight_ih", "weight_hh", "bias_ih", "bias_hh"], i)
        }
        TensorKind::RimRnn | TensorKind::Actor | TensorKind::Critic => return Ok(None),
    };
    Ok(Some(name.to_string()))
}

/// The parameters (or gradients) `bufs`, packed in `layout`, as PyTorch tensors
/// ([`torch_specs`]).
///
/// Errors: buffers that do not match the layout.
pub fn torch_tensors<S: Copy>(
    layout: &Layout,
    bufs: metarim_core::nn::params::GroupBufs<'_, S>,
) -> Result<Vec<TorchTensor<S>>> {
    layout
        .check_bufs(&bufs)
        .map_err(|e| anyhow!("parameter buffers: {e}"))?;
    torch_specs(layout)?
        .into_iter()
        .map(|s| {
            let buf = bufs.group(s.group);
            let mut data = Vec::with_capacity(s.len());
            for r in &s.runs {
                let part = buf
                    .get(r.clone())
                    .ok_or_else(|| anyhow!("tensor {} lies outside its group", s.name))?;
                data.extend_from_slice(part);
            }
            Ok(TorchTensor {
                name: s.name,
                shape: s.shape,
                data,
            })
        })
        .collect()
}

/// Packs PyTorch tensors (every one of [`torch_specs`]`(layout)`, by name, nothing else) back
/// into `layout`'s group buffers.
///
/// Errors: a missing, unknown or duplicated tensor, or one of the wrong shape, each named.
pub fn pack_torch_tensors(layout: &Layout, tensors: &[TorchTensor<f32>]) -> Result<GroupVecs> {
    let specs = torch_specs(layout)?;
    for t in tensors {
        if !specs.iter().any(|s| s.name == t.name) {
            bail!(
                "unknown tensor {:?}: a {} model has {}",
                t.name,
                layout.mode().name(),
                specs
                    .iter()
                    .map(|s| s.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        }
    }
    let mut out = GroupVecs::zeros(layout);
    for s in &specs {
        let mut found = tensors.iter().filter(|t| t.name == s.name);
        let t = found
            .next()
            .ok_or_else(|| anyhow!("tensor {} is missing", s.name))?;
        if found.next().is_some() {
            bail!("tensor {} appears twice", s.name);
        }
        if t.shape != s.shape {
            bail!(
                "tensor {} has shape {:?}, the model needs {:?}",
                s.name,
                t.shape,
                s.shape
            );
        }
        if t.data.len() != s.len() {
            bail!(
                "tensor {} holds {} values, its shape {:?} needs {}",
                s.name,
                t.data.len(),
                s.shape,
                s.len()
            );
        }
        let buf = out.group_mut(s.group);
        let mut at = 0;
        for r in &s.runs {
            let n = r.len();
            buf.get_mut(r.clone())
                .ok_or_else(|| anyhow!("tensor {} lies outside its group", s.name))?
                .copy_from_slice(&t.data[at..at + n]);
            at += n;
        }
    }
    Ok(out)
}

/// The model dimensions as JSON (the PyTorch export's `dims` metadata and what
/// `metarim.torch` builds its module from).
pub fn dims_json(d: &ModelDims) -> serde_json::Value {
    use metarim_core::nn::dims::{CellKind, EncoderKind, MemoryKind};
    let r = &d.rim;
    serde_json::json!({
        "encoder": match d.encoder { EncoderKind::Conv => "conv", EncoderKind::Bow => "bow" },
        "conv_channels": d.conv_channels,
        "bow_dim": d.bow_dim,
        "bow_rows": metarim_core::nn::encoder::BOW_ROWS,
        "film": d.film,
        "feature_norm": d.feature_norm,
        "word_dim": d.word_dim,
        "instr_hidden": d.instr_hidden,
        "max_tokens": d.max_tokens,
        "vocab_size": metarim_core::mission::vocab::VOCAB_SIZE,
        "memory": match d.memory { MemoryKind::Rim => "rim", MemoryKind::Lstm => "lstm" },
        "n_modules": r.n_modules,
        "k_active": r.k_active,
        "hidden": r.hidden,
        "input": r.input,
        "d_k": r.d_k,
        "d_v": r.d_v,
        "in_heads": r.in_heads,
        "c_heads": r.c_heads,
        "c_k": r.c_k,
        "cell": match r.cell { CellKind::Gru => "gru", CellKind::Lstm => "lstm" },
        "communication": r.communication,
        "comm_update": match r.comm_update {
            CommUpdate::Residual => "residual",
            CommUpdate::Interpolate => "interpolate",
        },
        "head_hidden": d.head_hidden,
        "n_actions": d.n_actions,
        "state_len": metarim_core::nn::policy::state_len(d),
    })
}

/// The PyTorch export of a model: a safetensors file of f32 tensors named and shaped as
/// [`torch_specs`] says, with one metadata entry, [`TORCH_META_KEY`], holding JSON:
/// `format_version` ([`TORCH_FORMAT_VERSION`]), `mode`, `dims` ([`dims_json`]) and `config`
/// (the training config as TOML, from which the layout is rebuilt when the file is read back).
/// The bytes are a deterministic function of the config and the parameters.
///
/// Errors: a non-finite parameter (named with its count), or buffers that do not match.
pub fn torch_bytes(
    config: &crate::train::TrainConfig,
    model: &crate::train::Model,
) -> Result<Vec<u8>> {
    let layout = &model.layout;
    let tensors = torch_tensors(layout, model.params.bufs())?;
    let bad: Vec<String> = tensors
        .iter()
        .filter_map(|t| {
            let n = t.data.iter().filter(|x| !x.is_finite()).count();
            (n > 0).then(|| format!("{}: {n} of {}", t.name, t.data.len()))
        })
        .collect();
    if !bad.is_empty() {
        bail!(
            "refusing to export non-finite parameters (NaN or infinity): {}",
            bad.join("; ")
        );
    }
    let bytes: Vec<(String, Vec<usize>, Vec<u8>)> = tensors
        .into_iter()
        .map(|t| {
            let b = t.data.iter().flat_map(|x| x.to_le_bytes()).collect();
            (t.name, t.shape, b)
        })
        .collect();
    let views = checkpoint::f32_views(&bytes)?;
    let saved = crate::train::TrainConfig {
        threads: 0,
        ..config.clone()
    };
    // One metadata entry: safetensors writes its metadata map in hash order, so several
    // entries would make the bytes differ from run to run.
    let info = serde_json::json!({
        "format_version": TORCH_FORMAT_VERSION,
        "mode": layout.mode().name(),
        "dims": dims_json(layout.dims()),
        "config": saved.to_saved_toml()?,
    });
    let mut meta = std::collections::HashMap::new();
    meta.insert(TORCH_META_KEY.to_string(), info.to_string());
    safetensors::serialize(views, Some(meta)).map_err(|e| anyhow!("safetensors: {e}"))
}

/// What a PyTorch export wrote.
#[derive(Clone, Debug, PartialEq)]
pub struct TorchExportSummary {
    /// File length in bytes.
    pub bytes: usize,
    /// Tensors written.
    pub tensors: usize,
    /// Parameters written.
    pub params: usize,
}

/// `metarim export --format torch`: the checkpoint at `ckpt` (any preset and mode) as a
/// weights-only safetensors file in PyTorch's names and layouts ([`torch_bytes`]), written
/// atomically to `out` and read back ([`read_torch`]) before it replaces anything.
pub fn export_torch(ckpt: &Path, out: &Path) -> Result<TorchExportSummary> {
    let ck = checkpoint::load(ckpt)?;
    let bytes = torch_bytes(&ck.config, &ck.model)?;
    let (_, back) = read_torch(&bytes).context("the written PyTorch export does not read back")?;
    if back != ck.model {
        bail!("the PyTorch export does not read back to the checkpoint's parameters");
    }
    fsutil::write_atomic(out, &bytes)?;
    Ok(TorchExportSummary {
        bytes: bytes.len(),
        tensors: torch_specs(&ck.model.layout)?.len(),
        params: ck.model.layout.total_len(),
    })
}

/// Reads a PyTorch export ([`torch_bytes`]) back: its config and the model packed in the
/// layout the config describes.
///
/// Errors: not a safetensors file, not a metarim PyTorch export (or another version), a
/// config that does not validate, and every tensor problem [`pack_torch_tensors`] names, plus
/// non-f32 or non-finite tensors.
pub fn read_torch(bytes: &[u8]) -> Result<(crate::train::TrainConfig, crate::train::Model)> {
    use safetensors::tensor::Dtype;
    let (st, text) = checkpoint::with_metadata(
        bytes,
        TORCH_META_KEY,
        &format!("not a metarim PyTorch export (no `{TORCH_META_KEY}` metadata entry)"),
    )?;
    let info: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| anyhow!("bad `{TORCH_META_KEY}` metadata: {e}"))?;
    let version = info.get("format_version").and_then(|v| v.as_u64());
    if version != Some(u64::from(TORCH_FORMAT_VERSION)) {
        bail!(
            "PyTorch export format version {} is not supported (this build reads \
             {TORCH_FORMAT_VERSION})",
            info.get("format_version")
                .map_or("(none)".to_string(), |v| v.to_string())
        );
    }
    let text = info
        .get("config")
        .and_then(|v| v.as_str())
        .ok_or_else(|| anyhow!("the PyTorch export's metadata has no `config`"))?;
    let config =
        crate::train::TrainConfig::from_saved_toml(text).context("the PyTorch export's config")?;
    let dims = config.dims()?;
    let layout =
        Layout::new(&dims, config.mode).map_err(|e| anyhow!("the export's model dims: {e}"))?;
    let mut tensors = Vec::new();
    for (name, view) in st.tensors() {
        if view.dtype() != Dtype::F32 {
            bail!("tensor {name} has dtype {:?}, expected F32", view.dtype());
        }
        let data: Vec<f32> = view
            .data()
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect();
        if let Some(i) = data.iter().position(|x| !x.is_finite()) {
            bail!(
                "tensor {name} holds a non-finite value ({} at index {i})",
                data[i]
            );
        }
        tensors.push(TorchTensor {
            name,
            shape: view.shape().to_vec(),
            data,
        });
    }
    let params = pack_torch_tensors(&layout, &tensors)?;
    Ok((config, crate::train::Model { layout, params }))
}
