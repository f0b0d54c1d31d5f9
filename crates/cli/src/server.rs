//! The responder behind `gotalk serve`, `gotalk bench --self` and `gotalk demo`:
//! gotalk-peer's [`Server`] on the listening address, plus a WebSocket
//! listener with [`ServeOptions::ws`], with the operations of [`ops`].
//!
//! Both listeners share the server's registry, so connection numbers
//! (`conn#N`, the server's [`ConnectionInfo::id`]) are unique and
//! notifications are relayed across transports. With `--trace`, the
//! server's `wrap_io` hook wraps every connection in a [`Traced`] stream.

use std::{
    collections::HashSet,
    fmt, io,
    io::IoSlice,
    pin::Pin,
    sync::{Arc, Mutex, MutexGuard, PoisonError},
    task::{Context, Poll},
};

use gotalk_hub::Hub;
use gotalk_peer::{
    BoxedIo, Config, ConnectionInfo, Connections, Handlers, LocalAddr, Server, ServerHandle,
    TcpListener, TransportKind,
    http::HttpServer,
    tls::{TlsListener, rustls},
    ws::WsListener,
};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::{
    addr::Address,
    ops,
    trace::{Traced, Tracer},
    websocket::{HttpListen, WsListen},
};

/// Adds handlers to the standard set (the demo's `flaky` operation).
pub(crate) type ExtraHandlers = Arc<dyn Fn(Handlers) -> Handlers + Send + Sync>;

/// How to serve.
#[derive(Clone, Default)]
pub(crate) struct ServeOptions {
    /// Settings of every accepted connection.
    pub(crate) config: Config,
    /// Reports every frame of every connection.
    pub(crate) tracer: Option<Tracer>,
    /// Prints a line to stdout when a connection opens or closes.
    pub(crate) log_connections: bool,
    /// More operations on top of [`ops::server_handlers`].
    pub(crate) extra: Option<ExtraHandlers>,
    /// TLS for the listener (`tls://`), and `wss://` for the WebSocket one.
    pub(crate) tls: Option<Arc<rustls::ServerConfig>>,
    /// Also serve WebSocket.
    pub(crate) ws: Option<WsListen>,
    /// Also serve the operations over plain HTTP (`--http`).
    pub(crate) http: Option<HttpListen>,
    /// Serve publish/subscribe (`--hub`); replaces the notification relay.
    pub(crate) hub: Option<Hub>,
    /// Count every operation's requests and latency (`--metrics`).
    pub(crate) metrics: bool,
}

/// Why [`start`] failed: which listener, and the error.
#[derive(Debug)]
pub(crate) struct StartError {
    /// The address that could not be served.
    pub(crate) addr: String,
    /// Why.
    pub(crate) source: io::Error,
}

impl fmt::Display for StartError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "cannot listen on {}: {}", self.addr, self.source)
    }
}

impl std::error::Error for StartError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.source)
    }
}

/// A server accepting connections in the background.
pub(crate) struct RunningServer {
    handle: ServerHandle,
    /// The HTTP endpoint of `--http`.
    http: Option<HttpServer>,
}

