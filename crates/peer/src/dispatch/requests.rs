//! Running request handlers: polled once on the connection's task, spawned
//! when they wait, panics caught either way.

use std::{panic::AssertUnwindSafe, sync::Arc, task::Poll};

use bytes::{Bytes, BytesMut};
use futures::FutureExt;
use gotalk_proto::{RequestId, Text};
use tokio::sync::mpsc;

use super::{
    Dispatch, Op, panic_message, poll_inline, poll_once,
    runnable::{HandlerWake, tracked},
};
use crate::{
    BoxFuture, Context, HandlerError, Peer, RequestParts, ResultSender,
    connection::{ChargeGuard, Connection, CreditGuard, Part, PartRx},
    core::{Charge, Delivery, Reply},
    handlers::{CallFuture, CallMeter, RequestHandler},
    runtime_metrics,
};

/// A request handler's future.
enum Work {
    /// A buffer handler answering a single request: its result is the `R`,
    /// recorded in the meter (a metered operation's) once known.
    Single(CallFuture<Bytes>, CallMeter),
    /// Anything else: `Some` is a single result, `None` ends a result stream.
    Other(BoxFuture<Result<Option<Bytes>, HandlerError>>),
}

/// What a handler's future came to: its result, or the panic that ended it.
type HandlerOutcome = std::thread::Result<Result<Option<Bytes>, HandlerError>>;

/// The handler for `op` and a handle for its context; `None` for an unknown
/// operation, or when every handle is gone (closing). The handler is
/// borrowed: it is called before the dispatch returns, and its future owns
/// what it needs (no reference count taken and dropped per request).
fn lookup<'c>(conn: &'c Arc<Connection>, op: &Text<Bytes>) -> Option<(&'c RequestHandler, Peer)> {
    let handler = conn.handlers.request_handler(op.as_str())?;
    Some((handler, conn.peer()?))
}

