//! Where the policy's parameters come from: the one function to swap when the device blob lands.
//!
//! PLACEHOLDER: [`load_params`] fills the `Tiny` parameters with `init_params` from a fixed seed
//! ([`crate::config::PARAM_SEED`]): an untrained policy, so its success rate only says the
//! pipeline runs. Once `metarim_core::export` parses the blob, this becomes: parse
//! `include_bytes!(env!("FW_MODEL"))` (zero-copy, checked: magic, version, dims, CRC) and copy or
//! borrow its groups; nothing else in the firmware changes.

use metarim_core::nn::init::InitConfig;
use metarim_core::nn::params::{GroupBufsMut, Layout};
use metarim_core::nn::policy::init_params;
use metarim_core::nn::presets::TinyParams;
use metarim_core::Error;

/// Where the loaded parameters came from, for the report.
pub const SOURCE: &str = "PLACEHOLDER init_params(seed) - untrained, model.bin not yet embedded";

/// Fill `out` with the policy's parameters for `layout`.
pub fn load_params(layout: &Layout, out: &mut TinyParams<f32>) -> Result<(), Error> {
    let bufs = GroupBufsMut {
        fast: &mut out.fast,
        slow: &mut out.slow,
        other: &mut out.other,
    };
    init_params(
        layout,
        &InitConfig::default(),
        crate::config::PARAM_SEED,
        bufs,
    )
}
