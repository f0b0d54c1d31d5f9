//! What our WebSocket server puts on the wire, seen by a raw WebSocket
//! client that behaves like the original gotalk.js (one header per message,
//! the payload in the next), and how it answers broken input.
#![cfg(feature = "websocket")]

use std::time::Duration;

use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use gotalk_peer::{
    Config, HandlerError, Handlers, Server, ServerHandle,
    ws::{WsConfig, WsListener},
};
use tokio::{net::TcpStream, time::timeout};
use tokio_tungstenite::{
    WebSocketStream, client_async,
    tungstenite::{Message as M, protocol::frame::coding::CloseCode},
};

const T: Duration = Duration::from_secs(10);

type Raw = WebSocketStream<TcpStream>;

async fn start(ws: WsConfig) -> ServerHandle {
    let handlers = Handlers::new()
        .buffer(
            "echo",
            |_ctx, p: Bytes| async move { Ok::<_, HandlerError>(p) },
        )
        .buffer("busy", |_ctx, _p: Bytes| async move {
            Err::<Bytes, _>(HandlerError::retry(Duration::from_millis(5), "later"))
        });
    let listener = WsListener::bind("127.0.0.1:0", ws).await.unwrap();
    Server::new(listener, handlers, Config::default()).spawn()
}

/// A raw WebSocket to the server at `path`, version already exchanged.
async fn raw(server: &ServerHandle, path: &str) -> Raw {
    let addr = server.local_addr().socket_addr().unwrap();
    let tcp = TcpStream::connect(addr).await.unwrap();
    let (mut ws, _) = client_async(format!("ws://{addr}{path}"), tcp)
        .await
        .unwrap();
    ws.send(bin("01")).await.unwrap();
    assert_eq!(next(&mut ws).await, bin("01"));
    ws
}

fn bin(s: &str) -> M {
    M::Binary(Bytes::copy_from_slice(s.as_bytes()))
}

fn is_heartbeat(b: &[u8]) -> bool {
    b.len() == 13 && b[0] == b'h' && b[1..].iter().all(u8::is_ascii_hexdigit)
}

/// The next message that is not a heartbeat, ping or pong.
async fn next(ws: &mut Raw) -> M {
    loop {
        let m = timeout(T, ws.next())
            .await
            .expect("message in time")
            .expect("stream open")
            .expect("no error");
        match &m {
            M::Ping(_) | M::Pong(_) => continue,
            M::Binary(b) if is_heartbeat(b) => continue,
            _ => return m,
        }
    }
}

/// Expects ProtocolError `code` as a message, then a Close with 4000 + code.
async fn expect_protocol_error(ws: &mut Raw, code: u16) {
    assert_eq!(next(ws).await, bin(&format!("f{code:08x}")));
    match next(ws).await {
        M::Close(Some(frame)) => assert_eq!(frame.code, CloseCode::from(4000 + code)),
        other => panic!("expected close {}, got {other:?}", 4000 + code),
    }
}

#[tokio::test]
async fn headers_and_payloads_are_separate_messages() {
    let server = start(WsConfig::default()).await;
    let mut ws = raw(&server, "/gotalk/").await;
    ws.send(bin("r0001004echo00000005")).await.unwrap();
    ws.send(bin("hello")).await.unwrap();
    assert_eq!(next(&mut ws).await, bin("R000100000005"));
    assert_eq!(next(&mut ws).await, bin("hello"));
    // Empty payload: the header alone.
    ws.send(bin("r0002004echo00000000")).await.unwrap();
    assert_eq!(next(&mut ws).await, bin("R000200000000"));
    // Text frames (what gotalk.js sends for string payloads), any split.
    ws.send(M::text("r0003004echo0000")).await.unwrap();
    ws.send(M::text("0003abc")).await.unwrap();
    assert_eq!(next(&mut ws).await, bin("R000300000003"));
    assert_eq!(next(&mut ws).await, bin("abc"));
    // Several frames in one message.
    ws.send(bin("r0004004echo00000001xr0005004echo00000001y"))
        .await
        .unwrap();
    let mut got = Vec::new();
    for _ in 0..4 {
        got.push(next(&mut ws).await);
    }
    got.sort_by_key(|m| format!("{m:?}"));
    let mut want = vec![
        bin("R000400000001"),
        bin("x"),
        bin("R000500000001"),
        bin("y"),
    ];
    want.sort_by_key(|m| format!("{m:?}"));
    assert_eq!(got, want);
    server.shutdown().await;
}

