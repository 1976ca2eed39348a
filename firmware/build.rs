//! Puts `memory.x` where cortex-m-rt's `link.x` finds it, and rebuilds when the run's
//! build-time settings change.
use std::{env, fs, path::PathBuf};

fn main() {
    let out = PathBuf::from(env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    fs::copy("memory.x", out.join("memory.x")).expect("copy memory.x to OUT_DIR");
    println!("cargo:rustc-link-search={}", out.display());
    println!("cargo:rerun-if-changed=memory.x");
    println!("cargo:rerun-if-changed=build.rs");
    for var in [
        "FW_LEVEL",
        "FW_EPISODES",
        "FW_SEED",
        "FW_ACTIONS",
        "FW_PARAM_SEED",
    ] {
        println!("cargo:rerun-if-env-changed={var}");
    }
}
