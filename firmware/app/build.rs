//! Rebuilds the program when a run's build-time settings change (see src/config.rs). The
//! memory map is the board crate's (its build.rs); the model blob is not part of the build.

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
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
