//! Streams both ways and mixed kinds of requests and results, limits on
//! collected streams, and bounded buffering of inbound stream parts.

mod common;

use std::{
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use bytes::Bytes;
use common::{TRANSPORTS, WAIT, connect, eventually, quiet, within};
use futures::{StreamExt, future::join_all};
use gotalk_peer::{Config, Error, HandlerError, Handlers, Peer, RequestParts, ResultStream};
use tokio::sync::Semaphore;

/// Handlers for every combination of request and result kinds.
fn kinds() -> Handlers {
    Handlers::new()
        // Buffer handler: a stream request to it is collected first.
        .buffer("concat", |_ctx, p: Bytes| async move {
            Ok::<_, HandlerError>([b"<", &p[..], b">"].concat())
        })
        // Stream handler answering with `n` parts for a payload "n".
        .stream("count-to", |_ctx, mut parts, mut out| async move {
            let mut input = Vec::new();
            while let Some(part) = parts.next().await {
                input.extend_from_slice(&part?);
            }
            let n: usize = std::str::from_utf8(&input)
                .ok()
                .and_then(|s| s.parse().ok())
                .ok_or_else(|| HandlerError::new("want a number"))?;
            for i in 0..n {
                out.send(format!("part{i};")).await?;
            }
            Ok::<_, HandlerError>(())
        })
        // Stream handler answering each part with its upper-case form.
        .stream("upper", |_ctx, mut parts, mut out| async move {
            while let Some(part) = parts.next().await {
                out.send(part?.to_ascii_uppercase()).await?;
            }
            Ok::<_, HandlerError>(())
        })
        .stream("fail-after-one", |_ctx, mut parts, mut out| async move {
            let _ = parts.next().await;
            out.send("partial").await?;
            Err::<(), _>(HandlerError::new("stream handler gave up"))
        })
}

async fn collect_parts(rx: ResultStream) -> Result<Vec<Bytes>, Error> {
    rx.collect::<Vec<_>>().await.into_iter().collect()
}

/// Sends `parts` on a new stream request to `op`, ends it, and returns every
/// result part.
async fn stream_call(peer: &Peer, op: &str, parts: &[&str]) -> Result<Vec<Bytes>, Error> {
    let (mut tx, rx) = peer.stream_request(op).await?;
    for part in parts {
        tx.send(part.to_string()).await?;
    }
    tx.end().await?;
    within(WAIT, "stream result", collect_parts(rx)).await
}

/// Every combination, in both directions (the server side calls the client
/// too), over memory and TCP.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mixed_request_and_result_kinds_both_ways() {
    for transport in TRANSPORTS {
        let conn = connect(transport, kinds(), kinds(), quiet(), quiet()).await;
        for (who, peer) in [("client", &conn.client), ("server", &conn.server)] {
            let ctx = format!("{transport:?}, {who} calling");
            // stream request -> single result: one item, then the end.
            assert_eq!(
                stream_call(peer, "concat", &["ab", "cd", "ef"])
                    .await
                    .unwrap(),
                vec![Bytes::from("<abcdef>")],
                "{ctx}"
            );
            // stream request with no parts at all -> single result
            assert_eq!(
                stream_call(peer, "concat", &[]).await.unwrap(),
                vec![Bytes::from("<>")],
                "{ctx}"
            );
            // single request -> stream result, collected by `request`.
            assert_eq!(
                peer.request("count-to", "3").await.unwrap(),
                "part0;part1;part2;",
                "{ctx}"
            );
            // single request -> empty stream result
            assert_eq!(peer.request("count-to", "0").await.unwrap(), "", "{ctx}");
            // stream request -> streamed result, part by part, in order.
            let parts: Vec<String> = (0..50).map(|i| format!("p{i}-")).collect();
            let refs: Vec<&str> = parts.iter().map(String::as_str).collect();
            let got = stream_call(peer, "upper", &refs).await.unwrap();
            let want: Vec<Bytes> = parts.iter().map(|p| p.to_uppercase().into()).collect();
            assert_eq!(got, want, "{ctx}");
            // stream request -> stream result built from the collected input
            assert_eq!(
                stream_call(peer, "count-to", &["1", "2"]).await.unwrap(),
                (0..12)
                    .map(|i| Bytes::from(format!("part{i};")))
                    .collect::<Vec<_>>(),
                "{ctx}"
            );
            // A stream handler's error after a part: the part, then the error.
            let (tx, mut rx) = peer.stream_request("fail-after-one").await.unwrap();
            tx.end().await.unwrap();
            assert_eq!(rx.next().await.unwrap().unwrap(), "partial", "{ctx}");
            let err = rx.next().await.unwrap().unwrap_err();
            assert_eq!(err.remote().unwrap().message(), "stream handler gave up");
            assert!(rx.next().await.is_none(), "{ctx}");
            // The same through a buffer request: the error wins.
            let err = peer.request("fail-after-one", "").await.unwrap_err();
            assert_eq!(err.remote().unwrap().message(), "stream handler gave up");
        }
        assert_eq!(conn.client.pending_requests(), 0);
        assert_eq!(conn.server.pending_requests(), 0);
    }
}

