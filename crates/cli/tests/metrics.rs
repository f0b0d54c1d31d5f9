//! `gotalk serve --metrics`: Prometheus text, scraped after real calls.

mod common;

use std::{
    io::{Read, Write},
    net::TcpStream,
    time::Duration,
};

use common::{Server, run};

/// `GET /metrics` over a plain socket: the whole response.
fn scrape(url: &str) -> String {
    let rest = url.strip_prefix("http://").expect("an http:// URL");
    let (host, path) = rest.split_once('/').expect("a path");
    let mut s = TcpStream::connect(host).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        s,
        "GET /{path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    assert!(out.starts_with("HTTP/1.1 200"), "{out}");
    out
}

/// The value of the sample named `name` whose labels include each of
/// `labels` (`key="value"`); `None` when there is none.
fn sample(text: &str, name: &str, labels: &[&str]) -> Option<f64> {
    text.lines().find_map(|line| {
        let (series, value) = line.rsplit_once(' ')?;
        let (metric, rest) = series.split_once('{').unwrap_or((series, ""));
        (metric == name && labels.iter().all(|l| rest.contains(l)))
            .then(|| value.parse().ok())
            .flatten()
    })
}

#[test]
fn serve_metrics_counts_what_it_serves() {
    let server = Server::start(&["--http", "127.0.0.1:0", "--metrics", "127.0.0.1:0"]);
    let url = server.metrics_url().to_owned();
    assert!(
        url.starts_with("http://127.0.0.1:") && url.ends_with("/metrics"),
        "{url}"
    );
    for _ in 0..3 {
        let out = run(&["request", server.addr(), "echo", "hello"], b"");
        assert_eq!(out.code, 0, "{}", out.stderr);
    }
    // Over HTTP too: the same layers.
    let out = run(&["request", server.http_url(), "echo", "http"], b"");
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(run(&["request", server.addr(), "fail"], b"").code, 1);
    assert_eq!(run(&["request", server.addr(), "nope"], b"").code, 1);
    let out = run(&["stream", server.addr(), "stream-echo"], b"abc");
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(run(&["notify", server.addr(), "hello", "x"], b"").code, 0);

    let text = scrape(&url);
    let get = |name: &str, labels: &[&str]| {
        sample(&text, name, labels).unwrap_or_else(|| panic!("no {name} {labels:?} in:\n{text}"))
    };
    let echo = ["operation=\"echo\""];
    assert_eq!(
        get(
            "gotalk_requests_total",
            &["operation=\"echo\"", "outcome=\"ok\""]
        ),
        4.0
    );
    assert_eq!(
        get(
            "gotalk_requests_total",
            &["operation=\"fail\"", "outcome=\"error\""]
        ),
        1.0
    );
    assert_eq!(get("gotalk_requests_total", &["outcome=\"unknown\""]), 1.0);
    assert_eq!(get("gotalk_request_duration_seconds_count", &echo), 4.0);
    assert_eq!(
        get(
            "gotalk_request_duration_seconds_bucket",
            &["operation=\"echo\"", "le=\"+Inf\""]
        ),
        4.0
    );
    assert!(get("gotalk_request_duration_seconds_sum", &echo) > 0.0);
    // Seven gotalk connections, one per command (the HTTP call has none).
    assert_eq!(get("gotalk_connections_accepted_total", &[]), 7.0);
    assert!(get("gotalk_bytes_received_total", &[]) > 0.0);
    assert!(get("gotalk_bytes_sent_total", &[]) > 0.0);
    assert_eq!(get("gotalk_stream_requests_total", &[]), 1.0);
    assert!(get("gotalk_notifications_received_total", &[]) >= 1.0);
    assert!(
        text.contains("# TYPE gotalk_connections_open gauge"),
        "{text}"
    );
}
