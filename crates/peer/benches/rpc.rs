//! Round trips through `gotalk-peer` over loopback TCP, one connection, in
//! one process, with raw-TCP baselines measured in the same run.
//!
//! Run: `cargo bench -p gotalk-peer --bench rpc`
//!
//! Every scenario runs on two tokio runtimes in turn, each with its own
//! table and verdicts: a current-thread runtime (client, server and
//! baselines on one thread, as in a thread-per-core server) and the default
//! multi-thread runtime with 2 workers, which spreads the tasks of one
//! connection over both cores.
//!
//! - `RPC_BENCH_RUNTIME`: `current` or `multi` for only one of them; `split`
//!   runs the client on a current-thread runtime and the servers on another,
//!   on a thread of their own (as two single-threaded processes would).
//! - `RPC_BENCH_SECS` (default 2): measured seconds per scenario and round.
//! - `RPC_BENCH_WARMUP_MS` (default 300): unmeasured warm-up per run.
//! - `RPC_BENCH_ROUNDS` (default 3): every scenario runs this many times,
//!   in turn with the others, and the run with the median req/s is shown,
//!   with the spread across rounds (the machine is noisy; gotalk and its
//!   baseline alternate so both see the same noise).
//! - Positional arguments filter scenarios by substring (`gotalk`, `raw`,
//!   `x64`, `64KiB`, ...).
//!
//! This is a `harness = false` main rather than a criterion bench: the
//! figures wanted are requests/s and latency percentiles of many concurrent
//! callers on one connection. Criterion times iterations of one routine and
//! reports their mean; it cannot record per-request latencies across 64
//! tasks, and its sampling would restart the connection's steady state for
//! each sample. Here every scenario warms up, then runs for a fixed time
//! while each caller records every round trip in an HDR histogram.
//!
//! Without `--bench` (as under `cargo test --benches`) each scenario runs for
//! a few milliseconds, as a smoke test.

#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::{
    collections::VecDeque,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU8, Ordering},
    },
    time::{Duration, Instant},
};

use bytes::Bytes;
use gotalk_peer::{Config, HandlerError, Handlers, Peer, Server};
use hdrhistogram::Histogram;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
    runtime::Runtime,
    sync::Semaphore,
};

const SMALL: usize = 32;
const LARGE: usize = 64 * 1024;

/// Where a scenario is: callers record only while measuring.
const WARMUP: u8 = 0;
const MEASURE: u8 = 1;
const STOP: u8 = 2;

#[derive(Clone, Copy)]
struct Timing {
    warmup: Duration,
    measure: Duration,
}

struct Report {
    name: &'static str,
    in_flight: usize,
    payload: usize,
    requests: u64,
    elapsed: Duration,
    hist: Histogram<u64>,
}

impl Report {
    fn rate(&self) -> f64 {
        self.requests as f64 / self.elapsed.as_secs_f64()
    }

    /// Payload bytes echoed per second, one way.
    fn mib_per_sec(&self) -> f64 {
        self.rate() * self.payload as f64 / (1024.0 * 1024.0)
    }

    fn micros(&self, q: f64) -> f64 {
        self.hist.value_at_quantile(q) as f64 / 1000.0
    }
}

fn histogram() -> Histogram<u64> {
    // Nanoseconds, 1 ns to 60 s, 3 significant digits.
    Histogram::new_with_bounds(1, 60_000_000_000, 3).expect("valid histogram bounds")
}

/// Records the round trip from `sent` to `now`. Callers that loop read the
/// clock once per round trip: the end of one call is the start of the next.
fn record(hist: &mut Histogram<u64>, sent: Instant, now: Instant) {
    let ns = (now - sent).as_nanos().clamp(1, 60_000_000_000) as u64;
    hist.record(ns).expect("value within bounds");
}

/// Counts a round trip from `sent` to `now` while measuring; false once the
/// scenario is over.
fn tally(
    phase: &AtomicU8,
    hist: &mut Histogram<u64>,
    done: &mut u64,
    sent: Instant,
    now: Instant,
) -> bool {
    match phase.load(Ordering::Acquire) {
        WARMUP => true,
        MEASURE => {
            record(hist, sent, now);
            *done += 1;
            true
        }
        _ => false,
    }
}

/// Runs the warm-up and measurement phases; returns the measured time.
async fn phases(phase: &AtomicU8, timing: Timing) -> Duration {
    tokio::time::sleep(timing.warmup).await;
    phase.store(MEASURE, Ordering::Release);
    let start = Instant::now();
    tokio::time::sleep(timing.measure).await;
    phase.store(STOP, Ordering::Release);
    start.elapsed()
}

