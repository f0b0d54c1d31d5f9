//! `gotalk serve` restarts itself once with a one-block glibc per-thread cache
//! (`src/compact_heap.rs`): same process, the tunable in its environment,
//! and a `GLIBC_TUNABLES` that already sets the cache left alone.

#![cfg(all(target_os = "linux", target_env = "gnu"))]

mod common;

use std::process::{Child, Command, Stdio};

use common::{BIN, lines_of, wait_for};

/// What `/proc/PID/environ` of the listening server says.
struct Seen {
    tunables: Option<String>,
    restarted: bool,
}

/// Starts `gotalk serve` with `GLIBC_TUNABLES` set to `tunables` (or
/// unset), waits until it listens, and returns it with what its
/// environment says then.
fn serve_with(tunables: Option<&str>) -> (Child, Seen) {
    let mut command = Command::new(BIN);
    command
        .args(["serve", "--addr", "127.0.0.1:0"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    match tunables {
        Some(value) => command.env("GLIBC_TUNABLES", value),
        None => command.env_remove("GLIBC_TUNABLES"),
    };
    let mut child = command.spawn().unwrap();
    let stdout = lines_of(child.stdout.take().unwrap());
    wait_for(&stdout, |l| l.starts_with("listening on "))
        .unwrap_or_else(|seen| panic!("serve printed no address; saw {seen:?}"));
    // The process we started (same id after `exec`) is the one listening.
    let environ = std::fs::read(format!("/proc/{}/environ", child.id())).unwrap();
    let var = |name: &[u8]| {
        environ
            .split(|b| *b == 0)
            .find_map(|var| var.strip_prefix(name))
            .map(|v| String::from_utf8(v.to_vec()).unwrap())
    };
    let seen = Seen {
        tunables: var(b"GLIBC_TUNABLES="),
        restarted: var(b"GOTALK_RESTARTED_FOR_HEAP=").as_deref() == Some("1"),
    };
    (child, seen)
}

fn stop(mut child: Child) {
    let _ = child.kill();
    let _ = child.wait();
}

#[test]
fn serve_runs_with_a_one_block_thread_cache() {
    let (child, seen) = serve_with(None);
    stop(child);
    assert_eq!(
        seen.tunables.as_deref(),
        Some("glibc.malloc.tcache_count=1")
    );
    assert!(seen.restarted);
}

#[test]
fn serve_with_other_tunables_restarts_once_and_listens() {
    // glibc cuts the process's copy of the variable (what
    // `/proc/PID/environ` shows) after the first tunable once it has read
    // them all, so only the first one is visible there; a restart loop
    // would never listen.
    let (child, seen) = serve_with(Some("glibc.malloc.arena_max=4"));
    stop(child);
    assert!(seen.restarted);
    assert_eq!(seen.tunables.as_deref(), Some("glibc.malloc.arena_max=4"));
}

#[test]
fn serve_leaves_a_chosen_cache_size_alone() {
    let (child, seen) = serve_with(Some("glibc.malloc.tcache_count=7"));
    stop(child);
    assert!(!seen.restarted);
    assert_eq!(
        seen.tunables.as_deref(),
        Some("glibc.malloc.tcache_count=7")
    );
}
