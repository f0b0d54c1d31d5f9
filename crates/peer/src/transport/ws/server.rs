//! The WebSocket listener: an HTTP server (axum) that upgrades requests at
//! a mount path into gotalk connections for a [`Server`](crate::Server), and
//! serves the browser client beside them.
//!
//! The HTTP side only checks the request (path, upgrade, origin policy) and
//! hands it to the server's accept loop as a [`WsConnecting`]; the server's
//! `on_connect` hook then decides, and only an admitted request is
//! upgraded (a refused one gets the rejection's status, 403 or 401).

use std::{fmt, io, net::SocketAddr, sync::Arc, time::Duration};

use axum::{
    Router,
    body::Body,
    extract::{ConnectInfo, FromRequestParts, Request, ws::WebSocketUpgrade},
    http::{StatusCode, header},
    response::{IntoResponse, Response},
    routing::any,
    serve::ListenerExt,
};
use bytes::Bytes;
use gotalk_proto::MAX_HEADER_LEN;
use hyper_util::rt::TokioIo;
use tokio::{
    net::ToSocketAddrs,
    sync::{mpsc, oneshot},
    task::JoinHandle,
};

use super::{WsStream, js, stream::Role};
use crate::{
    BoxedIo, Config, ConnectionInfo, LocalAddr, Rejection, WebSocketInfo,
    transport::{Connecting, Listener},
};

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
    /// Adjusts `config` for a client whose upgrade URL has `query`,
    /// copying it only if that changes something.
    fn apply(self, config: &mut Arc<Config>, query: Option<&str>) {
        if self == Self::Negotiate {
            let (retry, stream) = parse_caps(query);
            if (config.remote_retry_results, config.remote_stream_requests) != (retry, stream) {
                let config = Arc::make_mut(config);
                config.remote_retry_results = retry;
                config.remote_stream_requests = stream;
            }
        }
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

/// Settings of a WebSocket listener.
#[derive(Clone, Debug)]
pub struct WsConfig {
    /// Where the endpoint is mounted. Upgrades are accepted at the mount and
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
    /// Time allowed for the TLS handshake of a `wss://` connection
    /// ([`WsListener::bind_tls`]). Default 10 s.
    pub tls_handshake_timeout: Duration,
    /// Serves every request outside the mount, on the HTTP server the
    /// listener runs ([`WsListener::bind`], [`WsListener::bind_tls`]): e.g.
    /// the pages that use the endpoint, so that they are same-origin.
    /// Default `None`: `404 Not Found`. Not used by [`router`], whose
    /// routes go into an app of your own.
    pub fallback: Option<Router>,
}

impl Default for WsConfig {
    fn default() -> Self {
        Self {
            mount: "/gotalk/".to_owned(),
            origin: OriginPolicy::default(),
            remote: RemoteCapabilities::default(),
            max_message_size: None,
            serve_js: true,
            tls_handshake_timeout: Duration::from_secs(10),
            fallback: None,
        }
    }
}

impl WsConfig {
    /// Sets [`mount`](Self::mount).
    pub fn mount(mut self, mount: impl Into<String>) -> Self {
        self.mount = mount.into();
        self
    }

    /// Sets [`origin`](Self::origin).
    pub fn origin(mut self, origin: OriginPolicy) -> Self {
        self.origin = origin;
        self
    }

    /// Sets [`remote`](Self::remote).
    pub fn remote(mut self, remote: RemoteCapabilities) -> Self {
        self.remote = remote;
        self
    }

    /// Sets [`fallback`](Self::fallback): `routes` serve every request
    /// outside the mount.
    pub fn fallback(mut self, routes: Router) -> Self {
        self.fallback = Some(routes);
        self
    }

    /// The message size limit in force for connections with `config`.
    pub fn message_limit(&self, config: &Config) -> usize {
        self.max_message_size
            .unwrap_or(config.max_payload as usize + MAX_HEADER_LEN)
    }
}

/// Upgrade requests waiting for the server, per listener.
const QUEUE: usize = 64;

/// How long [`WsListener`] waits for its HTTP server to finish once the
/// server stops.
const HTTP_STOP_TIMEOUT: Duration = Duration::from_secs(5);

/// The HTTP side of a listener: checks requests and queues upgrades.
#[derive(Clone)]
struct Endpoint {
    ws: WsConfig,
    local_addr: LocalAddr,
    queue: mpsc::Sender<WsConnecting>,
}

/// A WebSocket listener for a [`Server`](crate::Server): an HTTP server
/// that upgrades requests at its mount path (default `/gotalk/`) and serves
/// [`GOTALK_JS`](super::GOTALK_JS) under it.
///
/// [`bind`](Self::bind) runs the HTTP server itself; [`router`] gives the
/// routes to merge into an axum app of your own instead.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use gotalk_peer::{Config, HandlerError, Handlers, Server, ws};
/// let handlers = Handlers::new()
///     .buffer("echo", |_ctx, p| async move { Ok::<_, HandlerError>(p) });
/// let listener = ws::WsListener::bind("127.0.0.1:0", ws::WsConfig::default()).await?;
/// let server = Server::new(listener, handlers, Config::default()).spawn();
///
/// let url = server.local_addr().to_string(); // ws://127.0.0.1:PORT/gotalk/
/// let peer = ws::connect(&url, Handlers::new(), Config::default()).await?;
/// assert_eq!(peer.request("echo", "hi").await?, "hi");
/// server.shutdown().await;
/// # Ok(()) }
/// ```
pub struct WsListener {
    local_addr: LocalAddr,
    queue: mpsc::Receiver<WsConnecting>,
    http: Option<Http>,
}

impl fmt::Debug for WsListener {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WsListener")
            .field("local_addr", &self.local_addr)
            .field("serves_http", &self.http.is_some())
            .finish()
    }
}

