//! The WebSocket client: `ws://` and `wss://` URLs to a [`Peer`].

use std::{
    fmt, io,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll, ready},
    time::Duration,
};

use axum::http::{HeaderValue, Uri, header};
use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    net::TcpStream,
    time::timeout,
};
use tokio_tungstenite::{
    client_async_with_config,
    tungstenite::{self, client::IntoClientRequest, protocol::WebSocketConfig},
};

use super::{WsStream, server::CAPS_QUERY_PARAM, stream::Role};
use crate::{BoxedIo, Config, ConnectError, Handlers, Peer};

/// Wraps a client connection's byte stream before its gotalk handshake (see
/// [`WsClientConfig::wrap_io`]).
pub type ClientWrapIo = Arc<dyn Fn(BoxedIo) -> BoxedIo + Send + Sync>;

/// Settings of a WebSocket client connection.
#[derive(Clone)]
pub struct WsClientConfig {
    /// Largest WebSocket message accepted, in bytes. Default `None`: the
    /// connection's [`Config::max_payload`] plus the longest header.
    pub max_message_size: Option<usize>,
    /// Time allowed to connect, set up TLS and upgrade to WebSocket (the
    /// gotalk version exchange then has [`Config::handshake_timeout`]).
    /// Default 10 s.
    pub connect_timeout: Duration,
    /// The `Origin` header to send. Default `None`: the URL's own origin
    /// (`ws://host:port` sends `http://host:port`), which the Go server
    /// requires and the same-origin default of our server accepts.
    pub origin: Option<String>,
    /// Tell the server we handle retry results and stream requests (query
    /// parameter `caps=retry,stream`, see
    /// [`RemoteCapabilities`](super::RemoteCapabilities)). Default `true`.
    pub announce_capabilities: bool,
    /// TLS settings for `wss://`. Default `None`: the platform's root
    /// certificates (see [`crate::tls::client_config_with_platform_roots`]).
    #[cfg(feature = "tls")]
    pub tls: Option<Arc<crate::tls::rustls::ClientConfig>>,
    /// Wraps the connection's gotalk byte stream after the WebSocket upgrade
    /// and before the gotalk handshake, e.g. to log, count or trace the
    /// bytes; see [`wrap_io`](Self::wrap_io). Default `None`: the stream is
    /// used as it is, without boxing.
    pub wrap_io: Option<ClientWrapIo>,
}

impl Default for WsClientConfig {
    fn default() -> Self {
        Self {
            max_message_size: None,
            connect_timeout: Duration::from_secs(10),
            origin: None,
            announce_capabilities: true,
            #[cfg(feature = "tls")]
            tls: None,
            wrap_io: None,
        }
    }
}

impl fmt::Debug for WsClientConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("WsClientConfig");
        d.field("max_message_size", &self.max_message_size)
            .field("connect_timeout", &self.connect_timeout)
            .field("origin", &self.origin)
            .field("announce_capabilities", &self.announce_capabilities);
        #[cfg(feature = "tls")]
        d.field("tls", &self.tls.is_some());
        d.field("wrap_io", &self.wrap_io.is_some());
        d.finish()
    }
}

impl WsClientConfig {
    /// Sets [`wrap_io`](Self::wrap_io): `f` gets the connection's byte
    /// stream (the [`WsStream`] over the upgraded WebSocket, boxed) and returns
    /// the stream the gotalk handshake and every later frame go through.
    /// What it reads and writes are exactly the gotalk bytes, starting with
    /// the version `01`.
    ///
    /// ```
    /// use gotalk_peer::{BoxedIo, ws::WsClientConfig};
    ///
    /// let ws = WsClientConfig::default().wrap_io(|io: BoxedIo| {
    ///     io // or Box::new(MyTap::new(io))
    /// });
    /// assert!(ws.wrap_io.is_some());
    /// ```
    pub fn wrap_io(mut self, f: impl Fn(BoxedIo) -> BoxedIo + Send + Sync + 'static) -> Self {
        self.wrap_io = Some(Arc::new(f));
        self
    }
}

/// A parsed `ws://` or `wss://` URL.
#[derive(Debug)]
struct Target {
    uri: Uri,
    secure: bool,
    /// Host without IPv6 brackets.
    host: String,
    port: u16,
}

