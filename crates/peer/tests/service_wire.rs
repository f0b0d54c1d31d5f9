//! A `#[service]` answers plain gotalk requests byte for byte as the same
//! handlers written by hand do: what the Go package and gotalk.js send,
//! sent from a raw socket to both servers, gets the same frames back.

mod common;

use std::sync::{Arc, Mutex};

use bytes::Bytes;
use common::{Raw, quiet, spawn_server};
use futures::StreamExt;
use gotalk_peer::{
    HandlerError, Handlers,
    proto::Message,
    service::{Incoming, Outgoing},
};
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize)]
struct GreetIn {
    name: String,
}

#[derive(Serialize, Deserialize)]
struct GreetOut {
    greeting: String,
}

#[gotalk_peer::service]
trait Wire {
    async fn greet(&self, input: GreetIn) -> GreetOut;
    async fn echo(&self, payload: Bytes) -> Bytes;
    async fn fail(&self, payload: Bytes) -> Result<Bytes, HandlerError>;
    #[op(name = "stream-upper")]
    async fn upper(&self, parts: Incoming<Bytes>) -> Outgoing<Bytes>;
    #[notification]
    async fn note(&self, text: String);
    async fn notes(&self) -> Vec<String>;
}

type Notes = Arc<Mutex<Vec<String>>>;

struct Typed(Notes);

impl Wire for Typed {
    async fn greet(&self, input: GreetIn) -> GreetOut {
        GreetOut {
            greeting: format!("Hello {}", input.name),
        }
    }
    async fn echo(&self, payload: Bytes) -> Bytes {
        payload
    }
    async fn fail(&self, payload: Bytes) -> Result<Bytes, HandlerError> {
        Err(HandlerError::with_payload(payload))
    }
    async fn upper(&self, parts: Incoming<Bytes>) -> Outgoing<Bytes> {
        Outgoing::new(parts.map(|part| part.map(|p| Bytes::from(p.to_ascii_uppercase()))))
    }
    async fn note(&self, text: String) {
        self.0.lock().unwrap().push(text);
    }
    async fn notes(&self) -> Vec<String> {
        self.0.lock().unwrap().clone()
    }
}

/// The same operations, written by hand.
fn by_hand(notes: Notes) -> Handlers {
    let read = notes.clone();
    Handlers::new()
        .json("greet", |_ctx, input: GreetIn| async move {
            Ok::<_, HandlerError>(GreetOut {
                greeting: format!("Hello {}", input.name),
            })
        })
        .buffer("echo", |_ctx, payload: Bytes| async move {
            Ok::<_, HandlerError>(payload)
        })
        .buffer("fail", |_ctx, payload: Bytes| async move {
            Err::<Bytes, _>(HandlerError::with_payload(payload))
        })
        .stream("stream-upper", |_ctx, mut parts, mut out| async move {
            while let Some(part) = parts.next().await {
                out.send(part?.to_ascii_uppercase()).await?;
            }
            Ok::<_, HandlerError>(())
        })
        .json_notification("note", move |_ctx, text: String| {
            let notes = notes.clone();
            async move { notes.lock().unwrap().push(text) }
        })
        .json("notes", move |_ctx, (): ()| {
            let notes = read.clone();
            async move { Ok::<_, HandlerError>(notes.lock().unwrap().clone()) }
        })
}

fn single(id: &str, op: &str, payload: &str) -> Vec<u8> {
    format!("r{id}{:03x}{op}{:08x}{payload}", op.len(), payload.len()).into_bytes()
}

fn stream_start(id: &str, op: &str) -> Vec<u8> {
    format!("s{id}{:03x}{op}00000000", op.len()).into_bytes()
}

fn part(id: &str, payload: &str) -> Vec<u8> {
    format!("p{id}{:08x}{payload}", payload.len()).into_bytes()
}

fn notification(name: &str, payload: &str) -> Vec<u8> {
    format!("n{:03x}{name}{:08x}{payload}", name.len(), payload.len()).into_bytes()
}

/// What a client sends, as one step: frames, and how many messages end
/// the answer (a result, or a streamed result's parts and its end).
struct Step {
    send: Vec<u8>,
    answers: usize,
}

fn steps() -> Vec<Step> {
    let one = |send: Vec<u8>| Step { send, answers: 1 };
    vec![
        one(single("0001", "greet", r#"{"name":"Rasmus"}"#)),
        one(single("0002", "greet", r#"{"nom":1}"#)),
        one(single("0003", "greet", "")),
        one(single("0004", "echo", "hello")),
        one(single("0005", "echo", "")),
        one(single("0006", "fail", "no")),
        one(single("0007", "fail", "")),
        one(single("0008", "nope", "x")),
        // A single request to a stream handler: one part back, then the end.
        Step {
            send: single("0009", "stream-upper", "abc"),
            answers: 2,
        },
        Step {
            send: [
                stream_start("!000", "stream-upper"),
                part("!000", "ab"),
                part("!000", "cd"),
                part("!000", ""),
            ]
            .concat(),
            answers: 3,
        },
        // A stream request to a buffer handler is collected.
        Step {
            send: [
                stream_start("!001", "echo"),
                part("!001", "ab"),
                part("!001", "cd"),
                part("!001", ""),
            ]
            .concat(),
            answers: 1,
        },
        // The notification is handled before the next request is read.
        Step {
            send: [
                notification("note", r#""first""#),
                notification("note", "not json"),
                single("000a", "notes", ""),
            ]
            .concat(),
            answers: 1,
        },
    ]
}

/// Every answer of `handlers` to [`steps`], as the frames' bytes.
async fn answers(handlers: Handlers) -> Vec<Vec<Vec<u8>>> {
    let server = spawn_server(handlers, quiet()).await;
    let mut raw = Raw::tcp_handshaken(server.local_addr().to_string()).await;
    let mut all = Vec::new();
    for step in steps() {
        raw.send_bytes(&step.send).await;
        let mut frames = Vec::new();
        for _ in 0..step.answers {
            let msg: Message = raw.next_non_heartbeat().await.expect("an answer");
            frames.push(msg.to_vec().expect("encodable"));
        }
        all.push(frames);
    }
    server.shutdown().await;
    all
}

#[tokio::test]
async fn a_typed_service_answers_as_handlers_written_by_hand() {
    let typed = answers(WireServer::new(Typed(Notes::default())).into_handlers()).await;
    let hand = answers(by_hand(Notes::default())).await;
    for (i, (t, h)) in typed.iter().zip(&hand).enumerate() {
        let show = |frames: &Vec<Vec<u8>>| {
            frames
                .iter()
                .map(|f| String::from_utf8_lossy(f).into_owned())
                .collect::<Vec<_>>()
        };
        assert_eq!(show(t), show(h), "step {i}");
    }
    assert_eq!(typed.len(), steps().len());
    // A few answers spelled out, so the comparison cannot pass on two
    // servers that both answer nothing useful.
    assert_eq!(
        typed[0],
        [b"R00010000001b{\"greeting\":\"Hello Rasmus\"}".to_vec()]
    );
    assert_eq!(typed[3], [b"R000400000005hello".to_vec()]);
    assert_eq!(typed[5], [b"E000600000002no".to_vec()]);
    assert_eq!(
        typed[9],
        [
            b"S!00000000002AB".to_vec(),
            b"S!00000000002CD".to_vec(),
            b"S!00000000000".to_vec()
        ]
    );
    assert_eq!(typed[11], [b"R000a00000009[\"first\"]".to_vec()]);
}
