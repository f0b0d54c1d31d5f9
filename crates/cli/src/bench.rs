//! `gotalk bench`: a load generator measuring requests/s and latency.
//!
//! `-c` tasks per connection each loop `request().await` on a shared
//! [`Peer`], so every connection has exactly `-c` requests in flight. The
//! tasks record latencies in batches into a few shared histograms
//! ([`crate::latency`]), merged at the end.

use std::{
    io::IsTerminal,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use bytes::Bytes;
use clap::Args;
use gotalk_peer::{Config, Handlers, Peer};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use tokio::net::TcpStream;

use crate::{
    addr::{Address, TrustArgs},
    client::check_payload_size,
    client::connector,
    exit,
    latency::{Latencies, Recorder},
    raw,
    server::{self, ServeOptions},
    text::{parse_positive_duration, parse_size},
    websocket::WsListen,
};

pub(crate) const AFTER_HELP: &str = "\
Runs -c requests in flight on each of --conns connections (so -c × --conns in all) until
-n requests have completed or --duration has passed, then prints requests/s and latency
percentiles (p50, p90, p99, p99.9, max) measured per request. --self starts the `gotalk serve`
operations in this process on an ephemeral loopback port: one command measures the whole
stack (client and server then share the machine's cores); --self --ws measures it over
WebSocket (ws://) instead of TCP. ADDR may be any address form, tls:// and wss:// included
(with --ca for a private CA).
A progress bar is drawn on stderr when it is a terminal.
With one connection (and with --self) the bench runs on one thread: all of its tasks share the
connection, and on one worker per core they would hop between cores (about half the rate);
with more connections it has one worker per core. --threads overrides either.
Throughput and latency count the requests that succeeded only (failures are counted apart).
Ctrl-C stops early: the partial results are printed, marked as interrupted.
--raw measures the limit of the same shape with no protocol: plain TCP connections, each
keeping -c messages of --size bytes in flight (sent in one write while the window allows,
counted as they come back), against `gotalk serve --raw-echo` at ADDR or, with --self, a raw
echo server in this process; op is then `raw echo`.
--json prints one object: requests, succeeded, errors, interrupted, duration_s,
requests_per_sec, p50_us, p90_us, p99_us, p999_us, max_us, mean_us (null when no request
succeeded), concurrency, conns, size, op, raw, addr.
Exit codes: 0 no request failed; 1 some requests failed (the first failure is named on
stderr); 2 a connection could not be made, the payload is over --max-payload, or invalid
usage (-n 0, --duration 0s); 130 interrupted by Ctrl-C.";

/// Arguments of `gotalk bench`.
#[derive(Args)]
pub(crate) struct BenchArgs {
    /// Server address: host:port, tls://host:port, unix:PATH, ws://host:port/path or wss://… (not with --self)
    #[arg(required_unless_present = "self_serve", conflicts_with = "self_serve")]
    addr: Option<Address>,
    /// Start an in-process server on an ephemeral loopback port and bench it, on one
    /// thread unless --threads says otherwise (client and server share the runtime: on
    /// one worker per core a request's tasks hop between cores, 0.6x the rate)
    #[arg(long = "self")]
    self_serve: bool,
    /// With --self: serve and bench over WebSocket (ws://) instead of TCP
    #[arg(long, conflicts_with = "addr")]
    ws: bool,
    /// The raw baseline: the same connections, requests in flight and payload size over
    /// plain TCP with no protocol (batched writes, counted echoes), against `gotalk serve
    /// --raw-echo` at ADDR or, with --self, an in-process raw echo server
    #[arg(long, conflicts_with_all = ["ws", "payload", "op"])]
    raw: bool,
    /// Operation to call
    #[arg(long, default_value = "echo")]
    op: String,
    /// Requests in flight per connection
    #[arg(short = 'c', long, default_value_t = 64, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    concurrency: u32,
    /// Total requests to complete (default 200000 unless --duration is given)
    #[arg(short = 'n', long, conflicts_with = "duration", value_parser = clap::value_parser!(u64).range(1..))]
    requests: Option<u64>,
    /// Run for this long instead of a number of requests
    #[arg(long, value_parser = parse_positive_duration, value_name = "DURATION")]
    duration: Option<Duration>,
    /// Payload size in bytes (a run of `x`)
    #[arg(long, default_value_t = 32, conflicts_with = "payload")]
    size: usize,
    /// Exact payload to send instead of --size bytes (e.g. '{"name":"X"}' for greet)
    #[arg(long)]
    payload: Option<String>,
    /// Connections to spread the load over (with more than one, the runtime has one
    /// worker per core unless --threads says otherwise; with one, one thread)
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=1024))]
    conns: u32,
    /// Largest payload sent or accepted (gotalk's default limit; with --self it is
    /// the in-process server's too, otherwise the server needs `serve --max-payload`)
    #[arg(long, default_value = "16MiB", value_parser = parse_size, value_name = "SIZE")]
    max_payload: u32,
    /// Print one JSON object instead of the report
    #[arg(long)]
    json: bool,
    /// Keep polling each connection for this long after it reads or writes, instead of
    /// sleeping (e.g. 50us; with --self the in-process server's too; with --raw the raw
    /// client's): lower latency where waking a sleeping thread is slow, at the cost of a
    /// CPU kept busy for the window after every read or write (`gotalk serve
    /// --busy-poll` does the same on the server's side)
    #[arg(long, value_parser = parse_positive_duration, value_name = "DURATION")]
    busy_poll: Option<Duration>,
    #[command(flatten)]
    trust: TrustArgs,
    #[command(flatten)]
    pub(crate) runtime: crate::RuntimeArgs,
}

