//! The load heartbeats carry by default (the fuller of the connection's
//! request limit and the process's handler limit) and what the receiving
//! side keeps of it ([`Peer::remote_load`]), on paused time over memory.

mod common;

use std::{sync::Arc, time::Duration};

use bytes::Bytes;
use common::{WAIT, within};
use gotalk_peer::{Config, HandlerError, HandlerLimit, Handlers, Peer};
use tokio::{sync::Semaphore, task::JoinHandle, time::Instant};

const EVERY: Duration = Duration::from_secs(1);

/// A server whose `hold` handler waits until the test lets it go.
fn holding(gate: &Arc<Semaphore>) -> Handlers {
    let gate = Arc::clone(gate);
    Handlers::new().buffer("hold", move |_ctx, _p: Bytes| {
        let gate = Arc::clone(&gate);
        async move {
            gate.acquire().await.expect("open").forget();
            Ok::<_, HandlerError>(Bytes::new())
        }
    })
}

fn config(max_inbound_requests: usize, limit: &HandlerLimit) -> Config {
    Config {
        heartbeat_interval: Some(EVERY),
        max_inbound_requests,
        handler_limit: limit.clone(),
        ..Config::default()
    }
}

fn hold(client: &Peer, n: usize) -> Vec<JoinHandle<()>> {
    (0..n)
        .map(|_| {
            let client = client.clone();
            tokio::spawn(async move {
                client.request("hold", "").await.expect("answered");
            })
        })
        .collect()
}

/// Waits for the next heartbeat the client receives and returns its load.
async fn next_load(client: &Peer) -> u16 {
    let before = client.remote_load().map(|l| l.received);
    // Just past the beat: its timer fires at the deadline, and the time
    // only moves on once every task waits, the beat delivered.
    tokio::time::sleep(EVERY + Duration::from_millis(10)).await;
    let load = client.remote_load().expect("a heartbeat came");
    assert_ne!(Some(load.received), before, "a new heartbeat");
    load.load
}

#[tokio::test(start_paused = true)]
async fn requests_over_the_connection_limit_set_the_load() {
    let gate = Arc::new(Semaphore::new(0));
    let limit = HandlerLimit::new(1000);
    let (client, _server) = Peer::pair(Handlers::new(), holding(&gate), config(4, &limit))
        .await
        .unwrap();
    assert_eq!(client.remote_load(), None, "no heartbeat yet");
    let start = Instant::now();
    assert_eq!(next_load(&client).await, 0, "idle");
    let received = client.remote_load().unwrap().received - start;
    assert!(
        (EVERY..=EVERY + Duration::from_millis(2)).contains(&received),
        "received {received:?} after the start, on the beat"
    );

    let calls = hold(&client, 2);
    // Two of four requests the connection takes at once: half.
    assert_eq!(next_load(&client).await, 32_768);
    let more = hold(&client, 2);
    assert_eq!(next_load(&client).await, u16::MAX, "full: refusing work");

    gate.add_permits(4);
    for call in calls.into_iter().chain(more) {
        within(WAIT, "calls answered", call).await.unwrap();
    }
    assert_eq!(next_load(&client).await, 0, "idle again");
}

/// The handler limit is shared by the server's connections: handlers held
/// for one client load the heartbeats every client gets.
#[tokio::test(start_paused = true)]
async fn handlers_over_the_shared_limit_set_the_load() {
    let gate = Arc::new(Semaphore::new(0));
    let limit = HandlerLimit::new(4);
    let server_side = config(1024, &limit);
    let (busy, _s1) = Peer::pair(Handlers::new(), holding(&gate), server_side.clone())
        .await
        .unwrap();
    let (other, _s2) = Peer::pair(Handlers::new(), holding(&gate), server_side)
        .await
        .unwrap();
    let calls = hold(&busy, 3);
    // Three of the four handlers the process runs at once.
    assert_eq!(next_load(&other).await, 49_151);
    assert_eq!(busy.remote_load().unwrap().load, 49_151);
    gate.add_permits(3);
    for call in calls {
        within(WAIT, "calls answered", call).await.unwrap();
    }
    assert_eq!(next_load(&other).await, 0);
}

/// `Config::heartbeat_load` still replaces the measured figure.
#[tokio::test(start_paused = true)]
async fn a_configured_load_function_wins() {
    let gate = Arc::new(Semaphore::new(0));
    let config = Config {
        heartbeat_load: Some(Arc::new(|| 1234)),
        ..config(4, &HandlerLimit::new(10))
    };
    let (client, _server) = Peer::pair(Handlers::new(), holding(&gate), config)
        .await
        .unwrap();
    let calls = hold(&client, 3);
    assert_eq!(next_load(&client).await, 1234);
    gate.add_permits(3);
    for call in calls {
        within(WAIT, "calls answered", call).await.unwrap();
    }
}
