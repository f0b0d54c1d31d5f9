//! The broker contract (see `gotalk_hub::broker`), one function per
//! guarantee, written over `Arc<dyn Broker>` so that every broker runs the
//! same checks.
//!
//! A [`Node`] is one started broker with a [`Recorder`] as its sink. The
//! functions that take `&[Node]` want nodes sharing one backend (several
//! Redis brokers on one Redis; a single node for an in-process broker) and
//! use the channels they name, so give each call a fresh backend or
//! distinct nodes.
// Shared by several test crates, each using part of it.
#![allow(dead_code)]

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use bytes::Bytes;
use gotalk_hub::broker::{
    Broker, BrokerSink, ClientInfo, Delivery, HistoryOptions, HistoryQuery, Publication,
    PublishOptions, StreamPosition,
};
use tokio::{
    sync::watch,
    time::{Instant, sleep, timeout_at},
};

/// How long a wait may take before the check fails (waits end as soon as
/// what they wait for happened).
pub(crate) const WAIT: Duration = Duration::from_secs(10);

/// What a node's sink received.
#[derive(Debug, Default)]
pub(crate) struct Recorded {
    pub(crate) deliveries: HashMap<String, Vec<Delivery>>,
    pub(crate) resubscribed: usize,
}

impl Recorded {
    /// The publications delivered on `channel`, with their epochs.
    pub(crate) fn publications(&self, channel: &str) -> Vec<(String, Publication)> {
        self.deliveries
            .get(channel)
            .into_iter()
            .flatten()
            .filter_map(|d| match d {
                Delivery::Publication { epoch, publication } => {
                    Some((epoch.to_string(), publication.clone()))
                }
                _ => None,
            })
            .collect()
    }

    /// The offsets delivered on `channel`.
    pub(crate) fn offsets(&self, channel: &str) -> Vec<u64> {
        self.publications(channel)
            .iter()
            .map(|(_, p)| p.offset)
            .collect()
    }
}

/// A [`BrokerSink`] that records everything and lets tests wait for it.
#[derive(Debug)]
pub(crate) struct Recorder {
    recorded: Mutex<Recorded>,
    changed: watch::Sender<()>,
}

impl Recorder {
    pub(crate) fn new() -> Arc<Self> {
        Arc::new(Self {
            recorded: Mutex::new(Recorded::default()),
            changed: watch::channel(()).0,
        })
    }

    /// Runs `check` on what was recorded.
    pub(crate) fn with<T>(&self, check: impl FnOnce(&Recorded) -> T) -> T {
        check(&self.recorded.lock().unwrap())
    }

    /// Waits until `check` returns `Some`, at most `within`; panics (with
    /// what was recorded) past that.
    pub(crate) async fn wait_for<T>(
        &self,
        what: &str,
        within: Duration,
        check: impl Fn(&Recorded) -> Option<T>,
    ) -> T {
        let deadline = Instant::now() + within;
        let mut changed = self.changed.subscribe();
        loop {
            if let Some(value) = self.with(&check) {
                return value;
            }
            if timeout_at(deadline, changed.changed()).await.is_err() {
                let recorded = self.with(|r| format!("{r:#?}"));
                panic!("timed out after {within:?} waiting for {what}; recorded: {recorded}");
            }
        }
    }

    /// Waits until `channel` has at least `count` publications; returns
    /// them all.
    pub(crate) async fn wait_publications(
        &self,
        channel: &str,
        count: usize,
    ) -> Vec<(String, Publication)> {
        self.wait_for(&format!("{count} publications on {channel}"), WAIT, |r| {
            let publications = r.publications(channel);
            (publications.len() >= count).then_some(publications)
        })
        .await
    }

    /// Waits until the broker called `resubscribed` at least `count` times.
    pub(crate) async fn wait_resubscribed(&self, count: usize, within: Duration) {
        self.wait_for(&format!("{count} resubscribed() calls"), within, |r| {
            (r.resubscribed >= count).then_some(())
        })
        .await;
    }
}

impl BrokerSink for Recorder {
    fn deliver(&self, channel: &str, delivery: Delivery) {
        self.recorded
            .lock()
            .unwrap()
            .deliveries
            .entry(channel.to_owned())
            .or_default()
            .push(delivery);
        self.changed.send_modify(|_| {});
    }

    fn resubscribed(&self) {
        self.recorded.lock().unwrap().resubscribed += 1;
        self.changed.send_modify(|_| {});
    }
}

/// A started broker and what it delivered.
pub(crate) struct Node {
    pub(crate) broker: Arc<dyn Broker>,
    pub(crate) sink: Arc<Recorder>,
}

