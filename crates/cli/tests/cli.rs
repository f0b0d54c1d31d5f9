//! The `gotalk` binary, end to end: real processes over loopback TCP and
//! Unix sockets, exact output and exit codes.

mod common;

use std::{
    io::Write,
    path::Path,
    process::{Command as StdCommand, Stdio},
    thread,
    time::{Duration, Instant},
};

use common::{BIN, Server, gotalk, listen_ready, run, wait_exit, wait_for};
use serde_json::Value;

#[test]
fn demo_walks_through_every_step_and_exits_zero() {
    let o = run(&["demo"], b"");
    assert_eq!(o.code, 0, "stdout:\n{}\nstderr:\n{}", o.stdout, o.stderr);
    assert!(
        o.stdout
            .contains("summary: all 8 steps got the expected answer")
    );
    // Exact frames, binary IDs escaped.
    for frame in [
        "-> 01",
        "<- 01",
        "-> r\\x00\\x00\\x00\\x00004echo00000005hello",
        "<- R\\x00\\x00\\x00\\x0000000005hello",
        "-> p\\x02\\x00\\x00\\x0000000000",
        "<- S\\x02\\x00\\x00\\x0000000000",
        "-> n004ping0000000eare you there?",
        "<- n004pong0000000eare you there?",
        "<- r\\x00\\x00\\x00\\x00007reverse00000008stressed",
        "<- E\\x06\\x00\\x00\\x0000000021fail: this operation always fails",
        "<- e\\x07\\x00\\x00\\x000000012c0000000awarming up",
        "-> r\\x08\\x00\\x00\\x00005flaky00000004data",
    ] {
        assert!(
            o.stdout.contains(frame),
            "missing {frame:?} in:\n{}",
            o.stdout
        );
    }
    assert_eq!(o.stdout.matches("  ok: ").count(), 8);
}

