//! The WebSocket server: an axum router that upgrades connections at a mount
//! path and serves the browser client beside them.

use std::{fmt, net::SocketAddr, sync::Arc};

use axum::{
    Router,
    body::Body,
    extract::{
        ConnectInfo, FromRequestParts, Request,
        ws::{WebSocket, WebSocketUpgrade},
    },
    http::{HeaderMap, StatusCode, Uri, header},
    response::{IntoResponse, Response},
    routing::any,
};
use gotalk_proto::MAX_HEADER_LEN;
use tokio::{
    io::{AsyncRead, AsyncWrite},
    net::{TcpListener, ToSocketAddrs},
    sync::watch,
    task::JoinHandle,
};

use super::{WsIo, js};
use crate::server::Connections;
use crate::{Config, Handlers, Peer};

/// Called with every connection that completed the gotalk handshake.
pub type ConnectCallback = Arc<dyn Fn(&Peer, &ConnectionInfo) + Send + Sync>;

/// A byte stream: anything that is both [`AsyncRead`] and [`AsyncWrite`].
///
/// Blanket-implemented, so that [`BoxedIo`] can name the pair as one trait
/// object.
pub trait AsyncReadWrite: AsyncRead + AsyncWrite {}

impl<T: AsyncRead + AsyncWrite + ?Sized> AsyncReadWrite for T {}

/// A connection's gotalk byte stream as a trait object, as the I/O hooks
/// ([`WsConfig::wrap_io`], [`WsClientConfig::wrap_io`](super::WsClientConfig::wrap_io))
/// take and return it.
pub type BoxedIo = Box<dyn AsyncReadWrite + Send + Unpin>;

/// Wraps a server connection's byte stream before its gotalk handshake (see
/// [`WsConfig::wrap_io`]).
pub type ServerWrapIo = Arc<dyn Fn(BoxedIo, &ConnectionInfo) -> BoxedIo + Send + Sync>;

/// The query parameter a client uses to say what it can handle (see
/// [`RemoteCapabilities::Negotiate`]).
pub const CAPS_QUERY_PARAM: &str = "caps";

/// Which browser `Origin`s may open a connection.
///
/// Browsers attach `Origin` to every WebSocket handshake and let any page
/// connect anywhere, with the user's cookies: without a check, any web site
/// the user visits could talk to the server as that user (cross-site
/// WebSocket hijacking). Programs that are not browsers send no `Origin` and
/// cannot be steered by a web page, so they are let through by default.
///
/// The default, [`OriginPolicy::same_origin`], accepts:
/// - requests without `Origin` (non-browser clients), and
/// - requests whose `Origin` names the same host and port as their `Host`
///   header (the page was served by this server, the usual case).
///
/// Everything else gets `403 Forbidden` before the upgrade. Add origins with
/// [`allow`](Self::allow), refuse requests without `Origin` with
/// [`require_origin`](Self::require_origin) (what the Go server does), or
/// turn the check off with [`any`](Self::any).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OriginPolicy {
    any: bool,
    same_origin: bool,
    allow_missing: bool,
    /// Lower-cased `scheme://host[:port]` origins.
    allowed: Vec<String>,
}

impl Default for OriginPolicy {
    fn default() -> Self {
        Self::same_origin()
    }
}

impl OriginPolicy {
    /// Same-origin browsers and clients that send no `Origin` (the default).
    pub fn same_origin() -> Self {
        Self {
            any: false,
            same_origin: true,
            allow_missing: true,
            allowed: Vec::new(),
        }
    }

    /// Only the origins added with [`allow`](Self::allow), and clients that
    /// send no `Origin` (see [`require_origin`](Self::require_origin)).
    pub fn allow_list() -> Self {
        Self {
            same_origin: false,
            ..Self::same_origin()
        }
    }

    /// Any origin at all. Only for servers that authenticate every
    /// connection by other means than cookies.
    pub fn any() -> Self {
        Self {
            any: true,
            ..Self::same_origin()
        }
    }

    /// Also accepts `origin`, written as browsers send it:
    /// `scheme://host[:port]` (e.g. `https://app.example.com`). Compared
    /// without regard to case; a default port may be left out.
    pub fn allow(mut self, origin: impl AsRef<str>) -> Self {
        self.allowed.push(normalize_origin(origin.as_ref()));
        self
    }

