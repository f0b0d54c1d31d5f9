//! Abrupt disconnects, graceful close, slow readers, and nothing leaked
//! after a connection closes.

mod common;

use std::{
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use bytes::Bytes;
use common::{
    Proxy, Raw, TRANSPORTS, Transport, WAIT, connect, eventually, quiet, server_side, spawn_server,
    within,
};
use futures::{StreamExt, future::join_all};
use gotalk_peer::{
    CloseReason, Config, Error, HandlerError, Handlers, Peer, ProtocolErrorCode, RequestOptions,
    ResultStream, StreamWriter,
};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpSocket,
    sync::{Semaphore, mpsc},
};

/// How fast everything waiting must fail once a connection is gone.
const PROMPT: Duration = Duration::from_secs(2);

/// Handlers that never answer on their own; `started` counts them, and
/// stream handlers report how their request stream ended.
#[derive(Clone)]
struct Hanging {
    started: Arc<AtomicUsize>,
    stream_ends: mpsc::UnboundedSender<Result<usize, String>>,
}

impl Hanging {
    fn new() -> (Self, mpsc::UnboundedReceiver<Result<usize, String>>) {
        let (tx, rx) = mpsc::unbounded_channel();
        let h = Self {
            started: Arc::default(),
            stream_ends: tx,
        };
        (h, rx)
    }

    fn handlers(&self) -> Handlers {
        let started = self.started.clone();
        let started2 = self.started.clone();
        let ends = self.stream_ends.clone();
        Handlers::new()
            .buffer("hang", move |_ctx, _p: Bytes| {
                started.fetch_add(1, Ordering::SeqCst);
                async move {
                    std::future::pending::<()>().await;
                    Ok::<Bytes, HandlerError>(Bytes::new())
                }
            })
            .stream("sink", move |_ctx, mut parts, _out| {
                started2.fetch_add(1, Ordering::SeqCst);
                let ends = ends.clone();
                async move {
                    let mut n = 0;
                    let end = loop {
                        match parts.next().await {
                            Some(Ok(p)) => n += p.len(),
                            Some(Err(e)) => break Err(e.to_string()),
                            None => break Ok(n),
                        }
                    };
                    let _ = ends.send(end);
                    // Never answers.
                    std::future::pending::<()>().await;
                    Ok::<(), HandlerError>(())
                }
            })
            .buffer(
                "echo",
                |_ctx, p: Bytes| async move { Ok::<_, HandlerError>(p) },
            )
    }
}

/// Everything one side has in flight toward the other.
struct InFlight {
    calls: Vec<tokio::task::JoinHandle<Result<Bytes, Error>>>,
    streams: Vec<(StreamWriter, ResultStream)>,
}

async fn start_in_flight(peer: &Peer, calls: usize, streams: usize) -> InFlight {
    let calls = (0..calls)
        .map(|i| {
            let peer = peer.clone();
            tokio::spawn(async move { peer.request("hang", format!("{i}")).await })
        })
        .collect();
    let mut opened = Vec::new();
    for _ in 0..streams {
        let (mut tx, rx) = peer.stream_request("sink").await.unwrap();
        tx.send("part").await.unwrap();
        opened.push((tx, rx));
    }
    InFlight {
        calls,
        streams: opened,
    }
}

fn is_peer_closed(e: &Error) -> bool {
    matches!(e, Error::Closed(CloseReason::PeerClosed))
}

/// Checks that everything in flight fails promptly with `expected`.
async fn all_fail(in_flight: InFlight, expected: fn(&Error) -> bool, ctx: &str) {
    let calls = join_all(in_flight.calls);
    for joined in within(PROMPT, &format!("{ctx}: calls fail"), calls).await {
        let err = joined.unwrap().unwrap_err();
        assert!(expected(&err), "{ctx}: {err:?}");
        assert!(err.to_string().starts_with("connection closed"), "{err}");
    }
    for (mut tx, mut rx) in in_flight.streams {
        let item = within(PROMPT, &format!("{ctx}: stream fails"), rx.next()).await;
        let err = item.expect("an error, not a clean end").unwrap_err();
        assert!(expected(&err), "{ctx}: {err:?}");
        assert!(rx.next().await.is_none());
        let err = tx.send("more").await.unwrap_err();
        assert!(err.is_closed(), "{ctx}: {err:?}");
    }
}

