//! [`WsStream`]: gotalk over an upgraded WebSocket connection, framed here.
//!
//! [`WsIo`](super::WsIo) runs over a WebSocket library's messages; each
//! gotalk frame is two messages, and each message cost that stack (the
//! library's read and write paths, its wakers, one `Bytes` per message)
//! more than a whole request over TCP. This type writes and parses the
//! frames itself on the raw connection: frames are written straight into
//! one output buffer, and read in place from one input buffer, unmasked
//! eight bytes at a time. The gotalk mapping (what is one message, the
//! payload-length rule) is the same [`framing`](super::framing) as
//! `WsIo`'s.

use std::{
    fmt, io,
    ops::Range,
    pin::Pin,
    task::{Context, Poll, ready},
};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::{
    WsError,
    framing::{self, Piece, Reassembler, Splitter},
    wire::{
        frame::{self, Opcode},
        mask,
    },
};

/// Output bytes buffered before a write makes its caller wait.
const WRITE_HIGH_WATER: usize = 64 * 1024;

/// Smallest read: at least this much room is asked of the connection.
const READ_CHUNK: usize = 8 * 1024;

/// Output buffer capacity kept once everything is written: more is freed,
/// so an idle connection holds little.
const KEEP_OUT: usize = 1024;

/// Extra room for frame headers reserved per write at most (see
/// `write_gotalk`).
const MAX_HEADER_ROOM: usize = 4096;

/// Where a client's mask keys come from. RFC 6455 (10.3) asks for keys a
/// page's script cannot predict: a ChaCha12 stream seeded from the
/// thread's generator (itself seeded by the operating system), drawn a
/// word at a time. A key from the thread's generator itself cost 100
/// instructions (two keys per small frame, of about 4 000 instructions per
/// request in all).
struct MaskKeys(rand::rngs::StdRng);

impl MaskKeys {
    /// The next key, from `keys` (made on first use).
    fn next(keys: &mut Option<Box<MaskKeys>>) -> [u8; 4] {
        use rand::{RngCore, SeedableRng};
        let keys = keys.get_or_insert_with(|| {
            Box::new(MaskKeys(rand::rngs::StdRng::from_rng(&mut rand::rng())))
        });
        keys.0.next_u32().to_ne_bytes()
    }
}

/// Which end of the connection this is: a client masks what it sends and
/// expects unmasked frames, a server the other way round.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Role {
    Client,
    Server,
}

/// An upgraded WebSocket connection as a tokio byte stream carrying gotalk
/// frames, with the same mapping as [`WsIo`](super::WsIo): the version,
/// each header and each non-empty payload are one binary message each;
/// any split of the stream is read, except that a message holding exactly
/// one header declaring a payload must be followed by exactly that payload
/// ([`WsError::PayloadSizeMismatch`] otherwise).
///
/// The WebSocket server and client of this module give you one: it is the
/// [`Connecting::Io`](crate::transport::Connecting) of a
/// [`WsListener`](super::WsListener)'s connections. Pings are answered,
/// a Close is answered and ends the stream (a code `4000 + N` reads as
/// [`WsError::ClosedWithProtocolError`]), after a `f` ProtocolError frame
/// the stream sends Close `4000 + N`, and shutting it down sends Close
/// 1000. Messages longer than the limit it was made with fail the read
/// with [`WsError::MessageTooLarge`] before their payload is buffered.
pub struct WsStream<T> {
    io: T,
    role: Role,
    max_message: usize,
    // read side
    /// Bytes read from the connection: frames before `parsed` are handled,
    /// the payload in `deliver` is still to be read by the caller.
    inb: Vec<u8>,
    parsed: usize,
    deliver: Range<usize>,
    /// A fragmented data message being put together.
    fragments: Option<Vec<u8>>,
    /// Whether that message is text.
    fragments_text: bool,
    reader: Reassembler,
    read_error: Option<WsError>,
    read_eof: bool,
    // write side
    writer: Splitter,
    /// The client's mask key for the message being written, and the
    /// offset in that message the next byte is at.
    mask: ([u8; 4], usize),
    /// A client's source of mask keys, made at its first frame (a server
    /// masks nothing and holds none).
    keys: Option<Box<MaskKeys>>,
    /// Frames encoded and not yet written; `out_pos` of them are written.
    out: Vec<u8>,
    out_pos: usize,
    /// Control frames waiting for the message being written to end.
    control: Vec<u8>,
    close_sent: bool,
}

impl<T> fmt::Debug for WsStream<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WsStream")
            .field("role", &self.role)
            .field(
                "buffered_in",
                &(self.inb.len() + self.reader.buffered().len()),
            )
            .field("buffered_out", &(self.out.len() - self.out_pos))
            .field("close_sent", &self.close_sent)
            .finish_non_exhaustive()
    }
}

