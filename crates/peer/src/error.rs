//! Errors, and why a connection closed.

use std::{fmt, io, sync::Arc, time::Duration};

use bytes::Bytes;
use gotalk_proto::{DecodeError, EncodeError, ProtocolErrorCode, RequestId};

/// Why a connection closed. Every pending call, stream and waiter on the
/// connection fails with [`Error::Closed`] carrying this.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub enum CloseReason {
    /// This side closed it ([`Peer::close`](crate::Peer::close), or the last
    /// handle was dropped).
    Local,
    /// The peer closed the byte stream.
    PeerClosed,
    /// The peer broke the protocol; we sent it ProtocolError `code` and closed.
    ProtocolViolation {
        /// The code we sent.
        code: ProtocolErrorCode,
        /// What the peer did wrong.
        violation: Violation,
    },
    /// The peer sent us a ProtocolError and closed.
    RemoteProtocolError {
        /// The code it sent.
        code: ProtocolErrorCode,
    },
    /// No complete message arrived within the read timeout; we sent
    /// ProtocolError 3 (timeout).
    ReadTimeout,
    /// A write made no progress within the write timeout.
    WriteTimeout,
    /// The byte stream failed.
    Io(Arc<io::Error>),
    /// Memory for the bytes the peer sent could not be allocated: this
    /// connection is closed, the process and the other connections go on.
    OutOfMemory {
        /// The allocation that failed, in bytes.
        requested: usize,
    },
    /// The peer did not read what we sent fast enough: a notification
    /// offered with [`Peer::try_notify`](crate::Peer::try_notify) found the
    /// write queue over [`Config::max_write_queue_bytes`](crate::Config::max_write_queue_bytes).
    /// What was queued is dropped, not flushed.
    SlowConsumer {
        /// Bytes that were waiting to be written.
        queued: usize,
    },
    /// The task that drove the connection was dropped before the connection
    /// finished (its runtime shut down, or the task was aborted): nothing
    /// more is read or written, and calls waiting for an answer fail.
    Abandoned,
}

impl fmt::Display for CloseReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Local => f.write_str("connection closed by this side"),
            Self::PeerClosed => f.write_str("connection closed by peer"),
            Self::ProtocolViolation { code, violation } => {
                write!(f, "peer broke the protocol ({violation}); sent {code}")
            }
            Self::RemoteProtocolError { code } => write!(f, "peer sent protocol error: {code}"),
            Self::ReadTimeout => f.write_str("read timeout: no message from peer in time"),
            Self::WriteTimeout => f.write_str("write timeout: peer is not reading"),
            Self::Io(e) => write!(f, "i/o error: {e}"),
            Self::SlowConsumer { queued } => write!(
                f,
                "peer too slow to read: {queued} bytes were waiting to be written"
            ),
            Self::OutOfMemory { requested } => {
                write!(f, "out of memory: no {requested} bytes for the read buffer")
            }
            Self::Abandoned => f.write_str(
                "connection abandoned: the task driving it was dropped (did its runtime shut down?)",
            ),
        }
    }
}

/// How the peer broke the protocol (see [`CloseReason::ProtocolViolation`]).
#[derive(Clone, Debug)]
#[non_exhaustive]
pub enum Violation {
    /// Bytes that do not decode as a gotalk message.
    Malformed(DecodeError),
    /// A stream request part for a stream that is not open (never opened,
    /// or already ended by the requester).
    UnknownStream(RequestId),
    /// A stream request reusing the ID of a stream still in flight.
    DuplicateStream(RequestId),
    /// The transport's own framing contradicts the gotalk frames it carries
    /// (a WebSocket message that is not the payload its header announced).
    Transport(Arc<io::Error>),
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Malformed(e) => write!(f, "malformed message: {e}"),
            Self::UnknownStream(id) => {
                write!(f, "stream request part for unknown or ended stream {id}")
            }
            Self::DuplicateStream(id) => {
                write!(f, "stream request reuses the ID {id} of a stream in flight")
            }
            Self::Transport(e) => write!(f, "transport framing: {e}"),
        }
    }
}

