//! Churn leaves nothing behind: subscriptions, channels, broker
//! subscriptions, presence and sessions all go away with what made them.

mod common;

use std::{sync::atomic::Ordering, time::Duration};

use common::{Client, Flaky, eventually, serve};
use gotalk_hub::{Hub, HubStats, broker::memory::MemoryBroker};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_subscribe_unsubscribe_rounds_leave_nothing() {
    const TASKS: usize = 8;
    const ROUNDS: usize = 10_000 / TASKS;
    let broker = MemoryBroker::new();
    let (hub, server) = serve(Hub::builder().broker(broker.clone())).await;
    let clients = [
        std::sync::Arc::new(Client::connect(&server).await),
        std::sync::Arc::new(Client::connect(&server).await),
    ];
    let publisher = {
        let hub = hub.clone();
        tokio::spawn(async move {
            for i in 0..2_000u64 {
                hub.publish(&format!("c{}-{}", i % 4, i % 2), &i)
                    .await
                    .unwrap();
                tokio::task::yield_now().await;
            }
        })
    };
    let tasks: Vec<_> = (0..TASKS)
        .map(|t| {
            let c = clients[t % 2].clone();
            tokio::spawn(async move {
                for i in 0..ROUNDS {
                    // Each channel is shared by a task of each connection:
                    // the node's broker subscription comes and goes under
                    // contention (one connection subscribes once).
                    let channel = format!("c{}-{}", t / 2, i % 2);
                    let presence = i % 2 == 0;
                    c.ok(
                        "subscribe",
                        json!({"channel": channel, "presence": presence, "events": presence}),
                    )
                    .await;
                    c.ok("unsubscribe", json!({"channel": channel})).await;
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    publisher.await.unwrap();
    let stats = hub.stats();
    assert_eq!(stats.clients, 2);
    assert_eq!(
        (
            stats.subscriptions,
            stats.presence,
            stats.channels,
            stats.node_subscribers,
            stats.broker_subscriptions
        ),
        (0, 0, 0, 0, 0),
        "{stats:?}"
    );
    assert_eq!(stats.held_publications, 0);
    assert_eq!(broker.subscribed_channels(), 0);
    for i in 0..8 {
        assert!(
            hub.presence(&format!("c{}-{}", i / 2, i % 2))
                .await
                .unwrap()
                .is_empty()
        );
    }
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_that_vanish_mid_subscribe_leave_nothing() {
    // Slow history reads: connections are aborted while their subscribe
    // is half-way (broker subscribed, history read, its answer not back).
    let broker = Flaky::default();
    broker.slow_history.store(true, Ordering::SeqCst);
    let (hub, server) = serve(Hub::builder().broker(broker.clone())).await;
    let mut stay = Client::connect(&server).await;
    stay.ok("subscribe", json!({"channel": "keep", "events": true}))
        .await;
    for round in 0..50 {
        let c = Client::connect(&server).await;
        let peer = c.peer.clone();
        let channel = format!("gone{}", round % 5);
        let pending = tokio::spawn(async move {
            let _ = peer
                .request_json::<_, serde_json::Value>(
                    "subscribe",
                    &json!({"channel": channel, "presence": true}),
                )
                .await;
        });
        if round % 2 == 0 {
            // Also some whose subscribe finished, with presence.
            c.ok("subscribe", json!({"channel": "keep", "presence": true}))
                .await;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
        c.peer.abort();
        let _ = pending.await;
    }
    eventually("only the one that stays is left", || {
        let s = hub.stats();
        s.clients == 1 && s.subscriptions == 1 && s.channels == 1 && s.broker_subscriptions == 1
    })
    .await;
    assert_eq!(broker.inner.subscribed_channels(), 1);
    assert!(hub.presence("keep").await.unwrap().is_empty());
    for i in 0..5 {
        assert!(hub.presence(&format!("gone{i}")).await.unwrap().is_empty());
    }
    // Every join on "keep" was followed by its leave.
    let events = stay.drain();
    let joins = events
        .iter()
        .filter(|(_, e)| e.get("join").is_some())
        .count();
    let leaves = events
        .iter()
        .filter(|(_, e)| e.get("leave").is_some())
        .count();
    assert_eq!((joins, leaves), (25, 25));
    server.shutdown().await;
    eventually("no session", || hub.stats() == HubStats::default()).await;
}
