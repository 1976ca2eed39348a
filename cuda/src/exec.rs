//! The device interface the GPU backend is written against, with two implementations: a CUDA
//! device ([`crate::cuda_exec::CudaExec`]) and the CPU emulator ([`crate::emu::EmuExec`]),
//! which compiles the same kernel sources as C++ and runs them on the host. Everything above
//! this layer (buffers, launches, the training passes of [`crate::engine`]) is the same code
//! for both, so the emulator checks it on machines without a GPU.
//!
//! Invariants:
//! - Device memory is only reached through [`DevBuf`]s (typed, sized, freed on drop) and
//!   kernel arguments built from them with checked extents ([`DevBuf::slice`]), so a launch
//!   never receives a pointer outside a live allocation from the host's side.
//! - Launches take typed argument lists, one struct per entry point ([`crate::args`], through
//!   [`launch_typed`]), and every launch checks its arguments against the entry point's declared
//!   parameter kinds ([`crate::kernel::Entry`]); the PTX test checks those declarations against the compiled
//!   PTX and the emulator against the C++ signatures, so a launch with the wrong argument
//!   order or type is an error, not undefined behaviour.
//! - Operations are ordered (one stream); [`Exec::sync`] waits for all of them.

use std::ffi::c_void;
use std::fmt;
use std::marker::PhantomData;
use std::sync::Arc;

use crate::kernel::{ArgKind, Entry, Kernel};
use crate::nvrtc::Define;
use crate::{Error, Result};

/// A loaded kernel function: its entry (name and parameter kinds) and the backend's handle.
#[derive(Clone)]
pub struct Func {
    /// The entry point.
    pub entry: &'static Entry,
    /// Backend handle (a `CUfunction` or the emulator's entry address).
    pub handle: u64,
    /// Backend data (the emulator's module).
    pub(crate) aux: u64,
    /// Keeps the module alive as long as the function.
    pub(crate) _module: Arc<dyn Send + Sync>,
}

impl fmt::Debug for Func {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Func({})", self.entry.name)
    }
}

/// Grid, block and dynamic shared memory of a launch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LaunchCfg {
    /// Blocks per grid dimension.
    pub grid: (u32, u32, u32),
    /// Threads per block dimension.
    pub block: (u32, u32, u32),
    /// Dynamic shared memory in bytes.
    pub smem: u32,
}

impl LaunchCfg {
    /// A 1-D launch of `blocks` blocks of `threads` threads with `smem` bytes.
    pub fn linear(blocks: u32, threads: u32, smem: u32) -> LaunchCfg {
        LaunchCfg {
            grid: (blocks.max(1), 1, 1),
            block: (threads, 1, 1),
            smem,
        }
    }
}

/// One kernel argument.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Arg {
    /// A device pointer (0: null) to elements of the given kind.
    Ptr(ArgKind, u64),
    /// `float`.
    F32(f32),
    /// `unsigned int`.
    U32(u32),
    /// `int`.
    I32(i32),
    /// `unsigned long long`.
    U64(u64),
}

impl Arg {
    /// The kind the kernel must declare for this argument.
    pub fn kind(&self) -> ArgKind {
        match self {
            Arg::Ptr(k, _) => *k,
            Arg::F32(_) => ArgKind::F32,
            Arg::U32(_) => ArgKind::U32,
            Arg::I32(_) => ArgKind::I32,
            Arg::U64(_) => ArgKind::U64,
        }
    }

    /// A null pointer of `T`'s kind (for optional kernel parameters).
    pub fn null<T: Elem>() -> Arg {
        Arg::Ptr(T::PTR, 0)
    }
}

/// A backend: device memory, kernel modules and launches.
pub trait Exec: Send + Sync + fmt::Debug {
    /// What this backend is, for messages (`NVIDIA H200 (compute_90)`, `CPU emulator (g++)`).
    fn describe(&self) -> String;
    /// The architecture kernels are compiled for (`compute_90`; the emulator's is `emu`).
    fn arch(&self) -> String;
    /// Allocate `bytes` (contents unspecified); returns the device address.
    fn alloc(&self, bytes: usize) -> Result<u64>;
    /// Free an allocation of `bytes` at `ptr` (after the work queued before it has finished).
    fn free(&self, ptr: u64, bytes: usize);
    /// Copy `src` to device address `dst`; `src` may be reused when this returns.
    fn htod(&self, dst: u64, src: &[u8]) -> Result<()>;
    /// Copy from device address `src` into `dst`, waiting for the work queued before it.
    fn dtoh(&self, src: u64, dst: &mut [u8]) -> Result<()>;
    /// Copy `bytes` between device addresses.
    fn dtod(&self, dst: u64, src: u64, bytes: usize) -> Result<()>;
    /// Set `bytes` at `dst` to zero.
    fn zero(&self, dst: u64, bytes: usize) -> Result<()>;
    /// Compile `kernel` with `defines` and load it; one [`Func`] per entry point, in
    /// [`Kernel::entries`] order.
    fn load(&self, kernel: Kernel, defines: &[Define]) -> Result<Vec<Func>>;
    /// Launch `f` with CUDA-style parameters (one pointer to each argument's value).
    ///
    /// # Safety
    /// `params` must match `f`'s parameters in number, order and type, and every pointer
    /// argument must be null or point into a live allocation of this backend large enough for
    /// what the kernel accesses.
    unsafe fn launch_raw(
        &self,
        f: &Func,
        cfg: &LaunchCfg,
        params: &mut [*mut c_void],
    ) -> Result<()>;
    /// Wait for everything queued so far.
    fn sync(&self) -> Result<()>;