impl<T> WsStream<T> {
    /// Wraps a connection whose WebSocket upgrade is done; `read` holds
    /// bytes already read past the upgrade response (frames the peer sent
    /// right after it). Messages longer than `max_message` are refused.
    pub(crate) fn new(io: T, role: Role, read: &[u8], max_message: usize) -> Self {
        Self {
            io,
            role,
            max_message,
            inb: read.to_vec(),
            parsed: 0,
            deliver: 0..0,
            fragments: None,
            fragments_text: false,
            reader: Reassembler::default(),
            read_error: None,
            read_eof: false,
            writer: Splitter::default(),
            mask: ([0; 4], 0),
            keys: None,
            out: Vec::new(),
            out_pos: 0,
            control: Vec::new(),
            close_sent: false,
        }
    }

    /// The connection underneath.
    pub fn get_ref(&self) -> &T {
        &self.io
    }

    /// Queues a control frame (masked by a client). It goes into the
    /// output buffer at once unless a data message's bytes are still
    /// coming, then right after that message: never inside a frame.
    fn put_control(&mut self, opcode: Opcode, payload: &[u8]) {
        match self.role {
            Role::Server => {
                frame::put_header(&mut self.control, opcode, payload.len(), None);
                self.control.extend_from_slice(payload);
            }
            Role::Client => {
                let key = MaskKeys::next(&mut self.keys);
                frame::put_header(&mut self.control, opcode, payload.len(), Some(key));
                mask::extend_masked(&mut self.control, payload, key);
            }
        }
        if opcode == Opcode::Close {
            self.close_sent = true;
        }
        self.release_control();
    }

    /// Moves queued control frames to the output unless inside a message.
    fn release_control(&mut self) {
        if !self.control.is_empty() && !self.writer.inside_message() {
            self.out.append(&mut self.control);
        }
    }

    fn put_close(&mut self, code: u16, reason: &str) {
        let mut payload = Vec::with_capacity(2 + reason.len());
        payload.extend_from_slice(&code.to_be_bytes());
        payload.extend_from_slice(reason.as_bytes());
        self.put_control(Opcode::Close, &payload);
    }

