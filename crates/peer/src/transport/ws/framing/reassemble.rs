//! The read side: turning the peer's messages back into a byte stream.

use bytes::{Buf, BytesMut};
use gotalk_proto::{Decoded, MAX_HEADER_LEN, VERSION_BYTES, parse_header};

use super::SCAN_LIMITS;
use crate::ws::WsError;

/// Where the reassembler is in the incoming byte stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Scan {
    /// Inside the two-byte version; this many bytes are left.
    Version(usize),
    /// At or inside a header (partial header bytes are kept aside).
    Header,
    /// Inside a payload; this many bytes are left.
    Payload(usize),
    /// The stream no longer parses; the driver parses the same bytes and
    /// will say why, so they are passed through untouched.
    Opaque,
}

/// Concatenates incoming WebSocket messages into the gotalk byte stream,
/// enforcing the one rule that makes frame-based senders safe: a message
/// holding exactly one header that declares a non-empty payload must be
/// followed by a message that is exactly that payload.
///
/// gotalk.js 1.x miscounts strings with NUL or astral characters; without
/// the rule the surplus bytes would be read as the start of the next frame.
/// Frame boundaries are tracked across messages to know when the rule
/// applies; everything else passes through as it came.
#[derive(Debug)]
pub(crate) struct Reassembler {
    out: BytesMut,
    scan: Scan,
    /// The start of a header split across messages.
    partial: BytesMut,
    /// Set after a message that was one header alone: the payload size the
    /// next message must have.
    expect_payload: Option<u32>,
}

impl Default for Reassembler {
    fn default() -> Self {
        Self {
            out: BytesMut::new(),
            scan: Scan::Version(VERSION_BYTES.len()),
            partial: BytesMut::new(),
            expect_payload: None,
        }
    }
}

impl Reassembler {
    /// Bytes of the stream ready to be read.
    pub(crate) fn buffered(&self) -> &[u8] {
        &self.out
    }

    /// Moves as much of [`buffered`](Self::buffered) as fits into `buf`:
    /// how many bytes it moved.
    #[inline]
    pub(crate) fn read_into(&mut self, buf: &mut tokio::io::ReadBuf<'_>) -> usize {
        // Nearly always empty: only a fragmented message or `push_message`
        // (the library-backed `WsIo`) leaves bytes here.
        if self.out.is_empty() {
            return 0;
        }
        let n = self.out.len().min(buf.remaining());
        buf.put_slice(&self.out[..n]);
        self.out.advance(n);
        n
    }

    /// Takes in one binary or text message from the peer.
    ///
    /// On error none of the message is added and the stream cannot go on:
    /// its bytes no longer line up with frames.
    pub(crate) fn push_message(&mut self, data: &[u8]) -> Result<(), WsError> {
        self.accept(data)?;
        self.out.extend_from_slice(data);
        Ok(())
    }

    /// Checks one binary or text message and follows the frames in it,
    /// like [`push_message`](Self::push_message) but without taking its
    /// bytes: the caller delivers them itself, right after whatever
    /// [`buffered`](Self::buffered) still holds.
    ///
    /// The two messages of a frame as gotalk.js and this crate send it (a
    /// header alone, then its payload) take the short path inline; any
    /// other split of the stream walks the message out of line.
    #[inline]
    pub(crate) fn accept(&mut self, data: &[u8]) -> Result<(), WsError> {
        if let Some(declared) = self.expect_payload.take() {
            if data.len() != declared as usize {
                return Err(WsError::PayloadSizeMismatch {
                    declared,
                    received: data.len(),
                });
            }
            return Ok(());
        }
        let mut from = 0;
        // A message that starts at a frame boundary starts with a header;
        // parsed here once, it decides the rule, and the walk goes on after
        // it (a header that is cut short or malformed is left to the walk,
        // which parses it again, then keeps it aside or gives up on the
        // stream: rare, so not worth a path of its own).
        if self.scan == Scan::Header
            && self.partial.is_empty()
            && let Ok(Decoded::Complete(header, len)) = parse_header(data, &SCAN_LIMITS)
        {
            let payload = header.payload_len;
            if len == data.len() {
                // One header alone in its message: the next message is its
                // payload, exactly.
                if payload > 0 {
                    self.expect_payload = Some(payload);
                }
                return Ok(());
            }
            if payload > 0 {
                self.scan = Scan::Payload(payload as usize);
            }
            from = len;
        }
        self.walk(data, from);
        Ok(())
    }

