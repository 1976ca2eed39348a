//! Errors of the CUDA layer. Every failure is a value naming what went wrong; none panics.

use std::fmt;

/// What can go wrong while compiling, loading or launching a kernel.
#[derive(Debug)]
pub enum Error {
    /// NVRTC (`libnvrtc.so`) could not be found or opened.
    NvrtcUnavailable {
        /// Why, and where it was looked for.
        reason: String,
    },
    /// NVRTC (or the emulator's C++ compiler) rejected a kernel; `log` is the compiler's log.
    Compile {
        /// The kernel's file name (e.g. `optim.cu`).
        kernel: &'static str,
        /// The options passed to NVRTC.
        options: Vec<String>,
        /// NVRTC's compile log.
        log: String,
    },
    /// A malformed argument (a bad define name, an architecture string, mismatched lengths...).
    BadInput {
        /// What is wrong.
        what: String,
    },
    /// No usable CUDA device (the reason from [`crate::device::detect`]).
    NoDevice {
        /// Why.
        reason: String,
    },
    /// A CUDA driver call failed.
    Driver {
        /// What was being done.
        during: &'static str,
        /// The driver's error.
        error: cudarc::driver::DriverError,
    },
    /// The CPU reference rejected the same input (e.g. overlapping ranges).
    Core(metarim_core::Error),
    /// Something the GPU kernels do not implement (e.g. more than 16 RIM modules).
    Unsupported {
        /// What.
        what: String,
    },
    /// The CPU emulator of the kernels failed (no C++ compiler, a compile error, a kernel that
    /// wrote outside its buffers or diverged at a barrier).
    Emulator {
        /// What happened.
        what: String,
    },
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::NvrtcUnavailable { reason } => write!(f, "NVRTC unavailable: {reason}"),
            Error::Compile {
                kernel,
                options,
                log,
            } => write!(
                f,
                "failed to compile {kernel} (options: {}):\n{log}",
                options.join(" ")
            ),
            Error::BadInput { what } => write!(f, "bad input: {what}"),
            Error::NoDevice { reason } => write!(f, "no usable CUDA device: {reason}"),
            Error::Driver { during, error } => {
                write!(f, "CUDA driver error while {during}: {error}")
            }
            Error::Core(e) => write!(f, "{e}"),
            Error::Unsupported { what } => write!(f, "not supported on the GPU backend: {what}"),
            Error::Emulator { what } => write!(f, "kernel emulator: {what}"),
        }
    }
}

impl std::error::Error for Error {}

impl From<metarim_core::Error> for Error {
    fn from(e: metarim_core::Error) -> Self {
        Error::Core(e)
    }
}

/// Wrap a driver error with what was being done.
pub(crate) fn driver(during: &'static str) -> impl FnOnce(cudarc::driver::DriverError) -> Error {
    move |error| Error::Driver { during, error }
}