// ---------------------------------------------------------------- gotalk-peer

fn echo_handlers() -> Handlers {
    Handlers::new().buffer("echo", |_ctx, payload: Bytes| async move {
        Ok::<_, HandlerError>(payload)
    })
}

/// Connects to a new echo server, starts the callers, runs the phases,
/// then closes both ends. `start` spawns the callers at once and returns
/// what collects their histograms and counts once they stop.
async fn gotalk_scenario<C>(
    name: &'static str,
    payload: usize,
    in_flight: usize,
    timing: Timing,
    start: impl FnOnce(Peer, Bytes, Arc<AtomicU8>) -> C,
) -> Report
where
    C: std::future::Future<Output = (Histogram<u64>, u64)>,
{
    let server = EchoServer::start().await;
    let peer = Peer::connect(server.local_addr(), Handlers::new(), Config::default())
        .await
        .expect("connect");
    let body = Bytes::from(vec![b'x'; payload]);
    let phase = Arc::new(AtomicU8::new(WARMUP));
    let collect = start(peer.clone(), body, phase.clone());
    let elapsed = phases(&phase, timing).await;
    let (hist, requests) = collect.await;
    peer.close().await;
    server.shutdown().await;
    Report {
        name,
        in_flight,
        payload,
        requests,
        elapsed,
        hist,
    }
}

/// `in_flight` tasks loop on clones of one `Peer`, each sending `echo`
/// requests back to back.
async fn gotalk(name: &'static str, payload: usize, in_flight: usize, timing: Timing) -> Report {
    gotalk_scenario(name, payload, in_flight, timing, |peer, body, phase| {
        let tasks: Vec<_> = (0..in_flight)
            .map(|_| {
                let (peer, body, phase) = (peer.clone(), body.clone(), phase.clone());
                tokio::spawn(async move {
                    let mut hist = histogram();
                    let mut done = 0u64;
                    let mut sent = Instant::now();
                    loop {
                        let echoed = peer.request("echo", body.clone()).await.expect("echo");
                        assert_eq!(echoed.len(), body.len());
                        let now = Instant::now();
                        if !tally(&phase, &mut hist, &mut done, sent, now) {
                            return (hist, done);
                        }
                        sent = now;
                    }
                })
            })
            .collect();
        async move {
            let mut hist = histogram();
            let mut requests = 0;
            for task in tasks {
                let (h, n) = task.await.expect("caller task");
                hist.add(h).expect("same bounds");
                requests += n;
            }
            (hist, requests)
        }
    })
    .await
}

/// One task keeps `in_flight` requests going at once on one `Peer`
/// (`FuturesUnordered`, refilled as each answer comes back): the load
/// generator's way, where the other scenarios model many independent callers.
async fn gotalk_one_task(
    name: &'static str,
    payload: usize,
    in_flight: usize,
    timing: Timing,
) -> Report {
    use futures::stream::{FuturesUnordered, StreamExt};
    gotalk_scenario(name, payload, in_flight, timing, |peer, body, phase| {
        let caller = tokio::spawn(async move {
            // Each call carries its start time; the clock is read once per
            // answer, which is also when the next call starts.
            let call = |peer: Peer, body: Bytes, sent: Instant| async move {
                let echoed = peer.request("echo", body).await.expect("echo");
                (sent, echoed.len())
            };
            let start = Instant::now();
            let mut calls: FuturesUnordered<_> = (0..in_flight)
                .map(|_| call(peer.clone(), body.clone(), start))
                .collect();
            let mut hist = histogram();
            let mut done = 0u64;
            while let Some((sent, len)) = calls.next().await {
                assert_eq!(len, body.len());
                let now = Instant::now();
                if !tally(&phase, &mut hist, &mut done, sent, now) {
                    continue;
                }
                calls.push(call(peer.clone(), body.clone(), now));
            }
            (hist, done)
        });
        async move { caller.await.expect("caller task") }
    })
    .await
}

/// The echo server, in the bench's runtime or (`RPC_BENCH_RUNTIME=split`) on
/// a thread of its own with a current-thread runtime, as a separate server
/// process would run.
struct EchoServer {
    addr: String,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    done: tokio::sync::oneshot::Receiver<()>,
}

