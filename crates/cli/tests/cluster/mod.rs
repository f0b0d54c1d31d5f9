//! A hub cluster for the multi-node tests: one throwaway `redis-server`
//! (see `crates/hub/tests/support/redis_server.rs`) and separate
//! `gotalk serve --hub --redis URL` processes on it, driven by
//! [`gotalk_peer::Peer`] clients speaking the wire mapping of docs/hub.md.
//!
//! Everything is on loopback with ephemeral ports, every wait is bounded,
//! and every process is killed when its handle is dropped (a failing test
//! too; the nodes' stderr is printed then).

#![allow(dead_code)]
#![allow(clippy::print_stderr)]

use std::{
    future::Future,
    process::Stdio,
    sync::{Arc, Mutex},
    time::Duration,
};

use bytes::Bytes;
use gotalk_peer::{CloseReason, Config, Error, Handlers, Peer};
use serde_json::{Value, json};
use tokio::{
    io::{AsyncBufReadExt, AsyncRead, BufReader},
    process::{Child, Command},
    sync::mpsc,
    time::Instant,
};

use crate::redis_server::RedisServer;

/// The `gotalk` binary under test.
pub(crate) const BIN: &str = env!("CARGO_BIN_EXE_gotalk");

/// Upper bound for anything that should happen promptly: far above what a
/// healthy run needs (a loaded 2-core CI machine included), small enough
/// that a hang fails its test instead of the suite.
pub(crate) const WAIT: Duration = Duration::from_secs(10);

/// The most of a node's stderr kept for diagnostics (its tail).
const STDERR_KEPT: usize = 64 * 1024;

/// Awaits `fut`, failing the test if it takes longer than `limit`.
pub(crate) async fn within<F: Future>(limit: Duration, what: &str, fut: F) -> F::Output {
    match tokio::time::timeout(limit, fut).await {
        Ok(out) => out,
        Err(_) => panic!("timed out after {limit:?} waiting for: {what}"),
    }
}

