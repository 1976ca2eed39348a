//! Checkpoint loader (`host::train::checkpoint::from_bytes`: safetensors, JSON metadata, the
//! TOML config inside it, every tensor checked against the layout the config describes).
//!
//! Checks, for any input: loading never panics and never allocates beyond libFuzzer's
//! `-rss_limit_mb`/`-malloc_limit_mb`; a loaded checkpoint's config validates, its tensors
//! have the layout's sizes, and saving it again (`to_bytes_checkpoint`) gives bytes that load
//! to the same metadata (CRC and format version aside: the input may carry extra tensors or be
//! of format 1) and save to the same bytes again (serialisation is deterministic and a fixed
//! point after one round).
#![no_main]

use host::train::checkpoint::{from_bytes, to_bytes_checkpoint, Checkpoint};
use libfuzzer_sys::fuzz_target;
use metarim_core::nn::params::Group;

fn save(c: &Checkpoint) -> Vec<u8> {
    to_bytes_checkpoint(&c.meta, &c.model, &c.optim, &c.env_states, c.config.procs)
        .expect("a loaded checkpoint saves")
}

fuzz_target!(|data: &[u8]| {
    let Ok(c) = from_bytes(data) else {
        return;
    };
    c.config
        .validate()
        .expect("a loaded checkpoint's config validates");
    for g in Group::ALL {
        let n = c.model.layout.group_len(g);
        assert_eq!(c.model.params.group(g).len(), n);
        assert_eq!(c.optim.m.group(g).len(), n);
        assert_eq!(c.optim.v.group(g).len(), n);
    }
    assert_eq!(c.meta.envs.len(), c.config.procs);
    let once = save(&c);
    let d = from_bytes(&once).expect("a re-saved checkpoint loads");
    // Saving writes the current format (and its CRC) whatever version was read.
    let mut meta = c.meta.clone();
    meta.crc32 = d.meta.crc32;
    meta.format_version = d.meta.format_version;
    assert_eq!(d.meta, meta, "metadata survives a save and load");
    assert_eq!(d.config, c.config);
    assert_eq!(save(&d), once, "saving is deterministic and a fixed point");
});
