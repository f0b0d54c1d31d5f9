//! The `gotalk` binary over WebSocket, TLS and wss://: `serve --ws`,
//! `serve --tls-cert/--tls-key`, and every client command on ws://, wss://
//! and tls:// addresses, with certificates made at run time by rcgen.

mod common;

use std::{
    io::{Read, Write},
    net::TcpStream,
    path::{Path, PathBuf},
    time::Duration,
};

use common::{Server, gotalk, listen_ready, run, wait_exit, wait_for};
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};

/// `host:port` of a `ws://host:port/path` URL.
fn authority(url: &str) -> &str {
    let rest = url.split_once("://").unwrap().1;
    &rest[..rest.find('/').unwrap_or(rest.len())]
}

/// Sends one raw HTTP/1.1 request and returns the status code and the
/// response head (headers lower-cased), reading at most what the head needs.
fn http(authority: &str, request: &str) -> (u16, String) {
    let mut s = TcpStream::connect(authority).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(request.as_bytes()).unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") && head.len() < 16 * 1024 {
        match s.read(&mut byte) {
            Ok(1) => head.push(byte[0]),
            _ => break,
        }
    }
    let head = String::from_utf8_lossy(&head).to_ascii_lowercase();
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("no HTTP status in {head:?}"));
    (status, head)
}

/// The status of a WebSocket upgrade request at `path`, with an optional `Origin`.
fn upgrade_status(authority: &str, path: &str, origin: Option<&str>) -> u16 {
    let origin = origin.map_or(String::new(), |o| format!("Origin: {o}\r\n"));
    http(
        authority,
        &format!(
            "GET {path} HTTP/1.1\r\nHost: {authority}\r\nUpgrade: websocket\r\n\
             Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
             Sec-WebSocket-Version: 13\r\n{origin}\r\n"
        ),
    )
    .0
}

fn get(authority: &str, path: &str) -> (u16, String) {
    http(
        authority,
        &format!("GET {path} HTTP/1.1\r\nHost: {authority}\r\nConnection: close\r\n\r\n"),
    )
}

#[test]
fn websocket_serves_every_kind_of_call() {
    let server = Server::start(&["--ws", "127.0.0.1:0"]);
    let ws = server.ws_url();
    assert!(
        ws.starts_with("ws://127.0.0.1:") && ws.ends_with("/gotalk/"),
        "{ws}"
    );
    // (arguments after the address, stdin, stdout, exit code, stderr must contain)
    let cases: &[(&[&str], &str, &str, i32, &str)] = &[
        (&["echo", "hello"], "", "hello\n", 0, ""),
        (&["echo", "-"], "a\0b", "a\0b\n", 0, ""),
        (
            &["greet", "--json", r#"{"name":"ws"}"#],
            "",
            "{\n  \"greeting\": \"Hello ws\"\n}\n",
            0,
            "",
        ),
        (&["call-back", "stressed"], "", "desserts\n", 0, ""),
        (&["fail", "nope"], "", "", 1, "error result: nope"),
    ];
    for (args, stdin, stdout, code, stderr) in cases {
        let mut argv = vec!["request", ws];
        argv.extend(*args);
        let o = run(&argv, stdin.as_bytes());
        assert_eq!(
            (o.code, o.stdout.as_str()),
            (*code, *stdout),
            "{argv:?}: {}",
            o.stderr
        );
        assert!(o.stderr.contains(stderr), "{argv:?}: {}", o.stderr);
    }
    // TCP goes on beside it.
    let o = run(&["request", server.addr(), "reverse", "abc"], b"");
    assert_eq!((o.code, o.stdout.as_str()), (0, "cba\n"), "{}", o.stderr);

    // A stream of many parts, bytes of every value.
    let data: Vec<u8> = (0..200_000u32).map(|i| (i * 7 % 251) as u8).collect();
    let out = gotalk()
        .args(["stream", "--chunk", "7000", ws, "stream-echo"])
        .write_stdin(data.clone())
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.stdout == data, "stream-echo over ws changed the bytes");
    let o = run(
        &["stream", "--chunk", "4", ws, "stream-fail"],
        b"abcdefghij",
    );
    assert_eq!((o.code, o.stdout.as_str()), (1, "abcd"), "{}", o.stderr);

    // The browser client, beside the endpoint.
    let (status, head) = get(authority(ws), "/gotalk/gotalk.js");
    assert_eq!(status, 200, "{head}");
    assert!(head.contains("content-type: text/javascript"), "{head}");
}