/// The connection is cut between the peers (FIN, then RST): every call and
/// stream in flight on both sides fails promptly naming the cause, and the
/// handlers reading request streams see the end too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cut_connection_fails_everything_in_flight_promptly() {
    for reset in [false, true] {
        let ctx = if reset { "reset" } else { "closed" };
        let (at_server, mut server_stream_ends) = Hanging::new();
        let (at_client, mut client_stream_ends) = Hanging::new();
        let server = spawn_server(at_server.handlers(), quiet()).await;
        let proxy = Proxy::start(&server.local_addr().to_string(), reset).await;
        let client = Peer::connect(proxy.addr, at_client.handlers(), quiet())
            .await
            .unwrap();
        let server_peer = server_side(&server, 1).await;

        let from_client = start_in_flight(&client, 5, 2).await;
        let from_server = start_in_flight(&server_peer, 3, 2).await;
        eventually(WAIT, "all handlers running", || {
            at_server.started.load(Ordering::SeqCst) == 7
                && at_client.started.load(Ordering::SeqCst) == 5
        })
        .await;

        let cut = Instant::now();
        proxy.kill().await;
        all_fail(from_client, is_peer_closed, ctx).await;
        all_fail(from_server, is_peer_closed, ctx).await;
        for (side, peer) in [("client", &client), ("server", &server_peer)] {
            let reason = within(PROMPT, "closed()", peer.closed()).await;
            assert!(
                matches!(reason, CloseReason::PeerClosed),
                "{ctx}, {side}: {reason}"
            );
            assert!(peer.is_closed());
            let err = peer.notify("after", "x").await.unwrap_err();
            assert!(is_peer_closed(&err), "{err:?}");
            let err = peer.request("echo", "x").await.unwrap_err();
            assert!(is_peer_closed(&err), "{err:?}");
        }
        // The stream handlers on both sides learn it too.
        for ends in [&mut server_stream_ends, &mut client_stream_ends] {
            for _ in 0..2 {
                let end = within(PROMPT, "stream handler sees the end", ends.recv())
                    .await
                    .unwrap();
                let msg = end.expect_err("the stream broke off");
                assert!(msg.contains("closed by peer"), "{ctx}: {msg}");
            }
        }
        assert!(cut.elapsed() < PROMPT, "{ctx}: {:?}", cut.elapsed());
        eventually(WAIT, "server forgets the connection", || {
            server.connections().is_empty()
        })
        .await;
    }
}

/// `abort()` on one side: its own calls fail as closed locally, the other
/// side's as closed by the peer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn abort_fails_both_sides_with_their_own_reason() {
    for transport in TRANSPORTS {
        let (at_server, _ends_s) = Hanging::new();
        let (at_client, _ends_c) = Hanging::new();
        let conn = connect(
            transport,
            at_client.handlers(),
            at_server.handlers(),
            quiet(),
            quiet(),
        )
        .await;
        let from_client = start_in_flight(&conn.client, 4, 1).await;
        let from_server = start_in_flight(&conn.server, 4, 1).await;
        eventually(WAIT, "handlers running", || {
            at_server.started.load(Ordering::SeqCst) == 5
                && at_client.started.load(Ordering::SeqCst) == 5
        })
        .await;
        conn.server.abort();
        all_fail(
            from_server,
            |e| matches!(e, Error::Closed(CloseReason::Local)),
            "aborting side",
        )
        .await;
        all_fail(from_client, is_peer_closed, "other side").await;
        let reason = within(PROMPT, "closed", conn.server.closed()).await;
        assert!(matches!(reason, CloseReason::Local), "{reason}");
        let reason = within(PROMPT, "closed", conn.client.closed()).await;
        assert!(
            matches!(reason, CloseReason::PeerClosed),
            "{transport:?}: {reason}"
        );
    }
}

