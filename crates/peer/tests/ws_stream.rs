//! `ws::WsStream`, the frames our WebSocket client and server read and
//! write themselves: against tungstenite and hand-made frames.
#![cfg(feature = "websocket")]

use std::time::Duration;

use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use gotalk_peer::{
    Config, HandlerError, Handlers, Server, ServerHandle,
    ws::{self, WsConfig, WsListener},
};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
    time::timeout,
};
use tokio_tungstenite::{
    WebSocketStream, client_async,
    tungstenite::{
        Message as M,
        handshake::derive_accept_key,
        protocol::{
            Role,
            frame::{
                Frame,
                coding::{Data, OpCode},
            },
        },
    },
};

const T: Duration = Duration::from_secs(10);

fn echo() -> Handlers {
    Handlers::new().buffer(
        "echo",
        |_ctx, p: Bytes| async move { Ok::<_, HandlerError>(p) },
    )
}

/// Our WebSocket server with [`echo`], on an ephemeral loopback port.
async fn echo_server() -> ServerHandle {
    let listener = WsListener::bind("127.0.0.1:0", WsConfig::default())
        .await
        .unwrap();
    Server::new(listener, echo(), Config::default()).spawn()
}

fn bin(s: &str) -> M {
    M::Binary(Bytes::copy_from_slice(s.as_bytes()))
}

/// The next data or close message, pongs and heartbeats skipped; pings too
/// unless `pings` is set.
async fn next<S>(ws: &mut WebSocketStream<S>, pings: bool) -> M
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    loop {
        let m = timeout(T, ws.next())
            .await
            .expect("in time")
            .unwrap()
            .unwrap();
        match &m {
            M::Pong(_) => {}
            M::Ping(_) if !pings => {}
            M::Binary(b) if b.len() == 13 && b[0] == b'h' => {}
            _ => return m,
        }
    }
}

/// A server that sends its version and a request in the same write as its
/// upgrade response: the client must take them from what its handshake
/// read, not wait for more.
#[tokio::test]
async fn client_reads_frames_sent_with_the_upgrade_response() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(async move {
        let (mut tcp, _) = listener.accept().await.unwrap();
        let mut request = Vec::new();
        while !request.ends_with(b"\r\n\r\n") {
            let mut byte = [0u8; 1];
            tcp.read_exact(&mut byte).await.unwrap();
            request.push(byte[0]);
        }
        let request = String::from_utf8(request).unwrap();
        let key = request
            .lines()
            .find_map(|l| {
                l.strip_prefix("Sec-WebSocket-Key: ")
                    .or(l.strip_prefix("sec-websocket-key: "))
            })
            .expect("key")
            .trim();
        let mut out = format!(
            "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
             Sec-WebSocket-Accept: {}\r\n\r\n",
            derive_accept_key(key.as_bytes())
        )
        .into_bytes();
        // Unmasked binary frames: "01", a request header, its payload.
        for msg in [&b"01"[..], b"r0001004echo00000002", b"hi"] {
            out.extend_from_slice(&[0x82, msg.len() as u8]);
            out.extend_from_slice(msg);
        }
        tcp.write_all(&out).await.unwrap();
        let mut ws = WebSocketStream::from_raw_socket(tcp, Role::Server, None).await;
        assert_eq!(next(&mut ws, false).await, bin("01"));
        assert_eq!(next(&mut ws, false).await, bin("R000100000002"));
        assert_eq!(next(&mut ws, false).await, bin("hi"));
    });
    let url = format!("ws://{addr}/gotalk/");
    let _peer = timeout(T, ws::connect(&url, echo(), Config::default()))
        .await
        .expect("in time")
        .unwrap();
    timeout(T, server).await.expect("in time").unwrap();
}

/// Fragmented messages are put together, and a ping between the fragments
/// is answered; the answer comes as whole messages.
#[tokio::test]
async fn fragments_and_pings_between_them() {
    let server = echo_server().await;
    let addr = server.local_addr().socket_addr().unwrap();
    let tcp = TcpStream::connect(addr).await.unwrap();
    let (mut ws, _) = client_async(format!("ws://{addr}/gotalk/"), tcp)
        .await
        .unwrap();
    ws.send(bin("01")).await.unwrap();
    assert_eq!(next(&mut ws, false).await, bin("01"));
    let part = |data: &str, op: OpCode, fin: bool| {
        M::Frame(Frame::message(
            Bytes::copy_from_slice(data.as_bytes()),
            op,
            fin,
        ))
    };
    ws.send(part("r0001004e", OpCode::Data(Data::Binary), false))
        .await
        .unwrap();
    ws.send(M::Ping(Bytes::from_static(b"p1"))).await.unwrap();
    ws.send(part("cho0000", OpCode::Data(Data::Continue), false))
        .await
        .unwrap();
    ws.send(part("0003", OpCode::Data(Data::Continue), true))
        .await
        .unwrap();
    // The header was alone in its message: the payload is the next one.
    ws.send(part("a", OpCode::Data(Data::Text), false))
        .await
        .unwrap();
    ws.send(part("bc", OpCode::Data(Data::Continue), true))
        .await
        .unwrap();
    let mut got = Vec::new();
    while got.len() < 2 {
        match next(&mut ws, false).await {
            M::Binary(b) => got.push(String::from_utf8(b.to_vec()).unwrap()),
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(got, ["R000100000003", "abc"]);
    server.shutdown().await;
}

/// Large payloads cross intact both ways (16- and 64-bit frame lengths,
/// reads and writes of many chunks), over our client and server.
#[tokio::test]
async fn large_payloads_round_trip() {
    let server = echo_server().await;
    let url = server.local_addr().to_string();
    let peer = ws::connect(&url, Handlers::new(), Config::default())
        .await
        .unwrap();
    for size in [125, 126, 65_535, 65_536, 3 << 20] {
        let payload: Vec<u8> = (0..size).map(|i| (i * 7 + i / 251) as u8).collect();
        let got = timeout(T, peer.request("echo", payload.clone()))
            .await
            .expect("in time")
            .unwrap();
        assert_eq!(got.len(), size);
        assert!(got[..] == payload[..], "size {size}");
    }
    server.shutdown().await;
}

/// A client frame without a mask breaks RFC 6455: the server ends the
/// connection instead of reading it.
#[tokio::test]
async fn unmasked_client_frames_end_the_connection() {
    let server = echo_server().await;
    let addr = server.local_addr().socket_addr().unwrap();
    let tcp = TcpStream::connect(addr).await.unwrap();
    let (ws, _) = client_async(format!("ws://{addr}/gotalk/"), tcp)
        .await
        .unwrap();
    let mut tcp = ws.into_inner();
    // "01", unmasked.
    tcp.write_all(&[0x82, 0x02, b'0', b'1']).await.unwrap();
    // The connection ends (after our version, perhaps): no answer to it.
    let mut rest = Vec::new();
    let _ = timeout(T, tcp.read_to_end(&mut rest))
        .await
        .expect("closed in time");
    assert!(
        rest.len() < 64,
        "no more than the version and a close: {rest:?}"
    );
    server.shutdown().await;
}