impl Node {
    /// Starts `broker` with a fresh [`Recorder`].
    pub(crate) async fn start(broker: Arc<dyn Broker>) -> Self {
        let sink = Recorder::new();
        broker.start(sink.clone()).await.expect("the broker starts");
        Self { broker, sink }
    }

    /// Publishes `data` with `history` and `info`.
    pub(crate) async fn publish(
        &self,
        channel: &str,
        data: &str,
        history: HistoryOptions,
        info: Option<ClientInfo>,
    ) -> StreamPosition {
        let options = PublishOptions { history, info };
        self.broker
            .publish(channel, Bytes::copy_from_slice(data.as_bytes()), &options)
            .await
            .expect("publish")
    }

    pub(crate) async fn history(
        &self,
        channel: &str,
        since: Option<StreamPosition>,
        limit: usize,
    ) -> gotalk_hub::broker::History {
        self.broker
            .history(channel, HistoryQuery { since, limit })
            .await
            .expect("history")
    }

    pub(crate) async fn presence_sorted(&self, channel: &str) -> Vec<ClientInfo> {
        let mut clients = self.broker.presence(channel).await.expect("presence");
        clients.sort_by(|a, b| a.client.cmp(&b.client));
        clients
    }
}

pub(crate) fn info(user: &str, client: &str) -> ClientInfo {
    ClientInfo {
        user: user.to_owned(),
        client: client.to_owned(),
    }
}

/// History of `size` publications, kept a minute.
pub(crate) fn keep(size: usize) -> HistoryOptions {
    HistoryOptions {
        size,
        ttl: Duration::from_secs(60),
    }
}

fn data(publication: &Publication) -> &str {
    std::str::from_utf8(&publication.data).expect("UTF-8 test data")
}

/// Offsets go 1, 2, 3, ... per channel, in one epoch, independently for
/// each channel; the position reports the latest.
pub(crate) async fn offsets_increase(nodes: &[Node]) {
    let node = &nodes[0];
    let mut epoch = None;
    for expected in 1..=5 {
        let position = node.publish("offsets", "x", keep(0), None).await;
        assert_eq!(position.offset, expected);
        assert!(!position.epoch.is_empty());
        assert_eq!(
            epoch.get_or_insert_with(|| position.epoch.clone()),
            &position.epoch
        );
    }
    let other = nodes[nodes.len() - 1]
        .publish("offsets-other", "y", keep(0), None)
        .await;
    assert_eq!(other.offset, 1, "each channel counts on its own");
    let history = nodes[nodes.len() - 1].history("offsets", None, 0).await;
    assert_eq!(
        history.position,
        StreamPosition {
            offset: 5,
            epoch: epoch.unwrap()
        }
    );
    assert!(history.publications.is_empty(), "limit 0 returns none");
}

/// Every node subscribed to a channel receives each of its publications
/// exactly once, in offset order, with the epoch, data and publisher it was
/// published with, while every node publishes concurrently.
pub(crate) async fn deliveries_reach_every_node_once_in_order(nodes: &[Node], per_node: usize) {
    const CHANNEL: &str = "ordered";
    for node in nodes {
        node.broker.subscribe(CHANNEL).await.expect("subscribe");
    }
    // Two concurrent publishers per node.
    let mut publishers = Vec::new();
    for (n, node) in nodes.iter().enumerate() {
        for task in 0..2 {
            let broker = node.broker.clone();
            publishers.push(tokio::spawn(async move {
                let mut published = Vec::new();
                for k in (task..per_node).step_by(2) {
                    let body = format!("node{n}-{k}");
                    let options = PublishOptions {
                        history: keep(0),
                        info: (k % 3 == 0).then(|| info(&format!("user{n}"), &format!("c{n}"))),
                    };
                    let position = broker
                        .publish(CHANNEL, Bytes::from(body.clone()), &options)
                        .await
                        .expect("publish");
                    published.push((position, body, options.info));
                }
                published
            }));
        }
    }
    let mut published = Vec::new();
    for publisher in publishers {
        published.extend(publisher.await.expect("publisher task"));
    }
    let total = nodes.len() * per_node;
    assert_eq!(published.len(), total);
    published.sort_by_key(|(position, _, _)| position.offset);
    let epoch = published[0].0.epoch.clone();
    for (i, (position, _, _)) in published.iter().enumerate() {
        assert_eq!(
            position.offset,
            i as u64 + 1,
            "offsets are unique and dense"
        );
        assert_eq!(position.epoch, epoch);
    }
    // A last publication: once it arrived, everything before it did.
    let last = nodes[0].publish(CHANNEL, "last", keep(0), None).await;
    assert_eq!(last.offset, total as u64 + 1);
    for (n, node) in nodes.iter().enumerate() {
        let received = node.sink.wait_publications(CHANNEL, total + 1).await;
        let offsets: Vec<u64> = received.iter().map(|(_, p)| p.offset).collect();
        let expected: Vec<u64> = (1..=total as u64 + 1).collect();
        assert_eq!(offsets, expected, "node {n}: each once, in order");
        for ((received_epoch, publication), (position, body, publisher)) in
            received.iter().zip(&published)
        {
            assert_eq!(received_epoch, &position.epoch);
            assert_eq!(data(publication), body);
            assert_eq!(&publication.info, publisher);
        }
    }
}

