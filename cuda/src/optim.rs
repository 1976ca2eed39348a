//! Optimiser updates on the device (`kernels/optim.cu`) over separate fast and slow buffers.
//!
//! Each parameter group lives in its own [`DeviceGroup`] (parameters, gradients, Adam moments),
//! so the inner loop launches over the fast group only, restricted to the active modules'
//! ranges, and the outer loop over the slow group; nothing else is touched. The scalars of a
//! step are computed on the host exactly as `core::nn::optim::Adam::update_ranges_at` does
//! ([`AdamScalars`]); [`adam_ranges_emulated`] is the kernel's per-element arithmetic in Rust,
//! checked bit for bit against the CPU reference on any machine.

use std::sync::Arc;

use cudarc::driver::{
    CudaFunction, CudaModule, CudaSlice, CudaStream, LaunchConfig, PushKernelArg,
};
use metarim_core::nn::optim::{check_ranges, Adam, Range, Sgd};

use crate::device::CudaDevice;
use crate::error::driver;
use crate::kernel::{optim_entry, Kernel};
use crate::{nvrtc, Error, Result};

/// The f32 scalars of one Adam step, rounded from f64 exactly as the CPU reference does.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AdamScalars {
    /// `-(lr / (1 - beta1^t))`.
    pub neg_step: f32,
    /// `sqrt(1 - beta2^t)`.
    pub bc2_sqrt: f32,
    /// `1 - beta1`.
    pub w1: f32,
    /// `beta2`.
    pub b2: f32,
    /// `1 - beta2`.
    pub w2: f32,
    /// `eps`.
    pub eps: f32,
}

impl AdamScalars {
    /// The scalars of step `t` (>= 1) of `adam`.
    pub fn new(adam: &Adam, t: u64) -> Result<AdamScalars> {
        if t == 0 {
            return Err(Error::BadInput {
                what: "adam step count must be >= 1".to_string(),
            });
        }
        let tf = t as f64;
        // `libm::pow`, as the CPU reference: `f64::powf` may differ in the last bit.
        let bc1 = 1.0 - libm::pow(adam.beta1, tf);
        let bc2 = 1.0 - libm::pow(adam.beta2, tf);
        Ok(AdamScalars {
            neg_step: (-(adam.lr / bc1)) as f32,
            bc2_sqrt: libm::sqrt(bc2) as f32,
            w1: (1.0 - adam.beta1) as f32,
            b2: adam.beta2 as f32,
            w2: (1.0 - adam.beta2) as f32,
            eps: adam.eps as f32,
        })
    }
}

/// Ranges as the kernels take them: start offsets and an exclusive prefix sum of the lengths
/// (`prefix[r]` selected elements precede range `r`; `prefix[len]` is the total).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RangeTable {
    /// First element of each range.
    pub offsets: Vec<u64>,
    /// Exclusive prefix sum of the lengths, one longer than `offsets`.
    pub prefix: Vec<u64>,
}

impl RangeTable {
    /// The table of `ranges` over a buffer of `n` elements; the ranges are checked with the CPU
    /// reference's rule (inside `n`, disjoint).
    pub fn new(n: usize, ranges: &[Range]) -> Result<RangeTable> {
        check_ranges(n, ranges)?;
        let mut offsets = Vec::with_capacity(ranges.len());
        let mut prefix = Vec::with_capacity(ranges.len() + 1);
        let mut total = 0u64;
        prefix.push(0);
        for &(off, len) in ranges {
            offsets.push(off as u64);
            total += len as u64;
            prefix.push(total);
        }
        Ok(RangeTable { offsets, prefix })
    }

    /// Number of selected elements.
    pub fn total(&self) -> u64 {
        self.prefix.last().copied().unwrap_or(0)
    }

    /// The buffer element of selected element `i` (the kernel's `range_element`).
    pub fn element(&self, i: u64) -> usize {
        let (mut lo, mut hi) = (0usize, self.offsets.len());
        while hi - lo > 1 {
            let mid = lo + (hi - lo) / 2;
            if self.prefix[mid] <= i {
                lo = mid;
            } else {
                hi = mid;
            }
        }
        (self.offsets[lo] + (i - self.prefix[lo])) as usize
    }
}

