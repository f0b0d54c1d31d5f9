//! History and resume: `subscribe` with `since`, with no gap and no
//! duplicate between what history returns and what follows live, and the
//! node's own recovery when its broker lost deliveries.

mod common;

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use common::{Client, Flaky, eventually, offsets, serve, serve_with};
use gotalk_hub::{Hub, Limits, broker::HistoryOptions};
use serde_json::{Value, json};

fn keep(size: usize) -> HistoryOptions {
    HistoryOptions {
        size,
        ttl: Duration::from_secs(60),
    }
}

fn pub_offsets(result: &Value) -> Vec<u64> {
    result["publications"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["offset"].as_u64().unwrap())
        .collect()
}

#[tokio::test]
async fn resuming_from_a_position_recovers_what_was_missed_then_goes_on_live() {
    let (hub, server) = serve(Hub::builder().history("chat:*", keep(100))).await;
    let mut c = Client::connect(&server).await;
    c.ok("subscribe", json!({"channel": "chat:a"})).await;
    for i in 1..=3 {
        hub.publish("chat:a", &i).await.unwrap();
    }
    let seen = [c.next().await, c.next().await, c.next().await];
    assert_eq!(offsets(&seen), [1, 2, 3]);
    let position = json!({"offset": 3, "epoch": seen[2].1["epoch"]});
    c.ok("unsubscribe", json!({"channel": "chat:a"})).await;

    for i in 4..=6 {
        hub.publish("chat:a", &i).await.unwrap();
    }
    let r = c
        .ok("subscribe", json!({"channel": "chat:a", "since": position}))
        .await;
    assert_eq!(r["recovered"], true);
    assert_eq!(pub_offsets(&r), [4, 5, 6]);
    assert_eq!(r["publications"][0]["data"], 4);
    assert_eq!(r["offset"], 6);
    assert_eq!(r["epoch"], position["epoch"]);
    hub.publish("chat:a", &7).await.unwrap();
    assert_eq!(c.next().await.1["offset"], 7);
    c.assert_silent().await;

    // At the head: recovered, nothing to add.
    let head = json!({"offset": 7, "epoch": position["epoch"]});
    let mut d = Client::connect(&server).await;
    let r = d
        .ok("subscribe", json!({"channel": "chat:a", "since": head}))
        .await;
    assert_eq!(
        (r["recovered"].as_bool(), pub_offsets(&r).len()),
        (Some(true), 0)
    );
    d.assert_silent().await;
    server.shutdown().await;
}

#[tokio::test]
async fn an_unknown_epoch_or_a_trimmed_position_is_not_recovered() {
    let (hub, server) = serve(Hub::builder().history("short", keep(2))).await;
    let c = Client::connect(&server).await;
    for i in 1..=5 {
        hub.publish("short", &i).await.unwrap();
    }
    let r = c
        .ok(
            "subscribe",
            json!({"channel": "short", "since": {"offset": 4, "epoch": "not-the-epoch"}}),
        )
        .await;
    assert_eq!(r["recovered"], false);
    assert_eq!(pub_offsets(&r), Vec::<u64>::new());
    assert_eq!(r["offset"], 5, "where the client stands now");
    let epoch = r["epoch"].clone();
    c.ok("unsubscribe", json!({"channel": "short"})).await;

    // Offsets 1..=3 are trimmed (size 2): from 1, not recoverable.
    let r = c
        .ok(
            "subscribe",
            json!({"channel": "short", "since": {"offset": 1, "epoch": epoch}}),
        )
        .await;
    assert_eq!(
        (r["recovered"].as_bool(), pub_offsets(&r).len()),
        (Some(false), 0)
    );
    c.ok("unsubscribe", json!({"channel": "short"})).await;
    // From 3, it is.
    let r = c
        .ok(
            "subscribe",
            json!({"channel": "short", "since": {"offset": 3, "epoch": epoch}}),
        )
        .await;
    assert_eq!(r["recovered"], true);
    assert_eq!(pub_offsets(&r), [4, 5]);
    server.shutdown().await;
}

