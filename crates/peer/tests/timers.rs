//! Read and handshake timeouts, and heartbeats sent and received.
//!
//! Most tests run on tokio's paused clock (`start_paused`) over in-memory
//! pipes: virtual time only moves when every task waits, straight to the
//! next timer, so a timer can be checked against an upper bound as well as
//! a lower one (it fires at its deadline, give or take the timer wheel's
//! millisecond) and waiting a long virtual time costs nothing.
//!
//! Tests that need real TCP (the `Server` accept path, `Peer::connect`) stay
//! on the real clock with lower bounds only: with paused time the runtime
//! would jump the clock ahead while a socket read is pending, firing
//! timeouts before the bytes arrive. Those are
//! `peer_timed_out_by_the_server_learns_why`,
//! `server_drops_a_silent_client_after_the_handshake_timeout`,
//! `connect_times_out_when_the_server_never_answers` and
//! `heartbeats_cross_a_tcp_connection`.

mod common;

use std::{
    sync::{Arc, Mutex},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use bytes::Bytes;
use common::{Raw, Transport, WAIT, connect, eventually, quiet, spawn_server, within};
use gotalk_peer::{
    CloseReason, Config, Error, HandlerError, Handlers, HandshakeError, Peer, ProtocolErrorCode,
};
use tokio::{
    io::DuplexStream,
    net::TcpListener,
    time::{Instant, sleep},
};

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

/// How late a timer may fire on the paused clock: the timer wheel rounds
/// deadlines up to the next millisecond.
const EPSILON: Duration = Duration::from_millis(2);

/// Checks, on the paused clock, that `elapsed` is `expected` within
/// [`EPSILON`]: never early, and not late either.
#[track_caller]
fn assert_on_time(elapsed: Duration, expected: Duration, what: &str) {
    assert!(
        elapsed >= expected && elapsed <= expected + EPSILON,
        "{what}: after {elapsed:?}, expected {expected:?} (+ up to {EPSILON:?})"
    );
}

/// A peer with `config` on one end of an in-memory pipe and a raw socket on
/// the other, versions exchanged.
async fn raw_and_peer(handlers: Handlers, config: Config) -> (Raw<DuplexStream>, Peer) {
    let (ours, theirs) = tokio::io::duplex(64 * 1024);
    let mut raw = Raw::new(ours);
    let (peer, ()) = tokio::join!(Peer::handshake(theirs, handlers, config), raw.handshake());
    (raw, peer.expect("handshake"))
}

const READ_TIMEOUT: Duration = Duration::from_millis(100);

fn read_timeout_config() -> Config {
    Config {
        read_timeout: Some(READ_TIMEOUT),
        ..quiet()
    }
}

/// A client that goes quiet after the handshake gets `f00000003` when the
/// read timeout has passed, not before or much after, and the connection
/// closes; the peer records why.
#[tokio::test(start_paused = true)]
async fn read_timeout_sends_protocol_error_3_and_closes() {
    let (mut raw, server) = raw_and_peer(echo(), read_timeout_config()).await;
    let start = Instant::now();
    raw.expect_bytes(b"f00000003").await;
    assert_on_time(start.elapsed(), READ_TIMEOUT, "f00000003");
    within(WAIT, "EOF after f00000003", raw.expect_eof()).await;
    let reason = within(WAIT, "server side closed", server.closed()).await;
    assert!(matches!(reason, CloseReason::ReadTimeout), "{reason}");
}

/// Half a frame does not count as a message: the timer keeps running from
/// the last whole one (here the handshake) and fires on time.
#[tokio::test(start_paused = true)]
async fn read_timeout_fires_inside_a_partial_frame() {
    let (mut raw, _server) = raw_and_peer(echo(), read_timeout_config()).await;
    let start = Instant::now();
    sleep(READ_TIMEOUT * 6 / 10).await;
    raw.send_bytes(b"r0001004echo00000002h").await;
    raw.expect_bytes(b"f00000003").await;
    assert_on_time(start.elapsed(), READ_TIMEOUT, "f00000003");
    raw.expect_eof().await;
}

/// A whole message restarts the timer: it fires one timeout after it.
#[tokio::test(start_paused = true)]
async fn read_timeout_counts_from_the_last_whole_message() {
    let (mut raw, _server) = raw_and_peer(echo(), read_timeout_config()).await;
    let start = Instant::now();
    let quiet_for = READ_TIMEOUT * 6 / 10;
    sleep(quiet_for).await;
    raw.send_bytes(b"h000000000000").await;
    raw.expect_bytes(b"f00000003").await;
    assert_on_time(start.elapsed(), quiet_for + READ_TIMEOUT, "f00000003");
    raw.expect_eof().await;
}

/// A `Peer` timed out by the server sees the server's protocol error, and
/// its call in flight fails with it. Over TCP (real clock): the `Server`
/// gives its connections the read timeout.
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
    let start = std::time::Instant::now();
    let err = within(WAIT, "call fails", conn.client.request("never", "")).await;
    match err.unwrap_err() {
        Error::Closed(CloseReason::RemoteProtocolError {
            code: ProtocolErrorCode::Timeout,
        }) => {}
        other => panic!("expected the server's timeout, got {other:?}"),
    }
    // The server's clock started a little before ours.
    assert!(start.elapsed() >= READ_TIMEOUT / 2, "{:?}", start.elapsed());
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
/// timeout stays connected while otherwise idle, and the server gets every
/// one of them.
#[tokio::test(start_paused = true)]
async fn heartbeats_keep_a_read_timeout_at_bay() {
    let every = Duration::from_millis(25);
    let client_config = Config {
        heartbeat_interval: Some(every),
        ..quiet()
    };
    let at_server = Seen::default();
    let server_config = Config {
        read_timeout: Some(READ_TIMEOUT),
        ..recording(None, 0, &at_server)
    };
    let conn = connect(
        Transport::Memory,
        Handlers::new(),
        echo(),
        client_config,
        server_config,
    )
    .await;
    let idle = READ_TIMEOUT * 4;
    sleep(idle).await;
    assert!(conn.server.close_reason().is_none());
    // One every 25 ms; the one due at the very end may not be in yet.
    let beats = at_server.lock().unwrap().len() as u32;
    let due = idle.as_millis() as u32 / every.as_millis() as u32;
    assert!(beats == due || beats == due - 1, "{beats} heartbeats");
    assert_eq!(
        conn.client.request("echo", "still here").await.unwrap(),
        "still here"
    );
}

/// A client that connects and never sends its version is dropped after the
/// handshake timeout, and does not hold up other clients meanwhile. Needs
/// the `Server`'s accept loop, so real TCP and the real clock.
#[tokio::test]
async fn server_drops_a_silent_client_after_the_handshake_timeout() {
    let limit = Duration::from_millis(100);
    let config = Config {
        handshake_timeout: limit,
        ..quiet()
    };
    let server = spawn_server(echo(), config).await;
    let mut silent = Raw::tcp(server.local_addr().to_string()).await;
    let start = std::time::Instant::now();
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

/// Over any stream, a handshake the peer never answers fails when the
/// handshake timeout has passed, not before or much after.
#[tokio::test(start_paused = true)]
async fn handshake_times_out_when_the_peer_never_answers() {
    let limit = Duration::from_millis(100);
    let config = Config {
        handshake_timeout: limit,
        ..quiet()
    };
    let (ours, _theirs) = tokio::io::duplex(1024);
    let start = Instant::now();
    let err = within(
        WAIT,
        "handshake",
        Peer::handshake(ours, Handlers::new(), config),
    )
    .await
    .unwrap_err();
    assert_on_time(start.elapsed(), limit, "handshake timeout");
    assert!(
        matches!(err, Error::Handshake(HandshakeError::Timeout(d)) if d == limit),
        "{err:?}"
    );
    assert!(err.to_string().contains("no version"), "{err}");
}

/// The same through `Peer::connect`, to a listener that accepts and stays
/// silent: real TCP, so the real clock.
#[tokio::test]
async fn connect_times_out_when_the_server_never_answers() {
    let limit = Duration::from_millis(100);
    let config = Config {
        handshake_timeout: limit,
        ..quiet()
    };
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let acceptor = tokio::spawn(async move {
        let (socket, _) = listener.accept().await.unwrap();
        // Hold the socket open, silent, until the test ends.
        std::future::pending::<()>().await;
        drop(socket);
    });
    let start = std::time::Instant::now();
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
    assert!(start.elapsed() >= limit, "{:?}", start.elapsed());
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

/// Heartbeats received: load, unix time, and when they arrived.
type Seen = Arc<Mutex<Vec<(u16, u32, Instant)>>>;

fn recording(interval: Option<Duration>, load: u16, seen: &Seen) -> Config {
    let seen = seen.clone();
    Config {
        heartbeat_interval: interval,
        heartbeat_load: Some(Arc::new(move || load)),
        on_heartbeat: Some(Arc::new(move |load, time| {
            seen.lock().unwrap().push((load, time, Instant::now()));
        })),
        ..Config::default()
    }
}

/// Checks the heartbeats `seen` carry `load` and the current unix time.
#[track_caller]
fn assert_heartbeats(seen: &Seen, load: u16) {
    let now = now_secs();
    for &(l, t, _) in seen.lock().unwrap().iter() {
        assert_eq!(l, load);
        assert!(t.abs_diff(now) <= 5, "heartbeat time {t}, now {now}");
    }
}

/// Each side sends heartbeats on its interval with its load, and the other
/// side's callback gets them, each one interval after the last.
#[tokio::test(start_paused = true)]
async fn heartbeats_are_sent_and_received_both_ways() {
    let every = Duration::from_millis(40);
    let at_client = Seen::default();
    let at_server = Seen::default();
    let start = Instant::now();
    let conn = connect(
        Transport::Memory,
        Handlers::new(),
        Handlers::new(),
        recording(Some(every), 7, &at_client),
        recording(Some(every), 9, &at_server),
    )
    .await;
    sleep(every * 3 + every / 2).await;
    for (seen, load) in [(&at_client, 9), (&at_server, 7)] {
        assert_heartbeats(seen, load);
        let arrived: Vec<Duration> = seen
            .lock()
            .unwrap()
            .iter()
            .map(|&(_, _, at)| at - start)
            .collect();
        assert_eq!(arrived.len(), 3, "{arrived:?}");
        for (n, &at) in (1..).zip(&arrived) {
            assert_on_time(at, every * n, "heartbeat");
        }
    }
    // One sent by hand, with its own load, arrives at once.
    let sent = Instant::now();
    conn.client.heartbeat(1234).await.unwrap();
    eventually(WAIT, "manual heartbeat", || {
        at_server.lock().unwrap().iter().any(|&(l, ..)| l == 1234)
    })
    .await;
    let at = at_server.lock().unwrap().last().unwrap().2;
    assert!(at - sent <= EPSILON, "{:?}", at - sent);
}

/// Heartbeats over a real `Server` and `Peer::connect`: real TCP, so the
/// real clock and lower bounds only.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heartbeats_cross_a_tcp_connection() {
    let every = Duration::from_millis(40);
    let at_client = Seen::default();
    let at_server = Seen::default();
    let start = Instant::now();
    let conn = connect(
        Transport::Tcp,
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
    assert_heartbeats(&at_client, 9);
    assert_heartbeats(&at_server, 7);
    // One sent by hand, with its own load.
    conn.client.heartbeat(1234).await.unwrap();
    eventually(WAIT, "manual heartbeat", || {
        at_server.lock().unwrap().iter().any(|&(l, ..)| l == 1234)
    })
    .await;
}

/// The `h` frame on the wire: `h`, load as 4 hex digits, unix time as 8,
/// one every interval.
#[tokio::test(start_paused = true)]
async fn heartbeat_frame_layout_on_the_wire() {
    let every = Duration::from_millis(30);
    let at_server = Seen::default();
    let config = recording(Some(every), 0x1abc, &at_server);
    let (mut raw, _server) = raw_and_peer(Handlers::new(), config).await;
    let start = Instant::now();
    for n in 1..=2 {
        let frame = raw.read_exact(13).await;
        assert_on_time(start.elapsed(), every * n, "heartbeat");
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
        at_server
            .lock()
            .unwrap()
            .iter()
            .any(|&(l, t, _)| (l, t) == (10, 0x54d7_e29a))
    })
    .await;
}

/// An interval of zero disables heartbeats, as does `None`: nothing is sent
/// in a minute, three times the default interval.
#[tokio::test(start_paused = true)]
async fn zero_interval_sends_no_heartbeats() {
    for interval in [Some(Duration::ZERO), None] {
        let config = Config {
            heartbeat_interval: interval,
            ..Config::default()
        };
        let (mut raw, _server) = raw_and_peer(echo(), config).await;
        sleep(Duration::from_secs(60)).await;
        // The first thing we read is the answer to our request.
        raw.send_bytes(b"r0001004echo00000001x").await;
        raw.expect_bytes(b"R000100000001x").await;
    }
}
