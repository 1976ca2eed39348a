//! Parameter layout: every tensor's name, shape, role and group, and where it lives in the flat
//! per-group buffers that host, CUDA and the device share.
//!
//! Invariants:
//! - There are three buffers, one per [`Group`]: `fast`, `slow`, `other`. A [`Mode`] maps each
//!   tensor's [`Role`] to a group; within a group, tensors are laid out in table order, densely.
//! - Each block (encoder, instruction encoder, heads) has all its tensors in one group, in the
//!   block's own order, so the block sees one contiguous slice. The RIM's tensors are the only
//!   ones split across groups; the module RNNs are one tensor `[N x per-module]`, module-major,
//!   so module `i`'s fast parameters are one contiguous range (sparse updates of active modules).
//! - Gradients and optimiser moments use the same layout as the parameters.
//! - Building a layout checks every size and returns an error; nothing here allocates.

use crate::error::Error;
use crate::mission::vocab::VOCAB_SIZE;
use crate::nn::dims::{CellKind, EncoderKind, MemoryKind, ModelDims};
use crate::nn::encoder::{encoder_param_len, encoder_tensors};
use crate::nn::heads::{actor_param_len, critic_param_len};
use crate::nn::instr::instr_param_len;
use crate::nn::rim::rim_param_counts;

/// A parameter group: what updates it and how fast.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Group {
    /// Updated in the inner loop (Meta-RIMs: the module RNNs).
    Fast = 0,
    /// Updated in the outer loop (Meta-RIMs: input and communication attention).
    Slow = 1,
    /// Encoder, instruction encoder and heads; the trainer decides which loop updates them.
    Other = 2,
}

impl Group {
    /// All groups in buffer order.
    pub const ALL: [Group; 3] = [Group::Fast, Group::Slow, Group::Other];

    /// Checkpoint prefix (`fast`, `slow`, `other`).
    pub fn name(self) -> &'static str {
        match self {
            Group::Fast => "fast",
            Group::Slow => "slow",
            Group::Other => "other",
        }
    }
}

/// What a tensor does, independent of the training mode.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Role {
    /// Observation encoder.
    Encoder,
    /// Instruction encoder (word embedding + GRU).
    Instruction,
    /// RIM input attention (keys, values, per-module queries).
    InputAttention,
    /// RIM per-module recurrent cells.
    ModuleRnn,
    /// RIM communication attention.
    Communication,
    /// The LSTM baseline's memory.
    MemoryLstm,
    /// Actor and critic.
    Heads,
}

config_enum! {
    /// How roles map to groups (docs/DESIGN.md, "The fast/slow split"). Serialised (feature
    /// `serde`) by its command-line name ([`Mode::name`]).
    pub enum Mode (serde case "kebab-case") {
        /// Meta-RIMs: module RNNs fast, attention slow.
        MetaRim,
        /// The reversed split: attention fast, module RNNs slow.
        Reversed,
        /// Plain RIM: modules and attention in one (slow) group, trained together.
        Joint,
        /// LSTM baseline: the LSTM memory in the slow group.
        Lstm,
    }
}

impl Mode {
    /// The mode's command-line name.
    pub fn name(self) -> &'static str {
        match self {
            Mode::MetaRim => "meta-rim",
            Mode::Reversed => "reversed",
            Mode::Joint => "joint",
            Mode::Lstm => "lstm",
        }
    }

    /// The mode named `s`.
    pub fn from_name(s: &str) -> Option<Mode> {
        [Mode::MetaRim, Mode::Reversed, Mode::Joint, Mode::Lstm]
            .into_iter()
            .find(|m| m.name() == s)
    }

    /// The group of a tensor with `role` in this mode.
    pub fn group(self, role: Role) -> Group {
        match (self, role) {
            (_, Role::Encoder | Role::Instruction | Role::Heads) => Group::Other,
            (Mode::MetaRim, Role::ModuleRnn) => Group::Fast,
            (Mode::MetaRim, _) => Group::Slow,
            (Mode::Reversed, Role::ModuleRnn) => Group::Slow,
            (Mode::Reversed, _) => Group::Fast,
            (Mode::Joint | Mode::Lstm, _) => Group::Slow,
        }
    }

    /// The memory this mode trains.
    pub fn memory(self) -> MemoryKind {
        match self {
            Mode::Lstm => MemoryKind::Lstm,
            _ => MemoryKind::Rim,
        }
    }
}

