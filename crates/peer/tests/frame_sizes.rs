//! Payloads of every size class the reader treats differently (small frames
//! read ahead, large frames read into a buffer of their own and only up to
//! their end, frames longer than that), one after another and interleaved,
//! come back intact.

use bytes::Bytes;
use futures::future::try_join_all;
use gotalk_peer::{Config, HandlerError, Handlers, Peer, Server};

/// Around the reader's thresholds: 16 KiB (large frame), 256 KiB (largest
/// frame given a buffer of its own); frames are the payload plus a 20-byte
/// header.
const SIZES: [usize; 14] = [
    0,
    1,
    32,
    16 * 1024 - 21,
    16 * 1024,
    64 * 1024,
    64 * 1024 + 13,
    200_000,
    256 * 1024 - 20,
    256 * 1024 + 1,
    1_000_000,
    70_000,
    5,
    3 * 1024 * 1024 + 7,
];

fn payload(len: usize, seed: usize) -> Bytes {
    (0..len)
        .map(|i| (i.wrapping_mul(31) ^ seed) as u8)
        .collect::<Vec<u8>>()
        .into()
}

fn echo() -> Handlers {
    Handlers::new().buffer(
        "echo",
        |_ctx, p: Bytes| async move { Ok::<_, HandlerError>(p) },
    )
}

async fn exercise(peer: &Peer) {
    // One at a time: each frame starts where the last one ended.
    for (seed, &len) in SIZES.iter().enumerate() {
        let sent = payload(len, seed);
        assert_eq!(
            peer.request("echo", sent.clone()).await.unwrap(),
            sent,
            "{len}"
        );
    }
    // All at once, twice over: small and large frames interleave on the wire.
    let calls = SIZES
        .iter()
        .chain(SIZES.iter().rev())
        .enumerate()
        .map(|(seed, &len)| {
            let peer = peer.clone();
            async move {
                let sent = payload(len, seed);
                let back = peer.request("echo", sent.clone()).await?;
                assert_eq!(back, sent, "{len}");
                Ok::<_, gotalk_peer::Error>(())
            }
        });
    try_join_all(calls).await.unwrap();
}

#[tokio::test]
async fn every_size_class_over_tcp() {
    let server = Server::bind("127.0.0.1:0", echo(), Config::default())
        .await
        .unwrap()
        .spawn();
    let peer = Peer::connect(
        server.local_addr().to_string(),
        Handlers::new(),
        Config::default(),
    )
    .await
    .unwrap();
    exercise(&peer).await;
    peer.close().await;
    server.shutdown().await;
}

#[tokio::test]
async fn every_size_class_in_memory() {
    let (client, _server) = Peer::pair(Handlers::new(), echo(), Config::default())
        .await
        .unwrap();
    exercise(&client).await;
}
