//! A browser chat on the hub: rooms, who is there, recent messages, and a
//! page that picks up where it left off after a reconnect.
//!
//! ```sh
//! cargo run -p gotalk-hub --example chat            # http://127.0.0.1:8080/
//! cargo run -p gotalk-hub --example chat -- 0.0.0.0:3000
//! ```
//!
//! Open the page in a few tabs; `#NAME` after the address picks another
//! room. The server is a [`Hub`] on a WebSocket listener that also serves
//! the page (`index.html`, next to this file) and the JS client
//! (`/gotalk/gotalk.js`):
//!
//! - room `NAME` is the channel `room:NAME`, which keeps its last 100
//!   messages: a page shows the recent ones, and resumes after a reconnect
//!   without missing or repeating any;
//! - the nickname is the token the page authenticates with ([`Nicknames`]);
//!   subscribing with presence and events lists who is in the room;
//! - [`Messages`], the hooks, checks and stamps what is said.
//!
//! The page uses nothing but gotalk.js's hub API: `subscribe`, `publish`,
//! `presence`, `history`.
#![allow(clippy::print_stdout)]

use std::{
    error::Error,
    net::SocketAddr,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use axum::{Router, response::Html, routing::get};
use bytes::Bytes;
use futures::future::{BoxFuture, FutureExt};
use gotalk_hub::{
    ClientContext, Denied, Hooks, Hub,
    auth::{Access, AuthError, Identity, Permissions, Verifier},
    broker::HistoryOptions,
};
use gotalk_peer::{
    Config, Handlers, Server, ServerHandle,
    ws::{WsConfig, WsListener},
};
use serde::{Deserialize, Serialize};

const PAGE: &str = include_str!("index.html");
/// Longest nickname, in characters.
const MAX_NAME: usize = 32;
/// Longest message, in characters.
const MAX_TEXT: usize = 1000;

/// Takes the token as the nickname: the page sends the name it was given.
/// Anyone can be anyone; a real application issues tokens to signed-in users
/// and checks them with `auth::JwtVerifier` instead.
struct Nicknames;

impl Verifier for Nicknames {
    fn verify<'a>(&'a self, token: &'a str) -> BoxFuture<'a, Result<Identity, AuthError>> {
        let name = token.trim();
        let identity = if name.is_empty() || name.chars().count() > MAX_NAME {
            Err(AuthError::Invalid(format!(
                "a nickname has 1 to {MAX_NAME} characters"
            )))
        } else {
            Ok(Identity {
                scopes: Vec::new(),
                user: name.to_owned(),
                expires: None,
                // Rooms only: read, write and be seen there.
                permissions: Permissions::none().allow("room:*", Access::ALL),
            })
        };
        futures::future::ready(identity).boxed()
    }
}

/// What a page publishes.
#[derive(Deserialize)]
struct Said {
    text: String,
}

/// What the room gets: the text, trimmed, and when the server had it. Who
/// said it comes with every publication (`info.user`).
#[derive(Serialize)]
struct Message<'a> {
    text: &'a str,
    /// Unix time in milliseconds.
    time: u128,
}

/// The hooks: a message is `{"text": "..."}` with 1 to 1000 characters
/// once trimmed; what is published is the trimmed text, timestamped.
struct Messages;

impl Hooks for Messages {
    fn on_publish<'a>(
        &'a self,
        _client: &'a ClientContext,
        _channel: &'a str,
        data: Bytes,
    ) -> BoxFuture<'a, Result<Bytes, Denied>> {
        futures::future::ready(stamp(&data)).boxed()
    }
}

