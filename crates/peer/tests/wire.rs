//! Exact bytes on the wire against raw sockets: the shared test vectors end
//! to end, garbage and huge declared sizes, version mismatches, results for
//! unknown IDs and the order results come back in.

mod common;

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use bytes::Bytes;
use common::{Raw, WAIT, eventually, id, quiet, server_side, spawn_server, unhex, within};
use gotalk_peer::{
    CloseReason, Config, Error, HandlerError, Handlers, HandshakeError, Peer, ProtocolErrorCode,
    RequestId, RequestOptions, ServerHandle,
    proto::{Message, Text},
};
use serde_json::Value;
use tokio::{io::DuplexStream, net::TcpListener, sync::Semaphore};

const MESSAGES: &str = include_str!("../../proto/tests/vectors/messages.jsonl");
const INVALID: &str = include_str!("../../proto/tests/vectors/invalid.jsonl");

/// The vector called `name`: its wire bytes and its JSON description.
fn vector(file: &str, name: &str) -> (Vec<u8>, Value) {
    for line in file.lines().filter(|l| !l.trim().is_empty()) {
        let v: Value = serde_json::from_str(line).expect("vector line is JSON");
        if v["name"] == name {
            let wire = unhex(v["wire_hex"].as_str().expect("wire_hex"));
            return (wire, v);
        }
    }
    panic!("no vector {name:?}");
}

fn wire(name: &str) -> Vec<u8> {
    vector(MESSAGES, name).0
}

/// A field of a vector's message given in hex.
fn hex_field(v: &Value, field: &str) -> Vec<u8> {
    unhex(v["message"][field].as_str().expect("hex field"))
}

/// The bytes of a single result for `id` carrying `payload`.
fn single_result(id: &[u8], payload: &[u8]) -> Vec<u8> {
    [
        b"R",
        id,
        format!("{:08x}", payload.len()).as_bytes(),
        payload,
    ]
    .concat()
}

/// `bytes` with its request ID (bytes 1 to 4) replaced.
fn with_id(mut bytes: Vec<u8>, id: RequestId) -> Vec<u8> {
    bytes[1..5].copy_from_slice(id.as_bytes());
    bytes
}

type Notes = Arc<Mutex<Vec<(String, Bytes)>>>;
type Beats = Arc<Mutex<Vec<(u16, u32)>>>;

/// Echo for every operation (through the fallback) and a `hold` stream; all
/// notifications and heartbeats recorded.
fn recording_server() -> (Handlers, Config, Notes, Beats) {
    let notes: Notes = Arc::default();
    let beats: Beats = Arc::default();
    let handlers = {
        let notes = notes.clone();
        Handlers::new()
            .buffer("", |_ctx, p: Bytes| async move { Ok::<_, HandlerError>(p) })
            .stream("hold", |_ctx, mut parts, mut out| async move {
                use futures::StreamExt;
                while let Some(part) = parts.next().await {
                    out.send(part?).await?;
                }
                Ok::<_, HandlerError>(())
            })
            .notification("", move |ctx, p| {
                let notes = notes.clone();
                async move {
                    notes.lock().unwrap().push((ctx.name().to_owned(), p));
                }
            })
    };
    let config = {
        let beats = beats.clone();
        Config {
            on_heartbeat: Some(Arc::new(move |load, time| {
                beats.lock().unwrap().push((load, time));
            })),
            ..quiet()
        }
    };
    (handlers, config, notes, beats)
}

async fn recording_tcp_server() -> (ServerHandle, Notes, Beats) {
    let (handlers, config, notes, beats) = recording_server();
    (spawn_server(handlers, config).await, notes, beats)
}

