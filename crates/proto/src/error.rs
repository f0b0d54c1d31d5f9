//! Typed errors: what was malformed, where, and which ProtocolError answers it.

use core::fmt;

use crate::ProtocolErrorCode;

/// A field of a message header (or the version handshake), named in errors.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum Field {
    /// The one-byte message type tag.
    MessageType,
    /// The three hex digits giving the byte length of an operation or notification name.
    NameSize,
    /// The operation or notification name itself.
    Name,
    /// The eight hex digits giving the payload size.
    PayloadSize,
    /// The retry wait (milliseconds) of a `e` RetryResult.
    Wait,
    /// The load of a `h` Heartbeat.
    Load,
    /// The unix time of a `h` Heartbeat.
    Time,
    /// The code of a `f` ProtocolError.
    Code,
    /// The two hex digits of the protocol version handshake.
    Version,
}

impl Field {
    /// The field's name as used in error messages.
    pub const fn name(self) -> &'static str {
        match self {
            Self::MessageType => "message type",
            Self::NameSize => "name size",
            Self::Name => "name",
            Self::PayloadSize => "payload size",
            Self::Wait => "retry wait",
            Self::Load => "heartbeat load",
            Self::Time => "heartbeat time",
            Self::Code => "protocol error code",
            Self::Version => "protocol version",
        }
    }
}

impl fmt::Display for Field {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Why bytes received from the peer are not a valid gotalk message.
///
/// Every variant but [`UnsupportedVersion`](Self::UnsupportedVersion) gives a
/// byte offset, counted from the start of the input handed to the decoder
/// (the start of the frame), and the malformed ones name the offending field.
/// The peer that sent such bytes broke the protocol:
/// [`protocol_error_code`](Self::protocol_error_code) says which
/// `f` ProtocolError to answer with before closing.
#[derive(Clone, PartialEq, Eq, Debug)]
#[non_exhaustive]
pub enum DecodeError {
    /// The first byte is not one of `r s p R S E e n h f`.
    UnknownMessageType {
        /// The byte received.
        byte: u8,
        /// Where it was.
        offset: usize,
    },
    /// A numeric field holds something other than `0-9a-fA-F`.
    InvalidHexDigit {
        /// The field being read.
        field: Field,
        /// The byte received.
        byte: u8,
        /// Where it was.
        offset: usize,
    },
    /// An operation or notification name is not valid UTF-8.
    InvalidUtf8 {
        /// The field being read (always [`Field::Name`]).
        field: Field,
        /// Offset of the first byte of the name.
        offset: usize,
    },
    /// The header declares a payload larger than the configured limit. It is
    /// refused before any buffer of that size exists.
    PayloadTooLarge {
        /// The size the header declares.
        declared: u32,
        /// The configured maximum.
        limit: u32,
        /// Offset of the payload size field.
        offset: usize,
    },
    /// The peer speaks a protocol version we do not.
    UnsupportedVersion {
        /// The version the peer announced.
        version: u8,
    },
    /// The input ended inside a frame: the stream closed before the frame
    /// was whole. Only reported once the stream has ended (`decode_eof` of
    /// the codec); until then a short frame is
    /// [`Decoded::Incomplete`](crate::Decoded::Incomplete), not an error.
    Truncated {
        /// Where the input ended: how many bytes of the frame arrived.
        offset: usize,
        /// How many more bytes the frame needed: exact once its header was
        /// whole; before that the payload size is unknown, so this is what
        /// the header alone still lacked.
        missing: usize,
    },
}

impl DecodeError {
    /// The ProtocolError code to send the peer before closing the connection.
    pub const fn protocol_error_code(&self) -> ProtocolErrorCode {
        match self {
            Self::UnsupportedVersion { .. } => ProtocolErrorCode::Unsupported,
            _ => ProtocolErrorCode::InvalidMessage,
        }
    }

    /// Byte offset of the problem, relative to the start of the decoded input.
    pub const fn offset(&self) -> Option<usize> {
        match self {
            Self::UnknownMessageType { offset, .. }
            | Self::InvalidHexDigit { offset, .. }
            | Self::InvalidUtf8 { offset, .. }
            | Self::PayloadTooLarge { offset, .. }
            | Self::Truncated { offset, .. } => Some(*offset),
            Self::UnsupportedVersion { .. } => None,
        }
    }

