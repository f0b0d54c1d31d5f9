//! One server for every transport: listeners, hooks, the registry of live
//! connections, and the handle that stops it all.

mod accept;
mod hooks;
mod registry;

use std::{fmt, io, sync::Arc, time::Duration};

use futures::future::BoxFuture;
use tokio::{net::ToSocketAddrs, task::JoinHandle};

pub use hooks::Rejection;
pub use registry::Connections;

use accept::State;
use hooks::Hooks;

use crate::{
    BoxedIo, Config, ConnectionInfo, Handlers, LocalAddr, Peer,
    transport::{Listener, TcpListener},
};

/// A listener, type-erased until the server starts it.
struct Bound {
    local_addr: LocalAddr,
    run: Box<dyn FnOnce(Arc<State>) -> BoxFuture<'static, ()> + Send>,
}

/// Serves gotalk on one or more [`Listener`]s (TCP, TLS, Unix sockets,
/// WebSocket): every connection gets the server's handlers and config, runs
/// through its hooks and is kept in its registry ([`Connections`]) until it
/// closes.
///
/// Each connection goes through the same steps on every transport:
/// [`on_connect`](Self::on_connect) may refuse it before any handshake,
/// the transport handshake runs (TLS, WebSocket upgrade),
/// [`wrap_io`](Self::wrap_io) may wrap its byte stream, the gotalk version
/// handshake runs, [`on_open`](Self::on_open) sees the new [`Peer`], and it
/// is served. Its [`ConnectionInfo`] is attached as user data.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use bytes::Bytes;
/// use gotalk_peer::{Config, HandlerError, Handlers, Peer, Rejection, Server, TcpListener};
/// let handlers = Handlers::new()
///     .buffer("echo", |_ctx, p: Bytes| async move { Ok::<_, HandlerError>(p) });
/// let server = Server::new(TcpListener::bind("127.0.0.1:0").await?, handlers, Config::default())
///     .on_connect(|info| match info.remote_addr {
///         Some(a) if a.ip().is_loopback() => Ok(()),
///         _ => Err(Rejection::forbidden("loopback only")),
///     })
///     .spawn();
/// let addr = server.local_addr().to_string();
/// let client = Peer::connect(addr, Handlers::new(), Config::default()).await?;
/// assert_eq!(client.request("echo", "hi").await?, "hi");
/// server.shutdown().await;
/// # Ok(()) }
/// ```
pub struct Server {
    handlers: Handlers,
    config: Config,
    hooks: Hooks,
    connections: Connections,
    listeners: Vec<Bound>,
}

impl fmt::Debug for Server {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Server")
            .field("local_addrs", &self.local_addrs())
            .field("hooks", &self.hooks)
            .finish_non_exhaustive()
    }
}

impl Server {
    /// A server for `handlers` on `listener`; every connection starts from
    /// `config`. Add more listeners with [`listen`](Self::listen), then
    /// [`spawn`](Self::spawn) it.
    pub fn new(listener: impl Listener, handlers: Handlers, config: Config) -> Self {
        Self {
            handlers,
            config,
            hooks: Hooks::default(),
            connections: Connections::new(),
            listeners: Vec::new(),
        }
        .listen(listener)
    }

    /// A server on a TCP listener bound to `addr`
    /// (`Server::new(TcpListener::bind(addr).await?, handlers, config)`).
    pub async fn bind(
        addr: impl ToSocketAddrs,
        handlers: Handlers,
        config: Config,
    ) -> io::Result<Self> {
        Ok(Self::new(TcpListener::bind(addr).await?, handlers, config))
    }

    /// A server on a Unix domain socket at `path`.
    #[cfg(unix)]
    pub fn bind_unix(
        path: impl AsRef<std::path::Path>,
        handlers: Handlers,
        config: Config,
    ) -> io::Result<Self> {
        let listener = crate::transport::UnixListener::bind(path)?;
        Ok(Self::new(listener, handlers, config))
    }

    /// Also accepts on `listener` (another port, another transport): all
    /// listeners share the handlers, hooks and registry, and connection
    /// numbers are unique across them.
    pub fn listen(mut self, listener: impl Listener) -> Self {
        self.listeners.push(Bound {
            local_addr: listener.local_addr(),
            run: Box::new(move |state| Box::pin(accept::run(listener, state))),
        });
        self
    }

    /// Decides whether a connection may go on, before any handshake: `f`
    /// sees its [`ConnectionInfo`] (remote address, transport, and for
    /// WebSocket the upgrade request's headers, query and cookies) and
    /// returns a [`Rejection`] to refuse it. A refused connection is never
    /// served a request; the refusal is logged (`tracing`, debug level).
    pub fn on_connect(
        mut self,
        f: impl Fn(&ConnectionInfo) -> Result<(), Rejection> + Send + Sync + 'static,
    ) -> Self {
        self.hooks.on_connect = Some(Arc::new(f));
        self
    }

    /// Calls `f` with every connection once its gotalk handshake is done,
    /// before its first message is read (keep the [`Peer`] to call the
    /// client later, attach user data, ...).
    pub fn on_open(mut self, f: impl Fn(&Peer, &ConnectionInfo) + Send + Sync + 'static) -> Self {
        self.hooks.on_open = Some(Arc::new(f));
        self
    }

