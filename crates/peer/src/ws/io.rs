//! [`WsIo`]: a gotalk byte stream over WebSocket messages.
//!
//! The connection driver reads and writes a plain byte stream; this adapter
//! maps it onto WebSocket messages the way the original implementations do
//! (see the crate's `docs/websocket.md`):
//!
//! - **Writing**: the outgoing bytes are our own, so they are trusted and
//!   parsed with [`gotalk_proto::parse_header`] only to find the cuts. The
//!   two-byte version is one binary message, every header is one binary
//!   message and every non-empty payload is the next binary message. After a
//!   `f` ProtocolError header the adapter sends a Close frame with code
//!   `4000 + N` (what gotalk.js does) and accepts no more bytes.
//! - **Reading**: binary and text messages are concatenated into one byte
//!   stream, split anywhere. One rule makes frame-based senders (gotalk.js)
//!   safe: when a message holds exactly one header that declares a non-empty
//!   payload, the next message must be exactly that payload. Otherwise the
//!   read fails with [`io::ErrorKind::InvalidData`] carrying a
//!   [`WsError::PayloadSizeMismatch`], and the driver answers `f00000002`;
//!   bytes of the following frame are never taken as payload.

use std::{
    fmt, io,
    pin::Pin,
    task::{Context, Poll, ready},
};

use bytes::{Buf, Bytes, BytesMut};
use futures::{Sink, Stream};
use gotalk_proto::{
    DecodeLimits, Decoded, MAX_HEADER_LEN, Message, MessageType, ProtocolErrorCode, VERSION_BYTES,
    decode, parse_header,
};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Limits used to find frame boundaries; payload size is the driver's business.
const SCAN_LIMITS: DecodeLimits = DecodeLimits::with_max_payload(u32::MAX);

/// Bytes the adapter buffers on the write side, beyond one whole frame,
/// before it makes the writer wait for the WebSocket.
const WRITE_HIGH_WATER: usize = 64 * 1024;

/// WebSocket messages taken in one `poll_read` before yielding.
const MESSAGE_BUDGET: usize = 64;

/// Why the WebSocket transport could not carry the gotalk stream further.
///
/// Carried inside the [`io::Error`]s that [`WsIo`] returns; get it back with
/// [`WsError::from_io`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum WsError {
    /// A message that had to be exactly one payload has another length:
    /// the previous message was one header declaring `declared` bytes.
    /// (gotalk.js 1.x miscounts strings with NUL or astral characters.)
    PayloadSizeMismatch {
        /// The payload size the header declared.
        declared: u32,
        /// The length of the message that followed.
        received: usize,
    },
    /// A WebSocket message or frame was larger than the configured maximum.
    MessageTooLarge {
        /// The size the peer sent or announced.
        size: usize,
        /// The configured maximum.
        limit: usize,
    },
    /// The peer closed the WebSocket with close code `4000 + N`, the way
    /// gotalk.js reports gotalk protocol error `N`.
    ClosedWithProtocolError {
        /// The gotalk protocol error code.
        code: ProtocolErrorCode,
        /// The close reason text the peer sent.
        reason: String,
    },
    /// The peer broke the WebSocket protocol itself (e.g. bad framing).
    Protocol(String),
}

impl WsError {
    /// The [`WsError`] inside an [`io::Error`] returned by [`WsIo`], if any.
    pub fn from_io(err: &io::Error) -> Option<&WsError> {
        err.get_ref()?.downcast_ref::<WsError>()
    }

    /// The [`io::ErrorKind`] [`WsIo`] reports this error with.
    ///
    /// [`io::ErrorKind::InvalidData`] means a gotalk-level invalid message
    /// (the driver answers `f00000002`); the others mean the transport ended.
    pub fn kind(&self) -> io::ErrorKind {
        match self {
            Self::PayloadSizeMismatch { .. } | Self::MessageTooLarge { .. } => {
                io::ErrorKind::InvalidData
            }
            Self::ClosedWithProtocolError { .. } => io::ErrorKind::ConnectionAborted,
            Self::Protocol(_) => io::ErrorKind::ConnectionAborted,
        }
    }