/// Binds `addr` (and the WebSocket address of `options.ws`) and accepts
/// connections in background tasks.
pub(crate) async fn start(
    addr: &Address,
    options: ServeOptions,
) -> Result<RunningServer, StartError> {
    let connections = Connections::new();
    let mut handlers = ops::server_handlers(connections.clone(), options.hub.is_none());
    if let Some(extra) = &options.extra {
        handlers = extra(handlers);
    }
    if let Some(hub) = &options.hub {
        handlers = hub.handlers(handlers);
    }
    if options.metrics {
        handlers = handlers.layer(gotalk_peer::middleware::MetricsLayer::new());
    }
    let config = options.config.clone();
    let failed = |source| StartError {
        addr: addr.to_string(),
        source,
    };
    let unsupported = |what: String| failed(io::Error::new(io::ErrorKind::Unsupported, what));
    let http = match &options.http {
        Some(listen) => Some(
            HttpServer::bind(
                listen.addr.as_str(),
                handlers.clone(),
                config.clone(),
                listen.http_config(),
            )
            .await
            .map_err(|source| StartError {
                addr: listen.describe(),
                source,
            })?,
        ),
        None => None,
    };
    let mut server = match (addr, options.tls.clone()) {
        (Address::Tcp(a), None) => {
            let listener = TcpListener::bind(a.as_str()).await.map_err(failed)?;
            Server::new(listener, handlers, config)
        }
        (Address::Tcp(a) | Address::Tls(a), Some(tls)) => {
            let listener = TlsListener::bind(a.as_str(), tls).await.map_err(failed)?;
            Server::new(listener, handlers, config)
        }
        (Address::Tls(_), None) => {
            return Err(unsupported(
                "tls:// needs a certificate and key (--tls-cert and --tls-key)".into(),
            ));
        }
        #[cfg(unix)]
        (Address::Unix(p), None) => {
            remove_stale_socket(p).map_err(failed)?;
            let listener = gotalk_peer::UnixListener::bind(p).map_err(failed)?;
            Server::new(listener, handlers, config)
        }
        (Address::Unix(_), _) => {
            return Err(unsupported(
                "Unix domain sockets are served without TLS (and only on Unix)".into(),
            ));
        }
        (Address::WebSocket(url), _) => {
            return Err(unsupported(format!(
                "{url}: serve WebSocket with --ws HOST:PORT (and --ws-path)"
            )));
        }
        (Address::Http(url), _) => {
            return Err(unsupported(format!(
                "{url}: serve HTTP with --http HOST:PORT (and --ws-path)"
            )));
        }
    };
    if let Some(listen) = &options.ws {
        let ws = listen.ws_config();
        let bound = match options.tls.clone() {
            Some(tls) => WsListener::bind_tls(listen.addr.as_str(), ws, tls).await,
            None => WsListener::bind(listen.addr.as_str(), ws).await,
        };
        let listener = bound.map_err(|source| StartError {
            addr: listen.describe(options.tls.is_some()),
            source,
        })?;
        server = server.listen(listener);
    }
    if options.tracer.is_some() || options.log_connections {
        server = log_and_trace(server, options.tracer, options.log_connections, options.hub);
    } else if let Some(hub) = &options.hub {
        server = hub.attach(server);
    }
    let handle = server.with_connections(connections).spawn();
    Ok(RunningServer { handle, http })
}

/// Removes the socket file at `path` when no server listens on it any more
/// (connecting is refused: a server killed before it could clean up).
/// A socket a server still accepts on, or a file that is not a socket, is
/// left alone and reported.
#[cfg(unix)]
fn remove_stale_socket(path: &std::path::Path) -> io::Result<()> {
    use std::os::unix::fs::FileTypeExt;
    let Ok(meta) = std::fs::symlink_metadata(path) else {
        return Ok(());
    };
    if !meta.file_type().is_socket() {
        return Err(io::Error::new(
            io::ErrorKind::AlreadyExists,
            "the path exists and is not a socket; remove it or choose another path",
        ));
    }
    match std::os::unix::net::UnixStream::connect(path) {
        Ok(_) => Err(io::Error::new(
            io::ErrorKind::AddrInUse,
            "a running server is listening on this socket; stop it first, or choose another path",
        )),
        Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
            tracing::info!(path = %path.display(), "removing a stale socket file");
            std::fs::remove_file(path)
        }
        // Anything else (no permission, ...): let bind say what is wrong.
        Err(_) => Ok(()),
    }
}

impl RunningServer {
    /// The address clients connect to (`unix:PATH` for a Unix socket,
    /// `tls://host:port` with TLS).
    pub(crate) fn local_addr(&self) -> String {
        self.handle.local_addr().to_string()
    }

    /// The live connections.
    pub(crate) fn connections(&self) -> Connections {
        self.handle.registry().clone()
    }

