//! A typed service (`#[gotalk_peer::service]`) against the same handlers
//! registered by hand (`Handlers::buffer`, `Handlers::json`): 64 requests
//! in flight on one loopback TCP connection, `echo` (32 raw bytes) and
//! `greet` (JSON in and out), on a current-thread runtime. A third server
//! is written by hand but calls the same implementation through an `Arc`
//! cloned per call, as any handler with state does: what the macro's
//! code does, so the difference to it is the generated code alone.
//!
//! Run: `cargo bench -p gotalk-peer --features macros --bench service`
//!
//! The servers take turns within each round, in rotating order, so all
//! see the same noise; the median round of each is shown, and the ratios
//! of the medians. `SERVICE_BENCH_SECS` (default 2) and
//! `SERVICE_BENCH_ROUNDS` (default 5) set the measured seconds per run and
//! the rounds. Without `--bench` (as under `cargo test --benches`) each run
//! lasts a few milliseconds, as a smoke test.

#![allow(clippy::print_stdout)]

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use bytes::Bytes;
use gotalk_peer::{Config, HandlerError, Handlers, Peer, Server};
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize)]
struct GreetIn {
    name: String,
}

#[derive(Serialize, Deserialize)]
struct GreetOut {
    greeting: String,
}

#[gotalk_peer::service]
trait Bench {
    async fn echo(&self, payload: Bytes) -> Bytes;
    async fn greet(&self, input: GreetIn) -> Result<GreetOut, HandlerError>;
}

struct Impl;

impl Bench for Impl {
    async fn echo(&self, payload: Bytes) -> Bytes {
        payload
    }
    async fn greet(&self, input: GreetIn) -> Result<GreetOut, HandlerError> {
        Ok(GreetOut {
            greeting: format!("Hello {}", input.name),
        })
    }
}

fn by_hand() -> Handlers {
    Handlers::new()
        .buffer("echo", |_ctx, payload: Bytes| async move {
            Ok::<_, HandlerError>(payload)
        })
        .json("greet", |_ctx, input: GreetIn| async move {
            Ok::<_, HandlerError>(GreetOut {
                greeting: format!("Hello {}", input.name),
            })
        })
}

/// By hand, calling the same implementation through an `Arc` cloned per
/// call, as a handler with state does (and as the macro's code does).
fn by_hand_shared() -> Handlers {
    let service = Arc::new(Impl);
    let greet = Arc::clone(&service);
    Handlers::new()
        .buffer("echo", move |_ctx, payload: Bytes| {
            let service = Arc::clone(&service);
            async move { Ok::<_, HandlerError>(service.echo(payload).await) }
        })
        .json("greet", move |_ctx, input: GreetIn| {
            let service = Arc::clone(&greet);
            async move { service.greet(input).await }
        })
}

const IN_FLIGHT: usize = 64;

#[derive(Clone, Copy, PartialEq)]
enum Op {
    Echo,
    Greet,
}

/// CPU time this thread has used (user and system), from
/// `/proc/thread-self/stat`, in clock ticks (1/100 s on Linux); `None`
/// elsewhere. On a current-thread runtime the client, the server and
/// their connection all run on this thread, so CPU time per request is
/// what a request costs, whatever other processes take from the machine.
fn thread_cpu_ticks() -> Option<u64> {
    let stat = std::fs::read_to_string("/proc/thread-self/stat").ok()?;
    // Fields after the command name (which is in parentheses): utime is
    // the 12th, stime the 13th.
    let rest = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    Some(fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?)
}

/// One run: requests per second, and CPU microseconds per request (NaN
/// without `/proc`).
struct Rate {
    per_sec: f64,
    cpu_us: f64,
}

