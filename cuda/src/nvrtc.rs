//! Run-time compilation of the embedded kernels with NVRTC, and where the CUDA tools are found.
//!
//! NVRTC is looked for in this order:
//! 1. `$METARIM_CUDA_TOOLS` (the `pip --target` directory that `scripts/install-cuda-tools.sh`
//!    fills): `libnvrtc-builtins.so.13.0` and `libnvrtc.so.13` under `nvidia/cu13/lib` are opened
//!    by absolute path and kept loaded, so the later lookups by name (cudarc's for libnvrtc,
//!    libnvrtc's for its builtins) find the same libraries without `LD_LIBRARY_PATH`.
//! 2. Otherwise cudarc's lookup by name: the system's library path and `LD_LIBRARY_PATH`.
//!
//! `ptxas` comes from `$METARIM_CUDA_TOOLS/nvidia/cu13/bin/ptxas`, else from `PATH`.
//!
//! Compile options: `--gpu-architecture=<arch>`, `--fmad=false`, `--ftz=false`,
//! `--prec-div=true`, `--prec-sqrt=true` (so f32 results match the CPU reference bit for bit;
//! see `kernels/common.cuh`), then one `-D NAME=VALUE` per [`Define`].

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use cudarc::nvrtc::{CompileError, CompileOptions};

use crate::kernel::Kernel;
use crate::{Error, Result};

/// The environment variable naming the CUDA tools directory (a `pip --target` directory).
pub const TOOLS_ENV: &str = "METARIM_CUDA_TOOLS";

/// The architecture CI compiles for (H100: compute capability 9.0).
pub const CI_ARCH: &str = "compute_90";

/// The tools directory from [`TOOLS_ENV`], if set and non-empty.
pub fn tools_dir() -> Option<PathBuf> {
    std::env::var_os(TOOLS_ENV)
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
}

/// `libnvrtc.so.13` inside a tools directory.
pub fn nvrtc_lib_in(dir: &Path) -> PathBuf {
    dir.join("nvidia/cu13/lib/libnvrtc.so.13")
}

/// `libnvrtc-builtins.so.13.0` inside a tools directory (libnvrtc opens it by name).
pub fn nvrtc_builtins_in(dir: &Path) -> PathBuf {
    dir.join("nvidia/cu13/lib/libnvrtc-builtins.so.13.0")
}

/// `ptxas`: from the tools directory when [`TOOLS_ENV`] is set (an error if it is not there),
/// else the first `ptxas` on `PATH`.
pub fn ptxas() -> Result<PathBuf> {
    if let Some(dir) = tools_dir() {
        let p = dir.join("nvidia/cu13/bin/ptxas");
        return if p.is_file() {
            Ok(p)
        } else {
            Err(Error::BadInput {
                what: format!(
                    "{TOOLS_ENV}={} has no nvidia/cu13/bin/ptxas (run scripts/install-cuda-tools.sh)",
                    dir.display()
                ),
            })
        };
    }
    std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .map(|d| d.join("ptxas"))
        .find(|p| p.is_file())
        .ok_or_else(|| Error::BadInput {
            what: format!("ptxas not found: {TOOLS_ENV} is unset and PATH has no ptxas"),
        })
}

/// Make NVRTC loadable (once per process) and report why not when it is missing.
pub fn load_nvrtc() -> Result<()> {
    static LOADED: OnceLock<std::result::Result<(), String>> = OnceLock::new();
    LOADED
        .get_or_init(|| {
            if let Some(dir) = tools_dir() {
                // The builtins first: libnvrtc opens them by name when it compiles.
                for lib in [nvrtc_builtins_in(&dir), nvrtc_lib_in(&dir)] {
                    if !lib.is_file() {
                        return Err(format!(
                            "{} does not exist ({TOOLS_ENV}={}; run scripts/install-cuda-tools.sh)",
                            lib.display(),
                            dir.display()
                        ));
                    }
                    // SAFETY: opening NVIDIA's NVRTC libraries runs only their own initialisers,
                    // which have no preconditions on us; the handle is leaked on purpose so the
                    // library stays loaded for the life of the process, which the later
                    // lookups by name (cudarc's, libnvrtc's) rely on.
                    let handle = unsafe { libloading::Library::new(&lib) }
                        .map_err(|e| format!("cannot open {}: {e}", lib.display()))?;
                    std::mem::forget(handle);
                }
            }
            // SAFETY: only probes whether the library can be opened by name; no NVRTC function
            // is called, and a failure is reported as `false`.
            if unsafe { cudarc::nvrtc::sys::is_culib_present() } {
                Ok(())
            } else {
                Err(format!(
                    "libnvrtc.so.13 not found: set {TOOLS_ENV} (scripts/install-cuda-tools.sh \
                     prints it) or put libnvrtc on LD_LIBRARY_PATH"
                ))
            }
        })
        .clone()
        .map_err(|reason| Error::NvrtcUnavailable { reason })
}

