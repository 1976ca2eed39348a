//! The kernels of `kernels/`, embedded with `include_str!` behind a typed enum.
//!
//! NVRTC is given one self-contained source per kernel: `#include "common.cuh"` is replaced by
//! the header's text (between `#line` directives, so NVRTC's log names the right file and line),
//! because NVRTC has no file system to read headers from.

/// The shared header (`kernels/common.cuh`).
pub const COMMON_HEADER: &str = include_str!("../../kernels/common.cuh");

const INCLUDE_COMMON: &str = "#include \"common.cuh\"";

/// One `.cu` file of `kernels/` (one per op family).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Kernel {
    /// `optim.cu`: Adam and SGD updates over (offset, len) ranges of one parameter group.
    Optim,
}

impl Kernel {
    /// Every kernel, for tests and ahead-of-time checks.
    pub const ALL: [Kernel; 1] = [Kernel::Optim];

    /// The file name under `kernels/`.
    pub const fn file_name(self) -> &'static str {
        match self {
            Kernel::Optim => "optim.cu",
        }
    }

    /// The source as written (with its `#include "common.cuh"`).
    pub const fn source(self) -> &'static str {
        match self {
            Kernel::Optim => include_str!("../../kernels/optim.cu"),
        }
    }

    /// The `extern "C"` entry points the file defines.
    pub const fn entry_points(self) -> &'static [&'static str] {
        match self {
            Kernel::Optim => &[optim_entry::ADAM_RANGES, optim_entry::SGD_RANGES],
        }
    }

    /// The self-contained source handed to NVRTC: the header inlined in place of its include.
    pub fn nvrtc_source(self) -> String {
        let src = self.source();
        let mut out = String::with_capacity(src.len() + COMMON_HEADER.len() + 128);
        for (i, line) in src.lines().enumerate() {
            if line.trim() == INCLUDE_COMMON {
                out.push_str("#line 1 \"common.cuh\"\n");
                out.push_str(COMMON_HEADER);
                out.push_str(&format!("\n#line {} \"{}\"\n", i + 2, self.file_name()));
            } else {
                out.push_str(line);
                out.push('\n');
            }
        }
        out
    }
}

/// Entry-point names of [`Kernel::Optim`].
pub mod optim_entry {
    /// Adam over ranges (`adam_ranges`).
    pub const ADAM_RANGES: &str = "adam_ranges";
    /// SGD over ranges (`sgd_ranges`).
    pub const SGD_RANGES: &str = "sgd_ranges";
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_is_inlined_and_entry_points_are_defined() {
        for k in Kernel::ALL {
            let s = k.nvrtc_source();
            assert!(
                !s.contains(INCLUDE_COMMON),
                "{}: include left",
                k.file_name()
            );
            assert!(
                s.contains("range_element"),
                "{}: header missing",
                k.file_name()
            );
            for e in k.entry_points() {
                let decl = format!("__global__ void {e}(");
                assert!(s.contains(&decl), "{}: no entry point {e}", k.file_name());
            }
        }
    }
}
