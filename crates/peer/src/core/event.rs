//! What the core tells its runtime, and what the runtime gives back.

use std::time::Duration;

use bytes::Bytes;
use gotalk_proto::{RequestId, Text};

use super::{Charge, Tokens, tables::StreamRef};
use crate::{CloseReason, Error};

/// Something the runtime must act on, from [`Core::poll_event`](super::Core::poll_event).
pub enum Event<T: Tokens> {
    /// Run the handler for the peer's single request; answer with
    /// [`Core::respond`](super::Core::respond) (or
    /// [`Core::unknown_operation`](super::Core::unknown_operation)), giving
    /// `charge` back.
    Request {
        /// The request's ID.
        id: RequestId,
        /// The operation.
        op: Text<Bytes>,
        /// The payload: a slice of the read buffer.
        payload: Bytes,
        /// What the payload holds of the byte budget.
        charge: Charge,
    },
    /// Run the handler for the peer's stream request: attach its part
    /// channel with [`Core::open_stream`](super::Core::open_stream), then
    /// answer with `respond(id, true, ..)`.
    StreamRequest {
        /// The request's ID.
        id: RequestId,
        /// The operation.
        op: Text<Bytes>,
        /// The first part, unless it was empty.
        first: Option<Delivery>,
    },
    /// A part of the peer's stream request, for its handler.
    RequestPart {
        /// The handler's part channel.
        parts: T::Parts,
        /// The part.
        part: Delivery,
    },
    /// The peer ended its stream request.
    RequestEnd {
        /// The handler's part channel, to close.
        parts: T::Parts,
    },
    /// The answer to one of our buffer requests (the request is over).
    Answer {
        /// Its caller.
        caller: T::Caller,
        /// The result, or why there is none.
        answer: Result<Outcome, Error>,
    },
    /// A result part for one of our stream requests.
    ResultPart {
        /// Its reader.
        reader: T::Reader,
        /// The part.
        item: StreamItem,
    },
    /// Run the handler for a notification, then call
    /// [`Core::notification_done`](super::Core::notification_done) with `charge`.
    Notification {
        /// The notification's name.
        name: Text<Bytes>,
        /// Its payload.
        payload: Bytes,
        /// What the payload holds of the byte budget.
        charge: Charge,
    },
    /// The peer sent a heartbeat.
    Heartbeat {
        /// Its load, 0 idle to 65535 overloaded.
        load: u16,
        /// Its clock, seconds since the Unix epoch.
        time: u32,
    },
    /// Time to send a heartbeat: call [`Core::heartbeat`](super::Core::heartbeat).
    HeartbeatDue,
    /// The connection closed while the handler of this stream request was
    /// reading it: drop the channel, so the handler sees the close.
    StreamAborted {
        /// The handler's part channel.
        parts: T::Parts,
    },
    /// The connection closed: the last event. Flush what
    /// [`Core::poll_transmit`](super::Core::poll_transmit) still has, then
    /// shut the transport down.
    Closed(CloseReason),
}

impl<T: Tokens> std::fmt::Debug for Event<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Request {
                id, op, payload, ..
            } => {
                write!(f, "Request({id}, {op}, {} bytes)", payload.len())
            }
            Self::StreamRequest { id, op, .. } => write!(f, "StreamRequest({id}, {op})"),
            Self::RequestPart { part, .. } => {
                write!(f, "RequestPart({} bytes)", part.payload.len())
            }
            Self::RequestEnd { .. } => f.write_str("RequestEnd"),
            Self::Answer { answer, .. } => write!(f, "Answer({answer:?})"),
            Self::ResultPart { item, .. } => write!(f, "ResultPart({item:?})"),
            Self::Notification { name, .. } => write!(f, "Notification({name})"),
            Self::Heartbeat { load, time } => write!(f, "Heartbeat({load}, {time})"),
            Self::HeartbeatDue => f.write_str("HeartbeatDue"),
            Self::StreamAborted { .. } => f.write_str("StreamAborted"),
            Self::Closed(reason) => write!(f, "Closed({reason})"),
        }
    }
}

/// How the peer answered a buffer request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// A result (single, or a streamed one collected).
    Value(Bytes),
    /// An error result.
    Error(Bytes),
    /// A retry result: try again after `wait_ms` (see [`RetryPolicy`](super::RetryPolicy)).
    Retry {
        /// The wait asked for, in milliseconds.
        wait_ms: u32,
        /// Its text.
        payload: Bytes,
    },
}

/// One item of a stream delivered to a consumer.
#[derive(Debug)]
pub enum StreamItem {
    /// A part.
    Data(Delivery),
    /// The stream ended normally.
    End,
    /// The stream ended with an error.
    Failed(Error),
}

/// A payload handed to a stream consumer, with the credit to give back
/// ([`Core::part_taken`](super::Core::part_taken)) once it is taken.
#[derive(Debug)]
pub struct Delivery {
    /// The payload: a slice of the read buffer.
    pub payload: Bytes,
    /// What it holds of the budget and of its stream's part limit.
    pub credit: Credit,
}

/// What a delivered part holds: bytes of the budget, and one place in its
/// stream's part limit.
#[derive(Debug)]
#[must_use = "a credit must be given back to the core"]
pub struct Credit {
    pub(crate) charge: Charge,
    pub(crate) stream: StreamRef,
}

/// How a handler answered the peer's request (see [`Core::respond`](super::Core::respond)).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reply {
    /// A single result (`R`).
    Value(Bytes),
    /// The end of a streamed result (empty `S`).
    EndOfStream,
    /// An error result (`E`).
    Error(Bytes),
    /// A retry result (`e`), or an error result for a peer that takes none.
    Retry {
        /// How long the requester should wait.
        wait: Duration,
        /// Its text.
        payload: Bytes,
    },
}

impl Reply {
    /// The error result for a handler that panicked.
    pub fn panicked(op: &str) -> Self {
        Self::Error(Bytes::from(format!(
            "internal error: handler for \"{op}\" panicked"
        )))
    }
}
