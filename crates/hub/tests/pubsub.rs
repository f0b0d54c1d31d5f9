//! Publish/subscribe over real gotalk connections (loopback TCP), with
//! clients that use only `request_json` and notification handlers, as a
//! Go or JavaScript client would.

mod common;

use std::time::Duration;

use common::{Client, eventually, offsets, serve, within};
use gotalk_hub::{Hub, HubError, Limits, broker::HistoryOptions};
use gotalk_peer::{Config, Handlers, Peer};
use serde_json::{Value, json};
use tokio::sync::mpsc;

#[tokio::test]
async fn a_plain_gotalk_client_subscribes_and_gets_publications_as_notifications() {
    let (hub, server) = serve(Hub::builder()).await;

    // Exactly what gotalk.js does: handleNotification("news", ...), then
    // request("subscribe", ...).
    let (tx, mut news) = mpsc::unbounded_channel::<Value>();
    let handlers = Handlers::new().notification("news", move |_ctx, payload| {
        let _ = tx.send(serde_json::from_slice(&payload).unwrap());
        async {}
    });
    let reader = Peer::connect(server.local_addr().to_string(), handlers, Config::default())
        .await
        .unwrap();
    let sub: Value = reader
        .request_json("subscribe", &json!({"channel": "news"}))
        .await
        .unwrap();
    assert_eq!(sub["offset"], 0);
    assert_eq!(sub["recovered"], false);
    assert_eq!(sub["publications"], json!([]));
    let epoch = sub["epoch"].as_str().unwrap().to_owned();
    assert!(!epoch.is_empty());

    let writer = Client::connect(&server).await;
    let pos = writer
        .ok(
            "publish",
            json!({"channel": "news", "data": {"text": "hi", "n": [1, 2]}}),
        )
        .await;
    assert_eq!(pos, json!({"offset": 1, "epoch": epoch}));

    let p = within("news", news.recv()).await.unwrap();
    assert_eq!(p["offset"], 1);
    assert_eq!(p["epoch"], epoch);
    assert_eq!(p["data"], json!({"text": "hi", "n": [1, 2]}));
    assert_eq!(p["info"]["user"], "");
    assert!(
        hub.clients()
            .iter()
            .any(|c| c.client == p["info"]["client"])
    );

    // From the server: no `info`.
    let pos = hub
        .publish("news", &json!("from the server"))
        .await
        .unwrap();
    assert_eq!(pos.offset, 2);
    let p = within("news", news.recv()).await.unwrap();
    assert_eq!(
        p,
        json!({"offset": 2, "epoch": epoch, "data": "from the server"})
    );

    // Unsubscribed: nothing more.
    assert_eq!(
        reader
            .request_json::<_, Value>("unsubscribe", &json!({"channel": "news"}))
            .await
            .unwrap(),
        json!({})
    );
    hub.publish("news", &1).await.unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(news.try_recv().is_err());
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_publishers_reach_every_subscriber_once_each_in_offset_order() {
    concurrent_publishers(Hub::builder()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_a_write_delay_too() {
    concurrent_publishers(Hub::builder().write_delay(Duration::from_millis(5))).await;
}

async fn concurrent_publishers(builder: gotalk_hub::HubBuilder) {
    const PUBLISHERS: usize = 4;
    const EACH: usize = 100;
    let (_hub, server) = serve(builder).await;
    let mut readers = Vec::new();
    for _ in 0..3 {
        let c = Client::connect(&server).await;
        c.ok("subscribe", json!({"channel": "room"})).await;
        readers.push(c);
    }
    let mut tasks = Vec::new();
    for from in 0..PUBLISHERS {
        let c = Client::connect(&server).await;
        tasks.push(tokio::spawn(async move {
            for seq in 0..EACH {
                c.ok(
                    "publish",
                    json!({"channel": "room", "data": {"from": from, "seq": seq}}),
                )
                .await;
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let total = PUBLISHERS * EACH;
    for reader in &mut readers {
        let mut got = Vec::new();
        while got.len() < total {
            got.push(reader.next().await);
        }
        reader.assert_silent().await;
        assert_eq!(
            offsets(&got),
            (1..=total as u64).collect::<Vec<_>>(),
            "exactly once, in order"
        );
        // Each publisher's messages in the order it sent them.
        let mut next_seq = [0u64; PUBLISHERS];
        for (channel, p) in &got {
            assert_eq!(channel, "room");
            let from = p["data"]["from"].as_u64().unwrap() as usize;
            assert_eq!(p["data"]["seq"].as_u64().unwrap(), next_seq[from]);
            next_seq[from] += 1;
        }
    }
    server.shutdown().await;
}

/// Deliveries wait for the write delay; the publisher's answer does not.
#[tokio::test]
async fn a_write_delay_holds_deliveries_not_answers() {
    const DELAY: Duration = Duration::from_secs(1);
    let (_hub, server) = serve(Hub::builder().write_delay(DELAY)).await;
    let mut reader = Client::connect(&server).await;
    reader.ok("subscribe", json!({"channel": "room"})).await;
    let publisher = Client::connect(&server).await;
    let start = tokio::time::Instant::now();
    for seq in 0..3 {
        publisher
            .ok("publish", json!({"channel": "room", "data": seq}))
            .await;
    }
    let answered = start.elapsed();
    let mut got = vec![reader.next().await];
    let delivered = start.elapsed();
    got.push(reader.next().await);
    got.push(reader.next().await);
    assert_eq!(offsets(&got), vec![1, 2, 3]);
    assert!(delivered >= DELAY, "delivered after {delivered:?}");
    assert!(answered < DELAY, "answers held: {answered:?}");
    server.shutdown().await;
}

#[tokio::test]
async fn publish_with_others_skips_the_publisher_only() {
    let (_hub, server) = serve(Hub::builder()).await;
    let mut me = Client::connect(&server).await;
    let mut other = Client::connect(&server).await;
    me.ok("subscribe", json!({"channel": "c"})).await;
    other.ok("subscribe", json!({"channel": "c"})).await;

    me.ok(
        "publish",
        json!({"channel": "c", "data": "same", "others": true}),
    )
    .await;
    me.ok("publish", json!({"channel": "c", "data": "same"}))
        .await;
    me.ok(
        "publish",
        json!({"channel": "c", "data": "mine too", "others": false}),
    )
    .await;

    let got: Vec<_> = vec![other.next().await, other.next().await, other.next().await];
    assert_eq!(offsets(&got), [1, 2, 3]);
    let mine = [me.next().await, me.next().await];
    assert_eq!(
        offsets(&mine),
        [2, 3],
        "only the `others` publication is skipped"
    );
    assert_eq!(mine[0].1["data"], "same");
    me.assert_silent().await;
    server.shutdown().await;
}

#[tokio::test]
async fn the_server_joins_and_parts_a_client() {
    let (hub, server) = serve(Hub::builder()).await;
    let mut c = Client::connect(&server).await;
    eventually("session", || hub.clients().len() == 1).await;
    let id = hub.clients()[0].client.clone();

    hub.subscribe_client(&id, "user:alice").await.unwrap();
    assert_eq!(hub.subscriptions(&id).unwrap(), ["user:alice"]);
    assert!(matches!(
        hub.subscribe_client(&id, "user:alice").await,
        Err(HubError::AlreadySubscribed(_))
    ));
    hub.publish("user:alice", &json!({"mail": 1}))
        .await
        .unwrap();
    let (channel, p) = c.next().await;
    assert_eq!(channel, "user:alice");
    assert_eq!(p["data"], json!({"mail": 1}));

    assert!(hub.unsubscribe_client(&id, "user:alice").await.unwrap());
    assert_eq!(
        c.next().await.1,
        json!({"unsubscribed": "unsubscribed by the server"})
    );
    assert!(!hub.unsubscribe_client(&id, "user:alice").await.unwrap());
    hub.publish("user:alice", &2).await.unwrap();
    c.assert_silent().await;

    assert!(matches!(
        hub.subscribe_client("nobody", "x").await,
        Err(HubError::UnknownClient(_))
    ));
    assert_eq!(hub.stats().channels, 0);
    server.shutdown().await;
}

#[tokio::test]
async fn history_pages_and_bad_requests_get_the_documented_errors() {
    let limits = Limits {
        max_subscriptions: 2,
        max_channel_len: 16,
        ..Limits::default()
    };
    let history = HistoryOptions {
        size: 10,
        ttl: Duration::from_secs(60),
    };
    let (_hub, server) = serve(Hub::builder().history("log:*", history).limits(limits)).await;
    let c = Client::connect(&server).await;
    let mut positions = Vec::new();
    for i in 1..=5 {
        positions.push(
            c.ok("publish", json!({"channel": "log:a", "data": i}))
                .await,
        );
    }
    let h = c
        .ok(
            "history",
            json!({"channel": "log:a", "since": positions[1], "limit": 2}),
        )
        .await;
    assert_eq!(h["complete"], true);
    assert_eq!(h["offset"], 5);
    assert_eq!(h["epoch"], positions[0]["epoch"]);
    let ps = h["publications"].as_array().unwrap();
    assert_eq!(
        ps.iter()
            .map(|p| p["data"].as_u64().unwrap())
            .collect::<Vec<_>>(),
        [3, 4]
    );
    assert_eq!(ps[0]["offset"], 3);
    let recent = c
        .ok("history", json!({"channel": "log:a", "limit": 1}))
        .await;
    assert_eq!(recent["publications"][0]["data"], 5);
    // A channel without history: positions only.
    c.ok("publish", json!({"channel": "other", "data": 1}))
        .await;
    let h = c.ok("history", json!({"channel": "other"})).await;
    assert_eq!(
        (
            h["offset"].as_u64(),
            h["publications"].as_array().map(Vec::len)
        ),
        (Some(1), Some(0))
    );

    assert_eq!(
        c.call("subscribe", json!({"channel": ""}))
            .await
            .unwrap_err(),
        "invalid channel"
    );
    assert_eq!(
        c.call("subscribe", json!({"channel": "a-very-long-channel-name"}))
            .await
            .unwrap_err(),
        "invalid channel"
    );
    assert!(
        c.call("subscribe", json!({"chan": "x"}))
            .await
            .unwrap_err()
            .starts_with("invalid request: ")
    );
    assert!(
        c.call("publish", json!({"channel": "x"}))
            .await
            .unwrap_err()
            .starts_with("invalid request: ")
    );
    c.ok("subscribe", json!({"channel": "a"})).await;
    assert_eq!(
        c.call("subscribe", json!({"channel": "a"}))
            .await
            .unwrap_err(),
        r#"already subscribed to "a""#
    );
    c.ok("subscribe", json!({"channel": "b"})).await;
    assert_eq!(
        c.call("subscribe", json!({"channel": "c"}))
            .await
            .unwrap_err(),
        "too many subscriptions (at most 2)"
    );
    assert_eq!(
        c.ok("unsubscribe", json!({"channel": "never"})).await,
        json!({})
    );
    server.shutdown().await;
}

#[tokio::test]
async fn a_connection_without_a_session_is_told_so() {
    let hub = Hub::builder().build().await.unwrap();
    let (client, _server) = Peer::pair(
        Handlers::new(),
        hub.handlers(Handlers::new()),
        Config::default(),
    )
    .await
    .unwrap();
    let e = client
        .request_json::<_, Value>("subscribe", &json!({"channel": "x"}))
        .await
        .unwrap_err();
    assert!(
        e.to_string().contains("no hub session on this connection"),
        "{e}"
    );

    // With `Hub::open`, an in-memory pair works like any connection.
    let (client, server_side) = Peer::pair(
        Handlers::new(),
        hub.handlers(Handlers::new()),
        Config::default(),
    )
    .await
    .unwrap();
    let id = hub.open(&server_side);
    let out: Value = client
        .request_json("subscribe", &json!({"channel": "x"}))
        .await
        .unwrap();
    assert_eq!(out["offset"], 0);
    assert_eq!(hub.subscriptions(&id).unwrap(), ["x"]);
    client.close().await;
    eventually("cleanup", || hub.stats().clients == 0).await;
}
