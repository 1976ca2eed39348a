//! Scoped worker threads: one way to join them.

use std::thread::ScopedJoinHandle;

use anyhow::{anyhow, Result};

/// Joins every handle, then returns their results in spawn order, or the first error. All are
/// joined before any error is returned, so no panicked thread is left for `thread::scope` to
/// re-raise; a panicked thread becomes the error "a `what` thread panicked".
pub fn join_all<T>(handles: Vec<ScopedJoinHandle<'_, Result<T>>>, what: &str) -> Result<Vec<T>> {
    let joined: Vec<Result<T>> = handles
        .into_iter()
        .map(|h| {
            h.join()
                .unwrap_or_else(|_| Err(anyhow!("a {what} thread panicked")))
        })
        .collect();
    joined.into_iter().collect()
}
