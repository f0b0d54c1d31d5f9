//! Rough edges a newcomer hit (issue 13): each test is one of them, run as
//! a new user would, through the binary.

mod common;

use std::{
    io::{Read, Write},
    net::TcpStream,
    process::{Command as StdCommand, Stdio},
    thread,
    time::{Duration, Instant},
};

use common::{BIN, Server, run, wait_exit, wait_for};
use serde_json::Value;

/// `host:port` of a `ws://host:port/path` URL.
fn authority(url: &str) -> &str {
    let rest = url.split_once("://").unwrap().1;
    &rest[..rest.find('/').unwrap_or(rest.len())]
}

#[test]
fn tcp_to_a_websocket_port_is_bounded_by_timeout_and_suggests_ws() {
    let server = Server::start(&["--ws", "127.0.0.1:0"]);
    let hostport = authority(server.ws_url()).to_owned();
    let started = Instant::now();
    let o = run(
        &["request", "--timeout", "1s", &hostport, "echo", "hi"],
        b"",
    );
    let took = started.elapsed();
    assert_eq!(o.code, 2, "{}", o.stderr);
    assert!(
        took < Duration::from_secs(3),
        "--timeout 1s took {took:?}: {}",
        o.stderr
    );
    let want = format!("connect to ws://{hostport}/gotalk/");
    assert!(o.stderr.contains(&want), "no {want:?} in {:?}", o.stderr);
    assert!(!o.stderr.contains("tls://"), "{}", o.stderr);
}

#[test]
fn a_websocket_url_without_the_mount_path_is_hinted() {
    let server = Server::start(&["--ws", "127.0.0.1:0"]);
    let url = format!("ws://{}", authority(server.ws_url()));
    let o = run(&["request", &url, "echo", "hi"], b"");
    assert_eq!(o.code, 2, "{}", o.stderr);
    assert!(o.stderr.contains("HTTP 404"), "{}", o.stderr);
    assert!(o.stderr.contains("/gotalk/"), "{}", o.stderr);
}

#[test]
fn payloads_over_the_limit_are_refused_before_sending() {
    let server = Server::start(&["--trace"]);
    let big = vec![b'x'; 16 * 1024 * 1024 + 1];
    let o = run(&["request", server.addr(), "echo", "-"], &big);
    assert_eq!(o.code, 2, "{}", o.stderr);
    assert!(o.stderr.contains("16 MiB (16777216 bytes)"), "{}", o.stderr);
    assert!(o.stderr.contains("gotalk stream"), "{}", o.stderr);
    assert!(!o.stderr.contains("protocol error:"), "{}", o.stderr);
    let o = run(&["bench", "--self", "--size", "20000000", "-n", "1"], b"");
    assert_eq!(o.code, 2, "{}", o.stderr);
    assert!(o.stderr.contains("gotalk stream"), "{}", o.stderr);
    // Nothing reached the server: the next connection is its first.
    assert_eq!(run(&["request", server.addr(), "echo"], b"").code, 0);
    let first = wait_for(&server.stdout, |l| l.contains(" open "));
    assert!(
        first.as_deref().is_ok_and(|l| l.starts_with("conn#1 ")),
        "{first:?}"
    );
}

#[test]
fn serve_max_payload_raises_the_limit() {
    let server = Server::start(&["--max-payload", "32MiB"]);
    let big = vec![b'y'; 20_000_000];
    let o = run(
        &[
            "request",
            "--raw",
            "--max-payload",
            "32MiB",
            server.addr(),
            "echo",
            "-",
        ],
        &big,
    );
    assert_eq!(o.code, 0, "{}", o.stderr);
    assert_eq!(o.stdout.len(), big.len());
}

#[test]
fn bench_counts_only_successes() {
    let o = run(
        &[
            "bench", "--self", "--op", "nosuch", "-n", "200", "-c", "4", "--json",
        ],
        b"",
    );
    assert_eq!(o.code, 1, "{}", o.stderr);
    let v: Value = serde_json::from_str(o.stdout.trim()).unwrap();
    assert_eq!(v["requests"], 200, "{v}");
    assert_eq!(v["succeeded"], 0, "{v}");
    assert_eq!(v["errors"], 200, "{v}");
    assert_eq!(v["requests_per_sec"], 0.0, "{v}");
    assert!(v["p50_us"].is_null(), "{v}");
    assert_eq!(v["interrupted"], false, "{v}");
    let o = run(&["bench", "--self", "--op", "nosuch", "-n", "20"], b"");
    assert!(o.stdout.contains("0 requests/s"), "{}", o.stdout);
    assert!(o.stdout.contains("none measured"), "{}", o.stdout);
}

#[test]
fn empty_bench_runs_are_usage_errors() {
    for args in [
        &["bench", "--self", "-n", "0"][..],
        &["bench", "--self", "--duration", "0s"],
        &["bench", "--self", "--duration", "0"],
    ] {
        let o = run(args, b"");
        assert_eq!(o.code, 2, "{args:?}: {}", o.stderr);
        assert!(o.stdout.is_empty(), "{args:?}: {}", o.stdout);
    }
}

