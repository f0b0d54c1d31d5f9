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

use std::{
    collections::{BTreeMap, BTreeSet},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use cluster::{Cluster, Delivery, Node, WAIT, eventually, position, within};
use serde_json::{Value, json};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};

/// Checks that `got` are publications with offsets `first..=last` in
/// order, all of `epoch`.
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
    publications_in_order("publications_reach_every_node_once_and_in_order", &[]).await;
}

/// The same with `--write-delay` (deliveries batched per connection) and
/// `--publish-pacing` so short that answers are held often.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publications_reach_every_node_once_and_in_order_with_a_write_delay() {
    publications_in_order(
        "publications_reach_every_node_once_and_in_order_with_a_write_delay",
        &["--write-delay", "3ms", "--publish-pacing", "0.1ms"],
    )
    .await;
}

async fn publications_in_order(test: &str, extra: &[&str]) {
    const PUBLISHERS: usize = 3;
    const EACH: u64 = 200;
    const TOTAL: u64 = PUBLISHERS as u64 * EACH;
    let Some(cluster) = Cluster::start_with(test, 3, extra).await else {
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
                let data =
                    json!({"from": p, "seq": seq, "text": format!("é \"{p}/{seq}\" \u{1F600}")});
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
        let extra = subscriber.next_within(Duration::from_millis(50)).await;
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
    let extra = moved.next_within(Duration::from_millis(50)).await;
    assert!(extra.is_none(), "nothing more, got {extra:?}");
}

/// Whether `d` is a `{"lost": position}` notice; its position.
fn lost(d: &Delivery) -> Option<(u64, String)> {
    d.body.get("lost").map(position)
}

/// Checks what a subscriber got across a broker outage: within an epoch,
/// publications follow each other with no gap and no duplicate; a gap is
/// announced by a `{"lost": position}` notice first (the next publication
/// follows that position), and a new epoch starts either at offset 1 or
/// after such a notice. Returns the epochs seen, in order.
fn assert_no_silent_gap(who: &str, got: &[Delivery]) -> Vec<String> {
    let mut epochs: Vec<String> = Vec::new();
    // The position the next publication must follow.
    let mut at: Option<(u64, String)> = None;
    for (i, d) in got.iter().enumerate() {
        if let Some(position) = lost(d) {
            at = Some(position);
            continue;
        }
        let offset = d
            .offset()
            .unwrap_or_else(|| panic!("{who}: unexpected delivery {i}: {d:?}"));
        let epoch = d.epoch().to_owned();
        let follows = match &at {
            None => true,
            Some((o, e)) if *e == epoch => offset == o + 1,
            // Another epoch with no notice: only from its start.
            Some(_) => offset == 1,
        };
        assert!(
            follows,
            "{who}: delivery {i} {} does not follow {at:?} (a silent gap or a duplicate); \
             everything: {:?}",
            d.body,
            got.iter().map(|d| d.body.to_string()).collect::<Vec<_>>()
        );
        if epochs.last() != Some(&epoch) {
            epochs.push(epoch.clone());
        }
        at = Some((offset, epoch));
    }
    epochs
}

/// What a publisher saw: the positions of its successful publishes (by
/// the `n` in their data), and the `n` of those that failed.
#[derive(Default)]
struct Published {
    ok: BTreeMap<(String, u64), u64>,
    failed: BTreeSet<u64>,
}

/// Redis killed mid-stream, while a publisher on C publishes without
/// pause: publishing (and the other operations that need Redis) fails at
/// once with `broker unavailable` on every node, no node exits or stops
/// answering, and once Redis is back (empty: no persistence) the nodes
/// reconnect and resubscribe by themselves and publications flow across
/// nodes again, in a new epoch, with any gap announced by `lost`;
/// resuming from a position of the old epoch gives `recovered: false`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_ride_out_redis_killed_mid_stream() {
    /// The operation timeout (2 s) bounds every failure, plus room for a
    /// loaded machine; with Redis gone, connections are refused and
    /// operations fail well before it.
    const FAIL_FAST: Duration = Duration::from_secs(3);
    let Some(mut cluster) = Cluster::start("nodes_ride_out_redis_killed_mid_stream", 3).await
    else {
        return;
    };
    let mut subscribers = Vec::new();
    for node in &cluster.nodes[..2] {
        let client = node.client().await;
        client.subscribe(json!({"channel": "ticker"})).await;
        subscribers.push(client);
    }
    let publisher = cluster.nodes[2].client().await;
    let published = Arc::new(Mutex::new(Published::default()));
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let publishing = {
        let published = published.clone();
        tokio::spawn(async move {
            let mut n = 0;
            while !*stopped.borrow() {
                n += 1;
                let input = json!({"channel": "ticker", "data": {"n": n}});
                let started = Instant::now();
                let result = publisher.try_request("publish", &input).await;
                let took = started.elapsed();
                {
                    let mut published = published.lock().unwrap();
                    match result {
                        Ok(out) => {
                            let (offset, epoch) = position(&out);
                            published.ok.insert((epoch, offset), n);
                        }
                        Err(e) => {
                            assert!(
                                e.starts_with("broker unavailable"),
                                "publish {n}: expected `broker unavailable: ...`, got {e:?}"
                            );
                            assert!(took < FAIL_FAST, "publish {n} took {took:?} to fail");
                            published.failed.insert(n);
                        }
                    }
                }
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            publisher
        })
    };
    let mut received: Vec<Vec<Delivery>> = vec![Vec::new(); subscribers.len()];
    for (s, got) in subscribers.iter_mut().zip(&mut received) {
        got.extend(s.publications("ticker", 20).await);
    }
    let old_epoch = received[0][0].epoch().to_owned();

    cluster.redis.stop().await;
    eventually(WAIT, "publishes fail without Redis", || async {
        let failed = published.lock().unwrap().failed.len();
        if failed >= 5 {
            Ok(())
        } else {
            Err(format!("{failed} failed"))
        }
    })
    .await;
    // The other operations that need Redis, on the other nodes.
    let attempts = [
        (
            &subscribers[0],
            "publish",
            json!({"channel": "ticker", "data": "x"}),
        ),
        (
            &subscribers[1],
            "publish",
            json!({"channel": "ticker", "data": "x"}),
        ),
        (&subscribers[0], "subscribe", json!({"channel": "other"})),
        (&subscribers[1], "history", json!({"channel": "ticker"})),
        (&subscribers[0], "presence", json!({"channel": "ticker"})),
    ];
    for (client, op, input) in attempts {
        let started = Instant::now();
        let result = client.try_request(op, &input).await;
        let took = started.elapsed();
        match result {
            Err(e) if e.starts_with("broker unavailable") => {}
            other => panic!(
                "{op} on {} without Redis: expected `broker unavailable: ...`, got {other:?}",
                client.node
            ),
        }
        assert!(
            took < FAIL_FAST,
            "{op} on {} took {took:?} to fail",
            client.node
        );
    }
    for node in &mut cluster.nodes {
        node.assert_serving().await;
    }
    for s in &subscribers {
        assert!(
            !s.peer.is_closed(),
            "{}: the subscriber stays connected",
            s.node
        );
    }

    cluster.redis.restart().await;
    // Publications of the new epoch reach both subscribers.
    for (s, got) in subscribers.iter_mut().zip(&mut received) {
        let who = format!("subscriber on {}", s.node);
        within(
            WAIT,
            &format!("{who}: publications after the restart"),
            async {
                let mut new = 0;
                while new < 10 {
                    let d = s.next().await;
                    if d.offset().is_some() && d.epoch() != old_epoch {
                        new += 1;
                    }
                    got.push(d);
                }
            },
        )
        .await;
    }
    stop.send_replace(true);
    let publisher = within(WAIT, "the publisher", publishing)
        .await
        .expect("the publisher panicked");
    // A last one, to know when everything published has arrived.
    let (last, new_epoch) = publisher.publish("ticker", json!({"n": 0})).await;
    assert_ne!(new_epoch, old_epoch, "Redis restarted empty: a new epoch");
    let published = std::mem::take(&mut *published.lock().unwrap());
    // The publisher's own view: two epochs, each with offsets from 1 and
    // no gap (a publish that failed when Redis died may still have run,
    // but then it was the old epoch's last).
    let epochs: BTreeSet<&String> = published.ok.keys().map(|(e, _)| e).collect();
    assert_eq!(
        epochs,
        BTreeSet::from([&old_epoch, &new_epoch]),
        "the epochs of the publishes that succeeded"
    );
    for epoch in [&old_epoch, &new_epoch] {
        let offsets: Vec<u64> = published
            .ok
            .keys()
            .filter(|(e, _)| e == epoch)
            .map(|(_, o)| *o)
            .collect();
        assert_eq!(
            offsets,
            (1..=offsets.len() as u64).collect::<Vec<_>>(),
            "the publisher's offsets in epoch {epoch}: {}",
            summarize(&offsets)
        );
    }

    for (s, got) in subscribers.iter_mut().zip(&mut received) {
        while got.last().and_then(Delivery::offset) != Some(last) {
            got.push(s.next().await);
        }
        let who = format!("subscriber on {}", s.node);
        let epochs = assert_no_silent_gap(&who, got);
        assert_eq!(
            epochs,
            [old_epoch.clone(), new_epoch.clone()],
            "{who}: the epochs"
        );
        for d in got.iter().filter(|d| d.offset().is_some()) {
            let key = (d.epoch().to_owned(), d.offset().unwrap());
            let n = d.body["data"]["n"].as_u64().expect("n");
            match published.ok.get(&key) {
                Some(want) => assert_eq!(n, *want, "{who}: data of {key:?}"),
                None if key == (new_epoch.clone(), last) => assert_eq!(n, 0),
                None => assert!(
                    published.failed.contains(&n),
                    "{who}: {key:?} holds {n}, which was neither published there nor failed"
                ),
            }
        }
    }

    // Resuming from the old epoch: Redis lost that history.
    let (old_last, _) = published
        .ok
        .keys()
        .filter(|(e, _)| *e == old_epoch)
        .map(|(e, o)| (*o, e.clone()))
        .next_back()
        .unwrap();
    let resumer = cluster.nodes[1].client().await;
    let out = resumer
        .subscribe(json!({"channel": "ticker", "since": {"offset": old_last, "epoch": old_epoch}}))
        .await;
    assert_eq!(out["recovered"], false, "{out}");
    assert_eq!(out["publications"], json!([]), "{out}");
    assert_eq!(position(&out), (last, new_epoch), "{out}");
    // The subscribe that failed during the outage left nothing behind: it
    // works now, with presence, and delivers.
    let retrier = &mut subscribers[0];
    retrier
        .subscribe(json!({"channel": "other", "presence": true}))
        .await;
    assert_eq!(
        resumer.presence("other").await.len(),
        1,
        "presence of other"
    );
    let (offset, _) = resumer.publish("other", json!("after the outage")).await;
    let got = retrier.publications("other", 1).await;
    assert_eq!(got[0].offset(), Some(offset));
    assert_eq!(got[0].body["data"], "after the outage");
    for node in &mut cluster.nodes {
        node.assert_serving().await;
    }
}

/// Presence comes back with Redis: a Redis restarted empty forgets who is
/// in a channel, and the nodes enter their live members again as soon as
/// they are reconnected, not only at their next periodic refresh (25 s
/// later at worst); `presence` lists them on every node again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn presence_is_restored_after_a_redis_restart() {
    let Some(mut cluster) = Cluster::start("presence_is_restored_after_a_redis_restart", 2).await
    else {
        return;
    };
    let mut members = Vec::new();
    for node in &cluster.nodes {
        let member = node.client().await;
        member
            .subscribe(json!({"channel": "lobby", "presence": true}))
            .await;
        members.push(member);
    }
    let before = members[0].presence("lobby").await;
    assert_eq!(before.len(), 2, "both members: {before:?}");

    cluster.redis.restart().await;
    // Both nodes are back on Redis once a publication reaches both
    // members (a node that is not yet back has it recovered later).
    let publisher = cluster.nodes[0].client().await;
    for member in &mut members {
        let who = format!("the member on {}", member.node);
        within(
            WAIT,
            &format!("{who}: a publication after the restart"),
            async {
                loop {
                    match publisher
                        .try_request("publish", &json!({"channel": "lobby", "data": "hello"}))
                        .await
                    {
                        Ok(_) => {}
                        Err(e) => assert!(e.starts_with("broker unavailable"), "publish: {e}"),
                    }
                    while let Some(d) = member.next_within(Duration::from_millis(20)).await {
                        if d.offset().is_some() {
                            return;
                        }
                    }
                }
            },
        )
        .await;
    }
    for (n, node) in cluster.nodes.iter().enumerate() {
        let observer = node.client().await;
        eventually(
            Duration::from_secs(5),
            &format!("both members listed again on node{n}"),
            || async {
                let listed = observer.presence("lobby").await;
                if listed == before {
                    Ok(())
                } else {
                    Err(format!("{listed:?}, before the restart {before:?}"))
                }
            },
        )
        .await;
    }
}