/// A peer that breaks the protocol: our calls fail with the violation, and
/// the peer is told with `f00000002`.
#[tokio::test]
async fn protocol_violation_fails_calls_with_the_violation() {
    let (ours, theirs) = tokio::io::duplex(4096);
    let mut raw = Raw::new(theirs);
    let (peer, ()) = tokio::join!(
        Peer::handshake(ours, Handlers::new(), quiet()),
        raw.handshake()
    );
    let peer = peer.unwrap();
    let call = tokio::spawn({
        let peer = peer.clone();
        async move { peer.request("op", "").await }
    });
    assert!(raw.expect_message().await.id().is_some());
    raw.send_bytes(b"?garbage").await;
    let err = within(PROMPT, "call fails", call)
        .await
        .unwrap()
        .unwrap_err();
    match &err {
        Error::Closed(CloseReason::ProtocolViolation {
            code: ProtocolErrorCode::InvalidMessage,
            violation,
        }) => assert!(!violation.to_string().is_empty()),
        other => panic!("{other:?}"),
    }
    assert!(err.to_string().contains("broke the protocol"), "{err}");
    raw.expect_protocol_error_then_eof(2).await;
}

/// A `gated` handler that waits for permits, counting the ones running.
#[derive(Clone)]
struct Gate {
    permits: Arc<Semaphore>,
    running: Arc<AtomicUsize>,
}

impl Gate {
    fn new() -> Self {
        Self {
            permits: Arc::new(Semaphore::new(0)),
            running: Arc::default(),
        }
    }

    fn handlers(&self) -> Handlers {
        let gate = self.clone();
        Handlers::new()
            .buffer("gated", move |_ctx, p: Bytes| {
                let gate = gate.clone();
                async move {
                    gate.running.fetch_add(1, Ordering::SeqCst);
                    gate.permits.acquire().await.unwrap().forget();
                    gate.running.fetch_sub(1, Ordering::SeqCst);
                    Ok::<_, HandlerError>(p)
                }
            })
            .buffer(
                "echo",
                |_ctx, p: Bytes| async move { Ok::<_, HandlerError>(p) },
            )
    }

    fn open(&self, n: usize) {
        self.permits.add_permits(n);
    }
}

/// Sends quick probes until one is refused; returns the refusal.
async fn first_refusal(peer: &Peer) -> Error {
    let once = RequestOptions {
        max_attempts: Some(1),
        ..RequestOptions::default()
    };
    for _ in 0..400 {
        match peer.request_with("echo", "probe", once).await {
            Ok(_) => tokio::time::sleep(Duration::from_millis(5)).await,
            Err(e) => return e,
        }
    }
    panic!("new requests are still taken after close()");
}

/// `close()` on the server side: new requests are refused with a retry
/// result `connection closing`, requests in flight both ways finish with
/// their results, then the connection closes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_close_drains_requests_in_flight() {
    for transport in TRANSPORTS {
        let gate = Gate::new();
        let conn = connect(
            transport,
            gate.handlers(),
            gate.handlers(),
            quiet(),
            quiet(),
        )
        .await;
        let inbound: Vec<_> = (0..3)
            .map(|i| {
                let client = conn.client.clone();
                tokio::spawn(async move { client.request("gated", format!("in{i}")).await })
            })
            .collect();
        // The closing side's own request to the other side.
        let outbound = tokio::spawn({
            let server = conn.server.clone();
            async move { server.request("gated", "out").await }
        });
        eventually(WAIT, "4 handlers running", || {
            gate.running.load(Ordering::SeqCst) == 4
        })
        .await;

        let closing = tokio::spawn({
            let server = conn.server.clone();
            async move { server.close().await }
        });
        match first_refusal(&conn.client).await {
            Error::RetryExhausted { message, wait, .. } => {
                assert_eq!(message, "connection closing");
                assert_eq!(wait, Duration::ZERO);
            }
            other => panic!("{transport:?}: expected a retry result, got {other:?}"),
        }
        // The closing side takes no new outbound requests either.
        let err = conn.server.request("echo", "").await.unwrap_err();
        assert!(err.is_closed(), "{err:?}");
        assert!(!closing.is_finished());

        gate.open(4);
        for (i, call) in inbound.into_iter().enumerate() {
            let got = within(WAIT, "drained", call).await.unwrap();
            assert_eq!(got.unwrap(), format!("in{i}"), "{transport:?}");
        }
        assert_eq!(
            within(WAIT, "drained", outbound).await.unwrap().unwrap(),
            "out"
        );
        let reason = within(WAIT, "close returns", closing).await.unwrap();
        assert!(matches!(reason, CloseReason::Local), "{reason}");
        let reason = within(PROMPT, "client sees it", conn.client.closed()).await;
        assert!(matches!(reason, CloseReason::PeerClosed), "{reason}");
        assert!(
            conn.client
                .request("echo", "")
                .await
                .unwrap_err()
                .is_closed()
        );
    }
}

