//! When the replies to one read go out: all together once it is handled,
//! except that the first 32 of a longer run go out before the rest is
//! handled, so that the peer can work on them meanwhile; and 16 writes go
//! by between two such early writes. A run longer than 128 is written in
//! groups of 128 whatever the last early write.
//!
//! The client is raw bytes on one end of an in-memory pipe: each batch of
//! requests is one write, so the server reads it whole.

mod common;

use bytes::Bytes;
use common::{Raw, WAIT, quiet, tap::Taps, within};
use gotalk_peer::{
    HandlerError, Handlers, Peer, RequestId,
    proto::{Message, Text},
};
use tokio::io::DuplexStream;

/// A one-byte result's length on the wire: `R`, the ID, the size, the byte.
const RESULT_LEN: usize = 1 + 4 + 8 + 1;

struct Setup {
    raw: Raw<DuplexStream>,
    taps: Taps,
    _server: Peer,
    next_id: u32,
}

async fn setup() -> Setup {
    let handlers =
        Handlers::new().buffer(
            "echo",
            |_ctx, p: Bytes| async move { Ok::<_, HandlerError>(p) },
        );
    let taps = Taps::default();
    let (a, b) = tokio::io::duplex(1 << 20);
    let mut raw = Raw::new(a);
    let (server, ()) = tokio::join!(
        Peer::handshake(taps.wrap(Box::new(b)), handlers, quiet()),
        raw.handshake(),
    );
    Setup {
        raw,
        taps,
        _server: server.unwrap(),
        next_id: 0,
    }
}

impl Setup {
    /// Sends `n` one-byte `echo` requests in one write, reads every result,
    /// and returns the sizes of the server's writes meanwhile, in results.
    async fn batch(&mut self, n: usize) -> Vec<usize> {
        let before = self.taps.writes();
        let mut bytes = Vec::new();
        for _ in 0..n {
            self.next_id += 1;
            let digits = format!("{:04}", self.next_id % 10_000);
            let id = RequestId::new(digits.as_bytes().try_into().unwrap());
            let msg = Message::SingleRequest {
                id,
                op: Text::from_static("echo"),
                payload: Bytes::from_static(b"x"),
            };
            bytes.extend_from_slice(&msg.to_vec().unwrap());
        }
        self.raw.send_bytes(&bytes).await;
        within(WAIT, "every result", async {
            for _ in 0..n {
                match self.raw.next_message().await {
                    Some(Message::SingleResult { payload, .. }) => assert_eq!(&payload[..], b"x"),
                    other => panic!("expected a result, got {other:?}"),
                }
            }
        })
        .await;
        let sizes = self.taps.write_sizes()[before..].to_vec();
        assert!(
            sizes.iter().all(|s| s % RESULT_LEN == 0),
            "writes of whole results: {sizes:?}"
        );
        sizes.iter().map(|s| s / RESULT_LEN).collect()
    }
}

#[tokio::test]
async fn the_first_32_replies_of_a_long_read_go_out_before_the_rest_is_handled() {
    let mut s = setup().await;
    assert_eq!(s.batch(64).await, [32, 32]);
}

#[tokio::test]
async fn replies_to_a_short_read_go_out_together() {
    let mut s = setup().await;
    assert_eq!(s.batch(1).await, [1]);
    assert_eq!(s.batch(31).await, [31]);
    // The 32nd reply is the last: nothing left to handle, no early write.
    assert_eq!(s.batch(32).await, [32]);
    assert_eq!(s.batch(33).await, [32, 1]);
}

#[tokio::test]
async fn sixteen_writes_go_by_between_two_early_ones() {
    let mut s = setup().await;
    assert_eq!(s.batch(100).await, [32, 68]);
    // The write right after the early one is the first of the 16.
    for round in 0..15 {
        assert_eq!(s.batch(100).await, [100], "round {round}");
    }
    assert_eq!(s.batch(100).await, [32, 68]);
}

#[tokio::test]
async fn a_long_run_is_written_in_groups_of_128() {
    let mut s = setup().await;
    assert_eq!(s.batch(300).await, [32, 128, 128, 12]);
    // No first group of 32 within the next 16 writes; groups of 128 still.
    assert_eq!(s.batch(300).await, [128, 128, 44]);
    // 128 is not more than 128.
    assert_eq!(s.batch(128).await, [128]);
    assert_eq!(s.batch(129).await, [128, 1]);
}
