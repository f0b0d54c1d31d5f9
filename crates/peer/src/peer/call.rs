//! The future of [`Peer::request`], written by hand for its common case.
//!
//! Most calls are one attempt on a connection with room in its write
//! queue and no deadline: queue the request, wait for the answer. As an
//! `async fn` that case carried the states of every other (the retry loop,
//! the wait for room, the timer), 500-odd bytes moved on every call and a
//! state machine stepped through three layers. Here it is two states and
//! the payload; anything else (a full queue, a deadline, a retry result)
//! continues in the general path, boxed, which only those calls pay for.

use std::{
    pin::Pin,
    sync::atomic::AtomicBool,
    task::{Context, Poll},
};

use bytes::Bytes;
use gotalk_proto::RequestId;

use super::{Peer, RequestOptions};
use crate::{Error, RemoteError, answers::AnswerKey, core::Outcome};

/// The general path, boxed.
type Other<'a> = Pin<Box<dyn Future<Output = Result<Bytes, Error>> + Send + 'a>>;

enum State<'a> {
    /// Not sent yet.
    Start,
    /// Sent; the answer will be in the slot `key`.
    Waiting { id: RequestId, key: AnswerKey },
    /// A deadline, a full queue or a retry result.
    Other(Other<'a>),
    /// The result was returned.
    Done,
}

/// See the module docs.
pub(super) struct Call<'p, 'o> {
    peer: &'p Peer,
    op: &'o str,
    payload: Bytes,
    /// The general path borrows the name and owns a handle (the caller's
    /// borrows of the peer and of the name are unrelated).
    state: State<'o>,
}

impl<'p, 'o> Call<'p, 'o> {
    pub(super) fn new(peer: &'p Peer, op: &'o str, payload: Bytes) -> Self {
        Self {
            peer,
            op,
            payload,
            state: State::Start,
        }
    }

    /// The general path from the start.
    fn other(&self) -> Other<'o> {
        let (peer, op, payload) = (self.peer.clone(), self.op, self.payload.clone());
        Box::pin(async move {
            let may_have_run = AtomicBool::new(false);
            match peer.conn.config.request_timeout {
                Some(_) => {
                    peer.request_tracked(op, payload, RequestOptions::default(), &may_have_run)
                        .await
                }
                None => {
                    peer.request_attempts(op, &payload, None, &may_have_run, None)
                        .await
                }
            }
        })
    }

    /// The general path after a first attempt refused with a retry result.
    fn after_refusal(&self, wait_ms: u32, text: Bytes) -> Other<'o> {
        let (peer, op, payload) = (self.peer.clone(), self.op, self.payload.clone());
        Box::pin(async move {
            let may_have_run = AtomicBool::new(false);
            peer.request_attempts(op, &payload, None, &may_have_run, Some((wait_ms, text)))
                .await
        })
    }
}

impl Future for Call<'_, '_> {
    type Output = Result<Bytes, Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        // No field is pinned: the boxed path pins itself.
        let this = self.get_mut();
        loop {
            match &mut this.state {
                State::Start => {
                    if this.peer.conn.config.request_timeout.is_some() {
                        this.state = State::Other(this.other());
                        continue;
                    }
                    // Sent with this poll's waker in the answer's slot: this
                    // poll returns `Pending` without looking at the slot, as
                    // whoever fills it from now on wakes that waker (one
                    // lock per request fewer).
                    match this
                        .peer
                        .conn
                        .try_send_request(this.op, &this.payload, cx.waker())
                    {
                        Some(Ok((id, key))) => {
                            this.state = State::Waiting { id, key };
                            return Poll::Pending;
                        }
                        Some(Err(e)) => {
                            this.state = State::Done;
                            return Poll::Ready(Err(e));
                        }
                        // No room: the general path waits for it.
                        None => this.state = State::Other(this.other()),
                    }
                }
                State::Waiting { key, .. } => {
                    let answer = match this.peer.conn.poll_answer(*key, cx) {
                        Poll::Ready(answer) => answer,
                        Poll::Pending => return Poll::Pending,
                    };
                    // The core forgot the request when it answered, and
                    // taking the answer freed the slot: nothing to cancel.
                    this.state = State::Done;
                    match answer {
                        Ok(Outcome::Value(bytes)) => return Poll::Ready(Ok(bytes)),
                        Ok(Outcome::Error(payload)) => {
                            return Poll::Ready(Err(Error::Remote(RemoteError::new(payload))));
                        }
                        Ok(Outcome::Retry { wait_ms, payload }) => {
                            this.state = State::Other(this.after_refusal(wait_ms, payload));
                        }
                        Err(e) => return Poll::Ready(Err(e)),
                    }
                }
                State::Other(other) => {
                    let result = std::task::ready!(other.as_mut().poll(cx));
                    this.state = State::Done;
                    return Poll::Ready(result);
                }
                State::Done => panic!("`Peer::request` polled after it completed"),
            }
        }
    }
}

impl Drop for Call<'_, '_> {
    fn drop(&mut self) {
        // Given up while waiting: the core forgets the request and the
        // slot is freed (with the answer, if it came meanwhile).
        if let State::Waiting { id, key } = self.state {
            self.peer.conn.cancel_request(id, key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Config, Handlers};

    /// The point of the hand-written future: the common case is small (the
    /// `async fn` it replaced was 568 bytes; this is the two references,
    /// the payload and the state).
    #[tokio::test]
    async fn a_call_is_small() {
        let (client, _server) = Peer::pair(Handlers::new(), Handlers::new(), Config::default())
            .await
            .unwrap();
        let call = client.request("op", Bytes::new());
        assert!(
            std::mem::size_of_val(&call) <= 96,
            "{} bytes",
            std::mem::size_of_val(&call)
        );
    }
}
