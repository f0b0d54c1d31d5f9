use std::sync::Mutex;

use super::*;

/// A sink that records what it is given.
#[derive(Default)]
struct Recorder {
    seen: Mutex<Vec<(String, Delivery)>>,
    resubscribed: std::sync::atomic::AtomicUsize,
}

impl BrokerSink for Recorder {
    fn deliver(&self, channel: &str, delivery: Delivery) {
        self.seen
            .lock()
            .unwrap()
            .push((channel.to_owned(), delivery));
    }
    fn resubscribed(&self) {
        self.resubscribed
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }
}

impl Recorder {
    fn offsets(&self, channel: &str) -> Vec<u64> {
        self.seen
            .lock()
            .unwrap()
            .iter()
            .filter(|(c, _)| c == channel)
            .filter_map(|(_, d)| match d {
                Delivery::Publication { publication, .. } => Some(publication.offset),
                _ => None,
            })
            .collect()
    }
}

fn kept(size: usize, ttl_secs: u64) -> PublishOptions {
    PublishOptions {
        history: HistoryOptions {
            size,
            ttl: Duration::from_secs(ttl_secs),
        },
        info: None,
    }
}

async fn started() -> (MemoryBroker, Arc<Recorder>) {
    let broker = MemoryBroker::new();
    let sink = Arc::new(Recorder::default());
    broker.start(sink.clone()).await.unwrap();
    (broker, sink)
}

fn since(position: &StreamPosition, limit: usize) -> HistoryQuery {
    HistoryQuery {
        since: Some(position.clone()),
        limit,
    }
}

#[tokio::test]
async fn offsets_increase_per_channel_with_an_epoch_each() {
    let (broker, _) = started().await;
    let a1 = broker.publish("a", "1".into(), &kept(0, 60)).await.unwrap();
    let a2 = broker.publish("a", "2".into(), &kept(0, 60)).await.unwrap();
    let b1 = broker.publish("b", "1".into(), &kept(0, 60)).await.unwrap();
    assert_eq!((a1.offset, a2.offset, b1.offset), (1, 2, 1));
    assert_eq!(a1.epoch, a2.epoch);
    assert_ne!(
        a1.epoch, b1.epoch,
        "each channel's stream has its own epoch"
    );
    assert_eq!(a1.epoch.len(), 16);
}