impl EchoServer {
    async fn start() -> Self {
        let (addr_tx, addr_rx) = tokio::sync::oneshot::channel();
        let (stop, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let (done_tx, done) = tokio::sync::oneshot::channel();
        let serve = async move {
            let server = Server::bind("127.0.0.1:0", echo_handlers(), Config::default())
                .await
                .expect("bind")
                .spawn();
            let _ = addr_tx.send(server.local_addr().to_string());
            let _ = stop_rx.await;
            server.shutdown().await;
            let _ = done_tx.send(());
        };
        if SERVER_THREAD.load(Ordering::Relaxed) {
            std::thread::spawn(move || {
                tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("server runtime")
                    .block_on(serve);
            });
        } else {
            tokio::spawn(serve);
        }
        let addr = addr_rx.await.expect("server address");
        Self {
            addr,
            stop: Some(stop),
            done,
        }
    }

    fn local_addr(&self) -> &str {
        &self.addr
    }

    async fn shutdown(mut self) {
        let _ = self.stop.take().map(|s| s.send(()));
        let _ = (&mut self.done).await;
    }
}

/// Whether servers run on a thread of their own (`RPC_BENCH_RUNTIME=split`).
static SERVER_THREAD: AtomicBool = AtomicBool::new(false);

/// A runtime the scenarios run on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Flavor {
    Current,
    Multi,
    Split,
}

impl Flavor {
    fn describe(self) -> &'static str {
        match self {
            Flavor::Current => {
                "tokio current-thread runtime: client, server and baselines on one thread"
            }
            Flavor::Multi => "tokio multi-thread runtime with 2 workers",
            Flavor::Split => {
                "client on a current-thread runtime, gotalk server on another, on its own thread"
            }
        }
    }

    fn runtime(self) -> Runtime {
        SERVER_THREAD.store(self == Flavor::Split, Ordering::Relaxed);
        match self {
            Flavor::Current | Flavor::Split => tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime"),
            Flavor::Multi => tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .expect("runtime"),
        }
    }

    fn from_env() -> Vec<Flavor> {
        match std::env::var("RPC_BENCH_RUNTIME").as_deref() {
            Ok("current") => vec![Flavor::Current],
            Ok("multi") => vec![Flavor::Multi],
            Ok("split") => vec![Flavor::Split],
            _ => vec![Flavor::Current, Flavor::Multi],
        }
    }
}

// ---------------------------------------------------------------- raw TCP

async fn raw_pair() -> (TcpStream, TcpStream) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (client, accepted) = tokio::join!(TcpStream::connect(addr), listener.accept());
    let client = client.expect("connect");
    let (server, _) = accepted.expect("accept");
    client.set_nodelay(true).expect("nodelay");
    server.set_nodelay(true).expect("nodelay");
    (client, server)
}

/// Baseline (a): one message at a time, `write_all` then `read_exact`,
/// against a server that does `read_exact` then `write_all`.
async fn raw_ping_pong(name: &'static str, payload: usize, timing: Timing) -> Report {
    let (mut client, mut server) = raw_pair().await;
    let echo = tokio::spawn(async move {
        let mut buf = vec![0u8; payload];
        while server.read_exact(&mut buf).await.is_ok() {
            if server.write_all(&buf).await.is_err() {
                break;
            }
        }
    });
    let phase = Arc::new(AtomicU8::new(WARMUP));
    let caller = {
        let phase = phase.clone();
        tokio::spawn(async move {
            let out = vec![b'x'; payload];
            let mut back = vec![0u8; payload];
            let mut hist = histogram();
            let mut done = 0u64;
            let mut sent = Instant::now();
            loop {
                client.write_all(&out).await.expect("write");
                client.read_exact(&mut back).await.expect("read");
                let now = Instant::now();
                if !tally(&phase, &mut hist, &mut done, sent, now) {
                    return (hist, done);
                }
                sent = now;
            }
        })
    };
    let elapsed = phases(&phase, timing).await;
    let (hist, requests) = caller.await.expect("caller task");
    echo.await.expect("echo task");
    Report {
        name,
        in_flight: 1,
        payload,
        requests,
        elapsed,
        hist,
    }
}

