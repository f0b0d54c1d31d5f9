//! `gotalk serve` runs glibc's allocator with one arena and a per-thread
//! cache of one block per size class (glibc's default is seven), so that
//! the memory of closed connections can go back to the system.
//!
//! [`crate::trim`] calls `malloc_trim` after connections close, but two
//! features of glibc's allocator kept 1.5–2.2 MiB of freed heap resident
//! after churn (10 × 5 000 connections: +16 to +24 % of the start, see
//! `docs/benchmarks.md`, "Churn: one arena, no thread cache"):
//!
//! - each runtime thread allocates from an arena of its own, and
//!   `malloc_trim` shrinks the top of the main arena only;
//! - each thread keeps up to 7 freed blocks per size class (up to 1 KiB) in
//!   its cache, which the arena counts as in use: scattered over the pages
//!   the connections used, they pin those pages, and no call empties the
//!   cache of another thread.
//!
//! One cached block per size class is what the request path uses (each
//! request allocates and frees its blocks in turn): no more instructions
//! per request than the default cache (callgrind, the whole server), where
//! no cache at all costs 7 % more. It pins at most one page per size class
//! and thread: churn ends within 5 % of the start.
//!
//! The arena count is set with `mallopt`; the thread cache's size can only
//! be set with a glibc tunable, which glibc reads when the process starts.
//! So `gotalk serve` executes itself once more, at start and before any
//! thread or socket exists, with `glibc.malloc.tcache_count=1` added to
//! `GLIBC_TUNABLES` (same process id, same arguments;
//! `GOTALK_RESTARTED_FOR_HEAP=1` marks the second start). A
//! `GLIBC_TUNABLES` that already sets `glibc.malloc.tcache_count` is left as
//! it is: that is also how to choose another size.

use std::ffi::{OsStr, OsString};

/// The tunable that keeps one block per size class in each thread's cache.
const TCACHE_ONE: &str = "glibc.malloc.tcache_count=1";
const TCACHE_COUNT: &str = "glibc.malloc.tcache_count";
/// Set in the environment of the re-executed process.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
const RESTARTED: &str = "GOTALK_RESTARTED_FOR_HEAP";

/// `GLIBC_TUNABLES` with the small thread cache, given its current
/// value; `None` when it already sets the cache's size (ours, or the
/// user's) or cannot be read as text.
#[cfg_attr(not(all(target_os = "linux", target_env = "gnu")), allow(dead_code))]
pub(crate) fn tunables_with_small_tcache(current: Option<&OsStr>) -> Option<OsString> {
    let Some(current) = current else {
        return Some(TCACHE_ONE.into());
    };
    let current = current.to_str()?;
    if current.is_empty() {
        return Some(TCACHE_ONE.into());
    }
    // `name=value` pairs separated by colons.
    let sets_tcache = current
        .split(':')
        .any(|pair| pair.split('=').next() == Some(TCACHE_COUNT));
    if sets_tcache {
        None
    } else {
        Some(format!("{current}:{TCACHE_ONE}").into())
    }
}

/// Sets up the allocator of a server: re-executes the process with the
/// small thread cache unless `GLIBC_TUNABLES` already sizes it, then asks
/// for one arena. Returns only if no re-execution was needed or it failed (then the
/// server runs with the cache, and says so in the log).
///
/// Call before the runtime starts any thread: glibc takes the arena count
/// into account for threads that allocate later.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
pub(crate) fn for_server() {
    use std::os::unix::process::CommandExt;

    let tunables = tunables_with_small_tcache(std::env::var_os("GLIBC_TUNABLES").as_deref());
    // Once only, whatever glibc makes of the variable.
    let restarted = std::env::var_os(RESTARTED).is_some();
    if let (Some(tunables), false) = (tunables, restarted) {
        let mut args = std::env::args_os();
        let arg0 = args.next().unwrap_or_else(|| "gotalk".into());
        // `exec` returns only when it failed.
        let error = std::process::Command::new("/proc/self/exe")
            .arg0(arg0)
            .args(args)
            .env("GLIBC_TUNABLES", tunables)
            .env(RESTARTED, "1")
            .exec();
        tracing::warn!(%error, "could not restart with a smaller glibc thread cache; \
            memory freed by closed connections may stay resident");
    }
    one_arena();
}

/// Other allocators: nothing to set.
#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
pub(crate) fn for_server() {}

/// One malloc arena for every thread, so that `malloc_trim` can shrink the
/// top of the heap the connections used.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)]
fn one_arena() {
    // SAFETY: `mallopt` sets one of glibc's allocator parameters (an
    // integer, checked by glibc); it takes no pointers. Called before the
    // runtime starts its threads, as glibc's manual asks.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with(current: Option<&str>) -> Option<String> {
        tunables_with_small_tcache(current.map(OsStr::new)).map(|v| v.into_string().unwrap())
    }

    #[test]
    fn adds_the_tunable_when_absent() {
        assert_eq!(with(None).as_deref(), Some(TCACHE_ONE));
        assert_eq!(with(Some("")).as_deref(), Some(TCACHE_ONE));
    }

    #[test]
    fn keeps_the_other_tunables() {
        assert_eq!(
            with(Some("glibc.malloc.arena_max=2")).as_deref(),
            Some("glibc.malloc.arena_max=2:glibc.malloc.tcache_count=1")
        );
        // A longer name that begins with ours is another tunable.
        assert_eq!(
            with(Some("glibc.malloc.tcache_count_x=1")).as_deref(),
            Some("glibc.malloc.tcache_count_x=1:glibc.malloc.tcache_count=1")
        );
    }

    #[test]
    fn leaves_a_chosen_cache_size_alone() {
        // Ours, after the re-execution: no loop.
        assert_eq!(with(Some(TCACHE_ONE)), None);
        // The user's.
        assert_eq!(with(Some("glibc.malloc.tcache_count=7")), None);
        assert_eq!(
            with(Some(
                "glibc.malloc.mmap_threshold=1:glibc.malloc.tcache_count=3"
            )),
            None
        );
    }

    #[cfg(unix)]
    #[test]
    fn leaves_a_value_that_is_not_text_alone() {
        use std::os::unix::ffi::OsStrExt;
        assert_eq!(
            tunables_with_small_tcache(Some(OsStr::from_bytes(b"\xff"))),
            None
        );
    }
}
