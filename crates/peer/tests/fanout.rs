//! Fan-out with [`Peer::try_notify`]: one shared payload for every receiver,
//! never waiting, and a receiver that stops reading is closed as a slow
//! consumer instead of holding memory while the others go on.

mod common;

use std::sync::{
    Arc,
    atomic::{AtomicUsize, Ordering},
};

use bytes::Bytes;
use common::{Raw, WAIT, eventually, quiet, server_side, spawn_server};
use gotalk_peer::{CloseReason, Config, Error, Handlers, Peer, WriteCeiling};

const QUEUE_BOUND: usize = 256 * 1024;
const PAYLOAD: usize = 64 * 1024;
/// Far more than loopback socket buffers absorb for a reader that stops.
const MESSAGES: usize = 600;

fn counting(received: &Arc<AtomicUsize>) -> Handlers {
    let received = received.clone();
    Handlers::new().notification("news", move |_ctx, payload| {
        let received = received.clone();
        async move {
            assert_eq!(payload.len(), PAYLOAD);
            received.fetch_add(1, Ordering::SeqCst);
        }
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receiver_that_stops_reading_is_closed_as_a_slow_consumer_and_the_others_get_everything()
{
    let config = Config {
        max_write_queue_bytes: QUEUE_BOUND,
        ..quiet()
    };
    let server = spawn_server(Handlers::new(), config).await;
    let addr = server.local_addr().to_string();

    let counts: Vec<Arc<AtomicUsize>> = (0..2).map(|_| Arc::new(AtomicUsize::new(0))).collect();
    let mut readers = Vec::new();
    for count in &counts {
        readers.push(
            Peer::connect(addr.clone(), counting(count), quiet())
                .await
                .unwrap(),
        );
    }
    let stalled = Raw::tcp_handshaken(addr.as_str()).await;
    let peers = {
        server_side(&server, 3).await;
        server.connections()
    };
    assert_eq!(peers.len(), 3);

    let payload = Bytes::from(vec![b'x'; PAYLOAD]);
    let mut slow: Option<(usize, CloseReason)> = None;
    for i in 1..=MESSAGES {
        for peer in &peers {
            match peer.try_notify("news", payload.clone()) {
                Ok(()) => {}
                Err(Error::Closed(reason)) if slow.is_none() => slow = Some((i, reason)),
                Err(e) => panic!("message {i}: unexpected {e}"),
            }
        }
        // Lockstep with the readers that read: their queues never fill.
        eventually(WAIT, "the reading receivers get the message", || {
            counts.iter().all(|c| c.load(Ordering::SeqCst) >= i)
        })
        .await;
        if slow.is_some() {
            break;
        }
    }

    let (at, reason) = slow.expect("the receiver that never reads is closed");
    match reason {
        CloseReason::SlowConsumer { queued } => assert!(queued >= QUEUE_BOUND, "{queued}"),
        other => panic!("closed for {other}"),
    }
    assert!(at > 1 && at < MESSAGES, "closed at message {at}");
    // The others are untouched and got every message so far.
    for (reader, count) in readers.iter().zip(&counts) {
        assert!(!reader.is_closed());
        assert_eq!(count.load(Ordering::SeqCst), at);
    }
    // The stalled connection is gone from the server, its queue dropped
    // rather than flushed for the close timeout.
    eventually(WAIT, "the slow consumer's connection ends", || {
        server.connection_count() == 2
    })
    .await;
    drop(stalled);
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_shared_write_ceiling_closes_the_receivers_that_hold_it_and_spares_the_reader() {
    let ceiling = WriteCeiling::new(QUEUE_BOUND);
    // Each connection alone may queue far more than the shared ceiling.
    let config = Config {
        max_write_queue_bytes: 64 * QUEUE_BOUND,
        write_ceiling: ceiling.clone(),
        ..quiet()
    };
    let server = spawn_server(Handlers::new(), config).await;
    let addr = server.local_addr().to_string();
    let count = Arc::new(AtomicUsize::new(0));
    let reader = Peer::connect(addr.clone(), counting(&count), quiet())
        .await
        .unwrap();
    let stalled = [
        Raw::tcp_handshaken(addr.as_str()).await,
        Raw::tcp_handshaken(addr.as_str()).await,
    ];
    server_side(&server, 3).await;
    let peers = server.connections();

    let payload = Bytes::from(vec![b'x'; PAYLOAD]);
    let mut closed = std::collections::BTreeSet::new();
    let mut sent = 0;
    while closed.len() < 2 {
        sent += 1;
        assert!(
            sent <= 4 * MESSAGES,
            "the stalled receivers were never closed"
        );
        for (i, peer) in peers.iter().enumerate() {
            match peer.try_notify("news", payload.clone()) {
                Ok(()) => {}
                // Later offers to a closed one fail with the same reason.
                Err(Error::Closed(CloseReason::SlowConsumer { .. })) => {
                    closed.insert(i);
                }
                Err(e) => panic!("{e}"),
            }
        }
        eventually(WAIT, "the reader gets the message", || {
            count.load(Ordering::SeqCst) >= sent
        })
        .await;
    }
    assert!(!reader.is_closed());
    assert_eq!(count.load(Ordering::SeqCst), sent);
    eventually(WAIT, "the stalled connections end", || {
        server.connection_count() == 1
    })
    .await;
    assert_eq!(
        ceiling.queued(),
        0,
        "their queued bytes are returned to the ceiling"
    );
    drop(stalled);
    server.shutdown().await;
}

#[tokio::test]
async fn try_notify_never_waits_and_delivers_in_order() {
    let received = Arc::new(std::sync::Mutex::new(Vec::new()));
    let sink = received.clone();
    let handlers = Handlers::new().notification("n", move |_ctx, payload| {
        let sink = sink.clone();
        async move { sink.lock().unwrap().push(payload) }
    });
    let (a, _b) = Peer::pair(Handlers::new(), handlers, quiet())
        .await
        .unwrap();
    for i in 0..100u32 {
        a.try_notify("n", Bytes::from(i.to_string())).unwrap();
    }
    eventually(WAIT, "all arrive", || received.lock().unwrap().len() == 100).await;
    let got: Vec<String> = received
        .lock()
        .unwrap()
        .iter()
        .map(|b| String::from_utf8(b.to_vec()).unwrap())
        .collect();
    let want: Vec<String> = (0..100).map(|i: u32| i.to_string()).collect();
    assert_eq!(got, want);
}

#[tokio::test]
async fn try_notify_on_a_closed_connection_says_why_and_checks_the_name() {
    let (a, b) = Peer::pair(Handlers::new(), Handlers::new(), quiet())
        .await
        .unwrap();
    let long = "n".repeat(4096);
    assert!(matches!(
        a.try_notify(&long, Bytes::new()),
        Err(Error::Usage(_))
    ));
    b.close().await;
    a.closed().await;
    assert!(matches!(
        a.try_notify("n", Bytes::from_static(b"x")),
        Err(Error::Closed(CloseReason::PeerClosed))
    ));
}
