//! `RedisBroker` against a real Redis: the broker contract with one, two
//! and three nodes (brokers) on one Redis, then what only Redis has: key
//! prefixes, foreign messages, and Redis going away.
//!
//! Each test starts its own `redis-server` (see `support/redis_server.rs`);
//! without one installed the tests are skipped, or fail when `CI=true`.
#![cfg(feature = "redis")]

#[path = "support/contract.rs"]
mod contract;
#[path = "support/redis_server.rs"]
mod redis_server;

use std::{sync::Arc, time::Duration};

use bytes::Bytes;
use contract::{Node, WAIT, info, keep};
use gotalk_hub::broker::{
    Broker, BrokerError, BrokerSink, Delivery, HistoryOptions, HistoryQuery, PublishOptions,
    redis::{RedisBroker, RedisBrokerOptions},
};
use redis_server::RedisServer;
use tokio::time::Instant;

/// Quick reconnection for fault tests. The operation timeout stays well
/// above [`FAST`], so an operation that fails within `FAST` failed because
/// Redis refused, not because it timed out.
///
/// With `REDIS_BROKER_THREAD=1` in the environment every test runs with
/// the broker's connections on a thread of their own (the tests named
/// `own_thread_*` always do).
fn options() -> RedisBrokerOptions {
    let thread = std::env::var("REDIS_BROKER_THREAD").is_ok_and(|v| v == "1");
    RedisBrokerOptions::new()
        .with_dedicated_thread(thread)
        .with_connect_timeout(Duration::from_secs(1))
        .with_operation_timeout(Duration::from_secs(3))
        .with_reconnect_delay(Duration::from_millis(20), Duration::from_millis(200))
}

/// Within this, an operation failed fast.
const FAST: Duration = Duration::from_millis(1500);

fn broker(redis: &RedisServer, options: RedisBrokerOptions) -> Arc<dyn Broker> {
    Arc::new(RedisBroker::with_options(&redis.url(), options).expect("valid configuration"))
}

/// `count` started nodes on `redis`.
async fn nodes(redis: &RedisServer, count: usize, options: RedisBrokerOptions) -> Vec<Node> {
    let mut nodes = Vec::new();
    for _ in 0..count {
        nodes.push(Node::start(broker(redis, options.clone())).await);
    }
    nodes
}

/// Starts Redis and `count` nodes (with `options`, else [`options`]), or
/// skips the test.
macro_rules! cluster {
    ($test:expr, $count:expr) => {
        cluster!($test, $count, options())
    };
    ($test:expr, $count:expr, $options:expr) => {{
        let Some(redis) = RedisServer::start($test).await else {
            return;
        };
        let nodes = nodes(&redis, $count, $options).await;
        (redis, nodes)
    }};
}

/// One test per contract guarantee and node count.
macro_rules! contract_tests {
    (options = $options:expr; $($name:ident: $count:expr => |$nodes:ident| $check:expr;)*) => {$(
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $name() {
            let (_redis, nodes) = cluster!(stringify!($name), $count, $options);
            let $nodes = &nodes[..];
            $check.await;
        }
    )*};
    ($($name:ident: $count:expr => |$nodes:ident| $check:expr;)*) => {
        contract_tests!(options = options(); $($name: $count => |$nodes| $check;)*);
    };
}