#[test]
fn notifications_cross_between_websocket_and_tcp() {
    let server = Server::start(&["--ws", "127.0.0.1:0"]);
    let (listen, lines) = listen_ready(&["--count", "2", server.ws_url(), "chat"]);
    for addr in [server.addr(), server.ws_url()] {
        let o = run(&["notify", addr, "chat", addr], b"");
        assert_eq!(o.code, 0, "{}", o.stderr);
    }
    let mut got: Vec<String> = (0..2)
        .map(|_| wait_for(&lines, |_| true).expect("a notification line"))
        .collect();
    got.sort();
    let mut want = vec![
        format!("chat {}", server.addr()),
        format!("chat {}", server.ws_url()),
    ];
    want.sort();
    assert_eq!(got, want);
    let mut listen = listen;
    assert_eq!(wait_exit(&mut listen.0, "listen").code(), Some(0));
}

#[test]
fn websocket_trace_mount_and_origin_policy() {
    for trace in [true, false] {
        let mut args = vec![
            "--ws",
            "127.0.0.1:0",
            "--ws-path",
            "/api/rpc",
            "--ws-allow-origin",
            "https://app.example",
        ];
        if trace {
            args.push("--trace");
        }
        let server = Server::start(&args);
        let ws = server.ws_url();
        assert!(ws.ends_with("/api/rpc/"), "{ws}");
        let host = authority(ws);

        let o = run(&["request", "--trace", ws, "echo", "hi"], b"");
        assert_eq!((o.code, o.stdout.as_str()), (0, "hi\n"), "{}", o.stderr);
        for line in [
            "-> 01",
            "<- 01",
            "-> r\\x00\\x00\\x00\\x00004echo00000002hi",
        ] {
            assert!(o.stderr.contains(line), "no {line:?} in {}", o.stderr);
        }
        if trace {
            for expected in [
                "conn#1 open 127.0.0.1:",
                "conn#1 <- r\\x00\\x00\\x00\\x00004echo00000002hi",
                "conn#1 -> R\\x00\\x00\\x00\\x0000000002hi",
                "conn#1 closed: connection closed by peer",
            ] {
                wait_for(&server.stdout, |l| l.starts_with(expected))
                    .unwrap_or_else(|seen| panic!("no {expected:?} in trace; saw {seen:?}"));
            }
        }

        // Origin policy: no Origin, same origin and listed origins get in.
        let same = format!("http://{host}");
        for (origin, status) in [
            (None, 101),
            (Some(same.as_str()), 101),
            (Some("https://app.example"), 101),
            (Some("https://evil.example"), 403),
            (Some("http://app.example"), 403),
        ] {
            assert_eq!(
                upgrade_status(host, "/api/rpc/", origin),
                status,
                "origin {origin:?}, trace {trace}"
            );
        }
        assert_eq!(get(host, "/api/rpc/gotalk.js").0, 200);
        assert_eq!(get(host, "/api/rpc/").0, 426);
        assert_eq!(get(host, "/gotalk/gotalk.js").0, 404);
    }
}

