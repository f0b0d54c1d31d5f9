//! `gotalk serve --http` with `gotalk request http://…` and, when the
//! machine has it, `curl`.

mod common;

use std::process::Command;

use common::{Server, run};

#[test]
fn request_over_http() {
    let server = Server::start(&["--http", "127.0.0.1:0"]);
    let url = server.http_url().to_owned();
    assert!(
        url.starts_with("http://127.0.0.1:") && url.ends_with("/gotalk/"),
        "{url}"
    );
    // (arguments after the address, stdin, stdout, exit code, stderr must contain)
    let cases: &[(&[&str], &str, &str, i32, &str)] = &[
        (&["echo", "hello"], "", "hello\n", 0, ""),
        (&["echo", "-"], "a\0b", "a\0b\n", 0, ""),
        (&["echo", "--raw", "x"], "", "x", 0, ""),
        (
            &["greet", "--json", r#"{"name":"http"}"#],
            "",
            "{\n  \"greeting\": \"Hello http\"\n}\n",
            0,
            "",
        ),
        (
            &["fail"],
            "",
            "",
            1,
            "error result: fail: this operation always fails",
        ),
        (
            &["nope"],
            "",
            "",
            1,
            "error result: unknown operation \"nope\"",
        ),
        // A stream operation: the body is its one part, its parts the result.
        (&["stream-echo", "abc"], "", "abc\n", 0, ""),
        // Nothing to call back over HTTP: the handler says so.
        (
            &["call-back", "x"],
            "",
            "",
            1,
            "needs a gotalk connection to call back",
        ),
        (&["--trace", "slow", "5"], "", "5\n", 0, "<- 200 OK"),
    ];
    for (args, stdin, stdout, code, stderr) in cases {
        let mut all = vec!["request", url.as_str()];
        all.extend_from_slice(args);
        let out = run(&all, stdin.as_bytes());
        assert_eq!(out.code, *code, "{args:?}: {}", out.stderr);
        assert_eq!(out.stdout, *stdout, "{args:?}");
        assert!(out.stderr.contains(stderr), "{args:?}: {}", out.stderr);
    }
    // The same server still speaks gotalk on its TCP address.
    let out = run(&["request", server.addr(), "echo", "tcp"], b"");
    assert_eq!(
        (out.code, out.stdout.as_str()),
        (0, "tcp\n"),
        "{}",
        out.stderr
    );

    // Over --max-payload the server answers 413, reported as trouble.
    let big = "x".repeat(2048);
    let small = Server::start(&["--http", "127.0.0.1:0", "--max-payload", "1KiB"]);
    let out = run(&["request", small.http_url(), "echo", &big], b"");
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert!(out.stderr.contains("413"), "{}", out.stderr);
}

#[test]
fn http_addresses_are_for_request_only() {
    let out = run(&["notify", "http://127.0.0.1:1/gotalk/", "x"], b"");
    assert_eq!(out.code, 2);
    assert!(out.stderr.contains("HTTP endpoint"), "{}", out.stderr);
    let out = run(&["request", "https://127.0.0.1:1/gotalk/", "echo"], b"");
    assert_eq!(out.code, 2);
    assert!(out.stderr.contains("plain http://"), "{}", out.stderr);
    let out = run(&["serve", "--help"], b"");
    assert!(out.stdout.contains("--http <HOST:PORT>"), "{}", out.stdout);
}

#[test]
#[allow(clippy::print_stderr)] // the skip message
fn curl_calls_the_endpoint() {
    if Command::new("curl").arg("--version").output().is_err() {
        eprintln!("skipping: curl is not installed on this machine");
        return;
    }
    let server = Server::start(&["--http", "127.0.0.1:0"]);
    let url = server.http_url();
    let curl = |args: &[&str]| {
        let o = Command::new("curl")
            .args(["-sS", "--max-time", "10", "-w", "\n%{http_code}"])
            .args(args)
            .output()
            .expect("curl runs");
        String::from_utf8_lossy(&o.stdout).into_owned()
    };
    assert_eq!(
        curl(&["-d", "hello", &format!("{url}call/echo")]),
        "hello\n200"
    );
    assert_eq!(
        curl(&["-d", r#"{"name":"curl"}"#, &format!("{url}call/greet")]),
        "{\"greeting\":\"Hello curl\"}\n200"
    );
    assert_eq!(
        curl(&["-d", "", &format!("{url}call/fail")]),
        "fail: this operation always fails\n422"
    );
    assert_eq!(
        curl(&["-d", "", &format!("{url}call/nope")]),
        "unknown operation \"nope\"\n\n404"
    );
    assert_eq!(curl(&["-d", "hi", &format!("{url}notify/note")]), "\n204");
    assert_eq!(curl(&[&format!("{url}call/echo")]), "\n405");
}
