//! What the driver does with each message the peer sends.

use std::{panic::AssertUnwindSafe, sync::Arc, task::Poll, time::Duration};

use bytes::{Bytes, BytesMut};
use futures::{FutureExt, StreamExt};
use gotalk_proto::{Message, ProtocolErrorCode, RequestId, Text};
use tokio::sync::mpsc;

use crate::{
    BoxFuture, CloseReason, Context, Error, HandlerError, RemoteError, RequestParts, ResultSender,
    handlers::RequestHandler,
    shared::{Outcome, Part, PartTx, Pending, Shared},
    state::{Admission, PartTarget},
};

/// Handles one message; `Err` closes the connection for that reason.
pub(crate) async fn on_message(shared: &Arc<Shared>, msg: Message) -> Result<(), CloseReason> {
    match msg {
        Message::SingleRequest { id, op, payload } => request(shared, id, op, payload, false).await,
        Message::StreamRequest { id, op, payload } => request(shared, id, op, payload, true).await,
        Message::StreamRequestPart { id, payload } => part(shared, id, payload).await,
        Message::SingleResult { id, payload } => result(shared, id, Answer::Single, payload).await,
        Message::StreamResult { id, payload } => result(shared, id, Answer::Part, payload).await,
        Message::ErrorResult { id, payload } => result(shared, id, Answer::Error, payload).await,
        Message::RetryResult {
            id,
            wait_ms,
            payload,
        } => result(shared, id, Answer::Retry(wait_ms), payload).await,
        Message::Notification { name, payload } => {
            notification(shared, name, payload).await;
            Ok(())
        }
        Message::Heartbeat { load, time } => {
            tracing::trace!(load, time, "heartbeat received");
            if let Some(on_heartbeat) = &shared.config.on_heartbeat {
                on_heartbeat(load, time);
            }
            Ok(())
        }
        Message::ProtocolError { code } => Err(CloseReason::RemoteProtocolError { code }),
    }
}

fn violation(detail: String) -> CloseReason {
    CloseReason::ProtocolViolation {
        code: ProtocolErrorCode::InvalidMessage,
        detail: detail.into(),
    }
}

/// Queues a reply; a closed queue means the connection is going away, which
/// the driver learns on its own.
async fn reply(shared: &Shared, msg: Message) {
    if let Err(e) = shared.queue.push(&msg).await {
        tracing::debug!(error = %e, "reply dropped");
    }
}

/// A retry result, or an error result for a peer that cannot take one.
fn retry_reply(shared: &Shared, id: RequestId, wait: Duration, text: &'static str) -> Message {
    let payload = Bytes::from_static(text.as_bytes());
    if shared.config.remote_retry_results {
        let wait_ms = wait.as_millis().min(u128::from(u32::MAX)) as u32;
        Message::RetryResult {
            id,
            wait_ms,
            payload,
        }
    } else {
        Message::ErrorResult { id, payload }
    }
}

fn error_reply(shared: &Shared, id: RequestId, error: &HandlerError) -> Message {
    match error.retry_after() {
        Some(wait) if shared.config.remote_retry_results => Message::RetryResult {
            id,
            wait_ms: wait.as_millis().min(u128::from(u32::MAX)) as u32,
            payload: error.payload().clone(),
        },
        _ => Message::ErrorResult {
            id,
            payload: error.payload().clone(),
        },
    }
}

