//! The kernels of `kernels/`, embedded with `include_str!` behind a typed enum, with every entry
//! point's parameter list.
//!
//! NVRTC (and the emulator's C++ compiler) is given one self-contained source per kernel: each
//! `#include "common.cuh"` / `#include "model.cuh"` is replaced by the header's text (between
//! `#line` directives, so compile logs name the right file and line), because NVRTC has no file
//! system to read headers from.
//!
//! Each entry point's parameter list ([`Entry`]) comes from its typed argument struct in
//! [`crate::args`]: the parameters' names (checked here against the `.cu` declarations) and
//! kinds. Underneath, the kinds are a string of one letter per parameter ([`Entry::sig`]);
//! launches are checked against it ([`crate::exec::launch`]), and it is checked against the
//! compiled kernels: by `cuda/tests/ptx.rs` against the PTX `.param` types, by the emulator
//! against the C++ signatures.

use crate::args::*;
use crate::exec::KernelArgs;

/// The shared header (`kernels/common.cuh`).
pub const COMMON_HEADER: &str = include_str!("../../kernels/common.cuh");
/// The model-size header (`kernels/model.cuh`).
pub const MODEL_HEADER: &str = include_str!("../../kernels/model.cuh");

const HEADERS: [(&str, &str); 2] = [("common.cuh", COMMON_HEADER), ("model.cuh", MODEL_HEADER)];

/// The kind of one kernel parameter.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ArgKind {
    /// `float*`.
    PtrF32,
    /// `double*`.
    PtrF64,
    /// `unsigned char*`.
    PtrU8,
    /// `unsigned short*`.
    PtrU16,
    /// `unsigned int*`.
    PtrU32,
    /// `int*`.
    PtrI32,
    /// `unsigned long long*`.
    PtrU64,
    /// `float`.
    F32,
    /// `unsigned int`.
    U32,
    /// `int`.
    I32,
    /// `unsigned long long`.
    U64,
}

impl ArgKind {
    /// The letter of this kind in a parameter list (the emulator's C++ type codes).
    pub const fn code(self) -> char {
        match self {
            ArgKind::PtrF32 => 'F',
            ArgKind::PtrF64 => 'D',
            ArgKind::PtrU8 => 'B',
            ArgKind::PtrU16 => 'H',
            ArgKind::PtrU32 => 'W',
            ArgKind::PtrI32 => 'I',
            ArgKind::PtrU64 => 'Q',
            ArgKind::F32 => 'f',
            ArgKind::U32 => 'w',
            ArgKind::I32 => 'i',
            ArgKind::U64 => 'q',
        }
    }

    /// The PTX parameter types that may hold a parameter of code `c` (pointers are 64-bit
    /// integers in PTX).
    pub fn ptx_types(c: char) -> &'static [&'static str] {
        match c {
            'F' | 'D' | 'B' | 'H' | 'W' | 'I' | 'Q' | 'q' => &[".u64", ".b64", ".s64"],
            'f' => &[".f32", ".b32"],
            'w' | 'i' => &[".u32", ".s32", ".b32"],
            _ => &[],
        }
    }
}

/// One named kernel parameter.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Param {
    /// The parameter's name in the `.cu` declaration (checked by this module's tests).
    pub name: &'static str,
    /// Its kind.
    pub kind: ArgKind,
}

/// One `extern "C"` entry point and its parameter list, generated from the entry point's typed
/// argument struct ([`crate::args`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Entry {
    /// The function name.
    pub name: &'static str,
    /// The parameters, in order.
    pub params: &'static [Param],
}

impl Entry {
    /// One [`ArgKind::code`] letter per parameter: the ABI check underneath the names, compared
    /// with each launch's arguments, the emulator's C++ signatures and the PTX `.param` types.
    pub fn sig(&self) -> String {
        self.params.iter().map(|p| p.kind.code()).collect()
    }

    /// The parameter names, comma-separated (for messages).
    pub fn param_names(&self) -> String {
        let names: Vec<&str> = self.params.iter().map(|p| p.name).collect();
        names.join(", ")
    }
}

