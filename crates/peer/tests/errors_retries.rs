//! Error and retry results, limits that produce retries, deadlines and
//! cancellation, and handlers that panic.

mod common;

use std::{
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use bytes::Bytes;
use common::{Raw, TRANSPORTS, Transport, WAIT, connect, eventually, id, quiet, within};
use futures::{StreamExt, future::join_all};
use gotalk_peer::{
    Config, Error, HandlerError, Handlers, RequestOptions,
    proto::{Message, Text},
};
use tokio::sync::Semaphore;

/// `flaky` answers with a retry result (`wait`) its first `fails` calls.
fn flaky(fails: usize, wait: Duration, calls: Arc<AtomicUsize>) -> Handlers {
    Handlers::new().buffer("flaky", move |_ctx, p: Bytes| {
        let n = calls.fetch_add(1, Ordering::SeqCst);
        async move {
            if n < fails {
                Err(HandlerError::retry(wait, "busy"))
            } else {
                Ok::<_, HandlerError>(Bytes::from(format!("{} after {n}", p.escape_ascii())))
            }
        }
    })
}

async fn flaky_conn(
    transport: Transport,
    fails: usize,
    wait: Duration,
    client_config: gotalk_peer::Config,
) -> (common::Conn, Arc<AtomicUsize>) {
    let calls = Arc::new(AtomicUsize::new(0));
    let conn = connect(
        transport,
        Handlers::new(),
        flaky(fails, wait, calls.clone()),
        client_config,
        quiet(),
    )
    .await;
    (conn, calls)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_results_are_retried_after_their_wait() {
    for transport in TRANSPORTS {
        let wait = Duration::from_millis(50);
        let (conn, calls) = flaky_conn(transport, 2, wait, quiet()).await;
        let start = Instant::now();
        let got = conn.client.request("flaky", "x").await.unwrap();
        let elapsed = start.elapsed();
        assert_eq!(got, "x after 2", "{transport:?}");
        assert_eq!(calls.load(Ordering::SeqCst), 3);
        assert!(
            elapsed >= 2 * wait,
            "{transport:?}: retried after {elapsed:?}, before 2 x {wait:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_exhausted_is_a_clear_error() {
    for transport in TRANSPORTS {
        let wait = Duration::from_millis(20);
        let (conn, calls) = flaky_conn(transport, usize::MAX, wait, quiet()).await;
        let start = Instant::now();
        let err = conn.client.request("flaky", "x").await.unwrap_err();
        let elapsed = start.elapsed();
        match &err {
            Error::RetryExhausted {
                attempts,
                wait: last_wait,
                message,
            } => {
                // Config::default().max_attempts
                assert_eq!(*attempts, 3, "{transport:?}");
                assert_eq!(*last_wait, wait);
                assert_eq!(message, "busy");
            }
            other => panic!("{transport:?}: expected RetryExhausted, got {other:?}"),
        }
        assert!(err.to_string().contains("3 attempts"), "{err}");
        assert_eq!(calls.load(Ordering::SeqCst), 3);
        // Two waits between three attempts; none after the last.
        assert!(elapsed >= 2 * wait, "{elapsed:?}");
        assert_eq!(conn.client.pending_requests(), 0);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_attempts_per_call_and_per_connection() {
    let wait = Duration::from_millis(5);
    // Per call: 5 attempts cover 4 retry results.
    let (conn, calls) = flaky_conn(Transport::Memory, 4, wait, quiet()).await;
    let five = RequestOptions {
        max_attempts: Some(5),
        ..RequestOptions::default()
    };
    let got = conn.client.request_with("flaky", "y", five).await.unwrap();
    assert_eq!(got, "y after 4");
    assert_eq!(calls.load(Ordering::SeqCst), 5);

    // Per call: one attempt means no retry at all.
    let (conn, calls) = flaky_conn(Transport::Tcp, 1, wait, quiet()).await;
    let once = RequestOptions {
        max_attempts: Some(1),
        ..RequestOptions::default()
    };
    let err = conn
        .client
        .request_with("flaky", "", once)
        .await
        .unwrap_err();
    assert!(
        matches!(err, Error::RetryExhausted { attempts: 1, .. }),
        "{err:?}"
    );
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    // ... and 0 is taken as 1, not as "never send".
    let zero = RequestOptions {
        max_attempts: Some(0),
        ..RequestOptions::default()
    };
    assert_eq!(
        conn.client.request_with("flaky", "z", zero).await.unwrap(),
        "z after 1"
    );

    // Per connection.
    let config = Config {
        max_attempts: 2,
        ..quiet()
    };
    let (conn, calls) = flaky_conn(Transport::Memory, usize::MAX, wait, config).await;
    let err = conn.client.request("flaky", "").await.unwrap_err();
    assert!(
        matches!(err, Error::RetryExhausted { attempts: 2, .. }),
        "{err:?}"
    );
    assert_eq!(calls.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn retry_with_zero_wait_uses_the_doubling_backoff() {
    let config = Config {
        retry_backoff: Duration::from_millis(40),
        ..quiet()
    };
    let (conn, calls) = flaky_conn(Transport::Memory, 2, Duration::ZERO, config).await;
    let start = Instant::now();
    assert_eq!(
        conn.client.request("flaky", "b").await.unwrap(),
        "b after 2"
    );
    let elapsed = start.elapsed();
    assert_eq!(calls.load(Ordering::SeqCst), 3);
    // 40 ms, then 80 ms.
    assert!(elapsed >= Duration::from_millis(120), "{elapsed:?}");
}

#[tokio::test]
async fn deadline_covers_the_retries() {
    let (conn, calls) = flaky_conn(
        Transport::Memory,
        usize::MAX,
        Duration::from_millis(30),
        quiet(),
    )
    .await;
    let options = RequestOptions {
        timeout: Some(Duration::from_millis(100)),
        max_attempts: Some(1000),
        ..RequestOptions::default()
    };
    let start = Instant::now();
    let err = conn
        .client
        .request_with("flaky", "", options)
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Timeout), "{err:?}");
    assert!(start.elapsed() >= Duration::from_millis(100));
    assert!(start.elapsed() < Duration::from_secs(2));
    let n = calls.load(Ordering::SeqCst);
    assert!(
        (2..=5).contains(&n),
        "{n} attempts in 100 ms with 30 ms waits"
    );
}

/// For a peer that cannot take retry results (gotalk.js), a handler's retry
/// becomes an error result with the same message.
#[tokio::test]
async fn retry_becomes_error_for_peers_without_retry_support() {
    let calls = Arc::new(AtomicUsize::new(0));
    let server_config = Config {
        remote_retry_results: false,
        ..quiet()
    };
    let conn = connect(
        Transport::Memory,
        Handlers::new(),
        flaky(1, Duration::from_millis(5), calls.clone()),
        quiet(),
        server_config,
    )
    .await;
    let err = conn.client.request("flaky", "").await.unwrap_err();
    assert_eq!(err.remote().expect("error result").message(), "busy");
    assert_eq!(calls.load(Ordering::SeqCst), 1);
}

fn failing() -> Handlers {
    Handlers::new()
        .buffer("fail", |_ctx, _p: Bytes| async move {
            Err::<Bytes, _>(HandlerError::new("it failed"))
        })
        .buffer("fail-binary", |_ctx, _p: Bytes| async move {
            Err::<Bytes, _>(HandlerError::with_payload(vec![0u8, 0xff, b'\n']))
        })
        .json("add", |_ctx, (a, b): (i64, i64)| async move {
            Ok::<_, HandlerError>(a + b)
        })
}

#[tokio::test]
async fn error_results_carry_the_remote_message() {
    for transport in TRANSPORTS {
        let conn = connect(transport, Handlers::new(), failing(), quiet(), quiet()).await;
        let err = conn.client.request("fail", "").await.unwrap_err();
        assert_eq!(err.remote().unwrap().message(), "it failed");
        assert_eq!(err.to_string(), "remote error: it failed");
        let err = conn.client.request("fail-binary", "").await.unwrap_err();
        assert_eq!(&err.remote().unwrap().payload()[..], b"\x00\xff\n");
        let err = conn.client.request("add", "not json").await.unwrap_err();
        let msg = err.remote().expect("error result, not a panic").message();
        assert!(msg.starts_with("invalid input: "), "{msg}");
        let err = conn
            .client
            .request_json::<_, i64>("add", &("a", 1))
            .await
            .unwrap_err();
        assert!(err.remote().is_some(), "{err:?}");
        let err = conn.client.request("missing", "").await.unwrap_err();
        assert_eq!(
            err.remote().unwrap().message(),
            "unknown operation \"missing\""
        );
        assert_eq!(
            conn.client
                .request_json::<_, i64>("add", &(1, 2))
                .await
                .unwrap(),
            3
        );
        assert_eq!(conn.client.pending_requests(), 0);
    }
}

/// `gated` blocks until the test adds permits; counts handlers running.
struct Gated {
    gate: Arc<Semaphore>,
    running: Arc<AtomicUsize>,
    max_running: Arc<AtomicUsize>,
}

impl Gated {
    fn new(permits: usize) -> Self {
        Self {
            gate: Arc::new(Semaphore::new(permits)),
            running: Arc::new(AtomicUsize::new(0)),
            max_running: Arc::new(AtomicUsize::new(0)),
        }
    }

    fn handlers(&self) -> Handlers {
        let (gate, running, max_running) = (
            self.gate.clone(),
            self.running.clone(),
            self.max_running.clone(),
        );
        Handlers::new()
            .buffer("gated", move |_ctx, p: Bytes| {
                let (gate, running, max_running) =
                    (gate.clone(), running.clone(), max_running.clone());
                async move {
                    let now = running.fetch_add(1, Ordering::SeqCst) + 1;
                    max_running.fetch_max(now, Ordering::SeqCst);
                    gate.acquire().await.expect("gate open").forget();
                    running.fetch_sub(1, Ordering::SeqCst);
                    Ok::<_, HandlerError>(p)
                }
            })
            .buffer(
                "echo",
                |_ctx, p: Bytes| async move { Ok::<_, HandlerError>(p) },
            )
            .stream("hold", |_ctx, mut parts, mut out| async move {
                let mut n = 0;
                while let Some(part) = parts.next().await {
                    n += part?.len();
                }
                out.send(format!("held {n}")).await?;
                Ok::<_, HandlerError>(())
            })
    }
}

fn limited() -> Config {
    Config {
        max_inbound_requests: 2,
        max_inbound_streams: 1,
        rate_limit_wait: (Duration::from_millis(20), Duration::from_millis(40)),
        ..quiet()
    }
}

fn request(id_bytes: &[u8; 4], op: &'static str, payload: &'static str) -> Message {
    Message::SingleRequest {
        id: id(id_bytes),
        op: Text::from_static(op),
        payload: Bytes::from_static(payload.as_bytes()),
    }
}

/// Over the limit, a raw client sees the retry result on the wire.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_the_limit_the_raw_client_gets_retry_results() {
    let gated = Gated::new(0);
    let server = common::spawn_server(gated.handlers(), limited()).await;
    let mut raw = Raw::tcp_handshaken(server.local_addr().to_string()).await;
    for n in [b"0001", b"0002", b"0003"] {
        raw.send(&request(n, "gated", "g")).await;
    }
    // The third is refused at once, while the first two wait at the gate.
    let head = raw.read_exact(13).await;
    assert_eq!(&head[..5], b"e0003", "{head:?}");
    let wait_ms = u32::from_str_radix(std::str::from_utf8(&head[5..13]).unwrap(), 16).unwrap();
    assert!((20..=40).contains(&wait_ms), "wait {wait_ms} ms");
    raw.expect_bytes(b"00000012request rate limit").await;
    assert_eq!(gated.running.load(Ordering::SeqCst), 2);

    raw.send(&request(b"0004", "gated", "")).await; // still over the limit
    let msg = raw.expect_message().await;
    assert!(
        matches!(&msg, Message::RetryResult { id: i, payload, .. }
            if *i == id(b"0004") && payload == "request rate limit"),
        "{msg:?}"
    );

    gated.gate.add_permits(2);
    let mut answered = Vec::new();
    for _ in 0..2 {
        match raw.expect_message().await {
            Message::SingleResult { id, payload } => {
                assert_eq!(payload, "g");
                answered.push(id);
            }
            other => panic!("expected a result, got {other:?}"),
        }
    }
    answered.sort_by_key(|i| *i.as_bytes());
    assert_eq!(answered, vec![id(b"0001"), id(b"0002")]);

    // Stream requests have their own limit, one at a time here.
    raw.send(&Message::StreamRequest {
        id: id(b"s001"),
        op: Text::from_static("hold"),
        payload: Bytes::from_static(b"ab"),
    })
    .await;
    // `s001` is open (its requester has not ended it): a second stream is
    // over the stream limit. Its parts are dropped, not fatal.
    raw.send(&Message::StreamRequest {
        id: id(b"s002"),
        op: Text::from_static("hold"),
        payload: Bytes::new(),
    })
    .await;
    let msg = raw.expect_message().await;
    assert!(
        matches!(&msg, Message::RetryResult { id: i, payload, .. }
            if *i == id(b"s002") && payload == "stream rate limit"),
        "{msg:?}"
    );
    for payload in [&b"late part"[..], b""] {
        raw.send(&Message::StreamRequestPart {
            id: id(b"s002"),
            payload: Bytes::from_static(payload),
        })
        .await;
    }
    for payload in [&b"cd"[..], b""] {
        raw.send(&Message::StreamRequestPart {
            id: id(b"s001"),
            payload: Bytes::from_static(payload),
        })
        .await;
    }
    raw.expect_bytes(b"Ss00100000006held 4Ss00100000000").await;
    raw.send(&request(b"0003", "gated", "again")).await;
    gated.gate.add_permits(1);
    raw.expect_bytes(b"R000300000005again").await;
}

/// The `Peer` retries the refused requests on its own and they all succeed,
/// never more than the limit running at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_the_limit_peers_retry_until_served() {
    for transport in TRANSPORTS {
        let counters = Gated::new(0);
        let conn = connect(
            transport,
            Handlers::new(),
            counters.handlers(),
            quiet(),
            limited(),
        )
        .await;
        // Let handlers through one at a time, a little apart, so requests
        // keep arriving while the limit is reached.
        let opener = {
            let gate = counters.gate.clone();
            tokio::spawn(async move {
                for _ in 0..8 {
                    tokio::time::sleep(Duration::from_millis(15)).await;
                    gate.add_permits(1);
                }
            })
        };
        let options = RequestOptions {
            max_attempts: Some(100),
            ..RequestOptions::default()
        };
        let calls = (0..8).map(|i| {
            let client = conn.client.clone();
            async move {
                let payload = format!("r{i}");
                let got = client.request_with("gated", payload.clone(), options).await;
                assert_eq!(got.unwrap(), payload);
            }
        });
        within(WAIT, "8 requests through a limit of 2", join_all(calls)).await;
        opener.await.unwrap();
        assert_eq!(
            counters.max_running.load(Ordering::SeqCst),
            2,
            "{transport:?}"
        );
    }
}

/// Without retries, exactly the requests over the limit fail, with the
/// limit's message.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_the_limit_without_retries_the_excess_fails() {
    let counters = Gated::new(0);
    let conn = connect(
        Transport::Memory,
        Handlers::new(),
        counters.handlers(),
        quiet(),
        limited(),
    )
    .await;
    let once = RequestOptions {
        max_attempts: Some(1),
        ..RequestOptions::default()
    };
    let tasks: Vec<_> = (0..2)
        .map(|_| {
            let client = conn.client.clone();
            tokio::spawn(async move { client.request_with("gated", "in", once).await })
        })
        .collect();
    eventually(WAIT, "two handlers running", || {
        counters.running.load(Ordering::SeqCst) == 2
    })
    .await;
    for _ in 0..3 {
        let err = conn
            .client
            .request_with("echo", "", once)
            .await
            .unwrap_err();
        match err {
            Error::RetryExhausted {
                attempts: 1,
                wait,
                message,
            } => {
                assert_eq!(message, "request rate limit");
                assert!(
                    (Duration::from_millis(20)..=Duration::from_millis(40)).contains(&wait),
                    "{wait:?}"
                );
            }
            other => panic!("expected a rate limit, got {other:?}"),
        }
    }
    counters.gate.add_permits(2);
    for task in tasks {
        assert_eq!(task.await.unwrap().unwrap(), "in");
    }
    assert_eq!(
        conn.client.request_with("echo", "ok", once).await.unwrap(),
        "ok"
    );
}

#[tokio::test]
async fn stream_requests_disabled() {
    let config = Config {
        max_inbound_streams: 0,
        ..quiet()
    };
    let handlers = Gated::new(0).handlers();
    for transport in TRANSPORTS {
        let conn = connect(
            transport,
            Handlers::new(),
            handlers.clone(),
            quiet(),
            config.clone(),
        )
        .await;
        let (mut tx, mut rx) = conn.client.stream_request("hold").await.unwrap();
        // Parts sent before the refusal arrives are dropped by the server.
        tx.send("part").await.unwrap();
        tx.end().await.unwrap();
        let err = within(WAIT, "refusal", rx.next())
            .await
            .unwrap()
            .unwrap_err();
        assert_eq!(
            err.remote().expect("error result").message(),
            "stream requests not supported"
        );
        // A buffer request to the same stream handler is still served.
        assert_eq!(conn.client.request("hold", "abc").await.unwrap(), "held 3");
    }

    let server = common::spawn_server(handlers, config).await;
    let mut raw = Raw::tcp_handshaken(server.local_addr().to_string()).await;
    raw.send_bytes(b"s0001004hold00000002hi").await;
    raw.expect_bytes(b"E00010000001dstream requests not supported")
        .await;
    raw.send_bytes(b"p000100000002hip000100000000").await;
    raw.send_bytes(b"r0002004echo00000002ok").await;
    raw.expect_bytes(b"R000200000002ok").await;
}

#[tokio::test]
async fn deadlines_and_cancellation_forget_the_request() {
    let gated = Gated::new(0);
    let config = Config {
        request_timeout: Some(Duration::from_millis(50)),
        ..quiet()
    };
    for transport in TRANSPORTS {
        let conn = connect(
            transport,
            Handlers::new(),
            gated.handlers(),
            config.clone(),
            quiet(),
        )
        .await;
        // Connection-wide deadline.
        let start = Instant::now();
        let err = conn.client.request("gated", "late").await.unwrap_err();
        assert!(matches!(err, Error::Timeout), "{err:?}");
        assert!(start.elapsed() >= Duration::from_millis(50));
        assert_eq!(conn.client.pending_requests(), 0);
        // Per-call deadline overrides it.
        let options = RequestOptions {
            timeout: Some(Duration::from_millis(10)),
            ..RequestOptions::default()
        };
        let err = conn
            .client
            .request_with("gated", "late", options)
            .await
            .unwrap_err();
        assert!(matches!(err, Error::Timeout), "{err:?}");
        // Dropping the future forgets the request too.
        {
            let mut call = std::pin::pin!(conn.client.request("gated", "dropped"));
            let early = tokio::time::timeout(Duration::from_millis(20), call.as_mut()).await;
            assert!(early.is_err(), "{early:?}");
            assert_eq!(conn.client.pending_requests(), 1);
        }
        assert_eq!(conn.client.pending_requests(), 0);
        // The late results arrive and are dropped without harm.
        gated.gate.add_permits(3);
        eventually(WAIT, "handlers finish", || {
            gated.running.load(Ordering::SeqCst) == 0
        })
        .await;
        assert_eq!(conn.client.request("echo", "fine").await.unwrap(), "fine");
        assert!(!conn.client.is_closed());
    }
}

fn panicking() -> Handlers {
    Handlers::new()
        .buffer("panic", |_ctx, _p: Bytes| async move {
            if true {
                panic!("boom");
            }
            Ok::<Bytes, HandlerError>(Bytes::new())
        })
        // Panics after its first `.await`: in its own task by then, not on
        // the connection's.
        .buffer("panic-later", |_ctx, _p: Bytes| async move {
            tokio::task::yield_now().await;
            if true {
                panic!("later boom");
            }
            Ok::<Bytes, HandlerError>(Bytes::new())
        })
        .buffer("panic-any", |_ctx, _p: Bytes| async move {
            if true {
                std::panic::panic_any(42u32);
            }
            Ok::<Bytes, HandlerError>(Bytes::new())
        })
        .stream("stream-panic", |_ctx, mut parts, mut out| async move {
            let first = parts.next().await.transpose()?;
            out.send(first.unwrap_or_default()).await?;
            if true {
                panic!("stream boom");
            }
            Ok::<(), HandlerError>(())
        })
        .buffer(
            "echo",
            |_ctx, p: Bytes| async move { Ok::<_, HandlerError>(p) },
        )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn panicking_handlers_give_error_results_and_the_connection_lives() {
    for transport in TRANSPORTS {
        let conn = connect(transport, Handlers::new(), panicking(), quiet(), quiet()).await;
        let err = conn.client.request("panic", "").await.unwrap_err();
        assert_eq!(
            err.remote().expect("error result").message(),
            "internal error: handler for \"panic\" panicked"
        );
        let err = conn.client.request("panic-later", "").await.unwrap_err();
        assert_eq!(
            err.remote().expect("error result").message(),
            "internal error: handler for \"panic-later\" panicked"
        );
        let err = conn.client.request("panic-any", "").await.unwrap_err();
        assert!(err.remote().is_some(), "{err:?}");
        // A call that panicked leaves its (recycled) slot for the next call
        // of its handler: that one runs afresh, and panics afresh.
        for i in 0..3 {
            let err = conn.client.request("panic", "").await.unwrap_err();
            assert!(err.remote().is_some(), "{err:?}");
            let again = conn.client.request("echo", format!("{i}")).await.unwrap();
            assert_eq!(again, format!("{i}").as_bytes());
            assert_eq!(conn.client.request("echo", "x").await.unwrap(), "x");
        }
        // Many at once, mixed with good requests.
        let calls = (0..60).map(|i| {
            let client = conn.client.clone();
            async move {
                let op = ["panic", "echo", "panic-later"][i % 3];
                (op, client.request(op, format!("{i}")).await)
            }
        });
        for (op, result) in within(WAIT, "60 calls", join_all(calls)).await {
            match op {
                "echo" => assert!(result.is_ok()),
                _ => assert!(result.unwrap_err().remote().is_some()),
            }
        }
        // A stream handler that panics after one part: the part, then the
        // error; the parts the caller sends afterwards are dropped quietly.
        let (mut tx, mut rx) = conn.client.stream_request("stream-panic").await.unwrap();
        tx.send("first").await.unwrap();
        assert_eq!(rx.next().await.unwrap().unwrap(), "first");
        let err = within(WAIT, "stream error", rx.next())
            .await
            .unwrap()
            .unwrap_err();
        assert!(
            err.remote().unwrap().message().contains("panicked"),
            "{err}"
        );
        for i in 0..10 {
            tx.send(format!("after {i}")).await.unwrap();
        }
        tx.end().await.unwrap();
        assert_eq!(conn.client.request("echo", "alive").await.unwrap(), "alive");
        assert!(!conn.client.is_closed() && !conn.server.is_closed());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn panicking_notification_handlers_do_not_stop_reading() {
    let seen = Arc::new(AtomicUsize::new(0));
    let server = {
        let seen = seen.clone();
        panicking()
            .notification("bad", |_ctx, _p| async move { panic!("notification boom") })
            .notification("good", move |_ctx, _p| {
                let seen = seen.clone();
                async move {
                    seen.fetch_add(1, Ordering::SeqCst);
                }
            })
    };
    // One handler at a time: a permit lost to a panic would stall reading.
    let config = Config {
        max_concurrent_notifications: 1,
        ..quiet()
    };
    for transport in TRANSPORTS {
        seen.store(0, Ordering::SeqCst);
        let conn = connect(
            transport,
            Handlers::new(),
            server.clone(),
            quiet(),
            config.clone(),
        )
        .await;
        for _ in 0..5 {
            conn.client.notify("bad", "x").await.unwrap();
        }
        conn.client.notify("good", "y").await.unwrap();
        conn.client.notify("unknown", "z").await.unwrap();
        eventually(WAIT, "good notification handled", || {
            seen.load(Ordering::SeqCst) == 1
        })
        .await;
        assert_eq!(conn.client.request("echo", "alive").await.unwrap(), "alive");
        assert!(!conn.server.is_closed());
    }
}
