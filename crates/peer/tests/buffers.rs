//! Memory held by a connection's buffers, by the connection's own
//! accounting: a declared size costs nothing until its bytes arrive, and an
//! idle connection holds no read or write buffer.

use std::time::Duration;

use bytes::Bytes;
use gotalk_peer::{Config, HandlerError, Handlers, Peer};
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream, duplex};

fn echo() -> Handlers {
    Handlers::new().buffer("echo", |_ctx, payload: Bytes| async move {
        Ok::<_, HandlerError>(payload)
    })
}

fn config() -> Config {
    Config {
        max_payload: 64 << 20,
        ..Config::default()
    }
}

/// A served connection and the raw client end, versions exchanged.
async fn raw_client() -> (Peer, DuplexStream) {
    Peer::track_buffers_for_tests();
    let (mut raw, io) = duplex(1 << 20);
    let server = tokio::spawn(Peer::handshake(io, echo(), config()));
    raw.write_all(b"01").await.unwrap();
    let mut version = [0u8; 2];
    raw.read_exact(&mut version).await.unwrap();
    assert_eq!(&version, b"01");
    (server.await.unwrap().unwrap(), raw)
}

/// Lets the drivers run until they are idle (bounded).
async fn settle() {
    for _ in 0..50 {
        tokio::task::yield_now().await;
    }
    tokio::time::sleep(Duration::from_millis(1)).await;
    for _ in 0..50 {
        tokio::task::yield_now().await;
    }
}

#[tokio::test]
async fn a_huge_declared_size_costs_only_the_bytes_that_arrived() {
    let (server, mut raw) = raw_client().await;
    // A request declaring a 16 MiB payload, and one byte of it.
    raw.write_all(b"r0001004echo01000000x").await.unwrap();
    settle().await;
    let (read, write) = server.buffer_capacity_for_tests().unwrap();
    assert!(read > 0, "the partial frame is held");
    assert!(read <= 8 * 1024, "holds {read} bytes after 22 received");
    assert_eq!(write, 0);
    // More of it: what is held grows with what arrived, no faster.
    let mut sent = 22;
    for _ in 0..6 {
        raw.write_all(&[b'y'; 10_000]).await.unwrap();
        sent += 10_000;
        settle().await;
        let (read, _) = server.buffer_capacity_for_tests().unwrap();
        assert!(read <= 2 * sent + 8 * 1024, "holds {read} after {sent}");
    }
    assert!(!server.is_closed());
}

#[tokio::test]
async fn an_idle_connection_holds_no_buffers() {
    Peer::track_buffers_for_tests();
    let (client, server) = Peer::pair(Handlers::new(), echo(), config()).await.unwrap();
    for payload in [10, 100_000, 10] {
        let reply = client.request("echo", vec![7u8; payload]).await.unwrap();
        assert_eq!(reply.len(), payload);
    }
    settle().await;
    for peer in [&client, &server] {
        assert_eq!(peer.buffer_capacity_for_tests(), Some((0, 0)));
    }
}

#[tokio::test]
async fn a_partial_frame_is_kept_and_completed() {
    let (server, mut raw) = raw_client().await;
    // A request in three pieces, idle in between.
    for piece in [&b"r0001004ec"[..], b"ho0000000", b"5hello"] {
        raw.write_all(piece).await.unwrap();
        settle().await;
    }
    let mut reply = [0u8; 18];
    raw.read_exact(&mut reply).await.unwrap();
    assert_eq!(&reply, b"R000100000005hello");
    settle().await;
    assert_eq!(server.buffer_capacity_for_tests(), Some((0, 0)));
}
