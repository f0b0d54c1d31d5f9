//! Read and handshake timeouts, and heartbeats sent and received.

mod common;

use std::{
    sync::{Arc, Mutex},
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use bytes::Bytes;
use common::{Raw, Transport, WAIT, connect, eventually, quiet, server_side, spawn_server, within};
use gotalk_peer::{
    CloseReason, Config, Error, HandlerError, Handlers, HandshakeError, Peer, ProtocolErrorCode,
};
use tokio::net::TcpListener;

fn echo() -> Handlers {
    Handlers::new().buffer(
        "echo",
        |_ctx, p: Bytes| async move { Ok::<_, HandlerError>(p) },
    )
}

fn now_secs() -> u32 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as u32
}

const READ_TIMEOUT: Duration = Duration::from_millis(100);

fn read_timeout_config() -> Config {
    Config {
        read_timeout: Some(READ_TIMEOUT),
        ..quiet()
    }
}

/// A client that goes quiet after the handshake gets `f00000003` and the
/// connection closes; the server side records why.
#[tokio::test]
async fn read_timeout_sends_protocol_error_3_and_closes() {
    let server = spawn_server(echo(), read_timeout_config()).await;
    let mut raw = Raw::tcp_handshaken(server.local_addr().to_string()).await;
    let start = Instant::now();
    let server_peer = server_side(&server, 1).await;
    within(
        WAIT,
        "f00000003 then EOF",
        raw.expect_protocol_error_then_eof(3),
    )
    .await;
    // The server's clock started a little before ours.
    assert!(start.elapsed() >= READ_TIMEOUT / 2, "{:?}", start.elapsed());
    let reason = within(WAIT, "server side closed", server_peer.closed()).await;
    assert!(matches!(reason, CloseReason::ReadTimeout), "{reason}");
}

/// Half a frame does not count as a message: the timer still fires.
#[tokio::test]
async fn read_timeout_fires_inside_a_partial_frame() {
    let server = spawn_server(echo(), read_timeout_config()).await;
    let mut raw = Raw::tcp_handshaken(server.local_addr().to_string()).await;
    raw.send_bytes(b"r0001004echo00000002h").await;
    raw.expect_protocol_error_then_eof(3).await;
}

/// A `Peer` timed out by the server sees the server's protocol error, and
/// its call in flight fails with it.
#[tokio::test]
async fn peer_timed_out_by_the_server_learns_why() {
    let never = Handlers::new().buffer("never", |_ctx, _p: Bytes| async move {
        std::future::pending::<()>().await;
        Ok::<Bytes, HandlerError>(Bytes::new())
    });
    let conn = connect(
        Transport::Tcp,
        Handlers::new(),
        never,
        quiet(),
        read_timeout_config(),
    )
    .await;
    let err = within(WAIT, "call fails", conn.client.request("never", "")).await;
    match err.unwrap_err() {
        Error::Closed(CloseReason::RemoteProtocolError {
            code: ProtocolErrorCode::Timeout,
        }) => {}
        other => panic!("expected the server's timeout, got {other:?}"),
    }
    let reason = within(WAIT, "client closed", conn.client.closed()).await;
    assert!(
        matches!(
            reason,
            CloseReason::RemoteProtocolError {
                code: ProtocolErrorCode::Timeout
            }
        ),
        "{reason}"
    );
}

/// Heartbeats are messages: a client sending them more often than the read
/// timeout stays connected while otherwise idle.
#[tokio::test]
async fn heartbeats_keep_a_read_timeout_at_bay() {
    let client_config = Config {
        heartbeat_interval: Some(Duration::from_millis(25)),
        ..quiet()
    };
    let conn = connect(
        Transport::Tcp,
        Handlers::new(),
        echo(),
        client_config,
        read_timeout_config(),
    )
    .await;
    tokio::time::sleep(READ_TIMEOUT * 4).await;
    assert!(conn.server.close_reason().is_none());
    assert_eq!(
        conn.client.request("echo", "still here").await.unwrap(),
        "still here"
    );
}

/// A client that connects and never sends its version is dropped after the
/// handshake timeout, and does not hold up other clients meanwhile.
#[tokio::test]
async fn server_drops_a_silent_client_after_the_handshake_timeout() {
    let limit = Duration::from_millis(100);
    let config = Config {
        handshake_timeout: limit,
        ..quiet()
    };
    let server = spawn_server(echo(), config).await;
    let mut silent = Raw::tcp(server.local_addr().to_string()).await;
    let start = Instant::now();
    // Served while the silent one waits.
    let client = Peer::connect(server.local_addr().to_string(), Handlers::new(), quiet())
        .await
        .unwrap();
    assert_eq!(client.request("echo", "hi").await.unwrap(), "hi");
    // The server speaks first, then gives up on the silent one.
    silent.expect_bytes(b"01").await;
    within(WAIT, "silent client dropped", silent.expect_eof()).await;
    assert!(start.elapsed() >= limit / 2, "{:?}", start.elapsed());
    assert_eq!(server.connections().len(), 1);
}