fn parse_url(url: &str, announce: bool) -> Result<Target, ConnectError> {
    let uri: Uri = url
        .parse()
        .map_err(|e: axum::http::uri::InvalidUri| ConnectError::InvalidAddress(e.to_string()))?;
    let secure = match uri.scheme_str() {
        Some("ws") => false,
        Some("wss") => true,
        Some(other) => {
            return Err(ConnectError::InvalidAddress(format!(
                "scheme {other:?} is not ws or wss"
            )));
        }
        None => return Err(ConnectError::InvalidAddress("no scheme".into())),
    };
    let host = uri
        .host()
        .filter(|h| !h.is_empty())
        .ok_or_else(|| ConnectError::InvalidAddress("no host".into()))?;
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host)
        .to_owned();
    let port = uri.port_u16().unwrap_or(if secure { 443 } else { 80 });
    let uri = if announce {
        let pq = uri.path_and_query().map_or("/", |pq| pq.as_str());
        let sep = if pq.contains('?') { '&' } else { '?' };
        let authority = uri.authority().expect("has a host").as_str();
        let scheme = if secure { "wss" } else { "ws" };
        format!("{scheme}://{authority}{pq}{sep}{CAPS_QUERY_PARAM}=retry,stream")
            .parse()
            .map_err(|e: axum::http::uri::InvalidUri| ConnectError::InvalidAddress(e.to_string()))?
    } else {
        uri
    };
    Ok(Target {
        uri,
        secure,
        host,
        port,
    })
}

/// Connects to a gotalk WebSocket server at a `ws://` or `wss://` URL
/// (e.g. `ws://127.0.0.1:1234/gotalk/`), with the default
/// [`WsClientConfig`].
///
/// The returned [`Peer`] is the same handle as over TCP: both sides may
/// call each other.
pub async fn connect(url: &str, handlers: Handlers, config: Config) -> Result<Peer, ConnectError> {
    connect_with(url, handlers, config, &WsClientConfig::default()).await
}

/// [`connect`] with explicit client settings.
pub async fn connect_with(
    url: &str,
    handlers: Handlers,
    config: Config,
    ws: &WsClientConfig,
) -> Result<Peer, ConnectError> {
    let target = parse_url(url, ws.announce_capabilities)?;
    let limit = ws
        .max_message_size
        .unwrap_or(config.max_payload as usize + gotalk_proto::MAX_HEADER_LEN);
    let ws_config = WebSocketConfig::default()
        .read_buffer_size(super::READ_BUFFER)
        .max_message_size(Some(limit))
        .max_frame_size(Some(limit));
    let mut request = target
        .uri
        .clone()
        .into_client_request()
        .map_err(|e| ConnectError::WebSocket(e.to_string()))?;
    let origin = match &ws.origin {
        Some(o) => o.clone(),
        None => {
            let scheme = if target.secure { "https" } else { "http" };
            let authority = target.uri.authority().expect("has a host");
            format!("{scheme}://{authority}")
        }
    };
    request.headers_mut().insert(
        header::ORIGIN,
        HeaderValue::from_str(&origin)
            .map_err(|_| ConnectError::InvalidAddress(format!("bad origin {origin:?}")))?,
    );
    let remote = Some(format!(
        "{}://{}:{}",
        if target.secure { "wss" } else { "ws" },
        target.host,
        target.port
    ));
    let max_message = limit;
    let limit = ws.connect_timeout;
    let tcp = async {
        let tcp = TcpStream::connect((target.host.as_str(), target.port))
            .await
            .map_err(ConnectError::Io)?;
        let _ = tcp.set_nodelay(true);
        Ok::<_, ConnectError>(tcp)
    };
    if target.secure {
        #[cfg(feature = "tls")]
        {
            let tls = match &ws.tls {
                Some(c) => c.clone(),
                None => crate::tls::client_config_with_platform_roots()
                    .map_err(ConnectError::TlsConfig)?,
            };
            let setup = async {
                let tls = crate::tls::wrap_client(tcp.await?, &target.host, tls).await?;
                upgrade(request, tls, ws_config).await
            };
            let stream = timeout(limit, setup)
                .await
                .map_err(|_| ConnectError::Timeout(limit))??;
            return handshake(stream, max_message, ws, handlers, config, remote).await;
        }
        #[cfg(not(feature = "tls"))]
        return Err(ConnectError::TlsNotEnabled);
    }
    let setup = async { upgrade(request, tcp.await?, ws_config).await };
    let stream = timeout(limit, setup)
        .await
        .map_err(|_| ConnectError::Timeout(limit))??;
    handshake(stream, max_message, ws, handlers, config, remote).await
}

