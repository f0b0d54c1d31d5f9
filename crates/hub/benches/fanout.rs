//! Fan-out of the hub against Socket.IO 4.8: publications delivered to many
//! WebSocket subscribers, per second and with what latency, on one node and
//! on two nodes over Redis; and the server memory an idle subscribed
//! WebSocket connection costs.
//!
//! Run (after `npm ci` in `crates/hub/benches/socketio/` for Socket.IO):
//!
//! ```text
//! nice -n 10 cargo bench -p gotalk-hub --bench fanout --no-run
//! target/release/deps/fanout-<hash> --bench
//! ```
//!
//! Every role is this program again, in a process of its own, so the server
//! under measurement shares nothing with the load but the machine:
//!
//! - `server` (`FANOUT_ROLE=server`): a hub on a [`ws::WsListener`] with
//!   the hub's operations only ([`Hub::handlers`] of empty handlers), a
//!   [`MemoryBroker`], or a `RedisBroker` when `FANOUT_BROKER_URL` is set.
//!   Prints `url ws://...` and `pid N`, serves until its stdin closes.
//!   Socket.IO's server is `node crates/hub/benches/socketio/server.js`,
//!   which prints the same two lines.
//! - `subscribers`: opens `FANOUT_SUBS` WebSocket connections spread evenly
//!   over the servers, subscriber `i` on channel `i % FANOUT_CHANNELS`
//!   (gotalk: a `subscribe` request; Socket.IO: `emit("join", room)` with
//!   an ack), then answers `ready`. Each delivery's latency is its arrival
//!   time less the wall-clock time the publisher wrote into it (same
//!   machine, same clock), into an HDR histogram. On `drain` it waits for
//!   every expected delivery (or 5 s without one) and reports what came.
//! - `publisher`: one connection to the first server; publishes
//!   `FANOUT_MSGS` messages (`{"t":micros,"seq":k,"pad":"..."}`, about
//!   100 bytes), message `k` on channel `k % FANOUT_CHANNELS`, with the
//!   hub's own `publish` operation (the path a client's publication takes;
//!   the server answers once the publication is handed to the local
//!   subscribers, or to Redis) or Socket.IO's `emit("publish", room, data,
//!   ack)` (the server answers after `io.to(room).emit("m", data)`). At
//!   most `FANOUT_WINDOW` publications wait for their answer; with
//!   `FANOUT_RATE` > 0, no more than that many per second.
//! - The default role orchestrates: starts Redis when needed
//!   (`redis-server`, or the one at `FANOUT_REDIS`), the servers, the
//!   subscribers and the publisher, and prints a line per run and the
//!   medians.
//!
//! The Socket.IO client is our own minimal Engine.IO v4 / Socket.IO v5
//! client over tokio-tungstenite (the same WebSocket library under the
//! gotalk client), so both servers face the same client machinery.
//!
//! Environment (defaults of a `--bench` run):
//! - `FANOUT_TARGET` `gotalk`, `socketio` or `both` (both, alternating);
//! - `FANOUT_NODES` `1`, `2` or `1,2`; `FANOUT_REDIS` a Redis URL to use
//!   instead of starting one;
//! - `FANOUT_SUBS` (1000), `FANOUT_CHANNELS` (10), `FANOUT_MSGS` (10000),
//!   `FANOUT_RATE` (0: as fast as the window allows), `FANOUT_WINDOW` (16),
//!   `FANOUT_ROUNDS` (3), `FANOUT_SERVER_THREADS` (1: tokio worker threads
//!   of a hub server; Node runs JavaScript on one), `FANOUT_SIO_READ_BUFFER`
//!   (8192: the read buffer of our Socket.IO client, see `socketio_connect`),
//!   `FANOUT_REDIS_THREAD` (0; 1: the hub servers' Redis brokers run their
//!   connections on a thread of their own, one more than the worker threads),
//!   `FANOUT_WRITE_DELAY` (unset: none; milliseconds: the hub servers'
//!   [`HubBuilder::write_delay`](gotalk_hub::HubBuilder::write_delay)),
//!   `FANOUT_PACING` (unset or 0: none; milliseconds: the hub
//!   servers' [`HubBuilder::publish_pacing`](gotalk_hub::HubBuilder::publish_pacing)),
//!   `FANOUT_PACED` (0; K > 0 with both targets: each round runs Socket.IO
//!   as fast as its window allows, then gotalk's publisher paced at K times
//!   the publication rate Socket.IO reached: the latency of K times
//!   Socket.IO's best rate, against Socket.IO's at that rate);
//! - `FANOUT_SUBS_ON` `all` (subscribers spread over every node) or
//!   `others` (only on the nodes the publisher is not connected to; with
//!   two nodes or more);
//! - `FANOUT_MODE` `throughput`, `memory` or `all`; `FANOUT_MEM_CONNS`
//!   (`1000,10000`): memory per idle subscribed connection, as the growth
//!   of the server's RSS (`VmRSS`) over a fresh server that already has 16
//!   subscribed connections, divided by the count.
//!
//! Without `--bench` (as under `cargo test --benches`) it runs a smoke
//! version: 20 subscribers, 50 messages, one hub node on the memory broker,
//! and fails if a delivery is lost.

