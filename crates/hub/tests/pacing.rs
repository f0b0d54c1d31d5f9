//! Publish pacing: a probe's answer (a lone publisher's every answer) and,
//! while the node is late, every answer is sent after the node's
//! subscriber connections have written the publication, the way Socket.IO
//! writes before it acknowledges; and a publication that waits holds back
//! no other.

mod common;

use std::{
    io::{ErrorKind, Read, Write},
    net::{SocketAddr, TcpStream},
    thread,
    time::Duration,
};

use bytes::Bytes;
use gotalk_hub::{Hub, HubBuilder, broker::HistoryOptions};
use gotalk_peer::proto::{Message, RequestId, Text, VERSION_BYTES};
use serde_json::{Value, json};
use tokio::runtime::Builder;

/// Subscribers of the channel: fewer than tokio's local run queue holds
/// (256), so on one worker none of their tasks overflows to the shared
/// queue and the order is exact.
const SUBSCRIBERS: usize = 100;
const PUBLICATIONS: usize = 5;

/// Serves a hub on a runtime of its own, on its own thread: the order in
/// which that runtime runs the connections is what is tested.
fn serve_on(
    mut runtime: Builder,
    hub: impl FnOnce() -> HubBuilder + Send + 'static,
) -> (SocketAddr, tokio::sync::oneshot::Sender<()>) {
    let (addr_tx, addr_rx) = std::sync::mpsc::channel();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    thread::spawn(move || {
        let runtime = runtime.enable_all().build().unwrap();
        runtime.block_on(async move {
            let (_hub, server) = common::serve(hub()).await;
            let gotalk_peer::LocalAddr::Tcp(addr) = server.local_addr() else {
                panic!("a TCP listener")
            };
            addr_tx.send(*addr).unwrap();
            let _ = stopped.await;
        });
    });
    (addr_rx.recv().unwrap(), stop)
}

/// A blocking client written from the protocol up.
fn connect(addr: SocketAddr) -> TcpStream {
    let mut io = TcpStream::connect(addr).unwrap();
    io.set_nodelay(true).unwrap();
    io.set_read_timeout(Some(common::WAIT)).unwrap();
    io.write_all(&VERSION_BYTES).unwrap();
    let mut version = [0u8; 2];
    io.read_exact(&mut version).unwrap();
    assert_eq!(version, VERSION_BYTES);
    io
}

/// Sends request `n` and reads its single result.
fn request(io: &mut TcpStream, n: usize, op: &'static str, input: Value) -> Value {
    let id = format!("{n:04}");
    let request = Message::SingleRequest {
        id: RequestId::new(id.as_bytes().try_into().unwrap()),
        op: Text::from_static(op),
        payload: Bytes::from(input.to_string()),
    };
    io.write_all(&request.to_vec().unwrap()).unwrap();
    // `R`, the id, an 8-digit hexadecimal length, the JSON.
    let mut header = [0u8; 13];
    io.read_exact(&mut header).unwrap();
    assert_eq!(&header[..5], format!("R{id}").as_bytes(), "{op}");
    serde_json::from_slice(&read_len(io, &header[5..])).unwrap()
}

fn read_len(io: &mut TcpStream, hex: &[u8]) -> Vec<u8> {
    let len = usize::from_str_radix(std::str::from_utf8(hex).unwrap(), 16).unwrap();
    let mut body = vec![0u8; len];
    io.read_exact(&mut body).unwrap();
    body
}

/// Reads one notification: `n`, a 3-digit name length, the name, an
/// 8-digit payload length, the payload.
fn notification(io: &mut TcpStream) -> (String, Value) {
    let mut head = [0u8; 4];
    io.read_exact(&mut head).unwrap();
    assert_eq!(head[0], b'n');
    let name = String::from_utf8(read_len(io, &head[1..])).unwrap();
    let mut len = [0u8; 8];
    io.read_exact(&mut len).unwrap();
    let payload = serde_json::from_slice(&read_len(io, &len)).unwrap();
    (name, payload)
}

/// Whether bytes wait to be read on `io`, without reading them.
fn has_data(io: &TcpStream) -> bool {
    io.set_nonblocking(true).unwrap();
    let mut byte = [0u8; 1];
    let ready = match io.peek(&mut byte) {
        Ok(n) => n > 0,
        Err(e) if e.kind() == ErrorKind::WouldBlock => false,
        Err(e) => panic!("peek: {e}"),
    };
    io.set_nonblocking(false).unwrap();
    ready
}

/// Publishes [`PUBLICATIONS`] one after the other on a hub paced at
/// `target`; each answer must come after every subscriber was written to,
/// and within `within`.
fn publish_answers_follow_deliveries(
    runtime: Builder,
    broker: common::Flaky,
    target: Duration,
    within: Duration,
) {
    let (addr, _stop) = serve_on(runtime, move || {
        Hub::builder().broker(broker).publish_pacing(target)
    });
    let mut subscribers: Vec<TcpStream> = (0..SUBSCRIBERS)
        .map(|_| {
            let mut io = connect(addr);
            let out = request(&mut io, 1, "subscribe", json!({"channel": "news"}));
            assert_eq!(out["offset"], 0);
            io
        })
        .collect();
    let mut publisher = connect(addr);
    for k in 1..=PUBLICATIONS {
        let sent = std::time::Instant::now();
        let out = request(
            &mut publisher,
            k,
            "publish",
            json!({"channel": "news", "data": k}),
        );
        let took = sent.elapsed();
        assert!(took < within, "publication {k} answered after {took:?}");
        assert_eq!(out["offset"], k);
        // Loopback hands written bytes to the reader's socket before the
        // write returns, so every delivery written before the answer is
        // there to read now.
        let waiting = subscribers.iter().filter(|io| !has_data(io)).count();
        assert_eq!(
            waiting, 0,
            "publication {k} answered before {waiting} of {SUBSCRIBERS} subscribers were written to"
        );
        for io in &mut subscribers {
            let (name, payload) = notification(io);
            assert_eq!(name, "news");
            assert_eq!(payload["data"], k, "{payload}");
        }
    }
}