/// Requests that never finish hold a graceful close up only for
/// `close_timeout`; then they fail as closed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_close_gives_up_after_close_timeout() {
    let close_timeout = Duration::from_millis(150);
    let server_config = Config {
        close_timeout,
        ..quiet()
    };
    for transport in TRANSPORTS {
        let (hanging, _ends) = Hanging::new();
        let conn = connect(
            transport,
            Handlers::new(),
            hanging.handlers(),
            quiet(),
            server_config.clone(),
        )
        .await;
        let in_flight = start_in_flight(&conn.client, 2, 1).await;
        eventually(WAIT, "handlers running", || {
            hanging.started.load(Ordering::SeqCst) == 3
        })
        .await;
        let start = Instant::now();
        let reason = within(WAIT, "close", conn.server.close()).await;
        let took = start.elapsed();
        assert!(matches!(reason, CloseReason::Local), "{reason}");
        assert!(
            took >= close_timeout,
            "{transport:?}: closed after {took:?}"
        );
        assert!(took < close_timeout + PROMPT, "{transport:?}: {took:?}");
        all_fail(in_flight, is_peer_closed, "after close timeout").await;
    }
}

/// Closing the side that made the calls waits for their results too, and
/// refuses new calls at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_close_of_the_caller_waits_for_its_results() {
    let gate = Gate::new();
    let conn = connect(
        Transport::Memory,
        Handlers::new(),
        gate.handlers(),
        quiet(),
        quiet(),
    )
    .await;
    let call = tokio::spawn({
        let client = conn.client.clone();
        async move { client.request("gated", "mine").await }
    });
    eventually(WAIT, "handler running", || {
        gate.running.load(Ordering::SeqCst) == 1
    })
    .await;
    let closing = tokio::spawn({
        let client = conn.client.clone();
        async move { client.close().await }
    });
    let err = first_refusal(&conn.client).await;
    assert!(matches!(err, Error::Closed(CloseReason::Local)), "{err:?}");
    assert!(!closing.is_finished());
    gate.open(1);
    assert_eq!(within(WAIT, "result", call).await.unwrap().unwrap(), "mine");
    within(WAIT, "close returns", closing).await.unwrap();
}

/// A stream request abandoned (its `ResultStream` dropped) while its
/// side closes gracefully no longer holds the close up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_close_does_not_wait_for_abandoned_streams() {
    let (hanging, _ends) = Hanging::new();
    let conn = connect(
        Transport::Memory,
        Handlers::new(),
        hanging.handlers(),
        quiet(),
        quiet(),
    )
    .await;
    let (tx, rx) = conn.client.stream_request("sink").await.unwrap();
    eventually(WAIT, "handler running", || {
        hanging.started.load(Ordering::SeqCst) == 1
    })
    .await;
    let start = Instant::now();
    let closing = tokio::spawn({
        let client = conn.client.clone();
        async move { client.close().await }
    });
    // Let the close start waiting on the stream, then give the stream up.
    let err = first_refusal(&conn.client).await;
    assert!(err.is_closed(), "{err:?}");
    drop(tx);
    drop(rx);
    assert_eq!(conn.client.pending_requests(), 0);
    within(PROMPT, "close after the stream is dropped", closing)
        .await
        .unwrap();
    // Config::default().close_timeout is 5 s.
    assert!(start.elapsed() < PROMPT, "{:?}", start.elapsed());
}