    /// Refuses requests that carry no `Origin` header.
    pub fn require_origin(mut self) -> Self {
        self.allow_missing = false;
        self
    }

    /// Whether a request with these `Origin` and `Host` headers may connect.
    pub fn allows(&self, origin: Option<&str>, host: Option<&str>) -> bool {
        let Some(origin) = origin else {
            return self.allow_missing;
        };
        if self.any {
            return true;
        }
        let origin = normalize_origin(origin);
        if self.allowed.contains(&origin) {
            return true;
        }
        if self.same_origin
            && let Some(host) = host
            && let Some((scheme, authority)) = origin.split_once("://")
        {
            return normalize_authority(scheme, authority)
                == normalize_authority(scheme, &host.to_ascii_lowercase());
        }
        false
    }
}

/// `scheme://host[:port]`, lower-cased, default port removed.
fn normalize_origin(origin: &str) -> String {
    let origin = origin.trim().trim_end_matches('/').to_ascii_lowercase();
    match origin.split_once("://") {
        Some((scheme, authority)) => {
            format!("{scheme}://{}", normalize_authority(scheme, authority))
        }
        None => origin,
    }
}

fn normalize_authority<'a>(scheme: &str, authority: &'a str) -> &'a str {
    let default = match scheme {
        "http" | "ws" => ":80",
        "https" | "wss" => ":443",
        _ => return authority,
    };
    authority.strip_suffix(default).unwrap_or(authority)
}

/// What the server assumes a WebSocket client can handle.
///
/// The original gotalk.js answers a retry result (`e`) or a stream request
/// with ProtocolError 2 and closes, so neither may be sent to it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum RemoteCapabilities {
    /// The default: assume the client is the original gotalk.js (set
    /// [`Config::remote_retry_results`] and
    /// [`Config::remote_stream_requests`] to `false`) unless its upgrade URL
    /// says otherwise with the query parameter `caps` (see
    /// [`CAPS_QUERY_PARAM`]), a comma-separated list: `retry` turns on retry
    /// results, `stream` stream requests (`/gotalk/?caps=retry,stream`).
    /// The Rust client of this module and our `gotalk.js` send it.
    #[default]
    Negotiate,
    /// Use the two settings of the server's [`Config`] for every client.
    FromConfig,
}

impl RemoteCapabilities {
    /// The connection settings for a client whose upgrade URL has `query`.
    fn apply(self, config: &Config, query: Option<&str>) -> Config {
        let mut config = config.clone();
        if self == Self::Negotiate {
            let (retry, stream) = parse_caps(query);
            config.remote_retry_results = retry;
            config.remote_stream_requests = stream;
        }
        config
    }
}

/// `(retry, stream)` from a `caps=` query parameter.
fn parse_caps(query: Option<&str>) -> (bool, bool) {
    let (mut retry, mut stream) = (false, false);
    for pair in query.unwrap_or("").split('&') {
        let Some((key, value)) = pair.split_once('=') else {
            continue;
        };
        if key != CAPS_QUERY_PARAM {
            continue;
        }
        // `,` may arrive percent-encoded.
        let value = value.replace("%2C", ",").replace("%2c", ",");
        for token in value.split(',') {
            match token.trim() {
                "retry" => retry = true,
                "stream" => stream = true,
                _ => {}
            }
        }
    }
    (retry, stream)
}

/// Settings of the WebSocket server.
#[derive(Clone)]
pub struct WsConfig {
    /// Where the server is mounted. Upgrades are accepted at the mount and
    /// any path under it; any path under it that ends in `/gotalk.js` serves
    /// the browser client. Must start and end with `/`. Default `/gotalk/`.
    pub mount: String,
    /// Which `Origin`s may connect. Default [`OriginPolicy::same_origin`].
    pub origin: OriginPolicy,
    /// What clients are assumed to handle. Default
    /// [`RemoteCapabilities::Negotiate`].
    pub remote: RemoteCapabilities,
    /// Largest WebSocket message accepted, in bytes. A larger one closes the
    /// connection with ProtocolError 2 (close code 4002). Default `None`:
    /// the connection's [`Config::max_payload`] plus the longest header.
    pub max_message_size: Option<usize>,
    /// Whether to serve the browser client under the mount. Default `true`.
    pub serve_js: bool,
    /// Called with every connection after its gotalk handshake, e.g. to keep
    /// a handle for sending it requests or notifications later. The
    /// connection's [`ConnectionInfo`] is also stored as its user data
    /// (`ctx.user_data::<ConnectionInfo>()` in handlers).
    pub on_connect: Option<ConnectCallback>,
    /// Wraps every connection's gotalk byte stream after the WebSocket
    /// upgrade and before the gotalk handshake, e.g. to log, count or
    /// trace the bytes; see [`wrap_io`](Self::wrap_io). Default `None`: the
    /// stream is used as it is, without boxing.
    pub wrap_io: Option<ServerWrapIo>,
}