/// An HTTP server this crate runs for a listener.
struct Http {
    stop: oneshot::Sender<()>,
    task: JoinHandle<()>,
}

impl Http {
    /// Serves `router` on `listener` until stopped.
    fn spawn<L>(listener: L, router: Router) -> Self
    where
        L: axum::serve::Listener<Addr = SocketAddr>,
    {
        // `tap_io` makes the client address available as a plain
        // `SocketAddr` connect info, whatever the listener.
        let listener = listener.tap_io(|_: &mut L::Io| {});
        let app = router.into_make_service_with_connect_info::<SocketAddr>();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let served = axum::serve(listener, app)
                .with_graceful_shutdown(async {
                    let _ = stopped.await;
                })
                .await;
            if let Err(e) = served {
                tracing::warn!(error = %e, "websocket HTTP server stopped");
            }
        });
        Self { stop, task }
    }

    /// Stops accepting and waits (bounded) until the address is released.
    async fn close(self) {
        let _ = self.stop.send(());
        let mut task = self.task;
        if tokio::time::timeout(HTTP_STOP_TIMEOUT, &mut task)
            .await
            .is_err()
        {
            tracing::warn!("websocket HTTP server did not stop in time; aborting it");
            task.abort();
        }
    }
}

impl WsListener {
    /// A listener and the endpoint's routes, for an HTTP server at
    /// `addr` (`None`: one this crate does not run).
    fn with_endpoint<S>(ws: WsConfig, addr: Option<SocketAddr>, secure: bool) -> (Self, Router<S>)
    where
        S: Clone + Send + Sync + 'static,
    {
        assert!(
            ws.mount.starts_with('/') && ws.mount.ends_with('/'),
            "WsConfig::mount must start and end with '/', got {:?}",
            ws.mount
        );
        let local_addr = LocalAddr::WebSocket {
            addr,
            secure,
            path: ws.mount.clone(),
        };
        let (tx, rx) = mpsc::channel(QUEUE);
        let endpoint = Endpoint {
            ws,
            local_addr: local_addr.clone(),
            queue: tx,
        };
        let listener = Self {
            local_addr,
            queue: rx,
            http: None,
        };
        (listener, endpoint.router())
    }

    /// The endpoint's routes plus [`WsConfig::fallback`], for the HTTP
    /// server this crate runs.
    fn with_own_http(ws: WsConfig, addr: SocketAddr, secure: bool) -> (Self, Router) {
        let fallback = ws.fallback.clone();
        let (listener, router) = Self::with_endpoint(ws, Some(addr), secure);
        let router = match fallback {
            Some(routes) => router.fallback_service(routes),
            None => router,
        };
        (listener, router)
    }

