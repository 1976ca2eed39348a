//! numpy's default random generator, bit for bit: `SeedSequence` -> `PCG64` -> `Generator`,
//! which is what gymnasium's `np_random(seed)` builds and minigrid draws its levels from.
//! Written from numpy's documented algorithms (`bit_generator.pyx`'s `SeedSequence`, `pcg64.h`,
//! `distributions.c`'s bounded integers); tested against values numpy 2.x produces
//! (`scripts/numpy-rng-vectors.py`, vendored in `tests/data/numpy-rng-vectors.txt`).
//!
//! Invariants:
//! - Integer arithmetic wraps exactly as numpy's C (u32 for the seed hashing, u128 for the LCG);
//!   no allocation, no panic: an empty range is an error.
//! - [`NumpyGenerator::next_u32`] hands out the two halves of one 64-bit output (low half first)
//!   and keeps the spare half between calls, as numpy's `next_uint32` does; 64-bit draws
//!   (`next_u64`, `random`) leave the spare half in place.

use crate::error::Error;

/// Words in `SeedSequence`'s entropy pool (numpy's default `pool_size`).
pub const POOL_SIZE: usize = 4;

const INIT_A: u32 = 0x43b0_d7e5;
const MULT_A: u32 = 0x931e_8875;
const INIT_B: u32 = 0x8b51_f9dd;
const MULT_B: u32 = 0x58f3_8ded;
const MIX_MULT_L: u32 = 0xca01_f9dd;
const MIX_MULT_R: u32 = 0x4973_f715;
const XSHIFT: u32 = 16;

/// numpy's `SeedSequence(entropy)` for an integer entropy and no spawn key: the hashed pool.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SeedSequence {
    /// The mixed entropy pool (`SeedSequence.pool`).
    pub pool: [u32; POOL_SIZE],
}

impl SeedSequence {
    /// The pool for `entropy` (split into 32-bit words, least significant first; 0 is one
    /// zero word, like numpy's coercion of a Python int).
    pub fn new(entropy: u64) -> Self {
        let words = [entropy as u32, (entropy >> 32) as u32];
        let n = if entropy >> 32 != 0 { 2 } else { 1 };
        let mut hash_const = INIT_A;
        let mut hashmix = |value: u32| {
            let mut v = value ^ hash_const;
            hash_const = hash_const.wrapping_mul(MULT_A);
            v = v.wrapping_mul(hash_const);
            v ^ (v >> XSHIFT)
        };
        let mut pool = [0u32; POOL_SIZE];
        for (i, p) in pool.iter_mut().enumerate() {
            *p = hashmix(if i < n { words[i] } else { 0 });
        }
        for src in 0..POOL_SIZE {
            for dst in 0..POOL_SIZE {
                if src != dst {
                    let h = hashmix(pool[src]);
                    pool[dst] = mix(pool[dst], h);
                }
            }
        }
        // Entropy words beyond the pool (none for a u64: at most 2 words) would be mixed in
        // here.
        SeedSequence { pool }
    }

    /// `generate_state(N, np.uint32)`: `N` words from the pool.
    pub fn generate_u32<const N: usize>(&self) -> [u32; N] {
        let mut hash_const = INIT_B;
        let mut out = [0u32; N];
        for (i, o) in out.iter_mut().enumerate() {
            let mut v = self.pool[i % POOL_SIZE] ^ hash_const;
            hash_const = hash_const.wrapping_mul(MULT_B);
            v = v.wrapping_mul(hash_const);
            *o = v ^ (v >> XSHIFT);
        }
        out
    }

    /// `generate_state(4, np.uint64)`: pairs of 32-bit words, little-endian.
    pub fn generate_u64x4(&self) -> [u64; 4] {
        let w = self.generate_u32::<8>();
        core::array::from_fn(|i| u64::from(w[2 * i]) | (u64::from(w[2 * i + 1]) << 32))
    }
}

fn mix(x: u32, y: u32) -> u32 {
    let r = MIX_MULT_L
        .wrapping_mul(x)
        .wrapping_sub(MIX_MULT_R.wrapping_mul(y));
    r ^ (r >> XSHIFT)
}