/// A node killed outright (SIGKILL): its clients see their connection
/// close, the other nodes go on serving, and a client of the dead node
/// resumes on another node from its last position: the history is in
/// Redis, so nothing is lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_nodes_clients_resume_on_another_node() {
    let Some(mut cluster) =
        Cluster::start("a_killed_nodes_clients_resume_on_another_node", 3).await
    else {
        return;
    };
    let mut orphan = cluster.nodes[0].client().await;
    orphan.subscribe(json!({"channel": "orders"})).await;
    let mut bystander = cluster.nodes[1].client().await;
    bystander.subscribe(json!({"channel": "orders"})).await;
    let publisher = cluster.nodes[2].client().await;
    let mut epoch = String::new();
    for n in 1..=10 {
        (_, epoch) = publisher.publish("orders", json!({"n": n})).await;
    }
    let got = orphan.publications("orders", 10).await;
    assert_run("the subscriber on A", &got, &epoch, 1, 10);
    let since = json!({"offset": 10, "epoch": epoch});
    let got = bystander.publications("orders", 10).await;
    assert_run("the subscriber on B", &got, &epoch, 1, 10);

    cluster.nodes[0].kill().await;
    orphan.closed().await;
    for n in 11..=20 {
        publisher.publish("orders", json!({"n": n})).await;
    }
    let got = bystander.publications("orders", 10).await;
    assert_run("the subscriber on B", &got, &epoch, 11, 20);

    let mut resumed = cluster.nodes[1].client().await;
    let out = resumed
        .subscribe(json!({"channel": "orders", "since": since}))
        .await;
    assert_eq!(out["recovered"], true, "{out}");
    let recovered: Vec<Delivery> = out["publications"]
        .as_array()
        .unwrap_or_else(|| panic!("{out}"))
        .iter()
        .map(|p| Delivery {
            channel: "orders".to_owned(),
            body: p.clone(),
        })
        .collect();
    assert_run(
        "the resumed subscriber's result",
        &recovered,
        &epoch,
        11,
        20,
    );
    for n in 21..=25 {
        publisher.publish("orders", json!({"n": n})).await;
    }
    let live = resumed.publications("orders", 5).await;
    assert_run("the resumed subscriber", &live, &epoch, 21, 25);
    for d in recovered.iter().chain(&live) {
        assert_eq!(d.body["data"]["n"], d.body["offset"], "data intact: {d:?}");
    }
    for node in &mut cluster.nodes[1..] {
        node.assert_serving().await;
    }
}

