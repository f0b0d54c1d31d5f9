//! Memory of idle connections, and of connection churn, measured as the
//! resident set (`VmRSS` in `/proc/<pid>/status`) of a gotalk server.
//!
//! Run: `cargo bench -p gotalk-peer --bench idle`
//!
//! The server is in this process (a `Server` on 127.0.0.1 with an `echo`
//! handler, on a 2-worker tokio runtime); the clients are raw TCP sockets in
//! a child process (this program again), so they cost the server nothing
//! but their sockets and neither process needs more than N file descriptors.
//! Each client exchanges versions, makes one `echo` request, reads the
//! result and then stays open, idle.
//!
//! - `idle`: opens `IDLE_CONNS` connections (default `1000,10000`, each
//!   count from the same start) and reports the growth of RSS per
//!   connection.
//! - `churn`: `IDLE_CHURN_CYCLES` cycles (default 10) of opening
//!   `IDLE_CHURN_CONNS` connections (default 5000) and closing them all;
//!   reports RSS after each cycle against RSS before the first.
//! - `IDLE_MODE`: `idle` or `churn` for only one; by default each runs in a
//!   fresh process of its own.
//! - `IDLE_ADDR` and `IDLE_PID`: measure an external server instead (for
//!   example `gotalk serve --listen 127.0.0.1:PORT`).
//!
//! Without `--bench` (as under `cargo test --benches`) it runs a small
//! version (200 connections, 2 cycles of 200) as a smoke test.

#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::{
    io::{BufRead, BufReader, Write},
    process::{Child, ChildStdin, ChildStdout, Command, Stdio},
    time::Duration,
};

use bytes::Bytes;
use gotalk_peer::{Config, HandlerError, Handlers, Server, ServerHandle};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};

const REQUEST: &[u8] = b"01r0001004echo00000002hi";
const REPLY: &[u8] = b"01R000100000002hi";
/// How long the server is given to settle before RSS is read.
const SETTLE: Duration = Duration::from_millis(300);

fn main() {
    match std::env::var("IDLE_ROLE").as_deref() {
        Ok("client") => client(),
        Ok("server") => server(&std::env::var("IDLE_MODE").expect("IDLE_MODE")),
        _ => match std::env::var("IDLE_MODE") {
            Ok(mode) => server(&mode),
            // Each mode from a fresh process.
            Err(_) => {
                for mode in ["idle", "churn"] {
                    let status = Command::new(std::env::current_exe().expect("current exe"))
                        .args(std::env::args().skip(1))
                        .env("IDLE_ROLE", "server")
                        .env("IDLE_MODE", mode)
                        .status()
                        .expect("run a mode");
                    assert!(status.success(), "mode {mode} failed");
                }
            }
        },
    }
}

/// Whether this is a real run (`cargo bench`) rather than a smoke test.
fn full() -> bool {
    std::env::args().any(|a| a == "--bench")
}

fn env_list(var: &str, full: &str, smoke: &str) -> Vec<usize> {
    let default = if self::full() { full } else { smoke };
    std::env::var(var)
        .unwrap_or_else(|_| default.to_string())
        .split(',')
        .map(|n| n.trim().parse().expect("a number"))
        .collect()
}

/// The soft open-file limit, from `/proc/self/limits` (`unsafe` is denied
/// in this workspace, so `getrlimit` is not called).
fn fd_limit() -> Option<u64> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line["Max open files".len()..]
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// Fails early, with the fix, when `n` sockets will not fit.
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

/// The server under measurement: in this process, or external.
struct Target {
    addr: String,
    pid: u32,
    handle: Option<ServerHandle>,
    rt: tokio::runtime::Runtime,
}

impl Target {
    fn start() -> Self {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime");
        if let (Ok(addr), Ok(pid)) = (std::env::var("IDLE_ADDR"), std::env::var("IDLE_PID")) {
            let pid = pid.parse().expect("IDLE_PID");
            return Self {
                addr,
                pid,
                handle: None,
                rt,
            };
        }
        let handlers = Handlers::new().buffer("echo", |_ctx, payload: Bytes| async move {
            Ok::<_, HandlerError>(payload)
        });
        let handle = rt.block_on(async {
            Server::bind("127.0.0.1:0", handlers, Config::default())
                .await
                .expect("bind")
                .spawn()
        });
        Self {
            addr: handle.local_addr().to_string(),
            pid: std::process::id(),
            handle: Some(handle),
            rt,
        }
    }

    /// Waits until the server has `count` connections (in process), then
    /// lets it settle.
    fn settle(&self, count: usize) {
        if let Some(handle) = &self.handle {
            for _ in 0..2000 {
                if handle.connection_count() == count {
                    break;
                }
                std::thread::sleep(Duration::from_millis(5));
            }
            assert_eq!(handle.connection_count(), count, "server connections");
            std::thread::sleep(SETTLE);
        } else {
            std::thread::sleep(4 * SETTLE);
        }
    }

