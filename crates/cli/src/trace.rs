//! Frame tracing: a transport wrapper that decodes a copy of every byte read
//! and written with `gotalk-proto` and reports each whole frame.
//!
//! `gotalk-peer` takes any `AsyncRead + AsyncWrite` for a connection, so
//! wrapping the byte stream in [`Traced`] before the gotalk handshake sees
//! exactly what goes over the wire, in the order it goes: clients wrap the
//! stream they open, `gotalk serve` wraps every connection in its server's
//! `wrap_io` hook.

use std::{
    io,
    io::IoSlice,
    pin::Pin,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    task::{Context, Poll, ready},
};

use bytes::{Buf, BytesMut};
use gotalk_proto::{DecodeLimits, Decoded, Message, decode};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::text::escape_bytes;

/// Which way a frame went, seen from the traced side.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Dir {
    /// Read from the peer.
    Recv,
    /// Written to the peer.
    Send,
}

/// What the tracer saw.
pub(crate) enum EventKind<'a> {
    /// The two-digit protocol version that starts each direction.
    Version(&'a [u8]),
    /// One whole frame: its raw bytes and the message they decode to.
    Frame {
        raw: &'a [u8],
        msg: Message<&'a [u8]>,
    },
    /// Bytes that do not decode; nothing more is traced in this direction.
    Malformed(String),
}

/// One traced event on one connection.
pub(crate) struct TraceEvent<'a> {
    /// Connection number, from 1, per [`Tracer`].
    pub(crate) conn: u64,
    pub(crate) dir: Dir,
    pub(crate) kind: EventKind<'a>,
}