    /// Binds `addr` and serves the endpoint there (and nothing else).
    pub async fn bind(addr: impl ToSocketAddrs, ws: WsConfig) -> io::Result<Self> {
        Self::from_tokio(tokio::net::TcpListener::bind(addr).await?, ws)
    }

    /// Serves the endpoint on a listener bound elsewhere.
    pub fn from_tokio(tcp: tokio::net::TcpListener, ws: WsConfig) -> io::Result<Self> {
        let addr = tcp.local_addr()?;
        let (mut listener, router) = Self::with_own_http(ws, addr, false);
        let tcp = tcp.tap_io(|s: &mut tokio::net::TcpStream| {
            // Not fatal: only latency suffers without it.
            let _ = s.set_nodelay(true);
        });
        listener.http = Some(Http::spawn(super::elastic::ElasticListener(tcp), router));
        Ok(listener)
    }

    /// Binds `addr` and serves the endpoint over TLS (`wss://`, and
    /// `https://` for the browser client). TLS handshakes get
    /// [`WsConfig::tls_handshake_timeout`].
    #[cfg(feature = "tls")]
    pub async fn bind_tls(
        addr: impl ToSocketAddrs,
        ws: WsConfig,
        tls: std::sync::Arc<crate::tls::rustls::ServerConfig>,
    ) -> io::Result<Self> {
        Self::from_tokio_tls(tokio::net::TcpListener::bind(addr).await?, ws, tls)
    }

    /// [`bind_tls`](Self::bind_tls) on a listener bound elsewhere.
    #[cfg(feature = "tls")]
    pub fn from_tokio_tls(
        tcp: tokio::net::TcpListener,
        ws: WsConfig,
        tls: std::sync::Arc<crate::tls::rustls::ServerConfig>,
    ) -> io::Result<Self> {
        let addr = tcp.local_addr()?;
        let limit = ws.tls_handshake_timeout;
        let (mut listener, router) = Self::with_own_http(ws, addr, true);
        let tls = TlsHttp {
            tcp,
            acceptor: tokio_rustls::TlsAcceptor::from(tls),
            limit,
        };
        listener.http = Some(Http::spawn(super::elastic::ElasticListener(tls), router));
        Ok(listener)
    }
}

impl Drop for WsListener {
    fn drop(&mut self) {
        if let Some(http) = self.http.take() {
            // Stops accepting; requests in flight finish on their own.
            let _ = http.stop.send(());
        }
    }
}

impl Listener for WsListener {
    type Conn = WsConnecting;

    async fn accept(&mut self) -> io::Result<WsConnecting> {
        match self.queue.recv().await {
            Some(conn) => Ok(conn),
            None => {
                // The routes are gone (the app serving them was dropped):
                // nothing will ever come.
                tracing::debug!(local = %self.local_addr, "websocket endpoint dropped");
                std::future::pending().await
            }
        }
    }

    fn local_addr(&self) -> LocalAddr {
        self.local_addr.clone()
    }

    async fn close(mut self) {
        self.queue.close();
        if let Some(http) = self.http.take() {
            http.close().await;
        }
    }
}

/// The routes of a WebSocket endpoint (the mount, e.g. `/gotalk`, `/gotalk/`
/// and everything under it) to merge into an axum app of your own, for any
/// router state `S`, and the listener to give a [`Server`](crate::Server).
///
/// The client's address is known when the app is served with connect info
/// (`into_make_service_with_connect_info::<SocketAddr>()`). Until the server
/// accepts on the listener, upgrade requests wait; once it has stopped, they
/// get `503 Service Unavailable`.
///
/// ```no_run
/// # async fn run() -> std::io::Result<()> {
/// use gotalk_peer::{Config, Handlers, HandlerError, Server, ws};
/// let handlers = Handlers::new()
///     .buffer("echo", |_ctx, payload| async move { Ok::<_, HandlerError>(payload) });
/// let (listener, routes) = ws::router(ws::WsConfig::default());
/// let server = Server::new(listener, handlers, Config::default()).spawn();
/// let app = axum::Router::new()
///     .route("/", axum::routing::get(|| async { "hello" }))
///     .merge(routes);
/// let tcp = tokio::net::TcpListener::bind("127.0.0.1:8080").await?;
/// let app = app.into_make_service_with_connect_info::<std::net::SocketAddr>();
/// axum::serve(tcp, app).await
/// # }
/// ```
///
/// # Panics
/// If `ws.mount` does not start and end with `/`.
pub fn router<S>(ws: WsConfig) -> (WsListener, Router<S>)
where
    S: Clone + Send + Sync + 'static,
{
    WsListener::with_endpoint(ws, None, false)
}

