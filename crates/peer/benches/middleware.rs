//! The cost of layers per request: the same echo server with no layer, an
//! empty layer (`tower_layer::Identity`: what boxing an operation's stack
//! costs), `TraceLayer` and `MetricsLayer`, 64 requests in flight on one
//! loopback TCP connection, in one process and one run, the four
//! interleaved round after round so that they see the same noise.
//!
//! Run: `cargo bench -p gotalk-peer --features metrics --bench middleware`
//!
//! The process installs `metrics-exporter-prometheus`'s recorder first, as
//! an application of its own would (latency buckets, upkeep folding samples
//! into them every second on a thread of its own; `gotalk serve --metrics`
//! has a cheaper recorder of its own), so the runtime's own counters (bytes,
//! connections) count in every scenario alike, and `MetricsLayer` records
//! into a real recorder. A `tracing` subscriber at `INFO` is installed too, as a
//! service would run: `TraceLayer`'s `DEBUG` spans are then off, which is
//! its cost in production; `MW_BENCH_TRACE=debug` records the spans (into a
//! subscriber that keeps them in memory and prints nothing).
//!
//! - `MW_BENCH_SECS` (default 2): measured seconds per scenario and round.
//! - `MW_BENCH_ROUNDS` (default 5): rounds; the median req/s is shown.
//! - `MW_BENCH_RUNTIME`: `current` (default: client and server on one
//!   thread) or `multi` (2 workers).
//! - Positional arguments pick scenarios by a substring of their names
//!   (`no`, `empty`, `Trace`, `Metrics`); the first picked is the baseline.
//!
//! Instructions per request, which a loaded machine does not blur: run one
//! scenario for 1 s and for 3 s under `valgrind --tool=callgrind` and divide
//! the difference of the instruction totals by the difference of the
//! request counts printed last (`docs/benchmarks.md` has the loop).
//!
//! Without `--bench` (as under `cargo test --benches`) each scenario runs
//! for a few milliseconds, as a smoke test.

#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::{
    sync::{
        Arc,
        atomic::{AtomicU8, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use bytes::Bytes;
use gotalk_peer::{
    Config, HandlerError, Handlers, Peer, Server,
    middleware::{MetricsLayer, TraceLayer},
};
use tokio::runtime::Runtime;

const IN_FLIGHT: usize = 64;
const PAYLOAD: usize = 32;

/// Every request answered in the process, warm-up included, printed at the
/// end: under `valgrind --tool=callgrind`, two runs of one scenario of
/// different lengths give instructions per request (the difference of the
/// totals over the difference of the counts, setup cancelled out), a
/// figure other processes on the machine do not disturb.
static TOTAL_REQUESTS: AtomicU64 = AtomicU64::new(0);

const WARMUP: u8 = 0;
const MEASURE: u8 = 1;
const STOP: u8 = 2;

#[derive(Clone, Copy, Debug)]
enum Scenario {
    NoLayer,
    Empty,
    Trace,
    Metrics,
}

const SCENARIOS: [Scenario; 4] = [
    Scenario::NoLayer,
    Scenario::Empty,
    Scenario::Trace,
    Scenario::Metrics,
];

impl Scenario {
    fn name(self) -> &'static str {
        match self {
            Scenario::NoLayer => "no layer",
            Scenario::Empty => "empty layer (Identity)",
            Scenario::Trace => "TraceLayer",
            Scenario::Metrics => "MetricsLayer",
        }
    }

    fn handlers(self) -> Handlers {
        let h = Handlers::new().buffer(
            "echo",
            |_ctx, p: Bytes| async move { Ok::<_, HandlerError>(p) },
        );
        match self {
            Scenario::NoLayer => h,
            Scenario::Empty => h.layer(tower_layer::Identity::new()),
            Scenario::Trace => h.layer(TraceLayer::new()),
            Scenario::Metrics => h.layer(MetricsLayer::new()),
        }
    }
}

/// The process's CPU time so far (user + system), from `/proc/self/stat`
/// (clock ticks of 10 ms: under 1 % of a 2 s measurement); `None` where
/// there is no such file.
fn cpu_time() -> Option<Duration> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the command name, which is in parentheses.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split(' ').collect();
    // utime and stime are fields 14 and 15 of the whole line.
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    Some(Duration::from_millis(ticks * 10))
}

/// What one run measured.
struct Measured {
    /// Requests per second of wall time.
    rate: f64,
    /// Requests per second of the process's CPU time: what the machine
    /// would do undisturbed, and far less sensitive than `rate` to other
    /// processes taking the CPU.
    per_cpu_second: Option<f64>,
}

/// Requests per second of `IN_FLIGHT` callers looping on one connection.
async fn run(scenario: Scenario, warmup: Duration, measure: Duration) -> Measured {
    let server = Server::bind("127.0.0.1:0", scenario.handlers(), Config::default())
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
    let phase = Arc::new(AtomicU8::new(WARMUP));
    let body = Bytes::from(vec![b'x'; PAYLOAD]);
    let callers: Vec<_> = (0..IN_FLIGHT)
        .map(|_| {
            let (peer, body, phase) = (peer.clone(), body.clone(), phase.clone());
            tokio::spawn(async move {
                let (mut done, mut all) = (0u64, 0u64);
                loop {
                    let echoed = peer.request("echo", body.clone()).await.expect("echo");
                    assert_eq!(echoed.len(), PAYLOAD);
                    all += 1;
                    match phase.load(Ordering::Acquire) {
                        WARMUP => {}
                        MEASURE => done += 1,
                        _ => return (done, all),
                    }
                }
            })
        })
        .collect();
    tokio::time::sleep(warmup).await;
    phase.store(MEASURE, Ordering::Release);
    let start = Instant::now();
    let cpu_start = cpu_time();
    tokio::time::sleep(measure).await;
    phase.store(STOP, Ordering::Release);
    let elapsed = start.elapsed();
    let cpu = cpu_time().zip(cpu_start).map(|(end, start)| end - start);
    let (mut requests, mut all) = (0, 0);
    for c in callers {
        let (done, total) = c.await.expect("caller");
        requests += done;
        all += total;
    }
    TOTAL_REQUESTS.fetch_add(all, Ordering::Relaxed);
    peer.close().await;
    server.shutdown().await;
    Measured {
        rate: requests as f64 / elapsed.as_secs_f64(),
        per_cpu_second: cpu
            .filter(|c| !c.is_zero())
            .map(|c| requests as f64 / c.as_secs_f64()),
    }
}

