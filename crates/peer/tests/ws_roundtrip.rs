//! WebSocket client ↔ server through the public API: every operation kind,
//! calls in both directions, the served JS client, origin policy, mounting.
#![cfg(feature = "websocket")]

mod common;

use std::{
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::Duration,
};

use axum::{Router, routing::get};
use bytes::Bytes;
use common::tap::Taps;
use futures::{StreamExt, future::join_all};
use gotalk_peer::{
    Config, ConnectError, ConnectionInfo, Error, HandlerError, Handlers, Peer, Server,
    ServerHandle,
    ws::{self, OriginPolicy, WsClientConfig, WsConfig, WsListener},
};
use serde_json::{Value, json};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
    sync::mpsc,
    time::timeout,
};

const T: Duration = Duration::from_secs(10);

fn server_handlers() -> Handlers {
    Handlers::new()
        .buffer(
            "echo",
            |_ctx, p: Bytes| async move { Ok::<_, HandlerError>(p) },
        )
        .json("greet", |_ctx, v: Value| async move {
            Ok::<_, HandlerError>(
                json!({"greeting": format!("Hello {}", v["name"].as_str().unwrap_or("?"))}),
            )
        })
        .stream("upper", |_ctx, mut parts, mut out| async move {
            while let Some(p) = parts.next().await {
                let p = p.map_err(|e| HandlerError::new(e.to_string()))?;
                out.send(p.to_ascii_uppercase())
                    .await
                    .map_err(|e| HandlerError::new(e.to_string()))?;
            }
            Ok::<_, HandlerError>(())
        })
        .buffer("fail", |_ctx, _p: Bytes| async move {
            Err::<Bytes, _>(HandlerError::new("it failed"))
        })
        .buffer("busy", |_ctx, _p: Bytes| async move {
            Err::<Bytes, _>(HandlerError::retry(Duration::from_millis(1), "try later"))
        })
        .buffer("whoami", |ctx, _p: Bytes| async move {
            let info = ctx
                .user_data::<ConnectionInfo>()
                .ok_or_else(|| HandlerError::new("no connection info"))?;
            let info = info
                .websocket()
                .ok_or_else(|| HandlerError::new("no websocket info"))?;
            Ok::<_, HandlerError>(Bytes::from(format!(
                "{} retry={} stream={}",
                info.uri.path(),
                info.remote_retry_results,
                info.remote_stream_requests
            )))
        })
        .notification("ping", |ctx, p| async move {
            let _ = ctx.peer().notify("pong", p).await;
        })
}

async fn start(ws: WsConfig) -> (ServerHandle, mpsc::UnboundedReceiver<Peer>) {
    start_with(ws, |server| server).await
}

/// A server on a new WebSocket listener, set up further by `customize`;
/// its connections arrive on the receiver once open.
async fn start_with(
    ws: WsConfig,
    customize: impl FnOnce(Server) -> Server,
) -> (ServerHandle, mpsc::UnboundedReceiver<Peer>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let listener = WsListener::bind("127.0.0.1:0", ws).await.unwrap();
    let server =
        Server::new(listener, server_handlers(), Config::default()).on_open(move |peer, _info| {
            let _ = tx.send(peer.clone());
        });
    (customize(server).spawn(), rx)
}

/// The server's WebSocket URL, as its address displays.
fn url(server: &ServerHandle) -> String {
    server.local_addr().to_string()
}

fn addr_of(server: &ServerHandle) -> SocketAddr {
    server.local_addr().socket_addr().unwrap()
}

