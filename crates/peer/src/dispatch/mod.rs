//! What the runtime does with each [`Event`] of the core: run handlers
//! (polled once on the connection's task, spawned when they wait), hand
//! answers to callers and parts to stream consumers.
//!
//! Dispatching never holds the core's lock, since handlers run here and may
//! call the connection. What it has to tell the core back (a reply, a credit
//! for a part nobody will take, a finished notification) is collected as
//! [`Op`]s, which the driver applies under its next lock, before it handles
//! the next message: so a request answered at once frees its slot before the
//! next one is admitted, as if it had been answered on the spot.

mod notifications;
mod requests;
mod runnable;

pub(crate) use runnable::Runnable;

use std::{future::Future, panic::AssertUnwindSafe, pin::Pin, sync::Arc, task::Poll};

use bytes::Bytes;
use gotalk_proto::{RequestId, Text};

use crate::{
    CloseReason,
    connection::{Connection, CreditGuard, KEEP_INLINE, Part, PartTx, Runtime},
    core::{Charge, Core, Credit, Delivery, Event, Reply, StreamItem},
    handlers::InlineMeters,
};

/// Something to tell the core, collected while dispatching.
pub(crate) enum Op {
    Respond {
        id: RequestId,
        stream: bool,
        reply: Reply,
        charge: Charge,
    },
    UnknownOperation {
        id: RequestId,
        stream: bool,
        op: Text<Bytes>,
        charge: Charge,
    },
    OpenStream {
        id: RequestId,
        parts: PartTx,
    },
    RefuseBusy {
        id: RequestId,
        stream: bool,
        charge: Charge,
    },
    PartTaken(Credit),
    NotificationDone(Charge),
    Heartbeat {
        load: u16,
        time: u32,
    },
}

/// Dispatches events (see the module docs).
#[derive(Default)]
pub(crate) struct Dispatch {
    ops: Vec<Op>,
    /// The metered calls of this round.
    meters: InlineMeters,
    /// The slot of the last buffer handler call that finished inline, for
    /// the next one (see `handler_pool`).
    spare: crate::handler_pool::Spare,
}

impl Dispatch {
    /// The input read so far is all dispatched: the round's metered calls
    /// that completed inline are recorded.
    #[inline]
    pub(crate) fn end_round(&mut self) {
        self.meters.end_round();
    }

    /// True while ops wait to be applied.
    pub(crate) fn has_ops(&self) -> bool {
        !self.ops.is_empty()
    }

    /// Tells the core what dispatching found (under the driver's lock).
    pub(crate) fn apply(&mut self, core: &mut Core<Runtime>) {
        for op in self.ops.drain(..) {
            match op {
                Op::Respond {
                    id,
                    stream,
                    reply,
                    charge,
                } => core.respond(id, stream, reply, charge),
                Op::UnknownOperation {
                    id,
                    stream,
                    op,
                    charge,
                } => core.unknown_operation(id, stream, op.as_str(), charge),
                Op::OpenStream { id, parts } => core.open_stream(id, parts),
                Op::RefuseBusy { id, stream, charge } => core.refuse_busy(id, stream, charge),
                Op::PartTaken(credit) => core.part_taken(credit),
                Op::NotificationDone(charge) => core.notification_done(charge),
                Op::Heartbeat { load, time } => {
                    // Closed: no heartbeat to send.
                    let _ = core.heartbeat(load, time);
                }
            }
        }
    }