    /// Queue a copy of `src` to `dst` behind the work queued so far and return without waiting
    /// for it (`src` may be reused at once: the CUDA backend stages it in pinned memory).
    /// Default: [`Exec::htod`].
    fn htod_async(&self, dst: u64, src: &[u8]) -> Result<()> {
        self.htod(dst, src)
    }

    /// Queue a copy of `bytes` at `src` to the host behind the work queued so far; the data is
    /// read with [`Exec::wait`], which waits for this copy only (the CUDA backend copies into
    /// pinned memory and records an event). Default: a synchronous copy.
    fn dtoh_async(&self, src: u64, bytes: usize) -> Result<Ticket> {
        let mut data = vec![0u8; bytes];
        self.dtoh(src, &mut data)?;
        Ok(Ticket {
            id: 0,
            bytes,
            data: Some(data),
        })
    }

    /// The data of a queued device-to-host copy, into `dst` (its length), waiting for it.
    fn wait(&self, ticket: Ticket, dst: &mut [u8]) -> Result<()> {
        match ticket.data {
            Some(d) if d.len() == dst.len() => {
                dst.copy_from_slice(&d);
                Ok(())
            }
            _ => Err(Error::BadInput {
                what: format!(
                    "a copy of {} bytes read into {} bytes",
                    ticket.bytes,
                    dst.len()
                ),
            }),
        }
    }
}

/// A queued device-to-host copy ([`Exec::dtoh_async`]).
#[derive(Debug)]
pub struct Ticket {
    /// Backend identifier of the copy.
    pub(crate) id: u64,
    /// Bytes copied.
    pub(crate) bytes: usize,
    /// The data, when the backend copied synchronously.
    pub(crate) data: Option<Vec<u8>>,
}

/// Launch `f` with `args`, checked against its declared parameter kinds.
pub fn launch(exec: &dyn Exec, f: &Func, cfg: &LaunchCfg, args: &[Arg]) -> Result<()> {
    let got: String = args.iter().map(|a| a.kind().code()).collect();
    let declared = f.entry.sig();
    if got != declared {
        return Err(Error::BadInput {
            what: format!(
                "launch of {} with arguments ({got}), declared ({declared}: {})",
                f.entry.name,
                f.entry.param_names()
            ),
        });
    }
    if cfg.block.0 == 0 || cfg.block.1 == 0 || cfg.block.2 == 0 {
        return Err(Error::BadInput {
            what: format!("launch of {}: empty block", f.entry.name),
        });
    }
    // One slot per argument, holding its value; params point at the slots.
    let mut slots: Vec<u64> = args
        .iter()
        .map(|a| match *a {
            Arg::Ptr(_, p) => p,
            Arg::F32(v) => u64::from(v.to_bits()),
            Arg::U32(v) => u64::from(v),
            Arg::I32(v) => u64::from(v as u32),
            Arg::U64(v) => v,
        })
        .collect();
    let mut params: Vec<*mut c_void> = slots
        .iter_mut()
        .map(|s| (s as *mut u64).cast::<c_void>())
        .collect();
    // SAFETY: the arguments match the entry's declared kinds (checked above; the declarations
    // are checked against the compiled kernels by the PTX test and by the emulator), 4-byte
    // values sit in the low bytes of their 8-byte slot (little-endian, as every CUDA host), and
    // pointers come from DevBuf::slice/arg, i.e. live allocations of this backend with checked
    // extents, or null where the kernel accepts null.
    unsafe { exec.launch_raw(f, cfg, &mut params) }
}

/// A typed device pointer (an extent-checked part of a [`DevBuf`], or null): the value of a
/// kernel's pointer parameter in its typed argument list ([`crate::args`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ptr<T: Elem> {
    addr: u64,
    _t: PhantomData<T>,
}

impl<T: Elem> Ptr<T> {
    /// The null pointer (for optional kernel parameters).
    pub const NULL: Ptr<T> = Ptr {
        addr: 0,
        _t: PhantomData,
    };
}