/// A publisher races subscribes with `since`: over many rounds of
/// subscribe, receive, unsubscribe, the client sees every offset exactly
/// once, in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resubscribing_while_publications_race_loses_and_repeats_nothing() {
    const ROUNDS: usize = 40;
    // Room for everything: a round may miss thousands of publications.
    let limits = Limits {
        max_recover: 1_000_000,
        ..Limits::default()
    };
    // History reads take a while, so that publications land while each
    // subscribe holds live ones back for its client.
    let broker = Flaky::default();
    broker.slow_history.store(true, Ordering::SeqCst);
    let builder = Hub::builder()
        .broker(broker)
        .history("race", keep(1_000_000))
        .limits(limits);
    // The publisher runs unpaced in the server's process: on a loaded
    // machine (CI's two cores, every test binary at once) the client falls
    // behind it, and at the default 8 MiB the server closed the client as a
    // slow consumer mid-test. Room enough that this test measures what it
    // is about, the resubscribes.
    let config = gotalk_peer::Config {
        max_write_queue_bytes: 256 * 1024 * 1024,
        ..Default::default()
    };
    let (hub, server) = serve_with(builder, config).await;
    let stop = Arc::new(AtomicBool::new(false));
    let publisher = {
        let (hub, stop) = (hub.clone(), stop.clone());
        tokio::spawn(async move {
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                n += 1;
                hub.publish("race", &n).await.unwrap();
                if n.is_multiple_of(8) {
                    tokio::task::yield_now().await;
                }
            }
            n
        })
    };
    let mut c = Client::connect(&server).await;
    let first = c.ok("subscribe", json!({"channel": "race"})).await;
    let mut seen: Vec<u64> = pub_offsets(&first);
    let mut position = json!({"offset": first["offset"], "epoch": first["epoch"]});
    // Where the stream stood when the subscription started: before the
    // publications the result carries (made while it was set up), if any.
    let start = seen
        .first()
        .map_or(first["offset"].as_u64().unwrap(), |o| o - 1);
    let mut recovered_some = false;
    for round in 0..=ROUNDS {
        if round > 0 {
            let r = c
                .ok("subscribe", json!({"channel": "race", "since": position}))
                .await;
            assert_eq!(r["recovered"], true, "round {round}");
            let ps = pub_offsets(&r);
            recovered_some |= !ps.is_empty();
            seen.extend(&ps);
            // The client's position once it applied the publications.
            assert_eq!(
                r["offset"].as_u64(),
                Some(seen.last().copied().unwrap_or(start))
            );
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
        if round == ROUNDS {
            stop.store(true, Ordering::Relaxed);
        }
        c.ok("unsubscribe", json!({"channel": "race"})).await;
        // Every notification sent before the unsubscribe result has
        // arrived by now (one connection, in order).
        let live = c.drain();
        assert!(live.iter().all(|(ch, _)| ch == "race"));
        seen.extend(offsets(&live));
        let last = seen.last().copied().unwrap_or(start);
        position = json!({"offset": last, "epoch": first["epoch"]});
    }
    let total = publisher.await.unwrap();
    // What was published after the last unsubscribe, recovered once more.
    let r = c
        .ok("subscribe", json!({"channel": "race", "since": position}))
        .await;
    assert_eq!(r["recovered"], true);
    seen.extend(pub_offsets(&r));
    assert_eq!(
        seen,
        (start + 1..=total).collect::<Vec<_>>(),
        "no gap, no duplicate"
    );
    assert!(recovered_some, "the test raced nothing");
    server.shutdown().await;
}

