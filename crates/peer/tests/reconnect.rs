//! The reconnecting client against a real TCP server that stops and comes
//! back on the same port, and against an in-memory "server" on paused time.

mod common;

use std::{
    net::SocketAddr,
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use bytes::Bytes;
use common::{WAIT, eventually, quiet, within};
use futures::StreamExt;
use gotalk_peer::{
    CloseReason, Config, ConnectError, Error, HandlerError, Handlers, Peer, ReconnectingPeer,
    RequestOptions, Server, ServerHandle, Unavailable,
    reconnect::{Backoff, Event, ReconnectOptions, State, WhenDisconnected},
};
use tokio::{sync::broadcast, time::Instant};

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// Quick reconnects, no jitter: the tests wait tens of milliseconds.
fn fast() -> ReconnectOptions {
    ReconnectOptions {
        backoff: Backoff {
            initial: ms(20),
            max: ms(80),
            multiplier: 2.0,
            jitter: 0.0,
        },
        queue_timeout: WAIT,
        ..ReconnectOptions::default()
    }
}

/// The server's handlers, with counters shared by every incarnation of the
/// server so that a test sees what each one ran.
#[derive(Clone, Default)]
struct Counters {
    /// `hang` calls: never answered.
    hang: Arc<AtomicUsize>,
    /// `once`: the first call is never answered, the later ones are.
    once: Arc<AtomicUsize>,
    /// `count`: calls run.
    count: Arc<AtomicUsize>,
    /// A `gated` call waits for a notification.
    gate: Arc<tokio::sync::Notify>,
}

impl Counters {
    fn handlers(&self) -> Handlers {
        let hang = self.hang.clone();
        let once = self.once.clone();
        let count = self.count.clone();
        let gate = self.gate.clone();
        Handlers::new()
            .buffer("count", move |_ctx, payload: Bytes| {
                count.fetch_add(1, Ordering::SeqCst);
                async move { Ok::<_, HandlerError>(payload) }
            })
            .buffer("gated", move |_ctx, payload: Bytes| {
                let gate = gate.clone();
                async move {
                    gate.notified().await;
                    Ok::<_, HandlerError>(payload)
                }
            })
            .buffer("echo", |_ctx, payload: Bytes| async move {
                Ok::<_, HandlerError>(payload)
            })
            .buffer("hang", move |_ctx, _| {
                hang.fetch_add(1, Ordering::SeqCst);
                async move {
                    futures::future::pending::<()>().await;
                    Ok::<_, HandlerError>(Bytes::new())
                }
            })
            .buffer("once", move |_ctx, _| {
                let n = once.fetch_add(1, Ordering::SeqCst);
                async move {
                    if n == 0 {
                        futures::future::pending::<()>().await;
                    }
                    Ok::<_, HandlerError>(Bytes::from_static(b"done"))
                }
            })
            .buffer("login", |ctx, token: Bytes| async move {
                ctx.peer().set_user_data(token);
                Ok::<_, HandlerError>(Bytes::new())
            })
            .buffer("whoami", |ctx, _| async move {
                Ok::<_, HandlerError>(
                    ctx.peer()
                        .user_data::<Bytes>()
                        .map(|t| (*t).clone())
                        .unwrap_or_default(),
                )
            })
            .stream("upper", |_ctx, mut parts, mut results| async move {
                while let Some(part) = parts.next().await {
                    let part = part.map_err(|e| HandlerError::new(e.to_string()))?;
                    results
                        .send(part.to_ascii_uppercase())
                        .await
                        .map_err(|e| HandlerError::new(e.to_string()))?;
                }
                Ok::<_, HandlerError>(())
            })
    }
}

/// A server config that closes quickly: a graceful shutdown gives hanging
/// handlers 100 ms.
fn server_config() -> Config {
    Config {
        close_timeout: ms(100),
        ..quiet()
    }
}

/// Serves `handlers` on 127.0.0.1:`port`, retrying the bind briefly while
/// the port is still held by the server before.
async fn serve_on(port: u16, handlers: Handlers) -> ServerHandle {
    let deadline = Instant::now() + WAIT;
    loop {
        match Server::bind(("127.0.0.1", port), handlers.clone(), server_config()).await {
            Ok(server) => return server.spawn(),
            Err(e) if Instant::now() < deadline => {
                tracing::debug!(error = %e, port, "bind again");
                tokio::time::sleep(ms(10)).await;
            }
            Err(e) => panic!("cannot bind 127.0.0.1:{port} again: {e}"),
        }
    }
}

/// A server on an ephemeral port.
async fn serve(handlers: Handlers) -> (ServerHandle, u16) {
    let server = serve_on(0, handlers).await;
    let port = server
        .local_addr()
        .to_string()
        .parse::<SocketAddr>()
        .expect("a TCP address")
        .port();
    (server, port)
}

/// A loopback port with nothing listening on it (bound, then released).
fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    listener.local_addr().expect("local addr").port()
}