/// Field `field` (0 min, 1 default, 2 max) of
/// `/proc/sys/net/ipv4/{name}`, in bytes, or `fallback` if unreadable.
fn tcp_buffer(name: &str, field: usize, fallback: usize) -> usize {
    std::fs::read_to_string(format!("/proc/sys/net/ipv4/{name}"))
        .ok()
        .and_then(|s| s.split_whitespace().nth(field)?.parse().ok())
        .unwrap_or(fallback)
}

/// A gotalk request frame, by hand: `r`, the 4-byte id, the operation's
/// length (3 hex digits) and name, the payload's length (8 hex digits) and
/// the payload.
fn request_frame(id: &str, op: &str, payload: &[u8]) -> Vec<u8> {
    let mut frame = format!("r{id}{:03x}{op}{:08x}", op.len(), payload.len()).into_bytes();
    frame.extend_from_slice(payload);
    frame
}

/// A subscriber that stops reading (a raw TCP connection that subscribed
/// and then reads nothing) on node A does not slow anyone down: the
/// subscribers that read, on A and on B, get every publication, and node A
/// closes the stalled connection once its write queue passes the bound
/// (8 MiB by default) instead of holding everything for it, and its
/// presence entry goes with it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscriber_that_stops_reading_is_dropped_and_slows_no_one() {
    /// The per-connection write-queue bound of `gotalk serve` (the
    /// default `max_write_queue_bytes`).
    const QUEUE_BOUND: usize = 8 << 20;
    const PAD: usize = 8 * 1024;
    /// Publications in flight between checks that the readers keep up, so
    /// that their own queues stay far below the bound.
    const BATCH: u64 = 250;
    // Half as much again as the bound plus what the kernel takes in for a
    // reader that stops (the server's send buffer, autotuned up to
    // tcp_wmem's maximum, and the reader's receive buffer, which stays at
    // tcp_rmem's default when nothing is read): ~2 400 publications with
    // Linux's defaults.
    let kernel = tcp_buffer("tcp_wmem", 2, 4 << 20) + tcp_buffer("tcp_rmem", 1, 128 << 10);
    let messages = ((QUEUE_BOUND + kernel) * 3 / 2 / PAD) as u64;
    let Some(mut cluster) = Cluster::start(
        "a_subscriber_that_stops_reading_is_dropped_and_slows_no_one",
        2,
    )
    .await
    else {
        return;
    };
    let mut stalled = within(
        WAIT,
        "raw connect",
        TcpStream::connect(cluster.nodes[0].addr()),
    )
    .await
    .expect("connect to node A");
    stalled.set_nodelay(true).unwrap();
    stalled.write_all(b"01").await.unwrap();
    stalled
        .write_all(&request_frame(
            "0001",
            "subscribe",
            br#"{"channel":"bulk","presence":true}"#,
        ))
        .await
        .unwrap();
    // The version, then the subscribe's result: `R0001`, the length, JSON.
    let mut head = [0; 2 + 5 + 8];
    within(WAIT, "the subscribe result", stalled.read_exact(&mut head))
        .await
        .expect("read the subscribe result");
    assert_eq!(
        &head[..7],
        b"01R0001",
        "{:?}",
        String::from_utf8_lossy(&head)
    );
    let len = usize::from_str_radix(std::str::from_utf8(&head[7..]).unwrap(), 16).unwrap();
    let mut result = vec![0; len];
    within(
        WAIT,
        "the subscribe result",
        stalled.read_exact(&mut result),
    )
    .await
    .unwrap();
    let result: Value = serde_json::from_slice(&result).unwrap();
    assert_eq!(result["offset"], 0, "{result}");
    // From here on it reads nothing.

    let mut readers = Vec::new();
    for node in &cluster.nodes {
        let reader = node.client().await;
        reader.subscribe(json!({"channel": "bulk"})).await;
        readers.push(reader);
    }
    let stalled_id = readers[1].presence("bulk").await;
    assert_eq!(stalled_id.len(), 1, "the stalled subscriber is in presence");
    let mut publishers = Vec::new();
    for _ in 0..4 {
        publishers.push(Arc::new(cluster.nodes[1].client().await));
    }
    let count = publishers.len() as u64;
    let pad = "x".repeat(PAD);
    let mut epoch = String::new();
    let mut next = 1;
    while next <= messages {
        let end = (next + BATCH - 1).min(messages);
        let tasks: Vec<_> = publishers
            .iter()
            .enumerate()
            .map(|(p, publisher)| {
                let (publisher, pad) = (publisher.clone(), pad.clone());
                let ns: Vec<u64> = (next..=end).filter(|n| n % count == p as u64).collect();
                tokio::spawn(async move {
                    let mut epoch = String::new();
                    for n in ns {
                        (_, epoch) = publisher.publish("bulk", json!({"n": n, "pad": pad})).await;
                    }
                    epoch
                })
            })
            .collect();
        for task in tasks {
            epoch = within(WAIT, "a batch of publishes", task)
                .await
                .expect("a publisher panicked");
        }
        for reader in &mut readers {
            let got = reader.publications("bulk", (end - next + 1) as usize).await;
            assert_run(
                &format!("the reader on {}", reader.node),
                &got,
                &epoch,
                next,
                end,
            );
            for d in &got {
                assert_eq!(d.body["data"]["pad"].as_str().map(str::len), Some(PAD));
            }
        }
        next = end + 1;
    }

    // Node A gave up on the stalled connection: reading it now finds what
    // the kernel buffered, then the end, well short of everything.
    let mut buffered = 0;
    let mut chunk = vec![0; 256 * 1024];
    let ended = within(WAIT, "node A to close the stalled connection", async {
        loop {
            match stalled.read(&mut chunk).await {
                Ok(0) => return "end of stream".to_owned(),
                Ok(n) => buffered += n,
                Err(e) => return e.to_string(),
            }
        }
    })
    .await;
    let everything = messages as usize * PAD;
    assert!(
        buffered < everything * 3 / 4,
        "the stalled connection ({ended}) was sent {buffered} bytes of the {everything}"
    );
    for reader in &readers {
        assert!(!reader.peer.is_closed(), "the reader on {}", reader.node);
    }
    // Its session ended like any other: out of presence, seen from B.
    let far = &readers[1];
    eventually(WAIT, "the dropped subscriber leaves presence", || async {
        let listed = far.presence("bulk").await;
        if listed.is_empty() {
            Ok(())
        } else {
            Err(format!("{listed:?}, the dropped one: {stalled_id:?}"))
        }
    })
    .await;
    cluster.nodes[0].assert_serving().await;
}

