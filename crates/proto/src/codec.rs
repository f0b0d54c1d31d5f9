//! tokio-util `Decoder`/`Encoder` (feature `codec`).

use core::fmt;
use std::io;

use bytes::{Bytes, BytesMut};
use tokio_util::codec::{Decoder, Encoder};

use crate::{DecodeError, DecodeLimits, Decoded, EncodeError, Message, decode_bytes, text::Buffer};

/// Frames gotalk messages on a byte stream, for `tokio_util::codec::Framed`.
///
/// Decoding is zero-copy: payloads are slices of the read buffer. The codec
/// reserves exactly the bytes the current frame still lacks (never more than
/// one maximum frame, see [`DecodeLimits`]) so a peer declaring a huge payload
/// costs nothing. The version handshake is not part of the codec; exchange
/// [`VERSION_BYTES`](crate::VERSION_BYTES) first.
///
/// ```
/// use bytes::BytesMut;
/// use gotalk_proto::{GotalkCodec, Message};
/// use tokio_util::codec::Decoder;
/// let mut codec = GotalkCodec::default();
/// let mut buf = BytesMut::from(&b"h000254d7de9a"[..]);
/// let msg = codec.decode(&mut buf).unwrap().unwrap();
/// assert_eq!(msg, Message::Heartbeat { load: 2, time: 0x54d7de9a });
/// ```
#[derive(Clone, Debug, Default)]
pub struct GotalkCodec {
    limits: DecodeLimits,
    decoded_bytes: u64,
}

impl GotalkCodec {
    /// A codec with the given limits.
    pub fn new(limits: DecodeLimits) -> Self {
        Self {
            limits,
            decoded_bytes: 0,
        }
    }

    /// The limits in force.
    pub fn limits(&self) -> &DecodeLimits {
        &self.limits
    }

    /// Bytes of complete frames decoded so far: the stream offset at which
    /// the next frame starts (add the handshake's 2 bytes for a raw capture).
    pub fn decoded_bytes(&self) -> u64 {
        self.decoded_bytes
    }
}

impl GotalkCodec {
    /// Decodes the frame at the front of `src`, counting its bytes once
    /// whole and placing an error at the frame's stream offset.
    #[inline(always)]
    fn decode_frame(&mut self, src: &mut BytesMut) -> Result<Decoded<Message<Bytes>>, CodecError> {
        match decode_bytes(src, &self.limits) {
            Ok(decoded) => {
                if let Decoded::Complete(_, used) = decoded {
                    self.decoded_bytes += used as u64;
                }
                Ok(decoded)
            }
            Err(error) => Err(self.error_here(error)),
        }
    }

    // Out of line: errors are rare.
    #[cold]
    #[inline(never)]
    fn error_here(&self, error: DecodeError) -> CodecError {
        CodecError::Decode {
            error,
            stream_offset: self.decoded_bytes,
        }
    }
}

impl Decoder for GotalkCodec {
    type Item = Message<Bytes>;
    type Error = CodecError;

    // Inlined into `FramedRead`, like `decode_bytes` into this: each call
    // frame a message is returned through costs a copy of it.
    #[inline]
    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Self::Item>, CodecError> {
        match self.decode_frame(src)? {
            Decoded::Complete(msg, _) => Ok(Some(msg)),
            Decoded::Incomplete(missing) => {
                src.reserve(missing);
                Ok(None)
            }
        }
    }

    /// Like [`decode`](Self::decode), but the stream has ended: bytes left
    /// that are not a whole frame are a [`DecodeError::Truncated`] at the
    /// frame's stream offset, rather than tokio-util's untyped "bytes
    /// remaining on stream" I/O error, so the caller learns where the peer
    /// cut off and which ProtocolError that is.
    fn decode_eof(&mut self, src: &mut BytesMut) -> Result<Option<Self::Item>, CodecError> {
        match self.decode_frame(src)? {
            Decoded::Complete(msg, _) => Ok(Some(msg)),
            Decoded::Incomplete(_) if src.is_empty() => Ok(None),
            // Nothing more will come, so nothing is reserved.
            Decoded::Incomplete(missing) => Err(self.error_here(DecodeError::Truncated {
                offset: src.len(),
                missing,
            })),
        }
    }
}

impl<B: Buffer> Encoder<Message<B>> for GotalkCodec {
    type Error = CodecError;

    fn encode(&mut self, item: Message<B>, dst: &mut BytesMut) -> Result<(), CodecError> {
        Encoder::encode(self, &item, dst)
    }
}

impl<B: Buffer> Encoder<&Message<B>> for GotalkCodec {
    type Error = CodecError;

    fn encode(&mut self, item: &Message<B>, dst: &mut BytesMut) -> Result<(), CodecError> {
        item.validate()?;
        dst.reserve(item.encoded_len());
        item.encode(dst)?;
        Ok(())
    }
}

/// Errors of [`GotalkCodec`].
#[derive(Debug)]
#[non_exhaustive]
pub enum CodecError {
    /// The peer sent a malformed frame.
    Decode {
        /// What was wrong; its offset is relative to the frame start.
        error: DecodeError,
        /// Stream offset of the frame start (bytes decoded before it).
        stream_offset: u64,
    },
    /// A message given to the encoder breaks the wire format's limits.
    Encode(EncodeError),
    /// The underlying stream failed.
    Io(io::Error),
}

impl fmt::Display for CodecError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Decode {
                error,
                stream_offset,
            } => write!(f, "frame at stream offset {stream_offset}: {error}"),
            Self::Encode(e) => write!(f, "cannot encode message: {e}"),
            Self::Io(e) => write!(f, "i/o error: {e}"),
        }
    }
}

