//! Real-browser test: headless Chromium loads a page from a Rust server and
//! the page's own script talks gotalk to it through the embedded JS client.
//!
//! Needs `/usr/bin/chromium`, `node` and `tests/browser/node_modules`
//! (`crates/peer/tests/browser/setup.sh` installs them). Without them the
//! test fails when `CI=true` and is skipped (with a message) otherwise.
#![cfg(feature = "websocket")]
#![allow(clippy::print_stderr)]

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use axum::{Router, response::Html, routing::get};
use bytes::Bytes;
use futures::StreamExt;
use gotalk_peer::{
    Config, ConnectionInfo, Error, HandlerError, Handlers, Server, ServerHandle,
    ws::{self, WsConfig},
};
use serde_json::{Value, json};
use tokio::{
    net::TcpListener,
    sync::{mpsc, oneshot},
    task::JoinHandle,
    time::timeout,
};

const PAGE: &str = include_str!("browser/page.html");
const CHROMIUM: &str = "/usr/bin/chromium";
/// How long the whole page run may take.
const PAGE_TIMEOUT: Duration = Duration::from_secs(60);

/// What the server saw.
#[derive(Debug)]
enum Event {
    Report(u64),
    /// The browser's answer to our `add` request.
    Added(Result<i64, String>),
    /// What `stream_request` did on a connection without stream capability.
    StreamRefused(String),
}

fn handlers(events: mpsc::UnboundedSender<Event>) -> Handlers {
    Handlers::new()
        .buffer("echo", |_ctx, payload: Bytes| async move {
            Ok::<_, HandlerError>(payload)
        })
        .json("greet", |_ctx, input: Value| async move {
            let name = input["name"].as_str().unwrap_or("nobody").to_owned();
            Ok::<_, HandlerError>(json!({ "greeting": format!("Hello {name}") }))
        })
        .stream("upper", |_ctx, mut parts, mut results| async move {
            while let Some(part) = parts.next().await {
                let part = part.map_err(|e| HandlerError::new(e.to_string()))?;
                let upper = String::from_utf8_lossy(&part).to_uppercase();
                results
                    .send(upper)
                    .await
                    .map_err(|e| HandlerError::new(e.to_string()))?;
            }
            Ok::<_, HandlerError>(())
        })
        // The browser asks us to call it back with a stream request.
        .json("reversed", |ctx, _: Value| async move {
            let (mut writer, results) = ctx
                .peer()
                .stream_request("reverse")
                .await
                .map_err(|e| HandlerError::new(e.to_string()))?;
            for part in ["abc", "xyz"] {
                writer
                    .send(part)
                    .await
                    .map_err(|e| HandlerError::new(e.to_string()))?;
            }
            writer
                .end()
                .await
                .map_err(|e| HandlerError::new(e.to_string()))?;
            let all = results
                .collect_bytes(1024)
                .await
                .map_err(|e| HandlerError::new(e.to_string()))?;
            Ok::<_, HandlerError>(String::from_utf8_lossy(&all).into_owned())
        })
        .json("report", move |_ctx, input: Value| {
            let events = events.clone();
            async move {
                let phase = input["phase"].as_u64().unwrap_or(0);
                let _ = events.send(Event::Report(phase));
                Ok::<_, HandlerError>(true)
            }
        })
}

/// The server half of the test; started twice on the same port.
struct TestServer {
    server: ServerHandle,
    stop: oneshot::Sender<()>,
    task: JoinHandle<()>,
}

impl TestServer {
    async fn start(listener: TcpListener, events: mpsc::UnboundedSender<Event>) -> Self {
        let on_connect_events = events.clone();
        let on_open = move |peer: &gotalk_peer::Peer, info: &ConnectionInfo| {
            let peer = peer.clone();
            let events = on_connect_events.clone();
            let caps = info.websocket().is_some_and(|w| w.remote_stream_requests);
            tokio::spawn(async move {
                if caps {
                    return; // the second connection of the page: it calls us
                }
                let added = peer
                    .request_json::<_, i64>("add", &json!({"a": 2, "b": 3}))
                    .await
                    .map_err(|e| e.to_string());
                let _ = events.send(Event::Added(added));
                let refused = match peer.stream_request("reverse").await {
                    Ok(_) => "stream request was sent".to_owned(),
                    Err(e @ Error::Usage(gotalk_peer::UsageError::Unsupported(_))) => {
                        format!("unsupported: {e}")
                    }
                    Err(e) => format!("other error: {e}"),
                };
                let _ = events.send(Event::StreamRefused(refused));
                let _ = peer
                    .notify_json(
                        "hello",
                        &json!({"from": "rust", "text": "h\u{e9}llo \u{1f600}"}),
                    )
                    .await;
            });
        };
        let (ws_listener, routes) = ws::router(WsConfig::default());
        let server = Server::new(ws_listener, handlers(events), Config::default())
            .on_open(on_open)
            .spawn();
        let app: Router = Router::new()
            .route("/", get(|| async { Html(PAGE) }))
            .merge(routes);
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let served = axum::serve(
                listener,
                app.into_make_service_with_connect_info::<SocketAddr>(),
            )
            .with_graceful_shutdown(async move {
                let _ = stopped.await;
            })
            .await;
            served.expect("test server");
        });
        Self { server, stop, task }
    }

    async fn stop(self) {
        let _ = self.stop.send(());
        self.server.shutdown().await;
        timeout(Duration::from_secs(10), self.task)
            .await
            .expect("server stops in time")
            .expect("server task");
    }
}

/// Kills the node process (and so Chromium) if the test ends early.
struct Node(Option<Child>);

