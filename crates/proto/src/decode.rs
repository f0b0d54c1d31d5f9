//! Decoding without I/O: from a borrowed slice, or zero-copy out of a `BytesMut`.
//!
//! The header parser is hand-written: every field sits at a fixed offset
//! once the name length is known, so it reads each field in place. (It
//! started out on `nom`'s streaming combinators, which the `codec` benchmark
//! measured slower; `docs/benchmarks.md` keeps the figures.) Only complete fields
//! are judged, so the outcome for a prefix of the input never contradicts the
//! outcome for the whole input: feeding bytes in any chunking gives the same
//! messages and the same errors.
//!
//! Two parsers share that contract. A whole, well-formed header (nearly
//! every frame in a read buffer) takes `fast_header`: each hex field is one
//! 8-byte load converted as a word, with no bookkeeping for error reports.
//! Anything it turns down goes to `parse_header_exact`, which judges field
//! by field and says what is missing or wrong, and where. A proptest checks
//! that both accept exactly the same headers.

use core::ops::Range;

use bytes::{Buf, Bytes, BytesMut};

use crate::{
    DecodeError, Field, Message, MessageType, ProtocolErrorCode, RequestId, Text, hex,
    text::{Buffer, INLINE_NAME_LEN, InlineName},
};

/// Payload limit used by [`DecodeLimits::default`]: 16 MiB.
pub const DEFAULT_MAX_PAYLOAD: u32 = 16 * 1024 * 1024;

/// Bounds the decoder enforces on what a peer may declare.
///
/// A header declaring a payload above `max_payload` is refused with
/// [`DecodeError::PayloadTooLarge`] as soon as its size field is read, before
/// any buffer of that size is reserved.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct DecodeLimits {
    /// Largest payload accepted, in bytes. Defaults to [`DEFAULT_MAX_PAYLOAD`].
    pub max_payload: u32,
}

impl Default for DecodeLimits {
    fn default() -> Self {
        Self {
            max_payload: DEFAULT_MAX_PAYLOAD,
        }
    }
}

impl DecodeLimits {
    /// Limits with the given maximum payload size.
    pub const fn with_max_payload(max_payload: u32) -> Self {
        Self { max_payload }
    }

    /// The largest frame (header plus payload) these limits let through.
    pub const fn max_frame_len(&self) -> usize {
        crate::MAX_HEADER_LEN + self.max_payload as usize
    }
}

/// The outcome of a decode that did not fail, httparse-style.
#[derive(Clone, PartialEq, Eq, Debug)]
pub enum Decoded<T> {
    /// A whole item, and how many input bytes it took.
    Complete(T, usize),
    /// The input ends early: at least this many more bytes are needed (never 0).
    Incomplete(usize),
}

impl<T> Decoded<T> {
    /// The item, if complete.
    pub fn complete(self) -> Option<T> {
        match self {
            Self::Complete(t, _) => Some(t),
            Self::Incomplete(_) => None,
        }
    }

    /// Maps the item, keeping the byte count.
    pub fn map<U>(self, f: impl FnOnce(T) -> U) -> Decoded<U> {
        match self {
            Self::Complete(t, n) => Decoded::Complete(f(t), n),
            Self::Incomplete(n) => Decoded::Incomplete(n),
        }
    }
}

/// A parsed header: everything about a frame except its payload bytes.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct FrameHeader {
    /// The message type.
    pub message_type: MessageType,
    /// Header length in bytes, name included.
    pub header_len: usize,
    /// Payload length in bytes as declared (0 for `h` and `f`).
    pub payload_len: u32,
    id: RequestId,
    name: Range<usize>,
    /// wait (`e`), load (`h`) or code (`f`).
    aux: u32,
    /// time (`h`).
    time: u32,
}

impl FrameHeader {
    /// Total frame length: header plus payload.
    pub fn frame_len(&self) -> usize {
        self.header_len + self.payload_len as usize
    }