/// Polls `check` every few milliseconds until it returns `Some`, failing
/// after `limit` with `what` and the last thing `check` said.
pub(crate) async fn eventually<T, F, Fut>(limit: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, String>>,
{
    let deadline = Instant::now() + limit;
    loop {
        let last = match check().await {
            Ok(value) => return value,
            Err(last) => last,
        };
        assert!(
            Instant::now() < deadline,
            "not within {limit:?}: {what}; last: {last}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// One Redis and the hub nodes on it.
pub(crate) struct Cluster {
    pub(crate) redis: RedisServer,
    pub(crate) nodes: Vec<Node>,
}

impl Cluster {
    /// Redis and `nodes` hub nodes on it (default prefix: they share
    /// everything). `None` when `redis-server` is missing outside CI (the
    /// test is skipped with a message; in CI it fails).
    pub(crate) async fn start(test: &str, nodes: usize) -> Option<Self> {
        Self::start_with(test, nodes, &[]).await
    }

    /// [`start`](Self::start) with `extra` arguments for every node.
    pub(crate) async fn start_with(test: &str, nodes: usize, extra: &[&str]) -> Option<Self> {
        let redis = RedisServer::start(test).await?;
        let url = redis.url();
        let starting: Vec<_> = (0..nodes)
            .map(|i| Node::start(format!("node{i}"), &url, extra))
            .collect();
        let nodes = futures::future::join_all(starting).await;
        Some(Self { redis, nodes })
    }

    /// A plain connection to Redis, to look at what the nodes left there.
    pub(crate) async fn redis_connection(&self) -> redis::aio::MultiplexedConnection {
        let client = redis::Client::open(self.redis.url()).expect("redis URL");
        within(
            WAIT,
            "a test connection to Redis",
            client.get_multiplexed_async_connection(),
        )
        .await
        .expect("connect to the test Redis")
    }
}

/// A `gotalk serve --hub --redis URL` process, killed when dropped.
pub(crate) struct Node {
    name: String,
    child: Child,
    pid: u32,
    addr: String,
    stderr: Arc<Mutex<String>>,
}

impl Node {
    /// Starts `gotalk serve --hub --redis URL --addr 127.0.0.1:0
    /// --heartbeat off EXTRA...` and waits for its `listening on ADDR`.
    pub(crate) async fn start(name: String, redis_url: &str, extra: &[&str]) -> Self {
        let mut command = Command::new(BIN);
        command
            .args(["serve", "--hub", "--redis", redis_url])
            .args(["--addr", "127.0.0.1:0", "--heartbeat", "off"])
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        if std::env::var_os("RUST_LOG").is_none() {
            command.env("RUST_LOG", "warn");
        }
        let mut child = command.spawn().expect("spawn gotalk serve");
        let pid = child.id().expect("a running child has a pid");
        let stderr = Arc::new(Mutex::new(String::new()));
        tokio::spawn(keep_tail(
            child.stderr.take().expect("piped"),
            stderr.clone(),
        ));
        let mut stdout = BufReader::new(child.stdout.take().expect("piped")).lines();
        let first = tokio::time::timeout(WAIT, stdout.next_line()).await;
        let addr = match first {
            Ok(Ok(Some(line))) if line.starts_with("listening on ") => {
                line["listening on ".len()..].to_owned()
            }
            other => {
                let _ = child.start_kill();
                let _ = tokio::time::timeout(WAIT, child.wait()).await;
                panic!(
                    "{name}: `gotalk serve` printed no address ({other:?}); stderr:\n{}",
                    lock(&stderr)
                );
            }
        };
        // `serve` prints nothing more on stdout without --trace; drain it
        // anyway so that a full pipe can never block the node.
        tokio::spawn(async move { while let Ok(Some(_)) = stdout.next_line().await {} });
        Self {
            name,
            child,
            pid,
            addr,
            stderr,
        }
    }

    pub(crate) fn name(&self) -> &str {
        &self.name
    }

    /// What clients connect to (`127.0.0.1:PORT`).
    pub(crate) fn addr(&self) -> &str {
        &self.addr
    }

    /// What the node wrote on stderr (the last 64 KiB).
    pub(crate) fn stderr(&self) -> String {
        lock(&self.stderr).clone()
    }

    /// A new client of this node.
    pub(crate) async fn client(&self) -> Client {
        Client::connect(&self.addr, &self.name).await
    }

    /// Kills the node with SIGKILL (a crash: no cleanup at all) and waits
    /// for it to be gone.
    pub(crate) async fn kill(&mut self) {
        self.child.start_kill().expect("SIGKILL the node");
        let status = within(WAIT, "the killed node to exit", self.child.wait())
            .await
            .expect("wait for the node");
        assert!(!status.success(), "{}: killed, yet {status}", self.name);
    }

    /// Fails unless the process still runs, never panicked, and answers
    /// `echo` on a new connection.
    pub(crate) async fn assert_serving(&mut self) {
        let status = self.child.try_wait().expect("check the node process");
        assert!(
            status.is_none(),
            "{} exited with {status:?}; stderr:\n{}",
            self.name,
            self.stderr()
        );
        let stderr = self.stderr();
        assert!(
            !stderr.contains("panicked"),
            "{} panicked:\n{stderr}",
            self.name
        );
        let client = self.client().await;
        let echoed = within(WAIT, "echo", client.peer.request("echo", "still here"))
            .await
            .unwrap_or_else(|e| panic!("{}: echo failed: {e}", self.name));
        assert_eq!(echoed, "still here", "{}: echo", self.name);
        client.close().await;
    }

    /// The process's resident set size (VmRSS), in KiB.
    pub(crate) fn rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid))
            .unwrap_or_else(|e| panic!("{}: /proc/{}/status: {e}", self.name, self.pid));
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or_else(|| panic!("{}: no VmRSS in /proc/{}/status", self.name, self.pid))
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        // kill_on_drop kills it; the runtime reaps it.
        let _ = self.child.start_kill();
        if std::thread::panicking() {
            let stderr = self.stderr();
            if !stderr.is_empty() {
                eprintln!("--- stderr of {} ({}):\n{stderr}", self.name, self.addr);
            }
        }
    }
}

/// Keeps the last [`STDERR_KEPT`] bytes of a pipe's lines in `tail`.
async fn keep_tail(pipe: impl AsyncRead + Unpin, tail: Arc<Mutex<String>>) {
    let mut lines = BufReader::new(pipe).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        let mut tail = lock(&tail);
        tail.push_str(&line);
        tail.push('\n');
        if tail.len() > STDERR_KEPT {
            let mut cut = tail.len() - STDERR_KEPT / 2;
            while !tail.is_char_boundary(cut) {
                cut += 1;
            }
            tail.drain(..cut);
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// A delivery: the notification's name (the channel) and its JSON.
#[derive(Debug, Clone)]
pub(crate) struct Delivery {
    pub(crate) channel: String,
    pub(crate) body: Value,
}

impl Delivery {
    /// The publication's offset, if this is one.
    pub(crate) fn offset(&self) -> Option<u64> {
        self.body.get("offset").and_then(Value::as_u64)
    }

    pub(crate) fn epoch(&self) -> &str {
        self.body["epoch"].as_str().unwrap_or_default()
    }
}

/// A hub client: a [`Peer`] whose every notification lands, in arrival
/// order, in [`next`](Self::next).
pub(crate) struct Client {
    pub(crate) peer: Peer,
    /// Which node it is connected to, for messages.
    pub(crate) node: String,
    deliveries: mpsc::UnboundedReceiver<Delivery>,
}

impl Client {
    pub(crate) async fn connect(addr: &str, node: &str) -> Self {
        let (tx, deliveries) = mpsc::unbounded_channel();
        // The fallback handler: every notification whatever its name. It
        // queues before returning its future, so arrival order is kept.
        let handlers = Handlers::new().notification("", move |ctx, payload: Bytes| {
            let body = serde_json::from_slice(&payload).unwrap_or_else(|e| {
                json!({ "undecodable": e.to_string(), "raw": String::from_utf8_lossy(&payload) })
            });
            let _ = tx.send(Delivery {
                channel: ctx.name().to_owned(),
                body,
            });
            async {}
        });
        let config = Config {
            heartbeat_interval: None,
            ..Config::default()
        };
        let peer = within(
            WAIT,
            &format!("connect to {node}"),
            Peer::connect(addr.to_owned(), handlers, config),
        )
        .await
        .unwrap_or_else(|e| panic!("connect to {node} at {addr}: {e}"));
        Self {
            peer,
            node: node.to_owned(),
            deliveries,
        }
    }

    /// Sends request `op` with `input`: the JSON result, or the error
    /// result's text (or the connection's error, described).
    pub(crate) async fn try_request(&self, op: &str, input: &Value) -> Result<Value, String> {
        let what = format!("{op} {input} on {}", self.node);
        let payload = Bytes::from(serde_json::to_vec(input).expect("JSON"));
        match within(WAIT, &what, self.peer.request(op, payload)).await {
            Ok(out) => Ok(serde_json::from_slice(&out)
                .unwrap_or_else(|e| panic!("{what}: the result is not JSON ({e}): {out:?}"))),
            Err(Error::Remote(remote)) => Err(remote.message()),
            Err(e) => Err(format!("(connection) {e}")),
        }
    }

    /// [`try_request`](Self::try_request) that must succeed.
    pub(crate) async fn request(&self, op: &str, input: &Value) -> Value {
        self.try_request(op, input)
            .await
            .unwrap_or_else(|e| panic!("{op} {input} on {}: {e}", self.node))
    }

    /// `subscribe` with these fields (`channel` and any of `since`,
    /// `presence`, `events`).
    pub(crate) async fn subscribe(&self, input: Value) -> Value {
        self.request("subscribe", &input).await
    }

    /// `publish` of `data` on `channel`: its position.
    pub(crate) async fn publish(&self, channel: &str, data: Value) -> (u64, String) {
        let out = self
            .request("publish", &json!({ "channel": channel, "data": data }))
            .await;
        position(&out)
    }

    /// The client ids in `channel`'s presence, sorted.
    pub(crate) async fn presence(&self, channel: &str) -> Vec<String> {
        let out = self
            .request("presence", &json!({ "channel": channel }))
            .await;
        let mut ids: Vec<String> = out["clients"]
            .as_array()
            .unwrap_or_else(|| panic!("presence result without clients: {out}"))
            .iter()
            .map(|c| c["client"].as_str().expect("client id").to_owned())
            .collect();
        ids.sort();
        ids
    }

    /// The next delivery, waiting at most [`WAIT`].
    pub(crate) async fn next(&mut self) -> Delivery {
        let what = format!("a delivery on {}", self.node);
        within(WAIT, &what, self.deliveries.recv())
            .await
            .unwrap_or_else(|| panic!("{what}: the connection is gone"))
    }

    /// The next delivery if one arrives within `limit`.
    pub(crate) async fn next_within(&mut self, limit: Duration) -> Option<Delivery> {
        tokio::time::timeout(limit, self.deliveries.recv())
            .await
            .ok()
            .flatten()
    }

    /// What has arrived and not been taken yet, without waiting.
    pub(crate) fn drain(&mut self) -> Vec<Delivery> {
        let mut out = Vec::new();
        while let Ok(d) = self.deliveries.try_recv() {
            out.push(d);
        }
        out
    }

    /// The next `n` deliveries, each of which must be a publication on
    /// `channel`.
    pub(crate) async fn publications(&mut self, channel: &str, n: usize) -> Vec<Delivery> {
        let mut out = Vec::with_capacity(n);
        while out.len() < n {
            let d = self.next().await;
            assert!(
                d.channel == channel && d.offset().is_some(),
                "{}: expected publication {} of {n} on {channel}, got {d:?}",
                self.node,
                out.len() + 1
            );
            out.push(d);
        }
        out
    }

    /// Waits (bounded) until the server closed the connection.
    pub(crate) async fn closed(&self) -> CloseReason {
        within(
            WAIT,
            &format!("the connection to {} to close", self.node),
            self.peer.closed(),
        )
        .await
    }

    pub(crate) async fn close(self) {
        within(WAIT, "closing a client", self.peer.close()).await;
    }
}

/// `{"offset", "epoch"}` of a result.
pub(crate) fn position(out: &Value) -> (u64, String) {
    let offset = out["offset"]
        .as_u64()
        .unwrap_or_else(|| panic!("no offset in {out}"));
    let epoch = out["epoch"]
        .as_str()
        .unwrap_or_else(|| panic!("no epoch in {out}"))
        .to_owned();
    (offset, epoch)
}
