//! Soak: many connections, mixed traffic both ways, abrupt disconnects and
//! reconnects; every answer is checked against its own request.
//!
//! The default size runs in a few seconds, as part of `cargo test`. The full
//! run is sized by environment variables, for example (10 minutes):
//!
//! ```sh
//! SOAK_CONNS=100 SOAK_REQUESTS=1000000 SOAK_SECS=600 \
//!   cargo test --release -p gotalk-peer --test soak -- --nocapture
//! ```
//!
//! Each operation carries a payload unique to it (connection, task and
//! sequence number), so a lost, duplicated or crossed answer cannot go
//! unnoticed: an answer must equal what its own request implies. An
//! operation may fail only with `Error::Closed`, and only on a connection
//! this test aborted while the operation was in flight; anything else, or an
//! operation that neither succeeds nor fails within its deadline, fails the
//! test.
// The figures of a run are the point of it (`--nocapture` shows them).
#![allow(clippy::print_stderr)]

use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use bytes::Bytes;
use futures::StreamExt;
use gotalk_peer::{Config, Error, HandlerError, Handlers, Peer, Server};
use tokio::sync::oneshot;

/// How long one operation may take before it counts as lost.
const OP_DEADLINE: Duration = Duration::from_secs(20);
/// Operations in flight per connection.
const TASKS_PER_CONN: u64 = 8;
/// One operation in this many (over all connections) aborts its connection
/// instead, which then reconnects.
const ABORT_EVERY: usize = 1500;

fn env(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn server_handlers() -> Handlers {
    Handlers::new()
        .buffer(
            "echo",
            |_ctx, p: Bytes| async move { Ok::<_, HandlerError>(p) },
        )
        .stream("stream-echo", |_ctx, mut parts, mut out| async move {
            while let Some(part) = parts.next().await {
                out.send(part?).await?;
            }
            Ok::<_, HandlerError>(())
        })
        .buffer("call-back", |ctx, p: Bytes| async move {
            // Calls the requester back on the same connection.
            let reversed = ctx.peer().request("reverse", p).await?;
            Ok::<_, HandlerError>(reversed)
        })
        .notification("note", |ctx, payload| async move {
            let _ = ctx.peer().notify("note-ack", payload).await;
        })
}

/// Notification acknowledgements awaited by one connection's tasks.
type Acks = Arc<Mutex<HashMap<Bytes, oneshot::Sender<()>>>>;

fn client_handlers(acks: Acks) -> Handlers {
    Handlers::new()
        .buffer("reverse", |_ctx, p: Bytes| async move {
            let mut v = p.to_vec();
            v.reverse();
            Ok::<_, HandlerError>(v)
        })
        .notification("note-ack", move |_ctx, payload| {
            let acks = acks.clone();
            async move {
                if let Some(tx) = acks.lock().unwrap().remove(&payload) {
                    let _ = tx.send(());
                }
            }
        })
}

#[derive(Default)]
struct Tally {
    ok: AtomicU64,
    /// Failed with `Closed` on a connection this test aborted.
    interrupted: AtomicU64,
    aborts: AtomicU64,
    reconnects: AtomicU64,
}

/// One kind of operation, checked against what its payload implies.
async fn operation(peer: &Peer, acks: &Acks, kind: u64, tag: &str) -> Result<(), Error> {
    match kind % 10 {
        // Single request: the answer is the payload.
        0..=5 => {
            let got = peer.request("echo", tag.to_owned()).await?;
            assert_eq!(got, tag.as_bytes(), "echo answered another request");
        }
        // Stream request, three parts, echoed part by part.
        6 => {
            let (mut parts, results) = peer.stream_request("stream-echo").await?;
            for i in 0..3 {
                parts.send(format!("{tag}/{i};")).await?;
            }
            parts.end().await?;
            let got = results.collect_bytes(1 << 20).await?;
            assert_eq!(got, format!("{tag}/0;{tag}/1;{tag}/2;").as_bytes());
        }
        // The server calls us back before it answers.
        7 | 8 => {
            let got = peer.request("call-back", tag.to_owned()).await?;
            let expected: String = tag.chars().rev().collect();
            assert_eq!(got, expected.as_bytes(), "call-back crossed");
        }
        // A notification, acknowledged by one back.
        _ => {
            let (tx, rx) = oneshot::channel();
            let key = Bytes::from(tag.to_owned());
            acks.lock().unwrap().insert(key.clone(), tx);
            peer.notify("note", key.clone()).await?;
            tokio::select! {
                acked = rx => acked.expect("the ack's sender stays in the map until it fires"),
                reason = peer.closed() => {
                    acks.lock().unwrap().remove(&key);
                    return Err(Error::Closed(reason));
                }
            }
        }
    }
    Ok(())
}

/// One connection's life: tasks issue operations until the budget is spent;
/// now and then the connection is aborted and a new one made.
async fn connection(
    addr: String,
    conn: u64,
    remaining: Arc<AtomicUsize>,
    deadline: Instant,
    tally: Arc<Tally>,
) {
    let mut generation = 0u64;
    while remaining.load(Ordering::Relaxed) > 0 && Instant::now() < deadline {
        let acks: Acks = Arc::default();
        let peer = Peer::connect(
            addr.as_str(),
            client_handlers(acks.clone()),
            Config::default(),
        )
        .await
        .expect("connect");
        let aborted = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let mut tasks = Vec::new();
        for task in 0..TASKS_PER_CONN {
            let (peer, acks, remaining, tally, aborted) = (
                peer.clone(),
                acks.clone(),
                remaining.clone(),
                tally.clone(),
                aborted.clone(),
            );
            tasks.push(tokio::spawn(async move {
                let mut seq = 0u64;
                loop {
                    if aborted.load(Ordering::SeqCst) || Instant::now() >= deadline {
                        return;
                    }
                    let Ok(number) =
                        remaining.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
                            n.checked_sub(1)
                        })
                    else {
                        return;
                    };
                    seq += 1;
                    let tag = format!("c{conn}g{generation}t{task}s{seq}");
                    let kind = seq * 7 + task;
                    if number % ABORT_EVERY == 0 {
                        // Abrupt: everything in flight on this connection fails.
                        aborted.store(true, Ordering::SeqCst);
                        tally.aborts.fetch_add(1, Ordering::Relaxed);
                        peer.abort();
                        return;
                    }
                    let outcome =
                        tokio::time::timeout(OP_DEADLINE, operation(&peer, &acks, kind, &tag))
                            .await
                            .unwrap_or_else(|_| {
                                panic!("operation {tag} lost: no answer in {OP_DEADLINE:?}")
                            });
                    match outcome {
                        Ok(()) => {
                            tally.ok.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(e) if e.is_closed() && aborted.load(Ordering::SeqCst) => {
                            tally.interrupted.fetch_add(1, Ordering::Relaxed);
                            return;
                        }
                        Err(e) => panic!("operation {tag} failed: {e}"),
                    }
                }
            }));
        }
        for t in tasks {
            t.await.expect("a soak task panicked");
        }
        peer.close().await;
        generation += 1;
        tally.reconnects.fetch_add(1, Ordering::Relaxed);
    }
}

