//! Presence: who is in a channel, join and leave events, and what a
//! disconnect removes.

mod common;

use std::time::Duration;

use common::{Client, eventually, serve};
use gotalk_hub::{Hub, Limits};
use serde_json::{Value, json};

fn clients(v: &Value) -> Vec<String> {
    v["clients"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["client"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn joins_leaves_and_disconnects_are_seen_by_subscribers_with_events() {
    let (hub, server) = serve(Hub::builder()).await;
    let mut a = Client::connect(&server).await;
    a.ok(
        "subscribe",
        json!({"channel": "room", "presence": true, "events": true}),
    )
    .await;
    let (channel, join) = a.next().await;
    assert_eq!(channel, "room");
    let a_id = join["join"]["client"].as_str().unwrap().to_owned();
    assert_eq!(join, json!({"join": {"user": "", "client": a_id}}));

    // A plain subscriber: not in presence, no events.
    let mut quiet = Client::connect(&server).await;
    quiet.ok("subscribe", json!({"channel": "room"})).await;

    let b = Client::connect(&server).await;
    b.ok("subscribe", json!({"channel": "room", "presence": true}))
        .await;
    let (_, join) = a.next().await;
    let b_id = join["join"]["client"].as_str().unwrap().to_owned();
    assert_ne!(a_id, b_id);

    let mut expected = vec![a_id.clone(), b_id.clone()];
    expected.sort();
    assert_eq!(
        clients(&a.ok("presence", json!({"channel": "room"})).await),
        expected
    );
    let listed: Vec<_> = hub
        .presence("room")
        .await
        .unwrap()
        .into_iter()
        .map(|c| c.client)
        .collect();
    assert_eq!(listed, expected);
    assert_eq!(hub.stats().presence, 2);

    // Disconnecting removes the entry and announces it.
    b.peer.close().await;
    assert_eq!(
        a.next().await.1,
        json!({"leave": {"user": "", "client": b_id}})
    );
    assert_eq!(
        clients(&a.ok("presence", json!({"channel": "room"})).await),
        std::slice::from_ref(&a_id)
    );

    // So does unsubscribing.
    let c = Client::connect(&server).await;
    c.ok("subscribe", json!({"channel": "room", "presence": true}))
        .await;
    let c_id = a.next().await.1["join"]["client"]
        .as_str()
        .unwrap()
        .to_owned();
    c.ok("unsubscribe", json!({"channel": "room"})).await;
    assert_eq!(
        a.next().await.1,
        json!({"leave": {"user": "", "client": c_id}})
    );
    assert_eq!(
        clients(&a.ok("presence", json!({"channel": "room"})).await),
        [a_id]
    );

    quiet.assert_silent().await;
    a.assert_silent().await;
    server.shutdown().await;
    eventually("all sessions gone", || hub.stats() == Default::default()).await;
    assert!(hub.presence("room").await.unwrap().is_empty());
}

#[tokio::test]
async fn live_presence_is_refreshed_before_it_expires() {
    let limits = Limits {
        presence_ttl: Duration::from_millis(600),
        presence_refresh: Duration::from_millis(100),
        ..Limits::default()
    };
    let (hub, server) = serve(Hub::builder().limits(limits)).await;
    let a = Client::connect(&server).await;
    a.ok("subscribe", json!({"channel": "room", "presence": true}))
        .await;
    tokio::time::sleep(Duration::from_millis(1000)).await;
    assert_eq!(
        hub.presence("room").await.unwrap().len(),
        1,
        "refreshed, not expired"
    );
    server.shutdown().await;
}