/// The gotalk handshake over an upgraded `stream`, through
/// [`WsClientConfig::wrap_io`] when set.
async fn handshake<S>(
    stream: Upgraded<S>,
    max_message: usize,
    ws: &WsClientConfig,
    handlers: Handlers,
    config: Config,
    remote: Option<String>,
) -> Result<Peer, ConnectError>
where
    S: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    let io = WsStream::new(stream.io, Role::Client, &stream.read, max_message);
    // Box only when asked to: the default path stays monomorphic.
    let peer = match &ws.wrap_io {
        Some(wrap) => {
            let io = wrap(Box::new(io));
            Peer::handshake_with_addr(io, handlers, config, remote, |_| {}).await
        }
        None => Peer::handshake_with_addr(io, handlers, config, remote, |_| {}).await,
    };
    Ok(peer?)
}

/// A connection after the upgrade: the stream, and what was read past the
/// server's response.
struct Upgraded<S> {
    io: S,
    read: Vec<u8>,
}

/// The WebSocket upgrade, by tungstenite's client handshake; the frames
/// are then [`WsStream`]'s, so the bytes the handshake read past the
/// response (frames the server sent right after it) are taken back from a
/// record of everything it read.
async fn upgrade<S>(
    request: tungstenite::handshake::client::Request,
    stream: S,
    config: WebSocketConfig,
) -> Result<Upgraded<S>, ConnectError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let recorded = Recorded {
        inner: stream,
        seen: Vec::new(),
    };
    match client_async_with_config(request, recorded, Some(config)).await {
        Ok((ws, _response)) => {
            let Recorded { inner, seen } = ws.into_inner();
            Ok(Upgraded {
                io: inner,
                read: past_response(&seen)
                    .ok_or_else(|| {
                        ConnectError::WebSocket("no end of the upgrade response".into())
                    })?
                    .to_vec(),
            })
        }
        Err(tungstenite::Error::Http(response)) => Err(ConnectError::Http {
            status: response.status().as_u16(),
            body: response
                .body()
                .as_deref()
                .map(|b| String::from_utf8_lossy(b).into_owned())
                .unwrap_or_default(),
        }),
        Err(tungstenite::Error::Io(e)) => Err(ConnectError::from_io(e)),
        Err(e) => Err(ConnectError::WebSocket(e.to_string())),
    }
}

/// The bytes after the HTTP response head at the start of `seen`.
fn past_response(seen: &[u8]) -> Option<&[u8]> {
    let end = seen.windows(4).position(|w| w == b"\r\n\r\n")?;
    Some(&seen[end + 4..])
}

/// A stream that keeps a copy of everything read from it (only used for
/// the upgrade's few hundred bytes).
struct Recorded<S> {
    inner: S,
    seen: Vec<u8>,
}

impl<S: AsyncRead + Unpin> AsyncRead for Recorded<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        ready!(Pin::new(&mut self.inner).poll_read(cx, buf))?;
        let new = &buf.filled()[before..];
        self.seen.extend_from_slice(new);
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Recorded<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        let t = parse_url("ws://127.0.0.1:1234/gotalk/", true).unwrap();
        assert_eq!(
            t.uri.to_string(),
            "ws://127.0.0.1:1234/gotalk/?caps=retry,stream"
        );
        assert!(!t.secure);
        assert_eq!((t.host.as_str(), t.port), ("127.0.0.1", 1234));
        let t = parse_url("wss://[::1]/x?a=b", true).unwrap();
        assert_eq!(t.uri.to_string(), "wss://[::1]/x?a=b&caps=retry,stream");
        assert_eq!((t.host.as_str(), t.port, t.secure), ("::1", 443, true));
        let t = parse_url("ws://example.com", false).unwrap();
        assert_eq!((t.host.as_str(), t.port), ("example.com", 80));
        assert!(matches!(
            parse_url("http://example.com/", true),
            Err(ConnectError::InvalidAddress(_))
        ));
        assert!(matches!(
            parse_url("/gotalk/", true),
            Err(ConnectError::InvalidAddress(_))
        ));
    }
}