impl std::error::Error for Violation {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Malformed(e) => Some(e),
            Self::Transport(e) => Some(&**e),
            _ => None,
        }
    }
}

/// An error result (`E`) from the remote side: the request was faulty.
#[derive(Clone, PartialEq, Eq)]
pub struct RemoteError {
    payload: Bytes,
}

impl RemoteError {
    pub(crate) fn new(payload: Bytes) -> Self {
        Self { payload }
    }

    /// The error result's payload as sent.
    pub fn payload(&self) -> &Bytes {
        &self.payload
    }

    /// The payload as text (invalid UTF-8 replaced).
    pub fn message(&self) -> String {
        String::from_utf8_lossy(&self.payload).into_owned()
    }
}

impl fmt::Display for RemoteError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&String::from_utf8_lossy(&self.payload))
    }
}

impl fmt::Debug for RemoteError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RemoteError({:?})", self.message())
    }
}

/// Everything that can go wrong for a caller of this crate, in three
/// layers: what the remote answered ([`Remote`](Self::Remote),
/// [`RetryExhausted`](Self::RetryExhausted), and results we cannot take:
/// [`ResultTooLarge`](Self::ResultTooLarge), [`OverBudget`](Self::OverBudget),
/// [`InvalidResult`](Self::InvalidResult)); what happened to the connection
/// ([`Timeout`](Self::Timeout), [`Closed`](Self::Closed),
/// [`Handshake`](Self::Handshake), [`Connect`](Self::Connect),
/// [`Unavailable`](Self::Unavailable)); and the
/// caller's own mistakes ([`Usage`](Self::Usage)), which no retry fixes.
/// [`is_remote`](Self::is_remote), [`is_connection`](Self::is_connection)
/// and [`is_usage`](Self::is_usage) tell them apart.
#[derive(Debug)]
#[non_exhaustive]
pub enum Error {
    /// The remote answered with an error result.
    Remote(RemoteError),
    /// The remote kept answering with retry results.
    RetryExhausted {
        /// Attempts made.
        attempts: u32,
        /// The wait the last retry result asked for.
        wait: Duration,
        /// The last retry result's payload, as text.
        message: String,
    },
    /// A result (collected from a stream) exceeded the payload limit.
    ResultTooLarge {
        /// The configured limit.
        limit: u32,
    },
    /// A streamed result being collected for a buffer request did not fit
    /// the connection's byte budget
    /// ([`Config::max_buffered_bytes`](crate::Config::max_buffered_bytes))
    /// with what else it holds for the peer: the call fails rather than
    /// pausing the connection.
    OverBudget {
        /// The budget, in bytes.
        limit: usize,
    },
    /// The result is not the JSON the caller asked for.
    InvalidResult(serde_json::Error),
    /// The request's deadline passed before its result arrived.
    Timeout,
    /// The connection is closed (or closed while the call was in flight).
    Closed(CloseReason),
    /// The version handshake failed (another version, malformed, or timed out).
    Handshake(HandshakeError),
    /// Connecting failed (see [`ConnectError`](crate::ConnectError)).
    Connect(crate::ConnectError),
    /// A [`ReconnectingPeer`](crate::ReconnectingPeer) had no connection
    /// for the call (a [`Balancer`](crate::balance::Balancer) no endpoint
    /// taking calls) and could not make it wait for one: the call was never
    /// sent.
    Unavailable(Unavailable),
    /// The call cannot be made as asked.
    Usage(UsageError),
}