/// 10 000 subscribe/unsubscribe cycles through one connection, each on a
/// channel of its own (every tenth entering presence, with events), leave
/// nothing behind: no subscription counted against the connection's limit
/// of 256, no presence entry, no Redis subscription or presence key, no
/// growth of the node's memory beyond noise. (The hub's own counters,
/// `Hub::stats`, are not served over the wire, so this looks from the
/// outside: the wire, Redis and /proc.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscription_churn_leaves_nothing_behind() {
    const CHURNS: usize = 10_000;
    /// Cycles run at once (on distinct channels), so that the run is not
    /// one client round trip per request.
    const LANES: usize = 6;
    /// Cycles before the first memory reading: allocator pools and maps
    /// at their working size.
    const WARMUP: usize = 2_000;
    /// Allowed RSS growth over the cycles after the warm-up. Noise is a few
    /// hundred KiB; keeping as little as 200 bytes per cycle (a channel's
    /// entry in the node's tables, a subscription in the session) would
    /// pass it.
    const RSS_SLACK_KIB: u64 = 1536;
    let Some(cluster) = Cluster::start("subscription_churn_leaves_nothing_behind", 1).await else {
        return;
    };
    let node = &cluster.nodes[0];
    let client = Arc::new(node.client().await);
    let churn = |range: std::ops::Range<usize>| {
        let tasks: Vec<_> = (0..LANES)
            .map(|lane| {
                let client = client.clone();
                let range = range.clone();
                tokio::spawn(async move {
                    for i in range.filter(|i| i % LANES == lane) {
                        let channel = format!("churn:{i}");
                        let presence = i % 10 == 0;
                        client
                            .subscribe(json!({"channel": channel, "presence": presence, "events": presence}))
                            .await;
                        let out = client
                            .request("unsubscribe", &json!({"channel": channel}))
                            .await;
                        assert_eq!(out, json!({}), "unsubscribe {channel}");
                    }
                })
            })
            .collect();
        async move {
            for task in tasks {
                within(3 * WAIT, "a churning lane", task)
                    .await
                    .expect("a churning lane panicked");
            }
        }
    };
    churn(0..WARMUP).await;
    let rss_warm = node.rss_kib();
    churn(WARMUP..CHURNS).await;
    let rss_end = node.rss_kib();
    assert!(
        rss_end < rss_warm + RSS_SLACK_KIB,
        "the node's RSS grew from {rss_warm} KiB to {rss_end} KiB over {} cycles",
        CHURNS - WARMUP
    );
    let mut client = Arc::into_inner(client).expect("the lanes are done");
    // What arrived: join events only (its own, while it was subscribed
    // with events), never a publication or a leave.
    let arrived = client.drain();
    let mut ids = BTreeSet::new();
    for d in &arrived {
        let id = d.body["join"]["client"]
            .as_str()
            .unwrap_or_else(|| panic!("only join events, got {d:?}"));
        ids.insert(id.to_owned());
    }
    assert!(ids.len() <= 1, "joins of one client only: {ids:?}");
    assert!(arrived.len() <= CHURNS / 10, "{} joins", arrived.len());
    // Nothing in presence, seen from a new connection.
    let observer = node.client().await;
    for i in (0..CHURNS).step_by(10).step_by(25) {
        let channel = format!("churn:{i}");
        assert_eq!(
            observer.presence(&channel).await,
            Vec::<String>::new(),
            "presence of {channel}"
        );
    }
    // Nothing left at Redis: the node unsubscribed from every channel and
    // removed every presence entry.
    let mut redis = cluster.redis_connection().await;
    let subscribed: Vec<String> = redis::cmd("PUBSUB")
        .arg("CHANNELS")
        .query_async(&mut redis)
        .await
        .unwrap();
    assert_eq!(subscribed, Vec::<String>::new(), "Redis pub/sub channels");
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg("*presence*")
        .query_async(&mut redis)
        .await
        .unwrap();
    assert_eq!(keys, Vec::<String>::new(), "presence keys");
    // The connection can subscribe again, and gets a publication once.
    client.subscribe(json!({"channel": "churn:7"})).await;
    observer.publish("churn:7", json!("once")).await;
    let got = client.publications("churn:7", 1).await;
    assert_eq!(got[0].body["data"], "once");
    let extra = client.next_within(Duration::from_millis(50)).await;
    assert!(extra.is_none(), "one delivery only, then {extra:?}");
}

