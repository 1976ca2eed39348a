//! core's numpy generator (`metarim_core::rng::numpy`) against values numpy produced
//! (`tests/data/numpy-rng-vectors.txt`, written by `scripts/numpy-rng-vectors.py`): the
//! SeedSequence pool, PCG64's seeded state, raw 64-bit outputs, and a mixed sequence of
//! `Generator.integers` / `random` / `uniform` / `shuffle` calls, for seeds from 0 to 2^64 - 1.

use metarim_core::rng::numpy::{NumpyGenerator, SeedSequence};

const VECTORS: &str = include_str!("../data/numpy-rng-vectors.txt");

fn parse_f64_hex(s: &str) -> f64 {
    // Python's float.hex(): [-]0x1.<13 hex digits>p<exp>, or 0x0.0p+0.
    let (neg, s) = s.strip_prefix('-').map_or((false, s), |r| (true, r));
    let s = s.strip_prefix("0x").expect("hex float");
    let (mant, exp) = s.split_once('p').expect("exponent");
    let (int, frac) = mant.split_once('.').unwrap_or((mant, "0"));
    let mut m = u64::from_str_radix(int, 16).unwrap() as f64;
    let mut scale = 1.0 / 16.0;
    for c in frac.chars() {
        m += c.to_digit(16).unwrap() as f64 * scale;
        scale /= 16.0;
    }
    let v = m * 2f64.powi(exp.parse::<i32>().unwrap());
    if neg {
        -v
    } else {
        v
    }
}

#[test]
fn seed_sequence_pcg64_and_generator_match_numpy() {
    let mut seeds = 0;
    let mut calls = 0;
    let mut g = NumpyGenerator::new(0);
    let mut seed = 0u64;
    for line in VECTORS.lines().filter(|l| !l.starts_with('#')) {
        let f: Vec<&str> = line.split_whitespace().collect();
        match f[0] {
            "seed" => {
                seed = f[1].parse().unwrap();
                g = NumpyGenerator::new(seed);
                seeds += 1;
            }
            "pool" => {
                let want: Vec<u32> = f[1..].iter().map(|w| w.parse().unwrap()).collect();
                assert_eq!(
                    SeedSequence::new(seed).pool.to_vec(),
                    want,
                    "pool, seed {seed}"
                );
            }
            "state" => {
                let want = (f[1].parse::<u128>().unwrap(), f[2].parse::<u128>().unwrap());
                assert_eq!(
                    NumpyGenerator::new(seed).state(),
                    want,
                    "state, seed {seed}"
                );
            }
            "raw" => {
                let mut r = NumpyGenerator::new(seed);
                for (i, w) in f[1..].iter().enumerate() {
                    assert_eq!(
                        r.next_u64(),
                        w.parse::<u64>().unwrap(),
                        "raw {i}, seed {seed}"
                    );
                }
            }
            "int" => {
                let (lo, hi, want): (i64, i64, i64) = (
                    f[1].parse().unwrap(),
                    f[2].parse().unwrap(),
                    f[3].parse().unwrap(),
                );
                assert_eq!(
                    g.integers(lo, hi).unwrap(),
                    want,
                    "integers({lo}, {hi}), seed {seed}"
                );
                calls += 1;
            }
            "random" => {
                assert_eq!(
                    g.random().to_bits(),
                    parse_f64_hex(f[1]).to_bits(),
                    "random, seed {seed}"
                );
                calls += 1;
            }
            "uniform" => {
                let (lo, hi) = (parse_f64_hex(f[1]), parse_f64_hex(f[2]));
                let got = g.uniform(lo, hi);
                assert_eq!(
                    got.to_bits(),
                    parse_f64_hex(f[3]).to_bits(),
                    "uniform, seed {seed}"
                );
                calls += 1;
            }
            "shuffle" => {
                let n: usize = f[1].parse().unwrap();
                let want: Vec<usize> = f[2..].iter().map(|w| w.parse().unwrap()).collect();
                let mut items: Vec<usize> = (0..n).collect();
                g.shuffle(&mut items);
                assert_eq!(items, want, "shuffle({n}), seed {seed}");
                calls += 1;
            }
            other => panic!("unknown line kind {other:?}"),
        }
    }
    assert_eq!(seeds, 16);
    assert_eq!(calls, 16 * 23);
}