/// Which tensor an entry is (so code can find it without string compares).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TensorKind {
    /// Part of the observation encoder (index into its tensor list).
    Encoder(u8),
    /// Instruction embedding table.
    InstrEmbedding,
    /// Instruction GRU weights (`w_ih`, `w_hh`, `b_ih`, `b_hh` as 0..4).
    InstrGru(u8),
    /// RIM input keys.
    RimKey,
    /// RIM input values.
    RimValue,
    /// RIM per-module queries.
    RimQuery,
    /// RIM per-module RNNs.
    RimRnn,
    /// RIM communication queries.
    CommQuery,
    /// RIM communication keys.
    CommKey,
    /// RIM communication values.
    CommValue,
    /// RIM communication output gates.
    CommGate,
    /// RIM communication outputs.
    CommOut,
    /// LSTM baseline weights (`w_ih`, `w_hh`, `b_ih`, `b_hh` as 0..4).
    Lstm(u8),
    /// Actor MLP (all of it).
    Actor,
    /// Critic MLP (all of it).
    Critic,
}

impl TensorKind {
    /// The RIM cell's tensors in the field order of [`crate::nn::rim::RimWeights`] (and
    /// [`crate::nn::rim::RimWeights::from_parts`]).
    pub const RIM: [TensorKind; 9] = [
        TensorKind::RimKey,
        TensorKind::RimValue,
        TensorKind::RimQuery,
        TensorKind::RimRnn,
        TensorKind::CommQuery,
        TensorKind::CommKey,
        TensorKind::CommValue,
        TensorKind::CommGate,
        TensorKind::CommOut,
    ];

    /// The LSTM memory's tensors in the field order of [`crate::nn::ops::LstmWeights`].
    pub const LSTM: [TensorKind; 4] = [
        TensorKind::Lstm(0),
        TensorKind::Lstm(1),
        TensorKind::Lstm(2),
        TensorKind::Lstm(3),
    ];

    /// Whether the tensor is stored module-major, one equal block per RIM module (the modules'
    /// own queries, RNNs and communication weights): a step that trains only some modules
    /// touches only their blocks.
    pub fn is_per_module(self) -> bool {
        matches!(
            self,
            TensorKind::RimQuery
                | TensorKind::RimRnn
                | TensorKind::CommQuery
                | TensorKind::CommKey
                | TensorKind::CommValue
                | TensorKind::CommGate
                | TensorKind::CommOut
        )
    }
}

/// One tensor of the layout.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TensorEntry {
    /// Name without the group prefix, e.g. `rim.input.w_k`.
    pub name: &'static str,
    /// Which tensor.
    pub kind: TensorKind,
    /// Shape (PyTorch order); unused trailing dims are 1, see `rank`.
    pub shape: [usize; 4],
    /// Number of meaningful dims in `shape`.
    pub rank: usize,
    /// Role.
    pub role: Role,
    /// Group it lives in.
    pub group: Group,
    /// Offset in its group's buffer.
    pub offset: usize,
    /// Number of elements.
    pub len: usize,
}

impl TensorEntry {
    /// The meaningful dims.
    pub fn dims(&self) -> &[usize] {
        &self.shape[..self.rank.min(4)]
    }

    /// Element range in its group's buffer.
    pub fn range(&self) -> core::ops::Range<usize> {
        self.offset..self.offset + self.len
    }
}

/// Most tensors a layout holds.
pub const MAX_TENSORS: usize = 32;