contract_tests! {
    offsets_increase: 2 => |n| contract::offsets_increase(n);
    one_node_receives_its_publications_once_in_order: 1 =>
        |n| contract::deliveries_reach_every_node_once_in_order(n, 100);
    two_nodes_receive_each_publication_once_in_order: 2 =>
        |n| contract::deliveries_reach_every_node_once_in_order(n, 100);
    three_nodes_receive_each_publication_once_in_order: 3 =>
        |n| contract::deliveries_reach_every_node_once_in_order(n, 100);
    presence_events_reach_subscribers_on_other_nodes: 2 => |n| contract::presence_events_reach_subscribers(n);
    unsubscribe_stops_deliveries_on_one_node: 1 => |n| contract::unsubscribe_stops_deliveries(n);
    unsubscribe_stops_deliveries_to_that_node_only: 2 => |n| contract::unsubscribe_stops_deliveries(n);
    history_keeps_the_last_size: 2 => |n| contract::history_keeps_the_last_size(n);
    history_since_tells_what_was_missed: 2 => |n| contract::history_since_tells_what_was_missed(n);
    a_fresh_channel_position_is_continued: 2 => |n| contract::a_fresh_channel_position_is_continued(n);
    history_expires: 2 => |n| contract::history_expires(n);
    presence_is_cluster_wide: 3 => |n| contract::presence_is_cluster_wide(n);
    presence_entries_expire: 2 => |n| contract::presence_entries_expire(n);
}

// The contract again, each broker's connections on a thread of its own.
contract_tests! {
    options = options().with_dedicated_thread(true);
    own_thread_offsets_increase: 2 => |n| contract::offsets_increase(n);
    own_thread_three_nodes_receive_each_publication_once_in_order: 3 =>
        |n| contract::deliveries_reach_every_node_once_in_order(n, 100);
    own_thread_presence_events_reach_subscribers_on_other_nodes: 2 => |n| contract::presence_events_reach_subscribers(n);
    own_thread_unsubscribe_stops_deliveries_to_that_node_only: 2 => |n| contract::unsubscribe_stops_deliveries(n);
    own_thread_history_since_tells_what_was_missed: 2 => |n| contract::history_since_tells_what_was_missed(n);
    own_thread_presence_is_cluster_wide: 3 => |n| contract::presence_is_cluster_wide(n);
}

/// A raw connection to the test Redis, for what the broker does not do.
async fn raw(redis: &RedisServer) -> redis::aio::MultiplexedConnection {
    redis::Client::open(redis.url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .expect("raw connection")
}

/// Hubs with different prefixes share one Redis without seeing each
/// other's publications, positions, history or presence.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_prefixes_isolate_hubs() {
    let Some(redis) = RedisServer::start("key_prefixes_isolate_hubs").await else {
        return;
    };
    let a = Node::start(broker(&redis, options().with_prefix("hub-a:"))).await;
    let b = Node::start(broker(&redis, options().with_prefix("hub-b:"))).await;
    for node in [&a, &b] {
        node.broker.subscribe("shared").await.unwrap();
    }
    let from_a = a.publish("shared", "from a", keep(10), None).await;
    let from_b = b.publish("shared", "from b", keep(10), None).await;
    assert_eq!((from_a.offset, from_b.offset), (1, 1), "separate offsets");
    assert_ne!(from_a.epoch, from_b.epoch);
    for (node, body) in [(&a, "from a"), (&b, "from b")] {
        let received = node.sink.wait_publications("shared", 1).await;
        assert_eq!(received[0].1.data, Bytes::from(body));
        let history = node.history("shared", None, 10).await;
        assert_eq!(history.publications.len(), 1);
        assert_eq!(history.publications[0].data, Bytes::from(body));
    }
    a.broker
        .add_presence("shared", &info("alice", "a1"), Duration::from_secs(60))
        .await
        .unwrap();
    assert!(b.presence_sorted("shared").await.is_empty());
    // b's publication came after a's; by the time b saw its own, a's would
    // have reached b too.
    b.sink.wait_publications("shared", 1).await;
    assert_eq!(a.sink.with(|r| r.offsets("shared")), vec![1]);
    assert_eq!(b.sink.with(|r| r.offsets("shared")), vec![1]);
    let mut raw = raw(&redis).await;
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg("*")
        .query_async(&mut raw)
        .await
        .unwrap();
    assert!(
        keys.iter()
            .all(|k| k.starts_with("hub-a:") || k.starts_with("hub-b:")),
        "every key is prefixed: {keys:?}"
    );
}

