//! Gives the heap memory freed by closed connections back to the system.
//!
//! glibc's allocator keeps freed memory in its arenas for reuse: after a
//! burst of connections closes, a server's resident memory stays at its
//! peak (flat, not growing, but not returned either). `gotalk serve`
//! trims the heap when many connections have closed since the last look.

use std::time::Duration;

use gotalk_peer::Connections;

/// How often the connection count is looked at.
const EVERY: Duration = Duration::from_secs(1);
/// Trim once the count has fallen by this many since its last peak.
const CLOSED_ENOUGH: usize = 256;

/// Watches `connections` until the task is dropped (with the runtime).
pub(crate) async fn after_closes(connections: Connections) {
    let mut peak = connections.len();
    let mut tick = tokio::time::interval(EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        tick.tick().await;
        let open = connections.len();
        peak = peak.max(open);
        if peak - open >= CLOSED_ENOUGH {
            let start = std::time::Instant::now();
            let released = release_free_memory();
            tracing::debug!(open, peak, released, took = ?start.elapsed(), "heap trimmed");
            peak = open;
        }
    }
}

/// Keeps glibc from handing memory back to the system on every `free`.
///
/// By default glibc shrinks the heap as soon as 128 KiB or more are free at
/// its top, and serves blocks of 128 KiB and more with `mmap`: a connection
/// that allocates and frees a frame-sized buffer per 64 KiB message then
/// takes page faults for every one (measured: half the throughput of 16 in
/// flight x 64 KiB, `exc_page_fault` and `clear_page` on top of the
/// profile). Memory is given back by [`after_closes`] instead, when
/// connections have gone.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)]
pub(crate) fn keep_freed_memory() {
    const TRIM_THRESHOLD: libc::c_int = 64 << 20;
    const MMAP_THRESHOLD: libc::c_int = 4 << 20;
    // SAFETY: `mallopt` only sets two of glibc's allocator parameters
    // (integers, checked by glibc, which returns 0 for a refused value);
    // it takes no pointers and is called here before the runtime starts
    // any thread, as glibc's manual asks.
    unsafe {
        libc::mallopt(libc::M_TRIM_THRESHOLD, TRIM_THRESHOLD);
        libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD);
    }
}

/// Other allocators decide by themselves.
#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
pub(crate) fn keep_freed_memory() {}

/// Returns free heap memory to the system; true if some was.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)]
pub(crate) fn release_free_memory() -> bool {
    // SAFETY: `malloc_trim` takes no pointers from us: it walks glibc's
    // own arenas, each under its own lock, and releases whole free pages
    // (madvise/sbrk). It is documented as callable from any thread at any
    // time, and never invalidates live allocations.
    unsafe { libc::malloc_trim(0) == 1 }
}

/// Other allocators give memory back by themselves (or not at all).
#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
pub(crate) fn release_free_memory() -> bool {
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tuning_then_trimming_keeps_live_allocations_intact() {
        keep_freed_memory();
        // Free a lot, keep some, trim: what is kept must be untouched.
        let kept: Vec<Vec<u8>> = (0..64u8).map(|i| vec![i; 4096]).collect();
        let freed: Vec<Vec<u8>> = (0..4096).map(|_| vec![7u8; 16 * 1024]).collect();
        drop(freed);
        let _ = release_free_memory();
        for (i, block) in kept.iter().enumerate() {
            assert!(block.iter().all(|b| usize::from(*b) == i));
        }
    }
}