fn client(port: u16, options: ReconnectOptions) -> ReconnectingPeer {
    ReconnectingPeer::tcp(
        format!("127.0.0.1:{port}"),
        Handlers::new(),
        quiet(),
        options,
    )
}

/// Waits for a state matching `pred`.
async fn wait_state(client: &ReconnectingPeer, what: &str, pred: impl Fn(&State) -> bool) {
    let mut state = client.watch_state();
    within(WAIT, what, state.wait_for(|s| pred(s)))
        .await
        .expect("the client is alive");
}

/// The events received so far.
fn drain(events: &mut broadcast::Receiver<Event>) -> Vec<Event> {
    let mut out = Vec::new();
    while let Ok(e) = events.try_recv() {
        out.push(e);
    }
    out
}

/// The states among `events`, in order.
fn states(events: &[Event]) -> Vec<State> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::State(s) => Some(*s),
            _ => None,
        })
        .collect()
}

#[tokio::test]
async fn calls_queued_while_down_complete_once_the_server_is_back() {
    let counters = Counters::default();
    let (server, port) = serve(counters.handlers()).await;
    // Every loss starts the backoff over, so the attempts count from 1.
    let options = ReconnectOptions {
        reset_after: Duration::ZERO,
        ..fast()
    };
    let client = client(port, options);
    within(WAIT, "first connection", client.connected())
        .await
        .unwrap();
    let mut events = client.events();

    server.shutdown().await;
    wait_state(&client, "backing off", |s| {
        matches!(s, State::BackingOff { .. })
    })
    .await;
    let calls: Vec<_> = (0..3)
        .map(|i| {
            let client = client.clone();
            tokio::spawn(async move { client.request("echo", format!("call {i}")).await })
        })
        .collect();
    eventually(WAIT, "three calls queued", || client.queued() == 3).await;
    // Down for a few attempts.
    tokio::time::sleep(ms(100)).await;
    assert!(calls.iter().all(|c| !c.is_finished()), "they wait");

    let server = serve_on(port, counters.handlers()).await;
    for (i, call) in calls.into_iter().enumerate() {
        let answer = within(WAIT, "queued call", call).await.unwrap().unwrap();
        assert_eq!(answer, format!("call {i}"));
    }
    assert_eq!(client.queued(), 0);

    // Connected → BackingOff → Connecting → … → Connected, with the reason
    // and the failed attempts reported on the way.
    let seen = drain(&mut events);
    let states = states(&seen);
    assert!(
        matches!(states.first(), Some(State::BackingOff { attempt: 1, .. })),
        "{states:?}"
    );
    assert!(
        matches!(states[1], State::Connecting { attempt: 1 }),
        "{states:?}"
    );
    assert_eq!(states.last(), Some(&State::Connected), "{states:?}");
    assert!(
        matches!(seen.first(), Some(Event::Disconnected(_))),
        "the reason comes first: {seen:?}"
    );
    assert!(
        seen.iter()
            .any(|e| matches!(e, Event::ConnectFailed { .. })),
        "attempts failed while the server was down: {seen:?}"
    );
    // Attempts while down were numbered up from 1.
    let attempts: Vec<u32> = states
        .iter()
        .filter_map(|s| match s {
            State::Connecting { attempt } => Some(*attempt),
            _ => None,
        })
        .collect();
    assert!(attempts.len() >= 2, "{attempts:?}");
    assert!(
        attempts.iter().enumerate().all(|(i, a)| *a == i as u32 + 1),
        "{attempts:?}"
    );

    // Every call of the API goes out on the new connection.
    let (mut parts, results) = client.stream_request("upper").await.unwrap();
    parts.send("abc").await.unwrap();
    parts.end().await.unwrap();
    assert_eq!(results.collect_bytes(64).await.unwrap(), "ABC");
    client.notify("nobody-listens", "x").await.unwrap();
    let echoed: Vec<u32> = client.request_json("echo", &[1, 2]).await.unwrap();
    assert_eq!(echoed, [1, 2]);

    client.close().await;
    server.shutdown().await;
}