    /// Builds the message from a frame buffer whose header this is. `name`
    /// is called with the name's range for the types that carry one; its
    /// bytes were validated as UTF-8 by `parse_header`.
    #[inline(always)]
    fn message<B: Buffer>(
        &self,
        name: impl FnOnce(Range<usize>) -> Text<B>,
        payload: B,
    ) -> Message<B> {
        let id = self.id;
        match self.message_type {
            MessageType::SingleRequest => Message::SingleRequest {
                id,
                op: name(self.name.clone()),
                payload,
            },
            MessageType::StreamRequest => Message::StreamRequest {
                id,
                op: name(self.name.clone()),
                payload,
            },
            MessageType::StreamRequestPart => Message::StreamRequestPart { id, payload },
            MessageType::SingleResult => Message::SingleResult { id, payload },
            MessageType::StreamResult => Message::StreamResult { id, payload },
            MessageType::ErrorResult => Message::ErrorResult { id, payload },
            MessageType::RetryResult => Message::RetryResult {
                id,
                wait_ms: self.aux,
                payload,
            },
            MessageType::Notification => Message::Notification {
                name: name(self.name.clone()),
                payload,
            },
            MessageType::Heartbeat => Message::Heartbeat {
                load: self.aux as u16,
                time: self.time,
            },
            MessageType::ProtocolError => Message::ProtocolError {
                code: ProtocolErrorCode::from_u32(self.aux),
            },
        }
    }
}

/// Reads the fields of one header in place. `None` means the field is not
/// all there yet.
struct Fields<'a> {
    buf: &'a [u8],
}

impl Fields<'_> {
    #[inline(always)]
    fn hex(&self, at: usize, width: usize, field: Field) -> Result<Option<u32>, DecodeError> {
        let Some(digits) = self.buf.get(at..at + width) else {
            return Ok(None);
        };
        match hex::parse(digits) {
            Ok(v) => Ok(Some(v)),
            Err(i) => Err(DecodeError::InvalidHexDigit {
                field,
                byte: digits[i],
                offset: at + i,
            }),
        }
    }

    #[inline(always)]
    fn id(&self) -> Option<RequestId> {
        // One 4-byte load: assembling the ID byte by byte and reading it back
        // whole stalls store forwarding (it showed as 2/3 of decode's time).
        let bytes: [u8; 4] = self.buf.get(1..5)?.try_into().ok()?;
        Some(RequestId::new(bytes))
    }
}

/// The 8-digit payload size in `word` (read little-endian), or `None` if it
/// is not hex. In a stream of frames the next frame's address waits for
/// this value, so its latency is the decoder's speed: for a payload under
/// 64 KiB (the first four digits `0000`, a predicted branch) only the four
/// others are converted, one merging step less.
#[inline(always)]
fn payload_size(word: u64) -> Option<u32> {
    if word as u32 == u32::from_le_bytes(*b"0000") {
        hex::parse_word(word, 4)
    } else {
        hex::parse_word(word, 8)
    }
}

/// The 3-digit name size in the top bytes of `word`. By table, one lookup
/// per digit ([`hex::parse_top`]): the name's end, where the payload size
/// is read, waits for this value, and the three lookups side by side are
/// both fewer instructions and a shorter chain than the word-wide
/// conversion (callgrind, `steady`: 170 -> 147 instructions per request;
/// the payload size, whose word conversion measured faster, keeps it).
#[inline(always)]
fn name_size(word: u64) -> Option<u32> {
    hex::parse_top(word, 3)
}