/// Two hubs on one Redis with their own `--redis-prefix` stay apart: the
/// same channel name is two channels, with their own subscribers,
/// offsets, presence and history.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_prefixes_keep_hubs_apart() {
    let Some(mut cluster) = Cluster::start("redis_prefixes_keep_hubs_apart", 0).await else {
        return;
    };
    let url = cluster.redis.url();
    for (name, prefix) in [("blue", "blue:"), ("green", "green:")] {
        let node = Node::start(name.to_owned(), &url, &["--redis-prefix", prefix]).await;
        cluster.nodes.push(node);
    }
    let mut clients = Vec::new();
    for node in &cluster.nodes {
        let client = node.client().await;
        client
            .subscribe(json!({"channel": "news", "presence": true}))
            .await;
        clients.push(client);
    }
    let (offset, _) = clients[0].publish("news", json!("blue news")).await;
    assert_eq!(offset, 1);
    let (offset, _) = clients[1].publish("news", json!("green news")).await;
    assert_eq!(offset, 1, "green's channel has its own offsets");
    for (client, want) in clients.iter_mut().zip(["blue news", "green news"]) {
        let got = client.publications("news", 1).await;
        assert_eq!(got[0].body["data"], want, "on {}", client.node);
        let extra = client.next_within(Duration::from_millis(100)).await;
        assert!(
            extra.is_none(),
            "{}: the other hub's news: {extra:?}",
            client.node
        );
        assert_eq!(client.presence("news").await.len(), 1, "{}", client.node);
        let history = client.request("history", &json!({"channel": "news"})).await;
        let data: Vec<&Value> = history["publications"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| &p["data"])
            .collect();
        assert_eq!(data, [&json!(want)], "{}: history", client.node);
    }
}