/// The parameter layout of a model in a mode.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Layout {
    dims: ModelDims,
    mode: Mode,
    entries: heapless::Vec<TensorEntry, MAX_TENSORS>,
    group_len: [usize; 3],
}

/// One part of [`Layout::split_mut`]: a whole block (encoder, instruction encoder, heads; `kind`
/// is its first tensor's) or one tensor.
#[derive(Debug)]
pub struct PartMut<'a, S> {
    /// Its role.
    pub role: Role,
    /// The tensor (a block's first).
    pub kind: TensorKind,
    /// The group it lives in.
    pub group: Group,
    /// Its elements.
    pub data: &'a mut [S],
}

/// Borrowed parameter buffers (or gradients, or moments), one slice per group.
#[derive(Clone, Copy, Debug)]
pub struct GroupBufs<'a, S> {
    /// The fast group.
    pub fast: &'a [S],
    /// The slow group.
    pub slow: &'a [S],
    /// The other group.
    pub other: &'a [S],
}

/// Mutable parameter buffers, one slice per group.
#[derive(Debug)]
pub struct GroupBufsMut<'a, S> {
    /// The fast group.
    pub fast: &'a mut [S],
    /// The slow group.
    pub slow: &'a mut [S],
    /// The other group.
    pub other: &'a mut [S],
}

impl<'a, S> GroupBufs<'a, S> {
    /// The buffer of group `g`.
    pub fn group(&self, g: Group) -> &'a [S] {
        match g {
            Group::Fast => self.fast,
            Group::Slow => self.slow,
            Group::Other => self.other,
        }
    }
}

impl<'a, S> GroupBufsMut<'a, S> {
    /// The buffer of group `g`.
    pub fn group(&self, g: Group) -> &[S] {
        match g {
            Group::Fast => self.fast,
            Group::Slow => self.slow,
            Group::Other => self.other,
        }
    }

    /// The buffer of group `g`, mutably.
    pub fn group_mut(&mut self, g: Group) -> &mut [S] {
        match g {
            Group::Fast => self.fast,
            Group::Slow => self.slow,
            Group::Other => self.other,
        }
    }

    /// Reborrow as shared.
    pub fn as_ref(&self) -> GroupBufs<'_, S> {
        GroupBufs {
            fast: self.fast,
            slow: self.slow,
            other: self.other,
        }
    }
}

const fn shape(d: &[usize]) -> ([usize; 4], usize) {
    let mut s = [1usize; 4];
    let mut i = 0;
    while i < d.len() && i < 4 {
        s[i] = d[i];
        i += 1;
    }
    (s, if d.len() < 4 { d.len() } else { 4 })
}