/// `ServerHandle::shutdown` stops accepting, lets every connection's
/// requests finish, then closes them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_shutdown_drains_every_connection() {
    let gate = Gate::new();
    let server = spawn_server(gate.handlers(), quiet()).await;
    let addr = server.local_addr().to_string();
    let mut clients = Vec::new();
    for _ in 0..2 {
        clients.push(
            Peer::connect(&addr, Handlers::new(), quiet())
                .await
                .unwrap(),
        );
    }
    server_side(&server, 2).await;
    let calls: Vec<_> = clients
        .iter()
        .enumerate()
        .map(|(i, c)| {
            let c = c.clone();
            tokio::spawn(async move { c.request("gated", format!("c{i}")).await })
        })
        .collect();
    eventually(WAIT, "both running", || {
        gate.running.load(Ordering::SeqCst) == 2
    })
    .await;
    let shutdown = tokio::spawn(server.shutdown());
    // New connections are refused once the listener is gone.
    let mut refused = false;
    for _ in 0..200 {
        match Peer::connect(&addr, Handlers::new(), quiet()).await {
            Ok(_late) => tokio::time::sleep(Duration::from_millis(5)).await,
            Err(e) => {
                assert!(
                    matches!(
                        e,
                        gotalk_peer::ConnectError::Io(_) | gotalk_peer::ConnectError::Handshake(_)
                    ),
                    "{e:?}"
                );
                refused = true;
                break;
            }
        }
    }
    assert!(refused, "still accepting after shutdown");
    assert!(!shutdown.is_finished());
    gate.open(2);
    for (i, call) in calls.into_iter().enumerate() {
        assert_eq!(
            within(WAIT, "drained", call).await.unwrap().unwrap(),
            format!("c{i}")
        );
    }
    within(WAIT, "shutdown returns", shutdown).await.unwrap();
    for client in &clients {
        let reason = within(PROMPT, "client closed", client.closed()).await;
        assert!(matches!(reason, CloseReason::PeerClosed), "{reason}");
    }
}

/// A peer that stops reading: our sends wait once the bounded write queue
/// is full (instead of queueing without bound), and all go through once it
/// reads again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn write_queue_is_bounded_for_a_peer_that_does_not_read() {
    let config = Config {
        max_write_queue_bytes: 4096,
        write_timeout: None,
        ..quiet()
    };
    let (ours, theirs) = tokio::io::duplex(1024);
    let mut raw = Raw::new(theirs);
    let (peer, ()) = tokio::join!(
        Peer::handshake(ours, Handlers::new(), config),
        raw.handshake()
    );
    let peer = peer.unwrap();
    const COUNT: usize = 1000;
    let sent = Arc::new(AtomicUsize::new(0));
    let sender = tokio::spawn({
        let (peer, sent) = (peer.clone(), sent.clone());
        async move {
            for i in 0..COUNT {
                peer.notify("n", vec![(i % 251) as u8; 1024]).await?;
                sent.fetch_add(1, Ordering::SeqCst);
            }
            Ok::<_, Error>(())
        }
    });
    let mut last = usize::MAX;
    for _ in 0..200 {
        tokio::time::sleep(Duration::from_millis(30)).await;
        let now = sent.load(Ordering::SeqCst);
        if now == last {
            break;
        }
        last = now;
    }
    // Queue (4 KiB) + the batch being written (about 4 KiB) + the pipe (1 KiB).
    assert!(
        last < 20,
        "{last} notifications queued for a peer not reading"
    );
    assert!(!sender.is_finished());
    within(WAIT, "all notifications arrive", async {
        for i in 0..COUNT {
            match raw.expect_message().await {
                gotalk_peer::proto::Message::Notification { payload, .. } => {
                    assert_eq!(payload, vec![(i % 251) as u8; 1024]);
                }
                other => panic!("{other:?}"),
            }
        }
    })
    .await;
    within(WAIT, "sender done", sender).await.unwrap().unwrap();
}

