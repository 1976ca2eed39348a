//! metarim's CUDA layer: the kernels of `kernels/` embedded as sources, their run-time
//! compilation with NVRTC, device detection that never panics, and launches on device buffers.
//!
//! Invariants:
//! - `cargo build` needs no CUDA anywhere: cudarc opens `libcuda` and `libnvrtc` at run time.
//! - Nothing here panics when CUDA is absent: [`device::detect`] returns
//!   [`device::Backend::Unavailable`] with the reason, and [`nvrtc::load_nvrtc`] an
//!   [`Error::NvrtcUnavailable`].
//! - PTX can be produced without a GPU ([`nvrtc::compile_ptx`]); only launches need one.
//! - `unsafe` appears only where Rust calls into CUDA (library loading, kernel launches), each
//!   block with a `// SAFETY:` line.
//!
//! What a CPU-only machine verifies and what it does not is written down in `docs/GPU.md`.

pub mod device;
pub mod error;
pub mod kernel;
pub mod nvrtc;
pub mod optim;

pub use device::{detect, Backend, CudaDevice};
pub use error::Error;
pub use kernel::Kernel;
pub use nvrtc::{compile_ptx, compile_ptx_with, Define};

/// This crate's result type.
pub type Result<T> = std::result::Result<T, Error>;
