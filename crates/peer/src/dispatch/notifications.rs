//! Running notification handlers.

use std::{panic::AssertUnwindSafe, sync::Arc, task::Poll};

use bytes::Bytes;
use futures::FutureExt;
use gotalk_proto::Text;

use super::{Dispatch, Op, panic_message, poll_once};
use crate::{Context, connection::Connection, core::Charge};

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
    let handler = conn.handlers.notification_handler(name.as_str());
    let (Some(handler), Some(peer)) = (handler, conn.peer()) else {
        tracing::trace!(name = name.as_str(), "no handler for notification; dropped");
        d.ops.push(Op::NotificationDone(charge));
        return;
    };
    let ctx = Context::new(peer, name.clone(), None);
    let mut fut = handler(ctx, payload);
    if conn.config.inline_handlers {
        match poll_once(&mut fut) {
            Poll::Pending => {}
            Poll::Ready(outcome) => {
                if let Err(panic) = outcome {
                    panicked(&name, &panic);
                }
                d.ops.push(Op::NotificationDone(charge));
                return;
            }
        }
    }
    let conn = conn.clone();
    tokio::spawn(async move {
        if let Err(panic) = AssertUnwindSafe(fut).catch_unwind().await {
            panicked(&name, &panic);
        }
        conn.command(|core| core.notification_done(charge));
    });
}

fn panicked(name: &Text<Bytes>, panic: &Box<dyn std::any::Any + Send>) {
    tracing::error!(name = name.as_str(), panic = %panic_message(panic), "notification handler panicked");
}
