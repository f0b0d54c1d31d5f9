//! Every byte the connection holds for the peer is charged to its byte
//! budget (measured with the budget's own accounting), and handlers do not
//! outlive their connection or a process-wide cap.

use std::{
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use bytes::Bytes;
use futures::StreamExt;
use gotalk_peer::{Config, Error, HandlerError, HandlerLimit, Handlers, Peer, RequestOptions};
use tokio::{
    sync::{Semaphore, oneshot},
    time::{sleep, timeout},
};

const KIB: usize = 1024;

fn config() -> Config {
    Config {
        heartbeat_interval: None,
        write_timeout: None,
        ..Config::default()
    }
}

/// Waits (bounded, in virtual time) until `cond` holds.
async fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    for _ in 0..2000 {
        if cond() {
            return;
        }
        sleep(Duration::from_millis(1)).await;
    }
    panic!("never: {what}");
}

fn once() -> RequestOptions {
    RequestOptions {
        max_attempts: Some(1),
        ..RequestOptions::default()
    }
}

/// Issue 10 item 2a: parts collected for a buffer handler were taken off
/// the budget as they were copied, so 32 such streams held 500 MB.
#[tokio::test(start_paused = true)]
async fn parts_collected_for_a_buffer_handler_stay_charged_until_it_finishes() {
    let server = Handlers::new().buffer("len", |_ctx, whole: Bytes| async move {
        Ok::<_, HandlerError>(Bytes::from(whole.len().to_string()))
    });
    let (client, server) = Peer::pair(Handlers::new(), server, config()).await.unwrap();
    let (mut w, results) = client.stream_request("len").await.unwrap();
    for _ in 0..5 {
        w.send(vec![1u8; 64 * KIB]).await.unwrap();
    }
    eventually("the five parts are charged while collected", || {
        server.buffered_bytes_for_tests() == 5 * 64 * KIB
    })
    .await;
    w.end().await.unwrap();
    let all = results.collect_bytes(1024).await.unwrap();
    assert_eq!(all, (5 * 64 * KIB).to_string());
    eventually("given back once the handler is done", || {
        server.buffered_bytes_for_tests() == 0
    })
    .await;
}

/// Over the budget a collecting buffer handler gives up with a retry
/// result: reading has paused, so the end of its stream could never come.
#[tokio::test(start_paused = true)]
async fn a_buffer_handler_collecting_over_the_budget_gets_a_retry_result() {
    let server = Handlers::new().buffer("len", |_ctx, whole: Bytes| async move {
        Ok::<_, HandlerError>(Bytes::from(whole.len().to_string()))
    });
    let config = Config {
        max_buffered_bytes: 1024 * KIB,
        ..config()
    };
    let (client, server) = Peer::pair(Handlers::new(), server, config).await.unwrap();
    let (mut w, mut results) = client.stream_request("len").await.unwrap();
    for _ in 0..4 {
        w.send(vec![1u8; 300 * KIB]).await.unwrap();
    }
    let refused = timeout(Duration::from_secs(5), results.next())
        .await
        .expect("refused, not stuck");
    match refused {
        Some(Err(Error::RetryExhausted { message, .. })) => {
            assert!(message.contains("byte budget"), "{message}")
        }
        other => panic!("expected a retry result, got {other:?}"),
    }
    eventually("the collected parts are given back", || {
        server.buffered_bytes_for_tests() == 0
    })
    .await;
    // The connection still serves.
    drop(w);
    let (mut w, results) = client.stream_request("len").await.unwrap();
    w.send(vec![1u8; 10]).await.unwrap();
    w.end().await.unwrap();
    assert_eq!(results.collect_bytes(100).await.unwrap(), "10");
}

/// Issue 10 item 2b: a stream handler holding the part it took (echoing it
/// to a peer that does not read) held it off the budget.
#[tokio::test(start_paused = true)]
async fn the_part_a_stream_handler_took_stays_charged_until_it_takes_the_next() {
    let gate = Arc::new(Semaphore::new(0));
    let g = gate.clone();
    let server = Handlers::new().stream("hold", move |_ctx, mut parts, _results| {
        let gate = g.clone();
        async move {
            while let Some(part) = parts.next().await {
                let _part = part?;
                gate.acquire().await.unwrap().forget();
            }
            Ok::<_, HandlerError>(())
        }
    });
    let (client, server) = Peer::pair(Handlers::new(), server, config()).await.unwrap();
    let (mut w, results) = client.stream_request("hold").await.unwrap();
    w.send(vec![1u8; 100 * KIB]).await.unwrap();
    eventually("the part held by the handler is charged", || {
        server.buffered_bytes_for_tests() == 100 * KIB
    })
    .await;
    w.send(vec![2u8; 50 * KIB]).await.unwrap();
    eventually("plus the part waiting for it", || {
        server.buffered_bytes_for_tests() == 150 * KIB
    })
    .await;
    gate.add_permits(1);
    eventually("the first is given back when it takes the second", || {
        server.buffered_bytes_for_tests() == 50 * KIB
    })
    .await;
    gate.add_permits(1);
    w.end().await.unwrap();
    assert_eq!(results.collect_bytes(0).await.unwrap(), "");
    eventually("nothing held once it is done", || {
        server.buffered_bytes_for_tests() == 0
    })
    .await;
}