/// Join and leave events reach the channel's subscribers on every node, in
/// order, and stay out of history.
pub(crate) async fn presence_events_reach_subscribers(nodes: &[Node]) {
    const CHANNEL: &str = "events";
    let receiver = &nodes[nodes.len() - 1];
    receiver.broker.subscribe(CHANNEL).await.expect("subscribe");
    let sender = &nodes[0];
    let alice = info("alice", "a1");
    for event in [
        Delivery::Join(alice.clone()),
        Delivery::Leave(alice.clone()),
    ] {
        sender
            .broker
            .publish_presence(CHANNEL, &event)
            .await
            .expect("publish_presence");
    }
    let events = receiver
        .sink
        .wait_for("join and leave", WAIT, |r| {
            let events = r.deliveries.get(CHANNEL)?;
            (events.len() >= 2).then(|| events.clone())
        })
        .await;
    assert_eq!(
        events,
        vec![Delivery::Join(alice.clone()), Delivery::Leave(alice)]
    );
    let history = sender.history(CHANNEL, None, 10).await;
    assert!(history.publications.is_empty());
    assert_eq!(history.position.offset, 0, "events take no offset");
}

/// `subscribe` and `unsubscribe` are idempotent; after `unsubscribe` the
/// node gets nothing more from the channel, other nodes still do.
pub(crate) async fn unsubscribe_stops_deliveries(nodes: &[Node]) {
    const CHANNEL: &str = "unsub";
    const BARRIER: &str = "unsub-barrier";
    let (first, last) = (&nodes[0], &nodes[nodes.len() - 1]);
    for node in [first, last] {
        node.broker.subscribe(CHANNEL).await.expect("subscribe");
        node.broker
            .subscribe(CHANNEL)
            .await
            .expect("subscribe again");
    }
    last.broker.subscribe(BARRIER).await.expect("subscribe");
    last.broker
        .unsubscribe("never-subscribed")
        .await
        .expect("unsubscribing an unknown channel");

    first.publish(CHANNEL, "one", keep(0), None).await;
    last.sink.wait_publications(CHANNEL, 1).await;
    last.broker.unsubscribe(CHANNEL).await.expect("unsubscribe");
    last.broker
        .unsubscribe(CHANNEL)
        .await
        .expect("unsubscribe again");
    first.publish(CHANNEL, "two", keep(0), None).await;
    // Published after "two": once it arrived, "two" would have too.
    first.publish(BARRIER, "barrier", keep(0), None).await;
    last.sink.wait_publications(BARRIER, 1).await;
    assert_eq!(last.sink.with(|r| r.offsets(CHANNEL)), vec![1]);
    if nodes.len() > 1 {
        let received = first.sink.wait_publications(CHANNEL, 2).await;
        let offsets: Vec<u64> = received.iter().map(|(_, p)| p.offset).collect();
        assert_eq!(offsets, vec![1, 2], "subscribed twice, delivered once");
    }
    // Subscribing again resumes deliveries.
    last.broker.subscribe(CHANNEL).await.expect("resubscribe");
    first.publish(CHANNEL, "three", keep(0), None).await;
    let received = last.sink.wait_publications(CHANNEL, 2).await;
    assert_eq!(received.last().map(|(_, p)| p.offset), Some(3));
}