/// PCG64's multiplier (`PCG_DEFAULT_MULTIPLIER_128`).
const PCG64_MULT: u128 = (2_549_297_995_355_413_924u128 << 64) | 4_865_540_595_714_422_341u128;

/// `np.random.Generator(np.random.PCG64(SeedSequence(seed)))`: the bit generator's state and
/// the `Generator` methods minigrid uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NumpyGenerator {
    state: u128,
    inc: u128,
    has_u32: bool,
    spare_u32: u32,
}

/// Lemire's multiply-and-reject for one draw width (`$t` draws widened to `$wide` for the
/// product), written once for numpy's 32-bit and 64-bit bounded draws, which differ only in
/// width.
macro_rules! bounded_lemire {
    ($(#[$doc:meta])* $name:ident, $t:ty, $wide:ty, $draw:ident) => {
        $(#[$doc])*
        fn $name(&mut self, rng: $t) -> $t {
            let excl = rng + 1;
            let mut m = <$wide>::from(self.$draw()) * <$wide>::from(excl);
            let mut leftover = m as $t;
            if leftover < excl {
                let threshold = (<$t>::MAX - rng) % excl;
                while leftover < threshold {
                    m = <$wide>::from(self.$draw()) * <$wide>::from(excl);
                    leftover = m as $t;
                }
            }
            (m >> <$t>::BITS) as $t
        }
    };
}

impl NumpyGenerator {
    /// gymnasium's `np_random(seed)` for a non-negative integer seed.
    pub fn new(seed: u64) -> Self {
        let s = SeedSequence::new(seed).generate_u64x4();
        // pcg64_set_seed: the first pair is the state seed, the second the stream, each
        // with the first word as the high half.
        let init_state = (u128::from(s[0]) << 64) | u128::from(s[1]);
        let init_seq = (u128::from(s[2]) << 64) | u128::from(s[3]);
        let mut g = NumpyGenerator {
            state: 0,
            inc: (init_seq << 1) | 1,
            has_u32: false,
            spare_u32: 0,
        };
        g.step();
        g.state = g.state.wrapping_add(init_state);
        g.step();
        g
    }

    /// The LCG state and increment (`bit_generator.state["state"]`), for tests and checks.
    pub fn state(&self) -> (u128, u128) {
        (self.state, self.inc)
    }

    fn step(&mut self) {
        self.state = self.state.wrapping_mul(PCG64_MULT).wrapping_add(self.inc);
    }

    /// One 64-bit output (`random_raw()`): step, then XSL-RR of the new state.
    pub fn next_u64(&mut self) -> u64 {
        self.step();
        let s = self.state;
        let x = ((s >> 64) as u64) ^ (s as u64);
        x.rotate_right((s >> 122) as u32)
    }

    /// numpy's `next_uint32`: the low half of a fresh 64-bit output, keeping the high half
    /// for the next call.
    pub fn next_u32(&mut self) -> u32 {
        if self.has_u32 {
            self.has_u32 = false;
            return self.spare_u32;
        }
        let v = self.next_u64();
        self.has_u32 = true;
        self.spare_u32 = (v >> 32) as u32;
        v as u32
    }

    /// `Generator.random()`: a double in [0, 1) from the top 53 bits of a 64-bit output.
    pub fn random(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / 9_007_199_254_740_992.0)
    }

    /// `Generator.uniform(low, high)`: `low + (high - low) * random()`.
    pub fn uniform(&mut self, low: f64, high: f64) -> f64 {
        low + (high - low) * self.random()
    }

    /// `Generator.integers(low, high)` for Python ints (int64, `high` excluded): Lemire's
    /// bounded method on 32-bit draws for ranges below 2^32, on 64-bit draws above. An empty
    /// range is an error (numpy raises `ValueError`).
    pub fn integers(&mut self, low: i64, high: i64) -> Result<i64, Error> {
        if high <= low {
            return Err(Error::BadLevelParam {
                name: "integers: high must be greater than low",
            });
        }
        // The inclusive range, as numpy's `_rand_int64` computes it (`high - 1 - low`).
        let rng = (high as u64).wrapping_sub(1).wrapping_sub(low as u64);
        let off = low as u64;
        let v = if rng == 0 {
            0
        } else if rng <= u64::from(u32::MAX) {
            if rng == u64::from(u32::MAX) {
                u64::from(self.next_u32())
            } else {
                u64::from(self.bounded_lemire_u32(rng as u32))
            }
        } else if rng == u64::MAX {
            self.next_u64()
        } else {
            self.bounded_lemire_u64(rng)
        };
        Ok(off.wrapping_add(v) as i64)
    }

    /// numpy's `random_interval(max)`: a value in `0..=max` by masking and rejecting (what
    /// `Generator.shuffle` draws for each swap).
    pub fn interval(&mut self, max: u64) -> u64 {
        if max == 0 {
            return 0;
        }
        let mask = u64::MAX >> max.leading_zeros();
        if max <= u64::from(u32::MAX) {
            loop {
                let v = u64::from(self.next_u32()) & mask;
                if v <= max {
                    return v;
                }
            }
        } else {
            loop {
                let v = self.next_u64() & mask;
                if v <= max {
                    return v;
                }
            }
        }
    }

    /// `Generator.shuffle` of a sequence: for `i` from the end down to 1, swap item `i` with
    /// item `interval(i)`.
    pub fn shuffle<T>(&mut self, items: &mut [T]) {
        for i in (1..items.len()).rev() {
            let j = self.interval(i as u64) as usize;
            items.swap(i, j);
        }
    }

    /// minigrid's `_rand_int(lo, hi)` for the level generators (an empty range gives `lo`).
    pub fn gen_range(&mut self, lo: i32, hi: i32) -> i32 {
        self.integers(i64::from(lo), i64::from(hi))
            .map_or(lo, |v| v as i32)
    }

    /// `integers(0, n)`.
    pub fn below(&mut self, n: u32) -> u32 {
        self.integers(0, i64::from(n)).map_or(0, |v| v as u32)
    }

    /// minigrid's `_rand_bool`: `integers(0, 2) == 0`.
    pub fn gen_bool(&mut self) -> bool {
        self.below(2) == 0
    }

    /// `random()` as f32.
    pub fn gen_f32(&mut self) -> f32 {
        self.random() as f32
    }

    /// `random()`.
    pub fn gen_f64(&mut self) -> f64 {
        self.random()
    }

    /// minigrid's `_rand_elem`.
    pub fn choose<'a, T>(&mut self, items: &'a [T]) -> Option<&'a T> {
        if items.is_empty() {
            return None;
        }
        items.get(self.below(items.len() as u32) as usize)
    }

    bounded_lemire!(
        /// A value in `0..=rng` (`rng < u32::MAX`) by Lemire's multiply-and-reject on 32-bit
        /// draws.
        bounded_lemire_u32, u32, u64, next_u32
    );

    bounded_lemire!(
        /// A value in `0..=rng` (`u32::MAX < rng < u64::MAX`) on 64-bit draws.
        bounded_lemire_u64, u64, u128, next_u64
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_ranges_are_errors_and_unit_ranges_draw_nothing() {
        let mut g = NumpyGenerator::new(5);
        assert!(g.integers(3, 3).is_err());
        assert!(g.integers(4, 3).is_err());
        let before = g;
        assert_eq!(g.integers(7, 8).unwrap(), 7);
        assert_eq!(
            g, before,
            "a one-value range consumes no randomness (numpy: rng == 0)"
        );
    }

    #[test]
    fn integers_stay_in_range_over_the_whole_i64_span() {
        let mut g = NumpyGenerator::new(11);
        for (lo, hi) in [
            (0, 2),
            (-5, 5),
            (0, 1 << 32),
            (3, (1 << 33) + 5),
            (i64::MIN, i64::MAX),
        ] {
            for _ in 0..200 {
                let v = g.integers(lo, hi).unwrap();
                assert!(v >= lo && v < hi, "{v} not in {lo}..{hi}");
            }
        }
    }
}