#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::{
    collections::HashMap,
    io::{BufRead, BufReader, Read, Write},
    path::PathBuf,
    process::{Child, ChildStdin, Command, Stdio},
    sync::{Arc, Mutex, mpsc},
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use bytes::Bytes;
use futures::{SinkExt, StreamExt, stream::FuturesUnordered};
use gotalk_hub::{Hub, broker::memory::MemoryBroker};
use gotalk_peer::{Config, Handlers, Peer, Server, ws};
use hdrhistogram::Histogram;
use tokio::net::TcpStream;
use tokio_tungstenite::{
    WebSocketStream,
    tungstenite::{Message, protocol::WebSocketConfig},
};

/// How long a child may take to say it is ready or done.
const STEP_TIMEOUT: Duration = Duration::from_secs(300);
/// A drain ends this long after the last delivery when some are missing.
const DRAIN_IDLE: Duration = Duration::from_secs(5);
/// Connections opened at once by the subscribers.
const CONNECT_CONCURRENCY: usize = 64;
/// Subscribed connections a server has before its memory baseline is read.
const MEM_WARMUP: usize = 16;
/// Time given to a server to settle before its RSS is read.
const MEM_SETTLE: Duration = Duration::from_secs(2);

fn main() {
    match std::env::var("FANOUT_ROLE").as_deref() {
        Ok("server") => server(),
        Ok("subscribers") => subscribers(),
        Ok("publisher") => publisher(),
        Ok(other) => panic!("unknown FANOUT_ROLE {other:?}"),
        Err(_) => orchestrate(),
    }
}

// ---------------------------------------------------------------- helpers

/// Whether this is a real run (`cargo bench`) rather than a smoke test.
fn full() -> bool {
    std::env::args().any(|a| a == "--bench")
}

fn env_or(var: &str, full: &str, smoke: &str) -> String {
    std::env::var(var).unwrap_or_else(|_| if self::full() { full } else { smoke }.to_string())
}

fn env_num(var: &str, full: usize, smoke: usize) -> usize {
    env_or(var, &full.to_string(), &smoke.to_string())
        .trim()
        .parse()
        .unwrap_or_else(|_| panic!("{var} must be a number"))
}

fn env_list(var: &str, full: &str, smoke: &str) -> Vec<usize> {
    env_or(var, full, smoke)
        .split(',')
        .map(|n| {
            n.trim()
                .parse()
                .unwrap_or_else(|_| panic!("{var}: numbers"))
        })
        .collect()
}

fn var(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| panic!("{name} is not set"))
}

fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_micros() as u64
}

/// Messages of a run that go to channel `c`.
fn per_channel(msgs: usize, channels: usize, c: usize) -> u64 {
    (msgs / channels + usize::from(c < msgs % channels)) as u64
}

/// The wall-clock micros after the first `"t":` of a delivery.
fn timestamp(frame: &[u8]) -> Option<u64> {
    let at = frame.windows(4).position(|w| w == b"\"t\":")? + 4;
    let digits = frame[at..].iter().take_while(|b| b.is_ascii_digit());
    let mut t: u64 = 0;
    let mut any = false;
    for d in digits {
        t = t.checked_mul(10)?.checked_add(u64::from(d - b'0'))?;
        any = true;
    }
    any.then_some(t)
}

/// The soft open-file limit, from `/proc/self/limits`.
fn fd_limit() -> Option<u64> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line["Max open files".len()..]
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

fn check_fd_limit(n: usize) {
    if let Some(limit) = fd_limit() {
        assert!(
            n as u64 + 64 <= limit,
            "{n} connections need more than the open-file limit {limit}: raise it (`ulimit -n`)"
        );
    }
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS")
}

/// User plus system CPU time of `pid` (all its threads), in clock ticks.
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("proc stat");
    // Fields after the command name (which may hold spaces), from field 3.
    let rest = &stat[stat.rfind(')').expect("stat") + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: u64 = fields[11].parse().expect("utime");
    let stime: u64 = fields[12].parse().expect("stime");
    utime + stime
}

fn clock_ticks_per_sec() -> u64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100)
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

// ---------------------------------------------------------------- targets

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Target {
    Gotalk,
    SocketIo,
}

impl Target {
    fn parse(s: &str) -> Self {
        match s {
            "gotalk" => Self::Gotalk,
            "socketio" => Self::SocketIo,
            other => panic!("unknown target {other:?} (gotalk or socketio)"),
        }
    }

    fn name(self) -> &'static str {
        match self {
            Self::Gotalk => "gotalk",
            Self::SocketIo => "socketio",
        }
    }
}

fn socketio_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("benches/socketio")
}

// ---------------------------------------------------------------- children

/// A child process driven by lines: stdin for commands, stdout read on a
/// thread so that every wait has a deadline.
struct Proc {
    name: String,
    child: Child,
    stdin: Option<ChildStdin>,
    lines: mpsc::Receiver<String>,
}