async fn request(
    shared: &Arc<Shared>,
    id: RequestId,
    op: Text<Bytes>,
    payload: Bytes,
    stream: bool,
) -> Result<(), CloseReason> {
    let admission = shared.state().admit(id, stream);
    let refusal = match admission {
        Admission::Accepted => None,
        Admission::DuplicateStream => {
            return Err(violation(format!(
                "stream request reuses the ID {id} of a stream in flight"
            )));
        }
        Admission::StreamsDisabled => Some(Message::ErrorResult {
            id,
            payload: Bytes::from_static(b"stream requests not supported"),
        }),
        Admission::RateLimited => {
            let text = if stream {
                "stream rate limit"
            } else {
                "request rate limit"
            };
            Some(retry_reply(shared, id, shared.rate_limit_wait(), text))
        }
        Admission::Closing => Some(retry_reply(
            shared,
            id,
            Duration::ZERO,
            "connection closing",
        )),
    };
    if let Some(msg) = refusal {
        reply(shared, msg).await;
        return Ok(());
    }
    let handler = shared.handlers.request_handler(op.as_str()).cloned();
    let (Some(handler), Some(peer)) = (handler, shared.peer()) else {
        let msg = if shared.finish_inbound(id, stream) {
            Message::ErrorResult {
                id,
                payload: Bytes::from(format!("unknown operation \"{}\"", op.as_str())),
            }
        } else {
            retry_reply(shared, id, Duration::ZERO, "connection closing")
        };
        reply(shared, msg).await;
        return Ok(());
    };
    // A large single payload held by its handler counts toward the
    // connection's byte budget. Over budget, the request is refused like one
    // over the count limit: waiting here instead would stop reading, and a
    // handler that calls the requester back would then wait forever.
    let held = if !stream && payload.len() >= CHARGE_MIN {
        let charge = charge_for(shared, payload.len());
        match shared.budget.clone().try_acquire_many_owned(charge) {
            Ok(permit) => Some(permit),
            Err(_) => {
                shared.finish_inbound(id, false);
                let msg = retry_reply(shared, id, shared.rate_limit_wait(), "request rate limit");
                reply(shared, msg).await;
                return Ok(());
            }
        }
    } else {
        None
    };
    let ctx = Context::new(peer, op.clone(), Some(id));
    let parts_tx = stream.then(|| {
        let (tx, rx) = mpsc::channel(shared.config.stream_buffer_parts.max(1));
        shared.state().open_stream(id, tx.clone());
        (tx, rx)
    });
    let limit = shared.config.max_payload as usize;
    let work = match (handler, parts_tx) {
        // The common case: the handler's own boxed future, not boxed again.
        (RequestHandler::Buffer(f), None) => Work::Single(f(ctx, payload)),
        (RequestHandler::Buffer(f), Some((tx, rx))) => {
            deliver(shared, &tx, payload).await;
            let parts = RequestParts::channel(rx, shared.clone());
            Work::Other(
                async move {
                    let whole = collect(parts, limit).await?;
                    f(ctx, whole).await.map(Some)
                }
                .boxed(),
            )
        }
        (RequestHandler::Stream(f), parts_tx) => {
            let parts = match parts_tx {
                None => RequestParts::once(payload),
                Some((tx, rx)) => {
                    deliver(shared, &tx, payload).await;
                    RequestParts::channel(rx, shared.clone())
                }
            };
            let results = ResultSender::new(shared.clone(), id);
            Work::Other(f(ctx, parts, results).map(|r| r.map(|()| None)).boxed())
        }
    };
    // A handler that finishes without waiting is answered right here: no
    // task to spawn, and its result joins the replies to the same read.
    // Any other is spawned, already started.
    let mut work = work;
    if shared.config.inline_handlers
        && let Poll::Ready(outcome) = poll_once(&mut work)
    {
        answer(shared, id, stream, &op, outcome).await;
        drop(held);
        return Ok(());
    }
    let task_shared = shared.clone();
    tokio::spawn(async move {
        let outcome = match work {
            Work::Single(f) => AssertUnwindSafe(f).catch_unwind().await.map(single),
            Work::Other(f) => AssertUnwindSafe(f).catch_unwind().await,
        };
        answer(&task_shared, id, stream, &op, outcome).await;
        // Released once the reply is queued.
        drop(held);
    });
    Ok(())
}

/// What a handler's future came to: its result, or the panic that ended it.
type HandlerOutcome = std::thread::Result<Result<Option<Bytes>, HandlerError>>;

/// Polls a handler's future once, catching a panic. The waker is a no-op: a
/// future still pending is spawned, and its task's first poll registers the
/// task's own waker (futures must use the waker of their latest poll).
fn poll_once(work: &mut Work) -> Poll<HandlerOutcome> {
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    let polled = std::panic::catch_unwind(AssertUnwindSafe(|| match work {
        Work::Single(f) => f.as_mut().poll(&mut cx).map(single),
        Work::Other(f) => f.as_mut().poll(&mut cx),
    }));
    match polled {
        Ok(Poll::Pending) => Poll::Pending,
        Ok(Poll::Ready(result)) => Poll::Ready(Ok(result)),
        Err(panic) => Poll::Ready(Err(panic)),
    }
}