impl BenchArgs {
    /// The runtime's threads: `--threads`, else one for `--self` (measured:
    /// one worker per core ran 0.60x of one thread at 64 in flight and
    /// 0.88x at 1, `docs/benchmarks.md`) and for one connection (all of the
    /// run's tasks share it; on one worker per core they hop between cores:
    /// 0.41-0.50x of one thread at 64 in flight against a separate server),
    /// else one worker per core (many connections: 1.0-1.1x of one thread
    /// at 100x6 and 1000x1).
    pub(crate) fn threads(&self) -> Option<u16> {
        self.runtime
            .threads
            .or((self.self_serve || self.conns == 1).then_some(1))
    }
}

/// What one task measured, besides the latencies it recorded.
pub(crate) struct TaskResult {
    pub(crate) errors: u64,
    pub(crate) first_error: Option<String>,
}

/// How the load ends.
#[derive(Clone, Copy)]
pub(crate) enum Stop {
    Count(u64),
    Deadline(Instant),
}

/// What every task shares.
pub(crate) struct Load {
    op: String,
    payload: Bytes,
    /// `echo`'s results must be as long as the payload.
    expect_len: Option<usize>,
    pub(crate) stop: Stop,
    /// Requests started (for [`Stop::Count`]).
    pub(crate) issued: AtomicU64,
    /// Requests finished (for the progress bar; updated in batches).
    pub(crate) done: AtomicU64,
    /// Set on Ctrl-C.
    pub(crate) halt: Arc<AtomicBool>,
}

/// Runs one task's request loop on `peer`.
async fn worker(peer: Peer, load: Arc<Load>, mut latencies: Recorder) -> TaskResult {
    let mut errors = 0u64;
    let mut first_error = None;
    let mut unreported = 0u64;
    // One clock reading per request: the end of one is the start of the
    // next, and the deadline is checked against it. The time stamp counter
    // (quanta's raw ticks, scaled to nanoseconds with its calibration
    // against the system clock) costs 22 ns a reading on this project's
    // virtual machine, the system clock 43 ns: a twentieth of the client's
    // time per request.
    let clock = quanta::Clock::new();
    let begin = clock.raw();
    let budget = match load.stop {
        Stop::Deadline(at) => at.saturating_duration_since(Instant::now()).as_nanos() as u64,
        Stop::Count(_) => u64::MAX,
    };
    let mut start = begin;
    loop {
        let go = match load.stop {
            Stop::Count(n) => load.issued.fetch_add(1, Ordering::Relaxed) < n,
            Stop::Deadline(_) => clock.delta_as_nanos(begin, start) < budget,
        };
        if !go || load.halt.load(Ordering::Relaxed) {
            break;
        }
        let result = peer.request(&load.op, load.payload.clone()).await;
        let end = clock.raw();
        let elapsed = clock.delta_as_nanos(start, end);
        start = end;
        match result {
            Ok(r) if load.expect_len.is_none_or(|n| n == r.len()) => {
                latencies.record(elapsed);
            }
            Ok(r) => {
                errors += 1;
                first_error.get_or_insert_with(|| {
                    format!(
                        "result of {} bytes, expected {}",
                        r.len(),
                        load.expect_len.unwrap_or(0)
                    )
                });
            }
            Err(e) => {
                errors += 1;
                let closed = e.is_closed();
                first_error.get_or_insert_with(|| e.to_string());
                if closed {
                    // The connection is gone: every further call would fail at once.
                    break;
                }
            }
        }
        unreported += 1;
        if unreported == 64 {
            load.done.fetch_add(unreported, Ordering::Relaxed);
            unreported = 0;
        }
    }
    load.done.fetch_add(unreported, Ordering::Relaxed);
    TaskResult {
        errors,
        first_error,
    }
}

