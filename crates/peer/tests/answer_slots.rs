//! Every answer reaches its own caller: the slots callers wait in are
//! reused from one request to the next, while answers come back out of
//! order and some callers give up (their slots freed, maybe with an answer
//! already in them).

use std::{sync::Arc, time::Duration};

use bytes::Bytes;
use futures::{StreamExt, stream::FuturesUnordered};
use gotalk_peer::{Config, HandlerError, Handlers, Peer};

/// Echoes after a pause the payload's first byte sets, in 100 µs steps,
/// so that answers come back in another order than the requests.
fn echo_later() -> Handlers {
    Handlers::new().buffer("echo-later", |_ctx, payload: Bytes| async move {
        let steps = u64::from(payload.first().copied().unwrap_or(0) % 8);
        tokio::time::sleep(Duration::from_micros(100 * steps)).await;
        Ok::<_, HandlerError>(payload)
    })
}

/// `rounds` rounds of 64 calls in flight; every third call is given up
/// after a random short while (it may have been answered by then).
async fn calls_get_their_own_answers(client: Arc<Peer>, rounds: u32) {
    let mut seed = 0x9e37_79b9_u32;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 17;
        seed ^= seed << 5;
        seed
    };
    for round in 0..rounds {
        let mut calls = FuturesUnordered::new();
        for i in 0..64u32 {
            let payload = format!("{}:{round}:{i}", (next() % 8) as u8 as char);
            let client = client.clone();
            let give_up = (i % 3 == 0).then(|| Duration::from_micros(u64::from(next() % 600)));
            calls.push(async move {
                let call = client.request("echo-later", payload.clone());
                match give_up {
                    Some(after) => {
                        if let Ok(answer) = tokio::time::timeout(after, call).await {
                            assert_eq!(answer.unwrap(), payload.as_bytes());
                        }
                    }
                    None => assert_eq!(call.await.unwrap(), payload.as_bytes()),
                }
            });
        }
        // A caller left waiting would hang here: bounded, it fails instead.
        tokio::time::timeout(Duration::from_secs(10), async {
            while calls.next().await.is_some() {}
        })
        .await
        .expect("every call ends");
    }
}

/// Nothing is left behind, and the connection still works.
async fn all_settled(client: &Peer) {
    assert_eq!(client.pending_requests(), 0);
    assert_eq!(client.request("echo-later", "end").await.unwrap(), "end");
}

#[tokio::test]
async fn on_one_thread() {
    let (client, _server) = Peer::pair(Handlers::new(), echo_later(), Config::default())
        .await
        .unwrap();
    let client = Arc::new(client);
    calls_get_their_own_answers(client.clone(), 20).await;
    all_settled(&client).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn across_threads() {
    let (client, _server) = Peer::pair(Handlers::new(), echo_later(), Config::default())
        .await
        .unwrap();
    let client = Arc::new(client);
    // Two tasks calling at once, on either worker.
    let other = tokio::spawn(calls_get_their_own_answers(client.clone(), 10));
    calls_get_their_own_answers(client.clone(), 10).await;
    other.await.unwrap();
    all_settled(&client).await;
}