#[cfg(unix)]
#[test]
fn ctrl_c_closes_websocket_connections_gracefully() {
    let server = Server::start(&["--ws", "127.0.0.1:0", "--trace"]);
    let slow = std::process::Command::new(common::BIN)
        .args(["request", server.ws_url(), "slow", "300"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    wait_for(&server.stdout, |l| l.contains("004slow00000003300"))
        .unwrap_or_else(|seen| panic!("the slow request never arrived; saw {seen:?}"));
    // The trace shows the bytes as they are read, a moment before the
    // connection takes the request in: a request still unread when closing
    // starts is refused, rightly. Let it be taken in (it runs for 300 ms).
    std::thread::sleep(std::time::Duration::from_millis(100));
    let (code, stderr) = server.signal_and_wait("-INT");
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stderr.contains("shut down (1 connection(s) closed)"),
        "{stderr}"
    );
    let out = slow.wait_with_output().unwrap();
    assert_eq!(
        (out.status.code(), out.stdout.as_slice()),
        (Some(0), &b"300\n"[..]),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn bench_self_over_websocket() {
    let o = run(
        &["bench", "--self", "--ws", "-n", "500", "-c", "8", "--json"],
        b"",
    );
    assert_eq!(o.code, 0, "{}", o.stderr);
    let v: serde_json::Value = serde_json::from_str(o.stdout.trim()).unwrap();
    assert_eq!(v["requests"], 500, "{v}");
    assert_eq!(v["errors"], 0, "{v}");
    assert!(
        v["addr"].as_str().unwrap().starts_with("ws://127.0.0.1:"),
        "{v}"
    );
    assert!(v["requests_per_sec"].as_f64().unwrap() > 0.0, "{v}");
}

// ---- TLS ----

fn new_ca(name: &str) -> CertifiedIssuer<'static, KeyPair> {
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, name);
    CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap()
}

/// PEM files in a temporary directory: `ca.pem` and the server's
/// `cert.pem` + `key.pem` it signed (for 127.0.0.1 and localhost), and
/// `other-ca.pem`, a CA that signed nothing.
struct Pki {
    dir: tempfile::TempDir,
}

impl Pki {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let ca = new_ca("gotalk cli test CA");
        let key = KeyPair::generate().unwrap();
        let cert = CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()])
            .unwrap()
            .signed_by(&key, &ca)
            .unwrap();
        let write = |name: &str, pem: String| std::fs::write(dir.path().join(name), pem).unwrap();
        write("ca.pem", ca.pem());
        write("cert.pem", cert.pem());
        write("key.pem", key.serialize_pem());
        write("other-ca.pem", new_ca("another CA").pem());
        Self { dir }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn arg(&self, name: &str) -> String {
        self.path(name).to_str().unwrap().to_owned()
    }
}

/// Runs `gotalk ARGS` with "the platform's root certificates" being
/// `roots` (rustls-native-certs reads SSL_CERT_FILE), so tests do not
/// depend on the machine's trust store.
fn run_with_roots(args: &[&str], roots: &Path) -> common::Out {
    let o = gotalk()
        .args(args)
        .env("SSL_CERT_FILE", roots)
        .env_remove("SSL_CERT_DIR")
        .output()
        .unwrap();
    common::Out {
        code: o.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
    }
}