/// `serve --hub --redis URL` with no Redis there does not start: it says
/// why and exits 2, promptly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_without_redis_says_so_and_exits() {
    // A port nothing listens on: bound, then released.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .unwrap()
        .port();
    let url = format!("redis://127.0.0.1:{port}/");
    let started = Instant::now();
    let output = within(
        WAIT,
        "serve without Redis to exit",
        tokio::process::Command::new(cluster::BIN)
            .args(["serve", "--hub", "--redis", &url, "--addr", "127.0.0.1:0"])
            .stdin(std::process::Stdio::null())
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("run gotalk serve");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "stderr: {stderr}");
    assert!(
        stderr.contains("cannot start the hub") && stderr.contains("broker unavailable"),
        "stderr: {stderr}"
    );
    assert!(output.stdout.is_empty(), "it never listened");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "it took {:?} to give up",
        started.elapsed()
    );
}

/// A Redis that stops answering without closing its connections
/// (SIGSTOP): a publish fails with `broker unavailable` after the
/// operation timeout (2 s) instead of hanging, the node goes on answering
/// what does not need Redis, and once Redis resumes publishing works and
/// deliveries flow again, in the same epoch with no gap (the publish that
/// timed out may have happened after all: it is then delivered in its
/// place).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_redis_times_operations_out_and_the_cluster_resumes() {
    /// The operation timeout, plus room for a loaded machine.
    const BOUND: Duration = Duration::from_secs(5);
    let Some(mut cluster) = Cluster::start(
        "a_frozen_redis_times_operations_out_and_the_cluster_resumes",
        2,
    )
    .await
    else {
        return;
    };
    let mut subscriber = cluster.nodes[1].client().await;
    subscriber.subscribe(json!({"channel": "frozen"})).await;
    let publisher = cluster.nodes[0].client().await;
    let (_, epoch) = publisher.publish("frozen", json!({"n": 1})).await;
    subscriber.publications("frozen", 1).await;

    cluster.redis.signal("STOP").await;
    let started = Instant::now();
    let result = publisher
        .try_request("publish", &json!({"channel": "frozen", "data": {"n": 2}}))
        .await;
    let took = started.elapsed();
    match result {
        Err(e) if e.starts_with("broker unavailable") => {}
        other => panic!("publish to a frozen Redis: {other:?}"),
    }
    assert!(took < BOUND, "the publish took {took:?} to fail");
    // Meanwhile the nodes serve what needs no Redis.
    for node in &mut cluster.nodes {
        node.assert_serving().await;
    }
    cluster.redis.signal("CONT").await;

    let (last, e) = publisher.publish("frozen", json!({"n": 3})).await;
    assert_eq!(e, epoch, "Redis kept its data: the same epoch");
    let mut got = subscriber.publications("frozen", (last - 1) as usize).await;
    assert_run("the subscriber", &got, &epoch, 2, last);
    let ns: Vec<&Value> = got.iter().map(|d| &d.body["data"]["n"]).collect();
    assert!(
        ns == [&json!(3)] || ns == [&json!(2), &json!(3)],
        "after the freeze: {ns:?}"
    );
    got.extend(subscriber.drain());
    assert_eq!(got.len() as u64, last - 1, "nothing more: {got:?}");
}