impl Layout {
    /// The layout of `dims` in `mode`; errors on inconsistent dims (e.g. a memory input width
    /// that does not match encoder + instruction widths, k outside 1..=N).
    pub fn new(dims: &ModelDims, mode: Mode) -> Result<Layout, Error> {
        dims.check_bounds()?;
        let mut dims = *dims;
        dims.memory = mode.memory();
        let r = &dims.rim;
        if r.input != dims.memory_input() {
            return Err(Error::BadDims {
                what: "rim.input must equal conv_channels[2] + instr_hidden",
            });
        }
        // The blocks' own checks (the RIM's covers k; the heads' a memory width, so hidden > 0),
        // so that a layout is never one its network refuses to run. The LSTM baseline keeps
        // the RIM sizes that give its width, and k stays checked for it too.
        match dims.memory {
            MemoryKind::Rim => crate::nn::rim::check_dims(r)?,
            MemoryKind::Lstm => {
                if r.k_active == 0 || r.k_active > r.n_modules {
                    return Err(Error::BadDims {
                        what: "need 1 <= k_active <= n_modules",
                    });
                }
            }
        }
        crate::nn::heads::check_dims(&dims)?;
        let mut l = Layout {
            dims,
            mode,
            entries: heapless::Vec::new(),
            group_len: [0; 3],
        };
        // Encoder.
        let enc = encoder_tensors(&dims);
        for (i, t) in enc.as_slice().iter().enumerate() {
            let name = match (dims.encoder, t.name) {
                (_, "embedding.weight") => "encoder.embedding.weight",
                (_, "conv1.weight") => "encoder.conv1.weight",
                (_, "conv1.bias") => "encoder.conv1.bias",
                (_, "conv2.weight") => "encoder.conv2.weight",
                (_, "conv2.bias") => "encoder.conv2.bias",
                (_, "conv3.weight") => "encoder.conv3.weight",
                (_, "conv3.bias") => "encoder.conv3.bias",
                (_, "film.weight") => "encoder.film.weight",
                (_, "film.bias") => "encoder.film.bias",
                (EncoderKind::Conv | EncoderKind::Bow, _) => "encoder.unknown",
            };
            l.push(name, TensorKind::Encoder(i as u8), t.dims(), Role::Encoder)?;
        }
        // Instruction encoder.
        let (w, h) = (dims.word_dim, dims.instr_hidden);
        l.push(
            "instr.embedding",
            TensorKind::InstrEmbedding,
            &[VOCAB_SIZE, w],
            Role::Instruction,
        )?;
        l.push(
            "instr.gru.w_ih",
            TensorKind::InstrGru(0),
            &[3 * h, w],
            Role::Instruction,
        )?;
        l.push(
            "instr.gru.w_hh",
            TensorKind::InstrGru(1),
            &[3 * h, h],
            Role::Instruction,
        )?;
        l.push(
            "instr.gru.b_ih",
            TensorKind::InstrGru(2),
            &[3 * h],
            Role::Instruction,
        )?;
        l.push(
            "instr.gru.b_hh",
            TensorKind::InstrGru(3),
            &[3 * h],
            Role::Instruction,
        )?;
        // Memory.
        match dims.memory {
            MemoryKind::Rim => {
                let c = rim_param_counts(r);
                let n = r.n_modules;
                let qw = r.in_heads * r.d_k;
                let cw = r.c_heads * r.c_k;
                let ia = Role::InputAttention;
                l.push("rim.input.w_k", TensorKind::RimKey, &[qw, r.input], ia)?;
                l.push(
                    "rim.input.w_v",
                    TensorKind::RimValue,
                    &[r.in_heads * r.d_v, r.input],
                    ia,
                )?;
                l.push(
                    "rim.input.w_q",
                    TensorKind::RimQuery,
                    &[n, qw, r.hidden],
                    ia,
                )?;
                let rnn = [n, c.rnn_per_module];
                l.push("rim.modules.rnn", TensorKind::RimRnn, &rnn, Role::ModuleRnn)?;
                if r.communication {
                    let cm = Role::Communication;
                    l.push(
                        "rim.comm.w_q",
                        TensorKind::CommQuery,
                        &[n, cw, r.hidden],
                        cm,
                    )?;
                    l.push("rim.comm.w_k", TensorKind::CommKey, &[n, cw, r.hidden], cm)?;
                    l.push(
                        "rim.comm.w_v",
                        TensorKind::CommValue,
                        &[n, cw, r.hidden],
                        cm,
                    )?;
                    l.push("rim.comm.w_g", TensorKind::CommGate, &[n, r.hidden, cw], cm)?;
                    l.push("rim.comm.w_o", TensorKind::CommOut, &[n, r.hidden, cw], cm)?;
                }
            }
            MemoryKind::Lstm => {
                let wd = dims.memory_width();
                let ml = Role::MemoryLstm;
                l.push("lstm.w_ih", TensorKind::Lstm(0), &[4 * wd, r.input], ml)?;
                l.push("lstm.w_hh", TensorKind::Lstm(1), &[4 * wd, wd], ml)?;
                l.push("lstm.b_ih", TensorKind::Lstm(2), &[4 * wd], ml)?;
                l.push("lstm.b_hh", TensorKind::Lstm(3), &[4 * wd], ml)?;
            }
        }
        // Heads.
        l.push(
            "heads.actor",
            TensorKind::Actor,
            &[actor_param_len(&dims)],
            Role::Heads,
        )?;
        l.push(
            "heads.critic",
            TensorKind::Critic,
            &[critic_param_len(&dims)],
            Role::Heads,
        )?;
        l.check_blocks()?;
        Ok(l)
    }