fn progress_bar(stop: Stop, total_duration: Option<Duration>) -> ProgressBar {
    let bar = match (stop, total_duration) {
        (Stop::Count(n), _) => ProgressBar::new(n),
        (Stop::Deadline(_), Some(d)) => ProgressBar::new(d.as_millis() as u64),
        (Stop::Deadline(_), None) => ProgressBar::new(0),
    };
    let target = if std::io::stderr().is_terminal() {
        ProgressDrawTarget::stderr()
    } else {
        ProgressDrawTarget::hidden()
    };
    bar.set_draw_target(target);
    let template = match stop {
        Stop::Count(_) => "{bar:40} {pos}/{len} requests  {msg}",
        Stop::Deadline(_) => "{bar:40} {elapsed}  {msg}",
    };
    if let Ok(style) = ProgressStyle::with_template(template) {
        bar.set_style(style.progress_chars("=> "));
    }
    bar
}

/// A latency for people: µs below a millisecond, then ms, then s.
fn human(nanos: u64) -> String {
    let n = nanos as f64;
    if n < 1e6 {
        format!("{:.1} µs", n / 1e3)
    } else if n < 1e9 {
        format!("{:.2} ms", n / 1e6)
    } else {
        format!("{:.2} s", n / 1e9)
    }
}

/// Microseconds with one decimal, for JSON.
fn us(nanos: u64) -> f64 {
    (nanos as f64 / 100.0).round() / 10.0
}

/// `gotalk bench`.
pub(crate) async fn run(args: BenchArgs) -> u8 {
    let mut own_server = None;
    let mut own_echo = None;
    let target = match (&args.addr, args.self_serve) {
        (Some(a), _) => a.clone(),
        (None, _) if args.raw => {
            match raw::EchoServer::start("127.0.0.1:0", args.busy_poll).await {
                Ok(echo) => {
                    let local = Address::Tcp(echo.local_addr().to_owned());
                    own_echo = Some(echo);
                    local
                }
                Err(e) => {
                    eprintln!("gotalk: cannot start the in-process raw echo server: {e}");
                    return exit::TROUBLE;
                }
            }
        }
        (None, _) => {
            let addr = Address::Tcp("127.0.0.1:0".into());
            let options = ServeOptions {
                ws: args.ws.then(|| WsListen::new("127.0.0.1:0")),
                http: None,
                config: Config {
                    max_payload: args.max_payload,
                    busy_poll: args.busy_poll,
                    ..Config::default()
                },
                ..ServeOptions::default()
            };
            match server::start(&addr, options).await {
                Ok(s) => {
                    let local = match s.ws_url() {
                        Some(url) => Address::WebSocket(url.to_owned()),
                        None => Address::Tcp(s.local_addr().to_owned()),
                    };
                    own_server = Some(s);
                    local
                }
                Err(e) => {
                    eprintln!("gotalk: cannot start the in-process server: {e}");
                    return exit::TROUBLE;
                }
            }
        }
    };
    let code = bench(&args, &target).await;
    if let Some(s) = own_server {
        s.shutdown().await;
    }
    if let Some(echo) = own_echo {
        echo.stop();
    }
    code
}

/// The connections a run loads: gotalk peers, or plain TCP streams for `--raw`.
enum Conns {
    Gotalk(Vec<Peer>),
    Raw(Vec<TcpStream>),
}