/// Issue 10 item 2c: a streamed result collected for one of our buffer
/// requests was not charged (40 `call-back`s held 500 MB).
#[tokio::test(start_paused = true)]
async fn a_streamed_result_collected_for_our_request_is_charged() {
    let gate = Arc::new(Semaphore::new(0));
    let g = gate.clone();
    let server = Handlers::new().stream("parts", move |_ctx, _parts, mut results| {
        let gate = g.clone();
        async move {
            for _ in 0..3 {
                results.send(vec![3u8; 100 * KIB]).await?;
            }
            gate.acquire().await.unwrap().forget();
            Ok::<_, HandlerError>(())
        }
    });
    let (client, _server) = Peer::pair(Handlers::new(), server, config()).await.unwrap();
    let c = client.clone();
    let call = tokio::spawn(async move { c.request("parts", "").await });
    eventually("the collected parts are charged", || {
        client.buffered_bytes_for_tests() == 300 * KIB
    })
    .await;
    gate.add_permits(1);
    assert_eq!(call.await.unwrap().unwrap().len(), 300 * KIB);
    assert_eq!(client.buffered_bytes_for_tests(), 0);
}

/// Over the budget such a call fails with `Error::OverBudget` rather than
/// pausing the connection.
#[tokio::test(start_paused = true)]
async fn a_streamed_result_over_the_budget_fails_the_call() {
    let server = Handlers::new().stream("parts", |_ctx, _parts, mut results| async move {
        for _ in 0..4 {
            results.send(vec![3u8; 300 * KIB]).await?;
        }
        Ok::<_, HandlerError>(())
    });
    let config = Config {
        max_buffered_bytes: 1024 * KIB,
        ..config()
    };
    let (client, _server) = Peer::pair(Handlers::new(), server, config).await.unwrap();
    let err = timeout(Duration::from_secs(5), client.request("parts", ""))
        .await
        .expect("failed, not stuck")
        .unwrap_err();
    assert!(
        matches!(err, Error::OverBudget { limit } if limit == 1024 * KIB),
        "{err}"
    );
    eventually("nothing held", || client.buffered_bytes_for_tests() == 0).await;
    assert!(!client.is_closed());
}

/// When a tracked handler calls `keep_running_after_close`.
#[derive(Clone, Copy)]
enum Keep {
    Never,
    /// Before its first `.await` (on the connection's task).
    AtOnce,
    /// After its first `.await` (in its own task).
    Later,
}

/// A handler that tells the test whether it finished (`Ok`) or was
/// dropped (`Err`).
fn tracked(
    handlers: Handlers,
    op: &str,
    keep: Keep,
    runs: Duration,
    done: Arc<std::sync::Mutex<Vec<oneshot::Sender<()>>>>,
    started: Arc<AtomicUsize>,
) -> Handlers {
    handlers.buffer(op, move |ctx, _payload: Bytes| {
        let tx = done.lock().unwrap().pop().expect("a tracker per call");
        let started = started.clone();
        async move {
            match keep {
                Keep::Never => {}
                Keep::AtOnce => assert!(ctx.keep_running_after_close()),
                Keep::Later => {
                    tokio::task::yield_now().await;
                    assert!(ctx.keep_running_after_close());
                }
            }
            started.fetch_add(1, Ordering::SeqCst);
            sleep(runs).await;
            let _ = tx.send(());
            Ok::<_, HandlerError>(Bytes::new())
        }
    })
}