    fn push(
        &mut self,
        name: &'static str,
        kind: TensorKind,
        dims: &[usize],
        role: Role,
    ) -> Result<(), Error> {
        let (shape, rank) = shape(dims);
        let len = dims
            .iter()
            .try_fold(1usize, |a, &b| a.checked_mul(b))
            .ok_or(Error::BadDims {
                what: "tensor size overflows",
            })?;
        let group = self.mode.group(role);
        let g = group as usize;
        let offset = self.group_len[g];
        self.group_len[g] = offset.checked_add(len).ok_or(Error::BadDims {
            what: "group size overflows",
        })?;
        self.entries
            .push(TensorEntry {
                name,
                kind,
                shape,
                rank,
                role,
                group,
                offset,
                len,
            })
            .map_err(|_| Error::BadDims {
                what: "too many tensors for the layout's capacity",
            })
    }

    /// Every block's tensors add up to what the block's own code expects.
    fn check_blocks(&self) -> Result<(), Error> {
        let sum = |role: Role| -> usize {
            self.entries
                .iter()
                .filter(|e| e.role == role)
                .map(|e| e.len)
                .sum()
        };
        if sum(Role::Encoder) != encoder_param_len(&self.dims)
            || sum(Role::Instruction) != instr_param_len(&self.dims)
        {
            return Err(Error::BadDims {
                what: "block tensor list disagrees with the block's parameter count",
            });
        }
        Ok(())
    }

    /// The model dimensions (with `memory` set by the mode).
    pub fn dims(&self) -> &ModelDims {
        &self.dims
    }

    /// The mode.
    pub fn mode(&self) -> Mode {
        self.mode
    }

    /// Every tensor, in layout order.
    pub fn entries(&self) -> &[TensorEntry] {
        &self.entries
    }

    /// The tensor of `kind`, if the layout has one.
    pub fn entry(&self, kind: TensorKind) -> Option<&TensorEntry> {
        self.entries.iter().find(|e| e.kind == kind)
    }

    /// The tensor named `name` (without group prefix).
    pub fn find(&self, name: &str) -> Option<&TensorEntry> {
        self.entries.iter().find(|e| e.name == name)
    }

    /// Elements in group `g`.
    pub fn group_len(&self, g: Group) -> usize {
        self.group_len[g as usize]
    }

    /// Total parameters.
    pub fn total_len(&self) -> usize {
        self.group_len.iter().sum()
    }

    /// Elements in tensors of `role`.
    pub fn role_len(&self, role: Role) -> usize {
        self.entries
            .iter()
            .filter(|e| e.role == role)
            .map(|e| e.len)
            .sum()
    }