#[tokio::test]
async fn the_node_recovers_deliveries_its_broker_lost_from_history() {
    let broker = Flaky::default();
    let (hub, server) = serve(Hub::builder().broker(broker.clone()).history("*", keep(10))).await;
    let mut a = Client::connect(&server).await;
    let mut b = Client::connect(&server).await;
    a.ok("subscribe", json!({"channel": "x"})).await;
    b.ok("subscribe", json!({"channel": "x"})).await;
    hub.publish("x", &1).await.unwrap();

    // Lost in transit; the next delivery shows the gap.
    broker.down.store(true, Ordering::SeqCst);
    hub.publish("x", &2).await.unwrap();
    hub.publish("x", &3).await.unwrap();
    broker.down.store(false, Ordering::SeqCst);
    hub.publish("x", &4).await.unwrap();
    for c in [&mut a, &mut b] {
        let got = [
            c.next().await,
            c.next().await,
            c.next().await,
            c.next().await,
        ];
        assert_eq!(offsets(&got), [1, 2, 3, 4]);
        assert_eq!(
            got.iter()
                .map(|(_, p)| p["data"].clone())
                .collect::<Vec<_>>(),
            [1, 2, 3, 4]
        );
    }

    // Lost with nothing after: the broker's resubscribe signal recovers.
    broker.down.store(true, Ordering::SeqCst);
    hub.publish("x", &5).await.unwrap();
    broker.down.store(false, Ordering::SeqCst);
    broker.sink.get().unwrap().resubscribed();
    assert_eq!(a.next().await.1["offset"], 5);
    assert_eq!(b.next().await.1["offset"], 5);
    a.assert_silent().await;
    eventually("nothing held", || hub.stats().held_publications == 0).await;
    server.shutdown().await;
}

#[tokio::test]
async fn publications_history_no_longer_has_are_reported_lost() {
    let broker = Flaky::default();
    let (hub, server) = serve(Hub::builder().broker(broker.clone()).history("*", keep(2))).await;
    let mut a = Client::connect(&server).await;
    let r = a.ok("subscribe", json!({"channel": "x"})).await;
    let epoch = r["epoch"].clone();
    hub.publish("x", &1).await.unwrap();
    assert_eq!(a.next().await.1["offset"], 1);
    broker.down.store(true, Ordering::SeqCst);
    for i in 2..=6 {
        hub.publish("x", &i).await.unwrap();
    }
    broker.down.store(false, Ordering::SeqCst);
    broker.sink.get().unwrap().resubscribed();
    let (channel, lost) = a.next().await;
    assert_eq!(channel, "x");
    assert_eq!(lost, json!({"lost": {"offset": 6, "epoch": epoch}}));
    hub.publish("x", &7).await.unwrap();
    assert_eq!(a.next().await.1["offset"], 7, "live again after the loss");
    a.assert_silent().await;
    server.shutdown().await;
}

#[tokio::test]
async fn deliveries_repeated_by_the_broker_reach_subscribers_once() {
    let broker = Flaky::default();
    broker.twice.store(true, Ordering::SeqCst);
    let (hub, server) = serve(Hub::builder().broker(broker.clone())).await;
    let mut a = Client::connect(&server).await;
    a.ok("subscribe", json!({"channel": "x"})).await;
    for i in 1..=5 {
        hub.publish("x", &i).await.unwrap();
    }
    let got = [
        a.next().await,
        a.next().await,
        a.next().await,
        a.next().await,
        a.next().await,
    ];
    assert_eq!(offsets(&got), [1, 2, 3, 4, 5]);
    a.assert_silent().await;
    server.shutdown().await;
}

#[tokio::test]
async fn an_expired_history_starts_a_new_epoch_live_subscribers_follow() {
    let short = HistoryOptions {
        size: 10,
        ttl: Duration::from_millis(100),
    };
    let (hub, server) = serve(Hub::builder().history("*", short)).await;
    let mut a = Client::connect(&server).await;
    a.ok("subscribe", json!({"channel": "x"})).await;
    hub.publish("x", &1).await.unwrap();
    let (_, first) = a.next().await;
    // Past the ttl: the next publication starts a new stream.
    tokio::time::sleep(Duration::from_millis(250)).await;
    hub.publish("x", &2).await.unwrap();
    let (_, second) = a.next().await;
    assert_eq!(
        (first["offset"].as_u64(), second["offset"].as_u64()),
        (Some(1), Some(1))
    );
    assert_ne!(first["epoch"], second["epoch"], "a new epoch");
    assert_eq!(second["data"], 2);
    // The old position is gone: a client resuming from it is told.
    let b = Client::connect(&server).await;
    let r = b
        .ok(
            "subscribe",
            json!({"channel": "x", "since": {"offset": 1, "epoch": first["epoch"]}}),
        )
        .await;
    assert_eq!(r["recovered"], false);
    assert_eq!(r["epoch"], second["epoch"]);
    server.shutdown().await;
}