    fn into_io(self) -> io::Error {
        io::Error::new(self.kind(), self)
    }
}

impl fmt::Display for WsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::PayloadSizeMismatch { declared, received } => write!(
                f,
                "websocket payload message has {received} bytes, its header declared {declared}"
            ),
            Self::MessageTooLarge { size, limit } => {
                write!(
                    f,
                    "websocket message of {size} bytes exceeds the limit of {limit}"
                )
            }
            Self::ClosedWithProtocolError { code, reason } => {
                write!(
                    f,
                    "peer closed the websocket with gotalk protocol error {code:?}"
                )?;
                if !reason.is_empty() {
                    write!(f, " ({reason})")?;
                }
                Ok(())
            }
            Self::Protocol(msg) => write!(f, "websocket protocol error: {msg}"),
        }
    }
}

impl std::error::Error for WsError {}

mod sealed {
    // Sealed-trait pattern: these items are public but unnameable outside
    // this crate, so only this module can implement `WsMessage`.
    #![allow(unreachable_pub)]

    use bytes::Bytes;
    use std::io;

    /// What a WebSocket message means to the adapter.
    #[derive(Debug)]
    pub enum Incoming {
        /// A binary or text message.
        Data(Bytes),
        /// Ping, pong or a raw frame: answered by the WebSocket library.
        Control,
        /// A close frame with its code and reason, if any.
        Close(Option<(u16, String)>),
    }

    /// How a transport error surfaces to the driver.
    #[derive(Debug)]
    pub enum TransportError {
        /// The connection is closed: report end of stream.
        Closed,
        /// Message or frame too large.
        TooLarge { size: usize, limit: usize },
        /// WebSocket protocol violation.
        Protocol(String),
        /// An I/O error of the underlying connection.
        Io(io::Error),
    }

    /// The mapping between one library's message type and the adapter.
    pub trait Sealed: Sized {
        /// The error type of the stream and sink that carry these messages.
        type Error;
        fn into_incoming(self) -> Incoming;
        fn binary(data: Bytes) -> Self;
        fn close(code: u16, reason: &'static str) -> Self;
        fn classify(err: Self::Error) -> TransportError;
    }
}

use sealed::{Incoming, Sealed, TransportError};

/// A WebSocket message type [`WsIo`] can run over: the one of
/// tokio-tungstenite (`tungstenite::Message`) and the one of axum's
/// `WebSocket` (`axum::extract::ws::Message`). Sealed.
pub trait WsMessage: Sealed + Send + 'static {}

mod tungstenite_impl {
    use super::*;
    use tokio_tungstenite::tungstenite::{
        self, Message,
        error::CapacityError,
        protocol::{CloseFrame, frame::coding::CloseCode},
    };

    impl WsMessage for Message {}

    impl Sealed for Message {
        type Error = tungstenite::Error;

        fn into_incoming(self) -> Incoming {
            match self {
                Message::Binary(b) => Incoming::Data(b),
                Message::Text(t) => Incoming::Data(t.into()),
                Message::Ping(_) | Message::Pong(_) | Message::Frame(_) => Incoming::Control,
                Message::Close(frame) => Incoming::Close(
                    frame.map(|f| (u16::from(f.code), f.reason.as_str().to_owned())),
                ),
            }
        }

        fn binary(data: Bytes) -> Self {
            Message::Binary(data)
        }

        fn close(code: u16, reason: &'static str) -> Self {
            Message::Close(Some(CloseFrame {
                code: CloseCode::from(code),
                reason: reason.into(),
            }))
        }

        fn classify(err: Self::Error) -> TransportError {
            classify_tungstenite(err)
        }
    }