impl Default for WsConfig {
    fn default() -> Self {
        Self {
            mount: "/gotalk/".to_owned(),
            origin: OriginPolicy::default(),
            remote: RemoteCapabilities::default(),
            max_message_size: None,
            serve_js: true,
            on_connect: None,
            wrap_io: None,
        }
    }
}

impl fmt::Debug for WsConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WsConfig")
            .field("mount", &self.mount)
            .field("origin", &self.origin)
            .field("remote", &self.remote)
            .field("max_message_size", &self.max_message_size)
            .field("serve_js", &self.serve_js)
            .field("on_connect", &self.on_connect.is_some())
            .field("wrap_io", &self.wrap_io.is_some())
            .finish()
    }
}

impl WsConfig {
    /// Sets [`on_connect`](Self::on_connect).
    pub fn on_connect(
        mut self,
        f: impl Fn(&Peer, &ConnectionInfo) + Send + Sync + 'static,
    ) -> Self {
        self.on_connect = Some(Arc::new(f));
        self
    }

    /// Sets [`wrap_io`](Self::wrap_io): `f` gets each connection's byte
    /// stream (the [`WsIo`] over the upgraded WebSocket, boxed) and what is
    /// known about the connection, and returns the stream the gotalk
    /// handshake and every later frame go through. What it reads and writes
    /// are exactly the gotalk bytes, starting with the version `01`.
    ///
    /// ```
    /// use std::sync::{Arc, atomic::{AtomicU64, Ordering}};
    /// use gotalk_peer::ws::{BoxedIo, ConnectionInfo, WsConfig};
    ///
    /// let upgraded = Arc::new(AtomicU64::new(0));
    /// let seen = upgraded.clone();
    /// let ws = WsConfig::default().wrap_io(move |io: BoxedIo, info: &ConnectionInfo| {
    ///     seen.fetch_add(1, Ordering::Relaxed);
    ///     tracing::debug!(id = info.id, "wrapping");
    ///     io // or Box::new(MyTap::new(io))
    /// });
    /// assert!(ws.wrap_io.is_some());
    /// ```
    pub fn wrap_io(
        mut self,
        f: impl Fn(BoxedIo, &ConnectionInfo) -> BoxedIo + Send + Sync + 'static,
    ) -> Self {
        self.wrap_io = Some(Arc::new(f));
        self
    }

    /// The message size limit in force for connections with `config`.
    pub fn message_limit(&self, config: &Config) -> usize {
        self.max_message_size
            .unwrap_or(config.max_payload as usize + MAX_HEADER_LEN)
    }
}

/// What the server knew about a connection when it upgraded it.
#[derive(Clone, Debug)]
pub struct ConnectionInfo {
    /// The server-assigned connection number, unique per [`WsServer`].
    pub id: u64,
    /// The client's address, when the router runs with connect info
    /// ([`WsServer::serve`] does; see axum's
    /// `into_make_service_with_connect_info`).
    pub remote_addr: Option<SocketAddr>,
    /// The upgrade request's URI.
    pub uri: Uri,
    /// The upgrade request's headers (cookies, `Origin`, ...).
    pub headers: HeaderMap,
    /// The settings the connection runs with.
    pub remote_retry_results: bool,
    /// See [`Config::remote_stream_requests`].
    pub remote_stream_requests: bool,
}

/// Connect info the TLS listener provides (see [`WsServer::serve_tls`]).
#[derive(Clone, Copy, Debug)]
pub(crate) struct RemoteAddr(pub(crate) SocketAddr);

