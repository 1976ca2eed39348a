//! The CPU emulator of the kernels: the sources of `kernels/` compiled as C++17 with the shim
//! `cuda/emu/emu.h` and the runtime `cuda/emu/runtime.cpp` (cooperative fibers for a block's
//! threads, `__syncthreads` as phase boundaries), loaded as a shared library and driven through
//! the same [`Exec`] interface as a CUDA device.
//!
//! What running a kernel here verifies: its arithmetic and indexing (every thread's work, the
//! phases between barriers, the layouts), that it does not depend on the order of threads
//! between barriers (tests run under ascending, descending and shuffled orders and compare bit
//! for bit), that no thread returns while others wait at a barrier, that it reads no shared
//! memory it did not write (filled with NaN), that it writes nothing outside its buffers (guard
//! bytes around every allocation, checked after every launch), and that the host's launch code
//! passes arguments matching the kernel's C++ signature.
//!
//! What it does not verify: anything about real hardware: CUDA's math library (`expf`, `tanhf`
//! and `logf` here are glibc's), warp scheduling and memory-model effects between blocks (blocks
//! run one after another), occupancy, register pressure, launch limits beyond 1024 threads, and
//! speed. `cuda/tests/parity.rs` covers those on a GPU.
//!
//! Needs a C++17 compiler: `$METARIM_CXX`, else `$CXX`, else `c++` / `g++` on `PATH`. Compiled
//! libraries are cached under `$METARIM_EMU_CACHE` (default: the system temp directory), keyed
//! by a hash of the source, the flags and the compiler's version.

use std::collections::BTreeMap;
use std::ffi::{c_char, c_void, CStr};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use crate::exec::{Exec, Func, LaunchCfg};
use crate::kernel::Kernel;
use crate::nvrtc::Define;
use crate::{Error, Result};

const SHIM: &str = include_str!("../emu/emu.h");
const RUNTIME: &str = include_str!("../emu/runtime.cpp");

/// Bytes of guard on each side of an allocation.
const GUARD: usize = 256;
const GUARD_BYTE: u8 = 0xA5;

/// In which order a block's threads run within each phase between barriers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ThreadOrder {
    /// Thread 0 first.
    Ascending,
    /// The last thread first.
    Descending,
    /// A pseudo-random permutation per phase (seeded).
    Shuffled(u64),
}

type LaunchFn =
    unsafe extern "C" fn(usize, u32, u32, u32, u32, u32, u32, u32, *mut *mut c_void) -> i32;
type OrderFn = unsafe extern "C" fn(i32, u64);
type SigFn = unsafe extern "C" fn() -> *const c_char;

/// One compiled kernel library.
struct EmuModule {
    _lib: libloading::Library,
    launch: LaunchFn,
    order: OrderFn,
}

// SAFETY: the library handle and the two function pointers are plain addresses; the emulator's
// state is thread-local inside the library, so calls from any thread are independent.
unsafe impl Send for EmuModule {}
// SAFETY: as above: nothing in EmuModule is mutated after loading.
unsafe impl Sync for EmuModule {}

/// The emulator backend.
#[derive(Debug)]
pub struct EmuExec {
    cxx: PathBuf,
    cxx_version: String,
    cache: PathBuf,
    /// Live allocations: address -> usable bytes (the guards lie around them).
    allocs: Mutex<BTreeMap<u64, usize>>,
    order: AtomicU32,
    seed: AtomicU64,
    modules: Mutex<Vec<Arc<EmuModuleHandle>>>,
}

/// A loaded module kept alive by the functions that came from it.
struct EmuModuleHandle(EmuModule);

impl std::fmt::Debug for EmuModuleHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("EmuModule")
    }
}

fn emu_err(what: impl Into<String>) -> Error {
    Error::Emulator { what: what.into() }
}

/// The C++ compiler the emulator would use, or why there is none.
pub fn find_compiler() -> Result<PathBuf> {
    let from_env = ["METARIM_CXX", "CXX"]
        .iter()
        .filter_map(std::env::var_os)
        .find(|v| !v.is_empty())
        .map(PathBuf::from);
    if let Some(p) = from_env {
        return Ok(p);
    }
    for name in ["c++", "g++", "clang++"] {
        let found = std::env::var_os("PATH")
            .iter()
            .flat_map(std::env::split_paths)
            .map(|d| d.join(name))
            .find(|p| p.is_file());
        if let Some(p) = found {
            return Ok(p);
        }
    }
    Err(emu_err(
        "no C++ compiler: set METARIM_CXX or CXX, or install g++",
    ))
}