impl Endpoint {
    fn router<S: Clone + Send + Sync + 'static>(self) -> Router<S> {
        let mount = self.ws.mount.clone();
        let bare = mount.trim_end_matches('/').to_owned();
        let handler = move |req: Request| {
            let endpoint = self.clone();
            async move { endpoint.handle(req).await }
        };
        let mut router = Router::new()
            .route(&mount, any(handler.clone()))
            .route(&format!("{mount}{{*rest}}"), any(handler.clone()));
        if !bare.is_empty() {
            router = router.route(&bare, any(handler));
        }
        router
    }

    async fn handle(self, req: Request) -> Response {
        let path = req.uri().path();
        if self.ws.serve_js && js::is_js_path(path) {
            let mut response = js::serve(req.method(), req.headers());
            self.allow_cross_origin(&req, &mut response);
            return response;
        }
        let (mut parts, _body) = req.into_parts();
        // axum checks the request and answers what is wrong with it; the
        // upgraded connection is then ours, framed by `WsStream`.
        let on_upgrade = parts.extensions.get::<hyper::upgrade::OnUpgrade>().cloned();
        let accept_key = parts.headers.get(header::SEC_WEBSOCKET_KEY).map(|key| {
            tokio_tungstenite::tungstenite::handshake::derive_accept_key(key.as_bytes())
        });
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
        if !self.ws.origin.allows(origin, host) {
            tracing::warn!(
                origin = origin.unwrap_or_default(),
                host = host.unwrap_or_default(),
                "websocket upgrade refused by the origin policy: to let pages from this origin \
                 connect, allow it (OriginPolicy::allow; gotalk serve: --ws-allow-origin ORIGIN)"
            );
            return text_response(StatusCode::FORBIDDEN, "origin not allowed\n");
        }
        let remote_addr = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|c| c.0);
        let mut info = ConnectionInfo::new(self.local_addr.clone(), remote_addr);
        // Copies: hyper's values are slices of its 16 KiB read buffer,
        // which they would keep alive for the connection's whole life.
        info.websocket = Some(Arc::new(WebSocketInfo {
            uri: owned_uri(&parts.uri),
            headers: owned_headers(&parts.headers),
            // Set by the server once the connection's settings are known.
            remote_retry_results: false,
            remote_stream_requests: false,
        }));
        let (verdict_tx, verdict_rx) = oneshot::channel();
        let conn = WsConnecting {
            info,
            remote: self.ws.remote,
            max_message_size: self.ws.max_message_size,
            verdict: verdict_tx,
        };
        if self.queue.send(conn).await.is_err() {
            return text_response(StatusCode::SERVICE_UNAVAILABLE, "server not accepting\n");
        }
        match verdict_rx.await {
            Ok(Verdict::Accept { limit, socket }) => {
                drop(upgrade);
                let (Some(on_upgrade), Some(accept_key)) = (on_upgrade, accept_key) else {
                    // axum's checks passed, so both are there.
                    return text_response(StatusCode::BAD_REQUEST, "not a websocket upgrade\n");
                };
                tokio::spawn(async move {
                    match on_upgrade.await {
                        Ok(upgraded) => {
                            let io: BoxedIo = Box::new(TokioIo::new(upgraded));
                            let _ = socket.send(WsStream::new(io, Role::Server, &[], limit));
                        }
                        Err(e) => tracing::debug!(error = %e, "websocket upgrade failed"),
                    }
                });
                Response::builder()
                    .status(StatusCode::SWITCHING_PROTOCOLS)
                    .header(header::CONNECTION, "upgrade")
                    .header(header::UPGRADE, "websocket")
                    .header(header::SEC_WEBSOCKET_ACCEPT, accept_key)
                    .body(Body::empty())
                    .expect("static response")
            }
            Ok(Verdict::Refuse(rejection)) => {
                let status =
                    StatusCode::from_u16(rejection.http_status()).unwrap_or(StatusCode::FORBIDDEN);
                text_response(status, format!("{}\n", rejection.reason()))
            }
            // The server stopped before deciding.
            Err(_) => text_response(StatusCode::SERVICE_UNAVAILABLE, "server not accepting\n"),
        }
    }
}

