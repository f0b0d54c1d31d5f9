//! The responder behind `gotalk serve`, `gotalk bench --self` and `gotalk demo`.
//!
//! Its own accept loop (rather than `gotalk_peer::Server`) so that each
//! connection can be wrapped in a [`Traced`] transport and numbered. With
//! [`ServeOptions::ws`], a WebSocket listener ([`crate::websocket`]) serves
//! the same operations beside it; both share one [`Conns`], so connection
//! numbers are unique and notifications are relayed across transports.

use std::{
    fmt, io,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use gotalk_peer::{CloseReason, Config, Error, Handlers, Peer, tls::rustls};
use tokio::{sync::watch, task::JoinHandle};

use crate::{
    addr::{Address, Io, Listener},
    ops::{self, ConnId, Hub},
    trace::{Traced, Tracer},
    websocket::{self, RunningWs, WsListen},
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

/// The connections of one server, whatever listener they came in on:
/// numbering, tracing, the relay [`Hub`] and the `conn#N` log lines.
#[derive(Clone)]
pub(crate) struct Conns {
    hub: Arc<Hub>,
    next: Arc<AtomicU64>,
    tracer: Option<Tracer>,
    log: bool,
}

impl Conns {
    fn new(tracer: Option<Tracer>, log: bool) -> Self {
        Self {
            hub: Arc::new(Hub::default()),
            next: Arc::new(AtomicU64::new(1)),
            tracer,
            log,
        }
    }

    /// Whether frames are traced (the transport must then be wrapped
    /// before the handshake).
    pub(crate) fn traced(&self) -> bool {
        self.tracer.is_some()
    }

    /// The frame tracer, with `--trace`.
    pub(crate) fn tracer(&self) -> Option<&Tracer> {
        self.tracer.as_ref()
    }

    /// Numbers a new connection (and logs it).
    #[allow(clippy::print_stdout)]
    pub(crate) fn open(&self, remote: &str) -> u64 {
        let conn = self.next.fetch_add(1, Ordering::Relaxed);
        if self.log {
            println!("conn#{conn} open {remote}");
        }
        conn
    }

    /// Attaches the connection number (before the first message is read)
    /// and registers the connection for relays.
    fn attach(&self, conn: u64, peer: &Peer) {
        peer.set_user_data(ConnId(conn));
        self.hub.insert(conn, peer);
    }

    /// Waits until the connection closes, then forgets it.
    #[allow(clippy::print_stdout)]
    async fn run(self, conn: u64, peer: Peer) {
        let reason: CloseReason = peer.closed().await;
        self.hub.remove(conn);
        if self.log {
            println!("conn#{conn} closed: {reason}");
        }
    }

    /// Serves one accepted byte stream until it closes: numbering,
    /// tracing, handshake, relays.
    #[allow(clippy::print_stdout)]
    pub(crate) async fn serve_connection<T: Io>(
        self,
        io: T,
        remote: String,
        handlers: Handlers,
        config: Config,
    ) {
        let conn = self.open(&remote);
        let setup = |peer: &Peer| self.attach(conn, peer);
        let handshake: Result<Peer, Error> = match &self.tracer {
            Some(t) => {
                let traced = Traced::new(io, t.connection_numbered(conn));
                Peer::handshake_with(traced, handlers, config, setup).await
            }
            None => Peer::handshake_with(io, handlers, config, setup).await,
        };
        match handshake {
            Ok(peer) => self.run(conn, peer).await,
            Err(e) => self.handshake_failed(conn, &remote, &e),
        }
    }

    /// Logs the end of connection `conn`, [`open`](Self::open)ed but never
    /// past its handshake.
    #[allow(clippy::print_stdout)]
    pub(crate) fn handshake_failed(&self, conn: u64, remote: &str, e: &dyn fmt::Display) {
        if self.log {
            println!("conn#{conn} closed: handshake failed: {e}");
        }
        tracing::debug!(conn, %remote, error = %e, "handshake failed");
    }

    /// Takes in a connection whose handshake someone else ran (the
    /// WebSocket server of `gotalk-peer`); called before its first message
    /// is read.
    pub(crate) fn adopt(&self, peer: &Peer, remote: &str) {
        self.adopt_numbered(self.open(remote), peer);
    }

    /// [`adopt`](Self::adopt) for a connection already [`open`](Self::open)ed
    /// as number `conn`.
    pub(crate) fn adopt_numbered(&self, conn: u64, peer: &Peer) {
        self.attach(conn, peer);
        tokio::spawn(self.clone().run(conn, peer.clone()));
    }
}

/// A server accepting connections in the background.
pub(crate) struct RunningServer {
    addr: String,
    stop: watch::Sender<bool>,
    task: JoinHandle<Listener>,
    conns: Conns,
    ws: Option<RunningWs>,
}

/// Binds `addr` (and the WebSocket address of `options.ws`) and accepts
/// connections in background tasks.
pub(crate) async fn start(
    addr: &Address,
    options: ServeOptions,
) -> Result<RunningServer, StartError> {
    let config = options.config;
    let conns = Conns::new(options.tracer, options.log_connections);
    let mut handlers = ops::server_handlers(conns.hub.clone());
    if let Some(extra) = &options.extra {
        handlers = extra(handlers);
    }
    let listener = Listener::bind(addr, options.tls.clone(), config.handshake_timeout)
        .await
        .map_err(|source| StartError {
            addr: addr.to_string(),
            source,
        })?;
    let ws = match &options.ws {
        Some(listen) => Some(
            websocket::serve(
                listen,
                conns.clone(),
                handlers.clone(),
                config.clone(),
                options.tls.clone(),
            )
            .await
            .map_err(|source| StartError {
                addr: listen.describe(options.tls.is_some()),
                source,
            })?,
        ),
        None => None,
    };
    let local = listener.local_addr();
    let (stop, stop_rx) = watch::channel(false);
    let task = tokio::spawn(accept_loop(
        listener,
        conns.clone(),
        handlers,
        config,
        stop_rx,
    ));
    Ok(RunningServer {
        addr: local,
        stop,
        task,
        conns,
        ws,
    })
}

impl RunningServer {
    /// The address clients connect to (`unix:PATH` for a Unix socket,
    /// `tls://host:port` with TLS).
    pub(crate) fn local_addr(&self) -> &str {
        &self.addr
    }

    /// The WebSocket URL clients connect to, when serving WebSocket.
    pub(crate) fn ws_url(&self) -> Option<&str> {
        self.ws.as_ref().map(RunningWs::url)
    }

    /// Stops accepting and closes every connection gracefully (each lets its
    /// requests in flight finish, up to its close timeout). Returns how many
    /// connections were open.
    pub(crate) async fn shutdown(self) -> usize {
        self.stop.send_replace(true);
        if let Some(ws) = &self.ws {
            ws.stop_accepting();
        }
        if let Ok(listener) = self.task.await {
            listener.cleanup();
        }
        let peers = self.conns.hub.drain();
        futures::future::join_all(peers.iter().map(Peer::close)).await;
        if let Some(ws) = self.ws {
            ws.finish().await;
        }
        peers.len()
    }
}

async fn accept_loop(
    mut listener: Listener,
    conns: Conns,
    handlers: Handlers,
    config: Config,
    mut stop: watch::Receiver<bool>,
) -> Listener {
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = stop.wait_for(|s| *s) => return listener,
        };
        match accepted {
            Ok((io, remote)) => {
                tokio::spawn(conns.clone().serve_connection(
                    io,
                    remote,
                    handlers.clone(),
                    config.clone(),
                ));
            }
            Err(e) => {
                // Out of file descriptors and the like: wait, don't spin.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}