#[test]
fn tls_and_wss_need_a_trusted_certificate() {
    let pki = Pki::new();
    let (cert, key, ca, other) = (
        pki.arg("cert.pem"),
        pki.arg("key.pem"),
        pki.arg("ca.pem"),
        pki.arg("other-ca.pem"),
    );
    let server = Server::start(&[
        "--ws",
        "127.0.0.1:0",
        "--tls-cert",
        &cert,
        "--tls-key",
        &key,
    ]);
    let tls = server.addr();
    let wss = server.ws_url();
    assert!(tls.starts_with("tls://127.0.0.1:"), "{tls}");
    assert!(wss.starts_with("wss://127.0.0.1:"), "{wss}");
    let other_roots = pki.path("other-ca.pem");

    for addr in [tls, wss] {
        // With the CA: every command works.
        let o = run_with_roots(&["request", addr, "echo", "x", "--ca", &ca], &other_roots);
        assert_eq!(
            (o.code, o.stdout.as_str()),
            (0, "x\n"),
            "{addr}: {}",
            o.stderr
        );
        let o = run_with_roots(
            &[
                "request",
                "--trace",
                "--ca",
                &ca,
                addr,
                "greet",
                r#"{"name":"t"}"#,
            ],
            &other_roots,
        );
        assert_eq!(
            (o.code, o.stdout.as_str()),
            (0, "{\"greeting\":\"Hello t\"}\n"),
            "{addr}: {}",
            o.stderr
        );
        assert!(
            o.stderr.contains("<- R\\x00\\x00\\x00\\x00"),
            "{}",
            o.stderr
        );
        let o = gotalk()
            .args(["stream", "--ca", &ca, "--chunk", "3", addr, "stream-echo"])
            .write_stdin("over tls")
            .output()
            .unwrap();
        assert_eq!(
            (o.status.code(), o.stdout.as_slice()),
            (Some(0), &b"over tls"[..]),
            "{addr}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        let o = run_with_roots(&["notify", "--ca", &ca, addr, "chat", "hi"], &other_roots);
        assert_eq!(o.code, 0, "{addr}: {}", o.stderr);

        // Without --ca (the "platform" trusts another CA) or with the wrong
        // CA: exit 2 and a certificate error that says what to do.
        let o = run_with_roots(&["request", addr, "echo", "x"], &other_roots);
        assert_eq!((o.code, o.stdout.as_str()), (2, ""), "{addr}: {}", o.stderr);
        for needle in ["invalid peer certificate: UnknownIssuer", "pass --ca FILE"] {
            assert!(o.stderr.contains(needle), "{addr}: {}", o.stderr);
        }
        let o = run_with_roots(
            &["request", "--ca", &other, addr, "echo", "x"],
            &other_roots,
        );
        assert_eq!(o.code, 2, "{addr}: {}", o.stderr);
        assert!(
            o.stderr.contains("was not issued by the --ca certificate"),
            "{addr}: {}",
            o.stderr
        );
    }

    // Plain TCP to the TLS listener: the hint names tls://.
    let plain = tls.strip_prefix("tls://").unwrap();
    let o = run(&["request", plain, "echo", "x"], b"");
    assert_eq!(o.code, 2, "{}", o.stderr);
    assert!(o.stderr.contains("connect to tls://"), "{}", o.stderr);
    // An unreadable CA file.
    let o = run(
        &["request", "--ca", "/nonexistent/ca.pem", tls, "echo"],
        b"",
    );
    assert_eq!(o.code, 2);
    assert!(
        o.stderr.contains("cannot use --ca /nonexistent/ca.pem"),
        "{}",
        o.stderr
    );
    // bench over TLS.
    let o = run(
        &["bench", tls, "--ca", &ca, "-n", "200", "-c", "4", "--json"],
        b"",
    );
    assert_eq!(o.code, 0, "{}", o.stderr);
    assert!(o.stdout.contains("\"requests\":200"), "{}", o.stdout);
}

#[test]
fn tls_client_to_a_plain_server_and_bad_key_material() {
    let pki = Pki::new();
    let server = Server::start(&["--ws", "127.0.0.1:0"]);
    let ca = pki.arg("ca.pem");
    let tls = format!("tls://{}", server.addr());
    let wss = server.ws_url().replacen("ws://", "wss://", 1);
    for addr in [&tls, &wss] {
        let o = run(&["request", "--ca", &ca, addr, "echo", "x"], b"");
        assert_eq!(o.code, 2, "{addr}: {}", o.stderr);
        assert!(
            o.stderr.contains("the server does not seem to speak TLS"),
            "{addr}: {}",
            o.stderr
        );
    }
    // The key of another certificate, and a missing file: serve exits 2.
    let other_key = pki.path("other.key");
    std::fs::write(&other_key, KeyPair::generate().unwrap().serialize_pem()).unwrap();
    for (cert, key, needle) in [
        (
            pki.arg("cert.pem"),
            other_key.to_str().unwrap().to_owned(),
            "TLS configuration refused",
        ),
        (
            pki.arg("cert.pem"),
            "/nonexistent/key.pem".to_owned(),
            "cannot read /nonexistent/key.pem",
        ),
    ] {
        let o = run(
            &[
                "serve",
                "--addr",
                "127.0.0.1:0",
                "--tls-cert",
                &cert,
                "--tls-key",
                &key,
            ],
            b"",
        );
        assert_eq!(o.code, 2, "{}", o.stderr);
        assert!(o.stderr.contains(needle), "{needle}: {}", o.stderr);
    }
}

// ---- the openssl recipes of docs/tls.md ----

/// The `sh` blocks of docs/tls.md's "Certificates with openssl" section,
/// exactly as written there.
fn openssl_recipes() -> Vec<String> {
    let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/tls.md"))
        .expect("docs/tls.md");
    let section = doc
        .split_once("## Certificates with openssl")
        .expect("docs/tls.md has a section \"Certificates with openssl\"")
        .1;
    let section = section.split("\n## ").next().unwrap();
    section
        .split("```sh\n")
        .skip(1)
        .map(|block| block.split_once("```").unwrap().0.to_owned())
        .collect()
}

/// Runs a shell script in `dir`; panics with its output on failure.
fn sh(dir: &Path, script: &str) {
    let o = std::process::Command::new("sh")
        .args(["-ec", script])
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "{script}\nfailed: {}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
}

/// A `tls://localhost:PORT` request for `echo` against a server with
/// `dir`'s cert.pem and key.pem, trusting `--ca dir/ca`.
fn echo_over_tls(dir: &Path, ca: &str) -> common::Out {
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    let server = Server::start(&[
        "--tls-cert",
        cert.to_str().unwrap(),
        "--tls-key",
        key.to_str().unwrap(),
    ]);
    let port = server.addr().rsplit_once(':').unwrap().1;
    let addr = format!("tls://localhost:{port}");
    let ca = dir.join(ca);
    // The "platform" roots are the CA itself too: the test must not
    // depend on the machine's trust store either way.
    run_with_roots(
        &["request", &addr, "echo", "hi", "--ca", ca.to_str().unwrap()],
        &ca,
    )
}

#[test]
#[allow(clippy::print_stderr)] // the skip message
fn the_openssl_recipes_of_the_tls_docs_work() {
    if std::process::Command::new("openssl")
        .arg("version")
        .output()
        .is_err()
    {
        eprintln!("skipped: openssl is not installed");
        return;
    }
    let recipes = openssl_recipes();
    assert_eq!(recipes.len(), 2, "a CA + leaf recipe and a self-signed one");

    // CA + server certificate, the client trusts the CA.
    let dir = tempfile::tempdir().unwrap();
    sh(dir.path(), &recipes[0]);
    let o = echo_over_tls(dir.path(), "ca.pem");
    assert_eq!((o.code, o.stdout.as_str()), (0, "hi\n"), "{}", o.stderr);

    // One self-signed certificate, trusted as its own CA.
    let dir = tempfile::tempdir().unwrap();
    sh(dir.path(), &recipes[1]);
    let o = echo_over_tls(dir.path(), "cert.pem");
    assert_eq!((o.code, o.stdout.as_str()), (0, "hi\n"), "{}", o.stderr);

    // OpenSSL 3's usual one-liner makes a CA certificate (CA:TRUE): refused,
    // and the client says why in words.
    let dir = tempfile::tempdir().unwrap();
    sh(
        dir.path(),
        "openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
         -days 365 -subj /CN=localhost -addext basicConstraints=critical,CA:TRUE \
         -addext subjectAltName=DNS:localhost,IP:127.0.0.1 -keyout key.pem -out cert.pem",
    );
    let o = echo_over_tls(dir.path(), "cert.pem");
    assert_eq!(o.code, 2, "{}", o.stderr);
    for needle in [
        "CaUsedAsEndEntity",
        "the server's certificate is a CA certificate",
        "basicConstraints=critical,CA:FALSE",
    ] {
        assert!(o.stderr.contains(needle), "{needle}: {}", o.stderr);
    }
    assert!(
        !o.stderr.contains("it must be issued by"),
        "no unrelated hint: {}",
        o.stderr
    );
}

// ---- serve --static, and the browser quickstart of docs/websocket.md ----

/// One HTTP/1.1 request with `Connection: close`: status, head (lower-cased)
/// and body.
fn http_full(authority: &str, request: &str) -> (u16, String, Vec<u8>) {
    let mut s = TcpStream::connect(authority).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(request.as_bytes()).unwrap();
    let mut all = Vec::new();
    s.read_to_end(&mut all).unwrap();
    let split = all
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a response head");
    let head = String::from_utf8_lossy(&all[..split]).to_ascii_lowercase();
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    (status, head, all[split + 4..].to_vec())
}

fn get_with(authority: &str, method: &str, path: &str, headers: &str) -> (u16, String, Vec<u8>) {
    http_full(
        authority,
        &format!(
            "{method} {path} HTTP/1.1\r\nHost: {authority}\r\n{headers}Connection: close\r\n\r\n"
        ),
    )
}

/// The page of the quickstart, exactly as docs/websocket.md writes it.
fn quickstart_page() -> String {
    let doc = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../docs/websocket.md"
    ))
    .expect("docs/websocket.md");
    let start = "$ cat > site/index.html <<'EOF'\n";
    let page = doc.split_once(start).expect("the quickstart's page").1;
    page.split_once("\nEOF\n").unwrap().0.to_owned() + "\n"
}