#[tokio::test]
async fn a_request_in_flight_fails_with_the_close_reason_and_is_not_sent_again() {
    let counters = Counters::default();
    let (server, port) = serve(counters.handlers()).await;
    let client = client(port, fast());
    within(WAIT, "connected", client.connected()).await.unwrap();
    let mut events = client.events();

    let call = tokio::spawn({
        let client = client.clone();
        async move { client.request("hang", "").await }
    });
    eventually(WAIT, "the server runs it", || {
        counters.hang.load(Ordering::SeqCst) == 1
    })
    .await;
    server.shutdown().await;

    let err = within(WAIT, "the call fails", call)
        .await
        .unwrap()
        .unwrap_err();
    let Error::Closed(reason) = err else {
        panic!("not a close: {err:?}");
    };
    let lost = loop {
        if let Event::Disconnected(r) = within(WAIT, "disconnect event", events.recv())
            .await
            .unwrap()
        {
            break r;
        }
    };
    assert_eq!(
        reason.to_string(),
        lost.to_string(),
        "the connection's reason"
    );
    assert!(!matches!(reason, CloseReason::Local), "{reason}");

    // Back, and working: the failed call was not sent again.
    let server = serve_on(port, counters.handlers()).await;
    assert_eq!(
        within(
            WAIT,
            "a call after the restart",
            client.request("echo", "x")
        )
        .await
        .unwrap(),
        "x"
    );
    tokio::time::sleep(ms(50)).await;
    assert_eq!(counters.hang.load(Ordering::SeqCst), 1, "sent exactly once");

    client.close().await;
    server.shutdown().await;
}

#[tokio::test]
async fn an_idempotent_request_is_sent_again_once_on_the_next_connection() {
    let counters = Counters::default();
    let (server, port) = serve(counters.handlers()).await;
    let client = client(port, fast());
    within(WAIT, "connected", client.connected()).await.unwrap();

    // Sent again after the restart, answered there.
    let call = tokio::spawn({
        let client = client.clone();
        async move { client.request_idempotent("once", "").await }
    });
    eventually(WAIT, "the first server runs it", || {
        counters.once.load(Ordering::SeqCst) == 1
    })
    .await;
    server.shutdown().await;
    tokio::time::sleep(ms(50)).await;
    assert!(!call.is_finished(), "it waits for the next connection");
    let server = serve_on(port, counters.handlers()).await;
    let answer = within(WAIT, "the second sending", call)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(answer, "done");
    assert_eq!(
        counters.once.load(Ordering::SeqCst),
        2,
        "sent twice, no more"
    );

    // Only once more: lost twice, it fails.
    let call = tokio::spawn({
        let client = client.clone();
        let options = RequestOptions {
            retry_on_disconnect: true,
            ..RequestOptions::default()
        };
        async move { client.request_with("hang", "", options).await }
    });
    eventually(WAIT, "first sending", || {
        counters.hang.load(Ordering::SeqCst) == 1
    })
    .await;
    server.shutdown().await;
    let server = serve_on(port, counters.handlers()).await;
    eventually(WAIT, "second sending", || {
        counters.hang.load(Ordering::SeqCst) == 2
    })
    .await;
    server.shutdown().await;
    let err = within(WAIT, "the call fails", call)
        .await
        .unwrap()
        .unwrap_err();
    assert!(matches!(err, Error::Closed(_)), "{err:?}");
    let server = serve_on(port, counters.handlers()).await;
    within(WAIT, "reconnected", client.connected())
        .await
        .unwrap();
    tokio::time::sleep(ms(50)).await;
    assert_eq!(counters.hang.load(Ordering::SeqCst), 2, "not a third time");

    client.close().await;
    server.shutdown().await;
}