/// Queues the reply to the peer's request `id`, then frees its slot.
async fn answer(
    shared: &Shared,
    id: RequestId,
    stream: bool,
    op: &Text<Bytes>,
    outcome: HandlerOutcome,
) {
    let msg = match outcome {
        Ok(Ok(Some(payload))) => Message::SingleResult { id, payload },
        Ok(Ok(None)) => Message::StreamResult {
            id,
            payload: Bytes::new(),
        },
        Ok(Err(e)) => error_reply(shared, id, &e),
        Err(panic) => {
            let what = panic_message(&panic);
            tracing::error!(op = %op, panic = %what, "request handler panicked");
            Message::ErrorResult {
                id,
                payload: Bytes::from(format!("internal error: handler for \"{op}\" panicked")),
            }
        }
    };
    reply(shared, msg).await;
    shared.finish_inbound(id, stream);
}

/// A request handler's future.
enum Work {
    /// A buffer handler answering a single request: its result is the `R`.
    Single(BoxFuture<Result<Bytes, HandlerError>>),
    /// Anything else: `Some` is a single result, `None` ends a result stream.
    Other(BoxFuture<Result<Option<Bytes>, HandlerError>>),
}

fn single(r: Result<Bytes, HandlerError>) -> Result<Option<Bytes>, HandlerError> {
    r.map(Some)
}

/// Concatenates a request stream for a buffer handler, within the payload limit.
async fn collect(mut parts: RequestParts, limit: usize) -> Result<Bytes, HandlerError> {
    let mut whole = BytesMut::new();
    while let Some(part) = parts.next().await {
        let part = part?;
        if whole.len() + part.len() > limit {
            return Err(HandlerError::new(format!(
                "streamed request exceeds the {limit}-byte payload limit"
            )));
        }
        whole.extend_from_slice(&part);
    }
    Ok(whole.freeze())
}

fn panic_message(panic: &Box<dyn std::any::Any + Send>) -> String {
    if let Some(s) = panic.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = panic.downcast_ref::<String>() {
        s.clone()
    } else {
        "non-string panic payload".to_owned()
    }
}

/// Payloads below this size are not charged to the connection's byte budget
/// when a handler holds them: the request and notification count limits
/// already bound them (1024 × 4 KiB by default), and small requests stay off
/// the semaphore.
const CHARGE_MIN: usize = 4 * 1024;

/// The budget permits a payload of `len` bytes needs (clamped so that one
/// maximal payload always fits an empty budget).
fn charge_for(shared: &Shared, len: usize) -> u32 {
    let total = shared
        .config
        .max_buffered_bytes
        .clamp(1, tokio::sync::Semaphore::MAX_PERMITS);
    len.min(total).min(u32::MAX as usize) as u32
}

/// Hands a payload to a stream consumer, charging it to the connection's
/// buffer budget. Waits (and so stops reading) while the consumer's buffer or
/// the budget is full; a consumer that went away just loses the part.
async fn deliver(shared: &Shared, tx: &PartTx, payload: Bytes) {
    if payload.is_empty() {
        return;
    }
    let charge = charge_for(shared, payload.len());
    let permit = shared.budget.clone().acquire_many_owned(charge).await.ok();
    let _ = tx.send(Part::Data(payload, permit)).await;
}

async fn part(shared: &Arc<Shared>, id: RequestId, payload: Bytes) -> Result<(), CloseReason> {
    let tx = {
        let mut st = shared.state();
        let tx = match st.part_target(id) {
            PartTarget::Unknown => {
                return Err(violation(format!(
                    "stream request part for unknown or ended stream {id}"
                )));
            }
            PartTarget::Retired => None,
            PartTarget::Stream(tx) => Some(tx.clone()),
        };
        if payload.is_empty() {
            st.end_stream(id);
        }
        tx
    };
    if let Some(tx) = tx {
        if payload.is_empty() {
            let _ = tx.send(Part::End).await;
        } else {
            deliver(shared, &tx, payload).await;
        }
    }
    Ok(())
}

#[derive(Clone, Copy, Debug)]
enum Answer {
    Single,
    Part,
    Error,
    Retry(u32),
}