#[test]
fn interrupted_bench_says_so_and_exits_130() {
    let child = StdCommand::new(BIN)
        .args(["bench", "--self", "--duration", "20s", "-c", "2", "--json"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut child = common::Kill(child);
    // Time to start and install its Ctrl-C handler.
    thread::sleep(Duration::from_millis(700));
    let pid = child.0.id().to_string();
    assert!(
        StdCommand::new("kill")
            .args(["-INT", &pid])
            .status()
            .unwrap()
            .success()
    );
    let status = wait_exit(&mut child.0, "bench after SIGINT");
    let mut out = String::new();
    child
        .0
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut out)
        .unwrap();
    let mut err = String::new();
    child
        .0
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    assert_eq!(status.code(), Some(130), "{out} {err}");
    let v: Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(v["interrupted"], true, "{v}");
    assert!(err.contains("interrupted"), "{err}");
}

#[cfg(unix)]
#[test]
fn serve_unix_replaces_a_dead_socket_and_reports_a_live_one() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("g.sock");
    // A socket file whose server is gone, as after kill -9.
    drop(std::os::unix::net::UnixListener::bind(&path).unwrap());
    assert!(path.exists());
    let p = path.to_str().unwrap();
    let server = Server::start(&["--unix", p]);
    let o = run(&["request", server.addr(), "echo", "back"], b"");
    assert_eq!((o.code, o.stdout.as_str()), (0, "back\n"), "{}", o.stderr);
    // A second server on the same path: refused, the first one untouched.
    let o = run(&["serve", "--unix", p], b"");
    assert_eq!(o.code, 2, "{}", o.stderr);
    assert!(o.stderr.contains("a running server"), "{}", o.stderr);
    let o = run(&["request", server.addr(), "echo", "still"], b"");
    assert_eq!(o.stdout, "still\n", "{}", o.stderr);
}

#[test]
fn small_usage_edges() {
    let server = Server::start(&[]);
    let a = server.addr();
    // --timeout 0 is refused with a way out; compound durations work.
    let o = run(&["request", "--timeout", "0", a, "echo"], b"");
    assert_eq!(o.code, 2);
    assert!(o.stderr.contains("omit the option"), "{}", o.stderr);
    let o = run(&["request", "--timeout", "1m30s", a, "echo", "x"], b"");
    assert_eq!((o.code, o.stdout.as_str()), (0, "x\n"), "{}", o.stderr);
    let o = run(&["request", "--max-attempts", "0", a, "echo"], b"");
    assert_eq!(o.code, 2, "{}", o.stderr);
    let o = run(&["request", "127.0.0.1:99999", "echo"], b"");
    assert_eq!(o.code, 2);
    assert!(
        o.stderr.contains("port 99999 is out of range"),
        "{}",
        o.stderr
    );
    // One prefix for every command's own errors.
    for (args, stdin) in [
        (&["bench", "127.0.0.1:1", "-n", "1"][..], &b""[..]),
        (&["serve", "--addr", "192.0.2.1:1"], b""),
        (&["decode"], b"zz"),
        (&["request", "127.0.0.1:1", "echo"], b""),
    ] {
        let o = run(args, stdin);
        assert_ne!(o.code, 0, "{args:?}");
        assert!(o.stderr.starts_with("gotalk: "), "{args:?}: {}", o.stderr);
    }
    // --threads only where a runtime runs.
    let o = run(&["decode", "--threads", "2"], b"");
    assert_eq!(o.code, 2, "{}", o.stderr);
    assert!(!run(&["decode", "--help"], b"").stdout.contains("--threads"));
    assert!(run(&["serve", "--help"], b"").stdout.contains("--threads"));
}

#[test]
fn decode_reads_what_trace_prints() {
    let server = Server::start(&["--trace"]);
    let o = run(
        &["request", "--trace", server.addr(), "echo", "hi\\there"],
        b"",
    );
    assert_eq!(o.code, 0, "{}", o.stderr);
    let d = run(&["decode"], o.stderr.as_bytes());
    assert_eq!(d.code, 0, "{}", d.stderr);
    assert_eq!(
        d.stdout,
        "-> version 01\n<- version 01\n\
         -> SingleRequest id=\"\\x00\\x00\\x00\\x00\" op=\"echo\" size=8 payload=\"hi\\\\there\"\n\
         <- SingleResult id=\"\\x00\\x00\\x00\\x00\" size=8 payload=\"hi\\\\there\"\n"
    );
    // The server's trace, conn#N and all, with a payload cut short.
    let long = "z".repeat(200);
    assert_eq!(run(&["request", server.addr(), "echo", &long], b"").code, 0);
    let mut lines = String::new();
    while let Ok(line) = wait_for(&server.stdout, |l| {
        l.contains("SingleResult") || l.contains(" -> R")
    }) {
        lines.push_str(&line);
        lines.push('\n');
        if line.contains("(+") {
            break;
        }
    }
    let d = run(&["decode"], lines.as_bytes());
    assert_eq!(d.code, 0, "{}", d.stderr);
    assert!(
        d.stdout
            .contains("-> SingleResult id=\"\\x00\\x00\\x00\\x00\" size=200 payload=\""),
        "{}",
        d.stdout
    );
    assert!(d.stdout.contains("\"…(+104 bytes)"), "{}", d.stdout);
}

#[test]
fn origin_refusals_are_logged_without_colour() {
    let server = Server::start(&["--ws", "127.0.0.1:0"]);
    let host = authority(server.ws_url()).to_owned();
    let mut s = TcpStream::connect(&host).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    write!(
        s,
        "GET /gotalk/ HTTP/1.1\r\nHost: {host}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
         Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
         Origin: http://evil.example\r\n\r\n"
    )
    .unwrap();
    let mut head = [0u8; 12];
    s.read_exact(&mut head).unwrap();
    assert_eq!(&head, b"HTTP/1.1 403");
    let (_, stderr) = server.signal_and_wait("-INT");
    assert!(stderr.contains("WARN"), "{stderr}");
    assert!(stderr.contains("http://evil.example"), "{stderr}");
    assert!(stderr.contains("--ws-allow-origin"), "{stderr}");
    assert!(!stderr.contains('\x1b'), "colour codes in {stderr:?}");
}