/// Every request vector, sent byte for byte to a server, comes back as the
/// exact single result bytes; notifications and heartbeats arrive as given.
#[tokio::test]
async fn request_vectors_end_to_end() {
    let (server, notes, beats) = recording_tcp_server().await;
    let mut raw = Raw::tcp_handshaken(server.local_addr().to_string()).await;

    // The echo vector's answer is the single-result vector, byte for byte.
    raw.send_bytes(&wire("single-request-echo")).await;
    raw.expect_bytes(&wire("single-result")).await;

    for name in [
        "single-request-hello",
        "binary-request-id",
        "uppercase-hex-size",
        "empty-payload-request",
        "empty-op",
        "utf8-op",
    ] {
        let (bytes, v) = vector(MESSAGES, name);
        assert_eq!(v["message"]["type"], "SingleRequest", "{name}");
        raw.send_bytes(&bytes).await;
        let expected = single_result(&hex_field(&v, "id_hex"), &hex_field(&v, "payload_hex"));
        raw.expect_bytes(&expected).await;
    }
    // The binary ID comes back verbatim, NUL bytes and all.
    raw.send_bytes(&wire("binary-request-id")).await;
    raw.expect_bytes(b"R\x00\x00\x00\x0000000002hi").await;

    // A stream request in three frames, to a buffer handler: collected, and
    // answered with the same single result as the one-frame request.
    for name in [
        "stream-request-start",
        "stream-request-part",
        "stream-request-end",
    ] {
        raw.send_bytes(&wire(name)).await;
    }
    raw.expect_bytes(&wire("single-result")).await;

    // Every vector at once, in one write: the same answers in order.
    let all: Vec<u8> = [wire("single-request-echo"), wire("single-request-hello")].concat();
    raw.send_bytes(&all).await;
    raw.expect_bytes(&wire("single-result")).await;
    raw.expect_bytes(b"R000100000005world").await;

    // Notifications and a heartbeat.
    for name in ["notification", "payload-with-newlines-and-nul", "heartbeat"] {
        raw.send_bytes(&wire(name)).await;
    }
    eventually(WAIT, "notifications recorded", || {
        notes.lock().unwrap().len() == 2
    })
    .await;
    let mut got = notes.lock().unwrap().clone();
    got.sort();
    let mut want: Vec<(String, Bytes)> = ["notification", "payload-with-newlines-and-nul"]
        .iter()
        .map(|name| {
            let (_, v) = vector(MESSAGES, name);
            let note = v["message"]["name"].as_str().unwrap().to_owned();
            (note, Bytes::from(hex_field(&v, "payload_hex")))
        })
        .collect();
    want.sort();
    assert_eq!(got, want);
    assert_eq!(*beats.lock().unwrap(), vec![(2, 1_423_433_370)]);
    assert_eq!(server.connections().len(), 1);
}

/// A `Peer` under test, and a raw socket playing the other side.
async fn peer_and_raw(config: Config) -> (Peer, Raw<DuplexStream>) {
    let (ours, theirs) = tokio::io::duplex(64 * 1024);
    let mut raw = Raw::new(theirs);
    let (peer, ()) = tokio::join!(Peer::handshake(ours, Handlers::new(), config), async {
        raw.handshake().await
    });
    (peer.expect("handshake"), raw)
}

/// Reads one single request from the raw side and returns its ID and payload.
async fn read_request(raw: &mut Raw<DuplexStream>) -> (RequestId, Bytes) {
    match raw.expect_message().await {
        Message::SingleRequest { id, payload, .. } => (id, payload),
        other => panic!("expected a request, got {other:?}"),
    }
}