/// A server shutting down refuses new calls with `connection closing`: such
/// a call did not run, so it goes to the next connection although it is not
/// idempotent, and runs there exactly once.
#[tokio::test]
async fn a_call_refused_by_a_closing_server_runs_once_on_the_next_connection() {
    let counters = Counters::default();
    // A long close timeout: the old connection stays in its closing state
    // until the test lets its last handler finish.
    let config = Config {
        close_timeout: WAIT,
        ..quiet()
    };
    let server = Server::bind(("127.0.0.1", 0), counters.handlers(), config)
        .await
        .unwrap()
        .spawn();
    let port = server
        .local_addr()
        .to_string()
        .parse::<SocketAddr>()
        .unwrap()
        .port();
    let client = client(port, fast());
    within(WAIT, "connected", client.connected()).await.unwrap();
    let held = tokio::spawn({
        let client = client.clone();
        async move { client.request("gated", "held").await }
    });
    let old = client.current().expect("connected");
    eventually(WAIT, "the gated call runs", || old.pending_requests() == 1).await;
    let shutdown = tokio::spawn(server.shutdown());
    // The server refuses new calls once its close has begun.
    let once = RequestOptions {
        max_attempts: Some(1),
        ..RequestOptions::default()
    };
    let refusal = loop {
        match old.request_with("echo", "probe", once).await {
            Ok(_) => tokio::time::sleep(ms(5)).await,
            Err(e) => break e,
        }
    };
    assert!(refusal.is_refused_by_closing(), "{refusal:?}");

    let call = tokio::spawn({
        let client = client.clone();
        async move { client.request("count", "x").await }
    });
    // Refused, it waits for the old connection to go instead of failing.
    tokio::time::sleep(ms(100)).await;
    assert!(!call.is_finished(), "{:?}", call.await);
    assert_eq!(counters.count.load(Ordering::SeqCst), 0);

    counters.gate.notify_one();
    assert_eq!(
        within(WAIT, "the held call", held).await.unwrap().unwrap(),
        "held"
    );
    within(WAIT, "the old server stops", shutdown)
        .await
        .unwrap();
    let server = serve_on(port, counters.handlers()).await;
    assert_eq!(
        within(WAIT, "the refused call", call)
            .await
            .unwrap()
            .unwrap(),
        "x"
    );
    assert_eq!(counters.count.load(Ordering::SeqCst), 1, "run exactly once");

    client.close().await;
    server.shutdown().await;
}

#[tokio::test]
async fn fail_fast_fails_at_once_while_down() {
    let port = free_port();
    let client = client(
        port,
        ReconnectOptions {
            when_disconnected: WhenDisconnected::FailFast,
            ..fast()
        },
    );
    let started = Instant::now();
    let err = client.request("echo", "x").await.unwrap_err();
    assert!(
        matches!(err, Error::Unavailable(Unavailable::NotConnected)),
        "{err:?}"
    );
    assert!(err.is_connection());
    let err = client.notify("n", "x").await.unwrap_err();
    assert!(
        matches!(err, Error::Unavailable(Unavailable::NotConnected)),
        "{err:?}"
    );
    assert!(
        started.elapsed() < ms(500),
        "at once: {:?}",
        started.elapsed()
    );
    assert_eq!(client.queued(), 0);

    // Once the server is there, calls go through.
    let server = serve_on(port, Counters::default().handlers()).await;
    within(WAIT, "connected", client.connected()).await.unwrap();
    assert_eq!(client.request("echo", "x").await.unwrap(), "x");
    client.close().await;
    server.shutdown().await;
}