    /// Frames outgoing gotalk bytes into the output buffer: each message's
    /// header as soon as its length is known, its bytes as they come; the
    /// Close frame once a protocol error went out.
    fn write_gotalk(&mut self, bytes: &[u8]) -> io::Result<()> {
        // Room for the bytes and their frame headers (two messages per
        // small frame, up to 6 bytes each): one allocation, not a doubling
        // per few frames.
        self.out
            .reserve(bytes.len() + (bytes.len() / 4).min(MAX_HEADER_ROOM) + 16);
        // One closure per role rather than one matching on it: each piece
        // (two to four per frame) calls it, and the server's small one is
        // inlined into the splitter.
        let out = &mut self.out;
        let pushed = match self.role {
            Role::Server => self.writer.push(bytes, |piece| match piece {
                Piece::Start(len) => frame::put_header(out, Opcode::Binary, len, None),
                Piece::Data(data) => out.extend_from_slice(data),
            }),
            Role::Client => {
                let (mask, keys) = (&mut self.mask, &mut self.keys);
                self.writer.push(bytes, |piece| match piece {
                    Piece::Start(len) => {
                        *mask = (MaskKeys::next(keys), 0);
                        frame::put_header(out, Opcode::Binary, len, Some(mask.0));
                    }
                    Piece::Data(data) => {
                        let start = out.len();
                        out.extend_from_slice(data);
                        mask::apply(&mut out[start..], mask.0, mask.1);
                        mask.1 += data.len();
                    }
                })
            }
        };
        pushed.map_err(|e| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("outgoing gotalk bytes do not parse: {e}"),
            )
        })?;
        self.release_control();
        if let Some(code) = self.writer.protocol_error()
            && !self.close_sent
        {
            self.put_close(framing::close_code_for(code), code.description());
        }
        Ok(())
    }

    /// Handles the next whole frame of the input buffer: `Ok(false)` if
    /// there is none yet (room for it is reserved).
    fn next_frame(&mut self) -> Result<bool, WsError> {
        let Some(h) = frame::parse(&self.inb[self.parsed..])? else {
            return Ok(false);
        };
        match (self.role, h.mask) {
            (Role::Server, None) => {
                return Err(WsError::Protocol("unmasked frame from a client".into()));
            }
            (Role::Client, Some(_)) => {
                return Err(WsError::Protocol("masked frame from a server".into()));
            }
            _ => {}
        }
        let so_far = self.fragments.as_ref().map_or(0, Vec::len) as u64;
        if so_far + h.payload_len > self.max_message as u64 {
            return Err(WsError::MessageTooLarge {
                size: usize::try_from(so_far + h.payload_len).unwrap_or(usize::MAX),
                limit: self.max_message,
            });
        }
        let (start, end) = (
            self.parsed + h.len,
            self.parsed + h.len + h.payload_len as usize,
        );
        if self.inb.len() < end {
            self.inb.reserve(end - self.inb.len());
            return Ok(false);
        }
        if let Some(key) = h.mask {
            mask::apply(&mut self.inb[start..end], key, 0);
        }
        self.parsed = end;
        let payload = &self.inb[start..end];
        let result = match (h.opcode, &mut self.fragments) {
            (Opcode::Binary | Opcode::Text, None) if h.fin => {
                // The usual case: read straight out of the input buffer.
                check_text(h.opcode == Opcode::Text, payload)?;
                self.reader.accept(payload)?;
                self.deliver = start..end;
                Ok(())
            }
            (Opcode::Binary | Opcode::Text, None) => {
                self.fragments = Some(payload.to_vec());
                self.fragments_text = h.opcode == Opcode::Text;
                Ok(())
            }
            (Opcode::Continuation, Some(parts)) => {
                parts.extend_from_slice(payload);
                if h.fin {
                    let whole = self.fragments.take().expect("matched");
                    check_text(self.fragments_text, &whole)
                        .and_then(|()| self.reader.push_message(&whole))
                } else {
                    Ok(())
                }
            }
            (Opcode::Continuation, None) => Err(WsError::Protocol(
                "continuation frame without a message to continue".into(),
            )),
            (Opcode::Binary | Opcode::Text, Some(_)) => Err(WsError::Protocol(
                "new message before the fragmented one ended".into(),
            )),
            (Opcode::Ping, _) => {
                if !self.close_sent {
                    let ping = payload.to_vec();
                    self.put_control(Opcode::Pong, &ping);
                }
                Ok(())
            }
            (Opcode::Pong, _) => Ok(()),
            (Opcode::Close, _) => self.on_close(start, end),
        };
        result.map(|()| true)
    }

    /// The peer's Close: answered (echoing its code) unless ours went out
    /// first, then the end of the stream; a gotalk code is an error.
    fn on_close(&mut self, start: usize, end: usize) -> Result<(), WsError> {
        self.read_eof = true;
        let payload = &self.inb[start..end];
        let (code, reason) = match payload {
            [] => (None, String::new()),
            [_] => return Err(WsError::Protocol("close frame of one byte".into())),
            [a, b, reason @ ..] => (
                Some(u16::from_be_bytes([*a, *b])),
                String::from_utf8_lossy(reason).into_owned(),
            ),
        };
        tracing::debug!(?code, %reason, "websocket closed by peer");
        if !self.close_sent {
            match code {
                Some(code) => self.put_close(code, ""),
                None => self.put_control(Opcode::Close, &[]),
            }
        }
        match code.and_then(framing::protocol_error_of_close) {
            Some(code) => Err(WsError::ClosedWithProtocolError { code, reason }),
            None => Ok(()),
        }
    }
}

/// Text messages must be UTF-8 (RFC 6455 section 8.1).
#[inline(always)]
fn check_text(text: bool, data: &[u8]) -> Result<(), WsError> {
    if text && std::str::from_utf8(data).is_err() {
        return Err(WsError::Protocol("text message is not UTF-8".into()));
    }
    Ok(())
}