/// A requester that sends a burst and does not read yet: the replies of our
/// handlers (answered on the connection's task) wait for room in the
/// bounded queue, reading stops meanwhile, and once the requester reads,
/// every result arrives, in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replies_wait_for_room_and_reading_resumes() {
    let config = Config {
        max_write_queue_bytes: 4096,
        write_timeout: None,
        ..quiet()
    };
    let handlers =
        Handlers::new().buffer(
            "echo",
            |_ctx, p: Bytes| async move { Ok::<_, HandlerError>(p) },
        );
    let (ours, theirs) = tokio::io::duplex(2048);
    // Reading and writing apart, so that writes may stall while we read.
    let (mut rd, mut wr) = tokio::io::split(theirs);
    let handshake = async {
        wr.write_all(b"01").await.unwrap();
        let mut version = [0u8; 2];
        rd.read_exact(&mut version).await.unwrap();
        assert_eq!(&version, b"01");
    };
    let (peer, ()) = tokio::join!(Peer::handshake(ours, handlers, config), handshake);
    let peer = peer.unwrap();
    const COUNT: u32 = 300;
    let payload = |i: u32| Bytes::from(vec![(i % 251) as u8; 1024]);
    let writer = tokio::spawn(async move {
        for i in 0..COUNT {
            let msg = gotalk_peer::proto::Message::SingleRequest {
                id: gotalk_peer::proto::RequestId::from_u32(i),
                op: gotalk_peer::proto::Text::from_static("echo"),
                payload: payload(i),
            };
            wr.write_all(&msg.to_vec().unwrap()).await.unwrap();
        }
        wr
    });
    // Nothing is read for a while: the server's queue fills, then its
    // reading stops, and so our writes stall in the 2 KiB pipe.
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(
        !writer.is_finished(),
        "the server kept reading without bound"
    );
    let mut raw = Raw::new(tokio::io::join(rd, tokio::io::sink()));
    within(WAIT, "every result, in order", async {
        for i in 0..COUNT {
            match raw.expect_message().await {
                gotalk_peer::proto::Message::SingleResult { id, payload: p } => {
                    assert_eq!(id.to_u32(), i);
                    assert_eq!(p, payload(i));
                }
                other => panic!("{other:?}"),
            }
        }
    })
    .await;
    within(WAIT, "all requests written", writer).await.unwrap();
    assert!(!peer.is_closed());
}

/// With a write timeout, a peer that stops reading gets the connection
/// closed with `WriteTimeout`; the blocked senders fail with it.
#[tokio::test]
async fn write_timeout_closes_a_connection_nobody_reads() {
    let config = Config {
        max_write_queue_bytes: 4096,
        write_timeout: Some(Duration::from_millis(100)),
        ..quiet()
    };
    let (ours, theirs) = tokio::io::duplex(1024);
    let mut raw = Raw::new(theirs);
    let (peer, ()) = tokio::join!(
        Peer::handshake(ours, Handlers::new(), config),
        raw.handshake()
    );
    let peer = peer.unwrap();
    let sender = tokio::spawn({
        let peer = peer.clone();
        async move {
            for _ in 0..1000 {
                peer.notify("n", vec![0u8; 1024]).await?;
            }
            Ok::<_, Error>(())
        }
    });
    let err = within(WAIT, "sender fails", sender)
        .await
        .unwrap()
        .unwrap_err();
    assert!(
        matches!(err, Error::Closed(CloseReason::WriteTimeout)),
        "{err:?}"
    );
    let reason = within(PROMPT, "closed", peer.closed()).await;
    assert!(matches!(reason, CloseReason::WriteTimeout), "{reason}");
    drop(raw);
}