fn rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mixed_traffic_with_abrupt_disconnects_loses_nothing() {
    let conns = env("SOAK_CONNS", 10);
    let requests = env("SOAK_REQUESTS", 20_000) as usize;
    let secs = env("SOAK_SECS", 60);
    let server = Server::bind("127.0.0.1:0", server_handlers(), Config::default())
        .await
        .unwrap()
        .spawn();
    let addr = server.local_addr().to_string();
    let rss_start = rss_kib();
    let start = Instant::now();
    let deadline = start + Duration::from_secs(secs);
    let remaining = Arc::new(AtomicUsize::new(requests));
    let tally = Arc::new(Tally::default());
    let runs: Vec<_> = (0..conns)
        .map(|c| {
            tokio::spawn(connection(
                addr.clone(),
                c,
                remaining.clone(),
                deadline,
                tally.clone(),
            ))
        })
        .collect();
    for r in runs {
        r.await.expect("a connection's run panicked");
    }
    let elapsed = start.elapsed();
    let rss_end = rss_kib();
    let ok = tally.ok.load(Ordering::Relaxed);
    let interrupted = tally.interrupted.load(Ordering::Relaxed);
    eprintln!(
        "soak: {conns} connections, {ok} operations answered and checked, {interrupted} \
         interrupted by {} aborts, {} reconnects, in {elapsed:.1?} ({:.0}/s); \
         RSS {rss_start:?} KiB -> {rss_end:?} KiB",
        tally.aborts.load(Ordering::Relaxed),
        tally.reconnects.load(Ordering::Relaxed),
        ok as f64 / elapsed.as_secs_f64(),
    );
    // Every operation issued was answered correctly or cut off by an abort.
    assert_eq!(
        ok + interrupted + tally.aborts.load(Ordering::Relaxed),
        (requests - remaining.load(Ordering::Relaxed)) as u64,
        "operations unaccounted for"
    );
    assert!(ok > 0);
    assert!(
        tally.aborts.load(Ordering::Relaxed) > 0,
        "no abrupt disconnect happened"
    );
    // Nothing held per operation: memory after the run is bounded by the
    // connections, not by the operations made.
    if let (Some(a), Some(b)) = (rss_start, rss_end) {
        assert!(b < a + 256 * 1024, "RSS grew from {a} KiB to {b} KiB");
    }
    server.shutdown().await;
}