#[tokio::test]
async fn only_subscribed_channels_are_delivered_in_offset_order() {
    let (broker, sink) = started().await;
    broker
        .publish("a", "early".into(), &kept(0, 60))
        .await
        .unwrap();
    broker.subscribe("a").await.unwrap();
    broker.subscribe("a").await.unwrap(); // idempotent
    // Publishers racing on one channel, from several tasks and threads.
    let tasks: Vec<_> = (0..8)
        .map(|_| {
            let broker = broker.clone();
            tokio::spawn(async move {
                for _ in 0..50 {
                    broker.publish("a", "x".into(), &kept(0, 60)).await.unwrap();
                    broker.publish("b", "y".into(), &kept(0, 60)).await.unwrap();
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(sink.offsets("a"), (2..=401).collect::<Vec<_>>());
    assert!(sink.offsets("b").is_empty(), "b has no subscription");
    broker.unsubscribe("a").await.unwrap();
    broker
        .publish("a", "late".into(), &kept(0, 60))
        .await
        .unwrap();
    assert_eq!(sink.offsets("a").len(), 400);
    assert_eq!(
        sink.resubscribed.load(std::sync::atomic::Ordering::Relaxed),
        0
    );
}

#[tokio::test]
async fn history_keeps_the_last_size_publications_and_says_when_a_position_is_gone() {
    let (broker, _) = started().await;
    let mut positions = Vec::new();
    for i in 1..=5u8 {
        let data = Bytes::from(vec![b'0' + i]);
        positions.push(broker.publish("c", data, &kept(3, 60)).await.unwrap());
    }
    let at = |i: usize| positions[i - 1].clone();

    // Most recent, without `since`.
    let h = broker
        .history(
            "c",
            HistoryQuery {
                since: None,
                limit: 2,
            },
        )
        .await
        .unwrap();
    assert_eq!(
        h.publications.iter().map(|p| p.offset).collect::<Vec<_>>(),
        [4, 5]
    );
    assert_eq!(h.position, at(5));

    // After a kept position: complete, oldest first, paged by `limit`.
    let h = broker.history("c", since(&at(2), 10)).await.unwrap();
    assert!(h.complete);
    assert_eq!(
        h.publications.iter().map(|p| p.offset).collect::<Vec<_>>(),
        [3, 4, 5]
    );
    assert_eq!(h.publications[0].data, "3");
    let h = broker.history("c", since(&at(2), 1)).await.unwrap();
    assert!(h.complete);
    assert_eq!(
        h.publications.iter().map(|p| p.offset).collect::<Vec<_>>(),
        [3]
    );

    // At the head: complete, nothing missed.
    let h = broker.history("c", since(&at(5), 10)).await.unwrap();
    assert!(h.complete && h.publications.is_empty());

    // Trimmed past it: offset 2 is gone; what is kept after it comes back.
    let h = broker.history("c", since(&at(1), 10)).await.unwrap();
    assert!(!h.complete);
    assert_eq!(
        h.publications.iter().map(|p| p.offset).collect::<Vec<_>>(),
        [3, 4, 5]
    );

    // Another epoch, or a position from the future.
    let other = StreamPosition {
        offset: 4,
        epoch: "other".into(),
    };
    assert!(
        !broker
            .history("c", since(&other, 10))
            .await
            .unwrap()
            .complete
    );
    let ahead = StreamPosition { offset: 9, ..at(5) };
    assert!(
        !broker
            .history("c", since(&ahead, 10))
            .await
            .unwrap()
            .complete
    );
}

#[tokio::test]
async fn without_history_only_positions_are_known() {
    let (broker, _) = started().await;
    let p1 = broker.publish("n", "1".into(), &kept(0, 60)).await.unwrap();
    let h = broker.history("n", since(&p1, 10)).await.unwrap();
    assert!(h.complete, "nothing was published after p1");
    broker.publish("n", "2".into(), &kept(0, 60)).await.unwrap();
    let h = broker.history("n", since(&p1, 10)).await.unwrap();
    assert!(!h.complete, "offset 2 was not kept");
    assert_eq!(h.position.offset, 2);
}

#[tokio::test]
async fn a_position_read_before_the_first_publication_stays_valid() {
    let (broker, _) = started().await;
    let h = broker
        .history(
            "fresh",
            HistoryQuery {
                since: None,
                limit: 0,
            },
        )
        .await
        .unwrap();
    assert_eq!(h.position.offset, 0);
    broker
        .publish("fresh", "1".into(), &kept(5, 60))
        .await
        .unwrap();
    let h = broker
        .history("fresh", since(&h.position, 10))
        .await
        .unwrap();
    assert!(h.complete);
    assert_eq!(h.publications.len(), 1);
}

#[tokio::test(start_paused = true)]
async fn history_expires_after_its_ttl_and_a_new_epoch_starts() {
    let (broker, _) = started().await;
    let p1 = broker.publish("t", "1".into(), &kept(5, 10)).await.unwrap();
    tokio::time::advance(Duration::from_secs(9)).await;
    let p2 = broker.publish("t", "2".into(), &kept(5, 10)).await.unwrap();
    assert_eq!(
        p2.epoch, p1.epoch,
        "the ttl counts from the last publication"
    );
    tokio::time::advance(Duration::from_secs(11)).await;
    let p3 = broker.publish("t", "3".into(), &kept(5, 10)).await.unwrap();
    assert_ne!(p3.epoch, p1.epoch);
    assert_eq!(p3.offset, 1);
    let h = broker.history("t", since(&p2, 10)).await.unwrap();
    assert!(!h.complete, "the old epoch is gone");
}

#[tokio::test(start_paused = true)]
async fn presence_expires_unless_refreshed_and_leaves_no_state() {
    let (broker, sink) = started().await;
    let alice = ClientInfo {
        user: "alice".into(),
        client: "c1".into(),
    };
    let bob = ClientInfo {
        user: "bob".into(),
        client: "c2".into(),
    };
    let ttl = Duration::from_secs(10);
    broker.add_presence("room", &alice, ttl).await.unwrap();
    broker.add_presence("room", &bob, ttl).await.unwrap();
    assert_eq!(
        broker.presence("room").await.unwrap(),
        [alice.clone(), bob.clone()]
    );
    tokio::time::advance(Duration::from_secs(6)).await;
    broker.add_presence("room", &alice, ttl).await.unwrap();
    tokio::time::advance(Duration::from_secs(6)).await;
    assert_eq!(
        broker.presence("room").await.unwrap(),
        std::slice::from_ref(&alice)
    );
    broker.remove_presence("room", "c1").await.unwrap();
    assert!(broker.presence("room").await.unwrap().is_empty());

    // Presence events reach subscribed nodes only, and are not history.
    broker
        .publish_presence("room", &Delivery::Join(bob.clone()))
        .await
        .unwrap();
    broker.subscribe("room").await.unwrap();
    broker
        .publish_presence("room", &Delivery::Leave(bob.clone()))
        .await
        .unwrap();
    assert_eq!(
        sink.seen.lock().unwrap().clone(),
        [("room".to_owned(), Delivery::Leave(bob))]
    );

    broker.unsubscribe("room").await.unwrap();
    assert_eq!(broker.subscribed_channels(), 0);
    // The sweeper drops channels with nothing left once their history
    // (made by the reads above) expires.
    tokio::time::advance(HistoryOptions::default().ttl + SWEEP_INTERVAL * 2).await;
    tokio::task::yield_now().await;
    assert_eq!(broker.channel_count(), 0);
}
