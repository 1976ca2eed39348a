//! Every shipped config in `configs/` parses and validates, `configs/default.toml` is exactly
//! the built-in defaults and `configs/device-tiny.toml` exactly `TrainConfig::device()` (so the
//! files cannot drift from the code).

use host::train::TrainConfig;

#[test]
fn shipped_configs_load_and_validate() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../configs");
    let mut n = 0;
    for e in std::fs::read_dir(&dir).unwrap() {
        let p = e.unwrap().path();
        if p.extension().is_some_and(|x| x == "toml") {
            let c = TrainConfig::load(&p).unwrap();
            c.validate()
                .unwrap_or_else(|e| panic!("{}: {e:#}", p.display()));
            n += 1;
        }
    }
    assert!(n >= 3, "expected the shipped configs in {}", dir.display());
    let d = TrainConfig::load(&dir.join("default.toml")).unwrap();
    assert_eq!(d, TrainConfig::default());
    let device = TrainConfig::load(&dir.join("device-tiny.toml")).unwrap();
    assert_eq!(device, TrainConfig::device());
}
