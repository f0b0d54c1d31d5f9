//! What the driver does with each message the peer sends.
//!
//! [`handle`] deals with a message on the spot when nothing has to wait,
//! which is the common case: a single request whose handler answers without
//! waiting, a result for a buffer request, a notification with a free slot,
//! a heartbeat. Otherwise it says what is left ([`Rest`]) for [`finish`] to
//! await. The common path stays a plain function call, clear of the state
//! machines of the rarer ones (streams, and waiting for room).

use std::{panic::AssertUnwindSafe, sync::Arc, task::Poll, time::Duration};

use bytes::{Bytes, BytesMut};
use futures::{FutureExt, StreamExt};
use gotalk_proto::{Message, ProtocolErrorCode, RequestId, Text};
use tokio::sync::{OwnedSemaphorePermit, TryAcquireError, mpsc};

use crate::{
    BoxFuture, CloseReason, Context, Error, HandlerError, Peer, RemoteError, RequestParts,
    ResultSender,
    handlers::{NotificationHandler, RequestHandler},
    shared::{Outcome, Part, PartTx, Pending, Shared},
    state::{Admission, PartTarget},
};

/// What is left to do for a message after [`handle`].
pub(crate) enum Rest {
    /// Nothing.
    Done,
    /// Queue this reply once the write queue has room; then free the slot of
    /// the request `(id, stream)`, if any, and release `held`.
    Reply {
        msg: Message,
        finish: Option<(RequestId, bool)>,
        held: Option<OwnedSemaphorePermit>,
    },
    /// A stream request: its first part may wait for its consumer.
    StreamRequest {
        id: RequestId,
        op: Text<Bytes>,
        payload: Bytes,
    },
    /// A part of a stream request, for its handler.
    Part { id: RequestId, payload: Bytes },
    /// A result for one of our stream requests, for its reader.
    ToStream {
        tx: PartTx,
        answer: Answer,
        payload: Bytes,
        last: bool,
        accepting: bool,
    },
    /// A notification waiting for a handler slot or byte budget.
    Notification {
        handler: NotificationHandler,
        peer: Peer,
        name: Text<Bytes>,
        payload: Bytes,
    },
}

/// Handles one message as far as it can without waiting; `Err` closes the
/// connection for that reason.
pub(crate) fn handle(shared: &Arc<Shared>, msg: Message) -> Result<Rest, CloseReason> {
    Ok(match msg {
        Message::SingleRequest { id, op, payload } => single_request(shared, id, op, payload)?,
        Message::StreamRequest { id, op, payload } => Rest::StreamRequest { id, op, payload },
        Message::StreamRequestPart { id, payload } => Rest::Part { id, payload },
        Message::SingleResult { id, payload } => result(shared, id, Answer::Single, payload),
        Message::StreamResult { id, payload } => result(shared, id, Answer::Part, payload),
        Message::ErrorResult { id, payload } => result(shared, id, Answer::Error, payload),
        Message::RetryResult {
            id,
            wait_ms,
            payload,
        } => result(shared, id, Answer::Retry(wait_ms), payload),
        Message::Notification { name, payload } => notification(shared, name, payload),
        Message::Heartbeat { load, time } => {
            tracing::trace!(load, time, "heartbeat received");
            if let Some(on_heartbeat) = &shared.config.on_heartbeat {
                on_heartbeat(load, time);
            }
            Rest::Done
        }
        Message::ProtocolError { code } => return Err(CloseReason::RemoteProtocolError { code }),
    })
}

/// Does what [`handle`] left, waiting where it must (which stops reading:
/// that is the back-pressure). `Err` closes the connection.
pub(crate) async fn finish(shared: &Arc<Shared>, rest: Rest) -> Result<(), CloseReason> {
    match rest {
        Rest::Done => {}
        Rest::Reply { msg, finish, held } => queue_reply(shared, msg, finish, held).await,
        Rest::StreamRequest { id, op, payload } => stream_request(shared, id, op, payload).await?,
        Rest::Part { id, payload } => part(shared, id, payload).await?,
        Rest::ToStream {
            tx,
            answer,
            payload,
            last,
            accepting,
        } => to_stream(shared, &tx, answer, payload, last, accepting).await,
        Rest::Notification {
            handler,
            peer,
            name,
            payload,
        } => notification_waiting(shared, handler, peer, name, payload).await,
    }
    Ok(())
}

fn violation(detail: String) -> CloseReason {
    CloseReason::ProtocolViolation {
        code: ProtocolErrorCode::InvalidMessage,
        detail: detail.into(),
    }
}

