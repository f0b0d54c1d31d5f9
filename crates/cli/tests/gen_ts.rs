//! `gotalk gen ts`: the TypeScript written from a typed service's listing
//! is the one committed under crates/peer/js/test-support/typed/ (type-checked by
//! `tsc` in .ci/run), and the generated client works: node, and a page in
//! headless Chromium, run it on gotalk.js against the Rust service over a
//! real WebSocket (every kind of operation, a typed error as `ServiceError`).
//!
//! After changing the generator: `GOTALK_BLESS=1 cargo test -p gotalk-cli
//! --test gen_ts`, then read the diff.

#![allow(clippy::print_stderr)] // the skip message

mod common;

use std::{path::PathBuf, process::Command, sync::Mutex};

use bytes::Bytes;
use common::run;
use futures::StreamExt;
use gotalk_peer::{
    Config, HandlerError, Server,
    service::{Incoming, Listing, Outgoing},
    ws::{WsConfig, WsListener},
};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

#[derive(Clone, Serialize, Deserialize, JsonSchema)]
struct Message {
    room: String,
    text: String,
    /// Who sent it, when known.
    from: Option<String>,
}

#[derive(Serialize, Deserialize, JsonSchema)]
struct Ack {
    id: u64,
}

#[derive(Debug, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "kind")]
enum ChatError {
    NoSuchRoom { room: String },
    Closed,
}

impl std::fmt::Display for ChatError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::NoSuchRoom { room } => write!(f, "no room called {room:?}"),
            Self::Closed => f.write_str("closed"),
        }
    }
}

#[gotalk_peer::service(prefix = "chat", schema)]
trait Chat {
    /// Posts a message.
    async fn send(&self, message: Message) -> Result<Ack, ChatError>;
    /// The messages posted so far.
    async fn history(&self, room: String) -> Outgoing<Message, ChatError>;
    /// Counts the bytes of the parts.
    async fn upload(&self, parts: Incoming<Bytes>) -> Result<u64, HandlerError>;
    /// Upper-cases each line.
    async fn shout(&self, lines: Incoming<String>) -> Outgoing<String>;
    /// Who is there.
    async fn who(&self) -> Vec<String>;
    /// Someone is typing.
    #[notification]
    async fn typing(&self, who: String);
    /// Raw bytes, reversed.
    #[op(name = "reverse")]
    async fn reverse(&self, payload: Bytes) -> Bytes;
}

#[derive(Default)]
struct Rooms {
    messages: Mutex<Vec<Message>>,
    typing: Mutex<Vec<String>>,
}

impl Chat for Rooms {
    async fn send(&self, message: Message) -> Result<Ack, ChatError> {
        if message.room != "lobby" {
            return Err(ChatError::NoSuchRoom { room: message.room });
        }
        let mut messages = self.messages.lock().unwrap();
        messages.push(message);
        Ok(Ack {
            id: messages.len() as u64,
        })
    }
    async fn history(&self, room: String) -> Outgoing<Message, ChatError> {
        if room != "lobby" {
            return Outgoing::fail(ChatError::NoSuchRoom { room });
        }
        Outgoing::iter(self.messages.lock().unwrap().clone())
    }
    async fn upload(&self, mut parts: Incoming<Bytes>) -> Result<u64, HandlerError> {
        let mut total = 0;
        while let Some(part) = parts.next().await {
            total += part?.len() as u64;
        }
        Ok(total)
    }
    async fn shout(&self, lines: Incoming<String>) -> Outgoing<String> {
        Outgoing::new(lines.map(|l| l.map(|l| l.to_uppercase())))
    }
    async fn who(&self) -> Vec<String> {
        self.typing.lock().unwrap().clone()
    }
    async fn typing(&self, who: String) {
        self.typing.lock().unwrap().push(who);
    }
    async fn reverse(&self, payload: Bytes) -> Bytes {
        payload.iter().rev().copied().collect::<Vec<u8>>().into()
    }
}

fn js_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../peer/js")
}

fn listing() -> Listing {
    Listing::new().service(ChatServer::<Rooms>::description())
}

#[test]
fn the_committed_typescript_is_what_gen_ts_writes() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("listing.json");
    std::fs::write(&file, listing().to_json().to_string()).unwrap();
    let out = dir.path().to_str().unwrap();
    let o = run(
        &[
            "gen",
            "ts",
            "--listing",
            file.to_str().unwrap(),
            "--out",
            out,
            "--name",
            "chat",
            "--gotalk-js",
            "../../gotalk.js",
        ],
        b"",
    );
    assert_eq!(o.code, 0, "{}", o.stderr);
    let committed = js_dir().join("test-support/typed");
    for name in ["chat.d.ts", "chat.js"] {
        let generated = std::fs::read_to_string(dir.path().join(name)).unwrap();
        if std::env::var_os("GOTALK_BLESS").is_some() {
            std::fs::write(committed.join(name), &generated).unwrap();
        }
        let expected = std::fs::read_to_string(committed.join(name)).unwrap_or_default();
        assert!(
            generated == expected,
            "crates/peer/js/test-support/typed/{name} is not what `gotalk gen ts` writes now; \
             rerun with GOTALK_BLESS=1 and read the diff"
        );
    }
}