/// Entry points of `optim.cu`.
pub const OPTIM_ENTRIES: [Entry; 3] = [AdamMasked::ENTRY, SumsqMasked::ENTRY, ClipFinish::ENTRY];
/// Entry points of `encoder.cu`.
pub const ENCODER_ENTRIES: [Entry; 3] = [EncoderFwd::ENTRY, EncoderBwd::ENTRY, EncoderWgrad::ENTRY];
/// Entry points of `instr.cu`.
pub const INSTR_ENTRIES: [Entry; 6] = [
    InstrFwd::ENTRY,
    InstrBwd::ENTRY,
    InstrEmbGrad::ENTRY,
    GatherRows::ENTRY,
    InstrDsum::ENTRY,
    ScatterRows::ENTRY,
];
/// Entry points of `rim_fwd.cu`.
pub const RIM_FWD_ENTRIES: [Entry; 1] = [RimFwdStep::ENTRY];
/// Entry points of `rim_bwd.cu`.
pub const RIM_BWD_ENTRIES: [Entry; 1] = [RimBwdStep::ENTRY];
/// Entry points of `lstm.cu`.
pub const LSTM_ENTRIES: [Entry; 2] = [LstmFwdStep::ENTRY, LstmBwdStep::ENTRY];
/// Entry points of `heads.cu`.
pub const HEADS_ENTRIES: [Entry; 2] = [HeadsFwd::ENTRY, PpoHeadsBwd::ENTRY];
/// Entry points of `reduce.cu`.
pub const REDUCE_ENTRIES: [Entry; 4] = [
    Wgrad::ENTRY,
    CountActive::ENTRY,
    SumTerms::ENTRY,
    LayoutInfo::ENTRY,
];

/// One `.cu` file of `kernels/` (one per op family).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Kernel {
    /// `optim.cu`: the training step's Adam over module-tagged ranges, gradient-norm clipping.
    Optim,
    /// `encoder.cu`: the observation encoder forward, backward and weight gradients.
    Encoder,
    /// `instr.cu`: the instruction encoder forward, backward, embedding gradients, gathers.
    Instr,
    /// `rim_fwd.cu`: one fused RIM step forward.
    RimFwd,
    /// `rim_bwd.cu`: one RIM step backward (state/input gradients and deltas).
    RimBwd,
    /// `lstm.cu`: the LSTM baseline's memory step forward and backward.
    Lstm,
    /// `heads.cu`: actor/critic forward, PPO loss and its gradient through the heads.
    Heads,
    /// `reduce.cu`: weight-gradient reductions, activity counts, loss sums, layout report.
    Reduce,
}

impl Kernel {
    /// Every kernel, for tests and ahead-of-time checks.
    pub const ALL: [Kernel; 8] = [
        Kernel::Optim,
        Kernel::Encoder,
        Kernel::Instr,
        Kernel::RimFwd,
        Kernel::RimBwd,
        Kernel::Lstm,
        Kernel::Heads,
        Kernel::Reduce,
    ];