/// The header at the start of `buf` if it is whole, well-formed and within
/// `limits`, else `None`: the fast path for the frames of a read buffer.
///
/// Each hex field is one unaligned 8-byte load checked and converted as a
/// word ([`hex::parse_word`]), and nothing is tracked for error reports.
/// Whatever it turns down (a short header, a bad field, a payload over the
/// limit) goes to [`parse_header_exact`], which says what is wrong and where;
/// both accept exactly the same headers (tested below).
#[inline(always)]
fn fast_header(buf: &[u8], limits: &DecodeLimits) -> Option<FrameHeader> {
    use MessageType::*;
    // Eight bytes from `at`, little-endian: the first in memory lowest.
    let word = |at: usize| -> Option<u64> {
        Some(u64::from_le_bytes(buf.get(at..at + 8)?.try_into().ok()?))
    };
    // Every header has at least nine bytes: the first eight hold the tag,
    // the ID where there is one and the digits after it, read from here.
    let first = word(0)?;
    let id = RequestId::new(((first >> 8) as u32).to_le_bytes());
    let message_type = MessageType::from_byte(first as u8)?;
    let mut header = FrameHeader {
        message_type,
        header_len: message_type.fixed_header_len(),
        payload_len: 0,
        id: RequestId::default(),
        name: 0..0,
        aux: 0,
        time: 0,
    };
    match message_type {
        SingleRequest | StreamRequest | Notification => {
            // The name size's three digits, moved to the top of the word.
            let (name_at, size_digits) = if message_type == Notification {
                (4, first << 32)
            } else {
                header.id = id;
                (8, first)
            };
            let len = name_size(size_digits)? as usize;
            header.header_len += len;
            let name = buf.get(name_at..name_at + len)?;
            // A whole header has the payload size's 8 digits after the name.
            let size = word(name_at + len)?;
            // A name of up to 8 bytes is checked in the word that starts
            // with it (in the buffer: the size's digits follow it); bytes
            // after the name are digits or refused below, so a high bit
            // among them only sends the name through the full check.
            let ascii = if len <= 8 {
                word(name_at)? & hex::HIGH == 0
            } else {
                name.is_ascii()
            };
            if !ascii && core::str::from_utf8(name).is_err() {
                return None;
            }
            header.name = name_at..name_at + len;
            header.payload_len = payload_size(size)?;
        }
        StreamRequestPart | SingleResult | StreamResult | ErrorResult => {
            header.id = id;
            header.payload_len = payload_size(word(5)?)?;
        }
        RetryResult => {
            header.id = id;
            header.aux = hex::parse_word(word(5)?, 8)?;
            header.payload_len = payload_size(word(13)?)?;
        }
        Heartbeat => {
            header.aux = hex::parse_word(first << 24, 4)?;
            header.time = hex::parse_word(word(5)?, 8)?;
        }
        ProtocolError => header.aux = hex::parse_word(word(1)?, 8)?,
    }
    (header.payload_len <= limits.max_payload).then_some(header)
}

/// Parses one frame header from the start of `buf`.
///
/// Returns [`Decoded::Incomplete`] with the number of bytes known to be
/// missing while the header is short, and an error as soon as a complete
/// field is malformed or the declared payload exceeds `limits`. Payload bytes
/// are not looked at: `Complete(header, header_len)` is returned as soon as the
/// header itself is whole.
#[inline(always)]
pub fn parse_header(
    buf: &[u8],
    limits: &DecodeLimits,
) -> Result<Decoded<FrameHeader>, DecodeError> {
    if let Some(header) = fast_header(buf, limits) {
        let len = header.header_len;
        return Ok(Decoded::Complete(header, len));
    }
    parse_header_exact(buf, limits)
}

/// [`parse_header`] field by field: the exact missing count for a short
/// header, the field and offset of a malformed one. Out of line: frames
/// that are whole and well-formed never come here.
#[inline(never)]
#[cold]
fn parse_header_exact(
    buf: &[u8],
    limits: &DecodeLimits,
) -> Result<Decoded<FrameHeader>, DecodeError> {
    let Some(&tag) = buf.first() else {
        return Ok(Decoded::Incomplete(1));
    };
    let message_type = MessageType::from_byte(tag).ok_or(DecodeError::UnknownMessageType {
        byte: tag,
        offset: 0,
    })?;
    let mut header = FrameHeader {
        message_type,
        header_len: message_type.fixed_header_len(),
        payload_len: 0,
        id: RequestId::default(),
        name: 0..0,
        aux: 0,
        time: 0,
    };
    match header_fields(buf, &mut header)? {
        Some(()) => {
            if header.payload_len > limits.max_payload {
                return Err(DecodeError::PayloadTooLarge {
                    declared: header.payload_len,
                    limit: limits.max_payload,
                    offset: header.header_len - 8,
                });
            }
            let len = header.header_len;
            Ok(Decoded::Complete(header, len))
        }
        // `header_len` includes the name once its size digits are in; until
        // then the fixed part is the least we can ask for.
        None => Ok(Decoded::Incomplete(header.header_len - buf.len())),
    }
}