#[tokio::test]
async fn the_queue_is_bounded_in_size_and_in_time() {
    let port = free_port();
    let client = client(
        port,
        ReconnectOptions {
            max_queued: 2,
            queue_timeout: ms(300),
            ..fast()
        },
    );
    let started = Instant::now();
    let waiting: Vec<_> = (0..2)
        .map(|_| {
            let client = client.clone();
            tokio::spawn(async move { client.request("echo", "x").await })
        })
        .collect();
    eventually(WAIT, "two calls queued", || client.queued() == 2).await;
    let err = client.request("echo", "x").await.unwrap_err();
    assert!(
        matches!(err, Error::Unavailable(Unavailable::QueueFull { limit: 2 })),
        "{err:?}"
    );
    for call in waiting {
        let err = within(WAIT, "queued call", call)
            .await
            .unwrap()
            .unwrap_err();
        assert!(
            matches!(err, Error::Unavailable(Unavailable::QueueTimeout { waited }) if waited == ms(300)),
            "{err:?}"
        );
    }
    assert!(started.elapsed() >= ms(300), "{:?}", started.elapsed());
    assert_eq!(client.queued(), 0, "their places are given back");

    // A call's own timeout counts the wait too.
    let short = RequestOptions {
        timeout: Some(ms(50)),
        ..RequestOptions::default()
    };
    let err = client.request_with("echo", "x", short).await.unwrap_err();
    assert!(matches!(err, Error::Timeout), "{err:?}");
    client.close().await;
}

#[tokio::test]
async fn close_fails_queued_calls_and_stops_reconnecting() {
    let port = free_port();
    let connects = Arc::new(AtomicUsize::new(0));
    let client = ReconnectingPeer::new(
        {
            let connects = connects.clone();
            move || {
                connects.fetch_add(1, Ordering::SeqCst);
                Peer::connect(("127.0.0.1", port), Handlers::new(), quiet())
            }
        },
        fast(),
    );
    let queued: Vec<_> = (0..2)
        .map(|_| {
            let client = client.clone();
            tokio::spawn(async move { client.request("echo", "x").await })
        })
        .collect();
    eventually(WAIT, "calls queued", || client.queued() == 2).await;
    eventually(WAIT, "a few attempts", || {
        connects.load(Ordering::SeqCst) >= 2
    })
    .await;

    within(WAIT, "close", client.close()).await;
    assert_eq!(client.state(), State::Closed);
    assert!(client.is_closed());
    for call in queued {
        let err = within(WAIT, "queued call", call)
            .await
            .unwrap()
            .unwrap_err();
        assert!(matches!(err, Error::Closed(CloseReason::Local)), "{err:?}");
    }
    let attempts = connects.load(Ordering::SeqCst);

    // The server comes back: nobody connects to it.
    let server = serve_on(port, Counters::default().handlers()).await;
    tokio::time::sleep(ms(200)).await;
    assert_eq!(
        connects.load(Ordering::SeqCst),
        attempts,
        "no attempt after close"
    );
    assert_eq!(server.connection_count(), 0);
    let err = client.request("echo", "x").await.unwrap_err();
    assert!(matches!(err, Error::Closed(CloseReason::Local)), "{err:?}");
    assert!(client.connected().await.is_err());
    server.shutdown().await;
}

#[tokio::test]
async fn close_while_connected_closes_the_connection() {
    let counters = Counters::default();
    let (server, port) = serve(counters.handlers()).await;
    let client = client(port, fast());
    let peer = within(WAIT, "connected", client.connected()).await.unwrap();
    eventually(WAIT, "server sees it", || server.connection_count() == 1).await;
    within(WAIT, "close", client.close()).await;
    assert!(peer.is_closed());
    assert!(client.current().is_none());
    eventually(WAIT, "server lets go", || server.connection_count() == 0).await;
    tokio::time::sleep(ms(100)).await;
    assert_eq!(server.connection_count(), 0, "no reconnect");
    server.shutdown().await;
}