impl Proc {
    fn spawn(name: &str, mut command: Command) -> Self {
        let mut child = command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("start {name}: {e}"));
        let stdin = child.stdin.take();
        let stdout = child.stdout.take().expect("stdout");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Self {
            name: name.to_string(),
            child,
            stdin,
            lines,
        }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The next line that starts with `prefix` (others are echoed), without it.
    fn expect(&mut self, prefix: &str) -> String {
        let deadline = Instant::now() + STEP_TIMEOUT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => match line.strip_prefix(prefix) {
                    Some(rest) => return rest.trim().to_string(),
                    None => println!("  [{}] {line}", self.name),
                },
                Err(e) => panic!("{}: no `{prefix}` line ({e})", self.name),
            }
        }
    }

    fn send(&mut self, line: &str) {
        let stdin = self.stdin.as_mut().expect("stdin open");
        writeln!(stdin, "{line}").expect("write to child");
        stdin.flush().expect("write to child");
    }

    /// Closes stdin (the signal to stop) and waits for the process.
    fn finish(mut self) {
        self.stdin = None;
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            match self.child.try_wait().expect("wait") {
                Some(_) => return,
                None if Instant::now() > deadline => {
                    eprintln!("{} did not stop: killing it", self.name);
                    let _ = self.child.kill();
                    let _ = self.child.wait();
                    return;
                }
                None => std::thread::sleep(Duration::from_millis(20)),
            }
        }
    }
}

fn own_exe(role: &str) -> Command {
    let mut command = Command::new(std::env::current_exe().expect("current exe"));
    command.env("FANOUT_ROLE", role);
    if full() {
        command.arg("--bench");
    }
    command
}

struct ServerProc {
    proc: Proc,
    url: String,
    pid: u32,
}

fn start_server(target: Target, node: usize, redis: Option<&str>, threads: usize) -> ServerProc {
    let mut command = match target {
        Target::Gotalk => {
            let mut c = own_exe("server");
            c.env("FANOUT_SERVER_THREADS", threads.to_string());
            if let Some(url) = redis {
                c.env("FANOUT_BROKER_URL", url);
            }
            c
        }
        Target::SocketIo => {
            let dir = socketio_dir();
            assert!(
                dir.join("node_modules/socket.io").is_dir(),
                "Socket.IO is not installed: run `npm ci` in {}",
                dir.display()
            );
            let mut c = Command::new("node");
            c.arg("server.js").current_dir(dir);
            if let Some(url) = redis {
                c.env("REDIS_URL", url);
            }
            c
        }
    };
    command.env_remove("PORT");
    let mut proc = Proc::spawn(&format!("{} server {node}", target.name()), command);
    let url = proc.expect("url ");
    let pid: u32 = proc.expect("pid ").parse().expect("pid");
    ServerProc { proc, url, pid }
}

/// A `redis-server` of our own on a free loopback port.
struct RedisProc {
    child: Child,
    url: String,
}

impl RedisProc {
    fn start() -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .spawn()
            .expect(
                "redis-server (install it: crates/hub/tests/redis/setup.sh, or set FANOUT_REDIS)",
            );
        let redis = Self {
            child,
            url: format!("redis://127.0.0.1:{port}/"),
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while !redis_ping(port) {
            assert!(Instant::now() < deadline, "redis-server did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        redis
    }
}

impl Drop for RedisProc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn redis_ping(port: u16) -> bool {
    let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(1)));
    let mut answer = [0u8; 7];
    s.write_all(b"PING\r\n").is_ok() && s.read_exact(&mut answer).is_ok() && &answer == b"+PONG\r\n"
}

fn redis_pid(url: &str) -> Option<u32> {
    // Only for CPU accounting of a Redis we started: found by its port.
    let port = url.rsplit(':').next()?.trim_end_matches('/');
    let out = Command::new("pgrep")
        .args(["-f", &format!("redis-server 127.0.0.1:{port}")])
        .output()
        .ok()?;
    String::from_utf8(out.stdout)
        .ok()?
        .lines()
        .next()?
        .trim()
        .parse()
        .ok()
}

// ---------------------------------------------------------------- orchestration

#[derive(Debug, Clone)]
struct Load {
    subs: usize,
    channels: usize,
    msgs: usize,
    rate: usize,
    window: usize,
    threads: usize,
    /// Subscribers only on the nodes the publisher is not connected to
    /// (`FANOUT_SUBS_ON=others`): shows what the publishing node's own
    /// fan-out costs its publishers.
    subs_on_others: bool,
}

#[derive(Debug, Clone)]
struct RunResult {
    target: Target,
    nodes: usize,
    received: u64,
    expected: u64,
    secs: f64,
    /// From the first publication to the last answer: when it is well
    /// under `secs`, the deliveries trail the publisher (the fan-out is
    /// the bottleneck); when close to it, the publisher's window is.
    publish_secs: f64,
    rate: f64,
    p50_us: u64,
    p99_us: u64,
    max_us: u64,
    server_cpu_s: f64,
    redis_cpu_s: f64,
    subs_cpu_s: f64,
    closed: u64,
}

impl RunResult {
    fn loss(&self) -> u64 {
        self.expected.saturating_sub(self.received)
    }
}