/// FNV-1a, 64 bits (cache keys).
fn fnv(parts: &[&[u8]]) -> u64 {
    let mut h = 0xcbf2_9ce4_8422_2325u64;
    for p in parts {
        for b in p.iter().chain(&[0u8]) {
            h ^= u64::from(*b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
    }
    h
}

impl EmuExec {
    /// The emulator with the compiler from [`find_compiler`] (checked by running it).
    pub fn new() -> Result<EmuExec> {
        let cxx = find_compiler()?;
        let out = Command::new(&cxx)
            .arg("--version")
            .output()
            .map_err(|e| emu_err(format!("cannot run {}: {e}", cxx.display())))?;
        if !out.status.success() {
            return Err(emu_err(format!("{} --version failed", cxx.display())));
        }
        let cxx_version = String::from_utf8_lossy(&out.stdout)
            .lines()
            .next()
            .unwrap_or("")
            .to_string();
        let cache = std::env::var_os("METARIM_EMU_CACHE")
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
            .unwrap_or_else(|| std::env::temp_dir().join("metarim-emu"));
        std::fs::create_dir_all(&cache)
            .map_err(|e| emu_err(format!("cannot create {}: {e}", cache.display())))?;
        Ok(EmuExec {
            cxx,
            cxx_version,
            cache,
            allocs: Mutex::new(BTreeMap::new()),
            order: AtomicU32::new(0),
            seed: AtomicU64::new(1),
            modules: Mutex::new(Vec::new()),
        })
    }

    /// Run later launches with the threads of each block in `order` within every phase.
    pub fn set_thread_order(&self, order: ThreadOrder) {
        let (o, s) = match order {
            ThreadOrder::Ascending => (0, 1),
            ThreadOrder::Descending => (1, 1),
            ThreadOrder::Shuffled(seed) => (2, seed.max(1)),
        };
        self.seed.store(s, Ordering::SeqCst);
        self.order.store(o, Ordering::SeqCst);
    }

    /// The translation unit for `kernel` (shim, runtime, kernel, registrations).
    pub fn translation_unit(kernel: Kernel) -> String {
        let mut s = String::new();
        s.push_str("#line 1 \"emu.h\"\n");
        s.push_str(SHIM);
        s.push_str("\n#line 1 \"runtime.cpp\"\n");
        s.push_str(RUNTIME);
        s.push('\n');
        s.push_str(&kernel.nvrtc_source());
        s.push('\n');
        // One translation unit: the headers' include guards are pointless here.
        let s = s.replace("#pragma once", "");
        let mut s = s;
        for e in kernel.entries() {
            s.push_str(&format!("EMU_KERNEL({})\n", e.name));
        }
        s
    }

    fn compile(&self, kernel: Kernel, defines: &[Define]) -> Result<PathBuf> {
        let tu = Self::translation_unit(kernel);
        let mut flags: Vec<String> = [
            "-std=c++17",
            "-O2",
            "-fPIC",
            "-shared",
            "-ffp-contract=off",
            "-fno-fast-math",
            "-Wall",
            "-Wextra",
            "-Wno-unused-parameter",
            "-Wno-unused-function",
            // swapcontext returns twice; it restores every callee-saved register, so the
            // scheduler's locals are not clobbered.
            "-Wno-clobbered",
            "-Werror",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        flags.extend(defines.iter().map(|d| format!("-D{}={}", d.name, d.value)));
        let flag_text = flags.join(" ");
        let key = fnv(&[
            tu.as_bytes(),
            flag_text.as_bytes(),
            self.cxx_version.as_bytes(),
        ]);
        let stem = format!("{}-{key:016x}", kernel.file_name().trim_end_matches(".cu"));
        let lib = self.cache.join(format!("{stem}.so"));
        if lib.is_file() {
            return Ok(lib);
        }
        // Unique per process and call: several test threads may compile the same unit at once
        // (the last rename wins; the files are identical).
        static SERIAL: AtomicU64 = AtomicU64::new(0);
        let tag = format!(
            "{}-{}",
            std::process::id(),
            SERIAL.fetch_add(1, Ordering::Relaxed)
        );
        let src = self.cache.join(format!("{stem}.{tag}.cpp"));
        std::fs::write(&src, &tu)
            .map_err(|e| emu_err(format!("cannot write {}: {e}", src.display())))?;
        let tmp = self.cache.join(format!("{stem}.{tag}.so.tmp"));
        let out = Command::new(&self.cxx)
            .args(&flags)
            .arg("-o")
            .arg(&tmp)
            .arg(&src)
            .output()
            .map_err(|e| emu_err(format!("cannot run {}: {e}", self.cxx.display())))?;
        let _ = std::fs::remove_file(&src);
        if !out.status.success() {
            let _ = std::fs::remove_file(&tmp);
            return Err(Error::Compile {
                kernel: kernel.file_name(),
                options: flags,
                log: String::from_utf8_lossy(&out.stderr).into_owned(),
            });
        }
        std::fs::rename(&tmp, &lib)
            .map_err(|e| emu_err(format!("cannot move {} into place: {e}", lib.display())))?;
        Ok(lib)
    }

    fn open(path: &Path) -> Result<libloading::Library> {
        // SAFETY: the library was built by `compile` from our own sources; its initialisers
        // only set up thread-local emulator state.
        unsafe { libloading::Library::new(path) }
            .map_err(|e| emu_err(format!("cannot load {}: {e}", path.display())))
    }

    /// The usable range of the live allocation containing `ptr..ptr+len`, if any.
    fn owned(&self, ptr: u64, len: usize) -> bool {
        let allocs = self.allocs.lock().unwrap_or_else(|e| e.into_inner());
        match allocs.range(..=ptr).next_back() {
            Some((&base, &bytes)) => ptr + len as u64 <= base + bytes as u64,
            None => false,
        }
    }

    fn check_guards(&self, kernel: &str) -> Result<()> {
        let allocs = self.allocs.lock().unwrap_or_else(|e| e.into_inner());
        for (&base, &bytes) in allocs.iter() {
            let p = base as usize as *const u8;
            // SAFETY: every entry is a live allocation of GUARD + bytes + GUARD bytes starting
            // GUARD bytes before `base` (see alloc); it is only read here.
            let (front, back) = unsafe {
                (
                    std::slice::from_raw_parts(p.sub(GUARD), GUARD),
                    std::slice::from_raw_parts(p.add(bytes), GUARD),
                )
            };
            if front.iter().chain(back).any(|b| *b != GUARD_BYTE) {
                return Err(emu_err(format!(
                    "{kernel} wrote outside a buffer of {bytes} bytes (guard bytes changed)"
                )));
            }
        }
        Ok(())
    }
}

fn layout_of(bytes: usize) -> Result<std::alloc::Layout> {
    std::alloc::Layout::from_size_align(bytes + 2 * GUARD, 64)
        .map_err(|e| emu_err(format!("allocation of {bytes} bytes: {e}")))
}

impl Exec for EmuExec {
    fn describe(&self) -> String {
        format!("CPU kernel emulator ({})", self.cxx_version)
    }

    fn arch(&self) -> String {
        "emu".to_string()
    }

    fn alloc(&self, bytes: usize) -> Result<u64> {
        let layout = layout_of(bytes)?;
        // SAFETY: the layout has a non-zero size (two guards); the memory is initialised below
        // before anything reads it.
        let p = unsafe { std::alloc::alloc(layout) };
        if p.is_null() {
            return Err(emu_err(format!("out of memory allocating {bytes} bytes")));
        }
        // SAFETY: p points to bytes + 2 * GUARD writable bytes.
        unsafe {
            std::ptr::write_bytes(p, GUARD_BYTE, GUARD);
            std::ptr::write_bytes(p.add(GUARD), 0xFF, bytes);
            std::ptr::write_bytes(p.add(GUARD + bytes), GUARD_BYTE, GUARD);
        }
        // SAFETY: GUARD < the allocation's size.
        let base = unsafe { p.add(GUARD) } as usize as u64;
        self.allocs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(base, bytes);
        Ok(base)
    }

    fn free(&self, ptr: u64, _bytes: usize) {
        let bytes = self
            .allocs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&ptr);
        if let Some(layout) = bytes.and_then(|b| layout_of(b).ok()) {
            // SAFETY: ptr came from alloc with this size (looked up, then removed, so it is
            // freed once).
            unsafe { std::alloc::dealloc((ptr as usize as *mut u8).sub(GUARD), layout) };
        }
    }

    fn htod(&self, dst: u64, src: &[u8]) -> Result<()> {
        if !self.owned(dst, src.len()) {
            return Err(emu_err("copy to the device outside an allocation"));
        }
        // SAFETY: the destination range lies inside a live allocation (checked), which does not
        // overlap the host slice.
        unsafe {
            std::ptr::copy_nonoverlapping(src.as_ptr(), dst as usize as *mut u8, src.len());
        }
        Ok(())
    }

    fn dtoh(&self, src: u64, dst: &mut [u8]) -> Result<()> {
        if !self.owned(src, dst.len()) {
            return Err(emu_err("copy from the device outside an allocation"));
        }
        // SAFETY: the source range lies inside a live allocation (checked).
        unsafe {
            std::ptr::copy_nonoverlapping(src as usize as *const u8, dst.as_mut_ptr(), dst.len());
        }
        Ok(())
    }

    fn dtod(&self, dst: u64, src: u64, bytes: usize) -> Result<()> {
        if !self.owned(dst, bytes) || !self.owned(src, bytes) {
            return Err(emu_err("device copy outside an allocation"));
        }
        // SAFETY: both ranges lie inside live allocations (checked); `copy` allows overlap.
        unsafe { std::ptr::copy(src as usize as *const u8, dst as usize as *mut u8, bytes) };
        Ok(())
    }

    fn zero(&self, dst: u64, bytes: usize) -> Result<()> {
        if !self.owned(dst, bytes) {
            return Err(emu_err("device memset outside an allocation"));
        }
        // SAFETY: the range lies inside a live allocation (checked).
        unsafe { std::ptr::write_bytes(dst as usize as *mut u8, 0, bytes) };
        Ok(())
    }

    fn load(&self, kernel: Kernel, defines: &[Define]) -> Result<Vec<Func>> {
        let path = self.compile(kernel, defines)?;
        let lib = Self::open(&path)?;
        // SAFETY: the symbols are defined by runtime.cpp with exactly these signatures.
        let (launch, order) = unsafe {
            let l: libloading::Symbol<'_, LaunchFn> = lib
                .get(b"emu_launch\0")
                .map_err(|e| emu_err(format!("emu_launch: {e}")))?;
            let o: libloading::Symbol<'_, OrderFn> = lib
                .get(b"emu_set_order\0")
                .map_err(|e| emu_err(format!("emu_set_order: {e}")))?;
            (*l, *o)
        };
        let mut entries = Vec::new();
        for e in kernel.entries() {
            let sig_name = format!("emu_sig_{}\0", e.name);
            let entry_name = format!("emu_entry_{}\0", e.name);
            // SAFETY: EMU_KERNEL defines both symbols with these signatures; the signature
            // function returns a static NUL-terminated string.
            let (sig, addr) = unsafe {
                let s: libloading::Symbol<'_, SigFn> = lib
                    .get(sig_name.as_bytes())
                    .map_err(|err| emu_err(format!("{}: {err}", e.name)))?;
                let sig = CStr::from_ptr(s()).to_string_lossy().into_owned();
                let f: libloading::Symbol<'_, unsafe extern "C" fn(*mut *mut c_void)> = lib
                    .get(entry_name.as_bytes())
                    .map_err(|err| emu_err(format!("{}: {err}", e.name)))?;
                (sig, *f as usize as u64)
            };
            if sig != e.sig() {
                return Err(emu_err(format!(
                    "{}: the C++ signature is ({sig}), the host declares ({}: {})",
                    e.name,
                    e.sig(),
                    e.param_names()
                )));
            }
            entries.push((e, addr));
        }
        let module = Arc::new(EmuModuleHandle(EmuModule {
            _lib: lib,
            launch,
            order,
        }));
        self.modules
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(module.clone());
        Ok(entries
            .into_iter()
            .map(|(entry, handle)| Func {
                entry,
                handle,
                aux: Arc::as_ptr(&module) as usize as u64,
                _module: module.clone(),
            })
            .collect())
    }

    unsafe fn launch_raw(
        &self,
        f: &Func,
        cfg: &LaunchCfg,
        params: &mut [*mut c_void],
    ) -> Result<()> {
        let module = {
            let mods = self.modules.lock().unwrap_or_else(|e| e.into_inner());
            mods.iter()
                .find(|m| Arc::as_ptr(m) as usize as u64 == f.aux)
                .cloned()
                .ok_or_else(|| emu_err(format!("{}: module not loaded here", f.entry.name)))?
        };
        let m = &module.0;
        // SAFETY: emu_set_order only stores two thread-local values.
        unsafe {
            (m.order)(
                self.order.load(Ordering::SeqCst) as i32,
                self.seed.load(Ordering::SeqCst),
            )
        };
        // SAFETY: f.handle is this module's emu_entry_<name>, params match its parameters (the
        // caller's contract), and emu_launch only runs it over the grid.
        let status = unsafe {
            (m.launch)(
                f.handle as usize,
                cfg.grid.0,
                cfg.grid.1,
                cfg.grid.2,
                cfg.block.0,
                cfg.block.1,
                cfg.block.2,
                cfg.smem,
                params.as_mut_ptr(),
            )
        };
        match status {
            0 => self.check_guards(f.entry.name),
            1 => Err(emu_err(format!(
                "{}: divergent __syncthreads (threads returned while others waited)",
                f.entry.name
            ))),
            _ => Err(emu_err(format!(
                "{}: bad launch configuration {cfg:?}",
                f.entry.name
            ))),
        }
    }

    fn sync(&self) -> Result<()> {
        Ok(())
    }
}
