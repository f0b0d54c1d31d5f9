//! Why a client could not connect, whatever the transport.

use std::{fmt, io, time::Duration};

use crate::{Error, HandshakeError};

/// Why [`Peer::connect`](crate::Peer::connect),
/// [`Peer::connect_unix`](crate::Peer::connect_unix),
/// `tls::connect` (feature `tls`) or `ws::connect` (feature `websocket`)
/// failed.
///
/// Every transport reports a timeout the same way, as [`Timeout`](Self::Timeout).
#[derive(Debug)]
#[non_exhaustive]
pub enum ConnectError {
    /// The address or URL cannot be used (not `host:port`, not a `ws://`
    /// or `wss://` URL with a host, ...).
    InvalidAddress(String),
    /// Opening the connection failed (refused, unreachable, reset, ...).
    Io(io::Error),
    /// Connecting took longer than allowed: the transport (TCP, TLS, the
    /// WebSocket upgrade) or the gotalk version exchange.
    Timeout(Duration),
    /// The TLS handshake failed: an untrusted certificate, one for another
    /// name, a server that does not speak TLS, ...
    #[cfg(feature = "tls")]
    Tls(rustls::Error),
    /// The TLS settings could not be built (e.g. no platform root
    /// certificates for `wss://`).
    #[cfg(feature = "tls")]
    TlsConfig(crate::tls::TlsError),
    /// `wss://` needs the crate feature `tls`.
    TlsNotEnabled,
    /// The server answered the WebSocket upgrade with this HTTP status
    /// instead (403: refused by its origin policy or its admission hook;
    /// 404: nothing at that path).
    Http {
        /// The HTTP status code.
        status: u16,
        /// The response body, as text (the reason of a refusal).
        body: String,
    },
    /// The WebSocket handshake failed otherwise (e.g. the server is not a
    /// WebSocket server).
    WebSocket(String),
    /// The gotalk version exchange failed: the server speaks another
    /// version, closed the connection (as one that refuses it does) or sent
    /// something else than a version.
    Handshake(HandshakeError),
}

impl fmt::Display for ConnectError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::InvalidAddress(why) => write!(f, "invalid address: {why}"),
            Self::Io(e) => write!(f, "connect failed: {e}"),
            Self::Timeout(d) => write!(f, "connect timed out after {d:?}"),
            #[cfg(feature = "tls")]
            Self::Tls(e) => write!(f, "TLS handshake failed: {e}"),
            #[cfg(feature = "tls")]
            Self::TlsConfig(e) => write!(f, "TLS setup failed: {e}"),
            Self::TlsNotEnabled => f.write_str("wss:// needs gotalk-peer's feature `tls`"),
            Self::Http { status, body } if body.trim().is_empty() => {
                write!(f, "websocket upgrade refused with HTTP {status}")
            }
            Self::Http { status, body } => {
                write!(
                    f,
                    "websocket upgrade refused with HTTP {status}: {}",
                    body.trim()
                )
            }
            Self::WebSocket(e) => write!(f, "websocket handshake failed: {e}"),
            Self::Handshake(e) => write!(f, "gotalk handshake failed: {e}"),
        }
    }
}

impl std::error::Error for ConnectError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Io(e) => Some(e),
            #[cfg(feature = "tls")]
            Self::Tls(e) => Some(e),
            #[cfg(feature = "tls")]
            Self::TlsConfig(e) => Some(e),
            Self::Handshake(HandshakeError::Malformed(e)) => Some(e),
            Self::Handshake(HandshakeError::Io(e)) => Some(e),
            _ => None,
        }
    }
}

impl ConnectError {
    /// A failed TCP connect or TLS handshake: TLS refusals become
    /// [`Tls`](Self::Tls) (rustls reports them inside an `io::Error`).
    #[cfg(any(feature = "tls", feature = "websocket"))]
    pub(crate) fn from_io(e: io::Error) -> Self {
        #[cfg(feature = "tls")]
        if let Some(tls) = e.get_ref().and_then(|e| e.downcast_ref::<rustls::Error>()) {
            return Self::Tls(tls.clone());
        }
        Self::Io(e)
    }
}

impl From<Error> for ConnectError {
    /// The outcome of the gotalk handshake as a connect error; a handshake
    /// timeout is [`Timeout`](Self::Timeout) like every other.
    fn from(e: Error) -> Self {
        match e {
            Error::Handshake(HandshakeError::Timeout(d)) => Self::Timeout(d),
            Error::Handshake(h) => Self::Handshake(h),
            Error::Connect(e) => e,
            // Nothing else comes out of a handshake; keep the words if it does.
            other => Self::Io(io::Error::other(other.to_string())),
        }
    }
}
