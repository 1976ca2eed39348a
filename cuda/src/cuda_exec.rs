//! [`Exec`] on a CUDA device (cudarc's driver API, loaded dynamically): device memory, NVRTC
//! modules compiled for the device's architecture, launches on the context's default stream.
//!
//! Ordering: everything goes to the default (legacy) stream, so operations run in the order
//! they were issued; host-to-device copies return once the source may be reused, device-to-host
//! copies once the data has arrived.

use std::ffi::c_void;
use std::sync::Arc;

use cudarc::driver::{result, sys, CudaContext, CudaFunction, CudaModule, CudaStream};

use crate::device::CudaDevice;
use crate::error::driver;
use crate::exec::{Exec, Func, LaunchCfg};
use crate::kernel::Kernel;
use crate::nvrtc::{self, Define};
use crate::{Error, Result};

/// A CUDA device as an [`Exec`].
#[derive(Debug)]
pub struct CudaExec {
    dev: CudaDevice,
    stream: Arc<CudaStream>,
}

/// A loaded module and its functions (kept alive by the [`Func`]s).
#[derive(Debug)]
struct Loaded {
    _module: Arc<CudaModule>,
    _functions: Vec<CudaFunction>,
}

impl CudaExec {
    /// An executor on `dev`.
    pub fn new(dev: &CudaDevice) -> Result<CudaExec> {
        dev.ctx
            .bind_to_thread()
            .map_err(driver("binding the CUDA context"))?;
        Ok(CudaExec {
            dev: dev.clone(),
            stream: dev.ctx.default_stream(),
        })
    }

    /// The device.
    pub fn device(&self) -> &CudaDevice {
        &self.dev
    }

    fn ctx(&self) -> Result<&Arc<CudaContext>> {
        self.dev
            .ctx
            .bind_to_thread()
            .map_err(driver("binding the CUDA context"))?;
        Ok(&self.dev.ctx)
    }
}

impl Exec for CudaExec {
    fn describe(&self) -> String {
        format!("{} ({})", self.dev.name, self.dev.arch())
    }

    fn arch(&self) -> String {
        self.dev.arch()
    }

    fn alloc(&self, bytes: usize) -> Result<u64> {
        self.ctx()?;
        // SAFETY: a plain allocation in the bound context; the memory is only reached through
        // DevBuf, which never reads it before writing (or reports it as unspecified).
        unsafe { result::malloc_sync(bytes) }.map_err(driver("allocating device memory"))
    }

    fn free(&self, ptr: u64, _bytes: usize) {
        if self.ctx().is_err() {
            return;
        }
        // Work queued before may still use the buffer: wait for it. Errors cannot be returned
        // from a drop; a failed free leaks the buffer, nothing worse.
        let _ = self.stream.synchronize();
        // SAFETY: ptr came from malloc_sync in this context and DevBuf frees it exactly once.
        let _ = unsafe { result::free_sync(ptr) };
    }

    fn htod(&self, dst: u64, src: &[u8]) -> Result<()> {
        self.ctx()?;
        // SAFETY: dst..dst+len lies in a live allocation (DevBuf checks the range); the
        // synchronous copy has finished reading src when it returns.
        unsafe { result::memcpy_htod_sync(dst, src) }.map_err(driver("copying to the device"))
    }

    fn dtoh(&self, src: u64, dst: &mut [u8]) -> Result<()> {
        self.ctx()?;
        // SAFETY: src..src+len lies in a live allocation (DevBuf checks the range); the
        // synchronous copy waits for queued work and has written dst when it returns.
        unsafe { result::memcpy_dtoh_sync(dst, src) }.map_err(driver("copying from the device"))
    }

    fn dtod(&self, dst: u64, src: u64, bytes: usize) -> Result<()> {
        self.ctx()?;
        // SAFETY: both ranges lie in live allocations (DevBuf checks them); ordered on the
        // default stream.
        unsafe { result::memcpy_dtod_async(dst, src, bytes, self.stream.cu_stream()) }
            .map_err(driver("copying on the device"))
    }

    fn zero(&self, dst: u64, bytes: usize) -> Result<()> {
        self.ctx()?;
        // SAFETY: the range lies in a live allocation (DevBuf checks it); ordered on the
        // default stream.
        unsafe { result::memset_d8_async(dst, 0, bytes, self.stream.cu_stream()) }
            .map_err(driver("clearing device memory"))
    }

    fn load(&self, kernel: Kernel, defines: &[Define]) -> Result<Vec<Func>> {
        let ptx = nvrtc::compile_ptx_with(kernel, &self.dev.arch(), defines)?;
        let ctx = self.ctx()?;
        let module = ctx
            .load_module(cudarc::nvrtc::Ptx::from_src(ptx))
            .map_err(driver("loading a kernel module"))?;
        let mut functions = Vec::new();
        for e in kernel.entries() {
            let f = module
                .load_function(e.name)
                .map_err(driver("finding a kernel entry point"))?;
            functions.push(f);
        }
        let handles: Vec<u64> = functions
            .iter()
            .map(|f| f.cu_function() as usize as u64)
            .collect();
        let keep: Arc<dyn Send + Sync> = Arc::new(Loaded {
            _module: module,
            _functions: functions,
        });
        Ok(kernel
            .entries()
            .iter()
            .zip(handles)
            .map(|(entry, handle)| Func {
                entry,
                handle,
                aux: 0,
                _module: keep.clone(),
            })
            .collect())
    }

    unsafe fn launch_raw(
        &self,
        f: &Func,
        cfg: &LaunchCfg,
        params: &mut [*mut c_void],
    ) -> Result<()> {
        self.ctx()?;
        let threads = u64::from(cfg.block.0) * u64::from(cfg.block.1) * u64::from(cfg.block.2);
        if threads > 1024 {
            return Err(Error::BadInput {
                what: format!("{}: {threads} threads per block", f.entry.name),
            });
        }
        // SAFETY: f.handle is a CUfunction of a module kept alive by f; params match its
        // parameters and point into live allocations (the caller's contract).
        unsafe {
            result::launch_kernel(
                f.handle as usize as sys::CUfunction,
                cfg.grid,
                cfg.block,
                cfg.smem,
                self.stream.cu_stream(),
                params,
            )
        }
        .map_err(driver("launching a kernel"))
    }

    fn sync(&self) -> Result<()> {
        self.ctx()?;
        self.stream
            .synchronize()
            .map_err(driver("waiting for the device"))
    }
}