impl Endpoint {
    /// CORS for the browser client: a page of an origin the policy admits
    /// may load it as a module script from another origin
    /// (`<script type="module" src="https://api.example/gotalk/gotalk.js">`),
    /// which browsers fetch in CORS mode. Same-origin pages need nothing.
    fn allow_cross_origin(&self, req: &Request, response: &mut Response) {
        let headers = response.headers_mut();
        headers.append(header::VARY, header::HeaderValue::from_static("Origin"));
        let Some(origin) = req.headers().get(header::ORIGIN) else {
            return;
        };
        let host = req
            .headers()
            .get(header::HOST)
            .and_then(|v| v.to_str().ok());
        if self.ws.origin.allows(origin.to_str().ok(), host) {
            headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin.clone());
        }
    }
}

/// `uri` in memory of its own. hyper parses the request target in place:
/// its `Uri` shares the connection's read buffer.
fn owned_uri(uri: &axum::http::Uri) -> axum::http::Uri {
    match uri.path_and_query() {
        Some(pq) => {
            axum::http::Uri::from_maybe_shared(Bytes::copy_from_slice(pq.as_str().as_bytes()))
                .unwrap_or_else(|_| uri.clone())
        }
        None => uri.clone(),
    }
}

/// The headers of the WebSocket handshake itself, not kept: they mean
/// nothing once the connection is upgraded.
const HANDSHAKE_HEADERS: [header::HeaderName; 4] = [
    header::CONNECTION,
    header::UPGRADE,
    header::SEC_WEBSOCKET_KEY,
    header::SEC_WEBSOCKET_VERSION,
];

/// `headers` less [`HANDSHAKE_HEADERS`], in memory of their own, sized to
/// fit. hyper's header values are slices of the connection's read buffer;
/// names of standard headers are static and others are already copies.
fn owned_headers(headers: &header::HeaderMap) -> header::HeaderMap {
    let kept = |name: &header::HeaderName| !HANDSHAKE_HEADERS.contains(name);
    let mut owned = header::HeaderMap::with_capacity(headers.keys().filter(|n| kept(n)).count());
    for (name, value) in headers.iter().filter(|(n, _)| kept(n)) {
        // The same bytes, so valid; should that ever fail, the shared
        // value is kept rather than the header lost.
        let mut copy =
            header::HeaderValue::from_bytes(value.as_bytes()).unwrap_or_else(|_| value.clone());
        copy.set_sensitive(value.is_sensitive());
        owned.append(name.clone(), copy);
    }
    owned
}

fn text_response(status: StatusCode, body: impl Into<Body>) -> Response {
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "text/plain; charset=utf-8")
        .body(body.into())
        .expect("static response")
}

/// The server's answer to an upgrade request.
enum Verdict {
    /// Upgrade with this message size limit, and hand over the socket.
    Accept {
        limit: usize,
        socket: oneshot::Sender<WsStream<BoxedIo>>,
    },
    /// Answer with the rejection's status and reason.
    Refuse(Rejection),
}

/// A WebSocket upgrade request waiting for the server's decision (see
/// [`Connecting`]): refused, it gets an HTTP error; established, it is
/// upgraded.
pub struct WsConnecting {
    info: ConnectionInfo,
    remote: RemoteCapabilities,
    max_message_size: Option<usize>,
    verdict: oneshot::Sender<Verdict>,
}

impl fmt::Debug for WsConnecting {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WsConnecting")
            .field("info", &self.info)
            .finish_non_exhaustive()
    }
}

impl Connecting for WsConnecting {
    type Io = WsStream<BoxedIo>;

    fn info(&self) -> ConnectionInfo {
        self.info.clone()
    }

    fn configure(&self, config: &mut Arc<Config>) {
        let query = self.info.websocket.as_ref().and_then(|w| w.uri.query());
        self.remote.apply(config, query);
    }