/// A preprocessor definition `-D NAME=VALUE` (sizes of a preset, so loops unroll).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Define {
    /// A C identifier.
    pub name: String,
    /// The replacement text (no whitespace).
    pub value: String,
}

impl Define {
    /// A definition, checked: the name must be a C identifier and the value non-empty without
    /// whitespace.
    pub fn new(name: impl Into<String>, value: impl ToString) -> Result<Define> {
        let name = name.into();
        let value = value.to_string();
        let ident = name
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
            && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !ident {
            return Err(Error::BadInput {
                what: format!("define name {name:?} is not a C identifier"),
            });
        }
        if value.is_empty() || value.chars().any(|c| c.is_whitespace() || c == '\0') {
            return Err(Error::BadInput {
                what: format!("define {name}: value {value:?} is empty or has whitespace"),
            });
        }
        Ok(Define { name, value })
    }

    fn option(&self) -> String {
        format!("-D{}={}", self.name, self.value)
    }
}

fn check_arch(arch: &str) -> Result<()> {
    let ok = arch
        .strip_prefix("compute_")
        .or_else(|| arch.strip_prefix("sm_"))
        .is_some_and(|n| !n.is_empty() && n.chars().all(|c| c.is_ascii_alphanumeric()));
    if ok {
        Ok(())
    } else {
        Err(Error::BadInput {
            what: format!("architecture {arch:?} is not compute_NN or sm_NN"),
        })
    }
}

/// The NVRTC options for `arch` and `defines` (see the module docs).
pub fn options(arch: &str, defines: &[Define]) -> Result<Vec<String>> {
    check_arch(arch)?;
    let mut o = vec![
        format!("--gpu-architecture={arch}"),
        "--fmad=false".to_string(),
        "--ftz=false".to_string(),
        "--prec-div=true".to_string(),
        "--prec-sqrt=true".to_string(),
    ];
    o.extend(defines.iter().map(Define::option));
    Ok(o)
}

/// Compile `kernel` to PTX text for `arch` (e.g. [`CI_ARCH`]); needs NVRTC, not a GPU.
pub fn compile_ptx(kernel: Kernel, arch: &str) -> Result<String> {
    compile_ptx_with(kernel, arch, &[])
}

/// [`compile_ptx`] with `-D` definitions.
pub fn compile_ptx_with(kernel: Kernel, arch: &str, defines: &[Define]) -> Result<String> {
    let options = options(arch, defines)?;
    load_nvrtc()?;
    let opts = CompileOptions {
        options: options.clone(),
        name: Some(kernel.file_name().to_string()),
        ..Default::default()
    };
    match cudarc::nvrtc::compile_ptx_with_opts(kernel.nvrtc_source(), opts) {
        Ok(ptx) => Ok(ptx.to_src()),
        Err(CompileError::CompileError { log, .. }) => Err(Error::Compile {
            kernel: kernel.file_name(),
            options,
            log: log.to_string_lossy().into_owned(),
        }),
        Err(e) => Err(Error::Compile {
            kernel: kernel.file_name(),
            options,
            log: e.to_string(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_defines_and_archs_are_errors() {
        assert!(Define::new("N_MODULES", 6).is_ok());
        assert!(Define::new("6N", 6).is_err());
        assert!(Define::new("A B", 6).is_err());
        assert!(Define::new("", 6).is_err());
        assert!(Define::new("X", "1 2").is_err());
        assert!(options("compute_90", &[]).is_ok());
        assert!(options("sm_90a", &[]).is_ok());
        assert!(options("90", &[]).is_err());
        assert!(options("compute_9 0", &[]).is_err());
        let o = options("compute_90", &[Define::new("K", 4).unwrap()]).unwrap();
        assert!(o.contains(&"--fmad=false".to_string()));
        assert_eq!(o.last().map(String::as_str), Some("-DK=4"));
    }
}