/// Queues a reply, waiting for room; a closed queue means the connection is
/// going away, which the driver learns on its own.
async fn reply(shared: &Shared, msg: Message) {
    if let Err(e) = shared.queue.push(&msg).await {
        tracing::debug!(error = %e, "reply dropped");
    }
}

/// [`reply`], then frees the request's slot and releases what it held.
async fn queue_reply(
    shared: &Shared,
    msg: Message,
    finish: Option<(RequestId, bool)>,
    held: Option<OwnedSemaphorePermit>,
) {
    reply(shared, msg).await;
    release(shared, finish, held);
}

/// After a reply is queued: frees the request's slot, if it had one, and
/// what its payload held of the byte budget.
fn release(shared: &Shared, finish: Option<(RequestId, bool)>, held: Option<OwnedSemaphorePermit>) {
    if let Some((id, stream)) = finish {
        shared.finish_inbound(id, stream);
    }
    drop(held);
}

/// Queues a reply now if the queue has room, and then frees the request's
/// slot; otherwise leaves that to [`finish`].
fn respond(
    shared: &Shared,
    msg: Message,
    finish: Option<(RequestId, bool)>,
    held: Option<OwnedSemaphorePermit>,
) -> Rest {
    match shared.queue.push_local(&msg) {
        Ok(false) => return Rest::Reply { msg, finish, held },
        Ok(true) => {}
        Err(e) => tracing::debug!(error = %e, "reply dropped"),
    }
    release(shared, finish, held);
    Rest::Done
}