/// A TCP client that sends requests for large results and never reads:
/// the server's writer times out and the server closes that connection,
/// instead of buffering results without bound.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_closes_a_slow_reader_on_write_timeout() {
    let handlers = Handlers::new().buffer("big", |_ctx, _p: Bytes| async move {
        Ok::<_, HandlerError>(vec![b'x'; 256 * 1024])
    });
    let config = Config {
        max_write_queue_bytes: 64 * 1024,
        write_timeout: Some(Duration::from_millis(200)),
        ..quiet()
    };
    let server = spawn_server(handlers, config).await;
    let socket = TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let stream = socket
        .connect(server.local_addr().socket_addr().unwrap())
        .await
        .unwrap();
    let mut raw = Raw::new(stream);
    raw.handshake().await;
    let server_peer = server_side(&server, 1).await;
    // 64 x 256 KiB = 16 MiB of results, far more than the socket buffers.
    let requests: Vec<u8> = (0..64u32)
        .flat_map(|i| format!("r{i:04}003big00000000").into_bytes())
        .collect();
    raw.send_bytes(&requests).await;
    let reason = within(
        WAIT,
        "server gives up on the slow reader",
        server_peer.closed(),
    )
    .await;
    assert!(matches!(reason, CloseReason::WriteTimeout), "{reason}");
    eventually(WAIT, "server forgets it", || {
        server.connections().is_empty()
    })
    .await;
    drop(raw);
}

/// Polls until `weak` no longer upgrades: the connection state was freed.
async fn freed<T>(weak: &std::sync::Weak<T>, what: &str) {
    eventually(WAIT, what, || weak.upgrade().is_none()).await;
}

/// Handlers holding the connection while something is in flight: a stream
/// handler reading parts and a handler waiting for the close.
fn busy_handlers() -> Handlers {
    Handlers::new()
        .buffer(
            "echo",
            |_ctx, p: Bytes| async move { Ok::<_, HandlerError>(p) },
        )
        .buffer("until-closed", |ctx, _p: Bytes| async move {
            ctx.peer().closed().await;
            Ok::<_, HandlerError>(Bytes::new())
        })
        .stream("drain", |_ctx, mut parts, mut out| async move {
            while let Some(part) = parts.next().await {
                out.send(part?).await?;
            }
            Ok::<_, HandlerError>(())
        })
        .notification("note", |ctx, p| async move {
            let _ = ctx.peer().notify("note-back", p).await;
        })
}

/// After close, with calls, streams and handlers in flight at that moment,
/// no task is left running and the connection state is freed on both ends.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_is_leaked_after_close() {
    let metrics = tokio::runtime::Handle::current().metrics();
    let baseline = metrics.num_alive_tasks();
    for transport in TRANSPORTS {
        for abrupt in [false, true] {
            let ctx = format!("{transport:?}, abrupt: {abrupt}");
            let common::Conn {
                client,
                server,
                handle,
            } = connect(
                transport,
                busy_handlers(),
                busy_handlers(),
                quiet(),
                quiet(),
            )
            .await;
            // Some finished work of every kind...
            assert_eq!(client.request("echo", "x").await.unwrap(), "x");
            assert_eq!(server.request("echo", "y").await.unwrap(), "y");
            client.notify("note", "z").await.unwrap();
            let (mut tx, rx) = client.stream_request("drain").await.unwrap();
            tx.send("a").await.unwrap();
            tx.end().await.unwrap();
            assert_eq!(rx.collect_bytes(10).await.unwrap(), "a");
            // ... and some still in flight when the connection goes: a
            // stream from the server to the client's `drain` handler.
            let (mut open_tx, mut open_rx) = server.stream_request("drain").await.unwrap();
            open_tx.send("b").await.unwrap();
            // Echoed back: the handler is running.
            assert_eq!(open_rx.next().await.unwrap().unwrap(), "b");
            let weak_client = client.downgrade_for_leak_check();
            let weak_server = server.downgrade_for_leak_check();
            if abrupt {
                // And a call whose handler only returns at the close.
                let waiting = tokio::spawn({
                    let client = client.clone();
                    async move { client.request("until-closed", "").await }
                });
                eventually(WAIT, "call sent", || client.pending_requests() == 1).await;
                client.abort();
                let err = within(WAIT, "call fails", waiting)
                    .await
                    .unwrap()
                    .unwrap_err();
                assert!(err.is_closed(), "{err:?}");
                drop((open_tx, open_rx));
            } else {
                let closing = tokio::spawn({
                    let client = client.clone();
                    async move { client.close().await }
                });
                // The client's `drain` handler holds the close until the
                // server ends its stream.
                tokio::time::sleep(Duration::from_millis(20)).await;
                assert!(!closing.is_finished(), "{ctx}: close did not wait");
                open_tx.end().await.unwrap();
                assert!(open_rx.next().await.is_none(), "{ctx}: clean end");
                drop(open_rx);
                let reason = within(WAIT, "close", closing).await.unwrap();
                assert!(matches!(reason, CloseReason::Local), "{ctx}: {reason}");
            }
            within(WAIT, "server side closes", server.closed()).await;
            drop((client, server));
            freed(&weak_client, &format!("{ctx}: client state freed")).await;
            freed(&weak_server, &format!("{ctx}: server state freed")).await;
            if let Some(handle) = handle {
                handle.shutdown().await;
            }
        }
    }
    eventually(WAIT, "every task ended", || {
        metrics.num_alive_tasks() <= baseline
    })
    .await;
}