#[tokio::test]
async fn handshake_times_out_when_the_peer_never_answers() {
    let limit = Duration::from_millis(100);
    let config = Config {
        handshake_timeout: limit,
        ..quiet()
    };
    // Over any stream.
    let (ours, _theirs) = tokio::io::duplex(1024);
    let start = Instant::now();
    let err = within(
        WAIT,
        "handshake",
        Peer::handshake(ours, Handlers::new(), config.clone()),
    )
    .await
    .unwrap_err();
    assert!(
        matches!(err, Error::Handshake(HandshakeError::Timeout(d)) if d == limit),
        "{err:?}"
    );
    assert!(start.elapsed() >= limit);
    assert!(err.to_string().contains("no version"), "{err}");

    // Over TCP, to a listener that accepts and stays silent.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let acceptor = tokio::spawn(async move {
        let (socket, _) = listener.accept().await.unwrap();
        // Hold the socket open, silent, until the test ends.
        std::future::pending::<()>().await;
        drop(socket);
    });
    let err = within(
        WAIT,
        "connect",
        Peer::connect(addr, Handlers::new(), config),
    )
    .await
    .unwrap_err();
    assert!(
        matches!(err, gotalk_peer::ConnectError::Timeout(d) if d == limit),
        "{err:?}"
    );
    acceptor.abort();
}

#[tokio::test]
async fn handshake_fails_when_the_peer_hangs_up() {
    let (ours, theirs) = tokio::io::duplex(1024);
    drop(theirs);
    let err = Peer::handshake(ours, Handlers::new(), quiet())
        .await
        .unwrap_err();
    assert!(
        matches!(err, Error::Handshake(HandshakeError::Io(_))),
        "{err:?}"
    );
}

type Seen = Arc<Mutex<Vec<(u16, u32)>>>;

fn recording(interval: Option<Duration>, load: u16, seen: &Seen) -> Config {
    let seen = seen.clone();
    Config {
        heartbeat_interval: interval,
        heartbeat_load: Some(Arc::new(move || load)),
        on_heartbeat: Some(Arc::new(move |load, time| {
            seen.lock().unwrap().push((load, time));
        })),
        ..Config::default()
    }
}

/// Each side sends heartbeats on its interval with its load, and the other
/// side's callback gets them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heartbeats_are_sent_and_received_both_ways() {
    let every = Duration::from_millis(40);
    for transport in common::TRANSPORTS {
        let at_client: Seen = Arc::default();
        let at_server: Seen = Arc::default();
        let start = Instant::now();
        let conn = connect(
            transport,
            Handlers::new(),
            Handlers::new(),
            recording(Some(every), 7, &at_client),
            recording(Some(every), 9, &at_server),
        )
        .await;
        eventually(WAIT, "three heartbeats each way", || {
            at_client.lock().unwrap().len() >= 3 && at_server.lock().unwrap().len() >= 3
        })
        .await;
        // The third heartbeat is due one interval after the second.
        assert!(start.elapsed() >= every * 2, "{:?}", start.elapsed());
        let now = now_secs();
        for (seen, load) in [(&at_client, 9), (&at_server, 7)] {
            for &(l, t) in seen.lock().unwrap().iter() {
                assert_eq!(l, load, "{transport:?}");
                assert!(t.abs_diff(now) <= 5, "heartbeat time {t}, now {now}");
            }
        }
        // One sent by hand, with its own load.
        conn.client.heartbeat(1234).await.unwrap();
        eventually(WAIT, "manual heartbeat", || {
            at_server.lock().unwrap().iter().any(|&(l, _)| l == 1234)
        })
        .await;
    }
}

/// The `h` frame on the wire: `h`, load as 4 hex digits, unix time as 8.
#[tokio::test]
async fn heartbeat_frame_layout_on_the_wire() {
    let at_server: Seen = Arc::default();
    let config = recording(Some(Duration::from_millis(30)), 0x1abc, &at_server);
    let server = spawn_server(Handlers::new(), config).await;
    let mut raw = Raw::tcp_handshaken(server.local_addr().to_string()).await;
    for _ in 0..2 {
        let frame = raw.read_exact(13).await;
        assert_eq!(&frame[..5], b"h1abc", "{frame:?}");
        let time = std::str::from_utf8(&frame[5..]).unwrap();
        assert!(
            time.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)),
            "lower-case hex time: {time:?}"
        );
        let time = u32::from_str_radix(time, 16).unwrap();
        assert!(time.abs_diff(now_secs()) <= 5);
    }
    // And one from the raw client reaches the server's callback as sent.
    raw.send_bytes(b"h000A54d7e29a").await;
    eventually(WAIT, "server callback", || {
        at_server.lock().unwrap().contains(&(10, 0x54d7_e29a))
    })
    .await;
}

/// An interval of zero disables heartbeats, as does `None`.
#[tokio::test]
async fn zero_interval_sends_no_heartbeats() {
    for interval in [Some(Duration::ZERO), None] {
        let config = Config {
            heartbeat_interval: interval,
            ..Config::default()
        };
        let server = spawn_server(echo(), config).await;
        let mut raw = Raw::tcp_handshaken(server.local_addr().to_string()).await;
        tokio::time::sleep(Duration::from_millis(100)).await;
        // The first thing we read is the answer to our request.
        raw.send_bytes(b"r0001004echo00000001x").await;
        raw.expect_bytes(b"R000100000001x").await;
    }
}
