//! Running notification handlers.

use std::{panic::AssertUnwindSafe, sync::Arc, task::Poll};

use bytes::Bytes;
use futures::FutureExt;
use gotalk_proto::Text;

use super::{Dispatch, Op, panic_message, poll_inline, poll_once};
use crate::{Context, HandlerError, connection::Connection, core::Charge};

/// Runs the handler for a notification, polled once here first like request
/// handlers; its slot and `charge` are given back when it ends. A
/// notification nobody handles is dropped.
pub(super) fn run(
    d: &mut Dispatch,
    conn: &Arc<Connection>,
    name: Text<Bytes>,
    payload: Bytes,
    charge: Charge,
) {
    crate::runtime_metrics::notification();
    let handler = conn.handlers.notification_handler(name.as_str());
    let (Some(handler), Some(peer)) = (handler, conn.peer()) else {
        tracing::trace!(name = name.as_str(), "no handler for notification; dropped");
        d.ops.push(Op::NotificationDone(charge));
        return;
    };
    let ctx = Context::new(peer, name.clone(), None);
    let mut fut = handler.call(ctx, payload);
    let limit = &conn.config.handler_limit;
    let mut started = false;
    let mut kept = false;
    // Over the process-wide cap on running handlers the handler waits for
    // a place, not started (its slot here stays taken meanwhile, so
    // reading pauses once every slot waits).
    if conn.config.inline_handlers && !limit.is_reached() {
        let (poll, keep) = poll_inline(|| poll_once(&mut fut));
        if let Poll::Ready(outcome) = poll {
            ended(&name, outcome);
            d.ops.push(Op::NotificationDone(charge));
            return;
        }
        started = true;
        kept = keep;
    }
    let permit = limit.try_take();
    let conn = conn.clone();
    tokio::spawn(async move {
        let permit = match permit {
            Some(permit) => Some(permit),
            // Started already: it runs uncounted (see `HandlerLimit`).
            None if started => None,
            None => match conn
                .until_closed(false, conn.config.handler_limit.take())
                .await
            {
                Some(permit) => Some(permit),
                None => {
                    conn.command(|core| core.notification_done(charge));
                    return;
                }
            },
        };
        // Cancelled when the connection closes.
        if let Some(outcome) = conn
            .until_closed(kept, AssertUnwindSafe(fut).catch_unwind())
            .await
        {
            ended(&name, outcome);
        }
        drop(permit);
        conn.command(|core| core.notification_done(charge));
    });
}

/// Logs what a notification's handler came to when it was not just done: a
/// panic (an error), or a layer's refusal (at `DEBUG`: a peer can send any
/// number of notifications it may not send).
fn ended(name: &Text<Bytes>, outcome: std::thread::Result<Result<(), HandlerError>>) {
    match outcome {
        Ok(Ok(())) => {}
        Ok(Err(refused)) => {
            tracing::debug!(name = name.as_str(), reason = %refused, "notification refused by a layer; dropped");
        }
        Err(panic) => {
            tracing::error!(name = name.as_str(), panic = %panic_message(&panic), "notification handler panicked");
        }
    }
}