/// Messages on a channel's pub/sub key that do not decode (another
/// version, garbage) are skipped; the ones after them are delivered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn undecodable_messages_are_skipped() {
    let (redis, nodes) = cluster!("undecodable_messages_are_skipped", 1);
    let node = &nodes[0];
    node.broker.subscribe("c").await.unwrap();
    let mut raw = raw(&redis).await;
    for garbage in [
        &b""[..],
        b"9p1:1:e",
        b"1p1:99:e",
        b"1zzz",
        b"\xff\xfe",
        b"1j5:ab",
    ] {
        let receivers: u32 = redis::cmd("PUBLISH")
            .arg("gotalk-hub:pub:c")
            .arg(garbage)
            .query_async(&mut raw)
            .await
            .unwrap();
        assert_eq!(receivers, 1);
    }
    let position = node.publish("c", "fine", keep(0), None).await;
    let received = node.sink.wait_publications("c", 1).await;
    assert_eq!(received[0].1.offset, position.offset);
    assert_eq!(node.sink.with(|r| r.deliveries["c"].len()), 1);
}

/// Data is bytes (not only JSON: NUL, `:`, invalid UTF-8) and names are
/// any UTF-8 (with `:` too); both arrive and come back from history as
/// published.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binary_data_and_unicode_names_round_trip() {
    let (_redis, nodes) = cluster!("binary_data_and_unicode_names_round_trip", 2);
    let channel = "räum:1:{x}";
    nodes[1].broker.subscribe(channel).await.unwrap();
    let data = Bytes::from_static(b"\x00:1p2:3:\xff\xfe\r\n");
    let publisher = info("Zoë:ü", "client:42:ß");
    let options = PublishOptions {
        history: keep(5),
        info: Some(publisher.clone()),
    };
    let position = nodes[0]
        .broker
        .publish(channel, data.clone(), &options)
        .await
        .unwrap();
    let received = nodes[1].sink.wait_publications(channel, 1).await;
    let (epoch, publication) = &received[0];
    assert_eq!(epoch, &position.epoch);
    assert_eq!(publication.data, data);
    assert_eq!(publication.info.as_ref(), Some(&publisher));
    let history = nodes[1].history(channel, None, 5).await;
    assert_eq!(history.publications, vec![publication.clone()]);
    let empty = nodes[0]
        .broker
        .publish(channel, Bytes::new(), &PublishOptions::default())
        .await
        .unwrap();
    let received = nodes[1].sink.wait_publications(channel, 2).await;
    assert_eq!(received[1].1.offset, empty.offset);
    assert!(received[1].1.data.is_empty());
    assert_eq!(received[1].1.info, None);
    nodes[0]
        .broker
        .publish_presence(channel, &Delivery::Join(publisher.clone()))
        .await
        .unwrap();
    let join = nodes[1]
        .sink
        .wait_for("the join", WAIT, |r| r.deliveries[channel].get(2).cloned())
        .await;
    assert_eq!(join, Delivery::Join(publisher));
}

/// The largest sizes and ttls the types allow are taken (as "keep
/// everything, forever"), not refused by Redis; a zero ttl is taken too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn extreme_sizes_and_ttls_work() {
    let (_redis, nodes) = cluster!("extreme_sizes_and_ttls_work", 1);
    let node = &nodes[0];
    let forever = HistoryOptions {
        size: usize::MAX,
        ttl: Duration::MAX,
    };
    for _ in 0..3 {
        node.publish("big", "x", forever, None).await;
    }
    assert_eq!(
        node.history("big", None, usize::MAX)
            .await
            .publications
            .len(),
        3
    );
    let since = node.history("big", None, 0).await.position;
    assert!(node.history("big", Some(since), usize::MAX).await.complete);
    node.broker
        .add_presence("big", &info("u", "c"), Duration::MAX)
        .await
        .unwrap();
    assert_eq!(node.presence_sorted("big").await, vec![info("u", "c")]);
    let tiny = HistoryOptions {
        size: 1,
        ttl: Duration::ZERO,
    };
    let position = node.publish("tiny", "x", tiny, None).await;
    assert_eq!(position.offset, 1);
}

