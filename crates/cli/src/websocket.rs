//! WebSocket in the CLI: `gotalk serve --ws` (gotalk-peer's WebSocket router
//! and browser client, served beside the TCP listener), and the `ws://` /
//! `wss://` client path used with `--trace`.
//!
//! Tracing needs the gotalk byte stream *after* the WebSocket upgrade and
//! before the gotalk handshake: [`gotalk_peer::ws::WsIo`] is that stream, so
//! with `--trace` this module upgrades itself (client: tokio-tungstenite;
//! server: a middleware in front of gotalk-peer's router) and wraps the
//! `WsIo` in [`crate::trace::Traced`]. Without `--trace`, gotalk-peer's own
//! `ws::connect_with` and `WsServer` do everything.

use std::{io, net::SocketAddr, sync::Arc, time::Duration};

use axum::{
    Router,
    body::Body,
    extract::{ConnectInfo, FromRequestParts, Request, State, ws::WebSocketUpgrade},
    http::{HeaderValue, StatusCode, Uri, header},
    middleware::{self, Next},
    response::{IntoResponse, Response},
    serve::ListenerExt,
};
use gotalk_peer::{
    Config, Error, Handlers,
    tls::{self, TlsListener, rustls},
    ws::{CAPS_QUERY_PARAM, ConnectError, OriginPolicy, WsClientConfig, WsConfig, WsIo, WsServer},
};
use tokio::{
    io::{AsyncRead, AsyncWrite},
    net::{TcpListener, TcpStream},
    sync::watch,
    task::JoinHandle,
    time::timeout,
};
use tokio_tungstenite::tungstenite::{
    self, client::IntoClientRequest, handshake::client::Request as ClientRequest,
    protocol::WebSocketConfig,
};

use crate::{addr::Io, server::Conns};

/// How long [`RunningWs::finish`] waits for the HTTP server to wind down.
const FINISH_TIMEOUT: Duration = Duration::from_secs(5);

/// Where and how `gotalk serve --ws` listens.
#[derive(Clone, Debug)]
pub(crate) struct WsListen {
    /// `host:port` to bind.
    pub(crate) addr: String,
    /// The mount path: starts and ends with `/`.
    pub(crate) mount: String,
    /// Browser origins admitted besides same-origin pages.
    pub(crate) allow_origins: Vec<String>,
}

impl WsListen {
    /// `host:port` on the default mount, same-origin policy.
    pub(crate) fn new(addr: impl Into<String>) -> Self {
        Self {
            addr: addr.into(),
            mount: DEFAULT_MOUNT.to_owned(),
            allow_origins: Vec::new(),
        }
    }

    /// The URL form of the address to bind, for messages.
    pub(crate) fn describe(&self, tls: bool) -> String {
        format!("{}://{}{}", scheme(tls), self.addr, self.mount)
    }

    fn origin_policy(&self) -> OriginPolicy {
        self.allow_origins
            .iter()
            .fold(OriginPolicy::same_origin(), |policy, origin| {
                policy.allow(origin)
            })
    }
}

/// The default mount path, as gotalk's.
pub(crate) const DEFAULT_MOUNT: &str = "/gotalk/";

fn scheme(tls: bool) -> &'static str {
    if tls { "wss" } else { "ws" }
}

/// Checks a `--ws-path`: absolute, plain characters, and ending in `/` (one
/// is added when missing).
pub(crate) fn parse_mount(s: &str) -> Result<String, String> {
    if !s.starts_with('/') {
        return Err(format!("{s:?} must start with '/', as in /gotalk/"));
    }
    if s.contains("//") {
        return Err(format!("{s:?} has an empty path segment"));
    }
    if let Some(c) = s
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || "/-._~".contains(*c)))
    {
        return Err(format!(
            "{s:?} contains {c:?}: use letters, digits, '-', '.', '_', '~' and '/'"
        ));
    }
    Ok(if s.ends_with('/') {
        s.to_owned()
    } else {
        format!("{s}/")
    })
}