/// Many streams at once in both directions, each with its own parts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_streams_interleaved_both_ways() {
    for transport in TRANSPORTS {
        let conn = connect(transport, kinds(), kinds(), quiet(), quiet()).await;
        let calls = (0..30).flat_map(|i| {
            [&conn.client, &conn.server].map(|peer| {
                let peer = peer.clone();
                tokio::spawn(async move {
                    let parts: Vec<String> = (0..20).map(|k| format!("s{i}p{k}")).collect();
                    let refs: Vec<&str> = parts.iter().map(String::as_str).collect();
                    let got = stream_call(&peer, "upper", &refs).await.unwrap();
                    let want: Vec<Bytes> = parts.iter().map(|p| p.to_uppercase().into()).collect();
                    assert_eq!(got, want);
                })
            })
        });
        for task in within(WAIT, "60 streams", join_all(calls)).await {
            task.unwrap();
        }
    }
}

/// A streamed result too large for a buffer request fails with
/// `ResultTooLarge`; a streamed request too large for a buffer handler
/// gets an error result. The connection stays usable.
#[tokio::test]
async fn collected_streams_respect_the_payload_limit() {
    let config = Config {
        max_payload: 1000,
        ..quiet()
    };
    for transport in TRANSPORTS {
        let conn = connect(transport, kinds(), kinds(), config.clone(), config.clone()).await;
        // 200 parts of ~8 bytes = ~1.5 KB streamed back to a buffer request.
        let err = conn.client.request("count-to", "200").await.unwrap_err();
        assert!(
            matches!(err, Error::ResultTooLarge { limit: 1000 }),
            "{transport:?}: {err}"
        );
        let (mut tx, rx) = conn.client.stream_request("concat").await.unwrap();
        for _ in 0..3 {
            tx.send(vec![b'x'; 600]).await.unwrap();
        }
        tx.end().await.unwrap();
        let err = collect_parts(rx).await.unwrap_err();
        let msg = err.remote().expect("error result").message();
        assert!(msg.contains("exceeds the 1000-byte payload limit"), "{msg}");
        assert_eq!(conn.client.request("concat", "ok").await.unwrap(), "<ok>");
        assert_eq!(conn.client.pending_requests(), 0);
    }
}

