//! The messages of gotalk protocol version 1.

use core::fmt;

use bytes::Bytes;

use crate::{RequestId, Text, text::Buffer};

/// The one-byte tag that starts every message.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum MessageType {
    /// `r`: a request whose whole payload follows its header.
    SingleRequest,
    /// `s`: the first part of a streaming request.
    StreamRequest,
    /// `p`: a further part of a streaming request; empty ends the stream.
    StreamRequestPart,
    /// `R`: a result whose whole payload follows its header.
    SingleResult,
    /// `S`: one part of a streaming result; empty ends the stream.
    StreamResult,
    /// `E`: the request was faulty (do not retry it as is).
    ErrorResult,
    /// `e`: the responder could not serve the request now; retry after `wait` ms.
    RetryResult,
    /// `n`: a named message that is never answered.
    Notification,
    /// `h`: the sender's load and clock.
    Heartbeat,
    /// `f`: the connection is being closed because of a protocol fault.
    ProtocolError,
}

impl MessageType {
    /// Every message type, in wire-tag order of the description.
    pub const ALL: [MessageType; 10] = [
        Self::SingleRequest,
        Self::StreamRequest,
        Self::StreamRequestPart,
        Self::SingleResult,
        Self::StreamResult,
        Self::ErrorResult,
        Self::RetryResult,
        Self::Notification,
        Self::Heartbeat,
        Self::ProtocolError,
    ];

    /// The tag byte on the wire.
    pub const fn as_byte(self) -> u8 {
        match self {
            Self::SingleRequest => b'r',
            Self::StreamRequest => b's',
            Self::StreamRequestPart => b'p',
            Self::SingleResult => b'R',
            Self::StreamResult => b'S',
            Self::ErrorResult => b'E',
            Self::RetryResult => b'e',
            Self::Notification => b'n',
            Self::Heartbeat => b'h',
            Self::ProtocolError => b'f',
        }
    }

    /// The message type for a tag byte, if it is one.
    pub const fn from_byte(b: u8) -> Option<Self> {
        Some(match b {
            b'r' => Self::SingleRequest,
            b's' => Self::StreamRequest,
            b'p' => Self::StreamRequestPart,
            b'R' => Self::SingleResult,
            b'S' => Self::StreamResult,
            b'E' => Self::ErrorResult,
            b'e' => Self::RetryResult,
            b'n' => Self::Notification,
            b'h' => Self::Heartbeat,
            b'f' => Self::ProtocolError,
            _ => return None,
        })
    }

    /// Bytes of header that do not depend on a name: everything for types
    /// without a name, everything but the name for `r`, `s` and `n`.
    pub const fn fixed_header_len(self) -> usize {
        match self {
            Self::SingleRequest | Self::StreamRequest => 1 + 4 + 3 + 8,
            Self::Notification => 1 + 3 + 8,
            Self::RetryResult => 1 + 4 + 8 + 8,
            Self::StreamRequestPart
            | Self::SingleResult
            | Self::StreamResult
            | Self::ErrorResult
            | Self::Heartbeat => 1 + 4 + 8,
            Self::ProtocolError => 1 + 8,
        }
    }

    /// The name of the type as the protocol description spells it.
    pub const fn name(self) -> &'static str {
        match self {
            Self::SingleRequest => "SingleRequest",
            Self::StreamRequest => "StreamRequest",
            Self::StreamRequestPart => "StreamRequestPart",
            Self::SingleResult => "SingleResult",
            Self::StreamResult => "StreamResult",
            Self::ErrorResult => "ErrorResult",
            Self::RetryResult => "RetryResult",
            Self::Notification => "Notification",
            Self::Heartbeat => "Heartbeat",
            Self::ProtocolError => "ProtocolError",
        }
    }
}

impl fmt::Display for MessageType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The code carried by a `f` ProtocolError message.
///
/// Unknown codes are kept as [`ProtocolErrorCode::Other`] so that a newer
/// peer's reason is never lost.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub enum ProtocolErrorCode {
    /// 0: closed because of an abnormal condition (e.g. a server fault).
    Abnormal,
    /// 1: the other side does not support the sender's protocol version.
    Unsupported,
    /// 2: an invalid message was received.
    InvalidMessage,
    /// 3: communicating took too long.
    Timeout,
    /// Any other code, kept as received.
    Other(u32),
}

impl ProtocolErrorCode {
    /// The numeric code on the wire.
    pub const fn as_u32(self) -> u32 {
        match self {
            Self::Abnormal => 0,
            Self::Unsupported => 1,
            Self::InvalidMessage => 2,
            Self::Timeout => 3,
            Self::Other(n) => n,
        }
    }

    /// The code for a number; 0–3 map to the named variants.
    pub const fn from_u32(n: u32) -> Self {
        match n {
            0 => Self::Abnormal,
            1 => Self::Unsupported,
            2 => Self::InvalidMessage,
            3 => Self::Timeout,
            n => Self::Other(n),
        }
    }

