//! The build script of every board crate (`build = "../build.rs"` in each Cargo.toml; cargo runs
//! it in the board's own directory): puts the board's `memory.x` where cortex-m-rt's `link.x`
//! finds it and links with `link.x` (and defmt's `defmt.x` when the output is defmt over RTT).
use std::{env, fs, path::PathBuf};

fn main() {
    let out = PathBuf::from(env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    fs::copy("memory.x", out.join("memory.x")).expect("copy memory.x to OUT_DIR");
    println!("cargo:rustc-link-search={}", out.display());
    println!("cargo:rustc-link-arg-bins=-Tlink.x");
    if env::var_os("CARGO_FEATURE_RTT").is_some() {
        println!("cargo:rustc-link-arg-bins=-Tdefmt.x");
    }
    println!("cargo:rerun-if-changed=memory.x");
    println!("cargo:rerun-if-changed=../build.rs");
}