struct Inner {
    handlers: Handlers,
    config: Config,
    ws: WsConfig,
    connections: Connections,
}

/// A gotalk WebSocket server: a set of handlers and settings, the axum
/// [`Router`] that serves them, and the connections it holds.
///
/// Cheap to clone. Mount [`router`](Self::router) in your own axum app, or
/// let [`serve`](Self::serve) bind an address.
///
/// ```no_run
/// # async fn run() -> std::io::Result<()> {
/// use gotalk_peer::{Config, Handlers, HandlerError, ws::{WsConfig, WsServer}};
/// let handlers = Handlers::new()
///     .buffer("echo", |_ctx, payload| async move { Ok::<_, HandlerError>(payload) });
/// let server = WsServer::new(handlers, Config::default(), WsConfig::default());
/// let app = axum::Router::new()
///     .route("/", axum::routing::get(|| async { "hello" }))
///     .merge(server.router());
/// let listener = tokio::net::TcpListener::bind("127.0.0.1:8080").await?;
/// axum::serve(listener, app).await
/// # }
/// ```
#[derive(Clone)]
pub struct WsServer {
    inner: Arc<Inner>,
}

impl fmt::Debug for WsServer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WsServer")
            .field("handlers", &self.inner.handlers)
            .field("ws", &self.inner.ws)
            .field("connections", &self.connection_count())
            .finish()
    }
}

impl WsServer {
    /// A server for `handlers`; every connection starts from `config`
    /// (adjusted per [`WsConfig::remote`]).
    ///
    /// # Panics
    /// If `ws.mount` does not start and end with `/`.
    pub fn new(handlers: Handlers, config: Config, ws: WsConfig) -> Self {
        assert!(
            ws.mount.starts_with('/') && ws.mount.ends_with('/'),
            "WsConfig::mount must start and end with '/', got {:?}",
            ws.mount
        );
        Self {
            inner: Arc::new(Inner {
                handlers,
                config,
                ws,
                connections: Connections::default(),
            }),
        }
    }