/// A retry result asking the peer to wait `wait`, or an error result for a
/// peer that cannot take one.
fn retry_or_error(shared: &Shared, id: RequestId, wait: Duration, payload: Bytes) -> Message {
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

/// [`retry_or_error`] with one of our own texts.
fn retry_reply(shared: &Shared, id: RequestId, wait: Duration, text: &'static str) -> Message {
    retry_or_error(shared, id, wait, Bytes::from_static(text.as_bytes()))
}

fn error_reply(shared: &Shared, id: RequestId, error: &HandlerError) -> Message {
    let payload = error.payload().clone();
    match error.retry_after() {
        Some(wait) => retry_or_error(shared, id, wait, payload),
        None => Message::ErrorResult { id, payload },
    }
}

/// Admits the peer's request `id`: `None` to run its handler, or the reply
/// refusing it. A stream request reusing the ID of one in flight breaks the
/// protocol.
fn admit(shared: &Shared, id: RequestId, stream: bool) -> Result<Option<Message>, CloseReason> {
    let admission = shared.state().admit(id, stream);
    Ok(match admission {
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
    })
}

/// The handler for `op` and a handle for its context; `None` for an unknown
/// operation, or when every handle is gone (closing).
fn lookup(shared: &Arc<Shared>, op: &Text<Bytes>) -> Option<(RequestHandler, Peer)> {
    let handler = shared.handlers.request_handler(op.as_str())?.clone();
    Some((handler, shared.peer()?))
}

/// The reply to an admitted request that has no handler (freeing its slot).
fn unknown_operation(shared: &Shared, id: RequestId, stream: bool, op: &Text<Bytes>) -> Message {
    if shared.finish_inbound(id, stream) {
        Message::ErrorResult {
            id,
            payload: Bytes::from(format!("unknown operation \"{}\"", op.as_str())),
        }
    } else {
        retry_reply(shared, id, Duration::ZERO, "connection closing")
    }
}

fn single_request(
    shared: &Arc<Shared>,
    id: RequestId,
    op: Text<Bytes>,
    payload: Bytes,
) -> Result<Rest, CloseReason> {
    if let Some(refusal) = admit(shared, id, false)? {
        return Ok(respond(shared, refusal, None, None));
    }
    let Some((handler, peer)) = lookup(shared, &op) else {
        let msg = unknown_operation(shared, id, false, &op);
        return Ok(respond(shared, msg, None, None));
    };
    // A large payload held by its handler counts toward the connection's
    // byte budget. Over budget, the request is refused like one over the
    // count limit: waiting here instead would stop reading, and a handler
    // that calls the requester back would then wait forever.
    let held = if payload.len() >= CHARGE_MIN {
        let charge = charge_for(shared, payload.len());
        match shared.budget.clone().try_acquire_many_owned(charge) {
            Ok(permit) => Some(permit),
            Err(_) => {
                shared.finish_inbound(id, false);
                let msg = retry_reply(shared, id, shared.rate_limit_wait(), "request rate limit");
                return Ok(respond(shared, msg, None, None));
            }
        }
    } else {
        None
    };
    let ctx = Context::new(peer, op.clone(), Some(id));
    let work = match handler {
        // The common case: the handler's own boxed future, not boxed again.
        RequestHandler::Buffer(f) => Work::Single(f(ctx, payload)),
        RequestHandler::Stream(f) => {
            let results = ResultSender::new(shared.clone(), id);
            let parts = RequestParts::once(payload);
            Work::Other(f(ctx, parts, results).map(|r| r.map(|()| None)).boxed())
        }
    };
    Ok(run(shared, id, false, op, work, held))
}

async fn stream_request(
    shared: &Arc<Shared>,
    id: RequestId,
    op: Text<Bytes>,
    payload: Bytes,
) -> Result<(), CloseReason> {
    if let Some(refusal) = admit(shared, id, true)? {
        reply(shared, refusal).await;
        return Ok(());
    }
    let Some((handler, peer)) = lookup(shared, &op) else {
        let msg = unknown_operation(shared, id, true, &op);
        reply(shared, msg).await;
        return Ok(());
    };
    let ctx = Context::new(peer, op.clone(), Some(id));
    let (tx, rx) = mpsc::channel(shared.config.stream_buffer_parts.max(1));
    shared.state().open_stream(id, tx.clone());
    deliver(shared, &tx, payload).await;
    let parts = RequestParts::channel(rx, shared.clone());
    let work = match handler {
        RequestHandler::Buffer(f) => {
            let limit = shared.config.max_payload as usize;
            Work::Other(
                async move {
                    let whole = collect(parts, limit).await?;
                    f(ctx, whole).await.map(Some)
                }
                .boxed(),
            )
        }
        RequestHandler::Stream(f) => {
            let results = ResultSender::new(shared.clone(), id);
            Work::Other(f(ctx, parts, results).map(|r| r.map(|()| None)).boxed())
        }
    };
    if let Rest::Reply { msg, finish, held } = run(shared, id, true, op, work, None) {
        queue_reply(shared, msg, finish, held).await;
    }
    Ok(())
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

/// What a handler's future came to: its result, or the panic that ended it.
type HandlerOutcome = std::thread::Result<Result<Option<Bytes>, HandlerError>>;

/// Runs the handler of the peer's request `id`. With
/// [`Config::inline_handlers`](crate::Config::inline_handlers) it is polled
/// once right here: one that finishes without waiting is answered at once,
/// with no task spawned, and its reply joins the others answered from the
/// same read. Any other is spawned, already started. Either way its slot is
/// freed once the reply is queued.
fn run(
    shared: &Arc<Shared>,
    id: RequestId,
    stream: bool,
    op: Text<Bytes>,
    mut work: Work,
    held: Option<OwnedSemaphorePermit>,
) -> Rest {
    if shared.config.inline_handlers
        && let Poll::Ready(outcome) = poll_work(&mut work)
    {
        let msg = answer(shared, id, &op, outcome);
        return respond(shared, msg, Some((id, stream)), held);
    }
    let shared = shared.clone();
    shared.queue.expect_push();
    tokio::spawn(async move {
        let outcome = match work {
            Work::Single(f) => AssertUnwindSafe(f).catch_unwind().await.map(single),
            Work::Other(f) => AssertUnwindSafe(f).catch_unwind().await,
        };
        let msg = answer(&shared, id, &op, outcome);
        queue_reply(&shared, msg, Some((id, stream)), held).await;
    });
    Rest::Done
}

/// Polls a handler's future once, catching a panic. The waker is a no-op: a
/// future still pending is spawned, and its task's first poll registers the
/// task's own waker (futures must use the waker of their latest poll).
fn poll_once<T>(fut: &mut BoxFuture<T>) -> Poll<std::thread::Result<T>> {
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    match std::panic::catch_unwind(AssertUnwindSafe(|| fut.as_mut().poll(&mut cx))) {
        Ok(Poll::Pending) => Poll::Pending,
        Ok(Poll::Ready(out)) => Poll::Ready(Ok(out)),
        Err(panic) => Poll::Ready(Err(panic)),
    }
}

/// [`poll_once`] for a request handler.
fn poll_work(work: &mut Work) -> Poll<HandlerOutcome> {
    match work {
        Work::Single(f) => poll_once(f).map(|r| r.map(single)),
        Work::Other(f) => poll_once(f),
    }
}

/// The reply to the peer's request `id`, from what its handler came to.
fn answer(shared: &Shared, id: RequestId, op: &Text<Bytes>, outcome: HandlerOutcome) -> Message {
    match outcome {
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
    }
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

/// How the peer answered one of our requests.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Answer {
    Single,
    Part,
    Error,
    Retry(u32),
}

/// A result for one of our requests: a buffer request is answered here; a
/// stream request's reader gets it in [`to_stream`].
fn result(shared: &Arc<Shared>, id: RequestId, answer: Answer, payload: Bytes) -> Rest {
    let limit = shared.config.max_payload;
    let mut st = shared.state();
    // A result for a request no longer waiting (cancelled, timed out, or
    // the Go responder's extra `S` after an `E`) is dropped.
    let tx = match st.outbound(id) {
        None => return Rest::Done,
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
                        return Rest::Done;
                    }
                    Err(Error::ResultTooLarge { limit })
                }
            };
            if let Some(Pending::Buffer { tx, .. }) = st.remove_outbound(id) {
                if tx.send(outcome).is_ok() {
                    shared.queue.expect_push();
                }
            }
            shared.unlock_after_removal(st);
            return Rest::Done;
        }
    };
    let last = !matches!(answer, Answer::Part) || payload.is_empty();
    if last {
        st.remove_outbound(id);
    }
    let accepting = st.is_accepting();
    Rest::ToStream {
        tx,
        answer,
        payload,
        last,
        accepting,
    }
}