#[test]
fn serve_answers_every_operation() {
    let server = Server::start(&[]);
    let a = server.addr();
    // (arguments after the address, stdin, stdout, exit code, stderr must contain)
    let cases: &[(&[&str], &str, &str, i32, &str)] = &[
        (&["echo", "hello"], "", "hello\n", 0, ""),
        (&["echo"], "", "\n", 0, ""),
        (&["echo", "-"], "from stdin", "from stdin\n", 0, ""),
        (&["--raw", "echo", "abc"], "", "abc", 0, ""),
        (
            &["greet", r#"{"name":"X"}"#],
            "",
            "{\"greeting\":\"Hello X\"}\n",
            0,
            "",
        ),
        (
            &["--json", "greet", r#"{"name":"X"}"#],
            "",
            "{\n  \"greeting\": \"Hello X\"\n}\n",
            0,
            "",
        ),
        (&["greet", "nope"], "", "", 1, "invalid input"),
        (
            &["fail"],
            "",
            "",
            1,
            "error result: fail: this operation always fails",
        ),
        (
            &["fail", "custom reason"],
            "",
            "",
            1,
            "error result: custom reason",
        ),
        (&["slow", "30"], "", "30\n", 0, ""),
        (
            &["slow", "soon"],
            "",
            "",
            1,
            "slow: payload must be a number of milliseconds",
        ),
        (&["reverse", "stressed"], "", "desserts\n", 0, ""),
        (&["call-back", "stressed"], "", "desserts\n", 0, ""),
        (&["stream-echo", "as one part"], "", "as one part\n", 0, ""),
        (
            &["stream-fail", "x"],
            "",
            "",
            1,
            "stream-fail: failing on purpose after 1 part(s)",
        ),
        (
            &["nope"],
            "",
            "",
            1,
            "error result: unknown operation \"nope\"",
        ),
        (
            &["--timeout", "100ms", "slow", "3000"],
            "",
            "",
            2,
            "request timed out",
        ),
    ];
    let handles: Vec<_> = cases
        .iter()
        .map(|&(args, stdin, out, code, err)| {
            let mut argv = vec!["request", a];
            // Options go before the address too; clap takes them anywhere.
            argv.extend(args);
            let argv: Vec<String> = argv.into_iter().map(str::to_owned).collect();
            thread::spawn(move || {
                let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
                let o = run(&argv, stdin.as_bytes());
                assert_eq!(
                    (o.code, o.stdout.as_str()),
                    (code, out),
                    "{argv:?}: stderr {:?}",
                    o.stderr
                );
                assert!(o.stderr.contains(err), "{argv:?}: stderr {:?}", o.stderr);
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
}

#[test]
fn request_reports_connection_and_usage_errors_with_exit_2() {
    // A port nobody listens on: bind one, then free it.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let o = run(&["request", &format!("127.0.0.1:{port}"), "echo", "x"], b"");
    assert_eq!(o.code, 2, "{}", o.stderr);
    assert!(o.stderr.contains("cannot connect"), "{}", o.stderr);
    let o = run(&["request", "not-an-address", "echo"], b"");
    assert_eq!(o.code, 2);
    assert!(o.stderr.contains("is not an address"), "{}", o.stderr);
    let o = run(
        &["request", &format!("ws://127.0.0.1:{port}/gotalk/"), "echo"],
        b"",
    );
    assert_eq!(o.code, 2, "{}", o.stderr);
    assert!(
        o.stderr.contains("cannot connect to ws://127.0.0.1:"),
        "{}",
        o.stderr
    );
    let o = run(&["request", "tls://127.0.0.1", "echo"], b"");
    assert_eq!(o.code, 2);
    assert!(o.stderr.contains("tls:// takes host:port"), "{}", o.stderr);
}

#[test]
fn help_documents_exit_codes() {
    let o = run(&["--help"], b"");
    assert_eq!(o.code, 0);
    assert!(o.stdout.contains("Exit codes:"), "{}", o.stdout);
    assert!(
        o.stdout
            .contains("2  protocol, connection, I/O or timeout error")
    );
    for sub in [
        "request", "stream", "notify", "listen", "decode", "bench", "demo", "serve",
    ] {
        let o = run(&[sub, "--help"], b"");
        assert_eq!(o.code, 0, "{sub}");
        assert!(
            o.stdout.contains("Exit code"),
            "{sub} --help:\n{}",
            o.stdout
        );
    }
    let o = run(&["serve", "--help"], b"");
    for op in [
        "echo",
        "greet",
        "fail",
        "slow",
        "reverse",
        "stream-echo",
        "stream-fail",
        "call-back",
        "ping",
    ] {
        assert!(o.stdout.contains(op), "serve --help lacks {op}");
    }
}

/// Deterministic bytes of every value, including CR, LF and NUL.
fn pattern(len: usize) -> Vec<u8> {
    let mut x: u32 = 0x1234_5678;
    (0..len)
        .map(|_| {
            x = x.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            (x >> 24) as u8
        })
        .collect()
}

#[test]
fn stream_round_trips_a_file() {
    let server = Server::start(&[]);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("in.bin");
    let data = pattern(300_000);
    std::fs::write(&path, &data).unwrap();
    let out = gotalk()
        .args(["stream", "--chunk", "7000", server.addr(), "stream-echo"])
        .pipe_stdin(&path)
        .unwrap()
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.stdout.len(), data.len());
    assert!(out.stdout == data, "stream-echo changed the bytes");

    // A failing stream: the part sent before the error, then exit 1.
    let o = run(
        &["stream", "--chunk", "4", server.addr(), "stream-fail"],
        b"abcdefghij",
    );
    assert_eq!((o.code, o.stdout.as_str()), (1, "abcd"), "{}", o.stderr);
    assert!(
        o.stderr.contains("failing on purpose after 3 part(s)"),
        "{}",
        o.stderr
    );
}

#[test]
fn notify_and_listen_see_each_other() {
    let server = Server::start(&[]);
    let (listen, stdout) = listen_ready(&["--count", "2", server.addr(), "chat"]);
    for (name, payload) in [
        ("other", "filtered out"),
        ("chat", "hello"),
        ("chat", "two\nlines"),
    ] {
        let o = run(&["notify", server.addr(), name, payload], b"");
        assert_eq!(o.code, 0, "{}", o.stderr);
    }
    let mut got: Vec<String> = (0..2)
        .map(|_| wait_for(&stdout, |_| true).expect("a notification line"))
        .collect();
    got.sort();
    assert_eq!(got, ["chat hello", "chat two\\nlines"]);
    let mut listen = listen;
    let status = wait_exit(&mut listen.0, "listen --count 2");
    assert_eq!(status.code(), Some(0));

    // notify to nowhere: exit 2.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let o = run(&["notify", &format!("127.0.0.1:{port}"), "x"], b"");
    assert_eq!(o.code, 2);
}

#[test]
fn serve_trace_prints_every_frame() {
    let server = Server::start(&["--trace"]);
    let o = run(&["request", server.addr(), "echo", "hello"], b"");
    assert_eq!((o.code, o.stdout.as_str()), (0, "hello\n"));
    for expected in [
        "conn#1 open 127.0.0.1:",
        "conn#1 -> 01",
        "conn#1 <- 01",
        "conn#1 <- r\\x00\\x00\\x00\\x00004echo00000005hello",
        "conn#1 -> R\\x00\\x00\\x00\\x0000000005hello",
        "conn#1 closed: connection closed by peer",
    ] {
        wait_for(&server.stdout, |l| l.starts_with(expected))
            .unwrap_or_else(|seen| panic!("no {expected:?} in trace; saw {seen:?}"));
    }
}

#[cfg(unix)]
#[test]
fn ctrl_c_lets_requests_in_flight_finish() {
    let server = Server::start(&["--trace"]);
    let slow = StdCommand::new(BIN)
        .args(["request", server.addr(), "slow", "400"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_for(&server.stdout, |l| l.contains("004slow00000003400"))
        .unwrap_or_else(|seen| panic!("the slow request never arrived; saw {seen:?}"));
    // The trace shows the bytes as they are read, a moment before the
    // connection takes the request in: a request still unread when closing
    // starts is refused, rightly. Let it be taken in (it runs for 400 ms).
    std::thread::sleep(Duration::from_millis(100));
    let started = Instant::now();
    let (code, stderr) = server.signal_and_wait("-INT");
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stderr.contains("shut down (1 connection(s) closed)"),
        "{stderr}"
    );
    assert!(started.elapsed() < Duration::from_secs(5));
    let out = slow.wait_with_output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.stdout, b"400\n");
}

#[cfg(unix)]
#[test]
fn serves_and_requests_over_a_unix_socket() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("g.sock");
    let sock_str = sock.to_str().unwrap();
    let server = Server::start(&["--unix", sock_str]);
    assert_eq!(server.addr(), format!("unix:{sock_str}"));
    let o = run(&["request", server.addr(), "reverse", "abc"], b"");
    assert_eq!((o.code, o.stdout.as_str()), (0, "cba\n"), "{}", o.stderr);
    let (code, _) = server.signal_and_wait("-TERM");
    assert_eq!(code, 0);
    assert!(
        !Path::new(&sock).exists(),
        "the socket file is removed on shutdown"
    );
}

// ---- decode ----

const MESSAGES: &str = include_str!("vectors/messages.jsonl");
const INVALID: &str = include_str!("vectors/invalid.jsonl");

fn unhex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

/// The CLI's escaping for quoted values: printable ASCII, `\"`, `\\`, `\xNN`.
fn esc(bytes: &[u8]) -> String {
    let mut s = String::new();
    for &b in bytes {
        match b {
            b'\\' => s.push_str("\\\\"),
            b'"' => s.push_str("\\\""),
            b' '..=b'~' => s.push(b as char),
            _ => s.push_str(&format!("\\x{b:02x}")),
        }
    }
    s
}

/// The line `gotalk decode` must print for a vector's message, without the offset.
fn expected_line(m: &Value) -> String {
    let ty = m["type"].as_str().unwrap();
    let mut s = ty.to_owned();
    if let Some(id) = m["id_hex"].as_str() {
        s += &format!(" id=\"{}\"", esc(&unhex(id)));
    }
    if let Some(op) = m["op"].as_str() {
        s += &format!(" op=\"{}\"", esc(op.as_bytes()));
    }
    if let Some(name) = m["name"].as_str() {
        s += &format!(" name=\"{}\"", esc(name.as_bytes()));
    }
    if let Some(w) = m["wait_ms"].as_u64() {
        s += &format!(" wait_ms={w}");
    }
    if ty == "Heartbeat" {
        s += &format!(" load={} time={}", m["load"], m["time"]);
    }
    if let Some(code) = m["code"].as_u64() {
        let meaning = match code {
            0 => "abnormal condition",
            1 => "unsupported protocol",
            2 => "invalid protocol message",
            3 => "timeout",
            _ => "unknown protocol error",
        };
        s += &format!(" code={code} ({meaning})");
    }
    if let Some(p) = m["payload_hex"].as_str() {
        let p = unhex(p);
        s += &format!(" size={} payload=\"{}\"", p.len(), esc(&p));
    }
    s
}

fn vectors(text: &str) -> Vec<Value> {
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn decode_prints_the_fields_of_every_vector() {
    let vs = vectors(MESSAGES);
    assert!(vs.len() >= 20, "the vectors file is complete");
    // All vectors as one conversation, after a version, as hex split over lines.
    let mut hex = String::from("3031\n"); // the version, "01"
    let mut raw = b"01".to_vec();
    let mut expected = String::from("@0 version 01\n");
    for v in &vs {
        let wire = v["wire_hex"].as_str().unwrap();
        expected += &format!("@{} {}\n", raw.len(), expected_line(&v["message"]));
        raw.extend(unhex(wire));
        hex += wire;
        hex += "\n";
    }
    let o = run(&["decode", "--hex"], hex.as_bytes());
    assert_eq!(o.code, 0, "{}", o.stderr);
    assert_eq!(o.stdout, expected);
    // The same bytes raw, from a file.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("capture.bin");
    std::fs::write(&path, &raw).unwrap();
    let o = run(&["decode", path.to_str().unwrap()], b"");
    assert_eq!(
        (o.code, o.stdout.as_str()),
        (0, expected.as_str()),
        "{}",
        o.stderr
    );
    // Each vector alone, without a version, from stdin.
    for v in &vs {
        let o = run(&["decode", "-"], &unhex(v["wire_hex"].as_str().unwrap()));
        assert_eq!(o.code, 0, "{}: {}", v["name"], o.stderr);
        assert_eq!(
            o.stdout,
            format!("@0 {}\n", expected_line(&v["message"])),
            "{}",
            v["name"]
        );
    }
}

#[test]
fn decode_names_the_offset_of_a_malformed_frame() {
    let good = b"R000100000002hi"; // 15 bytes, decodes
    // Offset of the bad byte inside each invalid vector's frame.
    let cases = [
        ("unknown-type", 0),
        ("non-hex-size", 12),
        ("non-hex-text3size", 5),
        ("space-in-size", 5),
        ("plus-sign-in-size", 5),
        ("0x-prefix", 6),
        ("invalid-utf8-op", 8),
        ("heartbeat-bad-load", 1),
        ("protocol-error-bad-code", 8),
    ];
    let invalid = vectors(INVALID);
    for (name, at) in cases {
        let v = invalid.iter().find(|v| v["name"] == name).unwrap();
        assert_eq!(v["expect"], "invalid", "{name}");
        let mut input = b"01".to_vec();
        input.extend(good);
        input.extend(unhex(v["wire_hex"].as_str().unwrap()));
        let o = run(&["decode"], &input);
        assert_eq!(o.code, 1, "{name}: {}", o.stderr);
        assert_eq!(
            o.stdout, "@0 version 01\n@2 SingleResult id=\"0001\" size=2 payload=\"hi\"\n",
            "{name}"
        );
        let offset = 17 + at;
        assert!(
            o.stderr
                .contains(&format!("malformed frame at byte {offset}: "))
                && o.stderr.contains("(the frame starts at byte 17)"),
            "{name}: {}",
            o.stderr
        );
    }
    // Truncated frames (and a size the input cannot hold) are named too.
    for name in [
        "truncated-header",
        "truncated-payload",
        "huge-declared-payload",
    ] {
        let v = invalid.iter().find(|v| v["name"] == name).unwrap();
        let mut input = good.to_vec();
        input.extend(unhex(v["wire_hex"].as_str().unwrap()));
        let o = run(&["decode"], &input);
        assert_eq!(o.code, 1, "{name}");
        assert!(
            o.stderr.contains(" frame at byte 15: the input ends"),
            "{name}: {}",
            o.stderr
        );
    }
    let o = run(&["decode", "--hex"], b"52 30 zz");
    assert_eq!(o.code, 1);
    assert!(
        o.stderr.contains("'z' at character offset 6"),
        "{}",
        o.stderr
    );
    let o = run(&["decode", "/nonexistent/capture.bin"], b"");
    assert_eq!(o.code, 2);
}

// ---- bench ----

fn bench_json(args: &[&str]) -> Value {
    let o = run(args, b"");
    assert_eq!(o.code, 0, "{args:?}: {}", o.stderr);
    let v: Value = serde_json::from_str(o.stdout.trim())
        .unwrap_or_else(|e| panic!("{args:?} printed no JSON object ({e}): {:?}", o.stdout));
    for key in [
        "requests",
        "errors",
        "requests_per_sec",
        "p50_us",
        "p90_us",
        "p99_us",
        "p999_us",
        "max_us",
    ] {
        assert!(v[key].is_number(), "{key} missing in {v}");
    }
    assert_eq!(v["errors"], 0, "{v}");
    assert!(v["requests_per_sec"].as_f64().unwrap() > 0.0, "{v}");
    assert!(v["p50_us"].as_f64().unwrap() > 0.0, "{v}");
    assert!(v["p50_us"].as_f64() <= v["p99_us"].as_f64(), "{v}");
    assert!(v["p99_us"].as_f64() <= v["max_us"].as_f64(), "{v}");
    v
}

#[test]
fn bench_runs_on_the_runtime_asked_for() {
    for threads in ["1", "3"] {
        let v = bench_json(&[
            "bench",
            "--threads",
            threads,
            "--self",
            "-n",
            "500",
            "--json",
        ]);
        assert_eq!(v["requests"], 500, "{v}");
    }
    let o = run(&["bench", "--threads", "0", "--self", "-n", "10"], b"");
    assert_eq!(o.code, 2, "0 threads is a usage error: {}", o.stderr);
}

#[test]
fn bench_self_prints_a_json_report() {
    let v = bench_json(&["bench", "--self", "-n", "2000", "--json"]);
    assert_eq!(v["requests"], 2000, "{v}");
    assert_eq!(v["concurrency"], 64);
    assert_eq!(v["conns"], 1);
    assert_eq!(v["size"], 32);
}

#[test]
fn bench_against_a_running_server() {
    let server = Server::start(&[]);
    let v = bench_json(&[
        "bench",
        server.addr(),
        "-n",
        "2000",
        "-c",
        "8",
        "--conns",
        "2",
        "--size",
        "100",
        "--json",
    ]);
    assert_eq!(v["requests"], 2000, "{v}");
    assert_eq!(
        (v["concurrency"].as_u64(), v["conns"].as_u64()),
        (Some(8), Some(2))
    );
    // The human report, and an operation other than echo.
    let o = run(
        &[
            "bench",
            server.addr(),
            "-n",
            "200",
            "-c",
            "4",
            "--op",
            "greet",
            "--payload",
            r#"{"name":"b"}"#,
        ],
        b"",
    );
    assert_eq!(o.code, 0, "{}", o.stderr);
    assert!(o.stdout.contains("requests    200 in"), "{}", o.stdout);
    assert!(o.stdout.contains("requests/s"), "{}", o.stdout);
    // Every request failing: exit 1.
    let o = run(
        &[
            "bench",
            server.addr(),
            "-n",
            "50",
            "-c",
            "2",
            "--op",
            "fail",
        ],
        b"",
    );
    assert_eq!(o.code, 1, "{}", o.stderr);
    assert!(o.stderr.contains("50 request(s) failed"), "{}", o.stderr);
    let _ = std::io::stderr().flush();
}

// ---- bench --raw: the baseline of the same shape ----

#[test]
fn bench_raw_self_delivers_every_echo() {
    let v = bench_json(&[
        "bench", "--self", "--raw", "-n", "3000", "-c", "7", "--conns", "5", "--size", "20",
        "--json",
    ]);
    assert_eq!(v["raw"], true, "{v}");
    assert_eq!(v["op"], "raw echo", "{v}");
    assert_eq!(v["requests"], 3000, "{v}");
    assert_eq!(v["succeeded"], 3000, "{v}");
    assert_eq!(
        (v["conns"].as_u64(), v["size"].as_u64()),
        (Some(5), Some(20))
    );
}

#[test]
fn bench_raw_against_serve_raw_echo() {
    let echo = Server::start(&["--raw-echo"]);
    let v = bench_json(&[
        "bench",
        echo.addr(),
        "--raw",
        "--duration",
        "200ms",
        "-c",
        "3",
        "--conns",
        "4",
        "--json",
    ]);
    assert!(v["requests"].as_u64().unwrap() > 0, "{v}");
    // gotalk's bench against the raw echo talks to itself: its own requests
    // come back as requests, which it does not serve.
    let o = run(&["bench", echo.addr(), "-n", "10"], b"");
    assert_eq!(o.code, 1, "{}", o.stderr);
    assert!(o.stderr.contains("unknown operation"), "{}", o.stderr);
}

/// `--busy-poll` on both sides, gotalk and raw, and with `--self`: every
/// request answered.
#[test]
fn bench_and_serve_with_busy_polling() {
    for (serve, raw) in [(&[][..], &[][..]), (&["--raw-echo"][..], &["--raw"][..])] {
        let server = Server::start(&[serve, &["--busy-poll", "50us"]].concat());
        let mut args = vec!["bench", server.addr(), "--busy-poll", "50us", "-n", "2000"];
        args.extend_from_slice(raw);
        args.extend(["-c", "8", "--json"]);
        let v = bench_json(&args);
        assert_eq!(v["succeeded"], 2000, "{v}");
    }
    let v = bench_json(&[
        "bench",
        "--self",
        "--busy-poll",
        "1ms",
        "-n",
        "500",
        "--json",
    ]);
    assert_eq!(v["succeeded"], 500, "{v}");
    let o = run(&["bench", "--self", "--busy-poll", "0s", "-n", "5"], b"");
    assert_eq!(o.code, 2, "a zero window is a usage error: {}", o.stderr);
}

#[test]
fn bench_raw_against_a_gotalk_server_fails() {
    let server = Server::start(&[]);
    let o = run(
        &["bench", server.addr(), "--raw", "-n", "100", "-c", "2"],
        b"",
    );
    assert_eq!(o.code, 1, "{}{}", o.stdout, o.stderr);
    assert!(o.stderr.contains("not a raw echo"), "{}", o.stderr);
}

#[test]
fn bench_raw_usage_errors() {
    for args in [
        &["bench", "--self", "--raw", "--ws", "-n", "10"][..],
        &["bench", "--self", "--raw", "--op", "greet", "-n", "10"],
        &["bench", "--self", "--raw", "--size", "0", "-n", "10"],
        &["bench", "tls://127.0.0.1:1", "--raw", "-n", "10"],
        &["serve", "--raw-echo", "--unix", "/tmp/never.sock"],
    ] {
        let o = run(args, b"");
        assert_eq!(o.code, 2, "{args:?}: {}", o.stderr);
    }
}
