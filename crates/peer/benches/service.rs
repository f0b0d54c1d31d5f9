//! A typed service (`#[gotalk_peer::service]`) against the same handlers
//! registered by hand (`Handlers::buffer`, `Handlers::json`): 64 requests
//! in flight on one loopback TCP connection, `echo` (32 raw bytes) and
//! `greet` (JSON in and out), on a current-thread runtime.
//!
//! Run: `cargo bench -p gotalk-peer --features macros --bench service`
//!
//! The two servers take turns within each round, in alternating order, so
//! both see the same noise; the median round of each is shown, and the
//! ratio of the medians. `SERVICE_BENCH_SECS` (default 2) and
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

const IN_FLIGHT: usize = 64;

#[derive(Clone, Copy, PartialEq)]
enum Op {
    Echo,
    Greet,
}

/// Requests per second answered by `handlers` for `op`.
async fn run(handlers: Handlers, op: Op, warmup: Duration, measure: Duration) -> f64 {
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
    tokio::time::sleep(measure).await;
    let count = done.load(Ordering::Relaxed);
    let elapsed = start.elapsed();
    stop.store(true, Ordering::Relaxed);
    for task in tasks {
        task.await.expect("caller");
    }
    peer.close().await;
    server.shutdown().await;
    count as f64 / elapsed.as_secs_f64()
}

fn median(mut v: Vec<f64>) -> f64 {
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
        let (mut hand, mut typed) = (Vec::new(), Vec::new());
        for round in 0..rounds {
            runtime.block_on(async {
                let turn = |typed_first: bool| {
                    if typed_first {
                        BenchServer::new(Impl).into_handlers()
                    } else {
                        by_hand()
                    }
                };
                let first_typed = round % 2 == 1;
                let a = run(turn(first_typed), op, warmup, measure).await;
                let b = run(turn(!first_typed), op, warmup, measure).await;
                let (t, h) = if first_typed { (a, b) } else { (b, a) };
                typed.push(t);
                hand.push(h);
            });
        }
        let (h, t) = (median(hand.clone()), median(typed.clone()));
        println!(
            "{name:5}  by hand {h:>9.0} req/s   #[service] {t:>9.0} req/s   ratio {:.3}",
            t / h
        );
        println!(
            "       rounds by hand: {:?}\n       rounds #[service]: {:?}",
            hand.iter().map(|r| *r as u64).collect::<Vec<_>>(),
            typed.iter().map(|r| *r as u64).collect::<Vec<_>>()
        );
    }
}
