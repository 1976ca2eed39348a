//! Training config parser (`host::train::config::TrainConfig`: `from_toml`, `validate`,
//! `set`).
//!
//! The input is read as a TOML config, and its first three lines of the form `key = value`
//! are also applied in turn with `set(key, value)` to the default config (how `--set` flags
//! and suite overrides arrive). Checks, for any input: nothing panics; a failed `set` leaves the config unchanged;
//! every accepted config validates deterministically (same verdict and message twice),
//! serialises (`to_toml`) to TOML that parses back and serialises to the same text; a config
//! that validates has a model layout and a consistent batch (`batch_size` a multiple of
//! `recurrence`, at most the frames per update).
#![no_main]

use host::train::config::TrainConfig;
use libfuzzer_sys::fuzz_target;
use metarim_core::nn::params::Layout;

fn check(c: &TrainConfig) {
    let verdict = c.validate().map_err(|e| format!("{e:#}"));
    assert_eq!(verdict, c.validate().map_err(|e| format!("{e:#}")));
    let text = c.to_toml().expect("an accepted config serialises");
    let back = TrainConfig::from_toml(&text).expect("a serialised config parses");
    assert_eq!(back.to_toml().expect("serialises again"), text);
    if verdict.is_ok() {
        let dims = c.dims().expect("a valid config has dims");
        let mode = c.mode;
        Layout::new(&dims, mode).expect("a valid config has a layout");
        assert!(c.batch_size.is_multiple_of(c.recurrence));
        assert!(c.batch_size <= c.frames_per_update());
        assert!(!c.level_ids().is_empty());
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(c) = TrainConfig::from_toml(text) {
        check(&c);
    }
    // Up to three `key = value` lines, applied in turn as repeated `--set` flags would be.
    let mut c = TrainConfig::default();
    let mut changed = false;
    for (key, value) in text.lines().filter_map(|l| l.split_once('=')).take(3) {
        // Compared as text: a NaN field is not equal to itself.
        let before = format!("{c:?}");
        match c.set(key, value) {
            Ok(()) => changed = true,
            Err(_) => assert_eq!(format!("{c:?}"), before, "a failed set changed the config"),
        }
    }
    // (The default config itself is checked by the unit tests; skip the work when unchanged.)
    if changed {
        check(&c);
    }
});