fn orchestrate() {
    let load = Load {
        subs: env_num("FANOUT_SUBS", 1000, 20),
        channels: env_num("FANOUT_CHANNELS", 10, 4),
        msgs: env_num("FANOUT_MSGS", 10_000, 50),
        rate: env_num("FANOUT_RATE", 0, 0),
        window: env_num("FANOUT_WINDOW", 16, 4),
        threads: env_num("FANOUT_SERVER_THREADS", 1, 1),
        subs_on_others: match env_or("FANOUT_SUBS_ON", "all", "all").as_str() {
            "all" => false,
            "others" => true,
            other => panic!("unknown FANOUT_SUBS_ON {other:?} (all or others)"),
        },
    };
    assert!(load.channels > 0 && load.subs > 0 && load.window > 0);
    let targets: Vec<Target> = match env_or("FANOUT_TARGET", "both", "gotalk").as_str() {
        "both" => vec![Target::Gotalk, Target::SocketIo],
        one => vec![Target::parse(one)],
    };
    let nodes = env_list("FANOUT_NODES", "1,2", "1");
    let rounds = env_num("FANOUT_ROUNDS", 3, 1);
    // Pace gotalk's publisher at this multiple of the publication rate
    // Socket.IO just reached (0: both as fast as the window allows).
    let paced: f64 = env_or("FANOUT_PACED", "0", "0")
        .trim()
        .parse()
        .expect("FANOUT_PACED must be a number");
    assert!(
        paced == 0.0 || targets.len() == 2,
        "FANOUT_PACED needs FANOUT_TARGET=both"
    );
    let mode = env_or("FANOUT_MODE", "all", "throughput");
    println!(
        "fan-out: {load:?}, targets {:?}, nodes {nodes:?}, {rounds} round(s); load average {}",
        targets.iter().map(|t| t.name()).collect::<Vec<_>>(),
        load_average()
    );

    if mode == "throughput" || mode == "all" {
        let needs_redis = nodes.iter().any(|&n| n > 1);
        let own_redis = match std::env::var("FANOUT_REDIS") {
            Ok(_) => None,
            Err(_) if needs_redis => Some(RedisProc::start()),
            Err(_) => None,
        };
        let redis_url = std::env::var("FANOUT_REDIS")
            .ok()
            .or_else(|| own_redis.as_ref().map(|r| r.url.clone()));
        let mut results = Vec::new();
        let mut run = 0;
        for round in 0..rounds {
            for &n in &nodes {
                // Alternate which target goes first from one round to the
                // next; paced, Socket.IO goes first and sets gotalk's rate.
                let mut order = targets.clone();
                if paced > 0.0 {
                    order = vec![Target::SocketIo, Target::Gotalk];
                } else if round % 2 == 1 {
                    order.reverse();
                }
                let mut socketio_rate = 0.0;
                for &target in &order {
                    run += 1;
                    let redis = (n > 1).then(|| redis_url.as_deref().expect("a Redis URL"));
                    let mut load = load.clone();
                    if paced > 0.0 && target == Target::Gotalk {
                        load.rate = (paced * socketio_rate).round().max(1.0) as usize;
                        println!(
                            "  pacing gotalk at {paced}x Socket.IO's {socketio_rate:.0} publications/s: {}/s",
                            load.rate
                        );
                    }
                    let r = throughput_run(target, n, redis, &load, run);
                    if target == Target::SocketIo {
                        socketio_rate = load.msgs as f64 / r.publish_secs.max(1e-3);
                    }
                    print_row(&format!("round {}", round + 1), &r);
                    results.push(r);
                }
            }
        }
        println!(
            "\nmedians of {rounds} round(s), {} subscribers on {} channels, {} messages (load average now {}):",
            load.subs,
            load.channels,
            load.msgs,
            load_average()
        );
        let mut medians: HashMap<(usize, &'static str), RunResult> = HashMap::new();
        for &n in &nodes {
            for &target in &targets {
                let runs: Vec<&RunResult> = results
                    .iter()
                    .filter(|r| r.target == target && r.nodes == n)
                    .collect();
                let m = median_result(&runs);
                print_row("median", &m);
                medians.insert((n, target.name()), m);
            }
            if let (Some(g), Some(s)) = (medians.get(&(n, "gotalk")), medians.get(&(n, "socketio")))
            {
                println!(
                    "  {n} node(s): gotalk/socketio delivered msgs/s {:.2}x, p99 {:.2}x, server CPU per delivery {:.2}x",
                    g.rate / s.rate,
                    g.p99_us as f64 / s.p99_us as f64,
                    (g.server_cpu_s / g.received as f64) / (s.server_cpu_s / s.received as f64)
                );
            }
        }
        let lost: u64 = results.iter().map(RunResult::loss).sum();
        if !full() {
            assert_eq!(lost, 0, "deliveries lost in the smoke run");
            assert!(results.iter().all(|r| r.closed == 0), "connections closed");
        }
    }

    if mode == "memory" || mode == "all" {
        for &target in &targets {
            for n in env_list("FANOUT_MEM_CONNS", "1000,10000", "100") {
                memory_run(target, n, &load);
            }
        }
    }
}

fn median_by<T: Copy + PartialOrd>(runs: &[&RunResult], f: impl Fn(&RunResult) -> T) -> T {
    let mut v: Vec<T> = runs.iter().map(|r| f(r)).collect();
    v.sort_by(|a, b| a.partial_cmp(b).expect("comparable"));
    v[v.len() / 2]
}

/// Each figure the median of its own over the runs; loss and closes summed.
fn median_result(runs: &[&RunResult]) -> RunResult {
    let mut m = runs[0].clone();
    m.rate = median_by(runs, |r| r.rate);
    m.secs = median_by(runs, |r| r.secs);
    m.publish_secs = median_by(runs, |r| r.publish_secs);
    m.p50_us = median_by(runs, |r| r.p50_us);
    m.p99_us = median_by(runs, |r| r.p99_us);
    m.max_us = median_by(runs, |r| r.max_us);
    m.server_cpu_s = median_by(runs, |r| r.server_cpu_s);
    m.redis_cpu_s = median_by(runs, |r| r.redis_cpu_s);
    m.subs_cpu_s = median_by(runs, |r| r.subs_cpu_s);
    m.received = median_by(runs, |r| r.received);
    m.expected = runs[0].expected;
    m.closed = runs.iter().map(|r| r.closed).sum();
    m
}

fn print_row(label: &str, r: &RunResult) {
    println!(
        "  {label:<8} {:<8} {} node(s): {:>9.0} deliveries/s ({} in {:.2} s, published in {:.2} s), p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms, lost {}, closed {}; CPU s: servers {:.2}, redis {:.2}, subscribers {:.2}; server CPU {:.2} us/delivery",
        r.target.name(),
        r.nodes,
        r.rate,
        r.received,
        r.secs,
        r.publish_secs,
        r.p50_us as f64 / 1000.0,
        r.p99_us as f64 / 1000.0,
        r.max_us as f64 / 1000.0,
        r.loss(),
        r.closed,
        r.server_cpu_s,
        r.redis_cpu_s,
        r.subs_cpu_s,
        r.server_cpu_s * 1e6 / r.received.max(1) as f64,
    );
}

fn key_values(line: &str) -> HashMap<String, String> {
    line.split_whitespace()
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn num(map: &HashMap<String, String>, key: &str) -> u64 {
    map.get(key)
        .unwrap_or_else(|| panic!("no {key} in the report"))
        .parse()
        .expect("a number")
}

fn spawn_subscribers(
    target: Target,
    urls: &[String],
    subs: usize,
    load: &Load,
    prefix: &str,
) -> Proc {
    let mut command = own_exe("subscribers");
    command
        .env("FANOUT_TARGET", target.name())
        .env("FANOUT_URLS", urls.join(","))
        .env("FANOUT_SUBS", subs.to_string())
        .env("FANOUT_CHANNELS", load.channels.to_string())
        .env("FANOUT_MSGS", load.msgs.to_string())
        .env("FANOUT_PREFIX", prefix);
    Proc::spawn("subscribers", command)
}

fn throughput_run(
    target: Target,
    nodes: usize,
    redis: Option<&str>,
    load: &Load,
    run: usize,
) -> RunResult {
    check_fd_limit(load.subs);
    let prefix = format!("fanout-{}-{run}-", std::process::id());
    let servers: Vec<ServerProc> = (0..nodes)
        .map(|i| start_server(target, i, redis, load.threads))
        .collect();
    let urls: Vec<String> = servers.iter().map(|s| s.url.clone()).collect();
    // The publisher talks to `urls[0]`.
    let sub_urls = if load.subs_on_others && urls.len() > 1 {
        &urls[1..]
    } else {
        &urls[..]
    };
    let mut subs = spawn_subscribers(target, sub_urls, load.subs, load, &prefix);
    subs.expect("ready");
    // Let the servers finish what the subscriptions started.
    std::thread::sleep(Duration::from_millis(300));

    let redis_pid = redis.and_then(redis_pid);
    let cpu = |servers: &[ServerProc]| -> (u64, u64) {
        (
            servers.iter().map(|s| cpu_ticks(s.pid)).sum(),
            redis_pid.map_or(0, cpu_ticks),
        )
    };
    let (server_before, redis_before) = cpu(&servers);
    let subs_before = cpu_ticks(subs.pid());

    let mut command = own_exe("publisher");
    command
        .env("FANOUT_TARGET", target.name())
        .env("FANOUT_URL", &urls[0])
        .env("FANOUT_MSGS", load.msgs.to_string())
        .env("FANOUT_RATE", load.rate.to_string())
        .env("FANOUT_WINDOW", load.window.to_string())
        .env("FANOUT_CHANNELS", load.channels.to_string())
        .env("FANOUT_PREFIX", &prefix);
    let mut publisher = Proc::spawn("publisher", command);
    let published = key_values(&publisher.expect("published "));
    publisher.finish();

    subs.send("drain");
    let report = key_values(&subs.expect("result "));
    let (server_after, redis_after) = cpu(&servers);
    let subs_after = cpu_ticks(subs.pid());
    subs.finish();
    for s in servers {
        s.proc.finish();
    }

    let tck = clock_ticks_per_sec() as f64;
    let start = num(&published, "start_us");
    let received = num(&report, "received");
    let last = num(&report, "last_us").max(start + 1);
    let secs = (last - start) as f64 / 1e6;
    RunResult {
        target,
        nodes,
        received,
        expected: num(&report, "expected"),
        secs,
        publish_secs: (num(&published, "end_us").max(start) - start) as f64 / 1e6,
        rate: received as f64 / secs,
        p50_us: num(&report, "p50"),
        p99_us: num(&report, "p99"),
        max_us: num(&report, "max"),
        server_cpu_s: (server_after - server_before) as f64 / tck,
        redis_cpu_s: (redis_after - redis_before) as f64 / tck,
        subs_cpu_s: (subs_after - subs_before) as f64 / tck,
        closed: num(&report, "closed"),
    }
}

fn memory_run(target: Target, n: usize, load: &Load) {
    check_fd_limit(n + MEM_WARMUP);
    let server = start_server(target, 0, None, load.threads);
    let prefix = format!("mem-{}-", std::process::id());
    let mut subs = spawn_subscribers(
        target,
        std::slice::from_ref(&server.url),
        MEM_WARMUP,
        load,
        &prefix,
    );
    subs.expect("ready");
    std::thread::sleep(MEM_SETTLE);
    let before = rss_kib(server.pid);
    subs.send(&format!("open {n}"));
    subs.expect("ready");
    std::thread::sleep(MEM_SETTLE);
    let after = rss_kib(server.pid);
    let per = (after.saturating_sub(before) * 1024) as f64 / n as f64;
    println!(
        "  memory {:<8} {n:>6} idle subscribed connections: server RSS {before} -> {after} KiB, {per:.0} bytes ({:.2} KiB) per connection",
        target.name(),
        per / 1024.0
    );
    subs.finish();
    server.proc.finish();
}

// ---------------------------------------------------------------- server role

fn server() {
    let threads: usize = var("FANOUT_SERVER_THREADS").parse().expect("threads");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads.max(1))
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let mut builder = Hub::builder();
        if let Ok(ms) = std::env::var("FANOUT_WRITE_DELAY") {
            let ms: f64 = ms.parse().expect("FANOUT_WRITE_DELAY: milliseconds");
            builder = builder.write_delay(Duration::from_secs_f64(ms / 1e3));
        }
        if let Ok(ms) = std::env::var("FANOUT_PACING") {
            let ms: f64 = ms.parse().expect("FANOUT_PACING: milliseconds");
            builder = builder.publish_pacing(Duration::from_secs_f64(ms / 1e3));
        }
        let builder = match std::env::var("FANOUT_BROKER_URL") {
            Ok(url) => with_redis(builder, &url),
            Err(_) => builder.broker(MemoryBroker::new()),
        };
        let hub = builder.build().await.expect("hub");
        let listener = ws::WsListener::bind("127.0.0.1:0", ws::WsConfig::default())
            .await
            .expect("bind");
        let server = hub
            .attach(Server::new(
                listener,
                hub.handlers(Handlers::new()),
                Config::default(),
            ))
            .spawn();
        println!("url {}", server.local_addr());
        println!("pid {}", std::process::id());
        std::io::stdout().flush().expect("stdout");
        // Serve until the orchestrator closes our stdin.
        tokio::task::spawn_blocking(|| {
            let mut sink = Vec::new();
            let _ = std::io::stdin().read_to_end(&mut sink);
        })
        .await
        .expect("stdin");
        server.shutdown().await;
    });
}