/// Dropping every handle closes the connection (gracefully) and frees it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_every_handle_closes_and_frees_the_connection() {
    let metrics = tokio::runtime::Handle::current().metrics();
    let baseline = metrics.num_alive_tasks();
    let conn = connect(
        Transport::Tcp,
        Handlers::new(),
        busy_handlers(),
        quiet(),
        quiet(),
    )
    .await;
    assert_eq!(conn.client.request("echo", "x").await.unwrap(), "x");
    let weak = conn.client.downgrade_for_leak_check();
    let server_peer = conn.server.clone();
    let server = conn.handle.expect("tcp server");
    drop(conn.client);
    drop(conn.server);
    let reason = within(WAIT, "server side closes", server_peer.closed()).await;
    assert!(matches!(reason, CloseReason::PeerClosed), "{reason}");
    freed(&weak, "client state freed").await;
    let weak_server = server_peer.downgrade_for_leak_check();
    drop(server_peer);
    freed(&weak_server, "server state freed").await;
    server.shutdown().await;
    eventually(WAIT, "every task ended", || {
        metrics.num_alive_tasks() <= baseline
    })
    .await;
}

/// The runtime that drives a connection shuts down while a caller on
/// another runtime waits for an answer: the caller fails with
/// `Abandoned`, and `closed()` returns, instead of both waiting forever.
#[test]
fn a_runtime_shut_down_under_a_connection_fails_its_waiting_callers() {
    let driving = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let started = Arc::new(AtomicUsize::new(0));
    let handlers = {
        let started = started.clone();
        Handlers::new().buffer("hang", move |_ctx, _p| {
            started.fetch_add(1, Ordering::SeqCst);
            std::future::pending::<Result<Bytes, HandlerError>>()
        })
    };
    let (client, _server) = driving
        .block_on(Peer::pair(Handlers::new(), handlers, Config::default()))
        .unwrap();

    let calling = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    calling.block_on(async move {
        let call = tokio::spawn({
            let client = client.clone();
            async move { client.request("hang", "x").await }
        });
        eventually(WAIT, "the handler runs", || {
            started.load(Ordering::SeqCst) == 1
        })
        .await;
        driving.shutdown_background();
        let result = within(PROMPT, "the caller fails", call).await.unwrap();
        assert!(
            matches!(result, Err(Error::Closed(CloseReason::Abandoned))),
            "{result:?}"
        );
        let reason = within(PROMPT, "closed() returns", client.closed()).await;
        assert!(matches!(reason, CloseReason::Abandoned), "{reason:?}");
        assert!(client.is_closed());
        let late = within(PROMPT, "a late call fails", client.request("hang", "y")).await;
        assert!(matches!(late, Err(Error::Closed(_))), "{late:?}");
    });
}
