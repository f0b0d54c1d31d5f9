//! Many requests in flight both ways at once over one connection, calls made
//! from inside handlers, and random payload mixes round-tripping.

mod common;

use std::{
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use bytes::Bytes;
use common::{TRANSPORTS, Transport, WAIT, connect, quiet, within};
use futures::{StreamExt, future::join_all};
use gotalk_peer::{Config, Error, HandlerError, Handlers, Peer};
use proptest::prelude::*;

const N: usize = 10_000;

/// Answers `tag` with `prefix` + payload, counting calls.
fn tagging(prefix: &'static str, calls: Arc<AtomicUsize>) -> Handlers {
    Handlers::new().buffer("tag", move |_ctx, p: Bytes| {
        calls.fetch_add(1, Ordering::Relaxed);
        async move { Ok::<_, HandlerError>([prefix.as_bytes(), &p[..]].concat()) }
    })
}

/// A payload unique to (`dir`, `i`), 0 to 64 bytes longer than its label.
fn unique_payload(dir: &str, i: usize) -> Bytes {
    let mut p = format!("{dir}-{i}-").into_bytes();
    p.extend(std::iter::repeat_n(b'a' + (i % 26) as u8, i % 65));
    Bytes::from(p)
}

async fn both_ways_at_once(transport: Transport) {
    let config = Config {
        // 10 000 arrive at once: admit them all rather than test retries here.
        max_inbound_requests: 2 * N,
        ..quiet()
    };
    let client_calls = Arc::new(AtomicUsize::new(0));
    let server_calls = Arc::new(AtomicUsize::new(0));
    let conn = connect(
        transport,
        tagging("client:", client_calls.clone()),
        tagging("server:", server_calls.clone()),
        config.clone(),
        config,
    )
    .await;

    let call = |peer: &Peer, dir: &'static str, answer: &'static str, i: usize| {
        let peer = peer.clone();
        tokio::spawn(async move {
            let payload = unique_payload(dir, i);
            let result = peer.request("tag", payload.clone()).await;
            (payload, answer, result)
        })
    };
    let mut tasks = Vec::with_capacity(2 * N);
    for i in 0..N {
        tasks.push(call(&conn.client, "c2s", "server:", i));
        tasks.push(call(&conn.server, "s2c", "client:", i));
    }
    let results = within(Duration::from_secs(30), "20 000 requests", join_all(tasks)).await;
    assert_eq!(results.len(), 2 * N);
    for joined in results {
        let (payload, answer, result) = joined.expect("request task");
        let result = result.unwrap_or_else(|e| panic!("request {payload:?} failed: {e}"));
        assert_eq!(result, [answer.as_bytes(), &payload[..]].concat());
    }
    assert_eq!(server_calls.load(Ordering::Relaxed), N);
    assert_eq!(client_calls.load(Ordering::Relaxed), N);
    assert_eq!(conn.client.pending_requests(), 0);
    assert_eq!(conn.server.pending_requests(), 0);
    assert!(!conn.client.is_closed() && !conn.server.is_closed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_requests_each_way_in_memory() {
    both_ways_at_once(Transport::Memory).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_requests_each_way_over_tcp() {
    both_ways_at_once(Transport::Tcp).await;
}

fn wrap(label: &str, inner: &[u8]) -> Vec<u8> {
    [label.as_bytes(), b"(", inner, b")"].concat()
}

/// `outer` calls the client's `middle`, which calls the server's `leaf`:
/// two calls made from inside handlers, in opposite directions.
fn nested_server() -> Handlers {
    Handlers::new()
        .buffer("outer", |ctx, p: Bytes| async move {
            let mid = ctx.peer().request("middle", p).await?;
            Ok::<_, HandlerError>(wrap("outer", &mid))
        })
        .buffer("outer-to-failing", |ctx, p: Bytes| async move {
            let mid = ctx.peer().request("middle-fails", p).await?;
            Ok::<_, HandlerError>(mid)
        })
        .buffer("leaf", |_ctx, p: Bytes| async move {
            Ok::<_, HandlerError>(wrap("leaf", &p))
        })
}

fn nested_client() -> Handlers {
    Handlers::new()
        .buffer("middle", |ctx, p: Bytes| async move {
            let leaf = ctx.peer().request("leaf", p).await?;
            Ok::<_, HandlerError>(wrap("middle", &leaf))
        })
        .buffer("middle-fails", |_ctx, _p: Bytes| async move {
            Err::<Bytes, _>(HandlerError::new("middle says no"))
        })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_made_from_inside_handlers() {
    for transport in TRANSPORTS {
        let conn = connect(
            transport,
            nested_client(),
            nested_server(),
            quiet(),
            quiet(),
        )
        .await;
        assert_eq!(
            conn.client.request("outer", "x").await.unwrap(),
            "outer(middle(leaf(x)))"
        );
        // Many at once: handlers waiting on the other side never hold up
        // the connection.
        let calls = (0..200).map(|i| {
            let client = conn.client.clone();
            async move {
                let p = format!("p{i}");
                let got = client.request("outer", p.clone()).await.unwrap();
                assert_eq!(got, format!("outer(middle(leaf({p})))"), "{transport:?}");
            }
        });
        within(WAIT, "200 nested calls", join_all(calls)).await;
        // The inner call's error result becomes the outer handler's.
        let err = conn
            .client
            .request("outer-to-failing", "")
            .await
            .unwrap_err();
        assert_eq!(
            err.remote().expect("error result").message(),
            "middle says no",
            "{transport:?}"
        );
        assert_eq!(conn.client.pending_requests(), 0);
        assert_eq!(conn.server.pending_requests(), 0);
    }
}

/// Stream request made by a handler to the side that called it.
#[tokio::test]
async fn handler_opens_a_stream_request_back_to_the_caller() {
    let server = Handlers::new().buffer("sum-via-client", |ctx, p: Bytes| async move {
        let (mut tx, rx) = ctx.peer().stream_request("count-bytes").await?;
        for chunk in p.chunks(3) {
            tx.send(Bytes::copy_from_slice(chunk)).await?;
        }
        tx.end().await?;
        Ok::<_, HandlerError>(rx.collect_bytes(1024).await?)
    });
    let client = Handlers::new().stream("count-bytes", |_ctx, mut parts, mut out| async move {
        let mut n = 0;
        while let Some(part) = parts.next().await {
            n += part?.len();
        }
        out.send(n.to_string()).await?;
        Ok::<_, HandlerError>(())
    });
    for transport in TRANSPORTS {
        let conn = connect(transport, client.clone(), server.clone(), quiet(), quiet()).await;
        let got = conn
            .client
            .request("sum-via-client", "abcdefghijklmnopq")
            .await
            .unwrap();
        assert_eq!(got, "17", "{transport:?}");
    }
}

/// Where handlers run: with `inline_handlers` (the default) a handler that
/// does not wait runs on the connection's own task, one that waits moves to
/// a task of its own at its first `.await`; without it every handler gets a
/// task of its own from the start.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handlers_run_inline_until_they_wait_unless_configured_otherwise() {
    fn task_ids() -> Handlers {
        let here = || {
            tokio::task::try_id()
                .map(|id| id.to_string())
                .unwrap_or_default()
        };
        Handlers::new()
            .buffer("quick", move |_ctx, _p: Bytes| async move {
                Ok::<_, HandlerError>(here())
            })
            .buffer("waits", move |_ctx, _p: Bytes| async move {
                let before = here();
                tokio::task::yield_now().await;
                Ok::<_, HandlerError>(format!("{before} {}", here()))
            })
    }
    for inline in [true, false] {
        let server_config = Config {
            inline_handlers: inline,
            ..quiet()
        };
        let conn = connect(
            Transport::Tcp,
            Handlers::new(),
            task_ids(),
            quiet(),
            server_config,
        )
        .await;
        let mut quick = Vec::new();
        for _ in 0..3 {
            quick.push(conn.client.request("quick", "").await.unwrap());
        }
        let distinct = |ids: &[Bytes]| ids.iter().collect::<std::collections::HashSet<_>>().len();
        if inline {
            // All three ran on the one task that reads the connection.
            assert_eq!(distinct(&quick), 1, "{quick:?}");
        } else {
            assert_eq!(distinct(&quick), 3, "{quick:?}");
        }
        let waits = conn.client.request("waits", "").await.unwrap();
        let waits = String::from_utf8(waits.to_vec()).unwrap();
        let (first_poll, after_wait) = waits.split_once(' ').unwrap();
        if inline {
            assert_eq!(
                first_poll.as_bytes(),
                &quick[0][..],
                "first poll on the connection's task"
            );
            assert_ne!(first_poll, after_wait, "spawned at its first .await");
        } else {
            assert_eq!(first_poll, after_wait, "one task from start to end");
            assert!(!quick.iter().any(|q| q == first_poll.as_bytes()));
        }
    }
}

fn echo_handlers() -> Handlers {
    Handlers::new()
        .buffer(
            "echo",
            |_ctx, p: Bytes| async move { Ok::<_, HandlerError>(p) },
        )
        .stream("stream-echo", |_ctx, mut parts, mut out| async move {
            while let Some(part) = parts.next().await {
                out.send(part?).await?;
            }
            Ok::<_, HandlerError>(())
        })
}

/// Deterministic bytes for a payload of `len` bytes.
fn pattern(len: usize, seed: u8) -> Bytes {
    (0..len)
        .map(|k| (k as u8).wrapping_mul(31).wrapping_add(seed))
        .collect::<Vec<u8>>()
        .into()
}

/// One call of a random mix: a buffer request, or a stream request with
/// several parts. Sizes straddle the writer's zero-copy threshold (16 KiB).
#[derive(Clone, Debug)]
struct Op {
    stream: bool,
    sizes: Vec<usize>,
    seed: u8,
}

fn op_strategy() -> impl Strategy<Value = Op> {
    let size = prop_oneof![0usize..64, 64usize..4096, 15_000usize..70_000];
    (
        any::<bool>(),
        proptest::collection::vec(size, 1..5),
        any::<u8>(),
    )
        .prop_map(|(stream, sizes, seed)| Op {
            stream,
            sizes,
            seed,
        })
}

async fn run_op(peer: Peer, op: Op) -> Result<(), Error> {
    if !op.stream {
        let payload = pattern(op.sizes[0], op.seed);
        let got = peer.request("echo", payload.clone()).await?;
        assert_eq!(got, payload);
        return Ok(());
    }
    let parts: Vec<Bytes> = op
        .sizes
        .iter()
        .enumerate()
        .map(|(i, &n)| pattern(n, op.seed.wrapping_add(i as u8)))
        .collect();
    let (mut tx, rx) = peer.stream_request("stream-echo").await?;
    let sender = async {
        for part in &parts {
            tx.send(part.clone()).await?;
        }
        tx.end().await
    };
    let receiver = rx.collect::<Vec<_>>();
    let (sent, received) = tokio::join!(sender, receiver);
    sent?;
    let received = received.into_iter().collect::<Result<Vec<_>, _>>()?;
    // Empty parts are never sent (an empty part ends a stream).
    let expected: Vec<Bytes> = parts.into_iter().filter(|p| !p.is_empty()).collect();
    assert_eq!(received, expected);
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 12,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    /// Random mixes of payload sizes and request kinds, all in flight at
    /// once in both directions, round-trip intact.
    #[test]
    fn random_payload_mixes_round_trip(
        ops in proptest::collection::vec(op_strategy(), 1..16),
        back in proptest::collection::vec(op_strategy(), 0..8),
    ) {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let (a, b) = Peer::pair(echo_handlers(), echo_handlers(), quiet()).await.unwrap();
            let calls = ops
                .into_iter()
                .map(|op| tokio::spawn(run_op(a.clone(), op)))
                .chain(back.into_iter().map(|op| tokio::spawn(run_op(b.clone(), op))));
            let results = within(WAIT, "random mix", join_all(calls)).await;
            for r in results {
                r.expect("call task").expect("call");
            }
            assert_eq!(a.pending_requests(), 0);
            assert_eq!(b.pending_requests(), 0);
        });
    }
}

/// The same over a Unix domain socket, with per-connection user data set
/// when the server accepts.
#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unix_socket_and_per_connection_user_data() {
    struct Serial(usize);
    let path = std::env::temp_dir().join(format!(
        "gotalk-peer-test-{}-{}.sock",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    ));
    let accepted = Arc::new(AtomicUsize::new(0));
    let handlers = nested_server().buffer("whoami", |ctx, _p: Bytes| async move {
        let serial = ctx.user_data::<Serial>().ok_or("no user data")?;
        Ok::<_, HandlerError>(format!("connection {}", serial.0))
    });
    let server = gotalk_peer::Server::bind_unix(&path, handlers, quiet())
        .unwrap()
        .on_open({
            let accepted = accepted.clone();
            move |peer, _info| peer.set_user_data(Serial(accepted.fetch_add(1, Ordering::SeqCst)))
        })
        .spawn();
    assert!(server.local_addr().to_string().starts_with("unix:"));
    let mut clients = Vec::new();
    for _ in 0..2 {
        let client = Peer::connect_unix(&path, nested_client(), quiet())
            .await
            .unwrap();
        assert_eq!(
            client.request("outer", "u").await.unwrap(),
            "outer(middle(leaf(u)))"
        );
        clients.push(client);
    }
    let mut seen: Vec<Bytes> = Vec::new();
    for client in &clients {
        seen.push(client.request("whoami", "").await.unwrap());
    }
    seen.sort();
    assert_eq!(seen, vec!["connection 0", "connection 1"]);
    within(WAIT, "shutdown", server.shutdown()).await;
    let _ = std::fs::remove_file(&path);
}

/// JSON notifications arrive decoded; one that does not parse is dropped
/// without affecting the connection.
#[tokio::test]
async fn json_notifications() {
    #[derive(serde::Serialize, serde::Deserialize, PartialEq, Debug)]
    struct Note {
        text: String,
    }
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let server = echo_handlers().json_notification("note", move |_ctx, note: Note| {
        let tx = tx.clone();
        async move {
            let _ = tx.send(note);
        }
    });
    let (client, _server) = Peer::pair(Handlers::new(), server, quiet()).await.unwrap();
    client.notify("note", "{not json").await.unwrap();
    client
        .notify_json("note", &Note { text: "hi".into() })
        .await
        .unwrap();
    let got = within(WAIT, "notification", rx.recv()).await.unwrap();
    assert_eq!(got, Note { text: "hi".into() });
    assert_eq!(client.request("echo", "up").await.unwrap(), "up");
    assert!(rx.try_recv().is_err(), "the bad one was dropped");
}