#[tokio::test]
async fn dropping_the_last_handle_stops_the_client() {
    let counters = Counters::default();
    let (server, port) = serve(counters.handlers()).await;
    let client = client(port, fast());
    let peer = within(WAIT, "connected", client.connected()).await.unwrap();
    let state = client.watch_state();
    drop(client);
    let mut state = state;
    within(WAIT, "closed", state.wait_for(|s| s.is_closed()))
        .await
        .unwrap();
    within(WAIT, "the connection closes", peer.closed()).await;
    server.shutdown().await;
}

#[tokio::test]
async fn the_connect_function_runs_for_every_connection() {
    let counters = Counters::default();
    let (server, port) = serve(counters.handlers()).await;
    // A token provider: every connection logs in with a new token.
    let tokens = Arc::new(AtomicUsize::new(0));
    let client = ReconnectingPeer::new(
        {
            let tokens = tokens.clone();
            move || {
                let token = tokens.fetch_add(1, Ordering::SeqCst) + 1;
                async move {
                    let peer = Peer::connect(("127.0.0.1", port), Handlers::new(), quiet()).await?;
                    peer.request("login", format!("token-{token}"))
                        .await
                        .map_err(|e| ConnectError::Io(std::io::Error::other(e.to_string())))?;
                    Ok(peer)
                }
            }
        },
        fast(),
    );
    assert_eq!(client.request("whoami", "").await.unwrap(), "token-1");
    let mut events = client.events();

    server.shutdown().await;
    wait_state(&client, "backing off", |s| {
        matches!(s, State::BackingOff { .. })
    })
    .await;
    tokio::time::sleep(ms(60)).await;
    let server = serve_on(port, counters.handlers()).await;
    let token = within(WAIT, "whoami", client.request("whoami", ""))
        .await
        .unwrap();
    let calls = tokens.load(Ordering::SeqCst);
    assert!(calls >= 2, "{calls}");
    assert_eq!(token, format!("token-{calls}"), "the last call's token");
    let connecting = states(&drain(&mut events))
        .into_iter()
        .filter(|s| matches!(s, State::Connecting { .. }))
        .count();
    assert_eq!(
        connecting,
        calls - 1,
        "one call per attempt since the first"
    );
    client.close().await;
    server.shutdown().await;
}

/// An in-memory server that can be up or down, for paused time: the
/// connect function fails while it is down, and pairs the client with the
/// server's handlers while it is up.
#[derive(Clone)]
struct MemoryServer {
    up: Arc<Mutex<Option<Handlers>>>,
    connects: Arc<Mutex<Vec<Instant>>>,
    far_ends: Arc<Mutex<Vec<Peer>>>,
}

impl MemoryServer {
    fn new() -> Self {
        Self {
            up: Arc::new(Mutex::new(None)),
            connects: Arc::default(),
            far_ends: Arc::default(),
        }
    }

    fn start(&self, handlers: Handlers) {
        *self.up.lock().unwrap() = Some(handlers);
    }

    /// Stops accepting and drops every connection.
    fn stop(&self) {
        self.up.lock().unwrap().take();
        for far in self.far_ends.lock().unwrap().drain(..) {
            far.abort();
        }
    }

    fn client(&self, options: ReconnectOptions) -> ReconnectingPeer {
        let server = self.clone();
        ReconnectingPeer::new(
            move || {
                let server = server.clone();
                async move {
                    server.connects.lock().unwrap().push(Instant::now());
                    let Some(handlers) = server.up.lock().unwrap().clone() else {
                        return Err(ConnectError::Io(
                            std::io::ErrorKind::ConnectionRefused.into(),
                        ));
                    };
                    let (near, far) = Peer::pair(Handlers::new(), handlers, quiet()).await?;
                    server.far_ends.lock().unwrap().push(far);
                    Ok(near)
                }
            },
            options,
        )
    }
}

