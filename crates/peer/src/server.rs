//! A server: binds, accepts, and runs each connection in its own task.

use std::{
    collections::HashMap,
    io,
    net::SocketAddr,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use tokio::{
    io::{AsyncRead, AsyncWrite},
    net::{TcpListener, ToSocketAddrs},
    sync::watch,
    task::JoinHandle,
};

use crate::{CloseReason, Config, Handlers, Peer};

type OnConnect = Arc<dyn Fn(&Peer) + Send + Sync>;

enum Listener {
    Tcp(TcpListener),
    #[cfg(unix)]
    Unix(tokio::net::UnixListener, std::path::PathBuf),
}

/// Accepts gotalk connections over TCP or a Unix domain socket.
///
/// Each accepted connection gets the server's handlers and config, runs its
/// handshake and then serves in its own task; the server keeps a handle to
/// each live connection until it closes.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use bytes::Bytes;
/// use gotalk_peer::{Config, HandlerError, Handlers, Peer, Server};
/// let handlers = Handlers::new()
///     .buffer("echo", |_ctx, p: Bytes| async move { Ok::<_, HandlerError>(p) });
/// let server = Server::bind("127.0.0.1:0", handlers, Config::default()).await?.spawn();
/// let client = Peer::connect(server.local_addr(), Handlers::new(), Config::default()).await?;
/// assert_eq!(client.request("echo", "hi").await?, "hi");
/// server.shutdown().await;
/// # Ok(()) }
/// ```
pub struct Server {
    listener: Listener,
    handlers: Handlers,
    config: Config,
    on_connect: Option<OnConnect>,
}

impl Server {
    /// Binds a TCP listener.
    pub async fn bind(
        addr: impl ToSocketAddrs,
        handlers: Handlers,
        config: Config,
    ) -> io::Result<Server> {
        Ok(Self {
            listener: Listener::Tcp(TcpListener::bind(addr).await?),
            handlers,
            config,
            on_connect: None,
        })
    }

    /// Binds a Unix domain socket at `path`.
    #[cfg(unix)]
    pub fn bind_unix(
        path: impl AsRef<std::path::Path>,
        handlers: Handlers,
        config: Config,
    ) -> io::Result<Server> {
        let path = path.as_ref().to_path_buf();
        Ok(Self {
            listener: Listener::Unix(tokio::net::UnixListener::bind(&path)?, path),
            handlers,
            config,
            on_connect: None,
        })
    }

    /// Calls `f` with each new connection once its handshake is done, before
    /// its first message is read (set user data here).
    pub fn on_connect(mut self, f: impl Fn(&Peer) + Send + Sync + 'static) -> Self {
        self.on_connect = Some(Arc::new(f));
        self
    }

    /// The address the server listens on (`unix:PATH` for a Unix socket).
    pub fn local_addr(&self) -> String {
        match &self.listener {
            Listener::Tcp(l) => l
                .local_addr()
                .map_or_else(|e| e.to_string(), |a| a.to_string()),
            #[cfg(unix)]
            Listener::Unix(_, path) => format!("unix:{}", path.display()),
        }
    }

    /// The TCP address, for a TCP server.
    pub fn tcp_addr(&self) -> Option<SocketAddr> {
        match &self.listener {
            Listener::Tcp(l) => l.local_addr().ok(),
            #[cfg(unix)]
            Listener::Unix(..) => None,
        }
    }

    /// Accepts connections in a background task.
    pub fn spawn(self) -> ServerHandle {
        let addr = self.local_addr();
        let (stop, stop_rx) = watch::channel(false);
        let connections = Arc::new(Connections::default());
        let task = tokio::spawn(self.accept_loop(connections.clone(), stop_rx));
        ServerHandle {
            addr,
            connections,
            stop,
            task: Some(task),
        }
    }

    /// Accepts connections until the task is dropped.
    pub async fn serve(self) -> io::Result<()> {
        let (_stop, stop_rx) = watch::channel(false);
        self.accept_loop(Arc::new(Connections::default()), stop_rx)
            .await;
        Ok(())
    }

    async fn accept_loop(self, connections: Arc<Connections>, mut stop: watch::Receiver<bool>) {
        loop {
            let accepted = tokio::select! {
                accepted = self.accept() => accepted,
                _ = stop.wait_for(|s| *s) => return,
            };
            match accepted {
                Ok((io, remote)) => self.start(io, remote, &connections),
                Err(e) => {
                    // Out of file descriptors and the like: wait, don't spin.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
    }

    async fn accept(&self) -> io::Result<(Box<dyn Io>, String)> {
        match &self.listener {
            Listener::Tcp(l) => {
                let (stream, addr) = l.accept().await?;
                let _ = stream.set_nodelay(true);
                Ok((Box::new(stream), addr.to_string()))
            }
            #[cfg(unix)]
            Listener::Unix(l, path) => {
                let (stream, _) = l.accept().await?;
                Ok((Box::new(stream), format!("unix:{}", path.display())))
            }
        }
    }

    /// Runs the handshake of an accepted connection in its own task, so a
    /// slow or silent client never holds up accepting.
    fn start(&self, io: Box<dyn Io>, remote: String, connections: &Arc<Connections>) {
        let handlers = self.handlers.clone();
        let config = self.config.clone();
        let on_connect = self.on_connect.clone();
        let connections = connections.clone();
        tokio::spawn(async move {
            let setup = |peer: &Peer| {
                if let Some(f) = &on_connect {
                    f(peer);
                }
            };
            match Peer::handshake_with_addr(io, handlers, config, Some(remote.clone()), setup).await
            {
                Ok(peer) => {
                    let reason = connections.hold(connections.next_id(), peer).await;
                    tracing::debug!(%remote, %reason, "connection closed");
                }
                Err(e) => tracing::debug!(%remote, error = %e, "handshake failed"),
            }
        });
    }
}

trait Io: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> Io for T {}

/// The live connections of a server, by serial number. The TCP, TLS and
/// WebSocket servers all keep theirs here.
pub(crate) struct Connections {
    next: AtomicU64,
    live: Mutex<HashMap<u64, Peer>>,
}

impl Default for Connections {
    fn default() -> Self {
        Self {
            next: AtomicU64::new(1),
            live: Mutex::new(HashMap::new()),
        }
    }
}

impl Connections {
    /// A serial number for a new connection (from 1).
    pub(crate) fn next_id(&self) -> u64 {
        self.next.fetch_add(1, Ordering::Relaxed)
    }

    /// Keeps `peer` under `id` until it closes, then forgets it; returns
    /// why it closed.
    pub(crate) async fn hold(&self, id: u64, peer: Peer) -> CloseReason {
        self.lock().insert(id, peer.clone());
        let reason = peer.closed().await;
        self.lock().remove(&id);
        reason
    }

    /// Handles to the connections open now.
    pub(crate) fn peers(&self) -> Vec<Peer> {
        self.lock().values().cloned().collect()
    }

    /// How many connections are open.
    pub(crate) fn len(&self) -> usize {
        self.lock().len()
    }

    /// Closes every open connection gracefully and waits until they are
    /// closed (each at most its close timeout).
    pub(crate) async fn close_all(&self) {
        let peers = self.peers();
        futures::future::join_all(peers.iter().map(Peer::close)).await;
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Peer>> {
        self.live.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Controls a [`Server`] started with [`Server::spawn`].
///
/// Dropping the handle stops accepting; connections already open carry on
/// until they close. [`shutdown`](Self::shutdown) also closes them.
pub struct ServerHandle {
    addr: String,
    connections: Arc<Connections>,
    stop: watch::Sender<bool>,
    task: Option<JoinHandle<()>>,
}

impl Drop for ServerHandle {
    fn drop(&mut self) {
        self.stop.send_replace(true);
    }
}

impl ServerHandle {
    /// The address the server listens on.
    pub fn local_addr(&self) -> &str {
        &self.addr
    }

    /// Handles to the live connections.
    pub fn connections(&self) -> Vec<Peer> {
        self.connections.peers()
    }

    /// How many connections are open.
    pub fn connection_count(&self) -> usize {
        self.connections.len()
    }

    /// Stops accepting and closes every connection gracefully (each lets
    /// its requests in flight finish, up to its close timeout).
    pub async fn shutdown(mut self) {
        self.stop.send_replace(true);
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
        self.connections.close_all().await;
    }
}

impl std::fmt::Debug for ServerHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerHandle")
            .field("addr", &self.addr)
            .finish()
    }
}