/// Checks a `--ws-allow-origin`: `scheme://host[:port]`, as browsers send it.
pub(crate) fn parse_origin(s: &str) -> Result<String, String> {
    match s.split_once("://") {
        Some((scheme, host))
            if !scheme.is_empty()
                && !host.is_empty()
                && !host.trim_end_matches('/').contains('/')
                && !s.contains(char::is_whitespace) =>
        {
            Ok(s.to_owned())
        }
        _ => Err(format!(
            "{s:?} is not an origin: write it as browsers send it, scheme://host[:port] \
             (e.g. https://app.example.com or http://localhost:3000)"
        )),
    }
}

/// A WebSocket listener serving in the background.
pub(crate) struct RunningWs {
    url: String,
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
    server: WsServer,
}

impl RunningWs {
    /// The URL clients connect to (`ws://ip:port/mount/`).
    pub(crate) fn url(&self) -> &str {
        &self.url
    }

    /// Stops accepting (open connections stay).
    pub(crate) fn stop_accepting(&self) {
        self.stop.send_replace(true);
    }

    /// Closes the connections still open and waits (bounded) until the
    /// HTTP server has released its listener.
    pub(crate) async fn finish(self) {
        self.stop_accepting();
        self.server.close_all().await;
        let mut task = self.task;
        if timeout(FINISH_TIMEOUT, &mut task).await.is_err() {
            tracing::warn!("the WebSocket listener did not stop in time; aborting it");
            task.abort();
        }
    }
}

/// The printable remote address of a WebSocket connection.
fn remote_text(addr: Option<SocketAddr>, tls: bool) -> String {
    match addr {
        Some(a) => format!("{a} ({})", scheme(tls)),
        None => format!("? ({})", scheme(tls)),
    }
}

/// Binds `listen.addr` and serves gotalk over WebSocket (`wss://` with
/// `tls`) with `handlers`, registering every connection in `conns`.
pub(crate) async fn serve(
    listen: &WsListen,
    conns: Conns,
    handlers: Handlers,
    config: Config,
    tls: Option<Arc<rustls::ServerConfig>>,
) -> io::Result<RunningWs> {
    let secure = tls.is_some();
    let adopting = conns.clone();
    let ws = WsConfig {
        mount: listen.mount.clone(),
        origin: listen.origin_policy(),
        ..WsConfig::default()
    }
    .on_connect(move |peer, info| adopting.adopt(peer, &remote_text(info.remote_addr, secure)));
    let server = WsServer::new(handlers.clone(), config.clone(), ws.clone());
    let mut router: Router = server.router();
    if conns.traced() {
        let state = Arc::new(TracedUpgrade {
            conns,
            handlers,
            config: config.clone(),
            ws,
            secure,
        });
        router = router.layer(middleware::from_fn_with_state(state, traced_upgrade));
    }
    let app = router.into_make_service_with_connect_info::<SocketAddr>();
    let tcp = TcpListener::bind(listen.addr.as_str()).await?;
    let local = tcp.local_addr()?;
    let (stop, stop_rx) = watch::channel(false);
    let stopped = async move {
        let mut rx = stop_rx;
        let _ = rx.wait_for(|s| *s).await;
    };
    let task = match tls {
        None => tokio::spawn(async move {
            let served = axum::serve(tcp, app).with_graceful_shutdown(stopped).await;
            if let Err(e) = served {
                tracing::warn!(error = %e, "WebSocket listener stopped");
            }
        }),
        Some(tls) => {
            // `tap_io` makes the client address available as a plain
            // `SocketAddr` connect info, as for TCP.
            let listener = TlsListener::from_listener(tcp, tls, config.handshake_timeout)?
                .tap_io(|_: &mut tls::ServerStream| {});
            tokio::spawn(async move {
                let served = axum::serve(listener, app)
                    .with_graceful_shutdown(stopped)
                    .await;
                if let Err(e) = served {
                    tracing::warn!(error = %e, "WebSocket TLS listener stopped");
                }
            })
        }
    };
    Ok(RunningWs {
        url: format!("{}://{local}{}", scheme(secure), listen.mount),
        stop,
        task,
        server,
    })
}

/// What the tracing upgrade path needs.
struct TracedUpgrade {
    conns: Conns,
    handlers: Handlers,
    config: Config,
    ws: WsConfig,
    secure: bool,
}

