//! metarim's CUDA layer: the kernels of `kernels/` embedded as sources, their run-time
//! compilation with NVRTC, device detection that never panics, and the GPU backend of the
//! trainer ([`engine::CudaPolicy`]): parameters, gradients and Adam moments of the fast, slow
//! and other groups in separate device buffers, batched acting, gradient passes over chunks
//! and optimiser steps, all on the device.
//!
//! Invariants:
//! - `cargo build` needs no CUDA anywhere: cudarc opens `libcuda` and `libnvrtc` at run time.
//! - Nothing here panics when CUDA is absent: [`device::detect`] returns
//!   [`device::Backend::Unavailable`] with the reason, and [`nvrtc::load_nvrtc`] an
//!   [`Error::NvrtcUnavailable`].
//! - PTX can be produced without a GPU ([`nvrtc::compile_ptx`]); only launches need one.
//! - The same host code drives a CUDA device ([`cuda_exec::CudaExec`]) or the CPU emulator of
//!   the kernels ([`emu::EmuExec`]) through [`exec::Exec`], so everything above the device
//!   interface is checked against the CPU reference on machines without a GPU.
//! - `unsafe` appears only where Rust calls into CUDA or the emulated device (library loading,
//!   raw memory, kernel launches), each block with a `// SAFETY:` line.
//!
//! What a CPU-only machine verifies and what it does not is written down in `docs/GPU.md`.

pub mod args;
pub mod cuda_exec;
pub mod device;
pub mod emu;
pub mod engine;
pub mod error;
pub mod exec;
pub mod groups;
pub mod kernel;
pub mod layout;
pub mod nvrtc;
pub mod optim;

pub use device::{detect, Backend, CudaDevice};
pub use error::Error;
pub use kernel::Kernel;
pub use nvrtc::{compile_ptx, compile_ptx_with, Define};

/// This crate's result type.
pub type Result<T> = std::result::Result<T, Error>;