/// Why a [`ReconnectingPeer`](crate::ReconnectingPeer) could not give a
/// call a connection, or a [`Balancer`](crate::balance::Balancer) an
/// endpoint (see [`Error::Unavailable`]; the balancer's bounds are its
/// [`BalanceOptions`](crate::balance::BalanceOptions)). The call was never
/// sent, so it is always safe to make it again.
///
/// ```
/// use gotalk_peer::{Error, Unavailable};
/// let e = Error::Unavailable(Unavailable::QueueFull { limit: 8 });
/// assert!(e.is_connection());
/// assert_eq!(e.to_string(), "not connected, and 8 calls already wait for a connection");
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Unavailable {
    /// Not connected, and the client fails calls at once rather than
    /// queueing them
    /// ([`WhenDisconnected::FailFast`](crate::reconnect::WhenDisconnected::FailFast)).
    NotConnected,
    /// Not connected, and as many calls as allowed
    /// ([`ReconnectOptions::max_queued`](crate::reconnect::ReconnectOptions::max_queued))
    /// already wait for a connection.
    QueueFull {
        /// The bound.
        limit: usize,
    },
    /// The call waited for a connection for
    /// [`ReconnectOptions::queue_timeout`](crate::reconnect::ReconnectOptions::queue_timeout)
    /// and none came.
    QueueTimeout {
        /// How long it waited.
        waited: Duration,
    },
}

impl fmt::Display for Unavailable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NotConnected => f.write_str("not connected (fail-fast)"),
            Self::QueueFull { limit } => write!(
                f,
                "not connected, and {limit} calls already wait for a connection"
            ),
            Self::QueueTimeout { waited } => {
                write!(f, "no connection within {waited:?}")
            }
        }
    }
}

impl std::error::Error for Unavailable {}

/// A caller's own mistake (see [`Error::Usage`]): the call was never sent.
#[derive(Debug)]
#[non_exhaustive]
pub enum UsageError {
    /// The message cannot be encoded (a name over 4095 bytes, a payload over
    /// 4 GiB).
    Encode(EncodeError),
    /// The input cannot be serialized as JSON.
    InvalidInput(serde_json::Error),
    /// The remote cannot take this kind of message (see
    /// [`Config::remote_stream_requests`](crate::Config::remote_stream_requests)).
    Unsupported(&'static str),
}

impl fmt::Display for UsageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Encode(e) => write!(f, "cannot encode message: {e}"),
            Self::InvalidInput(e) => write!(f, "cannot encode the input as JSON: {e}"),
            Self::Unsupported(what) => write!(f, "the remote does not support {what}"),
        }
    }
}

impl std::error::Error for UsageError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Encode(e) => Some(e),
            Self::InvalidInput(e) => Some(e),
            Self::Unsupported(_) => None,
        }
    }
}

/// Why a version handshake failed.
#[derive(Debug)]
#[non_exhaustive]
pub enum HandshakeError {
    /// The peer speaks another protocol version; we sent ProtocolError 1.
    UnsupportedVersion {
        /// The version the peer announced.
        version: u8,
    },
    /// The peer's version bytes are not hex.
    Malformed(DecodeError),
    /// The peer did not send its version in time.
    Timeout(Duration),
    /// The stream closed or failed during the handshake.
    Io(io::Error),
}

