//! A throwaway `redis-server` for tests: loopback, an ephemeral port, no
//! persistence, its own temporary directory, killed on drop. It can be
//! killed and started again on the same port (fault tests).
//!
//! `redis-server` comes from `$REDIS_SERVER` or `PATH`. When it is missing
//! a test fails if `CI=true` and is skipped (with a message) otherwise:
//! install it with `bash crates/hub/tests/redis/setup.sh` (or
//! `apt-get install redis-server`).
// Shared by several test crates, each using part of it.
#![allow(dead_code)]
#![allow(clippy::print_stderr)]

use std::{
    io::ErrorKind,
    net::TcpListener as StdListener,
    path::PathBuf,
    process::Stdio,
    time::{Duration, Instant},
};

use tempfile::TempDir;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
    process::{Child, Command},
    time::sleep,
};

const INSTALL: &str =
    "install it with `bash crates/hub/tests/redis/setup.sh` (or `apt-get install redis-server`)";
/// How long a starting server may take to answer PING.
const READY_TIMEOUT: Duration = Duration::from_secs(10);
/// Ports tried when the picked one is taken meanwhile.
const PORT_ATTEMPTS: usize = 5;

/// A running (or stopped) test Redis.
pub(crate) struct RedisServer {
    binary: PathBuf,
    port: u16,
    dir: TempDir,
    child: Option<Child>,
}

impl RedisServer {
    /// Starts a server, or returns `None` (after saying why) when
    /// `redis-server` is not installed and this is not CI. In CI
    /// (`CI=true`) a missing server fails the test.
    pub(crate) async fn start(test: &str) -> Option<Self> {
        let binary = std::env::var_os("REDIS_SERVER")
            .map_or_else(|| PathBuf::from("redis-server"), PathBuf::from);
        match Command::new(&binary).arg("--version").output().await {
            Ok(output) if output.status.success() => {}
            Ok(output) => panic!(
                "{} --version failed: {}",
                binary.display(),
                String::from_utf8_lossy(&output.stderr)
            ),
            Err(error) if error.kind() == ErrorKind::NotFound => {
                let message = format!("{} not found; {INSTALL}", binary.display());
                if std::env::var("CI").is_ok_and(|v| v == "true") {
                    panic!("{test}: {message}");
                }
                eprintln!("SKIPPED {test}: {message}");
                return None;
            }
            Err(error) => panic!("cannot run {}: {error}", binary.display()),
        }
        let dir = tempfile::Builder::new()
            .prefix("gotalk-hub-redis-")
            .tempdir()
            .expect("temporary directory for redis-server");
        let mut server = Self {
            binary,
            port: 0,
            dir,
            child: None,
        };
        let mut failures = Vec::new();
        for _ in 0..PORT_ATTEMPTS {
            server.port = free_port();
            match server.launch().await {
                Ok(()) => return Some(server),
                Err(why) => failures.push(format!("port {}: {why}", server.port)),
            }
        }
        panic!("redis-server did not start: {failures:#?}");
    }

    /// `redis://127.0.0.1:PORT/`.
    pub(crate) fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    /// Kills the server (SIGKILL: a crash, nothing saved) and waits for it.
    pub(crate) async fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().await.expect("kill redis-server");
        }
    }

    /// Starts the server again on the same port, empty (no persistence).
    pub(crate) async fn restart(&mut self) {
        self.stop().await;
        // The port was ours a moment ago; retry briefly in case a
        // connection in the kernel still holds it.
        let started = Instant::now();
        loop {
            match self.launch().await {
                Ok(()) => return,
                Err(why) if started.elapsed() < Duration::from_secs(5) => {
                    eprintln!(
                        "redis-server restart on port {}: {why}; retrying",
                        self.port
                    );
                    sleep(Duration::from_millis(50)).await;
                }
                Err(why) => panic!("redis-server did not restart on port {}: {why}", self.port),
            }
        }
    }

    /// Suspends (SIGSTOP) or resumes (SIGCONT) the server: its connections
    /// stay open but nothing answers.
    pub(crate) async fn signal(&self, signal: &str) {
        let pid = self
            .child
            .as_ref()
            .and_then(Child::id)
            .expect("redis-server is running");
        let status = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(pid.to_string())
            .status()
            .await
            .expect("run kill");
        assert!(status.success(), "kill -{signal} {pid} failed");
    }

    async fn launch(&mut self) -> Result<(), String> {
        let log = self.dir.path().join("redis.log");
        let mut child = Command::new(&self.binary)
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .args(["--daemonize", "no", "--protected-mode", "yes"])
            .arg("--dir")
            .arg(self.dir.path())
            .arg("--logfile")
            .arg(&log)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| format!("spawn: {e}"))?;
        let started = Instant::now();
        loop {
            if let Some(status) = child.try_wait().map_err(|e| e.to_string())? {
                let mut stderr = String::new();
                if let Some(mut pipe) = child.stderr.take() {
                    let _ = pipe.read_to_string(&mut stderr).await;
                }
                let log = std::fs::read_to_string(&log).unwrap_or_default();
                let tail: Vec<&str> = log.lines().rev().take(5).collect();
                return Err(format!("exited with {status}: {stderr} {tail:?}"));
            }
            if ping(self.port).await {
                self.child = Some(child);
                return Ok(());
            }
            if started.elapsed() > READY_TIMEOUT {
                let _ = child.kill().await;
                return Err(format!("no PONG within {READY_TIMEOUT:?}"));
            }
            sleep(Duration::from_millis(10)).await;
        }
    }
}

/// A port that was free a moment ago.
fn free_port() -> u16 {
    StdListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind an ephemeral port")
        .port()
}

/// Whether a Redis answers PING on `port`.
async fn ping(port: u16) -> bool {
    let attempt = async {
        let mut stream = TcpStream::connect(("127.0.0.1", port)).await.ok()?;
        stream.write_all(b"PING\r\n").await.ok()?;
        let mut reply = [0; 7];
        stream.read_exact(&mut reply).await.ok()?;
        Some(&reply == b"+PONG\r\n")
    };
    tokio::time::timeout(Duration::from_millis(500), attempt)
        .await
        .ok()
        .flatten()
        .unwrap_or(false)
}