    pub(super) fn classify_tungstenite(err: tungstenite::Error) -> TransportError {
        use tungstenite::Error as E;
        match err {
            E::ConnectionClosed | E::AlreadyClosed => TransportError::Closed,
            E::Io(e) => TransportError::Io(e),
            E::Capacity(CapacityError::MessageTooLong { size, max_size }) => {
                TransportError::TooLarge {
                    size,
                    limit: max_size,
                }
            }
            E::Capacity(other) => TransportError::Protocol(other.to_string()),
            other => TransportError::Protocol(other.to_string()),
        }
    }
}

mod axum_impl {
    use super::*;
    use axum::extract::ws::{CloseFrame, Message};
    use tokio_tungstenite::tungstenite;

    impl WsMessage for Message {}

    impl Sealed for Message {
        type Error = axum::Error;

        fn into_incoming(self) -> Incoming {
            match self {
                Message::Binary(b) => Incoming::Data(b),
                Message::Text(t) => Incoming::Data(t.into()),
                Message::Ping(_) | Message::Pong(_) => Incoming::Control,
                Message::Close(frame) => {
                    Incoming::Close(frame.map(|f| (f.code, f.reason.as_str().to_owned())))
                }
            }
        }

        fn binary(data: Bytes) -> Self {
            Message::Binary(data)
        }

        fn close(code: u16, reason: &'static str) -> Self {
            Message::Close(Some(CloseFrame {
                code,
                reason: reason.into(),
            }))
        }

        fn classify(err: Self::Error) -> TransportError {
            // axum wraps the tungstenite error of the same tokio-tungstenite.
            match err.into_inner().downcast::<tungstenite::Error>() {
                Ok(e) => super::tungstenite_impl::classify_tungstenite(*e),
                Err(other) => TransportError::Protocol(other.to_string()),
            }
        }
    }
}

/// Where the reader is in the incoming byte stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Scan {
    /// Inside the two-byte version; this many bytes are left.
    Version(usize),
    /// At or inside a header (partial header bytes are kept aside).
    Header,
    /// Inside a payload; this many bytes are left.
    Payload(usize),
    /// The stream no longer parses; the driver will say why.
    Opaque,
}

/// What the writer cuts next out of the outgoing bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Cut {
    Version,
    Header,
    Payload(usize),
}

/// A WebSocket connection as a tokio byte stream carrying gotalk frames.
///
/// `S` is a WebSocket message stream and sink: tokio-tungstenite's
/// `WebSocketStream` or axum's `WebSocket`. Give it to
/// [`Peer::handshake`](crate::Peer::handshake) like any other stream; the
/// WebSocket client and server of this module do that for you.
///
/// Ping and pong are answered by the WebSocket library underneath. The size
/// of one incoming message is bounded by that library's configuration
/// ([`WsConfig::max_message_size`](super::WsConfig::max_message_size) for the
/// server and client of this module).
pub struct WsIo<S> {
    inner: S,
    // read side
    rbuf: BytesMut,
    scan: Scan,
    partial: BytesMut,
    expect_payload: Option<u32>,
    read_error: Option<WsError>,
    /// An I/O error met after data was copied, reported by the next read.
    read_io_error: Option<io::Error>,
    read_eof: bool,
    // write side
    wbuf: BytesMut,
    cut: Cut,
    /// A message cut out of `wbuf` that the sink was not ready for.
    unsent: Option<Bytes>,
    /// Set once an outgoing `f` was seen: send Close(4000 + code) after it.
    close_code: Option<ProtocolErrorCode>,
    close_sent: bool,
}

impl<S> fmt::Debug for WsIo<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WsIo")
            .field("scan", &self.scan)
            .field("buffered_in", &self.rbuf.len())
            .field("buffered_out", &self.wbuf.len())
            .field("close_code", &self.close_code)
            .finish_non_exhaustive()
    }
}

impl<S> WsIo<S> {
    /// Wraps an open WebSocket whose gotalk handshake has not started.
    pub fn new(inner: S) -> Self {
        Self {
            inner,
            rbuf: BytesMut::new(),
            scan: Scan::Version(VERSION_BYTES.len()),
            partial: BytesMut::new(),
            expect_payload: None,
            read_error: None,
            read_io_error: None,
            read_eof: false,
            wbuf: BytesMut::new(),
            cut: Cut::Version,
            unsent: None,
            close_code: None,
            close_sent: false,
        }
    }