/// Baselines (b) and (c): a hand-written pipelined echo. The server writes
/// back each chunk it reads; the client's writer sends as many messages as
/// the window allows in one `write_all` (write batching), its reader counts
/// whole messages coming back and reopens the window. Echo keeps order, so
/// send times form a FIFO.
async fn raw_pipelined(
    name: &'static str,
    payload: usize,
    in_flight: usize,
    timing: Timing,
) -> Report {
    let (client, mut server) = raw_pair().await;
    let echo = tokio::spawn(async move {
        let mut buf = vec![0u8; 256 * 1024];
        loop {
            match server.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if server.write_all(&buf[..n]).await.is_err() {
                        break;
                    }
                }
            }
        }
    });
    let (mut rd, mut wr) = client.into_split();
    let window = Arc::new(Semaphore::new(in_flight));
    let sent_at = Arc::new(Mutex::new(VecDeque::<Instant>::with_capacity(in_flight)));
    let phase = Arc::new(AtomicU8::new(WARMUP));
    let writer = {
        let (window, sent_at, phase) = (window.clone(), sent_at.clone(), phase.clone());
        tokio::spawn(async move {
            let out = vec![b'x'; payload * in_flight];
            while phase.load(Ordering::Acquire) != STOP {
                window.acquire().await.expect("open").forget();
                let mut n = 1;
                while n < in_flight {
                    match window.try_acquire() {
                        Ok(p) => {
                            p.forget();
                            n += 1;
                        }
                        Err(_) => break,
                    }
                }
                {
                    let now = Instant::now();
                    let mut q = sent_at.lock().expect("lock");
                    q.extend(std::iter::repeat_n(now, n));
                }
                wr.write_all(&out[..n * payload]).await.expect("write");
            }
            // The server sees EOF after echoing everything, then closes.
            wr.shutdown().await.expect("shutdown");
        })
    };
    let reader = {
        let phase = phase.clone();
        tokio::spawn(async move {
            let mut buf = vec![0u8; 256 * 1024];
            let mut partial = 0usize;
            let mut hist = histogram();
            let mut done = 0u64;
            loop {
                let n = rd.read(&mut buf).await.expect("read");
                if n == 0 {
                    return (hist, done);
                }
                partial += n;
                let whole = partial / payload;
                partial %= payload;
                if whole == 0 {
                    continue;
                }
                let measuring = phase.load(Ordering::Acquire) == MEASURE;
                {
                    let now = Instant::now();
                    let mut q = sent_at.lock().expect("lock");
                    for sent in q.drain(..whole) {
                        if measuring {
                            record(&mut hist, sent, now);
                        }
                    }
                }
                if measuring {
                    done += whole as u64;
                }
                window.add_permits(whole);
            }
        })
    };
    let elapsed = phases(&phase, timing).await;
    writer.await.expect("writer task");
    let (hist, requests) = reader.await.expect("reader task");
    echo.await.expect("echo task");
    Report {
        name,
        in_flight,
        payload,
        requests,
        elapsed,
        hist,
    }
}

// ---------------------------------------------------------------- main

fn env_duration(var: &str, default: Duration, unit: fn(u64) -> Duration) -> Duration {
    std::env::var(var)
        .ok()
        .and_then(|v| v.parse().ok())
        .map_or(default, unit)
}

fn print_report(r: &Report, spread: Option<(f64, f64)>) {
    let spread = spread.map_or(String::new(), |(lo, hi)| format!("{lo:.0}–{hi:.0}"));
    println!(
        "| {:<28} | {:>3} | {:>6} | {:>10.0} | {:>21} | {:>8.1} | {:>8.1} | {:>8.1} |",
        r.name,
        r.in_flight,
        if r.payload >= 1024 {
            format!("{}K", r.payload / 1024)
        } else {
            format!("{}", r.payload)
        },
        r.rate(),
        spread,
        r.mib_per_sec(),
        r.micros(0.50),
        r.micros(0.99),
    );
}

type Scenario = (&'static str, fn(&Runtime, &'static str, Timing) -> Report);

