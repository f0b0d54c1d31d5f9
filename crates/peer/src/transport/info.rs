//! What a server knows about a connection before serving it.

use std::net::SocketAddr;

use super::{LocalAddr, TransportKind};

/// What the server knows about a connection: given to every server hook
/// (admission, `wrap_io`, open) and attached to the connection as user data
/// (`ctx.user_data::<ConnectionInfo>()` in handlers).
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct ConnectionInfo {
    /// The connection's number, unique per server (from 1).
    pub id: u64,
    /// The transport it came in on.
    pub transport: TransportKind,
    /// The listener it came in on.
    pub local_addr: LocalAddr,
    /// The client's address (`None` for Unix sockets, and for WebSocket
    /// endpoints mounted in an HTTP server that does not provide it).
    pub remote_addr: Option<SocketAddr>,
    /// The WebSocket upgrade request, for WebSocket connections. Behind an
    /// `Arc`: every connection keeps its info for its whole life, most are
    /// not WebSocket ones, and the copies of a WebSocket connection's info
    /// (the connection's user data, the server's hooks, a hub session)
    /// share one request.
    #[cfg(feature = "websocket")]
    pub websocket: Option<std::sync::Arc<WebSocketInfo>>,
}

impl ConnectionInfo {
    /// Information about a connection on `local_addr` from `remote_addr`,
    /// for a [`Listener`](super::Listener) of another transport; the server
    /// assigns the [`id`](Self::id).
    pub fn new(local_addr: LocalAddr, remote_addr: Option<SocketAddr>) -> Self {
        Self {
            id: 0,
            transport: local_addr.transport(),
            local_addr,
            remote_addr,
            #[cfg(feature = "websocket")]
            websocket: None,
        }
    }

    /// The WebSocket upgrade request, for WebSocket connections.
    #[cfg(feature = "websocket")]
    pub fn websocket(&self) -> Option<&WebSocketInfo> {
        self.websocket.as_deref()
    }

    /// The remote address as [`Peer::remote_addr`](crate::Peer::remote_addr)
    /// reports it: the client's address, or the socket path for Unix
    /// sockets.
    pub(crate) fn remote_label(&self) -> Option<String> {
        match (&self.remote_addr, &self.local_addr) {
            (Some(a), _) => Some(a.to_string()),
            (None, LocalAddr::Unix(_)) => Some(self.local_addr.to_string()),
            (None, _) => None,
        }
    }
}

/// A WebSocket connection's upgrade request, and what the client said it
/// can handle.
#[cfg(feature = "websocket")]
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct WebSocketInfo {
    /// The upgrade request's URI (path and query).
    pub uri: http::Uri,
    /// The upgrade request's headers (cookies, `Origin`, `Authorization`,
    /// ...), less those of the WebSocket handshake itself (`Connection`,
    /// `Upgrade`, `Sec-WebSocket-Key`, `Sec-WebSocket-Version`).
    pub headers: http::HeaderMap,
    /// Whether the connection sends retry results (see
    /// [`Config::remote_retry_results`](crate::Config::remote_retry_results)).
    pub remote_retry_results: bool,
    /// Whether the connection sends stream requests (see
    /// [`Config::remote_stream_requests`](crate::Config::remote_stream_requests)).
    pub remote_stream_requests: bool,
}

#[cfg(feature = "websocket")]
impl WebSocketInfo {
    /// The value of header `name`, if present and text.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// The value of query parameter `name` as sent (not percent-decoded).
    pub fn query_param(&self, name: &str) -> Option<&str> {
        self.uri.query()?.split('&').find_map(|pair| {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            (key == name).then_some(value)
        })
    }

    /// The value of cookie `name`, from the `Cookie` headers.
    pub fn cookie(&self, name: &str) -> Option<&str> {
        self.headers
            .get_all(http::header::COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(';'))
            .find_map(|pair| {
                let (key, value) = pair.trim().split_once('=')?;
                (key.trim() == name).then(|| value.trim().trim_matches('"'))
            })
    }
}

#[cfg(all(test, feature = "websocket"))]
mod tests {
    use super::*;

    #[test]
    fn headers_query_and_cookies() {
        let mut headers = http::HeaderMap::new();
        headers.append(
            http::header::COOKIE,
            "a=1; session=\"xyz\"".parse().unwrap(),
        );
        headers.append(http::header::COOKIE, "b=2".parse().unwrap());
        headers.insert("x-token", "t".parse().unwrap());
        let info = WebSocketInfo {
            uri: "/gotalk/?caps=retry&token=abc&flag".parse().unwrap(),
            headers,
            remote_retry_results: true,
            remote_stream_requests: false,
        };
        assert_eq!(info.cookie("session"), Some("xyz"));
        assert_eq!(info.cookie("b"), Some("2"));
        assert_eq!(info.cookie("c"), None);
        assert_eq!(info.query_param("token"), Some("abc"));
        assert_eq!(info.query_param("flag"), Some(""));
        assert_eq!(info.query_param("nope"), None);
        assert_eq!(info.header("X-Token"), Some("t"));
    }
}