/// A stream handler that does not read yet, and a sender with a small write
/// queue. Returns the handler's byte count once it is let go.
async fn backpressure(server_config: Config, parts: usize, part_len: usize, bound: usize) {
    let gate = Arc::new(Semaphore::new(0));
    let server = {
        let gate = gate.clone();
        Handlers::new().stream("lazy", move |_ctx, mut parts: RequestParts, mut out| {
            let gate = gate.clone();
            async move {
                // Does not read a single part until the test opens the gate.
                let _open = gate.acquire().await;
                let mut total = 0usize;
                let mut count = 0usize;
                while let Some(part) = parts.next().await {
                    total += part?.len();
                    count += 1;
                }
                out.send(format!("{count} parts, {total} bytes")).await?;
                Ok::<_, HandlerError>(())
            }
        })
    };
    let client_config = Config {
        max_write_queue_bytes: 8 * 1024,
        ..quiet()
    };
    let (client, _server) = {
        let (a, b) = tokio::io::duplex(64 * 1024);
        let (c, s) = tokio::join!(
            Peer::handshake(a, Handlers::new(), client_config),
            Peer::handshake(b, server, server_config),
        );
        (c.unwrap(), s.unwrap())
    };
    let (mut tx, rx) = client.stream_request("lazy").await.unwrap();
    let sent = Arc::new(AtomicUsize::new(0));
    let sender = {
        let sent = sent.clone();
        tokio::spawn(async move {
            for i in 0..parts {
                tx.send(vec![(i % 251) as u8; part_len]).await?;
                sent.fetch_add(1, Ordering::SeqCst);
            }
            tx.end().await
        })
    };
    // The sender gets some way, then stalls: nobody reads on the other side.
    eventually(WAIT, "sender makes progress", || {
        sent.load(Ordering::SeqCst) > 0
    })
    .await;
    let mut last = usize::MAX;
    for _ in 0..200 {
        let now = sent.load(Ordering::SeqCst);
        if now == last {
            break;
        }
        last = now;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let stalled_at = sent.load(Ordering::SeqCst);
    assert_eq!(stalled_at, last, "the sender never stalls");
    assert!(
        stalled_at < bound,
        "{stalled_at} of {parts} parts accepted before back-pressure (bound {bound})"
    );
    assert!(!sender.is_finished());
    // Let the handler read: everything arrives, in full.
    gate.add_permits(1);
    within(WAIT, "sender finishes", sender)
        .await
        .unwrap()
        .unwrap();
    let got = within(WAIT, "result", collect_parts(rx)).await.unwrap();
    assert_eq!(
        got,
        vec![Bytes::from(format!(
            "{parts} parts, {} bytes",
            parts * part_len
        ))]
    );
}

/// Per-stream bound: `stream_buffer_parts` parts wait for the handler, then
/// the connection stops reading and the sender's queue fills.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inbound_stream_parts_are_bounded_per_stream() {
    // In flight at most: 4 buffered + 1 being delivered + 64 KiB in the pipe
    // + two 8 KiB write batches: about 85 parts of 1 KiB. 2000 would be sent
    // without a bound.
    let config = Config {
        stream_buffer_parts: 4,
        ..quiet()
    };
    backpressure(config, 2000, 1024, 150).await;
}

/// Connection-wide bound: even with a deep per-stream buffer, at most
/// `max_buffered_bytes` wait for consumers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inbound_stream_bytes_are_bounded_per_connection() {
    let config = Config {
        stream_buffer_parts: 100_000,
        max_buffered_bytes: 16 * 1024,
        ..quiet()
    };
    backpressure(config, 2000, 1024, 150).await;
}

/// Result parts for a stream request we made are bounded the same way: a
/// caller that does not read its `ResultStream` holds the responder back
/// without anything growing, and gets every part once it reads.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unread_result_stream_holds_the_responder_back() {
    let produced = Arc::new(AtomicUsize::new(0));
    let server = {
        let produced = produced.clone();
        Handlers::new().stream("firehose", move |_ctx, _parts, mut out| {
            let produced = produced.clone();
            async move {
                for i in 0..2000u32 {
                    out.send(vec![(i % 251) as u8; 1024]).await?;
                    produced.fetch_add(1, Ordering::SeqCst);
                }
                Ok::<_, HandlerError>(())
            }
        })
    };
    let server_config = Config {
        max_write_queue_bytes: 8 * 1024,
        ..quiet()
    };
    let client_config = Config {
        stream_buffer_parts: 4,
        ..quiet()
    };
    let (a, b) = tokio::io::duplex(64 * 1024);
    let (client, _server) = tokio::join!(
        Peer::handshake(a, Handlers::new(), client_config),
        Peer::handshake(b, server, server_config),
    );
    let client = client.unwrap();
    let (tx, mut rx) = client.stream_request("firehose").await.unwrap();
    tx.end().await.unwrap();
    eventually(WAIT, "responder starts", || {
        produced.load(Ordering::SeqCst) > 0
    })
    .await;
    let mut last = usize::MAX;
    for _ in 0..200 {
        let now = produced.load(Ordering::SeqCst);
        if now == last {
            break;
        }
        last = now;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(produced.load(Ordering::SeqCst), last, "never stalls");
    assert!(last < 150, "{last} parts produced with nobody reading");
    let mut count = 0u32;
    within(WAIT, "read every part", async {
        while let Some(part) = rx.next().await {
            let part = part.unwrap();
            assert_eq!(part, vec![(count % 251) as u8; 1024]);
            count += 1;
        }
    })
    .await;
    assert_eq!(count, 2000);
}