/// History keeps the last `size` publications (with their publisher),
/// oldest first; `limit` takes the most recent ones.
pub(crate) async fn history_keeps_the_last_size(nodes: &[Node]) {
    const CHANNEL: &str = "kept";
    let node = &nodes[0];
    let reader = &nodes[nodes.len() - 1];
    let mut epoch = String::new();
    for i in 1..=10 {
        let publisher = (i % 2 == 0).then(|| info("bob", &format!("b{i}")));
        epoch = node
            .publish(CHANNEL, &format!("m{i}"), keep(3), publisher)
            .await
            .epoch;
    }
    let history = reader.history(CHANNEL, None, 10).await;
    assert_eq!(
        history.position,
        StreamPosition {
            offset: 10,
            epoch: epoch.clone()
        }
    );
    assert!(history.complete);
    let kept: Vec<(u64, &str, Option<ClientInfo>)> = history
        .publications
        .iter()
        .map(|p| (p.offset, data(p), p.info.clone()))
        .collect();
    assert_eq!(
        kept,
        vec![
            (8, "m8", Some(info("bob", "b8"))),
            (9, "m9", None),
            (10, "m10", Some(info("bob", "b10"))),
        ]
    );
    let latest = reader.history(CHANNEL, None, 2).await;
    let offsets: Vec<u64> = latest.publications.iter().map(|p| p.offset).collect();
    assert_eq!(offsets, vec![9, 10]);
    let none = reader.history(CHANNEL, None, 0).await;
    assert!(none.publications.is_empty());
    assert_eq!(none.position.offset, 10);
}

/// `since` returns what followed a position: complete while every
/// publication after it is kept, incomplete once trimmed past it, or for
/// another epoch, or for a position the channel never reached.
pub(crate) async fn history_since_tells_what_was_missed(nodes: &[Node]) {
    const CHANNEL: &str = "since";
    let node = &nodes[0];
    let reader = &nodes[nodes.len() - 1];
    let mut epoch = String::new();
    for i in 1..=3 {
        epoch = node
            .publish(CHANNEL, &format!("m{i}"), keep(5), None)
            .await
            .epoch;
    }
    let at = |offset| {
        Some(StreamPosition {
            offset,
            epoch: epoch.clone(),
        })
    };
    let offsets = |h: &gotalk_hub::broker::History| -> Vec<u64> {
        h.publications.iter().map(|p| p.offset).collect()
    };

    let after_one = reader.history(CHANNEL, at(1), 10).await;
    assert!(after_one.complete);
    assert_eq!(offsets(&after_one), vec![2, 3]);
    assert_eq!(after_one.position.offset, 3);
    let limited = reader.history(CHANNEL, at(1), 1).await;
    assert!(limited.complete, "a limit is not a gap");
    assert_eq!(offsets(&limited), vec![2]);
    let nothing_new = reader.history(CHANNEL, at(3), 10).await;
    assert!(nothing_new.complete);
    assert!(nothing_new.publications.is_empty());
    let position_only = reader.history(CHANNEL, at(1), 0).await;
    assert!(position_only.complete);
    assert!(position_only.publications.is_empty());

    for i in 4..=10 {
        node.publish(CHANNEL, &format!("m{i}"), keep(5), None).await;
    }
    // Kept: 6..=10.
    let trimmed = reader.history(CHANNEL, at(1), 10).await;
    assert!(!trimmed.complete, "2..=5 were trimmed");
    assert_eq!(
        offsets(&trimmed),
        vec![6, 7, 8, 9, 10],
        "what is still kept after `since`"
    );
    assert!(!reader.history(CHANNEL, at(4), 10).await.complete);
    let just_kept = reader.history(CHANNEL, at(5), 10).await;
    assert!(just_kept.complete);
    assert_eq!(offsets(&just_kept), vec![6, 7, 8, 9, 10]);

    let other_epoch = reader
        .history(
            CHANNEL,
            Some(StreamPosition {
                offset: 8,
                epoch: format!("{epoch}-other"),
            }),
            10,
        )
        .await;
    assert!(!other_epoch.complete);
    assert!(other_epoch.publications.is_empty());
    assert_eq!(other_epoch.position.epoch, epoch);
    let future = reader.history(CHANNEL, at(11), 10).await;
    assert!(!future.complete, "a position the channel never reached");
    assert!(future.publications.is_empty());
}

/// A channel that was never published to has a position (offset 0 and an
/// epoch) that its first publication continues, so a subscriber that
/// resumes from it misses nothing.
pub(crate) async fn a_fresh_channel_position_is_continued(nodes: &[Node]) {
    const CHANNEL: &str = "fresh";
    let reader = &nodes[nodes.len() - 1];
    let before = reader.history(CHANNEL, None, 10).await;
    assert_eq!(before.position.offset, 0);
    assert!(!before.position.epoch.is_empty());
    assert!(before.publications.is_empty());
    let again = nodes[0].history(CHANNEL, None, 10).await;
    assert_eq!(again.position, before.position, "reads agree on the epoch");
    let first = nodes[0].publish(CHANNEL, "first", keep(10), None).await;
    assert_eq!(first.offset, 1);
    assert_eq!(first.epoch, before.position.epoch);
    let resumed = reader
        .history(CHANNEL, Some(before.position.clone()), 10)
        .await;
    assert!(resumed.complete);
    assert_eq!(resumed.publications.len(), 1);
}