    /// The WebSocket URL clients connect to, when serving WebSocket.
    pub(crate) fn ws_url(&self) -> Option<String> {
        self.handle
            .local_addrs()
            .iter()
            .find(|a| matches!(a, LocalAddr::WebSocket { .. }))
            .map(ToString::to_string)
    }

    /// The HTTP endpoint's URL (`http://HOST:PORT/gotalk/`), when serving
    /// HTTP.
    pub(crate) fn http_url(&self) -> Option<String> {
        self.http.as_ref().map(HttpServer::url)
    }

    /// Stops accepting and closes every connection gracefully (each lets its
    /// requests in flight finish, up to its close timeout), and lets HTTP
    /// calls in flight finish. Returns how many connections were open.
    pub(crate) async fn shutdown(self) -> usize {
        let open = self.handle.connection_count();
        match self.http {
            Some(http) => {
                tokio::join!(self.handle.shutdown(), http.shutdown());
            }
            None => self.handle.shutdown().await,
        }
        open
    }
}

/// The printable remote address of a connection, as `conn#N open` shows it.
fn remote_text(info: &ConnectionInfo) -> String {
    let addr = match info.remote_addr {
        Some(a) => a.to_string(),
        None if info.transport == TransportKind::Unix => info.local_addr.to_string(),
        None => "?".to_owned(),
    };
    match info.transport {
        TransportKind::Tcp | TransportKind::Unix => addr,
        other => format!("{addr} ({other})"),
    }
}

/// Connections between their transport handshake and their gotalk
/// handshake, by number.
type Handshaking = Arc<Mutex<HashSet<u64>>>;

fn lock(set: &Handshaking) -> MutexGuard<'_, HashSet<u64>> {
    set.lock().unwrap_or_else(PoisonError::into_inner)
}

/// `conn#N open`, `conn#N closed: …` lines and frame traces: a connection
/// is numbered and logged once its transport is up (the `wrap_io` hook),
/// so the trace of its gotalk handshake already carries its number.
#[allow(clippy::print_stdout)]
fn log_and_trace(server: Server, tracer: Option<Tracer>, log: bool, hub: Option<Hub>) -> Server {
    let handshaking: Handshaking = Arc::default();
    let opened = handshaking.clone();
    // The hub's own hooks, called from these (a server has one of each).
    let admit = hub.clone();
    server
        .on_connect(move |info| match &admit {
            Some(hub) => hub.admit(info),
            None => Ok(()),
        })
        .wrap_io(move |io, info| {
            let conn = info.id;
            if log {
                println!("conn#{conn} open {}", remote_text(info));
            }
            lock(&handshaking).insert(conn);
            let io: BoxedIo = match &tracer {
                Some(t) => Box::new(Traced::new(io, t.connection_numbered(conn))),
                None => io,
            };
            Box::new(Guarded {
                io,
                _pending: Pending {
                    conn,
                    log,
                    handshaking: handshaking.clone(),
                },
            })
        })
        .on_open(move |peer, info| {
            let conn = info.id;
            lock(&opened).remove(&conn);
            if let Some(hub) = &hub {
                hub.open_connection(peer, info);
            }
            if log {
                let peer = peer.clone();
                tokio::spawn(async move {
                    let reason = peer.closed().await;
                    println!("conn#{conn} closed: {reason}");
                });
            }
        })
}

/// A connection numbered before its gotalk handshake: dropped while still
/// in [`Handshaking`], its handshake failed.
struct Pending {
    conn: u64,
    log: bool,
    handshaking: Handshaking,
}

impl Drop for Pending {
    #[allow(clippy::print_stdout)]
    fn drop(&mut self) {
        if lock(&self.handshaking).remove(&self.conn) && self.log {
            println!(
                "conn#{} closed: handshake failed (see the trace above)",
                self.conn
            );
        }
    }
}

/// A connection's byte stream and its [`Pending`] number, dropped together.
struct Guarded {
    io: BoxedIo,
    /// Held only to be dropped with the stream.
    _pending: Pending,
}

impl AsyncRead for Guarded {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl AsyncWrite for Guarded {
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
