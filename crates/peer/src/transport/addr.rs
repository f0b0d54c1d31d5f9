//! Where a server listens, and over what.

use std::{fmt, net::SocketAddr, path::PathBuf};

/// The transport a connection runs over.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum TransportKind {
    /// Plain TCP.
    Tcp,
    /// TCP with TLS.
    Tls,
    /// A Unix domain socket.
    Unix,
    /// WebSocket (`ws://`).
    WebSocket,
    /// WebSocket over TLS (`wss://`).
    SecureWebSocket,
    /// Another transport (a [`Listener`](super::Listener) outside this crate).
    Other,
}

impl TransportKind {
    /// The URL scheme of the transport: `tcp`, `tls`, `unix`, `ws`, `wss`.
    pub fn scheme(self) -> &'static str {
        match self {
            Self::Tcp => "tcp",
            Self::Tls => "tls",
            Self::Unix => "unix",
            Self::WebSocket => "ws",
            Self::SecureWebSocket => "wss",
            Self::Other => "other",
        }
    }
}

impl fmt::Display for TransportKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.scheme())
    }
}

/// The address a listener is bound to, written the way clients name it
/// (the `gotalk` command line takes every form back as an address).
///
/// | Variant | Display |
/// |---|---|
/// | `Tcp` | `127.0.0.1:1234` |
/// | `Tls` | `tls://127.0.0.1:1234` |
/// | `Unix` | `unix:/run/app.sock` |
/// | `WebSocket` | `ws://127.0.0.1:8080/gotalk/` (`wss://` with TLS) |
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum LocalAddr {
    /// A TCP listener.
    Tcp(SocketAddr),
    /// A TCP listener that speaks TLS.
    Tls(SocketAddr),
    /// A Unix domain socket at this path.
    Unix(PathBuf),
    /// A WebSocket endpoint.
    WebSocket {
        /// The HTTP server's address; `None` when the endpoint is mounted
        /// in an HTTP server this crate does not run
        /// (`ws::router`).
        addr: Option<SocketAddr>,
        /// Served with TLS (`wss://`).
        secure: bool,
        /// The mount path, starting and ending with `/`.
        path: String,
    },
    /// Another transport, described in words.
    Other(String),
}

impl LocalAddr {
    /// The socket address, for TCP, TLS and WebSocket listeners.
    pub fn socket_addr(&self) -> Option<SocketAddr> {
        match self {
            Self::Tcp(a) | Self::Tls(a) => Some(*a),
            Self::WebSocket { addr, .. } => *addr,
            Self::Unix(_) | Self::Other(_) => None,
        }
    }

    /// The port, for TCP, TLS and WebSocket listeners.
    pub fn port(&self) -> Option<u16> {
        self.socket_addr().map(|a| a.port())
    }

    /// The transport clients use to connect here.
    pub fn transport(&self) -> TransportKind {
        match self {
            Self::Tcp(_) => TransportKind::Tcp,
            Self::Tls(_) => TransportKind::Tls,
            Self::Unix(_) => TransportKind::Unix,
            Self::WebSocket { secure: false, .. } => TransportKind::WebSocket,
            Self::WebSocket { secure: true, .. } => TransportKind::SecureWebSocket,
            Self::Other(_) => TransportKind::Other,
        }
    }
}

impl fmt::Display for LocalAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Tcp(a) => write!(f, "{a}"),
            Self::Tls(a) => write!(f, "tls://{a}"),
            Self::Unix(p) => write!(f, "unix:{}", p.display()),
            Self::WebSocket {
                addr: Some(a),
                secure,
                path,
            } => {
                let scheme = if *secure { "wss" } else { "ws" };
                write!(f, "{scheme}://{a}{path}")
            }
            // Mounted elsewhere: the path is all this side knows.
            Self::WebSocket {
                addr: None, path, ..
            } => f.write_str(path),
            Self::Other(s) => f.write_str(s),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn displays_as_clients_name_it() {
        let a: SocketAddr = "127.0.0.1:1234".parse().unwrap();
        assert_eq!(LocalAddr::Tcp(a).to_string(), "127.0.0.1:1234");
        assert_eq!(LocalAddr::Tls(a).to_string(), "tls://127.0.0.1:1234");
        assert_eq!(LocalAddr::Unix("/s".into()).to_string(), "unix:/s");
        let ws = LocalAddr::WebSocket {
            addr: Some(a),
            secure: true,
            path: "/gotalk/".into(),
        };
        assert_eq!(ws.to_string(), "wss://127.0.0.1:1234/gotalk/");
        assert_eq!(ws.transport(), TransportKind::SecureWebSocket);
        assert_eq!(ws.port(), Some(1234));
        assert_eq!(LocalAddr::Unix("/s".into()).port(), None);
    }
}