/// The kernel `adam_ranges` executed on the host, element by element in the kernel's order of
/// operations. Lengths must match (checked).
pub fn adam_ranges_emulated(
    s: &AdamScalars,
    table: &RangeTable,
    params: &mut [f32],
    grads: &[f32],
    m: &mut [f32],
    v: &mut [f32],
) -> Result<()> {
    let n = params.len();
    if grads.len() != n || m.len() != n || v.len() != n {
        return Err(Error::BadInput {
            what: format!(
                "adam buffers differ in length: params {n}, grads {}, m {}, v {}",
                grads.len(),
                m.len(),
                v.len()
            ),
        });
    }
    if table.offsets.is_empty() {
        return Ok(());
    }
    for i in 0..table.total() {
        let e = table.element(i);
        let g = grads[e];
        let mut mi = m[e];
        mi += s.w1 * (g - mi);
        let vi = s.b2 * v[e] + s.w2 * g * g;
        let denom = vi.sqrt() / s.bc2_sqrt + s.eps;
        m[e] = mi;
        v[e] = vi;
        params[e] += s.neg_step * mi / denom;
    }
    Ok(())
}

/// One parameter group on the device: parameters, gradients and Adam's moments, all the same
/// length.
#[derive(Debug)]
pub struct DeviceGroup {
    /// Parameters.
    pub params: CudaSlice<f32>,
    /// Gradients.
    pub grads: CudaSlice<f32>,
    /// Adam first moments.
    pub m: CudaSlice<f32>,
    /// Adam second moments.
    pub v: CudaSlice<f32>,
}

/// A group's four buffers copied back to the host.
#[derive(Clone, Debug, PartialEq)]
pub struct HostGroup {
    /// Parameters.
    pub params: Vec<f32>,
    /// Gradients.
    pub grads: Vec<f32>,
    /// Adam first moments.
    pub m: Vec<f32>,
    /// Adam second moments.
    pub v: Vec<f32>,
}

impl DeviceGroup {
    /// Upload a group (all four slices must have the same length).
    pub fn upload(stream: &Arc<CudaStream>, host: &HostGroup) -> Result<DeviceGroup> {
        let n = host.params.len();
        if host.grads.len() != n || host.m.len() != n || host.v.len() != n {
            return Err(Error::BadInput {
                what: "a group's params, grads, m and v must have the same length".to_string(),
            });
        }
        let up = |x: &Vec<f32>| stream.clone_htod(x).map_err(driver("uploading a group"));
        Ok(DeviceGroup {
            params: up(&host.params)?,
            grads: up(&host.grads)?,
            m: up(&host.m)?,
            v: up(&host.v)?,
        })
    }

    /// Copy the group back to the host.
    pub fn download(&self, stream: &Arc<CudaStream>) -> Result<HostGroup> {
        let down = |x: &CudaSlice<f32>| stream.clone_dtoh(x).map_err(driver("downloading a group"));
        Ok(HostGroup {
            params: down(&self.params)?,
            grads: down(&self.grads)?,
            m: down(&self.m)?,
            v: down(&self.v)?,
        })
    }

    /// Number of parameters.
    pub fn len(&self) -> usize {
        self.params.len()
    }

    /// Whether the group is empty.
    pub fn is_empty(&self) -> bool {
        self.params.len() == 0
    }
}

/// The fast group (RIM modules' own weights, inner loop) and the slow group (attention and the
/// rest, outer loop), in separate device buffers.
#[derive(Debug)]
pub struct FastSlow {
    /// The fast group.
    pub fast: DeviceGroup,
    /// The slow group.
    pub slow: DeviceGroup,
}

/// Threads per block of the optimiser kernels.
const BLOCK: u32 = 256;
/// Grid cap: the kernels loop grid-stride beyond it.
const MAX_BLOCKS: u64 = 8192;

/// The optimiser kernels compiled and loaded on one device.
#[derive(Debug)]
pub struct OptimKernels {
    /// The stream launches go to.
    pub stream: Arc<CudaStream>,
    _module: Arc<CudaModule>,
    adam: CudaFunction,
    sgd: CudaFunction,
}