    async fn establish(self, config: &Config) -> io::Result<WsStream<BoxedIo>> {
        let limit = self
            .max_message_size
            .unwrap_or(config.max_payload as usize + MAX_HEADER_LEN);
        let (socket_tx, socket_rx) = oneshot::channel();
        let verdict = Verdict::Accept {
            limit,
            socket: socket_tx,
        };
        if self.verdict.send(verdict).is_err() {
            return Err(io::Error::new(
                io::ErrorKind::ConnectionAborted,
                "the client left before the upgrade",
            ));
        }
        let wait = config.handshake_timeout;
        match tokio::time::timeout(wait, socket_rx).await {
            Ok(Ok(socket)) => Ok(socket),
            Ok(Err(_)) => Err(io::Error::new(
                io::ErrorKind::ConnectionAborted,
                "websocket upgrade failed",
            )),
            Err(_) => Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("websocket upgrade took longer than {wait:?}"),
            )),
        }
    }

    fn refuse(self, rejection: &Rejection) {
        let _ = self.verdict.send(Verdict::Refuse(rejection.clone()));
    }
}

/// The TCP side of a `wss://` endpoint: accepted connections run their
/// TLS handshake in their own connection task, on first use.
#[cfg(feature = "tls")]
struct TlsHttp {
    tcp: tokio::net::TcpListener,
    acceptor: tokio_rustls::TlsAcceptor,
    limit: Duration,
}

#[cfg(feature = "tls")]
impl axum::serve::Listener for TlsHttp {
    type Io = crate::transport::lazy_tls::LazyTlsStream;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        // axum's TCP accept retries failures itself.
        let (tcp, addr) = axum::serve::Listener::accept(&mut self.tcp).await;
        let stream =
            crate::transport::lazy_tls::LazyTlsStream::new(tcp, &self.acceptor, self.limit);
        (stream, addr)
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        self.tcp.local_addr()
    }
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

    /// hyper parses a request in place: its header values and URI are
    /// slices of the connection's 8–16 KiB read buffer. What a connection
    /// keeps must not hold that buffer.
    #[test]
    fn kept_request_does_not_hold_the_read_buffer() {
        let buffer = Bytes::from(
            b"/gotalk/?caps=retry,stream\0websocket\0dGhlIHNhbXBsZSBub25jZQ==\0sid=1".repeat(64),
        );
        let at = |from: &str| {
            buffer
                .windows(from.len())
                .position(|w| w == from.as_bytes())
                .unwrap()
        };
        let slice = |from: &str| buffer.slice(at(from)..at(from) + from.len());
        let value = |from: &str| header::HeaderValue::from_maybe_shared(slice(from)).unwrap();
        let mut headers = header::HeaderMap::new();
        headers.insert(header::UPGRADE, value("websocket"));
        headers.insert(header::SEC_WEBSOCKET_KEY, value("dGhlIHNhbXBsZSBub25jZQ=="));
        headers.insert(header::COOKIE, value("sid=1"));
        let uri = axum::http::Uri::from_maybe_shared(slice("/gotalk/?caps=retry,stream")).unwrap();

        let kept = (owned_uri(&uri), owned_headers(&headers));
        drop((uri, headers));
        assert!(
            buffer.is_unique(),
            "the kept request still shares the read buffer"
        );
        assert_eq!(kept.0.query(), Some("caps=retry,stream"));
        assert_eq!(kept.1.get(header::COOKIE).unwrap(), "sid=1");
        assert_eq!(kept.1.len(), 1, "the handshake's own headers are not kept");
    }

    #[test]
    fn caps_query() {
        assert_eq!(parse_caps(None), (false, false));
        assert_eq!(parse_caps(Some("caps=retry,stream")), (true, true));
        assert_eq!(parse_caps(Some("a=1&caps=stream")), (false, true));
        assert_eq!(parse_caps(Some("caps=retry%2Cstream")), (true, true));
        assert_eq!(parse_caps(Some("xcaps=retry")), (false, false));
        let shared = Arc::new(Config::default());
        let mut config = shared.clone();
        RemoteCapabilities::Negotiate.apply(&mut config, Some("caps=retry"));
        assert!(config.remote_retry_results && !config.remote_stream_requests);
        assert!(!Arc::ptr_eq(&config, &shared), "changed: a copy of its own");
        let mut config = shared.clone();
        RemoteCapabilities::FromConfig.apply(&mut config, None);
        assert!(config.remote_retry_results && config.remote_stream_requests);
        let mut config = shared.clone();
        RemoteCapabilities::Negotiate.apply(&mut config, Some("caps=retry,stream"));
        assert!(Arc::ptr_eq(&config, &shared), "unchanged: still shared");
    }
}