/// A sink that panics on its first delivery.
struct PanicsOnce {
    panicked: std::sync::atomic::AtomicBool,
    inner: Arc<contract::Recorder>,
}

impl BrokerSink for PanicsOnce {
    fn deliver(&self, channel: &str, delivery: Delivery) {
        if !self
            .panicked
            .swap(true, std::sync::atomic::Ordering::SeqCst)
        {
            panic!("a bug in the sink");
        }
        self.inner.deliver(channel, delivery);
    }

    fn resubscribed(&self) {
        self.inner.resubscribed();
    }
}

/// A panic in the sink does not stop the node's deliveries.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_sink_does_not_stop_deliveries() {
    let Some(redis) = RedisServer::start("a_panicking_sink_does_not_stop_deliveries").await else {
        return;
    };
    let broker = broker(&redis, options());
    let recorder = contract::Recorder::new();
    let sink = Arc::new(PanicsOnce {
        panicked: false.into(),
        inner: recorder.clone(),
    });
    broker.start(sink).await.unwrap();
    broker.subscribe("c").await.unwrap();
    for _ in 0..2 {
        broker
            .publish("c", Bytes::from("x"), &PublishOptions::default())
            .await
            .unwrap();
    }
    let received = recorder.wait_publications("c", 1).await;
    assert_eq!(received[0].1.offset, 2, "the first one hit the panic");
}

/// `publish_presence` takes join and leave only.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_presence_refuses_publications() {
    let (_redis, nodes) = cluster!("publish_presence_refuses_publications", 1);
    let event = Delivery::Publication {
        epoch: "e".into(),
        publication: gotalk_hub::broker::Publication {
            offset: 1,
            data: Bytes::new(),
            info: None,
        },
    };
    let error = nodes[0].broker.publish_presence("c", &event).await;
    assert!(matches!(error, Err(BrokerError::Protocol(_))), "{error:?}");
}

/// Asserts that `result` is `Unavailable` and came within `within`.
fn assert_fails_fast<T: std::fmt::Debug>(
    what: &str,
    result: Result<T, BrokerError>,
    started: Instant,
    within: Duration,
) {
    assert!(
        matches!(result, Err(BrokerError::Unavailable(_))),
        "{what}: {result:?}"
    );
    assert!(
        started.elapsed() < within,
        "{what} took {:?}",
        started.elapsed()
    );
}

/// Redis killed mid-stream: operations fail fast with `Unavailable`; once
/// Redis is back every node reconnects and resubscribes by itself, calls
/// `resubscribed`, deliveries flow again, and the history lost with Redis
/// shows up as a new epoch.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_survive_a_redis_restart() {
    let (redis, nodes) = cluster!("nodes_survive_a_redis_restart", 2);
    survive_a_redis_restart(redis, nodes).await;
}

/// The same with each broker's connections on a thread of its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn own_thread_nodes_survive_a_redis_restart() {
    let (redis, nodes) = cluster!(
        "own_thread_nodes_survive_a_redis_restart",
        2,
        options().with_dedicated_thread(true)
    );
    survive_a_redis_restart(redis, nodes).await;
}

