//! `gotalk demo`: every kind of exchange, over real loopback TCP, with the
//! exact wire frames of each step.

use std::{
    future::Future,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use bytes::Bytes;
use clap::Args;
use futures::StreamExt;
use gotalk_peer::{Config, Error, HandlerError, Peer};
use gotalk_proto::Message;
use tokio::sync::mpsc;

use crate::{
    addr::{Address, Connector},
    exit, ops,
    server::{self, ServeOptions},
    text::escaped,
    trace::{Dir, EventKind, TraceEvent, Tracer, event_name, event_text},
};

pub(crate) const AFTER_HELP: &str = "\
Starts a responder (the `gotalk serve` operations plus `flaky`, which asks for a retry once)
and a requester in this process, connects them over TCP on 127.0.0.1 (an ephemeral port),
and walks through: a single request, a JSON request, a streaming request and result, a
notification, a call from the responder back to the requester, pipelined requests, an
error result and a retry result. Each step prints the frames exactly as they crossed the
wire. Takes about a second.
Exit codes: 0 every step got the expected answer; 1 some step did not; 2 the demo could not
set up its connection.";

/// How long one step may take before it counts as failed.
const STEP_TIMEOUT: Duration = Duration::from_secs(5);
/// The wait `flaky` asks for.
const RETRY_WAIT: Duration = Duration::from_millis(300);
/// Width of the wire column.
const WIRE_COLUMN: usize = 50;

/// Arguments of `gotalk demo` (none yet).
#[derive(Args)]
pub(crate) struct DemoArgs {
    #[command(flatten)]
    pub(crate) runtime: crate::RuntimeArgs,
}

/// One frame, as the requester's transport saw it.
struct Recorded {
    dir: Dir,
    wire: String,
    kind: &'static str,
    payload: Vec<u8>,
    wait_ms: Option<u32>,
}

type Log = Arc<Mutex<Vec<Recorded>>>;

fn recorder(log: Log) -> Tracer {
    Tracer::new(move |ev: &TraceEvent<'_>| {
        let (payload, wait_ms) = match &ev.kind {
            EventKind::Frame { msg, .. } => (
                msg.payload().map(|p| p.to_vec()).unwrap_or_default(),
                match msg {
                    Message::RetryResult { wait_ms, .. } => Some(*wait_ms),
                    _ => None,
                },
            ),
            _ => (Vec::new(), None),
        };
        let rec = Recorded {
            dir: ev.dir,
            wire: event_text(&ev.kind, 120),
            kind: event_name(&ev.kind),
            payload,
            wait_ms,
        };
        log.lock().unwrap_or_else(|p| p.into_inner()).push(rec);
    })
}

fn take(log: &Log) -> Vec<Recorded> {
    std::mem::take(&mut *log.lock().unwrap_or_else(|p| p.into_inner()))
}

fn print_frames(frames: &[Recorded]) {
    for f in frames {
        let arrow = match f.dir {
            Dir::Send => "->",
            Dir::Recv => "<-",
        };
        println!("  {arrow} {:<WIRE_COLUMN$}  {}", f.wire, f.kind);
    }
}

/// Splits `text` into lines of at most `width` characters, at spaces.
fn wrap(text: &str, width: usize) -> Vec<String> {
    let mut lines = Vec::new();
    let mut line = String::new();
    for word in text.split_whitespace() {
        if !line.is_empty() && line.chars().count() + 1 + word.chars().count() > width {
            lines.push(std::mem::take(&mut line));
        }
        if !line.is_empty() {
            line.push(' ');
        }
        line.push_str(word);
    }
    if !line.is_empty() {
        lines.push(line);
    }
    lines
}

fn quoted(bytes: &[u8]) -> String {
    format!("\"{}\"", escaped(bytes, true))
}

/// The demo's steps: numbers them and counts those that got the expected
/// answer.
struct Steps<'a> {
    log: &'a Log,
    total: usize,
    done: usize,
    passed: usize,
}

impl Steps<'_> {
    /// Runs one step: prints its title and note, the frames it caused, and
    /// whether the answer was the expected one.
    async fn run<F>(&mut self, title: &str, note: &str, run: F)
    where
        F: Future<Output = Result<String, String>>,
    {
        self.done += 1;
        println!();
        println!("[{}/{}] {title}", self.done, self.total);
        for line in wrap(note, 84) {
            println!("      {line}");
        }
        let outcome = match tokio::time::timeout(STEP_TIMEOUT, run).await {
            Ok(r) => r,
            Err(_) => Err(format!("no answer within {STEP_TIMEOUT:?}")),
        };
        let frames = take(self.log);
        print_frames(&frames);
        match outcome {
            Ok(got) => {
                println!("  ok: {got}");
                self.passed += 1;
            }
            Err(why) => println!("  FAILED: {why}"),
        }
    }
}

fn unexpected(e: &Error) -> String {
    format!("unexpected failure: {e}")
}