#[test]
fn serve_static_runs_the_browser_quickstart() {
    let dir = tempfile::tempdir().unwrap();
    let site = dir.path().join("site");
    std::fs::create_dir_all(site.join("sub")).unwrap();
    let page = quickstart_page();
    std::fs::write(site.join("index.html"), &page).unwrap();
    std::fs::write(site.join("app.mjs"), "export const x = 1;\n").unwrap();
    std::fs::write(site.join("sub/style.css"), "body {}\n").unwrap();
    std::fs::write(site.join(".env"), "SECRET=1\n").unwrap();
    std::fs::write(dir.path().join("outside.txt"), "outside\n").unwrap();
    #[cfg(unix)]
    std::os::unix::fs::symlink(dir.path().join("outside.txt"), site.join("link.txt")).unwrap();

    let site_arg = site.to_str().unwrap();
    let server = Server::start(&[
        "--ws",
        "127.0.0.1:0",
        "--static",
        site_arg,
        "--ws-allow-origin",
        "http://localhost:5173",
    ]);
    let ws = server.ws_url();
    let host = authority(ws).to_owned();
    let served = wait_for(&server.stdout, |l| l.starts_with("serving "))
        .unwrap_or_else(|seen| panic!("no `serving` line; saw {seen:?}"));
    assert!(served.ends_with(&format!(" at http://{host}/")), "{served}");

    // The page, as written in the docs, at /.
    let (status, head, body) = get_with(&host, "GET", "/", "");
    assert_eq!(status, 200, "{head}");
    assert!(
        head.contains("content-type: text/html; charset=utf-8"),
        "{head}"
    );
    assert_eq!(String::from_utf8(body).unwrap(), page);
    // What it imports...
    assert!(page.contains("import * as gotalk from '/gotalk/gotalk.js'"));
    let (status, head, body) = get_with(&host, "GET", "/gotalk/gotalk.js", "");
    assert_eq!(status, 200, "{head}");
    assert!(head.contains("content-type: text/javascript"), "{head}");
    assert!(String::from_utf8_lossy(&body).contains("export function connect"));
    // ... connects same-origin (gotalk.connect() goes to the module's mount) ...
    assert_eq!(
        upgrade_status(&host, "/gotalk/", Some(&format!("http://{host}"))),
        101
    );
    // ... and calls `greet` with what the page sends.
    let o = run(&["request", ws, "greet", r#"{"name":"browser"}"#], b"");
    assert_eq!(
        (o.code, o.stdout.as_str()),
        (0, "{\"greeting\":\"Hello browser\"}\n"),
        "{}",
        o.stderr
    );

    // Content types, directories, HEAD, methods.
    let (status, head, _) = get_with(&host, "GET", "/app.mjs", "");
    assert_eq!(status, 200);
    assert!(
        head.contains("content-type: text/javascript; charset=utf-8"),
        "{head}"
    );
    assert!(head.contains("x-content-type-options: nosniff"), "{head}");
    let (status, head, _) = get_with(&host, "GET", "/sub/style.css", "");
    assert_eq!(status, 200);
    assert!(head.contains("content-type: text/css"), "{head}");
    let (status, head, _) = get_with(&host, "GET", "/sub", "");
    assert_eq!(status, 301);
    assert!(head.contains("location: /sub/"), "{head}");
    let (status, head, body) = get_with(&host, "HEAD", "/index.html", "");
    assert_eq!(status, 200);
    assert!(
        head.contains(&format!("content-length: {}", page.len())),
        "{head}"
    );
    assert!(body.is_empty());
    assert_eq!(get_with(&host, "POST", "/", "Content-Length: 0\r\n").0, 405);

    // Nothing outside the directory, nothing hidden, no listings.
    for path in [
        "/../outside.txt",
        "/%2e%2e/outside.txt",
        "/sub/..%2f..%2foutside.txt",
        "/.env",
        "/%2eenv",
        "/link.txt",
        "/sub/",
        "/missing.html",
    ] {
        let (status, _, body) = get_with(&host, "GET", path, "");
        assert_eq!(status, 404, "{path}");
        assert!(
            !String::from_utf8_lossy(&body).contains("outside"),
            "{path}"
        );
    }

    // CORS on the module for admitted origins only.
    let (_, head, _) = get_with(
        &host,
        "GET",
        "/gotalk/gotalk.js",
        "Origin: http://localhost:5173\r\n",
    );
    assert!(
        head.contains("access-control-allow-origin: http://localhost:5173"),
        "{head}"
    );
    assert!(head.contains("vary: ") && head.contains("origin"), "{head}");
    let (_, head, _) = get_with(
        &host,
        "GET",
        "/gotalk/gotalk.js",
        "Origin: https://evil.example\r\n",
    );
    assert!(!head.contains("access-control-allow-origin"), "{head}");

    // Without --static, the page is not there.
    let plain = Server::start(&["--ws", "127.0.0.1:0"]);
    assert_eq!(get_with(authority(plain.ws_url()), "GET", "/", "").0, 404);

    // Usage: --static needs --ws and a directory.
    let o = run(&["serve", "--static", site_arg], b"");
    assert_eq!(o.code, 2, "{}", o.stderr);
    let missing = dir.path().join("nope");
    let o = run(
        &[
            "serve",
            "--addr",
            "127.0.0.1:0",
            "--ws",
            "127.0.0.1:0",
            "--static",
            missing.to_str().unwrap(),
        ],
        b"",
    );
    assert_eq!(o.code, 2, "{}", o.stderr);
    assert!(o.stderr.contains("cannot use --static"), "{}", o.stderr);
}

/// The quickstart of `docs/websocket.md`, exactly as written, in headless
/// Chromium: `gotalk serve --ws … --static site` serves the page, the page
/// imports `/gotalk/gotalk.js`, connects and shows `Hello browser`.
///
/// Needs `/usr/bin/chromium`, `node` and the browser test's `node_modules`
/// (`crates/peer/tests/browser/setup.sh` installs them); without them it
/// fails when `CI=true` and is skipped, with a message, otherwise.
#[test]
#[allow(clippy::print_stderr)] // the skip message
fn the_browser_quickstart_runs_in_chromium() {
    let browser_dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../peer/tests/browser")
        .canonicalize();
    let ready = browser_dir.as_ref().ok().filter(|dir| {
        std::path::Path::new("/usr/bin/chromium").exists()
            && dir.join("node_modules/playwright-core").exists()
            && std::process::Command::new("node")
                .arg("--version")
                .output()
                .is_ok_and(|o| o.status.success())
    });
    let Some(browser_dir) = ready else {
        let why = "needs /usr/bin/chromium, node and crates/peer/tests/browser/node_modules: \
                   run `bash crates/peer/tests/browser/setup.sh`";
        if std::env::var("CI").is_ok_and(|v| v == "true") {
            panic!("{why}");
        }
        eprintln!("skipped: {why}");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let site = dir.path().join("site");
    std::fs::create_dir_all(&site).unwrap();
    std::fs::write(site.join("index.html"), quickstart_page()).unwrap();
    let server = Server::start(&["--ws", "127.0.0.1:0", "--static", site.to_str().unwrap()]);
    let host = authority(server.ws_url()).to_owned();
    wait_for(&server.stdout, |l| l.starts_with("serving "))
        .unwrap_or_else(|seen| panic!("no `serving` line; saw {seen:?}"));
    // Loads the page and waits for what the docs say it shows.
    let script = r#"
        const { chromium } = require('playwright-core');
        (async () => {
          const dataDir = require('fs').mkdtempSync(require('path').join(require('os').tmpdir(), 'gotalk-qs-'));
          const context = await chromium.launchPersistentContext(dataDir, {
            executablePath: '/usr/bin/chromium', headless: true, timeout: 60000,
            args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
                   '--disable-background-networking', '--disable-component-update', '--disable-sync'],
          });
          try {
            const page = context.pages()[0] ?? (await context.newPage());
            page.on('pageerror', (e) => console.error(`[page error] ${e.message}`));
            await page.goto(process.argv[1], { timeout: 15000 });
            await page.waitForFunction(
              () => document.getElementById('out')?.textContent === 'Hello browser',
              null, { timeout: 30000, polling: 100 });
            console.log(await page.textContent('#out'));
          } finally {
            await context.close();
            require('fs').rmSync(dataDir, { recursive: true, force: true });
          }
        })().catch((e) => { console.error(e); process.exit(1); });
    "#;
    let out = std::process::Command::new("node")
        .current_dir(browser_dir)
        .env("NODE_PATH", browser_dir.join("node_modules"))
        .args(["-e", script, &format!("http://{host}/")])
        .output()
        .expect("run node");
    assert!(
        out.status.success(),
        "the quickstart page did not say `Hello browser`: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "Hello browser");
}