async fn survive_a_redis_restart(mut redis: RedisServer, nodes: Vec<Node>) {
    for node in &nodes {
        node.broker.subscribe("live").await.unwrap();
    }
    let mut last = None;
    for i in 0..3 {
        last = Some(nodes[i % 2].publish("live", "before", keep(10), None).await);
    }
    let before = last.unwrap();
    for node in &nodes {
        node.sink.wait_publications("live", 3).await;
    }

    redis.stop().await;
    // Refused connections: no waiting for the operation timeout.
    let fast = FAST;
    let node = &nodes[0];
    let started = Instant::now();
    let result = node
        .broker
        .publish("live", Bytes::from("lost"), &PublishOptions::default())
        .await;
    assert_fails_fast("publish", result, started, fast);
    let started = Instant::now();
    let result = node.broker.history("live", HistoryQuery::default()).await;
    assert_fails_fast("history", result, started, fast);
    let started = Instant::now();
    let result = node.broker.presence("live").await;
    assert_fails_fast("presence", result, started, fast);
    let started = Instant::now();
    let result = node
        .broker
        .add_presence("live", &info("u", "c"), Duration::from_secs(5))
        .await;
    assert_fails_fast("add_presence", result, started, fast);
    let started = Instant::now();
    let result = node.broker.subscribe("during-outage").await;
    assert_fails_fast("subscribe", result, started, fast);
    node.broker
        .unsubscribe("live-2")
        .await
        .expect("unsubscribe works without Redis");

    redis.restart().await;
    for node in &nodes {
        node.sink.wait_resubscribed(1, WAIT).await;
    }
    // Right after `resubscribed` the hub reads history: it works at once.
    let history = nodes[1].history("live", Some(before.clone()), 10).await;
    assert!(!history.complete, "Redis lost the channel: a new epoch");
    assert_ne!(history.position.epoch, before.epoch);
    assert_eq!(history.position.offset, 0);

    let after = nodes[1].publish("live", "after", keep(10), None).await;
    assert_eq!(after.offset, 1);
    assert_eq!(after.epoch, history.position.epoch);
    for node in &nodes {
        let received = node.sink.wait_publications("live", 4).await;
        let (epoch, publication) = &received[3];
        assert_eq!(epoch, &after.epoch);
        assert_eq!(publication.offset, 1);
        assert_eq!(publication.data, Bytes::from("after"));
        assert_eq!(node.sink.with(|r| r.resubscribed), 1);
    }
    // The channel whose subscribe failed was not subscribed behind the
    // hub's back.
    nodes[1].publish("during-outage", "x", keep(0), None).await;
    nodes[1].publish("live", "barrier", keep(0), None).await;
    nodes[0].sink.wait_publications("live", 5).await;
    assert!(
        nodes[0]
            .sink
            .with(|r| !r.deliveries.contains_key("during-outage"))
    );
}

/// Redis killed while a node publishes without pause: the publisher's
/// calls fail fast while Redis is away and succeed again after; every
/// node gets each epoch's publications in order without duplicates, and
/// the stream goes on in a new epoch by itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_killed_mid_stream() {
    let (mut redis, nodes) = cluster!("redis_killed_mid_stream", 2);
    for node in &nodes {
        node.broker.subscribe("stream").await.unwrap();
    }
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let publisher = {
        let broker = nodes[0].broker.clone();
        tokio::spawn(async move {
            let options = PublishOptions {
                history: keep(100),
                info: None,
            };
            let (mut ok, mut failed) = (0, 0);
            while !*stopped.borrow() {
                let started = Instant::now();
                match broker.publish("stream", Bytes::from("x"), &options).await {
                    Ok(_) => ok += 1,
                    Err(error) => {
                        assert_fails_fast::<()>("publish", Err(error), started, FAST);
                        failed += 1;
                        tokio::time::sleep(Duration::from_millis(5)).await;
                    }
                }
                tokio::task::yield_now().await;
            }
            (ok, failed)
        })
    };
    for node in &nodes {
        node.sink.wait_publications("stream", 50).await;
    }
    redis.stop().await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    redis.restart().await;
    for node in &nodes {
        node.sink.wait_resubscribed(1, WAIT).await;
    }
    // Publications of the new epoch flow to every node.
    let first_epoch = nodes[0]
        .sink
        .with(|r| r.publications("stream")[0].0.clone());
    for node in &nodes {
        node.sink
            .wait_for("20 publications of the new epoch", WAIT, |r| {
                let new = r.publications("stream");
                (new.iter().filter(|(e, _)| *e != first_epoch).count() >= 20).then_some(())
            })
            .await;
    }
    stop.send_replace(true);
    let (ok, failed) = publisher.await.expect("the publisher did not panic");
    assert!(failed > 0, "some publishes met the dead Redis");
    assert!(ok >= 60, "publishing went on: {ok} ok");
    for (n, node) in nodes.iter().enumerate() {
        let received = node.sink.with(|r| r.publications("stream"));
        let mut epochs: Vec<&str> = Vec::new();
        for pair in received.windows(2) {
            let ((e1, p1), (e2, p2)) = (&pair[0], &pair[1]);
            if e1 == e2 {
                assert!(
                    p2.offset > p1.offset,
                    "node {n}: {} after {}",
                    p2.offset,
                    p1.offset
                );
            } else {
                epochs.push(e2);
            }
        }
        assert_eq!(epochs.len(), 1, "node {n}: exactly one new epoch");
        assert_eq!(node.sink.with(|r| r.resubscribed), 1);
    }
}

