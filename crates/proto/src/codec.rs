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

impl Decoder for GotalkCodec {
    type Item = Message<Bytes>;
    type Error = CodecError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Self::Item>, CodecError> {
        match decode_bytes(src, &self.limits) {
            Ok(Decoded::Complete(msg, used)) => {
                self.decoded_bytes += used as u64;
                Ok(Some(msg))
            }
            Ok(Decoded::Incomplete(missing)) => {
                src.reserve(missing);
                Ok(None)
            }
            Err(error) => Err(CodecError::Decode {
                error,
                stream_offset: self.decoded_bytes,
            }),
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
