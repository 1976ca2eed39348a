//! The host side of the optimiser kernels (`kernels/optim.cu`), launched by
//! [`crate::engine::CudaPolicy::adam_step`].
//!
//! Each parameter group lives in its own [`DeviceGroup`] (parameters, gradients, Adam moments),
//! so the inner loop launches over the fast group only, restricted to the active modules'
//! ranges, and the outer loop over the slow group; nothing else is touched. The scalars of a
//! step are computed on the host exactly as `core::nn::optim::Adam::update_ranges_at` does
//! ([`AdamScalars`]); the tests check them, the [`RangeTable`] mapping and the kernel's
//! per-element arithmetic (written out in Rust) bit for bit against the CPU reference.

use std::sync::Arc;

use metarim_core::nn::optim::{check_ranges, Adam, Range};

use crate::exec::{DevBuf, Exec, LaunchCfg};
use crate::{Error, Result};

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
}

/// One parameter group's four buffers, all the same length: parameters, gradients and Adam's
/// moments, over any buffer type `B`. The engine keeps one per group on the device
/// ([`DeviceGroup`]); the optimiser kernel tests build one on the host (`AdamGroup<Vec<f32>>`)
/// and move it between the two with [`AdamGroup::try_map`].
#[derive(Clone, Debug, PartialEq)]
pub struct AdamGroup<B> {
    /// Parameters.
    pub params: B,
    /// Gradients.
    pub grads: B,
    /// Adam first moments.
    pub m: B,
    /// Adam second moments.
    pub v: B,
}

/// One parameter group on the device, each of the four in its own buffer.
pub type DeviceGroup = AdamGroup<DevBuf<f32>>;

impl<B> AdamGroup<B> {
    /// `f` of each buffer, in the order params, grads, m, v; the first error is returned.
    pub fn try_map<C>(&self, mut f: impl FnMut(&B) -> Result<C>) -> Result<AdamGroup<C>> {
        Ok(AdamGroup {
            params: f(&self.params)?,
            grads: f(&self.grads)?,
            m: f(&self.m)?,
            v: f(&self.v)?,
        })
    }
}

impl DeviceGroup {
    /// `n` zeros in all four buffers.
    pub fn zeros(exec: &Arc<dyn Exec>, n: usize) -> Result<DeviceGroup> {
        Ok(AdamGroup {
            params: DevBuf::zeros(exec, n)?,
            grads: DevBuf::zeros(exec, n)?,
            m: DevBuf::zeros(exec, n)?,
            v: DevBuf::zeros(exec, n)?,
        })
    }
}

/// Threads per block of the optimiser kernels.
pub const BLOCK: u32 = 256;
/// Grid cap: the kernels loop grid-stride beyond it.
const MAX_BLOCKS: u64 = 8192;

/// The launch configuration of the range kernels for `total` selected elements.
pub fn range_config(total: u64) -> LaunchCfg {
    let blocks = total.div_ceil(u64::from(BLOCK)).clamp(1, MAX_BLOCKS) as u32;
    LaunchCfg::linear(blocks, BLOCK, 0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use metarim_core::rng::Pcg32;
    use proptest::prelude::*;

    /// The buffer element of selected element `i` of `table` (the kernels' `range_element`).
    fn element(table: &RangeTable, i: u64) -> usize {
        let (mut lo, mut hi) = (0usize, table.offsets.len());
        while hi - lo > 1 {
            let mid = lo + (hi - lo) / 2;
            if table.prefix[mid] <= i {
                lo = mid;
            } else {
                hi = mid;
            }
        }
        (table.offsets[lo] + (i - table.prefix[lo])) as usize
    }

    /// `adam_masked` with nothing skipped and no clipping, written out on the host element by
    /// element in the kernel's order of operations. Lengths must match (checked).
    fn adam_emulated(
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
            let e = element(table, i);
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
            adam_emulated(&s, &table, &mut p, &g, &mut m, &mut v).unwrap();

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
        let got: Vec<usize> = (0..t.total()).map(|i| element(&t, i)).collect();
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
        assert!(adam_emulated(&s, &t, &mut p, &[0.0; 3], &mut m, &mut v).is_err());
    }
}