fn env_u64(var: &str, default: u64) -> u64 {
    std::env::var(var)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn runtime() -> Runtime {
    match std::env::var("MW_BENCH_RUNTIME").as_deref() {
        Ok("multi") => tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build(),
        _ => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build(),
    }
    .expect("runtime")
}

fn median(xs: &mut [f64]) -> f64 {
    xs.sort_by(f64::total_cmp);
    xs[xs.len() / 2]
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let bench_mode = args.iter().any(|a| a == "--bench");
    // Positional arguments pick scenarios by substring of their names
    // (`no`, `Trace`, `Metrics`); none: all four.
    let filters: Vec<&str> = args
        .iter()
        .filter(|a| !a.starts_with("--"))
        .map(String::as_str)
        .collect();
    let scenarios: Vec<Scenario> = SCENARIOS
        .into_iter()
        .filter(|s| filters.is_empty() || filters.iter().any(|f| s.name().contains(f)))
        .collect();
    let (warmup, measure, rounds) = if bench_mode {
        (
            Duration::from_millis(300),
            Duration::from_secs(env_u64("MW_BENCH_SECS", 2)),
            env_u64("MW_BENCH_ROUNDS", 5).max(1) as usize,
        )
    } else {
        (Duration::from_millis(5), Duration::from_millis(20), 1)
    };
    let prometheus = metrics_exporter_prometheus::PrometheusBuilder::new()
        .set_buckets_for_metric(
            metrics_exporter_prometheus::Matcher::Full("gotalk_request_duration_seconds".into()),
            &[
                0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.1, 1.0, 10.0,
            ],
        )
        .expect("valid buckets")
        .install_recorder()
        .expect("the only recorder");
    // As `gotalk serve --metrics` does: samples are folded into the
    // histograms every few seconds, not kept.
    std::thread::spawn(move || {
        loop {
            std::thread::sleep(Duration::from_secs(1));
            prometheus.run_upkeep();
        }
    });
    let spans = std::env::var("MW_BENCH_TRACE").as_deref() == Ok("debug");
    if spans {
        use tracing_subscriber::{filter::LevelFilter, layer::SubscriberExt};
        let subscriber = tracing_subscriber::registry().with(LevelFilter::DEBUG);
        tracing::subscriber::set_global_default(subscriber).expect("the only subscriber");
    } else {
        tracing_subscriber::fmt()
            .with_max_level(tracing::Level::INFO)
            .with_writer(std::io::stderr)
            .init();
    }
    let rt = runtime();
    let mut rates: Vec<Vec<f64>> = scenarios.iter().map(|_| Vec::new()).collect();
    let mut per_cpu: Vec<Vec<f64>> = scenarios.iter().map(|_| Vec::new()).collect();
    for round in 1..=rounds {
        // Rotate the order each round: no scenario always runs first.
        for i in 0..scenarios.len() {
            let k = (i + round) % scenarios.len();
            let m = rt.block_on(run(scenarios[k], warmup, measure));
            eprintln!(
                "round {round}: {}: {:.0} req/s, {:.0} req per CPU second",
                scenarios[k].name(),
                m.rate,
                m.per_cpu_second.unwrap_or(f64::NAN)
            );
            rates[k].push(m.rate);
            per_cpu[k].extend(m.per_cpu_second);
        }
    }
    // The first scenario wanted is the baseline (normally "no layer").
    let base = median(&mut rates[0].clone());
    let cpu_base = (!per_cpu[0].is_empty()).then(|| median(&mut per_cpu[0].clone()));
    println!(
        "\n64 in flight, 32 B echo, one loopback TCP connection, {rounds} round(s) of {measure:?}; \
         median req/s; spans {}\n",
        if spans {
            "recorded"
        } else {
            "off (subscriber at INFO)"
        }
    );
    println!(
        "| layer | req/s (median) | min–max | vs no layer | req per CPU second (median) | vs no layer | CPU ns per request more |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|");
    for ((s, rs), cs) in scenarios.iter().zip(&mut rates).zip(&mut per_cpu) {
        let m = median(rs);
        let (lo, hi) = (rs[0], rs[rs.len() - 1]);
        let (cpu, cpu_ratio, extra_ns) = match (cpu_base, cs.is_empty()) {
            (Some(cb), false) => {
                let c = median(cs);
                (
                    format!("{c:.0}"),
                    format!("{:.3}x", c / cb),
                    format!("{:.0}", 1e9 / c - 1e9 / cb),
                )
            }
            _ => ("-".into(), "-".into(), "-".into()),
        };
        println!(
            "| {} | {m:.0} | {lo:.0}–{hi:.0} | {:.3}x | {cpu} | {cpu_ratio} | {extra_ns} |",
            s.name(),
            m / base
        );
    }
    eprintln!(
        "requests answered in all (warm-up included): {}",
        TOTAL_REQUESTS.load(Ordering::Relaxed)
    );
}