/// Issue 10 item 3: handlers outlived their connection (1 024 × `slow
/// 60000` per connection, for a minute). Now they are dropped at close,
/// and give their place in the process-wide cap back.
#[tokio::test(start_paused = true)]
async fn handlers_still_running_when_their_connection_closes_are_cancelled() {
    let limit = HandlerLimit::new(100);
    let done = Arc::new(std::sync::Mutex::new(Vec::new()));
    let started = Arc::new(AtomicUsize::new(0));
    let mut finished = Vec::new();
    for _ in 0..10 {
        let (tx, rx) = oneshot::channel();
        done.lock().unwrap().push(tx);
        finished.push(rx);
    }
    let server = tracked(
        Handlers::new(),
        "slow",
        Keep::Never,
        Duration::from_secs(60),
        done.clone(),
        started.clone(),
    );
    let config = Config {
        handler_limit: limit.clone(),
        ..config()
    };
    let (client, _server) = Peer::pair(Handlers::new(), server, config).await.unwrap();
    for _ in 0..10 {
        let c = client.clone();
        tokio::spawn(async move { c.request("slow", vec![0u8; 8 * KIB]).await });
    }
    eventually("ten handlers run", || started.load(Ordering::SeqCst) == 10).await;
    assert_eq!(limit.available(), 90);
    client.abort();
    timeout(Duration::from_secs(1), async {
        for rx in finished {
            assert!(rx.await.is_err(), "dropped, not finished");
        }
    })
    .await
    .expect("cancelled at once, not after 60 s");
    eventually("their places are free", || limit.available() == 100).await;
}

/// A handler that asked to keep running finishes within the grace period,
/// or is dropped at its end; the others are dropped at close.
#[tokio::test(start_paused = true)]
async fn keep_running_after_close_is_bounded_by_the_grace_period() {
    let mut finished = Vec::new();
    let mut handlers = Handlers::new();
    let started = Arc::new(AtomicUsize::new(0));
    let ops = [
        ("plain", Keep::Never, 2),
        ("short", Keep::AtOnce, 2),
        ("late", Keep::Later, 2),
        ("long", Keep::AtOnce, 10),
    ];
    for (op, keep, secs) in ops {
        let (tx, rx) = oneshot::channel();
        finished.push((op, rx));
        let done = Arc::new(std::sync::Mutex::new(vec![tx]));
        handlers = tracked(
            handlers,
            op,
            keep,
            Duration::from_secs(secs),
            done,
            started.clone(),
        );
    }
    let config = Config {
        keep_running_grace: Duration::from_secs(3),
        ..config()
    };
    let (client, _server) = Peer::pair(Handlers::new(), handlers, config).await.unwrap();
    for (op, _, _) in ops {
        let c = client.clone();
        tokio::spawn(async move { c.request(op, "").await });
    }
    eventually("all four run", || started.load(Ordering::SeqCst) == 4).await;
    client.abort();
    let mut outcome = Vec::new();
    for (op, rx) in finished {
        outcome.push((op, rx.await.is_ok()));
    }
    assert_eq!(
        outcome,
        [
            ("plain", false),
            ("short", true),
            ("late", true),
            ("long", false)
        ]
    );
}

/// Over the process-wide cap, requests get `request rate limit` (on every
/// connection sharing the cap) and notifications wait for a place.
#[tokio::test(start_paused = true)]
async fn over_the_handler_cap_requests_are_refused_and_notifications_wait() {
    let limit = HandlerLimit::new(1);
    let gate = Arc::new(Semaphore::new(0));
    let notes = Arc::new(AtomicUsize::new(0));
    let (g, n) = (gate.clone(), notes.clone());
    let server = Handlers::new()
        .buffer("slow", move |_ctx, _p: Bytes| {
            let gate = g.clone();
            async move {
                gate.acquire().await.unwrap().forget();
                Ok::<_, HandlerError>(Bytes::from_static(b"done"))
            }
        })
        .notification("note", move |_ctx, _p| {
            let notes = n.clone();
            async move {
                notes.fetch_add(1, Ordering::SeqCst);
            }
        });
    let config = Config {
        handler_limit: limit.clone(),
        ..config()
    };
    let (client, _server) = Peer::pair(Handlers::new(), server.clone(), config.clone())
        .await
        .unwrap();
    let (other, _other_server) = Peer::pair(Handlers::new(), server, config).await.unwrap();
    let c = client.clone();
    let slow = tokio::spawn(async move { c.request("slow", "").await });
    eventually("the slow handler takes the only place", || {
        limit.available() == 0
    })
    .await;
    for peer in [&client, &other] {
        let refused = timeout(
            Duration::from_secs(5),
            peer.request_with("slow", "", once()),
        );
        match refused.await.expect("refused, not queued") {
            Err(Error::RetryExhausted { message, .. }) => assert_eq!(message, "request rate limit"),
            r => panic!("expected request rate limit, got {r:?}"),
        }
    }
    client.notify("note", "").await.unwrap();
    sleep(Duration::from_millis(100)).await;
    assert_eq!(notes.load(Ordering::SeqCst), 0, "the notification waits");
    gate.add_permits(1);
    assert_eq!(slow.await.unwrap().unwrap(), "done");
    eventually("then it runs", || notes.load(Ordering::SeqCst) == 1).await;
    eventually("and gives its place back", || limit.available() == 1).await;
}