/// In the order they run: each gotalk scenario right before its baseline.
const SCENARIOS: [Scenario; 7] = [
    ("gotalk echo 32B x64", |rt, n, t| {
        rt.block_on(gotalk(n, SMALL, 64, t))
    }),
    ("gotalk echo 32B x64, 1 task", |rt, n, t| {
        rt.block_on(gotalk_one_task(n, SMALL, 64, t))
    }),
    ("raw pipelined 32B x64 (b)", |rt, n, t| {
        rt.block_on(raw_pipelined(n, SMALL, 64, t))
    }),
    ("gotalk echo 32B x1", |rt, n, t| {
        rt.block_on(gotalk(n, SMALL, 1, t))
    }),
    ("raw ping-pong 32B x1 (a)", |rt, n, t| {
        rt.block_on(raw_ping_pong(n, SMALL, t))
    }),
    ("gotalk echo 64KiB x16", |rt, n, t| {
        rt.block_on(gotalk(n, LARGE, 16, t))
    }),
    ("raw pipelined 64KiB x16 (c)", |rt, n, t| {
        rt.block_on(raw_pipelined(n, LARGE, 16, t))
    }),
];

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let bench_mode = args.iter().any(|a| a == "--bench");
    let filters: Vec<&str> = args
        .iter()
        .filter(|a| !a.starts_with("--"))
        .map(String::as_str)
        .collect();
    let (timing, rounds) = if bench_mode {
        let timing = Timing {
            warmup: env_duration(
                "RPC_BENCH_WARMUP_MS",
                Duration::from_millis(300),
                Duration::from_millis,
            ),
            measure: env_duration(
                "RPC_BENCH_SECS",
                Duration::from_secs(2),
                Duration::from_secs,
            ),
        };
        let rounds = std::env::var("RPC_BENCH_ROUNDS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(3usize)
            .max(1);
        (timing, rounds)
    } else {
        let timing = Timing {
            warmup: Duration::from_millis(5),
            measure: Duration::from_millis(20),
        };
        (timing, 1)
    };
    let wanted: Vec<Scenario> = SCENARIOS
        .into_iter()
        .filter(|(name, _)| filters.is_empty() || filters.iter().any(|f| name.contains(f)))
        .collect();
    for flavor in Flavor::from_env() {
        run_all(flavor, &wanted, timing, rounds);
    }
}

/// Runs every wanted scenario `rounds` times on `flavor`, then prints the
/// table and the verdicts against the targets of issue 3.
fn run_all(flavor: Flavor, wanted: &[Scenario], timing: Timing, rounds: usize) {
    let runtime = flavor.runtime();
    println!(
        "\n### {}\n\nloopback TCP, one connection per scenario; \
         {rounds} round(s) of every scenario in turn, each {:?} warm-up + {:?} measured; \
         the round with the median req/s is shown\n",
        flavor.describe(),
        timing.warmup,
        timing.measure
    );
    let mut runs: Vec<Vec<Report>> = wanted.iter().map(|_| Vec::new()).collect();
    for round in 1..=rounds {
        for ((name, run), reports) in wanted.iter().zip(&mut runs) {
            let r = run(&runtime, name, timing);
            eprintln!("{flavor:?} round {round}: {name}: {:.0} req/s", r.rate());
            reports.push(r);
        }
    }
    drop(runtime);
    println!(
        "| scenario                     | in flight | payload | req/s (median) | req/s (min–max) | MiB/s | p50 µs | p99 µs |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|");
    let mut reports: Vec<Report> = Vec::new();
    for mut rs in runs {
        rs.sort_by(|a, b| a.rate().total_cmp(&b.rate()));
        let spread = (rs.len() > 1).then(|| (rs[0].rate(), rs[rs.len() - 1].rate()));
        let median = rs.swap_remove(rs.len() / 2);
        print_report(&median, spread);
        reports.push(median);
    }
    verdicts(&reports);
}

fn verdicts(reports: &[Report]) {
    let find = |name: &str| reports.iter().find(|r| r.name == name);
    println!();
    if let Some(g) = find("gotalk echo 32B x64") {
        let vs = find("raw pipelined 32B x64 (b)").map_or(String::new(), |b| {
            format!(" = {:.2}x raw pipelined", g.rate() / b.rate())
        });
        let verdict = if g.rate() >= 1e6 { "met" } else { "MISSED" };
        println!(
            "- 64 in flight: {:.0} req/s{vs} (target >= 1,000,000 req/s: {verdict})",
            g.rate()
        );
    }
    if let (Some(g), Some(a)) = (find("gotalk echo 32B x1"), find("raw ping-pong 32B x1 (a)")) {
        let ratio = g.micros(0.5) / a.micros(0.5);
        let verdict = if ratio <= 1.5 { "met" } else { "MISSED" };
        println!(
            "- 1 in flight: p50 {:.1} µs vs raw ping-pong {:.1} µs = {ratio:.2}x (target <= 1.5x: {verdict})",
            g.micros(0.5),
            a.micros(0.5)
        );
    }
    if let (Some(g), Some(c)) = (
        find("gotalk echo 64KiB x16"),
        find("raw pipelined 64KiB x16 (c)"),
    ) {
        let ratio = g.rate() / c.rate();
        let verdict = if ratio >= 0.8 { "met" } else { "MISSED" };
        println!(
            "- 64 KiB x16: {:.0} MiB/s vs raw echo {:.0} MiB/s = {ratio:.2}x (target >= 0.8x: {verdict})",
            g.mib_per_sec(),
            c.mib_per_sec()
        );
    }
}