    /// The WebSocket underneath.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// Takes in one data message from the peer.
    fn on_data(&mut self, data: Bytes) -> Result<(), WsError> {
        if let Some(declared) = self.expect_payload.take() {
            if data.len() != declared as usize {
                return Err(WsError::PayloadSizeMismatch {
                    declared,
                    received: data.len(),
                });
            }
            self.rbuf.extend_from_slice(&data);
            return Ok(());
        }
        let at_boundary = self.scan == Scan::Header && self.partial.is_empty();
        let mut i = 0;
        // Each pass consumes at least one byte or ends the loop.
        while i < data.len() {
            match self.scan {
                Scan::Version(left) => {
                    let n = left.min(data.len() - i);
                    i += n;
                    self.scan = if n == left {
                        Scan::Header
                    } else {
                        Scan::Version(left - n)
                    };
                }
                Scan::Payload(left) => {
                    let n = left.min(data.len() - i);
                    i += n;
                    self.scan = if n == left {
                        Scan::Header
                    } else {
                        Scan::Payload(left - n)
                    };
                }
                Scan::Opaque => i = data.len(),
                Scan::Header => {
                    let had = self.partial.len();
                    let parsed = if had == 0 {
                        parse_header(&data[i..], &SCAN_LIMITS)
                    } else {
                        // A header is at most MAX_HEADER_LEN bytes: that many more
                        // bytes always decide it.
                        let take = (data.len() - i).min(MAX_HEADER_LEN);
                        self.partial.extend_from_slice(&data[i..i + take]);
                        parse_header(&self.partial, &SCAN_LIMITS)
                    };
                    match parsed {
                        Ok(Decoded::Complete(header, len)) => {
                            let start = i;
                            i += len - had;
                            self.partial.clear();
                            let payload = header.payload_len as usize;
                            if at_boundary && start == 0 && i == data.len() && payload > 0 {
                                // One header alone in its message: the next
                                // message is its payload, exactly.
                                self.expect_payload = Some(header.payload_len);
                                self.scan = Scan::Header;
                            } else if payload > 0 {
                                self.scan = Scan::Payload(payload);
                            }
                        }
                        Ok(Decoded::Incomplete(_)) => {
                            if had == 0 {
                                self.partial.extend_from_slice(&data[i..]);
                            }
                            i = data.len();
                        }
                        Err(_) => {
                            // The driver parses the same bytes and reports it.
                            self.scan = Scan::Opaque;
                            self.partial.clear();
                            i = data.len();
                        }
                    }
                }
            }
        }
        self.rbuf.extend_from_slice(&data);
        Ok(())
    }

    /// Cuts the next whole message out of the outgoing bytes, if there is one.
    fn next_cut(&mut self) -> io::Result<Option<Bytes>> {
        match self.cut {
            Cut::Version => {
                if self.wbuf.len() < VERSION_BYTES.len() {
                    return Ok(None);
                }
                self.cut = Cut::Header;
                Ok(Some(self.wbuf.split_to(VERSION_BYTES.len()).freeze()))
            }
            Cut::Payload(n) => {
                if self.wbuf.len() < n {
                    return Ok(None);
                }
                self.cut = Cut::Header;
                Ok(Some(self.wbuf.split_to(n).freeze()))
            }
            Cut::Header => match parse_header(&self.wbuf, &SCAN_LIMITS) {
                Ok(Decoded::Incomplete(_)) => Ok(None),
                Ok(Decoded::Complete(header, len)) => {
                    if header.message_type == MessageType::ProtocolError
                        && let Ok(Decoded::Complete(Message::ProtocolError { code }, _)) =
                            decode(&self.wbuf[..len], &SCAN_LIMITS)
                    {
                        self.close_code = Some(code);
                    }
                    if header.payload_len > 0 {
                        self.cut = Cut::Payload(header.payload_len as usize);
                    }
                    Ok(Some(self.wbuf.split_to(len).freeze()))
                }
                Err(e) => Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("outgoing gotalk bytes do not parse: {e}"),
                )),
            },
        }
    }
}