/// Opens `--conns` connections to `target`; `None` once the failure is reported.
async fn open(args: &BenchArgs, target: &Address, config: &Config) -> Option<Conns> {
    if args.raw {
        let Address::Tcp(addr) = target else {
            eprintln!("gotalk: --raw needs a host:port address, not {target}");
            return None;
        };
        let connects = (0..args.conns).map(|_| raw::connect(addr));
        let mut streams = Vec::new();
        for r in futures::future::join_all(connects).await {
            match r {
                Ok(s) => streams.push(s),
                Err(e) => {
                    eprintln!("gotalk: cannot connect to {target}: {e}");
                    return None;
                }
            }
        }
        return Some(Conns::Raw(streams));
    }
    let connector = connector(target, &args.trust).ok()?;
    let connects =
        (0..args.conns).map(|_| connector.connect(Handlers::new(), config.clone(), None));
    let mut peers = Vec::new();
    for r in futures::future::join_all(connects).await {
        match r {
            Ok(p) => peers.push(p),
            Err(e) => {
                match connector.hint(&e) {
                    Some(hint) => {
                        eprintln!("gotalk: cannot connect to {target}: {e}\n  {hint}");
                    }
                    None => eprintln!("gotalk: cannot connect to {target}: {e}"),
                }
                for p in &peers {
                    p.abort();
                }
                return None;
            }
        }
    }
    Some(Conns::Gotalk(peers))
}

