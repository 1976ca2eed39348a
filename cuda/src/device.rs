//! Device detection that never panics.
//!
//! cudarc's `CudaContext::new` panics when `libcuda.so` is missing, so detection goes in three
//! steps, each turning failure into [`Backend::Unavailable`] with the reason: is the driver
//! library present, how many devices does it report, can a context be opened on the one asked
//! for.

use std::sync::Arc;

use cudarc::driver::CudaContext;

use crate::error::driver;
use crate::Result;

/// An opened CUDA device.
#[derive(Debug, Clone)]
pub struct CudaDevice {
    /// The context (primary context of the device).
    pub ctx: Arc<CudaContext>,
    /// The device's name (e.g. `NVIDIA H100 80GB HBM3`).
    pub name: String,
    /// Compute capability `(major, minor)`.
    pub compute_capability: (i32, i32),
}

impl CudaDevice {
    /// The NVRTC architecture of this device (`compute_90` for an H100).
    pub fn arch(&self) -> String {
        let (major, minor) = self.compute_capability;
        format!("compute_{major}{minor}")
    }
}

/// Which backend can run: a CUDA device, or why none can.
#[derive(Debug, Clone)]
pub enum Backend {
    /// A usable device.
    Cuda(CudaDevice),
    /// No usable device, and why.
    Unavailable(String),
}

/// Detect device `ordinal` without panicking.
pub fn detect(ordinal: usize) -> Backend {
    match try_open(ordinal) {
        Ok(Ok(dev)) => Backend::Cuda(dev),
        Ok(Err(reason)) => Backend::Unavailable(reason),
        Err(e) => Backend::Unavailable(e.to_string()),
    }
}

fn try_open(ordinal: usize) -> Result<std::result::Result<CudaDevice, String>> {
    // SAFETY: only probes whether libcuda can be opened by name; no driver function is called.
    if !unsafe { cudarc::driver::sys::is_culib_present() } {
        return Ok(Err(
            "libcuda.so not found (no NVIDIA driver on this machine)".to_string(),
        ));
    }
    let count = CudaContext::device_count().map_err(driver("counting CUDA devices"))?;
    let count = usize::try_from(count).unwrap_or(0);
    if count == 0 {
        return Ok(Err("the NVIDIA driver reports no CUDA devices".to_string()));
    }
    if ordinal >= count {
        return Ok(Err(format!(
            "device {ordinal} asked for, but only {count} CUDA device(s) exist"
        )));
    }
    let ctx = CudaContext::new(ordinal).map_err(driver("opening a CUDA context"))?;
    let name = ctx.name().map_err(driver("reading the device name"))?;
    let compute_capability = ctx
        .compute_capability()
        .map_err(driver("reading the compute capability"))?;
    Ok(Ok(CudaDevice {
        ctx,
        name,
        compute_capability,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detection_never_panics() {
        match detect(0) {
            Backend::Cuda(d) => assert!(d.arch().starts_with("compute_")),
            Backend::Unavailable(reason) => assert!(!reason.is_empty()),
        }
        // An ordinal no machine has is unavailable, not a panic.
        assert!(matches!(detect(usize::MAX), Backend::Unavailable(_)));
    }
}