#[tokio::test(start_paused = true)]
async fn on_paused_time_the_backoff_grows_caps_and_starts_over() {
    let server = MemoryServer::new();
    server.start(Counters::default().handlers());
    let client = server.client(ReconnectOptions {
        backoff: Backoff {
            initial: ms(500),
            max: ms(5000),
            multiplier: 2.0,
            jitter: 0.0,
        },
        reset_after: ms(10_000),
        queue_timeout: ms(60_000),
        ..ReconnectOptions::default()
    });
    within(WAIT, "connected", client.connected()).await.unwrap();
    // Long enough to count as a success.
    tokio::time::sleep(ms(10_000)).await;

    server.stop();
    wait_state(&client, "backing off", |s| {
        matches!(s, State::BackingOff { .. })
    })
    .await;
    let call = tokio::spawn({
        let client = client.clone();
        async move { client.request("echo", "queued").await }
    });
    while server.connects.lock().unwrap().len() < 7 {
        tokio::time::sleep(ms(100)).await;
    }
    let lost_at = {
        let connects = server.connects.lock().unwrap();
        let gaps: Vec<_> = connects[1..7].windows(2).map(|w| w[1] - w[0]).collect();
        assert_eq!(
            gaps,
            [1000, 2000, 4000, 5000, 5000].map(ms),
            "the browser client's schedule"
        );
        connects[1] - ms(500)
    };
    assert!(!call.is_finished());

    server.start(Counters::default().handlers());
    assert_eq!(call.await.unwrap().unwrap(), "queued");
    // The queued call went out on the 8th attempt, at most 5 s after the
    // server came back.
    let connects = server.connects.lock().unwrap().clone();
    assert_eq!(connects.len(), 8);
    assert_eq!(connects[7] - connects[6], ms(5000));
    assert!(connects[7] - lost_at > ms(17_000));

    // It lived long enough: the next loss starts over at 500 ms.
    tokio::time::sleep(ms(10_000)).await;
    let mut state = client.watch_state();
    server.stop();
    let s = *state
        .wait_for(|s| matches!(s, State::BackingOff { .. }))
        .await
        .unwrap();
    let State::BackingOff { until, attempt } = s else {
        unreachable!()
    };
    assert_eq!(attempt, 1);
    assert_eq!(until - Instant::now(), ms(500));
    client.close().await;
}

/// The same over WebSocket, with the client built from a `ws://` URL.
#[cfg(feature = "websocket")]
#[tokio::test]
async fn over_websocket_queued_calls_complete_after_a_restart() {
    use gotalk_peer::ws::{WsClientConfig, WsConfig, WsListener};

    async fn ws_serve_on(port: u16, handlers: Handlers) -> ServerHandle {
        let deadline = Instant::now() + WAIT;
        loop {
            match WsListener::bind(("127.0.0.1", port), WsConfig::default()).await {
                Ok(listener) => return Server::new(listener, handlers, server_config()).spawn(),
                Err(e) if Instant::now() < deadline => {
                    tracing::debug!(error = %e, port, "bind again");
                    tokio::time::sleep(ms(10)).await;
                }
                Err(e) => panic!("cannot bind 127.0.0.1:{port} again: {e}"),
            }
        }
    }

    let counters = Counters::default();
    let server = ws_serve_on(0, counters.handlers()).await;
    let url = server.local_addr().to_string();
    assert!(url.starts_with("ws://"), "{url}");
    let port = url
        .trim_start_matches("ws://")
        .split('/')
        .next()
        .and_then(|a| a.parse::<SocketAddr>().ok())
        .expect("host:port in the URL")
        .port();
    let client = ReconnectingPeer::ws(
        url,
        Handlers::new(),
        quiet(),
        WsClientConfig::default(),
        fast(),
    );
    assert_eq!(
        within(WAIT, "first call", client.request("echo", "a"))
            .await
            .unwrap(),
        "a"
    );
    server.shutdown().await;
    wait_state(&client, "backing off", |s| {
        matches!(s, State::BackingOff { .. })
    })
    .await;
    let call = tokio::spawn({
        let client = client.clone();
        async move { client.request("echo", "b").await }
    });
    eventually(WAIT, "queued", || client.queued() == 1).await;
    let server = ws_serve_on(port, counters.handlers()).await;
    assert_eq!(
        within(WAIT, "queued call", call).await.unwrap().unwrap(),
        "b"
    );
    client.close().await;
    server.shutdown().await;
}