    /// The routes of the mount: `/gotalk`, `/gotalk/` and everything under
    /// it, for any router state `S` so it merges into any app.
    pub fn router<S: Clone + Send + Sync + 'static>(&self) -> Router<S> {
        let mount = self.inner.ws.mount.clone();
        let bare = mount.trim_end_matches('/').to_owned();
        let handler = {
            let server = self.clone();
            move |req: Request| {
                let server = server.clone();
                async move { server.handle(req).await }
            }
        };
        let mut router = Router::new()
            .route(&mount, any(handler.clone()))
            .route(&format!("{mount}{{*rest}}"), any(handler.clone()));
        if !bare.is_empty() {
            router = router.route(&bare, any(handler));
        }
        router
    }

    /// The connections open right now.
    pub fn peers(&self) -> Vec<Peer> {
        self.inner.connections.peers()
    }

    /// How many connections are open.
    pub fn connection_count(&self) -> usize {
        self.inner.connections.len()
    }

    /// Closes every open connection gracefully and waits until they are
    /// closed (each at most [`Config::close_timeout`]).
    pub async fn close_all(&self) {
        self.inner.connections.close_all().await;
    }

    async fn handle(self, req: Request) -> Response {
        let path = req.uri().path();
        if self.inner.ws.serve_js && js::is_js_path(path) {
            return js::serve(req.method(), req.headers());
        }
        let (mut parts, _body) = req.into_parts();
        let upgrade = match WebSocketUpgrade::from_request_parts(&mut parts, &()).await {
            Ok(u) => u,
            Err(rejection) => {
                let mut response = rejection.into_response();
                if response.status() == StatusCode::BAD_REQUEST
                    || response.status() == StatusCode::METHOD_NOT_ALLOWED
                {
                    // Plain HTTP at the mount: say what is served here.
                    *response.status_mut() = StatusCode::UPGRADE_REQUIRED;
                    response.headers_mut().insert(
                        header::UPGRADE,
                        header::HeaderValue::from_static("websocket"),
                    );
                }
                return response;
            }
        };
        let origin = parts
            .headers
            .get(header::ORIGIN)
            .and_then(|v| v.to_str().ok());
        let host = parts
            .headers
            .get(header::HOST)
            .and_then(|v| v.to_str().ok());
        if !self.inner.ws.origin.allows(origin, host) {
            tracing::info!(?origin, ?host, "websocket upgrade refused by origin policy");
            return Response::builder()
                .status(StatusCode::FORBIDDEN)
                .body(Body::from("origin not allowed\n"))
                .expect("static response");
        }
        let remote_addr = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|c| c.0)
            .or_else(|| {
                parts
                    .extensions
                    .get::<ConnectInfo<RemoteAddr>>()
                    .map(|c| c.0.0)
            });
        let config = self
            .inner
            .ws
            .remote
            .apply(&self.inner.config, parts.uri.query());
        let info = ConnectionInfo {
            id: self.inner.connections.next_id(),
            remote_addr,
            uri: parts.uri,
            headers: parts.headers,
            remote_retry_results: config.remote_retry_results,
            remote_stream_requests: config.remote_stream_requests,
        };
        let limit = self.inner.ws.message_limit(&config);
        upgrade
            .max_message_size(limit)
            .max_frame_size(limit)
            .on_upgrade(move |socket| self.run(socket, config, info))
    }

    async fn run(self, socket: WebSocket, config: Config, info: ConnectionInfo) {
        let io = WsIo::new(socket);
        // Box only when asked to: the default path stays monomorphic.
        match self.inner.ws.wrap_io.clone() {
            Some(wrap) => {
                let io = wrap(Box::new(io), &info);
                self.hold(io, config, info).await;
            }
            None => self.hold(io, config, info).await,
        }
    }

    /// Runs the gotalk handshake on `io` and keeps the connection until it
    /// closes.
    async fn hold<T>(self, io: T, config: Config, info: ConnectionInfo)
    where
        T: AsyncRead + AsyncWrite + Send + Unpin + 'static,
    {
        let remote = info.remote_addr.map(|a| a.to_string());
        let handlers = self.inner.handlers.clone();
        let ws = &self.inner.ws;
        // Connection info and the user's callback come before the first
        // message is read, so every handler sees them.
        let setup = |peer: &Peer| {
            peer.set_user_data(info.clone());
            if let Some(cb) = &ws.on_connect {
                cb(peer, &info);
            }
        };
        let peer = match Peer::handshake_with_addr(io, handlers, config, remote, setup).await {
            Ok(peer) => peer,
            Err(e) => {
                tracing::debug!(error = %e, remote = ?info.remote_addr, "websocket gotalk handshake failed");
                return;
            }
        };
        let id = info.id;
        tracing::debug!(id, remote = ?info.remote_addr, "websocket connection open");
        let reason = self.inner.connections.hold(id, peer).await;
        tracing::debug!(id, %reason, "websocket connection closed");
    }

    /// Binds `addr` and serves [`router`](Self::router) on it (and nothing
    /// else) until [`ServeHandle::shutdown`].
    pub async fn serve(&self, addr: impl ToSocketAddrs) -> std::io::Result<ServeHandle> {
        let listener = TcpListener::bind(addr).await?;
        self.serve_listener(listener)
    }

    /// Serves [`router`](Self::router) on a bound listener.
    pub fn serve_listener(&self, listener: TcpListener) -> std::io::Result<ServeHandle> {
        let local_addr = listener.local_addr()?;
        let (stop, stop_rx) = watch::channel(false);
        let app = self
            .router::<()>()
            .into_make_service_with_connect_info::<SocketAddr>();
        let task = tokio::spawn(async move {
            let served = axum::serve(listener, app)
                .with_graceful_shutdown(stopped(stop_rx))
                .await;
            if let Err(e) = served {
                tracing::warn!(error = %e, "websocket server stopped");
            }
        });
        Ok(ServeHandle {
            local_addr,
            stop,
            task,
            server: self.clone(),
        })
    }

    /// Binds `addr` and serves [`router`](Self::router) over TLS (`wss://`,
    /// and `https://` for the browser client) until
    /// [`ServeHandle::shutdown`]. TLS handshakes get
    /// [`Config::handshake_timeout`].
    #[cfg(feature = "tls")]
    pub async fn serve_tls(
        &self,
        addr: impl ToSocketAddrs,
        tls: Arc<crate::tls::rustls::ServerConfig>,
    ) -> std::io::Result<ServeHandle> {
        let listener =
            crate::tls::TlsListener::bind(addr, tls, self.inner.config.handshake_timeout).await?;
        let local_addr = listener.local_addr();
        let (stop, stop_rx) = watch::channel(false);
        let app = self
            .router::<()>()
            .into_make_service_with_connect_info::<RemoteAddr>();
        let task = tokio::spawn(async move {
            let served = axum::serve(listener, app)
                .with_graceful_shutdown(stopped(stop_rx))
                .await;
            if let Err(e) = served {
                tracing::warn!(error = %e, "websocket TLS server stopped");
            }
        });
        Ok(ServeHandle {
            local_addr,
            stop,
            task,
            server: self.clone(),
        })
    }
}

