//! Streaming requests and results.

use std::{
    pin::Pin,
    sync::Arc,
    task::{Context as TaskContext, Poll},
};

use bytes::{Bytes, BytesMut};
use futures::Stream;
use gotalk_proto::RequestId;

use crate::{
    Error, Peer,
    connection::{ChargeGuard, Connection, Part, PartRx},
};

/// Reads one part off a part channel: data, a clean end (`None`), or the
/// reason the stream broke off.
fn poll_part(
    rx: &mut PartRx,
    conn: &Connection,
    cx: &mut TaskContext<'_>,
) -> Poll<Option<Result<Bytes, Error>>> {
    match rx.poll_recv(cx) {
        Poll::Pending => Poll::Pending,
        // Dropping the credit gives the part back to the connection's budget.
        Poll::Ready(Some(Part::Data(bytes, _credit))) => Poll::Ready(Some(Ok(bytes))),
        Poll::Ready(Some(Part::End)) => Poll::Ready(None),
        Poll::Ready(Some(Part::Failed(e))) => Poll::Ready(Some(Err(e))),
        // The sender went away without an end: the connection closed.
        Poll::Ready(None) => Poll::Ready(Some(Err(conn.closed_error()))),
    }
}

/// Sends the parts of a stream request (see
/// [`Peer::stream_request`](crate::Peer::stream_request)).
///
/// Dropping the writer without calling [`end`](Self::end) still ends the
/// stream on the wire, so the responder is never left waiting.
#[derive(Debug)]
pub struct StreamWriter {
    peer: Peer,
    id: RequestId,
    ended: bool,
}

impl StreamWriter {
    pub(crate) fn new(peer: Peer, id: RequestId) -> Self {
        Self {
            peer,
            id,
            ended: false,
        }
    }

    /// The stream's request ID.
    pub fn id(&self) -> RequestId {
        self.id
    }

    /// Sends one part. Empty parts are skipped: on the wire an empty part
    /// means end of stream, which only [`end`](Self::end) sends.
    pub async fn send(&mut self, part: impl Into<Bytes>) -> Result<(), Error> {
        let payload = part.into();
        if payload.is_empty() {
            return Ok(());
        }
        let id = self.id;
        let mut part = Some(payload);
        self.peer
            .connection()
            .send(|core| core.send_request_part(id, part.take().unwrap_or_default()))
            .await
    }

    /// Ends the request stream.
    pub async fn end(mut self) -> Result<(), Error> {
        self.ended = true;
        let id = self.id;
        self.peer
            .connection()
            .send(|core| core.send_request_part(id, Bytes::new()))
            .await
    }
}

impl Drop for StreamWriter {
    fn drop(&mut self) {
        if !self.ended {
            let id = self.id;
            // Over the queue's bound if need be: an end is a few bytes. On a
            // closed connection there is nothing to end.
            let _ = self
                .peer
                .connection()
                .command(|core| core.send_request_part(id, Bytes::new()));
        }
    }
}

/// The result of a stream request: its parts, as a `futures::Stream`.
///
/// A single result (`R`) arrives as one item; a streaming result as one
/// item per part, ending at the empty part. An error result ends the stream
/// with `Err(Error::Remote)`, a retry result with `Err(Error::RetryExhausted)`
/// (stream requests are not retried automatically: the request parts are
/// gone), a lost connection with `Err(Error::Closed)`.
/// Dropping it cancels the request: later parts are dropped.
pub struct ResultStream {
    peer: Peer,
    id: RequestId,
    rx: PartRx,
    done: bool,
}

impl ResultStream {
    pub(crate) fn new(peer: Peer, id: RequestId, rx: PartRx) -> Self {
        Self {
            peer,
            id,
            rx,
            done: false,
        }
    }

    /// Concatenates every part, failing if the total exceeds `limit` bytes.
    pub async fn collect_bytes(mut self, limit: usize) -> Result<Bytes, Error> {
        use futures::StreamExt;
        let mut all = BytesMut::new();
        while let Some(part) = self.next().await {
            let part = part?;
            if all.len() + part.len() > limit {
                return Err(Error::ResultTooLarge {
                    limit: limit.min(u32::MAX as usize) as u32,
                });
            }
            all.extend_from_slice(&part);
        }
        Ok(all.freeze())
    }
}

impl Stream for ResultStream {
    type Item = Result<Bytes, Error>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<Option<Self::Item>> {
        if self.done {
            return Poll::Ready(None);
        }
        let this = &mut *self;
        let item = poll_part(&mut this.rx, this.peer.connection(), cx);
        if matches!(item, Poll::Ready(None | Some(Err(_)))) {
            this.done = true;
        }
        item
    }
}

impl Drop for ResultStream {
    fn drop(&mut self) {
        if !self.done {
            let id = self.id;
            self.peer.connection().command(|core| core.cancel(id));
        }
    }
}

impl std::fmt::Debug for ResultStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResultStream")
            .field("id", &self.id)
            .field("done", &self.done)
            .finish()
    }
}

