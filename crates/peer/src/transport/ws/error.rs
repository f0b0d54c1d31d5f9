//! [`WsError`]: what can go wrong carrying gotalk over WebSocket messages.

use std::{fmt, io};

use gotalk_proto::ProtocolErrorCode;

/// Why the WebSocket transport could not carry the gotalk stream further.
///
/// Carried inside the [`io::Error`]s that [`WsIo`](super::WsIo) returns; get
/// it back with [`WsError::from_io`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum WsError {
    /// A message that had to be exactly one payload has another length:
    /// the previous message was one header declaring `declared` bytes.
    /// (gotalk.js 1.x miscounts strings with NUL or astral characters.)
    PayloadSizeMismatch {
        /// The payload size the header declared.
        declared: u32,
        /// The length of the message that followed.
        received: usize,
    },
    /// A WebSocket message or frame was larger than the configured maximum.
    MessageTooLarge {
        /// The size the peer sent or announced.
        size: usize,
        /// The configured maximum.
        limit: usize,
    },
    /// The peer closed the WebSocket with close code `4000 + N`, the way
    /// gotalk.js reports gotalk protocol error `N`.
    ClosedWithProtocolError {
        /// The gotalk protocol error code.
        code: ProtocolErrorCode,
        /// The close reason text the peer sent.
        reason: String,
    },
    /// The peer broke the WebSocket protocol itself (e.g. bad framing).
    Protocol(String),
}

impl WsError {
    /// The [`WsError`] inside an [`io::Error`] returned by
    /// [`WsIo`](super::WsIo), if any.
    pub fn from_io(err: &io::Error) -> Option<&WsError> {
        err.get_ref()?.downcast_ref::<WsError>()
    }

    /// The [`io::ErrorKind`] [`WsIo`](super::WsIo) reports this error with.
    ///
    /// [`io::ErrorKind::InvalidData`] means a gotalk-level invalid message
    /// (the driver answers `f00000002`); the others mean the transport ended.
    pub fn kind(&self) -> io::ErrorKind {
        match self {
            Self::PayloadSizeMismatch { .. } | Self::MessageTooLarge { .. } => {
                io::ErrorKind::InvalidData
            }
            Self::ClosedWithProtocolError { .. } => io::ErrorKind::ConnectionAborted,
            Self::Protocol(_) => io::ErrorKind::ConnectionAborted,
        }
    }

    pub(crate) fn into_io(self) -> io::Error {
        io::Error::new(self.kind(), self)
    }
}

impl fmt::Display for WsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::PayloadSizeMismatch { declared, received } => write!(
                f,
                "websocket payload message has {received} bytes, its header declared {declared}"
            ),
            Self::MessageTooLarge { size, limit } => {
                write!(
                    f,
                    "websocket message of {size} bytes exceeds the limit of {limit}"
                )
            }
            Self::ClosedWithProtocolError { code, reason } => {
                write!(
                    f,
                    "peer closed the websocket with gotalk protocol error {code:?}"
                )?;
                if !reason.is_empty() {
                    write!(f, " ({reason})")?;
                }
                Ok(())
            }
            Self::Protocol(msg) => write!(f, "websocket protocol error: {msg}"),
        }
    }
}

impl std::error::Error for WsError {}