/// `(retry, stream)` from the `caps=` query parameter, as gotalk-peer's
/// `RemoteCapabilities::Negotiate` reads it.
fn parse_caps(query: Option<&str>) -> (bool, bool) {
    let (mut retry, mut stream) = (false, false);
    for (key, value) in query
        .unwrap_or("")
        .split('&')
        .filter_map(|pair| pair.split_once('='))
    {
        if key != CAPS_QUERY_PARAM {
            continue;
        }
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

/// With `--trace`: takes WebSocket upgrades before gotalk-peer's handler
/// does, applying the same origin policy, capability negotiation and message
/// limit, so the gotalk stream can be wrapped in a tracer. Everything else
/// (the browser client, plain HTTP, malformed upgrades) goes on to
/// gotalk-peer's router.
async fn traced_upgrade(State(t): State<Arc<TracedUpgrade>>, req: Request, next: Next) -> Response {
    let wants_websocket = req
        .headers()
        .get(header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("websocket"));
    if !wants_websocket || (t.ws.serve_js && req.uri().path().ends_with("/gotalk.js")) {
        return next.run(req).await;
    }
    let (mut parts, body) = req.into_parts();
    let upgrade = match WebSocketUpgrade::from_request_parts(&mut parts, &()).await {
        Ok(u) => u,
        Err(_) => return next.run(Request::from_parts(parts, body)).await,
    };
    let origin = parts
        .headers
        .get(header::ORIGIN)
        .and_then(|v| v.to_str().ok());
    let host = parts
        .headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok());
    if !t.ws.origin.allows(origin, host) {
        tracing::info!(?origin, ?host, "websocket upgrade refused by origin policy");
        return (StatusCode::FORBIDDEN, Body::from("origin not allowed\n")).into_response();
    }
    let mut config = t.config.clone();
    (config.remote_retry_results, config.remote_stream_requests) = parse_caps(parts.uri.query());
    let limit = t.ws.message_limit(&config);
    let remote = parts
        .extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0);
    upgrade
        .max_message_size(limit)
        .max_frame_size(limit)
        .on_upgrade(move |socket| {
            let remote = remote_text(remote, t.secure);
            t.conns
                .clone()
                .serve_connection(WsIo::new(socket), remote, t.handlers.clone(), config)
        })
}

/// Opens a `ws://` or `wss://` connection as gotalk-peer's `ws::connect`
/// does (URL's own origin, `caps=retry,stream`, message limit from
/// `config`), but stops after the WebSocket upgrade and returns the gotalk
/// byte stream, so the caller can trace it before the gotalk handshake.
pub(crate) async fn connect_traced(
    url: &str,
    tls: Option<Arc<rustls::ClientConfig>>,
    config: &Config,
) -> Result<Box<dyn Io>, Error> {
    let connect_timeout = WsClientConfig::default().connect_timeout;
    let setup = async {
        let target = Target::parse(url)?;
        let limit = config.max_payload as usize + gotalk_proto::MAX_HEADER_LEN;
        let ws_config = WebSocketConfig::default()
            .max_message_size(Some(limit))
            .max_frame_size(Some(limit));
        let tcp = TcpStream::connect((target.host.as_str(), target.port))
            .await
            .map_err(ConnectError::Io)?;
        let _ = tcp.set_nodelay(true);
        let io: Box<dyn Io> = if target.secure {
            let tls = tls.ok_or(ConnectError::InvalidUrl(
                "wss:// without TLS settings".into(),
            ))?;
            let stream = tls::wrap_client(tcp, &target.host, tls)
                .await
                .map_err(ConnectError::Io)?;
            Box::new(WsIo::new(upgrade(target.request, stream, ws_config).await?))
        } else {
            Box::new(WsIo::new(upgrade(target.request, tcp, ws_config).await?))
        };
        Ok::<_, ConnectError>(io)
    };
    match timeout(connect_timeout, setup).await {
        Ok(io) => Ok(io?),
        Err(_) => Err(ConnectError::Timeout(connect_timeout).into()),
    }
}

/// A `ws://` / `wss://` URL, ready to connect to.
struct Target {
    request: ClientRequest,
    secure: bool,
    /// Without the brackets of an IPv6 literal.
    host: String,
    port: u16,
}

