//! WebSocket in the CLI: `gotalk serve --ws` (gotalk-peer's WebSocket router
//! and browser client, served beside the TCP listener).
//!
//! Everything WebSocket (origin policy, capability negotiation, message
//! limits, the browser client) is gotalk-peer's. With `--trace`, its
//! [`WsConfig::wrap_io`] hook hands over each connection's gotalk byte
//! stream between the upgrade and the gotalk handshake, to be wrapped in a
//! [`Traced`] (clients do the same with `WsClientConfig::wrap_io`, see
//! [`crate::addr`]).

use std::{
    collections::HashMap,
    io,
    io::IoSlice,
    net::SocketAddr,
    pin::Pin,
    sync::{Arc, Mutex, MutexGuard, PoisonError},
    task::{Context, Poll},
    time::Duration,
};

use axum::{Router, serve::ListenerExt};
use gotalk_peer::{
    Config, Handlers,
    tls::{self, TlsListener, rustls},
    ws::{BoxedIo, OriginPolicy, WsConfig, WsServer},
};
use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    net::TcpListener,
    sync::watch,
    task::JoinHandle,
    time::timeout,
};

use crate::{server::Conns, trace::Traced};

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
    let ws = WsConfig {
        mount: listen.mount.clone(),
        origin: listen.origin_policy(),
        ..WsConfig::default()
    };
    let ws = if conns.traced() {
        trace_connections(ws, conns, secure)
    } else {
        ws.on_connect(move |peer, info| conns.adopt(peer, &remote_text(info.remote_addr, secure)))
    };
    let server = WsServer::new(handlers, config.clone(), ws);
    let router: Router = server.router();
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

/// With `--trace`: a connection is numbered (and logged as open) when it is
/// upgraded, and its byte stream wrapped in the tracer, so the trace of its
/// gotalk handshake already carries its number; once the handshake is done
/// it is adopted under that number.
fn trace_connections(ws: WsConfig, conns: Conns, secure: bool) -> WsConfig {
    // gotalk-peer's connection id -> our number, from the upgrade until the
    // end of the handshake.
    let numbers: Numbers = Arc::default();
    let (wrap_conns, wrap_numbers) = (conns.clone(), numbers.clone());
    ws.wrap_io(move |io, info| {
        let remote = remote_text(info.remote_addr, secure);
        let conn = wrap_conns.open(&remote);
        lock(&wrap_numbers).insert(info.id, conn);
        let io: BoxedIo = match wrap_conns.tracer() {
            Some(t) => Box::new(Traced::new(io, t.connection_numbered(conn))),
            None => io,
        };
        Box::new(Handshaking {
            io,
            _pending: Pending {
                id: info.id,
                conn,
                remote,
                numbers: wrap_numbers.clone(),
                conns: wrap_conns.clone(),
            },
        })
    })
    .on_connect(move |peer, info| match lock(&numbers).remove(&info.id) {
        Some(conn) => conns.adopt_numbered(conn, peer),
        None => conns.adopt(peer, &remote_text(info.remote_addr, secure)),
    })
}

type Numbers = Arc<Mutex<HashMap<u64, u64>>>;

fn lock(numbers: &Numbers) -> MutexGuard<'_, HashMap<u64, u64>> {
    numbers.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A connection numbered at its upgrade: when dropped before its handshake
/// completed (no adoption took its number), the handshake failed.
struct Pending {
    id: u64,
    conn: u64,
    remote: String,
    numbers: Numbers,
    conns: Conns,
}

impl Drop for Pending {
    fn drop(&mut self) {
        if lock(&self.numbers).remove(&self.id).is_some() {
            self.conns
                .handshake_failed(self.conn, &self.remote, &"see the trace above");
        }
    }
}

/// A traced WebSocket byte stream and its [`Pending`] number.
struct Handshaking {
    io: BoxedIo,
    /// Held only to be dropped with the stream.
    _pending: Pending,
}

impl AsyncRead for Handshaking {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl AsyncWrite for Handshaking {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
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
}