impl OptimKernels {
    /// Compile `optim.cu` for `dev`'s architecture and load it.
    pub fn load(dev: &CudaDevice) -> Result<OptimKernels> {
        let ptx = nvrtc::compile_ptx(Kernel::Optim, &dev.arch())?;
        let module = dev
            .ctx
            .load_module(cudarc::nvrtc::Ptx::from_src(ptx))
            .map_err(driver("loading optim.cu"))?;
        let adam = module
            .load_function(optim_entry::ADAM_RANGES)
            .map_err(driver("finding adam_ranges"))?;
        let sgd = module
            .load_function(optim_entry::SGD_RANGES)
            .map_err(driver("finding sgd_ranges"))?;
        Ok(OptimKernels {
            stream: dev.ctx.default_stream(),
            _module: module,
            adam,
            sgd,
        })
    }

    fn upload_table(&self, table: &RangeTable) -> Result<(CudaSlice<u64>, CudaSlice<u64>)> {
        let off = self
            .stream
            .clone_htod(&table.offsets)
            .map_err(driver("uploading range offsets"))?;
        let pre = self
            .stream
            .clone_htod(&table.prefix)
            .map_err(driver("uploading range prefix sums"))?;
        Ok((off, pre))
    }

    fn config(total: u64) -> LaunchConfig {
        let blocks = total.div_ceil(u64::from(BLOCK)).clamp(1, MAX_BLOCKS) as u32;
        LaunchConfig {
            grid_dim: (blocks, 1, 1),
            block_dim: (BLOCK, 1, 1),
            shared_mem_bytes: 0,
        }
    }

    fn nranges(table: &RangeTable) -> Result<u32> {
        u32::try_from(table.offsets.len()).map_err(|_| Error::BadInput {
            what: format!("{} ranges is more than a u32 holds", table.offsets.len()),
        })
    }

    /// Step `t` of `adam` on the elements of `group` in `ranges` (the same contract as
    /// `Adam::update_ranges_at`: other elements stay bit-identical). Asynchronous on
    /// [`OptimKernels::stream`].
    pub fn adam(
        &self,
        adam: &Adam,
        t: u64,
        group: &mut DeviceGroup,
        ranges: &[Range],
    ) -> Result<()> {
        let s = AdamScalars::new(adam, t)?;
        let table = RangeTable::new(group.len(), ranges)?;
        if table.total() == 0 {
            return Ok(());
        }
        let nranges = Self::nranges(&table)?;
        let (off, pre) = self.upload_table(&table)?;
        let mut b = self.stream.launch_builder(&self.adam);
        b.arg(&mut group.params)
            .arg(&group.grads)
            .arg(&mut group.m)
            .arg(&mut group.v)
            .arg(&off)
            .arg(&pre)
            .arg(&nranges)
            .arg(&s.neg_step)
            .arg(&s.bc2_sqrt)
            .arg(&s.w1)
            .arg(&s.b2)
            .arg(&s.w2)
            .arg(&s.eps);
        // SAFETY: the arguments match `adam_ranges`'s signature in kernels/optim.cu in order and
        // type (4 f32 buffers of `group.len()` elements, 2 u64 tables of `nranges` and
        // `nranges + 1` entries, a u32, 6 f32); every range was checked to lie inside the
        // buffers and not to overlap, so each thread writes distinct in-bounds elements.
        unsafe { b.launch(Self::config(table.total())) }
            .map_err(driver("launching adam_ranges"))?;
        Ok(())
    }

