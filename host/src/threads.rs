//! Scoped worker threads: one way to split work over them and one way to join them.

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

/// Splits `items` into at most `threads` contiguous parts of `ceil(len / threads)` items (the
/// last may be shorter) and runs `work(first, part)` on each part in its own scoped thread,
/// `first` being the index of the part's first item; joins them all ([`join_all`]) and returns
/// the first error. The split depends only on the length and `threads`, so a caller whose parts
/// are independent gets the same results on any thread count.
pub fn for_each_part<T: Send>(
    items: &mut [T],
    threads: usize,
    what: &str,
    work: impl Fn(usize, &mut [T]) -> Result<()> + Sync,
) -> Result<()> {
    let per = items.len().div_ceil(threads.max(1)).max(1);
    let work = &work;
    std::thread::scope(|s| {
        let handles: Vec<_> = items
            .chunks_mut(per)
            .enumerate()
            .map(|(c, part)| s.spawn(move || work(c * per, part)))
            .collect();
        join_all(handles, what)
    })?;
    Ok(())
}