async fn result(
    shared: &Arc<Shared>,
    id: RequestId,
    answer: Answer,
    payload: Bytes,
) -> Result<(), CloseReason> {
    let limit = shared.config.max_payload;
    // Decide under the lock; deliver (which may wait) after releasing it.
    let (tx, last, accepting) = {
        let mut st = shared.state();
        // A result for a request no longer waiting (cancelled, timed out, or
        // the Go responder's extra `S` after an `E`) is dropped.
        let tx = match st.outbound(id) {
            None => return Ok(()),
            Some(Pending::Stream(tx)) => tx.clone(),
            Some(Pending::Buffer { collected, .. }) => {
                let outcome = match answer {
                    Answer::Single => Ok(Outcome::Result(payload)),
                    Answer::Error => Ok(Outcome::Error(payload)),
                    Answer::Retry(wait_ms) => Ok(Outcome::Retry { wait_ms, payload }),
                    Answer::Part if payload.is_empty() => Ok(Outcome::Result(
                        collected.take().map(BytesMut::freeze).unwrap_or_default(),
                    )),
                    Answer::Part => {
                        let buf = collected.get_or_insert_with(BytesMut::new);
                        if buf.len() + payload.len() <= limit as usize {
                            buf.extend_from_slice(&payload);
                            return Ok(());
                        }
                        Err(Error::ResultTooLarge { limit })
                    }
                };
                if let Some(Pending::Buffer { tx, .. }) = st.remove_outbound(id) {
                    let _ = tx.send(outcome);
                }
                shared.unlock_after_removal(st);
                return Ok(());
            }
        };
        let last = !matches!(answer, Answer::Part) || payload.is_empty();
        if last {
            st.remove_outbound(id);
        }
        (tx, last, st.is_accepting())
    };
    match answer {
        Answer::Single => {
            deliver(shared, &tx, payload).await;
            let _ = tx.send(Part::End).await;
        }
        Answer::Part if payload.is_empty() => {
            let _ = tx.send(Part::End).await;
        }
        Answer::Part => deliver(shared, &tx, payload).await,
        Answer::Error => {
            let _ = tx
                .send(Part::Failed(Error::Remote(RemoteError::new(payload))))
                .await;
        }
        Answer::Retry(wait_ms) => {
            let e = Error::RetryExhausted {
                attempts: 1,
                wait: Duration::from_millis(u64::from(wait_ms)),
                message: String::from_utf8_lossy(&payload).into_owned(),
            };
            let _ = tx.send(Part::Failed(e)).await;
        }
    }
    // Only now, with the last part handed over, may a graceful close that
    // waits for this request go on.
    if last {
        shared.work_done(accepting);
    }
    Ok(())
}

async fn notification(shared: &Arc<Shared>, name: Text<Bytes>, payload: Bytes) {
    let Some(handler) = shared.handlers.notification_handler(name.as_str()).cloned() else {
        tracing::trace!(name = name.as_str(), "no handler for notification; dropped");
        return;
    };
    let Some(peer) = shared.peer() else {
        return;
    };
    // Bounded: while too many notification handlers run, stop reading.
    let Ok(permit) = shared.notifications.clone().acquire_owned().await else {
        return;
    };
    // A large payload held by its handler is charged to the byte budget;
    // notifications cannot be refused, so reading waits for room.
    let held = if payload.len() >= CHARGE_MIN {
        let charge = charge_for(shared, payload.len());
        shared.budget.clone().acquire_many_owned(charge).await.ok()
    } else {
        None
    };
    let ctx = Context::new(peer, name.clone(), None);
    let mut fut = handler(ctx, payload);
    if shared.config.inline_handlers {
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        match std::panic::catch_unwind(AssertUnwindSafe(|| fut.as_mut().poll(&mut cx))) {
            Ok(Poll::Pending) => {}
            Ok(Poll::Ready(())) => return,
            Err(panic) => return notification_panicked(&name, &panic),
        }
    }
    tokio::spawn(async move {
        if let Err(panic) = AssertUnwindSafe(fut).catch_unwind().await {
            notification_panicked(&name, &panic);
        }
        drop((permit, held));
    });
}

fn notification_panicked(name: &Text<Bytes>, panic: &Box<dyn std::any::Any + Send>) {
    tracing::error!(name = name.as_str(), panic = %panic_message(panic), "notification handler panicked");
}
