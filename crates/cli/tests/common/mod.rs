//! Helpers shared by the integration tests: running the `gotalk` binary and
//! a background `gotalk serve`.

#![allow(dead_code)]

use std::{
    io::{BufRead, BufReader},
    process::{Child, ChildStderr, Command as StdCommand, Stdio},
    sync::mpsc,
    thread,
    time::{Duration, Instant},
};

use assert_cmd::Command;

pub(crate) const BIN: &str = env!("CARGO_BIN_EXE_gotalk");
/// Longest any single command may take before the test fails.
pub(crate) const CMD_TIMEOUT: Duration = Duration::from_secs(20);
/// Longest we wait for a line of output from a long-running process.
pub(crate) const LINE_TIMEOUT: Duration = Duration::from_secs(10);

pub(crate) fn gotalk() -> Command {
    let mut c = Command::new(BIN);
    c.timeout(CMD_TIMEOUT);
    c
}

pub(crate) struct Out {
    pub(crate) code: i32,
    pub(crate) stdout: String,
    pub(crate) stderr: String,
}

pub(crate) fn run(args: &[&str], stdin: &[u8]) -> Out {
    let o = gotalk()
        .args(args)
        .write_stdin(stdin.to_vec())
        .output()
        .unwrap();
    Out {
        code: o.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
    }
}

/// Forwards a pipe's lines to a channel from a thread.
pub(crate) fn lines_of(pipe: impl std::io::Read + Send + 'static) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        for line in BufReader::new(pipe).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

/// Waits for a line matching `pred`, returning it (or every line seen, on timeout).
pub(crate) fn wait_for(
    rx: &mpsc::Receiver<String>,
    pred: impl Fn(&str) -> bool,
) -> Result<String, String> {
    let deadline = Instant::now() + LINE_TIMEOUT;
    let mut seen = String::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) if pred(&line) => return Ok(line),
            Ok(line) => {
                seen.push_str(&line);
                seen.push('\n');
            }
            Err(_) => return Err(seen),
        }
    }
}

/// A running `gotalk serve`, killed when dropped.
pub(crate) struct Server {
    child: Child,
    addr: String,
    ws_url: Option<String>,
    http_url: Option<String>,
    metrics_url: Option<String>,
    pub(crate) stdout: mpsc::Receiver<String>,
    stderr: Option<ChildStderr>,
}

impl Server {
    /// `gotalk serve --addr 127.0.0.1:0 EXTRA...` (no `--addr` with `--unix`);
    /// waits for its `listening on` line(s).
    pub(crate) fn start(extra: &[&str]) -> Server {
        let mut args = vec!["serve"];
        if !extra.contains(&"--unix") {
            args.extend(["--addr", "127.0.0.1:0"]);
        }
        args.extend(extra);
        let mut child = StdCommand::new(BIN)
            .args(&args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stdout = lines_of(child.stdout.take().unwrap());
        let stderr = child.stderr.take();
        let mut server = Server {
            child,
            addr: String::new(),
            ws_url: None,
            http_url: None,
            metrics_url: None,
            stdout,
            stderr,
        };
        let listening = || {
            let line = wait_for(&server.stdout, |l| l.starts_with("listening on "))
                .unwrap_or_else(|seen| panic!("serve printed no address; saw {seen:?}"));
            line["listening on ".len()..].to_owned()
        };
        let addr = listening();
        let ws_url = extra.contains(&"--ws").then(listening);
        let http_url = extra.contains(&"--http").then(listening);
        let metrics_url = extra.contains(&"--metrics").then(|| {
            let line = wait_for(&server.stdout, |l| l.starts_with("metrics on "))
                .unwrap_or_else(|seen| panic!("serve printed no metrics URL; saw {seen:?}"));
            line["metrics on ".len()..].to_owned()
        });
        server.metrics_url = metrics_url;
        server.addr = addr;
        server.ws_url = ws_url;
        server.http_url = http_url;
        server
    }

    /// The address of the TCP (or TLS, or Unix socket) listener.
    pub(crate) fn addr(&self) -> &str {
        &self.addr
    }

    /// The WebSocket URL, when started with `--ws`.
    pub(crate) fn ws_url(&self) -> &str {
        self.ws_url.as_deref().expect("started with --ws")
    }

    /// The HTTP endpoint's URL, when started with `--http`.
    #[allow(dead_code)] // Not every test binary serves HTTP.
    pub(crate) fn http_url(&self) -> &str {
        self.http_url.as_deref().expect("started with --http")
    }

    /// The metrics URL (`http://HOST:PORT/metrics`), when started with
    /// `--metrics`.
    #[allow(dead_code)] // Only the metrics test binary serves them.
    pub(crate) fn metrics_url(&self) -> &str {
        self.metrics_url.as_deref().expect("started with --metrics")
    }

    /// Sends a signal and waits for the process to exit; returns its exit code and stderr.
    pub(crate) fn signal_and_wait(mut self, signal: &str) -> (i32, String) {
        let pid = self.child.id().to_string();
        let ok = StdCommand::new("kill")
            .args([signal, &pid])
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill {signal} {pid} failed");
        let status = wait_exit(&mut self.child, &format!("serve after {signal}"));
        let mut err = String::new();
        if let Some(mut e) = self.stderr.take() {
            std::io::Read::read_to_string(&mut e, &mut err).unwrap();
        }
        (status.code().unwrap_or(-1), err)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Waits (bounded) for a child process to exit.
pub(crate) fn wait_exit(child: &mut Child, what: &str) -> std::process::ExitStatus {
    let deadline = Instant::now() + LINE_TIMEOUT;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        assert!(Instant::now() < deadline, "{what} did not exit in time");
        thread::sleep(Duration::from_millis(10));
    }
}

/// A child process killed when dropped.
pub(crate) struct Kill(pub(crate) Child);

impl Drop for Kill {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `gotalk listen --count N ADDR NAME...` once it is ready (its ping was
/// answered): the process and its stdout lines.
pub(crate) fn listen_ready(args: &[&str]) -> (Kill, mpsc::Receiver<String>) {
    spawn_ready("listen", args, "listening on")
}

/// `gotalk COMMAND ARGS...` once it printed a line starting with `ready`
/// to stderr: the process and its stdout lines.
pub(crate) fn spawn_ready(
    command: &str,
    args: &[&str],
    ready: &str,
) -> (Kill, mpsc::Receiver<String>) {
    let mut child = StdCommand::new(BIN)
        .arg(command)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = lines_of(child.stderr.take().unwrap());
    let stdout = lines_of(child.stdout.take().unwrap());
    let child = Kill(child);
    wait_for(&stderr, |l| l.starts_with(ready))
        .unwrap_or_else(|seen| panic!("{command} never got ready: {seen:?}"));
    (child, stdout)
}