fn transport_to_io(err: TransportError) -> io::Error {
    match err {
        TransportError::Closed => io::Error::from(io::ErrorKind::BrokenPipe),
        TransportError::Io(e) => e,
        TransportError::TooLarge { size, limit } => {
            WsError::MessageTooLarge { size, limit }.into_io()
        }
        TransportError::Protocol(msg) => WsError::Protocol(msg).into_io(),
    }
}

impl<S, M> WsIo<S>
where
    S: Stream<Item = Result<M, M::Error>> + Sink<M, Error = M::Error> + Unpin,
    M: WsMessage,
{
    /// Sends every whole message of `wbuf` the sink takes without waiting.
    /// `Ready(Ok)` once nothing whole is left unsent.
    fn poll_send_cuts(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        loop {
            if self.unsent.is_none() {
                self.unsent = self.next_cut()?;
            }
            if self.unsent.is_none() {
                if let Some(code) = self.close_code
                    && !self.close_sent
                {
                    ready!(Pin::new(&mut self.inner).poll_ready(cx))
                        .map_err(|e| transport_to_io(M::classify(e)))?;
                    let n = code.as_u32();
                    let close = if n <= 999 { 4000 + n as u16 } else { 4000 };
                    Pin::new(&mut self.inner)
                        .start_send(M::close(close, code.description()))
                        .map_err(|e| transport_to_io(M::classify(e)))?;
                    self.close_sent = true;
                }
                return Poll::Ready(Ok(()));
            }
            ready!(Pin::new(&mut self.inner).poll_ready(cx))
                .map_err(|e| transport_to_io(M::classify(e)))?;
            let msg = self.unsent.take().expect("checked above");
            Pin::new(&mut self.inner)
                .start_send(M::binary(msg))
                .map_err(|e| transport_to_io(M::classify(e)))?;
        }
    }
}

impl<S, M> AsyncRead for WsIo<S>
where
    S: Stream<Item = Result<M, M::Error>> + Sink<M, Error = M::Error> + Unpin,
    M: WsMessage,
{
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        // Several messages that are already there go out in one read, so a
        // burst of small frames costs the driver one read, not one each.
        let mut copied = false;
        let mut budget = MESSAGE_BUDGET;
        loop {
            if !this.rbuf.is_empty() {
                let n = this.rbuf.len().min(buf.remaining());
                buf.put_slice(&this.rbuf[..n]);
                this.rbuf.advance(n);
                copied = true;
                if buf.remaining() == 0 {
                    return Poll::Ready(Ok(()));
                }
            }
            if copied && (budget == 0 || this.read_error.is_some() || this.read_eof) {
                return Poll::Ready(Ok(()));
            }
            if let Some(err) = &this.read_error {
                return Poll::Ready(Err(err.clone().into_io()));
            }
            if let Some(err) = this.read_io_error.take() {
                return Poll::Ready(Err(err));
            }
            if this.read_eof {
                return Poll::Ready(Ok(()));
            }
            if budget == 0 {
                // Only control messages so far: let other tasks run.
                cx.waker().wake_by_ref();
                return Poll::Pending;
            }
            budget -= 1;
            let item = match Pin::new(&mut this.inner).poll_next(cx) {
                Poll::Ready(item) => item,
                // The waker is registered; what was copied is enough for now.
                Poll::Pending if copied => return Poll::Ready(Ok(())),
                Poll::Pending => return Poll::Pending,
            };
            match item {
                None => this.read_eof = true,
                Some(Err(e)) => match M::classify(e) {
                    TransportError::Closed => this.read_eof = true,
                    TransportError::Io(e) => {
                        this.read_eof = true;
                        if copied {
                            // Deliver what was copied; the error comes next.
                            this.read_io_error = Some(e);
                            return Poll::Ready(Ok(()));
                        }
                        return Poll::Ready(Err(e));
                    }
                    TransportError::TooLarge { size, limit } => {
                        this.read_error = Some(WsError::MessageTooLarge { size, limit });
                    }
                    TransportError::Protocol(msg) => {
                        this.read_error = Some(WsError::Protocol(msg));
                    }
                },
                Some(Ok(msg)) => match msg.into_incoming() {
                    Incoming::Data(data) => {
                        if let Err(e) = this.on_data(data) {
                            tracing::debug!(error = %e, "websocket framing error");
                            this.read_error = Some(e);
                        }
                    }
                    Incoming::Control => {}
                    Incoming::Close(frame) => {
                        // Keep polling: the library sends the close reply and
                        // then reports the end of the stream.
                        if let Some((code, reason)) = frame {
                            tracing::debug!(code, %reason, "websocket closed by peer");
                            if (4000..5000).contains(&code) && this.read_error.is_none() {
                                this.read_error = Some(WsError::ClosedWithProtocolError {
                                    code: ProtocolErrorCode::from_u32(u32::from(code - 4000)),
                                    reason,
                                });
                            }
                        }
                    }
                },
            }
        }
    }
}