    /// A short description, as the Go package words it.
    pub const fn description(self) -> &'static str {
        match self {
            Self::Abnormal => "abnormal condition",
            Self::Unsupported => "unsupported protocol",
            Self::InvalidMessage => "invalid protocol message",
            Self::Timeout => "timeout",
            Self::Other(_) => "unknown protocol error",
        }
    }
}

impl PartialEq<ProtocolErrorCode> for u32 {
    fn eq(&self, other: &ProtocolErrorCode) -> bool {
        *self == other.as_u32()
    }
}

impl fmt::Display for ProtocolErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} (code {})", self.description(), self.as_u32())
    }
}

/// One gotalk message.
///
/// `B` is the buffer type holding payloads and names: `&[u8]` when decoding
/// from a borrowed slice with [`decode`](crate::decode), [`Bytes`] (the
/// default) when decoding zero-copy from a `BytesMut` with
/// [`decode_bytes`](crate::decode_bytes) or building messages to send.
///
/// ```
/// use bytes::Bytes;
/// use gotalk_proto::{Message, RequestId, Text};
/// let msg = Message::SingleRequest {
///     id: RequestId::new(*b"0001"),
///     op: Text::from_static("hello"),
///     payload: Bytes::from_static(b"world"),
/// };
/// assert_eq!(msg.to_vec().unwrap(), b"r0001005hello00000005world");
/// ```
#[derive(Clone, PartialEq, Eq, Hash)]
pub enum Message<B: Buffer = Bytes> {
    /// `r`: a request carrying its whole payload.
    SingleRequest {
        /// Requester-chosen ID, echoed in the result.
        id: RequestId,
        /// Operation name.
        op: Text<B>,
        /// Request payload.
        payload: B,
    },
    /// `s`: opens a streaming request; `payload` is its first part (an
    /// empty first part does not end the stream).
    StreamRequest {
        /// Requester-chosen ID for the whole stream.
        id: RequestId,
        /// Operation name.
        op: Text<B>,
        /// First part of the request payload.
        payload: B,
    },
    /// `p`: a further part of the streaming request `id`; empty ends it.
    StreamRequestPart {
        /// The stream this part belongs to.
        id: RequestId,
        /// This part's bytes; empty means end of stream.
        payload: B,
    },
    /// `R`: a result carrying its whole payload.
    SingleResult {
        /// The request this answers.
        id: RequestId,
        /// Result payload.
        payload: B,
    },
    /// `S`: one part of a streaming result; empty ends it.
    StreamResult {
        /// The request this answers.
        id: RequestId,
        /// This part's bytes; empty means end of stream.
        payload: B,
    },
    /// `E`: the request was faulty; `payload` describes why.
    ErrorResult {
        /// The request this answers.
        id: RequestId,
        /// Error description, conventionally UTF-8 text.
        payload: B,
    },
    /// `e`: retry the request, not before `wait_ms` milliseconds.
    RetryResult {
        /// The request this answers.
        id: RequestId,
        /// Milliseconds to wait before retrying; 0 means at will.
        wait_ms: u32,
        /// Reason, conventionally UTF-8 text.
        payload: B,
    },
    /// `n`: a named message that is never answered.
    Notification {
        /// Notification name.
        name: Text<B>,
        /// Notification payload.
        payload: B,
    },
    /// `h`: the sender's load (0 idle … 0xffff overloaded) and unix time.
    Heartbeat {
        /// How loaded the sender is, 0 (idle) to 65535.
        load: u16,
        /// Sender's clock, unix seconds.
        time: u32,
    },
    /// `f`: a protocol fault; the sender closes the connection after it.
    ProtocolError {
        /// Why the connection is being closed.
        code: ProtocolErrorCode,
    },
}

impl<B: Buffer> Message<B> {
    /// The message's type tag.
    pub fn message_type(&self) -> MessageType {
        match self {
            Self::SingleRequest { .. } => MessageType::SingleRequest,
            Self::StreamRequest { .. } => MessageType::StreamRequest,
            Self::StreamRequestPart { .. } => MessageType::StreamRequestPart,
            Self::SingleResult { .. } => MessageType::SingleResult,
            Self::StreamResult { .. } => MessageType::StreamResult,
            Self::ErrorResult { .. } => MessageType::ErrorResult,
            Self::RetryResult { .. } => MessageType::RetryResult,
            Self::Notification { .. } => MessageType::Notification,
            Self::Heartbeat { .. } => MessageType::Heartbeat,
            Self::ProtocolError { .. } => MessageType::ProtocolError,
        }
    }