/// Reads the fields after the type tag into `header`. `Ok(None)` when a
/// field is missing; every complete field before it has been checked.
#[inline(always)]
fn header_fields(buf: &[u8], header: &mut FrameHeader) -> Result<Option<()>, DecodeError> {
    use MessageType::*;
    let f = Fields { buf };
    let fixed = header.header_len;
    let size_at = match header.message_type {
        SingleRequest | StreamRequest | Notification => {
            let name_at = if header.message_type == Notification {
                4
            } else {
                header.id = match f.id() {
                    Some(id) => id,
                    None => return Ok(None),
                };
                8
            };
            let Some(len) = f.hex(name_at - 3, 3, Field::NameSize)? else {
                return Ok(None);
            };
            let len = len as usize;
            // Known from here on, so a short name asks for exactly what is missing.
            header.header_len = fixed + len;
            let Some(name) = buf.get(name_at..name_at + len) else {
                return Ok(None);
            };
            // Names are nearly always ASCII: check that inline before paying
            // for the out-of-line UTF-8 validator.
            if !name.is_ascii() && core::str::from_utf8(name).is_err() {
                return Err(DecodeError::InvalidUtf8 {
                    field: Field::Name,
                    offset: name_at,
                });
            }
            header.name = name_at..name_at + len;
            name_at + len
        }
        StreamRequestPart | SingleResult | StreamResult | ErrorResult => {
            header.id = match f.id() {
                Some(id) => id,
                None => return Ok(None),
            };
            5
        }
        RetryResult => {
            header.id = match f.id() {
                Some(id) => id,
                None => return Ok(None),
            };
            let Some(wait) = f.hex(5, 8, Field::Wait)? else {
                return Ok(None);
            };
            header.aux = wait;
            13
        }
        Heartbeat => {
            let Some(load) = f.hex(1, 4, Field::Load)? else {
                return Ok(None);
            };
            let Some(time) = f.hex(5, 8, Field::Time)? else {
                return Ok(None);
            };
            header.aux = load;
            header.time = time;
            return Ok(Some(()));
        }
        ProtocolError => {
            let Some(code) = f.hex(1, 8, Field::Code)? else {
                return Ok(None);
            };
            header.aux = code;
            return Ok(Some(()));
        }
    };
    let Some(size) = f.hex(size_at, 8, Field::PayloadSize)? else {
        return Ok(None);
    };
    header.payload_len = size;
    Ok(Some(()))
}

/// The header of the frame at the start of `buf` and the frame's length,
/// or how many bytes are missing for the whole frame.
#[inline(always)]
fn whole_frame(
    buf: &[u8],
    limits: &DecodeLimits,
) -> Result<Result<(FrameHeader, usize), usize>, DecodeError> {
    let header = match parse_header(buf, limits)? {
        Decoded::Complete(h, _) => h,
        Decoded::Incomplete(n) => return Ok(Err(n)),
    };
    let total = header.frame_len();
    if buf.len() < total {
        return Ok(Err(total - buf.len()));
    }
    Ok(Ok((header, total)))
}

/// A copy of the name at `name` in a whole header at the start of `buf`,
/// `name.len()` at most [`INLINE_NAME_LEN`]: whole words, as the payload
/// size's 8 digits follow the name, so each word read is within the
/// header (the bytes after the name come along and are ignored).
#[inline(always)]
fn inline_name(buf: &[u8], name: &Range<usize>) -> InlineName {
    debug_assert!(!name.is_empty() && name.len() <= INLINE_NAME_LEN && name.end + 8 <= buf.len());
    let mut bytes = [0; INLINE_NAME_LEN + 1];
    for (i, chunk) in bytes.chunks_exact_mut(8).enumerate() {
        // Words past the name are not read; those read end by `name.end + 8`.
        if i * 8 < name.len() {
            if let Some(word) = buf.get(name.start + i * 8..name.start + i * 8 + 8) {
                chunk.copy_from_slice(word);
            }
        }
    }
    InlineName::new(bytes, name.len())
}