impl<T: AsyncWrite + Unpin> WsStream<T> {
    /// Writes the output buffer out; `Ready(Ok)` once it is empty.
    fn poll_write_out(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.out_pos < self.out.len() {
            let n = ready!(Pin::new(&mut self.io).poll_write(cx, &self.out[self.out_pos..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.out_pos += n;
        }
        self.out_pos = 0;
        if self.out.capacity() > KEEP_OUT {
            self.out = Vec::new();
        } else {
            self.out.clear();
        }
        Poll::Ready(Ok(()))
    }

    fn pending_out(&self) -> usize {
        self.out.len() - self.out_pos
    }
}

impl<T: AsyncRead + AsyncWrite + Unpin> AsyncRead for WsStream<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let mut copied = false;
        loop {
            // A fragmented message put together, then the payload of the
            // last frame: whatever is ready is read before the next frame.
            if this.reader.read_into(buf) > 0 {
                copied = true;
                if buf.remaining() == 0 {
                    return Poll::Ready(Ok(()));
                }
            }
            if !this.deliver.is_empty() {
                let n = this.deliver.len().min(buf.remaining());
                let from = this.deliver.start;
                buf.put_slice(&this.inb[from..from + n]);
                this.deliver.start += n;
                copied = true;
                if buf.remaining() == 0 {
                    return Poll::Ready(Ok(()));
                }
            }
            if copied && (this.read_error.is_some() || this.read_eof) {
                return Poll::Ready(Ok(()));
            }
            if let Some(err) = &this.read_error {
                return Poll::Ready(Err(err.clone().into_io()));
            }
            if this.read_eof {
                // A Close reply goes out before the end is reported.
                let _ = this.poll_write_out(cx);
                return Poll::Ready(Ok(()));
            }
            match this.next_frame() {
                Ok(true) => continue,
                Ok(false) => {}
                Err(e) => {
                    tracing::debug!(error = %e, "websocket read error");
                    this.read_error = Some(e);
                    continue;
                }
            }
            if copied {
                return Poll::Ready(Ok(()));
            }
            if this.pending_out() > 0 {
                // Pongs: a failed write shows up on the write side.
                let _ = this.poll_write_out(cx);
            }
            // Everything parsed is delivered: drop it, keep a partial frame.
            if this.parsed > 0 {
                this.inb.drain(..this.parsed);
                this.parsed = 0;
                this.deliver = 0..0;
            }
            if this.inb.capacity() - this.inb.len() < READ_CHUNK {
                this.inb.reserve(READ_CHUNK);
            }
            match tokio_util::io::poll_read_buf(Pin::new(&mut this.io), cx, &mut this.inb) {
                Poll::Pending => {
                    if this.inb.is_empty() {
                        // Idle: hold no buffer.
                        this.inb = Vec::new();
                    }
                    return Poll::Pending;
                }
                Poll::Ready(Ok(0)) => {
                    this.read_eof = true;
                    this.read_error = Some(WsError::Protocol(
                        "connection closed without a closing handshake".into(),
                    ));
                }
                Poll::Ready(Ok(_)) => {}
                Poll::Ready(Err(e)) => {
                    this.read_eof = true;
                    return Poll::Ready(Err(e));
                }
            }
        }
    }
}

impl<T: AsyncRead + AsyncWrite + Unpin> AsyncWrite for WsStream<T> {
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
        if this.close_sent {
            // A Close frame was the last message.
            return Poll::Ready(Err(io::Error::from(io::ErrorKind::BrokenPipe)));
        }
        if this.pending_out() >= WRITE_HIGH_WATER {
            ready!(this.poll_write_out(cx))?;
        }
        let mut n = 0;
        for buf in bufs {
            this.write_gotalk(buf)?;
            n += buf.len();
        }
        if this.pending_out() >= WRITE_HIGH_WATER {
            // Start on a large batch now; a waker is registered if busy.
            let _ = this.poll_write_out(cx)?;
        }
        Poll::Ready(Ok(n))
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_write_out(cx))?;
        Pin::new(&mut this.io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if !this.close_sent {
            this.put_close(1000, "");
        }
        match ready!(this.poll_write_out(cx)) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::BrokenPipe => return Poll::Ready(Ok(())),
            Err(e) => return Poll::Ready(Err(e)),
        }
        Pin::new(&mut this.io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The frames a client writes for `bytes`: each one's mask key and
    /// unmasked payload.
    fn client_frames(bytes: &[u8]) -> Vec<([u8; 4], Vec<u8>)> {
        let mut ws = WsStream::new((), Role::Client, &[], 1 << 20);
        ws.write_gotalk(bytes).unwrap();
        let mut frames = Vec::new();
        let mut at = 0;
        while at < ws.out.len() {
            let h = frame::parse(&ws.out[at..]).unwrap().expect("whole frames");
            let key = h.mask.expect("a client masks every frame");
            let start = at + h.len;
            let end = start + h.payload_len as usize;
            let mut payload = ws.out[start..end].to_vec();
            mask::apply(&mut payload, key, 0);
            frames.push((key, payload));
            at = end;
        }
        frames
    }

    #[test]
    fn a_client_masks_each_message_with_a_key_of_its_own() {
        let frames = client_frames(b"01r0001004echo00000002hir0002004echo00000002ho");
        let payloads: Vec<&[u8]> = frames.iter().map(|(_, p)| &p[..]).collect();
        assert_eq!(
            payloads,
            [
                &b"01"[..],
                b"r0001004echo00000002",
                b"hi",
                b"r0002004echo00000002",
                b"ho"
            ]
        );
        let mut keys: Vec<[u8; 4]> = frames.iter().map(|(k, _)| *k).collect();
        keys.sort_unstable();
        keys.dedup();
        // Five random 32-bit keys: a repeat means they are not drawn afresh.
        assert_eq!(keys.len(), 5, "{keys:?}");
        // Another connection draws other keys.
        let other = client_frames(b"01");
        assert!(!keys.contains(&other[0].0));
    }
}