#[cfg(feature = "redis")]
fn with_redis(builder: gotalk_hub::HubBuilder, url: &str) -> gotalk_hub::HubBuilder {
    use gotalk_hub::broker::redis::{RedisBroker, RedisBrokerOptions};
    let thread = std::env::var("FANOUT_REDIS_THREAD").is_ok_and(|v| v == "1");
    let options = RedisBrokerOptions::new().with_dedicated_thread(thread);
    builder.broker(RedisBroker::with_options(url, options).expect("Redis URL"))
}

#[cfg(not(feature = "redis"))]
fn with_redis(_: gotalk_hub::HubBuilder, _: &str) -> gotalk_hub::HubBuilder {
    panic!(
        "two hub nodes need the Redis broker: build the bench with the `redis` feature (a default one)"
    )
}

// ---------------------------------------------------------------- subscribers role

struct Stats {
    received: u64,
    malformed: u64,
    last_us: u64,
    latency: Histogram<u64>,
}

type SharedStats = Arc<Mutex<Stats>>;

fn record(stats: &SharedStats, frame: &[u8]) {
    let now = now_us();
    let mut s = stats.lock().expect("stats");
    match timestamp(frame) {
        Some(t) => {
            s.latency.saturating_record(now.saturating_sub(t).max(1));
            s.received += 1;
            s.last_us = now;
        }
        None => s.malformed += 1,
    }
}

