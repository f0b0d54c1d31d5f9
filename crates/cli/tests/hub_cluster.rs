//! Multi-node hub: separate `gotalk serve --hub --redis URL` processes on
//! one real `redis-server`, driven by gotalk clients over TCP.
//!
//! Each test starts its own Redis (loopback, ephemeral port, no
//! persistence) and its own nodes; every process dies with its test. A
//! missing `redis-server` skips these tests with a message, and fails them
//! in CI (`CI=true`); `bash crates/hub/tests/redis/setup.sh` installs it.

#[path = "../../hub/tests/support/redis_server.rs"]
mod redis_server;

mod cluster;

use std::collections::{BTreeMap, BTreeSet};

use cluster::{Client, Cluster, Delivery, WAIT, eventually, position, within};
use serde_json::{Value, json};

/// Checks that `got` are publications with offsets `first..=last` in
/// order, all of `epoch`, and returns their data by offset.
fn assert_run(who: &str, got: &[Delivery], epoch: &str, first: u64, last: u64) {
    let offsets: Vec<u64> = got.iter().map(|d| d.offset().unwrap_or(0)).collect();
    let want: Vec<u64> = (first..=last).collect();
    assert!(
        offsets == want,
        "{who}: expected offsets {first}..={last} once each in order, got {} deliveries: {}",
        offsets.len(),
        summarize(&offsets)
    );
    for d in got {
        assert_eq!(d.epoch(), epoch, "{who}: epoch of offset {:?}", d.offset());
    }
}

/// A short description of a list of offsets: its runs (`1..=5, 7, 9..=12`).
fn summarize(offsets: &[u64]) -> String {
    let mut runs: Vec<String> = Vec::new();
    let mut i = 0;
    while i < offsets.len() {
        let start = offsets[i];
        let mut j = i;
        while j + 1 < offsets.len() && offsets[j + 1] == offsets[j] + 1 {
            j += 1;
        }
        runs.push(if j == i {
            start.to_string()
        } else {
            format!("{start}..={}", offsets[j])
        });
        i = j + 1;
    }
    if runs.len() > 20 {
        let tail = runs.split_off(runs.len() - 5);
        runs.truncate(15);
        runs.push("...".to_owned());
        runs.extend(tail);
    }
    runs.join(", ")
}

/// Publishers on three nodes at once, subscribers on all three: every
/// subscriber gets every publication exactly once, in offset order (one
/// order for the whole cluster), with its data intact.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publications_reach_every_node_once_and_in_order() {
    const PUBLISHERS: usize = 3;
    const EACH: u64 = 200;
    const TOTAL: u64 = PUBLISHERS as u64 * EACH;
    let Some(cluster) = Cluster::start("publications_reach_every_node_once_and_in_order", 3).await
    else {
        return;
    };
    let mut subscribers = Vec::new();
    for node in &cluster.nodes {
        for _ in 0..2 {
            let client = node.client().await;
            let out = client.subscribe(json!({"channel": "feed"})).await;
            assert_eq!(out["offset"], 0, "a new channel: {out}");
            subscribers.push(client);
        }
    }

    let mut publishing = Vec::new();
    for (p, node) in cluster.nodes.iter().enumerate() {
        let client = node.client().await;
        publishing.push(tokio::spawn(async move {
            let mut sent = Vec::new();
            for seq in 0..EACH {
                let data = json!({"from": p, "seq": seq, "text": format!("é \"{p}/{seq}\" \u{1F600}")});
                let (offset, epoch) = client.publish("feed", data.clone()).await;
                sent.push((offset, epoch, data));
            }
            client.close().await;
            sent
        }));
    }
    // What each offset holds, from the publishers' results.
    let mut published: BTreeMap<u64, Value> = BTreeMap::new();
    let mut epochs = BTreeSet::new();
    for (p, task) in publishing.into_iter().enumerate() {
        let sent = within(WAIT, "the publishers", task)
            .await
            .expect("a publisher panicked");
        let offsets: Vec<u64> = sent.iter().map(|(o, _, _)| *o).collect();
        assert!(
            offsets.windows(2).all(|w| w[0] < w[1]),
            "publisher {p}: its own publications got increasing offsets: {}",
            summarize(&offsets)
        );
        for (offset, epoch, data) in sent {
            epochs.insert(epoch);
            assert!(
                published.insert(offset, data).is_none(),
                "offset {offset} given to two publications"
            );
        }
    }
    assert_eq!(epochs.len(), 1, "one epoch for the channel: {epochs:?}");
    let epoch = epochs.pop_first().unwrap();
    assert_eq!(
        published.keys().copied().collect::<Vec<_>>(),
        (1..=TOTAL).collect::<Vec<_>>(),
        "the {TOTAL} publications got offsets 1..={TOTAL}"
    );

    for (i, subscriber) in subscribers.iter_mut().enumerate() {
        let who = format!("subscriber {i} on {}", subscriber.node);
        let got = subscriber.publications("feed", TOTAL as usize).await;
        assert_run(&who, &got, &epoch, 1, TOTAL);
        for d in &got {
            let offset = d.offset().unwrap();
            assert_eq!(
                d.body["data"], published[&offset],
                "{who}: data of offset {offset}"
            );
            assert!(
                d.body["info"]["client"].is_string(),
                "{who}: the publisher's info: {}",
                d.body
            );
        }
        let extra = subscriber.next_within(std::time::Duration::from_millis(50)).await;
        assert!(extra.is_none(), "{who}: nothing more, got {extra:?}");
    }
}