/// History expires `ttl` after the last publication.
pub(crate) async fn history_expires(nodes: &[Node]) {
    const CHANNEL: &str = "expiring";
    let ttl = Duration::from_millis(300);
    let history = HistoryOptions { size: 10, ttl };
    let node = &nodes[0];
    node.publish(CHANNEL, "a", history, None).await;
    node.publish(CHANNEL, "b", history, None).await;
    let published = Instant::now();
    assert_eq!(node.history(CHANNEL, None, 10).await.publications.len(), 2);
    loop {
        let history = nodes[nodes.len() - 1].history(CHANNEL, None, 10).await;
        if history.publications.is_empty() {
            break;
        }
        assert!(published.elapsed() < WAIT, "history never expired");
        sleep(Duration::from_millis(50)).await;
    }
    assert!(
        published.elapsed() >= ttl - Duration::from_millis(50),
        "history expired after {:?}, before its {ttl:?} ttl",
        published.elapsed()
    );
}

/// Presence is one list across nodes: entries added on any node are seen
/// from every node, refreshing does not duplicate, removal is seen by all.
pub(crate) async fn presence_is_cluster_wide(nodes: &[Node]) {
    const CHANNEL: &str = "room";
    let ttl = Duration::from_secs(60);
    let (first, last) = (&nodes[0], &nodes[nodes.len() - 1]);
    assert!(first.presence_sorted(CHANNEL).await.is_empty());
    first
        .broker
        .add_presence(CHANNEL, &info("alice", "a1"), ttl)
        .await
        .expect("add");
    last.broker
        .add_presence(CHANNEL, &info("bob", "b1"), ttl)
        .await
        .expect("add");
    last.broker
        .add_presence(CHANNEL, &info("bob", "b1"), ttl)
        .await
        .expect("refresh");
    let both = vec![info("alice", "a1"), info("bob", "b1")];
    for node in nodes {
        assert_eq!(node.presence_sorted(CHANNEL).await, both);
    }
    assert!(last.presence_sorted("other-room").await.is_empty());
    last.broker
        .remove_presence(CHANNEL, "a1")
        .await
        .expect("remove");
    last.broker
        .remove_presence(CHANNEL, "a1")
        .await
        .expect("remove again");
    for node in nodes {
        assert_eq!(node.presence_sorted(CHANNEL).await, vec![info("bob", "b1")]);
    }
}

/// Presence entries expire `ttl` after their last refresh; refreshed ones
/// stay.
pub(crate) async fn presence_entries_expire(nodes: &[Node]) {
    const CHANNEL: &str = "lobby";
    let short = Duration::from_millis(300);
    let (first, last) = (&nodes[0], &nodes[nodes.len() - 1]);
    let added = Instant::now();
    first
        .broker
        .add_presence(CHANNEL, &info("gone", "g1"), short)
        .await
        .expect("add");
    last.broker
        .add_presence(CHANNEL, &info("kept", "k1"), short)
        .await
        .expect("add");
    last.broker
        .add_presence(CHANNEL, &info("long", "l1"), Duration::from_secs(60))
        .await
        .expect("add");
    assert_eq!(first.presence_sorted(CHANNEL).await.len(), 3);
    // Refresh k1 until g1 is gone.
    let deadline = added + WAIT;
    loop {
        last.broker
            .add_presence(CHANNEL, &info("kept", "k1"), short)
            .await
            .expect("refresh");
        let now = first.presence_sorted(CHANNEL).await;
        if now.len() == 2 {
            assert_eq!(now, vec![info("kept", "k1"), info("long", "l1")]);
            break;
        }
        assert!(Instant::now() < deadline, "g1 never expired: {now:?}");
        sleep(Duration::from_millis(50)).await;
    }
    assert!(
        added.elapsed() >= short - Duration::from_millis(50),
        "expired after {:?}, before its {short:?} ttl",
        added.elapsed()
    );
    // Without refreshes k1 goes too.
    let stopped = Instant::now();
    loop {
        let now = last.presence_sorted(CHANNEL).await;
        if now == vec![info("long", "l1")] {
            break;
        }
        assert!(stopped.elapsed() < WAIT, "k1 never expired: {now:?}");
        sleep(Duration::from_millis(50)).await;
    }
}