#[test]
fn on_a_current_thread_runtime() {
    publish_answers_follow_deliveries(
        Builder::new_current_thread(),
        common::Flaky::default(),
        Duration::from_millis(10),
        common::WAIT,
    );
}

#[test]
fn on_one_worker_of_a_multi_thread_runtime() {
    let mut builder = Builder::new_multi_thread();
    builder.worker_threads(1);
    publish_answers_follow_deliveries(
        builder,
        common::Flaky::default(),
        Duration::from_millis(10),
        common::WAIT,
    );
}

/// With a broker whose deliveries come back later than its answer (as
/// Redis's do), the answer waits for this node's fan-out first: woken by
/// it, well before the wait's limit (four times the target, 4 s here).
#[test]
fn through_a_broker_that_delivers_late() {
    let broker = common::Flaky::default();
    broker
        .delay_ms
        .store(20, std::sync::atomic::Ordering::SeqCst);
    publish_answers_follow_deliveries(
        Builder::new_current_thread(),
        broker,
        Duration::from_secs(1),
        Duration::from_secs(2),
    );
}

/// An `on_publish` hook that takes its time on one publication.
struct SlowOn(&'static str);

impl gotalk_hub::Hooks for SlowOn {
    fn on_publish<'a>(
        &'a self,
        _client: &'a gotalk_hub::ClientContext,
        _channel: &'a str,
        data: Bytes,
    ) -> futures::future::BoxFuture<'a, Result<Bytes, gotalk_hub::Denied>> {
        use futures::FutureExt;
        let slow = &data[..] == self.0.as_bytes();
        async move {
            if slow {
                tokio::time::sleep(Duration::from_secs(20)).await;
            }
            Ok(data)
        }
        .boxed()
    }
}

/// One publication that waits (here on a hook) does not hold back the
/// same client's next ones: 2 000 more, 16 at a time, pass it.
#[tokio::test(flavor = "multi_thread", worker_threads = 1)]
async fn a_waiting_publication_holds_back_no_other() {
    use futures::{StreamExt, stream::FuturesUnordered};
    let (_hub, server) = common::serve(
        Hub::builder()
            .hooks(SlowOn("\"slow\""))
            .publish_pacing(Duration::from_millis(10)),
    )
    .await;
    let client = common::Client::connect(&server).await;
    let peer = client.peer.clone();
    let publish = |data: &str| {
        let peer = peer.clone();
        let body = json!({"channel": "news", "data": data}).to_string();
        async move { peer.request("publish", body).await }
    };
    let mut slow = Box::pin(publish("slow"));
    let mut in_flight = FuturesUnordered::new();
    let (mut sent, mut done) = (0, 0);
    let fast = async {
        while done < 2_000 {
            while sent < 2_000 && in_flight.len() < 16 {
                in_flight.push(publish("fast"));
                sent += 1;
            }
            in_flight.next().await.unwrap().unwrap();
            done += 1;
        }
    };
    tokio::select! {
        answer = &mut slow => panic!("the slow publication finished first: {answer:?}"),
        () = common::within("2 000 publications past a slow one", fast) => {}
    }
}

/// A publication the broker lost on its way to this node is fanned out by
/// the gap recovery that the next one starts: the paced answer of that
/// next one is woken by the recovery's fan-out, not by the wait's limit.
#[tokio::test]
async fn a_recovery_fan_out_wakes_paced_answers() {
    let broker = common::Flaky::default();
    let down = broker.down.clone();
    let (_hub, server) = common::serve(
        Hub::builder()
            .broker(broker)
            .history(
                "*",
                HistoryOptions {
                    size: 10,
                    ttl: Duration::from_secs(60),
                },
            )
            .publish_pacing(Duration::from_millis(500)),
    )
    .await;
    let mut subscriber = common::Client::connect(&server).await;
    subscriber.ok("subscribe", json!({"channel": "news"})).await;
    let publisher = common::Client::connect(&server).await;
    publisher
        .ok("publish", json!({"channel": "news", "data": 1}))
        .await;

    // Lost on its way to the node: its paced answer waits out the limit
    // (four times the target).
    down.store(true, std::sync::atomic::Ordering::SeqCst);
    publisher
        .ok("publish", json!({"channel": "news", "data": 2}))
        .await;
    down.store(false, std::sync::atomic::Ordering::SeqCst);

    let sent = std::time::Instant::now();
    publisher
        .ok("publish", json!({"channel": "news", "data": 3}))
        .await;
    let took = sent.elapsed();
    assert!(
        took < Duration::from_secs(1),
        "answered after {took:?}: not woken by the recovery"
    );
    let notes = vec![
        subscriber.next().await,
        subscriber.next().await,
        subscriber.next().await,
    ];
    assert_eq!(common::offsets(&notes), [1, 2, 3]);
}