/// How `handlers` answer `op`.
async fn run(handlers: Handlers, op: Op, warmup: Duration, measure: Duration) -> Rate {
    let server = Server::bind("127.0.0.1:0", handlers, Config::default())
        .await
        .expect("bind")
        .spawn();
    let peer = Peer::connect(
        server.local_addr().to_string(),
        Handlers::new(),
        Config::default(),
    )
    .await
    .expect("connect");
    let stop = Arc::new(AtomicBool::new(false));
    let counting = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicU64::new(0));
    let tasks: Vec<_> = (0..IN_FLIGHT)
        .map(|_| {
            let (peer, stop, counting, done) =
                (peer.clone(), stop.clone(), counting.clone(), done.clone());
            tokio::spawn(async move {
                let echo = Bytes::from(vec![b'x'; 32]);
                let greet = Bytes::from_static(br#"{"name":"Rasmus"}"#);
                while !stop.load(Ordering::Relaxed) {
                    let answer = match op {
                        Op::Echo => peer.request("echo", echo.clone()).await,
                        Op::Greet => peer.request("greet", greet.clone()).await,
                    };
                    assert!(answer.expect("answer").len() >= 27);
                    if counting.load(Ordering::Relaxed) {
                        done.fetch_add(1, Ordering::Relaxed);
                    }
                }
            })
        })
        .collect();
    tokio::time::sleep(warmup).await;
    counting.store(true, Ordering::Relaxed);
    let start = Instant::now();
    let cpu_start = thread_cpu_ticks();
    tokio::time::sleep(measure).await;
    let count = done.load(Ordering::Relaxed);
    let elapsed = start.elapsed();
    let cpu = cpu_start.zip(thread_cpu_ticks()).map(|(a, b)| b - a);
    stop.store(true, Ordering::Relaxed);
    for task in tasks {
        task.await.expect("caller");
    }
    peer.close().await;
    server.shutdown().await;
    Rate {
        per_sec: count as f64 / elapsed.as_secs_f64(),
        cpu_us: cpu.map_or(f64::NAN, |ticks| ticks as f64 * 10_000.0 / count as f64),
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    let benching = std::env::args().any(|a| a == "--bench");
    let env = |name: &str, default: u64| {
        std::env::var(name)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(default)
    };
    let (warmup, measure, rounds) = if benching {
        (
            Duration::from_millis(300),
            Duration::from_secs(env("SERVICE_BENCH_SECS", 2)),
            env("SERVICE_BENCH_ROUNDS", 5) as usize,
        )
    } else {
        (Duration::from_millis(5), Duration::from_millis(20), 1)
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    println!("{IN_FLIGHT} in flight, one connection, current-thread runtime, {rounds} rounds");
    for (op, name) in [(Op::Echo, "echo"), (Op::Greet, "greet")] {
        // by hand, by hand sharing an Arc, #[service]: rotated each round.
        let mut rates: [Vec<Rate>; 3] = Default::default();
        for round in 0..rounds {
            runtime.block_on(async {
                for turn in 0..3 {
                    let which = (round + turn) % 3;
                    let handlers = match which {
                        0 => by_hand(),
                        1 => by_hand_shared(),
                        _ => BenchServer::new(Impl).into_handlers(),
                    };
                    rates[which].push(run(handlers, op, warmup, measure).await);
                }
            });
        }
        let per_sec = |i: usize| median(rates[i].iter().map(|r| r.per_sec).collect());
        let cpu = |i: usize| median(rates[i].iter().map(|r| r.cpu_us).collect());
        println!(
            "{name:5}  req/s (median):       by hand {:>8.0}   by hand + Arc {:>8.0}   #[service] {:>8.0}   \
             #[service] / by hand {:.3}   / by hand + Arc {:.3}",
            per_sec(0),
            per_sec(1),
            per_sec(2),
            per_sec(2) / per_sec(0),
            per_sec(2) / per_sec(1),
        );
        println!(
            "       CPU µs/request (median): by hand {:>8.3}   by hand + Arc {:>8.3}   #[service] {:>8.3}   \
             #[service] / by hand {:.3}   / by hand + Arc {:.3}",
            cpu(0),
            cpu(1),
            cpu(2),
            cpu(2) / cpu(0),
            cpu(2) / cpu(1),
        );
    }
}