/// The peer's single request `id`.
#[inline]
pub(super) fn single(
    d: &mut Dispatch,
    conn: &Arc<Connection>,
    id: RequestId,
    op: Text<Bytes>,
    payload: Bytes,
    charge: Charge,
) {
    let Some((handler, peer)) = lookup(conn, &op) else {
        runtime_metrics::unknown_operation();
        d.ops.push(Op::UnknownOperation {
            id,
            stream: false,
            op,
            charge,
        });
        return;
    };
    if conn.config.handler_limit.is_reached() {
        runtime_metrics::refused_busy();
        d.ops.push(Op::RefuseBusy {
            id,
            stream: false,
            charge,
        });
        return;
    }
    let ctx = Context::new(peer, op.clone(), Some(id));
    let work = if handler.is_stream() {
        let results = ResultSender::new(conn.clone(), id);
        let parts = RequestParts::once(payload);
        let fut = handler.call_stream(ctx, parts, results);
        Work::Other(fut.map(|r| r.map(|()| None)).boxed())
    } else {
        // The common case: the handler's own boxed future, not boxed again.
        let (fut, meter) = handler
            .call_buffer_in(ctx, payload, Some(&mut d.meters), Some(&mut d.spare))
            .into_parts();
        Work::Single(fut, meter)
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
    runtime_metrics::stream_request();
    let Some((handler, peer)) = lookup(conn, &op) else {
        runtime_metrics::unknown_operation();
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
    if conn.config.handler_limit.is_reached() {
        runtime_metrics::refused_busy();
        if let Some(first) = first {
            d.ops.push(Op::PartTaken(first.credit));
        }
        d.ops.push(Op::RefuseBusy {
            id,
            stream: true,
            charge: Charge::NONE,
        });
        return;
    }
    let (tx, rx) = mpsc::unbounded_channel();
    if let Some(first) = first {
        let guard = CreditGuard::new(conn.clone(), first.credit);
        // The receiver is right here: this cannot fail.
        let _ = tx.send(Part::Data(first.payload, guard));
    }
    d.ops.push(Op::OpenStream { id, parts: tx });
    let ctx = Context::new(peer, op.clone(), Some(id));
    let work = if handler.is_stream() {
        let parts = RequestParts::channel(rx, conn.clone());
        let results = ResultSender::new(conn.clone(), id);
        let fut = handler.call_stream(ctx, parts, results);
        Work::Other(fut.map(|r| r.map(|()| None)).boxed())
    } else {
        let conn = conn.clone();
        let handler = handler.clone();
        Work::Other(
            async move {
                // The parts' bytes stay charged until the handler is
                // done with what they were collected into.
                let mut kept = ChargeGuard::new(conn.clone());
                let whole = collect(rx, &conn, &mut kept).await?;
                let result = handler.call_buffer(ctx, whole).await.map(Some);
                drop(kept);
                result
            }
            .boxed(),
        )
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
    let mut kept = false;
    if conn.config.inline_handlers {
        let (poll, keep) = poll_inline(|| poll_work(&mut work));
        if let Poll::Ready(outcome) = poll {
            if let Work::Single(fut, meter) = work {
                if let Ok(result) = &outcome {
                    d.meters.completed(meter, result);
                }
                // Its slot serves the connection's next call.
                if let CallFuture::Pooled(call) = fut {
                    call.recycle(&mut d.spare);
                }
            }
            let reply = reply_for(&op, outcome);
            d.ops.push(Op::Respond {
                id,
                stream,
                reply,
                charge,
            });
            return;
        }
        kept = keep;
    }
    // Runnable until its task's first poll: answers queued meanwhile wait
    // for it (see `runnable`).
    let wake = HandlerWake::started(conn);
    // Counted against the process-wide cap while it runs; in a race for
    // the last place it runs uncounted (see `HandlerLimit`).
    let permit = conn.config.handler_limit.try_take();
    let conn = conn.clone();
    tokio::spawn(tracked(conn.clone(), wake, async move {
        let work = async move {
            match work {
                Work::Single(f, meter) => {
                    let outcome = AssertUnwindSafe(f).catch_unwind().await;
                    if let Ok(result) = &outcome {
                        meter.record(result);
                    }
                    outcome.map(single_result)
                }
                Work::Other(f) => AssertUnwindSafe(f).catch_unwind().await,
            }
        };
        // Cancelled when the connection closes: nobody is left to answer.
        let reply = match conn.until_closed(kept, work).await {
            Some(outcome) => reply_for(&op, outcome),
            None => Reply::Error(Bytes::from_static(b"connection closed")),
        };
        drop(permit);
        let mut answer = Some((reply, charge));
        conn.send(|core| {
            if let Some((reply, charge)) = answer.take() {
                core.respond(id, stream, reply, charge);
            }
        })
        .await;
    }));
}

fn single_result(r: Result<Bytes, HandlerError>) -> Result<Option<Bytes>, HandlerError> {
    r.map(Some)
}

/// [`poll_once`] for a request handler.
fn poll_work(work: &mut Work) -> Poll<HandlerOutcome> {
    match work {
        Work::Single(f, _) => poll_once(f).map(|r| r.map(single_result)),
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

/// Concatenates a request stream for a buffer handler, within the payload
/// limit, keeping every part's bytes charged in `kept`. When the byte
/// budget is used up it gives up with a retry result rather than wait:
/// reading has paused, so the rest of the stream could never arrive.
async fn collect(
    mut rx: PartRx,
    conn: &Connection,
    kept: &mut ChargeGuard,
) -> Result<Bytes, HandlerError> {
    let limit = conn.config.max_payload as usize;
    let mut whole = BytesMut::new();
    loop {
        match std::future::poll_fn(|cx| rx.poll_recv(cx)).await {
            Some(Part::Data(part, guard)) => {
                let over = guard.take().is_some_and(|credit| kept.keep(credit, false));
                if whole.len() + part.len() > limit {
                    return Err(HandlerError::new(format!(
                        "streamed request exceeds the {limit}-byte payload limit"
                    )));
                }
                if over {
                    return Err(HandlerError::retry(
                        conn.config.rate_limit_wait.1,
                        "streamed request over the connection's byte budget",
                    ));
                }
                whole.extend_from_slice(&part);
            }
            Some(Part::End) => return Ok(whole.freeze()),
            Some(Part::Failed(e)) => return Err(e.into()),
            None => return Err(conn.closed_error().into()),
        }
    }
}