    /// Acts on one event; returns the close reason for [`Event::Closed`].
    pub(crate) fn event(
        &mut self,
        conn: &Arc<Connection>,
        event: Event<Runtime>,
    ) -> Option<CloseReason> {
        match event {
            Event::Request {
                id,
                op,
                payload,
                charge,
            } => requests::single(self, conn, id, op, payload, charge),
            Event::StreamRequest { id, op, first } => requests::stream(self, conn, id, op, first),
            Event::RequestPart { parts, part } => self.deliver(conn, &parts, part),
            Event::RequestEnd { parts } => {
                let _ = parts.send(Part::End);
            }
            // The driver fills the answers' slots as it takes the events
            // (`Core::take_events_answering`); any other way, one lock each.
            Event::Answer { caller, answer } => conn.deliver([(caller, answer)]),
            Event::ResultPart { reader, item } => match item {
                StreamItem::Data(part) => self.deliver(conn, &reader, part),
                StreamItem::End => {
                    let _ = reader.send(Part::End);
                }
                StreamItem::Failed(e) => {
                    let _ = reader.send(Part::Failed(e));
                }
            },
            Event::Notification {
                name,
                payload,
                charge,
            } => notifications::run(self, conn, name, payload, charge),
            Event::Heartbeat { load, time } => {
                tracing::trace!(load, time, "heartbeat received");
                conn.remote_load.record(load);
                if let Some(on_heartbeat) = &conn.config.on_heartbeat {
                    on_heartbeat(load, time);
                }
            }
            Event::HeartbeatDue => {
                let load = match &conn.config.heartbeat_load {
                    Some(load) => load(),
                    None => measured_load(conn),
                };
                let time = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_secs() as u32);
                self.ops.push(Op::Heartbeat { load, time });
            }
            // Dropping the channel ends the handler's part stream; it sees
            // the close reason because no `End` was sent.
            Event::StreamAborted { parts } => drop(parts),
            Event::Closed(reason) => {
                // Handlers still running are cancelled: nobody is left to
                // answer, and they must not hold memory for a peer gone.
                conn.stop_handlers();
                return Some(reason);
            }
        }
        None
    }

    /// Hands a part to a stream consumer; the credit comes back when it is
    /// taken. A consumer that went away just loses the part.
    fn deliver(&mut self, conn: &Arc<Connection>, to: &PartTx, part: Delivery) {
        let guard = CreditGuard::new(conn.clone(), part.credit);
        if let Err(lost) = to.send(Part::Data(part.payload, guard))
            && let Part::Data(_, guard) = lost.0
            && let Some(credit) = guard.take()
        {
            self.ops.push(Op::PartTaken(credit));
        }
    }
}

/// The load figure of [`crate::load::measured`] for this connection. Takes
/// the core's lock briefly: dispatching does not hold it, and this runs
/// once per heartbeat interval.
fn measured_load(conn: &Connection) -> u16 {
    let inbound = conn.lock().core.stats().inbound;
    let limit = &conn.config.handler_limit;
    crate::load::measured(
        inbound,
        conn.config.max_inbound_requests,
        limit.running(),
        limit.max(),
    )
}

/// Runs `poll` (a handler's first poll) where
/// [`Context::keep_running_after_close`](crate::Context::keep_running_after_close)
/// can be called, and says whether it was.
/// A thread-local flag rather than a task-local scope: this runs for every
/// request, and the first poll cannot be interleaved with another one.
pub(crate) fn poll_inline<T>(poll: impl FnOnce() -> Poll<T>) -> (Poll<T>, bool) {
    KEEP_INLINE.set(Some(false));
    // `poll` catches panics, so the flag is always reset.
    let poll = poll();
    (poll, KEEP_INLINE.replace(None) == Some(true))
}

/// Polls a handler's future once, catching a panic. The waker is a no-op: a
/// future still pending is spawned, and its task's first poll registers the
/// task's own waker (futures must use the waker of their latest poll).
pub(crate) fn poll_once<F: Future + Unpin>(fut: &mut F) -> Poll<std::thread::Result<F::Output>> {
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    match std::panic::catch_unwind(AssertUnwindSafe(|| Pin::new(&mut *fut).poll(&mut cx))) {
        Ok(Poll::Pending) => Poll::Pending,
        Ok(Poll::Ready(out)) => Poll::Ready(Ok(out)),
        Err(panic) => Poll::Ready(Err(panic)),
    }
}

pub(crate) fn panic_message(panic: &Box<dyn std::any::Any + Send>) -> String {
    if let Some(s) = panic.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = panic.downcast_ref::<String>() {
        s.clone()
    } else {
        "non-string panic payload".to_owned()
    }
}
