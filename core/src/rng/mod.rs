//! A small deterministic random number generator (PCG-XSH-RR 64/32), and numpy's generator
//! ([`numpy`]: what gymnasium and minigrid draw from).
//!
//! Invariants:
//! - The same seed gives the same stream on every platform (only wrapping integer arithmetic).
//! - `gen_range(lo, hi)` is unbiased (Lemire's rejection method) and never panics: an empty range
//!   returns `lo`.
//!
//! Level generation uses this generator, so a level is a pure function of `(level id, seed)`.

pub mod numpy;

/// PCG32 (XSH-RR output on a 64-bit LCG state), as described by O'Neill (pcg-random.org).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Pcg32 {
    state: u64,
    inc: u64,
}

const PCG_MULT: u64 = 6_364_136_223_846_793_005;

impl Pcg32 {
    /// A generator for `seed` on the default stream.
    pub fn new(seed: u64) -> Self {
        Self::with_stream(seed, 0xda3e_39cb_94b9_5bdb)
    }

    /// A generator for `seed` on stream `stream` (streams are independent sequences).
    pub fn with_stream(seed: u64, stream: u64) -> Self {
        let mut rng = Pcg32 {
            state: 0,
            inc: (stream << 1) | 1,
        };
        rng.next_u32();
        rng.state = rng.state.wrapping_add(seed);
        rng.next_u32();
        rng
    }

    /// The raw state, for checkpoints.
    pub fn to_parts(&self) -> (u64, u64) {
        (self.state, self.inc)
    }

    /// Rebuild from [`Pcg32::to_parts`]; the increment is forced odd.
    pub fn from_parts(state: u64, inc: u64) -> Self {
        Pcg32 {
            state,
            inc: inc | 1,
        }
    }

    /// Next 32 random bits.
    #[inline]
    pub fn next_u32(&mut self) -> u32 {
        let old = self.state;
        self.state = old.wrapping_mul(PCG_MULT).wrapping_add(self.inc);
        let xorshifted = (((old >> 18) ^ old) >> 27) as u32;
        let rot = (old >> 59) as u32;
        xorshifted.rotate_right(rot)
    }

    /// Next 64 random bits (two draws).
    #[inline]
    pub fn next_u64(&mut self) -> u64 {
        let hi = self.next_u32() as u64;
        (hi << 32) | self.next_u32() as u64
    }

    /// Uniform integer in `[0, n)`; `0` when `n == 0`.
    #[inline]
    pub fn below(&mut self, n: u32) -> u32 {
        if n == 0 {
            return 0;
        }
        // Lemire's nearly-divisionless method: unbiased.
        let mut m = self.next_u32() as u64 * n as u64;
        let mut low = m as u32;
        if low < n {
            let threshold = n.wrapping_neg() % n;
            while low < threshold {
                m = self.next_u32() as u64 * n as u64;
                low = m as u32;
            }
        }
        (m >> 32) as u32
    }

    /// Uniform integer in `[lo, hi)` (minigrid's `_rand_int`); `lo` when the range is empty.
    #[inline]
    pub fn gen_range(&mut self, lo: i32, hi: i32) -> i32 {
        if hi <= lo {
            return lo;
        }
        let span = (hi as i64 - lo as i64) as u32;
        lo + self.below(span) as i32
    }

    /// A fair coin (minigrid's `_rand_bool`).
    #[inline]
    pub fn gen_bool(&mut self) -> bool {
        self.next_u32() & 1 == 0
    }

    /// Uniform float in `[0, 1)` with 24 bits of precision.
    #[inline]
    pub fn gen_f32(&mut self) -> f32 {
        (self.next_u32() >> 8) as f32 * (1.0 / (1u32 << 24) as f32)
    }

    /// Uniform float in `[0, 1)` with 53 bits of precision.
    #[inline]
    pub fn gen_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// A uniformly chosen element of `items`, or `None` when it is empty.
    #[inline]
    pub fn choose<'a, T>(&mut self, items: &'a [T]) -> Option<&'a T> {
        if items.is_empty() {
            return None;
        }
        items.get(self.below(items.len() as u32) as usize)
    }
}

/// The episode scheme every evaluator and the device share: episode `index` of seed `seed` draws
/// from `Pcg32::with_stream(split_mix64(seed), index)`; its first draw is the level seed
/// (returned second), the rest are the episode's action draws. The host's evaluation, core's
/// adaptation loop, the firmware and the C API all start episodes here, so the same seed gives
/// the same episodes everywhere.
pub fn episode_stream(seed: u64, index: u64) -> (Pcg32, u64) {
    let mut rng = Pcg32::with_stream(split_mix64(seed), index);
    let level_seed = rng.next_u64();
    (rng, level_seed)
}

/// SplitMix64 step, used to derive independent seeds (per env, per episode) from one seed.
#[inline]
pub fn split_mix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_stream_and_known_values() {
        let mut a = Pcg32::new(42);
        let mut b = Pcg32::new(42);
        for _ in 0..100 {
            assert_eq!(a.next_u32(), b.next_u32());
        }
        let mut c = Pcg32::new(43);
        let mut a = Pcg32::new(42);
        let same = (0..32).filter(|_| a.next_u32() == c.next_u32()).count();
        assert!(same < 2);
    }

    #[test]
    fn pcg32_reference_vector() {
        // O'Neill's pcg32-demo: seed 42, stream 54 gives 0xa15c02b7 first.
        let mut r = Pcg32::with_stream(42, 54);
        assert_eq!(r.next_u32(), 0xa15c_02b7);
        assert_eq!(r.next_u32(), 0x7b47_f409);
    }

    #[test]
    fn ranges_stay_in_bounds_and_cover() {
        let mut r = Pcg32::new(7);
        let mut seen = [false; 5];
        for _ in 0..1000 {
            let v = r.gen_range(3, 8);
            assert!((3..8).contains(&v));
            seen[(v - 3) as usize] = true;
        }
        assert!(seen.iter().all(|s| *s));
        assert_eq!(r.gen_range(5, 5), 5);
        assert_eq!(r.gen_range(5, 2), 5);
        assert_eq!(r.below(0), 0);
        assert!(r.choose::<u8>(&[]).is_none());
    }
}
