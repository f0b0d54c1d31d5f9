//! Payloads held by running handlers are charged to the connection's byte
//! budget, so a peer cannot pin `max_inbound_requests × max_payload` bytes.

use std::{
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use bytes::Bytes;
use gotalk_peer::{Config, Error, HandlerError, Handlers, Peer, RequestOptions};
use tokio::{sync::Semaphore, time::timeout};

const BUDGET: usize = 1024 * 1024;
const PAYLOAD: usize = 400 * 1024;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_payloads_over_the_budget_get_retry_results() {
    let running = Arc::new(AtomicUsize::new(0));
    let release = Arc::new(Semaphore::new(0));
    let (r, gate) = (running.clone(), release.clone());
    let server = Handlers::new().buffer("hold", move |_ctx, payload: Bytes| {
        let (running, gate) = (r.clone(), gate.clone());
        async move {
            if payload.len() >= PAYLOAD {
                running.fetch_add(1, Ordering::SeqCst);
                let _ = gate.acquire().await.map(|p| p.forget());
            }
            Ok::<_, HandlerError>(Bytes::from(payload.len().to_string()))
        }
    });
    let config = Config {
        max_buffered_bytes: BUDGET,
        ..Config::default()
    };
    let (client, _server) = Peer::pair(Handlers::new(), server, config).await.unwrap();
    let once = RequestOptions {
        max_attempts: Some(1),
        ..RequestOptions::default()
    };
    let mut held = Vec::new();
    for _ in 0..2 {
        let c = client.clone();
        held.push(tokio::spawn(async move {
            c.request_with("hold", vec![7u8; PAYLOAD], once).await
        }));
    }
    // Wait until both are running: 800 KiB of the 1 MiB budget is held.
    timeout(Duration::from_secs(5), async {
        while running.load(Ordering::SeqCst) < 2 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .expect("two handlers start");
    // A third large request does not fit: refused, not queued, not run.
    let refused = timeout(
        Duration::from_secs(2),
        client.request_with("hold", vec![7u8; PAYLOAD], once),
    )
    .await
    .expect("a third large request must be refused, not admitted to wait");
    match refused {
        Err(Error::RetryExhausted { message, .. }) => assert_eq!(message, "request rate limit"),
        other => panic!("expected a retry result, got {other:?}"),
    }
    assert_eq!(running.load(Ordering::SeqCst), 2);
    // Small payloads are not charged: still served while the budget is full.
    let small = timeout(
        Duration::from_secs(5),
        client.request_with("hold", "hi", once),
    )
    .await
    .unwrap()
    .unwrap();
    assert_eq!(small, "2");
    // Once the held requests finish, the budget is free again.
    release.add_permits(2);
    for h in held {
        assert_eq!(h.await.unwrap().unwrap(), PAYLOAD.to_string());
    }
    release.add_permits(1);
    let again = client
        .request_with("hold", vec![7u8; PAYLOAD], once)
        .await
        .unwrap();
    assert_eq!(again, PAYLOAD.to_string());
}
