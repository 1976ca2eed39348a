//! Puts `memory.x` where cortex-m-rt's `link.x` finds it, and rebuilds when the run's
//! build-time settings change.
use std::{env, fs, path::PathBuf};

fn main() {
    let out = PathBuf::from(env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    fs::copy("memory.x", out.join("memory.x")).expect("copy memory.x to OUT_DIR");
    println!("cargo:rustc-link-search={}", out.display());
    println!("cargo:rerun-if-changed=memory.x");
    println!("cargo:rerun-if-changed=build.rs");
    // The model blob to embed (`metarim export ... --out model.bin`); scripts/run-firmware.sh
    // makes one. An absolute path, so `include_bytes!` finds it from any source file.
    let model = match env::var_os("FW_MODEL") {
        Some(p) => PathBuf::from(p),
        None => panic!(
            "set FW_MODEL=path/to/model.bin (a Tiny blob from `metarim export`); \
             scripts/run-firmware.sh trains and exports one"
        ),
    };
    let model =
        fs::canonicalize(&model).unwrap_or_else(|e| panic!("FW_MODEL={}: {e}", model.display()));
    println!("cargo:rustc-env=FW_MODEL_PATH={}", model.display());
    println!("cargo:rerun-if-changed={}", model.display());
    println!("cargo:rerun-if-env-changed=FW_MODEL");
    for var in [
        "FW_LEVEL",
        "FW_EPISODES",
        "FW_ADAPT_EPISODES",
        "FW_SEED",
        "FW_ACTIONS",
    ] {
        println!("cargo:rerun-if-env-changed={var}");
    }
}