#[tokio::test]
async fn every_operation_kind_both_ways() {
    let (server, mut connected) = start(WsConfig::default()).await;
    let (pong_tx, mut pong_rx) = mpsc::unbounded_channel();
    let client_handlers = Handlers::new()
        .buffer("client.echo", |_ctx, p: Bytes| async move {
            Ok::<_, HandlerError>(p)
        })
        .stream("client.count", |_ctx, mut parts, mut out| async move {
            let mut n = 0usize;
            while let Some(p) = parts.next().await {
                n += p.map_err(|e| HandlerError::new(e.to_string()))?.len();
            }
            out.send(n.to_string())
                .await
                .map_err(|e| HandlerError::new(e.to_string()))?;
            Ok::<_, HandlerError>(())
        })
        .notification("pong", move |_ctx, p| {
            let tx = pong_tx.clone();
            async move {
                let _ = tx.send(p);
            }
        });
    let client = ws::connect(&url(&server), client_handlers, Config::default())
        .await
        .unwrap();
    assert!(client.remote_addr().unwrap().starts_with("ws://127.0.0.1:"));

    // Buffer, JSON, error results, unknown operations.
    assert_eq!(client.request("echo", "hello").await.unwrap(), "hello");
    let big = Bytes::from(vec![b'x'; 1 << 20]);
    assert_eq!(client.request("echo", big.clone()).await.unwrap(), big);
    assert_eq!(client.request("echo", "").await.unwrap(), "");
    let out: Value = client
        .request_json("greet", &json!({"name": "ws"}))
        .await
        .unwrap();
    assert_eq!(out, json!({"greeting": "Hello ws"}));
    let err = client.request("fail", "").await.unwrap_err();
    assert_eq!(err.remote().unwrap().message(), "it failed");
    let err = client.request("nope", "").await.unwrap_err();
    assert_eq!(
        err.remote().unwrap().message(),
        "unknown operation \"nope\""
    );

    // The Rust client announced retry and stream support.
    assert_eq!(
        client.request("whoami", "").await.unwrap(),
        "/gotalk/ retry=true stream=true"
    );
    assert!(matches!(
        client.request("busy", "").await,
        Err(Error::RetryExhausted { .. })
    ));

    // Stream request from the client.
    let (mut w, results) = client.stream_request("upper").await.unwrap();
    w.send("abc").await.unwrap();
    w.send("def").await.unwrap();
    w.end().await.unwrap();
    let parts: Vec<Bytes> = results.map(|r| r.unwrap()).collect().await;
    assert_eq!(parts, vec![Bytes::from("ABC"), Bytes::from("DEF")]);

    // Notifications both ways.
    client.notify("ping", "p1").await.unwrap();
    assert_eq!(timeout(T, pong_rx.recv()).await.unwrap().unwrap(), "p1");

    // The server calls the client: buffer and stream requests.
    let server_side = timeout(T, connected.recv()).await.unwrap().unwrap();
    assert_eq!(
        server_side.request("client.echo", "back").await.unwrap(),
        "back"
    );
    let (mut w, results) = server_side.stream_request("client.count").await.unwrap();
    w.send("12345").await.unwrap();
    w.send("678").await.unwrap();
    w.end().await.unwrap();
    assert_eq!(results.collect_bytes(64).await.unwrap(), "8");

    // Many requests at once over one WebSocket.
    let calls = (0..200).map(|i| {
        let client = client.clone();
        async move {
            let body = format!("message {i}");
            assert_eq!(client.request("echo", body.clone()).await.unwrap(), body);
        }
    });
    timeout(T, join_all(calls)).await.unwrap();

    assert_eq!(server.connection_count(), 1);
    client.close().await;
    timeout(T, server_side.closed()).await.unwrap();
    server.shutdown().await;
}

#[tokio::test]
async fn clients_that_say_nothing_are_treated_as_gotalk_js() {
    let (server, mut connected) = start(WsConfig::default()).await;
    let quiet = WsClientConfig {
        announce_capabilities: false,
        ..WsClientConfig::default()
    };
    let client = ws::connect_with(&url(&server), Handlers::new(), Config::default(), &quiet)
        .await
        .unwrap();
    assert_eq!(
        client.request("whoami", "").await.unwrap(),
        "/gotalk/ retry=false stream=false"
    );
    // A retry becomes an error result the original gotalk.js understands.
    let err = client.request("busy", "").await.unwrap_err();
    assert_eq!(err.remote().unwrap().message(), "try later");
    // And no stream request is sent to it.
    let server_side = timeout(T, connected.recv()).await.unwrap().unwrap();
    assert!(matches!(
        server_side.stream_request("x").await,
        Err(Error::Usage(gotalk_peer::UsageError::Unsupported(_)))
    ));
    server.shutdown().await;
}

#[tokio::test]
async fn capabilities_from_config_apply_to_everyone() {
    let ws = WsConfig {
        remote: ws::RemoteCapabilities::FromConfig,
        ..WsConfig::default()
    };
    let (server, _connected) = start(ws).await;
    let quiet = WsClientConfig {
        announce_capabilities: false,
        ..WsClientConfig::default()
    };
    let client = ws::connect_with(&url(&server), Handlers::new(), Config::default(), &quiet)
        .await
        .unwrap();
    assert_eq!(
        client.request("whoami", "").await.unwrap(),
        "/gotalk/ retry=true stream=true"
    );
    server.shutdown().await;
}