    /// `sgd` on the elements of `params` in `ranges` (as `Sgd::step_ranges`). Asynchronous on
    /// [`OptimKernels::stream`].
    pub fn sgd(
        &self,
        sgd: &Sgd,
        params: &mut CudaSlice<f32>,
        grads: &CudaSlice<f32>,
        ranges: &[Range],
    ) -> Result<()> {
        if grads.len() != params.len() {
            return Err(Error::BadInput {
                what: format!(
                    "sgd: {} gradients for {} parameters",
                    grads.len(),
                    params.len()
                ),
            });
        }
        let table = RangeTable::new(params.len(), ranges)?;
        if table.total() == 0 {
            return Ok(());
        }
        let nranges = Self::nranges(&table)?;
        let (off, pre) = self.upload_table(&table)?;
        let neg_lr = (-sgd.lr) as f32;
        let mut b = self.stream.launch_builder(&self.sgd);
        b.arg(params)
            .arg(grads)
            .arg(&off)
            .arg(&pre)
            .arg(&nranges)
            .arg(&neg_lr);
        // SAFETY: the arguments match `sgd_ranges`'s signature in kernels/optim.cu in order and
        // type; the ranges were checked to lie inside both buffers and not to overlap.
        unsafe { b.launch(Self::config(table.total())) }.map_err(driver("launching sgd_ranges"))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use metarim_core::rng::Pcg32;
    use proptest::prelude::*;

    fn random(rng: &mut Pcg32, n: usize, scale: f32) -> Vec<f32> {
        (0..n)
            .map(|_| (rng.gen_f32() * 2.0 - 1.0) * scale)
            .collect()
    }

    /// Random disjoint ranges over `n` elements (some empty).
    fn random_ranges(rng: &mut Pcg32, n: usize) -> Vec<Range> {
        let mut cuts: Vec<usize> = (0..8).map(|_| rng.below(n as u32 + 1) as usize).collect();
        cuts.sort_unstable();
        let mut out: Vec<Range> = cuts
            .chunks(2)
            .filter(|c| c.len() == 2)
            .map(|c| (c[0], c[1] - c[0]))
            .collect();
        shuffle(rng, &mut out);
        out
    }

    fn shuffle<T>(rng: &mut Pcg32, xs: &mut [T]) {
        for i in (1..xs.len()).rev() {
            let j = rng.below(i as u32 + 1) as usize;
            xs.swap(i, j);
        }
    }

    proptest! {
        /// The kernel's arithmetic (scalars, range mapping, order of operations) equals the CPU
        /// reference bit for bit, and leaves elements outside the ranges untouched.
        #[test]
        fn emulated_kernel_matches_cpu_adam_bit_for_bit(
            seed in any::<u64>(),
            n in 1usize..400,
            t in 1u64..2000,
            lr in 1e-5f64..1e-1,
        ) {
            let mut rng = Pcg32::new(seed);
            let adam = Adam::new(lr, 0.9, 0.999, 1e-5);
            let ranges = random_ranges(&mut rng, n);
            let p0 = random(&mut rng, n, 1.0);
            let g = random(&mut rng, n, 0.1);
            let m0 = random(&mut rng, n, 0.01);
            let v0: Vec<f32> = random(&mut rng, n, 0.01).iter().map(|x| x * x).collect();

            let (mut p_cpu, mut m_cpu, mut v_cpu) = (p0.clone(), m0.clone(), v0.clone());
            adam.update_ranges_at(t, &mut p_cpu, &g, &mut m_cpu, &mut v_cpu, &ranges).unwrap();

            let (mut p, mut m, mut v) = (p0.clone(), m0.clone(), v0.clone());
            let s = AdamScalars::new(&adam, t).unwrap();
            let table = RangeTable::new(n, &ranges).unwrap();
            adam_ranges_emulated(&s, &table, &mut p, &g, &mut m, &mut v).unwrap();

            let bits = |x: &[f32]| x.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
            prop_assert_eq!(bits(&p), bits(&p_cpu));
            prop_assert_eq!(bits(&m), bits(&m_cpu));
            prop_assert_eq!(bits(&v), bits(&v_cpu));
        }
    }

    #[test]
    fn range_table_maps_every_selected_element_once() {
        let ranges = [(10, 3), (0, 0), (2, 4), (20, 1)];
        let t = RangeTable::new(30, &ranges).unwrap();
        let got: Vec<usize> = (0..t.total()).map(|i| t.element(i)).collect();
        assert_eq!(got, vec![10, 11, 12, 2, 3, 4, 5, 20]);
    }

    #[test]
    fn bad_ranges_and_step_counts_are_errors() {
        assert!(RangeTable::new(10, &[(0, 5), (4, 2)]).is_err());
        assert!(RangeTable::new(10, &[(8, 3)]).is_err());
        assert!(RangeTable::new(10, &[(usize::MAX, 2)]).is_err());
        assert!(AdamScalars::new(&Adam::babyai(), 0).is_err());
        let s = AdamScalars::new(&Adam::babyai(), 1).unwrap();
        let t = RangeTable::new(3, &[(0, 3)]).unwrap();
        let (mut p, mut m, mut v) = (vec![0.0; 3], vec![0.0; 3], vec![0.0; 2]);
        assert!(adam_ranges_emulated(&s, &t, &mut p, &[0.0; 3], &mut m, &mut v).is_err());
    }
}