    fn rss(&self) -> u64 {
        rss_kib(self.pid)
    }
}

/// The client child process, driven by lines on its stdin.
struct Clients {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
}

impl Clients {
    fn spawn(addr: &str) -> Self {
        let mut child = Command::new(std::env::current_exe().expect("current exe"))
            .env("IDLE_ROLE", "client")
            .env("IDLE_TARGET", addr)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("client process");
        let stdin = child.stdin.take().expect("stdin");
        let stdout = BufReader::new(child.stdout.take().expect("stdout"));
        Self {
            child,
            stdin,
            stdout,
        }
    }

    fn command(&mut self, line: &str) {
        writeln!(self.stdin, "{line}").expect("to client");
        self.stdin.flush().expect("to client");
        let mut answer = String::new();
        self.stdout.read_line(&mut answer).expect("from client");
        assert_eq!(answer.trim(), "ok", "client: {line}");
    }

    fn open(&mut self, n: usize) {
        self.command(&format!("open {n}"));
    }

    fn close(&mut self) {
        self.command("close");
    }
}

impl Drop for Clients {
    fn drop(&mut self) {
        let _ = writeln!(self.stdin, "quit");
        let _ = self.child.wait();
    }
}

fn server(mode: &str) {
    let target = Target::start();
    let mut clients = Clients::spawn(&target.addr);
    // Warm up: runtime threads, the accept path, the first allocations.
    clients.open(16);
    clients.close();
    target.settle(0);
    let pid = target.pid;
    match mode {
        "idle" => {
            println!("idle connections (server pid {pid}):");
            for n in env_list("IDLE_CONNS", "1000,10000", "200") {
                check_fd_limit(n);
                let before = target.rss();
                clients.open(n);
                target.settle(n);
                let after = target.rss();
                let per = (after.saturating_sub(before) * 1024) as f64 / n as f64;
                println!(
                    "  {n:>6} connections: RSS {before} -> {after} KiB, {per:.0} bytes ({:.2} KiB) per connection",
                    per / 1024.0
                );
                clients.close();
                target.settle(0);
            }
        }
        "churn" => {
            let cycles = env_list("IDLE_CHURN_CYCLES", "10", "2")[0];
            let n = env_list("IDLE_CHURN_CONNS", "5000", "200")[0];
            check_fd_limit(n);
            let start = target.rss();
            println!(
                "churn: {cycles} cycles of {n} connections opened and closed (server pid {pid}):"
            );
            println!("  start: RSS {start} KiB");
            let mut last = start;
            for cycle in 1..=cycles {
                clients.open(n);
                target.settle(n);
                let open = target.rss();
                clients.close();
                target.settle(0);
                last = target.rss();
                println!("  cycle {cycle:>2}: {open} KiB with {n} open, {last} KiB after closing");
            }
            println!(
                "  end: RSS {last} KiB, {:+.1} % of the start",
                (last as f64 / start as f64 - 1.0) * 100.0
            );
        }
        other => panic!("unknown IDLE_MODE {other:?}"),
    }
    drop(clients);
    if let Some(handle) = target.handle {
        target.rt.block_on(handle.shutdown());
    }
}

/// The client role: opens and closes raw connections as told on stdin.
fn client() {
    let addr = std::env::var("IDLE_TARGET").expect("IDLE_TARGET");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let mut open: Vec<TcpStream> = Vec::new();
    let stdin = std::io::stdin();
    let mut stdout = std::io::stdout();
    for line in stdin.lock().lines() {
        let line = line.expect("stdin");
        let mut words = line.split_whitespace();
        match words.next() {
            Some("open") => {
                let n: usize = words.next().and_then(|n| n.parse().ok()).expect("count");
                rt.block_on(async {
                    let mut left = n;
                    while left > 0 {
                        let batch = left.min(256);
                        let mut tasks = tokio::task::JoinSet::new();
                        for _ in 0..batch {
                            let addr = addr.clone();
                            tasks.spawn(async move { one(&addr).await });
                        }
                        while let Some(stream) = tasks.join_next().await {
                            open.push(stream.expect("client task"));
                        }
                        left -= batch;
                    }
                });
            }
            Some("close") => open.clear(),
            _ => return,
        }
        writeln!(stdout, "ok").expect("stdout");
        stdout.flush().expect("stdout");
    }
}

/// One connection: versions, one echo request, its result.
async fn one(addr: &str) -> TcpStream {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    stream.write_all(REQUEST).await.expect("request");
    let mut reply = [0u8; REPLY.len()];
    stream.read_exact(&mut reply).await.expect("reply");
    assert_eq!(&reply[..], REPLY);
    stream
}