/// Decodes one message borrowing from `buf`.
///
/// ```
/// use gotalk_proto::{decode, Decoded, DecodeLimits, Message};
/// let wire = b"r0001005hello00000005worldR0001...";
/// let Decoded::Complete(msg, used) = decode(wire, &DecodeLimits::default()).unwrap() else {
///     panic!("incomplete")
/// };
/// assert_eq!(used, 26);
/// let Message::SingleRequest { op, payload, .. } = msg else { panic!() };
/// assert_eq!((op.as_str(), payload), ("hello", &b"world"[..]));
/// ```
// Inlined for the same reason as `decode_bytes` (see there).
#[inline(always)]
pub fn decode<'a>(
    buf: &'a [u8],
    limits: &DecodeLimits,
) -> Result<Decoded<Message<&'a [u8]>>, DecodeError> {
    let (header, total) = match whole_frame(buf, limits)? {
        Ok(frame) => frame,
        Err(missing) => return Ok(Decoded::Incomplete(missing)),
    };
    let message = header.message(
        |r| Text::from_validated(&buf[r]),
        &buf[header.header_len..total],
    );
    Ok(Decoded::Complete(message, total))
}

/// Decodes one message from the front of `buf`, zero-copy.
///
/// On `Complete` the frame is split off `buf`; the payload of the returned
/// message is a slice of the same allocation, not a copy, and so is a name
/// over 23 bytes; a shorter name is copied into its [`Text`], which then
/// holds no reference to the buffer (one reference count less to take and
/// drop per request). On `Incomplete` and on error `buf` is left untouched.
///
/// ```
/// use bytes::BytesMut;
/// use gotalk_proto::{decode_bytes, Decoded, DecodeLimits, Message};
/// let mut buf = BytesMut::from(&b"R000100000002hiR0002"[..]);
/// let start = buf.as_ptr() as usize;
/// let Decoded::Complete(Message::SingleResult { payload, .. }, 15) =
///     decode_bytes(&mut buf, &DecodeLimits::default()).unwrap() else { panic!() };
/// assert_eq!(payload.as_ptr() as usize, start + 13); // points into the read buffer
/// assert_eq!(&buf[..], b"R0002");
/// ```
// Inlined into every caller, so the message is built where the caller
// keeps it. Returned through memory, it was written field by field and read
// back in 16-byte moves, which stalls store forwarding: `perf` put 75 % of
// the caller's samples on that one load, 14 of 40 ns per small frame.
#[inline(always)]
pub fn decode_bytes(
    buf: &mut BytesMut,
    limits: &DecodeLimits,
) -> Result<Decoded<Message<Bytes>>, DecodeError> {
    let (header, total) = match whole_frame(buf, limits)? {
        Ok(frame) => frame,
        Err(missing) => return Ok(Decoded::Incomplete(missing)),
    };
    let header_len = header.header_len;
    let name = header.name.clone();
    // A short name is copied out of the buffer (no reference to it: the
    // read buffer's one counter is touched once per frame, not twice).
    let inline =
        (!name.is_empty() && name.len() <= INLINE_NAME_LEN).then(|| inline_name(buf, &name));
    let shared_name = !name.is_empty() && inline.is_none();
    let named = move |shared: Option<Bytes>| match (shared, inline) {
        (Some(bytes), _) => Text::from_validated(bytes),
        (None, Some(name)) => Text::from_validated_inline(name),
        (None, None) => Text::from_static(""),
    };
    let message = if total == header_len && !shared_name {
        // Nothing to hand out by reference (heartbeats, protocol errors,
        // empty results, short names without a payload).
        buf.advance(total);
        header.message(|_| named(None), Bytes::new())
    } else {
        // One split per frame, then views of it: a `Bytes` handle for a
        // non-empty payload and a long name, each one reference count, and
        // no further `BytesMut` surgery (each split or advance of a
        // `BytesMut` re-checks its representation; the frame's `Bytes` is
        // plain).
        let mut frame = buf.split_to(total).freeze();
        if total == header_len {
            // A long name and an empty payload: the frame becomes the name.
            frame.truncate(name.end);
            frame.advance(name.start);
            header.message(|_| named(Some(frame)), Bytes::new())
        } else {
            let shared = shared_name.then(|| frame.slice(name));
            frame.advance(header_len);
            header.message(|_| named(shared), frame)
        }
    };
    Ok(Decoded::Complete(message, total))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> DecodeLimits {
        DecodeLimits::default()
    }

    #[test]
    fn incomplete_reports_known_missing_bytes() {
        assert_eq!(parse_header(b"", &limits()), Ok(Decoded::Incomplete(1)));
        assert_eq!(
            parse_header(b"r", &limits()).unwrap(),
            Decoded::Incomplete(15)
        );
        // name size known: 16 fixed + 4 name
        assert_eq!(
            parse_header(b"r0001004ec", &limits()).unwrap(),
            Decoded::Incomplete(10)
        );
        assert_eq!(
            decode(b"R00010000000ahello", &limits()).unwrap(),
            Decoded::Incomplete(5)
        );
    }

    #[test]
    fn errors_name_field_and_offset() {
        assert_eq!(
            decode(b"R0001000000g0", &limits()).unwrap_err(),
            DecodeError::InvalidHexDigit {
                field: Field::PayloadSize,
                byte: b'g',
                offset: 11
            }
        );
        assert_eq!(
            decode(b"r0001zz4echo00000000", &limits()).unwrap_err(),
            DecodeError::InvalidHexDigit {
                field: Field::NameSize,
                byte: b'z',
                offset: 5
            }
        );
        assert_eq!(
            decode(b"r0001002\xff\xfe00000000", &limits()).unwrap_err(),
            DecodeError::InvalidUtf8 {
                field: Field::Name,
                offset: 8
            }
        );
        assert_eq!(
            decode(b"e0001000000x0", &limits()).unwrap_err(),
            DecodeError::InvalidHexDigit {
                field: Field::Wait,
                byte: b'x',
                offset: 11
            }
        );
    }

    #[test]
    fn bad_field_is_reported_before_a_later_short_field() {
        // the wait field is complete and bad even though the size is missing
        assert!(decode(b"e0001zzzzzzzz", &limits()).is_err());
    }

    #[test]
    fn payload_limit_checked_at_header() {
        let l = DecodeLimits::with_max_payload(4);
        assert_eq!(
            parse_header(b"R000100000005", &l).unwrap_err(),
            DecodeError::PayloadTooLarge {
                declared: 5,
                limit: 4,
                offset: 5
            }
        );
        assert!(matches!(
            parse_header(b"R000100000004", &l),
            Ok(Decoded::Complete(_, 13))
        ));
    }

    #[test]
    fn zero_copy_payload_and_long_name_short_name_copied() {
        let mut buf = BytesMut::from(&b"n003log00000003abcR"[..]);
        let base = buf.as_ptr() as usize;
        let Decoded::Complete(Message::Notification { name, payload }, 18) =
            decode_bytes(&mut buf, &limits()).unwrap()
        else {
            panic!("not a notification")
        };
        assert_eq!(name.as_str(), "log");
        assert!(name.is_inline());
        assert_eq!(payload.as_ptr() as usize, base + 15);
        assert_eq!(&buf[..], b"R");

        let long = "a-name-of-24-bytes-long.";
        let wire = format!("n018{long}00000003abc");
        let mut buf = BytesMut::from(wire.as_bytes());
        let base = buf.as_ptr() as usize;
        let Decoded::Complete(Message::Notification { name, payload }, _) =
            decode_bytes(&mut buf, &limits()).unwrap()
        else {
            panic!("not a notification")
        };
        assert_eq!(name.as_str(), long);
        assert!(!name.is_inline());
        assert_eq!(name.as_bytes().as_ptr() as usize, base + 4);
        assert_eq!(payload.as_ptr() as usize, base + 36);
    }

    /// Every name length around the inline limit and the word boundaries of
    /// its copy, with and without a payload, alone in the buffer (so the
    /// copy's last word ends at the header's end) and followed by more.
    #[test]
    fn names_of_every_short_length_round_trip() {
        for len in 0..=INLINE_NAME_LEN + 2 {
            let op: String = "abcdefghijklmnopqrstuvwxyz"
                .chars()
                .cycle()
                .take(len)
                .collect();
            for payload in [&b""[..], b"xy"] {
                for tail in [&b""[..], b"h000254d7de9a"] {
                    let msg = Message::SingleRequest {
                        id: RequestId::new(*b"0001"),
                        op: Text::from(op.as_str()),
                        payload: Bytes::copy_from_slice(payload),
                    };
                    let mut wire = msg.to_vec().unwrap();
                    let frame_len = wire.len();
                    wire.extend_from_slice(tail);
                    let mut buf = BytesMut::from(&wire[..]);
                    let Decoded::Complete(decoded, used) =
                        decode_bytes(&mut buf, &limits()).unwrap()
                    else {
                        panic!("incomplete")
                    };
                    assert_eq!((decoded.clone(), used), (msg, frame_len));
                    let Message::SingleRequest { op: name, .. } = decoded else {
                        panic!()
                    };
                    assert_eq!(name.as_str(), op);
                    assert_eq!(name.is_inline(), (1..=INLINE_NAME_LEN).contains(&len));
                    assert_eq!(&buf[..], tail);
                }
            }
        }
    }

    /// The shortened conversions (a payload size whose first four digits
    /// are `0000`, a name size whose first digit is `0`) at and around
    /// their bounds, and with a bad digit where the shortcut does not look.
    #[test]
    fn short_size_conversions_agree_with_the_exact_parser_at_their_bounds() {
        let limits = DecodeLimits::with_max_payload(u32::MAX);
        let mut headers: Vec<Vec<u8>> = Vec::new();
        for size in [
            "00000000", "0000ffff", "0000FFFF", "00010000", "0000fffg", "000g0000", "g0000000",
            "ffffffff", "0000 fff", "00000 ff",
        ] {
            headers.push(format!("R0001{size}").into_bytes());
            headers.push(format!("r0001000{size}").into_bytes());
            headers.push(format!("e0001{size}{size}").into_bytes());
        }
        for name_size in ["000", "0ff", "0FF", "100", "fff", "0g0", "00g", "g00"] {
            let mut header = format!("n{name_size}").into_bytes();
            header.resize(4 + 0xfff, b'a');
            header.extend_from_slice(b"00000000");
            headers.push(header);
        }
        for buf in headers {
            let exact = parse_header_exact(&buf, &limits);
            match fast_header(&buf, &limits) {
                Some(header) => {
                    let len = header.header_len;
                    assert_eq!(exact, Ok(Decoded::Complete(header, len)));
                }
                None => assert!(!matches!(exact, Ok(Decoded::Complete(..))), "{buf:?}"),
            }
        }
    }

    /// Header-like bytes: a tag (sometimes not one), then mostly `0` and
    /// hex digits so that lengths stay small and frames come out whole,
    /// with any byte now and then.
    fn headerish() -> impl proptest::strategy::Strategy<Value = Vec<u8>> {
        use proptest::prelude::*;
        let tag = prop_oneof![
            9 => proptest::sample::select(b"rspRSEenhf".to_vec()),
            1 => any::<u8>(),
        ];
        let byte = prop_oneof![
            6 => Just(b'0'),
            3 => proptest::sample::select(b"0123456789abcdefABCDEF".to_vec()),
            1 => any::<u8>(),
        ];
        (tag, proptest::collection::vec(byte, 0..40)).prop_map(|(tag, mut rest)| {
            rest.insert(0, tag);
            rest
        })
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(20_000))]

        /// The word-at-a-time fast path takes exactly the headers the
        /// field-by-field parser finds whole and valid, with the same result.
        #[test]
        fn fast_header_agrees_with_the_exact_parser(
            buf in headerish(),
            max_payload in proptest::prop_oneof![proptest::strategy::Just(u32::MAX), 0u32..64],
        ) {
            let limits = DecodeLimits::with_max_payload(max_payload);
            let exact = parse_header_exact(&buf, &limits);
            match fast_header(&buf, &limits) {
                Some(header) => {
                    let len = header.header_len;
                    proptest::prop_assert_eq!(exact, Ok(Decoded::Complete(header, len)));
                }
                None => proptest::prop_assert!(
                    !matches!(exact, Ok(Decoded::Complete(..))),
                    "fast path refused {:?}, exact parser gave {:?}", buf, exact
                ),
            }
        }
    }

    #[test]
    fn untouched_on_incomplete_and_error() {
        let mut buf = BytesMut::from(&b"R0001000000"[..]);
        assert!(matches!(
            decode_bytes(&mut buf, &limits()),
            Ok(Decoded::Incomplete(2))
        ));
        assert_eq!(buf.len(), 11);
        let mut bad = BytesMut::from(&b"x0001"[..]);
        assert!(decode_bytes(&mut bad, &limits()).is_err());
        assert_eq!(&bad[..], b"x0001");
    }
}