impl<S, M> AsyncWrite for WsIo<S>
where
    S: Stream<Item = Result<M, M::Error>> + Sink<M, Error = M::Error> + Unpin,
    M: WsMessage,
{
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.poll_write_vectored(cx, &[io::IoSlice::new(buf)])
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.close_code.is_some() {
            // The gotalk protocol error was the last message.
            return Poll::Ready(Err(io::Error::from(io::ErrorKind::BrokenPipe)));
        }
        if this.poll_send_cuts(cx)?.is_pending() && this.wbuf.len() >= WRITE_HIGH_WATER {
            return Poll::Pending;
        }
        let mut n = 0;
        for buf in bufs {
            this.wbuf.extend_from_slice(buf);
            n += buf.len();
        }
        // Send what became whole; a waker is registered if the sink is busy.
        let _ = this.poll_send_cuts(cx)?;
        Poll::Ready(Ok(n))
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_send_cuts(cx))?;
        Pin::new(&mut this.inner)
            .poll_flush(cx)
            .map_err(|e| transport_to_io(M::classify(e)))
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        match ready!(this.poll_send_cuts(cx)) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::BrokenPipe => return Poll::Ready(Ok(())),
            Err(e) => return Poll::Ready(Err(e)),
        }
        if !this.close_sent {
            match ready!(Pin::new(&mut this.inner).poll_ready(cx)).map_err(M::classify) {
                Ok(()) => {}
                Err(TransportError::Closed) => return Poll::Ready(Ok(())),
                Err(e) => return Poll::Ready(Err(transport_to_io(e))),
            }
            match Pin::new(&mut this.inner).start_send(M::close(1000, "")) {
                Ok(()) => {}
                Err(e) => match M::classify(e) {
                    TransportError::Closed => return Poll::Ready(Ok(())),
                    e => return Poll::Ready(Err(transport_to_io(e))),
                },
            }
            this.close_sent = true;
        }
        match ready!(Pin::new(&mut this.inner).poll_close(cx)).map_err(M::classify) {
            Ok(()) | Err(TransportError::Closed) => Poll::Ready(Ok(())),
            Err(e) => Poll::Ready(Err(transport_to_io(e))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::{SinkExt, StreamExt};
    use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream, duplex};
    use tokio_tungstenite::{
        WebSocketStream,
        tungstenite::{
            Message as M,
            protocol::{CloseFrame, Role, WebSocketConfig, frame::coding::CloseCode},
        },
    };

    type Ws = WebSocketStream<DuplexStream>;

    /// A WsIo (server role) and the raw WebSocket talking to it.
    async fn pair(max_message: Option<usize>) -> (WsIo<Ws>, Ws) {
        let (a, b) = duplex(1 << 20);
        let config = WebSocketConfig::default()
            .max_message_size(max_message)
            .max_frame_size(max_message);
        let server = WebSocketStream::from_raw_socket(a, Role::Server, Some(config)).await;
        let client = WebSocketStream::from_raw_socket(b, Role::Client, None).await;
        (WsIo::new(server), client)
    }

    fn bin(s: &str) -> M {
        M::Binary(Bytes::copy_from_slice(s.as_bytes()))
    }

    async fn next_data(ws: &mut Ws) -> M {
        loop {
            match ws.next().await.expect("message").expect("ok") {
                M::Ping(_) | M::Pong(_) => continue,
                m => return m,
            }
        }
    }

    async fn read_err(io: &mut WsIo<Ws>, expect: &[u8]) -> io::Error {
        let mut got = Vec::new();
        let err = loop {
            let mut buf = [0u8; 7];
            match io.read(&mut buf).await {
                Ok(0) => panic!("EOF after {:?}", String::from_utf8_lossy(&got)),
                Ok(n) => got.extend_from_slice(&buf[..n]),
                Err(e) => break e,
            }
        };
        assert_eq!(
            String::from_utf8_lossy(&got),
            String::from_utf8_lossy(expect)
        );
        err
    }

    #[tokio::test]
    async fn writes_version_headers_and_payloads_as_separate_messages() {
        let (mut io, mut client) = pair(None).await;
        let wire = b"01r0001004echo00000005hellon003abc00000000h000000000001R000200000003abc";
        // Awkward splits: single bytes, then the rest in one go.
        for chunk in wire[..20].chunks(1) {
            io.write_all(chunk).await.unwrap();
        }
        io.write_all(&wire[20..]).await.unwrap();
        io.flush().await.unwrap();
        for expect in [
            "01",
            "r0001004echo00000005",
            "hello",
            "n003abc00000000",
            "h000000000001",
            "R000200000003",
            "abc",
        ] {
            assert_eq!(next_data(&mut client).await, bin(expect));
        }
    }

    #[tokio::test]
    async fn protocol_error_is_followed_by_close_4000_plus_code() {
        let (mut io, mut client) = pair(None).await;
        io.write_all(b"01f00000002").await.unwrap();
        io.flush().await.unwrap();
        assert_eq!(next_data(&mut client).await, bin("01"));
        assert_eq!(next_data(&mut client).await, bin("f00000002"));
        match next_data(&mut client).await {
            M::Close(Some(CloseFrame { code, .. })) => assert_eq!(u16::from(code), 4002),
            other => panic!("expected close, got {other:?}"),
        }
        let err = io.write_all(b"h000000000000").await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::BrokenPipe);
        io.shutdown().await.unwrap();
    }

    #[tokio::test]
    async fn shutdown_sends_normal_close() {
        let (mut io, mut client) = pair(None).await;
        io.write_all(b"01").await.unwrap();
        io.shutdown().await.unwrap();
        assert_eq!(next_data(&mut client).await, bin("01"));
        match next_data(&mut client).await {
            M::Close(Some(CloseFrame { code, .. })) => assert_eq!(code, CloseCode::Normal),
            other => panic!("expected close, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn reads_any_split_and_text_frames() {
        let (mut io, mut client) = pair(None).await;
        let wire = "01r0001004echo00000005hellon003abc00000000R0002000000020k";
        let cuts = [1, 3, 10, 22, 25, 26, 40, wire.len()];
        let mut from = 0;
        for (i, to) in cuts.into_iter().enumerate() {
            let part = &wire[from..to];
            let msg = if i % 2 == 0 { bin(part) } else { M::text(part) };
            client.send(msg).await.unwrap();
            from = to;
        }
        let mut got = vec![0u8; wire.len()];
        io.read_exact(&mut got).await.unwrap();
        assert_eq!(got, wire.as_bytes());
    }

    #[tokio::test]
    async fn header_alone_then_exact_payload_is_fine() {
        let (mut io, mut client) = pair(None).await;
        for m in [
            "01",
            "r0001004echo00000005",
            "hello",
            "n003abc00000003",
            "x\0y",
        ] {
            client.send(bin(m)).await.unwrap();
        }
        let expect = b"01r0001004echo00000005hellon003abc00000003x\0y";
        let mut got = vec![0u8; expect.len()];
        io.read_exact(&mut got).await.unwrap();
        assert_eq!(got, expect);
    }

    #[tokio::test]
    async fn short_payload_after_lone_header_is_invalid() {
        let (mut io, mut client) = pair(None).await;
        for m in ["01", "r0001004echo00000005", "hel"] {
            client.send(bin(m)).await.unwrap();
        }
        let err = read_err(&mut io, b"01r0001004echo00000005").await;
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
        assert_eq!(
            WsError::from_io(&err),
            Some(&WsError::PayloadSizeMismatch {
                declared: 5,
                received: 3
            })
        );
    }

    #[tokio::test]
    async fn long_payload_is_never_read_into_the_next_frame() {
        // gotalk.js miscounting a string: declares 5, sends 6 bytes.
        let (mut io, mut client) = pair(None).await;
        for m in ["01", "n003abc00000005", "h\u{e9}llo", "n003abc00000000"] {
            client.send(M::text(m)).await.unwrap();
        }
        let err = read_err(&mut io, b"01n003abc00000005").await;
        assert_eq!(
            WsError::from_io(&err),
            Some(&WsError::PayloadSizeMismatch {
                declared: 5,
                received: 6
            })
        );
        // The error sticks.
        let mut buf = [0u8; 4];
        assert_eq!(
            io.read(&mut buf).await.unwrap_err().kind(),
            io::ErrorKind::InvalidData
        );
    }

    #[tokio::test]
    async fn close_with_gotalk_code_is_reported() {
        let (mut io, mut client) = pair(None).await;
        client.send(bin("01")).await.unwrap();
        client
            .send(M::Close(Some(CloseFrame {
                code: CloseCode::from(4002),
                reason: "invalid message".into(),
            })))
            .await
            .unwrap();
        let err = read_err(&mut io, b"01").await;
        assert_eq!(err.kind(), io::ErrorKind::ConnectionAborted);
        assert!(matches!(
            WsError::from_io(&err),
            Some(WsError::ClosedWithProtocolError {
                code: ProtocolErrorCode::InvalidMessage,
                ..
            })
        ));
    }

    #[tokio::test]
    async fn normal_close_is_end_of_stream() {
        let (mut io, mut client) = pair(None).await;
        client.send(bin("01h000000000000")).await.unwrap();
        client.close(None).await.unwrap();
        let mut got = Vec::new();
        io.read_to_end(&mut got).await.unwrap();
        assert_eq!(got, b"01h000000000000");
    }

    #[tokio::test]
    async fn ping_is_answered_while_reading() {
        let (mut io, mut client) = pair(None).await;
        client
            .send(M::Ping(Bytes::from_static(b"hi")))
            .await
            .unwrap();
        client.send(bin("01")).await.unwrap();
        let mut v = [0u8; 2];
        io.read_exact(&mut v).await.unwrap();
        assert_eq!(&v, b"01");
        match client.next().await.unwrap().unwrap() {
            M::Pong(p) => assert_eq!(&p[..], b"hi"),
            other => panic!("expected pong, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn oversize_message_is_invalid_data() {
        let (mut io, mut client) = pair(Some(64)).await;
        client.send(bin("01")).await.unwrap();
        client
            .send(M::Binary(Bytes::from(vec![b'x'; 100])))
            .await
            .unwrap();
        let err = read_err(&mut io, b"01").await;
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
        assert!(matches!(
            WsError::from_io(&err),
            Some(WsError::MessageTooLarge { limit: 64, .. })
        ));
        // The connection can still say why it closes.
        io.write_all(b"01f00000002").await.unwrap();
        io.flush().await.unwrap();
        assert_eq!(next_data(&mut client).await, bin("01"));
        assert_eq!(next_data(&mut client).await, bin("f00000002"));
    }

    #[tokio::test]
    async fn garbage_passes_through_for_the_driver_to_judge() {
        let (mut io, mut client) = pair(None).await;
        client.send(bin("01")).await.unwrap();
        client.send(bin("zzzz")).await.unwrap();
        client.send(bin("more")).await.unwrap();
        let mut got = [0u8; 10];
        io.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"01zzzzmore");
    }
}