impl Drop for Node {
    fn drop(&mut self) {
        if let Some(child) = &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn browser_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser")
}

/// Why the browser test cannot run here, if it cannot.
fn missing_prerequisite() -> Option<String> {
    if !Path::new(CHROMIUM).exists() {
        return Some(format!("{CHROMIUM} not found"));
    }
    let node = Command::new("node")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
    if !matches!(node, Ok(s) if s.success()) {
        return Some("node not found".into());
    }
    if !browser_dir().join("node_modules/playwright-core").exists() {
        return Some("tests/browser/node_modules/playwright-core not installed".into());
    }
    None
}

async fn next_event(events: &mut mpsc::UnboundedReceiver<Event>, what: &str) -> Event {
    timeout(PAGE_TIMEOUT, events.recv())
        .await
        .unwrap_or_else(|_| panic!("timed out waiting for {what}"))
        .expect("event channel open")
}

async fn bind_again(addr: SocketAddr) -> TcpListener {
    // The old listener is closed; retry briefly in case the port is not free yet.
    let mut last = None;
    for _ in 0..100 {
        match TcpListener::bind(addr).await {
            Ok(l) => return l,
            Err(e) => last = Some(e),
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("cannot bind {addr} again: {last:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chromium_runs_the_js_client_against_the_rust_server() {
    if let Some(why) = missing_prerequisite() {
        let msg = format!(
            "browser test prerequisites missing: {why}; run crates/peer/tests/browser/setup.sh"
        );
        if std::env::var("CI").is_ok_and(|v| v == "true") {
            panic!("{msg}");
        }
        eprintln!("SKIPPED chromium_runs_the_js_client_against_the_rust_server: {msg}");
        return;
    }

    let (tx, mut events) = mpsc::unbounded_channel();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = TestServer::start(listener, tx.clone()).await;

    let started = Instant::now();
    let child = Command::new("node")
        .arg(browser_dir().join("run.mjs"))
        .arg(format!("http://{addr}/"))
        .arg(PAGE_TIMEOUT.as_millis().to_string())
        .current_dir(browser_dir())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start node");
    let mut node = Node(Some(child));

    // Phase 1: calls both ways, a stream, a notification.
    let mut added = None;
    let mut refused = None;
    loop {
        match next_event(&mut events, "phase 1 report").await {
            Event::Report(1) => break,
            Event::Report(n) => panic!("unexpected report {n}"),
            Event::Added(r) => added = Some(r),
            Event::StreamRefused(r) => refused = Some(r),
        }
    }
    let phase1 = started.elapsed();
    assert_eq!(added, Some(Ok(5)), "the browser answered our request");
    let refused = refused.expect("stream request attempted");
    assert!(
        refused.starts_with("unsupported"),
        "no stream request may go to a default (gotalk.js-compatible) connection: {refused}"
    );

    // Restart the server on the same port; the page must reconnect by itself.
    server.stop().await;
    let restarted_at = Instant::now();
    let server = TestServer::start(bind_again(addr).await, tx).await;
    loop {
        match next_event(&mut events, "phase 2 report").await {
            Event::Report(2) => break,
            Event::Report(n) => panic!("unexpected report {n}"),
            Event::Added(r) => assert_eq!(r, Ok(5), "the browser answered after reconnecting"),
            Event::StreamRefused(_) => {}
        }
    }
    let reconnect = restarted_at.elapsed();

    // What the page reports.
    let child = node.0.take().expect("node running");
    let output = tokio::task::spawn_blocking(move || wait_with_deadline(child, PAGE_TIMEOUT))
        .await
        .unwrap();
    server.stop().await;
    let stdout = String::from_utf8_lossy(&output);
    let line = stdout
        .lines()
        .last()
        .expect("node printed the page's results");
    let results: Value = serde_json::from_str(line).expect("results are JSON");
    eprintln!(
        "browser test: phase 1 after {phase1:?}, reconnect + phase 2 within {reconnect:?}, total {:?}",
        started.elapsed()
    );

    assert_eq!(results["errors"], json!([]), "page errors: {results}");
    let steps = &results["steps"];
    assert_eq!(
        steps["address"],
        json!(format!("ws://{addr}/gotalk/")),
        "the client finds the mount it was served from"
    );
    assert_eq!(steps["echo"], json!({"message": "hi", "n": [1, 2, 3]}));
    assert_eq!(steps["bufferEcho"], json!("a\u{0}b \u{1f600} \u{e9}"));
    assert_eq!(steps["greet"], json!({"greeting": "Hello Chromium"}));
    assert_eq!(steps["stream"], json!(["ABC", "D\u{c9}F"]));
    assert_eq!(
        steps["notification"],
        json!({"from": "rust", "text": "h\u{e9}llo \u{1f600}"})
    );
    assert_eq!(
        steps["unknownOp"],
        json!("unknown operation \"no-such-op\"")
    );
    assert_eq!(steps["answeredAdd"], json!({"a": 2, "b": 3}));
    assert_eq!(steps["capsStream"], json!("cbazyx"));
    assert_eq!(steps["echoAfterRestart"], json!("again"));
    assert!(
        results["opens"].as_u64() >= Some(2),
        "reconnected: {results}"
    );
}

/// Waits for the node process (polling, bounded by `limit`) and returns its stdout.
fn wait_with_deadline(mut child: Child, limit: Duration) -> Vec<u8> {
    use std::io::Read;
    let deadline = Instant::now() + limit;
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for node") {
            break status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("node did not finish within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut out = Vec::new();
    if let Some(mut stdout) = child.stdout.take() {
        stdout.read_to_end(&mut out).expect("read node stdout");
    }
    assert!(
        status.success(),
        "node run.mjs failed ({status}); stdout: {}",
        String::from_utf8_lossy(&out)
    );
    out
}