    /// Wraps every connection's byte stream after the transport handshake
    /// and before the gotalk handshake, e.g. to log, count or trace the
    /// bytes. What the wrapper reads and writes are exactly the gotalk
    /// bytes, starting with the version `01`, on every transport
    /// (WebSocket framing and TLS are already taken off). Without it the
    /// stream is used as it is, without boxing.
    ///
    /// ```
    /// use std::sync::{Arc, atomic::{AtomicU64, Ordering}};
    /// # async fn f() -> std::io::Result<()> {
    /// use gotalk_peer::{BoxedIo, Config, ConnectionInfo, Handlers, Server};
    /// let wrapped = Arc::new(AtomicU64::new(0));
    /// let seen = wrapped.clone();
    /// let server = Server::bind("127.0.0.1:0", Handlers::new(), Config::default())
    ///     .await?
    ///     .wrap_io(move |io: BoxedIo, info: &ConnectionInfo| {
    ///         seen.fetch_add(1, Ordering::Relaxed);
    ///         tracing::debug!(id = info.id, "wrapping");
    ///         io // or Box::new(MyTap::new(io))
    ///     })
    ///     .spawn();
    /// # Ok(()) }
    /// ```
    pub fn wrap_io(
        mut self,
        f: impl Fn(BoxedIo, &ConnectionInfo) -> BoxedIo + Send + Sync + 'static,
    ) -> Self {
        self.hooks.wrap_io = Some(Arc::new(f));
        self
    }

    /// Keeps the connections in `connections` (default: a registry of its
    /// own), e.g. one the handlers were given to reach other connections.
    pub fn with_connections(mut self, connections: Connections) -> Self {
        self.connections = connections;
        self
    }

    /// The address of the server's (first) listener.
    pub fn local_addr(&self) -> &LocalAddr {
        &self.listeners[0].local_addr
    }

    /// The addresses of the listeners, in the order they were added.
    pub fn local_addrs(&self) -> Vec<LocalAddr> {
        self.listeners
            .iter()
            .map(|l| l.local_addr.clone())
            .collect()
    }

    /// Starts accepting on every listener, in background tasks.
    pub fn spawn(self) -> ServerHandle {
        let local_addrs = self.local_addrs();
        let state = Arc::new(State::new(
            self.handlers,
            self.config,
            self.hooks,
            self.connections,
        ));
        let tasks = self
            .listeners
            .into_iter()
            .map(|l| tokio::spawn((l.run)(state.clone())))
            .collect();
        ServerHandle {
            state,
            local_addrs,
            tasks,
        }
    }

    /// Serves until this future is dropped (which stops accepting; open
    /// connections carry on until they close).
    pub async fn serve(self) {
        let _handle = self.spawn();
        std::future::pending::<()>().await;
    }
}

/// How long [`ServerHandle::shutdown`] waits for a listener to let go of
/// its address (an HTTP server finishing its requests, for WebSocket).
const RELEASE_TIMEOUT: Duration = Duration::from_secs(5);

/// Controls a [`Server`] started with [`Server::spawn`].
///
/// Dropping the handle stops accepting; connections already open carry on
/// until they close. [`shutdown`](Self::shutdown) also closes them.
pub struct ServerHandle {
    state: Arc<State>,
    local_addrs: Vec<LocalAddr>,
    tasks: Vec<JoinHandle<()>>,
}

impl Drop for ServerHandle {
    fn drop(&mut self) {
        self.state.stop.send_replace(true);
    }
}

impl fmt::Debug for ServerHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerHandle")
            .field("local_addrs", &self.local_addrs)
            .field("connections", &self.connection_count())
            .finish()
    }
}

impl ServerHandle {
    /// The address of the server's (first) listener.
    pub fn local_addr(&self) -> &LocalAddr {
        &self.local_addrs[0]
    }

    /// The addresses of every listener, in the order they were added.
    pub fn local_addrs(&self) -> &[LocalAddr] {
        &self.local_addrs
    }

    /// Handles to the open connections.
    pub fn connections(&self) -> Vec<Peer> {
        self.state.connections.peers()
    }

    /// How many connections are open.
    pub fn connection_count(&self) -> usize {
        self.state.connections.len()
    }

    /// The registry of open connections.
    pub fn registry(&self) -> &Connections {
        &self.state.connections
    }

    /// Stops accepting, waits until every listener let go of its address
    /// (so it can be bound again), then closes every connection gracefully
    /// (each lets its requests in flight finish, up to its
    /// [`Config::close_timeout`]).
    pub async fn shutdown(mut self) {
        self.state.stop.send_replace(true);
        for task in self.tasks.drain(..) {
            let abort = task.abort_handle();
            match tokio::time::timeout(RELEASE_TIMEOUT, task).await {
                Ok(Err(e)) if e.is_panic() => tracing::warn!(error = %e, "accept task panicked"),
                Ok(_) => {}
                Err(_) => {
                    tracing::warn!("a listener did not stop in time; aborting it");
                    abort.abort();
                }
            }
        }
        self.state.connections.close_all().await;
    }
}
