//! [`Exec`] on a CUDA device (cudarc's driver API, loaded dynamically): device memory, NVRTC
//! modules compiled for the device's architecture, launches on the context's default stream.
//!
//! Ordering: everything goes to the default (legacy) stream, so operations run in the order
//! they were issued; host-to-device copies return once the source may be reused, device-to-host
//! copies once the data has arrived. The asynchronous copies of the acting path
//! ([`Exec::htod_async`], [`Exec::dtoh_async`]) go through pinned host buffers (page-locked,
//! `cuMemHostAlloc`), each guarded by an event: a buffer is reused only after the copy that
//! used it has completed, and [`Exec::wait`] waits for one copy, not for the whole stream.

use std::collections::HashMap;
use std::ffi::c_void;
use std::sync::{Arc, Mutex};

use cudarc::driver::{result, sys, CudaContext, CudaFunction, CudaModule, CudaStream};

use crate::device::CudaDevice;
use crate::error::driver;
use crate::exec::{Exec, Func, LaunchCfg, Ticket};
use crate::kernel::Kernel;
use crate::nvrtc::{self, Define};
use crate::{Error, Result};

/// A CUDA device as an [`Exec`].
#[derive(Debug)]
pub struct CudaExec {
    dev: CudaDevice,
    stream: Arc<CudaStream>,
    pinned: Mutex<PinnedPool>,
}

/// One page-locked host buffer and the event recorded after the last copy that used it.
#[derive(Debug)]
struct Pinned {
    ptr: usize,
    bytes: usize,
    event: usize,
}

/// Free pinned buffers and those holding a queued device-to-host copy.
#[derive(Debug, Default)]
struct PinnedPool {
    free: Vec<Pinned>,
    in_flight: HashMap<u64, Pinned>,
    next_id: u64,
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
            pinned: Mutex::new(PinnedPool::default()),
        })
    }

    /// A free pinned buffer of at least `bytes` whose last copy has completed (new if none).
    fn take_pinned(&self, bytes: usize) -> Result<Pinned> {
        let found = {
            let mut pool = self.pinned.lock().unwrap_or_else(|e| e.into_inner());
            pool.free
                .iter()
                .position(|p| p.bytes >= bytes)
                .map(|i| pool.free.swap_remove(i))
        };
        let p = match found {
            Some(p) => p,
            None => {
                let size = bytes.max(4096).next_power_of_two();
                // SAFETY: a plain page-locked allocation, freed in Drop; its contents are
                // written before they are read.
                let ptr = unsafe { result::malloc_host(size, sys::CU_MEMHOSTALLOC_PORTABLE) }
                    .map_err(driver("allocating pinned host memory"))?;
                let event = result::event::create(sys::CUevent_flags::CU_EVENT_DISABLE_TIMING)
                    .map_err(driver("creating an event"))?;
                // A fresh event counts as complete.
                Pinned {
                    ptr: ptr as usize,
                    bytes: size,
                    event: event as usize,
                }
            }
        };
        // SAFETY: the event belongs to this buffer; waiting on it only blocks this thread.
        unsafe { result::event::synchronize(p.event as sys::CUevent) }
            .map_err(driver("waiting for a pinned buffer"))?;
        Ok(p)
    }

    fn record(&self, p: &Pinned) -> Result<()> {
        // SAFETY: the event and the stream are live.
        unsafe { result::event::record(p.event as sys::CUevent, self.stream.cu_stream()) }
            .map_err(driver("recording an event"))
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

impl Drop for CudaExec {
    fn drop(&mut self) {
        let _ = self.dev.ctx.bind_to_thread();
        let _ = self.stream.synchronize();
        let pool = std::mem::take(&mut *self.pinned.lock().unwrap_or_else(|e| e.into_inner()));
        for p in pool.free.into_iter().chain(pool.in_flight.into_values()) {
            // SAFETY: every queued copy has completed (synchronised above); each buffer and
            // event is freed once.
            unsafe {
                let _ = result::free_host(p.ptr as *mut c_void);
                let _ = result::event::destroy(p.event as sys::CUevent);
            }
        }
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

    fn htod_async(&self, dst: u64, src: &[u8]) -> Result<()> {
        self.ctx()?;
        let p = self.take_pinned(src.len())?;
        // SAFETY: p.ptr holds p.bytes >= src.len() writable bytes no copy is using (its event
        // completed), and does not overlap src.
        let staged = unsafe {
            std::ptr::copy_nonoverlapping(src.as_ptr(), p.ptr as *mut u8, src.len());
            std::slice::from_raw_parts(p.ptr as *const u8, src.len())
        };
        // SAFETY: dst..dst+len lies in a live allocation (DevBuf checks the range); the pinned
        // source stays untouched until the event recorded below has completed.
        let r = unsafe { result::memcpy_htod_async(dst, staged, self.stream.cu_stream()) }
            .map_err(driver("queueing a copy to the device"))
            .and_then(|()| self.record(&p));
        self.pinned
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .free
            .push(p);
        r
    }

    fn dtoh_async(&self, src: u64, bytes: usize) -> Result<Ticket> {
        self.ctx()?;
        let p = self.take_pinned(bytes)?;
        // SAFETY: the pinned buffer has p.bytes >= bytes bytes and no copy in flight; src..src+
        // bytes lies in a live allocation (DevBuf checks the range). The buffer is not read
        // before `wait` has synchronised on the event recorded below.
        let r = unsafe {
            let dst = std::slice::from_raw_parts_mut(p.ptr as *mut u8, bytes);
            result::memcpy_dtoh_async(dst, src, self.stream.cu_stream())
        }
        .map_err(driver("queueing a copy to the host"))
        .and_then(|()| self.record(&p));
        let mut pool = self.pinned.lock().unwrap_or_else(|e| e.into_inner());
        if let Err(e) = r {
            pool.free.push(p);
            return Err(e);
        }
        let id = pool.next_id;
        pool.next_id += 1;
        pool.in_flight.insert(id, p);
        Ok(Ticket {
            id,
            bytes,
            data: None,
        })
    }

    fn wait(&self, ticket: Ticket, dst: &mut [u8]) -> Result<()> {
        self.ctx()?;
        if ticket.bytes != dst.len() {
            return Err(Error::BadInput {
                what: format!(
                    "a copy of {} bytes read into {} bytes",
                    ticket.bytes,
                    dst.len()
                ),
            });
        }
        let p = self
            .pinned
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .in_flight
            .remove(&ticket.id)
            .ok_or_else(|| Error::BadInput {
                what: "a copy that is not in flight".into(),
            })?;
        // SAFETY: the event was recorded after the copy into this buffer.
        let r = unsafe { result::event::synchronize(p.event as sys::CUevent) }
            .map_err(driver("waiting for a copy to the host"));
        if r.is_ok() {
            // SAFETY: the copy has completed; the buffer holds at least dst.len() bytes.
            unsafe {
                std::ptr::copy_nonoverlapping(p.ptr as *const u8, dst.as_mut_ptr(), dst.len())
            };
        }
        self.pinned
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .free
            .push(p);
        r
    }
}