    /// Follows the frames of `data` from offset `i` on. Out of line, so
    /// that the common path above stays small (its callers' registers
    /// need no saving for this loop).
    #[inline(never)]
    fn walk(&mut self, data: &[u8], mut i: usize) {
        // Each pass consumes at least one byte or ends the loop.
        while i < data.len() {
            match self.scan {
                Scan::Version(left) | Scan::Payload(left) => {
                    let n = left.min(data.len() - i);
                    i += n;
                    self.scan = match self.scan {
                        _ if n == left => Scan::Header,
                        Scan::Version(_) => Scan::Version(left - n),
                        _ => Scan::Payload(left - n),
                    };
                }
                Scan::Opaque => i = data.len(),
                Scan::Header => {
                    let had = self.partial.len();
                    let parsed = if had == 0 {
                        parse_header(&data[i..], &SCAN_LIMITS)
                    } else {
                        // A header is at most MAX_HEADER_LEN bytes: that
                        // many more bytes always decide it.
                        let take = (data.len() - i).min(MAX_HEADER_LEN);
                        self.partial.extend_from_slice(&data[i..i + take]);
                        parse_header(&self.partial, &SCAN_LIMITS)
                    };
                    match parsed {
                        Ok(Decoded::Complete(header, len)) => {
                            i += len - had;
                            self.partial.clear();
                            let payload = header.payload_len as usize;
                            if payload > 0 {
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
                            self.scan = Scan::Opaque;
                            self.partial.clear();
                            i = data.len();
                        }
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Pushes `messages` and returns the stream so far and the first error.
    fn read(messages: &[&[u8]]) -> (String, Option<WsError>) {
        let mut r = Reassembler::default();
        let mut error = None;
        for m in messages {
            if let Err(e) = r.push_message(m) {
                error = Some(e);
                break;
            }
        }
        (String::from_utf8_lossy(r.buffered()).into_owned(), error)
    }

    fn mismatch(declared: u32, received: usize) -> Option<WsError> {
        Some(WsError::PayloadSizeMismatch { declared, received })
    }

    #[test]
    fn messages_split_anywhere_are_concatenated() {
        let wire = b"01r0001004echo00000005hellon003abc00000000R0002000000020k";
        for cuts in [&[1, 3, 10, 22, 25, 26, 40][..], &[2, 22, 27], &[]] {
            let mut messages = Vec::new();
            let mut from = 0;
            for &to in cuts.iter().chain([&wire.len()]) {
                messages.push(&wire[from..to]);
                from = to;
            }
            let (got, err) = read(&messages);
            assert_eq!(err, None, "{cuts:?}");
            assert_eq!(got.as_bytes(), wire);
        }
    }

    #[test]
    fn header_alone_then_exact_payload_is_fine() {
        let (got, err) = read(&[
            b"01",
            b"r0001004echo00000005",
            b"hello",
            b"n003abc00000003",
            b"x\0y",
        ]);
        assert_eq!(err, None);
        assert_eq!(got, "01r0001004echo00000005hellon003abc00000003x\0y");
    }

    #[test]
    fn short_payload_after_lone_header_is_a_mismatch() {
        let (got, err) = read(&[b"01", b"r0001004echo00000005", b"hel"]);
        assert_eq!(got, "01r0001004echo00000005");
        assert_eq!(err, mismatch(5, 3));
    }

    #[test]
    fn long_payload_is_never_read_into_the_next_frame() {
        let (got, err) = read(&[
            b"01",
            b"n003abc00000005",
            "h\u{e9}llo".as_bytes(),
            b"n003abc00000000",
        ]);
        assert_eq!(got, "01n003abc00000005");
        assert_eq!(err, mismatch(5, 6));
    }

    #[test]
    fn empty_message_cannot_be_a_payload() {
        let (_, err) = read(&[b"01", b"R000100000002", b""]);
        assert_eq!(err, mismatch(2, 0));
    }

    #[test]
    fn the_rule_needs_the_header_alone_in_its_message() {
        // With the version, or with the start of its payload, or split over
        // two messages: a plain byte stream, any split of the payload.
        for messages in [
            &[&b"01R000100000002"[..], b"o", b"k"][..],
            &[b"01", b"R000100000002o", b"k"],
            &[b"01", b"R0001", b"00000002", b"o", b"k"],
            &[b"01", b"h000000000000R000100000002", b"o", b"k"],
        ] {
            let (got, err) = read(messages);
            assert_eq!(err, None, "{messages:?}");
            let expect = messages.concat();
            assert_eq!(got.as_bytes(), expect, "{messages:?}");
        }
    }

    #[test]
    fn headers_without_payload_alone_set_no_expectation() {
        let (got, err) = read(&[b"01", b"h000000000000", b"n003abc00000000", b"h0000"]);
        assert_eq!(err, None);
        assert_eq!(got, "01h000000000000n003abc00000000h0000");
    }

    #[test]
    fn a_header_split_across_messages_is_tracked() {
        // The partial header is completed by the next message, so its
        // payload is known: the `h` after it starts a frame, and the header
        // alone after that is held to the rule.
        let (got, err) = read(&[
            b"01R00",
            b"0100000003abch000000000000",
            b"R000200000002",
            b"xyz",
        ]);
        assert_eq!(got, "01R000100000003abch000000000000R000200000002");
        assert_eq!(err, mismatch(2, 3));
    }

    #[test]
    fn garbage_passes_through_for_the_driver_to_judge() {
        let (got, err) = read(&[b"01", b"zzzz", b"R000100000002", b"more"]);
        assert_eq!(err, None);
        assert_eq!(got, "01zzzzR000100000002more");
    }

    #[test]
    fn read_into_moves_what_fits_and_drops_it() {
        let mut r = Reassembler::default();
        r.push_message(b"01h0000").unwrap();
        let mut two = [0u8; 2];
        let mut buf = tokio::io::ReadBuf::new(&mut two);
        assert_eq!(r.read_into(&mut buf), 2);
        assert_eq!(buf.filled(), b"01");
        assert_eq!(r.read_into(&mut buf), 0, "a full buffer takes nothing");
        r.push_message(b"00000000").unwrap();
        assert_eq!(r.buffered(), b"h000000000000");
    }
}