impl Target {
    fn parse(url: &str) -> Result<Self, ConnectError> {
        let invalid = |why: String| ConnectError::InvalidUrl(why);
        let uri: Uri = url.parse().map_err(|e| invalid(format!("{e}")))?;
        let secure = match uri.scheme_str() {
            Some("ws") => false,
            Some("wss") => true,
            other => return Err(invalid(format!("scheme {other:?} is not ws or wss"))),
        };
        let authority = uri
            .authority()
            .filter(|a| !a.host().is_empty())
            .ok_or_else(|| invalid("no host".into()))?;
        let host = authority.host();
        let host = host
            .strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .unwrap_or(host)
            .to_owned();
        let port = authority
            .port_u16()
            .unwrap_or(if secure { 443 } else { 80 });
        let path = uri.path_and_query().map_or("/", |pq| pq.as_str());
        let sep = if path.contains('?') { '&' } else { '?' };
        let full = format!(
            "{}://{authority}{path}{sep}{CAPS_QUERY_PARAM}=retry,stream",
            scheme(secure)
        );
        let mut request = full
            .into_client_request()
            .map_err(|e| ConnectError::WebSocket(e.to_string()))?;
        let origin = format!("{}://{authority}", if secure { "https" } else { "http" });
        request.headers_mut().insert(
            header::ORIGIN,
            HeaderValue::from_str(&origin)
                .map_err(|_| invalid(format!("bad origin {origin:?}")))?,
        );
        Ok(Self {
            request,
            secure,
            host,
            port,
        })
    }
}

async fn upgrade<S>(
    request: ClientRequest,
    stream: S,
    config: WebSocketConfig,
) -> Result<tokio_tungstenite::WebSocketStream<S>, ConnectError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    match tokio_tungstenite::client_async_with_config(request, stream, Some(config)).await {
        Ok((ws, _response)) => Ok(ws),
        Err(tungstenite::Error::Http(response)) => {
            Err(ConnectError::Rejected(response.status().as_u16()))
        }
        Err(tungstenite::Error::Io(e)) => Err(ConnectError::Io(e)),
        Err(e) => Err(ConnectError::WebSocket(e.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mounts() {
        assert_eq!(parse_mount("/gotalk/").unwrap(), "/gotalk/");
        assert_eq!(parse_mount("/api/v1").unwrap(), "/api/v1/");
        assert_eq!(parse_mount("/").unwrap(), "/");
        for bad in ["gotalk/", "/a//b/", "/{x}/", "/*/", "/a b/", "/a?b/", ""] {
            assert!(parse_mount(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn origins() {
        assert!(parse_origin("https://app.example.com").is_ok());
        assert!(parse_origin("http://localhost:3000").is_ok());
        assert!(parse_origin("http://localhost:3000/").is_ok());
        for bad in ["app.example.com", "https://", "https://a/b", "://x"] {
            assert!(parse_origin(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn caps_as_the_library_reads_them() {
        assert_eq!(parse_caps(None), (false, false));
        assert_eq!(parse_caps(Some("caps=retry,stream")), (true, true));
        assert_eq!(parse_caps(Some("a=1&caps=stream")), (false, true));
        assert_eq!(parse_caps(Some("caps=retry%2Cstream")), (true, true));
        assert_eq!(parse_caps(Some("xcaps=retry")), (false, false));
    }

    #[test]
    fn client_targets() {
        let t = Target::parse("ws://127.0.0.1:1234/gotalk/").unwrap();
        assert_eq!(
            t.request.uri().to_string(),
            "ws://127.0.0.1:1234/gotalk/?caps=retry,stream"
        );
        assert_eq!(t.request.headers()[header::ORIGIN], "http://127.0.0.1:1234");
        assert_eq!(
            (t.host.as_str(), t.port, t.secure),
            ("127.0.0.1", 1234, false)
        );
        let t = Target::parse("wss://[::1]/x?a=b").unwrap();
        assert_eq!(
            t.request.uri().to_string(),
            "wss://[::1]/x?a=b&caps=retry,stream"
        );
        assert_eq!(t.request.headers()[header::ORIGIN], "https://[::1]");
        assert_eq!((t.host.as_str(), t.port, t.secure), ("::1", 443, true));
        assert!(Target::parse("http://x/").is_err());
        assert!(Target::parse("/gotalk/").is_err());
    }
}
