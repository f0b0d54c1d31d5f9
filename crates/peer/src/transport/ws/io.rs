//! [`WsIo`]: a gotalk byte stream over WebSocket messages.
//!
//! The connection driver reads and writes a plain byte stream. This module
//! only moves bytes between that stream and the WebSocket: where messages
//! are cut and how they are put back together is [`framing`](super::framing)'s
//! business, and the message types of axum and tungstenite are mapped in
//! [`adapters`](super::adapters).

use std::{
    fmt, io,
    pin::Pin,
    task::{Context, Poll, ready},
};

use bytes::Bytes;
use futures::{Sink, Stream};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

// Re-exported here so `ws` exports them from one place, as before the split.
pub use super::{adapters::WsMessage, error::WsError};

use super::{
    adapters::{Incoming, TransportError},
    framing::{self, Cutter, Reassembler},
};

/// Bytes the adapter buffers on the write side, beyond one whole frame,
/// before it makes the writer wait for the WebSocket.
const WRITE_HIGH_WATER: usize = 64 * 1024;

/// WebSocket messages taken in one `poll_read` before yielding.
const MESSAGE_BUDGET: usize = 64;

/// A WebSocket connection as a tokio byte stream carrying gotalk frames.
///
/// `S` is a WebSocket message stream and sink: tokio-tungstenite's
/// `WebSocketStream` or axum's `WebSocket`. Give it to
/// [`Peer::handshake`](crate::Peer::handshake) like any other stream; the
/// WebSocket client and server of this module do that for you.
///
/// Writing, the two-byte version is one binary message, every header is
/// one binary message and every non-empty payload is the next binary
/// message; after a `f` ProtocolError header the adapter sends a Close
/// frame with code `4000 + N` (what gotalk.js does) and accepts no more
/// bytes. Reading, binary and text messages are concatenated into one byte
/// stream, split anywhere, but when a message holds exactly one header that
/// declares a non-empty payload, the next message must be exactly that
/// payload. Otherwise the read fails with [`io::ErrorKind::InvalidData`]
/// carrying a [`WsError::PayloadSizeMismatch`], and the driver answers
/// `f00000002`; bytes of the following frame are never taken as payload.
///
/// Ping and pong are answered by the WebSocket library underneath. The size
/// of one incoming message is bounded by that library's configuration
/// ([`WsConfig::max_message_size`](super::WsConfig::max_message_size) for the
/// server and client of this module).
pub struct WsIo<S> {
    inner: S,
    // read side
    reader: Reassembler,
    /// Why the stream cannot be read further; every later read reports it.
    read_error: Option<WsError>,
    /// An I/O error met after data was copied, reported by the next read.
    read_io_error: Option<io::Error>,
    read_eof: bool,
    // write side
    writer: Cutter,
    /// A message cut by `writer` that the sink was not ready for.
    unsent: Option<Bytes>,
    close_sent: bool,
}

impl<S> fmt::Debug for WsIo<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WsIo")
            .field("buffered_in", &self.reader.buffered().len())
            .field("buffered_out", &self.writer.buffered())
            .field("close_code", &self.writer.protocol_error())
            .finish_non_exhaustive()
    }
}

impl<S> WsIo<S> {
    /// Wraps an open WebSocket whose gotalk handshake has not started.
    pub fn new(inner: S) -> Self {
        Self {
            inner,
            reader: Reassembler::default(),
            read_error: None,
            read_io_error: None,
            read_eof: false,
            writer: Cutter::default(),
            unsent: None,
            close_sent: false,
        }
    }

    /// The WebSocket underneath.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }
}

impl<S, M> WsIo<S>
where
    S: Stream<Item = Result<M, M::Error>> + Sink<M, Error = M::Error> + Unpin,
    M: WsMessage,
{
    /// Sends every whole message the writer has cut that the sink takes
    /// without waiting, then the Close frame if a protocol error went out.
    /// `Ready(Ok)` once nothing whole is left unsent.
    fn poll_send_cuts(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        loop {
            if self.unsent.is_none() {
                self.unsent = self.writer.next_message().map_err(|e| {
                    io::Error::new(
                        io::ErrorKind::InvalidInput,
                        format!("outgoing gotalk bytes do not parse: {e}"),
                    )
                })?;
            }
            if self.unsent.is_none() {
                if let Some(code) = self.writer.protocol_error()
                    && !self.close_sent
                {
                    ready!(Pin::new(&mut self.inner).poll_ready(cx))
                        .map_err(|e| M::classify(e).into_io())?;
                    let close = framing::close_code_for(code);
                    Pin::new(&mut self.inner)
                        .start_send(M::close(close, code.description()))
                        .map_err(|e| M::classify(e).into_io())?;
                    self.close_sent = true;
                }
                return Poll::Ready(Ok(()));
            }
            ready!(Pin::new(&mut self.inner).poll_ready(cx))
                .map_err(|e| M::classify(e).into_io())?;
            let msg = self.unsent.take().expect("checked above");
            Pin::new(&mut self.inner)
                .start_send(M::binary(msg))
                .map_err(|e| M::classify(e).into_io())?;
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
            if this.reader.read_into(buf) > 0 {
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
                        if let Err(e) = this.reader.push_message(&data) {
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
                            if let Some(code) = framing::protocol_error_of_close(code)
                                && this.read_error.is_none()
                            {
                                this.read_error =
                                    Some(WsError::ClosedWithProtocolError { code, reason });
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
        if this.writer.protocol_error().is_some() {
            // The gotalk protocol error was the last message.
            return Poll::Ready(Err(io::Error::from(io::ErrorKind::BrokenPipe)));
        }
        if this.poll_send_cuts(cx)?.is_pending() && this.writer.buffered() >= WRITE_HIGH_WATER {
            return Poll::Pending;
        }
        let mut n = 0;
        for buf in bufs {
            this.writer.push(buf);
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
            .map_err(|e| M::classify(e).into_io())
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
                Err(e) => return Poll::Ready(Err(e.into_io())),
            }
            match Pin::new(&mut this.inner).start_send(M::close(1000, "")) {
                Ok(()) => {}
                Err(e) => match M::classify(e) {
                    TransportError::Closed => return Poll::Ready(Ok(())),
                    e => return Poll::Ready(Err(e.into_io())),
                },
            }
            this.close_sent = true;
        }
        match ready!(Pin::new(&mut this.inner).poll_close(cx)).map_err(M::classify) {
            Ok(()) | Err(TransportError::Closed) => Poll::Ready(Ok(())),
            Err(e) => Poll::Ready(Err(e.into_io())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transport::ws::framing::fixture::{CUTS, WIRE};
    use futures::{SinkExt, StreamExt};
    use gotalk_proto::ProtocolErrorCode;
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
        let wire = WIRE;
        // Awkward splits: single bytes, then the rest in one go.
        for chunk in wire[..20].chunks(1) {
            io.write_all(chunk).await.unwrap();
        }
        io.write_all(&wire[20..]).await.unwrap();
        io.flush().await.unwrap();
        for expect in CUTS {
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