/// Hands a result to the reader of one of our stream requests; `last` when
/// the request is over (and was removed from the table).
async fn to_stream(
    shared: &Shared,
    tx: &PartTx,
    answer: Answer,
    payload: Bytes,
    last: bool,
    accepting: bool,
) {
    match answer {
        Answer::Single => {
            deliver(shared, tx, payload).await;
            let _ = tx.send(Part::End).await;
        }
        Answer::Part if payload.is_empty() => {
            let _ = tx.send(Part::End).await;
        }
        Answer::Part => deliver(shared, tx, payload).await,
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
}

/// A notification: its handler starts here when a handler slot is free and
/// the payload is small; otherwise [`notification_waiting`] waits for room.
fn notification(shared: &Arc<Shared>, name: Text<Bytes>, payload: Bytes) -> Rest {
    let Some(handler) = shared.handlers.notification_handler(name.as_str()).cloned() else {
        tracing::trace!(name = name.as_str(), "no handler for notification; dropped");
        return Rest::Done;
    };
    let Some(peer) = shared.peer() else {
        return Rest::Done;
    };
    if payload.len() < CHARGE_MIN {
        match shared.notifications.clone().try_acquire_owned() {
            Ok(permit) => {
                start_notification(shared, &handler, peer, name, payload, (permit, None));
                return Rest::Done;
            }
            Err(TryAcquireError::Closed) => return Rest::Done,
            Err(TryAcquireError::NoPermits) => {}
        }
    }
    Rest::Notification {
        handler,
        peer,
        name,
        payload,
    }
}

async fn notification_waiting(
    shared: &Arc<Shared>,
    handler: NotificationHandler,
    peer: Peer,
    name: Text<Bytes>,
    payload: Bytes,
) {
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
    start_notification(shared, &handler, peer, name, payload, (permit, held));
}

/// Runs a notification handler, polled once here first like request
/// handlers; `slots` are released when it ends.
fn start_notification(
    shared: &Shared,
    handler: &NotificationHandler,
    peer: Peer,
    name: Text<Bytes>,
    payload: Bytes,
    slots: (OwnedSemaphorePermit, Option<OwnedSemaphorePermit>),
) {
    let ctx = Context::new(peer, name.clone(), None);
    let mut fut = handler(ctx, payload);
    if shared.config.inline_handlers {
        match poll_once(&mut fut) {
            Poll::Pending => {}
            Poll::Ready(Ok(())) => return,
            Poll::Ready(Err(panic)) => return notification_panicked(&name, &panic),
        }
    }
    tokio::spawn(async move {
        if let Err(panic) = AssertUnwindSafe(fut).catch_unwind().await {
            notification_panicked(&name, &panic);
        }
        drop(slots);
    });
}

fn notification_panicked(name: &Text<Bytes>, panic: &Box<dyn std::any::Any + Send>) {
    tracing::error!(name = name.as_str(), panic = %panic_message(panic), "notification handler panicked");
}
