//! A handler that waits does not hold back the answers of the requests
//! that come after it on the same connection, over TCP or WebSocket.

use std::time::Duration;

use bytes::Bytes;
use futures::{StreamExt, stream::FuturesUnordered};
mod common;

use common::Transport;
use gotalk_peer::{Config, HandlerError, Handlers, Peer};

/// Fast requests answered while the slow one waits.
const FAST: usize = 2_000;
/// Fast requests in flight at once.
const WINDOW: usize = 16;
/// Far longer than the fast requests need, however slow the machine.
const SLOW: Duration = Duration::from_secs(20);

fn handlers() -> Handlers {
    Handlers::new().buffer("op", |_ctx, payload: Bytes| async move {
        if &payload[..] == b"slow" {
            tokio::time::sleep(SLOW).await;
        }
        Ok::<_, HandlerError>(payload)
    })
}

/// Sends the slow request, then [`FAST`] fast ones, [`WINDOW`] at a time:
/// each window must not wait for the slow one.
async fn fast_pass_slow(client: Peer) {
    let mut slow = Box::pin(client.request("op", "slow"));
    let mut in_flight = FuturesUnordered::new();
    let (mut sent, mut done) = (0, 0);
    let fast = async {
        while done < FAST {
            while sent < FAST && in_flight.len() < WINDOW {
                in_flight.push(client.request("op", "fast"));
                sent += 1;
            }
            let answer = in_flight.next().await.unwrap().unwrap();
            assert_eq!(&answer[..], b"fast");
            done += 1;
        }
    };
    tokio::select! {
        answer = &mut slow => panic!("the slow request finished first: {answer:?}"),
        () = fast => {}
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 1)]
async fn over_tcp() {
    let conn = common::connect(
        Transport::Tcp,
        Handlers::new(),
        handlers(),
        Config::default(),
        Config::default(),
    )
    .await;
    let client = conn.client;
    fast_pass_slow(client).await;
}

#[cfg(feature = "websocket")]
#[tokio::test(flavor = "multi_thread", worker_threads = 1)]
async fn over_websocket() {
    use gotalk_peer::{Server, ws};
    let listener = ws::WsListener::bind("127.0.0.1:0", ws::WsConfig::default())
        .await
        .unwrap();
    let server = Server::new(listener, handlers(), Config::default()).spawn();
    let client = ws::connect(
        &server.local_addr().to_string(),
        Handlers::new(),
        Config::default(),
    )
    .await
    .unwrap();
    fast_pass_slow(client).await;
}
