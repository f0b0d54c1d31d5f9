//! A live connection (the whole runtime: driver, core, dispatch, handlers)
//! over the in-memory transport, fed arbitrary bytes after a valid
//! handshake, with a well-behaved connection beside it on the same handlers.
//!
//! After each input: no panic; the hostile connection's byte budget in use
//! never went past its bound (plus the one frame that may reach it); the
//! well-behaved connection still answers; and the hostile one, once its
//! peer hangs up, closes and frees its state.
//!
//! The input is a list of steps: raw bytes, well-formed frames aimed at the
//! handlers (known operations, a few IDs, payloads up to the limit, so that
//! budgets and limits are reached), any well-formed message, or a pause.
//! Each is written cut in two at an arbitrary place; the runtime's clock is
//! paused, so timers cost no real time.
#![no_main]

use std::time::Duration;

use arbitrary::Arbitrary;
use bytes::Bytes;
use futures_util::StreamExt;
use gotalk_peer::{
    Config, HandlerError, Handlers, Peer,
    proto::{Message, RequestId, Text},
};
use libfuzzer_sys::fuzz_target;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const BUDGET: usize = 64 * 1024;
const MAX_PAYLOAD: u32 = 16 * 1024;

fn handlers() -> Handlers {
    Handlers::new()
        .buffer(
            "echo",
            |_ctx, p: Bytes| async move { Ok::<_, HandlerError>(p) },
        )
        .buffer("slow", |_ctx, p: Bytes| async move {
            tokio::time::sleep(Duration::from_millis(50)).await;
            Ok::<_, HandlerError>(p)
        })
        .stream("stream-echo", |_ctx, mut parts, mut out| async move {
            while let Some(part) = parts.next().await {
                out.send(part?).await?;
            }
            Ok::<_, HandlerError>(())
        })
        .notification("n", |_ctx, _p| async move {})
}

fn config() -> Config {
    Config {
        max_buffered_bytes: BUDGET,
        max_payload: MAX_PAYLOAD,
        max_inbound_requests: 8,
        max_inbound_streams: 2,
        stream_buffer_parts: 2,
        max_concurrent_notifications: 2,
        max_write_queue_bytes: 8 * 1024,
        heartbeat_interval: None,
        ..Config::default()
    }
}

#[derive(Arbitrary, Debug)]
enum Kind {
    Request,
    StreamRequest,
    Part,
    EndOfParts,
    Notification,
    Result,
    Heartbeat,
}

#[derive(Arbitrary, Debug)]
enum Step {
    Raw(Vec<u8>),
    Aimed {
        kind: Kind,
        /// Index into the operation names (one is unknown).
        op: u8,
        /// One of a few IDs, so that streams and parts meet.
        id: u8,
        /// Payload length, scaled up to the payload limit.
        len: u16,
        cut: u16,
    },
    Any { msg: Message, cut: u16 },
    /// Milliseconds of (paused) time.
    Wait(u8),
}

const OPS: [&str; 5] = ["echo", "slow", "stream-echo", "n", "nosuch"];

fn aimed(kind: &Kind, op: u8, id: u8, len: u16) -> Message {
    let id = RequestId::from_u32(u32::from(id % 4));
    let op = Text::from(OPS[usize::from(op) % OPS.len()]);
    let len = usize::from(len) % (MAX_PAYLOAD as usize + 1);
    let payload = Bytes::from(vec![b'x'; len]);
    match kind {
        Kind::Request => Message::SingleRequest { id, op, payload },
        Kind::StreamRequest => Message::StreamRequest { id, op, payload },
        Kind::Part => Message::StreamRequestPart { id, payload },
        Kind::EndOfParts => Message::StreamRequestPart {
            id,
            payload: Bytes::new(),
        },
        Kind::Notification => Message::Notification { name: op, payload },
        Kind::Result => Message::SingleResult { id, payload },
        Kind::Heartbeat => Message::Heartbeat { load: 1, time: 2 },
    }
}

fuzz_target!(|steps: Vec<Step>| {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(true)
        .build()
        .expect("a runtime");
    rt.block_on(run(&steps));
});

async fn run(steps: &[Step]) {
    let (ours, mut theirs) = tokio::io::duplex(16 * 1024);
    let (peer, ()) = tokio::join!(Peer::handshake(ours, handlers(), config()), async {
        theirs.write_all(b"01").await.expect("write version");
        let mut version = [0u8; 2];
        theirs.read_exact(&mut version).await.expect("read version");
    });
    let hostile = peer.expect("the handshake is valid");
    let (bystander, _server_side) = Peer::pair(Handlers::new(), handlers(), config())
        .await
        .expect("pair");
    let (mut rd, mut wr) = tokio::io::split(theirs);
    // Whatever the connection answers is read and dropped, so that it is
    // never held up by a full pipe.
    let drain = tokio::spawn(async move {
        let mut sink = vec![0u8; 16 * 1024];
        while let Ok(n) = rd.read(&mut sink).await {
            if n == 0 {
                break;
            }
        }
    });
    let mut most = 0;
    for step in steps {
        let (bytes, cut) = match step {
            Step::Raw(bytes) => (bytes.clone(), bytes.len() / 2),
            Step::Aimed {
                kind,
                op,
                id,
                len,
                cut,
            } => (
                aimed(kind, *op, *id, *len).to_vec().expect("encodes"),
                usize::from(*cut),
            ),
            Step::Any { msg, cut } => match msg.to_vec() {
                Ok(bytes) => (bytes, usize::from(*cut)),
                Err(_) => continue,
            },
            Step::Wait(ms) => {
                tokio::time::sleep(Duration::from_millis(u64::from(*ms))).await;
                continue;
            }
        };
        let (a, b) = bytes.split_at(cut.min(bytes.len()));
        let mut failed = false;
        for half in [a, b] {
            if wr.write_all(half).await.is_err() {
                failed = true;
                break;
            }
            tokio::task::yield_now().await;
            most = most.max(hostile.buffered_bytes_for_tests());
        }
        if failed {
            break;
        }
    }
    // Let what was read settle (handlers that wait, in paused time).
    tokio::time::sleep(Duration::from_millis(200)).await;
    most = most.max(hostile.buffered_bytes_for_tests());
    assert!(
        most <= BUDGET + MAX_PAYLOAD as usize,
        "budget in use {most} past {BUDGET} + one frame"
    );
    // The connection beside it is served as ever.
    let echoed = tokio::time::timeout(Duration::from_secs(5), bystander.request("echo", "hi"))
        .await
        .expect("the bystander is answered")
        .expect("the bystander's call succeeds");
    assert_eq!(echoed, "hi");
    // The hostile peer hangs up: the connection closes and lets go.
    let _ = wr.shutdown().await;
    let weak = hostile.downgrade_for_leak_check();
    tokio::time::timeout(Duration::from_secs(30), hostile.closed())
        .await
        .expect("closes once its peer hangs up");
    drop(hostile);
    let _ = drain.await;
    for _ in 0..100 {
        if weak.upgrade().is_none() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(weak.upgrade().is_none(), "the closed connection's state is freed");
    bystander.close().await;
}