    /// The request ID, for the message types that carry one.
    pub fn id(&self) -> Option<RequestId> {
        match self {
            Self::SingleRequest { id, .. }
            | Self::StreamRequest { id, .. }
            | Self::StreamRequestPart { id, .. }
            | Self::SingleResult { id, .. }
            | Self::StreamResult { id, .. }
            | Self::ErrorResult { id, .. }
            | Self::RetryResult { id, .. } => Some(*id),
            Self::Notification { .. } | Self::Heartbeat { .. } | Self::ProtocolError { .. } => None,
        }
    }

    /// The operation (`r`, `s`) or notification (`n`) name.
    pub fn name(&self) -> Option<&Text<B>> {
        match self {
            Self::SingleRequest { op, .. } | Self::StreamRequest { op, .. } => Some(op),
            Self::Notification { name, .. } => Some(name),
            _ => None,
        }
    }

    /// The payload, for the message types that carry one.
    pub fn payload(&self) -> Option<&B> {
        match self {
            Self::SingleRequest { payload, .. }
            | Self::StreamRequest { payload, .. }
            | Self::StreamRequestPart { payload, .. }
            | Self::SingleResult { payload, .. }
            | Self::StreamResult { payload, .. }
            | Self::ErrorResult { payload, .. }
            | Self::RetryResult { payload, .. }
            | Self::Notification { payload, .. } => Some(payload),
            Self::Heartbeat { .. } | Self::ProtocolError { .. } => None,
        }
    }

    /// Payload length in bytes (0 for types without a payload).
    pub fn payload_len(&self) -> usize {
        self.payload().map_or(0, |p| p.as_ref().len())
    }

    /// A view of this message borrowing its buffers.
    pub fn as_borrowed(&self) -> Message<&[u8]> {
        self.map_buffers(|t| Text::from(t.as_str()), |p| p.as_ref())
    }

    /// The same message with every buffer converted by `buf` and every name
    /// by `text`: the one place that lists which variants carry what.
    fn map_buffers<'s, C: Buffer>(
        &'s self,
        text: impl Fn(&'s Text<B>) -> Text<C>,
        buf: impl Fn(&'s B) -> C,
    ) -> Message<C> {
        match self {
            Self::SingleRequest { id, op, payload } => Message::SingleRequest {
                id: *id,
                op: text(op),
                payload: buf(payload),
            },
            Self::StreamRequest { id, op, payload } => Message::StreamRequest {
                id: *id,
                op: text(op),
                payload: buf(payload),
            },
            Self::StreamRequestPart { id, payload } => Message::StreamRequestPart {
                id: *id,
                payload: buf(payload),
            },
            Self::SingleResult { id, payload } => Message::SingleResult {
                id: *id,
                payload: buf(payload),
            },
            Self::StreamResult { id, payload } => Message::StreamResult {
                id: *id,
                payload: buf(payload),
            },
            Self::ErrorResult { id, payload } => Message::ErrorResult {
                id: *id,
                payload: buf(payload),
            },
            Self::RetryResult {
                id,
                wait_ms,
                payload,
            } => Message::RetryResult {
                id: *id,
                wait_ms: *wait_ms,
                payload: buf(payload),
            },
            Self::Notification { name, payload } => Message::Notification {
                name: text(name),
                payload: buf(payload),
            },
            Self::Heartbeat { load, time } => Message::Heartbeat {
                load: *load,
                time: *time,
            },
            Self::ProtocolError { code } => Message::ProtocolError { code: *code },
        }
    }
}

impl Message<&[u8]> {
    /// Copies the borrowed buffers into owned [`Bytes`].
    pub fn to_owned_bytes(&self) -> Message<Bytes> {
        self.map_buffers(Text::to_owned_bytes, |p| Bytes::copy_from_slice(p))
    }
}

/// Writes the message in a single line: type, fields, and the payload as an
/// escaped string (at most 64 bytes of it), for logs and `gotalk decode`.
impl<B: Buffer> fmt::Debug for Message<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.message_type())?;
        if let Some(id) = self.id() {
            write!(f, " id=\"{id}\"")?;
        }
        if let Some(name) = self.name() {
            let key = if matches!(self, Self::Notification { .. }) {
                "name"
            } else {
                "op"
            };
            write!(f, " {key}={:?}", name.as_str())?;
        }
        match self {
            Self::RetryResult { wait_ms, .. } => write!(f, " wait_ms={wait_ms}")?,
            Self::Heartbeat { load, time } => write!(f, " load={load} time={time}")?,
            Self::ProtocolError { code } => write!(f, " code={}", code.as_u32())?,
            _ => {}
        }
        if let Some(p) = self.payload() {
            let p = p.as_ref();
            write!(f, " size={} payload=\"", p.len())?;
            for &b in p.iter().take(64) {
                write!(f, "{}", core::ascii::escape_default(b))?;
            }
            f.write_str(if p.len() > 64 { "\"…" } else { "\"" })?;
        }
        Ok(())
    }
}