/// The Rust types of kernel parameters: each is one [`ArgKind`] and becomes one [`Arg`].
pub trait ArgType: Copy {
    /// The kernel parameter's kind.
    const KIND: ArgKind;
    /// The argument, or an error naming `entry`'s parameter `param` when the value does not fit.
    fn to_arg(self, entry: &str, param: &str) -> Result<Arg>;
}

impl<T: Elem> ArgType for Ptr<T> {
    const KIND: ArgKind = T::PTR;
    fn to_arg(self, _: &str, _: &str) -> Result<Arg> {
        Ok(Arg::Ptr(T::PTR, self.addr))
    }
}

/// A size or index: an `unsigned int` parameter, checked to fit in 32 bits.
impl ArgType for usize {
    const KIND: ArgKind = ArgKind::U32;
    fn to_arg(self, entry: &str, param: &str) -> Result<Arg> {
        u32::try_from(self)
            .map(Arg::U32)
            .map_err(|_| Error::BadInput {
                what: format!("{entry}: {param} = {self} does not fit in 32 bits"),
            })
    }
}

impl ArgType for u32 {
    const KIND: ArgKind = ArgKind::U32;
    fn to_arg(self, _: &str, _: &str) -> Result<Arg> {
        Ok(Arg::U32(self))
    }
}

impl ArgType for f32 {
    const KIND: ArgKind = ArgKind::F32;
    fn to_arg(self, _: &str, _: &str) -> Result<Arg> {
        Ok(Arg::F32(self))
    }
}

/// The typed argument list of one kernel entry point: a struct whose fields are the kernel's
/// parameters, by name and in order ([`crate::args`]).
pub trait KernelArgs {
    /// The entry point: its name and named, typed parameters.
    const ENTRY: Entry;
    /// The arguments in parameter order.
    fn to_args(&self) -> Result<Vec<Arg>>;
}

/// Launch `f` with the typed argument list `args`: `f` must be `A`'s entry point, and the
/// arguments are checked against its declared parameters as by [`launch`].
pub fn launch_typed<A: KernelArgs>(
    exec: &dyn Exec,
    f: &Func,
    cfg: &LaunchCfg,
    args: &A,
) -> Result<()> {
    if f.entry.name != A::ENTRY.name {
        return Err(Error::BadInput {
            what: format!(
                "the arguments of {} given to {}",
                A::ENTRY.name,
                f.entry.name
            ),
        });
    }
    launch(exec, f, cfg, &args.to_args()?)
}

/// Element types of device buffers.
pub trait Elem: bytemuck::Pod + Default + fmt::Debug + Send + Sync {
    /// The pointer kind of a buffer of these elements.
    const PTR: ArgKind;
}

/// `impl Elem` for each `type => pointer kind` pair.
macro_rules! elem_types {
    ($($t:ty => $kind:ident),* $(,)?) => {
        $(impl Elem for $t {
            const PTR: ArgKind = ArgKind::$kind;
        })*
    };
}

elem_types!(
    f32 => PtrF32,
    f64 => PtrF64,
    u8 => PtrU8,
    u16 => PtrU16,
    u32 => PtrU32,
    i32 => PtrI32,
    u64 => PtrU64,
);

/// A typed device buffer of `len` elements, freed on drop.
pub struct DevBuf<T: Elem> {
    exec: Arc<dyn Exec>,
    ptr: u64,
    len: usize,
    _t: PhantomData<T>,
}

impl<T: Elem> fmt::Debug for DevBuf<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DevBuf<{:?}>({} elements)", T::PTR, self.len)
    }
}

impl<T: Elem> DevBuf<T> {
    /// `len` elements, contents unspecified.
    pub fn uninit(exec: &Arc<dyn Exec>, len: usize) -> Result<DevBuf<T>> {
        let bytes = len
            .checked_mul(std::mem::size_of::<T>())
            .ok_or_else(|| Error::BadInput {
                what: format!("a buffer of {len} elements overflows"),
            })?;
        // Zero-length buffers get one element so every buffer has a distinct valid address.
        let ptr = exec.alloc(bytes.max(std::mem::size_of::<T>()))?;
        Ok(DevBuf {
            exec: exec.clone(),
            ptr,
            len,
            _t: PhantomData,
        })
    }

    /// `len` zeros.
    pub fn zeros(exec: &Arc<dyn Exec>, len: usize) -> Result<DevBuf<T>> {
        let b = Self::uninit(exec, len)?;
        b.fill_zero()?;
        Ok(b)
    }

    /// A copy of `host`.
    pub fn from_host(exec: &Arc<dyn Exec>, host: &[T]) -> Result<DevBuf<T>> {
        let b = Self::uninit(exec, host.len())?;
        b.upload(host)?;
        Ok(b)
    }

