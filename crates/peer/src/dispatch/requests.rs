//! Running request handlers: polled once on the connection's task, spawned
//! when they wait, panics caught either way.

use std::{panic::AssertUnwindSafe, sync::Arc, task::Poll};

use bytes::{Bytes, BytesMut};
use futures::{FutureExt, StreamExt};
use gotalk_proto::{RequestId, Text};
use tokio::sync::mpsc;

use super::{Dispatch, Op, panic_message, poll_once};
use crate::{
    BoxFuture, Context, HandlerError, Peer, RequestParts, ResultSender,
    connection::{Connection, CreditGuard, Part},
    core::{Charge, Delivery, Reply},
    handlers::RequestHandler,
};

/// A request handler's future.
enum Work {
    /// A buffer handler answering a single request: its result is the `R`.
    Single(BoxFuture<Result<Bytes, HandlerError>>),
    /// Anything else: `Some` is a single result, `None` ends a result stream.
    Other(BoxFuture<Result<Option<Bytes>, HandlerError>>),
}

/// What a handler's future came to: its result, or the panic that ended it.
type HandlerOutcome = std::thread::Result<Result<Option<Bytes>, HandlerError>>;

/// The handler for `op` and a handle for its context; `None` for an unknown
/// operation, or when every handle is gone (closing).
fn lookup(conn: &Arc<Connection>, op: &Text<Bytes>) -> Option<(RequestHandler, Peer)> {
    let handler = conn.handlers.request_handler(op.as_str())?.clone();
    Some((handler, conn.peer()?))
}

/// The peer's single request `id`.
pub(super) fn single(
    d: &mut Dispatch,
    conn: &Arc<Connection>,
    id: RequestId,
    op: Text<Bytes>,
    payload: Bytes,
    charge: Charge,
) {
    let Some((handler, peer)) = lookup(conn, &op) else {
        d.ops.push(Op::UnknownOperation {
            id,
            stream: false,
            op,
            charge,
        });
        return;
    };
    let ctx = Context::new(peer, op.clone(), Some(id));
    let work = match handler {
        // The common case: the handler's own boxed future, not boxed again.
        RequestHandler::Buffer(f) => Work::Single(f(ctx, payload)),
        RequestHandler::Stream(f) => {
            let results = ResultSender::new(conn.clone(), id);
            let parts = RequestParts::once(payload);
            Work::Other(f(ctx, parts, results).map(|r| r.map(|()| None)).boxed())
        }
    };
    run(d, conn, id, false, op, work, charge);
}

/// The peer's stream request `id`, with its first part.
pub(super) fn stream(
    d: &mut Dispatch,
    conn: &Arc<Connection>,
    id: RequestId,
    op: Text<Bytes>,
    first: Option<Delivery>,
) {
    let Some((handler, peer)) = lookup(conn, &op) else {
        if let Some(first) = first {
            d.ops.push(Op::PartTaken(first.credit));
        }
        d.ops.push(Op::UnknownOperation {
            id,
            stream: true,
            op,
            charge: Charge::NONE,
        });
        return;
    };
    let (tx, rx) = mpsc::unbounded_channel();
    if let Some(first) = first {
        let guard = CreditGuard::new(conn.clone(), first.credit);
        // The receiver is right here: this cannot fail.
        let _ = tx.send(Part::Data(first.payload, guard));
    }
    d.ops.push(Op::OpenStream { id, parts: tx });
    let parts = RequestParts::channel(rx, conn.clone());
    let ctx = Context::new(peer, op.clone(), Some(id));
    let work = match handler {
        RequestHandler::Buffer(f) => {
            let limit = conn.config.max_payload as usize;
            Work::Other(
                async move {
                    let whole = collect(parts, limit).await?;
                    f(ctx, whole).await.map(Some)
                }
                .boxed(),
            )
        }
        RequestHandler::Stream(f) => {
            let results = ResultSender::new(conn.clone(), id);
            Work::Other(f(ctx, parts, results).map(|r| r.map(|()| None)).boxed())
        }
    };
    run(d, conn, id, true, op, work, Charge::NONE);
}

/// Runs the handler of the peer's request `id`. With
/// [`Config::inline_handlers`](crate::Config::inline_handlers) it is polled
/// once right here: one that finishes without waiting is answered at once,
/// with no task spawned, and its reply joins the others answered from the
/// same read. Any other is spawned, already started.
fn run(
    d: &mut Dispatch,
    conn: &Arc<Connection>,
    id: RequestId,
    stream: bool,
    op: Text<Bytes>,
    mut work: Work,
    charge: Charge,
) {
    if conn.config.inline_handlers
        && let Poll::Ready(outcome) = poll_work(&mut work)
    {
        let reply = reply_for(&op, outcome);
        d.ops.push(Op::Respond {
            id,
            stream,
            reply,
            charge,
        });
        return;
    }
    d.woken += 1;
    let conn = conn.clone();
    tokio::spawn(async move {
        let outcome = match work {
            Work::Single(f) => AssertUnwindSafe(f).catch_unwind().await.map(single_result),
            Work::Other(f) => AssertUnwindSafe(f).catch_unwind().await,
        };
        let mut answer = Some((reply_for(&op, outcome), charge));
        conn.send(|core| {
            if let Some((reply, charge)) = answer.take() {
                core.respond(id, stream, reply, charge);
            }
        })
        .await;
    });
}

fn single_result(r: Result<Bytes, HandlerError>) -> Result<Option<Bytes>, HandlerError> {
    r.map(Some)
}

/// [`poll_once`] for a request handler.
fn poll_work(work: &mut Work) -> Poll<HandlerOutcome> {
    match work {
        Work::Single(f) => poll_once(f).map(|r| r.map(single_result)),
        Work::Other(f) => poll_once(f),
    }
}

/// The reply to a request, from what its handler came to.
fn reply_for(op: &Text<Bytes>, outcome: HandlerOutcome) -> Reply {
    match outcome {
        Ok(Ok(Some(payload))) => Reply::Value(payload),
        Ok(Ok(None)) => Reply::EndOfStream,
        Ok(Err(e)) => match e.retry_after() {
            Some(wait) => Reply::Retry {
                wait,
                payload: e.payload().clone(),
            },
            None => Reply::Error(e.payload().clone()),
        },
        Err(panic) => {
            let what = panic_message(&panic);
            tracing::error!(op = %op, panic = %what, "request handler panicked");
            Reply::panicked(op.as_str())
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