impl fmt::Display for HandshakeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::UnsupportedVersion { version } => write!(
                f,
                "peer speaks protocol version {version:02x}, this side speaks 01"
            ),
            Self::Malformed(e) => write!(f, "malformed handshake: {e}"),
            Self::Timeout(d) => write!(f, "peer sent no version within {d:?}"),
            Self::Io(e) => write!(f, "i/o error during handshake: {e}"),
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Remote(e) => write!(f, "remote error: {e}"),
            Self::RetryExhausted {
                attempts,
                wait,
                message,
            } => write!(
                f,
                "gave up after {attempts} attempts; remote still asks to retry in {wait:?}: {message}"
            ),
            Self::ResultTooLarge { limit } => {
                write!(f, "streamed result exceeds the {limit}-byte payload limit")
            }
            Self::OverBudget { limit } => write!(
                f,
                "streamed result over the connection's {limit}-byte buffer budget"
            ),
            Self::InvalidResult(e) => write!(f, "result is not the JSON expected: {e}"),
            Self::Timeout => f.write_str("request timed out"),
            Self::Closed(reason) => write!(f, "connection closed: {reason}"),
            Self::Handshake(e) => write!(f, "handshake failed: {e}"),
            Self::Connect(e) => e.fmt(f),
            Self::Unavailable(e) => e.fmt(f),
            Self::Usage(e) => e.fmt(f),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::InvalidResult(e) => Some(e),
            // Displayed transparently: their sources are ours.
            Self::Connect(e) => std::error::Error::source(e),
            Self::Usage(e) => std::error::Error::source(e),
            Self::Closed(CloseReason::Io(e)) => Some(&**e),
            Self::Closed(CloseReason::ProtocolViolation { violation, .. }) => Some(violation),
            Self::Handshake(HandshakeError::Malformed(e)) => Some(e),
            Self::Handshake(HandshakeError::Io(e)) => Some(e),
            _ => None,
        }
    }
}

/// The payload of the retry result (wait 0) that refuses a request because
/// the connection is closing: the request was not run.
pub(crate) const CLOSING_REFUSAL: &[u8] = b"connection closing";

impl Error {
    /// True when the remote refused the call because it is closing the
    /// connection (the retry result `connection closing`): the call was not
    /// run, so making it again on another connection is safe whether or not
    /// the operation is idempotent. [`ReconnectingPeer`](crate::ReconnectingPeer)
    /// does so by itself.
    ///
    /// ```
    /// use std::time::Duration;
    /// use gotalk_peer::Error;
    /// let refused = Error::RetryExhausted {
    ///     attempts: 1,
    ///     wait: Duration::ZERO,
    ///     message: "connection closing".into(),
    /// };
    /// assert!(refused.is_refused_by_closing());
    /// ```
    pub fn is_refused_by_closing(&self) -> bool {
        matches!(self, Self::RetryExhausted { message, .. } if message.as_bytes() == CLOSING_REFUSAL)
    }

    /// True when the connection is gone (the call may succeed on a new one).
    pub fn is_closed(&self) -> bool {
        matches!(self, Self::Closed(_))
    }

    /// True for what the remote answered: an error or retry result, or a
    /// result this side cannot take.
    pub fn is_remote(&self) -> bool {
        matches!(
            self,
            Self::Remote(_)
                | Self::RetryExhausted { .. }
                | Self::ResultTooLarge { .. }
                | Self::OverBudget { .. }
                | Self::InvalidResult(_)
        )
    }

    /// True for what happened to the connection: a deadline, a close, a
    /// failed connect or handshake, no connection to send on.
    pub fn is_connection(&self) -> bool {
        matches!(
            self,
            Self::Timeout
                | Self::Closed(_)
                | Self::Handshake(_)
                | Self::Connect(_)
                | Self::Unavailable(_)
        )
    }

    /// True for the caller's own mistakes (see [`UsageError`]).
    pub fn is_usage(&self) -> bool {
        matches!(self, Self::Usage(_))
    }

    /// The remote's error result, if that is what this is.
    pub fn remote(&self) -> Option<&RemoteError> {
        match self {
            Self::Remote(e) => Some(e),
            _ => None,
        }
    }
}

impl From<EncodeError> for Error {
    fn from(e: EncodeError) -> Self {
        Self::Usage(UsageError::Encode(e))
    }
}

impl From<Unavailable> for Error {
    fn from(e: Unavailable) -> Self {
        Self::Unavailable(e)
    }
}

impl From<UsageError> for Error {
    fn from(e: UsageError) -> Self {
        Self::Usage(e)
    }
}

impl From<crate::ConnectError> for Error {
    fn from(e: crate::ConnectError) -> Self {
        Self::Connect(e)
    }
}