    /// Number of elements.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the buffer has no elements.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Overwrite the whole buffer with `host` (same length).
    pub fn upload(&self, host: &[T]) -> Result<()> {
        self.upload_at(0, host)
    }

    /// Overwrite elements `off..off + host.len()`.
    pub fn upload_at(&self, off: usize, host: &[T]) -> Result<()> {
        self.check(off, host.len())?;
        if host.is_empty() {
            return Ok(());
        }
        self.exec.htod(self.addr(off), bytemuck::cast_slice(host))
    }

    /// Queue an overwrite of elements `off..off + host.len()` ([`Exec::htod_async`]).
    pub fn upload_async_at(&self, off: usize, host: &[T]) -> Result<()> {
        self.check(off, host.len())?;
        if host.is_empty() {
            return Ok(());
        }
        self.exec
            .htod_async(self.addr(off), bytemuck::cast_slice(host))
    }

    /// Queue a copy of elements `off..off + len` to the host ([`Exec::dtoh_async`]); read it
    /// with [`DevBuf::wait_into`].
    pub fn download_async(&self, off: usize, len: usize) -> Result<Ticket> {
        self.check(off, len)?;
        self.exec
            .dtoh_async(self.addr(off), len * std::mem::size_of::<T>())
    }

    /// The data of a queued copy from [`DevBuf::download_async`] into `out`.
    pub fn wait_into(&self, ticket: Ticket, out: &mut [T]) -> Result<()> {
        self.exec.wait(ticket, bytemuck::cast_slice_mut(out))
    }

    /// The whole buffer on the host (waits for queued work).
    pub fn download(&self) -> Result<Vec<T>> {
        let mut out = vec![T::default(); self.len];
        self.download_into(0, &mut out)?;
        Ok(out)
    }

    /// Elements `off..off + out.len()` into `out` (waits for queued work).
    pub fn download_into(&self, off: usize, out: &mut [T]) -> Result<()> {
        self.check(off, out.len())?;
        if out.is_empty() {
            return Ok(());
        }
        self.exec
            .dtoh(self.addr(off), bytemuck::cast_slice_mut(out))
    }

    /// Set every element to zero.
    pub fn fill_zero(&self) -> Result<()> {
        self.zero_range(0, self.len)
    }

    /// Set elements `off..off + len` to zero.
    pub fn zero_range(&self, off: usize, len: usize) -> Result<()> {
        self.check(off, len)?;
        if len == 0 {
            return Ok(());
        }
        self.exec
            .zero(self.addr(off), len * std::mem::size_of::<T>())
    }

    /// Copy elements `src_off..src_off + len` of `src` to `off..` of this buffer.
    pub fn copy_from(&self, off: usize, src: &DevBuf<T>, src_off: usize, len: usize) -> Result<()> {
        self.check(off, len)?;
        src.check(src_off, len)?;
        if len == 0 {
            return Ok(());
        }
        self.exec.dtod(
            self.addr(off),
            src.addr(src_off),
            len * std::mem::size_of::<T>(),
        )
    }

    /// The whole buffer as a kernel argument.
    pub fn arg(&self) -> Arg {
        Arg::Ptr(T::PTR, self.ptr)
    }

    /// Elements `off..off + len` as a kernel argument (the kernel may access exactly those).
    pub fn slice(&self, off: usize, len: usize) -> Result<Arg> {
        self.check(off, len)?;
        Ok(Arg::Ptr(T::PTR, self.addr(off)))
    }

    /// The whole buffer as a typed kernel argument.
    pub fn ptr(&self) -> Ptr<T> {
        Ptr {
            addr: self.ptr,
            _t: PhantomData,
        }
    }

    /// Elements `off..off + len` as a typed kernel argument (the kernel may access exactly
    /// those).
    pub fn at(&self, off: usize, len: usize) -> Result<Ptr<T>> {
        self.check(off, len)?;
        Ok(Ptr {
            addr: self.addr(off),
            _t: PhantomData,
        })
    }

    /// Elements `off..` (the rest of the buffer) as a typed kernel argument.
    pub fn rest(&self, off: usize) -> Result<Ptr<T>> {
        self.at(off, self.len.saturating_sub(off))
    }

    fn addr(&self, off: usize) -> u64 {
        self.ptr + (off * std::mem::size_of::<T>()) as u64
    }

    fn check(&self, off: usize, len: usize) -> Result<()> {
        match off.checked_add(len) {
            Some(end) if end <= self.len => Ok(()),
            _ => Err(Error::BadInput {
                what: format!(
                    "range {off}..{off}+{len} outside a buffer of {} elements",
                    self.len
                ),
            }),
        }
    }
}

impl<T: Elem> Drop for DevBuf<T> {
    fn drop(&mut self) {
        let bytes = (self.len * std::mem::size_of::<T>()).max(std::mem::size_of::<T>());
        self.exec.free(self.ptr, bytes);
    }
}