/// One HTTP/1.1 exchange: status line, headers (lower-cased names), body.
async fn http(addr: SocketAddr, request: &str) -> (u16, Vec<(String, String)>, Vec<u8>) {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(request.as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    timeout(T, s.read_to_end(&mut raw)).await.unwrap().unwrap();
    let end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("end of headers");
    let head = String::from_utf8(raw[..end].to_vec()).unwrap();
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .unwrap()
        .split(' ')
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let headers = lines
        .map(|l| {
            let (k, v) = l.split_once(':').unwrap();
            (k.trim().to_ascii_lowercase(), v.trim().to_owned())
        })
        .collect();
    (status, headers, raw[end + 4..].to_vec())
}

fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

fn get_req(path: &str, extra: &str) -> String {
    format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n{extra}\r\n")
}

#[tokio::test]
async fn serves_the_js_client_with_etag_and_gzip() {
    let (server, _) = start(WsConfig::default()).await;
    let addr = addr_of(&server);
    assert_eq!(url(&server), format!("ws://{addr}/gotalk/"));

    let (status, headers, body) = http(addr, &get_req("/gotalk/gotalk.js", "")).await;
    assert_eq!(status, 200);
    assert_eq!(
        header(&headers, "content-type"),
        Some("text/javascript; charset=utf-8")
    );
    assert_eq!(body, ws::GOTALK_JS.as_bytes());
    let etag = header(&headers, "etag").unwrap().to_owned();
    assert_eq!(etag, ws::gotalk_js_etag());
    assert_eq!(header(&headers, "content-encoding"), None);

    // Any path under the mount ending in /gotalk.js.
    let (status, _, body) = http(addr, &get_req("/gotalk/v1/x/gotalk.js", "")).await;
    assert_eq!((status, body.len()), (200, ws::GOTALK_JS.len()));

    // Revalidation.
    let (status, headers, body) = http(
        addr,
        &get_req("/gotalk/gotalk.js", &format!("If-None-Match: {etag}\r\n")),
    )
    .await;
    assert_eq!(status, 304);
    assert!(body.is_empty());
    assert_eq!(header(&headers, "etag"), Some(etag.as_str()));

    // gzip when accepted.
    let (status, headers, body) = http(
        addr,
        &get_req("/gotalk/gotalk.js", "Accept-Encoding: br, gzip\r\n"),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(header(&headers, "content-encoding"), Some("gzip"));
    assert!(
        header(&headers, "vary")
            .unwrap()
            .contains("Accept-Encoding")
    );
    let gz_etag = header(&headers, "etag").unwrap().to_owned();
    assert_ne!(gz_etag, etag);
    let mut plain = String::new();
    std::io::Read::read_to_string(&mut flate2::read::GzDecoder::new(&body[..]), &mut plain)
        .unwrap();
    assert_eq!(plain, ws::GOTALK_JS);
    assert!(
        body.len() * 2 < ws::GOTALK_JS.len(),
        "gzip shrinks the client"
    );
    let (status, _, _) = http(
        addr,
        &get_req(
            "/gotalk/gotalk.js",
            &format!("Accept-Encoding: gzip\r\nIf-None-Match: {gz_etag}\r\n"),
        ),
    )
    .await;
    assert_eq!(status, 304);

    // HEAD: headers only.
    let (status, headers, body) = http(
        addr,
        "HEAD /gotalk/gotalk.js HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(status, 200);
    assert!(body.is_empty());
    assert_eq!(
        header(&headers, "content-length"),
        Some(ws::GOTALK_JS.len().to_string().as_str())
    );

    // Plain HTTP at the mount is told to upgrade; outside the mount: 404.
    let (status, headers, _) = http(addr, &get_req("/gotalk/", "")).await;
    assert_eq!(status, 426);
    assert_eq!(header(&headers, "upgrade"), Some("websocket"));
    let (status, _, _) = http(addr, &get_req("/elsewhere/gotalk.js", "")).await;
    assert_eq!(status, 404);
    server.shutdown().await;
}

#[tokio::test]
async fn origin_policy_refuses_other_sites() {
    let (server, _) = start(WsConfig::default()).await;
    let u = url(&server);
    let evil = WsClientConfig {
        origin: Some("http://evil.example".into()),
        ..WsClientConfig::default()
    };
    let err = ws::connect_with(&u, Handlers::new(), Config::default(), &evil)
        .await
        .unwrap_err();
    assert!(
        matches!(err, ConnectError::Http { status: 403, .. }),
        "{err}"
    );
    // Same origin (the default the client sends) is fine.
    let peer = ws::connect(&u, Handlers::new(), Config::default())
        .await
        .unwrap();
    peer.close().await;
    server.shutdown().await;

    // An allow-list admits the listed origin only.
    let ws = WsConfig {
        origin: OriginPolicy::allow_list().allow("https://app.example"),
        ..WsConfig::default()
    };
    let (server, _) = start(ws).await;
    let u = url(&server);
    let app = WsClientConfig {
        origin: Some("https://app.example".into()),
        ..WsClientConfig::default()
    };
    let peer = ws::connect_with(&u, Handlers::new(), Config::default(), &app)
        .await
        .unwrap();
    assert_eq!(peer.request("echo", "ok").await.unwrap(), "ok");
    let err = ws::connect(&u, Handlers::new(), Config::default())
        .await
        .unwrap_err();
    assert!(
        matches!(err, ConnectError::Http { status: 403, .. }),
        "{err}"
    );
    server.shutdown().await;
}

#[tokio::test]
async fn mounts_inside_an_axum_app() {
    let (listener, routes) = ws::router(WsConfig {
        mount: "/api/rpc/".into(),
        ..WsConfig::default()
    });
    let server = Server::new(listener, server_handlers(), Config::default()).spawn();
    assert_eq!(server.local_addr().to_string(), "/api/rpc/");
    let app: Router = Router::new()
        .route("/", get(|| async { "home page" }))
        .route("/api/other", get(|| async { "other" }))
        .merge(routes);
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });

    let (status, _, body) = http(addr, &get_req("/", "")).await;
    assert_eq!((status, body.as_slice()), (200, &b"home page"[..]));
    let (status, _, body) = http(addr, &get_req("/api/other", "")).await;
    assert_eq!((status, body.as_slice()), (200, &b"other"[..]));
    let (status, _, _) = http(addr, &get_req("/api/rpc/gotalk.js", "")).await;
    assert_eq!(status, 200);

    for path in ["/api/rpc/", "/api/rpc", "/api/rpc/sub"] {
        let peer = ws::connect(
            &format!("ws://{addr}{path}"),
            Handlers::new(),
            Config::default(),
        )
        .await
        .unwrap();
        assert_eq!(peer.request("echo", path).await.unwrap(), path);
        peer.close().await;
    }
    // The server forgets connections as they close.
    for _ in 0..200 {
        if server.connection_count() == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(server.connection_count(), 0);
    server.shutdown().await;
    // Once the server is gone, the mounted endpoint says so.
    let err = ws::connect(
        &format!("ws://{addr}/api/rpc/"),
        Handlers::new(),
        Config::default(),
    )
    .await
    .unwrap_err();
    assert!(
        matches!(err, ConnectError::Http { status: 503, .. }),
        "{err}"
    );
    task.abort();
}

#[tokio::test]
async fn shutdown_closes_connections_and_frees_the_port() {
    let (server, _) = start(WsConfig::default()).await;
    let addr = addr_of(&server);
    let peer = ws::connect(&url(&server), Handlers::new(), Config::default())
        .await
        .unwrap();
    assert_eq!(peer.request("echo", "x").await.unwrap(), "x");
    timeout(T, server.shutdown()).await.unwrap();
    timeout(T, peer.closed()).await.unwrap();
    assert!(peer.request("echo", "x").await.is_err());
    // The port can be bound again at once.
    let again = TcpListener::bind(addr).await.unwrap();
    drop(again);
}

#[tokio::test]
async fn connect_errors_are_typed() {
    assert!(matches!(
        ws::connect("http://127.0.0.1:1/", Handlers::new(), Config::default()).await,
        Err(ConnectError::InvalidAddress(_))
    ));
    // Nothing listens on a port we just released.
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    drop(l);
    assert!(matches!(
        ws::connect(
            &format!("ws://{addr}/gotalk/"),
            Handlers::new(),
            Config::default()
        )
        .await,
        Err(ConnectError::Io(_))
    ));
    // A server that is not at that path.
    let (server, _) = start(WsConfig::default()).await;
    let err = ws::connect(
        &format!("ws://{}/other/", addr_of(&server)),
        Handlers::new(),
        Config::default(),
    )
    .await
    .unwrap_err();
    assert!(
        matches!(err, ConnectError::Http { status: 404, .. }),
        "{err}"
    );
    let as_gotalk: Error = err.into();
    assert!(matches!(as_gotalk, Error::Connect(_)));
    server.shutdown().await;
}

#[tokio::test]
async fn wrap_io_sees_the_gotalk_bytes_on_both_sides() {
    let server_taps = Taps::default();
    let wrapped = Arc::new(Mutex::new(Vec::new()));
    let (taps, seen) = (server_taps.clone(), wrapped.clone());
    let (server, mut connected) = start_with(WsConfig::default(), move |server| {
        server.wrap_io(move |io, info| {
            let path = info.websocket().unwrap().uri.path().to_owned();
            seen.lock().unwrap().push(path);
            taps.wrap(io)
        })
    })
    .await;
    let client_taps = Taps::default();
    let client_ws = {
        let taps = client_taps.clone();
        WsClientConfig::default().wrap_io(move |io| taps.wrap(io))
    };
    let peer = ws::connect_with(
        &url(&server),
        Handlers::new(),
        Config::default(),
        &client_ws,
    )
    .await
    .unwrap();
    timeout(T, connected.recv()).await.unwrap().unwrap();
    assert_eq!(*wrapped.lock().unwrap(), ["/gotalk/"]);

    let reply = timeout(T, peer.request("echo", "hi"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(reply, "hi");
    // The version, then one request and its result: exactly these bytes,
    // seen the same on both ends.
    let request = b"01r\x00\x00\x00\x00004echo00000002hi";
    let result = b"01R\x00\x00\x00\x0000000002hi";
    assert_eq!(client_taps.written(), request);
    assert_eq!(server_taps.read(), request);
    assert_eq!(server_taps.written(), result);
    assert_eq!(client_taps.read(), result);

    // A client without a wrapper: the server's wrapper still sees it, the
    // first client's taps do not.
    let plain = ws::connect(&url(&server), Handlers::new(), Config::default())
        .await
        .unwrap();
    timeout(T, connected.recv()).await.unwrap().unwrap();
    assert_eq!(wrapped.lock().unwrap().len(), 2);
    assert_eq!(
        timeout(T, plain.request("echo", "x"))
            .await
            .unwrap()
            .unwrap(),
        "x"
    );
    assert_eq!(client_taps.written(), request);
    server.shutdown().await;
}

#[tokio::test]
async fn fallback_routes_and_cors_for_the_js_client() {
    let ws = WsConfig::default()
        .origin(OriginPolicy::same_origin().allow("http://localhost:5173"))
        .fallback(Router::new().route("/", get(|| async { "the page" })));
    let (server, _) = start(ws).await;
    let addr = addr_of(&server);

    // The fallback serves what is outside the mount; the mount is unchanged.
    let (status, _, body) = http(addr, &get_req("/", "")).await;
    assert_eq!((status, body.as_slice()), (200, &b"the page"[..]));
    assert_eq!(http(addr, &get_req("/elsewhere", "")).await.0, 404);
    let peer = ws::connect(&url(&server), Handlers::new(), Config::default())
        .await
        .unwrap();
    assert_eq!(peer.request("echo", "hi").await.unwrap(), "hi");
    peer.close().await;

    // CORS on the client module for admitted origins only.
    let js = "/gotalk/gotalk.js";
    let (status, headers, _) = http(addr, &get_req(js, "Origin: http://localhost:5173\r\n")).await;
    assert_eq!(status, 200);
    assert_eq!(
        header(&headers, "access-control-allow-origin"),
        Some("http://localhost:5173")
    );
    let vary: Vec<&str> = headers
        .iter()
        .filter(|(k, _)| k == "vary")
        .map(|(_, v)| v.as_str())
        .collect();
    assert!(vary.iter().any(|v| v.contains("Origin")), "{vary:?}");
    let (_, headers, _) = http(addr, &get_req(js, "Origin: https://evil.example\r\n")).await;
    assert_eq!(header(&headers, "access-control-allow-origin"), None);
    let (_, headers, _) = http(addr, &get_req(js, "")).await;
    assert_eq!(header(&headers, "access-control-allow-origin"), None);
    server.shutdown().await;

    // Without a fallback, nothing outside the mount.
    let (server, _) = start(WsConfig::default()).await;
    assert_eq!(http(addr_of(&server), &get_req("/", "")).await.0, 404);
    server.shutdown().await;
}