async fn bench(args: &BenchArgs, target: &Address) -> u8 {
    let payload: Vec<u8> = match &args.payload {
        Some(p) => p.clone().into_bytes(),
        None => vec![b'x'; args.size],
    };
    // Leaked (once per run) so that every request's clone of it is a copy
    // of a pointer, not a shared count changed twice per request by every
    // task: the harness's cost, not the library's.
    let payload = Bytes::from_static(payload.leak());
    if let Err(code) = check_payload_size(payload.len(), args.max_payload, "payload") {
        return code;
    }
    if args.raw && payload.is_empty() {
        // Echoes are counted in whole messages: an empty one never arrives.
        eprintln!("gotalk: --raw needs a payload of at least one byte (--size)");
        return exit::TROUBLE;
    }
    // echo's answer must be the payload; other operations are not checked.
    let expect_len = (args.op == "echo").then_some(payload.len());
    let config = Config {
        max_payload: args.max_payload,
        busy_poll: args.busy_poll,
        ..Config::default()
    };
    // Ctrl-C ends the run early but still reports what was measured.
    let halt = Arc::new(AtomicBool::new(false));
    let interrupt = {
        let halt = halt.clone();
        tokio::spawn(async move {
            if tokio::signal::ctrl_c().await.is_ok() {
                halt.store(true, Ordering::Relaxed);
            }
        })
    };

    let Some(conns) = open(args, target, &config).await else {
        interrupt.abort();
        return exit::TROUBLE;
    };

    let stop = match args.duration {
        Some(d) => Stop::Deadline(Instant::now() + d),
        None => Stop::Count(args.requests.unwrap_or(200_000)),
    };
    let bar = progress_bar(stop, args.duration);
    let load = Arc::new(Load {
        op: args.op.clone(),
        payload: payload.clone(),
        expect_len,
        stop,
        issued: AtomicU64::new(0),
        done: AtomicU64::new(0),
        halt: halt.clone(),
    });

    let started = Instant::now();
    let latencies = Latencies::new();
    let mut tasks = Vec::new();
    let peers = match conns {
        Conns::Gotalk(peers) => {
            for peer in &peers {
                for _ in 0..args.concurrency {
                    let recorder = latencies.recorder(tasks.len());
                    tasks.push(tokio::spawn(worker(peer.clone(), load.clone(), recorder)));
                }
            }
            peers
        }
        Conns::Raw(streams) => {
            for stream in streams {
                let recorder = latencies.recorder(tasks.len());
                let (load, size) = (load.clone(), payload.len());
                let in_flight = args.concurrency as usize;
                let task = raw::connection(stream, load, size, in_flight, args.busy_poll, recorder);
                tasks.push(tokio::spawn(task));
            }
            Vec::new()
        }
    };
    let ticker = {
        let bar = bar.clone();
        let load = load.clone();
        tokio::spawn(async move {
            let mut last = (Instant::now(), 0u64);
            loop {
                tokio::time::sleep(Duration::from_millis(200)).await;
                let now = Instant::now();
                let n = load.done.load(Ordering::Relaxed);
                let rate = (n - last.1) as f64 / now.duration_since(last.0).as_secs_f64();
                last = (now, n);
                match stop {
                    Stop::Count(_) => bar.set_position(n),
                    Stop::Deadline(_) => bar.set_position(started.elapsed().as_millis() as u64),
                }
                bar.set_message(format!("{rate:.0} req/s"));
            }
        })
    };

    let mut errors = 0u64;
    let mut first_error = None;
    for task in tasks {
        match task.await {
            Ok(r) => {
                errors += r.errors;
                if first_error.is_none() {
                    first_error = r.first_error;
                }
            }
            Err(e) => {
                errors += 1;
                first_error.get_or_insert_with(|| format!("bench task failed: {e}"));
            }
        }
    }
    let elapsed = started.elapsed();
    let histogram = latencies.merged();
    ticker.abort();
    interrupt.abort();
    bar.finish_and_clear();
    futures::future::join_all(peers.iter().map(Peer::close)).await;

    let interrupted = halt.load(Ordering::Relaxed);
    // Throughput and latency are those of the requests that succeeded.
    let ok = histogram.len();
    let requests = ok + errors;
    let secs = elapsed.as_secs_f64().max(1e-9);
    let rps = ok as f64 / secs;
    let latency = |p: f64| (ok > 0).then(|| histogram.value_at_quantile(p));
    let max = (ok > 0).then(|| histogram.max());
    // The raw baseline calls no operation.
    let op = if args.raw {
        "raw echo"
    } else {
        args.op.as_str()
    };
    if args.json {
        let q = |p: f64| latency(p).map(us);
        let report = serde_json::json!({
            "op": op,
            "raw": args.raw,
            "addr": target.to_string(),
            "requests": requests,
            "succeeded": ok,
            "errors": errors,
            "interrupted": interrupted,
            "duration_s": (secs * 1000.0).round() / 1000.0,
            "requests_per_sec": rps.round(),
            "p50_us": q(0.5),
            "p90_us": q(0.9),
            "p99_us": q(0.99),
            "p999_us": q(0.999),
            "max_us": max.map(us),
            "mean_us": (ok > 0).then(|| (histogram.mean() / 100.0).round() / 10.0),
            "concurrency": args.concurrency,
            "conns": args.conns,
            "size": payload.len(),
        });
        println!("{report}");
    } else {
        println!(
            "{} {} on {target}: {} in flight per connection × {} connection(s), {}-byte payload",
            if args.self_serve {
                "bench (in-process server)"
            } else {
                "bench"
            },
            op,
            args.concurrency,
            args.conns,
            payload.len()
        );
        if interrupted {
            println!("  INTERRUPTED by Ctrl-C: partial results");
        }
        println!("  requests    {requests} in {secs:.2} s: {ok} succeeded, {errors} failed");
        println!("  throughput  {rps:.0} requests/s (successful requests only)");
        let at = |p: f64| latency(p).map_or_else(|| "-".to_owned(), human);
        if ok == 0 {
            println!("  latency     none measured: no request succeeded");
        } else {
            println!(
                "  latency     p50 {}   p90 {}   p99 {}   p99.9 {}   max {}",
                at(0.5),
                at(0.9),
                at(0.99),
                at(0.999),
                max.map_or_else(|| "-".to_owned(), human)
            );
        }
    }
    if let Some(e) = &first_error {
        eprintln!("gotalk: {errors} request(s) failed; first: {e}");
    }
    if interrupted {
        eprintln!("gotalk: interrupted by Ctrl-C; the results above are partial");
        exit::INTERRUPTED
    } else if errors > 0 {
        exit::FAILED
    } else {
        exit::OK
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latency_units() {
        assert_eq!(human(21_700), "21.7 µs");
        assert_eq!(human(4_620_300), "4.62 ms");
        assert_eq!(human(2_500_000_000), "2.50 s");
        assert_eq!(us(137_649), 137.6);
    }
}