async fn stopped(mut rx: watch::Receiver<bool>) {
    let _ = rx.wait_for(|stop| *stop).await;
}

/// A running [`WsServer::serve`]: its address, and the way to stop it.
#[derive(Debug)]
pub struct ServeHandle {
    local_addr: SocketAddr,
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
    server: WsServer,
}

impl ServeHandle {
    /// The address the server listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The server being served.
    pub fn server(&self) -> &WsServer {
        &self.server
    }

    /// Stops accepting, closes every connection gracefully and waits until
    /// the listener is released (so the address can be bound again).
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        self.server.close_all().await;
        if let Err(e) = self.task.await {
            tracing::warn!(error = %e, "websocket server task failed");
        }
    }
}

/// [`WsServer::new`]`(handlers, config, ws).router()`: the routes to merge
/// into an axum app.
pub fn router<S: Clone + Send + Sync + 'static>(
    handlers: Handlers,
    config: Config,
    ws: WsConfig,
) -> Router<S> {
    WsServer::new(handlers, config, ws).router()
}

/// Binds `addr` and serves a [`WsServer`] for `handlers` on it.
pub async fn serve(
    addr: impl ToSocketAddrs,
    handlers: Handlers,
    config: Config,
    ws: WsConfig,
) -> std::io::Result<ServeHandle> {
    WsServer::new(handlers, config, ws).serve(addr).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origin_policy_default() {
        let p = OriginPolicy::default();
        assert!(p.allows(None, Some("example.com")));
        assert!(p.allows(Some("http://example.com"), Some("example.com")));
        assert!(p.allows(Some("http://example.com:80"), Some("example.com")));
        assert!(p.allows(Some("https://Example.com"), Some("example.com:443")));
        assert!(p.allows(Some("http://127.0.0.1:8080"), Some("127.0.0.1:8080")));
        assert!(!p.allows(Some("http://127.0.0.1:8081"), Some("127.0.0.1:8080")));
        assert!(!p.allows(Some("http://evil.example"), Some("example.com")));
        assert!(!p.allows(Some("null"), Some("example.com")));
        assert!(!p.allows(Some("http://example.com"), None));
    }

    #[test]
    fn origin_policy_lists() {
        let p = OriginPolicy::allow_list().allow("https://app.example.com/");
        assert!(p.allows(Some("https://APP.example.com"), Some("api.example.com")));
        assert!(p.allows(Some("https://app.example.com:443"), None));
        assert!(!p.allows(Some("http://app.example.com"), Some("app.example.com")));
        assert!(p.allows(None, None));
        let p = p.require_origin();
        assert!(!p.allows(None, None));
        assert!(OriginPolicy::any().allows(Some("http://x"), Some("y")));
        assert!(!OriginPolicy::any().require_origin().allows(None, Some("y")));
    }

    #[test]
    fn caps_query() {
        assert_eq!(parse_caps(None), (false, false));
        assert_eq!(parse_caps(Some("caps=retry,stream")), (true, true));
        assert_eq!(parse_caps(Some("a=1&caps=stream")), (false, true));
        assert_eq!(parse_caps(Some("caps=retry%2Cstream")), (true, true));
        assert_eq!(parse_caps(Some("xcaps=retry")), (false, false));
        let config = RemoteCapabilities::Negotiate.apply(&Config::default(), Some("caps=retry"));
        assert!(config.remote_retry_results && !config.remote_stream_requests);
        let config = RemoteCapabilities::FromConfig.apply(&Config::default(), None);
        assert!(config.remote_retry_results && config.remote_stream_requests);
    }
}