/// What a `Peer` sends matches the vectors byte for byte, and the result
/// vectors (with the peer's IDs) decode into the right outcomes.
#[tokio::test]
async fn result_vectors_end_to_end() {
    let (peer, mut raw) = peer_and_raw(quiet()).await;

    // First request: ID 0 as four little-endian bytes, exactly the vector.
    let call = tokio::spawn({
        let peer = peer.clone();
        async move { peer.request("echo", "hi").await }
    });
    raw.expect_bytes(&wire("binary-request-id")).await;
    raw.send_bytes(b"R\x00\x00\x00\x0000000002hi").await;
    assert_eq!(call.await.unwrap().unwrap(), "hi");

    // Second: ID 1, answered with the second vector verbatim.
    let call = tokio::spawn({
        let peer = peer.clone();
        async move { peer.request("echo", "hi").await }
    });
    raw.expect_bytes(b"r\x01\x00\x00\x00004echo00000002hi")
        .await;
    raw.send_bytes(&wire("binary-request-id-2")).await;
    assert_eq!(call.await.unwrap().unwrap(), "hi");

    let request = |op: &'static str, options: RequestOptions| {
        let peer = peer.clone();
        tokio::spawn(async move { peer.request_with(op, "", options).await })
    };
    let defaults = RequestOptions::default();

    // single-result
    let call = request("a", defaults);
    let (rid, _) = read_request(&mut raw).await;
    raw.send_bytes(&with_id(wire("single-result"), rid)).await;
    assert_eq!(call.await.unwrap().unwrap(), r#"{"message":"Hello World"}"#);

    // error-result
    let call = request("b", defaults);
    let (rid, _) = read_request(&mut raw).await;
    raw.send_bytes(&with_id(wire("error-result"), rid)).await;
    let err = call.await.unwrap().unwrap_err();
    assert_eq!(
        err.remote().expect("error result").message(),
        r#"{"error":"Unknown operation \"echo\""}"#
    );

    // stream-result-1, -2, -end, collected for a buffer request
    let call = request("c", defaults);
    let (rid, _) = read_request(&mut raw).await;
    for name in ["stream-result-1", "stream-result-2", "stream-result-end"] {
        raw.send_bytes(&with_id(wire(name), rid)).await;
    }
    assert_eq!(call.await.unwrap().unwrap(), r#"{"message":"Hello World"}"#);

    // retry-result-no-wait: retried (after the default backoff) under a new ID
    let call = request("d", defaults);
    let (first, _) = read_request(&mut raw).await;
    raw.send_bytes(&with_id(wire("retry-result-no-wait"), first))
        .await;
    let (second, _) = read_request(&mut raw).await;
    assert_ne!(first, second);
    raw.send_bytes(&with_id(wire("single-result"), second))
        .await;
    assert_eq!(call.await.unwrap().unwrap(), r#"{"message":"Hello World"}"#);

    // retry-result-wait-5000 with no retries left: the wait and message
    let once = RequestOptions {
        max_attempts: Some(1),
        ..RequestOptions::default()
    };
    let call = request("e", once);
    let (rid, _) = read_request(&mut raw).await;
    raw.send_bytes(&with_id(wire("retry-result-wait-5000"), rid))
        .await;
    match call.await.unwrap().unwrap_err() {
        Error::RetryExhausted {
            attempts: 1,
            wait,
            message,
        } => {
            assert_eq!(wait, Duration::from_millis(5000));
            assert_eq!(message, r#""request rate limit""#);
        }
        other => panic!("expected RetryExhausted, got {other:?}"),
    }
    assert_eq!(peer.pending_requests(), 0);
    assert!(!peer.is_closed());
}

/// A protocol error from the peer closes the connection with its code; we
/// do not answer it with one of our own.
#[tokio::test]
async fn protocol_error_vectors_close_the_connection() {
    for code in 0..4u32 {
        let (server, _, _) = recording_tcp_server().await;
        let mut raw = Raw::tcp_handshaken(server.local_addr().to_string()).await;
        let server_peer = server_side(&server, 1).await;
        raw.send_bytes(&wire(&format!("protocol-error-{code}")))
            .await;
        within(WAIT, "server closes", raw.expect_eof()).await;
        let reason = within(WAIT, "closed", server_peer.closed()).await;
        match reason {
            CloseReason::RemoteProtocolError { code: c } => assert_eq!(c.as_u32(), code),
            other => panic!("code {code}: {other}"),
        }
    }
}

/// The server-side handle of the connection whose client is `raw`.
fn side_of(server: &ServerHandle, raw: &Raw<tokio::net::TcpStream>) -> Peer {
    let ours = raw.get_ref().local_addr().unwrap().to_string();
    server
        .connections()
        .into_iter()
        .find(|p| p.remote_addr() == Some(ours.as_str()))
        .expect("server knows the raw connection")
}

/// Garbage, malformed frames and sizes over the limit each get `f00000002`
/// and a close, at once (no payload is waited for, or allocated); the
/// server keeps serving its other connections.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_gets_protocol_error_2_and_others_keep_being_served() {
    let (handlers, config, _, _) = recording_server();
    let config = Config {
        max_payload: 1024,
        ..config
    };
    let server = spawn_server(handlers, config).await;
    let bystander = Peer::connect(server.local_addr().to_string(), Handlers::new(), quiet())
        .await
        .unwrap();
    let mut cases: Vec<(String, Vec<u8>)> = INVALID
        .lines()
        .filter(|l| !l.trim().is_empty())
        .filter_map(|l| {
            let v: Value = serde_json::from_str(l).unwrap();
            let expect = v["expect"].as_str().unwrap();
            (expect != "incomplete").then(|| {
                let name = v["name"].as_str().unwrap().to_owned();
                (name, unhex(v["wire_hex"].as_str().unwrap()))
            })
        })
        .collect();
    assert!(cases.len() >= 10, "{} invalid vectors", cases.len());
    let more: [(&str, &[u8]); 5] = [
        ("over our 1024-byte limit", b"r0001004echo00000401"),
        ("huge request", b"r0001004echoffffffff"),
        ("part for an unknown stream", b"p000100000002hi"),
        (
            "duplicate stream ID in flight",
            b"s0001004hold00000000s0001004hold00000000",
        ),
        ("unknown type after a good frame", b"n003log00000001x\x01"),
    ];
    cases.extend(more.iter().map(|(n, b)| (n.to_string(), b.to_vec())));
    for (name, bytes) in &cases {
        let mut raw = Raw::tcp_handshaken(server.local_addr().to_string()).await;
        let server_peer = {
            let raw = &raw;
            eventually(WAIT, "registered", || {
                let ours = raw.get_ref().local_addr().unwrap().to_string();
                server
                    .connections()
                    .iter()
                    .any(|p| p.remote_addr() == Some(ours.as_str()))
            })
            .await;
            side_of(&server, raw)
        };
        raw.send_bytes(bytes).await;
        within(
            WAIT,
            name,
            raw.expect_protocol_error_then_eof(ProtocolErrorCode::InvalidMessage.as_u32()),
        )
        .await;
        let reason = within(WAIT, "server side closed", server_peer.closed()).await;
        assert!(
            matches!(
                reason,
                CloseReason::ProtocolViolation {
                    code: ProtocolErrorCode::InvalidMessage,
                    ..
                }
            ),
            "{name}: {reason}"
        );
        // Everyone else is still served.
        assert_eq!(
            bystander.request("echo", name.clone()).await.unwrap(),
            name.as_str(),
            "after {name}"
        );
    }
    assert!(!bystander.is_closed());
}

/// A frame may arrive in any number of pieces.
#[tokio::test]
async fn frames_split_anywhere_are_reassembled() {
    let (server, _, _) = recording_tcp_server().await;
    let mut raw = Raw::tcp_handshaken(server.local_addr().to_string()).await;
    let frame = wire("single-request-echo");
    for piece in frame.chunks(3) {
        raw.send_bytes(piece).await;
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    raw.expect_bytes(&wire("single-result")).await;
    // The incomplete vectors are waited on, not refused, and complete
    // once the rest arrives.
    let (bytes, _) = vector(INVALID, "truncated-header");
    raw.send_bytes(&bytes).await;
    raw.send_bytes(b"ho00000002hi").await;
    raw.expect_bytes(b"R000100000002hi").await;
    // A whole result for an ID the server never used: dropped.
    let (bytes, _) = vector(INVALID, "truncated-payload");
    raw.send_bytes(&bytes).await;
    raw.send_bytes(b"lo").await;
    raw.send_bytes(b"r0002004echo00000003end").await;
    raw.expect_bytes(b"R000200000003end").await;
}

#[tokio::test]
async fn version_mismatch_from_a_raw_client() {
    let (server, _, _) = recording_tcp_server().await;
    let mut raw = Raw::tcp(server.local_addr().to_string()).await;
    raw.send_bytes(b"02").await;
    // The server writes its version at once, then refuses ours.
    raw.expect_bytes(b"01").await;
    within(
        WAIT,
        "f00000001 then EOF",
        raw.expect_protocol_error_then_eof(1),
    )
    .await;

    let mut raw = Raw::tcp(server.local_addr().to_string()).await;
    raw.send_bytes(b"zz").await;
    raw.expect_bytes(b"01").await;
    raw.expect_protocol_error_then_eof(2).await;

    // Nobody got in, and the server still serves.
    assert!(server.connections().is_empty());
    let client = Peer::connect(server.local_addr().to_string(), Handlers::new(), quiet())
        .await
        .unwrap();
    assert_eq!(client.request("echo", "ok").await.unwrap(), "ok");
}

#[tokio::test]
async fn version_mismatch_seen_by_a_peer() {
    // Over any stream.
    let (ours, theirs) = tokio::io::duplex(1024);
    let mut raw = Raw::new(theirs);
    raw.send_bytes(b"02").await;
    let err = within(
        WAIT,
        "handshake",
        Peer::handshake(ours, Handlers::new(), quiet()),
    )
    .await
    .unwrap_err();
    assert!(
        matches!(
            err,
            Error::Handshake(HandshakeError::UnsupportedVersion { version: 2 })
        ),
        "{err:?}"
    );
    assert!(err.to_string().contains("version 02"), "{err}");
    raw.expect_bytes(b"01").await;
    raw.expect_protocol_error_then_eof(1).await;

    // Over TCP, against a server that speaks version 2.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let fake = tokio::spawn(async move {
        let (socket, _) = listener.accept().await.unwrap();
        let mut raw = Raw::new(socket);
        raw.send_bytes(b"02").await;
        raw.expect_bytes(b"01").await;
        raw.expect_protocol_error_then_eof(1).await;
    });
    let err = within(
        WAIT,
        "connect",
        Peer::connect(addr, Handlers::new(), quiet()),
    )
    .await
    .unwrap_err();
    assert!(
        matches!(
            err,
            gotalk_peer::ConnectError::Handshake(HandshakeError::UnsupportedVersion { version: 2 })
        ),
        "{err:?}"
    );
    within(WAIT, "fake server saw the refusal", fake)
        .await
        .unwrap();
}

/// Results for IDs nobody waits for are dropped, the Go responder's extra
/// empty `S` after an `E` included; the connection stays up.
#[tokio::test]
async fn results_for_unknown_ids_are_dropped() {
    let (peer, mut raw) = peer_and_raw(quiet()).await;
    raw.send_bytes(b"R999900000002hiS999900000001xS999900000000E999900000003bad")
        .await;
    raw.send_bytes(b"e99990000000a00000004wait").await;

    let call = tokio::spawn({
        let peer = peer.clone();
        async move { peer.request("fails", "").await }
    });
    let (rid, _) = read_request(&mut raw).await;
    raw.send(&Message::ErrorResult {
        id: rid,
        payload: Bytes::from_static(b"nope"),
    })
    .await;
    raw.send(&Message::StreamResult {
        id: rid,
        payload: Bytes::new(),
    })
    .await;
    let err = call.await.unwrap().unwrap_err();
    assert_eq!(err.remote().unwrap().message(), "nope");

    // A result that arrives after its caller gave up is dropped too.
    let options = RequestOptions {
        timeout: Some(Duration::from_millis(20)),
        ..RequestOptions::default()
    };
    let err = peer.request_with("slow", "", options).await.unwrap_err();
    assert!(matches!(err, Error::Timeout), "{err:?}");
    let (late, _) = read_request(&mut raw).await;
    raw.send(&Message::SingleResult {
        id: late,
        payload: Bytes::from_static(b"too late"),
    })
    .await;

    // Still connected and working.
    let call = tokio::spawn({
        let peer = peer.clone();
        async move { peer.request("ok", "").await }
    });
    let (rid, _) = read_request(&mut raw).await;
    raw.send(&Message::SingleResult {
        id: rid,
        payload: Bytes::from_static(b"fine"),
    })
    .await;
    assert_eq!(call.await.unwrap().unwrap(), "fine");
    assert!(!peer.is_closed());
    assert_eq!(peer.pending_requests(), 0);
}

/// Results complete their calls in the order they arrive, whatever the
/// order of the requests.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn callers_complete_in_answer_order() {
    let (peer, mut raw) = peer_and_raw(quiet()).await;
    let calls: Vec<_> = (0..3)
        .map(|i| {
            let peer = peer.clone();
            let call = tokio::spawn(async move { peer.request("op", format!("{i}")).await });
            (i, call)
        })
        .collect();
    let mut ids = std::collections::HashMap::new();
    for _ in 0..3 {
        let (rid, payload) = read_request(&mut raw).await;
        ids.insert(payload, rid);
    }
    // Answer 2, then 0, then 1; each call completes while the others wait.
    let mut calls: std::collections::HashMap<_, _> = calls.into_iter().collect();
    for i in [2, 0, 1] {
        let rid = ids[&Bytes::from(format!("{i}"))];
        raw.send(&Message::SingleResult {
            id: rid,
            payload: Bytes::from(format!("answer {i}")),
        })
        .await;
        let call = calls.remove(&i).unwrap();
        let got = within(WAIT, "answered call", call).await.unwrap().unwrap();
        assert_eq!(got, format!("answer {i}"));
        assert!(calls.values().all(|c| !c.is_finished()));
    }
}

/// A server answers in completion order: a quick request overtakes a slow
/// one sent before it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_answers_in_completion_order() {
    let gate = Arc::new(Semaphore::new(0));
    let handlers = {
        let gate = gate.clone();
        Handlers::new()
            .buffer("slow", move |_ctx, p: Bytes| {
                let gate = gate.clone();
                async move {
                    gate.acquire().await.unwrap().forget();
                    Ok::<_, HandlerError>(p)
                }
            })
            .buffer(
                "fast",
                |_ctx, p: Bytes| async move { Ok::<_, HandlerError>(p) },
            )
    };
    let server = spawn_server(handlers, quiet()).await;
    let mut raw = Raw::tcp_handshaken(server.local_addr().to_string()).await;
    raw.send(&Message::SingleRequest {
        id: id(b"0001"),
        op: Text::from_static("slow"),
        payload: Bytes::from_static(b"first"),
    })
    .await;
    raw.send(&Message::SingleRequest {
        id: id(b"0002"),
        op: Text::from_static("fast"),
        payload: Bytes::from_static(b"second"),
    })
    .await;
    raw.expect_bytes(b"R000200000006second").await;
    gate.add_permits(1);
    raw.expect_bytes(b"R000100000005first").await;
}