/// A Redis that stops answering without closing connections (SIGSTOP) is
/// noticed: operations time out instead of hanging, the pub/sub ping fails,
/// and after Redis resumes the node resubscribes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_redis_is_noticed() {
    let Some(redis) = RedisServer::start("a_frozen_redis_is_noticed").await else {
        return;
    };
    let timeout = Duration::from_millis(400);
    let options = options()
        .with_operation_timeout(timeout)
        .with_connect_timeout(timeout)
        .with_ping_interval(Duration::from_millis(200));
    let node = Node::start(broker(&redis, options)).await;
    node.broker.subscribe("c").await.unwrap();
    node.publish("c", "one", keep(0), None).await;
    node.sink.wait_publications("c", 1).await;

    redis.signal("STOP").await;
    let started = Instant::now();
    let result = node
        .broker
        .publish("c", Bytes::from("frozen"), &PublishOptions::default())
        .await;
    assert_fails_fast("publish", result, started, timeout + Duration::from_secs(1));
    // A SUBSCRIBE that gets no answer fails and is forgotten.
    let started = Instant::now();
    let result = node.broker.subscribe("frozen").await;
    let slow = timeout + Duration::from_secs(1);
    assert_fails_fast("subscribe", result, started, slow);
    // Long enough for a ping to go unanswered.
    tokio::time::sleep(Duration::from_millis(500)).await;
    redis.signal("CONT").await;

    node.sink.wait_resubscribed(1, WAIT).await;
    node.publish("frozen", "not for us", keep(0), None).await;
    let position = node.publish("c", "two", keep(0), None).await;
    let received = node.sink.wait_publications("c", 2).await;
    assert_eq!(received.last().unwrap().1.offset, position.offset);
    assert!(
        !node.sink.with(|r| r.deliveries.contains_key("frozen")),
        "the failed subscribe was not made behind the hub's back"
    );
}