fn stamp(data: &[u8]) -> Result<Bytes, Denied> {
    let said: Said =
        serde_json::from_slice(data).map_err(|_| Denied::new(r#"say {"text": "..."}"#))?;
    let text = said.text.trim();
    if text.is_empty() {
        return Err(Denied::new("empty message"));
    }
    if text.chars().count() > MAX_TEXT {
        return Err(Denied::new(format!(
            "a message has at most {MAX_TEXT} characters"
        )));
    }
    let time = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis());
    let message =
        serde_json::to_vec(&Message { text, time }).map_err(|e| Denied::new(e.to_string()))?;
    Ok(message.into())
}

/// The chat server on `addr`: the hub's operations over WebSocket at
/// `/gotalk/`, the page at `/`.
async fn serve(addr: SocketAddr) -> Result<ServerHandle, Box<dyn Error>> {
    let hub = Hub::builder()
        .verifier(Nicknames)
        .history(
            "room:*",
            HistoryOptions {
                size: 100,
                ttl: Duration::from_secs(24 * 3600),
            },
        )
        .hooks(Messages)
        .build()
        .await?;
    let page = Router::new().route("/", get(|| async { Html(PAGE) }));
    let listener = WsListener::bind(addr, WsConfig::default().fallback(page)).await?;
    let server = Server::new(listener, hub.handlers(Handlers::new()), Config::default());
    Ok(hub.attach(server).spawn())
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn Error>> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    let addr: SocketAddr = std::env::args()
        .nth(1)
        .as_deref()
        .unwrap_or("127.0.0.1:8080")
        .parse()?;
    let server = serve(addr).await?;
    let url = server.local_addr().to_string();
    let page = url.replace("ws://", "http://").replace("/gotalk/", "/");
    println!("chat: open {page} (add #ROOM for another room than the lobby)");
    tokio::signal::ctrl_c().await?;
    server.shutdown().await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    use gotalk_peer::{Peer, ws};
    use serde_json::{Value, json};
    use tokio::{
        io::{AsyncReadExt, AsyncWriteExt},
        sync::mpsc,
        time::timeout,
    };

    const ROOM: &str = "room:lobby";

    /// A plain gotalk client signed in as `name`, with the deliveries on `ROOM`.
    async fn client(url: &str, name: &str) -> (Peer, mpsc::UnboundedReceiver<Value>) {
        let (tx, rx) = mpsc::unbounded_channel();
        let on_room = Handlers::new().notification(ROOM, move |_ctx, payload| {
            let _ = tx.send(serde_json::from_slice(&payload).expect("a JSON delivery"));
            async {}
        });
        let peer = ws::connect(url, on_room, Config::default()).await.unwrap();
        let me: Value = peer
            .request_json("auth", &json!({ "token": name }))
            .await
            .unwrap();
        assert_eq!(me["user"], name.trim());
        (peer, rx)
    }

    async fn next(rx: &mut mpsc::UnboundedReceiver<Value>) -> Value {
        timeout(Duration::from_secs(5), rx.recv())
            .await
            .expect("a delivery in time")
            .expect("the connection is open")
    }

    /// A hub request; `Err` holds the hub's refusal.
    async fn request(peer: &Peer, op: &str, input: Value) -> Result<Value, String> {
        match peer.request_json(op, &input).await {
            Ok(output) => Ok(output),
            Err(gotalk_peer::Error::Remote(refusal)) => Err(refusal.to_string()),
            Err(e) => panic!("{op}: {e}"),
        }
    }

    async fn publish(peer: &Peer, data: Value) -> Result<Value, String> {
        request(peer, "publish", json!({ "channel": ROOM, "data": data })).await
    }

    #[tokio::test]
    async fn two_clients_talk_in_a_room() {
        let server = serve("127.0.0.1:0".parse().unwrap()).await.unwrap();
        let url = server.local_addr().to_string();
        let subscribe = json!({ "channel": ROOM, "presence": true, "events": true });

        let (ann, mut ann_rx) = client(&url, "  Ann ").await;
        let _: Value = ann.request_json("subscribe", &subscribe).await.unwrap();
        let (bob, mut bob_rx) = client(&url, "Bob").await;
        let _: Value = bob.request_json("subscribe", &subscribe).await.unwrap();
        // With events, each sees who joins after it, itself included.
        assert_eq!(next(&mut ann_rx).await["join"]["user"], "Ann");
        assert_eq!(next(&mut ann_rx).await["join"]["user"], "Bob");
        assert_eq!(next(&mut bob_rx).await["join"]["user"], "Bob");

        let presence: Value = bob
            .request_json("presence", &json!({ "channel": ROOM }))
            .await
            .unwrap();
        let mut here: Vec<_> = presence["clients"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["user"].as_str().unwrap())
            .collect();
        here.sort_unstable();
        assert_eq!(here, ["Ann", "Bob"]);

        // Everyone in the room gets each message, the one who said it too,
        // as the hooks made it: trimmed and timestamped.
        publish(&ann, json!({ "text": "  hi Bob\n" }))
            .await
            .unwrap();
        for rx in [&mut bob_rx, &mut ann_rx] {
            let p = next(rx).await;
            assert_eq!(p["data"]["text"], "hi Bob");
            assert!(p["data"]["time"].as_u64().unwrap() > 1_700_000_000_000);
            assert_eq!(p["info"]["user"], "Ann");
        }
        publish(&bob, json!({ "text": "hello Ann", "color": "red" }))
            .await
            .unwrap();
        for rx in [&mut ann_rx, &mut bob_rx] {
            let p = next(rx).await;
            assert_eq!(p["data"]["text"], "hello Ann");
            assert_eq!(p["data"].get("color"), None, "only the text is kept");
            assert_eq!(p["info"]["user"], "Bob");
        }

        // What they refuse; nothing of it reaches the room.
        let long = "x".repeat(MAX_TEXT + 1);
        for (data, why) in [
            (json!({ "text": " \n " }), "denied: empty message"),
            (
                json!({ "text": long }),
                "denied: a message has at most 1000 characters",
            ),
            (json!("hi"), r#"denied: say {"text": "..."}"#),
        ] {
            assert_eq!(publish(&bob, data).await.unwrap_err(), why);
        }
        let elsewhere = json!({ "channel": "news", "data": { "text": "hi" } });
        let err = request(&bob, "publish", elsewhere).await.unwrap_err();
        assert_eq!(err, r#"forbidden: write access to "news""#);
        let err = request(&bob, "auth", json!({ "token": " " }))
            .await
            .unwrap_err();
        assert_eq!(err, "invalid token: a nickname has 1 to 32 characters");

        // A newcomer reads what was said.
        let (cat, _) = client(&url, "Cat").await;
        let history: Value = cat
            .request_json("history", &json!({ "channel": ROOM, "limit": 50 }))
            .await
            .unwrap();
        let said: Vec<_> = history["publications"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| {
                (
                    p["info"]["user"].as_str().unwrap(),
                    p["data"]["text"].as_str().unwrap(),
                )
            })
            .collect();
        assert_eq!(said, [("Ann", "hi Bob"), ("Bob", "hello Ann")]);

        // Leaving is seen by who stays.
        bob.close().await;
        let left = next(&mut ann_rx).await;
        assert_eq!(left["leave"]["user"], "Bob");
        assert!(ann_rx.try_recv().is_err(), "nothing else was delivered");
        server.shutdown().await;
    }

    /// The page in headless Chromium, driven by `browser_test.cjs`: two
    /// people talk, the server restarts, they talk on. Needs `/usr/bin/chromium`,
    /// `node` and what `crates/peer/tests/browser/setup.sh` installs; without
    /// them it is skipped with a message, or fails when `CI=true`.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_page_chats_in_chromium() {
        use std::{path::Path, process::Stdio};
        use tokio::io::{AsyncBufReadExt, BufReader};

        let here = Path::new(env!("CARGO_MANIFEST_DIR"));
        let modules = here.join("../peer/tests/browser/node_modules");
        let node = std::process::Command::new("node")
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success());
        if !(node
            && Path::new("/usr/bin/chromium").exists()
            && modules.join("playwright-core").exists())
        {
            let why = "needs /usr/bin/chromium, node and crates/peer/tests/browser/node_modules: \
                       run `bash crates/peer/tests/browser/setup.sh`";
            assert_ne!(std::env::var("CI").as_deref(), Ok("true"), "{why}");
            eprintln!("skipped: {why}");
            return;
        }
        let server = serve("127.0.0.1:0".parse().unwrap()).await.unwrap();
        let url = server.local_addr().to_string();
        let host = url.trim_start_matches("ws://").trim_end_matches("/gotalk/");
        let mut driver = tokio::process::Command::new("node")
            .arg(here.join("examples/chat/browser_test.cjs"))
            .arg(format!("http://{host}/"))
            .env("NODE_PATH", &modules)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("run node");
        let mut stdin = driver.stdin.take().unwrap();
        let mut lines = BufReader::new(driver.stdout.take().unwrap()).lines();
        let mut next_line = async || {
            timeout(Duration::from_secs(90), lines.next_line())
                .await
                .expect("the driver answers in time")
                .unwrap()
                .expect("the driver printed a line (its errors are above)")
        };

        assert_eq!(next_line().await, "restart");
        server.shutdown().await;
        let server = serve(host.parse().unwrap()).await.unwrap();
        stdin.write_all(b"restarted\n").await.unwrap();
        let report: Value = serde_json::from_str(&next_line().await).unwrap();
        drop(stdin);
        let exit = timeout(Duration::from_secs(30), driver.wait()).await;
        assert!(exit.expect("the driver exits").unwrap().success());

        let ann = &report["ann"];
        let log: Vec<&str> = ann["log"]
            .as_array()
            .unwrap()
            .iter()
            .map(|l| l.as_str().unwrap())
            .collect();
        let said: Vec<&str> = log
            .iter()
            .copied()
            .filter(|l| !l.contains(" joined") && !l.contains(" left") && !l.contains("missed"))
            .collect();
        assert_eq!(
            said,
            ["Ann hello, anyone?", "Bob hi Ann", "Ann still there?"],
            "{log:?}"
        );
        let missed = log
            .iter()
            .position(|l| l.contains("some messages were missed"));
        let hi = log.iter().position(|&l| l == "Bob hi Ann");
        assert!(
            missed > hi,
            "the restart is noted after what came before it: {log:?}"
        );
        assert_eq!(
            log[..4],
            [
                "Ann joined",
                "Ann hello, anyone?",
                "Bob joined",
                "Bob hi Ann"
            ]
        );
        assert_eq!(log.last(), Some(&"Bob left"));
        assert_eq!(ann["members"], json!(["Ann"]));
        server.shutdown().await;
    }

    #[tokio::test]
    async fn the_page_and_the_client_are_served() {
        let server = serve("127.0.0.1:0".parse().unwrap()).await.unwrap();
        let url = server.local_addr().to_string();
        let host = url.trim_start_matches("ws://").trim_end_matches("/gotalk/");
        for (path, expect) in [
            ("/", "gotalk.js"),
            ("/gotalk/gotalk.js", "export function connect"),
        ] {
            let mut tcp = tokio::net::TcpStream::connect(host).await.unwrap();
            let get = format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
            tcp.write_all(get.as_bytes()).await.unwrap();
            let mut response = String::new();
            tcp.read_to_string(&mut response).await.unwrap();
            assert!(
                response.starts_with("HTTP/1.1 200"),
                "{path}: {response:.100}"
            );
            assert!(response.contains(expect), "{path} has no {expect:?}");
        }
        server.shutdown().await;
    }
}
