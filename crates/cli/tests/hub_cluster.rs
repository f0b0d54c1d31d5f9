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

/// Presence is the cluster's: clients that entered on three nodes are
/// listed by `presence` on every node, and one whose connection closes
/// leaves it everywhere, with a `leave` event on the other nodes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn presence_is_cluster_wide() {
    let Some(cluster) = Cluster::start("presence_is_cluster_wide", 3).await else {
        return;
    };
    // Watchers of join and leave events, on A and on C.
    let mut watchers = Vec::new();
    for n in [0, 2] {
        let watcher = cluster.nodes[n].client().await;
        watcher
            .subscribe(json!({"channel": "room", "events": true}))
            .await;
        watchers.push(watcher);
    }
    // One member per node, entering one after the other: each one's id is
    // what the list gained.
    let mut members = Vec::new();
    let mut ids: Vec<String> = Vec::new();
    for node in &cluster.nodes {
        let member = node.client().await;
        member
            .subscribe(json!({"channel": "room", "presence": true}))
            .await;
        let listed = member.presence("room").await;
        let new: Vec<&String> = listed.iter().filter(|c| !ids.contains(c)).collect();
        assert_eq!(
            (listed.len(), new.len()),
            (ids.len() + 1, 1),
            "the list on {} after it entered: {listed:?} (before: {ids:?})",
            node.name()
        );
        ids.push(new[0].clone());
        members.push(member);
    }
    let mut all = ids.clone();
    all.sort();
    for node in &cluster.nodes {
        let observer = node.client().await;
        assert_eq!(
            observer.presence("room").await,
            all,
            "presence on {}",
            node.name()
        );
        observer.close().await;
    }
    // The watchers saw the three joins (with the clients' ids), in order.
    for watcher in &mut watchers {
        for id in &ids {
            let d = watcher.next().await;
            assert_eq!(
                d.body,
                json!({"join": {"user": "", "client": id}}),
                "a join event on {}",
                watcher.node
            );
        }
    }

    // B's member goes away: gone from the list on A, and a leave event
    // reaches the watchers on A and C.
    let gone = ids[1].clone();
    members.remove(1).close().await;
    let remaining: Vec<String> = all.iter().filter(|c| **c != gone).cloned().collect();
    let on_a = &members[0];
    eventually(WAIT, "B's member leaves the presence seen on A", || async {
        let listed = on_a.presence("room").await;
        if listed == remaining {
            Ok(())
        } else {
            Err(format!("{listed:?}"))
        }
    })
    .await;
    for watcher in &mut watchers {
        let d = watcher.next().await;
        assert_eq!(
            d.body,
            json!({"leave": {"user": "", "client": gone}}),
            "the leave event on {}",
            watcher.node
        );
    }
}

/// A subscriber that moves from node A to node C resumes from its last
/// position: `recovered: true`, what it missed in the result, then live
/// publications, with no gap and no duplicate, while a publisher on B goes
/// on publishing throughout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscriber_moving_to_another_node_resumes_without_gap_or_duplicate() {
    const BEFORE: u64 = 20;
    const AWAY: u64 = 30;
    const RACING: u64 = 50;
    let Some(cluster) = Cluster::start(
        "a_subscriber_moving_to_another_node_resumes_without_gap_or_duplicate",
        3,
    )
    .await
    else {
        return;
    };
    let (a, b, c) = (&cluster.nodes[0], &cluster.nodes[1], &cluster.nodes[2]);
    let publisher = b.client().await;
    let mut subscriber = a.client().await;
    subscriber.subscribe(json!({"channel": "moves"})).await;
    let mut epoch = String::new();
    for n in 1..=BEFORE {
        let (offset, e) = publisher.publish("moves", json!({"n": n})).await;
        assert_eq!(offset, n);
        epoch = e;
    }
    let got = subscriber.publications("moves", BEFORE as usize).await;
    assert_run("the subscriber on A", &got, &epoch, 1, BEFORE);
    let last = got.last().unwrap();
    let since = json!({"offset": last.offset(), "epoch": last.epoch()});
    subscriber.close().await;

    // Missed while away.
    for n in BEFORE + 1..=BEFORE + AWAY {
        publisher.publish("moves", json!({"n": n})).await;
    }
    // And more while it resubscribes on C.
    let racing = tokio::spawn(async move {
        let mut last = 0;
        for n in BEFORE + AWAY + 1..=BEFORE + AWAY + RACING {
            (last, _) = publisher.publish("moves", json!({"n": n})).await;
        }
        last
    });
    let mut moved = c.client().await;
    let out = moved
        .subscribe(json!({"channel": "moves", "since": since}))
        .await;
    assert_eq!(out["recovered"], true, "resume on C: {out}");
    assert_eq!(out["epoch"], epoch.as_str(), "resume on C: {out}");
    let recovered: Vec<Delivery> = out["publications"]
        .as_array()
        .unwrap_or_else(|| panic!("no publications in {out}"))
        .iter()
        .map(|p| Delivery {
            channel: "moves".to_owned(),
            body: p.clone(),
        })
        .collect();
    assert!(
        recovered.len() as u64 >= AWAY,
        "the {AWAY} missed are in the result, got {}",
        recovered.len()
    );
    let (through, _) = position(&out);
    let end = within(WAIT, "the racing publisher", racing)
        .await
        .expect("the publisher panicked");
    assert_eq!(end, BEFORE + AWAY + RACING);
    let live = moved.publications("moves", (end - through) as usize).await;
    let all: Vec<Delivery> = recovered.into_iter().chain(live).collect();
    assert_run("the subscriber moved to C", &all, &epoch, BEFORE + 1, end);
    for d in &all {
        assert_eq!(d.body["data"]["n"], d.body["offset"], "data intact: {d:?}");
    }
    let extra = moved.next_within(std::time::Duration::from_millis(50)).await;
    assert!(extra.is_none(), "nothing more, got {extra:?}");
}