    /// The field that was malformed, if the error concerns one.
    pub const fn field(&self) -> Option<Field> {
        match self {
            Self::UnknownMessageType { .. } => Some(Field::MessageType),
            Self::InvalidHexDigit { field, .. } | Self::InvalidUtf8 { field, .. } => Some(*field),
            Self::PayloadTooLarge { .. } => Some(Field::PayloadSize),
            Self::UnsupportedVersion { .. } => Some(Field::Version),
            Self::Truncated { .. } => None,
        }
    }
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::UnknownMessageType { byte, offset } => write!(
                f,
                "unknown message type {:?} at byte {offset}",
                char::from(*byte)
            ),
            Self::InvalidHexDigit {
                field,
                byte,
                offset,
            } => write!(
                f,
                "invalid {field}: {:?} is not a hex digit (byte {offset})",
                char::from(*byte)
            ),
            Self::InvalidUtf8 { field, offset } => {
                write!(f, "invalid {field}: not UTF-8 (starting at byte {offset})")
            }
            Self::PayloadTooLarge {
                declared,
                limit,
                offset,
            } => write!(
                f,
                "payload of {declared} bytes exceeds the limit of {limit} bytes (size at byte {offset})"
            ),
            Self::UnsupportedVersion { version } => write!(
                f,
                "unsupported protocol version {version:02x} (this side speaks {:02x})",
                crate::PROTOCOL_VERSION
            ),
            Self::Truncated { offset, missing } => write!(
                f,
                "truncated frame: the input ends at byte {offset}, {missing} more bytes needed"
            ),
        }
    }
}

impl std::error::Error for DecodeError {}

/// Why a message cannot be encoded. These are the local caller's mistakes;
/// nothing is written when one is returned.
#[derive(Clone, PartialEq, Eq, Debug)]
#[non_exhaustive]
pub enum EncodeError {
    /// Names are at most [`MAX_NAME_LEN`](crate::MAX_NAME_LEN) (4095) bytes of UTF-8.
    NameTooLong {
        /// The name's length in bytes.
        len: usize,
    },
    /// Payloads are at most [`MAX_PAYLOAD_LEN`](crate::MAX_PAYLOAD_LEN) (0xffffffff) bytes.
    PayloadTooLarge {
        /// The payload's length in bytes.
        len: usize,
    },
    /// The destination buffer has a fixed capacity that cannot take the message.
    BufferTooSmall {
        /// Bytes the message needs.
        needed: usize,
        /// Bytes the buffer has left.
        remaining: usize,
    },
}

impl fmt::Display for EncodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NameTooLong { len } => write!(
                f,
                "name of {len} bytes is longer than the maximum of {} bytes",
                crate::MAX_NAME_LEN
            ),
            Self::PayloadTooLarge { len } => write!(
                f,
                "payload of {len} bytes is larger than the maximum of {} bytes",
                crate::MAX_PAYLOAD_LEN
            ),
            Self::BufferTooSmall { needed, remaining } => write!(
                f,
                "message needs {needed} bytes but the buffer has {remaining} left"
            ),
        }
    }
}

impl std::error::Error for EncodeError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_and_messages() {
        let e = DecodeError::InvalidHexDigit {
            field: Field::PayloadSize,
            byte: b'g',
            offset: 12,
        };
        assert_eq!(e.protocol_error_code(), ProtocolErrorCode::InvalidMessage);
        assert_eq!(e.offset(), Some(12));
        assert_eq!(
            e.to_string(),
            "invalid payload size: 'g' is not a hex digit (byte 12)"
        );
        let v = DecodeError::UnsupportedVersion { version: 2 };
        assert_eq!(v.protocol_error_code(), ProtocolErrorCode::Unsupported);
        assert_eq!(
            v.to_string(),
            "unsupported protocol version 02 (this side speaks 01)"
        );
        let t = DecodeError::Truncated {
            offset: 13,
            missing: 5,
        };
        // A frame cut short is an invalid message, like any malformed one.
        assert_eq!(t.protocol_error_code(), ProtocolErrorCode::InvalidMessage);
        assert_eq!(t.offset(), Some(13));
        assert_eq!(t.field(), None);
        assert_eq!(
            t.to_string(),
            "truncated frame: the input ends at byte 13, 5 more bytes needed"
        );
        assert!(
            EncodeError::NameTooLong { len: 5000 }
                .to_string()
                .contains("4095")
        );
    }
}
