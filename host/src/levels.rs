//! Level look-up with readable errors, over `metarim-core`'s registry.

use std::borrow::Borrow;

use anyhow::{anyhow, Result};
use metarim_core::levels::Level;

/// The level registered as `id`, or an error naming the id and how to list the known ones.
pub fn lookup(id: &str) -> Result<Level> {
    Level::from_id(id).map_err(|_| {
        anyhow!("unknown level id {id:?}; `metarim env dump --list` prints the registered ids")
    })
}

/// Every registered level, in registry order.
#[allow(clippy::into_iter_on_ref)] // `into_iter` also fits a registry that returns an iterator
pub fn all() -> Vec<Level> {
    // `Borrow` accepts both `&Level` and `Level` items, whichever the registry yields.
    Level::all()
        .into_iter()
        .map(|l| *Borrow::<Level>::borrow(&l))
        .collect()
}

/// Every registered level id, in registry order.
pub fn all_ids() -> Vec<String> {
    all().iter().map(|l| l.id().to_string()).collect()
}