impl std::error::Error for CodecError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Decode { error, .. } => Some(error),
            Self::Encode(e) => Some(e),
            Self::Io(e) => Some(e),
        }
    }
}

impl From<io::Error> for CodecError {
    fn from(e: io::Error) -> Self {
        Self::Io(e)
    }
}

impl From<EncodeError> for CodecError {
    fn from(e: EncodeError) -> Self {
        Self::Encode(e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reserves_only_what_the_frame_lacks() {
        let mut codec = GotalkCodec::new(DecodeLimits::with_max_payload(1 << 20));
        let mut buf = BytesMut::from(&b"R000100001000"[..]);
        assert!(codec.decode(&mut buf).unwrap().is_none());
        assert!(buf.capacity() >= 13 + 0x1000);
        assert!(buf.capacity() < 2 * (13 + 0x1000) + 64);
    }

    #[test]
    fn huge_declared_size_reserves_nothing() {
        let mut codec = GotalkCodec::default();
        let mut buf = BytesMut::from(&b"R0001ffffffff"[..]);
        let cap = buf.capacity();
        let err = codec.decode(&mut buf).unwrap_err();
        assert!(matches!(
            err,
            CodecError::Decode {
                error: DecodeError::PayloadTooLarge { .. },
                stream_offset: 0
            }
        ));
        assert_eq!(buf.capacity(), cap);
    }

    /// Runs `decode_eof` over `wire` until it yields no more frames or fails.
    fn drain_eof(codec: &mut GotalkCodec, wire: &[u8]) -> (usize, Result<(), CodecError>) {
        let mut buf = BytesMut::from(wire);
        let mut frames = 0;
        loop {
            match codec.decode_eof(&mut buf) {
                Ok(Some(_)) => frames += 1,
                Ok(None) => return (frames, Ok(())),
                Err(e) => return (frames, Err(e)),
            }
        }
    }

    #[test]
    fn eof_with_an_empty_buffer_is_the_end() {
        let mut codec = GotalkCodec::default();
        let mut buf = BytesMut::new();
        assert!(codec.decode_eof(&mut buf).unwrap().is_none());
    }

    #[test]
    fn eof_still_decodes_whole_frames() {
        let mut codec = GotalkCodec::default();
        let (frames, end) = drain_eof(&mut codec, b"R000100000002hih000100000002");
        assert_eq!(frames, 2);
        assert!(end.is_ok());
        assert_eq!(codec.decoded_bytes(), 28);
    }

    #[test]
    fn eof_inside_a_payload_is_truncated_with_the_exact_shortfall() {
        let mut codec = GotalkCodec::default();
        let (frames, end) = drain_eof(&mut codec, b"h000100000002R00010000000ahello");
        assert_eq!(frames, 1);
        match end.unwrap_err() {
            CodecError::Decode {
                error,
                stream_offset,
            } => {
                assert_eq!(stream_offset, 13);
                assert_eq!(
                    error,
                    DecodeError::Truncated {
                        offset: 18,
                        missing: 5
                    }
                );
                assert_eq!(
                    error.protocol_error_code(),
                    crate::ProtocolErrorCode::InvalidMessage
                );
            }
            other => panic!("expected a truncated frame, got {other:?}"),
        }
    }

    #[test]
    fn eof_inside_a_header_is_truncated_with_what_the_header_lacks() {
        let mut codec = GotalkCodec::default();
        let mut buf = BytesMut::from(&b"r0001004ec"[..]);
        let err = codec.decode_eof(&mut buf).unwrap_err();
        assert_eq!(
            err.to_string(),
            "frame at stream offset 0: truncated frame: the input ends at byte 10, 10 more bytes needed"
        );
    }

    #[test]
    fn eof_reserves_nothing_for_bytes_that_will_never_come() {
        let mut codec = GotalkCodec::default();
        let mut buf = BytesMut::from(&b"R0001000f0000"[..]);
        let cap = buf.capacity();
        assert!(matches!(
            codec.decode_eof(&mut buf).unwrap_err(),
            CodecError::Decode {
                error: DecodeError::Truncated {
                    offset: 13,
                    missing: 0xf_0000
                },
                stream_offset: 0
            }
        ));
        assert_eq!(buf.capacity(), cap);
    }

    #[test]
    fn eof_reports_malformed_bytes_as_malformed_not_truncated() {
        let mut codec = GotalkCodec::default();
        let mut buf = BytesMut::from(&b"R0001000z0000"[..]);
        assert!(matches!(
            codec.decode_eof(&mut buf).unwrap_err(),
            CodecError::Decode {
                error: DecodeError::InvalidHexDigit { offset: 8, .. },
                ..
            }
        ));
        // Only complete fields are judged: a field cut short is truncated.
        let mut buf = BytesMut::from(&b"R0001000z"[..]);
        assert!(matches!(
            codec.decode_eof(&mut buf).unwrap_err(),
            CodecError::Decode {
                error: DecodeError::Truncated { offset: 9, .. },
                ..
            }
        ));
    }

    #[test]
    fn stream_offset_counts_previous_frames() {
        let mut codec = GotalkCodec::default();
        let mut buf = BytesMut::from(&b"R000100000000x"[..]);
        assert!(codec.decode(&mut buf).unwrap().is_some());
        let err = codec.decode(&mut buf).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("frame at stream offset 13: unknown message type 'x'")
        );
    }
}