    /// Splits `bufs` (parameters, gradients or moments in this layout) into disjoint mutable
    /// parts, in table order: one per block (the encoder, the instruction encoder and the heads
    /// each see their whole block) and one per other tensor.
    ///
    /// Errors: [`Error::BadDims`] when the buffers do not match the layout.
    pub fn split_mut<'a, S>(
        &self,
        bufs: GroupBufsMut<'a, S>,
    ) -> Result<heapless::Vec<PartMut<'a, S>, MAX_TENSORS>, Error> {
        let bad = Error::BadDims {
            what: "buffers do not match the layout",
        };
        self.check_bufs(&bufs.as_ref()).map_err(|_| bad)?;
        let GroupBufsMut { fast, slow, other } = bufs;
        let mut rest: [&'a mut [S]; 3] = [fast, slow, other];
        let mut consumed = [0usize; 3];
        let mut out = heapless::Vec::new();
        let mut i = 0;
        while let Some(e) = self.entries.get(i) {
            let g = e.group as usize;
            let block = matches!(e.role, Role::Encoder | Role::Instruction | Role::Heads);
            let len = if block { self.role_len(e.role) } else { e.len };
            if e.offset != consumed[g] {
                return Err(bad);
            }
            let buf = core::mem::take(&mut rest[g]);
            if buf.len() < len {
                return Err(bad);
            }
            let (head, tail) = buf.split_at_mut(len);
            rest[g] = tail;
            consumed[g] += len;
            out.push(PartMut {
                role: e.role,
                kind: e.kind,
                group: e.group,
                data: head,
            })
            .map_err(|_| bad)?;
            // A block's other entries are inside its part.
            i += 1;
            if block {
                while self.entries.get(i).is_some_and(|n| n.role == e.role) {
                    i += 1;
                }
            }
        }
        Ok(out)
    }

    /// Check that `bufs` has exactly this layout's group sizes.
    pub fn check_bufs<S>(&self, bufs: &GroupBufs<'_, S>) -> Result<(), Error> {
        for g in Group::ALL {
            let (got, needed) = (bufs.group(g).len(), self.group_len(g));
            if got != needed {
                return Err(Error::BadDims {
                    what: match g {
                        Group::Fast => "fast buffer length does not match the layout",
                        Group::Slow => "slow buffer length does not match the layout",
                        Group::Other => "other buffer length does not match the layout",
                    },
                });
            }
        }
        Ok(())
    }

    /// The slice of tensor `kind` in `bufs` (empty if absent or the buffer is short).
    pub fn slice<'a, S>(&self, bufs: &GroupBufs<'a, S>, kind: TensorKind) -> &'a [S] {
        match self.entry(kind) {
            Some(e) => bufs.group(e.group).get(e.range()).unwrap_or(&[]),
            None => &[],
        }
    }

    /// The contiguous slice spanning every tensor of `role` (blocks are contiguous in one group
    /// by construction); empty if the role has no tensors.
    pub fn block<'a, S>(&self, bufs: &GroupBufs<'a, S>, role: Role) -> &'a [S] {
        let mut it = self.entries.iter().filter(|e| e.role == role);
        let Some(first) = it.next() else { return &[] };
        let end = first.offset + self.role_len(role);
        bufs.group(first.group)
            .get(first.offset..end)
            .unwrap_or(&[])
    }

    /// The module RNN cell kind.
    pub fn cell(&self) -> CellKind {
        self.dims.rim.cell
    }

    /// The ranges (offset, len) of the fast group that a fast-only update touches when the
    /// modules flagged in `active` were active in the chunk: per-module tensors contribute only
    /// the active modules' blocks (module-major layout), shared tensors (the input attention's
    /// keys and values, in the reversed split) always count. Ranges come out sorted and
    /// disjoint, ready for [`crate::nn::optim::Adam::step_ranges`].
    pub fn fast_ranges(
        &self,
        active: &[bool],
        out: &mut heapless::Vec<crate::nn::optim::Range, FAST_RANGES>,
    ) -> Result<(), Error> {
        out.clear();
        let n = self.dims.rim.n_modules;
        let full = Error::BadDims {
            what: "too many fast ranges for FAST_RANGES",
        };
        for e in self.entries.iter().filter(|e| e.group == Group::Fast) {
            if e.kind.is_per_module() && n > 0 {
                let block = e.len / n;
                for (i, _) in active.iter().enumerate().take(n).filter(|(_, a)| **a) {
                    out.push((e.offset + i * block, block)).map_err(|_| full)?;
                }
            } else {
                out.push((e.offset, e.len)).map_err(|_| full)?;
            }
        }
        Ok(())
    }
}