    /// The file name under `kernels/`.
    pub const fn file_name(self) -> &'static str {
        match self {
            Kernel::Optim => "optim.cu",
            Kernel::Encoder => "encoder.cu",
            Kernel::Instr => "instr.cu",
            Kernel::RimFwd => "rim_fwd.cu",
            Kernel::RimBwd => "rim_bwd.cu",
            Kernel::Lstm => "lstm.cu",
            Kernel::Heads => "heads.cu",
            Kernel::Reduce => "reduce.cu",
        }
    }

    /// The source as written (with its includes).
    pub const fn source(self) -> &'static str {
        match self {
            Kernel::Optim => include_str!("../../kernels/optim.cu"),
            Kernel::Encoder => include_str!("../../kernels/encoder.cu"),
            Kernel::Instr => include_str!("../../kernels/instr.cu"),
            Kernel::RimFwd => include_str!("../../kernels/rim_fwd.cu"),
            Kernel::RimBwd => include_str!("../../kernels/rim_bwd.cu"),
            Kernel::Lstm => include_str!("../../kernels/lstm.cu"),
            Kernel::Heads => include_str!("../../kernels/heads.cu"),
            Kernel::Reduce => include_str!("../../kernels/reduce.cu"),
        }
    }

    /// The `extern "C"` entry points the file defines.
    pub const fn entries(self) -> &'static [Entry] {
        match self {
            Kernel::Optim => &OPTIM_ENTRIES,
            Kernel::Encoder => &ENCODER_ENTRIES,
            Kernel::Instr => &INSTR_ENTRIES,
            Kernel::RimFwd => &RIM_FWD_ENTRIES,
            Kernel::RimBwd => &RIM_BWD_ENTRIES,
            Kernel::Lstm => &LSTM_ENTRIES,
            Kernel::Heads => &HEADS_ENTRIES,
            Kernel::Reduce => &REDUCE_ENTRIES,
        }
    }

    /// Whether the file needs the model defines (`model.cuh`); `optim.cu` does not.
    pub const fn needs_model(self) -> bool {
        !matches!(self, Kernel::Optim)
    }

    /// Whether the kernel is meant to match the CPU bit for bit (no library functions): the PTX
    /// test then also rejects contracted and non-IEEE f32 operations.
    pub const fn bit_exact(self) -> bool {
        matches!(self, Kernel::Optim)
    }

    /// The self-contained source handed to NVRTC: the headers inlined in place of their
    /// includes (each once).
    pub fn nvrtc_source(self) -> String {
        let src = self.source();
        let mut out = String::with_capacity(src.len() + COMMON_HEADER.len() + MODEL_HEADER.len());
        let mut done = [false; HEADERS.len()];
        for (i, line) in src.lines().enumerate() {
            let inc = HEADERS
                .iter()
                .position(|(name, _)| line.trim() == format!("#include \"{name}\""));
            match inc {
                Some(h) => {
                    if !done[h] {
                        done[h] = true;
                        let (name, text) = HEADERS[h];
                        out.push_str(&format!("#line 1 \"{name}\"\n"));
                        out.push_str(text);
                    }
                    out.push_str(&format!("\n#line {} \"{}\"\n", i + 2, self.file_name()));
                }
                None => {
                    out.push_str(line);
                    out.push('\n');
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The body of the object-like macro `#define name ...` in `src` (continuation lines
    /// joined), or `None` when `name` is not a bare identifier defined there.
    fn define_body(src: &str, name: &str) -> Option<String> {
        if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return None;
        }
        let head = format!("#define {name}");
        let is_head = |l: &str| match l.strip_prefix(&head) {
            Some(rest) => rest.is_empty() || rest.starts_with([' ', '\\']),
            None => false,
        };
        let mut lines = src.lines().skip_while(|l| !is_head(l));
        let mut body = lines.next()?[head.len()..].trim_end().to_string();
        while let Some(more) = body.strip_suffix('\\') {
            body = format!("{more} {}", lines.next()?.trim_end());
        }
        Some(body)
    }

    #[test]
    fn headers_are_inlined_and_entry_points_are_defined() {
        for k in Kernel::ALL {
            let s = k.nvrtc_source();
            assert!(
                !s.contains("#include \""),
                "{}: include left",
                k.file_name()
            );
            assert!(
                s.contains("range_element"),
                "{}: header missing",
                k.file_name()
            );
            assert_eq!(
                s.contains("RIM_CACHE"),
                k.needs_model(),
                "{}: model header",
                k.file_name()
            );
            for e in k.entries() {
                let decl = format!("__global__ void {}(", e.name);
                assert!(
                    s.contains(&decl),
                    "{}: no entry point {}",
                    k.file_name(),
                    e.name
                );
                // The declaration's parameters are the typed struct's fields, by name and in
                // order (each C++ parameter's last identifier is its name), parameter groups
                // (model.cuh `#define`s such as RIM_TENSOR_PARAMS) expanded in place.
                let start = s.find(&decl).unwrap() + decl.len();
                let end = start + s[start..].find(')').unwrap();
                let names: Vec<String> = s[start..end]
                    .split(',')
                    .flat_map(|p| match define_body(&s, p.trim()) {
                        Some(body) => body.split(',').map(str::to_string).collect(),
                        None => vec![p.to_string()],
                    })
                    .map(|p| {
                        p.trim()
                            .rsplit(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                            .next()
                            .unwrap_or("")
                            .to_string()
                    })
                    .collect();
                let want: Vec<&str> = e.params.iter().map(|p| p.name).collect();
                assert_eq!(names, want, "{}: parameters", e.name);
                assert_eq!(e.sig().len(), e.params.len());
            }
        }
    }
}