/// `start` without Redis fails fast; the broker keeps trying by itself and
/// works once Redis is there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn start_without_redis_fails_fast_then_connects() {
    let Some(mut redis) = RedisServer::start("start_without_redis_fails_fast_then_connects").await
    else {
        return;
    };
    redis.stop().await;
    let broker = broker(&redis, options());
    let sink = contract::Recorder::new();
    let started = Instant::now();
    let result = broker.start(sink.clone()).await;
    assert_fails_fast("start", result, started, FAST);

    redis.restart().await;
    let deadline = Instant::now() + WAIT;
    while let Err(error) = broker.subscribe("c").await {
        assert!(Instant::now() < deadline, "never subscribed: {error}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let options = PublishOptions::default();
    let position = broker
        .publish("c", Bytes::from("hi"), &options)
        .await
        .unwrap();
    let received = sink.wait_publications("c", 1).await;
    assert_eq!(received[0].1.offset, position.offset);
}

/// How many connections Redis has subscribed to the hub's channel `channel`.
async fn pubsub_subscribers(raw: &redis::aio::MultiplexedConnection, channel: &str) -> u64 {
    let reply: (String, u64) = redis::cmd("PUBSUB")
        .arg("NUMSUB")
        .arg(format!("gotalk-hub:pub:{channel}"))
        .query_async(&mut raw.clone())
        .await
        .unwrap();
    reply.1
}

/// Dropping the broker closes its pub/sub connection (its task stopped).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_the_broker_stops_its_task() {
    let (redis, mut nodes) = cluster!("dropping_the_broker_stops_its_task", 1);
    nodes[0].broker.subscribe("c").await.unwrap();
    let raw = raw(&redis).await;
    assert_eq!(pubsub_subscribers(&raw, "c").await, 1);
    drop(nodes.pop());
    let deadline = Instant::now() + WAIT;
    while pubsub_subscribers(&raw, "c").await != 0 {
        assert!(
            Instant::now() < deadline,
            "the pub/sub connection stayed open"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Where a sink is called from: the thread's name.
struct ThreadOfDelivery {
    seen: std::sync::Mutex<Option<Option<String>>>,
}

impl BrokerSink for ThreadOfDelivery {
    fn deliver(&self, _channel: &str, _delivery: Delivery) {
        let name = std::thread::current().name().map(str::to_owned);
        *self.seen.lock().unwrap() = Some(name);
    }

    fn resubscribed(&self) {}
}

/// The names of this process's threads (Linux cuts them to 15 bytes).
fn thread_names() -> Vec<String> {
    std::fs::read_dir("/proc/self/task")
        .unwrap()
        .filter_map(|task| std::fs::read_to_string(task.ok()?.path().join("comm")).ok())
        .map(|name| name.trim_end().to_owned())
        .collect()
}

/// With its own thread, the broker's thread runs while it lives, the sink
/// still gets deliveries on the runtime that started the broker, and
/// dropping the broker closes its pub/sub connection. (That the thread
/// ends is checked in `io_thread`'s unit test: other tests here run
/// brokers with threads of the same name at the same time.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn own_thread_hands_deliveries_to_the_callers_runtime_and_stops_with_the_broker() {
    let Some(redis) =
        RedisServer::start("own_thread_hands_deliveries_to_the_callers_runtime").await
    else {
        return;
    };
    let broker = broker(&redis, options().with_dedicated_thread(true));
    // The thread names itself once it runs.
    let deadline = Instant::now() + WAIT;
    while !thread_names().iter().any(|n| n == "gotalk-hub-redi") {
        assert!(Instant::now() < deadline, "no thread of the broker's");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let sink = Arc::new(ThreadOfDelivery {
        seen: std::sync::Mutex::new(None),
    });
    broker.start(sink.clone()).await.unwrap();
    broker.subscribe("c").await.unwrap();
    broker
        .publish("c", Bytes::from("x"), &PublishOptions::default())
        .await
        .unwrap();
    let deadline = Instant::now() + WAIT;
    let name = loop {
        if let Some(seen) = sink.seen.lock().unwrap().clone() {
            break seen;
        }
        assert!(Instant::now() < deadline, "no delivery");
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    let worker = tokio::spawn(async { std::thread::current().name().map(str::to_owned) })
        .await
        .unwrap();
    assert_eq!(name, worker, "delivered on the test runtime's worker");

    let raw = raw(&redis).await;
    assert_eq!(pubsub_subscribers(&raw, "c").await, 1);
    drop(broker);
    let deadline = Instant::now() + WAIT;
    while pubsub_subscribers(&raw, "c").await != 0 {
        assert!(
            Instant::now() < deadline,
            "the pub/sub connection stayed open"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Bad URLs and options are refused up front, without connecting.
#[test]
fn bad_configuration_is_refused() {
    assert!(RedisBroker::new("redis://127.0.0.1:6379/").is_ok());
    assert!(RedisBroker::new("not a url").is_err());
    let zero = RedisBrokerOptions::new().with_operation_timeout(Duration::ZERO);
    assert!(RedisBroker::with_options("redis://127.0.0.1/", zero).is_err());
    let inverted = RedisBrokerOptions::new()
        .with_reconnect_delay(Duration::from_secs(2), Duration::from_secs(1));
    assert!(RedisBroker::with_options("redis://127.0.0.1/", inverted).is_err());
}