enum PartsInner {
    Once(Option<Bytes>),
    /// Parts from elsewhere than a connection: an HTTP request body.
    #[cfg_attr(not(feature = "http"), allow(dead_code))]
    Stream(futures::stream::BoxStream<'static, Result<Bytes, Error>>),
    /// `held` keeps the bytes of the part the handler took last charged to
    /// the byte budget until it takes the next (or the stream ends, or the
    /// handler drops it): a handler holds its part while it works on it.
    Channel {
        rx: PartRx,
        held: ChargeGuard,
    },
}

/// The parts of a request, as a stream handler receives them.
///
/// Ends (`None`) when the requester ends its stream; yields `Err` if the
/// connection closes first. A single request arrives as one part.
pub struct RequestParts {
    inner: PartsInner,
}

impl RequestParts {
    pub(crate) fn once(payload: Bytes) -> Self {
        Self {
            inner: PartsInner::Once(Some(payload).filter(|p| !p.is_empty())),
        }
    }

    /// Parts taken from `parts` (an HTTP request body); empty items are
    /// skipped, as on a connection.
    #[cfg_attr(not(feature = "http"), allow(dead_code))]
    pub(crate) fn from_stream(
        parts: impl Stream<Item = Result<Bytes, Error>> + Send + 'static,
    ) -> Self {
        use futures::{StreamExt, future::ready};
        let parts = parts.filter(|part| ready(!matches!(part, Ok(p) if p.is_empty())));
        Self {
            inner: PartsInner::Stream(parts.boxed()),
        }
    }

    pub(crate) fn channel(rx: PartRx, conn: Arc<Connection>) -> Self {
        Self {
            inner: PartsInner::Channel {
                rx,
                held: ChargeGuard::new(conn),
            },
        }
    }
}

impl Stream for RequestParts {
    type Item = Result<Bytes, Error>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<Option<Self::Item>> {
        match &mut self.inner {
            PartsInner::Once(part) => Poll::Ready(part.take().map(Ok)),
            PartsInner::Stream(parts) => parts.as_mut().poll_next(cx),
            PartsInner::Channel { rx, held } => match rx.poll_recv(cx) {
                Poll::Pending => Poll::Pending,
                Poll::Ready(Some(Part::Data(bytes, guard))) => {
                    if let Some(credit) = guard.take() {
                        // Over the budget reading pauses until the handler
                        // takes its next part (see the limits in docs/peer.md).
                        let _ = held.keep(credit, true);
                    }
                    Poll::Ready(Some(Ok(bytes)))
                }
                Poll::Ready(Some(Part::End)) => {
                    held.release();
                    Poll::Ready(None)
                }
                Poll::Ready(Some(Part::Failed(e))) => {
                    held.release();
                    Poll::Ready(Some(Err(e)))
                }
                Poll::Ready(None) => {
                    held.release();
                    Poll::Ready(Some(Err(held.conn().closed_error())))
                }
            },
        }
    }
}

impl std::fmt::Debug for RequestParts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RequestParts")
    }
}

/// Sends result parts from a stream handler.
///
/// The stream is ended for the handler when it returns `Ok`; returning `Err`
/// sends an error result after whatever parts were sent.
#[derive(Debug)]
pub struct ResultSender {
    inner: SenderInner,
}

#[derive(Debug)]
enum SenderInner {
    /// Result parts of a request on a connection.
    Connection {
        conn: Arc<Connection>,
        id: RequestId,
    },
    /// Result parts of a call over HTTP: the response body's channel. It
    /// holds one part, so a handler runs at most one part ahead of the
    /// client.
    #[cfg_attr(not(feature = "http"), allow(dead_code))]
    Channel(tokio::sync::mpsc::Sender<Bytes>),
}

impl ResultSender {
    pub(crate) fn new(conn: Arc<Connection>, id: RequestId) -> Self {
        Self {
            inner: SenderInner::Connection { conn, id },
        }
    }

    /// A sender whose parts go to `tx` (an HTTP response body).
    #[cfg_attr(not(feature = "http"), allow(dead_code))]
    pub(crate) fn channel(tx: tokio::sync::mpsc::Sender<Bytes>) -> Self {
        Self {
            inner: SenderInner::Channel(tx),
        }
    }

    /// Sends one result part. Empty parts are skipped (an empty part would
    /// end the stream early).
    ///
    /// Over HTTP a part is sent when the response body has taken the one
    /// before; a client that went away fails it with
    /// `Error::Closed(CloseReason::PeerClosed)`.
    pub async fn send(&mut self, part: impl Into<Bytes>) -> Result<(), Error> {
        let payload = part.into();
        if payload.is_empty() {
            return Ok(());
        }
        match &self.inner {
            SenderInner::Connection { conn, id } => {
                let id = *id;
                let mut part = Some(payload);
                conn.send(|core| core.send_result_part(id, part.take().unwrap_or_default()))
                    .await
            }
            SenderInner::Channel(tx) => tx
                .send(payload)
                .await
                .map_err(|_| Error::Closed(crate::CloseReason::PeerClosed)),
        }
    }
}