type Sink = dyn Fn(&TraceEvent<'_>) + Send + Sync;

/// Hands out per-connection tracers that all report to one sink.
#[derive(Clone)]
pub(crate) struct Tracer {
    sink: Arc<Sink>,
    next_conn: Arc<AtomicU64>,
}

impl Tracer {
    pub(crate) fn new(sink: impl Fn(&TraceEvent<'_>) + Send + Sync + 'static) -> Self {
        Self {
            sink: Arc::new(sink),
            next_conn: Arc::new(AtomicU64::new(1)),
        }
    }

    /// A tracer for a new connection, numbered in order.
    pub(crate) fn connection(&self) -> ConnTracer {
        self.connection_numbered(self.next_conn.fetch_add(1, Ordering::Relaxed))
    }

    /// A tracer for a connection the caller has numbered itself.
    pub(crate) fn connection_numbered(&self, conn: u64) -> ConnTracer {
        ConnTracer {
            conn,
            sink: self.sink.clone(),
        }
    }
}

/// The tracer of one connection.
pub(crate) struct ConnTracer {
    conn: u64,
    sink: Arc<Sink>,
}

impl ConnTracer {
    fn emit(&self, dir: Dir, kind: EventKind<'_>) {
        (self.sink)(&TraceEvent {
            conn: self.conn,
            dir,
            kind,
        });
    }
}

/// Splits one direction's bytes into the version and frames.
struct Splitter {
    dir: Dir,
    buf: BytesMut,
    version_seen: bool,
    broken: bool,
}

impl Splitter {
    fn new(dir: Dir) -> Self {
        Self {
            dir,
            buf: BytesMut::new(),
            version_seen: false,
            broken: false,
        }
    }

    fn feed(&mut self, bytes: &[u8], tracer: &ConnTracer) {
        if self.broken || bytes.is_empty() {
            return;
        }
        self.buf.extend_from_slice(bytes);
        let dir = self.dir;
        if !self.version_seen {
            if self.buf.len() < 2 {
                return;
            }
            tracer.emit(dir, EventKind::Version(&self.buf[..2]));
            self.version_seen = true;
            self.buf.advance(2);
        }
        // The peer enforces its own payload limit; the tracer only watches.
        let limits = DecodeLimits::with_max_payload(u32::MAX);
        loop {
            let used = match decode(&self.buf, &limits) {
                Ok(Decoded::Complete(msg, used)) => {
                    tracer.emit(
                        dir,
                        EventKind::Frame {
                            raw: &self.buf[..used],
                            msg,
                        },
                    );
                    used
                }
                Ok(Decoded::Incomplete(_)) => return,
                Err(e) => {
                    tracer.emit(dir, EventKind::Malformed(e.to_string()));
                    self.broken = true;
                    self.buf = BytesMut::new();
                    return;
                }
            };
            self.buf.advance(used);
        }
    }
}

/// A byte stream that reports every frame read from and written to it.
pub(crate) struct Traced<T> {
    inner: T,
    tracer: ConnTracer,
    recv: Splitter,
    send: Splitter,
}

impl<T> Traced<T> {
    pub(crate) fn new(inner: T, tracer: ConnTracer) -> Self {
        Self {
            inner,
            tracer,
            recv: Splitter::new(Dir::Recv),
            send: Splitter::new(Dir::Send),
        }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Traced<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        ready!(Pin::new(&mut this.inner).poll_read(cx, buf))?;
        this.recv.feed(&buf.filled()[before..], &this.tracer);
        Poll::Ready(Ok(()))
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Traced<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let n = ready!(Pin::new(&mut this.inner).poll_write(cx, buf))?;
        this.send.feed(&buf[..n], &this.tracer);
        Poll::Ready(Ok(n))
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let n = ready!(Pin::new(&mut this.inner).poll_write_vectored(cx, bufs))?;
        let mut left = n;
        for b in bufs {
            if left == 0 {
                break;
            }
            let take = left.min(b.len());
            this.send.feed(&b[..take], &this.tracer);
            left -= take;
        }
        Poll::Ready(Ok(n))
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

/// A frame as it is on the wire, escaped onto one line (see
/// [`escape_bytes`]); a payload longer than `max_payload` bytes is cut
/// short with a note of how much was left out.
pub(crate) fn wire_line(raw: &[u8], payload_len: usize, max_payload: usize) -> String {
    let header_len = raw.len() - payload_len;
    let mut s = String::with_capacity(raw.len().min(header_len + max_payload) + 16);
    escape_bytes(&raw[..header_len], false, &mut s);
    if payload_len <= max_payload {
        escape_bytes(&raw[header_len..], false, &mut s);
    } else {
        escape_bytes(&raw[header_len..header_len + max_payload], false, &mut s);
        s.push_str(&format!("…(+{} bytes)", payload_len - max_payload));
    }
    s
}

/// The event as a trace line's message part: the escaped wire form.
pub(crate) fn event_text(kind: &EventKind<'_>, max_payload: usize) -> String {
    match kind {
        EventKind::Version(v) => {
            let mut s = String::new();
            escape_bytes(v, false, &mut s);
            s
        }
        EventKind::Frame { raw, msg } => wire_line(raw, msg.payload_len(), max_payload),
        EventKind::Malformed(e) => format!("(undecodable bytes: {e}; tracing stops here)"),
    }
}

/// The event's kind as a short name: `version`, a message type, or `malformed`.
pub(crate) fn event_name(kind: &EventKind<'_>) -> &'static str {
    match kind {
        EventKind::Version(_) => "version",
        EventKind::Frame { msg, .. } => msg.message_type().name(),
        EventKind::Malformed(_) => "malformed",
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    fn recording() -> (Tracer, Arc<Mutex<Vec<String>>>) {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let s = seen.clone();
        let tracer = Tracer::new(move |ev| {
            let dir = match ev.dir {
                Dir::Recv => "<-",
                Dir::Send => "->",
            };
            s.lock()
                .unwrap()
                .push(format!("{} {dir} {}", ev.conn, event_text(&ev.kind, 4)));
        });
        (tracer, seen)
    }

    #[tokio::test]
    async fn frames_split_across_writes_and_reads() {
        let (tracer, seen) = recording();
        let (a, mut b) = tokio::io::duplex(64);
        let mut a = Traced::new(a, tracer.connection());
        // Written in pieces, one of them vectored across two frames.
        a.write_all(b"0").await.unwrap();
        a.write_all(b"1r\x00\x00\x00\x00004echo0000").await.unwrap();
        let bufs = [IoSlice::new(b"0005hello"), IoSlice::new(b"n003abc00000000")];
        let n = a.write_vectored(&bufs).await.unwrap();
        assert_eq!(n, 24, "the duplex has room for both");
        b.write_all(b"01R\x00\x00\x00\x0000000005hel")
            .await
            .unwrap();
        b.write_all(b"lox").await.unwrap();
        let mut got = [0u8; 20];
        a.read_exact(&mut got).await.unwrap();
        let mut junk = [0u8; 1];
        a.read_exact(&mut junk).await.unwrap();
        assert_eq!(
            *seen.lock().unwrap(),
            [
                "1 -> 01",
                "1 -> r\\x00\\x00\\x00\\x00004echo00000005hell…(+1 bytes)",
                "1 -> n003abc00000000",
                "1 <- 01",
                "1 <- R\\x00\\x00\\x00\\x0000000005hell…(+1 bytes)",
                "1 <- (undecodable bytes: unknown message type 'x' at byte 0; tracing stops here)",
            ]
        );
    }
}