/// Requests `op` with `payload`: `Ok` when the result is `want`.
async fn expect_result(
    peer: &Peer,
    op: &str,
    payload: &'static str,
    want: &str,
) -> Result<String, String> {
    match peer.request(op, payload).await {
        Ok(r) if r == want => Ok(format!("result {}", quoted(&r))),
        Ok(r) => Err(format!(
            "expected {}, got {}",
            quoted(want.as_bytes()),
            quoted(&r)
        )),
        Err(e) => Err(unexpected(&e)),
    }
}

/// `gotalk demo`.
pub(crate) async fn run(_args: DemoArgs) -> u8 {
    let started = Instant::now();
    let config = Config {
        // Timers would add frames at random moments.
        heartbeat_interval: None,
        ..Config::default()
    };
    let warmed = Arc::new(AtomicBool::new(false));
    let options = ServeOptions {
        config: config.clone(),
        tracer: None,
        log_connections: false,
        tls: None,
        ws: None,
        http: None,
        hub: None,
        metrics: false,
        extra: Some(Arc::new(move |h| {
            let warmed = warmed.clone();
            h.buffer("flaky", move |_ctx, payload: Bytes| {
                let first = !warmed.swap(true, Ordering::SeqCst);
                async move {
                    if first {
                        Err(HandlerError::retry(RETRY_WAIT, "warming up"))
                    } else {
                        Ok(payload)
                    }
                }
            })
        })),
    };
    let responder = match server::start(&Address::Tcp("127.0.0.1:0".into()), options).await {
        Ok(s) => s,
        Err(e) => {
            eprintln!("gotalk: {e}");
            return exit::TROUBLE;
        }
    };
    let addr = Address::Tcp(responder.local_addr().to_owned());

    let log: Log = Arc::default();
    let (pong_tx, mut pongs) = mpsc::channel::<Bytes>(8);
    let handlers = ops::client_handlers().notification("pong", move |_ctx, payload| {
        let tx = pong_tx.clone();
        async move {
            let _ = tx.send(payload).await;
        }
    });
    println!("gotalk demo: a responder and a requester in this process, over loopback TCP");
    println!();
    println!("  responder  listening on {addr}; operations echo, greet, stream-echo, slow,");
    println!("             call-back, fail, flaky; answers the notification ping with pong");
    println!("  requester  connects to it, and answers `reverse` requests from it");
    // A plain TCP address: no TLS settings to fail on.
    let connected = match Connector::new(&addr, None) {
        Ok(connector) => connector
            .connect(handlers, config, Some(recorder(log.clone())))
            .await
            .map_err(|e| e.to_string()),
        Err(e) => Err(e.to_string()),
    };
    let peer = match connected {
        Ok(p) => p,
        Err(e) => {
            eprintln!("gotalk: cannot connect to {addr}: {e}");
            responder.shutdown().await;
            return exit::TROUBLE;
        }
    };
    println!();
    println!("Frames are shown exactly as they crossed the wire, as the requester saw them:");
    println!("  -> requester to responder, <- responder to requester. Printable ASCII is shown");
    println!("  as is, other bytes as \\xNN. Request IDs are 4 opaque bytes; like the Go");
    println!("  implementation, ours counts them up from \\x00\\x00\\x00\\x00, per side.");
    println!();
    println!("handshake: each side first sends the protocol version, two hex digits");
    print_frames(&take(&log));

    let mut steps = Steps {
        log: &log,
        total: 8,
        done: 0,
        passed: 0,
    };

    steps
        .run(
            "single request: echo \"hello\"",
            "r carries an ID, the operation and the payload; R answers with the same ID.",
            expect_result(&peer, "echo", "hello", "hello"),
        )
        .await;

    steps
        .run(
            "JSON request: greet {\"name\":\"Rasmus\"}",
            "Payloads are bytes; JSON is just a convention both sides agree on.",
            async {
                let input = serde_json::json!({ "name": "Rasmus" });
                match peer
                    .request_json::<_, serde_json::Value>("greet", &input)
                    .await
                {
                    Ok(v) if v == serde_json::json!({ "greeting": "Hello Rasmus" }) => {
                        Ok(format!("result {v}"))
                    }
                    Ok(v) => Err(format!(
                        "expected {{\"greeting\":\"Hello Rasmus\"}}, got {v}"
                    )),
                    Err(e) => Err(unexpected(&e)),
                }
            },
        )
        .await;

    steps
        .run(
            "streaming request and result: stream-echo \"one\" \"two\" \"three\"",
            "s opens a stream and p sends parts, an empty p ends it; the result comes back \
             as S parts, an empty S ends them.",
            async {
                let (mut tx, mut rx) = peer
                    .stream_request("stream-echo")
                    .await
                    .map_err(|e| unexpected(&e))?;
                let send = async {
                    for part in ["one", "two", "three"] {
                        tx.send(part).await?;
                    }
                    tx.end().await
                };
                let recv = async {
                    let mut parts = Vec::new();
                    while let Some(part) = rx.next().await {
                        parts.push(part?);
                    }
                    Ok::<_, Error>(parts)
                };
                let (sent, got) = tokio::join!(send, recv);
                sent.map_err(|e| unexpected(&e))?;
                let got = got.map_err(|e| unexpected(&e))?;
                let shown: Vec<String> = got.iter().map(|p| quoted(p)).collect();
                if got == ["one", "two", "three"] {
                    Ok(format!("result parts {}", shown.join(" ")))
                } else {
                    Err(format!(
                        "expected parts \"one\" \"two\" \"three\", got {}",
                        shown.join(" ")
                    ))
                }
            },
        )
        .await;

    steps
        .run(
            "notification: ping \"are you there?\"",
            "n has a name and no ID: it is never answered. This responder chooses to send \
             a pong notification back.",
            async {
                peer.notify("ping", "are you there?")
                    .await
                    .map_err(|e| unexpected(&e))?;
                match pongs.recv().await {
                    Some(p) if p == "are you there?" => Ok(format!("pong {}", quoted(&p))),
                    Some(p) => Err(format!(
                        "expected pong \"are you there?\", got {}",
                        quoted(&p)
                    )),
                    None => Err("the pong handler went away".into()),
                }
            },
        )
        .await;

    steps
        .run(
            "call back: call-back \"stressed\"",
            "Inside its handler the responder asks the requester for reverse, over the same \
             connection, then returns that answer. Each side numbers its own requests.",
            expect_result(&peer, "call-back", "stressed", "desserts"),
        )
        .await;

    steps
        .run(
            "pipelining: slow \"200\" and echo \"quick\" at the same time",
            "Both requests share the connection at once; results come back in completion \
             order, not request order.",
            async {
                let (slow, quick) =
                    tokio::join!(peer.request("slow", "200"), peer.request("echo", "quick"));
                let slow = slow.map_err(|e| unexpected(&e))?;
                let quick = quick.map_err(|e| unexpected(&e))?;
                if slow != "200" || quick != "quick" {
                    return Err(format!(
                        "expected \"200\" and \"quick\", got {} and {}",
                        quoted(&slow),
                        quoted(&quick)
                    ));
                }
                let order: Vec<Vec<u8>> = log
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .iter()
                    .filter(|f| f.dir == Dir::Recv && f.kind == "SingleResult")
                    .map(|f| f.payload.clone())
                    .collect();
                if order == [b"quick".to_vec(), b"200".to_vec()] {
                    Ok("\"quick\" came back first, then \"200\"".into())
                } else {
                    Err("the results did not come back in completion order".into())
                }
            },
        )
        .await;

    steps
        .run(
            "error result: fail",
            "E: the request was faulty and should not be retried as is.",
            async {
                match peer.request("fail", "").await {
                    Err(Error::Remote(e)) if e.message() == "fail: this operation always fails" => {
                        Ok(format!("error result {}", quoted(e.payload())))
                    }
                    Err(e) => Err(format!("expected the error result of fail, got: {e}")),
                    Ok(r) => Err(format!(
                        "expected an error result, got result {}",
                        quoted(&r)
                    )),
                }
            },
        )
        .await;

    steps
        .run(
            "retry result: flaky \"data\"",
            "e asks the requester to try again after a wait (0000012c = 300 ms); the library \
             waits that long, then sends the request again with a new ID.",
            async {
                let t0 = Instant::now();
                let r = peer
                    .request("flaky", "data")
                    .await
                    .map_err(|e| unexpected(&e))?;
                let waited = t0.elapsed();
                if r != "data" {
                    return Err(format!("expected \"data\", got {}", quoted(&r)));
                }
                let asked = log
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .iter()
                    .find_map(|f| f.wait_ms);
                if asked != Some(RETRY_WAIT.as_millis() as u32) {
                    return Err(format!(
                        "expected a retry result asking for 300 ms, saw {asked:?}"
                    ));
                }
                if waited < RETRY_WAIT {
                    return Err(format!("retried after {waited:?}, before the 300 ms asked"));
                }
                Ok(format!(
                    "result {} after {} ms (the retry result asked for 300 ms)",
                    quoted(&r),
                    waited.as_millis()
                ))
            },
        )
        .await;

    peer.close().await;
    responder.shutdown().await;
    println!();
    let secs = started.elapsed().as_secs_f64();
    let Steps { total, passed, .. } = steps;
    if passed == total {
        println!("summary: all {total} steps got the expected answer ({secs:.2} s)");
        println!();
        println!("next: `gotalk serve` in one terminal, then in another:");
        println!("  gotalk request 127.0.0.1:1234 echo hello");
        println!("  gotalk request --json 127.0.0.1:1234 greet '{{\"name\":\"you\"}}'");
        println!("  gotalk bench 127.0.0.1:1234");
        exit::OK
    } else {
        println!(
            "summary: {passed} of {total} steps got the expected answer, {} failed ({secs:.2} s)",
            total - passed
        );
        exit::FAILED
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wraps_at_spaces() {
        assert_eq!(wrap("aa bb cc", 5), ["aa bb", "cc"]);
        assert_eq!(wrap("  one  ", 3), ["one"]);
        assert!(wrap("", 10).is_empty());
    }
}
