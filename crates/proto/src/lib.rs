//! A sans-IO, zero-copy codec for the [gotalk] protocol, version 1.
//!
//! gotalk is an ASCII, frame-based protocol for bidirectional, concurrent RPC
//! over any reliable byte stream. This crate only turns bytes into
//! [`Message`]s and back; it does no I/O and keeps no connection state (see
//! the `gotalk-peer` crate for that).
//!
//! - [`decode`] parses one message from a borrowed `&[u8]`, httparse-style:
//!   [`Decoded::Complete`] with the bytes consumed, or
//!   [`Decoded::Incomplete`] with how many more bytes are needed.
//! - [`decode_bytes`] does the same out of a `BytesMut` read buffer and
//!   returns payloads (and names over 23 bytes) as slices of it, without
//!   copying; shorter names are copied into the [`Text`] itself.
//! - [`Message::encode_header`] / [`Message::encode`] write lower-case,
//!   zero-padded hex; the header is separate so large payloads can go out
//!   with vectored I/O.
//! - [`GotalkCodec`] plugs both into `tokio_util::codec` (feature `codec`, on
//!   by default). With `default-features = false` this crate depends on
//!   neither tokio nor tokio-util.
//!
//! # Example
//!
//! ```
//! use gotalk_proto::{decode, DecodeLimits, Decoded, Message};
//!
//! let wire: &[u8] = b"r0001004echo00000019{\"message\":\"Hello World\"}";
//! match decode(wire, &DecodeLimits::default()).unwrap() {
//!     Decoded::Complete(Message::SingleRequest { id, op, payload }, consumed) => {
//!         assert_eq!(id.as_bytes(), b"0001");
//!         assert_eq!(op.as_str(), "echo");
//!         assert_eq!(payload, br#"{"message":"Hello World"}"#);
//!         assert_eq!(consumed, wire.len());
//!     }
//!     other => panic!("unexpected {other:?}"),
//! }
//! ```
//!
//! [gotalk]: https://github.com/rsms/gotalk

#![cfg_attr(docsrs, feature(doc_cfg))]

/// The crate README's examples, compiled and run as doctests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;

#[cfg(feature = "arbitrary")]
mod arbitrary;
#[cfg(feature = "codec")]
mod codec;
mod decode;
mod encode;
mod error;
mod hex;
mod id;
mod message;
mod text;
mod version;

#[cfg(feature = "codec")]
pub use codec::{CodecError, GotalkCodec};
pub use decode::{
    DEFAULT_MAX_PAYLOAD, DecodeLimits, Decoded, FrameHeader, decode, decode_bytes, parse_header,
};
pub use error::{DecodeError, EncodeError, Field};
pub use id::RequestId;
pub use message::{Message, MessageType, ProtocolErrorCode};
pub use text::{Buffer, Text};
pub use version::{PROTOCOL_VERSION, VERSION_BYTES, check_version, decode_version, encode_version};

/// Longest operation or notification name, in bytes (three hex digits).
pub const MAX_NAME_LEN: usize = 0xfff;

/// Largest payload the wire format can express (eight hex digits).
pub const MAX_PAYLOAD_LEN: u32 = u32::MAX;

/// Longest possible header: a request with a name of [`MAX_NAME_LEN`] bytes.
pub const MAX_HEADER_LEN: usize = 16 + MAX_NAME_LEN;