/// Capacity of [`Layout::fast_ranges`]'s output (7 per-module tensors x 16 modules + shared).
pub const FAST_RANGES: usize = 7 * 16 + 4;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nn::dims::{PAPER, TINY};

    #[test]
    fn groups_follow_the_mode() {
        for dims in [PAPER, TINY] {
            let meta = Layout::new(&dims, Mode::MetaRim).unwrap();
            let rev = Layout::new(&dims, Mode::Reversed).unwrap();
            let joint = Layout::new(&dims, Mode::Joint).unwrap();
            let c = rim_param_counts(&dims.rim);
            assert_eq!(meta.group_len(Group::Fast), c.fast());
            assert_eq!(meta.group_len(Group::Slow), c.slow());
            assert_eq!(rev.group_len(Group::Fast), c.slow());
            assert_eq!(rev.group_len(Group::Slow), c.fast());
            assert_eq!(joint.group_len(Group::Fast), 0);
            assert_eq!(joint.group_len(Group::Slow), c.total());
            assert_eq!(meta.total_len(), joint.total_len());
            let other = encoder_param_len(&dims)
                + instr_param_len(&dims)
                + actor_param_len(&dims)
                + critic_param_len(&dims);
            assert_eq!(meta.group_len(Group::Other), other);
            let lstm = Layout::new(&dims, Mode::Lstm).unwrap();
            assert_eq!(lstm.dims().memory, MemoryKind::Lstm);
            assert_eq!(lstm.group_len(Group::Fast), 0);
            // Tensors tile each group exactly.
            for l in [&meta, &rev, &joint, &lstm] {
                for g in Group::ALL {
                    let mut end = 0;
                    for e in l.entries().iter().filter(|e| e.group == g) {
                        assert_eq!(e.offset, end, "{}", e.name);
                        end += e.len;
                    }
                    assert_eq!(end, l.group_len(g));
                }
            }
        }
    }

    #[test]
    fn fast_ranges_cover_only_active_modules() {
        let meta = Layout::new(&TINY, Mode::MetaRim).unwrap();
        let mut r = heapless::Vec::new();
        meta.fast_ranges(&[true, false, true, false], &mut r)
            .unwrap();
        let per = rim_param_counts(&TINY.rim).rnn_per_module;
        assert_eq!(&r[..], &[(0, per), (2 * per, per)]);
        meta.fast_ranges(&[false; 4], &mut r).unwrap();
        assert!(r.is_empty());
        let rev = Layout::new(&TINY, Mode::Reversed).unwrap();
        rev.fast_ranges(&[false, true, false, false], &mut r)
            .unwrap();
        // Shared keys and values always, then module 1's block of each per-module tensor.
        let k = rev.entry(TensorKind::RimKey).unwrap();
        let v = rev.entry(TensorKind::RimValue).unwrap();
        assert_eq!(r[0], (k.offset, k.len));
        assert_eq!(r[1], (v.offset, v.len));
        assert_eq!(r.len(), 2 + 6);
        let total: usize = r.iter().map(|x| x.1).sum();
        assert_eq!(
            total,
            k.len + v.len + (rev.group_len(Group::Fast) - k.len - v.len) / 4
        );
    }

    #[test]
    fn bad_dims_are_errors() {
        let mut d = TINY;
        d.rim.k_active = 5;
        assert!(Layout::new(&d, Mode::MetaRim).is_err());
        let mut d = TINY;
        d.rim.input += 1;
        assert!(Layout::new(&d, Mode::MetaRim).is_err());
        let l = Layout::new(&TINY, Mode::MetaRim).unwrap();
        let short = [0.0f32; 3];
        let bufs = GroupBufs {
            fast: &short[..],
            slow: &short[..],
            other: &short[..],
        };
        assert!(l.check_bufs(&bufs).is_err());
        assert!(Mode::from_name("meta-rim") == Some(Mode::MetaRim));
        assert!(Mode::from_name("nope").is_none());
    }

    /// Dims past the bounds, or ones a block would refuse at its first call, are refused by
    /// `Layout::new` itself, as errors (found by the `network` fuzz target: `usize::MAX`
    /// widths overflowed `memory_input`, zero head widths passed the layout).
    #[test]
    fn layouts_refuse_absurd_and_unrunnable_dims() {
        use crate::nn::dims::{MAX_DIM, MAX_MODULES};
        let bad: [fn(&mut ModelDims); 10] = [
            |d| d.instr_hidden = usize::MAX,
            |d| d.conv_channels[2] = usize::MAX - 1,
            |d| d.rim.d_v = MAX_DIM + 1,
            |d| d.word_dim = 1 << 31,
            |d| d.max_tokens = MAX_DIM + 1,
            |d| d.rim.n_modules = MAX_MODULES + 1,
            |d| d.rim.n_modules = 0,
            |d| d.head_hidden = 0,
            |d| d.n_actions = 0,
            |d| d.rim.d_k = 0,
        ];
        for (i, change) in bad.iter().enumerate() {
            for mode in [Mode::MetaRim, Mode::Lstm] {
                let mut d = TINY;
                change(&mut d);
                d.rim.input = d.conv_channels[2].saturating_add(d.instr_hidden);
                let lstm_ok = i == 9 && mode == Mode::Lstm; // the LSTM has no attention
                assert_eq!(
                    Layout::new(&d, mode).is_ok(),
                    lstm_ok,
                    "change {i}, {mode:?}"
                );
            }
        }
        let mut d = TINY;
        d.rim.d_v = MAX_DIM;
        d.rim.n_modules = MAX_MODULES;
        assert!(
            Layout::new(&d, Mode::MetaRim).is_ok(),
            "bounds are inclusive"
        );
    }

    /// The largest model the bounds accept has every buffer size the core derives (step cache,
    /// scratch, state, adaptation work) below 2^32, so none of them overflows on a 32-bit
    /// target; the sizes grow with every width, so the largest model bounds them all.
    #[test]
    fn the_largest_accepted_model_sizes_fit_in_32_bits() {
        use crate::nn::dims::{CellKind, EncoderKind, MAX_DIM, MAX_MODULES};
        use crate::nn::policy::{fast_work_len, scratch_len, state_len, step_cache_len};
        let mut d = PAPER;
        d.conv_channels = [MAX_DIM; 3];
        (d.bow_dim, d.word_dim, d.instr_hidden) = (MAX_DIM, MAX_DIM, MAX_DIM);
        (d.max_tokens, d.head_hidden, d.n_actions) = (MAX_DIM, MAX_DIM, MAX_DIM);
        d.rim.n_modules = MAX_MODULES;
        d.rim.k_active = MAX_MODULES;
        d.rim.hidden = MAX_DIM;
        d.rim.input = 2 * MAX_DIM;
        (d.rim.d_k, d.rim.d_v, d.rim.in_heads) = (MAX_DIM, MAX_DIM, MAX_DIM);
        (d.rim.c_heads, d.rim.c_k) = (MAX_DIM, MAX_DIM);
        assert!(Layout::new(&d, Mode::MetaRim).is_ok());
        for encoder in [EncoderKind::Conv, EncoderKind::Bow] {
            for cell in [CellKind::Gru, CellKind::Lstm] {
                for memory in [MemoryKind::Rim, MemoryKind::Lstm] {
                    let d = ModelDims {
                        encoder,
                        memory,
                        ..d.with_cell(cell)
                    };
                    for (what, n) in [
                        ("state", state_len(&d)),
                        ("step cache", step_cache_len(&d)),
                        ("scratch", scratch_len(&d)),
                        ("fast work", fast_work_len(&d)),
                    ] {
                        assert!(
                            n < 1 << 32,
                            "{what}: {n} for {encoder:?} {cell:?} {memory:?}"
                        );
                    }
                }
            }
        }
    }
}