#[test]
fn the_generated_client_calls_the_service_from_node() {
    let node = Command::new("node").arg("--version").output();
    let Ok(version) = node else {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "node is needed in CI"
        );
        eprintln!("skipped: no node");
        return;
    };
    assert!(version.status.success());
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let server = runtime.block_on(async {
        let handlers = listing().register(ChatServer::new(Rooms::default()).into_handlers());
        let listener = WsListener::bind("127.0.0.1:0", WsConfig::default())
            .await
            .unwrap();
        Server::new(listener, handlers, Config::default()).spawn()
    });
    let url = server.local_addr().to_string();
    let script = js_dir().join("test-support/typed/run-client.mjs");
    let o = Command::new("node")
        .arg("--experimental-websocket")
        .arg("--no-warnings")
        .arg(&script)
        .arg(&url)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&o.stdout);
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "node failed:\n{stdout}\n{stderr}");
    assert_eq!(stdout.trim(), "ok 7", "{stderr}");
    runtime.block_on(server.shutdown());
}

/// The page of the browser check: the generated client on gotalk.js, as a
/// page would use it, running the checks of `checks.mjs`.
const PAGE: &str = r#"<!doctype html>
<script type="module">
  import { connect } from '/gotalk.js';
  import { client, ServiceError } from '/t/typed/chat.js';
  import { runChecks } from '/t/typed/checks.mjs';
  const conn = connect(`ws://${location.host}/gotalk/`, { keepAlive: false });
  runChecks(client(conn), ServiceError)
    .then((passed) => { window.__results = { passed }; },
          (e) => { window.__results = { error: String(e) }; })
    .finally(() => { conn.close(); window.__done = true; });
</script>
"#;

#[test]
fn the_generated_client_runs_in_chromium() {
    let browser_dir = js_dir().join("../tests/browser");
    let ready = std::path::Path::new("/usr/bin/chromium").exists()
        && browser_dir.join("node_modules/playwright-core").exists();
    if !ready {
        let why = "needs /usr/bin/chromium and crates/peer/tests/browser/node_modules: \
                   run `bash crates/peer/tests/browser/setup.sh`";
        assert!(std::env::var("CI").as_deref() != Ok("true"), "{why}");
        eprintln!("skipped: {why}");
        return;
    }
    use axum::{Router, http::header, routing::get};
    use gotalk_peer::ws;
    let typed = js_dir().join("test-support/typed");
    let chat_js = std::fs::read_to_string(typed.join("chat.js")).unwrap();
    let checks_js = std::fs::read_to_string(typed.join("checks.mjs")).unwrap();
    let js = |body: String| ([(header::CONTENT_TYPE, "text/javascript")], body);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let (addr, server) = runtime.block_on(async {
        let handlers = listing().register(ChatServer::new(Rooms::default()).into_handlers());
        let (listener, routes) = ws::router(WsConfig::default());
        let server = Server::new(listener, handlers, Config::default()).spawn();
        // chat.js imports "../../gotalk.js": served at /t/typed/, that is /gotalk.js.
        let app: Router = Router::new()
            .route("/", get(|| async { axum::response::Html(PAGE) }))
            .route(
                "/gotalk.js",
                get(move || async move { js(ws::GOTALK_JS.to_owned()) }),
            )
            .route("/t/typed/chat.js", get(move || async move { js(chat_js) }))
            .route(
                "/t/typed/checks.mjs",
                get(move || async move { js(checks_js) }),
            )
            .merge(routes);
        let tcp = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = tcp.local_addr().unwrap();
        tokio::spawn(async move {
            let app = app.into_make_service_with_connect_info::<std::net::SocketAddr>();
            let _ = axum::serve(tcp, app).await;
        });
        (addr, server)
    });
    let o = Command::new("node")
        .current_dir(&browser_dir)
        .arg("run.mjs")
        .arg(format!("http://{addr}/"))
        .arg("60000")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&o.stdout);
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(
        o.status.success(),
        "chromium run failed:\n{stdout}\n{stderr}"
    );
    assert_eq!(stdout.trim(), r#"{"passed":7}"#, "{stderr}");
    runtime.block_on(server.shutdown());
}