/// One subscribed connection, of either kind.
enum Sub {
    Gotalk(Peer),
    SocketIo(tokio::task::JoinHandle<()>),
}

impl Sub {
    fn is_closed(&self) -> bool {
        match self {
            Self::Gotalk(peer) => peer.is_closed(),
            Self::SocketIo(task) => task.is_finished(),
        }
    }
}

fn subscribers() {
    let target = Target::parse(&var("FANOUT_TARGET"));
    let urls: Vec<String> = var("FANOUT_URLS").split(',').map(str::to_string).collect();
    let channels: usize = var("FANOUT_CHANNELS").parse().expect("channels");
    let msgs: usize = var("FANOUT_MSGS").parse().expect("msgs");
    let prefix = var("FANOUT_PREFIX");
    let first: usize = var("FANOUT_SUBS").parse().expect("subs");

    // Commands from the orchestrator, read on a thread.
    let (tx, mut commands) = tokio::sync::mpsc::unbounded_channel::<String>();
    std::thread::spawn(move || {
        for line in std::io::stdin().lock().lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async move {
        let stats: SharedStats = Arc::new(Mutex::new(Stats {
            received: 0,
            malformed: 0,
            last_us: 0,
            latency: Histogram::new_with_bounds(1, 600_000_000, 3).expect("histogram"),
        }));
        let mut subs: Vec<Sub> = Vec::new();
        let mut expected = 0u64;
        let open = |count: usize, subs_len: usize| {
            let urls = urls.clone();
            let prefix = prefix.clone();
            let stats = stats.clone();
            futures::stream::iter(subs_len..subs_len + count)
                .map(move |i| {
                    let url = urls[i % urls.len()].clone();
                    let channel = format!("{prefix}{}", i % channels);
                    let stats = stats.clone();
                    async move {
                        match target {
                            Target::Gotalk => subscribe_gotalk(&url, &channel, stats).await,
                            Target::SocketIo => subscribe_socketio(&url, &channel, stats).await,
                        }
                    }
                })
                .buffer_unordered(CONNECT_CONCURRENCY)
                .collect::<Vec<Sub>>()
        };
        let opened = open(first, 0).await;
        subs.extend(opened);
        expected += (0..first).map(|i| per_channel(msgs, channels, i % channels)).sum::<u64>();
        println!("ready");

        while let Some(line) = commands.recv().await {
            let mut words = line.split_whitespace();
            match words.next() {
                Some("open") => {
                    let n: usize = words.next().and_then(|n| n.parse().ok()).expect("count");
                    let start = subs.len();
                    let opened = open(n, start).await;
                    subs.extend(opened);
                    expected += (start..start + n)
                        .map(|i| per_channel(msgs, channels, i % channels))
                        .sum::<u64>();
                    println!("ready");
                }
                Some("drain") => {
                    drain(&stats, expected).await;
                    let s = stats.lock().expect("stats");
                    let closed = subs.iter().filter(|s| s.is_closed()).count();
                    println!(
                        "result received={} expected={expected} malformed={} last_us={} p50={} p99={} max={} closed={closed}",
                        s.received,
                        s.malformed,
                        s.last_us,
                        s.latency.value_at_quantile(0.5),
                        s.latency.value_at_quantile(0.99),
                        s.latency.max(),
                    );
                    assert_eq!(s.malformed, 0, "deliveries without a timestamp");
                }
                Some(other) => panic!("unknown command {other:?}"),
                None => {}
            }
        }
        for sub in subs {
            match sub {
                Sub::Gotalk(peer) => peer.abort(),
                Sub::SocketIo(task) => task.abort(),
            }
        }
    });
}

/// Waits until `expected` deliveries came, or none came for [`DRAIN_IDLE`].
async fn drain(stats: &SharedStats, expected: u64) {
    let mut last = (u64::MAX, Instant::now());
    loop {
        let received = stats.lock().expect("stats").received;
        if received >= expected {
            return;
        }
        if received != last.0 {
            last = (received, Instant::now());
        } else if last.1.elapsed() > DRAIN_IDLE {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn subscribe_gotalk(url: &str, channel: &str, stats: SharedStats) -> Sub {
    let handlers = Handlers::new().notification(channel, move |_ctx, payload: Bytes| {
        record(&stats, &payload);
        std::future::ready(())
    });
    let peer = ws::connect(url, handlers, Config::default())
        .await
        .unwrap_or_else(|e| panic!("connect {url}: {e}"));
    let answer = peer
        .request("subscribe", format!(r#"{{"channel":"{channel}"}}"#))
        .await
        .unwrap_or_else(|e| panic!("subscribe {channel}: {e}"));
    assert!(answer.starts_with(b"{"), "subscribe answer {answer:?}");
    Sub::Gotalk(peer)
}

// ---------------------------------------------------------------- Socket.IO client

type Ws = WebSocketStream<TcpStream>;

/// The read buffer of the Socket.IO client: `FANOUT_SIO_READ_BUFFER`,
/// default 8 KiB.
fn socketio_read_buffer() -> usize {
    std::env::var("FANOUT_SIO_READ_BUFFER")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(8 * 1024)
}

/// Opens an Engine.IO v4 WebSocket session and connects to the main
/// Socket.IO namespace: the server's open packet `0{...}`, our `40`, its
/// `40{"sid":...}`.
async fn socketio_connect(url: &str) -> Ws {
    let host = url
        .strip_prefix("ws://")
        .and_then(|rest| rest.split('/').next())
        .expect("a ws:// URL");
    let tcp = TcpStream::connect(host)
        .await
        .unwrap_or_else(|e| panic!("connect {host}: {e}"));
    tcp.set_nodelay(true).expect("nodelay");
    // tungstenite zero-fills its whole read buffer before every read (128
    // KiB by default); Socket.IO writes each event as a frame of its own, so
    // with the default this client would spend most of its time in memset.
    // `ws::connect` has no such setting: the gotalk client keeps the
    // default, which only handicaps the gotalk side.
    let config = WebSocketConfig::default().read_buffer_size(socketio_read_buffer());
    let (mut ws, _) = tokio_tungstenite::client_async_with_config(url, tcp, Some(config))
        .await
        .unwrap_or_else(|e| panic!("upgrade {url}: {e}"));
    let open = next_text(&mut ws).await;
    assert!(
        open.starts_with("0{"),
        "Engine.IO open packet, got {open:?}"
    );
    ws.send(Message::text("40")).await.expect("send connect");
    let connected = next_text(&mut ws).await;
    assert!(
        connected.starts_with("40"),
        "Socket.IO connect, got {connected:?}"
    );
    ws
}

/// The next text message, answering pings (`2` with `3`) on the way.
async fn next_text(ws: &mut Ws) -> String {
    loop {
        match ws.next().await {
            Some(Ok(Message::Text(t))) if t.as_str() == "2" => {
                ws.send(Message::text("3")).await.expect("pong");
            }
            Some(Ok(Message::Text(t))) => return t.as_str().to_string(),
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
            other => panic!("Socket.IO connection: {other:?}"),
        }
    }
}

async fn subscribe_socketio(url: &str, room: &str, stats: SharedStats) -> Sub {
    let mut ws = socketio_connect(url).await;
    // EVENT with ack id 0: `420["join","room"]`; the ack is `430[]`.
    ws.send(Message::text(format!(r#"420["join","{room}"]"#)))
        .await
        .expect("join");
    let ack = next_text(&mut ws).await;
    assert!(ack.starts_with("430"), "join ack, got {ack:?}");
    Sub::SocketIo(tokio::spawn(async move {
        while let Some(msg) = ws.next().await {
            match msg {
                Ok(Message::Text(t)) => {
                    let t = t.as_str();
                    if t == "2" {
                        if ws.send(Message::text("3")).await.is_err() {
                            return;
                        }
                    } else if t.starts_with(r#"42["m","#) {
                        record(&stats, t.as_bytes());
                    }
                }
                Ok(Message::Close(_)) | Err(_) => return,
                Ok(_) => {}
            }
        }
    }))
}

// ---------------------------------------------------------------- publisher role

fn publisher() {
    let target = Target::parse(&var("FANOUT_TARGET"));
    let url = var("FANOUT_URL");
    let msgs: usize = var("FANOUT_MSGS").parse().expect("msgs");
    let rate: usize = var("FANOUT_RATE").parse().expect("rate");
    let window: usize = var("FANOUT_WINDOW").parse().expect("window");
    let channels: usize = var("FANOUT_CHANNELS").parse().expect("channels");
    let prefix = var("FANOUT_PREFIX");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async move {
        let pace = Pace::new(rate);
        let (start, end) = match target {
            Target::Gotalk => publish_gotalk(&url, msgs, window, channels, &prefix, pace).await,
            Target::SocketIo => publish_socketio(&url, msgs, window, channels, &prefix, pace).await,
        };
        println!("published start_us={start} end_us={end} count={msgs}");
    });
}

/// When publication `k` may go: at once, or `k / rate` seconds after the start.
struct Pace {
    start: tokio::time::Instant,
    rate: usize,
}

impl Pace {
    fn new(rate: usize) -> Self {
        Self {
            start: tokio::time::Instant::now(),
            rate,
        }
    }

    fn at(&self, k: usize) -> tokio::time::Instant {
        if self.rate == 0 {
            self.start
        } else {
            self.start + Duration::from_secs_f64(k as f64 / self.rate as f64)
        }
    }
}

/// About 100 bytes of JSON, stamped with the wall clock.
fn message(k: usize) -> String {
    format!(
        r#"{{"t":{},"seq":{k},"pad":"{}"}}"#,
        now_us(),
        "x".repeat(64)
    )
}

async fn publish_gotalk(
    url: &str,
    msgs: usize,
    window: usize,
    channels: usize,
    prefix: &str,
    mut pace: Pace,
) -> (u64, u64) {
    let peer = ws::connect(url, Handlers::new(), Config::default())
        .await
        .unwrap_or_else(|e| panic!("connect {url}: {e}"));
    let start = now_us();
    pace.start = tokio::time::Instant::now();
    let mut in_flight = FuturesUnordered::new();
    let mut k = 0;
    while k < msgs || !in_flight.is_empty() {
        let can_send = k < msgs && in_flight.len() < window;
        tokio::select! {
            Some(answer) = in_flight.next(), if !in_flight.is_empty() => {
                let answer: Result<Bytes, _> = answer;
                let answer = answer.unwrap_or_else(|e| panic!("publish: {e}"));
                assert!(answer.starts_with(b"{\"offset\""), "publish answer {answer:?}");
            }
            () = tokio::time::sleep_until(pace.at(k)), if can_send => {
                let body = format!(
                    r#"{{"channel":"{prefix}{}","data":{}}}"#,
                    k % channels,
                    message(k)
                );
                in_flight.push(peer.request("publish", body));
                k += 1;
            }
        }
    }
    let end = now_us();
    peer.close().await;
    (start, end)
}

async fn publish_socketio(
    url: &str,
    msgs: usize,
    window: usize,
    channels: usize,
    prefix: &str,
    mut pace: Pace,
) -> (u64, u64) {
    let ws = socketio_connect(url).await;
    let (mut tx, mut rx) = ws.split();
    let start = now_us();
    pace.start = tokio::time::Instant::now();
    let mut in_flight = 0usize;
    let mut k = 0;
    while k < msgs || in_flight > 0 {
        let can_send = k < msgs && in_flight < window;
        tokio::select! {
            msg = rx.next() => match msg {
                Some(Ok(Message::Text(t))) => {
                    let t = t.as_str();
                    if t == "2" {
                        tx.send(Message::text("3")).await.expect("pong");
                    } else if t.starts_with("43") {
                        in_flight -= 1;
                    } else {
                        panic!("publisher got {t:?}");
                    }
                }
                Some(Ok(_)) => {}
                other => panic!("publisher connection: {other:?}"),
            },
            () = tokio::time::sleep_until(pace.at(k)), if can_send => {
                // EVENT with ack id k: `42k["publish","room",data]`; ack `43k[]`.
                let packet = format!(
                    r#"42{k}["publish","{prefix}{}",{}]"#,
                    k % channels,
                    message(k)
                );
                tx.send(Message::text(packet)).await.expect("publish");
                in_flight += 1;
                k += 1;
            }
        }
    }
    let end = now_us();
    let _ = tx.close().await;
    (start, end)
}