#[tokio::test]
async fn gotalk_js_gets_error_results_instead_of_retry_results() {
    let server = start(WsConfig::default()).await;
    let mut ws = raw(&server, "/gotalk/").await;
    ws.send(bin("r0001004busy00000000")).await.unwrap();
    assert_eq!(next(&mut ws).await, bin("E000100000005"));
    assert_eq!(next(&mut ws).await, bin("later"));
    // A client that announced support gets the retry result.
    let mut ws = raw(&server, "/gotalk/?caps=retry").await;
    ws.send(bin("r0001004busy00000000")).await.unwrap();
    assert_eq!(next(&mut ws).await, bin("e00010000000500000005"));
    assert_eq!(next(&mut ws).await, bin("later"));
    server.shutdown().await;
}

#[tokio::test]
async fn payload_of_the_wrong_size_is_an_invalid_message() {
    let server = start(WsConfig::default()).await;
    // Shorter than declared.
    let mut ws = raw(&server, "/gotalk/").await;
    ws.send(bin("r0001004echo00000005")).await.unwrap();
    ws.send(bin("hell")).await.unwrap();
    expect_protocol_error(&mut ws, 2).await;
    // Longer: the extra bytes would be the next frame; never read them so.
    let mut ws = raw(&server, "/gotalk/").await;
    ws.send(bin("r0001004echo00000002")).await.unwrap();
    ws.send(bin("hir0002004echo00000000")).await.unwrap();
    expect_protocol_error(&mut ws, 2).await;
    server.shutdown().await;
}

#[tokio::test]
async fn garbage_is_an_invalid_message() {
    let server = start(WsConfig::default()).await;
    let mut ws = raw(&server, "/gotalk/").await;
    ws.send(bin("zzzzzzzzzzzzz")).await.unwrap();
    expect_protocol_error(&mut ws, 2).await;
    let mut ws = raw(&server, "/gotalk/").await;
    ws.send(M::text("r00010g4echo00000000")).await.unwrap();
    expect_protocol_error(&mut ws, 2).await;
    server.shutdown().await;
}

#[tokio::test]
async fn oversize_messages_are_refused() {
    let server = start(WsConfig {
        max_message_size: Some(1024),
        ..WsConfig::default()
    })
    .await;
    let mut ws = raw(&server, "/gotalk/").await;
    // Within the limit is fine.
    ws.send(bin("r0001004echo00000400")).await.unwrap();
    ws.send(M::Binary(Bytes::from(vec![b'a'; 1024])))
        .await
        .unwrap();
    assert_eq!(next(&mut ws).await, bin("R000100000400"));
    assert_eq!(
        next(&mut ws).await,
        M::Binary(Bytes::from(vec![b'a'; 1024]))
    );
    // One byte more is not.
    ws.send(bin("r0002004echo00000401")).await.unwrap();
    ws.send(M::Binary(Bytes::from(vec![b'a'; 1025])))
        .await
        .unwrap();
    expect_protocol_error(&mut ws, 2).await;
    server.shutdown().await;
}

#[tokio::test]
async fn wrong_version_is_refused_with_code_1() {
    let server = start(WsConfig::default()).await;
    let addr = server.local_addr().socket_addr().unwrap();
    let tcp = TcpStream::connect(addr).await.unwrap();
    let (mut ws, _) = client_async(format!("ws://{addr}/gotalk/"), tcp)
        .await
        .unwrap();
    ws.send(bin("02")).await.unwrap();
    assert_eq!(next(&mut ws).await, bin("01"));
    expect_protocol_error(&mut ws, 1).await;
    server.shutdown().await;
}

#[tokio::test]
async fn pings_are_answered() {
    let server = start(WsConfig::default()).await;
    let mut ws = raw(&server, "/gotalk/").await;
    ws.send(M::Ping(Bytes::from_static(b"are you there")))
        .await
        .unwrap();
    let pong = timeout(T, async {
        loop {
            match ws.next().await.unwrap().unwrap() {
                M::Pong(p) => return p,
                _ => continue,
            }
        }
    })
    .await
    .unwrap();
    assert_eq!(&pong[..], b"are you there");
    server.shutdown().await;
}

#[tokio::test]
async fn a_clean_close_from_the_client_closes_the_connection() {
    let server = start(WsConfig::default()).await;
    let mut ws = raw(&server, "/gotalk/").await;
    ws.close(None).await.unwrap();
    // The server answers the close and forgets the connection.
    let end = timeout(T, async {
        loop {
            match ws.next().await {
                None | Some(Err(_)) => break,
                Some(Ok(_)) => continue,
            }
        }
    })
    .await;
    assert!(end.is_ok());
    for _ in 0..200 {
        if server.connection_count() == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(server.connection_count(), 0);
    server.shutdown().await;
}
