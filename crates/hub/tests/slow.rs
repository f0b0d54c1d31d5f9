//! A subscriber that stops reading is disconnected as a slow consumer,
//! and its session removed, while the others keep receiving everything.

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::{Client, eventually, serve_with, within};
use futures::future::{BoxFuture, FutureExt};
use gotalk_hub::{ClientContext, Hooks, Hub};
use gotalk_peer::{
    CloseReason, Config,
    proto::{Message, RequestId, Text, VERSION_BYTES},
};
use serde_json::json;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};

const QUEUE_BOUND: usize = 256 * 1024;
/// Each publication's data: a JSON string of this many bytes.
const DATA: usize = 64 * 1024;
/// Far more than loopback socket buffers absorb for a reader that stops.
const MAX_MESSAGES: usize = 600;

/// Why connections closed.
#[derive(Default)]
struct Reasons(std::sync::Mutex<Vec<CloseReason>>);

impl Hooks for Reasons {
    fn on_disconnect<'a>(
        &'a self,
        _client: &'a ClientContext,
        reason: &'a CloseReason,
    ) -> BoxFuture<'a, ()> {
        self.0.lock().unwrap().push(reason.clone());
        futures::future::ready(()).boxed()
    }
}

/// A client written from the protocol up: version handshake, one
/// `subscribe` request, its result read, then nothing read ever again.
async fn stalled_subscriber(addr: &str, channel: &str) -> TcpStream {
    let mut io = TcpStream::connect(addr).await.unwrap();
    io.write_all(&VERSION_BYTES).await.unwrap();
    let mut version = [0u8; 2];
    io.read_exact(&mut version).await.unwrap();
    assert_eq!(version, VERSION_BYTES);
    let request = Message::SingleRequest {
        id: RequestId::new(*b"0001"),
        op: Text::from_static("subscribe"),
        payload: Bytes::from(json!({"channel": channel}).to_string()),
    };
    io.write_all(&request.to_vec().unwrap()).await.unwrap();
    // The result: `R0001`, an 8-digit length, the JSON.
    let mut header = [0u8; 13];
    io.read_exact(&mut header).await.unwrap();
    assert_eq!(&header[..5], b"R0001");
    let len = usize::from_str_radix(std::str::from_utf8(&header[5..]).unwrap(), 16).unwrap();
    let mut result = vec![0u8; len];
    io.read_exact(&mut result).await.unwrap();
    let result: serde_json::Value = serde_json::from_slice(&result).unwrap();
    assert_eq!(result["offset"], 0);
    io
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscriber_that_stops_reading_is_dropped_and_the_others_get_everything() {
    stops_reading(Hub::builder()).await;
}

/// The same with a write delay far longer than the test's waits: large
/// deliveries are not held for it (32 KiB waiting go at once), and the
/// queue bound still finds the subscriber that does not read.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_a_write_delay_too() {
    stops_reading(Hub::builder().write_delay(Duration::from_secs(3600))).await;
}

async fn stops_reading(builder: gotalk_hub::HubBuilder) {
    let config = Config {
        max_write_queue_bytes: QUEUE_BOUND,
        ..Config::default()
    };
    let reasons = std::sync::Arc::new(Reasons::default());
    let (hub, server) = serve_with(builder.hooks_arc(reasons.clone()), config).await;
    let addr = server.local_addr().to_string();
    let mut readers = Vec::new();
    for _ in 0..2 {
        let c = Client::connect(&server).await;
        c.ok("subscribe", json!({"channel": "feed"})).await;
        readers.push(c);
    }
    let stalled = stalled_subscriber(&addr, "feed").await;
    assert_eq!(hub.stats().node_subscribers, 3);

    let data = Bytes::from(format!("\"{}\"", "x".repeat(DATA - 2)));
    let mut received = vec![Vec::new(); readers.len()];
    let mut sent = 0;
    while hub.stats().node_subscribers == 3 {
        sent += 1;
        assert!(
            sent <= MAX_MESSAGES,
            "the stalled subscriber was never dropped"
        );
        hub.publish_json("feed", data.clone()).await.unwrap();
        // In step with the readers that read, so their queues never fill.
        for (reader, got) in readers.iter_mut().zip(&mut received) {
            let (channel, p) = reader.next().await;
            assert_eq!(channel, "feed");
            assert_eq!(p["data"].as_str().map(str::len), Some(DATA - 2));
            got.push(p["offset"].as_u64().unwrap());
        }
    }
    assert!(sent > 1, "dropped at once");
    // Its session is gone; the readers carry on, with everything.
    eventually("the stalled session ends", || hub.stats().clients == 2).await;
    assert_eq!(server.connection_count(), 2);
    match reasons.0.lock().unwrap().as_slice() {
        [CloseReason::SlowConsumer { queued }] => assert!(*queued >= QUEUE_BOUND, "{queued}"),
        other => panic!("closed for {other:?}"),
    }
    for _ in 0..3 {
        sent += 1;
        hub.publish_json("feed", data.clone()).await.unwrap();
        for (reader, got) in readers.iter_mut().zip(&mut received) {
            got.push(reader.next().await.1["offset"].as_u64().unwrap());
        }
    }
    for got in &received {
        assert_eq!(*got, (1..=sent as u64).collect::<Vec<_>>());
    }
    for reader in &readers {
        assert!(!reader.peer.is_closed());
    }
    let stats = hub.stats();
    assert_eq!((stats.subscriptions, stats.node_subscribers), (2, 2));
    within("shutdown", server.shutdown()).await;
    drop(stalled);
    tokio::time::sleep(Duration::from_millis(1)).await;
}
